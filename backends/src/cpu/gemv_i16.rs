//! The one-row (token decoding) kernel of the f32-activation matmul on AVX-512 VNNI: the
//! activation row is quantized to int16 per block of 32 (relative error below 2^-15, against
//! 2^-8 for int8), the stored weight block is widened to int16 in registers, and `vpdpwssd`
//! multiplies them. Per block and weight row that is about seven vector instructions, against
//! about sixteen for decoding to f32 and multiplying in f32; decoding is bound by those
//! instructions on cores whose two hyper-threads share one vector unit.
//!
//! For a block with scale `d` and offset `m` (`w = d q + m`; `m = -8d` for Q4_0, 0 for Q8_0)
//! and activations `x ~ s xq`: `sum w x = d s sum(q xq) + m sum(x)`, with `sum(x)` of the f32
//! activations.

use std::arch::x86_64::*;

use crate::quant::QK;
use crate::DType;

/// Whether this CPU can run the kernel.
pub fn available() -> bool {
    super::gemm_vnni::available() && super::multiversion::avx512()
}

/// One activation row quantized for [`dot4`]: int16 values, per-block scales and sums.
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

use crate::quant::f16_bits_to_f32 as f16;

/// Dot products of four rows of `dtype` blocks (`w`: 4 rows of `row_bytes`) with the quantized
/// activation row `x`.
///
/// # Safety
/// [`available`] is true; `w` holds 4 rows of `x.q.len() / 32` blocks of `dtype` (Q8_0, Q4_0
/// or Q4_1), and `x` holds one quantized row.
pub unsafe fn dot4(dtype: DType, w: &[u8], row_bytes: usize, x: &RowI16) -> [f32; 4] {
    let nb = x.s.len();
    assert!(
        x.q.len() == nb * QK && x.sum.len() == nb && w.len() >= 4 * row_bytes,
        "dot4: bad lengths"
    );
    // SAFETY: the caller guarantees the CPU features; lengths are asserted above.
    unsafe {
        match dtype {
            DType::Q8_0 => dot4_t::<Q8_0>(w, row_bytes, x),
            DType::Q4_0 => dot4_t::<Q4_0>(w, row_bytes, x),
            DType::Q4_1 => dot4_t::<Q4_1>(w, row_bytes, x),
            // The caller runs this kernel for the three types above only
            // (`matmul_f32::int16_kernel`).
            DType::F32
            | DType::F16
            | DType::BF16
            | DType::Q5_0
            | DType::Q5_1
            | DType::Q2_K
            | DType::Q3_K
            | DType::Q4_K
            | DType::Q5_K
            | DType::Q6_K
            | DType::IQ4_NL
            | DType::IQ4_XS => unreachable!("dot4 of {dtype} weights"),
        }
    }
}

/// Row groups of four ahead whose weights are prefetched.
const PREFETCH_GROUPS: usize = 2;

const Q8_0: u8 = 0;
const Q4_0: u8 = 1;
const Q4_1: u8 = 2;

/// One block of row `b` as 32 int16 values, with its scale `d` and offset `m`.
///
/// # Safety
/// AVX-512BW; `b` points at a whole block of type `T`.
#[inline(always)]
unsafe fn block<const T: u8>(
    b: *const u8,
    shifts: __m512i,
    nibble: __m512i,
) -> (__m512i, f32, f32) {
    // SAFETY: the block's bytes are readable (caller); unaligned loads.
    unsafe {
        let d = f16((b as *const u16).read_unaligned());
        if T == Q8_0 {
            let q = _mm512_cvtepi8_epi16(_mm256_loadu_si256(b.add(2) as *const __m256i));
            return (q, d, 0.0);
        }
        let (at, m) = if T == Q4_1 {
            (4, f16((b.add(2) as *const u16).read_unaligned()))
        } else {
            (2, -8.0 * d)
        };
        let q = _mm256_broadcastsi128_si256(_mm_loadu_si128(b.add(at) as *const __m128i));
        let q = _mm512_srlv_epi16(_mm512_cvtepu8_epi16(q), shifts);
        (_mm512_and_si512(q, nibble), d, m)
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn dot4_t<const T: u8>(w: &[u8], row_bytes: usize, x: &RowI16) -> [f32; 4] {
    let nb = x.s.len();
    let bb = row_bytes / nb.max(1);
    let (mut a0, mut a1, mut a2, mut a3) = (
        _mm512_setzero_ps(),
        _mm512_setzero_ps(),
        _mm512_setzero_ps(),
        _mm512_setzero_ps(),
    );
    let mut off = [0f32; 4];
    // Low nibbles in lanes 0..15, high nibbles in lanes 16..31.
    let shifts = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
    let nibble = _mm512_set1_epi16(0x0f);
    let zero = _mm512_setzero_si512();
    let wp = w.as_ptr();
    for blk in 0..nb {
        // SAFETY: block `blk` of each of the 4 rows and x.q[32 blk..32 blk + 32] are in bounds
        // (asserted by `dot4`).
        unsafe {
            // Prefetch the weights two row groups ahead, spread over this group's blocks.
            let ahead = (PREFETCH_GROUPS * 4 * row_bytes + blk * 4 * row_bytes / nb) & !63;
            _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(ahead) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(ahead + 64) as *const i8);
            let xv = _mm512_loadu_si512(x.q.as_ptr().add(blk * QK) as *const _);
            let (s, sum) = (x.s[blk], x.sum[blk]);
            let b = wp.add(blk * bb);
            let (q0, d0, m0) = block::<T>(b, shifts, nibble);
            let (q1, d1, m1) = block::<T>(b.add(row_bytes), shifts, nibble);
            let (q2, d2, m2) = block::<T>(b.add(2 * row_bytes), shifts, nibble);
            let (q3, d3, m3) = block::<T>(b.add(3 * row_bytes), shifts, nibble);
            let p0 = _mm512_cvtepi32_ps(_mm512_dpwssd_epi32(zero, q0, xv));
            let p1 = _mm512_cvtepi32_ps(_mm512_dpwssd_epi32(zero, q1, xv));
            let p2 = _mm512_cvtepi32_ps(_mm512_dpwssd_epi32(zero, q2, xv));
            let p3 = _mm512_cvtepi32_ps(_mm512_dpwssd_epi32(zero, q3, xv));
            a0 = _mm512_fmadd_ps(p0, _mm512_set1_ps(d0 * s), a0);
            a1 = _mm512_fmadd_ps(p1, _mm512_set1_ps(d1 * s), a1);
            a2 = _mm512_fmadd_ps(p2, _mm512_set1_ps(d2 * s), a2);
            a3 = _mm512_fmadd_ps(p3, _mm512_set1_ps(d3 * s), a3);
            if T != Q8_0 {
                off[0] += m0 * sum;
                off[1] += m1 * sum;
                off[2] += m2 * sum;
                off[3] += m3 * sum;
            }
        }
    }
    [
        _mm512_reduce_add_ps(a0) + off[0],
        _mm512_reduce_add_ps(a1) + off[1],
        _mm512_reduce_add_ps(a2) + off[2],
        _mm512_reduce_add_ps(a3) + off[3],
    ]
}
