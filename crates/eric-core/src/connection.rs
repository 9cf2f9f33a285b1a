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
use crate::segment::Segment;
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
    // The segment the position is in (holding it keeps it in the log), and a copy of
    // the position that is only true while the lock is held.
    cursor: Mutex<Cursor>,
    // The sequence number of the next broadcast to read: the truth. A stream moves it
    // on with a compare-and-swap, without the cursor's lock (`read_unlocked`); whatever
    // else moves it (a reposition, a skip) does so under the lock, so that a stream's
    // swap from a position that is no longer current fails and reads again.
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
    /// The position `at` fell behind the log's window by `missed` broadcasts.
    Lagged {
        at: u64,
        missed: u64,
    },
}

/// A message a read took: borrowed from the log segment a stream holds (a broadcast
/// read without the cursor's lock), or owned (read under it). A stream's adapter makes
/// its output from either; a borrowed broadcast costs no reference-count traffic on a
/// message every listener of the channel shares, from every core.
pub(crate) enum Taken<'a> {
    Borrowed(&'a Message),
    Owned(Message),
}

impl Taken<'_> {
    /// The message.
    pub(crate) fn message(&self) -> &Message {
        match self {
            Taken::Borrowed(msg) => msg,
            Taken::Owned(msg) => msg,
        }
    }

    /// The message, owned.
    pub(crate) fn into_owned(self) -> Message {
        match self {
            Taken::Borrowed(msg) => msg.clone(),
            Taken::Owned(msg) => msg,
        }
    }
}

/// The message a read took, owned, with its delivery: the read for what keeps the
/// message past it (a listener's hook, the channel's own takes).
pub(crate) fn owned(msg: Taken<'_>, delivery: Delivery) -> (Message, Delivery) {
    (msg.into_owned(), delivery)
}

/// What a read without the cursor's lock found.
pub(crate) enum Unlocked<T> {
    /// What the reader made of the broadcast at the position, which moved past it.
    Message(T),
    /// Nothing to read: the position is at the log's head and no dispatch waits.
    CaughtUp,
    /// It cannot tell: a dispatch waits, the position left the reader's segment, it
    /// fell out of the window... The read under the lock decides.
    Locked,
}

/// A reader's own handle on the log segment its position is in: while the position
/// stays in it, broadcasts are read from it without the cursor's lock. A stream keeps
/// one; the read under the lock refreshes it.
#[derive(Default)]
pub(crate) struct SegmentCache {
    segment: Option<Arc<Segment>>,
    /// Broadcasts below this were published, and behind no dispatch, when last
    /// checked: read on from the segment with no check but the swap. (A dispatch
    /// pushed since came concurrently with those broadcasts, or was stamped after
    /// them: reading it after them is what either order allows.)
    checked_until: u64,
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
    #[inline]
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

    #[inline]
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

