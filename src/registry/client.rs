//! The OCI distribution client: resolves a tag to the digest the registry
//! serves for it, with `HEAD /v2/<name>/manifests/<tag>` (Docker Hub does
//! not count HEAD against its pull limit); fetches manifests and blobs,
//! each checked against its digest while it streams in under a cap; lists
//! a manifest's referrers (the OCI referrers API, or the `sha256-<hex>`
//! tag schema where a registry has no such API). Anonymously, with Basic
//! credentials, or through the Bearer token flow. ureq 3 does the HTTP
//! (configured as ../shared/REGISTRY.md says); proxies, credentials,
//! challenges and digests are this module's siblings. Knows no policy.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ureq::ResponseExt as _;

use crate::credentials::{Credential, Credentials};
use crate::digest::{Digest, Hasher, Refused, Verifier};
use crate::flight::{Flights, Got, Outcome};
use crate::image_ref::{DOCKER_HUB, ImageRef};
use crate::registry::challenge;
use crate::registry::guard;
use crate::registry::proxy::ProxyConfig;

/// What a manifest request accepts; the digest depends on the type the
/// registry picks, so HEAD sends it too.
mod token;
use token::basic_header;
pub(crate) use token::token_answer;

pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
/// The OCI image index type (referrers answers, the fallback tag).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// A manifest larger than this is refused (the distribution registry's own
/// limit; a 4 MiB manifest already lists thousands of layers).
pub const MANIFEST_MAX: usize = 4 << 20;
/// Docker Hub's API host for `docker.io`.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// Tokens and Retry-After waits remembered at most (registries and
/// repositories are named by whoever writes the image): with tokens of at
/// most `token::TOKEN_LEN_MAX`, 16 MiB at worst.
const REMEMBERED_MAX: usize = 1024;
/// Requests under way to one registry at most; more wait (within their
/// deadline) so that one rollout cannot open hundreds of connections to a
/// registry that already struggles.
pub const MAX_IN_FLIGHT: usize = 8;
/// Referrers pages followed at most, and descriptors kept at most.
const REFERRER_PAGES: usize = 8;
const REFERRERS_MAX: usize = 1024;

/// Why a lookup failed: a transient failure may succeed on a retry and is
/// never cached for long; a permanent one is an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// The registry itself failed: it answered with an error status (5xx,
    /// 429) or refused the connection. May succeed later; the only failure
    /// `onRegistryError: allow` admits.
    Transient(String),
    Permanent(String),
    /// The registry could not be reached or spoken to for another reason
    /// (name resolution, TLS, a connection broken mid-way): may succeed
    /// later, but nothing says the registry is down rather than that
    /// something between (DNS, the network) is failing on purpose, so it
    /// never admits.
    Unreachable(String),
    /// The caller's time ran out (a deadline, not a registry's answer):
    /// never taken for an outage, never remembered.
    TimedOut(String),
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupError::Transient(m) => write!(f, "{m} (transient)"),
            LookupError::Permanent(m) => f.write_str(m),
            LookupError::TimedOut(m) => write!(f, "{m} (out of time)"),
            LookupError::Unreachable(m) => write!(f, "{m} (unreachable)"),
        }
    }
}

/// A manifest as fetched: its bytes were checked against `digest`.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub media_type: String,
    pub digest: Digest,
    pub bytes: Vec<u8>,
}

/// An OCI descriptor, as an index or the referrers API lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(rename = "artifactType", default)]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A registry client: one agent per trust set, the proxy settings, the
/// credentials and the tokens they earned.
pub struct Client {
    /// Public roots (and any CA given for all registries).
    agent: ureq::Agent,
    /// Registry key -> an agent that also trusts that registry's CA (or,
    /// for a plain HTTP registry, one that may speak http).
    agents: HashMap<String, ureq::Agent>,
    /// Registry keys configured as plain HTTP.
    plain: HashSet<String>,
    proxies: ProxyConfig,
    credentials: Credentials,
    /// (registry, scope) -> (token, valid until).
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
    /// Tag -> answer, until a time: short for failures (a back-off), never
    /// longer than the tag TTL (a tag can move); one lookup under way per
    /// tag, later askers wait for its answer.
    tags: Flights<String, Result<Digest, LookupError>>,
    tag_ttl: Duration,
    /// Registry host and repository -> no request before this
    /// (`Retry-After` of a 429 or 503). Per repository: a wait one
    /// repository's answer asked for does not stop lookups in another.
    not_before: Mutex<HashMap<String, Instant>>,
    /// Registry hosts that asked for Basic credentials: they get them
    /// with the first request from then on (one round trip, not two).
    basic_hosts: Mutex<HashSet<String>>,
    /// Registry host -> requests under way (at most MAX_IN_FLIGHT).
    busy: Mutex<HashMap<String, usize>>,
    /// Hosts the configuration names, which may be on loopback or
    /// link-local addresses (`guard`).
    named: guard::Named,
    freed: Condvar,
    stats: Stats,
}

/// Lookup latency buckets (seconds).
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Counters for `/metrics`. No per-registry label: registries are chosen
/// by whoever writes the image, and labels must stay few.
#[derive(Default)]
pub struct Stats {
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    ok: AtomicU64,
    transient: AtomicU64,
    permanent: AtomicU64,
    rate_limited: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
    slot_waits: AtomicU64,
    /// Lookups by latency bucket (the last one is +Inf), and their sum in
    /// microseconds.
    latency: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
}

