//! Split decoding without a network: the device half ([`SplitDecoder`]) and the server half
//! ([`ServerDecoder`]) joined by a link that encodes the hidden states as the wire does. With f32
//! the split reply equals the local one token for token at every cut tried; with f16 and int8
//! the first token does and the agreement length is reported; a link that dies mid-reply makes
//! the device finish alone with the reply an uninterrupted local run gives.

use std::sync::OnceLock;

use edgecut::split::{DecodeLink, LinkError, ServerDecoder, SplitDecoder};
use edgecut::{GenerateOptions, Llm, LlmOptions, SamplingParams, WeightType};
use edgecut_tests::{converted, fixture, greedy, ids, repo_root, smollm_gguf};
use edgecut_wire::{decode_values, encode_values, Encoding};

fn smollm() -> &'static Llm {
    static LLM: OnceLock<Llm> = OnceLock::new();
    LLM.get_or_init(|| Llm::open(smollm_gguf(), &LlmOptions::default()).unwrap())
}

fn tiny() -> Llm {
    let dir = repo_root().join("tests/fixtures/llama-tiny");
    Llm::open(
        converted(&dir, "llama-tiny", WeightType::F32),
        &LlmOptions::default(),
    )
    .unwrap()
}

/// A server half in this process, behind the wire's value codec; it fails every step after
/// `fail_after` sampled steps.
struct InProcess {
    server: Option<ServerDecoder>,
    llm: Llm,
    cut: usize,
    encoding: Encoding,
    sampled: usize,
    fail_after: Option<usize>,
    bytes_up: usize,
}

impl InProcess {
    fn new(llm: &Llm, cut: usize, encoding: Encoding) -> InProcess {
        InProcess {
            server: None,
            llm: llm.clone(),
            cut,
            encoding,
            sampled: 0,
            fail_after: None,
            bytes_up: 0,
        }
    }
}

impl DecodeLink for InProcess {
    fn step(
        &mut self,
        position: usize,
        hidden: &[f32],
        sample: bool,
    ) -> Result<Option<u32>, LinkError> {
        if self.fail_after.is_some_and(|n| self.sampled >= n) {
            self.server = None;
            return Err("the link is down".into());
        }
        if self.server.is_none() {
            let s = ServerDecoder::open(
                &self.llm,
                self.cut,
                self.llm.context_len(),
                SamplingParams::default(),
            )
            .map_err(|e| e.to_string())?;
            self.server = Some(s);
        }
        let bytes = encode_values(hidden, self.encoding);
        self.bytes_up += bytes.len();
        let values = decode_values(&bytes, self.encoding, hidden.len()).unwrap();
        let out = self
            .server
            .as_mut()
            .unwrap()
            .step(position, values, sample)?;
        self.sampled += sample as usize;
        Ok(out)
    }
}

