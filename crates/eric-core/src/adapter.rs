//! Adapters shape what a channel's streams yield.

use crate::message::Message;

/// Turns a message into what a channel's streams yield (eric-sse's `adapt`).
///
/// Any `Fn(&Message) -> T` is an adapter:
///
/// ```
/// use eric_core::{Adapter, Message};
///
/// let upper = |msg: &Message| msg.message_type().to_uppercase();
/// assert_eq!(upper.adapt(&Message::of_type("ping")), "PING");
/// ```
pub trait Adapter: Send + Sync + 'static {
    /// What streams yield.
    type Output: Send + 'static;

    /// Adapts one message.
    fn adapt(&self, msg: &Message) -> Self::Output;
}

/// The identity adapter: streams yield the messages themselves.
#[derive(Clone, Copy, Debug, Default)]
pub struct MessageAdapter;

impl Adapter for MessageAdapter {
    type Output = Message;

    fn adapt(&self, msg: &Message) -> Message {
        msg.clone()
    }
}

impl<F, T> Adapter for F
where
    F: Fn(&Message) -> T + Send + Sync + 'static,
    T: Send + 'static,
{
    type Output = T;

    fn adapt(&self, msg: &Message) -> T {
        self(msg)
    }
}
