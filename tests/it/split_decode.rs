//! Split decoding without a network: the device half ([`SplitDecoder`]) and the server half
//! ([`ServerDecoder`]) joined by a link that encodes the hidden states as the wire does. With f32
//! the split reply equals the local one token for token at every cut tried; with f16 and int8
//! the first token does and the agreement length is reported; a link that dies mid-reply makes
//! the device finish alone with the reply an uninterrupted local run gives.

use std::sync::OnceLock;

use edgecut::split::{top_logits_for, DecodeLink, LinkError, ServerDecoder, SplitDecoder, MAX_TOP};
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
    /// Logits the server answers with (0: it samples).
    top: usize,
    /// Steps answered with logits.
    top_steps: usize,
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
            top: 0,
            top_steps: 0,
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
            self.server = Some(if self.top > 0 {
                s.with_top_logits(self.top)
            } else {
                s
            });
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

    fn step_top(&mut self, position: usize, hidden: &[f32]) -> Result<Vec<(u32, f32)>, LinkError> {
        if self.top == 0 {
            return Err("this server samples itself".into());
        }
        let answer = self.step(position, hidden, true)?;
        assert_eq!(answer, None, "a server in top-logits mode answers no token");
        self.top_steps += 1;
        Ok(self
            .server
            .as_mut()
            .unwrap()
            .take_top()
            .expect("the logits of a sampled step"))
    }

    fn set_guided(&mut self, guided: bool) {
        // As the TCP link: the most logits the wire carries (unless a test set fewer).
        if guided && self.top == 0 {
            self.top = MAX_TOP as usize;
        }
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

/// A tiny Qwen3 (q/k norms, NeoX rope, its own head size) splits as the Llama does: at the
/// middle cut with the f32 wire, greedy equal to a local run and to transformers' (the fixture).
#[test]
fn qwen3_split_at_the_middle_cut_equals_local_and_transformers() {
    let llm = Llm::open(
        edgecut_tests::tiny_decoder("qwen3", WeightType::F32),
        &LlmOptions::default(),
    )
    .unwrap();
    let m = &edgecut_tests::fixture("decoders-tiny.json")["models"]["qwen3"];
    let prompt = edgecut_tests::ids(&m["ids"]);
    let want = greedy(&llm, &prompt, 8);
    assert_eq!(want, edgecut_tests::ids(&m["f16_kv"]["greedy"]), "local");
    let cut = llm.blocks() / 2;
    let mut link = InProcess::new(&llm, cut, Encoding::F32);
    let (got, fell) = split(&llm, &prompt, 8, &mut link);
    assert_eq!(fell, None);
    assert_eq!(got, want, "split at cut {cut}");
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
fn a_repetition_penalty_splits_with_the_device_sampling_from_the_top_logits() {
    assert_eq!(MAX_TOP, edgecut_wire::MAX_TOP_LOGITS);
    let llm = smollm();
    let cut = 15;
    let greedy_penalty = SamplingParams {
        repetition_penalty: 1.5,
        ..SamplingParams::default()
    };
    let sampled_penalty = SamplingParams {
        repetition_penalty: 1.3,
        temperature: 0.8,
        top_k: 40,
        seed: 7,
        ..SamplingParams::default()
    };
    assert_eq!(top_logits_for(&greedy_penalty), Ok(Some(65)));
    assert_eq!(top_logits_for(&sampled_penalty), Ok(Some(104)));
    assert_eq!(top_logits_for(&SamplingParams::default()), Ok(None));
    for (name, prompt) in prompts().into_iter().take(4) {
        for sampling in [&greedy_penalty, &sampled_penalty] {
            let opts = GenerateOptions::default()
                .with_max_tokens(32)
                .with_ignore_eos(true)
                .with_sampling(sampling.clone());
            let want = llm
                .new_context()
                .unwrap()
                .generate(&prompt, &opts, &mut |_| true)
                .unwrap()
                .tokens;
            let mut link = InProcess::new(llm, cut, Encoding::F32);
            link.top = top_logits_for(sampling).unwrap().unwrap();
            let mut d = SplitDecoder::new(llm, cut).unwrap();
            let g = d
                .generate(&prompt, &opts, &mut link, &mut |_| true)
                .unwrap();
            assert_eq!(g.fell_back, None, "{name}");
            assert_eq!(g.generation.tokens, want, "{name} {sampling:?}");
            // Every token was drawn on the device from the server's logits.
            assert_eq!(link.top_steps, 32, "{name}");
        }
    }
    // Sampling the whole vocabulary with a penalty cannot be split: the device runs alone,
    // says why, and answers as a local run.
    let whole = SamplingParams {
        top_k: 0,
        ..sampled_penalty.clone()
    };
    let why = top_logits_for(&whole).unwrap_err().to_string();
    assert!(why.contains("whole vocabulary"), "{why}");
    let below = SamplingParams {
        repetition_penalty: 0.9,
        ..greedy_penalty.clone()
    };
    assert!(top_logits_for(&below)
        .unwrap_err()
        .to_string()
        .contains("below 1"));
    let (_, prompt) = &prompts()[0];
    let opts = GenerateOptions::default()
        .with_max_tokens(16)
        .with_ignore_eos(true)
        .with_sampling(whole);
    let want = llm
        .new_context()
        .unwrap()
        .generate(prompt, &opts, &mut |_| true)
        .unwrap()
        .tokens;
    let mut link = InProcess::new(llm, cut, Encoding::F32);
    let g = SplitDecoder::new(llm, cut)
        .unwrap()
        .generate(prompt, &opts, &mut link, &mut |_| true)
        .unwrap();
    assert!(g.fell_back.is_some());
    assert_eq!(g.generation.tokens, want);
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

/// A file as llama.cpp's quantizer writes Q4_K_M (Q4_K and Q6_K blocks) splits the same way:
/// greedy equal to a local run and to transformers' on its dequantized weights.
#[test]
fn a_q4_k_m_file_split_at_the_middle_cut_equals_local_and_transformers() {
    let fx = edgecut_tests::fixture("kquant.json");
    let f = &fx["files"]["Q4_K_M"];
    let path = edgecut_tests::repo_root().join(f["file"].as_str().unwrap());
    let llm = Llm::open(&path, &LlmOptions::default()).unwrap();
    let prompt = edgecut_tests::ids(&fx["ids"]);
    let want = greedy(&llm, &prompt, 8);
    assert_eq!(want, edgecut_tests::ids(&f["f16_kv"]["greedy"]), "local");
    let cut = llm.blocks() / 2;
    let mut link = InProcess::new(&llm, cut, Encoding::F32);
    let (got, fell) = split(&llm, &prompt, 8, &mut link);
    assert_eq!(fell, None);
    assert_eq!(got, want, "split at cut {cut}");
}

/// The hub's Gemma 3 270M Q4_K_M split at cuts 1, 9 and 17 with the f32 wire: greedy equal to
/// a local run on two prompts; a 600-token prompt (the sliding layers' rings wrap on both
/// sides of the cut, the server running it a chunk at a time) likewise; and a server lost
/// after 10 tokens costs nothing: the reply equals the uninterrupted local one.
#[test]
fn gemma3_splits_as_it_runs_locally_and_survives_a_lost_server() {
    let llm = crate::gemma3::gemma();
    let fx = edgecut_tests::fixture("gemma3-270m.json");
    let case = |name: &str| -> Vec<u32> {
        let c = fx["cases"].as_array().unwrap().iter();
        let c = c.clone().find(|c| c["name"] == name).unwrap();
        edgecut_tests::ids(&c["ids"])
    };
    for name in ["story", "chat"] {
        let prompt = case(name);
        let want = greedy(llm, &prompt, 32);
        for cut in [1, 9, 17] {
            let mut link = InProcess::new(llm, cut, Encoding::F32);
            let (got, fell) = split(llm, &prompt, 32, &mut link);
            assert_eq!(fell, None, "{name} at cut {cut}");
            assert_eq!(got, want, "{name} at cut {cut}");
        }
        let mut link = InProcess::new(llm, 9, Encoding::F32);
        link.fail_after = Some(10);
        let (got, fell) = split(llm, &prompt, 32, &mut link);
        assert_eq!(fell.map(|f| f.0), Some(10), "{name}: fell back after 10");
        assert_eq!(got, want, "{name}: the reply after a lost server");
    }
    let long = &edgecut_tests::ids(&fx["long"]["ids"])[..600];
    let want = greedy(llm, long, 8);
    let mut link = InProcess::new(llm, 9, Encoding::F32);
    assert_eq!(
        split(llm, long, 8, &mut link).0,
        want,
        "600 tokens at cut 9"
    );
}

/// A guided generation split: the device draws from the server's largest logits under its
/// mask, and the reply is the local one (greedy, f32 on the wire); when none of the logits
/// sent is allowed (a server sending 1), the device goes on alone and the reply is still the
/// local one.
#[test]
fn a_guided_generation_splits_and_falls_back_when_the_logits_sent_miss_the_mask() {
    let llm = smollm();
    let schema = serde_json::json!({"type": "object", "properties": {
        "colour": {"enum": ["red", "green", "blue"]}, "n": {"type": "integer", "maximum": 9}},
        "required": ["colour", "n"], "additionalProperties": false});
    let guide = llm.guide(&edgecut::Constraint::JsonSchema(schema)).unwrap();
    let opts = GenerateOptions::default()
        .with_max_tokens(40)
        .with_guide(Some(guide));
    let text = llm
        .render_chat(&[edgecut::Message::new("user", "Pick a colour and a digit.")])
        .unwrap();
    let prompt = llm.tokenize(&text).unwrap();
    let local = llm
        .new_context()
        .unwrap()
        .generate(&prompt, &opts, &mut |_| true)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&local.text).unwrap();
    assert!(
        ["red", "green", "blue"].contains(&v["colour"].as_str().unwrap()),
        "{v}"
    );
    for top in [0, 1] {
        let mut link = InProcess::new(llm, 10, Encoding::F32);
        link.top = top;
        let mut d = SplitDecoder::new(llm, 10).unwrap();
        let g = d
            .generate(&prompt, &opts, &mut link, &mut |_| true)
            .unwrap();
        println!(
            "top {top}: {:?}, {} steps from logits, fell back {:?}",
            g.generation.text, link.top_steps, g.fell_back
        );
        assert_eq!(g.generation.tokens, local.tokens, "top {top}");
        assert!(
            link.top_steps > 0,
            "the device drew from the server's logits"
        );
        if top == 1 {
            assert!(
                g.fell_back.is_some(),
                "one logit cannot hold every allowed token"
            );
        } else {
            assert!(g.fell_back.is_none());
        }
    }
}
