//! The accept loop: each connection served by hyper's HTTP/1.1 or HTTP/2 connection
//! directly, the protocol told apart first: by ALPN over TLS, by the HTTP/2 preface
//! (prior knowledge, h2c) in cleartext, read with `peek` so that nothing is buffered.
//!
//! Not `axum::serve`: that serves every connection through hyper-util's auto
//! (HTTP/1 + HTTP/2) builder, which measured 35 KB of heap and 86 allocations per idle
//! SSE stream against 18.8 KB and 14.5 here (25 vs 11.5 KiB of RSS on glibc's
//! allocator). An SSE server's cost is its idle connections, so that is the number that
//! matters; telling the protocol apart here, in a task that ends before the connection
//! is served, keeps an HTTP/1.1 stream's cost what it was.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::time::Duration;

use std::sync::Arc;

use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::CONNECTION;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};

use crate::error::Error;
use prometheus_client::metrics::gauge::Gauge;

use crate::state::{HttpConfig, Metrics};

/// The router as hyper's service, its future boxed per request: hyper keeps a slot the
/// size of the service's future for the whole connection, and axum's is 320 bytes
/// where a box is 16, on every idle stream.
struct App(Router);

impl hyper::service::Service<hyper::Request<Incoming>> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        // No `poll_ready` first: a router's returns `Ready` without looking (axum 0.8,
        // routing/mod.rs). A clone is a reference count.
        let mut router = self.0.clone();
        Box::pin(tower_service::Service::call(
            &mut router,
            request.map(axum::body::Body::new),
        ))
    }
}

/// Counts itself in one of the metrics' gauges while it lives (an open connection, a
/// refusal being answered).
struct Counted(Gauge);

impl Counted {
    fn new(metrics: &Metrics, gauge: fn(&Metrics) -> &Gauge) -> Self {
        let gauge = gauge(metrics).clone();
        gauge.inc();
        Counted(gauge)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What a connection over `--max-connections` gets: 503 `LimitReached` to every request,
/// then the connection is closed.
struct Refuse(usize);

impl hyper::service::Service<hyper::Request<Incoming>> for Refuse {
    type Response = Response;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response, Infallible>>;

    fn call(&self, _: hyper::Request<Incoming>) -> Self::Future {
        let limit = format!("the server holds its maximum of {} connections", self.0);
        let mut response = Error::LimitReached(limit).into_response();
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        std::future::ready(Ok(response))
    }
}

/// Refusals answered at once: past this many, a connection over the limit is closed
/// without an answer, so that a storm of them costs nothing either.
const REFUSING_AT_ONCE: i64 = 1024;

/// Accepts and serves connections until `shutdown` completes; then stops accepting,
/// runs `on_shutdown`, and waits for the open connections to finish, for
/// `config.shutdown_timeout` at most in all. Past `config.max_connections` open ones, a
/// new connection is answered 503 and closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    config: &HttpConfig,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
    on_shutdown: impl Future<Output = ()>,
) {
    let servers = Arc::new(Servers::new(app, config, Arc::clone(&metrics)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let open = usize::try_from(metrics.connections.get()).unwrap_or(0);
        if let Some(max) = config.max_connections.filter(|&max| open >= max) {
            metrics.refused_connections.inc();
            servers.refuse(tcp, max);
            continue;
        }
        let open = Counted::new(&metrics, |m| &m.connections);
        // Events are small writes that must go out now, not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        tokio::spawn(Arc::clone(&servers).start(tcp, graceful.watcher(), open));
    }
    drop(listener);
    let finish = async {
        on_shutdown.await;
        graceful.shutdown().await;
    };
    let shutdown_timeout = config.shutdown_timeout;
    if tokio::time::timeout(shutdown_timeout, finish)
        .await
        .is_err()
    {
        tracing::warn!(
            ?shutdown_timeout,
            "connections still open at the shutdown timeout; stopping anyway"
        );
    }
}

/// What serves connections: one builder per protocol, the router, TLS if configured.
struct Servers {
    app: Router,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// How long a connection may take to say what it speaks (TLS handshake, HTTP/2
    /// preface) or, over HTTP/1.1, to send its request head.
    first_bytes_within: Duration,
    metrics: Arc<Metrics>,
}

/// The HTTP/2 connection preface (RFC 9113, 3.4): what a client with prior knowledge
/// sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Servers {
    fn new(app: Router, config: &HttpConfig, metrics: Arc<Metrics>) -> Self {
        let mut http1 = http1::Builder::new();
        // A client that connects and never finishes its request head is dropped.
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        // A peer gone without a word is found by a ping (HTTP/1.1 finds it on the next
        // keep-alive comment's write; so does HTTP/2, but only for streams).
        http2
            .timer(TokioTimer::new())
            .keep_alive_interval(config.keep_alive)
            .keep_alive_timeout(config.header_read_timeout);
        Servers {
            app,
            http1,
            http2,
            #[cfg(feature = "tls")]
            tls: config
                .tls
                .as_ref()
                .map(|tls| tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.server))),
            first_bytes_within: config.header_read_timeout,
            metrics,
        }
    }

    /// Tells what `tcp` speaks, then serves it in a task of its own (this one ends, so
    /// that what telling it apart took is not held for the connection's life).
    async fn start(self: Arc<Self>, tcp: TcpStream, watcher: Watcher, open: Counted) {
        #[cfg(feature = "tls")]
        if let Some(acceptor) = &self.tls {
            let accepted =
                tokio::time::timeout(self.first_bytes_within, acceptor.accept(tcp)).await;
            let Ok(Ok(tls)) = accepted else {
                tracing::trace!("TLS handshake failed or timed out");
                return;
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            self.serve(TokioIo::new(tls), h2, watcher, open);
            return;
        }
        let Some(h2) = speaks_h2(&tcp, self.first_bytes_within).await else {
            return;
        };
        self.serve(TokioIo::new(tcp), h2, watcher, open);
    }

    fn serve<I>(&self, io: I, h2: bool, watcher: Watcher, open: Counted)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let app = App(self.app.clone());
        if h2 {
            let protocol = Counted::new(&self.metrics, |m| &m.h2_connections);
            spawn_watched(
                watcher,
                self.http2.serve_connection(io, app),
                (open, protocol),
            );
        } else {
            let protocol = Counted::new(&self.metrics, |m| &m.http1_connections);
            spawn_watched(
                watcher,
                self.http1.serve_connection(io, app),
                (open, protocol),
            );
        }
    }

    /// Answers a connection over `max` with 503 and closes it (cleartext HTTP/1.1; over
    /// TLS, or past [`REFUSING_AT_ONCE`], it is closed unanswered: a handshake per
    /// refusal would make the storm cost what the cap is there to save).
    fn refuse(&self, tcp: TcpStream, max: usize) {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return;
        }
        if self.metrics.refusing.get() < REFUSING_AT_ONCE {
            let refusing = Counted::new(&self.metrics, |m| &m.refusing);
            let refusal = self.http1.serve_connection(TokioIo::new(tcp), Refuse(max));
            tokio::spawn(refusal.map(move |_| drop(refusing)));
        }
    }
}

