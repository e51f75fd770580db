//! Work: the advertised batch limit and the per-request token budget (issue point 4), fairness
//! between connections, and no work for clients that have gone (5).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use edgecut_wire::{ErrorCode, Frame};

use crate::support::*;

/// The mean time of `n` runs of `frame` on one connection, alone on the server.
fn alone(addr: &str, id: [u8; 32], frame: &[u8], n: usize) -> Duration {
    let mut c = authed(addr, id);
    timed(&mut c, frame); // warm
    let mut total = Duration::ZERO;
    for _ in 0..n {
        let (f, t) = timed(&mut c, frame);
        assert!(matches!(f, Some(Frame::Result(_))), "{f:?}");
        total += t;
    }
    total / n as u32
}

#[test]
fn requests_over_the_limits_are_refused_and_heavy_clients_do_not_starve_others() {
    let _g = serial();
    let srv = start(&["--max-batch", "8", "--max-request-tokens", "1024"]);
    let (s, id) = session();

    // 256 texts of 256 tokens (MiniLM's tokenizer truncates there) where HELLO_OK said 8:
    // refused before any work, and the connection goes on.
    let mut c = authed(&srv.addr, id);
    let (over_batch, t) = timed(&mut c, &request(&s, 256, 600, 1));
    println!(
        "256 texts x 256 tokens against a max batch of 8: answered {:?} in {t:.1?}",
        code(over_batch.clone())
    );
    // 5 texts of 256 tokens: within the batch, over the 1024-token budget.
    let (over_tokens, _) = timed(&mut c, &request(&s, 5, 600, 2));
    let (after, _) = timed(&mut c, &request(&s, 1, 4, 3));

    // Six clients send the heaviest allowed request (8 x 128 tokens) back to back; a light
    // client's requests wait for at most about one of theirs, not for all six.
    let heavy = Arc::new(request(&s, 8, 126, 4));
    let t_heavy = alone(&srv.addr, id, &heavy, 3);
    let light = legit(&s, &srv.addr);
    let stop = Arc::new(AtomicBool::new(false));
    let abusers: Vec<_> = (0..6)
        .map(|_| {
            let (addr, heavy, stop) = (srv.addr.clone(), heavy.clone(), stop.clone());
            thread::spawn(move || {
                let mut c = authed(&addr, id);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (f, _) = timed(&mut c, &heavy);
                    assert!(matches!(f, Some(Frame::Result(_))), "{f:?}");
                    n += 1;
                }
                n
            })
        })
        .collect();
    thread::sleep(t_heavy * 6);
    let mut lats: Vec<Duration> = (0..10)
        .map(|_| {
            thread::sleep(t_heavy / 3);
            legit(&s, &srv.addr)
        })
        .collect();
    stop.store(true, Ordering::Relaxed);
    let served: usize = abusers.into_iter().map(|h| h.join().unwrap()).sum();
    lats.sort();
    let worst = *lats.last().unwrap();
    println!(
        "6 heavy clients (one request alone: {t_heavy:.1?}, {served} served meanwhile): a light \
         client's request took median {:.1?}, worst {worst:.1?} (alone: {light:.1?})",
        lats[lats.len() / 2]
    );
    assert_eq!(code(over_batch), Some(ErrorCode::BadRequest));
    assert!(t < Duration::from_secs(2), "{t:?}");
    assert_eq!(code(over_tokens), Some(ErrorCode::BadRequest));
    assert!(matches!(after, Some(Frame::Result(_))), "{after:?}");
    assert!(
        worst < t_heavy * 5 / 2 + light + Duration::from_millis(100),
        "worst {worst:?} against one heavy request of {t_heavy:?}"
    );
}

#[test]
fn requests_of_clients_that_have_gone_are_not_run() {
    let _g = serial();
    let srv = start(&["--max-batch", "8", "--max-request-tokens", "4096"]);
    let (s, id) = session();
    let heavy = request(&s, 8, 600, 1);
    let t_heavy = alone(&srv.addr, id, &heavy, 2);
    let answered = metric(&srv, "edgecut_requests_total");
    // Five clients send a heavy request each and leave at once.
    for _ in 0..5 {
        let mut c = authed(&srv.addr, id);
        c.write_all(&heavy).unwrap();
        c.shutdown(std::net::Shutdown::Both).unwrap();
    }
    let lat = legit(&s, &srv.addr);
    thread::sleep(Duration::from_millis(200));
    let cancelled = metric(&srv, "edgecut_cancelled_total");
    let run = metric(&srv, "edgecut_requests_total")
        .zip(answered)
        .map(|(a, b)| a - b - 1.0);
    println!(
        "5 departed clients' heavy requests (each {t_heavy:.1?} alone): a legitimate request \
         took {lat:.1?}; cancelled {cancelled:?}, run anyway {run:?}"
    );
    assert!(lat < t_heavy * 2 + Duration::from_millis(200), "{lat:?}");
    // The first may have started before its client left; the others were never run.
    assert!(cancelled.is_some_and(|c| c >= 4.0), "{cancelled:?}");
    assert!(run.is_some_and(|r| r <= 1.0), "{run:?}");
}
