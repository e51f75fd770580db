//! Writers for the block types of llama.cpp's Q4_K_M mix: Q4_K, Q6_K and their fallback Q5_0
//! (Q8_0 is in `quant`). Q5_0 follows ggml's `quantize_row_q5_0_ref` exactly. Q4_K and Q6_K
//! take each sub-block's range (Q4_K: minimum and maximum; Q6_K: largest magnitude) and round
//! the sub-block scales to the 6- and 8-bit grid of the super-block scale, then the values to
//! those rounded scales; ggml's reference searches scales by least squares
//! (`make_qkx2_quants`, `make_qx_quants`) and loses less, at the same size and layout.

use half::f16;

use super::k_quants::{Q4_K_BYTES, Q6_K_BYTES, QK_K};
use super::small_blocks::Q5_0_BYTES;
use super::{QuantError, QK};

fn blocks(what: &'static str, src: &[f32], len: usize) -> Result<usize, QuantError> {
    if src.len().is_multiple_of(len) {
        Ok(src.len() / len)
    } else {
        Err(QuantError {
            what,
            len: src.len(),
            multiple: len,
        })
    }
}

/// Rounds half away from zero, as ggml's `nearest_int` (for the values in range here).
fn round(x: f32) -> i32 {
    x.round() as i32
}

/// Q5_0 blocks of `src` (a multiple of 32 values), as ggml's reference writes them: `d` is the
/// signed value of largest magnitude over -16, `q = trunc(x / d + 16.5)` clamped to 0..31.
pub fn quantize_q5_0(src: &[f32]) -> Result<Vec<u8>, QuantError> {
    let n = blocks("Q5_0 input", src, QK)?;
    let mut out = Vec::with_capacity(n * Q5_0_BYTES);
    for x in src.chunks_exact(QK) {
        let max = x
            .iter()
            .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let q: Vec<u8> = x
            .iter()
            .map(|&v| ((v * id + 16.5) as i32).clamp(0, 31) as u8)
            .collect();
        out.extend(f16::from_f32(d).to_le_bytes());
        let mut qh = 0u32;
        for (j, &q) in q.iter().enumerate() {
            qh |= ((q >> 4) as u32 & 1) << j;
        }
        out.extend(qh.to_le_bytes());
        for j in 0..16 {
            out.push((q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4));
        }
    }
    Ok(out)
}

