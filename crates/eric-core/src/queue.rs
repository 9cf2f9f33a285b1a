//! The queue seam: a FIFO of messages for one listener, with an overflow policy.

use std::task::Waker;

use crate::message::Message;

/// A listener's own FIFO queue: the messages dispatched to it (eric-sse's `Queue`).
///
/// Broadcasts do not pass through here: a channel keeps one copy of each broadcast in
/// its broadcast log, and each listener reads the log at its own cursor. Every entry
/// carries the number of broadcasts made before it was dispatched, so that the channel
/// interleaves the two in the order they were sent.
///
/// Every method is synchronous and must not block: a channel calls `push` on whatever
/// thread the producer runs. A consumer with nothing to read registers its waker with
/// [`register_waker`](Queue::register_waker) and `push` wakes it: there is no polling
/// loop anywhere.
///
/// [`InMemoryQueue`](crate::InMemoryQueue) is the default implementation.
pub trait Queue: Send + Sync + 'static {
    /// Appends `entry`, applying the queue's capacity and overflow policy, and wakes
    /// the registered consumer.
    fn push(&self, entry: QueueEntry) -> PushOutcome;

    /// The `broadcasts_before` of the next entry, without taking it.
    fn peek_broadcasts_before(&self) -> Option<u64>;

    /// Takes the next entry, or `None` if the queue is empty (or disconnected).
    fn pop(&self) -> Option<QueueEntry>;

    /// Registers `waker` to be woken by the next push, if the queue is empty; returns
    /// `false` (registering nothing) if it is not.
    fn register_waker(&self, waker: &Waker) -> bool;

    /// Forgets the registered waker if it is `waker` (a consumer going away).
    fn detach(&self, waker: &Waker);

    /// How many times the queue gave up a registered waker (woke it for a push, or let
    /// it go for another or on `detach`), if it counts. A consumer that reads the count
    /// before registering and finds it unchanged when it would register the same waker
    /// again knows that waker is still in place, and skips the call. `None` (the
    /// default): not counted, and consumers register every time.
    fn waker_takes(&self) -> Option<u64> {
        None
    }

    /// How many entries are queued.
    fn len(&self) -> usize;

    /// Whether no entry is queued.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters: queued, dropped, rejected.
    fn stats(&self) -> QueueStats;
}

/// A dispatched message in a listener's queue.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueEntry {
    /// The message.
    pub message: Message,
    /// How many broadcasts the channel had made when this was dispatched: it is read
    /// after those and before any later one.
    pub broadcasts_before: u64,
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
///
/// In settings (JSON, say) it is `"reject"`, `"drop_oldest"` or `"disconnect"`; any
/// other name is an error, never a silent default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// Refuse the message: the producer gets a typed error
    /// ([`Error::QueueFull`](crate::Error::QueueFull) for a dispatch,
    /// [`Error::BroadcastRejected`](crate::Error::BroadcastRejected) for a broadcast,
    /// which then reaches no listener, so that retrying it is safe).
    #[default]
    Reject,
    /// Make room by dropping the oldest unread message, and count it. A listener that
    /// falls more than `capacity` broadcasts behind skips the oldest.
    DropOldest,
    /// Disconnect the slow listener: its stream ends with an
    /// [`Error::ListenerDisconnected`](crate::Error::ListenerDisconnected) item and it
    /// leaves the channel.
    Disconnect,
}

/// How much a channel's listeners may have unread: unbounded, or bounded with an
/// overflow policy. The bound applies to a listener's unread broadcasts and, separately,
/// to its unread dispatches.
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
