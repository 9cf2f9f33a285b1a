//! The data-processing channel: listeners' messages processed on a thread pool.

use std::any::Any;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use eric_core::{Adapter, Channel, Delivery, Message, MessageQueueListener};
use futures_core::{FusedStream, Stream};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// What [`DataProcessingChannel`] yields by default (eric-sse's `{"event", "data"}`):
/// the message's type and payload. Serializes as `{"event": type, "data": payload}`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessedMessage(Message);

impl ProcessedMessage {
    /// The message type.
    pub fn event(&self) -> &str {
        self.0.message_type()
    }

    /// The payload.
    pub fn data(&self) -> &serde_json::Value {
        self.0.payload()
    }

    /// The message itself.
    pub fn message(&self) -> &Message {
        &self.0
    }
}

impl Serialize for ProcessedMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("ProcessedMessage", 2)?;
        s.serialize_field("event", self.event())?;
        s.serialize_field("data", self.data())?;
        s.end()
    }
}

/// The default adapter of [`DataProcessingChannel`]: see [`ProcessedMessage`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessingAdapter;

impl Adapter for ProcessingAdapter {
    type Output = ProcessedMessage;

    fn adapt(&self, msg: &Message, _delivery: &Delivery) -> ProcessedMessage {
        ProcessedMessage(msg.clone())
    }
}

/// A channel whose listeners' queues are processed on a pool of `max_workers` threads
/// (eric-sse's `DataProcessingChannel`). The work for each message is the listener's
/// `on_message` hook, then the adapter: give it a closure adapter to do your own.
///
/// ```
/// use eric_core::Message;
/// use eric_prefabs::DataProcessingChannel;
/// use futures_util::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> eric_prefabs::Result<()> {
/// let squares = DataProcessingChannel::with_adapter(4, |msg: &Message| {
///     let n = msg.payload().as_u64().unwrap_or(0);
///     n * n
/// })?;
/// let listener = squares.add_listener()?;
/// for n in 1..=4u64 {
///     squares.channel().dispatch(listener.id(), Message::new("n", n))?;
/// }
/// let mut results: Vec<u64> = squares
///     .process_queue(listener.id())?
///     .map(|r| r.unwrap())
///     .collect()
///     .await;
/// results.sort(); // they complete in any order
/// assert_eq!(results, [1, 4, 9, 16]);
/// # Ok(())
/// # }
/// ```
pub struct DataProcessingChannel<A = ProcessingAdapter> {
    channel: Channel<A>,
    pool: Arc<rayon::ThreadPool>,
    max_workers: usize,
}

impl DataProcessingChannel<ProcessingAdapter> {
    /// A channel processing on `max_workers` threads (at least 1), yielding
    /// [`ProcessedMessage`]s.
    pub fn new(max_workers: usize) -> Result<Self> {
        Self::with_adapter(max_workers, ProcessingAdapter)
    }
}

impl<A: Adapter> DataProcessingChannel<A> {
    /// A channel processing on `max_workers` threads (at least 1) with `adapter`.
    pub fn with_adapter(max_workers: usize, adapter: A) -> Result<Self> {
        Self::from_channel(max_workers, Channel::new(adapter))
    }

    /// Processes the listeners of an existing channel (bounded, persistent, ...).
    pub fn from_channel(max_workers: usize, channel: Channel<A>) -> Result<Self> {
        let max_workers = max_workers.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(max_workers)
            .thread_name(|n| format!("eric-processing-{n}"))
            .build()
            .map_err(|err| {
                Error::Core(eric_core::Error::Backend {
                    operation: "starting the processing thread pool",
                    source: Box::new(err),
                })
            })?;
        Ok(DataProcessingChannel {
            channel,
            pool: Arc::new(pool),
            max_workers,
        })
    }

    /// The channel: dispatch, broadcast and manage listeners through it.
    pub fn channel(&self) -> &Channel<A> {
        &self.channel
    }

    /// Adds a default listener.
    pub fn add_listener(&self) -> Result<Arc<MessageQueueListener>> {
        Ok(self.channel.add_listener()?)
    }

    /// How many threads process.
    pub fn max_workers(&self) -> usize {
        self.max_workers
    }

