//! Load on `edgecut serve`: N client threads x M requests, each one text split at a cut.
//! Prints throughput, p50/p99 latency, errors and fallbacks; the server's metrics endpoint
//! gives the mean batch size.
//!
//! edgecut serve -m minilm.gguf --listen 127.0.0.1:7070 --metrics 127.0.0.1:9090 &
//! cargo run --release -p edgecut-server --example load -- minilm.gguf 127.0.0.1:7070 64 200 1

use std::time::{Duration, Instant};

use edgecut::{Session, SessionOptions};
use edgecut_server::{ClientConfig, SplitClient};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        eprintln!("usage: load MODEL.gguf HOST:PORT CLIENTS REQUESTS CUT");
        std::process::exit(2);
    }
    let (model, addr) = (&a[1], &a[2]);
    let (clients, requests, cut): (usize, usize, usize) = (
        a[3].parse().unwrap(),
        a[4].parse().unwrap(),
        a[5].parse().unwrap(),
    );
    // One thread per client, one op thread each: the device side stays light (cut 1 runs the
    // embeddings only).
    let session = Session::open(model, &SessionOptions::default().with_threads(1)).unwrap();
    let start = Instant::now();
    let results: Vec<(Vec<Duration>, usize)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..clients)
            .map(|c| {
                let session = &session;
                s.spawn(move || {
                    let cfg = ClientConfig {
                        server: addr.clone(),
                        token: Vec::new(),
                        cut,
                        encoding: edgecut_wire::Encoding::Int8,
                        timeout: Duration::from_secs(60),
                        tls: None,
                        auto: None,
                    };
                    let mut cl = SplitClient::new(session, cfg);
                    let mut lat = Vec::with_capacity(requests);
                    let mut fell = 0;
                    for r in 0..requests {
                        let text =
                            format!("client {c} asks question number {r} about edge inference");
                        let t = Instant::now();
                        let out = cl.embed(&[&text]).unwrap();
                        lat.push(t.elapsed());
                        fell += out.fell_back.is_some() as usize;
                    }
                    (lat, fell)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let mut lat: Vec<f64> = results
        .iter()
        .flat_map(|r| r.0.iter().map(|d| d.as_secs_f64() * 1e3))
        .collect();
    let fell: usize = results.iter().map(|r| r.1).sum();
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
    println!(
        "{clients} clients x {requests} requests, cut {cut}: {:.1} requests/s, p50 {:.1} ms, p99 {:.1} ms, fallbacks {fell}",
        lat.len() as f64 / wall,
        q(0.5),
        q(0.99)
    );
}
