//! Split decoding against a real `edgecut serve` process running SmolLM2 on loopback: the split
//! reply equals the local one, a server killed mid-reply costs nothing, a restarted server is
//! used again, and hostile or careless clients (unknown sessions, positions out of order, a
//! step before OPEN, NaN, too many sessions, a session left open) are refused or evicted while
//! other sessions are served.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use edgecut::split::{DecodeLink, LinkError, SplitDecoder};
use edgecut::{GenerateOptions, Llm, LlmOptions, SamplingParams};
use edgecut_server::{ClientConfig, DecoderLink};
use edgecut_tests::{scratch, smollm_gguf};
use edgecut_wire::{
    encode_frame, encode_values, read_frame, Encoding, ErrorCode, Frame, Hello, Limits, Open, Step,
};
use embedded_io_adapters::std::FromStd;

struct Server {
    child: Child,
    addr: String,
    metrics: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Server {
    let tok = scratch().join(format!("dtoken-{}", std::process::id()));
    std::fs::write(&tok, "s3cret\n").unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgecut"));
    cmd.args(["serve", "-m"])
        .arg(smollm_gguf())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--token-file",
        ])
        .arg(&tok)
        .args(extra);
    let (child, addr, log) = edgecut_tests::spawn_serve_logged(cmd);
    let metrics = edgecut_tests::metrics_address(&log);
    Server {
        child,
        addr,
        metrics,
    }
}

fn metric(srv: &Server, name: &str) -> Option<f64> {
    edgecut_tests::metric(&srv.metrics, name)
}

fn llm() -> Llm {
    Llm::open(smollm_gguf(), &LlmOptions::default()).unwrap()
}

fn link(llm: &Llm, addr: &str, cut: usize, encoding: Encoding) -> DecoderLink {
    let cfg = ClientConfig {
        server: addr.into(),
        token: b"s3cret".to_vec(),
        cut,
        encoding,
        timeout: Duration::from_secs(30),
        tls: None,
        auto: None,
    };
    DecoderLink::new(llm, cfg, SamplingParams::default())
}

fn opts(n: usize) -> GenerateOptions {
    GenerateOptions::default()
        .with_max_tokens(n)
        .with_ignore_eos(true)
}

fn local(llm: &Llm, prompt: &[u32], n: usize) -> Vec<u32> {
    llm.new_context()
        .unwrap()
        .generate(prompt, &opts(n), &mut |_| true)
        .unwrap()
        .tokens
}

const PROMPT: &str = "The three largest cities of Europe are";

/// A local run and a split one at cut 15 over `addr` (f32 on the wire), both sampling as
/// `sampling`: the local tokens, the split generation and its link.
fn local_and_split(
    llm: &Llm,
    addr: &str,
    prompt: &[u32],
    n: usize,
    sampling: &SamplingParams,
) -> (Vec<u32>, edgecut::split::SplitGeneration, DecoderLink) {
    let o = opts(n).with_sampling(sampling.clone());
    let want = llm
        .new_context()
        .unwrap()
        .generate(prompt, &o, &mut |_| true)
        .unwrap()
        .tokens;
    let mut l = link(llm, addr, 15, Encoding::F32);
    l.set_sampling(sampling.clone());
    let g = SplitDecoder::new(llm, 15)
        .unwrap()
        .generate(prompt, &o, &mut l, &mut |_| true)
        .unwrap();
    (want, g, l)
}

#[test]
fn a_repetition_penalty_splits_over_tcp_as_a_local_run_samples() {
    let srv = start(&[]);
    let llm = llm();
    let prompt = llm
        .tokenize("The capital of France is Paris. The capital of France is")
        .unwrap();
    for sampling in [
        SamplingParams {
            repetition_penalty: 1.5,
            ..SamplingParams::default()
        },
        SamplingParams {
            repetition_penalty: 1.3,
            temperature: 0.8,
            top_k: 40,
            seed: 7,
            ..SamplingParams::default()
        },
    ] {
        let (want, g, l) = local_and_split(&llm, &srv.addr, &prompt, 24, &sampling);
        assert_eq!(g.fell_back, None, "{sampling:?}");
        assert_eq!(g.generation.tokens, want, "{sampling:?}");
        // Each token's NEXT carried the logits: 8 bytes each.
        let n = edgecut::split::top_logits_for(&sampling).unwrap().unwrap();
        assert!(l.stats.bytes_down >= 24 * 8 * n, "{:?}", l.stats);
    }
    // A penalty over the whole vocabulary: the device runs alone and says why.
    let whole = SamplingParams {
        repetition_penalty: 1.3,
        temperature: 0.8,
        seed: 7,
        ..SamplingParams::default()
    };
    let (want, g, _) = local_and_split(&llm, &srv.addr, &prompt, 12, &whole);
    let (_, why) = g.fell_back.expect("not split");
    assert!(why.contains("whole vocabulary"), "{why}");
    assert_eq!(g.generation.tokens, want);
}