impl Stats {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        Stats::add(&self.latency[i]);
        self.latency_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Requests sent to registries so far (token endpoints included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Prometheus text.
    pub fn render(&self) -> String {
        let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut t = crate::metrics::Text::default();
        let name = "image_bouncer_registry_lookups_total";
        t.family(name, "counter", "Tag lookups at registries by outcome.");
        for (outcome, c) in [
            ("ok", &self.ok),
            ("transient", &self.transient),
            ("permanent", &self.permanent),
        ] {
            t.sample(name, &[("outcome", outcome)], v(c));
        }
        let name = "image_bouncer_registry_cache_total";
        t.family(
            name,
            "counter",
            "Tag lookups answered from the cache (hit) or not (miss).",
        );
        t.sample(name, &[("result", "hit")], v(&self.cache_hits));
        t.sample(name, &[("result", "miss")], v(&self.cache_misses));
        for (name, help, c) in [
            (
                "image_bouncer_registry_rate_limited_total",
                "Lookups refused without a request because a registry asked to wait (Retry-After).",
                &self.rate_limited,
            ),
            (
                "image_bouncer_registry_requests_total",
                "HTTP requests sent to registries and their token endpoints.",
                &self.requests,
            ),
            (
                "image_bouncer_registry_stale_retries_total",
                "Requests sent again once because a pooled connection had gone stale.",
                &self.retries,
            ),
            (
                "image_bouncer_registry_slot_waits_total",
                "Requests that waited because a registry had the most requests under way.",
                &self.slot_waits,
            ),
        ] {
            t.single(name, "counter", help, v(c));
        }
        let name = "image_bouncer_registry_lookup_duration_seconds";
        t.family(
            name,
            "histogram",
            "Tag lookups that went to a registry, by time taken.",
        );
        let counts: Vec<u64> = self.latency.iter().map(v).collect();
        t.histogram(
            name,
            &[],
            &BUCKETS,
            &counts,
            v(&self.latency_sum_us) as f64 / 1e6,
        );
        t.finish()
    }
}

/// A `Retry-After` longer than this is taken as this (a registry must not
/// switch us off for hours with one header).
const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

/// How long a resolved tag is believed by default: a tag moved is seen
/// after this.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// How long a failure is remembered: transient ones briefly (no hammering
/// a registry that is down or rate limiting), permanent ones a little longer.
const TRANSIENT_BACKOFF: Duration = Duration::from_secs(2);
const PERMANENT_TTL: Duration = Duration::from_secs(10);
/// Tags remembered at most; past it the expired go, then all.
const CACHE_MAX: usize = 4096;

/// Where an image's requests go.
struct Target {
    /// `host[:port]` connected to (`registry-1.docker.io` for Docker Hub).
    host: String,
    /// `https://host[:port]`, or `http://` for a plain HTTP registry.
    base: String,
    /// The repository path (`library/nginx`).
    name: String,
    plain: bool,
    registry_host: String,
    registry_port: Option<u16>,
}

/// GET or HEAD: the only methods sent to a registry (both idempotent, so
/// a stale pooled connection is retried once).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
}

/// Frees a request slot of a registry when dropped.
struct Slot<'a> {
    client: &'a Client,
    host: String,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut busy = self
            .client
            .busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = busy.get_mut(&self.host) {
            *n -= 1;
            if *n == 0 {
                busy.remove(&self.host);
            }
        }
        self.client.freed.notify_all();
    }
}

impl Client {
    /// `extra_ca`: certificates trusted besides the bundled Mozilla roots,
    /// for every registry (see [`Client::with_registry_cas`] for one).
    pub fn new(
        credentials: Credentials,
        proxies: ProxyConfig,
        extra_ca: &[rustls::pki_types::CertificateDer<'static>],
    ) -> Client {
        let named = guard::Named::default();
        for (host, port) in proxies.hosts() {
            named.add_port(&host, Some(port));
        }
        Client {
            agent: build_agent(extra_ca, true, &named),
            agents: HashMap::new(),
            plain: HashSet::new(),
            proxies,
            credentials,
            tokens: Mutex::new(HashMap::new()),
            tags: Flights::new(CACHE_MAX, |_| 0),
            tag_ttl: CACHE_TTL,
            not_before: Mutex::new(HashMap::new()),
            basic_hosts: Mutex::new(HashSet::new()),
            busy: Mutex::new(HashMap::new()),
            named,
            freed: Condvar::new(),
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
        cas: &BTreeMap<String, Vec<rustls::pki_types::CertificateDer<'static>>>,
    ) -> Self {
        for (registry, certs) in cas {
            let key = registry_key(registry);
            let https_only = !self.plain.contains(&key);
            self.name_registry(&key);
            self.agents
                .insert(key, build_agent(certs, https_only, &self.named));
        }
        self
    }

    /// Speaks plain HTTP to these registries (`host[:port]` by identity),
    /// and to them alone: their tokens and credentials cross the network
    /// in the clear, which is why only a configuration can ask for it.
    pub fn with_plain_http<'a>(mut self, registries: impl IntoIterator<Item = &'a String>) -> Self {
        for r in registries {
            let key = registry_key(r);
            self.plain.insert(key.clone());
            self.name_registry(&key);
            self.agents
                .insert(key.clone(), build_agent(&[], false, &self.named));
        }
        self
    }

    /// Names a configured registry (`host[:port]` by identity) on the
    /// port it is spoken to on, for the guard.
    fn name_registry(&self, key: &str) {
        let (host, port) = crate::image_ref::split_port(key);
        let default = if self.plain.contains(key) { 80 } else { 443 };
        let port = port.and_then(|p| p.parse().ok()).unwrap_or(default);
        self.named.add_port(host, Some(port));
    }

    /// Names hosts that may be reached on loopback or link-local
    /// addresses, as a `registries` entry does (`guard`): `host:port`, or
    /// `host` for all of its ports.
    pub fn with_named_hosts<'a>(self, hosts: impl IntoIterator<Item = &'a str>) -> Self {
        for h in hosts {
            self.named.add(h);
        }
        self
    }

