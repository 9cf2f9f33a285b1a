//! Channel patterns: what a token's `subscribe` and `publish` lists hold.

/// A channel id, or a pattern in which `*` stands for any run of characters (none
/// included): `room-*` matches `room-1` and `room-`, `*` matches every channel,
/// `a*b*c` matches `abc` and `a-b-c`. No other character is special, and there is no
/// escape: a `*` in a channel id is matched by a `*` of the pattern only.
///
/// ```
/// use eric_http::ChannelPattern;
///
/// let rooms = ChannelPattern::new("room-*");
/// assert!(rooms.matches("room-42"));
/// assert!(!rooms.matches("lobby"));
/// assert!(ChannelPattern::new("*").matches("anything"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelPattern {
    /// The pattern cut at its stars: the text between them.
    pieces: Vec<String>,
    /// Whether it holds a star at all (one piece and no star: an exact id).
    wild: bool,
}

impl ChannelPattern {
    /// The pattern `text`.
    pub fn new(text: &str) -> Self {
        ChannelPattern {
            pieces: text.split('*').map(str::to_owned).collect(),
            wild: text.contains('*'),
        }
    }

    /// Whether `channel` matches. Linear in the lengths of both: the first piece must
    /// start the id, the last end it, and the ones between appear in order, each at its
    /// leftmost place (with `*` the only wildcard, leftmost is never wrong).
    pub fn matches(&self, channel: &str) -> bool {
        let (first, rest) = match self.pieces.split_first() {
            Some(split) => split,
            None => return channel.is_empty(),
        };
        if !self.wild {
            return channel == first;
        }
        let Some(mut remaining) = channel.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return true;
        };
        for piece in middle {
            match remaining.find(piece.as_str()) {
                Some(at) => remaining = &remaining[at + piece.len()..],
                None => return false,
            }
        }
        remaining.len() >= last.len() && remaining.ends_with(last.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ChannelPattern;

    #[test]
    fn stars_match_any_run_and_nothing_else_is_special() {
        let cases = [
            ("room-1", "room-1", true),
            ("room-1", "room-10", false),
            ("room-*", "room-", true),
            ("room-*", "room-abc", true),
            ("room-*", "xroom-abc", false),
            ("*", "", true),
            ("*", "x", true),
            ("*-admin", "a-admin", true),
            ("*-admin", "a-admins", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "a-b-c", true),
            ("a*b*c", "acb", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("ab*ba", "aba", false),
            ("?", "a", false),
            ("[ab]", "a", false),
            ("", "", true),
            ("", "a", false),
        ];
        for (pattern, channel, expected) in cases {
            assert_eq!(
                ChannelPattern::new(pattern).matches(channel),
                expected,
                "{pattern:?} against {channel:?}"
            );
        }
    }
}
