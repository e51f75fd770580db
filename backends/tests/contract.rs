//! One conformance suite for the backend contract ([`Backend`]), instantiated per backend: every
//! CPU kernel set at 1, 2 and 3 threads, wgpu (lavapipe where there is no GPU) and CUDA where a
//! driver is present. Each op the backend [`supports`](Backend::supports) is checked against an
//! f64 reference with a stated tolerance; each op it does not support must answer
//! `OpError::Unsupported`, not a wrong result. The fused encoder blocks are checked against the
//! contract's op-by-op default.

use edgecut_backends::cpu::{kernels, AttentionPrecision, CpuBackend};
use edgecut_backends::encoder::{self, EncoderBlock, EncoderDims, LayerNorm, Qkv};
use edgecut_backends::ops::{ActQuant, OpError, RopeStyle};
use edgecut_backends::{quant, Act, Backend, DType, KvShape, KvType, Op, WeightSource};

mod common;
#[path = "contract/rotary.rs"]
mod rotary;
#[path = "contract/window.rs"]
mod window;

use common::Rng;

fn up<B: Backend>(b: &B, v: &[f32]) -> B::Buffer {
    b.upload(v.to_vec())
}

fn down<B: Backend>(b: &B, x: B::Buffer) -> Vec<f32> {
    b.download(x).unwrap()
}

fn close(what: &str, got: &[f32], want: &[f64], tol: impl Fn(usize) -> f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (*g as f64 - w).abs();
        assert!(
            d <= tol(i),
            "{what}[{i}]: {g} vs {w} (off by {d}, tolerance {})",
            tol(i)
        );
    }
}

/// Causal grouped-query attention in f64 of query rows `q` (`[rows, heads * hd]`) over keys and
/// values `k`, `v` (`[positions, kv_heads * hd]`, read as the f16 the cache stores), row `r`
/// seeing the positions `seen(r)`: the reference of every backend's `causal_attention`.
#[allow(clippy::too_many_arguments)]
fn attention_f64(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    heads: usize,
    kv_heads: usize,
    hd: usize,
    dtype: KvType,
    seen: impl Fn(usize) -> std::ops::Range<usize>,
) -> Vec<f64> {
    let f16 = |x: f32| match dtype {
        KvType::F16 => half::f16::from_f32(x).to_f64(),
        KvType::F32 => x as f64,
    };
    let kvw = kv_heads * hd;
    let mut want = Vec::with_capacity(q.len());
    for r in 0..q.len() / (heads * hd) {
        for h in 0..heads {
            let g = h / (heads / kv_heads);
            let qv = &q[(r * heads + h) * hd..][..hd];
            let s: Vec<f64> = seen(r)
                .map(|j| {
                    (0..hd)
                        .map(|d| qv[d] as f64 * f16(k[j * kvw + g * hd + d]))
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let m = s.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for d in 0..hd {
                want.push(
                    seen(r)
                        .zip(&e)
                        .map(|(j, e)| e / z * f16(v[j * kvw + g * hd + d]))
                        .sum(),
                );
            }
        }
    }
    want
}

/// A Q8_0 matrix `[n, k]` with a bias, prepared on `b`, and its dequantized f64 values.
fn matrix<B: Backend>(
    b: &B,
    rng: &mut Rng,
    n: usize,
    k: usize,
    act: ActQuant,
) -> (B::Matrix, Vec<f64>, Vec<f32>) {
    let q = quant::quantize_q8_0_vec(&rng.vec(n * k, 0.5)).unwrap();
    let mut w = vec![0f32; n * k];
    quant::dequantize(DType::Q8_0, &q, &mut w).unwrap();
    let bias = rng.vec(n, 0.1);
    let m = b
        .prepare(WeightSource {
            dtype: DType::Q8_0,
            data: &q,
            storage: None,
            n,
            k,
            bias: Some(&bias),
            act,
        })
        .unwrap();
    (m, w.iter().map(|&v| v as f64).collect(), bias)
}

fn linear<B: Backend>(b: &B, rng: &mut Rng) {
    let (m, n, k) = (5, 40, 64);
    for act in [ActQuant::Int8, ActQuant::Int8Outliers] {
        let (w, wf, bias) = matrix(b, rng, n, k, act);
        let mut x = rng.vec(m * k, 1.0);
        x[3] = 9.0; // an outlier column
        let xb = up(b, &x);
        let mut out = b.buffer(m * n);
        b.linear(&xb, m, &w, &mut out).unwrap();
        let mut want = vec![0f64; m * n];
        let mut mag = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let row = &x[i * k..(i + 1) * k];
                want[i * n + j] = bias[j] as f64
                    + row
                        .iter()
                        .zip(&wf[j * k..])
                        .map(|(a, w)| *a as f64 * w)
                        .sum::<f64>();
                mag[i * n + j] = row
                    .iter()
                    .zip(&wf[j * k..])
                    .map(|(a, w)| (*a as f64 * w).abs())
                    .sum();
            }
        }
        // Activations quantized to int8 per 32: at most half a step (max|x| / 254) per value.
        close(&format!("linear {act:?}"), &down(b, out), &want, |i| {
            0.02 * mag[i] + 1e-4
        });
        // A wrong input size is a shape error.
        let mut out = b.buffer(m * n);
        assert!(matches!(
            b.linear(&up(b, &x[..k * 2]), m, &w, &mut out),
            Err(OpError::Shape(_))
        ));
    }
    linear_f32(b, rng);
}

