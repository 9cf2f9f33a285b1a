//! The SSE channel: messages become Server-Sent Events with ids a reconnecting client
//! resumes from.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use eric_core::{
    BroadcastReport, Channel, ConnectionsFactory, Listener, Message, MessageQueueListener,
    MessageStream, OverflowPolicy,
};
use futures_core::{FusedStream, Stream};
use serde_json::json;

use crate::error::{Error, Result};
use crate::sse::{SseEvent, is_valid_event};
use crate::sse_adapter::SseAdapter;

/// eric-sse's default reconnection time, in milliseconds.
pub const DEFAULT_RETRY_MS: u64 = 5;
/// How many broadcasts an SSE channel keeps for resuming clients, by default.
pub const DEFAULT_REPLAY: usize = 1024;
/// The type of the event that opens a resumed stream whose `Last-Event-ID` could not be
/// honoured: the client missed events it cannot get back and must resync.
pub const MESSAGE_TYPE_RESET: &str = "_eric_reset";
/// The type of the event that ends a stream whose token has expired (eric-http): the
/// client fetches a new token and reconnects with its last event id, losing nothing.
pub const MESSAGE_TYPE_TOKEN_EXPIRED: &str = "_eric_token_expired";

/// A channel whose streams yield SSE events (eric-sse's `SSEChannel`), with resumable
/// streams: every broadcast gets an increasing id, the channel keeps the last
/// [`replay`](SseChannelBuilder::replay) broadcasts, and a client that reconnects with
/// `Last-Event-ID` gets what it missed, or a reset event when that is no longer
/// possible. Cheap to clone.
///
/// ```
/// use eric_core::Message;
/// use eric_prefabs::SseChannel;
/// use futures_util::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> eric_prefabs::Result<()> {
/// let channel = SseChannel::new();
/// let mut stream = channel.subscribe(None)?;
/// channel.broadcast(Message::new("greeting", "hello"))?;
/// let event = stream.next().await.unwrap()?;
/// assert_eq!(event.event(), Some("greeting"));
/// assert_eq!(event.data(), "\"hello\"");
/// let id = event.id().unwrap().to_owned();
///
/// // The client reconnects having seen `id`: it gets only what came after.
/// channel.broadcast(Message::new("greeting", "again"))?;
/// drop(stream);
/// let mut resumed = channel.subscribe(Some(&id))?;
/// assert_eq!(resumed.next().await.unwrap()?.data(), "\"again\"");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct SseChannel {
    channel: Channel<SseAdapter>,
}

/// Configures an [`SseChannel`].
#[must_use]
pub struct SseChannelBuilder {
    id: Option<String>,
    retry_ms: u64,
    replay: usize,
    replay_bytes: Option<u64>,
    epoch: Option<String>,
    capacity: Option<(usize, OverflowPolicy)>,
    first_seq: u64,
    factory: Option<Box<dyn FnOnce(eric_core::ChannelBuilder) -> eric_core::ChannelBuilder + Send>>,
}

impl Default for SseChannelBuilder {
    fn default() -> Self {
        SseChannelBuilder {
            id: None,
            retry_ms: DEFAULT_RETRY_MS,
            replay: DEFAULT_REPLAY,
            replay_bytes: None,
            epoch: None,
            capacity: None,
            first_seq: 0,
            factory: None,
        }
    }
}

impl SseChannelBuilder {
    /// The channel's id (a fresh UUID v4 if not set).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The reconnection time sent with every event (default [`DEFAULT_RETRY_MS`]).
    pub fn retry_ms(mut self, milliseconds: u64) -> Self {
        self.retry_ms = milliseconds;
        self
    }

    /// How many recent broadcasts to keep for resuming clients (default
    /// [`DEFAULT_REPLAY`]; rounded up to whole segments of 64).
    pub fn replay(mut self, broadcasts: usize) -> Self {
        self.replay = broadcasts;
        self
    }

    /// Bounds the replay window by size as well (see
    /// [`eric_core::ChannelBuilder::replay_bytes`]). Default: no bound in bytes.
    pub fn replay_bytes(mut self, bytes: u64) -> Self {
        self.replay_bytes = Some(bytes);
        self
    }

    /// The epoch in event ids (default: random). Set it when restoring a persisted
    /// channel whose sequence numbers go on from where they were.
    pub fn epoch(mut self, epoch: impl Into<String>) -> Self {
        self.epoch = Some(epoch.into());
        self
    }

