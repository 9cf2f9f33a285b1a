//! Scale-out: several processes serve the same SSE channels through Redis Streams.
//!
//! Each channel's keys share one hash tag, `{<id>}`, so that they live in one Redis
//! Cluster slot and one script can touch them all: `<prefix>cluster:{<id>}:meta` (a
//! hash: epoch, last sequence number, settings), `:events` (a stream, capped with
//! `MAXLEN ~`), `:listeners` (a hash: each stored listener's next broadcast) and
//! `:queue:<listener>` (a list: its dispatches not yet delivered). Publishing is one
//! script: the channel's sequence number goes up by one and the entry is added with the
//! id `<seq>-0`, atomically, so that every process sees one order and the SSE event id
//! `<epoch>-<seq>` is the same everywhere. A dispatch after broadcast `seq` is the
//! entry `<seq>-<n>` (n > 0), addressed with a `to` field, and is also queued in the
//! listener's list until a stream delivers it. Each process that serves a channel reads
//! its stream once into its local [`SseChannel`] ([`served`]), whose event ids are then
//! the cluster's: a client resumes with `Last-Event-ID` on any process. It reads it
//! from notifications the scripts publish with every entry ([`feed`], one subscriber
//! connection per Redis node for all channels), and from the stream itself after
//! each subscription or loss ([`reader`]): a process holds two connections per node,
//! however many channels it serves.

mod acks;
mod feed;
mod listener;
mod listener_stream;
mod reader;
mod scripts;
mod served;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use eric_core::{ChannelContainer, Message};
use eric_prefabs::{SseAdapter, SseChannel};
use tokio::sync::{Mutex, watch};

use crate::channels::{
    ChannelInfo, ChannelSettings, EventStream, Published, SseChannels, boxed, end_streams,
};
use crate::error::{Error, Result};
use crate::redis_connection::RedisConnection;

use listener::Attached;

/// The message type of the entry that ends a channel everywhere.
const CLOSED: &str = "\u{0}closed";

/// How often a process looks for channels it serves that have no listener left.
const BLOCK: Duration = Duration::from_secs(5);

/// How long a resuming client waits for this process to read up to its
/// `Last-Event-ID` (read on another process a moment ago).
const CATCH_UP: Duration = Duration::from_secs(2);

/// Channels shared by every process connected to the same Redis or Redis Cluster
/// (feature `redis`): the [`SseChannels`] backend for running several processes.
///
/// A process serves a channel by loading it into its own [`ChannelContainer`] (the
/// first time a request names it) and reading its stream from then on; everything
/// local (listeners, streams, replay) is the ordinary [`SseChannel`]. A process that has
/// had no listener on a channel for a while stops reading it and lets it go. A
/// channel's settings are stored with it, so every process builds the same copy.
///
/// A process holds two Redis connections per node (one for commands, one that
/// receives every served channel's new entries), however many channels it serves.
///
/// Two kinds of listener: [`subscribe`](SseChannels::subscribe) gives a stream whose
/// listener lives and dies with it on this process (what a browser's `EventSource`
/// wants; it resumes anywhere with `Last-Event-ID`);
/// [`add_listener`](SseChannels::add_listener) stores a listener in Redis, which any
/// process can [`dispatch`](SseChannels::dispatch) to and
/// [`message_stream`](SseChannels::message_stream) from, its dispatches kept in Redis
/// until a stream delivers them (at most `capacity` of them, when the channel is
/// bounded: then [`eric_core::Error::QueueFull`]).
///
/// Where it differs from the other backends: [`Published::listeners`] is `None` (each
/// process knows only its own listeners), and a bounded channel's
/// [`OverflowPolicy::Reject`](eric_core::OverflowPolicy::Reject) acts as `Disconnect` on
/// each process (a broadcast Redis acknowledged cannot be refused by one process: its
/// local streams would miss it silently).
///
/// ```no_run
/// use eric_core::Message;
/// use eric_persistence::{ChannelSettings, RedisCluster, SseChannels};
///
/// # async fn run() -> eric_persistence::Result<()> {
/// // Each process connects; they share every channel.
/// let cluster = RedisCluster::connect("redis://127.0.0.1:6379").await?;
/// let id = cluster.create(ChannelSettings::with_id("news")).await?;
/// let mut events = cluster.subscribe(&id, None).await?; // on any process
/// cluster.broadcast(&id, Message::new("headline", "hello")).await?; // on any other
///
/// // A stored listener: made here, dispatched to and streamed from any process.
/// let listener = cluster.add_listener(&id).await?;
/// cluster.dispatch(&id, &listener, Message::new("task", 7)).await?;
/// let mut tasks = cluster.message_stream(&id, &listener, None).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisCluster {
    inner: Arc<Inner>,
}

