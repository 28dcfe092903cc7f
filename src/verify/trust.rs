//! A sigstore `trusted_root.json` (protobuf-specs `TrustedRoot`, proto3
//! JSON: camelCase names, bytes as base64): the Fulcio CAs (chains whose
//! last certificate is the trust anchor), the Rekor and CT log keys, each
//! with the time range it is valid for. Read once per policy load; a
//! root that cannot be read whole is a configuration error.

use base64::Engine as _;
use serde::Deserialize;

use crate::time::parse_rfc3339;
use crate::verify::keys::PublicKey;

/// A time range, inclusive; `end` `None`: still valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub start: i64,
    pub end: Option<i64>,
}

impl Validity {
    pub fn contains(&self, t: i64) -> bool {
        self.start <= t && self.end.is_none_or(|e| t <= e)
    }
}

/// A transparency log (Rekor) or certificate transparency log key.
#[derive(Debug, Clone)]
pub struct Log {
    pub base_url: String,
    /// The log ID entries name it by (for Rekor v1 and CT logs the
    /// sha256 of the key's SubjectPublicKeyInfo).
    pub id: Vec<u8>,
    pub key: PublicKey,
    pub valid: Validity,
}

/// A certificate authority (Fulcio): its chain, leaf-most first, the last
/// one being the trust anchor.
#[derive(Debug, Clone)]
pub struct Authority {
    pub uri: String,
    pub chain: Vec<Vec<u8>>,
    pub valid: Validity,
}

