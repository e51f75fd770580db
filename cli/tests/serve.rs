//! `edgecut serve` as a real process on loopback, with split clients and hostile ones. Every
//! hostile client is followed by a good request, so the server is shown to be up and serving.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use edgecut::{cosine, Session, WeightType};
use edgecut_server::{ClientConfig, SplitClient};
use edgecut_tests::{minilm, scratch};
use edgecut_wire::{encode_frame, read_frame, ErrorCode, Frame, Hello, Limits, MAGIC, VERSION};
use embedded_io_adapters::std::FromStd;

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Server {
    let m = minilm(WeightType::Q8_0);
    let tok = scratch().join(format!("token-{}", std::process::id()));
    std::fs::write(&tok, "s3cret\n").unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgecut"));
    cmd.args([
        "serve",
        "-m",
        m.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--token-file",
    ])
    .arg(&tok)
    .args(["--frame-timeout", "1", "--idle-timeout", "5"])
    .args(extra);
    let (child, addr) = edgecut_tests::spawn_serve(cmd);
    Server { child, addr }
}

fn session() -> (Session, [u8; 32]) {
    let s = Session::open(minilm(WeightType::Q8_0), &Default::default()).unwrap();
    let id = s.model_id().0;
    (s, id)
}

fn client<'s>(
    s: &'s Session,
    addr: &str,
    cut: usize,
    enc: edgecut_wire::Encoding,
) -> SplitClient<&'s Session> {
    let cfg = ClientConfig {
        server: addr.into(),
        token: b"s3cret".to_vec(),
        cut,
        encoding: enc,
        timeout: Duration::from_secs(20),
        tls: None,
        auto: None,
    };
    SplitClient::new(s, cfg)
}

/// A good request must still be split (not fall back).
fn still_serving(s: &Session, addr: &str) {
    let out = client(s, addr, 2, edgecut_wire::Encoding::Int8)
        .embed(&["still there?"])
        .unwrap();
    assert_eq!(out.fell_back, None);
}

#[test]
fn split_over_tcp_equals_local_at_every_cut() {
    let srv = start(&[]);
    let (s, _) = session();
    let texts = ["A man is eating food.", "A man is riding a horse.", "hi"];
    let local = s.embed(&texts).unwrap();
    let mut worst = [1f32; 2];
    for cut in 0..s.stage_count() {
        for enc in [
            edgecut_wire::Encoding::F32,
            edgecut_wire::Encoding::F16,
            edgecut_wire::Encoding::Int8,
        ] {
            let out = client(&s, &srv.addr, cut, enc).embed(&texts).unwrap();
            assert_eq!(out.fell_back, None, "cut {cut}");
            for (v, w) in out.vectors.iter().zip(&local.vectors) {
                let c = cosine(v, w);
                match enc {
                    // Cut 0 sends token ids whatever the encoding asked for activations.
                    _ if cut == 0 => assert_eq!(v, w, "cut 0 {enc:?}"),
                    edgecut_wire::Encoding::F32 => assert_eq!(v, w, "cut {cut} f32"),
                    edgecut_wire::Encoding::F16 => worst[0] = worst[0].min(c),
                    edgecut_wire::Encoding::Int8 => worst[1] = worst[1].min(c),
                    other => panic!("{other:?} is not an activation encoding"),
                }
                assert!(c >= 0.9995, "cut {cut} {enc:?}: {c}");
            }
        }
    }
    println!(
        "split vs local, worst cosine over every cut: f32 identical, f16 {:.5}, int8 {:.5}",
        worst[0], worst[1]
    );
}

