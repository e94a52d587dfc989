//! Fuzz target for the policy loader: arbitrary TOML policy files, and decisions on arbitrary
//! requests for those that load. The checks live in `postbus_auth::fuzzing::policy_load`, so
//! the stable tests replay the committed corpus through the very same code.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| postbus_auth::fuzzing::policy_load(data));
