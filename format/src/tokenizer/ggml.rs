//! Tokenizers rebuilt from llama.cpp's `tokenizer.ggml.*` arrays, as Hugging Face
//! `tokenizer.json` documents: WordPiece for `bert`, byte-level BPE for `gpt2`, SentencePiece
//! Unigram for `t5` (XLM-RoBERTa's vocabulary as llama.cpp stores it).

use serde_json::{json, Value as Json};

use super::TokenizerError;
use crate::gguf::{Array, GgufFile, Value};

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
pub(super) fn wordpiece_json(f: &GgufFile) -> Result<Json, TokenizerError> {
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

/// The pre-tokenizer of a byte-level BPE vocabulary, from llama.cpp's `tokenizer.ggml.pre` name.
/// Only the splits llama.cpp itself knows are rebuilt; an unknown name is an error rather than
/// a tokenizer that would give different ids.
fn bpe_pre_tokenizer(pre: &str) -> Result<Json, TokenizerError> {
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                            "use_regex": true});
    match pre {
        // GPT-2's own split.
        "default" | "gpt2" | "gpt-2" => Ok(byte_level),
        // GPT-2's split after every digit is cut off on its own (StarCoder's tokenizer family,
        // SmolLM's included): llama.cpp's `\p{N}` regex before GPT-2's.
        "smollm" | "starcoder" | "refact" | "codeshell" => Ok(json!({
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level]
        })),
        // Qwen2/2.5/3's split (single digits) and Llama 3's (runs of up to three digits): the
        // regexes of their tokenizer.json files, which llama.cpp's `qwen2` and `llama-bpe` name.
        "qwen2" | "llama-bpe" | "llama3" => {
            let digits = if pre == "qwen2" {
                r"\p{N}"
            } else {
                r"\p{N}{1,3}"
            };
            let pattern = format!(
                r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|{digits}| ?[^\s\p{{L}}\p{{N}}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
            );
            Ok(json!({
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated",
                     "invert": false},
                    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false,
                     "use_regex": false}
                ]
            }))
        }
        other => Err(TokenizerError::Missing(format!(
            "byte-level BPE pre-tokenizer {other:?} cannot be rebuilt yet (edgecut rebuilds \
             gpt2, smollm/starcoder, qwen2 and llama-bpe); convert the model from its Hugging \
             Face directory to embed its tokenizer.json"
        ))),
    }
}

/// A Hugging Face byte-level BPE `tokenizer.json` (GPT-2 style) rebuilt from llama.cpp's arrays:
/// the vocabulary and merges as they are, control tokens (type 3) as special added tokens,
/// user-defined ones (type 4) as plain added tokens, and a leading BOS when
/// `tokenizer.ggml.add_bos_token` says so.
pub(super) fn bpe_json(f: &GgufFile) -> Result<Json, TokenizerError> {
    let tokens = strings(f, "tokenizer.ggml.tokens")?;
    let merges = strings(f, "tokenizer.ggml.merges")?;
    let types = match f.get("tokenizer.ggml.token_type") {
        Some(Value::Array(Array::I32(t))) => Some(t),
        _ => None,
    };
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    let mut added = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let ty = types.and_then(|ty| ty.get(i)).copied().unwrap_or(1);
        if ty == 3 || ty == 4 {
            added.push(
                json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                              "rstrip": false, "normalized": ty == 4, "special": ty == 3}),
            );
        }
        if vocab.insert(t.clone(), json!(i)).is_some() {
            return Err(TokenizerError::Invalid(format!(
                "tokenizer.ggml.tokens has {t:?} twice"
            )));
        }
    }
    let pre = f
        .get("tokenizer.ggml.pre")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let add_bos = f
        .get("tokenizer.ggml.add_bos_token")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let bos = f
        .get("tokenizer.ggml.bos_token_id")
        .and_then(Value::as_u64)
        .and_then(|i| tokens.get(i as usize).map(|t| (i, t)));
    let post = match (add_bos, bos) {
        (true, Some((id, t))) => json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {t.clone(): {"id": t, "ids": [id], "tokens": [t]}}
        }),
        (true, None) => {
            return Err(TokenizerError::Missing(
                "tokenizer.ggml.add_bos_token is set but there is no valid bos_token_id".into(),
            ))
        }
        (false, _) => Json::Null,
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": bpe_pre_tokenizer(pre)?,
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                    "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    }))
}

