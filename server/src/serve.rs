//! `edgecut serve`: accepts device connections, checks their HELLO (model identity, token),
//! batches their requests across connections, runs the stages after each request's cut, and
//! answers. Every connection has timeouts; a malformed frame ends that connection only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgecut::Session;
use edgecut_wire::{
    decode_payload, encode_frame, parse_header, ErrorCode, Frame, HelloOk, Infer, InferResult,
    Limits, WireError, HEADER_BYTES,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The access token clients must send (none: no token needed).
    pub token: Option<Vec<u8>>,
    /// Most texts run in one batch.
    pub max_batch: usize,
    /// How long the first request of a batch waits for others.
    pub max_wait: Duration,
    /// Whether requests of different connections are batched together.
    pub batching: bool,
    /// Time a new connection has to send its HELLO.
    pub hello_timeout: Duration,
    /// Time a started frame has to arrive whole (slow or stalled senders are dropped).
    pub frame_timeout: Duration,
    /// Time a connection may stay silent between requests.
    pub idle_timeout: Duration,
    /// Most connections open at once (more are refused at once).
    pub max_connections: usize,
    /// Frame limits.
    pub limits: Limits,
    /// TLS: when set, every connection must complete a TLS handshake (within `hello_timeout`)
    /// before its HELLO.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            token: None,
            max_batch: 32,
            max_wait: Duration::from_millis(2),
            batching: true,
            hello_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: 4096,
            limits: Limits::default(),
            tls: None,
        }
    }
}

/// Counters for the metrics endpoint.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests answered with a result.
    pub requests: AtomicU64,
    /// Requests or connections answered with an error.
    pub errors: AtomicU64,
    /// Batches run.
    pub batches: AtomicU64,
    /// Requests over all batches (mean batch size = this / batches).
    pub batched_requests: AtomicU64,
    /// Microseconds requests waited in the queue, summed.
    pub queue_us: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
}

impl Metrics {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "# TYPE edgecut_requests_total counter\nedgecut_requests_total {}\n\
             # TYPE edgecut_errors_total counter\nedgecut_errors_total {}\n\
             # TYPE edgecut_batches_total counter\nedgecut_batches_total {}\n\
             # TYPE edgecut_batched_requests_total counter\nedgecut_batched_requests_total {}\n\
             # TYPE edgecut_queue_seconds_total counter\nedgecut_queue_seconds_total {:.6}\n\
             # TYPE edgecut_connections_total counter\nedgecut_connections_total {}\n",
            g(&self.requests),
            g(&self.errors),
            g(&self.batches),
            g(&self.batched_requests),
            g(&self.queue_us) as f64 / 1e6,
            g(&self.connections)
        )
    }
}

struct Job {
    req: Infer,
    queued: Instant,
    reply: oneshot::Sender<Result<InferResult, BadRequest>>,
}

/// Compares without an early exit, so the time taken does not tell how much of a token matched.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | ((a.len() ^ b.len()) >> 8) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

enum ReadError {
    Closed,
    Timeout,
    Wire(WireError),
}

/// Reads one frame: the header within `first` (idle or hello time), the rest within `rest`.
async fn read_frame<S: AsyncRead + Unpin>(
    s: &mut S,
    limits: &Limits,
    first: Duration,
    rest: Duration,
) -> Result<Frame, ReadError> {
    let mut h = [0u8; HEADER_BYTES];
    match tokio::time::timeout(first, s.read(&mut h[..1])).await {
        Err(_) => return Err(ReadError::Timeout),
        Ok(Ok(0)) | Ok(Err(_)) => return Err(ReadError::Closed),
        Ok(Ok(_)) => {}
    }
    let body = async {
        s.read_exact(&mut h[1..])
            .await
            .map_err(|_| ReadError::Closed)?;
        let (ty, len) = parse_header(&h, limits).map_err(ReadError::Wire)?;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload)
            .await
            .map_err(|_| ReadError::Closed)?;
        decode_payload(ty, &payload, limits).map_err(ReadError::Wire)
    };
    match tokio::time::timeout(rest, body).await {
        Err(_) => Err(ReadError::Timeout),
        Ok(r) => r,
    }
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, f: &Frame) -> bool {
    match encode_frame(f) {
        Ok(b) => s.write_all(&b).await.is_ok(),
        Err(_) => false,
    }
}

/// Why a request was refused, in the words its ERROR frame carries to the client.
#[derive(Clone, Debug)]
struct BadRequest(String);

