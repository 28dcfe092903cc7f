//! TUF metadata (specification 1.0.x): the signed envelope, the four
//! top-level roles read strictly enough to be trusted (`_type`,
//! `spec_version` 1.x, versions, expiry), the keys a root delegates to
//! (Ed25519, ECDSA P-256 and P-384, as python-tuf and sigstore write
//! them), and signatures counted toward a role's threshold: distinct key
//! IDs the role lists whose key verifies the canonical bytes of `signed`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::tuf::canonical;

/// A role's keys and how many must sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub keyids: Vec<String>,
    pub threshold: u64,
}

/// A public key a root names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub keytype: String,
    pub scheme: String,
    /// What ring verifies with, or `None` for a key type or scheme not
    /// supported (it signs nothing here).
    verifier: Option<(Algorithm, Vec<u8>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Ed25519,
    P256,
    P384,
}

impl Key {
    fn read(v: &Value) -> Result<Key, String> {
        let field = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("a key without {k}"))
        };
        let keytype = field("keytype")?;
        let scheme = field("scheme")?;
        let public = v
            .get("keyval")
            .and_then(|kv| kv.get("public"))
            .and_then(Value::as_str)
            .ok_or("a key without keyval.public")?;
        let verifier = match (keytype.as_str(), scheme.as_str()) {
            ("ed25519", "ed25519") => crate::digest::unhex(public)
                .filter(|k| k.len() == 32)
                .map(|k| (Algorithm::Ed25519, k)),
            ("ecdsa" | "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256") => {
                ec_point(public, OID_P256).map(|k| (Algorithm::P256, k))
            }
            ("ecdsa" | "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp384") => {
                ec_point(public, OID_P384).map(|k| (Algorithm::P384, k))
            }
            _ => None,
        };
        Ok(Key {
            keytype,
            scheme,
            verifier,
        })
    }

    /// Whether this key made `sig` over `msg`.
    pub fn verifies(&self, msg: &[u8], sig: &[u8]) -> bool {
        use ring::signature::{self, UnparsedPublicKey};
        let Some((alg, key)) = &self.verifier else {
            return false;
        };
        let alg: &dyn signature::VerificationAlgorithm = match alg {
            Algorithm::Ed25519 => &signature::ED25519,
            Algorithm::P256 => &signature::ECDSA_P256_SHA256_ASN1,
            Algorithm::P384 => &signature::ECDSA_P384_SHA384_ASN1,
        };
        UnparsedPublicKey::new(alg, key).verify(msg, sig).is_ok()
    }

    pub fn supported(&self) -> bool {
        self.verifier.is_some()
    }
}

const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

/// The point of an EC public key in PEM (SubjectPublicKeyInfo) on the
/// curve named.
fn ec_point(pem: &str, curve: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::FromDer;
    let der = rustls::pki_types::SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()).ok()?;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der.as_ref()).ok()?;
    let named = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    (spki.algorithm.algorithm.to_id_string() == "1.2.840.10045.2.1"
        && named.as_deref() == Some(curve))
    .then(|| spki.subject_public_key.data.to_vec())
}

/// One metadata file as fetched: its `signed` part (and the canonical
/// bytes its signatures are over) and its signatures.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub signed: Value,
    canonical: Vec<u8>,
    signatures: Vec<(String, Vec<u8>)>,
}

