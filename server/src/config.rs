//! How `edgecut serve` runs: every limit it enforces, with its default. `docs/wire.md` lists
//! them with the CLI flags that set them.

use std::sync::Arc;
use std::time::Duration;

use edgecut_wire::Limits;

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The access token clients must send (none: no token needed).
    pub token: Option<Vec<u8>>,
    /// Most texts in one request (advertised in HELLO_OK and enforced) and in one batch.
    pub max_batch: usize,
    /// Most tokens (texts x padded length) in one request: the compute one request may ask for.
    pub max_request_tokens: usize,
    /// Bytes that requests may hold at once, over all connections: each request's frame and its
    /// decoded activation are counted from its first bytes until it is answered. A request that
    /// does not fit waits for others to finish (up to `frame_timeout`), then is refused.
    pub max_request_memory: usize,
    /// How long the first request of a batch waits for others.
    pub max_wait: Duration,
    /// Whether requests of different connections are batched together.
    pub batching: bool,
    /// Time a new connection has to send its HELLO.
    pub hello_timeout: Duration,
    /// Time a started frame has to arrive whole (slow or stalled senders are dropped).
    pub frame_timeout: Duration,
    /// Time a connection may stay silent between requests.
    pub idle_timeout: Duration,
    /// Time a reply has to be taken by the client (a client that does not read is dropped).
    pub write_timeout: Duration,
    /// After a shutdown signal, time given to requests in flight before the queue is dropped
    /// (their clients get an UNAVAILABLE error).
    pub drain_timeout: Duration,
    /// Most connections open at once (more are refused at once).
    pub max_connections: usize,
    /// Kernel send buffer per connection, bytes (at least 4 replies of `max_batch` texts are
    /// allowed for): fixed rather than autotuned, so that a client that does not read holds
    /// little socket memory and meets the write timeout soon.
    pub send_buffer: usize,
    /// Failed HELLOs (wrong token) allowed per client address per minute, in a burst of as
    /// many; past it, HELLOs from that address are refused unchecked until it refills.
    pub failed_hellos_per_minute: u32,
    /// Decoder sessions open at once over all connections (more are refused: UNAVAILABLE).
    pub max_sessions: usize,
    /// Most positions one decoder session may hold (at most the model's context).
    pub max_session_context: usize,
    /// Decoder sessions one connection may hold; where no token is asked, one client address
    /// too.
    pub max_sessions_per_client: usize,
    /// Rows of long steps (prompts) in one decode batch, beside every session's token step:
    /// a device's token waits for at most one batch of this many rows more (a session alone
    /// on the server gets pieces of 256).
    pub decode_batch_rows: usize,
    /// A decoder session unused this long is evicted and its KV cache freed.
    pub session_idle_timeout: Duration,
    /// Frame limits.
    pub limits: Limits,
    /// TLS: when set, every connection must complete a TLS handshake (within `hello_timeout`)
    /// before its HELLO.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            token: None,
            max_batch: 32,
            max_request_tokens: 32 * 512,
            max_request_memory: 1 << 30,
            max_wait: Duration::from_millis(2),
            batching: true,
            hello_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            max_connections: 4096,
            send_buffer: 256 << 10,
            failed_hellos_per_minute: 10,
            max_sessions: 16,
            max_session_context: 2048,
            max_sessions_per_client: 4,
            decode_batch_rows: 4,
            session_idle_timeout: Duration::from_secs(60),
            limits: Limits::default(),
            tls: None,
        }
    }
}

/// Limits of an HTTP listener (the metrics endpoint).
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// Most connections open at once (more are closed at once).
    pub max_connections: usize,
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Longest a connection may stay open, requests included.
    pub connection_timeout: Duration,
    /// Time a response's write may wait for the client to read (then the connection closes).
    pub write_timeout: Duration,
    /// Kernel send buffer per connection, bytes: fixed rather than autotuned, so that a client
    /// that stops reading meets the write timeout soon and holds little socket memory.
    pub send_buffer: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 64,
            header_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            send_buffer: 64 << 10,
        }
    }
}
