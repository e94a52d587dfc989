//! Destination names and kinds: `/queue/NAME`, `/topic/NAME`, `/temp-queue/NAME`.
//!
//! A name is dot-separated segments of `[A-Za-z0-9_-]`, at most 255 bytes (semantics.md).

use std::fmt;

/// Longest destination name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// What kind of destination a name refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DestinationKind {
    Queue,
    Topic,
    /// A queue that lives as long as the connection that created it.
    TempQueue,
}

impl DestinationKind {
    /// The name stored in the database's `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Queue => "queue",
            DestinationKind::Topic => "topic",
            DestinationKind::TempQueue => "temp-queue",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "queue" => Some(DestinationKind::Queue),
            "topic" => Some(DestinationKind::Topic),
            "temp-queue" => Some(DestinationKind::TempQueue),
            _ => None,
        }
    }
}

/// A validated destination: its kind and its name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    pub kind: DestinationKind,
    pub name: String,
}

/// Why a destination string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("destination name is empty: use /queue/NAME or /topic/NAME")]
    Empty,
    #[error("destination name is {len} bytes; the limit is {limit}")]
    TooLong { len: usize, limit: usize },
    #[error(
        "destination name {name:?} has an empty segment: names are dot-separated segments of letters, digits, '_' and '-'"
    )]
    EmptySegment { name: String },
    #[error(
        "destination name {name:?} contains {ch:?}: only letters, digits, '_', '-' and '.' between segments are allowed"
    )]
    BadCharacter { name: String, ch: char },
    #[error("unknown destination prefix in {0:?}: use /queue/, /topic/ or /temp-queue/")]
    UnknownPrefix(String),
}

impl Destination {
    pub fn queue(name: &str) -> Result<Self, DestinationError> {
        validate_name(name)?;
        Ok(Destination {
            kind: DestinationKind::Queue,
            name: name.to_owned(),
        })
    }

    pub fn topic(name: &str) -> Result<Self, DestinationError> {
        validate_name(name)?;
        Ok(Destination {
            kind: DestinationKind::Topic,
            name: name.to_owned(),
        })
    }

    /// Parses a STOMP destination header. A bare name means a queue.
    pub fn parse_stomp(s: &str) -> Result<Self, DestinationError> {
        let (kind, name) = if let Some(rest) = s.strip_prefix("/queue/") {
            (DestinationKind::Queue, rest)
        } else if let Some(rest) = s.strip_prefix("/topic/") {
            (DestinationKind::Topic, rest)
        } else if let Some(rest) = s.strip_prefix("/temp-queue/") {
            (DestinationKind::TempQueue, rest)
        } else if s.starts_with('/') {
            return Err(DestinationError::UnknownPrefix(
                s.chars().take(80).collect(),
            ));
        } else {
            (DestinationKind::Queue, s)
        };
        validate_name(name)?;
        Ok(Destination {
            kind,
            name: name.to_owned(),
        })
    }

    /// The STOMP form, e.g. `/queue/orders`.
    pub fn to_stomp(&self) -> String {
        format!("/{}/{}", self.kind.as_str(), self.name)
    }

    /// The default dead-letter queue of this destination: `DLQ.<name>`.
    pub fn default_dead_letter_queue(&self) -> String {
        format!("DLQ.{}", self.name)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_stomp())
    }
}

/// Checks the name rules of semantics.md.
pub fn validate_name(name: &str) -> Result<(), DestinationError> {
    if name.is_empty() {
        return Err(DestinationError::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(DestinationError::TooLong {
            len: name.len(),
            limit: MAX_NAME_BYTES,
        });
    }
    for segment in name.split('.') {
        if segment.is_empty() {
            return Err(DestinationError::EmptySegment {
                name: name.to_owned(),
            });
        }
        if let Some(ch) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(DestinationError::BadCharacter {
                name: name.to_owned(),
                ch,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prefixes_and_bare_names() {
        assert_eq!(
            Destination::parse_stomp("/queue/a.b").unwrap(),
            Destination::queue("a.b").unwrap()
        );
        assert_eq!(
            Destination::parse_stomp("orders").unwrap().kind,
            DestinationKind::Queue
        );
        assert_eq!(
            Destination::parse_stomp("/topic/x").unwrap().kind,
            DestinationKind::Topic
        );
        assert_eq!(
            Destination::parse_stomp("/temp-queue/r1").unwrap().kind,
            DestinationKind::TempQueue
        );
    }

    #[test]
    fn rejects_bad_names() {
        assert!(matches!(
            Destination::parse_stomp("/queue/"),
            Err(DestinationError::Empty)
        ));
        assert!(matches!(
            Destination::parse_stomp("/queue/a..b"),
            Err(DestinationError::EmptySegment { .. })
        ));
        assert!(matches!(
            Destination::parse_stomp("/queue/a b"),
            Err(DestinationError::BadCharacter { ch: ' ', .. })
        ));
        assert!(matches!(
            Destination::parse_stomp("/exchange/x"),
            Err(DestinationError::UnknownPrefix(_))
        ));
        let long = "a".repeat(256);
        assert!(matches!(
            Destination::queue(&long),
            Err(DestinationError::TooLong { len: 256, .. })
        ));
        assert!(Destination::queue(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn dead_letter_name() {
        assert_eq!(
            Destination::queue("pay.out")
                .unwrap()
                .default_dead_letter_queue(),
            "DLQ.pay.out"
        );
    }
}