impl Envelope {
    /// Reads a metadata file of role `kind` (`root`, `timestamp`,
    /// `snapshot`, `targets`).
    pub fn read(bytes: &[u8], kind: &str) -> Result<Envelope, String> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| format!("{kind} metadata is not JSON: {e}"))?;
        let signed = v
            .get("signed")
            .cloned()
            .ok_or_else(|| format!("{kind} metadata without `signed`"))?;
        if signed.get("_type").and_then(Value::as_str) != Some(kind) {
            return Err(format!(
                "{kind} metadata whose _type is {}",
                signed.get("_type").unwrap_or(&Value::Null)
            ));
        }
        let spec = signed
            .get("spec_version")
            .and_then(Value::as_str)
            .unwrap_or("");
        if spec.split('.').next() != Some("1") {
            return Err(format!(
                "{kind} metadata of spec_version {spec:?} (1.x is read)"
            ));
        }
        let mut signatures = Vec::new();
        for s in v
            .get("signatures")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("{kind} metadata without signatures"))?
        {
            let keyid = s.get("keyid").and_then(Value::as_str);
            let sig = s.get("sig").and_then(Value::as_str);
            match (keyid, sig) {
                (Some(k), Some(sig)) => {
                    // A signature that is not hex signs nothing.
                    if let Some(sig) = crate::digest::unhex(sig) {
                        signatures.push((k.to_string(), sig));
                    }
                }
                _ => return Err(format!("{kind} metadata with a malformed signature")),
            }
        }
        Ok(Envelope {
            canonical: canonical::encode(&signed)?,
            signed,
            signatures,
        })
    }

    /// Checks that `role` of `root` signed this: at least its threshold
    /// of distinct listed key IDs whose keys verify.
    pub fn verify(&self, root: &Root, role: &str) -> Result<(), String> {
        let r = root
            .roles
            .get(role)
            .ok_or_else(|| format!("the root has no {role} role"))?;
        // Distinct key IDs, and distinct keys: one key listed under two
        // IDs counts once.
        let mut signed_by: BTreeSet<&str> = BTreeSet::new();
        let mut keys_used: Vec<&Key> = Vec::new();
        for (keyid, sig) in &self.signatures {
            if !r.keyids.iter().any(|k| k == keyid) || signed_by.contains(keyid.as_str()) {
                continue;
            }
            if let Some(key) = root.keys.get(keyid)
                && !keys_used.iter().any(|k| k.verifier == key.verifier)
                && key.verifies(&self.canonical, sig)
            {
                signed_by.insert(keyid);
                keys_used.push(key);
            }
        }
        if (signed_by.len() as u64) < r.threshold {
            return Err(format!(
                "{} of the {} signatures its {role} role needs (version {} root)",
                signed_by.len(),
                r.threshold,
                root.version
            ));
        }
        Ok(())
    }

    pub fn version(&self) -> Result<u64, String> {
        self.signed
            .get("version")
            .and_then(Value::as_u64)
            .filter(|v| *v >= 1)
            .ok_or_else(|| "metadata without a version of 1 or more".into())
    }

    /// When it expires (Unix seconds).
    pub fn expires(&self) -> Result<i64, String> {
        self.signed
            .get("expires")
            .and_then(Value::as_str)
            .and_then(crate::time::parse_rfc3339)
            .ok_or_else(|| "metadata without a readable expiry".into())
    }
}

/// A root: its keys and roles.
#[derive(Debug, Clone)]
pub struct Root {
    pub version: u64,
    pub expires: i64,
    pub consistent_snapshot: bool,
    pub keys: BTreeMap<String, Key>,
    pub roles: BTreeMap<String, Role>,
}

impl Root {
    pub fn read(e: &Envelope) -> Result<Root, String> {
        let s = &e.signed;
        let mut keys = BTreeMap::new();
        for (id, k) in s
            .get("keys")
            .and_then(Value::as_object)
            .ok_or("a root without keys")?
        {
            keys.insert(
                id.clone(),
                Key::read(k).map_err(|e| format!("key {id}: {e}"))?,
            );
        }
        let mut roles = BTreeMap::new();
        for name in ["root", "timestamp", "snapshot", "targets"] {
            let r = s
                .get("roles")
                .and_then(|r| r.get(name))
                .ok_or_else(|| format!("a root without a {name} role"))?;
            let keyids: Vec<String> = r
                .get("keyids")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("the {name} role has no keyids"))?
                .iter()
                .map(|k| k.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| format!("the {name} role has a keyid that is not a string"))?;
            let threshold = r
                .get("threshold")
                .and_then(Value::as_u64)
                .filter(|t| *t >= 1)
                .ok_or_else(|| format!("the {name} role has no threshold of 1 or more"))?;
            roles.insert(name.to_string(), Role { keyids, threshold });
        }
        Ok(Root {
            version: e.version()?,
            expires: e.expires()?,
            consistent_snapshot: s
                .get("consistent_snapshot")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            keys,
            roles,
        })
    }
}

