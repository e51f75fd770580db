//! One client connection: HELLO, then requests one at a time until it closes, errs, times out
//! or the server drains. What a frame may be depends on the state: before authentication only a
//! HELLO of at most 547 bytes; after it only INFER, whose fixed fields are checked against the
//! model and the limits before the rest is read, whose bytes are counted against the request
//! memory before they are received, and whose activation is decoded and checked before it is
//! queued. While its request waits, the connection watches the socket: a client that goes
//! takes its request out of the queue. Every read and every write has a deadline.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgecut::Session;
use edgecut_wire::{
    decode_payload, encode_frame, parse_header, parse_infer_prefix, ErrorCode, Frame, HelloOk,
    HEADER_BYTES, INFER_PREFIX_BYTES, MAX_HELLO_BYTES,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout_at;

use crate::batcher::{BadRequest, Conn, Job, Ticket};
use crate::config::ServeConfig;
use crate::guard::{same_token, FailedHellos};
use crate::metrics::Metrics;
use crate::serve::Phase;

/// What every connection shares.
pub(crate) struct Ctx {
    pub(crate) cfg: ServeConfig,
    /// The encoder served (None: a decoder).
    pub(crate) session: Option<Session>,
    /// The decoder served and its sessions' limits (None: an encoder).
    pub(crate) decoding: Option<crate::sessions::Decoding>,
    pub(crate) model_id: [u8; 32],
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) jobs: mpsc::Sender<Job>,
    /// The request memory, in KiB.
    pub(crate) memory: Arc<Semaphore>,
    pub(crate) hellos: FailedHellos,
    pub(crate) phase: watch::Receiver<Phase>,
}

/// Why a connection ends (or a request is refused).
pub(crate) enum End {
    /// The client closed or the socket failed: nothing more to say.
    Gone,
    /// A deadline passed (counted; nothing more to say).
    Timeout,
    /// The server tells the client why, then closes.
    Refuse(ErrorCode, String),
}

/// A request past its checks, its memory held, the rest of its frame still to be read.
struct Admitted {
    request_id: u64,
    /// Tokens: its cost in the fair queue.
    cost: u64,
    /// Payload bytes still to be read.
    left: u64,
    deadline: tokio::time::Instant,
    memory: Held,
}

/// A request's share of the request memory; the `edgecut_request_bytes` gauge shows it for as
/// long as it is held (until the request is answered or dropped).
pub(crate) struct Held {
    _permit: OwnedSemaphorePermit,
    bytes: i64,
    metrics: Arc<Metrics>,
}

