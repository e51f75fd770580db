//! The split-decoding planner on synthetic profiles: its arithmetic, the cut it picks as the
//! link and the device change, the memory budget, and the profiles it refuses.

use edgecut_partition::{
    DecodeCalibration, DecodePlanner, DecodeScenario, Encoding, Graph, Link, PlanError, Profile,
    Sample, Tensor,
};

const BLOCKS: usize = 6;
const HIDDEN: u64 = 64;
const KV: u64 = 256;

/// A decoder of `BLOCKS` blocks whose stages take `ms_per_token * seq + fixed` ms.
fn profile(model: &str, embed: f64, block: f64, head: f64) -> Profile {
    let t = |per_token| Tensor {
        per_token,
        fixed: 0,
        side_bytes_per_token: 0,
    };
    let mut stages = vec![("embeddings".to_string(), 1000, t(HIDDEN))];
    for i in 0..BLOCKS {
        stages.push((format!("block {i}"), 10_000, t(HIDDEN)));
    }
    stages.push(("head".to_string(), 5000, t(0)));
    let mut graph = Graph::chain(stages, 4);
    for s in &mut graph.stages[1..=BLOCKS] {
        s.kv_bytes_per_token = KV;
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
        machine: model.into(),
        model: "m".into(),
        model_id: model.into(),
        graph,
        seqs,
        times,
    }
}

fn scenario(link: &str, enc: Encoding) -> DecodeScenario {
    DecodeScenario {
        prompt: 16,
        reply: 32,
        context: 128,
        link: Link::parse(link).unwrap(),
        encoding: enc,
        new_session: false,
    }
}

#[test]
fn the_arithmetic_of_one_cut() {
    let (d, s) = (profile("x", 0.1, 1.0, 0.5), profile("x", 0.01, 0.1, 0.05));
    let p = DecodePlanner::new(&d, &s).unwrap();
    let sc = scenario("8mbit,10ms", Encoding::F32);
    let b = p.evaluate(2, &sc);
    // Device: embeddings and 2 blocks at one token; server: 4 blocks and the head.
    assert!((b.device_step_ms - (0.2 + 2.0 * 1.1)).abs() < 1e-9, "{b:?}");
    assert!(
        (b.server_step_ms - (4.0 * 0.2 + 0.15)).abs() < 1e-9,
        "{b:?}"
    );
    // 64 f32 values + 36 bytes up at 8 Mbit/s, 38 down, the round trip and the per-message
    // cost.
    assert_eq!(b.up_bytes_per_token, 64 * 4 + 36);
    let link =
        (b.up_bytes_per_token + 38) as f64 * 8.0 / 8e6 * 1e3 + 10.0 + sc.link.per_message_s * 1e3;
    assert!((b.link_step_ms - link).abs() < 1e-9, "{b:?}");
    assert!((b.turn_ms - (b.first_token_ms + 31.0 * b.step_ms)).abs() < 1e-9);
    // A new session: the connection, HELLO and OPEN before the prompt; nothing else changes.
    let open = p.evaluate(
        2,
        &DecodeScenario {
            new_session: true,
            ..sc
        },
    );
    let setup = 3.0 * 10.0 + 2.0 * sc.link.per_message_s * 1e3;
    assert!(
        (open.first_token_ms - b.first_token_ms - setup).abs() < 1e-9,
        "{open:?}"
    );
    assert_eq!(open.step_ms, b.step_ms);
    // All on the device, there is no session to open.
    let all_open = p.evaluate(
        BLOCKS,
        &DecodeScenario {
            new_session: true,
            ..sc
        },
    );
    assert_eq!(
        all_open.first_token_ms,
        p.evaluate(BLOCKS, &sc).first_token_ms
    );
    assert_eq!(b.device_weight_bytes, 1000 + 2 * 10_000);
    assert_eq!(
        (b.device_kv_bytes, b.server_kv_bytes),
        (2 * KV * 128, 4 * KV * 128)
    );
    // int8 sends a quarter plus scales.
    let b8 = p.evaluate(2, &scenario("8mbit,10ms", Encoding::Int8));
    assert_eq!(b8.up_bytes_per_token, 64 + 8 + 36);
    // All on the device: no link, the head here.
    let all = p.evaluate(BLOCKS, &sc);
    assert_eq!((all.link_step_ms, all.up_bytes_per_token), (0.0, 0));
    assert!(
        (all.step_ms - (0.2 + 6.0 * 1.1 + 0.6)).abs() < 1e-9,
        "{all:?}"
    );
}

#[test]
fn the_cut_follows_the_link_and_the_budget() {
    // A slow device and a fast server: on a fast link the server takes all it can (K = 1); over
    // a link whose round trip costs more than the device's whole step, the device keeps all.
    let (d, s) = (profile("x", 0.1, 1.0, 0.5), profile("x", 0.01, 0.1, 0.05));
    let p = DecodePlanner::new(&d, &s).unwrap();
    let fast = p
        .plan(&scenario("100mbit,2ms", Encoding::F16), None)
        .unwrap();
    assert_eq!(fast.best.k, 1);
    let slow = p
        .plan(&scenario("1mbit,200ms", Encoding::F16), None)
        .unwrap();
    assert_eq!(slow.best.k, BLOCKS);
    assert_eq!(fast.all.len(), BLOCKS);
    // A budget that holds the embeddings and one block with its cache, but not two.
    let one = 1000 + 10_000 + KV * 128;
    let tight = p
        .plan(&scenario("1mbit,200ms", Encoding::F16), Some(one))
        .unwrap();
    assert_eq!(tight.best.k, 1);
    assert_eq!(tight.all.len(), 1);
    assert!(matches!(
        p.plan(&scenario("1mbit,200ms", Encoding::F16), Some(one - 1)),
        Err(PlanError::Infeasible(_))
    ));
}

