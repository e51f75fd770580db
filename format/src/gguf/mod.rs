//! The GGUF v3 model file: layout, reader and writer.
//!
//! # Layout (all integers little-endian; spec: ggml `docs/gguf.md`, `include/gguf.h`)
//! ```text
//! magic      "GGUF"                         4 bytes
//! version    u32                            3 (2 is read too: same layout)
//! n_tensors  u64
//! n_kv       u64
//! kv[n_kv]   key: string, type: u32, value  string = u64 length + UTF-8 bytes (no NUL)
//!                                           array  = elem type u32, count u64, elements
//! info[n_tensors]  name: string, n_dims: u32, dims: u64[n_dims] (dims[0] = row length),
//!                  type: u32 (ggml type), offset: u64 (from the data section start)
//! padding    to a multiple of general.alignment (u32 key, default 32)
//! data       tensor data, each tensor at its offset, each offset a multiple of the alignment
//! ```
//! Value types: u8 0, i8 1, u16 2, i16 3, u32 4, i32 5, f32 6, bool 7, string 8, array 9, u64 10,
//! i64 11, f64 12. Tensor types follow ggml ([`edgecut_backends::DType`]).
//!
//! # Checks
//! [`parse`] trusts nothing: counts are compared with the bytes left before anything is
//! allocated, strings must lie inside the file and be UTF-8, tensors must have 1 to 4 non-zero
//! dimensions whose product fits in `i64`, a row length that is a whole number of blocks, a known
//! type, an aligned offset, data inside the data section and no overlap with another tensor.

mod error;
mod file;
mod identity;
mod parse;
mod value;
mod writer;

pub use error::{DataError, GgufError, Result};
pub use file::{GgufFile, TensorView};
pub use identity::ModelId;
pub use parse::{parse, Header, MAGIC};
pub use value::{encode_str, Array, Value, ValueType};
pub use writer::{GgufWriter, TensorSpec};

use edgecut_backends::DType;

/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Longest tensor name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// One entry of the tensor table, validated against the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name, such as `blk.0.attn_q.weight`.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions, innermost (row length) first, as GGUF stores them.
    pub dims: Vec<u64>,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
}

/// An entry of the tensor table whose type edgecut cannot decode (IQ2_XXS, TQ1_0, ...), whose
/// block size is known: the file is still checked and opened, and the tensor listed; asking
/// for it by name ([`GgufFile::require_tensor`]) is an error naming its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadableTensor {
    /// Tensor name.
    pub name: String,
    /// The ggml type number.
    pub type_id: u32,
    /// ggml's name for the type.
    pub type_name: &'static str,
    /// Dimensions, innermost first.
    pub dims: Vec<u64>,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The shape outermost first, as PyTorch and numpy print it.
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }
}
