//! `edgecut serve`: the server side of split inference, and the OpenAI-compatible HTTP API
//! (`--http`, [`super::serve_api`]), alone or beside it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use edgecut_server::{Metrics, ServeConfig};

use super::serve_api::{load, HttpArgs, Loaded};
use super::session::EncoderArgs;

/// Arguments of `edgecut serve`.
#[derive(clap::Args)]
pub struct Args {
    /// A model file (GGUF); repeat for more (the HTTP API serves each under its file name
    /// without `.gguf`; the split listener serves the first).
    #[arg(short = 'm', long = "model", required = true)]
    models: Vec<PathBuf>,
    #[command(flatten)]
    enc: EncoderArgs,
    /// Address of the split listener (default 127.0.0.1:7070; with --http, none unless given).
    #[arg(long)]
    listen: Option<String>,
    #[command(flatten)]
    http: HttpArgs,
    /// A file holding the token clients must send (none: no token needed).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Most texts in one request (advertised to clients) and in one batch across clients.
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
    /// Most tokens (texts x padded length) one request may ask the model to run.
    #[arg(long, default_value_t = 32 * 512)]
    max_request_tokens: usize,
    /// MiB that requests may hold at once over all clients (frames and decoded activations);
    /// a request that does not fit waits up to --frame-timeout, then is refused.
    #[arg(long, default_value_t = 1024)]
    max_request_memory_mb: usize,
    /// Most client connections open at once.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Longest wait, in ms, for more requests to join a batch.
    #[arg(long, default_value_t = 2.0)]
    max_wait_ms: f64,
    /// Run each request alone.
    #[arg(long)]
    no_batching: bool,
    /// Seconds a client has to send a whole frame (and its HELLO) before it is dropped.
    #[arg(long, default_value_t = 10.0)]
    frame_timeout: f64,
    /// Seconds a client may stay silent between requests.
    #[arg(long, default_value_t = 120.0)]
    idle_timeout: f64,
    /// Seconds a client has to take a reply before it is dropped.
    #[arg(long, default_value_t = 10.0)]
    write_timeout: f64,
    /// Seconds given to requests in flight after SIGTERM or Ctrl-C (a second one exits at once).
    #[arg(long, default_value_t = 10.0)]
    drain_timeout: f64,
    /// Decoder sessions open at once over all clients (a decoder model).
    #[arg(long, default_value_t = 16)]
    max_sessions: usize,
    /// Most positions one decoder session may hold (at most the model's context, and 2048).
    #[arg(long, default_value_t = 2048)]
    max_session_context: usize,
    /// Decoder sessions one connection may hold (and one address, where no token is asked).
    #[arg(long, default_value_t = 4)]
    max_sessions_per_client: usize,
    /// Rows of long (prompt) steps in one decode batch, beside every device's token step: a
    /// token waits for at most one batch of this many rows more (a session alone on the
    /// server gets pieces of 256).
    #[arg(long, default_value_t = 4)]
    decode_batch_rows: usize,
    /// Seconds a decoder session may stay unused before it is evicted.
    #[arg(long, default_value_t = 60.0)]
    session_idle_timeout: f64,
    /// Failed HELLOs (wrong token) allowed per client address per minute.
    #[arg(long, default_value_t = 10)]
    failed_hellos_per_minute: u32,
    /// Serve Prometheus metrics over HTTP at this address.
    #[arg(long)]
    metrics: Option<String>,
    /// TLS: the server's certificate chain, PEM (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS: the certificate's private key, PEM.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// Runs `edgecut serve` until Ctrl-C or SIGTERM; requests in flight are answered first.
pub fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.max_batch >= 1, "--max-batch must be at least 1");
    anyhow::ensure!(
        a.max_connections >= 1,
        "--max-connections must be at least 1"
    );
    anyhow::ensure!(
        a.max_request_memory_mb >= 1,
        "--max-request-memory-mb must be at least 1"
    );
    let token = match &a.token_file {
        Some(p) => Some(edgecut_server::read_token_file(p)?),
        None => None,
    };
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => {
            Some(edgecut_server::tls_server_config(c, k).map_err(anyhow::Error::msg)?)
        }
        _ => None,
    };
    raise_fd_limit();
    let listen = match (&a.listen, &a.http.http) {
        (Some(l), _) => Some(l.clone()),
        (None, None) => Some("127.0.0.1:7070".to_string()),
        (None, Some(_)) => None,
    };
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.001));
    let cfg = ServeConfig {
        token,
        max_batch: a.max_batch,
        max_wait: Duration::from_secs_f64(a.max_wait_ms.max(0.0) / 1e3),
        batching: !a.no_batching,
        hello_timeout: secs(a.frame_timeout),
        frame_timeout: secs(a.frame_timeout),
        idle_timeout: secs(a.idle_timeout),
        write_timeout: secs(a.write_timeout),
        drain_timeout: Duration::from_secs_f64(a.drain_timeout.max(0.0)),
        max_request_tokens: a.max_request_tokens,
        max_request_memory: a.max_request_memory_mb << 20,
        max_connections: a.max_connections,
        failed_hellos_per_minute: a.failed_hellos_per_minute,
        max_sessions: a.max_sessions,
        max_session_context: a.max_session_context,
        max_sessions_per_client: a.max_sessions_per_client.max(1),
        decode_batch_rows: a.decode_batch_rows.max(1),
        session_idle_timeout: secs(a.session_idle_timeout),
        tls: tls.clone(),
        ..ServeConfig::default()
    };
    let api_cfg = a.http.config(a.max_wait_ms)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let metrics = Arc::new(Metrics::default());
        if let Some(m) = &a.metrics {
            let l = tokio::net::TcpListener::bind(m)
                .await
                .with_context(|| format!("metrics on {m}"))?;
            eprintln!("serve: metrics on http://{}", l.local_addr()?);
            let limits = edgecut_server::HttpLimits::default();
            tokio::spawn(edgecut_server::serve_metrics(l, metrics.clone(), limits));
        }
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut stop = stop.clone();
            async move {
                let _ = stop.wait_for(|s| *s).await;
            }
        };
        // The API listens before the models load: /health answers 503 until they are in.
        let api = match &a.http.http {
            None => None,
            Some(addr) => {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("HTTP API on {addr}"))?;
                let split_metrics = listen.is_some().then(|| metrics.clone());
                let api = edgecut_server::api::Api::new(api_cfg, split_metrics);
                eprintln!(
                    "serve: HTTP API on {}://{} (loading models)",
                    if tls.is_some() { "https" } else { "http" },
                    l.local_addr()?
                );
                let task = tokio::spawn(edgecut_server::serve_http_until(
                    l,
                    api.router(),
                    a.http.limits(),
                    tls.clone(),
                    stopped(),
                    cfg.drain_timeout,
                ));
                Some((api, task))
            }
        };
        let (paths, enc) = (a.models.clone(), a.enc.clone());
        let loaded = tokio::task::spawn_blocking(move || load(&paths, &enc)).await??;
        let split_model = loaded.first().map(Loaded::split_model);
        if let Some((api, _)) = &api {
            let names: Vec<String> = loaded.iter().map(|m| m.name.clone()).collect();
            api.ready(loaded.iter().map(Loaded::api_model).collect())?;
            eprintln!("serve: HTTP API ready: {}", names.join(", "));
        }
        let mut signals = Signals::new();
        let drain = a.drain_timeout;
        let api_handle = api.as_ref().map(|(api, _)| api.clone());
        let shutdown = async move {
            signals.next().await;
            eprintln!(
                "serve: shutting down; answering requests in flight for up to {drain} s (a second \
                 signal exits at once)"
            );
            if let Some(api) = api_handle {
                api.drain();
            }
            let _ = stop_tx.send(true);
            tokio::spawn(async move {
                signals.next().await;
                eprintln!("serve: second signal; exiting now");
                std::process::exit(130);
            });
        };
        match (listen, split_model) {
            (Some(addr), Some((served, stages, device))) => {
                let listener = tokio::net::TcpListener::bind(&addr)
                    .await
                    .with_context(|| format!("listening on {addr}"))?;
                eprintln!(
                    "serve: {} ({} stages) on {}{} at {}",
                    a.models[0].display(),
                    stages,
                    device,
                    if a.tls_cert.is_some() { ", TLS" } else { "" },
                    listener.local_addr()?
                );
                let split = edgecut_server::serve(served, listener, cfg, metrics, shutdown);
                match api {
                    Some((_, task)) => {
                        let (s, t) = tokio::join!(split, task);
                        s?;
                        t?;
                    }
                    None => split.await?,
                }
            }
            _ => {
                shutdown.await;
                if let Some((_, task)) = api {
                    task.await?;
                }
            }
        }
        anyhow::Ok(())
    })
}

/// Ctrl-C and (on Unix) SIGTERM, registered once so that a second signal is never missed.
struct Signals {
    #[cfg(unix)]
    both: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let both = signal(SignalKind::terminate())
                .and_then(|t| Ok((t, signal(SignalKind::interrupt())?)))
                .ok();
            Signals { both }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some((term, int)) = &mut self.both {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Raises the soft limit on open files to the hard limit: every client is a descriptor.
fn raise_fd_limit() {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}
