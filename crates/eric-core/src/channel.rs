//! Channels: listeners, their queues, and the delivery of messages to them.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::adapter::{Adapter, MessageAdapter};
use crate::connection::{Connection, ConnectionsFactory, InMemoryConnectionsFactory};
use crate::error::{Error, Result, validate_id};
use crate::listener::{Listener, MessageQueueListener};
use crate::message::Message;
use crate::queue::{OverflowPolicy, PushOutcome, QueueConfig, QueueStats};
use crate::stream::MessageStream;

/// A channel: listeners, each with its own FIFO queue, and the adapter that shapes what
/// their streams yield (eric-sse's `AbstractChannel`). Cheap to clone; every clone is
/// the same channel, usable from any task or thread.
///
/// ```
/// use eric_core::{Channel, Message};
/// use futures_util::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> eric_core::Result<()> {
/// let channel = Channel::default();
/// let alice = channel.add_listener()?;
/// let bob = channel.add_listener()?;
/// alice.start(); // listeners start stopped; `message_stream` starts them itself
///
/// channel.broadcast(Message::new("news", "to everyone"))?;
/// channel.dispatch(bob.id(), Message::new("dm", "to bob only"))?;
/// channel.close();
///
/// let mut stream = channel.message_stream(bob.id())?;
/// let mut seen = Vec::new();
/// while let Some(item) = stream.next().await {
///     seen.push(item?.message_type().to_owned());
/// }
/// assert_eq!(seen, ["news", "dm", "_eric_channel_closed"]);
/// assert_eq!(channel.deliver_next(alice.id())?.payload(), "to everyone");
/// # Ok(())
/// # }
/// ```
pub struct Channel<A = MessageAdapter> {
    shared: Arc<Shared<A>>,
}

struct Shared<A> {
    id: Arc<str>,
    adapter: A,
    factory: Arc<dyn ConnectionsFactory>,
    queue_config: QueueConfig,
    connections: RwLock<HashMap<Arc<str>, Connection>>,
    // Broadcasts take this so that every listener sees them in the same order.
    broadcast_order: Mutex<()>,
    closed: AtomicBool,
    dropped: AtomicU64,
    rejected: AtomicU64,
    disconnected: AtomicU64,
}

impl<A> Clone for Channel<A> {
    fn clone(&self) -> Self {
        Channel {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Default for Channel<MessageAdapter> {
    fn default() -> Self {
        Channel::new(MessageAdapter)
    }
}

/// What a broadcast did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BroadcastReport {
    /// Listeners whose queue took the message.
    pub delivered: usize,
    /// Of those, how many dropped their oldest message to make room.
    pub dropped_oldest: usize,
    /// Listeners disconnected by this broadcast for overflowing their queue.
    pub disconnected: Vec<String>,
}

/// A channel's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelStats {
    /// Listeners registered now.
    pub listeners: usize,
    /// Messages dropped by overflowing queues (oldest pushed out, or discarded when a
    /// listener was disconnected).
    pub dropped: u64,
    /// Messages refused by full queues.
    pub rejected: u64,
    /// Listeners disconnected for overflowing.
    pub disconnected: u64,
}

/// Configures a [`Channel`]: its id, its queues, its connections factory.
///
/// ```
/// use eric_core::{Channel, MessageAdapter, OverflowPolicy};
///
/// let channel = Channel::builder()
///     .id("news")
///     .capacity(1000)
///     .overflow(OverflowPolicy::DropOldest)
///     .build(MessageAdapter)?;
/// assert_eq!(channel.id(), "news");
/// # Ok::<(), eric_core::Error>(())
/// ```
#[derive(Default)]
#[must_use]
pub struct ChannelBuilder {
    id: Option<String>,
    capacity: Option<usize>,
    overflow: OverflowPolicy,
    factory: Option<Arc<dyn ConnectionsFactory>>,
}

impl ChannelBuilder {
    /// The channel's id (a fresh UUID v4 if not set).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Bounds every listener's queue to `capacity` messages (at least 1).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// What a full queue does with one more message (default: reject it).
    pub fn overflow(mut self, policy: OverflowPolicy) -> Self {
        self.overflow = policy;
        self
    }

    /// Where connections come from (default: [`InMemoryConnectionsFactory`]).
    pub fn connections_factory(mut self, factory: impl ConnectionsFactory) -> Self {
        self.factory = Some(Arc::new(factory));
        self
    }

