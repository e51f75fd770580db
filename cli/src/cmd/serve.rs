//! `edgecut serve`: the server side of split inference.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use edgecut_server::{Metrics, ServeConfig};

use super::session::ModelArgs;

/// Arguments of `edgecut serve`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: String,
    /// A file holding the token clients must send (none: no token needed).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Most texts batched together across clients.
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
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
    let token = match &a.token_file {
        Some(p) => {
            let t = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let t = String::from_utf8_lossy(&t).trim().as_bytes().to_vec();
            anyhow::ensure!(!t.is_empty(), "{} is empty", p.display());
            Some(t)
        }
        None => None,
    };
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => {
            Some(edgecut_server::tls_server_config(c, k).map_err(anyhow::Error::msg)?)
        }
        _ => None,
    };
    raise_fd_limit();
    let session = Arc::new(a.model.open()?);
    let id = session.model_id();
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.001));
    let cfg = ServeConfig {
        token,
        max_batch: a.max_batch,
        max_wait: Duration::from_secs_f64(a.max_wait_ms.max(0.0) / 1e3),
        batching: !a.no_batching,
        hello_timeout: secs(a.frame_timeout),
        frame_timeout: secs(a.frame_timeout),
        idle_timeout: secs(a.idle_timeout),
        tls,
        ..ServeConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&a.listen)
            .await
            .with_context(|| format!("listening on {}", a.listen))?;
        let metrics = Arc::new(Metrics::default());
        if let Some(m) = &a.metrics {
            let l = tokio::net::TcpListener::bind(m)
                .await
                .with_context(|| format!("metrics on {m}"))?;
            eprintln!("serve: metrics on http://{}", l.local_addr()?);
            tokio::spawn(edgecut_server::serve_metrics(l, metrics.clone()));
        }
        eprintln!(
            "serve: {} ({} stages) on {}{} at {}",
            a.model.model.display(),
            session.stage_count(),
            session.device(),
            if a.tls_cert.is_some() { ", TLS" } else { "" },
            listener.local_addr()?
        );
        let shutdown = async {
            #[cfg(unix)]
            {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("install a SIGTERM handler");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("serve: shutting down; answering requests in flight");
        };
        edgecut_server::serve(session, id.0, listener, cfg, metrics, shutdown).await?;
        anyhow::Ok(())
    })
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