impl From<edgecut::Error> for BadRequest {
    fn from(e: edgecut::Error) -> BadRequest {
        BadRequest(e.to_string())
    }
}

fn error(request_id: u64, code: ErrorCode, message: impl Into<String>) -> Frame {
    Frame::Error {
        request_id,
        code,
        message: message.into(),
    }
}

/// Counts a refused connection and tells the client why (connection-level: request id 0).
async fn reject<S: AsyncWrite + Unpin>(s: &mut S, m: &Metrics, code: ErrorCode, why: String) {
    m.errors.fetch_add(1, Ordering::Relaxed);
    send(s, &error(0, code, why)).await;
}

/// One connection: HELLO, then requests until it closes, errs or times out.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, ctx: Arc<Ctx>) {
    let cfg = &ctx.cfg;
    let m = &ctx.metrics;
    let hello = match read_frame(&mut s, &cfg.limits, cfg.hello_timeout, cfg.frame_timeout).await {
        Ok(Frame::Hello(h)) => h,
        Ok(_) => {
            let why = "the first frame must be HELLO".into();
            return reject(&mut s, m, ErrorCode::BadFrame, why).await;
        }
        Err(ReadError::Wire(e)) => {
            return reject(&mut s, m, ErrorCode::BadFrame, e.to_string()).await;
        }
        Err(_) => return,
    };
    if hello.model_id != ctx.model_id {
        let why = "the server runs another model".into();
        return reject(&mut s, m, ErrorCode::WrongModel, why).await;
    }
    if let Some(t) = &cfg.token {
        if !same_token(t, &hello.token) {
            let why = "missing or wrong token".into();
            return reject(&mut s, m, ErrorCode::Unauthorized, why).await;
        }
    }
    let ok = HelloOk {
        stages: ctx.stages as u16,
        max_batch: cfg.max_batch.min(u16::MAX as usize) as u16,
    };
    if !send(&mut s, &Frame::HelloOk(ok)).await {
        return;
    }
    loop {
        let req = match read_frame(&mut s, &cfg.limits, cfg.idle_timeout, cfg.frame_timeout).await {
            Ok(Frame::Infer(r)) => r,
            Ok(_) => {
                return reject(&mut s, m, ErrorCode::BadFrame, "expected INFER".into()).await;
            }
            Err(ReadError::Wire(e)) => {
                return reject(&mut s, m, ErrorCode::BadFrame, e.to_string()).await;
            }
            Err(ReadError::Closed) | Err(ReadError::Timeout) => return,
        };
        let id = req.request_id;
        let received = Instant::now();
        let (tx, rx) = oneshot::channel();
        let job = Job {
            req,
            queued: received,
            reply: tx,
        };
        let answer = match ctx.jobs.try_send(job) {
            Ok(()) => match rx.await {
                Ok(Ok(mut r)) => {
                    r.server_us = u32::try_from(received.elapsed().as_micros()).unwrap_or(u32::MAX);
                    Frame::Result(r)
                }
                Ok(Err(BadRequest(msg))) => error(id, ErrorCode::BadRequest, msg),
                Err(_) => error(id, ErrorCode::Unavailable, "the server is shutting down"),
            },
            Err(_) => error(
                id,
                ErrorCode::Unavailable,
                "the server is overloaded; run locally",
            ),
        };
        match &answer {
            Frame::Result(_) => m.requests.fetch_add(1, Ordering::Relaxed),
            _ => m.errors.fetch_add(1, Ordering::Relaxed),
        };
        if !send(&mut s, &answer).await {
            return;
        }
    }
}

struct Ctx {
    cfg: ServeConfig,
    model_id: [u8; 32],
    stages: usize,
    metrics: Arc<Metrics>,
    jobs: mpsc::Sender<Job>,
}

/// Takes jobs, groups those with the same cut, length and width (up to `max_batch` texts,
/// waiting at most `max_wait` for more), runs each group on a blocking thread and answers.
async fn batcher(
    session: Arc<Session>,
    mut rx: mpsc::Receiver<Job>,
    cfg: ServeConfig,
    metrics: Arc<Metrics>,
) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        if cfg.batching {
            let deadline = tokio::time::Instant::now() + cfg.max_wait;
            let texts = |j: &[Job]| {
                j.iter()
                    .map(|j| j.req.activation.batch as usize)
                    .sum::<usize>()
            };
            while texts(&jobs) < cfg.max_batch {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(j)) => jobs.push(j),
                    _ => break,
                }
            }
        }
        // Groups of compatible requests.
        let mut groups: Vec<Vec<Job>> = Vec::new();
        for j in jobs {
            let key = |r: &Infer| (r.cut, r.activation.seq, r.activation.width);
            match groups.iter_mut().find(|g| key(&g[0].req) == key(&j.req)) {
                Some(g) => g.push(j),
                None => groups.push(vec![j]),
            }
        }
        for group in groups {
            let s = session.clone();
            let m = metrics.clone();
            // Runs one group; waiting for it keeps one model run at a time (the model's own
            // threads use the cores).
            let _ = tokio::task::spawn_blocking(move || run_group(&s, group, &m)).await;
        }
    }
}

