//! Helpers shared by eric-core's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use eric_core::{Adapter, Message, MessageStream};
use futures_util::Stream;

/// A waker that counts how often it is woken.
#[derive(Default)]
pub struct CountingWaker {
    wakes: AtomicUsize,
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
    }
}

impl CountingWaker {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub fn wakes(&self) -> usize {
        self.wakes.load(Ordering::SeqCst)
    }
}

/// Polls `stream` once with `waker`.
pub fn poll_once<A: Adapter>(
    stream: &mut MessageStream<A>,
    waker: &Arc<CountingWaker>,
) -> Poll<Option<eric_core::Result<A::Output>>> {
    let waker = Waker::from(Arc::clone(waker));
    let mut cx = Context::from_waker(&waker);
    Pin::new(stream).poll_next(&mut cx)
}

/// Reads a stream to its end, keeping each message's type (or the error's text).
pub async fn types_until_end(stream: &mut MessageStream<eric_core::MessageAdapter>) -> Vec<String> {
    use futures_util::StreamExt;
    let mut seen = Vec::new();
    while let Some(item) = stream.next().await {
        seen.push(match item {
            Ok(msg) => msg.message_type().to_owned(),
            Err(err) => format!("error: {err}"),
        });
    }
    seen
}

/// A numbered message: type `t`, payload `n`.
pub fn numbered(n: u64) -> Message {
    Message::new("t", n)
}

/// Reads `n` messages from `listener_id` with `deliver_next`, keeping their numeric
/// payloads.
pub fn read_numbers(channel: &eric_core::Channel, listener_id: &str, n: usize) -> Vec<u64> {
    (0..n)
        .map(|_| {
            channel
                .deliver_next(listener_id)
                .unwrap()
                .payload()
                .as_u64()
                .unwrap()
        })
        .collect()
}
