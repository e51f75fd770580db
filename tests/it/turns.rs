//! Continuous batching ([`Turn`], [`Llm::step_turns`]): generations that join and leave a
//! running batch at different steps give the tokens and text each gives alone
//! ([`edgecut::Context::generate`]), greedy and sampled; a context keeps its prefix for the
//! next turn; bad turns are refused with the reason.

use std::sync::OnceLock;

use edgecut::{Finish, GenerateOptions, Llm, LlmOptions, SamplingParams, Turn, WeightType};
use edgecut_tests::{converted, fixture, ids, repo_root, smollm_gguf};

pub(crate) fn smollm() -> &'static Llm {
    static LLM: OnceLock<Llm> = OnceLock::new();
    LLM.get_or_init(|| Llm::open(smollm_gguf(), &LlmOptions::default()).unwrap())
}

fn prompts() -> Vec<Vec<u32>> {
    fixture("smollm2.json")["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| ids(&c["ids"]))
        .collect()
}

fn options(i: usize) -> GenerateOptions {
    let o = GenerateOptions::default().with_max_tokens(10 + 3 * i);
    if i.is_multiple_of(2) {
        o
    } else {
        // Sampled: the same seed draws the same tokens batched or alone.
        o.with_sampling(SamplingParams {
            temperature: 0.8,
            top_p: 0.9,
            seed: 7 + i as u64,
            ..SamplingParams::default()
        })
        .with_stop(vec![".".into()])
    }
}

#[test]
fn turns_stepped_together_generate_as_each_alone() {
    stepped_together_as_alone(smollm(), prompts());
}

/// Gemma 3's sliding-window caches in the batch: the 600-token prompt wraps its rings while
/// the others decode beside it.
#[test]
fn gemma3_turns_stepped_together_generate_as_each_alone() {
    let fx = fixture("gemma3-270m.json");
    let prompts = fx["cases"].as_array().unwrap()[..4]
        .iter()
        .map(|c| ids(&c["ids"]))
        .collect();
    stepped_together_as_alone(crate::gemma3::gemma(), prompts);
}

fn stepped_together_as_alone(llm: &Llm, mut prompts: Vec<Vec<u32>>) {
    // A prompt of three prefill chunks, run a chunk per step beside the others' tokens.
    let long: Vec<u32> = prompts
        .iter()
        .flatten()
        .copied()
        .cycle()
        .take(600)
        .collect();
    prompts.insert(1, long);
    let alone: Vec<_> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut text = String::new();
            let g = llm
                .new_context()
                .unwrap()
                .generate(p, &options(i), &mut |s| {
                    text.push_str(s);
                    true
                })
                .unwrap();
            assert_eq!(text, g.text, "streamed text is the generation's text");
            g
        })
        .collect();
    // Turn i joins at step 2i, so the batch grows, shrinks and changes as turns finish.
    let mut turns: Vec<(usize, Turn, String)> = Vec::new();
    let mut done = Vec::new();
    let mut step = 0;
    let mut widest = 0;
    while done.len() < prompts.len() {
        for (i, p) in prompts.iter().enumerate() {
            if step == 2 * i {
                let t = Turn::new(llm, llm.new_context().unwrap(), p.clone(), &options(i));
                turns.push((i, t.unwrap(), String::new()));
            }
        }
        widest = widest.max(turns.len());
        let mut refs: Vec<&mut Turn> = turns.iter_mut().map(|(_, t, _)| t).collect();
        let texts = llm.step_turns(&mut refs);
        for ((_, _, acc), t) in turns.iter_mut().zip(texts) {
            acc.push_str(&t.unwrap());
        }
        let (over, going): (Vec<_>, Vec<_>) = turns
            .drain(..)
            .partition(|(_, t, _)| t.finished().is_some());
        turns = going;
        done.extend(over);
        step += 1;
    }
    assert!(widest >= 3, "the batch held {widest} turns at most");
    for (i, turn, streamed) in done {
        let g = turn.generation();
        assert_eq!(g.tokens, alone[i].tokens, "prompt {i}: tokens");
        assert_eq!(g.text, alone[i].text, "prompt {i}: text");
        assert_eq!(streamed, alone[i].text, "prompt {i}: streamed text");
        assert_eq!(g.finish, alone[i].finish, "prompt {i}: finish");
    }
}

