//! An HTTP/1.x stream written to its socket by eric once hyper has answered its request.
//!
//! A stream over HTTP/1.x is an HTTP/1.0 response whose body ends when the connection
//! does (`routes::streams`): after its head, the connection carries the stream's bytes
//! and nothing else. So hyper parses the request, runs the router and its layers (auth,
//! the gate, CORS) and writes the head, with an empty body; the connection then ends as
//! far as hyper is concerned, and eric takes its socket back (hyper's
//! `poll_without_shutdown` and `into_parts`, made for upgrades) and writes the stream
//! there itself (`serve/writers.rs` runs the writers: a few tasks for all the
//! streams). Each event is then one write from the stream's writer, where hyper's
//! connection task went through its dispatcher, its encoder, its write queue and a
//! flush per event (about 2,000 of ~4,900 instructions per delivered event,
//! docs/BENCHMARKS.md), and an idle stream holds no hyper connection state. On a plain
//! TCP socket that write is one `send`, straight to it (`transport::Transport`); a full socket
//! is waited for through tokio.
//!
//! HTTP/2 streams share their connection with other streams, and a router mounted in
//! another axum application has no connection of eric's: both get the stream as the
//! response's body, as before.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker, ready};

use tokio::io::ReadBuf;

use crate::deliveries::Deliveries;
use crate::events::SseBody;
use crate::transport::Transport;

/// Where a stream's handler leaves its body for the connection to write: one per
/// HTTP/1.x connection, in the extensions of its `GET` requests.
#[derive(Clone, Default)]
pub(crate) struct Handoff(Arc<Mutex<Option<SseBody>>>);

impl Handoff {
    /// Leaves `body` to the connection, which writes it once the response's head is out.
    pub(crate) fn leave(&self, body: SseBody) {
        *self.lock() = Some(body);
    }

