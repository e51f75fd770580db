//! A generation model's slots: one thread runs every active generation a token per step, their
//! decode steps in one forward ([`edgecut::Llm::step_turns`]); a new request takes a free slot
//! between steps, in the context whose cached tokens share the longest prefix with its prompt.
//! A request whose client has gone (its event receiver dropped), or has left its events unread
//! for the stall limit (a stream whose client stopped reading), is stopped at the next step,
//! told nothing more, and its slot and admission place freed: a generation's place is held by
//! the generation, not by its client's reading.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgecut::{Context, Finish, GenerateOptions, Llm, Turn};
use tokio::sync::mpsc::UnboundedSender;

use super::admission::Place;
use super::error::ApiError;
use super::metrics::ModelMetrics;

/// What a generation sends its request.
#[derive(Debug)]
pub(crate) enum Event {
    /// Text released (never empty).
    Text(String),
    /// Log-probabilities of the tokens drawn since the last ones sent (the API's
    /// `logprobs.content` entries), sent before their text.
    Logprobs(Vec<serde_json::Value>),
    /// The end, with the prompt's and the completion's tokens.
    Done {
        finish: Finish,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    /// The generation failed (the message says why).
    Failed(String),
}

/// A request for a slot (a slot per choice).
pub(crate) struct Job {
    pub prompt: Vec<u32>,
    pub opts: GenerateOptions,
    /// The options of choices 1.. (`n` > 1): turns branched from the first once its prompt
    /// has run, so the prompt is computed once.
    pub more: Vec<GenerateOptions>,
    pub queued: Instant,
    /// Every choice's events, with its index.
    pub events: UnboundedSender<(usize, Event)>,
    /// Events the client has taken so far (its stream counts them).
    pub taken: Arc<AtomicU64>,
    /// The request's admission places (one per choice), given back when its last choice
    /// leaves its slot.
    pub place: Place,
}

/// The queue of a generation model.
#[derive(Debug)]
pub(crate) struct Slots {
    jobs: Sender<Job>,
}

impl Slots {
    /// Starts the thread that runs `slots` generations at once; a generation whose client
    /// leaves its events unread for `stall` is stopped.
    pub fn start(llm: Llm, slots: usize, stall: Duration, metrics: Arc<ModelMetrics>) -> Slots {
        let (jobs, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("edgecut-slots".into())
            .spawn(move || run(&llm, slots.max(1), stall, &metrics, &rx))
            .expect("spawning the generation thread");
        Slots { jobs }
    }

    /// Queues a job (the caller holds a place, so at most `slots` jobs are in).
    pub fn send(&self, job: Job) -> Result<(), ApiError> {
        self.jobs
            .send(job)
            .map_err(|_| ApiError::unavailable("the model's generation thread has stopped"))
    }
}

struct Active<'a> {
    turn: Turn<'a>,
    /// The choice's index in its request.
    index: usize,
    events: UnboundedSender<(usize, Event)>,
    /// Events sent (by all the request's choices), and taken by the client (as its stream
    /// last counted).
    sent: Arc<AtomicU64>,
    taken: Arc<AtomicU64>,
    /// `taken` as last seen, and when it last moved (or the client was last caught up).
    seen: u64,
    read_at: Instant,
    /// Log-probabilities sent so far.
    logprobs_sent: usize,
    /// Choices to branch from this one once its prompt has run: (index, options).
    pending: Vec<(usize, GenerateOptions)>,
    _place: Arc<Place>,
}

impl Active<'_> {
    /// Whether the client has gone, or has left events unread for longer than `stall`.
    fn stopped_reading(&mut self, stall: Duration) -> bool {
        if self.events.is_closed() {
            return true;
        }
        let taken = self.taken.load(Ordering::Relaxed);
        let sent = self.sent.load(Ordering::Relaxed);
        let now = Instant::now();
        if taken != self.seen || taken >= sent {
            self.seen = taken;
            self.read_at = now;
        }
        taken < sent && now.duration_since(self.read_at) > stall
    }

    /// Sends `e`, unless the client has gone or stopped reading: then `false`.
    fn send(&mut self, e: Event, stall: Duration) -> bool {
        if self.stopped_reading(stall) {
            return false;
        }
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.events.send((self.index, e)).is_ok()
    }
}

