//! A test sigstore: keys, a Fulcio-like CA, a CT log and a Rekor log, all
//! made here, producing signatures in cosign's exact formats (the legacy
//! simple-signing layer with its annotations, and the bundle around a
//! DSSE envelope), and the `trusted_root.json` that trusts them. Only the
//! tests sign; image-bouncer verifies.

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SigningKey,
};

pub fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha256(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .to_vec()
}

/// A signing key and its public half.
pub struct Key {
    pub pair: KeyPair,
}

impl Key {
    pub fn new(alg: &'static rcgen::SignatureAlgorithm) -> Key {
        Key {
            pair: KeyPair::generate_for(alg).unwrap(),
        }
    }

    pub fn p256() -> Key {
        Key::new(&rcgen::PKCS_ECDSA_P256_SHA256)
    }

    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.pair.sign(msg).unwrap()
    }

    pub fn spki(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }

    pub fn pem(&self) -> String {
        self.pair.public_key_pem()
    }
}

/// cosign's simple-signing payload, as Go's json.Marshal writes it.
pub fn payload(reference: &str, digest: &str) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{reference}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    )
    .into_bytes()
}

/// A test instance: CA, CT log, Rekor.
pub struct Sigstore {
    ca_key: KeyPair,
    ca: CertificateParams,
    ca_der: Vec<u8>,
    ct: Key,
    pub rekor: Key,
}

/// One keyless signing certificate and its key.
pub struct Leaf {
    pub der: Vec<u8>,
    pub key: Key,
}

impl Leaf {
    pub fn pem(&self) -> String {
        pem("CERTIFICATE", &self.der)
    }
}

