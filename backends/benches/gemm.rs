//! INT8 GEMM at the MiniLM shapes, against this CPU's measured INT8 peak.
//!
//! `cargo bench -p edgecut-backends --bench gemm` first measures the peak: independent chains of
//! 512-bit `vpdpbusd` (64 multiply-adds each) on one thread, with no memory traffic. Then, for
//! each shape, it times `linear` on one thread (weights repacked as a model load would) and
//! prints GMAC/s and the share of that peak; criterion follows with its own statistics.

#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use edgecut_backends::cpu::{kernels, CpuBackend};
use edgecut_backends::cpu::{Linear, WeightData};
use edgecut_backends::ops::ActQuant;
use edgecut_backends::quant;

/// MiniLM's matmuls at 128 tokens: (name, M, N, K).
const SHAPES: [(&str, usize, usize, usize); 4] = [
    ("qkv_or_attn_out_128x384x384", 128, 384, 384),
    ("fused_qkv_128x1152x384", 128, 1152, 384),
    ("ffn_up_128x1536x384", 128, 1536, 384),
    ("ffn_down_128x384x1536", 128, 384, 1536),
];

#[cfg(target_arch = "x86_64")]
mod peak {
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512F and AVX-512 VNNI must be present.
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn chains(iters: u64) -> i32 {
        // Opaque inputs, and the accumulators passed through `black_box` every 64 rounds, so the
        // compiler can neither fold the chains nor drop them.
        let a = _mm512_set1_epi8(std::hint::black_box(3));
        let b = _mm512_set1_epi8(std::hint::black_box(-2));
        let mut acc = [_mm512_setzero_si512(); 12];
        for i in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm512_dpbusd_epi32(*v, a, b);
            }
            if i % 64 == 0 {
                acc = std::hint::black_box(acc);
            }
        }
        let mut s = _mm512_setzero_si512();
        for v in acc {
            s = _mm512_add_epi32(s, v);
        }
        _mm512_reduce_add_epi32(s)
    }

    /// Peak INT8 multiply-adds per second on one thread, or `None` without AVX-512 VNNI.
    pub fn gmacs() -> Option<f64> {
        if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni")) {
            return None;
        }
        let iters = 20_000_000u64;
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            // SAFETY: both features were detected above.
            std::hint::black_box(unsafe { chains(iters) });
            best = best.min(t.elapsed().as_secs_f64());
        }
        Some((iters * 12 * 64) as f64 / best / 1e9)
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod peak {
    pub fn gmacs() -> Option<f64> {
        None
    }
}

struct Case {
    x: Vec<f32>,
    wq: Vec<u8>,
    packed: Option<edgecut_backends::cpu::PackedQ8_0>,
    m: usize,
    n: usize,
    k: usize,
}

fn case(cpu: &CpuBackend, m: usize, n: usize, k: usize) -> Case {
    let mut s = 1u64;
    let mut r = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let w: Vec<f32> = (0..n * k).map(|_| r()).collect();
    let x: Vec<f32> = (0..m * k).map(|_| r()).collect();
    let wq = quant::quantize_q8_0_vec(&w).expect("whole blocks");
    let packed = cpu.pack(&wq, n, k);
    Case {
        x,
        wq,
        packed,
        m,
        n,
        k,
    }
}

fn run(cpu: &CpuBackend, c: &Case, out: &mut [f32]) {
    let w = match &c.packed {
        Some(p) => WeightData::Packed(p, &c.wq),
        None => WeightData::Q8_0(&c.wq),
    };
    let lin = Linear {
        w,
        bias: None,
        n: c.n,
        k: c.k,
        act: ActQuant::Int8,
    };
    cpu.linear(&c.x, c.m, &lin, out).expect("shapes fit");
}

fn summary() {
    let cpu = CpuBackend::with_kernels(kernels::best(), 1);
    let peak = peak::gmacs();
    match peak {
        Some(p) => println!("INT8 peak (512-bit vpdpbusd, one thread): {p:.1} GMAC/s"),
        None => println!("INT8 peak: no AVX-512 VNNI on this CPU; shares of peak not shown"),
    }
    println!("kernels: {}, one thread", cpu.kernels().name);
    for (name, m, n, k) in SHAPES {
        let c = case(&cpu, m, n, k);
        let mut out = vec![0f32; m * n];
        run(&cpu, &c, &mut out);
        let mut times: Vec<f64> = (0..30)
            .map(|_| {
                let t = Instant::now();
                run(&cpu, &c, &mut out);
                t.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let gmacs = (m * n * k) as f64 / times[times.len() / 2] / 1e9;
        let share = peak.map_or(String::new(), |p| {
            format!(" ({:.0}% of peak)", 100.0 * gmacs / p)
        });
        println!("{name:<30} {gmacs:>7.1} GMAC/s{share}");
    }
}

fn bench_attention(cr: &mut Criterion) {
    let cpu = CpuBackend::with_kernels(kernels::best(), 1);
    let mut g = cr.benchmark_group("attention_one_thread");
    for seq in [16usize, 128] {
        let (heads, hd) = (12, 32);
        let n = seq * heads * hd;
        let q: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let mask = vec![1u8; seq];
        let a = edgecut_backends::cpu::Attention {
            q: &q,
            k: &q,
            v: &q,
            stride: heads * hd,
            mask: &mask,
            batch: 1,
            seq,
            heads,
            head_dim: hd,
            causal: false,
            window: None,
        };
        let mut out = vec![0f32; n];
        g.throughput(Throughput::Elements((2 * heads * seq * seq * hd) as u64));
        g.bench_function(
            BenchmarkId::from_parameter(format!("seq{seq}_12x32")),
            |b| b.iter(|| cpu.attention(&a, black_box(&mut out)).expect("shapes fit")),
        );
    }
    g.finish();
}

fn bench_gemm(cr: &mut Criterion) {
    let cpu = CpuBackend::with_kernels(kernels::best(), 1);
    let mut g = cr.benchmark_group("linear_q8_0_one_thread");
    for (name, m, n, k) in SHAPES {
        let c = case(&cpu, m, n, k);
        let mut out = vec![0f32; m * n];
        g.throughput(Throughput::Elements((m * n * k) as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| run(&cpu, &c, black_box(&mut out)))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench_gemm, bench_attention
}

fn main() {
    summary();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