fn prompts() -> Vec<(String, Vec<u32>)> {
    fixture("smollm2.json")["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), ids(&c["ids"])))
        .collect()
}

fn split(
    llm: &Llm,
    prompt: &[u32],
    n: usize,
    link: &mut InProcess,
) -> (Vec<u32>, Option<(usize, String)>) {
    let opts = GenerateOptions::default()
        .with_max_tokens(n)
        .with_ignore_eos(true);
    let mut d = SplitDecoder::new(llm, link.cut).unwrap();
    let g = d.generate(prompt, &opts, link, &mut |_| true).unwrap();
    (g.generation.tokens, g.fell_back)
}

#[test]
fn split_greedy_equals_local_with_f32_at_every_cut_tried() {
    let llm = smollm();
    let n = llm.blocks();
    for (name, prompt) in prompts() {
        let want = greedy(llm, &prompt, 32);
        for cut in [1, n / 2, n - 1] {
            let mut link = InProcess::new(llm, cut, Encoding::F32);
            let (got, fell) = split(llm, &prompt, 32, &mut link);
            assert_eq!(fell, None);
            assert_eq!(got, want, "{name} at cut {cut}");
        }
    }
    let tiny = tiny();
    let prompt: Vec<u32> = (1..20).collect();
    let want = greedy(&tiny, &prompt, 32);
    for cut in 1..tiny.blocks() {
        let mut link = InProcess::new(&tiny, cut, Encoding::F32);
        assert_eq!(
            split(&tiny, &prompt, 32, &mut link).0,
            want,
            "tiny at cut {cut}"
        );
    }
}

/// A link that must not be used.
struct Unused;

impl DecodeLink for Unused {
    fn step(&mut self, _: usize, _: &[f32], _: bool) -> Result<Option<u32>, LinkError> {
        panic!("a decoder with every block here stepped the server");
    }

    fn held(&self) -> Option<usize> {
        None
    }
}

#[test]
fn a_cut_at_the_block_count_runs_all_here_over_turns_without_the_link() {
    let tiny = tiny();
    let n = tiny.blocks();
    let opts = GenerateOptions::default()
        .with_max_tokens(12)
        .with_ignore_eos(true);
    let mut d = SplitDecoder::new(&tiny, n).unwrap();
    assert!(d.is_local());
    let first: Vec<u32> = (1..20).collect();
    let g = d
        .generate(&first, &opts, &mut Unused, &mut |_| true)
        .unwrap();
    assert_eq!(g.generation.tokens, greedy(&tiny, &first, 12));
    assert_eq!(g.fell_back, None);
    // A second turn continues the conversation (its cache reused) as a local run of the whole.
    let mut second = first.clone();
    second.extend_from_slice(&g.generation.tokens);
    second.extend_from_slice(&[7, 8, 9]);
    let g2 = d
        .generate(&second, &opts, &mut Unused, &mut |_| true)
        .unwrap();
    // The last token drawn was never run: the cache holds the prompt and 11 of the 12.
    assert_eq!(g2.generation.cached_tokens, first.len() + 11);
    assert_eq!(g2.generation.tokens, greedy(&tiny, &second, 12));
    assert!(SplitDecoder::new(&tiny, n + 1).is_err());
}

#[test]
fn lossy_encodings_agree_on_the_first_token_and_report_how_long_after() {
    let llm = smollm();
    let cut = llm.blocks() / 2;
    for enc in [Encoding::F16, Encoding::Int8] {
        let mut agree = Vec::new();
        let mut up = 0;
        for (name, prompt) in prompts() {
            let want = greedy(llm, &prompt, 32);
            let mut link = InProcess::new(llm, cut, enc);
            let (got, _) = split(llm, &prompt, 32, &mut link);
            assert_eq!(got[0], want[0], "{name} {enc:?}: the first token");
            agree.push(got.iter().zip(&want).take_while(|(a, b)| a == b).count());
            up += link.bytes_up / (prompt.len() + 31);
        }
        println!(
            "{enc:?} at cut {cut}: tokens agreeing with local per prompt (of 32): {agree:?}; \
             about {} bytes up per position",
            up / agree.len()
        );
    }
}

#[test]
fn a_lost_server_mid_reply_loses_nothing() {
    let llm = smollm();
    let cut = llm.blocks() / 2;
    let prompt = &prompts()[0].1;
    let want = greedy(llm, prompt, 32);
    // f32: the reply equals an uninterrupted local run.
    let mut link = InProcess::new(llm, cut, Encoding::F32);
    link.fail_after = Some(10);
    let (got, fell) = split(llm, prompt, 32, &mut link);
    let (at, why) = fell.expect("it fell back");
    println!("f32: fell back after {at} tokens ({why})");
    assert_eq!(at, 10);
    assert_eq!(got, want);
    // int8: the tokens after the fallback are a local continuation of what was received.
    let mut link = InProcess::new(llm, cut, Encoding::Int8);
    link.fail_after = Some(10);
    let (got, fell) = split(llm, prompt, 32, &mut link);
    assert_eq!(fell.map(|f| f.0), Some(10));
    let mut so_far = prompt.clone();
    so_far.extend_from_slice(&got[..10]);
    assert_eq!(&got[10..], &greedy(llm, &so_far, 22)[..]);

    // A conversation goes on after a fallback, and splits again when the server is back.
    let mut link = InProcess::new(llm, cut, Encoding::F32);
    link.fail_after = Some(5);
    let opts = GenerateOptions::default()
        .with_max_tokens(12)
        .with_ignore_eos(true);
    let mut d = SplitDecoder::new(llm, cut).unwrap();
    let first = d.generate(prompt, &opts, &mut link, &mut |_| true).unwrap();
    assert!(first.fell_back.is_some() && d.is_local());
    link.fail_after = None;
    let mut turn2 = d.tokens().to_vec();
    turn2.extend_from_slice(prompt);
    let second = d.generate(&turn2, &opts, &mut link, &mut |_| true).unwrap();
    assert_eq!(second.fell_back, None);
    assert!(!d.is_local(), "split again");
    assert_eq!(second.generation.tokens, greedy(llm, &turn2, 12));
}

/// A link that records what it was sent and answered.
struct Recording {
    inner: InProcess,
    calls: Vec<(usize, Vec<f32>, bool, Option<u32>)>,
}

impl DecodeLink for Recording {
    fn step(
        &mut self,
        position: usize,
        hidden: &[f32],
        sample: bool,
    ) -> Result<Option<u32>, LinkError> {
        let out = self.inner.step(position, hidden, sample)?;
        self.calls.push((position, hidden.to_vec(), sample, out));
        Ok(out)
    }
}

#[test]
fn sessions_stepped_together_answer_as_each_alone() {
    use edgecut::split::DecodeStep;
    let llm = smollm();
    let cut = llm.blocks() / 2;
    let opts = GenerateOptions::default()
        .with_max_tokens(12)
        .with_ignore_eos(true);
    // Each prompt alone, recorded.
    let recs: Vec<Recording> = prompts()
        .into_iter()
        .take(6)
        .map(|(_, prompt)| {
            let mut r = Recording {
                inner: InProcess::new(llm, cut, Encoding::F32),
                calls: Vec::new(),
            };
            SplitDecoder::new(llm, cut)
                .unwrap()
                .generate(&prompt, &opts, &mut r, &mut |_| true)
                .unwrap();
            r
        })
        .collect();
    // The same steps, the sessions stepped together after their prompts.
    let mut servers: Vec<ServerDecoder> = recs
        .iter()
        .map(|r| {
            let mut s = ServerDecoder::open(llm, cut, llm.context_len(), SamplingParams::default())
                .unwrap();
            let (p, h, sample, want) = &r.calls[0];
            assert_eq!(s.step(*p, h.clone(), *sample).unwrap(), *want);
            s
        })
        .collect();
    let steps = recs.iter().map(|r| r.calls.len()).min().unwrap();
    let (mut same, mut total) = (0, 0);
    for k in 1..steps {
        let batch: Vec<DecodeStep> = servers
            .iter_mut()
            .zip(&recs)
            .map(|(s, r)| DecodeStep {
                dec: s,
                position: r.calls[k].0,
                hidden: r.calls[k].1.clone(),
                sample: r.calls[k].2,
            })
            .collect();
        for (got, r) in ServerDecoder::step_many(batch).into_iter().zip(&recs) {
            total += 1;
            same += (got.unwrap() == r.calls[k].3) as usize;
        }
    }
    println!(
        "{} sessions stepped together: {same} of {total} tokens as each alone",
        recs.len()
    );
    assert_eq!(same, total);
}
