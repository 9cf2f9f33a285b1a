//! eric-http: the HTTP Server-Sent Events server. eric-sse's HTTP routes with JSON on
//! the wire, plus what a browser's `EventSource` wants: subscribe-and-stream in one
//! request, many channels on one stream, `Last-Event-ID` resume, keep-alive comments,
//! signed tokens per channel (`JwtConfig`, feature `jwt`), and TLS with HTTP/2
//! (`TlsConfig`, feature `tls`; h2c in cleartext).
//!
//! | route | does |
//! |---|---|
//! | `PUT /create` | a channel (`channel_id` optional) → 201 `{"channel_id"}`, 409 if taken |
//! | `POST /subscribe?channel_id=` | a listener → `{"listener_id"}` |
//! | `POST /broadcast?channel_id=` `{"type", "payload"}` | → `{"id", "listeners"}` |
//! | `POST /dispatch?channel_id=&listener_id=` `{"type", "payload"}` | → `{"ok": true}` |
//! | `GET /stream/{channel}/{listener}` | the listener's events (`text/event-stream`) |
//! | `GET /channels/{channel}/events` | subscribe and stream; the listener goes with the connection |
//! | `GET /events?channel=a&channel=b` | several channels merged on one stream ([`MultiEventId`]) |
//! | `DELETE /listener/{channel}/{listener}` | 204; its stream ends |
//! | `DELETE /channel/{channel}` | 204; its streams get the closed event and end |
//! | `GET /channels` | the ids |
//! | `GET /healthz`, `GET /metrics` | liveness; Prometheus text |
//!
//! Errors are `{"error", "message"}` with 400, 401, 403, 404, 408, 409, 413, 415, 422 or
//! 503.
//!
//! An idle stream holds about 18.8 KB of heap, 16 KB of it hyper's two connection
//! buffers, which stay almost unwritten. Resident, that is about 7 KiB per stream under
//! jemalloc, which the `eric` binary allocates with, and 11.5 KiB under glibc's
//! allocator: a program of your own that serves many streams should make jemalloc its
//! global allocator too (docs/BENCHMARKS.md, "Memory per idle stream").
//!
//! ```
//! use eric_http::{HttpConfig, HttpServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> eric_http::Result<()> {
//! let server = HttpServer::bind("127.0.0.1:0", HttpConfig::default()).await?;
//! println!("listening on http://{}", server.local_addr()?);
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let running = tokio::spawn(server.run_until(async { let _ = stopped.await; }));
//! // ... serve; `eric serve` stops on SIGINT/SIGTERM instead.
//! let _ = stop.send(());
//! running.await.unwrap()?;
//! # Ok(())
//! # }
//! ```

mod api;
mod auth;
#[cfg(feature = "client")]
pub mod client;
mod clock;
mod deliveries;
mod error;
mod events;
mod handoff;
mod latency;
mod memory;
mod metrics;
mod multi;
mod routes;
mod serve;
mod state;
mod striped;
#[cfg(feature = "tls")]
mod tls;
mod transport;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method};
use axum::routing::get;
use eric_persistence::{MemoryChannels, SharedChannels};
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::ChannelPattern;
#[cfg(feature = "jwt")]
pub use auth::{JwtConfig, JwtKey, TokenClaims};
pub use error::{Error, Result};
pub use multi::{MAX_POSITION_BYTES, MultiEventId};
pub use state::{DEFAULT_CAPACITY, DEFAULT_REPLAY_BYTES, HttpConfig};
#[cfg(feature = "tls")]
pub use tls::TlsConfig;

use state::AppState;

/// The HTTP SSE server.
pub struct HttpServer {
    listener: TcpListener,
    state: Arc<AppState>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("addr", &self.listener.local_addr().ok())
            .finish()
    }
}

impl HttpServer {
    /// Binds to `addr` (`127.0.0.1:8000`, or port 0 for any free port) and holds
    /// channels in memory.
    pub async fn bind(addr: &str, config: HttpConfig) -> Result<Self> {
        Self::bind_with_channels(addr, config, Arc::new(MemoryChannels::new())).await
    }

    /// Binds to `addr` and serves `channels`, wherever they are held: every route calls
    /// them alone ([`SseChannels`](eric_persistence::SseChannels)), so the server
    /// behaves the same on each backend.
    pub async fn bind_with_channels(
        addr: &str,
        config: HttpConfig,
        channels: SharedChannels,
    ) -> Result<Self> {
        let listener = TcpListener::bind(addr).await.map_err(|source| Error::Io {
            operation: "bind",
            source,
        })?;
        Ok(HttpServer {
            listener,
            state: Arc::new(AppState::new(config, channels)),
        })
    }