/// Serves `connection` in a task of its own, shut down gracefully with the others,
/// holding `counted` (its gauges) until it ends.
fn spawn_watched<C>(watcher: Watcher, connection: C, counted: (Counted, Counted))
where
    C: hyper_util::server::graceful::GracefulConnection<Error = hyper::Error> + Send + 'static,
{
    // `map`, not an async block: that would hold the connection twice (captured, then
    // awaited), 800 bytes more per idle stream.
    tokio::spawn(watcher.watch(connection).map(move |ended| {
        drop(counted);
        if let Err(e) = ended {
            tracing::trace!(error = %e, "connection ended with an error");
        }
    }));
}

/// Whether a cleartext connection opens with the HTTP/2 preface (`None`: it said
/// nothing within `within`, or went away). Peeks, so that hyper reads the bytes again;
/// an HTTP/1.1 request differs from the preface by its second byte at the latest.
async fn speaks_h2(tcp: &TcpStream, within: Duration) -> Option<bool> {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = [0u8; H2_PREFACE.len()];
    let mut had = 0;
    loop {
        let n = tokio::time::timeout_at(deadline, tcp.peek(&mut seen))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None; // Closed before a byte.
        }
        if seen[..n] != H2_PREFACE[..n] {
            return Some(false);
        }
        if n == H2_PREFACE.len() {
            return Some(true);
        }
        if n == had {
            // Part of the preface and no more yet: `peek` would answer at once again,
            // so wait a moment rather than spin (a timer, not a busy poll).
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        had = n;
    }
}

/// What axum (and hyper 0.14 before it) does: a peer's failed handshake is the peer's
/// problem; anything else (out of file descriptors, typically) is logged and waited out.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
