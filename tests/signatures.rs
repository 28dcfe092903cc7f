//! `verifyImages` end to end: real cosign signatures (the upstream vectors
//! of tests/fixtures, unchanged) served by the real registry under
//! `sha256-<hex>.sig`, and the real server judging pods and ImageReviews
//! over TLS — each admitted only for its key or identity.

use std::path::Path;

use image_bouncer::digest::Digest;

use crate::common::{Client, client_config, fixtures, tls_server};
use crate::registry::{Registry, Setup, start_with};

/// The keyed P-256 vector (sigstore-rs): busybox signed with `cosign.pub`.
const BUSYBOX: &str = "sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b";
/// The 2026 GitHub Actions keyless vector: a multi-arch index.
const SERVER_IMAGE: &str =
    "sha256:c05263d2ff654c3a94243662440913f045075d59c436e2c69e9145ec2b87a321";
const GHA: &str = "https://token.actions.githubusercontent.com";
const GHA_SUBJECT: &str = "https://github.com/salrashid123/go-bazel-github-workflow/.github/workflows/release.yaml@refs/tags/v0.0.30";

pub fn fixture(p: &str) -> String {
    std::fs::read_to_string(fixtures().join(p)).unwrap()
}

pub fn fixture_path(p: &str) -> String {
    fixtures().join(p).to_str().unwrap().to_string()
}

/// cosign's fixed config blob for a signature image with this layer.
fn cosign_config(layer: &str) -> String {
    format!(
        r#"{{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{{"created":"0001-01-01T00:00:00Z"}}],"os":"","rootfs":{{"type":"layers","diff_ids":["{layer}"]}},"config":{{}}}}"#
    )
}

/// Pushes a one-layer signature image as cosign does; returns the layer
/// descriptor's annotations applied.
pub fn push_signature(
    r: &Registry,
    repo: &str,
    digest: &str,
    payload: &[u8],
    annotations: serde_json::Value,
) {
    let layer = r.push_blob(repo, payload);
    let config = cosign_config(&layer);
    let config_digest = r.push_blob(repo, config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": config_digest},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "size": payload.len(), "digest": layer, "annotations": annotations}],
    });
    r.push_manifest(
        repo,
        &format!("{}.sig", digest.replace(':', "-")),
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
}

/// The real 2026 signature manifest, pushed as the registry served it.
fn push_gha_signature(r: &Registry, repo: &str) {
    let served = fixture("sigstore/image-legacy/gha-keyless-2026/signature-manifest.json");
    let m: serde_json::Value = serde_json::from_str(&served).unwrap();
    let payload = fixture("sigstore/image-legacy/gha-keyless-2026/payload.json");
    assert_eq!(
        r.push_blob(repo, payload.as_bytes()),
        m["layers"][0]["digest"]
    );
    let config = cosign_config(m["layers"][0]["digest"].as_str().unwrap());
    assert_eq!(
        r.push_blob(repo, config.as_bytes()),
        m["config"]["digest"],
        "cosign's config rebuilt byte for byte"
    );
    r.push_manifest(
        repo,
        &format!("{}.sig", SERVER_IMAGE.replace(':', "-")),
        "application/vnd.oci.image.manifest.v1+json",
        served.as_bytes(),
    );
}

fn image_review(image: &str) -> String {
    serde_json::json!({"apiVersion": "imagepolicy.k8s.io/v1alpha1", "kind": "ImageReview",
        "spec": {"containers": [{"image": image}], "namespace": "default"}})
    .to_string()
}

pub fn write_policy(dir: &Path, name: &str, policy: serde_json::Value) -> String {
    let p = dir.join(name);
    std::fs::write(&p, policy.to_string()).unwrap();
    p.to_str().unwrap().to_string()
}

/// `/validate` with the apiserver's longest timeout: the verdicts checked
/// here must not depend on how busy the machine is.
fn validate(c: &mut Client, image: &str) -> (bool, String) {
    crate::lookups::validate(c, &[image], "30s")
}

