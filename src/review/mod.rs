//! Wire formats of the apiserver and where images live in objects.
//!
//! Adapters only: they turn requests into `policy::Request`s and decisions
//! into responses. Nothing here decides.

pub mod admission;
pub mod imagepolicy;
pub mod json;
pub mod workload;

use std::borrow::Cow;
use std::collections::BTreeMap;

use json::{Read, Reader, Seen, optional};

/// A version or kind as read: borrowed when it is one the reader knows.
pub(crate) type Known = Option<Cow<'static, str>>;

/// A review's envelope by the fast reader: `apiVersion`, `kind` and the one
/// `field` that holds the review (`spec`, `request`), read by `read`; as a
/// serde-derived struct of three `Option`s reads it (`null` is `None`, a
/// field twice gives up, others are passed over). Versions and kinds in
/// `known` are not copied.
pub(crate) fn read_envelope<'a, T>(
    r: &mut Reader<'a>,
    field: &str,
    known: &[&'static str],
    mut read: impl FnMut(&mut Reader<'a>) -> Read<T>,
) -> Read<(Known, Known, Option<T>)> {
    let (mut api_version, mut kind, mut value) = (None, None, None);
    let mut seen = Seen::default();
    r.object(|r, key| {
        match key {
            "apiVersion" => {
                seen.first(0)?;
                api_version = r.known_string(known)?;
            }
            "kind" => {
                seen.first(1)?;
                kind = r.known_string(known)?;
            }
            _ if key == field => {
                seen.first(2)?;
                value = optional(r, &mut read)?;
            }
            _ => r.skip()?,
        }
        Ok(())
    })?;
    Ok((api_version, kind, value))
}

/// `s` as a JSON string, escaped as serde_json escapes it: a backslash
/// before `"` and `\`, the short escapes for backspace, form feed,
/// newline, return and tab, `\u00XX` for the other control characters;
/// all else as it is.
pub(crate) fn push_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let mut plain = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..0x20 => {
                out.extend_from_slice(&s.as_bytes()[plain..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
                plain = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[plain..i]);
        out.extend_from_slice(escape);
        plain = i + 1;
    }
    out.extend_from_slice(&s.as_bytes()[plain..]);
    out.push(b'"');
}

/// `,"auditAnnotations":{...}` after the fields before it, if there are
/// any annotations (serde's `skip_serializing_if = "BTreeMap::is_empty"`).
pub(crate) fn push_annotations(out: &mut Vec<u8>, annotations: &BTreeMap<String, String>) {
    if annotations.is_empty() {
        return;
    }
    out.extend_from_slice(b",\"auditAnnotations\":{");
    for (n, (key, value)) in annotations.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        push_json_string(out, key);
        out.push(b':');
        push_json_string(out, value);
    }
    out.push(b'}');
}
