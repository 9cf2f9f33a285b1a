//! Following channels: one `Stream` of typed events over as many connections as it
//! takes, reconnecting as an `EventSource` does (after the server's `retry`, with
//! `Last-Event-ID`), backing off while the server is down, and renewing its token when
//! it expires.

use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use serde_json::Value;

use super::{Client, ClientError};
use crate::MultiEventId;

/// The events of a followed channel (or channels), as they come; it ends when the
/// channel is removed, or on an error that waiting cannot cure (401 after a refresh,
/// 403, 404), which it yields first.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, ClientError>> + Send>>;

/// What a followed stream yields.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A broadcast (or a dispatch, on a listener's stream).
    Message(Message),
    /// The server could not resume `channel` where this stream was: what it still keeps
    /// follows, and what it no longer keeps is lost to this client, which should resync.
    Reset(Reset),
    /// `channel` was removed; no more events of it come.
    ChannelClosed {
        /// Which.
        channel: String,
    },
    /// The server ended the stream with an error (a listener that fell too far behind,
    /// say); the client reconnects and resumes, after a [`Reset`](Self::Reset) if it
    /// missed more than the server keeps for it.
    StreamError {
        /// The server's words.
        message: String,
    },
}

/// A broadcast or dispatch.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Message {
    /// The channel it came from.
    pub channel: String,
    /// Its type (the SSE event name).
    pub event: String,
    /// Its payload.
    pub data: Value,
    /// Its event id (broadcasts; a dispatch has none).
    pub id: Option<String>,
}

/// The server's `_eric_reset` (docs/PROTOCOL.md).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Reset {
    /// The channel.
    pub channel: String,
    /// `too_old`, `other_epoch`, `unparseable` or `ahead`.
    pub reason: String,
    /// The oldest event the channel still keeps, the first to follow.
    pub oldest_kept: Option<String>,
}

/// What is followed.
pub(super) enum Target {
    Channel(String),
    Channels(Vec<String>),
    Listener(String, String),
}

impl Target {
    fn path(&self) -> String {
        use super::segment;
        match self {
            Target::Channel(c) => format!("/channels/{}/events", segment(c)),
            Target::Listener(c, l) => format!("/stream/{}/{}", segment(c), segment(l)),
            Target::Channels(channels) => {
                let query: Vec<String> = channels
                    .iter()
                    .map(|c| format!("channel={}", segment(c)))
                    .collect();
                format!("/events?{}", query.join("&"))
            }
        }
    }

    /// The channel of single-channel streams.
    fn channel(&self) -> &str {
        match self {
            Target::Channel(c) | Target::Listener(c, _) => c,
            Target::Channels(_) => "",
        }
    }
}

type Raw = Pin<Box<dyn Stream<Item = Result<eventsource_stream::Event, String>> + Send>>;

struct Following {
    client: Client,
    target: Target,
    last_id: Option<String>,
    /// The server's reconnection time, as last sent.
    retry: Duration,
    /// Connection attempts that failed in a row.
    failures: u32,
    connection: Option<Raw>,
    /// Reconnect at once (a fresh token), not after `retry`.
    at_once: bool,
    done: bool,
}

pub(super) fn follow(client: Client, target: Target, last_id: Option<String>) -> EventStream {
    let following = Following {
        client,
        target,
        last_id,
        retry: Duration::from_secs(3),
        failures: 0,
        connection: None,
        at_once: true,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(
        following,
        |mut following| async move {
            let item = following.next().await?;
            Some((item, following))
        },
    ))
}

