//! Restarts that lose nothing: on SIGTERM `eric serve` ends its streams without telling
//! clients their channel was removed and without spending an event id, so a client
//! that resumes with `Last-Event-ID` (on the next process, or on another process of a
//! cluster) gets the broadcast made after the restart. Both sequences of the issue that
//! lost it: one process with `--redis`, and a rolling deploy of a cluster.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/eric_serve.rs"]
mod eric_serve;
#[path = "../crates/eric-persistence/tests/support/mod.rs"]
mod redis_support;
#[path = "support/sse_client.rs"]
mod sse_client;

use std::time::Duration;

use eric_serve::EricServe;
use serde_json::Value;
use sse_client::{Seen, create, publish_to, subscribe_to};
use tokio::sync::mpsc;

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Option<Seen> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("neither an event nor the end within 10 s")
}

/// The broadcast `n`, as `rx` receives it next: its id.
async fn expect_broadcast(rx: &mut mpsc::UnboundedReceiver<Seen>, n: u64) -> String {
    let (id, event, data) = next(rx)
        .await
        .unwrap_or_else(|| panic!("the stream ended before broadcast {n}"));
    assert_eq!(event, "news", "{data}");
    let data: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data["n"], n);
    id
}

/// SIGTERMs `server` and checks that the stream `rx` then ends with no event at all
/// (no closed event, no id spent), and that the process exits with success.
async fn terminate_ending(server: &mut EricServe, rx: &mut mpsc::UnboundedReceiver<Seen>) {
    let (exited, took) = tokio::task::block_in_place(|| server.terminate());
    assert!(exited, "eric serve did not exit with success on SIGTERM");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    assert_eq!(next(rx).await, None, "the stream ends without an event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_a_broadcast_after_a_restart_reaches_the_resuming_client() {
    let redis = redis_support::RedisServer::start();
    let http = reqwest::Client::new();
    let mut first = EricServe::start(&["--redis", &redis.url()]);
    assert_eq!(create(&http, &first.base, "news").await, 201);
    let mut stream = subscribe_to(&first.base, "news", None).await;
    let one = publish_to(&http, &first.base, "news", 1).await;
    assert_eq!(expect_broadcast(&mut stream, 1).await, one);

    terminate_ending(&mut first, &mut stream).await;

    let second = EricServe::start(&["--redis", &redis.url()]);
    let two = publish_to(&http, &second.base, "news", 2).await;
    assert_ne!(two, one);
    let mut resumed = subscribe_to(&second.base, "news", Some(&one)).await;
    assert_eq!(expect_broadcast(&mut resumed, 2).await, two);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_rolling_deploy_a_client_moving_to_another_process_misses_nothing() {
    let redis = redis_support::RedisServer::start();
    let http = reqwest::Client::new();
    let args = ["--cluster", "--redis", &redis.url()];
    let (mut a, b) = (EricServe::start(&args), EricServe::start(&args));
    assert_eq!(create(&http, &a.base, "news").await, 201);
    let mut on_a = subscribe_to(&a.base, "news", None).await;
    // Another client stays on B throughout.
    let mut on_b = subscribe_to(&b.base, "news", None).await;
    let mut last = String::new();
    for n in 0..3 {
        last = publish_to(&http, &a.base, "news", n).await;
        assert_eq!(expect_broadcast(&mut on_a, n).await, last);
        assert_eq!(expect_broadcast(&mut on_b, n).await, last);
    }

    terminate_ending(&mut a, &mut on_a).await;

    let next_id = publish_to(&http, &b.base, "news", 3).await;
    assert_ne!(next_id, last);
    let mut moved = subscribe_to(&b.base, "news", Some(&last)).await;
    assert_eq!(expect_broadcast(&mut moved, 3).await, next_id);
    assert_eq!(expect_broadcast(&mut on_b, 3).await, next_id);
}

/// A supervisor may stop the server the moment it says it listens (a deploy rolled
/// back, a health check that gave up): the signal handlers are in place by then, so
/// that SIGTERM still stops it gracefully rather than killing it.
#[test]
fn a_sigterm_as_soon_as_it_listens_stops_it_gracefully() {
    for _ in 0..5 {
        let mut server = EricServe::start(&[]);
        let (exited, took) = server.terminate();
        assert!(
            exited,
            "eric serve was killed by a SIGTERM sent as it listened"
        );
        assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    }
}
