//! `POST /v1/embeddings` and `POST /v1/classify`: requests from many clients join batches of a
//! token budget ([`super::embed_queue`]), texts tokenized on the blocking pool once the request
//! holds its place.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::Json;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::body::Body;
use super::embed_queue::Job;
use super::error::ApiError;
use super::{blocking, ApiState, Input, Item, Kind};

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

/// Checks the number of texts against the request limit.
pub(super) fn check_inputs(st: &ApiState, texts: &[String]) -> Result<(), ApiError> {
    check_count(st, texts.len())
}

/// Checks a number of inputs against the request limit.
fn check_count(st: &ApiState, n: usize) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::param("input", "`input` holds no text"));
    }
    if n > st.cfg.max_inputs {
        return Err(ApiError::param(
            "input",
            format!(
                "{n} inputs in one request; at most {} (--http-max-inputs)",
                st.cfg.max_inputs
            ),
        ));
    }
    Ok(())
}

/// The tokens of each text, on the blocking pool (work that grows with the request stays off
/// the async threads); a text longer than the model takes is refused.
async fn count_tokens(
    session: &edgecut::Session,
    texts: Vec<String>,
) -> Result<(Vec<String>, Vec<usize>), ApiError> {
    let session = session.clone();
    blocking(move || {
        let counts = counts(&session, &texts)?;
        Ok::<_, ApiError>((texts, counts))
    })
    .await
}

fn counts(session: &edgecut::Session, texts: &[String]) -> Result<Vec<usize>, ApiError> {
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
    // Matryoshka: the first `dimensions` values, normalised again.
    let dims = match req.dimensions {
        None => None,
        Some(d) if (1..=session.embedding_dim() as u64).contains(&d) => Some(d as usize),
        Some(d) => {
            return Err(ApiError::param(
                "dimensions",
                format!(
                    "dimensions {d} is outside 1..={} (this model's embedding size)",
                    session.embedding_dim()
                ),
            ))
        }
    };
    // Texts and pictures apart, with where each came from.
    let (mut texts, mut images, mut order) = (Vec::new(), Vec::new(), Vec::new());
    for item in req.input.items()? {
        match item {
            Item::Text(t) => {
                order.push((false, texts.len()));
                texts.push(t);
            }
            Item::Image(b) => {
                order.push((true, images.len()));
                images.push(b);
            }
        }
    }
    check_count(&st, order.len())?;
    if !images.is_empty() && !session.embeds_images() {
        return Err(ApiError::param(
            "input",
            format!("{} embeds texts only; images need a CLIP model", req.model),
        ));
    }
    let queued = Instant::now();
    let _place = served.enter().await?;
    let (mut text_vectors, tokens) = if texts.is_empty() {
        (Vec::new(), 0)
    } else {
        let (texts, counts) = count_tokens(session, texts).await?;
        let tokens: usize = counts.iter().sum();
        let (reply, rx) = oneshot::channel();
        queue.send(Job {
            texts,
            query: None,
            counts,
            queued,
            reply,
        })?;
        let v = rx
            .await
            .map_err(|_| ApiError::unavailable("the model's worker has stopped"))??;
        (v, tokens)
    };
    let mut image_vectors = if images.is_empty() {
        Vec::new()
    } else {
        // Pictures: decoded and embedded on the blocking pool, within the session's limits.
        let s = session.clone();
        let at: Vec<usize> = order
            .iter()
            .enumerate()
            .filter(|(_, (image, _))| *image)
            .map(|(i, _)| i)
            .collect();
        blocking(move || {
            let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
            s.embed_images(&refs).map_err(|e| match e {
                edgecut::Error::Image { index, source } => ApiError::param(
                    "input",
                    format!(
                        "input {}: {source}",
                        at.get(index).copied().unwrap_or(index)
                    ),
                ),
                other => other.into(),
            })
        })
        .await?
    };
    let mut vectors = Vec::with_capacity(order.len());
    for (image, i) in order {
        let from = if image {
            &mut image_vectors
        } else {
            &mut text_vectors
        };
        vectors.push(std::mem::take(&mut from[i]));
    }
    if let Some(d) = dims {
        session.shorten(&mut vectors, d)?;
    }
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
    check_inputs(&st, &texts)?;
    let _place = served.enter().await?;
    let (texts, counts) = count_tokens(session, texts).await?;
    let tokens: usize = counts.iter().sum();
    let session = session.clone();
    let out = blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        session.classify(&refs)
    })
    .await?;
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
pub(super) fn list(data: Vec<Value>, model: &str, tokens: usize) -> Value {
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })
}