    /// Processes what the listener has queued now (eric-sse's `process_queue`): each
    /// message goes to the pool, and results are yielded as they complete, in any
    /// order. At most `2 × max_workers` messages are in flight, so memory stays flat
    /// however long the queue. A panic in the hook or adapter becomes an
    /// [`Error::CallbackPanicked`] item; the pool and the other messages go on. The
    /// stream ends when the queue is empty and every result is out.
    ///
    /// Starts the listener if stopped. Dropping the stream stops taking messages;
    /// results still in flight are discarded.
    pub fn process_queue(&self, listener_id: &str) -> Result<ProcessQueue<A>> {
        let listener = self.channel.listener(listener_id)?;
        listener.start();
        let (results, incoming) = mpsc::unbounded_channel();
        Ok(ProcessQueue {
            channel: self.channel.clone(),
            listener,
            pool: Arc::clone(&self.pool),
            max_in_flight: 2 * self.max_workers,
            in_flight: 0,
            exhausted: false,
            results,
            incoming,
        })
    }
}

impl<A: Adapter> fmt::Debug for DataProcessingChannel<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataProcessingChannel")
            .field("channel", &self.channel)
            .field("max_workers", &self.max_workers)
            .finish()
    }
}

/// The results of [`DataProcessingChannel::process_queue`].
#[must_use = "streams do nothing unless polled"]
pub struct ProcessQueue<A: Adapter> {
    channel: Channel<A>,
    listener: Arc<dyn eric_core::Listener>,
    pool: Arc<rayon::ThreadPool>,
    max_in_flight: usize,
    in_flight: usize,
    exhausted: bool,
    results: mpsc::UnboundedSender<Result<A::Output>>,
    incoming: mpsc::UnboundedReceiver<Result<A::Output>>,
}

impl<A: Adapter> ProcessQueue<A> {
    /// Hands messages to the pool until the in-flight bound or the queue's end.
    fn refill(&mut self) -> Result<()> {
        while !self.exhausted && self.in_flight < self.max_in_flight {
            let Some((msg, delivery)) = self.channel.take_next(self.listener.id())? else {
                self.exhausted = true;
                break;
            };
            let channel = self.channel.clone();
            let listener = Arc::clone(&self.listener);
            let results = self.results.clone();
            self.in_flight += 1;
            self.pool.spawn(move || {
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    listener.on_message(&msg)?;
                    Ok(channel.adapter().adapt(&msg, &delivery))
                }));
                let result = match outcome {
                    Ok(Ok(output)) => Ok(output),
                    Ok(Err(source)) => Err(Error::Core(eric_core::Error::Listener {
                        listener_id: listener.id().to_owned(),
                        message_type: msg.message_type().to_owned(),
                        source,
                    })),
                    Err(panic) => Err(Error::CallbackPanicked {
                        message_type: msg.message_type().to_owned(),
                        panic: panic_text(panic.as_ref()),
                    }),
                };
                // The receiver is gone only if the stream was dropped: nobody waits.
                let _ = results.send(result);
            });
        }
        Ok(())
    }
}

fn panic_text(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with no message".to_owned()
    }
}

impl<A: Adapter> Stream for ProcessQueue<A> {
    type Item = Result<A::Output>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Err(err) = this.refill() {
            // The listener went away or was stopped: report it once, then drain.
            this.exhausted = true;
            return Poll::Ready(Some(Err(err)));
        }
        if this.exhausted && this.in_flight == 0 {
            return Poll::Ready(None);
        }
        match this.incoming.poll_recv(cx) {
            Poll::Ready(Some(result)) => {
                this.in_flight -= 1;
                Poll::Ready(Some(result))
            }
            // Unreachable while `self.results` lives; end rather than wait forever.
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<A: Adapter> FusedStream for ProcessQueue<A> {
    fn is_terminated(&self) -> bool {
        self.exhausted && self.in_flight == 0
    }
}

impl<A: Adapter> fmt::Debug for ProcessQueue<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessQueue")
            .field("listener_id", &self.listener.id())
            .field("in_flight", &self.in_flight)
            .field("exhausted", &self.exhausted)
            .finish()
    }
}
