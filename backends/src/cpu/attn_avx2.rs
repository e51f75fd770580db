//! Decoder attention over the f16 KV cache on AVX2 with F16C: one query row of one head, keys
//! stored transposed (a row of positions per dimension), values a row of dimensions per
//! position. Scores take eight positions per register over all dimensions; the weighted sum of
//! values takes up to 64 dimensions (eight registers) per pass over the positions. The same
//! operations as the portable loop, eight lanes at a time, with FMA.

use std::arch::x86_64::*;

use half::f16;

use crate::quant::f16_bits_to_f32;

/// Whether this CPU can run the kernel.
pub fn available() -> bool {
    super::multiversion::avx2() && std::is_x86_feature_detected!("f16c")
}

/// Attention of query row `q` (one head of `q.len()` dimensions) over the `len` positions at
/// slots `first..first + len` of `kt` (transposed keys, `cap` positions per dimension) and `v` (values, `hd` per
/// position), into `o`; `s` is scratch for the scores.
///
/// # Safety
/// [`available`] is true; `kt` and `v` hold `q.len() * cap` values with `first + len <= cap`,
/// `s` at least `len` and `o` `q.len()` values; `q.len()` is a multiple of 8.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn attend_row(
    q: &[f32],
    kt: &[f16],
    v: &[f16],
    first: usize,
    len: usize,
    scale: f32,
    s: &mut [f32],
    o: &mut [f32],
) {
    let hd = q.len();
    let cap = kt.len() / hd.max(1);
    assert!(
        first + len <= cap
            && v.len() == kt.len()
            && s.len() >= len
            && o.len() == hd
            && hd.is_multiple_of(8),
        "attend_row: bad lengths"
    );
    // SAFETY: first + len <= cap (asserted): the runs read below stay within each row.
    let (kp, vp) = unsafe {
        (
            (kt.as_ptr() as *const u16).add(first),
            (v.as_ptr() as *const u16).add(first * hd),
        )
    };
    let whole = len / 8 * 8;
    let mut j = 0;
    while j < whole {
        let mut acc = _mm256_setzero_ps();
        for (d, &qd) in q.iter().enumerate() {
            // SAFETY: row d holds cap >= first + len >= first + j + 8 values.
            let k = unsafe { _mm_loadu_si128(kp.add(d * cap + j) as *const __m128i) };
            acc = _mm256_fmadd_ps(_mm256_set1_ps(qd * scale), _mm256_cvtph_ps(k), acc);
        }
        // SAFETY: s holds at least len >= j + 8 values.
        unsafe { _mm256_storeu_ps(s.as_mut_ptr().add(j), acc) };
        j += 8;
    }
    for (j, sj) in s.iter_mut().enumerate().take(len).skip(whole) {
        *sj = q.iter().enumerate().fold(0f32, |a, (d, &qd)| {
            (qd * scale).mul_add(f16_bits_to_f32(kt[d * cap + first + j].to_bits()), a)
        });
    }
    super::nn::softmax_row(&mut s[..len]);
    for c0 in (0..hd).step_by(64) {
        let nc = ((hd - c0) / 8).min(8);
        let mut acc = [_mm256_setzero_ps(); 8];
        for (jj, &w) in s[..len].iter().enumerate() {
            let w = _mm256_set1_ps(w);
            for (c, a) in acc.iter_mut().enumerate().take(nc) {
                // SAFETY: slot first + jj < cap has hd values; c0 + 8 c + 8 <= hd.
                let vv = unsafe { _mm_loadu_si128(vp.add(jj * hd + c0 + 8 * c) as *const __m128i) };
                *a = _mm256_fmadd_ps(w, _mm256_cvtph_ps(vv), *a);
            }
        }
        for (c, a) in acc.iter().enumerate().take(nc) {
            // SAFETY: o holds hd >= c0 + 8 c + 8 values.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr().add(c0 + 8 * c), *a) };
        }
    }
}
