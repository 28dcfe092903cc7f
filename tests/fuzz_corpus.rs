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

#[test]
fn oci_manifest_corpus() {
    replay("oci_manifest", image_bouncer::fuzzing::oci_manifest);
}

#[test]
fn registry_auth_corpus() {
    replay("registry_auth", image_bouncer::fuzzing::registry_auth);
}

#[test]
fn docker_config_corpus() {
    replay("docker_config", image_bouncer::fuzzing::docker_config);
}

#[test]
fn bundle_corpus() {
    replay("bundle", image_bouncer::fuzzing::bundle);
}

#[test]
fn dsse_statement_corpus() {
    replay("dsse_statement", image_bouncer::fuzzing::dsse_statement);
}

#[test]
fn der_certificate_corpus() {
    replay("der_certificate", image_bouncer::fuzzing::der_certificate);
}

#[test]
fn rfc3161_corpus() {
    replay("rfc3161", image_bouncer::fuzzing::rfc3161);
}

#[test]
fn rekor_corpus() {
    replay("rekor", image_bouncer::fuzzing::rekor);
}

#[test]
fn trusted_root_corpus() {
    replay("trusted_root", image_bouncer::fuzzing::trusted_root);
}
