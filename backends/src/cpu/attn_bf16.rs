//! Attention for one head of 32 or 64 values with AVX-512 BF16 dot products (`vdpbf16ps`: two
//! products per f32 lane, twice the multiply-adds of an f32 FMA), for the encoder's batched
//! attention. Queries, keys, values and probabilities are rounded to bf16 (8 significant bits,
//! relative error at most 2^-9); products and sums stay in f32. That rounding is five times
//! finer than the int8 quantization every linear layer applies to its inputs, so the encoder's
//! fidelity to PyTorch does not move (measured in the MiniLM fixture test), while the two
//! products take half the instructions of [`attn_avx512`](super::attn_avx512), which the
//! reference (scalar) kernel set and CPUs without BF16 keep using.
//!
//! Layouts, in `u32` pairs of bf16 (the low half first): keys transposed by pairs of
//! dimensions (`kt[d / 2][key]`), values by pairs of keys (`vp[key / 2][d]`), probabilities
//! by pairs of keys (`pb[row][key / 2]`), so each `vdpbf16ps` multiplies a broadcast pair of
//! one operand with 16 pairs of the other.

use std::arch::x86_64::*;

// The f32 kernel's head sizes and argument checks: the two kernels share one contract.
use super::attn_avx512::{check_head, head_dim_supported, lanes, row_ranges, union, QB};

/// Whether this CPU can run [`head`].
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
}

/// A thread's buffers for [`head`].
#[derive(Default)]
pub struct Buffers {
    kt: Vec<u32>,
    vp: Vec<u32>,
    scores: Vec<f32>,
    pb: Vec<u32>,
}

/// Reinterprets 16 `u32` lanes as 32 bf16 values.
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
fn bh(x: __m512i) -> __m512bh {
    // SAFETY: both are 64-byte vectors of plain bits; every bit pattern is valid for both.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(x) }
}

/// Rounds 32 floats (`lo`: values 0 to 15, `hi`: 16 to 31) to bf16 (to nearest even) as 16
/// pairs in natural order: lane `i` holds values `2i` (low half) and `2i + 1`.
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
fn pairs32(lo: __m512, hi: __m512) -> __m512i {
    // SAFETY: as in `bh`.
    unsafe { std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo)) }
}

/// One head's attention over one sequence of `seq` tokens, as
/// [`attn_avx512::head`](super::attn_avx512::head) (same arguments and contract) with bf16
/// products. `HP` is `HD / 2`, the bf16 pairs of a head row.
///
/// # Safety
/// [`available`] is true. (Slice lengths and positions are checked here.)
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn head<const HD: usize, const HP: usize>(
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
    assert!(head_dim_supported(HD) && 2 * HP == HD);
    check_head::<HD>(q, k, v, stride, seq, keep);
    let nk = keep.len();
    let nkp = nk.next_multiple_of(32).max(32);
    buf.kt.clear();
    buf.kt.resize(HP * nkp, 0);
    buf.vp.clear();
    buf.vp.resize(nkp / 2 * HD, 0);
    buf.scores.resize(QB * nkp, 0.0);
    buf.pb.resize(QB * nkp / 2, 0);
    let (kp, vsrc) = (k.as_ptr(), v.as_ptr());
    for &j in keep.iter().take(AHEAD) {
        prefetch_row::<HD>(kp.wrapping_add(j * stride));
        prefetch_row::<HD>(vsrc.wrapping_add(j * stride));
    }
    for (jj, &j) in keep.iter().enumerate() {
        if let Some(&ahead) = keep.get(jj + AHEAD) {
            prefetch_row::<HD>(kp.wrapping_add(ahead * stride));
        }
        let mut lanes = [0u32; HP];
        for c in 0..HD / 32 {
            // SAFETY: j < seq, so the row's HD floats lie in `k` (checked above); `lanes`
            // holds HP = 16 (HD / 32) u32.
            unsafe {
                let pr = pairs32(
                    _mm512_loadu_ps(kp.add(j * stride + 32 * c)),
                    _mm512_loadu_ps(kp.add(j * stride + 32 * c + 16)),
                );
                _mm512_storeu_si512(lanes.as_mut_ptr().add(16 * c) as *mut __m512i, pr);
            }
        }
        for (dp, &l) in lanes.iter().enumerate() {
            buf.kt[dp * nkp + jj] = l;
        }
    }
    for (jp, two) in keep.chunks(2).enumerate() {
        for &ahead in keep.iter().skip(2 * jp + AHEAD).take(2) {
            prefetch_row::<HD>(vsrc.wrapping_add(ahead * stride));
        }
        for half in 0..HD / 16 {
            // SAFETY: kept positions are below seq, so each row's HD floats lie in `v`.
            let (a, b) = unsafe {
                (
                    _mm512_loadu_ps(vsrc.add(two[0] * stride + half * 16)),
                    match two.get(1) {
                        Some(&j) => _mm512_loadu_ps(vsrc.add(j * stride + half * 16)),
                        None => _mm512_setzero_ps(),
                    },
                )
            };
            // SAFETY: as in `bh` (16 bf16 are 32 bytes either way).
            let (a, b) = unsafe {
                (
                    std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(a)),
                    std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(b)),
                )
            };
            let pair = _mm512_or_si512(
                _mm512_cvtepu16_epi32(a),
                _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(b)),
            );
            let at = jp * HD + half * 16;
            // SAFETY: jp < nkp / 2, so the 16 u32 lie in `vp`.
            unsafe { _mm512_storeu_si512(buf.vp.as_mut_ptr().add(at) as *mut __m512i, pair) };
        }
    }
    let mut i0 = 0;
    while i0 < seq {
        let rows = (seq - i0).min(QB);
        let mut qs = [[0u32; HP]; QB];
        for r in QB..2 * QB {
            if i0 + r < seq {
                prefetch_row::<HD>(q.as_ptr().wrapping_add((i0 + r) * stride));
            }
        }
        for (r, qr) in qs.iter_mut().enumerate().take(rows) {
            let at = (i0 + r) * stride;
            let s = _mm512_set1_ps(scale);
            for c in 0..HD / 32 {
                // SAFETY: row i0 + r < seq, so its HD floats lie in `q`; `qr` holds HP u32.
                unsafe {
                    let pr = pairs32(
                        _mm512_mul_ps(_mm512_loadu_ps(q.as_ptr().add(at + 32 * c)), s),
                        _mm512_mul_ps(_mm512_loadu_ps(q.as_ptr().add(at + 32 * c + 16)), s),
                    );
                    _mm512_storeu_si512(qr.as_mut_ptr().add(16 * c) as *mut __m512i, pr);
                }
            }
        }
        let mut o = [[0f32; HD]; QB];
        if nk > 0 {
            // SAFETY: the buffers were sized above for nkp keys.
            unsafe {
                let ranges = row_ranges(keep, i0, reach);
                scores(&qs, &buf.kt, nkp, &mut buf.scores);
                let inv = softmax(&buf.scores, nkp, nk, &ranges, &mut buf.pb);
                pv(&buf.pb, nkp, &buf.vp, union(&ranges, rows), &inv, &mut o);
            }
        }
        for (r, row) in o.iter().enumerate().take(rows) {
            out(i0 + r, row);
        }
        i0 += rows;
    }
}