pub fn pem(label: &str, der: &[u8]) -> String {
    let b = b64(der);
    let lines: Vec<&str> = b
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// DER of one TLV.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend([0x81, n as u8]);
    } else {
        out.extend([0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(content);
    out
}

/// The first element (the TBSCertificate) of a certificate.
fn tbs(cert: &[u8]) -> Vec<u8> {
    let header = |b: &[u8]| -> (usize, usize) {
        match b[1] {
            n if n < 0x80 => (2, n as usize),
            0x81 => (3, b[2] as usize),
            0x82 => (4, (b[2] as usize) << 8 | b[3] as usize),
            _ => panic!("long certificate"),
        }
    };
    let (h, _) = header(cert);
    let inner = &cert[h..];
    let (h2, l2) = header(inner);
    inner[..h2 + l2].to_vec()
}

impl Sigstore {
    pub fn new() -> Sigstore {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "test fulcio");
        ca.not_before = rcgen::date_time_ymd(2020, 1, 1);
        ca.not_after = rcgen::date_time_ymd(2040, 1, 1);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_der = ca.self_signed(&ca_key).unwrap().der().to_vec();
        Sigstore {
            ca_key,
            ca,
            ca_der,
            ct: Key::p256(),
            rekor: Key::p256(),
        }
    }

    /// The trusted root for this instance.
    pub fn trusted_root(&self) -> String {
        let log = |k: &Key, url: &str| {
            serde_json::json!({
                "baseUrl": url, "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": b64(&k.spki()), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                              "validFor": {"start": "2020-01-01T00:00:00Z"}},
                "logId": {"keyId": b64(&sha256(&k.spki()))},
            })
        };
        serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(&self.rekor, "https://rekor.test")],
            "certificateAuthorities": [{"subject": {"commonName": "test fulcio"}, "uri": "https://fulcio.test",
                "certChain": {"certificates": [{"rawBytes": b64(&self.ca_der)}]},
                "validFor": {"start": "2020-01-01T00:00:00Z"}}],
            "ctlogs": [log(&self.ct, "https://ct.test")],
        })
        .to_string()
    }

    /// A Fulcio-like leaf for `subject` (a URI) from OIDC `issuer`, valid
    /// on the day `y-m-d` only, with code signing and an embedded SCT.
    pub fn leaf(&self, subject: &str, issuer: &str, day: (i32, u8, u8)) -> Leaf {
        self.leaf_with(subject, issuer, day, &[])
    }

    /// The same, with Fulcio's build and source extensions
    /// (1.3.6.1.4.1.57264.1.<arc>, DER UTF8Strings).
    pub fn leaf_with(
        &self,
        subject: &str,
        issuer: &str,
        day: (i32, u8, u8),
        extensions: &[(u64, &str)],
    ) -> Leaf {
        let key = Key::p256();
        let params = |sct: Option<Vec<u8>>| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.subject_alt_names = vec![SanType::URI(subject.try_into().unwrap())];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.not_before = rcgen::date_time_ymd(day.0, day.1, day.2);
            p.not_after =
                rcgen::date_time_ymd(day.0, day.1, day.2) + std::time::Duration::from_secs(86_399);
            p.serial_number = Some(rcgen::SerialNumber::from_slice(&[1, 2, 3, 4]));
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.custom_extensions = vec![
                CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 4, 1, 57264, 1, 1],
                    issuer.as_bytes().to_vec(),
                ),
                CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 4, 1, 57264, 1, 8],
                    tlv(0x0C, issuer.as_bytes()),
                ),
            ];
            for (arc, value) in extensions {
                p.custom_extensions.push(CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 4, 1, 57264, 1, *arc],
                    tlv(0x0C, value.as_bytes()),
                ));
            }
            if let Some(s) = sct {
                p.custom_extensions.push(CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 4, 1, 11129, 2, 4, 2],
                    s,
                ));
            }
            p
        };
        let issuer_ca = Issuer::from_params(&self.ca, &self.ca_key);
        // The CT log signs the certificate without its SCT list (the
        // precertificate's TBS); the SCT then goes in as the last extension.
        let pre = params(None).signed_by(&key.pair, &issuer_ca).unwrap();
        let tbs = tbs(pre.der());
        let timestamp: u64 = 1_767_225_600_000; // 2026-01-01, in ms
        let mut signed = vec![0u8, 0];
        signed.extend_from_slice(&timestamp.to_be_bytes());
        signed.extend_from_slice(&[0, 1]);
        signed.extend_from_slice(&sha256(&key_spki_of(&self.ca_key)));
        let n = tbs.len();
        signed.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
        signed.extend_from_slice(&tbs);
        signed.extend_from_slice(&[0, 0]);
        let sig = self.ct.sign(&signed);
        let mut sct = vec![0u8];
        sct.extend_from_slice(&sha256(&self.ct.spki()));
        sct.extend_from_slice(&timestamp.to_be_bytes());
        sct.extend_from_slice(&[0, 0, 4, 3]);
        sct.extend_from_slice(&(sig.len() as u16).to_be_bytes());
        sct.extend_from_slice(&sig);
        let mut list = ((sct.len() + 2) as u16).to_be_bytes().to_vec();
        list.extend_from_slice(&(sct.len() as u16).to_be_bytes());
        list.extend_from_slice(&sct);
        let cert = params(Some(tlv(0x04, &list)))
            .signed_by(&key.pair, &issuer_ca)
            .unwrap();
        Leaf {
            der: cert.der().to_vec(),
            key,
        }
    }

    /// The Rekor entry of a signature, as the legacy
    /// `dev.sigstore.cosign/bundle` annotation: a hashedrekord body with
    /// the payload's hash, the signature and the signer's PEM, and the SET.
    pub fn legacy_bundle(
        &self,
        payload: &[u8],
        sig: &[u8],
        signer_pem: &str,
        time: i64,
        index: i64,
    ) -> String {
        let body = serde_json::json!({
            "apiVersion": "0.0.1", "kind": "hashedrekord",
            "spec": {"data": {"hash": {"algorithm": "sha256", "value": hex(&sha256(payload))}},
                     "signature": {"content": b64(sig), "publicKey": {"content": b64(signer_pem.as_bytes())}}},
        })
        .to_string();
        let body = b64(body.as_bytes());
        let log_id = hex(&sha256(&self.rekor.spki()));
        let canonical = format!(
            r#"{{"body":"{body}","integratedTime":{time},"logID":"{log_id}","logIndex":{index}}}"#
        );
        let set = self.rekor.sign(canonical.as_bytes());
        serde_json::json!({"SignedEntryTimestamp": b64(&set),
            "Payload": {"body": body, "integratedTime": time, "logIndex": index, "logID": log_id}})
        .to_string()
    }

    /// A legacy `.att` layer: the DSSE envelope of `statement` signed by
    /// `leaf`, with the certificate and the Rekor `intoto` 0.0.2 entry
    /// (SET) cosign writes in the layer's annotations.
    pub fn att_layer(
        &self,
        leaf: &Leaf,
        statement: &str,
        time: i64,
    ) -> (Vec<u8>, serde_json::Value) {
        let ptype = "application/vnd.in-toto+json";
        let mut pae = format!("DSSEv1 {} {ptype} {} ", ptype.len(), statement.len()).into_bytes();
        pae.extend_from_slice(statement.as_bytes());
        let sig = leaf.key.sign(&pae);
        let envelope =
            serde_json::json!({"payloadType": ptype, "payload": b64(statement.as_bytes()),
            "signatures": [{"keyid": "", "sig": b64(&sig)}]})
            .to_string();
        let body = serde_json::json!({"apiVersion": "0.0.2", "kind": "intoto", "spec": {"content": {
            "envelope": {"payloadType": ptype, "signatures": [{"sig": b64(b64(&sig).as_bytes()), "publicKey": b64(leaf.pem().as_bytes())}]},
            "hash": {"algorithm": "sha256", "value": hex(&sha256(envelope.as_bytes()))},
            "payloadHash": {"algorithm": "sha256", "value": hex(&sha256(statement.as_bytes()))}}}})
        .to_string();
        let body = b64(body.as_bytes());
        let log_id = hex(&sha256(&self.rekor.spki()));
        let canonical = format!(
            r#"{{"body":"{body}","integratedTime":{time},"logID":"{log_id}","logIndex":44}}"#
        );
        let set = self.rekor.sign(canonical.as_bytes());
        let bundle = serde_json::json!({"SignedEntryTimestamp": b64(&set),
            "Payload": {"body": body, "integratedTime": time, "logIndex": 44, "logID": log_id}})
        .to_string();
        let ann = serde_json::json!({
            "dev.cosignproject.cosign/signature": "",
            "dev.sigstore.cosign/certificate": leaf.pem(),
            "dev.sigstore.cosign/bundle": bundle,
            "predicateType": serde_json::from_str::<serde_json::Value>(statement).unwrap()["predicateType"],
        });
        (envelope.into_bytes(), ann)
    }

    /// A sigstore bundle v0.3 around a DSSE envelope of an in-toto
    /// Statement v1 for `digest`, signed with `key` (keyed: `publicKey`
    /// material), logged as a Rekor dsse entry with a SET.
    pub fn keyed_bundle(&self, key: &Key, digest: &str, time: i64) -> String {
        self.dsse_bundle(
            &|m| key.sign(m),
            &key.pem(),
            serde_json::json!({"publicKey": {"hint": b64(&sha256(&key.spki()))}}),
            digest,
            time,
        )
    }

    /// The same, signed keyless by `leaf` (`certificate` material).
    pub fn keyless_bundle(&self, leaf: &Leaf, digest: &str, time: i64) -> String {
        self.dsse_bundle(
            &|m| leaf.key.sign(m),
            &leaf.pem(),
            serde_json::json!({"certificate": {"rawBytes": b64(&leaf.der)}}),
            digest,
            time,
        )
    }

    /// A keyed bundle around `statement` (`cosign attest --key`).
    pub fn keyed_statement_bundle(&self, key: &Key, statement: &str, time: i64) -> String {
        self.statement_bundle(
            &|m| key.sign(m),
            &key.pem(),
            serde_json::json!({"publicKey": {"hint": b64(&sha256(&key.spki()))}}),
            statement,
            time,
        )
    }

    /// A keyless bundle around `statement` (an in-toto statement's
    /// exact bytes): what `cosign attest` attaches.
    pub fn keyless_statement_bundle(&self, leaf: &Leaf, statement: &str, time: i64) -> String {
        self.statement_bundle(
            &|m| leaf.key.sign(m),
            &leaf.pem(),
            serde_json::json!({"certificate": {"rawBytes": b64(&leaf.der)}}),
            statement,
            time,
        )
    }

    fn dsse_bundle(
        &self,
        sign: &dyn Fn(&[u8]) -> Vec<u8>,
        verifier_pem: &str,
        material: serde_json::Value,
        digest: &str,
        time: i64,
    ) -> String {
        let hexd = digest.strip_prefix("sha256:").unwrap();
        let statement = format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1", "subject":[{{"name":"app","digest":{{"sha256":"{hexd}"}}}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{{}}}}"#
        );
        self.statement_bundle(sign, verifier_pem, material, &statement, time)
    }

    fn statement_bundle(
        &self,
        sign: &dyn Fn(&[u8]) -> Vec<u8>,
        verifier_pem: &str,
        mut material: serde_json::Value,
        statement: &str,
        time: i64,
    ) -> String {
        let ptype = "application/vnd.in-toto+json";
        let mut pae = format!("DSSEv1 {} {ptype} {} ", ptype.len(), statement.len()).into_bytes();
        pae.extend_from_slice(statement.as_bytes());
        let sig = sign(&pae);
        let body = serde_json::json!({"apiVersion": "0.0.1", "kind": "dsse", "spec": {
            "envelopeHash": {"algorithm": "sha256", "value": "00"},
            "payloadHash": {"algorithm": "sha256", "value": hex(&sha256(statement.as_bytes()))},
            "signatures": [{"signature": b64(&sig), "verifier": b64(verifier_pem.as_bytes())}]}})
        .to_string();
        let body = b64(body.as_bytes());
        let log_id = sha256(&self.rekor.spki());
        let canonical = format!(
            r#"{{"body":"{body}","integratedTime":{time},"logID":"{}","logIndex":7}}"#,
            hex(&log_id)
        );
        let set = self.rekor.sign(canonical.as_bytes());
        // A tree of this one entry: its root is the leaf hash; the
        // checkpoint (a signed note) commits to it.
        let mut leaf = vec![0u8];
        leaf.extend_from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(&body)
                .unwrap(),
        );
        let root = sha256(&leaf);
        let note = format!("rekor.test - 1\n1\n{}\n", b64(&root));
        let mut hinted = log_id[..4].to_vec();
        hinted.extend_from_slice(&self.rekor.sign(note.as_bytes()));
        let checkpoint = format!("{note}\n\u{2014} rekor.test {}\n", b64(&hinted));
        material["tlogEntries"] = serde_json::json!([{"logIndex": "7", "logId": {"keyId": b64(&log_id)},
            "kindVersion": {"kind": "dsse", "version": "0.0.1"}, "integratedTime": time.to_string(),
            "inclusionPromise": {"signedEntryTimestamp": b64(&set)},
            "inclusionProof": {"logIndex": "0", "rootHash": b64(&root), "treeSize": "1", "hashes": [],
                               "checkpoint": {"envelope": checkpoint}},
            "canonicalizedBody": body}]);
        serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": material,
            "dsseEnvelope": {"payload": b64(statement.as_bytes()), "payloadType": ptype, "signatures": [{"sig": b64(&sig)}]},
        })
        .to_string()
    }
}