#[test]
fn split_over_tcp_equals_local_and_a_killed_server_costs_nothing() {
    let llm = llm();
    let prompt = llm.tokenize(PROMPT).unwrap();
    let want = local(&llm, &prompt, 32);
    let srv = start(&[]);
    for cut in [1, 15, 29] {
        let mut l = link(&llm, &srv.addr, cut, Encoding::F32);
        let mut d = SplitDecoder::new(&llm, cut).unwrap();
        let g = d
            .generate(&prompt, &opts(32), &mut l, &mut |_| true)
            .unwrap();
        assert_eq!(g.fell_back, None, "cut {cut}");
        assert_eq!(g.generation.tokens, want, "cut {cut}");
        println!(
            "cut {cut}: {} bytes up per position (f32), {:.1} ms per round trip",
            l.stats.bytes_up / l.stats.positions,
            l.stats.round_trips.as_secs_f64() * 1e3 / l.stats.steps as f64
        );
    }

    // The server is killed after the 10th token: the device finishes alone.
    let (g, mut d) = killed_after_10(&llm, &prompt, srv, Encoding::F32);
    let (at, why) = g.fell_back.clone().expect("it fell back");
    println!("killed after 10 tokens: fell back at {at} ({why})");
    assert_eq!(at, 10);
    assert_eq!(g.generation.tokens, want);
    assert!(d.is_local());

    // A new server: the next turn splits again, re-sending the conversation first.
    let srv2 = start(&[]);
    let mut l2 = link(&llm, &srv2.addr, 15, Encoding::F32);
    let mut turn2 = d.tokens().to_vec();
    turn2.extend(llm.tokenize(" and").unwrap());
    let g2 = d
        .generate(&turn2, &opts(8), &mut l2, &mut |_| true)
        .unwrap();
    assert_eq!(g2.fell_back, None);
    assert!(!d.is_local());
    assert_eq!(g2.generation.tokens, local(&llm, &turn2, 8));
    assert!(l2.stats.positions >= turn2.len());

    // int8: the tokens after a fallback continue what was received, as a local run would.
    let (g, _) = killed_after_10(&llm, &prompt, start(&[]), Encoding::Int8);
    assert_eq!(g.fell_back.map(|f| f.0), Some(10));
    let got = g.generation.tokens;
    let mut so_far = prompt.clone();
    so_far.extend_from_slice(&got[..10]);
    assert_eq!(&got[10..], &local(&llm, &so_far, 22)[..]);
}

/// A split generation of 32 tokens at K = 15 through `srv`, which is killed before the 11th
/// token is asked for; the generation and the decoder that ran it.
fn killed_after_10(
    llm: &Llm,
    prompt: &[u32],
    srv: Server,
    encoding: Encoding,
) -> (edgecut::split::SplitGeneration, SplitDecoder) {
    struct KillAfter {
        inner: DecoderLink,
        sampled: usize,
        server: Option<Server>,
    }
    impl DecodeLink for KillAfter {
        fn step(
            &mut self,
            position: usize,
            hidden: &[f32],
            sample: bool,
        ) -> Result<Option<u32>, LinkError> {
            if sample && self.sampled == 10 {
                self.server.take(); // killed
            }
            self.sampled += sample as usize;
            self.inner.step(position, hidden, sample)
        }
    }
    let mut k = KillAfter {
        inner: link(llm, &srv.addr, 15, encoding),
        sampled: 0,
        server: Some(srv),
    };
    let mut d = SplitDecoder::new(llm, 15).unwrap();
    let g = d
        .generate(prompt, &opts(32), &mut k, &mut |_| true)
        .unwrap();
    (g, d)
}

fn raw(addr: &str, id: [u8; 32]) -> FromStd<TcpStream> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut c = FromStd::new(s);
    send(
        &mut c,
        &Frame::Hello(Hello {
            model_id: id,
            encodings: 7,
            token: b"s3cret".to_vec(),
        }),
    );
    assert!(matches!(answer(&mut c), Some(Frame::HelloOk(_))));
    c
}

fn send(c: &mut FromStd<TcpStream>, f: &Frame) {
    c.inner_mut().write_all(&encode_frame(f).unwrap()).unwrap();
}

fn answer(c: &mut FromStd<TcpStream>) -> Option<Frame> {
    read_frame(c, &Limits::default()).ok().flatten()
}

