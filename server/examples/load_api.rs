//! Load on an OpenAI-compatible server (edgecut's `serve --http`, or a peer such as
//! llama-cpp-python's server) from client threads on this machine: requests per second,
//! p50/p99 latency per route, errors, and for chat (streamed) the completion tokens per second
//! of all clients over the wall time, time to first token, and the decode rate: the tokens
//! after each request's first over the time during which some request was between its first
//! and last token (what the clients receive while decoding, prompts excluded; a server that
//! serves one request at a time gets no credit for the others waiting).
//!
//! ```text
//! load_api URL embed MODEL CLIENTS REQUESTS
//! load_api URL embed-for MODEL CLIENTS SECONDS
//! load_api URL chat MODEL CLIENTS REQUESTS MAX_TOKENS
//! load_api URL mixed EMBED_MODEL CHAT_MODEL      (64 x 100 embeddings and 8 x 5 chats at once)
//! ```

use std::time::{Duration, Instant};

use serde_json::{json, Value};

const WORDS: [&str; 16] = [
    "river", "engine", "garden", "market", "silver", "planet", "doctor", "window", "winter",
    "forest", "signal", "bridge", "coffee", "letter", "island", "camera",
];

/// One request's outcome: its latency, whether it succeeded, completion tokens, and for a
/// stream the times of its first and last text.
struct Done {
    took: Duration,
    ok: bool,
    tokens: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Time from sending to the first text.
    ttft: Option<Duration>,
}

impl Done {
    /// A request that failed before any answer.
    fn failed(start: Instant) -> Done {
        Done {
            took: start.elapsed(),
            ok: false,
            tokens: 0,
            first: None,
            last: None,
            ttft: None,
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into()
}

fn post(agent: &ureq::Agent, url: &str, body: &Value) -> (bool, Value, Duration) {
    let start = Instant::now();
    let r = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body.to_string());
    let took = start.elapsed();
    match r {
        Ok(mut r) => {
            let ok = r.status() == 200;
            let text = r.body_mut().read_to_string().unwrap_or_default();
            let v = serde_json::from_str(&text).unwrap_or(Value::Null);
            if !ok {
                eprintln!(
                    "{}: {}",
                    r.status(),
                    text.chars().take(200).collect::<String>()
                );
            }
            (ok, v, took)
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            (false, Value::Null, took)
        }
    }
}

fn sentence(client: usize, i: usize) -> String {
    let w = |k: usize| WORDS[(client * 7 + i * 3 + k) % WORDS.len()];
    format!(
        "The {} near the {} was quiet when the {} and the {} arrived at the {} number {i}.",
        w(0),
        w(1),
        w(2),
        w(3),
        w(4)
    )
}

fn embed_client(base: &str, model: &str, client: usize, n: usize) -> Vec<Done> {
    embed_until(base, model, client, n, None)
}

/// Embedding requests, one after another, until `n` are done or `until` has passed.
fn embed_until(
    base: &str,
    model: &str,
    client: usize,
    n: usize,
    until: Option<Instant>,
) -> Vec<Done> {
    let a = agent();
    let url = format!("{base}/v1/embeddings");
    (0..n)
        .take_while(|_| until.is_none_or(|u| Instant::now() < u))
        .map(|i| {
            let body = json!({"model": model, "input": sentence(client, i)});
            let (ok, v, took) = post(&a, &url, &body);
            let ok = ok
                && v["data"][0]["embedding"]
                    .as_array()
                    .is_some_and(|e| !e.is_empty());
            Done {
                took,
                ok,
                tokens: 0,
                first: None,
                last: None,
                ttft: None,
            }
        })
        .collect()
}

/// A streamed chat completion: success, completion tokens (from the usage chunk), and the
/// times of the first and last text chunks.
fn stream(agent: &ureq::Agent, url: &str, body: &Value) -> Done {
    use std::io::BufRead;
    let start = Instant::now();
    let r = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body.to_string());
    let mut r = match r {
        Ok(r) if r.status() == 200 => r,
        Ok(mut r) => {
            let text = r.body_mut().read_to_string().unwrap_or_default();
            eprintln!(
                "{}: {}",
                r.status(),
                text.chars().take(200).collect::<String>()
            );
            return Done::failed(start);
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            return Done::failed(start);
        }
    };
    let (mut first, mut last, mut tokens, mut ok, mut finished) = (None, None, 0, false, false);
    let reader = std::io::BufReader::new(r.body_mut().as_reader());
    for line in reader.lines() {
        let Ok(line) = line else { break };
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            ok = true;
            break;
        }
        let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        if v["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
        {
            let t = Instant::now();
            first.get_or_insert(t);
            last = Some(t);
            tokens += 1;
        }
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            tokens = n;
        }
        finished |= v["choices"][0]["finish_reason"].is_string();
    }
    // A stream that ends without a finish reason was cut short (a peer that drops a running
    // request for a new one).
    ok &= finished;
    if !ok {
        eprintln!("a stream ended without a finish reason after {tokens} tokens");
    }
    Done {
        took: start.elapsed(),
        ok,
        tokens,
        first,
        last,
        ttft: first.map(|f| f - start),
    }
}

