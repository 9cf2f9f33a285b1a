//! The body of an SSE response: events as they come, comments to keep it alive.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use eric_persistence::EventStream;
use eric_prefabs::{SseEvent, sse_comment};
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use crate::deliveries::Deliveries;
use crate::state::Metrics;

/// The wire bytes of a stream: each event encoded with this connection's reconnection
/// time, a keep-alive comment whenever `keep_alive` passes with nothing to send (a
/// timer, not a poll), and an in-band `_eric_error` event if the stream fails. Counts
/// itself as an open stream while it lives, and each event as delivered. A stream
/// opened with a token that expires ends then, with a `_eric_token_expired` event.
/// With a write delay, the events that come within it after one are written together.
pub(crate) struct SseBody {
    events: EventStream,
    keep_alive: Option<KeepAlive>,
    /// When the token the stream was opened with expires, and that time.
    expiry: Option<(u64, Pin<Box<Sleep>>)>,
    /// This connection's `retry`, in place of the channel's: spread per connection so
    /// that browsers dropped at once do not come back at once.
    retry_ms: u64,
    /// Whether an event carried it yet: the first does (beside the preamble's, for
    /// clients whose parser hands over events only), the others need not (a client
    /// keeps the last it was sent).
    retry_sent: bool,
    metrics: Arc<Metrics>,
    /// When the stream ends by itself (`HttpConfig::max_stream_duration`).
    lifetime: Option<Pin<Box<Sleep>>>,
    /// Written first: this connection's `retry` (and, for a stream that sets one, an
    /// `id:` line), in a block without data, which sets a browser's reconnection time
    /// (and last event id) without an event. So a stream that never gets an event is
    /// still spread out when the server restarts: most streams are idle most of the time.
    preamble: Option<Bytes>,
    /// Events waiting for their write (`HttpConfig::write_delay`).
    /// Boxed: the body is read at every event, and most streams have no write delay.
    gathering: Option<Box<Gathering>>,
    done: bool,
}

/// The events a stream with a write delay holds until the delay after the first of
/// them has passed.
struct Gathering {
    delay: Duration,
    bytes: BytesMut,
    due: Pin<Box<Sleep>>,
}

/// A comment written when `every` passes with nothing written. The timer is not moved
/// by each write (moving a tokio timer takes its driver's lock): a write notes its
/// time, and a timer that fires early is set again from the last write.
struct KeepAlive {
    every: Duration,
    sleep: Pin<Box<Sleep>>,
    last_write: Option<Instant>,
}

impl KeepAlive {
    fn new(every: Duration) -> Self {
        KeepAlive {
            every,
            sleep: Box::pin(tokio::time::sleep(every)),
            last_write: None,
        }
    }

    /// Ready when a comment is due: `every` since the last write.
    fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            std::task::ready!(self.sleep.as_mut().poll(cx));
            match self.last_write.take() {
                Some(wrote) if wrote + self.every > self.sleep.deadline() => {
                    self.sleep.as_mut().reset(wrote + self.every);
                }
                _ => {
                    self.sleep.as_mut().reset(Instant::now() + self.every);
                    return Poll::Ready(());
                }
            }
        }
    }
}

/// Gathered events are written at once past this many bytes, delay or not.
const GATHER_AT_MOST: usize = 64 * 1024;

impl SseBody {
    pub(crate) fn new(
        events: EventStream,
        keep_alive: Option<Duration>,
        retry_ms: u64,
        metrics: Arc<Metrics>,
        expires: Option<u64>,
    ) -> Self {
        metrics.open_streams.inc();
        SseBody {
            events,
            keep_alive: keep_alive.map(KeepAlive::new),
            expiry: expires.map(|exp| (exp, Box::pin(tokio::time::sleep_until(instant_of(exp))))),
            retry_ms,
            retry_sent: false,
            metrics,
            lifetime: None,
            preamble: Some(Bytes::from(retry_field(retry_ms) + "\n")),
            gathering: None,
            done: false,
        }
    }
}

impl SseBody {
    /// Ends the stream after `duration`, with no event: the client reconnects with its
    /// last event id, as after a restart.
    pub(crate) fn lifetime(mut self, duration: Option<Duration>) -> Self {
        self.lifetime = duration.map(|d| Box::pin(tokio::time::sleep(d)));
        self
    }

