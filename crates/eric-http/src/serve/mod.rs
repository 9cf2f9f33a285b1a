//! The accept loop: each connection served by hyper's HTTP/1.1 or HTTP/2 connection
//! directly, the protocol told apart first: by ALPN over TLS, by the HTTP/2 preface
//! (prior knowledge, h2c) in cleartext, read with `peek` so that nothing is buffered.
//! An HTTP/1.x connection whose request opened a stream is then written by the stream's
//! writer (`handoff.rs`).
//!
//! Not `axum::serve`: that serves every connection through hyper-util's auto
//! (HTTP/1 + HTTP/2) builder, which measured 35 KB of heap and 86 allocations per idle
//! SSE stream against 18.8 KB and 14.5 here when hyper wrote every stream (25 vs
//! 11.5 KiB of RSS on glibc's allocator; 2.5 KB since the handoff). An SSE server's cost
//! is its idle connections, so that is the number that matters; telling the protocol
//! apart here, in a task that ends before the connection is served, keeps an HTTP/1.1
//! stream's cost what it was.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::time::Duration;

use std::sync::Arc;

use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::CONNECTION;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

mod graceful;
mod writers;

use crate::handoff::{Handoff, StreamWriter};
use crate::transport::Transport;
use graceful::{Shutdown, Watcher};
use writers::Writers;

use crate::error::Error;
use prometheus_client::metrics::gauge::Gauge;

use crate::state::{HttpConfig, Metrics};

/// The router as hyper's service, its future boxed per request: hyper keeps a slot the
/// size of the service's future for the whole connection, and axum's is 320 bytes
/// where a box is 16, on every idle stream. Over HTTP/1.x, its `GET` requests carry
/// the connection's [`Handoff`], where a stream's handler leaves the stream for the
/// connection to write itself.
struct App {
    router: Router,
    handoff: Option<Handoff>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        // No `poll_ready` first: a router's returns `Ready` without looking (axum 0.8,
        // routing/mod.rs). A clone is a reference count.
        let mut router = self.router.clone();
        let mut request = request.map(axum::body::Body::new);
        let Some(handoff) = self
            .handoff
            .as_ref()
            .filter(|_| request.method() == Method::GET)
        else {
            return Box::pin(tower_service::Service::call(&mut router, request));
        };
        request.extensions_mut().insert(handoff.clone());
        let handoff = handoff.clone();
        Box::pin(async move {
            let response = tower_service::Service::call(&mut router, request).await;
            // Only a stream's own answer is followed by the stream (whatever a layer
            // might make of it).
            if response
                .as_ref()
                .is_ok_and(|r| r.status() != StatusCode::OK)
            {
                drop(handoff.take());
            }
            response
        })
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
    let graceful = Shutdown::new();
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
    /// What writes the streams the HTTP/1.x connections hand over.
    writers: Writers,
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
            writers: Writers::default(),
        }
    }

    /// Tells what `tcp` speaks, then serves it in a task of its own (this one ends, so
    /// that what telling it apart took is not held for the connection's life).
    ///
    /// A connection that has not said what it speaks when the server stops is dropped
    /// then: it has no request in flight, and waiting for its first bytes would hold
    /// the shutdown for `first_bytes_within`. Clients open such connections ahead of
    /// need (a browser's preconnect, an HTTP client's pool racing a new connection
    /// against an idle one): one held every graceful restart for 10 s.
    async fn start(self: Arc<Self>, tcp: TcpStream, mut watcher: Watcher, open: Counted) {
        #[cfg(feature = "tls")]
        if let Some(acceptor) = &self.tls {
            let accepted = tokio::select! {
                accepted = tokio::time::timeout(self.first_bytes_within, acceptor.accept(tcp)) => accepted,
                () = watcher.stopping() => return,
            };
            let Ok(Ok(tls)) = accepted else {
                tracing::trace!("TLS handshake failed or timed out");
                return;
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            self.serve(tls, h2, watcher, open);
            return;
        }
        let speaks = tokio::select! {
            speaks = speaks_h2(&tcp, self.first_bytes_within) => speaks,
            () = watcher.stopping() => return,
        };
        let Some(h2) = speaks else {
            return;
        };
        self.serve(tcp, h2, watcher, open);
    }

    fn serve<I>(&self, io: I, h2: bool, watcher: Watcher, open: Counted)
    where
        I: Transport + Send + 'static,
    {
        if h2 {
            let protocol = Counted::new(&self.metrics, |m| &m.h2_connections);
            let app = App {
                router: self.app.clone(),
                handoff: None,
            };
            let connection = self.http2.serve_connection(TokioIo::new(io), app);
            tokio::spawn(serve_http2(connection, watcher, (open, protocol)));
        } else {
            let protocol = Counted::new(&self.metrics, |m| &m.http1_connections);
            let handoff = Handoff::default();
            let app = App {
                router: self.app.clone(),
                handoff: Some(handoff.clone()),
            };
            // Boxed, so that its memory goes when hyper is done and a stream goes on.
            let connection = Box::new(self.http1.serve_connection(TokioIo::new(io), app));
            let writers = self.writers.clone();
            tokio::spawn(serve_http1(
                connection,
                handoff,
                writers,
                watcher,
                (open, protocol),
            ));
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

/// Serves an HTTP/2 connection until it ends, holding `counted` (its gauges) until then.
async fn serve_http2<C: graceful::Graceful>(
    mut connection: C,
    mut watcher: Watcher,
    counted: (Counted, Counted),
) {
    if let Err(e) = watcher.until_done(&mut connection).await {
        tracing::trace!(error = %e, "connection ended with an error");
    }
    drop(counted);
}

/// Serves an HTTP/1.x connection: hyper, until it is done with it; then, if its last
/// request opened a stream, eric writes the stream to the socket (`handoff`), in one of
/// the `writers`' groups. Holds `counted` (its gauges) and `watcher` until the end of
/// both.
async fn serve_http1<I>(
    mut connection: Box<http1::Connection<TokioIo<I>, App>>,
    handoff: Handoff,
    writers: Writers,
    mut watcher: Watcher,
    counted: (Counted, Counted),
) where
    I: Transport + Send + 'static,
{
    if let Err(e) = watcher.until_done(&mut *connection).await {
        tracing::trace!(error = %e, "connection ended with an error");
        return;
    }
    let mut io = connection.into_parts().io.into_inner();
    let body = handoff.take();
    drop(handoff); // Its slot's memory, for as long as the stream lasts.
    let Some(body) = body else {
        // Done without a stream: shut down what hyper left open.
        let _ = std::future::poll_fn(|cx| Pin::new(&mut io).poll_shutdown(cx)).await;
        drop((watcher, counted));
        return;
    };
    // This task ends here; the stream goes on in its group.
    writers.run(async move {
        if let Err(e) = StreamWriter::new(io, body).await {
            tracing::trace!(error = %e, "stream ended with an error");
        }
        drop((watcher, counted));
    });
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
