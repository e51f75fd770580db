//! Files edgecut writes are read identically by llama.cpp's own reader (the `gguf` PyPI
//! package), and edgecut reads llama.cpp's files identically to it.

use std::path::Path;

use edgecut_format::gguf::{Array, GgufFile, Value};
use edgecut_models::convert::WeightType;
use edgecut_tests::{minilm, minilm_dir, run_python, smollm_gguf};
use serde_json::Value as Json;

fn type_name(v: &Value) -> &'static str {
    use edgecut_format::gguf::ValueType::*;
    match v.value_type() {
        U8 => "UINT8",
        I8 => "INT8",
        U16 => "UINT16",
        I16 => "INT16",
        U32 => "UINT32",
        I32 => "INT32",
        F32 => "FLOAT32",
        Bool => "BOOL",
        Str => "STRING",
        Array => "ARRAY",
        U64 => "UINT64",
        I64 => "INT64",
        F64 => "FLOAT64",
    }
}

fn same_number(a: f64, j: &Json) -> bool {
    j.as_f64()
        .is_some_and(|b| a == b || (a - b).abs() <= 1e-6 * a.abs().max(b.abs()))
}

fn same_array(a: &Array, j: &Json) -> bool {
    let Some(items) = j.as_array() else {
        return false;
    };
    if items.len() != a.len() {
        return false;
    }
    match a {
        Array::Str(v) => v.iter().zip(items).all(|(s, j)| j.as_str() == Some(s)),
        Array::I32(v) => v
            .iter()
            .zip(items)
            .all(|(x, j)| j.as_i64() == Some(*x as i64)),
        Array::U32(v) => v
            .iter()
            .zip(items)
            .all(|(x, j)| j.as_u64() == Some(*x as u64)),
        Array::F32(v) => v.iter().zip(items).all(|(x, j)| same_number(*x as f64, j)),
        Array::U8(v) => v
            .iter()
            .zip(items)
            .all(|(x, j)| j.as_u64() == Some(*x as u64)),
        other => panic!(
            "array type {:?} not covered by this test",
            other.elem_type()
        ),
    }
}

fn same_value(v: &Value, j: &Json) -> bool {
    match v {
        Value::Str(s) => j.as_str() == Some(s),
        Value::Bool(b) => j.as_bool() == Some(*b),
        Value::F32(x) => same_number(*x as f64, j),
        Value::F64(x) => same_number(*x, j),
        Value::Array(a) => same_array(a, j),
        other => {
            j.as_u64() == other.as_u64()
                || j.as_i64()
                    .is_some_and(|i| i.to_string() == other.to_string())
        }
    }
}

