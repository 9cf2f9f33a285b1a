//! The accept loop: each connection served by hyper's HTTP/1.1 connection directly.
//!
//! Not `axum::serve`: that serves every connection through hyper-util's auto
//! (HTTP/1 + HTTP/2) builder, which measured 35 KB of heap and 86 allocations per idle
//! SSE stream against 18.8 KB and 14.5 here (25 vs 11.5 KiB of RSS on glibc's
//! allocator). An SSE server's cost is its idle connections, so that is the number that
//! matters. `EventSource` speaks HTTP/1.1 (browsers use HTTP/2 only over TLS, which a
//! proxy in front terminates).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::CONNECTION;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::error::Error;
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
struct Counted {
    metrics: Arc<Metrics>,
    gauge: fn(&Metrics) -> &AtomicU64,
}

impl Counted {
    fn new(metrics: &Arc<Metrics>, gauge: fn(&Metrics) -> &AtomicU64) -> Self {
        gauge(metrics).fetch_add(1, Ordering::Relaxed);
        Counted {
            metrics: Arc::clone(metrics),
            gauge,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        (self.gauge)(&self.metrics).fetch_sub(1, Ordering::Relaxed);
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
const REFUSING_AT_ONCE: u64 = 1024;

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
    let mut builder = http1::Builder::new();
    // A client that connects and never finishes its request head is dropped.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
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
        let open = metrics.connections.load(Ordering::Relaxed) as usize;
        if let Some(max) = config.max_connections.filter(|&max| open >= max) {
            metrics.refused_connections.fetch_add(1, Ordering::Relaxed);
            if metrics.refusing.load(Ordering::Relaxed) < REFUSING_AT_ONCE {
                let refusing = Counted::new(&metrics, |m| &m.refusing);
                let refusal = builder.serve_connection(TokioIo::new(tcp), Refuse(max));
                tokio::spawn(refusal.map(move |_| drop(refusing)));
            }
            continue;
        }
        let open = Counted::new(&metrics, |m| &m.connections);
        // Events are small writes that must go out now, not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let connection = builder.serve_connection(TokioIo::new(tcp), App(app.clone()));
        // `map`, not an async block: that would hold the connection twice (captured,
        // then awaited), 800 bytes more per idle stream.
        tokio::spawn(graceful.watch(connection).map(move |ended| {
            drop(open);
            if let Err(e) = ended {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        }));
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
