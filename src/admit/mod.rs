//! The admission step: [`Admission`] (`step`) runs every review and
//! `check` — read, gather, decide, reply. This module gathers the facts
//! that need I/O (digests, signatures) before the pure parts decide, and
//! hands them over as values.
//! Only images whose names the registry lists admit are looked up
//! (`PolicySet::may_look_up`); the distinct images of a review are looked up
//! at the same time (at most [`LOOKUPS_AT_ONCE`]), each with its own
//! outcome; running out of time always denies. For `/mutate` with
//! `mutateDigest`: each distinct image that is to be pinned is looked up
//! once, at the registry the pod will pull from (after any rewrite).
//! Signatures: `signatures`.

pub mod attestations;
pub mod record;
pub mod signatures;
pub mod step;

pub use step::{Admission, Answer, CHECK_LOOKUP_BUDGET, Hold, Reply, Wait};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::digest::Digest;
use crate::image_ref::ImageRef;
use crate::mutate::{self, MutateConfig};
use crate::policy::{Decision, Effect, PolicySet, Request};
use crate::registry::client::LookupError;
use crate::review::admission::Review;
use crate::review::workload::PodPath;

/// Images of one review looked up at the same time, at most: a registry
/// that stalls one image holds one of these, not the review.
pub const LOOKUPS_AT_ONCE: usize = 8;

/// Runs `f` on each item, at most `width` at once (the caller's thread
/// and scoped threads), and returns the results in the items' order.
pub(crate) fn each_at_once<T: Sync, R: Send>(
    items: &[T],
    width: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if items.len() <= 1 {
        return items.iter().map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                break;
            };
            let r = f(item);
            *results[i].lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
        }
    };
    std::thread::scope(|s| {
        for _ in 1..width.min(items.len()) {
            // Out of threads (a task limit): the others share the work.
            if std::thread::Builder::new().spawn_scoped(s, work).is_err() {
                break;
            }
        }
        work();
    });
    results
        .into_iter()
        .filter_map(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner))
        .collect()
}

/// Reviews waiting on registries at once, at most: with the images of
/// each looked up at the same time, this bounds the threads lookups take
/// (about 16 per review), whatever the number of connections. A review
/// that finds no room within its time is denied as out of time.
pub const REVIEWS_LOOKING_UP: usize = 64;

/// Room for reviews waiting on registries.
struct Room {
    taken: Mutex<usize>,
    freed: std::sync::Condvar,
}

static ROOM: Room = Room {
    taken: Mutex::new(0),
    freed: std::sync::Condvar::new(),
};

/// Runs `f` once there is room for one more review waiting on
/// registries, or gives `None` when `deadline` comes first.
pub(crate) fn with_room<R>(deadline: std::time::Instant, f: impl FnOnce() -> R) -> Option<R> {
    let mut taken = ROOM.taken.lock().unwrap_or_else(PoisonError::into_inner);
    while *taken >= REVIEWS_LOOKING_UP {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        taken = ROOM
            .freed
            .wait_timeout(taken, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    *taken += 1;
    drop(taken);
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            *ROOM.taken.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
            ROOM.freed.notify_one();
        }
    }
    let _leave = Leave;
    Some(f())
}

