//! Load on a decoder `edgecut serve`: N devices, each generating M tokens split at a cut, all at
//! once, then the same N one after another. Prints aggregate tokens/s both ways, errors and
//! fallbacks; the server's metrics give the mean decode batch.
//!
//! edgecut serve -m smollm.gguf --listen 127.0.0.1:7071 --metrics 127.0.0.1:9091 \
//!     --token-file TOKEN --max-sessions 16 &
//! EDGECUT_TOKEN=$(cat TOKEN) cargo run --release -p edgecut-server --example load_decode -- smollm.gguf 127.0.0.1:7071 16 64 1 127.0.0.1:9091

use std::time::{Duration, Instant};

use edgecut::split::SplitDecoder;
use edgecut::{GenerateOptions, Llm, LlmOptions, SamplingParams};
use edgecut_server::{ClientConfig, DecoderLink};

/// One device's generation: tokens, whether it fell back, time.
fn device(llm: &Llm, addr: &str, cut: usize, tokens: usize, i: usize) -> (usize, bool, Duration) {
    let cfg = ClientConfig {
        server: addr.to_string(),
        // A server that asks no token caps sessions per address (--max-sessions-per-client):
        // with EDGECUT_TOKEN set (and --token-file on the server) the devices are trusted.
        token: std::env::var("EDGECUT_TOKEN")
            .unwrap_or_default()
            .into_bytes(),
        cut,
        encoding: edgecut_wire::Encoding::F16,
        timeout: Duration::from_secs(120),
        tls: None,
        auto: None,
    };
    let mut link = DecoderLink::new(llm, cfg, SamplingParams::default());
    let mut d = SplitDecoder::new(llm, cut).unwrap();
    let prompt = llm
        .tokenize(&format!(
            "Device {i} asks: what is the tallest mountain on Earth?"
        ))
        .unwrap();
    let opts = GenerateOptions::default()
        .with_max_tokens(tokens)
        .with_ignore_eos(true);
    let t = Instant::now();
    let g = d
        .generate(&prompt, &opts, &mut link, &mut |_| true)
        .unwrap();
    (
        g.generation.tokens.len(),
        g.fell_back.is_some(),
        t.elapsed(),
    )
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 && a.len() != 7 {
        eprintln!("usage: load_decode MODEL.gguf HOST:PORT DEVICES TOKENS CUT [METRICS_HOST:PORT]");
        std::process::exit(2);
    }
    let (model, addr) = (&a[1], &a[2]);
    let (devices, tokens, cut): (usize, usize, usize) = (
        a[3].parse().unwrap(),
        a[4].parse().unwrap(),
        a[5].parse().unwrap(),
    );
    // One op thread per device: the devices share this machine's cores with the server.
    let llm = Llm::open(model, &LlmOptions::default().with_threads(1)).unwrap();
    let metrics = a.get(6);
    let m0 = batches(metrics);
    let t = Instant::now();
    let at_once: Vec<(usize, bool, Duration)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..devices)
            .map(|i| {
                let llm = &llm;
                s.spawn(move || device(llm, addr, cut, tokens, i))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = t.elapsed().as_secs_f64();
    let n: usize = at_once.iter().map(|r| r.0).sum();
    let fell = at_once.iter().filter(|r| r.1).count();
    let m1 = batches(metrics);
    println!(
        "{devices} devices x {tokens} tokens at once, cut {cut}: {n} tokens in {wall:.2} s = {:.1} tokens/s, fallbacks {fell}{}",
        n as f64 / wall,
        mean_batch(m0, m1)
    );
    let t = Instant::now();
    let mut n1 = 0;
    let mut fell1 = 0;
    for i in 0..devices {
        let r = device(&llm, addr, cut, tokens, i);
        n1 += r.0;
        fell1 += r.1 as usize;
    }
    let wall1 = t.elapsed().as_secs_f64();
    let m2 = batches(metrics);
    println!(
        "the same one after another: {n1} tokens in {wall1:.2} s = {:.1} tokens/s, fallbacks {fell1}{}; at once / one by one = {:.2}x",
        n1 as f64 / wall1,
        mean_batch(m1, m2),
        (n as f64 / wall) / (n1 as f64 / wall1)
    );
}

/// The server's (decode batches, batched steps, errors) from its metrics endpoint.
fn batches(addr: Option<&String>) -> Option<(f64, f64, f64)> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr?).ok()?;
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).ok()?;
    let get = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    Some((
        get("edgecut_decode_batches_total")?,
        get("edgecut_decode_batched_steps_total")?,
        get("edgecut_errors_total")?,
    ))
}

fn mean_batch(a: Option<(f64, f64, f64)>, b: Option<(f64, f64, f64)>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!(
            ", server: mean decode batch {:.2}, errors {}",
            (b.1 - a.1) / (b.0 - a.0).max(1.0),
            b.2 - a.2
        ),
        _ => String::new(),
    }
}
