//! Public keys as cosign writes them (PEM `PUBLIC KEY`, a DER
//! SubjectPublicKeyInfo) and the signature checks each kind gets: ECDSA
//! P-256 with SHA-256; P-384 with SHA-384 or SHA-256 (cosign signed with
//! SHA-256 whatever the curve until v2.6, SHA-384 since); RSA PKCS#1 v1.5
//! with SHA-256; Ed25519, pure or prehashed (Ed25519ph, which cosign v2.6+
//! signs with for Ed25519 keys). Signatures are over the exact bytes given.

use ring::signature::{self, UnparsedPublicKey};
use rustls::pki_types::pem::PemObject;
use x509_parser::prelude::FromDer;

/// id-ecPublicKey, rsaEncryption, id-Ed25519; the curves.
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_ED25519: &str = "1.3.101.112";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

/// A digest algorithm a signature was made with (CMS signers name theirs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

/// What kind of key, and the bytes ring checks with.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    P256,
    P384,
    /// The RSAPublicKey DER (inside the SPKI's bit string).
    Rsa,
    Ed25519,
}

/// A verification key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    kind: Kind,
    /// The key bytes ring takes (EC point, RSAPublicKey, Ed25519 key).
    raw: Vec<u8>,
    /// The whole SubjectPublicKeyInfo (compared with a log entry's key,
    /// and hashed for log IDs and key hints).
    pub spki: Vec<u8>,
}

impl PublicKey {
    /// A DER SubjectPublicKeyInfo.
    pub fn from_spki(der: &[u8]) -> Result<PublicKey, String> {
        let (rest, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| format!("not a public key (SubjectPublicKeyInfo): {e}"))?;
        if !rest.is_empty() {
            return Err("trailing bytes after the public key".into());
        }
        let alg = spki.algorithm.algorithm.to_id_string();
        let raw = spki.subject_public_key.data.to_vec();
        let kind = match alg.as_str() {
            OID_EC => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string())
                    .unwrap_or_default();
                match curve.as_str() {
                    OID_P256 => Kind::P256,
                    OID_P384 => Kind::P384,
                    other => {
                        return Err(format!(
                            "ECDSA curve {other:?} is not supported (P-256, P-384)"
                        ));
                    }
                }
            }
            OID_RSA => Kind::Rsa,
            OID_ED25519 => Kind::Ed25519,
            other => {
                return Err(format!(
                    "key algorithm {other} is not supported (ECDSA, RSA, Ed25519)"
                ));
            }
        };
        Ok(PublicKey {
            kind,
            raw,
            spki: der.to_vec(),
        })
    }

    /// An RSA key as a bare PKCS#1 RSAPublicKey (trusted roots say
    /// `PKCS1_RSA_PKCS1V5` for these).
    pub fn from_pkcs1_rsa(der: &[u8]) -> Result<PublicKey, String> {
        if der.first() != Some(&0x30) {
            return Err("not a PKCS#1 RSA public key".into());
        }
        Ok(PublicKey {
            kind: Kind::Rsa,
            raw: der.to_vec(),
            spki: der.to_vec(),
        })
    }

    /// A PEM `PUBLIC KEY` (what `cosign generate-key-pair` writes as
    /// cosign.pub).
    pub fn from_pem(pem: &str) -> Result<PublicKey, String> {
        let der = rustls::pki_types::SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| "no PEM PUBLIC KEY in it".to_string())?;
        PublicKey::from_spki(der.as_ref())
    }

    /// What kind of key, for reports.
    pub fn describe(&self) -> &'static str {
        match self.kind {
            Kind::P256 => "ECDSA P-256",
            Kind::P384 => "ECDSA P-384",
            Kind::Rsa => "RSA",
            Kind::Ed25519 => "Ed25519",
        }
    }

    /// Whether `sig` (ECDSA: ASN.1 DER) signs exactly `message`.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        let algs: &[&'static dyn signature::VerificationAlgorithm] = match self.kind {
            Kind::P256 => &[&signature::ECDSA_P256_SHA256_ASN1],
            Kind::P384 => &[
                &signature::ECDSA_P384_SHA384_ASN1,
                &signature::ECDSA_P384_SHA256_ASN1,
            ],
            Kind::Rsa => &[&signature::RSA_PKCS1_2048_8192_SHA256],
            Kind::Ed25519 => &[&signature::ED25519],
        };
        algs.iter().any(|alg| {
            UnparsedPublicKey::new(*alg, &self.raw)
                .verify(message, sig)
                .is_ok()
        }) || (self.kind == Kind::Ed25519 && ed25519ph(&self.raw, message, sig))
    }

    /// Whether `sig` signs `message` with the digest `hash` (a CMS
    /// signer's stated algorithm): ECDSA (ASN.1) or RSA PKCS#1 v1.5.
    pub fn verify_with(&self, hash: Hash, message: &[u8], sig: &[u8]) -> bool {
        let alg: &dyn signature::VerificationAlgorithm = match (&self.kind, hash) {
            (Kind::P256, Hash::Sha256) => &signature::ECDSA_P256_SHA256_ASN1,
            (Kind::P256, Hash::Sha384) => &signature::ECDSA_P256_SHA384_ASN1,
            (Kind::P384, Hash::Sha256) => &signature::ECDSA_P384_SHA256_ASN1,
            (Kind::P384, Hash::Sha384) => &signature::ECDSA_P384_SHA384_ASN1,
            (Kind::Rsa, Hash::Sha256) => &signature::RSA_PKCS1_2048_8192_SHA256,
            (Kind::Rsa, Hash::Sha384) => &signature::RSA_PKCS1_2048_8192_SHA384,
            (Kind::Rsa, Hash::Sha512) => &signature::RSA_PKCS1_2048_8192_SHA512,
            (Kind::Ed25519, _) => &signature::ED25519,
            _ => return false,
        };
        UnparsedPublicKey::new(alg, &self.raw)
            .verify(message, sig)
            .is_ok()
    }

    /// Whether `sig` (ASN.1 DER) signs content whose SHA-256 is `digest`
    /// (ECDSA only: RSA and Ed25519 need the content itself).
    pub fn verify_sha256_digest(&self, digest: &[u8], sig: &[u8]) -> bool {
        use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
        if digest.len() != 32 {
            return false;
        }
        match self.kind {
            Kind::P256 => match (
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&self.raw),
                p256::ecdsa::Signature::from_der(sig),
            ) {
                (Ok(k), Ok(s)) => k.verify_prehash(digest, &s).is_ok(),
                _ => false,
            },
            Kind::P384 => match (
                p384::ecdsa::VerifyingKey::from_sec1_bytes(&self.raw),
                p384::ecdsa::Signature::from_der(sig),
            ) {
                (Ok(k), Ok(s)) => k.verify_prehash(digest, &s).is_ok(),
                _ => false,
            },
            Kind::Rsa | Kind::Ed25519 => false,
        }
    }

    /// sha256 of the SubjectPublicKeyInfo (Rekor v1 and CT log IDs).
    pub fn key_id(&self) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, &self.spki);
        let mut out = [0; 32];
        out.copy_from_slice(d.as_ref());
        out
    }
}

