//! Errors as JSON with a status code.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// `Result` with eric-http's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the HTTP API answers with when a request cannot be served: a status and a JSON
/// body `{"error": kind, "message": text}`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 404: no such channel.
    #[error("no channel with id {0:?}")]
    UnknownChannel(String),
    /// 404: no such listener.
    #[error("no listener with id {0:?}")]
    UnknownListener(String),
    /// 409: the id is taken.
    #[error("{0}")]
    Conflict(String),
    /// 400 (or the status given): the request is malformed.
    #[error("{message}")]
    BadRequest {
        /// The status to answer with (400, 413, 415, 422).
        status: StatusCode,
        /// What is wrong.
        message: String,
    },
    /// 401: a token is required and was missing or wrong.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// 401: the signed token given is not valid (signature, algorithm, claims).
    #[error("{0}")]
    InvalidToken(String),
    /// 401: the signed token given has expired: fetch a new one.
    #[error("the token has expired")]
    TokenExpired,
    /// 403: the token is valid but does not let its bearer do this (to this channel,
    /// or to this listener).
    #[error("{0}")]
    Forbidden(String),
    /// 408: the request took longer than the server's request timeout to arrive and be
    /// answered (a body sent a byte at a time, say).
    #[error("the request took longer than {0:?}")]
    Timeout(std::time::Duration),
    /// 503: the storage (Redis) failed or is unreachable; nothing was acknowledged, and
    /// the same request can be retried.
    #[error("{0}")]
    Unavailable(String),
    /// 503: the server holds as many channels, or the channel as many listeners, as
    /// it is configured to.
    #[error("{0}")]
    LimitReached(String),
    /// 503: the server's memory budget for messages is spent by what listeners have not
    /// read yet (`--max-retained-bytes`); the publish can be retried.
    #[error("{0}")]
    MemoryBudget(String),
    /// 503: a listener's queue is full (bounded channels).
    #[error("{0}")]
    Full(String),
    /// 503: the server is shutting down; the same request to the next process (or
    /// another of a cluster) will be served.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// 500: anything else.
    #[error("{0}")]
    Internal(String),
    /// The server's configuration cannot be used (a key that is not one, say).
    #[error("{0}")]
    Config(String),
    /// Binding or serving failed.
    #[error("{operation}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Error::BadRequest {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Error::UnknownChannel(_) | Error::UnknownListener(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::BadRequest { status, .. } => *status,
            Error::Unauthorized | Error::InvalidToken(_) | Error::TokenExpired => {
                StatusCode::UNAUTHORIZED
            }
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::Full(_)
            | Error::MemoryBudget(_)
            | Error::Unavailable(_)
            | Error::LimitReached(_)
            | Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) | Error::Config(_) | Error::Io { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Error::UnknownChannel(_) => "InvalidChannelException",
            Error::UnknownListener(_) => "InvalidListenerException",
            Error::Conflict(_) => "Conflict",
            Error::BadRequest { .. } => "InvalidMessageFormat",
            Error::Unauthorized => "Unauthorized",
            Error::InvalidToken(_) => "InvalidToken",
            Error::TokenExpired => "TokenExpired",
            Error::Forbidden(_) => "Forbidden",
            Error::Timeout(_) => "RequestTimeout",
            Error::Full(_) => "QueueFull",
            Error::MemoryBudget(_) => "MemoryBudgetExceeded",
            Error::Unavailable(_) => "RepositoryError",
            Error::LimitReached(_) => "LimitReached",
            Error::ShuttingDown => "ShuttingDown",
            Error::Config(_) => "Config",
            Error::Internal(_) | Error::Io { .. } => "Internal",
        }
    }
}

impl From<eric_core::Error> for Error {
    fn from(err: eric_core::Error) -> Self {
        use eric_core::Error as E;
        match err {
            E::InvalidChannel { channel_id } | E::ChannelClosed { channel_id } => {
                Error::UnknownChannel(channel_id)
            }
            E::InvalidListener { listener_id } => Error::UnknownListener(listener_id),
            E::DuplicateChannel { .. } | E::DuplicateListener { .. } => {
                Error::Conflict(err.to_string())
            }
            E::InvalidId { .. } => Error::bad_request(err.to_string()),
            E::MemoryBudgetExceeded { .. } => Error::MemoryBudget(err.to_string()),
            E::QueueFull { .. } | E::BroadcastRejected { .. } | E::ListenerDisconnected { .. } => {
                Error::Full(err.to_string())
            }
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<eric_prefabs::Error> for Error {
    fn from(err: eric_prefabs::Error) -> Self {
        match err {
            eric_prefabs::Error::Core(err) => err.into(),
            eric_prefabs::Error::InvalidSseField { .. }
            | eric_prefabs::Error::ReservedMessageType { .. } => {
                Error::bad_request(err.to_string())
            }
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<eric_persistence::Error> for Error {
    fn from(err: eric_persistence::Error) -> Self {
        match err {
            eric_persistence::Error::Core(err) => err.into(),
            eric_persistence::Error::Prefab(err) => err.into(),
            eric_persistence::Error::ChannelNotFound { channel_id } => {
                Error::UnknownChannel(channel_id)
            }
            err @ eric_persistence::Error::Storage { .. } => Error::Unavailable(err.to_string()),
            other => Error::Internal(format!("storage: {other}")),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": self.kind(), "message": self.to_string()}));
        (self.status(), body).into_response()
    }
}
