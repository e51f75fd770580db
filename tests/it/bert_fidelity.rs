//! MiniLM and DistilBERT against PyTorch: token ids, embeddings and logits recorded by
//! `tests/reference/make_fixtures.py` into `tests/fixtures/`.

use edgecut::{cosine, AttentionPrecision, Session, SessionOptions, WeightType};
use edgecut_tests::{converted, f32s, fixture, ids, minilm, repo_root, smollm_gguf};

fn session(path: &std::path::Path, max_seq_len: Option<usize>, batch_size: usize) -> Session {
    let opts = SessionOptions::default()
        .with_max_seq_len(max_seq_len)
        .with_batch_size(batch_size);
    Session::open(path, &opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs every MiniLM fixture case through `path`; returns (min, mean) cosine to PyTorch.
fn minilm_fidelity(path: &std::path::Path, label: &str) -> (f32, f32) {
    minilm_fidelity_with(path, label, AttentionPrecision::Fast)
}

/// [`minilm_fidelity`] with attention at precision `attention`.
fn minilm_fidelity_with(
    path: &std::path::Path,
    label: &str,
    attention: AttentionPrecision,
) -> (f32, f32) {
    let fx = fixture("minilm.json");
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    let mut cosines = Vec::new();
    for max_len in [256usize, 512] {
        let opts = SessionOptions::default()
            .with_max_seq_len(Some(max_len))
            .with_attention(attention);
        let s = Session::open(path, &opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let group: Vec<_> = cases.iter().filter(|c| c["max_len"] == max_len).collect();
        let texts: Vec<&str> = group.iter().map(|c| c["text"].as_str().unwrap()).collect();
        for (c, t) in group.iter().zip(&texts) {
            assert_eq!(
                s.tokenize(t).unwrap(),
                ids(&c["ids"]),
                "{label}: token ids of {t:?}"
            );
        }
        let out = s.embed(&texts).unwrap();
        let want_truncated: Vec<usize> = group
            .iter()
            .enumerate()
            .filter(|(_, c)| c["full_len"].as_u64().unwrap() as usize > max_len)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            out.truncated.iter().map(|t| t.index).collect::<Vec<_>>(),
            want_truncated
        );
        for ((c, t), v) in group.iter().zip(&texts).zip(&out.vectors) {
            let cs = cosine(v, &f32s(&c["embedding"]));
            assert!(
                cs >= 0.999,
                "{label}: cosine {cs} for {t:?} (max_len {max_len})"
            );
            cosines.push(cs);
        }
    }
    let min = cosines.iter().cloned().fold(1.0f32, f32::min);
    let mean = cosines.iter().sum::<f32>() / cosines.len() as f32;
    println!(
        "{label}: {} inputs, cosine to PyTorch fp32: min {min:.5}, mean {mean:.5}",
        cosines.len()
    );
    (min, mean)
}

#[test]
fn minilm_q8_0_matches_pytorch_on_every_fixture_input() {
    minilm_fidelity(&minilm(WeightType::Q8_0), "MiniLM Q8_0");
}

#[test]
fn minilm_q8_0_with_f32_attention_matches_pytorch() {
    // The bf16 attention products of the default precision (where the CPU has them) and f32
    // ones both keep every input at 0.999 or above; the figures are printed side by side.
    minilm_fidelity_with(
        &minilm(WeightType::Q8_0),
        "MiniLM Q8_0, f32 attention",
        AttentionPrecision::F32,
    );
}

#[test]
fn minilm_made_by_llama_cpp_converter_matches_pytorch() {
    // No tokenizer.json inside: the tokenizer is rebuilt from tokenizer.ggml.* arrays.
    let path = repo_root().join("tests/fixtures/llama-cpp/all-MiniLM-L6-v2.q8_0.gguf");
    let f = edgecut::GgufFile::open(&path).unwrap();
    assert!(f.get("tokenizer.huggingface.json").is_none());
    minilm_fidelity(&path, "MiniLM from llama.cpp's converter (Q8_0)");
}

#[test]
fn minilm_f32_matches_pytorch_closely() {
    let (min, _) = minilm_fidelity(&minilm(WeightType::F32), "MiniLM F32");
    assert!(
        min >= 0.9999,
        "f32 weights (INT8 activations only) should be closer: {min}"
    );
}

#[test]
fn minilm_similarities_match_the_reference() {
    let s = session(&minilm(WeightType::Q8_0), None, 8);
    let fx = fixture("minilm.json");
    for (pair, want) in fx["similarities"]
        .as_array()
        .unwrap()
        .iter()
        .zip([0.755f32, 0.247])
    {
        let (a, b) = (pair["a"].as_str().unwrap(), pair["b"].as_str().unwrap());
        let out = s.embed(&[a, b]).unwrap();
        let got = cosine(&out.vectors[0], &out.vectors[1]);
        println!(
            "similarity {a:?} ~ {b:?}: edgecut {got:.4}, PyTorch {:.4}",
            pair["cosine"]
        );
        assert!((got - want).abs() <= 0.01, "{got} vs {want}");
        assert!((got - pair["cosine"].as_f64().unwrap() as f32).abs() <= 0.005);
    }
}

#[test]
fn batching_and_threads_do_not_change_results() {
    let path = minilm(WeightType::Q8_0);
    let fx = fixture("minilm.json");
    let texts: Vec<&str> = fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .take(20)
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    let alone = session(&path, None, 1).embed(&texts).unwrap();
    let batched = session(&path, None, 7).embed(&texts).unwrap();
    let on_threads = |threads| {
        Session::open(&path, &SessionOptions::default().with_threads(threads))
            .unwrap()
            .embed(&texts)
            .unwrap()
    };
    // One thread runs the blocks op by op; two or more run batches of 64 rows and more as row
    // tasks (models/src/bert/cpu.rs): the same operations, so the same bits.
    let (one_thread, two_threads, three_threads) = (on_threads(1), on_threads(2), on_threads(3));
    for i in 0..texts.len() {
        assert!(
            cosine(&alone.vectors[i], &batched.vectors[i]) > 0.99999,
            "text {i}"
        );
        assert_eq!(
            batched.vectors[i], one_thread.vectors[i],
            "thread count changed text {i}"
        );
        assert_eq!(
            two_threads.vectors[i], one_thread.vectors[i],
            "row tasks changed text {i}"
        );
        assert_eq!(
            three_threads.vectors[i], one_thread.vectors[i],
            "row tasks on three threads changed text {i}"
        );
    }
}

fn distilbert(weight_type: WeightType) -> std::path::PathBuf {
    converted(
        &repo_root().join("tests/fixtures/distilbert-tiny"),
        "distilbert",
        weight_type,
    )
}

#[test]
fn random_distilbert_classifier_matches_pytorch_in_f32_and_q8_0() {
    let fx = fixture("distilbert-tiny.json");
    let cases = fx["cases"].as_array().unwrap();
    let labels: Vec<&str> = fx["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    // Stated tolerances on logits (max abs difference). f32 weights run in f32: 0.001. Q8_0:
    // 0.15, because this tiny random model (one Q8_0 block per row, wide random weights) is far
    // more sensitive than a trained one: quantizing only its weights in PyTorch already moves the
    // logits by 0.076 (tests/reference/make_fixtures.py picked a seed whose smallest top-2
    // margin, 0.138, still leaves every argmax stable).
    for (wt, tol) in [(WeightType::F32, 0.001f32), (WeightType::Q8_0, 0.15)] {
        let s = session(&distilbert(wt), Some(512), 8);
        let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
        let out = s.classify(&texts).unwrap();
        let mut worst = 0f32;
        for ((c, t), got) in cases.iter().zip(&texts).zip(&out) {
            assert_eq!(s.tokenize(t).unwrap(), ids(&c["ids"]), "token ids of {t:?}");
            let want = f32s(&c["logits"]);
            let argmax = want
                .iter()
                .enumerate()
                .fold(0, |b, (i, v)| if *v > want[b] { i } else { b });
            assert_eq!(
                got.class, argmax,
                "{wt:?}: class of {t:?}: {:?} vs {want:?}",
                got.logits
            );
            assert_eq!(got.label, labels[argmax]);
            for (g, w) in got.logits.iter().zip(&want) {
                worst = worst.max((g - w).abs());
            }
            let psum: f32 = got.probs.iter().sum();
            assert!((psum - 1.0).abs() < 1e-5);
        }
        println!("DistilBERT {wt:?}: {} inputs, same argmax on all, max |logit diff| {worst:.5} (tolerance {tol})", cases.len());
        assert!(worst <= tol, "{wt:?}: max logit difference {worst}");
    }
}

#[test]
fn bad_input_gets_clear_errors_or_documented_results() {
    let s = session(&minilm(WeightType::Q8_0), None, 8);
    // An empty list gives no vectors.
    let out = s.embed(&[]).unwrap();
    assert!(out.vectors.is_empty() && out.truncated.is_empty());
    // An empty string is [CLS] [SEP], a valid embedding of unit length.
    let out = s.embed(&[""]).unwrap();
    assert_eq!(s.tokenize("").unwrap().len(), 2);
    let n: f32 = out.vectors[0].iter().map(|v| v * v).sum();
    assert!((n - 1.0).abs() < 1e-4);
    // Over-long text is truncated to the model's max_seq_length, and reported.
    let long = "word ".repeat(600);
    let out = s.embed(&["short", &long]).unwrap();
    let t: Vec<_> = out
        .truncated
        .iter()
        .map(|t| (t.index, t.tokens, t.kept))
        .collect();
    assert_eq!(t, vec![(1, 602, 256)]);
    // Asking for more than the context length is an error, not a crash.
    let e = Session::open(
        minilm(WeightType::Q8_0),
        &SessionOptions::default().with_max_seq_len(Some(513)),
    )
    .unwrap_err();
    assert!(e.to_string().contains("513"), "{e}");
    // A model without a classifier cannot classify.
    let e = s.classify(&["x"]).unwrap_err();
    assert!(e.to_string().contains("no classification head"), "{e}");
    // A decoder file is not an encoder.
    let e = Session::open(smollm_gguf(), &SessionOptions::default()).unwrap_err();
    assert!(
        e.to_string()
            .contains("\"llama\" is not a BERT-family encoder"),
        "{e}"
    );
    // A missing file is named.
    let e = Session::open("/nonexistent/model.gguf", &SessionOptions::default()).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/model.gguf"), "{e}");
}

#[test]
fn one_session_shared_by_threads_gives_the_same_results() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Session>();
    let s = std::sync::Arc::new(session(&minilm(WeightType::Q8_0), None, 4));
    let fx = fixture("minilm.json");
    let texts: Vec<String> = fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .take(12)
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let alone = s.embed(&refs).unwrap();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (s, refs) = (s.clone(), refs.clone());
                scope.spawn(move || {
                    // Each thread embeds a rotation of the texts, several times.
                    let mut rotated = refs.clone();
                    rotated.rotate_left(t * 3);
                    (0..3)
                        .map(|_| s.embed(&rotated).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for (t, h) in handles.into_iter().enumerate() {
            for out in h.join().unwrap() {
                for (i, v) in out.vectors.iter().enumerate() {
                    let orig = (i + t * 3) % refs.len();
                    assert_eq!(v, &alone.vectors[orig], "thread {t}, text {orig}");
                }
            }
        }
    });
}
