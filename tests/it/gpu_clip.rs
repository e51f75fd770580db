//! CLIP on the GPU backend through wgpu (lavapipe without a GPU): the tiny quick_gelu
//! checkpoint in Q8_0, text embeddings (causal attention) and image embeddings (from the
//! recorded pixel tensors) against the CPU backend's and PyTorch's.
#![cfg(feature = "wgpu")]

use edgecut::{cosine, AttentionPrecision, DeviceKind, Session, SessionOptions, WeightType};
use edgecut_tests::{converted, f32s, fixture, repo_root};

fn session(device: DeviceKind) -> Session {
    let path = converted(
        &repo_root().join("tests/fixtures/clip-tiny"),
        "clip-tiny",
        WeightType::Q8_0,
    );
    let opts = SessionOptions::default()
        .with_device(device)
        .with_attention(AttentionPrecision::F32);
    Session::open(path, &opts).unwrap_or_else(|e| panic!("{device:?}: {e}"))
}

#[test]
fn gpu_clip_on_wgpu_matches_the_cpu_and_pytorch() {
    let fx = fixture("clip-tiny.json")["models"]["clip-tiny"].clone();
    let (gpu, cpu) = (session(DeviceKind::Wgpu), session(DeviceKind::Cpu));
    println!("wgpu device: {}", gpu.device());
    let texts: Vec<&str> = fx["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    let (g, c) = (
        gpu.embed(&texts).unwrap().vectors,
        cpu.embed(&texts).unwrap().vectors,
    );
    let images = fx["images"].as_array().unwrap();
    let pixels: Vec<f32> = images.iter().flat_map(|c| f32s(&c["pixels"])).collect();
    let (gi, ci) = (
        gpu.embed_pixel_tensors(&pixels, images.len()).unwrap(),
        cpu.embed_pixel_tensors(&pixels, images.len()).unwrap(),
    );
    let refs = fx["texts"]
        .as_array()
        .unwrap()
        .iter()
        .chain(images)
        .map(|c| f32s(&c["embedding"]));
    let (mut to_cpu, mut to_torch) = (1f32, 1f32);
    for ((gv, cv), torch) in g.iter().chain(&gi).zip(c.iter().chain(&ci)).zip(refs) {
        to_cpu = to_cpu.min(cosine(gv, cv));
        to_torch = to_torch.min(cosine(gv, &torch));
    }
    println!(
        "CLIP on wgpu, {} texts and {} images: worst cosine to the CPU backend {to_cpu}, to \
         PyTorch {to_torch}",
        texts.len(),
        images.len()
    );
    // Both quantize matmul inputs to int8 per 32 values; a last-bit difference can move one
    // step (see gpu_minilm.rs).
    assert!(to_cpu >= 0.9998, "to the CPU backend: {to_cpu}");
    assert!(to_torch >= 0.999, "to PyTorch: {to_torch}");
}