/// `n x k` random weights stored as `dtype` (4-bit blocks: random nibbles, scales and minimums
/// of either sign), and their values.
fn stored(rng: &mut Rng, dtype: DType, n: usize, k: usize) -> (Vec<u8>, Vec<f32>) {
    let blocks = n * k / quant::QK;
    let scale = |rng: &mut Rng| half::f16::from_f32(rng.f32() * 0.05).to_le_bytes();
    let data = match dtype {
        DType::Q8_0 => quant::quantize_q8_0_vec(&rng.vec(n * k, 0.5)).unwrap(),
        DType::Q4_0 | DType::Q4_1 => {
            let mut d = Vec::new();
            for _ in 0..blocks {
                d.extend(scale(rng));
                if dtype == DType::Q4_1 {
                    d.extend(scale(rng));
                }
                d.extend((0..16).map(|_| rng.next() as u8));
            }
            d
        }
        DType::F16 => quant::f32_to_f16_bytes(&rng.vec(n * k, 0.5)),
        DType::F32 => quant::f32_to_bytes(&rng.vec(n * k, 0.5)),
        DType::BF16 => rng
            .vec(n * k, 0.5)
            .iter()
            .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
            .collect(),
        // Every packed bit random, the f16 scales (and minimums) small and of either sign.
        DType::Q5_0
        | DType::Q5_1
        | DType::Q2_K
        | DType::Q3_K
        | DType::Q4_K
        | DType::Q5_K
        | DType::Q6_K
        | DType::IQ4_NL
        | DType::IQ4_XS => {
            let scales: &[usize] = match dtype {
                DType::Q5_1 | DType::Q4_K | DType::Q5_K => &[0, 2],
                DType::Q2_K => &[80, 82],
                DType::Q3_K => &[108],
                DType::Q6_K => &[208],
                _ => &[0],
            };
            let bb = dtype.block_bytes();
            let mut d: Vec<u8> = (0..n * k / dtype.block_len() * bb)
                .map(|_| rng.next() as u8)
                .collect();
            for b in d.chunks_exact_mut(bb) {
                for &at in scales {
                    b[at..at + 2].copy_from_slice(&scale(rng));
                }
            }
            d
        }
    };
    let mut w = vec![0f32; n * k];
    quant::dequantize(dtype, &data, &mut w).unwrap();
    (data, w)
}