/// A test timestamp authority: a root and a time-stamping leaf.
pub struct Tsa {
    root_der: Vec<u8>,
    leaf_der: Vec<u8>,
    leaf_key: KeyPair,
}

fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = vec![(arcs[0] * 40 + arcs[1]) as u8];
    for &a in &arcs[2..] {
        let mut stack = vec![(a & 0x7f) as u8];
        let mut v = a >> 7;
        while v > 0 {
            stack.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        body.extend(stack.into_iter().rev());
    }
    tlv(0x06, &body)
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

impl Tsa {
    pub fn new() -> Tsa {
        let root_key = KeyPair::generate().unwrap();
        let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root.distinguished_name
            .push(DnType::CommonName, "test tsa root");
        root.not_before = rcgen::date_time_ymd(2020, 1, 1);
        root.not_after = rcgen::date_time_ymd(2040, 1, 1);
        let root_der = root.self_signed(&root_key).unwrap().der().to_vec();
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.distinguished_name.push(DnType::CommonName, "test tsa");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::TimeStamping];
        leaf.not_before = rcgen::date_time_ymd(2020, 1, 1);
        leaf.not_after = rcgen::date_time_ymd(2040, 1, 1);
        leaf.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x11, 0x22]));
        let leaf_der = leaf
            .signed_by(&leaf_key, &Issuer::from_params(&root, &root_key))
            .unwrap()
            .der()
            .to_vec();
        Tsa {
            root_der,
            leaf_der,
            leaf_key,
        }
    }

    /// The trusted root's `timestampAuthorities` entry.
    pub fn authority(&self) -> serde_json::Value {
        serde_json::json!({"subject": {"commonName": "test tsa"}, "uri": "https://tsa.test",
            "certChain": {"certificates": [{"rawBytes": b64(&self.leaf_der)}, {"rawBytes": b64(&self.root_der)}]},
            "validFor": {"start": "2020-01-01T00:00:00Z"}})
    }

    /// A TimeStampResp over `signature` at `gen_time` (`YYYYMMDDHHMMSSZ`),
    /// as RFC 3161 and CMS write it, the TSA's certificate embedded.
    pub fn timestamp(&self, signature: &[u8], gen_time: &str) -> Vec<u8> {
        let sha256_alg = seq(&[&oid(&[2, 16, 840, 1, 101, 3, 4, 2, 1])]);
        let tst_oid = oid(&[1, 2, 840, 113549, 1, 9, 16, 1, 4]);
        let tst = seq(&[
            &tlv(0x02, &[1]),
            &oid(&[1, 2, 3, 4]),
            &seq(&[&sha256_alg, &tlv(0x04, &sha256(signature))]),
            &tlv(0x02, &[7]),
            &tlv(0x18, gen_time.as_bytes()),
        ]);
        let attrs = [
            seq(&[&oid(&[1, 2, 840, 113549, 1, 9, 3]), &tlv(0x31, &tst_oid)]),
            seq(&[
                &oid(&[1, 2, 840, 113549, 1, 9, 4]),
                &tlv(0x31, &tlv(0x04, &sha256(&tst))),
            ]),
        ]
        .concat();
        let sig = self.leaf_key.sign(&tlv(0x31, &attrs)).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&self.leaf_der).unwrap();
        let sid = seq(&[cert.issuer().as_raw(), &tlv(0x02, cert.raw_serial())]);
        let signer_info = seq(&[
            &tlv(0x02, &[1]),
            &sid,
            &sha256_alg,
            &tlv(0xA0, &attrs),
            &seq(&[&oid(&[1, 2, 840, 10045, 4, 3, 2])]),
            &tlv(0x04, &sig),
        ]);
        let signed_data = seq(&[
            &tlv(0x02, &[3]),
            &tlv(0x31, &sha256_alg),
            &seq(&[&tst_oid, &tlv(0xA0, &tlv(0x04, &tst))]),
            &tlv(0xA0, &self.leaf_der),
            &tlv(0x31, &signer_info),
        ]);
        let token = seq(&[
            &oid(&[1, 2, 840, 113549, 1, 7, 2]),
            &tlv(0xA0, &signed_data),
        ]);
        seq(&[&seq(&[&tlv(0x02, &[0])]), &token])
    }
}

