//! The official `openai` Python client (tests/api/openai_client.py) against the server: its
//! embeddings agree with `edgecut embed` (cosine >= 0.9999, base64 and float), and its streamed
//! greedy chat completion is the text `edgecut generate --chat` prints for the same prompt.

use std::process::Command;

use edgecut_tests::{cli_exe, python, repo_root};

use crate::{models, names, serve};

const PROMPT: &str = "What is the capital of France? Answer in one sentence.";
const TEXTS: [&str; 3] = [
    "A man is eating food.",
    "A man is riding a horse.",
    "The new movie is awesome, and everyone agrees.",
];

/// The standard output of `cmd`, which must succeed (its standard error shown if not).
fn stdout(mut cmd: Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn the_openai_client_gets_what_the_cli_gets() {
    let s = serve(&[]);
    let (embedder, generator) = names();
    let (emb_path, gen_path) = models();
    let mut client = Command::new(python());
    client
        .arg(repo_root().join("tests/api/openai_client.py"))
        .args([&s.url, &embedder, &generator, PROMPT])
        .args(TEXTS);
    let got: serde_json::Value = serde_json::from_slice(&stdout(client)).unwrap();

    // Embeddings: the CLI's, from the same file.
    let mut cli = Command::new(cli_exe());
    cli.args(["embed", "--device", "cpu", "-m"])
        .arg(&emb_path)
        .args(TEXTS);
    let want: serde_json::Value = serde_json::from_slice(&stdout(cli)).unwrap();
    let api = got["embeddings"].as_array().unwrap();
    assert_eq!(api.len(), TEXTS.len());
    for (i, (a, w)) in api.iter().zip(want.as_array().unwrap()).enumerate() {
        let c = cosine(&floats(a), &floats(w));
        println!("text {i}: cosine {c:.7} to edgecut embed");
        assert!(c >= 0.9999, "text {i}: cosine {c}");
    }
    let c = cosine(&floats(&got["embedding_float"]), &floats(&want[0]));
    assert!(c >= 0.9999, "float encoding: cosine {c}");
    assert!(got["embedding_usage"].as_u64().unwrap() >= TEXTS.len() as u64 * 3);

    // The streamed greedy chat: the text `edgecut generate --chat` prints.
    let mut cli = Command::new(cli_exe());
    cli.args(["generate", "--chat", "--device", "cpu", "-n", "48", "-m"])
        .arg(&gen_path)
        .arg(PROMPT);
    let want = String::from_utf8(stdout(cli)).unwrap();
    let streamed = got["stream_text"].as_str().unwrap();
    println!("streamed in {} chunks: {streamed:?}", got["stream_chunks"]);
    assert_eq!(streamed.trim_end(), want.trim_end());
    assert!(got["stream_chunks"].as_u64().unwrap() > 1, "it streamed");
    assert_eq!(got["chat_text"].as_str().unwrap(), streamed);
    assert!(["stop", "length"].contains(&got["stream_finish"].as_str().unwrap()));
    assert!(got["stream_completion_tokens"].as_u64().unwrap() > 0);
    assert!(!got["completion_text"].as_str().unwrap().is_empty());
    let mut served = vec![embedder.clone(), generator.clone()];
    served.sort();
    assert_eq!(got["models"], serde_json::json!(served));
    assert_eq!(got["unknown_model"], 404);
}
