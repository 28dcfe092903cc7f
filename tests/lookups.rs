//! How admission combines lookups, deadlines, caps and rule matching
//! (issue 33), on the real registry and the real server over TLS: a tag
//! requirement reaches `tag@digest`; one image's stalled registry cannot
//! spend another image's time, and running out of time never admits; every
//! byte fetched for one image counts against its cap and each descriptor
//! is fetched once; an unreadable referrer is skipped; names the lists
//! refuse, and loopback or link-local addresses no `registries` entry
//! names, get no connection at all; a plain-HTTP registry's password never
//! goes to a realm on another host.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use image_bouncer::credentials::Credentials;
use image_bouncer::digest::Digest;
use image_bouncer::image_ref::ImageRef;
use image_bouncer::registry::client::Client as RegistryClient;
use image_bouncer::registry::proxy::ProxyConfig;

use crate::common::{Client, client_config, tls_server};
use crate::registry::{Registry, Setup, start_with};
use crate::signatures::{fixture, fixture_path, push_signature, write_policy};

/// The keyed P-256 vector: busybox signed with `cosign.pub`.
const BUSYBOX: &str = "sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b";
const KEYED: &str = "sigstore/image-legacy/keyed-p256-sigstore-rs";
/// The real cosign image bundle's subject, signer and root.
const ATTESTED: &str = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4";
const BUNDLE_DIR: &str = "sigstore/image-bundle/cosign-oci-attestation-2025";
const BUNDLE_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A pod review whose containers run `images`, in order.
fn pod(images: &[&str]) -> String {
    let body =
        std::fs::read(crate::common::fixtures().join("admission/pod-create-allowed.request.json"))
            .unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let containers: Vec<serde_json::Value> = images
        .iter()
        .enumerate()
        .map(|(i, im)| serde_json::json!({"name": format!("c{i}"), "image": im}))
        .collect();
    v["request"]["object"]["spec"]["containers"] = containers.into();
    v.to_string()
}

fn images_review(images: &[&str]) -> String {
    let containers: Vec<serde_json::Value> = images
        .iter()
        .map(|im| serde_json::json!({"image": im}))
        .collect();
    serde_json::json!({"apiVersion": "imagepolicy.k8s.io/v1alpha1", "kind": "ImageReview",
        "spec": {"containers": containers, "namespace": "default"}})
    .to_string()
}

/// `/validate` (with the apiserver's `timeout`): allowed, and the message.
pub fn validate(c: &mut Client, images: &[&str], timeout: &str) -> (bool, String) {
    let v = c
        .post(
            &format!("/validate?timeout={timeout}"),
            pod(images).as_bytes(),
        )
        .unwrap()
        .json();
    (
        v["response"]["allowed"].as_bool().unwrap(),
        v["response"]["status"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

/// `/image_policy`: allowed, and the reason.
fn image_policy(c: &mut Client, images: &[&str], timeout: &str) -> (bool, String) {
    let reply = c
        .post(
            &format!("/image_policy?timeout={timeout}"),
            images_review(images).as_bytes(),
        )
        .unwrap();
    assert_eq!(reply.status, 200);
    let v = reply.json();
    (
        v["status"]["allowed"].as_bool().unwrap(),
        v["status"]["reason"].as_str().unwrap_or("").to_string(),
    )
}

/// A listener on `ip` that counts connections and holds each open
/// without a word (a registry that accepts and never answers).
fn silent_listener(ip: &str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(format!("{ip}:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        for sock in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            held.push(sock);
        }
    });
    (port, count)
}

/// A loopback port nothing listens on (the connection is refused).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ca_path(r: &Registry) -> String {
    r.dir.join("pki/ca.crt").to_str().unwrap().to_string()
}

/// Pushes the keyed vector's signature for BUSYBOX into `repo`.
fn sign_busybox(r: &Registry, repo: &str) {
    push_signature(
        r,
        repo,
        BUSYBOX,
        fixture(&format!("{KEYED}/payload.json")).as_bytes(),
        serde_json::json!({"dev.cosignproject.cosign/signature": fixture(&format!("{KEYED}/signature.b64")).trim()}),
    );
}

/// A registry (and its `127.0.0.1:<port>`) holding the keyed vector's
/// signature for BUSYBOX in `repo`.
fn registry_with_signed_busybox(name: &str, repo: &str) -> Option<(Registry, String)> {
    let r = start_with(name, Setup::default())?;
    let reg = format!("127.0.0.1:{}", r.port);
    sign_busybox(&r, repo);
    Some((r, reg))
}

fn keyed_rule(images: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"images": images, "keys": [fixture_path(&format!("{KEYED}/cosign.pub"))], "ignoreTlog": true})
}

