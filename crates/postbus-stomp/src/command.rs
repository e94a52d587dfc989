//! STOMP commands, protocol versions and version negotiation.

use std::fmt;

/// A STOMP frame command, client or server side.
///
/// Commands are case-sensitive on the wire (`send` is not `SEND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    Connect,
    Stomp,
    Connected,
    Send,
    Subscribe,
    Unsubscribe,
    Ack,
    Nack,
    Begin,
    Commit,
    Abort,
    Disconnect,
    Message,
    Receipt,
    Error,
}

impl Command {
    /// Every command, in declaration order (handy for tests and tables).
    pub const ALL: [Command; 15] = [
        Command::Connect,
        Command::Stomp,
        Command::Connected,
        Command::Send,
        Command::Subscribe,
        Command::Unsubscribe,
        Command::Ack,
        Command::Nack,
        Command::Begin,
        Command::Commit,
        Command::Abort,
        Command::Disconnect,
        Command::Message,
        Command::Receipt,
        Command::Error,
    ];

    /// The command as it appears on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Connected => "CONNECTED",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    /// Parses a wire command (exact, case-sensitive match; no surrounding
    /// whitespace allowed).
    pub fn parse(s: &[u8]) -> Option<Command> {
        Some(match s {
            b"CONNECT" => Command::Connect,
            b"STOMP" => Command::Stomp,
            b"CONNECTED" => Command::Connected,
            b"SEND" => Command::Send,
            b"SUBSCRIBE" => Command::Subscribe,
            b"UNSUBSCRIBE" => Command::Unsubscribe,
            b"ACK" => Command::Ack,
            b"NACK" => Command::Nack,
            b"BEGIN" => Command::Begin,
            b"COMMIT" => Command::Commit,
            b"ABORT" => Command::Abort,
            b"DISCONNECT" => Command::Disconnect,
            b"MESSAGE" => Command::Message,
            b"RECEIPT" => Command::Receipt,
            b"ERROR" => Command::Error,
            _ => return None,
        })
    }

    /// Whether header escaping is switched off for this command.
    ///
    /// The spec exempts the connection handshake frames because the version
    /// (and so the escaping rules) is not known until they have been read.
    pub(crate) fn is_handshake(&self) -> bool {
        matches!(self, Command::Connect | Command::Stomp | Command::Connected)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A STOMP protocol version. Ordered, so `max()` picks the newest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V1_0,
    V1_1,
    V1_2,
}

impl Version {
    /// Every version, oldest first.
    pub const ALL: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];

    /// The version as written in `accept-version` / `version` headers.
    pub fn as_str(&self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// Parses `"1.0"`, `"1.1"` or `"1.2"` (exact match).
    pub fn parse(s: &str) -> Option<Version> {
        match s {
            "1.0" => Some(Version::V1_0),
            "1.1" => Some(Version::V1_1),
            "1.2" => Some(Version::V1_2),
            _ => None,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Picks the protocol version for a connection.
///
/// `accept_version` is the CONNECT/STOMP frame's `accept-version` header.
/// A missing header means the client only speaks 1.0 (per the spec), so the
/// result is 1.0 if `supported` contains it. Otherwise the header is a
/// comma-separated list; unknown entries (e.g. `2.0`) are ignored and the
/// highest version present in both lists wins. `None` means there is no
/// common version and the broker should answer with an ERROR frame.
pub fn negotiate_version(accept_version: Option<&str>, supported: &[Version]) -> Option<Version> {
    match accept_version {
        None => supported.contains(&Version::V1_0).then_some(Version::V1_0),
        Some(list) => list
            .split(',')
            .filter_map(|v| Version::parse(v.trim()))
            .filter(|v| supported.contains(v))
            .max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_round_trips_through_str() {
        for c in Command::ALL {
            assert_eq!(Command::parse(c.as_str().as_bytes()), Some(c));
            assert_eq!(c.to_string(), c.as_str());
        }
    }

    #[test]
    fn command_parse_is_case_sensitive_and_exact() {
        assert_eq!(Command::parse(b"send"), None);
        assert_eq!(Command::parse(b"Send"), None);
        assert_eq!(Command::parse(b"SEND "), None);
        assert_eq!(Command::parse(b" SEND"), None);
        assert_eq!(Command::parse(b""), None);
    }

    #[test]
    fn versions_are_ordered_and_named() {
        assert!(Version::V1_0 < Version::V1_1 && Version::V1_1 < Version::V1_2);
        for v in Version::ALL {
            assert_eq!(Version::parse(v.as_str()), Some(v));
        }
        assert_eq!(Version::parse("1.3"), None);
    }

    #[test]
    fn negotiation() {
        let all = &Version::ALL;
        assert_eq!(negotiate_version(None, all), Some(Version::V1_0));
        assert_eq!(negotiate_version(None, &[Version::V1_2]), None);
        assert_eq!(
            negotiate_version(Some("1.0,1.1,1.2"), all),
            Some(Version::V1_2)
        );
        assert_eq!(negotiate_version(Some("1.2,1.0"), all), Some(Version::V1_2));
        assert_eq!(negotiate_version(Some("1.1"), all), Some(Version::V1_1));
        assert_eq!(
            negotiate_version(Some(" 1.0 , 1.1 "), all),
            Some(Version::V1_1)
        );
        assert_eq!(
            negotiate_version(Some("1.1,1.2"), &[Version::V1_0, Version::V1_1]),
            Some(Version::V1_1)
        );
        assert_eq!(negotiate_version(Some("2.0"), all), None);
        assert_eq!(negotiate_version(Some(""), all), None);
        assert_eq!(negotiate_version(Some("1.2"), &[Version::V1_0]), None);
    }
}
