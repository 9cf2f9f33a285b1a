//! What a request to `eric serve` can fail with: each error reply of PROTOCOL.md as a
//! variant of its own, and what the transport can do.

/// An error of [`Client`](super::Client): the server's error replies
/// (`{"error": kind, "message": text}`, docs/PROTOCOL.md), one variant each, and the
/// transport's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// 404 `InvalidChannelException`: no such channel.
    #[error("unknown channel: {0}")]
    UnknownChannel(String),
    /// 404 `InvalidListenerException`: no such listener.
    #[error("unknown listener: {0}")]
    UnknownListener(String),
    /// 409: the id is taken.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 400, 413, 415 or 422: the request is malformed (the status says how).
    #[error("bad request ({status}): {message}")]
    BadRequest {
        /// The status the server answered with.
        status: u16,
        /// What is wrong.
        message: String,
    },
    /// 401 `Unauthorized`: a token is needed, and none or a wrong static one was sent.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// 401 `InvalidToken`: the signed token is not valid.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// 401 `TokenExpired`.
    #[error("the token has expired")]
    TokenExpired,
    /// 403 `Forbidden`: the token does not allow this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 408 `RequestTimeout`.
    #[error("the request timed out at the server: {0}")]
    Timeout(String),
    /// 503 `RepositoryError`: the server's storage failed; nothing was kept; retry.
    #[error("the server's storage is unavailable: {0}")]
    Unavailable(String),
    /// 503 `LimitReached`: a cap on channels, listeners or connections.
    #[error("limit reached: {0}")]
    LimitReached(String),
    /// 503 `QueueFull`: a bounded listener is full.
    #[error("queue full: {0}")]
    QueueFull(String),
    /// 503 `ShuttingDown`: retry on the process that follows, or another.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// Any other answer that is not a success.
    #[error("server error ({status}, {kind}): {message}")]
    Server {
        /// The status.
        status: u16,
        /// The `error` field, if the body had one.
        kind: String,
        /// The `message` field, or the body.
        message: String,
    },
    /// The request could not be made, or its answer read (the server is down, say).
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    /// The server answered with something that is not eric's protocol.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// The token source failed.
    #[error("could not get a token: {0}")]
    Token(String),
}

impl ClientError {
    /// The error a non-success answer stands for, from its status and body.
    pub(crate) fn from_reply(status: u16, body: &str) -> Self {
        let parsed: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        let kind = parsed["error"].as_str().unwrap_or_default().to_owned();
        let message = parsed["message"]
            .as_str()
            .map_or_else(|| body.to_owned(), str::to_owned);
        match (status, kind.as_str()) {
            (404, "InvalidChannelException") => ClientError::UnknownChannel(message),
            (404, "InvalidListenerException") => ClientError::UnknownListener(message),
            (409, _) => ClientError::Conflict(message),
            (400 | 413 | 415 | 422, _) => ClientError::BadRequest { status, message },
            (401, "InvalidToken") => ClientError::InvalidToken(message),
            (401, "TokenExpired") => ClientError::TokenExpired,
            (401, _) => ClientError::Unauthorized(message),
            (403, _) => ClientError::Forbidden(message),
            (408, _) => ClientError::Timeout(message),
            (503, "RepositoryError") => ClientError::Unavailable(message),
            (503, "LimitReached") => ClientError::LimitReached(message),
            (503, "QueueFull") => ClientError::QueueFull(message),
            (503, "ShuttingDown") => ClientError::ShuttingDown,
            _ => ClientError::Server {
                status,
                kind,
                message,
            },
        }
    }

    /// Whether retrying later may succeed (the server down, shutting down, its storage
    /// away, a cap that may free up); the others need the request or the token changed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ClientError::Transport(_)
                | ClientError::Timeout(_)
                | ClientError::Unavailable(_)
                | ClientError::LimitReached(_)
                | ClientError::QueueFull(_)
                | ClientError::ShuttingDown
        ) || matches!(self, ClientError::Server { status, .. } if *status >= 500)
    }
}
