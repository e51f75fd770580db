//! ModernBERT against PyTorch: a tiny seeded random `ModernBertModel` (rotary positions, a gated
//! feed-forward, local attention narrower than most of the texts) recorded by
//! `tests/reference/make_modernbert_fixtures.py`, converted by edgecut and run batched (texts
//! padded to the longest), pooled and normalised as sentence-transformers does.

use std::path::PathBuf;

use edgecut::{Session, SessionOptions, WeightType};
use edgecut_format::gguf::GgufFile;
use edgecut_tests::{converted, fixture, ids, repo_root};

fn tiny(wt: WeightType) -> PathBuf {
    converted(
        &repo_root().join("tests/fixtures/modernbert-tiny"),
        "modernbert-tiny",
        wt,
    )
}

#[test]
fn modern_bert_embeddings_match_pytorch_in_f32_and_q8_0() {
    let fx = fixture("modernbert-tiny.json");
    let cases = fx["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 40);
    // Most texts are longer than the local layers' reach (4 positions either side of
    // [CLS] ... [SEP]), so a window ignored or misplaced moves their vectors.
    let long = cases
        .iter()
        .filter(|c| c["ids"].as_array().unwrap().len() > 9)
        .count();
    assert!(long >= 30, "{long} texts exercise the window");
    for (wt, bound) in [(WeightType::F32, 0.99999f32), (WeightType::Q8_0, 0.999)] {
        let path = tiny(wt);
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(file.architecture().unwrap(), "modern-bert");
        let s = Session::open(&path, &SessionOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        crate::retrieval::embeddings_match(&format!("modernbert-tiny {wt:?}"), &s, cases, bound);
    }
}

#[test]
fn modern_bert_tokenization_of_40_multilingual_texts_equals_tokenizers() {
    let fx = fixture("modernbert-tiny.json");
    let s = Session::open(tiny(WeightType::F32), &SessionOptions::default()).unwrap();
    let cases = fx["tokenization"].as_array().unwrap();
    assert_eq!(cases.len(), 40);
    for c in cases {
        let t = c["text"].as_str().unwrap();
        assert_eq!(s.tokenize(t).unwrap(), ids(&c["ids"]), "ids of {t:?}");
    }
}

#[test]
fn a_modern_bert_activation_edgecut_does_not_run_is_refused_by_name() {
    let dir = edgecut_tests::scratch().join(format!("modernbert-head-{}", std::process::id()));
    let src = repo_root().join("tests/fixtures/modernbert-tiny");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
    }
    let cfg_path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["hidden_activation"] = "silu".into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let err = edgecut_models::convert::convert(
        &dir,
        &dir.join("out.gguf"),
        &edgecut_models::convert::ConvertOptions {
            weight_type: WeightType::F32,
        },
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("hidden_activation \"silu\""), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// ModernBERT on the GPU backend through wgpu (lavapipe here): rotary positions, local
/// attention and the gated feed-forward on the device, against the CPU backend and PyTorch.
#[cfg(feature = "wgpu")]
#[test]
fn modern_bert_on_wgpu_matches_the_cpu_and_pytorch() {
    use edgecut::{cosine, AttentionPrecision, DeviceKind};
    use edgecut_tests::f32s;
    let fx = fixture("modernbert-tiny.json");
    let cases = fx["cases"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let open = |device| {
        let opts = SessionOptions::default()
            .with_device(device)
            .with_attention(AttentionPrecision::F32);
        Session::open(tiny(WeightType::Q8_0), &opts).unwrap_or_else(|e| panic!("{device:?}: {e}"))
    };
    let (gpu, cpu) = (open(DeviceKind::Wgpu), open(DeviceKind::Cpu));
    let (g, c) = (gpu.embed(&texts).unwrap(), cpu.embed(&texts).unwrap());
    let (mut to_cpu, mut to_torch) = (1.0f32, 1.0f32);
    for ((case, t), (gv, cv)) in cases
        .iter()
        .zip(&texts)
        .zip(g.vectors.iter().zip(&c.vectors))
    {
        let (a, b) = (cosine(gv, cv), cosine(gv, &f32s(&case["embedding"])));
        // Both quantize each product's input to int8 per 32 values; the GPU sums in another
        // order, so a value may land one int8 step away (as MiniLM's GPU test allows).
        assert!(a >= 0.9998, "cosine to the CPU backend {a} for {t:?}");
        assert!(b >= 0.999, "cosine to PyTorch {b} for {t:?}");
        (to_cpu, to_torch) = (to_cpu.min(a), to_torch.min(b));
    }
    println!("ModernBERT on wgpu: worst cosine to the CPU {to_cpu}, to PyTorch {to_torch}");
}

/// A ModernBERT reranker (`ModernBertForSequenceClassification`, one label, mean pooling, the
/// prediction head's dense, GELU and norm): 20 query/document pairs within 1e-3 of PyTorch in
/// the same order (F32), each query's documents in PyTorch's order (Q8_0).
#[test]
fn a_modern_bert_reranker_scores_20_pairs_within_1e_3_of_pytorch_in_the_same_order() {
    use crate::retrieval::{order, scores_of};
    let fx = fixture("modernbert-tiny.json");
    let pairs = fx["rerank"].as_array().unwrap();
    let dir = repo_root().join("tests/fixtures/modernbert-rerank-tiny");
    let name = "modernbert-rerank-tiny";
    let worst = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
    };
    let (got, want) = scores_of(name, pairs, &converted(&dir, name, WeightType::F32));
    eprintln!(
        "{name} F32: worst |score - PyTorch| {:e}",
        worst(&got, &want)
    );
    assert!(worst(&got, &want) <= 1e-3, "{got:?} vs {want:?}");
    assert_eq!(order(&got), order(&want), "ranking");
    let (q8, _) = scores_of(name, pairs, &converted(&dir, name, WeightType::Q8_0));
    eprintln!(
        "{name} Q8_0: worst |score - PyTorch| {:e}",
        worst(&q8, &want)
    );
    for (q, (a, b)) in q8.chunks(4).zip(want.chunks(4)).enumerate() {
        assert_eq!(order(a), order(b), "Q8_0: query {q}'s ranking");
    }
}

/// A ModernBERT file whose rotary or window settings are missing or impossible is refused at
/// load with the key or the values named, not run with a guess.
#[test]
fn modern_bert_files_with_bad_rotary_settings_are_refused_by_name() {
    use crate::retrieval::rewritten;
    use edgecut_format::gguf::Value;
    let path = tiny(WeightType::F32);
    let cases: [(&str, Option<Value>, &str); 6] = [
        ("modern-bert.rope.freq_base", None, "rope.freq_base"),
        (
            "modern-bert.rope.freq_base",
            Some(Value::F32(f32::NAN)),
            "bad rotary settings",
        ),
        (
            "modern-bert.attention.sliding_window",
            Some(Value::U32(1)),
            "window 1",
        ),
        (
            "modern-bert.attention.sliding_window_pattern",
            Some(Value::U32(0)),
            "every 0",
        ),
        (
            "modern-bert.attention.sliding_window",
            None,
            "sliding_window",
        ),
        (
            "edgecut.classifier.pooling",
            Some(Value::Str("max".into())),
            "classifier pooling",
        ),
    ];
    for (key, value, want) in cases {
        let bad = rewritten(&path, key, value.clone());
        let err = Session::open(&bad, &SessionOptions::default())
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{key} = {value:?}: {err}");
        std::fs::remove_file(&bad).ok();
    }
}

/// ModernBERT split at every cut through the wire codec's bytes, f32 on the wire: the server
/// part's vectors equal the local run's (the final norm runs in the head stage, on the server).
#[test]
fn modern_bert_split_at_every_cut_gives_the_local_vectors() {
    use edgecut_tests::over_the_wire;
    use edgecut_wire::{Encoding, Frame};
    let s = Session::open(tiny(WeightType::Q8_0), &SessionOptions::default()).unwrap();
    let texts = [
        "A man is eating food.",
        "Edge devices run the first layers; a GPU server runs the rest.",
        "hi",
    ];
    let local = s.embed(&texts).unwrap();
    assert_eq!(s.stage_count(), 6, "embeddings, four blocks, the head");
    for cut in 0..s.stage_count() {
        let req = s
            .run_device_part(&texts, cut, Encoding::F32, cut as u64)
            .unwrap();
        let Frame::Infer(req) = over_the_wire(Frame::Infer(req)) else {
            unreachable!()
        };
        let res = s.run_server_part(&req).unwrap();
        for (i, v) in res.values.chunks_exact(64).enumerate() {
            assert_eq!(v, &local.vectors[i][..], "cut {cut} text {i}");
        }
    }
}
