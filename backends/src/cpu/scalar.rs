//! The scalar reference kernels: plain Rust, the ground truth every SIMD kernel is tested
//! against.

use half::f16;

use crate::quant::{Q8_0_BYTES, QK};

/// Dot product of one Q8_0 weight row (`k / 32` blocks of 34 bytes) with one activation row
/// quantized to int8 `xq` with per-block scales `xd`: `sum_b dw_b * dx_b * sum_i w_bi * x_bi`.
pub fn dot_q8_0(w: &[u8], xq: &[i8], xd: &[f32]) -> f32 {
    let mut acc = 0f32;
    for ((blk, xs), &dx) in w.chunks_exact(Q8_0_BYTES).zip(xq.chunks_exact(QK)).zip(xd) {
        let dw = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
        let s: i32 = blk[2..]
            .iter()
            .zip(xs)
            .map(|(&w, &x)| (w as i8) as i32 * x as i32)
            .sum();
        acc += s as f32 * dw * dx;
    }
    acc
}

/// Four [`dot_q8_0`]s sharing the activation row.
pub fn dot4_q8_0(w: [&[u8]; 4], xq: &[i8], xd: &[f32]) -> [f32; 4] {
    w.map(|w| dot_q8_0(w, xq, xd))
}

/// Quantizes an activation row to int8 with one scale per 32 values (Q8_0 semantics).
#[inline(always)]
pub fn quantize_row(x: &[f32], q: &mut [i8], d: &mut [f32]) {
    for ((xs, qs), dd) in x
        .chunks_exact(QK)
        .zip(q.chunks_exact_mut(QK))
        .zip(d.iter_mut())
    {
        // `a > m ? a : m` rather than `f32::max`, whose NaN rule keeps the loop scalar.
        let amax = xs
            .iter()
            .fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m });
        let scale = amax / 127.0;
        let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        for (qi, xi) in qs.iter_mut().zip(xs) {
            // Round half away from zero, as `roundf` does, without the libm call (x86-64's
            // baseline has no rounding instruction; a truncating conversion vectorises).
            let r = xi * inv;
            *qi = (r + 0.5f32.copysign(r)) as i8;
        }
        *dd = scale;
    }
}
