//! Split decoding, predicted against measured: SmolLM2 split at several K through the link
//! shaper at 1, 10 and 100 Mbit/s with 2 and 20 ms round trips, against `edgecut serve`, next
//! to `DecodePlanner`'s predictions from the two profiles alone and calibrated by two of the
//! measured cuts on that link: the turn all on the device (K = N: the device's step and
//! prefill against its profile) and K = 1 (the server's step from NEXT and the round trip).
//! The cuts are measured round-robin (every cut once, then again), so that a stretch in which
//! this shared machine runs slow falls on all of them alike.
//!
//! `benches/split/predicted_decode.sh` runs it as it should run: the device pinned to one
//! core, the server to the other, both profiled there first:
//!
//! taskset -c 0 edgecut profile -m smollm.gguf --threads 1 --seq 1,16,32,64 -o dev.json
//! taskset -c 1 edgecut profile -m smollm.gguf --threads 1 --seq 1,16,32,64 -o srv.json
//! taskset -c 1 edgecut serve -m smollm.gguf --threads 1 --listen 127.0.0.1:7074 &
//! taskset -c 0 predicted_decode smollm.gguf 127.0.0.1:7074 dev.json srv.json
//!
//! Environment: `LINKS="100:2,10:20"` (Mbit/s:round-trip ms; 0 Mbit/s: straight to the
//! server), `KS="1,15"` (cuts besides 1, N and the plan's), `ROUNDS=3`.

use std::sync::Arc;
use std::time::Duration;

use edgecut::split::SplitDecoder;
use edgecut::{GenerateOptions, Llm, LlmOptions, SamplingParams};
use edgecut_partition::{
    DecodeBreakdown, DecodeCalibration, DecodePlanner, DecodeScenario, Encoding, Link, Profile,
};
use edgecut_server::{ClientConfig, DecoderLink, Shape};

const PROMPT: usize = 32;
const REPLY: usize = 64;

/// Median of `v`.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One measured turn.
#[derive(Default)]
struct Runs {
    first: Vec<f64>,
    rate: Vec<f64>,
    turn: Vec<f64>,
    /// Per one-row STEP: the server's own time and the round trip.
    server_ms: Vec<f64>,
    rtt_ms: Vec<f64>,
}

/// Runs one turn at cut `k` (`n`: all here) through `addr`.
fn turn(llm: &Llm, prompt: &[u32], k: usize, n: usize, addr: &str, runs: &mut Runs) {
    let opts = GenerateOptions::default()
        .with_max_tokens(REPLY)
        .with_ignore_eos(true);
    let g = if k == n {
        llm.new_context()
            .unwrap()
            .generate(prompt, &opts, &mut |_| true)
            .unwrap()
    } else {
        let cfg = ClientConfig {
            server: addr.to_string(),
            token: Vec::new(),
            cut: k,
            encoding: edgecut_wire::Encoding::F16,
            timeout: Duration::from_secs(60),
            tls: None,
            auto: None,
        };
        let mut link = DecoderLink::new(llm, cfg, SamplingParams::default());
        let mut d = SplitDecoder::new(llm, k).unwrap();
        let g = d.generate(prompt, &opts, &mut link, &mut |_| true).unwrap();
        assert!(g.fell_back.is_none(), "{:?}", g.fell_back);
        // One-row STEPs only: the prompt's STEP takes longer on both sides.
        let st = link.stats;
        let steps = st.decode.steps.max(1) as f64;
        runs.server_ms
            .push(st.decode.server.as_secs_f64() * 1e3 / steps);
        runs.rtt_ms
            .push(st.decode.round_trips.as_secs_f64() * 1e3 / steps);
        g.generation
    };
    let f = g.prefill.as_secs_f64() * 1e3;
    runs.first.push(f);
    runs.rate
        .push((g.tokens.len() - 1) as f64 / g.decode.as_secs_f64());
    runs.turn.push(f + g.decode.as_secs_f64() * 1e3);
}

