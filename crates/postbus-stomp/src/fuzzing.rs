//! The checks the fuzz targets `stomp_decode` and `stomp_sequence` (fuzz/) run on every input,
//! shared with the stable test that replays the committed corpora (tests/fuzz_corpus.rs), so a
//! machine without a nightly toolchain still runs every corpus file through the same code.
//! Pure: no I/O. Each function panics on a violated property.
//!
//! Input layout, both targets: byte 0 is a configuration byte (which [`Limits`]; for
//! `stomp_sequence` also the consumer's version, the versions the broker supports and whether
//! to run the chaos pass), byte 1 picks how the stream is cut into chunks (0: all at once), and
//! the rest is the byte stream a client sends.
//!
//! What holds for every input:
//! - decoding never panics, however the stream is chunked, and chunking changes nothing: the
//!   same items, each consuming the same bytes, and an error in both runs or in neither;
//! - every decoded frame respects the limits (frame bytes, header count, header line length,
//!   body bytes), its first `content-length` (if any) is its body length, and the buffer never
//!   grows beyond twice what was fed or `max_frame_bytes` (plus a small constant): a declared
//!   `content-length` reserves nothing the limits do not allow;
//! - error messages are one bounded line (the broker copies them into an ERROR frame);
//! - encode∘decode round-trips: the decoded items, encoded at the version they were decoded
//!   at, decode to equal items ([`expected_after_encoding`] says what the encoder normalises:
//!   `content-length`, and what a version without escaping cannot carry).
//!
//! `stomp_sequence` adds the session's handshake (crates/postbus-broker/src/session.rs): the
//! codec starts at 1.2, heart-beats before the first frame are skipped, a first frame that is
//! not CONNECT/STOMP or offers no common version ends the session, otherwise the negotiated
//! version is set with [`StompCodec::set_version`] while the rest of the stream may already be
//! buffered. Decoding the rest after the switch must equal decoding it with a fresh codec at
//! that version; the whole sequence round-trips through a client encoding at the same versions;
//! every frame after CONNECT, relayed as a MESSAGE to a consumer at another version (what the
//! broker does with a SEND's headers), reads back as [`expected_after_encoding`] says. The
//! chaos pass switches the version at every chunk boundary, mid-frame, and checks only that
//! nothing panics and the limits hold.

use bytes::{BufMut, BytesMut};
use tokio_util::codec::Decoder;

use crate::escape::Escaping;
use crate::{CodecError, Command, Frame, Item, Limits, StompCodec, Version, encode_frame};

/// The limits a configuration byte selects (its two low bits): the broker's defaults, or
/// small ones that inputs of a few hundred bytes cross in every way.
pub fn limits(config: u8) -> Limits {
    match config & 3 {
        0 => Limits::default(),
        1 => Limits {
            max_frame_bytes: 128,
            max_headers: 3,
            max_header_line_bytes: 24,
            max_body_bytes: 64,
        },
        2 => Limits {
            max_frame_bytes: 1024,
            max_headers: 8,
            max_header_line_bytes: 128,
            max_body_bytes: 512,
        },
        // A body limit far above the frame limit: a content-length the body limit allows
        // must still be refused (and nothing reserved for it) when the frame cannot hold it.
        _ => Limits {
            max_frame_bytes: 256,
            max_headers: 32,
            max_header_line_bytes: 512,
            max_body_bytes: 1 << 20,
        },
    }
}

/// Chunk sizes for a seed: 0 is the whole stream at once, otherwise a fixed pseudo-random
/// cycle of 16 sizes, of 1 to 3 bytes when the seed's high bit is set, else of 1 to 64.
pub fn chunk_sizes(seed: u8) -> Vec<usize> {
    if seed == 0 {
        return Vec::new();
    }
    let max = if seed & 0x80 != 0 { 3 } else { 64 };
    let mut x = u32::from(seed).wrapping_mul(0x9E37_79B9) | 1;
    (0..16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            1 + x as usize % max
        })
        .collect()
}

/// What one decoding pass produced: each item with the bytes it consumed, and whether the
/// pass ended in a decode error.
struct Run {
    items: Vec<(Item, usize)>,
    failed: bool,
}

