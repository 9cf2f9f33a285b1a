//! Messages: a type and a JSON payload, shared by reference between every queue that
//! holds them.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, OnceLock};

use serde_json::Value;

/// Ends a stream: the channel is closed ([`Channel::close`](crate::Channel::close)).
pub const MESSAGE_TYPE_CLOSED: &str = "_eric_channel_closed";
/// Ends a stream: the producer has nothing more to send.
pub const MESSAGE_TYPE_END_OF_STREAM: &str = "_eric_channel_eof";
/// An error reported in-band to a stream's consumer.
pub const MESSAGE_TYPE_INTERNAL_ERROR: &str = "_eric_error";

/// A message: a type, a JSON payload, and optionally a sender id and an own id.
///
/// Cloning is one reference-count increment: a broadcast to N listeners shares one
/// allocation of the payload. The three kinds eric-sse users know are all this one type
/// on the wire; [`SignedMessage`] and [`UniqueMessage`] are views that guarantee the
/// sender id (and own id) are present.
///
/// ```
/// use eric_core::Message;
/// use serde_json::json;
///
/// let msg = Message::new("greeting", json!({"text": "hello"}));
/// assert_eq!(msg.message_type(), "greeting");
/// assert_eq!(msg.payload()["text"], "hello");
/// assert_eq!(msg.payload_json(), r#"{"text":"hello"}"#);
/// ```
#[derive(Clone)]
pub struct Message {
    inner: Arc<Inner>,
}

struct Inner {
    message_type: Box<str>,
    payload: Value,
    sender_id: Option<Box<str>>,
    id: Option<Box<str>>,
    ends_stream: bool,
    /// When a server accepted it (set by the server, for its delivery-latency
    /// histogram; `None` for messages made as a library's).
    accepted_at: Option<std::time::Instant>,
    // Serialized once, on first use: a broadcast to N SSE streams serializes once.
    payload_json: OnceLock<Box<str>>,
    // What an adapter made of it once for every delivery (see `Message::memo`).
    memo: OnceLock<Memo>,
}

/// A value made from a message once, with the key that says what it depends on.
struct Memo {
    key: [u64; 2],
    value: Box<dyn Any + Send + Sync>,
}

impl Message {
    /// A message of `message_type` carrying `payload`.
    pub fn new(message_type: impl Into<String>, payload: impl Into<Value>) -> Self {
        Self::build(message_type.into(), payload.into(), None, None)
    }

    /// A message with no payload (`null`).
    pub fn of_type(message_type: impl Into<String>) -> Self {
        Self::new(message_type, Value::Null)
    }

    /// The end-of-stream message ([`MESSAGE_TYPE_END_OF_STREAM`]): a stream that reads
    /// it yields it and ends.
    pub fn end_of_stream() -> Self {
        Self::of_type(MESSAGE_TYPE_END_OF_STREAM)
    }

    /// The channel-closed message ([`MESSAGE_TYPE_CLOSED`]).
    pub fn closed() -> Self {
        Self::of_type(MESSAGE_TYPE_CLOSED)
    }

    /// An in-band error message ([`MESSAGE_TYPE_INTERNAL_ERROR`]) whose payload is the
    /// error's text.
    pub fn error(text: impl Into<String>) -> Self {
        Self::new(MESSAGE_TYPE_INTERNAL_ERROR, Value::String(text.into()))
    }

    fn build(
        message_type: String,
        payload: Value,
        sender_id: Option<Box<str>>,
        id: Option<Box<str>>,
    ) -> Self {
        let ends_stream =
            message_type == MESSAGE_TYPE_CLOSED || message_type == MESSAGE_TYPE_END_OF_STREAM;
        Message {
            inner: Arc::new(Inner {
                message_type: message_type.into_boxed_str(),
                payload,
                sender_id,
                id,
                ends_stream,
                accepted_at: None,
                payload_json: OnceLock::new(),
                memo: OnceLock::new(),
            }),
        }
    }

