//! Retrieval models against PyTorch: an XLM-RoBERTa embedder with a SentencePiece Unigram
//! vocabulary, and XLM-RoBERTa and BERT cross-encoders with one output, all tiny seeded random
//! checkpoints recorded by `tests/reference/make_retrieval_fixtures.py`.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use edgecut::{cosine, Session, SessionOptions, WeightType};
use edgecut_format::gguf::{GgufFile, GgufWriter, TensorSpec};
use edgecut_format::Tokenizer;
use edgecut_tests::{converted, f32s, fixture, ids, qwen3_embedder_dir, repo_root, scratch};
use serde_json::Value;

pub(crate) fn model(name: &str) -> Value {
    fixture("retrieval-tiny.json")["models"][name].clone()
}

pub(crate) fn tiny(name: &str, wt: WeightType) -> PathBuf {
    converted(&repo_root().join("tests/fixtures").join(name), name, wt)
}

fn open(path: &Path) -> Session {
    Session::open(path, &SessionOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// Each case's text tokenized as recorded and all of them embedded in one batch: the worst
/// cosine to PyTorch's vector at least `bound` (printed with `what`). The batch's output.
pub(crate) fn embeddings_match(
    what: &str,
    s: &Session,
    cases: &[Value],
    bound: f32,
) -> edgecut::Embeddings {
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    for (c, t) in cases.iter().zip(&texts) {
        assert_eq!(
            s.tokenize(t).unwrap(),
            ids(&c["ids"]),
            "{what}: ids of {t:?}"
        );
    }
    let out = s.embed(&texts).unwrap();
    let mut worst = (1.0f32, "");
    for ((c, t), v) in cases.iter().zip(&texts).zip(&out.vectors) {
        let cs = cosine(v, &f32s(&c["embedding"]));
        if cs < worst.0 {
            worst = (cs, t);
        }
    }
    eprintln!("{what}: worst cosine {} ({:?})", worst.0, worst.1);
    assert!(
        worst.0 >= bound,
        "{what}: cosine {} for {:?}",
        worst.0,
        worst.1
    );
    out
}

#[test]
fn xlm_roberta_embeddings_match_pytorch_in_f32_and_q8_0() {
    let fx = model("xlmr-tiny");
    let cases = fx["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 40);
    for (wt, bound) in [(WeightType::F32, 0.99999f32), (WeightType::Q8_0, 0.999)] {
        let s = open(&tiny("xlmr-tiny", wt));
        assert_eq!(
            s.max_seq_len(),
            128,
            "sentence-transformers' max_seq_length"
        );
        let out = embeddings_match(&format!("xlmr-tiny {wt:?}"), &s, cases, bound);
        assert_eq!(out.truncated.len(), 1, "the 130-token text is cut to 128");
    }
}

/// A copy of `path` without the key `drop` (a file as llama.cpp's converter writes it, with
/// only the `tokenizer.ggml.*` arrays).
fn without_key(path: &Path, drop: &str) -> PathBuf {
    rewritten(path, drop, None)
}

/// A copy of `path` with the key `key` dropped, or set to `value`.
pub(crate) fn rewritten(
    path: &Path,
    key: &str,
    value: Option<edgecut_format::gguf::Value>,
) -> PathBuf {
    let f = GgufFile::open(path).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        if k != key {
            w.set(k.clone(), v.clone());
        }
    }
    if let Some(v) = value {
        w.set(key, v);
    }
    for t in f.tensors() {
        w.add_tensor(TensorSpec {
            name: t.name.clone(),
            dtype: t.dtype,
            dims: t.dims.clone(),
        })
        .unwrap();
    }
    let name = path.file_stem().unwrap().to_string_lossy();
    let tag = if w.metadata().iter().any(|(k, _)| k == key) {
        "set"
    } else {
        "no"
    };
    let out = scratch().join(format!("{name}-{}-{tag}-{key}.gguf", std::process::id()));
    w.write_file(&out, |i, _| Ok(Cow::Borrowed(f.view(&f.tensors()[i]).data)))
        .unwrap();
    out
}

#[test]
fn unigram_tokenization_of_40_multilingual_texts_equals_tokenizers_from_json_and_from_arrays() {
    let fx = fixture("retrieval-tiny.json");
    let cases = fx["xlmr_tokenization"].as_array().unwrap();
    assert_eq!(cases.len(), 40);
    let path = tiny("xlmr-tiny", WeightType::F32);
    let arrays_only = without_key(&path, "tokenizer.huggingface.json");
    for (p, source) in [
        (&path, "tokenizer.huggingface.json"),
        (&arrays_only, "tokenizer.ggml (SentencePiece Unigram)"),
    ] {
        let tok = Tokenizer::from_gguf(&GgufFile::open(p).unwrap()).unwrap();
        assert_eq!(tok.source(), source);
        for c in cases {
            let t = c["text"].as_str().unwrap();
            let got = tok.encode(t, true, None).unwrap().ids;
            assert_eq!(got, ids(&c["ids"]), "{source}: ids of {t:?}");
        }
    }
    // The rebuilt tokenizer's pairs follow XLM-R's template too.
    let pair = Tokenizer::from_gguf(&GgufFile::open(&arrays_only).unwrap())
        .unwrap()
        .encode_pair("a query", "a document", None)
        .unwrap();
    let json = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap())
        .unwrap()
        .encode_pair("a query", "a document", None)
        .unwrap();
    assert_eq!(pair, json);
}

/// Scores of the fixture's 20 pairs by `s`, and the reference logits.
fn scores(name: &str, wt: WeightType) -> (Vec<f32>, Vec<f32>) {
    let fx = model(name);
    scores_of(name, fx["pairs"].as_array().unwrap(), &tiny(name, wt))
}

/// The scores of the recorded `pairs` by the reranker at `path`, one pair at a time (each
/// pair's ids checked) and all at once (the same scores), with PyTorch's.
pub(crate) fn scores_of(name: &str, pairs: &[Value], path: &Path) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(pairs.len(), 20);
    let tok = Tokenizer::from_gguf(&GgufFile::open(path).unwrap()).unwrap();
    let s = open(path);
    let mut got = Vec::new();
    for p in pairs {
        let (q, d) = (
            p["query"].as_str().unwrap(),
            p["document"].as_str().unwrap(),
        );
        let e = tok.encode_pair(q, d, Some(s.max_seq_len())).unwrap();
        assert_eq!(e.ids, ids(&p["ids"]), "{name}: pair ids of {q:?} / {d:?}");
        got.push(s.rerank(q, &[d]).unwrap().scores[0]);
    }
    // All at once (batched, padded, several queries) gives the same scores.
    let batched = s.score_pairs(&query_documents(pairs)).unwrap().scores;
    for (a, b) in got.iter().zip(&batched) {
        assert!((a - b).abs() <= 1e-5, "{name}: alone {a}, batched {b}");
    }
    (got, logits(pairs))
}

