//! One API over every way eric holds SSE channels: [`SseChannels`].
//!
//! Three backends implement it with the same semantics: [`MemoryChannels`] (this
//! process's memory), [`StoredChannels`](crate::StoredChannels) (kept in any
//! [`KvStorage`](crate::KvStorage), reloaded after a restart) and
//! [`RedisCluster`](crate::RedisCluster) (shared by every process on one Redis or Redis
//! Cluster). eric's servers are written against the trait alone, so that what sits
//! above it (authorization, many channels on one stream) is written once, and a
//! program that starts in memory moves to Redis by changing one constructor.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use eric_core::{ChannelContainer, ChannelStats, Message, OverflowPolicy};
use eric_prefabs::{DEFAULT_REPLAY, DEFAULT_RETRY_MS, SseAdapter, SseChannelBuilder, SseEvent};
use futures_core::Stream;
use serde::{Deserialize, Serialize};

use crate::error::Result;

mod memory;

pub use memory::MemoryChannels;
pub(crate) use memory::published;

/// The events of one stream: what [`SseChannels::subscribe`] and
/// [`SseChannels::message_stream`] return. An `Err` item is a failure the stream
/// reports before it ends (a listener disconnected for falling behind, say).
pub type EventStream = Pin<Box<dyn Stream<Item = Result<SseEvent>> + Send>>;

/// A set of SSE channels, wherever they are held. Cheap to share (`Arc<dyn
/// SseChannels>`); every method may be called from any task.
///
/// Every backend gives the same answers:
/// - an unknown channel is [`Error::ChannelNotFound`](crate::Error::ChannelNotFound), an
///   unknown listener [`eric_core::Error::InvalidListener`];
/// - a message type a producer may not send is refused before anything is kept
///   ([`eric_prefabs::check_message`]);
/// - `Ok` from `create`, `add_listener`, `broadcast` and `dispatch` means the backend
///   holds it: in memory, in the storage, or in Redis;
/// - streams resume after a `Last-Event-ID` as [`eric_prefabs::SseChannel::subscribe`]
///   says, and end without an event on [`shutdown`](Self::shutdown).
///
/// Where a backend must differ, its documentation says so: in a cluster, broadcasts do
/// not know how many listeners the other processes have ([`Published::listeners`] is
/// `None`), and [`OverflowPolicy::Reject`] acts as [`OverflowPolicy::Disconnect`] (a
/// broadcast Redis has acknowledged cannot be refused by one process).
///
/// ```
/// use eric_core::Message;
/// use eric_persistence::{ChannelSettings, MemoryChannels, SseChannels};
/// use futures_util::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> eric_persistence::Result<()> {
/// // In memory; `StoredChannels` or `RedisCluster` take the same calls.
/// let channels = MemoryChannels::new();
/// let id = channels.create(ChannelSettings::default().id("news")).await?;
/// let mut events = channels.subscribe(&id, None).await?;
/// channels.broadcast(&id, Message::new("headline", "hello")).await?;
/// let event = events.next().await.unwrap()?;
/// assert_eq!((event.event(), event.data()), (Some("headline"), "\"hello\""));
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait SseChannels: Send + Sync + 'static {
    /// Creates a channel with `settings` (a fresh id unless they name one);
    /// [`eric_core::Error::DuplicateChannel`] if the id is taken.
    async fn create(&self, settings: ChannelSettings) -> Result<String>;

    /// Removes a channel: its streams get the closed event and end, its listeners and
    /// what they had not read go.
    #[doc(alias = "rm")]
    async fn remove(&self, channel_id: &str) -> Result<()>;

    /// The ids of every channel.
    #[doc(alias = "get_all_ids")]
    async fn ids(&self) -> Result<Vec<String>>;

    /// How many channels there are.
    async fn len(&self) -> Result<usize>;

    /// Whether there are none.
    async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// A channel's settings, and the counts of its copy in this process.
    async fn info(&self, channel_id: &str) -> Result<ChannelInfo>;

    /// Adds a listener that outlives its streams (kept where the backend keeps
    /// things): messages wait for it until a stream reads them. Returns its id.
    async fn add_listener(&self, channel_id: &str) -> Result<String>;

    /// Adds a listener, as [`add_listener`](Self::add_listener) does, with the id
    /// given: an id that says something (whose it is, say, as eric-http's does for
    /// the `sub` of a token). [`eric_core::Error::DuplicateListener`] if the channel
    /// has one with that id; [`eric_core::Error::InvalidId`] if the id is empty, over
    /// 1 KiB or holds control characters.
    async fn add_listener_with_id(&self, channel_id: &str, listener_id: &str) -> Result<()>;

    /// Removes a listener; its stream, wherever it is, ends.
    async fn remove_listener(&self, channel_id: &str, listener_id: &str) -> Result<()>;

    /// Sends `msg` to every listener of the channel.
    async fn broadcast(&self, channel_id: &str, msg: Message) -> Result<Published>;

    /// Sends `msg` to one listener.
    async fn dispatch(&self, channel_id: &str, listener_id: &str, msg: Message) -> Result<()>;

    /// The events of a listener made with [`add_listener`](Self::add_listener), from
    /// where it was, or after `last_event_id` when given. A newer stream of the same
    /// listener takes it over (this one ends).
    async fn message_stream(
        &self,
        channel_id: &str,
        listener_id: &str,
        last_event_id: Option<&str>,
    ) -> Result<EventStream>;

    /// A listener of the stream's own, and its events: what a browser's `EventSource`
    /// wants. Dropping the stream removes the listener.
    #[doc(alias = "watch")]
    async fn subscribe(&self, channel_id: &str, last_event_id: Option<&str>)
    -> Result<EventStream>;

    /// Ends every stream this process serves, without an event and without closing
    /// anything (a client resumes on the next process, or another of a cluster), and
    /// records what stored listeners read. For a server shutting down.
    async fn shutdown(&self) -> Result<()>;

    /// The channels this process holds in memory now (every channel, in memory; those
    /// loaded, when stored; those served here, in a cluster): for counters and for
    /// feeding channels from the same process.
    fn local(&self) -> &ChannelContainer<SseAdapter>;
}

