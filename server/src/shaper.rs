//! A user-space link shaper (kernel netem is not available on these machines): a TCP proxy
//! that delivers each direction's bytes no faster than a bandwidth and after a one-way delay.
//!
//! Delivery runs on plain threads that sleep until each chunk's time: the async runtime's
//! timer rounds every wait up to its millisecond tick, which added 1-3 ms to each round trip
//! of a small message (more than a whole split decode step's link cost on a fast link), while
//! a thread's sleep wakes within tens of microseconds of its deadline.
//!
//! The client's TCP handshake completes at once on the proxy's listener, where a real link
//! takes a round trip before the client can send: the first bytes up leave one round trip
//! after the connection was accepted, so that a new connection costs what it would. (A client
//! that times its first exchange from the end of `connect` therefore sees two round trips
//! there, where a real link shows one.)

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

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
/// Nothing leaves before `first`. Returns when `from` ends (after delivering what it sent) or
/// `to` fails.
fn pump(mut from: TcpStream, mut to: TcpStream, ctl: ShapeControl, up: bool, first: Instant) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    // When the far side fails, the reader must stop too: shutting its socket's read side
    // ends a blocked read.
    let from_again = from.try_clone();
    let writer = std::thread::spawn(move || {
        for (at, chunk) in rx {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if to.write_all(&chunk).is_err() {
                if let Ok(f) = &from_again {
                    let _ = f.shutdown(Shutdown::Read);
                }
                return;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut free_at = first;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
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
        // At least a bit per second: a zero or negative bandwidth would have no delivery time.
        let bits_per_s = if shape.bps >= 1.0 { shape.bps } else { 1.0 };
        free_at = start + Duration::from_secs_f64((n as f64 * 8.0 / bits_per_s).min(1e6));
        if tx.send((free_at + shape.delay, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.join();
}

/// Relays one accepted connection to `upstream`, each direction on its own threads.
fn relay(client: TcpStream, upstream: SocketAddr, ctl: ShapeControl) {
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    for s in [&client, &server] {
        let _ = s.set_nodelay(true);
    }
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let now = Instant::now();
    let (u, d) = *ctl.lock().unwrap_or_else(|e| e.into_inner());
    let handshake = now + u.delay + d.delay;
    let up_ctl = ctl.clone();
    let up = std::thread::spawn(move || pump(client, server, up_ctl, true, handshake));
    pump(s2, c2, ctl, false, now);
    let _ = up.join();
}

/// Accepts connections on `listener` and relays each to `upstream` through a link shaped
/// `up` (client to server) and `down` (server to client). Runs until the task is dropped;
/// a connection already accepted runs on until both directions have ended (each ends when its
/// sender closes, or when the far side stops taking bytes).
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
        let Ok(client) = client.into_std() else {
            continue;
        };
        if client.set_nonblocking(false).is_err() {
            continue;
        }
        let ctl = ctl.clone();
        std::thread::spawn(move || relay(client, upstream, ctl));
    }
}
