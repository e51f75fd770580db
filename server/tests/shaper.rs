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
    // 100 kB at 8 Mbit/s is 100 ms each way (pipelined), plus 20 ms one way each direction,
    // after the 40 ms round trip of the connection's handshake.
    assert!(elapsed >= Duration::from_millis(170), "{elapsed:?}");
}

/// An echo server on loopback that answers each byte with itself.
async fn echo_server() -> std::net::SocketAddr {
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let mut b = [0u8; 1];
                while s.read_exact(&mut b).await.is_ok() {
                    if s.write_all(&b).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_pays_the_handshake_and_each_exchange_a_round_trip() {
    let echo = echo_server().await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let link = Shape {
        bps: 1e9,
        delay: Duration::from_millis(15),
    };
    tokio::spawn(shape(l, echo, link, link));
    let t = Instant::now();
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.set_nodelay(true).unwrap();
    let mut b = [0u8; 1];
    for i in 0..3u8 {
        c.write_all(&[i]).await.unwrap();
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(b[0], i);
    }
    // The handshake's round trip, then three exchanges of one round trip each: 4 x 30 ms.
    let elapsed = t.elapsed();
    assert!(elapsed >= Duration::from_millis(120), "{elapsed:?}");
}
