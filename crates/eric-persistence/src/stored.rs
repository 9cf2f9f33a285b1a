//! The stored channels a server serves: kept in a repository, served from a container.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use eric_core::ChannelContainer;
use eric_prefabs::SseAdapter;

use crate::error::Result;
use crate::persistent::PersistentSseChannel;
use crate::repository::{ChannelSettings, SseChannelRepository};

/// The stored channels of a server: each kept in `repository`, and its in-memory side
/// registered in the server's [`ChannelContainer`], so that a server looks channels up
/// one way whether they are stored or not. Creating and removing go through here, which
/// keeps the repository, the container and this set in step.
pub struct StoredChannels {
    repository: SseChannelRepository,
    channels: RwLock<HashMap<String, PersistentSseChannel>>,
}

impl StoredChannels {
    /// Loads every channel stored in `repository` and registers it in `container`.
    pub async fn load(
        repository: SseChannelRepository,
        container: &ChannelContainer<SseAdapter>,
    ) -> Result<Self> {
        let mut channels = HashMap::new();
        for channel in repository.load_all().await? {
            container.register(channel.sse().channel().clone())?;
            channels.insert(channel.id().to_owned(), channel);
        }
        Ok(StoredChannels {
            repository,
            channels: RwLock::new(channels),
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

    /// How many there are.
    pub fn len(&self) -> usize {
        self.channels
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    /// Creates and stores a channel, and registers it in `container`.
    pub async fn create(
        &self,
        settings: ChannelSettings,
        container: &ChannelContainer<SseAdapter>,
    ) -> Result<PersistentSseChannel> {
        let created = self.repository.create(settings).await?;
        container.register(created.sse().channel().clone())?;
        self.channels
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(created.id().to_owned(), created.clone());
        Ok(created)
    }

    /// Removes a channel from `container` (its streams get the closed message) and
    /// deletes everything stored for it.
    pub async fn remove(&self, id: &str, container: &ChannelContainer<SseAdapter>) -> Result<()> {
        container.rm(id)?;
        self.channels
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        self.repository.delete(id).await
    }
}

impl std::fmt::Debug for StoredChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredChannels")
            .field("repository", &self.repository)
            .field("channels", &self.len())
            .finish()
    }
}
