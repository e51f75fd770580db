//! edgecut format: the model file and what is read from it (tensors, the tokenizer, the chat
//! template); the runtime built on it is the `edgecut` crate.
//!
//! 1. Models live in one self-contained GGUF v3 file ([`gguf`]), opened through a read-only memory
//!    map: tensor views borrow the map, so opening a model reads only its header.
//! 2. Everything read from a file is checked before use; hostile files give a named
//!    [`gguf::GgufError`], never a panic.
//! 3. A model's identity ([`gguf::ModelId`]) is a hash of its metadata and tensor data, so two
//!    processes can agree they run the same model.

pub mod chat_template;
pub mod gguf;
pub mod image;
pub mod tokenizer;

pub use chat_template::{ChatTemplate, Message, TemplateError, TemplateTools};
pub use edgecut_backends::DType;
pub use gguf::{
    GgufError, GgufFile, GgufWriter, ModelId, TensorInfo, TensorSpec, TensorView, Value,
};
pub use tokenizer::{Encoded, EncodedPair, TextStream, Tokenizer, TokenizerError};
