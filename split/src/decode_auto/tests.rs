//! The decoder's automatic cut on synthetic profiles and measurements: where it starts, that
//! it moves when the link turns out slow or the server fast, and that it stays when moving
//! (re-sending the conversation) would not pay.

use std::time::Duration;

use edgecut_partition::{Encoding, Graph, Profile, Sample, Tensor};

use super::{DecodeAuto, DecodeTurn};
use crate::{LinkStats, StepStats};

const BLOCKS: usize = 6;

/// A decoder of `BLOCKS` blocks whose stages take `per_token * seq + 0.1` ms.
fn profile(embed: f64, block: f64, head: f64) -> Profile {
    let t = |per_token| Tensor {
        per_token,
        fixed: 0,
        side_bytes_per_token: 0,
    };
    let mut stages = vec![("embeddings".to_string(), 1000, t(64))];
    for i in 0..BLOCKS {
        stages.push((format!("block {i}"), 10_000, t(64)));
    }
    stages.push(("head".to_string(), 5000, t(0)));
    let mut graph = Graph::chain(stages, 4);
    for s in &mut graph.stages[1..=BLOCKS] {
        s.kv_bytes_per_token = 256;
    }
    let seqs = vec![1, 16, 64];
    let times = (0..BLOCKS + 2)
        .map(|i| {
            let per = match i {
                0 => embed,
                i if i <= BLOCKS => block,
                _ => head,
            };
            seqs.iter()
                .map(|&s| {
                    let m = per * s as f64 + 0.1;
                    Sample {
                        median_ms: m,
                        p10_ms: m,
                        p90_ms: m,
                    }
                })
                .collect()
        })
        .collect();
    Profile {
        machine: "m".into(),
        model: "m".into(),
        model_id: "x".into(),
        graph,
        seqs,
        times,
    }
}

fn turn(conversation: usize, held: usize) -> DecodeTurn {
    DecodeTurn {
        conversation,
        held,
        reply: 32,
        context: 512,
        encoding: Encoding::F16,
    }
}

/// A turn's counters: `steps` one-token STEPs of `rtt_ms` (the server's `server_ms` of it),
/// one prompt STEP of `prompt_bytes` taking `prompt_rtt_ms`, and the HELLO's round trip.
fn stats(
    steps: usize,
    rtt_ms: f64,
    server_ms: f64,
    prompt_bytes: usize,
    prompt_rtt_ms: f64,
    hello_ms: f64,
) -> LinkStats {
    let ms = |m: f64| Duration::from_secs_f64(m / 1e3);
    LinkStats {
        decode: StepStats {
            steps,
            positions: steps,
            bytes_up: steps * 1188,
            round_trips: ms(rtt_ms * steps as f64),
            server: ms(server_ms * steps as f64),
        },
        prompt: StepStats {
            steps: 1,
            positions: 16,
            bytes_up: prompt_bytes,
            round_trips: ms(prompt_rtt_ms),
            server: ms(server_ms),
        },
        hello_round_trip: Some(ms(hello_ms)),
        ..LinkStats::default()
    }
}

#[test]
fn a_slow_device_splits_and_moves_home_when_the_link_proves_slow() {
    // A device 100x slower than the server (a step of 66 ms): on the first guess (10 Mbit/s,
    // 20 ms) the server should take all it can.
    let mut a = DecodeAuto::new(profile(1.0, 10.0, 5.0), profile(0.01, 0.1, 0.05), BLOCKS).unwrap();
    let first = a.choose(None, &turn(16, 0));
    assert_eq!(first, 1);
    // Measured: a 400 ms round trip (a satellite link), the server as profiled (5 blocks and
    // the head at one token).
    let server = 5.0 * 0.2 + 0.15;
    let st = stats(31, 400.0 + server, server, 16 * 1188, 400.5 + server, 400.0);
    let step = 11.2 + 400.0 + server;
    a.observe(
        first,
        &turn(16, 0),
        &st,
        Duration::from_millis(900),
        Duration::from_secs_f64(step * 31.0 / 1e3),
        31,
    );
    assert!((a.link().rtt_s - 0.4).abs() < 1e-9, "{:?}", a.link());
    // The device's part of a step (11.2 ms) is its profile's at K = 1.
    assert!(
        (a.calibration().device_scale - 1.0).abs() < 1e-6,
        "{:?}",
        a.calibration()
    );
    // Now all here pays even though the conversation must run again there.
    assert_eq!(a.choose(Some(first), &turn(60, 48)), BLOCKS);
}

