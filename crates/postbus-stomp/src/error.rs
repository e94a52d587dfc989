//! Errors reported by the codec.
//!
//! Every decode error is fatal for the connection: after one, the byte
//! stream can no longer be framed reliably. Display messages are one line
//! and lower case because the broker copies them into the `message` header
//! of the ERROR frame it sends before closing.

/// How much of a client-supplied string an error message repeats back.
/// Bounded so a hostile 64 KiB header line does not become a 64 KiB
/// ERROR frame header.
pub(crate) const MAX_ECHO_CHARS: usize = 64;

/// A decoding (or transport) failure.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The frame (command line through NUL) is longer than `limit` bytes.
    #[error("frame exceeds the maximum size of {limit} bytes")]
    FrameTooLarge { limit: usize },

    /// The frame has more than `limit` header lines.
    #[error("frame has more than {limit} headers")]
    TooManyHeaders { limit: usize },

    /// The command line or a header line is longer than `limit` bytes
    /// (EOL excluded).
    #[error("command or header line exceeds the maximum length of {limit} bytes")]
    HeaderLineTooLong { limit: usize },

    /// The body is longer than `limit` bytes. `length` is the declared
    /// `content-length`, or, for a frame without one, how many body bytes
    /// had arrived when the limit was crossed (so a lower bound).
    #[error("frame body of {length} bytes exceeds the maximum of {limit} bytes")]
    BodyTooLarge { length: usize, limit: usize },

    /// The first `content-length` header is not a non-negative decimal
    /// integer that fits in `usize`. `value` is truncated.
    #[error("invalid content-length header value {value:?}")]
    InvalidContentLength { value: String },

    /// The command line is not a STOMP command. `command` is truncated
    /// (lossy UTF-8).
    #[error("unknown command {command:?}")]
    UnknownCommand { command: String },

    /// A header line has no `:`. `line_no` counts frame lines from 1 (the
    /// command line); `text` is the line, truncated, lossy UTF-8.
    #[error("malformed header on line {line_no}, expected name:value but got {text:?}")]
    MalformedHeader { line_no: usize, text: String },

    /// A header line starts with `:`.
    #[error("empty header name on line {line_no}")]
    EmptyHeaderName { line_no: usize },

    /// A backslash escape the negotiated version does not define, e.g.
    /// `\t`, or `\r` in 1.1, or a trailing lone `\`. `sequence` holds the
    /// backslash and the character after it, if any.
    #[error("invalid escape sequence '{}' in header", show_escape(sequence))]
    InvalidEscape { sequence: String },

    /// The command, a header name or a header value is not valid UTF-8.
    /// `what` says which.
    #[error("{what} is not valid utf-8")]
    InvalidUtf8 { what: &'static str },

    /// The byte after `content-length` body bytes is not NUL.
    #[error("frame body is not terminated by a nul byte where content-length says it ends")]
    MissingNul,

    /// The stream ended part-way through a frame.
    #[error("connection closed in the middle of a frame")]
    UnexpectedEof,

    /// The transport failed; produced by `tokio_util` framing, never by the
    /// codec itself.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Renders an escape sequence for a message: the backslash stays literal,
/// the character after it is shown with Rust escapes if it is a control
/// character, so the message stays on one line.
fn show_escape(sequence: &str) -> String {
    let mut chars = sequence.chars();
    let mut out = String::new();
    if let Some(first) = chars.next() {
        out.push(first);
    }
    for c in chars {
        out.extend(c.escape_debug());
    }
    out
}

/// Truncates client-supplied text for inclusion in an error message.
pub(crate) fn echo(text: &str) -> String {
    match text.char_indices().nth(MAX_ECHO_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Like [`echo`] for bytes that may not be UTF-8.
pub(crate) fn echo_bytes(bytes: &[u8]) -> String {
    // Only look at a bounded prefix: lossy conversion of a 64 KiB line just
    // to keep 64 characters would be wasted work. 4 bytes per char covers
    // the worst case of UTF-8; the extra byte makes `echo` notice truncation.
    let prefix = &bytes[..bytes.len().min(MAX_ECHO_CHARS * 4 + 1)];
    let text = String::from_utf8_lossy(prefix);
    let out = echo(&text);
    if prefix.len() < bytes.len() && !out.ends_with("...") {
        format!("{out}...")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_lower_case() {
        let errors = [
            CodecError::FrameTooLarge { limit: 1 },
            CodecError::TooManyHeaders { limit: 1 },
            CodecError::HeaderLineTooLong { limit: 1 },
            CodecError::BodyTooLarge {
                length: 2,
                limit: 1,
            },
            CodecError::InvalidContentLength { value: "-1".into() },
            CodecError::UnknownCommand {
                command: "a\nb".into(),
            },
            CodecError::MalformedHeader {
                line_no: 2,
                text: "x\ry".into(),
            },
            CodecError::EmptyHeaderName { line_no: 2 },
            CodecError::InvalidEscape {
                sequence: "\\\r".into(),
            },
            CodecError::InvalidUtf8 { what: "command" },
            CodecError::MissingNul,
            CodecError::UnexpectedEof,
        ];
        for e in errors {
            let msg = e.to_string();
            assert!(!msg.contains('\n') && !msg.contains('\r'), "{msg:?}");
            assert_eq!(
                msg.chars().next(),
                msg.chars().next().map(|c| c.to_ascii_lowercase())
            );
        }
    }

    #[test]
    fn escape_display() {
        let e = CodecError::InvalidEscape {
            sequence: "\\t".into(),
        };
        assert_eq!(e.to_string(), "invalid escape sequence '\\t' in header");
        let e = CodecError::InvalidEscape {
            sequence: "\\".into(),
        };
        assert_eq!(e.to_string(), "invalid escape sequence '\\' in header");
    }

    #[test]
    fn echo_truncates() {
        assert_eq!(echo("short"), "short");
        let long = "é".repeat(100);
        let e = echo(&long);
        assert_eq!(e.chars().count(), MAX_ECHO_CHARS + 3);
        assert!(e.ends_with("..."));
        let e = echo_bytes(&[b'a'; 100_000]);
        assert_eq!(e.len(), MAX_ECHO_CHARS + 3);
        assert_eq!(echo_bytes(b"abc"), "abc");
        assert_eq!(echo_bytes(&[0xff]), "\u{fffd}");
    }
}
