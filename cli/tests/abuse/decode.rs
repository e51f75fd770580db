//! A split decoding server (SmolLM2) under long-step floods: four connections sending
//! 2,047-row STEPs that rewind to position 0 over and over, while a device runs
//! `edgecut generate --server --cut 15`; closed connections whose steps are still queued; a
//! SIGTERM with steps running and waiting; one client opening every session.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgecut::{Llm, LlmOptions};
use edgecut_tests::smollm_gguf;
use edgecut_wire::{encode_frame, encode_values, Encoding, ErrorCode, Frame, Hello, Open, Step};

use crate::support::{self, code, next, serial, wait_exit, Server};

/// A decoder server (SmolLM2, the token) with `extra` flags.
fn start(extra: &[&str]) -> Server {
    let mut cmd = support::command();
    cmd.args(support::serve_args_for(&smollm_gguf(), extra));
    support::spawn(cmd)
}

fn model_id() -> [u8; 32] {
    Llm::open(smollm_gguf(), &LlmOptions::default())
        .unwrap()
        .model_id()
        .0
}

fn send(c: &mut TcpStream, f: &Frame) -> std::io::Result<()> {
    c.write_all(&encode_frame(f).unwrap())
}

/// An authenticated raw connection.
fn connect(addr: &str, id: [u8; 32]) -> TcpStream {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let hello = Frame::Hello(Hello {
        model_id: id,
        encodings: 7,
        token: b"s3cret".to_vec(),
    });
    send(&mut c, &hello).unwrap();
    assert!(matches!(next(&mut c), Some(Frame::HelloOk(_))));
    c
}

fn open(c: &mut TcpStream, context: u32) -> Option<u64> {
    let o = Frame::Open(Open {
        cut: 15,
        context,
        encoding: Encoding::F16,
        top_logits: 0,
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
    });
    send(c, &o).ok()?;
    match next(c) {
        Some(Frame::Opened(o)) => Some(o.session),
        _ => None,
    }
}

/// A STEP of `rows` rows at `position`, values a hidden state could hold.
fn step(session: u64, position: u32, rows: usize) -> Frame {
    let values: Vec<f32> = (0..rows * 576)
        .map(|i| ((i % 977) as f32 * 0.37).sin() * 0.5)
        .collect();
    Frame::Step(Step {
        session,
        position,
        rows: rows as u16,
        width: 576,
        sample: true,
        encoding: Encoding::F16,
        data: encode_values(&values, Encoding::F16),
    })
}

