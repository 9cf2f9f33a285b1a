//! Recording what stored listeners read: batched every few milliseconds, with the
//! dispatches they consumed and the log entries nobody needs deleted.

use std::collections::HashSet;
use std::sync::PoisonError;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{Inner, Progress};
use crate::error::{Error, Result};
use crate::record::{ListenerRecord, RECORD_VERSION, encode};

/// How long reads gather before they are recorded.
const RECORD_WINDOW: Duration = Duration::from_millis(10);

pub(super) enum Ack {
    Read(String),
    Flush(oneshot::Sender<Result<()>>),
}

/// Records what listeners read, batched: their records, the dispatches they consumed,
/// and the log entries nobody needs any more. Retries while the storage is away.
pub(super) async fn record_reads(
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