/// f32 activations against weights as stored: the products of the stored values, for one row
/// (decode) and for more (prefill), or refused as a whole.
fn linear_f32<B: Backend>(b: &B, rng: &mut Rng) {
    for dtype in edgecut_backends::dtype::ALL_DTYPES {
        // Rows of whole super-blocks for the 256-value types.
        let (n, k) = (40, if dtype.block_len() == 256 { 512 } else { 96 });
        let (data, wf) = stored(rng, dtype, n, k);
        let bias = rng.vec(n, 0.1);
        let src = WeightSource {
            dtype,
            data: &data,
            storage: None,
            n,
            k,
            bias: Some(&bias),
            act: ActQuant::F32,
        };
        let w = match b.prepare(src) {
            Ok(w) => w,
            Err(e) => {
                assert!(!b.supports(Op::Linear(ActQuant::F32, dtype)));
                assert!(matches!(e, OpError::Unsupported { .. }), "{e}");
                continue;
            }
        };
        assert!(b.supports(Op::Linear(ActQuant::F32, dtype)));
        for m in [1, 3, 21] {
            let x = rng.vec(m * k, 1.0);
            let mut out = b.buffer(m * n);
            b.linear(&up(b, &x), m, &w, &mut out).unwrap();
            let (mut want, mut mag) = (Vec::new(), Vec::new());
            for i in 0..m {
                for j in 0..n {
                    let p = (0..k).map(|t| x[i * k + t] as f64 * wf[j * k + t] as f64);
                    want.push(bias[j] as f64 + p.clone().sum::<f64>());
                    mag.push(p.map(f64::abs).sum::<f64>());
                }
            }
            // The CPU's few-row path rounds activations to int16 (within 1e-4 of the row's
            // largest, relative); f32 paths differ by summation order.
            close(
                &format!("linear F32 {dtype} x {m}"),
                &down(b, out),
                &want,
                |i| 2e-4 * mag[i] + 1e-5,
            );
        }
    }
}

fn norms_and_activations<B: Backend>(b: &B, rng: &mut Rng) {
    let (rows, dim) = (3, 48);
    let x = rng.vec(rows * dim, 2.0);
    let d = rng.vec(rows * dim, 0.5);
    let (g, bt) = (rng.vec(dim, 1.0), rng.vec(dim, 0.2));
    let (gv, bv) = (b.vector(&g), b.vector(&bt));
    let mut xb = up(b, &x);
    b.layer_norm(&mut xb, Some(&up(b, &d)), dim, &gv, &bv, 1e-5)
        .unwrap();
    let mut want = Vec::new();
    for r in 0..rows {
        let v: Vec<f64> = (0..dim)
            .map(|c| (x[r * dim + c] + d[r * dim + c]) as f64)
            .collect();
        let mean = v.iter().sum::<f64>() / dim as f64;
        let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / dim as f64;
        for c in 0..dim {
            want.push((v[c] - mean) / (var + 1e-5).sqrt() * g[c] as f64 + bt[c] as f64);
        }
    }
    close("layer norm", &down(b, xb), &want, |_| 1e-4);
    for act in [Act::Gelu, Act::Tanh, Act::Relu, Act::QuickGelu] {
        let mut xb = up(b, &x);
        b.activate(&mut xb, act).unwrap();
        let want: Vec<f64> = x
            .iter()
            .map(|&v| {
                let v = v as f64;
                match act {
                    Act::Gelu => 0.5 * v * (1.0 + erf64(v / std::f64::consts::SQRT_2)),
                    Act::Tanh => v.tanh(),
                    Act::QuickGelu => v / (1.0 + (-1.702 * v).exp()),
                    _ => v.max(0.0),
                }
            })
            .collect();
        close(&format!("{act:?}"), &down(b, xb), &want, |_| 1e-5);
    }
    // RMS norm and SwiGLU.
    let mut out = b.buffer(rows * dim);
    b.rms_norm(&up(b, &x), &mut out, dim, &gv, 1e-6).unwrap();
    let want: Vec<f64> = (0..rows * dim)
        .map(|i| {
            let r = i / dim;
            let row = &x[r * dim..(r + 1) * dim];
            let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / dim as f64;
            x[i] as f64 / (ms + 1e-6).sqrt() * g[i % dim] as f64
        })
        .collect();
    close("rms norm", &down(b, out), &want, |_| 1e-4);
    let mut gate = up(b, &x);
    b.silu_mul(&mut gate, &up(b, &d)).unwrap();
    let want: Vec<f64> = x
        .iter()
        .zip(&d)
        .map(|(&a, &u)| a as f64 / (1.0 + (-a as f64).exp()) * u as f64)
        .collect();
    close("silu mul", &down(b, gate), &want, |_| 1e-4);
    let mut gate = up(b, &x);
    b.gelu_tanh_mul(&mut gate, &up(b, &d)).unwrap();
    let want: Vec<f64> = x
        .iter()
        .zip(&d)
        .map(|(&a, &u)| {
            let a = a as f64;
            let y = (2.0 / std::f64::consts::PI).sqrt() * (a + 0.044715 * a * a * a);
            0.5 * a * (1.0 + y.tanh()) * u as f64
        })
        .collect();
    close("gelu tanh mul", &down(b, gate), &want, |_| 1e-4);
    // add: supported or refused.
    let mut a = up(b, &x);
    match b.add(&mut a, &up(b, &d)) {
        Ok(()) => {
            let want: Vec<f64> = x.iter().zip(&d).map(|(a, c)| (*a + *c) as f64).collect();
            close("add", &down(b, a), &want, |_| 0.0);
        }
        Err(e) => assert!(!b.supports(Op::Add) && matches!(e, OpError::Unsupported { .. })),
    }
}

