//! `edgecut profile` and `edgecut plan`, run as a user runs them.

mod common;

use common::{edgecut, ok};

use edgecut::WeightType;
use edgecut_tests::{minilm, repo_root, scratch};

#[test]
fn profile_measures_every_stage_and_plan_reads_it() {
    let m = minilm(WeightType::Q8_0);
    let out = scratch().join(format!("profile-{}.json", std::process::id()));
    let o = edgecut(
        &[
            "profile",
            "-m",
            m.to_str().unwrap(),
            "--threads",
            "1",
            "--seq",
            "32,8",
            "--iters",
            "3",
            "-o",
            out.to_str().unwrap(),
        ],
        None,
    );
    ok(&o);
    let p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let stages = p["graph"]["stages"].as_array().unwrap();
    // embeddings, 6 blocks, head; the weights of all stages add up to the file's tensors.
    assert_eq!(stages.len(), 8);
    assert_eq!(stages[0]["name"], "embeddings");
    assert_eq!(stages[7]["name"], "head");
    let weights: u64 = stages
        .iter()
        .map(|s| s["weight_bytes"].as_u64().unwrap())
        .sum();
    let f = edgecut::GgufFile::open(&m).unwrap();
    assert_eq!(weights, f.tensors().iter().map(|t| t.size).sum::<u64>());
    assert_eq!(p["seqs"], serde_json::json!([8, 32]), "sorted");
    for row in p["times"].as_array().unwrap() {
        let ms: Vec<f64> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["median_ms"].as_f64().unwrap())
            .collect();
        assert!(ms.iter().all(|&t| t > 0.0), "{ms:?}");
    }
    // The profile as both device and server plans; JSON output parses.
    let o = edgecut(
        &[
            "plan",
            "--device",
            out.to_str().unwrap(),
            "--server",
            out.to_str().unwrap(),
            "--link",
            "10mbit,40ms",
            "--json",
        ],
        None,
    );
    let plans: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(
        plans[0]["plan"]["best"]["cut"]["on_device"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    std::fs::remove_file(&out).ok();
}

/// Issue 10: stages are the model's, so `profile` runs a decoder as it runs an encoder, with
/// no model-specific code in the CLI.
#[test]
fn profile_runs_a_decoder_stage_by_stage() {
    let m = edgecut_tests::smollm_gguf();
    let out = scratch().join(format!("profile-smollm-{}.json", std::process::id()));
    let o = edgecut(
        &[
            "profile",
            "-m",
            m.to_str().unwrap(),
            "--seq",
            "8",
            "--iters",
            "1",
            "-o",
            out.to_str().unwrap(),
        ],
        None,
    );
    ok(&o);
    let p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let stages = p["graph"]["stages"].as_array().unwrap();
    // SmolLM2-135M: embeddings, 30 blocks, head (the vocabulary's logits of the last token).
    assert_eq!(stages.len(), 32);
    assert_eq!(stages[1]["name"], "block 0");
    assert_eq!(stages[31]["output"]["fixed"], 49152);
    assert_eq!(stages[5]["output"]["per_token"], 576);
    let weights: u64 = stages
        .iter()
        .map(|s| s["weight_bytes"].as_u64().unwrap())
        .sum();
    let f = edgecut::GgufFile::open(&m).unwrap();
    assert_eq!(weights, f.tensors().iter().map(|t| t.size).sum::<u64>());
    // Each block holds its keys and values: 2 x 3 KV heads x 64 x 2 bytes (f16) a position.
    assert_eq!(stages[1]["kv_bytes_per_token"], 768);
    assert_eq!(stages[0]["kv_bytes_per_token"], 0);
    let times = p["times"].as_array().unwrap();
    assert_eq!(times.len(), 32);
    assert!(times
        .iter()
        .all(|row| row[0]["median_ms"].as_f64().unwrap() > 0.0));
    std::fs::remove_file(&out).ok();
}

#[test]
fn plan_on_the_committed_profiles() {
    let dir = repo_root().join("docs/plan");
    let dev = dir.join("minilm-device-1thread.json");
    let srv = dir.join("minilm-server-2threads.json");
    let (dev, srv) = (dev.to_str().unwrap(), srv.to_str().unwrap());
    let svg = scratch().join(format!("plan-{}.svg", std::process::id()));
    let out = ok(&edgecut(
        &[
            "plan",
            "--device",
            dev,
            "--server",
            srv,
            "--link",
            "1mbit,40ms",
            "--link",
            "1gbit,1ms",
            "--plot",
            svg.to_str().unwrap(),
        ],
        None,
    ));
    let best: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("best"))
        .collect();
    assert_eq!(best.len(), 2, "{out}");
    assert!(
        best[0].contains("K=8"),
        "slow link: everything on the device: {out}"
    );
    assert!(
        best[1].contains("K=1"),
        "fast link: only the embeddings on the device: {out}"
    );
    assert!(out.contains("best cut changes from K=8"), "{out}");
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.matches("<path").count() >= 3);
    std::fs::remove_file(&svg).ok();
    // A memory budget that holds the embeddings but not a block moves the cut to K=1.
    let out = ok(&edgecut(
        &[
            "plan",
            "--device",
            dev,
            "--server",
            srv,
            "--link",
            "1mbit,40ms",
            "--memory-budget",
            "13MB",
        ],
        None,
    ));
    assert!(
        out.lines().any(|l| l.contains("best") && l.contains("K=1")),
        "{out}"
    );
    assert!(out.contains("does not fit the memory budget"), "{out}");
    // Without a server everything stays on the device.
    let out = ok(&edgecut(
        &["plan", "--device", dev, "--link", "1gbit,1ms"],
        None,
    ));
    assert!(
        out.lines().any(|l| l.contains("best") && l.contains("K=8")),
        "{out}"
    );
}

