//! The stream of a stored listener on this process: it acknowledges each dispatch in
//! Redis as it delivers it, and records the listener's position when it ends.

use std::pin::Pin;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};

use eric_prefabs::{SseChannel, SseEvent, SseStream};
use futures_core::Stream;

use super::listener::Pending;
use super::{EntryId, RedisCluster};

/// The events of a stored listener on this process (see
/// [`RedisCluster::message_stream`]): an [`SseStream`] that acknowledges each dispatch
/// in Redis as it delivers it, and records the listener's position when it ends.
#[must_use = "streams do nothing unless polled"]
pub(crate) struct ListenerStream {
    pub(super) inner: SseStream,
    pub(super) cluster: RedisCluster,
    pub(super) channel: SseChannel,
    pub(super) listener_id: String,
    /// The listener's queue in Redis, where deliveries are acknowledged.
    pub(super) queue: String,
    pub(super) attach: u64,
    pub(super) pending: Pending,
    pub(super) acks: Arc<std::sync::Mutex<Acks>>,
    /// The next broadcast the client has not had.
    pub(super) position: Option<u64>,
}

/// Acknowledgements of one stream: one request at a time, for the newest delivered
/// dispatch (which acknowledges every one before it), so that a burst of deliveries
/// costs a few round trips, not one each.
#[derive(Default)]
pub(super) struct Acks {
    newest: Option<EntryId>,
    sending: bool,
}

impl std::fmt::Debug for ListenerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerStream")
            .field("channel_id", &self.channel.id())
            .field("listener_id", &self.listener_id)
            .finish()
    }
}

impl Stream for ListenerStream {
    type Item = eric_prefabs::Result<SseEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(event))) = &polled {
            match event.id() {
                // A broadcast (or an `ahead` reset event, whose id is the newest
                // broadcast's).
                Some(id) => {
                    if let Some(seq) = self.channel.adapter().parse_event_id(id) {
                        self.position = Some(seq + 1);
                    }
                }
                // eric's own events without an id (the reset that leads a replay, the
                // closed event) deliver no dispatch.
                None if matches!(
                    event.event(),
                    Some(eric_prefabs::MESSAGE_TYPE_RESET | eric_core::MESSAGE_TYPE_CLOSED)
                ) => {}
                // A dispatch: handed to the connection, so it leaves the queue in Redis.
                None => {
                    let delivered = self
                        .pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .pop_front();
                    if let Some(id) = delivered {
                        self.acknowledge(id);
                    }
                }
            }
        }
        polled
    }
}

impl ListenerStream {
    fn acknowledge(&self, id: EntryId) {
        // Checked first: marking a sender as running with none started would stop
        // every later acknowledgement of this stream.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Polled outside tokio: it stays queued, and comes again (at least once).
            return;
        };
        let start = {
            let mut acks = self.acks.lock().unwrap_or_else(PoisonError::into_inner);
            acks.newest = Some(id);
            !std::mem::replace(&mut acks.sending, true)
        };
        if !start {
            return; // the running sender takes it
        }
        let (cluster, acks, queue) = (
            self.cluster.clone(),
            Arc::clone(&self.acks),
            self.queue.clone(),
        );
        // Counted now, before the sender runs: a new stream of the listener may attach
        // the moment this one is dropped.
        cluster.acks_in_flight().start(&queue);
        runtime.spawn(async move {
            loop {
                let newest = {
                    let mut acks = acks.lock().unwrap_or_else(PoisonError::into_inner);
                    let newest = acks.newest.take();
                    acks.sending = newest.is_some();
                    newest
                };
                let Some(id) = newest else {
                    cluster.acks_in_flight().finish(&queue);
                    return;
                };
                cluster.ack(&queue, id).await;
            }
        });
    }
}

impl Drop for ListenerStream {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (cluster, channel) = (self.cluster.clone(), self.channel.id().to_owned());
        let (listener, attach, position) = (
            std::mem::take(&mut self.listener_id),
            self.attach,
            self.position,
        );
        runtime.spawn(async move { cluster.detach(&channel, &listener, attach, position).await });
    }
}