#[test]
fn a_context_keeps_its_prefix_for_the_next_turn() {
    let llm = smollm();
    let p = &prompts()[0];
    let opts = GenerateOptions::default().with_max_tokens(6);
    let mut first = Turn::new(llm, llm.new_context().unwrap(), p.clone(), &opts).unwrap();
    while first.finished().is_none() {
        llm.step_turns(&mut [&mut first])[0].as_ref().unwrap();
    }
    let g1 = first.generation();
    let ctx = first.into_context();
    assert!(ctx.tokens().len() >= p.len());
    // The prompt again, with more after it: the cached prompt is kept, the rest runs.
    let mut longer = p.clone();
    longer.extend_from_slice(&g1.tokens);
    let mut second = Turn::new(llm, ctx, longer.clone(), &opts).unwrap();
    assert!(
        second.prompt_tokens().1 >= p.len(),
        "{:?}",
        second.prompt_tokens()
    );
    while second.finished().is_none() {
        llm.step_turns(&mut [&mut second])[0].as_ref().unwrap();
    }
    let fresh = llm
        .new_context()
        .unwrap()
        .generate(&longer, &opts, &mut |_| true)
        .unwrap();
    assert_eq!(second.generation().tokens, fresh.tokens);
}

#[test]
fn bad_turns_are_refused_and_a_cancelled_turn_stops() {
    let llm = smollm();
    let tiny = Llm::open(
        converted(
            &repo_root().join("tests/fixtures/llama-tiny"),
            "llama-tiny",
            WeightType::F32,
        ),
        &LlmOptions::default(),
    )
    .unwrap();
    let opts = GenerateOptions::default();
    let e = Turn::new(llm, tiny.new_context().unwrap(), vec![1, 2], &opts).unwrap_err();
    assert!(e.to_string().contains("another model"), "{e}");
    let e = Turn::new(llm, llm.new_context().unwrap(), vec![], &opts).unwrap_err();
    assert!(e.to_string().contains("no tokens"), "{e}");
    let long = vec![1u32; llm.context_len()];
    let e = Turn::new(llm, llm.new_context().unwrap(), long, &opts).unwrap_err();
    assert!(matches!(e, edgecut::Error::ContextFull { .. }), "{e}");
    // max_tokens 0 is over before it starts.
    let zero = GenerateOptions::default().with_max_tokens(0);
    let t = Turn::new(llm, llm.new_context().unwrap(), vec![1, 2], &zero).unwrap();
    assert_eq!(t.finished(), Some(Finish::MaxTokens));
    let mut t = Turn::new(llm, llm.new_context().unwrap(), prompts()[1].clone(), &opts).unwrap();
    llm.step_turns(&mut [&mut t])[0].as_ref().unwrap();
    t.cancel();
    assert_eq!(t.finished(), Some(Finish::Cancelled));
    let before = t.generated();
    assert_eq!(llm.step_turns(&mut [&mut t])[0].as_ref().unwrap(), "");
    assert_eq!(t.generated(), before, "a cancelled turn does not run");
}

/// A copied context continues exactly as its source does; a turn branched after its prompt ran
/// shares that computation and draws what a context copied from the same prompt draws.
#[test]
fn copied_contexts_and_branched_turns_share_the_prompt() {
    let llm = smollm();
    let p = &prompts()[0];
    let mut a = llm.new_context().unwrap();
    a.last_logits(p).unwrap();
    let mut b = llm.new_context().unwrap();
    b.copy_from(&a).unwrap();
    assert_eq!(b.tokens(), a.tokens());
    let next = [p[1], p[2]];
    assert_eq!(
        a.logits(&next).unwrap(),
        b.logits(&next).unwrap(),
        "a copy continues bit for bit"
    );
    for opts in [options(0), options(1)] {
        // The reference: a context holding the prompt as a parent ran it, asked again.
        let mut parent = llm.new_context().unwrap();
        parent.generate(p, &opts, &mut |_| true).unwrap();
        let mut copy = llm.new_context().unwrap();
        copy.copy_from(&parent).unwrap();
        let want = copy.generate(p, &opts, &mut |_| true).unwrap();
        assert_eq!(
            want.cached_tokens,
            p.len() - 1,
            "only the last prompt token runs"
        );
        let mut first = Turn::new(llm, llm.new_context().unwrap(), p.clone(), &opts).unwrap();
        llm.step_turns(&mut [&mut first])[0].as_ref().unwrap();
        let mut second = first
            .branch(llm, llm.new_context().unwrap(), &opts)
            .unwrap();
        assert_eq!(second.prompt_tokens(), (p.len(), p.len() - 1));
        while second.finished().is_none() {
            llm.step_turns(&mut [&mut second])[0].as_ref().unwrap();
        }
        assert_eq!(second.generation().tokens, want.tokens);
    }
}
