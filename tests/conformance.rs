//! The sigstore-conformance verification suite (tests/fixtures/sigstore/
//! conformance, 70 cases, unchanged), run through `image-bouncer
//! verify-bundle` as the suite's own client protocol drives a client: each
//! case read by the suite's rules (its README: default artifact, identity,
//! issuer and trusted root, each overridden by the case's files), verified
//! with the artifact file and with its `sha256:` digest; `_fail` must be
//! refused, the rest verified. Every case must agree, in both modes.

use std::path::Path;
use std::process::Command;

const IDENTITY: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const ISSUER: &str = "https://token.actions.githubusercontent.com";

fn verify(case: &Path, artifact: &str) -> (bool, String) {
    let root = if case.join("trusted_root.json").exists() {
        case.join("trusted_root.json")
    } else {
        crate::common::fixtures().join("sigstore/trusted-roots/public-good.json")
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_image-bouncer"));
    cmd.arg("verify-bundle")
        .arg("--bundle")
        .arg(case.join("bundle.sigstore.json"))
        .arg("--trusted-root")
        .arg(&root);
    if case.join("key.pub").exists() {
        cmd.arg("--key").arg(case.join("key.pub"));
    } else {
        let read = |f: &str, default: &str| {
            std::fs::read_to_string(case.join(f))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| default.to_string())
        };
        cmd.args([
            "--certificate-identity",
            &read("identity", IDENTITY),
            "--certificate-oidc-issuer",
            &read("issuer", ISSUER),
        ]);
    }
    let out = cmd.arg(artifact).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

#[test]
fn the_sigstore_conformance_suite() {
    let suite = crate::common::fixtures().join("sigstore/conformance/bundle-verify");
    let mut cases: Vec<_> = std::fs::read_dir(&suite)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert_eq!(cases.len(), 70, "the suite has 70 cases");
    let mut wrong = Vec::new();
    let mut agreed = 0;
    for case in &cases {
        let name = case.file_name().unwrap().to_str().unwrap();
        let artifact = if case.join("artifact").exists() {
            case.join("artifact")
        } else {
            suite.join("a.txt")
        };
        let bytes = std::fs::read(&artifact).unwrap();
        let digest = image_bouncer::registry::digest::Digest::sha256_of(&bytes).to_string();
        let want = !name.ends_with("_fail");
        for (mode, input) in [("file", artifact.to_str().unwrap()), ("digest", &digest)] {
            let (got, why) = verify(case, input);
            if got == want {
                agreed += 1;
            } else {
                wrong.push(format!("{name} ({mode}): wanted {want}, got {got}: {why}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} disagree:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(agreed, 140);
}

/// `verify-bundle` fetches nothing: without a trusted root it refuses and
/// says so, `--staging` included; its answer is one line.
#[test]
fn verify_bundle_needs_a_trusted_root() {
    let case = crate::common::fixtures().join("sigstore/conformance/bundle-verify/happy-path-v0.3");
    for extra in [&[][..], &["--staging"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_image-bouncer"))
            .arg("verify-bundle")
            .arg("--bundle")
            .arg(case.join("bundle.sigstore.json"))
            .args([
                "--certificate-identity",
                IDENTITY,
                "--certificate-oidc-issuer",
                ISSUER,
            ])
            .args(extra)
            .arg(crate::common::fixtures().join("sigstore/conformance/bundle-verify/a.txt"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--trusted-root") && err.contains("nothing is fetched"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}