fn chat_client(base: &str, model: &str, client: usize, n: usize, max_tokens: usize) -> Vec<Done> {
    let a = agent();
    let url = format!("{base}/v1/chat/completions");
    (0..n)
        .map(|i| {
            let body = json!({
                "model": model,
                "messages": [{"role": "user", "content": format!(
                    "Tell me a short story about a {} and a {}.",
                    WORDS[(client + i) % 16], WORDS[(client * 3 + i + 5) % 16])}],
                "max_tokens": max_tokens,
                "temperature": 0,
                "ignore_eos": true,
                "stream": true,
                "stream_options": {"include_usage": true},
            });
            stream(&a, &url, &body)
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn report(what: &str, by_client: &[Vec<Done>], wall: Duration) {
    let done: Vec<&Done> = by_client.iter().flatten().collect();
    let mut lat: Vec<Duration> = done.iter().map(|d| d.took).collect();
    lat.sort();
    let errors = done.iter().filter(|d| !d.ok).count();
    let tokens: u64 = done.iter().map(|d| d.tokens).sum();
    let secs = wall.as_secs_f64();
    print!(
        "{what}: {} requests in {secs:.2} s = {:.1} req/s; p50 {:.1} ms, p99 {:.1} ms; {errors} errors",
        done.len(),
        done.len() as f64 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
    );
    if tokens > 0 {
        print!(
            "; {tokens} completion tokens = {:.1} tokens/s",
            tokens as f64 / secs
        );
        let mut ttft: Vec<Duration> = done.iter().filter_map(|d| d.ttft).collect();
        ttft.sort();
        if let Some(rate) = decode_rate(by_client) {
            print!(
                "; first token p50 {:.0} ms; decode {rate:.1} tokens/s",
                percentile(&ttft, 0.5)
            );
        }
    }
    println!();
}

/// Runs `f(client)` on `clients` threads at once: every request's outcome, by client, and the
/// wall time.
fn run<F>(clients: usize, f: F) -> (Vec<Vec<Done>>, Duration)
where
    F: Fn(usize) -> Vec<Done> + Sync,
{
    let start = Instant::now();
    let done = std::thread::scope(|s| {
        let f = &f;
        let hs: Vec<_> = (0..clients).map(|c| s.spawn(move || f(c))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    (done, start.elapsed())
}

/// The decode rate of all clients together: the tokens after each request's first over the
/// length of the union of the requests' first-to-last intervals.
fn decode_rate(by_client: &[Vec<Done>]) -> Option<f64> {
    let mut spans: Vec<(Instant, Instant, u64)> = by_client
        .iter()
        .flatten()
        .filter_map(|d| Some((d.first?, d.last?, d.tokens.saturating_sub(1))))
        .collect();
    spans.sort_by_key(|s| s.0);
    let tokens: u64 = spans.iter().map(|s| s.2).sum();
    let mut covered = Duration::ZERO;
    let mut open: Option<(Instant, Instant)> = None;
    for (a, b, _) in spans {
        open = match open {
            Some((s, e)) if a <= e => Some((s, e.max(b))),
            Some((s, e)) => {
                covered += e - s;
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    if let Some((s, e)) = open {
        covered += e - s;
    }
    (covered > Duration::ZERO).then(|| tokens as f64 / covered.as_secs_f64())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "load_api URL embed MODEL CLIENTS REQUESTS | URL embed-for MODEL CLIENTS SECONDS \
                 | URL chat MODEL CLIENTS REQUESTS MAX_TOKENS | URL mixed EMBED_MODEL CHAT_MODEL";
    let n = |i: usize| -> usize {
        args.get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{usage}"))
    };
    let base = args.first().expect(usage).trim_end_matches('/').to_string();
    match args.get(1).map(String::as_str) {
        Some("embed") => {
            let (model, clients, reqs) = (&args[2], n(3), n(4));
            let (d, w) = run(clients, |c| embed_client(&base, model, c, reqs));
            report(&format!("embeddings, {clients} clients"), &d, w);
        }
        Some("embed-for") => {
            let (model, clients, secs) = (&args[2], n(3), n(4));
            let until = Instant::now() + Duration::from_secs(secs as u64);
            let (d, w) = run(clients, |c| {
                embed_until(&base, model, c, usize::MAX, Some(until))
            });
            report(
                &format!("embeddings, {clients} clients for {secs} s"),
                &d,
                w,
            );
        }
        Some("chat") => {
            let (model, clients, reqs, max) = (&args[2], n(3), n(4), n(5));
            let (d, w) = run(clients, |c| chat_client(&base, model, c, reqs, max));
            report(&format!("chat, {clients} clients"), &d, w);
        }
        Some("mixed") => {
            let (em, cm) = (&args[2], &args[3]);
            let start = Instant::now();
            let ((e, ew), (c, cw)) = std::thread::scope(|s| {
                let e = s.spawn(|| {
                    let t = Instant::now();
                    let (d, _) = run(64, |c| embed_client(&base, em, c, 100));
                    (d, t.elapsed())
                });
                let c = s.spawn(|| {
                    let t = Instant::now();
                    let (d, _) = run(8, |k| chat_client(&base, cm, k, 5, 64));
                    (d, t.elapsed())
                });
                (e.join().unwrap(), c.join().unwrap())
            });
            report("mixed: embeddings, 64 clients x 100", &e, ew);
            report("mixed: chat, 8 clients x 5 (64 tokens)", &c, cw);
            println!("mixed: all done in {:.2} s", start.elapsed().as_secs_f64());
        }
        _ => panic!("{usage}"),
    }
}
