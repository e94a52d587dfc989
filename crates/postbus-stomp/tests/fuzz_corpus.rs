//! Replays every committed fuzz input (fuzz/corpus/<target>/ and fuzz/regressions/<target>/)
//! through the fuzz targets' own checks in `postbus_stomp::fuzzing`, so a stable toolchain
//! runs them too. Running the fuzzer itself: `ops/scripts/fuzz.sh` (needs nightly).

use std::path::{Path, PathBuf};

/// Runs `check` on every file of the target's corpus (which must hold at least `min_seeds`
/// files) and regressions (which may be absent), and names every file that fails.
fn replay(target: &str, min_seeds: usize, check: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let files = |dir: PathBuf, required: bool| -> Vec<PathBuf> {
        match std::fs::read_dir(&dir) {
            Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
            Err(e) if !required => {
                assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{}", dir.display());
                Vec::new()
            }
            Err(e) => panic!("{}: {e}", dir.display()),
        }
    };
    let corpus = files(fuzz.join("corpus").join(target), true);
    assert!(
        corpus.len() >= min_seeds,
        "expected at least {min_seeds} committed inputs for {target}, found {}",
        corpus.len()
    );
    let regressions = files(fuzz.join("regressions").join(target), false);
    let failed: Vec<String> = corpus
        .iter()
        .chain(&regressions)
        .filter(|path| {
            let data = std::fs::read(path).unwrap();
            std::panic::catch_unwind(|| check(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target}: failing inputs {failed:#?}");
}

#[test]
fn stomp_decode_corpus_passes() {
    replay("stomp_decode", 20, postbus_stomp::fuzzing::stomp_decode);
}

#[test]
fn stomp_sequence_corpus_passes() {
    replay("stomp_sequence", 20, postbus_stomp::fuzzing::stomp_sequence);
}
