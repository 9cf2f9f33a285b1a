//! The memory budget (`HttpConfig::max_retained_bytes`) on every backend: a listener
//! that has not read holds what it has not read, publishes beyond the budget are 503
//! `MemoryBudgetExceeded`, nothing refused is ever delivered (nor, with Redis, stored),
//! and once the listener reads, publishes go through again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(feature = "redis")]
#[path = "../../eric-persistence/tests/support/mod.rs"]
mod redis_support;
mod support;

use std::time::Duration;

use eric_http::{HttpConfig, HttpServer};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Running, next};

/// A budget of about 20 of the messages below.
const BUDGET: u64 = 4 << 20;

fn message(n: u64) -> Value {
    json!({"type": "blob", "payload": {"n": n, "data": "x".repeat(100_000)}})
}

async fn publish(server: &Running, n: u64) -> (StatusCode, Value) {
    let response = server
        .http
        .post(server.url("/broadcast?channel_id=room"))
        .json(&message(n))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// Publishes until refused: how many were accepted.
async fn publish_until_refused(server: &Running) -> u64 {
    for n in 0..200 {
        let (status, body) = publish(server, n).await;
        match status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(body["error"], "MemoryBudgetExceeded", "{body}");
                return n;
            }
            other => panic!("broadcast {n}: {other} {body}"),
        }
    }
    panic!("200 broadcasts of 200 KB went through a 4 MB budget");
}

async fn refuses_beyond_the_budget_and_loses_nothing(server: HttpServer) {
    let server = Running::serve(server);
    let created = server
        .http
        .put(server.url("/create?channel_id=room"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    // A listener that reads nothing yet: it holds every broadcast from now on.
    let listener = server.subscribe("room").await;
    let accepted = publish_until_refused(&server).await;
    assert!(
        (10..=25).contains(&accepted),
        "{accepted} accepted under a 4 MB budget"
    );
    assert!(server.metric("eric_publishes_refused_memory_total").await >= 1);
    assert!(server.metric("eric_retained_bytes").await <= BUDGET);

    // It reads everything accepted, in order, and nothing refused.
    let mut events = server
        .events(&format!("/stream/room/{listener}"), None)
        .await;
    for n in 0..accepted {
        let event = next(&mut events).await;
        let data: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(data["n"], n);
    }
    let more = tokio::time::timeout(Duration::from_millis(300), events.next()).await;
    assert!(more.is_err(), "a refused broadcast was delivered: {more:?}");
    // Read, the broadcasts are released: publishing goes on.
    let mut went_through = false;
    for attempt in 0..50 {
        if publish(&server, 1_000 + attempt).await.0 == StatusCode::OK {
            went_through = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        went_through,
        "publishes must go through once the listener has read"
    );
    server.shut_down().await;
}

fn config() -> HttpConfig {
    HttpConfig::default().max_retained_bytes(Some(BUDGET))
}

#[tokio::test]
async fn in_memory() {
    let server = HttpServer::bind("127.0.0.1:0", config()).await.unwrap();
    refuses_beyond_the_budget_and_loses_nothing(server).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn stored_in_redis() {
    let redis = redis_support::RedisServer::start();
    let storage = eric_persistence::RedisStorage::connect(&redis.url())
        .await
        .unwrap();
    let repository = eric_persistence::SseChannelRepository::new(storage);
    let server = HttpServer::bind_with_repository("127.0.0.1:0", config(), repository)
        .await
        .unwrap();
    refuses_beyond_the_budget_and_loses_nothing(server).await;
}
