//! The few-row (token decoding) kernel of the f32-activation matmul on AVX2, for every block
//! type a llama.cpp Q4_K_M, Q5_K_M or Q6_K file holds: the activation row is quantized to int16
//! per block of 32 ([`RowI16`]: relative error below 2^-15 of the block's largest value), each
//! stored weight block is widened to int16 in registers, and `vpmaddwd` multiplies them, eight
//! int32 sums per block that one FMA scales into the row's f32 accumulator. No weight is decoded
//! to memory and the stored blocks are read once, in place.
//!
//! Every type is seen as units of 32 values `w = d q + m` (`q` int16, `d` and `m` f32 per unit):
//! a Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 block is one unit, a Q4_K/Q5_K super-block eight (its sub-blocks,
//! `d = d_super * scale`, `m = -dmin * min`), a Q6_K super-block eight whose two halves' int8
//! scales multiply `q` in int16 (`|q scale| <= 4096`). Then
//! `sum w x = d s sum(q xq) + m sum(x)` with `s` the activation block's scale.

use std::arch::x86_64::*;

use super::gemv_i16::RowI16;
use crate::quant::k_quants::scale_min_k4;
use crate::quant::QK;
use crate::DType;

/// Whether this CPU can run the kernel.
pub fn available() -> bool {
    super::multiversion::avx2() && std::is_x86_feature_detected!("f16c")
}

/// Whether the kernel reads `dtype` (the others take the f32 path).
pub fn decodes(dtype: DType) -> bool {
    match dtype {
        DType::Q8_0
        | DType::Q4_0
        | DType::Q4_1
        | DType::Q5_0
        | DType::Q5_1
        | DType::Q4_K
        | DType::Q5_K
        | DType::Q6_K => true,
        DType::F32
        | DType::F16
        | DType::BF16
        | DType::Q2_K
        | DType::Q3_K
        | DType::IQ4_NL
        | DType::IQ4_XS => false,
    }
}

/// `$f::<L>(args)` with `L` the [`Layout`] of `$dtype` (one of the types [`decodes`] accepts).
macro_rules! by_layout {
    ($dtype:expr, $f:ident($($arg:expr),*)) => {
        match $dtype {
            DType::Q8_0 => $f::<Q8_0>($($arg),*),
            DType::Q4_0 => $f::<Q4_0>($($arg),*),
            DType::Q4_1 => $f::<Q4_1>($($arg),*),
            DType::Q5_0 => $f::<Q5_0>($($arg),*),
            DType::Q5_1 => $f::<Q5_1>($($arg),*),
            DType::Q4_K => $f::<Q4_K>($($arg),*),
            DType::Q5_K => $f::<Q5_K>($($arg),*),
            DType::Q6_K => $f::<Q6_K>($($arg),*),
            other @ (DType::F32
            | DType::F16
            | DType::BF16
            | DType::Q2_K
            | DType::Q3_K
            | DType::IQ4_NL
            | DType::IQ4_XS) => unreachable!("the caller checks `decodes` ({other})"),
        }
    };
}

/// Dot products of four rows of `dtype` blocks (`w`: 4 rows of `row_bytes`) with the quantized
/// activation row `x`.
///
/// # Safety
/// [`available`] is true; [`decodes`] is true for `dtype`; `w` holds 4 rows of
/// `x.q.len()` values of `dtype`, and `x` one quantized row.
pub unsafe fn dot4(dtype: DType, w: &[u8], row_bytes: usize, x: &RowI16) -> [f32; 4] {
    let nb = x.s.len();
    assert!(
        x.q.len() == nb * QK
            && x.sum.len() == nb
            && w.len() >= 4 * row_bytes
            && row_bytes * dtype.block_len() == nb * QK * dtype.block_bytes(),
        "dot4: bad lengths"
    );
    // SAFETY: the caller guarantees the CPU features; lengths are asserted above.
    unsafe { by_layout!(dtype, dot4_t(w, row_bytes, x)) }
}

