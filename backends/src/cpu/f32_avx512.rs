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

/// Blocks whose scales are converted together (one F16C conversion of sixteen).
pub(super) const SCALE_GROUP: usize = 16;

/// Bytes per block and the offset of its quants, for the types these kernels decode.
pub(super) fn layout(dtype: DType) -> (usize, usize) {
    match dtype {
        DType::Q8_0 => (Q8_0_BYTES, 2),
        DType::Q4_0 => (Q4_0_BYTES, 2),
        DType::Q4_1 => (Q4_1_BYTES, 4),
        _ => unreachable!("the caller checks the type"),
    }
}

/// The scales `d` and offsets `m` (`w = d q + m`; Q4_0's `m` is `-8 d`) of the `n <= 16`
/// blocks of `bytes` bytes at `blocks`, as f32: one gather and one F16C conversion for all,
/// then each is broadcast from memory (a load, not a shuffle on the vector ports).
///
/// # Safety
/// AVX-512F; `blocks` points at `n` whole blocks.
#[inline(always)]
pub(super) unsafe fn scales(
    dtype: DType,
    blocks: *const u8,
    bytes: usize,
    n: usize,
) -> ([f32; SCALE_GROUP], [f32; SCALE_GROUP]) {
    let (mut d, mut m) = ([0f32; SCALE_GROUP], [0f32; SCALE_GROUP]);
    // SAFETY: the gather reads the first four bytes of each of the n blocks (the mask leaves
    // the lanes past n unread); each array holds sixteen values; unaligned stores.
    unsafe {
        let at = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(bytes as i32),
        );
        let lanes = if n >= SCALE_GROUP {
            !0
        } else {
            (1u16 << n) - 1
        };
        // Each lane: the block's scale in its low 16 bits, Q4_1's offset in its high ones.
        let dm = _mm512_mask_i32gather_epi32::<1>(
            _mm512_setzero_si512(),
            lanes,
            at,
            blocks as *const i32,
        );
        let dv = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dm));
        let mv = match dtype {
            DType::Q4_1 => _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dm, 16))),
            // Q4_0 stores q + 8: w = d q - 8 d (exact: a power of two times d).
            _ => _mm512_mul_ps(_mm512_set1_ps(-8.0), dv),
        };
        _mm512_storeu_ps(d.as_mut_ptr(), dv);
        _mm512_storeu_ps(m.as_mut_ptr(), mv);
    }
    (d, m)
}

/// The values 0..16, the quants a 4-bit block's table is indexed by.
///
/// # Safety
/// The CPU must have AVX-512F.
#[inline(always)]
pub(super) unsafe fn iota() -> __m512 {
    // SAFETY: AVX-512F (the caller's contract); a register-only operation.
    unsafe {
        _mm512_setr_ps(
            0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
        )
    }
}

/// One block at `b` decoded to its 32 f32 weights (two vectors), with scale `d` and offset
/// `m`. A 4-bit block is a 16-entry table `d q + m` looked up with each byte's nibbles as
/// indices: five vector instructions, against thirteen widening and converting every nibble,
/// and each entry is the same fused multiply-add of the same values.
///
/// # Safety
/// AVX-512F/BW; `b` points at a whole block of `dtype`, whose quants start at `qs`.
#[inline(always)]
pub(super) unsafe fn block(
    dtype: DType,
    b: *const u8,
    qs: usize,
    d: f32,
    m: f32,
    iota: __m512,
) -> (__m512, __m512) {
    // SAFETY: the block's bytes are readable (caller); unaligned loads.
    unsafe {
        let dv = _mm512_set1_ps(d);
        if dtype == DType::Q8_0 {
            let q0 = _mm_loadu_si128(b.add(2) as *const __m128i);
            let q1 = _mm_loadu_si128(b.add(18) as *const __m128i);
            let f0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0));
            let f1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1));
            return (_mm512_mul_ps(f0, dv), _mm512_mul_ps(f1, dv));
        }
        let table = _mm512_fmadd_ps(iota, dv, _mm512_set1_ps(m));
        // Each lane holds one byte; the permutation reads an index's low four bits, so the
        // low nibble needs no mask.
        let q = _mm512_cvtepu8_epi32(_mm_loadu_si128(b.add(qs) as *const __m128i));
        (
            _mm512_permutexvar_ps(q, table),
            _mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), table),
        )
    }
}

