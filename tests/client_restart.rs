//! The Rust client against a real `eric serve` (issue 20): killed mid-stream (SIGKILL,
//! no graceful shutdown) and started again on the same port and the same Redis, the
//! client resumes by itself and gets every acknowledged broadcast once, in order; while
//! a server is down, it tries again a few times a second at most, not in a loop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/eric_serve.rs"]
mod eric_serve;
#[path = "../crates/eric-http/tests/support/mod.rs"]
mod http_support;
#[path = "../crates/eric-persistence/tests/support/mod.rs"]
mod redis_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use eric::http::client::{Backoff, Client, Event};
use eric_serve::EricServe;
use futures_util::StreamExt;
use serde_json::{Value, json};

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// The next payload `rx` gets must be `n`.
async fn expect(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>, n: u64) {
    let got = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("broadcast {n} did not arrive"))
        .unwrap();
    assert_eq!(got, json!(n), "broadcasts once each, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_server_loses_nothing_acknowledged() {
    let redis = redis_support::RedisServer::start();
    let addr = free_addr();
    let mut first = EricServe::start_at(&addr, &["--redis", &redis.url(), "--retry", "500"]);
    let client = Client::new(&first.base);
    client.create(Some("news")).await.unwrap();
    let mut events = client.follow("news");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let Ok(Event::Message(message)) = event {
                let _ = tx.send(message.data);
            }
        }
    });
    // Broadcasts once the stream is open: a stream resumes after an id it has seen.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_support::metric_at(&http, &first.base, "eric_open_streams").await < 1 {
        assert!(Instant::now() < deadline, "the stream never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.broadcast("news", "n", json!(0)).await.unwrap();
    expect(&mut rx, 0).await;
    client.broadcast("news", "n", json!(1)).await.unwrap();
    expect(&mut rx, 1).await;
    first.kill();
    let second = EricServe::start_at(&addr, &["--redis", &redis.url(), "--retry", "500"]);
    // Acknowledged while the client is away, on the new process.
    for n in 2..5 {
        client.broadcast("news", "n", json!(n)).await.unwrap();
    }
    for n in 2..5 {
        expect(&mut rx, n).await;
    }
    client.broadcast("news", "n", json!(5)).await.unwrap();
    expect(&mut rx, 5).await;
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_server_is_down_it_backs_off() {
    // A port that accepts and hangs up at once: each connection is an attempt.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let attempts = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&attempts);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    let client = Client::new(&base).with_backoff(Backoff {
        first: Duration::from_millis(250),
        max: Duration::from_secs(2),
    });
    let mut events = client.follow("news");
    let watched = Duration::from_secs(6);
    let _ = tokio::time::timeout(watched, events.next()).await;
    let n = attempts.load(Ordering::SeqCst);
    eprintln!("attempts in {watched:?} with the server down: {n}");
    // 250 ms doubling to 2 s, each drawn in [d/2, d]: about 6 in 6 s; a loop would make
    // thousands.
    assert!((2..=15).contains(&n), "{n} attempts in {watched:?}");
}
