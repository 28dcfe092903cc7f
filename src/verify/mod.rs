//! Signature verification, offline: cosign's signatures over an image
//! digest, checked against configured keys or a sigstore trusted root
//! (Fulcio CAs, Rekor and CT log keys). It is handed bytes that the
//! admission step fetched from the registry and returns facts (which
//! digest was signed, by what key or identity, at what trusted time); it
//! does no I/O and knows no policy.

pub mod bundle;
pub mod condition;
pub mod fulcio;
pub mod keys;
pub mod legacy;
pub mod merkle;
pub mod rekor;
pub mod rules;
pub mod sct;
pub mod statement;

pub mod trust;
pub mod tsa;

/// `s` cut to `max` characters (what a message quotes of something a
/// registry or a signer wrote).
pub fn clipped(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
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
