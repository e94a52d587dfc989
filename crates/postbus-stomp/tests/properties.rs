//! Property tests: encode/decode round-trips for arbitrary frames fed in
//! arbitrary chunks, and robustness of the decoder on arbitrary input.

mod common;

use common::run_chunked;
use postbus_stomp::{Command, Frame, Item, Limits, StompCodec, Version, encode_frame};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    }
}

/// Characters worth over-sampling: the ones escaping and framing care about.
const SPECIAL: &[char] = &[':', '\n', '\r', '\\', '\0', 'c', 'n', 'r', ' ', 'é'];

fn text(min: usize) -> impl Strategy<Value = String> {
    let ch = prop_oneof![any::<char>(), prop::sample::select(SPECIAL)];
    prop::collection::vec(ch, min..12).prop_map(String::from_iter)
}

fn command() -> impl Strategy<Value = Command> {
    prop::sample::select(Command::ALL.to_vec())
}

fn version() -> impl Strategy<Value = Version> {
    prop::sample::select(Version::ALL.to_vec())
}

/// Whether `s` survives encoding at `version` for `command` unchanged.
/// 1.2 escapes everything that matters; 1.1 cannot escape CR (a CR at the
/// end of a line is read as part of the EOL), and without escaping at all
/// a newline cannot be written (and a colon would split a name).
fn representable(s: &str, is_name: bool, command: Command, version: Version) -> bool {
    let escaped = !matches!(
        command,
        Command::Connect | Command::Stomp | Command::Connected
    );
    match (escaped, version) {
        (true, Version::V1_2) => true,
        (true, Version::V1_1) => !s.contains('\r'),
        _ => {
            let forbidden: &[char] = if is_name {
                &['\n', '\r', ':']
            } else {
                &['\n', '\r']
            };
            !s.contains(forbidden)
        }
    }
}

prop_compose! {
    fn frame()(
        command in command(),
        version in version(),
        raw_headers in prop::collection::vec((text(1), text(0)), 0..8),
        body in prop::collection::vec(any::<u8>(), 0..300),
    ) -> (Version, Frame) {
        let mut f = Frame::new(command).with_body(body);
        for (name, value) in raw_headers {
            // The encoder owns content-length; see expected() for its rule.
            if name != "content-length"
                && representable(&name, true, command, version)
                && representable(&value, false, command, version)
            {
                f.push_header(name, value);
            }
        }
        (version, f)
    }
}

/// What the decoder should return for `f` after encoding: the same frame,
/// plus the content-length header the encoder adds for a non-empty body.
fn expected(f: &Frame) -> Frame {
    let mut f = f.clone();
    if !f.body.is_empty() {
        let len = f.body.len().to_string();
        f.push_header("content-length", len);
    }
    f
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        Just(vec![]),
        prop::collection::vec(1usize..64, 1..16),
        prop::collection::vec(1usize..4, 1..4),
    ]
}

