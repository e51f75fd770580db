//! The API's routes and the layers around them: the API key, CORS, the body limit, and the
//! per-route request counts and durations of `/metrics`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::body::Body;
use super::error::ApiError;
use super::metrics::render_models;
use super::{chat, embed, rerank, ApiState, Kind};

/// The API's router over `state`.
pub(crate) fn router(state: Arc<ApiState>) -> Router {
    let mut app = Router::new()
        .route("/v1/embeddings", post(embed::embeddings))
        .route("/v1/classify", post(embed::classify))
        .route("/rerank", post(rerank::tei))
        .route("/v1/rerank", post(rerank::cohere))
        .route("/v1/chat/completions", post(chat::chat))
        .route("/v1/completions", post(chat::completion))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(not_allowed)
        .layer(DefaultBodyLimit::max(state.cfg.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(state.clone(), count));
    if !state.cfg.cors_origins.is_empty() {
        let origins = &state.cfg.cors_origins;
        let allow = if origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
        };
        app = app.layer(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([AUTHORIZATION, CONTENT_TYPE]),
        );
    }
    app.with_state(state)
}

/// Counts every answer by route and status (the route as declared, so ids do not explode the
/// label set; unknown paths are `unmatched`).
async fn count(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let r = next.run(req).await;
    st.routes
        .record(&route, r.status().as_u16(), start.elapsed());
    r
}

/// Checks the API key (constant time) on every route but `/health` and `/metrics`, which are
/// open unless configured otherwise.
async fn authorize(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let Some(key) = &st.cfg.api_key else {
        return next.run(req).await;
    };
    let open = matches!(req.uri().path(), "/health" | "/metrics");
    if (open && !st.cfg.key_for_health_and_metrics) || req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    // The scheme is case-insensitive (RFC 9110 11.1): `bearer` is taken as `Bearer`.
    let sent = req
        .headers()
        .get(AUTHORIZATION)
        .map(|v| v.as_bytes())
        .filter(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer "))
        .map_or(&b""[..], |v| &v[7..]);
    if crate::guard::same_token(sent, key) {
        next.run(req).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

async fn not_found(req: Request) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request_error",
        ..ApiError::invalid(format!("no route {} {}", req.method(), req.uri().path()))
    }
}

async fn not_allowed(req: Request) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        ..ApiError::invalid(format!(
            "{} is not allowed on {}",
            req.method(),
            req.uri().path()
        ))
    }
}

async fn health(State(st): State<Arc<ApiState>>) -> Response {
    let draining = st.draining.load(std::sync::atomic::Ordering::SeqCst);
    match (st.models.get(), draining) {
        (_, true) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting down"})),
        )
            .into_response(),
        (None, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading"})),
        )
            .into_response(),
        (Some(_), _) => Json(json!({"status": "ok"})).into_response(),
    }
}

fn model_object(st: &ApiState, name: &str) -> Value {
    json!({"id": name, "object": "model", "created": st.created, "owned_by": "edgecut"})
}

async fn models(State(st): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    let data: Vec<Value> = st
        .served()?
        .iter()
        .map(|m| model_object(&st, &m.name))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

async fn model(
    State(st): State<Arc<ApiState>>,
    id: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let axum::extract::Path(id) = id.map_err(|e| ApiError::param("id", e.body_text()))?;
    let m = st.model(&id)?;
    Ok(Json(model_object(&st, &m.name)))
}

async fn metrics(State(st): State<Arc<ApiState>>) -> Response {
    let mut out = String::new();
    st.routes.render(&mut out);
    if let Some(served) = st.models.get() {
        let rows: Vec<_> = served
            .iter()
            .map(|m| {
                (
                    m.name.as_str(),
                    &*m.metrics,
                    m.admission.waiting(),
                    m.admission.running(m.places),
                )
            })
            .collect();
        render_models(&mut out, &rows);
    }
    if let Some(split) = &st.split {
        out.push_str(&split.render());
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    )
        .into_response()
}

/// The model a tokenizer route uses: the one named, or the first generation model (else the
/// first model).
fn tokenizer_model<'a>(st: &'a ApiState, name: Option<&str>) -> Result<&'a Kind, ApiError> {
    if let Some(n) = name {
        return Ok(&st.model(n)?.kind);
    }
    let all = st.served()?;
    all.iter()
        .find(|m| matches!(m.kind, Kind::Generator { .. }))
        .or(all.first())
        .map(|m| &m.kind)
        .ok_or_else(|| ApiError::unavailable("no model is served"))
}

#[derive(Deserialize)]
struct TokenizeRequest {
    #[serde(default)]
    model: Option<String>,
    content: String,
}

async fn tokenize(
    State(st): State<Arc<ApiState>>,
    Body(req): Body<TokenizeRequest>,
) -> Result<Json<Value>, ApiError> {
    let tokens = match tokenizer_model(&st, req.model.as_deref())? {
        Kind::Generator { llm, .. } => llm.tokenize(&req.content)?,
        Kind::Embedder { session, .. } => session.tokenize(&req.content)?,
    };
    Ok(Json(json!({"tokens": tokens})))
}

#[derive(Deserialize)]
struct DetokenizeRequest {
    #[serde(default)]
    model: Option<String>,
    tokens: Vec<u32>,
}

async fn detokenize(
    State(st): State<Arc<ApiState>>,
    Body(req): Body<DetokenizeRequest>,
) -> Result<Json<Value>, ApiError> {
    match tokenizer_model(&st, req.model.as_deref())? {
        Kind::Generator { llm, .. } => {
            let vocab = llm.vocab_size();
            if let Some(bad) = req.tokens.iter().find(|&&t| t as usize >= vocab) {
                return Err(ApiError::param(
                    "tokens",
                    format!("token {bad} is outside the vocabulary of {vocab}"),
                ));
            }
            Ok(Json(json!({"content": llm.detokenize(&req.tokens)?})))
        }
        Kind::Embedder { .. } => Err(ApiError::param(
            "model",
            "detokenize takes a generation model",
        )),
    }
}