    /// A GET of `url` outside any registry's API (TUF metadata and
    /// targets): the same agents, proxies, timeouts and address guard (a
    /// loopback or link-local host only when named with
    /// [`Client::with_named_hosts`]), plain `http://` only to a host given
    /// to [`Client::with_plain_http`], no credentials, at most `cap`
    /// bytes, within `within`. A 404 is `Permanent` with "(404)" in it.
    pub fn get_url(&self, url: &str, cap: usize, within: Duration) -> Result<Vec<u8>, LookupError> {
        let bad = || LookupError::Permanent(format!("{url:?} is not an http(s) URL"));
        let uri: ureq::http::Uri = url.parse().map_err(|_| bad())?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad()),
        };
        let authority = uri.authority().ok_or_else(bad)?.as_str();
        if authority.contains('@') {
            return Err(bad());
        }
        let key = registry_key(authority);
        if !https && !self.plain.contains(&key) {
            return Err(LookupError::Permanent(format!(
                "{url}: plain http to {key} is not configured"
            )));
        }
        let (host, port) = crate::image_ref::split_port(&key);
        let port = port.and_then(|p| p.parse::<u16>().ok());
        let t = Target {
            host: key.clone(),
            base: String::new(),
            name: String::new(),
            plain: !https,
            registry_host: host.to_string(),
            registry_port: port,
        };
        guard::check_literal(
            &self.named,
            &key,
            port.unwrap_or(if https { 443 } else { 80 }),
        )
        .map_err(LookupError::Permanent)?;
        let deadline = Instant::now() + within;
        let mut resp = self.call(&t, Method::Get, url, "*/*", None, deadline)?;
        let status = resp.status().as_u16();
        match status {
            200 => {}
            429 | 500..=599 => {
                return Err(LookupError::Transient(format!("{url}: ({status})")));
            }
            _ => return Err(LookupError::Permanent(format!("{url}: ({status})"))),
        }
        read_checked(&mut resp, None, cap, url).map(|(bytes, _)| bytes)
    }

    /// How long a resolved tag is believed (default [`CACHE_TTL`]).
    pub fn with_tag_ttl(mut self, ttl: Duration) -> Self {
        self.tag_ttl = ttl;
        self
    }

    /// The agent whose trust set is this host's.
    fn agent_for(&self, host: &str) -> &ureq::Agent {
        self.agents.get(&registry_key(host)).unwrap_or(&self.agent)
    }

    fn target(&self, r: &ImageRef) -> Target {
        // One spelling per registry (case, IPv6 form, `:443`, leading
        // zeros), so that caches, slots, waits and tokens are per registry,
        // not per spelling. Docker Hub's names on its own port are its API
        // host; on another port they are just a host.
        let key = registry_key(r.domain());
        let host =
            if r.registry_host() == DOCKER_HUB && matches!(r.registry_port(), None | Some(443)) {
                DOCKER_HUB_API.to_string()
            } else {
                key.clone()
            };
        let plain = self.plain.contains(&key);
        Target {
            base: format!("{}://{host}", if plain { "http" } else { "https" }),
            host,
            name: r.path().to_string(),
            plain,
            registry_host: r.registry_host().to_string(),
            registry_port: r.registry_port(),
        }
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
        let deadline = Instant::now() + within;
        let got = self.tags.get(key, deadline, || {
            let began = Instant::now();
            let answer = self.resolve(r, deadline.saturating_duration_since(began));
            self.stats.observe(began.elapsed());
            // Out of the asker's own time: its failure is nobody else's
            // answer (another review's slow images must not fail this
            // one), and it is not remembered.
            let out_of_time = matches!(answer, Err(LookupError::TimedOut(_)))
                || (matches!(answer, Err(LookupError::Transient(_)))
                    && Instant::now() + Duration::from_millis(20) >= deadline);
            Stats::add(match &answer {
                Ok(_) => &self.stats.ok,
                Err(
                    LookupError::Transient(_)
                    | LookupError::TimedOut(_)
                    | LookupError::Unreachable(_),
                ) => &self.stats.transient,
                Err(LookupError::Permanent(_)) => &self.stats.permanent,
            });
            let keep = match &answer {
                _ if out_of_time => None,
                Ok(_) => Some(self.tag_ttl),
                Err(
                    LookupError::Transient(_)
                    | LookupError::TimedOut(_)
                    | LookupError::Unreachable(_),
                ) => Some(TRANSIENT_BACKOFF.min(self.tag_ttl)),
                Err(LookupError::Permanent(_)) => Some(PERMANENT_TTL.min(self.tag_ttl)),
            };
            Outcome {
                value: answer,
                keep,
            }
        });
        match got {
            Got::Remembered(answer) => {
                Stats::add(&self.stats.cache_hits);
                answer
            }
            Got::Ran(answer) | Got::Waited(answer) => {
                Stats::add(&self.stats.cache_misses);
                answer
            }
            Got::TimedOut => {
                Stats::add(&self.stats.cache_misses);
                Err(LookupError::TimedOut(format!(
                    "{}: the lookup under way did not finish in time",
                    r.domain()
                )))
            }
        }
    }

    /// The digest `r` names now: its own digest, or what the registry
    /// serves for its tag (`latest` when it has none), by `HEAD`; a
    /// registry that sends no `Docker-Content-Digest` is asked with `GET`
    /// and the bytes are hashed. `within` bounds the whole lookup.
    pub fn resolve(&self, r: &ImageRef, within: Duration) -> Result<Digest, LookupError> {
        if let Some(d) = r.digest() {
            return Digest::parse(d).map_err(LookupError::Permanent);
        }
        let tag = r.effective_tag().unwrap_or("latest");
        let t = self.target(r);
        let deadline = Instant::now() + within;
        let path = format!("/v2/{}/manifests/{tag}", t.name);
        let (resp, slot) = self.send(&t, Method::Head, &path, MANIFEST_TYPES, deadline)?;
        drop(slot);
        match resp.status().as_u16() {
            200 => {}
            404 => {
                return Err(LookupError::Permanent(format!(
                    "{} has no {}:{tag} (404)",
                    t.host, t.name
                )));
            }
            other => {
                return Err(LookupError::Permanent(format!(
                    "{} answered {other} for {}:{tag}",
                    t.host, t.name
                )));
            }
        }
        match header(&resp, "docker-content-digest") {
            Some(h) => Digest::parse(h).map_err(|e| {
                LookupError::Permanent(format!("{} sent a bad digest for {tag}: {e}", t.host))
            }),
            None => Ok(self.fetch_manifest(&t, tag, MANIFEST_MAX, deadline)?.digest),
        }
    }

    /// The manifest `reference` (a tag or a digest) of `r`'s repository.
    /// By digest, the bytes must hash to it; by tag, to the
    /// `Docker-Content-Digest` the registry sent, if any. More than
    /// [`MANIFEST_MAX`] is refused as it arrives.
    pub fn manifest(
        &self,
        r: &ImageRef,
        reference: &str,
        within: Duration,
    ) -> Result<Manifest, LookupError> {
        self.manifest_capped(r, reference, MANIFEST_MAX, within)
    }

    /// As [`Client::manifest`], refusing more than `cap` bytes (at most
    /// [`MANIFEST_MAX`]): what a caller has left of its own byte budget.
    pub fn manifest_capped(
        &self,
        r: &ImageRef,
        reference: &str,
        cap: usize,
        within: Duration,
    ) -> Result<Manifest, LookupError> {
        let t = self.target(r);
        self.fetch_manifest(
            &t,
            reference,
            cap.min(MANIFEST_MAX),
            Instant::now() + within,
        )
    }

    fn fetch_manifest(
        &self,
        t: &Target,
        reference: &str,
        cap: usize,
        deadline: Instant,
    ) -> Result<Manifest, LookupError> {
        let path = format!("/v2/{}/manifests/{reference}", t.name);
        let (mut resp, _slot) = self.send(t, Method::Get, &path, MANIFEST_TYPES, deadline)?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(LookupError::Permanent(format!(
                "{} has no {}:{reference} ({status})",
                t.host, t.name
            )));
        }
        let content_type = header(&resp, "content-type")
            .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        let expected = if reference.contains(':') {
            Some(Digest::parse(reference).map_err(LookupError::Permanent)?)
        } else {
            header(&resp, "docker-content-digest")
                .map(|h| {
                    Digest::parse(h).map_err(|e| {
                        LookupError::Permanent(format!(
                            "{} sent a bad digest for {reference}: {e}",
                            t.host
                        ))
                    })
                })
                .transpose()?
        };
        let what = format!("{}/{}:{reference}", t.host, t.name);
        let (bytes, digest) = read_checked(&mut resp, expected, cap, &what)?;
        let media_type = manifest_type(&bytes, &content_type)
            .map_err(|e| LookupError::Permanent(format!("{what}: {e}")))?;
        Ok(Manifest {
            media_type,
            digest,
            bytes,
        })
    }

    /// The blob `digest` of `r`'s repository, `size` bytes as its
    /// descriptor says, checked against the digest as it streams in. A
    /// descriptor larger than `cap` is refused before anything is asked.
    pub fn blob(
        &self,
        r: &ImageRef,
        digest: &Digest,
        size: u64,
        cap: usize,
        within: Duration,
    ) -> Result<Vec<u8>, LookupError> {
        let t = self.target(r);
        let what = format!("{}/{}@{digest}", t.host, t.name);
        if size > cap as u64 {
            return Err(LookupError::Permanent(format!(
                "{what}: its descriptor says {size} bytes, more than the {cap} accepted"
            )));
        }
        let path = format!("/v2/{}/blobs/{digest}", t.name);
        let deadline = Instant::now() + within;
        let (mut resp, _slot) = self.send(&t, Method::Get, &path, "*/*", deadline)?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(LookupError::Permanent(format!(
                "{} has no blob {digest} in {} ({status})",
                t.host, t.name
            )));
        }
        let (bytes, _) = read_checked(&mut resp, Some(digest.clone()), size as usize, &what)?;
        if bytes.len() as u64 != size {
            return Err(LookupError::Permanent(format!(
                "{what}: {} bytes arrived, its descriptor says {size}",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// The manifests that name `subject` as theirs (signatures,
    /// attestations), of `artifact_type` if given: from the referrers API,
    /// or, where the registry answers 404 there, from the index tagged
    /// `sha256-<hex>` (the OCI tag schema). No such index: none.
    pub fn referrers(
        &self,
        r: &ImageRef,
        subject: &Digest,
        artifact_type: Option<&str>,
        within: Duration,
    ) -> Result<Vec<Descriptor>, LookupError> {
        self.referrers_capped(
            r,
            subject,
            artifact_type,
            REFERRER_PAGES * MANIFEST_MAX,
            within,
        )
        .map(|(found, _)| found)
    }

    /// As [`Client::referrers`], reading at most `cap` bytes of pages (or
    /// of the fallback index) in all; also returns the bytes read, which
    /// the caller counts against its own budget.
    ///
    /// A 404 is taken for this request alone and never remembered: the
    /// distribution spec lets a registry without the API answer 404, and
    /// some registries with it answer 404 for a repository they do not
    /// hold, so what one repository's answer says must not decide how
    /// another's signatures are looked up.
    pub fn referrers_capped(
        &self,
        r: &ImageRef,
        subject: &Digest,
        artifact_type: Option<&str>,
        cap: usize,
        within: Duration,
    ) -> Result<(Vec<Descriptor>, usize), LookupError> {
        let t = self.target(r);
        let deadline = Instant::now() + within;
        let mut path = format!("/v2/{}/referrers/{subject}", t.name);
        if let Some(a) = artifact_type {
            path.push_str(&format!("?artifactType={}", encode(a)));
        }
        let mut found = Vec::new();
        let mut read = 0usize;
        for page in 0..REFERRER_PAGES {
            let (mut resp, slot) = self.send(&t, Method::Get, &path, OCI_INDEX, deadline)?;
            let status = resp.status().as_u16();
            if status == 404 && page == 0 {
                drop((resp, slot));
                return self.referrers_by_tag(&t, subject, artifact_type, cap, deadline);
            }
            if status != 200 {
                return Err(LookupError::Permanent(format!(
                    "{} answered {status} for the referrers of {subject}",
                    t.host
                )));
            }
            let next = header(&resp, "link").and_then(next_link);
            let what = format!("{}/{} referrers of {subject}", t.host, t.name);
            let left = cap.saturating_sub(read).min(MANIFEST_MAX);
            let (bytes, _) = read_checked(&mut resp, None, left, &what)?;
            read += bytes.len();
            found.extend(index_entries(&bytes, &what)?);
            if found.len() > REFERRERS_MAX {
                return Err(LookupError::Permanent(format!(
                    "{what}: more than {REFERRERS_MAX} referrers"
                )));
            }
            match next {
                Some(n) => path = n,
                None => break,
            }
        }
        found.retain(|d| artifact_type.is_none_or(|a| d.artifact_type.as_deref() == Some(a)));
        Ok((found, read))
    }

    fn referrers_by_tag(
        &self,
        t: &Target,
        subject: &Digest,
        artifact_type: Option<&str>,
        cap: usize,
        deadline: Instant,
    ) -> Result<(Vec<Descriptor>, usize), LookupError> {
        let tag = subject.tag_form();
        let m = match self.fetch_manifest(t, &tag, cap.min(MANIFEST_MAX), deadline) {
            Ok(m) => m,
            Err(LookupError::Permanent(e)) if e.ends_with("(404)") => return Ok((Vec::new(), 0)),
            Err(e) => return Err(e),
        };
        if m.media_type != OCI_INDEX {
            return Err(LookupError::Permanent(format!(
                "{}/{}:{tag} is a {}, not the OCI index the referrers tag schema asks for",
                t.host, t.name, m.media_type
            )));
        }
        let what = format!("{}/{}:{tag}", t.host, t.name);
        let mut found = index_entries(&m.bytes, &what)?;
        if found.len() > REFERRERS_MAX {
            return Err(LookupError::Permanent(format!(
                "{what}: more than {REFERRERS_MAX} referrers"
            )));
        }
        found.retain(|d| artifact_type.is_none_or(|a| d.artifact_type.as_deref() == Some(a)));
        Ok((found, m.bytes.len()))
    }

    /// One request to a registry, authorised: a cached token first; on a
    /// `401` the challenge is answered (Basic, or a Bearer token) and the
    /// request sent once more. Answers other than 2xx/3xx/404 are errors
    /// here, with the registry's status and whether a retry may help.
    // One function on purpose, one request with its authentication round, stale-connection
    // retry and Retry-After handling, which share the same state.
    fn send(
        &self,
        t: &Target,
        method: Method,
        path: &str,
        accept: &str,
        deadline: Instant,
    ) -> Result<(ureq::http::Response<ureq::Body>, Slot<'_>), LookupError> {
        // A node-local address written in the image is refused before a
        // proxy could be asked to reach it (the resolver's guard sees only
        // the proxy's address then).
        let port = t.registry_port.unwrap_or(if t.plain { 80 } else { 443 });
        guard::check_literal(&self.named, &t.host, port).map_err(LookupError::Permanent)?;
        // Held until the caller has read the body.
        let slot = self.slot(&t.host, deadline)?;
        let url = format!("{}{path}", t.base);
        let scope = format!("repository:{}:pull", t.name);
        let key = (t.host.clone(), scope.clone());
        let credential = self
            .credentials
            .for_registry(&t.registry_host, t.registry_port);
        let mut auth = self
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(t, _)| format!("Bearer {t}"));
        if auth.is_none()
            && let Some(c @ Credential::Basic { .. }) = credential
            && self
                .basic_hosts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&t.host)
        {
            auth = basic_header(c);
        }
        for attempt in 0..2 {
            let resp = self.call(t, method, &url, accept, auth.as_deref(), deadline)?;
            let status = resp.status().as_u16();
            match status {
                401 if !answered_by(&resp, &t.host) => {
                    return Err(LookupError::Permanent(format!(
                        "{} redirected us to {}, which asks for credentials; they are not sent there",
                        t.host,
                        resp.get_uri().host().unwrap_or("another host")
                    )));
                }
                401 if attempt == 0 => {
                    let challenges =
                        challenge::parse(header(&resp, "www-authenticate").unwrap_or(""))
                            .map_err(|e| LookupError::Permanent(format!("{}: {e}", t.host)))?;
                    drop(resp);
                    auth = Some(self.answer(t, &challenges, credential, &scope, &key, deadline)?);
                }
                401 | 403 => {
                    return Err(LookupError::Permanent(format!(
                        "{} refused access to {} ({status}){}",
                        t.host,
                        t.name,
                        if credential.is_some() {
                            ""
                        } else {
                            "; no credentials are configured for it"
                        }
                    )));
                }
                429 | 500..=599 => {
                    let wait = header(&resp, "retry-after")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s).min(RETRY_AFTER_MAX));
                    if let Some(wait) = wait.filter(|_| status == 429 || status == 503) {
                        let mut not_before = self
                            .not_before
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner);
                        make_room(&mut not_before, REMEMBERED_MAX, |until| *until);
                        not_before.insert(wait_key(t), Instant::now() + wait);
                        return Err(LookupError::Transient(format!(
                            "{} is rate limiting ({status}, Retry-After {} s)",
                            t.host,
                            wait.as_secs()
                        )));
                    }
                    return Err(LookupError::Transient(format!(
                        "{} answered {status}",
                        t.host
                    )));
                }
                s if s < 400 || s == 404 => return Ok((resp, slot)),
                other => {
                    return Err(LookupError::Permanent(format!(
                        "{} answered {other}",
                        t.host
                    )));
                }
            }
        }
        Err(LookupError::Permanent(format!(
            "{} refused the credentials",
            t.host
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

    /// Waits (within the deadline) for one of the registry's request slots.
    fn slot(&self, host: &str, deadline: Instant) -> Result<Slot<'_>, LookupError> {
        let mut busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        let mut waited = false;
        while busy.get(host).copied().unwrap_or(0) >= MAX_IN_FLIGHT {
            if !waited {
                Stats::add(&self.stats.slot_waits);
                waited = true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(LookupError::TimedOut(format!(
                    "{host}: {MAX_IN_FLIGHT} requests to it were under way until the time ran out"
                )));
            }
            busy = self
                .freed
                .wait_timeout(busy, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *busy.entry(host.to_string()).or_insert(0) += 1;
        Ok(Slot {
            client: self,
            host: host.to_string(),
        })
    }

    /// Sends one request (the Authorization header to this host only;
    /// ureq drops it on every redirect) and returns the answer, whatever
    /// its status. A pooled connection that turns out stale is retried
    /// once on a new one.
    fn call(
        &self,
        t: &Target,
        method: Method,
        url: &str,
        accept: &str,
        auth: Option<&str>,
        deadline: Instant,
    ) -> Result<ureq::http::Response<ureq::Body>, LookupError> {
        let host = t.host.as_str();
        let wait = wait_key(t);
        // A registry that asked us to wait gets no request before then.
        if let Some(until) = self
            .not_before
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&wait)
            .copied()
            .filter(|u| *u > Instant::now())
        {
            Stats::add(&self.stats.rate_limited);
            let secs = until.saturating_duration_since(Instant::now()).as_secs() + 1;
            return Err(LookupError::Transient(format!(
                "{host} is rate limiting: no request for {secs} s more (Retry-After)"
            )));
        }
        let https = url.starts_with("https://");
        for attempt in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(LookupError::TimedOut(format!("{host}: no time left")));
            }
            let agent = self.agent_for(host);
            let mut req = match method {
                Method::Get => agent.get(url),
                Method::Head => agent.head(url),
            }
            .header("Accept", accept);
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            Stats::add(&self.stats.requests);
            match req
                .config()
                .proxy(self.proxy_for(https, host)?)
                .timeout_global(Some(left))
                .build()
                .call()
            {
                Err(ureq::Error::Io(e)) if attempt == 0 && stale(&e) => {
                    Stats::add(&self.stats.retries);
                }
                other => return other.map_err(|e| transport(host, e)),
            }
        }
        Err(LookupError::Unreachable(format!(
            "{host}: the connection closed twice"
        )))
    }
}