/// [`dot4`] of two activation rows at once: each unit is read and widened once for both (a
/// prompt of a few tokens, several conversations stepped together), and each row's sums are
/// the ones [`dot4`] gives it alone, bit for bit (the same operations in the same order).
///
/// # Safety
/// As [`dot4`], for both rows.
pub unsafe fn dot4x2(dtype: DType, w: &[u8], row_bytes: usize, x: [&RowI16; 2]) -> [[f32; 4]; 2] {
    let nb = x[0].s.len();
    assert!(
        x.iter()
            .all(|x| x.q.len() == nb * QK && x.s.len() == nb && x.sum.len() == nb)
            && w.len() >= 4 * row_bytes
            && row_bytes * dtype.block_len() == nb * QK * dtype.block_bytes(),
        "dot4x2: bad lengths"
    );
    // SAFETY: the caller guarantees the CPU features; lengths are asserted above.
    unsafe { by_layout!(dtype, dot4x2_t(w, row_bytes, x)) }
}

/// One unit of 32 values: int16 values `lo` (0..16) and `hi` (16..32), `w = d q + m`.
struct Unit {
    lo: __m256i,
    hi: __m256i,
    d: f32,
    m: f32,
}

/// A block layout as units of 32 values.
trait Layout {
    /// Bytes per stored block.
    const BYTES: usize;
    /// Units of 32 per stored block.
    const UNITS: usize;
    /// Unit `u` of the block at `p`.
    ///
    /// # Safety
    /// AVX2; `p` points at a whole block, `u < UNITS`.
    unsafe fn unit(p: *const u8, u: usize) -> Unit;
}

/// The f16 at `p + at`, converted by F16C (one instruction, no branch: the scales of every
/// block pass through here).
#[inline(always)]
fn f16_at(p: *const u8, at: usize) -> f32 {
    // SAFETY: callers pass offsets inside the block they were given, from functions compiled
    // with F16C.
    unsafe {
        let bits = (p.add(at) as *const u16).read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }
}

/// 16 bytes of nibbles as (low nibbles, high nibbles), each 16 u8 widened to int16.
///
/// # Safety
/// AVX2; 16 readable bytes at `p`.
#[inline(always)]
unsafe fn nibbles16(p: *const u8) -> (__m256i, __m256i) {
    // SAFETY: 16 bytes at p (caller); register operations of AVX2.
    unsafe {
        let q = _mm_loadu_si128(p as *const __m128i);
        let m = _mm_set1_epi8(0x0f);
        (
            _mm256_cvtepu8_epi16(_mm_and_si128(q, m)),
            _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(q), m)),
        )
    }
}

/// 32 bytes at `p` shifted right by `shift` bits and masked to a nibble, widened to two int16
/// vectors (values 0..16 and 16..32).
///
/// # Safety
/// AVX2; 32 readable bytes at `p`.
#[inline(always)]
unsafe fn nibbles32(p: *const u8, shift: usize) -> (__m128i, __m128i) {
    // SAFETY: 32 bytes at p (caller); register operations of AVX2.
    unsafe {
        let q = _mm256_loadu_si256(p as *const __m256i);
        let q = _mm256_srl_epi16(q, _mm_cvtsi32_si128(shift as i32));
        let q = _mm256_and_si256(q, _mm256_set1_epi8(0x0f));
        (_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q))
    }
}

struct Q8_0;
impl Layout for Q8_0 {
    const BYTES: usize = 34;
    const UNITS: usize = 1;
    #[inline(always)]
    unsafe fn unit(p: *const u8, _: usize) -> Unit {
        // SAFETY: a whole Q8_0 block at p (caller).
        unsafe {
            Unit {
                lo: _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(2) as *const __m128i)),
                hi: _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(18) as *const __m128i)),
                d: f16_at(p, 0),
                m: 0.0,
            }
        }
    }
}

struct Q4_0;
impl Layout for Q4_0 {
    const BYTES: usize = 18;
    const UNITS: usize = 1;
    #[inline(always)]
    unsafe fn unit(p: *const u8, _: usize) -> Unit {
        // SAFETY: a whole Q4_0 block at p (caller).
        let (lo, hi) = unsafe { nibbles16(p.add(2)) };
        let d = f16_at(p, 0);
        Unit {
            lo,
            hi,
            d,
            m: -8.0 * d,
        }
    }
}

struct Q4_1;
impl Layout for Q4_1 {
    const BYTES: usize = 20;
    const UNITS: usize = 1;
    #[inline(always)]
    unsafe fn unit(p: *const u8, _: usize) -> Unit {
        // SAFETY: a whole Q4_1 block at p (caller).
        let (lo, hi) = unsafe { nibbles16(p.add(4)) };
        Unit {
            lo,
            hi,
            d: f16_at(p, 0),
            m: f16_at(p, 2),
        }
    }
}

