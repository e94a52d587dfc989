//! Rule-by-rule tests of the decoder (and the codec's encoder side) against
//! the STOMP 1.0/1.1/1.2 framing rules and the configured limits.

mod common;

use bytes::{Bytes, BytesMut};
use common::{Run, run, run_at, run_chunked};
use postbus_stomp::{CodecError, Command, Frame, Item, Limits, StompCodec, Version};
use tokio_util::codec::{Decoder, Encoder};

fn frames(run: &Run) -> Vec<&Frame> {
    run.items
        .iter()
        .filter_map(|i| match i {
            Item::Frame(f) => Some(f),
            Item::HeartBeat => None,
        })
        .collect()
}

/// Decodes input expected to hold exactly one frame and nothing else.
fn one_frame_at(version: Version, input: &[u8]) -> Frame {
    let r = run_at(version, input);
    assert!(r.error.is_none(), "unexpected error {:?}", r.error);
    match r.items.as_slice() {
        [Item::Frame(f)] => f.clone(),
        other => panic!("expected one frame, got {other:?}"),
    }
}

fn one_frame(input: &[u8]) -> Frame {
    one_frame_at(Version::V1_2, input)
}

fn error_at(version: Version, input: &[u8]) -> CodecError {
    run_at(version, input)
        .error
        .unwrap_or_else(|| panic!("expected an error for {:?}", String::from_utf8_lossy(input)))
}

fn error(input: &[u8]) -> CodecError {
    error_at(Version::V1_2, input)
}

