//! The OCI distribution client: resolves a tag to the digest the registry
//! serves for it, with `HEAD /v2/<name>/manifests/<tag>` (Docker Hub does
//! not count HEAD against its pull limit), anonymously, with Basic
//! credentials, or through the Bearer token flow. ureq 3 does the HTTP
//! (configured as ../shared/REGISTRY.md says); proxies, credentials,
//! challenges and digests are this module's siblings. Knows no policy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::image_ref::{DOCKER_HUB, ImageRef};
use crate::registry::challenge;
use crate::registry::credentials::{Credential, Credentials};
use crate::registry::digest::Digest;
use crate::registry::proxy::ProxyConfig;

/// What a manifest request accepts; the digest depends on the type the
/// registry picks, so HEAD sends it too.
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
/// Docker Hub's API host for `docker.io`.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// A token without `expires_in` lives this long (the distribution spec).
const TOKEN_DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Token responses are small; more is refused.
const TOKEN_MAX: u64 = 64 * 1024;

/// Why a lookup failed: a transient failure may succeed on a retry and is
/// never cached for long; a permanent one is an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    Transient(String),
    Permanent(String),
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupError::Transient(m) => write!(f, "{m} (transient)"),
            LookupError::Permanent(m) => f.write_str(m),
        }
    }
}

/// A registry client: one agent (one trust set), the proxy settings, the
/// credentials and the tokens they earned.
pub struct Client {
    /// Public roots (and any CA given for all registries).
    agent: ureq::Agent,
    /// Registry key -> an agent that also trusts that registry's CA.
    agents: HashMap<String, ureq::Agent>,
    proxies: ProxyConfig,
    credentials: Credentials,
    /// (registry, scope) -> (token, valid until).
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
    /// Tag -> answer, until a time: short for failures (a back-off), never
    /// longer than CACHE_TTL (a tag can move).
    cache: Mutex<HashMap<String, Remembered>>,
    /// Lookups under way: later askers wait for the first one's answer.
    inflight: Mutex<HashMap<String, Arc<Flight>>>,
    /// Registry host -> no request before this (`Retry-After` of a 429 or
    /// 503).
    not_before: Mutex<HashMap<String, Instant>>,
    stats: Stats,
}

/// Counters for `/metrics`. No per-registry label: registries are chosen
/// by whoever writes the image, and labels must stay few.
#[derive(Default)]
pub struct Stats {
    cache_hits: std::sync::atomic::AtomicU64,
    cache_misses: std::sync::atomic::AtomicU64,
    ok: std::sync::atomic::AtomicU64,
    transient: std::sync::atomic::AtomicU64,
    permanent: std::sync::atomic::AtomicU64,
    rate_limited: std::sync::atomic::AtomicU64,
}

impl Stats {
    fn add(counter: &std::sync::atomic::AtomicU64) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Prometheus text.
    pub fn render(&self) -> String {
        let v = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        format!(
            "# HELP image_bouncer_registry_lookups_total Tag lookups at registries by outcome.\n\
             # TYPE image_bouncer_registry_lookups_total counter\n\
             image_bouncer_registry_lookups_total{{outcome=\"ok\"}} {}\n\
             image_bouncer_registry_lookups_total{{outcome=\"transient\"}} {}\n\
             image_bouncer_registry_lookups_total{{outcome=\"permanent\"}} {}\n\
             # HELP image_bouncer_registry_cache_total Tag lookups answered from the cache (hit) or not (miss).\n\
             # TYPE image_bouncer_registry_cache_total counter\n\
             image_bouncer_registry_cache_total{{result=\"hit\"}} {}\n\
             image_bouncer_registry_cache_total{{result=\"miss\"}} {}\n\
             # HELP image_bouncer_registry_rate_limited_total Lookups refused without a request because a registry asked to wait (Retry-After).\n\
             # TYPE image_bouncer_registry_rate_limited_total counter\n\
             image_bouncer_registry_rate_limited_total {}\n",
            v(&self.ok),
            v(&self.transient),
            v(&self.permanent),
            v(&self.cache_hits),
            v(&self.cache_misses),
            v(&self.rate_limited)
        )
    }
}

/// A `Retry-After` longer than this is taken as this (a registry must not
/// switch us off for hours with one header).
const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

/// A lookup's answer and until when it is believed.
type Remembered = (Result<Digest, LookupError>, Instant);

/// One lookup under way.
#[derive(Default)]
struct Flight {
    answer: Mutex<Option<Result<Digest, LookupError>>>,
    done: std::sync::Condvar,
}