/// What the admission step counts for `/metrics`.
#[derive(Default)]
pub struct Counts {
    registry_error_allowed: AtomicU64,
    timed_out: AtomicU64,
    /// Verifications by (policy, rule, result).
    verifications: Mutex<BTreeMap<(String, String, &'static str), u64>>,
    /// Decisions by policy: per mode and result, [`DECISION_KINDS`] order.
    decisions: Mutex<Option<HashMap<Arc<str>, [u64; 8]>>>,
}

/// The process's counts (the step has no other state that outlives a
/// review but the verdict cache).
pub static COUNTS: Counts = Counts {
    registry_error_allowed: AtomicU64::new(0),
    timed_out: AtomicU64::new(0),
    verifications: Mutex::new(BTreeMap::new()),
    decisions: Mutex::new(None),
};

/// The (mode, result) pairs a policy's decisions are counted under.
const DECISION_KINDS: [(&str, &str); 8] = [
    ("enforce", "pass"),
    ("enforce", "fail"),
    ("enforce", "bypass"),
    ("enforce", "skip"),
    ("warn", "pass"),
    ("warn", "warn"),
    ("warn", "bypass"),
    ("warn", "skip"),
];

impl Counts {
    /// One verification of an image under a policy's `verifyImages` entry.
    pub(crate) fn verification(&self, policy: &str, rule: &str, result: &'static str) {
        *self
            .verifications
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((policy.to_string(), rule.to_string(), result))
            .or_default() += 1;
    }

    /// What each policy that applied to a decided request made of it:
    /// `pass` (no violation), `fail` (enforce: denied by it), `warn` (warn
    /// mode: it would have denied), `bypass` (break-glass); `skip` when
    /// its `exemptNamespaces` left the request alone.
    pub(crate) fn decided(&self, set: &PolicySet, request: &Request, d: &Decision) {
        let ns = request.namespace.as_deref();
        let applying = set.applying(ns);
        let n = applying.indices().len();
        if n == 0 {
            return;
        }
        // One pass over the violations, outside the lock; the results of
        // up to 32 policies on the stack (this runs for every review).
        let mut on_stack = [""; 32];
        let mut on_heap;
        let results: &mut [&'static str] = if n <= on_stack.len() {
            &mut on_stack[..n]
        } else {
            on_heap = vec![""; n];
            &mut on_heap
        };
        for (r, p) in results.iter_mut().zip(applying.policies(set)) {
            *r = if p.exempts_namespace(ns) {
                "skip"
            } else {
                "pass"
            };
        }
        for (_, v) in d.violations() {
            if let Some(i) = applying
                .policies(set)
                .position(|p| Arc::ptr_eq(&p.name, &v.policy))
            {
                results[i] = match v.effect {
                    Effect::Denies => "fail",
                    Effect::Warns => "warn",
                    Effect::BrokenGlass => "bypass",
                };
            }
        }
        let mut all = self
            .decisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let all = all.get_or_insert_with(HashMap::new);
        for (p, &mut result) in applying.policies(set).zip(results.iter_mut()) {
            let mode = p.mode.as_str();
            let Some(k) = DECISION_KINDS
                .iter()
                .position(|&(m, r)| m == mode && r == result)
            else {
                continue;
            };
            match all.get_mut(&*p.name) {
                Some(counts) => counts[k] += 1,
                None => {
                    let mut counts = [0; 8];
                    counts[k] = 1;
                    all.insert(p.name.clone(), counts);
                }
            }
        }
    }

    fn admitted_on_registry_error(&self) {
        self.registry_error_allowed.fetch_add(1, Ordering::Relaxed);
    }

    fn timed_out(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
    }

    /// Images admitted unverified or unpinned under `onRegistryError: allow`.
    pub fn registry_error_allowed(&self) -> u64 {
        self.registry_error_allowed.load(Ordering::Relaxed)
    }

