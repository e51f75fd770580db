//! The GPU ops against the scalar CPU reference (and f64 where the CPU test uses it), one suite
//! instantiated per GPU runtime this build has. The wgpu suite needs an adapter: on a machine
//! without a GPU, Mesa's lavapipe (`mesa-vulkan-drivers`) is one, and the suite fails with what
//! to install when none is found. The CUDA suite runs where a CUDA driver is present and
//! otherwise checks that opening CUDA fails with a clear error rather than a panic.
#![cfg(any(feature = "wgpu", feature = "cuda"))]

use edgecut_backends::cpu::{gelu_scalar, kernels, Attention, CpuBackend, Linear, WeightData};
use edgecut_backends::gpu::{GpuAttention, GpuBackend, GpuKind};
use edgecut_backends::ops::{embedding_rows, ActQuant, OpError, RopeStyle};
use edgecut_backends::quant;
use edgecut_backends::DType;

#[path = "gpu_conformance/blocks.rs"]
mod blocks;
mod common;

use common::Rng;

/// The scalar CPU reference, one thread.
fn reference() -> CpuBackend {
    CpuBackend::with_kernels(kernels::SCALAR, 1)
}

/// Largest `|a - b| / (1 + |b|)`.
fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0, f32::max)
}

fn linear_matches_the_scalar_reference(gpu: &GpuBackend) {
    let mut rng = Rng(21);
    let cpu = reference();
    for (m, n, k) in [
        (1, 1, 32),
        (3, 5, 64),
        (7, 33, 384),
        (17, 129, 96),
        (1, 384, 1536),
        (40, 20, 1536),
        (70, 130, 384),
        (128, 64, 1536),
    ] {
        let wq = quant::quantize_q8_0_vec(&rng.vec(n * k, 0.5)).unwrap();
        let mut x = rng.vec(m * k, 2.0);
        // Outlier channels (+-40 against inliers within +-2) as BERT's layer-norm outputs have;
        // with k = 1536 one row carries more than k / 16 of them, so the cap is exercised.
        for i in 0..m {
            let cols: Vec<usize> = match (k, i) {
                (1536, 0) => (0..120).map(|c| c * 12 + 1).collect(),
                (k, _) if k >= 64 => vec![5, k / 2 + 3],
                _ => vec![],
            };
            for (t, c) in cols.into_iter().enumerate() {
                x[i * k + c] = (if x[i * k + c] < 0.0 { -40.0 } else { 40.0 }) - t as f32 * 0.1;
            }
        }
        let bias = rng.vec(n, 1.0);
        let w = gpu.upload_q8_0(&wq, n, k).unwrap();
        let (xg, bg) = (gpu.upload(&x), gpu.upload(&bias));
        for act in [ActQuant::Int8, ActQuant::Int8Outliers] {
            let mut want = vec![0f32; m * n];
            let lin = Linear {
                w: WeightData::Q8_0(&wq),
                bias: Some(&bias),
                n,
                k,
                act,
            };
            cpu.linear(&x, m, &lin, &mut want).unwrap();
            let out = gpu.empty(m * n);
            gpu.linear(&xg, m, &w, Some(&bg), act, &out).unwrap();
            let got = gpu.download(&out).unwrap();
            // The same int8 values and scales on both sides: only the f32 sums of per-block
            // terms differ in order (k / 32 terms, each rounded at 2^-24 relative).
            let err = worst(&got, &want);
            assert!(
                err <= 2e-5,
                "{act:?} {m}x{n}x{k}: worst relative error {err}"
            );
            // Many rows take 64 x 64 tiles, a few 16 x 16 ones: the same sums, bit for bit.
            if m >= 64 {
                for r0 in (0..m).step_by(16) {
                    let r = 16.min(m - r0);
                    let part = gpu.empty(r * n);
                    let xs = gpu.upload(&x[r0 * k..(r0 + r) * k]);
                    gpu.linear(&xs, r, &w, Some(&bg), act, &part).unwrap();
                    assert_eq!(
                        gpu.download(&part).unwrap(),
                        got[r0 * n..(r0 + r) * n],
                        "{act:?} {m}x{n}x{k}: rows {r0}.. in small tiles"
                    );
                }
            }
            // Without a bias.
            gpu.linear(&xg, m, &w, None, act, &out).unwrap();
            let nobias = gpu.download(&out).unwrap();
            for (i, (a, b)) in nobias.iter().zip(&got).enumerate() {
                assert!((a + bias[i % n] - b).abs() <= 1e-4 * (1.0 + b.abs()));
            }
        }
    }
}

