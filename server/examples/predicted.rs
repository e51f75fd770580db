//! Predicted against measured: every cut of an encoder through the link shaper at 1, 10 and
//! 100 Mbit/s with a 20 ms round trip, against `edgecut serve` on this machine, next to the
//! planner's prediction from profiles.
//!
//! edgecut serve -m minilm.gguf --threads 1 --listen 127.0.0.1:7073 &
//! cargo run --release -p edgecut-server --example predicted -- minilm.gguf 127.0.0.1:7073 \
//!     docs/plan/minilm-device-1thread.json docs/plan/minilm-device-1thread.json

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgecut::{Session, SessionOptions};
use edgecut_partition::{
    Constraints, Encoding, Link, Objective, Planner, PowerModel, Profile, Scenario,
};
use edgecut_server::{AutoCut, ClientConfig, Shape, SplitClient};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 5 {
        eprintln!(
            "usage: predicted MODEL.gguf SERVER_ADDR DEVICE_PROFILE.json SERVER_PROFILE.json"
        );
        std::process::exit(2);
    }
    let (model, server) = (&a[1], a[2].parse().expect("server address"));
    let load = |p: &str| Profile::from_json(&std::fs::read_to_string(p).unwrap()).unwrap();
    let (dev, srv) = (load(&a[3]), load(&a[4]));
    let planner = Planner::new(&dev, Some(&srv)).unwrap();
    let session = Session::open(model, &SessionOptions::default().with_threads(1)).unwrap();
    let text = "hello ".repeat(126);
    let seq = session.tokenize(&text).unwrap().len();
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    );
    let n = session.stage_count();
    let cons = Constraints {
        allow_raw_upload: true,
        ..Constraints::default()
    };
    println!(
        "| link | K | profiles only ms | calibrated ms | measured ms | measured / calibrated |"
    );
    println!("|---|---|---|---|---|---|");
    for mbit in [1.0, 10.0, 100.0] {
        let link = Link::parse(&format!("{mbit}mbit,20ms")).unwrap();
        let sc = Scenario {
            seq,
            batch: 1,
            encoding: Encoding::Int8,
            link,
            power: PowerModel::PHONE_WIFI,
        };
        let shape = Shape {
            bps: mbit * 1e6,
            delay: Duration::from_millis(10),
        };
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = rt.spawn(edgecut_server::shape(listener, server, shape, shape));
        let client = |cut: usize, auto: Option<AutoCut>| {
            let cfg = ClientConfig {
                server: addr.clone(),
                token: Vec::new(),
                cut,
                encoding: edgecut_wire::Encoding::Int8,
                timeout: Duration::from_secs(60),
                tls: None,
                auto,
            };
            SplitClient::new(&session, cfg)
        };
        // `--cut auto`'s calibration: four requests at K=1 (the HELLO measures the round trip;
        // each request the bandwidth and the server's overhead) and two local runs (the
        // device's speed against its profile), then its predictions for
        // every cut and its choice, before any other cut is measured.
        let mut auto = client(0, Some(AutoCut::new(dev.clone(), srv.clone(), n).unwrap()));
        for _ in 0..4 {
            auto.embed_at(&[&text], 1).unwrap();
        }
        // And two local runs: the device's speed against its profile.
        for _ in 0..2 {
            auto.embed_at(&[&text], n).unwrap();
        }
        let calibrated = auto.predict_all(seq, 1).unwrap();
        let est = auto.link_estimate().unwrap();
        let picked = auto.embed(&[&text]).unwrap().cut;
        let mut rows = Vec::new();
        for (k, &predicted) in calibrated.iter().enumerate() {
            let cut: Vec<bool> = (0..n).map(|i| i < k).collect();
            let profiles_only = planner.evaluate(&cut, &sc).latency_ms;
            let mut times = Vec::new();
            if k == n {
                for _ in 0..6 {
                    let t = Instant::now();
                    session.embed(&[&text]).unwrap();
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                }
            } else {
                let mut c = client(k, None);
                for i in 0..6 {
                    let t = Instant::now();
                    let out = c.embed(&[&text]).unwrap();
                    assert!(out.fell_back.is_none(), "{:?}", out.fell_back);
                    if i > 0 {
                        // The first request also pays the connection and HELLO.
                        times.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                }
            }
            times.sort_by(f64::total_cmp);
            let measured = times[times.len() / 2];
            println!(
                "| {mbit} Mbit/s, 20 ms | {k} | {profiles_only:.1} | {predicted:.1} | {measured:.1} | {:.2} |",
                measured / predicted
            );
            rows.push((k, measured));
        }
        task.abort();
        let planned = planner
            .best(&sc, Objective::Latency, &cons)
            .unwrap()
            .cut
            .k()
            .unwrap();
        let best = rows
            .iter()
            .cloned()
            .fold((0, f64::INFINITY), |b, r| if r.1 < b.1 { r } else { b });
        let at = |k: usize| rows.iter().find(|r| r.0 == k).unwrap().1;
        let within = rows
            .iter()
            .filter(|r| (r.1 / calibrated[r.0] - 1.0).abs() <= 0.2)
            .count();
        println!(
            "|  {mbit} Mbit/s: measured link {:.2} Mbit/s, round trip {:.1} ms, server overhead {:.1} ms, device at {:.2}x its profile; auto picks K={picked} ({:.1} ms measured, {:.1}% off the best, K={} at {:.1} ms); the profiles-only plan K={planned}; {within} of {} calibrated predictions within 20% | | | | | |",
            est.bps.unwrap_or(0.0) / 1e6,
            est.rtt_s.unwrap_or(0.0) * 1e3,
            est.server_extra_ms.unwrap_or(0.0),
            est.device_scale.unwrap_or(1.0),
            at(picked),
            (at(picked) / best.1 - 1.0) * 100.0,
            best.0,
            best.1,
            rows.len()
        );
    }
}