/// What a `Retry-After` is remembered under: the registry and the
/// repository the answer was about.
fn wait_key(t: &Target) -> String {
    format!("{}/{}", t.host, t.name)
}

/// Makes room for one more entry in a map of things remembered until a
/// time: the expired go first, then, if it is still full, the sixteenth
/// that would expire soonest. Never everything: whoever names many
/// registries, repositories or tags pushes out the oldest, not everyone's.
fn make_room<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    until: impl Fn(&V) -> Instant,
) {
    if map.len() < max {
        return;
    }
    let now = Instant::now();
    map.retain(|_, v| until(v) > now);
    if map.len() < max {
        return;
    }
    let mut by_end: Vec<(Instant, K)> = map.iter().map(|(k, v)| (until(v), k.clone())).collect();
    by_end.sort_unstable_by_key(|(t, _)| *t);
    for (_, k) in by_end.into_iter().take((max / 16).max(1)) {
        map.remove(&k);
    }
}

/// Whether the answer came from `host` itself (not from where a redirect
/// led): only the registry's own challenge is answered.
fn answered_by(resp: &ureq::http::Response<ureq::Body>, host: &str) -> bool {
    resp.get_uri()
        .authority()
        .is_some_and(|a| registry_key(a.as_str()) == registry_key(host))
}

