//! Split inference over the network: `edgecut serve` ([`serve`]) and the device client
//! ([`SplitClient`]), speaking the frames of `edgecut-wire`, and a user-space link shaper
//! ([`shape`]) for tests and demos. The link may run over TLS ([`tls_server_config`],
//! [`TlsClient`]).

mod auto;
mod client;
mod error;
mod serve;
mod shaper;
mod tls;

pub use auto::{AutoCut, LinkEstimate};
pub use client::{ClientConfig, SplitClient, SplitOutcome};
pub use error::SplitError;
pub use serve::{serve, serve_metrics, Metrics, ServeConfig};
pub use shaper::{shape, shape_controlled, Shape, ShapeControl};
pub use tls::{server_config as tls_server_config, TlsClient};