/// The trusted root, read.
#[derive(Debug, Clone, Default)]
pub struct TrustedRoot {
    pub tlogs: Vec<Log>,
    pub ctlogs: Vec<Log>,
    pub authorities: Vec<Authority>,
    /// RFC 3161 timestamp authorities.
    pub timestamp_authorities: Vec<Authority>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRoot {
    media_type: Option<String>,
    #[serde(default)]
    tlogs: Vec<RawLog>,
    #[serde(default)]
    certificate_authorities: Vec<RawAuthority>,
    #[serde(default)]
    ctlogs: Vec<RawLog>,
    #[serde(default)]
    timestamp_authorities: Vec<RawAuthority>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLog {
    #[serde(default)]
    base_url: String,
    public_key: RawKey,
    log_id: RawLogId,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawKey {
    raw_bytes: String,
    #[serde(default)]
    key_details: String,
    valid_for: Option<RawValidity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLogId {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAuthority {
    #[serde(default)]
    uri: String,
    cert_chain: RawChain,
    valid_for: Option<RawValidity>,
}

#[derive(Deserialize)]
struct RawChain {
    certificates: Vec<RawCert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCert {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct RawValidity {
    start: Option<String>,
    end: Option<String>,
}

/// Media types of trusted roots that are read.
const MEDIA_TYPES: [&str; 2] = [
    "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
    "application/vnd.dev.sigstore.trustedroot.v0.2+json",
];

fn b64(s: &str, what: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("{what}: not base64: {e}"))
}

fn validity(v: Option<&RawValidity>, what: &str) -> Result<Validity, String> {
    let v = v.ok_or_else(|| format!("{what}: no validFor"))?;
    let start = v
        .start
        .as_deref()
        .ok_or_else(|| format!("{what}: validFor has no start"))?;
    let start = parse_rfc3339(start)
        .ok_or_else(|| format!("{what}: validFor.start {start:?} is not a time"))?;
    let end = match v.end.as_deref() {
        None => None,
        Some(e) => Some(
            parse_rfc3339(e).ok_or_else(|| format!("{what}: validFor.end {e:?} is not a time"))?,
        ),
    };
    Ok(Validity { start, end })
}

impl TrustedRoot {
    pub fn parse(text: &str) -> Result<TrustedRoot, String> {
        let raw: RawRoot =
            serde_json::from_str(text).map_err(|e| format!("not a sigstore trusted root: {e}"))?;
        match raw.media_type.as_deref() {
            Some(m) if MEDIA_TYPES.contains(&m) => {}
            other => {
                return Err(format!(
                    "mediaType {other:?} is not a trusted root this version reads ({})",
                    MEDIA_TYPES.join(", ")
                ));
            }
        }
        let logs = |raw: &[RawLog], kind: &str| -> Result<Vec<Log>, String> {
            raw.iter()
                .enumerate()
                .map(|(i, l)| {
                    let what = format!("{kind}[{i}]");
                    let der = b64(&l.public_key.raw_bytes, &what)?;
                    let key = if l.public_key.key_details.starts_with("PKCS1_") {
                        PublicKey::from_pkcs1_rsa(&der)
                    } else {
                        PublicKey::from_spki(&der)
                    }
                    .map_err(|e| format!("{what}: {e}"))?;
                    Ok(Log {
                        base_url: l.base_url.clone(),
                        id: b64(&l.log_id.key_id, &format!("{what}.logId"))?,
                        key,
                        valid: validity(l.public_key.valid_for.as_ref(), &what)?,
                    })
                })
                .collect()
        };
        let authorities = |raw: &[RawAuthority], kind: &str| -> Result<Vec<Authority>, String> {
            raw.iter()
                .enumerate()
                .map(|(i, a)| {
                    let what = format!("{kind}[{i}]");
                    let chain = a
                        .cert_chain
                        .certificates
                        .iter()
                        .map(|c| b64(&c.raw_bytes, &what))
                        .collect::<Result<Vec<_>, _>>()?;
                    if chain.is_empty() {
                        return Err(format!("{what}: an empty certificate chain"));
                    }
                    for c in &chain {
                        x509_parser::parse_x509_certificate(c).map_err(|e| {
                            format!("{what}: a certificate that cannot be read: {e}")
                        })?;
                    }
                    Ok(Authority {
                        uri: a.uri.clone(),
                        chain,
                        valid: validity(a.valid_for.as_ref(), &what)?,
                    })
                })
                .collect()
        };
        Ok(TrustedRoot {
            tlogs: logs(&raw.tlogs, "tlogs")?,
            ctlogs: logs(&raw.ctlogs, "ctlogs")?,
            authorities: authorities(&raw.certificate_authorities, "certificateAuthorities")?,
            timestamp_authorities: authorities(&raw.timestamp_authorities, "timestampAuthorities")?,
        })
    }

    /// The Rekor log with this ID.
    pub fn tlog(&self, id: &[u8]) -> Option<&Log> {
        self.tlogs.iter().find(|l| l.id == id)
    }

    /// The CT log with this ID.
    pub fn ctlog(&self, id: &[u8]) -> Option<&Log> {
        self.ctlogs.iter().find(|l| l.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::verify::fixture;

    #[test]
    fn real_trusted_roots_are_read() {
        let pg = TrustedRoot::parse(&fixture("sigstore/trusted-roots/public-good.json")).unwrap();
        assert!(
            pg.tlogs
                .iter()
                .any(|l| l.base_url == "https://rekor.sigstore.dev")
        );
        assert!(pg.ctlogs.len() >= 2, "{}", pg.ctlogs.len());
        assert!(pg.authorities.len() >= 2);
        // Rekor v1: the log ID is the sha256 of the key.
        let rekor = pg
            .tlogs
            .iter()
            .find(|l| l.base_url == "https://rekor.sigstore.dev")
            .unwrap();
        assert_eq!(rekor.id, rekor.key.key_id());
        assert!(rekor.valid.contains(1_700_000_000));
        assert!(!rekor.valid.contains(1_500_000_000));
        TrustedRoot::parse(&fixture("sigstore/trusted-roots/staging.json")).unwrap();
        TrustedRoot::parse(&fixture("cosign/keyless/trusted_root.json")).unwrap();
        for bad in [
            "{}",
            "not json",
            r#"{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1", "tlogs": [{"publicKey": {"rawBytes": "AAAA"}, "logId": {"keyId": "AA=="}}]}"#,
            r#"{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1", "certificateAuthorities": [{"certChain": {"certificates": []}, "validFor": {"start": "2021-01-01T00:00:00Z"}}]}"#,
        ] {
            assert!(TrustedRoot::parse(bad).is_err(), "{bad}");
        }
    }
}