    /// The sequence number of the first broadcast: a channel restored from storage
    /// goes on where it left off (with the same [`epoch`](Self::epoch)).
    pub fn first_seq(mut self, seq: u64) -> Self {
        self.first_seq = seq;
        self
    }

    /// Bounds what each listener may have unread (see [`OverflowPolicy`]).
    pub fn capacity(mut self, capacity: usize, overflow: OverflowPolicy) -> Self {
        self.capacity = Some((capacity, overflow));
        self
    }

    /// Where connections come from (default: in memory).
    pub fn connections_factory(mut self, factory: impl ConnectionsFactory) -> Self {
        self.factory = Some(Box::new(move |builder: eric_core::ChannelBuilder| {
            builder.connections_factory(factory)
        }));
        self
    }

    /// The channel; an invalid id or epoch is an error.
    pub fn build(self) -> Result<SseChannel> {
        let epoch = match self.epoch {
            Some(epoch) => epoch,
            None => format!("{:08x}", uuid::Uuid::new_v4().as_u128() as u32),
        };
        if epoch.is_empty() || epoch.contains(['-', '\0']) || !is_valid_event(&epoch) {
            return Err(eric_core::Error::InvalidId {
                id: epoch,
                reason: "an epoch must be non-empty, with no '-' and no line break",
            }
            .into());
        }
        let mut builder = Channel::builder()
            .replay(self.replay)
            .first_seq(self.first_seq);
        if let Some(id) = self.id {
            builder = builder.id(id);
        }
        if let Some(bytes) = self.replay_bytes {
            builder = builder.replay_bytes(bytes);
        }
        if let Some((capacity, overflow)) = self.capacity {
            builder = builder.capacity(capacity, overflow);
        }
        if let Some(factory) = self.factory {
            builder = factory(builder);
        }
        let adapter = SseAdapter::new(self.retry_ms, epoch.into());
        Ok(SseChannel {
            channel: builder.build(adapter)?,
        })
    }
}

impl Default for SseChannel {
    fn default() -> Self {
        Self::new()
    }
}

impl SseChannel {
    /// A channel with a fresh id, in-memory queues and the default settings.
    pub fn new() -> Self {
        match SseChannelBuilder::default().build() {
            Ok(channel) => channel,
            Err(_) => unreachable!("the default settings are valid"),
        }
    }

    /// A builder.
    pub fn builder() -> SseChannelBuilder {
        SseChannelBuilder::default()
    }

    /// The core channel underneath, for everything this type does not wrap.
    pub fn channel(&self) -> &Channel<SseAdapter> {
        &self.channel
    }

    /// The channel's id.
    pub fn id(&self) -> &str {
        self.channel.id()
    }

    /// The adapter (event ids, epoch, retry).
    pub fn adapter(&self) -> &SseAdapter {
        self.channel.adapter()
    }

    /// Adds a default listener.
    pub fn add_listener(&self) -> Result<Arc<MessageQueueListener>> {
        Ok(self.channel.add_listener()?)
    }

    /// Registers a listener of your own.
    pub fn register_listener<L: Listener>(&self, listener: Arc<L>) -> Result<()> {
        Ok(self.channel.register_listener(listener)?)
    }

    /// Removes a listener; its stream ends.
    pub fn remove_listener(&self, listener_id: &str) -> Result<()> {
        self.channel.remove_listener(listener_id)?;
        Ok(())
    }

    /// Sends `msg` to every listener; [`Error::InvalidSseField`] if its type cannot be
    /// an SSE event name.
    pub fn broadcast(&self, msg: impl Into<Message>) -> Result<BroadcastReport> {
        let msg = checked(msg.into())?;
        Ok(self.channel.broadcast(msg)?)
    }

    /// Sends `msg` to one listener; [`Error::InvalidSseField`] if its type cannot be an
    /// SSE event name.
    pub fn dispatch(&self, listener_id: &str, msg: impl Into<Message>) -> Result<()> {
        let msg = checked(msg.into())?;
        Ok(self.channel.dispatch(listener_id, msg)?)
    }

    /// The stream of an existing listener's events.
    pub fn message_stream(&self, listener_id: &str) -> Result<MessageStream<SseAdapter>> {
        Ok(self.channel.message_stream(listener_id)?)
    }

