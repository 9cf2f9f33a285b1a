//! eric-socket: eric-sse's Unix-socket controller, server and client. Python's
//! `SocketClient` works against [`SocketServer`] unchanged.
//!
//! The protocol: one connection per command; the client writes one JSON object (`v`
//! verb, `c` channel, `r` listener, `t` type, `p` payload) and shuts down its write
//! side; the server replies (`ack`, an id, or an error such as
//! `InvalidChannelException('No channel with id x')`) and closes, or for `l` and `w`
//! writes one JSON line per message. See [`Verb`] and docs/PROTOCOL.md.
//!
//! ```
//! use eric_socket::{SocketClient, SocketServer};
//! use futures_util::StreamExt;
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> eric_socket::Result<()> {
//! let path = std::env::temp_dir().join(format!("eric-doc-{}.sock", std::process::id()));
//! let server = SocketServer::bind(&path).await?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let running = tokio::spawn(server.run_until(async { let _ = stopped.await; }));
//!
//! let client = SocketClient::new(&path);
//! let channel = client.create_channel().await?;
//! let listener = client.register(&channel).await?;
//! client.broadcast_message(&channel, "greeting", json!("hello")).await?;
//! let mut lines = client.stream(&channel, &listener).await?;
//! assert_eq!(
//!     lines.next().await.unwrap()?,
//!     r#"{"event": "greeting", "retry": 5, "data": "hello"}"#
//! );
//! let _ = stop.send(());
//! running.await.unwrap()?;
//! # Ok(())
//! # }
//! ```

mod client;
mod error;
mod protocol;
mod server;

pub use client::{LineStream, SocketClient};
pub use error::{Error, Result};
pub use protocol::{ErrorReply, Request, Verb, parse_request, stream_line};
pub use server::{ACK, ServerHandle, SocketServer, SocketServerConfig};

// The README's example runs as a doctest, so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