fn start(dir: &Path, name: &str, policy: serde_json::Value) -> (crate::common::Server, Client) {
    let path = write_policy(dir, &format!("{name}.json"), policy);
    let (pki, server) = tls_server(name, &["--policy", &path]);
    let c = Client::tls(server.addr, client_config(&pki.ca_file, None)).unwrap();
    (server, c)
}

/// Issue 33, 1: a `verifyImages` entry written with a tag requires
/// signatures of that tag with a digest beside it, and of digests of its
/// repository; the signed digest still passes.
#[test]
fn a_tag_requirement_covers_the_tag_with_a_digest() {
    let Some((r, reg)) = registry_with_signed_busybox("lookups-tag-scope", "acme/app") else {
        return;
    };
    let (unsigned, _) = r.push_image_manifest("acme/app", "prod", b"unsigned");
    let dockercfg = crate::registry::write_dockercfg(&r);
    let (_server, mut c) = start(
        &r.dir,
        "lookups-tag-scope-server",
        serde_json::json!({
            "registryCredentials": dockercfg.to_str().unwrap(),
            "registries": {(reg.clone()): {"ca": ca_path(&r)}},
            "verifyImages": [keyed_rule(serde_json::json!([format!("{reg}/acme/app:prod")]))],
        }),
    );
    for image in [
        format!("{reg}/acme/app:prod@{unsigned}"),
        format!("{reg}/acme/app@{unsigned}"),
        format!("{reg}/acme/app:other@{unsigned}"),
    ] {
        let (ok, why) = validate(&mut c, &[&image], "30s");
        assert!(
            !ok && why.contains("verifyImages[0] requires it"),
            "{image}: {why}"
        );
        let (ok, why) = image_policy(&mut c, &[&image], "30s");
        assert!(
            !ok && why.contains("verifyImages[0] requires it"),
            "{image}: {why}"
        );
    }
    // The tag alone names what the registry signs: refused as a tag that
    // can move (with the digest to write), not skipped.
    let (ok, why) = validate(&mut c, &[&format!("{reg}/acme/app:prod")], "30s");
    assert!(!ok && why.contains("pin it by digest"), "{why}");
    // Control: the signed digest, spelled with the tag too.
    for image in [
        format!("{reg}/acme/app:prod@{BUSYBOX}"),
        format!("{reg}/acme/app@{BUSYBOX}"),
    ] {
        assert_eq!(validate(&mut c, &[&image], "30s"), (true, String::new()));
    }
    // Another tag of the repository is not what the entry names.
    assert!(validate(&mut c, &[&format!("{reg}/acme/app:dev")], "30s").0);
    // The admitted image's signer is in the log.
    _server.wait_for_log(
        &format!(
            "signed by key {}",
            fixture_path(&format!("{KEYED}/cosign.pub"))
        ),
        Duration::from_secs(30),
    );
    drop(_server);
    // A stricter entry after the tag entry still applies to the digest:
    // every entry that covers an image must be satisfied.
    let other_key = crate::common::fixtures().join("cosign/keyed-p384/cosign.pub");
    let (_server, mut c) = start(
        &r.dir,
        "lookups-tag-scope-strict",
        serde_json::json!({
            "registryCredentials": dockercfg.to_str().unwrap(),
            "registries": {(reg.clone()): {"ca": ca_path(&r)}},
            "verifyImages": [
                keyed_rule(serde_json::json!([format!("{reg}/acme/app:prod")])),
                {"images": [format!("{reg}/acme")], "keys": [other_key.to_str().unwrap()], "ignoreTlog": true},
            ],
        }),
    );
    let (ok, why) = validate(&mut c, &[&format!("{reg}/acme/app:prod@{BUSYBOX}")], "30s");
    assert!(
        !ok && why.contains("verifyImages[1] requires it") && !why.contains("verifyImages[0]"),
        "{why}"
    );
}

