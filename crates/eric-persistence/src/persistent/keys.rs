//! Where each part of a stored channel lives in its storage.

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::storage::KvStorage;

/// Where each part of a channel lives in the storage.
#[derive(Clone, Debug)]
pub(crate) struct ChannelKeys {
    pub(crate) storage: Arc<dyn KvStorage>,
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
