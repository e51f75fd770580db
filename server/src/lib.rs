//! Split inference over the network: `edgecut serve` ([`serve`]) and the device client
//! ([`SplitClient`]), speaking the frames of `edgecut-wire`, and a user-space link shaper
//! ([`shape`]) for tests and demos. The link may run over TLS ([`tls_server_config`],
//! [`TlsClient`]).

mod client;
mod serve;
mod shaper;
mod tls;

pub use client::{ClientConfig, SplitClient, SplitOutcome};
pub use serve::{serve, serve_metrics, Metrics, ServeConfig};
pub use shaper::{shape, Shape};
pub use tls::{server_config as tls_server_config, TlsClient};
