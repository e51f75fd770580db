//! AVX-512 attention of one query row against an f16 KV cache (keys transposed): decoding reads
//! the whole cache for every token, so halving its bytes halves the time at long contexts.

use std::arch::x86_64::*;

use half::f16;

/// Whether this CPU can run the kernel.
pub fn available() -> bool {
    super::multiversion::avx512() && is_x86_feature_detected!("f16c")
}

/// Scores of `q` (scaled) against positions `0..len` of `kt` (`[q.len()][cap]`), then softmax,
/// then `o = sum_j s_j v[j]` (`v`: `[cap][q.len()]`, `q.len()` a multiple of 16).
///
/// # Safety
/// [`available`] is true; `kt` and `v` hold `q.len() * cap` values with `len <= cap`, `s` at
/// least `len` and `o` `q.len()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn attend_row(
    q: &[f32],
    kt: &[f16],
    v: &[f16],
    len: usize,
    scale: f32,
    s: &mut [f32],
    o: &mut [f32],
) {
    let hd = q.len();
    let cap = kt.len() / hd;
    assert!(
        len <= cap
            && v.len() == kt.len()
            && s.len() >= len
            && o.len() == hd
            && hd.is_multiple_of(16),
        "attend_row: bad lengths"
    );
    let (kp, vp) = (kt.as_ptr() as *const u16, v.as_ptr() as *const u16);
    // Scores, 16 positions at a time: the accumulator stays in a register over all dimensions.
    let mut j = 0;
    while j < len {
        let mask: __mmask16 = if len - j >= 16 {
            0xffff
        } else {
            (1u16 << (len - j)) - 1
        };
        let mut acc = _mm512_setzero_ps();
        for (d, &qd) in q.iter().enumerate() {
            // SAFETY: row d holds cap >= len values; the masked load reads only j..len.
            let k = unsafe { _mm256_maskz_loadu_epi16(mask, kp.add(d * cap + j) as *const i16) };
            acc = _mm512_fmadd_ps(_mm512_set1_ps(qd * scale), _mm512_cvtph_ps(k), acc);
        }
        // SAFETY: s holds at least len values; the masked store writes only j..len.
        unsafe { _mm512_mask_storeu_ps(s.as_mut_ptr().add(j), mask, acc) };
        j += 16;
    }
    super::nn::softmax_row(&mut s[..len]);
    // o = sum_j s_j v_j: up to 64 dimensions (four registers) per pass over the positions.
    for c0 in (0..hd).step_by(64) {
        let nc = ((hd - c0) / 16).min(4);
        let mut acc = [_mm512_setzero_ps(); 4];
        for (jj, &w) in s[..len].iter().enumerate() {
            let w = _mm512_set1_ps(w);
            for (c, a) in acc.iter_mut().enumerate().take(nc) {
                // SAFETY: position jj < cap has hd values; c0 + 16 c + 16 <= hd.
                let vv =
                    unsafe { _mm256_loadu_si256(vp.add(jj * hd + c0 + 16 * c) as *const __m256i) };
                *a = _mm512_fmadd_ps(w, _mm512_cvtph_ps(vv), *a);
            }
        }
        for (c, a) in acc.iter().enumerate().take(nc) {
            // SAFETY: o holds hd values and c0 + 16 c + 16 <= hd.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr().add(c0 + 16 * c), *a) };
        }
    }
}
