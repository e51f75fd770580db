//! What a session runs ([`Net`]): the kinds of embedding model behind one `Session`.

use edgecut_format::GgufFile;
use edgecut_models::{Clip, Decoder, Encoder};

/// What a session runs: a BERT-family encoder, CLIP, or a decoder pooled at its last token (an
/// LLM embedder such as Qwen3-Embedding).
pub(crate) enum Net {
    Bert(Box<Encoder>),
    /// CLIP: texts through its text tower, pictures through [`Session::embed_images`].
    Clip(Box<Clip>),
    Last {
        decoder: Box<Decoder>,
        /// Whether vectors are L2-normalised.
        normalize: bool,
    },
}

impl Net {
    pub(crate) fn file(&self) -> &GgufFile {
        match self {
            Net::Bert(e) => e.file(),
            Net::Clip(c) => c.file(),
            Net::Last { decoder, .. } => decoder.file(),
        }
    }

    pub(crate) fn hidden(&self) -> usize {
        match self {
            Net::Bert(e) => e.cfg.hidden,
            Net::Clip(c) => c.cfg.projection,
            Net::Last { decoder, .. } => decoder.config.hidden,
        }
    }

    pub(crate) fn normalize(&self) -> bool {
        match self {
            Net::Bert(e) => e.cfg.normalize,
            Net::Clip(_) => true,
            Net::Last { normalize, .. } => *normalize,
        }
    }

    pub(crate) fn n_classes(&self) -> Option<usize> {
        match self {
            Net::Bert(e) => e.n_classes(),
            Net::Clip(_) | Net::Last { .. } => None,
        }
    }

    pub(crate) fn stages(&self) -> crate::StageGraph {
        match self {
            Net::Bert(e) => e.stages(),
            Net::Clip(c) => c.stages(),
            Net::Last { decoder, .. } => decoder.stages(),
        }
    }
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Net::Bert(e) => write!(f, "{e:?}"),
            Net::Clip(c) => write!(f, "{c:?}"),
            Net::Last { decoder, .. } => write!(f, "{decoder:?} pooled at the last token"),
        }
    }
}