/// Feeds `input` in chunks of `sizes` (cycled; empty: all at once), decoding after each as
/// `FramedRead` does, then `decode_eof`. `after` sees each item and may switch the codec's
/// version; it returns false to end the pass (the session closes). `between_chunks` runs
/// after each chunk is buffered and before it is decoded. Checks every item against the
/// codec's limits and the buffer's growth.
fn decode_all(
    codec: &mut StompCodec,
    input: &[u8],
    sizes: &[usize],
    mut after: impl FnMut(&mut StompCodec, &Item) -> bool,
    mut between_chunks: impl FnMut(&mut StompCodec),
) -> Run {
    let limits = *codec.limits();
    let mut run = Run {
        items: Vec::new(),
        failed: false,
    };
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut sizes = sizes.iter().copied().cycle();
    loop {
        let eof = fed == input.len();
        if !eof {
            let n = sizes.next().unwrap_or(input.len()).min(input.len() - fed);
            buf.extend_from_slice(&input[fed..fed + n]);
            fed += n;
            between_chunks(codec);
        }
        loop {
            let before = buf.len();
            let result = if eof {
                codec.decode_eof(&mut buf)
            } else {
                codec.decode(&mut buf)
            };
            // Vec growth at most doubles what was needed, and what is needed is what was
            // fed or one frame within the limit. 64 KiB covers `BytesMut`'s remembered
            // original capacity when it re-allocates a shared buffer.
            let bound = 2 * fed.max(limits.max_frame_bytes) + 64 * 1024;
            assert!(
                buf.capacity() <= bound,
                "buffer capacity {} after {fed} bytes fed, limit {}",
                buf.capacity(),
                limits.max_frame_bytes
            );
            match result {
                Ok(Some(item)) => {
                    let consumed = before - buf.len();
                    check_limits(&item, consumed, &limits);
                    let go_on = after(codec, &item);
                    run.items.push((item, consumed));
                    if !go_on {
                        return run;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    check_error(&e);
                    run.failed = true;
                    return run;
                }
            }
        }
        if eof {
            return run;
        }
    }
}

fn check_limits(item: &Item, consumed: usize, limits: &Limits) {
    let f = match item {
        Item::HeartBeat => {
            assert!(
                consumed == 1 || consumed == 2,
                "a heart-beat consumed {consumed} bytes"
            );
            return;
        }
        Item::Frame(f) => f,
    };
    assert!(
        consumed <= limits.max_frame_bytes,
        "a frame of {consumed} bytes passed the limit {}",
        limits.max_frame_bytes
    );
    assert!(f.headers.len() <= limits.max_headers, "too many headers");
    assert!(f.body.len() <= limits.max_body_bytes, "body over its limit");
    for (name, value) in &f.headers {
        assert!(!name.is_empty(), "empty header name decoded");
        // Unescaping only shrinks, so the raw line's bound holds for the decoded header.
        assert!(
            name.len() + 1 + value.len() <= limits.max_header_line_bytes,
            "header line over its limit"
        );
    }
    match f.header("content-length") {
        Some(len) => assert_eq!(
            len.parse::<usize>().ok(),
            Some(f.body.len()),
            "the first content-length is not the body's length"
        ),
        None => assert!(
            !f.body.contains(&0),
            "a NUL inside a body without content-length"
        ),
    }
}

fn check_error(e: &CodecError) {
    let msg = e.to_string();
    assert!(!msg.contains(['\n', '\r']), "multi-line error {msg:?}");
    assert!(msg.len() <= 1024, "unbounded error message {msg:?}");
}

/// What `encode_frame` then the decoder make of a header name or value under `rules`:
/// 1.2 carries everything; 1.1 and no escaping (1.0, CONNECT/STOMP/CONNECTED) write CR raw,
/// so a value's last CR is read as part of the line's CRLF; without escaping a newline (and
/// in a name a colon) cannot be written and becomes a space.
fn written(s: &str, rules: Escaping, is_name: bool) -> String {
    let mut out = match rules {
        Escaping::V1_2 => return s.to_owned(),
        Escaping::V1_1 => s.to_owned(),
        Escaping::None if is_name => s.replace(['\n', ':'], " "),
        Escaping::None => s.replace('\n', " "),
    };
    if !is_name && out.ends_with('\r') {
        out.pop();
    }
    out
}

/// The frame the decoder returns for `f` encoded at `version`: the encoder's
/// `content-length` rule (the first one made right, later ones dropped, one added for a
/// non-empty body) and [`written`] applied to every other header.
pub fn expected_after_encoding(f: &Frame, version: Version) -> Frame {
    const CONTENT_LENGTH: &str = "content-length";
    let rules = Escaping::for_frame(f.command, version);
    let length = f.body.len().to_string();
    let mut out = Frame::new(f.command).with_body(f.body.clone());
    let mut have_length = false;
    for (name, value) in &f.headers {
        if name == CONTENT_LENGTH {
            if !have_length {
                have_length = true;
                out.push_header(CONTENT_LENGTH, length.clone());
            }
            continue;
        }
        out.push_header(written(name, rules, true), written(value, rules, false));
    }
    if !have_length && !f.body.is_empty() {
        out.push_header(CONTENT_LENGTH, length);
    }
    out
}

/// Encodes `items`, each at its version, into one stream, decodes it with a codec switching
/// to each item's version before reading it, and checks every item reads back as expected.
fn round_trip(items: &[(&Item, Version)]) {
    let mut wire = BytesMut::new();
    for (item, version) in items {
        match item {
            Item::HeartBeat => wire.put_u8(b'\n'),
            Item::Frame(f) => encode_frame(f, *version, &mut wire),
        }
    }
    // Escaping can lengthen a header past the limits it was decoded under; a peer reading
    // the encoded form needs room for it.
    let room = wire.len() + 1;
    let mut codec = StompCodec::new(Limits {
        max_frame_bytes: room,
        max_headers: room,
        max_header_line_bytes: room,
        max_body_bytes: room,
    });
    let mut buf = wire.clone();
    for (item, version) in items {
        codec.set_version(*version);
        let got = match codec.decode(&mut buf) {
            Ok(Some(got)) => got,
            other => panic!("{item:?} encoded at {version} as {wire:?} decodes to {other:?}"),
        };
        let want = match item {
            Item::HeartBeat => Item::HeartBeat,
            Item::Frame(f) => Item::Frame(expected_after_encoding(f, *version)),
        };
        assert_eq!(got, want, "encoded at {version} as {wire:?}");
    }
    assert!(buf.is_empty(), "bytes left after the last item: {buf:?}");
}

/// The `stomp_decode` target: arbitrary bytes at every version, whole and chunked.
pub fn stomp_decode(data: &[u8]) {
    let [config, seed, stream @ ..] = data else {
        return;
    };
    let limits = limits(*config);
    let sizes = chunk_sizes(*seed);
    for version in Version::ALL {
        let pass = |sizes: &[usize]| {
            let mut codec = StompCodec::new(limits);
            codec.set_version(version);
            decode_all(&mut codec, stream, sizes, |_, _| true, |_| {})
        };
        let whole = pass(&[]);
        let chunked = pass(&sizes);
        assert_eq!(whole.items, chunked.items, "chunking changed the items");
        assert_eq!(whole.failed, chunked.failed, "chunking changed the outcome");
        let items: Vec<(&Item, Version)> = whole.items.iter().map(|(i, _)| (i, version)).collect();
        round_trip(&items);
    }
}

/// The versions a broker supports, from three bits (0: all of them, as postbus does).
fn supported(bits: u8) -> Vec<Version> {
    let all = Version::ALL.to_vec();
    match bits & 7 {
        0 => all,
        b => all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| b & (1 << i) != 0)
            .map(|(_, v)| v)
            .collect(),
    }
}

