//! Entry points of the fuzz targets (`fuzz/`), also run over the checked-in
//! corpus by `cargo test` (tests/fuzz_corpus.rs). Each takes arbitrary
//! bytes and panics only when an invariant breaks; that panic is the
//! finding. Not used by the server. Besides the webhook's own inputs
//! (references, HTTP, reviews), everything an attacker-controlled
//! registry reaches: manifests, authentication, credentials files, and
//! what signatures carry (bundles, DSSE, certificates, timestamps, Rekor
//! entries, trusted roots), checked against the real vectors of
//! tests/fixtures.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

use crate::credentials::Credentials;
use crate::digest::Digest;
use crate::image_ref::ImageRef;
use crate::mutate::{MutateConfig, PullPolicy, Target};
use crate::policy::{ImagePattern, Policy, PolicySet, RegistryPattern};
use crate::registry::{challenge, client};
use crate::review::workload::Object;
use crate::review::{admission, imagepolicy};
use crate::server::http::{Conn, Limits, ReadError, Transport};
use crate::verify::bundle::Artifact;
use crate::verify::keys::PublicKey;
use crate::verify::legacy::{self, Signed};
use crate::verify::rules::{IdentityRule, Matcher, NamedKey, Trust};
use crate::verify::trust::{Authority, Log, TrustedRoot};
use crate::verify::{self, rekor, tsa};

