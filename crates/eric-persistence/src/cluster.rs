//! Scale-out: several processes serve the same SSE channels through Redis Streams.
//!
//! Each channel's keys share one hash tag, `{<id>}`, so that they live in one Redis
//! Cluster slot and one script can touch them all: `<prefix>cluster:{<id>}:meta` (a
//! hash: epoch, last sequence number), `:events` (a stream, capped with `MAXLEN ~`),
//! `:listeners` (a hash: each stored listener's next broadcast) and `:queue:<listener>`
//! (a list: its dispatches not yet delivered). Publishing is one script: the channel's
//! sequence number goes up by one and the entry is added with the id `<seq>-0`,
//! atomically, so that every process sees one order and the SSE event id
//! `<epoch>-<seq>` is the same everywhere. A dispatch after broadcast `seq` is the
//! entry `<seq>-<n>` (n > 0), addressed with a `to` field, and is also queued in the
//! listener's list until a stream delivers it. Each process that serves a channel reads
//! its stream once (`XREAD BLOCK` on a connection of its own) into its local
//! [`SseChannel`], whose event ids are then the cluster's: a client resumes with
//! `Last-Event-ID` on any process.

mod listener;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use eric_core::{ChannelContainer, Message, OverflowPolicy};
use eric_prefabs::{SseAdapter, SseChannel, SseStream};
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use tokio::sync::{Mutex, watch};

use crate::error::{Error, Result};
use crate::redis_connection::{Nodes, RedisConnection};

pub use listener::ListenerStream;
use listener::{Attached, MOVED, REMOVED};

/// The message type of the entry that ends a channel everywhere.
const CLOSED: &str = "\u{0}closed";

/// How long a reader blocks before it looks whether its channel is still wanted.
const BLOCK: Duration = Duration::from_secs(5);

/// How long a resuming client waits for this process to read up to its
/// `Last-Event-ID` (read on another process a moment ago).
const CATCH_UP: Duration = Duration::from_secs(2);

/// Adds an entry: `seq` goes up by one, the entry gets the id `<seq>-0`. Returns
/// `{seq, epoch}`, or `-1` when the channel does not exist.
const PUBLISH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], seq .. '-0', 'type', ARGV[1], 'payload', ARGV[2])
return {seq, redis.call('HGET', KEYS[1], 'epoch')}
";

/// Creates the channel's meta hash unless it exists: 1 created, 0 taken.
const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'seq', 0)
return 1
";

/// Ends a channel: a last entry that closes every process's copy, then the meta hash,
/// the listeners and their queues go and the stream expires (readers that were away a
/// moment still see the end). `ARGV[2]` is the queue keys' prefix.
const REMOVE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], seq .. '-0', 'type', ARGV[1], 'payload', 'null')
for _, listener in ipairs(redis.call('HKEYS', KEYS[3])) do
  redis.call('DEL', ARGV[2] .. listener)
end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('EXPIRE', KEYS[2], 60)
return 1
";

/// How the channels of a cluster behave (the same on every process).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClusterSettings {
    /// Broadcasts each process keeps for resuming clients (default 1024); the Redis
    /// stream keeps at least twice as many entries.
    pub replay: usize,
    /// What each local listener may have unread (default `None`: unbounded); also
    /// the most dispatches a stored listener's queue holds before dispatches to it are
    /// refused with [`eric_core::Error::QueueFull`].
    pub capacity: Option<usize>,
    /// What happens to a listener over `capacity`. [`OverflowPolicy::Reject`] acts as
    /// [`OverflowPolicy::Disconnect`] here: a broadcast Redis has acknowledged cannot
    /// be refused by one process (its local streams would miss it silently).
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

