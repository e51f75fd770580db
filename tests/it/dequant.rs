//! Every weight type edgecut reads decodes bit for bit like gguf-py's numpy `dequantize`, an
//! implementation independent of edgecut's (and of ggml's C): on random blocks (every byte
//! random, so NaN, infinite and subnormal scales and every packed bit pattern occur) and on every
//! tensor of a real Q4_K_M file from the hub.

use std::collections::BTreeMap;

use edgecut_backends::dtype::ALL_DTYPES;
use edgecut_backends::DType;
use edgecut_format::gguf::GgufFile;
use edgecut_tests::{gemma3_q4_k_m, run_python, scratch};
use sha2::{Digest, Sha256};

/// Same bits, or both NaN (numpy and Rust may carry different NaN payloads through a product).
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

#[test]
fn every_type_decodes_like_gguf_py_on_random_blocks() {
    let dir = scratch().join(format!("dequant-{}", std::process::id()));
    run_python(
        "tests/reference/dequant_check.py",
        &[
            "random".as_ref(),
            dir.as_ref(),
            "2048".as_ref(),
            "31".as_ref(),
        ],
    );
    let mut checked = Vec::new();
    for dtype in ALL_DTYPES {
        if dtype == DType::F32 {
            continue; // stored as it is used
        }
        let name = dtype.to_string();
        let blocks = std::fs::read(dir.join(format!("{name}.blocks")))
            .unwrap_or_else(|e| panic!("{name}: the reference wrote no blocks: {e}"));
        let want: Vec<f32> = std::fs::read(dir.join(format!("{name}.f32")))
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(
            blocks.len() / dtype.block_bytes() * dtype.block_len(),
            want.len(),
            "{name}: block size differs from gguf-py's"
        );
        let mut got = vec![0f32; want.len()];
        dtype.decode(&blocks, &mut got).unwrap();
        let bad: Vec<usize> = (0..want.len())
            .filter(|&i| !same(got[i], want[i]))
            .collect();
        assert!(
            bad.is_empty(),
            "{name}: {} of {} values differ from gguf-py, first at {}: {} vs {}",
            bad.len(),
            want.len(),
            bad[0],
            got[bad[0]],
            want[bad[0]]
        );
        // Random bytes make non-finite scales: the comparison covered them.
        assert!(
            dtype.block_len() == 1 || want.iter().any(|v| !v.is_finite()),
            "{name}: no non-finite value among the random blocks"
        );
        checked.push(name);
    }
    assert_eq!(checked.len(), ALL_DTYPES.len() - 1, "{checked:?}");
    std::fs::remove_dir_all(&dir).ok();
}

/// SHA-256 of `values` as little-endian f32, every NaN as 0x7fc00000 (as
/// `tests/reference/dequant_check.py file` hashes gguf-py's values).
pub(crate) fn value_hash(values: &[f32]) -> String {
    let mut h = Sha256::new();
    for v in values {
        let bits = if v.is_nan() { 0x7fc0_0000 } else { v.to_bits() };
        h.update(bits.to_le_bytes());
    }
    format!("{:x}", h.finalize())
}

#[test]
fn every_tensor_of_the_gemma_3_q4_k_m_file_decodes_like_gguf_py() {
    let path = gemma3_q4_k_m();
    let want: BTreeMap<String, String> = serde_json::from_str(&run_python(
        "tests/reference/dequant_check.py",
        &["file".as_ref(), path.as_ref()],
    ))
    .unwrap();
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.tensors().len(), want.len(), "tensor count");
    let mut types = std::collections::BTreeSet::new();
    for t in file.tensors() {
        let got = value_hash(&file.view(t).to_f32());
        assert_eq!(
            Some(&got),
            want.get(&t.name),
            "tensor {:?} ({})",
            t.name,
            t.dtype
        );
        types.insert(t.dtype.to_string());
    }
    // The mix llama.cpp writes for Q4_K_M at Gemma 3's row length of 640.
    for t in ["F32", "Q4_K", "Q5_0", "Q6_K", "Q8_0"] {
        assert!(types.contains(t), "no {t} tensor in {types:?}");
    }
}
