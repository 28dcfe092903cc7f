//! `WWW-Authenticate` challenges (RFC 7235): the scheme and its
//! parameters, with quoted strings and escapes, several challenges in one
//! header. A registry answers `401` with `Bearer realm=...,service=...,
//! scope=...` (go fetch a token there) or `Basic realm=...`.

use std::collections::BTreeMap;

/// One challenge: scheme (lower case) and parameters (names lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// A Bearer realm is where credentials will be sent: it must be https
    /// (plain http only for a registry configured as plain HTTP).
    pub fn realm(&self, plain_http_allowed: bool) -> Result<&str, String> {
        let realm = self
            .param("realm")
            .ok_or("the registry's Bearer challenge has no realm")?;
        if realm.starts_with("https://") || (plain_http_allowed && realm.starts_with("http://")) {
            Ok(realm)
        } else {
            Err(format!(
                "the registry's token realm {realm:?} is not https; credentials are not sent there"
            ))
        }
    }
}

/// Parses a header value; what cannot be read is an error, never a guess.
pub fn parse(header: &str) -> Result<Vec<Challenge>, String> {
    let b = header.as_bytes();
    let mut i = 0;
    let mut out: Vec<Challenge> = Vec::new();
    let token = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && (b[*i].is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b[*i]))
        {
            *i += 1;
        }
        header[start..*i].to_string()
    };
    let skip = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    loop {
        skip(&mut i);
        if i >= b.len() {
            break;
        }
        let name = token(&mut i);
        if name.is_empty() {
            return Err(format!("cannot read WWW-Authenticate {header:?}"));
        }
        // A parameter of the current challenge, or a new scheme?
        let save = i;
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        if i < b.len() && b[i] == b'=' && !out.is_empty() {
            i += 1;
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                loop {
                    match b.get(i) {
                        None => return Err(format!("unterminated quoted string in {header:?}")),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            let c = header[i + 1..].chars().next().ok_or("dangling escape")?;
                            v.push(c);
                            i += 1 + c.len_utf8();
                        }
                        Some(_) => {
                            let c = header[i..].chars().next().ok_or("bad character")?;
                            v.push(c);
                            i += c.len_utf8();
                        }
                    }
                }
                v
            } else {
                token(&mut i)
            };
            if let Some(c) = out.last_mut() {
                c.params.insert(name.to_ascii_lowercase(), value);
            }
        } else {
            i = save;
            out.push(Challenge {
                scheme: name.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_challenges() {
        let c = parse(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:library/nginx:pull"));
        assert_eq!(c[0].realm(false), Ok("https://auth.docker.io/token"));
        // Several challenges, an escape, a token value, case.
        let c = parse(r#"Basic realm="Registry \"x\"", BEARER Realm="http://127.0.0.1/token", error=invalid_token"#).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].param("realm"), Some(r#"Registry "x""#));
        assert_eq!(c[1].scheme, "bearer");
        assert!(c[1].realm(false).unwrap_err().contains("not https"));
        assert_eq!(c[1].realm(true), Ok("http://127.0.0.1/token"));
        assert_eq!(c[1].param("error"), Some("invalid_token"));
        for bad in [r#"Bearer realm="open"#, "=x", r#"Bearer realm="\"#] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
