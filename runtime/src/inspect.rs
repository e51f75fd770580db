//! What a model file holds, for `edgecut inspect --json` and the bindings' `inspect`: its
//! header, metadata, tensors, bytes per weight type and a decoder's KV cache sizes.

use edgecut_format::gguf::{GgufFile, Value};
use edgecut_models::DecoderConfig;
use serde_json::json;

/// The report of a model file as JSON: `version`, `alignment`, `data_offset`, `file_bytes`,
/// `architecture`, `identity`, `tokenizer`, `chat_template`, `metadata` (long strings and
/// arrays summarised), `tensors` (name, type, shape, bytes, offset, readable), `bytes_by_type`
/// and `kv_cache` (null for an encoder).
pub fn describe_file(f: &GgufFile) -> serde_json::Value {
    let h = f.header();
    let arch = f.architecture().unwrap_or("unknown").to_string();
    let id = f.identity();
    let meta: serde_json::Map<String, serde_json::Value> = f
        .metadata()
        .iter()
        .map(|(k, v)| (k.clone(), value_json(v)))
        .collect();
    let mut tensors: Vec<_> = f
        .tensors()
        .iter()
        .map(|t| json!({"name": t.name, "type": t.dtype.to_string(), "shape": t.shape(), "bytes": t.size, "offset": t.offset, "readable": true}))
        .collect();
    tensors.extend(f.unreadable().iter().map(|t| {
        let shape: Vec<u64> = t.dims.iter().rev().copied().collect();
        json!({"name": t.name, "type": t.type_name, "shape": shape, "bytes": t.size, "offset": t.offset, "readable": false})
    }));
    let mut by_type: serde_json::Map<String, serde_json::Value> = f
        .bytes_by_type()
        .iter()
        .map(|(d, b, n)| {
            let fmt = d.format();
            (d.to_string(), json!({"bytes": b, "tensors": n, "readable": true, "cpu": fmt.linear_cpu, "gpu": fmt.linear_gpu, "gpu_blocks": fmt.gpu_blocks}))
        })
        .collect();
    for (name, b, n) in unreadable_by_type(f) {
        by_type.insert(
            name.to_string(),
            json!({"bytes": b, "tensors": n, "readable": false, "cpu": false, "gpu": false}),
        );
    }
    json!({
        "file_bytes": f.file_len(), "version": h.version, "alignment": h.alignment,
        "data_offset": h.data_offset, "architecture": arch, "identity": id.to_string(),
        "tokenizer": edgecut_format::tokenizer::describe(f), "chat_template": f.get("tokenizer.chat_template").is_some(),
        "metadata": meta, "tensors": tensors, "bytes_by_type": by_type,
        "kv_cache": kv_json(f),
    })
}

fn value_json(v: &Value) -> serde_json::Value {
    const LONG: usize = 4096;
    match v {
        Value::Str(s) if s.len() > LONG => json!({"type": "string", "len": s.len()}),
        Value::Str(s) => json!(s),
        Value::Bool(b) => json!(b),
        Value::F32(x) => json!(x),
        Value::F64(x) => json!(x),
        Value::Array(a) => json!({"type": "array", "elem": a.elem_type().name(), "len": a.len()}),
        other => json!(other
            .as_u64()
            .map(serde_json::Value::from)
            .unwrap_or_else(|| json!(other.to_string()))),
    }
}

/// Bytes and tensor counts of the types edgecut cannot decode (type name, bytes, tensors), in
/// order of first appearance.
pub fn unreadable_by_type(f: &GgufFile) -> Vec<(&'static str, u64, usize)> {
    let mut out: Vec<(&'static str, u64, usize)> = Vec::new();
    for t in f.unreadable() {
        match out.iter_mut().find(|(n, _, _)| *n == t.type_name) {
            Some(e) => {
                e.1 += t.size;
                e.2 += 1;
            }
            None => out.push((t.type_name, t.size, 1)),
        }
    }
    out
}

/// Contexts whose KV cache `inspect` reports (and the model's own).
pub fn kv_contexts(c: &DecoderConfig) -> Vec<usize> {
    let mut v: Vec<usize> = [4096, c.context]
        .into_iter()
        .filter(|&n| n <= c.context)
        .collect();
    v.dedup();
    v
}

/// A decoder's KV cache at a few contexts, with and without its sliding windows.
fn kv_json(f: &GgufFile) -> serde_json::Value {
    let Ok(c) = DecoderConfig::from_gguf(f) else {
        return serde_json::Value::Null;
    };
    let sliding = (0..c.layers).filter(|&l| c.sliding(l)).count();
    let at: Vec<_> = kv_contexts(&c)
        .into_iter()
        .map(|n| json!({"context": n, "bytes": c.kv_bytes(n), "bytes_without_windows": c.kv_bytes_without_windows(n)}))
        .collect();
    json!({"layers": c.layers, "sliding_layers": sliding, "window": c.window, "f16": true, "contexts": at})
}
