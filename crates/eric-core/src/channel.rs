//! Channels: listeners, their queues, and the delivery of messages to them.

use std::fmt;
use std::sync::{Arc, OnceLock, PoisonError};

use crate::adapter::{Adapter, Delivery, MessageAdapter};
use crate::budget::{MemoryBudget, Reclaim};
use crate::channel_shared::Shared;
use crate::connection::{
    Connection, ConnectionsFactory, Disconnection, InMemoryConnectionsFactory, owned,
};
use crate::error::{Error, Result, validate_id};
use crate::listener::{Listener, MessageQueueListener};
use crate::log::BroadcastLog;
use crate::message::Message;
use crate::queue::{OverflowPolicy, PushOutcome, QueueConfig, QueueEntry, QueueStats};
use crate::stream::MessageStream;
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, RwLock};

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
    /// The broadcast's sequence number in the channel: 0 for the first, then 1, 2, ...
    pub seq: u64,
    /// Listeners registered when it was made: each will read it.
    pub delivered: usize,
    /// Listeners disconnected by this broadcast for falling too far behind
    /// ([`OverflowPolicy::Disconnect`]).
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
///     .capacity(1000, OverflowPolicy::DropOldest)
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
    replay: usize,
    replay_bytes: Option<u64>,
    budget: Option<MemoryBudget>,
    first_seq: u64,
    factory: Option<Arc<dyn ConnectionsFactory>>,
}

impl ChannelBuilder {
    /// The channel's id (a fresh UUID v4 if not set).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Bounds what each listener may have unread to `capacity` messages (at least 1;
    /// broadcasts and dispatches counted apart), and says what happens to one more
    /// ([`OverflowPolicy`]). Default: unbounded.
    pub fn capacity(mut self, capacity: usize, overflow: OverflowPolicy) -> Self {
        self.capacity = Some(capacity);
        self.overflow = overflow;
        self
    }

    /// Keeps at least the last `broadcasts` broadcasts (rounded up to whole segments of
    /// 64) so that a listener can resume where it left off ([`Channel::watch_from`],
    /// [`Channel::message_stream_from`]). Default 0: only what listeners still need.
    pub fn replay(mut self, broadcasts: usize) -> Self {
        self.replay = broadcasts;
        self
    }

    /// Bounds the replay window by size as well: of the last [`replay`](Self::replay)
    /// broadcasts, it keeps no more than `bytes` (estimated by
    /// [`Message::retained_bytes`], in whole segments). Default: no bound in bytes.
    pub fn replay_bytes(mut self, bytes: u64) -> Self {
        self.replay_bytes = Some(bytes);
        self
    }

    /// Counts the channel's broadcasts against `budget`, shared with other channels
    /// (see [`MemoryBudget`]). Default: none.
    pub fn memory_budget(mut self, budget: &MemoryBudget) -> Self {
        self.budget = Some(budget.clone());
        self
    }