/// The `stomp_sequence` target: a client's byte stream through the session's handshake and
/// version switch, then relayed to a consumer. See the module documentation.
pub fn stomp_sequence(data: &[u8]) {
    let [config, seed, stream @ ..] = data else {
        return;
    };
    let limits = limits(*config);
    let consumer = Version::ALL[usize::from((config >> 2) & 3) % 3];
    let supported = supported(config >> 4);
    let chaos = config & 0x80 != 0;
    let sizes = chunk_sizes(*seed);

    let mut negotiated: Option<(Version, usize)> = None;
    let mut codec = StompCodec::new(limits);
    let mut index = 0;
    let run = decode_all(
        &mut codec,
        stream,
        &sizes,
        |codec, item| {
            index += 1;
            if negotiated.is_some() {
                return true;
            }
            let Item::Frame(first) = item else {
                return true;
            };
            if !matches!(first.command, Command::Connect | Command::Stomp) {
                return false;
            }
            let offer = first.header("accept-version");
            let Some(version) = crate::negotiate_version(offer, &supported) else {
                return false;
            };
            assert!(supported.contains(&version), "negotiated {version}");
            match offer {
                None => assert_eq!(version, Version::V1_0, "no accept-version means 1.0"),
                Some(list) => assert!(
                    list.split(',').any(|v| v.trim() == version.as_str()),
                    "negotiated {version}, not in {list:?}"
                ),
            }
            codec.set_version(version);
            negotiated = Some((version, index));
            true
        },
        |_| {},
    );

    // The versions each item was decoded at: 1.2 up to the CONNECT, then the negotiated one.
    let (version, connect_items) = negotiated.unwrap_or((Version::V1_2, run.items.len()));
    let versions: Vec<(&Item, Version)> = run
        .items
        .iter()
        .enumerate()
        .map(|(i, (item, _))| {
            (
                item,
                if i < connect_items {
                    Version::V1_2
                } else {
                    version
                },
            )
        })
        .collect();
    round_trip(&versions);

    if negotiated.is_some() {
        // The switch leaves nothing behind: the rest of the stream decodes the same with a
        // fresh codec at the negotiated version.
        let offset: usize = run.items[..connect_items].iter().map(|(_, n)| n).sum();
        let mut fresh = StompCodec::new(limits);
        fresh.set_version(version);
        let rest = decode_all(&mut fresh, &stream[offset..], &[], |_, _| true, |_| {});
        assert_eq!(
            rest.items,
            run.items[connect_items..],
            "the version switch changed how the rest decodes"
        );
        assert_eq!(
            rest.failed, run.failed,
            "the version switch changed the outcome"
        );

        // What the broker relays: each later frame's headers and body in a MESSAGE for a
        // consumer that negotiated another version.
        for (item, _) in &run.items[connect_items..] {
            if let Item::Frame(f) = item {
                let relayed = Item::Frame(Frame {
                    command: Command::Message,
                    headers: f.headers.clone(),
                    body: f.body.clone(),
                });
                round_trip(&[(&relayed, consumer)]);
            }
        }
    }

    if chaos {
        let mut codec = StompCodec::new(limits);
        let mut turn = 0;
        decode_all(
            &mut codec,
            stream,
            &sizes,
            |_, _| true,
            |codec| {
                turn += 1;
                codec.set_version(Version::ALL[turn % 3]);
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_fixed_per_seed_and_in_range() {
        assert!(chunk_sizes(0).is_empty());
        assert_eq!(chunk_sizes(7), chunk_sizes(7));
        assert!(chunk_sizes(0x81).iter().all(|&n| (1..=3).contains(&n)));
        assert!(chunk_sizes(5).iter().all(|&n| (1..=64).contains(&n)));
        assert!(chunk_sizes(5).iter().any(|&n| n > 3));
    }

    #[test]
    fn expected_frames_follow_the_encoder() {
        let f = Frame::new(Command::Send)
            .with_header("content-length", "007")
            .with_header("a:b", "x\ny\r")
            .with_header("content-length", "1")
            .with_body("abcdefg");
        let want = |h: &[(&str, &str)]| {
            let mut g = Frame::new(Command::Send).with_body("abcdefg");
            for (n, v) in h {
                g.push_header(*n, *v);
            }
            g
        };
        assert_eq!(
            expected_after_encoding(&f, Version::V1_2),
            want(&[("content-length", "7"), ("a:b", "x\ny\r")])
        );
        assert_eq!(
            expected_after_encoding(&f, Version::V1_1),
            want(&[("content-length", "7"), ("a:b", "x\ny")])
        );
        assert_eq!(
            expected_after_encoding(&f, Version::V1_0),
            want(&[("content-length", "7"), ("a b", "x y")])
        );
    }

    #[test]
    fn a_relayed_frame_reads_back_at_every_version() {
        let f = Item::Frame(
            Frame::new(Command::Message)
                .with_header("k\\:\r", "v\r\n:\\\r")
                .with_body(&b"a\0b"[..]),
        );
        for v in Version::ALL {
            round_trip(&[(&f, v), (&Item::HeartBeat, v)]);
        }
    }
}