/// Keyed and keyless legacy signatures through the real registry and the
/// real server: admitted for their key and identity; refused for another
/// key, another identity, a digest without signatures, a tag on a path
/// that cannot pin (with the digest to write); a verified digest stays
/// admitted while the registry is down, an unknown one does not.
#[test]
fn legacy_signatures_end_to_end() {
    let Some(r) = start_with("signatures-legacy", Setup::default()) else {
        return;
    };
    let reg = format!("127.0.0.1:{}", r.port);
    // Keyed: the payload and signature exactly as signed.
    let dir = "sigstore/image-legacy/keyed-p256-sigstore-rs";
    push_signature(
        &r,
        "team/busybox",
        BUSYBOX,
        fixture(&format!("{dir}/payload.json")).as_bytes(),
        serde_json::json!({"dev.cosignproject.cosign/signature": fixture(&format!("{dir}/signature.b64")).trim()}),
    );
    push_gha_signature(&r, "team/server_image");
    let tagged = r.push_image_manifest("team/app", "v1", b"unsigned app").0;
    let dockercfg = crate::registry::write_dockercfg(&r);
    let base = |verify: serde_json::Value| {
        serde_json::json!({
            "registryCredentials": dockercfg.to_str().unwrap(),
            "registries": {(reg.clone()): {"ca": r.dir.join("pki/ca.crt").to_str().unwrap()}},
            "verifyImages": verify,
        })
    };
    let policy = write_policy(
        &r.dir,
        "policy.json",
        base(serde_json::json!([
            {"images": [format!("{reg}/team/busybox"), format!("{reg}/team/app")], "keys": [fixture_path(&format!("{dir}/cosign.pub"))], "ignoreTlog": true},
            {"images": [format!("{reg}/team/server_image")], "trustedRoot": fixture_path("sigstore/trusted-roots/public-good.json"),
             "identities": [{"issuer": GHA, "subject": GHA_SUBJECT}]},
        ])),
    );
    let (pki, server) = tls_server("signatures-server", &["--policy", &policy]);
    let config = client_config(&pki.ca_file, None);
    let mut c = Client::tls(server.addr, config.clone()).unwrap();
    let busybox = format!("{reg}/team/busybox@{BUSYBOX}");
    let server_image = format!("{reg}/team/server_image@{SERVER_IMAGE}");
    assert_eq!(validate(&mut c, &busybox), (true, String::new()));
    assert_eq!(validate(&mut c, &server_image), (true, String::new()));
    // A digest of the same repository with no signature.
    let other = format!("{reg}/team/busybox@{}", Digest::sha256_of(b"other"));
    let (ok, why) = validate(&mut c, &other);
    assert!(!ok && why.contains("no signature found"), "{why}");
    assert!(why.contains("verifyImages[0]"), "{why}");
    // A tag on the ImageReview path: refused with the digest to write.
    let v = c
        .post(
            "/image_policy",
            image_review(&format!("{reg}/team/app:v1")).as_bytes(),
        )
        .unwrap()
        .json();
    assert_eq!(v["status"]["allowed"], false, "{v}");
    let reason = v["status"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("pin it by digest") && reason.contains(&tagged),
        "{reason}"
    );
    // Signed images pass on the ImageReview path too.
    let v = c
        .post("/image_policy", image_review(&busybox).as_bytes())
        .unwrap()
        .json();
    assert_eq!(v["status"]["allowed"], true, "{v}");
    drop(server);

    // `check` verifies the same way and reports the facts.
    let out = crate::common::run(
        &[
            "check",
            "--json",
            "--policy",
            &policy,
            &busybox,
            &server_image,
            &other,
        ],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        crate::common::stderr(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sig = |i: usize| v["images"][i]["signature"].clone();
    assert_eq!(sig(0)["verified"], true, "{v}");
    assert_eq!(sig(0)["digest"], BUSYBOX);
    assert!(
        sig(0)["signer"].as_str().unwrap().starts_with("key "),
        "{v}"
    );
    assert_eq!(sig(1)["verified"], true, "{v}");
    assert_eq!(sig(1)["log_index"], 1_004_096_555);
    assert_eq!(sig(1)["time_source"], "transparency log (SET)");
    assert!(
        sig(1)["signed_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-02-27T"),
        "{v}"
    );
    assert!(sig(1)["signer"].as_str().unwrap().contains(GHA_SUBJECT));
    assert_eq!(sig(2)["verified"], false);
    assert!(
        sig(2)["error"]
            .as_str()
            .unwrap()
            .contains("no signature found"),
        "{v}"
    );
    let text = crate::common::run(&["check", "--policy", &policy, &busybox], None);
    assert!(
        crate::common::stdout(&text).contains("signed (policy \"policy\" verifyImages[0])"),
        "{}",
        crate::common::stdout(&text)
    );

    // Another key, another identity: refused, saying so.
    let policy = write_policy(
        &r.dir,
        "policy-other.json",
        base(serde_json::json!([
            {"images": [format!("{reg}/team/busybox")], "keys": [fixture_path(&format!("{dir}/other.pub"))], "ignoreTlog": true},
            {"images": [format!("{reg}/team/server_image")], "trustedRoot": fixture_path("sigstore/trusted-roots/public-good.json"),
             "identities": [{"issuer": GHA, "subjectRegExp": "https://github.com/salrashid123/go-bazel-github-workflow/.github/workflows/release.yaml"}]},
        ])),
    );
    let (pki, server) = tls_server("signatures-server-other", &["--policy", &policy]);
    let mut c = Client::tls(server.addr, client_config(&pki.ca_file, None)).unwrap();
    let (ok, why) = validate(&mut c, &busybox);
    assert!(!ok && why.contains("unknown key"), "{why}");
    let (ok, why) = validate(&mut c, &server_image);
    assert!(!ok && why.contains("is not accepted"), "{why}");
    drop(server);

    // Verified before, then the registry goes down: still admitted.
    let (pki, server) = tls_server(
        "signatures-server-down",
        &["--policy", &policy_path(&r.dir)],
    );
    let mut c = Client::tls(server.addr, client_config(&pki.ca_file, None)).unwrap();
    assert!(validate(&mut c, &busybox).0);
    drop(r);
    assert!(
        validate(&mut c, &busybox).0,
        "a verified digest stays admitted"
    );
    let (ok, why) = validate(&mut c, &server_image);
    assert!(!ok, "never verified, registry down: denied ({why})");
    assert!(
        why.contains("could not be asked") || why.contains("timed out"),
        "{why}"
    );
}

fn policy_path(dir: &Path) -> String {
    dir.join("policy.json").to_str().unwrap().to_string()
}

/// The real cosign image bundle (DSSE, Rekor dsse entry with SET,
/// inclusion proof and checkpoint), attached as cosign attaches it: a
/// referrer manifest pushed by digest and, since this registry has no
/// referrers API, listed in the `sha256-<hex>` fallback index.
#[test]
fn a_bundle_attached_as_a_referrer_end_to_end() {
    const IMAGE: &str = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4";
    const DIR: &str = "sigstore/image-bundle/cosign-oci-attestation-2025";
    let Some(r) = start_with("signatures-bundle", Setup::default()) else {
        return;
    };
    let reg = format!("127.0.0.1:{}", r.port);
    let repo = "team/attested";
    let bundle = fixture(&format!("{DIR}/oci-attestation.sigstore.json"));
    let layer = r.push_blob(repo, bundle.as_bytes());
    let empty = r.push_blob(repo, b"{}");
    let artifact = "application/vnd.dev.sigstore.bundle.v0.3+json";
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": artifact,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2, "digest": empty, "artifactType": artifact},
        "layers": [{"mediaType": artifact, "size": bundle.len(), "digest": layer}],
        "subject": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 264, "digest": IMAGE},
        "annotations": {"dev.sigstore.bundle.content": "dsse-envelope", "dev.sigstore.bundle.predicateType": "https://cosign.sigstore.dev/attestation/v1"},
    })
    .to_string();
    let manifest_digest = Digest::sha256_of(manifest.as_bytes()).to_string();
    r.push_manifest(
        repo,
        &manifest_digest,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.as_bytes(),
    );
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": manifest.len(), "digest": manifest_digest, "artifactType": artifact}],
    })
    .to_string();
    r.push_manifest(
        repo,
        &IMAGE.replace(':', "-"),
        "application/vnd.oci.image.index.v1+json",
        index.as_bytes(),
    );
    let dockercfg = crate::registry::write_dockercfg(&r);
    let policy = |subject: &str| {
        serde_json::json!({
            "registryCredentials": dockercfg.to_str().unwrap(),
            "registries": {(reg.clone()): {"ca": r.dir.join("pki/ca.crt").to_str().unwrap()}},
            "verifyImages": [{"images": [format!("{reg}/{repo}")], "trustedRoot": fixture_path(&format!("{DIR}/trusted_root_pgi.json")),
                              "identities": [{"issuer": "https://github.com/login/oauth", "subject": subject}]}],
        })
    };
    let image = format!("{reg}/{repo}@{IMAGE}");
    let good = write_policy(&r.dir, "bundle.json", policy("cody@soyland.com"));
    let (pki, server) = tls_server("signatures-bundle-server", &["--policy", &good]);
    let mut c = Client::tls(server.addr, client_config(&pki.ca_file, None)).unwrap();
    assert_eq!(validate(&mut c, &image), (true, String::new()));
    let (ok, why) = validate(&mut c, &format!("{reg}/{repo}@{}", Digest::sha256_of(b"x")));
    assert!(!ok && why.contains("no sigstore bundle"), "{why}");
    drop(server);
    let bad = write_policy(&r.dir, "bundle-other.json", policy("mallory@example.com"));
    let (pki, server) = tls_server("signatures-bundle-other", &["--policy", &bad]);
    let mut c = Client::tls(server.addr, client_config(&pki.ca_file, None)).unwrap();
    let (ok, why) = validate(&mut c, &image);
    assert!(!ok && why.contains("is not accepted"), "{why}");
    drop(server);
    // The same real bundle as an attestation (cosign's `custom` predicate,
    // `{"Data": "{\"foo\": \"bar\"}\n", ...}`), with conditions.
    let attested = |items: serde_json::Value, name: &str| {
        let mut p = policy("cody@soyland.com");
        p["verifyImages"][0]["attestations"] = items;
        let file = write_policy(&r.dir, &format!("{name}.json"), p);
        let (pki, server) = tls_server(name, &["--policy", &file]);
        let mut c = Client::tls(server.addr, client_config(&pki.ca_file, None)).unwrap();
        validate(&mut c, &image)
    };
    let (ok, why) = attested(
        serde_json::json!([{"predicateType": "custom",
            "condition": "predicate.Data.contains('foo') && timestamp(predicate.Timestamp) < now && subject.exists(s, s.digest.sha256 == '732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4')"}]),
        "signatures-bundle-att-ok",
    );
    assert!(ok, "{why}");
    let (ok, why) = attested(
        serde_json::json!([{"predicateType": "custom", "condition": "predicate.Data.contains('baz')"}]),
        "signatures-bundle-att-false",
    );
    assert!(
        !ok && why.contains(
            "attestations[0] (custom): its condition is false: predicate.Data.contains('baz')"
        ),
        "{why}"
    );
    let (ok, why) = attested(
        serde_json::json!([{"predicateType": "slsaprovenance"}]),
        "signatures-bundle-att-type",
    );
    assert!(
        !ok && why.contains("no statement of that type")
            && why
                .contains("verified statements are of https://cosign.sigstore.dev/attestation/v1"),
        "{why}"
    );
}
