//! A file's tokenizer in words, for `inspect`.

use crate::gguf::{Array, GgufFile, Value};

/// What kind of tokenizer a file carries, in words.
pub fn describe(f: &GgufFile) -> String {
    if let Some(Value::Str(j)) = f.get("tokenizer.huggingface.json") {
        let kind = serde_json::from_str::<serde_json::Value>(j)
            .ok()
            .and_then(|v| v.pointer("/model/type")?.as_str().map(str::to_string))
            .unwrap_or_else(|| "unreadable".into());
        return format!("{kind} (Hugging Face tokenizer.json, {} bytes)", j.len());
    }
    let n = |k: &str| f.get(k).and_then(Value::as_array).map_or(0, Array::len);
    match f.get("tokenizer.ggml.model").and_then(Value::as_str) {
        Some("gpt2") => format!(
            "byte-level BPE (gpt2, pre {:?}; {} tokens, {} merges)",
            f.get("tokenizer.ggml.pre")
                .and_then(Value::as_str)
                .unwrap_or("default"),
            n("tokenizer.ggml.tokens"),
            n("tokenizer.ggml.merges")
        ),
        Some("llama") => format!(
            "SentencePiece (llama; {} tokens)",
            n("tokenizer.ggml.tokens")
        ),
        Some("bert") => format!("WordPiece (bert; {} tokens)", n("tokenizer.ggml.tokens")),
        Some(other) => format!("{other} ({} tokens)", n("tokenizer.ggml.tokens")),
        None => "none".into(),
    }
}
