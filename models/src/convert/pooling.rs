//! sentence-transformers' description of how a checkpoint embeds: its pooling
//! (`1_Pooling/config.json`) and longest input (`sentence_bert_config.json`), read once for
//! encoders and decoders alike.

use edgecut_format::gguf::{GgufWriter, Value};
use serde_json::Value as Json;

use super::hf::Checkpoint;
use crate::error::{ModelError, Result};

/// A pooling mode sentence-transformers names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pooling {
    Mean,
    Cls,
    Last,
}

/// The checkpoint's pooling, `None` without `1_Pooling/config.json`; a file naming none of the
/// modes edgecut runs (mean, CLS, last token) is refused rather than read as another.
pub(super) fn pooling(c: &Checkpoint) -> Result<Option<Pooling>> {
    let Some(p) = c.optional_json("1_Pooling/config.json")? else {
        return Ok(None);
    };
    let on = |k: &str| p.get(k).and_then(Json::as_bool).unwrap_or(false);
    let mode = [
        ("pooling_mode_mean_tokens", Pooling::Mean),
        ("pooling_mode_cls_token", Pooling::Cls),
        ("pooling_mode_lasttoken", Pooling::Last),
    ]
    .into_iter()
    .find(|(k, _)| on(k))
    .map(|(_, m)| m)
    .ok_or_else(|| {
        ModelError::Unsupported(format!(
            "{}: edgecut pools by mean, CLS or last token only",
            c.dir.join("1_Pooling/config.json").display()
        ))
    })?;
    Ok(Some(mode))
}

/// sentence-transformers' `max_seq_length`, if the checkpoint names one.
pub(super) fn max_seq_length(c: &Checkpoint) -> Result<Option<u64>> {
    Ok(c.optional_json("sentence_bert_config.json")?
        .and_then(|j| j.get("max_seq_length")?.as_u64()))
}

/// A decoder that sentence-transformers pools at its last token (Qwen3-Embedding, gte-Qwen: its
/// `1_Pooling/config.json`) is written as an embedder: `edgecut.pooling = "last"`, llama.cpp's
/// `{arch}.pooling_type` 3, normalisation as `modules.json` says, and its `max_seq_length`.
/// Another pooling of a decoder is refused rather than dropped.
pub(super) fn embedder_metadata(w: &mut GgufWriter, c: &Checkpoint, arch: &str) -> Result<()> {
    match pooling(c)? {
        None => return Ok(()),
        Some(Pooling::Last) => {}
        Some(other) => {
            return Err(ModelError::Unsupported(format!(
                "{}: {other:?} pooling; a decoder embeds by last-token pooling only",
                c.dir.join("1_Pooling/config.json").display()
            )))
        }
    }
    w.set("edgecut.pooling", Value::Str("last".into()));
    w.set(format!("{arch}.pooling_type"), Value::U32(3));
    w.set("edgecut.normalize", Value::Bool(c.normalizes()?));
    if let Some(n) = max_seq_length(c)? {
        w.set("edgecut.max_seq_len", Value::U32(n as u32));
    }
    Ok(())
}
