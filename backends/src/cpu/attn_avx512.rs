//! Attention for one head of size 32 with AVX-512: four query rows at a time, scores over
//! chunks of 16 keys in registers (keys transposed), and `P V` with the four output rows in
//! eight registers. The softmax between them is the caller's (multiversioned) code.

use std::arch::x86_64::*;

/// Query rows per block.
const QB: usize = 4;
/// Head size this kernel is written for.
pub const HD: usize = 32;

/// Whether this CPU can run [`head32`].
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// Scores of rows `q` (`QB` rows of [`HD`] values, already scaled) against the keys in `kt`
/// (`[HD][nkp]`, keys transposed, `nkp` a multiple of 16, padding zero) into `scores`
/// (`QB * nkp`).
///
/// # Safety
/// [`available`] is true.
// `d` indexes the key rows and every query row at once; an iterator would hide that.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f")]
pub unsafe fn scores32(q: &[[f32; HD]; QB], kt: &[f32], nkp: usize, scores: &mut [f32]) {
    assert!(kt.len() == HD * nkp && nkp.is_multiple_of(16) && scores.len() == QB * nkp);
    let (ktp, sp) = (kt.as_ptr(), scores.as_mut_ptr());
    // Two chunks of 16 keys at a time: eight independent accumulators hide the FMA latency.
    let mut jc = 0;
    while jc + 32 <= nkp {
        let mut acc = [[_mm512_setzero_ps(); 2]; QB];
        for d in 0..HD {
            // SAFETY: d < HD and jc + 32 <= nkp, so the 32 floats lie in `kt`.
            let (k0, k1) = unsafe {
                (
                    _mm512_loadu_ps(ktp.add(d * nkp + jc)),
                    _mm512_loadu_ps(ktp.add(d * nkp + jc + 16)),
                )
            };
            for r in 0..QB {
                let qv = _mm512_set1_ps(q[r][d]);
                acc[r][0] = _mm512_fmadd_ps(qv, k0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(qv, k1, acc[r][1]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            // SAFETY: r < QB and jc + 32 <= nkp, inside `scores`.
            unsafe {
                _mm512_storeu_ps(sp.add(r * nkp + jc), a[0]);
                _mm512_storeu_ps(sp.add(r * nkp + jc + 16), a[1]);
            }
        }
        jc += 32;
    }
    if jc < nkp {
        let mut acc = [_mm512_setzero_ps(); QB];
        for d in 0..HD {
            // SAFETY: d < HD and jc + 16 == nkp, so the 16 floats lie in `kt`.
            let kv = unsafe { _mm512_loadu_ps(ktp.add(d * nkp + jc)) };
            for r in 0..QB {
                acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(q[r][d]), kv, acc[r]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            // SAFETY: r < QB and jc + 16 <= nkp, inside `scores`.
            unsafe { _mm512_storeu_ps(sp.add(r * nkp + jc), *a) };
        }
    }
}

/// `out[r] = sum_j p[r][j] * v[j]` for `QB` rows of probabilities (`p`: `QB * nkp`, the first
/// `nk` of each row used) and values `vh` (`[nk][HD]`).
///
/// # Safety
/// [`available`] is true.
#[target_feature(enable = "avx512f")]
pub unsafe fn pv32(p: &[f32], nkp: usize, vh: &[f32], nk: usize, out: &mut [[f32; HD]; QB]) {
    assert!(vh.len() == nk * HD && nk <= nkp && p.len() == QB * nkp);
    let vhp = vh.as_ptr();
    let mut o = [[_mm512_setzero_ps(); 2]; QB];
    for j in 0..nk {
        // SAFETY: j < nk, so both 16-float halves of value row j lie in `vh`.
        let (v0, v1) = unsafe {
            (
                _mm512_loadu_ps(vhp.add(j * HD)),
                _mm512_loadu_ps(vhp.add(j * HD + 16)),
            )
        };
        for r in 0..QB {
            let pr = _mm512_set1_ps(p[r * nkp + j]);
            o[r][0] = _mm512_fmadd_ps(pr, v0, o[r][0]);
            o[r][1] = _mm512_fmadd_ps(pr, v1, o[r][1]);
        }
    }
    for r in 0..QB {
        // SAFETY: each output row holds HD = 32 floats.
        unsafe {
            _mm512_storeu_ps(out[r].as_mut_ptr(), o[r][0]);
            _mm512_storeu_ps(out[r].as_mut_ptr().add(16), o[r][1]);
        }
    }
}