/// How long a resolved tag is believed: a tag moved is seen after this.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// How long a failure is remembered: transient ones briefly (no hammering
/// a registry that is down or rate limiting), permanent ones a little longer.
const TRANSIENT_BACKOFF: Duration = Duration::from_secs(2);
const PERMANENT_TTL: Duration = Duration::from_secs(10);
/// Tags remembered at most; past it the expired go, then all.
const CACHE_MAX: usize = 4096;

impl Client {
    /// `extra_ca`: certificates trusted besides the bundled Mozilla roots,
    /// for every registry (see [`Client::with_registry_cas`] for one).
    pub fn new(
        credentials: Credentials,
        proxies: ProxyConfig,
        extra_ca: &[rustls::pki_types::CertificateDer<'static>],
    ) -> Client {
        let agent = build_agent(extra_ca);
        Client {
            agent,
            agents: HashMap::new(),
            proxies,
            credentials,
            tokens: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            not_before: Mutex::new(HashMap::new()),
            stats: Stats::default(),
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Trusts each registry's own CA for that registry only (besides the
    /// public roots): `registry` is `host` or `host:port` by identity.
    pub fn with_registry_cas(
        mut self,
        cas: &std::collections::BTreeMap<String, Vec<rustls::pki_types::CertificateDer<'static>>>,
    ) -> Self {
        for (registry, certs) in cas {
            self.agents
                .insert(registry_key(registry), build_agent(certs));
        }
        self
    }

    /// The agent whose trust set is this host's.
    fn agent_for(&self, host: &str) -> &ureq::Agent {
        self.agents.get(&registry_key(host)).unwrap_or(&self.agent)
    }

    /// As [`Client::resolve`], answered from the cache when it can, and
    /// with one lookup in flight per tag however many ask at once.
    pub fn resolve_cached(&self, r: &ImageRef, within: Duration) -> Result<Digest, LookupError> {
        if let Some(d) = r.digest() {
            return Digest::parse(d).map_err(LookupError::Permanent);
        }
        let key = format!(
            "{}:{}/{}:{}",
            r.registry_host(),
            r.registry_port().unwrap_or(443),
            r.path(),
            r.effective_tag().unwrap_or("latest")
        );
        let now = Instant::now();
        if let Some((answer, until)) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            && *until > now
        {
            Stats::add(&self.stats.cache_hits);
            return answer.clone();
        }
        Stats::add(&self.stats.cache_misses);
        let (flight, leader) = {
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            match inflight.get(&key) {
                Some(f) => (f.clone(), false),
                None => {
                    let f = Arc::new(Flight::default());
                    inflight.insert(key.clone(), f.clone());
                    (f, true)
                }
            }
        };
        if leader {
            let answer = self.resolve(r, within);
            Stats::add(match &answer {
                Ok(_) => &self.stats.ok,
                Err(LookupError::Transient(_)) => &self.stats.transient,
                Err(LookupError::Permanent(_)) => &self.stats.permanent,
            });
            let ttl = match &answer {
                Ok(_) => CACHE_TTL,
                Err(LookupError::Transient(_)) => TRANSIENT_BACKOFF,
                Err(LookupError::Permanent(_)) => PERMANENT_TTL,
            };
            {
                let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
                if cache.len() >= CACHE_MAX {
                    let now = Instant::now();
                    cache.retain(|_, (_, until)| *until > now);
                    if cache.len() >= CACHE_MAX {
                        cache.clear();
                    }
                }
                cache.insert(key.clone(), (answer.clone(), Instant::now() + ttl));
            }
            *flight.answer.lock().unwrap_or_else(PoisonError::into_inner) = Some(answer.clone());
            flight.done.notify_all();
            self.inflight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
            return answer;
        }
        let deadline = now + within;
        let mut answer = flight.answer.lock().unwrap_or_else(PoisonError::into_inner);
        while answer.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(LookupError::Transient(format!(
                    "{}: the lookup under way did not finish in time",
                    r.domain()
                )));
            }
            answer = flight
                .done
                .wait_timeout(answer, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        answer
            .clone()
            .unwrap_or_else(|| Err(LookupError::Transient("no answer".into())))
    }

    /// The digest `r` names now: its own digest, or what the registry
    /// serves for its tag (`latest` when it has none). `within` bounds the
    /// whole lookup.
    pub fn resolve(&self, r: &ImageRef, within: Duration) -> Result<Digest, LookupError> {
        if let Some(d) = r.digest() {
            return Digest::parse(d).map_err(LookupError::Permanent);
        }
        let tag = r.effective_tag().unwrap_or("latest");
        let host = if r.registry_host() == DOCKER_HUB {
            DOCKER_HUB_API.to_string()
        } else {
            r.domain().to_string()
        };
        let url = format!("https://{host}/v2/{}/manifests/{tag}", r.path());
        let scope = format!("repository:{}:pull", r.path());
        let key = (host.clone(), scope.clone());
        let credential = self
            .credentials
            .for_registry(r.registry_host(), r.registry_port());
        let deadline = Instant::now() + within;
        let cached = self
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(t, _)| format!("Bearer {t}"));
        let mut auth = cached;
        for attempt in 0..2 {
            let resp = self.head(&url, &host, auth.as_deref(), deadline)?;
            let status = resp.status().as_u16();
            match status {
                200 => {
                    let header = resp
                        .headers()
                        .get("docker-content-digest")
                        .and_then(|v| v.to_str().ok())
                        .ok_or_else(|| {
                            LookupError::Permanent(format!(
                                "{host} answered {tag} without a Docker-Content-Digest"
                            ))
                        })?;
                    return Digest::parse(header).map_err(|e| {
                        LookupError::Permanent(format!("{host} sent a bad digest for {tag}: {e}"))
                    });
                }
                401 if attempt == 0 => {
                    let header = resp
                        .headers()
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let challenges = challenge::parse(header)
                        .map_err(|e| LookupError::Permanent(format!("{host}: {e}")))?;
                    auth = Some(self.answer(
                        &host,
                        &challenges,
                        credential,
                        &scope,
                        &key,
                        deadline,
                    )?);
                }
                401 | 403 => {
                    return Err(LookupError::Permanent(format!(
                        "{host} refused access to {} ({status}){}",
                        r.path(),
                        if credential.is_some() {
                            ""
                        } else {
                            "; no credentials are configured for it"
                        }
                    )));
                }
                404 => {
                    return Err(LookupError::Permanent(format!(
                        "{host} has no {}:{tag} (404)",
                        r.path()
                    )));
                }
                429 | 500..=599 => {
                    let wait = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s).min(RETRY_AFTER_MAX));
                    if let Some(wait) = wait.filter(|_| status == 429 || status == 503) {
                        self.not_before
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(host.clone(), Instant::now() + wait);
                        return Err(LookupError::Transient(format!(
                            "{host} is rate limiting ({status}, Retry-After {} s)",
                            wait.as_secs()
                        )));
                    }
                    return Err(LookupError::Transient(format!("{host} answered {status}")));
                }
                other => {
                    return Err(LookupError::Permanent(format!("{host} answered {other}")));
                }
            }
        }
        Err(LookupError::Permanent(format!(
            "{host} refused the credentials"
        )))
    }

