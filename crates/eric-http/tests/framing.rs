//! What a stream puts on the wire over HTTP/1.1: its events as they are, without
//! chunked framing, on a connection that closes when the stream ends; and the
//! connection's requests before it, answered as ever (eric writes a stream to the socket
//! itself once hyper has answered its request: `handoff.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use eric_http::HttpConfig;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod support;
use support::{next_chunk, start};

#[tokio::test]
async fn an_http1_stream_is_its_events_as_they_are_until_the_connection_closes() {
    let config = HttpConfig::default()
        .keep_alive(None)
        .max_stream_duration(Some(Duration::from_millis(600)));
    let server = start(config).await;
    let channel = server.create().await;
    let mut socket = TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let request = format!(
        "GET /channels/{channel}/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();

    let mut received = Vec::new();
    let head_end = read_head(&mut socket, &mut received).await;
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

/// Reads from `socket` into `received` until a response head is in; returns where the
/// head ends.
async fn read_head(socket: &mut TcpStream, received: &mut Vec<u8>) -> usize {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            return at + 4;
        }
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the head");
        received.extend_from_slice(&buf[..n]);
    }
}

/// Reads one response with a `content-length` off a keep-alive connection: its status
/// line and body.
async fn read_response(socket: &mut TcpStream) -> (String, String) {
    let mut received = Vec::new();
    let head_end = read_head(socket, &mut received).await;
    let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    let mut body = received.split_off(head_end);
    let had = body.len();
    body.resize(length, 0);
    socket.read_exact(&mut body[had..]).await.unwrap();
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, String::from_utf8(body).unwrap())
}

/// A connection that published and asked for a missing channel's stream first (answers
/// with lengths, the connection kept) then opens a stream gets its events: the stream
/// follows the connection's earlier requests, whatever they were.
#[tokio::test]
async fn a_stream_opened_after_other_requests_on_its_connection_gets_its_events() {
    let server = start(HttpConfig::default().keep_alive(None)).await;
    let channel = server.create().await;
    let mut socket = TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let publish = r#"{"type":"early","payload":0}"#;
    let request = format!(
        "POST /broadcast?channel_id={channel} HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{publish}",
        publish.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let (status, _) = read_response(&mut socket).await;
    assert_eq!(status, "http/1.1 200 ok");
    let request = "GET /channels/no-such-channel/events HTTP/1.1\r\nHost: x\r\n\r\n";
    socket.write_all(request.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut socket).await;
    assert_eq!(status, "http/1.1 404 not found", "{body}");

    let stream = format!("GET /channels/{channel}/events HTTP/1.1\r\nHost: x\r\n\r\n");
    socket.write_all(stream.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let head_end = read_head(&mut socket, &mut received).await;
    assert!(received.starts_with(b"HTTP/1.0 200 OK\r\n"));
    server.broadcast(&channel, "late", json!(1)).await;
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&received[head_end..]).contains("data: 1\n\n") {
        let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf));
        let n = read.await.expect("the broadcast never came").unwrap();
        assert!(n > 0, "closed before the broadcast");
        received.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&received[head_end..]).into_owned();
    assert!(body.contains("event: late\n"), "{body:?}");
    assert!(!body.contains("early"), "{body:?}");

    // The client goes: so do its stream and listener.
    drop(socket);
    server.eventually("eric_open_streams", 0).await;
    server.eventually("eric_listeners", 0).await;
}

/// A `HEAD` of a stream gets the stream's head and nothing after it, however many
/// events come (no stream is written where no body may follow): the connection's next
/// response is the next thing on it.
#[tokio::test]
async fn a_head_of_a_stream_gets_its_head_and_no_events() {
    let server = start(HttpConfig::default().keep_alive(None)).await;
    let channel = server.create().await;
    let mut socket = TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let request = format!("HEAD /channels/{channel}/events HTTP/1.1\r\nHost: x\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let head_end = read_head(&mut socket, &mut received).await;
    let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
    assert!(
        head.contains("content-type: text/event-stream\r\n"),
        "{head}"
    );
    assert_eq!(received.len(), head_end, "bytes after a HEAD's head");
    server.eventually("eric_open_streams", 0).await;
    for n in 0..3 {
        server.broadcast(&channel, "tick", json!(n)).await;
    }
    let request = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    socket.write_all(request.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut socket).await;
    assert_eq!(status, "http/1.1 200 ok", "{body}");
    assert!(!body.contains("tick"), "{body}");
}
