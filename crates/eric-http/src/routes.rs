//! The routes: eric-sse's HTTP front end, plus subscribe-and-stream for `EventSource`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use eric_core::Message;
use eric_persistence::EventStream;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::events::SseBody;
use crate::state::AppState;

type Shared = State<Arc<AppState>>;

#[derive(Deserialize, Default)]
pub(crate) struct ChannelQuery {
    channel_id: Option<String>,
    listener_id: Option<String>,
    last_event_id: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct Publish {
    #[serde(rename = "type")]
    message_type: String,
    #[serde(default)]
    payload: Value,
}

fn json_body<T>(body: std::result::Result<Json<T>, JsonRejection>) -> Result<T> {
    body.map(|Json(t)| t)
        .map_err(|rejection| Error::BadRequest {
            status: rejection.status(),
            message: rejection.body_text(),
        })
}

fn channel_id(id: Option<&str>) -> Result<&str> {
    id.ok_or_else(|| Error::bad_request("missing query parameter channel_id"))
}

/// `PUT /create`: a channel, with the given `channel_id` (query or JSON body) or a
/// fresh one. 201 `{"channel_id"}`; 409 if the id is taken.
pub(crate) async fn create(
    State(state): Shared,
    Query(query): Query<ChannelQuery>,
    body: Bytes,
) -> Result<impl IntoResponse> {
    let id = match query.channel_id {
        Some(id) => Some(id),
        None => channel_id_in(&body)?,
    };
    if state.channels.len().await? >= state.config.max_channels {
        return Err(Error::LimitReached(format!(
            "the server holds its maximum of {} channels",
            state.config.max_channels
        )));
    }
    let id = state.channels.create(state.channel_settings(id)).await?;
    Ok((StatusCode::CREATED, Json(json!({"channel_id": id}))))
}

/// The `channel_id` a `PUT /create` body names. An empty body names none, whatever its
/// content type (a client library may send `application/json` on every request); any
/// other body must be a JSON object, whose `channel_id`, if present, is a string.
fn channel_id_in(body: &[u8]) -> Result<Option<String>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let body: Value = serde_json::from_slice(body)
        .map_err(|err| Error::bad_request(format!("the body is not JSON: {err}")))?;
    match body.get("channel_id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) => Ok(Some(id.clone())),
        Some(_) => Err(Error::bad_request("channel_id must be a string")),
    }
}

/// `POST /subscribe?channel_id=`: a listener. `{"listener_id"}`.
pub(crate) async fn subscribe(
    State(state): Shared,
    Query(query): Query<ChannelQuery>,
) -> Result<Json<Value>> {
    let channel = channel_id(query.channel_id.as_deref())?;
    room_for_a_listener(&state, channel).await?;
    let listener = state.channels.add_listener(channel).await?;
    Ok(Json(json!({"listener_id": listener})))
}

/// `POST /broadcast?channel_id=` with `{"type", "payload"}`.
pub(crate) async fn broadcast(
    State(state): Shared,
    Query(query): Query<ChannelQuery>,
    body: std::result::Result<Json<Publish>, JsonRejection>,
) -> Result<Json<Value>> {
    let publish = json_body(body)?;
    let channel = channel_id(query.channel_id.as_deref())?;
    let message = Message::new(publish.message_type, publish.payload);
    let published = state.channels.broadcast(channel, message).await?;
    // In a cluster, listeners are counted by each process for itself: null.
    Ok(Json(
        json!({"id": published.event_id, "listeners": published.listeners}),
    ))
}

/// `POST /dispatch?channel_id=&listener_id=` with `{"type", "payload"}`.
pub(crate) async fn dispatch(
    State(state): Shared,
    Query(query): Query<ChannelQuery>,
    body: std::result::Result<Json<Publish>, JsonRejection>,
) -> Result<Json<Value>> {
    let publish = json_body(body)?;
    let listener = query
        .listener_id
        .as_deref()
        .ok_or_else(|| Error::bad_request("missing query parameter listener_id"))?;
    let channel = channel_id(query.channel_id.as_deref())?;
    let message = Message::new(publish.message_type, publish.payload);
    state.channels.dispatch(channel, listener, message).await?;
    Ok(Json(json!({"ok": true})))
}

fn last_event_id(headers: &HeaderMap, query: &ChannelQuery) -> Option<String> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query.last_event_id.clone())
}