fn run(llm: &Llm, slots: usize, stall: Duration, metrics: &ModelMetrics, rx: &Receiver<Job>) {
    let mut free: Vec<Context> = Vec::new();
    let mut active: Vec<Active<'_>> = Vec::new();
    loop {
        // New jobs between steps; block only when nothing runs.
        while active.len() < slots {
            let job = if active.is_empty() {
                match rx.recv() {
                    Ok(j) => j,
                    Err(_) => return,
                }
            } else {
                match rx.try_recv() {
                    Ok(j) => j,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            };
            metrics.queue.time(job.queued.elapsed());
            if job.events.is_closed() {
                metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let failed = |e: String| {
                let _ = job.events.send((0, Event::Failed(e)));
            };
            let ctx = match take_context(llm, &mut free, &job.prompt) {
                Ok(c) => c,
                Err(e) => {
                    failed(e.to_string());
                    continue;
                }
            };
            match Turn::new(llm, ctx, job.prompt, &job.opts) {
                Ok(turn) => active.push(Active {
                    turn,
                    index: 0,
                    events: job.events,
                    sent: Arc::new(AtomicU64::new(0)),
                    taken: job.taken,
                    seen: 0,
                    read_at: Instant::now(),
                    logprobs_sent: 0,
                    pending: job
                        .more
                        .into_iter()
                        .enumerate()
                        .map(|(i, o)| (i + 1, o))
                        .collect(),
                    _place: Arc::new(job.place),
                }),
                // The context went with the refused turn; a new one is made when needed.
                Err(e) => failed(e.to_string()),
            }
        }
        let decoding = active
            .iter()
            .filter(|a| a.turn.generated() > 0 && a.turn.finished().is_none())
            .count();
        let had_first: Vec<bool> = active
            .iter()
            .map(|a| a.turn.first_token().is_some())
            .collect();
        let start = Instant::now();
        let texts = {
            let mut turns: Vec<&mut Turn<'_>> = active.iter_mut().map(|a| &mut a.turn).collect();
            llm.step_turns(&mut turns)
        };
        let took = start.elapsed();
        metrics.inference.time(took);
        if decoding > 0 {
            metrics.batch.observe(decoding as f64);
        }
        for ((a, text), had_first) in active.iter_mut().zip(texts).zip(had_first) {
            // The drawn tokens' log-probabilities, the end-of-sequence token's left out.
            let upto = a.turn.generated().min(a.turn.logprobs().len());
            if upto > a.logprobs_sent {
                let lp = logprob_entries(llm, &a.turn.logprobs()[a.logprobs_sent..upto]);
                a.logprobs_sent = upto;
                if !a.send(Event::Logprobs(lp), stall) {
                    a.turn.cancel();
                }
            }
            match text {
                Ok(t) if !t.is_empty() => {
                    if !a.send(Event::Text(t), stall) {
                        a.turn.cancel();
                    }
                }
                Ok(_) => {
                    if a.stopped_reading(stall) {
                        a.turn.cancel();
                    }
                }
                Err(e) => {
                    let _ = a.send(Event::Failed(e.to_string()), stall);
                }
            }
            if !had_first {
                if let Some(d) = a.turn.first_token() {
                    metrics.first_token.time(d);
                }
            } else if a.turn.generated() > 0 {
                metrics
                    .decode_us
                    .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
            }
        }
        // The other choices of a request whose prompt has run branch from it.
        let mut branched = Vec::new();
        for a in active.iter_mut() {
            if a.pending.is_empty() || (a.turn.generated() == 0 && a.turn.finished().is_none()) {
                continue;
            }
            for (index, opts) in std::mem::take(&mut a.pending) {
                let (prompt, _) = a.turn.prompt_tokens();
                let turn = take_context(llm, &mut free, &[])
                    .and_then(|ctx| a.turn.branch(llm, ctx, &opts));
                match turn {
                    Ok(turn) => branched.push(Active {
                        turn,
                        index,
                        events: a.events.clone(),
                        sent: a.sent.clone(),
                        taken: a.taken.clone(),
                        seen: a.seen,
                        read_at: a.read_at,
                        logprobs_sent: 0,
                        pending: Vec::new(),
                        _place: a._place.clone(),
                    }),
                    Err(e) => {
                        let msg = format!("choice {index} (a prompt of {prompt} tokens): {e}");
                        let _ = a.events.send((index, Event::Failed(msg)));
                    }
                }
            }
        }
        active.extend(branched);
        // Finished turns leave; their contexts keep their tokens for a later prompt.
        let mut i = 0;
        while i < active.len() {
            let Some(finish) = active[i].turn.finished() else {
                i += 1;
                continue;
            };
            let mut a = active.swap_remove(i);
            let (prompt, cached) = a.turn.prompt_tokens();
            let completion = a.turn.generated();
            metrics
                .prompt_tokens
                .fetch_add((prompt - cached) as u64, Ordering::Relaxed);
            metrics
                .generated_tokens
                .fetch_add(completion as u64, Ordering::Relaxed);
            if finish == Finish::Cancelled {
                metrics.cancelled.fetch_add(1, Ordering::Relaxed);
            } else {
                let _ = a.send(
                    Event::Done {
                        finish,
                        prompt_tokens: prompt,
                        completion_tokens: completion,
                    },
                    stall,
                );
            }
            free.push(a.turn.into_context());
        }
    }
}

/// The API's `logprobs.content` entries of `lps`: each token's text and bytes, its
/// log-probability and its alternatives.
fn logprob_entries(llm: &Llm, lps: &[edgecut::TokenLogprob]) -> Vec<serde_json::Value> {
    let entry = |id: u32, logprob: f32| {
        let bytes = llm.token_bytes(id);
        serde_json::json!({
            "token": String::from_utf8_lossy(&bytes),
            "logprob": logprob,
            "bytes": bytes,
        })
    };
    lps.iter()
        .map(|t| {
            let mut e = entry(t.id, t.logprob);
            e["top_logprobs"] = t.top.iter().map(|&(id, lp)| entry(id, lp)).collect();
            e
        })
        .collect()
}

/// The free context sharing the longest prefix with `prompt`, or a new one when none is free
/// (so there are never more contexts than slots).
fn take_context(llm: &Llm, free: &mut Vec<Context>, prompt: &[u32]) -> edgecut::Result<Context> {
    let shared = |c: &Context| {
        c.tokens()
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
    };
    match (0..free.len()).max_by_key(|&i| shared(&free[i])) {
        Some(i) => Ok(free.swap_remove(i)),
        None => llm.new_context(),
    }
}
