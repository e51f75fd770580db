//! `edgecut embed`, `similarity`, `classify` and `bench`, run as a user runs them.

mod common;

use common::{edgecut, ok};

use edgecut::WeightType;
use edgecut_tests::{converted, minilm, repo_root, smollm_gguf};

#[test]
fn embed_from_arguments_and_stdin_in_json_and_tsv() {
    let m = minilm(WeightType::Q8_0);
    let m = m.to_str().unwrap();
    let args: Vec<Vec<f32>> = serde_json::from_str(&ok(&edgecut(
        &["embed", "-m", m, "first text", "second"],
        None,
    )))
    .unwrap();
    assert_eq!(args.len(), 2);
    assert_eq!(args[0].len(), 384);
    let stdin: Vec<Vec<f32>> = serde_json::from_str(&ok(&edgecut(
        &["embed", "-m", m, "--batch-size", "1"],
        Some("first text\nsecond\n"),
    )))
    .unwrap();
    for (a, b) in args.iter().zip(&stdin) {
        assert!(edgecut::cosine(a, b) > 0.99999);
    }
    let tsv = ok(&edgecut(
        &["embed", "-m", m, "--format", "tsv", "a", "b", "c"],
        None,
    ));
    let lines: Vec<&str> = tsv.lines().collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0].split('\t').count(), 384);
}

#[test]
fn similarity_prints_the_reference_values() {
    let m = minilm(WeightType::Q8_0);
    let out = ok(&edgecut(
        &[
            "similarity",
            "-m",
            m.to_str().unwrap(),
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "A man is riding a horse.",
        ],
        None,
    ));
    let sims: Vec<f32> = out
        .lines()
        .map(|l| l.split('\t').next().unwrap().parse().unwrap())
        .collect();
    assert!((sims[0] - 0.755).abs() <= 0.01, "{out}");
    assert!((sims[1] - 0.247).abs() <= 0.01, "{out}");
}

#[test]
fn classify_prints_labels() {
    let m = converted(
        &repo_root().join("tests/fixtures/distilbert-tiny"),
        "cli-distilbert",
        WeightType::Q8_0,
    );
    let out = ok(&edgecut(
        &[
            "classify",
            "-m",
            m.to_str().unwrap(),
            "A man is eating food.",
            "hello",
        ],
        None,
    ));
    for line in out.lines() {
        let label = line.split('\t').next().unwrap();
        assert!(
            ["negative", "neutral", "positive"].contains(&label),
            "{out}"
        );
    }
    let json: serde_json::Value = serde_json::from_str(&ok(&edgecut(
        &["classify", "--json", "-m", m.to_str().unwrap(), "x"],
        None,
    )))
    .unwrap();
    assert_eq!(json[0]["probs"].as_array().unwrap().len(), 3);
}

#[test]
fn truncation_is_warned_and_bad_input_is_named() {
    let m = minilm(WeightType::Q8_0);
    let m = m.to_str().unwrap();
    let long = "word ".repeat(300);
    let o = edgecut(&["embed", "-m", m, &long], None);
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("warning: text 1 has 302 tokens; truncated to 256"),
        "{err}"
    );
    for (args, stdin, needle) in [
        (vec!["embed", "-m", m], Some(""), "standard input was empty"),
        (
            vec!["embed", "-m", "/nonexistent.gguf", "x"],
            None,
            "/nonexistent.gguf",
        ),
        (
            vec!["embed", "-m", smollm_gguf().to_str().unwrap(), "x"],
            None,
            "not a BERT-family encoder",
        ),
        (
            vec!["classify", "-m", m, "x"],
            None,
            "no classification head",
        ),
        (
            vec!["embed", "-m", m, "--device", "cuda", "x"],
            None,
            "without its `cuda` feature",
        ),
        (
            vec!["embed", "-m", m, "--batch-size", "0", "x"],
            None,
            "batch size must be at least 1",
        ),
        (
            vec!["embed", "-m", m, "--max-seq-len", "9999", "x"],
            None,
            "outside 2..=512",
        ),
    ] {
        let o = edgecut(&args, stdin);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn bench_prints_a_row_per_configuration() {
    let m = minilm(WeightType::Q8_0);
    let out = ok(&edgecut(
        &[
            "bench",
            "-m",
            m.to_str().unwrap(),
            "--seq",
            "16,32",
            "--batch",
            "1,2",
            "--iters",
            "2",
        ],
        None,
    ));
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with(char::is_numeric))
        .collect();
    assert_eq!(rows.len(), 4, "{out}");
    for (row, seq) in rows.iter().zip(["16", "16", "32", "32"]) {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[0], seq);
        assert_eq!(
            cols[5], seq,
            "the sentence must have exactly {seq} tokens: {row}"
        );
        assert!(cols[2].parse::<f64>().unwrap() > 0.0);
    }
    assert!(out.contains("peak RSS"));
}