/// A Q5 block's values: nibbles at `qs`, fifth bits in the u32 at `qh`. The 32 values are
/// built as bytes (low nibbles then high nibbles, the block's order), bit `j` of `qh` spread to
/// byte `j` by one shuffle and one compare, then widened.
///
/// # Safety
/// AVX2; 4 bytes at `qh`, 16 at `qs`.
#[inline(always)]
unsafe fn q5(qh: *const u8, qs: *const u8) -> (__m256i, __m256i) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let q = _mm_loadu_si128(qs as *const __m128i);
        let m = _mm_set1_epi8(0x0f);
        let nib = _mm256_set_m128i(
            _mm_and_si128(_mm_srli_epi16::<4>(q), m),
            _mm_and_si128(q, m),
        );
        let h = _mm256_set1_epi32((qh as *const i32).read_unaligned());
        // Byte j takes byte j / 8 of qh, then keeps bit j % 8.
        let spread = _mm256_shuffle_epi8(
            h,
            _mm256_setr_epi8(
                0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3,
                3, 3, 3, 3,
            ),
        );
        let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let fifth = _mm256_and_si256(
            _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit),
            _mm256_set1_epi8(16),
        );
        let v = _mm256_or_si256(nib, fifth);
        (
            _mm256_cvtepu8_epi16(_mm256_castsi256_si128(v)),
            _mm256_cvtepu8_epi16(_mm256_extracti128_si256::<1>(v)),
        )
    }
}

struct Q5_0;
impl Layout for Q5_0 {
    const BYTES: usize = 22;
    const UNITS: usize = 1;
    #[inline(always)]
    unsafe fn unit(p: *const u8, _: usize) -> Unit {
        // SAFETY: a whole Q5_0 block at p (caller).
        let (lo, hi) = unsafe { q5(p.add(2), p.add(6)) };
        let d = f16_at(p, 0);
        Unit {
            lo,
            hi,
            d,
            m: -16.0 * d,
        }
    }
}

struct Q5_1;
impl Layout for Q5_1 {
    const BYTES: usize = 24;
    const UNITS: usize = 1;
    #[inline(always)]
    unsafe fn unit(p: *const u8, _: usize) -> Unit {
        // SAFETY: a whole Q5_1 block at p (caller).
        let (lo, hi) = unsafe { q5(p.add(4), p.add(8)) };
        Unit {
            lo,
            hi,
            d: f16_at(p, 0),
            m: f16_at(p, 2),
        }
    }
}

/// Sub-block `u`'s `d` and `m` of a Q4_K/Q5_K super-block at `p`.
#[inline(always)]
fn k4_scales(p: *const u8, u: usize) -> (f32, f32) {
    // SAFETY: the 12 scale bytes follow d and dmin in the super-block (callers).
    let scales = unsafe { std::slice::from_raw_parts(p.add(4), 12) };
    let (sc, mn) = scale_min_k4(u, scales);
    (f16_at(p, 0) * sc as f32, -(f16_at(p, 2) * mn as f32))
}

#[allow(non_camel_case_types)]
struct Q4_K;
impl Layout for Q4_K {
    const BYTES: usize = 144;
    const UNITS: usize = 8;
    #[inline(always)]
    unsafe fn unit(p: *const u8, u: usize) -> Unit {
        // SAFETY: a whole Q4_K super-block at p, u < 8 (caller).
        unsafe {
            let (lo, hi) = nibbles32(p.add(16 + 32 * (u / 2)), 4 * (u % 2));
            let (d, m) = k4_scales(p, u);
            Unit {
                lo: _mm256_cvtepu8_epi16(lo),
                hi: _mm256_cvtepu8_epi16(hi),
                d,
                m,
            }
        }
    }
}

