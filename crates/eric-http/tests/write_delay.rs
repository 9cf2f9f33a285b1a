//! `HttpConfig::write_delay` (`eric serve --write-delay MS`): what a stream receives
//! within the delay after an event is written at once, in order, and nothing gathered
//! is lost when the stream ends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use eric_http::HttpConfig;
use serde_json::json;
use support::{next, next_chunk, start};

#[tokio::test]
async fn events_that_come_within_the_delay_are_written_together_in_order() {
    let server = start(HttpConfig::default().write_delay(Some(Duration::from_millis(500)))).await;
    let channel = server.create().await;
    let mut body = server
        .raw_body(&format!("/channels/{channel}/events"))
        .await;
    for n in 0..5 {
        let published = server.broadcast(&channel, "n", json!({ "n": n })).await;
        assert_eq!(published.status(), 200);
    }
    // The first write that carries events carries all five: one chunk of the body.
    let written = loop {
        let chunk = next_chunk(&mut body, Duration::from_secs(5)).await;
        let chunk = String::from_utf8(chunk.to_vec()).unwrap();
        if chunk.contains("data:") {
            break chunk;
        }
    };
    let data: Vec<&str> = written
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        .collect();
    let expected: Vec<String> = (0..5).map(|n| json!({ "n": n }).to_string()).collect();
    assert_eq!(data, expected, "one write, in order: {written:?}");
    server.shut_down().await;
}

#[tokio::test]
async fn a_stream_that_ends_first_writes_what_it_gathered() {
    // A delay far past the test's patience: only the end of the stream can write these.
    let server = start(HttpConfig::default().write_delay(Some(Duration::from_secs(60)))).await;
    let channel = server.create().await;
    let mut events = server
        .events(&format!("/channels/{channel}/events"), None)
        .await;
    for n in 0..2 {
        let published = server.broadcast(&channel, "n", json!({ "n": n })).await;
        assert_eq!(published.status(), 200);
    }
    let removed = server
        .http
        .delete(server.url(&format!("/channel/{channel}")))
        .send()
        .await
        .unwrap();
    assert!(removed.status().is_success(), "{}", removed.status());
    for n in 0..2 {
        let event = next(&mut events).await;
        assert_eq!(
            (event.event.as_str(), event.data),
            ("n", json!({ "n": n }).to_string())
        );
    }
    assert_eq!(next(&mut events).await.event, "_eric_channel_closed");
    server.shut_down().await;
}