/// A response header as text.
fn header<'a>(resp: &'a ureq::http::Response<ureq::Body>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// An error of a pooled connection the server had closed: worth one retry.
fn stale(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

/// A transport failure as the review will read it; never with a URL's
/// query (tokens are not in URLs, but a realm's query could be anything).
fn transport(host: &str, e: ureq::Error) -> LookupError {
    if let Some(refused) = guard::refusal(&e) {
        return LookupError::Permanent(refused);
    }
    match e {
        ureq::Error::RequireHttpsOnly(url) => LookupError::Permanent(format!(
            "{host} sent us to {}, which is not https; only a registry configured as plainHttp may speak http",
            url.split('?').next().unwrap_or("")
        )),
        ureq::Error::TooManyRedirects => {
            LookupError::Permanent(format!("{host}: too many redirects"))
        }
        ureq::Error::BodyExceedsLimit(n) => {
            LookupError::Permanent(format!("{host} sent more than {n} bytes"))
        }
        ureq::Error::Timeout(t) => LookupError::TimedOut(format!("{host}: timed out ({t})")),
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            LookupError::Transient(format!("{host} refused the connection"))
        }
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            LookupError::TimedOut(format!("{host}: timed out ({e})"))
        }
        ureq::Error::HostNotFound => {
            LookupError::Unreachable(format!("{host}: the name does not resolve"))
        }
        ureq::Error::Io(e)
            if e.get_ref()
                .is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some()) =>
        {
            LookupError::Unreachable(format!(
                "{host}: TLS failed ({e}); a registry that speaks plain HTTP needs \"plainHttp\": true in its `registries` entry, one with its own CA a \"ca\""
            ))
        }
        ureq::Error::Io(e) if e.to_string().contains("lookup address") => {
            LookupError::Unreachable(format!("{host}: the name does not resolve ({e})"))
        }
        ureq::Error::Tls(e) => LookupError::Unreachable(format!(
            "{host}: TLS failed ({e}); a registry that speaks plain HTTP needs \"plainHttp\": true in its `registries` entry"
        )),
        ureq::Error::Rustls(e) => LookupError::Unreachable(format!(
            "{host}: TLS failed ({e}); a registry that speaks plain HTTP needs \"plainHttp\": true in its `registries` entry, one with its own CA a \"ca\""
        )),
        other => LookupError::Unreachable(format!("{host}: {other}")),
    }
}