/// A 4-bit sub-block's step and offset (`x ~ step q - off`, `q` in 0..15, `off >= 0`), as
/// ggml's `make_qkx2_quants` finds them: from the range, then for 21 trial scales around it the
/// weighted least-squares fit of step and offset to the values rounded at that scale, keeping the
/// one of least weighted squared error (weights `rms + |x|`: large values count more).
fn step_and_offset(x: &[f32]) -> (f32, f32) {
    let lo = x.iter().fold(0f32, |m, &v| m.min(v));
    let hi = x.iter().fold(lo, |m, &v| m.max(v));
    if hi <= lo {
        return (0.0, -lo);
    }
    let rms = (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt();
    let w: Vec<f32> = x.iter().map(|v| rms + v.abs()).collect();
    let err = |step: f32, min: f32, q: &[f32]| -> f32 {
        x.iter()
            .zip(&w)
            .zip(q)
            .map(|((&v, &w), &q)| {
                let d = step * q + min - v;
                w * d * d
            })
            .sum()
    };
    let base = (hi - lo) / 15.0;
    let q0: Vec<f32> = x
        .iter()
        .map(|&v| ((v - lo) / base).round().clamp(0.0, 15.0))
        .collect();
    let mut best = (err(base, lo, &q0), base, lo);
    for is in 0..=20 {
        let iscale = (-1.0 + 0.1 * is as f32 + 15.0) / (hi - lo);
        let q: Vec<f32> = x
            .iter()
            .map(|&v| (iscale * (v - lo)).round().clamp(0.0, 15.0))
            .collect();
        let (mut sw, mut sl, mut sl2, mut sx, mut sxl) = (0f32, 0f32, 0f32, 0f32, 0f32);
        for ((&v, &w), &l) in x.iter().zip(&w).zip(&q) {
            sw += w;
            sl += w * l;
            sl2 += w * l * l;
            sx += w * v;
            sxl += w * v * l;
        }
        let det = sw * sl2 - sl * sl;
        if det <= 0.0 {
            continue;
        }
        let (mut step, mut min) = ((sw * sxl - sx * sl) / det, (sl2 * sx - sl * sxl) / det);
        if min > 0.0 {
            min = 0.0;
            step = sxl / sl2;
        }
        if step <= 0.0 {
            continue;
        }
        let e = err(step, min, &q);
        if e < best.0 {
            best = (e, step, min);
        }
    }
    (best.1, -best.2)
}

/// Q4_K super-blocks of `src` (a multiple of 256 values): per sub-block of 32,
/// `x ~ d sc q - dmin m` with 6-bit `sc` and `m`, 4-bit `q`.
pub fn quantize_q4_k(src: &[f32]) -> Result<Vec<u8>, QuantError> {
    let n = blocks("Q4_K input", src, QK_K)?;
    let mut out = Vec::with_capacity(n * Q4_K_BYTES);
    for x in src.chunks_exact(QK_K) {
        // Each sub-block's step and offset: x = step q - off, off >= 0.
        let (mut step, mut off) = ([0f32; 8], [0f32; 8]);
        for (j, xs) in x.chunks_exact(32).enumerate() {
            (step[j], off[j]) = step_and_offset(xs);
        }
        let max_step = step.iter().fold(0f32, |m, &v| m.max(v));
        let max_off = off.iter().fold(0f32, |m, &v| m.max(v));
        let d = f16::from_f32(max_step / 63.0);
        let dmin = f16::from_f32(max_off / 63.0);
        let (df, dminf) = (d.to_f32(), dmin.to_f32());
        let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
        for j in 0..8 {
            sc[j] = if df > 0.0 {
                round(step[j] / df).clamp(0, 63) as u8
            } else {
                0
            };
            mn[j] = if dminf > 0.0 {
                round(off[j] / dminf).clamp(0, 63) as u8
            } else {
                0
            };
        }
        let mut scales = [0u8; 12];
        for j in 0..4 {
            scales[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
            scales[j + 4] = (mn[j] & 63) | ((mn[j + 4] >> 4) << 6);
            scales[j + 8] = (sc[j + 4] & 0x0f) | ((mn[j + 4] & 0x0f) << 4);
        }
        let mut q = [0u8; QK_K];
        for (j, (xs, qs)) in x.chunks_exact(32).zip(q.chunks_exact_mut(32)).enumerate() {
            let (dj, mj) = (df * sc[j] as f32, dminf * mn[j] as f32);
            for (q, &v) in qs.iter_mut().zip(xs) {
                *q = if dj > 0.0 {
                    round((v + mj) / dj).clamp(0, 15) as u8
                } else {
                    0
                };
            }
        }
        out.extend(d.to_le_bytes());
        out.extend(dmin.to_le_bytes());
        out.extend(scales);
        for j in 0..4 {
            for l in 0..32 {
                out.push(q[64 * j + l] | (q[64 * j + 32 + l] << 4));
            }
        }
    }
    Ok(out)
}

/// Q6_K super-blocks of `src` (a multiple of 256 values): per sub-block of 16,
/// `x ~ d sc (q - 32)` with int8 `sc`, 6-bit `q`.
pub fn quantize_q6_k(src: &[f32]) -> Result<Vec<u8>, QuantError> {
    let n = blocks("Q6_K input", src, QK_K)?;
    let mut out = Vec::with_capacity(n * Q6_K_BYTES);
    for x in src.chunks_exact(QK_K) {
        let mut step = [0f32; 16];
        for (j, xs) in x.chunks_exact(16).enumerate() {
            step[j] = xs.iter().fold(0f32, |m, &v| m.max(v.abs())) / 31.0;
        }
        let max_step = step.iter().fold(0f32, |m, &v| m.max(v));
        let d = f16::from_f32(max_step / 127.0);
        let df = d.to_f32();
        let mut sc = [0i8; 16];
        for (s, &st) in sc.iter_mut().zip(&step) {
            *s = if df > 0.0 {
                round(st / df).clamp(-127, 127) as i8
            } else {
                0
            };
        }
        let mut q = [0u8; QK_K];
        for (v, (q, &x)) in q.iter_mut().zip(x).enumerate() {
            let dj = df * sc[v / 16] as f32;
            let l = if dj != 0.0 {
                round(x / dj).clamp(-32, 31)
            } else {
                0
            };
            *q = (l + 32) as u8;
        }
        let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
        for h in 0..2 {
            for t in 0..64 {
                let (a, b) = (q[128 * h + t], q[128 * h + 64 + t]);
                ql[64 * h + t] = (a & 0x0f) | ((b & 0x0f) << 4);
            }
            for l in 0..32 {
                let mut bits = 0u8;
                for s in 0..4 {
                    bits |= (q[128 * h + 32 * s + l] >> 4) << (2 * s);
                }
                qh[32 * h + l] = bits;
            }
        }
        out.extend(ql);
        out.extend(qh);
        out.extend(sc.map(|s| s as u8));
        out.extend(d.to_le_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize_q4_k, dequantize_q5_0, dequantize_q6_k};

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 2.0
            })
            .collect()
    }

    /// The largest error per sub-block of `len`, relative to the sub-block's largest |x|.
    fn worst(x: &[f32], y: &[f32], len: usize) -> f32 {
        x.chunks(len)
            .zip(y.chunks(len))
            .map(|(a, b)| {
                let amax = a.iter().fold(0f32, |m, &v| m.max(v.abs()));
                let e = a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
                e / amax.max(1e-9)
            })
            .fold(0f32, f32::max)
    }

    #[test]
    fn written_blocks_decode_within_half_a_step_of_the_values() {
        let x = values(4 * QK_K, 3);
        let mut y = vec![0f32; x.len()];
        dequantize_q5_0(&quantize_q5_0(&x).unwrap(), &mut y).unwrap();
        // Half a step of |max| / 16, except at -max, which the 5-bit grid (-16..15 steps toward
        // max's sign) reaches one step short, as ggml's; plus the f16 rounding of d.
        assert!(
            worst(&x, &y, 32) <= 1.0 / 16.0 * 1.01,
            "Q5_0 {}",
            worst(&x, &y, 32)
        );
        dequantize_q4_k(&quantize_q4_k(&x).unwrap(), &mut y).unwrap();
        // Half a step of the range / 15 (range <= 2 |max|), the 6-bit grids of the scale and the
        // minimum adding up to another such step.
        assert!(
            worst(&x, &y, 32) <= 2.0 / 15.0,
            "Q4_K {}",
            worst(&x, &y, 32)
        );
        dequantize_q6_k(&quantize_q6_k(&x).unwrap(), &mut y).unwrap();
        // Half a step of |max| / 31, the int8 scale grid adding at most as much again.
        assert!(
            worst(&x, &y, 16) <= 1.0 / 31.0,
            "Q6_K {}",
            worst(&x, &y, 16)
        );
        // A block of zeros stays zero, without NaN.
        let z = vec![0f32; QK_K];
        for enc in [quantize_q4_k, quantize_q6_k, quantize_q5_0] {
            let mut y = vec![1f32; QK_K];
            let b = enc(&z).unwrap();
            let t = match b.len() {
                144 => dequantize_q4_k,
                210 => dequantize_q6_k,
                _ => dequantize_q5_0,
            };
            t(&b, &mut y).unwrap();
            assert!(y.iter().all(|&v| v == 0.0));
        }
        assert!(quantize_q4_k(&x[..100]).is_err());
    }
}