/// Channels shared by every process connected to the same Redis or Redis Cluster
/// (feature `redis`).
///
/// A process serves a channel by loading it into its [`ChannelContainer`] (the first
/// time a request names it) and reading its stream from then on; everything local
/// (listeners, streams, replay) is the ordinary [`SseChannel`]. A process that has had
/// no listener on a channel for a while stops reading it and lets it go.
///
/// Two kinds of listener: [`subscribe`](Self::subscribe) gives a stream whose listener
/// lives and dies with it on this process (what a browser's `EventSource` wants; it
/// resumes anywhere with `Last-Event-ID`); [`add_listener`](Self::add_listener) stores
/// a listener in Redis, which any process can [`dispatch`](Self::dispatch) to and
/// [`message_stream`](Self::message_stream) from, its dispatches kept in Redis until a
/// stream delivers them.
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
///
/// // A stored listener: made here, dispatched to and streamed from any process.
/// let listener = cluster.add_listener(&id, None).await?;
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
    nodes: Nodes,
    connection: RedisConnection,
    prefix: String,
    settings: ClusterSettings,
    container: Arc<ChannelContainer<SseAdapter>>,
    /// The channels this process serves, with how far their reader has read.
    served: RwLock<HashMap<String, Served>>,
    /// Numbers each loaded copy, so that a reader lets go of its own copy only; and
    /// each attached stored listener, so that a stream detaches its own only.
    loads: AtomicU64,
    /// This process's name in the entries it writes about itself.
    process: String,
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
    /// lists separated by commas; channels this process serves are registered in
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
        let (nodes, connection) = crate::redis_connection::connect(url).await?;
        Ok(RedisCluster {
            inner: Arc::new(Inner {
                nodes,
                connection,
                prefix: prefix.to_owned(),
                settings,
                container,
                served: RwLock::default(),
                loads: AtomicU64::new(0),
                process: uuid::Uuid::new_v4().simple().to_string(),
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
        check(&message)?;
        let (meta, events) = (self.key(id, "meta"), self.key(id, "events"));
        let reply: redis::Value = redis::Script::new(PUBLISH)
            .key(&meta)
            .key(&events)
            .arg(message.message_type())
            .arg(message.payload_json())
            .arg(self.stream_length())
            .invoke_async(&mut self.inner.connection.clone())
            .await
            .map_err(storage_error("publish to", &events))?;
        let (seq, epoch): (u64, String) = match redis::from_redis_value(reply) {
            Ok(pair) => pair,
            Err(_) => {
                return Err(not_found(id));
            }
        };
        Ok(Published {
            seq,
            event_id: format!("{epoch}-{seq}"),
        })
    }

    /// The stream's `MAXLEN ~`: twice the replay window, so that what a process keeps
    /// for resuming clients is still in Redis for a process that loads the channel.
    fn stream_length(&self) -> usize {
        self.inner.settings.replay.max(64) * 2
    }

    /// Removes the channel everywhere: every process's streams get the closed message
    /// and end; its stored listeners and their queues go.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let (meta, events) = (self.key(id, "meta"), self.key(id, "events"));
        let mut connection = self.inner.connection.clone();
        let removed: i64 = redis::Script::new(REMOVE)
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

    /// The local copy of the channel, loaded (and its stream read from then on) if this
    /// process did not serve it yet; [`Error::ChannelNotFound`] if the cluster has no
    /// such channel.
    pub async fn serve(&self, id: &str) -> Result<SseChannel> {
        Ok(self.served(id).await?.channel)
    }

    async fn served(&self, id: &str) -> Result<Served> {
        if let Some(served) = self.inner.get(id)
            && !served.channel.channel().is_closed()
        {
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
            return Err(not_found(id));
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
        // The first broadcast kept; without one, the one after the newest entry (which
        // can be newer than `seq`: entries come in while this loads).
        let newest = backlog.last().and_then(entry_id);
        let first = backlog
            .iter()
            .filter_map(entry_id)
            .find(|&(_, n)| n == 0)
            .map(|(seq, _)| seq)
            .or(newest.map(|(seq, _)| seq + 1))
            .unwrap_or(seq + 1);
        let settings = &self.inner.settings;
        let mut builder = SseChannel::builder()
            .id(id)
            .epoch(epoch)
            .replay(settings.replay)
            .first_seq(first);
        if let Some(capacity) = settings.capacity {
            let overflow = match settings.overflow {
                OverflowPolicy::Reject => OverflowPolicy::Disconnect,
                other => other,
            };
            builder = builder.capacity(capacity, overflow);
        }
        let channel = builder.build()?;
        let mut read = ReadState {
            last: newest.unwrap_or((seq, 0)),
            attached: HashMap::new(),
        };
        for entry in &backlog {
            if apply(&channel, &mut read.attached, entry) == Applied::Closed {
                return Err(not_found(id));
            }
        }

        let mut served = self
            .inner
            .served
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match served.remove(id) {
            // Another request loaded it meanwhile.
            Some(other) if !other.channel.channel().is_closed() => {
                served.insert(id.to_owned(), other.clone());
                return Ok(other);
            }
            // A copy closed a moment ago (its reader let go of it, or is about to).
            Some(closed) => {
                closed.reader.abort();
                let _ = self.inner.container.rm(id);
            }
            None => {}
        }
        self.inner.container.register(channel.channel().clone())?;
        let (progress, next) = watch::channel(channel.channel().next_seq());
        let load = self.inner.loads.fetch_add(1, Ordering::Relaxed);
        let read = Arc::new(Mutex::new(read));
        let reader = tokio::spawn(self::read(
            Arc::downgrade(&self.inner),
            load,
            channel.clone(),
            Arc::clone(&read),
            [meta, events],
            progress,
        ));
        let entry = Served {
            channel,
            next,
            read,
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
        let mut retried = false;
        loop {
            let served = self.served(id).await?;
            served.catch_up(last_event_id).await;
            match served.channel.subscribe(last_event_id).map_err(Error::from) {
                // Let go of (idle) between the lookup and the subscribe: load it again.
                Err(err) if !retried && closed_meanwhile(&err) => retried = true,
                stream => return stream,
            }
        }
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

impl Served {
    /// Waits a moment for this process to read up to `last_event_id` (a client moving
    /// from a process that read it first). Timing out (or the reader ending) is fine:
    /// the client then gets a reset event, as for any id it cannot resume.
    async fn catch_up(&self, last_event_id: Option<&str>) {
        let adapter = self.channel.adapter();
        if let Some(seq) = last_event_id.and_then(|last| adapter.parse_event_id(last)) {
            let mut next = self.next.clone();
            let _ = tokio::time::timeout(CATCH_UP, next.wait_for(|&next| next > seq)).await;
        }
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

    /// Stops serving `id` if copy `load` still has no local listener (checked under
    /// the lock a loading request takes); whether it did.
    /// A request that looked the copy up just before may still subscribe to it: it
    /// finds it closed and loads it again (`closed_meanwhile`).
    fn let_go_idle(&self, id: &str, load: u64) -> bool {
        self.let_go_if(id, |s| {
            s.load == load && s.channel.channel().listener_count() == 0
        })
    }

    /// Stops serving `id` (only the copy numbered `load`, when given): its local
    /// streams end.
    fn let_go(&self, id: &str, load: Option<u64>) {
        self.let_go_if(id, |s| load.is_none_or(|load| load == s.load));
    }

    fn let_go_if(&self, id: &str, ours: impl FnOnce(&Served) -> bool) -> bool {
        let mut served = self.served.write().unwrap_or_else(PoisonError::into_inner);
        if !served.get(id).is_some_and(ours) {
            return false;
        }
        if let Some(gone) = served.remove(id) {
            gone.reader.abort();
            let _ = self.container.rm(id);
            gone.channel.close();
        }
        true
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
    matches!(
        err,
        Error::Core(eric_core::Error::ChannelClosed { .. })
            | Error::Prefab(eric_prefabs::Error::Core(
                eric_core::Error::ChannelClosed { .. }
            ))
    )
}

/// The id of a stream entry, `<seq>-<n>`.
fn entry_id(entry: &StreamId) -> Option<EntryId> {
    parse_entry_id(&entry.id)
}

fn parse_entry_id(id: &str) -> Option<EntryId> {
    let (seq, n) = id.split_once('-')?;
    Some((seq.parse().ok()?, n.parse().ok()?))
}

#[derive(PartialEq, Eq)]
enum Applied {
    /// Applied, or nothing for this process to do.
    Done,
    Closed,
    /// An entry this copy cannot take in order (it missed some): it must be reloaded.
    Gap,
}

fn apply(
    channel: &SseChannel,
    attached: &mut HashMap<String, Attached>,
    entry: &StreamId,
) -> Applied {
    let Some((seq, n)) = entry_id(entry) else {
        return Applied::Gap;
    };
    let message_type: String = entry.get("type").unwrap_or_default();
    let next = channel.channel().next_seq();
    let to: Option<String> = entry.get("to");
    if let Some(to) = to {
        // A dispatch (or a stored listener's removal or move) after broadcast `seq`.
        if next <= seq {
            return Applied::Gap;
        }
        if let Some(listener) = attached.get_mut(&to)
            && (seq, n) > listener.upto
        {
            listener.upto = (seq, n);
            let by: Option<String> = entry.get("by");
            let ends = match message_type.as_str() {
                REMOVED => true,
                MOVED => listener.taken_over((seq, n), by.as_deref().unwrap_or_default()),
                _ => false,
            };
            if ends {
                attached.remove(&to);
                let _ = channel.remove_listener(&to);
            } else if message_type != MOVED {
                listener.deliver(channel, &to, (seq, n), message(message_type, entry));
            }
        }
        return Applied::Done;
    }
    if message_type == CLOSED {
        return Applied::Closed;
    }
    match seq {
        // Not an entry eric writes (a newer eric's?): nothing to apply here.
        _ if n != 0 => Applied::Done,
        seq if seq < next => Applied::Done, // read already
        seq if seq == next => match channel.broadcast(message(message_type, entry)) {
            Ok(_) => Applied::Done,
            Err(_) => Applied::Closed,
        },
        _ => Applied::Gap,
    }
}

/// The message an entry (or a queued dispatch) holds.
fn message(message_type: String, entry: &StreamId) -> Message {
    let payload: String = entry.get("payload").unwrap_or_default();
    decode(message_type, payload)
}

fn decode(message_type: String, payload: String) -> Message {
    // What eric stored is a checked type and a message's own JSON; anything else is not
    // ours, and is still delivered (as a plain `message`, the payload as a string)
    // rather than leaving a hole in the sequence.
    let payload = serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload));
    let message = Message::new(message_type, payload.clone());
    match eric_prefabs::check_message(&message) {
        Ok(()) => message,
        Err(_) => Message::new("message", payload),
    }
}

/// One process's reader of one channel's stream: each new entry applied to the local
/// channel, in order. Ends when the channel is removed, when it has had no local
/// listener for a whole [`BLOCK`] twice, when it missed entries (trimmed while it
/// could not read; the next request reloads the channel), or when Redis came back
/// without the channel (restarted without its data).
async fn read(
    cluster: Weak<Inner>,
    load: u64,
    channel: SseChannel,
    state: Arc<Mutex<ReadState>>,
    [meta, events]: [String; 2],
    progress: watch::Sender<u64>,
) {
    let Some(nodes) = cluster.upgrade().map(|c| c.nodes.clone()) else {
        return;
    };
    let mut connection = None;
    let (mut idle_rounds, mut lost) = (0, false);
    'reading: loop {
        if channel.channel().is_closed() {
            break;
        }
        let conn = match &mut connection {
            Some(conn) => conn,
            None => match nodes.blocking().await {
                Ok(mut conn) => {
                    if lost {
                        let exists: redis::RedisResult<bool> =
                            redis::cmd("EXISTS").arg(&meta).query_async(&mut conn).await;
                        if matches!(exists, Ok(false)) {
                            tracing::warn!(%meta, "Redis came back without this channel; closing it here");
                            break 'reading;
                        }
                        lost = false;
                    }
                    connection.insert(conn)
                }
                Err(err) => {
                    tracing::warn!(%events, %err, "cluster reader cannot connect; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
        };
        let (seq, n) = state.lock().await.last;
        let reply: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1024)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&events)
            .arg(format!("{seq}-{n}"))
            .query_async(conn)
            .await;
        let entries: Vec<StreamId> = match reply {
            Ok(reply) => reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default(),
            Err(err) => {
                tracing::warn!(%events, %err, "cluster reader lost Redis; reconnecting");
                (connection, lost) = (None, true);
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
                match cluster.upgrade() {
                    Some(cluster) if cluster.let_go_idle(channel.id(), load) => return,
                    Some(_) => idle_rounds = 0, // a listener came meanwhile
                    None => break 'reading,
                }
            }
            continue;
        }
        idle_rounds = 0;
        let mut state = state.lock().await;
        for entry in &entries {
            if apply(&channel, &mut state.attached, entry) != Applied::Done {
                break 'reading;
            }
            if let Some(id) = entry_id(entry) {
                state.last = id;
            }
        }
        drop(state);
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
