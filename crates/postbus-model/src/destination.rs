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
    /// A topic subscription: the logical copies of a topic's messages one subscriber gets.
    /// Not addressable over STOMP (subscribers name the topic).
    Subscription,
}

impl DestinationKind {
    /// The name stored in the database's `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Queue => "queue",
            DestinationKind::Topic => "topic",
            DestinationKind::TempQueue => "temp-queue",
            DestinationKind::Subscription => "subscription",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "queue" => Some(DestinationKind::Queue),
            "topic" => Some(DestinationKind::Topic),
            "temp-queue" => Some(DestinationKind::TempQueue),
            "subscription" => Some(DestinationKind::Subscription),
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
    #[error(
        "destination pattern {0:?} is not valid: '>' may only be the last segment, and wildcards only subscribe to topics"
    )]
    BadWildcard(String),
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

    /// Parses a SUBSCRIBE destination: like [`Destination::parse_stomp`], but a topic may be a
    /// wildcard pattern (`orders.*`, `orders.>`; see [`pattern_matches`]).
    pub fn parse_stomp_pattern(s: &str) -> Result<Self, DestinationError> {
        if let Some(rest) = s.strip_prefix("/topic/") {
            validate_pattern(rest)?;
            return Ok(Destination {
                kind: DestinationKind::Topic,
                name: rest.to_owned(),
            });
        }
        if s.contains(['*', '>']) {
            return Err(DestinationError::BadWildcard(s.chars().take(80).collect()));
        }
        Destination::parse_stomp(s)
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

/// True when `pattern` has a wildcard segment.
pub fn is_pattern(pattern: &str) -> bool {
    pattern.split('.').any(|s| s == "*" || s == ">")
}

/// Checks a subscription pattern: a name whose segments may also be `*` (exactly one
/// segment) or, as the last segment, `>` (one or more segments).
pub fn validate_pattern(pattern: &str) -> Result<(), DestinationError> {
    let segments: Vec<&str> = pattern.split('.').collect();
    let mut literal = Vec::with_capacity(segments.len());
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "*" => literal.push("x"),
            ">" if i + 1 == segments.len() => literal.push("x"),
            ">" => return Err(DestinationError::BadWildcard(pattern.to_owned())),
            s if s.contains(['*', '>']) => {
                return Err(DestinationError::BadWildcard(pattern.to_owned()));
            }
            s => literal.push(s),
        }
    }
    // The rest of the rules (characters, length, empty segments) are the name rules.
    if pattern.len() > MAX_NAME_BYTES {
        return validate_name(pattern);
    }
    validate_name(&literal.join("."))
}

/// Whether topic `name` matches subscription `pattern` (see [`validate_pattern`]).
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let n: Vec<&str> = name.split('.').collect();
    for (i, seg) in p.iter().enumerate() {
        match *seg {
            ">" => return n.len() > i,
            "*" if i < n.len() => {}
            s if i < n.len() && n[i] == s => {}
            _ => return false,
        }
    }
    p.len() == n.len()
}

/// The POSIX regular expression (PostgreSQL `~`) equivalent to [`pattern_matches`] for a
/// valid pattern. Name characters need no escaping but the dot.
pub fn pattern_regex(pattern: &str) -> String {
    let parts: Vec<String> = pattern
        .split('.')
        .map(|seg| match seg {
            "*" => "[^.]+".to_owned(),
            ">" => ".+".to_owned(),
            s => s.to_owned(),
        })
        .collect();
    format!("^{}$", parts.join("\\."))
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
    fn wildcard_patterns_match_like_activemq() {
        assert!(pattern_matches("orders.*", "orders.eu"));
        assert!(!pattern_matches("orders.*", "orders.eu.new"));
        assert!(!pattern_matches("orders.*", "orders"));
        assert!(pattern_matches("orders.>", "orders.eu"));
        assert!(pattern_matches("orders.>", "orders.eu.new"));
        assert!(!pattern_matches("orders.>", "orders"));
        assert!(pattern_matches("*.eu.>", "orders.eu.new.x"));
        assert!(pattern_matches("orders.eu", "orders.eu"));
        assert!(!pattern_matches("orders.eu", "orders.us"));
        assert!(pattern_matches(">", "a"));
        assert!(validate_pattern("orders.>").is_ok());
        assert!(validate_pattern("*.b.*").is_ok());
        assert!(matches!(
            validate_pattern("a.>.b"),
            Err(DestinationError::BadWildcard(_))
        ));
        assert!(matches!(
            validate_pattern("a.b*"),
            Err(DestinationError::BadWildcard(_))
        ));
        assert!(validate_pattern("a..b").is_err());
        assert_eq!(pattern_regex("orders.*.>"), "^orders\\.[^.]+\\..+$");
        assert!(Destination::parse_stomp_pattern("/queue/a.*").is_err());
        assert!(Destination::parse_stomp("/topic/a.*").is_err());
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
