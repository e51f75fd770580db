//! A tiny Qwen3 (q/k norms, NeoX rope, ChatML) served by `edgecut serve --http` unchanged from
//! SmolLM2's path: the chat route answers transformers' greedy reply to the same turn, rendered
//! by its own template (`tests/fixtures/decoders-tiny.json`).

use std::process::Command;

use edgecut_tests::{cli_exe, fixture, http, spawn_http_api, tiny_decoder};
use serde_json::json;

use crate::{serve_one, Server};

#[test]
fn the_chat_route_serves_a_qwen3_model() {
    let (s, name) = serve_one(&tiny_decoder("qwen3", edgecut::WeightType::F32));
    let chat = &fixture("decoders-tiny.json")["models"]["qwen3"]["chat"];
    let n = chat["greedy"].as_array().unwrap().len();
    let body = json!({
        "model": name,
        "messages": chat["messages"],
        "max_tokens": n,
        "temperature": 0,
    })
    .to_string();
    let r = http(&format!("{}/v1/chat/completions", s.url), None, Some(&body));
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["choices"][0]["message"]["content"], chat["text"], "{j}");
    assert_eq!(
        j["usage"]["prompt_tokens"],
        chat["ids"].as_array().unwrap().len()
    );
    assert_eq!(j["usage"]["completion_tokens"], n);
}

/// A file as llama.cpp's quantizer writes Q4_K_M (Q4_K and Q6_K blocks) served the same way:
/// the completion route continues the fixture's prompt with transformers' greedy tokens on the
/// file's dequantized weights (`tests/fixtures/kquant.json`).
#[test]
fn the_completion_route_serves_a_q4_k_m_file() {
    let fx = fixture("kquant.json");
    let f = &fx["files"]["Q4_K_M"];
    let path = edgecut_tests::repo_root().join(f["file"].as_str().unwrap());
    let llm = edgecut::Llm::open(&path, &edgecut::LlmOptions::default()).unwrap();
    let prompt = llm.detokenize(&edgecut_tests::ids(&fx["ids"])).unwrap();
    let greedy = edgecut_tests::ids(&f["f16_kv"]["greedy"]);
    let want = llm.detokenize(&greedy).unwrap();
    let mut cmd = Command::new(cli_exe());
    cmd.args(["serve", "--http", "127.0.0.1:0", "--device", "cpu", "-m"])
        .arg(&path);
    let (child, url, log) = spawn_http_api(cmd);
    let s = Server { child, url, log };
    let body = json!({
        "model": "qwen3-k.Q4_K_M",
        "prompt": prompt,
        "max_tokens": greedy.len(),
        "temperature": 0,
    })
    .to_string();
    let r = http(&format!("{}/v1/completions", s.url), None, Some(&body));
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["choices"][0]["text"], want.as_str(), "{j}");
    assert_eq!(j["usage"]["completion_tokens"], greedy.len());
}