fn linear_refuses_wrong_shapes(gpu: &GpuBackend) {
    let wq = quant::quantize_q8_0_vec(&[0.5; 64]).unwrap();
    assert!(gpu.upload_q8_0(&wq, 2, 30).is_err(), "k not whole blocks");
    assert!(gpu.upload_q8_0(&wq[..60], 2, 32).is_err(), "short bytes");
    let w = gpu.upload_q8_0(&wq, 2, 32).unwrap();
    let x = gpu.upload(&[1.0; 64]);
    let out = gpu.empty(4);
    assert!(gpu.linear(&x, 3, &w, None, ActQuant::Int8, &out).is_err());
    assert!(gpu
        .linear(
            &x,
            2,
            &w,
            Some(&gpu.upload(&[0.0; 3])),
            ActQuant::Int8,
            &out
        )
        .is_err());
    assert!(gpu.linear(&x, 2, &w, None, ActQuant::F32, &out).is_err());
    assert!(gpu.linear(&x, 2, &w, None, ActQuant::Int8, &out).is_ok());
}

fn layer_norm_matches_the_scalar_reference(gpu: &GpuBackend) {
    let mut rng = Rng(3);
    let cpu = reference();
    for dim in [1, 7, 384] {
        let x = rng.vec(5 * dim, 5.0);
        let delta = rng.vec(5 * dim, 1.0);
        let g = rng.vec(dim, 1.0);
        let b = rng.vec(dim, 1.0);
        let (gg, bg) = (gpu.upload(&g), gpu.upload(&b));
        let mut want = x.clone();
        cpu.layer_norm(&mut want, dim, &g, &b, 1e-12).unwrap();
        let xg = gpu.upload(&x);
        gpu.layer_norm(&xg, None, dim, &gg, &bg, 1e-12).unwrap();
        let err = worst(&gpu.download(&xg).unwrap(), &want);
        assert!(err <= 1e-5, "dim {dim}: {err}");
        let mut want = x.clone();
        cpu.add_layer_norm(&mut want, &delta, dim, &g, &b, 1e-12)
            .unwrap();
        let xg = gpu.upload(&x);
        gpu.layer_norm(&xg, Some(&gpu.upload(&delta)), dim, &gg, &bg, 1e-12)
            .unwrap();
        let err = worst(&gpu.download(&xg).unwrap(), &want);
        assert!(err <= 1e-5, "residual dim {dim}: {err}");
    }
    let xg = gpu.upload(&[0.0; 5]);
    let one = gpu.upload(&[1.0, 1.0]);
    assert!(gpu.layer_norm(&xg, None, 2, &one, &one, 1e-5).is_err());
}

fn gelu_matches_the_scalar_reference(gpu: &GpuBackend) {
    let x: Vec<f32> = (0..2000).map(|i| (i as f32 - 1000.0) * 0.007).collect();
    let xg = gpu.upload(&x);
    gpu.gelu(&xg).unwrap();
    let got = gpu.download(&xg).unwrap();
    for (g, v) in got.iter().zip(&x) {
        let want = gelu_scalar(*v);
        assert!(
            (g - want).abs() <= 1e-6 * (1.0 + want.abs()),
            "{v}: {g} vs {want}"
        );
    }
}

