//! Reading a channel's Redis stream into the local copy: each entry applied in order.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use eric_core::Message;
use eric_prefabs::SseChannel;
use redis::streams::{StreamId, StreamReadReply};
use tokio::sync::{Mutex, watch};

use super::listener::{Attached, MOVED, REMOVED};
use super::{BLOCK, CLOSED, EntryId, Inner, ReadState};

/// The id of a stream entry, `<seq>-<n>`.
pub(super) fn entry_id(entry: &StreamId) -> Option<EntryId> {
    parse_entry_id(&entry.id)
}

pub(super) fn parse_entry_id(id: &str) -> Option<EntryId> {
    let (seq, n) = id.split_once('-')?;
    Some((seq.parse().ok()?, n.parse().ok()?))
}

#[derive(PartialEq, Eq)]
pub(super) enum Applied {
    /// Applied, or nothing for this process to do.
    Done,
    Closed,
    /// An entry this copy cannot take in order (it missed some): it must be reloaded.
    Gap,
}

pub(super) fn apply(
    channel: &SseChannel,
    attached: &mut HashMap<String, Attached>,
    entry: &StreamId,
) -> Applied {
    let Some((seq, n)) = entry_id(entry) else {
        return Applied::Gap;
    };
    let message_type: String = entry.get("type").unwrap_or_default();
    let next = channel.channel().next_seq();
    let to: Option<String> = entry.get("to");
    if let Some(to) = to {
        // A dispatch (or a stored listener's removal or move) after broadcast `seq`.
        if next <= seq {
            return Applied::Gap;
        }
        if let Some(listener) = attached.get_mut(&to)
            && (seq, n) > listener.upto
        {
            listener.upto = (seq, n);
            let by: Option<String> = entry.get("by");
            let ends = match message_type.as_str() {
                REMOVED => true,
                MOVED => listener.taken_over((seq, n), by.as_deref().unwrap_or_default()),
                _ => false,
            };
            if ends {
                attached.remove(&to);
                let _ = channel.remove_listener(&to);
            } else if message_type != MOVED {
                listener.deliver(channel, &to, (seq, n), message(message_type, entry));
            }
        }
        return Applied::Done;
    }
    if message_type == CLOSED {
        return Applied::Closed;
    }
    match seq {
        // Not an entry eric writes (a newer eric's?): nothing to apply here.
        _ if n != 0 => Applied::Done,
        seq if seq < next => Applied::Done, // read already
        // Accepted by the process that published it: never refused by this one's budget.
        seq if seq == next => match channel.channel().replicate(message(message_type, entry)) {
            Ok(_) => Applied::Done,
            Err(_) => Applied::Closed,
        },
        _ => Applied::Gap,
    }
}

/// The message an entry (or a queued dispatch) holds.
fn message(message_type: String, entry: &StreamId) -> Message {
    let payload: String = entry.get("payload").unwrap_or_default();
    // Accepted, for this process's delivery-latency histogram, when it read it.
    decode(message_type, payload).accepted_now()
}

pub(super) fn decode(message_type: String, payload: String) -> Message {
    // What eric stored is a checked type and a message's own JSON; anything else is not
    // ours, and is still delivered (as a plain `message`, the payload as a string)
    // rather than leaving a hole in the sequence.
    let payload = serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload));
    let message = Message::new(message_type, payload.clone());
    match eric_prefabs::check_message(&message) {
        Ok(()) => message,
        Err(_) => Message::new("message", payload),
    }
}

/// One process's reader of one channel's stream: each new entry applied to the local
/// channel, in order. Ends when the channel is removed, when it has had no local
/// listener for a whole [`BLOCK`] twice, when it missed entries (trimmed while it
/// could not read; the next request reloads the channel), or when Redis came back
/// without the channel (restarted without its data).
pub(super) async fn read(
    cluster: Weak<Inner>,
    load: u64,
    channel: SseChannel,
    state: Arc<Mutex<ReadState>>,
    [meta, events]: [String; 2],
    progress: watch::Sender<u64>,
) {
    let Some(nodes) = cluster.upgrade().map(|c| c.nodes.clone()) else {
        return;
    };
    let mut connection = None;
    let (mut idle_rounds, mut lost) = (0, false);
    'reading: loop {
        if channel.channel().is_closed() {
            break;
        }
        let conn = match &mut connection {
            Some(conn) => conn,
            None => match nodes.blocking().await {
                Ok(mut conn) => {
                    if lost {
                        let exists: redis::RedisResult<bool> =
                            redis::cmd("EXISTS").arg(&meta).query_async(&mut conn).await;
                        if matches!(exists, Ok(false)) {
                            tracing::warn!(%meta, "Redis came back without this channel; closing it here");
                            break 'reading;
                        }
                        lost = false;
                    }
                    connection.insert(conn)
                }
                Err(err) => {
                    tracing::warn!(%events, %err, "cluster reader cannot connect; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
        };
        let (seq, n) = state.lock().await.last;
        let reply: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1024)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&events)
            .arg(format!("{seq}-{n}"))
            .query_async(conn)
            .await;
        let entries: Vec<StreamId> = match reply {
            Ok(reply) => reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default(),
            Err(err) => {
                tracing::warn!(%events, %err, "cluster reader lost Redis; reconnecting");
                (connection, lost) = (None, true);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if entries.is_empty() {
            idle_rounds = if channel.channel().listener_count() == 0 {
                idle_rounds + 1
            } else {
                0
            };
            if idle_rounds >= 2 {
                match cluster.upgrade() {
                    Some(cluster) if cluster.let_go_idle(channel.id(), load) => return,
                    Some(_) => idle_rounds = 0, // a listener came meanwhile
                    None => break 'reading,
                }
            }
            continue;
        }
        idle_rounds = 0;
        let mut state = state.lock().await;
        for entry in &entries {
            if apply(&channel, &mut state.attached, entry) != Applied::Done {
                break 'reading;
            }
            if let Some(id) = entry_id(entry) {
                state.last = id;
            }
        }
        drop(state);
        progress.send_replace(channel.channel().next_seq());
    }
    if let Some(cluster) = cluster.upgrade() {
        cluster.let_go(channel.id(), Some(load));
    }
    channel.close();
}