/// Compares edgecut's reading of `path` with llama.cpp's, key by key and tensor by tensor.
fn assert_same_as_llama_cpp(path: &Path) -> GgufFile {
    let dump: Json =
        serde_json::from_str(&run_python("tests/reference/gguf_dump.py", &[path])).unwrap();
    let f = GgufFile::open(path).unwrap();
    let meta = dump["metadata"].as_object().unwrap();
    assert_eq!(meta.len(), f.metadata().len(), "key count");
    for (k, v) in f.metadata() {
        let d = meta
            .get(k)
            .unwrap_or_else(|| panic!("gguf does not see key {k}"));
        assert_eq!(d["type"], type_name(v), "type of {k}");
        if let Value::Array(a) = v {
            let elem = d["elem"].as_str().unwrap();
            assert_eq!(
                elem,
                type_name(&match a.elem_type() {
                    edgecut_format::gguf::ValueType::Str => Value::Str(String::new()),
                    edgecut_format::gguf::ValueType::I32 => Value::I32(0),
                    edgecut_format::gguf::ValueType::U32 => Value::U32(0),
                    edgecut_format::gguf::ValueType::F32 => Value::F32(0.0),
                    edgecut_format::gguf::ValueType::U8 => Value::U8(0),
                    t => panic!("array of {t:?}"),
                }),
                "element type of {k}"
            );
        }
        assert!(
            same_value(v, &d["value"]),
            "value of {k}: edgecut {v}, gguf {}",
            d["value"]
        );
    }
    let tensors = dump["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), f.tensors().len(), "tensor count");
    for (t, d) in f.tensors().iter().zip(tensors) {
        assert_eq!(d["name"], t.name.as_str());
        assert_eq!(d["type"], t.dtype.to_string(), "type of {}", t.name);
        let dims: Vec<u64> = d["dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        assert_eq!(dims, t.dims, "dims of {}", t.name);
        assert_eq!(d["n_bytes"].as_u64(), Some(t.size), "bytes of {}", t.name);
        assert_eq!(
            d["offset"].as_u64(),
            Some(f.header().data_offset + t.offset),
            "offset of {}",
            t.name
        );
    }
    f
}

#[test]
fn converted_minilm_is_read_the_same_by_llama_cpp_and_is_a_quarter_of_f32() {
    let path = minilm(WeightType::Q8_0);
    let f = assert_same_as_llama_cpp(&path);
    let size = std::fs::metadata(&path).unwrap().len();
    let f32_size = std::fs::metadata(minilm_dir().join("model.safetensors"))
        .unwrap()
        .len();
    println!("MiniLM Q8_0: {size} bytes (safetensors f32: {f32_size})");
    assert!((23_000_000..28_000_000).contains(&size), "{size} bytes");
    assert!(f32_size > 3 * size);
    // Matmul weights and embedding tables are Q8_0, vectors F32; the tokenizer is embedded.
    for t in f.tensors() {
        let want = if t.dims.len() == 2 { "Q8_0" } else { "F32" };
        assert_eq!(t.dtype.to_string(), want, "{}", t.name);
    }
    assert_eq!(f.tensors().len(), 5 + 6 * 16);
    assert!(f
        .get_str("tokenizer.huggingface.json")
        .unwrap()
        .contains("WordPiece"));
    assert_eq!(f.get_array("tokenizer.ggml.tokens").unwrap().len(), 30522);
    assert_eq!(f.get_str("edgecut.pooling").unwrap(), "mean");
    assert_eq!(f.get_u64("bert.block_count").unwrap(), 6);
    assert_eq!(f.get_str("edgecut.source.sha256").unwrap().len(), 64);
}

#[test]
fn f16_and_f32_conversions_are_read_the_same_by_llama_cpp() {
    for wt in [WeightType::F16, WeightType::F32] {
        let f = assert_same_as_llama_cpp(&minilm(wt));
        let t = f.require_tensor("blk.0.attn_q.weight").unwrap();
        assert_eq!(t.info.dtype, wt.dtype());
    }
}

#[test]
fn llama_cpp_smollm2_file_is_read_the_same_as_llama_cpp_reads_it() {
    let f = assert_same_as_llama_cpp(&smollm_gguf());
    assert_eq!(f.tensors().len(), 272);
    let by: Vec<(String, usize)> = f
        .bytes_by_type()
        .iter()
        .map(|(d, _, n)| (d.to_string(), *n))
        .collect();
    assert!(by.contains(&("Q4_1".into(), 210)), "{by:?}");
    assert!(by.contains(&("F32".into(), 61)), "{by:?}");
    assert!(by.contains(&("Q8_0".into(), 1)), "{by:?}");
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.get_array("tokenizer.ggml.merges").unwrap().len(), 48900);
    assert!(f
        .get_str("tokenizer.chat_template")
        .unwrap()
        .contains("<|im_start|>"));
}

#[test]
fn converted_llama_checkpoint_is_read_the_same_by_llama_cpp() {
    let dir = edgecut_tests::repo_root().join("tests/fixtures/llama-tiny");
    let path = edgecut_tests::converted(&dir, "llama-tiny", WeightType::Q8_0);
    let f = assert_same_as_llama_cpp(&path);
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
}

#[test]
fn a_converted_wordpiece_vocabulary_is_in_llama_cpps_phantom_space_form() {
    // llama.cpp tokenizes a BERT file from these arrays; in the raw form every word was [UNK].
    let f = GgufFile::open(minilm(WeightType::Q8_0)).unwrap();
    let Some(Value::Array(Array::Str(tokens))) = f.get("tokenizer.ggml.tokens") else {
        panic!("no tokenizer.ggml.tokens");
    };
    let vocab: Vec<String> = std::fs::read_to_string(minilm_dir().join("vocab.txt"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(tokens.len(), vocab.len());
    let (mut words, mut pieces) = (0, 0);
    for (t, v) in tokens.iter().zip(&vocab) {
        if v.starts_with('[') && v.ends_with(']') {
            assert_eq!(t, v);
        } else if let Some(rest) = v.strip_prefix("##") {
            assert_eq!(t, rest);
            pieces += 1;
        } else {
            assert_eq!(t, &format!("\u{2581}{v}"));
            words += 1;
        }
    }
    assert!(
        words > 20_000 && pieces > 5_000,
        "{words} words, {pieces} pieces"
    );
}
