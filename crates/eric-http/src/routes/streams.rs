//! The streaming routes: one listener's stream, subscribe-and-stream for
//! `EventSource`, and many channels merged on one stream.

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use eric_persistence::EventStream;

use super::{ChannelQuery, Shared, room_for_a_listener};
use crate::auth::{self, Access, Role};
use crate::error::{Error, Result};
use crate::events::SseBody;
use crate::handoff::Handoff;
use crate::state::AppState;

/// The id a stream resumes after: the `Last-Event-ID` header a reconnecting
/// `EventSource` sends, or else the query's `last_event_id`.
fn last_event_id(headers: &HeaderMap, from_query: Option<String>) -> Option<String> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(from_query)
}

/// The connection's [`Handoff`], on a `GET` over HTTP/1.x served by eric.
type ToConnection = Option<Extension<Handoff>>;

fn sse_response(
    state: &AppState,
    events: EventStream,
    expires: Option<u64>,
    handoff: ToConnection,
) -> Response {
    sse_body_response(state.sse_body(events, expires), handoff)
}

/// The stream's response: `body` as its body, or, where the connection writes the
/// stream itself (`handoff`), an empty body of no stated length (the head then says
/// nothing of its end) and `body` left to the connection.
fn sse_body_response(body: SseBody, handoff: ToConnection) -> Response {
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
    let body = match handoff {
        Some(Extension(handoff)) => {
            handoff.leave(body);
            Body::from_stream(futures_util::stream::empty::<
                Result<bytes::Bytes, std::convert::Infallible>,
            >())
        }
        None => Body::from_stream(body),
    };
    let mut response = body.into_response();
    *response.headers_mut() = headers;
    // Over HTTP/1.x, written close-delimited (an HTTP/1.0 response: its body ends when
    // the connection does) rather than chunked: a stream never shares its connection
    // with another response, and chunked framing costs each event per connection a
    // formatted chunk size and three buffers to write where the event alone is one
    // (about 480 of ~5,400 instructions per delivered event, BENCHMARKS.md). Every
    // `EventSource` reads both alike. HTTP/2 has no version in its frames: unchanged.
    *response.version_mut() = axum::http::Version::HTTP_10;
    response
}

/// `GET /stream/{channel}/{listener}`: the listener's events, resumed after
/// `Last-Event-ID` (header or `?last_event_id=`).
#[utoipa::path(
    get,
    path = "/stream/{channel}/{listener}",
    params(
        ("channel" = crate::api::Id, Path, description = "The channel"),
        ("listener" = crate::api::Id, Path, description = "The listener"),
        ("last_event_id" = Option<String>, Query, description = "Resume after this id (the Last-Event-ID header wins)"),
    ),
    responses(
        (status = 200, description = "The listener's events, without end", content_type = "text/event-stream", body = crate::api::SseEvent),
        (status = 404, description = "No such channel or listener", body = crate::api::ErrorReply),
        crate::api::Guarded,
    )
)]
pub(crate) async fn stream(
    State(state): Shared,
    access: Access,
    Path((channel_id, listener_id)): Path<(String, String)>,
    Query(query): Query<ChannelQuery>,
    headers: HeaderMap,
    handoff: ToConnection,
) -> Result<Response> {
    let granted = access.check(Role::Subscribe, &channel_id)?;
    auth::check_owner(&granted, &listener_id)?;
    let last = last_event_id(&headers, query.last_event_id);
    let events = state
        .channels
        .message_stream(&channel_id, &listener_id, last.as_deref())
        .await?;
    Ok(sse_response(&state, events, granted.expires, handoff))
}

/// `GET /channels/{channel}/events`: subscribe and stream in one request, what a
/// browser's `EventSource` wants; the listener goes when the connection does.
#[utoipa::path(
    get,
    path = "/channels/{channel}/events",
    params(
        ("channel" = crate::api::Id, Path, description = "The channel"),
        ("last_event_id" = Option<String>, Query, description = "Resume after this id (the Last-Event-ID header wins)"),
    ),
    responses(
        (status = 200, description = "The channel's events, without end", content_type = "text/event-stream", body = crate::api::SseEvent),
        (status = 404, description = "No such channel", body = crate::api::ErrorReply),
        crate::api::Guarded,
    )
)]
pub(crate) async fn events(
    State(state): Shared,
    access: Access,
    Path(channel_id): Path<String>,
    Query(query): Query<ChannelQuery>,
    headers: HeaderMap,
    handoff: ToConnection,
) -> Result<Response> {
    let granted = access.check(Role::Subscribe, &channel_id)?;
    room_for_a_listener(&state, &channel_id).await?;
    let last = last_event_id(&headers, query.last_event_id);
    let events = state
        .channels
        .subscribe(&channel_id, last.as_deref())
        .await?;
    Ok(sse_response(&state, events, granted.expires, handoff))
}