/// Reads a body under `cap`, hashing it: against `expected` when given
/// (a mismatch is a lying registry), else sha256. An announced length
/// over the cap is refused before a byte is read.
fn read_checked(
    resp: &mut ureq::http::Response<ureq::Body>,
    expected: Option<Digest>,
    cap: usize,
    what: &str,
) -> Result<(Vec<u8>, Digest), LookupError> {
    let too_large =
        |cap: usize| LookupError::Permanent(format!("{what}: {}", Refused::TooLarge { cap }));
    if resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > cap as u64)
    {
        return Err(too_large(cap));
    }
    enum Check {
        Against(Verifier),
        Any(Hasher),
    }
    let mut check = match &expected {
        Some(d) => Check::Against(Verifier::new(d.clone(), cap)),
        None => Check::Any(Hasher::new(cap)),
    };
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut reader = resp.body_mut().as_reader();
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let m = format!("{what}: the body did not arrive: {e}");
                // ureq hands a timeout while reading as an io::Error that
                // wraps its own Timeout.
                let timed_out = e.kind() == std::io::ErrorKind::TimedOut
                    || e.get_ref()
                        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
                        .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)));
                return Err(if timed_out {
                    LookupError::TimedOut(m)
                } else {
                    LookupError::Unreachable(m)
                });
            }
        };
        let fed = match &mut check {
            Check::Against(v) => v.update(&buf[..n]),
            Check::Any(h) => h.update(&buf[..n]),
        };
        fed.map_err(|e| LookupError::Permanent(format!("{what}: {e}")))?;
        out.extend_from_slice(&buf[..n]);
    }
    let digest = match check {
        Check::Against(v) => {
            v.finish()
                .map_err(|e| LookupError::Permanent(format!("{what}: {e}")))?;
            expected.unwrap_or_else(|| Digest::sha256_of(&out))
        }
        Check::Any(h) => h.finish(),
    };
    Ok((out, digest))
}

