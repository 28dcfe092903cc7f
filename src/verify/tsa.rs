//! RFC 3161 timestamps (a `TimeStampResp`, or its `TimeStampToken`: CMS
//! SignedData over a TSTInfo), verified offline against the trusted
//! root's timestamp authorities: the message imprint is the hash of the
//! signature bytes being timestamped, the signed attributes bind the
//! TSTInfo (content type, message digest), the TSA's signature verifies
//! over them with a certificate that chains to an authority, with the
//! time-stamping EKU, valid — like every certificate of the chain and the
//! authority's `validFor` — at `genTime`. A verified `genTime` is a
//! trusted signing time.

use rustls::pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::*;

use crate::der::{Element, items, tlv};
use crate::verify::fulcio::valid_at;
use crate::verify::keys::{Hash, PublicKey};
use crate::verify::trust::TrustedRoot;

/// At most this many timestamps per signature.
pub const MAX_TIMESTAMPS: usize = 32;
/// id-kp-timeStamping, 1.3.6.1.5.5.7.3.8, DER content octets.
const EKU_TIME_STAMPING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08];

fn oid_of(content: &[u8]) -> String {
    x509_parser::der_parser::oid::Oid::new(content.into()).to_id_string()
}

fn hash_of(oid: &str) -> Option<Hash> {
    match oid {
        "2.16.840.1.101.3.4.2.1" => Some(Hash::Sha256),
        "2.16.840.1.101.3.4.2.2" => Some(Hash::Sha384),
        "2.16.840.1.101.3.4.2.3" => Some(Hash::Sha512),
        _ => None,
    }
}

fn digest(h: Hash, data: &[u8]) -> Vec<u8> {
    let alg = match h {
        Hash::Sha256 => &ring::digest::SHA256,
        Hash::Sha384 => &ring::digest::SHA384,
        Hash::Sha512 => &ring::digest::SHA512,
    };
    ring::digest::digest(alg, data).as_ref().to_vec()
}

/// A GeneralizedTime `YYYYMMDDHHMMSS[.f]Z` as Unix seconds.
fn generalized_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 15 || !s.ends_with('Z') || !b[..14].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().ok();
    let rest = &s[14..s.len() - 1];
    if !(rest.is_empty()
        || (rest.starts_with('.')
            && rest.len() > 1
            && rest[1..].bytes().all(|c| c.is_ascii_digit())))
    {
        return None;
    }
    let (y, mo, d, h, mi, sec) = (
        n(0..4)?,
        n(4..6)?,
        n(6..8)?,
        n(8..10)?,
        n(10..12)?,
        n(12..14)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(crate::time::days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec)
}