fn headers(f: &Frame) -> Vec<(&str, &str)> {
    f.headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

fn small_limits() -> Limits {
    Limits {
        max_frame_bytes: 1000,
        max_headers: 4,
        max_header_line_bytes: 100,
        max_body_bytes: 500,
    }
}

// ---- basic framing -------------------------------------------------------

#[test]
fn decodes_a_simple_frame() {
    let f = one_frame(b"SEND\ndestination:/queue/a\nreceipt:1\n\nhello\0");
    assert_eq!(f.command, Command::Send);
    assert_eq!(headers(&f), [("destination", "/queue/a"), ("receipt", "1")]);
    assert_eq!(f.body, Bytes::from_static(b"hello"));
}

#[test]
fn decodes_every_command() {
    for c in Command::ALL {
        let input = format!("{c}\n\n\0");
        assert_eq!(one_frame(input.as_bytes()), Frame::new(c));
    }
}

#[test]
fn crlf_line_endings() {
    let f = one_frame(b"SEND\r\ndestination:/q\r\na:b\r\n\r\nbody\r\n\0");
    assert_eq!(f.command, Command::Send);
    assert_eq!(headers(&f), [("destination", "/q"), ("a", "b")]);
    // CR/LF inside the body are data.
    assert_eq!(f.body, Bytes::from_static(b"body\r\n"));
}

#[test]
fn mixed_line_endings() {
    let f = one_frame(b"SEND\na:b\r\nc:d\n\r\n\0");
    assert_eq!(headers(&f), [("a", "b"), ("c", "d")]);
}

#[test]
fn cr_in_the_middle_of_a_value_is_kept() {
    let f = one_frame_at(Version::V1_0, b"SEND\na:b\rc\n\n\0");
    assert_eq!(f.header("a"), Some("b\rc"));
}

#[test]
fn value_may_contain_colons_and_be_empty() {
    let f = one_frame(b"SEND\nurl:http://x:80/\nempty:\n\n\0");
    assert_eq!(headers(&f), [("url", "http://x:80/"), ("empty", "")]);
}

#[test]
fn spaces_are_significant() {
    let f = one_frame(b"SEND\n a : b \n\n\0");
    assert_eq!(headers(&f), [(" a ", " b ")]);
}

#[test]
fn several_frames_in_one_buffer() {
    let r = run(b"SEND\n\na\0SEND\n\nb\0ACK\nid:1\n\n\0");
    assert!(r.error.is_none());
    let fs = frames(&r);
    assert_eq!(fs.len(), 3);
    assert_eq!(fs[0].body, Bytes::from_static(b"a"));
    assert_eq!(fs[1].body, Bytes::from_static(b"b"));
    assert_eq!(fs[2].header("id"), Some("1"));
}

#[test]
fn body_without_content_length_ends_at_first_nul() {
    let r = run(b"SEND\n\nab\0cd\n");
    // What follows the NUL is the next frame, with command "cd": rejected.
    assert_eq!(frames(&r)[0].body, Bytes::from_static(b"ab"));
    assert!(matches!(r.error, Some(CodecError::UnknownCommand { .. })));
}

#[test]
fn repeated_headers_first_wins_and_all_are_kept() {
    let f = one_frame(b"MESSAGE\nfoo:World\nfoo:Hello\n\n\0");
    assert_eq!(f.header("foo"), Some("World"));
    assert_eq!(headers(&f), [("foo", "World"), ("foo", "Hello")]);
}

#[test]
fn header_names_are_case_sensitive() {
    let f = one_frame(b"SEND\nFoo:1\n\n\0");
    assert_eq!(f.header("foo"), None);
    assert_eq!(f.header("Foo"), Some("1"));
}

// ---- heart-beats ---------------------------------------------------------

#[test]
fn heart_beats_are_one_item_per_eol() {
    let r = run(b"\n\r\n\nSEND\n\n\0\n\r\n");
    assert!(r.error.is_none());
    let kinds: Vec<bool> = r
        .items
        .iter()
        .map(|i| matches!(i, Item::HeartBeat))
        .collect();
    assert_eq!(kinds, [true, true, true, false, true, true]);
}

#[test]
fn half_crlf_waits_for_more() {
    let mut codec = StompCodec::default();
    let mut buf = BytesMut::from(&b"\r"[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(b"\n");
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(Item::HeartBeat));
    assert!(buf.is_empty());
}

#[test]
fn lone_cr_before_a_command_is_an_unknown_command() {
    assert!(matches!(
        error(b"\rSEND\n\n\0"),
        CodecError::UnknownCommand { command } if command == "\rSEND"
    ));
}

// ---- content-length ------------------------------------------------------

#[test]
fn content_length_body_may_contain_nul() {
    let f = one_frame(b"SEND\ncontent-length:5\n\na\0b\0c\0");
    assert_eq!(f.body, Bytes::from_static(b"a\0b\0c"));
    assert_eq!(f.header("content-length"), Some("5"));
}

#[test]
fn content_length_zero() {
    let f = one_frame(b"SEND\ncontent-length:0\n\n\0");
    assert!(f.body.is_empty());
}

#[test]
fn content_length_with_leading_zeros() {
    let f = one_frame(b"SEND\ncontent-length:003\n\nabc\0");
    assert_eq!(f.body, Bytes::from_static(b"abc"));
}

#[test]
fn content_length_must_be_followed_by_nul() {
    assert!(matches!(
        error(b"SEND\ncontent-length:2\n\nabc\0"),
        CodecError::MissingNul
    ));
}

#[test]
fn first_content_length_wins() {
    let f = one_frame(b"SEND\ncontent-length:3\ncontent-length:1\n\na\0b\0");
    assert_eq!(f.body, Bytes::from_static(b"a\0b"));
    // A later invalid one is ignored too.
    let f = one_frame(b"SEND\ncontent-length:1\ncontent-length:-1\n\na\0");
    assert_eq!(f.body, Bytes::from_static(b"a"));
    // But an invalid first one is an error even if a later one is fine.
    assert!(matches!(
        error(b"SEND\ncontent-length:x\ncontent-length:1\n\na\0"),
        CodecError::InvalidContentLength { value } if value == "x"
    ));
}

#[test]
fn invalid_content_lengths_are_named() {
    for bad in [
        "-1",
        "abc",
        "",
        "+5",
        " 5",
        "5 ",
        "1.0",
        "0x10",
        "99999999999999999999999999",
    ] {
        let input = format!("SEND\ncontent-length:{bad}\n\n\0");
        match error(input.as_bytes()) {
            CodecError::InvalidContentLength { value } => assert_eq!(value, bad),
            other => panic!("{bad:?}: {other:?}"),
        }
        let msg = error(input.as_bytes()).to_string();
        assert!(msg.contains(bad), "{msg}");
    }
}

#[test]
fn content_length_is_escaped_like_any_header() {
    // In 1.2 the value is unescaped before parsing, so "\c" is a colon.
    assert!(matches!(
        error(b"SEND\ncontent-length:1\\c\n\n\0"),
        CodecError::InvalidContentLength { value } if value == "1:"
    ));
}

#[test]
fn content_length_over_body_limit() {
    let input = b"SEND\ncontent-length:501\n\n";
    let mut codec = StompCodec::new(small_limits());
    let r = run_chunked(&mut codec, input, &[]);
    assert!(matches!(
        r.error,
        Some(CodecError::BodyTooLarge {
            length: 501,
            limit: 500
        })
    ));
    // Exactly the limit is fine.
    let mut input = b"SEND\ncontent-length:500\n\n".to_vec();
    input.extend_from_slice(&[7; 500]);
    input.push(0);
    let r = run_chunked(&mut StompCodec::new(small_limits()), &input, &[]);
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(frames(&r)[0].body.len(), 500);
}

// ---- escaping ------------------------------------------------------------

#[test]
fn each_escape_in_1_2() {
    let f = one_frame(b"MESSAGE\nk\\c\\\\:a\\rb\\nc\\cd\\\\e\n\n\0");
    assert_eq!(headers(&f), [("k:\\", "a\rb\nc:d\\e")]);
}

#[test]
fn each_escape_in_1_1() {
    let f = one_frame_at(Version::V1_1, b"MESSAGE\nk\\c:b\\nc\\cd\\\\e\n\n\0");
    assert_eq!(headers(&f), [("k:", "b\nc:d\\e")]);
    // \r is a 1.2 addition.
    assert!(matches!(
        error_at(Version::V1_1, b"MESSAGE\na:\\r\n\n\0"),
        CodecError::InvalidEscape { sequence } if sequence == "\\r"
    ));
}

#[test]
fn no_escaping_in_1_0() {
    let f = one_frame_at(Version::V1_0, b"MESSAGE\na\\c:b\\n\\t\\\n\n\0");
    assert_eq!(headers(&f), [("a\\c", "b\\n\\t\\")]);
}

#[test]
fn no_escaping_in_handshake_frames() {
    for c in ["CONNECT", "STOMP", "CONNECTED"] {
        for v in Version::ALL {
            let input = format!("{c}\nlogin:a\\tb\\c\n\n\0");
            let f = one_frame_at(v, input.as_bytes());
            assert_eq!(f.header("login"), Some("a\\tb\\c"), "{c} {v}");
        }
    }
}

#[test]
fn undefined_escape_is_named() {
    let e = error(b"SEND\na:x\\ty\n\n\0");
    assert!(matches!(&e, CodecError::InvalidEscape { sequence } if sequence == "\\t"));
    assert!(e.to_string().contains("\\t"), "{e}");
    // In names too, and a trailing lone backslash.
    assert!(matches!(
        error(b"SEND\n\\q:x\n\n\0"),
        CodecError::InvalidEscape { .. }
    ));
    assert!(matches!(
        error(b"SEND\na:x\\\n\n\0"),
        CodecError::InvalidEscape { sequence } if sequence == "\\"
    ));
}

#[test]
fn codec_version_switches_escaping() {
    let input = b"MESSAGE\na:\\n\n\n\0";
    let mut codec = StompCodec::default();
    assert_eq!(codec.version(), Version::V1_2);
    let r = run_chunked(&mut codec, input, &[]);
    assert_eq!(frames(&r)[0].header("a"), Some("\n"));
    codec.set_version(Version::V1_0);
    assert_eq!(codec.version(), Version::V1_0);
    let r = run_chunked(&mut codec, input, &[]);
    assert_eq!(frames(&r)[0].header("a"), Some("\\n"));
}

// ---- malformed input -----------------------------------------------------

#[test]
fn header_without_colon() {
    match error(b"SEND\na:1\nnocolon\n\n\0") {
        CodecError::MalformedHeader { line_no, text } => {
            assert_eq!(line_no, 3);
            assert_eq!(text, "nocolon");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_header_text_is_truncated() {
    let mut input = b"SEND\n".to_vec();
    input.extend_from_slice(&[b'x'; 1000]);
    input.extend_from_slice(b"\n\n\0");
    match error(&input) {
        CodecError::MalformedHeader { text, .. } => assert!(text.len() < 100, "{text}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_header_name() {
    assert!(matches!(
        error(b"SEND\n:value\n\n\0"),
        CodecError::EmptyHeaderName { line_no: 2 }
    ));
}

#[test]
fn unknown_command_is_named_and_truncated() {
    assert!(matches!(
        error(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        CodecError::UnknownCommand { command } if command == "GET / HTTP/1.1"
    ));
    assert!(
        matches!(error(b"send\n\n\0"), CodecError::UnknownCommand { command } if command == "send")
    );
    let long = "X".repeat(1000) + "\n\n\0";
    match error(long.as_bytes()) {
        CodecError::UnknownCommand { command } => {
            assert!(command.starts_with(&"X".repeat(64)));
            assert!(command.len() <= 70, "{}", command.len());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_command_is_reported_before_the_frame_ends() {
    let mut codec = StompCodec::default();
    let mut buf = BytesMut::from(&b"BOGUS\nheader:1\n"[..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(CodecError::UnknownCommand { .. })
    ));
}

#[test]
fn invalid_utf8() {
    assert!(matches!(
        error(b"SE\xffND\n\n\0"),
        CodecError::InvalidUtf8 { what: "command" }
    ));
    assert!(matches!(
        error(b"SEND\na\xff:b\n\n\0"),
        CodecError::InvalidUtf8 {
            what: "header name"
        }
    ));
    assert!(matches!(
        error(b"SEND\na:b\xc3\n\n\0"),
        CodecError::InvalidUtf8 {
            what: "header value"
        }
    ));
    // Bodies are bytes: anything goes.
    let f = one_frame(b"SEND\n\n\xff\xfe\0");
    assert_eq!(f.body, Bytes::from_static(b"\xff\xfe"));
    // Non-ASCII UTF-8 headers are fine.
    let f = one_frame("SEND\nnäme:välue ✓\n\n\0".as_bytes());
    assert_eq!(f.header("näme"), Some("välue ✓"));
}

// ---- EOF -----------------------------------------------------------------

#[test]
fn clean_eof() {
    for input in [
        &b""[..],
        b"\n",
        b"\r\n\n",
        b"\r",
        b"SEND\n\n\0",
        b"SEND\n\n\0\n\n",
    ] {
        let mut codec = StompCodec::default();
        let mut buf = BytesMut::from(input);
        // decode_eof alone (no prior decode) must also handle it.
        loop {
            match codec.decode_eof(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(e) => panic!("{input:?}: {e}"),
            }
        }
    }
}

#[test]
fn eof_mid_frame() {
    for input in [
        &b"S"[..],
        b"SEND",
        b"SEND\n",
        b"SEND\na:b\n",
        b"SEND\na:b\n\nbody",
        b"SEND\ncontent-length:10\n\n12345",
        b"SEND\ncontent-length:2\n\nab",
        b"\nSEND\n",
    ] {
        let r = run(input);
        assert!(
            matches!(r.error, Some(CodecError::UnexpectedEof)),
            "{input:?}: {r:?}"
        );
    }
}

// ---- limits, enforced while buffering ------------------------------------

/// Feeds `prefix` then an endless stream of `filler` bytes in 16-byte
/// chunks, and returns the error plus how many bytes had been fed.
fn stream_until_error(limits: Limits, prefix: &[u8], filler: u8) -> (CodecError, usize) {
    let mut input = prefix.to_vec();
    // Far more than any limit used here: the test shows the error comes
    // long before all of it is fed.
    input.resize(prefix.len() + 1_000_000, filler);
    let r = run_chunked(&mut StompCodec::new(limits), &input, &[16]);
    (r.error.expect("expected an error"), r.fed_at_error)
}

#[test]
fn long_header_line_fails_while_buffering() {
    let (e, fed) = stream_until_error(small_limits(), b"SEND\na:", b'x');
    assert!(
        matches!(e, CodecError::HeaderLineTooLong { limit: 100 }),
        "{e:?}"
    );
    assert!(fed <= 5 + 101 + 16, "fed {fed}");
}

#[test]
fn long_command_line_fails_while_buffering() {
    let (e, fed) = stream_until_error(small_limits(), b"", b'S');
    assert!(
        matches!(e, CodecError::HeaderLineTooLong { limit: 100 }),
        "{e:?}"
    );
    assert!(fed <= 101 + 16, "fed {fed}");
}

#[test]
fn header_line_limit_is_inclusive_and_excludes_the_eol() {
    let limits = small_limits();
    let line = format!("a:{}", "v".repeat(98)); // exactly 100 bytes
    for eol in ["\n", "\r\n"] {
        let input = format!("SEND\n{line}{eol}\n\0");
        let r = run_chunked(&mut StompCodec::new(limits), input.as_bytes(), &[1]);
        assert!(r.error.is_none(), "{eol:?}: {:?}", r.error);
        let input = format!("SEND\n{line}v{eol}\n\0");
        let r = run_chunked(&mut StompCodec::new(limits), input.as_bytes(), &[1]);
        assert!(matches!(
            r.error,
            Some(CodecError::HeaderLineTooLong { .. })
        ));
    }
}

#[test]
fn too_many_headers_fails_while_buffering() {
    let limits = small_limits();
    let mut input = b"SEND\n".to_vec();
    for i in 0..1000 {
        input.extend_from_slice(format!("h{i}:v\n").as_bytes());
    }
    let r = run_chunked(&mut StompCodec::new(limits), &input, &[3]);
    assert!(matches!(
        r.error,
        Some(CodecError::TooManyHeaders { limit: 4 })
    ));
    assert!(r.fed_at_error < 60, "fed {}", r.fed_at_error);

    // Exactly the limit is fine, and repeats count.
    let input = b"SEND\na:1\na:2\na:3\na:4\n\n\0";
    let r = run_chunked(&mut StompCodec::new(limits), input, &[]);
    assert!(r.error.is_none());
    let input = b"SEND\na:1\na:2\na:3\na:4\na:5\n\n\0";
    let r = run_chunked(&mut StompCodec::new(limits), input, &[]);
    assert!(matches!(r.error, Some(CodecError::TooManyHeaders { .. })));
}

#[test]
fn frame_too_large_in_headers_fails_while_buffering() {
    let limits = Limits {
        max_frame_bytes: 200,
        max_headers: 1000,
        ..small_limits()
    };
    let mut input = b"SEND\n".to_vec();
    for i in 0..10_000 {
        input.extend_from_slice(format!("h{i}:v\n").as_bytes());
    }
    let r = run_chunked(&mut StompCodec::new(limits), &input, &[7]);
    assert!(matches!(
        r.error,
        Some(CodecError::FrameTooLarge { limit: 200 })
    ));
    assert!(r.fed_at_error <= 200 + 7, "fed {}", r.fed_at_error);
}

#[test]
fn frame_too_large_in_body_fails_while_buffering() {
    let limits = Limits {
        max_frame_bytes: 300,
        ..small_limits()
    };
    let (e, fed) = stream_until_error(limits, b"SEND\n\n", b'x');
    assert!(
        matches!(e, CodecError::FrameTooLarge { limit: 300 }),
        "{e:?}"
    );
    assert!(fed <= 300 + 16, "fed {fed}");
}

#[test]
fn body_too_large_without_content_length_fails_while_buffering() {
    let (e, fed) = stream_until_error(small_limits(), b"SEND\n\n", b'x');
    match e {
        CodecError::BodyTooLarge { length, limit } => {
            assert_eq!(limit, 500);
            assert!(length > 500);
        }
        other => panic!("{other:?}"),
    }
    assert!(fed <= 6 + 501 + 16, "fed {fed}");
}

#[test]
fn content_length_too_large_fails_before_the_body() {
    let mut codec = StompCodec::new(small_limits());
    let mut buf = BytesMut::from(&b"SEND\ncontent-length:1000000000\n"[..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(CodecError::BodyTooLarge {
            length: 1_000_000_000,
            limit: 500
        })
    ));
}

#[test]
fn content_length_over_frame_limit_fails_at_the_blank_line() {
    // The body fits the body limit but headers + body exceed the frame.
    let limits = Limits {
        max_frame_bytes: 520,
        ..small_limits()
    };
    let mut codec = StompCodec::new(limits);
    let mut buf = BytesMut::from(&b"SEND\ncontent-length:500\npad:xxxxxxxxxxxxxxxx\n\n"[..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(CodecError::FrameTooLarge { limit: 520 })
    ));
}

#[test]
fn frame_limit_is_inclusive() {
    let limits = Limits {
        max_frame_bytes: 100,
        ..small_limits()
    };
    for chunks in [&[][..], &[1][..]] {
        // Without content-length: "SEND\n\n" + 93 body bytes + NUL = 100.
        let mut input = b"SEND\n\n".to_vec();
        input.resize(input.len() + 93, b'b');
        input.push(0);
        assert_eq!(input.len(), 100);
        let r = run_chunked(&mut StompCodec::new(limits), &input, chunks);
        assert!(r.error.is_none(), "{:?}", r.error);
        assert_eq!(r.consumed, [100]);
        input.insert(6, b'b');
        let r = run_chunked(&mut StompCodec::new(limits), &input, chunks);
        assert!(matches!(
            r.error,
            Some(CodecError::FrameTooLarge { limit: 100 })
        ));

        // With content-length: 24 bytes of head + 75 body bytes + NUL = 100.
        let mut input = b"SEND\ncontent-length:75\n\n".to_vec();
        input.resize(input.len() + 75, b'b');
        input.push(0);
        assert_eq!(input.len(), 100);
        let r = run_chunked(&mut StompCodec::new(limits), &input, chunks);
        assert!(r.error.is_none(), "{:?}", r.error);
        assert_eq!(r.consumed, [100]);
        let mut input = b"SEND\ncontent-length:76\n\n".to_vec();
        input.resize(input.len() + 76, b'b');
        input.push(0);
        let r = run_chunked(&mut StompCodec::new(limits), &input, chunks);
        assert!(matches!(
            r.error,
            Some(CodecError::FrameTooLarge { limit: 100 })
        ));
        // ... and that error came at the blank line, before any body byte.
        assert!(
            chunks.is_empty() || r.fed_at_error == 24,
            "{}",
            r.fed_at_error
        );
    }
}

#[test]
fn heart_beats_do_not_count_towards_the_frame() {
    let limits = Limits {
        max_frame_bytes: 10,
        ..small_limits()
    };
    let mut input = vec![b'\n'; 1000];
    input.extend_from_slice(b"SEND\n\nabc\0"); // 10 bytes
    let r = run_chunked(&mut StompCodec::new(limits), &input, &[13]);
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(r.items.len(), 1001);
}

#[test]
fn large_body_in_small_chunks_is_fast() {
    // 4 MiB without content-length (the decoder must search for the NUL)
    // arriving in 1 KiB pieces. A decoder that rescans the buffer on every
    // call does ~8 GiB of work here (about 15 s on the 2-core dev machine,
    // measured by breaking the scan position on purpose); the linear one
    // takes a few tens of milliseconds, so 5 s leaves a wide margin both ways.
    let body_len = 4 * 1024 * 1024 - 100;
    let mut input = b"SEND\ndestination:/queue/big\n\n".to_vec();
    input.resize(input.len() + body_len, b'z');
    input.push(0);
    let start = std::time::Instant::now();
    let r = run_chunked(&mut StompCodec::default(), &input, &[1024]);
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(frames(&r)[0].body.len(), body_len);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn large_header_block_in_tiny_chunks() {
    // Many headers fed one byte at a time: also linear.
    let mut input = b"SEND\n".to_vec();
    for i in 0..256 {
        input.extend_from_slice(format!("header-{i}:{}\n", "v".repeat(200)).as_bytes());
    }
    input.extend_from_slice(b"\n\0");
    let r = run_chunked(&mut StompCodec::default(), &input, &[1]);
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(frames(&r)[0].headers.len(), 256);
}

// ---- encoder side of the codec -------------------------------------------

#[test]
fn codec_encodes_items_and_frames() {
    let mut codec = StompCodec::default();
    let mut out = BytesMut::new();
    Encoder::<Item>::encode(&mut codec, Item::HeartBeat, &mut out).unwrap();
    assert_eq!(&out[..], b"\n");

    out.clear();
    let f = Frame::new(Command::Message).with_header("a", "x:y");
    codec.encode(f.clone(), &mut out).unwrap();
    assert_eq!(&out[..], b"MESSAGE\na:x\\cy\n\n\0");

    out.clear();
    codec.set_version(Version::V1_0);
    Encoder::<Item>::encode(&mut codec, Item::Frame(f), &mut out).unwrap();
    assert_eq!(&out[..], b"MESSAGE\na:x:y\n\n\0");
}

#[test]
fn encoded_frames_decode_back() {
    let f = Frame::new(Command::Send)
        .with_header("destination", "/queue/a")
        .with_header("weird\n:\\", "v\r\n:\\")
        .with_body(&b"\0binary\0"[..]);
    let mut codec = StompCodec::default();
    let mut buf = BytesMut::new();
    codec.encode(f.clone(), &mut buf).unwrap();
    let Some(Item::Frame(back)) = codec.decode(&mut buf).unwrap() else {
        panic!()
    };
    let expected = f.with_header("content-length", "8");
    assert_eq!(back, expected);
}

#[test]
fn error_messages_are_single_line_and_lower_case() {
    let inputs: [&[u8]; 8] = [
        b"BAD\r\n\n\0",
        b"SEND\nno colon\r\x01\n\n\0",
        b"SEND\na:\\\x01\n\n\0",
        b"SEND\ncontent-length:\n\n\0",
        b"SEND\ncontent-length:\x7f\n\n\0",
        b"SEND\n:x\n\n\0",
        b"SEND\ncontent-length:1\n\nab",
        b"SEND\n\xff:1\n\n\0",
    ];
    for input in inputs {
        let msg = error(input).to_string();
        assert!(!msg.contains(['\n', '\r', '\0']), "{msg:?}");
        let first = msg.chars().next().unwrap();
        assert!(!first.is_uppercase(), "{msg:?}");
    }
}
