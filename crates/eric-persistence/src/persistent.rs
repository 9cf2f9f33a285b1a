//! An SSE channel whose broadcasts, dispatches, listeners and read positions are kept
//! in a [`KvStorage`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use eric_core::{BroadcastReport, Message};
use eric_prefabs::{SseChannel, SseEvent, SseStream};
use futures_core::Stream;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::record::{ChannelRecord, ListenerRecord, RECORD_VERSION, encode, message_record_json};
use crate::storage::KvStorage;

/// Where each part of a channel lives in the storage.
#[derive(Clone, Debug)]
pub(crate) struct ChannelKeys {
    storage: Arc<dyn KvStorage>,
    id: String,
}

impl fmt::Debug for dyn KvStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvStorage")
            .field("prefix", &self.keys().prefix())
            .finish()
    }
}

impl ChannelKeys {
    pub(crate) fn new(storage: Arc<dyn KvStorage>, id: &str) -> Self {
        ChannelKeys {
            storage,
            id: id.to_owned(),
        }
    }
    pub(crate) fn channel(&self) -> String {
        self.storage.keys().key(&["channel", &self.id])
    }
    pub(crate) fn listener(&self, listener: &str) -> String {
        self.storage.keys().key(&["listener", &self.id, listener])
    }
    pub(crate) fn listeners(&self) -> String {
        self.storage.keys().prefix_of(&["listener", &self.id])
    }
    pub(crate) fn log_entry(&self, seq: u64) -> String {
        self.storage.keys().numbered_key(&["log", &self.id], seq)
    }
    pub(crate) fn log(&self) -> String {
        self.storage.keys().prefix_of(&["log", &self.id])
    }
    pub(crate) fn queue_entry(&self, listener: &str, n: u64) -> String {
        self.storage
            .keys()
            .numbered_key(&["queue", &self.id, listener], n)
    }
    pub(crate) fn queue(&self, listener: &str) -> String {
        self.storage
            .keys()
            .prefix_of(&["queue", &self.id, listener])
    }
    pub(crate) fn queues(&self) -> String {
        self.storage.keys().prefix_of(&["queue", &self.id])
    }
}

/// The number at the end of a log or queue key.
pub(crate) fn trailing_number(key: &str) -> Result<u64> {
    key.rsplit(':')
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::Corrupt {
            key: key.to_owned(),
            reason: "no sequence number at the end of the key".to_owned(),
        })
}

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

/// How long reads gather before they are recorded.
const RECORD_WINDOW: Duration = Duration::from_millis(10);

/// Writes one round trip takes at most.
const MAX_BATCH: usize = 1024;

/// Round trips a channel's writer has out at once.
const IN_FLIGHT: usize = 2;

enum Op {
    Broadcast(Message),
    Dispatch(String, Message),
    AddListener,
    RemoveListener(String),
}

impl Op {
    /// Listener changes wait until nothing is in flight, and nothing passes them.
    fn is_barrier(&self) -> bool {
        matches!(self, Op::AddListener | Op::RemoveListener(_))
    }
}

enum Done {
    Broadcast(BroadcastReport),
    Dispatched,
    Added(String),
    Removed,
}

struct Request {
    op: Op,
    done: oneshot::Sender<Result<Done>>,
}

enum Ack {
    Read(String),
    Flush(oneshot::Sender<Result<()>>),
}

