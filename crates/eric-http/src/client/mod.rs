//! A client for `eric serve` (feature `client`): publish, and follow channels as one
//! `Stream` of typed events that reconnects by itself and resumes with `Last-Event-ID`.
//!
//! ```no_run
//! use eric_http::client::{Client, Event};
//! use futures_util::StreamExt;
//! use serde_json::json;
//!
//! # async fn run() -> Result<(), eric_http::client::ClientError> {
//! let client = Client::new("http://127.0.0.1:8000").with_token("s3cret");
//! client.create(Some("news")).await?;
//! let mut news = client.follow("news");
//! client.broadcast("news", "headline", json!({"text": "hello"})).await?;
//! while let Some(event) = news.next().await {
//!     match event? {
//!         Event::Message(message) => println!("{}: {}", message.event, message.data),
//!         Event::Reset(reset) => println!("missed some of {}: resync", reset.channel),
//!         other => println!("{other:?}"),
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod error;
mod follow;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{Value, json};

pub use error::ClientError;
pub use follow::{Event, EventStream, Message, Reset};

/// What a token source returns: a fresh token, or why there is none.
type TokenFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;
type Refresh = Arc<dyn Fn() -> TokenFuture + Send + Sync>;

/// A client of one `eric serve` (or of a cluster behind one address). Cheap to clone:
/// clones share the connection pool and the token.
#[derive(Clone)]
pub struct Client {
    base: Arc<str>,
    http: reqwest::Client,
    token: Arc<RwLock<Option<String>>>,
    refresh: Option<Refresh>,
    backoff: Backoff,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// How a stream waits to reconnect while the server is down: from `first`, doubling
/// each failed attempt, up to `max`, each wait drawn uniform in `[d/2, d]` (so that
/// clients dropped together do not come back together).
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// The first wait after a failed attempt (default 1 s).
    pub first: Duration,
    /// The longest wait (default 30 s).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The wait after `failures` failed attempts in a row (the first is 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let doubled = self
            .first
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        let ceiling = doubled.min(self.max);
        ceiling.mul_f64(0.5 + fastrand::f64() / 2.0)
    }
}

/// What a broadcast did: its event id, and how many listeners it reached (`None` in a
/// cluster, where each process counts its own).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// The broadcast's event id.
    pub id: String,
    /// The listeners that will read it, where the server knows.
    pub listeners: Option<u64>,
}

impl Client {
    /// A client of the server at `base` (`http://host:port`, `https://…`).
    pub fn new(base: impl Into<String>) -> Self {
        let base: String = base.into();
        Client {
            base: base.trim_end_matches('/').into(),
            http: reqwest::Client::new(),
            token: Arc::default(),
            refresh: None,
            backoff: Backoff::default(),
        }
    }

    /// Uses this reqwest client (its TLS roots, timeouts, HTTP/2 choice).
    pub fn with_http(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// Sends `token` as a bearer token (a static token, or a signed one).
    pub fn with_token(self, token: impl Into<String>) -> Self {
        *self
            .token
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token.into());
        self
    }

    /// Gets a token from `refresh` when there is none yet, when the server refuses the
    /// one sent (401), and when a stream's token expires (`_eric_token_expired`); the
    /// stream then resumes with the new one, losing nothing.
    pub fn with_token_refresh<F, Fut, E>(mut self, refresh: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        self.refresh = Some(Arc::new(move || {
            let fetched = refresh();
            Box::pin(async move { fetched.await.map_err(|err| err.to_string()) })
        }));
        self
    }

