//! The abuse tests' tools: a real `edgecut serve` process (MiniLM, token "s3cret", metrics on),
//! raw and split clients, and measurements of the server process (RSS, CPU time, metrics).
//!
//! `EDGECUT_SERVE_BIN=/path/to/old/edgecut` runs the same experiments against another build
//! (flags it does not know are left out) to print the figures before a change; its assertions
//! are expected to fail there.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use edgecut::{Session, WeightType};
use edgecut_server::{ClientConfig, SplitClient};
use edgecut_tests::{minilm, scratch};
use edgecut_wire::{
    encode_frame, read_frame, Activation, Encoding, ErrorCode, Frame, Hello, Infer, Limits,
};
use embedded_io_adapters::std::FromStd;

/// Flags of the hardened server, left out when measuring an older build.
const NEW_FLAGS: [&str; 7] = [
    "--write-timeout",
    "--drain-timeout",
    "--max-request-tokens",
    "--max-request-memory-mb",
    "--max-connections",
    "--failed-hellos-per-minute",
    "--max-sessions-per-client",
];

/// One test at a time: they measure the server's memory, CPU and latency.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether an older build is being measured.
pub fn before() -> bool {
    std::env::var_os("EDGECUT_SERVE_BIN").is_some()
}

pub struct Server {
    pub child: Child,
    pub addr: String,
    pub metrics: String,
    pub log: Arc<Mutex<String>>,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn command() -> Command {
    match std::env::var_os("EDGECUT_SERVE_BIN") {
        Some(b) => Command::new(b),
        None => Command::new(env!("CARGO_BIN_EXE_edgecut")),
    }
}

/// The file holding the token "s3cret" (written on first use).
pub fn token_file() -> std::path::PathBuf {
    let tok = scratch().join(format!("token-{}", std::process::id()));
    std::fs::write(&tok, "s3cret\n").unwrap();
    tok
}

/// The serve arguments: MiniLM, the token, a metrics listener, then `extra`.
pub fn serve_args(extra: &[&str]) -> Vec<String> {
    serve_args_for(&minilm(WeightType::Q8_0), extra)
}

/// The serve arguments for model `m`: the token, a metrics listener, then `extra`.
pub fn serve_args_for(m: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let tok = token_file();
    let mut args: Vec<String> = [
        "serve",
        "-m",
        m.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--token-file",
        tok.to_str().unwrap(),
        "--frame-timeout",
        "2",
        "--idle-timeout",
        "30",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut it = extra.iter();
    while let Some(a) = it.next() {
        if before() && NEW_FLAGS.contains(a) {
            it.next();
            continue;
        }
        args.push(a.to_string());
    }
    args
}

/// Starts the server with `extra` arguments.
pub fn start(extra: &[&str]) -> Server {
    let mut cmd = command();
    cmd.args(serve_args(extra));
    spawn(cmd)
}

pub fn spawn(cmd: Command) -> Server {
    let (child, addr, log) = edgecut_tests::spawn_serve_logged(cmd);
    let metrics = edgecut_tests::metrics_address(&log);
    Server {
        child,
        addr,
        metrics,
        log,
    }
}

pub fn session() -> (Session, [u8; 32]) {
    let s = Session::open(minilm(WeightType::Q8_0), &Default::default()).unwrap();
    let id = s.model_id().0;
    (s, id)
}

/// The server's resident memory, MiB.
pub fn rss_mb(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds (user + system) the server has used.
pub fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let rest = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Samples the server's RSS every 10 ms until stopped; gives the peak.
pub struct Peak {
    stop: Arc<AtomicBool>,
    h: std::thread::JoinHandle<f64>,
}

impl Peak {
    pub fn start(pid: u32) -> Peak {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let h = std::thread::spawn(move || {
            let mut peak = 0f64;
            while !s.load(Ordering::Relaxed) {
                peak = peak.max(rss_mb(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        Peak { stop, h }
    }

    pub fn stop(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.h.join().unwrap()
    }
}

/// One HTTP/1.1 request to `addr`; the status and the body.
pub fn http(addr: &str, request: &[u8]) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// A metric's value (`None` when the server does not have it).
pub fn metric(srv: &Server, name: &str) -> Option<f64> {
    edgecut_tests::metric(&srv.metrics, name)
}

pub fn hello(model_id: [u8; 32], token: &[u8]) -> Vec<u8> {
    encode_frame(&Frame::Hello(Hello {
        model_id,
        encodings: 7,
        token: token.to_vec(),
    }))
    .unwrap()
}

/// A header of frame type `ty` announcing `len` payload bytes.
pub fn header(ty: u8, len: u64) -> Vec<u8> {
    let mut h = Vec::from(edgecut_wire::MAGIC);
    h.extend([edgecut_wire::VERSION, ty, 0, 0]);
    h.extend(len.to_le_bytes());
    h
}

pub fn raw(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// A connection from the loopback address `src` (127.0.0.x: another client machine).
pub fn raw_from(addr: &str, src: &str) -> TcpStream {
    let to: SocketAddr = addr.parse().unwrap();
    let from = SocketAddr::new(src.parse::<IpAddr>().unwrap(), 0);
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&from.into()).unwrap();
    s.connect(&to.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// The next frame from the server (`None`: it closed or the read failed).
pub fn next(s: &mut TcpStream) -> Option<Frame> {
    let mut r = FromStd::new(s);
    read_frame(&mut r, &Limits::default()).ok().flatten()
}

pub fn code(f: Option<Frame>) -> Option<ErrorCode> {
    match f {
        Some(Frame::Error { code, .. }) => Some(code),
        _ => None,
    }
}

/// A connection past its HELLO.
pub fn authed(addr: &str, id: [u8; 32]) -> TcpStream {
    let mut c = raw(addr);
    c.write_all(&hello(id, b"s3cret")).unwrap();
    assert!(matches!(next(&mut c), Some(Frame::HelloOk(_))));
    c
}

/// `texts` copies of a text of `words` words, sent at cut 0 (token ids: the server runs
/// everything).
pub fn request(s: &Session, texts: usize, words: usize, id: u64) -> Vec<u8> {
    let text = "edge ".repeat(words);
    let all: Vec<&str> = (0..texts).map(|_| text.as_str()).collect();
    let req = s.run_device_part(&all, 0, Encoding::Int8, id).unwrap();
    encode_frame(&Frame::Infer(req)).unwrap()
}

/// An INFER with the given fields and zero-filled data of the right size.
pub fn infer_frame(
    cut: u16,
    enc: Encoding,
    batch: u16,
    seq: u16,
    width: u32,
    fill: f32,
) -> Vec<u8> {
    let n = batch as usize * seq as usize * width as usize;
    let data = edgecut_wire::encode_values(&vec![fill; n], enc);
    encode_frame(&Frame::Infer(Infer {
        request_id: 9,
        cut,
        activation: Activation {
            batch,
            seq,
            width,
            lengths: vec![seq; batch as usize],
            encoding: enc,
            data,
        },
    }))
    .unwrap()
}

/// Sends `frame` on `c` and times the answer.
pub fn timed(c: &mut TcpStream, frame: &[u8]) -> (Option<Frame>, Duration) {
    let t = Instant::now();
    c.write_all(frame).unwrap();
    let f = next(c);
    (f, t.elapsed())
}

/// A split client's request (cut 2, int8): it must be split, not fall back. Its latency.
pub fn legit(s: &Session, addr: &str) -> Duration {
    let cfg = ClientConfig {
        server: addr.into(),
        token: b"s3cret".to_vec(),
        cut: 2,
        encoding: Encoding::Int8,
        timeout: Duration::from_secs(30),
        tls: None,
        auto: None,
    };
    let t = Instant::now();
    let out = SplitClient::new(s, cfg).embed(&["still there?"]).unwrap();
    assert_eq!(out.fell_back, None, "a legitimate client fell back");
    t.elapsed()
}

/// The TCP state of a client socket (Linux `tcp_info`): 1 established, 7 closed, 8 close-wait.
pub fn tcp_state(s: &TcpStream) -> u8 {
    use std::os::fd::AsRawFd;
    let mut info = [0u8; 256];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: a valid socket and a buffer of `len` bytes that the kernel fills.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO");
    info[0]
}

/// Sends `sig` to the process.
pub fn kill(pid: u32, sig: i32) {
    // SAFETY: kill has no memory preconditions.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Waits up to `limit` for the process to exit; the time it took.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}
