//! Every kernel set this CPU has, and every op, against the scalar reference or an f64
//! reference, on random shapes including ragged tails (row counts not a multiple of the thread
//! count or of any SIMD width). Tolerances are stated at each check.

use edgecut_backends::cpu::{
    erf, exp_approx, gelu_scalar, kernels, scalar, Attention, AttentionPrecision, CpuBackend,
    Linear, WeightData,
};
use edgecut_backends::ops::{embedding_rows, l2_normalize, pool, ActQuant, Pooling};
use edgecut_backends::{quant, DType};

mod common;

use common::Rng;

#[test]
fn every_simd_dot_matches_the_scalar_reference() {
    let sets = kernels::available();
    println!("kernel sets on this CPU: {sets:?}");
    let mut rng = Rng(7);
    for case in 0..400 {
        let nb = 1 + rng.below(48);
        let w = quant::quantize_q8_0_vec(&rng.vec(nb * 32, 3.0)).unwrap();
        let x = rng.vec(nb * 32, if case % 2 == 0 { 1.0 } else { 100.0 });
        let mut xq = vec![0i8; nb * 32];
        let mut xd = vec![0f32; nb];
        scalar::quantize_row(&x, &mut xq, &mut xd);
        let want = scalar::dot_q8_0(&w, &xq, &xd);
        // Four rows at once: this row and three others.
        let others: Vec<Vec<u8>> = (0..3)
            .map(|_| quant::quantize_q8_0_vec(&rng.vec(nb * 32, 3.0)).unwrap())
            .collect();
        let rows = [&others[0][..], &w[..], &others[1][..], &others[2][..]];
        let want4 = scalar::dot4_q8_0(rows, &xq, &xd);
        assert_eq!(want4[1], want);
        // A second activation row, for the sets that take two at once.
        let x2 = rng.vec(nb * 32, 10.0);
        let (mut xq2, mut xd2) = (vec![0i8; nb * 32], vec![0f32; nb]);
        scalar::quantize_row(&x2, &mut xq2, &mut xd2);
        let want4_2 = scalar::dot4_q8_0(rows, &xq2, &xd2);
        for k in &sets {
            if let Some(dot4x2) = k.dot4x2_q8_0 {
                let got = dot4x2(rows, [&xq, &xq2], [&xd, &xd2]);
                if cfg!(target_arch = "aarch64") {
                    // Block sums are exact in int32 and added in the reference's order: the
                    // same bits.
                    assert_eq!(got, [want4, want4_2], "{} dot4x2 nb={nb}", k.name);
                }
                // Each row as the set's own four-row kernel computes it: the same bits (a GEMM
                // gives a row the same values whether it ran in a pair or alone).
                let own = [
                    (k.dot4_q8_0)(rows, &xq, &xd),
                    (k.dot4_q8_0)(rows, &xq2, &xd2),
                ];
                assert_eq!(got, own, "{} dot4x2 against dot4, nb={nb}", k.name);
            }
            let got4 = (k.dot4_q8_0)(rows, &xq, &xd);
            for (g, w) in got4.iter().zip(want4) {
                let tol = 1e-5 * (1.0 + w.abs()) * nb as f32;
                assert!((g - w).abs() <= tol, "{} dot4 nb={nb}: {g} vs {w}", k.name);
            }
            let got = (k.dot_q8_0)(&w, &xq, &xd);
            if cfg!(target_arch = "aarch64") {
                // The aarch64 sets add the exact block sums in the reference's order.
                assert_eq!(got, want, "{} nb={nb}", k.name);
                assert_eq!(got4, want4, "{} dot4 nb={nb}", k.name);
            }
            // Integer products are exact; only the f32 sum of per-block terms may be reordered.
            let tol = 1e-5 * (1.0 + want.abs()) * nb as f32;
            assert!(
                (got - want).abs() <= tol,
                "{} nb={nb}: {got} vs {want}",
                k.name
            );
        }
    }
}

fn linear_reference(x: &[f32], m: usize, w: &[f32], n: usize, k: usize, bias: &[f32]) -> Vec<f64> {
    let mut out = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k)
                .map(|t| x[i * k + t] as f64 * w[j * k + t] as f64)
                .sum();
            out[i * n + j] = s + bias[j] as f64;
        }
    }
    out
}