/// Issue 33, 2: with `onRegistryError: allow`, an image whose registry
/// stalls is denied when the time runs out, and cannot make an unsigned
/// image listed after it pass: each image's outcome is its own. Only a
/// registry's own error (here a refused connection) admits, logged and
/// counted.
#[test]
fn a_stalled_registry_spends_only_its_own_images_time() {
    let Some((r, reg)) = registry_with_signed_busybox("lookups-deadline", "team/busybox") else {
        return;
    };
    let (unsigned, _) = r.push_image_manifest("acme/app", "v1", b"unsigned");
    let (stall, stall_seen) = silent_listener("127.0.0.1");
    let closed = closed_port();
    // A plain-HTTP server the policy calls a TLS registry: TLS fails.
    let plain = plain_challenger(|p| format!("http://127.0.0.1:{p}/token")).0;
    let dockercfg = crate::registry::write_dockercfg(&r);
    let mut rule = keyed_rule(serde_json::json!(["*"]));
    rule["onRegistryError"] = "allow".into();
    let (server, mut c) = start(
        &r.dir,
        "lookups-deadline-server",
        serde_json::json!({
            "registryCredentials": dockercfg.to_str().unwrap(),
            "registries": {
                (reg.clone()): {"ca": ca_path(&r)},
                (format!("127.0.0.1:{stall}")): {"ca": ca_path(&r)},
                (format!("127.0.0.1:{closed}")): {"plainHttp": true},
                (format!("127.0.0.1:{plain}")): {"ca": ca_path(&r)},
            },
            "verifyImages": [rule],
        }),
    );
    let stalled = format!("127.0.0.1:{stall}/team/x@{}", Digest::sha256_of(b"x"));
    let unsigned = format!("{reg}/acme/app@{unsigned}");
    let signed = format!("{reg}/team/busybox@{BUSYBOX}");
    let down = format!("127.0.0.1:{closed}/team/y@{}", Digest::sha256_of(b"y"));
    // The stalled image first, the unsigned one after it: both denied,
    // each for its own reason, on both admission paths.
    let (ok, why) = validate(&mut c, &[&stalled, &unsigned], "5s");
    assert!(!ok, "{why}");
    assert!(why.contains("time ran out"), "{why}");
    assert!(
        why.contains("c1") && why.contains("no signature found"),
        "{why}"
    );
    let (ok, why) = image_policy(&mut c, &[&stalled, &unsigned], "5s");
    assert!(!ok && why.contains("no signature found"), "{why}");
    assert!(stall_seen.load(Ordering::SeqCst) > 0, "the stall was asked");
    // The stalled image alone: denied, never "admitted unverified".
    let (ok, why) = validate(&mut c, &[&stalled], "5s");
    assert!(!ok && why.contains("time ran out"), "{why}");
    // Control: a registry that refuses the connection is an error of its
    // own: its image is admitted unverified (logged, counted), the signed
    // one verified, the unsigned one still refused.
    assert_eq!(
        validate(&mut c, &[&down, &signed], "10s"),
        (true, String::new())
    );
    let (ok, why) = validate(&mut c, &[&down, &unsigned], "10s");
    assert!(
        !ok && why.contains("no signature found") && !why.contains("c0"),
        "{why}"
    );
    // A name that does not resolve, or a TLS failure, is not the
    // registry's own answer: denied despite onRegistryError allow.
    let d = Digest::sha256_of(b"w");
    for (image, want) in [
        (
            format!("no-such-registry.invalid/team/w@{d}"),
            "could not be reached",
        ),
        (format!("127.0.0.1:{plain}/team/w@{d}"), "plainHttp"),
    ] {
        let (ok, why) = validate(&mut c, &[&image], "10s");
        assert!(!ok && why.contains(want), "{image}: {why}");
    }
    server.wait_for_log("admitted unverified", Duration::from_secs(30));
    assert!(
        !server
            .log()
            .contains(&format!("{stalled}: admitted unverified"))
    );
    let metrics = c.get("/metrics").unwrap().text();
    let allowed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("image_bouncer_registry_error_allowed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert_eq!(allowed, 2, "{metrics}");
    let timeouts: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("image_bouncer_lookup_timeouts_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(timeouts >= 3, "{metrics}");
}

/// Pushes a referrer manifest for `subject` whose one layer is `layer`
/// (a bundle blob) and whose annotation pads it to about `pad` bytes;
/// returns its descriptor for an index.
fn push_referrer(
    r: &Registry,
    repo: &str,
    layer: (&str, usize),
    pad: usize,
    subject: &str,
) -> serde_json::Value {
    let empty = r.push_blob(repo, b"{}");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": BUNDLE_TYPE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2, "digest": empty},
        "layers": [{"mediaType": BUNDLE_TYPE, "size": layer.1, "digest": layer.0}],
        "subject": {"mediaType": OCI_MANIFEST, "size": 264, "digest": subject},
        "annotations": {"pad": "x".repeat(pad)},
    })
    .to_string();
    let digest = Digest::sha256_of(manifest.as_bytes()).to_string();
    r.push_manifest(repo, &digest, OCI_MANIFEST, manifest.as_bytes());
    serde_json::json!({"mediaType": OCI_MANIFEST, "size": manifest.len(), "digest": digest, "artifactType": BUNDLE_TYPE})
}

