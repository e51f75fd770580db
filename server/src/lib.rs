//! Split inference over the network: `edgecut serve` ([`serve`]) and the device client
//! ([`SplitClient`]), speaking the frames of `edgecut-wire`, and a user-space link shaper
//! ([`shape`]) for tests and demos.

mod client;
mod serve;
mod shaper;

pub use client::{ClientConfig, SplitClient, SplitOutcome};
pub use serve::{serve, serve_metrics, Metrics, ServeConfig};
pub use shaper::{shape, Shape};