    /// Prometheus text.
    pub fn render(&self) -> String {
        let mut t = crate::metrics::Text::default();
        t.single(
            "image_bouncer_registry_error_allowed_total",
            "counter",
            "Images admitted unverified or unpinned because their registry answered with an error or refused the connection (onRegistryError allow).",
            self.registry_error_allowed.load(Ordering::Relaxed),
        )
        .single(
            "image_bouncer_lookup_timeouts_total",
            "counter",
            "Images denied because the review's time for lookups ran out.",
            self.timed_out.load(Ordering::Relaxed),
        );
        let name = "image_bouncer_verifications_total";
        t.family(
            name,
            "counter",
            "Signature verifications of an image under a policy's verifyImages entry, by result (verified, refused, timed_out, registry_error, cached).",
        );
        for ((policy, rule, result), n) in self
            .verifications
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            t.sample(
                name,
                &[("policy", policy), ("rule", rule), ("result", result)],
                n,
            );
        }
        let name = "image_bouncer_policy_decisions_total";
        t.family(
            name,
            "counter",
            "Decided requests each policy applied to, by its mode and what it made of them (pass, fail, warn, bypass, skip).",
        );
        let decisions = self
            .decisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut sorted: Vec<(&Arc<str>, &[u64; 8])> = decisions.iter().flatten().collect();
        sorted.sort();
        for (policy, counts) in sorted {
            for (k, (mode, result)) in DECISION_KINDS.iter().enumerate() {
                if counts[k] > 0 {
                    t.sample(
                        name,
                        &[("policy", policy), ("mode", mode), ("result", result)],
                        counts[k],
                    );
                }
            }
        }
        t.finish()
    }
}

/// Whatever answers "which digest does this name now" (the registry
/// client; something else in tests of this module).
pub trait Resolver: Sync {
    /// The digest `image` names now, within `within`.
    fn resolve(&self, image: &ImageRef, within: std::time::Duration)
    -> Result<Digest, LookupError>;
}

impl Resolver for crate::registry::client::Client {
    fn resolve(
        &self,
        image: &ImageRef,
        within: std::time::Duration,
    ) -> Result<Digest, LookupError> {
        self.resolve_cached(image, within)
    }
}

