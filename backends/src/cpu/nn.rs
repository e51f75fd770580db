//! Non-GEMM ops on the CPU: layer norm, GELU, attention.

use super::multiversion::multiversion;
#[cfg(target_arch = "x86_64")]
use super::with_scratch;
use super::Attention;
use super::{CpuBackend, SharedMut};
use crate::ops::OpError;

/// Dot product of two f32 slices, in 8 lanes so the compiler vectorises it.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, ar) = a.split_at(a.len() / 8 * 8);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(8).zip(bc.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + ar.iter().zip(br).map(|(x, y)| x * y).sum::<f32>()
}

/// `erf(x)` in f32 as a rational function of `x` (odd numerator of degree 13, even
/// denominator of degree 8, inputs clamped to +-4 where erf is +-1 in f32): no `exp`, no branch,
/// so loops over it vectorise. The coefficients are Eigen's `generic_fast_erf_float`; absolute
/// error below 2e-7 against the exact function (tested).
#[inline]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_600_1e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// `e^x` in f32 without a libm call, so loops over it vectorise: `2^n * p(r)` with
/// `r = x - n ln 2` in [-ln2/2, ln2/2] and a degree-6 Taylor polynomial (relative error below
/// 3e-7). Inputs are clamped to [-87, 88], where f32 `e^x` is finite and normal.
#[inline]
pub fn exp_approx(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest by adding and subtracting 1.5 * 2^23 (exact for |v| < 2^22): no libm
    // `roundf` call, which the baseline x86-64 target would make.
    const MAGIC: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let mut p = 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // 2^n from t's bits, which are MAGIC's plus n in the low mantissa bits (|n| <= 127): integer
    // arithmetic, where `n as i32` (a saturating conversion) would not vectorise.
    let biased = t.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127);
    p * f32::from_bits(biased << 23)
}

multiversion! {
    /// GELU over a slice, in place.
    pub(super) fn gelu_slice(x: &mut [f32]) {
        x.iter_mut().for_each(|v| *v = gelu_scalar(*v));
    }
}

multiversion! {
    /// Layer normalisation of each row of `dim` values, in place, after adding `delta` (the
    /// residual) when given.
    pub(super) fn layer_norm_rows(
        x: &mut [f32],
        delta: Option<&[f32]>,
        dim: usize,
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
    ) {
        for (i, row) in x.chunks_exact_mut(dim).enumerate() {
            // The residual add and the mean in one pass (the same sum, in the same order).
            let sum = match delta {
                Some(d) => add_sum16(row, &d[i * dim..(i + 1) * dim]),
                None => sum16(row, |v| v),
            };
            layer_norm_row_with_sum(row, sum, gamma, beta, eps);
        }
    }
}