fn erf64(x: f64) -> f64 {
    // Abramowitz-Stegun 7.1.26 is too coarse for 1e-5; integrate instead (Simpson, fine grid).
    let n = 2000;
    let h = x / n as f64;
    let f = |t: f64| (-t * t).exp();
    let mut s = f(0.0) + f(x);
    for i in 1..n {
        s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
}

fn rope_and_cache<B: Backend>(b: &B, rng: &mut Rng) {
    let (heads, kv_heads, hd, rows, pos0) = (4, 2, 16, 3, 2);
    let inv: Vec<f32> = (0..hd / 2)
        .map(|i| 1.0 / 10_000f32.powf(2.0 * i as f32 / hd as f32))
        .collect();
    let q = rng.vec(rows * heads * hd, 1.0);
    let mut qb = up(b, &q);
    b.rope(
        &mut qb,
        heads,
        hd,
        pos0,
        &b.vector(&inv),
        RopeStyle::Interleaved,
    )
    .unwrap();
    let mut want = Vec::new();
    for r in 0..rows {
        for h in 0..heads {
            let v = &q[(r * heads + h) * hd..][..hd];
            for p in 0..hd / 2 {
                let a = (pos0 + r) as f64 * inv[p] as f64;
                let (x0, x1) = (v[2 * p] as f64, v[2 * p + 1] as f64);
                want.push(x0 * a.cos() - x1 * a.sin());
                want.push(x0 * a.sin() + x1 * a.cos());
            }
        }
    }
    let roped = down(b, qb);
    close("rope", &roped, &want, |_| 1e-4);
    let shape = KvShape {
        layers: 1,
        kv_heads,
        head_dim: hd,
        capacity: 8,
        window: None,
        dtype: edgecut_backends::kv_shape::KvType::F16,
    };
    let mut cache = match b.kv_cache(shape) {
        Ok(c) => c,
        Err(e) => {
            assert!(!b.supports(Op::CausalAttention));
            assert!(matches!(e, OpError::Unsupported { .. }), "{e}");
            return;
        }
    };
    // Positions 0..pos0 + rows filled, then the last `rows` queries attend causally.
    let t = pos0 + rows;
    let k = rng.vec(t * kv_heads * hd, 1.0);
    let v = rng.vec(t * kv_heads * hd, 1.0);
    let kvw = kv_heads * hd;
    b.kv_append(
        &mut cache,
        0,
        0,
        &up(b, &k[..pos0 * kvw]),
        &up(b, &v[..pos0 * kvw]),
    )
    .unwrap();
    b.kv_append(
        &mut cache,
        0,
        pos0,
        &up(b, &k[pos0 * kvw..]),
        &up(b, &v[pos0 * kvw..]),
    )
    .unwrap();
    let mut out = b.buffer(rows * heads * hd);
    b.causal_attention(&up(b, &roped), &cache, 0, pos0, heads, &mut out)
        .unwrap();
    let want = attention_f64(&roped, &k, &v, heads, kv_heads, hd, KvType::F16, |r| {
        0..pos0 + r + 1
    });
    let single = down(b, out);
    close("causal attention", &single, &want, |_| 1e-3);

    // Several conversations at once: the checked one, and a second cache with one query row
    // at position 4; each result equals its own single call.
    let mut other = b.kv_cache(shape).unwrap();
    let (k2, v2) = (rng.vec(5 * kvw, 1.0), rng.vec(5 * kvw, 1.0));
    b.kv_append(&mut other, 0, 0, &up(b, &k2), &up(b, &v2))
        .unwrap();
    let q2 = up(b, &rng.vec(heads * hd, 1.0));
    let mut alone = b.buffer(heads * hd);
    b.causal_attention(&q2, &other, 0, 4, heads, &mut alone)
        .unwrap();
    let q1 = up(b, &roped);
    let (mut o1, mut o2) = (b.buffer(rows * heads * hd), b.buffer(heads * hd));
    b.causal_attention_many(
        &[&*q1, &*q2],
        &[&cache, &other],
        0,
        &[pos0, 4],
        heads,
        &mut [&mut *o1, &mut *o2],
    )
    .unwrap();
    assert_eq!(down(b, o1), single, "attention of several: the first");
    assert_eq!(
        down(b, o2),
        down(b, alone),
        "attention of several: the second"
    );
    // Operands that name different numbers of conversations are a shape error.
    let mut o3 = b.buffer(heads * hd);
    let e = b
        .causal_attention_many(&[&*q2], &[&other, &cache], 0, &[4], heads, &mut [&mut *o3])
        .unwrap_err();
    assert!(matches!(e, OpError::Shape(_)), "{e}");
}

fn encoder<B: Backend>(b: &B, rng: &mut Rng) {
    let dims = EncoderDims {
        hidden: 64,
        heads: 2,
        ffn: 96,
        eps: 1e-12,
        act: Act::Gelu,
        causal: false,
    };
    let h = dims.hidden;
    let norm = |rng: &mut Rng| LayerNorm::<B> {
        gamma: b.vector(&rng.vec(h, 0.1).iter().map(|v| v + 1.0).collect::<Vec<_>>()),
        beta: b.vector(&rng.vec(h, 0.05)),
    };
    let blocks: Vec<EncoderBlock<B>> = (0..2)
        .map(|_| EncoderBlock {
            qkv: Qkv::Stacked(matrix(b, rng, 3 * h, h, ActQuant::Int8Outliers).0),
            o: matrix(b, rng, h, h, ActQuant::Int8).0,
            attn_norm: norm(rng),
            up: matrix(b, rng, dims.ffn, h, ActQuant::Int8Outliers).0,
            down: matrix(b, rng, h, dims.ffn, ActQuant::Int8).0,
            out_norm: norm(rng),
        })
        .collect();
    // 3 texts of 40 tokens (120 rows: past the CPU's row-task threshold), padding masked.
    let (batch, seq) = (3, 40);
    let x = rng.vec(batch * seq * h, 1.0);
    let mut mask = vec![1u8; batch * seq];
    mask[seq - 5..seq].fill(0);
    let mut fused = up(b, &x);
    b.encoder_blocks(&blocks, &dims, &mut fused, &mask, batch, seq)
        .unwrap();
    let mut plain = up(b, &x);
    encoder::blocks_op_by_op(b, &blocks, &dims, &mut plain, &mask, batch, seq).unwrap();
    let (fused, plain) = (down(b, fused), down(b, plain));
    assert!(fused.iter().all(|v| v.is_finite()));
    assert_eq!(fused, plain, "encoder blocks: fused against op by op");
    // A wrong mask is a shape error, not a panic.
    let mut y = up(b, &x);
    assert!(b
        .encoder_blocks(&blocks, &dims, &mut y, &mask[1..], batch, seq)
        .is_err());
}

/// The index of each row's largest value, the first of equal ones, at a vocabulary's width and
/// a small one; a wrong width is a shape error.
fn argmax<B: Backend>(b: &B, rng: &mut Rng) {
    for (rows, width) in [(3, 49152), (5, 7)] {
        let mut x = rng.vec(rows * width, 10.0);
        // Row 0: the largest value twice (the first wins); row 1: at the last index.
        x[1] = 50.0;
        x[width - 3] = 50.0;
        x[2 * width - 1] = 60.0;
        let want: Vec<u32> = x
            .chunks(width)
            .map(|r| {
                let m = r.iter().cloned().fold(f32::MIN, f32::max);
                r.iter().position(|&v| v == m).unwrap() as u32
            })
            .collect();
        assert_eq!((want[0], want[1]), (1, 2 * width as u32 - 1 - width as u32));
        assert_eq!(
            b.argmax(&up(b, &x), width).unwrap(),
            want,
            "argmax at width {width}"
        );
    }
    // The lowest values: infinities count, equal ones give the first.
    let inf = f32::NEG_INFINITY;
    let low = [inf, f32::MIN, inf, inf];
    assert_eq!(b.argmax(&up(b, &low), 2).unwrap(), vec![1, 0]);
    assert!(matches!(
        b.argmax(&up(b, &[1.0; 10]), 3),
        Err(OpError::Shape(_))
    ));
}

/// The suite body, for any backend.
fn suite<B: Backend>(b: &B) {
    println!("contract suite on {}", b.describe());
    let mut rng = Rng(42);
    linear(b, &mut rng);
    norms_and_activations(b, &mut rng);
    rope_and_cache(b, &mut rng);
    for dtype in [KvType::F16, KvType::F32] {
        window::sliding_window_ring(b, &mut rng, dtype);
    }
    rotary::rotary_encoder_ops(b, &mut rng);
    argmax(b, &mut rng);
    encoder(b, &mut rng);
}

#[test]
fn every_cpu_kernel_set_at_1_2_and_3_threads() {
    for ks in kernels::available() {
        for threads in [1, 2, 3] {
            let cpu = CpuBackend::with_kernels(ks, threads).with_attention(AttentionPrecision::F32);
            suite(&cpu);
            suite(&cpu.clone().split_everything());
        }
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu() {
    use edgecut_backends::gpu::{GpuBackend, GpuKind};
    // An adapter is required (lavapipe counts): no silent pass on nothing.
    let gpu = GpuBackend::open(GpuKind::Wgpu, true).unwrap_or_else(|e| panic!("{e}"));
    suite(&gpu);
    // Every matrix larger than 2 KiB split into blocks of rows, as one larger than the
    // device's largest buffer is.
    suite(&gpu.with_max_buffer_bytes(2048));
}

#[cfg(feature = "cuda")]
#[test]
fn cuda() {
    use edgecut_backends::gpu::{GpuBackend, GpuKind};
    match GpuBackend::open(GpuKind::Cuda, false) {
        Ok(g) => suite(&g),
        // Where a device is expected (scripts/gpu-check.sh on a GPU machine), no silent pass.
        Err(e) if std::env::var_os("EDGECUT_EXPECT_CUDA").is_some() => {
            panic!("EDGECUT_EXPECT_CUDA is set, yet CUDA does not open: {e}")
        }
        Err(e) => println!("no CUDA device: {e}"),
    }
}
