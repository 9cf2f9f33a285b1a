//! Stored listeners of a cluster: kept in Redis, dispatched to and streamed from any
//! process.
//!
//! A stored listener is a field of the channel's `:listeners` hash (its value: the next
//! broadcast it reads) and a list `:queue:<listener>` of the dispatches it has not been
//! delivered yet, each `<entry id>\n<type>\n<payload>`. A dispatch is one script: the
//! entry `<seq>-<n>` goes on the channel's stream (so that the process streaming the
//! listener delivers it at once, in its place among the broadcasts) and on the queue.
//! A process that streams the listener rebuilds its local queue from the list, and a
//! dispatch leaves the list once its stream has handed it to the client's connection.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};

use eric_core::{Message, MessageQueueListener};
use eric_prefabs::{SseChannel, SseEvent, SseStream};
use futures_core::Stream;

use super::{EntryId, RedisCluster, Served, decode, not_found, parse_entry_id, storage_error};
use crate::error::{Error, Result};

/// The message type of the entry that removes a stored listener everywhere.
pub(super) const REMOVED: &str = "\u{0}removed";

/// The message type of the entry that says a stored listener now streams elsewhere:
/// streams of it attached before end.
pub(super) const MOVED: &str = "\u{0}moved";

/// Stores a listener reading from the next broadcast on: 1 added, 0 taken, -1 no
/// channel.
const ADD: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local next = redis.call('HGET', KEYS[1], 'seq') + 1
return redis.call('HSETNX', KEYS[2], ARGV[1], next)
";

/// A dispatch after the newest broadcast: on the stream for whoever streams the
/// listener now, and on its queue until delivered. The entry id, or -1 no channel,
/// -2 no listener, -3 queue full.
const DISPATCH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return -2 end
local capacity = tonumber(ARGV[5])
if capacity > 0 and redis.call('LLEN', KEYS[3]) >= capacity then return -3 end
local seq = redis.call('HGET', KEYS[1], 'seq')
local id = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], seq .. '-*',
  'type', ARGV[2], 'payload', ARGV[3], 'to', ARGV[1])
redis.call('RPUSH', KEYS[3], id .. '\n' .. ARGV[2] .. '\n' .. ARGV[3])
return id
";

/// Removes a stored listener and its queue, and tells every process (its stream
/// ends): 1 removed, 0 no such listener.
const REMOVE_LISTENER: &str = r"
if redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[3])
local seq = redis.call('HGET', KEYS[1], 'seq')
if seq then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], seq .. '-*',
    'type', ARGV[2], 'payload', 'null', 'to', ARGV[1])
end
return 1
";

/// A stream of a stored listener starts: the entry that ends its older streams
/// (`by` the new one), and the listener's queue, read at that same moment. `{entry id,
/// queued...}`, or -1 when the listener is gone.
const ATTACH: &str = r"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return -1 end
local seq = redis.call('HGET', KEYS[1], 'seq')
local id = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], seq .. '-*',
  'type', ARGV[2], 'payload', 'null', 'to', ARGV[1], 'by', ARGV[3])
local reply = redis.call('LRANGE', KEYS[3], 0, -1)
table.insert(reply, 1, id)
return reply
";

/// Drops the queued dispatches up to entry `ARGV[1]-ARGV[2]` (delivered).
const ACK: &str = r"
local seq, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local acked = 0
while true do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head then break end
  local s, k = string.match(head, '^(%d+)-(%d+)')
  s, k = tonumber(s), tonumber(k)
  if s and (s > seq or (s == seq and k > n)) then break end
  redis.call('LPOP', KEYS[1])
  acked = acked + 1
end
return acked
";

/// Records where a stored listener is (unless it was removed meanwhile).
const SAVE_POSITION: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
";

/// A stored listener streaming on this process.
pub(super) struct Attached {
    /// The newest entry already taken into account for it.
    pub(super) upto: EntryId,
    /// Which stream attached it: an older stream detaches only itself.
    attach: u64,
    /// This stream's name in its [`MOVED`] entry, and that entry's id: a later
    /// [`MOVED`] entry by another stream ends this one.
    token: String,
    since: EntryId,
    /// The entries of the dispatches in its local queue, oldest first: the stream
    /// acknowledges each in Redis as it delivers it.
    pending: Pending,
}

type Pending = Arc<std::sync::Mutex<VecDeque<EntryId>>>;

impl Attached {
    /// Whether [`MOVED`] entry `id`, written `by` a stream, ends this one: written
    /// later, by another.
    pub(super) fn taken_over(&self, id: EntryId, by: &str) -> bool {
        by != self.token && id > self.since
    }