    /// The sequence number of the first broadcast (default 0): a channel restored from
    /// storage goes on where it left off.
    pub fn first_seq(mut self, seq: u64) -> Self {
        self.first_seq = seq;
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
        let channel = Channel {
            shared: Arc::new(Shared {
                id: id.into(),
                adapter,
                factory,
                queue_config,
                connections: RwLock::default(),
                log: BroadcastLog::starting_at(
                    self.first_seq,
                    queue_config.capacity(),
                    self.replay,
                    self.replay_bytes,
                ),
                broadcast_order: Mutex::default(),
                position_floor: AtomicU64::new(self.first_seq),
                closed: AtomicBool::new(false),
                closed_at: OnceLock::new(),
                listener_count: AtomicUsize::new(0),
                dropped: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                disconnected: AtomicU64::new(0),
            }),
        };
        if let Some(budget) = &self.budget {
            channel.limit_memory(budget);
        }
        Ok(channel)
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

    /// How many recent broadcasts the channel keeps for listeners that resume (see
    /// [`ChannelBuilder::replay`]).
    pub fn replay(&self) -> usize {
        self.shared.log.retain() as usize
    }

    /// The bytes the channel keeps for replay at most (see
    /// [`ChannelBuilder::replay_bytes`]), if bounded.
    pub fn replay_bytes(&self) -> Option<u64> {
        self.shared.log.retain_bytes()
    }

    /// Counts the channel's broadcasts against `budget` from now on, those it holds
    /// already included (see [`MemoryBudget`]); `false`, changing nothing, if it
    /// counts against a budget already.
    pub fn limit_memory(&self, budget: &MemoryBudget) -> bool {
        if !self.shared.log.join_budget(budget) {
            return false;
        }
        let member: Arc<dyn Reclaim> = self.shared.clone();
        budget.join(Arc::downgrade(&member));
        true
    }

    /// The memory budget the channel counts against, if any.
    pub fn memory_budget(&self) -> Option<&MemoryBudget> {
        self.shared.log.budget()
    }

    /// Makes room for `msg` in the channel's memory budget, if it has one
    /// ([`MemoryBudget::admit`]): what [`broadcast`](Self::broadcast) checks first, for
    /// a caller that must know before it commits the message elsewhere (stores it, say)
    /// and then [`replicate`](Self::replicate)s it.
    pub fn admit(&self, msg: &Message) -> Result<()> {
        match self.memory_budget() {
            Some(budget) => budget.admit(msg.retained_bytes()),
            None => Ok(()),
        }
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
        let mut connections = self.shared.write();
        self.ensure_open()?;
        let id = connection.listener().state().shared_id();
        if connections.contains_key(id) {
            return Err(Error::DuplicateListener {
                listener_id: id.to_string(),
            });
        }
        connection.attach(&self.shared.log);
        connections.insert(Arc::clone(id), connection);
        self.shared
            .listener_count
            .store(connections.len(), Ordering::Release);
        Ok(())
    }

    /// Removes a listener and returns its connection, with whatever it had not read
    /// still in its queue; its open stream ends.
    pub fn remove_listener(&self, listener_id: &str) -> Result<Connection> {
        let connection = {
            let mut connections = self.shared.write();
            let removed = connections.remove(listener_id);
            self.shared
                .listener_count
                .store(connections.len(), Ordering::Release);
            removed.ok_or_else(|| Error::invalid_listener(listener_id))?
        };
        connection.mark_removed();
        Ok(connection)
    }

    /// The listener with this id.
    #[doc(alias = "get_listener")]
    pub fn listener(&self, listener_id: &str) -> Result<Arc<dyn Listener>> {
        Ok(Arc::clone(self.get_connection(listener_id)?.listener()))
    }

    /// The connection of the listener with this id.
    pub fn get_connection(&self, listener_id: &str) -> Result<Connection> {
        self.shared
            .read()
            .get(listener_id)
            .cloned()
            .ok_or_else(|| Error::invalid_listener(listener_id))
    }

    /// Every connection, in no particular order.
    pub fn get_connections(&self) -> Vec<Connection> {
        self.shared.read().values().cloned().collect()
    }

    /// How many listeners are registered.
    pub fn listener_count(&self) -> usize {
        self.shared.listener_count.load(Ordering::Acquire)
    }

    /// Enqueues `msg` for one listener (eric-sse's `dispatch`).
    pub fn dispatch(&self, listener_id: &str, msg: impl Into<Message>) -> Result<()> {
        self.dispatch_at(listener_id, u64::MAX, msg)
    }

    /// Enqueues `msg` for one listener as if it had been dispatched when broadcast `seq`
    /// was the next to come: the listener reads it after broadcast `seq - 1` and before
    /// broadcast `seq`. For rebuilding a listener's queue elsewhere (on another process,
    /// say); a `seq` past the next broadcast counts as the next broadcast, and the
    /// messages of one listener must be given in order. Give each before broadcast
    /// `seq` is appended, as a replica applying a channel's entries in order does: a
    /// stream that already checked the log past `seq` (it reads what one check of the
    /// log's head and its queue covered without looking at the queue again) reads the
    /// dispatch after the broadcasts that check covered.
    pub fn dispatch_at(&self, listener_id: &str, seq: u64, msg: impl Into<Message>) -> Result<()> {
        let connection = self.get_connection(listener_id)?;
        // Stamp first, check second: `close` sets its flag before appending the closed
        // marker, so a stamp that lands past the marker is always refused here rather
        // than queued behind the end of the stream.
        let broadcasts_before = self.shared.log.head().min(seq);
        self.ensure_open()?;
        let entry = QueueEntry {
            message: msg.into(),
            broadcasts_before,
        };
        match connection.queue().push(entry) {
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
                self.shared
                    .disconnect(&connection, Disconnection { capacity, dropped });
                Err(Error::ListenerDisconnected {
                    listener_id: listener_id.to_owned(),
                    capacity,
                    dropped,
                })
            }
        }
    }

