//! The one error type of eric-core.

/// A boxed error from user code (a listener hook) or a pluggable backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with eric-core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in eric-core.
///
/// Each variant names the offending id, so a log line is enough to act on it. The names
/// follow eric-sse's exceptions: `InvalidChannel` is `InvalidChannelException`,
/// `InvalidListener` is `InvalidListenerException`, `NoMessages` is
/// `NoMessagesException`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No channel with this id (eric-sse's `InvalidChannelException`).
    #[error("invalid channel: no channel with id {channel_id:?}")]
    InvalidChannel {
        /// The id that was looked up.
        channel_id: String,
    },
    /// No listener with this id in the channel (eric-sse's `InvalidListenerException`).
    #[error("invalid listener: no listener with id {listener_id:?}")]
    InvalidListener {
        /// The id that was looked up.
        listener_id: String,
    },
    /// A channel with this id is already registered.
    #[error("duplicate channel: a channel with id {channel_id:?} is already registered")]
    DuplicateChannel {
        /// The id that is taken.
        channel_id: String,
    },
    /// A listener with this id is already registered in the channel.
    #[error("duplicate listener: a listener with id {listener_id:?} is already registered")]
    DuplicateListener {
        /// The id that is taken.
        listener_id: String,
    },
    /// An id is empty or otherwise unusable.
    #[error("invalid id {id:?}: {reason}")]
    InvalidId {
        /// The id given.
        id: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The listener's queue is empty (eric-sse's `NoMessagesException`).
    #[error("no messages for listener {listener_id:?}")]
    NoMessages {
        /// The listener whose queue is empty.
        listener_id: String,
    },
    /// The listener is stopped: it receives nothing until it is started again.
    #[error("listener {listener_id:?} is stopped")]
    ListenerStopped {
        /// The stopped listener.
        listener_id: String,
    },
    /// The listener's queue is full and the channel's overflow policy is
    /// [`Reject`](crate::OverflowPolicy::Reject): the message was not enqueued.
    #[error("queue full: listener {listener_id:?} already holds {capacity} messages")]
    QueueFull {
        /// The listener whose queue is full.
        listener_id: String,
        /// The queue's capacity.
        capacity: usize,
    },
    /// A broadcast would take the channels of a [`MemoryBudget`](crate::MemoryBudget)
    /// past its limit even after they released what only their replay windows kept:
    /// nobody got it, and it can be retried once listeners have read what they hold.
    #[error(
        "the memory budget of {limit} bytes is spent ({retained} held by listeners that have not read it); a broadcast of {needed} bytes is refused"
    )]
    MemoryBudgetExceeded {
        /// The broadcast's estimated size.
        needed: u64,
        /// What the channels held when it was refused.
        retained: u64,
        /// The budget's limit.
        limit: u64,
    },
    /// A broadcast reached some listeners but was refused by the full queues of others
    /// (overflow policy [`Reject`](crate::OverflowPolicy::Reject)).
    #[error(
        "broadcast on channel {channel_id:?} rejected by {} full queue(s) (delivered to {delivered}): {rejected:?}",
        rejected.len()
    )]
    BroadcastRejected {
        /// The channel broadcast on.
        channel_id: String,
        /// The listeners whose queues refused the message.
        rejected: Vec<String>,
        /// How many listeners did receive it.
        delivered: usize,
    },
    /// The listener overflowed its queue under the
    /// [`Disconnect`](crate::OverflowPolicy::Disconnect) policy and was disconnected;
    /// the messages it had not read were discarded and counted as dropped.
    #[error(
        "listener {listener_id:?} disconnected: its queue overflowed (capacity {capacity}, {dropped} undelivered message(s) dropped)"
    )]
    ListenerDisconnected {
        /// The disconnected listener.
        listener_id: String,
        /// The queue's capacity.
        capacity: usize,
        /// Messages discarded with the queue.
        dropped: u64,
    },
    /// The channel is closed: it takes no new listeners and no new messages.
    #[error("channel {channel_id:?} is closed")]
    ChannelClosed {
        /// The closed channel.
        channel_id: String,
    },
    /// A stream asked to resume at a broadcast the channel no longer keeps (or has not
    /// made yet).
    #[error(
        "channel {channel_id:?} cannot replay from broadcast {requested}: it keeps {oldest} to {head} (exclusive)"
    )]
    ReplayUnavailable {
        /// The channel.
        channel_id: String,
        /// The sequence number asked for.
        requested: u64,
        /// The oldest sequence number the channel still keeps.
        oldest: u64,
        /// The next sequence number the channel will use.
        head: u64,
    },
    /// A listener's `on_message` hook failed for a message; the stream goes on.
    #[error("listener {listener_id:?} failed on a message of type {message_type:?}: {source}")]
    Listener {
        /// The listener whose hook failed.
        listener_id: String,
        /// The type of the message it failed on.
        message_type: String,
        /// What the hook returned.
        #[source]
        source: BoxError,
    },
    /// A pluggable queue or connections factory failed.
    #[error("{operation} failed in the queue backend: {source}")]
    Backend {
        /// What was being done.
        operation: &'static str,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    pub(crate) fn invalid_listener(listener_id: &str) -> Self {
        Error::InvalidListener {
            listener_id: listener_id.to_owned(),
        }
    }

    pub(crate) fn invalid_channel(channel_id: &str) -> Self {
        Error::InvalidChannel {
            channel_id: channel_id.to_owned(),
        }
    }
}

/// Checks a channel's or a listener's id as every builder does: not empty, at most
/// 1,024 characters, no control character; [`Error::InvalidId`] otherwise.
///
/// Ids travel in URLs, Redis keys and SSE fields, so control characters (line breaks
/// above all) are refused here rather than in every backend.
///
/// ```
/// assert!(eric_core::validate_id("news").is_ok());
/// assert!(eric_core::validate_id("a\nb").is_err());
/// ```
pub fn validate_id(id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        "ids must not be empty"
    } else if id.len() > 1024 && id.chars().count() > 1024 {
        "ids must be at most 1024 characters"
    } else if id.chars().any(char::is_control) {
        "ids must not contain control characters"
    } else {
        return Ok(());
    };
    Err(Error::InvalidId {
        id: id.chars().take(64).collect(),
        reason,
    })
}
