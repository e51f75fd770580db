//! Every refusal: its status, OpenAI's error shape, and a message naming what is wrong.

use edgecut_tests::{http, metric};
use serde_json::json;

use crate::{names, serve};

fn error_of(r: &edgecut_tests::HttpReply) -> (String, String) {
    let v = r.json();
    let e = &v["error"];
    (
        e["type"].as_str().unwrap_or_default().to_string(),
        e["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn bad_requests_get_the_right_status_and_a_clear_message() {
    let key_file = edgecut_tests::scratch().join("api-key");
    std::fs::write(&key_file, "s3cret-key\n").unwrap();
    let key = key_file.to_str().unwrap();
    let s = serve(&["--api-key-file", key, "--http-max-body-kb", "64"]);
    let (embedder, generator) = names();
    let url = |p: &str| format!("{}{p}", s.url);
    let k = Some("s3cret-key");
    let emb = |input: serde_json::Value| json!({"model": embedder, "input": input}).to_string();

    // The key: missing or wrong is 401; health and metrics are open.
    let r = http(&url("/v1/embeddings"), None, Some(&emb(json!("hi"))));
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(error_of(&r).0, "authentication_error");
    let r = http(
        &url("/v1/embeddings"),
        Some("s3cret-kez"),
        Some(&emb(json!("hi"))),
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(http(&url("/health"), None, None).status, 200);
    assert_eq!(
        http(&url("/v1/embeddings"), k, Some(&emb(json!("hi")))).status,
        200
    );

    // Invalid JSON, a wrong field type.
    let r = http(&url("/v1/embeddings"), k, Some("{\"model\": "));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(error_of(&r).1.contains("not valid JSON"), "{}", r.body);
    let r = http(
        &url("/v1/chat/completions"),
        k,
        Some(&json!({"model": generator, "messages": "hi"}).to_string()),
    );
    assert_eq!(r.status, 400, "{}", r.body);

    // A body past --http-max-body-kb: 413.
    let big = emb(json!("word ".repeat(20_000)));
    let r = http(&url("/v1/embeddings"), k, Some(&big));
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(
        error_of(&r).1.contains("larger than the server takes"),
        "{}",
        r.body
    );

    // 10,000 inputs in one request: 400 naming the count and the limit.
    let many = vec!["x"; 10_000];
    let r = http(&url("/v1/embeddings"), k, Some(&emb(json!(many))));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(error_of(&r).1.contains("10000 inputs"), "{}", r.body);

    // An input longer than the model takes.
    let r = http(
        &url("/v1/embeddings"),
        k,
        Some(&emb(json!("word ".repeat(600)))),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");

    // Unknown model: 404 with OpenAI's code, naming the served ones.
    let r = http(
        &url("/v1/embeddings"),
        k,
        Some(&json!({"model": "nope", "input": "x"}).to_string()),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    assert!(error_of(&r).1.contains(&embedder), "{}", r.body);

    // The wrong kind of model, a token budget past the limit, n > 1.
    let r = http(
        &url("/v1/embeddings"),
        k,
        Some(&json!({"model": generator, "input": "x"}).to_string()),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let chat = |extra: serde_json::Value| {
        let mut v = json!({"model": generator, "messages": [{"role": "user", "content": "hi"}]});
        for (a, b) in extra.as_object().unwrap() {
            v[a] = b.clone();
        }
        v.to_string()
    };
    let r = http(
        &url("/v1/chat/completions"),
        k,
        Some(&chat(json!({"max_tokens": 100000}))),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["param"], "max_tokens");
    let r = http(
        &url("/v1/chat/completions"),
        k,
        Some(&chat(json!({"n": 100}))),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["param"], "n", "more choices than slots");
    let r = http(
        &url("/v1/chat/completions"),
        k,
        Some(&chat(json!({"temperature": 5}))),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = http(
        &url("/detokenize"),
        k,
        Some(&json!({"tokens": [u32::MAX]}).to_string()),
    );
    assert_eq!(r.status, 400, "{}", r.body);

    // Unknown routes and methods.
    let r = http(&url("/v2/nothing"), k, None);
    assert_eq!(r.status, 404, "{}", r.body);
    let r = http(&url("/v1/embeddings"), k, None);
    assert_eq!(r.status, 405, "{}", r.body);

    // Tokenize and detokenize round-trip.
    let r = http(
        &url("/tokenize"),
        k,
        Some(&json!({"content": "Hello world"}).to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let tokens = r.json()["tokens"].clone();
    let r = http(
        &url("/detokenize"),
        k,
        Some(&json!({"tokens": tokens}).to_string()),
    );
    assert_eq!(r.json()["content"].as_str().unwrap().trim(), "Hello world");

    // The refusals are counted by route and status.
    let addr = s.url.trim_start_matches("http://");
    let n = |route: &str, status: u16| {
        metric(
            addr,
            &format!("edgecut_http_requests_total{{route=\"{route}\",status=\"{status}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(n("/v1/embeddings", 401), 2.0);
    assert_eq!(n("/v1/embeddings", 413), 1.0);
    assert_eq!(n("/v1/embeddings", 200), 1.0);
    assert_eq!(n("unmatched", 404), 1.0);
}
