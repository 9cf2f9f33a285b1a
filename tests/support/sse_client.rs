//! What the root tests do as a client of `eric serve`: create channels, publish
//! numbered broadcasts, and follow a channel's events (`EventSource`'s way, with
//! `Last-Event-ID`).
#![allow(dead_code)]

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// An event as a subscriber saw it: (id, event type, data).
pub(crate) type Seen = (String, String, String);

/// Subscribes to `channel` at `base` (resuming after `last_event_id`) and forwards
/// every event, keep-alive comments aside; the receiver ends when the stream does.
pub(crate) async fn subscribe_to(
    base: &str,
    channel: &str,
    last_event_id: Option<&str>,
) -> mpsc::UnboundedReceiver<Seen> {
    let url = format!("{base}/channels/{channel}/events");
    follow(&url, last_event_id).await.0
}

/// Opens the SSE stream at `url` (resuming after `last_event_id`) and forwards every
/// event; aborting the task closes the connection.
pub(crate) async fn follow(
    url: &str,
    last_event_id: Option<&str>,
) -> (mpsc::UnboundedReceiver<Seen>, tokio::task::JoinHandle<()>) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {url}");
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut events = response.bytes_stream().eventsource();
        while let Some(Ok(event)) = events.next().await {
            if tx.send((event.id, event.event, event.data)).is_err() {
                break;
            }
        }
    });
    (rx, task)
}

/// Sends `request` and reads its JSON reply.
pub(crate) async fn json(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// `POST /subscribe?channel_id=<channel>` at `base`: a stored listener's id.
pub(crate) async fn add_listener(http: &reqwest::Client, base: &str, channel: &str) -> String {
    let url = format!("{base}/subscribe?channel_id={channel}");
    let subscribed = json(http.post(url)).await;
    subscribed["listener_id"].as_str().unwrap().to_owned()
}

/// `PUT /create?channel_id=<channel>` at `base`: the status.
pub(crate) async fn create(http: &reqwest::Client, base: &str, channel: &str) -> u16 {
    let response = http
        .put(format!("{base}/create?channel_id={channel}"))
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

/// Broadcasts `{"n": n}` (type `news`) to `channel` at `base`: the event id.
pub(crate) async fn publish_to(
    http: &reqwest::Client,
    base: &str,
    channel: &str,
    n: u64,
) -> String {
    let response = http
        .post(format!("{base}/broadcast?channel_id={channel}"))
        .json(&json!({"type": "news", "payload": {"n": n}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}
