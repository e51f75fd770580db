//! AVX-512 kernels of the f32-activation matmul ([`super::matmul_f32`]): decoding Q8_0 / Q4_0 /
//! Q4_1 blocks to f32, and four dot products that share each activation load.

use std::arch::x86_64::*;

use crate::quant::{Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES, QK};
use crate::DType;

/// Whether these kernels can run here.
pub fn available() -> bool {
    super::multiversion::avx512()
}

#[inline(always)]
fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Decodes one row of `dtype` blocks into `out` (`QK` values per block; `row` holds
/// `out.len() / QK` whole blocks, checked by the caller).
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL (see [`available`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn decode_row(dtype: DType, row: &[u8], out: &mut [f32]) {
    let mask = _mm_set1_epi8(0x0f);
    match dtype {
        DType::Q8_0 => {
            for (b, o) in row.chunks_exact(Q8_0_BYTES).zip(out.chunks_exact_mut(QK)) {
                let d = _mm512_set1_ps(f16_at(b, 0));
                // SAFETY: each block holds 2 + 32 bytes and each output chunk 32 f32 values; the
                // loads and stores are unaligned ones.
                unsafe {
                    let q0 = _mm_loadu_si128(b.as_ptr().add(2) as *const __m128i);
                    let q1 = _mm_loadu_si128(b.as_ptr().add(18) as *const __m128i);
                    let f0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0));
                    let f1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1));
                    _mm512_storeu_ps(o.as_mut_ptr(), _mm512_mul_ps(f0, d));
                    _mm512_storeu_ps(o.as_mut_ptr().add(16), _mm512_mul_ps(f1, d));
                }
            }
        }
        DType::Q4_0 | DType::Q4_1 => {
            let (bytes, qs) = if dtype == DType::Q4_0 {
                (Q4_0_BYTES, 2)
            } else {
                (Q4_1_BYTES, 4)
            };
            for (b, o) in row.chunks_exact(bytes).zip(out.chunks_exact_mut(QK)) {
                let d = _mm512_set1_ps(f16_at(b, 0));
                let m = if dtype == DType::Q4_0 {
                    _mm512_set1_ps(-8.0 * f16_at(b, 0))
                } else {
                    _mm512_set1_ps(f16_at(b, 2))
                };
                // SAFETY: each block holds its header and 16 bytes of nibbles, each output chunk
                // 32 f32 values; the loads and stores are unaligned ones.
                unsafe {
                    let q = _mm_loadu_si128(b.as_ptr().add(qs) as *const __m128i);
                    let lo = _mm_and_si128(q, mask);
                    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
                    let f0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo));
                    let f1 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi));
                    _mm512_storeu_ps(o.as_mut_ptr(), _mm512_fmadd_ps(f0, d, m));
                    _mm512_storeu_ps(o.as_mut_ptr().add(16), _mm512_fmadd_ps(f1, d, m));
                }
            }
        }
        _ => unreachable!("the caller checks the type"),
    }
}

/// Dot products of four rows `w[r * k..(r + 1) * k]` with `x` (`k` values, a multiple of 16).
///
/// # Safety
/// The CPU must have AVX-512F (see [`available`]); `w` holds at least `4 * x.len()` values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub unsafe fn dot4(w: &[f32], x: &[f32]) -> [f32; 4] {
    let k = x.len();
    assert!(
        w.len() >= 4 * k && k.is_multiple_of(16),
        "dot4: bad lengths"
    );
    let (mut a0, mut a1, mut a2, mut a3) = (
        _mm512_setzero_ps(),
        _mm512_setzero_ps(),
        _mm512_setzero_ps(),
        _mm512_setzero_ps(),
    );
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    let mut c = 0;
    while c < k {
        // SAFETY: c + 16 <= k, and row r's values r * k + c .. + 16 are inside `w` (asserted).
        unsafe {
            let xv = _mm512_loadu_ps(xp.add(c));
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(wp.add(c)), xv, a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(wp.add(k + c)), xv, a1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(wp.add(2 * k + c)), xv, a2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(wp.add(3 * k + c)), xv, a3);
        }
        c += 16;
    }
    [
        _mm512_reduce_add_ps(a0),
        _mm512_reduce_add_ps(a1),
        _mm512_reduce_add_ps(a2),
        _mm512_reduce_add_ps(a3),
    ]
}

