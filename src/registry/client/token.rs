//! The registry's token flow (the distribution spec's bearer challenge,
//! or Basic): which realm a challenge may send credentials to, the token
//! request (a refresh-token grant or Basic), the token's answer and how
//! long it is kept.

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::{
    Client, LookupError, REMEMBERED_MAX, Stats, Target, challenge, encode, guard, make_room,
    read_checked, registry_key, transport,
};
use crate::credentials::Credential;

/// A token without `expires_in` lives this long (the distribution spec).
const TOKEN_DEFAULT_TTL: Duration = Duration::from_secs(60);
/// A token is kept at most this long, whatever its `expires_in` says.
const TOKEN_MAX_TTL: Duration = Duration::from_secs(3600);
/// A token longer than this is refused (real ones are 1–4 KiB).
pub(super) const TOKEN_LEN_MAX: usize = 16 * 1024;
/// Token responses are small; more is refused.
const TOKEN_MAX: usize = 64 * 1024;

impl Client {
    /// The Authorization header a challenge asks for.
    pub(super) fn answer(
        &self,
        t: &Target,
        challenges: &[challenge::Challenge],
        credential: Option<&Credential>,
        scope: &str,
        key: &(String, String),
        deadline: Instant,
    ) -> Result<String, LookupError> {
        let host = &t.host;
        if let Some(c) = challenges.iter().find(|c| c.scheme == "bearer") {
            return self.bearer(t, c, credential, scope, key, deadline);
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            return match credential {
                Some(c @ Credential::Basic { .. }) => {
                    self.basic_hosts
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(host.clone());
                    basic_header(c).ok_or_else(|| LookupError::Permanent("no password".into()))
                }
                Some(Credential::IdentityToken(_)) => Err(LookupError::Permanent(format!(
                    "{host} asks for a password; only an identity token is configured for it"
                ))),
                None => Err(LookupError::Permanent(format!(
                    "{host} asks for credentials; none are configured for it"
                ))),
            };
        }
        Err(LookupError::Permanent(format!(
            "{host} asks for an authentication scheme image-bouncer does not speak"
        )))
    }

    /// A bearer challenge answered: a token from the realm it names (only
    /// a realm the registry may send credentials to), remembered for the
    /// scope until shortly before it ends.
    // One function on purpose, the realm's checks, the token request and its answer: the checks
    // must run before anything is sent, in this order.
    fn bearer(
        &self,
        t: &Target,
        c: &challenge::Challenge,
        credential: Option<&Credential>,
        scope: &str,
        key: &(String, String),
        deadline: Instant,
    ) -> Result<String, LookupError> {
        let host = &t.host;
        let realm = c
            .realm(t.plain)
            .map_err(|e| LookupError::Permanent(format!("{host}: {e}")))?;
        let realm_host =
            realm_host(realm).map_err(|e| LookupError::Permanent(format!("{host}: {e}")))?;
        let realm_port = crate::image_ref::split_port(&realm_host)
            .1
            .and_then(|p| p.parse().ok())
            .unwrap_or(if realm.starts_with("https://") {
                443
            } else {
                80
            });
        guard::check_literal(&self.named, &realm_host, realm_port)
            .map_err(|e| LookupError::Permanent(format!("token realm of {host}: {e}")))?;
        // Over plain HTTP anyone on the path can write the challenge
        // and name any realm: the registry's credentials go to a realm
        // on the registry's own host only.
        if t.plain && credential.is_some() && registry_key(&realm_host) != registry_key(host) {
            return Err(LookupError::Permanent(format!(
                "{host} is spoken to over plain HTTP and its token realm is on another host ({realm_host}); its credentials are not sent there, as anyone on the path could have named that realm"
            )));
        }
        let service = c.param("service");
        let mut query = format!("scope={}", encode(scope));
        if let Some(s) = service {
            query.push_str(&format!("&service={}", encode(s)));
        }
        let sep = if realm.contains('?') { '&' } else { '?' };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(LookupError::TimedOut(format!("{host}: no time left")));
        }
        let agent = self.agent_for(&realm_host);
        let https = realm.starts_with("https://");
        // The challenge sent us to this realm: the credentials may go
        // there, and nowhere else.
        Stats::add(&self.stats.requests);
        let sent = match credential {
            Some(Credential::IdentityToken(refresh)) => {
                let mut form = format!(
                    "grant_type=refresh_token&client_id=image-bouncer&refresh_token={}&{query}",
                    encode(refresh)
                );
                if service.is_none() {
                    form.push_str("&service=");
                }
                agent
                    .post(realm)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .config()
                    .proxy(self.proxy_for(https, &realm_host)?)
                    .timeout_global(Some(left))
                    .build()
                    .send(form.as_bytes())
            }
            other => {
                let mut req = agent.get(&format!("{realm}{sep}{query}"));
                if let Some(b) = other.and_then(basic_header) {
                    req = req.header("Authorization", b);
                }
                req.config()
                    .proxy(self.proxy_for(https, &realm_host)?)
                    .timeout_global(Some(left))
                    .build()
                    .call()
            }
        };
        let mut resp = sent.map_err(|e| match transport(&realm_host, e) {
            LookupError::TimedOut(m) => {
                LookupError::TimedOut(format!("token endpoint of {host}: {m}"))
            }
            LookupError::Transient(m) => {
                LookupError::Transient(format!("token endpoint of {host}: {m}"))
            }
            LookupError::Permanent(m) => {
                LookupError::Permanent(format!("token endpoint of {host}: {m}"))
            }
            LookupError::Unreachable(m) => {
                LookupError::Unreachable(format!("token endpoint of {host}: {m}"))
            }
        })?;
        let status = resp.status().as_u16();
        if status != 200 {
            let kind = if status == 429 || status >= 500 {
                LookupError::Transient
            } else {
                LookupError::Permanent
            };
            return Err(kind(format!(
                "token endpoint of {host} answered {status}{}",
                if credential.is_some() {
                    " (the credentials were refused)"
                } else {
                    "; no credentials are configured for it"
                }
            )));
        }
        let what = format!("token endpoint of {host}");
        let (body, _) = read_checked(&mut resp, None, TOKEN_MAX, &what)?;
        let (token, ttl) = token_answer(&body, &what)?;
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        make_room(&mut tokens, REMEMBERED_MAX, |(_, until)| *until);
        tokens.insert(
            key.clone(),
            (
                token.clone(),
                Instant::now() + ttl.saturating_sub(Duration::from_secs(5)),
            ),
        );
        Ok(format!("Bearer {token}"))
    }
}

