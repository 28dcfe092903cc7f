//! Fulcio certificates (keyless signing): the leaf is chained to a
//! certificate authority of the trusted root **at the trusted signing
//! time** (never "now": Fulcio certificates live ten minutes), with the
//! code-signing EKU; every certificate of the path and the authority's
//! `validFor` must hold at that time. Then what the certificate says of
//! its holder: the SAN (URI, e-mail or Fulcio's otherName) and the OIDC
//! issuer (extension `.1`, raw, and `.8`, DER; both present and different
//! is refused), and the build and source extensions (`.9` onward, DER
//! UTF8Strings, named as sigstore's clients name them; the older
//! GitHub-only `.2`–`.6`, raw strings, stand in where their successors
//! are absent).

use rustls::pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::*;

use crate::verify::trust::TrustedRoot;

/// id-kp-codeSigning, 1.3.6.1.5.5.7.3.3, DER content octets.
const EKU_CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
/// Fulcio's OIDC issuer extensions (raw string; DER UTF8String) and the
/// otherName SAN type (username identities).
const OID_ISSUER_V1: &str = "1.3.6.1.4.1.57264.1.1";
const OID_ISSUER_V2: &str = "1.3.6.1.4.1.57264.1.8";
const OID_OTHERNAME_SAN: &str = "1.3.6.1.4.1.57264.1.7";

/// The build and source extensions (1.3.6.1.4.1.57264.1.N, DER
/// UTF8Strings) by their last arc, with the names sigstore's clients give
/// them (Fulcio's `docs/oid-info.md`).
pub const EXTENSIONS: [(u32, &str); 15] = [
    (9, "buildSignerURI"),
    (10, "buildSignerDigest"),
    (11, "runnerEnvironment"),
    (12, "sourceRepositoryURI"),
    (13, "sourceRepositoryDigest"),
    (14, "sourceRepositoryRef"),
    (15, "sourceRepositoryIdentifier"),
    (16, "sourceRepositoryOwnerURI"),
    (17, "sourceRepositoryOwnerIdentifier"),
    (18, "buildConfigURI"),
    (19, "buildConfigDigest"),
    (20, "buildTrigger"),
    (21, "runInvocationURI"),
    (22, "sourceRepositoryVisibilityAtSigning"),
    (23, "deploymentEnvironment"),
];

/// The deprecated GitHub Actions extensions (raw strings) that say the
/// same as a newer one, in the same form: `.2` workflow trigger, `.3`
/// workflow commit, `.6` workflow ref. (`.4`, the workflow's name, has no
/// successor; `.5`, the repository as `owner/name`, is the successor's
/// value without `https://github.com/`, and stands in for it only for
/// GitHub's own issuer.)
const LEGACY: [(u32, &str); 3] = [
    (2, "buildTrigger"),
    (3, "sourceRepositoryDigest"),
    (6, "sourceRepositoryRef"),
];
const LEGACY_REPOSITORY: u32 = 5;
const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";

/// Who a certificate was issued to, as Fulcio wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// SAN values: URIs, e-mail addresses, Fulcio otherName usernames.
    pub subjects: Vec<String>,
    /// The OIDC issuer, if the certificate names one.
    pub issuer: Option<String>,
    /// The build and source extensions present, by name.
    pub extensions: std::collections::BTreeMap<&'static str, String>,
}

/// A leaf that chained to the trusted root at the time given.
#[derive(Debug, Clone)]
pub struct Verified {
    pub identity: Identity,
    /// The SubjectPublicKeyInfo of each certificate that may have issued
    /// the leaf (for the SCT's issuer key hash).
    pub issuer_spkis: Vec<Vec<u8>>,
    /// The leaf's own key.
    pub leaf_spki: Vec<u8>,
    /// Which authority (its URI).
    pub authority: String,
}