proptest! {
    // The default regression-file location is found via a lib.rs/main.rs
    // next to the source, which integration tests lack; store failures
    // beside this file instead (tests/properties.proptest-regressions).
    #![proptest_config(config())]

    #[test]
    fn round_trip_single_frame((version, f) in frame(), chunks in chunk_sizes()) {
        let mut wire = bytes::BytesMut::new();
        encode_frame(&f, version, &mut wire);
        let mut codec = StompCodec::default();
        codec.set_version(version);
        let r = run_chunked(&mut codec, &wire, &chunks);
        prop_assert!(r.error.is_none(), "error {:?} for {:?}", r.error, wire);
        prop_assert_eq!(r.items, vec![Item::Frame(expected(&f))]);
        prop_assert_eq!(r.consumed, vec![wire.len()]);
    }

    #[test]
    fn round_trip_stream(
        version in version(),
        items in prop::collection::vec(
            prop_oneof![
                1 => Just(None),
                3 => frame().prop_map(|(_, f)| Some(f)),
            ],
            0..6,
        ),
        crlf_beats in any::<bool>(),
        chunks in chunk_sizes(),
    ) {
        // Frames were generated for random versions; keep those that this
        // stream's version can carry.
        let items: Vec<Item> = items
            .into_iter()
            .filter_map(|i| match i {
                None => Some(Item::HeartBeat),
                Some(f) => f
                    .headers
                    .iter()
                    .all(|(n, v)| {
                        representable(n, true, f.command, version)
                            && representable(v, false, f.command, version)
                    })
                    .then_some(Item::Frame(f)),
            })
            .collect();
        let mut wire = bytes::BytesMut::new();
        for item in &items {
            match item {
                Item::HeartBeat if crlf_beats => wire.extend_from_slice(b"\r\n"),
                Item::HeartBeat => wire.extend_from_slice(b"\n"),
                Item::Frame(f) => encode_frame(f, version, &mut wire),
            }
        }
        let mut codec = StompCodec::default();
        codec.set_version(version);
        let r = run_chunked(&mut codec, &wire, &chunks);
        prop_assert!(r.error.is_none(), "error {:?}", r.error);
        // Heart-beats at the very end are swallowed by decode_eof only when
        // nothing called decode first; run_chunked always decodes first.
        let want: Vec<Item> = items
            .iter()
            .map(|i| match i {
                Item::Frame(f) => Item::Frame(expected(f)),
                Item::HeartBeat => Item::HeartBeat,
            })
            .collect();
        prop_assert_eq!(r.items, want);
    }
}

// ---- arbitrary input -----------------------------------------------------

/// Small enough that generated input crosses every limit regularly.
fn tiny_limits() -> Limits {
    Limits {
        max_frame_bytes: 96,
        max_headers: 4,
        max_header_line_bytes: 24,
        max_body_bytes: 64,
    }
}

/// Something shaped like a frame, often valid, often subtly not: a command,
/// some header lines, maybe a content-length (right or wrong), a blank
/// line, a body and (usually) a NUL.
fn frame_like() -> impl Strategy<Value = Vec<u8>> {
    let command = prop_oneof![
        8 => prop::sample::select(vec![&b"SEND\n"[..], b"MESSAGE\r\n", b"CONNECT\n", b"ACK\n"]),
        1 => prop::sample::select(vec![&b"send\n"[..], b"\rSEND\n", b"SEND", b"\r"]),
    ];
    let header = prop_oneof![
        8 => prop::sample::select(vec![
            &b"a:b\n"[..],
            b"h:v\r\n",
            b"a:b:c\n",
            b"x:\\n\\c\\\\\\r\n",
            b"y:\\\\t\n",
            b"content-length:0\n",
            b"k:xxxxxxxxxxxxxxxxxxxxx\n",
        ]),
        1 => prop::sample::select(vec![
            &b"bad\\t:v\n"[..],
            b"trailing:\\\n",
            b"content-length:-1\n",
            b"content-length:99999999999999999999999\n",
            b"long:xxxxxxxxxxxxxxxxxxxxxxxx\n",
            b"nocolon\n",
            b":empty\n",
            b"\xff:v\n",
        ]),
    ];
    (
        command,
        prop::collection::vec(header, 0..5),
        prop::option::weighted(0.4, 0usize..6),
        prop::sample::select(vec![&b"\n"[..], b"\r\n"]),
        prop::collection::vec(prop_oneof![6 => b'a'..=b'z', 1 => any::<u8>()], 0..80),
        prop::sample::select(vec![&b"\0"[..], b"\0", b"\0\n", b""]),
    )
        .prop_map(|(c, hs, length_skew, blank, body, end)| {
            let mut out = c.to_vec();
            if let Some(skew) = length_skew {
                // Usually the exact length, sometimes one too many or few.
                let len = match skew {
                    0 => body.len() + 1,
                    1 => body.len().saturating_sub(1),
                    _ => body.len(),
                };
                out.extend_from_slice(format!("content-length:{len}\n").as_bytes());
            }
            for h in hs {
                out.extend_from_slice(h);
            }
            out.extend_from_slice(blank);
            out.extend_from_slice(&body);
            out.extend_from_slice(end);
            out
        })
}

