//! The routes: eric-sse's HTTP front end, plus subscribe-and-stream for `EventSource`
//! (`streams`).

pub(crate) mod streams;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use eric_core::Message;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{self, Access, Role};
use crate::error::{Error, Result};
use crate::state::AppState;

type Shared = State<Arc<AppState>>;

#[derive(Deserialize, Default)]
pub(crate) struct ChannelQuery {
    channel_id: Option<String>,
    listener_id: Option<String>,
    last_event_id: Option<String>,
}

/// A message to publish.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct Publish {
    /// Its type: the SSE event's name (no line break; not one of eric's own types).
    #[serde(rename = "type")]
    #[schema(
        pattern = r"^(?!\u0000)(?!(?:_eric_channel_closed|_eric_reset|_eric_token_expired|_eric_error)(?![\s\S]))[^\r\n]*(?![\s\S])"
    )]
    message_type: String,
    /// Its payload, any JSON (default `null`): the SSE event's data.
    #[serde(default)]
    #[schema(schema_with = crate::api::any_json)]
    payload: Value,
}

/// `PUT /create`'s body, which may also be empty.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Only described: the body is read by `channel_id_in`.
pub(crate) struct CreateBody {
    /// The id to give the channel (the query's `channel_id` wins; default: a UUID).
    channel_id: Option<crate::api::Id>,
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

/// What `/broadcast` and `/dispatch` share: the channel the query names, which the token
/// must let its bearer publish to, and the body's message, marked accepted now.
fn publication<'q>(
    query: &'q ChannelQuery,
    access: &Access,
    body: std::result::Result<Json<Publish>, JsonRejection>,
) -> Result<(&'q str, Publish)> {
    let channel = channel_id(query.channel_id.as_deref())?;
    access.check(Role::Publish, channel)?;
    Ok((channel, json_body(body)?))
}

impl Publish {
    fn accepted_now(self) -> Message {
        Message::new(self.message_type, self.payload).accepted_now()
    }
}

/// `PUT /create`: a channel, with the given `channel_id` (query or JSON body) or a
/// fresh one. 201 `{"channel_id"}`; 409 if the id is taken.
/// With signed tokens, the token must let its bearer publish to the id (a fresh one
/// is a UUID, which only a pattern such as `*` matches).
#[utoipa::path(
    put,
    path = "/create",
    params(("channel_id" = Option<crate::api::Id>, Query, description = "The id to give it")),
    request_body(content = Option<CreateBody>, description = "Or the id in the body; may be empty"),
    responses(
        (status = 201, description = "Created", body = crate::api::Created),
        (status = 409, description = "The id is taken", body = crate::api::ErrorReply),
        crate::api::BadBody,
        crate::api::Guarded,
    )
)]
pub(crate) async fn create(
    State(state): Shared,
    access: Access,
    Query(query): Query<ChannelQuery>,
    body: Bytes,
) -> Result<impl IntoResponse> {
    // The body is checked even when the query names the id, which wins.
    let in_body = channel_id_in(&body)?;
    let mut id = query.channel_id.or(in_body);
    if access.role(Role::Publish)?.by_claims {
        let named = id.get_or_insert_with(|| uuid::Uuid::new_v4().to_string());
        access.check(Role::Publish, named)?;
    }
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
/// content type (a client library may send `application/json` on every request), and so
/// does `null`; any other body must be a JSON object, whose `channel_id`, if present, is
/// a string.
fn channel_id_in(body: &[u8]) -> Result<Option<String>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let body: Value = serde_json::from_slice(body)
        .map_err(|err| Error::bad_request(format!("the body is not JSON: {err}")))?;
    if !(body.is_object() || body.is_null()) {
        return Err(Error::bad_request("the body must be a JSON object"));
    }
    match body.get("channel_id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) => {
            eric_core::validate_id(id)?;
            Ok(Some(id.clone()))
        }
        Some(_) => Err(Error::bad_request("channel_id must be a string")),
    }
}

/// `POST /subscribe?channel_id=`: a listener. `{"listener_id"}`.
/// Made with a signed token that has a `sub`, the listener is that `sub`'s: its id
/// ends with a tag of it, and only a token with the same `sub` streams or removes it.
#[utoipa::path(
    post,
    path = "/subscribe",
    params(("channel_id" = crate::api::Id, Query, description = "The channel")),
    responses(
        (status = 200, description = "A listener", body = crate::api::Subscribed),
        (status = 400, description = "No channel named", body = crate::api::ErrorReply),
        (status = 404, description = "No such channel", body = crate::api::ErrorReply),
        crate::api::Guarded,
    )
)]
pub(crate) async fn subscribe(
    State(state): Shared,
    access: Access,
    Query(query): Query<ChannelQuery>,
) -> Result<Json<Value>> {
    let channel = channel_id(query.channel_id.as_deref())?;
    let granted = access.check(Role::Subscribe, channel)?;
    room_for_a_listener(&state, channel).await?;
    let listener = match auth::listener_id_for(&granted) {
        Some(id) => {
            state.channels.add_listener_with_id(channel, &id).await?;
            id
        }
        None => state.channels.add_listener(channel).await?,
    };
    Ok(Json(json!({"listener_id": listener})))
}

