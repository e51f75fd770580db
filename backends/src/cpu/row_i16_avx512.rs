//! [`RowI16::quantize`] with AVX-512: the activation rows of the int16 kernels on x86-64
//! (`gemv_i16`, `gemm_i16`), the same numbers as the portable quantizer.

use std::arch::x86_64::*;

use super::row_i16::RowI16;
use crate::quant::QK;

/// [`RowI16::quantize`] with AVX-512 onto `-qmax..=qmax`
/// ([`activation_max`](super::gemm_i16::activation_max)): the same
/// rounding (to nearest, ties to even), each block's sum added in another order. Sixteen blocks
/// at a time share one division for their scales and fold their maxima and sums together
/// ([`reduce16`]): a block alone took two dependent scalar divisions and two horizontal
/// reductions, most of the function's time.
///
/// # Safety
/// AVX-512F and BW; `x` is whole blocks of 32.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn quantize_row(r: &mut RowI16, x: &[f32], qmax: f32) {
    // Whole blocks only: the values are written block by block into uninitialised capacity.
    assert!(
        x.len().is_multiple_of(QK),
        "quantize_row: {} values",
        x.len()
    );
    let nb = x.len() / QK;
    // Every value is written below, into the kept capacity: resizing zero-filled the values a
    // wider matrix's input added each time the widths alternated (a Gemma 3 block's inputs are
    // 640, 1024 and 2048 wide).
    r.q.clear();
    r.q.reserve(x.len());
    r.s.resize(nb, 0.0);
    r.sum.resize(nb, 0.0);
    let p = x.as_ptr();
    let mut inv = [0f32; 16];
    for g in (0..nb / 16 * 16).step_by(16) {
        // SAFETY: blocks g..g + 16 lie in x, their scales and sums in r.s and r.sum.
        unsafe {
            let mut mx = [_mm512_setzero_ps(); 16];
            let mut sm = [_mm512_setzero_ps(); 16];
            for b in 0..16 {
                let at = p.add((g + b) * QK);
                let (lo, hi) = (_mm512_loadu_ps(at), _mm512_loadu_ps(at.add(16)));
                mx[b] = _mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi));
                sm[b] = _mm512_add_ps(lo, hi);
            }
            let s = _mm512_div_ps(reduce16::<true>(&mx), _mm512_set1_ps(qmax));
            let positive = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(s, _mm512_setzero_ps());
            let iv = _mm512_maskz_div_ps(positive, _mm512_set1_ps(1.0), s);
            _mm512_storeu_ps(r.s.as_mut_ptr().add(g), s);
            _mm512_storeu_ps(r.sum.as_mut_ptr().add(g), reduce16::<false>(&sm));
            _mm512_storeu_ps(inv.as_mut_ptr(), iv);
            for (b, &iv) in inv.iter().enumerate() {
                quantize_block(r, p, g + b, _mm512_set1_ps(iv));
            }
        }
    }
    for b in nb / 16 * 16..nb {
        // SAFETY: block b's 32 values lie in x, its scale and sum in r.s and r.sum.
        unsafe {
            let at = p.add(b * QK);
            let (lo, hi) = (_mm512_loadu_ps(at), _mm512_loadu_ps(at.add(16)));
            let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
            let s = amax / qmax;
            quantize_block(r, p, b, _mm512_set1_ps(if s > 0.0 { 1.0 / s } else { 0.0 }));
            *r.s.get_unchecked_mut(b) = s;
            *r.sum.get_unchecked_mut(b) = _mm512_reduce_add_ps(_mm512_add_ps(lo, hi));
        }
    }
    // SAFETY: the loops above wrote blocks 0..nb, all of x.len() values, within the capacity
    // reserved for them.
    unsafe { r.q.set_len(x.len()) };
}

/// Block `b` of the row at `p` times `inv`, rounded to int16 into `r.q`.
///
/// # Safety
/// AVX-512F and BW; block `b` lies in the row and in `r.q`'s capacity.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_block(r: &mut RowI16, p: *const f32, b: usize, inv: __m512) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let at = p.add(b * QK);
        let ql = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(at), inv));
        let qh = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(at.add(16)), inv));
        // One pack and one permute (narrowing stores, `vpmovdw`, were half the function's
        // time): a pack interleaves the two halves by 64 bits per 128-bit lane.
        let packed = _mm512_packs_epi32(ql, qh);
        let order = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7);
        let q = _mm512_permutexvar_epi64(order, packed);
        _mm512_storeu_si512(r.q.as_mut_ptr().add(b * QK) as *mut _, q);
    }
}

/// Lane `i` of the result is the maximum (`MAX`) or the sum of `v[i]`'s 16 lanes: unpacks
/// within 128-bit lanes, then 128-bit lane shuffles, as `gemv_i16::sum16` does for int32.
///
/// # Safety
/// AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn reduce16<const MAX: bool>(v: &[__m512; 16]) -> __m512 {
    let op = |a: __m512, b: __m512| {
        if MAX {
            _mm512_max_ps(a, b)
        } else {
            _mm512_add_ps(a, b)
        }
    };
    let t: [__m512; 8] = std::array::from_fn(|i| {
        let (a, b) = (v[2 * i], v[2 * i + 1]);
        op(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b))
    });
    let u: [__m512; 4] = std::array::from_fn(|i| {
        let (a, b) = (_mm512_castps_pd(t[2 * i]), _mm512_castps_pd(t[2 * i + 1]));
        op(
            _mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)),
        )
    });
    let half = |a: __m512, b: __m512| {
        op(
            _mm512_shuffle_f32x4::<0x88>(a, b),
            _mm512_shuffle_f32x4::<0xdd>(a, b),
        )
    };
    half(half(u[0], u[1]), half(u[2], u[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_avx512_quantizer_rounds_as_the_scalar_one() {
        if !super::super::x86::runs_here(
            super::super::gemm_i16::available(),
            "the AVX-512 activation quantizer",
        ) {
            return;
        }
        // 18 blocks (one group of 16 and two alone), 48 (three groups); a zero block, ties
        // at .5 after scaling, a NaN-free spread of magnitudes.
        for k in [576usize, 1536] {
            let mut x: Vec<f32> = (0..k)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 10f32.powi((i % 5) as i32 - 2))
                .collect();
            x[32..64].fill(0.0);
            x[64..96]
                .iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = i as f32 * 0.5);
            let (mut want, mut got) = (RowI16::default(), RowI16::default());
            want.quantize(&x);
            // A row reused after a wider and after a narrower one (its capacity kept).
            let other: Vec<f32> = (0..2048).map(|i| i as f32 * 1e-3 - 1.0).collect();
            for before in [&other[..], &other[..64]] {
                // SAFETY: AVX-512 was detected; the rows are whole blocks.
                unsafe { quantize_row(&mut got, before, 32767.0) };
                assert_eq!(got.q.len(), before.len());
                // SAFETY: as above.
                unsafe { quantize_row(&mut got, &x, 32767.0) };
            }
            assert_eq!(got.q, want.q, "k {k}: values");
            assert_eq!(got.s, want.s, "k {k}: scales");
            for (b, (g, w)) in got.sum.iter().zip(&want.sum).enumerate() {
                let scale: f32 = x[b * QK..(b + 1) * QK].iter().map(|v| v.abs()).sum();
                assert!(
                    (g - w).abs() <= 1e-6 * scale,
                    "k {k} block {b}: sum {g} vs {w}"
                );
            }
        }
    }
}
