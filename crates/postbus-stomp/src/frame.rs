//! The in-memory STOMP frame and the decoder's output item.

use bytes::Bytes;

use crate::command::Command;

/// One STOMP frame.
///
/// Headers are kept in wire order, repeats included, because STOMP 1.2 says
/// only the first occurrence of a repeated header counts but a relaying
/// broker may still want to see (or forward) the rest. Header names and
/// values are stored unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub command: Command,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Frame {
    /// A frame with no headers and an empty body.
    pub fn new(command: Command) -> Self {
        Frame {
            command,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// The value of the first header called `name` (case-sensitive).
    ///
    /// First occurrence wins, as STOMP 1.2 requires for repeated headers.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Appends a header (builder style). Does not replace an existing one.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.push_header(name, value);
        self
    }

    /// Appends a header. Does not replace an existing one: since the first
    /// occurrence wins, a pushed duplicate is ignored by readers.
    pub fn push_header(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.headers.push((name.into(), value.into()));
    }

    /// Sets the body (builder style). The encoder derives `content-length`
    /// from it, so callers need not set that header.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
}

/// What the decoder yields: a frame, or a heart-beat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Frame(Frame),
    /// A bare EOL (`\n` or `\r\n`) between frames. One per EOL received.
    HeartBeat,
}

impl From<Frame> for Item {
    fn from(frame: Frame) -> Self {
        Item::Frame(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_first_occurrence_wins() {
        let f = Frame::new(Command::Send)
            .with_header("a", "1")
            .with_header("b", "2")
            .with_header("a", "3");
        assert_eq!(f.header("a"), Some("1"));
        assert_eq!(f.header("b"), Some("2"));
        assert_eq!(f.header("A"), None);
        assert_eq!(f.headers.len(), 3);
    }

    #[test]
    fn builders() {
        let mut f = Frame::new(Command::Message).with_body("hi");
        f.push_header("x", "y");
        assert_eq!(f.body, Bytes::from_static(b"hi"));
        assert_eq!(f.header("x"), Some("y"));
        assert_eq!(Item::from(f.clone()), Item::Frame(f));
    }
}