    fn proxy_for(&self, https: bool, host: &str) -> Result<Option<ureq::Proxy>, LookupError> {
        let (h, port) = crate::image_ref::split_port(host);
        let port = port
            .and_then(|p| p.parse().ok())
            .unwrap_or(if https { 443 } else { 80 });
        self.proxies
            .proxy_for(https, h, port)
            .map(|p| {
                ureq::Proxy::new(p).map_err(|_| {
                    LookupError::Permanent(format!(
                        "proxy {} is not a proxy URL",
                        crate::registry::proxy::redact(p)
                    ))
                })
            })
            .transpose()
    }

    fn head(
        &self,
        url: &str,
        host: &str,
        auth: Option<&str>,
        deadline: Instant,
    ) -> Result<ureq::http::Response<ureq::Body>, LookupError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(LookupError::Transient(format!("{host}: no time left")));
        }
        // A registry that asked us to wait gets no request before then.
        if let Some(until) = self
            .not_before
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(host)
            .copied()
            .filter(|u| *u > Instant::now())
        {
            Stats::add(&self.stats.rate_limited);
            let secs = until.saturating_duration_since(Instant::now()).as_secs() + 1;
            return Err(LookupError::Transient(format!(
                "{host} is rate limiting: no request for {secs} s more (Retry-After)"
            )));
        }
        let mut req = self
            .agent_for(host)
            .head(url)
            .header("Accept", MANIFEST_TYPES);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.config()
            .proxy(self.proxy_for(true, host)?)
            .timeout_global(Some(left))
            .build()
            .call()
            .map_err(|e| LookupError::Transient(format!("{host}: {e}")))
    }

    /// The Authorization header a challenge asks for.
    fn answer(
        &self,
        host: &str,
        challenges: &[challenge::Challenge],
        credential: Option<&Credential>,
        scope: &str,
        key: &(String, String),
        deadline: Instant,
    ) -> Result<String, LookupError> {
        let basic = |c: &Credential| match c {
            Credential::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            Credential::IdentityToken(_) => None,
        };
        if let Some(c) = challenges.iter().find(|c| c.scheme == "bearer") {
            let realm = c
                .realm(false)
                .map_err(|e| LookupError::Permanent(format!("{host}: {e}")))?;
            let mut url = format!("{realm}?scope={}", encode(scope));
            if let Some(service) = c.param("service") {
                url.push_str(&format!("&service={}", encode(service)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let realm_host = realm
                .trim_start_matches("https://")
                .split('/')
                .next()
                .unwrap_or("")
                .to_string();
            let mut req = self.agent_for(&realm_host).get(&url);
            // The challenge sent us to this realm: the credentials may go
            // there, and nowhere else.
            if let Some(b) = credential.and_then(basic) {
                req = req.header("Authorization", b);
            }
            let mut resp = req
                .config()
                .proxy(self.proxy_for(true, &realm_host)?)
                .timeout_global(Some(left))
                .build()
                .call()
                .map_err(|e| LookupError::Transient(format!("token endpoint of {host}: {e}")))?;
            let status = resp.status().as_u16();
            if status != 200 {
                let kind = if status == 429 || status >= 500 {
                    LookupError::Transient
                } else {
                    LookupError::Permanent
                };
                return Err(kind(format!("token endpoint of {host} answered {status}")));
            }
            let body = resp
                .body_mut()
                .with_config()
                .limit(TOKEN_MAX)
                .read_to_string()
                .map_err(|e| LookupError::Transient(format!("token endpoint of {host}: {e}")))?;
            #[derive(serde::Deserialize)]
            struct Token {
                token: Option<String>,
                access_token: Option<String>,
                expires_in: Option<u64>,
            }
            let t: Token = serde_json::from_str(&body).map_err(|e| {
                LookupError::Permanent(format!("token endpoint of {host} sent no token: {e}"))
            })?;
            let token = t
                .token
                .or(t.access_token)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    LookupError::Permanent(format!("token endpoint of {host} sent no token"))
                })?;
            let ttl = t.expires_in.map_or(TOKEN_DEFAULT_TTL, Duration::from_secs);
            self.tokens
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    key.clone(),
                    (
                        token.clone(),
                        Instant::now() + ttl.saturating_sub(Duration::from_secs(5)),
                    ),
                );
            return Ok(format!("Bearer {token}"));
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            return credential.and_then(basic).ok_or_else(|| {
                LookupError::Permanent(format!(
                    "{host} asks for credentials; none are configured for it"
                ))
            });
        }
        Err(LookupError::Permanent(format!(
            "{host} asks for an authentication scheme image-bouncer does not speak"
        )))
    }
}