/// Reads a leaf's identity (no trust implied).
pub fn identity(leaf: &[u8]) -> Result<Identity, String> {
    let (_, cert) = parse_x509_certificate(leaf)
        .map_err(|e| format!("the signing certificate cannot be read: {e}"))?;
    let mut subjects = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => subjects.push(u.to_string()),
                GeneralName::RFC822Name(e) => subjects.push(e.to_string()),
                GeneralName::OtherName(oid, value) if oid.to_id_string() == OID_OTHERNAME_SAN => {
                    subjects
                        .push(utf8_string(value).ok_or("the otherName SAN is not a UTF8String")?);
                }
                _ => {}
            }
        }
    }
    let mut v1 = None;
    let mut v2 = None;
    let mut extensions = std::collections::BTreeMap::new();
    let mut legacy = std::collections::BTreeMap::new();
    for ext in cert.extensions() {
        let arc = ext
            .oid
            .to_id_string()
            .strip_prefix("1.3.6.1.4.1.57264.1.")
            .and_then(|n| n.parse::<u32>().ok());
        if let Some((_, name)) = EXTENSIONS.iter().find(|(n, _)| Some(*n) == arc) {
            let value = utf8_string(ext.value)
                .ok_or_else(|| format!("the certificate's {name} extension is not a UTF8String"))?;
            if extensions.insert(*name, value).is_some() {
                return Err(format!("the certificate has two {name} extensions"));
            }
            continue;
        }
        if let Some(n @ 2..=6) = arc {
            let value = String::from_utf8(ext.value.to_vec())
                .map_err(|_| format!("the certificate's extension .{n} is not UTF-8"))?;
            legacy.insert(n, value);
            continue;
        }
        match ext.oid.to_id_string().as_str() {
            OID_ISSUER_V1 => {
                v1 = Some(
                    String::from_utf8(ext.value.to_vec())
                        .map_err(|_| "the issuer extension (.1) is not UTF-8")?,
                )
            }
            OID_ISSUER_V2 => {
                v2 = Some(
                    utf8_string(ext.value)
                        .ok_or("the issuer extension (.8) is not a UTF8String")?,
                )
            }
            _ => {}
        }
    }
    let issuer = match (v1, v2) {
        (Some(a), Some(b)) if a != b => {
            return Err(format!(
                "the certificate names two OIDC issuers ({a:?} in .1, {b:?} in .8)"
            ));
        }
        (a, b) => b.or(a),
    };
    for (n, name) in LEGACY {
        if let Some(v) = legacy.remove(&n) {
            extensions.entry(name).or_insert(v);
        }
    }
    if let Some(repository) = legacy.remove(&LEGACY_REPOSITORY)
        && issuer.as_deref() == Some(GITHUB_ISSUER)
    {
        extensions
            .entry("sourceRepositoryURI")
            .or_insert(format!("https://github.com/{repository}"));
    }
    Ok(Identity {
        subjects,
        issuer,
        extensions,
    })
}

/// A DER UTF8String, possibly inside an explicit `[0]` (otherName).
fn utf8_string(mut der: &[u8]) -> Option<String> {
    if der.first() == Some(&0xA0) {
        der = crate::der::content(der)?;
    }
    if der.first() != Some(&0x0C) {
        return None;
    }
    String::from_utf8(crate::der::content(der)?.to_vec()).ok()
}

/// Chains `leaf` (with `extra` certificates the signature carried, used
/// only as intermediates) to an authority of `root` valid at `t` (Unix
/// seconds), requiring the code-signing EKU, and every certificate of the
/// chain valid at `t`.
pub fn verify(
    leaf: &[u8],
    extra: &[Vec<u8>],
    root: &TrustedRoot,
    t: i64,
) -> Result<Verified, String> {
    if t < 0 {
        return Err("the signing time is before 1970".into());
    }
    let identity = identity(leaf)?;
    let (_, cert) = parse_x509_certificate(leaf)
        .map_err(|e| format!("the signing certificate cannot be read: {e}"))?;
    let leaf_der = CertificateDer::from(leaf);
    let end = webpki::EndEntityCert::try_from(&leaf_der).map_err(|e| {
        format!(
            "the signing certificate cannot be used: {}",
            webpki_text(&e)
        )
    })?;
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(t as u64));
    let mut last = String::from("no certificate authority in the trusted root");
    for ca in &root.authorities {
        if !ca.valid.contains(t) {
            last = format!(
                "no certificate authority of the trusted root was valid at the signing time {}",
                crate::time::rfc3339(t)
            );
            continue;
        }
        // Every certificate of the authority's chain is trust material of
        // the root (written there by whoever vouched for the root), so each
        // may anchor a path: a leaf issued by the intermediate is checked
        // against it directly, one signature instead of two. Each must be
        // valid at the signing time, which the path builder does not check
        // for anchors.
        if ca.chain.iter().any(|c| !valid_at(c, t)) {
            last = format!(
                "a certificate of {}'s chain was not valid at the signing time",
                ca.uri
            );
            continue;
        }
        match chain_to(
            &end,
            &ca.chain,
            extra.iter().map(Vec::as_slice),
            time,
            EKU_CODE_SIGNING,
        ) {
            Ok(_) => {
                let issuer_spkis = ca
                    .chain
                    .iter()
                    .chain(extra)
                    .filter_map(|c| {
                        let (_, c) = parse_x509_certificate(c).ok()?;
                        (c.subject().as_raw() == cert.issuer().as_raw())
                            .then(|| c.public_key().raw.to_vec())
                    })
                    .collect();
                return Ok(Verified {
                    identity,
                    issuer_spkis,
                    leaf_spki: cert.public_key().raw.to_vec(),
                    authority: ca.uri.clone(),
                });
            }
            Err(webpki::Error::CertExpired { .. }) | Err(webpki::Error::CertNotValidYet { .. }) => {
                last = format!(
                    "the signing certificate was not valid at the signing time {}",
                    crate::time::rfc3339(t)
                );
            }
            Err(webpki::Error::RequiredEkuNotFoundContext(_)) => {
                last = "the signing certificate is not for code signing (EKU)".into();
            }
            Err(e) => {
                last = format!(
                    "the signing certificate does not chain to the trusted root: {}",
                    webpki_text(&e)
                )
            }
        }
    }
    Err(last)
}

