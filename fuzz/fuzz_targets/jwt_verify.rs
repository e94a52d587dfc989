//! Fuzz target for JWT header and claims parsing: arbitrary tokens, and tokens built from the
//! input that carry alg none, an unknown algorithm, a path-like kid or a key-carrying header
//! (all refused). The checks live in `postbus_auth::fuzzing::jwt_verify`, so the stable tests
//! replay the committed corpus through the very same code.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| postbus_auth::fuzzing::jwt_verify(data));
