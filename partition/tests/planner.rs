//! The planner against brute force on random chains and DAGs, analytic cases, thresholds and
//! hysteresis. The brute force re-derives feasibility and costs from the definitions (every
//! subset of stages, closure under predecessors checked directly), independently of the
//! planner's code.

use edgecut_partition::{
    Constraints, Encoding, Graph, Link, Objective, Planner, PowerModel, Profile, Replanner, Sample,
    Scenario, Stage, Tensor,
};
use proptest::prelude::*;

fn sample(ms: f64) -> Sample {
    Sample {
        median_ms: ms,
        p10_ms: ms,
        p90_ms: ms,
    }
}

fn profile(graph: &Graph, ms: &[(f64, f64)], machine: &str) -> Profile {
    Profile {
        machine: machine.into(),
        model: "m".into(),
        model_id: "id".into(),
        graph: graph.clone(),
        seqs: vec![16, 128],
        times: ms
            .iter()
            .map(|&(a, b)| vec![sample(a), sample(b)])
            .collect(),
    }
}

#[derive(Debug)]
struct Case {
    graph: Graph,
    dev: Vec<(f64, f64)>,
    srv: Vec<(f64, f64)>,
    seq: usize,
    batch: usize,
    enc: Encoding,
    link: Link,
    budget: Option<u64>,
    raw: bool,
    server: bool,
}

/// Brute force: the best objective value over every subset that is a valid, feasible cut.
fn brute(c: &Case, obj: Objective, power: PowerModel) -> Option<f64> {
    let g = &c.graph;
    let n = g.stages.len();
    let interp = |t: (f64, f64)| t.0 + (t.1 - t.0) * (c.seq as f64 - 16.0) / 112.0;
    let mut best: Option<f64> = None;
    for mask in 0u32..(1 << n) {
        let on = |i: usize| mask & (1 << i) != 0;
        let closed = (0..n).all(|i| !on(i) || g.stages[i].inputs.iter().all(|&p| on(p)));
        let all = (0..n).all(on);
        let raw_needed = (0..n).any(|i| !on(i) && g.stages[i].inputs.is_empty());
        let weights: u64 = (0..n)
            .filter(|&i| on(i))
            .map(|i| g.stages[i].weight_bytes)
            .sum();
        if !closed
            || (!all && !c.server)
            || (raw_needed && !c.raw)
            || c.budget.is_some_and(|b| weights > b)
        {
            continue;
        }
        let b = c.batch as f64;
        let dev: f64 = (0..n)
            .filter(|&i| on(i))
            .map(|i| interp(c.dev[i]).max(0.0) * b)
            .sum();
        let srv: f64 = (0..n)
            .filter(|&i| !on(i))
            .map(|i| interp(c.srv[i]).max(0.0) * b)
            .sum();
        let wire = |t: &Tensor, enc: Encoding| t.bytes(enc, c.seq as u64, c.batch as u64) as f64;
        let mut up = 0.0;
        for i in (0..n).filter(|&i| on(i)) {
            if (0..n).any(|j| !on(j) && g.stages[j].inputs.contains(&i)) {
                up += wire(&g.stages[i].output, c.enc);
            }
        }
        if raw_needed {
            up += (g.input_bytes_per_token * (c.seq * c.batch) as u64) as f64;
        }
        let down = if on(g.result) {
            0.0
        } else {
            wire(&g.stages[g.result].output, Encoding::F32)
        };
        let fixed = if all {
            0.0
        } else {
            (c.link.rtt_s + 2.0 * c.link.per_message_s) * 1e3
        };
        let up_ms = up * 8.0 / c.link.up_bps * 1e3;
        let down_ms = down * 8.0 / c.link.down_bps * 1e3;
        let latency = dev + up_ms + fixed + srv + down_ms;
        let energy = power.compute_w * dev / 1e3
            + power.radio_j_per_byte * (up + down)
            + power.idle_w * (fixed + srv + down_ms) / 1e3;
        let v = match obj {
            Objective::Latency => latency,
            Objective::Energy => energy,
            Objective::Server => srv,
        };
        best = Some(best.map_or(v, |x: f64| x.min(v)));
    }
    best
}

