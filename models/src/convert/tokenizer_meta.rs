//! llama.cpp's `tokenizer.ggml.*` keys written from a Hugging Face `tokenizer.json`, so that
//! llama.cpp can read edgecut's files too.

use std::path::Path;

use edgecut_format::gguf::{Array, GgufWriter, Value};
use serde_json::Value as Json;

use crate::error::{ModelError, Result};

/// llama.cpp's token types.
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;

/// A JSON error naming `path`.
fn json_err(path: &Path) -> impl Fn(String) -> ModelError + '_ {
    move |reason| ModelError::Json {
        path: path.to_path_buf(),
        reason,
    }
}

/// The `model` section of a parsed `tokenizer.json`, checked to be a `kind` model (what `who`
/// needs).
fn model_of<'j>(j: &'j Json, kind: &str, who: &str, path: &Path) -> Result<&'j Json> {
    let model = j
        .get("model")
        .ok_or_else(|| json_err(path)("no \"model\" section".into()))?;
    let found = model.get("type").and_then(Json::as_str).unwrap_or("");
    if found != kind {
        return Err(ModelError::Unsupported(format!(
            "{}: tokenizer model {found:?}; {who} need {kind}",
            path.display()
        )));
    }
    Ok(model)
}

/// [`model_of`] and its vocabulary map.
fn model_vocab<'j>(
    j: &'j Json,
    kind: &str,
    who: &str,
    path: &Path,
) -> Result<(&'j Json, &'j serde_json::Map<String, Json>)> {
    let err = json_err(path);
    let model = model_of(j, kind, who, path)?;
    let vocab = model
        .get("vocab")
        .and_then(Json::as_object)
        .ok_or_else(|| err("model.vocab is not a map".into()))?;
    Ok((model, vocab))
}

/// llama.cpp's token types of a vocabulary of `n`: normal, and control for the special tokens
/// `tokenizer.json` adds.
fn token_types(j: &Json, n: usize) -> Vec<i32> {
    let mut types = vec![NORMAL; n];
    for added in j
        .get("added_tokens")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let special = added.get("special").and_then(Json::as_bool) == Some(true);
        if let (true, Some(id)) = (special, added.get("id").and_then(Json::as_u64)) {
            if let Some(t) = types.get_mut(id as usize) {
                *t = CONTROL;
            }
        }
    }
    types
}

/// Sets each key to the id of its token, where the vocabulary has it.
fn set_ids<const N: usize>(
    w: &mut GgufWriter,
    id_of: impl Fn(&str) -> Option<Value>,
    keys: [(&str, &str); N],
) {
    for (key, tok) in keys {
        if let Some(v) = id_of(tok) {
            w.set(key, v);
        }
    }
}

/// Writes the WordPiece vocabulary of `tokenizer_json` as `tokenizer.ggml.*` keys.
pub(super) fn wordpiece(
    w: &mut GgufWriter,
    tokenizer_json: &str,
    type_count: usize,
    path: &Path,
) -> Result<()> {
    let err = json_err(path);
    let j: Json = serde_json::from_str(tokenizer_json).map_err(|e| err(e.to_string()))?;
    let (_, vocab) = model_vocab(&j, "WordPiece", "BERT-family checkpoints", path)?;
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
    let types = token_types(&j, tokens.len());
    let id_of = |s: &str| {
        vocab
            .get(s)
            .and_then(Json::as_u64)
            .map(|v| Value::U32(v as u32))
    };
    set_ids(
        w,
        id_of,
        [
            ("tokenizer.ggml.bos_token_id", "[CLS]"),
            ("tokenizer.ggml.eos_token_id", "[SEP]"),
            ("tokenizer.ggml.unknown_token_id", "[UNK]"),
            ("tokenizer.ggml.seperator_token_id", "[SEP]"),
            ("tokenizer.ggml.padding_token_id", "[PAD]"),
            ("tokenizer.ggml.cls_token_id", "[CLS]"),
            ("tokenizer.ggml.mask_token_id", "[MASK]"),
        ],
    );
    w.set("tokenizer.ggml.model", Value::Str("bert".into()));
    // llama.cpp's "phantom space" form of a WordPiece vocabulary (`hello` as `\u{2581}hello`,
    // `##ing` as `ing`, `[CLS]`-style tokens as they are), so llama.cpp tokenizes the file as
    // its own converter's; edgecut reads the tokenizer.json it also stores, and undoes the form
    // when a file has only these arrays (`format::tokenizer::ggml`).
    let tokens: Vec<String> = tokens
        .into_iter()
        .map(|t| {
            if t.starts_with('[') && t.ends_with(']') && t.len() > 2 {
                t
            } else if let Some(rest) = t.strip_prefix("##") {
                rest.to_string()
            } else {
                format!("\u{2581}{t}")
            }
        })
        .collect();
    w.set("tokenizer.ggml.tokens", Value::Array(Array::Str(tokens)));
    w.set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    w.set(
        "tokenizer.ggml.token_type_count",
        Value::U32(type_count as u32),
    );
    Ok(())
}

