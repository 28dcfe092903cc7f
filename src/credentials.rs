//! Registry credentials from a docker `config.json` (the file a
//! `kubernetes.io/dockerconfigjson` Secret holds), bound to the exact
//! registry they were written for: the same host identity and port
//! (`image_ref::canonical_host`), never a host that contains, ends with or
//! resembles it. Secrets are never printed: `Debug` redacts them.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;

use crate::image_ref;

/// What a registry gets: a user and password (Basic, or for the token
/// endpoint), or a refresh token (`identitytoken`).
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic { username: String, password: String },
    IdentityToken(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(***)"),
        }
    }
}

/// The credentials of one config file, by registry (identity, port).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Credentials {
    by_registry: BTreeMap<(String, Option<u16>), Credential>,
    /// `credsStore` and `credHelpers` entries: they need helper programs,
    /// which this binary does not run; reported at load.
    pub unsupported: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ConfigFile {
    auths: BTreeMap<String, AuthEntry>,
    creds_store: Option<String>,
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// A config key (`https://index.docker.io/v1/`, `ghcr.io`,
/// `registry.local:5000`) as a registry identity and port.
fn registry_key(key: &str) -> Result<(String, Option<u16>), String> {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let domain = rest.split('/').next().unwrap_or("");
    image_ref::validate_domain(domain).map_err(|e| image_ref::ParseError::describe(&e))?;
    let (host, port) = image_ref::split_port(domain);
    let port = image_ref::canonical_port(port).map_err(|e| image_ref::ParseError::describe(&e))?;
    Ok((image_ref::canonical_host(host), port))
}

impl Credentials {
    /// Reads a config file's text; every problem at once, never a secret in
    /// a message.
    pub fn parse(text: &str) -> Result<Credentials, Vec<String>> {
        let file: ConfigFile = serde_json::from_str(text).map_err(|e| {
            // Where and what kind of problem, not serde's own words: they
            // quote a misplaced value, which may be a secret.
            use serde_json::error::Category;
            let what = match e.classify() {
                Category::Syntax | Category::Io => "not JSON",
                Category::Data => "a value of the wrong type",
                Category::Eof => "cut short",
            };
            vec![format!(
                "not a docker config.json: {what} at line {} column {}",
                e.line(),
                e.column()
            )]
        })?;
        let mut problems = Vec::new();
        let mut out = Credentials::default();
        for (key, entry) in file.auths {
            let at = |why: String| format!("auths.{key:?}: {why}");
            let registry = match registry_key(&key) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(at(e));
                    continue;
                }
            };
            let cred = match (
                entry.identitytoken,
                entry.auth,
                entry.username,
                entry.password,
            ) {
                (Some(t), ..) if !t.is_empty() => Credential::IdentityToken(t),
                (_, Some(auth), ..) if !auth.is_empty() => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok());
                    match decoded.as_deref().and_then(|d| d.split_once(':')) {
                        Some((u, p)) => Credential::Basic {
                            username: u.to_string(),
                            password: p.to_string(),
                        },
                        None => {
                            problems.push(at("auth is not base64 of user:password".into()));
                            continue;
                        }
                    }
                }
                (_, _, Some(u), Some(p)) => Credential::Basic {
                    username: u,
                    password: p,
                },
                _ => {
                    problems.push(at("no auth, username/password or identitytoken".into()));
                    continue;
                }
            };
            out.by_registry.insert(registry, cred);
        }
        if let Some(store) = file.creds_store {
            out.unsupported.push(format!(
                "credsStore {store:?} needs a helper program, which image-bouncer does not run: put the credentials in auths"
            ));
        }
        for (registry, helper) in file.cred_helpers {
            out.unsupported.push(format!(
                "credHelpers {registry:?} ({helper:?}) needs a helper program, which image-bouncer does not run: put the credentials in auths"
            ));
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(problems)
        }
    }

    /// The credential for exactly this registry (identity and port, as
    /// `ImageRef::registry_host` and `registry_port` give them).
    pub fn for_registry(&self, host: &str, port: Option<u16>) -> Option<&Credential> {
        self.by_registry.get(&(host.to_string(), port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn credentials_are_bound_to_their_exact_registry() {
        let text = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "registry.example.com": {{"username": "u", "password": "p"}},
                "registry.example.com:8443": {{"identitytoken": "refresh-me"}},
                "[fd00:0::1]:5000": {{"auth": "{}"}}
            }}}}"#,
            b64("hub:hubpass"),
            b64("v6:pw:with:colons")
        );
        let c = Credentials::parse(&text).unwrap();
        let basic = |u: &str, p: &str| Credential::Basic {
            username: u.into(),
            password: p.into(),
        };
        // (registry identity, port, expected)
        let cases: [(&str, Option<u16>, Option<Credential>); 9] = [
            ("docker.io", None, Some(basic("hub", "hubpass"))), // Docker Hub's key
            ("registry.example.com", None, Some(basic("u", "p"))),
            (
                "registry.example.com",
                Some(8443),
                Some(Credential::IdentityToken("refresh-me".into())),
            ),
            ("registry.example.com", Some(5000), None), // another port
            ("registry.example.com.attacker.net", None, None), // contains it
            ("evilregistry.example.com", None, None),   // ends with it
            ("example.com", None, None),
            ("[fd00::1]", Some(5000), Some(basic("v6", "pw:with:colons"))), // identity, first ':' splits
            ("ghcr.io", None, None),
        ];
        for (host, port, want) in cases {
            assert_eq!(c.for_registry(host, port).cloned(), want, "{host} {port:?}");
        }
        // Found through a parsed reference's identity too.
        let r = image_ref::ImageRef::parse("REGISTRY-1.docker.io/library/nginx:1").unwrap();
        assert!(
            c.for_registry(r.registry_host(), r.registry_port())
                .is_some()
        );
    }

    /// A value in the wrong place is named by its position, never quoted
    /// (found by the `docker_config` fuzz target: an `auth` written
    /// straight under `auths` came back in serde's "invalid type: string
    /// ..." message, and with it into the configuration errors).
    #[test]
    fn misplaced_secrets_are_not_quoted() {
        let secret = b64("user:s3cretpassword");
        for text in [
            format!(r#"{{"auths": {{"r.io": "{secret}"}}}}"#),
            format!(r#"{{"auths": {{"r.io": {{"auth": "{secret}"}}, "auth": "{secret}"}}}}"#),
            format!(r#"{{"auths": "{secret}"}}"#),
            format!(r#"{{"auths": {{"r.io": {{"password": ["{secret}"]}}}}}}"#),
        ] {
            let e = Credentials::parse(&text).unwrap_err();
            assert_eq!(e.len(), 1, "{e:?}");
            assert!(!e[0].contains("s3cret") && !e[0].contains(&secret), "{e:?}");
            assert!(e[0].contains("wrong type at line 1 column"), "{e:?}");
        }
        let e = Credentials::parse(r#"{"auths": {"#).unwrap_err();
        assert!(e[0].contains("cut short"), "{e:?}");
    }

    #[test]
    fn secrets_never_show_and_problems_are_all_reported() {
        let text = format!(
            r#"{{"auths": {{"a.io": {{"auth": "{}"}}}}, "credsStore": "desktop", "credHelpers": {{"gcr.io": "gcloud"}}}}"#,
            b64("user:s3cret")
        );
        let c = Credentials::parse(&text).unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("***"),
            "{shown}"
        );
        assert_eq!(c.unsupported.len(), 2);
        assert!(c.unsupported[0].contains("credsStore \"desktop\""));
        let e = Credentials::parse(
            r#"{"auths": {"a.io": {"auth": "!!"}, "b.io": {}, "bad host/": {"auth": "eA=="}}}"#,
        )
        .unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e.iter().all(|p| !p.contains("!!")), "{e:?}");
    }
}