/// `GET /events?channel=a&channel=b…`: subscribe to each and stream them merged, every
/// event in a `{"channel", "data"}` envelope, under ids that hold each channel's
/// position ([`MultiEventId`](crate::MultiEventId)). Every channel must exist and be
/// one the token may subscribe to; at most `max_channels_per_stream` (400 beyond).
#[utoipa::path(
    get,
    path = "/events",
    params(
        ("channel" = Vec<crate::api::Id>, Query, description = "A channel to follow (repeat for each)"),
        ("last_event_id" = Option<String>, Query, description = "Resume after this id (the Last-Event-ID header wins)"),
    ),
    responses(
        (status = 200, description = "The channels' events in {\"channel\", \"data\"} envelopes, without end", content_type = "text/event-stream", body = crate::api::SseEvent),
        (status = 400, description = "No channel named, or too many", body = crate::api::ErrorReply),
        (status = 404, description = "No such channel", body = crate::api::ErrorReply),
        crate::api::Guarded,
    )
)]
pub(crate) async fn multi_events(
    State(state): Shared,
    access: Access,
    uri: axum::http::Uri,
    headers: HeaderMap,
    handoff: ToConnection,
) -> Result<Response> {
    let mut channels: Vec<String> = Vec::new();
    let mut query_last = None;
    for (key, value) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        match &*key {
            "channel" if !channels.iter().any(|c| *c == value) => {
                channels.push(value.into_owned());
            }
            "last_event_id" => query_last = Some(value.into_owned()),
            _ => {}
        }
    }
    let max = state.config.max_channels_per_stream;
    if channels.is_empty() {
        return Err(Error::bad_request(
            "name the channels to follow: /events?channel=a&channel=b",
        ));
    }
    if channels.len() > max {
        return Err(Error::bad_request(format!(
            "a stream follows at most {max} channels; this one names {}",
            channels.len()
        )));
    }
    let mut expires = None;
    for channel in &channels {
        expires = access.check(Role::Subscribe, channel)?.expires;
        room_for_a_listener(&state, channel).await?;
    }
    let last = last_event_id(&headers, query_last);
    // An id that is not a stream's of these channels resets each of them, as a single
    // channel's stream does for an id it cannot read. A new stream starts each channel
    // where it is now, so that its id holds every channel's position from the start: a
    // client that reconnects before a channel has sent it anything misses nothing.
    let positions = match &last {
        None => {
            let now = channels.iter().map(|channel| position_now(&state, channel));
            futures_util::future::try_join_all(now).await?
        }
        Some(id) => match crate::MultiEventId::parse(id, channels.len()) {
            Some(parsed) => parsed.positions().to_vec(),
            None => vec![Some(id.clone()); channels.len()],
        },
    };
    let streams = futures_util::future::try_join_all(
        channels
            .iter()
            .zip(&positions)
            .map(|(channel, position)| state.channels.subscribe(channel, position.as_deref())),
    )
    .await?;
    // The positions the stream starts from, as its id before any event: a client
    // dropped before the first event resumes from them too.
    let (merged, starting_id) = crate::multi::merge(channels, streams, &positions);
    Ok(sse_body_response(
        state.sse_body(merged, expires).starting_id(&starting_id),
        handoff,
    ))
}

/// Where `channel` is now, as a resume point: the id of its newest broadcast, or its
/// epoch alone (before the first). Read before subscribing, so that it never names a
/// broadcast the stream will not deliver; in a cluster, this process's copy may be a
/// little behind Redis, and the stream then delivers what it has not caught up on.
async fn position_now(state: &AppState, channel: &str) -> Result<Option<String>> {
    let local = match state.channels.local().get(channel) {
        Ok(local) => local,
        Err(_) => {
            // A cluster channel this process does not serve yet: `info` serves it.
            state.channels.info(channel).await?;
            state.channels.local().get(channel)?
        }
    };
    let adapter = local.adapter();
    Ok(Some(match local.next_seq().checked_sub(1) {
        Some(newest) => adapter.event_id(newest),
        None => adapter.epoch().to_owned(),
    }))
}
