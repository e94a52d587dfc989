//! Helpers shared by the integration tests: drive a `StompCodec` over a byte
//! string the way `tokio_util`'s `FramedRead` would, whole or in chunks.

#![allow(dead_code)] // each test binary uses a different subset

use bytes::BytesMut;
use postbus_stomp::{CodecError, Item, Limits, StompCodec, Version};
use tokio_util::codec::Decoder;

/// What a decode run produced: the items, then the error that stopped it,
/// if any, plus how many input bytes had been fed when the error came.
#[derive(Debug)]
pub struct Run {
    pub items: Vec<Item>,
    pub error: Option<CodecError>,
    pub fed_at_error: usize,
    /// Bytes consumed from the buffer by each item, in order.
    pub consumed: Vec<usize>,
}

/// Feeds `input` in chunks whose sizes cycle through `chunks` (all-zero or
/// empty means one chunk), decoding after each, then signals EOF.
pub fn run_chunked(codec: &mut StompCodec, input: &[u8], chunks: &[usize]) -> Run {
    let mut run = Run {
        items: Vec::new(),
        error: None,
        fed_at_error: 0,
        consumed: Vec::new(),
    };
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut sizes = chunks.iter().copied().filter(|&c| c > 0).cycle();
    while fed < input.len() {
        let n = sizes.next().unwrap_or(input.len()).min(input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(item)) => {
                    run.consumed.push(before - buf.len());
                    run.items.push(item);
                }
                Ok(None) => break,
                Err(e) => {
                    run.error = Some(e);
                    run.fed_at_error = fed;
                    return run;
                }
            }
        }
    }
    loop {
        let before = buf.len();
        match codec.decode_eof(&mut buf) {
            Ok(Some(item)) => {
                run.consumed.push(before - buf.len());
                run.items.push(item);
            }
            Ok(None) => break,
            Err(e) => {
                run.error = Some(e);
                run.fed_at_error = fed;
                break;
            }
        }
    }
    run
}

/// Decodes all of `input` at once with default limits at `version`.
pub fn run_at(version: Version, input: &[u8]) -> Run {
    let mut codec = StompCodec::new(Limits::default());
    codec.set_version(version);
    run_chunked(&mut codec, input, &[])
}

/// Decodes all of `input` at once with default limits at 1.2.
pub fn run(input: &[u8]) -> Run {
    run_at(Version::V1_2, input)
}
