//! The batching thread of an encoder model. Requests of every client (texts to embed, or
//! documents to score against a query) wait in one queue; each batch takes their inputs an input
//! per request per round, round after round, until the token budget is reached: a large request
//! is run in sub-batches of the budget, and a request that arrives meanwhile joins the next batch
//! beside it rather than waiting for all of it. A request whose client has gone is dropped
//! before its next sub-batch.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::error::ApiError;
use super::metrics::ModelMetrics;

/// One request's inputs on their way through the batches.
pub(crate) struct Job {
    pub texts: Vec<String>,
    /// For a reranking request, the query each text (document) is scored against: each input's
    /// result is then its one score. Without it, each result is the text's embedding.
    pub query: Option<Arc<str>>,
    /// Tokens of each input.
    pub counts: Vec<usize>,
    pub queued: Instant,
    pub reply: oneshot::Sender<Result<Vec<Vec<f32>>, ApiError>>,
}

/// One input of a batch: the queue position of its job, the text, the query it is paired with.
type Item = (usize, String, Option<Arc<str>>);

/// A job part-way through: its vectors so far.
struct Running {
    job: Job,
    done: Vec<Vec<f32>>,
    /// Texts handed to the batch being built (not yet run).
    taken: usize,
}

impl Running {
    fn next(&self) -> usize {
        self.done.len() + self.taken
    }

    fn left_tokens(&self) -> usize {
        self.job.counts[self.next()..].iter().sum()
    }
}

/// The queue of an embedding model: a thread that gathers jobs into batches.
#[derive(Debug)]
pub(crate) struct EmbedQueue {
    jobs: Sender<Job>,
}

