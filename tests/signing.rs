//! Signatures made here in cosign's exact formats (tests/signer.rs: keys
//! of each type, a test CA playing Fulcio, a test CT log and Rekor in a
//! trusted root), pushed to the real registry, judged by the real server:
//! what must pass passes, and every way of getting it wrong is refused.

use std::path::Path;

use image_bouncer::digest::Digest;

use crate::common::{Client, client_config, tls_server};
use crate::registry::{Registry, Setup, start_with};
use crate::signer::{Key, Leaf, Sigstore, b64, payload};

const ISSUER: &str = "https://token.actions.githubusercontent.com";
const SUBJECT: &str = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main";
/// 2026-01-01T01:00:00Z: inside the test leaves' day.
const SIGNED_AT: i64 = 1_767_229_200;
const DAY: (i32, u8, u8) = (2026, 1, 1);

/// Pushes a signature image with these (payload, annotations) layers.
fn push_layers(r: &Registry, repo: &str, digest: &str, layers: &[(Vec<u8>, serde_json::Value)]) {
    push_image_of(
        r,
        repo,
        &format!("{}.sig", digest.replace(':', "-")),
        "application/vnd.dev.cosign.simplesigning.v1+json",
        layers,
    );
}

/// Pushes an image of these (blob, annotations) layers at `tag`, as
/// cosign pushes its `.sig` and `.att` images.
pub fn push_image_of(
    r: &Registry,
    repo: &str,
    tag: &str,
    media_type: &str,
    layers: &[(Vec<u8>, serde_json::Value)],
) {
    let mut descriptors = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (payload, annotations) in layers {
        let d = Digest::sha256_of(payload).to_string();
        if seen.insert(d.clone()) {
            r.push_blob(repo, payload);
        }
        descriptors.push(serde_json::json!({"mediaType": media_type,
            "size": payload.len(), "digest": d, "annotations": annotations}));
    }
    let config = br#"{"architecture":"","os":"","config":{}}"#;
    let config_digest = r.push_blob(repo, config);
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": config_digest},
        "layers": descriptors});
    r.push_manifest(
        repo,
        tag,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
}

/// A keyless layer: the leaf's signature over the payload, with its
/// certificate, chain and (unless `logged` is false) its Rekor entry.
fn keyless_layer(
    s: &Sigstore,
    leaf: &Leaf,
    payload: Vec<u8>,
    time: i64,
    logged: bool,
) -> (Vec<u8>, serde_json::Value) {
    let sig = leaf.key.sign(&payload);
    let mut ann = serde_json::json!({
        "dev.cosignproject.cosign/signature": b64(&sig),
        "dev.sigstore.cosign/certificate": leaf.pem(),
    });
    if logged {
        ann["dev.sigstore.cosign/bundle"] = s
            .legacy_bundle(&payload, &sig, &leaf.pem(), time, 42)
            .into();
    }
    (payload, ann)
}

fn keyed_layer(s: &Sigstore, key: &Key, payload: Vec<u8>) -> (Vec<u8>, serde_json::Value) {
    let sig = key.sign(&payload);
    let ann = serde_json::json!({
        "dev.cosignproject.cosign/signature": b64(&sig),
        "dev.sigstore.cosign/bundle": s.legacy_bundle(&payload, &sig, &key.pem(), SIGNED_AT, 43),
    });
    (payload, ann)
}

/// Attaches a bundle to `digest` as cosign does: a referrer manifest
/// pushed by digest, listed in the `sha256-<hex>` fallback index.
fn push_bundle(r: &Registry, repo: &str, digest: &str, bundle: &str) {
    push_bundles(r, repo, digest, &[bundle]);
}

/// Several bundles attached to one digest, all listed in its fallback
/// index.
pub fn push_bundles(r: &Registry, repo: &str, digest: &str, bundles: &[&str]) {
    let plain: Vec<(&str, Option<&str>)> = bundles.iter().map(|b| (*b, None)).collect();
    push_annotated_bundles(r, repo, digest, &plain);
}

