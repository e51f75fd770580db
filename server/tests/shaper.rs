//! The link shaper delivers every byte, in order, no faster than its bandwidth and delay allow.

use std::time::{Duration, Instant};

use edgecut_server::{shape, Shape};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shaped_echo_is_intact_and_not_faster_than_the_link() {
    // An echo server upstream.
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = echo.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).await.unwrap();
        }
    });
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let link = Shape {
        bps: 8e6,
        delay: Duration::from_millis(20),
    };
    tokio::spawn(shape(l, echo_addr, link, link));
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let t = Instant::now();
    let (mut r, mut w) = c.split();
    let send = async {
        w.write_all(&data).await.unwrap();
    };
    let mut back = vec![0u8; data.len()];
    let recv = async {
        r.read_exact(&mut back).await.unwrap();
    };
    tokio::join!(send, recv);
    let elapsed = t.elapsed();
    assert_eq!(back, data);
    // 100 kB at 8 Mbit/s is 100 ms each way (pipelined), plus 20 ms one way each direction.
    assert!(elapsed >= Duration::from_millis(130), "{elapsed:?}");
}
