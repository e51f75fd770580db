//! Split decoding on the server: a connection's decoder sessions (OPEN, STEP, CLOSE), each a
//! [`ServerDecoder`] with its KV cache of the layers after the device's cut. Sessions are
//! bounded in number (over all connections) and in context, evicted when idle, and freed with
//! their connection; their KV bytes show in `edgecut_kv_bytes`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use edgecut::split::ServerDecoder;
use edgecut::{Llm, SamplingParams};
use edgecut_wire::{decode_values, ErrorCode, Frame, Next, Open, Opened, Step, NO_TOKEN};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::batcher::Conn;
use crate::connection::{error, gone, kib, End, Held, Link};
use crate::decode_batcher::StepJob;

use crate::metrics::Metrics;

/// One session: its half of the model, when it was last used, its slot among all sessions.
struct Session {
    dec: Option<ServerDecoder>,
    last: Instant,
    _slot: OwnedSemaphorePermit,
    _address: Option<AddressSlot>,
    kv: i64,
}

/// What all connections share for decoding.
pub(crate) struct Decoding {
    pub(crate) llm: Llm,
    /// Sessions over all connections.
    pub(crate) slots: Arc<Semaphore>,
    /// The decode batcher's queue.
    pub(crate) jobs: mpsc::Sender<StepJob>,
    pub(crate) max_context: usize,
    pub(crate) idle: std::time::Duration,
    /// Sessions one connection may hold, and, where no token is asked, one address.
    pub(crate) per_client: usize,
    /// Sessions by address, counted where no token is asked (`None` otherwise).
    pub(crate) by_address: Option<Arc<Mutex<HashMap<IpAddr, usize>>>>,
}

/// A session counted against its address while it lives.
struct AddressSlot {
    peer: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl AddressSlot {
    /// A place for one more session from `peer`, or `None` when it holds `most` already.
    fn take(
        counts: &Arc<Mutex<HashMap<IpAddr, usize>>>,
        peer: IpAddr,
        most: usize,
    ) -> Option<Self> {
        let mut m = counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(peer).or_insert(0);
        if *n >= most {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            peer,
            counts: counts.clone(),
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut m = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.peer);
            }
        }
    }
}

/// A connection's sessions.
pub(crate) struct Sessions {
    map: HashMap<u64, Session>,
    next_id: u64,
    metrics: Arc<Metrics>,
    /// The connection's client address.
    peer: IpAddr,
    /// The connection's place in the decoder's fair queue, over all its sessions.
    conn: Arc<Conn>,
}

impl Drop for Sessions {
    fn drop(&mut self) {
        for (_, s) in self.map.drain() {
            self.metrics.sessions.fetch_sub(1, Ordering::Relaxed);
            self.metrics.kv_bytes.fetch_sub(s.kv, Ordering::Relaxed);
        }
    }
}

fn refuse(session: u64, code: ErrorCode, why: impl Into<String>) -> Frame {
    error(session, code, why)
}

impl Sessions {
    pub(crate) fn new(metrics: Arc<Metrics>, peer: IpAddr) -> Sessions {
        Sessions {
            map: HashMap::new(),
            next_id: 1,
            metrics,
            peer,
            conn: Arc::default(),
        }
    }