/// Verifies one timestamp over `signature` and returns its `genTime`.
// One function on purpose: a walk down the token's DER (the response, the signed data, the
// TSTInfo and its message imprint, the one signer, its signed attributes, its certificate and
// chain), each step reading what the one before found.
pub fn verify(token: &[u8], signature: &[u8], root: &TrustedRoot) -> Result<i64, String> {
    let bad = |what: &str| format!("the RFC 3161 timestamp {what}");
    // A TimeStampResp (status, token) or the token itself.
    let ((tag, content, _), rest) = tlv(token).ok_or_else(|| bad("is not DER"))?;
    if tag != 0x30 || !rest.is_empty() {
        return Err(bad("is not one DER sequence"));
    }
    let top = items(content).ok_or_else(|| bad("is not DER"))?;
    let content_info = match top.as_slice() {
        [(0x30, status, _), (0x30, _, token)] => {
            let status = items(status).ok_or_else(|| bad("has a bad status"))?;
            match status.first() {
                Some((0x02, [0 | 1], _)) => {}
                _ => return Err(bad("was not granted")),
            }
            *token
        }
        _ => token,
    };
    let ((_, ci, _), _) = tlv(content_info).ok_or_else(|| bad("is not DER"))?;
    let ci = items(ci).ok_or_else(|| bad("is not DER"))?;
    let [(0x06, ct, _), (0xA0, explicit, _)] = ci.as_slice() else {
        return Err(bad("is not a CMS ContentInfo"));
    };
    if oid_of(ct) != "1.2.840.113549.1.7.2" {
        return Err(bad("is not CMS SignedData"));
    }
    let ((_, sd, _), _) = tlv(explicit).ok_or_else(|| bad("is not DER"))?;
    let sd = items(sd).ok_or_else(|| bad("is not DER"))?;
    // version, digestAlgorithms, encapContentInfo, [0] certificates?, [1] crls?, signerInfos
    let encap = sd.get(2).ok_or_else(|| bad("has no content"))?;
    let certs: Vec<&[u8]> = sd
        .iter()
        .find(|(t, _, _)| *t == 0xA0)
        .and_then(|(_, c, _)| items(c))
        .map(|v| v.into_iter().map(|(_, _, whole)| whole).collect())
        .unwrap_or_default();
    let (0x31, signer_infos, _) = sd.last().copied().ok_or_else(|| bad("has no signer"))? else {
        return Err(bad("has no signer infos"));
    };
    let encap = items(encap.1).ok_or_else(|| bad("is not DER"))?;
    let [(0x06, ect, _), (0xA0, econtent, _)] = encap.as_slice() else {
        return Err(bad("has no TSTInfo"));
    };
    if oid_of(ect) != "1.2.840.113549.1.9.16.1.4" {
        return Err(bad("does not hold a TSTInfo"));
    }
    let ((0x04, tst_der, _), _) = tlv(econtent).ok_or_else(|| bad("is not DER"))? else {
        return Err(bad("has no TSTInfo octets"));
    };
    // TSTInfo: version, policy, messageImprint, serialNumber, genTime, ...
    let ((_, tst, _), _) = tlv(tst_der).ok_or_else(|| bad("has a bad TSTInfo"))?;
    let tst = items(tst).ok_or_else(|| bad("has a bad TSTInfo"))?;
    let (Some((0x30, imprint, _)), Some((0x18, gen_time, _))) = (tst.get(2), tst.get(4)) else {
        return Err(bad("has a TSTInfo without imprint or time"));
    };
    let imprint = items(imprint).ok_or_else(|| bad("has a bad imprint"))?;
    let [(0x30, alg, _), (0x04, hashed, _)] = imprint.as_slice() else {
        return Err(bad("has a bad imprint"));
    };
    let alg = items(alg).ok_or_else(|| bad("has a bad imprint"))?;
    let h = alg
        .first()
        .filter(|(t, _, _)| *t == 0x06)
        .and_then(|(_, o, _)| hash_of(&oid_of(o)))
        .ok_or_else(|| bad("hashes with an algorithm that is not read"))?;
    if digest(h, signature) != *hashed {
        return Err(bad(
            "is for other bytes than this signature (message imprint)",
        ));
    }
    let gen_time = std::str::from_utf8(gen_time)
        .ok()
        .and_then(generalized_time)
        .ok_or_else(|| bad("has a genTime that cannot be read"))?;
    // The one signer.
    let signers = items(signer_infos).ok_or_else(|| bad("has bad signer infos"))?;
    let [(0x30, si, _)] = signers.as_slice() else {
        return Err(bad("does not have exactly one signer"));
    };
    let si = items(si).ok_or_else(|| bad("has a bad signer info"))?;
    // version, sid, digestAlgorithm, [0] signedAttrs, signatureAlgorithm, signature
    let (
        Some(sid),
        Some((0x30, dalg, _)),
        Some((0xA0, attrs, attrs_whole)),
        Some((0x30, _salg, _)),
        Some((0x04, sig, _)),
    ) = (si.get(1), si.get(2), si.get(3), si.get(4), si.get(5))
    else {
        return Err(bad("has a signer info without signed attributes"));
    };
    let dh = items(dalg)
        .and_then(|a| a.first().map(|(_, o, _)| oid_of(o)))
        .and_then(|o| hash_of(&o))
        .ok_or_else(|| bad("signs with a digest that is not read"))?;
    let mut saw_type = false;
    let mut saw_digest = false;
    for (_, attr, _) in items(attrs).ok_or_else(|| bad("has bad signed attributes"))? {
        let a = items(attr).ok_or_else(|| bad("has a bad attribute"))?;
        let (Some((0x06, oid, _)), Some((0x31, values, _))) = (a.first(), a.get(1)) else {
            continue;
        };
        let value = items(values).and_then(|v| v.first().map(|(t, c, _)| (*t, *c)));
        match oid_of(oid).as_str() {
            "1.2.840.113549.1.9.3" => {
                if !matches!(value, Some((0x06, c)) if oid_of(c) == "1.2.840.113549.1.9.16.1.4") {
                    return Err(bad("signs another content type"));
                }
                saw_type = true;
            }
            "1.2.840.113549.1.9.4" => {
                if !matches!(value, Some((0x04, c)) if c == digest(dh, tst_der).as_slice()) {
                    return Err(bad("signs another TSTInfo (message digest)"));
                }
                saw_digest = true;
            }
            _ => {}
        }
    }
    if !saw_type || !saw_digest {
        return Err(bad("lacks the content-type or message-digest attribute"));
    }
    // What was signed: the attributes as a SET.
    let mut signed = attrs_whole.to_vec();
    signed[0] = 0x31;
    // The signer's certificate: embedded, or the authority's own.
    let mut last = bad("is not from a timestamp authority of the trusted root");
    for tsa in &root.timestamp_authorities {
        if !tsa.valid.contains(gen_time) {
            last = bad("was made when no timestamp authority of the trusted root was valid");
            continue;
        }
        let candidates: Vec<&[u8]> = certs
            .iter()
            .copied()
            .chain(tsa.chain.iter().map(Vec::as_slice))
            .collect();
        let Some(cert) = candidates.iter().copied().find(|c| matches_sid(c, sid)) else {
            continue;
        };
        let Ok((_, parsed)) = parse_x509_certificate(cert) else {
            continue;
        };
        let Ok(key) = PublicKey::from_spki(parsed.public_key().raw) else {
            continue;
        };
        if !key.verify_with(dh, &signed, sig) {
            last = bad("signature does not verify");
            continue;
        }
        if tsa.chain.iter().any(|c| !valid_at(c, gen_time)) || !valid_at(cert, gen_time) {
            last = bad("was made when its authority's certificates were not valid");
            continue;
        }
        if tsa.chain.iter().any(|c| c.as_slice() == cert) {
            return Ok(gen_time);
        }
        // An embedded certificate must chain to the authority.
        let der = CertificateDer::from(cert);
        let Ok(end) = webpki::EndEntityCert::try_from(&der) else {
            continue;
        };
        let time =
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(gen_time.max(0) as u64));
        match crate::verify::fulcio::chain_to(
            &end,
            &tsa.chain,
            certs.iter().copied().filter(|c| *c != cert),
            time,
            EKU_TIME_STAMPING,
        ) {
            Ok(_) => return Ok(gen_time),
            Err(e) => {
                last = bad(&format!(
                    "signer does not chain to the authority: {}",
                    crate::verify::fulcio::webpki_text(&e)
                ))
            }
        }
    }
    Err(last)
}

