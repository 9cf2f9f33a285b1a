//! The stream of one listener's messages.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures_core::{FusedStream, Stream};

use crate::adapter::{Adapter, Delivery};
use crate::channel_shared::Shared;
use crate::connection::{Connection, SegmentCache, Taken, owned};
use crate::error::Error;
use crate::log::WaiterSlot;
use crate::message::Message;

/// The stream of a listener's messages, adapted by its channel's adapter (what
/// [`Channel::message_stream`](crate::Channel::message_stream) and [`Channel::watch`](crate::Channel::watch) return).
///
/// Items are `Ok(adapted message)`, or `Err` for a message the listener's `on_message`
/// refused (the stream goes on) and for a disconnection (the stream ends). The stream
/// waits for a push without polling, and ends:
/// - after yielding a closed or end-of-stream message,
/// - when its listener is stopped or removed, or its channel removes it for overflowing,
/// - when a newer stream takes over the same listener.
///
/// Dropping it forgets its wakers; a stream from [`Channel::watch`](crate::Channel::watch) also removes its
/// listener.
#[must_use = "streams do nothing unless polled"]
pub struct MessageStream<A: Adapter> {
    shared: Arc<Shared<A>>,
    connection: Connection,
    generation: u64,
    // A `watch` stream owns its listener and removes it when dropped.
    owns_listener: bool,
    done: bool,
    // The waker last registered, so that dropping the stream can take back exactly it.
    registered: Option<Waker>,
    // Its place among the broadcast log's waiters.
    waiter: WaiterSlot,
    // The listener's count of consumer takes when `registered` was registered there
    // (`NOT_COUNTED`: not registered).
    consumer_takes: u64,
    // The log segment its listener's position is in, read without the cursor's lock.
    segment: SegmentCache,
    // Whether the listener's `on_message` does anything (asked once).
    hooked: bool,
    // The queue's count of waker takes read before `registered` was registered there
    // (`Queue::waker_takes`); `NOT_COUNTED`: register again.
    queue_takes: u64,
}

impl<A: Adapter> MessageStream<A> {
    pub(crate) fn new(shared: Arc<Shared<A>>, connection: Connection, owns_listener: bool) -> Self {
        let generation = connection.new_consumer();
        MessageStream {
            shared,
            generation,
            owns_listener,
            done: false,
            registered: None,
            waiter: WaiterSlot::default(),
            consumer_takes: NOT_COUNTED,
            segment: SegmentCache::default(),
            hooked: connection.listener().hooks_messages(),
            queue_takes: NOT_COUNTED,
            connection,
        }
    }

    /// The id of the listener this stream reads.
    pub fn listener_id(&self) -> &str {
        self.connection.id()
    }

    pub(crate) fn connection(&self) -> &Connection {
        &self.connection
    }

    pub(crate) fn shared(&self) -> &Arc<Shared<A>> {
        &self.shared
    }

    /// Whether something outside the queue ended this stream: removal, stop, takeover.
    fn cut_off(&self) -> bool {
        self.connection.is_removed()
            || self.connection.consumer_generation() != self.generation
            || !self.connection.listener().is_running()
    }

    fn finish(&mut self) -> Poll<Option<<Self as Stream>::Item>> {
        self.done = true;
        self.forget_wakers();
        Poll::Ready(None)
    }

    fn forget_wakers(&mut self) {
        if let Some(waker) = self.registered.take() {
            self.connection.queue().detach(&waker);
            self.connection.listener().state().detach_consumer(&waker);
            self.shared.log.remove_waiter(&mut self.waiter);
        }
    }

    /// Asks to be woken by a broadcast, a dispatch, or a stop, removal or takeover.
    fn register(&mut self, waker: &Waker) -> Registration {
        let same = self
            .registered
            .as_ref()
            .is_some_and(|registered| registered.will_wake(waker));
        let mut in_place = self
            .shared
            .log
            .register_waiter(&mut self.waiter, waker, same);
        let state = self.connection.listener().state();
        // Still in place if nothing took it since (a take is a stop, a removal, a
        // takeover, or this stream going): then there is nothing to do.
        if !same || self.consumer_takes != state.consumer_takes() {
            self.consumer_takes = state.register_consumer(waker, self.generation);
            in_place = false;
        }
        if !same {
            self.registered = Some(waker.clone());
        }
        // Still in place if the queue gave up no waker since the count was read before
        // registering it (a push that takes it wakes it).
        let queue = self.connection.queue();
        let takes = queue.waker_takes();
        if same && takes.is_some_and(|takes| takes == self.queue_takes) {
            return if in_place {
                Registration::InPlace
            } else {
                Registration::Made
            };
        }
        let registered = queue.register_waker(waker);
        self.queue_takes = match takes {
            Some(takes) if registered => takes,
            _ => NOT_COUNTED,
        };
        if registered {
            Registration::Made
        } else {
            Registration::Refused
        }
    }
}

