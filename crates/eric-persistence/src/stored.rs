//! [`StoredChannels`]: SSE channels kept in a repository, served from memory.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use eric_core::{ChannelContainer, Message};
use eric_prefabs::SseAdapter;

use crate::channels::{
    ChannelInfo, ChannelSettings, EventStream, MemoryChannels, Published, SseChannels, boxed,
    published,
};
use crate::error::{Error, Result};
use crate::persistent::PersistentSseChannel;
use crate::repository::SseChannelRepository;

/// SSE channels kept in a repository (any [`KvStorage`](crate::KvStorage): Redis, or
/// memory for tests), served from this process's memory: channels, listeners made with
/// [`add_listener`](SseChannels::add_listener) and what they have not read survive a
/// restart; what `broadcast`, `dispatch`, `create` and `add_listener` acknowledge is
/// stored first. Listeners of [`subscribe`](SseChannels::subscribe) streams are this
/// process's alone.
///
/// ```
/// use eric_core::Message;
/// use eric_persistence::{ChannelSettings, InMemoryStorage, SseChannelRepository, SseChannels, StoredChannels};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> eric_persistence::Result<()> {
/// let repository = SseChannelRepository::new(InMemoryStorage::new());
/// let channels = StoredChannels::load(repository.clone()).await?;
/// let id = channels.create(ChannelSettings::with_id("news")).await?;
/// let listener = channels.add_listener(&id).await?;
/// channels.dispatch(&id, &listener, Message::new("task", 1)).await?;
///
/// // A process started later on the same storage finds the listener and its task.
/// let later = StoredChannels::load(repository).await?;
/// assert_eq!(later.info(&id).await?.stats.listeners, 1);
/// # Ok(())
/// # }
/// ```
pub struct StoredChannels {
    repository: SseChannelRepository,
    channels: RwLock<HashMap<String, PersistentSseChannel>>,
    /// Their in-memory side: what needs no storage (listing, subscribing, ending
    /// streams) is done there.
    memory: MemoryChannels,
}

impl StoredChannels {
    /// Loads every channel stored in `repository`.
    pub async fn load(repository: SseChannelRepository) -> Result<Self> {
        let container = Arc::new(ChannelContainer::new());
        let mut channels = HashMap::new();
        for channel in repository.load_all().await? {
            container.register(channel.sse().channel().clone())?;
            channels.insert(channel.id().to_owned(), channel);
        }
        tracing::info!(channels = container.len(), "loaded the stored channels");
        Ok(StoredChannels {
            repository,
            channels: RwLock::new(channels),
            memory: MemoryChannels::with_container(container),
        })
    }

    /// The stored channel with this id, if any.
    pub fn get(&self, id: &str) -> Option<PersistentSseChannel> {
        self.channels
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn stored(&self, id: &str) -> Result<PersistentSseChannel> {
        self.get(id).ok_or_else(|| Error::ChannelNotFound {
            channel_id: id.to_owned(),
        })
    }

    /// Waits until what every stored listener has read so far is recorded (a server
    /// shutting down calls it last, so that its successor does not deliver it again).
    pub async fn flush(&self) -> Result<()> {
        let channels: Vec<PersistentSseChannel> = self
            .channels
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for channel in channels {
            channel.flush().await?;
        }
        Ok(())
    }
}

#[async_trait]
impl SseChannels for StoredChannels {
    async fn create(&self, settings: ChannelSettings) -> Result<String> {
        let created = self.repository.create(settings).await?;
        self.local().register(created.sse().channel().clone())?;
        let id = created.id().to_owned();
        self.channels
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), created);
        Ok(id)
    }

    async fn remove(&self, channel_id: &str) -> Result<()> {
        self.stored(channel_id)?;
        let _ = self.local().remove(channel_id);
        self.channels
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(channel_id);
        self.repository.delete(channel_id).await
    }

    async fn ids(&self) -> Result<Vec<String>> {
        self.memory.ids().await
    }

    async fn len(&self) -> Result<usize> {
        self.memory.len().await
    }

    async fn info(&self, channel_id: &str) -> Result<ChannelInfo> {
        Ok(ChannelInfo::of(self.stored(channel_id)?.sse()))
    }

    async fn add_listener(&self, channel_id: &str) -> Result<String> {
        self.stored(channel_id)?.add_listener().await
    }

    async fn add_listener_with_id(&self, channel_id: &str, listener_id: &str) -> Result<()> {
        self.stored(channel_id)?
            .add_listener_with_id(listener_id)
            .await
    }

    async fn remove_listener(&self, channel_id: &str, listener_id: &str) -> Result<()> {
        self.stored(channel_id)?.remove_listener(listener_id).await
    }

    async fn broadcast(&self, channel_id: &str, msg: Message) -> Result<Published> {
        let channel = self.stored(channel_id)?;
        let report = channel.broadcast(msg).await?;
        Ok(published(channel.sse(), &report))
    }

    async fn dispatch(&self, channel_id: &str, listener_id: &str, msg: Message) -> Result<()> {
        self.stored(channel_id)?.dispatch(listener_id, msg).await
    }

    async fn message_stream(
        &self,
        channel_id: &str,
        listener_id: &str,
        last_event_id: Option<&str>,
    ) -> Result<EventStream> {
        let channel = self.stored(channel_id)?;
        Ok(boxed(
            channel.message_stream_resuming(listener_id, last_event_id)?,
        ))
    }

    /// A listener of this process alone (not stored).
    async fn subscribe(
        &self,
        channel_id: &str,
        last_event_id: Option<&str>,
    ) -> Result<EventStream> {
        self.memory.subscribe(channel_id, last_event_id).await
    }

    async fn shutdown(&self) -> Result<()> {
        self.memory.shutdown().await?;
        self.flush().await
    }

    fn local(&self) -> &ChannelContainer<SseAdapter> {
        self.memory.local()
    }
}

impl std::fmt::Debug for StoredChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredChannels")
            .field("repository", &self.repository)
            .field("channels", &self.local().len())
            .finish()
    }
}