/// The same, each referrer manifest annotated with the predicate type
/// given (`dev.sigstore.bundle.predicateType`, as cosign annotates it).
pub fn push_annotated_bundles(
    r: &Registry,
    repo: &str,
    digest: &str,
    bundles: &[(&str, Option<&str>)],
) {
    let empty = r.push_blob(repo, b"{}");
    let at = "application/vnd.dev.sigstore.bundle.v0.3+json";
    let mut listed = Vec::new();
    for (bundle, predicate_type) in bundles {
        let layer = r.push_blob(repo, bundle.as_bytes());
        let mut m = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "artifactType": at,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2, "digest": empty},
            "layers": [{"mediaType": at, "size": bundle.len(), "digest": layer}],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1, "digest": digest}});
        if let Some(t) = predicate_type {
            m["annotations"] = serde_json::json!({"dev.sigstore.bundle.content": "dsse-envelope",
                "dev.sigstore.bundle.predicateType": t});
        }
        let m = m.to_string();
        let md = Digest::sha256_of(m.as_bytes()).to_string();
        r.push_manifest(
            repo,
            &md,
            "application/vnd.oci.image.manifest.v1+json",
            m.as_bytes(),
        );
        listed.push(serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": m.len(), "digest": md, "artifactType": at}));
    }
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": listed})
    .to_string();
    r.push_manifest(
        repo,
        &digest.replace(':', "-"),
        "application/vnd.oci.image.index.v1+json",
        index.as_bytes(),
    );
}

pub fn digest_of(name: &str) -> String {
    Digest::sha256_of(name.as_bytes()).to_string()
}

/// `/validate` with the apiserver's longest timeout (25 s for lookups):
/// what is checked here is the verdict, which must not depend on how busy
/// the machine is (the time verification takes is measured in bench/).
pub fn judge(c: &mut Client, image: &str) -> (bool, String) {
    crate::lookups::validate(c, &[image], "30s")
}

pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

pub fn base_policy(r: &Registry, verify: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "registryCredentials": crate::registry::write_dockercfg(r).to_str().unwrap(),
        "registries": {(format!("127.0.0.1:{}", r.port)): {"ca": r.dir.join("pki/ca.crt").to_str().unwrap()}},
        "verifyImages": verify,
    })
}