/// GELU as BERT defines it: `x * (1 + erf(x / sqrt(2))) / 2`.
#[inline]
pub fn gelu_scalar(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Sum of `f(v)` over `x`, in 16 partial sums so the loop vectorises (a single running sum
/// cannot be reordered).
#[inline(always)]
fn sum16(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for l in 0..16 {
            acc[l] += f(c[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `x += d`, returning the sum of the new `x` as [`sum16`] adds it.
#[inline(always)]
fn add_sum16(x: &mut [f32], d: &[f32]) -> f32 {
    assert_eq!(x.len(), d.len());
    let mut acc = [0f32; 16];
    let n = x.len() / 16 * 16;
    let (xc, xt) = x.split_at_mut(n);
    let (dc, dt) = d.split_at(n);
    let mut tail = 0f32;
    for (v, d) in xt.iter_mut().zip(dt) {
        *v += d;
        tail += *v;
    }
    for (c, dc) in xc.chunks_exact_mut(16).zip(dc.chunks_exact(16)) {
        for l in 0..16 {
            c[l] += dc[l];
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Largest value of `x` (`-inf` when empty), in 16 lanes so the loop vectorises.
#[inline(always)]
fn max16(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    for c in chunks {
        for l in 0..16 {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    acc.iter().fold(tail, |m, &v| if v > m { v } else { m })
}

/// Layer normalisation of one row whose sum ([`sum16`]) is `sum`, in place.
#[inline(always)]
fn layer_norm_row_with_sum(row: &mut [f32], sum: f32, gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = sum / n;
    let var = sum16(row, |v| (v - mean) * (v - mean)) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

pub(super) fn attention(
    cpu: &CpuBackend,
    a: &Attention<'_>,
    out: &mut [f32],
) -> Result<(), OpError> {
    let hidden = a.heads * a.head_dim;
    let rows = a.batch * a.seq;
    if a.stride < hidden {
        return Err(OpError::Shape(format!(
            "attention: row stride {} is below the {hidden} values of a row",
            a.stride
        )));
    }
    let need = if rows == 0 {
        0
    } else {
        (rows - 1) * a.stride + hidden
    };
    for (what, s) in [
        ("attention q", a.q),
        ("attention k", a.k),
        ("attention v", a.v),
    ] {
        if s.len() < need {
            return Err(OpError::Shape(format!(
                "{what}: {} values, {rows} rows of stride {} need {need}",
                s.len(),
                a.stride
            )));
        }
    }
    OpError::check("attention mask", a.mask.len(), rows)?;
    OpError::check("attention output", out.len(), rows * hidden)?;
    let outp = SharedMut::new(out);
    // Split only work big enough to pay for waking the other threads.
    let pairs = a.batch * a.heads;
    let macs = pairs * a.seq * a.seq * a.head_dim * 2;
    // Split work takes a head at a time, so threads that finish early take more (a thread the
    // OS preempted holds up the block for one head at most).
    let tasks = if cpu.tasks_for(macs) > 1 { pairs } else { 1 };
    // bf16 products with the fast kernel set where the CPU has them, unless f32 was asked for;
    // the reference set keeps f32.
    #[cfg(target_arch = "x86_64")]
    let bf16 = cpu.attention == super::AttentionPrecision::Fast
        && cpu.kernels.attention_bf16
        && super::attn_bf16::available();
    #[cfg(not(target_arch = "x86_64"))]
    let bf16 = false;
    cpu.parallel(tasks, &|t| {
        for task in (t * pairs / tasks)..((t + 1) * pairs / tasks) {
            attend_head(
                &cpu.kernels,
                cpu.kernels.attention_f32,
                a,
                task / a.heads,
                task % a.heads,
                bf16,
                &outp,
            );
        }
    });
    Ok(())
}

multiversion! {
    /// Attention of one (sequence, head) pair; writes only that head's columns of that
    /// sequence's rows.
    fn attend_head(
        head32: bool,
        a: &Attention<'_>,
        b: usize,
        h: usize,
        bf16: bool,
        outp: &SharedMut<f32>,
    ) {
        let hidden = a.heads * a.head_dim;
        let (seq, hd) = (a.seq, a.head_dim);
        let scale = 1.0 / (hd as f32).sqrt();
        let col = h * hd;
        let (before, after) = reach(a);
        #[cfg(target_arch = "x86_64")]
        if head32
            && super::attn_avx512::head_dim_supported(hd)
            && super::attn_avx512::available()
        {
            super::kernels::note_simd();
            return match hd {
                32 => attend_head_simd::<32, 16>(a, b, h, bf16, outp),
                _ => attend_head_simd::<64, 32>(a, b, h, bf16, outp),
            };
        }
        let _ = (head32, bf16);
        // This head's keys and values, transposed (`kt[d][j]`, `vt[d][j]`), real tokens only, so
        // both products below run along contiguous keys and vectorise.
        let keep: Vec<usize> = (0..seq).filter(|&j| a.mask[b * seq + j] != 0).collect();
        let nk = keep.len();
        let mut kt = vec![0f32; hd * nk];
        let mut vt = vec![0f32; hd * nk];
        for (jj, &j) in keep.iter().enumerate() {
            let at = (b * seq + j) * a.stride + col;
            for d in 0..hd {
                kt[d * nk + jj] = a.k[at + d];
                vt[d * nk + jj] = a.v[at + d];
            }
        }
        let mut scores = vec![0f32; nk];
        let mut acc = vec![0f32; hd];
        for i in 0..seq {
            let qi = &a.q[(b * seq + i) * a.stride + col..][..hd];
            acc.fill(0.0);
            // The kept keys within reach of i (`keep` is ascending): those from i - before to
            // i + after.
            let first = keep.partition_point(|&j| j + before < i);
            let end = keep.partition_point(|&j| j <= i + after);
            if end > first {
                let scores = &mut scores[first..end];
                scores.fill(0.0);
                for (&qd, kd) in qi.iter().zip(kt.chunks_exact(nk)) {
                    let qd = qd * scale;
                    scores
                        .iter_mut()
                        .zip(&kd[first..end])
                        .for_each(|(s, k)| *s += qd * k);
                }
                softmax_row(scores);
                for (o, vd) in acc.iter_mut().zip(vt.chunks_exact(nk)) {
                    *o = dot_f32(scores, &vd[first..end]);
                }
            }
            // SAFETY: task (b, h) writes only row b*seq+i, columns of head h.
            unsafe { outp.slice((b * seq + i) * hidden + col, hd) }.copy_from_slice(&acc);
        }
    }
}

/// The keys a query sees, as distances before and after it.
fn reach(a: &Attention<'_>) -> (usize, usize) {
    crate::backend::key_reach(a.window, a.causal, a.seq)
}

/// Softmax of one row of scores, in place (vectorisable: no libm call).
#[inline(always)]
pub(super) fn softmax_row(s: &mut [f32]) {
    let max = max16(s);
    s.iter_mut().for_each(|v| *v = exp_approx(*v - max));
    let inv = 1.0 / sum16(s, |v| v);
    s.iter_mut().for_each(|v| *v *= inv);
}

/// [`attend_head`] for heads of `HD` (32 or 64; `HP = HD / 2`) with the AVX-512 kernels.
#[cfg(target_arch = "x86_64")]
fn attend_head_simd<const HD: usize, const HP: usize>(
    a: &Attention<'_>,
    b: usize,
    h: usize,
    bf16: bool,
    outp: &SharedMut<f32>,
) {
    let hidden = a.heads * HD;
    let seq = a.seq;
    let (col, row0) = (h * HD, b * seq);
    let scale = 1.0 / (HD as f32).sqrt();
    // Causal or windowed: each query row's keys narrowed (the kernels mask the rest).
    let reach = Some(reach(a)).filter(|&(before, after)| before < seq || after < seq);
    with_scratch(&HEAD32, |Head32 { keep, f32s, bf16s }| {
        keep.clear();
        keep.extend((0..seq).filter(|&j| a.mask[row0 + j] != 0));
        let first = row0 * a.stride + col;
        let (q, k, v) = (&a.q[first..], &a.k[first..], &a.v[first..]);
        let out = &mut |i: usize, o: &[f32; HD]| {
            // SAFETY: task (b, h) writes only rows of sequence b, columns of head h.
            unsafe { outp.slice((row0 + i) * hidden + col, HD) }.copy_from_slice(o)
        };
        // SAFETY: the caller checked the kernel's CPU features; `head` checks the slices
        // against `seq` rows.
        unsafe {
            if bf16 {
                let b = bf16s;
                super::attn_bf16::head::<HD, HP>(q, k, v, a.stride, seq, keep, reach, scale, b, out)
            } else {
                let f = f32s;
                super::attn_avx512::head::<HD>(q, k, v, a.stride, seq, keep, reach, scale, f, out)
            }
        }
    })
}

/// Per-thread buffers of [`attend_head_simd`]: the kept key positions and the kernels' buffers.
#[cfg(target_arch = "x86_64")]
#[derive(Default)]
struct Head32 {
    keep: Vec<usize>,
    f32s: super::attn_avx512::Buffers,
    bf16s: super::attn_bf16::Buffers,
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    static HEAD32: std::cell::RefCell<Head32> = std::cell::RefCell::new(Head32::default());
}