/// Chains `end` (with `extra` certificates as intermediates) to an
/// authority's certificates, each of which may anchor the path (they are
/// trust material of the root), at `time`, requiring `eku`. The anchors'
/// own validity is the caller's to check (see [`valid_at`]).
pub(crate) fn chain_to<'a>(
    end: &webpki::EndEntityCert<'_>,
    authority: &[Vec<u8>],
    extra: impl Iterator<Item = &'a [u8]>,
    time: UnixTime,
    eku: &'static [u8],
) -> Result<(), webpki::Error> {
    let anchor_certs: Vec<CertificateDer<'_>> = authority
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let anchors: Vec<_> = anchor_certs
        .iter()
        .filter_map(|c| webpki::anchor_from_trusted_cert(c).ok())
        .collect();
    let intermediates: Vec<CertificateDer<'_>> = extra.map(CertificateDer::from).collect();
    end.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        time,
        webpki::KeyUsage::required(eku),
        None,
        None,
    )
    .map(|_| ())
}

/// Whether a certificate's validity contains `t`.
pub(crate) fn valid_at(der: &[u8], t: i64) -> bool {
    parse_x509_certificate(der).is_ok_and(|(_, c)| {
        c.validity().not_before.timestamp() <= t && t <= c.validity().not_after.timestamp()
    })
}