/// Rows read this many ahead are asked for early: rows of a stacked q/k/v matrix lie more than
/// a 4 KB page apart, where the hardware prefetchers do not follow a stride, so each row was a
/// wait on L3 (a fifth of this kernel's time in MiniLM's reranking, by `perf`).
const AHEAD: usize = 24;

/// Asks for the `HD` floats at `p` (a head's slice of one row) to be brought into L1.
#[inline]
#[target_feature(enable = "avx512f")]
fn prefetch_row<const HD: usize>(p: *const f32) {
    for line in (0..HD).step_by(16) {
        // A prefetch never faults, whatever the address.
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(line) as *const i8);
    }
}

/// `scores[r][j] = q[r] . k[j]` for the `QB` rows and all `nkp` (a multiple of 32) keys.
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::needless_range_loop)] // `dp` indexes the key pairs and every query row at once
unsafe fn scores<const HP: usize>(q: &[[u32; HP]; QB], kt: &[u32], nkp: usize, scores: &mut [f32]) {
    assert!(kt.len() == HP * nkp && nkp.is_multiple_of(32) && scores.len() == QB * nkp);
    let (ktp, sp) = (kt.as_ptr(), scores.as_mut_ptr());
    for jc in (0..nkp).step_by(32) {
        let mut acc = [[_mm512_setzero_ps(); 2]; QB];
        for dp in 0..HP {
            // SAFETY: dp < HP and jc + 32 <= nkp, so the 32 u32 lie in `kt`.
            let (k0, k1) = unsafe {
                (
                    bh(_mm512_loadu_si512(ktp.add(dp * nkp + jc) as *const __m512i)),
                    bh(_mm512_loadu_si512(
                        ktp.add(dp * nkp + jc + 16) as *const __m512i
                    )),
                )
            };
            for r in 0..QB {
                let qv = bh(_mm512_set1_epi32(q[r][dp] as i32));
                acc[r][0] = _mm512_dpbf16_ps(acc[r][0], qv, k0);
                acc[r][1] = _mm512_dpbf16_ps(acc[r][1], qv, k1);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            // SAFETY: r < QB and jc + 32 <= nkp, inside `scores`.
            unsafe {
                _mm512_storeu_ps(sp.add(r * nkp + jc), a[0]);
                _mm512_storeu_ps(sp.add(r * nkp + jc + 16), a[1]);
            }
        }
    }
}

/// `e^x` for `x <= 0` in 16 lanes, to the precision bf16 keeps: `2^n * p(r)` with one-step
/// range reduction and a degree-4 Taylor polynomial on `|r| <= ln2 / 2` (relative error below
/// 5e-5, against bf16's 2^-9 = 2e-3). Three fewer multiply-adds than
/// the f32 kernel's `exp16`, a third of this kernel's work otherwise.
#[inline]
#[target_feature(enable = "avx512f")]
fn exp16_coarse(x: __m512) -> __m512 {
    const MAGIC: f32 = 12_582_912.0;
    let x = _mm512_max_ps(x, _mm512_set1_ps(-87.0));
    let t = _mm512_fmadd_ps(
        x,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
        _mm512_set1_ps(MAGIC),
    );
    let n = _mm512_sub_ps(t, _mm512_set1_ps(MAGIC));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(std::f32::consts::LN_2), x);
    let mut p = _mm512_set1_ps(1.0 / 24.0);
    for c in [1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let bias = MAGIC.to_bits() as i32 - 127;
    let e = _mm512_slli_epi32::<23>(_mm512_sub_epi32(
        _mm512_castps_si512(t),
        _mm512_set1_epi32(bias),
    ));
    _mm512_mul_ps(p, _mm512_castsi512_ps(e))
}

/// For each of the `QB` rows of `scores` (`nkp` apart): `e^(s - max)` over its range of
/// `ranges` (inside the first `nk`), zero elsewhere, rounded to bf16 pairs into `pb` (`nkp / 2`
/// apart); returns each row's `1 / sum` (summed in f32 before rounding; 0 for a row that sees no
/// key).
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn softmax(
    scores: &[f32],
    nkp: usize,
    nk: usize,
    ranges: &[(usize, usize); QB],
    pb: &mut [u32],
) -> [f32; QB] {
    assert!(scores.len() == QB * nkp && pb.len() == QB * nkp / 2);
    assert!(nk > 0 && nk <= nkp && nkp.is_multiple_of(32));
    let mut inv = [0f32; QB];
    for (r, inv) in inv.iter_mut().enumerate() {
        let (lo, hi) = (ranges[r].0, ranges[r].1.min(nk));
        let mask = |c: usize| lanes(c, lo, hi);
        // SAFETY: row r's nkp floats and nkp / 2 pairs lie in the buffers (asserted).
        let (sp, pp) = unsafe {
            (
                scores.as_ptr().add(r * nkp),
                pb.as_mut_ptr().add(r * nkp / 2),
            )
        };
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        for c in lo / 16..hi.div_ceil(16) {
            // SAFETY: as above; c * 16 + 16 <= nkp.
            let x = unsafe { _mm512_mask_loadu_ps(mx, mask(c), sp.add(c * 16)) };
            mx = _mm512_max_ps(mx, x);
        }
        let mx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
        let mut sum = _mm512_setzero_ps();
        for c2 in 0..nk.div_ceil(32) {
            let (c0, c1) = (2 * c2, 2 * c2 + 1);
            // SAFETY: as above; c1 * 16 + 16 <= nkp.
            let (x0, x1) = unsafe {
                (
                    _mm512_loadu_ps(sp.add(c0 * 16)),
                    _mm512_loadu_ps(sp.add(c1 * 16)),
                )
            };
            let e0 = _mm512_maskz_mov_ps(mask(c0), exp16_coarse(_mm512_sub_ps(x0, mx)));
            let e1 = _mm512_maskz_mov_ps(mask(c1), exp16_coarse(_mm512_sub_ps(x1, mx)));
            sum = _mm512_add_ps(sum, _mm512_add_ps(e0, e1));
            // SAFETY: the 16 pairs of keys c2 * 32.. lie in row r of `pb`; e0/e1 are in registers.
            unsafe {
                let pr = pairs32(e0, e1);
                _mm512_storeu_si512(pp.add(c2 * 16) as *mut __m512i, pr);
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

/// `o[r] = inv[r] * sum_j p[r][j] v[j]` from the bf16 pairs of probabilities and values over
/// the kept keys `span` (where any row's probabilities are not zero), 32 dimensions (16
/// accumulators) per pass over the keys.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn pv<const HD: usize>(
    pb: &[u32],
    nkp: usize,
    vp: &[u32],
    span: (usize, usize),
    inv: &[f32; QB],
    o: &mut [[f32; HD]; QB],
) {
    let np = span.1.div_ceil(2);
    assert!(pb.len() == QB * nkp / 2 && vp.len() == nkp / 2 * HD && np <= nkp / 2);
    let (pp, vpp) = (pb.as_ptr(), vp.as_ptr());
    for c0 in (0..HD).step_by(32) {
        let mut acc = [[_mm512_setzero_ps(); 2]; QB];
        for jp in span.0 / 2..np {
            // SAFETY: jp < nkp / 2 and c0 + 32 <= HD, so the 32 u32 lie in `vp`.
            let (v0, v1) = unsafe {
                (
                    bh(_mm512_loadu_si512(vpp.add(jp * HD + c0) as *const __m512i)),
                    bh(_mm512_loadu_si512(
                        vpp.add(jp * HD + c0 + 16) as *const __m512i
                    )),
                )
            };
            for (r, a) in acc.iter_mut().enumerate() {
                // SAFETY: r < QB and jp < nkp / 2, inside `pb`.
                let p = bh(_mm512_set1_epi32(
                    unsafe { *pp.add(r * nkp / 2 + jp) } as i32
                ));
                a[0] = _mm512_dpbf16_ps(a[0], p, v0);
                a[1] = _mm512_dpbf16_ps(a[1], p, v1);
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
