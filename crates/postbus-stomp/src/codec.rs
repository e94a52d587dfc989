//! The incremental STOMP decoder and the `tokio_util` codec wrapper.
//!
//! Decoding is a small state machine over the caller's buffer. A frame's
//! bytes stay in the buffer until the whole frame has arrived (so the body
//! can be split off without copying), but everything already examined is
//! remembered: the command and each header are parsed as soon as their line
//! is complete, and the search for the next EOL or NUL resumes where the
//! previous call stopped. Total work is therefore linear in the bytes
//! received however small the chunks are, and every limit is checked against
//! what has been buffered so far, so an oversized frame is refused as soon as
//! it crosses a limit rather than after it has been read in full.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::command::{Command, Version};
use crate::encode::encode_frame;
use crate::error::{CodecError, echo, echo_bytes};
use crate::escape::{Escaping, unescape};
use crate::frame::{Frame, Item};

/// Size limits applied while decoding. All are inclusive maxima.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Whole frame: command line through the terminating NUL. Heart-beat
    /// EOLs between frames do not count.
    pub max_frame_bytes: usize,
    /// Number of header lines in one frame (repeats count).
    pub max_headers: usize,
    /// Length of the command line or one header line, EOL excluded, before
    /// unescaping.
    pub max_header_line_bytes: usize,
    /// Body length; also the largest acceptable `content-length`.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 4 * 1024 * 1024,
            max_headers: 256,
            max_header_line_bytes: 64 * 1024,
            max_body_bytes: 4 * 1024 * 1024,
        }
    }
}

/// STOMP codec for `tokio_util::codec::Framed`.
///
/// Decodes to [`Item`]s and encodes [`Frame`]s or [`Item`]s. The protocol
/// version (which decides header escaping) starts at 1.2: the handshake
/// frames are never escaped, so that is safe before negotiation, and the
/// broker calls [`set_version`](Self::set_version) once it has negotiated.
/// After a decode error the codec resets to "between frames", but the
/// stream should be considered unusable.
#[derive(Debug)]
pub struct StompCodec {
    limits: Limits,
    version: Version,
    state: State,
}

/// Where the decoder is within the frame at the front of the buffer.
/// Positions are offsets from the start of the buffer, which is always the
/// start of the current frame: heart-beats are consumed as they are
/// returned, and a frame's bytes are only consumed once it is complete.
#[derive(Debug, Default)]
enum State {
    /// Between frames: the next byte is an EOL (heart-beat) or a command.
    #[default]
    Idle,
    /// Reading the command line and header lines.
    Head(Head),
    /// Headers done; waiting for the body and its NUL.
    Body(Body),
}

#[derive(Debug, Default)]
struct Head {
    /// `None` until the command line is complete.
    command: Option<Command>,
    headers: Vec<(String, String)>,
    /// Start of the line being read.
    line_start: usize,
    /// Where the search for `\n` resumes: `line_start..scan` has none.
    scan: usize,
    /// Parsed value of the first `content-length` header, if any.
    content_length: Option<usize>,
    /// Whether a `content-length` header was seen; later ones are ignored
    /// (first occurrence wins), valid or not.
    seen_content_length: bool,
}

#[derive(Debug)]
struct Body {
    command: Command,
    headers: Vec<(String, String)>,
    body_start: usize,
    content_length: Option<usize>,
    /// Where the search for NUL resumes when there is no content-length.
    scan: usize,
}

impl StompCodec {
    /// A codec enforcing `limits`, at version 1.2.
    pub fn new(limits: Limits) -> Self {
        StompCodec {
            limits,
            version: Version::V1_2,
            state: State::Idle,
        }
    }

    /// Sets the negotiated version; affects header escaping in both
    /// directions from the next frame on.
    pub fn set_version(&mut self, v: Version) {
        self.version = v;
    }