#[test]
fn linear_q8_0_with_every_kernel_set_and_thread_count_matches_f64() {
    let mut rng = Rng(11);
    for (m, n, k) in [
        (1, 1, 32),
        (3, 5, 64),
        (7, 33, 384),
        (17, 129, 96),
        (1, 384, 1536),
    ] {
        let wf = rng.vec(n * k, 0.5);
        let wq = quant::quantize_q8_0_vec(&wf).unwrap();
        let mut wdq = vec![0f32; n * k];
        quant::dequantize_q8_0(&wq, &mut wdq).unwrap();
        let mut x = rng.vec(m * k, 2.0);
        // Two outlier channels (+-40 against inliers within +-2), as BERT's layer-norm outputs
        // have, where k allows.
        let outlier_cols: Vec<usize> = if k >= 64 {
            vec![5, k / 2 + 3]
        } else {
            Vec::new()
        };
        for i in 0..m {
            for &c in &outlier_cols {
                x[i * k + c] = if x[i * k + c] < 0.0 { -40.0 } else { 40.0 };
            }
        }
        let bias = rng.vec(n, 1.0);
        let want = linear_reference(&x, m, &wdq, n, k, &bias);
        // Activation quantization rounds each value by at most half a step (amax/254 of its
        // block); with |w| <= 0.5 and random signs the sum stays under k * 0.5 * amax / 254 / 4.
        let tol = |amax: f64| k as f64 * 0.5 * amax / 254.0 * 0.25 + 1e-4;
        let amax_all = if outlier_cols.is_empty() { 2.0 } else { 40.0 };
        for (ks, act, threads) in kernels::available()
            .into_iter()
            .flat_map(|ks| [(ks, ActQuant::Int8), (ks, ActQuant::Int8Outliers)])
            .flat_map(|(ks, act)| [1, 2, 3].map(|t| (ks, act, t)))
        {
            let cpu = CpuBackend::with_kernels(ks, threads).split_everything();
            // Q8_0 blocks as stored, and (where this kernel set has a GEMM) repacked.
            let packed = cpu.pack(&wq, n, k);
            let mut weights = vec![WeightData::Q8_0(&wq)];
            if let Some(p) = &packed {
                weights.push(WeightData::Packed(p, &wq));
            }
            for w in weights {
                let lin = Linear {
                    w,
                    bias: Some(&bias),
                    n,
                    k,
                    act,
                };
                let mut out = vec![0f32; m * n];
                cpu.linear(&x, m, &lin, &mut out).unwrap();
                // Outlier columns run in f32, so only the inliers' amax (2) sets the error.
                let tol = if act == ActQuant::Int8Outliers {
                    tol(2.0)
                } else {
                    tol(amax_all)
                };
                for (g, w) in out.iter().zip(&want) {
                    assert!(
                        (*g as f64 - w).abs() <= tol,
                        "{} {act:?} t={threads} {m}x{n}x{k}: {g} vs {w}",
                        ks.name
                    );
                }
            }
        }
        for row in x.chunks(k) {
            let mut found = edgecut_backends::cpu::outlier_columns(row);
            found.sort();
            assert_eq!(found, outlier_cols);
        }
        // f32 weights: exact up to f32 summation.
        let cpu = CpuBackend::with_kernels(kernels::SCALAR, 2).split_everything();
        let lin = Linear {
            w: WeightData::F32(&wdq),
            bias: Some(&bias),
            n,
            k,
            act: ActQuant::Int8,
        };
        let mut out = vec![0f32; m * n];
        cpu.linear(&x, m, &lin, &mut out).unwrap();
        for (g, w) in out.iter().zip(&want) {
            assert!(
                (*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "f32 {g} vs {w}"
            );
        }
    }
}

#[test]
fn linear_rejects_wrong_shapes() {
    let cpu = CpuBackend::with_kernels(kernels::SCALAR, 1);
    let w = vec![0u8; 34];
    let lin = Linear {
        w: WeightData::Q8_0(&w),
        bias: None,
        n: 1,
        k: 32,
        act: ActQuant::Int8,
    };
    let mut out = vec![0f32; 1];
    assert!(cpu.linear(&[0.0; 31], 1, &lin, &mut out).is_err());
    assert!(cpu.linear(&[0.0; 32], 1, &lin, &mut [0f32; 2]).is_err());
    let bad = Linear { n: 2, ..lin };
    assert!(cpu.linear(&[0.0; 32], 1, &bad, &mut [0f32; 2]).is_err());
    // Packed weights of another shape than the op's.
    let vnni = kernels::available()
        .into_iter()
        .find(|k| k.name == "avx512vnni");
    if let Some(ks) = vnni {
        let cpu = CpuBackend::with_kernels(ks, 1);
        let w2 = vec![0u8; 2 * 34];
        let packed = cpu.pack(&w2, 2, 32).expect("VNNI packs");
        let lin = Linear {
            w: WeightData::Packed(&packed, &w2[..34]),
            bias: None,
            n: 1,
            k: 32,
            act: ActQuant::Int8,
        };
        let e = cpu.linear(&[0.0; 32], 1, &lin, &mut [0f32; 1]).unwrap_err();
        assert!(e.to_string().contains("packed weights are 2x32"), "{e}");
    }
}

#[test]
fn erf_and_gelu_match_known_values() {
    // erf values to 10 digits (Abramowitz & Stegun table 7.1).
    for (x, want) in [
        (0.0, 0.0),
        (0.5, 0.5204998778),
        (1.0, 0.8427007929),
        (2.0, 0.9953222650),
        (-1.5, -0.9661051465),
        (3.5, 0.9999992569),
    ] {
        assert!((erf(x) as f64 - want).abs() < 2e-7, "erf({x})");
    }
    // GELU(1) = 0.8413447461, GELU(-2) = -0.0455002639.
    assert!((gelu_scalar(1.0) - 0.841_344_8).abs() < 1e-6);
    assert!((gelu_scalar(-2.0) + 0.045_500_264).abs() < 1e-6);
}

#[test]
fn exp_approx_matches_f64_exp() {
    let mut x = -87.0f32;
    while x < 88.0 {
        let want = (x as f64).exp();
        let got = exp_approx(x) as f64;
        assert!(
            ((got - want) / want).abs() < 3e-7,
            "exp({x}): {got} vs {want}"
        );
        x += 0.0173;
    }
}

#[test]
fn layer_norm_matches_f64() {
    let mut rng = Rng(3);
    let cpu = CpuBackend::with_kernels(kernels::SCALAR, 1);
    for dim in [1, 7, 384] {
        let mut x = rng.vec(3 * dim, 5.0);
        let g = rng.vec(dim, 1.0);
        let b = rng.vec(dim, 1.0);
        let orig = x.clone();
        cpu.layer_norm(&mut x, dim, &g, &b, 1e-12).unwrap();
        for r in 0..3 {
            let row: Vec<f64> = orig[r * dim..(r + 1) * dim]
                .iter()
                .map(|&v| v as f64)
                .collect();
            let mean = row.iter().sum::<f64>() / dim as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / dim as f64;
            for i in 0..dim {
                let want = (row[i] - mean) / (var + 1e-12).sqrt() * g[i] as f64 + b[i] as f64;
                assert!((x[r * dim + i] as f64 - want).abs() < 1e-4, "dim {dim}");
            }
        }
    }
    assert!(cpu
        .layer_norm(&mut [0.0; 5], 2, &[1.0; 2], &[0.0; 2], 1e-5)
        .is_err());
}

#[test]
fn gelu_op_matches_the_scalar_function_with_every_kernel_set() {
    // Values across erf's clamped range and past it, with a ragged tail.
    let x: Vec<f32> = (0..1001).map(|i| (i as f32 - 500.0) / 50.0).collect();
    for ks in kernels::available() {
        let mut y = x.clone();
        CpuBackend::with_kernels(ks, 2)
            .split_everything()
            .gelu(&mut y);
        for (v, g) in x.iter().zip(&y) {
            let want = gelu_scalar(*v);
            assert!(
                (g - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "{}: gelu({v}) = {g}, want {want}",
                ks.name
            );
        }
    }
}

#[test]
fn attention_matches_a_naive_reference_with_padding() {
    // Head sizes 8 (generic path), 32 and 64 (specialised paths); 9 tokens exercise ragged
    // blocks of query rows. Causal (CLIP's text tower): token i sees unmasked tokens 0..=i.
    // A window (ModernBERT's local layers): token i sees unmasked tokens within 2 (or 8, the
    // whole text) of it.
    for hd in [8usize, 32, 64] {
        attention_case(hd, false, None);
        attention_case(hd, true, None);
        attention_case(hd, false, Some(2));
        attention_case(hd, false, Some(8));
        attention_case(hd, true, Some(2));
    }
}

fn attention_case(hd: usize, causal: bool, window: Option<usize>) {
    let mut rng = Rng(5 + hd as u64);
    let (batch, seq, heads) = (3, 9, 4);
    let hidden = heads * hd;
    let q = rng.vec(batch * seq * hidden, 1.0);
    let k = rng.vec(batch * seq * hidden, 1.0);
    let v = rng.vec(batch * seq * hidden, 1.0);
    let lens = [9, 4, 1];
    let mask: Vec<u8> = (0..batch * seq)
        .map(|i| (i % seq < lens[i / seq]) as u8)
        .collect();
    let a = Attention {
        q: &q,
        k: &k,
        v: &v,
        stride: hidden,
        mask: &mask,
        batch,
        seq,
        heads,
        head_dim: hd,
        causal,
        window,
    };
    // The same rows stacked as one q/k/v product (`[row][q | k | v]`), read in place.
    let stacked: Vec<f32> = (0..batch * seq)
        .flat_map(|r| [&q, &k, &v].map(|s| &s[r * hidden..(r + 1) * hidden]))
        .flatten()
        .copied()
        .collect();
    let strided = Attention {
        q: &stacked,
        k: &stacked[hidden..],
        v: &stacked[2 * hidden..],
        stride: 3 * hidden,
        ..a
    };
    let cpu = CpuBackend::new(2);
    let (mut sep, mut st) = (
        vec![0f32; batch * seq * hidden],
        vec![0f32; batch * seq * hidden],
    );
    cpu.attention(&a, &mut sep).unwrap();
    cpu.attention(&strided, &mut st).unwrap();
    assert_eq!(
        sep, st,
        "strided q/k/v views must give the separate arrays' result"
    );
    let short = Attention {
        stride: hidden - 1,
        ..a
    };
    assert!(
        cpu.attention(&short, &mut st).is_err(),
        "a stride below a row is refused"
    );
    // The reference set computes in f32 (1e-5). Faster sets may round q, k, v and the
    // probabilities to bf16 (2^-9 relative each; values here within +-1, so each score is off
    // by at most sqrt(hd) * 2 * 2^-9 / sqrt(hd) and each output by about 2^-9 plus that
    // score error, below 1e-2 with margin; the worst seen is printed).
    // Every set asked for f32 attention gives the reference's precision.
    let runs = [1, 2, 5]
        .map(|t| (kernels::SCALAR, t, AttentionPrecision::Fast, 1e-5))
        .into_iter()
        .chain(kernels::available().into_iter().flat_map(|ks| {
            [
                (ks, 2, AttentionPrecision::Fast, 1e-2),
                (ks, 2, AttentionPrecision::F32, 1e-5),
            ]
        }));
    for (ks, threads, precision, tol) in runs {
        let cpu = CpuBackend::with_kernels(ks, threads)
            .split_everything()
            .with_attention(precision);
        let mut out = vec![0f32; batch * seq * hidden];
        cpu.attention(&a, &mut out).unwrap();
        let mut worst = 0f64;
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..seq {
                    let at = |s: &[f32], t: usize, d: usize| {
                        s[(b * seq + t) * hidden + h * hd + d] as f64
                    };
                    let before = window.unwrap_or(seq);
                    let after = if causal { 0 } else { before };
                    let seen: Vec<usize> = (0..lens[b])
                        .filter(|&j| j + before >= i && j <= i + after)
                        .collect();
                    let scores: Vec<f64> = seen
                        .iter()
                        .map(|&j| {
                            (0..hd).map(|d| at(&q, i, d) * at(&k, j, d)).sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let mx = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - mx).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for d in 0..hd {
                        let want: f64 = seen
                            .iter()
                            .enumerate()
                            .map(|(n, &j)| e[n] / z * at(&v, j, d))
                            .sum();
                        let got = out[(b * seq + i) * hidden + h * hd + d] as f64;
                        worst = worst.max((got - want).abs());
                        assert!(
                            (got - want).abs() < tol,
                            "{} hd {hd} b{b} h{h} i{i} d{d}: {got} vs {want}",
                            ks.name
                        );
                    }
                }
            }
        }
        println!(
            "attention, {} kernels, {precision:?}, head {hd}, causal {causal}, window \
             {window:?}: worst error {worst:.2e}",
            ks.name
        );
    }
}

#[test]
fn embedding_pooling_and_normalisation() {
    let mut rng = Rng(9);
    let (vocab, dim) = (10, 64);
    let table = rng.vec(vocab * dim, 1.0);
    let q = quant::quantize_q8_0_vec(&table).unwrap();
    let mut out = vec![0f32; 2 * dim];
    embedding_rows(&q, DType::Q8_0, vocab, dim, &[3, 9], &mut out).unwrap();
    for (i, id) in [3usize, 9].iter().enumerate() {
        for d in 0..dim {
            assert!((out[i * dim + d] - table[id * dim + d]).abs() < 1.0 / 127.0);
        }
    }
    let e = embedding_rows(&q, DType::Q8_0, vocab, dim, &[10], &mut out[..dim]).unwrap_err();
    assert!(e.to_string().contains("token id 10"));

    let hidden = rng.vec(2 * 3 * 4, 1.0);
    let mask = [1, 1, 0, 1, 0, 0];
    let mut pooled = vec![0f32; 2 * 4];
    pool(&hidden, &mask, 2, 3, 4, Pooling::Mean, &mut pooled).unwrap();
    for d in 0..4 {
        assert!((pooled[d] - (hidden[d] + hidden[4 + d]) / 2.0).abs() < 1e-6);
        assert!((pooled[4 + d] - hidden[12 + d]).abs() < 1e-6);
    }
    pool(&hidden, &mask, 2, 3, 4, Pooling::Cls, &mut pooled).unwrap();
    assert_eq!(&pooled[4..], &hidden[12..16]);
    l2_normalize(&mut pooled, 4);
    let n: f32 = pooled[..4].iter().map(|v| v * v).sum();
    assert!((n - 1.0).abs() < 1e-6);
}
