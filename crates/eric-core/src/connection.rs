//! Connections (a listener, its queue and its place in the broadcast log) and the
//! factories that make them.

use std::fmt;
use std::sync::{Arc, OnceLock, PoisonError};

use crate::adapter::Delivery;
use crate::error::Result;
use crate::in_memory_queue::InMemoryQueue;
use crate::listener::Listener;
use crate::log::{BroadcastLog, Cursor, Read};
use crate::message::Message;
use crate::queue::{Queue, QueueConfig};
use crate::sync::{AtomicBool, AtomicU64, Mutex, MutexGuard, Ordering};

/// A listener and its message queue (eric-sse's `Connection`). Cheap to clone.
///
/// The queue holds what was dispatched to the listener; broadcasts are read from the
/// channel's broadcast log at the connection's cursor.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    listener: Arc<dyn Listener>,
    queue: Arc<dyn Queue>,
    removed: AtomicBool,
    // Bumped by each new consumer; an older stream that sees a newer number ends, so one
    // listener is read by one stream at a time.
    consumer_generation: AtomicU64,
    cursor: Mutex<Cursor>,
    // `cursor.next`, readable without the lock by the channel's overflow scans.
    position: AtomicU64,
    disconnection: OnceLock<Disconnection>,
    dropped_broadcasts: AtomicU64,
    rejected_broadcasts: AtomicU64,
}

/// Why and how a listener was disconnected for overflowing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Disconnection {
    pub(crate) capacity: usize,
    pub(crate) dropped: u64,
}

/// What a connection's next read found.
pub(crate) enum Next {
    Message(Message, Delivery),
    Empty,
    /// The cursor fell behind the log's window by `missed` broadcasts.
    Lagged {
        missed: u64,
    },
}

impl Connection {
    /// Pairs `listener` with `queue`.
    pub fn new(listener: Arc<dyn Listener>, queue: Arc<dyn Queue>) -> Self {
        Connection {
            inner: Arc::new(Inner {
                listener,
                queue,
                removed: AtomicBool::new(false),
                consumer_generation: AtomicU64::new(0),
                cursor: Mutex::default(),
                position: AtomicU64::new(0),
                disconnection: OnceLock::new(),
                dropped_broadcasts: AtomicU64::new(0),
                rejected_broadcasts: AtomicU64::new(0),
            }),
        }
    }

    /// The listener's id, which is also the connection's.
    pub fn id(&self) -> &str {
        self.inner.listener.id()
    }

    /// The listener.
    pub fn listener(&self) -> &Arc<dyn Listener> {
        &self.inner.listener
    }

    /// The queue of messages dispatched to the listener.
    pub fn queue(&self) -> &Arc<dyn Queue> {
        &self.inner.queue
    }

    /// Whether the connection was removed from its channel.
    pub fn is_removed(&self) -> bool {
        self.inner.removed.load(Ordering::Acquire)
    }

    /// Whether both handles are the same connection.
    pub fn same_as(&self, other: &Connection) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn mark_removed(&self) {
        self.inner.removed.store(true, Ordering::Release);
        self.inner.listener.state().wake_consumer();
    }

    /// Records a disconnection (once) and wakes the consumer so it reports it.
    pub(crate) fn mark_disconnected(&self, disconnection: Disconnection) -> bool {
        let first = self.inner.disconnection.set(disconnection).is_ok();
        self.inner.listener.state().wake_consumer();
        first
    }

    pub(crate) fn disconnection(&self) -> Option<Disconnection> {
        self.inner.disconnection.get().copied()
    }

    /// Makes the caller the listener's one consumer; returns its generation number.
    pub(crate) fn new_consumer(&self) -> u64 {
        let generation = self
            .inner
            .consumer_generation
            .fetch_add(1, Ordering::AcqRel)
            + 1;
        // The previous stream, if one waits, wakes up, sees it is superseded and ends.
        self.inner.listener.state().wake_consumer();
        generation
    }

    pub(crate) fn consumer_generation(&self) -> u64 {
        self.inner.consumer_generation.load(Ordering::Acquire)
    }

    fn cursor(&self) -> MutexGuard<'_, Cursor> {
        // A cursor is two plain fields; no panic can leave it half-written.
        self.inner
            .cursor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Places the cursor at the log's head: the listener reads broadcasts from now on.
    pub(crate) fn attach(&self, log: &BroadcastLog) {
        let cursor = log.cursor_at_head();
        self.inner.position.store(cursor.next, Ordering::Release);
        *self.cursor() = cursor;
    }