    /// The channel, adapting messages with `adapter`; an invalid id is an
    /// [`Error::InvalidId`].
    pub fn build<A: Adapter>(self, adapter: A) -> Result<Channel<A>> {
        let id = match self.id {
            Some(id) => {
                validate_id(&id)?;
                id
            }
            None => uuid::Uuid::new_v4().to_string(),
        };
        let queue_config = match self.capacity {
            Some(capacity) => QueueConfig::bounded(capacity, self.overflow),
            None => QueueConfig::unbounded(),
        };
        let factory = self
            .factory
            .unwrap_or_else(|| Arc::new(InMemoryConnectionsFactory));
        Ok(Channel {
            shared: Arc::new(Shared {
                id: id.into(),
                adapter,
                factory,
                queue_config,
                connections: RwLock::default(),
                broadcast_order: Mutex::default(),
                closed: AtomicBool::new(false),
                dropped: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                disconnected: AtomicU64::new(0),
            }),
        })
    }
}

impl Channel<MessageAdapter> {
    /// A builder for a channel.
    pub fn builder() -> ChannelBuilder {
        ChannelBuilder::default()
    }
}

impl<A: Adapter> Channel<A> {
    /// An open channel with a fresh id, unbounded in-memory queues, and `adapter`.
    pub fn new(adapter: A) -> Self {
        match ChannelBuilder::default().build(adapter) {
            Ok(channel) => channel,
            // A builder with no id set has nothing to validate.
            Err(_) => unreachable!("a generated channel id is always valid"),
        }
    }

    /// The channel's id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The adapter.
    pub fn adapter(&self) -> &A {
        &self.shared.adapter
    }

    /// How this channel's queues are configured.
    pub fn queue_config(&self) -> QueueConfig {
        self.shared.queue_config
    }

    /// Creates, registers and returns a default listener (eric-sse's `add_listener`).
    pub fn add_listener(&self) -> Result<Arc<MessageQueueListener>> {
        let listener = Arc::new(MessageQueueListener::new());
        self.register_listener(Arc::clone(&listener))?;
        Ok(listener)
    }

    /// Registers `listener` with a new queue from the channel's connections factory.
    pub fn register_listener<L: Listener>(&self, listener: Arc<L>) -> Result<()> {
        self.ensure_open()?;
        let connection = self
            .shared
            .factory
            .create(listener, &self.shared.queue_config)?;
        self.register_connection(connection)
    }

    /// Registers a ready-made connection.
    pub fn register_connection(&self, connection: Connection) -> Result<()> {
        let mut connections = self.write();
        self.ensure_open()?;
        let id = connection.listener().state().shared_id();
        if connections.contains_key(id) {
            return Err(Error::DuplicateListener {
                listener_id: id.to_string(),
            });
        }
        connections.insert(Arc::clone(id), connection);
        Ok(())
    }

    /// Removes a listener and returns its connection, with whatever it had not read
    /// still in its queue; its open stream ends.
    pub fn remove_listener(&self, listener_id: &str) -> Result<Connection> {
        let connection = self
            .write()
            .remove(listener_id)
            .ok_or_else(|| Error::invalid_listener(listener_id))?;
        connection.mark_removed();
        Ok(connection)
    }

    /// The listener with this id.
    pub fn get_listener(&self, listener_id: &str) -> Result<Arc<dyn Listener>> {
        Ok(Arc::clone(self.get_connection(listener_id)?.listener()))
    }

    /// The connection of the listener with this id.
    pub fn get_connection(&self, listener_id: &str) -> Result<Connection> {
        self.read()
            .get(listener_id)
            .cloned()
            .ok_or_else(|| Error::invalid_listener(listener_id))
    }

    /// Every connection, in no particular order.
    pub fn get_connections(&self) -> Vec<Connection> {
        self.read().values().cloned().collect()
    }

    /// How many listeners are registered.
    pub fn listener_count(&self) -> usize {
        self.read().len()
    }

    /// Enqueues `msg` for one listener (eric-sse's `dispatch`).
    pub fn dispatch(&self, listener_id: &str, msg: impl Into<Message>) -> Result<()> {
        let (connection, outcome) = {
            let connections = self.read();
            self.ensure_open()?;
            let connection = connections
                .get(listener_id)
                .ok_or_else(|| Error::invalid_listener(listener_id))?;
            // Pushed under the read lock, so `close` cannot slip in between the check
            // and the push and leave this message behind the end-of-stream marker.
            (connection.clone(), connection.queue().push(msg.into()))
        };
        match outcome {
            PushOutcome::Enqueued => Ok(()),
            PushOutcome::DroppedOldest => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            PushOutcome::Rejected { capacity } => {
                self.shared.rejected.fetch_add(1, Ordering::Relaxed);
                Err(Error::QueueFull {
                    listener_id: listener_id.to_owned(),
                    capacity,
                })
            }
            PushOutcome::Disconnected { capacity, dropped } => {
                self.disconnect(&connection, dropped);
                Err(Error::ListenerDisconnected {
                    listener_id: listener_id.to_owned(),
                    capacity,
                    dropped,
                })
            }
        }
    }