fn raw(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads what the server answers (an error frame, or nothing) until it closes the connection.
fn answer(s: TcpStream) -> Option<Frame> {
    let mut r = FromStd::new(s);
    read_frame(&mut r, &Limits::default()).ok().flatten()
}

fn error_code(f: Option<Frame>) -> Option<ErrorCode> {
    match f {
        Some(Frame::Error { code, .. }) => Some(code),
        _ => None,
    }
}

#[test]
fn hostile_clients_get_errors_and_others_are_served() {
    let srv = start(&[]);
    let (s, id) = session();
    let hello = |model_id: [u8; 32], token: &[u8]| {
        encode_frame(&Frame::Hello(Hello {
            model_id,
            encodings: 7,
            token: token.to_vec(),
        }))
        .unwrap()
    };

    // Garbage bytes.
    let mut c = raw(&srv.addr);
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(error_code(answer(c)), Some(ErrorCode::BadFrame));
    still_serving(&s, &srv.addr);

    // A frame length of 2^63.
    let mut c = raw(&srv.addr);
    let mut h = Vec::from(MAGIC);
    h.extend([VERSION, 1, 0, 0]);
    h.extend((1u64 << 63).to_le_bytes());
    c.write_all(&h).unwrap();
    assert_eq!(error_code(answer(c)), Some(ErrorCode::BadFrame));
    still_serving(&s, &srv.addr);

    // A wrong model hash, a missing token, a wrong token.
    for (model, token, code) in [
        ([1u8; 32], &b"s3cret"[..], ErrorCode::WrongModel),
        (id, &b""[..], ErrorCode::Unauthorized),
        (id, &b"s3cres"[..], ErrorCode::Unauthorized),
    ] {
        let mut c = raw(&srv.addr);
        c.write_all(&hello(model, token)).unwrap();
        assert_eq!(error_code(answer(c)), Some(code));
    }
    still_serving(&s, &srv.addr);

    // A shape whose size overflows, after a good HELLO.
    let mut c = raw(&srv.addr);
    c.write_all(&hello(id, b"s3cret")).unwrap();
    let mut r = FromStd::new(c.try_clone().unwrap());
    assert!(matches!(
        read_frame(&mut r, &Limits::default()),
        Ok(Some(Frame::HelloOk(_)))
    ));
    let mut p = Vec::new();
    p.extend(5u64.to_le_bytes());
    p.extend(2u16.to_le_bytes());
    p.push(0);
    p.extend(u16::MAX.to_le_bytes());
    p.extend(u16::MAX.to_le_bytes());
    p.extend(u32::MAX.to_le_bytes());
    let mut f = Vec::from(MAGIC);
    f.extend([VERSION, 3, 0, 0]);
    f.extend((p.len() as u64).to_le_bytes());
    f.extend(&p);
    c.write_all(&f).unwrap();
    assert_eq!(error_code(answer(c)), Some(ErrorCode::BadFrame));
    still_serving(&s, &srv.addr);

    // Half a frame, then silence: dropped after the frame timeout (1 s here).
    let mut c = raw(&srv.addr);
    let full = hello(id, b"s3cret");
    c.write_all(&full[..full.len() / 2]).unwrap();
    let t = Instant::now();
    assert_eq!(answer(c), None);
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "dropped after {:?}",
        t.elapsed()
    );
    still_serving(&s, &srv.addr);

    // A client that disconnects in the middle of a request.
    let mut c = raw(&srv.addr);
    c.write_all(&hello(id, b"s3cret")).unwrap();
    let req = s
        .run_device_part(&["bye"], 3, edgecut_wire::Encoding::Int8, 1)
        .unwrap();
    let bytes = encode_frame(&Frame::Infer(req)).unwrap();
    c.write_all(&bytes[..bytes.len() / 2]).unwrap();
    drop(c);
    still_serving(&s, &srv.addr);

    // 1000 connections opened and left idle, while a client is served.
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(&srv.addr).unwrap())
        .collect();
    still_serving(&s, &srv.addr);
    drop(idle);
    still_serving(&s, &srv.addr);
}

#[test]
fn a_dead_server_means_a_fallback_and_a_restart_means_splitting_again() {
    let (s, _) = session();
    let srv = start(&["--no-batching"]);
    let addr = srv.addr.clone();
    let mut c = client(&s, &addr, 3, edgecut_wire::Encoding::Int8);
    assert_eq!(c.embed(&["one"]).unwrap().fell_back, None);
    drop(srv); // killed
    let out = c.embed(&["two"]).unwrap();
    assert!(
        out.fell_back.is_some(),
        "the request completes on the device"
    );
    let local = s.embed(&["two"]).unwrap();
    assert_eq!(out.vectors, local.vectors);
    // A new server on another port: a client pointed at it splits again.
    let srv2 = start(&[]);
    let mut c2 = client(&s, &srv2.addr, 3, edgecut_wire::Encoding::Int8);
    assert_eq!(c2.embed(&["three"]).unwrap().fell_back, None);
}

#[test]
fn tls_split_equals_local_and_plain_or_untrusted_clients_fall_back() {
    let tls = edgecut_tests::TlsFixture::load();
    let (cert, ca) = (&tls.cert, &tls.ca);
    let srv = start(&tls.serve_args());
    let (s, _) = session();
    let texts = ["A man is eating food.", "hi"];
    let local = s.embed(&texts).unwrap();
    let over = |ca: &std::path::Path, name: &str| {
        // An empty name: plain TCP.
        let cfg = ClientConfig {
            server: srv.addr.clone(),
            token: b"s3cret".to_vec(),
            cut: 3,
            encoding: edgecut_wire::Encoding::F32,
            timeout: Duration::from_secs(20),
            tls: (!name.is_empty()).then(|| edgecut_server::TlsClient::new(ca, name).unwrap()),
            auto: None,
        };
        SplitClient::new(&s, cfg).embed(&texts).unwrap()
    };
    // Trusted root, by DNS name and by IP: split, and f32 on the wire is lossless.
    for name in ["localhost", "127.0.0.1"] {
        let out = over(ca, name);
        assert_eq!(out.fell_back, None, "TLS as {name}");
        assert_eq!(out.vectors, local.vectors);
    }
    // Plain TCP to a TLS server, an untrusted root, a name the certificate does not carry:
    // each falls back to the device with the reason, and the answer is still right.
    for (ca, name, why) in [
        (ca, "", "TLS"),
        (cert, "localhost", "certificate"),
        (ca, "example.com", "certificate"),
    ] {
        let out = over(ca, name);
        let reason = out.fell_back.unwrap_or_else(|| panic!("{name:?} split"));
        assert!(reason.contains(why), "{name:?}: {reason}");
        assert_eq!(out.vectors, local.vectors);
    }
    assert_eq!(over(ca, "localhost").fell_back, None, "still serving");
    // The CLI's flags.
    let m = minilm(WeightType::Q8_0);
    let tok = scratch().join(format!("token-cli-{}", std::process::id()));
    std::fs::write(&tok, "s3cret\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edgecut"))
        .args(["embed", "-m", m.to_str().unwrap(), "--server", &srv.addr])
        .args(["--cut", "2", "--tls-ca", ca.to_str().unwrap(), "--tls-name"])
        .args(["localhost", "--token-file", tok.to_str().unwrap(), "hi"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("split: cut 2"), "{err}");
}

