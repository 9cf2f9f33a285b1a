//! Many channels on one stream, `GET /events?channel=a&channel=b`: every channel's
//! events in order, each naming its channel; `Last-Event-ID` resumes every channel
//! where it was, and one whose resume point is gone is reset while the others go on;
//! in memory, stored in Redis, and in cluster mode.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(feature = "redis")]
#[path = "../../eric-persistence/tests/support/mod.rs"]
mod redis_support;
mod support;

use std::collections::HashMap;
use std::sync::Arc;

use eric_http::{HttpConfig, HttpServer, MultiEventId};
use eric_persistence::{ChannelSettings, SharedChannels};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{EventStream, Running, next, next_chunk};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Memory,
    #[cfg(feature = "redis")]
    StoredInRedis,
    #[cfg(feature = "redis")]
    Cluster,
}

struct Server {
    running: Running,
    channels: SharedChannels,
    #[cfg(feature = "redis")]
    _redis: Option<redis_support::RedisServer>,
}

/// A server on `backend` with channels `a`, `b` and `c`, each keeping `replay`
/// broadcasts for resuming clients.
async fn serve(backend: Backend, replay: usize) -> Server {
    let config = HttpConfig::default().replay(replay);
    #[cfg(feature = "redis")]
    let mut redis = None;
    let server = match backend {
        Backend::Memory => HttpServer::bind("127.0.0.1:0", config).await.unwrap(),
        #[cfg(feature = "redis")]
        Backend::StoredInRedis => {
            let started = redis_support::RedisServer::start();
            let storage = eric_persistence::RedisStorage::connect(&started.url())
                .await
                .unwrap();
            let repository = eric_persistence::SseChannelRepository::new(storage);
            let server = HttpServer::bind_with_repository("127.0.0.1:0", config, repository)
                .await
                .unwrap();
            redis = Some(started);
            server
        }
        #[cfg(feature = "redis")]
        Backend::Cluster => {
            let started = redis_support::RedisServer::start();
            let server = HttpServer::bind_cluster("127.0.0.1:0", config, &started.url(), "eric:")
                .await
                .unwrap();
            redis = Some(started);
            server
        }
    };
    let channels = Arc::clone(server.channels());
    for id in ["a", "b", "c"] {
        channels
            .create(ChannelSettings::with_id(id).replay(replay))
            .await
            .unwrap();
    }
    Server {
        running: Running::serve(server),
        channels,
        #[cfg(feature = "redis")]
        _redis: redis,
    }
}