    /// Sends `msg` to every listener (eric-sse's `broadcast`): one copy goes into the
    /// channel's broadcast log, which each listener reads at its own pace, so the cost
    /// does not grow with the number of listeners. All listeners see broadcasts in the
    /// same order.
    ///
    /// On a bounded channel with [`OverflowPolicy::Reject`], if any listener already
    /// has `capacity` unread broadcasts the message reaches nobody and the result is
    /// [`Error::BroadcastRejected`] naming them; retrying later is safe.
    ///
    /// On a channel with a [`MemoryBudget`] that the broadcast would overrun once what
    /// only the replay windows keep is released, the result is
    /// [`Error::MemoryBudgetExceeded`] and nobody gets it.
    pub fn broadcast(&self, msg: impl Into<Message>) -> Result<BroadcastReport> {
        self.append(msg.into(), true)
    }

    /// Like [`broadcast`](Self::broadcast), for a broadcast already accepted elsewhere
    /// (stored, or published by another process of a cluster) that this copy of the
    /// channel must take: counted against the channel's [`MemoryBudget`] but never
    /// refused by it. Every other check applies.
    pub fn replicate(&self, msg: impl Into<Message>) -> Result<BroadcastReport> {
        self.append(msg.into(), false)
    }

    fn append(&self, msg: Message, budgeted: bool) -> Result<BroadcastReport> {
        let _order = self.order();
        self.ensure_open()?;
        if budgeted {
            self.admit(&msg)?;
        }
        let window = self.shared.log.window();
        let policy = self.shared.queue_config.overflow();
        if let (Some(window), OverflowPolicy::Reject) = (window, policy) {
            // Full: would hold more than `window` unread once this one is appended.
            let full = self.lagging(self.shared.log.head() + 1, window);
            if !full.is_empty() {
                full.iter().for_each(Connection::count_rejected_broadcast);
                self.shared
                    .rejected
                    .fetch_add(full.len() as u64, Ordering::Relaxed);
                return Err(Error::BroadcastRejected {
                    channel_id: self.id().to_owned(),
                    rejected: full.iter().map(|c| c.id().to_owned()).collect(),
                    delivered: 0,
                });
            }
        }
        let seq = self.shared.log.append(msg);
        let mut report = BroadcastReport {
            seq,
            delivered: self.listener_count(),
            disconnected: Vec::new(),
        };
        if let (Some(window), OverflowPolicy::Disconnect) = (window, policy) {
            for connection in self.lagging(self.shared.log.head(), window) {
                let disconnection = self.shared.disconnection_of(&connection);
                if self.shared.disconnect(&connection, disconnection) {
                    report.disconnected.push(connection.id().to_owned());
                }
            }
        }
        Ok(report)
    }

    /// Listeners with more than `limit` unread broadcasts when the log's head is
    /// `head`; scans them all only when the cached floor says one might be.
    fn lagging(&self, head: u64, limit: u64) -> Vec<Connection> {
        let floor = self.shared.position_floor.load(Ordering::Acquire);
        if head.saturating_sub(floor) <= limit {
            return Vec::new();
        }
        let connections = self.shared.read();
        let mut floor = head;
        let mut lagging = Vec::new();
        for connection in connections.values() {
            let position = connection.position();
            floor = floor.min(position);
            if head.saturating_sub(position) > limit {
                lagging.push(connection.clone());
            }
        }
        self.shared.position_floor.store(floor, Ordering::Release);
        lagging
    }

    /// Takes the listener's next message without running its `on_message` hook, with
    /// how it was delivered; `Ok(None)` if it has none. For consumers that run the
    /// hook elsewhere (on a thread pool, say). [`Error::ListenerStopped`] if stopped.
    pub fn take_next(&self, listener_id: &str) -> Result<Option<(Message, Delivery)>> {
        self.take_from(&self.get_connection(listener_id)?)
    }

    fn take_from(&self, connection: &Connection) -> Result<Option<(Message, Delivery)>> {
        if !connection.listener().is_running() {
            return Err(Error::ListenerStopped {
                listener_id: connection.id().to_owned(),
            });
        }
        self.shared.next_for(connection, None, &owned)
    }

