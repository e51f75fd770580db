//! The few-row (token decoding) kernel of the f32-activation matmul on AVX2, for every block
//! type a llama.cpp Q4_K_M, Q5_K_M or Q6_K file holds: the activation row is quantized to int16
//! per block of 32 ([`RowI16`]: relative error below 2^-15 of the block's largest value), each
//! stored weight block is widened to int16 in registers, and `vpmaddwd` multiplies them, eight
//! int32 sums per block that one FMA scales into the row's f32 accumulator. No weight is decoded
//! to memory and the stored blocks are read once, in place.
//!
//! Every type is seen as units of 32 values `w = d q + m` ([`super::units_avx2`]); then
//! `sum w x = d s sum(q xq) + m sum(x)` with `s` the activation block's scale.

use std::arch::x86_64::*;

use super::row_i16::RowI16;
pub use super::units_avx2::{available, decodes};
use super::units_avx2::{by_layout, Layout};
use crate::quant::QK;
use crate::DType;

/// Dot products of four rows of `dtype` blocks (`w`: 4 rows of `row_bytes`) with the quantized
/// activation row `x`.
///
/// # Safety
/// [`available`] is true; [`decodes`] is true for `dtype`; `w` holds 4 rows of
/// `x.q.len()` values of `dtype`, and `x` one quantized row.
pub unsafe fn dot4(dtype: DType, w: &[u8], row_bytes: usize, x: &RowI16) -> [f32; 4] {
    let nb = x.s.len();
    assert!(
        x.q.len() == nb * QK
            && x.sum.len() == nb
            && w.len() >= 4 * row_bytes
            && row_bytes * dtype.block_len() == nb * QK * dtype.block_bytes(),
        "dot4: bad lengths"
    );
    // SAFETY: the caller guarantees the CPU features; lengths are asserted above.
    unsafe { by_layout!(dtype, dot4_t(w, row_bytes, x)) }
}

/// [`dot4`] of two activation rows at once: each unit is read and widened once for both (a
/// prompt of a few tokens, several conversations stepped together), and each row's sums are
/// the ones [`dot4`] gives it alone, bit for bit (the same operations in the same order).
///
/// # Safety
/// As [`dot4`], for both rows.
pub unsafe fn dot4x2(dtype: DType, w: &[u8], row_bytes: usize, x: [&RowI16; 2]) -> [[f32; 4]; 2] {
    let nb = x[0].s.len();
    assert!(
        x.iter()
            .all(|x| x.q.len() == nb * QK && x.s.len() == nb && x.sum.len() == nb)
            && w.len() >= 4 * row_bytes
            && row_bytes * dtype.block_len() == nb * QK * dtype.block_bytes(),
        "dot4x2: bad lengths"
    );
    // SAFETY: the caller guarantees the CPU features; lengths are asserted above.
    unsafe { by_layout!(dtype, dot4x2_t(w, row_bytes, x)) }
}