impl EmbedQueue {
    /// Starts the batching thread: a batch closes at `budget` tokens or `max_wait` after it
    /// could first run.
    pub fn start(
        session: edgecut::Session,
        metrics: Arc<ModelMetrics>,
        budget: usize,
        max_wait: Duration,
    ) -> EmbedQueue {
        let (jobs, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("edgecut-embed".into())
            .spawn(move || batches(&session, &metrics, &rx, budget.max(1), max_wait))
            .expect("spawning the embedding thread");
        EmbedQueue { jobs }
    }

    /// Queues a job.
    pub fn send(&self, job: Job) -> Result<(), ApiError> {
        self.jobs
            .send(job)
            .map_err(|_| ApiError::unavailable("the model's worker has stopped"))
    }
}

fn batches(
    session: &edgecut::Session,
    metrics: &ModelMetrics,
    rx: &Receiver<Job>,
    budget: usize,
    max_wait: Duration,
) {
    let mut queue: VecDeque<Running> = VecDeque::new();
    let add = |queue: &mut VecDeque<Running>, job: Job| {
        queue.push_back(Running {
            job,
            done: Vec::new(),
            taken: 0,
        })
    };
    loop {
        if queue.is_empty() {
            match rx.recv() {
                Ok(j) => add(&mut queue, j),
                Err(_) => return,
            }
        }
        // Others may join until the budget is met or the wait is over.
        let deadline = Instant::now() + max_wait;
        loop {
            while let Ok(j) = rx.try_recv() {
                add(&mut queue, j);
            }
            let waiting: usize = queue.iter().map(Running::left_tokens).sum();
            let left = deadline.saturating_duration_since(Instant::now());
            if waiting >= budget || left.is_zero() {
                break;
            }
            match rx.recv_timeout(left) {
                Ok(j) => add(&mut queue, j),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        // A client that left is not computed for.
        let before = queue.len();
        queue.retain(|r| !r.job.reply.is_closed());
        metrics
            .cancelled
            .fetch_add((before - queue.len()) as u64, Ordering::Relaxed);
        if queue.is_empty() {
            continue;
        }
        let items = pick(&mut queue, budget);
        // A job's first batch ends its wait in the queue.
        for r in queue.iter().filter(|r| r.taken > 0 && r.done.is_empty()) {
            metrics.queue.time(r.job.queued.elapsed());
        }
        metrics.batch.observe(items.len() as f64);
        let start = Instant::now();
        let run = run_batch(session, &items);
        metrics.inference.time(start.elapsed());
        let failed = match run {
            Ok(results) => {
                // Results go back to their own jobs (the batch interleaves them).
                for ((at, _, _), v) in items.iter().zip(results) {
                    queue[*at].done.push(v);
                }
                None
            }
            Err(e) => Some(e.to_string()),
        };
        // Jobs in a failed batch leave with the error, finished ones with their results.
        for mut r in std::mem::take(&mut queue) {
            if let (Some(msg), true) = (&failed, r.taken > 0) {
                let _ = r.job.reply.send(Err(ApiError::internal(msg.clone())));
                continue;
            }
            r.taken = 0;
            if r.done.len() < r.job.counts.len() {
                queue.push_back(r);
                continue;
            }
            let tokens: usize = r.job.counts.iter().sum();
            metrics
                .prompt_tokens
                .fetch_add(tokens as u64, Ordering::Relaxed);
            let _ = r.job.reply.send(Ok(r.done));
        }
    }
}

/// One batch's results in the order of `items`: embeddings of the texts, and the score of
/// each document against its query (one session call each).
fn run_batch(session: &edgecut::Session, items: &[Item]) -> edgecut::Result<Vec<Vec<f32>>> {
    let texts: Vec<&str> = items
        .iter()
        .filter(|i| i.2.is_none())
        .map(|i| i.1.as_str())
        .collect();
    let pairs: Vec<(&str, &str)> = items
        .iter()
        .filter_map(|(_, d, q)| Some((&**q.as_ref()?, d.as_str())))
        .collect();
    let mut vectors = match texts.is_empty() {
        true => Vec::new(),
        false => session.embed(&texts)?.vectors,
    }
    .into_iter();
    let mut scores = match pairs.is_empty() {
        true => Vec::new(),
        false => session.score_pairs(&pairs)?.scores,
    }
    .into_iter();
    Ok(items
        .iter()
        .map(|i| match i.2 {
            None => vectors.next().expect("a vector per text"),
            Some(_) => vec![scores.next().expect("a score per pair")],
        })
        .collect())
}

/// The next batch's inputs: one from each waiting job in turn, round after round, while the
/// budget allows (the first always goes in). Marks what each job gave in `taken`.
fn pick(queue: &mut VecDeque<Running>, budget: usize) -> Vec<Item> {
    let mut texts = Vec::new();
    let mut tokens = 0usize;
    loop {
        let mut added = false;
        for (at, r) in queue.iter_mut().enumerate() {
            let i = r.next();
            let Some(&n) = r.job.counts.get(i) else {
                continue;
            };
            if !texts.is_empty() && tokens + n > budget {
                continue;
            }
            tokens += n;
            // Moved out: the text is not needed after its batch.
            let text = std::mem::take(&mut r.job.texts[i]);
            texts.push((at, text, r.job.query.clone()));
            r.taken += 1;
            added = true;
        }
        if !added {
            return texts;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(counts: &[usize]) -> Running {
        Running {
            job: Job {
                texts: (0..counts.len()).map(|i| format!("t{i}")).collect(),
                query: None,
                counts: counts.to_vec(),
                queued: Instant::now(),
                reply: oneshot::channel().0,
            },
            done: Vec::new(),
            taken: 0,
        }
    }

    #[test]
    fn a_large_request_is_cut_to_the_budget_and_a_small_one_rides_in_the_next_batch() {
        let mut q: VecDeque<Running> = [running(&[250; 512])].into_iter().collect();
        let first = pick(&mut q, 2048);
        assert_eq!(first.len(), 8, "8 x 250 tokens fit 2048");
        q[0].done.extend((0..8).map(|_| vec![0.0]));
        q[0].taken = 0;
        q.push_back(running(&[5]));
        let second = pick(&mut q, 2048);
        assert_eq!(
            q[1].taken, 1,
            "the newcomer's text is in the very next batch"
        );
        assert_eq!(q[0].taken, 8, "beside it, what the budget has room for");
        assert_eq!((second[0].0, &*second[0].1), (0, "t8"));
        assert_eq!((second[1].0, &*second[1].1), (1, "t0"));
        // A text over the budget alone still runs (alone).
        let mut big: VecDeque<Running> = [running(&[5000, 1])].into_iter().collect();
        assert_eq!(pick(&mut big, 2048).len(), 1);
    }
}
