//! The one queue in front of the model: requests of every connection, checked and decoded
//! already, served fairly (start-time fair queueing over connections, costs in tokens: each
//! connection's next request starts where its previous one's cost ended, or at the current
//! virtual time if it was idle) and
//! batched when they share a cut and a length. A request whose client has gone is dropped
//! unrun; at the end of a drain the queue is dropped (its clients are told).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use edgecut::split::ServerInput;
use edgecut::Session;
use edgecut_wire::InferResult;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::ServeConfig;
use crate::metrics::Metrics;
use crate::serve::Phase;

/// Why a request was refused, in the words its ERROR frame carries to the client.
#[derive(Clone, Debug)]
pub(crate) struct BadRequest(pub(crate) String);

impl From<edgecut::Error> for BadRequest {
    fn from(e: edgecut::Error) -> BadRequest {
        BadRequest(e.to_string())
    }
}

/// A connection's place in a fair queue (this one, and the decoder's).
#[derive(Default)]
pub(crate) struct Conn {
    /// The virtual time at which this connection's work so far ends (in the queue's cost:
    /// tokens here, rows for the decoder).
    pub(crate) finish: AtomicU64,
}

/// A checked, decoded request waiting for the model.
pub(crate) struct Job {
    pub(crate) input: ServerInput,
    pub(crate) ticket: Ticket,
}

/// What answers a job once its input has gone into a batch.
pub(crate) struct Ticket {
    pub(crate) request_id: u64,
    /// Texts of the request: rows of its result.
    pub(crate) rows: usize,
    /// Tokens it asks the model to run (texts x padded length): its cost in the fair queue.
    pub(crate) cost: u64,
    pub(crate) queued: Instant,
    pub(crate) conn: Arc<Conn>,
    pub(crate) reply: oneshot::Sender<Result<InferResult, BadRequest>>,
    /// Its share of the request memory, given back when it is answered or dropped.
    pub(crate) _memory: crate::connection::Held,
}

/// Takes jobs and runs them, one group at a time, until the channel closes or the phase
/// reaches [`Phase::Stopping`].
pub(crate) async fn batcher(
    session: Session,
    mut rx: mpsc::Receiver<Job>,
    cfg: ServeConfig,
    metrics: Arc<Metrics>,
    mut phase: watch::Receiver<Phase>,
) {
    // (start tag, job); the smallest tag runs first.
    let mut pending: Vec<(u64, Job)> = Vec::new();
    let mut vtime = 0u64;
    let admit = |pending: &mut Vec<(u64, Job)>, vtime: u64, j: Job| {
        let t = &j.ticket;
        let tag = vtime.max(t.conn.finish.load(Ordering::Relaxed));
        t.conn.finish.store(tag + t.cost, Ordering::Relaxed);
        pending.push((tag, j));
    };
    loop {
        if pending.is_empty() {
            tokio::select! {
                j = rx.recv() => match j {
                    Some(j) => admit(&mut pending, vtime, j),
                    None => break,
                },
                _ = phase.wait_for(|p| *p >= Phase::Stopping) => break,
            }
            if cfg.batching {
                let deadline = tokio::time::Instant::now() + cfg.max_wait;
                while texts(&pending) < cfg.max_batch {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(j)) => admit(&mut pending, vtime, j),
                        _ => break,
                    }
                }
            }
        }
        while let Ok(j) = rx.try_recv() {
            admit(&mut pending, vtime, j);
        }
        if *phase.borrow() >= Phase::Stopping {
            break;
        }
        let before = pending.len();
        pending.retain(|(_, j)| !j.ticket.reply.is_closed());
        let gone = before - pending.len();
        metrics.cancelled.fetch_add(gone as u64, Ordering::Relaxed);
        metrics.queued.fetch_sub(gone as i64, Ordering::Relaxed);
        if pending.is_empty() {
            continue;
        }
        // The smallest start tag; among equal tags (the round in progress, which a newly
        // active connection joins) the cheapest first: a light request then waits for at most
        // the group running now, however many heavy connections are queued.
        pending.sort_by_key(|(tag, j)| (*tag, j.ticket.cost, j.ticket.queued));
        vtime = pending[0].0;
        let group = take_group(&mut pending, cfg.max_batch);
        let (s, m) = (session.clone(), metrics.clone());
        // One group at a time: the model's own threads use the cores.
        let _ = tokio::task::spawn_blocking(move || run_group(&s, group, &m)).await;
    }
    // Dropped unrun: each client's connection answers UNAVAILABLE.
    metrics
        .queued
        .fetch_sub(pending.len() as i64, Ordering::Relaxed);
}

fn texts(pending: &[(u64, Job)]) -> usize {
    pending.iter().map(|(_, j)| j.input.texts()).sum()
}

/// The first job and, in queue order, those of its shape that fit in `max_batch` texts.
fn take_group(pending: &mut Vec<(u64, Job)>, max_batch: usize) -> Vec<Job> {
    let shape = pending[0].1.input.shape();
    let mut texts = 0;
    let mut group = Vec::new();
    let mut rest = Vec::with_capacity(pending.len());
    for (tag, j) in pending.drain(..) {
        let t = j.input.texts();
        if j.input.shape() == shape && (group.is_empty() || texts + t <= max_batch) {
            texts += t;
            group.push(j);
        } else {
            rest.push((tag, j));
        }
    }
    *pending = rest;
    group
}

fn run_group(s: &Session, group: Vec<Job>, m: &Metrics) {
    let now = Instant::now();
    for j in &group {
        let waited = now.duration_since(j.ticket.queued).as_micros() as u64;
        m.queue_us.fetch_add(waited, Ordering::Relaxed);
    }
    m.batches.fetch_add(1, Ordering::Relaxed);
    m.batched_requests
        .fetch_add(group.len() as u64, Ordering::Relaxed);
    let (inputs, jobs): (Vec<ServerInput>, Vec<Ticket>) =
        group.into_iter().map(|j| (j.input, j.ticket)).unzip();
    let dim = s.embedding_dim();
    let result = ServerInput::merge(inputs).and_then(|input| s.run_accepted(input));
    m.queued.fetch_sub(jobs.len() as i64, Ordering::Relaxed);
    let values = match result {
        Ok(v) => v,
        Err(e) => {
            // Inputs were checked one by one before they were queued: what fails here is the
            // server's, and fails the whole group.
            let e = BadRequest::from(e);
            for j in jobs {
                let _ = j.reply.send(Err(e.clone()));
            }
            return;
        }
    };
    let mut row = 0;
    for j in jobs {
        let n = j.rows;
        let v = &values[row * dim..(row + n) * dim];
        row += n;
        // Rows are independent (per-row activation scales, attention within a text), so one
        // request's overflow cannot reach another's; it is refused rather than sent as NaN.
        let r = if v.iter().all(|x| x.is_finite()) {
            Ok(InferResult {
                request_id: j.request_id,
                rows: n as u16,
                cols: dim as u32,
                server_us: 0,
                values: v.to_vec(),
            })
        } else {
            Err(BadRequest(
                "the result is not finite: the activation overflowed in the server's stages \
                 (values too large for f32 arithmetic)"
                    .into(),
            ))
        };
        let _ = j.reply.send(r);
    }
}
