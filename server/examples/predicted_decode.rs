//! Split decoding, predicted against measured (from the profiles alone, and calibrated by the
//! steps of K = 1 on that link: the server's time from NEXT and the round trip): SmolLM2 split at several K through the link
//! shaper at 1, 10 and 100 Mbit/s with 2 and 20 ms round trips, against `edgecut serve` on this
//! machine, next to `DecodePlanner`'s predictions from the two profiles. The device runs one
//! thread (as its profile was measured); the device and the server never compute at the same
//! time in one conversation, so sharing this machine costs little.
//!
//! edgecut profile -m smollm.gguf --threads 1 --seq 1,16,64 -o dev.json
//! edgecut profile -m smollm.gguf --threads 2 --seq 1,16,64 -o srv.json
//! edgecut serve -m smollm.gguf --threads 2 --listen 127.0.0.1:7074 &
//! cargo run --release -p edgecut-server --example predicted_decode -- smollm.gguf \
//!     127.0.0.1:7074 dev.json srv.json

use std::sync::Arc;
use std::time::Duration;

use edgecut::split::SplitDecoder;
use edgecut::{GenerateOptions, Llm, LlmOptions, SamplingParams};
use edgecut_partition::{
    DecodeCalibration, DecodePlanner, DecodeScenario, Encoding, Link, Profile,
};
use edgecut_server::{ClientConfig, DecoderLink, Shape};

const PROMPT: usize = 32;
const REPLY: usize = 64;

