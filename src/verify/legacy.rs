//! cosign's legacy image signatures: an OCI image at `<repo>:sha256-<hex>.sig`
//! whose layers are simple-signing payloads, each with its signature,
//! certificate, chain and Rekor bundle in the layer's annotations. One
//! layer is verified at a time over its exact payload bytes; a signature
//! is accepted when any layer passes every check its rule requires.

use std::collections::BTreeMap;

use base64::Engine as _;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;

use crate::verify::keys::PublicKey;
use crate::verify::rekor::Promise;
use crate::verify::rules::Trust;

/// The layer media type cosign writes (it does not check it when
/// verifying, nor do we: the payload's content decides).
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const ANN_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
const ANN_CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
const ANN_CHAIN: &str = "dev.sigstore.cosign/chain";
const ANN_BUNDLE: &str = "dev.sigstore.cosign/bundle";
const ANN_TIMESTAMP: &str = "dev.sigstore.cosign/rfc3161timestamp";
/// Signature layers looked at per image, at most (a hostile registry may
/// list thousands).
pub const MAX_LAYERS: usize = 100;
/// A payload larger than this is not a simple-signing payload.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// One signature layer of the `.sig` manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigLayer {
    pub digest: String,
    pub size: u64,
    pub annotations: BTreeMap<String, String>,
}

/// The `sha256-<hex>.sig` tag of a digest.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

/// The layers of a signature manifest, the first MAX_LAYERS of them, and
/// how many there were.
pub fn signature_layers(manifest: &[u8]) -> Result<(Vec<SigLayer>, usize), String> {
    #[derive(Deserialize)]
    struct Manifest {
        #[serde(default)]
        layers: Vec<Layer>,
    }
    #[derive(Deserialize)]
    struct Layer {
        digest: String,
        size: u64,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    }
    let m: Manifest = serde_json::from_slice(manifest)
        .map_err(|e| format!("the signature manifest cannot be read: {e}"))?;
    let total = m.layers.len();
    Ok((
        m.layers
            .into_iter()
            .take(MAX_LAYERS)
            .map(|l| SigLayer {
                digest: l.digest,
                size: l.size,
                annotations: l.annotations,
            })
            .collect(),
        total,
    ))
}

/// What a verified signature says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The digest signed (the one admitted).
    pub digest: String,
    /// `key <name>` or `identity <subject> from issuer <issuer>`.
    pub signer: String,
    /// Which of the rule's listed signers accept it: `keys[<i>]`, or every
    /// `identities[<i>]` whose issuer and subject match, comma-separated
    /// (a threshold counts each signer toward one of them).
    pub listed: String,
    /// Where the signature was: `sigstore bundle` or `legacy signature`
    /// (cosign's `.sig` image).
    pub found_in: &'static str,
    /// The repository name the payload was signed for (reported; cosign
    /// does not compare it, and mirrored images keep their signed name).
    pub reference: String,
    /// The trusted signing time (Unix seconds) and where it came from.
    pub time: Option<i64>,
    pub time_source: Option<&'static str>,
    pub log_index: Option<i64>,
    /// The in-toto statement signed (a DSSE payload, exact bytes), for
    /// attestations; none for a simple-signing payload.
    pub statement: Option<std::sync::Arc<Vec<u8>>>,
}

/// Where a signature verified here was.
const FOUND_IN: &str = "legacy signature";
/// Where an attestation verified here was (cosign's `.att` image).
const FOUND_IN_ATT: &str = "legacy attestation";
/// The payload type of a DSSE envelope holding an in-toto statement.
const IN_TOTO: &str = "application/vnd.in-toto+json";

/// The `sha256-<hex>.att` tag of a digest: cosign's legacy attestations.
pub fn attestation_tag(digest: &str) -> String {
    format!("{}.att", digest.replace(':', "-"))
}

/// The signer, trusted time and log entry of one layer.
struct SignerFacts {
    signer: String,
    listed: String,
    time: Option<i64>,
    time_source: Option<&'static str>,
    log_index: Option<i64>,
}

