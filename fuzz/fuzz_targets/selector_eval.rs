//! Fuzz target for the selector evaluator and SQL translation: arbitrary selectors under
//! arbitrary limits, evaluated against messages built from the input. The checks live in
//! `postbus_selector::fuzzing::selector_eval`, so the stable tests replay the committed corpus
//! through the very same code.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| postbus_selector::fuzzing::selector_eval(data));