/// The settings of a new channel (eric-sse's `channel_data`). Deserializes from JSON
/// with every field optional; a misspelt overflow policy is an error.
///
/// ```
/// use eric_core::OverflowPolicy;
/// use eric_persistence::ChannelSettings;
///
/// let settings = ChannelSettings::default().id("news").capacity(1024, OverflowPolicy::Disconnect);
/// let parsed: ChannelSettings =
///     serde_json::from_str(r#"{"id": "news", "capacity": 1024, "overflow": "disconnect"}"#).unwrap();
/// assert_eq!(settings, parsed);
/// assert!(serde_json::from_str::<ChannelSettings>(r#"{"overflow": "rejekt"}"#).is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ChannelSettings {
    /// The channel id (a fresh UUID v4 if absent).
    pub id: Option<String>,
    /// Reconnection time sent with events, in milliseconds (default 5, as eric-sse).
    pub retry_ms: Option<u64>,
    /// Broadcasts kept for resuming clients (default 1024).
    pub replay: Option<usize>,
    /// Bytes kept for resuming clients at most (default: no bound in bytes; see
    /// [`eric_core::ChannelBuilder::replay_bytes`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_bytes: Option<u64>,
    /// What each listener may have unread, if bounded.
    pub capacity: Option<usize>,
    /// What happens to a listener over `capacity` (default
    /// [`OverflowPolicy::Reject`]).
    pub overflow: Option<OverflowPolicy>,
}

impl ChannelSettings {
    /// Settings with this id.
    pub fn with_id(id: impl Into<String>) -> Self {
        Self::default().id(id)
    }

    /// Sets the id.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the reconnection time.
    pub fn retry_ms(mut self, milliseconds: u64) -> Self {
        self.retry_ms = Some(milliseconds);
        self
    }

