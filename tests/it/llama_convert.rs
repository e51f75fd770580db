//! A Hugging Face Llama checkpoint (a seeded random `LlamaForCausalLM`: GQA 4/2, rope_theta
//! 10000, untied head, a feed-forward of 88, not whole blocks) converted by `edgecut convert`,
//! against the PyTorch logits `tests/reference/make_llama_fixtures.py` recorded.

use edgecut::{Llm, LlmOptions, WeightType};
use edgecut_tests::{converted, f32s, fixture, ids, repo_root};

fn check(weight_type: WeightType, tol: f32) -> f32 {
    let dir = repo_root().join("tests/fixtures/llama-tiny");
    let path = converted(&dir, "llama-tiny", weight_type);
    let llm = Llm::open(&path, &LlmOptions::default()).unwrap();
    let fx = fixture("llama-tiny.json");
    let mut worst = 0f32;
    for c in fx["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let want_ids = ids(&c["ids"]);
        let text = fixture("smollm2.json")["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == c["name"])
            .unwrap()["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(llm.tokenize(&text).unwrap(), want_ids, "{name}: ids");
        let all = llm.new_context().unwrap().logits(&want_ids).unwrap();
        let vocab = llm.vocab_size();
        let rows = [(0, "first_top5"), (want_ids.len() - 1, "top5")];
        for (row, key) in rows {
            let logits = &all[row * vocab..(row + 1) * vocab];
            let top: Vec<u32> = ids(&c[key]["ids"]);
            for (&id, want) in top.iter().zip(f32s(&c[key]["logits"])) {
                let d = (logits[id as usize] - want).abs();
                worst = worst.max(d);
                assert!(
                    d <= tol,
                    "{weight_type:?} {name} {key}: logit {id} off by {d}"
                );
            }
            let best = edgecut_models::sampling::argmax(logits);
            if tol < 0.01 {
                assert_eq!(best, top[0], "{weight_type:?} {name} {key}: argmax");
            }
        }
    }
    println!("{weight_type:?}: largest logit difference {worst:.5}");
    worst
}

#[test]
fn converted_llama_checkpoint_matches_pytorch() {
    // The checkpoint is f16: F32 and F16 files hold its exact values; the f16 KV cache
    // rounds keys and values to 11 bits (measured: 0.001).
    check(WeightType::F32, 5e-3);
    check(WeightType::F16, 5e-3);
    // Q8_0 rounds each weight by at most half a step (|w| / 254 of its block).
    check(WeightType::Q8_0, 0.15);
}
