//! What every handle of one channel shares: its listeners, its broadcast log, its
//! counters, and the read side that the channel's streams use. Its own module so that
//! streams depend on it rather than on [`Channel`](crate::Channel), which makes them.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError};

use crate::adapter::Delivery;
use crate::connection::{
    Connection, ConnectionsFactory, Disconnection, Next, SegmentCache, Taken, Unlocked,
};
use crate::error::{Error, Result};
use crate::log::BroadcastLog;
use crate::queue::{OverflowPolicy, QueueConfig};
use crate::sync::{
    AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

/// A channel's state, behind the `Arc` every [`Channel`](crate::Channel) handle and
/// every [`MessageStream`](crate::MessageStream) holds.
pub(crate) struct Shared<A> {
    pub(crate) id: Arc<str>,
    pub(crate) adapter: A,
    pub(crate) factory: Arc<dyn ConnectionsFactory>,
    pub(crate) queue_config: QueueConfig,
    pub(crate) connections: RwLock<HashMap<Arc<str>, Connection>>,
    // One copy of each broadcast, read by every listener at its own cursor.
    pub(crate) log: BroadcastLog,
    // Serializes appends to the log with their overflow checks, and with `close`.
    pub(crate) broadcast_order: Mutex<()>,
    // No listener's cursor is below this: a lower bound that spares bounded channels a
    // scan of every listener on each broadcast.
    pub(crate) position_floor: AtomicU64,
    pub(crate) closed: AtomicBool,
    // The closed marker's sequence number, once it is in the log.
    pub(crate) closed_at: OnceLock<u64>,
    // The map's length, readable without its lock (every broadcast reports it).
    pub(crate) listener_count: AtomicUsize,
    pub(crate) dropped: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) disconnected: AtomicU64,
}

impl<A: Send + Sync> crate::budget::Reclaim for Shared<A> {
    fn reclaim(&self) {
        self.log.reclaim();
    }
}

impl<A> Shared<A> {
    /// A disconnection of `connection` now: everything it had unread is dropped.
    pub(crate) fn disconnection_of(&self, connection: &Connection) -> Disconnection {
        Disconnection {
            capacity: self.queue_config.capacity().unwrap_or(0),
            dropped: self.unread_broadcasts(connection) + connection.queue().len() as u64,
        }
    }

    /// The broadcasts `connection` has not read (one reading of the head and of its
    /// position).
    pub(crate) fn unread_broadcasts(&self, connection: &Connection) -> u64 {
        self.log.head().saturating_sub(connection.position())
    }

    /// The next message for `connection` in FIFO order, applying the overflow policy
    /// to a listener that fell out of the broadcast window, made into what the caller
    /// wants by `read`. A stream passes its [`SegmentCache`]: broadcasts are then read
    /// without the cursor's lock, and handed to `read` borrowed from the segment.
    #[inline]
    pub(crate) fn next_for<T>(
        &self,
        connection: &Connection,
        mut cache: Option<&mut SegmentCache>,
        read: &impl Fn(Taken<'_>, Delivery) -> T,
    ) -> Result<Option<T>> {
        // The usual cases, a stream caught up or reading broadcasts in order, are said
        // by atomics and the queue's check, without the cursor's lock.
        if connection.disconnection().is_none()
            && let Some(cache) = cache.as_deref_mut()
        {
            match connection.read_unlocked(&self.log, cache, read) {
                Unlocked::Message(made) => return Ok(Some(made)),
                Unlocked::CaughtUp => return Ok(None),
                Unlocked::Locked => {}
            }
        }
        self.next_checking(connection, cache, read)
    }

    /// [`next_for`](Self::next_for) when the read without the lock cannot say.
    fn next_checking<T>(
        &self,
        connection: &Connection,
        mut cache: Option<&mut SegmentCache>,
        read: &impl Fn(Taken<'_>, Delivery) -> T,
    ) -> Result<Option<T>> {
        loop {
            if let Some(d) = connection.disconnection() {
                return Err(Error::ListenerDisconnected {
                    listener_id: connection.id().to_owned(),
                    capacity: d.capacity,
                    dropped: d.dropped,
                });
            }
            let unlocked = match cache.as_deref_mut() {
                Some(cache) => connection.read_unlocked(&self.log, cache, read),
                None => connection.read_unlocked(&self.log, &mut SegmentCache::default(), read),
            };
            match unlocked {
                Unlocked::Message(made) => return Ok(Some(made)),
                Unlocked::CaughtUp => return Ok(None),
                Unlocked::Locked => {}
            }
            match connection.next(&self.log, cache.as_deref_mut()) {
                Next::Message(msg, delivery) => return Ok(Some(read(Taken::Owned(msg), delivery))),
                Next::Empty => return Ok(None),
                Next::Lagged { at, missed } => match self.queue_config.overflow() {
                    OverflowPolicy::Disconnect => {
                        let disconnection = self.disconnection_of(connection);
                        // Reported by the check at the top of the loop.
                        self.disconnect(connection, disconnection);
                        connection.mark_disconnected(disconnection);
                    }
                    // Reject never lets a listener fall out of the window; if one did,
                    // skipping and counting is the loss-free answer left.
                    _ => {
                        if connection.skip(at, missed) {
                            self.dropped.fetch_add(missed, Ordering::Relaxed);
                        }
                    }
                },
            }
        }
    }

    /// Whether `connection` has read past the closed marker: nothing more can come.
    pub(crate) fn read_past_close(&self, connection: &Connection) -> bool {
        self.closed_at
            .get()
            .is_some_and(|&seq| connection.position() > seq)
    }

    /// Takes a disconnected listener out of the channel and tells its consumer; counts
    /// it once, and says whether this call was the one.
    pub(crate) fn disconnect(&self, connection: &Connection, disconnection: Disconnection) -> bool {
        let first = self.remove_if_same(connection) && connection.mark_disconnected(disconnection);
        if first {
            self.disconnected.fetch_add(1, Ordering::Relaxed);
            self.dropped
                .fetch_add(disconnection.dropped, Ordering::Relaxed);
        }
        first
    }

    /// Removes `connection` if it is still the one registered under its id (not a
    /// newer one registered since with the same id); says whether it did.
    pub(crate) fn remove_if_same(&self, connection: &Connection) -> bool {
        let mut connections = self.write();
        let same = connections
            .get(connection.id())
            .is_some_and(|registered| registered.same_as(connection));
        if same {
            connections.remove(connection.id());
            self.listener_count
                .store(connections.len(), Ordering::Release);
        }
        same
    }

    // Poisoning would mean a panic inside a map operation; the map is still usable.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, HashMap<Arc<str>, Connection>> {
        self.connections
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, HashMap<Arc<str>, Connection>> {
        self.connections
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