    /// Queues dispatch `id` (made after broadcast `id.0`) for the local listener.
    pub(super) fn deliver(&self, channel: &SseChannel, listener: &str, id: EntryId, msg: Message) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        // Before the push, under the lock: the stream may deliver it at once.
        pending.push_back(id);
        if let Err(err) = channel.channel().dispatch_at(listener, id.0 + 1, msg) {
            // Not queued here (the listener overflowed and was disconnected, say): it
            // stays in Redis for the listener's next stream.
            pending.pop_back();
            tracing::debug!(listener, %err, "stored listener's dispatch not queued here");
        }
    }
}

/// The events of a stored listener on this process (see
/// [`RedisCluster::message_stream`]): an [`SseStream`] that acknowledges each dispatch
/// in Redis as it delivers it, and records the listener's position when it ends.
#[must_use = "streams do nothing unless polled"]
pub struct ListenerStream {
    inner: SseStream,
    cluster: RedisCluster,
    channel: SseChannel,
    listener_id: String,
    /// The listener's queue in Redis, where deliveries are acknowledged.
    queue: String,
    attach: u64,
    pending: Pending,
    acks: Arc<std::sync::Mutex<Acks>>,
    /// The next broadcast the client has not had.
    position: Option<u64>,
}

/// Acknowledgements of one stream: one request at a time, for the newest delivered
/// dispatch (which acknowledges every one before it), so that a burst of deliveries
/// costs a few round trips, not one each.
#[derive(Default)]
struct Acks {
    newest: Option<EntryId>,
    sending: bool,
}

impl std::fmt::Debug for ListenerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerStream")
            .field("channel_id", &self.channel.id())
            .field("listener_id", &self.listener_id)
            .finish()
    }
}

impl Stream for ListenerStream {
    type Item = eric_prefabs::Result<SseEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(event))) = &polled {
            match event.id() {
                // A broadcast (or an `ahead` reset event, whose id is the newest
                // broadcast's).
                Some(id) => {
                    if let Some(seq) = self.channel.adapter().parse_event_id(id) {
                        self.position = Some(seq + 1);
                    }
                }
                // eric's own events without an id (the reset that leads a replay, the
                // closed event) deliver no dispatch.
                None if matches!(
                    event.event(),
                    Some(eric_prefabs::MESSAGE_TYPE_RESET | eric_core::MESSAGE_TYPE_CLOSED)
                ) => {}
                // A dispatch: handed to the connection, so it leaves the queue in Redis.
                None => {
                    let delivered = self
                        .pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .pop_front();
                    if let Some(id) = delivered {
                        self.acknowledge(id);
                    }
                }
            }
        }
        polled
    }
}

impl ListenerStream {
    fn acknowledge(&self, id: EntryId) {
        // Checked first: marking a sender as running with none started would stop
        // every later acknowledgement of this stream.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Polled outside tokio: it stays queued, and comes again (at least once).
            return;
        };
        let start = {
            let mut acks = self.acks.lock().unwrap_or_else(PoisonError::into_inner);
            acks.newest = Some(id);
            !std::mem::replace(&mut acks.sending, true)
        };
        if !start {
            return; // the running sender takes it
        }
        let (cluster, acks, queue) = (
            self.cluster.clone(),
            Arc::clone(&self.acks),
            self.queue.clone(),
        );
        runtime.spawn(async move {
            loop {
                let newest = {
                    let mut acks = acks.lock().unwrap_or_else(PoisonError::into_inner);
                    let newest = acks.newest.take();
                    acks.sending = newest.is_some();
                    newest
                };
                let Some(id) = newest else {
                    return;
                };
                cluster.ack(&queue, id).await;
            }
        });
    }
}

impl Drop for ListenerStream {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (cluster, channel) = (self.cluster.clone(), self.channel.id().to_owned());
        let (listener, attach, position) = (
            std::mem::take(&mut self.listener_id),
            self.attach,
            self.position,
        );
        runtime.spawn(async move { cluster.detach(&channel, &listener, attach, position).await });
    }
}

impl RedisCluster {
    fn queue_key(&self, channel_id: &str, listener_id: &str) -> String {
        let mut key = self.key(channel_id, "queue:");
        key.push_str(listener_id);
        key
    }

