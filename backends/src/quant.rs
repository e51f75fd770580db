//! Block quantization formats, bit-compatible with ggml's reference code (`ggml-quants.c`).
//!
//! All functions take whole blocks: slice lengths must be multiples of the block length
//! (32 values) and of the block size in bytes; they return [`QuantError`] otherwise.

use half::f16;

mod blocks;
pub mod k_quants;
pub mod quantize_k;
pub mod small_blocks;
#[cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(dead_code))]
pub(crate) mod units;

pub use k_quants::{
    dequantize_q2_k, dequantize_q3_k, dequantize_q4_k, dequantize_q5_k, dequantize_q6_k, QK_K,
};
pub use small_blocks::{
    bf16_to_f32, dequantize_iq4_nl, dequantize_iq4_xs, dequantize_q5_0, dequantize_q5_1, IQ4_VALUES,
};

/// Values per block of the 32-value block types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL); the
/// K-quants and IQ4_XS use super-blocks of [`QK_K`].
pub const QK: usize = 32;
/// Bytes of one Q8_0 block: an f16 scale then 32 int8 values.
pub const Q8_0_BYTES: usize = 34;
/// Bytes of one Q4_0 block: an f16 scale then 16 bytes of packed nibbles.
pub const Q4_0_BYTES: usize = 18;
/// Bytes of one Q4_1 block: f16 scale, f16 minimum, then 16 bytes of packed nibbles.
pub const Q4_1_BYTES: usize = 20;

/// A slice whose length does not fit the block layout.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what}: length {len} is not a multiple of {multiple}")]
pub struct QuantError {
    /// Which argument was wrong.
    pub what: &'static str,
    /// Its length.
    pub len: usize,
    /// The multiple it must be.
    pub multiple: usize,
}

fn check(what: &'static str, len: usize, multiple: usize) -> Result<(), QuantError> {
    if len.is_multiple_of(multiple) {
        Ok(())
    } else {
        Err(QuantError {
            what,
            len,
            multiple,
        })
    }
}

fn check_pair(src_blocks: usize, dst_blocks: usize) -> Result<(), QuantError> {
    if src_blocks == dst_blocks {
        Ok(())
    } else {
        Err(QuantError {
            what: "output block count",
            len: dst_blocks,
            multiple: src_blocks,
        })
    }
}

/// f16 bits to f32 with integer operations only (SIMD kernels call it per block while the
/// vector units are the bottleneck): the bit construction for normal numbers, which is what
/// quantizers write as scales, and the library's conversion for zero, subnormals, infinities
/// and NaN.
#[inline(always)]
pub fn f16_bits_to_f32(h: u16) -> f32 {
    let exp = (h >> 10) & 0x1f;
    if exp != 0 && exp != 31 {
        let bits =
            ((h as u32 & 0x8000) << 16) | ((exp as u32 + 112) << 23) | ((h as u32 & 0x3ff) << 13);
        f32::from_bits(bits)
    } else {
        f16::from_bits(h).to_f32()
    }
}

#[inline]
fn read_f16(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Quantizes one block of 32 values to Q8_0 as ggml's `quantize_row_q8_0_ref` does:
/// `d = max|x| / 127`, `q = round(x / d)`. Returns the (f16-rounded) scale.
#[inline]
pub fn quantize_block_q8_0(x: &[f32; QK], q: &mut [i8; QK]) -> f16 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (qi, xi) in q.iter_mut().zip(x) {
        *qi = (xi * id).round() as i8;
    }
    f16::from_f32(d)
}

/// Quantizes `src` (a multiple of 32 values) to Q8_0 blocks in `dst`.
pub fn quantize_q8_0(src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    check("f32 input", src.len(), QK)?;
    check("Q8_0 output", dst.len(), Q8_0_BYTES)?;
    check_pair(src.len() / QK, dst.len() / Q8_0_BYTES)?;
    for (xs, out) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(Q8_0_BYTES)) {
        let mut q = [0i8; QK];
        let d = quantize_block_q8_0(xs.try_into().expect("chunk of 32"), &mut q);
        out[..2].copy_from_slice(&d.to_le_bytes());
        for (o, v) in out[2..].iter_mut().zip(q) {
            *o = v as u8;
        }
    }
    Ok(())
}

