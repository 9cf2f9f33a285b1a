//! The SSE adapter: a message becomes a Server-Sent Event, a broadcast's made once and
//! shared by every stream that delivers it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use eric_core::{Adapter, Delivery, Message};
use serde_json::json;

use crate::sse::{Fields, SseEvent, is_valid_event};

/// Turns messages into SSE events (eric-sse's `SSEChannel.adapt`): `event` is the
/// message type, `data` the payload as JSON, `retry` the channel's reconnection time,
/// and `id` (broadcasts only) `<epoch>-<seq>`: the channel's epoch and the broadcast's
/// sequence number, so ids increase per channel and a restarted channel's ids are
/// told apart from the old ones.
#[derive(Clone, Debug)]
pub struct SseAdapter {
    retry_ms: u64,
    epoch: Arc<str>,
    /// Names this adapter (and its copies) in the memo of each broadcast it encodes:
    /// a message broadcast into another channel too is not given this one's ids.
    memo_key: u64,
}

/// Numbers the adapters of this process for [`SseAdapter::memo_key`].
static ADAPTERS: AtomicU64 = AtomicU64::new(0);

impl SseAdapter {
    /// An adapter with a memo key of its own.
    pub(crate) fn new(retry_ms: u64, epoch: Arc<str>) -> Self {
        SseAdapter {
            retry_ms,
            epoch,
            memo_key: ADAPTERS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The event id of broadcast `seq`.
    pub fn event_id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.epoch)
    }

    /// The broadcast sequence number an event id of this channel names; `None` if the
    /// id is not one of this channel's (another epoch, or not an id at all).
    pub fn parse_event_id(&self, id: &str) -> Option<u64> {
        let (epoch, seq) = id.rsplit_once('-')?;
        if epoch != &*self.epoch {
            return None;
        }
        seq.parse().ok()
    }

    /// The channel's epoch: a token that changes whenever a channel's sequence numbers
    /// start over.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The reconnection time sent with every event.
    pub fn retry_ms(&self) -> u64 {
        self.retry_ms
    }
}

impl Adapter for SseAdapter {
    type Output = SseEvent;

    fn adapt(&self, msg: &Message, delivery: &Delivery) -> SseEvent {
        let fields = match delivery.seq {
            // A broadcast: every listener gets the same fields, made (and encoded) once,
            // through its thread's copy.
            Some(seq) => msg
                .memo([self.memo_key, seq], || {
                    PerThread::new(self.fields(msg, Some(seq)))
                })
                .map(|per_thread| Arc::clone(per_thread.local()))
                .unwrap_or_else(|| Arc::new(self.fields(msg, Some(seq)))),
            None => Arc::new(self.fields(msg, None)),
        };
        SseEvent::from_fields(fields)
            .with_retry(self.retry_ms)
            .with_accepted_at(msg.accepted_at())
    }
}

/// A broadcast's fields, an `Arc` of them per thread: every stream of the broadcast
/// clones and drops its event's `Arc`, and with one `Arc` for all, the cores serving
/// the streams passed its count's cache line back and forth on every delivery (perf,
/// 1,000 HTTP streams on 2 cores: ~1.4 % of the server's time, nearly all of it that
/// wait). A thread's copy is made by the first of its streams to deliver the
/// broadcast; the copies share the data and the encoding, each costs ~150 bytes.
struct PerThread {
    common: Fields,
    copies: Box<[OnceLock<Arc<Fields>>]>,
}

/// Copies per broadcast at most, however many cores.
const MAX_COPIES: usize = 8;

impl PerThread {
    fn new(common: Fields) -> Self {
        // Encoded before any copy is made, so that every copy shares it.
        common.encoded();
        PerThread {
            common,
            copies: (0..eric_core::stripe_count(1, MAX_COPIES))
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// The calling thread's copy.
    fn local(&self) -> &Arc<Fields> {
        let copy = eric_core::thread_stripe(self.copies.len());
        self.copies[copy].get_or_init(|| Arc::new(self.common.clone()))
    }
}

impl SseAdapter {
    /// The fields of the event for `msg`, broadcast `seq` if it is one.
    fn fields(&self, msg: &Message, seq: Option<u64>) -> Fields {
        let (event, data) = if is_valid_event(msg.message_type()) {
            (msg.message_type(), msg.payload_json().to_owned())
        } else {
            // Only reachable through the core channel, which does not check types:
            // report it in-band rather than corrupt the stream.
            let error = json!({ "error": "message type is not a valid SSE event name" });
            (eric_core::MESSAGE_TYPE_INTERNAL_ERROR, error.to_string())
        };
        let id = match seq {
            // The closed marker takes a place in the log but is no broadcast: with an
            // id, a client would resume past a number that the channel's next life (a
            // restarted process, another process of a cluster) gives to a real event.
            Some(_) if msg.message_type() == eric_core::MESSAGE_TYPE_CLOSED => None,
            // The epoch was checked when the channel was built; a number is digits.
            Some(seq) => Some(self.event_id(seq)),
            None => None,
        };
        Fields::new(data, Some(event.to_owned()), id)
    }
}