/// Keyless signatures from the test Fulcio, logged in the test Rekor with
/// an SCT from the test CT log: the identity passes; another identity,
/// another issuer, a prefix-only regex, a certificate expired at the
/// signing time, no log entry, a tampered payload, a signature of another
/// digest are refused; of several signatures one valid suffices; 10,000
/// signature layers are bounded.
#[test]
fn keyless_signatures_and_what_refuses_them() {
    let Some(r) = start_with("signing-keyless", Setup::default()) else {
        return;
    };
    let reg = format!("127.0.0.1:{}", r.port);
    let s = Sigstore::new();
    let root = write(&r.dir, "trusted_root.json", &s.trusted_root());
    let good = s.leaf(SUBJECT, ISSUER, DAY);
    let img = |repo: &str, d: &str| format!("{reg}/{repo}@{d}");
    // keyless/ok: the identity's signature.
    let d_ok = digest_of("ok");
    push_layers(
        &r,
        "keyless/ok",
        &d_ok,
        &[keyless_layer(
            &s,
            &good,
            payload(&format!("{reg}/keyless/ok"), &d_ok),
            SIGNED_AT,
            true,
        )],
    );
    // Another identity's signature.
    let other = s.leaf(
        "https://github.com/mallory/app/.github/workflows/release.yml@refs/heads/main",
        ISSUER,
        DAY,
    );
    let d_other = digest_of("other");
    push_layers(
        &r,
        "keyless/other",
        &d_other,
        &[keyless_layer(
            &s,
            &other,
            payload("x", &d_other),
            SIGNED_AT,
            true,
        )],
    );
    // Signed at a time the certificate was not valid (the next day).
    let d_expired = digest_of("expired");
    push_layers(
        &r,
        "keyless/expired",
        &d_expired,
        &[keyless_layer(
            &s,
            &good,
            payload("x", &d_expired),
            SIGNED_AT + 2 * 86_400,
            true,
        )],
    );
    // No log entry.
    let d_nolog = digest_of("nolog");
    push_layers(
        &r,
        "keyless/nolog",
        &d_nolog,
        &[keyless_layer(
            &s,
            &good,
            payload("x", &d_nolog),
            SIGNED_AT,
            false,
        )],
    );
    // A tampered payload: the signature of the original over other bytes.
    let d_tampered = digest_of("tampered");
    let (orig, ann) = keyless_layer(&s, &good, payload("x", &d_tampered), SIGNED_AT, true);
    let tampered = String::from_utf8(orig)
        .unwrap()
        .replace("\"x\"", "\"y\"")
        .into_bytes();
    push_layers(&r, "keyless/tampered", &d_tampered, &[(tampered, ann)]);
    // A signature of another digest, served for this one.
    let d_moved = digest_of("moved");
    push_layers(
        &r,
        "keyless/moved",
        &d_moved,
        &[keyless_layer(
            &s,
            &good,
            payload("x", &d_ok),
            SIGNED_AT,
            true,
        )],
    );
    // Several: two bad, one good.
    let d_several = digest_of("several");
    push_layers(
        &r,
        "keyless/several",
        &d_several,
        &[
            keyless_layer(&s, &other, payload("x", &d_several), SIGNED_AT, true),
            keyless_layer(&s, &good, payload("x", &d_ok), SIGNED_AT, true),
            keyless_layer(&s, &good, payload("x", &d_several), SIGNED_AT, true),
        ],
    );
    // 10,000 layers, none valid (one blob, listed 10,000 times).
    let d_many = digest_of("many");
    let junk = (
        payload("x", &d_many),
        serde_json::json!({"dev.cosignproject.cosign/signature": "AAAA"}),
    );
    push_layers(&r, "keyless/many", &d_many, &vec![junk; 10_000]);

    // Both formats: the same identity's bundle, attached as a referrer;
    // another identity's bundle for another image.
    let d_bundle = digest_of("keyless-bundle");
    push_bundle(
        &r,
        "keyless/bundled",
        &d_bundle,
        &s.keyless_bundle(&good, &d_bundle, SIGNED_AT),
    );
    let d_bundle_other = digest_of("keyless-bundle-other");
    push_bundle(
        &r,
        "keyless/bundled",
        &d_bundle_other,
        &s.keyless_bundle(&other, &d_bundle_other, SIGNED_AT),
    );
    let policy = base_policy(
        &r,
        serde_json::json!([
            {"images": [format!("{reg}/keyless/*")], "trustedRoot": root, "identities": [{"issuer": ISSUER, "subject": SUBJECT}]},
            {"images": [format!("{reg}/issuer/*")], "trustedRoot": root, "identities": [{"issuer": "https://accounts.google.com", "subject": SUBJECT}]},
            {"images": [format!("{reg}/prefix/*")], "trustedRoot": root, "identities": [{"issuer": ISSUER, "subjectRegExp": "https://github.com/acme/"}]},
            {"images": [format!("{reg}/regex/*")], "trustedRoot": root, "identities": [{"issuerRegExp": "https://token\\.actions\\.githubusercontent\\.com", "subjectRegExp": "https://github.com/acme/[^/]+/\\.github/workflows/release\\.yml@refs/heads/main"}]},
        ]),
    );
    // The same good signature, under the other rules' repositories.
    for repo in ["issuer/app", "prefix/app", "regex/app"] {
        push_layers(
            &r,
            repo,
            &d_ok,
            &[keyless_layer(
                &s,
                &good,
                payload("x", &d_ok),
                SIGNED_AT,
                true,
            )],
        );
    }
    let policy = write(&r.dir, "policy.json", &policy.to_string());
    let (pki, server) = tls_server("signing-keyless-server", &["--policy", &policy]);
    let mut c = Client::tls(server.addr, client_config(&pki.ca_file, None)).unwrap();
    assert_eq!(
        judge(&mut c, &img("keyless/ok", &d_ok)),
        (true, String::new())
    );
    assert_eq!(
        judge(&mut c, &img("regex/app", &d_ok)),
        (true, String::new())
    );
    assert_eq!(
        judge(&mut c, &img("keyless/several", &d_several)),
        (true, String::new())
    );
    assert_eq!(
        judge(&mut c, &img("keyless/bundled", &d_bundle)),
        (true, String::new())
    );
    for (image, why) in [
        (img("keyless/other", &d_other), "mallory"),
        (img("keyless/bundled", &d_bundle_other), "mallory"),
        (img("issuer/app", &d_ok), "is not accepted"),
        (img("prefix/app", &d_ok), "is not accepted"),
        (
            img("keyless/expired", &d_expired),
            "not valid at the signing time",
        ),
        (img("keyless/nolog", &d_nolog), "no transparency log entry"),
        (img("keyless/tampered", &d_tampered), "does not verify"),
        (img("keyless/moved", &d_moved), "another digest"),
        (
            img("keyless/ok", &digest_of("unsigned")),
            "no signature found",
        ),
    ] {
        let (ok, message) = judge(&mut c, &image);
        assert!(!ok, "{image} was admitted");
        assert!(message.contains(why), "{image}: {why:?} in {message}");
    }
    let (ok, message) = judge(&mut c, &img("keyless/many", &d_many));
    assert!(
        !ok && message.contains("9900 more not looked at"),
        "{message}"
    );
}

