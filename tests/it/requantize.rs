//! `edgecut convert some.gguf`: llama.cpp's Q4_1 file re-quantized to edgecut's Q8_0 layout.

use edgecut_format::gguf::GgufFile;
use edgecut_format::DType;
use edgecut_models::convert::WeightType;
use edgecut_tests::{converted, smollm_gguf};

#[test]
fn smollm2_q4_1_becomes_q8_0_with_the_same_values_and_metadata() {
    let src = GgufFile::open(smollm_gguf()).unwrap();
    let out = GgufFile::open(converted(&smollm_gguf(), "smollm", WeightType::Q8_0)).unwrap();
    assert_eq!(out.tensors().len(), src.tensors().len());
    for (a, b) in src.tensors().iter().zip(out.tensors()) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.dims, b.dims);
        let want = if a.dims.len() == 2 {
            DType::Q8_0
        } else {
            DType::F32
        };
        assert_eq!(b.dtype, want, "{}", a.name);
    }
    // Untouched tensors are copied bit for bit; re-quantized ones stay within one Q8_0 step.
    let e = src.require_tensor("token_embd.weight").unwrap();
    assert_eq!(
        e.data,
        out.require_tensor("token_embd.weight").unwrap().data
    );
    for name in ["blk.0.attn_q.weight", "blk.29.ffn_down.weight"] {
        let x = src.require_tensor(name).unwrap().to_f32();
        let y = out.require_tensor(name).unwrap().to_f32();
        for (bx, by) in x.chunks(32).zip(y.chunks(32)) {
            let amax = bx.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (p, q) in bx.iter().zip(by) {
                assert!(
                    (p - q).abs() <= amax / 127.0 * 0.5 + amax * 1e-3 + 1e-7,
                    "{name}: {p} vs {q}"
                );
            }
        }
    }
    for key in [
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.chat_template",
        "llama.rope.freq_base",
    ] {
        assert_eq!(src.get(key), out.get(key), "{key}");
    }
    assert_eq!(out.get_u64("general.file_type").unwrap(), 7);
    assert_eq!(
        out.get_str("edgecut.source.sha256").unwrap(),
        src.identity().to_string()
    );
}
