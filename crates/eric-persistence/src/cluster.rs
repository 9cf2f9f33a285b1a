//! Scale-out: several processes serve the same SSE channels through Redis Streams.
//!
//! Each channel is two Redis keys with one hash tag, `<prefix>cluster:{<id>}:meta` (a
//! hash: epoch, last sequence number, settings) and `<prefix>cluster:{<id>}:events` (a
//! stream, capped with `MAXLEN ~`), so that they live in one Redis Cluster slot and a
//! script can touch both. Publishing is one script: the channel's sequence number goes
//! up by one and the entry is added with the id `0-<seq>`, atomically, so that every
//! process sees one order and the SSE event id `<epoch>-<seq>` is the same everywhere.
//! Each process that serves a channel reads its stream once (`XREAD BLOCK` on a
//! connection of its own) and broadcasts each entry into its local [`SseChannel`],
//! whose event ids are then the cluster's: a client resumes with `Last-Event-ID` on any
//! process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use eric_core::{ChannelContainer, Message, OverflowPolicy};
use eric_prefabs::{SseAdapter, SseChannel, SseStream};
use redis::AsyncConnectionConfig;
use redis::aio::ConnectionManager;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use tokio::sync::watch;

use crate::error::{Error, Result};

/// The message type of the entry that ends a channel everywhere.
const CLOSED: &str = "\u{0}closed";

/// How long a reader blocks before it looks whether its channel is still wanted.
const BLOCK: Duration = Duration::from_secs(5);

/// How long a resuming client waits for this process to read up to its
/// `Last-Event-ID` (read on another process a moment ago).
const CATCH_UP: Duration = Duration::from_secs(2);

/// Adds an entry: `seq` goes up by one, the entry gets the id `0-<seq>`. Returns
/// `{seq, epoch}`, or `-1` when the channel does not exist.
const PUBLISH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '0-' .. seq, 'type', ARGV[1], 'payload', ARGV[2])
return {seq, redis.call('HGET', KEYS[1], 'epoch')}
";

/// Creates the channel's meta hash unless it exists: 1 created, 0 taken.
const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'seq', 0)
return 1
";

/// Ends a channel: a last entry that closes every process's copy, then the meta hash
/// goes and the stream expires (readers that were away a moment still see the end).
const REMOVE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], '0-' .. seq, 'type', ARGV[1], 'payload', 'null')
redis.call('DEL', KEYS[1])
redis.call('EXPIRE', KEYS[2], 60)
return 1
";

/// How the channels of a cluster behave (the same on every process).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClusterSettings {
    /// Broadcasts each process keeps for resuming clients (default 1024); the Redis
    /// stream keeps at least as many.
    pub replay: usize,
    /// What each local listener may have unread (default `None`: unbounded).
    pub capacity: Option<usize>,
    /// What happens to a listener over `capacity`.
    pub overflow: OverflowPolicy,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            replay: eric_prefabs::DEFAULT_REPLAY,
            capacity: None,
            overflow: OverflowPolicy::Disconnect,
        }
    }
}

impl ClusterSettings {
    /// Sets the replay window.
    pub fn replay(mut self, broadcasts: usize) -> Self {
        self.replay = broadcasts;
        self
    }

    /// Bounds what each local listener may have unread.
    pub fn capacity(mut self, capacity: Option<usize>, overflow: OverflowPolicy) -> Self {
        self.capacity = capacity;
        self.overflow = overflow;
        self
    }
}

/// What a publish returns: the event's sequence number and id.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// The channel's sequence number of the event.
    pub seq: u64,
    /// Its SSE event id, the same on every process.
    pub event_id: String,
}

