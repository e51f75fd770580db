//! AVX-512 kernels of the f32-activation matmul ([`super::matmul_f32`]): decoding Q8_0 / Q4_0 /
//! Q4_1 blocks to f32 (the weights of the prefill path), and four dot products that share each
//! activation load.

use std::arch::x86_64::*;

use crate::quant::{Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES, QK};
use crate::DType;

/// Whether these kernels can run here.
pub fn available() -> bool {
    super::multiversion::avx512()
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
                // F16C in this function's instruction set (`half` would check the CPU at run
                // time on every block).
                // SAFETY: a block holds 34 bytes; the load is an unaligned one.
                let d = unsafe { (b.as_ptr() as *const i32).read_unaligned() };
                let d = _mm512_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(d)));
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
                // The scale (and Q4_1's offset) by F16C in this function's instruction set
                // (`half` would check the CPU at run time on every block).
                // SAFETY: a block holds at least 18 bytes; the load is an unaligned one.
                let dm = unsafe { (b.as_ptr() as *const i32).read_unaligned() };
                let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(dm));
                let d = _mm512_broadcastss_ps(dm);
                let m = if dtype == DType::Q4_0 {
                    _mm512_mul_ps(_mm512_set1_ps(-8.0), d)
                } else {
                    _mm512_broadcastss_ps(_mm_movehdup_ps(dm))
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

/// [`dot4`] of four activation rows at once: `out[i][r]` is the dot product of activation row
/// `i` (`x[i * k..]`) with weight row `r` (`w[r * k..]`). Sixteen accumulators share each
/// weight and activation load (eight loads per sixteen multiply-adds, against five per four
/// in [`dot4`]); each pair is summed in the order [`dot4`] sums it, so the results are the same
/// bit for bit.
///
/// # Safety
/// The CPU must have AVX-512F (see [`available`]); `w` and `x` hold at least `4 * k` values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub unsafe fn dot4x4(w: &[f32], x: &[f32], k: usize) -> [[f32; 4]; 4] {
    assert!(
        w.len() >= 4 * k && x.len() >= 4 * k && k.is_multiple_of(16),
        "dot4x4: bad lengths"
    );
    let mut acc = [[_mm512_setzero_ps(); 4]; 4];
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    let mut c = 0;
    while c < k {
        // SAFETY: c + 16 <= k, and rows 0..4 of `w` and `x` hold k values each (asserted).
        unsafe {
            let ws = [
                _mm512_loadu_ps(wp.add(c)),
                _mm512_loadu_ps(wp.add(k + c)),
                _mm512_loadu_ps(wp.add(2 * k + c)),
                _mm512_loadu_ps(wp.add(3 * k + c)),
            ];
            for (i, a) in acc.iter_mut().enumerate() {
                let xv = _mm512_loadu_ps(xp.add(i * k + c));
                for (r, a) in a.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(ws[r], xv, *a);
                }
            }
        }
        c += 16;
    }
    // Plain loops, not closures: a closure does not inherit this function's instruction set,
    // so the reductions in one would be calls.
    let mut out = [[0f32; 4]; 4];
    for i in 0..4 {
        for r in 0..4 {
            out[i][r] = _mm512_reduce_add_ps(acc[i][r]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_rows_at_once_equal_one_at_a_time_bit_for_bit() {
        if !available() {
            return;
        }
        let k = 96;
        let val = |s: usize| ((s * 2654435761) % 1000) as f32 / 250.0 - 2.0;
        let w: Vec<f32> = (0..4 * k).map(val).collect();
        let x: Vec<f32> = (0..4 * k).map(|i| val(i + 77)).collect();
        // SAFETY: AVX-512 is available (checked); both hold 4 rows of k, k % 16 == 0.
        let all = unsafe { dot4x4(&w, &x, k) };
        for (i, row) in all.iter().enumerate() {
            // SAFETY: as above, with one activation row.
            let one = unsafe { dot4(&w, &x[i * k..(i + 1) * k]) };
            assert_eq!(row.map(f32::to_bits), one.map(f32::to_bits), "row {i}");
            for (r, &v) in row.iter().enumerate() {
                let want: f64 = (0..k)
                    .map(|c| w[r * k + c] as f64 * x[i * k + c] as f64)
                    .sum();
                assert!(
                    (v as f64 - want).abs() < 1e-3,
                    "row {i} col {r}: {v} vs {want}"
                );
            }
        }
    }
}