    /// The body left here, if any.
    pub(crate) fn take(&self) -> Option<SseBody> {
        self.lock().take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<SseBody>> {
        // A panic while holding it leaves at worst a body or none: either is whole.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The events a write gathers at most: what a stream that fell behind has ready goes
/// out in one write, up to this many and [`GATHER_BYTES`]. hyper's write queue takes 16;
/// a stream far behind catches up in a quarter of the sends with 64, and copying them
/// first delays the first of them by about a microsecond.
const GATHER_EVENTS: usize = 64;
const GATHER_BYTES: usize = 64 * 1024;

/// Gathered writes per poll at most, and reads of what a client sends: then the writer
/// wakes itself and lets the others of its group go first. Its group runs writers
/// outside tokio's cooperative budget (`serve/writers.rs`), so that one writer's work
/// does not spend the others'; these bounds are the budget, per writer.
const ROUNDS_PER_POLL: usize = 8;
const READS_PER_POLL: usize = 16;

/// A write buffer that grew past this (a burst gathered) is let go once written: an
/// idle stream keeps at most this much.
const KEEP_BUFFER: usize = 4 * 1024;

/// Writes `body` to `io` until the body ends (then shuts the socket down) or the
/// client goes away (then drops it: the listener goes with it). Ready with an error
/// only for a failed write or shutdown, which ends the stream the same way (a failed
/// read is the client gone).
pub(crate) struct StreamWriter<I> {
    io: I,
    body: SseBody,
    /// What is to be written: the stream's bytes, copied here from the broadcasts'
    /// shared encodings (`Emit for Vec<u8>`), of which `written` are.
    pending: Vec<u8>,
    written: usize,
    body_ended: bool,
    /// What wakes the task when the socket has something to read (the client's going,
    /// mostly): the socket's read side is looked at only then, not after every event.
    readable: Arc<Readable>,
    /// `readable` as a waker, for the socket's read side.
    read_waker: Waker,
    /// The waker last left in `readable.task`: left there again only when the task's
    /// waker changes, which in a group of writers it never does.
    task_waker: Option<Waker>,
}

/// A flag the socket's read side raises, waking the stream's task.
struct Readable {
    /// Raised when the socket may have something to read; at the start too, so that
    /// the first look registers the waker.
    raised: AtomicBool,
    /// The task's waker, kept when woken (unlike an `AtomicWaker`'s): the task
    /// leaves it once, not at every poll, and a poll then reads only `raised`.
    task: Mutex<Option<Waker>>,
}

impl Readable {
    fn task(&self) -> std::sync::MutexGuard<'_, Option<Waker>> {
        // A waker, replaced or not: whole either way.
        self.task.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Wake for Readable {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Raised before the task's waker is read (under the lock the task left it
        // under): either the task, polled, finds it up, or its waker is there to wake.
        self.raised.store(true, Ordering::Release);
        if let Some(task) = &*self.task() {
            task.wake_by_ref();
        }
    }
}

impl<I: Transport> StreamWriter<I> {
    pub(crate) fn new(io: I, body: SseBody) -> Self {
        let readable = Arc::new(Readable {
            raised: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        StreamWriter {
            io,
            body,
            pending: Vec::new(),
            written: 0,
            body_ended: false,
            read_waker: Waker::from(Arc::clone(&readable)),
            readable,
            task_waker: None,
        }
    }

    /// Gathers what the body has ready (up to the limits); `Pending` when it has
    /// nothing now (its wakers then registered). `Ready(true)`: it has nothing more now
    /// either (wakers registered as well); `Ready(false)`: it stopped at a limit, or
    /// the body ended.
    fn poll_gather(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        // Counted once for the whole gathering, not per event.
        let mut round = Deliveries::default();
        let gathered = self.gather(cx, &mut round);
        self.body.record(&round);
        gathered
    }

    fn gather(&mut self, cx: &mut Context<'_>, round: &mut Deliveries) -> Poll<bool> {
        let mut gathered = 0;
        while gathered < GATHER_EVENTS && self.pending.len() < GATHER_BYTES {
            match self.body.poll_emit(cx, &mut self.pending, round) {
                Poll::Ready(Some(())) => gathered += 1,
                Poll::Ready(None) => {
                    self.body_ended = true;
                    break;
                }
                Poll::Pending if gathered == 0 => return Poll::Pending,
                Poll::Pending => return Poll::Ready(true),
            }
        }
        Poll::Ready(false)
    }

    /// Writes what is pending; `Ready` once all of it is written.
    fn poll_write_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending.is_empty() {
            return Poll::Ready(Ok(()));
        }
        while self.written < self.pending.len() {
            let unwritten = &self.pending[self.written..];
            let written = match self.send_now(unwritten) {
                Some(sent) => sent?,
                None => ready!(Pin::new(&mut self.io).poll_write(cx, unwritten))?,
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += written;
        }
        self.written = 0;
        if self.pending.capacity() > KEEP_BUFFER {
            self.pending = Vec::new();
        } else {
            self.pending.clear();
        }
        Poll::Ready(Ok(()))
    }

    /// Sends `buf` straight to the socket ([`Transport::send_now`]): `None` if it cannot
    /// (no socket of its own, or a full one: `poll_write` then waits for room). Not
    /// counted in tokio's budget: writers run outside it, and a stream with a long
    /// backlog yields after [`ROUNDS_PER_POLL`] writes instead.
    fn send_now(&self, buf: &[u8]) -> Option<io::Result<usize>> {
        loop {
            match self.io.send_now(buf) {
                Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => return None,
                sent => return sent,
            }
        }
    }

    /// Whether the client went away: its end of the connection closed (or failed).
    /// What it sends meanwhile is read and dropped: after a stream's request, a client
    /// has nothing more to say on its connection. The socket is read only when it said
    /// it may have something (`readable`), under its own waker.
    fn poll_client_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // The task's waker first, then the flag: a raise in between wakes the task.
        if !self
            .task_waker
            .as_ref()
            .is_some_and(|left| left.will_wake(cx.waker()))
        {
            let waker = cx.waker().clone();
            *self.readable.task() = Some(waker.clone());
            self.task_waker = Some(waker);
        }
        // Read before it is swapped: a swap writes, at every poll.
        if !self.readable.raised.load(Ordering::Acquire)
            || !self.readable.raised.swap(false, Ordering::Acquire)
        {
            return Poll::Pending;
        }
        let mut read_cx = Context::from_waker(&self.read_waker);
        let mut scratch = [0u8; 256];
        for _ in 0..READS_PER_POLL {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.io).poll_read(&mut read_cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
        // A client that keeps sending: read on at the next poll, the others first.
        self.readable.raised.store(true, Ordering::Release);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<I: Transport> Future for StreamWriter<I> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Whether the body said `Pending` during this poll: its wakers are then in
        // place, and asking again after the write would only say it again (a third
        // poll of the body per event, ~1/6 of its cost). Only within this poll: a
        // later one may have been woken by the body.
        let mut body_waits = false;
        let mut rounds = 0;
        loop {
            ready!(this.poll_write_pending(cx))?;
            if this.body_ended {
                return Pin::new(&mut this.io).poll_shutdown(cx);
            }
            if !body_waits {
                if rounds == ROUNDS_PER_POLL {
                    // A long backlog: the group's other streams go first.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                match this.poll_gather(cx) {
                    Poll::Ready(waits) => {
                        body_waits = waits;
                        rounds += 1;
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            // Nothing to write: the next event, a keep-alive or the client's going
            // wakes this task, whichever comes first.
            return match this.poll_client_gone(cx) {
                Poll::Ready(()) => Poll::Ready(Ok(())),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use eric_core::Message;
    use eric_persistence::{ChannelSettings, MemoryChannels, SharedChannels};
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::state::Metrics;

    /// A channel "news" in memory, and the body of a stream of it (`retry` 2500 ms).
    async fn news_stream() -> (SharedChannels, String, SseBody) {
        let channels: SharedChannels = Arc::new(MemoryChannels::new());
        let id = channels
            .create(ChannelSettings::default().id("news"))
            .await
            .unwrap();
        let events = channels.subscribe(&id, None).await.unwrap();
        let metrics = Arc::new(Metrics::new(Arc::clone(&channels)));
        let body = SseBody::new(events, None, 2500, metrics, None);
        (channels, id, body)
    }

    /// A loopback connection: the server's end, then the client's, whose receive
    /// buffer is `recv_buffer` bytes if given.
    async fn loopback(recv_buffer: Option<u32>) -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let client = socket
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    /// Broadcasts `count` events "count" to channel `id`, the `n`th's data `"<n>
    /// xxx…"` (2,000 bytes of padding, so that a few fill a socket's buffers), letting
    /// the writer run after each.
    async fn broadcast_padded_counts(channels: &SharedChannels, id: &str, count: u32) {
        let padding = "x".repeat(2000);
        for n in 0..count {
            channels
                .broadcast(id, Message::new("count", format!("{n} {padding}")))
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
    }

    /// A socket that takes a few bytes per write: every write of the buffer goes out in
    /// parts, and the client still reads every event whole, in order, once.
    #[tokio::test]
    async fn a_socket_taking_a_few_bytes_at_a_time_gets_every_event_in_order() {
        let (channels, id, body) = news_stream().await;
        // A pipe that holds 7 bytes: shorter than any event.
        let (server, mut client) = tokio::io::duplex(7);
        let writer = tokio::spawn(StreamWriter::new(server, body));
        for n in 0..50 {
            channels
                .broadcast(&id, Message::new("count", n))
                .await
                .unwrap();
        }
        // Its streams get the closed event and end: the writer shuts the socket down.
        channels.remove(&id).await.unwrap();
        let mut text = String::new();
        client.read_to_string(&mut text).await.unwrap();
        writer.await.unwrap().unwrap();

        assert!(text.starts_with("retry: 2500\n\n"), "{text}");
        let data: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .collect();
        let counts: Vec<String> = (0..50).map(|n| n.to_string()).collect();
        assert_eq!(data[..50], counts[..], "every event, in order");
        assert_eq!(data.len(), 51, "and the closed event: {data:?}");
        assert_eq!(text.matches("event: count\n").count(), 50);
    }

    /// A real socket, sent to directly, that fills up: the writer waits for room
    /// (tokio's `poll_write` takes over) and the client, reading late, still gets every
    /// event whole, in order, once.
    #[tokio::test]
    async fn a_full_socket_is_waited_for_and_nothing_is_lost() {
        let (channels, id, body) = news_stream().await;
        let (server, mut client) = loopback(Some(4096)).await;
        let writer = tokio::spawn(StreamWriter::new(server, body));
        // ~4 MiB of events: far more than both kernel buffers hold.
        broadcast_padded_counts(&channels, &id, 2000).await;
        channels.remove(&id).await.unwrap();
        let mut text = String::new();
        client.read_to_string(&mut text).await.unwrap();
        writer.await.unwrap().unwrap();

        let counts: Vec<u32> = text
            .lines()
            .filter_map(|line| line.strip_prefix("data: \""))
            .filter_map(|data| data.split(' ').next()?.parse().ok())
            .collect();
        assert_eq!(
            counts,
            (0..2000).collect::<Vec<u32>>(),
            "every event, in order"
        );
        assert_eq!(text.matches("event: count\n").count(), 2000);
    }

    /// A client that resets its connection while its stream is being written: the
    /// stream ends, rather than hang or raise a signal.
    #[tokio::test]
    async fn a_client_gone_mid_stream_ends_it() {
        let (channels, id, body) = news_stream().await;
        let (server, client) = loopback(None).await;
        let writer = tokio::spawn(StreamWriter::new(server, body));
        // Closed with data unread (the stream's preamble): the kernel resets the
        // connection.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(client);
        broadcast_padded_counts(&channels, &id, 100).await;
        // Whichever saw it first, the send (an error) or the read side (the client
        // gone), the writer ends: it does not write on into a dead socket.
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), writer).await;
        assert!(ended.is_ok(), "the writer still runs");
    }

    /// A client that sends far more than a writer reads per poll, then leaves: the
    /// writer reads it all over several polls, delivers events meanwhile, and sees the
    /// client go.
    #[tokio::test]
    async fn a_client_sending_more_than_a_poll_reads_is_still_read_to_its_end() {
        use tokio::io::AsyncWriteExt;
        let (channels, id, body) = news_stream().await;
        let (server, mut client) = loopback(None).await;
        let writer = tokio::spawn(StreamWriter::new(server, body));
        let junk = vec![b'x'; 64 * READS_PER_POLL * 256];
        client.write_all(&junk).await.unwrap();
        broadcast_padded_counts(&channels, &id, 3).await;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("2 xxxx") {
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), client.read(&mut buf))
                .await
                .expect("the events come while the junk is read")
                .unwrap();
            assert!(n > 0, "the stream ended early");
            seen.extend_from_slice(&buf[..n]);
        }
        client.shutdown().await.unwrap();
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), writer).await;
        assert!(ended.is_ok(), "the writer did not see its client go");
    }

    /// Counts its wakes.
    #[derive(Default)]
    struct Counted(std::sync::atomic::AtomicUsize);

    impl Wake for Counted {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Polls `writer` with `waker`: it writes what it has and waits.
    fn poll_until_pending(writer: &mut StreamWriter<tokio::net::TcpStream>, waker: &Waker) {
        let mut cx = Context::from_waker(waker);
        assert!(
            Pin::new(&mut *writer).poll(&mut cx).is_pending(),
            "the writer waits for more"
        );
    }

    /// The read side keeps the task's waker rather than take it at every poll: a
    /// writer polled under a new waker (moved to another task) is woken there, not at
    /// the old one, when its client goes.
    #[tokio::test]
    async fn a_writer_polled_under_a_new_waker_is_woken_there_when_its_client_goes() {
        let (_channels, _id, body) = news_stream().await;
        let (server, client) = loopback(None).await;
        let mut writer = StreamWriter::new(server, body);
        let (first, second) = (Arc::new(Counted::default()), Arc::new(Counted::default()));
        poll_until_pending(&mut writer, &Waker::from(Arc::clone(&first)));
        poll_until_pending(&mut writer, &Waker::from(Arc::clone(&second)));
        let first_wakes = first.0.load(Ordering::SeqCst);
        drop(client);
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while second.0.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the new waker is woken when the client goes");
        assert_eq!(
            first.0.load(Ordering::SeqCst),
            first_wakes,
            "the old one is not"
        );
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(
            matches!(Pin::new(&mut writer).poll(&mut cx), Poll::Ready(_)),
            "the writer ends: its client went"
        );
    }
}