    /// Sets how many broadcasts are kept for resuming clients.
    pub fn replay(mut self, broadcasts: usize) -> Self {
        self.replay = Some(broadcasts);
        self
    }

    /// Bounds the replay window by size as well.
    pub fn replay_bytes(mut self, bytes: u64) -> Self {
        self.replay_bytes = Some(bytes);
        self
    }

    /// Bounds what each listener may have unread, and says what happens to one more.
    pub fn capacity(mut self, capacity: usize, overflow: OverflowPolicy) -> Self {
        self.capacity = Some(capacity);
        self.overflow = Some(overflow);
        self
    }

    /// The reconnection time, default applied.
    pub fn retry_or_default(&self) -> u64 {
        self.retry_ms.unwrap_or(DEFAULT_RETRY_MS)
    }

    /// The replay window, default applied.
    pub fn replay_or_default(&self) -> usize {
        self.replay.unwrap_or(DEFAULT_REPLAY)
    }

    /// The overflow policy, default applied.
    pub fn overflow_or_default(&self) -> OverflowPolicy {
        self.overflow.unwrap_or_default()
    }

    /// An [`eric_prefabs::SseChannel`] builder with these settings (the one place
    /// settings become a channel, for every backend).
    pub fn sse_builder(&self) -> SseChannelBuilder {
        let mut builder = eric_prefabs::SseChannel::builder()
            .retry_ms(self.retry_or_default())
            .replay(self.replay_or_default());
        if let Some(id) = &self.id {
            builder = builder.id(id.clone());
        }
        if let Some(bytes) = self.replay_bytes {
            builder = builder.replay_bytes(bytes);
        }
        if let Some(capacity) = self.capacity {
            builder = builder.capacity(capacity, self.overflow_or_default());
        }
        builder
    }

    /// The settings of `channel` as it is.
    pub fn of(channel: &eric_prefabs::SseChannel) -> Self {
        let config = channel.channel().queue_config();
        ChannelSettings {
            id: Some(channel.id().to_owned()),
            retry_ms: Some(channel.adapter().retry_ms()),
            replay: Some(channel.channel().replay()),
            replay_bytes: channel.channel().replay_bytes(),
            capacity: config.capacity(),
            overflow: config.capacity().map(|_| config.overflow()),
        }
    }
}

/// What a broadcast did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// The channel's sequence number of the broadcast.
    pub seq: u64,
    /// Its SSE event id (`<epoch>-<seq>`), the same on every process of a cluster.
    pub event_id: String,
    /// How many listeners will read it; `None` in a cluster, where each process knows
    /// only its own.
    pub listeners: Option<usize>,
}

/// A channel's settings, and what its copy in this process counts.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ChannelInfo {
    /// Its settings (every field set).
    pub settings: ChannelSettings,
    /// Listeners, drops, rejections and disconnections of its copy in this process.
    pub stats: ChannelStats,
}

impl ChannelInfo {
    /// The info of `channel` as it is.
    pub fn of(channel: &eric_prefabs::SseChannel) -> Self {
        ChannelInfo {
            settings: ChannelSettings::of(channel),
            stats: channel.channel().stats(),
        }
    }
}

/// Boxes an SSE stream as an [`EventStream`].
pub(crate) fn boxed<E: Into<crate::Error>>(
    stream: impl Stream<Item = Result<SseEvent, E>> + Send + 'static,
) -> EventStream {
    Box::pin(futures_util::StreamExt::map(stream, |item| {
        item.map_err(Into::into)
    }))
}

/// Ends every stream of every channel `container` holds (see
/// [`SseChannels::shutdown`]).
pub(crate) fn end_streams(container: &ChannelContainer<SseAdapter>) {
    for id in container.ids() {
        if let Ok(channel) = container.get(&id) {
            channel.end_streams();
        }
    }
}

/// The shared handle type servers hold.
pub type SharedChannels = Arc<dyn SseChannels>;
