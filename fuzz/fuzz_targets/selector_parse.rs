//! Fuzz target for the selector parser: the checks live in
//! `postbus_selector::fuzzing::selector_parse`, so the stable tests replay the committed corpus
//! through the very same code.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| postbus_selector::fuzzing::selector_parse(data));
