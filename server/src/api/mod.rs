//! edgecut's OpenAI-compatible HTTP API (`edgecut serve --http`): embeddings, chat and text
//! completions, classification, reranking (TEI's and Cohere's shapes), tokenization, model listing, health and Prometheus metrics,
//! for one or more models at once. Embedding requests are batched across clients
//! ([`embed_queue`]); generations run in slots, continuously batched ([`slots`]). Every
//! model admits a bounded number of requests ([`admission`]); past it, 429 with `Retry-After`.
//! `docs/openapi.yaml` is the contract.

mod admission;
mod body;
mod chat;
mod embed;
mod embed_queue;
mod error;
mod metrics;
mod reply;
mod rerank;
mod routes;
mod slots;
mod tools;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use admission::Admission;
use error::ApiError;
use metrics::{ModelMetrics, RouteMetrics};

/// The API's settings: `ApiConfig::default()` and fields (the CLI's `--http-*` flags).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ApiConfig {
    /// The key clients must send as `Authorization: Bearer KEY` (none: open).
    pub api_key: Option<Vec<u8>>,
    /// Whether `/health` and `/metrics` need the key too.
    pub key_for_health_and_metrics: bool,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Most texts in one embedding or classification request.
    pub max_inputs: usize,
    /// Most tokens one generation may ask for (and the default for chat).
    pub max_tokens: usize,
    /// Generations run at once per generation model (each with its own KV cache).
    pub slots: usize,
    /// Requests run at once per embedding model (their texts join batches).
    pub max_concurrent: usize,
    /// Requests that may wait for a place, per model; past it, 429.
    pub max_queue: usize,
    /// Tokens at which an embedding batch closes.
    pub batch_tokens: usize,
    /// Longest wait for more requests to join an embedding batch.
    pub max_wait: Duration,
    /// Origins allowed by CORS (none: no CORS headers; `*`: any).
    pub cors_origins: Vec<String>,
    /// Time a response's write may wait for its client; a stream whose client leaves its
    /// events unread this long is stopped and its place freed.
    pub write_timeout: Duration,
    /// Time every request body has to arrive, whatever its length (past it and the rate, 408).
    pub body_timeout: Duration,
    /// Bytes per second a body must keep up beyond `body_timeout`.
    pub body_min_rate: u64,
    /// Bytes of request bodies held at once, over all connections; a body that does not fit
    /// waits for others until its deadline, then gets 503.
    pub max_request_memory: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            api_key: None,
            key_for_health_and_metrics: false,
            max_body_bytes: 2 << 20,
            max_inputs: 512,
            max_tokens: 2048,
            slots: 8,
            max_concurrent: 128,
            max_queue: 256,
            batch_tokens: 512,
            max_wait: Duration::from_millis(2),
            cors_origins: Vec::new(),
            write_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            body_min_rate: 64 << 10,
            max_request_memory: 32 << 20,
        }
    }
}

/// A model to serve, with the name clients use for it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ApiModel {
    /// An encoder: embeddings and classification.
    Embedder {
        /// The name in requests (`model`).
        name: String,
        /// The model.
        session: edgecut::Session,
    },
    /// A decoder: chat and text completions.
    Generator {
        /// The name in requests (`model`).
        name: String,
        /// The model.
        llm: edgecut::Llm,
    },
}

/// Why [`Api::ready`] refused its models.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadyError {
    /// Two models have one name (requests could not tell them apart).
    #[error("two models are named {0:?}")]
    SameName(String),
    /// The models were already given.
    #[error("the models are already loaded")]
    AlreadyLoaded,
}

/// The API's state: created before the models load (`/health` answers 503 until
/// [`Api::ready`]), shared by the routes.
#[derive(Clone, Debug)]
pub struct Api {
    state: Arc<ApiState>,
}

#[derive(Debug)]
pub(crate) struct ApiState {
    cfg: ApiConfig,
    models: OnceLock<Vec<Served>>,
    routes: RouteMetrics,
    ids: AtomicU64,
    created: u64,
    /// The split listener's metrics, shown beside the API's when both run.
    split: Option<Arc<crate::Metrics>>,
    draining: std::sync::atomic::AtomicBool,
    body: body::BodyLimits,
}