/// Reads the simple-signing payload: (docker-reference, digest signed).
fn claims(payload: &[u8]) -> Result<(String, String), String> {
    #[derive(Deserialize)]
    struct Payload {
        critical: Critical,
    }
    #[derive(Deserialize)]
    struct Critical {
        identity: Ident,
        image: Image,
        #[serde(rename = "type")]
        kind: String,
    }
    #[derive(Deserialize)]
    struct Ident {
        #[serde(rename = "docker-reference")]
        docker_reference: String,
    }
    #[derive(Deserialize)]
    struct Image {
        #[serde(rename = "docker-manifest-digest")]
        docker_manifest_digest: String,
    }
    let p: Payload = serde_json::from_slice(payload)
        .map_err(|e| format!("the signed payload is not a cosign simple-signing payload: {e}"))?;
    if !p
        .critical
        .kind
        .eq_ignore_ascii_case("cosign container image signature")
    {
        return Err(format!(
            "the signed payload is of type {:?}, not a cosign container image signature",
            p.critical.kind
        ));
    }
    Ok((
        p.critical.identity.docker_reference,
        p.critical.image.docker_manifest_digest,
    ))
}

/// Verifies one layer's signature (`payload` is its blob, already checked
/// against the layer digest) as a signature of `digest` under `trust`.
pub fn verify_layer(
    payload: &[u8],
    annotations: &BTreeMap<String, String>,
    digest: &str,
    trust: &Trust,
) -> Result<Signed, String> {
    let (reference, signed_digest) = claims(payload)?;
    if signed_digest != digest {
        return Err(format!(
            "a signature for another digest ({})",
            crate::verify::clipped(&signed_digest, 80)
        ));
    }
    let signature = annotations
        .get(ANN_SIGNATURE)
        .ok_or("a signature layer without a signature")?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| "a signature that is not base64")?;
    let f = check_signer(payload, payload, &signature, annotations, trust)?;
    Ok(Signed {
        digest: digest.to_string(),
        signer: f.signer,
        listed: f.listed,
        found_in: FOUND_IN,
        reference,
        time: f.time,
        time_source: f.time_source,
        log_index: f.log_index,
        statement: None,
    })
}

/// Verifies one layer of a `.att` image (`envelope` is its blob, already
/// checked against the layer digest): a DSSE envelope of an in-toto
/// statement naming `digest`, its one signature over the envelope's
/// pre-authentication encoding by a signer `trust` accepts, with the same
/// log, certificate and time checks as a signature (the log entry is an
/// `intoto` entry of the statement).
pub fn verify_attestation_layer(
    envelope: &[u8],
    annotations: &BTreeMap<String, String>,
    digest: &str,
    trust: &Trust,
) -> Result<Signed, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Envelope {
        payload_type: String,
        payload: String,
        signatures: Vec<Sig>,
    }
    #[derive(Deserialize)]
    struct Sig {
        sig: String,
    }
    let e: Envelope = serde_json::from_slice(envelope)
        .map_err(|e| format!("the attestation layer is not a DSSE envelope: {e}"))?;
    if e.payload_type != IN_TOTO {
        return Err(format!(
            "a DSSE envelope of type {:?}, not an in-toto statement",
            crate::verify::clipped(&e.payload_type, 80)
        ));
    }
    let [sig] = e.signatures.as_slice() else {
        return Err(format!(
            "a DSSE envelope with {} signatures (exactly one is accepted)",
            e.signatures.len()
        ));
    };
    let b64 = |s: &str, what: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| format!("{what} is not base64"))
    };
    let payload = b64(&e.payload, "the DSSE payload")?;
    let signature = b64(&sig.sig, "the DSSE signature")?;
    let reference = crate::verify::bundle::subject_named(&payload, digest, "a statement")?;
    let pae = crate::verify::bundle::pae(&e.payload_type, &payload);
    let f = check_signer(&pae, &payload, &signature, annotations, trust)?;
    Ok(Signed {
        digest: digest.to_string(),
        signer: f.signer,
        listed: f.listed,
        found_in: FOUND_IN_ATT,
        reference,
        time: f.time,
        time_source: f.time_source,
        log_index: f.log_index,
        statement: Some(std::sync::Arc::new(payload)),
    })
}