    /// Takes the listener's next message and runs its `on_message` hook (eric-sse's
    /// `deliver_next`); [`Error::NoMessages`] if it has none, [`Error::ListenerStopped`]
    /// if it is stopped.
    pub fn deliver_next(&self, listener_id: &str) -> Result<Message> {
        let connection = self.get_connection(listener_id)?;
        let (msg, _) = self
            .take_from(&connection)?
            .ok_or_else(|| Error::NoMessages {
                listener_id: listener_id.to_owned(),
            })?;
        connection
            .listener()
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
        Ok(MessageStream::new(
            Arc::clone(&self.shared),
            connection,
            false,
        ))
    }

    /// Like [`message_stream`](Self::message_stream), but first moves the listener
    /// back (or forward) to broadcast `seq`: what a reconnecting client asks for when
    /// the last broadcast it received was `seq - 1`. Broadcasts the listener had taken
    /// but the client never got are read again; dispatches are not.
    /// [`Error::ReplayUnavailable`] if the channel no longer keeps `seq` (see
    /// [`ChannelBuilder::replay`]) or has not reached it.
    pub fn message_stream_from(&self, listener_id: &str, seq: u64) -> Result<MessageStream<A>> {
        self.rewind(listener_id, seq)?;
        self.message_stream(listener_id)
    }

    /// Moves a listener to broadcast `seq`: it reads that one next (a restored listener
    /// goes on where it was). [`Error::ReplayUnavailable`] if the channel no longer
    /// keeps `seq` or has not reached it.
    pub fn rewind(&self, listener_id: &str, seq: u64) -> Result<()> {
        let connection = self.get_connection(listener_id)?;
        self.reposition(&connection, seq)
    }

    /// Moves `connection` to broadcast `seq`, keeping the floor of positions true: a
    /// listener moved back must count in the overflow checks at once (under the lock
    /// broadcasts take, so that no scan in progress writes back a floor above it).
    fn reposition(&self, connection: &Connection, seq: u64) -> Result<()> {
        let _order = self.order();
        connection
            .reposition(&self.shared.log, seq)
            .map_err(|oldest| self.replay_unavailable(seq, oldest))?;
        self.shared
            .position_floor
            .fetch_min(connection.position(), Ordering::AcqRel);
        Ok(())
    }

    /// Moves `connection` to broadcast `seq`, or to the oldest kept if `seq` is gone;
    /// returns where it is.
    fn reposition_at_least(&self, connection: &Connection, seq: u64) -> u64 {
        let _order = self.order();
        let at = connection.reposition_at_least(&self.shared.log, seq);
        self.shared.position_floor.fetch_min(at, Ordering::AcqRel);
        at
    }

    /// Like [`message_stream_from`](Self::message_stream_from), but a `seq` the
    /// channel no longer keeps starts at the oldest broadcast it keeps (and one past
    /// the newest, at the next): what a client that must lose nothing the channel still
    /// holds asks for. Returns the stream and the broadcast it reads first.
    pub fn message_stream_from_kept(
        &self,
        listener_id: &str,
        seq: u64,
    ) -> Result<(MessageStream<A>, u64)> {
        let connection = self.get_connection(listener_id)?;
        let at = self.reposition_at_least(&connection, seq);
        Ok((self.message_stream(listener_id)?, at))
    }

    /// Adds a listener and returns its stream; dropping the stream removes the listener.
    /// What a browser's `EventSource` wants: subscribe and stream in one step.
    pub fn watch(&self) -> Result<MessageStream<A>> {
        let listener = self.add_listener()?;
        let connection = self.get_connection(listener.id())?;
        listener.start();
        Ok(MessageStream::new(
            Arc::clone(&self.shared),
            connection,
            true,
        ))
    }

    /// Like [`watch`](Self::watch), starting at broadcast `seq` (replaying what was
    /// broadcast since); [`Error::ReplayUnavailable`], and no listener added, if the
    /// channel no longer keeps `seq` or has not reached it.
    pub fn watch_from(&self, seq: u64) -> Result<MessageStream<A>> {
        let stream = self.watch()?;
        // On an error, dropping the stream removes the listener it added.
        self.reposition(stream.connection(), seq)?;
        Ok(stream)
    }

    /// Like [`watch_from`](Self::watch_from), but a `seq` the channel no longer keeps
    /// starts at the oldest broadcast it keeps (see
    /// [`message_stream_from_kept`](Self::message_stream_from_kept)). Returns the
    /// stream and the broadcast it reads first.
    pub fn watch_from_kept(&self, seq: u64) -> Result<(MessageStream<A>, u64)> {
        let stream = self.watch()?;
        let at = self.reposition_at_least(stream.connection(), seq);
        Ok((stream, at))
    }