fn arb_case() -> impl Strategy<Value = Case> {
    (1usize..=7, any::<u64>())
        .prop_flat_map(|(n, seed)| {
            (
                Just(n),
                Just(seed),
                proptest::collection::vec((1u64..50_000_000, 0u64..2048, 0u64..512, 0usize..4), n),
                proptest::collection::vec(
                    (0.0f64..20.0, 0.0f64..80.0, 0.0f64..5.0, 0.0f64..20.0),
                    n,
                ),
                (1usize..600, 1usize..4, 0usize..3),
                (1e4f64..1e9, 0.0f64..0.2),
                (
                    proptest::option::of(0u64..200_000_000),
                    any::<bool>(),
                    0u8..4,
                ),
            )
        })
        .prop_map(
            |(n, seed, st, times, (seq, batch, enc), (bps, rtt), (budget, raw, srv))| {
                let stages = st
                    .iter()
                    .enumerate()
                    .map(|(i, &(w, per_token, fixed, pick))| {
                        // Each stage reads the previous one, or (when `pick` says so and it can) two
                        // earlier stages: chains and DAGs both appear.
                        let inputs = match (i, pick) {
                            (0, _) => vec![],
                            (i, 3) if i >= 2 => vec![(seed as usize + i) % (i - 1), i - 1],
                            (i, 2) => vec![(seed as usize) % i],
                            (i, _) => vec![i - 1],
                        };
                        Stage {
                            name: format!("s{i}"),
                            weight_bytes: w,
                            kv_bytes_per_token: 0,
                            kv_positions: None,
                            inputs,
                            output: Tensor {
                                per_token,
                                fixed,
                                side_bytes_per_token: (i % 2) as u64,
                            },
                        }
                    })
                    .collect();
                Case {
                    graph: Graph {
                        stages,
                        input_bytes_per_token: 5,
                        result: n - 1,
                    },
                    dev: times.iter().map(|t| (t.0, t.1)).collect(),
                    srv: times.iter().map(|t| (t.2, t.3)).collect(),
                    seq,
                    batch,
                    enc: [Encoding::F32, Encoding::F16, Encoding::Int8][enc],
                    link: Link {
                        up_bps: bps,
                        down_bps: bps * 4.0,
                        rtt_s: rtt,
                        per_message_s: 1e-4,
                    },
                    budget,
                    raw,
                    server: srv != 0,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn the_planner_equals_brute_force(c in arb_case()) {
        let dev = profile(&c.graph, &c.dev, "device");
        let srv = profile(&c.graph, &c.srv, "server");
        let p = Planner::new(&dev, Some(&srv)).unwrap();
        let cons = Constraints { memory_budget: c.budget, allow_raw_upload: c.raw, server_available: c.server };
        for power in [PowerModel::PHONE_WIFI, PowerModel::PHONE_LTE] {
            let sc = Scenario { seq: c.seq, batch: c.batch, encoding: c.enc, link: c.link, power };
            for obj in [Objective::Latency, Objective::Energy, Objective::Server] {
                let want = brute(&c, obj, power);
                match (p.best(&sc, obj, &cons), want) {
                    (Ok(b), Some(w)) => {
                        let got = b.value(obj);
                        prop_assert!((got - w).abs() <= 1e-9 * w.abs().max(1e-9), "{obj:?}: {got} vs {w}");
                        prop_assert!(c.graph.is_cut(&b.cut.on_device));
                    }
                    (Err(_), None) => {}
                    (got, want) => prop_assert!(false, "{obj:?}: planner {got:?}, brute force {want:?}"),
                }
            }
        }
    }

    #[test]
    fn the_best_cut_changes_only_at_the_thresholds(c in arb_case()) {
        let dev = profile(&c.graph, &c.dev, "device");
        let srv = profile(&c.graph, &c.srv, "server");
        let p = Planner::new(&dev, Some(&srv)).unwrap();
        let cons = Constraints { memory_budget: c.budget, allow_raw_upload: c.raw, server_available: c.server };
        let sc = Scenario { seq: c.seq, batch: c.batch, encoding: c.enc, link: c.link, power: PowerModel::PHONE_WIFI };
        let ts = p.thresholds(&sc, Objective::Latency, &cons);
        let at = |bps: f64| p.best(&Scenario { link: c.link.with_up_bps(bps), ..sc }, Objective::Latency, &cons).map(|b| b.latency_ms);
        for (i, t) in ts.iter().enumerate() {
            // Just below a threshold the `below` cut is optimal, just above the `above` one.
            // "Just" stays on this side of the neighbouring thresholds (their geometric
            // midpoints), which a random case may put within 0.1% of this one.
            let lo = if i > 0 { (ts[i - 1].up_bps * t.up_bps).sqrt() } else { 0.0 };
            let hi = ts.get(i + 1).map_or(f64::INFINITY, |n| (t.up_bps * n.up_bps).sqrt());
            for (bps, cut) in [((t.up_bps * 0.999).max(lo), &t.below), ((t.up_bps * 1.001).min(hi), &t.above)] {
                let scn = Scenario { link: c.link.with_up_bps(bps), ..sc };
                let v = p.evaluate(&cut.on_device, &scn).latency_ms;
                let best = at(bps).unwrap();
                prop_assert!((v - best).abs() <= 1e-9 * best.max(1e-9), "at {bps}: {v} vs {best}");
            }
        }
        prop_assert!(ts.windows(2).all(|w| w[0].up_bps <= w[1].up_bps));
    }
}

/// A MiniLM-like chain: embeddings (12.5 MB), 6 blocks (1.9 MB each), head; 384 values per
/// token between stages, a 384-value result.
fn minilm_like(device_ms: f64, server_ms: f64) -> (Profile, Profile) {
    let t = Tensor {
        per_token: 384,
        fixed: 0,
        side_bytes_per_token: 1,
    };
    let mut stages = vec![("embeddings".to_string(), 12_500_000, t.clone())];
    stages.extend((0..6).map(|i| (format!("block {i}"), 1_900_000, t.clone())));
    stages.push((
        "head".into(),
        0,
        Tensor {
            per_token: 0,
            fixed: 384,
            side_bytes_per_token: 0,
        },
    ));
    let g = Graph::chain(stages, 5);
    let times = |ms: f64| -> Vec<(f64, f64)> {
        (0..8)
            .map(|i| {
                if i == 0 || i == 7 {
                    (ms * 0.05, ms * 0.2)
                } else {
                    (ms, ms * 8.0)
                }
            })
            .collect()
    };
    (
        profile(&g, &times(device_ms), "device"),
        profile(&g, &times(server_ms), "server"),
    )
}

fn sc(link: &str) -> Scenario {
    Scenario {
        seq: 128,
        batch: 1,
        encoding: Encoding::Int8,
        link: Link::parse(link).unwrap(),
        power: PowerModel::PHONE_WIFI,
    }
}

#[test]
fn analytic_cases_move_the_cut_as_expected() {
    let (dev, srv) = minilm_like(2.0, 0.05);
    let p = Planner::new(&dev, Some(&srv)).unwrap();
    let free = Constraints {
        allow_raw_upload: true,
        ..Constraints::default()
    };
    // A dial-up link: everything stays on the device.
    let b = p
        .best(&sc("10kbit,100ms"), Objective::Latency, &free)
        .unwrap();
    assert_eq!(b.cut.k(), Some(8));
    // A fast link to a fast server: the raw input goes up (K=0), or with the privacy rule only
    // the embeddings stay (K=1).
    let b = p.best(&sc("1gbit,1ms"), Objective::Latency, &free).unwrap();
    assert_eq!(b.cut.k(), Some(0));
    let b = p
        .best(
            &sc("1gbit,1ms"),
            Objective::Latency,
            &Constraints::default(),
        )
        .unwrap();
    assert_eq!(b.cut.k(), Some(1));
    // A memory budget of 16 MB holds the embeddings and one block: at a slow link, where
    // everything would stay on the device, the cut moves to the embeddings (every boundary
    // sends the same 384 values a token, so running block 0 on the slow device gains nothing).
    let tight = Constraints {
        memory_budget: Some(16_000_000),
        ..Constraints::default()
    };
    assert_eq!(
        p.best(
            &sc("100kbit,50ms"),
            Objective::Latency,
            &Constraints::default()
        )
        .unwrap()
        .cut
        .k(),
        Some(8)
    );
    let b = p
        .best(&sc("100kbit,50ms"), Objective::Latency, &tight)
        .unwrap();
    assert_eq!(b.cut.k(), Some(1));
    assert!(b.device_weight_bytes <= 16_000_000);
    // No server: everything on the device, or nothing fits.
    let none = Constraints {
        server_available: false,
        ..Constraints::default()
    };
    assert_eq!(
        p.best(&sc("1gbit,1ms"), Objective::Latency, &none)
            .unwrap()
            .cut
            .k(),
        Some(8)
    );
    let impossible = Constraints {
        memory_budget: Some(1),
        ..none
    };
    assert!(p
        .best(&sc("1gbit,1ms"), Objective::Latency, &impossible)
        .is_err());
    // Server time: the cut that leaves the server least to do within the rules is all-device.
    assert_eq!(
        p.best(&sc("1gbit,1ms"), Objective::Server, &free)
            .unwrap()
            .cut
            .k(),
        Some(8)
    );
    // The plan carries the extremes and the thresholds, ascending.
    let plan = p
        .plan(
            &sc("10mbit,40ms"),
            Objective::Latency,
            &Constraints::default(),
        )
        .unwrap();
    assert!(plan.all_device.is_some() && plan.all_server.is_some());
    assert!(!plan.thresholds.is_empty());
}

#[test]
fn a_link_oscillating_around_a_threshold_does_not_flap() {
    let (dev, srv) = minilm_like(2.0, 0.05);
    let p = Planner::new(&dev, Some(&srv)).unwrap();
    let cons = Constraints::default();
    let base = sc("10mbit,20ms");
    let ts = p.thresholds(&base, Objective::Latency, &cons);
    let t = ts
        .first()
        .expect("a threshold between 10 kbit/s and 1 Gbit/s")
        .up_bps;
    let mut r = Replanner::new(
        Planner::new(&dev, Some(&srv)).unwrap(),
        base,
        Objective::Latency,
        cons,
        0.15,
    );
    let mut cuts = Vec::new();
    for i in 0..100 {
        let bps = t * if i % 2 == 0 { 0.9 } else { 1.1 };
        cuts.push(r.update(base.link.with_up_bps(bps)).unwrap().cut.on_device);
    }
    assert!(r.switches() <= 1, "{} switches", r.switches());
    // Without hysteresis the best cut does alternate at every step.
    let flips = (0..100)
        .map(|i| {
            let bps = t * if i % 2 == 0 { 0.9 } else { 1.1 };
            p.best(
                &Scenario {
                    link: base.link.with_up_bps(bps),
                    ..base
                },
                Objective::Latency,
                &cons,
            )
            .unwrap()
            .cut
        })
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] != w[1])
        .count();
    assert_eq!(flips, 99);
    // A real change of the link (10x) does switch.
    let before = cuts.last().unwrap().clone();
    let after = r
        .update(base.link.with_up_bps(t * 10.0))
        .unwrap()
        .cut
        .on_device;
    let after2 = r
        .update(base.link.with_up_bps(t / 10.0))
        .unwrap()
        .cut
        .on_device;
    assert!(after != before || after2 != before);
}