#[allow(non_camel_case_types)]
struct Q5_K;
impl Layout for Q5_K {
    const BYTES: usize = 176;
    const UNITS: usize = 8;
    #[inline(always)]
    unsafe fn unit(p: *const u8, u: usize) -> Unit {
        // SAFETY: a whole Q5_K super-block at p, u < 8 (caller).
        unsafe {
            let (lo, hi) = nibbles32(p.add(48 + 32 * (u / 2)), 4 * (u % 2));
            // Bit u of qh[l] is value l's fifth bit: 16 where set.
            let qh = _mm256_loadu_si256(p.add(16) as *const __m256i);
            let bit = _mm256_set1_epi8(1u8.wrapping_shl(u as u32) as i8);
            let h = _mm256_and_si256(
                _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit),
                _mm256_set1_epi8(16),
            );
            let lo = _mm_or_si128(lo, _mm256_castsi256_si128(h));
            let hi = _mm_or_si128(hi, _mm256_extracti128_si256::<1>(h));
            let (d, m) = k4_scales(p, u);
            Unit {
                lo: _mm256_cvtepu8_epi16(lo),
                hi: _mm256_cvtepu8_epi16(hi),
                d,
                m,
            }
        }
    }
}

#[allow(non_camel_case_types)]
struct Q6_K;
impl Layout for Q6_K {
    const BYTES: usize = 210;
    const UNITS: usize = 8;
    #[inline(always)]
    unsafe fn unit(p: *const u8, u: usize) -> Unit {
        // SAFETY: a whole Q6_K super-block at p, u < 8 (caller).
        unsafe {
            // Unit u = 4 h + s: low nibbles from ql[64 h + 32 (s % 2)..], shifted by 4 (s / 2);
            // high pairs from qh[32 h..], shifted by 2 s.
            let (h, s) = (u / 4, u % 4);
            let (ql_lo, ql_hi) = nibbles32(p.add(64 * h + 32 * (s % 2)), 4 * (s / 2));
            let qh = _mm256_loadu_si256(p.add(128 + 32 * h) as *const __m256i);
            let qh = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * s as i32));
            let qh = _mm256_slli_epi16::<4>(_mm256_and_si256(qh, _mm256_set1_epi8(3)));
            let q_lo = _mm_or_si128(ql_lo, _mm256_castsi256_si128(qh));
            let q_hi = _mm_or_si128(ql_hi, _mm256_extracti128_si256::<1>(qh));
            let off = _mm256_set1_epi16(32);
            let sc = p.add(192 + 2 * u) as *const i8;
            let lo = _mm256_mullo_epi16(
                _mm256_sub_epi16(_mm256_cvtepu8_epi16(q_lo), off),
                _mm256_set1_epi16(sc.read() as i16),
            );
            let hi = _mm256_mullo_epi16(
                _mm256_sub_epi16(_mm256_cvtepu8_epi16(q_hi), off),
                _mm256_set1_epi16(sc.add(1).read() as i16),
            );
            Unit {
                lo,
                hi,
                d: f16_at(p, 208),
                m: 0.0,
            }
        }
    }
}

