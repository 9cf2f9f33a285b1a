//! An SSE channel whose broadcasts, dispatches, listeners and read positions are kept
//! in a [`KvStorage`](crate::KvStorage): its API and its stream here; where its parts
//! are stored in [`keys`], its group-commit writer in [`writer`], the recording of
//! reads in [`recorder`].

mod keys;
mod recorder;
mod writer;

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use eric_core::{BroadcastReport, Message};
use eric_prefabs::{SseChannel, SseEvent, SseStream};
use futures_core::Stream;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::record::ChannelRecord;

pub(crate) use keys::{ChannelKeys, trailing_number};
use recorder::{Ack, record_reads};
use writer::{Done, Op, Request, write_loop};

/// How far a listener has read, and how much of that is stored.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Progress {
    pub(crate) cursor: u64,
    pub(crate) dispatches_read: u64,
    pub(crate) dispatches_stored_read: u64,
    pub(crate) next_dispatch: u64,
    /// A read is waiting to be recorded (the recorder has been told): later reads
    /// only move the numbers above, without telling it again.
    pub(crate) unrecorded: bool,
}

pub(crate) struct Inner {
    pub(crate) sse: SseChannel,
    pub(crate) keys: ChannelKeys,
    pub(crate) record: ChannelRecord,
    // Every write goes through the channel's writer task, which stores a batch in one
    // round trip and then applies it in memory, in order (group commit).
    requests: mpsc::UnboundedSender<Request>,
    pub(crate) progress: Mutex<HashMap<String, Progress>>,
    acks: mpsc::UnboundedSender<Ack>,
}

/// An SSE channel kept in a [`KvStorage`](crate::KvStorage): what [`SseChannelRepository`](crate::SseChannelRepository)
/// creates and loads. Cheap to clone.
///
/// Writes go to the storage first and to memory second: when `broadcast`, `dispatch`
/// or `add_listener` returns `Ok`, the storage has it, and a process built later from
/// the same storage has it too. A broadcast is one write however many listeners there
/// are. Readers wait on in-process wake-ups (nothing polls the storage); what they read
/// is recorded in the background, batched, so after a crash a listener may read again
/// at most what it read in the last moments (at least once, never lost).
///
/// Listeners added through [`sse`](Self::sse) directly (and [`subscribe`](Self::subscribe)
/// streams) are not stored: they are this process's alone.
#[derive(Clone)]
pub struct PersistentSseChannel {
    inner: Arc<Inner>,
}