async fn publish(server: &Server, channel: &str, n: u64) {
    let response = server.running.broadcast(channel, "n", json!(n)).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// The channel and payload of an event of a multi-channel stream.
fn opened(event: &eventsource_stream::Event) -> (String, Value) {
    let envelope: Value = serde_json::from_str(&event.data).unwrap();
    (
        envelope["channel"].as_str().unwrap().to_owned(),
        envelope["data"].clone(),
    )
}

/// The next `count` events, by channel, in the order each channel's came.
async fn by_channel(events: &mut EventStream, count: usize) -> HashMap<String, Vec<Value>> {
    let mut seen: HashMap<String, Vec<Value>> = HashMap::new();
    for _ in 0..count {
        let event = next(events).await;
        assert_eq!(event.event, "n", "{event:?}");
        let (channel, data) = opened(&event);
        seen.entry(channel).or_default().push(data);
    }
    seen
}

fn numbers(range: std::ops::Range<u64>) -> Vec<Value> {
    range.map(|n| json!(n)).collect()
}

async fn merged_in_order_and_resumed_where_each_channel_was(backend: Backend) {
    let server = serve(backend, 1024).await;
    publish(&server, "a", 100).await; // Before the stream: not delivered.
    let path = "/events?channel=a&channel=b&channel=c";
    let mut events = server.running.events(path, None).await;
    for n in 0..5 {
        for channel in ["a", "b", "c"] {
            publish(&server, channel, n).await;
        }
    }
    let seen = by_channel(&mut events, 15).await;
    for channel in ["a", "b", "c"] {
        assert_eq!(seen[channel], numbers(0..5), "{backend:?} {channel}");
    }

    // The client drops after reading a's 5, b's 5 and c's 5; more come while away,
    // on two of the three channels, and on the third before any event of its own.
    let mut partial = server.running.events(path, None).await;
    publish(&server, "a", 5).await;
    let first = next(&mut partial).await;
    assert_eq!(opened(&first), ("a".to_owned(), json!(5)));
    drop(partial);
    drop(events);
    publish(&server, "a", 6).await;
    publish(&server, "c", 5).await;
    publish(&server, "c", 6).await;
    publish(&server, "b", 5).await;

    let mut resumed = server.running.events(path, Some(&first.id)).await;
    let seen = by_channel(&mut resumed, 4).await;
    assert_eq!(seen["a"], numbers(6..7), "{backend:?}: a after its 5, once");
    assert_eq!(
        seen["b"],
        numbers(5..6),
        "{backend:?}: b from where the stream opened"
    );
    assert_eq!(seen["c"], numbers(5..7), "{backend:?}");
    // Then live, still merged.
    publish(&server, "b", 6).await;
    let event = next(&mut resumed).await;
    assert_eq!(opened(&event), ("b".to_owned(), json!(6)));
    // Each id holds every channel's position.
    let id = MultiEventId::parse(&event.id, 3).expect("a multi-channel id");
    assert!(id.positions().iter().all(Option::is_some), "{id:?}");
}

async fn a_channel_whose_resume_point_is_gone_is_reset_and_the_others_go_on(backend: Backend) {
    let server = serve(backend, 2).await;
    let path = "/events?channel=a&channel=b";
    let mut events = server.running.events(path, None).await;
    publish(&server, "a", 0).await;
    publish(&server, "b", 0).await;
    let seen = by_channel(&mut events, 2).await;
    assert_eq!(seen.len(), 2);
    let last = {
        // Whichever came second holds both positions.
        publish(&server, "a", 1).await;
        next(&mut events).await.id
    };
    drop(events);
    // a moves far past the client, beyond its replay window (2, kept a segment or a
    // Redis stream node at a time: some hundreds at most); b moves 1.
    const A_LAST: u64 = 400;
    for n in 2..=A_LAST {
        publish(&server, "a", n).await;
    }
    publish(&server, "b", 1).await;
    let mut resumed = server.running.events(path, Some(&last)).await;
    let mut a = Vec::new();
    let mut b = Vec::new();
    let mut reset = None;
    while a.last() != Some(&json!(A_LAST)) || b.is_empty() {
        let event = next(&mut resumed).await;
        let (channel, data) = opened(&event);
        match (event.event.as_str(), channel.as_str()) {
            ("_eric_reset", "a") if a.is_empty() => reset = Some(data),
            ("n", "a") => a.push(data),
            ("n", "b") => b.push(data),
            other => panic!("{backend:?}: unexpected {other:?}"),
        }
    }
    let reset = reset.expect("a reset for a, before its events");
    assert_eq!(reset["reason"], "too_old", "{backend:?}: {reset}");
    let first_kept = a[0].as_u64().unwrap();
    assert!(
        first_kept > 2,
        "{backend:?}: a kept everything: {first_kept}"
    );
    assert_eq!(
        a,
        numbers(first_kept..A_LAST + 1),
        "{backend:?}: all a keeps, in order"
    );
    assert_eq!(b, numbers(1..2), "{backend:?}: b resumed exactly");
}

async fn a_removed_channel_ends_alone(backend: Backend) {
    let server = serve(backend, 16).await;
    let mut events = server
        .running
        .events("/events?channel=a&channel=b", None)
        .await;
    server.channels.remove("a").await.unwrap();
    let closed = next(&mut events).await;
    assert_eq!(closed.event, "_eric_channel_closed", "{backend:?}");
    assert_eq!(opened(&closed).0, "a");
    publish(&server, "b", 1).await;
    let event = next(&mut events).await;
    assert_eq!(opened(&event), ("b".to_owned(), json!(1)), "{backend:?}");
}

macro_rules! every_backend {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::Backend::Memory).await })*
        }
        #[cfg(feature = "redis")]
        mod stored_in_redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::Backend::StoredInRedis).await })*
        }
        #[cfg(feature = "redis")]
        mod cluster {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::Backend::Cluster).await })*
        }
    };
}

