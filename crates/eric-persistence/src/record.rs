//! What is stored: versioned JSON records.

use eric_core::{Message, OverflowPolicy, SignedMessage, UniqueMessage};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// The version of the records this eric writes, and the newest it reads.
pub const RECORD_VERSION: u64 = 1;

/// A stored SSE channel: its settings and how its event ids go on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelRecord {
    /// Record version.
    pub v: u64,
    /// The channel id.
    pub id: String,
    /// The epoch of its event ids.
    pub epoch: String,
    /// Reconnection time sent with events.
    pub retry_ms: u64,
    /// Broadcasts kept for resuming clients.
    pub replay: usize,
    /// Bytes kept for resuming clients at most, if bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_bytes: Option<u64>,
    /// Per-listener bound, if any.
    pub capacity: Option<usize>,
    /// Overflow policy (stored as `reject`, `drop_oldest` or `disconnect`).
    pub overflow: OverflowPolicy,
    /// A lower bound of the next broadcast's sequence number, for when every stored
    /// broadcast was trimmed away.
    #[serde(default)]
    pub next_seq: u64,
}

impl ChannelRecord {
    /// The settings it was created with.
    pub fn settings(&self) -> crate::ChannelSettings {
        let mut settings = crate::ChannelSettings::with_id(self.id.clone())
            .retry_ms(self.retry_ms)
            .replay(self.replay);
        settings.replay_bytes = self.replay_bytes;
        match self.capacity {
            Some(capacity) => settings.capacity(capacity, self.overflow),
            None => settings,
        }
    }
}

/// A stored listener and how far it has read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListenerRecord {
    /// Record version.
    pub v: u64,
    /// The listener id.
    pub id: String,
    /// The next broadcast it reads.
    pub cursor: u64,
    /// How many of its dispatches it has read (they are numbered from 0).
    pub dispatches_read: u64,
}

/// A stored message: a broadcast in a channel's log or a dispatch in a listener's
/// queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// Record version.
    pub v: u64,
    /// The message type.
    #[serde(rename = "type")]
    pub message_type: String,
    /// The payload.
    pub payload: Value,
    /// The sender, for signed messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_id: Option<String>,
    /// The own id, for unique messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// For dispatches: how many broadcasts came before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcasts_before: Option<u64>,
}

impl MessageRecord {
    /// The record of `msg`.
    pub fn of(msg: &Message, broadcasts_before: Option<u64>) -> Self {
        MessageRecord {
            v: RECORD_VERSION,
            message_type: msg.message_type().to_owned(),
            payload: msg.payload().clone(),
            sender_id: msg.sender_id().map(str::to_owned),
            id: msg.id().map(str::to_owned),
            broadcasts_before,
        }
    }

    /// The message again.
    pub fn to_message(&self) -> Message {
        match (&self.sender_id, &self.id) {
            (Some(sender), Some(id)) => UniqueMessage::with_id(
                id.clone(),
                sender.clone(),
                self.message_type.clone(),
                self.payload.clone(),
            )
            .into(),
            (Some(sender), None) => SignedMessage::new(
                sender.clone(),
                self.message_type.clone(),
                self.payload.clone(),
            )
            .into(),
            _ => Message::new(self.message_type.clone(), self.payload.clone()),
        }
    }
}

/// The stored JSON text of `msg`'s [`MessageRecord`], written straight from the
/// message: its payload's JSON is the one the message already holds (the same text the
/// SSE adapter sends), so nothing is cloned or serialized twice on the write path.
pub(crate) fn message_record_json(msg: &Message, broadcasts_before: Option<u64>) -> String {
    let payload = msg.payload_json();
    let mut out = Vec::with_capacity(payload.len() + msg.message_type().len() + 64);
    // Writing strings and numbers into a Vec cannot fail.
    let _ = (|| -> serde_json::Result<()> {
        out.extend_from_slice(b"{\"v\":");
        serde_json::to_writer(&mut out, &RECORD_VERSION)?;
        out.extend_from_slice(b",\"type\":");
        serde_json::to_writer(&mut out, msg.message_type())?;
        out.extend_from_slice(b",\"payload\":");
        out.extend_from_slice(payload.as_bytes());
        if let Some(sender) = msg.sender_id() {
            out.extend_from_slice(b",\"sender_id\":");
            serde_json::to_writer(&mut out, sender)?;
        }
        if let Some(id) = msg.id() {
            out.extend_from_slice(b",\"id\":");
            serde_json::to_writer(&mut out, id)?;
        }
        if let Some(n) = broadcasts_before {
            out.extend_from_slice(b",\"broadcasts_before\":");
            serde_json::to_writer(&mut out, &n)?;
        }
        Ok(())
    })();
    out.push(b'}');
    // Only UTF-8 went in (JSON text and serde_json's escaped strings).
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Encodes a record as stored JSON.
pub(crate) fn encode<T: Serialize>(record: &T) -> Value {
    // Records are plain structs of strings and numbers: serializing cannot fail.
    serde_json::to_value(record).unwrap_or(Value::Null)
}

/// Decodes a stored value, checking its version first.
pub fn decode<T: DeserializeOwned>(key: &str, value: Value) -> Result<T> {
    let version = value
        .get("v")
        .and_then(Value::as_u64)
        .ok_or_else(|| Error::Corrupt {
            key: key.to_owned(),
            reason: "no version field \"v\"".to_owned(),
        })?;
    if version > RECORD_VERSION {
        return Err(Error::Version {
            key: key.to_owned(),
            found: version,
            supported: RECORD_VERSION,
        });
    }
    serde_json::from_value(value).map_err(|err| Error::Corrupt {
        key: key.to_owned(),
        reason: err.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use eric_core::{SignedMessage, UniqueMessage};
    use serde_json::json;

    #[test]
    fn message_json_decodes_to_the_same_record() {
        let messages: Vec<(Message, Option<u64>)> = vec![
            (Message::new("job", json!({"n": 1, "s": "a\"b\n"})), None),
            (Message::new("t\u{e9}\"q", json!([1, 2.5, null])), Some(7)),
            (SignedMessage::new("me", "hi", "x").into(), Some(0)),
            (
                UniqueMessage::with_id("id\\1", "me", "u", json!(true)).into(),
                None,
            ),
        ];
        for (msg, before) in messages {
            let text = message_record_json(&msg, before);
            let value: Value = serde_json::from_str(&text).unwrap();
            let record: MessageRecord = decode("k", value).unwrap();
            assert_eq!(record, MessageRecord::of(&msg, before), "{text}");
        }
    }
}