/// A manifest's media type: its own `mediaType`, which must agree with
/// the `Content-Type` it came with when both are there.
pub(crate) fn manifest_type(bytes: &[u8], content_type: &str) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    let head: Head = serde_json::from_slice(bytes).map_err(|e| format!("not a manifest: {e}"))?;
    match head.media_type {
        Some(m) if !content_type.is_empty() && m != content_type => {
            Err(format!("says it is a {m} but was sent as {content_type}"))
        }
        Some(m) => Ok(m),
        None if !content_type.is_empty() => Ok(content_type.to_string()),
        None => Err("has no media type".into()),
    }
}

/// The `manifests` of an index, each with a readable digest.
pub(crate) fn index_entries(bytes: &[u8], what: &str) -> Result<Vec<Descriptor>, LookupError> {
    #[derive(serde::Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Descriptor>,
    }
    let index: Index = serde_json::from_slice(bytes)
        .map_err(|e| LookupError::Permanent(format!("{what}: not an index: {e}")))?;
    for d in &index.manifests {
        Digest::parse(&d.digest)
            .map_err(|e| LookupError::Permanent(format!("{what}: a descriptor's {e}")))?;
    }
    Ok(index.manifests)
}

/// The `rel="next"` target of a `Link` header, if it stays on the same
/// registry (a path, not a URL elsewhere).
fn next_link(link: &str) -> Option<String> {
    let (target, params) = link.split_once(';')?;
    let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
    (params.contains("rel=\"next\"") && target.starts_with("/v2/")).then(|| target.to_string())
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
fn build_agent(
    extra: &[rustls::pki_types::CertificateDer<'static>],
    https_only: bool,
    named: &guard::Named,
) -> ureq::Agent {
    let mut roots: Vec<ureq::tls::Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .chain(extra)
        .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    roots.dedup_by(|a, b| a.der() == b.der());
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
        .build();
    let config = ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .https_only(https_only)
        .max_redirects(5)
        .redirect_auth_headers(ureq::config::RedirectAuthHeaders::Never)
        .user_agent(concat!("image-bouncer/", env!("CARGO_PKG_VERSION")))
        .timeout_global(Some(Duration::from_secs(5)))
        .timeout_resolve(Some(Duration::from_secs(2)))
        .timeout_connect(Some(Duration::from_secs(3)))
        .timeout_per_read(Some(Duration::from_secs(3)))
        .timeout_per_write(Some(Duration::from_secs(3)))
        .input_buffer_size(64 * 1024)
        .output_buffer_size(16 * 1024)
        .max_idle_connections(64)
        .max_idle_connections_per_host(4)
        .max_idle_age(Duration::from_secs(30))
        .max_response_header_size(64 * 1024)
        .tls_config(tls)
        .build();
    // Every connection's addresses pass the guard (redirects and token
    // realms too).
    ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::default(),
        guard::Guarded {
            named: named.clone(),
        },
    )
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
    fn a_full_memory_loses_the_soonest_to_end_not_everything() {
        let now = Instant::now();
        let mut m: HashMap<usize, Instant> = HashMap::new();
        for i in 0..64 {
            m.insert(i, now + Duration::from_secs(100 + i as u64));
        }
        make_room(&mut m, 64, |t| *t);
        assert_eq!(m.len(), 60);
        assert!(!m.contains_key(&0) && !m.contains_key(&3) && m.contains_key(&4));
        // Expired entries go first, alone when that is enough.
        m.insert(1000, now - Duration::from_secs(1));
        m.insert(1001, now + Duration::from_secs(1));
        m.insert(1002, now + Duration::from_secs(1));
        m.insert(1003, now + Duration::from_secs(1));
        make_room(&mut m, 64, |t| *t);
        assert_eq!(m.len(), 63);
        assert!(!m.contains_key(&1000));
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            encode("repository:library/nginx:pull"),
            "repository%3Alibrary%2Fnginx%3Apull"
        );
    }
}