/// How long the lookups of one review may take together: safely under the
/// apiserver's 5 s webhook timeout.
pub const LOOKUP_BUDGET: Duration = Duration::from_secs(3);

/// `host` or `host:port`, by identity (`image_ref::canonical_host`), with
/// 443 left out.
fn registry_key(domain: &str) -> String {
    let (host, port) = crate::image_ref::split_port(domain);
    let host = crate::image_ref::canonical_host(host);
    match crate::image_ref::canonical_port(port).ok().flatten() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    }
}

/// An agent with REGISTRY.md's settings, trusting the bundled Mozilla
/// roots and `extra`.
fn build_agent(extra: &[rustls::pki_types::CertificateDer<'static>]) -> ureq::Agent {
    let mut roots: Vec<ureq::tls::Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .chain(extra)
        .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    roots.dedup_by(|a, b| a.der() == b.der());
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
        .build();
    ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .https_only(true)
        .max_redirects(5)
        .user_agent(concat!("image-bouncer/", env!("CARGO_PKG_VERSION")))
        .timeout_global(Some(Duration::from_secs(5)))
        .timeout_connect(Some(Duration::from_secs(3)))
        .timeout_per_read(Some(Duration::from_secs(3)))
        .max_response_header_size(64 * 1024)
        .tls_config(tls)
        .build()
        .into()
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            encode("repository:library/nginx:pull"),
            "repository%3Alibrary%2Fnginx%3Apull"
        );
    }
}