fn attention_matches_the_scalar_reference(gpu: &GpuBackend) {
    let cpu = reference();
    // Heads up to 64 wide take the tiled kernel (70 tokens: two blocks of queries, five tiles
    // of keys); wider ones the one-query-per-unit kernel. Windows (ModernBERT's local
    // layers) narrower than a tile and wider than a block of queries.
    for (hd, seq, causal, window) in [
        (8usize, 9, false, None),
        (32, 9, false, None),
        (64, 9, false, None),
        (32, 70, false, None),
        (96, 9, false, None),
        (32, 70, true, None),
        (96, 9, true, None),
        (32, 70, false, Some(4)),
        (64, 70, false, Some(40)),
        (96, 9, false, Some(2)),
        (32, 70, true, Some(5)),
    ] {
        let mut rng = Rng(5 + hd as u64);
        let (batch, heads) = (3, 4);
        let hidden = heads * hd;
        let rows = batch * seq;
        let stacked = rng.vec(rows * 3 * hidden, 1.0);
        let lens = [seq, seq / 2, 1];
        let mask: Vec<u8> = (0..rows).map(|i| (i % seq < lens[i / seq]) as u8).collect();
        let a = Attention {
            q: &stacked,
            k: &stacked[hidden..],
            v: &stacked[2 * hidden..],
            stride: 3 * hidden,
            mask: &mask,
            batch,
            seq,
            heads,
            head_dim: hd,
            causal,
            window,
        };
        let mut want = vec![0f32; rows * hidden];
        cpu.attention(&a, &mut want).unwrap();
        let (qkv, mg) = (
            gpu.upload(&stacked),
            gpu.upload_u32(&mask.iter().map(|&m| m as u32).collect::<Vec<_>>()),
        );
        let ga = GpuAttention {
            qkv: &qkv,
            q_off: 0,
            k_off: hidden,
            v_off: 2 * hidden,
            stride: 3 * hidden,
            mask: &mg,
            batch,
            seq,
            heads,
            head_dim: hd,
            causal,
            window,
        };
        let out = gpu.empty(rows * hidden);
        gpu.attention(&ga, &out).unwrap();
        let err = worst(&gpu.download(&out).unwrap(), &want);
        assert!(
            err <= 1e-5,
            "head size {hd}, causal {causal}, window {window:?}: {err}"
        );
        let bad = GpuAttention {
            v_off: 2 * hidden + 1,
            ..ga
        };
        assert!(gpu.attention(&bad, &out).is_err(), "v past the row stride");
        let short = gpu.empty(rows * hidden - 1);
        assert!(gpu.attention(&ga, &short).is_err(), "short output");
    }
}