/// Row groups of four ahead whose weights are prefetched: the four rows are four streams, more
/// than the hardware prefetcher follows far enough ahead.
const PREFETCH_GROUPS: usize = 2;

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4_t<T: Layout>(w: &[u8], row_bytes: usize, x: &RowI16) -> [f32; 4] {
    let blocks = row_bytes / T::BYTES;
    let (mut a0, mut a1, mut a2, mut a3) = (
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
    );
    let mut off = [0f32; 4];
    let wp = w.as_ptr();
    for blk in 0..blocks {
        // Prefetches never fault (the address may lie past the weights): a safe intrinsic
        // in this AVX2 function.
        let ahead = PREFETCH_GROUPS * 4 * row_bytes + blk * 4 * T::BYTES;
        let mut l = 0;
        while l < 4 * T::BYTES {
            _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(ahead + l) as *const i8);
            l += 64;
        }
        for u in 0..T::UNITS {
            let b = blk * T::UNITS + u;
            // SAFETY: block `blk` of each of the 4 rows, and x.q[32 b..32 b + 32], are in
            // bounds (asserted by `dot4`).
            unsafe {
                let xp = x.q.as_ptr().add(b * QK);
                let xlo = _mm256_loadu_si256(xp as *const __m256i);
                let xhi = _mm256_loadu_si256(xp.add(16) as *const __m256i);
                let (s, sum) = (*x.s.get_unchecked(b), *x.sum.get_unchecked(b));
                let p = wp.add(blk * T::BYTES);
                macro_rules! row {
                    ($r:literal, $a:ident) => {
                        let un = T::unit(p.add($r * row_bytes), u);
                        let q = _mm256_add_epi32(
                            _mm256_madd_epi16(un.lo, xlo),
                            _mm256_madd_epi16(un.hi, xhi),
                        );
                        $a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), _mm256_set1_ps(un.d * s), $a);
                        off[$r] += un.m * sum;
                    };
                }
                row!(0, a0);
                row!(1, a1);
                row!(2, a2);
                row!(3, a3);
            }
        }
    }
    let mut out = [0f32; 4];
    for (o, (a, m)) in out.iter_mut().zip([a0, a1, a2, a3].iter().zip(off)) {
        let mut v = [0f32; 8];
        // SAFETY: an unaligned store of 8 floats into v.
        unsafe { _mm256_storeu_ps(v.as_mut_ptr(), *a) };
        *o = v.iter().sum::<f32>() + m;
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4x2_t<T: Layout>(w: &[u8], row_bytes: usize, x: [&RowI16; 2]) -> [[f32; 4]; 2] {
    let blocks = row_bytes / T::BYTES;
    let z = _mm256_setzero_ps();
    let (mut a0, mut a1, mut a2, mut a3) = (z, z, z, z);
    let (mut b0, mut b1, mut b2, mut b3) = (z, z, z, z);
    let mut off = [[0f32; 4]; 2];
    let wp = w.as_ptr();
    for blk in 0..blocks {
        let ahead = PREFETCH_GROUPS * 4 * row_bytes + blk * 4 * T::BYTES;
        let mut l = 0;
        while l < 4 * T::BYTES {
            _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(ahead + l) as *const i8);
            l += 64;
        }
        for u in 0..T::UNITS {
            let b = blk * T::UNITS + u;
            // SAFETY: block `blk` of each of the 4 rows, and both rows' q[32 b..32 b + 32], are
            // in bounds (asserted by `dot4x2`).
            unsafe {
                let (p0, p1) = (x[0].q.as_ptr().add(b * QK), x[1].q.as_ptr().add(b * QK));
                let xl0 = _mm256_loadu_si256(p0 as *const __m256i);
                let xh0 = _mm256_loadu_si256(p0.add(16) as *const __m256i);
                let xl1 = _mm256_loadu_si256(p1 as *const __m256i);
                let xh1 = _mm256_loadu_si256(p1.add(16) as *const __m256i);
                let (s0, sum0) = (*x[0].s.get_unchecked(b), *x[0].sum.get_unchecked(b));
                let (s1, sum1) = (*x[1].s.get_unchecked(b), *x[1].sum.get_unchecked(b));
                let p = wp.add(blk * T::BYTES);
                macro_rules! row {
                    ($r:literal, $a:ident, $b:ident) => {
                        let un = T::unit(p.add($r * row_bytes), u);
                        let q0 = _mm256_add_epi32(
                            _mm256_madd_epi16(un.lo, xl0),
                            _mm256_madd_epi16(un.hi, xh0),
                        );
                        $a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q0), _mm256_set1_ps(un.d * s0), $a);
                        off[0][$r] += un.m * sum0;
                        let q1 = _mm256_add_epi32(
                            _mm256_madd_epi16(un.lo, xl1),
                            _mm256_madd_epi16(un.hi, xh1),
                        );
                        $b = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q1), _mm256_set1_ps(un.d * s1), $b);
                        off[1][$r] += un.m * sum1;
                    };
                }
                row!(0, a0, b0);
                row!(1, a1, b1);
                row!(2, a2, b2);
                row!(3, a3, b3);
            }
        }
    }
    let mut out = [[0f32; 4]; 2];
    for (o, (acc, off)) in out
        .iter_mut()
        .zip([[a0, a1, a2, a3], [b0, b1, b2, b3]].iter().zip(off))
    {
        for (o, (a, m)) in o.iter_mut().zip(acc.iter().zip(off)) {
            let mut v = [0f32; 8];
            // SAFETY: an unaligned store of 8 floats into v.
            unsafe { _mm256_storeu_ps(v.as_mut_ptr(), *a) };
            *o = v.iter().sum::<f32>() + m;
        }
    }
    out
}

/// Decodes `row` (whole blocks of `dtype`) into `out` through the same units: each unit's
/// int16 values widened to f32 and `d q + m` in one FMA (for prompts, whose weights are decoded
/// once per four rows and multiplied with every activation row in f32).
///
/// # Safety
/// [`available`] is true; [`decodes`] is true for `dtype`.
pub unsafe fn decode_row(dtype: DType, row: &[u8], out: &mut [f32]) {
    assert!(
        row.len() * dtype.block_len() == out.len() * dtype.block_bytes(),
        "decode_row: {} bytes of {dtype} for {} values",
        row.len(),
        out.len()
    );
    // SAFETY: the caller guarantees the CPU features; lengths are asserted above.
    unsafe { by_layout!(dtype, decode_t(row, out)) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode_t<T: Layout>(row: &[u8], out: &mut [f32]) {
    let (rp, op) = (row.as_ptr(), out.as_mut_ptr());
    for blk in 0..row.len() / T::BYTES {
        for u in 0..T::UNITS {
            // SAFETY: block `blk` lies in `row` and its unit's 32 values in `out` (lengths
            // asserted by `decode_row`).
            unsafe {
                let un = T::unit(rp.add(blk * T::BYTES), u);
                let o = op.add((blk * T::UNITS + u) * QK);
                let (d, m) = (_mm256_set1_ps(un.d), _mm256_set1_ps(un.m));
                for (at, v) in [(0, un.lo), (16, un.hi)] {
                    let a = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(v)));
                    let b =
                        _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(v)));
                    _mm256_storeu_ps(o.add(at), _mm256_fmadd_ps(a, d, m));
                    _mm256_storeu_ps(o.add(at + 8), _mm256_fmadd_ps(b, d, m));
                }
            }
        }
    }
}