fn run_group(s: &Session, group: Vec<Job>, m: &Metrics) {
    let now = Instant::now();
    for j in &group {
        m.queue_us.fetch_add(
            now.duration_since(j.queued).as_micros() as u64,
            Ordering::Relaxed,
        );
    }
    m.batches.fetch_add(1, Ordering::Relaxed);
    m.batched_requests
        .fetch_add(group.len() as u64, Ordering::Relaxed);
    // Each request is checked and decoded on its own (a bad one fails alone), then the good
    // ones' activations are appended into one batch: nothing is re-encoded.
    let mut accepted = Vec::with_capacity(group.len());
    let mut jobs = Vec::with_capacity(group.len());
    for j in group {
        match s.accept(&j.req) {
            Ok(input) => {
                accepted.push(input);
                jobs.push(j);
            }
            Err(e) => {
                let _ = j.reply.send(Err(BadRequest::from(e)));
            }
        }
    }
    if jobs.is_empty() {
        return;
    }
    let dim = s.embedding_dim();
    let result = edgecut::split::ServerInput::merge(accepted)
        .and_then(|input| s.run_accepted(input))
        .map_err(BadRequest::from);
    match result {
        Ok(values) => {
            let mut row = 0;
            for j in jobs {
                let n = j.req.activation.batch as usize;
                let r = InferResult {
                    request_id: j.req.request_id,
                    rows: n as u16,
                    cols: dim as u32,
                    server_us: 0,
                    values: values[row * dim..(row + n) * dim].to_vec(),
                };
                row += n;
                let _ = j.reply.send(Ok(r));
            }
        }
        Err(_) if jobs.len() > 1 => {
            // One request must not fail the others: run them one by one.
            for j in jobs {
                let r = s.run_server_part(&j.req).map_err(BadRequest::from);
                let _ = j.reply.send(r);
            }
        }
        Err(e) => {
            for j in jobs {
                let _ = j.reply.send(Err(e.clone()));
            }
        }
    }
}

/// Serves `session` on `listener` until `shutdown` completes; then stops accepting, lets the
/// requests in flight finish (up to 10 s) and returns.
pub async fn serve(
    session: Arc<Session>,
    model_id: [u8; 32],
    listener: TcpListener,
    cfg: ServeConfig,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel(1024);
    let stages = session.stage_count();
    let batch_task = tokio::spawn(batcher(session, rx, cfg.clone(), metrics.clone()));
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let ctx = Arc::new(Ctx {
        cfg,
        model_id,
        stages,
        metrics,
        jobs: tx,
    });
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            acc = listener.accept() => {
                let Ok((s, _)) = acc else {
                    // Out of file descriptors or a transient error: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    // Over the limit: refuse at once.
                    drop(s);
                    continue;
                };
                let _ = s.set_nodelay(true);
                ctx.metrics.connections.fetch_add(1, Ordering::Relaxed);
                let c = ctx.clone();
                let tls = c.cfg.tls.clone().map(tokio_rustls::TlsAcceptor::from);
                conns.spawn(async move {
                    match tls {
                        None => connection(s, c).await,
                        Some(acceptor) => {
                            let hs = tokio::time::timeout(c.cfg.hello_timeout, acceptor.accept(s));
                            match hs.await {
                                Ok(Ok(t)) => connection(t, c).await,
                                // A failed or stalled handshake (plain frames included) ends
                                // only this connection.
                                _ => {
                                    c.metrics.errors.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    drop(permit);
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    // Connections waiting for a request are dropped when their reads time out; give the ones
    // with a request in flight time to answer.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
    drop(ctx);
    let _ = batch_task.await;
    Ok(())
}

/// Serves the metrics in Prometheus text format to every HTTP request on `listener`.
pub async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
            let body = m.render();
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        });
    }
}
