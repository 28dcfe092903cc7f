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
        let digest = image_bouncer::digest::Digest::sha256_of(&bytes).to_string();
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

/// The sigstore-python and sigstore-go cases of PROVENANCE.md, each with
/// its root, identity, artifact and expected outcome.
#[test]
fn sigstore_python_and_go_cases() {
    let f = crate::common::fixtures().join("sigstore");
    let dir = crate::common::temp_dir("conformance-tsa-root");
    // The TSA case's root is the `trustedRoot` member of its trust config.
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(f.join("sigstore-python/tsa/trust_config.json")).unwrap(),
    )
    .unwrap();
    let tsa_root = dir.join("trusted_root.json");
    std::fs::write(&tsa_root, config["trustedRoot"].to_string()).unwrap();
    let staging = f.join("trusted-roots/staging.json");
    let public_good = f.join("trusted-roots/public-good.json");
    let scaffolding = f.join("sigstore-go/trusted-roots/scaffolding.json");
    const OAUTH: &str = "https://github.com/login/oauth";
    const GOOGLE: &str = "https://accounts.google.com";
    let py = |p: &str| f.join("sigstore-python").join(p);
    let a_txt = "sha256:a0cfc71271d6e278e57cd332ff957c3f7043fdda354c4cbb190a30d56efa01bf";
    // The statement's subject (PROVENANCE.md: `46d4e2f7…cd3c`).
    let js = "sha512:46d4e2f74c4877316640000a6fdf8a8b59f1e0847667973e9859f774dd31b8f1e0937813b777fb66a2ac67d50540fe34640966eee9fc2ccca387082b4c85cd3c";
    let cases: Vec<(
        std::path::PathBuf,
        &std::path::Path,
        &str,
        &str,
        String,
        bool,
    )> = vec![
        (
            py("bundle.txt.sigstore"),
            &staging,
            "a@tny.town",
            OAUTH,
            py("bundle.txt").display().to_string(),
            true,
        ),
        (
            py("bundle_v3.txt.sigstore"),
            &staging,
            "william@yossarian.net",
            OAUTH,
            py("bundle_v3.txt").display().to_string(),
            true,
        ),
        (
            py("bundle_v3_alt.txt.sigstore"),
            &staging,
            "william@yossarian.net",
            OAUTH,
            py("bundle_v3_alt.txt").display().to_string(),
            true,
        ),
        (
            py("staging-rekor-v2.txt.sigstore.json"),
            &staging,
            "jku@goto.fi",
            OAUTH,
            py("staging-rekor-v2.txt").display().to_string(),
            true,
        ),
        (
            py("a.dsse.staging-rekor-v2.txt.sigstore.json"),
            &staging,
            IDENTITY,
            ISSUER,
            a_txt.to_string(),
            true,
        ),
        (
            py("bundle_v3_github.whl.sigstore"),
            &public_good,
            "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2",
            ISSUER,
            py("bundle_v3_github.whl").display().to_string(),
            true,
        ),
        (
            py("tsa/bundle.txt.sigstore"),
            &tsa_root,
            "alexis.challande@trailofbits.com",
            GOOGLE,
            py("tsa/bundle.txt").display().to_string(),
            true,
        ),
        (
            py("bundle_cve_2022_36056.txt.sigstore"),
            &staging,
            "william@yossarian.net",
            OAUTH,
            py("bundle_cve_2022_36056.txt").display().to_string(),
            false,
        ),
        (
            py("bundle_invalid_version.txt.sigstore"),
            &staging,
            "william@yossarian.net",
            OAUTH,
            py("bundle_invalid_version.txt").display().to_string(),
            false,
        ),
        (
            py("bundle_no_cert_v1.txt.sigstore"),
            &staging,
            "william@yossarian.net",
            OAUTH,
            py("bundle_no_cert_v1.txt").display().to_string(),
            false,
        ),
        (
            py("bundle_no_log_entry.txt.sigstore"),
            &staging,
            "alex.cameron@trailofbits.com",
            GOOGLE,
            py("bundle_no_log_entry.txt").display().to_string(),
            false,
        ),
        (
            py("bundle_no_checkpoint.txt.sigstore"),
            &staging,
            "william@yossarian.net",
            OAUTH,
            py("bundle_no_checkpoint.txt").display().to_string(),
            false,
        ),
        (
            py("bundle_v3_no_signed_time.txt.sigstore.json"),
            &staging,
            "william@yossarian.net",
            OAUTH,
            py("bundle_v3_no_signed_time.txt").display().to_string(),
            false,
        ),
        (
            py("tsa/bundle.many_timestamp.sigstore"),
            &tsa_root,
            "alexis.challande@trailofbits.com",
            GOOGLE,
            py("tsa/bundle.txt").display().to_string(),
            false,
        ),
        (
            py("tsa/bundle.duplicate.sigstore"),
            &tsa_root,
            "alexis.challande@trailofbits.com",
            GOOGLE,
            py("tsa/bundle.txt").display().to_string(),
            false,
        ),
        (
            py("tsa/bundle.txt.late_timestamp.sigstore"),
            &tsa_root,
            "insecure-cloudtop-shared-user@cloudtop-prod-us-east.iam.gserviceaccount.com",
            GOOGLE,
            py("tsa/bundle.txt").display().to_string(),
            false,
        ),
        (
            f.join("sigstore-go/bundles/othername.sigstore.json"),
            &scaffolding,
            "foo!oidc.local",
            "http://oidc.local:8080",
            "sha256:bc103b4a84971ef6459b294a2b98568a2bfb72cded09d4acd1e16366a401f95b".into(),
            true,
        ),
        (
            f.join("sigstore-go/bundles/othername.sigstore.json"),
            &scaffolding,
            "foo@oidc.local",
            "http://oidc.local:8080",
            "sha256:bc103b4a84971ef6459b294a2b98568a2bfb72cded09d4acd1e16366a401f95b".into(),
            false,
        ),
        (
            f.join("sigstore-go/bundles/sigstore.js@2.0.0-provenance.sigstore.json"),
            &public_good,
            "https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main",
            ISSUER,
            js.into(),
            true,
        ),
        (
            f.join("sigstore-go/bundles/dsse-2sigs.sigstore.json"),
            &public_good,
            IDENTITY,
            ISSUER,
            js.into(),
            false,
        ),
    ];
    let mut wrong = Vec::new();
    for (bundle, root, identity, issuer, artifact, want) in &cases {
        let out = Command::new(env!("CARGO_BIN_EXE_image-bouncer"))
            .arg("verify-bundle")
            .arg("--bundle")
            .arg(bundle)
            .arg("--trusted-root")
            .arg(root)
            .args([
                "--certificate-identity",
                identity,
                "--certificate-oidc-issuer",
                issuer,
            ])
            .arg(artifact)
            .output()
            .unwrap();
        if out.status.success() != *want {
            wrong.push(format!(
                "{} ({identity}): wanted {want}: {}",
                bundle.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} disagree:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