fn open(cut: u16) -> Frame {
    Frame::Open(Open {
        cut,
        context: 64,
        encoding: Encoding::F32,
        top_logits: 0,
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
    })
}

fn step(session: u64, position: u32, values: &[f32]) -> Frame {
    Frame::Step(Step {
        session,
        position,
        rows: (values.len() / 576) as u16,
        width: 576,
        sample: true,
        encoding: Encoding::F32,
        data: encode_values(values, Encoding::F32),
    })
}

fn code(f: Option<Frame>) -> Option<ErrorCode> {
    match f {
        Some(Frame::Error { code, .. }) => Some(code),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// A good split generation still runs split (no fallback).
fn still_serving(llm: &Llm, addr: &str) {
    let prompt = llm.tokenize("Hi").unwrap();
    let mut l = link(llm, addr, 15, Encoding::F16);
    let mut d = SplitDecoder::new(llm, 15).unwrap();
    let g = d
        .generate(&prompt, &opts(4), &mut l, &mut |_| true)
        .unwrap();
    assert_eq!(g.fell_back, None);
}

#[test]
fn hostile_sessions_are_refused_and_idle_ones_evicted() {
    let llm = llm();
    let id = llm.model_id().0;
    let srv = start(&["--max-sessions", "2", "--session-idle-timeout", "1"]);
    let mut c = raw(&srv.addr, id);
    let row = vec![0.1f32; 576];
    // A step before any OPEN, then for a session that does not exist.
    send(&mut c, &step(1, 0, &row));
    assert_eq!(code(answer(&mut c)), Some(ErrorCode::BadRequest));
    send(&mut c, &open(15));
    let Some(Frame::Opened(o)) = answer(&mut c) else {
        panic!("no session")
    };
    send(&mut c, &step(o.session + 7, 0, &row));
    assert_eq!(code(answer(&mut c)), Some(ErrorCode::BadRequest));
    // Positions past what the session holds; NaN; a cut outside the model.
    send(&mut c, &step(o.session, 5, &row));
    assert_eq!(code(answer(&mut c)), Some(ErrorCode::BadRequest));
    let mut nan = row.clone();
    nan[3] = f32::NAN;
    send(&mut c, &step(o.session, 0, &nan));
    assert_eq!(code(answer(&mut c)), Some(ErrorCode::BadRequest));
    send(&mut c, &open(30));
    assert_eq!(code(answer(&mut c)), Some(ErrorCode::BadRequest));
    // The session still works after all that.
    send(&mut c, &step(o.session, 0, &row));
    assert!(matches!(answer(&mut c), Some(Frame::Next(n)) if n.held == 1));
    still_serving(&llm, &srv.addr);

    // Two sessions are the limit: a third is refused, and a device asking for it falls back.
    // (The good client's session ends with its connection: wait for it to be freed.)
    let t = Instant::now();
    while metric(&srv, "edgecut_sessions") != Some(1.0) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    send(&mut c, &open(15));
    assert!(matches!(answer(&mut c), Some(Frame::Opened(_))));
    let kv = metric(&srv, "edgecut_kv_bytes").unwrap();
    assert_eq!(metric(&srv, "edgecut_sessions"), Some(2.0));
    let mut c2 = raw(&srv.addr, id);
    send(&mut c2, &open(15));
    assert_eq!(code(answer(&mut c2)), Some(ErrorCode::Unavailable));
    let prompt = llm.tokenize("Hi").unwrap();
    let mut l = link(&llm, &srv.addr, 15, Encoding::F16);
    let mut d = SplitDecoder::new(&llm, 15).unwrap();
    let g = d
        .generate(&prompt, &opts(4), &mut l, &mut |_| true)
        .unwrap();
    let why = g.fell_back.expect("no session: the device runs alone").1;
    assert!(why.contains("sessions"), "{why}");
    assert_eq!(g.generation.tokens, local(&llm, &prompt, 4));

    // Left open and silent: evicted after the idle time, the KV memory given back.
    let t = Instant::now();
    while metric(&srv, "edgecut_sessions") != Some(0.0) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "2 sessions held {kv} KV bytes; evicted after {:.1?} (idle timeout 1 s)",
        t.elapsed()
    );
    assert_eq!(metric(&srv, "edgecut_sessions"), Some(0.0));
    assert_eq!(metric(&srv, "edgecut_kv_bytes"), Some(0.0));
    assert_eq!(metric(&srv, "edgecut_sessions_evicted_total"), Some(2.0));
    send(&mut c, &step(o.session, 1, &row));
    assert_eq!(code(answer(&mut c)), Some(ErrorCode::BadRequest), "evicted");
    still_serving(&llm, &srv.addr);
}