/// Channels shared by every process connected to the same Redis (feature `redis`).
///
/// A process serves a channel by loading it into its [`ChannelContainer`] (the first
/// time a request names it) and reading its stream from then on; everything local
/// (listeners, streams, replay) is the ordinary [`SseChannel`]. A process that has had
/// no listener on a channel for a while stops reading it and lets it go.
///
/// ```no_run
/// use std::sync::Arc;
/// use eric_core::{ChannelContainer, Message};
/// use eric_persistence::{ClusterSettings, RedisCluster};
///
/// # async fn run() -> eric_persistence::Result<()> {
/// // Two processes: each connects with its own container.
/// let here = Arc::new(ChannelContainer::new());
/// let cluster = RedisCluster::connect("redis://127.0.0.1:6379", ClusterSettings::default(), here).await?;
/// let id = cluster.create(Some("news".into())).await?;
/// let mut events = cluster.subscribe(&id, None).await?; // on any process
/// cluster.publish(&id, Message::new("headline", "hello")).await?; // on any other
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisCluster {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    connection: ConnectionManager,
    prefix: String,
    settings: ClusterSettings,
    container: Arc<ChannelContainer<SseAdapter>>,
    /// The channels this process serves, with how far their reader has read.
    served: RwLock<HashMap<String, Served>>,
    /// Numbers each loaded copy, so that a reader lets go of its own copy only.
    loads: AtomicU64,
}

#[derive(Clone)]
struct Served {
    channel: SseChannel,
    /// The next sequence number the local channel expects.
    next: watch::Receiver<u64>,
    reader: tokio::task::AbortHandle,
    load: u64,
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
    /// Connects to the Redis at `url`; channels this process serves are registered in
    /// `container` (the one the server looks channels up in).
    pub async fn connect(
        url: &str,
        settings: ClusterSettings,
        container: Arc<ChannelContainer<SseAdapter>>,
    ) -> Result<Self> {
        Self::connect_with_prefix(url, "eric:", settings, container).await
    }

    /// [`connect`](Self::connect), with keys under `prefix`.
    pub async fn connect_with_prefix(
        url: &str,
        prefix: &str,
        settings: ClusterSettings,
        container: Arc<ChannelContainer<SseAdapter>>,
    ) -> Result<Self> {
        let (client, connection) = crate::redis_storage::connect(url).await?;
        Ok(RedisCluster {
            inner: Arc::new(Inner {
                client,
                connection,
                prefix: prefix.to_owned(),
                settings,
                container,
                served: RwLock::default(),
                loads: AtomicU64::new(0),
            }),
        })
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

    /// Creates a channel (a fresh id unless `id` is given) for every process;
    /// [`eric_core::Error::DuplicateChannel`] when the id is taken.
    pub async fn create(&self, id: Option<String>) -> Result<String> {
        let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        // Checked as a local channel would be, before anything is stored.
        SseChannel::builder().id(id.clone()).build()?;
        let meta = self.key(&id, "meta");
        let epoch = format!("{:08x}", uuid::Uuid::new_v4().as_u128() as u32);
        let mut connection = self.inner.connection.clone();
        let created: i64 = redis::Script::new(CREATE)
            .key(&meta)
            .arg(&epoch)
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

    /// The ids of every channel of the cluster.
    pub async fn ids(&self) -> Result<Vec<String>> {
        let index = self.index();
        redis::cmd("SMEMBERS")
            .arg(&index)
            .query_async(&mut self.inner.connection.clone())
            .await
            .map_err(storage_error("list", &index))
    }

    /// How many channels the cluster holds.
    pub async fn len(&self) -> Result<usize> {
        let index = self.index();
        redis::cmd("SCARD")
            .arg(&index)
            .query_async(&mut self.inner.connection.clone())
            .await
            .map_err(storage_error("count", &index))
    }

    /// Broadcasts `message` to the channel's listeners on every process. Acknowledged
    /// once Redis holds it.
    pub async fn publish(&self, id: &str, message: Message) -> Result<Published> {
        if message.message_type() == CLOSED {
            return Err(eric_core::Error::InvalidId {
                id: message.message_type().to_owned(),
                reason: "this message type is reserved",
            }
            .into());
        }
        let (meta, events) = (self.key(id, "meta"), self.key(id, "events"));
        let reply: redis::Value = redis::Script::new(PUBLISH)
            .key(&meta)
            .key(&events)
            .arg(message.message_type())
            .arg(message.payload_json())
            .arg(self.inner.settings.replay.max(64) * 2)
            .invoke_async(&mut self.inner.connection.clone())
            .await
            .map_err(storage_error("publish to", &events))?;
        let (seq, epoch): (u64, String) = match redis::from_redis_value(reply) {
            Ok(pair) => pair,
            Err(_) => {
                return Err(Error::ChannelNotFound {
                    channel_id: id.to_owned(),
                });
            }
        };
        Ok(Published {
            seq,
            event_id: format!("{epoch}-{seq}"),
        })
    }

    /// Removes the channel everywhere: every process's streams get the closed message
    /// and end.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let (meta, events) = (self.key(id, "meta"), self.key(id, "events"));
        let mut connection = self.inner.connection.clone();
        let removed: i64 = redis::Script::new(REMOVE)
            .key(&meta)
            .key(&events)
            .arg(CLOSED)
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
            return Err(Error::ChannelNotFound {
                channel_id: id.to_owned(),
            });
        }
        Ok(())
    }