/// Parsing never panics, and whatever parses prints back to itself.
pub fn image_ref(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match ImageRef::parse(s) {
        Ok(r) => {
            let printed = r.to_string();
            let again = ImageRef::parse(&printed);
            assert_eq!(again.as_ref(), Ok(&r), "{s:?} printed as {printed:?}");
            let _ = r.normalized();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Ok(p) = RegistryPattern::parse(s)
        && let Ok(r) = ImageRef::parse("nginx:1")
    {
        let _ = p.matches(&r);
    }
    let _ = ImagePattern::parse(s);
}

/// Small limits so that the fuzzer reaches them.
const FUZZ_LIMITS: Limits = Limits {
    max_head: 2048,
    max_body: 4096,
    path_caps: &[("/image_policy", 8192)],
    request_timeout: Duration::from_secs(5),
    idle_timeout: Duration::from_secs(5),
    write_timeout: Duration::from_secs(5),
};

/// The HTTP reader on bytes arriving in pieces (the first byte picks the
/// piece size): requests respect the limits, errors are clean.
pub fn http_request(data: &[u8]) {
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    let size = 1 + usize::from(seed % 64);
    let pieces = rest.chunks(size).map(<[u8]>::to_vec);
    let Ok(mut conn) = Conn::new(MemoryTransport::new(pieces), FUZZ_LIMITS) else {
        return;
    };
    for _ in 0..32 {
        match conn.read_request() {
            Ok(req) => {
                assert!(req.body().len() <= FUZZ_LIMITS.body_cap(&req.path));
                assert!(!req.path.contains('?'));
                conn.answered(req);
            }
            Err(ReadError::Reject(code, _)) => {
                assert!((400..=599).contains(&code), "{code}");
                break;
            }
            Err(_) => break,
        }
    }
}

fn policy_and_mutations() -> (PolicySet, MutateConfig) {
    let policy = Policy {
        break_glass: true,
        allowed_registries: vec![
            RegistryPattern::parse("docker.io").unwrap_or_else(|e| unreachable!("{e}")),
        ],
        ..Policy::default()
    };
    let mutate = MutateConfig {
        rewrite_registry: Target::parse("mirror.example.com").ok(),
        image_pull_secrets: vec!["regcred".into()],
        image_pull_policy: Some(PullPolicy::Always),
        default_storage_class: Some("fast".into()),
        mutate_templates: true,
        ..MutateConfig::default()
    };
    (policy.into(), mutate)
}

/// Both review decoders: every answer is a well-formed review of the right
/// kind (ImageReview always; AdmissionReview with the request's uid).
pub fn review(data: &[u8]) {
    let (policy, mutate) = policy_and_mutations();
    if let Ok(read) = imagepolicy::read(data) {
        let reply = imagepolicy::reply(&imagepolicy::decide(read, &policy));
        let v: Value = serde_json::from_slice(&reply).unwrap_or(Value::Null);
        assert_eq!(v["kind"], "ImageReview", "{v}");
        assert!(v["status"]["allowed"].is_boolean(), "{v}");
    }
    fast_reading_agrees(data);
    image_review_reading_agrees(data);
    // The production reading of a review (the fast reader) and serde's
    // must agree, but where the fast reader refuses what it does not read.
    let judged = |read: admission::Validation| {
        let outcome = read.step.decide(&policy);
        admission::validate_reply(&read.head, &outcome)
    };
    let fast = admission::read_validate(data).map(judged);
    let slow = admission::read_validate_serde(data).map(judged);
    assert_eq!(fast.is_ok(), slow.is_ok());
    if let (Ok(a), Ok(b)) = (&fast, &slow) {
        let (a, b): (Value, Value) = (
            serde_json::from_slice(a).unwrap_or_default(),
            serde_json::from_slice(b).unwrap_or_default(),
        );
        // The same verdict, or the production reader refuses what it does
        // not read (serde_json reads it, and would have let it through).
        let unread = a["response"]["status"]["message"]
            .as_str()
            .is_some_and(|m| m == admission::UNREAD);
        assert!(
            a["response"]["allowed"] == b["response"]["allowed"]
                || (unread && a["response"]["allowed"] == false),
            "{a} vs {b}"
        );
        assert_eq!(a["response"]["uid"], b["response"]["uid"]);
    }
    if let Ok(r) = admission::parse(data) {
        for (reply, patch_allowed) in [
            (slow.unwrap_or_default(), false),
            (admission::mutate(&policy, &mutate, &r, None).0, true),
        ] {
            let v: Value = serde_json::from_slice(&reply).unwrap_or(Value::Null);
            assert_eq!(v["kind"], "AdmissionReview", "{v}");
            assert_eq!(v["response"]["uid"].as_str(), Some(r.uid.as_str()), "{v}");
            assert!(v["response"]["allowed"].is_boolean(), "{v}");
            assert!(patch_allowed || v["response"].get("patch").is_none(), "{v}");
        }
    }
}

/// The fast reader (`review::fast`) accepts a review only if serde_json
/// does, and reads from it exactly what the serde derives read: the
/// envelope, and object and oldObject as `workload::Object`.
pub fn fast_reading_agrees(data: &[u8]) {
    let Some(fast) = admission::read_fast(data) else {
        return;
    };
    let slow = match admission::parse(data) {
        Ok(r) => r,
        Err(e) => panic!("the fast reader accepted what serde_json refuses: {e}"),
    };
    assert_eq!(fast.api_version, slow.api_version);
    assert_eq!(fast.uid, slow.uid);
    let decode = |raw: Option<admission::Raw>| {
        raw.map(|raw| match serde_json::from_str::<Object>(raw.get()) {
            Ok(o) => o,
            Err(e) => panic!("the fast reader accepted an object serde refuses: {e}"),
        })
    };
    // Objects apart, the two requests print alike.
    let (mut fast, mut slow) = (fast.request, slow.request);
    let fast_objects = (fast.object.take(), fast.old_object.take());
    let slow_objects = (decode(slow.object.take()), decode(slow.old_object.take()));
    assert_eq!(format!("{fast:?}"), format!("{slow:?}"));
    assert_eq!(format!("{fast_objects:?}"), format!("{slow_objects:?}"));
}

/// The ImageReview fast reader accepts a body only if serde_json does,
/// and reads from it what the serde derives read.
pub fn image_review_reading_agrees(data: &[u8]) {
    let Some(fast) = imagepolicy::ImageReview::read_fast(data) else {
        return;
    };
    match serde_json::from_slice::<imagepolicy::ImageReview>(data) {
        Ok(slow) => assert_eq!(format!("{fast:?}"), format!("{slow:?}")),
        Err(e) => panic!("the fast reader accepted an ImageReview serde_json refuses: {e}"),
    }
}

/// Bodies near the valid ones, for readers that must agree: `count` times
/// one of `bodies` with one to three pieces replaced, removed, doubled or
/// swapped for JSON's special characters (and a few review fields), from a
/// fixed seed, each handed to `each`.
pub fn mutations(bodies: &[Vec<u8>], count: usize, mut each: impl FnMut(&[u8])) {
    const PIECES: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b":",
        b",",
        b"\\",
        b"\\u0041",
        b"\\ud800",
        b"null",
        b"true",
        b"0",
        b"-",
        b".",
        b"e",
        b" ",
        b"\n",
        b"\x01",
        b"\xc3\xa9",
        b"01",
        b"1e5",
        b"\"image\":\"x\",",
        b"\"containers\":null,",
        b"\"metadata\":{},",
        b"\"spec\":[],",
        b"\"uid\":\"u\",",
        b"\"object\":null,",
        b"[[[[[[[[",
        b"\"annotations\":{\"a\":\"b\"},",
        b"\"namespace\":null,",
        b"\"kind\":\"ImageReview\",",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    for _ in 0..count {
        let mut body = bodies[next(bodies.len())].clone();
        for _ in 0..1 + next(3) {
            if body.is_empty() {
                break;
            }
            let at = next(body.len());
            let end = (at + 1 + next(8)).min(body.len());
            match next(4) {
                0 => {
                    body.splice(at..end, PIECES[next(PIECES.len())].iter().copied());
                }
                1 => {
                    body.drain(at..end);
                }
                2 => {
                    let copy = body[at..end].to_vec();
                    body.splice(at..at, copy);
                }
                _ => {
                    body.splice(at..at, PIECES[next(PIECES.len())].iter().copied());
                }
            }
        }
        each(&body);
    }
}

/// A fast reader against serde on [`mutations`] of `bodies`: `agree`
/// checks each body (it panics where the two differ), `reads` says whether
/// the fast reader read it; both outcomes must have come up often, or the
/// mutations did not exercise the reader.
pub fn readers_agree_on_mutations(bodies: &[Vec<u8>], agree: fn(&[u8]), reads: fn(&[u8]) -> bool) {
    let (mut accepted, mut refused) = (0, 0);
    mutations(bodies, 6000, |body| {
        agree(body);
        if reads(body) {
            accepted += 1;
        } else {
            refused += 1;
        }
    });
    assert!(accepted > 500 && refused > 500, "{accepted} {refused}");
}

// What a registry can send: manifests and indexes, authentication
// challenges and token answers, credentials files, and everything a
// signature carries. Each entry point drives its parser as the product
// does, against the real vectors of tests/fixtures (built in, so that a
// fuzzer needs no files), with every check on.

/// A file of tests/fixtures (upstream vectors, unchanged).
macro_rules! fixture {
    ($path:literal) => {
        include_str!(concat!("../tests/fixtures/", $path))
    };
}

/// The trusted roots the passing vectors verify against, one of each.
const ROOTS: [&str; 13] = [
    fixture!("sigstore/trusted-roots/public-good.json"),
    fixture!("sigstore/trusted-roots/staging.json"),
    fixture!("sigstore/sigstore-go/trusted-roots/scaffolding.json"),
    fixture!("cosign/keyless/trusted_root.json"),
    fixture!("sigstore/image-bundle/cosign-oci-attestation-2025/trusted_root_pgi.json"),
    fixture!("sigstore/conformance/bundle-verify/rekor2-happy-path/trusted_root.json"),
    fixture!("sigstore/conformance/bundle-verify/rekor2-dsse-happy-path/trusted_root.json"),
    fixture!("sigstore/conformance/bundle-verify/intoto-with-custom-trust-root/trusted_root.json"),
    fixture!(
        "sigstore/conformance/bundle-verify/bundle-with-sct-with-extensions/trusted_root.json"
    ),
    fixture!("sigstore/conformance/bundle-verify/managed-key-and-trusted-root/trusted_root.json"),
    fixture!(
        "sigstore/conformance/bundle-verify/rekor2-timestamp-with-expired-cert-chain/trusted_root.json"
    ),
    fixture!(
        "sigstore/conformance/bundle-verify/trust-root-tlog-validity-end-inclusive/trusted_root.json"
    ),
    fixture!(
        "sigstore/conformance/bundle-verify/trust-root-tsa-validity-end-inclusive/trusted_root.json"
    ),
];
/// sigstore-python's TSA vectors: a trusted root inside a client config.
const TSA_TRUST_CONFIG: &str = fixture!("sigstore/sigstore-python/tsa/trust_config.json");

/// The keys of the keyed vectors.
const KEYS: [&str; 4] = [
    fixture!("sigstore/image-legacy/keyed-p256-sigstore-rs/cosign.pub"),
    fixture!("sigstore/image-legacy/keyed-rsa-pkcs1-suse-obs/cosign.pub"),
    fixture!("cosign/keyed-p384/cosign.pub"),
    fixture!("sigstore/conformance/bundle-verify/managed-key-happy-path/key.pub"),
];

/// The simple-signing payloads of the legacy vectors (layer blobs).
const PAYLOADS: [&str; 6] = [
    fixture!("sigstore/image-legacy/gha-keyless-2026/payload.json"),
    fixture!("cosign/keyless/payload.json"),
    fixture!("sigstore/image-legacy/keyless-2021-rekord/payload.json"),
    fixture!("sigstore/image-legacy/keyed-p256-sigstore-rs/payload.json"),
    fixture!("sigstore/image-legacy/keyed-rsa-pkcs1-suse-obs/payload.json"),
    fixture!("cosign/keyed-p384/payload.json"),
];

/// The artifact every conformance vector signs.
const A_TXT: &str = fixture!("sigstore/conformance/a.txt");

/// Bundles that carry RFC 3161 timestamps: the signatures they timestamp.
const TIMESTAMPED: [&str; 10] = [
    fixture!("sigstore/conformance/bundle-verify/rekor2-happy-path/bundle.sigstore.json"),
    fixture!(
        "sigstore/conformance/bundle-verify/rekor2-timestamp-with-embedded-cert/bundle.sigstore.json"
    ),
    fixture!(
        "sigstore/conformance/bundle-verify/rekor2-timestamp-without-embedded-cert/bundle.sigstore.json"
    ),
    fixture!(
        "sigstore/conformance/bundle-verify/rekor2-timestamp-with-expired-cert-chain/bundle.sigstore.json"
    ),
    fixture!("sigstore/conformance/bundle-verify/rekor2-dsse-happy-path/bundle.sigstore.json"),
    fixture!(
        "sigstore/conformance/bundle-verify/intoto-with-custom-trust-root/bundle.sigstore.json"
    ),
    fixture!("sigstore/conformance/bundle-verify/managed-key-happy-path/bundle.sigstore.json"),
    fixture!("sigstore/sigstore-python/tsa/bundle.txt.sigstore"),
    fixture!("sigstore/sigstore-python/staging-rekor-v2.txt.sigstore.json"),
    fixture!("sigstore/sigstore-python/a.dsse.staging-rekor-v2.txt.sigstore.json"),
];

/// The image bundle cosign attached in 2025, and the image it signs.
const IMAGE_BUNDLE: &str =
    fixture!("sigstore/image-bundle/cosign-oci-attestation-2025/oci-attestation.sigstore.json");
const IMAGE_DIGEST: &str =
    "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4";
/// A Rekor v2 bundle with a timestamp and a checkpoint (over a.txt).
const REKOR2_BUNDLE: &str =
    fixture!("sigstore/conformance/bundle-verify/rekor2-happy-path/bundle.sigstore.json");

/// The client's TOKEN_LEN_MAX and TOKEN_MAX_TTL.
const TOKEN_LEN_MAX: usize = 16 * 1024;
const TOKEN_MAX_TTL: Duration = Duration::from_secs(3600);
/// Signature layers verified per manifest (each is a full verification).
const LAYERS_VERIFIED: usize = 4;

fn b64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// Every fixture root in one: each vector finds its logs, authorities
/// and timestamp authorities in it, so that one input reaches the deep
/// checks whichever instance signed it.
fn merged_root() -> &'static Arc<TrustedRoot> {
    static ROOT: OnceLock<Arc<TrustedRoot>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let tsa = serde_json::from_str::<Value>(TSA_TRUST_CONFIG)
            .map(|v| v["trustedRoot"].to_string())
            .unwrap_or_default();
        let mut all = TrustedRoot::default();
        for text in ROOTS.iter().copied().chain([tsa.as_str()]) {
            let r = TrustedRoot::parse(text).unwrap_or_else(|e| unreachable!("a fixture: {e}"));
            let same_log = |a: &Log, b: &Log| a.id == b.id && a.key == b.key && a.valid == b.valid;
            let same_authority =
                |a: &Authority, b: &Authority| a.chain == b.chain && a.valid == b.valid;
            add_new(&mut all.tlogs, r.tlogs, same_log);
            add_new(&mut all.ctlogs, r.ctlogs, same_log);
            add_new(&mut all.authorities, r.authorities, same_authority);
            add_new(
                &mut all.timestamp_authorities,
                r.timestamp_authorities,
                same_authority,
            );
        }
        Arc::new(all)
    })
}