/// A chain-building error in words (never Rust's Debug text).
pub(crate) fn webpki_text(e: &webpki::Error) -> String {
    match e {
        webpki::Error::UnknownIssuer => {
            "it is not issued by a certificate of the trusted root".into()
        }
        webpki::Error::CertExpired { .. } => "a certificate had expired at that time".into(),
        webpki::Error::CertNotValidYet { .. } => {
            "a certificate was not yet valid at that time".into()
        }
        webpki::Error::RequiredEkuNotFoundContext(_) => {
            "a certificate lacks the extended key usage required".into()
        }
        webpki::Error::BadDer | webpki::Error::BadDerTime => {
            "a certificate is not valid DER".into()
        }
        webpki::Error::InvalidSignatureForPublicKey => {
            "a signature in the chain does not verify".into()
        }
        webpki::Error::UnsupportedSignatureAlgorithmContext(_)
        | webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            "a certificate is signed with an algorithm not accepted".into()
        }
        webpki::Error::CaUsedAsEndEntity => "the signing certificate is a CA certificate".into(),
        webpki::Error::PathLenConstraintViolated => {
            "the chain breaks a path length constraint".into()
        }
        other => format!("{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    use crate::verify::fixture;

    fn pem_certs(text: &str) -> Vec<Vec<u8>> {
        CertificateDer::pem_slice_iter(text.as_bytes())
            .map(|c| c.unwrap().as_ref().to_vec())
            .collect()
    }

    /// The real Fulcio leaves chain to their roots at their signing
    /// times, and not a minute after their ten minutes.
    #[test]
    fn real_fulcio_leaves_chain_at_the_signing_time_only() {
        let root = TrustedRoot::parse(&fixture("cosign/keyless/trusted_root.json")).unwrap();
        let leaf = pem_certs(&fixture("cosign/keyless/certificate.pem")).remove(0);
        let v = verify(&leaf, &[], &root, 1_676_524_985).unwrap();
        assert_eq!(v.identity.subjects, ["sozercan@gmail.com"]);
        assert_eq!(
            v.identity.issuer.as_deref(),
            Some("https://github.com/login/oauth")
        );
        assert!(!v.issuer_spkis.is_empty());
        let e = verify(&leaf, &[], &root, 1_676_524_985 + 3600).unwrap_err();
        assert!(e.contains("not valid at the signing time"), "{e}");
        assert!(verify(&leaf, &[], &TrustedRoot::default(), 1_676_524_985).is_err());

        let pg = TrustedRoot::parse(&fixture("sigstore/trusted-roots/public-good.json")).unwrap();
        let leaf = pem_certs(&fixture(
            "sigstore/image-legacy/keyless-2021-rekord/certificate.pem",
        ))
        .remove(0);
        let v = verify(&leaf, &[], &pg, 1_634_714_717).unwrap();
        assert_eq!(v.identity.subjects, ["flavio@castelli.me"]);
        assert_eq!(v.identity.issuer, None);

        let m: serde_json::Value = serde_json::from_str(&fixture(
            "sigstore/image-legacy/gha-keyless-2026/signature-manifest.json",
        ))
        .unwrap();
        let ann = &m["layers"][0]["annotations"];
        let leaf = pem_certs(ann["dev.sigstore.cosign/certificate"].as_str().unwrap()).remove(0);
        let chain = pem_certs(ann["dev.sigstore.cosign/chain"].as_str().unwrap());
        let bundle: serde_json::Value =
            serde_json::from_str(ann["dev.sigstore.cosign/bundle"].as_str().unwrap()).unwrap();
        let t = bundle["Payload"]["integratedTime"].as_i64().unwrap();
        let v = verify(&leaf, &chain, &pg, t).unwrap();
        assert_eq!(
            v.identity.subjects,
            [
                "https://github.com/salrashid123/go-bazel-github-workflow/.github/workflows/release.yaml@refs/tags/v0.0.30"
            ]
        );
        assert_eq!(
            v.identity.issuer.as_deref(),
            Some("https://token.actions.githubusercontent.com")
        );
        // A root that holds only the chain the signature carried is no root.
        let mut stranger = pg.clone();
        stranger.authorities.clear();
        assert!(verify(&leaf, &chain, &stranger, t).is_err());
    }

    /// The real 2026 GitHub Actions leaf: every build and source
    /// extension, by name. A leaf with only the older GitHub extensions
    /// reads them where they say the same, and `.5` only for GitHub.
    #[test]
    fn build_and_source_extensions_are_read() {
        let m: serde_json::Value = serde_json::from_str(&fixture(
            "sigstore/image-legacy/gha-keyless-2026/signature-manifest.json",
        ))
        .unwrap();
        let ann = &m["layers"][0]["annotations"];
        let leaf = pem_certs(ann["dev.sigstore.cosign/certificate"].as_str().unwrap()).remove(0);
        let id = identity(&leaf).unwrap();
        let ext = |k: &str| id.extensions.get(k).map(String::as_str);
        assert_eq!(
            ext("sourceRepositoryURI"),
            Some("https://github.com/salrashid123/go-bazel-github-workflow")
        );
        assert_eq!(ext("sourceRepositoryRef"), Some("refs/tags/v0.0.30"));
        assert_eq!(
            ext("sourceRepositoryDigest"),
            Some("7624bd5f279fb5d4700ea72c1b2373ee33960700")
        );
        assert_eq!(ext("buildTrigger"), Some("push"));
        assert_eq!(ext("runnerEnvironment"), Some("github-hosted"));
        assert_eq!(ext("sourceRepositoryVisibilityAtSigning"), Some("public"));
        assert_eq!(id.extensions.len(), 14);

        let legacy_leaf = |issuer: &str| {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            let raw = |n: u64, v: &str| {
                rcgen::CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 4, 1, 57264, 1, n],
                    v.as_bytes().to_vec(),
                )
            };
            p.custom_extensions = vec![
                raw(1, issuer),
                raw(2, "push"),
                raw(3, "abc123"),
                raw(4, "release"),
                raw(5, "acme/app"),
                raw(6, "refs/heads/main"),
            ];
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            p.self_signed(&key).unwrap().der().to_vec()
        };
        let id = identity(&legacy_leaf("https://token.actions.githubusercontent.com")).unwrap();
        let ext = |k: &str| id.extensions.get(k).cloned();
        assert_eq!(ext("buildTrigger").as_deref(), Some("push"));
        assert_eq!(ext("sourceRepositoryDigest").as_deref(), Some("abc123"));
        assert_eq!(
            ext("sourceRepositoryRef").as_deref(),
            Some("refs/heads/main")
        );
        assert_eq!(
            ext("sourceRepositoryURI").as_deref(),
            Some("https://github.com/acme/app")
        );
        assert_eq!(id.extensions.len(), 4);
        // Another issuer's `.5` is not a github.com repository.
        let id = identity(&legacy_leaf("https://ghe.example/_services/token")).unwrap();
        assert!(!id.extensions.contains_key("sourceRepositoryURI"));
    }
}