    /// An existing listener's events, resumed after `last_event_id` (see
    /// [`subscribe`](Self::subscribe) for what each kind of id gets).
    pub fn message_stream_resuming(
        &self,
        listener_id: &str,
        last_event_id: Option<&str>,
    ) -> Result<SseStream> {
        let Some(last) = last_event_id.filter(|id| !id.is_empty()) else {
            return Ok(SseStream::new(None, self.message_stream(listener_id)?));
        };
        let channel = &self.channel;
        self.resume(
            last,
            |seq| channel.message_stream_from(listener_id, seq),
            |seq| channel.message_stream_from_kept(listener_id, seq),
            || channel.message_stream(listener_id),
        )
    }

    /// Subscribes a new listener and returns its events; dropping the stream removes
    /// the listener. What a browser's `EventSource` connects to.
    ///
    /// With `last_event_id` (the `Last-Event-ID` a reconnecting browser sends):
    /// - an id of this channel still kept: the events after it, in order, no
    ///   duplicates, then live ones; the channel's epoch alone stands for the point
    ///   before its first broadcast;
    /// - an id of this channel too old to replay (`too_old`), of another epoch such as
    ///   before a restart or of a channel removed and created again (`other_epoch`), or
    ///   not an event id at all (`unparseable`): a [`MESSAGE_TYPE_RESET`] event first,
    ///   whose data names the reason and the oldest id kept, then every broadcast the
    ///   channel still keeps, from that oldest one on, then live ones. The client loses
    ///   nothing the channel holds. The reset event has no id (the client keeps its
    ///   own until a replayed event replaces it): a reserved event never carries the
    ///   id of a broadcast the client has not received.
    /// - an id from this channel's future (`ahead`: the client saw more than this
    ///   channel has, say from a process that lost its last broadcasts): the reset
    ///   event, carrying the newest id, then live events.
    pub fn subscribe(&self, last_event_id: Option<&str>) -> Result<SseStream> {
        let Some(last) = last_event_id.filter(|id| !id.is_empty()) else {
            return Ok(SseStream::new(None, self.channel.watch()?));
        };
        let channel = &self.channel;
        self.resume(
            last,
            |seq| channel.watch_from(seq),
            |seq| channel.watch_from_kept(seq),
            || channel.watch(),
        )
    }

    /// A stream resumed after `last`: from the broadcast after it when kept, else led
    /// by a reset event (see [`subscribe`](Self::subscribe)).
    fn resume(
        &self,
        last: &str,
        from: impl FnOnce(u64) -> eric_core::Result<MessageStream<SseAdapter>>,
        from_kept: impl FnOnce(u64) -> eric_core::Result<(MessageStream<SseAdapter>, u64)>,
        live: impl FnOnce() -> eric_core::Result<MessageStream<SseAdapter>>,
    ) -> Result<SseStream> {
        let reason = match self.resume_point(last) {
            Ok(seq) => match from(seq) {
                Ok(stream) => return Ok(SseStream::new(None, stream)),
                Err(eric_core::Error::ReplayUnavailable { .. }) => "too_old",
                Err(err) => return Err(err.into()),
            },
            Err(reason) => reason,
        };
        if reason == "ahead" {
            let head = self.channel.next_seq();
            let reset = self.reset_event(last, reason, self.kept().start, head.checked_sub(1));
            return Ok(SseStream::new(Some(reset), live()?));
        }
        // Everything kept: from the oldest broadcast (taken with the stream, so that
        // the reset names the first event that follows it).
        let (stream, oldest) = from_kept(0)?;
        let reset = self.reset_event(last, reason, oldest, None);
        Ok(SseStream::new(Some(reset), stream))
    }

    /// Closes the channel: every stream ends after what it has queued.
    pub fn close(&self) {
        self.channel.close();
    }

    /// The sequence number `last_event_id` resumes at, or why it cannot.
    fn resume_point(&self, last_event_id: &str) -> Result<u64, &'static str> {
        let adapter = self.adapter();
        if last_event_id == adapter.epoch() {
            // The epoch alone: before the first broadcast (what eric-http's stream of
            // several channels holds for one that had none when it opened).
            return Ok(0);
        }
        match adapter.parse_event_id(last_event_id) {
            Some(seq) if seq < self.channel.next_seq() => Ok(seq + 1),
            Some(_) => Err("ahead"),
            None if last_event_id
                .rsplit_once('-')
                .is_some_and(|(_, n)| n.parse::<u64>().is_ok()) =>
            {
                Err("other_epoch")
            }
            None => Err("unparseable"),
        }
    }

    /// The broadcasts kept: `oldest..next`.
    fn kept(&self) -> std::ops::Range<u64> {
        self.channel.replayable()
    }

    /// The reset event for a client that asked to resume after `requested`: `oldest`
    /// is the first broadcast it gets next (if the channel has made it), `id` the
    /// broadcast whose id the event carries, if any.
    fn reset_event(&self, requested: &str, reason: &str, oldest: u64, id: Option<u64>) -> SseEvent {
        let adapter = self.adapter();
        let data = json!({
            "reason": reason,
            "last_event_id": requested,
            "oldest_kept": (oldest < self.channel.next_seq()).then(|| adapter.event_id(oldest)),
        });
        let event = SseEvent::new(data.to_string())
            .with_event_unchecked(MESSAGE_TYPE_RESET)
            .with_retry(adapter.retry_ms());
        match id {
            Some(seq) => event.with_id_unchecked(adapter.event_id(seq)),
            None => event,
        }
    }
}

