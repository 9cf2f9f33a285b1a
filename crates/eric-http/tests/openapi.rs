//! The OpenAPI document at `GET /openapi.json` describes every route the server
//! answers, with each status it answers with; the stream bound that lets a tool read
//! streams to their end; and the create bodies schemathesis found accepted wrongly.
//! (`.ci/schemathesis` checks the running server against the document in CI.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use eric_http::HttpConfig;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;

mod support;
use support::{next, start};

#[tokio::test]
async fn the_document_describes_every_route_with_its_statuses() {
    let server = start(HttpConfig::default()).await;
    let response = server
        .http
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let document: Value = response.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let mut routes: Vec<String> = Vec::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            routes.push(format!("{} {path}", method.to_uppercase()));
            let statuses = operation["responses"].as_object().unwrap();
            assert!(
                statuses.keys().any(|s| s.starts_with('2')),
                "{method} {path}"
            );
            assert!(
                statuses.contains_key("408"),
                "{method} {path}: every request may time out"
            );
        }
    }
    routes.sort();
    assert_eq!(
        routes,
        [
            "DELETE /channel/{channel}",
            "DELETE /listener/{channel}/{listener}",
            "GET /channels",
            "GET /channels/{channel}/events",
            "GET /events",
            "GET /healthz",
            "GET /metrics",
            "GET /stream/{channel}/{listener}",
            "POST /broadcast",
            "POST /dispatch",
            "POST /subscribe",
            "PUT /create",
        ]
    );
    // Each of them is served: nothing documented answers 404 for its path, or 405.
    let channel = server.create().await;
    let listener = server.subscribe(&channel).await;
    for route in &routes {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path
            .replace("{channel}", &channel)
            .replace("{listener}", &listener);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let url = server.url(&format!("{path}?channel_id={channel}&channel={channel}"));
        let status = tokio::time::timeout(
            Duration::from_secs(5),
            server.http.request(method, url).send(),
        )
        .await
        .unwrap()
        .unwrap()
        .status();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{route}");
        let documented = &document["paths"][path_of(route)][method_of(route)]["responses"];
        assert!(
            documented.get(status.as_str()).is_some(),
            "{route} answered {status}, which its document does not list"
        );
    }
}

fn path_of(route: &str) -> &str {
    route.split_once(' ').unwrap().1
}

fn method_of(route: &str) -> String {
    route.split_once(' ').unwrap().0.to_lowercase()
}

#[tokio::test]
async fn a_stream_ends_after_max_stream_duration_and_resumes_losing_nothing() {
    let config = HttpConfig::default().max_stream_duration(Some(Duration::from_millis(300)));
    let server = start(config).await;
    let channel = server.create().await;
    let path = format!("/channels/{channel}/events");
    let mut events = server.events(&path, None).await;
    server.broadcast(&channel, "news", 1.into()).await;
    let first = next(&mut events).await;
    assert_eq!(first.data, "1");
    // It ends by itself, with no event of eric's.
    let ended = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap();
    assert!(ended.is_none(), "{ended:?}");
    server.broadcast(&channel, "news", 2.into()).await;
    let mut resumed = server.events(&path, Some(&first.id)).await;
    assert_eq!(next(&mut resumed).await.data, "2");
}

#[tokio::test]
async fn create_reads_its_body_whatever_the_query_says() {
    let server = start(HttpConfig::default()).await;
    let create = |query: &'static str, body: &'static str| {
        server
            .http
            .put(server.url(&format!("/create{query}")))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(
        create("", "null").await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        create("", "[null, null]").await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        create("?channel_id=a", r#"{"channel_id": {}}"#)
            .await
            .unwrap()
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        create("?channel_id=b", "{\"channel_id\": \"x\\u0007\"}")
            .await
            .unwrap()
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        create("?channel_id=c", r#"{"channel_id": "d"}"#)
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
}
