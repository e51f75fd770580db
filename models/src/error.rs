//! Errors from model conversion and model loading.

use std::path::PathBuf;

/// What can go wrong converting, loading or running a model; each names the file, key, tensor
/// or input at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A JSON file that does not parse or lacks a field.
    #[error("{}: {reason}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A safetensors file that does not parse.
    #[error("{}: invalid safetensors file: {reason}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An error from the GGUF layer.
    #[error(transparent)]
    Gguf(#[from] edgecut_format::GgufError),
    /// A model or feature edgecut does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A file of an architecture this model type does not run.
    #[error("model architecture {architecture:?} is not {expected}")]
    UnsupportedArchitecture {
        /// `general.architecture` of the file.
        architecture: String,
        /// What was needed (the architectures edgecut runs).
        expected: String,
    },
    /// A weight type the device does not multiply, found before any weight was read.
    #[error(
        "tensor {tensor:?} is stored as {dtype}, which {backend} does not multiply with {act} \
         activations (convert the model to Q8_0, or run it on another device)"
    )]
    UnsupportedWeights {
        /// The tensor.
        tensor: String,
        /// Its stored type.
        dtype: String,
        /// How the model multiplies it.
        act: String,
        /// The device, in words.
        backend: String,
    },
    /// Tokens that do not fit the context (the KV cache or the position table).
    #[error("context full: {tokens} tokens do not fit ({used} of {capacity} positions used)")]
    ContextFull {
        /// Tokens to add.
        tokens: usize,
        /// Positions already used.
        used: usize,
        /// Positions in all.
        capacity: usize,
    },
    /// Classification asked of a model without a classification head.
    #[error("this model has no classification head (cls.output.weight)")]
    NoClassifier,
    /// An op refused its operands (a shape, a token id) or the device failed.
    #[error(transparent)]
    Op(#[from] edgecut_backends::ops::OpError),
    /// A tensor that the architecture needs is absent.
    #[error("tensor {0:?} is missing from the checkpoint")]
    MissingTensor(String),
    /// A tensor whose shape is not what the configuration says.
    #[error("tensor {name:?} has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The tensor.
        name: String,
        /// The shape found (outermost first).
        found: Vec<usize>,
        /// The shape expected.
        expected: Vec<usize>,
    },
    /// Invalid input to a model call.
    #[error("{0}")]
    Input(String),
}

impl ModelError {
    // The converter's: files it reads.
    #[cfg_attr(not(feature = "convert"), allow(dead_code))]
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result with [`ModelError`].
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
