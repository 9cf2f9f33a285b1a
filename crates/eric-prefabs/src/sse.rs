//! Server-Sent Events on the wire: the event type and its exact encoding.

use std::fmt::{self, Write as _};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::error::{Error, Result, truncated};

/// One Server-Sent Event: what a browser's `EventSource` receives.
///
/// `event` and `id` are checked when set (a line break would end the field early and
/// change the event's meaning); `data` may hold anything, line breaks included.
///
/// ```
/// use eric_prefabs::SseEvent;
///
/// let event = SseEvent::new("line one\nline two").with_event("note")?.with_id("7")?;
/// assert_eq!(event.encode(), "event: note\nid: 7\ndata: line one\ndata: line two\n\n");
/// # Ok::<(), eric_prefabs::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct SseEvent {
    /// What is the same for every delivery of one broadcast, shared by its copies.
    fields: Arc<Fields>,
    retry: Option<u64>,
    /// When the message it carries was accepted by a server (not on the wire, and not
    /// compared: two events are equal by what they say).
    accepted_at: Option<std::time::Instant>,
}

/// An event's fields but `retry` (which a server sets per connection), and their
/// encoding once made: a broadcast to N streams is encoded once, not N times. A copy
/// shares the data and the encoding made before it (the SSE adapter keeps a copy per
/// thread, see `sse_adapter::PerThread`).
#[derive(Clone, Default)]
pub(crate) struct Fields {
    event: Option<String>,
    data: Arc<str>,
    id: Option<String>,
    encoded: OnceLock<Bytes>,
}

impl Fields {
    pub(crate) fn new(data: String, event: Option<String>, id: Option<String>) -> Self {
        Fields {
            event,
            data: data.into(),
            id,
            encoded: OnceLock::new(),
        }
    }

    /// The encoding of everything but `retry`, made at the first call.
    pub(crate) fn encoded(&self) -> &Bytes {
        self.encoded.get_or_init(|| {
            let mut out = String::with_capacity(self.data.len() + 32);
            self.encode_into(&mut out, None);
            Bytes::from(out)
        })
    }

    /// Appends the event's encoding to `out`, with `retry` if given.
    fn encode_into(&self, out: &mut String, retry: Option<u64>) {
        if let Some(event) = &self.event {
            push_field(out, "event", event);
        }
        if let Some(id) = &self.id {
            push_field(out, "id", id);
        }
        if let Some(retry) = retry {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "retry: {retry}");
        }
        for line in data_lines(&self.data) {
            push_field(out, "data", line);
        }
        out.push('\n');
    }
}

impl PartialEq for SseEvent {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&*self.fields, &*other.fields);
        (&a.event, &a.data, &a.id, self.retry) == (&b.event, &b.data, &b.id, other.retry)
    }
}

impl Eq for SseEvent {}

impl fmt::Debug for SseEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseEvent")
            .field("event", &self.fields.event)
            .field("data", &self.fields.data)
            .field("id", &self.fields.id)
            .field("retry", &self.retry)
            .field("accepted_at", &self.accepted_at)
            .finish()
    }
}

impl SseEvent {
    /// An event of the default type (`message`) carrying `data`.
    pub fn new(data: impl Into<String>) -> Self {
        Self::from_fields(Arc::new(Fields::new(data.into(), None, None)))
    }

    /// An event sharing `fields` (and their encoding) with every other event made
    /// from them.
    pub(crate) fn from_fields(fields: Arc<Fields>) -> Self {
        SseEvent {
            fields,
            retry: None,
            accepted_at: None,
        }
    }

    /// The fields to change: this event's own copy if others share them (a copy
    /// without the encoding, which no longer says what they do).
    fn fields_mut(&mut self) -> &mut Fields {
        let fields = Arc::make_mut(&mut self.fields);
        fields.encoded = OnceLock::new();
        fields
    }

    /// Sets the event type; [`Error::InvalidSseField`] if it holds a CR or LF.
    pub fn with_event(mut self, event: impl Into<String>) -> Result<Self> {
        let event = event.into();
        check_field("event", &event, false)?;
        self.fields_mut().event = Some(event);
        Ok(self)
    }

    /// Sets the id; [`Error::InvalidSseField`] if it holds a CR, LF or NUL (a browser
    /// ignores an id with a NUL).
    pub fn with_id(mut self, id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        check_field("id", &id, true)?;
        self.fields_mut().id = Some(id);
        Ok(self)
    }