/// Keys of each type cosign makes (P-256, P-384 with SHA-384, Ed25519),
/// in the legacy format and as a bundle referrer; a replaced key file is
/// in force after a reload, and what the old key signed is then refused.
#[test]
fn keyed_signatures_of_each_type_and_a_key_replaced() {
    let Some(r) = start_with("signing-keyed", Setup::default()) else {
        return;
    };
    let reg = format!("127.0.0.1:{}", r.port);
    let s = Sigstore::new();
    let root = write(&r.dir, "trusted_root.json", &s.trusted_root());
    let keys = [
        ("p256", Key::p256()),
        ("p384", Key::new(&rcgen::PKCS_ECDSA_P384_SHA384)),
        ("ed25519", Key::new(&rcgen::PKCS_ED25519)),
    ];
    let mut files = Vec::new();
    for (name, key) in &keys {
        let d = digest_of(name);
        push_layers(
            &r,
            &format!("keyed/{name}"),
            &d,
            &[keyed_layer(&s, key, payload("x", &d))],
        );
        files.push(write(&r.dir, &format!("{name}.pub"), &key.pem()));
    }
    // The P-256 key's bundle, attached as a referrer through the
    // fallback index.
    let d_bundle = digest_of("bundle");
    let bundle = s.keyed_bundle(&keys[0].1, &d_bundle, SIGNED_AT);
    push_bundle(&r, "keyed/bundle", &d_bundle, &bundle);

    let key_file = write(&r.dir, "cosign.pub", &keys[0].1.pem());
    let policy = base_policy(
        &r,
        serde_json::json!([
            {"images": [format!("{reg}/keyed/p*"), format!("{reg}/keyed/ed25519")], "trustedRoot": root, "keys": files},
            {"images": [format!("{reg}/keyed/bundle")], "trustedRoot": root, "keys": [key_file]},
        ]),
    );
    let policy = write(&r.dir, "policy.json", &policy.to_string());
    let (pki, server) = tls_server("signing-keyed-server", &["--policy", &policy]);
    let mut c = Client::tls(server.addr, client_config(&pki.ca_file, None)).unwrap();
    for (name, _) in &keys {
        let image = format!("{reg}/keyed/{name}@{}", digest_of(name));
        assert_eq!(judge(&mut c, &image), (true, String::new()), "{name}");
    }
    let bundled = format!("{reg}/keyed/bundle@{d_bundle}");
    assert_eq!(judge(&mut c, &bundled), (true, String::new()));
    // The key file now holds another key: after the reload, refused.
    std::fs::write(&key_file, Key::p256().pem()).unwrap();
    server.signal("HUP");
    server.wait_for_log("reloaded", std::time::Duration::from_secs(30));
    let (ok, why) = judge(&mut c, &bundled);
    assert!(!ok && why.contains("unknown key"), "{why}");
}

