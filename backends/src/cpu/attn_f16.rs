//! AVX-512 attention of one query row against an f16 KV cache (keys transposed): decoding reads
//! the whole cache for every token, so halving its bytes halves the time at long contexts.

use std::arch::x86_64::*;

use half::f16;

/// Whether this CPU can run the kernel.
pub fn available() -> bool {
    super::multiversion::avx512() && is_x86_feature_detected!("f16c")
}

/// Scores of `q` (scaled) against slots `first..first + len` of `kt` (`[q.len()][cap]`), then softmax,
/// then `o = sum_j s_j v[j]` (`v`: `[cap][q.len()]`, `q.len()` a multiple of 16).
///
/// # Safety
/// [`available`] is true; `kt` and `v` hold `q.len() * cap` values with `first + len <= cap`,
/// `s` at least `len` and `o` `q.len()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
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
    let cap = kt.len() / hd;
    assert!(
        first + len <= cap
            && v.len() == kt.len()
            && s.len() >= len
            && o.len() == hd
            && hd.is_multiple_of(16),
        "attend_row: bad lengths"
    );
    // SAFETY: first + len <= cap (asserted): the runs read below stay within each row.
    let (kp, vp) = unsafe {
        (
            (kt.as_ptr() as *const u16).add(first),
            (v.as_ptr() as *const u16).add(first * hd),
        )
    };
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
            // SAFETY: row d holds cap >= first + len values; the masked load reads only j..len.
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
                // SAFETY: slot first + jj < cap has hd values; c0 + 16 c + 16 <= hd.
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

/// [`attend_row`] of the `G` query heads that share one KV head (grouped-query attention):
/// `q` and `o` hold `G` rows of `head_dim`, `s` at least `G * len` values. Each key and value
/// is converted from f16 once for all `G` heads, and each head's scaled query is broadcast
/// from memory; every head's arithmetic is [`attend_row`]'s, in the same order, so the result
/// is the same bit for bit.
///
/// # Safety
/// [`available`] is true; `G` is 1 to 4; `kt` and `v` hold `head_dim * cap` values with
/// `first + len <= cap`, and `head_dim` is a multiple of 16 and at most [`GROUP_MAX_HEAD_DIM`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn attend_group<const G: usize>(
    q: &[f32],
    kt: &[f16],
    v: &[f16],
    first: usize,
    len: usize,
    scale: f32,
    s: &mut [f32],
    o: &mut [f32],
) {
    // SAFETY: as the caller guarantees.
    unsafe { attend_rows::<1, G, 4>([q], kt, v, first, [len], scale, s, [o]) }
}

/// The largest head size [`attend_group`] takes (Gemma 3's 256).
pub const GROUP_MAX_HEAD_DIM: usize = 256;

/// [`attend_group`] of two query rows of a prompt that read slots from the same `first`
/// (`len[0] <= len[1]`): each key and value is converted from f16 once for both rows' `G`
/// heads, half the loads and conversions per product (a prompt's attention was a tenth of a
/// SmolLM2 prompt row by row). `q[r]` and `o[r]` hold row `r`'s `G` heads, `s` at least
/// `2 G len[1]` values. Each row's arithmetic is [`attend_row`]'s, in the same order (keys
/// past a row's length are scored but not kept, and its value sums stop at its length), so the
/// result is the same bit for bit.
///
/// # Safety
/// As [`attend_group`], for both rows; `NC` is 1 to 4.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn attend_pair<const G: usize, const NC: usize>(
    q: [&[f32]; 2],
    kt: &[f16],
    v: &[f16],
    first: usize,
    len: [usize; 2],
    scale: f32,
    s: &mut [f32],
    o: [&mut [f32]; 2],
) {
    // SAFETY: as the caller guarantees.
    unsafe { attend_rows::<2, G, NC>(q, kt, v, first, len, scale, s, o) }
}