    /// The version currently used for escaping.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The limits this codec enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn decode_inner(&mut self, buf: &mut BytesMut) -> Result<Option<Item>, CodecError> {
        loop {
            // Taking the state out leaves `Idle` behind, so any early error
            // return also resets the decoder.
            match std::mem::take(&mut self.state) {
                State::Idle => match buf.first() {
                    None => return Ok(None),
                    Some(b'\n') => {
                        buf.advance(1);
                        return Ok(Some(Item::HeartBeat));
                    }
                    Some(b'\r') => match buf.get(1) {
                        // Could be the first half of a CRLF heart-beat.
                        None => return Ok(None),
                        Some(b'\n') => {
                            buf.advance(2);
                            return Ok(Some(Item::HeartBeat));
                        }
                        // A lone CR starts a (bogus) command line; the
                        // command check will reject it.
                        Some(_) => self.state = State::Head(Head::default()),
                    },
                    Some(_) => self.state = State::Head(Head::default()),
                },
                State::Head(head) => {
                    if let Some(state) = self.advance_head(head, buf)? {
                        self.state = state;
                        continue;
                    }
                    return Ok(None);
                }
                State::Body(body) => return self.advance_body(body, buf),
            }
        }
    }

    /// Consumes complete lines. Returns the next state, or `None` (with the
    /// state saved) when more bytes are needed.
    fn advance_head(
        &mut self,
        mut head: Head,
        buf: &mut BytesMut,
    ) -> Result<Option<State>, CodecError> {
        // A buffer that does not hold what the state describes means the
        // caller switched buffers; start the frame over rather than index
        // out of bounds.
        if head.scan > buf.len() {
            head = Head::default();
        }
        loop {
            let Some((end, next)) = find_line(buf, head.line_start, &mut head.scan, &self.limits)?
            else {
                self.state = State::Head(head);
                return Ok(None);
            };
            let line = &buf[head.line_start..end];
            head.line_start = next;
            let Some(command) = head.command else {
                head.command = Some(parse_command(line)?);
                continue;
            };
            if !line.is_empty() {
                self.header_line(&mut head, command, line)?;
                continue;
            }
            // Blank line: the headers are done.
            let body_start = next;
            if let Some(len) = head.content_length {
                let total = body_start.checked_add(len).and_then(|n| n.checked_add(1));
                let Some(total) = total.filter(|&t| t <= self.limits.max_frame_bytes) else {
                    return Err(CodecError::FrameTooLarge {
                        limit: self.limits.max_frame_bytes,
                    });
                };
                // The frame's size is now known and within limits; make
                // room so the transport can read the rest in big pieces.
                buf.reserve(total.saturating_sub(buf.len()));
            }
            return Ok(Some(State::Body(Body {
                command,
                headers: head.headers,
                body_start,
                content_length: head.content_length,
                scan: body_start,
            })));
        }
    }

    fn header_line(
        &self,
        head: &mut Head,
        command: Command,
        line: &[u8],
    ) -> Result<(), CodecError> {
        if head.headers.len() >= self.limits.max_headers {
            return Err(CodecError::TooManyHeaders {
                limit: self.limits.max_headers,
            });
        }
        // Line 1 is the command, so header i (0-based) is line i + 2.
        let line_no = head.headers.len() + 2;
        let rules = Escaping::for_frame(command, self.version);
        let (name, value) = parse_header(line, line_no, rules)?;
        if name == "content-length" && !head.seen_content_length {
            head.seen_content_length = true;
            head.content_length = Some(parse_content_length(&value, &self.limits)?);
        }
        head.headers.push((name, value));
        Ok(())
    }

    fn advance_body(
        &mut self,
        mut body: Body,
        buf: &mut BytesMut,
    ) -> Result<Option<Item>, CodecError> {
        if body.scan > buf.len() {
            // Caller switched buffers (see advance_head); start over.
            self.state = State::Idle;
            return self.decode_inner(buf);
        }
        let nul = match body.content_length {
            Some(len) => {
                // Cannot overflow: advance_head checked that
                // body_start + len + 1 fits within max_frame_bytes.
                let nul = body.body_start + len;
                let Some(&b) = buf.get(nul) else {
                    self.state = State::Body(body);
                    return Ok(None);
                };
                if b != 0 {
                    return Err(CodecError::MissingNul);
                }
                nul
            }
            None => {
                let limits = &self.limits;
                // Only look as far as the limits allow: a NUL at
                // `max_frame_bytes` or beyond would already be too late.
                let body_limit_end = body
                    .body_start
                    .saturating_add(limits.max_body_bytes)
                    .saturating_add(1);
                let window_end = buf.len().min(limits.max_frame_bytes).min(body_limit_end);
                let from = body.scan.min(window_end);
                match buf[from..window_end].iter().position(|&b| b == 0) {
                    Some(offset) => from + offset,
                    None => {
                        if window_end == limits.max_frame_bytes {
                            return Err(CodecError::FrameTooLarge {
                                limit: limits.max_frame_bytes,
                            });
                        }
                        if window_end == body_limit_end {
                            return Err(CodecError::BodyTooLarge {
                                length: window_end - body.body_start,
                                limit: limits.max_body_bytes,
                            });
                        }
                        body.scan = window_end;
                        self.state = State::Body(body);
                        return Ok(None);
                    }
                }
            }
        };
        // Zero-copy: the body is a view into the frame's own bytes.
        let mut bytes = buf.split_to(nul + 1);
        bytes.advance(body.body_start);
        bytes.truncate(nul - body.body_start);
        Ok(Some(Item::Frame(Frame {
            command: body.command,
            headers: body.headers,
            body: bytes.freeze(),
        })))
    }
}

