//! eric-core: channels, listeners, queues and connections for async messaging in the
//! Server-Sent Events model. The Rust port of eric-sse's core.
//!
//! A [`Channel`] holds listeners; each listener reads its own FIFO. A producer
//! [`dispatch`](Channel::dispatch)es to one listener (into that listener's [`Queue`]) or
//! [`broadcast`](Channel::broadcast)s to all; a consumer reads a listener's
//! [`message_stream`](Channel::message_stream), which the channel's [`Adapter`] shapes.
//!
//! - One copy, whatever the listeners: a broadcast is appended once to the channel's
//!   broadcast log, which every listener reads at its own cursor, so it costs the same
//!   for ten listeners as for a million; dispatches and broadcasts reach each listener
//!   in the order they were made.
//! - Wake-ups, not polling: a push wakes the one task waiting on that queue; an idle
//!   stream costs no CPU.
//! - Nothing lost silently: bounded queues overflow by an explicit [`OverflowPolicy`],
//!   and every drop, refusal and disconnection is counted ([`ChannelStats`]).
//! - Usable from anywhere: every handle is `Send + Sync`, and producing is synchronous,
//!   so OS threads and tokio tasks share channels freely.
//!
//! ```
//! use eric_core::{Channel, Message};
//! use futures_util::StreamExt;
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> eric_core::Result<()> {
//! let channel = Channel::default();
//! let listener = channel.add_listener()?;
//! let mut stream = channel.message_stream(listener.id())?;
//!
//! let producer = channel.clone();
//! tokio::spawn(async move {
//!     for n in 0..3 {
//!         producer.broadcast(Message::new("tick", json!({ "n": n }))).unwrap();
//!     }
//!     producer.close();
//! });
//!
//! let mut ticks = Vec::new();
//! while let Some(item) = stream.next().await {
//!     let msg = item?;
//!     if msg.message_type() == "tick" {
//!         ticks.push(msg.payload()["n"].as_i64().unwrap());
//!     }
//! }
//! assert_eq!(ticks, [0, 1, 2]);
//! # Ok(())
//! # }
//! ```

mod adapter;
mod budget;
mod channel;
mod channel_shared;
mod connection;
mod container;
mod error;
mod in_memory_queue;
mod listener;
mod log;
mod message;
mod queue;
mod segment;
mod stream;
mod striped;
mod sync;
mod waiters;

pub use adapter::{Adapter, Delivery, MessageAdapter};
pub use budget::MemoryBudget;
pub use channel::{BroadcastReport, Channel, ChannelBuilder, ChannelStats};
pub use connection::{Connection, ConnectionsFactory, InMemoryConnectionsFactory};
pub use container::ChannelContainer;
pub use error::{BoxError, Error, Result, validate_id};
pub use in_memory_queue::InMemoryQueue;
pub use listener::{Listener, ListenerState, MessageQueueListener};
pub use message::{
    MESSAGE_TYPE_CLOSED, MESSAGE_TYPE_END_OF_STREAM, MESSAGE_TYPE_INTERNAL_ERROR, Message,
    SignedMessage, UniqueMessage,
};
pub use queue::{OverflowPolicy, PushOutcome, Queue, QueueConfig, QueueEntry, QueueStats};
pub use stream::MessageStream;
pub use striped::{Striped, stripe_count, thread_stripe};

// The README's example runs as a doctest, so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