impl From<Channel<SseAdapter>> for SseChannel {
    /// The SSE view of a core channel with an SSE adapter (one kept in a
    /// [`ChannelContainer`](eric_core::ChannelContainer), say).
    fn from(channel: Channel<SseAdapter>) -> Self {
        SseChannel { channel }
    }
}

fn checked(msg: Message) -> Result<Message> {
    check_message(&msg)?;
    Ok(msg)
}

/// Checks that a producer may send `msg` as an SSE event, as [`SseChannel::broadcast`]
/// and [`SseChannel::dispatch`] do; for callers that store a message before it reaches
/// a channel. Its type, the event name, must have no line break
/// ([`Error::InvalidSseField`]) and must not be one of eric's own
/// ([`Error::ReservedMessageType`]: [`MESSAGE_TYPE_CLOSED`](eric_core::MESSAGE_TYPE_CLOSED),
/// [`MESSAGE_TYPE_RESET`], [`MESSAGE_TYPE_TOKEN_EXPIRED`], [`MESSAGE_TYPE_INTERNAL_ERROR`](eric_core::MESSAGE_TYPE_INTERNAL_ERROR),
/// or a type starting with NUL, which eric's backends use for entries of their own).
/// [`MESSAGE_TYPE_END_OF_STREAM`](eric_core::MESSAGE_TYPE_END_OF_STREAM) is a
/// producer's to send.
pub fn check_message(msg: &Message) -> Result<()> {
    let message_type = msg.message_type();
    if !is_valid_event(message_type) {
        return Err(Error::InvalidSseField {
            field: "event",
            value: crate::error::truncated(message_type),
            forbidden: "a line break (CR or LF)",
        });
    }
    let why = match message_type {
        eric_core::MESSAGE_TYPE_CLOSED => "it ends every stream of a removed channel",
        MESSAGE_TYPE_RESET => "it tells a resuming client that it missed events",
        MESSAGE_TYPE_TOKEN_EXPIRED => "it ends a stream whose token has expired",
        eric_core::MESSAGE_TYPE_INTERNAL_ERROR => "it reports an error in-band",
        t if t.starts_with('\0') => "types starting with NUL are eric's own entries",
        _ => return Ok(()),
    };
    Err(Error::ReservedMessageType {
        message_type: crate::error::truncated(message_type),
        why,
    })
}

/// The events of an SSE listener, led by a reset event when a resume was not possible.
#[must_use = "streams do nothing unless polled"]
#[derive(Debug)]
pub struct SseStream {
    // Boxed: read at every poll, it stays on the stream's first lines.
    reset: Option<Box<SseEvent>>,
    inner: MessageStream<SseAdapter>,
}

impl SseStream {
    fn new(reset: Option<SseEvent>, inner: MessageStream<SseAdapter>) -> Self {
        SseStream {
            reset: reset.map(Box::new),
            inner,
        }
    }

    /// The listener this stream reads.
    pub fn listener_id(&self) -> &str {
        self.inner.listener_id()
    }

    /// Whether the stream opens with a reset event (not yet taken).
    pub fn starts_with_reset(&self) -> bool {
        self.reset.is_some()
    }
}

impl Stream for SseStream {
    type Item = Result<SseEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Looked at before it is taken: a take writes, at every poll.
        if self.reset.is_some()
            && let Some(reset) = self.reset.take()
        {
            return Poll::Ready(Some(Ok(*reset)));
        }
        Pin::new(&mut self.inner)
            .poll_next(cx)
            .map(|item| item.map(|r| r.map_err(Error::from)))
    }
}

impl FusedStream for SseStream {
    fn is_terminated(&self) -> bool {
        self.reset.is_none() && self.inner.is_terminated()
    }
}
