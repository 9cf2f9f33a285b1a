//! eric-sse's socket protocol: one JSON request per connection, then EOF; a reply, or a
//! stream of JSON lines.

use eric_core::Message;
use serde_json::Value;

/// The verbs of eric-sse's `SocketServer` (the request's `v`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verb {
    /// `c`: create an SSE channel; replies its id.
    CreateChannel,
    /// `r`: add a listener to channel `c`; replies its id.
    Register,
    /// `d`: dispatch message `t`/`p` to listener `r` of channel `c`; replies `ack`.
    Dispatch,
    /// `b`: broadcast message `t`/`p` on channel `c`; replies `ack`.
    Broadcast,
    /// `rl`: remove listener `r` of channel `c`; replies `ack`.
    RemoveListener,
    /// `rc`: remove channel `c`; replies `ack`.
    RemoveChannel,
    /// `l`: stream listener `r` of channel `c`, one JSON object a line.
    Listen,
    /// `w`: add a listener to channel `c` and stream it; the listener goes with the stream.
    Watch,
}

impl Verb {
    /// The verb's code on the wire.
    pub fn code(self) -> &'static str {
        match self {
            Verb::CreateChannel => "c",
            Verb::Register => "r",
            Verb::Dispatch => "d",
            Verb::Broadcast => "b",
            Verb::RemoveListener => "rl",
            Verb::RemoveChannel => "rc",
            Verb::Listen => "l",
            Verb::Watch => "w",
        }
    }

    fn parse(code: &str) -> Option<Self> {
        Some(match code {
            "c" => Verb::CreateChannel,
            "r" => Verb::Register,
            "d" => Verb::Dispatch,
            "b" => Verb::Broadcast,
            "rl" => Verb::RemoveListener,
            "rc" => Verb::RemoveChannel,
            "l" => Verb::Listen,
            "w" => Verb::Watch,
            _ => return None,
        })
    }

    /// Whether the verb answers with a stream rather than one reply.
    pub fn streams(self) -> bool {
        matches!(self, Verb::Listen | Verb::Watch)
    }
}

/// A parsed request.
#[derive(Clone, Debug)]
pub struct Request {
    /// What to do.
    pub verb: Verb,
    /// `c`: the channel.
    pub channel_id: Option<String>,
    /// `r`: the listener (receiver).
    pub receiver_id: Option<String>,
    /// `t` and `p`: the message, for `d` and `b`.
    pub message: Option<Message>,
}

/// An error reply: the name eric-sse's clients look for, and a detail. It goes on the
/// wire as Python's `repr` of the exception: `InvalidChannelException('No channel with
/// id x')`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorReply {
    /// `InvalidMessageFormat`, `InvalidChannelException`, `InvalidListenerException`,
    /// or (eric's own) `QueueFull`, `ServerShuttingDown`.
    pub kind: &'static str,
    /// What exactly.
    pub detail: String,
}

impl ErrorReply {
    pub(crate) fn format(detail: impl Into<String>) -> Self {
        ErrorReply {
            kind: "InvalidMessageFormat",
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.detail.is_empty() {
            // Python's repr of an exception raised with no message.
            return write!(f, "{}()", self.kind);
        }
        write!(f, "{}({})", self.kind, python_repr_str(&self.detail))
    }
}

impl From<eric_core::Error> for ErrorReply {
    fn from(err: eric_core::Error) -> Self {
        use eric_core::Error as E;
        let (kind, detail) = match &err {
            E::InvalidChannel { channel_id } => (
                "InvalidChannelException",
                format!("No channel with id {channel_id}"),
            ),
            E::ChannelClosed { channel_id } => (
                "InvalidChannelException",
                format!("Channel {channel_id} is closed"),
            ),
            E::InvalidListener { listener_id } | E::ListenerStopped { listener_id } => {
                ("InvalidListenerException", listener_id.clone())
            }
            E::DuplicateChannel { .. } => ("InvalidChannelException", err.to_string()),
            E::InvalidId { .. } => ("InvalidMessageFormat", err.to_string()),
            E::QueueFull { .. } | E::BroadcastRejected { .. } => ("QueueFull", err.to_string()),
            _ => ("InvalidMessageFormat", err.to_string()),
        };
        ErrorReply {
            kind,
            detail: detail.chars().take(512).collect(),
        }
    }
}

impl From<eric_prefabs::Error> for ErrorReply {
    fn from(err: eric_prefabs::Error) -> Self {
        match err {
            eric_prefabs::Error::Core(err) => err.into(),
            other => ErrorReply::format(other.to_string()),
        }
    }
}

impl From<eric_persistence::Error> for ErrorReply {
    fn from(err: eric_persistence::Error) -> Self {
        match err {
            eric_persistence::Error::Core(err) => err.into(),
            eric_persistence::Error::Prefab(err) => err.into(),
            eric_persistence::Error::ChannelNotFound { channel_id } => ErrorReply {
                kind: "InvalidChannelException",
                detail: format!("No channel with id {channel_id}"),
            },
            // eric-sse's name for a storage failure.
            other => ErrorReply {
                kind: "RepositoryError",
                detail: other.to_string().chars().take(512).collect(),
            },
        }
    }
}

/// Parses a request as eric-sse does: a JSON object with `v`, and `t` (with optional
/// `p`) for `d` and `b`. Anything else is an `InvalidMessageFormat` reply.
pub fn parse_request(bytes: &[u8]) -> Result<Request, ErrorReply> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| ErrorReply::format("request is not UTF-8"))?;
    let value: Value = serde_json::from_str(text)
        .map_err(|err| ErrorReply::format(format!("request is not JSON: {err}")))?;
    let Value::Object(fields) = value else {
        return Err(ErrorReply::format("request is not a JSON object"));
    };
    let string = |key: &str| -> Result<Option<String>, ErrorReply> {
        match fields.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ErrorReply::format(format!("'{key}' must be a string"))),
        }
    };
    let code = string("v")?.ok_or_else(|| ErrorReply::format("missing verb 'v'"))?;
    let verb =
        Verb::parse(&code).ok_or_else(|| ErrorReply::format(format!("unknown verb {code:?}")))?;
    let message = match verb {
        Verb::Dispatch | Verb::Broadcast => {
            let message_type =
                string("t")?.ok_or_else(|| ErrorReply::format("missing message type 't'"))?;
            let payload = fields.get("p").cloned().unwrap_or(Value::Null);
            Some(Message::new(message_type, payload))
        }
        _ => None,
    };
    Ok(Request {
        verb,
        channel_id: string("c")?,
        receiver_id: string("r")?,
        message,
    })
}