fn decoder_ops_match_the_scalar_reference(gpu: &GpuBackend) {
    let mut rng = Rng(9);
    let cpu = reference();
    // RMS norm.
    for dim in [1, 7, 576] {
        let x = rng.vec(3 * dim, 4.0);
        let g = rng.vec(dim, 1.0);
        let mut want = vec![0f32; x.len()];
        cpu.rms_norm(&x, &mut want, &g, 1e-5).unwrap();
        let out = gpu.empty(x.len());
        gpu.rms_norm(&gpu.upload(&x), &out, &gpu.upload(&g), 1e-5)
            .unwrap();
        let err = worst(&gpu.download(&out).unwrap(), &want);
        assert!(err <= 1e-5, "rms norm dim {dim}: {err}");
    }
    // SwiGLU (the CPU's exp is a polynomial within 3e-7 relative).
    let (gate, up) = (rng.vec(1000, 10.0), rng.vec(1000, 2.0));
    let mut want = gate.clone();
    cpu.silu_mul(&mut want, &up).unwrap();
    let gg = gpu.upload(&gate);
    gpu.silu_mul(&gg, &gpu.upload(&up)).unwrap();
    let err = worst(&gpu.download(&gg).unwrap(), &want);
    assert!(err <= 1e-5, "silu: {err}");
    assert!(gpu.silu_mul(&gg, &gpu.upload(&up[1..])).is_err());
    // Rotary embeddings in both layouts, positions 5.. (angles up to ~9 radians).
    let (heads, hd, rows) = (3, 64, 4);
    let inv: Vec<f32> = (0..hd / 2)
        .map(|i| 10000f32.powf(-2.0 * i as f32 / hd as f32))
        .collect();
    for style in [RopeStyle::Interleaved, RopeStyle::Halves] {
        let x = rng.vec(rows * heads * hd, 1.0);
        let mut want = x.clone();
        cpu.rope(&mut want, heads, hd, 5, &inv, style).unwrap();
        let xg = gpu.upload(&x);
        gpu.rope(&xg, heads, hd, 5, &gpu.upload(&inv), style)
            .unwrap();
        let err = worst(&gpu.download(&xg).unwrap(), &want);
        assert!(err <= 2e-6, "rope {style:?}: {err}");
    }
    let xg = gpu.upload(&[0.0; 10]);
    assert!(gpu
        .rope(&xg, 1, 4, 0, &gpu.upload(&inv), RopeStyle::Halves)
        .is_err());
    // Embedding gather from a Q8_0 table: exact.
    let (vocab, dim) = (50, 64);
    let table = quant::quantize_q8_0_vec(&rng.vec(vocab * dim, 1.0)).unwrap();
    let ids = [0u32, 49, 7, 7, 13];
    let mut want = vec![0f32; ids.len() * dim];
    embedding_rows(&table, DType::Q8_0, vocab, dim, &ids, &mut want).unwrap();
    let t = gpu.upload_q8_0(&table, vocab, dim).unwrap();
    let out = gpu.empty(ids.len() * dim);
    gpu.gather(&t, &ids, &out).unwrap();
    assert_eq!(gpu.download(&out).unwrap(), want);
    assert_eq!(
        gpu.gather(&t, &[3, 50], &gpu.empty(2 * dim)),
        Err(OpError::TokenId { id: 50, vocab: 50 })
    );
}

/// f16 bits as the CPU's cache holds them (`half`, round to nearest even).
fn f16(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// The KV cache's f16 conversion, bit for bit: one position's attention returns its values
/// (softmax of one score is 1), so the output is the cache's value of each input.
fn kv_cache_rounds_as_the_cpu(gpu: &GpuBackend) {
    let tiny = 2f32.powi(-24);
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        -2.5,
        65504.0,
        65519.0,
        65520.0, // rounds up to infinity
        1e6,
        -1e6,
        f32::INFINITY,
        tiny,
        tiny / 2.0,                               // a tie: to even, zero
        tiny * 1.5,                               // a tie: to even, two units
        tiny * 0.75,                              // above half a unit: one unit
        1e-8,                                     // under half a unit: zero
        6.1e-5,                                   // subnormal, near the smallest normal
        6.104e-5,                                 // the smallest normal, rounded
        1.0 + 2f32.powi(-11),                     // a tie: to even, 1
        1.0 + 3.0 * 2f32.powi(-11),               // a tie: to even, 1 + 2^-9
        -(1.0 + 2f32.powi(-11) + 2f32.powi(-20)), // just above a tie
        f32::MIN_POSITIVE,
    ];
    let mut rng = Rng(17);
    while v.len() < 64 {
        let e = rng.below(40) as i32 - 26;
        v.push(rng.f32() * 2f32.powi(e));
    }
    let shape = edgecut_backends::KvShape {
        layers: 2,
        kv_heads: 1,
        head_dim: 64,
        capacity: 3,
        window: None,
        dtype: edgecut_backends::kv_shape::KvType::F16,
    };
    let cache = gpu.kv_cache(shape).unwrap();
    let k = gpu.upload(&rng.vec(64, 1.0));
    gpu.kv_append(&cache, 1, 0, &k, &gpu.upload(&v)).unwrap();
    let out = gpu.empty(64);
    gpu.causal_attention(&gpu.upload(&rng.vec(64, 1.0)), &cache, 1, 0, 1, &out)
        .unwrap();
    let got = gpu.download(&out).unwrap();
    for (i, (g, x)) in got.iter().zip(&v).enumerate() {
        assert!(
            *g == f16(*x),
            "value {i}: {x:e} became {g:e}, the CPU keeps {:e}",
            f16(*x)
        );
    }
    // Past the capacity, another layer than the cache has, keys and values of unequal sizes:
    // shape errors.
    assert!(gpu.kv_append(&cache, 1, 3, &k, &k).is_err());
    assert!(gpu.kv_append(&cache, 2, 0, &k, &k).is_err());
    assert!(gpu.kv_append(&cache, 0, 0, &k, &gpu.empty(32)).is_err());
    assert!(gpu.causal_attention(&k, &cache, 0, 3, 1, &out).is_err());
}

