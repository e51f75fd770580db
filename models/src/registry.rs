//! Which model a file holds: the one place where `general.architecture` picks an encoder or a
//! decoder. Everything above `models/` asks here ([`kind`], [`open`]) instead of matching
//! architecture names itself.

use std::sync::Arc;

use edgecut_backends::Device;
use edgecut_format::gguf::GgufFile;

use crate::bert::Encoder;
use crate::clip::Clip;
use crate::decoder::{spec, Decoder};
use crate::error::{ModelError, Result};

/// The encoder architectures: BERT's post-norm block, ModernBERT's rotary one, CLIP's two
/// pre-norm towers.
const ENCODERS: &[&str] = &["bert", "modern-bert", "clip"];

/// What a model file runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An encoder: embeddings and classification (a decoder pooled at its last token, an LLM
    /// embedder, runs as one too: see [`pools_last_token`]).
    Encoder,
    /// A decoder: generation and chat.
    Decoder,
}

/// The kind of model `file` holds, from its architecture; an architecture edgecut does not run
/// is [`ModelError::UnsupportedArchitecture`], listing those it does.
pub fn kind(file: &GgufFile) -> Result<Kind> {
    let arch = file.architecture()?;
    if ENCODERS.contains(&arch) || pools_last_token(file)? {
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

/// Whether `file` is a decoder that embeds by last-token pooling (Qwen3-Embedding, gte-Qwen):
/// edgecut's `edgecut.pooling = "last"`, or llama.cpp's `{arch}.pooling_type` 3 (LAST). Another
/// pooling on a decoder is refused rather than run as generation.
pub fn pools_last_token(file: &GgufFile) -> Result<bool> {
    let arch = file.architecture()?;
    if spec::spec(arch).is_none() {
        return Ok(false);
    }
    match (
        file.get_str("edgecut.pooling").ok(),
        file.get_u64(&format!("{arch}.pooling_type")).ok(),
    ) {
        (Some("last"), _) | (None, Some(3)) => Ok(true),
        (None, None | Some(0)) => Ok(false),
        (p, t) => Err(ModelError::Unsupported(format!(
            "a {arch} decoder with pooling {} (decoders embed by last-token pooling only)",
            p.map_or_else(|| format!("type {}", t.unwrap_or(0)), |p| format!("{p:?}"))
        ))),
    }
}

/// Whether `file` is an encoder of pictures as well as texts (CLIP), run as [`Clip`].
pub fn embeds_images(file: &GgufFile) -> Result<bool> {
    Ok(file.architecture()? == "clip")
}

/// A model loaded for a device, of whichever kind its file holds.
#[derive(Debug)]
pub enum Opened {
    /// An encoder.
    Encoder(Encoder),
    /// CLIP: images and texts into one space.
    Clip(Clip),
    /// A decoder.
    Decoder(Decoder),
}

/// Loads `file` for `dev` as the kind its architecture says (a decoder that embeds, as its
/// decoder).
pub fn open(file: Arc<GgufFile>, dev: &Device) -> Result<Opened> {
    if pools_last_token(&file)? {
        return Ok(Opened::Decoder(Decoder::load(file, dev)?));
    }
    if embeds_images(&file)? {
        return Ok(Opened::Clip(Clip::load(file, dev)?));
    }
    Ok(match kind(&file)? {
        Kind::Encoder => Opened::Encoder(Encoder::load(file, dev)?),
        Kind::Decoder => Opened::Decoder(Decoder::load(file, dev)?),
    })
}