    /// Moves the cursor to `seq`, if the log still holds it; else the oldest it holds.
    pub(crate) fn reposition(&self, log: &BroadcastLog, seq: u64) -> Result<(), u64> {
        let cursor = log.cursor_at(seq)?;
        self.place(cursor);
        Ok(())
    }

    /// Moves the cursor to `seq`, or to the oldest broadcast the log holds if `seq` is
    /// gone; returns where it is now.
    pub(crate) fn reposition_at_least(&self, log: &BroadcastLog, seq: u64) -> u64 {
        let cursor = log.cursor_at_least(seq);
        let next = cursor.next;
        self.place(cursor);
        next
    }

    fn place(&self, cursor: Cursor) {
        let mut current = self.cursor();
        self.inner.position.store(cursor.next, Ordering::Release);
        *current = cursor;
    }

    /// Ends the stream reading this listener, if one does, as a newer stream taking it
    /// over would: the listener and what it has unread stay.
    pub(crate) fn end_consumer(&self) {
        self.new_consumer();
    }

    /// The sequence number of the next broadcast this listener reads.
    pub fn position(&self) -> u64 {
        self.inner.position.load(Ordering::Acquire)
    }

    /// Takes the next message in FIFO order: a dispatch goes before broadcast `n` if it
    /// was dispatched when at most `n` broadcasts had been made.
    pub(crate) fn next(&self, log: &BroadcastLog) -> Next {
        let mut cursor = self.cursor();
        loop {
            // The log first, the queue second: seeing a broadcast (an acquire) makes
            // visible every dispatch its producer pushed before it, so none is missed.
            let read = log.peek(&mut cursor);
            let dispatched = self.inner.queue.peek_broadcasts_before();
            match (read, dispatched) {
                (_, Some(before)) if before <= cursor.next => {
                    if let Some(entry) = self.inner.queue.pop() {
                        return Next::Message(entry.message, Delivery::dispatched());
                    }
                }
                (Read::Message(msg), _) => {
                    let delivery = Delivery::broadcast(cursor.next);
                    BroadcastLog::advance(&mut cursor, 1);
                    self.inner.position.store(cursor.next, Ordering::Release);
                    return Next::Message(msg, delivery);
                }
                (Read::Lagged { missed }, _) => return Next::Lagged { missed },
                (Read::Empty, None) => return Next::Empty,
                // A dispatch stamped after a broadcast this reader has not seen yet: that
                // broadcast is in the log now (it was, for the dispatcher); read it first.
                (Read::Empty, Some(_)) => {}
            }
        }
    }

    /// Skips `missed` broadcasts that fell out of the log's window, counting them.
    pub(crate) fn skip(&self, missed: u64) {
        let mut cursor = self.cursor();
        BroadcastLog::advance(&mut cursor, missed);
        self.inner.position.store(cursor.next, Ordering::Release);
        self.inner
            .dropped_broadcasts
            .fetch_add(missed, Ordering::Relaxed);
    }

    pub(crate) fn count_rejected_broadcast(&self) {
        self.inner
            .rejected_broadcasts
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dropped_broadcasts(&self) -> u64 {
        self.inner.dropped_broadcasts.load(Ordering::Relaxed)
    }

    pub(crate) fn rejected_broadcasts(&self) -> u64 {
        self.inner.rejected_broadcasts.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id())
            .field("dispatched_unread", &self.inner.queue.len())
            .field("running", &self.inner.listener.is_running())
            .field("removed", &self.is_removed())
            .finish()
    }
}

/// Makes a [`Connection`] for a listener: the seam where a backend (Redis, say) plugs
/// its own queues into channels (eric-sse's `ConnectionsFactory`).
pub trait ConnectionsFactory: Send + Sync + 'static {
    /// A connection for `listener`, with a queue configured by `config`.
    fn create(&self, listener: Arc<dyn Listener>, config: &QueueConfig) -> Result<Connection>;
}

/// Makes connections with [`InMemoryQueue`]s (eric-sse's `InMemoryConnectionsFactory`).
#[derive(Clone, Copy, Debug, Default)]
pub struct InMemoryConnectionsFactory;

impl ConnectionsFactory for InMemoryConnectionsFactory {
    fn create(&self, listener: Arc<dyn Listener>, config: &QueueConfig) -> Result<Connection> {
        Ok(Connection::new(
            listener,
            Arc::new(InMemoryQueue::new(*config)),
        ))
    }
}