    /// Sets a type the caller knows to be valid (no CR or LF).
    pub(crate) fn with_event_unchecked(mut self, event: impl Into<String>) -> Self {
        self.fields_mut().event = Some(event.into());
        self
    }

    /// Sets an id the caller knows to be valid (no CR, LF or NUL).
    pub(crate) fn with_id_unchecked(mut self, id: impl Into<String>) -> Self {
        self.fields_mut().id = Some(id.into());
        self
    }

    /// Notes when the message this event carries was accepted (see
    /// [`Message::accepted_now`](eric_core::Message::accepted_now)); not written.
    pub fn with_accepted_at(mut self, at: Option<std::time::Instant>) -> Self {
        self.accepted_at = at;
        self
    }

    /// When the message this event carries was accepted by a server, if it says.
    pub fn accepted_at(&self) -> Option<std::time::Instant> {
        self.accepted_at
    }

    /// Sets the reconnection time, in milliseconds.
    pub fn with_retry(mut self, milliseconds: u64) -> Self {
        self.retry = Some(milliseconds);
        self
    }

    /// The event type, if set (`message` for the browser otherwise).
    pub fn event(&self) -> Option<&str> {
        self.fields.event.as_deref()
    }

    /// The data.
    pub fn data(&self) -> &str {
        &self.fields.data
    }

    /// The id, if set.
    pub fn id(&self) -> Option<&str> {
        self.fields.id.as_deref()
    }

    /// The reconnection time in milliseconds, if set.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// The event as it goes on the wire (WHATWG HTML, section 9.2): `event`, `id` and
    /// `retry` lines when set, then one `data` line per line of data (split on CR LF,
    /// CR and LF), then a blank line.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.fields.data.len() + 32);
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut String) {
        self.fields.encode_into(out, self.retry);
    }

    /// The encoding of everything but `retry`, made once and shared by every copy of
    /// this event: what a server that sends each connection its own `retry` writes
    /// after that line, so that a broadcast to N streams is encoded once.
    ///
    /// Borrowed: cloning it costs no copy, but every clone of one broadcast's bytes
    /// counts on one shared atomic, which the cores serving its streams pass between
    /// them. A server that copies the bytes into a buffer of its own (eric-http
    /// does, ~100 bytes) touches nothing shared but to read it.
    ///
    /// ```
    /// use eric_prefabs::SseEvent;
    ///
    /// let event = SseEvent::new("x").with_event("note")?.with_retry(5);
    /// assert_eq!(&event.encoded_without_retry()[..], b"event: note\ndata: x\n\n");
    /// assert_eq!(event.encode(), "event: note\nretry: 5\ndata: x\n\n");
    /// # Ok::<(), eric_prefabs::Error>(())
    /// ```
    pub fn encoded_without_retry(&self) -> &Bytes {
        self.fields.encoded()
    }
}

/// A comment line, which clients ignore: what keep-alives send. Line breaks in `text`
/// become separate comment lines.
///
/// ```
/// assert_eq!(eric_prefabs::sse_comment(""), ":\n\n");
/// assert_eq!(eric_prefabs::sse_comment("keep-alive"), ": keep-alive\n\n");
/// ```
pub fn sse_comment(text: &str) -> String {
    if text.is_empty() {
        return ":\n\n".to_owned();
    }
    let mut out = String::with_capacity(text.len() + 4);
    for line in data_lines(text) {
        out.push_str(": ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

fn push_field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    // A space after the colon is what parsers strip; writing it keeps a value that
    // starts with a space intact.
    out.push_str(": ");
    out.push_str(value);
    out.push('\n');
}

/// The lines of `data`, split on CR LF, CR and LF, as the spec's parser splits them.
fn data_lines(data: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.find(['\r', '\n']) {
            Some(at) => {
                let skip = if text[at..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&text[at + skip..]);
                Some(&text[..at])
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

fn check_field(field: &'static str, value: &str, forbid_nul: bool) -> Result<()> {
    let bad_break = value.contains(['\r', '\n']);
    if bad_break || (forbid_nul && value.contains('\0')) {
        return Err(Error::InvalidSseField {
            field,
            value: truncated(value),
            forbidden: if bad_break {
                "a line break (CR or LF)"
            } else {
                "a NUL character"
            },
        });
    }
    Ok(())
}

/// Whether `value` can be an SSE `event` field (no CR or LF).
pub fn is_valid_event(value: &str) -> bool {
    check_field("event", value, false).is_ok()
}
