//! The loop every block decoder shares: checks that `src` is whole blocks and `dst` as many
//! values, then hands each block to the type's decoder.

use super::QuantError;

/// Decodes `src` (whole blocks of `block_bytes`) into `dst` (`block_len` values per block) with
/// `one`, which decodes a block into its values.
#[inline(always)]
pub(crate) fn each_block<const BYTES: usize, const LEN: usize>(
    what: &'static str,
    src: &[u8],
    dst: &mut [f32],
    one: impl Fn(&[u8; BYTES], &mut [f32; LEN]),
) -> Result<(), QuantError> {
    if !src.len().is_multiple_of(BYTES) {
        return Err(QuantError {
            what,
            len: src.len(),
            multiple: BYTES,
        });
    }
    if !dst.len().is_multiple_of(LEN) {
        return Err(QuantError {
            what: "f32 output",
            len: dst.len(),
            multiple: LEN,
        });
    }
    if src.len() / BYTES != dst.len() / LEN {
        return Err(QuantError {
            what: "output block count",
            len: dst.len() / LEN,
            multiple: src.len() / BYTES,
        });
    }
    for (b, o) in src.chunks_exact(BYTES).zip(dst.chunks_exact_mut(LEN)) {
        one(
            b.try_into().expect("chunk of BYTES"),
            o.try_into().expect("chunk of LEN"),
        );
    }
    Ok(())
}

/// The little-endian f16 at `b[at..at + 2]`, as f32.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    super::f16_bits_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}
