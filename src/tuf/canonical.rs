//! Canonical JSON as TUF signs it (the OLPC form securesystemslib and
//! python-tuf write): object keys sorted by code point, no whitespace,
//! strings with only `"` and `\` escaped (every other character as its
//! UTF-8 bytes), integers only.

use serde_json::Value;

/// The canonical bytes of `v`; an error for a number that is not an
/// integer (TUF metadata holds none).
pub fn encode(v: &Value) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    write(v, &mut out, 0)?;
    Ok(out)
}

/// Nesting followed at most (serde_json reads no deeper than 128).
const DEPTH_MAX: usize = 128;

fn write(v: &Value, out: &mut Vec<u8>, depth: usize) -> Result<(), String> {
    if depth > DEPTH_MAX {
        return Err("metadata nested too deep".into());
    }
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => out.extend_from_slice(i.to_string().as_bytes()),
            (None, Some(u)) => out.extend_from_slice(u.to_string().as_bytes()),
            _ => {
                return Err(format!(
                    "metadata with a number that is not an integer ({n})"
                ));
            }
        },
        Value::String(s) => string(s, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(x, out, depth + 1)?;
            }
            out.push(b']');
        }
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(k, out);
                out.push(b':');
                write(&o[k], out, depth + 1)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for b in s.bytes() {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form() {
        let v: Value =
            serde_json::from_str(r#"{"b": [1, true, null], "a": "q\"\\\n é", "c": {"z": -3, "y": 18446744073709551615}}"#)
                .unwrap();
        assert_eq!(
            String::from_utf8(encode(&v).unwrap()).unwrap(),
            "{\"a\":\"q\\\"\\\\\n é\",\"b\":[1,true,null],\"c\":{\"y\":18446744073709551615,\"z\":-3}}"
        );
        assert!(encode(&serde_json::json!({"x": 1.5})).is_err());
    }
}
