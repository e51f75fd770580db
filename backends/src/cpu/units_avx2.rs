//! Every block type a llama.cpp Q4_K_M, Q5_K_M or Q6_K file holds, read with AVX2 as units of
//! 32 values `w = d q + m` (`q` int16, `d` and `m` f32 per unit): a Q8_0/Q4_0/Q4_1/Q5_0/Q5_1
//! block is one unit, a Q4_K/Q5_K super-block eight (its sub-blocks, `d = d_super * scale`,
//! `m = -dmin * min`), a Q6_K super-block eight whose two halves' int8 scales multiply `q` in
//! int16 (`|q scale| <= 4096`). The int16 kernels ([`super::gemv_i16_avx2`],
//! [`super::gemm_i16`]) multiply units; a type is one [`Layout`].

use std::arch::x86_64::*;

use crate::quant::k_quants::scale_min_k4;
use crate::DType;

/// Whether this CPU can read units (AVX2 and F16C).
pub fn available() -> bool {
    super::multiversion::avx2() && std::is_x86_feature_detected!("f16c")
}

/// Whether `dtype` has a [`Layout`] (the others take the f32 path).
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
            DType::Q8_0 => $f::<$crate::cpu::units_avx2::Q8_0>($($arg),*),
            DType::Q4_0 => $f::<$crate::cpu::units_avx2::Q4_0>($($arg),*),
            DType::Q4_1 => $f::<$crate::cpu::units_avx2::Q4_1>($($arg),*),
            DType::Q5_0 => $f::<$crate::cpu::units_avx2::Q5_0>($($arg),*),
            DType::Q5_1 => $f::<$crate::cpu::units_avx2::Q5_1>($($arg),*),
            DType::Q4_K => $f::<$crate::cpu::units_avx2::Q4_K>($($arg),*),
            DType::Q5_K => $f::<$crate::cpu::units_avx2::Q5_K>($($arg),*),
            DType::Q6_K => $f::<$crate::cpu::units_avx2::Q6_K>($($arg),*),
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
pub(super) use by_layout;

/// One unit of 32 values: int16 values `lo` (0..16) and `hi` (16..32), `w = d q + m`.
pub(super) struct Unit {
    pub lo: __m256i,
    pub hi: __m256i,
    pub d: f32,
    pub m: f32,
}

/// A block layout as units of 32 values.
pub(super) trait Layout {
    /// Bytes per stored block.
    const BYTES: usize;
    /// Units of 32 per stored block.
    const UNITS: usize;
    /// The offset the stored values carry (`m = -SHIFT d`, Q4_0 and Q5_0), 0 if none.
    const SHIFT: i16 = 0;
    /// Whether units have offsets of their own (`m` read from the block).
    const OFFSETS: bool = false;
    /// The largest `|q|` of a unit, [`Layout::SHIFT`] taken off (a Q6_K value carries its
    /// sub-block's int8 scale).
    const MAX_Q: i32;
    /// Unit `u` of the block at `p`.
    ///
    /// # Safety
    /// AVX2; `p` points at a whole block, `u < UNITS`.
    unsafe fn unit(p: *const u8, u: usize) -> Unit;
    /// Whether [`Layout::unit512`] decodes in 512-bit registers of its own (else it joins
    /// [`Layout::unit`]'s two halves).
    const NATIVE_512: bool = false;
    /// Unit `u` as one vector of its 32 int16 values with [`Layout::SHIFT`] taken off, and
    /// its `d` and `m` (as [`Layout::unit`]'s).
    ///
    /// # Safety
    /// AVX-512F/BW and AVX2; `p` points at a whole block, `u < UNITS`.
    #[inline(always)]
    unsafe fn unit512(p: *const u8, u: usize) -> (__m512i, f32, f32) {
        // SAFETY: as the caller guarantees.
        unsafe {
            let un = Self::unit(p, u);
            let s = _mm256_set1_epi16(Self::SHIFT);
            let q = _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(_mm256_sub_epi16(un.lo, s)),
                _mm256_sub_epi16(un.hi, s),
            );
            (q, un.d, un.m)
        }
    }
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