    /// Stores a listener of channel `id` (with the given id, or a fresh one) that any
    /// process can dispatch to and stream from; it reads the broadcasts from the next
    /// one on. [`eric_core::Error::DuplicateListener`] if the id is taken.
    pub async fn add_listener(&self, id: &str, listener_id: Option<String>) -> Result<String> {
        let listener = match listener_id {
            Some(listener_id) => MessageQueueListener::with_id(listener_id)?,
            None => MessageQueueListener::new(),
        };
        let meta = self.key(id, "meta");
        let added: i64 = redis::Script::new(ADD)
            .key(&meta)
            .key(self.key(id, "listeners"))
            .arg(listener.id())
            .invoke_async(&mut self.inner.connection.clone())
            .await
            .map_err(storage_error("add a listener to", &meta))?;
        match added {
            1 => Ok(listener.id().to_owned()),
            0 => Err(eric_core::Error::DuplicateListener {
                listener_id: listener.id().to_owned(),
            }
            .into()),
            _ => Err(not_found(id)),
        }
    }

    /// Queues `message` for stored listener `listener_id` of channel `id`, wherever it
    /// streams. Acknowledged once Redis holds it; it stays there until a stream of the
    /// listener delivers it. [`eric_core::Error::QueueFull`] when the listener has
    /// [`ClusterSettings::capacity`](super::ClusterSettings::capacity) undelivered.
    pub async fn dispatch(&self, id: &str, listener_id: &str, message: Message) -> Result<()> {
        super::check(&message)?;
        let events = self.key(id, "events");
        let capacity = self.inner.settings.capacity.unwrap_or(0);
        let reply: redis::Value = redis::Script::new(DISPATCH)
            .key(self.key(id, "meta"))
            .key(self.key(id, "listeners"))
            .key(self.queue_key(id, listener_id))
            .key(&events)
            .arg(listener_id)
            .arg(message.message_type())
            .arg(message.payload_json())
            .arg(self.stream_length())
            .arg(capacity)
            .invoke_async(&mut self.inner.connection.clone())
            .await
            .map_err(storage_error("dispatch to", &events))?;
        match reply {
            redis::Value::Int(-1) => Err(not_found(id)),
            redis::Value::Int(-2) => Err(no_listener(listener_id)),
            redis::Value::Int(_) => Err(eric_core::Error::QueueFull {
                listener_id: listener_id.to_owned(),
                capacity,
            }
            .into()),
            _ => Ok(()),
        }
    }

    /// Removes stored listener `listener_id` of channel `id` and its queue; its stream,
    /// on whichever process, ends.
    pub async fn remove_listener(&self, id: &str, listener_id: &str) -> Result<()> {
        let listeners = self.key(id, "listeners");
        let removed: i64 = redis::Script::new(REMOVE_LISTENER)
            .key(self.key(id, "meta"))
            .key(&listeners)
            .key(self.queue_key(id, listener_id))
            .key(self.key(id, "events"))
            .arg(listener_id)
            .arg(REMOVED)
            .arg(self.stream_length())
            .invoke_async(&mut self.inner.connection.clone())
            .await
            .map_err(storage_error("remove a listener from", &listeners))?;
        if removed == 0 {
            return Err(no_listener(listener_id));
        }
        Ok(())
    }

    /// Streams stored listener `listener_id` of channel `id` on this process: the
    /// broadcasts from where its last stream (on any process) left off, or after
    /// `last_event_id` when the client gives one, and its undelivered dispatches, in
    /// the order they were made. A stream of the same listener on this process ends
    /// (the new one takes over).
    pub async fn message_stream(
        &self,
        id: &str,
        listener_id: &str,
        last_event_id: Option<&str>,
    ) -> Result<ListenerStream> {
        let mut retried = false;
        loop {
            let served = self.served(id).await?;
            match self.attach(&served, id, listener_id, last_event_id).await {
                // Let go of (idle) between the lookup and the attach: load it again.
                Err(err) if !retried && super::closed_meanwhile(&err) => retried = true,
                stream => return stream,
            }
        }
    }

