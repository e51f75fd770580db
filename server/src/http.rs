//! HTTP/1.1 listeners (the metrics endpoint, the API) on hyper, with the split listener's
//! properties: a connection limit, header and connection timeouts, hyper's header-size limit
//! (431), a deadline on every write (a client that stops reading loses its connection), an
//! accept loop that backs off when descriptors run out instead of spinning,
//! optional TLS (the server's rustls set-up), and a graceful shutdown that lets requests in
//! flight finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::HttpLimits;
use crate::write_deadline::WriteDeadline;

/// Serves `app` on `listener` until the task is dropped.
pub async fn serve_http(listener: TcpListener, app: axum::Router, limits: HttpLimits) {
    serve_http_until(
        listener,
        app,
        limits,
        None,
        std::future::pending(),
        Duration::ZERO,
    )
    .await
}

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown` completes; then lets each
/// connection finish the request it is answering (a stream to its end) and closes it, waiting
/// at most `drain` for them all, and meanwhile still answers new connections one request each
/// (the app's `/health` says 503 by then), rather than refusing them.
pub async fn serve_http_until(
    listener: TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let (stop_tx, stop) = watch::channel(false);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    tokio::pin!(shutdown);
    // Draining: until the connections open at the shutdown are done (or `drain` passes), new
    // ones are still accepted and answered one request each, so that a probe or a balancer
    // that has not yet heard sees the API's 503 rather than a refused connection.
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        let accepted = match drain_until {
            None => tokio::select! {
                a = listener.accept() => a,
                _ = &mut shutdown => {
                    drain_until = Some(tokio::time::Instant::now() + drain);
                    let _ = stop_tx.send(true);
                    continue;
                }
            },
            Some(until) => tokio::select! {
                a = listener.accept() => a,
                // Every connection of before the shutdown holds its permit until it closes;
                // those accepted since close after one request.
                _ = slots.acquire_many(all) => break,
                _ = tokio::time::sleep_until(until) => break,
            },
        };
        let Ok((s, _)) = accepted else {
            // Out of file descriptors or a transient error: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(s);
            continue;
        };
        let _ = socket2::SockRef::from(&s).set_send_buffer_size(limits.send_buffer);
        let s = WriteDeadline::new(s, limits.write_timeout);
        let app = app.clone();
        let (limits, tls) = (limits.clone(), tls.clone());
        // A connection accepted while draining answers one request and closes.
        let stop = drain_until.is_none().then(|| stop.clone());
        tokio::spawn(async move {
            match tls {
                None => connection(s, app, &limits, stop).await,
                Some(acceptor) => {
                    let hs = tokio::time::timeout(limits.header_timeout, acceptor.accept(s));
                    if let Ok(Ok(s)) = hs.await {
                        connection(s, app, &limits, stop).await;
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let until = drain_until.unwrap_or_else(tokio::time::Instant::now);
    let _ = tokio::time::timeout_at(until, slots.acquire_many(all)).await;
}

/// One connection: requests until the client closes, the connection timeout, or a shutdown
/// (after the request in progress); without `stop` (accepted while draining), one request.
async fn connection<S>(
    s: S,
    app: axum::Router,
    limits: &HttpLimits,
    stop: Option<watch::Receiver<bool>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = TowerToHyperService::new(app);
    let mut b = hyper::server::conn::http1::Builder::new();
    // Requests whose headers pass 16 KiB get 431.
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(16 << 10)
        .keep_alive(stop.is_some());
    let conn = b.serve_connection(TokioIo::new(s), svc);
    tokio::pin!(conn);
    let deadline = tokio::time::sleep(limits.connection_timeout);
    tokio::pin!(deadline);
    let Some(mut stop) = stop else {
        tokio::select! {
            _ = &mut conn => {}
            _ = &mut deadline => {}
        }
        return;
    };
    tokio::select! {
        _ = &mut conn => return,
        _ = &mut deadline => return,
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn => {}
        _ = deadline => {}
    }
}
