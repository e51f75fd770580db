//! The decoder ops (f32-activation matmul over the stored blocks of every type, RMSNorm, SwiGLU,
//! rotary embeddings, causal grouped-query attention over a KV cache) against naive f64
//! references, with every kernel set and several thread counts. Tolerances are stated at each
//! check.

use edgecut_backends::cpu::{kernels, CausalAttention, CpuBackend, Linear, WeightData};
use edgecut_backends::ops::{ActQuant, RopeStyle};
use edgecut_backends::{quant, DType};

mod common;

use common::{random_blocks, Rng};

#[test]
fn linear_over_stored_blocks_matches_f64_of_the_decoded_weights() {
    let mut rng = Rng(5);
    for dtype in edgecut_backends::dtype::ALL_DTYPES {
        if !dtype.is_quantized() {
            continue;
        }
        // Row lengths in whole blocks of 32, or of 256 for the super-block types.
        let unit = dtype.block_len() / quant::QK;
        // Above 16 rows (a prompt) AVX-512 VNNI takes the int16 GEMM: panels of 32 weight
        // rows with a short last one, tiles of 4 activation rows with a short last one.
        for (m, n, blocks) in [
            (1, 1, 1),
            (1, 7, 18),
            (2, 33, 2),
            (3, 129, 3),
            (17, 13, 5),
            (23, 70, 3),
            (40, 32, 2),
        ] {
            let k = blocks * unit * quant::QK;
            let w = random_blocks(&mut rng, dtype, n * k);
            let mut wf = vec![0f32; n * k];
            quant::dequantize(dtype, &w, &mut wf).unwrap();
            let x = rng.vec(m * k, 3.0);
            let bias = rng.vec(n, 1.0);
            let want: Vec<f64> = (0..m * n)
                .map(|o| {
                    let (i, j) = (o / n, o % n);
                    (0..k)
                        .map(|t| x[i * k + t] as f64 * wf[j * k + t] as f64)
                        .sum::<f64>()
                        + bias[j] as f64
                })
                .collect();
            let mag: Vec<f64> = (0..m * n)
                .map(|o| {
                    let (i, j) = (o / n, o % n);
                    (0..k)
                        .map(|t| (x[i * k + t] as f64 * wf[j * k + t] as f64).abs())
                        .sum::<f64>()
                })
                .collect();
            for ks in kernels::available() {
                for threads in [1, 2, 3] {
                    let cpu = CpuBackend::with_kernels(ks, threads).split_everything();
                    let mut out = vec![0f32; m * n];
                    let lin = Linear {
                        w: WeightData::Blocks(dtype, &w),
                        bias: Some(&bias),
                        n,
                        k,
                        act: ActQuant::F32,
                    };
                    cpu.linear(&x, m, &lin, &mut out).unwrap();
                    // f32 arithmetic, except that the int16 kernels (up to 16 rows on AVX2 and
                    // AVX-512 VNNI, any number on AVX-512 VNNI) round the activations to int16
                    // per block (relative error 2^-16 of the block's largest |x|, 3 here; 2^-15
                    // for Q6_K in the GEMM): with |w| < 0.6 the error stays far below
                    // 2e-5 per weight, summed over k; for larger weights (K-quant sub-block
                    // scales), 1e-4 of the sum of |x w| bounds both that and f32 summation.
                    for ((g, w), mag) in out.iter().zip(&want).zip(&mag) {
                        assert!(
                            (*g as f64 - w).abs() <= (1e-5 * k as f64 * 2.0).max(1e-4 * mag),
                            "{dtype} {} t={threads} {m}x{n}x{k}: {g} vs {w}",
                            ks.name
                        );
                    }
                    // Q8_0 bytes given as Q8_0 weights with f32 activations take the same path.
                    if dtype == DType::Q8_0 {
                        let lin = Linear {
                            w: WeightData::Q8_0(&w),
                            ..lin
                        };
                        let mut again = vec![0f32; m * n];
                        cpu.linear(&x, m, &lin, &mut again).unwrap();
                        assert_eq!(again, out);
                    }
                }
            }
            // Wrong sizes are errors, not panics.
            let cpu = CpuBackend::with_kernels(kernels::SCALAR, 1);
            let lin = Linear {
                w: WeightData::Blocks(dtype, &w[1..]),
                bias: None,
                n,
                k,
                act: ActQuant::F32,
            };
            assert!(cpu.linear(&x, m, &lin, &mut vec![0f32; m * n]).is_err());
        }
    }
}