/// The scale `d` and offset `m` of a block as f32 vectors (`m = -8 d` for Q4_0, 0 for Q8_0).
///
/// # Safety
/// AVX-512F and F16C; `b` points at a block header (2 bytes, 4 for Q4_1).
#[inline(always)]
unsafe fn scales(dtype: DType, b: *const u8) -> (__m512, __m512) {
    // SAFETY: the header's 2 or 4 bytes are readable (caller); unaligned reads.
    unsafe {
        if dtype == DType::Q4_1 {
            let h = _mm_cvtph_ps(_mm_cvtsi32_si128((b as *const i32).read_unaligned()));
            (
                _mm512_broadcastss_ps(h),
                _mm512_broadcastss_ps(_mm_movehdup_ps(h)),
            )
        } else {
            let raw = (b as *const u16).read_unaligned() as i32;
            let d = _mm512_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(raw)));
            let m = if dtype == DType::Q4_0 {
                _mm512_mul_ps(d, _mm512_set1_ps(-8.0))
            } else {
                _mm512_setzero_ps()
            };
            (d, m)
        }
    }
}

/// One block of 32 decoded to two vectors of 16 f32 values.
///
/// # Safety
/// AVX-512F/BW and F16C; `b` points at a whole block of `dtype`.
#[inline(always)]
unsafe fn block(dtype: DType, b: *const u8) -> (__m512, __m512) {
    // SAFETY: the block's bytes are readable (caller); unaligned reads.
    unsafe {
        let (d, m) = scales(dtype, b);
        let (q0, q1) = if dtype == DType::Q8_0 {
            let q0 = _mm_loadu_si128(b.add(2) as *const __m128i);
            let q1 = _mm_loadu_si128(b.add(18) as *const __m128i);
            (_mm512_cvtepi8_epi32(q0), _mm512_cvtepi8_epi32(q1))
        } else {
            let off = if dtype == DType::Q4_1 { 4 } else { 2 };
            let q = _mm_loadu_si128(b.add(off) as *const __m128i);
            let mask = _mm_set1_epi8(0x0f);
            let lo = _mm_and_si128(q, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
            (_mm512_cvtepu8_epi32(lo), _mm512_cvtepu8_epi32(hi))
        };
        (
            _mm512_fmadd_ps(_mm512_cvtepi32_ps(q0), d, m),
            _mm512_fmadd_ps(_mm512_cvtepi32_ps(q1), d, m),
        )
    }
}

/// Dot products of four rows of `dtype` blocks (`w`: 4 rows of `row_bytes`) with `x`, decoding
/// as it goes: the kernel for one activation row, where decoding into a buffer would cost a
/// store and a load per value for a single use.
///
/// # Safety
/// AVX-512F/BW/VL and F16C (see [`available`]); `w` holds 4 rows of `x.len() / 32` blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot4_blocks(dtype: DType, w: &[u8], row_bytes: usize, x: &[f32]) -> [f32; 4] {
    let bb = row_bytes / (x.len() / QK).max(1);
    assert!(
        w.len() >= 4 * row_bytes && x.len().is_multiple_of(QK),
        "dot4_blocks: bad lengths"
    );
    let mut acc = [_mm512_setzero_ps(); 4];
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    for blk in 0..x.len() / QK {
        // SAFETY: block `blk` of each of the 4 rows and x[32 blk..32 blk + 32] are in bounds
        // (asserted above).
        unsafe {
            let x0 = _mm512_loadu_ps(xp.add(blk * QK));
            let x1 = _mm512_loadu_ps(xp.add(blk * QK + 16));
            for (r, a) in acc.iter_mut().enumerate() {
                let (w0, w1) = block(dtype, wp.add(r * row_bytes + blk * bb));
                *a = _mm512_fmadd_ps(w1, x1, _mm512_fmadd_ps(w0, x0, *a));
            }
        }
    }
    acc.map(|a| _mm512_reduce_add_ps(a))
}
