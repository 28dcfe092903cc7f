//! Rekor v1 transparency-log entries as cosign carries them: the
//! signed entry timestamp (SET, Rekor's signature over the canonical JSON
//! of body, integrated time, log ID and index) checked with the trusted
//! root's key for that log ID, and the entry's body (`hashedrekord` or
//! `rekord` 0.0.1) matched against the payload, signature and signer
//! actually being verified. A verified SET makes its integrated time a
//! trusted signing time; nothing else here is trusted.

use base64::Engine as _;
use serde::Deserialize;

use crate::verify::trust::{Log, TrustedRoot};

/// A log entry's promise, as the legacy `dev.sigstore.cosign/bundle`
/// annotation (`{"SignedEntryTimestamp": ..., "Payload": {...}}`) or a
/// bundle's `tlogEntries[]` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promise {
    /// Base64 of the entry's canonical body, exactly as logged.
    pub body: String,
    pub integrated_time: i64,
    /// The global log index.
    pub log_index: i64,
    pub log_id: Vec<u8>,
    pub set: Vec<u8>,
}

fn b64(s: &str, what: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("{what} is not base64: {e}"))
}

use crate::digest::{hex, unhex};

impl Promise {
    /// The legacy annotation's JSON.
    pub fn from_legacy_annotation(text: &str) -> Result<Promise, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Annotation {
            signed_entry_timestamp: String,
            payload: Payload,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Payload {
            body: String,
            integrated_time: i64,
            log_index: i64,
            #[serde(rename = "logID")]
            log_id: String,
        }
        let a: Annotation = serde_json::from_str(text)
            .map_err(|e| format!("the Rekor bundle annotation cannot be read: {e}"))?;
        Ok(Promise {
            body: a.payload.body,
            integrated_time: a.payload.integrated_time,
            log_index: a.payload.log_index,
            log_id: unhex(&a.payload.log_id).ok_or("the Rekor bundle's logID is not hex")?,
            set: b64(&a.signed_entry_timestamp, "the SignedEntryTimestamp")?,
        })
    }

    /// Checks the SET with the trusted root's log of this ID, whose key
    /// must have been valid at the integrated time; returns that log.
    pub fn verify_set<'a>(&self, root: &'a TrustedRoot) -> Result<&'a Log, String> {
        let log = root.tlog(&self.log_id).ok_or_else(|| {
            format!(
                "the log entry is from a log the trusted root does not hold (log ID {})",
                hex(&self.log_id)
            )
        })?;
        // RFC 8785 canonical JSON of these four members: keys sorted, no
        // whitespace; the body is base64 and the ID hex, so nothing needs
        // escaping, which is checked rather than assumed.
        if !self
            .body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        {
            return Err("the log entry's body is not base64".into());
        }
        if self.log_index < 0 || self.integrated_time < 0 {
            return Err("the log entry has a negative index or time".into());
        }
        let canonical = format!(
            r#"{{"body":"{}","integratedTime":{},"logID":"{}","logIndex":{}}}"#,
            self.body,
            self.integrated_time,
            hex(&self.log_id),
            self.log_index
        );
        if !log.key.verify(canonical.as_bytes(), &self.set) {
            return Err(format!(
                "the log entry's signed timestamp (SET) does not verify with the key of {}",
                log.base_url
            ));
        }
        if !log.valid.contains(self.integrated_time) {
            return Err(format!(
                "the key of {} was not valid at the entry's time {}",
                log.base_url, self.integrated_time
            ));
        }
        Ok(log)
    }

    /// The logged entry's claims.
    pub fn entry(&self) -> Result<Entry, String> {
        Entry::parse(&b64(&self.body, "the log entry's body")?)
    }
}

/// What a `hashedrekord`/`rekord` 0.0.1 entry says was signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// sha256 of the signed bytes, lowercase hex.
    pub sha256: String,
    pub signature: Vec<u8>,
    /// The signer as logged: a PEM certificate or public key.
    pub signer_pem: String,
}