#[test]
fn profiles_of_other_models_or_of_encoders_are_refused() {
    let d = profile("x", 0.1, 1.0, 0.5);
    assert!(DecodePlanner::new(&d, &profile("y", 0.1, 1.0, 0.5)).is_err());
    let mut enc = d.clone();
    for s in &mut enc.graph.stages {
        s.kv_bytes_per_token = 0;
    }
    let e = DecodePlanner::new(&enc, &enc).err().unwrap().to_string();
    assert!(e.contains("decoder"), "{e}");
}

#[test]
fn a_calibration_from_one_cut_moves_every_split_cut_and_not_the_device() {
    let (d, s) = (profile("x", 0.1, 1.0, 0.5), profile("x", 0.01, 0.1, 0.05));
    let p = DecodePlanner::new(&d, &s).unwrap();
    let sc = scenario("100mbit,2ms", Encoding::F16);
    let b = p.evaluate(1, &sc);
    // Measured: the server 1.5x its profile, and 3 ms more per message on the link.
    let server = b.server_step_ms * 1.5;
    let cal = p.calibrate(
        1,
        &sc,
        server,
        server + b.link_step_ms + 3.0,
        &DecodeCalibration::NONE,
    );
    assert!((cal.server_scale - 1.5).abs() < 1e-9 && (cal.link_extra_ms - 3.0).abs() < 1e-9);
    let c = p.evaluate_with(1, &sc, &cal);
    assert!((c.step_ms - (b.device_step_ms + server + b.link_step_ms + 3.0)).abs() < 1e-9);
    let (b4, c4) = (p.evaluate(4, &sc), p.evaluate_with(4, &sc, &cal));
    assert!((c4.server_step_ms - 1.5 * b4.server_step_ms).abs() < 1e-9);
    assert_eq!(c4.device_step_ms, b4.device_step_ms);
    // All on the device: nothing to calibrate.
    assert_eq!(p.evaluate_with(BLOCKS, &sc, &cal), p.evaluate(BLOCKS, &sc));
    // With the link that much dearer, the device alone wins where the profiles said split.
    assert_eq!(p.plan(&sc, None).unwrap().best.k, 1);
    // A round trip measured shorter than predicted: a negative extra, never below the round
    // trip and per-message cost.
    let quick = p.calibrate(
        1,
        &sc,
        server,
        server + b.link_step_ms - 1.0,
        &DecodeCalibration::NONE,
    );
    assert!((quick.link_extra_ms + 1.0).abs() < 1e-9, "{quick:?}");
    let none = p.calibrate(1, &sc, server, server, &DecodeCalibration::NONE);
    let floor = -(sc.link.rtt_s + sc.link.per_message_s) * 1e3;
    assert!((none.link_extra_ms - floor).abs() < 1e-9, "{none:?}");
    assert!(p.evaluate_with(1, &sc, &none).link_step_ms > 0.0);
    let slow = p.calibrate(
        1,
        &sc,
        server,
        server + b.link_step_ms + 60.0,
        &DecodeCalibration::NONE,
    );
    assert_eq!(p.plan_with(&sc, None, &slow).unwrap().best.k, BLOCKS);
}

#[test]
fn a_local_turn_calibrates_the_device_at_every_cut_and_keeps_the_server() {
    let (d, s) = (profile("x", 0.1, 1.0, 0.5), profile("x", 0.01, 0.1, 0.05));
    let p = DecodePlanner::new(&d, &s).unwrap();
    let sc = scenario("100mbit,2ms", Encoding::F16);
    let all = p.evaluate(BLOCKS, &sc);
    // Measured all here: steps 1.25x the profile, the prompt 0.8x.
    let dev = p.calibrate_device(
        &sc,
        all.first_token_ms * 0.8,
        all.step_ms * 1.25,
        &DecodeCalibration::NONE,
    );
    assert!((dev.device_scale - 1.25).abs() < 1e-9, "{dev:?}");
    assert!((dev.device_prefill_scale - 0.8).abs() < 1e-9, "{dev:?}");
    let c = p.evaluate_with(BLOCKS, &sc, &dev);
    assert!((c.step_ms - 1.25 * all.step_ms).abs() < 1e-9);
    assert!((c.first_token_ms - 0.8 * all.first_token_ms).abs() < 1e-9);
    // At a split cut the device's part scales, the server's and the link's do not.
    let (b3, c3) = (p.evaluate(3, &sc), p.evaluate_with(3, &sc, &dev));
    assert!((c3.device_step_ms - 1.25 * b3.device_step_ms).abs() < 1e-9);
    assert_eq!(
        (c3.server_step_ms, c3.link_step_ms),
        (b3.server_step_ms, b3.link_step_ms)
    );
    // The server's calibration on top keeps the device's, and the other way round.
    let b1 = p.evaluate(1, &sc);
    let both = p.calibrate(
        1,
        &sc,
        b1.server_step_ms * 2.0,
        b1.server_step_ms * 2.0 + b1.link_step_ms,
        &dev,
    );
    assert_eq!(
        (both.device_scale, both.server_scale),
        (dev.device_scale, 2.0)
    );
    let again = p.calibrate_device(&sc, all.first_token_ms, all.step_ms, &both);
    assert_eq!((again.device_scale, again.server_scale), (1.0, 2.0));
    // A measurement of nothing changes nothing.
    assert_eq!(p.calibrate_device(&sc, 0.0, f64::NAN, &both), both);
}
