//! Streams as an `EventSource` sees them: resume with Last-Event-ID, keep-alive
//! comments, each connection's own `retry`, and streams that end when their client,
//! channel or listener goes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use eric_core::OverflowPolicy;
use eric_http::HttpConfig;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

mod support;
use support::{next, next_chunk, start};

#[tokio::test]
async fn a_reconnecting_event_source_resumes_with_last_event_id() {
    // A bounded channel keeps its last `capacity` broadcasts, replayable too: bound it
    // at the replay window so that 300 broadcasts are more than it keeps.
    let config = HttpConfig::default()
        .replay(64)
        .capacity(64, OverflowPolicy::Disconnect);
    let server = start(config).await;
    let channel = server.create().await;
    let path = format!("/channels/{channel}/events");
    let mut first = server.events(&path, None).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    for n in 0..3 {
        server.broadcast(&channel, "n", json!(n)).await;
    }
    let mut last = String::new();
    for n in 0..3 {
        let event = next(&mut first).await;
        assert_eq!(event.data, n.to_string());
        last = event.id;
    }
    drop(first);
    for n in 3..5 {
        server.broadcast(&channel, "n", json!(n)).await;
    }
    // The header, as a browser sends it...
    let mut resumed = server.events(&path, Some(&last)).await;
    assert_eq!(next(&mut resumed).await.data, "3");
    assert_eq!(next(&mut resumed).await.data, "4");
    // ...or the query parameter.
    let mut by_query = server
        .events(&format!("{path}?last_event_id={last}"), None)
        .await;
    assert_eq!(next(&mut by_query).await.data, "3");

    // Too old for the replay window: a reset event first, never a silent gap.
    for n in 5..300 {
        server.broadcast(&channel, "n", json!(n)).await;
    }
    let mut stale = server.events(&path, Some(&last)).await;
    let reset = next(&mut stale).await;
    assert_eq!(reset.event, "_eric_reset");
    let data: Value = serde_json::from_str(&reset.data).unwrap();
    assert_eq!(data["reason"], "too_old");
}

#[tokio::test]
async fn idle_streams_get_keep_alive_comments() {
    let server = start(HttpConfig::default().keep_alive(Some(Duration::from_millis(100)))).await;
    let channel = server.create().await;
    let mut body = server
        .raw_body(&format!("/channels/{channel}/events"))
        .await;
    // First the stream's own `retry` (a block without data), then the comments.
    let retry = next_chunk(&mut body, Duration::from_secs(2)).await;
    assert!(retry.starts_with(b"retry: "), "{retry:?}");
    let chunk = next_chunk(&mut body, Duration::from_secs(2)).await;
    assert_eq!(&chunk[..], b":\n\n");
}

#[tokio::test]
async fn a_stream_that_gets_events_gets_no_keep_alive_until_it_goes_quiet() {
    let every = Duration::from_millis(400);
    let server = start(HttpConfig::default().keep_alive(Some(every))).await;
    let channel = server.create().await;
    let mut bytes = server
        .raw_body(&format!("/channels/{channel}/events"))
        .await;
    let mut received = Vec::new();
    // An event every 100 ms for 1.2 s: three keep-alive periods, none of them quiet.
    let publishing = async {
        for n in 0..12 {
            server.broadcast(&channel, "tick", json!(n)).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let reading = async {
        while let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(2), bytes.next()).await
        {
            received.extend_from_slice(&chunk.unwrap());
            if received.windows(3).any(|w| w == b":\n\n") {
                break;
            }
        }
    };
    let started = std::time::Instant::now();
    let ((), ()) = tokio::join!(publishing, reading);
    let text = String::from_utf8(received).unwrap();
    let events = text.matches("event: tick").count();
    assert_eq!(events, 12, "{text}");
    assert!(
        text.ends_with(":\n\n") && text.matches(":\n\n").count() == 1,
        "one comment, after the last event: {text}"
    );
    // The last event went out at about 1.1 s; the comment a period after it.
    assert!(started.elapsed() >= Duration::from_millis(1_100) + every - Duration::from_millis(100));
}

#[tokio::test]
async fn a_client_that_goes_away_leaves_nothing_behind() {
    let server = start(HttpConfig::default()).await;
    let channel = server.create().await;
    let watching = server
        .events(&format!("/channels/{channel}/events"), None)
        .await;
    server.eventually("eric_open_streams", 1).await;
    assert_eq!(server.metric("eric_listeners").await, 1);
    drop(watching);
    server.eventually("eric_open_streams", 0).await;
    server.eventually("eric_listeners", 0).await;
}

/// Found by hand: a channel deleted and created again gets a broadcast, and a client
/// resumes with the old channel's last id: a reset, then that broadcast.
#[tokio::test]
async fn a_client_of_a_channel_deleted_and_created_again_gets_its_broadcasts() {
    let server = start(HttpConfig::default()).await;
    let create = || {
        server
            .http
            .put(server.url("/create?channel_id=room"))
            .send()
    };
    assert_eq!(create().await.unwrap().status(), StatusCode::CREATED);
    let mut first = server.events("/channels/room/events", None).await;
    server.broadcast("room", "n", json!(1)).await;
    let old_id = next(&mut first).await.id;
    let deleted = server.http.delete(server.url("/channel/room")).send().await;
    assert_eq!(deleted.unwrap().status(), StatusCode::NO_CONTENT);
    let closed = next(&mut first).await;
    assert_eq!(closed.event, "_eric_channel_closed");
    assert_eq!(
        closed.id, old_id,
        "the closed event leaves the last id as it was"
    );

    assert_eq!(create().await.unwrap().status(), StatusCode::CREATED);
    let reply: Value = server
        .broadcast("room", "n", json!(2))
        .await
        .json()
        .await
        .unwrap();
    let mut resumed = server.events("/channels/room/events", Some(&old_id)).await;
    let reset = next(&mut resumed).await;
    assert_eq!(reset.event, "_eric_reset");
    let data: Value = serde_json::from_str(&reset.data).unwrap();
    assert_eq!(data["reason"], "other_epoch");
    // The parser reports the last id set on this connection: none yet.
    assert_eq!(reset.id, "", "the reset carries no id of its own");
    let two = next(&mut resumed).await;
    assert_eq!(
        (two.data.as_str(), two.id.as_str()),
        ("2", reply["id"].as_str().unwrap())
    );
}

/// No reconnection storms (issue 22): each connection gets its own `retry`, spread
/// uniformly in [retry/2, 3*retry/2], sent with its first event (a client keeps it).
#[tokio::test]
async fn each_connection_gets_its_own_retry_around_the_configured_one() {
    let server = start(HttpConfig::default().retry(Duration::from_millis(1000))).await;
    let channel = server.create().await;
    let mut streams = Vec::new();
    for _ in 0..20 {
        let path = format!("/channels/{channel}/events");
        streams.push(server.events(&path, None).await);
    }
    server.broadcast(&channel, "n", json!(1)).await;
    server.broadcast(&channel, "n", json!(2)).await;
    let mut retries = Vec::new();
    for stream in &mut streams {
        let (first, second) = (next(stream).await, next(stream).await);
        assert_eq!(second.retry, None, "once is enough for a connection");
        let retry = first.retry.unwrap().as_millis();
        assert!((500..=1500).contains(&retry), "{retry} ms");
        retries.push(retry);
    }
    retries.sort();
    retries.dedup();
    // 20 draws from 1,001 values: all equal would mean no spread at all.
    assert!(retries.len() > 10, "{retries:?}");
}