/// The registry client for a policy's registry settings (credentials,
/// CAs, plain HTTP registries) and the proxy environment `env` gives:
/// what [`Admission::new`] builds for the server and `check` alike.
pub fn registry_client(
    cfg: &crate::config::RegistryConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> crate::registry::client::Client {
    crate::registry::client::Client::new(
        cfg.credentials.clone(),
        crate::registry::proxy::ProxyConfig::from_env(env),
        &[],
    )
    .with_plain_http(&cfg.plain_http)
    .with_registry_cas(&cfg.cas)
}

/// How long the registry lookups of one review may take: the
/// apiserver's timeout for it (its `?timeout=`) less 2 s for everything
/// else, between 1 s and 25 s; without one, 3 s (under the 5 s that
/// `config webhook` writes by default).
pub fn lookup_budget(apiserver_timeout: Option<std::time::Duration>) -> std::time::Duration {
    use std::time::Duration;
    match apiserver_timeout {
        None => crate::registry::client::LOOKUP_BUDGET,
        Some(t) => t
            .saturating_sub(Duration::from_secs(2))
            .clamp(Duration::from_secs(1), Duration::from_secs(25)),
    }
}

/// The pins `/mutate` should apply to this review: pulled image -> that
/// image `@digest`. `Err` is the reason to deny: a lookup ran out of
/// time, or failed and `onRegistryError` is not `allow`. Images the
/// policy's registry lists refuse are not looked up (the review is denied
/// for them anyway).
// One function on purpose, the guards that decide whether anything is looked up (operation,
// namespace, kind, annotation, readable images) before the lookups, kept together so that none
// is skipped.
pub fn digest_pins(
    policy: &PolicySet,
    cfg: &MutateConfig,
    review: &Review,
    resolver: &dyn Resolver,
    budget: std::time::Duration,
) -> Result<BTreeMap<String, String>, String> {
    let mut pins = BTreeMap::new();
    if cfg.mutate_digest.is_empty() {
        return Ok(pins);
    }
    let req = &review.request;
    let op = req.operation.as_deref().unwrap_or("");
    let path = match PodPath::of(&req.kind.group, &req.kind.kind) {
        Some(PodPath::EphemeralContainers) | None => return Ok(pins),
        Some(p) => p,
    };
    // Where /mutate would not patch, nothing is looked up.
    let excluded = req
        .namespace
        .as_deref()
        .is_some_and(|ns| cfg.exclude_namespaces.iter().any(|p| p.matches(ns)));
    if (op != "CREATE" && op != "UPDATE")
        || excluded
        || (path != PodPath::Pod && !cfg.mutate_templates)
    {
        return Ok(pins);
    }
    let Some(object) = review.typed_object() else {
        return Ok(pins);
    };
    if object
        .metadata
        .annotations
        .get(mutate::SKIP_ANNOTATION)
        .map(String::as_str)
        == Some("true")
    {
        return Ok(pins);
    }
    let images = match object.pod(path).map(|p| p.images()) {
        Some(Ok(images)) => images,
        // Pins were asked for and the images cannot all be read: refuse
        // rather than admit what could not be pinned.
        Some(Err(e)) => {
            return Err(format!(
                "the pod's images cannot be read, so they cannot be pinned: {e}"
            ));
        }
        None => return Ok(pins),
    };
    // Each distinct image once, looked up at the same time, within one
    // deadline for the review (safely under the apiserver's timeout).
    let mut wanted: Vec<(String, ImageRef, String)> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for input in images {
        if !policy.may_look_up(req.namespace.as_deref(), &input.image) {
            continue;
        }
        let Some((key, pulled)) = mutate::pin_wanted(cfg, &input.image) else {
            continue;
        };
        if seen.insert(key.clone()) {
            wanted.push((key, pulled, input.image.clone()));
        }
    }
    let deadline = std::time::Instant::now() + budget;
    if wanted.is_empty() {
        return Ok(pins);
    }
    let look_up = || {
        each_at_once(&wanted, LOOKUPS_AT_ONCE, |(_, pulled, _)| {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(LookupError::TimedOut(
                    "the review's time for lookups ran out".into(),
                ));
            }
            match resolver.resolve(pulled, left) {
                Err(LookupError::Transient(_)) if std::time::Instant::now() >= deadline => Err(
                    LookupError::TimedOut("the review's time for lookups ran out".into()),
                ),
                other => other,
            }
        })
    };
    let answers = with_room(deadline, look_up).unwrap_or_else(|| {
        wanted
            .iter()
            .map(|_| {
                Err(LookupError::TimedOut(format!(
                    "{REVIEWS_LOOKING_UP} reviews were waiting on registries until the time ran out"
                )))
            })
            .collect()
    });
    for ((key, _, written), answer) in wanted.into_iter().zip(answers) {
        match answer {
            Ok(digest) => {
                pins.insert(key.clone(), format!("{key}@{digest}"));
            }
            Err(e @ LookupError::TimedOut(_)) => {
                COUNTS.timed_out();
                return Err(format!(
                    "image {written:?} could not be pinned to a digest in time: {e}"
                ));
            }
            // Not the registry's own failure (DNS, TLS, a broken
            // connection): never admitted unpinned.
            Err(e @ LookupError::Unreachable(_)) => {
                return Err(format!(
                    "image {written:?} could not be pinned to a digest: {e}"
                ));
            }
            Err(e) if cfg.allow_on_registry_error => {
                COUNTS.admitted_on_registry_error();
                log::warn!(
                    "image {written:?} left unpinned (onRegistryError allow): its registry could not be asked: {e}"
                );
            }
            Err(e) => {
                return Err(format!(
                    "image {written:?} could not be pinned to a digest: {e}"
                ));
            }
        }
    }
    Ok(pins)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Answers after a pause (or fails at once for hosts named `down*`),
    /// and records what it was asked.
    struct Slow(Duration, Mutex<Vec<String>>);

    impl Slow {
        fn new(pause: Duration) -> Slow {
            Slow(pause, Mutex::new(Vec::new()))
        }

        fn asked(&self) -> Vec<String> {
            self.1.lock().unwrap().clone()
        }
    }

    impl Resolver for Slow {
        fn resolve(&self, image: &ImageRef, within: Duration) -> Result<Digest, LookupError> {
            self.1.lock().unwrap().push(image.to_string());
            if image.registry_host().starts_with("down") {
                return Err(LookupError::Transient("connection refused".into()));
            }
            let pause = if image.registry_host().starts_with("stall") {
                Duration::from_secs(3600)
            } else {
                self.0
            };
            std::thread::sleep(pause.min(within));
            if pause > within {
                return Err(LookupError::TimedOut("timed out".into()));
            }
            Ok(Digest::sha256_of(image.to_string().as_bytes()))
        }
    }

    fn pin(
        cfg: &MutateConfig,
        review: &Review,
        r: &Slow,
        budget: Duration,
    ) -> Result<BTreeMap<String, String>, String> {
        digest_pins(&PolicySet::default(), cfg, review, r, budget)
    }

    fn review(images: &[&str]) -> Review {
        let containers: Vec<_> = images
            .iter()
            .enumerate()
            .map(|(i, im)| serde_json::json!({"name": format!("c{i}"), "image": im}))
            .collect();
        let body = serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
                        "namespace": "default", "object": {"spec": {"containers": containers}}}});
        crate::review::admission::parse(body.to_string().as_bytes()).unwrap()
    }

    fn cfg(allow: bool) -> MutateConfig {
        MutateConfig {
            mutate_digest: vec![crate::policy::ImagePattern::parse("*").unwrap()],
            allow_on_registry_error: allow,
            ..MutateConfig::default()
        }
    }

    #[test]
    fn each_distinct_image_once_and_one_deadline_per_review() {
        let fast = Slow::new(Duration::ZERO);
        let pins = pin(
            &cfg(false),
            &review(&[
                "a.io/x:1",
                "a.io/x:1",
                "b.io/y:2",
                &format!("c.io/z@{}", Digest::sha256_of(b"z")),
            ]),
            &fast,
            crate::registry::client::LOOKUP_BUDGET,
        )
        .unwrap();
        assert_eq!(fast.asked().len(), 2, "{:?}", fast.asked()); // the pinned one is not looked up
        assert_eq!(pins.len(), 2);
        assert!(pins["a.io/x:1"].starts_with("a.io/x:1@sha256:"));
        // The images are looked up at the same time: four of 1.2 s each
        // fit in a budget of 3 s (one after another they would not).
        let slow = Slow::new(Duration::from_millis(1200));
        let pins = pin(
            &cfg(false),
            &review(&["a.io/1:1", "a.io/2:1", "a.io/3:1", "a.io/4:1"]),
            &slow,
            Duration::from_secs(3),
        )
        .unwrap();
        assert_eq!(pins.len(), 4);
    }

    /// Running out of time denies, also with onRegistryError allow; only
    /// a registry's own error leaves an image unpinned (issue 33, 2).
    #[test]
    fn a_timeout_is_never_a_registry_error() {
        let slow = Slow::new(Duration::ZERO);
        let started = std::time::Instant::now();
        for allow in [false, true] {
            let e = pin(
                &cfg(allow),
                &review(&["stall.io/a:1", "b.io/y:2"]),
                &slow,
                Duration::from_secs(1),
            )
            .unwrap_err();
            assert!(e.contains("stall.io/a:1") && e.contains("in time"), "{e}");
        }
        assert!(started.elapsed() < Duration::from_secs(4));
        let pins = pin(
            &cfg(true),
            &review(&["down.io/a:1", "b.io/y:2"]),
            &slow,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(pins.len(), 1, "{pins:?}");
        assert!(pins.contains_key("b.io/y:2"));
        let e = pin(
            &cfg(false),
            &review(&["down.io/a:1", "b.io/y:2"]),
            &slow,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(e.contains("connection refused"), "{e}");
    }

    /// Names the registry lists refuse are not looked up (issue 33, 7).
    #[test]
    fn refused_names_are_not_pinned() {
        let r = Slow::new(Duration::ZERO);
        let policy: PolicySet = crate::policy::Policy {
            denied_registries: vec![crate::policy::RegistryPattern::parse("evil.io").unwrap()],
            ..Default::default()
        }
        .into();
        let pins = digest_pins(
            &policy,
            &cfg(false),
            &review(&["evil.io/a:1", "169.254.169.254/x:1", "b.io/y:2"]),
            &r,
            Duration::from_secs(1),
        )
        .unwrap();
        let mut asked = r.asked();
        asked.sort();
        // The link-local one is refused by the registry client's guard,
        // not here (tests/registry_edges.rs).
        assert_eq!(asked, ["169.254.169.254/x:1", "b.io/y:2"]);
        assert!(!pins.contains_key("evil.io/a:1"));
    }

    #[test]
    fn each_at_once_keeps_the_order() {
        let items: Vec<usize> = (0..40).collect();
        let out = each_at_once(&items, 8, |i| i * 2);
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(each_at_once(&[3], 8, |i| i + 1), vec![4]);
        assert!(each_at_once(&[] as &[usize], 8, |i| *i).is_empty());
    }

    #[test]
    fn the_budget_follows_the_apiservers_timeout() {
        let s = Duration::from_secs;
        assert_eq!(lookup_budget(None), s(3));
        assert_eq!(lookup_budget(Some(s(5))), s(3));
        assert_eq!(lookup_budget(Some(s(10))), s(8));
        assert_eq!(lookup_budget(Some(s(2))), s(1));
        assert_eq!(lookup_budget(Some(s(1))), s(1));
        assert_eq!(lookup_budget(Some(s(30))), s(25));
    }

    /// Short names (Docker Hub's `nginx:1`, any spelling) are pinned as
    /// written: the pin is found by the patch, never silently dropped.
    #[test]
    fn short_and_odd_spellings_are_pinned_as_written() {
        let fast = Slow::new(Duration::ZERO);
        let images = [
            "nginx:1",
            "org/app:2",
            "INDEX.DOCKER.IO/org/app:3",
            "docker.io/nginx:1",
        ];
        let review = review(&images);
        let cfg = cfg(false);
        let pins = pin(&cfg, &review, &fast, Duration::from_secs(1)).unwrap();
        let (reply, outcome) =
            crate::review::admission::mutate(&PolicySet::default(), &cfg, &review, Some(&pins));
        assert!(
            matches!(outcome, crate::review::admission::MutateOutcome::Patched(_)),
            "{outcome:?}"
        );
        let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        use base64::Engine as _;
        let patch = base64::engine::general_purpose::STANDARD
            .decode(v["response"]["patch"].as_str().unwrap())
            .unwrap();
        let patch: serde_json::Value = serde_json::from_slice(&patch).unwrap();
        for (i, image) in images.iter().enumerate() {
            let want = format!("{image}@");
            assert!(
                patch
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|op| op["path"] == format!("/spec/containers/{i}/image")
                        && op["value"].as_str().unwrap().starts_with(&want)),
                "{image} not pinned: {patch}"
            );
        }
    }

    /// A pod whose images cannot all be read is refused when pins are
    /// wanted, not admitted unpinned.
    #[test]
    fn an_unreadable_pod_is_not_admitted_unpinned() {
        let fast = Slow::new(Duration::ZERO);
        let volumes: Vec<_> = (0..1100)
            .map(|i| serde_json::json!({"name": format!("v{i}"), "image": {"reference": "a.io/x:1"}}))
            .collect();
        let body = serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
                        "namespace": "default", "object": {"spec": {"containers": [{"name": "c", "image": "a.io/x:1"}], "volumes": volumes}}}});
        let review = crate::review::admission::parse(body.to_string().as_bytes()).unwrap();
        let e = pin(&cfg(false), &review, &fast, Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("cannot be pinned"), "{e}");
    }
}