    /// Gathers what comes within `delay` after an event into one write (`None`: each
    /// event as it comes).
    pub(crate) fn write_delay(mut self, delay: Option<Duration>) -> Self {
        self.gathering = delay.map(|delay| {
            Box::new(Gathering {
                delay,
                bytes: BytesMut::new(),
                due: Box::pin(tokio::time::sleep(delay)),
            })
        });
        self
    }

    /// Opens the stream with `id` as its last event id and this connection's `retry`,
    /// in a block without data (a browser takes both from it: a stream dropped before
    /// its first event resumes from `id`, at this connection's time).
    pub(crate) fn starting_id(mut self, id: &str) -> Self {
        self.preamble = Some(Bytes::from(format!(
            "id: {id}\n{}\n",
            retry_field(self.retry_ms)
        )));
        self
    }
}

impl SseBody {
    /// An event on its way to the client: counted in `round`, keep-alive postponed; its
    /// bytes are the event's encoding, which every stream of a broadcast shares (made
    /// once, whatever the number of streams; see [`Emit`] for how each stream takes it).
    fn delivered<'e>(
        event: &'e SseEvent,
        round: &mut Deliveries,
        metrics: &Metrics,
        keep_alive: &mut Option<KeepAlive>,
    ) -> &'e Bytes {
        round.add(event, metrics);
        if let Some(keep_alive) = keep_alive {
            // The round's time serves the latency and the keep-alive.
            keep_alive.last_write = Some(round.now());
        }
        event.encoded_without_retry()
    }

    /// Adds what `round` delivered to the server's metrics: once per round of polls,
    /// however many events it had.
    #[inline]
    pub(crate) fn record(&self, round: &Deliveries) {
        round.record(&self.metrics);
    }

    /// The last write of the stream: what is gathered, then `last`.
    fn last_write(&mut self, last: Option<Bytes>, out: &mut impl Emit) -> Poll<Option<()>> {
        self.done = true;
        let gathered = self.gathering.as_mut().map(|g| g.bytes.split());
        let bytes = match (gathered.filter(|g| !g.is_empty()), last) {
            (Some(mut gathered), Some(last)) => {
                gathered.extend_from_slice(&last);
                gathered.freeze()
            }
            (Some(gathered), None) => gathered.freeze(),
            (None, Some(last)) => last,
            (None, None) => return Poll::Ready(None),
        };
        out.own(bytes);
        Poll::Ready(Some(()))
    }
}

/// Where [`SseBody::poll_emit`] puts the bytes it has next.
pub(crate) trait Emit {
    /// A broadcast's encoding, which every stream of it shares.
    fn shared(&mut self, bytes: &Bytes);
    /// Bytes of this stream's own.
    fn own(&mut self, bytes: Bytes);
}

/// One chunk of a response body (hyper's, for HTTP/2 and mounted routers): a shared
/// encoding is cloned into it, without a copy.
impl Emit for Option<Bytes> {
    fn shared(&mut self, bytes: &Bytes) {
        *self = Some(bytes.clone());
    }

    fn own(&mut self, bytes: Bytes) {
        *self = Some(bytes);
    }
}

/// A connection's write buffer (eric's HTTP/1.x writer): a shared encoding is copied
/// into it. ~100 bytes cost less to copy than a clone and a drop of the shared
/// `Bytes`: two atomic operations on a line that every core serving the broadcast
/// writes, so each is a cache miss (perf: ~1 % of the server's time at 1,000 streams).
impl Emit for Vec<u8> {
    fn shared(&mut self, bytes: &Bytes) {
        self.extend_from_slice(bytes);
    }

    fn own(&mut self, bytes: Bytes) {
        self.extend_from_slice(&bytes);
    }
}

impl Stream for SseBody {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut chunk = None;
        let mut round = Deliveries::default();
        let emitted = self.poll_emit(cx, &mut chunk, &mut round);
        self.record(&round);
        match std::task::ready!(emitted) {
            Some(()) => Poll::Ready(chunk.map(Ok)),
            None => Poll::Ready(None),
        }
    }
}

