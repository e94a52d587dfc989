//! Fuzz target for frame sequences: the session's handshake and version switch, and frames
//! relayed to a consumer at another version. The checks live in
//! `postbus_stomp::fuzzing::stomp_sequence`, so the stable tests replay the committed corpus
//! through the very same code.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| postbus_stomp::fuzzing::stomp_sequence(data));
