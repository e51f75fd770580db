//! `edgecut serve` ([`serve`]): the server side of split inference on tokio, speaking the
//! frames of `edgecut-wire`, optionally over TLS ([`tls_server_config`]), with every limit of
//! [`ServeConfig`] enforced (`docs/wire.md` lists them); its Prometheus endpoint
//! ([`serve_metrics`]); and a user-space link shaper ([`shape`]) for tests and demos. The
//! device side is `edgecut-split` (blocking, no tokio), re-exported here for callers that use
//! both.

pub mod api;
mod batcher;
mod config;
mod connection;
mod decode_batcher;
mod guard;
mod http;
mod metrics;
mod serve;
mod sessions;
mod shaper;
mod tls;
mod write_deadline;

pub use config::{HttpLimits, ServeConfig};
pub use edgecut_split::{
    AutoCut, ClientConfig, DecodeAuto, DecodeTurn, DecoderLink, LinkEstimate, LinkStats,
    SplitClient, SplitError, SplitOutcome, StepStats, TlsClient,
};
pub use guard::{read_token_file, TokenFileError};
pub use http::{serve_http, serve_http_until};
pub use metrics::{serve_metrics, Metrics};
pub use serve::serve;
pub use shaper::{shape, shape_controlled, Shape, ShapeControl};
pub use tls::server_config as tls_server_config;
