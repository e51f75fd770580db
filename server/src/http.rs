//! HTTP/1.1 listeners (the metrics endpoint) on hyper, with the split listener's properties:
//! a connection limit, header and connection timeouts, hyper's header-size limit (431), and an
//! accept loop that backs off when descriptors run out instead of spinning.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::HttpLimits;

/// Serves `app` on `listener` until the task is dropped.
pub async fn serve_http(listener: TcpListener, app: axum::Router, limits: HttpLimits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let Ok((s, _)) = listener.accept().await else {
            // Out of file descriptors or a transient error: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(s);
            continue;
        };
        let svc = TowerToHyperService::new(app.clone());
        let limits = limits.clone();
        tokio::spawn(async move {
            let mut b = hyper::server::conn::http1::Builder::new();
            // Requests whose headers pass 16 KiB get 431.
            b.timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(16 << 10);
            let conn = b.serve_connection(TokioIo::new(s), svc);
            let _ = tokio::time::timeout(limits.connection_timeout, conn).await;
            drop(permit);
        });
    }
}
