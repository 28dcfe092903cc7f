//! The admission step: facts that need I/O (digests now, signatures
//! next), gathered before the pure parts decide, and handed to them as
//! values. For `/mutate` with `mutateDigest`: each distinct image that is
//! to be pinned is looked up once, at the registry the pod will pull from
//! (after any rewrite).

use std::collections::BTreeMap;

use crate::image_ref::ImageRef;
use crate::mutate::{self, MutateConfig};
use crate::registry::client::LookupError;
use crate::registry::digest::Digest;
use crate::review::admission::Review;
use crate::review::workload::{Object, PodPath};

/// Whatever answers "which digest does this name now" (the registry
/// client; something else in tests of this module).
pub trait Resolver {
    fn resolve(&self, image: &ImageRef) -> Result<Digest, LookupError>;
}

impl Resolver for crate::registry::client::Client {
    fn resolve(&self, image: &ImageRef) -> Result<Digest, LookupError> {
        self.resolve_cached(image, crate::registry::client::LOOKUP_BUDGET)
    }
}

/// The pins `/mutate` should apply to this review: pulled image -> that
/// image `@digest`. `Err` is the reason to deny (a lookup failed and
/// `onRegistryError` is not `allow`).
pub fn digest_pins(
    cfg: &MutateConfig,
    review: &Review,
    resolver: &dyn Resolver,
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
    let Some(raw) = req.object.as_ref() else {
        return Ok(pins);
    };
    let Ok(object) = serde_json::from_str::<Object>(raw.get()) else {
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
    let Some(Ok(images)) = object.pod(path).map(|p| p.images()) else {
        return Ok(pins);
    };
    for input in images {
        let Some(pulled) = mutate::pin_wanted(cfg, &input.image) else {
            continue;
        };
        let key = pulled.to_string();
        if pins.contains_key(&key) {
            continue; // one lookup per distinct image
        }
        match resolver.resolve(&pulled) {
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
