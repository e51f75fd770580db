//! `EDGECUT_KERNELS=scalar` means scalar everywhere: every op run with the scalar set takes no
//! SIMD path (the kernel table's diagnostic count of SIMD kernel calls does not move), while the
//! same ops with this CPU's best set do move it (so the count can fail). Its own test binary,
//! with one test: the count is process-wide.

use edgecut_backends::cpu::{
    kernels, scalar, Attention, AttentionPrecision, CausalAttention, CpuBackend, Kernels, Linear,
    WeightData,
};
use edgecut_backends::ops::{ActQuant, RopeStyle};
use edgecut_backends::{quant, DType};
use half::f16;

mod common;

use common::Rng;

/// Every CPU op once, on shapes the SIMD kernels take (heads of 32 and 64, rows of 16s).
fn run_every_op(ks: Kernels) {
    let cpu = CpuBackend::with_kernels(ks, 2)
        .split_everything()
        .with_attention(AttentionPrecision::Fast);
    let mut rng = Rng(11);
    let (m, n, k) = (8, 64, 128);
    let x = rng.vec(m * k, 1.0);
    let wf = rng.vec(n * k, 0.5);
    let q8 = quant::quantize_q8_0_vec(&wf).unwrap();
    // Q4_1 blocks: f16 scale and minimum, then 16 bytes of 4-bit quants.
    let q41: Vec<u8> = (0..n * k / quant::QK)
        .flat_map(|_| {
            let mut b = vec![0u8; quant::Q4_1_BYTES];
            b[..2].copy_from_slice(&f16::from_f32(0.02).to_le_bytes());
            b[2..4].copy_from_slice(&f16::from_f32(-0.1).to_le_bytes());
            b[4..].iter_mut().for_each(|v| *v = rng.next() as u8);
            b
        })
        .collect();
    let bias = rng.vec(n, 0.1);
    let mut out = vec![0f32; m * n];
    let packed = cpu.pack(&q8, n, k);
    let mut weights = vec![
        (WeightData::Q8_0(&q8), ActQuant::Int8),
        (WeightData::Q8_0(&q8), ActQuant::Int8Outliers),
        (WeightData::Q8_0(&q8), ActQuant::F32),
        (WeightData::F32(&wf), ActQuant::Int8),
        (WeightData::Blocks(DType::Q4_1, &q41), ActQuant::F32),
    ];
    if let Some(p) = &packed {
        weights.push((WeightData::Packed(p, &q8), ActQuant::Int8Outliers));
    }
    for (w, act) in weights {
        let lin = Linear {
            w,
            bias: Some(&bias),
            n,
            k,
            act,
        };
        cpu.linear(&x, m, &lin, &mut out).unwrap();
        // One row: the few-row paths.
        cpu.linear(&x[..k], 1, &lin, &mut out[..n]).unwrap();
    }
    let (gamma, beta) = (rng.vec(k, 1.0), rng.vec(k, 0.1));
    let mut y = x.clone();
    cpu.layer_norm(&mut y, k, &gamma, &beta, 1e-6).unwrap();
    cpu.add_layer_norm(&mut y, &x, k, &gamma, &beta, 1e-6)
        .unwrap();
    cpu.gelu(&mut y);
    let mut z = vec![0f32; x.len()];
    cpu.rms_norm(&x, &mut z, &gamma, 1e-6).unwrap();
    cpu.silu_mul(&mut z, &x).unwrap();
    // Encoder attention: 2 texts of 8 tokens, 4 heads of 32, one padded token.
    let (batch, seq, heads, hd) = (2, 8, 4, 32);
    let qkv = rng.vec(batch * seq * 3 * heads * hd, 1.0);
    let mut mask = vec![1u8; batch * seq];
    mask[seq - 1] = 0;
    let a = Attention {
        q: &qkv,
        k: &qkv[heads * hd..],
        v: &qkv[2 * heads * hd..],
        stride: 3 * heads * hd,
        mask: &mask,
        batch,
        seq,
        heads,
        head_dim: hd,
        causal: false,
        window: None,
    };
    let mut ctx = vec![0f32; batch * seq * heads * hd];
    cpu.attention(&a, &mut ctx).unwrap();
    // Decoder: rope and causal attention over an f16 cache, heads of 64.
    let (heads, kv_heads, hd, cap, rows) = (4, 2, 64, 16, 4);
    let inv: Vec<f32> = (0..hd / 2)
        .map(|i| 1.0 / 10_000f32.powf(i as f32 / 32.0))
        .collect();
    let mut q = rng.vec(rows * heads * hd, 1.0);
    cpu.rope(&mut q, heads, hd, 3, &inv, RopeStyle::Interleaved)
        .unwrap();
    let kc: Vec<f16> = rng
        .vec(kv_heads * hd * cap, 1.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let vc: Vec<f16> = rng
        .vec(kv_heads * hd * cap, 1.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let ca = CausalAttention {
        q: &q,
        k: &kc,
        v: &vc,
        pos0: 8,
        capacity: cap,
        window: None,
        heads,
        kv_heads,
        head_dim: hd,
    };
    let mut att = vec![0f32; q.len()];
    cpu.causal_attention(&ca, &mut att).unwrap();
}

#[test]
fn the_scalar_set_takes_no_simd_path_and_the_best_set_does() {
    let s = kernels::SCALAR;
    assert!(!s.is_simd());
    assert!(std::ptr::fn_addr_eq(
        s.dot_q8_0,
        scalar::dot_q8_0 as kernels::DotQ8_0
    ));
    assert!(CpuBackend::with_kernels(s, 1)
        .pack(&[0; 34 * 4], 4, 32)
        .is_none());
    kernels::count_simd_calls(true);
    let before = kernels::simd_calls();
    run_every_op(s);
    assert_eq!(
        kernels::simd_calls(),
        before,
        "a SIMD kernel ran with the scalar set"
    );

    let best = kernels::available()[0];
    println!("best set: {best:?}");
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        assert!(best.is_simd());
        run_every_op(best);
        let ran = kernels::simd_calls() - before;
        println!("{best:?}: {ran} SIMD kernel calls");
        assert!(ran >= 10, "only {ran} SIMD kernel calls with {best:?}");
    }
}
