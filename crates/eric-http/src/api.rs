//! The HTTP API's OpenAPI 3 document, made from the handlers' own annotations (utoipa)
//! as the router is built from them, and served at `GET /openapi.json`: a route
//! cannot be served without being described.

use serde::Serialize;
use utoipa::{IntoResponses, OpenApi, ToSchema};

/// Every error reply: `{"error": kind, "message": text}` (kinds in PROTOCOL.md).
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorReply {
    /// What went wrong, as a name a client can match (eric-sse's where it has one):
    /// `InvalidChannelException`, `Unauthorized`, `MemoryBudgetExceeded`…
    error: String,
    /// What went wrong, for people.
    message: String,
}

/// A channel's or a listener's id: not empty, no control character, at most 1,024
/// characters. Only described: ids are read as strings.
pub(crate) struct Id;

// Patterns end with `(?![\s\S])` rather than `$`, which some regex dialects (Python's,
// schemathesis') let match before a final line break.
const ID_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]+(?![\s\S])";

impl utoipa::PartialSchema for Id {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(1024))
            .pattern(Some(ID_PATTERN))
            .description(Some(
                "A channel's or a listener's id: not empty, no control character",
            ))
            .into()
    }
}

impl ToSchema for Id {}

/// Any JSON value (a payload).
pub(crate) fn any_json() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType};
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .description(Some("Any JSON value"))
        .build()
}

/// One Server-Sent Event of a stream, as an `EventSource` reads it; keep-alive comments
/// are not events. eric's own events (`_eric_reset`, `_eric_channel_closed`,
/// `_eric_token_expired`, `_eric_error`) are in PROTOCOL.md.
#[derive(ToSchema)]
#[allow(dead_code)] // Only described: events are written by `SseBody`.
pub(crate) struct SseEvent {
    /// The message type (absent: `message`).
    event: Option<String>,
    /// The payload, as JSON text.
    data: Option<String>,
    /// The event id to resume after (`Last-Event-ID`).
    id: Option<String>,
    /// Milliseconds to wait before reconnecting.
    retry: Option<u64>,
}

/// `PUT /create`'s reply.
#[derive(Serialize, ToSchema)]
pub(crate) struct Created {
    /// The new channel's id.
    channel_id: String,
}

/// `POST /subscribe`'s reply.
#[derive(Serialize, ToSchema)]
pub(crate) struct Subscribed {
    /// The new listener's id.
    listener_id: String,
}

/// `POST /broadcast`'s reply.
#[derive(Serialize, ToSchema)]
pub(crate) struct Broadcast {
    /// The broadcast's event id, what its SSE events carry.
    id: String,
    /// How many listeners it reached; `null` in cluster mode, where each process
    /// counts its own.
    listeners: Option<u64>,
}

/// `POST /dispatch`'s reply.
#[derive(Serialize, ToSchema)]
pub(crate) struct Dispatched {
    /// Always `true`.
    ok: bool,
}

/// What any route that checks a token may answer.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only described, never built: the replies are `crate::Error`'s.
pub(crate) enum Guarded {
    /// A token is required and none, or a wrong one, was given; or a signed token
    /// that is not valid (`InvalidToken`) or has expired (`TokenExpired`).
    #[response(status = 401)]
    Unauthorized(#[to_schema] ErrorReply),
    /// The token does not let its bearer do this to this channel or listener.
    #[response(status = 403)]
    Forbidden(ErrorReply),
    /// The request took longer than `--request-timeout` to arrive and be answered.
    #[response(status = 408)]
    Timeout(ErrorReply),
    /// Shutting down (`ShuttingDown`); a limit reached (`LimitReached`); the memory
    /// budget spent (`MemoryBudgetExceeded`); a bounded listener full (`QueueFull`);
    /// Redis away (`RepositoryError`). Nothing was done: retry.
    #[response(status = 503)]
    Unavailable(ErrorReply),
}

/// What a route that takes a JSON body may answer besides.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only described, as `Guarded`.
pub(crate) enum BadBody {
    /// The query or the body is malformed (a missing `channel_id`, JSON that does not
    /// parse, an event type eric reserves or one with a line break).
    #[response(status = 400)]
    BadRequest(ErrorReply),
    /// The body is over `--max-body-bytes`.
    #[response(status = 413)]
    TooLarge(ErrorReply),
    /// The body is not `application/json`.
    #[response(status = 415)]
    NotJson(ErrorReply),
    /// The JSON has no `type`, or fields of the wrong kind.
    #[response(status = 422)]
    Unprocessable(ErrorReply),
}

/// The document's frame; the routes' paths are added as the router is built.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "eric serve",
        description = "Channels of Server-Sent Events: publish over HTTP, follow with an \
                       EventSource. See docs/PROTOCOL.md.",
        license(name = "MIT OR Apache-2.0")
    ),
    components(schemas(ErrorReply, Id)),
    modifiers(&BearerToken),
    security(("bearer" = []), ())
)]
pub(crate) struct ApiDoc;

/// The bearer token (static, or a signed JWT), also accepted as `?access_token=` and
/// as a cookie.
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}
