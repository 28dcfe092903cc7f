//! Signature verification, offline: cosign's signatures over an image
//! digest, checked against configured keys or a sigstore trusted root
//! (Fulcio CAs, Rekor and CT log keys). It is handed bytes that the
//! admission step fetched from the registry and returns facts (which
//! digest was signed, by what key or identity, at what trusted time); it
//! does no I/O and knows no policy.

pub mod bundle;
pub mod fulcio;
pub mod keys;
pub mod legacy;
pub mod merkle;
pub mod rekor;
pub mod rules;
pub mod sct;

pub mod trust;
pub mod tsa;

/// One DER element (the verifiers' own small reader, for what x509-parser
/// does not expose: CMS, a TBS rebuilt without its SCTs, SAN values):
/// (tag, content, the whole element).
pub type Element<'a> = (u8, &'a [u8], &'a [u8]);

/// One DER element of `b`, and the rest after it.
pub fn tlv(b: &[u8]) -> Option<(Element<'_>, &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, h) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = len.checked_shl(8)? | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = h.checked_add(len)?;
    if b.len() < end {
        return None;
    }
    Some(((tag, &b[h..end], &b[..end]), &b[end..]))
}

/// The elements of a constructed content, in order.
pub fn items(mut b: &[u8]) -> Option<Vec<Element<'_>>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (e, rest) = tlv(b)?;
        out.push(e);
        b = rest;
    }
    Some(out)
}

/// The content of one DER element that fills `der` exactly.
pub fn content(der: &[u8]) -> Option<&[u8]> {
    match tlv(der)? {
        ((_, c, _), []) => Some(c),
        _ => None,
    }
}

/// `<algorithm>:<lowercase hex>`.
pub fn hex_digest(algorithm: &str, bytes: &[u8]) -> String {
    format!("{algorithm}:{}", crate::digest::hex(bytes))
}

/// A file of tests/fixtures (upstream vectors, unchanged), for unit tests.
#[cfg(test)]
pub(crate) fn fixture(path: &str) -> String {
    let p = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}
