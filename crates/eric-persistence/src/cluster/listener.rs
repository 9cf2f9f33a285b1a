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
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use eric_core::{Message, MessageQueueListener};
use eric_prefabs::SseChannel;

use super::listener_stream::ListenerStream;
use super::reader::{decode, parse_entry_id};
use super::{EntryId, RedisCluster, Served, not_found, scripts, storage_error};
use crate::error::{Error, Result};

/// The message type of the entry that removes a stored listener everywhere.
pub(super) const REMOVED: &str = "\u{0}removed";

/// The message type of the entry that says a stored listener now streams elsewhere:
/// streams of it attached before end.
pub(super) const MOVED: &str = "\u{0}moved";

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

pub(super) type Pending = Arc<std::sync::Mutex<VecDeque<EntryId>>>;

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

impl RedisCluster {
    fn queue_key(&self, channel_id: &str, listener_id: &str) -> String {
        let mut key = self.key(channel_id, "queue:");
        key.push_str(listener_id);
        key
    }

    /// Stores a listener of channel `id` (with the given id, or a fresh one) that any
    /// process can dispatch to and stream from; it reads the broadcasts from the next
    /// one on. [`eric_core::Error::DuplicateListener`] if the id is taken.
    pub(super) async fn add_stored_listener(
        &self,
        id: &str,
        listener_id: Option<String>,
    ) -> Result<String> {
        let listener = match listener_id {
            Some(listener_id) => MessageQueueListener::with_id(listener_id)?,
            None => MessageQueueListener::new(),
        };
        let meta = self.key(id, "meta");
        let added: i64 = scripts::ADD_LISTENER
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
    /// listener delivers it. [`eric_core::Error::QueueFull`] when the listener has the
    /// channel's capacity undelivered.
    pub(super) async fn dispatch_stored(
        &self,
        id: &str,
        listener_id: &str,
        message: Message,
    ) -> Result<()> {
        super::check(&message)?;
        let events = self.key(id, "events");
        let reply: redis::Value = self
            .inner
            .scripts
            .dispatch
            .key(self.key(id, "meta"))
            .key(self.key(id, "listeners"))
            .key(self.queue_key(id, listener_id))
            .key(&events)
            .arg(listener_id)
            .arg(message.message_type())
            .arg(message.payload_json())
            .invoke_async(&mut self.inner.connection.clone())
            .await
            .map_err(storage_error("dispatch to", &events))?;
        match reply {
            redis::Value::Int(-1) => Err(not_found(id)),
            redis::Value::Int(-2) => Err(no_listener(listener_id)),
            redis::Value::Array(_) => {
                let (_, capacity) =
                    redis::from_redis_value::<(i64, usize)>(reply).unwrap_or_default();
                Err(eric_core::Error::QueueFull {
                    listener_id: listener_id.to_owned(),
                    capacity,
                }
                .into())
            }
            _ => Ok(()),
        }
    }

    /// Removes stored listener `listener_id` of channel `id` and its queue; its stream,
    /// on whichever process, ends.
    pub(super) async fn remove_stored_listener(&self, id: &str, listener_id: &str) -> Result<()> {
        let listeners = self.key(id, "listeners");
        let removed: i64 = self
            .inner
            .scripts
            .remove_listener
            .key(self.key(id, "meta"))
            .key(&listeners)
            .key(self.queue_key(id, listener_id))
            .key(self.key(id, "events"))
            .arg(listener_id)
            .arg(REMOVED)
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
    pub(super) async fn stream_stored(
        &self,
        id: &str,
        listener_id: &str,
        last_event_id: Option<&str>,
    ) -> Result<ListenerStream> {
        self.on_served(id, |served| async move {
            self.attach(&served, id, listener_id, last_event_id).await
        })
        .await
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

        // What an older stream of the listener here delivered leaves the queue first.
        let queue = self.queue_key(id, listener_id);
        self.inner.acks_in_flight.settle(&queue).await;
        // Locked until the listener is attached: the reader applies nothing meanwhile,
        // so every dispatch is queued here exactly once, from the list or by the reader.
        let mut read = served.read.lock().await;
        let attach = self.inner.loads.fetch_add(1, Ordering::Relaxed);
        let token = format!("{}:{attach}", self.inner.process);
        let reply: redis::Value = self
            .inner
            .scripts
            .attach
            .key(self.key(id, "meta"))
            .key(&listeners)
            .key(&queue)
            .key(self.key(id, "events"))
            .arg(listener_id)
            .arg(MOVED)
            .arg(&token)
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

    pub(super) async fn ack(&self, queue: &str, (seq, n): EntryId) {
        let acked: redis::RedisResult<i64> = scripts::ACK
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
    pub(super) async fn detach(
        &self,
        id: &str,
        listener_id: &str,
        attach: u64,
        position: Option<u64>,
    ) {
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
        let saved: redis::RedisResult<i64> = scripts::SAVE_POSITION
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
