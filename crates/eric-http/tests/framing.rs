//! What a stream puts on the wire over HTTP/1.1: its events as they are, without
//! chunked framing, on a connection that closes when the stream ends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use eric_http::HttpConfig;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;
use support::{next_chunk, start};

#[tokio::test]
async fn an_http1_stream_is_its_events_as_they_are_until_the_connection_closes() {
    let config = HttpConfig::default()
        .keep_alive(None)
        .max_stream_duration(Some(Duration::from_millis(600)));
    let server = start(config).await;
    let channel = server.create().await;
    let mut socket = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let request = format!(
        "GET /channels/{channel}/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();

    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the head");
        received.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.0 200 ok\r\n"), "{head}");
    assert!(
        head.contains("content-type: text/event-stream\r\n"),
        "{head}"
    );
    assert!(
        !head.contains("transfer-encoding") && !head.contains("content-length"),
        "{head}"
    );

    // Subscribed once the head is out: these reach it.
    for n in 0..3 {
        server.broadcast(&channel, "tick", json!(n)).await;
    }
    // The stream ends at its maximum duration, and the connection with it.
    let read_to_end = socket.read_to_end(&mut received);
    tokio::time::timeout(Duration::from_secs(5), read_to_end)
        .await
        .expect("the connection stayed open after its stream ended")
        .unwrap();
    let body = String::from_utf8(received[head_end..].to_vec()).unwrap();
    // The SSE text itself: no chunk sizes, no CRLF of chunked framing.
    assert!(body.starts_with("retry: "), "{body:?}");
    assert!(!body.contains('\r'), "{body:?}");
    assert_eq!(body.matches("event: tick\n").count(), 3, "{body:?}");
    for n in 0..3 {
        assert!(body.contains(&format!("-{n}\ndata: {n}\n\n")), "{body:?}");
    }
}

/// No reconnection storm from idle streams: a stream's first bytes, before any event,
/// are its own `retry` in a block without data (which sets a browser's reconnection
/// time and fires no event), so that clients that never got an event are spread out
/// too when the server goes away.
#[tokio::test]
async fn a_stream_gets_its_own_retry_before_any_event() {
    let server = start(HttpConfig::default().retry(Duration::from_millis(1000))).await;
    let channel = server.create().await;
    let mut retries = Vec::new();
    for _ in 0..20 {
        let mut body = server
            .raw_body(&format!("/channels/{channel}/events"))
            .await;
        let first = next_chunk(&mut body, Duration::from_secs(5)).await;
        let text = std::str::from_utf8(&first).unwrap();
        let retry: u64 = text
            .strip_prefix("retry: ")
            .and_then(|rest| rest.strip_suffix("\n\n"))
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("{text:?}"));
        assert!((500..=1500).contains(&retry), "{retry} ms");
        retries.push(retry);
    }
    retries.sort_unstable();
    retries.dedup();
    // 20 draws from 1,001 values: all equal would mean no spread at all.
    assert!(retries.len() > 10, "{retries:?}");
}
