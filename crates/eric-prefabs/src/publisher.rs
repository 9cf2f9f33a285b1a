//! The `server-sent-events` Publisher: publish/subscribe over named channels, with
//! per-subscriber properties and initial data.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};

use eric_core::{Channel, Message, MessageAdapter, MessageStream};
use futures_core::Stream;
use futures_util::stream::SelectAll;
use serde_json::Value;

use crate::sse::SseEvent;

/// The channel a Publisher uses when none is named.
pub const DEFAULT_CHANNEL: &str = "default channel";

/// One channel name or several (`"chat"`, `["chat", "global"]`); the default is
/// [`DEFAULT_CHANNEL`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channels(Vec<String>);

impl Default for Channels {
    fn default() -> Self {
        Channels(vec![DEFAULT_CHANNEL.to_owned()])
    }
}

impl From<&str> for Channels {
    fn from(name: &str) -> Self {
        Channels(vec![name.to_owned()])
    }
}

impl From<String> for Channels {
    fn from(name: String) -> Self {
        Channels(vec![name])
    }
}

impl From<Vec<String>> for Channels {
    fn from(names: Vec<String>) -> Self {
        Channels(names)
    }
}

impl From<Vec<&str>> for Channels {
    fn from(names: Vec<&str>) -> Self {
        Channels(names.into_iter().map(str::to_owned).collect())
    }
}

impl<const N: usize> From<[&str; N]> for Channels {
    fn from(names: [&str; N]) -> Self {
        Channels(names.iter().map(|n| (*n).to_owned()).collect())
    }
}

impl From<&[&str]> for Channels {
    fn from(names: &[&str]) -> Self {
        Channels(names.iter().map(|n| (*n).to_owned()).collect())
    }
}

impl Channels {
    fn unique(&self) -> Vec<&str> {
        let mut seen = HashSet::new();
        self.0
            .iter()
            .map(String::as_str)
            .filter(|n| seen.insert(*n))
            .collect()
    }
}

type PerSubscriber = dyn Fn(&Value) -> Value + Send + Sync;

/// What to publish: the same data for everyone, or data made for each subscriber from
/// its properties.
#[derive(Clone)]
pub enum Publication {
    /// The same data for every subscriber.
    Data(Value),
    /// `f(properties)` for each subscriber.
    PerSubscriber(Arc<PerSubscriber>),
}

impl Publication {
    /// Data made for each subscriber from its properties.
    pub fn per_subscriber(f: impl Fn(&Value) -> Value + Send + Sync + 'static) -> Self {
        Publication::PerSubscriber(Arc::new(f))
    }
}

impl From<Value> for Publication {
    fn from(data: Value) -> Self {
        Publication::Data(data)
    }
}

impl From<&str> for Publication {
    fn from(data: &str) -> Self {
        Publication::Data(Value::String(data.to_owned()))
    }
}

impl From<String> for Publication {
    fn from(data: String) -> Self {
        Publication::Data(Value::String(data))
    }
}

impl fmt::Debug for Publication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Publication::Data(data) => f.debug_tuple("Data").field(data).finish(),
            Publication::PerSubscriber(_) => f.write_str("PerSubscriber(..)"),
        }
    }
}

/// A named channel to publish to, and (for per-subscriber publications) its
/// subscribers by listener id.
type Target = (Channel<MessageAdapter>, Vec<(String, Arc<Subscriber>)>);

/// A subscriber, as [`Publisher::subscribers`] lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscriber {
    /// The subscription's id.
    pub id: String,
    /// The properties it subscribed with.
    pub properties: Value,
}

/// Publish/subscribe over named channels (the `server-sent-events` package's
/// `Publisher`). Cheap to clone; usable from any task or thread.
///
/// Data that is a JSON string is sent as its text; any other value as JSON.
///
/// ```
/// use eric_prefabs::{Publication, Publisher};
/// use futures_util::{FutureExt, StreamExt};
/// use serde_json::json;
///
/// let publisher = Publisher::new();
/// let mut ana = publisher.subscribe_with("chat", json!({"name": "Ana"}), ["welcome"]);
/// publisher.publish("hello, everyone", "chat");
/// publisher.publish(
///     Publication::per_subscriber(|p| json!(format!("hi {}", p["name"].as_str().unwrap_or("?")))),
///     "chat",
/// );
/// let mut next = || ana.next().now_or_never().flatten().unwrap().data().to_owned();
/// assert_eq!(next(), "welcome");
/// assert_eq!(next(), "hello, everyone");
/// assert_eq!(next(), "hi Ana");
/// ```
#[derive(Clone, Default)]
pub struct Publisher {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    channels: Mutex<HashMap<String, Named>>,
}

struct Named {
    channel: Channel<MessageAdapter>,
    // By listener id.
    subscribers: HashMap<String, Arc<Subscriber>>,
}