    /// The local copy of the channel, loaded (and its stream read from then on) if this
    /// process did not serve it yet; [`Error::ChannelNotFound`] if the cluster has no
    /// such channel.
    pub async fn serve(&self, id: &str) -> Result<SseChannel> {
        Ok(self.served(id).await?.channel)
    }

    async fn served(&self, id: &str) -> Result<Served> {
        if let Some(served) = self.inner.get(id) {
            return Ok(served);
        }
        let (meta, events) = (self.key(id, "meta"), self.key(id, "events"));
        let mut connection = self.inner.connection.clone();
        let (epoch, seq): (Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(&meta)
            .arg("epoch")
            .arg("seq")
            .query_async(&mut connection)
            .await
            .map_err(storage_error("load", &meta))?;
        let (Some(epoch), Some(seq)) = (epoch, seq) else {
            return Err(Error::ChannelNotFound {
                channel_id: id.to_owned(),
            });
        };
        // The replay window, from the newest entries the stream holds.
        let backlog: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&events)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(self.inner.settings.replay)
            .query_async(&mut connection)
            .await
            .map_err(storage_error("load", &events))?;
        let mut backlog = backlog.ids;
        backlog.reverse();
        let first = match backlog.first() {
            Some(entry) => entry_seq(entry).unwrap_or(seq + 1),
            None => seq + 1,
        };
        let settings = &self.inner.settings;
        let mut builder = SseChannel::builder()
            .id(id)
            .epoch(epoch)
            .replay(settings.replay)
            .first_seq(first);
        if let Some(capacity) = settings.capacity {
            builder = builder.capacity(capacity, settings.overflow);
        }
        let channel = builder.build()?;
        let mut last = format!("0-{}", first - 1);
        for entry in &backlog {
            if apply(&channel, entry) == Applied::Closed {
                return Err(Error::ChannelNotFound {
                    channel_id: id.to_owned(),
                });
            }
            last.clone_from(&entry.id);
        }

        let mut served = self
            .inner
            .served
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(other) = served.get(id) {
            // Another request loaded it meanwhile.
            return Ok(other.clone());
        }
        self.inner.container.register(channel.channel().clone())?;
        let (progress, next) = watch::channel(channel.channel().next_seq());
        let load = self.inner.loads.fetch_add(1, Ordering::Relaxed);
        let reader = tokio::spawn(read(
            Arc::downgrade(&self.inner),
            load,
            channel.clone(),
            events,
            last,
            progress,
        ));
        let entry = Served {
            channel,
            next,
            reader: reader.abort_handle(),
            load,
        };
        served.insert(id.to_owned(), entry.clone());
        Ok(entry)
    }

    /// Subscribes a new local listener, as [`SseChannel::subscribe`] does. A
    /// `last_event_id` this process has not read yet (the client was on a process that
    /// read it first) is waited for a moment, so that a client moving between processes
    /// resumes instead of being reset.
    pub async fn subscribe(&self, id: &str, last_event_id: Option<&str>) -> Result<SseStream> {
        let served = self.served(id).await?;
        let wanted = last_event_id.and_then(|last| served.channel.adapter().parse_event_id(last));
        if let Some(seq) = wanted {
            let mut next = served.next.clone();
            // Timing out (or the reader ending) is fine: the subscribe below then
            // answers with a reset event, as for any id it cannot resume.
            let _ = tokio::time::timeout(CATCH_UP, next.wait_for(|&next| next > seq)).await;
        }
        Ok(served.channel.subscribe(last_event_id)?)
    }

