//! The `edgecut` binary, run as a user runs it.

mod common;

use std::path::Path;
use std::process::Output;

use common::ok as stdout;

use edgecut_tests::{minilm_dir, scratch, smollm_gguf};

fn edgecut(args: &[&str]) -> Output {
    common::edgecut(args, None)
}

fn fails_with(args: &[&str], needle: &str) {
    let o = edgecut(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: stderr {err:?} lacks {needle:?}"
    );
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
}

#[test]
fn inspect_smollm2_prints_hyperparameters_tokenizer_tensors_and_identity() {
    let p = smollm_gguf();
    let out = stdout(&edgecut(&["inspect", p.to_str().unwrap()]));
    for needle in [
        "architecture  llama",
        "byte-level BPE (gpt2, pre \"smollm\"; 49152 tokens, 48900 merges)",
        "chat template yes",
        "attention.head_count_kv                    3",
        "rope.freq_base                             100000",
        "tensors (272)",
        "Q4_1     210 tensors",
        "Q8_0       1 tensors     30081024 bytes",
        "F32       61 tensors",
        "token_embd.weight                    Q8_0          [49152, 576]",
    ] {
        assert!(
            out.contains(needle),
            "inspect output lacks {needle:?}:\n{out}"
        );
    }
    let json: serde_json::Value = serde_json::from_str(&stdout(&edgecut(&[
        "inspect",
        "--json",
        p.to_str().unwrap(),
    ])))
    .unwrap();
    assert_eq!(json["tensors"].as_array().unwrap().len(), 272);
    assert_eq!(json["bytes_by_type"]["Q4_1"]["tensors"], 210);
    assert_eq!(json["metadata"]["llama.block_count"], 30);
    assert_eq!(json["metadata"]["tokenizer.ggml.tokens"]["len"], 49152);
    assert_eq!(json["chat_template"], true);
    let id = json["identity"].as_str().unwrap();
    assert_eq!(id.len(), 64);
    assert!(out.contains(id));
}

#[test]
fn convert_then_inspect_minilm() {
    let out = scratch().join(format!("cli-minilm-{}.gguf", std::process::id()));
    let o = edgecut(&[
        "convert",
        minilm_dir().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("101 tensors"), "{err}");
    assert!(
        !err.contains('\r'),
        "progress bar drawn when stderr is not a terminal"
    );
    let text = stdout(&edgecut(&["inspect", out.to_str().unwrap()]));
    assert!(
        text.contains("WordPiece (Hugging Face tokenizer.json"),
        "{text}"
    );
    assert!(
        text.contains("pooling_type                               1"),
        "{text}"
    );
    std::fs::remove_file(out).unwrap();
}

#[test]
fn bad_input_gets_named_errors_and_exit_code_1() {
    fails_with(&["inspect", "/nonexistent.gguf"], "/nonexistent.gguf");
    let dir = scratch().join(format!("cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.gguf");
    std::fs::write(&junk, b"this is not a model file").unwrap();
    fails_with(&["inspect", junk.to_str().unwrap()], "not a GGUF file");
    let mut bytes = std::fs::read(smollm_gguf()).unwrap();
    bytes.truncate(1 << 20);
    let cut = dir.join("cut.gguf");
    std::fs::write(&cut, &bytes).unwrap();
    fails_with(&["inspect", cut.to_str().unwrap()], "truncated or corrupt");
    let out = dir.join("out.gguf");
    fails_with(
        &["convert", "/nonexistent", "-o", out.to_str().unwrap()],
        "no such file",
    );
    fails_with(
        &[
            "convert",
            dir.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        "config.json",
    );
    std::fs::write(dir.join("config.json"), r#"{"model_type": "t5"}"#).unwrap();
    std::fs::write(dir.join("model.safetensors"), b"\x08\0\0\0\0\0\0\0{}      ").unwrap();
    fails_with(
        &[
            "convert",
            dir.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        "model_type \"t5\"",
    );
    fails_with(
        &[
            "convert",
            cut.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        "truncated or corrupt",
    );
    let o = edgecut(&["convert", "x", "-o", "y", "--type", "q3"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown weight type"));
    assert!(!Path::new(&out).exists(), "a failed conversion left a file");
    std::fs::remove_dir_all(dir).unwrap();
}