/// A stream of frame-like pieces, heart-beats and junk, so the decoder gets
/// past the command line often enough to exercise headers and bodies.
fn soup() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        6 => frame_like(),
        1 => prop::collection::vec(any::<u8>(), 0..8),
        2 => prop::sample::select(vec![&b"\n"[..], b"\r\n", b"\n\n\n"]).prop_map(|s| s.to_vec()),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|v| v.concat())
}

proptest! {
    // The default regression-file location is found via a lib.rs/main.rs
    // next to the source, which integration tests lack; store failures
    // beside this file instead (tests/properties.proptest-regressions).
    #![proptest_config(config())]

    #[test]
    fn arbitrary_input_respects_limits(
        input in prop_oneof![4 => soup(), 1 => prop::collection::vec(any::<u8>(), 0..400)],
        chunks in chunk_sizes(),
        version in version(),
    ) {
        let limits = tiny_limits();
        let mut codec = StompCodec::new(limits);
        codec.set_version(version);
        let r = run_chunked(&mut codec, &input, &chunks);
        for (item, consumed) in r.items.iter().zip(&r.consumed) {
            match item {
                Item::HeartBeat => prop_assert!(*consumed <= 2),
                Item::Frame(f) => {
                    prop_assert!(*consumed <= limits.max_frame_bytes);
                    prop_assert!(f.headers.len() <= limits.max_headers);
                    prop_assert!(f.body.len() <= limits.max_body_bytes);
                    for (n, v) in &f.headers {
                        // Unescaping only shrinks, so the raw line bound holds.
                        prop_assert!(n.len() + 1 + v.len() <= limits.max_header_line_bytes);
                        prop_assert!(!n.is_empty());
                    }
                }
            }
        }
        if let Some(e) = &r.error {
            let msg = e.to_string();
            prop_assert!(!msg.contains(['\n', '\r']), "{msg:?}");
            prop_assert!(msg.len() < 200, "{msg:?}");
        }

        // Chunking must not change the outcome.
        let mut whole = StompCodec::new(limits);
        whole.set_version(version);
        let w = run_chunked(&mut whole, &input, &[]);
        prop_assert_eq!(&r.items, &w.items);
        prop_assert_eq!(r.error.is_some(), w.error.is_some());
    }

    #[test]
    fn decoded_frames_re_encode_to_equivalent_frames(input in soup(), version in version()) {
        // Whatever the decoder accepts, the encoder can write back and the
        // decoder reads the same frame (content-length normalised).
        let mut codec = StompCodec::new(tiny_limits());
        codec.set_version(version);
        let r = run_chunked(&mut codec, &input, &[]);
        for item in r.items {
            let Item::Frame(f) = item else { continue };
            let mut wire = bytes::BytesMut::new();
            encode_frame(&f, version, &mut wire);
            let mut again = StompCodec::default();
            again.set_version(version);
            let back = run_chunked(&mut again, &wire, &[]);
            prop_assert!(back.error.is_none(), "{:?} from {:?}", back.error, wire);
            let [Item::Frame(g)] = back.items.as_slice() else {
                return Err(TestCaseError::fail(format!("{:?}", back.items)));
            };
            prop_assert_eq!(g.command, f.command);
            prop_assert_eq!(&g.body, &f.body);
            let strip = |h: &[(String, String)]| -> Vec<(String, String)> {
                h.iter().filter(|(n, _)| n != "content-length").cloned().collect()
            };
            prop_assert_eq!(strip(&g.headers), strip(&f.headers));
        }
    }
}
