//! Shutdown (issue point 6) and the metrics listener (7).

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use edgecut_wire::{ErrorCode, Frame};

use crate::support::*;

#[test]
fn shutdown_tells_every_client_and_ends_in_bounded_time() {
    let _g = serial();
    let (s, id) = session();
    let heavy = request(&s, 8, 600, 1);

    // A drain of 1 s with about 4 s of queued work and an idle client.
    let mut srv = start(&["--max-batch", "8", "--drain-timeout", "1"]);
    let mut idle = authed(&srv.addr, id);
    let mut c = authed(&srv.addr, id);
    let (_, t_heavy) = timed(&mut c, &heavy);
    let n = (4.0 / t_heavy.as_secs_f64()).ceil().clamp(4.0, 40.0) as usize;
    let busy: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut c = authed(&srv.addr, id);
            c.write_all(&heavy).unwrap();
            c
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    kill(srv.pid(), libc::SIGTERM);
    let told = code(next(&mut idle));
    let told_after = t0.elapsed();
    let answers: Vec<Option<Frame>> = busy.into_iter().map(|mut c| next(&mut c)).collect();
    let exit1 = wait_exit(&mut srv.child, Duration::from_secs(30)).map(|_| t0.elapsed());
    let results = answers
        .iter()
        .filter(|f| matches!(f, Some(Frame::Result(_))))
        .count();
    let unavailable = answers
        .iter()
        .filter(|f| {
            matches!(
                f,
                Some(Frame::Error {
                    code: ErrorCode::Unavailable,
                    ..
                })
            )
        })
        .count();
    println!(
        "SIGTERM with {n} heavy requests queued ({t_heavy:.1?} each) and a drain of 1 s: exit \
         after {exit1:.1?}; the idle client was told {told:?} after {told_after:.1?}; {results} \
         answered, {unavailable} told UNAVAILABLE, {} closed bare",
        n - results - unavailable
    );

    // A second signal ends a long drain at once.
    let mut srv = start(&["--max-batch", "8", "--drain-timeout", "60"]);
    let busy: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut c = authed(&srv.addr, id);
            c.write_all(&heavy).unwrap();
            c
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    kill(srv.pid(), libc::SIGTERM);
    thread::sleep(Duration::from_millis(300));
    let t1 = Instant::now();
    kill(srv.pid(), libc::SIGINT);
    let second = wait_exit(&mut srv.child, Duration::from_secs(30)).map(|_| t1.elapsed());
    println!("a second signal during a 60 s drain: exit after {second:.1?}");
    drop(busy);
    assert_eq!(told, Some(ErrorCode::Unavailable));
    assert!(told_after < Duration::from_secs(1));
    assert_eq!(
        results + unavailable,
        n,
        "every client gets an answer or an error"
    );
    let bound = Duration::from_secs(1) + t_heavy * 2 + Duration::from_secs(2);
    assert!(exit1.is_some_and(|e| e < bound), "{exit1:?}");
    assert!(
        second.is_some_and(|e| e < Duration::from_secs(1)),
        "{second:?}"
    );
    assert!(srv.log.lock().unwrap().contains("second signal"));
}

#[test]
fn the_metrics_listener_is_http_with_limits() {
    let _g = serial();
    // Few descriptors, so that the listeners run out of them.
    let mut cmd = Command::new("sh");
    let args = serve_args(&[]);
    let bin = command().get_program().to_string_lossy().into_owned();
    cmd.arg("-c")
        .arg("ulimit -n 48 && exec \"$0\" \"$@\"")
        .arg(bin)
        .args(args);
    let srv = spawn(cmd);
    let m = srv.metrics.clone();
    let (status, body) = http(&m, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200);
    assert!(body.contains("edgecut_requests_total"), "{body}");
    let mut seen = vec![("GET /metrics", status)];
    for (what, req) in [
        (
            "GET /",
            &b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
        ),
        (
            "POST /metrics",
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ),
        ("garbage", b"\x16\x03\x01garbage\r\n\r\n"),
    ] {
        seen.push((what, http(&m, req).0));
    }
    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(4096)
    );
    seen.push(("4 KiB of headers", http(&m, big.as_bytes()).0));
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(24 << 10)
    );
    seen.push(("24 KiB of headers", http(&m, huge.as_bytes()).0));

    // More connections than descriptors, left open: the accept loop must not spin.
    let cpu0 = cpu_secs(srv.pid());
    let held: Vec<TcpStream> = (0..80)
        .filter_map(|_| TcpStream::connect(&m).ok())
        .collect();
    thread::sleep(Duration::from_secs(2));
    let spent = cpu_secs(srv.pid()) - cpu0;
    drop(held);
    thread::sleep(Duration::from_millis(200));
    let (after, _) = http(
        &m,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    println!(
        "metrics listener: {seen:?}; 80 idle connections with 48 descriptors: {spent:.2} CPU s \
         in 2 s; then GET /metrics: {after}"
    );
    let want = [200, 404, 405, 400, 200, 431];
    assert_eq!(seen.iter().map(|s| s.1).collect::<Vec<_>>(), want);
    assert!(spent < 0.5, "the server used {spent:.2} CPU s in 2 s");
    assert_eq!(after, 200);
}