/// Writes the SentencePiece Unigram vocabulary of `tokenizer_json` (XLM-RoBERTa's) as
/// llama.cpp's `t5` keys, as its converter does: pieces with their log-probabilities, control
/// types for the special tokens, the ids of `<s>`, `</s>`, `<pad>`, `<unk>` and `<mask>`, the
/// normaliser's precompiled character map, and `<s> ... </s>` added around a text.
pub(super) fn unigram(
    w: &mut GgufWriter,
    tokenizer_json: &str,
    type_count: usize,
    path: &Path,
) -> Result<()> {
    let err = json_err(path);
    let j: Json = serde_json::from_str(tokenizer_json).map_err(|e| err(e.to_string()))?;
    let model = model_of(&j, "Unigram", "XLM-RoBERTa checkpoints", path)?;
    let vocab = model
        .get("vocab")
        .and_then(Json::as_array)
        .ok_or_else(|| err("model.vocab is not a list".into()))?;
    let mut tokens = Vec::with_capacity(vocab.len());
    let mut scores = Vec::with_capacity(vocab.len());
    for (i, entry) in vocab.iter().enumerate() {
        let (Some(piece), Some(score)) = (
            entry.get(0).and_then(Json::as_str),
            entry.get(1).and_then(Json::as_f64),
        ) else {
            return Err(err(format!("model.vocab[{i}] is not [piece, score]")));
        };
        tokens.push(piece.to_string());
        scores.push(score as f32);
    }
    let mut types = token_types(&j, tokens.len());
    let unk = model.get("unk_id").and_then(Json::as_u64);
    if let Some(t) = unk.and_then(|u| types.get_mut(u as usize)) {
        *t = UNKNOWN;
    }
    let id_of = |s: &str| {
        tokens
            .iter()
            .position(|t| t == s)
            .map(|i| Value::U32(i as u32))
    };
    set_ids(
        w,
        id_of,
        [
            ("tokenizer.ggml.bos_token_id", "<s>"),
            ("tokenizer.ggml.eos_token_id", "</s>"),
            ("tokenizer.ggml.seperator_token_id", "</s>"),
            ("tokenizer.ggml.cls_token_id", "<s>"),
            ("tokenizer.ggml.padding_token_id", "<pad>"),
            ("tokenizer.ggml.mask_token_id", "<mask>"),
        ],
    );
    if let Some(u) = unk {
        w.set("tokenizer.ggml.unknown_token_id", Value::U32(u as u32));
    }
    // The normaliser's NFKC table, base64 in tokenizer.json, raw bytes in llama.cpp's key.
    if let Some(map) = find_precompiled(j.get("normalizer")) {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(map)
            .map_err(|e| err(format!("precompiled_charsmap: {e}")))?;
        w.set(
            "tokenizer.ggml.precompiled_charsmap",
            Value::Array(Array::U8(bytes)),
        );
    }
    w.set("tokenizer.ggml.model", Value::Str("t5".into()));
    w.set("tokenizer.ggml.pre", Value::Str("default".into()));
    w.set("tokenizer.ggml.tokens", Value::Array(Array::Str(tokens)));
    w.set("tokenizer.ggml.scores", Value::Array(Array::F32(scores)));
    w.set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    w.set(
        "tokenizer.ggml.token_type_count",
        Value::U32(type_count as u32),
    );
    w.set("tokenizer.ggml.add_bos_token", Value::Bool(true));
    w.set("tokenizer.ggml.add_eos_token", Value::Bool(true));
    w.set("tokenizer.ggml.add_space_prefix", Value::Bool(true));
    Ok(())
}

