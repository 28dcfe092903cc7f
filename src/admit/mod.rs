//! The admission step: facts that need I/O (digests, signatures),
//! gathered before the pure parts decide, and handed to them as values.
//! For `/mutate` with `mutateDigest`: each distinct image that is to be
//! pinned is looked up once, at the registry the pod will pull from
//! (after any rewrite). Signatures: `signatures`.

pub mod signatures;

use std::collections::BTreeMap;

use crate::image_ref::ImageRef;
use crate::mutate::{self, MutateConfig};
use crate::registry::client::LookupError;
use crate::registry::digest::Digest;
use crate::review::admission::Review;
use crate::review::workload::PodPath;

/// Whatever answers "which digest does this name now" (the registry
/// client; something else in tests of this module).
pub trait Resolver {
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
/// CAs, plain HTTP registries) and the process's proxy environment: the
/// one the server and `check --resolve` both use.
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
/// image `@digest`. `Err` is the reason to deny (a lookup failed and
/// `onRegistryError` is not `allow`).
pub fn digest_pins(
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
    // One deadline for the whole review, safely under the apiserver's
    // webhook timeout however many images it holds; when it runs out the
    // review is denied (or, with onRegistryError allow, left unpinned).
    let deadline = std::time::Instant::now() + budget;
    for input in images {
        let Some((key, pulled)) = mutate::pin_wanted(cfg, &input.image) else {
            continue;
        };
        if pins.contains_key(&key) {
            continue; // one lookup per distinct image
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let answer = if left.is_zero() {
            Err(LookupError::Transient(
                "the review's lookup deadline ran out".into(),
            ))
        } else {
            resolver.resolve(&pulled, left)
        };
        match answer {
            Ok(digest) => {
                pins.insert(key.clone(), format!("{key}@{digest}"));
            }
            Err(_) if cfg.allow_on_registry_error => {}
            Err(e) => {
                return Err(format!(
                    "image {:?} could not be pinned to a digest: {e}",
                    input.image
                ));
            }
        }
    }
    Ok(pins)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::time::Duration;

    /// Answers after a pause, and records what it was asked.
    struct Slow(Duration, RefCell<Vec<String>>);

    impl Resolver for Slow {
        fn resolve(&self, image: &ImageRef, within: Duration) -> Result<Digest, LookupError> {
            self.1.borrow_mut().push(image.to_string());
            std::thread::sleep(self.0.min(within));
            if self.0 > within {
                return Err(LookupError::Transient("timed out".into()));
            }
            Ok(Digest::sha256_of(image.to_string().as_bytes()))
        }
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
        let fast = Slow(Duration::ZERO, RefCell::new(Vec::new()));
        let pins = digest_pins(
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
        assert_eq!(fast.1.borrow().len(), 2, "{:?}", fast.1.borrow()); // the pinned one is not looked up
        assert_eq!(pins.len(), 2);
        assert!(pins["a.io/x:1"].starts_with("a.io/x:1@sha256:"));
        // Slow registries: the review's deadline, not each lookup's, bounds it.
        let slow = Slow(Duration::from_millis(1200), RefCell::new(Vec::new()));
        let started = std::time::Instant::now();
        let e = digest_pins(
            &cfg(false),
            &review(&["a.io/1:1", "a.io/2:1", "a.io/3:1", "a.io/4:1"]),
            &slow,
            crate::registry::client::LOOKUP_BUDGET,
        )
        .unwrap_err();
        assert!(
            started.elapsed() < crate::registry::client::LOOKUP_BUDGET + Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
        assert!(e.contains("could not be pinned"), "{e}");
        // onRegistryError allow: what could not be looked up stays unpinned.
        let pins = digest_pins(
            &cfg(true),
            &review(&["a.io/1:1", "a.io/2:1", "a.io/3:1"]),
            &slow,
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(pins.len() < 3);
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
        let fast = Slow(Duration::ZERO, RefCell::new(Vec::new()));
        let images = [
            "nginx:1",
            "org/app:2",
            "INDEX.DOCKER.IO/org/app:3",
            "docker.io/nginx:1",
        ];
        let review = review(&images);
        let cfg = cfg(false);
        let pins = digest_pins(&cfg, &review, &fast, Duration::from_secs(1)).unwrap();
        let (reply, outcome) = crate::review::admission::mutate(
            &crate::policy::Policy::default(),
            &cfg,
            &review,
            Some(&pins),
        );
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
        let fast = Slow(Duration::ZERO, RefCell::new(Vec::new()));
        let volumes: Vec<_> = (0..1100)
            .map(|i| serde_json::json!({"name": format!("v{i}"), "image": {"reference": "a.io/x:1"}}))
            .collect();
        let body = serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
                        "namespace": "default", "object": {"spec": {"containers": [{"name": "c", "image": "a.io/x:1"}], "volumes": volumes}}}});
        let review = crate::review::admission::parse(body.to_string().as_bytes()).unwrap();
        let e = digest_pins(&cfg(false), &review, &fast, Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("cannot be pinned"), "{e}");
    }
}