/// Continuous batching: sequences of 1, 2, 5, 17 and 40 rows in one call (tokens beside prompt
/// chunks), each sequence's rows equal to a call with them alone, bit for bit, with every kernel
/// set, type and thread count: the token and prompt kernels round differently, and a
/// conversation must not change its text for being stepped with others.
#[test]
fn rows_of_several_sequences_get_the_bits_they_get_alone() {
    let mut rng = Rng(9);
    let seqs = [1usize, 17, 2, 40, 1, 5];
    let m: usize = seqs.iter().sum();
    for dtype in edgecut_backends::dtype::ALL_DTYPES {
        if !dtype.is_quantized() {
            continue;
        }
        let k = 2 * dtype.block_len().max(64);
        let n = 40;
        let w = random_blocks(&mut rng, dtype, n * k);
        let x = rng.vec(m * k, 3.0);
        let lin = Linear {
            w: WeightData::Blocks(dtype, &w),
            bias: None,
            n,
            k,
            act: ActQuant::F32,
        };
        for ks in kernels::available() {
            for threads in [1, 2] {
                let cpu = CpuBackend::with_kernels(ks, threads).split_everything();
                let mut together = vec![0f32; m * n];
                cpu.linear_seqs(&x, &seqs, &lin, &mut together).unwrap();
                let mut row = 0;
                for &r in &seqs {
                    let mut alone = vec![0f32; r * n];
                    cpu.linear(&x[row * k..(row + r) * k], r, &lin, &mut alone)
                        .unwrap();
                    assert!(
                        alone == together[row * n..(row + r) * n],
                        "{dtype} {} t={threads}: the sequence of {r} rows at row {row}",
                        ks.name
                    );
                    row += r;
                }
            }
        }
    }
}

/// Several matrices over the same rows in one call (a block's q, k and v): each output equals
/// `linear_seqs` with that matrix alone, bit for bit, with every kernel set and thread count,
/// for prompts (the int16 GEMM's shared pass where the CPU has it), tokens and mixed
/// sequences, types of both activation ranges (Q6_K's is narrower) and a bias; a count
/// mismatch is an error.
#[test]
fn several_matrices_over_the_same_rows_get_the_bits_each_gets_alone() {
    let mut rng = Rng(21);
    let k = 512;
    let types = [DType::Q5_0, DType::Q8_0, DType::Q6_K, DType::Q4_K];
    let ns = [96, 40, 33, 64];
    let ws: Vec<Vec<u8>> = types
        .iter()
        .zip(ns)
        .map(|(&t, n)| random_blocks(&mut rng, t, n * k))
        .collect();
    let bias = rng.vec(96, 1.0);
    let lins: Vec<Linear> = types
        .iter()
        .zip(ns)
        .zip(&ws)
        .enumerate()
        .map(|(i, ((&t, n), w))| Linear {
            w: WeightData::Blocks(t, w),
            bias: (i == 0).then(|| &bias[..n]),
            n,
            k,
            act: ActQuant::F32,
        })
        .collect();
    for seqs in [vec![40usize], vec![1], vec![2, 17, 1, 9]] {
        let m: usize = seqs.iter().sum();
        let x = rng.vec(m * k, 3.0);
        for ks in kernels::available() {
            for threads in [1, 2, 3] {
                let cpu = CpuBackend::with_kernels(ks, threads).split_everything();
                let mut outs: Vec<Vec<f32>> = ns.iter().map(|n| vec![f32::NAN; m * n]).collect();
                let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|o| &mut o[..]).collect();
                cpu.linear_seqs_each(&x, &seqs, &lins, &mut refs).unwrap();
                for ((lin, got), t) in lins.iter().zip(&outs).zip(types) {
                    let mut alone = vec![0f32; m * lin.n];
                    cpu.linear_seqs(&x, &seqs, lin, &mut alone).unwrap();
                    assert!(alone == *got, "{t} {} t={threads} seqs {seqs:?}", ks.name);
                }
                let mut short: Vec<&mut [f32]> =
                    outs.iter_mut().take(2).map(|o| &mut o[..]).collect();
                assert!(cpu.linear_seqs_each(&x, &seqs, &lins, &mut short).is_err());
            }
        }
    }
}