/// The fixture's pairs as (query, document).
pub(crate) fn query_documents(pairs: &[Value]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|p| {
            (
                p["query"].as_str().unwrap(),
                p["document"].as_str().unwrap(),
            )
        })
        .collect()
}

/// PyTorch's logit of each of the fixture's pairs.
pub(crate) fn logits(pairs: &[Value]) -> Vec<f32> {
    pairs
        .iter()
        .map(|p| p["logit"].as_f64().unwrap() as f32)
        .collect()
}

pub(crate) fn order(v: &[f32]) -> Vec<usize> {
    let mut o: Vec<usize> = (0..v.len()).collect();
    o.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    o
}

#[test]
fn cross_encoders_score_20_pairs_within_1e_3_of_pytorch_in_the_same_order() {
    for name in ["xlmr-rerank-tiny", "bert-rerank-tiny"] {
        let (got, want) = scores(name, WeightType::F32);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("{name} F32: worst |score - PyTorch| {worst:e}");
        assert!(worst <= 1e-3, "{name}: {got:?} vs {want:?}");
        assert_eq!(order(&got), order(&want), "{name}: ranking");
        // Q8_0: each query's documents in PyTorch's order.
        let (q8, _) = scores(name, WeightType::Q8_0);
        let worst_q8 = q8
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("{name} Q8_0: worst |score - PyTorch| {worst_q8:e}");
        for (q, (a, b)) in q8.chunks(4).zip(want.chunks(4)).enumerate() {
            assert_eq!(order(a), order(b), "{name} Q8_0: query {q}'s ranking");
        }
    }
}

