//! Generation behaviour on SmolLM2: the chat history stays in the KV cache, streamed pieces
//! join to the decoded text, stop strings, the context limit, seeded sampling.

use std::sync::OnceLock;

use edgecut::{Chat, Finish, GenerateOptions, Llm, LlmOptions, SamplingParams};
use edgecut_tests::smollm_gguf;

fn llm() -> &'static Llm {
    static LLM: OnceLock<Llm> = OnceLock::new();
    LLM.get_or_init(|| Llm::open(smollm_gguf(), &LlmOptions::default()).unwrap())
}

fn greedy(n: usize) -> GenerateOptions {
    GenerateOptions::default().with_max_tokens(n)
}

#[test]
fn a_second_chat_turn_computes_only_its_new_tokens() {
    let llm = llm();
    let mut chat = Chat::new(llm, None).unwrap();
    let first = chat
        .send("What is the capital of France?", &greedy(24), &mut |_| true)
        .unwrap();
    assert_eq!(first.cached_tokens, 0);
    let cached_after_first = chat.context().tokens().len();
    assert!(
        cached_after_first > first.prompt_tokens,
        "the reply is in the cache too"
    );
    let second = chat
        .send("And of Germany?", &greedy(24), &mut |_| true)
        .unwrap();
    // Every cached token is reused: the prefill covers only the end of the first reply's turn
    // and the new user message.
    assert_eq!(second.cached_tokens, cached_after_first);
    let new = second.prompt_tokens - second.cached_tokens;
    println!(
        "turn 2: prompt {} tokens, {} cached, {new} computed",
        second.prompt_tokens, second.cached_tokens
    );
    assert!(new < 20, "{new} new tokens");
    assert_eq!(chat.messages().len(), 4);
    // Reusing the cache changes nothing: a fresh context on the same prompt gives the same reply.
    let text = llm.render_chat(&chat.messages()[..3]).unwrap();
    let ids = llm.tokenize(&text).unwrap();
    assert_eq!(ids.len(), second.prompt_tokens);
    let fresh = llm
        .new_context()
        .unwrap()
        .generate(&ids, &greedy(24), &mut |_| true)
        .unwrap();
    assert_eq!(fresh.tokens, second.tokens);
    assert_eq!(fresh.cached_tokens, 0);
}

#[test]
fn streamed_pieces_join_to_the_decoded_text() {
    let llm = llm();
    // The greedy continuation of this prompt is emoji, several byte-level tokens each.
    let prompt = "I love pizza 🍕 and tacos 🌮! Café naïve Straße 😀 👍🏽";
    let mut pieces = Vec::new();
    let opts = GenerateOptions::default()
        .with_max_tokens(20)
        .with_ignore_eos(true);
    let g = llm
        .generate(prompt, &opts, &mut |p| {
            pieces.push(p.to_string());
            true
        })
        .unwrap();
    assert_eq!(pieces.concat(), g.text);
    assert_eq!(g.text, llm.detokenize(&g.tokens).unwrap());
    assert!(g.text.contains('🍡'), "{:?}", g.text);
    assert!(
        pieces.len() < g.tokens.len(),
        "tokens inside a character give no piece"
    );
}

#[test]
fn stop_strings_end_generation_before_them() {
    let llm = llm();
    let opts = greedy(32).with_stop(vec!["answer".into()]);
    let mut shown = String::new();
    let g = llm
        .generate("The capital of France is", &opts, &mut |p| {
            shown.push_str(p);
            true
        })
        .unwrap();
    // Greedy text: " Paris.\n\nThe answer is: ..."
    assert_eq!(g.finish, Finish::StopString);
    assert_eq!(g.text, " Paris.\n\nThe ");
    assert_eq!(shown, g.text);
    // The callback can stop generation.
    let mut n = 0;
    let g = llm
        .generate("The capital of France is", &greedy(32), &mut |_| {
            n += 1;
            n < 2
        })
        .unwrap();
    assert_eq!(g.finish, Finish::Cancelled);
    assert_eq!(g.tokens.len(), 2);
}

#[test]
fn the_context_limit_is_an_error_or_a_finish_reason() {
    let small = Llm::open(smollm_gguf(), &LlmOptions::default().with_context(Some(16))).unwrap();
    // Keys and values of 30 layers, 3 KV heads of 64, 16 positions, f16.
    assert_eq!(small.kv_cache_bytes(), 2 * 30 * 3 * 64 * 16 * 2);
    let long = small
        .tokenize(&"one two three four five ".repeat(5))
        .unwrap();
    let err = small.generate(
        &"one two three four five ".repeat(5),
        &greedy(4),
        &mut |_| true,
    );
    // A typed error an application can match on: the prompt and the first token it would
    // generate do not fit 16 positions.
    match err {
        Err(edgecut::Error::ContextFull {
            tokens,
            used: 0,
            capacity: 16,
        }) => assert_eq!(tokens, long.len() + 1),
        other => panic!("expected ContextFull, got {other:?}"),
    }
    let ids = small.tokenize("Count: one two three").unwrap();
    let g = small
        .new_context()
        .unwrap()
        .generate(&ids, &greedy(100).with_ignore_eos(true), &mut |_| true)
        .unwrap();
    assert_eq!(g.finish, Finish::ContextFull);
    assert_eq!(
        ids.len() + g.tokens.len(),
        17,
        "the last token is produced, not cached"
    );
    for ctx in [0usize, 9000] {
        let e = Llm::open(
            smollm_gguf(),
            &LlmOptions::default().with_context(Some(ctx)),
        );
        assert!(e.unwrap_err().to_string().contains("context"));
    }
}

/// Regression (issue 10): a decoder asked to run on a GPU ran on the CPU without a word. Where
/// this build has no GPU runtime, asking for one is an error that says so (the GPU builds run
/// decoders there: `gpu_llama.rs`).
#[test]
fn a_decoder_on_a_gpu_this_build_lacks_is_a_clear_error() {
    let mut lacking = Vec::new();
    if cfg!(not(feature = "wgpu")) {
        lacking.push(edgecut::DeviceKind::Wgpu);
    }
    if cfg!(not(feature = "cuda")) {
        lacking.push(edgecut::DeviceKind::Cuda);
    }
    for device in lacking {
        let e = Llm::open(smollm_gguf(), &LlmOptions::default().with_device(device));
        match e {
            Err(edgecut::Error::Device(d @ edgecut::DeviceError::NotBuilt { .. })) => {
                assert!(d.to_string().contains(&device.to_string()), "{d}")
            }
            other => panic!("{device:?}: expected a not-built error, got {other:?}"),
        }
    }
}

#[test]
fn sampling_is_reproducible_by_seed() {
    let llm = llm();
    let opts = |seed| {
        GenerateOptions::default()
            .with_max_tokens(24)
            .with_ignore_eos(true)
            .with_sampling(SamplingParams {
                temperature: 1.0,
                top_k: 40,
                top_p: 0.95,
                repetition_penalty: 1.1,
                seed,
                ..SamplingParams::default()
            })
    };
    let run = |seed| {
        llm.generate("Once upon a time", &opts(seed), &mut |_| true)
            .unwrap()
            .tokens
    };
    let a = run(1);
    assert_eq!(a, run(1));
    let others = [run(2), run(3), run(4)];
    assert!(
        others.iter().any(|o| *o != a),
        "different seeds give different text"
    );
    let bad = GenerateOptions::default().with_sampling(SamplingParams {
        top_p: 1.5,
        ..SamplingParams::default()
    });
    let e = llm.generate("x", &bad, &mut |_| true).unwrap_err();
    assert!(e.to_string().contains("top-p"), "{e}");
}
