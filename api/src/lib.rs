//! edgecut: a compact INT8 inference runtime for the edge.
//!
//! This crate is edgecut's one stable API; `edgecut-backends`, `edgecut-runtime` and
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

mod llm;
mod session;
pub mod split;
mod stop;

pub use edgecut_backends::cpu::kernels::UnknownKernels;
pub use edgecut_backends::cpu::AttentionPrecision;
pub use edgecut_backends::DeviceKind;
pub use edgecut_models::convert::{convert, ConvertOptions, ConvertReport, Progress, WeightType};
pub use edgecut_runtime::gguf::{GgufFile, ModelId};
pub use edgecut_runtime::Message;
pub use llm::{
    Chat, Context, Finish, GenerateOptions, Generation, Llm, LlmOptions, SamplingParams,
    DEFAULT_CONTEXT,
};
pub use session::{cosine, Classification, Embeddings, Session, SessionOptions, Truncated};

/// Everything that can go wrong, each naming the file, key, tensor or input at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model file is unreadable or malformed.
    #[error(transparent)]
    File(#[from] edgecut_runtime::GgufError),
    /// The model cannot be built or run.
    #[error(transparent)]
    Model(#[from] edgecut_models::ModelError),
    /// The tokenizer cannot be built or fails.
    #[error(transparent)]
    Tokenizer(#[from] edgecut_runtime::TokenizerError),
    /// The device cannot be opened.
    #[error("device: {0}")]
    Device(String),
    /// The request itself is invalid.
    #[error("{0}")]
    Input(String),
}

/// The CPU kernel set models run with: `EDGECUT_KERNELS` if it names a set this CPU has, else
/// the best one. `Err` says that `EDGECUT_KERNELS` names a set this CPU lacks (the best set is
/// used then), for the application to report as it reports things.
pub fn cpu_kernels() -> std::result::Result<&'static str, UnknownKernels> {
    edgecut_backends::cpu::kernels::from_env().map(|k| k.name)
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