pub(super) struct Q8_0;
impl Layout for Q8_0 {
    const MAX_Q: i32 = 128;
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

/// The unit of a 32-value block at `p` with values `(lo, hi)`: `d` the f16 at byte 0, `m` the
/// f16 at byte 2 where the layout has offsets (Q4_1, Q5_1), else `-SHIFT d` (Q4_0, Q5_0).
#[inline(always)]
fn small_unit<T: Layout>(p: *const u8, (lo, hi): (__m256i, __m256i)) -> Unit {
    let d = f16_at(p, 0);
    let m = if T::OFFSETS {
        f16_at(p, 2)
    } else {
        -(T::SHIFT as f32) * d
    };
    Unit { lo, hi, d, m }
}

pub(super) struct Q4_0;
impl Layout for Q4_0 {
    const MAX_Q: i32 = 8;
    const SHIFT: i16 = 8;
    const BYTES: usize = 18;
    const UNITS: usize = 1;
    #[inline(always)]
    unsafe fn unit(p: *const u8, _: usize) -> Unit {
        // SAFETY: a whole Q4_0 block at p (caller).
        small_unit::<Self>(p, unsafe { nibbles16(p.add(2)) })
    }
}

pub(super) struct Q4_1;
impl Layout for Q4_1 {
    const MAX_Q: i32 = 15;
    const OFFSETS: bool = true;
    const BYTES: usize = 20;
    const UNITS: usize = 1;
    #[inline(always)]
    unsafe fn unit(p: *const u8, _: usize) -> Unit {
        // SAFETY: a whole Q4_1 block at p (caller).
        small_unit::<Self>(p, unsafe { nibbles16(p.add(4)) })
    }
}

/// The 16 bytes of nibbles at `qs` as 32 bytes in the block's order: low nibbles (values
/// 0..16), then high nibbles (16..32).
///
/// # Safety
/// AVX2; 16 readable bytes at `qs`.
#[inline(always)]
unsafe fn nibble_bytes(qs: *const u8) -> __m256i {
    // SAFETY: as the caller guarantees.
    unsafe {
        let q = _mm_loadu_si128(qs as *const __m128i);
        let m = _mm_set1_epi8(0x0f);
        _mm256_set_m128i(
            _mm_and_si128(_mm_srli_epi16::<4>(q), m),
            _mm_and_si128(q, m),
        )
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
        let nib = nibble_bytes(qs);
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

/// [`q5`] in one 512-bit register, [`Layout::SHIFT`] `shift` taken off: the nibbles widened
/// to int16 and the fifth bits read as a mask register, so each is a masked add (half the
/// instructions of the AVX2 spread-and-compare, and no joining of halves).
///
/// # Safety
/// AVX-512F/BW and AVX2; 4 bytes at `qh`, 16 at `qs`.
#[inline(always)]
unsafe fn q5_512(qh: *const u8, qs: *const u8, shift: i16) -> __m512i {
    // SAFETY: as the caller guarantees.
    unsafe {
        let v = _mm512_cvtepu8_epi16(nibble_bytes(qs));
        // Bit j of qh is value j's fifth bit (value j is lane j).
        let fifth: __mmask32 = (qh as *const u32).read_unaligned();
        let v = _mm512_mask_add_epi16(v, fifth, v, _mm512_set1_epi16(16));
        _mm512_sub_epi16(v, _mm512_set1_epi16(shift))
    }
}

pub(super) struct Q5_0;
impl Layout for Q5_0 {
    const MAX_Q: i32 = 16;
    const SHIFT: i16 = 16;
    const BYTES: usize = 22;
    const UNITS: usize = 1;
    const NATIVE_512: bool = true;
    #[inline(always)]
    unsafe fn unit(p: *const u8, _: usize) -> Unit {
        // SAFETY: a whole Q5_0 block at p (caller).
        small_unit::<Self>(p, unsafe { q5(p.add(2), p.add(6)) })
    }
    #[inline(always)]
    unsafe fn unit512(p: *const u8, _: usize) -> (__m512i, f32, f32) {
        let d = f16_at(p, 0);
        // SAFETY: a whole Q5_0 block at p, and the features (caller).
        (
            unsafe { q5_512(p.add(2), p.add(6), Self::SHIFT) },
            d,
            -(Self::SHIFT as f32) * d,
        )
    }
}

pub(super) struct Q5_1;
impl Layout for Q5_1 {
    const MAX_Q: i32 = 31;
    const OFFSETS: bool = true;
    const BYTES: usize = 24;
    const UNITS: usize = 1;
    const NATIVE_512: bool = true;
    #[inline(always)]
    unsafe fn unit(p: *const u8, _: usize) -> Unit {
        // SAFETY: a whole Q5_1 block at p (caller).
        small_unit::<Self>(p, unsafe { q5(p.add(4), p.add(8)) })
    }
    #[inline(always)]
    unsafe fn unit512(p: *const u8, _: usize) -> (__m512i, f32, f32) {
        // SAFETY: a whole Q5_1 block at p, and the features (caller).
        let q = unsafe { q5_512(p.add(4), p.add(8), Self::SHIFT) };
        (q, f16_at(p, 0), f16_at(p, 2))
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
pub(super) struct Q4_K;
impl Layout for Q4_K {
    const MAX_Q: i32 = 15;
    const OFFSETS: bool = true;
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
pub(super) struct Q5_K;
impl Layout for Q5_K {
    const MAX_Q: i32 = 31;
    const OFFSETS: bool = true;
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
pub(super) struct Q6_K;
impl Layout for Q6_K {
    const MAX_Q: i32 = 32 * 128;
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

/// What a GEMM needs to know of `dtype`'s units ([`decodes`] is true for it).
#[derive(Clone, Copy, Debug)]
pub struct UnitFacts {
    /// The largest `|q|` of a unit, the stored offset ([`Layout::SHIFT`]) taken off.
    pub max_q: i32,
    /// Whether its units have offsets `m` once that offset is taken off.
    pub offsets: bool,
    /// Whether its units decode in 512-bit registers of their own ([`Layout::NATIVE_512`]).
    pub native_512: bool,
}

/// [`UnitFacts`] of `dtype`.
pub fn unit_facts(dtype: DType) -> UnitFacts {
    fn of<T: Layout>() -> UnitFacts {
        UnitFacts {
            max_q: T::MAX_Q,
            offsets: T::OFFSETS,
            native_512: T::NATIVE_512,
        }
    }
    by_layout!(dtype, of())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `T::unit512` against `T::unit`'s halves with the offset taken off, on blocks of every
    /// fifth-bit pattern the generator makes (all clear, all set, alternating, random).
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    unsafe fn native_matches_halves<T: Layout>(blocks: &[u8]) {
        for (i, b) in blocks.chunks_exact(T::BYTES).enumerate() {
            // SAFETY: each chunk is a whole block; the features are enabled here.
            let (q, d, m) = unsafe { T::unit512(b.as_ptr(), 0) };
            // SAFETY: as above.
            let un = unsafe { T::unit(b.as_ptr(), 0) };
            let (mut got, mut lo, mut hi) = ([0i16; 32], [0i16; 16], [0i16; 16]);
            // SAFETY: 64 and 32 bytes into arrays of those sizes.
            unsafe {
                _mm512_storeu_si512(got.as_mut_ptr() as *mut _, q);
                _mm256_storeu_si256(lo.as_mut_ptr() as *mut _, un.lo);
                _mm256_storeu_si256(hi.as_mut_ptr() as *mut _, un.hi);
            }
            let want: Vec<i16> = lo.iter().chain(&hi).map(|v| v - T::SHIFT).collect();
            assert_eq!(got.to_vec(), want, "block {i}: values");
            assert_eq!(
                (d.to_bits(), m.to_bits()),
                (un.d.to_bits(), un.m.to_bits()),
                "block {i}"
            );
        }
    }

    #[test]
    fn the_512_bit_q5_units_equal_the_avx2_ones() {
        let ok = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && available();
        if !super::super::x86::runs_here(ok, "the 512-bit Q5 units") {
            return;
        }
        let mut s = 7u64;
        let mut byte = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        };
        for (bytes, qh_at) in [(Q5_0::BYTES, 2), (Q5_1::BYTES, 4)] {
            let mut blocks = Vec::new();
            for pattern in [0u32, u32::MAX, 0x5555_5555, 0xa5c3_0ff0, 0, 0, 0, 0] {
                let mut b: Vec<u8> = (0..bytes).map(|_| byte()).collect();
                // Normal f16 scales (and offsets) so that d and m are plain numbers.
                b[..qh_at].copy_from_slice(&[0x34, 0x2a, 0x12, 0xb0][..qh_at]);
                let qh = if pattern == 0 {
                    u32::from_le_bytes([byte(), byte(), byte(), byte()])
                } else {
                    pattern
                };
                b[qh_at..qh_at + 4].copy_from_slice(&qh.to_le_bytes());
                blocks.extend(b);
            }
            // SAFETY: the features were detected above.
            unsafe {
                if bytes == Q5_0::BYTES {
                    native_matches_halves::<Q5_0>(&blocks)
                } else {
                    native_matches_halves::<Q5_1>(&blocks)
                }
            }
        }
    }
}