/// Decodes one row of `dtype` blocks into `out` (`QK` values per block; `row` holds
/// `out.len() / QK` whole blocks, asserted), by [`scales`] and [`block`].
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL (see [`available`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub unsafe fn decode_row(dtype: DType, row: &[u8], out: &mut [f32]) {
    let (bytes, qs) = layout(dtype);
    assert!(
        row.len().is_multiple_of(bytes) && row.len() / bytes * QK == out.len(),
        "decode_row: {} bytes of {dtype} for {} values",
        row.len(),
        out.len()
    );
    // SAFETY: AVX-512F is enabled in this function.
    let iota = unsafe { iota() };
    for (blocks, outs) in row
        .chunks(SCALE_GROUP * bytes)
        .zip(out.chunks_mut(SCALE_GROUP * QK))
    {
        let n = blocks.len() / bytes;
        // SAFETY: `blocks` holds n whole blocks; the CPU features are this function's.
        let (d, m) = unsafe { scales(dtype, blocks.as_ptr(), bytes, n) };
        for b in 0..n {
            // SAFETY: block b of this group holds `bytes` bytes and its output chunk 32 f32
            // values (b < n); the stores are unaligned ones.
            unsafe {
                let (lo, hi) = block(dtype, blocks.as_ptr().add(b * bytes), qs, d[b], m[b], iota);
                _mm512_storeu_ps(outs.as_mut_ptr().add(b * QK), lo);
                _mm512_storeu_ps(outs.as_mut_ptr().add(b * QK + 16), hi);
            }
        }
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
    // SAFETY: AVX-512F is enabled in this function.
    unsafe { reduce4([a0, a1, a2, a3]) }
}

/// The sums of four vectors' lanes, by one transposing tree: thirteen instructions for the
/// four, against about eight each alone. [`dot4`] and [`dot4x4`] both reduce by it, so they
/// agree bit for bit.
///
/// # Safety
/// The CPU must have AVX-512F.
#[inline(always)]
pub(super) unsafe fn reduce4(a: [__m512; 4]) -> [f32; 4] {
    // SAFETY: register-only AVX-512F operations (the caller's instruction set).
    unsafe {
        // [a0 lanes 0+2, 1+3 | a1 lanes 0+2, 1+3] (128-bit lanes), the same for a2, a3.
        let s01 = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b01_00_01_00>(a[0], a[1]),
            _mm512_shuffle_f32x4::<0b11_10_11_10>(a[0], a[1]),
        );
        let s23 = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b01_00_01_00>(a[2], a[3]),
            _mm512_shuffle_f32x4::<0b11_10_11_10>(a[2], a[3]),
        );
        // One 128-bit lane per input, then the four values within each lane.
        let t = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(s01, s23),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(s01, s23),
        );
        let t = _mm512_add_ps(t, _mm512_permute_ps::<0b01_00_11_10>(t));
        let t = _mm512_add_ps(t, _mm512_permute_ps::<0b10_11_00_01>(t));
        let mut v = [0f32; 16];
        _mm512_storeu_ps(v.as_mut_ptr(), t);
        [v[0], v[4], v[8], v[12]]
    }
}

/// [`dot4`] of four activation rows at once: `out[i][r]` is the dot product of activation row
/// `i` (`x[i * k..]`) with weight row `r` (`w[r * k..]`). Sixteen accumulators share each
/// weight and activation load (eight loads per sixteen multiply-adds, against five per four
/// in [`dot4`]); each pair is summed in the order [`dot4`] sums it (lane by lane, then
/// [`reduce4`]), so the results are the same bit for bit.
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
    // SAFETY: AVX-512F is enabled in this function.
    unsafe {
        [
            reduce4(acc[0]),
            reduce4(acc[1]),
            reduce4(acc[2]),
            reduce4(acc[3]),
        ]
    }
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