/// Adds to `into` the items it does not hold yet.
fn add_new<T>(into: &mut Vec<T>, items: Vec<T>, same: impl Fn(&T, &T) -> bool) {
    for item in items {
        if !into.iter().any(|held| same(held, &item)) {
            into.push(item);
        }
    }
}

/// Any identity that names an issuer: the identity rule must not be what
/// stops a signature that is otherwise good.
fn any_identity() -> IdentityRule {
    let any = || Matcher::regex(".*").unwrap_or_else(|e| unreachable!("{e}"));
    IdentityRule {
        extensions: Vec::new(),
        issuer: any(),
        subject: any(),
    }
}

/// What signatures are checked with: every fixture key, any identity, the
/// merged root; once with every check on, once with the log and SCT
/// checks waived (the timestamp-only paths).
fn trusts() -> &'static [Trust; 2] {
    static TRUSTS: OnceLock<[Trust; 2]> = OnceLock::new();
    TRUSTS.get_or_init(|| {
        let keys = KEYS
            .iter()
            .enumerate()
            .map(|(i, pem)| NamedKey {
                name: format!("key{i}"),
                key: PublicKey::from_pem(pem).unwrap_or_else(|e| unreachable!("a fixture: {e}")),
            })
            .collect();
        let strict = Trust {
            keys,
            identities: vec![any_identity()],
            root: Some(merged_root().clone()),
            ..Trust::default()
        };
        let waived = Trust {
            ignore_tlog: true,
            ignore_sct: true,
            ..strict.clone()
        };
        [strict, waived]
    })
}