/// The base64 `precompiled_charsmap` of a `Precompiled` normaliser, alone or in a sequence.
fn find_precompiled(n: Option<&Json>) -> Option<&str> {
    let n = n?;
    match n.get("type").and_then(Json::as_str)? {
        "Precompiled" => n.get("precompiled_charsmap").and_then(Json::as_str),
        "Sequence" => n
            .get("normalizers")
            .and_then(Json::as_array)?
            .iter()
            .find_map(|m| find_precompiled(Some(m))),
        _ => None,
    }
}

/// Writes the byte-level BPE vocabulary of `tokenizer_json` as llama.cpp's `gpt2` keys, with
/// BOS/EOS ids from the model's `config.json` (else `tokenizer_config.json`'s token texts).
pub(super) fn bpe(
    w: &mut GgufWriter,
    tokenizer_json: &str,
    config: &Json,
    tokenizer_config: Option<&Json>,
    path: &Path,
) -> Result<()> {
    let err = json_err(path);
    let j: Json = serde_json::from_str(tokenizer_json).map_err(|e| err(e.to_string()))?;
    let (model, vocab) = model_vocab(&j, "BPE", "Llama checkpoints", path)?;
    let added: Vec<&Json> = j
        .get("added_tokens")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .collect();
    let size = vocab
        .values()
        .chain(added.iter().filter_map(|a| a.get("id")))
        .filter_map(Json::as_u64)
        .max()
        .map_or(0, |m| m as usize + 1);
    let mut tokens: Vec<Option<String>> = vec![None; size];
    let mut types = vec![NORMAL; size];
    for (tok, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| err(format!("id of token {tok:?} is not an integer")))?;
        tokens[id as usize] = Some(tok.clone());
    }
    for a in &added {
        let (Some(id), Some(content)) = (
            a.get("id").and_then(Json::as_u64),
            a.get("content").and_then(Json::as_str),
        ) else {
            return Err(err("an added token lacks its id or content".into()));
        };
        tokens[id as usize] = Some(content.to_string());
        let special = a.get("special").and_then(Json::as_bool).unwrap_or(false);
        types[id as usize] = if special { CONTROL } else { USER_DEFINED };
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.ok_or_else(|| err(format!("token id {i} is missing from the vocabulary"))))
        .collect::<Result<_>>()?;
    // Merges are "a b" strings (older files) or ["a", "b"] pairs (newer ones).
    let merges: Vec<String> = model
        .get("merges")
        .and_then(Json::as_array)
        .ok_or_else(|| err("model.merges is not a list".into()))?
        .iter()
        .map(|m| match m {
            Json::String(s) => Ok(s.clone()),
            Json::Array(p) if p.len() == 2 => Ok(format!(
                "{} {}",
                p[0].as_str().unwrap_or_default(),
                p[1].as_str().unwrap_or_default()
            )),
            other => Err(err(format!("merge {other} is neither \"a b\" nor [a, b]"))),
        })
        .collect::<Result<_>>()?;
    let id_of = |key: &str, tok_key: &str| {
        config.get(key).and_then(Json::as_u64).or_else(|| {
            let t = tokenizer_config?.get(tok_key)?;
            let text = t.as_str().or(t.get("content").and_then(Json::as_str))?;
            tokens.iter().position(|x| x == text).map(|p| p as u64)
        })
    };
    for (key, cfg_key, tok_key) in [
        ("tokenizer.ggml.bos_token_id", "bos_token_id", "bos_token"),
        ("tokenizer.ggml.eos_token_id", "eos_token_id", "eos_token"),
        (
            "tokenizer.ggml.padding_token_id",
            "pad_token_id",
            "pad_token",
        ),
    ] {
        if let Some(id) = id_of(cfg_key, tok_key) {
            w.set(key, Value::U32(id as u32));
        }
    }
    let add_bos = tokenizer_config
        .and_then(|t| t.get("add_bos_token"))
        .and_then(Json::as_bool)
        .unwrap_or(false);
    w.set("tokenizer.ggml.model", Value::Str("gpt2".into()));
    w.set("tokenizer.ggml.add_bos_token", Value::Bool(add_bos));
    w.set("tokenizer.ggml.tokens", Value::Array(Array::Str(tokens)));
    w.set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    w.set("tokenizer.ggml.merges", Value::Array(Array::Str(merges)));
    Ok(())
}

