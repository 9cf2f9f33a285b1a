//! What eric's HTTP/1.x stream writer writes to: a socket, or what wraps one.

use std::io;

use tokio::io::{AsyncRead, AsyncWrite};

/// A connection's transport, as the stream writer (`handoff`) sees it: an async
/// reader and writer that may also take bytes straight, with one `send`.
///
/// Why: tokio's `poll_write` first reads the socket's readiness from its I/O driver's
/// record of it (`ScheduledIo`), a cache line of its own per socket. With 1,000
/// streams that line is out of cache at every event, and its load was 2 % of the
/// server's time (perf, `docs/BENCHMARKS.md`). A `send` on a socket with room needs
/// none of it; only a full socket (`WouldBlock`) goes through `poll_write`, which
/// then learns the socket is not ready and waits for it.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin {
    /// Sends what the socket takes of `buf` now, or `None` where there is no socket to
    /// send to directly (TLS, a pipe): then `poll_write` it is.
    fn send_now(&self, buf: &[u8]) -> Option<io::Result<usize>> {
        let _ = buf;
        None
    }
}

impl Transport for tokio::net::TcpStream {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn send_now(&self, buf: &[u8]) -> Option<io::Result<usize>> {
        // What tokio's own write does (a nonblocking `send`), without its readiness
        // check, and without libc's wrapper, a cancellation point that takes two
        // locked instructions per call (perf: about 4 % of the server's user time at
        // 100 broadcasts/s). `NOSIGNAL`: a client gone is an error, not a SIGPIPE.
        Some(
            rustix::net::send(self, buf, rustix::net::SendFlags::NOSIGNAL).map_err(io::Error::from),
        )
    }
}

#[cfg(feature = "tls")]
impl Transport for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {}

#[cfg(test)]
impl Transport for tokio::io::DuplexStream {}
