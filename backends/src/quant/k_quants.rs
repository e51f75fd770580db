//! ggml's K-quants: super-blocks of 256 values split into sub-blocks of 16 or 32, each with its
//! own 4-, 6- or 8-bit scale (and minimum) under one f16 super-block scale. The decoders follow
//! ggml's `dequantize_row_q*_K` (`ggml-quants.c`) operation for operation, so they agree bit for
//! bit with it and with gguf-py's numpy `dequantize` (the tests check the latter).

use super::blocks::{each_block, f16_at};
use super::QuantError;

/// Values per K-quant super-block (ggml's `QK_K`).
pub const QK_K: usize = 256;
/// Bytes of a Q2_K super-block: 16 scale/min nibble pairs, 64 bytes of 2-bit values, f16 `d`
/// and `dmin`.
pub const Q2_K_BYTES: usize = 84;
/// Bytes of a Q3_K super-block: 32 bytes of high-bit masks, 64 of 2-bit values, 12 of packed
/// 6-bit scales, f16 `d`.
pub const Q3_K_BYTES: usize = 110;
/// Bytes of a Q4_K super-block: f16 `d` and `dmin`, 12 bytes of packed 6-bit scales and
/// minimums, 128 bytes of nibbles.
pub const Q4_K_BYTES: usize = 144;
/// Bytes of a Q5_K super-block: as Q4_K plus 32 bytes of fifth bits.
pub const Q5_K_BYTES: usize = 176;
/// Bytes of a Q6_K super-block: 128 bytes of low nibbles, 64 of high 2-bit pairs, 16 int8
/// scales, f16 `d`.
pub const Q6_K_BYTES: usize = 210;

/// Sub-block `j`'s 6-bit scale and minimum from a Q4_K/Q5_K super-block's 12 packed bytes
/// (ggml's `get_scale_min_k4`): bytes 0-3 hold scales 0-3, bytes 4-7 minimums 0-3, each with two
/// spare high bits that, with the nibbles of bytes 8-11, make scales and minimums 4-7.
#[inline(always)]
pub fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Sub-block `i`'s (of 16) signed 6-bit scale from a Q3_K super-block's 12 packed bytes: the
/// low nibbles in bytes 0-7 (`i < 8`: low half, else high half of byte `i - 8`), the high two
/// bits in bytes 8-11; stored with an offset of 32.
#[inline(always)]
pub fn scale_q3_k(i: usize, s: &[u8]) -> i32 {
    let low = if i < 8 { s[i] & 0x0f } else { s[i - 8] >> 4 };
    let high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
    (low | (high << 4)) as i32 - 32
}

/// Decodes Q2_K super-blocks: `x = d * (sc & 15) * q - dmin * (sc >> 4)` per sub-block of 16.
pub fn dequantize_q2_k(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    each_block::<Q2_K_BYTES, QK_K>("Q2_K input", src, dst, |b, o| {
        let (scales, qs) = (&b[..16], &b[16..80]);
        let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
        for (v, o) in o.iter_mut().enumerate() {
            let (h, s, l) = (v / 128, (v / 32) % 4, v % 32);
            let q = (qs[32 * h + l] >> (2 * s)) & 3;
            let sc = scales[v / 16];
            let dl = d * (sc & 0x0f) as f32;
            let ml = dmin * (sc >> 4) as f32;
            *o = dl * q as f32 - ml;
        }
    })
}

/// Decodes Q3_K super-blocks: `x = d * sc * (q - 4 * !hbit)` per sub-block of 16.
pub fn dequantize_q3_k(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    each_block::<Q3_K_BYTES, QK_K>("Q3_K input", src, dst, |b, o| {
        let (hmask, qs, scales) = (&b[..32], &b[32..96], &b[96..108]);
        let d = f16_at(b, 108);
        let mut dl = [0f32; 16];
        for (i, dl) in dl.iter_mut().enumerate() {
            *dl = d * scale_q3_k(i, scales) as f32;
        }
        for (v, o) in o.iter_mut().enumerate() {
            let (h, s, l) = (v / 128, (v / 32) % 4, v % 32);
            let low = ((qs[32 * h + l] >> (2 * s)) & 3) as i32;
            let high = (hmask[l] >> (v / 32)) & 1;
            let q = low - if high == 0 { 4 } else { 0 };
            *o = dl[v / 16] * q as f32;
        }
    })
}

/// Decodes Q4_K super-blocks: `x = d * sc * q - dmin * m` per sub-block of 32, the nibbles of
/// 32 bytes serving two sub-blocks (low nibbles the first).
pub fn dequantize_q4_k(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    each_block::<Q4_K_BYTES, QK_K>("Q4_K input", src, dst, |b, o| {
        let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
        let (scales, qs) = (&b[4..16], &b[16..]);
        for (j, o) in o.chunks_exact_mut(64).enumerate() {
            let (s0, m0) = scale_min_k4(2 * j, scales);
            let (s1, m1) = scale_min_k4(2 * j + 1, scales);
            let (d0, n0) = (d * s0 as f32, dmin * m0 as f32);
            let (d1, n1) = (d * s1 as f32, dmin * m1 as f32);
            let (lo, hi) = o.split_at_mut(32);
            for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(&qs[32 * j..32 * j + 32]) {
                *lo = d0 * (q & 0x0f) as f32 - n0;
                *hi = d1 * (q >> 4) as f32 - n1;
            }
        }
    })
}

/// Decodes Q5_K super-blocks: Q4_K with a fifth bit per value, bit `i` of `qh[l]` for value `l`
/// of sub-block `i`.
pub fn dequantize_q5_k(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    each_block::<Q5_K_BYTES, QK_K>("Q5_K input", src, dst, |b, o| {
        let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
        let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..]);
        for (i, o) in o.chunks_exact_mut(32).enumerate() {
            let (sc, m) = scale_min_k4(i, scales);
            let (dl, ml) = (d * sc as f32, dmin * m as f32);
            let shift = 4 * (i % 2);
            for (l, o) in o.iter_mut().enumerate() {
                let low = (qs[32 * (i / 2) + l] >> shift) & 0x0f;
                let high = (qh[l] >> i) & 1;
                *o = dl * (low | (high << 4)) as f32 - ml;
            }
        }
    })
}

/// Decodes Q6_K super-blocks: `x = d * sc * (q - 32)` per sub-block of 16, `q` a low nibble
/// and two high bits.
pub fn dequantize_q6_k(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    each_block::<Q6_K_BYTES, QK_K>("Q6_K input", src, dst, |b, o| {
        let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
        let d = f16_at(b, 208);
        for (v, o) in o.iter_mut().enumerate() {
            let (h, s, l) = (v / 128, (v / 32) % 4, v % 32);
            let low = (ql[64 * h + 32 * (s % 2) + l] >> (4 * (s / 2))) & 0x0f;
            let high = (qh[32 * h + l] >> (2 * s)) & 3;
            let q = (low | (high << 4)) as i32 - 32;
            let dl = d * scales[v / 16] as i8 as f32;
            *o = dl * q as f32;
        }
    })
}