struct Inner {
    connection: RedisConnection,
    /// The notifications of every channel this process serves.
    feed: Arc<feed::Feed>,
    /// The scripts that append entries, as this Redis takes their notifications.
    scripts: &'static scripts::Appending,
    prefix: String,
    /// The channels this process serves, as a server looks them up.
    container: Arc<ChannelContainer<SseAdapter>>,
    /// The channels this process serves, with how far their reader has read.
    served: RwLock<HashMap<String, Served>>,
    /// Numbers each loaded copy, so that a reader lets go of its own copy only; and
    /// each attached stored listener, so that a stream detaches its own only.
    loads: AtomicU64,
    /// This process's name in the entries it writes about itself.
    process: String,
    /// Acknowledgements of delivered dispatches not yet in Redis, per listener.
    acks_in_flight: acks::AcksInFlight,
}

#[derive(Clone)]
struct Served {
    channel: SseChannel,
    /// The next sequence number the local channel expects.
    next: watch::Receiver<u64>,
    /// What the reader has applied, and the stored listeners streaming here; locked
    /// while the reader applies entries and while a stored listener attaches.
    read: Arc<Mutex<ReadState>>,
    reader: tokio::task::AbortHandle,
    load: u64,
    /// The channel's stream key, the name of its notifications.
    stream: Arc<str>,
    /// For how many sweeps in a row it has had no local listener.
    idle: Arc<std::sync::atomic::AtomicU8>,
}

/// A stream entry's id, `<seq>-<n>`: broadcast `seq` when `n` is 0, else the `n`th
/// dispatch after it.
type EntryId = (u64, u64);

struct ReadState {
    /// The newest entry applied to the local channel.
    last: EntryId,
    /// Stored listeners streaming on this process.
    attached: HashMap<String, Attached>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for served in self
            .served
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            served.reader.abort();
        }
    }
}

/// Maps a Redis failure of `operation` on `key` to [`Error::Storage`].
fn storage_error(operation: &'static str, key: &str) -> impl FnOnce(redis::RedisError) -> Error {
    move |source| crate::redis_storage::storage_error(operation, key, source)
}

impl RedisCluster {
    /// Connects to the Redis at `url`, or to the Redis Cluster whose seed nodes `url`
    /// lists separated by commas.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with_prefix(url, "eric:").await
    }

    /// [`connect`](Self::connect), with keys under `prefix`.
    pub async fn connect_with_prefix(url: &str, prefix: &str) -> Result<Self> {
        let connection = crate::redis_connection::connect(url).await?;
        let scripts = match connection {
            RedisConnection::Cluster(_) => &*scripts::SHARDED,
            RedisConnection::Managed(_) => &*scripts::ONE_SERVER,
        };
        let feed = Arc::new(feed::Feed::connect(url).await?);
        let cluster = RedisCluster {
            inner: Arc::new(Inner {
                connection,
                feed,
                scripts,
                prefix: prefix.to_owned(),
                container: Arc::default(),
                served: RwLock::default(),
                loads: AtomicU64::new(0),
                process: uuid::Uuid::new_v4().simple().to_string(),
                acks_in_flight: acks::AcksInFlight::default(),
            }),
        };
        tokio::spawn(served::sweep_idle(Arc::downgrade(&cluster.inner)));
        Ok(cluster)
    }

    fn acks_in_flight(&self) -> &acks::AcksInFlight {
        &self.inner.acks_in_flight
    }

    fn key(&self, id: &str, kind: &str) -> String {
        // The id between braces is the hash tag: a channel's keys share a slot. Braces
        // and the escape character in ids are escaped so that no id ends the tag early.
        let mut key = format!("{}cluster:{{", self.inner.prefix);
        escape_tag_into(&mut key, id);
        key.push_str("}:");
        key.push_str(kind);
        key
    }

    fn index(&self) -> String {
        format!("{}cluster-channels", self.inner.prefix)
    }
}

