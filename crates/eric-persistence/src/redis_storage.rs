//! The Redis storage: one multiplexed, self-reconnecting connection per process.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::key::{Keys, glob_literal};
use crate::storage::KvStorage;

/// Keys fetched per `MGET`, and asked for per `SCAN` step.
const BATCH: usize = 1000;

/// The client for `url` and its multiplexed, self-reconnecting connection, as every
/// Redis user of this crate holds them: requests fail fast (2 s) while Redis is away,
/// and the connection comes back by itself.
pub(crate) async fn connect(url: &str) -> Result<(redis::Client, ConnectionManager)> {
    let failed = |source| storage_error("connect to", url, source);
    let client = redis::Client::open(url).map_err(failed)?;
    let connection = ConnectionManager::new_with_config(client.clone(), manager_config())
        .await
        .map_err(failed)?;
    Ok((client, connection))
}

/// How eric's self-reconnecting connections to one server behave: requests time out
/// after 2 s; reconnection happens in the background, a request meanwhile fails at once.
pub(crate) fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
}

/// [`Error::Storage`] for a failed Redis request.
pub(crate) fn storage_error(
    operation: &'static str,
    key: &str,
    source: redis::RedisError,
) -> Error {
    Error::Storage {
        operation,
        key: key.to_owned(),
        source: Box::new(source),
    }
}

/// A [`KvStorage`] in Redis (feature `redis`). Values are JSON text.
///
/// It holds one multiplexed connection (redis-rs' `ConnectionManager`), shared by every
/// channel and listener of the process: no connection per listener, so no "max number
/// of clients reached". When Redis goes away, operations fail fast with
/// [`Error::Storage`] naming what was being done; the connection comes back by itself
/// once Redis does, with no restart of eric.
#[derive(Clone)]
pub struct RedisStorage {
    keys: Keys,
    connection: ConnectionManager,
}

impl RedisStorage {
    /// Connects to `url` (`redis://127.0.0.1:6379`, say) with the default prefix.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with_keys(url, Keys::default()).await
    }

    /// Connects to `url`, building keys with `keys`.
    pub async fn connect_with_keys(url: &str, keys: Keys) -> Result<Self> {
        let (_, connection) = connect(url).await?;
        Ok(RedisStorage { keys, connection })
    }

    /// SETs every `(key, value)` in one pipelined round trip.
    async fn set_all<'a, V: redis::ToSingleRedisArg>(
        &self,
        entries: impl Iterator<Item = (&'a str, V)>,
    ) -> Result<()> {
        let mut pipe = redis::pipe();
        let mut first = None;
        for (key, value) in entries {
            first.get_or_insert(key);
            pipe.set(key, value).ignore();
        }
        let Some(first) = first else {
            return Ok(());
        };
        let mut connection = self.connection.clone();
        pipe.query_async::<()>(&mut connection)
            .await
            .map_err(|e| storage_error("upsert_many", first, e))
    }

    fn parse(key: &str, text: &str) -> Result<Value> {
        serde_json::from_str(text).map_err(|err| Error::Corrupt {
            key: key.to_owned(),
            reason: format!("not JSON: {err}"),
        })
    }
}

impl fmt::Debug for RedisStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStorage")
            .field("prefix", &self.keys.prefix())
            .finish()
    }
}

#[async_trait]
impl KvStorage for RedisStorage {
    fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn fetch_by_prefix(&self, prefix: &str) -> Result<Vec<(String, Value)>> {
        let mut connection = self.connection.clone();
        let pattern = format!("{}*", glob_literal(prefix));
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut connection)
                .await
                .map_err(|e| storage_error("fetch_by_prefix (SCAN)", prefix, e))?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort_unstable();
        keys.dedup();
        let mut entries = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH) {
            let values: Vec<Option<String>> = redis::cmd("MGET")
                .arg(chunk)
                .query_async(&mut connection)
                .await
                .map_err(|e| storage_error("fetch_by_prefix (MGET)", prefix, e))?;
            for (key, text) in chunk.iter().zip(values) {
                // Deleted between SCAN and MGET: gone, not an error.
                if let Some(text) = text {
                    entries.push((key.clone(), Self::parse(key, &text)?));
                }
            }
        }
        Ok(entries)
    }

    async fn fetch_one(&self, key: &str) -> Result<Option<Value>> {
        let mut connection = self.connection.clone();
        let text: Option<String> = connection
            .get(key)
            .await
            .map_err(|e| storage_error("fetch_one", key, e))?;
        text.map(|text| Self::parse(key, &text)).transpose()
    }

    async fn upsert(&self, key: &str, value: &Value) -> Result<()> {
        let mut connection = self.connection.clone();
        connection
            .set::<_, _, ()>(key, value.to_string())
            .await
            .map_err(|e| storage_error("upsert", key, e))
    }

    async fn upsert_many(&self, entries: &[(String, Value)]) -> Result<()> {
        self.set_all(
            entries
                .iter()
                .map(|(key, value)| (key.as_str(), value.to_string())),
        )
        .await
    }

    async fn upsert_many_json(&self, entries: &[(String, String)]) -> Result<()> {
        self.set_all(
            entries
                .iter()
                .map(|(key, json)| (key.as_str(), json.as_str())),
        )
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let mut connection = self.connection.clone();
        connection
            .del::<_, ()>(key)
            .await
            .map_err(|e| storage_error("delete", key, e))
    }

    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        let mut connection = self.connection.clone();
        for chunk in keys.chunks(BATCH) {
            connection
                .del::<_, ()>(chunk)
                .await
                .map_err(|e| storage_error("delete_many", &chunk[0], e))?;
        }
        Ok(())
    }
}
