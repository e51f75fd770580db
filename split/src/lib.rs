//! The device side of split inference, blocking and without an async runtime, so the CLI and
//! the C ABI (`edgecut-mobile`) share it: a [`SplitClient`] runs the stages before the cut,
//! sends the activation to `edgecut serve` (crate `edgecut-server`), and falls back to running
//! everything on the device when the server is unreachable, refuses, or fails. With
//! [`AutoCut`] it picks the cut per request from profiles and the link it measures. TLS is the
//! `tls` feature ([`TlsClient`]). Decoders split token by token through a [`DecoderLink`].

mod auto;
mod client;
mod decode_auto;
mod decoder;
mod error;
mod tls;

pub use auto::{AutoCut, LinkEstimate};
pub use client::{ClientConfig, SplitClient, SplitOutcome};
pub use decode_auto::{DecodeAuto, DecodeTurn};
pub use decoder::{DecoderLink, LinkStats, StepStats};
pub use error::SplitError;
#[cfg(feature = "tls")]
pub use tls::pem_certs;
pub use tls::TlsClient;
