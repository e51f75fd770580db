//! `edgecut serve`: accepts device connections (each one a [`crate::connection`]), runs their
//! requests through one fair queue ([`crate::batcher`]), and shuts down in bounded time.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::batcher::batcher;
use crate::config::ServeConfig;
use crate::connection::{connection, Ctx};
use crate::decode_batcher::decode_batcher;
use crate::guard::FailedHellos;
use crate::metrics::Metrics;
use crate::sessions::Decoding;

/// Where the server is in its life; connections and the queue watch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Accepting and serving.
    Running,
    /// No new connections or requests; requests in flight are answered; idle connections are
    /// told and closed.
    Draining,
    /// The drain time is over: the queue is dropped and every client still waiting is told.
    Stopping,
}

/// Serves `model` on `listener` until `shutdown` completes (an encoder: devices send INFER
/// requests split at any stage; a decoder: devices open sessions and send the hidden states at
/// their cut, token by token); then stops accepting, answers
/// the requests in flight for up to `cfg.drain_timeout`, tells every other client that the
/// server is shutting down (an UNAVAILABLE error) and returns once the model run in progress,
/// if any, ends.
pub async fn serve(
    model: edgecut::Model,
    listener: TcpListener,
    cfg: ServeConfig,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    // Every connection has at most one request queued.
    let (tx, rx) = mpsc::channel(cfg.max_connections.max(1));
    let (phase_tx, phase) = watch::channel(Phase::Running);
    let mut decode_task = None;
    let (session, decoding, model_id) = match model {
        edgecut::Model::Encoder(s) => {
            let id = s.model_id().0;
            (Some(s), None, id)
        }
        edgecut::Model::Decoder(llm) => {
            let (jobs, queue) = mpsc::channel(cfg.max_sessions.max(1));
            decode_task = Some(tokio::spawn(decode_batcher(
                queue,
                metrics.clone(),
                llm.hidden_size(),
                cfg.decode_batch_rows,
                phase.clone(),
            )));
            let d = Decoding {
                slots: Arc::new(Semaphore::new(cfg.max_sessions)),
                jobs,
                max_context: cfg.max_session_context.min(llm.context_len()),
                idle: cfg.session_idle_timeout,
                per_client: cfg.max_sessions_per_client.max(1),
                by_address: cfg.token.is_none().then(Default::default),
                llm,
            };
            let id = d.llm.model_id().0;
            (None, Some(d), id)
        }
        other => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{other:?}: a kind of model the split server does not serve"),
            ))
        }
    };
    let batch_task = match &session {
        Some(s) => tokio::spawn(batcher(
            s.clone(),
            rx,
            cfg.clone(),
            metrics.clone(),
            phase.clone(),
        )),
        None => tokio::spawn(async {}),
    };
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let memory_kib = (cfg.max_request_memory / 1024).clamp(1, Semaphore::MAX_PERMITS);
    let ctx = Arc::new(Ctx {
        hellos: FailedHellos::new(cfg.failed_hellos_per_minute),
        memory: Arc::new(Semaphore::new(memory_kib)),
        cfg,
        session,
        decoding,
        model_id,
        metrics,
        jobs: tx,
        phase,
    });
    // Four of the largest replies fit, whatever the configured size.
    let dim = ctx.session.as_ref().map_or(0, |s| s.embedding_dim());
    let largest_reply = ctx.cfg.max_batch * dim * 4 + 64;
    let send_buffer = ctx.cfg.send_buffer.max(4 * largest_reply);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            acc = listener.accept() => {
                let Ok((s, peer)) = acc else {
                    // Out of file descriptors or a transient error: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    // Over the limit: refuse at once.
                    drop(s);
                    continue;
                };
                let _ = s.set_nodelay(true);
                let _ = socket2::SockRef::from(&s).set_send_buffer_size(send_buffer);
                ctx.metrics.connections.fetch_add(1, Ordering::Relaxed);
                let c = ctx.clone();
                let tls = c.cfg.tls.clone().map(tokio_rustls::TlsAcceptor::from);
                conns.spawn(async move {
                    match tls {
                        None => connection(s, peer.ip(), c).await,
                        Some(acceptor) => {
                            let hs = tokio::time::timeout(c.cfg.hello_timeout, acceptor.accept(s));
                            match hs.await {
                                Ok(Ok(t)) => connection(t, peer.ip(), c).await,
                                // A failed or stalled handshake (plain frames included) ends
                                // only this connection.
                                _ => {
                                    c.metrics.errors.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    drop(permit);
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = phase_tx.send(Phase::Draining);
    let drain = ctx.cfg.drain_timeout;
    let _ = tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
    let _ = phase_tx.send(Phase::Stopping);
    // Every connection left is told now; one whose client does not read gets the write
    // timeout, capped so that the exit stays near the drain time.
    let grace = ctx.cfg.write_timeout.min(Duration::from_secs(2));
    let _ = tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    conns.abort_all();
    drop(ctx);
    // Ends when the group running now does: a model run cannot be interrupted.
    let _ = batch_task.await;
    if let Some(t) = decode_task {
        let _ = t.await;
    }
    Ok(())
}
