//! `edgecut serve` ([`serve`]): the server side of split inference on tokio, speaking the
//! frames of `edgecut-wire`, optionally over TLS ([`tls_server_config`]); and a user-space link
//! shaper ([`shape`]) for tests and demos. The device side is `edgecut-split` (blocking, no
//! tokio), re-exported here for callers that use both.

mod serve;
mod shaper;
mod tls;

pub use edgecut_split::{
    AutoCut, ClientConfig, LinkEstimate, SplitClient, SplitError, SplitOutcome, TlsClient,
};
pub use serve::{serve, serve_metrics, Metrics, ServeConfig};
pub use shaper::{shape, shape_controlled, Shape, ShapeControl};
pub use tls::server_config as tls_server_config;