impl PersistentSseChannel {
    /// Starts recording reads; `stored_log_from` is the first log entry in storage.
    pub(crate) fn start(
        sse: SseChannel,
        keys: ChannelKeys,
        record: ChannelRecord,
        progress: HashMap<String, Progress>,
        stored_log_from: u64,
    ) -> Self {
        let (acks, incoming) = mpsc::unbounded_channel();
        let (requests, pending) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            sse,
            keys,
            record,
            requests,
            progress: Mutex::new(progress),
            acks,
        });
        tokio::spawn(record_reads(
            Arc::downgrade(&inner),
            incoming,
            stored_log_from,
        ));
        tokio::spawn(write_loop(Arc::downgrade(&inner), pending));
        PersistentSseChannel { inner }
    }

    /// The channel's id.
    pub fn id(&self) -> &str {
        self.inner.sse.id()
    }

    /// The SSE channel in memory: for reading, and for listeners this process keeps to
    /// itself. Writes made through it are not stored.
    pub fn sse(&self) -> &SseChannel {
        &self.inner.sse
    }

    /// The stored settings.
    pub fn record(&self) -> &ChannelRecord {
        &self.inner.record
    }

    fn progress(&self) -> MutexGuard<'_, HashMap<String, Progress>> {
        self.inner
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn request(&self, op: Op) -> Result<Done> {
        let (done, outcome) = oneshot::channel();
        let closed = || {
            Error::Core(eric_core::Error::ChannelClosed {
                channel_id: self.id().to_owned(),
            })
        };
        self.inner
            .requests
            .send(Request { op, done })
            .map_err(|_| closed())?;
        outcome.await.map_err(|_| closed())?
    }

    /// Adds a listener, stored; returns its id.
    pub async fn add_listener(&self) -> Result<String> {
        match self.request(Op::AddListener(None)).await? {
            Done::Added(id) => Ok(id),
            _ => unreachable!("the writer answers AddListener with Added"),
        }
    }

    /// Adds a listener with the id given, stored.
    pub async fn add_listener_with_id(&self, listener_id: &str) -> Result<()> {
        let id = eric_core::MessageQueueListener::with_id(listener_id)?
            .id()
            .to_owned();
        match self.request(Op::AddListener(Some(id))).await? {
            Done::Added(_) => Ok(()),
            _ => unreachable!("the writer answers AddListener with Added"),
        }
    }

    /// Removes a listener and everything stored for it; its stream ends.
    pub async fn remove_listener(&self, listener_id: &str) -> Result<()> {
        self.request(Op::RemoveListener(listener_id.to_owned()))
            .await
            .map(|_| ())
    }

    /// Sends `msg` to every listener: stored (one write, batched with the writes of
    /// other producers), then delivered.
    pub async fn broadcast(&self, msg: impl Into<Message>) -> Result<BroadcastReport> {
        match self.request(Op::Broadcast(msg.into())).await? {
            Done::Broadcast(report) => Ok(report),
            _ => unreachable!("the writer answers Broadcast with Broadcast"),
        }
    }

    /// Sends `msg` to one listener: stored, then delivered.
    pub async fn dispatch(&self, listener_id: &str, msg: impl Into<Message>) -> Result<()> {
        self.request(Op::Dispatch(listener_id.to_owned(), msg.into()))
            .await
            .map(|_| ())
    }

    /// A stored listener's events; what it reads is recorded.
    pub fn message_stream(&self, listener_id: &str) -> Result<PersistentStream> {
        self.message_stream_resuming(listener_id, None)
    }

    /// A stored listener's events after `last_event_id` (see
    /// [`SseChannel::subscribe`]); what it reads is recorded.
    pub fn message_stream_resuming(
        &self,
        listener_id: &str,
        last_event_id: Option<&str>,
    ) -> Result<PersistentStream> {
        if !self.progress().contains_key(listener_id) {
            return Err(eric_core::Error::InvalidListener {
                listener_id: listener_id.to_owned(),
            }
            .into());
        }
        let stream = self
            .inner
            .sse
            .message_stream_resuming(listener_id, last_event_id)?;
        Ok(PersistentStream {
            inner: Arc::clone(&self.inner),
            stream,
        })
    }

    /// A new listener of this process alone (not stored) and its events: what a
    /// browser's `EventSource` connects to.
    pub fn subscribe(&self, last_event_id: Option<&str>) -> Result<SseStream> {
        Ok(self.inner.sse.subscribe(last_event_id)?)
    }

    /// Waits until every read so far is recorded in the storage.
    pub async fn flush(&self) -> Result<()> {
        let (done, wait) = oneshot::channel();
        self.inner.acks.send(Ack::Flush(done)).map_err(|_| {
            Error::Core(eric_core::Error::ChannelClosed {
                channel_id: self.id().to_owned(),
            })
        })?;
        wait.await.unwrap_or(Ok(()))
    }

    /// Closes the channel in memory: streams end. What is stored stays (delete it
    /// through the repository).
    pub fn close(&self) {
        self.inner.sse.close();
    }
}

impl fmt::Debug for PersistentSseChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersistentSseChannel")
            .field("id", &self.id())
            .field("listeners", &self.progress().len())
            .finish()
    }
}

/// A stored listener's events; each one read is recorded in the background.
#[must_use = "streams do nothing unless polled"]
pub struct PersistentStream {
    inner: Arc<Inner>,
    stream: SseStream,
}

impl PersistentStream {
    /// The listener this stream reads.
    pub fn listener_id(&self) -> &str {
        self.stream.listener_id()
    }

    fn record_read(&self, event: &SseEvent) {
        let adapter = self.inner.sse.adapter();
        let id = self.listener_id();
        let mut progress = self
            .inner
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(p) = progress.get_mut(id) else {
            return;
        };
        match event
            .id()
            .and_then(|event_id| adapter.parse_event_id(event_id))
        {
            Some(seq) => p.cursor = p.cursor.max(seq + 1),
            None => p.dispatches_read += 1,
        }
        if std::mem::replace(&mut p.unrecorded, true) {
            return;
        }
        drop(progress);
        let _ = self.inner.acks.send(Ack::Read(id.to_owned()));
    }
}

impl Stream for PersistentStream {
    type Item = Result<SseEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.stream).poll_next(cx) {
            Poll::Ready(Some(Ok(event))) => {
                self.record_read(&event);
                Poll::Ready(Some(Ok(event)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl fmt::Debug for PersistentStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersistentStream")
            .field("channel_id", &self.inner.sse.id())
            .field("listener_id", &self.listener_id())
            .finish()
    }
}
