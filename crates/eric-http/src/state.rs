//! The server's configuration and shared state.

use std::time::Duration;

use eric_core::OverflowPolicy;
use eric_persistence::{ChannelSettings, SharedChannels};

/// The default bound on what a listener may have unread: the default replay window, so
/// that bounding costs no memory beyond what replay keeps anyway (a bounded channel keeps
/// its last `capacity` broadcasts, into which a lagging listener skips, and which
/// resuming clients can replay too).
pub const DEFAULT_CAPACITY: usize = eric_prefabs::DEFAULT_REPLAY;

/// The default bound, in bytes, on what each channel keeps for resuming clients.
pub const DEFAULT_REPLAY_BYTES: u64 = 16 << 20;

/// How an [`HttpServer`](crate::HttpServer) behaves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HttpConfig {
    /// A comment line every this often on an idle stream (default 15 s; `None`: never).
    pub keep_alive: Option<Duration>,
    /// How long a browser waits before it reconnects a dropped stream (SSE `retry`),
    /// around which each connection gets its own time, uniform in
    /// `[retry / 2, 3 * retry / 2]` (default 3 s): after a restart, reconnects spread
    /// over seconds instead of arriving at once. eric-sse's 5 ms, which channels made as
    /// a library keep, would make every browser reconnect 200 times a second.
    pub retry: Duration,
    /// Broadcasts each channel keeps for clients resuming with `Last-Event-ID`
    /// (default 1024).
    pub replay: usize,
    /// Of those, the most bytes each channel keeps (default 16 MiB; `None`: no bound in
    /// bytes): large messages shorten the window instead of growing the memory.
    pub replay_bytes: Option<u64>,
    /// The memory all channels' broadcasts may hold, in bytes (default: a quarter of the
    /// machine's memory, or of the cgroup's limit; `None`: no bound). At the budget,
    /// what only replay windows keep is released first; beyond it, publishes are
    /// refused with 503 `MemoryBudgetExceeded` until listeners have read what they
    /// hold. See [`eric_core::MemoryBudget`].
    pub max_retained_bytes: Option<u64>,
    /// The largest request body, in bytes (default 1 MiB).
    pub max_body_bytes: usize,
    /// Required as `Authorization: Bearer <token>` to create, publish and remove
    /// (default: none required).
    pub publish_token: Option<String>,
    /// Required to subscribe and stream: as a bearer token, or `?access_token=` (what
    /// a browser's `EventSource`, which cannot set headers, can send). Default: none.
    pub subscribe_token: Option<String>,
    /// TLS (default: none, cleartext): HTTP/2 and HTTP/1.1 by ALPN. In cleartext,
    /// HTTP/2 with prior knowledge (h2c) is served on the same port as HTTP/1.1.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::TlsConfig>,
    /// Signed tokens (JWT) that name the channels their bearer may publish to and
    /// subscribe to (default: none). The static tokens above keep working beside them.
    #[cfg(feature = "jwt")]
    pub jwt: Option<crate::JwtConfig>,
    /// The cookie a token may come in, for browsers (default `eric_token`); a token is
    /// also read from `Authorization: Bearer` and `?access_token=`, first.
    pub token_cookie: String,
    /// The most channels one `GET /events` stream may follow (default 64): more is 400.
    pub max_channels_per_stream: usize,
    /// Origins allowed by CORS (default: none, same origin only; `*`: any).
    pub cors_origins: Vec<String>,
    /// How long a connection may take to send a request head before it is closed
    /// (default 10 s): a client that connects and sends nothing is not kept.
    pub header_read_timeout: Duration,
    /// How long a request may take to arrive and be answered once its head is in (its
    /// body read, its write stored; a stream's events do not count): 408 after that
    /// (default 10 s). A client that sends its body a byte at a time is not kept.
    pub request_timeout: Duration,
    /// The most channels the server holds (default 10,000): creating one more gets 503
    /// `LimitReached`, so that no client can grow the server without end.
    pub max_channels: usize,
    /// The most listeners a channel holds (default 100,000): one more gets 503
    /// `LimitReached`.
    pub max_listeners: usize,
    /// The most connections open at once (default 50,000; `None`: no cap): one more is
    /// answered 503 `LimitReached` and closed, so that a storm of clients cannot take
    /// the process's memory (an idle stream holds about 7 KiB).
    pub max_connections: Option<usize>,
    /// What each listener of a channel created here may have unread (default
    /// [`DEFAULT_CAPACITY`], 1024; `None`: unbounded). A client that stops reading holds its listener back, and
    /// with it everything broadcast since: the bound is what keeps it from holding
    /// memory without end.
    pub capacity: Option<usize>,
    /// How long a stream lasts at most (default: no limit): it then ends with no event
    /// and its `EventSource` reconnects with `Last-Event-ID`, losing nothing, as after a
    /// restart. For proxies that cut long responses, and to spread clients again over
    /// the processes of a cluster.
    pub max_stream_duration: Option<Duration>,
    /// How long a stream gathers events before it writes them (default: none, each
    /// event is written as it comes). With a delay, what a stream receives within it
    /// after an event goes out in one write: fewer writes and system calls per event
    /// when events come fast, at the cost of up to that much latency (Centrifugo's
    /// `client.write_delay`).
    pub write_delay: Option<Duration>,
    /// How long a graceful shutdown may take in all, from the signal to the last
    /// connection closed (default 10 s): connections still open then are dropped.
    pub shutdown_timeout: Duration,
    /// What happens to a listener over `capacity` (default
    /// [`OverflowPolicy::Disconnect`]: its stream ends with an `_eric_error` event; an
    /// `EventSource` reconnects with `Last-Event-ID` and gets a `too_old` reset, then the
    /// last `capacity` broadcasts: a listener is never further behind than that).
    pub overflow: OverflowPolicy,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            keep_alive: Some(Duration::from_secs(15)),
            retry: Duration::from_secs(3),
            replay: eric_prefabs::DEFAULT_REPLAY,
            replay_bytes: Some(DEFAULT_REPLAY_BYTES),
            max_retained_bytes: Some(crate::memory::default_budget()),
            max_body_bytes: 1 << 20,
            publish_token: None,
            subscribe_token: None,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "jwt")]
            jwt: None,
            token_cookie: "eric_token".to_owned(),
            max_channels_per_stream: 64,
            cors_origins: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            max_channels: 10_000,
            max_listeners: 100_000,
            max_connections: Some(50_000),
            capacity: Some(DEFAULT_CAPACITY),
            overflow: OverflowPolicy::Disconnect,
            shutdown_timeout: Duration::from_secs(10),
            max_stream_duration: None,
            write_delay: None,
        }
    }
}