#[test]
fn auto_cut_follows_the_link_as_it_changes() {
    use edgecut_partition::Profile;
    use edgecut_server::{AutoCut, Shape, ShapeControl};
    use std::sync::{Arc, Mutex};

    let srv = start(&[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fast = Shape {
        bps: 100e6,
        delay: Duration::from_millis(1),
    };
    let slow = Shape {
        bps: 50e3,
        delay: Duration::from_millis(20),
    };
    let ctl: ShapeControl = Arc::new(Mutex::new((fast, fast)));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    rt.spawn(edgecut_server::shape_controlled(
        listener,
        srv.addr.parse().unwrap(),
        ctl.clone(),
    ));
    let (s, _) = session();
    let n = s.stage_count();
    let plan = edgecut_tests::repo_root().join("docs/plan/minilm-device-1thread.json");
    let mut server = Profile::from_json(&std::fs::read_to_string(plan).unwrap()).unwrap();
    // The committed profile is of an AVX-512 machine; on a slower one (a 2-core Zen 3 with
    // AVX2 only took 3-7 times as long) every time of the scenario is stretched by as much:
    // the server's profile is this machine as measured, the device stays five times slower
    // than it, and the slow link slower by the same factor.
    let at = server.seqs.iter().position(|&q| q == 64).unwrap();
    let profiled: f64 = server.times.iter().map(|t| t[at].median_ms).sum();
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let t = s.time_stages(64).unwrap();
            t.iter().map(|d| d.as_secs_f64() * 1e3).sum()
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    let slower = (runs[2] / profiled).max(1.0);
    println!(
        "this machine: {:.1} ms at 64 tokens, the profile {profiled:.1} ms",
        runs[2]
    );
    let scale = |p: &mut Profile, k: f64| {
        for smp in p.times.iter_mut().flatten() {
            smp.median_ms *= k;
            smp.p10_ms *= k;
            smp.p90_ms *= k;
        }
    };
    scale(&mut server, slower);
    // The slow link slows by as much, so that the choices weigh the same times.
    let slow = Shape {
        bps: slow.bps / slower,
        delay: slow.delay.mul_f64(slower),
    };
    // A device five times slower than this machine, so that splitting pays on a fast link
    // (the server here is this machine).
    let mut device = server.clone();
    scale(&mut device, 5.0);
    let cfg = ClientConfig {
        server: addr,
        token: b"s3cret".to_vec(),
        cut: 0,
        encoding: edgecut_wire::Encoding::Int8,
        timeout: Duration::from_secs(20),
        tls: None,
        auto: Some(AutoCut {
            // The simulated device is not the one running: keep its profile as given.
            calibrate_device: false,
            ..AutoCut::new(device, server, n).unwrap()
        }),
    };
    let mut c = SplitClient::new(&s, cfg);
    let text = "hello ".repeat(60);
    let local = s.embed(&[&text]).unwrap().vectors.remove(0);
    let run = |c: &mut SplitClient<&Session>| {
        let o = c.embed(&[&text]).unwrap();
        assert_eq!(o.fell_back, None);
        assert!(cosine(&o.vectors[0], &local) >= 0.999);
        o.cut
    };
    let fast_cuts: Vec<usize> = (0..4).map(|_| run(&mut c)).collect();
    assert!(fast_cuts.iter().all(|&k| k < n), "fast link: {fast_cuts:?}");
    let est = c.link_estimate().unwrap();
    assert!(est.bps.unwrap() > 5e6, "fast link measured as {est:?}");
    // The link slows down: within a few requests everything runs on the device.
    *ctl.lock().unwrap() = (slow, slow);
    let mut slow_cuts = Vec::new();
    while slow_cuts.last() != Some(&n) && slow_cuts.len() < 6 {
        slow_cuts.push(run(&mut c));
    }
    assert_eq!(slow_cuts.last(), Some(&n), "slow link: {slow_cuts:?}");
    assert!(c.link_estimate().unwrap().bps.unwrap() < 1e6);
    // Fast again: a probe measures it and the client splits again, for good.
    *ctl.lock().unwrap() = (fast, fast);
    let mut back = Vec::new();
    while !(back.len() >= 3 && back[back.len() - 3..].iter().all(|&k| k < n)) && back.len() < 60 {
        back.push(run(&mut c));
    }
    assert!(back.len() < 60, "fast again: {back:?}");
    println!("cuts: fast {fast_cuts:?}, slow {slow_cuts:?}, fast again {back:?}");
}