/// An SSE channel kept in a [`KvStorage`]: what [`SseChannelRepository`](crate::SseChannelRepository)
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
        match self.request(Op::AddListener).await? {
            Done::Added(id) => Ok(id),
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

/// The channel's writer. Takes the requests waiting, stores runs of broadcasts and
/// dispatches in one round trip each, applies them in memory in order, and answers.
/// Up to [`IN_FLIGHT`] runs are in the storage at once: while one round trip is out, the
/// requests that arrived meanwhile are already on their way (the batches' keys are
/// distinct, and memory applies them in the order they were planned).
async fn write_loop(inner: std::sync::Weak<Inner>, mut pending: mpsc::UnboundedReceiver<Request>) {
    let mut backlog: VecDeque<Request> = VecDeque::new();
    let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
    // Where planning has got to, counting what is in flight; `None`: start from memory.
    let mut plan: Option<Plan> = None;
    let mut open = true;
    loop {
        if open && backlog.is_empty() && in_flight.is_empty() {
            match pending.recv().await {
                Some(request) => backlog.push_back(request),
                None => open = false,
            }
        }
        while open && backlog.len() < MAX_BATCH * IN_FLIGHT {
            match pending.try_recv() {
                Ok(request) => backlog.push_back(request),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        if !open && backlog.is_empty() && in_flight.is_empty() {
            return;
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let barrier_first = backlog.front().is_some_and(|r| r.op.is_barrier());
        if barrier_first && in_flight.is_empty() {
            // Listeners come and go between batches, with nothing in flight.
            if let Some(request) = backlog.pop_front() {
                let outcome = match request.op {
                    Op::AddListener => add_listener(&strong).await,
                    Op::RemoveListener(id) => remove_listener(&strong, &id).await,
                    _ => continue,
                };
                let _ = request.done.send(outcome);
            }
            plan = None;
            continue;
        }
        if !barrier_first && !backlog.is_empty() && in_flight.len() < IN_FLIGHT {
            let mut run = Vec::new();
            while run.len() < MAX_BATCH && backlog.front().is_some_and(|r| !r.op.is_barrier()) {
                if let Some(request) = backlog.pop_front() {
                    run.push(request);
                }
            }
            let plan = plan.get_or_insert_with(|| Plan::from_memory(&strong));
            if let Some(batch) = plan_batch(&strong, plan, run) {
                in_flight.push_back(Box::pin(batch));
            }
            continue;
        }
        drop(strong);
        // Wait for the oldest batch; while there is room, for new requests as well.
        let room = open && !barrier_first && in_flight.len() < IN_FLIGHT;
        tokio::select! {
            biased;
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                let Some(strong) = inner.upgrade() else { return };
                if let Some(retry) = apply_batch(&strong, done, &mut in_flight).await {
                    // Something was refused or not stored: what came after it was
                    // planned on top of it, so it is planned again, first.
                    for request in retry.into_iter().rev() {
                        backlog.push_front(request);
                    }
                    plan = None;
                }
            }
            received = pending.recv(), if room => match received {
                Some(request) => backlog.push_back(request),
                None => open = false,
            },
        }
    }
}

/// A batch in the storage: its outcome, with what it planned.
type InFlight = Pin<Box<dyn Future<Output = (Result<()>, Vec<Planned>)> + Send>>;

/// Where planning has got to: the next broadcast's sequence number, and each listener's
/// next dispatch number, counting the batches in flight.
struct Plan {
    next_seq: u64,
    next_dispatch: HashMap<String, u64>,
}

impl Plan {
    fn from_memory(inner: &Inner) -> Self {
        Plan {
            next_seq: inner.sse.channel().next_seq(),
            next_dispatch: HashMap::new(),
        }
    }
}

/// A planned write: its key, and what applying it in memory does.
struct Planned {
    key: String,
    request: Request,
}

/// Plans a run of broadcasts and dispatches (answering at once the ones memory would
/// refuse whatever the order) and starts storing them in one round trip.
fn plan_batch(
    inner: &Inner,
    plan: &mut Plan,
    run: Vec<Request>,
) -> Option<impl Future<Output = (Result<()>, Vec<Planned>)> + Send + 'static> {
    let mut planned = Vec::with_capacity(run.len());
    let mut entries = Vec::with_capacity(run.len());
    for request in run {
        let (key, record) = match &request.op {
            Op::Broadcast(msg) => {
                if let Err(err) = check(inner, msg) {
                    let _ = request.done.send(Err(err));
                    continue;
                }
                let seq = plan.next_seq;
                plan.next_seq += 1;
                (inner.keys.log_entry(seq), message_record_json(msg, None))
            }
            Op::Dispatch(listener, msg) => {
                let stored = inner
                    .progress
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(listener)
                    .map(|p| p.next_dispatch);
                let Some(stored) = stored else {
                    let _ = request.done.send(Err(eric_core::Error::InvalidListener {
                        listener_id: listener.clone(),
                    }
                    .into()));
                    continue;
                };
                if let Err(err) = check(inner, msg) {
                    let _ = request.done.send(Err(err));
                    continue;
                }
                let n = plan.next_dispatch.entry(listener.clone()).or_insert(stored);
                let key = inner.keys.queue_entry(listener, *n);
                *n += 1;
                (key, message_record_json(msg, Some(plan.next_seq)))
            }
            Op::AddListener | Op::RemoveListener(_) => {
                // Barriers are never planned; answer rather than drop it.
                let _ = request.done.send(Err(eric_core::Error::ChannelClosed {
                    channel_id: inner.sse.id().to_owned(),
                }
                .into()));
                continue;
            }
        };
        entries.push((key.clone(), record));
        planned.push(Planned { key, request });
    }
    if planned.is_empty() {
        return None;
    }
    let storage = Arc::clone(&inner.keys.storage);
    Some(async move {
        let outcome = storage.upsert_many_json(&entries).await;
        (outcome, planned)
    })
}

/// Applies a stored batch in memory, in order, answering each request. If memory
/// refuses one (closed, full, a bad type) or the batch was not stored, the entries after
/// it, in this batch and in every batch still in flight, are taken back from the
/// storage and returned to be planned again, so that sequence numbers and dispatch
/// numbers stay without gaps.
async fn apply_batch(
    inner: &Inner,
    (outcome, planned): (Result<()>, Vec<Planned>),
    in_flight: &mut FuturesOrdered<InFlight>,
) -> Option<Vec<Request>> {
    let mut rest: Vec<Planned> = Vec::new();
    match outcome {
        Err(err) => {
            let message = err.to_string();
            let mut source = Some(err);
            for p in planned {
                let err = source.take().unwrap_or_else(|| Error::Storage {
                    operation: "upsert_many",
                    key: p.key.clone(),
                    source: message.clone().into(),
                });
                let _ = p.request.done.send(Err(err));
            }
        }
        Ok(()) => {
            let mut planned = planned.into_iter();
            while let Some(p) = planned.next() {
                let applied = match &p.request.op {
                    Op::Broadcast(msg) => inner.sse.broadcast(msg.clone()).map(Done::Broadcast),
                    Op::Dispatch(listener, msg) => {
                        inner.sse.dispatch(listener, msg.clone()).map(|()| {
                            if let Some(progress) = inner
                                .progress
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .get_mut(listener)
                            {
                                progress.next_dispatch += 1;
                            }
                            Done::Dispatched
                        })
                    }
                    Op::AddListener | Op::RemoveListener(_) => continue,
                };
                match applied {
                    Ok(done) => {
                        let _ = p.request.done.send(Ok(done));
                    }
                    Err(err) => {
                        let _ = inner
                            .keys
                            .storage
                            .delete_many(std::slice::from_ref(&p.key))
                            .await;
                        let _ = p.request.done.send(Err(err.into()));
                        rest.extend(planned);
                        break;
                    }
                }
            }
            if rest.is_empty() {
                return None;
            }
        }
    }
    // Everything still in flight was planned on top of what just failed.
    while let Some((_, later)) = in_flight.next().await {
        rest.extend(later);
    }
    let doomed: Vec<String> = rest.iter().map(|p| p.key.clone()).collect();
    let _ = inner.keys.storage.delete_many(&doomed).await;
    Some(rest.into_iter().map(|p| p.request).collect())
}

/// What memory would refuse whatever the order: a closed channel, a type a producer
/// may not send.
fn check(inner: &Inner, msg: &Message) -> Result<()> {
    if inner.sse.channel().is_closed() {
        return Err(eric_core::Error::ChannelClosed {
            channel_id: inner.sse.id().to_owned(),
        }
        .into());
    }
    Ok(eric_prefabs::check_message(msg)?)
}

async fn add_listener(inner: &Inner) -> Result<Done> {
    let listener = inner.sse.add_listener()?;
    let id = listener.id().to_owned();
    let cursor = inner.sse.channel().get_connection(&id)?.position();
    let record = ListenerRecord {
        v: RECORD_VERSION,
        id: id.clone(),
        cursor,
        dispatches_read: 0,
    };
    if let Err(err) = inner
        .keys
        .storage
        .upsert(&inner.keys.listener(&id), &encode(&record))
        .await
    {
        let _ = inner.sse.remove_listener(&id);
        return Err(err);
    }
    inner
        .progress
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(
            id.clone(),
            Progress {
                cursor,
                ..Progress::default()
            },
        );
    Ok(Done::Added(id))
}

async fn remove_listener(inner: &Inner, listener_id: &str) -> Result<Done> {
    inner.sse.channel().get_connection(listener_id)?;
    let storage = &inner.keys.storage;
    let mut doomed: Vec<String> = storage
        .fetch_by_prefix(&inner.keys.queue(listener_id))
        .await?
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    doomed.push(inner.keys.listener(listener_id));
    storage.delete_many(&doomed).await?;
    inner
        .progress
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(listener_id);
    inner.sse.remove_listener(listener_id)?;
    Ok(Done::Removed)
}

/// Records what listeners read, batched: their records, the dispatches they consumed,
/// and the log entries nobody needs any more. Retries while the storage is away.
async fn record_reads(
    inner: std::sync::Weak<Inner>,
    mut incoming: mpsc::UnboundedReceiver<Ack>,
    stored_log_from: u64,
) {
    let mut dirty: HashSet<String> = HashSet::new();
    let mut trimmed_below = stored_log_from;
    while let Some(first) = incoming.recv().await {
        let mut flushes = Vec::new();
        let take = |ack: Ack, dirty: &mut HashSet<String>, flushes: &mut Vec<_>| match ack {
            Ack::Read(listener) => {
                dirty.insert(listener);
            }
            Ack::Flush(done) => flushes.push(done),
        };
        take(first, &mut dirty, &mut flushes);
        // Reads come in bursts: let a burst gather before writing it (a flush does not
        // wait). After a crash, at most this window is read again.
        if flushes.is_empty() {
            tokio::time::sleep(RECORD_WINDOW).await;
        }
        while let Ok(ack) = incoming.try_recv() {
            take(ack, &mut dirty, &mut flushes);
        }
        let Some(inner) = inner.upgrade() else { return };
        let outcome = write_progress(&inner, &dirty, &mut trimmed_below).await;
        match &outcome {
            Ok(()) => dirty.clear(),
            // Keep what is dirty; try again shortly (the storage may be restarting).
            Err(_) => {
                tokio::spawn({
                    let retry = inner.acks.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let (done, _) = oneshot::channel();
                        let _ = retry.send(Ack::Flush(done));
                    }
                });
            }
        }
        for done in flushes {
            let _ = done.send(match &outcome {
                Ok(()) => Ok(()),
                Err(err) => Err(Error::Storage {
                    operation: "record reads",
                    key: inner.keys.channel(),
                    source: err.to_string().into(),
                }),
            });
        }
    }
}

async fn write_progress(
    inner: &Inner,
    dirty: &HashSet<String>,
    trimmed_below: &mut u64,
) -> Result<()> {
    let storage = &inner.keys.storage;
    let snapshot: Vec<(String, Progress)> = {
        let mut progress = inner
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        dirty
            .iter()
            .filter_map(|id| {
                let p = progress.get_mut(id)?;
                // Reads from now on tell the recorder again.
                p.unrecorded = false;
                Some((id.clone(), *p))
            })
            .collect()
    };
    let mut records = Vec::with_capacity(snapshot.len());
    let mut consumed = Vec::new();
    for (id, p) in &snapshot {
        let record = ListenerRecord {
            v: RECORD_VERSION,
            id: id.clone(),
            cursor: p.cursor,
            dispatches_read: p.dispatches_read,
        };
        records.push((inner.keys.listener(id), encode(&record)));
        consumed.extend(
            (p.dispatches_stored_read..p.dispatches_read).map(|n| inner.keys.queue_entry(id, n)),
        );
    }
    storage.upsert_many(&records).await?;
    storage.delete_many(&consumed).await?;
    {
        let mut progress = inner
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (id, p) in &snapshot {
            if let Some(current) = progress.get_mut(id) {
                current.dispatches_stored_read =
                    current.dispatches_stored_read.max(p.dispatches_read);
            }
        }
    }
    trim_log(inner, trimmed_below).await
}

/// Deletes log entries below every stored listener's cursor and the replay window.
async fn trim_log(inner: &Inner, trimmed_below: &mut u64) -> Result<()> {
    let channel = inner.sse.channel();
    let head = channel.next_seq();
    let min_cursor = {
        let progress = inner
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        progress.values().map(|p| p.cursor).min().unwrap_or(head)
    };
    let keep_from = min_cursor.min(head.saturating_sub(inner.record.replay as u64));
    if keep_from <= *trimmed_below {
        return Ok(());
    }
    let doomed: Vec<String> = (*trimmed_below..keep_from)
        .map(|seq| inner.keys.log_entry(seq))
        .collect();
    inner.keys.storage.delete_many(&doomed).await?;
    // Remember how far ids went, in case every entry is trimmed away.
    let mut record = inner.record.clone();
    record.next_seq = head;
    inner
        .keys
        .storage
        .upsert(&inner.keys.channel(), &encode(&record))
        .await?;
    *trimmed_below = keep_from;
    Ok(())
}