    /// Whether the connection holds any session.
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn remove(&mut self, id: u64) -> bool {
        match self.map.remove(&id) {
            Some(s) => {
                self.metrics.sessions.fetch_sub(1, Ordering::Relaxed);
                self.metrics.kv_bytes.fetch_sub(s.kv, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Drops the sessions unused for longer than `idle` (all of them with `idle` zero).
    pub(crate) fn evict(&mut self, idle: std::time::Duration) {
        let old: Vec<u64> = self
            .map
            .iter()
            .filter(|(_, s)| s.last.elapsed() >= idle)
            .map(|(&id, _)| id)
            .collect();
        for id in old {
            self.remove(id);
            self.metrics.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// OPEN: a new session, or why not.
    pub(crate) fn open(&mut self, d: &Decoding, o: &Open) -> Frame {
        let context = o.context as usize;
        if context > d.max_context {
            let why = format!(
                "a context of {context} positions; this server gives a session at most {}",
                d.max_context
            );
            return refuse(0, ErrorCode::BadRequest, why);
        }
        if self.map.len() >= d.per_client {
            let why = format!(
                "this connection holds {} sessions, as many as one client may; close one or \
                 run locally",
                self.map.len()
            );
            return refuse(0, ErrorCode::Unavailable, why);
        }
        let address = match &d.by_address {
            None => None,
            Some(counts) => match AddressSlot::take(counts, self.peer, d.per_client) {
                Some(a) => Some(a),
                None => {
                    let why = format!(
                        "{} holds {} sessions, as many as one address may without a token; \
                         close one or run locally",
                        self.peer, d.per_client
                    );
                    return refuse(0, ErrorCode::Unavailable, why);
                }
            },
        };
        let Ok(slot) = d.slots.clone().try_acquire_owned() else {
            let why = "the server has as many sessions as it allows; run locally";
            return refuse(0, ErrorCode::Unavailable, why);
        };
        let sampling = SamplingParams {
            temperature: o.temperature,
            top_k: o.top_k as usize,
            top_p: o.top_p,
            seed: o.seed,
            ..SamplingParams::default()
        };
        // Top logits (the device samples, with a repetition penalty), or a token sampled here.
        let opened = ServerDecoder::open(&d.llm, o.cut as usize, context, sampling);
        let dec = match opened.map(|dec| match o.top_logits {
            0 => dec,
            n => dec.with_top_logits(n as usize),
        }) {
            Ok(dec) => dec,
            Err(e) => return refuse(0, ErrorCode::BadRequest, e.to_string()),
        };
        let id = self.next_id;
        self.next_id += 1;
        let kv = dec.kv_bytes() as i64;
        self.metrics.sessions.fetch_add(1, Ordering::Relaxed);
        self.metrics.kv_bytes.fetch_add(kv, Ordering::Relaxed);
        self.map.insert(
            id,
            Session {
                dec: Some(dec),
                last: Instant::now(),
                _slot: slot,
                _address: address,
                kv,
            },
        );
        Frame::Opened(Opened {
            session: id,
            context: context as u32,
        })
    }

    /// CLOSE: frees the session (no answer).
    pub(crate) fn close(&mut self, id: u64) {
        self.remove(id);
    }

    /// STEP: runs the rows and answers NEXT, or why not (the session is kept when the step
    /// was refused before it ran); `None` when the client went away meanwhile (`gone`
    /// resolved): its step is taken out of the queue, its session dropped.
    pub(crate) async fn step(
        &mut self,
        d: &Decoding,
        s: Step,
        gone: impl std::future::Future<Output = ()>,
    ) -> Option<Frame> {
        let id = s.session;
        let h = d.llm.hidden_size();
        let Some(sess) = self.map.get_mut(&id) else {
            return Some(refuse(
                id,
                ErrorCode::BadRequest,
                format!("no session {id} on this connection"),
            ));
        };
        let (position, rows) = (s.position as usize, s.rows as usize);
        if s.width as usize != h {
            let why = format!("width {}; the model's hidden size is {h}", s.width);
            return Some(refuse(id, ErrorCode::BadRequest, why));
        }
        let Some(values) = decode_values(&s.data, s.encoding, rows * h) else {
            let why = "the data does not match its shape";
            return Some(refuse(id, ErrorCode::BadRequest, why));
        };
        let Some(dec) = sess.dec.take() else {
            return Some(refuse(id, ErrorCode::Internal, "the session was lost"));
        };
        // Positions, context and values are the session's own checks (ServerDecoder), made on
        // the whole step before any piece of it runs; a refused step leaves the session as it
        // was.
        if let Err(e) = dec.check_step(position, &values) {
            sess.dec = Some(dec);
            return Some(refuse(id, ErrorCode::BadRequest, e.to_string()));
        }
        let t = Instant::now();
        let (tx, rx) = oneshot::channel();
        let job = StepJob {
            dec,
            position,
            hidden: values,
            sample: s.sample,
            conn: self.conn.clone(),
            reply: tx,
        };
        if d.jobs.send(job).await.is_err() {
            self.remove(id);
            return Some(refuse(
                id,
                ErrorCode::Unavailable,
                "the server is shutting down",
            ));
        }
        tokio::pin!(gone);
        let answered = tokio::select! {
            r = rx => r,
            // The client is gone: dropping the receiver takes the step out of the queue.
            _ = &mut gone => {
                self.remove(id);
                return None;
            }
        };
        let Ok((mut dec, out)) = answered else {
            // Dropped unfinished: the drain ended (or the model run failed).
            self.remove(id);
            let why = "the server is shutting down; the step was not finished";
            return Some(refuse(id, ErrorCode::Unavailable, why));
        };
        let top = dec.take_top().unwrap_or_default();
        let held = dec.held() as u32;
        if let Some(sess) = self.map.get_mut(&id) {
            sess.dec = Some(dec);
            sess.last = Instant::now();
        }
        let m = &self.metrics;
        m.decode_steps.fetch_add(1, Ordering::Relaxed);
        m.decode_rows.fetch_add(rows as u64, Ordering::Relaxed);
        Some(match out {
            Ok(token) => Frame::Next(Next {
                session: id,
                held,
                token: token.unwrap_or(NO_TOKEN),
                server_us: u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX),
                top,
            }),
            Err(e) => refuse(id, ErrorCode::BadRequest, e.to_string()),
        })
    }
}

impl<S: AsyncRead + AsyncWrite> Link<S> {
    /// A decoder server's connection after its HELLO: OPEN, STEP and CLOSE frames until it
    /// ends. Its sessions end with it; a connection silent for the session idle time loses
    /// them (and, silent for the idle timeout, is closed).
    pub(crate) async fn decoder_requests(&mut self) -> End {
        let ctx = self.ctx.clone();
        let cfg = &ctx.cfg;
        let d = ctx.decoding.as_ref().expect("a decoder server");
        let mut sessions = Sessions::new(ctx.metrics.clone(), self.peer);
        loop {
            let wait = if sessions.is_empty() {
                cfg.idle_timeout
            } else {
                d.idle.min(cfg.idle_timeout)
            };
            let (ty, len, deadline) = match self.header(wait).await {
                Ok(h) => h,
                Err(End::Timeout) if !sessions.is_empty() => {
                    sessions.evict(std::time::Duration::ZERO);
                    continue;
                }
                Err(e) => return e,
            };
            sessions.evict(d.idle);
            let h = d.llm.hidden_size() as u64;
            let max_step = edgecut_wire::STEP_PREFIX_BYTES as u64
                + edgecut_wire::MAX_STEP_ROWS.min(d.max_context as u16) as u64 * h * 4;
            let fits = match ty {
                6 => len == OPEN_BYTES,
                8 => (len as u64) <= max_step,
                10 => len == 8,
                _ => {
                    let why = "expected OPEN, STEP or CLOSE (this server runs a decoder)";
                    return End::Refuse(ErrorCode::BadFrame, why.into());
                }
            };
            if !fits {
                let why = format!("a frame of type {ty} and {len} bytes does not fit this model");
                return End::Refuse(ErrorCode::BadFrame, why);
            }
            // A step's frame and its f32 values are charged to the request memory.
            let need = len as u64 * 5;
            let permit = match tokio::time::timeout_at(
                deadline,
                ctx.memory.clone().acquire_many_owned(kib(need)),
            )
            .await
            {
                Ok(Ok(p)) => Held::new(p, ctx.metrics.clone()),
                _ => {
                    ctx.metrics.over_memory.fetch_add(1, Ordering::Relaxed);
                    let why = "the server's request memory is full; run locally";
                    return End::Refuse(ErrorCode::Unavailable, why.into());
                }
            };
            let mut payload = Vec::new();
            if let Err(e) = self.read_into(&mut payload, len as u64, deadline).await {
                return e;
            }
            let frame = match edgecut_wire::decode_payload(ty, &payload, &cfg.limits) {
                Ok(f) => f,
                Err(e) => return End::Refuse(ErrorCode::BadFrame, e.to_string()),
            };
            drop(payload);
            let answer = match frame {
                Frame::Open(o) => sessions.open(d, &o),
                Frame::Step(st) => {
                    let gone = gone(&mut self.rd, &mut self.early);
                    match sessions.step(d, st, gone).await {
                        Some(f) => f,
                        None => return End::Gone,
                    }
                }
                Frame::Close { session } => {
                    sessions.close(session);
                    continue;
                }
                _ => unreachable!("types 6, 8 and 10 decode as OPEN, STEP and CLOSE"),
            };
            drop(permit);
            let m = &ctx.metrics;
            match &answer {
                Frame::Error { .. } => m.errors.fetch_add(1, Ordering::Relaxed),
                _ => m.requests.fetch_add(1, Ordering::Relaxed),
            };
            if !self.send(&answer).await {
                return End::Gone;
            }
        }
    }
}

/// Bytes of an OPEN payload.
const OPEN_BYTES: usize = 2 + 4 + 1 + 2 + 4 + 4 + 4 + 8;