/// Lists `descriptors` in the fallback index of `subject`.
fn push_index(r: &Registry, repo: &str, subject: &str, descriptors: &[serde_json::Value]) {
    let index =
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors})
            .to_string();
    r.push_manifest(
        repo,
        &subject.replace(':', "-"),
        OCI_INDEX,
        index.as_bytes(),
    );
}

/// Bytes the registry sent to image-bouncer, and GETs by path, from its
/// access log.
fn served(r: &Registry) -> (u64, std::collections::BTreeMap<String, usize>) {
    let log = r.settled_log();
    let mut bytes = 0;
    let mut gets = std::collections::BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("image-bouncer/")) {
        // ... "GET /v2/... HTTP/1.1" 200 1234 "" "image-bouncer/0.1.0"
        let Some((_, rest)) = line.split_once("\"GET ") else {
            continue;
        };
        let Some((path, after)) = rest.split_once(' ') else {
            continue;
        };
        *gets.entry(path.to_string()).or_insert(0) += 1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        bytes += fields
            .get(2)
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    (bytes, gets)
}

/// Issue 33, 4 and 6: one verification fetches at most 8 MiB in all,
/// referrer manifests included, and each listed descriptor once; a
/// referrer that cannot be fetched or read is skipped and the search goes
/// on, so the real bundle behind junk still verifies.
#[test]
fn referrers_count_against_the_cap_and_junk_is_skipped() {
    let Some(r) = start_with("lookups-referrers", Setup::default()) else {
        return;
    };
    let reg = format!("127.0.0.1:{}", r.port);
    let repo = "team/attested";
    let bundle = fixture(&format!("{BUNDLE_DIR}/oci-attestation.sigstore.json"));
    let bundle_blob = r.push_blob(repo, bundle.as_bytes());
    // Junk first: a manifest that cannot be fetched, one whose bundle is
    // not one; then the real bundle.
    // A referrer whose stored bytes were altered on disk: the registry
    // serves what does not hash to its digest.
    let missing = push_referrer(&r, repo, (&bundle_blob, bundle.len()), 7, ATTESTED);
    std::fs::write(
        r.blob_file(missing["digest"].as_str().unwrap()),
        b"{\"not\": \"what was pushed\"}",
    )
    .unwrap();
    let not_bundle = push_referrer(&r, repo, (&r.push_blob(repo, b"junk"), 4), 0, ATTESTED);
    let real = push_referrer(&r, repo, (&bundle_blob, bundle.len()), 0, ATTESTED);
    push_index(&r, repo, ATTESTED, &[missing.clone(), not_bundle, real]);
    // A subject with 100 referrers listed: five distinct 3 MiB manifests,
    // each listed twenty times.
    let flooded = Digest::sha256_of(b"flooded").to_string();
    let big: Vec<serde_json::Value> = (0..5)
        .map(|i| {
            push_referrer(
                &r,
                repo,
                (&bundle_blob, bundle.len()),
                3 << 20 | i,
                &flooded,
            )
        })
        .collect();
    let listed: Vec<serde_json::Value> = (0..100).map(|i| big[i % 5].clone()).collect();
    push_index(&r, repo, &flooded, &listed);
    let dockercfg = crate::registry::write_dockercfg(&r);
    let (_server, mut c) = start(
        &r.dir,
        "lookups-referrers-server",
        serde_json::json!({
            "registryCredentials": dockercfg.to_str().unwrap(),
            "registries": {(reg.clone()): {"ca": ca_path(&r)}},
            "verifyImages": [{"images": [format!("{reg}/{repo}")], "trustedRoot": fixture_path(&format!("{BUNDLE_DIR}/trusted_root_pgi.json")),
                              "identities": [{"issuer": "https://github.com/login/oauth", "subject": "cody@soyland.com"}]}],
        }),
    );
    assert_eq!(
        validate(&mut c, &[&format!("{reg}/{repo}@{ATTESTED}")], "30s"),
        (true, String::new())
    );
    // Junk alone: refused, each reason counted.
    let lonely = Digest::sha256_of(b"lonely").to_string();
    push_index(&r, repo, &lonely, &[missing]);
    let (ok, why) = validate(&mut c, &[&format!("{reg}/{repo}@{lonely}")], "30s");
    assert!(
        !ok && why.contains("a referrer that could not be fetched"),
        "{why}"
    );

    let (before, _) = served(&r);
    let (ok, why) = validate(&mut c, &[&format!("{reg}/{repo}@{flooded}")], "30s");
    assert!(!ok, "{why}");
    assert!(why.contains("larger than the bytes left to fetch"), "{why}");
    let (after, gets) = served(&r);
    let sent = after - before;
    assert!(sent <= 9 << 20, "{sent} bytes fetched for one image");
    for d in &big {
        let path = format!("/v2/{repo}/manifests/{}", d["digest"].as_str().unwrap());
        assert!(
            gets.get(&path).copied().unwrap_or(0) <= 1,
            "{path}: {gets:?}"
        );
    }
}

