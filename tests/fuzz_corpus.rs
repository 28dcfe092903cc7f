//! Replays the fuzzing corpus (fuzz/corpus/<target>/) through the same
//! entry points the fuzz targets use, so that every input that ever found a
//! bug, and the seeds, stay covered by `cargo test`.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        // A running fuzzer may replace files while we read the folder.
        let Ok(data) = std::fs::read(&path) else {
            continue;
        };
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{} fails", path.display());
        n += 1;
    }
    assert!(n >= 10, "only {n} inputs in {}", dir.display());
}

#[test]
fn image_ref_corpus() {
    replay("image_ref", image_bouncer::fuzzing::image_ref);
}

#[test]
fn http_request_corpus() {
    replay("http_request", image_bouncer::fuzzing::http_request);
}

#[test]
fn review_corpus() {
    replay("review", image_bouncer::fuzzing::review);
}