impl HttpConfig {
    /// Sets the keep-alive interval (`None`: never).
    pub fn keep_alive(mut self, every: Option<Duration>) -> Self {
        self.keep_alive = every;
        self
    }

    /// Sets the reconnection time around which each connection's is spread.
    pub fn retry(mut self, retry: Duration) -> Self {
        self.retry = retry;
        self
    }

    /// A reconnection time for one connection, in milliseconds: uniform in
    /// `[retry / 2, 3 * retry / 2]`.
    pub(crate) fn connection_retry_ms(&self) -> u64 {
        let retry = u64::try_from(self.retry.as_millis()).unwrap_or(u64::MAX / 2);
        fastrand::u64(retry / 2..=retry.saturating_add(retry / 2))
    }

    /// Sets how many broadcasts each channel keeps for resuming clients.
    pub fn replay(mut self, broadcasts: usize) -> Self {
        self.replay = broadcasts;
        self
    }

    /// Sets how long a stream lasts at most (`None`: no limit).
    pub fn max_stream_duration(mut self, duration: Option<Duration>) -> Self {
        self.max_stream_duration = duration;
        self
    }

    /// Sets how long a stream gathers events before it writes them (`None`: each as it
    /// comes).
    pub fn write_delay(mut self, delay: Option<Duration>) -> Self {
        self.write_delay = delay;
        self
    }

    /// Sets the most bytes each channel keeps for resuming clients (`None`: no bound).
    pub fn replay_bytes(mut self, bytes: Option<u64>) -> Self {
        self.replay_bytes = bytes;
        self
    }

    /// Sets the memory budget of all channels' broadcasts (`None`: no bound).
    pub fn max_retained_bytes(mut self, bytes: Option<u64>) -> Self {
        self.max_retained_bytes = bytes;
        self
    }

    /// Sets the largest request body.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Requires `token` to create, publish and remove.
    pub fn publish_token(mut self, token: Option<String>) -> Self {
        self.publish_token = token;
        self
    }

    /// Requires `token` to subscribe and stream.
    pub fn subscribe_token(mut self, token: Option<String>) -> Self {
        self.subscribe_token = token;
        self
    }