fn sse_response(state: &AppState, events: EventStream) -> Response {
    let retry_ms = state.config.connection_retry_ms();
    let body = SseBody::new(
        events,
        state.config.keep_alive,
        retry_ms,
        Arc::clone(&state.metrics),
    );
    // Sized for its three headers: hyper keeps a response's header map for the
    // connection's next request, so a default-sized one (six entries) would cost an idle
    // stream 330 bytes more.
    let mut headers = HeaderMap::with_capacity(3);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies such as nginx must not buffer a stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    let mut response = Body::from_stream(body).into_response();
    *response.headers_mut() = headers;
    response
}

/// `GET /stream/{channel}/{listener}`: the listener's events, resumed after
/// `Last-Event-ID` (header or `?last_event_id=`).
pub(crate) async fn stream(
    State(state): Shared,
    Path((channel_id, listener_id)): Path<(String, String)>,
    Query(query): Query<ChannelQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let last = last_event_id(&headers, &query);
    let events = state
        .channels
        .message_stream(&channel_id, &listener_id, last.as_deref())
        .await?;
    Ok(sse_response(&state, events))
}

/// `GET /channels/{channel}/events`: subscribe and stream in one request, what a
/// browser's `EventSource` wants; the listener goes when the connection does.
pub(crate) async fn events(
    State(state): Shared,
    Path(channel_id): Path<String>,
    Query(query): Query<ChannelQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    room_for_a_listener(&state, &channel_id).await?;
    let last = last_event_id(&headers, &query);
    let events = state
        .channels
        .subscribe(&channel_id, last.as_deref())
        .await?;
    Ok(sse_response(&state, events))
}

/// `DELETE /listener/{channel}/{listener}`: its stream ends. 204.
pub(crate) async fn remove_listener(
    State(state): Shared,
    Path((channel_id, listener_id)): Path<(String, String)>,
) -> Result<StatusCode> {
    state
        .channels
        .remove_listener(&channel_id, &listener_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /channel/{channel}`: its streams get the closed event and end. 204.
pub(crate) async fn remove_channel(
    State(state): Shared,
    Path(channel_id): Path<String>,
) -> Result<StatusCode> {
    // Removal closes this process's copy, so what it counted stops changing: keep it.
    let removed = state.channels.local().get(&channel_id).ok();
    state.channels.remove(&channel_id).await?;
    if let Some(removed) = removed {
        state.metrics.retire(&removed.stats());
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /channels`: the ids.
pub(crate) async fn channels(State(state): Shared) -> Result<Json<Vec<String>>> {
    let mut ids = state.channels.ids().await?;
    ids.sort();
    Ok(Json(ids))
}

/// `GET /healthz`.
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// `GET /metrics`: Prometheus text.
pub(crate) async fn metrics(State(state): Shared) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics_text(),
    )
}

/// Checks a bearer token (or, for streams, `?access_token=`) when one is configured.
pub(crate) async fn require(token: Option<String>, request: Request, next: Next) -> Response {
    let Some(expected) = token else {
        return next.run(request).await;
    };
    let from_header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let from_query = request.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("access_token="))
            .map(str::to_owned)
    });
    let given = from_header.or(from_query);
    if given.is_some_and(|t| constant_time_eq(t.as_bytes(), expected.as_bytes())) {
        next.run(request).await
    } else {
        Error::Unauthorized.into_response()
    }
}

/// Lets a request that changes state or opens a stream through while the server is
/// not shutting down, and holds the gate open until it is answered (a stream: until it
/// is open); `ShuttingDown` once shutting down has begun.
pub(crate) async fn through_gate(state: Arc<AppState>, request: Request, next: Next) -> Response {
    let Some(_pass) = state.gate.enter().await else {
        return Error::ShuttingDown.into_response();
    };
    next.run(request).await
}

/// `LimitReached` when `channel` holds `max_listeners` already (on this process: a
/// cluster channel not served here yet has none). An atomic read, not `info`'s scan of
/// every listener: it runs for every stream opened.
async fn room_for_a_listener(state: &AppState, channel: &str) -> Result<()> {
    let local = state.channels.local().get(channel);
    let listeners = local.map_or(0, |channel| channel.listener_count());
    if listeners >= state.config.max_listeners {
        return Err(Error::LimitReached(format!(
            "channel {channel:?} holds its maximum of {} listeners",
            state.config.max_listeners
        )));
    }
    Ok(())
}

/// Answers 408 when a request takes longer than `timeout` to arrive and be answered.
/// A stream's response is returned at once, so its events do not count.
pub(crate) async fn deadline(timeout: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Error::Timeout(timeout).into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