/// `R` query rows of `G` heads each against slots `first..` of one KV head, row `r` over
/// `len[r]` of them (ascending), its values summed `NC` 16-dimension vectors a pass
/// (`2 R G NC` accumulators in registers): [`attend_group`] and [`attend_pair`].
///
/// # Safety
/// As [`attend_group`] for every row; `R` is 1 or 2, `NC` 1 to 4, `len` ascending.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)] // `r`, `g`, `c` index the accumulators, scores and outputs at once
unsafe fn attend_rows<const R: usize, const G: usize, const NC: usize>(
    q: [&[f32]; R],
    kt: &[f16],
    v: &[f16],
    first: usize,
    len: [usize; R],
    scale: f32,
    s: &mut [f32],
    mut o: [&mut [f32]; R],
) {
    let hd = q[0].len() / G;
    let cap = kt.len() / hd.max(1);
    let ln = len[R - 1];
    assert!(
        (1..=2).contains(&R)
            && (1..=4).contains(&G)
            && (1..=4).contains(&NC)
            && q.iter().all(|q| q.len() == G * hd)
            && o.iter().all(|o| o.len() == G * hd)
            && len.windows(2).all(|w| w[0] <= w[1])
            && first + ln <= cap
            && v.len() == kt.len()
            && s.len() >= R * G * ln
            && hd.is_multiple_of(16)
            && hd <= GROUP_MAX_HEAD_DIM,
        "attend_rows: bad lengths"
    );
    // Scaled queries, broadcast from memory in the loop (a load, not a shuffle).
    let mut qs = [[0f32; 4 * GROUP_MAX_HEAD_DIM]; R];
    for (qs, q) in qs.iter_mut().zip(q) {
        for (x, &y) in qs.iter_mut().zip(q) {
            *x = y * scale;
        }
    }
    // SAFETY: first + len <= cap (asserted): the runs read below stay within each row.
    let (kp, vp) = unsafe {
        (
            (kt.as_ptr() as *const u16).add(first),
            (v.as_ptr() as *const u16).add(first * hd),
        )
    };
    let lanes = |n: usize, j: usize| -> __mmask16 {
        match n.saturating_sub(j) {
            16.. => 0xffff,
            r => (1u16 << r) - 1,
        }
    };
    let mut j = 0;
    while j < ln {
        let mut acc = [[_mm512_setzero_ps(); G]; R];
        for d in 0..hd {
            // SAFETY: row d holds cap >= first + ln values; the masked load reads only j..ln.
            let k = unsafe {
                _mm256_maskz_loadu_epi16(lanes(ln, j), kp.add(d * cap + j) as *const i16)
            };
            let k = _mm512_cvtph_ps(k);
            for (r, acc) in acc.iter_mut().enumerate() {
                for (g, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(_mm512_set1_ps(qs[r][g * hd + d]), k, *a);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (g, a) in acc.iter().enumerate() {
                let at = (r * G + g) * ln + j;
                // SAFETY: s holds R G ln values; the store writes only j..len[r] of row r's
                // head g.
                unsafe { _mm512_mask_storeu_ps(s.as_mut_ptr().add(at), lanes(len[r], j), *a) };
            }
        }
        j += 16;
    }
    for r in 0..R {
        for g in 0..G {
            let at = (r * G + g) * ln;
            super::nn::softmax_row(&mut s[at..at + len[r]]);
        }
    }
    for c0 in (0..hd).step_by(16 * NC) {
        let nc = ((hd - c0) / 16).min(NC);
        let mut acc = [[[_mm512_setzero_ps(); NC]; G]; R];
        for jj in 0..ln {
            // The rows still reading at jj (lengths ascend: a suffix of them).
            let from = len.iter().take_while(|&&l| l <= jj).count();
            for c in 0..nc {
                // SAFETY: slot first + jj < cap has hd values; c0 + 16 c + 16 <= hd.
                let vv =
                    unsafe { _mm256_loadu_si256(vp.add(jj * hd + c0 + 16 * c) as *const __m256i) };
                let vv = _mm512_cvtph_ps(vv);
                for r in from..R {
                    for g in 0..G {
                        let w = _mm512_set1_ps(s[(r * G + g) * ln + jj]);
                        acc[r][g][c] = _mm512_fmadd_ps(w, vv, acc[r][g][c]);
                    }
                }
            }
        }
        for (acc, o) in acc.iter().zip(o.iter_mut()) {
            for g in 0..G {
                for c in 0..nc {
                    // SAFETY: o holds G hd values and g hd + c0 + 16 c + 16 <= G hd.
                    unsafe {
                        _mm512_storeu_ps(o.as_mut_ptr().add(g * hd + c0 + 16 * c), acc[g][c])
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group<const G: usize>(hd: usize, cap: usize, first: usize, len: usize) {
        let val = |i: usize, m: usize| ((i * 2654435761) % m) as f32 / m as f32 * 2.0 - 1.0;
        let kt: Vec<f16> = (0..hd * cap).map(|i| f16::from_f32(val(i, 997))).collect();
        let v: Vec<f16> = (0..hd * cap)
            .map(|i| f16::from_f32(val(i + 5, 991)))
            .collect();
        let q: Vec<f32> = (0..G * hd).map(|i| 3.0 * val(i + 11, 983)).collect();
        let scale = 1.0 / (hd as f32).sqrt();
        let (mut s, mut o) = (vec![0f32; G * len], vec![0f32; G * hd]);
        // SAFETY: the kernel's CPU features are checked by the caller; sizes as documented.
        unsafe { attend_group::<G>(&q, &kt, &v, first, len, scale, &mut s, &mut o) };
        for g in 0..G {
            let (mut s1, mut o1) = (vec![0f32; len], vec![0f32; hd]);
            // SAFETY: as above.
            unsafe {
                attend_row(
                    &q[g * hd..(g + 1) * hd],
                    &kt,
                    &v,
                    first,
                    len,
                    scale,
                    &mut s1,
                    &mut o1,
                )
            };
            assert_eq!(
                o[g * hd..(g + 1) * hd],
                o1[..],
                "G {G} head {g} hd {hd} first {first} len {len}"
            );
            assert!(o1.iter().all(|x| x.is_finite() && x.abs() <= 1.0));
        }
    }

    /// Two rows through [`attend_pair`] against each row's heads through [`attend_row`].
    fn pair<const G: usize, const NC: usize>(hd: usize, cap: usize, first: usize, len: [usize; 2]) {
        let val = |i: usize, m: usize| ((i * 2654435761) % m) as f32 / m as f32 * 2.0 - 1.0;
        let kt: Vec<f16> = (0..hd * cap).map(|i| f16::from_f32(val(i, 997))).collect();
        let v: Vec<f16> = (0..hd * cap)
            .map(|i| f16::from_f32(val(i + 5, 991)))
            .collect();
        let q: Vec<f32> = (0..2 * G * hd).map(|i| 3.0 * val(i + 11, 983)).collect();
        let (q0, q1) = q.split_at(G * hd);
        let scale = 1.0 / (hd as f32).sqrt();
        // NaN where nothing is written: a score read past a row's length shows.
        let mut s = vec![f32::NAN; 2 * G * len[1]];
        let (mut o0, mut o1) = (vec![0f32; G * hd], vec![0f32; G * hd]);
        // SAFETY: the kernel's CPU features are checked by the caller; sizes as documented.
        unsafe {
            attend_pair::<G, NC>(
                [q0, q1],
                &kt,
                &v,
                first,
                len,
                scale,
                &mut s,
                [&mut o0, &mut o1],
            )
        };
        for (r, (q, o)) in [(q0, &o0), (q1, &o1)].into_iter().enumerate() {
            for g in 0..G {
                let (mut s1, mut want) = (vec![0f32; len[r]], vec![0f32; hd]);
                let qh = &q[g * hd..(g + 1) * hd];
                // SAFETY: as above.
                unsafe { attend_row(qh, &kt, &v, first, len[r], scale, &mut s1, &mut want) };
                let got = &o[g * hd..(g + 1) * hd];
                assert_eq!(
                    got,
                    &want[..],
                    "G {G} NC {NC} row {r} head {g} hd {hd} len {len:?}"
                );
            }
        }
    }

    #[test]
    fn two_prompt_rows_together_equal_each_alone_bit_for_bit() {
        if !super::super::x86::runs_here(available(), "the paired attention") {
            return;
        }
        for (hd, cap, first, len) in [
            (64, 80, 0, [37, 39]),
            (64, 80, 0, [79, 80]),
            (64, 80, 0, [16, 16]),
            (16, 40, 39, [1, 1]),
            (32, 48, 5, [15, 17]),
            (256, 40, 3, [31, 33]),
            (144, 24, 0, [1, 24]),
        ] {
            pair::<1, 4>(hd, cap, first, len);
            pair::<2, 4>(hd, cap, first, len);
            pair::<3, 4>(hd, cap, first, len);
            pair::<4, 2>(hd, cap, first, len);
        }
    }

    #[test]
    fn heads_sharing_a_kv_head_together_equal_each_alone_bit_for_bit() {
        if !super::super::x86::runs_here(available(), "the grouped attention") {
            return;
        }
        for (hd, cap, first, len) in [
            (64, 80, 0, 37),
            (64, 80, 0, 80),
            (16, 40, 39, 1),
            (32, 48, 5, 17),
            (256, 40, 3, 33),
            (144, 24, 0, 24),
        ] {
            group::<1>(hd, cap, first, len);
            group::<2>(hd, cap, first, len);
            group::<3>(hd, cap, first, len);
            group::<4>(hd, cap, first, len);
        }
    }
}