/// `POST /broadcast?channel_id=` with `{"type", "payload"}`.
#[utoipa::path(
    post,
    path = "/broadcast",
    params(("channel_id" = crate::api::Id, Query, description = "The channel")),
    request_body = Publish,
    responses(
        (status = 200, description = "Broadcast", body = crate::api::Broadcast),
        (status = 404, description = "No such channel", body = crate::api::ErrorReply),
        crate::api::BadBody,
        crate::api::Guarded,
    )
)]
pub(crate) async fn broadcast(
    State(state): Shared,
    access: Access,
    Query(query): Query<ChannelQuery>,
    body: std::result::Result<Json<Publish>, JsonRejection>,
) -> Result<Json<Value>> {
    let (channel, publish) = publication(&query, &access, body)?;
    let published = state
        .channels
        .broadcast(channel, publish.accepted_now())
        .await
        .map_err(Error::from)
        .inspect_err(|err| {
            if matches!(err, Error::MemoryBudget(_)) {
                state.metrics.refused_publishes.inc();
            }
        })?;
    // In a cluster, listeners are counted by each process for itself: null.
    Ok(Json(
        json!({"id": published.event_id, "listeners": published.listeners}),
    ))
}

/// `POST /dispatch?channel_id=&listener_id=` with `{"type", "payload"}`.
/// Dispatching is publishing: the token must let its bearer publish to the channel.
#[utoipa::path(
    post,
    path = "/dispatch",
    params(("channel_id" = crate::api::Id, Query, description = "The channel"), ("listener_id" = crate::api::Id, Query, description = "The listener")),
    request_body = Publish,
    responses(
        (status = 200, description = "Queued for the listener", body = crate::api::Dispatched),
        (status = 404, description = "No such channel or listener", body = crate::api::ErrorReply),
        crate::api::BadBody,
        crate::api::Guarded,
    )
)]
pub(crate) async fn dispatch(
    State(state): Shared,
    access: Access,
    Query(query): Query<ChannelQuery>,
    body: std::result::Result<Json<Publish>, JsonRejection>,
) -> Result<Json<Value>> {
    let (channel, publish) = publication(&query, &access, body)?;
    let listener = query
        .listener_id
        .as_deref()
        .ok_or_else(|| Error::bad_request("missing query parameter listener_id"))?;
    let message = publish.accepted_now();
    state.channels.dispatch(channel, listener, message).await?;
    Ok(Json(json!({"ok": true})))
}

/// `DELETE /listener/{channel}/{listener}`: its stream ends. 204. A token that may
/// publish to the channel removes any of its listeners; one that may subscribe to it,
/// those it may stream.
#[utoipa::path(
    delete,
    path = "/listener/{channel}/{listener}",
    params(
        ("channel" = crate::api::Id, Path, description = "The channel"),
        ("listener" = crate::api::Id, Path, description = "The listener"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such channel or listener", body = crate::api::ErrorReply),
        crate::api::Guarded,
    )
)]
pub(crate) async fn remove_listener(
    State(state): Shared,
    access: Access,
    Path((channel_id, listener_id)): Path<(String, String)>,
) -> Result<StatusCode> {
    if access.check(Role::Publish, &channel_id).is_err() {
        let granted = access.check(Role::Subscribe, &channel_id)?;
        auth::check_owner(&granted, &listener_id)?;
    }
    state
        .channels
        .remove_listener(&channel_id, &listener_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /channel/{channel}`: its streams get the closed event and end. 204.
#[utoipa::path(
    delete,
    path = "/channel/{channel}",
    params(("channel" = crate::api::Id, Path, description = "The channel")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such channel", body = crate::api::ErrorReply),
        crate::api::Guarded,
    )
)]
pub(crate) async fn remove_channel(
    State(state): Shared,
    access: Access,
    Path(channel_id): Path<String>,
) -> Result<StatusCode> {
    access.check(Role::Publish, &channel_id)?;
    // Removal closes this process's copy, so what it counted stops changing: keep it.
    let removed = state.channels.local().get(&channel_id).ok();
    state.channels.remove(&channel_id).await?;
    if let Some(removed) = removed {
        state.metrics.retire(&removed.stats());
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /channels`: the ids (with a signed token, those it may subscribe to).
#[utoipa::path(
    get,
    path = "/channels",
    responses(
        (status = 200, description = "The channels' ids", body = Vec<String>),
        crate::api::Guarded,
    )
)]
pub(crate) async fn channels(State(state): Shared, access: Access) -> Result<Json<Vec<String>>> {
    access.role(Role::Subscribe)?;
    let mut ids = state.channels.ids().await?;
    ids.retain(|id| access.may(Role::Subscribe, id));
    ids.sort();
    Ok(Json(ids))
}

/// `GET /healthz`.
#[utoipa::path(
    get,
    path = "/healthz",
    security(()),
    responses(
        (status = 200, description = "Serving", content_type = "text/plain", body = String),
        (status = 408, description = "Not answered in time", body = crate::api::ErrorReply),
    )
)]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// `GET /metrics`: Prometheus text.
#[utoipa::path(
    get,
    path = "/metrics",
    security(()),
    responses(
        (status = 200, description = "Prometheus text", content_type = "text/plain", body = String),
        (status = 408, description = "Not answered in time", body = crate::api::ErrorReply),
    )
)]
pub(crate) async fn metrics(State(state): Shared) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics_text(),
    )
}

/// `GET /openapi.json`: the HTTP API's OpenAPI 3 document.
pub(crate) fn openapi(document: Arc<str>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.to_string(),
    )
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
