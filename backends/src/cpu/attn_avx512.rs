//! Attention for one head of 32 or 64 values with AVX-512, eight query rows at a time: scores against
//! the head's keys transposed (16 keys per register, 32 keys per pass: 16 accumulators), the
//! softmax in registers (exponentials and their sums in 16 lanes, no normalisation pass: the
//! output rows are scaled instead), then `P V` with the eight output rows in 16 registers.

use std::arch::x86_64::*;

/// Query rows per block.
pub(super) const QB: usize = 8;

/// The kept keys (`[lo, hi)`, indices into `keep`) each of the `QB` query rows from `i0` sees:
/// all of them, or with `reach` (before, after) those from `i - before` to `i + after`.
pub(super) fn row_ranges(
    keep: &[usize],
    i0: usize,
    reach: Option<(usize, usize)>,
) -> [(usize, usize); QB] {
    std::array::from_fn(|r| match reach {
        None => (0, keep.len()),
        Some((before, after)) => {
            let i = i0 + r;
            (
                keep.partition_point(|&j| j + before < i),
                keep.partition_point(|&j| j <= i + after),
            )
        }
    })
}

/// The lanes of 16-key chunk `c` (keys `16 c..16 c + 16`) inside `[lo, hi)`.
pub(super) fn lanes(c: usize, lo: usize, hi: usize) -> __mmask16 {
    let (a, b) = (
        lo.clamp(16 * c, 16 * c + 16) - 16 * c,
        hi.clamp(16 * c, 16 * c + 16) - 16 * c,
    );
    if b <= a {
        0
    } else {
        (((1u32 << b) - 1) & !((1u32 << a) - 1)) as __mmask16
    }
}

/// The union of the rows' ranges (the keys any of them reads).
pub(super) fn union(ranges: &[(usize, usize); QB], rows: usize) -> (usize, usize) {
    let live = &ranges[..rows.min(QB)];
    let lo = live.iter().map(|r| r.0).min().unwrap_or(0);
    let hi = live.iter().map(|r| r.1).max().unwrap_or(0);
    (lo, hi.max(lo))
}
/// Whether the kernels take heads of `hd` values (32: MiniLM; 64: CLIP, XLM-R and BERT base).
pub fn head_dim_supported(hd: usize) -> bool {
    hd == 32 || hd == 64
}

/// Whether this CPU can run [`head`].
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// Checks the slices and key positions of a [`head`] call (the contract both head kernels
/// share): `seq` rows of `HD` values, `stride` apart, in each of `q`, `k` and `v`, and every
/// kept position below `seq`.
pub(super) fn check_head<const HD: usize>(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    stride: usize,
    seq: usize,
    keep: &[usize],
) {
    let need = (seq.max(1) - 1) * stride + HD;
    assert!(stride >= HD && q.len() >= need && k.len() >= need && v.len() >= need);
    assert!(keep.iter().all(|&j| j < seq));
}

/// A thread's buffers for [`head`]: the keys transposed and a block of scores.
#[derive(Default)]
pub struct Buffers {
    kt: Vec<f32>,
    scores: Vec<f32>,
}

/// One head's attention over one sequence of `seq` tokens.
///
/// `q`, `k` and `v` start at this head's first value of the sequence's first row; row `i` is
/// `stride` floats after row `i - 1`. `keep` lists the key positions that are real tokens
/// (ascending, each below `seq`). `scale` multiplies every score (`1 / sqrt(HD)`). Row `i`'s
/// output is handed to `out(i, row)`; with no real key it is zero.
///
/// # Safety
/// [`available`] is true. (Slice lengths and positions are checked here.)
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn head<const HD: usize>(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    stride: usize,
    seq: usize,
    keep: &[usize],
    reach: Option<(usize, usize)>,
    scale: f32,
    buf: &mut Buffers,
    out: &mut dyn FnMut(usize, &[f32; HD]),
) {
    if seq == 0 {
        return;
    }
    assert!(head_dim_supported(HD));
    check_head::<HD>(q, k, v, stride, seq, keep);
    let nk = keep.len();
    let nkp = nk.next_multiple_of(16).max(16);
    buf.kt.clear();
    buf.kt.resize(HD * nkp, 0.0);
    buf.scores.resize(QB * nkp, 0.0);
    let ktp = buf.kt.as_mut_ptr();
    for (jj, &j) in keep.iter().enumerate() {
        let src = &k[j * stride..j * stride + HD];
        for (d, &x) in src.iter().enumerate() {
            // SAFETY: d < HD and jj < nk <= nkp, inside the HD * nkp floats of `kt`.
            unsafe { *ktp.add(d * nkp + jj) = x };
        }
    }
    let mut i0 = 0;
    while i0 < seq {
        let rows = (seq - i0).min(QB);
        let mut qs = [[0f32; HD]; QB];
        for (r, qr) in qs.iter_mut().enumerate().take(rows) {
            let at = (i0 + r) * stride;
            qr.iter_mut()
                .zip(&q[at..at + HD])
                .for_each(|(o, x)| *o = x * scale);
        }
        let mut o = [[0f32; HD]; QB];
        if nk > 0 {
            // SAFETY: the buffers were sized above (`kt`: HD * nkp, `scores`: QB * nkp), and
            // every kept position's value row lies in `v` (checked above).
            unsafe {
                let ranges = row_ranges(keep, i0, reach);
                scores(&qs, &buf.kt, nkp, &mut buf.scores);
                let inv = softmax(&mut buf.scores, nkp, nk, &ranges);
                pv(
                    &buf.scores,
                    nkp,
                    v,
                    stride,
                    keep,
                    union(&ranges, rows),
                    &inv,
                    &mut o,
                );
            }
        }
        for (r, row) in o.iter().enumerate().take(rows) {
            out(i0 + r, row);
        }
        i0 += rows;
    }
}

