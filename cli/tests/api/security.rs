//! TLS with the server's rustls set-up (curl trusting the test CA), CORS only when asked, and
//! the key on /health and /metrics when asked.

use std::process::Command;

use edgecut_tests::{http, TlsFixture};

use crate::{names, serve};

/// `curl` with `args`: the status line and headers (`-i`), and the body.
fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "60"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((h, b)) => (h.to_string(), b.to_string()),
        None => (text, String::new()),
    }
}

#[test]
fn the_api_speaks_tls_and_refuses_plain_clients() {
    let tls = TlsFixture::load();
    let ca = &tls.ca;
    let s = serve(&tls.serve_args());
    assert!(s.url.starts_with("https://"), "{}", s.url);
    let (embedder, _) = names();
    let body = format!("{{\"model\": \"{embedder}\", \"input\": \"over TLS\"}}");
    let url = format!("{}/v1/embeddings", s.url);
    let (head, reply) = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "-H",
        "content-type: application/json",
        "-d",
        &body,
        &url,
    ]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 384);
    // A client that does not trust the CA, and one that speaks plain HTTP, get nothing.
    let (head, _) = curl(&[&url]);
    assert!(!head.contains("HTTP/1.1"), "{head}");
    let plain = url.replace("https://", "http://");
    let (head, _) = curl(&[&plain]);
    assert!(!head.contains("HTTP/1.1 200"), "{head}");
}

#[test]
fn cors_headers_only_when_asked_and_the_key_on_health_when_asked() {
    let s = serve(&[]);
    let (head, _) = curl(&[
        "-H",
        "Origin: https://app.example",
        &format!("{}/v1/models", s.url),
    ]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "CORS is off by default: {head}"
    );
    drop(s);
    let s = serve(&[
        "--cors-origin",
        "https://app.example",
        "--api-key",
        "k3y",
        "--api-key-for-health",
    ]);
    let models = format!("{}/v1/models", s.url);
    let (head, _) = curl(&[
        "-X",
        "OPTIONS",
        "-H",
        "Origin: https://app.example",
        "-H",
        "Access-Control-Request-Method: POST",
        "-H",
        "Access-Control-Request-Headers: authorization, content-type",
        &models,
    ]);
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("access-control-allow-origin: https://app.example"),
        "{head}"
    );
    let (head, _) = curl(&[
        "-H",
        "Origin: https://evil.example",
        "-H",
        "Authorization: Bearer k3y",
        &models,
    ]);
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "another origin gets no CORS header: {head}"
    );
    assert_eq!(http(&format!("{}/health", s.url), None, None).status, 401);
    assert_eq!(
        http(&format!("{}/health", s.url), Some("k3y"), None).status,
        200
    );
    assert_eq!(http(&format!("{}/metrics", s.url), None, None).status, 401);
}