    /// The message, marked as accepted now: what a server does when it acknowledges a
    /// publish, so that it can measure how long the message takes to reach its readers
    /// ([`accepted_at`](Self::accepted_at)). Free when the message is not shared yet;
    /// otherwise a copy.
    pub fn accepted_now(mut self) -> Self {
        let now = std::time::Instant::now();
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.accepted_at = Some(now),
            None => {
                let mut copy = Self::build(
                    self.inner.message_type.to_string(),
                    self.inner.payload.clone(),
                    self.inner.sender_id.clone(),
                    self.inner.id.clone(),
                );
                if let Some(inner) = Arc::get_mut(&mut copy.inner) {
                    inner.accepted_at = Some(now);
                }
                self = copy;
            }
        }
        self
    }

    /// When a server accepted the message, if one marked it
    /// ([`accepted_now`](Self::accepted_now)).
    pub fn accepted_at(&self) -> Option<std::time::Instant> {
        self.inner.accepted_at
    }

    /// The message type (eric-sse's `type`).
    pub fn message_type(&self) -> &str {
        &self.inner.message_type
    }

    /// The payload.
    pub fn payload(&self) -> &Value {
        &self.inner.payload
    }

    /// The payload as compact JSON text, serialized once and cached.
    pub fn payload_json(&self) -> &str {
        self.inner.payload_json.get_or_init(|| {
            // Serializing a `Value` to a string cannot fail: its map keys are strings.
            serde_json::to_string(&self.inner.payload)
                .unwrap_or_else(|_| String::from("null"))
                .into_boxed_str()
        })
    }

    /// A value made from this message once and shared by every delivery of it: what
    /// an adapter whose output is the same for every listener keeps here (eric-prefabs'
    /// SSE adapter keeps each broadcast's encoded event), so that a broadcast to N
    /// streams is adapted once, not N times.
    ///
    /// `key` names what the value depends on besides the message (the adapter and the
    /// broadcast's sequence number, say). The message holds one value: the first key
    /// to ask keeps it, and `make` runs only then. A caller with another key or type
    /// gets `None` (a message broadcast into two channels, say) and makes its own.
    ///
    /// ```
    /// use eric_core::Message;
    ///
    /// let msg = Message::new("news", 7);
    /// let copy = msg.clone();
    /// let made = msg.memo([1, 0], || format!("encoded {}", msg.payload_json()));
    /// assert_eq!(made.map(String::as_str), Some("encoded 7"));
    /// // Every handle of the message sees the value; `make` does not run again.
    /// assert_eq!(copy.memo([1, 0], || unreachable!()), made);
    /// // Another key does not get it.
    /// assert_eq!(copy.memo::<String>([1, 1], || unreachable!()), None);
    /// ```
    pub fn memo<T: Any + Send + Sync>(
        &self,
        key: [u64; 2],
        make: impl FnOnce() -> T,
    ) -> Option<&T> {
        let memo = self.inner.memo.get_or_init(|| Memo {
            key,
            value: Box::new(make()),
        });
        if memo.key != key {
            return None;
        }
        memo.value.downcast_ref()
    }

    /// An estimate of the memory the message holds, in bytes, for a
    /// [`MemoryBudget`](crate::MemoryBudget): three times its payload's JSON text (the
    /// parsed value, the cached text and the encoded event an SSE delivery makes, see
    /// [`memo`](Self::memo)), its type and ids, and the allocation itself. Serializes
    /// the payload once if nothing has yet.
    pub fn retained_bytes(&self) -> u64 {
        let inner = &*self.inner;
        let text = |s: &Option<Box<str>>| s.as_ref().map_or(0, |s| s.len());
        (std::mem::size_of::<Inner>()
            + 2 * std::mem::size_of::<usize>()
            + inner.message_type.len()
            + text(&inner.sender_id)
            + text(&inner.id)
            + 3 * self.payload_json().len()) as u64
    }

    /// The sender's id, for signed and unique messages.
    pub fn sender_id(&self) -> Option<&str> {
        self.inner.sender_id.as_deref()
    }

    /// The message's own id, for unique messages.
    pub fn id(&self) -> Option<&str> {
        self.inner.id.as_deref()
    }

    /// Whether reading this message ends a stream (closed or end-of-stream).
    pub fn ends_stream(&self) -> bool {
        self.inner.ends_stream
    }

    /// Whether two handles share one allocation (a broadcast does not copy payloads).
    pub fn ptr_eq(a: &Message, b: &Message) -> bool {
        Arc::ptr_eq(&a.inner, &b.inner)
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Message");
        d.field("type", &self.message_type())
            .field("payload", self.payload());
        if let Some(sender) = self.sender_id() {
            d.field("sender_id", &sender);
        }
        if let Some(id) = self.id() {
            d.field("id", &id);
        }
        d.finish()
    }
}

impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        Message::ptr_eq(self, other)
            || (self.message_type() == other.message_type()
                && self.payload() == other.payload()
                && self.sender_id() == other.sender_id()
                && self.id() == other.id())
    }
}

/// A message signed with its sender's id (eric-sse's `SignedMessage`).
///
/// ```
/// use eric_core::{Message, SignedMessage};
///
/// let signed = SignedMessage::new("node-a", "ping", 1);
/// assert_eq!(signed.sender_id(), "node-a");
/// let msg: Message = signed.into();
/// assert_eq!(msg.sender_id(), Some("node-a"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SignedMessage(Message);

impl SignedMessage {
    /// A message of `message_type` carrying `payload`, sent by `sender_id`.
    pub fn new(
        sender_id: impl Into<String>,
        message_type: impl Into<String>,
        payload: impl Into<Value>,
    ) -> Self {
        SignedMessage(Message::build(
            message_type.into(),
            payload.into(),
            Some(sender_id.into().into_boxed_str()),
            None,
        ))
    }

    /// The sender's id.
    pub fn sender_id(&self) -> &str {
        self.0.sender_id().unwrap_or_default()
    }

    /// The message underneath.
    pub fn message(&self) -> &Message {
        &self.0
    }
}

/// A signed message with an id of its own, a fresh UUID v4 unless given (eric-sse's
/// `UniqueMessage`).
///
/// ```
/// use eric_core::UniqueMessage;
///
/// let a = UniqueMessage::new("node-a", "job", 7);
/// let b = UniqueMessage::new("node-a", "job", 7);
/// assert_ne!(a.id(), b.id());
/// assert_eq!(a.id().len(), 36);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct UniqueMessage(Message);

impl UniqueMessage {
    /// A unique message with a fresh UUID v4 id.
    pub fn new(
        sender_id: impl Into<String>,
        message_type: impl Into<String>,
        payload: impl Into<Value>,
    ) -> Self {
        Self::with_id(
            uuid::Uuid::new_v4().to_string(),
            sender_id,
            message_type,
            payload,
        )
    }

    /// A unique message with the given id.
    pub fn with_id(
        id: impl Into<String>,
        sender_id: impl Into<String>,
        message_type: impl Into<String>,
        payload: impl Into<Value>,
    ) -> Self {
        UniqueMessage(Message::build(
            message_type.into(),
            payload.into(),
            Some(sender_id.into().into_boxed_str()),
            Some(id.into().into_boxed_str()),
        ))
    }

    /// The message's own id.
    pub fn id(&self) -> &str {
        self.0.id().unwrap_or_default()
    }

    /// The sender's id.
    pub fn sender_id(&self) -> &str {
        self.0.sender_id().unwrap_or_default()
    }

    /// The message underneath.
    pub fn message(&self) -> &Message {
        &self.0
    }
}

impl From<SignedMessage> for Message {
    fn from(m: SignedMessage) -> Self {
        m.0
    }
}

impl From<UniqueMessage> for Message {
    fn from(m: UniqueMessage) -> Self {
        m.0
    }
}

impl From<UniqueMessage> for SignedMessage {
    fn from(m: UniqueMessage) -> Self {
        SignedMessage(m.0)
    }
}

impl TryFrom<Message> for SignedMessage {
    type Error = Message;

    /// A signed view of `msg`, or `msg` back if it has no sender id.
    fn try_from(msg: Message) -> Result<Self, Message> {
        if msg.sender_id().is_some() {
            Ok(SignedMessage(msg))
        } else {
            Err(msg)
        }
    }
}

impl TryFrom<Message> for UniqueMessage {
    type Error = Message;

    /// A unique view of `msg`, or `msg` back if it lacks a sender id or an own id.
    fn try_from(msg: Message) -> Result<Self, Message> {
        if msg.sender_id().is_some() && msg.id().is_some() {
            Ok(UniqueMessage(msg))
        } else {
            Err(msg)
        }
    }
}

impl std::ops::Deref for SignedMessage {
    type Target = Message;
    fn deref(&self) -> &Message {
        &self.0
    }
}

impl std::ops::Deref for UniqueMessage {
    type Target = Message;
    fn deref(&self) -> &Message {
        &self.0
    }
}
