//! A stored channel's writer (group commit): requests waiting are stored in one round
//! trip per run, applied in memory in planned order, then answered.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError};

use eric_core::{BroadcastReport, Message};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::sync::{mpsc, oneshot};

use super::{Inner, Progress};
use crate::error::{Error, Result};
use crate::record::{ListenerRecord, RECORD_VERSION, encode, message_record_json};

/// Writes one round trip takes at most.
const MAX_BATCH: usize = 1024;

/// Round trips a channel's writer has out at once.
const IN_FLIGHT: usize = 2;

pub(super) enum Op {
    Broadcast(Message),
    Dispatch(String, Message),
    /// With the id given, or a fresh one.
    AddListener(Option<String>),
    RemoveListener(String),
}

impl Op {
    /// Listener changes wait until nothing is in flight, and nothing passes them.
    fn is_barrier(&self) -> bool {
        matches!(self, Op::AddListener(_) | Op::RemoveListener(_))
    }
}

pub(super) enum Done {
    Broadcast(BroadcastReport),
    Dispatched,
    Added(String),
    Removed,
}

pub(super) struct Request {
    pub(super) op: Op,
    pub(super) done: oneshot::Sender<Result<Done>>,
}

/// The channel's writer. Takes the requests waiting, stores runs of broadcasts and
/// dispatches in one round trip each, applies them in memory in order, and answers.
/// Up to [`IN_FLIGHT`] runs are in the storage at once: while one round trip is out, the
/// requests that arrived meanwhile are already on their way (the batches' keys are
/// distinct, and memory applies them in the order they were planned).
pub(super) async fn write_loop(
    inner: std::sync::Weak<Inner>,
    mut pending: mpsc::UnboundedReceiver<Request>,
) {
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
                    Op::AddListener(id) => add_listener(&strong, id).await,
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
                let admitted =
                    check(inner, msg).and_then(|()| Ok(inner.sse.channel().admit(msg)?));
                if let Err(err) = admitted {
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
            Op::AddListener(_) | Op::RemoveListener(_) => {
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
                    // Stored, so accepted: the memory budget admitted it above.
                    Op::Broadcast(msg) => inner
                        .sse
                        .channel()
                        .replicate(msg.clone())
                        .map(Done::Broadcast)
                        .map_err(Into::into),
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
                    Op::AddListener(_) | Op::RemoveListener(_) => continue,
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

async fn add_listener(inner: &Inner, id: Option<String>) -> Result<Done> {
    let id = match id {
        Some(id) => {
            let listener = eric_core::MessageQueueListener::with_id(id)?;
            let id = listener.id().to_owned();
            inner.sse.register_listener(std::sync::Arc::new(listener))?;
            id
        }
        None => inner.sse.add_listener()?.id().to_owned(),
    };
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