/// Quantizes to a new Q8_0 byte vector.
pub fn quantize_q8_0_vec(src: &[f32]) -> Result<Vec<u8>, QuantError> {
    let mut out = vec![0u8; src.len() / QK * Q8_0_BYTES];
    quantize_q8_0(src, &mut out)?;
    Ok(out)
}

/// Decodes Q8_0 blocks into f32 values.
pub fn dequantize_q8_0(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check("Q8_0 input", src.len(), Q8_0_BYTES)?;
    check("f32 output", dst.len(), QK)?;
    check_pair(src.len() / Q8_0_BYTES, dst.len() / QK)?;
    for (b, out) in src.chunks_exact(Q8_0_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = read_f16(b);
        for (o, &q) in out.iter_mut().zip(&b[2..]) {
            *o = q as i8 as f32 * d;
        }
    }
    Ok(())
}

/// Decodes Q4_0 blocks into f32 values: element `j` of a block is the low nibble of byte `j`,
/// element `j + 16` the high nibble; `x = (q - 8) * d`.
pub fn dequantize_q4_0(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check("Q4_0 input", src.len(), Q4_0_BYTES)?;
    check("f32 output", dst.len(), QK)?;
    check_pair(src.len() / Q4_0_BYTES, dst.len() / QK)?;
    for (b, out) in src.chunks_exact(Q4_0_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = read_f16(b);
        for (j, &byte) in b[2..].iter().enumerate() {
            out[j] = ((byte & 0x0f) as i32 - 8) as f32 * d;
            out[j + 16] = ((byte >> 4) as i32 - 8) as f32 * d;
        }
    }
    Ok(())
}

/// Decodes Q4_1 blocks into f32 values: `x = q * d + m`, nibbles ordered as in Q4_0.
pub fn dequantize_q4_1(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check("Q4_1 input", src.len(), Q4_1_BYTES)?;
    check("f32 output", dst.len(), QK)?;
    check_pair(src.len() / Q4_1_BYTES, dst.len() / QK)?;
    for (b, out) in src.chunks_exact(Q4_1_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = read_f16(b);
        let m = read_f16(&b[2..]);
        for (j, &byte) in b[4..].iter().enumerate() {
            out[j] = (byte & 0x0f) as f32 * d + m;
            out[j + 16] = (byte >> 4) as f32 * d + m;
        }
    }
    Ok(())
}

/// Decodes little-endian f16 values into f32.
pub fn f16_to_f32(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check("F16 input", src.len(), 2)?;
    check_pair(src.len() / 2, dst.len())?;
    for (b, o) in src.chunks_exact(2).zip(dst) {
        *o = read_f16(b);
    }
    Ok(())
}

/// Encodes f32 values as little-endian f16 bytes.
pub fn f32_to_f16_bytes(src: &[f32]) -> Vec<u8> {
    src.iter()
        .flat_map(|v| f16::from_f32(*v).to_le_bytes())
        .collect()
}

/// Decodes little-endian f32 bytes.
pub fn f32_from_bytes(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check("F32 input", src.len(), 4)?;
    check_pair(src.len() / 4, dst.len())?;
    for (b, o) in src.chunks_exact(4).zip(dst) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    Ok(())
}

