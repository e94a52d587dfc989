//! Frame encoding: `Frame` to wire bytes.

use bytes::{BufMut, BytesMut};

use crate::command::Version;
use crate::escape::{Escaping, write_escaped};
use crate::frame::Frame;

const CONTENT_LENGTH: &str = "content-length";

/// Appends `frame` to `out` in wire form for a connection at `version`.
///
/// Headers are written in order, escaped per the version's rules (none for
/// 1.0 and for CONNECT/STOMP/CONNECTED; there a newline, and a colon in a
/// name, cannot be written and become spaces). `content-length` is managed here so
/// the receiver can frame binary bodies containing NUL: it is always made to
/// equal the body length. The first `content-length` header is rewritten in
/// place if wrong, later ones are dropped (a reader that honours the last
/// occurrence would otherwise disagree with one that honours the first), and
/// one is appended when the body is non-empty and none was given.
/// Lines end in `\n`, never `\r\n`.
pub fn encode_frame(frame: &Frame, version: Version, out: &mut BytesMut) {
    let rules = Escaping::for_frame(frame.command, version);
    let headers_len: usize = frame
        .headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 2)
        .sum();
    // Escaping can grow headers, so this is a floor; it still avoids most
    // reallocation. 32 covers the command, content-length and terminators.
    out.reserve(frame.command.as_str().len() + headers_len + frame.body.len() + 32);

    out.extend_from_slice(frame.command.as_str().as_bytes());
    out.put_u8(b'\n');

    let body_len = frame.body.len().to_string();
    let mut wrote_content_length = false;
    for (name, value) in &frame.headers {
        if name == CONTENT_LENGTH {
            if !wrote_content_length {
                wrote_content_length = true;
                write_header(out, name, &body_len, rules);
            }
            continue;
        }
        write_header(out, name, value, rules);
    }
    if !wrote_content_length && !frame.body.is_empty() {
        write_header(out, CONTENT_LENGTH, &body_len, rules);
    }

    out.put_u8(b'\n');
    out.extend_from_slice(&frame.body);
    out.put_u8(0);
}

fn write_header(out: &mut BytesMut, name: &str, value: &str, rules: Escaping) {
    write_escaped(out, name, rules, true);
    out.put_u8(b':');
    write_escaped(out, value, rules, false);
    out.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;

    fn enc(frame: &Frame, version: Version) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_frame(frame, version, &mut out);
        out.to_vec()
    }

    #[test]
    fn minimal_frame() {
        assert_eq!(
            enc(&Frame::new(Command::Disconnect), Version::V1_2),
            b"DISCONNECT\n\n\0"
        );
    }

    #[test]
    fn adds_content_length_for_body() {
        let f = Frame::new(Command::Send)
            .with_header("destination", "/queue/a")
            .with_body(&b"a\0b"[..]);
        assert_eq!(
            enc(&f, Version::V1_2),
            b"SEND\ndestination:/queue/a\ncontent-length:3\n\na\0b\0"
        );
    }

    #[test]
    fn fixes_wrong_content_length_and_drops_duplicates() {
        let f = Frame::new(Command::Send)
            .with_header("content-length", "99")
            .with_header("x", "1")
            .with_header("content-length", "3")
            .with_body("abc");
        assert_eq!(
            enc(&f, Version::V1_2),
            b"SEND\ncontent-length:3\nx:1\n\nabc\0"
        );

        let f = Frame::new(Command::Send).with_header("content-length", "5");
        assert_eq!(enc(&f, Version::V1_2), b"SEND\ncontent-length:0\n\n\0");
    }

    #[test]
    fn keeps_correct_content_length_once() {
        let f = Frame::new(Command::Send)
            .with_header("content-length", "2")
            .with_body("ab");
        assert_eq!(enc(&f, Version::V1_2), b"SEND\ncontent-length:2\n\nab\0");
    }

    #[test]
    fn escapes_per_version() {
        let f = Frame::new(Command::Message).with_header("k:\\", "v\n\r:");
        assert_eq!(
            enc(&f, Version::V1_2),
            b"MESSAGE\nk\\c\\\\:v\\n\\r\\c\n\n\0"
        );
        assert_eq!(enc(&f, Version::V1_1), b"MESSAGE\nk\\c\\\\:v\\n\r\\c\n\n\0");
        assert_eq!(enc(&f, Version::V1_0), b"MESSAGE\nk \\:v \r:\n\n\0");
    }

    #[test]
    fn handshake_frames_are_never_escaped() {
        for c in [Command::Connect, Command::Stomp, Command::Connected] {
            let f = Frame::new(c).with_header("a", "b:c\\d\ne");
            let mut want = format!("{c}\n").into_bytes();
            want.extend_from_slice(b"a:b:c\\d e\n\n\0");
            assert_eq!(enc(&f, Version::V1_2), want);
        }
    }
}