#[test]
fn reranking_needs_a_single_output_classifier_and_keeps_the_query_whole() {
    // A three-class classifier is not a reranker.
    let distil = converted(
        &repo_root().join("tests/fixtures/distilbert-tiny"),
        "distilbert",
        WeightType::F32,
    );
    let err = open(&distil).rerank("q", &["d"]).unwrap_err().to_string();
    assert!(err.contains("3 classes"), "{err}");
    // An embedder has no classifier at all.
    let emb = open(&tiny("xlmr-tiny", WeightType::F32));
    assert!(emb.rerank("q", &["d"]).is_err());
    // A long document is cut, the query kept; a query that leaves no room is refused.
    let s = Session::open(
        tiny("bert-rerank-tiny", WeightType::F32),
        &SessionOptions::default().with_max_seq_len(Some(32)),
    )
    .unwrap();
    let long = "the cat sat on the mat ".repeat(20);
    let r = s.rerank("where is the cat", &[&long, "short"]).unwrap();
    assert_eq!(r.truncated.len(), 1);
    assert_eq!((r.truncated[0].index, r.truncated[0].kept), (0, 32));
    let err = s
        .rerank(&"query ".repeat(40), &["d"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("no room"), "{err}");
}

#[test]
fn a_qwen3_pooled_at_its_last_token_embeds_as_pytorch_does_in_f32_and_q8_0() {
    let fx = model("qwen3-tiny-last");
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 39);
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    for (wt, bound) in [(WeightType::F32, 0.99999f32), (WeightType::Q8_0, 0.999)] {
        let path = converted(&qwen3_embedder_dir(), "qwen3-embed-tiny", wt);
        // The registry opens it as an embedder, not a generator.
        let m = edgecut::Model::open(&path, &Default::default(), &Default::default()).unwrap();
        assert!(matches!(m, edgecut::Model::Encoder(_)), "{m:?}");
        let s = open(&path);
        assert_eq!(s.embedding_dim(), 64);
        let out = embeddings_match(&format!("qwen3 last-token {wt:?}"), &s, cases, bound);
        // One text alone gives what it gives in the batch.
        let alone = s.embed(&texts[3..4]).unwrap().vectors.remove(0);
        assert!(cosine(&alone, &out.vectors[3]) > 0.99999);
        // What only encoders do is refused by name.
        assert!(s.classify(&["x"]).is_err());
        let err = s.time_stages(8).unwrap_err().to_string();
        assert!(err.contains("last token"), "{err}");
        assert!(s
            .embed(&[""])
            .unwrap_err()
            .to_string()
            .contains("no tokens"));
    }
}

#[test]
fn a_bert_pooling_type_edgecut_does_not_run_is_refused_by_name() {
    use edgecut_format::gguf::Value;
    let path = tiny("xlmr-tiny", WeightType::F32);
    // As llama.cpp's converter writes it: no edgecut.pooling, only bert.pooling_type.
    let plain = without_key(&path, "edgecut.pooling");
    for (t, ok) in [(1u32, true), (2, true), (4, true), (3, false), (7, false)] {
        let p = rewritten(&plain, "bert.pooling_type", Some(Value::U32(t)));
        match Session::open(&p, &SessionOptions::default()) {
            Ok(_) => assert!(ok, "pooling type {t} opened"),
            Err(e) => {
                assert!(!ok, "pooling type {t}: {e}");
                assert!(e.to_string().contains(&format!("pooling_type {t}")), "{e}");
            }
        }
    }
}