    /// Binds to `addr` and shares channels with every other eric process on the Redis
    /// at `redis_url` (cluster mode): a broadcast on any process reaches every
    /// process's streams, in one order, with the same event ids, so a client resumes
    /// with `Last-Event-ID` on any of them. Listeners made with `/subscribe` are stored
    /// in Redis too: any process dispatches to them and streams them
    /// (docs/SCALING.md). Keys are under `prefix` (`eric:` by default in `eric serve`).
    #[cfg(feature = "redis")]
    pub async fn bind_cluster(
        addr: &str,
        config: HttpConfig,
        redis_url: &str,
        prefix: &str,
    ) -> Result<Self> {
        let cluster =
            eric_persistence::RedisCluster::connect_with_prefix(redis_url, prefix).await?;
        Self::bind_with_channels(addr, config, Arc::new(cluster)).await
    }

    /// Binds to `addr` and keeps channels in `repository`: the stored ones are loaded
    /// now (listeners where they were, unread messages waiting), and every change is
    /// stored before it is acknowledged. `/channels/{c}/events` listeners stay this
    /// process's own.
    pub async fn bind_with_repository(
        addr: &str,
        config: HttpConfig,
        repository: eric_persistence::SseChannelRepository,
    ) -> Result<Self> {
        let stored = eric_persistence::StoredChannels::load(repository).await?;
        Self::bind_with_channels(addr, config, Arc::new(stored)).await
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(|source| Error::Io {
            operation: "local address",
            source,
        })
    }

    /// The channels it serves (to create or feed some from the same process, through
    /// the same backend as the routes).
    pub fn channels(&self) -> &SharedChannels {
        &self.state.channels
    }

    /// The router, for mounting eric's routes in a larger axum application.
    pub fn router(&self) -> Router {
        router(Arc::clone(&self.state))
    }

    /// Serves until `shutdown` completes, then shuts down gracefully, within
    /// [`HttpConfig::shutdown_timeout`]:
    /// 1. stops accepting connections;
    /// 2. lets the requests in flight that publish, create, remove or open a stream
    ///    finish (what they acknowledge is kept: stored, with a repository or a
    ///    cluster); later ones get 503 `ShuttingDown`;
    /// 3. ends every stream without a closing event and without spending an event id,
    ///    so that each `EventSource` reconnects after its retry time with its
    ///    `Last-Event-ID` (to the next process, or another of a cluster) and resumes
    ///    where it was; channels are not closed;
    /// 4. waits for the connections to finish, and records what stored listeners read.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let state = Arc::clone(&self.state);
        let app = router(Arc::clone(&self.state));
        let on_shutdown = async move {
            state.gate.close().await;
            if let Err(err) = state.channels.shutdown().await {
                tracing::warn!(%err, "could not record what stored listeners read");
            }
        };
        let metrics = Arc::clone(&self.state.metrics);
        serve::serve(
            self.listener,
            app,
            &self.state.config,
            metrics,
            shutdown,
            on_shutdown,
        )
        .await;
        Ok(())
    }
}

fn router(state: Arc<AppState>) -> Router {
    let config = &state.config;
    let gate = Arc::clone(&state);
    // Each route checks what it needs of the request's token (`auth::Access`).
    // Everything that changes state or opens a stream passes the gate, which shutting
    // down closes once what is in flight has finished.
    // The routes and their OpenAPI document come from the same annotated handlers.
    let gated = OpenApiRouter::new()
        .routes(routes!(routes::create))
        .routes(routes!(routes::broadcast))
        .routes(routes!(routes::dispatch))
        .routes(routes!(routes::remove_listener))
        .routes(routes!(routes::remove_channel))
        .routes(routes!(routes::subscribe))
        .routes(routes!(routes::streams::stream))
        .routes(routes!(routes::streams::events))
        .routes(routes!(routes::streams::multi_events))
        .routes(routes!(routes::channels))
        .layer(axum::middleware::from_fn(move |request, next| {
            routes::through_gate(Arc::clone(&gate), request, next)
        }));
    let (app, document) = OpenApiRouter::with_openapi(api::ApiDoc::openapi())
        .merge(gated)
        .routes(routes!(routes::healthz))
        .routes(routes!(routes::metrics))
        .split_for_parts();
    let document: Arc<str> = document.to_json().unwrap_or_default().into();
    let mut app = app
        .route(
            "/openapi.json",
            get(move || std::future::ready(routes::openapi(Arc::clone(&document)))),
        )
        .layer(DefaultBodyLimit::max(config.max_body_bytes));
    let request_timeout = config.request_timeout;
    app = app.layer(axum::middleware::from_fn(move |request, next| {
        routes::deadline(request_timeout, request, next)
    }));
    if !config.cors_origins.is_empty() {
        let any = config.cors_origins.iter().any(|o| o == "*");
        let origins = if any {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(
                config
                    .cors_origins
                    .iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok()),
            )
        };
        app = app.layer(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
                .allow_headers([
                    axum::http::header::CONTENT_TYPE,
                    axum::http::header::AUTHORIZATION,
                    axum::http::HeaderName::from_static("last-event-id"),
                ])
                // The token cookie goes with `withCredentials`, which browsers allow
                // from named origins only.
                .allow_credentials(!any),
        );
    }
    app.with_state(state)
}

// The README's example runs as a doctest, so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
