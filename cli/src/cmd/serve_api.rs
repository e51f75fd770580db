//! `edgecut serve --http`: the flags of the OpenAI-compatible API and the loading of the
//! models it serves.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use edgecut_server::api::{model_name, ApiConfig, ApiModel};
use edgecut_server::HttpLimits;

use super::session::EncoderArgs;

/// The HTTP API's flags.
#[derive(clap::Args, Clone)]
pub struct HttpArgs {
    /// Serve the OpenAI-compatible HTTP API at this address (docs/openapi.yaml).
    #[arg(long)]
    pub http: Option<String>,
    /// The API key clients must send as `Authorization: Bearer KEY`.
    #[arg(long, conflicts_with = "api_key_file")]
    api_key: Option<String>,
    /// A file holding the API key (ASCII whitespace around it is trimmed).
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// Ask the API key on /health and /metrics too (open by default, for probes and scrapers).
    #[arg(long)]
    api_key_for_health: bool,
    /// Generations run at once per generation model, each with its own KV cache.
    #[arg(long, default_value_t = 8)]
    http_slots: usize,
    /// Requests run at once per embedding model (their texts join batches).
    #[arg(long, default_value_t = 128)]
    http_max_concurrent: usize,
    /// Requests that may wait for a place per model; past it, 429 with Retry-After.
    #[arg(long, default_value_t = 256)]
    http_max_queue: usize,
    /// Largest request body, KiB (past it, 413).
    #[arg(long, default_value_t = 2048)]
    http_max_body_kb: usize,
    /// Most texts in one embedding or classification request.
    #[arg(long, default_value_t = 512)]
    http_max_inputs: usize,
    /// Most tokens one generation may ask for (and chat's default).
    #[arg(long, default_value_t = 2048)]
    http_max_tokens: usize,
    /// Tokens at which an embedding batch closes (with --max-wait-ms, the longest wait); a
    /// larger request runs in batches of this many, beside others' requests, so a request
    /// waits for at most about two such batches.
    #[arg(long, default_value_t = 512)]
    http_batch_tokens: usize,
    /// Most HTTP connections open at once.
    #[arg(long, default_value_t = 1024)]
    http_max_connections: usize,
    /// Seconds an HTTP connection may stay open (a long stream included).
    #[arg(long, default_value_t = 600.0)]
    http_connection_timeout: f64,
    /// Seconds a response may wait for its client to read: past it the connection closes, and
    /// a stream whose client stopped reading is stopped and its slot freed.
    #[arg(long, default_value_t = 10.0)]
    http_write_timeout: f64,
    /// Seconds every request body has to arrive (past it and the minimum rate, 408).
    #[arg(long, default_value_t = 10.0)]
    http_body_timeout: f64,
    /// KiB per second a request body must keep up beyond --http-body-timeout.
    #[arg(long, default_value_t = 64)]
    http_body_min_rate_kb: u64,
    /// MiB of request bodies held at once over all connections (a body that does not fit
    /// waits for others until its deadline, then gets 503).
    #[arg(long, default_value_t = 32)]
    http_max_request_memory_mb: usize,
    /// An origin allowed by CORS (repeat for more; `*` for any). None: no CORS headers.
    #[arg(long)]
    cors_origin: Vec<String>,
}

impl HttpArgs {
    /// The API's settings.
    pub fn config(&self, max_wait_ms: f64) -> anyhow::Result<ApiConfig> {
        anyhow::ensure!(self.http_slots >= 1, "--http-slots must be at least 1");
        anyhow::ensure!(
            self.http_max_concurrent >= 1,
            "--http-max-concurrent must be at least 1"
        );
        let api_key = match (&self.api_key, &self.api_key_file) {
            (Some(k), _) => {
                anyhow::ensure!(!k.is_empty(), "--api-key is empty");
                Some(k.as_bytes().to_vec())
            }
            (None, Some(p)) => Some(edgecut_server::read_token_file(p)?),
            (None, None) => None,
        };
        let mut c = ApiConfig::default();
        c.api_key = api_key;
        c.key_for_health_and_metrics = self.api_key_for_health;
        c.slots = self.http_slots;
        c.max_concurrent = self.http_max_concurrent;
        c.max_queue = self.http_max_queue;
        c.max_body_bytes = self.http_max_body_kb.max(1) << 10;
        c.max_inputs = self.http_max_inputs.max(1);
        c.max_tokens = self.http_max_tokens.max(1);
        c.batch_tokens = self.http_batch_tokens.max(1);
        c.max_wait = Duration::from_secs_f64(max_wait_ms.max(0.0) / 1e3);
        c.cors_origins = self.cors_origin.clone();
        c.write_timeout = secs(self.http_write_timeout, "--http-write-timeout")?;
        c.body_timeout = secs(self.http_body_timeout, "--http-body-timeout")?;
        c.body_min_rate = self.http_body_min_rate_kb.max(1) << 10;
        c.max_request_memory = self.http_max_request_memory_mb.max(1) << 20;
        Ok(c)
    }

    /// The API listener's limits.
    pub fn limits(&self) -> HttpLimits {
        HttpLimits {
            max_connections: self.http_max_connections.max(1),
            connection_timeout: Duration::from_secs_f64(self.http_connection_timeout.max(1.0)),
            write_timeout: Duration::from_secs_f64(self.http_write_timeout.clamp(0.1, 1e6)),
            ..HttpLimits::default()
        }
    }
}

/// A positive, finite number of seconds from a flag.
fn secs(v: f64, flag: &str) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        v.is_finite() && v > 0.0 && v <= 1e6,
        "{flag} must be a positive number of seconds"
    );
    Ok(Duration::from_secs_f64(v))
}

/// A model loaded for serving: one `edgecut::Model` (a cheap handle), the API's view of it
/// and its stage count, both made once at load.
pub struct Loaded {
    /// The name clients use.
    pub name: String,
    model: edgecut::Model,
    api: ApiModel,
    stages: usize,
}

impl Loaded {
    /// The model for the split listener, with its stage count and device.
    pub fn split_model(&self) -> (edgecut::Model, usize, String) {
        (self.model.clone(), self.stages, self.model.device())
    }

    /// The model for the API.
    pub fn api_model(&self) -> ApiModel {
        self.api.clone()
    }
}

/// Opens every model file as what its architecture says (the model registry decides).
pub fn load(paths: &[PathBuf], enc: &EncoderArgs) -> anyhow::Result<Vec<Loaded>> {
    paths.iter().map(|p| load_one(p, enc)).collect()
}

fn load_one(path: &Path, enc: &EncoderArgs) -> anyhow::Result<Loaded> {
    let dec = edgecut::LlmOptions::default()
        .with_device(enc.run.device)
        .with_threads(enc.run.threads);
    let opened = edgecut::Model::open(path, &enc.options(), &dec)
        .with_context(|| format!("opening {}", path.display()))?;
    let name = model_name(path);
    let (api, stages) = match &opened {
        edgecut::Model::Encoder(s) => {
            if enc.run.device != edgecut::DeviceKind::Cpu {
                eprintln!("device: {}", s.device());
            }
            let api = ApiModel::Embedder {
                name: name.clone(),
                session: s.clone(),
            };
            (api, s.stage_count())
        }
        edgecut::Model::Decoder(l) => {
            let api = ApiModel::Generator {
                name: name.clone(),
                llm: l.clone(),
            };
            (api, l.blocks())
        }
        other => anyhow::bail!(
            "{}: a model kind this server does not serve",
            other.device()
        ),
    };
    Ok(Loaded {
        name,
        model: opened,
        api,
        stages,
    })
}