/// `scores[r][j] = q[r] . kt[.][j]` for the `QB` rows and all `nkp` (a multiple of 16) keys.
#[target_feature(enable = "avx512f")]
#[allow(clippy::needless_range_loop)] // `d` indexes the key rows and every query row at once
unsafe fn scores<const HD: usize>(q: &[[f32; HD]; QB], kt: &[f32], nkp: usize, scores: &mut [f32]) {
    assert!(kt.len() == HD * nkp && nkp.is_multiple_of(16) && scores.len() == QB * nkp);
    let (ktp, sp) = (kt.as_ptr(), scores.as_mut_ptr());
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

/// `e^x` in 16 lanes: the same range reduction and polynomial as
/// [`exp_approx`](super::nn::exp_approx).
#[inline]
#[target_feature(enable = "avx512f")]
fn exp16(x: __m512) -> __m512 {
    const MAGIC: f32 = 12_582_912.0;
    let x = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-87.0)),
        _mm512_set1_ps(88.0),
    );
    let t = _mm512_fmadd_ps(
        x,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
        _mm512_set1_ps(MAGIC),
    );
    let n = _mm512_sub_ps(t, _mm512_set1_ps(MAGIC));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm512_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    // 2^n: t's low mantissa bits hold n; rebias them as an exponent.
    let bias = MAGIC.to_bits() as i32 - 127;
    let e = _mm512_slli_epi32::<23>(_mm512_sub_epi32(
        _mm512_castps_si512(t),
        _mm512_set1_epi32(bias),
    ));
    _mm512_mul_ps(p, _mm512_castsi512_ps(e))
}

/// Replaces the scores of each of the `QB` rows (`nkp` apart) within its range of `ranges`
/// (inside the first `nk`) by `e^(s - max)`, the rest of the first `nk` by zero, and returns
/// each row's `1 / sum` (0 for a row that sees no key).
#[target_feature(enable = "avx512f")]
unsafe fn softmax(
    scores: &mut [f32],
    nkp: usize,
    nk: usize,
    ranges: &[(usize, usize); QB],
) -> [f32; QB] {
    assert!(scores.len() == QB * nkp && nk <= nkp && nk > 0 && nkp.is_multiple_of(16));
    let mut inv = [0f32; QB];
    let chunks = nk.div_ceil(16);
    for (r, inv) in inv.iter_mut().enumerate() {
        let (lo, hi) = (ranges[r].0, ranges[r].1.min(nk));
        // SAFETY: row r's nkp floats lie in `scores` (asserted), and chunks * 16 <= nkp.
        let sp = unsafe { scores.as_mut_ptr().add(r * nkp) };
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        for c in lo / 16..hi.div_ceil(16) {
            let m = lanes(c, lo, hi);
            // SAFETY: as above.
            let x = unsafe { _mm512_mask_loadu_ps(mx, m, sp.add(c * 16)) };
            mx = _mm512_max_ps(mx, x);
        }
        let mx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
        let mut sum = _mm512_setzero_ps();
        for c in 0..chunks {
            let m = lanes(c, lo, hi);
            // SAFETY: as above.
            unsafe {
                let x = _mm512_loadu_ps(sp.add(c * 16));
                let e = _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(x, mx)));
                _mm512_storeu_ps(sp.add(c * 16), e);
                sum = _mm512_add_ps(sum, e);
            }
        }
        *inv = if hi > lo {
            1.0 / _mm512_reduce_add_ps(sum)
        } else {
            0.0
        };
    }
    inv
}

/// `o[r] = inv[r] * sum_j p[r][j] v[keep[j]]` for the `QB` rows of `p` (`nkp` apart) over
/// the kept keys `span` (where any row's probabilities are not zero), 32 dimensions (16
/// accumulators) per pass over the keys.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn pv<const HD: usize>(
    p: &[f32],
    nkp: usize,
    v: &[f32],
    stride: usize,
    keep: &[usize],
    span: (usize, usize),
    inv: &[f32; QB],
    o: &mut [[f32; HD]; QB],
) {
    let nk = keep.len();
    assert!(p.len() == QB * nkp && nk <= nkp && HD.is_multiple_of(32) && span.1 <= nk);
    let (pp, vp) = (p.as_ptr(), v.as_ptr());
    for c0 in (0..HD).step_by(32) {
        let mut acc = [[_mm512_setzero_ps(); 2]; QB];
        for (j, &at) in keep.iter().enumerate().take(span.1).skip(span.0) {
            // SAFETY: the caller checked that every kept position's HD values lie in `v`, and
            // c0 + 32 <= HD.
            let (v0, v1) = unsafe {
                (
                    _mm512_loadu_ps(vp.add(at * stride + c0)),
                    _mm512_loadu_ps(vp.add(at * stride + c0 + 16)),
                )
            };
            for (r, a) in acc.iter_mut().enumerate() {
                // SAFETY: r < QB and j < nk <= nkp, inside `p`.
                let pr = _mm512_set1_ps(unsafe { *pp.add(r * nkp + j) });
                a[0] = _mm512_fmadd_ps(pr, v0, a[0]);
                a[1] = _mm512_fmadd_ps(pr, v1, a[1]);
            }
        }
        for ((a, o), &s) in acc.iter().zip(o.iter_mut()).zip(inv) {
            let s = _mm512_set1_ps(s);
            // SAFETY: each output row holds HD floats, and c0 + 32 <= HD.
            unsafe {
                _mm512_storeu_ps(o.as_mut_ptr().add(c0), _mm512_mul_ps(a[0], s));
                _mm512_storeu_ps(o.as_mut_ptr().add(c0 + 16), _mm512_mul_ps(a[1], s));
            }
        }
    }
}
