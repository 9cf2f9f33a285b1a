//! The HTTP API with a real client (reqwest) and a real SSE parser: every route, every
//! error status, resume with Last-Event-ID, keep-alive, streams that end when their
//! channel or listener goes, and clients that go away.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use eric_core::OverflowPolicy;
use eric_http::{HttpConfig, HttpServer};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

mod support;
use support::{Running, next, next_chunk, start};

#[tokio::test]
async fn every_route_works_as_eric_sse_front_end_does() {
    let server = start(HttpConfig::default()).await;
    assert_eq!(
        server
            .http
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
    let channel = server.create().await;
    let named = server
        .http
        .put(server.url("/create?channel_id=room-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(named.status(), StatusCode::CREATED);
    let listed: Vec<String> = server
        .http
        .get(server.url("/channels"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed.contains(&channel) && listed.contains(&"room-1".to_owned()));

    let listener = server.subscribe(&channel).await;
    let reply: Value = server
        .broadcast(&channel, "news", json!({"headline": "é"}))
        .await
        .json()
        .await
        .unwrap();
    assert!(reply["id"].as_str().unwrap().ends_with("-0"));
    assert_eq!(reply["listeners"], 1);
    let dispatched = server
        .http
        .post(server.url(&format!(
            "/dispatch?channel_id={channel}&listener_id={listener}"
        )))
        .json(&json!({"type": "dm", "payload": "for you"}))
        .send()
        .await
        .unwrap();
    assert_eq!(dispatched.status(), StatusCode::OK);

    let mut events = server
        .events(&format!("/stream/{channel}/{listener}"), None)
        .await;
    let first = next(&mut events).await;
    assert_eq!(
        (first.event.as_str(), first.id.as_str()),
        ("news", reply["id"].as_str().unwrap())
    );
    let data: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(
        data,
        json!({"headline": "é"}),
        "data is JSON, not a Python repr"
    );
    let retry = first.retry.unwrap();
    assert!(
        (Duration::from_millis(1500)..=Duration::from_millis(4500)).contains(&retry),
        "{retry:?}: within [retry/2, 3*retry/2] of the 3 s default"
    );
    let second = next(&mut events).await;
    assert_eq!(
        (second.event.as_str(), second.data.as_str()),
        ("dm", "\"for you\"")
    );
    assert_eq!(server.metric("eric_open_streams").await, 1);
    assert_eq!(server.metric("eric_delivered_total").await, 2);
    assert_eq!(server.metric("eric_channels").await, 2);
    // Both were published over HTTP: each delivery's latency is in the histogram, which
    // a Prometheus client reads as such.
    assert_eq!(
        server.metric("eric_delivery_latency_seconds_count").await,
        2
    );
    let text = server.metrics_text().await;
    assert!(
        text.contains("# TYPE eric_delivery_latency_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("eric_delivery_latency_seconds_bucket{le=\"+Inf\"} 2"),
        "{text}"
    );

    // Removing the listener ends its stream; removing a channel, likewise with the closed event.
    let removed = server
        .http
        .delete(server.url(&format!("/listener/{channel}/{listener}")))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    assert!(
        tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .is_none()
    );
    let mut watching = server.events("/channels/room-1/events", None).await;
    let deleted = server
        .http
        .delete(server.url("/channel/room-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(next(&mut watching).await.event, "_eric_channel_closed");
    assert!(
        tokio::time::timeout(Duration::from_secs(5), watching.next())
            .await
            .unwrap()
            .is_none()
    );
    server.eventually("eric_open_streams", 0).await;
}

#[tokio::test]
async fn errors_are_json_with_the_right_status() {
    let server = start(HttpConfig::default().max_body_bytes(1024)).await;
    let channel = server.create().await;
    let listener = server.subscribe(&channel).await;
    let http = &server.http;
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            http.post(server.url("/subscribe?channel_id=nope")),
            StatusCode::NOT_FOUND,
            "InvalidChannelException",
        ),
        (
            http.post(server.url("/broadcast?channel_id=nope"))
                .json(&json!({"type": "t"})),
            StatusCode::NOT_FOUND,
            "InvalidChannelException",
        ),
        (
            http.get(server.url("/stream/nope/x")),
            StatusCode::NOT_FOUND,
            "InvalidChannelException",
        ),
        (
            http.get(server.url(&format!("/stream/{channel}/ghost"))),
            StatusCode::NOT_FOUND,
            "InvalidListenerException",
        ),
        (
            http.get(server.url("/channels/nope/events")),
            StatusCode::NOT_FOUND,
            "InvalidChannelException",
        ),
        (
            http.delete(server.url("/channel/nope")),
            StatusCode::NOT_FOUND,
            "InvalidChannelException",
        ),
        (
            http.delete(server.url(&format!("/listener/{channel}/ghost"))),
            StatusCode::NOT_FOUND,
            "InvalidListenerException",
        ),
        (
            http.post(server.url(&format!("/dispatch?channel_id={channel}&listener_id=ghost")))
                .json(&json!({"type": "t"})),
            StatusCode::NOT_FOUND,
            "InvalidListenerException",
        ),
        (
            http.post(server.url(&format!("/dispatch?channel_id={channel}")))
                .json(&json!({"type": "t"})),
            StatusCode::BAD_REQUEST,
            "InvalidMessageFormat",
        ),
        (
            http.post(server.url("/subscribe")),
            StatusCode::BAD_REQUEST,
            "InvalidMessageFormat",
        ),
        (
            http.post(server.url(&format!("/broadcast?channel_id={channel}")))
                .header("content-type", "application/json")
                .body("{not json"),
            StatusCode::BAD_REQUEST,
            "InvalidMessageFormat",
        ),
        (
            http.post(server.url(&format!("/broadcast?channel_id={channel}")))
                .json(&json!({"payload": 1})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "InvalidMessageFormat",
        ),
        (
            http.post(server.url(&format!("/broadcast?channel_id={channel}")))
                .json(&json!({"type": "two\nlines"})),
            StatusCode::BAD_REQUEST,
            "InvalidMessageFormat",
        ),
        (
            http.post(server.url(&format!("/broadcast?channel_id={channel}")))
                .json(&json!({"type": "t", "payload": "x".repeat(2048)})),
            StatusCode::PAYLOAD_TOO_LARGE,
            "InvalidMessageFormat",
        ),
        (
            http.put(server.url(&format!("/create?channel_id={channel}"))),
            StatusCode::CONFLICT,
            "Conflict",
        ),
    ];
    for (request, status, kind) in cases {
        let response = request.send().await.unwrap();
        let got = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            (got, body["error"].as_str().unwrap()),
            (status, kind),
            "{body}"
        );
        assert!(body["message"].is_string());
    }
    let _ = listener;
}

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

#[tokio::test]
async fn tokens_guard_publishing_and_subscribing_separately() {
    let config = HttpConfig::default()
        .publish_token(Some("pub-secret".into()))
        .subscribe_token(Some("sub-secret".into()));
    let server = start(config).await;
    let http = &server.http;
    assert_eq!(
        http.put(server.url("/create"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        http.put(server.url("/create"))
            .bearer_auth("sub-secret")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let created = http
        .put(server.url("/create"))
        .bearer_auth("pub-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let channel = created.json::<Value>().await.unwrap()["channel_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let events = format!("/channels/{channel}/events");
    assert_eq!(
        http.get(server.url(&events)).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // EventSource cannot set headers: the token may come in the query.
    let ok = http
        .get(server.url(&format!("{events}?access_token=sub-secret")))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(
        http.get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn with_a_repository_channels_and_unread_messages_survive_a_restart() {
    use eric_persistence::{InMemoryStorage, KvStorage, SseChannelRepository};
    use std::sync::Arc;

    let storage: Arc<dyn KvStorage> = Arc::new(InMemoryStorage::new());
    let repository = || SseChannelRepository::from_arc(Arc::clone(&storage));
    let start_stored = || async {
        let config = HttpConfig::default();
        let server = HttpServer::bind_with_repository("127.0.0.1:0", config, repository());
        Running::serve(server.await.unwrap())
    };

    let first = start_stored().await;
    let channel = first.create().await;
    let listener = first.subscribe(&channel).await;
    assert_eq!(
        first.broadcast(&channel, "news", json!(1)).await.status(),
        StatusCode::OK
    );
    let dispatched = first
        .http
        .post(first.url(&format!(
            "/dispatch?channel_id={channel}&listener_id={listener}"
        )))
        .json(&json!({"type": "dm", "payload": "kept"}))
        .send()
        .await
        .unwrap();
    assert_eq!(dispatched.status(), StatusCode::OK);
    first.shut_down().await;

    let second = start_stored().await;
    let listed: Vec<String> = second
        .http
        .get(second.url("/channels"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, std::slice::from_ref(&channel));
    let again = second
        .http
        .put(second.url(&format!("/create?channel_id={channel}")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT, "a stored id is taken");
    let mut events = second
        .events(&format!("/stream/{channel}/{listener}"), None)
        .await;
    assert_eq!(next(&mut events).await.event, "news");
    assert_eq!(next(&mut events).await.data, "\"kept\"");
    let deleted = second
        .http
        .delete(second.url(&format!("/channel/{channel}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert!(repository().load_all().await.unwrap().is_empty());
}

/// Shutting down ends every stream without telling clients their channel was removed
/// and without spending an event id: they reconnect and resume where they were.
#[tokio::test]
async fn shutdown_ends_streams_without_a_closing_event_and_waits_for_them() {
    let mut server = start(HttpConfig::default()).await;
    let channel = server.create().await;
    let mut events = server
        .events(&format!("/channels/{channel}/events"), None)
        .await;
    let published: Value = server
        .broadcast(&channel, "news", json!(1))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        next(&mut events).await.id,
        published["id"].as_str().unwrap()
    );

    server.signal_shutdown();
    let end = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("the stream did not end after shutdown");
    assert!(
        end.is_none(),
        "expected the end of the stream and no event, got {end:?}"
    );
    let base = server.base.clone();
    server.shut_down().await;
    // Not listening any more.
    assert!(reqwest::get(format!("{base}/healthz")).await.is_err());
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
    use tokio::io::AsyncWriteExt;

    let config = HttpConfig::default()
        .keep_alive(None)
        .capacity(64, OverflowPolicy::Disconnect);
    let server = start(config).await;
    let channel = server.create().await;
    let mut reader = server
        .events(&format!("/channels/{channel}/events"), None)
        .await;

    // A client with a small receive buffer that sends its request and never reads:
    // once the kernel's and hyper's buffers are full, its stream stops being read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = server.base.trim_start_matches("http://").parse().unwrap();
    let mut stuck = socket.connect(addr).await.unwrap();
    stuck
        .write_all(format!("GET /channels/{channel}/events HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
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

/// Found by hand (issue 19): a client library that sends `Content-Type:
/// application/json` on every request creates a channel with an empty body; a body that
/// is not what `PUT /create` takes is eric's JSON error, never axum's plain text.
#[tokio::test]
async fn create_takes_an_empty_json_body_and_refuses_bad_ones_in_json() {
    let server = start(HttpConfig::default()).await;
    let put = |body: &'static str| {
        server
            .http
            .put(server.url("/create"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let created = put("").await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let named = put(r#"{"channel_id": "room"}"#).await.unwrap();
    assert_eq!(named.status(), StatusCode::CREATED);
    let body: Value = named.json().await.unwrap();
    assert_eq!(body["channel_id"], "room");
    for bad in ["{", "not json", r#"{"channel_id": 5}"#] {
        let refused = put(bad).await.unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"], "InvalidMessageFormat", "{bad}");
    }
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
