//! Replays every saved fuzz input (`fuzz/corpus/<target>/`, see
//! fuzz/README.md) through the same bodies and invariants the cargo-fuzz
//! targets run (`lanyard::fuzzing`), so stable `cargo test` guards every
//! crash found so far without libFuzzer or nightly.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    // Why a floor: an emptied or moved corpus must fail, not pass vacuously.
    assert!(
        files.len() >= 10,
        "{}: only {} inputs; the corpus is missing",
        dir.display(),
        files.len()
    );
    let mut failed = Vec::new();
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| body(&data))) {
            let why = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("{}: {why}", f.display()));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} {target} inputs break an invariant:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
    println!("{target}: {} inputs replayed", files.len());
}

#[test]
fn authority_corpus() {
    replay("authority", lanyard::fuzzing::authority);
}

#[test]
fn route_match_corpus() {
    replay("route_match", lanyard::fuzzing::route_match);
}

#[test]
fn config_corpus() {
    replay("config", lanyard::fuzzing::config);
}

#[test]
fn request_stream_corpus() {
    replay("request_stream", lanyard::fuzzing::request_stream);
}