/// RFC 8032 Ed25519ph: Ed25519 over SHA-512 of the message, with the
/// prehash domain separator and an empty context.
fn ed25519ph(key: &[u8], message: &[u8], sig: &[u8]) -> bool {
    use ed25519_dalek::Digest as _;
    let (Ok(key), Ok(sig)) = (
        <[u8; 32]>::try_from(key),
        ed25519_dalek::Signature::from_slice(sig),
    ) else {
        return false;
    };
    ed25519_dalek::VerifyingKey::from_bytes(&key).is_ok_and(|k| {
        k.verify_prehashed(
            ed25519_dalek::Sha512::new().chain_update(message),
            None,
            &sig,
        )
        .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    use crate::verify::fixture;

    fn sig(path: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(fixture(path).trim())
            .unwrap()
    }

    /// The real keyed signatures: each verifies with its key, and fails
    /// with one byte of the payload changed, or with another key.
    #[test]
    fn real_keyed_signatures() {
        for dir in [
            "sigstore/image-legacy/keyed-p256-sigstore-rs",
            "sigstore/image-legacy/keyed-rsa-pkcs1-suse-obs",
            "cosign/keyed-p384",
        ] {
            let key = PublicKey::from_pem(&fixture(&format!("{dir}/cosign.pub"))).unwrap();
            let payload = fixture(&format!("{dir}/payload.json")).into_bytes();
            let s = sig(&format!("{dir}/signature.b64"));
            assert!(key.verify(&payload, &s), "{dir}");
            for i in [0, payload.len() / 2, payload.len() - 1] {
                let mut changed = payload.clone();
                changed[i] ^= 1;
                assert!(!key.verify(&changed, &s), "{dir}: byte {i} changed");
            }
            let mut bad = s.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(!key.verify(&payload, &bad), "{dir}: signature changed");
        }
        let other = PublicKey::from_pem(&fixture(
            "sigstore/image-legacy/keyed-p256-sigstore-rs/other.pub",
        ))
        .unwrap();
        let payload = fixture("sigstore/image-legacy/keyed-p256-sigstore-rs/payload.json");
        assert!(!other.verify(
            payload.as_bytes(),
            &sig("sigstore/image-legacy/keyed-p256-sigstore-rs/signature.b64")
        ));
        assert_eq!(
            PublicKey::from_pem(&fixture("cosign/keyed-p384/cosign.pub"))
                .unwrap()
                .describe(),
            "ECDSA P-384"
        );
        assert!(PublicKey::from_pem("not a key").is_err());
    }
    /// Ed25519ph as cosign v2.6+ signs with Ed25519 keys: verified; the
    /// same bytes signed pure are verified too; neither for other bytes.
    #[test]
    fn ed25519_pure_and_prehashed() {
        use ed25519_dalek::Digest as _;
        use ed25519_dalek::Signer as _;
        let signing = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        spki.extend_from_slice(signing.verifying_key().as_bytes());
        let key = PublicKey::from_spki(&spki).unwrap();
        assert_eq!(key.describe(), "Ed25519");
        let msg = b"{\"critical\":{}}";
        let ph = signing
            .sign_prehashed(ed25519_dalek::Sha512::new().chain_update(msg), None)
            .unwrap();
        assert!(key.verify(msg, &ph.to_bytes()));
        assert!(!key.verify(b"other", &ph.to_bytes()));
        let pure = signing.sign(msg);
        assert!(key.verify(msg, &pure.to_bytes()));
        assert!(!key.verify(b"other", &pure.to_bytes()));
        assert!(!key.verify(msg, &ph.to_bytes()[..63]));
    }
}