#[test]
fn rms_norm_and_swiglu_match_f64() {
    let mut rng = Rng(9);
    let cpu = CpuBackend::with_kernels(kernels::SCALAR, 1);
    let (rows, dim) = (7, 100);
    let x = rng.vec(rows * dim, 4.0);
    let g = rng.vec(dim, 1.5);
    let mut out = vec![0f32; rows * dim];
    // Every kernel set, rows split across 1 to 3 threads (7 rows: uneven shares), each split
    // the one-thread result bit for bit (the norm is row by row).
    for ks in kernels::available() {
        let mut one = Vec::new();
        for threads in [1, 2, 3] {
            let cpu = CpuBackend::with_kernels(ks, threads).split_everything();
            out.fill(f32::NAN);
            cpu.rms_norm(&x, &mut out, &g, 1e-5).unwrap();
            if threads == 1 {
                one = out.clone();
            }
            assert!(
                one.iter()
                    .zip(&out)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{} t={threads}: not the one-thread bits",
                ks.name
            );
            for r in 0..rows {
                let row = &x[r * dim..(r + 1) * dim];
                let ms = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / dim as f64;
                for c in 0..dim {
                    let want = row[c] as f64 / (ms + 1e-5).sqrt() * g[c] as f64;
                    let got = out[r * dim + c] as f64;
                    assert!(
                        (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                        "{} t={threads} row {r}: {got} vs {want}",
                        ks.name
                    );
                }
            }
        }
    }
    assert!(cpu.rms_norm(&x[1..], &mut out[1..], &g, 1e-5).is_err());
    let mut gate = rng.vec(1000, 12.0);
    let up = rng.vec(1000, 2.0);
    let want: Vec<f64> = gate
        .iter()
        .zip(&up)
        .map(|(&a, &b)| a as f64 / (1.0 + (-a as f64).exp()) * b as f64)
        .collect();
    cpu.silu_mul(&mut gate, &up).unwrap();
    for (g, w) in gate.iter().zip(&want) {
        // exp_approx's relative error is below 3e-7.
        assert!((*g as f64 - w).abs() < 2e-6 * (1.0 + w.abs()), "{g} vs {w}");
    }
}

#[test]
fn rope_rotates_pairs_by_position_in_both_layouts() {
    let mut rng = Rng(3);
    let cpu = CpuBackend::with_kernels(kernels::SCALAR, 1);
    let (heads, hd, rows, pos0) = (3, 8, 7, 5);
    let inv: Vec<f32> = (0..hd / 2)
        .map(|i| 10000f32.powf(-2.0 * i as f32 / hd as f32))
        .collect();
    // Every kernel set, rows split across 1 to 3 threads (7 rows: uneven shares).
    let sets: Vec<_> = kernels::available()
        .into_iter()
        .flat_map(|ks| [1, 2, 3].map(|t| (ks, t)))
        .collect();
    for style in [RopeStyle::Interleaved, RopeStyle::Halves] {
        for &(ks, threads) in &sets {
            let cpu = CpuBackend::with_kernels(ks, threads).split_everything();
            let x = rng.vec(rows * heads * hd, 1.0);
            let mut y = x.clone();
            cpu.rope(&mut y, heads, hd, pos0, &inv, style).unwrap();
            // A split gives the one-thread bits (each row rotated by its own table entries).
            let mut alone = x.clone();
            CpuBackend::with_kernels(ks, 1)
                .rope(&mut alone, heads, hd, pos0, &inv, style)
                .unwrap();
            assert!(
                alone
                    .iter()
                    .zip(&y)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{style:?} {} t={threads}: not the one-thread bits",
                ks.name
            );
            for r in 0..rows {
                for h in 0..heads {
                    let base = (r * heads + h) * hd;
                    for (p, f) in inv.iter().enumerate() {
                        let (a, b) = match style {
                            RopeStyle::Interleaved => (2 * p, 2 * p + 1),
                            RopeStyle::Halves => (p, p + hd / 2),
                        };
                        let ang = (pos0 + r) as f64 * *f as f64;
                        let (x0, x1) = (x[base + a] as f64, x[base + b] as f64);
                        let (w0, w1) = (
                            x0 * ang.cos() - x1 * ang.sin(),
                            x0 * ang.sin() + x1 * ang.cos(),
                        );
                        let what = format!("{style:?} {} t={threads} row {r}", ks.name);
                        assert!((y[base + a] as f64 - w0).abs() < 1e-5, "{what}");
                        assert!((y[base + b] as f64 - w1).abs() < 1e-5, "{what}");
                    }
                }
            }
        }
    }
    assert!(cpu
        .rope(&mut [0f32; 7], heads, hd, 0, &inv, RopeStyle::Halves)
        .is_err());
}

#[test]
fn causal_attention_over_a_cache_matches_naive_gqa() {
    let mut rng = Rng(21);
    let (heads, kvh, hd, cap) = (6, 2, 16, 40);
    // The caches are f16; the reference reads the same f16 values.
    let k: Vec<half::f16> = rng
        .vec(kvh * cap * hd, 1.5)
        .into_iter()
        .map(half::f16::from_f32)
        .collect();
    let v: Vec<half::f16> = rng
        .vec(kvh * cap * hd, 1.0)
        .into_iter()
        .map(half::f16::from_f32)
        .collect();
    // Prefill of 12 rows from position 0, and 3 rows appended at position 20 (decode-like).
    for (pos0, rows) in [(0usize, 12usize), (20, 3), (37, 1)] {
        let q = rng.vec(rows * heads * hd, 1.5);
        let a = CausalAttention {
            q: &q,
            k: &k,
            v: &v,
            pos0,
            capacity: cap,
            window: None,
            heads,
            kv_heads: kvh,
            head_dim: hd,
        };
        for (ks, threads) in kernels::available()
            .into_iter()
            .flat_map(|ks| [1, 2, 3].map(|t| (ks, t)))
        {
            let cpu = CpuBackend::with_kernels(ks, threads).split_everything();
            let mut out = vec![0f32; q.len()];
            cpu.causal_attention(&a, &mut out).unwrap();
            for i in 0..rows {
                for h in 0..heads {
                    let g = h / (heads / kvh);
                    let qi = &q[(i * heads + h) * hd..][..hd];
                    let len = pos0 + i + 1;
                    let s: Vec<f64> = (0..len)
                        .map(|j| {
                            // Keys are transposed: dimension d of position j at (g hd + d) cap + j.
                            (0..hd)
                                .map(|d| qi[d] as f64 * k[(g * hd + d) * cap + j].to_f64())
                                .sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for d in 0..hd {
                        let want: f64 = (0..len)
                            .map(|j| e[j] / z * v[(g * cap + j) * hd + d].to_f64())
                            .sum();
                        let got = out[(i * heads + h) * hd + d] as f64;
                        assert!(
                            (got - want).abs() < 1e-5,
                            "{} pos0 {pos0} row {i} head {h} t={threads}: {got} vs {want}",
                            ks.name
                        );
                    }
                }
            }
        }
    }
    // Rows past the cache's capacity are an error.
    let q = vec![0f32; 2 * heads * hd];
    let a = CausalAttention {
        q: &q,
        k: &k,
        v: &v,
        pos0: cap - 1,
        capacity: cap,
        window: None,
        heads,
        kv_heads: kvh,
        head_dim: hd,
    };
    let cpu = CpuBackend::with_kernels(kernels::SCALAR, 1);
    assert!(cpu.causal_attention(&a, &mut vec![0f32; q.len()]).is_err());
}

#[test]
fn attention_of_several_conversations_in_one_region_equals_each_alone() {
    let mut rng = Rng(77);
    let (heads, kvh, hd, cap) = (6, 2, 16, 400);
    let cache = |rng: &mut Rng| -> (Vec<half::f16>, Vec<half::f16>) {
        let mut f = |s| {
            rng.vec(kvh * cap * hd, s)
                .into_iter()
                .map(half::f16::from_f32)
                .collect()
        };
        (f(1.5), f(1.0))
    };
    // Eight decoding conversations at long positions: together past the work one thread does
    // alone, each alone below it, so the region is parallel and the single calls are not.
    let convs: Vec<_> = (0..8)
        .map(|i| {
            let (k, v) = cache(&mut rng);
            (k, v, 200 + 17 * i, rng.vec(heads * hd, 1.5))
        })
        .collect();
    let all: Vec<CausalAttention> = convs
        .iter()
        .map(|(k, v, pos0, q)| CausalAttention {
            q,
            k,
            v,
            pos0: *pos0,
            capacity: cap,
            window: None,
            heads,
            kv_heads: kvh,
            head_dim: hd,
        })
        .collect();
    for ks in kernels::available() {
        for threads in [1, 2, 3] {
            let cpu = CpuBackend::with_kernels(ks, threads);
            let mut outs = vec![vec![0f32; heads * hd]; convs.len()];
            let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|o| &mut o[..]).collect();
            cpu.causal_attention_many(&all, &mut refs).unwrap();
            for (i, a) in all.iter().enumerate() {
                let mut alone = vec![0f32; heads * hd];
                cpu.causal_attention(a, &mut alone).unwrap();
                assert_eq!(outs[i], alone, "{} t={threads} conversation {i}", ks.name);
                assert!(alone.iter().all(|v| v.is_finite()));
            }
            // A conversation that does not fit its cache fails the whole call, before any runs.
            let mut bad = all.clone();
            bad[5].pos0 = cap;
            let mut outs = vec![vec![f32::NAN; heads * hd]; convs.len()];
            let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|o| &mut o[..]).collect();
            assert!(cpu.causal_attention_many(&bad, &mut refs).is_err());
            assert!(outs.iter().flatten().all(|v| v.is_nan()), "nothing written");
        }
    }
}