/// A SmolLM2-sized step (9 heads over 3 KV heads of 64, 100 positions; one row, then 16) and
/// its matmuls (Q4_1 and Q8_0, 576 x 1536) against the scalar CPU backend through the contract.
fn decoder_step_matches_the_cpu(gpu: &GpuBackend) {
    use edgecut_backends::{Backend, KvShape};
    let cpu = reference();
    let mut rng = Rng(23);
    let (heads, kvh, hd, cap) = (9, 3, 64, 128);
    let shape = KvShape {
        layers: 2,
        kv_heads: kvh,
        head_dim: hd,
        capacity: cap,
        window: None,
        dtype: edgecut_backends::kv_shape::KvType::F16,
    };
    let (mut cc, mut gc) = (
        Backend::kv_cache(&cpu, shape).unwrap(),
        Backend::kv_cache(gpu, shape).unwrap(),
    );
    let kvw = kvh * hd;
    for (pos0, rows) in [(0, 84), (84, 16)] {
        let (k, v) = (rng.vec(rows * kvw, 2.0), rng.vec(rows * kvw, 1.0));
        Backend::kv_append(&cpu, &mut cc, 1, pos0, &k, &v).unwrap();
        Backend::kv_append(gpu, &mut gc, 1, pos0, &gpu.upload(&k), &gpu.upload(&v)).unwrap();
    }
    for (pos0, rows) in [(99, 1), (84, 16)] {
        let q = rng.vec(rows * heads * hd, 1.0);
        let mut want = vec![0f32; q.len()];
        Backend::causal_attention(&cpu, &q, &cc, 1, pos0, heads, &mut want).unwrap();
        let mut out = gpu.empty(q.len());
        Backend::causal_attention(gpu, &gpu.upload(&q), &gc, 1, pos0, heads, &mut out).unwrap();
        let err = worst(&gpu.download(&out).unwrap(), &want);
        assert!(err <= 1e-5, "attention at {pos0} x {rows}: {err}");
    }
    // Past 65,535 outputs (a vocabulary as Llama 3's): one launch still covers the row.
    for (dtype, n, k) in [
        (DType::Q4_1, 1536, 576),
        (DType::Q8_0, 576, 1536),
        (DType::Q8_0, 65_600, 32),
    ] {
        let data = match dtype {
            DType::Q8_0 => quant::quantize_q8_0_vec(&rng.vec(n * k, 0.5)).unwrap(),
            _ => (0..n * k / 32)
                .flat_map(|_| {
                    let mut b = half::f16::from_f32(rng.f32() * 0.02).to_le_bytes().to_vec();
                    b.extend(half::f16::from_f32(rng.f32() * 0.1).to_le_bytes());
                    b.extend((0..16).map(|_| rng.next() as u8));
                    b
                })
                .collect(),
        };
        let rows: &[usize] = if n > 65_535 { &[1] } else { &[1, 40] };
        blocks::f32_products_match(gpu, &cpu, (dtype, &data, n, k), rows, &mut rng);
    }
}

