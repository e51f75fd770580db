//! Opening a model whatever it is: the file's architecture picks an encoder or a decoder.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use edgecut_format::GgufFile;

use crate::stages::StageGraph;
use edgecut_models::Kind;

#[cfg(doc)]
use crate::Error;
use crate::{Llm, LlmOptions, Result, Session, SessionOptions};

/// A model of either kind, opened from a file whose architecture says which. Both kinds are
/// cheap handles: a clone shares the loaded model.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Model {
    /// An encoder: embeddings and classification.
    Encoder(Session),
    /// A decoder: generation and chat.
    Decoder(Llm),
}

impl Model {
    /// The model's stages.
    pub fn stages(&self) -> StageGraph {
        match self {
            Model::Encoder(s) => s.stages(),
            Model::Decoder(l) => l.stages(),
        }
    }

    /// Each stage's time on an input of `seq` tokens (see [`Session::time_stages`],
    /// [`Llm::time_stages`]).
    pub fn time_stages(&self, seq: usize) -> Result<Vec<Duration>> {
        match self {
            Model::Encoder(s) => s.time_stages(seq),
            Model::Decoder(l) => l.time_stages(seq),
        }
    }

    /// The device in use, in words.
    pub fn device(&self) -> String {
        match self {
            Model::Encoder(s) => s.device(),
            Model::Decoder(l) => l.device(),
        }
    }

    /// The model file's identity.
    pub fn model_id(&self) -> crate::ModelId {
        match self {
            Model::Encoder(s) => s.model_id(),
            Model::Decoder(l) => l.model_id(),
        }
    }

    /// The longest input the model takes, in tokens.
    pub fn max_tokens(&self) -> usize {
        match self {
            Model::Encoder(s) => s.max_seq_len(),
            Model::Decoder(l) => l.context_len(),
        }
    }
}

impl Model {
    /// Opens `path` as the kind of model its architecture is (the model registry decides): an
    /// encoder with `encoder`'s options, a decoder with `decoder`'s; an architecture edgecut does
    /// not run is [`Error::UnsupportedArchitecture`], listing those it does.
    pub fn open(
        path: impl AsRef<Path>,
        encoder: &SessionOptions,
        decoder: &LlmOptions,
    ) -> Result<Model> {
        let file = Arc::new(GgufFile::open(path.as_ref())?);
        Ok(match edgecut_models::kind(&file)? {
            Kind::Encoder => Model::Encoder(Session::from_file(file, encoder)?),
            Kind::Decoder => Model::Decoder(Llm::from_file(file, decoder)?),
        })
    }
}
