//! `edgecut chat --server ... --cut auto` against a real `edgecut serve` process running
//! SmolLM2 on loopback, through the link shaper: the planner splits while the link is fast,
//! moves everything to the device after a turn measures the link slow, stays there while the
//! server is unreachable, and the replies are the local chat's throughout (f32 on the wire).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgecut_partition::Profile;
use edgecut_server::{Shape, ShapeControl};
use edgecut_tests::{repo_root, scratch, smollm_gguf};

const MESSAGES: [&str; 3] = [
    "What is the capital of France?",
    "And of Germany?",
    "And of Italy?",
];

/// The committed SmolLM2 profiles, the device's made `slow` times slower than this machine,
/// so that splitting pays on a fast link (the server here is this machine).
fn profiles(slow: f64) -> (PathBuf, PathBuf) {
    let plan = repo_root().join("docs/plan/smollm2-device-1thread.json");
    let server = Profile::from_json(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    let mut device = server.clone();
    for s in device.times.iter_mut().flatten() {
        s.median_ms *= slow;
        s.p10_ms *= slow;
        s.p90_ms *= slow;
    }
    let d = scratch().join(format!("auto-device-{}.json", std::process::id()));
    std::fs::write(&d, serde_json::to_string(&device).unwrap()).unwrap();
    (d, plan)
}

/// `edgecut chat` with `args`, one message at a time: before each, `before(i)` runs; each turn
/// ends at its statistics line. Returns standard output and standard error.
fn chat(args: &[String], mut before: impl FnMut(usize)) -> (String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgecut"))
        .args(["chat", "-m"])
        .arg(smollm_gguf())
        .args(["--threads", "1", "-n", "12", "--seed", "1"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    for (i, m) in MESSAGES.iter().enumerate() {
        before(i);
        writeln!(stdin, "{m}").unwrap();
        stdin.flush().unwrap();
        loop {
            let mut line = String::new();
            assert!(
                err.read_line(&mut line).unwrap() > 0,
                "chat ended early:\n{log}"
            );
            log.push_str(&line);
            if line.starts_with("[prompt ") {
                break;
            }
        }
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{log}");
    (String::from_utf8(out.stdout).unwrap(), log)
}

#[test]
fn cut_auto_splits_on_a_fast_link_goes_home_on_a_slow_one_and_answers_as_local() {
    let (local, _) = chat(&[], |_| {});
    assert!(local.contains("Paris"), "{local}");
    let (device, server) = profiles(4.0);
    let (child, addr) = edgecut_tests::serve_model(&smollm_gguf());
    let _server = KillOnDrop(child);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fast = Shape {
        bps: 100e6,
        delay: Duration::from_micros(500),
    };
    let slow = Shape {
        bps: 100e6,
        delay: Duration::from_millis(150),
    };
    let ctl: ShapeControl = Arc::new(Mutex::new((fast, fast)));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let shaped = listener.local_addr().unwrap().to_string();
    rt.spawn(edgecut_server::shape_controlled(
        listener,
        addr.parse().unwrap(),
        ctl.clone(),
    ));
    let auto = |server_addr: &str| -> Vec<String> {
        [
            "--server",
            server_addr,
            "--cut",
            "auto",
            "--encoding",
            "f32",
            "--device-profile",
            device.to_str().unwrap(),
            "--server-profile",
            server.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    // Turn 1 on a fast link; then the link's round trip grows to 300 ms: turn 2 still splits
    // (nothing has measured it yet) and measures it; turn 3 runs all on the device.
    let (out, log) = chat(&auto(&shaped), |i| {
        if i == 1 {
            *ctl.lock().unwrap() = (slow, slow);
        }
    });
    assert_eq!(out, local, "{log}");
    let turns: Vec<&str> = log.split("[prompt ").collect();
    assert_eq!(turns.len(), 4, "{log}");
    assert!(turns[0].contains("[split: cut "), "{log}");
    assert!(!turns[0].contains("all on the device"), "{log}");
    assert!(turns[0].contains("bytes up per position"), "{log}");
    assert!(turns[1].contains("bytes up per position"), "{log}");
    assert!(
        turns[2].contains("cut 30 of 30: all on the device"),
        "{log}"
    );
    assert!(
        turns[2].contains("this turn ran all on the device"),
        "{log}"
    );
    // No server there: every turn on the device, said once.
    let (out, log) = chat(&auto("127.0.0.1:9"), |_| {});
    assert_eq!(out, local, "{log}");
    assert_eq!(log.matches("is not reachable").count(), 1, "{log}");
    assert_eq!(
        log.matches("this turn ran all on the device").count(),
        3,
        "{log}"
    );
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cut_auto_keeps_to_the_memory_budget() {
    // A device four times faster than this machine: the planner would keep all 30 blocks here
    // (143.8 MB of weights and KV cache at 2048 positions); 60 MB leaves room for fewer.
    let (device, server) = profiles(0.25);
    let (child, addr) = edgecut_tests::serve_model(&smollm_gguf());
    let _server = KillOnDrop(child);
    let run = |budget: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgecut"));
        cmd.args(["generate", "-m"])
            .arg(smollm_gguf())
            .args(["--threads", "1", "-n", "6", "--encoding", "f32"])
            .args(["--server", &addr, "--cut", "auto", "--device-profile"])
            .arg(&device)
            .arg("--server-profile")
            .arg(&server);
        if let Some(b) = budget {
            cmd.args(["--memory-budget", b]);
        }
        let out = cmd.arg("The capital of France is").output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        let cut: usize = err
            .split("[split: cut ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|k| k.parse().ok())
            .unwrap_or_else(|| panic!("no cut said:\n{err}"));
        (cut, String::from_utf8(out.stdout).unwrap())
    };
    let (all, text) = run(None);
    assert_eq!(all, 30);
    let (k, split_text) = run(Some("60MB"));
    assert!(k < 30, "{k}");
    assert_eq!(split_text, text);
    // The budget needs --cut auto.
    let out = Command::new(env!("CARGO_BIN_EXE_edgecut"))
        .args(["generate", "-m"])
        .arg(smollm_gguf())
        .args([
            "--server",
            &addr,
            "--cut",
            "3",
            "--memory-budget",
            "60MB",
            "x",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--memory-budget goes with --cut auto"));
}