/// What a timestamp or snapshot says of another metadata file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaFile {
    pub version: u64,
    pub length: Option<u64>,
    pub hashes: BTreeMap<String, String>,
}

impl MetaFile {
    fn read(v: &Value, what: &str) -> Result<MetaFile, String> {
        Ok(MetaFile {
            version: v
                .get("version")
                .and_then(Value::as_u64)
                .filter(|v| *v >= 1)
                .ok_or_else(|| format!("{what} without a version"))?,
            length: match v.get("length") {
                None => None,
                Some(l) => Some(l.as_u64().ok_or_else(|| format!("{what}: a bad length"))?),
            },
            hashes: hashes(v.get("hashes"), what)?,
        })
    }

    /// Checks fetched bytes against the length and hashes listed, if any.
    pub fn check(&self, bytes: &[u8], what: &str) -> Result<(), String> {
        check_file(bytes, self.length, &self.hashes, what)
    }
}

/// A target file as targets metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetFile {
    pub length: u64,
    pub hashes: BTreeMap<String, String>,
}

fn hashes(v: Option<&Value>, what: &str) -> Result<BTreeMap<String, String>, String> {
    let Some(v) = v else {
        return Ok(BTreeMap::new());
    };
    let o = v
        .as_object()
        .ok_or_else(|| format!("{what}: hashes that are not an object"))?;
    o.iter()
        .map(|(k, h)| {
            h.as_str()
                .map(|h| (k.clone(), h.to_ascii_lowercase()))
                .ok_or_else(|| format!("{what}: a hash that is not a string"))
        })
        .collect()
}

/// Checks `bytes` against a length and hashes (sha256, sha512; at least
/// one of those must be listed when any hash is).
pub fn check_file(
    bytes: &[u8],
    length: Option<u64>,
    hashes: &BTreeMap<String, String>,
    what: &str,
) -> Result<(), String> {
    if let Some(l) = length
        && bytes.len() as u64 != l
    {
        return Err(format!(
            "{what} is {} bytes, not the {l} its metadata lists",
            bytes.len()
        ));
    }
    let mut checked = 0;
    for (alg, want) in hashes {
        let algorithm = match alg.as_str() {
            "sha256" => &ring::digest::SHA256,
            "sha512" => &ring::digest::SHA512,
            _ => continue,
        };
        let got = crate::digest::hex(ring::digest::digest(algorithm, bytes).as_ref());
        if &got != want {
            return Err(format!("{what} does not match its {alg} hash"));
        }
        checked += 1;
    }
    if !hashes.is_empty() && checked == 0 {
        return Err(format!("{what}: none of its hashes is sha256 or sha512"));
    }
    Ok(())
}

/// The snapshot a timestamp names.
pub fn timestamp_snapshot(e: &Envelope) -> Result<MetaFile, String> {
    let m = e
        .signed
        .get("meta")
        .and_then(|m| m.get("snapshot.json"))
        .ok_or("a timestamp that names no snapshot.json")?;
    MetaFile::read(m, "the timestamp's snapshot.json")
}

/// The metadata files a snapshot lists.
pub fn snapshot_meta(e: &Envelope) -> Result<BTreeMap<String, MetaFile>, String> {
    e.signed
        .get("meta")
        .and_then(Value::as_object)
        .ok_or("a snapshot without meta")?
        .iter()
        .map(|(name, m)| Ok((name.clone(), MetaFile::read(m, name)?)))
        .collect()
}

