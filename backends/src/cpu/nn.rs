//! Non-GEMM ops on the CPU: layer norm, GELU, attention.

use super::{CpuBackend, SharedMut};
use crate::ops::{softmax, Attention, OpError};

/// Dot product of two f32 slices, in 8 lanes so the compiler vectorises it.
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

/// GELU as BERT defines it: `x * (1 + erf(x / sqrt(2))) / 2`.
pub fn gelu_scalar(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

pub(super) fn layer_norm_row(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
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
    for (what, s) in [
        ("attention q", a.q),
        ("attention k", a.k),
        ("attention v", a.v),
    ] {
        OpError::check(what, s.len(), rows * hidden)?;
    }
    OpError::check("attention mask", a.mask.len(), rows)?;
    OpError::check("attention output", out.len(), rows * hidden)?;
    let scale = 1.0 / (a.head_dim as f32).sqrt();
    let outp = SharedMut::new(out);
    let (seq, hd) = (a.seq, a.head_dim);
    cpu.parallel(a.batch * a.heads, &|task| {
        let (b, h) = (task / a.heads, task % a.heads);
        let col = h * hd;
        // This head's keys and values, contiguous, and only the real (unmasked) tokens.
        let keep: Vec<usize> = (0..seq).filter(|&j| a.mask[b * seq + j] != 0).collect();
        let mut kh = Vec::with_capacity(keep.len() * hd);
        let mut vh = Vec::with_capacity(keep.len() * hd);
        for &j in &keep {
            let at = (b * seq + j) * hidden + col;
            kh.extend_from_slice(&a.k[at..at + hd]);
            vh.extend_from_slice(&a.v[at..at + hd]);
        }
        let mut scores = vec![0f32; keep.len()];
        let mut acc = vec![0f32; hd];
        for i in 0..seq {
            let qi = &a.q[(b * seq + i) * hidden + col..][..hd];
            acc.fill(0.0);
            if !keep.is_empty() {
                for (s, kj) in scores.iter_mut().zip(kh.chunks_exact(hd)) {
                    *s = dot_f32(qi, kj) * scale;
                }
                softmax(&mut scores);
                for (&p, vj) in scores.iter().zip(vh.chunks_exact(hd)) {
                    acc.iter_mut().zip(vj).for_each(|(o, v)| *o += p * v);
                }
            }
            // SAFETY: task (b, h) writes only row b*seq+i, columns of head h.
            unsafe { outp.slice((b * seq + i) * hidden + col, hd) }.copy_from_slice(&acc);
        }
    });
    Ok(())
}