    /// Serves TLS with this certificate (`None`: cleartext).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: Option<crate::TlsConfig>) -> Self {
        self.tls = tls;
        self
    }

    /// Accepts signed tokens checked with these keys.
    #[cfg(feature = "jwt")]
    pub fn jwt(mut self, jwt: Option<crate::JwtConfig>) -> Self {
        self.jwt = jwt;
        self
    }

    /// Reads a token from the cookie `name` too.
    pub fn token_cookie(mut self, name: impl Into<String>) -> Self {
        self.token_cookie = name.into();
        self
    }

    /// Caps the channels one `GET /events` stream may follow.
    pub fn max_channels_per_stream(mut self, max: usize) -> Self {
        self.max_channels_per_stream = max;
        self
    }

    /// Sets how long a connection may take to send a request head.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Sets how long a request may take to arrive and be answered.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the most channels the server holds, and listeners each channel holds.
    pub fn limits(mut self, max_channels: usize, max_listeners: usize) -> Self {
        self.max_channels = max_channels;
        self.max_listeners = max_listeners;
        self
    }

    /// Caps the connections open at once (`None`: no cap).
    pub fn max_connections(mut self, max: Option<usize>) -> Self {
        self.max_connections = max;
        self
    }

    /// Bounds what each listener of a channel created here may have unread, and says
    /// what happens to one that goes over.
    pub fn capacity(mut self, capacity: usize, overflow: OverflowPolicy) -> Self {
        self.capacity = Some(capacity);
        self.overflow = overflow;
        self
    }

    /// Lets listeners of channels created here have any number unread (eric-api's
    /// behaviour, and its memory growth).
    pub fn unbounded(mut self) -> Self {
        self.capacity = None;
        self
    }

    /// Sets how long a graceful shutdown may take in all.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Allows these origins (CORS).
    pub fn cors_origins(mut self, origins: Vec<String>) -> Self {
        self.cors_origins = origins;
        self
    }
}

/// What requests that change state or open a stream pass through: open until the
/// server shuts down, which waits for those in flight before it closes it.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    closed: tokio::sync::RwLock<bool>,
}

impl Gate {
    /// A pass, held while the request is served; `None` once the gate is closed.
    pub(crate) async fn enter(&self) -> Option<tokio::sync::RwLockReadGuard<'_, bool>> {
        let pass = self.closed.read().await;
        (!*pass).then_some(pass)
    }

    /// Waits for every pass given out to come back, and gives out no more.
    pub(crate) async fn close(&self) {
        *self.closed.write().await = true;
    }
}

pub(crate) use crate::metrics::Metrics;

pub(crate) struct AppState {
    /// Every channel, wherever the backend holds them: the one thing routes call.
    pub(crate) channels: SharedChannels,
    pub(crate) config: HttpConfig,
    pub(crate) metrics: std::sync::Arc<Metrics>,
    pub(crate) gate: Gate,
    /// Who may do what.
    pub(crate) auth: crate::auth::Auth,
}

impl AppState {
    /// A server's state over `channels`.
    pub(crate) fn new(config: HttpConfig, channels: SharedChannels) -> Self {
        if let Some(limit) = config.max_retained_bytes {
            // Every channel the backend holds, loaded or to come; a budget the
            // backend's owner set already stays.
            channels
                .local()
                .limit_memory(eric_core::MemoryBudget::new(limit));
        }
        let metrics = std::sync::Arc::new(Metrics::new(SharedChannels::clone(&channels)));
        AppState {
            auth: crate::auth::Auth::new(&config),
            channels,
            config,
            metrics,
            gate: Gate::default(),
        }
    }

    /// The body of an SSE response of `events`, ending when `expires` passes.
    pub(crate) fn sse_body(
        &self,
        events: eric_persistence::EventStream,
        expires: Option<u64>,
    ) -> crate::events::SseBody {
        crate::events::SseBody::new(
            events,
            self.config.keep_alive,
            self.config.connection_retry_ms(),
            std::sync::Arc::clone(&self.metrics),
            expires,
        )
        .lifetime(self.config.max_stream_duration)
        .write_delay(self.config.write_delay)
    }

    /// The settings of a channel created here: the server's, with `id` if given.
    pub(crate) fn channel_settings(&self, id: Option<String>) -> ChannelSettings {
        let config = &self.config;
        let mut settings = ChannelSettings::default().replay(config.replay);
        if let Some(bytes) = config.replay_bytes {
            settings = settings.replay_bytes(bytes);
        }
        if let Some(capacity) = config.capacity {
            settings = settings.capacity(capacity, config.overflow);
        }
        match id {
            Some(id) => settings.id(id),
            None => settings,
        }
    }

    pub(crate) fn metrics_text(&self) -> String {
        self.metrics.text()
    }
}