/// Four connections sending 2,047-row steps at position 0, each as soon as the last is
/// answered, until `stop`; the steps answered.
fn flood(addr: &str, id: [u8; 32], stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<usize>> {
    (0..4)
        .map(|_| {
            let (addr, stop) = (addr.to_string(), stop.clone());
            std::thread::spawn(move || {
                let mut c = connect(&addr, id);
                let Some(s) = open(&mut c, 2048) else {
                    return 0;
                };
                let frame = encode_frame(&step(s, 0, 2047)).unwrap();
                let mut answered = 0;
                while !stop.load(Ordering::Relaxed) {
                    if c.write_all(&frame).is_err() {
                        break;
                    }
                    match next(&mut c) {
                        Some(Frame::Next(_)) => answered += 1,
                        _ => break,
                    }
                }
                answered
            })
        })
        .collect()
}

/// `edgecut generate --server --cut 15`, 24 tokens: its time and whether it stayed split.
fn device(addr: &str) -> (Duration, bool) {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_edgecut"))
        .args(["generate", "-m"])
        .arg(smollm_gguf())
        .args(["The lighthouse keeper", "-n", "24", "--server", addr])
        .args(["--cut", "15", "--threads", "1", "--token-file"])
        .arg(support::token_file())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let split = !err.contains("alone") && !err.contains("all on the device");
    if !split {
        println!("device: {err}");
    }
    (took, split)
}

#[test]
fn long_step_floods_leave_a_device_its_share() {
    let _s = serial();
    let id = model_id();
    let srv = start(&["--max-sessions", "8"]);
    device(&srv.addr); // warm: the file's pages, the server's first step
    let (alone, split) = device(&srv.addr);
    assert!(split, "alone, the device runs split");
    let stop = Arc::new(AtomicBool::new(false));
    let floods = flood(&srv.addr, id, &stop);
    std::thread::sleep(Duration::from_millis(1500));
    let b0 = support::metric(&srv, "edgecut_decode_batches_total").unwrap_or(0.0);
    let (flooded, split) = device(&srv.addr);
    let b1 = support::metric(&srv, "edgecut_decode_batches_total").unwrap_or(0.0);
    let ms = flooded.as_secs_f64() * 1e3 / (b1 - b0).max(1.0);
    println!(
        "decode batches during the device's run: {} ({ms:.1} ms each)",
        b1 - b0
    );
    stop.store(true, Ordering::Relaxed);
    let answered: usize = floods.into_iter().map(|h| h.join().unwrap()).sum();
    let ratio = flooded.as_secs_f64() / alone.as_secs_f64();
    println!(
        "device with 4 connections flooding 2,047-row steps: {flooded:.2?} (alone {alone:.2?}, \
         {ratio:.2}x), split: {split}; flood steps answered: {answered}"
    );
    assert!(split, "the device stayed split (no fallback)");
    assert!(ratio < 3.0, "{ratio:.2}x its time alone");
}

#[test]
fn steps_of_closed_connections_are_dropped() {
    let _s = serial();
    let id = model_id();
    let srv = start(&["--max-sessions", "8"]);
    // Four connections send a long step each and leave at once.
    for _ in 0..4 {
        let mut c = connect(&srv.addr, id);
        let s = open(&mut c, 2048).unwrap();
        send(&mut c, &step(s, 0, 2047)).unwrap();
        drop(c);
    }
    let cpu0 = support::cpu_secs(srv.pid());
    std::thread::sleep(Duration::from_secs(3));
    let burnt = support::cpu_secs(srv.pid()) - cpu0;
    let dropped = support::metric(&srv, "edgecut_decode_dropped_steps_total");
    println!(
        "4 abandoned 2,047-row steps: {burnt:.1} s of CPU in the 3 s after; dropped: {dropped:?}"
    );
    assert!(burnt < 2.0, "{burnt:.1} CPU s spent on departed clients");
    assert!(dropped.unwrap_or(0.0) >= 3.0, "{dropped:?}");
}

#[test]
fn one_client_cannot_hold_every_session() {
    let _s = serial();
    let id = model_id();
    let srv = start(&["--max-sessions", "16"]);
    let mut c = connect(&srv.addr, id);
    let opened = (0..16).filter(|_| open(&mut c, 64).is_some()).count();
    println!("one connection opened {opened} of 16 sessions");
    assert_eq!(opened, 4, "four per client by default");
    // Another client still gets sessions.
    let mut other = connect(&srv.addr, id);
    assert!(open(&mut other, 64).is_some());
}

#[test]
fn a_drain_with_steps_queued_tells_every_client_and_ends_in_time() {
    let _s = serial();
    let id = model_id();
    let srv = start(&["--max-sessions", "8", "--drain-timeout", "2"]);
    let mut srv = srv;
    // One long step running and two queued behind it, from three connections.
    let mut conns: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut c = connect(&srv.addr, id);
            let s = open(&mut c, 2048).unwrap();
            send(&mut c, &step(s, 0, 2047)).unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    support::kill(srv.pid(), libc::SIGTERM);
    let answers: Vec<(Option<Frame>, Duration)> = conns
        .iter_mut()
        .map(|c| {
            let a = next(c);
            (a, t.elapsed())
        })
        .collect();
    let exit = wait_exit(&mut srv.child, Duration::from_secs(30)).map(|_| t.elapsed());
    for (a, at) in &answers {
        println!("after SIGTERM: {a:?} at {at:.2?}");
    }
    println!("exit {exit:?} after SIGTERM (drain 2 s)");
    for (a, _) in answers {
        match a {
            Some(Frame::Next(_)) => {}
            other => assert_eq!(code(other), Some(ErrorCode::Unavailable)),
        }
    }
    let exit = exit.expect("the server exits");
    // The drain, then at most one batch and the 2 s grace for clients to be told.
    assert!(exit < Duration::from_secs(6), "exit {exit:?}");
}
