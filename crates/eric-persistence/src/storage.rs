//! The storage seam: a key-value store of JSON values.

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock};

use async_trait::async_trait;
use serde_json::Value;

use crate::error::Result;
use crate::key::Keys;

/// A key-value store of JSON values (eric-sse's `KvStorage`). Keys are full keys,
/// built with the store's [`Keys`].
///
/// [`InMemoryStorage`] and, with the `redis` feature,
/// [`RedisStorage`](crate::RedisStorage) implement it.
#[async_trait]
pub trait KvStorage: Send + Sync + 'static {
    /// How this store builds its keys (its prefix).
    fn keys(&self) -> &Keys;

    /// Every entry whose key starts with `prefix`, in key order.
    async fn fetch_by_prefix(&self, prefix: &str) -> Result<Vec<(String, Value)>>;

    /// Every entry under the store's prefix, in key order.
    async fn fetch_all(&self) -> Result<Vec<(String, Value)>> {
        let prefix = self.keys().prefix().to_owned();
        self.fetch_by_prefix(&prefix).await
    }

    /// The value at `key`, if any.
    async fn fetch_one(&self, key: &str) -> Result<Option<Value>>;

    /// Sets `key` to `value`.
    async fn upsert(&self, key: &str, value: &Value) -> Result<()>;

    /// Sets several keys (one round trip where the backend allows).
    async fn upsert_many(&self, entries: &[(String, Value)]) -> Result<()> {
        for (key, value) in entries {
            self.upsert(key, value).await?;
        }
        Ok(())
    }

    /// Stores each `(key, json)` where `json` is JSON text already serialized (the write
    /// path of messages, which hold their payload's JSON). The default parses each and
    /// calls [`upsert_many`](Self::upsert_many); Redis stores the text as it is.
    async fn upsert_many_json(&self, entries: &[(String, String)]) -> Result<()> {
        let mut parsed = Vec::with_capacity(entries.len());
        for (key, json) in entries {
            let value = serde_json::from_str(json).map_err(|err| crate::Error::Corrupt {
                key: key.clone(),
                reason: err.to_string(),
            })?;
            parsed.push((key.clone(), value));
        }
        self.upsert_many(&parsed).await
    }

    /// Removes `key` (nothing if absent).
    async fn delete(&self, key: &str) -> Result<()>;

    /// Removes several keys (one round trip where the backend allows).
    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        for key in keys {
            self.delete(key).await?;
        }
        Ok(())
    }
}

/// A [`KvStorage`] in this process's memory: for tests, and for running with the
/// repository API but without a server. Nothing outlives the process.
#[derive(Debug, Default)]
pub struct InMemoryStorage {
    keys: Keys,
    entries: RwLock<BTreeMap<String, Value>>,
}

impl InMemoryStorage {
    /// An empty store with the default prefix (`eric:`).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose keys are built by `keys`.
    pub fn with_keys(keys: Keys) -> Self {
        InMemoryStorage {
            keys,
            entries: RwLock::default(),
        }
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl KvStorage for InMemoryStorage {
    fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn fetch_by_prefix(&self, prefix: &str) -> Result<Vec<(String, Value)>> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        Ok(entries
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }

    async fn fetch_one(&self, key: &str) -> Result<Option<Value>> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        Ok(entries.get(key).cloned())
    }

    async fn upsert(&self, key: &str, value: &Value) -> Result<()> {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.to_owned(), value.clone());
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        Ok(())
    }
}
