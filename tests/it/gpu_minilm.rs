//! MiniLM end to end on the GPU backend through wgpu (on a machine without a GPU, Mesa's
//! lavapipe): every fixture text's embedding against the CPU backend's and PyTorch's.
#![cfg(feature = "wgpu")]

use edgecut::{cosine, AttentionPrecision, DeviceKind, Session, SessionOptions, WeightType};
use edgecut_tests::{f32s, fixture, minilm};

fn session(device: DeviceKind, max_len: usize) -> Session {
    // The GPU computes attention in f32; the CPU's default may round it to bf16 (as faithful
    // to PyTorch, not value for value the same), so the CPU runs f32 here.
    let opts = SessionOptions::default()
        .with_device(device)
        .with_max_seq_len(Some(max_len))
        .with_batch_size(8)
        .with_attention(AttentionPrecision::F32);
    Session::open(minilm(WeightType::Q8_0), &opts).unwrap_or_else(|e| panic!("{device:?}: {e}"))
}

#[test]
fn minilm_on_wgpu_matches_the_cpu_backend() {
    let fx = fixture("minilm.json");
    let cases = fx["cases"].as_array().unwrap();
    let (mut to_cpu, mut to_torch, mut cpu_torch) = (Vec::new(), Vec::new(), Vec::new());
    for max_len in [256usize, 512] {
        let (gpu, cpu) = (
            session(DeviceKind::Wgpu, max_len),
            session(DeviceKind::Cpu, max_len),
        );
        println!("wgpu device: {}", gpu.device());
        let group: Vec<_> = cases.iter().filter(|c| c["max_len"] == max_len).collect();
        let texts: Vec<&str> = group.iter().map(|c| c["text"].as_str().unwrap()).collect();
        let (g, c) = (gpu.embed(&texts).unwrap(), cpu.embed(&texts).unwrap());
        for ((t, case), (gv, cv)) in texts
            .iter()
            .zip(&group)
            .zip(g.vectors.iter().zip(&c.vectors))
        {
            let torch = f32s(&case["embedding"]);
            let (a, b) = (cosine(gv, cv), cosine(gv, &torch));
            // Both backends quantize every matmul's input to int8 per 32 values: a last-bit f32
            // difference (the GPU sums blocks in another order than the CPU's packed kernel)
            // can move a value across a rounding boundary, one int8 step, which a short text's
            // pooled vector feels most (one of 38 texts lands at 0.99989). Hence 0.9998 per
            // text, 0.99995 on average, and the independent reference below.
            assert!(a >= 0.9998, "cosine to the CPU backend {a} for {t:?}");
            assert!(b >= 0.999, "cosine to PyTorch {b} for {t:?}");
            to_cpu.push(a);
            to_torch.push(b);
            cpu_torch.push(cosine(cv, &torch));
        }
    }
    let min = |v: &[f32]| v.iter().cloned().fold(1.0f32, f32::min);
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    println!(
        "MiniLM on wgpu, {} texts: cosine to the CPU backend min {:.6} mean {:.6}, to PyTorch \
         fp32 min {:.5} mean {:.6} (the CPU backend's: min {:.5} mean {:.6})",
        to_cpu.len(),
        min(&to_cpu),
        mean(&to_cpu),
        min(&to_torch),
        mean(&to_torch),
        min(&cpu_torch),
        mean(&cpu_torch)
    );
    assert!(mean(&to_cpu) >= 0.99995, "mean cosine to the CPU backend");
    // As faithful to PyTorch as the CPU backend is, on average.
    assert!(
        mean(&to_torch) >= mean(&cpu_torch) - 2e-5,
        "mean cosine to PyTorch"
    );
}

/// The GPU multiplies int8 activations with quantized weights only: an f32 MiniLM is refused
/// through `supports` before any weight is read (the model asks for every matrix's type
/// first), with an error naming the tensor, its type and the device.
#[test]
fn gpu_refuses_f32_weights_for_int8_products_before_reading_any() {
    let opts = SessionOptions::default().with_device(DeviceKind::Wgpu);
    let err = Session::open(minilm(WeightType::F32), &opts).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            edgecut::Error::Model(edgecut_models::ModelError::UnsupportedWeights { .. })
        ),
        "{msg}"
    );
    assert!(
        msg.contains("\"blk.0.attn_q.weight\"") && msg.contains("F32") && msg.contains("wgpu"),
        "{msg}"
    );
    // The CPU multiplies every type both ways.
    Session::open(minilm(WeightType::F32), &SessionOptions::default()).unwrap();
}