#[test]
fn the_bandwidth_comes_from_the_prompt_against_a_token() {
    let mut a = DecodeAuto::new(profile(0.1, 1.0, 0.5), profile(0.01, 0.1, 0.05), BLOCKS).unwrap();
    // 1 Mbit/s: 16 x 1188 bytes more than one token's 1188 take 15 x 1188 x 8 / 1e6 s longer.
    let extra_ms = 15.0 * 1188.0 * 8.0 / 1e6 * 1e3;
    let st = stats(31, 12.0, 2.0, 16 * 1188, 12.0 + extra_ms, 10.0);
    a.observe(
        1,
        &turn(16, 0),
        &st,
        Duration::from_millis(50),
        Duration::from_millis(31 * 14),
        31,
    );
    let l = a.link();
    assert!((l.up_bps / 1e6 - 1.0).abs() < 1e-6, "{l:?}");
    assert!((l.rtt_s - 0.010).abs() < 1e-9);
    // The server measured 2 ms a step: its scale against the profile's step at K = 1.
    let profiled = 5.0 * 0.2 + 0.15;
    assert!(
        (a.calibration().server_scale - 2.0 / profiled).abs() < 1e-9,
        "{:?}",
        a.calibration()
    );
    // The device: 14 ms a step less 12 ms of round trip, against 1.3 ms profiled at K = 1.
    assert!((a.calibration().device_scale - 2.0 / 1.3).abs() < 1e-9);
    // A turn all here: 20 steps of 15 ms against the profile's 7.4 ms, the server's and the
    // link's estimates kept.
    let before = a.calibration();
    a.observe(
        BLOCKS,
        &turn(16, 0),
        &LinkStats::default(),
        Duration::from_millis(40),
        Duration::from_millis(20 * 15),
        20,
    );
    let c = a.calibration();
    assert!((c.device_scale - 15.0 / 7.4).abs() < 1e-9, "{c:?}");
    assert_eq!(
        (c.server_scale, c.link_extra_ms),
        (before.server_scale, before.link_extra_ms)
    );
    assert!((a.link().up_bps / 1e6 - 1.0).abs() < 1e-6);
}

#[test]
fn moving_the_cut_must_pay_for_sending_the_conversation_again() {
    // A slow device, a fast server, and a fast link measured (1 ms, 100 Mbit/s).
    let mut a = DecodeAuto::new(profile(0.1, 1.0, 0.5), profile(0.01, 0.1, 0.05), BLOCKS).unwrap();
    let server = 5.0 * 0.2 + 0.15;
    let extra_ms = 15.0 * 1188.0 * 8.0 / 100e6 * 1e3;
    let st = stats(
        31,
        1.0 + server,
        server,
        16 * 1188,
        1.0 + server + extra_ms,
        1.0,
    );
    let step = 1.3 + 1.0 + server;
    a.observe(
        1,
        &turn(16, 0),
        &st,
        Duration::from_millis(30),
        Duration::from_secs_f64(31.0 * step / 1e3),
        31,
    );
    assert!((a.link().up_bps / 1e8 - 1.0).abs() < 1e-6, "{:?}", a.link());
    // A conversation all here so far (the server was away): with 2000 tokens held and 8 new,
    // moving would run all 2000 again at the new cut; it stays.
    let long = DecodeTurn {
        context: 4096,
        ..turn(2000, 1992)
    };
    assert_eq!(a.choose(Some(BLOCKS), &long), BLOCKS);
    // A short one moves to the cut a first turn would take.
    let k = a.choose(Some(BLOCKS), &turn(24, 16));
    assert!(k < BLOCKS, "{k}");
    assert_eq!(a.choose(None, &turn(24, 0)), k);
}

#[test]
fn profiles_of_another_model_are_refused() {
    let e =
        DecodeAuto::new(profile(0.1, 1.0, 0.5), profile(0.01, 0.1, 0.05), BLOCKS + 1).unwrap_err();
    assert!(e.to_string().contains("profile this model"), "{e}");
}

#[test]
fn the_memory_budget_bounds_the_cut() {
    // A server ten times slower than the device: the more blocks here, the better.
    let mut a = DecodeAuto::new(profile(0.1, 1.0, 0.5), profile(1.0, 10.0, 5.0), BLOCKS).unwrap();
    let t = turn(16, 0);
    assert_eq!(a.choose(None, &t), BLOCKS);
    // Weights 1000 + 10,000 a block (the head's 5000 when all here), KV 256 x 512 a block.
    let per_block = 10_000 + 256 * 512;
    a.memory_budget = Some(1000 + 3 * per_block);
    let k = a.choose(None, &t);
    assert_eq!(k, 3, "the largest cut that fits");
    // Already over a lowered budget: it moves, margin or not.
    a.memory_budget = Some(1000 + per_block);
    assert_eq!(a.choose(Some(BLOCKS), &turn(200, 190)), 1);
    // Nothing fits: the least memory.
    a.memory_budget = Some(10);
    assert_eq!(a.choose(None, &t), 1);
}