    /// Enqueues `msg` for every listener (eric-sse's `broadcast`). All listeners see
    /// broadcasts in the same order; the payload is shared, not copied.
    ///
    /// Under [`OverflowPolicy::Reject`], full queues refuse the message and the others
    /// take it: the result is then [`Error::BroadcastRejected`] naming the refusers.
    pub fn broadcast(&self, msg: impl Into<Message>) -> Result<BroadcastReport> {
        let msg = msg.into();
        let mut report = BroadcastReport::default();
        let mut rejected = Vec::new();
        let mut disconnected = Vec::new();
        {
            let _order = self
                .shared
                .broadcast_order
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let connections = self.read();
            self.ensure_open()?;
            for connection in connections.values() {
                match connection.queue().push(msg.clone()) {
                    PushOutcome::Enqueued => report.delivered += 1,
                    PushOutcome::DroppedOldest => {
                        report.delivered += 1;
                        report.dropped_oldest += 1;
                    }
                    PushOutcome::Rejected { .. } => rejected.push(connection.id().to_owned()),
                    PushOutcome::Disconnected { dropped, .. } => {
                        disconnected.push((connection.clone(), dropped));
                    }
                }
            }
        }
        if report.dropped_oldest > 0 {
            self.shared
                .dropped
                .fetch_add(report.dropped_oldest as u64, Ordering::Relaxed);
        }
        for (connection, dropped) in disconnected {
            self.disconnect(&connection, dropped);
            report.disconnected.push(connection.id().to_owned());
        }
        if rejected.is_empty() {
            Ok(report)
        } else {
            self.shared
                .rejected
                .fetch_add(rejected.len() as u64, Ordering::Relaxed);
            Err(Error::BroadcastRejected {
                channel_id: self.id().to_owned(),
                rejected,
                delivered: report.delivered,
            })
        }
    }

    /// Takes the listener's next message and runs its `on_message` hook (eric-sse's
    /// `deliver_next`); [`Error::NoMessages`] if its queue is empty,
    /// [`Error::ListenerStopped`] if it is stopped.
    pub fn deliver_next(&self, listener_id: &str) -> Result<Message> {
        let connection = self.get_connection(listener_id)?;
        let listener = connection.listener();
        if !listener.is_running() {
            return Err(Error::ListenerStopped {
                listener_id: listener_id.to_owned(),
            });
        }
        let msg = connection.queue().pop().ok_or_else(|| Error::NoMessages {
            listener_id: listener_id.to_owned(),
        })?;
        listener
            .on_message(&msg)
            .map_err(|source| Error::Listener {
                listener_id: listener_id.to_owned(),
                message_type: msg.message_type().to_owned(),
                source,
            })?;
        Ok(msg)
    }

    /// Starts the listener and returns the stream of its messages, adapted (eric-sse's
    /// `message_stream`). It waits without polling and ends on the closed or
    /// end-of-stream message, when the listener is stopped or removed, or when another
    /// stream takes over the listener. Dropping it leaves the listener registered, with
    /// its unread messages queued.
    pub fn message_stream(&self, listener_id: &str) -> Result<MessageStream<A>> {
        let connection = self.get_connection(listener_id)?;
        connection.listener().start();
        Ok(MessageStream::new(self.clone(), connection, false))
    }

    /// Adds a listener and returns its stream; dropping the stream removes the listener.
    /// What a browser's `EventSource` wants: subscribe and stream in one step.
    pub fn watch(&self) -> Result<MessageStream<A>> {
        let listener = self.add_listener()?;
        let connection = self.get_connection(listener.id())?;
        listener.start();
        Ok(MessageStream::new(self.clone(), connection, true))
    }

    /// Closes the channel (eric-sse's `notify_end`): every listener gets the closed
    /// message after what it already has queued, so every stream ends once drained;
    /// later dispatches, broadcasts and registrations fail with
    /// [`Error::ChannelClosed`]. Closing twice does nothing more.
    #[doc(alias = "notify_end")]
    pub fn close(&self) {
        let _order = self
            .shared
            .broadcast_order
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let connections = self.write();
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let closed = Message::closed();
        for connection in connections.values() {
            connection.queue().push_final(closed.clone());
        }
    }

    /// Whether the channel is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// The channel's counters.
    pub fn stats(&self) -> ChannelStats {
        ChannelStats {
            listeners: self.listener_count(),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            rejected: self.shared.rejected.load(Ordering::Relaxed),
            disconnected: self.shared.disconnected.load(Ordering::Relaxed),
        }
    }

    /// The counters of one listener's queue.
    pub fn queue_stats(&self, listener_id: &str) -> Result<QueueStats> {
        Ok(self.get_connection(listener_id)?.queue().stats())
    }

    /// Takes a disconnected listener out of the channel; counts it once.
    fn disconnect(&self, connection: &Connection, dropped: u64) {
        if self.remove_if_same(connection) {
            self.shared.disconnected.fetch_add(1, Ordering::Relaxed);
            self.shared.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
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
        }
        same
    }

    fn ensure_open(&self) -> Result<()> {
        if self.is_closed() {
            Err(Error::ChannelClosed {
                channel_id: self.id().to_owned(),
            })
        } else {
            Ok(())
        }
    }

    // Poisoning would mean a panic inside a map operation; the map is still usable.
    fn read(&self) -> RwLockReadGuard<'_, HashMap<Arc<str>, Connection>> {
        self.shared
            .connections
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<Arc<str>, Connection>> {
        self.shared
            .connections
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<A: Adapter> fmt::Debug for Channel<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.id())
            .field("listeners", &self.listener_count())
            .field("closed", &self.is_closed())
            .finish()
    }
}