impl SseBody {
    /// Puts what the stream has next into `out`: `Ready(Some(()))` once it put
    /// something, `Ready(None)` at its end. The events it delivers are counted in
    /// `round`, which the caller records ([`SseBody::record`]) once it is done polling.
    pub(crate) fn poll_emit(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut impl Emit,
        round: &mut Deliveries,
    ) -> Poll<Option<()>> {
        let this = self;
        if this.done {
            return Poll::Ready(None);
        }
        // Looked at before it is taken: a take writes, at every poll.
        if this.preamble.is_some()
            && let Some(preamble) = this.preamble.take()
        {
            out.own(preamble);
            return Poll::Ready(Some(()));
        }
        if let Some(lifetime) = &mut this.lifetime
            && lifetime.as_mut().poll(cx).is_ready()
        {
            return this.last_write(None, out);
        }
        if let Some((exp, expiry)) = &mut this.expiry
            && expiry.as_mut().poll(cx).is_ready()
        {
            let data = serde_json::json!({ "reason": "token_expired", "exp": *exp }).to_string();
            let event = SseEvent::new(data).with_retry(this.retry_ms);
            let event = event.clone().with_event(TOKEN_EXPIRED).unwrap_or(event);
            return this.last_write(Some(Bytes::from(event.encode())), out);
        }
        loop {
            match this.events.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(event))) => {
                    let encoded =
                        Self::delivered(&event, round, &this.metrics, &mut this.keep_alive);
                    let retry = (!std::mem::replace(&mut this.retry_sent, true))
                        .then(|| retry_field(this.retry_ms));
                    let Some(gathering) = &mut this.gathering else {
                        match retry {
                            None => out.shared(encoded),
                            Some(retry) => out.own([retry.as_bytes(), encoded].concat().into()),
                        }
                        return Poll::Ready(Some(()));
                    };
                    if gathering.bytes.is_empty() {
                        let due = round.now() + gathering.delay;
                        gathering.due.as_mut().reset(due);
                    }
                    if let Some(retry) = retry {
                        gathering.bytes.extend_from_slice(retry.as_bytes());
                    }
                    gathering.bytes.extend_from_slice(encoded);
                    if gathering.bytes.len() >= GATHER_AT_MOST
                        || gathering.due.as_mut().poll(cx).is_ready()
                    {
                        out.own(gathering.bytes.split().freeze());
                        return Poll::Ready(Some(()));
                    }
                }
                Poll::Ready(Some(Err(err))) => {
                    let data = serde_json::json!({ "error": err.to_string() }).to_string();
                    let mut event = SseEvent::new(data).with_retry(this.retry_ms);
                    if let Ok(typed) = event
                        .clone()
                        .with_event(eric_core::MESSAGE_TYPE_INTERNAL_ERROR)
                    {
                        event = typed;
                    }
                    return this.last_write(Some(Bytes::from(event.encode())), out);
                }
                Poll::Ready(None) => return this.last_write(None, out),
                Poll::Pending => {
                    if let Some(gathering) = &mut this.gathering
                        && !gathering.bytes.is_empty()
                    {
                        // Written when the delay after the first of them has passed.
                        std::task::ready!(gathering.due.as_mut().poll(cx));
                        out.own(gathering.bytes.split().freeze());
                        return Poll::Ready(Some(()));
                    }
                    let Some(keep_alive) = &mut this.keep_alive else {
                        return Poll::Pending;
                    };
                    std::task::ready!(keep_alive.poll_due(cx));
                    out.own(Bytes::from(sse_comment("")));
                    return Poll::Ready(Some(()));
                }
            }
        }
    }
}

/// The `retry:` line of an SSE block: a client's reconnection time, in milliseconds.
fn retry_field(ms: u64) -> String {
    format!("retry: {ms}\n")
}

/// The type of the event that ends a stream whose token expired.
pub(crate) const TOKEN_EXPIRED: &str = eric_prefabs::MESSAGE_TYPE_TOKEN_EXPIRED;

/// The instant of `exp`, seconds since the Unix epoch (now, if it has passed).
fn instant_of(exp: u64) -> Instant {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // Capped (at ten years), so that no `exp` a token may hold overflows the clock.
    let left = Duration::from_secs(exp)
        .saturating_sub(now)
        .min(Duration::from_secs(10 * 365 * 86_400));
    Instant::now() + left
}

impl Drop for SseBody {
    fn drop(&mut self) {
        self.metrics.open_streams.dec();
    }
}
