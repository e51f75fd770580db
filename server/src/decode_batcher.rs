//! The decoder's one queue: the steps of every session, run together in batches (continuous
//! batching across devices: one batch reads each weight once). Every short step (a device's
//! token, a short turn of up to 16 rows) goes in each batch whole; a long step (a prompt of up
//! to 2,047 rows) is cut into pieces that share a small row budget (`decode_batch_rows`)
//! fairly between connections (start-time fair queueing, costs in rows), so a connection that
//! floods long steps gets its share and no more, and a device's token waits for at most one
//! short batch. A step whose connection has gone is dropped before its next piece; when the
//! drain is over, every waiting step is dropped (its connection tells its client) and the
//! batcher ends after the piece it is running.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use edgecut::split::{DecodeStep, ServerDecoder};
use tokio::sync::{mpsc, oneshot, watch};

use crate::batcher::Conn;
use crate::metrics::Metrics;
use crate::serve::Phase;

/// Rows of a step that runs whole in the next batch: a device's token, a few drafted ones, or
/// a short turn (a conversation's new message). Longer steps are prompts, run in pieces.
const TOKEN_STEP: usize = 16;
/// Rows of a long step's piece when its session is the only one (the model's prefill chunk).
const PREFILL_PIECE: usize = 256;

/// A session's step on its way to the decode batcher, the session with it.
pub(crate) struct StepJob {
    pub(crate) dec: ServerDecoder,
    pub(crate) position: usize,
    pub(crate) hidden: Vec<f32>,
    pub(crate) sample: bool,
    /// Its connection's place in the fair queue (costs in rows).
    pub(crate) conn: Arc<Conn>,
    pub(crate) reply: oneshot::Sender<(ServerDecoder, edgecut::Result<Option<u32>>)>,
}

/// A step part-way through.
struct Pending {
    job: StepJob,
    /// Rows of the step.
    rows: usize,
    /// Rows run so far.
    done: usize,
    /// Rows of it in the batch being built.
    take: usize,
}

/// Runs steps until the channel closes or the phase reaches [`Phase::Stopping`]. Nothing waits
/// for company: a lone step runs at once.
pub(crate) async fn decode_batcher(
    mut rx: mpsc::Receiver<StepJob>,
    metrics: Arc<Metrics>,
    hidden: usize,
    batch_rows: usize,
    mut phase: watch::Receiver<Phase>,
) {
    let batch_rows = batch_rows.max(1);
    let mut pending: Vec<Pending> = Vec::new();
    let mut vtime = 0u64;
    let admit = |pending: &mut Vec<Pending>, vtime: u64, job: StepJob| {
        // An idle connection starts at the current virtual time: no credit is banked.
        job.conn.finish.fetch_max(vtime, Ordering::Relaxed);
        pending.push(Pending {
            rows: job.hidden.len() / hidden,
            job,
            done: 0,
            take: 0,
        });
    };
    loop {
        if pending.is_empty() {
            tokio::select! {
                j = rx.recv() => match j {
                    Some(j) => admit(&mut pending, vtime, j),
                    None => return,
                },
                _ = phase.wait_for(|p| *p >= Phase::Stopping) => return,
            }
        }
        while let Ok(j) = rx.try_recv() {
            admit(&mut pending, vtime, j);
        }
        if *phase.borrow() >= Phase::Stopping {
            // Dropped replies: each connection tells its client the server is shutting down.
            return;
        }
        // The steps of connections that went away are not run further.
        let before = pending.len();
        pending.retain(|p| !p.job.reply.is_closed());
        metrics
            .decode_dropped
            .fetch_add((before - pending.len()) as u64, Ordering::Relaxed);
        if pending.is_empty() {
            continue;
        }
        // Fairest first: the connection given the fewest rows so far; on a tie the shorter
        // step (a device's token waits behind no prompt of equal share).
        pending.sort_by_key(|p| {
            let finish = p.job.conn.finish.load(Ordering::Relaxed);
            (finish, p.rows - p.done)
        });
        vtime = pending[0].job.conn.finish.load(Ordering::Relaxed);
        // A short step (a device's token, a short turn) goes in whole: every decoding session
        // advances each batch. Long steps share a small row budget, fairest first, so
        // that a token never waits behind a long piece (on CPU a piece of a few rows already
        // runs near the prefill rate per row); a session alone on the server gets pieces of
        // the prefill chunk.
        let alone = metrics.sessions.load(Ordering::Relaxed) <= 1;
        let mut left = if alone {
            batch_rows.max(PREFILL_PIECE)
        } else {
            batch_rows
        };
        for p in pending.iter_mut() {
            let rest = p.rows - p.done;
            p.take = if p.rows <= TOKEN_STEP {
                rest
            } else {
                let t = rest.min(left);
                left -= t;
                t
            };
            p.job
                .conn
                .finish
                .fetch_add(p.take as u64, Ordering::Relaxed);
        }
        let (mut batch, rest): (Vec<Pending>, Vec<Pending>) =
            pending.drain(..).partition(|p| p.take > 0);
        pending = rest;
        metrics.decode_batches.fetch_add(1, Ordering::Relaxed);
        metrics
            .decode_batched
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let ran = tokio::task::spawn_blocking(move || {
            let results = run(&mut batch, hidden);
            (batch, results)
        })
        .await;
        let Ok((batch, results)) = ran else {
            // The model run panicked: its steps are lost (their clients are told).
            continue;
        };
        for (mut p, r) in batch.into_iter().zip(results) {
            p.done += p.take;
            p.take = 0;
            match r {
                Ok(_) if p.done < p.rows => pending.push(p),
                r => {
                    // A connection that went away drops its session with the answer.
                    let _ = p.job.reply.send((p.job.dec, r));
                }
            }
        }
    }
}

/// Runs one piece of each step of `batch` together.
fn run(batch: &mut [Pending], hidden: usize) -> Vec<edgecut::Result<Option<u32>>> {
    let steps = batch
        .iter_mut()
        .map(|p| {
            let (from, to) = (p.done * hidden, (p.done + p.take) * hidden);
            DecodeStep {
                dec: &mut p.job.dec,
                position: p.job.position + p.done,
                hidden: p.job.hidden[from..to].to_vec(),
                // Only the last piece answers a token.
                sample: p.job.sample && p.done + p.take == p.rows,
            }
        })
        .collect();
    ServerDecoder::step_many(steps)
}