/// `Basic base64(user:password)` for a Basic credential.
pub(super) fn basic_header(c: &Credential) -> Option<String> {
    match c {
        Credential::Basic { username, password } => Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
        )),
        Credential::IdentityToken(_) => None,
    }
}

/// The `host[:port]` a token realm names, from a URL with no user part
/// (`https://a@b/` connects to b: trust and proxy decisions must be made
/// for what is connected to).
fn realm_host(realm: &str) -> Result<String, String> {
    let uri: ureq::http::Uri = realm
        .parse()
        .map_err(|_| format!("the token realm {realm:?} is not a URL"))?;
    let authority = uri
        .authority()
        .ok_or_else(|| format!("the token realm {realm:?} names no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "the token realm {realm:?} carries a user part; refused"
        ));
    }
    Ok(authority.as_str().to_string())
}

/// A token endpoint's answer: the token (`token`, else `access_token`),
/// which must fit in an Authorization header, and how long it is kept.
pub(crate) fn token_answer(body: &[u8], what: &str) -> Result<(String, Duration), LookupError> {
    #[derive(serde::Deserialize)]
    struct Token {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
    }
    let t: Token = serde_json::from_slice(body)
        .map_err(|e| LookupError::Permanent(format!("{what} sent no token: {e}")))?;
    let token = t
        .token
        .filter(|t| !t.is_empty())
        .or(t.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| LookupError::Permanent(format!("{what} sent no token")))?;
    if token.len() > TOKEN_LEN_MAX {
        return Err(LookupError::Permanent(format!(
            "{what} sent a token of {} bytes (at most {TOKEN_LEN_MAX} are kept)",
            token.len()
        )));
    }
    if token.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
        return Err(LookupError::Permanent(format!(
            "{what} sent a token that cannot be a header value"
        )));
    }
    // A registry's word on how long its token lives, within reason
    // (an absurd expires_in must not overflow a clock).
    let ttl = t
        .expires_in
        .map_or(TOKEN_DEFAULT_TTL, Duration::from_secs)
        .min(TOKEN_MAX_TTL);
    Ok((token, ttl))
}
