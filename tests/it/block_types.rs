//! Files as llama.cpp's quantizer writes them: a tiny seeded Qwen3 whose rows are whole
//! super-blocks, quantized by `llama_model_quantize` to Q4_K_M, Q5_K_M, Q6_K, Q3_K_M, IQ4_XS,
//! Q2_K, Q5_0, Q5_1, IQ4_NL and BF16 (`tests/reference/make_kquant_fixtures.py`), each run by
//! edgecut against transformers on the same file's weights as gguf-py dequantizes them (keys and
//! values rounded to f16 where edgecut stores them): logits at every prompt position and over 8
//! greedy steps with the KV cache, and the greedy tokens.
//!
//! Tolerances, of the largest logit: 2e-4 for the prompt (f32 products; measured up to 1.1e-4 on
//! a Zen 3), 1e-3 for the greedy steps, whose token kernels round activations to int16 per block
//! of 32 (relative error below 2^-16 of the block's largest; through this model's two layers of
//! large weights that measured 2.4e-4 to 3.7e-4 on AVX2, against 1e-5 to 5e-5 with
//! `EDGECUT_KERNELS=scalar`). A wrong scale, nibble, bit or sign in any block type moves logits
//! by far more (the Q6_K scale read one byte off: 1.4).

use super::decoder_spec::{rel_diff, rows, run};
use edgecut_tests::{fixture, ids, repo_root};

#[test]
fn every_block_type_llama_cpp_writes_matches_transformers_on_the_same_weights() {
    let fx = fixture("kquant.json");
    let prompt = ids(&fx["ids"]);
    let files = fx["files"].as_object().unwrap();
    assert_eq!(files.len(), 10, "the fixture's files");
    let mut types = std::collections::BTreeSet::new();
    for (name, f) in files {
        let path = repo_root().join(f["file"].as_str().unwrap());
        let (pl, toks, sl) = run(&path, &prompt, 8);
        let r = &f["f16_kv"];
        let (dp, ds) = (
            rel_diff(&pl, &rows(&r["prompt_logits"])),
            rel_diff(&sl, &rows(&r["step_logits"])),
        );
        println!("{name}: prompt {dp:.2e}, steps {ds:.2e} of the largest logit");
        assert!(dp <= 2e-4, "{name}: prompt logits off by {dp:e}");
        assert!(ds <= 1e-3, "{name}: step logits off by {ds:e}");
        assert_eq!(toks, ids(&r["greedy"]), "{name}: greedy");
        for t in f["types"].as_array().unwrap() {
            types.insert(t.as_str().unwrap().to_string());
        }
    }
    // Every type the issue lists ran in at least one file.
    for t in [
        "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q5_0", "Q5_1", "IQ4_NL", "IQ4_XS", "BF16",
    ] {
        assert!(types.contains(t), "no file holds {t}: {types:?}");
    }
}
