//! edgecut: a compact INT8 inference runtime for the edge.
//!
//! This crate is edgecut's one stable API; `edgecut-backends`, `edgecut-format` and
//! `edgecut-models` are internals that may change.
//!
//! ```no_run
//! let session = edgecut::Session::open("all-MiniLM-L6-v2.q8_0.gguf", &Default::default())?;
//! let out = session.embed(&["A man is eating food.", "A man is riding a horse."])?;
//! println!("similarity {}", edgecut::cosine(&out.vectors[0], &out.vectors[1]));
//! # Ok::<(), edgecut::Error>(())
//! ```
//!
//! Decoders generate text, streamed piece by piece:
//!
//! ```no_run
//! let llm = edgecut::Llm::open("SmolLM2-135M-Instruct.Q4_1.gguf", &Default::default())?;
//! let mut chat = edgecut::Chat::new(&llm, None)?;
//! let opts = edgecut::GenerateOptions::default();
//! chat.send("What is the capital of France?", &opts, &mut |piece| {
//!     print!("{piece}");
//!     true
//! })?;
//! # Ok::<(), edgecut::Error>(())
//! ```

mod decode_server;
mod decode_split;
mod device;
mod draw;
mod generate_options;
mod generation;
mod guide;
mod images;
mod inspect;
mod llm;
mod model;
mod net;
mod session;
pub mod split;
pub mod stages;
mod stop;

pub use device::SharedDevice;
pub use edgecut_backends::AttentionPrecision;
pub use edgecut_backends::KvType;
pub use edgecut_backends::UnknownKernels;
pub use edgecut_backends::{DeviceError, DeviceKind};
pub use edgecut_format::gguf::{GgufFile, ModelId};
pub use edgecut_format::image::{ImageError, ImageLimits};
pub use edgecut_format::{Message, TemplateTools};
#[cfg(feature = "convert")]
pub use edgecut_models::convert::{convert, ConvertOptions, ConvertReport, Progress, WeightType};
pub use edgecut_models::DecoderConfig;
pub use generation::Turn;
pub use guide::{guided_schema, Constraint, Guide, MAX_CONSTRAINT_BYTES};
pub use images::LabelScore;
pub use inspect::{describe_file, kv_contexts, unreadable_by_type};
pub use llm::{
    Chat, Context, Finish, GenerateOptions, Generation, Llm, LlmOptions, SamplingParams,
    TokenLogprob, DEFAULT_CONTEXT,
};
pub use model::Model;
pub use session::{
    cosine, sigmoid, Classification, Embeddings, Reranked, Session, SessionOptions, Truncated,
};
pub use stages::{Stage, StageGraph, StageId, StageOutput};

// The handles are shared between threads: a compile-time check that they stay shareable.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<Session>();
    shareable::<Llm>();
    shareable::<Context>();
    shareable::<Chat>();
    shareable::<Model>();
};

/// Everything that can go wrong, each naming the file, key, tensor or input at fault. Match on
/// the variants an application handles (a full context, a model without a classifier, a device
/// that is missing); the rest carry their cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model file is unreadable or malformed.
    #[error(transparent)]
    File(#[from] edgecut_format::GgufError),
    /// The model cannot be built or run (a missing or misshapen tensor, an unsupported
    /// feature, an op that refused its operands).
    #[error(transparent)]
    Model(edgecut_models::ModelError),
    /// The tokenizer cannot be built or fails.
    #[error(transparent)]
    Tokenizer(#[from] edgecut_format::TokenizerError),
    /// The device cannot be opened.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The file's architecture is not what was asked for (or none edgecut runs).
    #[error("model architecture {architecture:?} is not {expected}")]
    UnsupportedArchitecture {
        /// `general.architecture` of the file.
        architecture: String,
        /// What was needed.
        expected: String,
    },
    /// Tokens that do not fit the context.
    #[error("context full: {tokens} tokens do not fit ({used} of {capacity} positions used)")]
    ContextFull {
        /// Tokens to add (for a prompt: its tokens and the first one it generates).
        tokens: usize,
        /// Positions already used.
        used: usize,
        /// Positions in all.
        capacity: usize,
    },
    /// Classification asked of a model without a classification head.
    #[error("this model has no classification head; embed with it instead")]
    NoClassifier,
    /// The request itself is invalid.
    #[error("{0}")]
    Input(String),
    /// A picture cannot be read (not PNG or JPEG, corrupt, over a limit).
    #[error("image {index}: {source}")]
    Image {
        /// Which picture of the request (from 0).
        index: usize,
        /// Why.
        source: edgecut_format::image::ImageError,
    },
}

impl From<edgecut_models::ModelError> for Error {
    fn from(e: edgecut_models::ModelError) -> Error {
        use edgecut_models::ModelError as M;
        match e {
            M::ContextFull {
                tokens,
                used,
                capacity,
            } => Error::ContextFull {
                tokens,
                used,
                capacity,
            },
            M::NoClassifier => Error::NoClassifier,
            M::UnsupportedArchitecture {
                architecture,
                expected,
            } => Error::UnsupportedArchitecture {
                architecture,
                expected,
            },
            M::Gguf(e) => Error::File(e),
            other => Error::Model(other),
        }
    }
}

/// The CPU kernel set models run with: `EDGECUT_KERNELS` if it names a set this CPU has, else
/// the best one. `Err` says that `EDGECUT_KERNELS` names a set this CPU lacks (the best set is
/// used then), for the application to report as it reports things.
pub fn cpu_kernels() -> std::result::Result<&'static str, UnknownKernels> {
    edgecut_backends::cpu_kernels_from_env()
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
