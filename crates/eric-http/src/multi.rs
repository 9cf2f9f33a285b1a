//! Many channels on one stream (`GET /events?channel=a&channel=b`): their events
//! merged, each in a JSON envelope that names its channel, under an event id that
//! holds every channel's position.

use std::pin::Pin;
use std::task::{Context, Poll};

use eric_persistence::EventStream;
use eric_prefabs::SseEvent;
use futures_util::Stream;
use futures_util::stream::{SelectAll, StreamExt, select_all};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// The longest position of one channel in a [`MultiEventId`], unescaped: an eric event
/// id (an 8-digit epoch, a dash, a sequence number) takes at most 29 bytes.
pub const MAX_POSITION_BYTES: usize = 64;

/// The most bytes a position takes escaped: every byte as `%XX`, and its comma.
const MAX_ESCAPED_BYTES: usize = 3 * MAX_POSITION_BYTES + 1;

/// What a position escapes: the separator, the escape itself, and control characters.
const ESCAPED: &AsciiSet = &CONTROLS.add(b',').add(b'%');

/// The event id of a stream of several channels: for each channel, in the order the
/// request named them, the id of the last event it delivered (empty before the first),
/// percent-escaped (`%` and `,` only, in practice never) and joined by commas. A client
/// that reconnects with it as `Last-Event-ID` resumes every channel where it was.
///
/// Bound: [`MAX_POSITION_BYTES`] per position unescaped (eric's own take 29 at most and
/// need no escape), and 193 bytes per channel of the stream escaped. An id over it,
/// with another number of positions, or not valid UTF-8 after unescaping, is not parsed: every channel of the stream gets a reset event and what it
/// keeps, as a single channel does for an id it cannot read.
///
/// ```
/// use eric_http::MultiEventId;
///
/// let id = MultiEventId::new(vec![Some("1a2b3c4d-7".into()), None]);
/// assert_eq!(id.to_string(), "1a2b3c4d-7,");
/// assert_eq!(MultiEventId::parse("1a2b3c4d-7,", 2), Some(id));
/// assert_eq!(MultiEventId::parse("1a2b3c4d-7,", 3), None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultiEventId {
    positions: Vec<Option<String>>,
}

impl MultiEventId {
    /// The id of these positions.
    pub fn new(positions: Vec<Option<String>>) -> Self {
        MultiEventId { positions }
    }

    /// Reads an id made for a stream of `channels` channels; `None` if it is not one.
    pub fn parse(id: &str, channels: usize) -> Option<Self> {
        if channels == 0 || id.len() > channels * MAX_ESCAPED_BYTES {
            return None;
        }
        let mut positions = Vec::with_capacity(channels);
        for piece in id.split(',') {
            if positions.len() == channels {
                return None;
            }
            let position = percent_decode_str(piece).decode_utf8().ok()?;
            if position.len() > MAX_POSITION_BYTES {
                return None;
            }
            positions.push((!position.is_empty()).then(|| position.into_owned()));
        }
        (positions.len() == channels).then_some(MultiEventId { positions })
    }

    /// Each channel's position: the id of its last event delivered.
    pub fn positions(&self) -> &[Option<String>] {
        &self.positions
    }
}

impl std::fmt::Display for MultiEventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, position) in self.positions.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if let Some(position) = position {
                f.write_str(&escaped(position))?;
            }
        }
        Ok(())
    }
}

/// A position as the id holds it: itself, in practice (eric's ids need no escape).
fn escaped(position: &str) -> std::borrow::Cow<'_, str> {
    utf8_percent_encode(position, ESCAPED).into()
}

type Tagged = Pin<Box<dyn Stream<Item = (usize, eric_persistence::Result<SseEvent>)> + Send>>;

/// The merged stream of `streams`, the `i`th of channel `channels[i]`, resumed from
/// `positions`, and the id those positions make. Each channel's events keep their
/// order; the stream ends when every channel's has (shutting down ends them all; a
/// removed channel ends alone).
pub(crate) fn merge(
    channels: Vec<String>,
    streams: Vec<EventStream>,
    positions: &[Option<String>],
) -> (EventStream, String) {
    let tagged = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| -> Tagged { Box::pin(stream.map(move |event| (i, event))) });
    let names = channels
        .iter()
        .map(|channel| serde_json::Value::from(channel.as_str()).to_string())
        .collect();
    let escaped = positions
        .iter()
        .map(|p| p.as_deref().map(escaped).unwrap_or_default().into_owned())
        .collect();
    let merged = Merged {
        streams: select_all(tagged),
        names,
        escaped,
    };
    let starting_id = merged.id();
    (Box::pin(merged), starting_id)
}

struct Merged {
    streams: SelectAll<Tagged>,
    /// Each channel's id as a JSON string, for the envelopes.
    names: Vec<String>,
    /// Each channel's position, escaped as the id holds it: an event changes one, and
    /// the id is these joined (what `MultiEventId`'s `Display` writes).
    escaped: Vec<String>,
}

impl Merged {
    fn id(&self) -> String {
        self.escaped.join(",")
    }
}

impl Stream for Merged {
    type Item = eric_persistence::Result<SseEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some((i, event)) = futures_util::ready!(this.streams.poll_next_unpin(cx)) else {
            return Poll::Ready(None);
        };
        let event = match event {
            Ok(event) => event,
            Err(err) => return Poll::Ready(Some(Err(err))),
        };
        // An event without an id (a reset, the closed event) leaves the position, as a
        // browser leaves its last event id.
        if let Some(id) = event.id() {
            this.escaped[i] = escaped(id).into_owned();
        }
        let (name, payload) = (&this.names[i], event.data());
        let mut data = String::with_capacity(20 + name.len() + payload.len());
        data.push_str(r#"{"channel":"#);
        data.push_str(name);
        data.push_str(r#","data":"#);
        data.push_str(payload);
        data.push('}');
        let mut enveloped = SseEvent::new(data).with_accepted_at(event.accepted_at());
        if let Some(kind) = event.event() {
            enveloped = enveloped.with_event(kind)?;
        }
        if event.id().is_some() {
            enveloped = enveloped.with_id(this.id())?;
        }
        Poll::Ready(Some(Ok(enveloped)))
    }
}
