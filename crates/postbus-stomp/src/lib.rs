//! `postbus-stomp`: a pure (no I/O) STOMP 1.0/1.1/1.2 frame codec.
//!
//! The crate turns bytes into [`Item`]s (frames and heart-beats) and frames
//! back into bytes, following <https://stomp.github.io/stomp-specification-1.2.html>.
//! It never touches a socket: [`StompCodec`] implements `tokio_util`'s
//! [`Decoder`](tokio_util::codec::Decoder) and [`Encoder`](tokio_util::codec::Encoder)
//! so the broker can wrap any transport with `Framed`.
//!
//! Decoding is hostile-input safe: every size limit in [`Limits`] is enforced
//! while bytes are still being buffered, and total decoding work is linear in
//! the number of bytes received, however they are chunked.
//!
//! ```
//! use bytes::BytesMut;
//! use postbus_stomp::{Command, Frame, Item, Limits, StompCodec, Version, negotiate_version};
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! let mut codec = StompCodec::new(Limits::default());
//! let mut input = BytesMut::from(&b"CONNECT\naccept-version:1.1,1.2\nhost:/\n\n\0\n"[..]);
//! let Some(Item::Frame(connect)) = codec.decode(&mut input)? else { unreachable!() };
//! let version = negotiate_version(connect.header("accept-version"), &Version::ALL).unwrap();
//! codec.set_version(version);
//! assert_eq!(codec.decode(&mut input)?, Some(Item::HeartBeat));
//!
//! let mut output = BytesMut::new();
//! let connected = Frame::new(Command::Connected).with_header("version", version.as_str());
//! codec.encode(connected, &mut output)?;
//! assert_eq!(&output[..], b"CONNECTED\nversion:1.2\n\n\0");
//! # Ok::<(), postbus_stomp::CodecError>(())
//! ```

mod codec;
mod command;
mod encode;
mod error;
mod escape;
mod frame;
pub mod fuzzing;

pub use codec::{Limits, StompCodec};
pub use command::{Command, Version, negotiate_version};
pub use encode::encode_frame;
pub use error::CodecError;
pub use frame::{Frame, Item};
