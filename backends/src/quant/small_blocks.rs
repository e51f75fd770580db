//! The 32-value block types beyond Q4_0/Q4_1/Q8_0 (Q5_0, Q5_1, IQ4_NL), IQ4_XS (IQ4_NL's
//! non-linear values in 256-value super-blocks) and BF16. Each decoder follows ggml's
//! `dequantize_row_*` operation for operation.

use super::blocks::{each_block, f16_at};
use super::k_quants::QK_K;
use super::{QuantError, QK};

/// Bytes of a Q5_0 block: f16 `d`, 32 fifth bits, 16 bytes of nibbles.
pub const Q5_0_BYTES: usize = 22;
/// Bytes of a Q5_1 block: f16 `d` and `m`, 32 fifth bits, 16 bytes of nibbles.
pub const Q5_1_BYTES: usize = 24;
/// Bytes of an IQ4_NL block: f16 `d`, 16 bytes of nibbles indexing [`IQ4_VALUES`].
pub const IQ4_NL_BYTES: usize = 18;
/// Bytes of an IQ4_XS super-block: f16 `d`, 8 six-bit scales (2 high bits in a u16, 4 low in
/// 4 bytes), 128 bytes of nibbles indexing [`IQ4_VALUES`].
pub const IQ4_XS_BYTES: usize = 136;

/// The sixteen values an IQ4 nibble stands for (ggml's `kvalues_iq4nl`): denser near zero,
/// where weights are.
pub const IQ4_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// The 5-bit values of a Q5 block: nibbles as in Q4_0 (value `j` the low nibble of byte `j`,
/// value `j + 16` its high nibble), fifth bit `j` of the little-endian u32 `qh`.
#[inline(always)]
pub fn q5_values(qh: &[u8], qs: &[u8]) -> [u8; QK] {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let mut q = [0u8; QK];
    for (j, &b) in qs.iter().enumerate() {
        q[j] = (b & 0x0f) | ((((qh >> j) & 1) as u8) << 4);
        q[j + 16] = (b >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
    q
}

/// Decodes Q5_0 blocks: `x = d * (q - 16)`.
pub fn dequantize_q5_0(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    each_block::<Q5_0_BYTES, QK>("Q5_0 input", src, dst, |b, o| {
        let d = f16_at(b, 0);
        for (o, q) in o.iter_mut().zip(q5_values(&b[2..6], &b[6..])) {
            *o = d * (q as i32 - 16) as f32;
        }
    })
}

/// Decodes Q5_1 blocks: `x = d * q + m`.
pub fn dequantize_q5_1(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    each_block::<Q5_1_BYTES, QK>("Q5_1 input", src, dst, |b, o| {
        let (d, m) = (f16_at(b, 0), f16_at(b, 2));
        for (o, q) in o.iter_mut().zip(q5_values(&b[4..8], &b[8..])) {
            *o = d * q as f32 + m;
        }
    })
}

/// Decodes IQ4_NL blocks: `x = d * IQ4_VALUES[q]`, nibbles ordered as in Q4_0.
pub fn dequantize_iq4_nl(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    each_block::<IQ4_NL_BYTES, QK>("IQ4_NL input", src, dst, |b, o| {
        let d = f16_at(b, 0);
        let (lo, hi) = o.split_at_mut(16);
        for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(&b[2..]) {
            *lo = d * IQ4_VALUES[(q & 0x0f) as usize] as f32;
            *hi = d * IQ4_VALUES[(q >> 4) as usize] as f32;
        }
    })
}

/// Sub-block `ib`'s (of 8) signed 6-bit scale in an IQ4_XS super-block, stored with an offset of
/// 32: the low nibble from `scales_l`, the high two bits from `scales_h`.
#[inline(always)]
pub fn scale_iq4_xs(ib: usize, scales_h: u16, scales_l: &[u8]) -> i32 {
    let low = (scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0f;
    let high = ((scales_h >> (2 * ib)) & 3) as u8;
    (low | (high << 4)) as i32 - 32
}

/// Decodes IQ4_XS super-blocks: `x = d * scale * IQ4_VALUES[q]` per sub-block of 32.
pub fn dequantize_iq4_xs(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    each_block::<IQ4_XS_BYTES, QK_K>("IQ4_XS input", src, dst, |b, o| {
        let d = f16_at(b, 0);
        let scales_h = u16::from_le_bytes([b[2], b[3]]);
        let (scales_l, qs) = (&b[4..8], &b[8..]);
        for (ib, o) in o.chunks_exact_mut(32).enumerate() {
            let dl = d * scale_iq4_xs(ib, scales_h, scales_l) as f32;
            let (lo, hi) = o.split_at_mut(16);
            for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(&qs[16 * ib..16 * ib + 16]) {
                *lo = dl * IQ4_VALUES[(q & 0x0f) as usize] as f32;
                *hi = dl * IQ4_VALUES[(q >> 4) as usize] as f32;
            }
        }
    })
}

/// Decodes little-endian bfloat16 values (the high half of an f32).
pub fn bf16_to_f32(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    each_block::<2, 1>("BF16 input", src, dst, |b, o| {
        o[0] = f32::from_bits((u16::from_le_bytes(*b) as u32) << 16);
    })
}
