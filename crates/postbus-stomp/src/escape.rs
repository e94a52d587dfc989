//! Header escaping rules (STOMP 1.1 and 1.2 "Value Encoding").
//!
//! 1.1 defines `\n`, `\c` (colon) and `\\`; 1.2 adds `\r`. 1.0 and the
//! handshake frames (CONNECT, STOMP, CONNECTED) have no escaping at all.

use bytes::{BufMut, BytesMut};

use crate::command::{Command, Version};
use crate::error::CodecError;

/// Which escaping rules apply to one frame's headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Escaping {
    None,
    V1_1,
    V1_2,
}

impl Escaping {
    /// The rules for a frame with `command` on a connection at `version`.
    pub(crate) fn for_frame(command: Command, version: Version) -> Self {
        if command.is_handshake() {
            return Escaping::None;
        }
        match version {
            Version::V1_0 => Escaping::None,
            Version::V1_1 => Escaping::V1_1,
            Version::V1_2 => Escaping::V1_2,
        }
    }
}

/// Decodes escapes in a header name or value.
pub(crate) fn unescape(s: &str, rules: Escaping) -> Result<String, CodecError> {
    // Most headers have no backslash at all; skip the char-by-char walk.
    if rules == Escaping::None || !s.contains('\\') {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('c') => out.push(':'),
            Some('\\') => out.push('\\'),
            Some('r') if rules == Escaping::V1_2 => out.push('\r'),
            Some(other) => {
                return Err(CodecError::InvalidEscape {
                    sequence: format!("\\{other}"),
                });
            }
            None => {
                return Err(CodecError::InvalidEscape {
                    sequence: "\\".to_owned(),
                });
            }
        }
    }
    Ok(out)
}

/// Writes a header name (`is_name`) or value, escaped per `rules`.
///
/// Where a character cannot be escaped, the choice is driven by keeping the
/// frame parseable: a raw `\n` would end the header line early and let a
/// value inject headers (or end the header block), so without escaping it is
/// written as a space; so is a `:` in a name, which would otherwise end the
/// name early (`a:b` relayed to a 1.0 consumer would read as header `a`, and
/// a name that is just `:` as an empty name, a fatal error for the reader).
/// A `\r` without the 1.2 escape is written raw: it is a legal octet there,
/// and at worst a reader drops it when it is the last character of a line
/// (CRLF rule).
pub(crate) fn write_escaped(out: &mut BytesMut, s: &str, rules: Escaping, is_name: bool) {
    let special: &[u8] = match rules {
        Escaping::None if is_name => b"\n:",
        Escaping::None => b"\n",
        Escaping::V1_1 => b"\n:\\",
        Escaping::V1_2 => b"\n\r:\\",
    };
    let bytes = s.as_bytes();
    if !bytes.iter().any(|b| special.contains(b)) {
        out.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        match (b, rules) {
            (b'\n', Escaping::None) => out.put_u8(b' '),
            (b':', Escaping::None) if is_name => out.put_u8(b' '),
            (b'\n', _) => out.extend_from_slice(b"\\n"),
            (b'\r', Escaping::V1_2) => out.extend_from_slice(b"\\r"),
            (b':', Escaping::V1_1 | Escaping::V1_2) => out.extend_from_slice(b"\\c"),
            (b'\\', Escaping::V1_1 | Escaping::V1_2) => out.extend_from_slice(b"\\\\"),
            _ => out.put_u8(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str, rules: Escaping) -> String {
        let mut out = BytesMut::new();
        write_escaped(&mut out, s, rules, false);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn rules_per_frame() {
        for v in Version::ALL {
            for c in [Command::Connect, Command::Stomp, Command::Connected] {
                assert_eq!(Escaping::for_frame(c, v), Escaping::None);
            }
        }
        assert_eq!(
            Escaping::for_frame(Command::Send, Version::V1_0),
            Escaping::None
        );
        assert_eq!(
            Escaping::for_frame(Command::Send, Version::V1_1),
            Escaping::V1_1
        );
        assert_eq!(
            Escaping::for_frame(Command::Message, Version::V1_2),
            Escaping::V1_2
        );
    }

    #[test]
    fn escape_each_rule() {
        assert_eq!(esc("a\nb:c\\d\re", Escaping::V1_2), "a\\nb\\cc\\\\d\\re");
        assert_eq!(esc("a\nb:c\\d\re", Escaping::V1_1), "a\\nb\\cc\\\\d\re");
        assert_eq!(esc("a\nb:c\\d\re", Escaping::None), "a b:c\\d\re");
        assert_eq!(esc("plain", Escaping::V1_2), "plain");
        let mut name = BytesMut::new();
        write_escaped(&mut name, "a:b\nc", Escaping::None, true);
        assert_eq!(&name[..], b"a b c");
        let mut name = BytesMut::new();
        write_escaped(&mut name, "a:b", Escaping::V1_1, true);
        assert_eq!(&name[..], b"a\\cb");
    }

    #[test]
    fn unescape_each_rule() {
        let u = |s, r| unescape(s, r).unwrap();
        assert_eq!(u("a\\nb\\cc\\\\d\\re", Escaping::V1_2), "a\nb:c\\d\re");
        assert_eq!(u("a\\nb\\cc\\\\d", Escaping::V1_1), "a\nb:c\\d");
        assert_eq!(u("a\\nb\\t", Escaping::None), "a\\nb\\t");
        assert_eq!(u("\\\\n", Escaping::V1_2), "\\n");
    }

    #[test]
    fn unescape_rejects_undefined() {
        let bad = |s, r| match unescape(s, r) {
            Err(CodecError::InvalidEscape { sequence }) => sequence,
            other => panic!("{other:?}"),
        };
        assert_eq!(bad("a\\tb", Escaping::V1_2), "\\t");
        assert_eq!(bad("a\\r", Escaping::V1_1), "\\r");
        assert_eq!(bad("trailing\\", Escaping::V1_2), "\\");
        assert_eq!(bad("\\é", Escaping::V1_2), "\\é");
    }
}
