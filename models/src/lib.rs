//! edgecut models: the encoder, the decoder with its table of architectures
//! ([`decoder::spec`]), the registry that opens either ([`registry`]), and the converter that
//! writes edgecut's GGUF.
//!
//! 1. The converter ([`convert`]) reads Hugging Face checkpoints and llama.cpp GGUF files and
//!    writes one self-contained GGUF: weights, hyper-parameters and tokenizer.
//! 2. Names and keys are llama.cpp's, so llama.cpp's tools read edgecut's files and edgecut reads
//!    theirs.

pub mod bert;
pub mod clip;
#[cfg(feature = "convert")]
pub mod convert;
pub mod decoder;
pub mod error;
pub mod kv_cache;
pub mod registry;
pub mod sampling;
pub mod stages;
pub mod weights;

pub use bert::{probabilities, Activation, Encoder};
pub use clip::{Clip, ClipConfig, ImageProcessing};
pub use decoder::{Decoder, DecoderConfig, DecoderSpec, Logits, PREFILL_CHUNK};
pub use error::{ModelError, Result};
pub use kv_cache::KvCache;
pub use registry::{embeds_images, kind, open, pools_last_token, Kind, Opened};
pub use sampling::{Sampler, SamplingParams, GREEDY_BELOW};
