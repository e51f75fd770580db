//! The one-row matmul of token decoding (f32 activations, weights as stored), at SmolLM2's
//! shapes: decoding is bound by reading the weights, so the figure that matters is GB/s of
//! weights read, against this machine's memory bandwidth.
//!
//! `cargo bench -p edgecut-backends --bench gemv` prints ms, GB/s and ns per 32-weight block on
//! one and two threads, for one activation row (a token) and for eight (eight conversations
//! decoded together: the weights are read once for all eight), then criterion's statistics.
//! `GEMV_SUMMARY_ONLY=1` stops after the summary; `GEMV_CASES=1x8,2x8` picks threads x rows.

#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use edgecut_backends::cpu::CpuBackend;
use edgecut_backends::cpu::{Linear, WeightData};
use edgecut_backends::ops::ActQuant;
use edgecut_backends::DType;

/// (name, type, bytes per block, N, K): SmolLM2-135M's fused gate|up, its 30 layers' worth of
/// that matrix (larger than any cache), its Q8_0 vocabulary head, and the same two in Q5_0
/// (what llama.cpp's Q4_K_M mix stores SmolLM2's and Gemma 3's 576/640-wide rows in).
const SHAPES: [(&str, DType, usize, usize, usize); 5] = [
    ("gate_up_q4_1_3072x576", DType::Q4_1, 20, 3072, 576),
    ("x30_q4_1_92160x576", DType::Q4_1, 20, 92160, 576),
    ("head_q8_0_49152x576", DType::Q8_0, 34, 49152, 576),
    ("gate_up_q5_0_3072x576", DType::Q5_0, 22, 3072, 576),
    ("x30_q5_0_92160x576", DType::Q5_0, 22, 92160, 576),
];

fn weights(bb: usize, n: usize, k: usize) -> Vec<u8> {
    // Valid blocks: f16 scale 0x2020 (small, normal) and arbitrary quants.
    (0..n * k / 32 * bb)
        .map(|i| if i % bb < 2 { 0x20 } else { (i * 7) as u8 })
        .collect()
}

fn summary() {
    // GEMV_CASES=THREADSxROWS,... picks cases (e.g. `1x8,2x8`).
    let cases: Vec<(usize, usize)> = std::env::var("GEMV_CASES")
        .map(|v| {
            v.split(',')
                .map(|c| {
                    let (t, m) = c.split_once('x').expect("GEMV_CASES: THREADSxROWS");
                    (t.parse().expect("threads"), m.parse().expect("rows"))
                })
                .collect()
        })
        .unwrap_or(vec![(1, 1), (2, 1), (1, 8), (2, 8)]);
    for (threads, m) in cases {
        let cpu = CpuBackend::new(threads);
        println!(
            "{} kernels, {threads} thread(s), {m} activation row(s)",
            cpu.kernels().name
        );
        for (name, dtype, bb, n, k) in SHAPES {
            let w = weights(bb, n, k);
            let x: Vec<f32> = (0..m * k).map(|i| (i as f32).sin()).collect();
            let mut out = vec![0f32; m * n];
            let lin = Linear {
                w: WeightData::Blocks(dtype, &w),
                bias: None,
                n,
                k,
                act: ActQuant::F32,
            };
            cpu.linear(&x, m, &lin, &mut out).expect("shapes fit");
            let reps = (200_000_000 / w.len() / m).clamp(10, 2000);
            let t = Instant::now();
            for _ in 0..reps {
                cpu.linear(&x, m, &lin, &mut out).expect("shapes fit");
            }
            let dt = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "  {name:<24} {:>7.3} ms {:>6.2} GB/s {:>5.2} ns/block",
                dt * 1e3,
                w.len() as f64 / dt / 1e9,
                dt * 1e9 / (n * k / 32) as f64
            );
        }
    }
}

fn bench_gemv(cr: &mut Criterion) {
    let cpu = CpuBackend::new(2);
    let mut g = cr.benchmark_group("gemv_two_threads");
    for (name, dtype, bb, n, k) in SHAPES {
        let w = weights(bb, n, k);
        let x: Vec<f32> = (0..k).map(|i| (i as f32).cos()).collect();
        let mut out = vec![0f32; n];
        let lin = Linear {
            w: WeightData::Blocks(dtype, &w),
            bias: None,
            n,
            k,
            act: ActQuant::F32,
        };
        g.throughput(Throughput::Bytes(w.len() as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                cpu.linear(&x, 1, &lin, black_box(&mut out))
                    .expect("shapes fit")
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench_gemv
}

fn main() {
    summary();
    if std::env::var_os("GEMV_SUMMARY_ONLY").is_some() {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
