//! Adapters shape what a channel's streams yield.

use crate::message::Message;

/// Turns a message into what a channel's streams yield (eric-sse's `adapt`).
///
/// Any `Fn(&Message) -> T` is an adapter:
///
/// ```
/// use eric_core::{Adapter, Delivery, Message};
///
/// let upper = |msg: &Message| msg.message_type().to_uppercase();
/// assert_eq!(upper.adapt(&Message::of_type("ping"), &Delivery::default()), "PING");
/// ```
pub trait Adapter: Send + Sync + 'static {
    /// What streams yield.
    type Output: Send + 'static;

    /// Adapts one message, delivered as `delivery` says.
    fn adapt(&self, msg: &Message, delivery: &Delivery) -> Self::Output;

    /// Adapts a message the caller hands over ([`adapt`](Self::adapt) unless an
    /// adapter can use it as it is). Streams call this one for a message they own (a
    /// dispatch, a broadcast read under the cursor's lock), and [`adapt`](Self::adapt)
    /// with a broadcast lent from the channel's log: so an adapter that makes its own
    /// output costs no reference-count traffic on a message every listener shares,
    /// and one that yields the message itself clones it once. Both must yield the same.
    fn adapt_owned(&self, msg: Message, delivery: &Delivery) -> Self::Output {
        self.adapt(&msg, delivery)
    }
}

/// How a message reached its listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// The broadcast's sequence number in its channel (0, 1, 2, ...), or `None` for a
    /// message dispatched to this listener alone. SSE uses it as the event id.
    pub seq: Option<u64>,
}

impl Delivery {
    /// A delivery of broadcast number `seq`.
    #[inline]
    pub fn broadcast(seq: u64) -> Self {
        Delivery { seq: Some(seq) }
    }

    /// A delivery of a dispatched message.
    pub fn dispatched() -> Self {
        Delivery { seq: None }
    }
}

/// The identity adapter: streams yield the messages themselves.
#[derive(Clone, Copy, Debug, Default)]
pub struct MessageAdapter;

impl Adapter for MessageAdapter {
    type Output = Message;

    fn adapt(&self, msg: &Message, _delivery: &Delivery) -> Message {
        msg.clone()
    }

    fn adapt_owned(&self, msg: Message, _delivery: &Delivery) -> Message {
        msg
    }
}

impl<F, T> Adapter for F
where
    F: Fn(&Message) -> T + Send + Sync + 'static,
    T: Send + 'static,
{
    type Output = T;

    fn adapt(&self, msg: &Message, _delivery: &Delivery) -> T {
        self(msg)
    }
}