/// A stream line as eric-sse writes it: Python's `json.dumps` of the SSE channel's
/// adapted message (`{"event": ..., "retry": ..., "data": ...}`, `, ` and `: `
/// separators, non-ASCII escaped), then a newline.
pub fn stream_line(message_type: &str, retry_ms: u64, data: &Value) -> String {
    let mut out = String::with_capacity(64);
    out.push_str("{\"event\": ");
    python_json_into(&mut out, &Value::String(message_type.to_owned()));
    out.push_str(", \"retry\": ");
    out.push_str(&retry_ms.to_string());
    out.push_str(", \"data\": ");
    python_json_into(&mut out, data);
    out.push_str("}\n");
    out
}

/// Writes `value` as Python's `json.dumps` does by default.
fn python_json_into(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => {
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '\u{08}' => out.push_str("\\b"),
                    '\u{0C}' => out.push_str("\\f"),
                    c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                        let mut units = [0u16; 2];
                        for unit in c.encode_utf16(&mut units) {
                            out.push_str(&format!("\\u{unit:04x}"));
                        }
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_json_into(out, item);
            }
            out.push(']');
        }
        Value::Object(fields) => {
            out.push('{');
            for (i, (key, item)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_json_into(out, &Value::String(key.clone()));
                out.push_str(": ");
                python_json_into(out, item);
            }
            out.push('}');
        }
    }
}

/// Python's `repr` of a `str`: single quotes unless the text has some and no double.
fn python_repr_str(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_are_what_python_json_dumps_writes() {
        assert_eq!(
            stream_line(
                "chat",
                5,
                &json!({"text": "héllo \"x\"", "n": [1, 2.5, null]})
            ),
            "{\"event\": \"chat\", \"retry\": 5, \"data\": {\"text\": \"h\\u00e9llo \\\"x\\\"\", \"n\": [1, 2.5, null]}}\n"
        );
        assert_eq!(
            stream_line("e", 5, &json!("🦀")),
            "{\"event\": \"e\", \"retry\": 5, \"data\": \"\\ud83e\\udd80\"}\n"
        );
    }

    #[test]
    fn numbers_come_out_as_they_went_in() {
        // Found by the socket_request fuzz target: without serde_json's float_roundtrip,
        // an integer beyond u64 (or a float) could come back one unit in the last place off.
        let request = parse_request(
            br#"{"v": "b", "c": "c", "t": "n", "p": [200444442229229222222, 2.0044444222922922e20, 0.1]}"#,
        )
        .unwrap();
        let message = request.message.unwrap();
        let line = stream_line("n", 5, message.payload());
        let back: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(&back["data"], message.payload());
    }

    #[test]
    fn error_replies_are_python_reprs() {
        let reply = ErrorReply {
            kind: "InvalidChannelException",
            detail: "No channel with id x".into(),
        };
        assert_eq!(
            reply.to_string(),
            "InvalidChannelException('No channel with id x')"
        );
        assert_eq!(
            ErrorReply::format("it's").to_string(),
            "InvalidMessageFormat(\"it's\")"
        );
    }

    #[test]
    fn requests_parse_as_eric_sse_parses_them() {
        let r = parse_request(br#"{"v": "b", "c": "ch", "t": "news", "p": {"a": 1}}"#).unwrap();
        assert_eq!(
            (r.verb, r.channel_id.as_deref()),
            (Verb::Broadcast, Some("ch"))
        );
        assert_eq!(r.message.unwrap().payload(), &json!({"a": 1}));
        assert!(
            parse_request(br#"{"v": "b", "c": "ch"}"#).is_err(),
            "b needs t"
        );
        assert!(parse_request(br#"{"v": "zz"}"#).is_err());
        assert!(parse_request(b"\xff\xfe").is_err());
        assert!(parse_request(b"[1]").is_err());
        assert!(parse_request(br#"{"c": "x"}"#).is_err());
        assert!(parse_request(br#"{"v": 1}"#).is_err());
    }
}