#[derive(Debug)]
pub(crate) struct Served {
    name: String,
    kind: Kind,
    admission: Admission,
    places: usize,
    metrics: Arc<ModelMetrics>,
}

#[derive(Debug)]
pub(crate) enum Kind {
    Embedder {
        session: edgecut::Session,
        queue: embed_queue::EmbedQueue,
    },
    Generator {
        llm: edgecut::Llm,
        slots: slots::Slots,
    },
}

impl Api {
    /// The API before its models are loaded; `split`: the split listener's metrics, to show
    /// on `/metrics` too.
    pub fn new(cfg: ApiConfig, split: Option<Arc<crate::Metrics>>) -> Api {
        Api {
            state: Arc::new(ApiState {
                models: OnceLock::new(),
                routes: RouteMetrics::default(),
                ids: AtomicU64::new(1),
                created: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                split,
                draining: Default::default(),
                body: body::BodyLimits::new(
                    cfg.max_body_bytes,
                    cfg.body_timeout,
                    cfg.body_min_rate,
                    cfg.max_request_memory,
                ),
                cfg,
            }),
        }
    }

    /// Serves `models` from now on (their batching threads start); a second call is refused.
    pub fn ready(&self, models: Vec<ApiModel>) -> Result<(), ReadyError> {
        let cfg = &self.state.cfg;
        // Names first: no worker starts for models that will not be served.
        let mut names = std::collections::HashSet::new();
        for m in &models {
            let name = match m {
                ApiModel::Embedder { name, .. } | ApiModel::Generator { name, .. } => name,
            };
            if !names.insert(name) {
                return Err(ReadyError::SameName(name.clone()));
            }
        }
        if self.state.models.get().is_some() {
            return Err(ReadyError::AlreadyLoaded);
        }
        let mut served = Vec::with_capacity(models.len());
        for m in models {
            let metrics = Arc::new(ModelMetrics::new());
            let (name, kind, places) = match m {
                ApiModel::Embedder { name, session } => {
                    let queue = embed_queue::EmbedQueue::start(
                        session.clone(),
                        metrics.clone(),
                        cfg.batch_tokens,
                        cfg.max_wait,
                    );
                    (name, Kind::Embedder { session, queue }, cfg.max_concurrent)
                }
                ApiModel::Generator { name, llm } => {
                    // Computed once here, not in the first request.
                    llm.max_prompt_bytes();
                    let slots = slots::Slots::start(
                        llm.clone(),
                        cfg.slots,
                        cfg.write_timeout,
                        metrics.clone(),
                    );
                    (name, Kind::Generator { llm, slots }, cfg.slots)
                }
            };
            served.push(Served {
                name,
                kind,
                admission: Admission::new(places, cfg.max_queue),
                places,
                metrics,
            });
        }
        self.state
            .models
            .set(served)
            .map_err(|_| ReadyError::AlreadyLoaded)
    }

    /// From now on `/health` answers 503 (a load balancer stops sending); requests in flight
    /// go on.
    pub fn drain(&self) {
        self.state.draining.store(true, Ordering::SeqCst);
    }

    /// The router serving this API.
    pub fn router(&self) -> axum::Router {
        routes::router(self.state.clone())
    }
}

impl Served {
    /// Takes a place in the model's admission, or refuses with 429 (counted).
    async fn enter(&self) -> Result<admission::Place, ApiError> {
        self.enter_many(1).await
    }

    /// `n` places at once (a generation of `n` choices), or 429 (counted).
    async fn enter_many(&self, n: u32) -> Result<admission::Place, ApiError> {
        match self.admission.enter_many(n).await {
            Some(p) => Ok(p),
            None => {
                self.metrics.refused.fetch_add(1, Ordering::Relaxed);
                Err(ApiError::busy(&self.name))
            }
        }
    }
}

impl ApiState {
    fn served(&self) -> Result<&[Served], ApiError> {
        self.models
            .get()
            .map(Vec::as_slice)
            .ok_or_else(|| ApiError::unavailable("the models are loading; retry shortly"))
    }

