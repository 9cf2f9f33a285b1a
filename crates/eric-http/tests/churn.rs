//! Churn: subscribing, streaming, unsubscribing and deleting channels from many tasks
//! while others broadcast. No request fails other than with the status its race
//! explains, nothing hangs, and when everyone has gone the counts are back to zero.
//!
//! A few seconds by default; `ERIC_STRESS_SECS=600 cargo test -p eric-http --test churn
//! --release` for longer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use eric_http::HttpConfig;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{Running, start};

const CHANNELS: usize = 4;

/// What a request on a channel may get when the channel can be gone for a moment.
const OK_OR_GONE: &[StatusCode] = &[StatusCode::OK, StatusCode::NOT_FOUND];

fn stress_duration() -> Duration {
    let seconds = std::env::var("ERIC_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    Duration::from_secs(seconds)
}

fn channel_id(n: usize) -> String {
    format!("churn-{}", n % CHANNELS)
}

/// Fails the test on anything but the statuses `allowed` (a race explains each).
fn expect(status: StatusCode, allowed: &[StatusCode], what: &str) {
    assert!(
        allowed.contains(&status),
        "{what}: {status} (allowed: {allowed:?})"
    );
}

/// `method path` on `server`; fails the test on anything but `allowed`.
async fn call(
    server: &Running,
    method: Method,
    path: &str,
    allowed: &[StatusCode],
    what: &str,
) -> reqwest::Response {
    let response = server
        .http
        .request(method, server.url(path))
        .send()
        .await
        .unwrap();
    expect(response.status(), allowed, what);
    response
}

/// Reads up to `events` events, each within `wait`; the stream may end (its channel
/// went) or go quiet.
async fn read_some(response: reqwest::Response, events: usize, wait: Duration) -> usize {
    let mut stream = response.bytes_stream().eventsource();
    let mut read = 0;
    while read < events {
        match tokio::time::timeout(wait, stream.next()).await {
            Ok(Some(Ok(_))) => read += 1,
            Ok(Some(Err(e))) => panic!("a stream broke: {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_while_broadcasting_leaks_nothing_and_never_hangs() {
    let duration = stress_duration();
    let config = HttpConfig::default().keep_alive(Some(Duration::from_millis(50)));
    let server = Arc::new(start(config).await);
    for n in 0..CHANNELS {
        let path = format!("/create?channel_id={}", channel_id(n));
        call(
            &server,
            Method::PUT,
            &path,
            &[StatusCode::CREATED],
            "create",
        )
        .await;
    }
    let deadline = Instant::now() + duration;
    let events_read = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();

    // Broadcasters: a channel may be gone for a moment (404).
    for b in 0..2 {
        let server = Arc::clone(&server);
        tasks.push(tokio::spawn(async move {
            let mut n = b;
            while Instant::now() < deadline {
                let r = server.broadcast(&channel_id(n), "tick", json!(n)).await;
                expect(r.status(), OK_OR_GONE, "broadcast");
                n += 1;
            }
        }));
    }
    // EventSource-style streams, opened, read a little, dropped.
    for s in 0..8 {
        let server = Arc::clone(&server);
        let events_read = Arc::clone(&events_read);
        tasks.push(tokio::spawn(async move {
            let mut n = s;
            while Instant::now() < deadline {
                let path = format!("/channels/{}/events", channel_id(n));
                let r = call(&server, Method::GET, &path, OK_OR_GONE, "events").await;
                if r.status() == StatusCode::OK {
                    let read = read_some(r, 3, Duration::from_millis(200)).await;
                    events_read.fetch_add(read as u64, Ordering::Relaxed);
                }
                n += 1;
            }
        }));
    }
    // eric-sse-style listeners: subscribe, stream, unsubscribe.
    for s in 0..4 {
        let server = Arc::clone(&server);
        tasks.push(tokio::spawn(async move {
            let mut n = s;
            while Instant::now() < deadline {
                let channel = channel_id(n);
                n += 1;
                let path = format!("/subscribe?channel_id={channel}");
                let r = call(&server, Method::POST, &path, OK_OR_GONE, "subscribe").await;
                if r.status() != StatusCode::OK {
                    continue;
                }
                let listener = r.json::<serde_json::Value>().await.unwrap()["listener_id"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let path = format!("/stream/{channel}/{listener}");
                let r = call(&server, Method::GET, &path, OK_OR_GONE, "stream").await;
                if r.status() == StatusCode::OK {
                    read_some(r, 1, Duration::from_millis(100)).await;
                }
                let path = format!("/listener/{channel}/{listener}");
                let allowed = &[StatusCode::NO_CONTENT, StatusCode::NOT_FOUND];
                call(&server, Method::DELETE, &path, allowed, "remove listener").await;
            }
        }));
    }
    // Channels deleted and made again under everyone's feet.
    {
        let server = Arc::clone(&server);
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < deadline {
                let channel = channel_id(n);
                n += 1;
                let path = format!("/channel/{channel}");
                let removed = &[StatusCode::NO_CONTENT];
                call(&server, Method::DELETE, &path, removed, "remove channel").await;
                tokio::time::sleep(Duration::from_millis(10)).await;
                let path = format!("/create?channel_id={channel}");
                let created = &[StatusCode::CREATED];
                call(&server, Method::PUT, &path, created, "create again").await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    // Nothing hangs: every task ends soon after the deadline.
    let all = futures_util::future::join_all(tasks);
    let finished = tokio::time::timeout(duration + Duration::from_secs(30), all)
        .await
        .expect("a task hung: deadlock or a stream that never ended");
    for task in finished {
        task.unwrap();
    }
    assert!(
        events_read.load(Ordering::Relaxed) > 0,
        "the streams never read an event: the test exercised nothing"
    );

    // Everyone has gone: nothing is left behind.
    for n in 0..CHANNELS {
        let path = format!("/channel/{}", channel_id(n));
        call(
            &server,
            Method::DELETE,
            &path,
            &[StatusCode::NO_CONTENT],
            "final remove",
        )
        .await;
    }
    server.eventually("eric_open_streams", 0).await;
    server.eventually("eric_listeners", 0).await;
    server.eventually("eric_channels", 0).await;
    call(
        &server,
        Method::GET,
        "/healthz",
        &[StatusCode::OK],
        "healthz",
    )
    .await;
}