every_backend!(
    merged_in_order_and_resumed_where_each_channel_was,
    a_channel_whose_resume_point_is_gone_is_reset_and_the_others_go_on,
    a_removed_channel_ends_alone,
);

async fn status_and_message(server: &Server, path: &str) -> (StatusCode, String) {
    let running = &server.running;
    let response = running.http.get(running.url(path)).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let server = serve(Backend::Memory, 16).await;
    let (status, message) = status_and_message(&server, "/events").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("channel="), "{message}");

    let many: String = (0..65).map(|n| format!("channel=c{n}&")).collect();
    let (status, message) = status_and_message(&server, &format!("/events?{many}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("at most 64"), "{message}");

    let (status, message) = status_and_message(&server, "/events?channel=a&channel=nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(message.contains("nope"), "{message}");

    // A channel named twice is followed once.
    let mut events = server
        .running
        .events("/events?channel=a&channel=a", None)
        .await;
    publish(&server, "a", 1).await;
    publish(&server, "a", 2).await;
    assert_eq!(opened(&next(&mut events).await).1, json!(1));
    assert_eq!(opened(&next(&mut events).await).1, json!(2));

    // An id that is not one of these streams' resets each channel, and loses nothing
    // kept.
    let mut events = server
        .running
        .events("/events?channel=a&channel=b", Some("garbage,,,"))
        .await;
    let mut resets = Vec::new();
    for _ in 0..2 {
        let event = next(&mut events).await;
        assert_eq!(event.event, "_eric_reset");
        resets.push(opened(&event).0);
    }
    resets.sort();
    assert_eq!(resets, ["a", "b"]);
    assert_eq!(opened(&next(&mut events).await), ("a".to_owned(), json!(1)));
}

#[test]
fn ids_round_trip_and_anything_else_is_refused() {
    let id = MultiEventId::new(vec![Some("e,1%-3".into()), None, Some("f-9".into())]);
    let text = id.to_string();
    assert_eq!(text, "e%2C1%25-3,,f-9");
    assert_eq!(MultiEventId::parse(&text, 3), Some(id));
    for (bad, channels) in [("a,b", 3), ("a,b,c,d", 3), ("", 0), ("%FF", 1)] {
        assert_eq!(MultiEventId::parse(bad, channels), None, "{bad:?}");
    }
    let long = "%2C".repeat(eric_http::MAX_POSITION_BYTES + 1);
    assert_eq!(MultiEventId::parse(&long, 1), None);
}

/// Before any event, the stream says where it starts and when to come back: a client
/// dropped then resumes from there, at this connection's own reconnection time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_opens_with_its_starting_id_and_retry() {
    let server = serve(Backend::Memory, 16).await;
    let running = &server.running;
    let mut body = running.raw_body("/events?channel=a&channel=b").await;
    let opening = next_chunk(&mut body, std::time::Duration::from_secs(5)).await;
    let opening = String::from_utf8(opening.to_vec()).unwrap();
    let lines: Vec<&str> = opening.split('\n').collect();
    assert!(lines[0].starts_with("id: "), "{opening:?}");
    let retry: u64 = lines[1].strip_prefix("retry: ").unwrap().parse().unwrap();
    assert!(
        (1_500..=4_500).contains(&retry),
        "{retry} ms around the 3 s default"
    );
    assert_eq!(&lines[2..], ["", ""], "one block, no event: {opening:?}");
}
