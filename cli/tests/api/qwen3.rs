//! A tiny Qwen3 (q/k norms, NeoX rope, ChatML) served by `edgecut serve --http` unchanged from
//! SmolLM2's path: the chat route answers transformers' greedy reply to the same turn, rendered
//! by its own template (`tests/fixtures/decoders-tiny.json`).

use std::process::Command;

use edgecut_tests::{cli_exe, fixture, http, spawn_http_api, tiny_decoder};
use serde_json::json;

use crate::Server;

#[test]
fn the_chat_route_serves_a_qwen3_model() {
    let path = tiny_decoder("qwen3", edgecut::WeightType::F32);
    let mut cmd = Command::new(cli_exe());
    cmd.args(["serve", "--http", "127.0.0.1:0", "--device", "cpu", "-m"])
        .arg(&path);
    let (child, url, log) = spawn_http_api(cmd);
    let s = Server { child, url, log };
    let name = path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_end_matches(".gguf")
        .to_string();
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