/// `threshold`: two of three listed keys must each have signed the
/// digest. Signatures of two keys pass, also when one is a legacy layer
/// and the other a bundle; two signatures by one key count once; a key
/// that is not listed counts for nothing.
#[test]
fn a_threshold_of_distinct_signers() {
    let Some(r) = start_with("signing-threshold", Setup::default()) else {
        return;
    };
    let reg = format!("127.0.0.1:{}", r.port);
    let s = Sigstore::new();
    let root = write(&r.dir, "trusted_root.json", &s.trusted_root());
    let (a, b, c, stranger) = (Key::p256(), Key::p256(), Key::p256(), Key::p256());
    let files: Vec<String> = [("a", &a), ("b", &b), ("c", &c)]
        .iter()
        .map(|(n, k)| write(&r.dir, &format!("{n}.pub"), &k.pem()))
        .collect();
    let repo = "thr/app";
    let image = |name: &str| format!("{reg}/{repo}@{}", digest_of(name));
    let two = digest_of("two");
    push_layers(
        &r,
        repo,
        &two,
        &[
            keyed_layer(&s, &a, payload("x", &two)),
            keyed_layer(&s, &b, payload("x", &two)),
        ],
    );
    let split = digest_of("split");
    push_layers(
        &r,
        repo,
        &split,
        &[keyed_layer(&s, &c, payload("x", &split))],
    );
    push_bundle(&r, repo, &split, &s.keyed_bundle(&a, &split, SIGNED_AT));
    let twice = digest_of("twice");
    push_layers(
        &r,
        repo,
        &twice,
        &[
            keyed_layer(&s, &a, payload("x", &twice)),
            keyed_layer(&s, &a, payload("y", &twice)),
        ],
    );
    let unlisted = digest_of("unlisted");
    push_layers(
        &r,
        repo,
        &unlisted,
        &[
            keyed_layer(&s, &b, payload("x", &unlisted)),
            keyed_layer(&s, &stranger, payload("x", &unlisted)),
        ],
    );
    let policy = base_policy(
        &r,
        serde_json::json!([{"images": [format!("{reg}/thr/*")], "trustedRoot": root, "keys": files, "threshold": 2}]),
    );
    let policy = write(&r.dir, "policy.json", &policy.to_string());
    let (pki, server) = tls_server("signing-threshold-server", &["--policy", &policy]);
    let mut c = Client::tls(server.addr, client_config(&pki.ca_file, None)).unwrap();
    assert_eq!(judge(&mut c, &image("two")), (true, String::new()));
    assert_eq!(judge(&mut c, &image("split")), (true, String::new()));
    // The ImageReview path counts signers the same way.
    let mut review = |name: &str| {
        let body = serde_json::json!({"apiVersion": "imagepolicy.k8s.io/v1alpha1", "kind": "ImageReview",
            "spec": {"containers": [{"image": image(name)}], "namespace": "default"}});
        c.post("/image_policy?timeout=30s", body.to_string().as_bytes())
            .unwrap()
            .json()
    };
    assert_eq!(review("two")["status"]["allowed"], true);
    let v = review("twice");
    assert_eq!(v["status"]["allowed"], false, "{v}");
    assert!(
        v["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("only 1 of the 2 distinct signers required signed it"),
        "{v}"
    );
    for name in ["twice", "unlisted"] {
        let (ok, why) = judge(&mut c, &image(name));
        assert!(!ok, "{name}");
        assert!(
            why.contains("only 1 of the 2 distinct signers required signed it"),
            "{name}: {why}"
        );
    }
    // The admitted digests' log lines name both signers (decision lines
    // are buffered: wait for them).
    server.wait_for_log(
        &format!("{two}) signed by"),
        std::time::Duration::from_secs(30),
    );
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("allowed") && l.contains(&two))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains("a.pub") && line.contains(" and key "),
        "{line}"
    );
    assert!(
        line.contains("in a legacy signature (policy \"policy\" verifyImages[0])"),
        "{line}"
    );
    // Counted by policy, rule and result; a second look is cached.
    assert!(judge(&mut c, &image("two")).0);
    let metrics = c.get("/metrics").unwrap().text();
    for want in [
        "image_bouncer_verifications_total{policy=\"policy\",rule=\"verifyImages[0]\",result=\"verified\"} 2",
        "image_bouncer_verifications_total{policy=\"policy\",rule=\"verifyImages[0]\",result=\"refused\"} 2",
        "image_bouncer_verifications_total{policy=\"policy\",rule=\"verifyImages[0]\",result=\"cached\"} 3",
        "image_bouncer_policy_decisions_total{policy=\"policy\",mode=\"enforce\",result=\"pass\"} 4",
        "image_bouncer_policy_decisions_total{policy=\"policy\",mode=\"enforce\",result=\"fail\"} 3",
    ] {
        assert!(metrics.contains(want), "{want} in {metrics}");
    }
    crate::registry::promtool_check(&metrics);
}