/// Encodes f32 values as little-endian bytes.
pub fn f32_to_bytes(src: &[f32]) -> Vec<u8> {
    src.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Re-quantizes `src`, whole blocks of `dtype`, to Q8_0 (through f32): where a kernel reads
/// Q8_0 only (the int8 products of the CPU and GPU).
pub fn requantize_q8_0(dtype: crate::DType, src: &[u8]) -> Result<Vec<u8>, QuantError> {
    let values = src.len() / dtype.block_bytes().max(1) * dtype.block_len();
    let mut f = vec![0f32; values];
    dtype.decode(src, &mut f)?;
    quantize_q8_0_vec(&f)
}

/// Decodes `src`, stored as `dtype`, into f32 values; `dst.len()` is the element count.
pub fn dequantize(dtype: crate::DType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    dtype.decode(src, dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_f16_conversion_equals_the_library_for_every_value() {
        for h in 0..=u16::MAX {
            let (a, b) = (f16_bits_to_f32(h), f16::from_bits(h).to_f32());
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{h:#06x}: {a} vs {b}"
            );
        }
    }
    use proptest::prelude::*;

    #[test]
    fn q8_0_matches_ggml_reference_on_a_known_block() {
        // amax = 31 -> d = 31/127; x_j = j - 0 for j in 0..32 with one negative extreme.
        let mut x = [0f32; QK];
        for (j, v) in x.iter_mut().enumerate() {
            *v = j as f32 - 0.5;
        }
        x[0] = -31.0;
        let bytes = quantize_q8_0_vec(&x).unwrap();
        let d = f16::from_le_bytes([bytes[0], bytes[1]]).to_f32();
        assert!((d - 31.0 / 127.0).abs() < 1e-3);
        assert_eq!(bytes[2] as i8, -127);
        let mut back = [0f32; QK];
        dequantize_q8_0(&bytes, &mut back).unwrap();
        for (a, b) in x.iter().zip(back) {
            // Half a step, plus the f16 rounding of the scale (relative 2^-11, times up to 127).
            assert!((a - b).abs() <= d * 0.5 + a.abs() * 1e-3, "{a} vs {b}");
        }
    }

    #[test]
    fn q4_nibble_order() {
        // Q4_0 block: d = 1.0, byte j = (hi << 4) | lo with lo = j, hi = 15 - j.
        let mut b = vec![0u8; Q4_0_BYTES];
        b[..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
        for j in 0..16 {
            b[2 + j] = (((15 - j) << 4) | j) as u8;
        }
        let mut out = [0f32; QK];
        dequantize_q4_0(&b, &mut out).unwrap();
        assert_eq!(out[0], -8.0);
        assert_eq!(out[15], 7.0);
        assert_eq!(out[16], 7.0);
        assert_eq!(out[31], -8.0);

        let mut b1 = vec![0u8; Q4_1_BYTES];
        b1[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b1[2..4].copy_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        b1[4] = 0xf3;
        dequantize_q4_1(&b1, &mut out).unwrap();
        assert_eq!(out[0], 0.5);
        assert_eq!(out[16], 6.5);
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let mut out = [0f32; 31];
        assert!(dequantize_q8_0(&[0u8; 34], &mut out).is_err());
        assert!(quantize_q8_0_vec(&[0f32; 33]).is_err());
        let mut out64 = [0f32; 64];
        assert!(dequantize_q4_1(&[0u8; 20], &mut out64).is_err());
    }

    proptest! {
        #[test]
        fn q8_0_round_trip_error_is_half_a_step(xs in proptest::collection::vec(-100f32..100f32, 32..=256)) {
            let n = xs.len() / QK * QK;
            let xs = &xs[..n];
            let bytes = quantize_q8_0_vec(xs).unwrap();
            let mut back = vec![0f32; n];
            dequantize_q8_0(&bytes, &mut back).unwrap();
            for (blk, (a, b)) in xs.chunks(QK).zip(back.chunks(QK)).enumerate() {
                let d = f16::from_le_bytes([bytes[blk * 34], bytes[blk * 34 + 1]]).to_f32();
                for (x, y) in a.iter().zip(b) {
                    // half a quantization step, plus the f16 rounding of the scale.
                    prop_assert!((x - y).abs() <= d * 0.5 + x.abs() * 1e-3 + 1e-6);
                }
            }
        }
    }
}