/// Whether a measurement is within 20% of a prediction.
fn near(predicted: f64, measured: f64) -> bool {
    (measured / predicted - 1.0).abs() <= 0.2
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
    let rounds: usize = std::env::var("ROUNDS").map_or(3, |r| r.parse().expect("ROUNDS"));
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    );
    println!(
        "| link | K | first token ms: profiles / calibrated / measured | tokens/s: profiles / calibrated / measured | turn ms: profiles / calibrated / measured | server ms per step: calibrated / measured | round trip ms per step (link + server): calibrated / measured |"
    );
    println!("|---|---|---|---|---|---|---|");
    // Predictions within 20%: from the profiles, calibrated, calibrated at the cuts that did
    // not calibrate; and how many there were of each.
    let (mut within, mut within_cal, mut within_other, mut total, mut others) = (0, 0, 0, 0, 0);
    let links: Vec<(f64, f64)> = match std::env::var("LINKS") {
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
    let mut plans = Vec::new();
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
            // Each measured turn connects and opens its session.
            new_session: true,
        };
        let shape = Shape {
            bps: mbit * 1e6,
            delay: Duration::from_secs_f64(rtt_ms / 2e3),
        };
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (task, addr) = if mbit == 0.0 {
            drop(listener);
            (rt.spawn(async {}), server.to_string())
        } else {
            (
                rt.spawn(edgecut_server::shape(listener, server, shape, shape)),
                addr,
            )
        };
        let mut ks: Vec<usize> = match std::env::var("KS") {
            Ok(v) => v.split(',').map(|k| k.parse().unwrap()).collect(),
            Err(_) => vec![8, 15, 22, 29],
        };
        ks.retain(|&k| k != 1 && k != n);
        ks.splice(0..0, [n, 1]);
        let mut runs: Vec<Runs> = ks.iter().map(|_| Runs::default()).collect();
        for _ in 0..rounds {
            for (i, &k) in ks.iter().enumerate() {
                turn(&llm, &prompt, k, n, &addr, &mut runs[i]);
            }
        }
        // The device from its turns all here, the server and the link from K = 1's.
        let cal = planner.calibrate_device(
            &sc,
            median(&runs[0].first),
            1e3 / median(&runs[0].rate),
            &DecodeCalibration::NONE,
        );
        let cal = planner.calibrate(
            1,
            &sc,
            median(&runs[1].server_ms),
            median(&runs[1].rtt_ms),
            &cal,
        );
        let plan = planner.plan_with(&sc, None, &cal).unwrap();
        if !ks.contains(&plan.best.k) {
            ks.push(plan.best.k);
            let mut r = Runs::default();
            for _ in 0..rounds {
                turn(&llm, &prompt, plan.best.k, n, &addr, &mut r);
            }
            runs.push(r);
        }
        task.abort();
        let mut order: Vec<usize> = (0..ks.len()).collect();
        order.sort_by_key(|&i| ks[i]);
        let mut measured_turns = Vec::new();
        for i in order {
            let (k, r) = (ks[i], &runs[i]);
            let (b, c): (DecodeBreakdown, DecodeBreakdown) = (
                planner.evaluate(k, &sc),
                planner.evaluate_with(k, &sc, &cal),
            );
            let (f, rate, t) = (median(&r.first), median(&r.rate), median(&r.turn));
            let calibrating = k == 1 || k == n;
            for (p, q, m) in [
                (b.first_token_ms, c.first_token_ms, f),
                (b.tokens_per_s, c.tokens_per_s, rate),
            ] {
                total += 1;
                within += near(p, m) as usize;
                within_cal += near(q, m) as usize;
                if !calibrating {
                    others += 1;
                    within_other += near(q, m) as usize;
                }
            }
            let per_step = if r.server_ms.is_empty() {
                " | ".to_string()
            } else {
                format!(
                    "{:.2} / {:.2} | {:.2} / {:.2}",
                    c.server_step_ms,
                    median(&r.server_ms),
                    c.server_step_ms + c.link_step_ms,
                    median(&r.rtt_ms)
                )
            };
            let mut tags = Vec::new();
            if k == plan.best.k {
                tags.push("plan");
            }
            if k == n {
                tags.push("calibrates the device");
            }
            if k == 1 {
                tags.push("calibrates the server and link");
            }
            let tags = if tags.is_empty() {
                String::new()
            } else {
                format!(" ({})", tags.join("; "))
            };
            println!(
                "| {mbit} Mbit/s, {rtt_ms} ms | {k}{tags} | {:.0} / {:.0} / {f:.0} | {:.1} / {:.1} / {rate:.1} | {:.0} / {:.0} / {t:.0} | {per_step} |",
                b.first_token_ms,
                c.first_token_ms,
                b.tokens_per_s,
                c.tokens_per_s,
                b.turn_ms,
                c.turn_ms
            );
            measured_turns.push((k, t));
        }
        let best = measured_turns
            .iter()
            .cloned()
            .fold((0, f64::INFINITY), |b, r| if r.1 < b.1 { r } else { b });
        let planned = measured_turns
            .iter()
            .find(|r| r.0 == plan.best.k)
            .unwrap()
            .1;
        let off = (planned / best.1 - 1.0) * 100.0;
        plans.push(off <= 5.0);
        println!(
            "| {mbit} Mbit/s, {rtt_ms} ms | planner's K = {}: measured turn {planned:.0} ms; best measured K = {} ({:.0} ms): {off:+.1}% | calibration: device step x{:.2}, prefill x{:.2}; server x{:.2}; link +{:.2} ms a message | | | |",
            plan.best.k,
            best.0,
            best.1,
            cal.device_scale,
            cal.device_prefill_scale,
            cal.server_scale,
            cal.link_extra_ms
        );
    }
    println!(
        "\npredictions within 20% of the measurement: from the profiles {within} of {total}; calibrated {within_cal} of {total} (at the cuts that did not calibrate: {within_other} of {others}); the planner's K within 5% of the best measured on {} of {} links",
        plans.iter().filter(|&&p| p).count(),
        plans.len()
    );
}
