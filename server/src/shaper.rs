//! A user-space link shaper (kernel netem is not available on these machines): a TCP proxy
//! that delivers each direction's bytes no faster than a bandwidth and after a one-way delay.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// One direction of a shaped link.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Bits per second.
    pub bps: f64,
    /// One-way delay.
    pub delay: Duration,
}

/// The shapes of a link's two directions, `(up, down)`, changeable while it runs.
pub type ShapeControl = Arc<Mutex<(Shape, Shape)>>;

/// Reads from `from`, and writes each chunk to `to` when a link of the current shape would
/// have delivered it: chunks leave one after another at `bps` and arrive `delay` later.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, ctl: ShapeControl, up: bool) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut free_at = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let shape = {
            let both = *ctl.lock().unwrap_or_else(|e| e.into_inner());
            if up {
                both.0
            } else {
                both.1
            }
        };
        let now = Instant::now();
        let start = free_at.max(now);
        free_at = start + Duration::from_secs_f64(n as f64 * 8.0 / shape.bps);
        if tx.send((free_at + shape.delay, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Accepts connections on `listener` and relays each to `upstream` through a link shaped
/// `up` (client to server) and `down` (server to client). Runs until the task is dropped.
pub async fn shape(listener: TcpListener, upstream: SocketAddr, up: Shape, down: Shape) {
    shape_controlled(listener, upstream, Arc::new(Mutex::new((up, down)))).await
}

/// [`shape`] with shapes that may change while it runs (a link that gets slower or faster):
/// each chunk is delivered at the shape current when it was read.
pub async fn shape_controlled(listener: TcpListener, upstream: SocketAddr, ctl: ShapeControl) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let ctl = ctl.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::join!(pump(cr, sw, ctl.clone(), true), pump(sr, cw, ctl, false));
        });
    }
}