/// Row groups of four ahead whose weights are prefetched: the four rows are four streams, more
/// than the hardware prefetcher follows far enough ahead.
const PREFETCH_GROUPS: usize = 2;

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4_t<T: Layout>(w: &[u8], row_bytes: usize, x: &RowI16) -> [f32; 4] {
    let blocks = row_bytes / T::BYTES;
    let (mut a0, mut a1, mut a2, mut a3) = (
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
    );
    let mut off = [0f32; 4];
    let wp = w.as_ptr();
    for blk in 0..blocks {
        // Prefetches never fault (the address may lie past the weights): a safe intrinsic
        // in this AVX2 function.
        let ahead = PREFETCH_GROUPS * 4 * row_bytes + blk * 4 * T::BYTES;
        let mut l = 0;
        while l < 4 * T::BYTES {
            _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(ahead + l) as *const i8);
            l += 64;
        }
        for u in 0..T::UNITS {
            let b = blk * T::UNITS + u;
            // SAFETY: block `blk` of each of the 4 rows, and x.q[32 b..32 b + 32], are in
            // bounds (asserted by `dot4`).
            unsafe {
                let xp = x.q.as_ptr().add(b * QK);
                let xlo = _mm256_loadu_si256(xp as *const __m256i);
                let xhi = _mm256_loadu_si256(xp.add(16) as *const __m256i);
                let (s, sum) = (*x.s.get_unchecked(b), *x.sum.get_unchecked(b));
                let p = wp.add(blk * T::BYTES);
                macro_rules! row {
                    ($r:literal, $a:ident) => {
                        let un = T::unit(p.add($r * row_bytes), u);
                        let q = _mm256_add_epi32(
                            _mm256_madd_epi16(un.lo, xlo),
                            _mm256_madd_epi16(un.hi, xhi),
                        );
                        $a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), _mm256_set1_ps(un.d * s), $a);
                        off[$r] += un.m * sum;
                    };
                }
                row!(0, a0);
                row!(1, a1);
                row!(2, a2);
                row!(3, a3);
            }
        }
    }
    let mut out = [0f32; 4];
    for (o, (a, m)) in out.iter_mut().zip([a0, a1, a2, a3].iter().zip(off)) {
        let mut v = [0f32; 8];
        // SAFETY: an unaligned store of 8 floats into v.
        unsafe { _mm256_storeu_ps(v.as_mut_ptr(), *a) };
        *o = v.iter().sum::<f32>() + m;
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4x2_t<T: Layout>(w: &[u8], row_bytes: usize, x: [&RowI16; 2]) -> [[f32; 4]; 2] {
    let blocks = row_bytes / T::BYTES;
    let z = _mm256_setzero_ps();
    let (mut a0, mut a1, mut a2, mut a3) = (z, z, z, z);
    let (mut b0, mut b1, mut b2, mut b3) = (z, z, z, z);
    let mut off = [[0f32; 4]; 2];
    let wp = w.as_ptr();
    for blk in 0..blocks {
        let ahead = PREFETCH_GROUPS * 4 * row_bytes + blk * 4 * T::BYTES;
        let mut l = 0;
        while l < 4 * T::BYTES {
            _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(ahead + l) as *const i8);
            l += 64;
        }
        for u in 0..T::UNITS {
            let b = blk * T::UNITS + u;
            // SAFETY: block `blk` of each of the 4 rows, and both rows' q[32 b..32 b + 32], are
            // in bounds (asserted by `dot4x2`).
            unsafe {
                let (p0, p1) = (x[0].q.as_ptr().add(b * QK), x[1].q.as_ptr().add(b * QK));
                let xl0 = _mm256_loadu_si256(p0 as *const __m256i);
                let xh0 = _mm256_loadu_si256(p0.add(16) as *const __m256i);
                let xl1 = _mm256_loadu_si256(p1 as *const __m256i);
                let xh1 = _mm256_loadu_si256(p1.add(16) as *const __m256i);
                let (s0, sum0) = (*x[0].s.get_unchecked(b), *x[0].sum.get_unchecked(b));
                let (s1, sum1) = (*x[1].s.get_unchecked(b), *x[1].sum.get_unchecked(b));
                let p = wp.add(blk * T::BYTES);
                macro_rules! row {
                    ($r:literal, $a:ident, $b:ident) => {
                        let un = T::unit(p.add($r * row_bytes), u);
                        let q0 = _mm256_add_epi32(
                            _mm256_madd_epi16(un.lo, xl0),
                            _mm256_madd_epi16(un.hi, xh0),
                        );
                        $a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q0), _mm256_set1_ps(un.d * s0), $a);
                        off[0][$r] += un.m * sum0;
                        let q1 = _mm256_add_epi32(
                            _mm256_madd_epi16(un.lo, xl1),
                            _mm256_madd_epi16(un.hi, xh1),
                        );
                        $b = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q1), _mm256_set1_ps(un.d * s1), $b);
                        off[1][$r] += un.m * sum1;
                    };
                }
                row!(0, a0, b0);
                row!(1, a1, b1);
                row!(2, a2, b2);
                row!(3, a3, b3);
            }
        }
    }
    let mut out = [[0f32; 4]; 2];
    for (o, (acc, off)) in out
        .iter_mut()
        .zip([[a0, a1, a2, a3], [b0, b1, b2, b3]].iter().zip(off))
    {
        for (o, (a, m)) in o.iter_mut().zip(acc.iter().zip(off)) {
            let mut v = [0f32; 8];
            // SAFETY: an unaligned store of 8 floats into v.
            unsafe { _mm256_storeu_ps(v.as_mut_ptr(), *a) };
            *o = v.iter().sum::<f32>() + m;
        }
    }
    out
}