    /// Waits this way between reconnection attempts while the server is down.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn current_token(&self) -> Option<String> {
        self.token
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Asks the token source for a new token; `false` if there is no source.
    async fn refresh_token(&self) -> Result<bool, ClientError> {
        let Some(refresh) = &self.refresh else {
            return Ok(false);
        };
        let token = refresh().await.map_err(ClientError::Token)?;
        *self
            .token
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token);
        Ok(true)
    }

    /// Sends the request `build` makes, with the token; once more with a fresh token if
    /// the server refuses this one and there is a source. The answer, if a success.
    async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        if self.current_token().is_none() {
            self.refresh_token().await?;
        }
        let mut refreshed = false;
        loop {
            let mut request = build(&self.http);
            if let Some(token) = self.current_token() {
                request = request.bearer_auth(token);
            }
            let response = request.send().await?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if status == reqwest::StatusCode::UNAUTHORIZED
                && !refreshed
                && self.refresh_token().await?
            {
                refreshed = true;
                continue;
            }
            let body = response.text().await.unwrap_or_default();
            return Err(ClientError::from_reply(status.as_u16(), &body));
        }
    }

    async fn json(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Value, ClientError> {
        let response = self.send(build).await?;
        let text = response.text().await?;
        serde_json::from_str(&text).map_err(|err| ClientError::Protocol(format!("{err}: {text}")))
    }

    /// `PUT /create`: a channel with the id given, or a fresh one; its id.
    pub async fn create(&self, channel: Option<&str>) -> Result<String, ClientError> {
        let url = self.url("/create");
        let body = json!({ "channel_id": channel });
        let created = self.json(|http| http.put(&url).json(&body)).await?;
        field(&created, "channel_id")
    }

    /// `POST /broadcast`: `payload` to every listener of `channel`, as an event of type
    /// `event`.
    pub async fn broadcast(
        &self,
        channel: &str,
        event: &str,
        payload: Value,
    ) -> Result<Published, ClientError> {
        let url = self.url("/broadcast");
        let body = json!({ "type": event, "payload": payload });
        let published = self
            .json(|http| {
                http.post(&url)
                    .query(&[("channel_id", channel)])
                    .json(&body)
            })
            .await?;
        Ok(Published {
            id: field(&published, "id")?,
            listeners: published["listeners"].as_u64(),
        })
    }

    /// `POST /dispatch`: `payload` to one listener.
    pub async fn dispatch(
        &self,
        channel: &str,
        listener: &str,
        event: &str,
        payload: Value,
    ) -> Result<(), ClientError> {
        let url = self.url("/dispatch");
        let body = json!({ "type": event, "payload": payload });
        self.send(|http| {
            http.post(&url)
                .query(&[("channel_id", channel), ("listener_id", listener)])
                .json(&body)
        })
        .await
        .map(drop)
    }

    /// `POST /subscribe`: a listener of `channel` that outlives its streams; its id.
    pub async fn add_listener(&self, channel: &str) -> Result<String, ClientError> {
        let url = self.url("/subscribe");
        let added = self
            .json(|http| http.post(&url).query(&[("channel_id", channel)]))
            .await?;
        field(&added, "listener_id")
    }

    /// `DELETE /listener/{channel}/{listener}`.
    pub async fn remove_listener(&self, channel: &str, listener: &str) -> Result<(), ClientError> {
        let url = self.url(&format!(
            "/listener/{}/{}",
            segment(channel),
            segment(listener)
        ));
        self.send(|http| http.delete(&url)).await.map(drop)
    }

    /// `DELETE /channel/{channel}`: its streams get the closed event and end.
    pub async fn remove_channel(&self, channel: &str) -> Result<(), ClientError> {
        let url = self.url(&format!("/channel/{}", segment(channel)));
        self.send(|http| http.delete(&url)).await.map(drop)
    }

    /// `GET /channels`: the ids (with a signed token, those it may subscribe to).
    pub async fn channels(&self) -> Result<Vec<String>, ClientError> {
        let url = self.url("/channels");
        let listed = self.json(|http| http.get(&url)).await?;
        serde_json::from_value(listed).map_err(|err| ClientError::Protocol(err.to_string()))
    }

    /// Follows `channel` (`GET /channels/{channel}/events`) from now on.
    pub fn follow(&self, channel: &str) -> EventStream {
        follow::follow(
            self.clone(),
            follow::Target::Channel(channel.to_owned()),
            None,
        )
    }

    /// Follows `channel` after the event `last_event_id` (a client's saved place).
    pub fn follow_from(&self, channel: &str, last_event_id: &str) -> EventStream {
        let target = follow::Target::Channel(channel.to_owned());
        follow::follow(self.clone(), target, Some(last_event_id.to_owned()))
    }

    /// Follows several channels on one connection (`GET /events?channel=…`), each
    /// event saying its channel.
    pub fn follow_many(&self, channels: &[&str]) -> EventStream {
        let channels = channels.iter().map(|c| (*c).to_owned()).collect();
        follow::follow(self.clone(), follow::Target::Channels(channels), None)
    }

    /// Follows a listener made with [`add_listener`](Self::add_listener)
    /// (`GET /stream/{channel}/{listener}`): the broadcasts and its dispatches.
    pub fn follow_listener(&self, channel: &str, listener: &str) -> EventStream {
        let target = follow::Target::Listener(channel.to_owned(), listener.to_owned());
        follow::follow(self.clone(), target, None)
    }
}

/// A path segment, percent-encoded.
fn segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn field(value: &Value, name: &str) -> Result<String, ClientError> {
    value[name]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ClientError::Protocol(format!("no {name:?} in {value}")))
}
