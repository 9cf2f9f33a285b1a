//! Servers survive any client: one that connects and sends nothing, sends its body a
//! byte at a time, never reads its stream or stops reading its socket; and the caps on
//! channels, listeners and connections.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use eric_core::OverflowPolicy;
use eric_http::HttpConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

mod support;
use support::{next, start};

#[tokio::test]
async fn a_client_that_connects_and_sends_nothing_is_closed() {
    use tokio::io::AsyncReadExt;

    let config = HttpConfig::default().header_read_timeout(Duration::from_millis(300));
    let server = start(config).await;
    let addr = server.base.trim_start_matches("http://").to_owned();

    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut halfway = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut halfway, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    for connection in [&mut silent, &mut halfway] {
        let mut buf = [0u8; 256];
        // The server closes it (a 408 reply or none, then EOF) well within 5 s.
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match connection.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a silent connection was kept open");
    }
    // The server still serves everyone else.
    let health = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_is_disconnected_and_the_others_get_everything() {
    let capacity = 64;
    let config = HttpConfig::default().capacity(capacity, OverflowPolicy::Disconnect);
    let server = start(config).await;
    let channel = server.create().await;
    // Subscribed, never streamed: everything broadcast waits for it.
    let idle = server.subscribe(&channel).await;
    let readers = 20;
    let mut streams = Vec::new();
    for _ in 0..readers {
        streams.push(
            server
                .events(&format!("/channels/{channel}/events"), None)
                .await,
        );
    }
    server.eventually("eric_open_streams", readers).await;

    let total = 3 * capacity;
    let reading: Vec<_> = streams
        .into_iter()
        .map(|mut events| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                while got.len() < total {
                    let event = next(&mut events).await;
                    if event.event == "n" {
                        got.push(event.data.parse::<usize>().unwrap());
                    }
                }
                (got, events)
            })
        })
        .collect();
    for i in 0..total {
        let r = server.broadcast(&channel, "n", json!(i)).await;
        assert_eq!(r.status(), StatusCode::OK, "broadcast {i}");
    }
    let mut still_open = Vec::new();
    for reader in reading {
        let (got, events) = reader.await.unwrap();
        assert_eq!(got, (0..total).collect::<Vec<_>>());
        still_open.push(events);
    }
    // The laggard alone went, counted; nothing else was dropped or refused.
    assert_eq!(server.metric("eric_disconnected_total").await, 1);
    assert_eq!(server.metric("eric_listeners").await, readers);
    assert_eq!(server.metric("eric_rejected_total").await, 0);
    let gone = server
        .http
        .get(server.url(&format!("/stream/{channel}/{idle}")))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    // A counter does not go down when its channel goes.
    let deleted = server
        .http
        .delete(server.url(&format!("/channel/{channel}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(server.metric("eric_disconnected_total").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_its_socket_is_disconnected() {
    let config = HttpConfig::default()
        .keep_alive(None)
        .capacity(64, OverflowPolicy::Disconnect);
    let server = start(config).await;
    let channel = server.create().await;
    let mut reader = server
        .events(&format!("/channels/{channel}/events"), None)
        .await;

    // Once the kernel's and hyper's buffers are full, its stream stops being read.
    let stuck = client_that_stops_reading(&server, &format!("/channels/{channel}/events")).await;
    server.eventually("eric_open_streams", 2).await;

    let reading = tokio::spawn(async move {
        let mut expected = 0usize;
        loop {
            let event = next(&mut reader).await;
            if event.event != "big" {
                continue;
            }
            let data: Value = serde_json::from_str(&event.data).unwrap();
            assert_eq!(
                data["n"], expected,
                "the reading client lost or reordered an event"
            );
            expected += 1;
            if data["last"] == true {
                return (expected, reader);
            }
        }
    });
    // 8 KiB events until the stuck client is disconnected (at most 64 MiB).
    let filler = "x".repeat(8 * 1024);
    let mut sent = 0usize;
    while server.metric("eric_disconnected_total").await == 0 {
        assert!(
            sent < 8192,
            "a client that never reads was never disconnected"
        );
        for _ in 0..64 {
            let r = server
                .broadcast(&channel, "big", json!({"n": sent, "fill": filler}))
                .await;
            assert_eq!(r.status(), StatusCode::OK);
            sent += 1;
        }
    }
    let r = server
        .broadcast(&channel, "big", json!({"n": sent, "last": true}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (received, reader) = reading.await.unwrap();
    assert_eq!(received, sent + 1);
    assert_eq!(server.metric("eric_listeners").await, 1);
    drop((stuck, reader));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disconnected_for_overflowing_is_told_what_it_missed_when_it_comes_back() {
    use eventsource_stream::Eventsource;
    use futures_util::StreamExt;
    use tokio::io::AsyncReadExt;

    // The defaults: what `eric serve` bounds (1,024 unread) and replays.
    let server = start(HttpConfig::default().keep_alive(None)).await;
    let channel = server.create().await;
    let path = format!("/channels/{channel}/events");

    let mut stuck = client_that_stops_reading(&server, &path).await;
    server.eventually("eric_open_streams", 1).await;

    // 2 KiB events until it is disconnected, then more while it is away, as a
    // channel that goes on broadcasting does. (Small enough for the replay window's
    // default bound in bytes to keep 1,024 of them.)
    let filler = "x".repeat(2 * 1024);
    let mut sent = 0usize;
    let broadcast = async |n: usize| {
        let r = server
            .broadcast(&channel, "big", json!({"n": n, "fill": filler}))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
    };
    while server.metric("eric_disconnected_total").await == 0 {
        assert!(
            sent < 32_768,
            "a client that never reads was never disconnected"
        );
        for _ in 0..16 {
            broadcast(sent).await;
            sent += 1;
        }
    }
    for _ in 0..256 {
        broadcast(sent).await;
        sent += 1;
    }

    // It reads what it was sent before it was disconnected: events in order, then
    // the error that ended its stream.
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stuck.read_to_end(&mut raw))
        .await
        .expect("the disconnected stream was not closed")
        .unwrap();
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no response head")
        + 4;
    let events: Vec<_> = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
        bytes::Bytes::copy_from_slice(&raw[head_end..]),
    )])
    .eventsource()
    .map(|e| e.unwrap())
    .collect()
    .await;
    let (ending, got) = events
        .split_last()
        .expect("no event before the disconnection");
    assert_eq!(
        ending.event,
        eric_core::MESSAGE_TYPE_INTERNAL_ERROR,
        "{ending:?}"
    );
    let numbers: Vec<u64> = got.iter().map(number).collect();
    assert_eq!(numbers, (0..got.len() as u64).collect::<Vec<_>>());
    let last = got.last().expect("no event before the disconnection");

    // Back with its last event id, as an `EventSource` comes back. It cannot resume
    // there: a listener may be `capacity` broadcasts behind at most, and it was one
    // more when it was disconnected. So a reset first, naming the oldest broadcast it
    // gets, then every broadcast from that one on: a gap it is told of, never a silent one.
    let mut resumed = server.events(&path, Some(&last.id)).await;
    let reset = next(&mut resumed).await;
    assert_eq!(reset.event, "_eric_reset", "{}", reset.data);
    let reset: Value = serde_json::from_str(&reset.data).unwrap();
    assert_eq!(reset["reason"], "too_old");
    assert_eq!(reset["last_event_id"], last.id);
    let first = next(&mut resumed).await;
    assert_eq!(reset["oldest_kept"], first.id);
    let from = number(&first);
    let window = eric_http::DEFAULT_CAPACITY as u64;
    assert_eq!(from, sent as u64 - window, "the window, all of it");
    for n in from + 1..sent as u64 {
        assert_eq!(
            number(&next(&mut resumed).await),
            n,
            "a gap after the reset"
        );
    }
}

/// A client with a 4 KiB receive buffer that sends its request for `path` and reads
/// nothing more (until the test reads it).
async fn client_that_stops_reading(server: &support::Running, path: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = server.base.trim_start_matches("http://").parse().unwrap();
    let mut client = socket.connect(addr).await.unwrap();
    client
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    client
}

/// The `n` of a test event.
fn number(event: &eventsource_stream::Event) -> u64 {
    let data: Value = serde_json::from_str(&event.data).unwrap();
    data["n"].as_u64().unwrap()
}

#[tokio::test]
async fn a_body_sent_a_byte_at_a_time_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let config = HttpConfig::default().request_timeout(Duration::from_millis(300));
    let server = start(config).await;
    let channel = server.create().await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(
        format!(
            "POST /broadcast?channel_id={channel} HTTP/1.1\r\nHost: x\r\n\
             Content-Type: application/json\r\nContent-Length: 64\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let dribble = async {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if slow.write_all(b" ").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(600), dribble).await;
    let mut reply = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut reply))
        .await
        .expect("no reply to a slow body")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("RequestTimeout"), "{reply}");
    // Nothing was broadcast.
    assert_eq!(server.metric("eric_delivered_total").await, 0);
}