impl Default for StompCodec {
    fn default() -> Self {
        StompCodec::new(Limits::default())
    }
}

/// Looks for the end of the line starting at `line_start`, resuming the
/// search at `*scan`. Returns `(content_end, next_line_start)` where
/// `content_end` excludes the EOL (`\n` or `\r\n`), or `None` if the line is
/// incomplete. Fails as soon as the line or the frame is known to be too
/// long, searching no further than the line limit allows.
fn find_line(
    buf: &[u8],
    line_start: usize,
    scan: &mut usize,
    limits: &Limits,
) -> Result<Option<(usize, usize)>, CodecError> {
    let max_line = limits.max_header_line_bytes;
    // The latest a `\n` can be: max_line content bytes, then `\r\n`.
    let window_end = buf
        .len()
        .min(line_start.saturating_add(max_line).saturating_add(2));
    let from = (*scan).clamp(line_start, window_end.max(line_start));
    let found = buf
        .get(from..window_end)
        .and_then(|w| w.iter().position(|&b| b == b'\n'));
    if let Some(offset) = found {
        let nl = from + offset;
        let end = if nl > line_start && buf[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        if end - line_start > max_line {
            return Err(CodecError::HeaderLineTooLong { limit: max_line });
        }
        // A line ending here still needs at least a NUL after it.
        if nl + 2 > limits.max_frame_bytes {
            return Err(CodecError::FrameTooLarge {
                limit: limits.max_frame_bytes,
            });
        }
        *scan = nl + 1;
        return Ok(Some((end, nl + 1)));
    }
    *scan = window_end.max(line_start);
    // A trailing CR may be the first half of the EOL, so it does not count
    // towards the line yet.
    let pending = buf.len().saturating_sub(line_start);
    let content = if buf.last() == Some(&b'\r') {
        pending.saturating_sub(1)
    } else {
        pending
    };
    if content > max_line {
        return Err(CodecError::HeaderLineTooLong { limit: max_line });
    }
    // Every buffered byte belongs to this unfinished frame, which still
    // needs at least a NUL.
    if buf.len() >= limits.max_frame_bytes {
        return Err(CodecError::FrameTooLarge {
            limit: limits.max_frame_bytes,
        });
    }
    Ok(None)
}

fn parse_command(line: &[u8]) -> Result<Command, CodecError> {
    Command::parse(line).ok_or_else(|| match std::str::from_utf8(line) {
        Ok(text) => CodecError::UnknownCommand {
            command: echo(text),
        },
        Err(_) => CodecError::InvalidUtf8 { what: "command" },
    })
}

fn parse_header(
    line: &[u8],
    line_no: usize,
    rules: Escaping,
) -> Result<(String, String), CodecError> {
    // Split on the first colon: with escaping, a literal colon in a name or
    // value is `\c`, and without it (1.0) a value may contain raw colons.
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return Err(CodecError::MalformedHeader {
            line_no,
            text: echo_bytes(line),
        });
    };
    if colon == 0 {
        return Err(CodecError::EmptyHeaderName { line_no });
    }
    let name = std::str::from_utf8(&line[..colon]).map_err(|_| CodecError::InvalidUtf8 {
        what: "header name",
    })?;
    let value = std::str::from_utf8(&line[colon + 1..]).map_err(|_| CodecError::InvalidUtf8 {
        what: "header value",
    })?;
    Ok((unescape(name, rules)?, unescape(value, rules)?))
}

