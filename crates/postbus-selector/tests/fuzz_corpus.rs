//! Replays every committed fuzz corpus file (fuzz/corpus/selector_parse) through the fuzz
//! target's checks, so CI exercises them on a stable toolchain. Running the fuzzer itself:
//! `cargo +nightly fuzz run selector_parse -- -max_total_time=60` in fuzz/.

#[test]
fn committed_corpus_passes_the_fuzz_checks() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/selector_parse");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the committed corpus") {
        let path = entry.unwrap().path();
        postbus_selector::fuzzing::check(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 10, "expected the committed seeds, found {n}");
}