impl Following {
    async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        loop {
            if self.done {
                return None;
            }
            let Some(connection) = &mut self.connection else {
                if let Err(err) = self.connect().await {
                    if err.is_transient() {
                        self.failures += 1;
                        tokio::time::sleep(self.client.backoff.delay(self.failures)).await;
                        continue;
                    }
                    self.done = true;
                    return Some(Err(err));
                }
                continue;
            };
            match connection.next().await {
                Some(Ok(raw)) => {
                    if let Some(item) = self.event(raw).await {
                        return Some(item);
                    }
                }
                // Dropped, or ended by the server (a restart): after its retry.
                Some(Err(_)) | None => {
                    self.connection = None;
                    if !std::mem::take(&mut self.at_once) {
                        tokio::time::sleep(self.retry).await;
                    }
                }
            }
        }
    }

    async fn connect(&mut self) -> Result<(), ClientError> {
        let url = self.client.url(&self.target.path());
        let last = self.last_id.clone();
        let response = self
            .client
            .send(|http| {
                let request = http.get(&url).header("accept", "text/event-stream");
                match &last {
                    Some(id) => request.header("last-event-id", id),
                    None => request,
                }
            })
            .await?;
        self.failures = 0;
        self.at_once = false;
        let events = response
            .bytes_stream()
            .eventsource()
            .map(|event| event.map_err(|err| err.to_string()));
        self.connection = Some(Box::pin(events));
        Ok(())
    }

    /// The typed event of `raw`, or `None` for one that is the stream's own business
    /// (a token that expired, which it renews).
    async fn event(
        &mut self,
        raw: eventsource_stream::Event,
    ) -> Option<Result<Event, ClientError>> {
        if let Some(retry) = raw.retry {
            self.retry = retry;
        }
        if !raw.id.is_empty() {
            self.last_id = Some(raw.id.clone());
        }
        let (channel, data) = match &self.target {
            Target::Channels(_) if raw.event != crate::events::TOKEN_EXPIRED => {
                let envelope: Value = serde_json::from_str(&raw.data).unwrap_or_default();
                let channel = envelope["channel"].as_str().unwrap_or_default().to_owned();
                (channel, envelope["data"].clone())
            }
            target => (
                target.channel().to_owned(),
                serde_json::from_str(&raw.data).unwrap_or(Value::String(raw.data.clone())),
            ),
        };
        let event = match raw.event.as_str() {
            crate::events::TOKEN_EXPIRED => {
                // Renew it and resume at once, where the stream was.
                self.connection = None;
                self.at_once = true;
                return match self.client.refresh_token().await {
                    Ok(true) => None,
                    Ok(false) => {
                        self.done = true;
                        Some(Err(ClientError::TokenExpired))
                    }
                    Err(err) => {
                        self.done = true;
                        Some(Err(err))
                    }
                };
            }
            eric_prefabs::MESSAGE_TYPE_RESET => Event::Reset(Reset {
                channel,
                reason: data["reason"].as_str().unwrap_or_default().to_owned(),
                oldest_kept: data["oldest_kept"].as_str().map(str::to_owned),
            }),
            eric_core::MESSAGE_TYPE_CLOSED => {
                self.closed(&channel);
                Event::ChannelClosed { channel }
            }
            eric_core::MESSAGE_TYPE_INTERNAL_ERROR => Event::StreamError {
                message: data["error"].as_str().unwrap_or_default().to_owned(),
            },
            _ => Event::Message(Message {
                channel,
                event: if raw.event.is_empty() {
                    "message".to_owned()
                } else {
                    raw.event
                },
                data,
                id: (!raw.id.is_empty()).then_some(raw.id),
            }),
        };
        Some(Ok(event))
    }

    /// `channel` is gone: a single channel's stream ends; a stream of several goes on
    /// without it, its position taken out of the id it resumes with.
    fn closed(&mut self, channel: &str) {
        let Target::Channels(channels) = &mut self.target else {
            self.done = true;
            return;
        };
        let Some(index) = channels.iter().position(|c| c == channel) else {
            return;
        };
        let positions = self
            .last_id
            .as_deref()
            .and_then(|id| MultiEventId::parse(id, channels.len()));
        channels.remove(index);
        if channels.is_empty() {
            self.done = true;
            return;
        }
        self.last_id = positions.map(|id| {
            let mut positions = id.positions().to_vec();
            positions.remove(index);
            MultiEventId::new(positions).to_string()
        });
    }
}