/// What every accepted signature must say: the digest asked about, a
/// signer, a trusted time for a certificate, a log entry unless waived.
fn check_signed(s: &Signed, digest: &str, trust: &Trust) {
    assert_eq!(s.digest, digest);
    assert!(!s.signer.is_empty());
    assert_eq!(s.time.is_some(), s.time_source.is_some(), "{s:?}");
    if !s.signer.starts_with("key ") {
        assert!(
            s.time.is_some(),
            "a certificate accepted without a time: {s:?}"
        );
    }
    if !trust.ignore_tlog {
        assert!(s.log_index.is_some_and(|i| i >= 0), "{s:?}");
    }
}

/// The legacy payloads by their layer digest, with the image each signs.
fn payloads() -> &'static [(String, &'static [u8], String)] {
    static PAYLOADS_BY_DIGEST: OnceLock<Vec<(String, &'static [u8], String)>> = OnceLock::new();
    PAYLOADS_BY_DIGEST.get_or_init(|| {
        PAYLOADS
            .iter()
            .map(|p| {
                let v: Value = serde_json::from_str(p).unwrap_or_default();
                let image = v["critical"]["image"]["docker-manifest-digest"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                (
                    Digest::sha256_of(p.as_bytes()).to_string(),
                    p.as_bytes(),
                    image,
                )
            })
            .collect()
    })
}

/// Manifests, indexes, referrers pages and cosign signature manifests,
/// as the client reads them (media type against `Content-Type`, index
/// entries with readable digests) and as the legacy verifier reads them
/// (layers, then each layer's annotations verified over the fixture
/// payload it names, or the first one).
pub fn oci_manifest(data: &[u8]) {
    let stated = serde_json::from_slice::<Value>(data).ok().and_then(|v| {
        v.get("mediaType")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    for content_type in [
        "",
        client::OCI_INDEX,
        "application/vnd.oci.image.manifest.v1+json",
    ] {
        if let Ok(m) = client::manifest_type(data, content_type) {
            if content_type.is_empty() {
                if let Some(s) = &stated {
                    assert_eq!(&m, s);
                }
            } else {
                assert_eq!(m, content_type);
            }
        }
    }
    match client::index_entries(data, "fuzz") {
        Ok(entries) => {
            for d in &entries {
                match Digest::parse(&d.digest) {
                    Ok(parsed) => assert_eq!(parsed.to_string(), d.digest),
                    Err(e) => panic!("an index entry with a bad digest was kept: {e}"),
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let Ok((layers, total)) = legacy::signature_layers(data) else {
        return;
    };
    assert_eq!(layers.len(), total.min(legacy::MAX_LAYERS));
    for layer in layers.iter().take(LAYERS_VERIFIED) {
        let all = payloads();
        let (_, payload, image) = all
            .iter()
            .find(|(d, _, _)| *d == layer.digest)
            .unwrap_or(&all[0]);
        for trust in trusts() {
            if let Ok(s) = legacy::verify_layer(payload, &layer.annotations, image, trust) {
                check_signed(&s, image, trust);
            }
        }
    }
}

/// A token character (RFC 7230 `tchar`): what challenge schemes and
/// parameter names are made of.
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `WWW-Authenticate` challenges and token endpoint answers: challenges
/// have lower-case token names and print back to themselves (quoted,
/// escaped values); a realm is https (or http where allowed); a token
/// kept is non-empty, within its cap, fits a header, and lives at most an
/// hour.
pub fn registry_auth(data: &[u8]) {
    if let Ok(header) = std::str::from_utf8(data)
        && let Ok(challenges) = challenge::parse(header)
    {
        let mut printed = String::new();
        for c in &challenges {
            assert!(!c.scheme.is_empty() && c.scheme.bytes().all(tchar), "{c:?}");
            assert!(!c.scheme.bytes().any(|b| b.is_ascii_uppercase()), "{c:?}");
            printed.push_str(&c.scheme);
            for (i, (name, value)) in c.params.iter().enumerate() {
                assert!(!name.is_empty() && name.bytes().all(tchar), "{c:?}");
                assert!(!name.bytes().any(|b| b.is_ascii_uppercase()), "{c:?}");
                let quoted = value.replace('\\', "\\\\").replace('"', "\\\"");
                printed.push_str(&format!(
                    "{} {name}=\"{quoted}\"",
                    if i == 0 { "" } else { "," }
                ));
            }
            printed.push_str(", ");
            for plain in [false, true] {
                if let Ok(realm) = c.realm(plain) {
                    assert!(
                        realm.starts_with("https://") || (plain && realm.starts_with("http://")),
                        "{realm:?}"
                    );
                }
            }
        }
        let again = challenge::parse(&printed);
        assert_eq!(
            again.as_ref(),
            Ok(&challenges),
            "{header:?} printed as {printed:?}"
        );
    }
    match client::token_answer(data, "fuzz") {
        Ok((token, ttl)) => {
            assert!(
                !token.is_empty() && token.len() <= TOKEN_LEN_MAX,
                "{}",
                token.len()
            );
            assert!(ttl <= TOKEN_MAX_TTL, "{ttl:?}");
            let header = format!("Bearer {token}");
            assert!(
                ureq::http::HeaderValue::from_str(&header).is_ok(),
                "{header:?}"
            );
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// A docker `config.json`: read or refused, and never a secret (an
/// `auth`, the password inside it, a `password` or `identitytoken`) in a
/// problem or in what `Debug` prints, unless the secret is also written
/// somewhere that is printed on purpose (a key, a user name, a helper).
pub fn docker_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let shown = match Credentials::parse(text) {
        Ok(c) => format!("{c:?} {:?}", c.unsupported),
        Err(problems) => {
            assert!(!problems.is_empty());
            problems.join("\n")
        }
    };
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let mut secrets = Vec::new();
    let mut public = vec![
        "not a docker config.json: not JSON, a value of the wrong type, cut short at line column; auth is not base64 of user:password; no auth, username/password or identitytoken; credsStore credHelpers needs a helper program, which image-bouncer does not run: put the credentials in auths; Basic IdentityToken Credentials by_registry unsupported Some None".to_string(),
        v.get("credsStore").map(Value::to_string).unwrap_or_default(),
        v.get("credHelpers").map(Value::to_string).unwrap_or_default(),
    ];
    if let Some(auths) = v.get("auths").and_then(Value::as_object) {
        for (key, entry) in auths {
            public.push(key.clone());
            let field = |name: &str| entry.get(name).and_then(Value::as_str).map(str::to_string);
            public.extend(field("username"));
            secrets.extend(field("password"));
            secrets.extend(field("identitytoken"));
            if let Some(auth) = field("auth") {
                if let Some((user, password)) = b64(auth.trim())
                    .and_then(|d| String::from_utf8(d).ok())
                    .and_then(|d| {
                        d.split_once(':')
                            .map(|(u, p)| (u.to_string(), p.to_string()))
                    })
                {
                    public.push(user);
                    secrets.push(password);
                }
                secrets.push(auth);
            }
        }
    }
    // Registry keys are printed as identities (lower case, canonical).
    let public = format!("{public:?}").to_lowercase();
    for s in secrets.iter().filter(|s| s.len() >= 8) {
        if public.contains(&s.to_lowercase()) || public.contains(&format!("{s:?}").to_lowercase()) {
            continue;
        }
        assert!(
            !shown.contains(s.as_str()),
            "a secret shown: {s:?} in {shown:?}"
        );
    }
}

/// The digest a bundle claims to sign: its DSSE statement's first subject
/// (an image), or its message digest (a file known by its digest).
fn claimed(bundle: &Value) -> Option<(bool, String)> {
    if let Some(payload) = bundle["dsseEnvelope"]["payload"].as_str() {
        let payload = b64(payload)?;
        let subjects = verify::bundle::subjects(&payload).ok()?;
        return subjects.into_iter().next().map(|(d, _)| (true, d));
    }
    let md = &bundle["messageSignature"]["messageDigest"];
    let raw = b64(md["digest"].as_str()?)?;
    (md["algorithm"] == "SHA2_256" && raw.len() == 32)
        .then(|| (false, verify::hex_digest("sha256", &raw)))
}

/// Verifies a bundle for the image or digest it claims, and for the
/// conformance artifact, under both trusts; what is accepted is checked.
fn verify_bundle_all_ways(data: &[u8]) {
    let claim = serde_json::from_slice::<Value>(data)
        .ok()
        .and_then(|v| claimed(&v));
    let a_txt = verify::hex_digest(
        "sha256",
        ring::digest::digest(&ring::digest::SHA256, A_TXT.as_bytes()).as_ref(),
    );
    for trust in trusts() {
        if let Some((image, digest)) = &claim {
            let artifact = if *image {
                Artifact::Image(digest)
            } else {
                Artifact::Digest(digest)
            };
            if let Ok(s) = verify::bundle::verify_artifact(data, &artifact, trust) {
                check_signed(&s, digest, trust);
            }
        }
        if let Ok(s) =
            verify::bundle::verify_artifact(data, &Artifact::File(A_TXT.as_bytes()), trust)
        {
            check_signed(&s, &a_txt, trust);
        }
    }
}

/// Sigstore bundles v0.1–v0.3 (DSSE or message signature; Rekor v1 or
/// v2 entries, proofs, checkpoints; timestamps; certificates and keys),
/// verified against the merged fixture root for what they claim to sign.
pub fn bundle(data: &[u8]) {
    verify_bundle_all_ways(data);
}

/// DSSE envelopes and in-toto statements. A bundle is verified for its
/// statement's first subject; an envelope (`payloadType`) is put into the
/// real 2025 image bundle in place of its own; anything else is taken
/// for a statement and signed into that bundle's envelope as its payload.
/// Statements' subjects are read as the verifier reads them: each digest
/// `algorithm:hex` in lower case.
pub fn dsse_statement(data: &[u8]) {
    let value = serde_json::from_slice::<Value>(data).ok();
    let (bundle, payload) = match value {
        Some(v) if v.get("dsseEnvelope").is_some() => {
            let payload = v["dsseEnvelope"]["payload"].as_str().and_then(b64);
            (data.to_vec(), payload)
        }
        Some(v) if v.get("payloadType").is_some() => {
            let mut b: Value = serde_json::from_str(IMAGE_BUNDLE).unwrap_or_default();
            let payload = v["payload"].as_str().and_then(b64);
            b["dsseEnvelope"] = v;
            (b.to_string().into_bytes(), payload)
        }
        _ => {
            let mut b: Value = serde_json::from_str(IMAGE_BUNDLE).unwrap_or_default();
            b["dsseEnvelope"]["payload"] = base64::engine::general_purpose::STANDARD
                .encode(data)
                .into();
            (b.to_string().into_bytes(), Some(data.to_vec()))
        }
    };
    if let Some(Ok(subjects)) = payload.as_deref().map(verify::bundle::subjects) {
        for (digest, _) in &subjects {
            assert!(digest.contains(':'), "{digest:?}");
            let hex = digest.split_once(':').map_or("", |(_, h)| h);
            assert!(!hex.bytes().any(|b| b.is_ascii_uppercase()), "{digest:?}");
        }
    }
    let in_toto = "application/vnd.in-toto+json";
    let pae = verify::bundle::pae(in_toto, data);
    let head = format!("DSSEv1 {} {in_toto} {} ", in_toto.len(), data.len());
    assert!(pae.starts_with(head.as_bytes()) && pae.ends_with(data));
    verify_bundle_all_ways(&bundle);
}

/// Certificates (DER, or PEM as cosign's annotations carry them: the
/// leaf, then its chain): Fulcio's identity extensions and SANs, the
/// chain to the merged root at a time the leaf was valid, the embedded
/// SCT list against the CT logs (with the issuers the root holds for the
/// leaf), the key; and the server's own DER reader (`der::cert_info`),
/// which must read what x509-parser reads wherever both read the
/// certificate.
pub fn der_certificate(data: &[u8]) {
    let certs: Vec<Vec<u8>> = if data.starts_with(b"-----BEGIN") {
        CertificateDer::pem_slice_iter(data)
            .filter_map(Result::ok)
            .map(|c| c.as_ref().to_vec())
            .collect()
    } else {
        vec![data.to_vec()]
    };
    let Some((leaf, chain)) = certs.split_first() else {
        return;
    };
    let ours = crate::der::cert_info(leaf);
    let _ = verify::fulcio::identity(leaf);
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(leaf) else {
        return;
    };
    // The server reads client certificates webpki has accepted; x509-parser
    // alone is more lenient than either (an extensions list under any tag).
    let leaf_der = CertificateDer::from(leaf.as_slice());
    if let Some(info) = &ours
        && webpki::EndEntityCert::try_from(&leaf_der).is_ok()
    {
        der_reading_agrees(info, &parsed);
    }
    let _ = PublicKey::from_spki(parsed.public_key().raw);
    let root = merged_root();
    let t = parsed.validity().not_before.timestamp().saturating_add(1);
    let _ = verify::fulcio::valid_at(leaf, t);
    let issuers: Vec<Vec<u8>> = match verify::fulcio::verify(leaf, chain, root, t) {
        Ok(v) => {
            assert_eq!(v.leaf_spki, parsed.public_key().raw);
            v.issuer_spkis
        }
        // Unchained (a changed byte breaks the signature): the SCT is
        // still checked, with the keys the root holds for its issuer.
        Err(_) => root
            .authorities
            .iter()
            .flat_map(|a| &a.chain)
            .filter_map(|c| {
                let (_, c) = x509_parser::parse_x509_certificate(c).ok()?;
                (c.subject().as_raw() == parsed.issuer().as_raw())
                    .then(|| c.public_key().raw.to_vec())
            })
            .collect(),
    };
    let _ = verify::sct::verify(leaf, &issuers, root);
}

/// `der::cert_info` (the client certificate checks) against x509-parser
/// on a certificate all three read: the same not-after time, issuer and
/// subject names; and never more than x509-parser reads where the server
/// decides by it (each formally invalid encoding is read differently by
/// each, but the server's reading must not be the laxer one): no DNS name
/// it does not read, clientAuth only if it reads it, a path length at
/// most its own.
fn der_reading_agrees(
    info: &crate::der::CertInfo,
    x: &x509_parser::certificate::X509Certificate<'_>,
) {
    use x509_parser::extensions::GeneralName;
    assert_eq!(info.not_after, x.validity().not_after.timestamp());
    // x509-parser ends a name at its first element that is not an RDN
    // SET, and its raw bytes there (a name cut short): compared only when
    // it read the name whole.
    if let Some(issuer) = crate::der::content(x.issuer().as_raw()) {
        assert_eq!(info.issuer, issuer);
    }
    if let Some(subject) = crate::der::content(x.subject().as_raw()) {
        assert_eq!(info.subject, subject);
    }
    if let Ok(san) = x.subject_alternative_name() {
        let dns: Vec<String> = san
            .map(|s| {
                s.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::DNSName(d) => Some(d.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            info.dns_names.iter().all(|n| dns.contains(n)),
            "{:?} {dns:?}",
            info.dns_names
        );
    }
    if info.client_auth == Some(true) {
        let eku = x.extended_key_usage();
        assert!(
            matches!(&eku, Ok(Some(e)) if e.value.client_auth),
            "clientAuth read where x509-parser reads {eku:?}"
        );
    }
    if let Ok(Some(bc)) = x.basic_constraints()
        && let Some(theirs) = bc.value.path_len_constraint
    {
        assert!(
            info.path_len.is_some_and(|ours| ours <= u64::from(theirs)),
            "path length {:?} where x509-parser reads {theirs}",
            info.path_len
        );
    }
}

/// The signatures the fixture timestamps are over.
fn timestamped_signatures() -> &'static [Vec<u8>] {
    static SIGNATURES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SIGNATURES.get_or_init(|| {
        TIMESTAMPED
            .iter()
            .filter_map(|b| signature_of(&serde_json::from_str(b).ok()?))
            .collect()
    })
}

/// A bundle's signature: the message signature's or the envelope's first.
fn signature_of(bundle: &Value) -> Option<Vec<u8>> {
    bundle["messageSignature"]["signature"]
        .as_str()
        .or(bundle["dsseEnvelope"]["signatures"][0]["sig"].as_str())
        .and_then(b64)
}

/// RFC 3161 timestamps (CMS SignedData over a TSTInfo), as DER, as
/// cosign's legacy annotation, or in a bundle: verified over the bundle's
/// signature, or else over each fixture signature (one of them is the
/// token's imprint), against the merged root's timestamp authorities; a
/// time accepted is one when some authority was valid.
pub fn rfc3161(data: &[u8]) {
    let root = merged_root();
    let value = serde_json::from_slice::<Value>(data).ok();
    let mut signatures: Vec<Vec<u8>> = timestamped_signatures().to_vec();
    let tokens: Vec<Vec<u8>> = match &value {
        Some(v) if v.get("SignedRFC3161Timestamp").is_some() => v["SignedRFC3161Timestamp"]
            .as_str()
            .and_then(b64)
            .into_iter()
            .collect(),
        Some(v) if v.get("verificationMaterial").is_some() => {
            signatures = signature_of(v).into_iter().collect();
            v["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .take(tsa::MAX_TIMESTAMPS)
                        .filter_map(|t| t["signedTimestamp"].as_str().and_then(b64))
                        .collect()
                })
                .unwrap_or_default()
        }
        _ => vec![data.to_vec()],
    };
    for token in &tokens {
        for signature in &signatures {
            if let Ok(t) = tsa::verify(token, signature, root) {
                assert!(
                    root.timestamp_authorities
                        .iter()
                        .any(|a| a.valid.contains(t)),
                    "{t}"
                );
            }
        }
    }
}

/// Rekor v1 entries and checkpoints: a legacy bundle annotation (its SET
/// against the merged root, then its body), an entry body (`hashedrekord`,
/// `rekord`, `dsse`, `intoto`), a checkpoint note against each log of the
/// root; a read entry matches its own contents. And the inclusion proof
/// arithmetic: with the first bytes as index and tree size and the rest
/// as hashes, a proof is accepted exactly when it has the length RFC 9162
/// gives for that leaf.
pub fn rekor(data: &[u8]) {
    let root = merged_root();
    entry_matches_itself(rekor::Entry::parse(data));
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(p) = rekor::Promise::from_legacy_annotation(text) {
            if let Ok(log) = p.verify_set(root) {
                assert!(
                    p.log_index >= 0 && log.valid.contains(p.integrated_time),
                    "{p:?}"
                );
            }
            entry_matches_itself(p.entry());
        }
        for log in &root.tlogs {
            if let Ok((size, _)) = verify::merkle::verify_checkpoint(text, log) {
                assert_eq!(text.lines().nth(1).and_then(|l| l.parse().ok()), Some(size));
            }
        }
    }
    if let (Some(index), Some(size)) = (
        data.get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes),
        data.get(8..16)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes),
    ) {
        let hashes: Vec<[u8; 32]> = data[16..]
            .chunks_exact(32)
            .filter_map(|c| c.try_into().ok())
            .collect();
        let proof_len = (index < size).then(|| {
            let inner = 64 - (index ^ (size - 1)).leading_zeros();
            let border = index.checked_shr(inner).unwrap_or(0).count_ones();
            (inner + border) as usize
        });
        let computed = verify::merkle::root_from_proof(b"entry", index, size, &hashes);
        assert_eq!(
            computed.is_ok(),
            proof_len == Some(hashes.len()),
            "{index} {size} {}",
            hashes.len()
        );
    }
}

/// A log entry read is one that its own contents match.
fn entry_matches_itself(entry: Result<rekor::Entry, String>) {
    let Ok(e) = entry else {
        return;
    };
    assert!(!e.sha256.bytes().any(|b| b.is_ascii_uppercase()));
    let signer = CertificateDer::from_pem_slice(e.signer_pem.as_bytes())
        .map(|c| c.as_ref().to_vec())
        .or_else(|_| {
            rustls::pki_types::SubjectPublicKeyInfoDer::from_pem_slice(e.signer_pem.as_bytes())
                .map(|k| k.as_ref().to_vec())
        });
    let sha256: Option<Vec<u8>> = (e.sha256.len() == 64)
        .then(|| {
            (0..32)
                .map(|i| u8::from_str_radix(e.sha256.get(2 * i..2 * i + 2)?, 16).ok())
                .collect()
        })
        .flatten();
    if let (Ok(signer), Some(sha256)) = (signer, sha256) {
        let matched = e.matches_sha256(&sha256, &e.signature, &signer);
        assert!(matched.is_ok(), "{matched:?}");
    }
}

/// A sigstore `trusted_root.json`: what is read is whole (every chain
/// non-empty and readable, every log found by its ID), and the real
/// image bundle and Rekor v2 bundle are verified against it whatever it
/// holds.
pub fn trusted_root(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(root) = TrustedRoot::parse(text) else {
        return;
    };
    for a in root.authorities.iter().chain(&root.timestamp_authorities) {
        assert!(!a.chain.is_empty());
        for c in &a.chain {
            assert!(x509_parser::parse_x509_certificate(c).is_ok());
        }
    }
    for l in &root.tlogs {
        assert!(root.tlog(&l.id).is_some_and(|f| f.id == l.id));
    }
    for l in &root.ctlogs {
        assert!(root.ctlog(&l.id).is_some_and(|f| f.id == l.id));
    }
    let trust = Trust {
        identities: vec![any_identity()],
        root: Some(Arc::new(root)),
        ..Trust::default()
    };
    if let Ok(s) = verify::bundle::verify(IMAGE_BUNDLE.as_bytes(), IMAGE_DIGEST, &trust) {
        check_signed(&s, IMAGE_DIGEST, &trust);
    }
    let file = Artifact::File(A_TXT.as_bytes());
    let _ = verify::bundle::verify_artifact(REKOR2_BUNDLE.as_bytes(), &file, &trust);
}

/// Input from memory, in pieces, as a client might send it; output is
/// kept: the HTTP reader's input for its tests and fuzz target (never
/// used by the server).
pub struct MemoryTransport {
    pieces: std::collections::VecDeque<Vec<u8>>,
    pub written: Vec<u8>,
}

impl MemoryTransport {
    pub fn new(pieces: impl IntoIterator<Item = Vec<u8>>) -> Self {
        MemoryTransport {
            pieces: pieces.into_iter().collect(),
            written: Vec::new(),
        }
    }
}

impl std::io::Read for MemoryTransport {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let Some(piece) = self.pieces.front_mut() else {
            return Ok(0);
        };
        let n = piece.len().min(out.len());
        out[..n].copy_from_slice(&piece[..n]);
        piece.drain(..n);
        if piece.is_empty() {
            self.pieces.pop_front();
        }
        Ok(n)
    }
}

impl std::io::Write for MemoryTransport {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.written.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Transport for MemoryTransport {
    fn set_read_timeout(&self, _: Option<Duration>) -> std::io::Result<()> {
        Ok(())
    }

    fn set_write_timeout(&self, _: Option<Duration>) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The built-in vectors take the entry points past the parsers: with
    /// the merged root and the fixture keys, the real signatures verify
    /// (a legacy layer, an image bundle, a Rekor v2 bundle with a
    /// timestamp and a checkpoint, a keyed bundle), timestamps verify over
    /// their signatures, and a Fulcio leaf chains and has its SCT checked.
    #[test]
    fn fuzzing_vectors_reach_the_deep_checks() {
        let [strict, waived] = trusts();
        let gha: Value = serde_json::from_str(fixture!(
            "sigstore/image-legacy/gha-keyless-2026/signature-manifest.json"
        ))
        .unwrap();
        let (layers, _) = legacy::signature_layers(gha.to_string().as_bytes()).unwrap();
        let (_, payload, image) = payloads()
            .iter()
            .find(|(d, _, _)| *d == layers[0].digest)
            .unwrap();
        let s = legacy::verify_layer(payload, &layers[0].annotations, image, strict).unwrap();
        check_signed(&s, image, strict);

        let s = verify::bundle::verify(IMAGE_BUNDLE.as_bytes(), IMAGE_DIGEST, strict).unwrap();
        check_signed(&s, IMAGE_DIGEST, strict);
        let v: Value = serde_json::from_str(REKOR2_BUNDLE).unwrap();
        let (image, digest) = claimed(&v).unwrap();
        assert!(!image);
        for trust in [strict, waived] {
            let s = verify::bundle::verify_artifact(
                REKOR2_BUNDLE.as_bytes(),
                &Artifact::Digest(&digest),
                trust,
            )
            .unwrap();
            check_signed(&s, &digest, trust);
        }
        let keyed = fixture!(
            "sigstore/conformance/bundle-verify/managed-key-happy-path/bundle.sigstore.json"
        );
        let file = Artifact::File(A_TXT.as_bytes());
        let s = verify::bundle::verify_artifact(keyed.as_bytes(), &file, strict).unwrap();
        assert!(s.signer.starts_with("key "), "{}", s.signer);

        let verified = TIMESTAMPED
            .iter()
            .filter(|b| {
                let v: Value = serde_json::from_str(b).unwrap();
                let sig = signature_of(&v).unwrap();
                v["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| b64(t["signedTimestamp"].as_str()?))
                    .any(|token| tsa::verify(&token, &sig, merged_root()).is_ok())
            })
            .count();
        assert!(verified >= 6, "{verified}");

        let pem = gha["layers"][0]["annotations"]["dev.sigstore.cosign/certificate"]
            .as_str()
            .unwrap();
        let leaf = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
        let t = parsed.validity().not_before.timestamp() + 1;
        let v = verify::fulcio::verify(leaf.as_ref(), &[], merged_root(), t).unwrap();
        verify::sct::verify(leaf.as_ref(), &v.issuer_spkis, merged_root()).unwrap();
        der_certificate(pem.as_bytes());
    }

    /// The proof-length rule the `rekor` target checks the inclusion proof
    /// against, on a real proof: accepted with its hashes, refused with
    /// one more or one fewer.
    #[test]
    fn fuzzing_proof_lengths_follow_rfc_9162() {
        let v: Value = serde_json::from_str(REKOR2_BUNDLE).unwrap();
        let proof = &v["verificationMaterial"]["tlogEntries"][0]["inclusionProof"];
        let int = |v: &Value| v.as_str().unwrap().parse::<u64>().unwrap();
        let mut data = int(&proof["logIndex"]).to_le_bytes().to_vec();
        data.extend(int(&proof["treeSize"]).to_le_bytes());
        for h in proof["hashes"].as_array().unwrap() {
            data.extend(b64(h.as_str().unwrap()).unwrap());
        }
        let hashes: Vec<[u8; 32]> = data[16..]
            .chunks_exact(32)
            .map(|c| c.try_into().unwrap())
            .collect();
        let index = int(&proof["logIndex"]);
        let size = int(&proof["treeSize"]);
        verify::merkle::root_from_proof(b"entry", index, size, &hashes).unwrap();
        rekor(&data);
        rekor(&data[..data.len() - 32]);
        let mut longer = data.clone();
        longer.extend([7; 32]);
        rekor(&longer);
    }
}
