//! An activation row rounded to int16 per block of 32 (relative error below 2^-15 of the
//! block's largest value): the operand of every int16 kernel of the f32-activation matmul, on
//! x86-64 and aarch64 alike.

use crate::quant::QK;

/// One activation row quantized for the int16 kernels (x86's `gemv_i16`, `gemv_i16_avx2` and
/// `gemm_i16`, aarch64's `neon_units`): int16 values, per-block scales and sums.
#[derive(Default)]
pub struct RowI16 {
    /// `round(x / s)` per block, `k` values.
    pub q: Vec<i16>,
    /// The scale of each block (`amax / 32767`).
    pub s: Vec<f32>,
    /// The sum of each block's f32 values.
    pub sum: Vec<f32>,
}

impl RowI16 {
    /// Quantizes `x` (whole blocks of 32) into `self`, reusing its buffers.
    pub fn quantize(&mut self, x: &[f32]) {
        let nb = x.len() / QK;
        self.q.resize(x.len(), 0);
        self.s.resize(nb, 0.0);
        self.sum.resize(nb, 0.0);
        for (b, (xb, qb)) in x
            .chunks_exact(QK)
            .zip(self.q.chunks_exact_mut(QK))
            .enumerate()
        {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = amax / 32767.0;
            let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
            // Round to nearest by adding and subtracting 1.5 * 2^23 (exact below 2^22): no libm
            // call on the baseline target.
            const MAGIC: f32 = 12_582_912.0;
            for (q, v) in qb.iter_mut().zip(xb) {
                *q = ((v * inv + MAGIC) - MAGIC) as i16;
            }
            self.s[b] = s;
            self.sum[b] = xb.iter().sum();
        }
    }
}
