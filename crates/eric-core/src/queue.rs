//! The queue seam: a FIFO of messages for one listener, with an overflow policy.

use std::task::{Context, Poll, Waker};

use crate::message::Message;

/// A listener's FIFO queue (eric-sse's `Queue`).
///
/// Every method is synchronous and must not block: a channel calls `push` from inside a
/// broadcast, on whatever thread the producer runs. Waiting is done through
/// [`poll_pop`](Queue::poll_pop), which registers the consumer's waker when the queue is
/// empty; `push` wakes it. There is no polling loop anywhere: an idle consumer costs
/// nothing.
///
/// [`InMemoryQueue`](crate::InMemoryQueue) is the default implementation.
pub trait Queue: Send + Sync + 'static {
    /// Appends `msg`, applying the queue's capacity and overflow policy, and wakes the
    /// consumer if it waits.
    fn push(&self, msg: Message) -> PushOutcome;

    /// Appends the message that ends the stream (the channel-closed marker), regardless
    /// of capacity, and wakes the consumer.
    fn push_final(&self, msg: Message);

    /// Takes the next message, or `None` if the queue is empty (or disconnected).
    fn pop(&self) -> Option<Message>;

    /// Takes the next message; if there is none, registers `cx`'s waker to be woken by
    /// the next push and returns `Pending`.
    fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Popped>;

    /// Forgets the registered waker if it is `waker` (a consumer going away).
    fn detach(&self, waker: &Waker);

    /// How many messages are queued.
    fn len(&self) -> usize;

    /// Whether no message is queued.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters: queued, dropped, rejected.
    fn stats(&self) -> QueueStats;
}

/// What a [`Queue::push`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushOutcome {
    /// The message was appended.
    Enqueued,
    /// The message was appended after dropping the oldest one
    /// ([`OverflowPolicy::DropOldest`]); the drop is counted.
    DroppedOldest,
    /// The queue is full and the message was not appended ([`OverflowPolicy::Reject`]);
    /// the rejection is counted.
    Rejected {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The queue overflowed under [`OverflowPolicy::Disconnect`] (now or earlier): its
    /// consumer is disconnected, the message was not appended, and everything it held
    /// was discarded and counted as dropped.
    Disconnected {
        /// The queue's capacity.
        capacity: usize,
        /// Messages discarded at the disconnection (including the one that overflowed).
        dropped: u64,
    },
}

/// What a [`Queue::poll_pop`] found.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Popped {
    /// The next message.
    Message(Message),
    /// The queue was disconnected for overflowing (see [`PushOutcome::Disconnected`]).
    Disconnected {
        /// The queue's capacity.
        capacity: usize,
        /// Messages discarded at the disconnection.
        dropped: u64,
    },
}

/// A queue's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Messages queued now.
    pub len: usize,
    /// Messages dropped: oldest ones pushed out, or discarded at a disconnection.
    pub dropped: u64,
    /// Messages refused because the queue was full.
    pub rejected: u64,
}

/// What a bounded queue does when a message arrives and it is full. Chosen per channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// Refuse the message: the producer gets a typed error
    /// ([`Error::QueueFull`](crate::Error::QueueFull) or
    /// [`Error::BroadcastRejected`](crate::Error::BroadcastRejected)).
    #[default]
    Reject,
    /// Make room by dropping the oldest queued message, and count it.
    DropOldest,
    /// Disconnect the slow listener: its stream ends with an
    /// [`Error::ListenerDisconnected`](crate::Error::ListenerDisconnected) item and it
    /// leaves the channel.
    Disconnect,
}

/// How the queues of a channel's listeners are made: unbounded, or bounded with an
/// overflow policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueConfig {
    capacity: Option<usize>,
    overflow: OverflowPolicy,
}

impl QueueConfig {
    /// Unbounded queues (the default).
    pub fn unbounded() -> Self {
        QueueConfig::default()
    }

    /// Queues of at most `capacity` messages (at least 1), overflowing per `overflow`.
    pub fn bounded(capacity: usize, overflow: OverflowPolicy) -> Self {
        QueueConfig {
            capacity: Some(capacity.max(1)),
            overflow,
        }
    }

    /// The capacity, `None` if unbounded.
    pub fn capacity(&self) -> Option<usize> {
        self.capacity
    }

    /// The overflow policy (meaningful only when bounded).
    pub fn overflow(&self) -> OverflowPolicy {
        self.overflow
    }
}
