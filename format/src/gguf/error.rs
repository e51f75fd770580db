//! Errors from reading and writing GGUF files.

use std::path::PathBuf;

/// Everything that can be wrong with a GGUF file, each naming what and where.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened, mapped or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: magic bytes are {found:02x?}, expected \"GGUF\"")]
    BadMagic {
        /// The bytes found.
        found: Vec<u8>,
    },
    /// A version other than 2 or 3.
    #[error("unsupported GGUF version {0} (edgecut reads versions 2 and 3)")]
    UnsupportedVersion(u32),
    /// The file ends before a field that must be there.
    #[error("file truncated: {what} at byte {offset} needs {need} bytes, {have} left")]
    Truncated {
        /// The field being read.
        what: String,
        /// Where it starts.
        offset: u64,
        /// Bytes it needs.
        need: u64,
        /// Bytes left in the file.
        have: u64,
    },
    /// A count that cannot be right for a file of this size.
    #[error("{what} count {count} is impossible for a file with {have} bytes left (truncated or corrupt file)")]
    BadCount {
        /// What is counted.
        what: String,
        /// The count read.
        count: u64,
        /// Bytes left in the file.
        have: u64,
    },
    /// A string that is not UTF-8.
    #[error("{what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        what: String,
        /// Where it starts.
        offset: u64,
    },
    /// A metadata value type number that GGUF does not define.
    #[error("metadata key {key:?} has unknown value type {type_id}")]
    UnknownValueType {
        /// The key.
        key: String,
        /// The type number.
        type_id: u32,
    },
    /// Arrays nested deeper than edgecut accepts.
    #[error("metadata key {key:?}: arrays nested deeper than {max}")]
    TooDeep {
        /// The key.
        key: String,
        /// The nesting limit.
        max: usize,
    },
    /// A metadata value that breaks its type's rules.
    #[error("metadata key {key:?}: {reason}")]
    BadValue {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A key that appears twice.
    #[error("metadata key {0:?} appears twice")]
    DuplicateKey(String),
    /// A tensor name that appears twice.
    #[error("tensor {0:?} appears twice")]
    DuplicateTensor(String),
    /// `general.alignment` of the wrong type or not a power of two.
    #[error("general.alignment must be a power-of-two u32, got {0}")]
    BadAlignment(String),
    /// A tensor whose dimensions make no sense.
    #[error("tensor {name:?}: {reason}")]
    BadTensor {
        /// The tensor.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor type edgecut cannot read.
    #[error("unsupported tensor type {type_name} ({type_id}) for tensor {name:?}; edgecut reads {readable}", readable = readable_types())]
    UnsupportedTensorType {
        /// The tensor.
        name: String,
        /// The ggml type number.
        type_id: u32,
        /// ggml's name for it.
        type_name: &'static str,
    },
    /// Tensor data that lies (partly) outside the file.
    #[error("tensor {name:?}: data at offset {offset} with {size} bytes runs past the data section ({data_len} bytes)")]
    TensorOutOfBounds {
        /// The tensor.
        name: String,
        /// Offset from the start of the data section.
        offset: u64,
        /// Size in bytes.
        size: u64,
        /// Size of the data section.
        data_len: u64,
    },
    /// Tensor data not on the file's alignment.
    #[error("tensor {name:?}: offset {offset} is not a multiple of the alignment {alignment}")]
    Misaligned {
        /// The tensor.
        name: String,
        /// Its offset.
        offset: u64,
        /// The alignment.
        alignment: u64,
    },
    /// Two tensors whose data overlap.
    #[error("tensors {first:?} and {second:?} overlap")]
    Overlap {
        /// The one that starts first.
        first: String,
        /// The one that starts inside it.
        second: String,
    },
    /// A metadata key that a reader needs is absent.
    #[error("metadata key {0:?} is missing")]
    MissingKey(String),
    /// A metadata key holds a value of the wrong type.
    #[error("metadata key {key:?} should be {expected}, found {found}")]
    WrongType {
        /// The key.
        key: String,
        /// The type wanted.
        expected: &'static str,
        /// The type found.
        found: &'static str,
    },
    /// A tensor that a reader needs is absent.
    #[error("tensor {0:?} is missing")]
    MissingTensor(String),
    /// Something a writer was asked to write that GGUF cannot hold.
    #[error("cannot write GGUF: {0}")]
    Write(String),
    /// A writer's source of tensor data failed.
    #[error("tensor {tensor:?}: {source}")]
    Data {
        /// The tensor being written.
        tensor: String,
        /// What the source said.
        source: DataError,
    },
}

/// The error a writer's tensor-data source returns.
pub type DataError = Box<dyn std::error::Error + Send + Sync>;

impl GgufError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GgufError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result with [`GgufError`].
pub type Result<T, E = GgufError> = std::result::Result<T, E>;

/// The types edgecut decodes, comma-separated, for error messages.
fn readable_types() -> String {
    edgecut_backends::dtype::ALL_DTYPES
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
