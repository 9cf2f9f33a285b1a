//! eric: async messaging in the Server-Sent Events model.
//!
//! This umbrella crate re-exports eric's crates; pick features for the parts you use.
//! [`core`] (channels, listeners, queues) is always there, and its main types are
//! re-exported at the root.
//!
//! ```
//! use eric::{Channel, Message};
//!
//! let channel = Channel::default();
//! let listener = channel.add_listener()?;
//! channel.broadcast(Message::new("hello", "world"))?;
//! assert_eq!(channel.queue_stats(listener.id())?.len, 1);
//! # Ok::<(), eric::Error>(())
//! ```

pub use eric_core as core;
pub use eric_core::*;

/// Ready-made channels: SSE with resumable streams, data processing, distributed
/// application, Publisher (feature `prefabs`, on by default).
#[cfg(feature = "prefabs")]
pub use eric_prefabs as prefabs;

/// Channels, listeners and unread messages that survive a restart (feature
/// `persistence`, on by default).
#[cfg(feature = "persistence")]
pub use eric_persistence as persistence;

/// eric-sse's Unix-socket controller (feature `socket`, on by default).
#[cfg(feature = "socket")]
pub use eric_socket as socket;

/// The HTTP Server-Sent Events server (feature `http`, on by default).
#[cfg(feature = "http")]
pub use eric_http as http;
