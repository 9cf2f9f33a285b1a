//! Reading a channel's Redis stream into the local copy: each entry applied in order,
//! as its notification arrives ([`super::feed`]), and from the stream itself after each
//! subscription and whenever notifications may have been lost.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use eric_core::Message;
use eric_prefabs::SseChannel;
use redis::streams::{StreamId, StreamRangeReply};
use tokio::sync::{Mutex, mpsc, watch};

use super::feed::Note;
use super::listener::{Attached, MOVED, REMOVED};
use super::{CLOSED, EntryId, Inner, ReadState};

/// The most entries one `XRANGE` of a resynchronisation reads.
const PAGE: usize = 1024;

/// The first wait before a failed resynchronisation is tried again (doubling up to
/// [`super::BLOCK`]: a process serving many channels does not hammer a Redis that is
/// away).
const RETRY: Duration = Duration::from_millis(500);

/// An entry of a channel's stream: a broadcast, a dispatch, or one of eric's own.
pub(super) struct Entry {
    pub(super) id: EntryId,
    message_type: String,
    payload: String,
    /// The stored listener a dispatch (or a removal, or a move) is for.
    to: Option<String>,
    /// Which stream a move was written by.
    by: Option<String>,
}

impl Entry {
    /// The entry as `XRANGE` returns it; `None` if its id is not eric's.
    pub(super) fn from_stream(entry: &StreamId) -> Option<Entry> {
        Some(Entry {
            id: parse_entry_id(&entry.id)?,
            message_type: entry.get("type").unwrap_or_default(),
            payload: entry.get("payload").unwrap_or_default(),
            to: entry.get("to"),
            by: entry.get("by"),
        })
    }

    /// The entry as the scripts notify it, `<id>\n<type>\n<to>\n<by>\n<payload>`;
    /// `None` if it is not that.
    pub(super) fn from_note(note: &[u8]) -> Option<Entry> {
        let note = std::str::from_utf8(note).ok()?;
        let mut fields = note.splitn(5, '\n');
        let mut next = || fields.next();
        let (id, message_type, to, by, payload) = (next()?, next()?, next()?, next()?, next()?);
        let named = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Some(Entry {
            id: parse_entry_id(id)?,
            message_type: message_type.to_owned(),
            payload: payload.to_owned(),
            to: named(to),
            by: named(by),
        })
    }
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
    entry: Entry,
) -> Applied {
    let Entry {
        id: (seq, n),
        message_type,
        payload,
        to,
        by,
    } = entry;
    let next = channel.channel().next_seq();
    if let Some(to) = &to {
        // A dispatch (or a stored listener's removal or move) after broadcast `seq`.
        if next <= seq {
            return Applied::Gap;
        }
        if let Some(listener) = attached.get_mut(to)
            && (seq, n) > listener.upto
        {
            listener.upto = (seq, n);
            let ends = match message_type.as_str() {
                REMOVED => true,
                MOVED => listener.taken_over((seq, n), by.as_deref().unwrap_or_default()),
                _ => false,
            };
            if ends {
                attached.remove(to);
                let _ = channel.remove_listener(to);
            } else if message_type != MOVED {
                listener.deliver(channel, to, (seq, n), message(message_type, payload));
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
        seq if seq == next => match channel.channel().replicate(message(message_type, payload)) {
            Ok(_) => Applied::Done,
            Err(_) => Applied::Closed,
        },
        _ => Applied::Gap,
    }
}

/// The message an entry holds.
fn message(message_type: String, payload: String) -> Message {
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
/// channel, in order, from its notifications. Ends when the channel is removed or let
/// go of ([`Inner::let_go`]), when it missed entries (trimmed while it could not read;
/// the next request reloads the channel), or when Redis came back without the channel
/// (restarted without its data).
pub(super) async fn read(
    cluster: Weak<Inner>,
    load: u64,
    channel: SseChannel,
    state: Arc<Mutex<ReadState>>,
    [meta, events]: [String; 2],
    progress: watch::Sender<u64>,
    mut notes: mpsc::UnboundedReceiver<Note>,
) {
    // Not yet subscribed and read up to date; `lost`: notifications may have been lost.
    let (mut synced, mut lost, mut retry) = (false, false, RETRY);
    'reading: loop {
        if channel.channel().is_closed() {
            break;
        }
        if !synced {
            let Some(inner) = cluster.upgrade() else {
                break;
            };
            match resync(&inner, &channel, &state, [&meta, &events], lost).await {
                Ok(Applied::Done) => (synced, lost, retry) = (true, false, RETRY),
                Ok(_) => break 'reading,
                Err(err) => {
                    tracing::warn!(%events, %err, "cluster reader cannot read Redis; retrying");
                    drop(inner);
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(super::BLOCK);
                    lost = true;
                    continue;
                }
            }
            progress.send_replace(channel.channel().next_seq());
        }
        let Some(first) = notes.recv().await else {
            break;
        };
        // This note and whatever else has arrived, under one lock.
        let mut state = state.lock().await;
        let mut note = Some(first);
        while let Some(next) = note.take().or_else(|| notes.try_recv().ok()) {
            let entry = match next {
                Note::Entry(note) => Entry::from_note(&note),
                Note::Resync => None,
            };
            let Some(entry) = entry else {
                (synced, lost) = (false, true);
                break;
            };
            if entry.id <= state.last {
                continue; // read from the stream already
            }
            let id = entry.id;
            match apply(&channel, &mut state.attached, entry) {
                Applied::Done => state.last = id,
                Applied::Closed => break 'reading,
                // Notified out of order: what is missing is read from the stream.
                Applied::Gap => {
                    synced = false;
                    break;
                }
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

/// Subscribes to the channel's notifications, then reads its stream from the last
/// entry applied: whatever was appended before the subscription took effect is read
/// here, whatever after is notified. After a loss, a channel Redis no longer has is
/// closed here.
async fn resync(
    inner: &Inner,
    channel: &SseChannel,
    state: &Mutex<ReadState>,
    [meta, events]: [&str; 2],
    lost: bool,
) -> redis::RedisResult<Applied> {
    inner.feed.subscribe(events).await?;
    let mut connection = inner.connection.clone();
    if lost {
        let exists: bool = redis::cmd("EXISTS")
            .arg(meta)
            .query_async(&mut connection)
            .await?;
        if !exists {
            tracing::warn!(%meta, "Redis came back without this channel; closing it here");
            return Ok(Applied::Closed);
        }
    }
    loop {
        // Only this reader moves `last`: read outside the lock, applied under it.
        let (seq, n) = state.lock().await.last;
        let page: StreamRangeReply = redis::cmd("XRANGE")
            .arg(events)
            .arg(format!("({seq}-{n}"))
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(&mut connection)
            .await?;
        let mut state = state.lock().await;
        for entry in &page.ids {
            let Some(entry) = Entry::from_stream(entry) else {
                return Ok(Applied::Gap);
            };
            let id = entry.id;
            match apply(channel, &mut state.attached, entry) {
                Applied::Done => state.last = id,
                other => return Ok(other),
            }
        }
        if page.ids.len() < PAGE {
            return Ok(Applied::Done);
        }
    }
}