/// Writes the vocabulary of a SentencePiece `tokenizer.model` (`bytes`, read from `path`) as
/// llama.cpp's `llama` tokenizer keys, as its converter does for Gemma: pieces, scores and
/// types, the special ids, BOS added, no space prefix unless the model asks for one. The tokens
/// `tokenizer_config.json` adds score -1000 and become control tokens where it marks them
/// special, user-defined otherwise.
pub(super) fn sentencepiece(
    w: &mut GgufWriter,
    bytes: &[u8],
    tok_config: Option<&Json>,
    path: &Path,
) -> Result<()> {
    let v = edgecut_format::tokenizer::read_sentencepiece_model(bytes)
        .map_err(|e| json_err(path)(e.to_string()))?;
    let (mut types, mut scores) = (v.types.clone(), v.scores.clone());
    if let Some(added) = tok_config
        .and_then(|t| t.get("added_tokens_decoder"))
        .and_then(Json::as_object)
    {
        // As llama.cpp's converter: added tokens score -1000, control when special.
        for (id, t) in added {
            let special = t.get("special").and_then(Json::as_bool) == Some(true);
            if let Ok(id) = id.parse::<usize>() {
                if let (Some(ty), Some(sc)) = (types.get_mut(id), scores.get_mut(id)) {
                    *ty = if special { CONTROL } else { USER_DEFINED };
                    *sc = -1000.0;
                }
            }
        }
    }
    let add_bos = tok_config
        .and_then(|t| t.get("add_bos_token"))
        .and_then(Json::as_bool)
        .unwrap_or(true);
    w.set("tokenizer.ggml.model", Value::Str("llama".into()));
    w.set("tokenizer.ggml.pre", Value::Str("default".into()));
    w.set("tokenizer.ggml.tokens", Value::Array(Array::Str(v.pieces)));
    w.set("tokenizer.ggml.scores", Value::Array(Array::F32(scores)));
    w.set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    for (key, id) in [
        ("tokenizer.ggml.bos_token_id", v.bos_id),
        ("tokenizer.ggml.eos_token_id", v.eos_id),
        ("tokenizer.ggml.unknown_token_id", v.unk_id),
        ("tokenizer.ggml.padding_token_id", v.pad_id),
    ] {
        if let Some(id) = id {
            w.set(key, Value::U32(id));
        }
    }
    w.set("tokenizer.ggml.add_bos_token", Value::Bool(add_bos));
    w.set("tokenizer.ggml.add_eos_token", Value::Bool(false));
    w.set(
        "tokenizer.ggml.add_space_prefix",
        Value::Bool(v.add_dummy_prefix),
    );
    Ok(())
}