    async fn attach(
        &self,
        served: &Served,
        id: &str,
        listener_id: &str,
        last_event_id: Option<&str>,
    ) -> Result<ListenerStream> {
        let listeners = self.key(id, "listeners");
        let next: Option<u64> = redis::cmd("HGET")
            .arg(&listeners)
            .arg(listener_id)
            .query_async(&mut self.inner.connection.clone())
            .await
            .map_err(storage_error("load a listener of", &listeners))?;
        let Some(next) = next else {
            return Err(no_listener(listener_id));
        };
        let channel = &served.channel;
        let resume = match last_event_id.filter(|last| !last.is_empty()) {
            Some(last) => last.to_owned(),
            None => channel.adapter().event_id(next.saturating_sub(1)),
        };
        served.catch_up(Some(&resume)).await;

        // Locked until the listener is attached: the reader applies nothing meanwhile,
        // so every dispatch is queued here exactly once, from the list or by the reader.
        let mut read = served.read.lock().await;
        let queue = self.queue_key(id, listener_id);
        let attach = self.inner.loads.fetch_add(1, Ordering::Relaxed);
        let token = format!("{}:{attach}", self.inner.process);
        let reply: redis::Value = redis::Script::new(ATTACH)
            .key(self.key(id, "meta"))
            .key(&listeners)
            .key(&queue)
            .key(self.key(id, "events"))
            .arg(listener_id)
            .arg(MOVED)
            .arg(&token)
            .arg(self.stream_length())
            .invoke_async(&mut self.inner.connection.clone())
            .await
            .map_err(storage_error("load the queue of", &queue))?;
        let Ok(mut queued) = redis::from_redis_value::<Vec<String>>(reply) else {
            return Err(no_listener(listener_id));
        };
        let since = match queued.is_empty() {
            false => parse_entry_id(&queued.remove(0)),
            true => None,
        };
        let Some(since) = since else {
            return Err(no_listener(listener_id));
        };
        let _ = channel.remove_listener(listener_id);
        channel.register_listener(Arc::new(MessageQueueListener::with_id(listener_id)?))?;
        let inner = channel.message_stream_resuming(listener_id, Some(&resume))?;
        let attached = Attached {
            upto: read.last,
            attach,
            token,
            since,
            pending: Pending::default(),
        };
        for item in &queued {
            match parse_queued(item) {
                // Newer ones the reader has yet to apply: it queues them.
                Some((entry, message)) if entry <= read.last => {
                    attached.deliver(channel, listener_id, entry, message);
                }
                Some(_) => {}
                None => tracing::warn!(%queue, "skipped a queued dispatch eric did not write"),
            }
        }
        let stream = ListenerStream {
            inner,
            cluster: self.clone(),
            channel: channel.clone(),
            listener_id: listener_id.to_owned(),
            queue,
            attach: attached.attach,
            pending: Arc::clone(&attached.pending),
            acks: Arc::default(),
            position: channel.adapter().parse_event_id(&resume).map(|seq| seq + 1),
        };
        read.attached.insert(listener_id.to_owned(), attached);
        Ok(stream)
    }

    async fn ack(&self, queue: &str, (seq, n): EntryId) {
        let acked: redis::RedisResult<i64> = redis::Script::new(ACK)
            .key(queue)
            .arg(seq)
            .arg(n)
            .invoke_async(&mut self.inner.connection.clone())
            .await;
        if let Err(err) = acked {
            // It is delivered again by the listener's next stream: at least once.
            tracing::warn!(%queue, %err, "could not acknowledge a delivered dispatch");
        }
    }

    /// A stream of a stored listener ended: its local copy goes (unless a newer stream
    /// took it over) and its position is recorded for its next stream.
    async fn detach(&self, id: &str, listener_id: &str, attach: u64, position: Option<u64>) {
        if let Some(served) = self.inner.get(id) {
            let mut read = served.read.lock().await;
            if read
                .attached
                .get(listener_id)
                .is_some_and(|a| a.attach == attach)
            {
                read.attached.remove(listener_id);
                let _ = served.channel.remove_listener(listener_id);
            }
        }
        let Some(position) = position else {
            return;
        };
        let listeners = self.key(id, "listeners");
        let saved: redis::RedisResult<i64> = redis::Script::new(SAVE_POSITION)
            .key(&listeners)
            .arg(listener_id)
            .arg(position)
            .invoke_async(&mut self.inner.connection.clone())
            .await;
        if let Err(err) = saved {
            // Its next stream starts where the previous record says: broadcasts since
            // then come again (at least once), unless the client sends Last-Event-ID.
            tracing::warn!(%listeners, listener_id, %err, "could not record a listener's position");
        }
    }
}

/// A queued dispatch: `<entry id>\n<type>\n<payload>`.
fn parse_queued(item: &str) -> Option<(EntryId, Message)> {
    let mut parts = item.splitn(3, '\n');
    let entry = parse_entry_id(parts.next()?)?;
    let message_type = parts.next()?.to_owned();
    let payload = parts.next()?.to_owned();
    Some((entry, decode(message_type, payload)))
}

fn no_listener(listener_id: &str) -> Error {
    eric_core::Error::InvalidListener {
        listener_id: listener_id.to_owned(),
    }
    .into()
}