fn parse_content_length(value: &str, limits: &Limits) -> Result<usize, CodecError> {
    let invalid = || CodecError::InvalidContentLength { value: echo(value) };
    // `usize::from_str` would accept a leading `+`; the spec wants digits.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let length: usize = value.parse().map_err(|_| invalid())?;
    if length > limits.max_body_bytes {
        return Err(CodecError::BodyTooLarge {
            length,
            limit: limits.max_body_bytes,
        });
    }
    Ok(length)
}

/// Whether `buf` holds nothing but EOL bytes (heart-beats, possibly a
/// half-received CRLF).
fn only_eols(buf: &[u8]) -> bool {
    buf.iter().all(|&b| b == b'\n' || b == b'\r')
}

impl Decoder for StompCodec {
    type Item = Item;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Item>, CodecError> {
        self.decode_inner(buf)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Item>, CodecError> {
        // Heart-beats left at EOF carry no information; a clean close.
        if matches!(self.state, State::Idle) && only_eols(buf) {
            buf.clear();
            return Ok(None);
        }
        match self.decode_inner(buf)? {
            Some(item) => Ok(Some(item)),
            None => {
                // decode_inner made no progress, so the state is mid-frame
                // (or the buffer is empty, handled above).
                self.state = State::Idle;
                Err(CodecError::UnexpectedEof)
            }
        }
    }
}

impl Encoder<Frame> for StompCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_frame(&frame, self.version, dst);
        Ok(())
    }
}

impl Encoder<&Frame> for StompCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_frame(frame, self.version, dst);
        Ok(())
    }
}

impl Encoder<Item> for StompCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Item, dst: &mut BytesMut) -> Result<(), CodecError> {
        match item {
            Item::Frame(frame) => encode_frame(&frame, self.version, dst),
            Item::HeartBeat => dst.extend_from_slice(b"\n"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resumable-scan guarantee behind linear decoding: after a call
    /// that needs more bytes, the saved scan position covers the whole
    /// buffer, so the next call only looks at new bytes.
    #[test]
    fn scan_position_is_saved_between_calls() {
        let mut codec = StompCodec::default();
        let mut buf = BytesMut::from(&b"SEND\nname:val"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        match &codec.state {
            State::Head(h) => {
                assert_eq!(h.command, Some(Command::Send));
                assert_eq!(h.line_start, 5);
                assert_eq!(h.scan, buf.len());
            }
            other => panic!("{other:?}"),
        }
        buf.extend_from_slice(b"ue\n\nbody bytes");
        assert!(codec.decode(&mut buf).unwrap().is_none());
        match &codec.state {
            State::Body(b) => {
                assert_eq!(b.headers, vec![("name".to_owned(), "value".to_owned())]);
                assert_eq!(b.scan, buf.len());
            }
            other => panic!("{other:?}"),
        }
        buf.extend_from_slice(b"!\0");
        let Some(Item::Frame(f)) = codec.decode(&mut buf).unwrap() else {
            panic!()
        };
        assert_eq!(&f.body[..], b"body bytes!");
        assert!(buf.is_empty());
        assert!(matches!(codec.state, State::Idle));
    }

    #[test]
    fn content_length_reserves_room_for_the_frame() {
        let mut codec = StompCodec::default();
        let mut buf = BytesMut::from(&b"SEND\ncontent-length:100000\n\n"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() >= buf.len() + 100_001);
    }

    #[test]
    fn switching_buffers_does_not_panic() {
        let mut codec = StompCodec::default();
        let mut big = BytesMut::from(&b"SEND\nabc:def\n\nsome body"[..]);
        assert!(codec.decode(&mut big).unwrap().is_none());
        let mut small = BytesMut::from(&b"ACK\n\n\0"[..]);
        let item = codec.decode(&mut small).unwrap();
        assert_eq!(item, Some(Item::Frame(Frame::new(Command::Ack))));
    }

    #[test]
    fn errors_reset_the_decoder() {
        let mut codec = StompCodec::default();
        let mut buf = BytesMut::from(&b"SEND\nbad\n\n\0"[..]);
        assert!(codec.decode(&mut buf).is_err());
        assert!(matches!(codec.state, State::Idle));
    }
}