#[tokio::test]
async fn channels_and_listeners_are_capped() {
    let server = start(HttpConfig::default().limits(2, 3)).await;
    let first = server.create().await;
    server.create().await;
    let refused = server.http.put(server.url("/create")).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "LimitReached");

    server.subscribe(&first).await;
    server.subscribe(&first).await;
    let _open = server
        .events(&format!("/channels/{first}/events"), None)
        .await;
    for refused in [
        server
            .http
            .post(server.url(&format!("/subscribe?channel_id={first}")))
            .send()
            .await
            .unwrap(),
        server
            .http
            .get(server.url(&format!("/channels/{first}/events")))
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    // Room again once a channel goes.
    let deleted = server
        .http
        .delete(server.url(&format!("/channel/{first}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    server.create().await;
}

/// A cap on connections (issue 22): past it a client gets 503 `LimitReached` and the
/// connection closes; `/metrics` counts the refusals, and room frees as clients go.
#[tokio::test]
async fn connections_over_the_cap_get_503_and_are_counted() {
    let server = start(HttpConfig::default().max_connections(Some(3))).await;
    let channel = server.create().await;
    // Two streams and the test's own pooled connection: three open.
    let mut first = server
        .events(&format!("/channels/{channel}/events"), None)
        .await;
    let second = server
        .events(&format!("/channels/{channel}/events"), None)
        .await;
    server.eventually("eric_connections", 3).await;
    let refused = reqwest::Client::new()
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["connection"], "close");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "LimitReached");
    assert_eq!(server.metric("eric_connections_refused_total").await, 1);
    // The streams it holds are unaffected; when one goes, a new client is served.
    server.broadcast(&channel, "n", json!(1)).await;
    assert_eq!(next(&mut first).await.data, "1");
    drop(second);
    server.eventually("eric_connections", 2).await;
    let served = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
}