/// A Hugging Face SentencePiece Unigram `tokenizer.json` (XLM-RoBERTa's) rebuilt from llama.cpp's
/// `t5` arrays: pieces and scores, control tokens (type 3) as special added tokens, the
/// precompiled NFKC map as the normaliser, whitespace as the `transformers` converter treats it
/// (trailing spaces dropped, runs of spaces as one), `<s> A </s>` / `<s> A </s></s> B </s>`
/// around texts when `tokenizer.ggml.add_bos_token` and `add_eos_token` say so (both default on,
/// as llama.cpp's converter writes them for XLM-RoBERTa).
pub(super) fn unigram_json(f: &GgufFile) -> Result<Json, TokenizerError> {
    use base64::Engine;
    let tokens = strings(f, "tokenizer.ggml.tokens")?;
    let scores = match f.get("tokenizer.ggml.scores") {
        Some(Value::Array(Array::F32(s))) if s.len() == tokens.len() => s,
        _ => {
            return Err(TokenizerError::Missing(
                "tokenizer.ggml.scores is missing, not f32, or not one per token".into(),
            ))
        }
    };
    let types = match f.get("tokenizer.ggml.token_type") {
        Some(Value::Array(Array::I32(t))) => Some(t),
        _ => None,
    };
    let id = |key: &str| {
        f.get(key)
            .and_then(Value::as_u64)
            .filter(|&i| (i as usize) < tokens.len())
    };
    let unk = id("tokenizer.ggml.unknown_token_id").ok_or_else(|| {
        TokenizerError::Missing("a Unigram vocabulary needs tokenizer.ggml.unknown_token_id".into())
    })?;
    let mut added = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if types.and_then(|ty| ty.get(i)).is_some_and(|&ty| ty == 3) {
            added.push(
                json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": true}),
            );
        }
    }
    let vocab: Vec<Json> = tokens
        .iter()
        .zip(scores)
        .map(|(t, s)| json!([t, s]))
        .collect();
    let mut normalizers = Vec::new();
    if let Some(Value::Array(Array::U8(map))) = f.get("tokenizer.ggml.precompiled_charsmap") {
        let map = base64::engine::general_purpose::STANDARD.encode(map);
        normalizers.push(json!({"type": "Precompiled", "precompiled_charsmap": map}));
    }
    let flag = |key: &str| f.get(key).and_then(Value::as_bool).unwrap_or(true);
    if flag("tokenizer.ggml.remove_extra_whitespaces") {
        normalizers.push(json!({"type": "Strip", "strip_left": false, "strip_right": true}));
        normalizers.push(json!({"type": "Replace", "pattern": {"Regex": " {2,}"},
                                "content": "\u{2581}"}));
    }
    let name = |i: Option<u64>| i.map(|i| (i, tokens[i as usize].clone()));
    let bos =
        name(id("tokenizer.ggml.bos_token_id")).filter(|_| flag("tokenizer.ggml.add_bos_token"));
    let eos =
        name(id("tokenizer.ggml.eos_token_id")).filter(|_| flag("tokenizer.ggml.add_eos_token"));
    let special = |t: &Option<(u64, String)>| {
        t.iter()
            .map(|(_, n)| json!({"SpecialToken": {"id": n, "type_id": 0}}))
            .collect::<Vec<_>>()
    };
    let seq = |s: &str| json!({"Sequence": {"id": s, "type_id": 0}});
    let mut single = special(&bos);
    single.push(seq("A"));
    single.extend(special(&eos));
    let mut pair = single.clone();
    pair.extend(special(&eos));
    pair.push(seq("B"));
    pair.extend(special(&eos));
    let mut special_tokens = serde_json::Map::new();
    for (i, n) in bos.iter().chain(eos.iter()) {
        special_tokens.insert(n.clone(), json!({"id": n, "ids": [i], "tokens": [n]}));
    }
    let space = json!({"type": "Metaspace", "replacement": "\u{2581}",
                       "prepend_scheme": "always", "split": true});
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": space,
        "post_processor": {"type": "TemplateProcessing", "single": single, "pair": pair,
                           "special_tokens": special_tokens},
        "decoder": space,
        "model": {"type": "Unigram", "unk_id": unk, "vocab": vocab, "byte_fallback": false}
    }))
}
