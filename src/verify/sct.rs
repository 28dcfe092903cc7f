//! The signed certificate timestamp embedded in a Fulcio certificate
//! (RFC 6962 §3.3): proof that the certificate was logged to a CT log the
//! trusted root lists. Checked offline: the log's signature over the
//! precertificate entry, rebuilt from the certificate itself (its TBS
//! without the SCT list extension) and the issuer's key hash.

use x509_parser::prelude::*;

use crate::verify::trust::TrustedRoot;

/// The SCT list extension, 1.3.6.1.4.1.11129.2.4.2, as DER OID content.
const OID_SCT_LIST: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0xd6, 0x79, 0x02, 0x04, 0x02];

/// Checks that some embedded SCT of `leaf` verifies with a CT log of
/// `root` (valid when the SCT was issued); `issuer_spkis` are the keys
/// that may have issued the leaf.
pub fn verify(leaf: &[u8], issuer_spkis: &[Vec<u8>], root: &TrustedRoot) -> Result<(), String> {
    let (_, cert) =
        parse_x509_certificate(leaf).map_err(|e| format!("the certificate cannot be read: {e}"))?;
    let scts = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SCT(list) => Some(list.clone()),
            _ => None,
        })
        .ok_or("the certificate has no embedded SCT (certificate transparency)")?;
    let tbs =
        precert_tbs(leaf).ok_or("the certificate's TBS cannot be rebuilt without its SCTs")?;
    let mut last = String::from("no SCT");
    for sct in &scts {
        let Some(log) = root.ctlog(sct.id.key_id) else {
            last = "the SCT is from a CT log the trusted root does not hold: add the log to the root's `ctlogs`, or set `ignoreSCT` on the entry (a private Fulcio without certificate transparency)".into();
            continue;
        };
        let secs = (sct.timestamp / 1000) as i64;
        if !log.valid.contains(secs) {
            last = format!(
                "the CT log {} was not valid when it issued the SCT",
                log.base_url
            );
            continue;
        }
        for issuer in issuer_spkis {
            let key_hash = ring::digest::digest(&ring::digest::SHA256, issuer);
            let mut signed = Vec::with_capacity(tbs.len() + 64);
            signed.push(sct.version.0);
            signed.push(0); // certificate_timestamp
            signed.extend_from_slice(&sct.timestamp.to_be_bytes());
            signed.extend_from_slice(&[0, 1]); // precert_entry
            signed.extend_from_slice(key_hash.as_ref());
            let n = tbs.len();
            signed.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
            signed.extend_from_slice(&tbs);
            let ext = sct.extensions.0;
            signed.extend_from_slice(&(ext.len() as u16).to_be_bytes());
            signed.extend_from_slice(ext);
            if log.key.verify(&signed, sct.signature.data) {
                return Ok(());
            }
        }
        last = format!("the SCT does not verify with the key of {}", log.base_url);
    }
    Err(last)
}

/// A DER header for `tag` and `len`.
fn header(tag: u8, len: usize) -> Vec<u8> {
    let mut h = vec![tag];
    if len < 0x80 {
        h.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        h.push(0x80 | bytes.len() as u8);
        h.extend(bytes);
    }
    h
}

/// The leaf's TBSCertificate with the SCT list extension removed (what
/// the log signed, RFC 6962 §3.2).
fn precert_tbs(leaf: &[u8]) -> Option<Vec<u8>> {
    use crate::der::{items, tlv};
    let ((_, cert, _), _) = tlv(leaf)?;
    let ((0x30, tbs, _), _) = tlv(cert)? else {
        return None;
    };
    let mut out = Vec::new();
    let mut removed = false;
    for (tag, content, whole) in items(tbs)? {
        if tag != 0xA3 {
            out.extend_from_slice(whole);
            continue;
        }
        // [3] EXPLICIT Extensions ::= SEQUENCE OF Extension
        let ((0x30, exts, _), _) = tlv(content)? else {
            return None;
        };
        let mut kept = Vec::new();
        for (_, ext, ext_whole) in items(exts)? {
            match tlv(ext)? {
                ((0x06, oid, _), _) if oid == OID_SCT_LIST => removed = true,
                _ => kept.extend_from_slice(ext_whole),
            }
        }
        let mut seq = header(0x30, kept.len());
        seq.extend(kept);
        out.extend(header(0xA3, seq.len()));
        out.extend(seq);
    }
    if !removed {
        return None;
    }
    let mut tbs = header(0x30, out.len());
    tbs.extend(out);
    Some(tbs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    use crate::verify::fixture;

    /// The real 2026 GitHub Actions leaf carries an SCT from the 2022
    /// public-good CT log: it verifies; a root without CT logs, or a
    /// leaf with one byte changed, does not.
    #[test]
    fn the_real_embedded_sct_verifies() {
        let pg = TrustedRoot::parse(&fixture("sigstore/trusted-roots/public-good.json")).unwrap();
        let m: serde_json::Value = serde_json::from_str(&fixture(
            "sigstore/image-legacy/gha-keyless-2026/signature-manifest.json",
        ))
        .unwrap();
        let ann = &m["layers"][0]["annotations"];
        let pem = |k: &str| -> Vec<Vec<u8>> {
            CertificateDer::pem_slice_iter(ann[k].as_str().unwrap().as_bytes())
                .map(|c| c.unwrap().as_ref().to_vec())
                .collect()
        };
        let leaf = pem("dev.sigstore.cosign/certificate").remove(0);
        let chain = pem("dev.sigstore.cosign/chain");
        let bundle: serde_json::Value =
            serde_json::from_str(ann["dev.sigstore.cosign/bundle"].as_str().unwrap()).unwrap();
        let t = bundle["Payload"]["integratedTime"].as_i64().unwrap();
        let v = crate::verify::fulcio::verify(&leaf, &chain, &pg, t).unwrap();
        verify(&leaf, &v.issuer_spkis, &pg).unwrap();
        let mut no_ct = pg.clone();
        no_ct.ctlogs.clear();
        assert!(verify(&leaf, &v.issuer_spkis, &no_ct).is_err());
        assert!(
            verify(&leaf, std::slice::from_ref(&leaf), &pg).is_err(),
            "wrong issuer key"
        );
        // The 2021 leaf has no SCT at all.
        let old = CertificateDer::pem_slice_iter(
            fixture("sigstore/image-legacy/keyless-2021-rekord/certificate.pem").as_bytes(),
        )
        .next()
        .unwrap()
        .unwrap();
        assert!(
            verify(old.as_ref(), &v.issuer_spkis, &pg)
                .unwrap_err()
                .contains("no embedded SCT")
        );
    }
}
