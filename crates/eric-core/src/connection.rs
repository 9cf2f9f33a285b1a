//! Connections (a listener and its queue) and the factories that make them.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::Result;
use crate::in_memory_queue::InMemoryQueue;
use crate::listener::Listener;
use crate::queue::{Queue, QueueConfig};

/// A listener and its message queue (eric-sse's `Connection`). Cheap to clone.
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

    /// The queue.
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
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id())
            .field("queued", &self.inner.queue.len())
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