/// Issue 33, 7: the lists are judged before anything is looked up, and
/// loopback (or link-local) hosts no `registries` entry names are never
/// contacted, also by a DNS name; counted at the listeners.
#[test]
fn refused_names_get_no_connection() {
    let Some((r, reg)) = registry_with_signed_busybox("lookups-no-contact", "team/busybox") else {
        return;
    };
    let (denied, denied_seen) = silent_listener("127.0.0.1");
    let (unnamed, unnamed_seen) = silent_listener("127.0.0.2");
    let (by_name, by_name_seen) = silent_listener("127.0.0.1");
    let dockercfg = crate::registry::write_dockercfg(&r);
    let policy = |deny: bool| {
        serde_json::json!({
            "registryCredentials": dockercfg.to_str().unwrap(),
            "registries": {
                (reg.clone()): {"ca": ca_path(&r)},
                (format!("127.0.0.1:{denied}")): {"plainHttp": true},
            },
            "deniedRegistries": if deny { serde_json::json!([format!("127.0.0.1:{denied}")]) } else { serde_json::json!([]) },
            "verifyImages": [keyed_rule(serde_json::json!(["*"]))],
            "mutate": {"mutateDigest": ["*"]},
        })
    };
    let (_server, mut c) = start(&r.dir, "lookups-no-contact-server", policy(true));
    let d = Digest::sha256_of(b"z");
    let at_denied = format!("127.0.0.1:{denied}/team/x@{d}");
    let (ok, why) = validate(&mut c, &[&at_denied], "3s");
    assert!(!ok && why.contains("deniedRegistries"), "{why}");
    assert!(!image_policy(&mut c, &[&at_denied], "3s").0);
    let body = pod(&[&format!("127.0.0.1:{denied}/team/x:1")]);
    let v = c
        .post("/mutate?timeout=3s", body.as_bytes())
        .unwrap()
        .json();
    // /mutate looks nothing up for a name the lists refuse.
    assert!(v["response"]["patch"].is_null(), "{v}");
    // Loopback hosts no entry names, as an address and as a name.
    for image in [
        format!("127.0.0.2:{unnamed}/team/x@{d}"),
        format!("localhost:{by_name}/team/x@{d}"),
        // A named host on a port no entry names (another node service).
        format!("127.0.0.1:{by_name}/team/x@{d}"),
    ] {
        let (ok, why) = validate(&mut c, &[&image], "3s");
        assert!(
            !ok && why.contains("loopback, link-local or metadata address"),
            "{image}: {why}"
        );
        let v = c
            .post(
                "/mutate?timeout=3s",
                pod(&[&image.replace(&format!("@{d}"), ":1")]).as_bytes(),
            )
            .unwrap()
            .json();
        let m = v["response"]["status"]["message"].as_str().unwrap_or("");
        assert!(
            v["response"]["allowed"] == false && m.contains("loopback, link-local"),
            "{v}"
        );
    }
    assert_eq!(
        validate(&mut c, &[&format!("{reg}/team/busybox@{BUSYBOX}")], "30s"),
        (true, String::new())
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        denied_seen.load(Ordering::SeqCst),
        0,
        "a denied registry was contacted"
    );
    assert_eq!(
        unnamed_seen.load(Ordering::SeqCst),
        0,
        "127.0.0.2 was contacted"
    );
    assert_eq!(
        by_name_seen.load(Ordering::SeqCst),
        0,
        "localhost was contacted"
    );
    // Control: the listener counts, once the list lets the name through.
    let (_server, mut c) = start(&r.dir, "lookups-no-contact-allowed", policy(false));
    assert!(!validate(&mut c, &[&at_denied], "2s").0);
    assert!(denied_seen.load(Ordering::SeqCst) > 0);
}