    /// The model named `name`, or 404.
    fn model(&self, name: &str) -> Result<&Served, ApiError> {
        let all = self.served()?;
        all.iter().find(|m| m.name == name).ok_or_else(|| {
            let names: Vec<String> = all.iter().map(|m| m.name.clone()).collect();
            ApiError::no_model(name, &names)
        })
    }

    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }
}

/// Runs `f` (template rendering, tokenizing, a classification: work that grows with the
/// request) on the blocking pool, so that the async threads stay free for `/health` and the
/// streams.
pub(crate) async fn blocking<T, E>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the request's work failed: {e}")))?
        .map_err(Into::into)
}

/// Texts of a request: one string or several; for `/v1/embeddings`, also objects naming a
/// text or a picture (edgecut's extension for CLIP models).
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Input {
    One(String),
    Many(Vec<String>),
    Items(Vec<InputItem>),
    Other(serde::de::IgnoredAny),
}

/// One input of a mixed list: a string, `{"text": ...}`, or `{"image": "data:image/...;base64,..."}`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum InputItem {
    Text(String),
    Object {
        #[serde(default)]
        text: Option<String>,
        #[serde(default)]
        image: Option<String>,
    },
}

/// An input after parsing: a text, or a picture's encoded bytes.
pub(crate) enum Item {
    Text(String),
    Image(Vec<u8>),
}

impl Input {
    fn texts(self) -> Result<Vec<String>, ApiError> {
        let items = self.items()?;
        items
            .into_iter()
            .map(|i| match i {
                Item::Text(t) => Ok(t),
                Item::Image(_) => Err(ApiError::param(
                    "input",
                    "images are taken by /v1/embeddings with a CLIP model only",
                )),
            })
            .collect()
    }

    /// Texts and pictures in input order (a picture as a base64 `data:` URL, decoded).
    fn items(self) -> Result<Vec<Item>, ApiError> {
        match self {
            Input::One(s) => Ok(vec![Item::Text(s)]),
            Input::Many(v) => Ok(v.into_iter().map(Item::Text).collect()),
            Input::Items(v) => v
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    InputItem::Text(t)
                    | InputItem::Object {
                        text: Some(t),
                        image: None,
                    } => Ok(Item::Text(t)),
                    InputItem::Object {
                        text: None,
                        image: Some(url),
                    } => data_url(&url)
                        .map(Item::Image)
                        .map_err(|why| ApiError::param("input", format!("input {i}: {why}"))),
                    InputItem::Object { .. } => Err(ApiError::param(
                        "input",
                        format!("input {i}: an object needs one of \"text\" or \"image\""),
                    )),
                })
                .collect(),
            Input::Other(_) => Err(ApiError::param(
                "input",
                "`input` must be a string or an array of strings (token arrays are not taken)",
            )),
        }
    }
}

/// Why an image item is not a usable `data:` URL.
#[derive(Debug, thiserror::Error)]
enum DataUrlError {
    #[error("an image must be a data: URL (data:image/png;base64,...); edgecut fetches nothing")]
    NotData,
    #[error("the data: URL has no comma before its data")]
    NoComma,
    #[error("the data: URL is {0:?}, not base64")]
    NotBase64(String),
    #[error("the data: URL's base64 is invalid: {0}")]
    BadBase64(base64::DecodeError),
}

/// The bytes of a `data:[media type];base64,...` URL.
fn data_url(url: &str) -> Result<Vec<u8>, DataUrlError> {
    use base64::Engine;
    let rest = url.strip_prefix("data:").ok_or(DataUrlError::NotData)?;
    let (meta, data) = rest.split_once(',').ok_or(DataUrlError::NoComma)?;
    if !meta.ends_with(";base64") {
        return Err(DataUrlError::NotBase64(meta.to_string()));
    }
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(DataUrlError::BadBase64)
}

/// The name a model file is served under: its file name without `.gguf`.
pub fn model_name(path: &std::path::Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    name.strip_suffix(".gguf")
        .map(str::to_string)
        .unwrap_or(name)
}
