//! Graceful shutdown: connections are told when the server stops, and the server waits
//! for them to finish.
//!
//! What hyper-util's `GracefulShutdown` does, over the same `watch` channel, but for
//! connections that are not only a hyper connection from start to end: an HTTP/1.x
//! stream is written by eric once hyper is done with its connection (`handoff`), and
//! must still be waited for.

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};

use hyper::server::conn::{http1, http2};
use tokio::sync::watch;

/// Tells every connection's [`Watcher`] that the server stops, then waits for them all.
pub(super) struct Shutdown(watch::Sender<()>);

/// A connection's end of [`Shutdown`]: held until the connection has finished.
pub(super) struct Watcher(watch::Receiver<()>);

impl Shutdown {
    pub(super) fn new() -> Self {
        Shutdown(watch::channel(()).0)
    }

    /// A watcher for a new connection (made from the sender, not cloned from another
    /// watcher, so that none misses a shutdown already sent).
    pub(super) fn watcher(&self) -> Watcher {
        Watcher(self.0.subscribe())
    }

    /// Tells every connection, then waits until every watcher is dropped.
    pub(super) async fn shutdown(self) {
        let _ = self.0.send(());
        self.0.closed().await;
    }
}

/// A hyper connection that can be told to finish what it is doing and stop.
pub(super) trait Graceful {
    /// Ready when the connection is done (over HTTP/1.x, without shutting its socket
    /// down: the socket may go on carrying a stream).
    fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>>;

    /// Finishes the requests in flight, takes no more.
    fn shut_down(&mut self);
}

impl<I, S> Graceful for http1::Connection<I, S>
where
    Self: Unpin,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming> + Unpin,
    S::Future: Unpin,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.poll_without_shutdown(cx)
    }

    fn shut_down(&mut self) {
        Pin::new(self).graceful_shutdown();
    }
}

impl<I, S, E> Graceful for http2::Connection<I, S, E>
where
    Self: Future<Output = Result<(), hyper::Error>> + Unpin,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        Pin::new(self).poll(cx)
    }

    fn shut_down(&mut self) {
        Pin::new(self).graceful_shutdown();
    }
}

impl Watcher {
    /// Ready once the server stops (or is gone).
    pub(super) async fn stopping(&mut self) {
        let _ = self.0.changed().await;
    }

    /// Runs `connection` until it is done, telling it to finish if the server stops
    /// meanwhile.
    pub(super) async fn until_done<C: Graceful>(
        &mut self,
        connection: &mut C,
    ) -> Result<(), hyper::Error> {
        let mut stopping = pin!(self.stopping());
        let mut told = false;
        poll_fn(|cx| {
            // A dropped `Shutdown` (the server gone) is an order to stop too.
            if !told && stopping.as_mut().poll(cx).is_ready() {
                told = true;
                connection.shut_down();
            }
            connection.poll_done(cx)
        })
        .await
    }
}
