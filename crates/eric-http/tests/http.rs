//! The HTTP API with a real client (reqwest) and a real SSE parser: every route, every
//! error status, tokens, a restart with a repository, and a graceful shutdown. Streams'
//! behaviour is in `streams.rs`, clients that misbehave and the caps in `limits.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use eric_http::{HttpConfig, HttpServer};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

mod support;
use support::{Running, next, start};

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

/// Found by a flaky restart test: a client that connects and has not sent a byte when
/// the server stops (a browser's preconnect, an HTTP client's pool) does not hold the
/// shutdown until it would have timed out. Here that would be a minute.
#[tokio::test]
async fn a_connection_that_said_nothing_yet_does_not_hold_up_a_shutdown() {
    let minute = Duration::from_secs(60);
    let config = HttpConfig::default()
        .header_read_timeout(minute)
        .shutdown_timeout(minute);
    let server = start(config).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Accepted: the server answers a request on a connection made after it.
    assert_eq!(server.create().await.len(), 36);
    // Within 15 s, or it panics: the silent connection would hold it for a minute.
    server.shut_down().await;
    drop(silent);
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