#[async_trait]
impl SseChannels for RedisCluster {
    async fn create(&self, mut settings: ChannelSettings) -> Result<String> {
        let id = settings
            .id
            .get_or_insert_with(|| uuid::Uuid::new_v4().to_string())
            .clone();
        // Checked as a local channel would be, before anything is stored.
        settings.sse_builder().build()?;
        let meta = self.key(&id, "meta");
        let epoch = format!("{:08x}", uuid::Uuid::new_v4().as_u128() as u32);
        let json = serde_json::to_string(&settings).map_err(|err| Error::Corrupt {
            key: meta.clone(),
            reason: format!("settings: {err}"),
        })?;
        // The stream keeps twice the replay window, so that what a process keeps for
        // resuming clients is still in Redis for a process that loads the channel.
        let maxlen = settings.replay_or_default().max(64) * 2;
        let mut connection = self.inner.connection.clone();
        let created: i64 = scripts::CREATE
            .key(&meta)
            .arg(&epoch)
            .arg(json)
            .arg(maxlen)
            .arg(settings.capacity.unwrap_or(0))
            .invoke_async(&mut connection)
            .await
            .map_err(storage_error("create", &meta))?;
        if created == 0 {
            return Err(eric_core::Error::DuplicateChannel { channel_id: id }.into());
        }
        let index = self.index();
        redis::cmd("SADD")
            .arg(&index)
            .arg(&id)
            .query_async::<()>(&mut connection)
            .await
            .map_err(storage_error("index", &index))?;
        Ok(id)
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let (meta, events) = (self.key(id, "meta"), self.key(id, "events"));
        let mut connection = self.inner.connection.clone();
        let removed: i64 = self
            .inner
            .scripts
            .remove
            .key(&meta)
            .key(&events)
            .key(self.key(id, "listeners"))
            .arg(CLOSED)
            .arg(self.key(id, "queue:"))
            .invoke_async(&mut connection)
            .await
            .map_err(storage_error("remove", &meta))?;
        let index = self.index();
        redis::cmd("SREM")
            .arg(&index)
            .arg(id)
            .query_async::<()>(&mut connection)
            .await
            .map_err(storage_error("index", &index))?;
        self.inner.let_go(id, None);
        if removed == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }

    async fn ids(&self) -> Result<Vec<String>> {
        let index = self.index();
        redis::cmd("SMEMBERS")
            .arg(&index)
            .query_async(&mut self.inner.connection.clone())
            .await
            .map_err(storage_error("list", &index))
    }

    async fn len(&self) -> Result<usize> {
        let index = self.index();
        redis::cmd("SCARD")
            .arg(&index)
            .query_async(&mut self.inner.connection.clone())
            .await
            .map_err(storage_error("count", &index))
    }

    async fn info(&self, id: &str) -> Result<ChannelInfo> {
        Ok(ChannelInfo::of(&self.serve(id).await?))
    }

    async fn add_listener(&self, id: &str) -> Result<String> {
        self.add_stored_listener(id, None).await
    }

