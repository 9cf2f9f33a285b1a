//! A registry of channels by id.

use std::collections::HashMap;
use std::fmt;
use std::sync::{OnceLock, PoisonError};

use crate::adapter::{Adapter, MessageAdapter};
use crate::budget::MemoryBudget;
use crate::channel::Channel;
use crate::error::{Error, Result};
use crate::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Channels by id, for servers that manage many (eric-sse's `ChannelContainer`).
/// Usable from any task or thread.
///
/// ```
/// use eric_core::{Channel, ChannelContainer, Error};
///
/// let container = ChannelContainer::new();
/// let channel = Channel::default();
/// container.register(channel.clone())?;
/// assert!(matches!(container.register(channel.clone()), Err(Error::DuplicateChannel { .. })));
/// assert_eq!(container.get(channel.id())?.id(), channel.id());
/// container.remove(channel.id())?;
/// assert!(channel.is_closed());
/// assert!(matches!(container.get(channel.id()), Err(Error::InvalidChannel { .. })));
/// # Ok::<(), eric_core::Error>(())
/// ```
pub struct ChannelContainer<A = MessageAdapter> {
    channels: RwLock<HashMap<String, Channel<A>>>,
    /// The budget every channel registered here counts against, once set.
    budget: OnceLock<MemoryBudget>,
}

impl<A: Adapter> ChannelContainer<A> {
    /// An empty container.
    pub fn new() -> Self {
        ChannelContainer {
            channels: RwLock::default(),
            budget: OnceLock::new(),
        }
    }

    /// Counts the broadcasts of every channel registered here, now and from now on,
    /// against `budget` (see [`MemoryBudget`]): one bound for a server's channels,
    /// whichever way they come in. `false`, changing nothing, if it has a budget
    /// already. A channel that counts against another budget keeps that one.
    pub fn limit_memory(&self, budget: MemoryBudget) -> bool {
        // Under the write lock, so that no channel registers between the two steps.
        let channels = self.write();
        if self.budget.set(budget.clone()).is_err() {
            return false;
        }
        for channel in channels.values() {
            channel.limit_memory(&budget);
        }
        true
    }

    /// The budget its channels count against, if set.
    pub fn memory_budget(&self) -> Option<&MemoryBudget> {
        self.budget.get()
    }

    /// Adds a channel; [`Error::DuplicateChannel`] if its id is taken.
    pub fn register(&self, channel: Channel<A>) -> Result<()> {
        let mut channels = self.write();
        if channels.contains_key(channel.id()) {
            return Err(Error::DuplicateChannel {
                channel_id: channel.id().to_owned(),
            });
        }
        if let Some(budget) = self.budget.get() {
            channel.limit_memory(budget);
        }
        channels.insert(channel.id().to_owned(), channel);
        Ok(())
    }

    /// Adds several channels; stops at the first duplicate, keeping those before it.
    #[doc(alias = "register_iterable")]
    pub fn register_all(&self, channels: impl IntoIterator<Item = Channel<A>>) -> Result<()> {
        channels
            .into_iter()
            .try_for_each(|channel| self.register(channel))
    }

    /// The channel with this id; [`Error::InvalidChannel`] if there is none.
    pub fn get(&self, channel_id: &str) -> Result<Channel<A>> {
        self.read()
            .get(channel_id)
            .cloned()
            .ok_or_else(|| Error::invalid_channel(channel_id))
    }

    /// Removes the channel with this id, closes it (its streams end once drained) and
    /// returns it; [`Error::InvalidChannel`] if there is none.
    #[doc(alias = "rm")]
    pub fn remove(&self, channel_id: &str) -> Result<Channel<A>> {
        let channel = self
            .write()
            .remove(channel_id)
            .ok_or_else(|| Error::invalid_channel(channel_id))?;
        channel.close();
        Ok(channel)
    }

    /// The ids of every channel, in no particular order (eric-sse's `get_all_ids`).
    #[doc(alias = "get_all_ids")]
    pub fn ids(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// How many channels there are.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Channel<A>>> {
        self.channels.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, Channel<A>>> {
        self.channels
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<A: Adapter> Default for ChannelContainer<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Adapter> fmt::Debug for ChannelContainer<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelContainer")
            .field("channels", &self.len())
            .finish()
    }
}
