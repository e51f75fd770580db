//! Which model a file holds: the one place where `general.architecture` picks an encoder or a
//! decoder. Everything above `models/` asks here ([`kind`], [`open`]) instead of matching
//! architecture names itself.

use std::sync::Arc;

use edgecut_backends::Device;
use edgecut_format::gguf::GgufFile;

use crate::bert::Encoder;
use crate::decoder::{spec, Decoder};
use crate::error::{ModelError, Result};

/// The encoder architectures (BERT's post-norm block).
const ENCODERS: &[&str] = &["bert"];

/// What a model file runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An encoder: embeddings and classification.
    Encoder,
    /// A decoder: generation and chat.
    Decoder,
}

/// The kind of model `file` holds, from its architecture; an architecture edgecut does not run
/// is [`ModelError::UnsupportedArchitecture`], listing those it does.
pub fn kind(file: &GgufFile) -> Result<Kind> {
    let arch = file.architecture()?;
    if ENCODERS.contains(&arch) {
        Ok(Kind::Encoder)
    } else if spec::spec(arch).is_some() {
        Ok(Kind::Decoder)
    } else {
        Err(ModelError::UnsupportedArchitecture {
            architecture: arch.to_string(),
            expected: format!(
                "an architecture edgecut runs (encoders: {}; decoders: {})",
                ENCODERS
                    .iter()
                    .map(|a| format!("{a:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                spec::names()
            ),
        })
    }
}

/// A model loaded for a device, of whichever kind its file holds.
#[derive(Debug)]
pub enum Opened {
    /// An encoder.
    Encoder(Encoder),
    /// A decoder.
    Decoder(Decoder),
}

/// Loads `file` for `dev` as the kind its architecture says.
pub fn open(file: Arc<GgufFile>, dev: &Device) -> Result<Opened> {
    Ok(match kind(&file)? {
        Kind::Encoder => Opened::Encoder(Encoder::load(file, dev)?),
        Kind::Decoder => Opened::Decoder(Decoder::load(file, dev)?),
    })
}