/// Decodes `row` (whole blocks of `dtype`) into `out` through the same units: each unit's
/// int16 values widened to f32 and `d q + m` in one FMA (for prompts, whose weights are decoded
/// once per four rows and multiplied with every activation row in f32).
///
/// # Safety
/// [`available`] is true; [`decodes`] is true for `dtype`.
pub unsafe fn decode_row(dtype: DType, row: &[u8], out: &mut [f32]) {
    assert!(
        row.len() * dtype.block_len() == out.len() * dtype.block_bytes(),
        "decode_row: {} bytes of {dtype} for {} values",
        row.len(),
        out.len()
    );
    // SAFETY: the caller guarantees the CPU features; lengths are asserted above.
    unsafe { by_layout!(dtype, decode_t(row, out)) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode_t<T: Layout>(row: &[u8], out: &mut [f32]) {
    let (rp, op) = (row.as_ptr(), out.as_mut_ptr());
    for blk in 0..row.len() / T::BYTES {
        for u in 0..T::UNITS {
            // SAFETY: block `blk` lies in `row` and its unit's 32 values in `out` (lengths
            // asserted by `decode_row`).
            unsafe {
                let un = T::unit(rp.add(blk * T::BYTES), u);
                let o = op.add((blk * T::UNITS + u) * QK);
                let (d, m) = (_mm256_set1_ps(un.d), _mm256_set1_ps(un.m));
                for (at, v) in [(0, un.lo), (16, un.hi)] {
                    let a = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(v)));
                    let b =
                        _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(v)));
                    _mm256_storeu_ps(o.add(at), _mm256_fmadd_ps(a, d, m));
                    _mm256_storeu_ps(o.add(at + 8), _mm256_fmadd_ps(b, d, m));
                }
            }
        }
    }
}

/// Decodes `row` (whole blocks of `dtype`) into the int16 units the kernels above multiply:
/// `q` the values (`row`'s count), `d` and `m` each unit's scale and offset (`w = d q + m` per
/// 32 values), for a GEMM that lays the units out for its own loop ([`super::gemm_i16`]).
///
/// # Safety
/// [`available`] is true; [`decodes`] is true for `dtype`.
pub unsafe fn decode_row_i16(
    dtype: DType,
    row: &[u8],
    q: &mut [i16],
    d: &mut [f32],
    m: &mut [f32],
) {
    assert!(
        row.len() * dtype.block_len() == q.len() * dtype.block_bytes()
            && d.len() * QK == q.len()
            && m.len() == d.len(),
        "decode_row_i16: {} bytes of {dtype} for {} values",
        row.len(),
        q.len()
    );
    // SAFETY: the caller guarantees the CPU features; lengths are asserted above.
    unsafe { by_layout!(dtype, decode_i16_t(row, q, d, m)) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode_i16_t<T: Layout>(row: &[u8], q: &mut [i16], d: &mut [f32], m: &mut [f32]) {
    let (rp, qp) = (row.as_ptr(), q.as_mut_ptr());
    for blk in 0..row.len() / T::BYTES {
        for u in 0..T::UNITS {
            let at = blk * T::UNITS + u;
            // SAFETY: block `blk` lies in `row`, its unit's 32 values in `q` and its scale and
            // offset in `d` and `m` (lengths asserted by `decode_row_i16`).
            unsafe {
                let un = T::unit(rp.add(blk * T::BYTES), u);
                _mm256_storeu_si256(qp.add(at * QK) as *mut __m256i, un.lo);
                _mm256_storeu_si256(qp.add(at * QK + 16) as *mut __m256i, un.hi);
                *d.get_unchecked_mut(at) = un.d;
                *m.get_unchecked_mut(at) = un.m;
            }
        }
    }
}

/// The largest `|q|` a unit of `dtype` holds (a Q6_K value carries its sub-block's int8 scale),
/// for a kernel that bounds its int32 sums.
pub fn max_q(dtype: DType) -> i32 {
    match dtype {
        DType::Q8_0 => 128,
        DType::Q4_0 | DType::Q4_1 | DType::Q4_K => 15,
        DType::Q5_0 | DType::Q5_1 | DType::Q5_K => 31,
        DType::Q6_K => 32 * 128,
        DType::F32
        | DType::F16
        | DType::BF16
        | DType::Q2_K
        | DType::Q3_K
        | DType::IQ4_NL
        | DType::IQ4_XS => i16::MAX as i32,
    }
}
