//! The tokenizer a model file carries, built with the `tokenizers` crate: from the whole Hugging
//! Face `tokenizer.json` under `tokenizer.huggingface.json` when present, else rebuilt from
//! llama.cpp's `tokenizer.ggml.*` arrays (WordPiece for `bert`).

use serde_json::{json, Value as Json};
use tokenizers::{PostProcessor, TruncationDirection};

use crate::gguf::{Array, GgufFile, Value};

/// Why a tokenizer could not be built or used.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The file carries no tokenizer edgecut can build.
    #[error("model file has no usable tokenizer: {0}")]
    Missing(String),
    /// The tokenizer description is invalid.
    #[error("invalid tokenizer: {0}")]
    Invalid(String),
    /// Encoding or decoding failed.
    #[error("tokenizer: {0}")]
    Encode(String),
}

/// One text, tokenized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Token count before truncation (equal to `ids.len()` when nothing was cut).
    pub full_len: usize,
}

impl Encoded {
    /// Whether the text was cut to fit.
    pub fn truncated(&self) -> bool {
        self.full_len > self.ids.len()
    }
}

/// A tokenizer, safe to share between threads.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    source: &'static str,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tokenizer({}, {} tokens)",
            self.source,
            self.vocab_size()
        )
    }
}

impl Tokenizer {
    /// The tokenizer of a model file.
    pub fn from_gguf(f: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        if let Some(Value::Str(json)) = f.get("tokenizer.huggingface.json") {
            return Self::from_json(json, "tokenizer.huggingface.json");
        }
        match f.get("tokenizer.ggml.model").and_then(Value::as_str) {
            Some("bert") => {
                Self::from_json(&wordpiece_json(f)?.to_string(), "tokenizer.ggml (bert)")
            }
            Some(other) => Err(TokenizerError::Missing(format!(
                "tokenizer.ggml.model {other:?} cannot be rebuilt yet (edgecut rebuilds bert)"
            ))),
            None => Err(TokenizerError::Missing(
                "neither tokenizer.huggingface.json nor tokenizer.ggml.model is present".into(),
            )),
        }
    }

    fn from_json(json: &str, source: &'static str) -> Result<Tokenizer, TokenizerError> {
        let mut inner: tokenizers::Tokenizer = json
            .parse()
            .map_err(|e| TokenizerError::Invalid(format!("{source}: {e}")))?;
        // The runtime decides padding and truncation per call.
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| TokenizerError::Invalid(format!("{source}: {e}")))?;
        Ok(Tokenizer { inner, source })
    }

    /// Where the tokenizer came from.
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Tokenizes `text` (with the model's special tokens when `special`), cut to at most
    /// `max_len` tokens (special tokens included) when given.
    pub fn encode(
        &self,
        text: &str,
        special: bool,
        max_len: Option<usize>,
    ) -> Result<Encoded, TokenizerError> {
        let err = |e: tokenizers::Error| TokenizerError::Encode(e.to_string());
        // Encode once without special tokens, cut the text's own tokens so that the special
        // tokens still fit, then let the post-processor add them.
        let mut enc = self.inner.encode(text, false).map_err(err)?;
        let added = match (special, self.inner.get_post_processor()) {
            (true, Some(p)) => p.added_tokens(false),
            _ => 0,
        };
        let full_len = enc.len() + added;
        if let Some(max) = max_len.filter(|&m| m < full_len) {
            enc.truncate(max.saturating_sub(added), 0, TruncationDirection::Right);
        }
        let enc = self.inner.post_process(enc, None, special).map_err(err)?;
        Ok(Encoded {
            ids: enc.get_ids().to_vec(),
            full_len,
        })
    }

    /// Decodes ids to text.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// The id of a token, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

fn strings<'a>(f: &'a GgufFile, key: &str) -> Result<&'a [String], TokenizerError> {
    match f.get(key) {
        Some(Value::Array(Array::Str(v))) => Ok(v),
        _ => Err(TokenizerError::Missing(format!(
            "{key} is missing or not an array of strings"
        ))),
    }
}

/// A Hugging Face WordPiece `tokenizer.json` rebuilt from llama.cpp's arrays. llama.cpp's
/// converter rewrites the vocabulary to "phantom space" form: `##ing` becomes `ing`, `hello`
/// becomes `\u{2581}hello`, `[CLS]`-style tokens stay. This undoes that. llama.cpp's WordPiece
/// always lower-cases, and so does this.
fn wordpiece_json(f: &GgufFile) -> Result<Json, TokenizerError> {
    const PHANTOM: char = '\u{2581}';
    let tokens = strings(f, "tokenizer.ggml.tokens")?;
    let id = |key: &str| f.get(key).and_then(Value::as_u64).map(|v| v as u32);
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    let mut specials = Vec::new();
    let types = match f.get("tokenizer.ggml.token_type") {
        Some(Value::Array(Array::I32(t))) => Some(t),
        _ => None,
    };
    for (i, t) in tokens.iter().enumerate() {
        let is_bracketed = t.starts_with('[') && t.ends_with(']') && t.len() > 2;
        let original = if is_bracketed {
            t.clone()
        } else if let Some(rest) = t.strip_prefix(PHANTOM) {
            rest.to_string()
        } else {
            format!("##{t}")
        };
        let control = types.and_then(|ty| ty.get(i)).is_some_and(|&ty| ty == 3);
        if control {
            specials.push(
                json!({"id": i, "content": original, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true}),
            );
        }
        vocab.entry(original).or_insert(json!(i));
    }
    let name = |i: Option<u32>| i.and_then(|i| tokens.get(i as usize)).cloned();
    let cls_id = id("tokenizer.ggml.cls_token_id").or(id("tokenizer.ggml.bos_token_id"));
    let sep_id = id("tokenizer.ggml.seperator_token_id").or(id("tokenizer.ggml.eos_token_id"));
    let (cls, sep) = match (name(cls_id), name(sep_id)) {
        (Some(c), Some(s)) => (c, s),
        _ => {
            return Err(TokenizerError::Missing(
                "bert tokenizer needs CLS and SEP token ids".into(),
            ))
        }
    };
    let unk = name(id("tokenizer.ggml.unknown_token_id")).unwrap_or_else(|| "[UNK]".into());
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": specials,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": cls, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": sep, "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": cls, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": sep, "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": sep, "type_id": 1}}],
            "special_tokens": {
                cls.clone(): {"id": cls, "ids": [cls_id], "tokens": [cls]},
                sep.clone(): {"id": sep, "ids": [sep_id], "tokens": [sep]},
            }
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": unk, "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    }))
}