    /// How many channels this process serves now.
    pub fn served_here(&self) -> usize {
        self.inner
            .served
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Inner {
    fn get(&self, id: &str) -> Option<Served> {
        self.served
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Stops serving `id` (only the copy numbered `load`, when given): its local
    /// streams end.
    fn let_go(&self, id: &str, load: Option<u64>) {
        let mut served = self.served.write().unwrap_or_else(PoisonError::into_inner);
        let ours = served
            .get(id)
            .is_some_and(|s| load.is_none_or(|load| load == s.load));
        if ours && let Some(gone) = served.remove(id) {
            gone.reader.abort();
            let _ = self.container.rm(id);
            gone.channel.close();
        }
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

/// The sequence number in an entry id `0-<seq>`.
fn entry_seq(entry: &StreamId) -> Option<u64> {
    entry.id.split_once('-')?.1.parse().ok()
}

#[derive(PartialEq, Eq)]
enum Applied {
    Broadcast,
    Closed,
    /// An entry this copy cannot take in order (it missed some): it must be reloaded.
    Gap,
}

fn apply(channel: &SseChannel, entry: &StreamId) -> Applied {
    let message_type: String = entry.get("type").unwrap_or_default();
    if message_type == CLOSED {
        return Applied::Closed;
    }
    let expected = channel.channel().next_seq();
    match entry_seq(entry) {
        Some(seq) if seq < expected => return Applied::Broadcast, // read already
        Some(seq) if seq == expected => {}
        _ => return Applied::Gap,
    }
    let payload: String = entry.get("payload").unwrap_or_default();
    // What publish stored is a message's own JSON; anything else is not ours, and is
    // still delivered (as a string) rather than leaving a hole in the sequence.
    let payload = serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload));
    match channel.broadcast(Message::new(message_type, payload)) {
        Ok(_) => Applied::Broadcast,
        Err(_) => Applied::Closed,
    }
}

/// One process's reader of one channel's stream: each new entry broadcast into the
/// local channel, in order. Ends when the channel is removed, when it has had no local
/// listener for a whole [`BLOCK`], or when it missed entries (trimmed while it could
/// not read; the next request reloads the channel).
async fn read(
    cluster: Weak<Inner>,
    load: u64,
    channel: SseChannel,
    events: String,
    mut last: String,
    progress: watch::Sender<u64>,
) {
    let Some(client) = cluster.upgrade().map(|c| c.client.clone()) else {
        return;
    };
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(None);
    let mut connection = None;
    let mut idle_rounds = 0;
    'reading: loop {
        if channel.channel().is_closed() {
            break;
        }
        let conn = match &mut connection {
            Some(conn) => conn,
            None => match client
                .get_multiplexed_async_connection_with_config(&config)
                .await
            {
                Ok(conn) => connection.insert(conn),
                Err(err) => {
                    tracing::warn!(%events, %err, "cluster reader cannot connect; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
        };
        let reply: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1024)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&events)
            .arg(&last)
            .query_async(conn)
            .await;
        let entries: Vec<StreamId> = match reply {
            Ok(reply) => reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default(),
            Err(err) => {
                tracing::warn!(%events, %err, "cluster reader lost Redis; reconnecting");
                connection = None;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if entries.is_empty() {
            idle_rounds = if channel.channel().listener_count() == 0 {
                idle_rounds + 1
            } else {
                0
            };
            if idle_rounds >= 2 {
                break 'reading;
            }
            continue;
        }
        idle_rounds = 0;
        for entry in &entries {
            if apply(&channel, entry) != Applied::Broadcast {
                break 'reading;
            }
            last.clone_from(&entry.id);
        }
        progress.send_replace(channel.channel().next_seq());
    }
    if let Some(cluster) = cluster.upgrade() {
        cluster.let_go(channel.id(), Some(load));
    }
    channel.close();
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