/// Who made `signature` over `signed` (a configured key, or the layer's
/// certificate, chained and accepted at every trusted time), and the log
/// entry that logged it (over `logged`: the payload itself, or a DSSE
/// envelope's statement).
// One function on purpose, cosign's checks in order (key, bundle promise, certificate, times,
// chain, SCT, identity), each depending on the one before.
fn check_signer(
    signed: &[u8],
    logged: &[u8],
    signature: &[u8],
    annotations: &BTreeMap<String, String>,
    trust: &Trust,
) -> Result<SignerFacts, String> {
    let promise = annotations
        .get(ANN_BUNDLE)
        .map(|b| Promise::from_legacy_annotation(b))
        .transpose()?;
    // Keyed: any configured key that verifies.
    if let Some((i, k)) = trust
        .keys
        .iter()
        .enumerate()
        .find(|(_, k)| k.key.verify(signed, signature))
    {
        let (time, log_index) = if trust.ignore_tlog {
            (None, None)
        } else {
            let root = trust
                .root
                .as_deref()
                .ok_or("no trusted root to check the log entry with")?;
            let p = promise
                .as_ref()
                .ok_or("the signature has no transparency log entry")?;
            p.verify_set(root)?;
            p.entry()?.matches(logged, signature, &k.key.spki)?;
            (Some(p.integrated_time), Some(p.log_index))
        };
        return Ok(SignerFacts {
            signer: k.words(),
            listed: format!("keys[{i}]"),
            time,
            time_source: time.map(|_| "transparency log (SET)"),
            log_index,
        });
    }
    let Some(cert_pem) = annotations.get(ANN_CERTIFICATE) else {
        return Err(if trust.keys.is_empty() {
            "a signature with no certificate (signed with a key, and this rule trusts identities only)".into()
        } else {
            "a signature by an unknown key".into()
        });
    };
    if trust.identities.is_empty() {
        return Err("a keyless signature, and this rule trusts keys only".into());
    }
    let leaf = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|_| "the signing certificate is not PEM")?;
    let chain: Vec<Vec<u8>> = annotations
        .get(ANN_CHAIN)
        .map(|c| {
            CertificateDer::pem_slice_iter(c.as_bytes())
                .filter_map(Result::ok)
                .map(|c| c.as_ref().to_vec())
                .collect()
        })
        .unwrap_or_default();
    let identity = crate::verify::fulcio::identity(leaf.as_ref())?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("the signing certificate cannot be read: {e}"))?;
    let leaf_key = PublicKey::from_spki(parsed.public_key().raw)?;
    if !leaf_key.verify(signed, signature) {
        return Err("the signature does not verify with its certificate's key".into());
    }
    let root = trust
        .root
        .as_deref()
        .ok_or("no trusted root to check the certificate with")?;
    // Trusted times: the log's SET (unless ignoreTlog, when the log is not
    // asked at all) and each RFC 3161 timestamp over the signature that
    // verifies; the certificate must hold at every one.
    let mut times: Vec<(i64, &'static str)> = Vec::new();
    let mut log_index = None;
    if !trust.ignore_tlog {
        let p = promise
            .as_ref()
            .ok_or("the keyless signature has no transparency log entry")?;
        p.verify_set(root)?;
        p.entry()?.matches(logged, signature, leaf.as_ref())?;
        times.push((p.integrated_time, "transparency log (SET)"));
        log_index = Some(p.log_index);
    }
    let mut tsa_refused = None;
    if let Some(ts) = annotations.get(ANN_TIMESTAMP) {
        #[derive(Deserialize)]
        struct Timestamp {
            #[serde(rename = "SignedRFC3161Timestamp")]
            signed: String,
        }
        let t: Timestamp = serde_json::from_str(ts)
            .map_err(|e| format!("the RFC 3161 timestamp annotation cannot be read: {e}"))?;
        let token = base64::engine::general_purpose::STANDARD
            .decode(t.signed.trim())
            .map_err(|_| "the RFC 3161 timestamp is not base64")?;
        match crate::verify::tsa::verify(&token, signature, root) {
            Ok(t) => times.push((t, "RFC 3161 timestamp")),
            Err(e) => tsa_refused = Some(e),
        }
    }
    if times.is_empty() {
        return Err(match tsa_refused {
            Some(why) => format!("a keyless signature needs a trusted signing time, and it has none: {why}"),
            None => "a keyless signature needs a trusted signing time: with ignoreTlog and no RFC 3161 timestamp it has none".into(),
        });
    }
    let mut verified = None;
    for (t, _) in &times {
        verified = Some(crate::verify::fulcio::verify(
            leaf.as_ref(),
            &chain,
            root,
            *t,
        )?);
    }
    let verified = verified.ok_or("no trusted signing time")?;
    if !trust.ignore_sct {
        crate::verify::sct::verify(leaf.as_ref(), &verified.issuer_spkis, root)?;
    }
    let (signer, listed) = trust.accept(&identity)?;
    Ok(SignerFacts {
        signer,
        listed,
        time: times.first().map(|(t, _)| *t),
        time_source: times.first().map(|(_, s)| *s),
        log_index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::rules::{IdentityRule, Matcher, NamedKey};
    use crate::verify::trust::TrustedRoot;
    use std::sync::Arc;

    use crate::verify::fixture;

    fn root(path: &str) -> Option<Arc<TrustedRoot>> {
        Some(Arc::new(TrustedRoot::parse(&fixture(path)).unwrap()))
    }

    fn identity(issuer: &str, subject: Matcher) -> IdentityRule {
        IdentityRule {
            issuer: Matcher::Exact(issuer.into()),
            subject,
            extensions: Vec::new(),
        }
    }

    /// One byte changed where the payload stays a valid payload for the
    /// same digest: the case of the signed repository's first letter.
    fn changed(payload: &[u8]) -> Vec<u8> {
        let mut p = payload.to_vec();
        let at = String::from_utf8_lossy(payload)
            .find("\"docker-reference\":\"")
            .unwrap()
            + 20;
        p[at] ^= 0x20;
        assert!(claims(&p).is_ok());
        p
    }

    const GHA: &str = "https://token.actions.githubusercontent.com";
    const GHA_SUBJECT: &str = "https://github.com/salrashid123/go-bazel-github-workflow/.github/workflows/release.yaml@refs/tags/v0.0.30";

    /// The real 2026 GitHub Actions keyless signature of a multi-arch
    /// index: admitted for its identity with SCT and SET checked, and for
    /// nothing else.
    #[test]
    fn real_keyless_2026_signature() {
        let m: serde_json::Value = serde_json::from_str(&fixture(
            "sigstore/image-legacy/gha-keyless-2026/signature-manifest.json",
        ))
        .unwrap();
        let (layers, total) = signature_layers(m.to_string().as_bytes()).unwrap();
        assert_eq!(total, 1);
        let payload = fixture("sigstore/image-legacy/gha-keyless-2026/payload.json").into_bytes();
        assert_eq!(
            crate::digest::Digest::sha256_of(&payload).to_string(),
            layers[0].digest
        );
        let digest = "sha256:c05263d2ff654c3a94243662440913f045075d59c436e2c69e9145ec2b87a321";
        let trust = Trust {
            identities: vec![identity(GHA, Matcher::Exact(GHA_SUBJECT.into()))],
            root: root("sigstore/trusted-roots/public-good.json"),
            ..Trust::default()
        };
        let ann = &layers[0].annotations;
        let s = verify_layer(&payload, ann, digest, &trust).unwrap();
        assert_eq!(s.reference, "index.docker.io/salrashid123/server_image");
        assert_eq!(s.log_index, Some(1_004_096_555));
        assert!(s.signer.contains(GHA_SUBJECT), "{}", s.signer);
        // One byte changed, another digest, another identity, a prefix regex.
        let e = verify_layer(&changed(&payload), ann, digest, &trust).unwrap_err();
        assert!(!e.is_empty());
        let other = format!("sha256:{}", "1".repeat(64));
        assert!(
            verify_layer(&payload, ann, &other, &trust)
                .unwrap_err()
                .contains("another digest")
        );
        for subject in [
            Matcher::Exact("https://github.com/salrashid123/other/.github/workflows/release.yaml@refs/tags/v0.0.30".into()),
            Matcher::regex("https://github.com/salrashid123/").unwrap(),
            Matcher::regex("https://github.com/salrashid123/go-bazel-github-workflow/.github/workflows/release.yaml").unwrap(),
        ] {
            let t = Trust { identities: vec![identity(GHA, subject)], ..trust.clone() };
            assert!(verify_layer(&payload, ann, digest, &t).unwrap_err().contains("not accepted"));
        }
        let t = Trust {
            identities: vec![identity(
                "https://accounts.google.com",
                Matcher::Exact(GHA_SUBJECT.into()),
            )],
            ..trust.clone()
        };
        assert!(
            verify_layer(&payload, ann, digest, &t)
                .unwrap_err()
                .contains("not accepted")
        );
        let t = Trust {
            identities: vec![identity(
                GHA,
                Matcher::regex("https://github.com/salrashid123/.+@refs/tags/v.+").unwrap(),
            )],
            ..trust.clone()
        };
        verify_layer(&payload, ann, digest, &t).unwrap();
        // Pinned to the source repository and ref: the real certificate's
        // extensions must all be there and equal.
        let pinned = |extensions: &[(&'static str, &str)]| Trust {
            identities: vec![IdentityRule {
                extensions: extensions
                    .iter()
                    .map(|(k, v)| (*k, v.to_string()))
                    .collect(),
                ..identity(
                    GHA,
                    Matcher::regex("https://github.com/salrashid123/.+").unwrap(),
                )
            }],
            ..trust.clone()
        };
        let repo = "https://github.com/salrashid123/go-bazel-github-workflow";
        verify_layer(
            &payload,
            ann,
            digest,
            &pinned(&[
                ("sourceRepositoryURI", repo),
                ("sourceRepositoryRef", "refs/tags/v0.0.30"),
                ("runnerEnvironment", "github-hosted"),
            ]),
        )
        .unwrap();
        for (extensions, says) in [
            (
                vec![("sourceRepositoryRef", "refs/heads/main")],
                "sourceRepositoryRef is \"refs/tags/v0.0.30\", not \"refs/heads/main\"",
            ),
            (
                vec![(
                    "sourceRepositoryURI",
                    "https://github.com/salrashid123/go-bazel-github-workflo",
                )],
                "not accepted: its certificate's sourceRepositoryURI",
            ),
            (
                vec![
                    ("sourceRepositoryURI", repo),
                    ("deploymentEnvironment", "prod"),
                ],
                "has no deploymentEnvironment",
            ),
        ] {
            let e = verify_layer(&payload, ann, digest, &pinned(&extensions)).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
        // No CT logs in the root: the SCT cannot be checked, so refused
        // unless ignoreSCT.
        let mut no_ct = (*trust.root.clone().unwrap()).clone();
        no_ct.ctlogs.clear();
        let t = Trust {
            root: Some(Arc::new(no_ct)),
            ..trust.clone()
        };
        assert!(
            verify_layer(&payload, ann, digest, &t)
                .unwrap_err()
                .contains("SCT")
        );
        let t = Trust {
            ignore_sct: true,
            ..t
        };
        verify_layer(&payload, ann, digest, &t).unwrap();
        // Keyless with the log waived has no trusted time: refused.
        let t = Trust {
            ignore_tlog: true,
            ..trust.clone()
        };
        assert!(
            verify_layer(&payload, ann, digest, &t)
                .unwrap_err()
                .contains("trusted signing time")
        );
        // A rule of keys only refuses it.
        let t = Trust {
            identities: vec![],
            keys: vec![NamedKey {
                name: "k".into(),
                key: PublicKey::from_pem(&fixture("cosign/keyed-p384/cosign.pub")).unwrap(),
            }],
            ..trust.clone()
        };
        assert!(
            verify_layer(&payload, ann, digest, &t)
                .unwrap_err()
                .contains("trusts keys only")
        );
    }

    fn annotations(dir: &str, bundle: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                ANN_SIGNATURE.to_string(),
                fixture(&format!("{dir}/signature.b64")).trim().to_string(),
            ),
            (
                ANN_CERTIFICATE.to_string(),
                fixture(&format!("{dir}/certificate.pem")),
            ),
            (ANN_CHAIN.to_string(), fixture(&format!("{dir}/chain.pem"))),
            (ANN_BUNDLE.to_string(), fixture(bundle)),
        ])
    }

    /// cosign's 2023 keyless vector (Ratify's): admitted for
    /// sozercan@gmail.com at GitHub's OAuth issuer; the broken SET is not.
    #[test]
    fn real_keyless_2023_signature() {
        let payload = fixture("cosign/keyless/payload.json").into_bytes();
        let (_, digest) = claims(&payload).unwrap();
        let trust = Trust {
            identities: vec![identity(
                "https://github.com/login/oauth",
                Matcher::Exact("sozercan@gmail.com".into()),
            )],
            root: root("cosign/keyless/trusted_root.json"),
            // This root lists no CT logs (PROVENANCE.md).
            ignore_sct: true,
            ..Trust::default()
        };
        let ann = annotations("cosign/keyless", "cosign/keyless/bundle.json");
        let s = verify_layer(&payload, &ann, &digest, &trust).unwrap();
        assert_eq!(s.time, Some(1_676_524_985));
        assert!(verify_layer(&changed(&payload), &ann, &digest, &trust).is_err());
        let bad = annotations("cosign/keyless", "cosign/keyless-bad-set/bundle.json");
        assert!(verify_layer(&payload, &bad, &digest, &trust).is_err());
        let mut no_bundle = ann.clone();
        no_bundle.remove(ANN_BUNDLE);
        assert!(
            verify_layer(&payload, &no_bundle, &digest, &trust)
                .unwrap_err()
                .contains("no transparency log entry")
        );
    }

    /// The 2021 signature chains and its SET verifies, but its certificate
    /// names no OIDC issuer, so no identity rule (which always names one)
    /// accepts it.
    #[test]
    fn real_2021_signature_without_an_issuer_is_not_accepted() {
        let dir = "sigstore/image-legacy/keyless-2021-rekord";
        let payload = fixture(&format!("{dir}/payload.json")).into_bytes();
        let (_, digest) = claims(&payload).unwrap();
        let ann = BTreeMap::from([
            (
                ANN_SIGNATURE.to_string(),
                fixture(&format!("{dir}/signature.b64")).trim().to_string(),
            ),
            (
                ANN_CERTIFICATE.to_string(),
                fixture(&format!("{dir}/certificate.pem")),
            ),
            (
                ANN_BUNDLE.to_string(),
                fixture(&format!("{dir}/bundle-annotation.json")),
            ),
        ]);
        let trust = Trust {
            identities: vec![IdentityRule {
                issuer: Matcher::regex(".*").unwrap(),
                subject: Matcher::Exact("flavio@castelli.me".into()),
                extensions: Vec::new(),
            }],
            root: root("sigstore/trusted-roots/public-good.json"),
            ignore_sct: true,
            ..Trust::default()
        };
        let e = verify_layer(&payload, &ann, &digest, &trust).unwrap_err();
        assert!(e.contains("from issuer \"(none)\" is not accepted"), "{e}");
    }

    /// The real keyed signatures, with the log waived (none was written):
    /// each key admits its own, and refuses with another key, a changed
    /// byte, or when a log entry is required.
    #[test]
    fn real_keyed_signatures() {
        for dir in [
            "sigstore/image-legacy/keyed-p256-sigstore-rs",
            "sigstore/image-legacy/keyed-rsa-pkcs1-suse-obs",
            "cosign/keyed-p384",
        ] {
            let payload = fixture(&format!("{dir}/payload.json")).into_bytes();
            let (_, digest) = claims(&payload).unwrap();
            let ann = BTreeMap::from([(
                ANN_SIGNATURE.to_string(),
                fixture(&format!("{dir}/signature.b64")).trim().to_string(),
            )]);
            let key = NamedKey {
                name: "cosign.pub".into(),
                key: PublicKey::from_pem(&fixture(&format!("{dir}/cosign.pub"))).unwrap(),
            };
            let trust = Trust {
                keys: vec![key],
                ignore_tlog: true,
                ..Trust::default()
            };
            let s = verify_layer(&payload, &ann, &digest, &trust).unwrap();
            assert!(s.signer.starts_with("key cosign.pub"), "{}", s.signer);
            assert!(
                verify_layer(&changed(&payload), &ann, &digest, &trust)
                    .unwrap_err()
                    .contains("unknown key"),
                "{dir}"
            );
            let other = NamedKey {
                name: "other".into(),
                key: PublicKey::from_pem(&fixture(
                    "sigstore/image-legacy/keyed-p256-sigstore-rs/other.pub",
                ))
                .unwrap(),
            };
            let t = Trust {
                keys: vec![other],
                ..trust.clone()
            };
            assert!(
                verify_layer(&payload, &ann, &digest, &t)
                    .unwrap_err()
                    .contains("unknown key")
            );
            let t = Trust {
                ignore_tlog: false,
                root: root("sigstore/trusted-roots/public-good.json"),
                ..trust.clone()
            };
            assert!(
                verify_layer(&payload, &ann, &digest, &t)
                    .unwrap_err()
                    .contains("no transparency log entry")
            );
        }
    }
}