/// A keyless signature whose only signing time is an RFC 3161 timestamp
/// from the tests' own TSA: as a bundle logged in the tests' Rekor v2 log
/// (no SET), and in the legacy format with the `rfc3161timestamp`
/// annotation (under a rule that does not ask the log); admitted for the
/// identity only, refused with a late timestamp or none.
#[test]
fn rekor_v2_and_timestamps_end_to_end() {
    use crate::signer::{RekorV2, Tsa};
    let Some(r) = start_with("signing-rekor-v2", Setup::default()) else {
        return;
    };
    let reg = format!("127.0.0.1:{}", r.port);
    let s = Sigstore::new();
    let (tsa, v2) = (Tsa::new(), RekorV2::new());
    let root = write(&r.dir, "trusted_root.json", &s.trusted_root_with(&tsa, &v2));
    let good = s.leaf(SUBJECT, ISSUER, DAY);
    let other = s.leaf(
        "https://github.com/mallory/x/.github/workflows/r.yml@refs/heads/main",
        ISSUER,
        DAY,
    );
    const IN_DAY: &str = "20260101010000Z";
    const NEXT_DAY: &str = "20260102120000Z";
    let cases = [
        ("ok", &good, Some(IN_DAY)),
        ("other", &other, Some(IN_DAY)),
        ("late", &good, Some(NEXT_DAY)),
        ("untimed", &good, None),
    ];
    for (name, leaf, time) in &cases {
        let d = digest_of(&format!("v2-{name}"));
        let mut bundle: serde_json::Value =
            serde_json::from_str(&s.rekor_v2_bundle(leaf, &d, &tsa, &v2, time.unwrap_or(IN_DAY)))
                .unwrap();
        if time.is_none() {
            bundle["verificationMaterial"]
                .as_object_mut()
                .unwrap()
                .remove("timestampVerificationData");
        }
        push_bundle(&r, "v2/app", &d, &bundle.to_string());
        // The legacy format: the certificate and the timestamp over the
        // signature, no log entry.
        let d = digest_of(&format!("legacy-{name}"));
        let p = payload("x", &d);
        let sig = leaf.key.sign(&p);
        let mut ann = serde_json::json!({"dev.cosignproject.cosign/signature": b64(&sig), "dev.sigstore.cosign/certificate": leaf.pem()});
        if let Some(t) = time {
            ann["dev.sigstore.cosign/rfc3161timestamp"] =
                serde_json::json!({"SignedRFC3161Timestamp": b64(&tsa.timestamp(&sig, t))})
                    .to_string()
                    .into();
        }
        push_layers(&r, "legacy/app", &d, &[(p, ann)]);
    }
    let policy = base_policy(
        &r,
        serde_json::json!([
            {"images": [format!("{reg}/v2/*")], "trustedRoot": root, "identities": [{"issuer": ISSUER, "subject": SUBJECT}]},
            {"images": [format!("{reg}/legacy/*")], "trustedRoot": root, "ignoreTlog": true, "identities": [{"issuer": ISSUER, "subject": SUBJECT}]},
        ]),
    );
    let policy = write(&r.dir, "policy.json", &policy.to_string());
    let (pki, server) = tls_server("signing-rekor-v2-server", &["--policy", &policy]);
    let mut c = Client::tls(server.addr, client_config(&pki.ca_file, None)).unwrap();
    for repo in ["v2", "legacy"] {
        let image = |name: &str| {
            let prefix = if repo == "v2" { "v2" } else { "legacy" };
            format!(
                "{reg}/{repo}/app@{}",
                digest_of(&format!("{prefix}-{name}"))
            )
        };
        assert_eq!(judge(&mut c, &image("ok")), (true, String::new()), "{repo}");
        for (name, why) in [
            ("other", "mallory"),
            ("late", "not valid at the signing time"),
            ("untimed", "trusted signing time"),
        ] {
            let (ok, message) = judge(&mut c, &image(name));
            assert!(!ok, "{repo} {name} admitted");
            assert!(message.contains(why), "{repo} {name}: {why:?} in {message}");
        }
    }
}
