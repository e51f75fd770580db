//! llama.cpp's `tokenizer.ggml.*` keys written from a Hugging Face `tokenizer.json`, so that
//! llama.cpp can read edgecut's files too.

use std::path::Path;

use edgecut_runtime::gguf::{Array, GgufWriter, Value};
use serde_json::Value as Json;

use crate::error::{ModelError, Result};

/// llama.cpp's token types.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;

/// Writes the WordPiece vocabulary of `tokenizer_json` as `tokenizer.ggml.*` keys.
pub(super) fn wordpiece(
    w: &mut GgufWriter,
    tokenizer_json: &str,
    type_count: usize,
    path: &Path,
) -> Result<()> {
    let err = |reason: String| ModelError::Json {
        path: path.to_path_buf(),
        reason,
    };
    let j: Json = serde_json::from_str(tokenizer_json).map_err(|e| err(e.to_string()))?;
    let model = j
        .get("model")
        .ok_or_else(|| err("no \"model\" section".into()))?;
    let kind = model.get("type").and_then(Json::as_str).unwrap_or("");
    if kind != "WordPiece" {
        return Err(ModelError::Unsupported(format!(
            "{}: tokenizer model {kind:?}; BERT-family checkpoints need WordPiece",
            path.display()
        )));
    }
    let vocab = model
        .get("vocab")
        .and_then(Json::as_object)
        .ok_or_else(|| err("model.vocab is not a map".into()))?;
    let mut tokens = vec![None; vocab.len()];
    for (tok, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| err(format!("id of token {tok:?} is not an integer")))?
            as usize;
        let slot = tokens
            .get_mut(id)
            .ok_or_else(|| err(format!("token id {id} is past the vocabulary size")))?;
        if slot.replace(tok.clone()).is_some() {
            return Err(err(format!("token id {id} is used twice")));
        }
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.ok_or_else(|| err(format!("token id {i} is missing from the vocabulary"))))
        .collect::<Result<_>>()?;
    let mut types = vec![NORMAL; tokens.len()];
    for added in j
        .get("added_tokens")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let special = added
            .get("special")
            .and_then(Json::as_bool)
            .unwrap_or(false);
        if let (true, Some(id)) = (special, added.get("id").and_then(Json::as_u64)) {
            if let Some(t) = types.get_mut(id as usize) {
                *t = CONTROL;
            }
        }
    }
    let id_of = |s: &str| {
        vocab
            .get(s)
            .and_then(Json::as_u64)
            .map(|v| Value::U32(v as u32))
    };
    for (key, tok) in [
        ("tokenizer.ggml.bos_token_id", "[CLS]"),
        ("tokenizer.ggml.eos_token_id", "[SEP]"),
        ("tokenizer.ggml.unknown_token_id", "[UNK]"),
        ("tokenizer.ggml.seperator_token_id", "[SEP]"),
        ("tokenizer.ggml.padding_token_id", "[PAD]"),
        ("tokenizer.ggml.cls_token_id", "[CLS]"),
        ("tokenizer.ggml.mask_token_id", "[MASK]"),
    ] {
        if let Some(v) = id_of(tok) {
            w.set(key, v);
        }
    }
    w.set("tokenizer.ggml.model", Value::Str("bert".into()));
    w.set("tokenizer.ggml.tokens", Value::Array(Array::Str(tokens)));
    w.set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    w.set(
        "tokenizer.ggml.token_type_count",
        Value::U32(type_count as u32),
    );
    Ok(())
}
