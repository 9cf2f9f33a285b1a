//! The SSE channel repository: create, load and delete stored channels.

use std::collections::HashMap;
use std::sync::Arc;

use crate::channels::ChannelSettings;
use crate::error::{Error, Result};
use crate::persistent::{ChannelKeys, PersistentSseChannel, Progress, trailing_number};
use crate::record::{ChannelRecord, ListenerRecord, MessageRecord, RECORD_VERSION, decode, encode};
use crate::storage::KvStorage;
use eric_core::QueueEntry;

/// Creates, loads and deletes stored SSE channels (eric-sse's `SSEChannelRepository`):
/// a process persists its channels and reloads them at start.
///
/// ```
/// use eric_core::Message;
/// use eric_persistence::{ChannelSettings, InMemoryStorage, SseChannelRepository};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> eric_persistence::Result<()> {
/// let repository = SseChannelRepository::new(InMemoryStorage::new());
/// let channel = repository.create(ChannelSettings::with_id("news")).await?;
/// let listener = channel.add_listener().await?;
/// channel.broadcast(Message::new("headline", "stored, then delivered")).await?;
///
/// // Later, or in a new process on the same storage:
/// let reloaded = repository.load("news").await?;
/// reloaded.sse().channel().listener(&listener)?; // the listener is back
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SseChannelRepository {
    storage: Arc<dyn KvStorage>,
}

impl std::fmt::Debug for SseChannelRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseChannelRepository")
            .field("prefix", &self.storage.keys().prefix())
            .finish()
    }
}

impl SseChannelRepository {
    /// A repository over `storage`.
    pub fn new(storage: impl KvStorage) -> Self {
        Self::from_arc(Arc::new(storage))
    }

    /// A repository over shared storage.
    pub fn from_arc(storage: Arc<dyn KvStorage>) -> Self {
        SseChannelRepository { storage }
    }

    /// The storage.
    pub fn storage(&self) -> &Arc<dyn KvStorage> {
        &self.storage
    }

    /// Creates and stores a channel (eric-sse's `create(channel_data)`);
    /// [`eric_core::Error::DuplicateChannel`] if one with this id is stored.
    pub async fn create(&self, settings: ChannelSettings) -> Result<PersistentSseChannel> {
        let sse = settings.sse_builder().build()?;
        let keys = ChannelKeys::new(Arc::clone(&self.storage), sse.id());
        if self.storage.fetch_one(&keys.channel()).await?.is_some() {
            return Err(eric_core::Error::DuplicateChannel {
                channel_id: sse.id().to_owned(),
            }
            .into());
        }
        let record = ChannelRecord {
            v: RECORD_VERSION,
            id: sse.id().to_owned(),
            epoch: sse.adapter().epoch().to_owned(),
            retry_ms: sse.adapter().retry_ms(),
            replay: settings.replay_or_default(),
            replay_bytes: settings.replay_bytes,
            capacity: settings.capacity,
            overflow: settings.overflow_or_default(),
            next_seq: 0,
        };
        self.storage
            .upsert(&keys.channel(), &encode(&record))
            .await?;
        Ok(PersistentSseChannel::start(
            sse,
            keys,
            record,
            HashMap::new(),
            0,
        ))
    }

    /// Loads every stored channel, with its listeners where they were and what they
    /// had not read.
    pub async fn load_all(&self) -> Result<Vec<PersistentSseChannel>> {
        let prefix = self.storage.keys().prefix_of(&["channel"]);
        let mut channels = Vec::new();
        for (key, value) in self.storage.fetch_by_prefix(&prefix).await? {
            let record: ChannelRecord = decode(&key, value)?;
            channels.push(self.restore(record).await?);
        }
        Ok(channels)
    }

    /// Loads one stored channel.
    pub async fn load(&self, channel_id: &str) -> Result<PersistentSseChannel> {
        let keys = ChannelKeys::new(Arc::clone(&self.storage), channel_id);
        let value = self
            .storage
            .fetch_one(&keys.channel())
            .await?
            .ok_or_else(|| Error::ChannelNotFound {
                channel_id: channel_id.to_owned(),
            })?;
        self.restore(decode(&keys.channel(), value)?).await
    }

    /// Deletes a stored channel and everything stored for it.
    pub async fn delete(&self, channel_id: &str) -> Result<()> {
        let keys = ChannelKeys::new(Arc::clone(&self.storage), channel_id);
        let mut doomed = vec![keys.channel()];
        for prefix in [keys.listeners(), keys.log(), keys.queues()] {
            doomed.extend(
                self.storage
                    .fetch_by_prefix(&prefix)
                    .await?
                    .into_iter()
                    .map(|(key, _)| key),
            );
        }
        self.storage.delete_many(&doomed).await
    }

    async fn restore(&self, record: ChannelRecord) -> Result<PersistentSseChannel> {
        let keys = ChannelKeys::new(Arc::clone(&self.storage), &record.id);
        let mut listeners = Vec::new();
        for (key, value) in self.storage.fetch_by_prefix(&keys.listeners()).await? {
            listeners.push(decode::<ListenerRecord>(&key, value)?);
        }
        let mut log = Vec::new();
        for (key, value) in self.storage.fetch_by_prefix(&keys.log()).await? {
            log.push((
                trailing_number(&key)?,
                decode::<MessageRecord>(&key, value)?,
            ));
        }
        log.sort_by_key(|(seq, _)| *seq);
        let first = log.first().map(|(seq, _)| *seq);
        let head = log
            .last()
            .map_or(0, |(seq, _)| seq + 1)
            .max(record.next_seq)
            .max(listeners.iter().map(|l| l.cursor).max().unwrap_or(0));

        let sse = record
            .settings()
            .sse_builder()
            .epoch(record.epoch.clone())
            .first_seq(first.unwrap_or(head))
            .build()?;
        let channel = sse.channel();
        // The log first, with no listener yet, so a bounded channel refuses nothing.
        for (seq, entry) in &log {
            let report = channel.broadcast(entry.to_message())?;
            if report.seq != *seq {
                return Err(Error::Corrupt {
                    key: keys.log_entry(*seq),
                    reason: format!("the stored log has a gap before broadcast {seq}"),
                });
            }
        }
        let mut progress = HashMap::new();
        for listener in listeners {
            let l = eric_core::MessageQueueListener::with_id(listener.id.clone())?;
            sse.register_listener(Arc::new(l))?;
            // A cursor the channel no longer keeps (a bounded window) starts at the oldest kept.
            let cursor = listener.cursor.max(channel.replayable().start);
            channel.rewind(&listener.id, cursor)?;
            let connection = channel.get_connection(&listener.id)?;
            let mut next_dispatch = listener.dispatches_read;
            for (key, value) in self
                .storage
                .fetch_by_prefix(&keys.queue(&listener.id))
                .await?
            {
                let n = trailing_number(&key)?;
                next_dispatch = next_dispatch.max(n + 1);
                if n < listener.dispatches_read {
                    continue; // read before the restart, not yet deleted
                }
                let entry: MessageRecord = decode(&key, value)?;
                connection.queue().push(QueueEntry {
                    message: entry.to_message(),
                    broadcasts_before: entry.broadcasts_before.unwrap_or(cursor),
                });
            }
            progress.insert(
                listener.id.clone(),
                Progress {
                    cursor,
                    dispatches_read: listener.dispatches_read,
                    dispatches_stored_read: listener.dispatches_read,
                    next_dispatch,
                    unrecorded: false,
                },
            );
        }
        Ok(PersistentSseChannel::start(
            sse,
            keys,
            record,
            progress,
            first.unwrap_or(head),
        ))
    }
}