impl Held {
    pub(crate) fn new(permit: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> Held {
        let bytes = permit.num_permits() as i64 * 1024;
        metrics.request_bytes.fetch_add(bytes, Ordering::Relaxed);
        Held {
            _permit: permit,
            bytes,
            metrics,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.metrics
            .request_bytes
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A request refused with the connection kept: the rest of its frame is read and dropped.
struct Skip {
    left: u64,
    request_id: u64,
    code: ErrorCode,
    why: String,
}

pub(crate) struct Link<S> {
    pub(crate) rd: ReadHalf<S>,
    pub(crate) wr: WriteHalf<S>,
    /// A byte read while watching for the client's departure: the start of its next frame.
    pub(crate) early: Option<u8>,
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) phase: watch::Receiver<Phase>,
    /// The client's address.
    pub(crate) peer: IpAddr,
}

pub(crate) fn kib(bytes: u64) -> u32 {
    bytes.div_ceil(1024).min(u32::MAX as u64) as u32
}

/// Serves one connection from `peer` to its end.
pub(crate) async fn connection<S: AsyncRead + AsyncWrite>(s: S, peer: IpAddr, ctx: Arc<Ctx>) {
    let (rd, wr) = tokio::io::split(s);
    let phase = ctx.phase.clone();
    let mut l = Link {
        rd,
        wr,
        early: None,
        ctx: ctx.clone(),
        phase,
        peer,
    };
    let m = &ctx.metrics;
    m.open_connections.fetch_add(1, Ordering::Relaxed);
    let end = match l.hello(peer).await {
        Ok(()) if ctx.decoding.is_some() => l.decoder_requests().await,
        Ok(()) => l.requests().await,
        Err(e) => e,
    };
    match end {
        End::Gone => {}
        End::Timeout => {
            m.read_timeouts.fetch_add(1, Ordering::Relaxed);
        }
        End::Refuse(code, why) => {
            m.errors.fetch_add(1, Ordering::Relaxed);
            l.send(&error(0, code, why)).await;
        }
    }
    m.open_connections.fetch_sub(1, Ordering::Relaxed);
}

/// Resolves when the client goes (its end of the socket closes or fails), while its request
/// waits. A byte that arrives meanwhile is the start of its next frame: kept in `early`, and
/// the client being there, this never resolves.
pub(crate) async fn gone<R: AsyncRead + Unpin>(rd: &mut R, early: &mut Option<u8>) {
    if early.is_none() {
        let mut b = [0u8; 1];
        match rd.read(&mut b).await {
            Ok(0) | Err(_) => return,
            Ok(_) => *early = Some(b[0]),
        }
    }
    std::future::pending::<()>().await
}

pub(crate) fn error(request_id: u64, code: ErrorCode, message: impl Into<String>) -> Frame {
    Frame::Error {
        request_id,
        code,
        message: message.into(),
    }
}

pub(crate) fn shutting_down() -> End {
    End::Refuse(ErrorCode::Unavailable, "the server is shutting down".into())
}

impl<S: AsyncRead + AsyncWrite> Link<S> {
    /// Writes a frame within the write timeout; false when the client did not take it.
    pub(crate) async fn send(&mut self, f: &Frame) -> bool {
        let Ok(bytes) = encode_frame(f) else {
            return false;
        };
        let write = async {
            self.wr.write_all(&bytes).await?;
            self.wr.flush().await
        };
        match tokio::time::timeout(self.ctx.cfg.write_timeout, write).await {
            Ok(r) => r.is_ok(),
            Err(_) => {
                self.ctx
                    .metrics
                    .write_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Reads a frame header: its first byte within `wait` (ending early when the server
    /// drains), the rest by the returned frame deadline.
    pub(crate) async fn header(
        &mut self,
        wait: Duration,
    ) -> Result<(u8, usize, tokio::time::Instant), End> {
        let mut h = [0u8; HEADER_BYTES];
        match self.early.take() {
            Some(b) => h[0] = b,
            None => {
                let mut phase = self.phase.clone();
                tokio::select! {
                    r = tokio::time::timeout(wait, self.rd.read(&mut h[..1])) => match r {
                        Err(_) => return Err(End::Timeout),
                        Ok(Ok(0)) | Ok(Err(_)) => return Err(End::Gone),
                        Ok(Ok(_)) => {}
                    },
                    _ = phase.wait_for(|p| *p >= Phase::Draining) => return Err(shutting_down()),
                }
            }
        }
        let deadline = tokio::time::Instant::now() + self.ctx.cfg.frame_timeout;
        self.read_exact(&mut h[1..], deadline).await?;
        let (ty, len) = parse_header(&h, &self.ctx.cfg.limits)
            .map_err(|e| End::Refuse(ErrorCode::BadFrame, e.to_string()))?;
        Ok((ty, len, deadline))
    }

    async fn read_exact(
        &mut self,
        buf: &mut [u8],
        deadline: tokio::time::Instant,
    ) -> Result<(), End> {
        match timeout_at(deadline, self.rd.read_exact(buf)).await {
            Err(_) => Err(End::Timeout),
            Ok(Err(_)) => Err(End::Gone),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Appends `n` bytes to `buf`, growing it as they arrive (a client that announces more than
    /// it sends holds only what it sent).
    pub(crate) async fn read_into(
        &mut self,
        buf: &mut Vec<u8>,
        n: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(), End> {
        let want = buf.len() + n as usize;
        let mut src = (&mut self.rd).take(n);
        match timeout_at(deadline, src.read_to_end(buf)).await {
            Err(_) => Err(End::Timeout),
            Ok(Err(_)) => Err(End::Gone),
            Ok(Ok(_)) if buf.len() != want => Err(End::Gone),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Reads and drops `n` bytes (the rest of a refused request) without holding them.
    pub(crate) async fn discard(
        &mut self,
        n: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(), End> {
        let (mut src, mut sink) = ((&mut self.rd).take(n), tokio::io::sink());
        match timeout_at(deadline, tokio::io::copy(&mut src, &mut sink)).await {
            Err(_) => Err(End::Timeout),
            Ok(Ok(got)) if got == n => Ok(()),
            Ok(_) => Err(End::Gone),
        }
    }

    /// The HELLO: at most [`MAX_HELLO_BYTES`], the address's failure allowance checked first,
    /// then the token, then the model (so an unauthenticated client learns nothing of it).
    async fn hello(&mut self, peer: IpAddr) -> Result<(), End> {
        let ctx = self.ctx.clone();
        let cfg = &ctx.cfg;
        let (ty, len, deadline) = self.header(cfg.hello_timeout).await?;
        if ty != 1 {
            return Err(End::Refuse(
                ErrorCode::BadFrame,
                "the first frame must be HELLO".into(),
            ));
        }
        if len > MAX_HELLO_BYTES {
            let why = format!("a HELLO of {len} bytes; a HELLO has at most {MAX_HELLO_BYTES}");
            return Err(End::Refuse(ErrorCode::BadFrame, why));
        }
        let mut p = Vec::with_capacity(len);
        self.read_into(&mut p, len as u64, deadline).await?;
        let hello = match decode_payload(ty, &p, &cfg.limits) {
            Ok(Frame::Hello(h)) => h,
            Ok(_) => unreachable!("type 1 decodes as HELLO"),
            Err(e) => return Err(End::Refuse(ErrorCode::BadFrame, e.to_string())),
        };
        let m = &self.ctx.metrics;
        if let Some(t) = &cfg.token {
            if let Err(wait) = self.ctx.hellos.check(peer) {
                m.rate_limited.fetch_add(1, Ordering::Relaxed);
                let why = format!(
                    "too many failed HELLOs from this address; try again in {} s",
                    wait.as_secs() + 1
                );
                return Err(End::Refuse(ErrorCode::Unauthorized, why));
            }
            if !same_token(t, &hello.token) {
                self.ctx.hellos.failed(peer);
                m.unauthorized.fetch_add(1, Ordering::Relaxed);
                return Err(End::Refuse(
                    ErrorCode::Unauthorized,
                    "missing or wrong token".into(),
                ));
            }
        }
        if hello.model_id != self.ctx.model_id {
            let why = "the server runs another model".into();
            return Err(End::Refuse(ErrorCode::WrongModel, why));
        }
        let ok = HelloOk {
            stages: match (&self.ctx.session, &self.ctx.decoding) {
                (Some(s), _) => s.stage_count() as u16,
                (None, Some(d)) => d.llm.blocks() as u16,
                (None, None) => 0,
            },
            max_batch: cfg.max_batch.min(u16::MAX as usize) as u16,
        };
        if self.send(&Frame::HelloOk(ok)).await {
            Ok(())
        } else {
            Err(End::Gone)
        }
    }

    /// Requests, one at a time, until the connection ends.
    async fn requests(&mut self) -> End {
        let conn = Arc::new(Conn::default());
        loop {
            let answer = match self.request(&conn).await {
                Ok(f) => f,
                Err(Ok(skip)) => {
                    let deadline = tokio::time::Instant::now() + self.ctx.cfg.frame_timeout;
                    if let Err(e) = self.discard(skip.left, deadline).await {
                        return e;
                    }
                    error(skip.request_id, skip.code, skip.why)
                }
                Err(Err(end)) => return end,
            };
            let m = &self.ctx.metrics;
            match &answer {
                Frame::Result(_) => m.requests.fetch_add(1, Ordering::Relaxed),
                _ => m.errors.fetch_add(1, Ordering::Relaxed),
            };
            if !self.send(&answer).await {
                return End::Gone;
            }
        }
    }

    /// One request: read, checked, queued and answered (or refused).
    async fn request(&mut self, conn: &Arc<Conn>) -> Result<Frame, Result<Skip, End>> {
        let ctx = self.ctx.clone();
        let cfg = &ctx.cfg;
        let (ty, len, deadline) = self.header(cfg.idle_timeout).await.map_err(Err)?;
        if ty != 3 {
            return Err(Err(End::Refuse(
                ErrorCode::BadFrame,
                "expected INFER".into(),
            )));
        }
        if len < INFER_PREFIX_BYTES {
            let why = "an INFER shorter than its fixed fields".into();
            return Err(Err(End::Refuse(ErrorCode::BadFrame, why)));
        }
        let mut payload = Vec::with_capacity(INFER_PREFIX_BYTES);
        self.read_into(&mut payload, INFER_PREFIX_BYTES as u64, deadline)
            .await
            .map_err(Err)?;
        let shape = parse_infer_prefix(&payload, &cfg.limits)
            .map_err(|e| Err(End::Refuse(ErrorCode::BadFrame, e.to_string())))?;
        if shape.payload_bytes() != Some(len as u64) {
            let why = "infer: the frame's length does not match batch x seq x width".into();
            return Err(Err(End::Refuse(ErrorCode::BadFrame, why)));
        }
        let left = (len - INFER_PREFIX_BYTES) as u64;
        let skip = |code, why: String| {
            Err(Ok(Skip {
                left,
                request_id: shape.request_id,
                code,
                why,
            }))
        };
        if *self.phase.borrow() >= Phase::Draining {
            return skip(ErrorCode::Unavailable, "the server is shutting down".into());
        }
        let (texts, tokens) = (
            shape.batch as usize,
            shape.batch as u64 * shape.seq.max(1) as u64,
        );
        if texts > cfg.max_batch {
            let why = format!(
                "{texts} texts in one request; this server takes at most {} (HELLO_OK's max \
                 batch): send them in smaller requests",
                cfg.max_batch
            );
            return skip(ErrorCode::BadRequest, why);
        }
        if tokens > cfg.max_request_tokens as u64 {
            let why = format!(
                "{texts} texts of {} tokens ({tokens} tokens) in one request; this server runs \
                 at most {} tokens per request",
                shape.seq, cfg.max_request_tokens
            );
            return skip(ErrorCode::BadRequest, why);
        }
        let Some(session) = &ctx.session else {
            return Err(Err(End::Refuse(
                ErrorCode::BadFrame,
                "expected INFER".into(),
            )));
        };
        if let Err(e) = session.check_shape(&shape) {
            return skip(ErrorCode::BadRequest, e.to_string());
        }
        // The frame and its decoded activation (f32) are held until the request is answered.
        let need = len as u64 + 4 * shape.values();
        let total = cfg.max_request_memory as u64;
        if need > total {
            let why = format!(
                "the request needs {} MiB; this server holds at most {} MiB of requests",
                need >> 20,
                total >> 20
            );
            return skip(ErrorCode::BadRequest, why);
        }
        let permit =
            match timeout_at(deadline, ctx.memory.clone().acquire_many_owned(kib(need))).await {
                Ok(Ok(p)) => p,
                _ => {
                    ctx.metrics.over_memory.fetch_add(1, Ordering::Relaxed);
                    let why = "the server's request memory is full; run locally".into();
                    return skip(ErrorCode::Unavailable, why);
                }
            };
        let admitted = Admitted {
            request_id: shape.request_id,
            cost: tokens,
            left,
            deadline,
            memory: Held::new(permit, ctx.metrics.clone()),
        };
        self.run(conn, payload, admitted).await.map_err(Err)
    }

    /// Receives the rest of a request whose memory is held, decodes and checks it, queues it
    /// and waits for its answer while watching the client.
    async fn run(
        &mut self,
        conn: &Arc<Conn>,
        mut payload: Vec<u8>,
        a: Admitted,
    ) -> Result<Frame, End> {
        let Admitted {
            request_id,
            cost,
            left,
            deadline,
            memory,
        } = a;
        let ctx = self.ctx.clone();
        self.read_into(&mut payload, left, deadline).await?;
        let req = match decode_payload(3, &payload, &ctx.cfg.limits) {
            Ok(Frame::Infer(r)) => r,
            Ok(_) => unreachable!("type 3 decodes as INFER"),
            Err(e) => return Err(End::Refuse(ErrorCode::BadFrame, e.to_string())),
        };
        drop(payload);
        let session = ctx
            .session
            .clone()
            .expect("INFER reaches run only on an encoder server");
        // Decoding a large activation takes milliseconds: off the async workers. A small one
        // takes microseconds, less than the hop to a blocking thread.
        let accepted = if left < 1 << 20 {
            Ok(session.accept(&req))
        } else {
            let s = session;
            tokio::task::spawn_blocking(move || s.accept(&req)).await
        };
        let input = match accepted {
            Ok(Ok(i)) => i,
            Ok(Err(e)) => return Ok(error(request_id, ErrorCode::BadRequest, e.to_string())),
            Err(_) => return Ok(error(request_id, ErrorCode::Internal, "decoding failed")),
        };
        let received = Instant::now();
        let (tx, mut rx) = oneshot::channel();
        let job = Job {
            ticket: Ticket {
                request_id,
                rows: input.texts(),
                cost,
                queued: received,
                conn: conn.clone(),
                reply: tx,
                _memory: memory,
            },
            input,
        };
        // Counted before the batcher can take it, so that the gauge never goes below zero.
        ctx.metrics.queued.fetch_add(1, Ordering::Relaxed);
        if ctx.jobs.try_send(job).is_err() {
            ctx.metrics.queued.fetch_sub(1, Ordering::Relaxed);
            let why = "the server is overloaded; run locally";
            return Ok(error(request_id, ErrorCode::Unavailable, why));
        }
        let mut phase = self.phase.clone();
        let reply = tokio::select! {
            r = &mut rx => r,
            // The client is gone: dropping the receiver takes the job out of the queue.
            _ = gone(&mut self.rd, &mut self.early) => return Err(End::Gone),
            _ = phase.wait_for(|p| *p >= Phase::Stopping) => return Err(shutting_down()),
        };
        Ok(match reply {
            Ok(Ok(mut r)) => {
                r.server_us = u32::try_from(received.elapsed().as_micros()).unwrap_or(u32::MAX);
                Frame::Result(r)
            }
            Ok(Err(BadRequest(msg))) => error(request_id, ErrorCode::BadRequest, msg),
            Err(_) => error(
                request_id,
                ErrorCode::Unavailable,
                "the server is shutting down",
            ),
        })
    }
}
