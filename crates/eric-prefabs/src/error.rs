//! The one error type of eric-prefabs.

/// `Result` with eric-prefabs' [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in eric-prefabs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from eric-core (unknown channel or listener, full queue, ...).
    #[error(transparent)]
    Core(#[from] eric_core::Error),
    /// An SSE `event` or `id` field would contain a line break (or an `id` a NUL): it
    /// cannot be written on the wire without changing its meaning.
    #[error("invalid SSE {field} field {value:?}: it must not contain {forbidden}")]
    InvalidSseField {
        /// `event` or `id`.
        field: &'static str,
        /// The value (at most 64 characters of it).
        value: String,
        /// What it must not contain.
        forbidden: &'static str,
    },
    /// The message type is one eric gives its own events (the closed and reset events,
    /// in-band errors, types starting with NUL): a producer may not send it, since a
    /// client would take it for eric's.
    #[error("message type {message_type:?} is reserved: {why}")]
    ReservedMessageType {
        /// The type (at most 64 characters of it).
        message_type: String,
        /// What eric uses it for.
        why: &'static str,
    },
    /// A distributed-application listener received a message type it has no action
    /// for; it keeps running.
    #[error("listener {listener_id:?} has no action for message type {message_type:?}")]
    UnknownAction {
        /// The listener.
        listener_id: String,
        /// The message type.
        message_type: String,
    },
    /// An action returned replies to a message that names no sender to send them to.
    #[error("listener {listener_id:?} cannot reply to an unsigned {message_type:?} message")]
    Unsigned {
        /// The listener.
        listener_id: String,
        /// The message type.
        message_type: String,
    },
    /// A data-processing callback panicked; the pool and the other messages go on.
    #[error("processing a message of type {message_type:?} panicked: {panic}")]
    CallbackPanicked {
        /// The message's type.
        message_type: String,
        /// The panic's message, if it had one.
        panic: String,
    },
    /// A distributed-application listener was asked to dispatch before it was
    /// registered in a channel.
    #[error("listener {listener_id:?} is not registered in a channel")]
    NotRegistered {
        /// The listener.
        listener_id: String,
    },
}

pub(crate) fn truncated(value: &str) -> String {
    value.chars().take(64).collect()
}
