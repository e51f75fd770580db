//! Reading a request's JSON body under three bounds: its announced length (413 from the header,
//! before anything is read, so `Expect: 100-continue` gets no 100), a deadline that moves with
//! what has arrived (a sender slower than the minimum rate, or stalled, gets 408), and one byte
//! budget for every body being read at once (a body that does not fit waits for others, until
//! its deadline; then 503): what a few slow clients can hold is bounded, whatever they send.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::error::ApiError;
use super::ApiState;

/// Bytes of each body not charged to the budget.
const FREE: usize = 8 << 10;

/// How bodies are read: the limits of [`super::ApiConfig`].
#[derive(Debug)]
pub(crate) struct BodyLimits {
    /// Largest body, bytes.
    pub max_bytes: usize,
    /// Time every body has, whatever its length.
    pub timeout: Duration,
    /// Bytes per second a body must keep up beyond `timeout`.
    pub min_rate: u64,
    /// Bytes of bodies held at once, over all requests: permits of one byte.
    pub budget: Arc<Semaphore>,
}

impl BodyLimits {
    pub fn new(max_bytes: usize, timeout: Duration, min_rate: u64, budget: usize) -> BodyLimits {
        BodyLimits {
            max_bytes,
            timeout,
            min_rate: min_rate.max(1),
            // Semaphore permits are bounded; a budget below one body is raised to one body.
            budget: Arc::new(Semaphore::new(
                budget.max(max_bytes).min(Semaphore::MAX_PERMITS),
            )),
        }
    }

    /// When a body that has received `got` bytes since `start` must have sent the rest.
    fn deadline(&self, start: Instant, got: usize) -> Instant {
        start + self.timeout + Duration::from_secs_f64(got as f64 / self.min_rate as f64)
    }
}

/// A JSON body whose rejections are [`ApiError`]s: 413 past the body limit, 408 past the body
/// deadline, 400 otherwise (axum's 415 for a missing content type and 422 for a wrong field are
/// 400 here, as OpenAI answers them).
pub(crate) struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<ApiState>> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &Arc<ApiState>) -> Result<Self, ApiError> {
        let lim = &st.body;
        if !is_json(req.headers()) {
            return Err(ApiError::invalid(
                "the body must be JSON with `Content-Type: application/json`",
            ));
        }
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = announced.filter(|&n| n > lim.max_bytes as u64) {
            return Err(too_large(n, lim.max_bytes));
        }
        let bytes = read(req.into_body(), lim).await?;
        let v = serde_json::from_slice(&bytes.data).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ApiError::invalid(format!(
                "Failed to deserialize the JSON body into the target type: {e}"
            )),
            _ => ApiError::invalid(format!("the body is not valid JSON: {e}")),
        })?;
        Ok(Body(v))
    }
}

fn too_large(n: u64, max: usize) -> ApiError {
    ApiError::too_large(format!(
        "the body is {n} bytes, larger than the server takes: at most {max} (--http-max-body-kb)"
    ))
}

/// `application/json`, or a `+json` type, as axum's `Json` takes.
fn is_json(h: &HeaderMap) -> bool {
    let Some(ct) = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A body's bytes with the budget they hold (given back when dropped).
struct Held {
    data: Vec<u8>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

async fn read(mut body: axum::body::Body, lim: &BodyLimits) -> Result<Held, ApiError> {
    let start = Instant::now();
    let mut held = Held {
        data: Vec::new(),
        permit: None,
    };
    loop {
        let deadline = lim.deadline(start, held.data.len());
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(slow(held.data.len(), lim)),
            Ok(None) => return Ok(held),
            Ok(Some(Err(e))) => {
                return Err(ApiError::invalid(format!("reading the body failed: {e}")))
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(chunk) = frame.into_data() else {
            continue; // trailers
        };
        let total = held.data.len() + chunk.len();
        if total > lim.max_bytes {
            return Err(too_large(total as u64, lim.max_bytes));
        }
        // Charge what the buffer grows by before growing it (so the budget counts what is
        // allocated, not only what was sent); wait for others' bodies only until the deadline.
        let cap = held.data.capacity();
        if total > cap {
            let grown = total.max(cap * 2).max(8 << 10).min(lim.max_bytes);
            // The first FREE bytes of every body are the connection's own (bounded by the
            // connection limit, like hyper's buffers): a small request never waits on others.
            let charged = grown.saturating_sub(FREE) - cap.saturating_sub(FREE);
            if charged > 0 {
                held.charge(charged, lim, lim.deadline(start, held.data.len()))
                    .await?;
            }
            held.data.reserve_exact(grown - held.data.len());
        }
        held.data.extend_from_slice(&chunk);
    }
}

impl Held {
    /// Takes `bytes` more of the budget, waiting for others' bodies until `deadline`.
    async fn charge(
        &mut self,
        bytes: usize,
        lim: &BodyLimits,
        deadline: Instant,
    ) -> Result<(), ApiError> {
        let more = lim.budget.clone().acquire_many_owned(bytes as u32);
        let Ok(Ok(p)) = tokio::time::timeout_at(deadline, more).await else {
            return Err(ApiError::unavailable(
                "the server is reading as many request bodies as its memory budget allows \
                 (--http-max-request-memory-mb); retry shortly",
            ));
        };
        match &mut self.permit {
            Some(h) => h.merge(p),
            None => self.permit = Some(p),
        }
        Ok(())
    }
}

fn slow(got: usize, lim: &BodyLimits) -> ApiError {
    ApiError {
        status: StatusCode::REQUEST_TIMEOUT,
        ..ApiError::invalid(format!(
            "the body did not arrive in time: {got} bytes came; a body has {} s, plus a second \
             for every {} bytes that arrive (--http-body-timeout, --http-body-min-rate-kb)",
            lim.timeout.as_secs_f64(),
            lim.min_rate
        ))
    }
}
