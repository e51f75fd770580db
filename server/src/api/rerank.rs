//! `POST /rerank` (text-embeddings-inference's shape) and `POST /v1/rerank` (Cohere's and
//! Jina's): documents scored against a query by a cross-encoder, batched with every other
//! request of the model by the same token budget as embeddings ([`super::embed_queue`]).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::body::Body;
use super::embed_queue::Job;
use super::error::ApiError;
use super::{blocking, ApiState, Kind, Served};

/// The body of `POST /rerank`.
#[derive(Deserialize)]
pub(crate) struct TeiRequest {
    #[serde(default)]
    model: Option<String>,
    query: String,
    texts: Vec<String>,
    /// Logits instead of 0..1 scores.
    #[serde(default)]
    raw_scores: Option<bool>,
    #[serde(default)]
    return_text: Option<bool>,
    /// Cut documents that do not fit (otherwise they are refused).
    #[serde(default)]
    truncate: Option<bool>,
}

/// A document of `POST /v1/rerank`: a string, or an object with `text`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Document {
    Text(String),
    Object { text: String },
}

/// The body of `POST /v1/rerank`.
#[derive(Deserialize)]
pub(crate) struct CohereRequest {
    #[serde(default)]
    model: Option<String>,
    query: String,
    documents: Vec<Document>,
    #[serde(default)]
    top_n: Option<u64>,
    /// Default true.
    #[serde(default)]
    return_documents: Option<bool>,
}

/// Scores of `docs` against `query` by `model` (or the one reranker served), in input order,
/// with the tokens run.
async fn score<'a>(
    st: &'a ApiState,
    model: Option<&str>,
    query: String,
    docs: Vec<String>,
    param: &'static str,
    truncate: bool,
) -> Result<(&'a Served, Vec<f32>, usize), ApiError> {
    let served = pick_model(st, model)?;
    let Kind::Embedder { session, queue } = &served.kind else {
        return Err(ApiError::param(
            "model",
            format!("{} is a text generator, not a reranker", served.name),
        ));
    };
    if session.n_classes() != Some(1) {
        return Err(ApiError::param(
            "model",
            format!(
                "{} is not a reranker (a cross-encoder with one output)",
                served.name
            ),
        ));
    }
    if docs.is_empty() {
        return Err(ApiError::param(param, format!("`{param}` holds no text")));
    }
    if docs.len() > st.cfg.max_inputs {
        return Err(ApiError::param(
            param,
            format!(
                "{} documents in one request; at most {} (--http-max-inputs)",
                docs.len(),
                st.cfg.max_inputs
            ),
        ));
    }
    let queued = Instant::now();
    let _place = served.enter().await?;
    let (query, docs, counts) = {
        let session = session.clone();
        blocking(move || {
            let counts = pair_counts(&session, &query, &docs, truncate, param)?;
            Ok::<_, ApiError>((query, docs, counts))
        })
        .await?
    };
    let tokens = counts.iter().sum();
    let (reply, rx) = oneshot::channel();
    queue.send(Job {
        texts: docs,
        query: Some(Arc::from(query)),
        counts,
        queued,
        reply,
    })?;
    let scores = rx
        .await
        .map_err(|_| ApiError::unavailable("the model's worker has stopped"))??;
    Ok((served, scores.into_iter().map(|s| s[0]).collect(), tokens))
}

/// Tokens of each query/document pair as run; a pair that does not fit is refused unless
/// `truncate`, and a query that leaves no room for any document always is.
fn pair_counts(
    session: &edgecut::Session,
    query: &str,
    docs: &[String],
    truncate: bool,
    param: &'static str,
) -> Result<Vec<usize>, ApiError> {
    let max = session.max_seq_len();
    // The query is kept whole: it must leave room for a document.
    if session.count_pair_tokens(query, "")? >= max {
        return Err(ApiError::param(
            "query",
            format!("the query leaves no room for a document in {max} tokens"),
        ));
    }
    let mut counts = Vec::with_capacity(docs.len());
    for (i, d) in docs.iter().enumerate() {
        let n = session.count_pair_tokens(query, d)?;
        if n > max && !truncate {
            return Err(ApiError {
                code: Some("context_length_exceeded"),
                ..ApiError::param(
                    param,
                    format!(
                        "the query with document {i} is {n} tokens; the model takes at most \
                         {max} (set truncate to cut documents)"
                    ),
                )
            });
        }
        counts.push(n.min(max));
    }
    Ok(counts)
}

/// The model named `name`, or without a name the one reranker served.
fn pick_model<'a>(st: &'a ApiState, name: Option<&str>) -> Result<&'a Served, ApiError> {
    if let Some(n) = name {
        return st.model(n);
    }
    let rerankers: Vec<&Served> = st
        .served()?
        .iter()
        .filter(
            |m| matches!(&m.kind, Kind::Embedder { session, .. } if session.n_classes() == Some(1)),
        )
        .collect();
    match rerankers.as_slice() {
        [one] => Ok(one),
        [] => Err(ApiError::param("model", "no reranker is served")),
        _ => Err(ApiError::param(
            "model",
            "several rerankers are served; name one in `model`",
        )),
    }
}

/// Indices of `scores`, best first (ties in input order).
fn ranked(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

pub(crate) async fn tei(
    State(st): State<Arc<ApiState>>,
    Body(req): Body<TeiRequest>,
) -> Result<Json<Value>, ApiError> {
    let texts = (req.return_text == Some(true)).then(|| req.texts.clone());
    let raw = req.raw_scores == Some(true);
    let (_, scores, _) = score(
        &st,
        req.model.as_deref(),
        req.query,
        req.texts,
        "texts",
        req.truncate == Some(true),
    )
    .await?;
    let out: Vec<Value> = ranked(&scores)
        .into_iter()
        .map(|i| {
            let s = if raw {
                scores[i]
            } else {
                edgecut::sigmoid(scores[i])
            };
            let mut v = json!({"index": i, "score": s});
            if let Some(t) = &texts {
                v["text"] = json!(t[i]);
            }
            v
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

pub(crate) async fn cohere(
    State(st): State<Arc<ApiState>>,
    Body(req): Body<CohereRequest>,
) -> Result<Json<Value>, ApiError> {
    let docs: Vec<String> = req
        .documents
        .into_iter()
        .map(|d| match d {
            Document::Text(t) | Document::Object { text: t } => t,
        })
        .collect();
    let kept = req.return_documents.unwrap_or(true).then(|| docs.clone());
    let top_n = match req.top_n {
        Some(0) => return Err(ApiError::param("top_n", "top_n must be at least 1")),
        Some(n) => n as usize,
        None => usize::MAX,
    };
    let (served, scores, tokens) = score(
        &st,
        req.model.as_deref(),
        req.query,
        docs,
        "documents",
        true,
    )
    .await?;
    let results: Vec<Value> = ranked(&scores)
        .into_iter()
        .take(top_n)
        .map(|i| {
            let mut v = json!({"index": i, "relevance_score": edgecut::sigmoid(scores[i])});
            if let Some(d) = &kept {
                v["document"] = json!({"text": d[i]});
            }
            v
        })
        .collect();
    let id = format!("rerank-{}", st.next_id());
    Ok(Json(json!({
        "id": id,
        "object": "list",
        "model": served.name,
        "results": results,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

#[cfg(test)]
mod tests {
    use super::ranked;

    #[test]
    fn ranked_is_best_first_and_stable_on_ties() {
        assert_eq!(ranked(&[0.1, 2.0, -1.0, 2.0]), vec![1, 3, 0, 2]);
    }
}
