//! Admission and the life of requests: a burst past the places and the queue (429 with
//! Retry-After, nothing hangs, the server stays up), a streaming client that leaves (its slot
//! freed, the metric shows it), and a shutdown that finishes the request in flight.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use edgecut_tests::{http, metric};
use serde_json::json;

use crate::{names, serve};

fn chat_body(max_tokens: usize, stream: bool) -> String {
    let (_, generator) = names();
    json!({
        "model": generator,
        "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": true,
        "stream": stream,
    })
    .to_string()
}

#[test]
fn a_burst_past_the_places_gets_429_with_retry_after_and_nothing_hangs() {
    let s = serve(&["--http-slots", "2", "--http-max-queue", "3"]);
    let url = format!("{}/v1/chat/completions", s.url);
    let start = Instant::now();
    let replies: Vec<edgecut_tests::HttpReply> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..50)
            .map(|_| sc.spawn(|| http(&url, None, Some(&chat_body(12, false)))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let took = start.elapsed();
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let busy: Vec<_> = replies.iter().filter(|r| r.status == 429).collect();
    println!(
        "50 at once: {ok} answered, {} refused, in {took:?}",
        busy.len()
    );
    assert_eq!(ok + busy.len(), 50, "only 200 or 429");
    // At least the 2 places and 3 queue places are served; most of the burst is refused.
    assert!(ok >= 5, "{ok} answered");
    assert!(busy.len() >= 30, "{} refused", busy.len());
    for r in &busy {
        assert_eq!(r.retry_after.as_deref(), Some("1"));
        assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    }
    for r in replies.iter().filter(|r| r.status == 200) {
        assert_eq!(r.json()["usage"]["completion_tokens"], 12);
    }
    // Still up, and the refusals are counted.
    assert_eq!(http(&format!("{}/health", s.url), None, None).status, 200);
    let (_, generator) = names();
    let addr = s.url.trim_start_matches("http://");
    let refused = metric(
        addr,
        &format!("edgecut_refused_total{{model=\"{generator}\"}}"),
    );
    assert_eq!(refused, Some(busy.len() as f64));
}

#[test]
fn a_streaming_client_that_leaves_frees_its_slot() {
    // One slot, no queue: while the slot is taken every other request is refused.
    let s = serve(&["--http-slots", "1", "--http-max-queue", "0"]);
    let addr = s.url.trim_start_matches("http://").to_string();
    let body = chat_body(1500, true);
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        c,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Read until the stream has started.
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("data: ") {
        let n = c.read(&mut b).unwrap();
        assert!(n > 0, "the stream ended early");
        got.extend_from_slice(&b[..n]);
    }
    let url = format!("{}/v1/chat/completions", s.url);
    let r = http(&url, None, Some(&chat_body(4, false)));
    assert_eq!(r.status, 429, "the slot is taken: {}", r.body);
    drop(c);
    let (_, generator) = names();
    let name = format!("edgecut_cancelled_total{{model=\"{generator}\"}}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&addr, &name) != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the generation was not cancelled"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = http(&url, None, Some(&chat_body(4, false)));
    assert_eq!(r.status, 200, "the slot is free again: {}", r.body);
    let generated = metric(
        &addr,
        &format!("edgecut_generated_tokens_total{{model=\"{generator}\"}}"),
    );
    assert!(
        generated.unwrap() < 1000.0,
        "the stream stopped early: {generated:?}"
    );
}

#[test]
fn shutdown_finishes_the_request_in_flight() {
    let mut s = serve(&["--drain-timeout", "60"]);
    let url = format!("{}/v1/chat/completions", s.url);
    let (tx, rx) = std::sync::mpsc::channel();
    let u = url.clone();
    std::thread::spawn(move || tx.send(http(&u, None, Some(&chat_body(48, false)))));
    // The request is in its slot once the first token is out.
    let addr = s.url.trim_start_matches("http://").to_string();
    let (_, generator) = names();
    let ttft = format!("edgecut_time_to_first_token_seconds_count{{model=\"{generator}\"}}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&addr, &ttft) != Some(1.0) {
        assert!(Instant::now() < deadline, "the generation did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: kill(2) with the pid of a child process this test started.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    // While the request drains, a probe is answered 503 (not refused).
    std::thread::sleep(Duration::from_millis(200));
    let h = http(&format!("{}/health", s.url), None, None);
    assert_eq!(h.status, 503, "/health while draining: {}", h.body);
    let r = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["usage"]["completion_tokens"], 48);
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status:?}: {}", s.log.lock().unwrap());
}

#[test]
fn a_repeated_conversation_reuses_the_slot_that_holds_it() {
    let s = serve(&["--http-slots", "2"]);
    let url = format!("{}/v1/chat/completions", s.url);
    let addr = s.url.trim_start_matches("http://").to_string();
    let (_, generator) = names();
    let prompt_tokens = || {
        metric(
            &addr,
            &format!("edgecut_prompt_tokens_total{{model=\"{generator}\"}}"),
        )
        .unwrap()
    };
    let first = http(&url, None, Some(&chat_body(8, false)));
    assert_eq!(first.status, 200, "{}", first.body);
    let whole = first.json()["usage"]["prompt_tokens"].as_f64().unwrap();
    assert_eq!(
        prompt_tokens(),
        whole,
        "the first request runs its whole prompt"
    );
    // The same conversation with the reply and a new message: only the new tokens run.
    let reply = first.json()["choices"][0]["message"]["content"].clone();
    let body = json!({
        "model": generator,
        "messages": [
            {"role": "user", "content": "Write a long story about a lighthouse."},
            {"role": "assistant", "content": reply},
            {"role": "user", "content": "Shorter, please."},
        ],
        "max_tokens": 4,
        "temperature": 0,
    });
    let second = http(&url, None, Some(&body.to_string()));
    assert_eq!(second.status, 200, "{}", second.body);
    let asked = second.json()["usage"]["prompt_tokens"].as_f64().unwrap();
    let ran = prompt_tokens() - whole;
    println!("second turn: {asked} prompt tokens, {ran} run");
    assert!(
        ran < asked - whole / 2.0,
        "{ran} of {asked} ran: the cached prefix was not reused"
    );
}
