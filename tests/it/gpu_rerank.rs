//! A cross-encoder on the GPU backend through wgpu (lavapipe without a GPU): the tiny BERT
//! reranker's scores of the fixture's 20 pairs against the CPU backend's and PyTorch's order.
//! Reranking runs the last block's feed-forward on each text's first row alone
//! (`Encoder::classify_ids`), written once over the contract: this is that path on the GPU.
#![cfg(feature = "wgpu")]

use edgecut::{AttentionPrecision, DeviceKind, Session, SessionOptions, WeightType};

use crate::retrieval::{logits, model, order, query_documents, tiny};

fn session(device: DeviceKind) -> Session {
    // The GPU computes attention in f32; the CPU runs f32 too, so the two differ only by
    // their products' summation order.
    let opts = SessionOptions::default()
        .with_device(device)
        .with_batch_size(8)
        .with_attention(AttentionPrecision::F32);
    Session::open(tiny("bert-rerank-tiny", WeightType::Q8_0), &opts)
        .unwrap_or_else(|e| panic!("{device:?}: {e}"))
}

#[test]
fn gpu_reranks_like_the_cpu_backend_and_in_pytorchs_order() {
    let fx = model("bert-rerank-tiny");
    let pairs = fx["pairs"].as_array().unwrap();
    let (refs, want) = (query_documents(pairs), logits(pairs));
    let (gpu, cpu) = (session(DeviceKind::Wgpu), session(DeviceKind::Cpu));
    println!("wgpu device: {}", gpu.device());
    assert_ne!(
        gpu.device(),
        cpu.device(),
        "the GPU session runs on the GPU"
    );
    let g = gpu.score_pairs(&refs).unwrap().scores;
    let c = cpu.score_pairs(&refs).unwrap().scores;
    let worst = g
        .iter()
        .zip(&c)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let span = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    println!("bert-rerank-tiny Q8_0 on wgpu: worst |score - CPU| {worst:e} (scores up to {span})");
    // Both quantize every product's input to int8 per 32 values; a last-bit f32 difference
    // can move a value one int8 step, as in the MiniLM test beside this one.
    assert!(worst <= 2e-3 * span.max(1.0), "{g:?} vs {c:?}");
    for (q, (a, b)) in g.chunks(4).zip(want.chunks(4)).enumerate() {
        assert_eq!(order(a), order(b), "query {q}'s ranking on wgpu");
    }
}
