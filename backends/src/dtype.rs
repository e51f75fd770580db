//! Tensor element types, numbered as in ggml (`enum ggml_type` in ggml's `ggml.h`).

use std::fmt;

use crate::quant::{self, QuantError};

/// A tensor element type as stored in a GGUF file.
///
/// Quantized types are stored in blocks: [`DType::block_len`] values take
/// [`DType::block_bytes`] bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary16.
    F16,
    /// 32 values as 4-bit unsigned ints with one f16 scale `d`: `x = (q - 8) * d`.
    Q4_0,
    /// 32 values as 4-bit unsigned ints with f16 scale `d` and minimum `m`: `x = q * d + m`.
    Q4_1,
    /// 32 values as int8 with one f16 scale `d`: `x = q * d`.
    Q8_0,
}

/// Every type this crate knows, for iteration in tests and tables.
pub const ALL_DTYPES: [DType; 5] = [
    DType::F32,
    DType::F16,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q8_0,
];

/// What a weight format is: its ggml number, block layout, scalar reference decoder, and which
/// backends multiply it. [`DType::format`] is the one place a type's facts are matched; code
/// elsewhere asks the table (or matches exhaustively where a fast path is specific to a type).
#[derive(Clone, Copy, Debug)]
pub struct BlockFormat {
    /// The ggml type number (`GGML_TYPE_*`).
    pub ggml_id: u32,
    /// Values per block (1 for plain float types).
    pub block_len: usize,
    /// Bytes per block.
    pub block_bytes: usize,
    /// The scalar reference decoder: whole blocks of `src` into as many values of `dst`
    /// (ggml's `dequantize_row_*`; the SIMD and GPU paths are tested against it).
    pub decode_row: fn(&[u8], &mut [f32]) -> Result<(), QuantError>,
    /// Whether the CPU backend multiplies weights of this type (f32 products decode the stored
    /// blocks; int8 products re-quantize to Q8_0 at load).
    pub linear_cpu: bool,
    /// Whether the GPU backend multiplies weights of this type (it repacks them at upload).
    pub linear_gpu: bool,
}

impl DType {
    /// The format table's row for this type.
    pub const fn format(self) -> &'static BlockFormat {
        const fn row(
            ggml_id: u32,
            block_len: usize,
            block_bytes: usize,
            decode_row: fn(&[u8], &mut [f32]) -> Result<(), QuantError>,
        ) -> BlockFormat {
            BlockFormat {
                ggml_id,
                block_len,
                block_bytes,
                decode_row,
                linear_cpu: true,
                linear_gpu: true,
            }
        }
        const F32: BlockFormat = row(0, 1, 4, quant::f32_from_bytes);
        const F16: BlockFormat = row(1, 1, 2, quant::f16_to_f32);
        const Q4_0: BlockFormat = row(2, 32, 18, quant::dequantize_q4_0);
        const Q4_1: BlockFormat = row(3, 32, 20, quant::dequantize_q4_1);
        const Q8_0: BlockFormat = row(8, 32, 34, quant::dequantize_q8_0);
        match self {
            DType::F32 => &F32,
            DType::F16 => &F16,
            DType::Q4_0 => &Q4_0,
            DType::Q4_1 => &Q4_1,
            DType::Q8_0 => &Q8_0,
        }
    }

    /// The ggml type number (`GGML_TYPE_*`).
    pub const fn ggml_id(self) -> u32 {
        self.format().ggml_id
    }

    /// The type for a ggml type number, or `None` when edgecut cannot read it.
    pub fn from_ggml_id(id: u32) -> Option<DType> {
        ALL_DTYPES.into_iter().find(|t| t.ggml_id() == id)
    }

    /// ggml's name for a type number, also for the types edgecut cannot read (for error messages).
    pub fn ggml_name(id: u32) -> &'static str {
        const NAMES: [&str; 40] = [
            "F32",
            "F16",
            "Q4_0",
            "Q4_1",
            "Q4_2",
            "Q4_3",
            "Q5_0",
            "Q5_1",
            "Q8_0",
            "Q8_1",
            "Q2_K",
            "Q3_K",
            "Q4_K",
            "Q5_K",
            "Q6_K",
            "Q8_K",
            "IQ2_XXS",
            "IQ2_XS",
            "IQ3_XXS",
            "IQ1_S",
            "IQ4_NL",
            "IQ3_S",
            "IQ2_S",
            "IQ4_XS",
            "I8",
            "I16",
            "I32",
            "I64",
            "F64",
            "IQ1_M",
            "BF16",
            "Q4_0_4_4",
            "Q4_0_4_8",
            "Q4_0_8_8",
            "TQ1_0",
            "TQ2_0",
            "IQ4_NL_4_4",
            "IQ4_NL_4_8",
            "IQ4_NL_8_8",
            "MXFP4",
        ];
        NAMES.get(id as usize).copied().unwrap_or("unknown")
    }

    /// Values per block (1 for plain float types).
    pub const fn block_len(self) -> usize {
        self.format().block_len
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        self.format().block_bytes
    }

    /// Decodes `src`, whole blocks of this type, into `dst` (the scalar reference).
    pub fn decode(self, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
        (self.format().decode_row)(src, dst)
    }

    /// Whether the type is block-quantized.
    pub const fn is_quantized(self) -> bool {
        self.block_len() > 1
    }

    /// Bytes taken by `n` values, or `None` when `n` is not a whole number of blocks or the size
    /// overflows.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let bl = self.block_len() as u64;
        if !n.is_multiple_of(bl) {
            return None;
        }
        (n / bl).checked_mul(self.block_bytes() as u64)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(DType::ggml_name(self.ggml_id()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_names_match() {
        for t in ALL_DTYPES {
            assert_eq!(DType::from_ggml_id(t.ggml_id()), Some(t));
            assert_eq!(t.to_string(), format!("{t:?}"));
        }
        assert_eq!(DType::from_ggml_id(12), None);
        assert_eq!(DType::ggml_name(12), "Q4_K");
        assert_eq!(DType::ggml_name(30), "BF16");
        assert_eq!(DType::ggml_name(9999), "unknown");
    }

    #[test]
    fn sizes() {
        assert_eq!(DType::Q8_0.bytes_for(64), Some(68));
        assert_eq!(DType::Q8_0.bytes_for(33), None);
        assert_eq!(DType::F32.bytes_for(3), Some(12));
        assert_eq!(DType::F32.bytes_for(u64::MAX), None);
    }
}