    async fn add_listener_with_id(&self, id: &str, listener_id: &str) -> Result<()> {
        self.add_stored_listener(id, Some(listener_id.to_owned()))
            .await
            .map(drop)
    }

    async fn remove_listener(&self, id: &str, listener_id: &str) -> Result<()> {
        self.remove_stored_listener(id, listener_id).await
    }

    /// Acknowledged once Redis holds it.
    async fn broadcast(&self, id: &str, message: Message) -> Result<Published> {
        check(&message)?;
        // This process's budget admits what it publishes; every copy then takes it.
        if let Some(budget) = self.local().memory_budget() {
            budget.admit(message.retained_bytes())?;
        }
        let (meta, events) = (self.key(id, "meta"), self.key(id, "events"));
        let reply: redis::Value = self
            .inner
            .scripts
            .publish
            .key(&meta)
            .key(&events)
            .arg(message.message_type())
            .arg(message.payload_json())
            .invoke_async(&mut self.inner.connection.clone())
            .await
            .map_err(storage_error("publish to", &events))?;
        let Ok((seq, epoch)) = redis::from_redis_value::<(u64, String)>(reply) else {
            return Err(not_found(id));
        };
        Ok(Published {
            seq,
            event_id: format!("{epoch}-{seq}"),
            listeners: None,
        })
    }

    async fn dispatch(&self, id: &str, listener_id: &str, message: Message) -> Result<()> {
        self.dispatch_stored(id, listener_id, message).await
    }

    async fn message_stream(
        &self,
        id: &str,
        listener_id: &str,
        last_event_id: Option<&str>,
    ) -> Result<EventStream> {
        Ok(boxed(
            self.stream_stored(id, listener_id, last_event_id).await?,
        ))
    }

    /// A client moving from another process resumes with its `Last-Event-ID` even if
    /// this process has not read that far yet: it waits a moment for it.
    async fn subscribe(&self, id: &str, last_event_id: Option<&str>) -> Result<EventStream> {
        Ok(boxed(self.subscribe_here(id, last_event_id).await?))
    }

    async fn shutdown(&self) -> Result<()> {
        end_streams(&self.inner.container);
        Ok(())
    }

    fn local(&self) -> &ChannelContainer<SseAdapter> {
        &self.inner.container
    }
}

/// Appends `id` with `%`, `{` and `}` escaped, so that it cannot end a hash tag.
fn escape_tag_into(key: &mut String, id: &str) {
    for c in id.chars() {
        match c {
            '%' => key.push_str("%25"),
            '{' => key.push_str("%7B"),
            '}' => key.push_str("%7D"),
            c => key.push(c),
        }
    }
}

/// Checks that a producer may send `message` (an SSE event name, not one of eric's
/// own, which include the entries starting with NUL that cluster mode writes).
fn check(message: &Message) -> Result<()> {
    Ok(eric_prefabs::check_message(message)?)
}

/// [`Error::ChannelNotFound`] for channel `id`.
fn not_found(id: &str) -> Error {
    Error::ChannelNotFound {
        channel_id: id.to_owned(),
    }
}

/// Whether `err` says the local copy was closed after it was looked up (let go of).
fn closed_meanwhile(err: &Error) -> bool {
    matches!(err, Error::Core(eric_core::Error::ChannelClosed { .. }))
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("prefix", &self.inner.prefix)
            .field("served_here", &self.served_here())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_id_cannot_end_the_hash_tag_early_or_reach_another_channels_keys() {
        let key = |id: &str| {
            let mut key = String::from("eric:cluster:{");
            escape_tag_into(&mut key, id);
            key
        };
        assert_eq!(key("news"), "eric:cluster:{news");
        assert_eq!(key("a}b{c"), "eric:cluster:{a%7Db%7Bc");
        // `%` is escaped too, so an id spelling an escape stays distinct.
        assert_ne!(key("a%7Db"), key("a}b"));
    }
}
