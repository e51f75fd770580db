//! Split inference over the network: `edgecut serve` ([`serve`]) and the device client
//! ([`SplitClient`]), speaking the frames of `edgecut-wire`.

mod client;
mod serve;

pub use client::{ClientConfig, SplitClient, SplitOutcome};
pub use serve::{serve, serve_metrics, Metrics, ServeConfig};
