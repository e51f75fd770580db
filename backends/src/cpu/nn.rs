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

/// `erf(x)`, with absolute error below 1.2e-7 (Numerical Recipes' Chebyshev fit of erfc).
pub fn erf(x: f32) -> f32 {
    let z = (x as f64).abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398
                                    + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    let e = 1.0 - r;
    (if x >= 0.0 { e } else { -e }) as f32
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
        let mut scores = vec![0f32; seq];
        let mut acc = vec![0f32; hd];
        let col = h * hd;
        for i in 0..seq {
            let qi = &a.q[(b * seq + i) * hidden + col..][..hd];
            for (j, s) in scores.iter_mut().enumerate() {
                *s = if a.mask[b * seq + j] != 0 {
                    dot_f32(qi, &a.k[(b * seq + j) * hidden + col..][..hd]) * scale
                } else {
                    f32::NEG_INFINITY
                };
            }
            if scores.iter().all(|s| *s == f32::NEG_INFINITY) {
                scores.fill(0.0); // an all-padding row: uniform weights, never NaN
            }
            softmax(&mut scores);
            acc.fill(0.0);
            for (j, &p) in scores.iter().enumerate() {
                if p != 0.0 {
                    let vj = &a.v[(b * seq + j) * hidden + col..][..hd];
                    acc.iter_mut().zip(vj).for_each(|(o, v)| *o += p * v);
                }
            }
            // SAFETY: task (b, h) writes only row b*seq+i, columns of head h.
            unsafe { outp.slice((b * seq + i) * hidden + col, hd) }.copy_from_slice(&acc);
        }
    });
    Ok(())
}
