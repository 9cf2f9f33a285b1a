//! The socket client: eric-sse's `SocketClient`, in Rust.

use std::path::{Path, PathBuf};
use std::pin::Pin;

use futures_util::Stream;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::error::{Error, Result};

/// The lines of a stream (`l` or `w`), each without its newline.
pub type LineStream = Pin<Box<dyn Stream<Item = Result<String>> + Send>>;

/// A client of a [`SocketServer`](crate::SocketServer) (or of eric-sse's), with
/// eric-sse's `SocketClient` methods. Each command is one connection.
///
/// Replies that name an error (`InvalidChannelException('...')`, ...) come back as
/// [`Error::Refused`].
#[derive(Clone, Debug)]
pub struct SocketClient {
    path: PathBuf,
}

impl SocketClient {
    /// A client of the server at `path`.
    pub fn new(path: impl AsRef<Path>) -> Self {
        SocketClient {
            path: path.as_ref().to_owned(),
        }
    }

    async fn open(&self, payload: &Value) -> Result<UnixStream> {
        let mut stream = UnixStream::connect(&self.path)
            .await
            .map_err(|e| Error::io("connect to", &self.path, e))?;
        stream
            .write_all(payload.to_string().as_bytes())
            .await
            .map_err(|e| Error::io("send to", &self.path, e))?;
        stream
            .shutdown()
            .await
            .map_err(|e| Error::io("end the request to", &self.path, e))?;
        Ok(stream)
    }

    /// Sends any request and returns the reply as sent (eric-sse's `send_payload`).
    pub async fn send_payload(&self, payload: &Value) -> Result<String> {
        let mut stream = self.open(payload).await?;
        let mut reply = String::new();
        stream
            .read_to_string(&mut reply)
            .await
            .map_err(|e| Error::io("read the reply from", &self.path, e))?;
        Ok(reply)
    }

    async fn command(&self, payload: Value) -> Result<String> {
        let reply = self.send_payload(&payload).await?;
        if is_error_reply(&reply) {
            return Err(Error::Refused { reply });
        }
        Ok(reply)
    }

    async fn ack(&self, payload: Value) -> Result<()> {
        let reply = self.command(payload).await?;
        if reply == crate::ACK {
            Ok(())
        } else {
            Err(Error::BadReply { reply })
        }
    }

    /// Creates an SSE channel; its id.
    pub async fn create_channel(&self) -> Result<String> {
        self.command(json!({"v": "c"})).await
    }

    /// Adds a listener to `channel_id`; its id.
    pub async fn register(&self, channel_id: &str) -> Result<String> {
        self.command(json!({"v": "r", "c": channel_id})).await
    }

    /// Broadcasts a message on `channel_id`.
    pub async fn broadcast_message(
        &self,
        channel_id: &str,
        message_type: &str,
        payload: Value,
    ) -> Result<()> {
        self.ack(json!({"v": "b", "c": channel_id, "t": message_type, "p": payload}))
            .await
    }

    /// Dispatches a message to `receiver_id` on `channel_id`.
    pub async fn dispatch(
        &self,
        channel_id: &str,
        receiver_id: &str,
        message_type: &str,
        payload: Value,
    ) -> Result<()> {
        self.ack(
            json!({"v": "d", "c": channel_id, "r": receiver_id, "t": message_type, "p": payload}),
        )
        .await
    }

    /// Removes a listener.
    pub async fn remove_listener(&self, channel_id: &str, listener_id: &str) -> Result<()> {
        self.ack(json!({"v": "rl", "c": channel_id, "r": listener_id}))
            .await
    }

    /// Removes a channel.
    pub async fn remove_channel(&self, channel_id: &str) -> Result<()> {
        self.ack(json!({"v": "rc", "c": channel_id})).await
    }

    /// Streams a listener: one JSON line a message (eric-sse's `stream`).
    pub async fn stream(&self, channel_id: &str, listener_id: &str) -> Result<LineStream> {
        self.lines(json!({"v": "l", "c": channel_id, "r": listener_id}))
            .await
    }

    /// Watches a channel through a listener of its own: one JSON line a message.
    pub async fn watch(&self, channel_id: &str) -> Result<LineStream> {
        self.lines(json!({"v": "w", "c": channel_id})).await
    }

    async fn lines(&self, payload: Value) -> Result<LineStream> {
        let stream = self.open(&payload).await?;
        let path = self.path.clone();
        let lines = BufReader::new(stream).lines();
        Ok(Box::pin(futures_util::stream::unfold(
            (lines, path),
            |(mut lines, path)| async move {
                match lines.next_line().await {
                    Ok(Some(line)) if is_error_reply(&line) => {
                        Some((Err(Error::Refused { reply: line }), (lines, path)))
                    }
                    Ok(Some(line)) => Some((Ok(line), (lines, path))),
                    Ok(None) => None,
                    Err(err) => Some((
                        Err(Error::io("read the stream from", &path, err)),
                        (lines, path),
                    )),
                }
            },
        )))
    }
}

/// Whether a reply is an error: `Name(...)` rather than an id, `ack` or a JSON line.
fn is_error_reply(reply: &str) -> bool {
    let Some(open) = reply.find('(') else {
        return false;
    };
    reply.ends_with(')')
        && open > 0
        && reply[..open].chars().all(|c| c.is_ascii_alphanumeric())
        && reply[..1].chars().all(|c| c.is_ascii_uppercase())
}