/// Median of `v`.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 5 {
        eprintln!("usage: predicted_decode MODEL.gguf SERVER_ADDR DEVICE_PROFILE SERVER_PROFILE");
        std::process::exit(2);
    }
    let (model, server): (&String, std::net::SocketAddr) =
        (&a[1], a[2].parse().expect("server address"));
    let load = |p: &str| Profile::from_json(&std::fs::read_to_string(p).unwrap()).unwrap();
    let (dev, srv) = (load(&a[3]), load(&a[4]));
    let planner = DecodePlanner::new(&dev, &srv).unwrap();
    let n = planner.blocks();
    let llm = Llm::open(model, &LlmOptions::default().with_threads(1)).unwrap();
    let prompt: Vec<u32> = llm
        .tokenize(&"The history of the city is long and ".repeat(8))
        .unwrap()
        .into_iter()
        .take(PROMPT)
        .collect();
    let opts = GenerateOptions::default()
        .with_max_tokens(REPLY)
        .with_ignore_eos(true);
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    );
    println!(
        "| link | K | first token ms: profiles / calibrated / measured | tokens/s: profiles / calibrated / measured | turn ms: profiles / calibrated / measured | server ms per step: predicted / measured | round trip ms per step (link + server): predicted / measured |"
    );
    println!("|---|---|---|---|---|---|---|");
    let (mut within, mut within_cal, mut total) = (0, 0, 0);
    let links: Vec<(f64, f64)> = match std::env::var("LINKS") {
        // "100:2,10:20": Mbit/s and round trip ms.
        Ok(v) => v
            .split(',')
            .map(|p| {
                let (m, r) = p.split_once(':').expect("MBIT:RTT_MS");
                (m.parse().unwrap(), r.parse().unwrap())
            })
            .collect(),
        Err(_) => vec![
            (1.0, 2.0),
            (1.0, 20.0),
            (10.0, 2.0),
            (10.0, 20.0),
            (100.0, 2.0),
            (100.0, 20.0),
        ],
    };
    for (mbit, rtt_ms) in links {
        let sc = DecodeScenario {
            prompt: PROMPT,
            reply: REPLY,
            context: llm.context_len(),
            link: Link::parse(&format!(
                "{}mbit,{rtt_ms}ms",
                if mbit == 0.0 { 10000.0 } else { mbit }
            ))
            .unwrap(),
            encoding: Encoding::F16,
        };
        let mut plan = planner.plan(&sc, None).unwrap();
        let mut cal = DecodeCalibration::NONE;
        let shape = Shape {
            bps: mbit * 1e6,
            delay: Duration::from_secs_f64(rtt_ms / 2e3),
        };
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // A link of 0 Mbit/s: straight to the server, no shaper.
        let (task, addr) = if mbit == 0.0 {
            drop(listener);
            (rt.spawn(async {}), server.to_string())
        } else {
            (
                rt.spawn(edgecut_server::shape(listener, server, shape, shape)),
                addr,
            )
        };
        // KS="1,15": only these cuts (and the plan's).
        let mut ks: Vec<usize> = match std::env::var("KS") {
            Ok(v) => v.split(',').map(|k| k.parse().unwrap()).collect(),
            Err(_) => vec![1, 8, 15, 22, 29, n],
        };
        if !ks.contains(&plan.best.k) {
            ks.push(plan.best.k);
        }
        let mut measured_turns = Vec::new();
        // K = 1 first: its steps calibrate the predictions of every other K (and the plan).
        ks.retain(|&k| k != 1);
        ks.insert(0, 1);
        let mut i = 0;
        while i < ks.len() {
            let k = ks[i];
            i += 1;
            let (mut first, mut rate, mut turn) = (Vec::new(), Vec::new(), Vec::new());
            let (mut server_ms, mut rtt_ms_seen) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                let g = if k == n {
                    llm.new_context()
                        .unwrap()
                        .generate(&prompt, &opts, &mut |_| true)
                        .unwrap()
                } else {
                    let cfg = ClientConfig {
                        server: addr.clone(),
                        token: Vec::new(),
                        cut: k,
                        encoding: edgecut_wire::Encoding::F16,
                        timeout: Duration::from_secs(60),
                        tls: None,
                        auto: None,
                    };
                    let mut link = DecoderLink::new(&llm, cfg, SamplingParams::default());
                    let mut d = SplitDecoder::new(&llm, k).unwrap();
                    let g = d
                        .generate(&prompt, &opts, &mut link, &mut |_| true)
                        .unwrap();
                    assert!(g.fell_back.is_none(), "{:?}", g.fell_back);
                    let st = link.stats;
                    server_ms.push(st.server.as_secs_f64() * 1e3 / st.steps as f64);
                    rtt_ms_seen.push(st.round_trips.as_secs_f64() * 1e3 / st.steps as f64);
                    g.generation
                };
                let f = g.prefill.as_secs_f64() * 1e3;
                first.push(f);
                rate.push((g.tokens.len() - 1) as f64 / g.decode.as_secs_f64());
                turn.push(f + g.decode.as_secs_f64() * 1e3);
            }
            let b = planner.evaluate(k, &sc);
            let (f, r, t) = (median(first), median(rate), median(turn));
            if k == 1 {
                cal = planner.calibrate(
                    1,
                    &sc,
                    median(server_ms.clone()),
                    median(rtt_ms_seen.clone()),
                );
                plan = planner.plan_with(&sc, None, &cal).unwrap();
                if !ks.contains(&plan.best.k) {
                    ks.push(plan.best.k);
                }
            }
            let c = planner.evaluate_with(k, &sc, &cal);
            for (p, q, m) in [
                (b.first_token_ms, c.first_token_ms, f),
                (b.tokens_per_s, c.tokens_per_s, r),
            ] {
                total += 1;
                within += ((m / p - 1.0).abs() <= 0.2) as usize;
                within_cal += ((m / q - 1.0).abs() <= 0.2) as usize;
            }
            let per_step = if server_ms.is_empty() {
                String::new()
            } else {
                format!(
                    "{:.2} / {:.2} | {:.2} / {:.2}",
                    b.server_step_ms,
                    median(server_ms),
                    b.server_step_ms + b.link_step_ms,
                    median(rtt_ms_seen)
                )
            };
            println!(
                "| {mbit} Mbit/s, {rtt_ms} ms | {k}{} | {:.0} / {:.0} / {f:.0} | {:.1} / {:.1} / {r:.1} | {:.0} / {:.0} / {t:.0} | {per_step} |",
                if k == plan.best.k { " (plan)" } else { "" },
                b.first_token_ms,
                c.first_token_ms,
                b.tokens_per_s,
                c.tokens_per_s,
                b.turn_ms,
                c.turn_ms
            );
            measured_turns.push((k, t));
        }
        task.abort();
        let best = measured_turns
            .iter()
            .cloned()
            .fold((0, f64::INFINITY), |b, r| if r.1 < b.1 { r } else { b });
        let planned = measured_turns
            .iter()
            .find(|r| r.0 == plan.best.k)
            .unwrap()
            .1;
        println!(
            "| {mbit} Mbit/s, {rtt_ms} ms | planner's K = {}: measured turn {planned:.0} ms; best measured K = {} ({:.0} ms): {:+.1}% | | | |",
            plan.best.k,
            best.0,
            best.1,
            (planned / best.1 - 1.0) * 100.0
        );
    }
    println!(
        "\npredictions within 20% of the measurement: from the profiles {within} of {total}; calibrated at K = 1 {within_cal} of {total}"
    );
}