impl Inner {
    fn channels(&self) -> MutexGuard<'_, HashMap<String, Named>> {
        // Plain maps: a panic cannot leave them half-changed in a way that matters.
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Publisher {
    /// A publisher with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes to `channels` with no properties and no initial data.
    pub fn subscribe(&self, channels: impl Into<Channels>) -> Subscription {
        self.subscribe_with(channels, Value::Null, Vec::<Value>::new())
    }

    /// Subscribes to `channels`: the subscription yields `initial_data` first, then
    /// what is published to any of them. `properties` are what per-subscriber
    /// publications are made from. Dropping the subscription unsubscribes.
    pub fn subscribe_with<D: Into<Value>>(
        &self,
        channels: impl Into<Channels>,
        properties: Value,
        initial_data: impl IntoIterator<Item = D>,
    ) -> Subscription {
        let info = Arc::new(Subscriber {
            id: uuid::Uuid::new_v4().to_string(),
            properties,
        });
        let channels = channels.into();
        let mut streams = SelectAll::new();
        let mut memberships = Vec::new();
        let mut all = self.inner.channels();
        for name in channels.unique() {
            let named = all.entry(name.to_owned()).or_insert_with(|| Named {
                channel: Channel::default(),
                subscribers: HashMap::new(),
            });
            // The channel is never closed while it is in the map, so this succeeds.
            if let Ok(stream) = named.channel.watch() {
                named
                    .subscribers
                    .insert(stream.listener_id().to_owned(), Arc::clone(&info));
                memberships.push((name.to_owned(), stream.listener_id().to_owned()));
                streams.push(stream);
            }
        }
        drop(all);
        Subscription {
            info,
            initial: initial_data
                .into_iter()
                .map(|d| SseEvent::new(data_text(&d.into())))
                .collect(),
            streams,
            publisher: Arc::downgrade(&self.inner),
            memberships,
        }
    }

    /// Publishes to every subscriber of `channels` (each subscribed to several gets it
    /// once per channel, as the original does). Returns how many deliveries were made.
    pub fn publish(&self, data: impl Into<Publication>, channels: impl Into<Channels>) -> usize {
        let data = data.into();
        let channels = channels.into();
        // Snapshot under the lock; run user code and deliver outside it.
        let targets: Vec<Target> = {
            let all = self.inner.channels();
            channels
                .unique()
                .into_iter()
                .filter_map(|name| all.get(name))
                .map(|named| {
                    let subscribers = match data {
                        Publication::Data(_) => Vec::new(),
                        Publication::PerSubscriber(_) => named
                            .subscribers
                            .iter()
                            .map(|(id, info)| (id.clone(), Arc::clone(info)))
                            .collect(),
                    };
                    (named.channel.clone(), subscribers)
                })
                .collect()
        };
        let mut delivered = 0;
        for (channel, subscribers) in targets {
            match &data {
                Publication::Data(value) => {
                    if let Ok(report) = channel.broadcast(Message::new("message", value.clone())) {
                        delivered += report.delivered;
                    }
                }
                Publication::PerSubscriber(f) => {
                    for (listener_id, info) in subscribers {
                        let msg = Message::new("message", f(&info.properties));
                        // A subscriber that left meanwhile is simply skipped.
                        if channel.dispatch(&listener_id, msg).is_ok() {
                            delivered += 1;
                        }
                    }
                }
            }
        }
        delivered
    }

    /// The subscribers of `channels`, each once.
    #[doc(alias = "get_subscribers")]
    pub fn subscribers(&self, channels: impl Into<Channels>) -> Vec<Subscriber> {
        let channels = channels.into();
        let all = self.inner.channels();
        let mut seen = HashSet::new();
        channels
            .unique()
            .into_iter()
            .filter_map(|name| all.get(name))
            .flat_map(|named| named.subscribers.values())
            .filter(|info| seen.insert(info.id.clone()))
            .map(|info| (**info).clone())
            .collect()
    }

    /// The names of the channels that have subscribers.
    pub fn channel_names(&self) -> Vec<String> {
        self.inner.channels().keys().cloned().collect()
    }
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("channels", &self.channel_names())
            .finish()
    }
}

/// A subscription: the SSE events published to its channels, after its initial data.
/// Dropping it unsubscribes.
#[must_use = "streams do nothing unless polled"]
pub struct Subscription {
    info: Arc<Subscriber>,
    initial: VecDeque<SseEvent>,
    streams: SelectAll<MessageStream<MessageAdapter>>,
    publisher: Weak<Inner>,
    memberships: Vec<(String, String)>,
}

impl Subscription {
    /// The subscription's id.
    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// The properties it subscribed with.
    pub fn properties(&self) -> &Value {
        &self.info.properties
    }
}

impl Stream for Subscription {
    type Item = SseEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SseEvent>> {
        if let Some(event) = self.initial.pop_front() {
            return Poll::Ready(Some(event));
        }
        loop {
            return match Pin::new(&mut self.streams).poll_next(cx) {
                Poll::Ready(Some(Ok(msg))) => {
                    Poll::Ready(Some(SseEvent::new(data_text(msg.payload()))))
                }
                // A channel's own markers and errors are not publications.
                Poll::Ready(Some(Err(_))) => continue,
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(inner) = self.publisher.upgrade() else {
            return;
        };
        let mut all = inner.channels();
        for (name, listener_id) in &self.memberships {
            if let Some(named) = all.get_mut(name) {
                named.subscribers.remove(listener_id);
                if named.subscribers.is_empty() {
                    all.remove(name);
                }
            }
        }
        // The streams drop after this, removing their listeners from the channels.
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.info.id)
            .field("channels", &self.memberships.len())
            .finish()
    }
}

fn data_text(data: &Value) -> String {
    match data {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}
