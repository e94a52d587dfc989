//! Fuzz target for the STOMP decoder: arbitrary bytes in arbitrary chunks at every version,
//! within the limits, encode∘decode round trips. The checks live in
//! `postbus_stomp::fuzzing::stomp_decode`, so the stable tests replay the committed corpus
//! through the very same code.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| postbus_stomp::fuzzing::stomp_decode(data));
