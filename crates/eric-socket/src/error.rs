//! The one error type of eric-socket.

use std::path::PathBuf;

use crate::protocol::ErrorReply;

/// `Result` with eric-socket's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in eric-socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on the socket failed.
    #[error("{operation} {path:?} failed: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another server is listening on this path.
    #[error("another server is listening on {path:?}")]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Something that is not a socket is at this path; eric will not delete it.
    #[error("{path:?} exists and is not a socket")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The server answered with an error (eric-sse's exception names).
    #[error("the server refused: {reply}")]
    Refused {
        /// The reply, as sent.
        reply: String,
    },
    /// Loading the stored channels failed.
    #[error("loading the stored channels failed: {0}")]
    Persistence(#[from] eric_persistence::Error),
    /// A reply could not be read as expected.
    #[error("unexpected reply: {reply:?}")]
    BadReply {
        /// The reply.
        reply: String,
    },
}

impl Error {
    pub(crate) fn io(
        operation: &'static str,
        path: &std::path::Path,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            operation,
            path: path.to_owned(),
            source,
        }
    }
}

impl From<ErrorReply> for Error {
    fn from(reply: ErrorReply) -> Self {
        Error::Refused {
            reply: reply.to_string(),
        }
    }
}
