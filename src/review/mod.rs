//! Wire formats of the apiserver and where images live in objects.
//!
//! Adapters only: they turn requests into `policy::Request`s and decisions
//! into responses. Nothing here decides.

pub mod admission;
pub mod fast;
pub mod imagepolicy;
pub mod workload;

use std::collections::BTreeMap;

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