/// Whether a certificate is the signer a SignerInfo's `sid` names
/// (issuer and serial number, or `[0]` subject key identifier).
fn matches_sid(cert: &[u8], sid: &Element<'_>) -> bool {
    let Ok((_, c)) = parse_x509_certificate(cert) else {
        return false;
    };
    match sid {
        (0x30, content, _) => {
            let Some(parts) = items(content) else {
                return false;
            };
            let (Some((0x30, _, issuer)), Some((0x02, serial, _))) = (parts.first(), parts.get(1)) else {
                return false;
            };
            let ours = c.raw_serial();
            let strip = |s: &[u8]| -> Vec<u8> { s.iter().skip_while(|b| **b == 0).copied().collect() };
            *issuer == c.issuer().as_raw() && strip(serial) == strip(ours)
        }
        (0x80, ski, _) => c.extensions().iter().any(|e| {
            matches!(e.parsed_extension(), ParsedExtension::SubjectKeyIdentifier(k) if k.0 == *ski)
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::fixture;
    use base64::Engine as _;

    #[test]
    fn generalized_times() {
        assert_eq!(generalized_time("19700101000000Z"), Some(0));
        assert_eq!(generalized_time("20250612120222.5Z"), Some(1_749_729_742));
        for bad in [
            "",
            "20250612120222",
            "2025061212022Z",
            "20251312120222Z",
            "20250612120222.Z",
        ] {
            assert_eq!(generalized_time(bad), None, "{bad}");
        }
    }

    /// The conformance suite's Rekor v2 case carries a real timestamp from
    /// its test TSA: it verifies over the bundle's signature, and not
    /// with one byte of it changed, nor over other bytes, nor without the
    /// authority in the root.
    #[test]
    fn a_real_timestamp() {
        let dir = "sigstore/conformance/bundle-verify/rekor2-happy-path";
        let b: serde_json::Value =
            serde_json::from_str(&fixture(&format!("{dir}/bundle.sigstore.json"))).unwrap();
        let root = TrustedRoot::parse(&fixture(&format!("{dir}/trusted_root.json"))).unwrap();
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap()
        };
        let token = b64(
            &b["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0]["signedTimestamp"],
        );
        let sig = b64(&b["messageSignature"]["signature"]);
        let t = verify(&token, &sig, &root).unwrap();
        assert!(t > 1_700_000_000, "{t}");
        assert!(verify(&token, b"other bytes", &root).is_err());
        for i in [token.len() / 3, token.len() / 2, token.len() - 5] {
            let mut changed = token.clone();
            changed[i] ^= 1;
            assert!(verify(&changed, &sig, &root).is_err(), "byte {i}");
        }
        let mut no_tsa = root.clone();
        no_tsa.timestamp_authorities.clear();
        assert!(verify(&token, &sig, &no_tsa).is_err());
    }
}
