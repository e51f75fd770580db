//! `POST /v1/embeddings` and `POST /v1/classify`: requests from many clients join one batch,
//! up to a token budget or a short wait ([`EmbedQueue`]); the model runs each batch once.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::error::{ApiError, Body};
use super::metrics::ModelMetrics;
use super::{ApiState, Input, Kind};

/// One request's texts on their way to a batch.
struct Job {
    texts: Vec<String>,
    tokens: usize,
    queued: Instant,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, ApiError>>,
}

/// The queue of an embedding model: a thread that gathers jobs into batches.
#[derive(Debug)]
pub(crate) struct EmbedQueue {
    jobs: Sender<Job>,
}

impl EmbedQueue {
    /// Starts the batching thread: a batch closes at `budget` tokens or `max_wait` after its
    /// first job.
    pub fn start(
        session: Arc<edgecut::Session>,
        metrics: Arc<ModelMetrics>,
        budget: usize,
        max_wait: Duration,
    ) -> EmbedQueue {
        let (jobs, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("edgecut-embed".into())
            .spawn(move || batches(&session, &metrics, &rx, budget, max_wait))
            .expect("spawning the embedding thread");
        EmbedQueue { jobs }
    }
}

fn batches(
    session: &edgecut::Session,
    metrics: &ModelMetrics,
    rx: &Receiver<Job>,
    budget: usize,
    max_wait: Duration,
) {
    while let Ok(first) = rx.recv() {
        let deadline = Instant::now() + max_wait;
        let mut tokens = first.tokens;
        let mut batch = vec![first];
        while tokens < budget {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(j) => {
                    tokens += j.tokens;
                    batch.push(j);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        // A client that left is not computed for.
        batch.retain(|j| !j.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        for j in &batch {
            metrics.queue.time(j.queued.elapsed());
        }
        let texts: Vec<&str> = batch
            .iter()
            .flat_map(|j| j.texts.iter().map(String::as_str))
            .collect();
        metrics.batch.observe(texts.len() as f64);
        let start = Instant::now();
        let run = session.embed(&texts);
        metrics.inference.time(start.elapsed());
        match run {
            Ok(e) => {
                let mut vectors = e.vectors.into_iter();
                for j in batch {
                    let mine: Vec<Vec<f32>> = vectors.by_ref().take(j.texts.len()).collect();
                    metrics
                        .prompt_tokens
                        .fetch_add(j.tokens as u64, Ordering::Relaxed);
                    let _ = j.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for j in batch {
                    let _ = j.reply.send(Err(ApiError::internal(msg.clone())));
                }
            }
        }
    }
}

/// The body of `POST /v1/embeddings`.
#[derive(Deserialize)]
pub(crate) struct EmbeddingsRequest {
    model: String,
    input: Input,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u64>,
    #[allow(dead_code)]
    #[serde(default)]
    user: Option<String>,
}

/// Checks texts against a model and the request limits; returns the tokens of each.
fn count_tokens(
    st: &ApiState,
    session: &edgecut::Session,
    texts: &[String],
) -> Result<Vec<usize>, ApiError> {
    if texts.is_empty() {
        return Err(ApiError::param("input", "`input` holds no text"));
    }
    if texts.len() > st.cfg.max_inputs {
        return Err(ApiError::param(
            "input",
            format!(
                "{} inputs in one request; at most {} (--http-max-inputs)",
                texts.len(),
                st.cfg.max_inputs
            ),
        ));
    }
    let max = session.max_seq_len();
    let mut counts = Vec::with_capacity(texts.len());
    for (i, t) in texts.iter().enumerate() {
        // Tokenized whole (not truncated), to refuse what does not fit.
        let n = session.count_tokens(t)?;
        if n > max {
            return Err(ApiError {
                code: Some("context_length_exceeded"),
                ..ApiError::param(
                    "input",
                    format!("input {i} is {n} tokens; the model takes at most {max}"),
                )
            });
        }
        counts.push(n);
    }
    Ok(counts)
}

pub(crate) async fn embeddings(
    State(st): State<Arc<ApiState>>,
    Body(req): Body<EmbeddingsRequest>,
) -> Result<Json<Value>, ApiError> {
    let served = st.model(&req.model)?;
    let Kind::Embedder { session, queue } = &served.kind else {
        return Err(ApiError::param(
            "model",
            format!(
                "{} is a text generator; embeddings come from an encoder model",
                req.model
            ),
        ));
    };
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(o) => {
            return Err(ApiError::param(
                "encoding_format",
                format!("encoding_format {o:?} is not float or base64"),
            ))
        }
    };
    if let Some(d) = req.dimensions {
        if d != session.embedding_dim() as u64 {
            return Err(ApiError::param(
                "dimensions",
                format!(
                    "this model's embeddings have {} dimensions (asked for {d})",
                    session.embedding_dim()
                ),
            ));
        }
    }
    let texts = req.input.texts()?;
    let counts = count_tokens(&st, session, &texts)?;
    let tokens: usize = counts.iter().sum();
    let queued = Instant::now();
    let _place = served.enter().await?;
    let (reply, rx) = oneshot::channel();
    let job = Job {
        texts,
        tokens,
        queued,
        reply,
    };
    queue
        .jobs
        .send(job)
        .map_err(|_| ApiError::unavailable("the model's worker has stopped"))?;
    let vectors = rx
        .await
        .map_err(|_| ApiError::unavailable("the model's worker has stopped"))??;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(list(data, &served.name, tokens)))
}

/// The body of `POST /v1/classify`.
#[derive(Deserialize)]
pub(crate) struct ClassifyRequest {
    model: String,
    input: Input,
}

pub(crate) async fn classify(
    State(st): State<Arc<ApiState>>,
    Body(req): Body<ClassifyRequest>,
) -> Result<Json<Value>, ApiError> {
    let served = st.model(&req.model)?;
    let Kind::Embedder { session, .. } = &served.kind else {
        return Err(ApiError::param(
            "model",
            format!("{} is a text generator, not a classifier", req.model),
        ));
    };
    if session.n_classes().is_none() {
        return Err(ApiError::param(
            "model",
            edgecut::Error::NoClassifier.to_string(),
        ));
    }
    let texts = req.input.texts()?;
    let counts = count_tokens(&st, session, &texts)?;
    let tokens: usize = counts.iter().sum();
    let _place = served.enter().await?;
    let session = session.clone();
    let out = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        session.classify(&refs)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let data: Vec<Value> = out
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"index": i, "label": c.label, "class": c.class,
                   "score": c.probs[c.class], "probs": c.probs})
        })
        .collect();
    Ok(Json(list(data, &served.name, tokens)))
}

/// The answer of an input route: a list of results, the model, and the tokens run.
fn list(data: Vec<Value>, model: &str, tokens: usize) -> Value {
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })
}