/// Instantiates the suite for one runtime; `open` gives the backend or the reason there is none.
/// Whether a failure to open is one the environment says cannot be: a CUDA device expected.
#[allow(dead_code)]
fn expected(e: &edgecut_backends::DeviceError) -> bool {
    std::env::var_os("EDGECUT_EXPECT_CUDA").is_some()
        && matches!(
            e,
            edgecut_backends::DeviceError::Unavailable {
                device: edgecut_backends::DeviceKind::Cuda,
                ..
            }
        )
}

macro_rules! suite {
    ($name:ident, $open:expr) => {
        mod $name {
            use super::*;

            fn gpu() -> Option<GpuBackend> {
                let open: fn() -> Result<GpuBackend, edgecut_backends::DeviceError> = $open;
                match open() {
                    Ok(g) => {
                        println!("running on {g}");
                        Some(g)
                    }
                    // Where a device is expected (EDGECUT_EXPECT_CUDA, set by
                    // scripts/gpu-check.sh on a GPU machine), no silent pass.
                    Err(e) if expected(&e) => {
                        panic!("EDGECUT_EXPECT_CUDA is set, yet the device does not open: {e}")
                    }
                    Err(e) => {
                        println!("no device: {e}");
                        None
                    }
                }
            }

            #[test]
            fn linear() {
                if let Some(g) = gpu() {
                    linear_matches_the_scalar_reference(&g);
                    linear_refuses_wrong_shapes(&g);
                }
            }

            #[test]
            fn layer_norm() {
                if let Some(g) = gpu() {
                    layer_norm_matches_the_scalar_reference(&g);
                }
            }

            #[test]
            fn gelu() {
                if let Some(g) = gpu() {
                    gelu_matches_the_scalar_reference(&g);
                }
            }

            #[test]
            fn decoder_ops_and_gather() {
                if let Some(g) = gpu() {
                    decoder_ops_match_the_scalar_reference(&g);
                }
            }

            #[test]
            fn kv_cache_and_decoder_step() {
                if let Some(g) = gpu() {
                    kv_cache_rounds_as_the_cpu(&g);
                    decoder_step_matches_the_cpu(&g);
                    blocks::block_types_match_the_cpu(&g);
                }
            }

            #[test]
            fn attention() {
                if let Some(g) = gpu() {
                    attention_matches_the_scalar_reference(&g);
                }
            }
        }
    };
}

// wgpu: an adapter is required (lavapipe counts), so a CI machine without one fails here
// with the install hint rather than passing on nothing.
#[cfg(feature = "wgpu")]
suite!(wgpu, || Ok(
    GpuBackend::open(GpuKind::Wgpu, true).unwrap_or_else(|e| panic!("{e}"))
));

// CUDA: runs where a driver is present; elsewhere the open error is checked below.
#[cfg(feature = "cuda")]
suite!(cuda, || GpuBackend::open(GpuKind::Cuda, false));

#[cfg(feature = "cuda")]
#[test]
fn cuda_without_a_driver_is_a_clear_error() {
    let present = std::path::Path::new("/proc/driver/nvidia").exists();
    match GpuBackend::open(GpuKind::Cuda, false) {
        Ok(g) => assert!(present || g.kind() == GpuKind::Cuda),
        Err(e) if expected(&e) => {
            panic!("EDGECUT_EXPECT_CUDA is set, yet CUDA does not open: {e}")
        }
        Err(e) => {
            println!("CUDA: {e}");
            // A typed error naming the device; without a driver, one that says CUDA is missing.
            match &e {
                edgecut_backends::DeviceError::Unavailable { device, reason } => {
                    assert_eq!(*device, edgecut_backends::DeviceKind::Cuda);
                    if !present {
                        assert!(reason.contains("CUDA"), "the error names CUDA: {e}");
                    }
                }
                other => panic!("expected Unavailable, got {other:?}"),
            }
        }
    }
}