    /// Ends every stream open now, as if each were dropped by its reader, without
    /// closing the channel: no closed message is sent and no sequence number is spent,
    /// so clients that reconnect (to this process or, after a restart, to the next)
    /// resume where they were. Listeners stay registered with what they have unread;
    /// the streams of [`watch`](Self::watch) remove their own when they end. For
    /// shutting a server down gracefully.
    pub fn end_streams(&self) {
        for connection in self.get_connections() {
            connection.end_consumer();
        }
    }

    /// The sequence number the next broadcast will get.
    pub fn next_seq(&self) -> u64 {
        self.shared.log.head()
    }

    /// The broadcasts a stream can resume from: `oldest..next_seq` (see
    /// [`ChannelBuilder::replay`]).
    pub fn replayable(&self) -> std::ops::Range<u64> {
        let head = self.shared.log.head();
        self.shared.log.oldest().min(head)..head
    }

    fn replay_unavailable(&self, requested: u64, oldest: u64) -> Error {
        Error::ReplayUnavailable {
            channel_id: self.id().to_owned(),
            requested,
            oldest,
            head: self.shared.log.head(),
        }
    }

    /// Closes the channel (eric-sse's `notify_end`): every listener reads the closed
    /// message after what it already has, so every stream ends once drained; later
    /// dispatches, broadcasts and registrations fail with [`Error::ChannelClosed`].
    /// Closing twice does nothing more.
    #[doc(alias = "notify_end")]
    pub fn close(&self) {
        let _order = self.order();
        let _registrations = self.shared.write();
        if !self.shared.closed.swap(true, Ordering::AcqRel) {
            // Past any capacity: the end marker must always get through.
            let seq = self.shared.log.append_final(Message::closed());
            let _ = self.shared.closed_at.set(seq);
        }
    }

    /// Whether the channel is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// The channel's counters. Under [`OverflowPolicy::DropOldest`] this also counts
    /// the broadcasts that listeners have fallen behind on and will skip.
    pub fn stats(&self) -> ChannelStats {
        let connections = self.shared.read();
        let pending: u64 = connections.values().map(|c| self.pending_drops(c)).sum();
        ChannelStats {
            listeners: connections.len(),
            dropped: self.shared.dropped.load(Ordering::Relaxed) + pending,
            rejected: self.shared.rejected.load(Ordering::Relaxed),
            disconnected: self.shared.disconnected.load(Ordering::Relaxed),
        }
    }

    /// One listener's counters: its unread messages (broadcasts and dispatches), and
    /// what it dropped and had refused.
    pub fn queue_stats(&self, listener_id: &str) -> Result<QueueStats> {
        let connection = self.get_connection(listener_id)?;
        let queue = connection.queue().stats();
        // One reading of the head and the position for both numbers: read apart, a
        // broadcast or a skip in between made the subtraction underflow.
        let unread = self.shared.unread_broadcasts(&connection);
        let pending = self.beyond_window(unread);
        Ok(QueueStats {
            len: queue.len + (unread - pending) as usize,
            dropped: queue.dropped + connection.dropped_broadcasts() + pending,
            rejected: queue.rejected + connection.rejected_broadcasts(),
        })
    }

    /// Broadcasts `connection` has fallen behind on beyond the window, not yet skipped.
    fn pending_drops(&self, connection: &Connection) -> u64 {
        self.beyond_window(self.shared.unread_broadcasts(connection))
    }

    /// Of `unread` broadcasts, those past the window that a `DropOldest` listener will
    /// skip (at most `unread`).
    fn beyond_window(&self, unread: u64) -> u64 {
        match (
            self.shared.log.window(),
            self.shared.queue_config.overflow(),
        ) {
            (Some(window), OverflowPolicy::DropOldest) => unread.saturating_sub(window),
            _ => 0,
        }
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

    /// Serializes broadcasts, closing, and moves of listeners.
    fn order(&self) -> crate::sync::MutexGuard<'_, ()> {
        self.shared
            .broadcast_order
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<A: Adapter> MessageStream<A> {
    /// The channel this stream reads from.
    pub fn channel(&self) -> Channel<A> {
        Channel {
            shared: Arc::clone(self.shared()),
        }
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