/// A test Rekor v2 log: an Ed25519 key and its origin; entries are
/// hashedrekord 0.0.2 with an inclusion proof and a signed checkpoint.
pub struct RekorV2 {
    key: KeyPair,
    origin: String,
}

impl RekorV2 {
    pub fn new() -> RekorV2 {
        RekorV2 {
            key: KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
            origin: "rekor2.test".into(),
        }
    }

    /// The C2SP signed-note key ID: sha256(origin ‖ 0x0A ‖ 0x01 ‖ key).
    fn key_id(&self) -> Vec<u8> {
        let mut b = self.origin.as_bytes().to_vec();
        b.push(0x0A);
        b.push(0x01);
        b.extend_from_slice(self.key.der_bytes());
        sha256(&b)
    }

    /// The trusted root's `tlogs` entry.
    pub fn tlog(&self) -> serde_json::Value {
        serde_json::json!({"baseUrl": format!("https://{}", self.origin), "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": b64(&self.key.subject_public_key_info()), "keyDetails": "PKIX_ED25519",
                          "validFor": {"start": "2020-01-01T00:00:00Z"}},
            "logId": {"keyId": b64(&self.key_id())}})
    }

    /// A `tlogEntries[]` member logging `digest` (of what was signed),
    /// `sig` and the leaf certificate.
    pub fn entry(&self, signed_sha256: &[u8], sig: &[u8], leaf_der: &[u8]) -> serde_json::Value {
        let body = serde_json::json!({"apiVersion": "0.0.2", "kind": "hashedrekord", "spec": {"hashedRekordV002": {
            "data": {"algorithm": "SHA2_256", "digest": b64(signed_sha256)},
            "signature": {"content": b64(sig), "verifier": {"keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "x509Certificate": {"rawBytes": b64(leaf_der)}}}}}})
        .to_string();
        let mut leaf = vec![0u8];
        leaf.extend_from_slice(body.as_bytes());
        let root = sha256(&leaf);
        let note = format!("{}\n1\n{}\n", self.origin, b64(&root));
        let mut hinted = self.key_id()[..4].to_vec();
        hinted.extend_from_slice(&self.key.sign(note.as_bytes()).unwrap());
        let checkpoint = format!("{note}\n\u{2014} {} {}\n", self.origin, b64(&hinted));
        serde_json::json!({"logIndex": "0", "logId": {"keyId": b64(&self.key_id())},
            "kindVersion": {"kind": "hashedrekord", "version": "0.0.2"}, "integratedTime": "0",
            "inclusionProof": {"logIndex": "0", "rootHash": b64(&root), "treeSize": "1", "hashes": [],
                               "checkpoint": {"envelope": checkpoint}},
            "canonicalizedBody": b64(body.as_bytes())})
    }
}

impl Sigstore {
    /// The trusted root with a TSA and a Rekor v2 log besides.
    pub fn trusted_root_with(&self, tsa: &Tsa, v2: &RekorV2) -> String {
        let mut root: serde_json::Value = serde_json::from_str(&self.trusted_root()).unwrap();
        root["timestampAuthorities"] = serde_json::json!([tsa.authority()]);
        root["tlogs"].as_array_mut().unwrap().push(v2.tlog());
        root.to_string()
    }

    /// A keyless bundle logged in Rekor v2 (no SET) with an RFC 3161
    /// timestamp from `tsa` as its only signing time.
    pub fn rekor_v2_bundle(
        &self,
        leaf: &Leaf,
        digest: &str,
        tsa: &Tsa,
        v2: &RekorV2,
        gen_time: &str,
    ) -> String {
        let hexd = digest.strip_prefix("sha256:").unwrap();
        let statement = format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"app","digest":{{"sha256":"{hexd}"}}}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{{}}}}"#
        );
        let ptype = "application/vnd.in-toto+json";
        let mut pae = format!("DSSEv1 {} {ptype} {} ", ptype.len(), statement.len()).into_bytes();
        pae.extend_from_slice(statement.as_bytes());
        let sig = leaf.key.sign(&pae);
        serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "certificate": {"rawBytes": b64(&leaf.der)},
                "tlogEntries": [v2.entry(&sha256(&pae), &sig, &leaf.der)],
                "timestampVerificationData": {"rfc3161Timestamps": [{"signedTimestamp": b64(&tsa.timestamp(&sig, gen_time))}]},
            },
            "dsseEnvelope": {"payload": b64(statement.as_bytes()), "payloadType": ptype, "signatures": [{"sig": b64(&sig)}]},
        })
        .to_string()
    }
}

fn key_spki_of(k: &KeyPair) -> Vec<u8> {
    k.subject_public_key_info()
}
