//! The server's counters and gauges, and the Prometheus endpoint that shows them
//! (`GET /metrics`; other paths 404, other methods 405, through [`crate::http`]).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::config::HttpLimits;

/// Counters (totals since start) and gauges (values now) for the metrics endpoint.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests answered with a result.
    pub requests: AtomicU64,
    /// Requests or connections answered with an error.
    pub errors: AtomicU64,
    /// Batches run.
    pub batches: AtomicU64,
    /// Requests over all batches (mean batch size = this / batches).
    pub batched_requests: AtomicU64,
    /// Microseconds requests waited in the queue, summed.
    pub queue_us: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Requests dropped unrun because their client had gone.
    pub cancelled: AtomicU64,
    /// HELLOs refused for a missing or wrong token.
    pub unauthorized: AtomicU64,
    /// HELLOs refused unchecked because their address failed too often.
    pub rate_limited: AtomicU64,
    /// Requests refused because the request memory was full.
    pub over_memory: AtomicU64,
    /// Connections dropped because a reply was not taken within the write timeout.
    pub write_timeouts: AtomicU64,
    /// Connections dropped because a frame or a HELLO did not arrive in time.
    pub read_timeouts: AtomicU64,
    /// Connections open now.
    pub open_connections: AtomicI64,
    /// Requests queued or running now.
    pub queued: AtomicI64,
    /// Bytes held by requests now (frames and decoded activations).
    pub request_bytes: AtomicI64,
    /// Decoder sessions open now.
    pub sessions: AtomicI64,
    /// Bytes of the decoder sessions' KV caches now.
    pub kv_bytes: AtomicI64,
    /// Decoder sessions evicted for idling.
    pub evicted: AtomicU64,
    /// Decoder steps run.
    pub decode_steps: AtomicU64,
    /// Positions run by decoder steps (prompt chunks and generated tokens).
    pub decode_rows: AtomicU64,
    /// Batches of decoder steps run (mean batch = `decode_batched / decode_batches`).
    pub decode_batches: AtomicU64,
    /// Decoder steps over all batches (a long step cut into pieces counts once per piece).
    pub decode_batched: AtomicU64,
    /// Decoder steps dropped unfinished because their connection went away.
    pub decode_dropped: AtomicU64,
}

impl Metrics {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let g = |a: &AtomicI64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: String| {
            out += &format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n");
        };
        counter(
            "edgecut_requests_total",
            "Requests answered with a result.",
            c(&self.requests).to_string(),
        );
        counter(
            "edgecut_errors_total",
            "Requests or connections answered with an error.",
            c(&self.errors).to_string(),
        );
        counter(
            "edgecut_batches_total",
            "Batches run.",
            c(&self.batches).to_string(),
        );
        counter(
            "edgecut_batched_requests_total",
            "Requests over all batches.",
            c(&self.batched_requests).to_string(),
        );
        counter(
            "edgecut_queue_seconds_total",
            "Seconds requests waited in the queue, summed.",
            format!("{:.6}", c(&self.queue_us) as f64 / 1e6),
        );
        counter(
            "edgecut_connections_total",
            "Connections accepted.",
            c(&self.connections).to_string(),
        );
        counter(
            "edgecut_cancelled_total",
            "Requests dropped unrun because their client had gone.",
            c(&self.cancelled).to_string(),
        );
        counter(
            "edgecut_unauthorized_total",
            "HELLOs refused for a missing or wrong token.",
            c(&self.unauthorized).to_string(),
        );
        counter(
            "edgecut_rate_limited_total",
            "HELLOs refused unchecked after too many failures from their address.",
            c(&self.rate_limited).to_string(),
        );
        counter(
            "edgecut_over_memory_total",
            "Requests refused because the request memory was full.",
            c(&self.over_memory).to_string(),
        );
        counter(
            "edgecut_write_timeouts_total",
            "Connections dropped for not taking a reply in time.",
            c(&self.write_timeouts).to_string(),
        );
        counter(
            "edgecut_read_timeouts_total",
            "Connections dropped for a frame or HELLO that did not arrive in time.",
            c(&self.read_timeouts).to_string(),
        );
        counter(
            "edgecut_sessions_evicted_total",
            "Decoder sessions evicted for idling.",
            c(&self.evicted).to_string(),
        );
        counter(
            "edgecut_decode_steps_total",
            "Decoder steps run.",
            c(&self.decode_steps).to_string(),
        );
        counter(
            "edgecut_decode_positions_total",
            "Positions run by decoder steps.",
            c(&self.decode_rows).to_string(),
        );
        counter(
            "edgecut_decode_batches_total",
            "Batches of decoder steps run (sessions stepped together).",
            c(&self.decode_batches).to_string(),
        );
        counter(
            "edgecut_decode_batched_steps_total",
            "Decoder steps over all batches (a long step's pieces each count).",
            c(&self.decode_batched).to_string(),
        );
        counter(
            "edgecut_decode_dropped_steps_total",
            "Decoder steps dropped unfinished because their connection went away.",
            c(&self.decode_dropped).to_string(),
        );
        let mut gauge = |name: &str, help: &str, v: i64| {
            out += &format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n");
        };
        gauge(
            "edgecut_open_connections",
            "Connections open now.",
            g(&self.open_connections),
        );
        gauge(
            "edgecut_queued_requests",
            "Requests queued or running now.",
            g(&self.queued),
        );
        gauge(
            "edgecut_request_bytes",
            "Bytes held by requests now.",
            g(&self.request_bytes),
        );
        gauge(
            "edgecut_sessions",
            "Decoder sessions open now.",
            g(&self.sessions),
        );
        gauge(
            "edgecut_kv_bytes",
            "Bytes of the decoder sessions' KV caches now.",
            g(&self.kv_bytes),
        );
        out
    }
}

/// Serves the metrics in Prometheus text format at `GET /metrics` on `listener`.
pub async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>, limits: HttpLimits) {
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move { ([(CONTENT_TYPE, "text/plain; version=0.0.4")], m.render()) }
        }),
    );
    crate::http::serve_http(listener, app, limits).await
}
