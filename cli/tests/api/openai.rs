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
    // `dimensions`: the CLI's vector's first 64 values, normalised again.
    let short = floats(&got["embedding_dims64"]);
    assert_eq!(short.len(), 64);
    let norm: f64 = short.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "normalised again: {norm}");
    let c = cosine(&short, &floats(&want[0])[..64]);
    assert!(c >= 0.9999, "dimensions 64: cosine {c}");
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

/// The hub's Gemma 3 270M Q4_K_M served beside the embedder: the client's streamed greedy
/// chat (Gemma's template, which the file lacks: edgecut's copy of the published one) is the
/// text `edgecut generate --chat` prints. (The file is the pretrained model, not the
/// instruction-tuned one: it tends to repeat the question rather than answer it.)
#[test]
fn the_openai_client_streams_a_gemma3_chat_as_the_cli_prints_it() {
    let (emb_path, _) = models();
    let gemma = edgecut_tests::gemma3_q4_k_m();
    let mut cmd = Command::new(cli_exe());
    cmd.args(["serve", "--http", "127.0.0.1:0", "--device", "cpu", "-m"])
        .arg(&emb_path)
        .arg("-m")
        .arg(&gemma);
    let (child, url, log) = edgecut_tests::spawn_http_api(cmd);
    let s = crate::Server { child, url, log };
    let (embedder, _) = names();
    let mut client = Command::new(python());
    client
        .arg(repo_root().join("tests/api/openai_client.py"))
        .args([&s.url, &embedder, "gemma-3-270m-q4_k_m", PROMPT])
        .args(TEXTS);
    let got: serde_json::Value = serde_json::from_slice(&stdout(client)).unwrap();
    let mut cli = Command::new(cli_exe());
    cli.args(["generate", "--chat", "--device", "cpu", "-n", "48", "-m"])
        .arg(&gemma)
        .arg(PROMPT);
    let want = String::from_utf8(stdout(cli)).unwrap();
    let streamed = got["stream_text"].as_str().unwrap();
    println!(
        "gemma3 streamed in {} chunks: {streamed:?}",
        got["stream_chunks"]
    );
    assert_eq!(streamed.trim_end(), want.trim_end());
    assert!(got["stream_chunks"].as_u64().unwrap() > 1, "it streamed");
    assert_eq!(got["chat_text"].as_str().unwrap(), streamed);
}
