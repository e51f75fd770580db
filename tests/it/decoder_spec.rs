//! The decoder spec's proof: tiny seeded random Qwen2 (q/k/v biases, tied head), Qwen3 (q/k
//! norms, NeoX rope, an explicit head size) and Llama 3 (rope scaling, GQA) checkpoints made by
//! transformers (`tests/reference/make_decoder_fixtures.py`), converted by `edgecut convert`
//! and run through the one block, against transformers' logits at every position of a 16-token
//! prompt and over 8 greedy steps with the KV cache; llama.cpp's own conversions of the same
//! checkpoints (its pre-tokenizers `qwen2` and `llama-bpe`) give the same.
//!
//! edgecut's KV cache holds f16, so the exact reference is transformers with its keys and values
//! rounded to f16 where they are stored (`f16_kv` in the fixture): within 1e-4 of the largest
//! logit. Against plain transformers (f32 keys and values) the same runs are within 5e-3.

use std::path::Path;

use edgecut::{Llm, LlmOptions, WeightType};
use edgecut_tests::{f32s, fixture, ids, repo_root, tiny_decoder as tiny};
use serde_json::Value;

const ARCHS: [&str; 3] = ["qwen2", "qwen3", "llama3"];

/// The fixture's prompt ids without the BOS the fixture script put before Llama 3's (the
/// tiny tokenizers add none themselves).
fn text_ids(m: &Value) -> Vec<u32> {
    let ids = ids(&m["ids"]);
    match m["bos"].as_u64() {
        Some(b) if ids.first() == Some(&(b as u32)) => ids[1..].to_vec(),
        _ => ids,
    }
}

/// Logits at every prompt position, then the 8 greedy steps' tokens and logits (the cache
/// kept between them).
pub(crate) fn run(path: &Path, prompt: &[u32], steps: usize) -> (Vec<f32>, Vec<u32>, Vec<f32>) {
    run_opts(path, &LlmOptions::default(), prompt, steps, true)
}

/// [`run`] with the decoder opened with `opts`, with the logits of every prompt position
/// (`all`) or of the last only.
pub(crate) fn run_opts(
    path: &Path,
    opts: &LlmOptions,
    prompt: &[u32],
    steps: usize,
    all: bool,
) -> (Vec<f32>, Vec<u32>, Vec<f32>) {
    let llm = Llm::open(path, opts).unwrap_or_else(|e| panic!("{e}"));
    let mut ctx = llm.new_context().unwrap();
    let prompt_logits = if all {
        ctx.logits(prompt).unwrap()
    } else {
        ctx.last_logits(prompt).unwrap()
    };
    let vocab = llm.vocab_size();
    let mut next = edgecut_models::sampling::argmax(&prompt_logits[prompt_logits.len() - vocab..]);
    let (mut toks, mut step_logits) = (Vec::new(), Vec::new());
    for _ in 0..steps {
        toks.push(next);
        let l = ctx.last_logits(&[next]).unwrap();
        next = edgecut_models::sampling::argmax(&l);
        step_logits.extend(l);
    }
    (prompt_logits, toks, step_logits)
}

/// The largest difference, relative to the largest reference logit.
pub(crate) fn rel_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |s, v| s.max(v.abs()));
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
        / scale
}

pub(crate) fn rows(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().flat_map(f32s).collect()
}

fn check_f32(arch: &str, path: &Path, source: &str) {
    let fx = fixture("decoders-tiny.json");
    let m = &fx["models"][arch];
    let prompt = ids(&m["ids"]);
    let (pl, toks, sl) = run(path, &prompt, 8);
    for (kind, tol) in [("f16_kv", 1e-4), ("plain", 5e-3)] {
        let r = &m[kind];
        let (dp, ds) = (
            rel_diff(&pl, &rows(&r["prompt_logits"])),
            rel_diff(&sl, &rows(&r["step_logits"])),
        );
        println!("{arch} {source} vs transformers ({kind}): prompt {dp:.2e}, steps {ds:.2e}");
        assert!(
            dp <= tol,
            "{arch} {source} ({kind}): prompt logits off by {dp:e}"
        );
        assert!(
            ds <= tol,
            "{arch} {source} ({kind}): step logits off by {ds:e}"
        );
        assert_eq!(toks, ids(&r["greedy"]), "{arch} {source} ({kind}): greedy");
    }
}

#[test]
fn tiny_qwen2_qwen3_llama3_match_transformers_at_every_position_and_step() {
    for arch in ARCHS {
        check_f32(arch, &tiny(arch, WeightType::F32), "edgecut convert f32");
    }
}

#[test]
fn llama_cpp_conversions_of_the_tiny_checkpoints_match_transformers() {
    for arch in ARCHS {
        let path = repo_root().join(format!("tests/fixtures/{arch}-tiny.llama-cpp.gguf"));
        check_f32(arch, &path, "llama.cpp's f32 conversion");
        // Its tokenizer (rebuilt from llama.cpp's arrays and pre-tokenizer name) gives the
        // fixture's ids.
        let llm = Llm::open(&path, &LlmOptions::default()).unwrap();
        let m = &fixture("decoders-tiny.json")["models"][arch];
        let text = m["text"].as_str().unwrap();
        let want = text_ids(m);
        let got = llm.tokenize(text).unwrap();
        assert_eq!(
            &got[..want.len()],
            &want[..],
            "{arch}: llama.cpp file's tokens"
        );
    }
}

#[test]
fn q8_0_conversions_keep_the_greedy_tokens() {
    let fx = fixture("decoders-tiny.json");
    for arch in ARCHS {
        let m = &fx["models"][arch];
        let (_, toks, _) = run(&tiny(arch, WeightType::Q8_0), &ids(&m["ids"]), 8);
        assert_eq!(toks, ids(&m["plain"]["greedy"]), "{arch} Q8_0: greedy");
    }
}

#[test]
fn converted_files_carry_their_tokenizer_and_architecture() {
    let fx = fixture("decoders-tiny.json");
    for arch in ARCHS {
        let path = tiny(arch, WeightType::F32);
        let llm = Llm::open(&path, &LlmOptions::default()).unwrap();
        let m = &fx["models"][arch];
        let got = llm.tokenize(m["text"].as_str().unwrap()).unwrap();
        let want = text_ids(m);
        assert_eq!(&got[..want.len()], &want[..], "{arch}: tokens");
        let file = edgecut::GgufFile::open(&path).unwrap();
        let expect = if arch == "llama3" { "llama" } else { arch };
        assert_eq!(file.architecture().unwrap(), expect);
    }
}