/// The target files targets metadata lists.
pub fn targets(e: &Envelope) -> Result<BTreeMap<String, TargetFile>, String> {
    e.signed
        .get("targets")
        .and_then(Value::as_object)
        .ok_or("targets metadata without targets")?
        .iter()
        .map(|(name, t)| {
            let length = t
                .get("length")
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("target {name} without a length"))?;
            let hashes = hashes(t.get("hashes"), name)?;
            if hashes.is_empty() {
                return Err(format!("target {name} without hashes"));
            }
            Ok((name.clone(), TargetFile { length, hashes }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    /// A threshold counts distinct keys: one key listed under two key IDs,
    /// its signature given under both, is one signature; a signature by a
    /// key the role does not list, or repeated, counts for nothing.
    #[test]
    fn thresholds_count_distinct_keys() {
        let rng = ring::rand::SystemRandom::new();
        let pair = |_: u8| {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
            Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
        };
        let (a, b) = (pair(0), pair(1));
        let key = |k: &Ed25519KeyPair| {
            serde_json::json!({"keytype": "ed25519", "scheme": "ed25519",
                "keyval": {"public": crate::digest::hex(k.public_key().as_ref())}})
        };
        let root_with = |ids: &[(&str, &Ed25519KeyPair)], listed: &[&str], threshold: u64| {
            let keys: serde_json::Map<String, Value> =
                ids.iter().map(|(id, k)| (id.to_string(), key(k))).collect();
            let role = serde_json::json!({"keyids": listed, "threshold": threshold});
            let signed = serde_json::json!({"_type": "root", "spec_version": "1.0", "version": 1,
                "expires": "2030-01-01T00:00:00Z", "consistent_snapshot": true, "keys": keys,
                "roles": {"root": role, "timestamp": role, "snapshot": role, "targets": role}});
            Root::read(&Envelope {
                canonical: canonical::encode(&signed).unwrap(),
                signed,
                signatures: Vec::new(),
            })
            .unwrap()
        };
        let signed = serde_json::json!({"_type": "timestamp", "spec_version": "1.0", "version": 1,
            "expires": "2030-01-01T00:00:00Z", "meta": {"snapshot.json": {"version": 1}}});
        let bytes = canonical::encode(&signed).unwrap();
        let envelope = |sigs: &[(&str, &Ed25519KeyPair)]| {
            let v = serde_json::json!({"signed": signed, "signatures": sigs.iter().map(|(id, k)|
                serde_json::json!({"keyid": id, "sig": crate::digest::hex(k.sign(&bytes).as_ref())})).collect::<Vec<_>>()});
            Envelope::read(v.to_string().as_bytes(), "timestamp").unwrap()
        };
        // Two keys, two signatures: met.
        let root = root_with(&[("a", &a), ("b", &b)], &["a", "b"], 2);
        assert!(
            envelope(&[("a", &a), ("b", &b)])
                .verify(&root, "timestamp")
                .is_ok()
        );
        // One signature twice: not met.
        assert!(
            envelope(&[("a", &a), ("a", &a)])
                .verify(&root, "timestamp")
                .is_err()
        );
        // One key under two IDs: not met.
        let twice = root_with(&[("a", &a), ("a2", &a)], &["a", "a2"], 2);
        let e = envelope(&[("a", &a), ("a2", &a)])
            .verify(&twice, "timestamp")
            .unwrap_err();
        assert!(e.contains("1 of the 2"), "{e}");
        // A key the role does not list: not counted.
        let one = root_with(&[("a", &a), ("b", &b)], &["a"], 1);
        assert!(envelope(&[("b", &b)]).verify(&one, "timestamp").is_err());
        assert!(envelope(&[("a", &a)]).verify(&one, "timestamp").is_ok());
    }
}
