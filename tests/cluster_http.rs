//! Cluster mode: two `eric serve --cluster` processes on one Redis (all started here,
//! on loopback ports of their own). A broadcast on either reaches the subscribers of
//! both, in one order, with the same event ids; when one process is killed, its
//! subscribers reconnect to the other with `Last-Event-ID` and miss nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/eric_serve.rs"]
mod eric_serve;
#[path = "../crates/eric-persistence/tests/support/mod.rs"]
mod redis_support;

use std::time::Duration;

use eric_serve::EricServe;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// An `eric serve --cluster` process on the Redis at `redis_url`.
fn start_eric(redis_url: &str) -> EricServe {
    EricServe::start(&["--cluster", "--redis", redis_url, "--keep-alive", "1"])
}

/// An event as a subscriber saw it: (id, event type, data).
type Seen = (String, String, String);

/// Subscribes at `base` (resuming after `last_event_id`) and forwards every event,
/// keep-alive comments aside; the receiver ends when the stream does.
async fn subscribe(base: &str, last_event_id: Option<&str>) -> mpsc::UnboundedReceiver<Seen> {
    let mut request = reqwest::Client::new().get(format!("{base}/channels/news/events"));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "subscribe at {base}");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut events = response.bytes_stream().eventsource();
        while let Some(Ok(event)) = events.next().await {
            if tx.send((event.id, event.event, event.data)).is_err() {
                break;
            }
        }
    });
    rx
}

/// `PUT /create?channel_id=news` at `base`: the status.
async fn create_news(http: &reqwest::Client, base: &str) -> u16 {
    let response = http
        .put(format!("{base}/create?channel_id=news"))
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

/// `GET /channels` at `base`.
async fn listed(http: &reqwest::Client, base: &str) -> Vec<String> {
    let response = http.get(format!("{base}/channels")).send().await.unwrap();
    response.json().await.unwrap()
}

async fn publish(http: &reqwest::Client, base: &str, n: u64) -> String {
    let response = http
        .post(format!("{base}/broadcast?channel_id=news"))
        .json(&json!({"type": "news", "payload": {"n": n}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

/// The next `count` events of `rx`, which must be the broadcasts `from..from + count`.
async fn expect_broadcasts(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    from: u64,
    count: u64,
    ids: &[String],
) -> String {
    let mut last = String::new();
    for n in from..from + count {
        let (id, event, data) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("broadcast {n} did not arrive"))
            .unwrap_or_else(|| panic!("the stream ended before broadcast {n}"));
        assert_eq!(event, "news", "event {n}: {data}");
        let data: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(data["n"], n, "broadcasts arrive in order, none missing");
        assert_eq!(id, ids[n as usize], "the same event id on every process");
        last = id;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_reach_both_processes_and_clients_of_a_killed_one_resume_on_the_other() {
    let redis = redis_support::RedisServer::start();
    let mut a = start_eric(&redis.url());
    let b = start_eric(&redis.url());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    assert_eq!(create_news(&http, &a.base).await, 201);
    // The channel is the cluster's: B lists it, and refuses to create it again.
    assert_eq!(listed(&http, &b.base).await, ["news"]);
    assert_eq!(create_news(&http, &b.base).await, 409);

    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    for _ in 0..3 {
        on_a.push(subscribe(&a.base, None).await);
        on_b.push(subscribe(&b.base, None).await);
    }

    // 100 broadcasts, alternately on A and B.
    let mut ids = Vec::new();
    for n in 0..100 {
        let base = if n % 2 == 0 { &a.base } else { &b.base };
        ids.push(publish(&http, base, n).await);
    }
    let mut last_on_a = Vec::new();
    for rx in on_a.iter_mut() {
        last_on_a.push(expect_broadcasts(rx, 0, 100, &ids).await);
    }
    for rx in on_b.iter_mut() {
        expect_broadcasts(rx, 0, 100, &ids).await;
    }

    // A dies; 50 broadcasts on B while its clients are away.
    a.kill();
    for rx in on_a.iter_mut() {
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            while rx.recv().await.is_some() {}
        })
        .await;
        assert!(ended.is_ok(), "a killed process's streams end");
    }
    for n in 100..150 {
        ids.push(publish(&http, &b.base, n).await);
    }
    // A's clients come back on B with the last id they saw: the 50 first, then live.
    let mut resumed = Vec::new();
    for last in &last_on_a {
        resumed.push(subscribe(&b.base, Some(last)).await);
    }
    for n in 150..160 {
        ids.push(publish(&http, &b.base, n).await);
    }
    for rx in resumed.iter_mut() {
        expect_broadcasts(rx, 100, 60, &ids).await;
    }
    for rx in on_b.iter_mut() {
        expect_broadcasts(rx, 100, 60, &ids).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_removed_on_one_process_ends_the_streams_of_the_other() {
    let redis = redis_support::RedisServer::start();
    let a = start_eric(&redis.url());
    let b = start_eric(&redis.url());
    let http = reqwest::Client::new();
    assert_eq!(create_news(&http, &a.base).await, 201);
    let mut on_b = subscribe(&b.base, None).await;
    let id = publish(&http, &a.base, 0).await;
    let ids = [id];
    expect_broadcasts(&mut on_b, 0, 1, &ids).await;

    let removed = http
        .delete(format!("{}/channel/news", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    let (_, event, _) = tokio::time::timeout(Duration::from_secs(10), on_b.recv())
        .await
        .expect("B's stream hears of the removal")
        .expect("with an event");
    assert_eq!(event, eric::core::MESSAGE_TYPE_CLOSED);
    let ended = tokio::time::timeout(Duration::from_secs(10), on_b.recv()).await;
    assert!(matches!(ended, Ok(None)), "then it ends");

    // Gone everywhere: publishing on B is 404, and neither lists it.
    let response = http
        .post(format!("{}/broadcast?channel_id=news", b.base))
        .json(&json!({"type": "news", "payload": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(listed(&http, &a.base).await.is_empty());
    assert!(listed(&http, &b.base).await.is_empty());
}
