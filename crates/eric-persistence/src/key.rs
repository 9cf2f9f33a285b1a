//! Storage keys: a prefix and escaped parts, so that no id can reach another's keys.

/// Builds storage keys: `<prefix><kind>:<part>:<part>...`, each part escaped.
///
/// Escaping turns `%`, `:`, the glob characters `* ? [ ] \`, and control characters and
/// spaces into `%XX`, so a part never contains a separator or a pattern: a listener
/// `a:b` of channel `c` cannot collide with listener `b` of channel `c:a`, and a prefix
/// scan for channel `*` matches channel `*` only.
///
/// ```
/// use eric_persistence::Keys;
///
/// let keys = Keys::new("eric:");
/// assert_eq!(keys.key(&["channel", "a:b*"]), "eric:channel:a%3Ab%2A");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new("eric:")
    }
}

impl Keys {
    /// Keys under `prefix` (which is used as given: choose one without glob characters).
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key made of `parts`, each escaped, joined by `:`.
    pub fn key(&self, parts: &[&str]) -> String {
        self.key_with_capacity(parts, 0)
    }

    /// The key made of `parts` and then `n` (zero-padded to 20 digits, so that keys sort
    /// by number).
    pub(crate) fn numbered_key(&self, parts: &[&str], n: u64) -> String {
        let mut key = self.key_with_capacity(parts, 21);
        // Twenty digits hold any u64; written by hand because `{n:020}` pads one char at a
        // time, and this is on the path of every stored message.
        let mut digits = [b'0'; 20];
        let mut rest = n;
        for digit in digits.iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        key.push(':');
        key.extend(digits.iter().map(|&d| char::from(d)));
        key
    }

    fn key_with_capacity(&self, parts: &[&str], extra: usize) -> String {
        let length: usize = parts.iter().map(|p| p.len() + 1).sum();
        let mut key = String::with_capacity(self.prefix.len() + length + extra);
        key.push_str(&self.prefix);
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                key.push(':');
            }
            escape_into(&mut key, part);
        }
        key
    }

    /// The prefix of every key that starts with `parts` (ending with `:`).
    pub fn prefix_of(&self, parts: &[&str]) -> String {
        let mut key = self.key(parts);
        key.push(':');
        key
    }
}

/// Appends `part` to `out`, escaped.
pub(crate) fn escape_into(out: &mut String, part: &str) {
    // Ids are usually uuids or plain names: nothing to escape.
    if !part.chars().any(needs_escape) {
        out.push_str(part);
        return;
    }
    for c in part.chars() {
        if !needs_escape(c) {
            out.push(c);
        } else if c.is_control() {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push('%');
                out.push_str(&format!("{byte:02X}"));
            }
        } else {
            push_hex(out, c);
        }
    }
}

/// Separators, glob characters, `%` itself, spaces and control characters.
fn needs_escape(c: char) -> bool {
    matches!(c, '%' | ':' | '*' | '?' | '[' | ']' | '\\' | ' ') || c.is_control()
}

fn push_hex(out: &mut String, c: char) {
    out.push('%');
    out.push_str(&format!("{:02X}", c as u32));
}

/// Escapes the glob characters of a Redis `MATCH` pattern, so a prefix matches only
/// itself (keys built by [`Keys`] have none; prefixes given by users might).
#[cfg(feature = "redis")]
pub(crate) fn glob_literal(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 2);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cannot_forge_separators_or_patterns() {
        let keys = Keys::new("p:");
        assert_ne!(keys.key(&["c", "a:b"]), keys.key(&["c:a", "b"]));
        assert_eq!(keys.key(&["x", "*?[]\\ %"]), "p:x:%2A%3F%5B%5D%5C%20%25");
        assert_eq!(keys.key(&["é🦀"]), "p:é🦀");
        assert_eq!(keys.key(&["a\nb"]), "p:a%0Ab");
        #[cfg(feature = "redis")]
        assert_eq!(glob_literal("a*b[c]"), "a\\*b\\[c\\]");
        assert_eq!(keys.numbered_key(&["q"], 0), "p:q:00000000000000000000");
        assert_eq!(keys.numbered_key(&["q"], 42), format!("p:q:{:020}", 42));
        assert_eq!(
            keys.numbered_key(&["q"], u64::MAX),
            format!("p:q:{}", u64::MAX)
        );
    }
}
