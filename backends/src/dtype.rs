//! Tensor element types, numbered as in ggml (`enum ggml_type` in ggml's `ggml.h`).

use std::fmt;

use crate::quant::{self, QuantError};

/// A tensor element type as stored in a GGUF file.
///
/// Quantized types are stored in blocks: [`DType::block_len`] values take
/// [`DType::block_bytes`] bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
// ggml's names, which users see in `edgecut inspect` and in llama.cpp alike.
#[allow(non_camel_case_types)]
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
    /// 32 values as 5-bit unsigned ints with one f16 scale: `x = (q - 16) * d`.
    Q5_0,
    /// 32 values as 5-bit unsigned ints with f16 scale and minimum: `x = q * d + m`.
    Q5_1,
    /// 256 values in 16 sub-blocks of 2-bit ints, each with a 4-bit scale and minimum.
    Q2_K,
    /// 256 values in 16 sub-blocks of 3-bit ints, each with a 6-bit scale.
    Q3_K,
    /// 256 values in 8 sub-blocks of 4-bit ints, each with a 6-bit scale and minimum.
    Q4_K,
    /// 256 values in 8 sub-blocks of 5-bit ints, each with a 6-bit scale and minimum.
    Q5_K,
    /// 256 values in 16 sub-blocks of 6-bit ints, each with an 8-bit scale.
    Q6_K,
    /// 32 values as 4-bit indices into a fixed non-linear table, one f16 scale.
    IQ4_NL,
    /// 256 values as IQ4_NL indices in 8 sub-blocks, each with a 6-bit scale.
    IQ4_XS,
    /// bfloat16: the high half of an IEEE 754 binary32.
    BF16,
}

/// Every type this crate knows, for iteration in tests and tables.
pub const ALL_DTYPES: [DType; 15] = [
    DType::F32,
    DType::F16,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q8_0,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q2_K,
    DType::Q3_K,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
    DType::IQ4_NL,
    DType::IQ4_XS,
    DType::BF16,
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
    /// Whether the GPU backend multiplies the stored blocks (`false`: it decodes them to f32 at
    /// upload, 4 to 8 times their memory, until a kernel for the type lands).
    pub gpu_blocks: bool,
}

impl DType {
    /// The format table's row for this type.
    pub const fn format(self) -> &'static BlockFormat {
        type Decode = fn(&[u8], &mut [f32]) -> Result<(), QuantError>;
        const fn row(
            ggml_id: u32,
            block_len: usize,
            block_bytes: usize,
            decode_row: Decode,
        ) -> BlockFormat {
            BlockFormat {
                ggml_id,
                block_len,
                block_bytes,
                decode_row,
                linear_cpu: true,
                linear_gpu: true,
                gpu_blocks: true,
            }
        }
        /// A type the GPU backend has no block kernel for yet: it decodes the matrices to f32.
        const fn gpu_as_f32(
            ggml_id: u32,
            block_len: usize,
            block_bytes: usize,
            decode_row: Decode,
        ) -> BlockFormat {
            BlockFormat {
                gpu_blocks: false,
                ..row(ggml_id, block_len, block_bytes, decode_row)
            }
        }
        use quant::k_quants::*;
        use quant::small_blocks::*;
        const F32: BlockFormat = gpu_as_f32(0, 1, 4, quant::f32_from_bytes);
        const F16: BlockFormat = gpu_as_f32(1, 1, 2, quant::f16_to_f32);
        const Q4_0: BlockFormat = row(2, 32, 18, quant::dequantize_q4_0);
        const Q4_1: BlockFormat = row(3, 32, 20, quant::dequantize_q4_1);
        const Q8_0: BlockFormat = row(8, 32, 34, quant::dequantize_q8_0);
        const Q5_0: BlockFormat = row(6, 32, Q5_0_BYTES, dequantize_q5_0);
        const Q5_1: BlockFormat = row(7, 32, Q5_1_BYTES, dequantize_q5_1);
        const Q2_K: BlockFormat = gpu_as_f32(10, QK_K, Q2_K_BYTES, dequantize_q2_k);
        const Q3_K: BlockFormat = gpu_as_f32(11, QK_K, Q3_K_BYTES, dequantize_q3_k);
        const Q4_K: BlockFormat = row(12, QK_K, Q4_K_BYTES, dequantize_q4_k);
        const Q5_K: BlockFormat = row(13, QK_K, Q5_K_BYTES, dequantize_q5_k);
        const Q6_K: BlockFormat = row(14, QK_K, Q6_K_BYTES, dequantize_q6_k);
        const IQ4_NL: BlockFormat = gpu_as_f32(20, 32, IQ4_NL_BYTES, dequantize_iq4_nl);
        const IQ4_XS: BlockFormat = gpu_as_f32(23, QK_K, IQ4_XS_BYTES, dequantize_iq4_xs);
        const BF16: BlockFormat = gpu_as_f32(30, 1, 2, bf16_to_f32);
        match self {
            DType::F32 => &F32,
            DType::F16 => &F16,
            DType::Q4_0 => &Q4_0,
            DType::Q4_1 => &Q4_1,
            DType::Q8_0 => &Q8_0,
            DType::Q5_0 => &Q5_0,
            DType::Q5_1 => &Q5_1,
            DType::Q2_K => &Q2_K,
            DType::Q3_K => &Q3_K,
            DType::Q4_K => &Q4_K,
            DType::Q5_K => &Q5_K,
            DType::Q6_K => &Q6_K,
            DType::IQ4_NL => &IQ4_NL,
            DType::IQ4_XS => &IQ4_XS,
            DType::BF16 => &BF16,
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

    /// Values and bytes per block of ggml type `id`, also for types edgecut cannot decode (so a
    /// file holding them can still be checked and listed); `None` for numbers ggml retired or
    /// never used. Sizes as in ggml's `ggml-common.h` and gguf-py's `GGML_QUANT_SIZES`.
    pub fn ggml_block_size(id: u32) -> Option<(usize, usize)> {
        if let Some(t) = DType::from_ggml_id(id) {
            return Some((t.block_len(), t.block_bytes()));
        }
        Some(match DType::ggml_name(id) {
            "Q8_K" => (256, 292),
            "IQ2_XXS" => (256, 66),
            "IQ2_XS" => (256, 74),
            "IQ3_XXS" => (256, 98),
            "IQ1_S" => (256, 50),
            "IQ3_S" => (256, 110),
            "IQ2_S" => (256, 82),
            "I8" => (1, 1),
            "I16" => (1, 2),
            "I32" => (1, 4),
            "I64" | "F64" => (1, 8),
            "IQ1_M" => (256, 56),
            "TQ1_0" => (256, 54),
            "TQ2_0" => (256, 66),
            "MXFP4" => (32, 17),
            _ => return None,
        })
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
        assert_eq!(DType::from_ggml_id(12), Some(DType::Q4_K));
        assert_eq!(DType::from_ggml_id(16), None);
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
