//! eric-prefabs: ready-made channels on top of [`eric_core`], the Rust port of
//! eric-sse's prefabs and of the `server-sent-events` Publisher.
//!
//! - [`SseChannel`]: messages become Server-Sent Events ([`SseEvent`], encoded to the
//!   exact bytes the WHATWG spec describes); streams resume from `Last-Event-ID`.
//!
//! ```
//! use eric_core::Message;
//! use eric_prefabs::SseChannel;
//! use futures_util::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> eric_prefabs::Result<()> {
//! let channel = SseChannel::new();
//! let mut events = channel.subscribe(None)?;
//! channel.broadcast(Message::new("score", serde_json::json!({"home": 1})))?;
//! let event = events.next().await.unwrap()?;
//! assert!(event.encode().starts_with("event: score\nid: "));
//! assert!(event.encode().ends_with("retry: 5\ndata: {\"home\":1}\n\n"));
//! # Ok(())
//! # }
//! ```

mod data_processing;
mod distributed;
mod error;
mod publisher;
mod sse;
mod sse_adapter;
mod sse_channel;

pub use data_processing::{
    DataProcessingChannel, ProcessQueue, ProcessedMessage, ProcessingAdapter,
};
pub use distributed::{
    ACTION_START, ACTION_STOP, SimpleDistributedApplicationChannel,
    SimpleDistributedApplicationListener,
};
pub use error::{Error, Result};
pub use publisher::{Channels, DEFAULT_CHANNEL, Publication, Publisher, Subscriber, Subscription};
pub use sse::{SseEvent, is_valid_event, sse_comment};
pub use sse_adapter::SseAdapter;
pub use sse_channel::{
    DEFAULT_REPLAY, DEFAULT_RETRY_MS, MESSAGE_TYPE_RESET, MESSAGE_TYPE_TOKEN_EXPIRED, SseChannel,
    SseChannelBuilder, SseStream, check_message,
};

// The README's example runs as a doctest, so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