/// A plain-HTTP "registry" on loopback that answers every request with
/// a Bearer challenge for the realm `realm(its port)`, counting requests.
fn plain_challenger(realm: impl Fn(u16) -> String) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let realm = realm(port);
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for mut sock in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf);
            let _ = write!(
                sock,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",service=\"r\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (port, count)
}

/// Issue 33, 9: over plain HTTP a challenge can name any realm: the
/// registry's password is never sent to a realm on another host. A realm
/// on the registry's own host still gets it.
#[test]
fn a_plain_http_registrys_password_stays_home() {
    let (realm_port, realm_seen) = silent_listener("127.0.0.2");
    let client = |registry: &str| {
        let creds = Credentials::parse(&format!(
            r#"{{"auths": {{"{registry}": {{"auth": "YWxpY2U6czNjcmV0"}}}}}}"#
        ))
        .unwrap();
        RegistryClient::new(creds, ProxyConfig::default(), &[])
            .with_plain_http([&registry.to_string()])
            .with_named_hosts(["127.0.0.2"])
    };
    let (port, _) = plain_challenger(|_| format!("https://127.0.0.2:{realm_port}/token"));
    let registry = format!("127.0.0.1:{port}");
    let image = ImageRef::parse(&format!("{registry}/team/app:v1")).unwrap();
    let e = client(&registry)
        .resolve(&image, Duration::from_secs(2))
        .unwrap_err()
        .to_string();
    assert!(e.contains("its credentials are not sent there"), "{e}");
    assert_eq!(realm_seen.load(Ordering::SeqCst), 0);
    // Without credentials the realm may be asked, but a loopback realm no
    // `registries` entry names is not contacted either.
    let anonymous = RegistryClient::new(Credentials::default(), ProxyConfig::default(), &[])
        .with_plain_http([&registry]);
    let e = anonymous
        .resolve(&image, Duration::from_secs(2))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("loopback, link-local or metadata address"),
        "{e}"
    );
    assert_eq!(realm_seen.load(Ordering::SeqCst), 0);
    // Control: a realm on the registry's own host is asked for a token.
    let (port, seen) = plain_challenger(|p| format!("http://127.0.0.1:{p}/token"));
    let registry = format!("127.0.0.1:{port}");
    let image = ImageRef::parse(&format!("{registry}/team/app:v1")).unwrap();
    let e = client(&registry)
        .resolve(&image, Duration::from_secs(2))
        .unwrap_err()
        .to_string();
    assert!(e.contains("token endpoint"), "{e}");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        2,
        "the request, then the realm"
    );
}

/// Through a proxy the proxy resolves names, so node-local addresses
/// written in an image or a realm are refused before the proxy is asked;
/// the proxy itself, on loopback, is reached (issue 33, 7).
#[test]
fn a_proxy_is_not_asked_for_node_local_addresses() {
    let (proxy, proxy_seen) = silent_listener("127.0.0.1");
    let env = |k: &str| (k == "HTTPS_PROXY").then(|| format!("http://127.0.0.1:{proxy}"));
    let client = RegistryClient::new(Credentials::default(), ProxyConfig::from_env(&env), &[]);
    let d = Digest::sha256_of(b"p");
    for image in [
        format!("169.254.169.254/team/x@{d}"),
        format!("[fd00:ec2::254]/team/x@{d}"),
        format!("127.0.0.2:8080/team/x@{d}"),
        format!("[::1]:10250/team/x@{d}"),
    ] {
        let r = ImageRef::parse(&image).unwrap();
        let e = client
            .referrers(&r, &d, None, Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("loopback, link-local or metadata"),
            "{image}: {e}"
        );
    }
    assert_eq!(proxy_seen.load(Ordering::SeqCst), 0);
    // Control: another registry goes through the proxy (which stalls).
    let r = ImageRef::parse(&format!("registry.example/team/x@{d}")).unwrap();
    let e = client
        .referrers(&r, &d, None, Duration::from_secs(1))
        .unwrap_err();
    assert!(
        matches!(e, image_bouncer::registry::client::LookupError::TimedOut(_)),
        "{e}"
    );
    assert_eq!(proxy_seen.load(Ordering::SeqCst), 1);
}