#[test]
fn bad_plan_input_is_named() {
    let dir = repo_root().join("docs/plan");
    let dev = dir.join("minilm-device-1thread.json");
    let dev = dev.to_str().unwrap();
    let other = scratch().join(format!("other-{}.json", std::process::id()));
    let mut p: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("minilm-server-2threads.json")).unwrap(),
    )
    .unwrap();
    p["model_id"] = "another model".into();
    std::fs::write(&other, p.to_string()).unwrap();
    let truncated = scratch().join(format!("truncated-{}.json", std::process::id()));
    std::fs::write(&truncated, &std::fs::read_to_string(dev).unwrap()[..100]).unwrap();
    for (args, needle) in [
        (
            vec!["plan", "--device", dev, "--link", "fast,40ms"],
            "bandwidth",
        ),
        (
            vec!["plan", "--device", dev, "--link", "10mbit"],
            "BANDWIDTH",
        ),
        (
            vec![
                "plan",
                "--device",
                "/nonexistent.json",
                "--link",
                "1mbit,1ms",
            ],
            "nonexistent",
        ),
        (
            vec![
                "plan",
                "--device",
                truncated.to_str().unwrap(),
                "--link",
                "1mbit,1ms",
            ],
            "truncated",
        ),
        (
            vec![
                "plan",
                "--device",
                dev,
                "--server",
                other.to_str().unwrap(),
                "--link",
                "1mbit,1ms",
            ],
            "not of the device's model",
        ),
        (
            vec![
                "plan",
                "--device",
                dev,
                "--link",
                "1mbit,1ms",
                "--memory-budget",
                "1B",
            ],
            "no cut satisfies",
        ),
        (
            vec![
                "plan",
                "--device",
                dev,
                "--link",
                "1mbit,1ms",
                "--objective",
                "speed",
            ],
            "objective",
        ),
    ] {
        let o = edgecut(&args, None);
        assert!(!o.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    std::fs::remove_file(&other).ok();
    std::fs::remove_file(&truncated).ok();
}

#[test]
fn plan_decode_on_the_committed_smollm2_profiles() {
    let dir = repo_root().join("docs/plan");
    let dev = dir.join("smollm2-device-slow4x.json");
    let srv = dir.join("smollm2-server-2threads.json");
    let (dev, srv) = (dev.to_str().unwrap(), srv.to_str().unwrap());
    let plan = |link: &str, extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "plan",
            "--decode",
            "--device",
            dev,
            "--server",
            srv,
            "--link",
            link,
            "--prompt",
            "64",
            "--reply",
            "128",
            "--encoding",
            "f16",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = ok(&edgecut(&args, None));
        serde_json::from_str::<serde_json::Value>(&out).unwrap()[0]["plan"].clone()
    };
    // A 4x slower device and a fast link: one block here, the rest on the server.
    let fast = plan("100mbit,5ms", &[]);
    assert_eq!(fast["best"]["k"], 1);
    assert_eq!(fast["all"].as_array().unwrap().len(), 30);
    assert_eq!(fast["best"]["up_bytes_per_token"], 576 * 2 + 36);
    // A round trip dearer than the device's whole step: everything here.
    assert_eq!(plan("1mbit,200ms", &[])["best"]["k"], 30);
    // A budget under the whole model and its cache: the whole model is no option.
    let tight = plan("1mbit,200ms", &["--memory-budget", "100MB"]);
    let ks: Vec<u64> = tight["all"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["k"].as_u64().unwrap())
        .collect();
    assert!(!ks.contains(&30) && ks.contains(&1), "{ks:?}");
    // An encoder's profiles are no decoder's, and --decode needs a server.
    let minilm = dir.join("minilm-device-1thread.json");
    let o = edgecut(
        &[
            "plan",
            "--decode",
            "--device",
            minilm.to_str().unwrap(),
            "--server",
            minilm.to_str().unwrap(),
            "--link",
            "10mbit,20ms",
        ],
        None,
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("decoder"));
    let o = edgecut(
        &["plan", "--decode", "--device", dev, "--link", "10mbit,20ms"],
        None,
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--server"));
}
