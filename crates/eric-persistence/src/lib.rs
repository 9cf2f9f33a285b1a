//! eric-persistence: channels, listeners and queued messages that survive a restart,
//! in memory or in Redis (feature `redis`, on by default).
//!
//! - [`KvStorage`]: the storage seam (eric-sse's), with [`InMemoryStorage`] and
//!   [`RedisStorage`]. Values are versioned JSON ([`record`]); keys are prefixed
//!   (`eric:` by default) and every id in them escaped ([`Keys`]).
//! - [`SseChannelRepository`]: create, load and delete stored SSE channels.
//! - [`PersistentSseChannel`]: an SSE channel whose writes reach the storage before
//!   they are acknowledged, and whose listeners' reads are recorded.
//!
//! ```
//! use eric_core::Message;
//! use eric_persistence::{ChannelSettings, InMemoryStorage, SseChannelRepository};
//! use futures_util::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> eric_persistence::Result<()> {
//! let repository = SseChannelRepository::new(InMemoryStorage::new());
//! let channel = repository.create(ChannelSettings::default()).await?;
//! let listener = channel.add_listener().await?;
//! channel.dispatch(&listener, Message::new("task", 1)).await?;
//!
//! let mut events = channel.message_stream(&listener)?;
//! assert_eq!(events.next().await.unwrap()?.data(), "1");
//! # Ok(())
//! # }
//! ```

mod channels;
#[cfg(feature = "redis")]
mod cluster;
mod error;
mod key;
mod persistent;
pub mod record;
#[cfg(feature = "redis")]
mod redis_connection;
#[cfg(feature = "redis")]
mod redis_storage;
mod repository;
mod storage;
mod stored;

pub use channels::{
    ChannelInfo, ChannelSettings, EventStream, MemoryChannels, Published, SharedChannels,
    SseChannels,
};
#[cfg(feature = "redis")]
pub use cluster::RedisCluster;
pub use error::{Error, Result};
pub use key::Keys;
pub use persistent::{PersistentSseChannel, PersistentStream};
#[cfg(feature = "redis")]
pub use redis_storage::RedisStorage;
pub use repository::SseChannelRepository;
pub use storage::{InMemoryStorage, KvStorage};
pub use stored::StoredChannels;

// The README's example runs as a doctest, so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