    #[inline]
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
        // A swap, not a store: either orders the move with a stream's compare-and-swap
        // (which reads the newest position), but loom checks that atomicity only
        // between read-modify-writes (tokio-rs/loom#254), and the model of this race
        // runs the code that ships.
        self.inner.position.swap(cursor.next, Ordering::AcqRel);
        *current = cursor;
    }

    /// Ends the stream reading this listener, if one does, as a newer stream taking it
    /// over would: the listener and what it has unread stay.
    pub(crate) fn end_consumer(&self) {
        self.new_consumer();
    }

    /// The sequence number of the next broadcast this listener reads.
    #[inline]
    pub fn position(&self) -> u64 {
        self.inner.position.load(Ordering::Acquire)
    }

    /// The broadcast at the position, read without the cursor's lock from `cache`'s
    /// segment: the usual case for a stream that keeps up, or reads a backlog.
    /// `read` makes what the caller wants of the broadcast, which it borrows.
    #[inline]
    pub(crate) fn read_unlocked<T>(
        &self,
        log: &BroadcastLog,
        cache: &mut SegmentCache,
        read: &impl Fn(Taken<'_>, Delivery) -> T,
    ) -> Unlocked<T> {
        // Inlined into the stream's poll: a read below `checked_until` is a load, the
        // slot and the swap.
        let at = self.position();
        if at < cache.checked_until {
            if let Some(segment) = cache.segment.as_ref().filter(|s| s.contains(at))
                && let Some(msg) = segment.get(at)
                && self.advance_from(at)
            {
                return Unlocked::Message(read(Taken::Borrowed(msg), Delivery::broadcast(at)));
            }
        } else if at >= log.head() {
            return self.at_head();
        }
        self.read_unlocked_checking(log, cache, read)
    }

    /// Moves the position from `at` to the next broadcast; fails if it moved since it
    /// was read: a reposition, or another stream (a takeover in progress) reading it.
    #[inline]
    fn advance_from(&self, at: u64) -> bool {
        self.inner
            .position
            .compare_exchange(at, at + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// [`read_unlocked`](Self::read_unlocked) past what `cache` has checked: checks
    /// the log's head, the window and the queue, then reads.
    fn read_unlocked_checking<T>(
        &self,
        log: &BroadcastLog,
        cache: &mut SegmentCache,
        read: &impl Fn(Taken<'_>, Delivery) -> T,
    ) -> Unlocked<T> {
        loop {
            let at = self.position();
            let Some(segment) = cache.segment.as_ref().filter(|s| s.contains(at)) else {
                return if at >= log.head() {
                    self.at_head()
                } else {
                    Unlocked::Locked
                };
            };
            if at >= cache.checked_until {
                // The log first, the queue second, as in `next`.
                let head = log.head();
                if at >= head {
                    return self.at_head();
                }
                let front = self.inner.queue.peek_broadcasts_before();
                if front.is_some_and(|before| before <= at) {
                    return Unlocked::Locked;
                }
                cache.checked_until = match log.window() {
                    // Within the window at its head now; the next one checks again.
                    Some(window) if head - at > window => return Unlocked::Locked,
                    Some(_) => at + 1,
                    None => front.map_or(head, |before| before.min(head)),
                };
            }
            // Filled: its append published the head past it.
            let Some(msg) = segment.get(at) else {
                return Unlocked::Locked;
            };
            if self.advance_from(at) {
                return Unlocked::Message(read(Taken::Borrowed(msg), Delivery::broadcast(at)));
            }
        }
    }

    /// What a reader whose position reached the log's head (loaded first) finds:
    /// nothing if no dispatch waits; else the read under the lock decides. (A broadcast
    /// whose head is not published yet is seen by the read after the stream registers
    /// its waker, or wakes it.)
    #[inline]
    fn at_head<T>(&self) -> Unlocked<T> {
        match self.inner.queue.peek_broadcasts_before() {
            None => Unlocked::CaughtUp,
            Some(_) => Unlocked::Locked,
        }
    }

    /// Takes the next message in FIFO order: a dispatch goes before broadcast `n` if it
    /// was dispatched when at most `n` broadcasts had been made. Leaves in `cache` the
    /// segment the position is in, for the reads without the lock that follow.
    pub(crate) fn next(&self, log: &BroadcastLog, cache: Option<&mut SegmentCache>) -> Next {
        let mut cursor = self.cursor();
        let next = loop {
            // Reads without the lock may have moved the position on.
            cursor.next = self.position();
            // The log first, the queue second: seeing a broadcast (an acquire) makes
            // visible every dispatch its producer pushed before it, so none is missed.
            let read = log.peek(&mut cursor);
            let dispatched = self.inner.queue.peek_broadcasts_before();
            match (read, dispatched) {
                (_, Some(before)) if before <= cursor.next => {
                    if let Some(entry) = self.inner.queue.pop() {
                        break Next::Message(entry.message, Delivery::dispatched());
                    }
                }
                (Read::Message(msg), _) => {
                    let at = cursor.next;
                    // Fails only if a read without the lock took it first.
                    if self.advance_from(at) {
                        BroadcastLog::advance(&mut cursor, 1);
                        break Next::Message(msg, Delivery::broadcast(at));
                    }
                }
                (Read::Lagged { missed }, _) => {
                    break Next::Lagged {
                        at: cursor.next,
                        missed,
                    };
                }
                (Read::Empty, None) => break Next::Empty,
                // A dispatch stamped after a broadcast this reader has not seen yet: that
                // broadcast is in the log now (it was, for the dispatcher); read it first.
                (Read::Empty, Some(_)) => {}
            }
        };
        if let Some(cache) = cache {
            let same = match (&cache.segment, cursor.segment()) {
                (Some(cached), Some(current)) => Arc::ptr_eq(cached, current),
                (None, None) => true,
                _ => false,
            };
            if !same {
                cache.segment = cursor.segment().cloned();
            }
        }
        next
    }

    /// Skips the `missed` broadcasts from `at` that fell out of the log's window,
    /// counting them; `false` if the position moved from `at` meanwhile (then nothing
    /// is skipped: the caller reads again).
    pub(crate) fn skip(&self, at: u64, missed: u64) -> bool {
        let mut cursor = self.cursor();
        if self
            .inner
            .position
            .compare_exchange(at, at + missed, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        cursor.next = at + missed;
        self.inner
            .dropped_broadcasts
            .fetch_add(missed, Ordering::Relaxed);
        true
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