/// A count of takes no listener or queue reaches (a take a nanosecond would need 584
/// years): what a stream holds for "not registered". A plain `u64` rather than an
/// `Option`, so that the stream (read at every event) stays within two cache lines.
const NOT_COUNTED: u64 = u64::MAX;

/// What [`MessageStream::register`] did.
enum Registration {
    /// This task's wakers were in place since before this poll's read: whatever came
    /// after that read wakes it (or has), so it may wait without reading again.
    InPlace,
    /// Registered now: read once more, so that what landed before is not missed.
    Made,
    /// The queue refused: a dispatch arrived meanwhile (read again).
    Refused,
}

impl<A: Adapter> Stream for MessageStream<A> {
    type Item = Result<A::Output, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let mut registered = false;
        loop {
            if this.done || this.cut_off() {
                return this.finish();
            }
            let next = {
                let (shared, connection) = (&this.shared, &this.connection);
                let segment = Some(&mut this.segment);
                if this.hooked {
                    // The hook runs on the message taken: a refusal is an item too.
                    match shared.next_for(connection, segment, &owned) {
                        Ok(Some((msg, delivery))) => {
                            if let Err(error) = hook(connection, &msg) {
                                return Poll::Ready(Some(Err(error)));
                            }
                            Ok(Some((
                                msg.ends_stream(),
                                adapt(shared, Taken::Owned(msg), delivery),
                            )))
                        }
                        Ok(None) => Ok(None),
                        Err(err) => Err(err),
                    }
                } else {
                    // What passes through every layer of the read stays small: the
                    // output and whether it ends the stream.
                    shared.next_for(connection, segment, &|msg, delivery| {
                        (msg.message().ends_stream(), adapt(shared, msg, delivery))
                    })
                }
            };
            let (ends, output) = match next {
                Ok(Some(delivered)) => delivered,
                Ok(None) if this.shared.read_past_close(&this.connection) => {
                    // An earlier stream read the closed marker: nothing more will come.
                    return this.finish();
                }
                Ok(None) if registered => return Poll::Pending,
                Ok(None) => {
                    // Register, then read once more, so that a message or a stop landing
                    // in between is not missed.
                    registered = match this.register(cx.waker()) {
                        Registration::InPlace => return Poll::Pending,
                        Registration::Made => true,
                        Registration::Refused => false,
                    };
                    continue;
                }
                Err(err) => {
                    this.done = true;
                    this.forget_wakers();
                    return Poll::Ready(Some(Err(err)));
                }
            };
            if ends {
                this.done = true;
                this.forget_wakers();
            }
            return Poll::Ready(Some(Ok(output)));
        }
    }
}

/// The adapter's output for a message read, which it gets as the read took it
/// (borrowed from the log for a broadcast read without the cursor's lock).
#[inline]
fn adapt<A: Adapter>(shared: &Shared<A>, msg: Taken<'_>, delivery: Delivery) -> A::Output {
    match msg {
        Taken::Borrowed(msg) => shared.adapter.adapt(msg, &delivery),
        Taken::Owned(msg) => shared.adapter.adapt_owned(msg, &delivery),
    }
}

/// The listener's `on_message` for a message its stream read: a refusal is the
/// stream's next item (it ends nothing).
fn hook(connection: &Connection, msg: &Message) -> Result<(), Error> {
    connection
        .listener()
        .on_message(msg)
        .map_err(|source| Error::Listener {
            listener_id: connection.id().to_owned(),
            message_type: msg.message_type().to_owned(),
            source,
        })
}

impl<A: Adapter> FusedStream for MessageStream<A> {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl<A: Adapter> Drop for MessageStream<A> {
    fn drop(&mut self) {
        self.forget_wakers();
        if self.owns_listener && self.shared.remove_if_same(&self.connection) {
            self.connection.mark_removed();
        }
    }
}

impl<A: Adapter> fmt::Debug for MessageStream<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageStream")
            .field("channel_id", &&*self.shared.id)
            .field("listener_id", &self.listener_id())
            .field("done", &self.done)
            .finish()
    }
}