impl Entry {
    pub fn parse(body: &[u8]) -> Result<Entry, String> {
        #[derive(Deserialize)]
        struct Kind {
            kind: String,
        }
        match serde_json::from_slice::<Kind>(body).map(|k| k.kind) {
            Ok(k) if k == "dsse" => return Entry::parse_dsse(body),
            Ok(k) if k == "intoto" => return Entry::parse_intoto(body),
            _ => {}
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Body {
            api_version: String,
            kind: String,
            spec: Spec,
        }
        #[derive(Deserialize)]
        struct Spec {
            data: Data,
            signature: Sig,
        }
        #[derive(Deserialize)]
        struct Data {
            hash: Hash,
        }
        #[derive(Deserialize)]
        struct Hash {
            algorithm: String,
            value: String,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Sig {
            content: String,
            public_key: Content,
        }
        #[derive(Deserialize)]
        struct Content {
            content: String,
        }
        let b: Body = serde_json::from_slice(body).map_err(|e| {
            format!("the log entry's body is not a hashedrekord or rekord entry: {e}")
        })?;
        if !matches!(b.kind.as_str(), "hashedrekord" | "rekord") || b.api_version != "0.0.1" {
            return Err(format!(
                "the log entry is a {} {} entry; hashedrekord or rekord 0.0.1 is read for signatures",
                b.kind, b.api_version
            ));
        }
        if b.spec.data.hash.algorithm != "sha256" {
            return Err(format!(
                "the log entry hashes with {}; sha256 is read",
                b.spec.data.hash.algorithm
            ));
        }
        let signer = b64(
            &b.spec.signature.public_key.content,
            "the logged public key",
        )?;
        Ok(Entry {
            sha256: b.spec.data.hash.value.to_ascii_lowercase(),
            signature: b64(&b.spec.signature.content, "the logged signature")?,
            signer_pem: String::from_utf8(signer)
                .map_err(|_| "the logged public key is not PEM")?,
        })
    }

    /// A `dsse` 0.0.1 entry: the payload's hash, the one signature and
    /// its verifier.
    fn parse_dsse(body: &[u8]) -> Result<Entry, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Body {
            api_version: String,
            spec: Spec,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Spec {
            payload_hash: Hash,
            signatures: Vec<Sig>,
        }
        #[derive(Deserialize)]
        struct Hash {
            algorithm: String,
            value: String,
        }
        #[derive(Deserialize)]
        struct Sig {
            signature: String,
            verifier: String,
        }
        let b: Body = serde_json::from_slice(body)
            .map_err(|e| format!("the log entry's body is not a dsse entry: {e}"))?;
        if b.api_version != "0.0.1" {
            return Err(format!(
                "the log entry is a dsse {} entry; 0.0.1 is read",
                b.api_version
            ));
        }
        if b.spec.payload_hash.algorithm != "sha256" {
            return Err("the dsse log entry does not hash with sha256".into());
        }
        let [sig] = b.spec.signatures.as_slice() else {
            return Err("the dsse log entry does not hold exactly one signature".into());
        };
        let signer = b64(&sig.verifier, "the logged verifier")?;
        Ok(Entry {
            sha256: b.spec.payload_hash.value.to_ascii_lowercase(),
            signature: b64(&sig.signature, "the logged signature")?,
            signer_pem: String::from_utf8(signer).map_err(|_| "the logged verifier is not PEM")?,
        })
    }

    /// An `intoto` 0.0.2 entry: the payload's hash and the envelope's one
    /// signature (written base64 of base64) with its public key.
    fn parse_intoto(body: &[u8]) -> Result<Entry, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Body {
            api_version: String,
            spec: Spec,
        }
        #[derive(Deserialize)]
        struct Spec {
            content: Content,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Content {
            envelope: Envelope,
            payload_hash: Hash,
        }
        #[derive(Deserialize)]
        struct Envelope {
            signatures: Vec<Sig>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Sig {
            sig: String,
            public_key: String,
        }
        #[derive(Deserialize)]
        struct Hash {
            algorithm: String,
            value: String,
        }
        let b: Body = serde_json::from_slice(body)
            .map_err(|e| format!("the log entry's body is not an intoto entry: {e}"))?;
        if b.api_version != "0.0.2" || b.spec.content.payload_hash.algorithm != "sha256" {
            return Err("the intoto log entry is not a 0.0.2 entry hashing with sha256".into());
        }
        let [sig] = b.spec.content.envelope.signatures.as_slice() else {
            return Err("the intoto log entry does not hold exactly one signature".into());
        };
        let inner = b64(&sig.sig, "the logged signature")?;
        let inner = String::from_utf8(inner).map_err(|_| "the logged signature is not base64")?;
        let signer = b64(&sig.public_key, "the logged public key")?;
        Ok(Entry {
            sha256: b.spec.content.payload_hash.value.to_ascii_lowercase(),
            signature: b64(inner.trim(), "the logged signature")?,
            signer_pem: String::from_utf8(signer)
                .map_err(|_| "the logged public key is not PEM")?,
        })
    }

    /// Whether the entry logs exactly this signature over exactly these
    /// bytes by exactly this signer (`signer_der`: the certificate DER,
    /// or the key's SubjectPublicKeyInfo).
    pub fn matches(
        &self,
        payload: &[u8],
        signature: &[u8],
        signer_der: &[u8],
    ) -> Result<(), String> {
        let digest = ring::digest::digest(&ring::digest::SHA256, payload);
        self.matches_sha256(digest.as_ref(), signature, signer_der)
    }

    /// As [`Entry::matches`], for content known by its sha256 only.
    pub fn matches_sha256(
        &self,
        sha256: &[u8],
        signature: &[u8],
        signer_der: &[u8],
    ) -> Result<(), String> {
        let digest = hex(sha256);
        if self.sha256 != digest {
            return Err("the log entry is for other content than this signature's payload".into());
        }
        if self.signature != signature {
            return Err("the log entry holds another signature".into());
        }
        use rustls::pki_types::pem::PemObject;
        let logged: Vec<u8> =
            rustls::pki_types::CertificateDer::from_pem_slice(self.signer_pem.as_bytes())
                .map(|c| c.as_ref().to_vec())
                .or_else(|_| {
                    rustls::pki_types::SubjectPublicKeyInfoDer::from_pem_slice(
                        self.signer_pem.as_bytes(),
                    )
                    .map(|k| k.as_ref().to_vec())
                })
                .map_err(|_| "the log entry's signer is neither a certificate nor a public key")?;
        if logged != signer_der {
            return Err("the log entry was signed by another certificate or key".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::verify::fixture;

    /// The real SETs: cosign's 2023 keyless vector with its root, and the
    /// 2021 rekord entry with the public-good root; the broken SET and
    /// a changed time are refused.
    #[test]
    fn real_sets_verify_and_changes_do_not() {
        let root = TrustedRoot::parse(&fixture("cosign/keyless/trusted_root.json")).unwrap();
        let p = Promise::from_legacy_annotation(&fixture("cosign/keyless/bundle.json")).unwrap();
        assert_eq!(p.integrated_time, 1_676_524_985);
        p.verify_set(&root).unwrap();
        let entry = p.entry().unwrap();
        let payload = fixture("cosign/keyless/payload.json");
        let sig = base64::engine::general_purpose::STANDARD
            .decode(fixture("cosign/keyless/signature.b64").trim())
            .unwrap();
        use rustls::pki_types::pem::PemObject;
        let cert = rustls::pki_types::CertificateDer::from_pem_slice(
            fixture("cosign/keyless/certificate.pem").as_bytes(),
        )
        .unwrap();
        entry
            .matches(payload.as_bytes(), &sig, cert.as_ref())
            .unwrap();
        assert!(entry.matches(b"other", &sig, cert.as_ref()).is_err());
        assert!(
            entry
                .matches(payload.as_bytes(), &sig[1..], cert.as_ref())
                .is_err()
        );
        assert!(
            entry
                .matches(payload.as_bytes(), &sig, &cert.as_ref()[1..])
                .is_err()
        );
        let mut later = p.clone();
        later.integrated_time += 1;
        assert!(later.verify_set(&root).is_err());
        let mut other_index = p.clone();
        other_index.log_index += 1;
        assert!(other_index.verify_set(&root).is_err());
        let bad = fixture("cosign/keyless-bad-set/bundle.json");
        assert!(
            Promise::from_legacy_annotation(&bad)
                .and_then(|p| p.verify_set(&root).map(|_| ()))
                .is_err()
        );
        // A root without this log: refused, not skipped.
        assert!(
            p.verify_set(&TrustedRoot::default())
                .unwrap_err()
                .contains("does not hold")
        );

        let pg = TrustedRoot::parse(&fixture("sigstore/trusted-roots/public-good.json")).unwrap();
        let p = Promise::from_legacy_annotation(&fixture(
            "sigstore/image-legacy/keyless-2021-rekord/bundle-annotation.json",
        ))
        .unwrap();
        p.verify_set(&pg).unwrap();
        let entry = p.entry().unwrap();
        let payload = fixture("sigstore/image-legacy/keyless-2021-rekord/payload.json");
        assert_eq!(
            entry.sha256,
            hex(ring::digest::digest(&ring::digest::SHA256, payload.as_bytes()).as_ref())
        );
    }
}
