//! Mutations as RFC 6902 JSON Patch operations: registry rewrite, image
//! pull secrets, image pull policy, default storage class.
//!
//! Pure: an object (as JSON) and the configuration in, patch operations
//! out. The patch is minimal — nothing is emitted for what is already as
//! wanted — so applying it twice changes nothing. It works on
//! `serde_json::Value` because presence matters here (an absent
//! `storageClassName` is not an empty one). The endpoint is in `server/`,
//! the wire format in `review/admission.rs`.

use serde::Serialize;
use serde_json::{Value, json};

use crate::image_ref::{self, ImageRef};
use crate::kinds::PodPath;
use crate::policy::{self, MirrorBack, NamespacePattern, RegistryPattern, Upstream};

/// The annotation that opts an object out of every mutation.
pub const SKIP_ANNOTATION: &str = "image-bouncer.io/skip-mutation";
/// Records the images that were rewritten (`old=new` pairs), for audit.
pub const REWRITTEN_ANNOTATION: &str = "image-bouncer.io/rewritten-images";

/// `imagePullPolicy` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "Always" => Ok(PullPolicy::Always),
            "IfNotPresent" => Ok(PullPolicy::IfNotPresent),
            "Never" => Ok(PullPolicy::Never),
            other => Err(format!("{other:?} is not Always, IfNotPresent or Never")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Where images are moved to: `host[:port]` and an optional path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub raw: String,
    /// As written, for the rewritten names.
    domain: String,
    prefix: String,
    /// The same root as a registry pattern, to compare by identity.
    pattern: RegistryPattern,
}

impl Target {
    /// `mirror.example.com` or `mirror.example.com:5000/dockerhub`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (domain, prefix) = s.split_once('/').unwrap_or((s, ""));
        if !image_ref::looks_like_registry(domain) {
            return Err(format!(
                "{s:?}: the target must start with a registry host (with a '.' or ':', or localhost)"
            ));
        }
        let describe = |e| format!("{s:?}: {}", image_ref::ParseError::describe(&e));
        image_ref::validate_domain(domain).map_err(describe)?;
        image_ref::canonical_port(image_ref::split_port(domain).1).map_err(describe)?;
        if !prefix.is_empty() {
            image_ref::validate_path(prefix).map_err(describe)?;
        }
        Ok(Target {
            raw: s.to_string(),
            domain: domain.to_string(),
            prefix: prefix.to_string(),
            pattern: RegistryPattern::parse(s)?,
        })
    }

    /// Whether the image already lives under this target (by identity).
    fn holds(&self, r: &ImageRef) -> bool {
        self.pattern.matches(r)
    }

    /// True when one target lies in the other: names rewritten to one could
    /// also be rewritten to the other, from another source.
    fn overlaps(&self, other: &Target) -> bool {
        let inside = |a: &Target, b: &Target| {
            ImageRef::parse(&format!("{}/x", a.raw)).is_ok_and(|r| b.pattern.matches(&r))
        };
        inside(self, other) || inside(other, self)
    }

    fn mirror_back(&self, upstream: Upstream) -> MirrorBack {
        MirrorBack::new(&self.domain, &self.prefix, upstream)
    }
}

/// How `rewriteRegistry` names a moved image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// `target/<registry>/<path>`, and Docker Hub images `target/<path>`
    /// (a pull-through cache's layout): two sources never share a name, and
    /// the upstream can be read back from it.
    #[default]
    ByRegistry,
    /// `target/<path>` for every source: `quay.io/team/app` and
    /// `docker.io/team/app` become one name (the older project's way; the
    /// docs/migration.md says what it risks).
    Flat,
}

impl Layout {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "by-registry" => Ok(Layout::ByRegistry),
            "flat" => Ok(Layout::Flat),
            other => Err(format!("{other:?} is not \"by-registry\" or \"flat\"")),
        }
    }
}

/// The mutating webhook's configuration, validated.
#[derive(Debug, Clone, Default)]
pub struct MutateConfig {
    /// Move every image here (unless ignored or mirrored elsewhere).
    pub rewrite_registry: Option<Target>,
    pub rewrite_layout: Layout,
    /// Per source registry (`host[:port]`, lowercase): where its images go.
    pub registry_mirrors: Vec<(String, Target)>,
    /// Images never rewritten.
    pub ignored_registries: Vec<RegistryPattern>,
    pub image_pull_secrets: Vec<String>,
    /// Add only missing secrets instead of replacing the list.
    pub append_pull_secrets: bool,
    pub image_pull_policy: Option<PullPolicy>,
    pub default_storage_class: Option<String>,
    pub exclude_namespaces: Vec<NamespacePattern>,
    /// Also mutate pod templates of workloads (off: GitOps tools would see
    /// drift between the stored object and their manifests).
    pub mutate_templates: bool,
    /// Images to pin to the digest their tag names now (`mutateDigest`).
    pub mutate_digest: Vec<crate::policy::ImagePattern>,
    /// `onRegistryError: "allow"`: a failed lookup leaves the image
    /// unpinned instead of denying the request.
    pub allow_on_registry_error: bool,
}

impl MutateConfig {
    /// The registry roots the rewrites fill, with the images they mirror,
    /// for the policy to judge a mirrored name by its upstream. A flat
    /// rewrite cannot be read back and is left out.
    pub fn mirrors_back(&self) -> Vec<MirrorBack> {
        let mut out: Vec<MirrorBack> = self
            .registry_mirrors
            .iter()
            .map(|(from, to)| to.mirror_back(Upstream::Registry(from.clone())))
            .collect();
        if let Some(t) = &self.rewrite_registry
            && self.rewrite_layout == Layout::ByRegistry
        {
            out.push(t.mirror_back(Upstream::ByRegistry));
        }
        out
    }

    /// Targets that overlap, so that two sources could share a name.
    pub fn overlapping_targets(&self) -> Vec<String> {
        let all: Vec<&Target> = self
            .registry_mirrors
            .iter()
            .map(|(_, t)| t)
            .chain(&self.rewrite_registry)
            .collect();
        let mut out = Vec::new();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                if a.overlaps(b) {
                    out.push(format!(
                        "targets {:?} and {:?} overlap: images of two registries could get the same name; give each its own registry or path",
                        a.raw, b.raw
                    ));
                }
            }
        }
        out
    }

    /// True when images may be moved to another registry.
    pub fn rewrites(&self) -> bool {
        self.rewrite_registry.is_some() || !self.registry_mirrors.is_empty()
    }

    /// True when no mutation is configured at all.
    pub fn is_empty(&self) -> bool {
        self.mutate_digest.is_empty()
            && self.rewrite_registry.is_none()
            && self.registry_mirrors.is_empty()
            && self.image_pull_secrets.is_empty()
            && self.image_pull_policy.is_none()
            && self.default_storage_class.is_none()
    }
}

/// One JSON Patch operation.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct PatchOp {
    pub op: &'static str,
    pub path: String,
    /// Absent for `remove` (never a null value otherwise).
    #[serde(skip_serializing_if = "Value::is_null")]
    pub value: Value,
}

/// What to mutate.
pub struct Subject<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    /// `ephemeralcontainers` when `kubectl debug` adds a container.
    pub sub_resource: Option<&'a str>,
    pub operation: &'a str,
    pub namespace: Option<&'a str>,
    pub object: &'a Value,
    pub old_object: Option<&'a Value>,
    /// Digests to pin (`mutateDigest`), gathered by the admission step:
    /// the image as it will be pulled (after any rewrite) -> that image
    /// with `@sha256:...`. Pure values; nothing here looks anything up.
    pub pins: Option<&'a std::collections::BTreeMap<String, String>>,
}

/// The result: patch operations and a human summary for the log.
#[derive(Debug, Default, PartialEq)]
pub struct Mutation {
    pub patch: Vec<PatchOp>,
    /// (old image, new image) for every rewritten container.
    pub rewrites: Vec<(String, String)>,
    /// Other changes, in words, for the log.
    pub notes: Vec<String>,
    /// Why nothing was looked at, if so.
    pub skipped: Option<String>,
}

/// Escapes one JSON Pointer token (RFC 6901): `~` -> `~0`, `/` -> `~1`.
pub fn pointer_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Computes the patch for an object.
pub fn mutate(cfg: &MutateConfig, t: &Subject<'_>) -> Mutation {
    let skip = |why: String| Mutation {
        skipped: Some(why),
        ..Mutation::default()
    };
    if t.operation != "CREATE" && t.operation != "UPDATE" {
        return skip(format!("operation {} is not mutated", t.operation));
    }
    if let Some(ns) = t.namespace
        && cfg.exclude_namespaces.iter().any(|p| p.matches(ns))
    {
        return skip(format!("namespace {ns:?} is excluded"));
    }
    let opted_out = t
        .object
        .pointer(&format!(
            "/metadata/annotations/{}",
            pointer_token(SKIP_ANNOTATION)
        ))
        .and_then(Value::as_str)
        == Some("true");
    if opted_out {
        return skip(format!("annotation {SKIP_ANNOTATION}: \"true\""));
    }
    if (t.group, t.kind) == ("", "PersistentVolumeClaim") {
        return storage_class(cfg, t);
    }
    let path = match PodPath::of(t.group, t.kind) {
        // Before Kubernetes 1.22 only: validation judges it, nothing to patch.
        None | Some(PodPath::EphemeralContainers) => {
            return skip(format!("kind {}/{} is not mutated", t.group, t.kind));
        }
        Some(path) => path,
    };
    if path != PodPath::Pod && !cfg.mutate_templates {
        return skip(format!(
            "{} templates are not mutated (mutateTemplates is off)",
            t.kind
        ));
    }
    let base = path.pointer();
    let Some(pod) = t.object.pointer(base) else {
        return skip(format!("{} has no pod template", t.kind));
    };
    let old_pod = t.old_object.and_then(|o| o.pointer(base));
    // A running pod's pull policy and pull secrets cannot change; only a
    // changed image (and a new ephemeral container) may be patched.
    let running_pod = path == PodPath::Pod && t.operation == "UPDATE";
    let mut m = Mutation::default();
    pod_spec(cfg, pod, old_pod, base, running_pod, t.pins, &mut m);
    // A subresource update keeps only its own part of the object (the
    // apiserver drops metadata changes there), so no annotation is added.
    if t.sub_resource.is_none_or(str::is_empty) {
        record_rewrites(cfg, t.object, t.old_object, base, &mut m);
    }
    m
}

fn storage_class(cfg: &MutateConfig, t: &Subject<'_>) -> Mutation {
    let mut m = Mutation::default();
    let Some(class) = &cfg.default_storage_class else {
        return m;
    };
    if t.operation != "CREATE" {
        m.skipped = Some("storage classes are only defaulted on CREATE".into());
        return m;
    }
    // Absent (or null) only: "" asks for static binding, a name is a choice.
    let current = t.object.pointer("/spec/storageClassName");
    if current.is_none_or(Value::is_null) && t.object.get("spec").is_some_and(Value::is_object) {
        m.patch.push(PatchOp {
            op: "add",
            path: "/spec/storageClassName".into(),
            value: json!(class),
        });
        m.notes.push(format!("storageClassName set to {class:?}"));
    }
    m
}

/// Container lists of a pod spec, by JSON key.
const LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

fn pod_spec(
    cfg: &MutateConfig,
    pod: &Value,
    old_pod: Option<&Value>,
    base: &str,
    running_pod: bool,
    pins: Option<&std::collections::BTreeMap<String, String>>,
    m: &mut Mutation,
) {
    let old_image = |list: &str, name: Option<&str>| -> Option<String> {
        let old = old_pod?.pointer(&format!("/spec/{list}"))?.as_array()?;
        old.iter()
            .find(|c| c.get("name").and_then(Value::as_str) == name)
            .and_then(|c| c.get("image")?.as_str().map(str::to_string))
    };
    for list in LISTS {
        let Some(containers) = pod
            .pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
        else {
            continue;
        };
        for (i, c) in containers.iter().enumerate() {
            let at = format!("{base}/spec/{list}/{i}");
            let name = c.get("name").and_then(Value::as_str);
            let image = c.get("image").and_then(Value::as_str);
            let before = old_image(list, name);
            let is_new = before.is_none();
            let changed = before.as_deref() != image;
            if let Some(image) = image
                && (!running_pod || changed)
            {
                move_image(cfg, image, format!("{at}/image"), pins, m);
            }
            let may_set_policy = !running_pod || (list == "ephemeralContainers" && is_new);
            if let Some(policy) = cfg.image_pull_policy
                && may_set_policy
            {
                match c.get("imagePullPolicy").and_then(Value::as_str) {
                    Some(p) if p == policy.as_str() => {}
                    current => {
                        m.patch.push(PatchOp {
                            op: if current.is_some() { "replace" } else { "add" },
                            path: format!("{at}/imagePullPolicy"),
                            value: json!(policy.as_str()),
                        });
                        m.notes
                            .push(format!("{list}[{i}].imagePullPolicy = {}", policy.as_str()));
                    }
                }
            }
        }
    }
    if !running_pod {
        pull_secrets(cfg, pod, base, m);
        image_volumes(cfg, pod, base, pins, m);
    }
}

/// Image volumes (`spec.volumes[].image.reference`) are pulled like
/// containers' images: moved and pinned alike (a running pod's volumes
/// cannot change, so only at creation).
fn image_volumes(
    cfg: &MutateConfig,
    pod: &Value,
    base: &str,
    pins: Option<&std::collections::BTreeMap<String, String>>,
    m: &mut Mutation,
) {
    let Some(volumes) = pod.pointer("/spec/volumes").and_then(Value::as_array) else {
        return;
    };
    for (i, v) in volumes.iter().enumerate() {
        let Some(image) = v.pointer("/image/reference").and_then(Value::as_str) else {
            continue;
        };
        let at = format!("{base}/spec/volumes/{i}/image/reference");
        move_image(cfg, image, at, pins, m);
    }
}

/// Rewrites `image` (at JSON pointer `at`) and pins the result to its
/// digest when the admission step found one; records what it did.
fn move_image(
    cfg: &MutateConfig,
    image: &str,
    at: String,
    pins: Option<&std::collections::BTreeMap<String, String>>,
    m: &mut Mutation,
) {
    let rewritten = rewrite_image(cfg, image);
    let pulled = rewritten.as_deref().unwrap_or(image);
    let pinned = pins.and_then(|p| p.get(pulled)).cloned();
    if let Some(new) = pinned.as_ref().or(rewritten.as_ref()) {
        m.patch.push(PatchOp {
            op: "replace",
            path: at,
            value: json!(new),
        });
    }
    if let Some(p) = pinned {
        m.notes.push(format!("{image} pinned as {p}"));
    }
    if let Some(r) = rewritten {
        m.rewrites.push((image.to_string(), r));
    }
}

/// The image as it will be pulled (after any rewrite), when
/// `mutateDigest` asks for it to be pinned: it names a tag (or nothing),
/// not a digest, and the image as written matches an entry.
pub fn pin_wanted(cfg: &MutateConfig, image: &str) -> Option<(String, ImageRef)> {
    let written = ImageRef::parse(image).ok()?;
    if written.digest().is_some() || !cfg.mutate_digest.iter().any(|p| p.covers(&written)) {
        return None;
    }
    // The pin is keyed by the pulled name exactly as the patch will write
    // it (`move_image` looks it up so), not by its normal form.
    let pulled = rewrite_image(cfg, image).unwrap_or_else(|| image.to_string());
    let parsed = ImageRef::parse(&pulled).ok()?;
    Some((pulled, parsed))
}

/// Where an image should live instead, if anywhere.
pub fn rewrite_image(cfg: &MutateConfig, image: &str) -> Option<String> {
    // An invalid reference is left as it is: validation will refuse it
    // with the parse error, which a rewrite would only obscure.
    let r = ImageRef::parse(image).ok()?;
    if cfg.ignored_registries.iter().any(|p| p.matches(&r)) {
        return None;
    }
    let all_targets = cfg
        .registry_mirrors
        .iter()
        .map(|(_, t)| t)
        .chain(&cfg.rewrite_registry);
    if all_targets.into_iter().any(|t| t.holds(&r)) {
        return None;
    }
    let source = mirror_key(&r);
    if let Some((_, to)) = cfg
        .registry_mirrors
        .iter()
        .find(|(from, _)| *from == source)
    {
        return Some(r.with_domain_and_prefix(&to.domain, &to.prefix));
    }
    let target = cfg.rewrite_registry.as_ref()?;
    if cfg.rewrite_layout == Layout::Flat || r.registry_host() == image_ref::DOCKER_HUB {
        return Some(r.with_domain_and_prefix(&target.domain, &target.prefix));
    }
    // A registry that cannot be named in a path is left where it is.
    let component = policy::registry_component(&r)?;
    let prefix = if target.prefix.is_empty() {
        component
    } else {
        format!("{}/{component}", target.prefix)
    };
    Some(r.with_domain_and_prefix(&target.domain, &prefix))
}

/// A reference's registry as `registryMirrors` keys are written: identity
/// and port (`docker.io`, `registry.local:5000`).
pub fn mirror_key(r: &ImageRef) -> String {
    match r.registry_port() {
        Some(p) => format!("{}:{p}", r.registry_host()),
        None => r.registry_host().to_string(),
    }
}

fn pull_secrets(cfg: &MutateConfig, pod: &Value, base: &str, m: &mut Mutation) {
    if cfg.image_pull_secrets.is_empty() {
        return;
    }
    let path = format!("{base}/spec/imagePullSecrets");
    let wanted =
        |names: &[String]| -> Value { names.iter().map(|n| json!({ "name": n })).collect() };
    let existing = pod
        .pointer("/spec/imagePullSecrets")
        .and_then(Value::as_array);
    let Some(existing) = existing else {
        m.patch.push(PatchOp {
            op: "add",
            path,
            value: wanted(&cfg.image_pull_secrets),
        });
        m.notes
            .push(format!("imagePullSecrets {:?}", cfg.image_pull_secrets));
        return;
    };
    let names: Vec<&str> = existing
        .iter()
        .filter_map(|s| s.get("name")?.as_str())
        .collect();
    if cfg.append_pull_secrets {
        for n in &cfg.image_pull_secrets {
            if !names.contains(&n.as_str()) {
                m.patch.push(PatchOp {
                    op: "add",
                    path: format!("{path}/-"),
                    value: json!({ "name": n }),
                });
                m.notes.push(format!("imagePullSecrets += {n:?}"));
            }
        }
    } else if names
        != cfg
            .image_pull_secrets
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
        || names.len() != existing.len()
    {
        m.patch.push(PatchOp {
            op: "replace",
            path,
            value: wanted(&cfg.image_pull_secrets),
        });
        m.notes
            .push(format!("imagePullSecrets = {:?}", cfg.image_pull_secrets));
    }
}

/// Keeps the audit annotation listing rewritten images (`old=new,...`) on
/// the pod or template metadata, where the pods will carry it. The webhook
/// owns it: an entry stays only if it is true — `new` is an image of the
/// pod now and this configuration rewrites `old` to exactly `new` (so a
/// second call, on UPDATE or when the apiserver calls again after other
/// webhooks, keeps the record) — and the pairs rewritten now are added.
/// Whatever else the request says is dropped, so no false record can be
/// planted; with nothing to record the annotation is removed.
fn record_rewrites(
    cfg: &MutateConfig,
    object: &Value,
    old_object: Option<&Value>,
    base: &str,
    m: &mut Mutation,
) {
    let key = pointer_token(REWRITTEN_ANNOTATION);
    let recorded = |o: &Value| {
        o.pointer(&format!("{base}/metadata/annotations/{key}"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let mut images: Vec<&str> = LISTS
        .iter()
        .filter_map(|l| object.pointer(&format!("{base}/spec/{l}"))?.as_array())
        .flatten()
        .filter_map(|c| c.get("image")?.as_str())
        .collect();
    images.extend(
        object
            .pointer(&format!("{base}/spec/volumes"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.pointer("/image/reference")?.as_str()),
    );
    let mut entries: Vec<String> = Vec::new();
    let claimed = old_object
        .and_then(recorded)
        .into_iter()
        .chain(recorded(object));
    for text in claimed {
        for entry in text.split(',') {
            let true_record = entry.split_once('=').is_some_and(|(from, to)| {
                // The image may carry the digest pinned after the rewrite.
                let now =
                    |i: &&str| *i == to || i.strip_prefix(to).is_some_and(|r| r.starts_with('@'));
                images.iter().any(now) && rewrite_image(cfg, from).as_deref() == Some(to)
            });
            if true_record && !entries.iter().any(|e| e == entry) {
                entries.push(entry.to_string());
            }
        }
    }
    for (a, b) in &m.rewrites {
        let entry = format!("{a}={b}");
        if !entries.contains(&entry) {
            entries.push(entry);
        }
    }
    let value = entries.join(",");
    let current = object.pointer(&format!("{base}/metadata/annotations/{key}"));
    if current.and_then(Value::as_str) == Some(value.as_str()) {
        return;
    }
    if value.is_empty() {
        if current.is_some() {
            m.patch.push(PatchOp {
                op: "remove",
                path: format!("{base}/metadata/annotations/{key}"),
                value: Value::Null,
            });
            m.notes.push(format!(
                "{REWRITTEN_ANNOTATION} removed (only this webhook writes it)"
            ));
        }
        return;
    }
    let meta = object.pointer(&format!("{base}/metadata"));
    let annotations = meta
        .and_then(|md| md.get("annotations"))
        .filter(|a| a.is_object());
    let op = if annotations.is_some() {
        PatchOp {
            op: "add",
            path: format!("{base}/metadata/annotations/{key}"),
            value: json!(value),
        }
    } else if meta.is_some_and(Value::is_object) {
        PatchOp {
            op: "add",
            path: format!("{base}/metadata/annotations"),
            value: json!({ REWRITTEN_ANNOTATION: value }),
        }
    } else {
        PatchOp {
            op: "add",
            path: format!("{base}/metadata"),
            value: json!({ "annotations": { REWRITTEN_ANNOTATION: value } }),
        }
    };
    m.patch.push(op);
}

/// Applies our own patch operations (add, replace, remove; `-` appends)
/// to `doc`, for `check --mutate --validate`.
pub fn apply(doc: &mut Value, patch: &[PatchOp]) -> Result<(), String> {
    for op in patch {
        let (parent, last) = op
            .path
            .rsplit_once('/')
            .ok_or_else(|| format!("bad path {:?}", op.path))?;
        let last = last.replace("~1", "/").replace("~0", "~");
        let target = doc
            .pointer_mut(parent)
            .ok_or_else(|| format!("no {parent:?} for {:?}", op.path))?;
        match (op.op, target) {
            ("remove", Value::Object(m)) => {
                m.remove(&last);
            }
            (_, Value::Object(m)) => {
                m.insert(last, op.value.clone());
            }
            ("add", Value::Array(a)) if last == "-" => a.push(op.value.clone()),
            (kind, Value::Array(a)) => {
                let i: usize = last
                    .parse()
                    .map_err(|_| format!("bad index in {:?}", op.path))?;
                match kind {
                    "replace" if i < a.len() => a[i] = op.value.clone(),
                    "add" if i <= a.len() => a.insert(i, op.value.clone()),
                    "remove" if i < a.len() => {
                        a.remove(i);
                    }
                    _ => return Err(format!("index out of range in {:?}", op.path)),
                }
            }
            _ => {
                return Err(format!(
                    "{:?} does not lead into an object or array",
                    op.path
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn cfg() -> MutateConfig {
        MutateConfig {
            rewrite_registry: Some(Target::parse("mirror.example.com").unwrap()),
            ..MutateConfig::default()
        }
    }

    /// Applies our patch with the independent json-patch crate.
    fn apply(doc: &Value, patch: &[PatchOp]) -> Value {
        let p: json_patch::Patch =
            serde_json::from_value(serde_json::to_value(patch).unwrap()).unwrap();
        let mut out = doc.clone();
        json_patch::patch(&mut out, &p).unwrap_or_else(|e| panic!("{e}: {patch:#?}"));
        out
    }

    fn subject<'a>(
        kind: (&'a str, &'a str),
        op: &'a str,
        object: &'a Value,
        old: Option<&'a Value>,
    ) -> Subject<'a> {
        Subject {
            group: kind.0,
            kind: kind.1,
            sub_resource: None,
            operation: op,
            namespace: Some("default"),
            object,
            old_object: old,
            pins: None,
        }
    }

    const POD: (&str, &str) = ("", "Pod");

    #[test]
    fn rewrite_table() {
        let mut c = cfg();
        c.ignored_registries = vec![RegistryPattern::parse("registry.k8s.io").unwrap()];
        let digest_ref = format!("ghcr.io/org/app:v1@{D}");
        let digest_out = format!("mirror.example.com/ghcr.io/org/app:v1@{D}");
        let cases: Vec<(&str, Option<&str>)> = vec![
            ("nginx:1.27", Some("mirror.example.com/library/nginx:1.27")),
            ("nginx", Some("mirror.example.com/library/nginx")), // no tag added
            ("team/app:1", Some("mirror.example.com/team/app:1")), // Docker Hub: its layout
            (
                "quay.io/team/app:1",
                Some("mirror.example.com/quay.io/team/app:1"),
            ),
            (
                "QUAY.IO/team/app:1",
                Some("mirror.example.com/quay.io/team/app:1"),
            ), // identity
            (
                "registry:5000/app",
                Some("mirror.example.com/registry_5000/app"),
            ),
            (
                "registry.local:05000/app",
                Some("mirror.example.com/registry.local_5000/app"),
            ),
            ("localhost/app:2", None), // no name a path could hold apart from Docker Hub's
            ("[::1]:5000/app:2", None),
            (&digest_ref, Some(&digest_out)),
            ("mirror.example.com/library/nginx:1", None), // already there
            ("MIRROR.example.com/x:1", None),             // host case ignored
            ("registry.k8s.io/pause:3.10", None),         // ignored registry
            ("NGINX:1", None),                            // invalid: left to validation
        ];
        for (image, want) in cases {
            assert_eq!(rewrite_image(&c, image).as_deref(), want, "{image}");
        }
        // Flat, when chosen: the path only (different sources can collide).
        c.rewrite_layout = Layout::Flat;
        for (image, want) in [
            ("quay.io/team/app:1", "mirror.example.com/team/app:1"),
            ("team/app:1", "mirror.example.com/team/app:1"),
            ("localhost/app:2", "mirror.example.com/app:2"),
        ] {
            assert_eq!(rewrite_image(&c, image).as_deref(), Some(want), "{image}");
        }
    }

    /// By registry, two different images never get one name.
    #[test]
    fn rewritten_names_are_distinct() {
        let c = cfg();
        let sources = [
            "docker.io/team/app:1",
            "quay.io/team/app:1",
            "ghcr.io/team/app:1",
            "registry.local:5000/team/app:1",
            "registry.local/team/app:1",
            "docker.io/quay/team/app:1",
        ];
        let mut seen = std::collections::HashSet::new();
        for s in sources {
            let out = rewrite_image(&c, s).unwrap();
            assert!(seen.insert(out.clone()), "{s} collides at {out}");
        }
    }

    #[test]
    fn overlapping_targets_are_found() {
        let c = MutateConfig {
            rewrite_registry: Some(Target::parse("mirror.example.com").unwrap()),
            registry_mirrors: vec![
                (
                    "quay.io".into(),
                    Target::parse("mirror.example.com/quay").unwrap(),
                ),
                (
                    "ghcr.io".into(),
                    Target::parse("other.example.com/ghcr").unwrap(),
                ),
                (
                    "gcr.io".into(),
                    Target::parse("other.example.com/ghcr/x").unwrap(),
                ),
            ],
            ..MutateConfig::default()
        };
        let found = c.overlapping_targets();
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found[0].contains("\"mirror.example.com/quay\" and \"mirror.example.com\""));
    }

    /// Pins (gathered by the admission step) apply to containers and image
    /// volumes alike, after the rewrite.
    #[test]
    fn pins_apply_to_containers_and_image_volumes() {
        let pod = json!({"spec": {"containers": [{"name": "c", "image": "quay.io/a/app:1"}],
            "volumes": [{"name": "m", "image": {"reference": "quay.io/a/models:2"}}, {"name": "e", "emptyDir": {}}]}});
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let pins = std::collections::BTreeMap::from([
            (
                "mirror.example.com/quay.io/a/app:1".to_string(),
                format!("mirror.example.com/quay.io/a/app:1@{d}"),
            ),
            (
                "mirror.example.com/quay.io/a/models:2".to_string(),
                format!("mirror.example.com/quay.io/a/models:2@{d}"),
            ),
        ]);
        let mut s = subject(POD, "CREATE", &pod, None);
        s.pins = Some(&pins);
        let out = apply(&pod, &mutate(&cfg(), &s).patch);
        assert_eq!(
            out["spec"]["containers"][0]["image"],
            format!("mirror.example.com/quay.io/a/app:1@{d}")
        );
        assert_eq!(
            out["spec"]["volumes"][0]["image"]["reference"],
            format!("mirror.example.com/quay.io/a/models:2@{d}")
        );
        assert!(out["spec"]["volumes"][1].get("image").is_none());
        // Without pins: moved only.
        let out = apply(
            &pod,
            &mutate(&cfg(), &subject(POD, "CREATE", &pod, None)).patch,
        );
        assert_eq!(
            out["spec"]["volumes"][0]["image"]["reference"],
            "mirror.example.com/quay.io/a/models:2"
        );
    }

    /// Our small applier agrees with an independent implementation.
    #[test]
    fn own_patch_applier_agrees_with_json_patch() {
        let pod = json!({"metadata": {"annotations": {REWRITTEN_ANNOTATION: "forged"}},
            "spec": {"containers": [{"name": "a", "image": "nginx:1.27"}, {"name": "b", "image": "quay.io/x/y:1"}],
                     "initContainers": [{"name": "i", "image": "busybox:1.36", "imagePullPolicy": "Never"}],
                     "imagePullSecrets": [{"name": "old"}]}});
        let c = MutateConfig {
            image_pull_secrets: vec!["regcred".into()],
            append_pull_secrets: true,
            image_pull_policy: Some(PullPolicy::Always),
            ..cfg()
        };
        let patch = mutate(&c, &subject(POD, "CREATE", &pod, None)).patch;
        assert!(patch.len() >= 5, "{patch:#?}");
        let mut ours = pod.clone();
        super::apply(&mut ours, &patch).unwrap();
        assert_eq!(ours, apply(&pod, &patch));
        assert!(
            super::apply(
                &mut ours.clone(),
                &[PatchOp {
                    op: "replace",
                    path: "/spec/containers/9/image".into(),
                    value: json!("x")
                }]
            )
            .is_err()
        );
    }

    /// Only this webhook writes the rewritten-images annotation.
    #[test]
    fn the_rewrite_record_cannot_be_planted() {
        let key = REWRITTEN_ANNOTATION;
        let forged = json!({"metadata": {"annotations": {key: "evil.io/x:1=nginx:1.27"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}});
        // CREATE with a rewrite: replaced by the real record.
        let out = apply(
            &forged,
            &mutate(&cfg(), &subject(POD, "CREATE", &forged, None)).patch,
        );
        assert_eq!(
            out["metadata"]["annotations"][key],
            "nginx:1.27=mirror.example.com/library/nginx:1.27"
        );
        // Nothing rewritten: removed.
        let on_mirror = json!({"metadata": {"annotations": {key: "evil.io/x:1=nginx:1.27"}},
            "spec": {"containers": [{"name": "c", "image": "mirror.example.com/library/nginx:1.27"}]}});
        let out = apply(
            &on_mirror,
            &mutate(&cfg(), &subject(POD, "CREATE", &on_mirror, None)).patch,
        );
        assert!(out["metadata"]["annotations"].get(key).is_none(), "{out}");
        // UPDATE: what was recorded before stays, a forged value does not.
        let old = json!({"metadata": {"annotations": {key: "a:1=mirror.example.com/library/a:1"}},
            "spec": {"containers": [{"name": "c", "image": "mirror.example.com/library/a:1"}]}});
        let mut new = old.clone();
        new["metadata"]["annotations"][key] = json!("evil.io/x:1=mirror.example.com/library/a:1");
        let out = apply(
            &new,
            &mutate(&cfg(), &subject(POD, "UPDATE", &new, Some(&old))).patch,
        );
        assert_eq!(
            out["metadata"]["annotations"][key],
            "a:1=mirror.example.com/library/a:1"
        );
    }

    #[test]
    fn per_registry_mirrors() {
        let c = MutateConfig {
            registry_mirrors: vec![
                (
                    "docker.io".into(),
                    Target::parse("mirror.example.com/dockerhub").unwrap(),
                ),
                (
                    "ghcr.io".into(),
                    Target::parse("mirror.example.com/ghcr").unwrap(),
                ),
            ],
            ..MutateConfig::default()
        };
        assert_eq!(
            rewrite_image(&c, "nginx:1").as_deref(),
            Some("mirror.example.com/dockerhub/library/nginx:1")
        );
        assert_eq!(
            rewrite_image(&c, "ghcr.io/acme/app:1").as_deref(),
            Some("mirror.example.com/ghcr/acme/app:1")
        );
        assert_eq!(
            rewrite_image(&c, "quay.io/a/b:1"),
            None,
            "unmapped registries stay"
        );
        assert_eq!(
            rewrite_image(&c, "mirror.example.com/ghcr/acme/app:1"),
            None
        );
        // Only at a path boundary: ghcrx is not below ghcr.
        let t = Target::parse("mirror.example.com/ghcr").unwrap();
        assert!(!t.holds(&ImageRef::parse("mirror.example.com/ghcrx/a:1").unwrap()));
    }

    #[test]
    fn targets_are_validated() {
        for bad in [
            "mirror",
            "https://mirror.example.com",
            "mirror.example.com/Upper",
            "-x.io",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    fn full_cfg() -> MutateConfig {
        MutateConfig {
            image_pull_secrets: vec!["regcred".into()],
            image_pull_policy: Some(PullPolicy::Always),
            ..cfg()
        }
    }

    #[test]
    fn pod_create_with_every_container_list() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "app", "image": "nginx:1.27", "imagePullPolicy": "IfNotPresent"}],
            "initContainers": [{"name": "init", "image": "busybox:1.36"}],
            "ephemeralContainers": [{"name": "dbg", "image": "mirror.example.com/tools/dbg:1", "imagePullPolicy": "Always"}]
        }});
        let m = mutate(&full_cfg(), &subject(POD, "CREATE", &pod, None));
        let out = apply(&pod, &m.patch);
        assert_eq!(
            out["spec"]["containers"][0]["image"],
            "mirror.example.com/library/nginx:1.27"
        );
        assert_eq!(out["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(
            out["spec"]["initContainers"][0]["image"],
            "mirror.example.com/library/busybox:1.36"
        );
        assert_eq!(
            out["spec"]["initContainers"][0]["imagePullPolicy"],
            "Always"
        );
        assert_eq!(
            out["spec"]["ephemeralContainers"][0]["image"],
            "mirror.example.com/tools/dbg:1"
        );
        assert_eq!(
            out["spec"]["imagePullSecrets"],
            json!([{"name": "regcred"}])
        );
        assert_eq!(
            out["metadata"]["annotations"][REWRITTEN_ANNOTATION],
            "nginx:1.27=mirror.example.com/library/nginx:1.27,busybox:1.36=mirror.example.com/library/busybox:1.36"
        );
        // Minimal: the ephemeral container needed nothing, so no op names it.
        assert!(
            !m.patch
                .iter()
                .any(|op| op.path.contains("ephemeralContainers")),
            "{:#?}",
            m.patch
        );
        // Idempotent: the patched pod needs no further patch.
        assert_eq!(
            mutate(&full_cfg(), &subject(POD, "CREATE", &out, None)).patch,
            vec![]
        );
    }

    #[test]
    fn pod_update_only_rewrites_changed_images() {
        let old = json!({"metadata": {"annotations": {"a/b~c": "x"}}, "spec": {
            "containers": [{"name": "app", "image": "nginx:1.27"}, {"name": "side", "image": "envoy:1"}],
            "ephemeralContainers": [{"name": "dbg1", "image": "busybox:1"}]
        }});
        let mut new = old.clone();
        new["spec"]["containers"][1]["image"] = json!("envoy:2");
        new["spec"]["ephemeralContainers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "dbg2", "image": "busybox:2"}));
        let m = mutate(&full_cfg(), &subject(POD, "UPDATE", &new, Some(&old)));
        let paths: Vec<&str> = m.patch.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/spec/containers/1/image",
                "/spec/ephemeralContainers/1/image",
                "/spec/ephemeralContainers/1/imagePullPolicy",
                "/metadata/annotations/image-bouncer.io~1rewritten-images",
            ]
        );
        let out = apply(&new, &m.patch);
        assert_eq!(
            out["spec"]["containers"][0]["image"], "nginx:1.27",
            "unchanged image kept"
        );
        assert_eq!(out["metadata"]["annotations"]["a/b~c"], "x");
        assert_eq!(
            out["metadata"]["annotations"]["image-bouncer.io/rewritten-images"],
            "envoy:2=mirror.example.com/library/envoy:2,busybox:2=mirror.example.com/library/busybox:2"
        );
        assert!(
            out["spec"].get("imagePullSecrets").is_none(),
            "pull secrets are immutable on a pod"
        );
    }

    #[test]
    fn workloads_only_with_mutate_templates() {
        let deploy = json!({"metadata": {"name": "d"}, "spec": {"template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}});
        let kind = ("apps", "Deployment");
        let m = mutate(&full_cfg(), &subject(kind, "CREATE", &deploy, None));
        assert!(m.patch.is_empty());
        assert!(m.skipped.unwrap().contains("mutateTemplates"));
        let c = MutateConfig {
            mutate_templates: true,
            ..full_cfg()
        };
        let m = mutate(&c, &subject(kind, "CREATE", &deploy, None));
        let out = apply(&deploy, &m.patch);
        let t = &out["spec"]["template"];
        assert_eq!(
            t["spec"]["containers"][0]["image"],
            "mirror.example.com/library/nginx:1"
        );
        assert_eq!(t["spec"]["imagePullSecrets"], json!([{"name": "regcred"}]));
        assert_eq!(
            t["metadata"]["annotations"][REWRITTEN_ANNOTATION],
            "nginx:1=mirror.example.com/library/nginx:1"
        );
        // Workload templates are mutable: UPDATE is mutated like CREATE.
        assert_eq!(
            mutate(&c, &subject(kind, "UPDATE", &deploy, Some(&deploy))).patch,
            m.patch
        );
        // A CronJob's template is deeper.
        let cj = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x:1"}]}}}}}});
        let m = mutate(&c, &subject(("batch", "CronJob"), "CREATE", &cj, None));
        let out = apply(&cj, &m.patch);
        assert_eq!(
            out.pointer("/spec/jobTemplate/spec/template/spec/containers/0/image")
                .unwrap(),
            "mirror.example.com/library/x:1"
        );
        assert!(
            out.pointer("/spec/jobTemplate/spec/template/metadata/annotations")
                .is_some()
        );
    }

    #[test]
    fn pull_secrets_append_and_replace() {
        let pod = |secrets: Value| json!({"spec": {"containers": [], "imagePullSecrets": secrets}});
        let base = MutateConfig {
            image_pull_secrets: vec!["a".into(), "b".into()],
            ..MutateConfig::default()
        };
        let append = MutateConfig {
            append_pull_secrets: true,
            ..base.clone()
        };
        let cases = [
            (
                &append,
                json!([{"name": "x"}, {"name": "a"}]),
                json!([{"name": "x"}, {"name": "a"}, {"name": "b"}]),
            ),
            (
                &append,
                json!([{"name": "a"}, {"name": "b"}]),
                json!([{"name": "a"}, {"name": "b"}]),
            ),
            (&append, json!([]), json!([{"name": "a"}, {"name": "b"}])),
            (
                &base,
                json!([{"name": "x"}]),
                json!([{"name": "a"}, {"name": "b"}]),
            ),
            (
                &base,
                json!([{"name": "b"}, {"name": "a"}]),
                json!([{"name": "a"}, {"name": "b"}]),
            ),
        ];
        for (c, before, after) in cases {
            let p = pod(before.clone());
            let m = mutate(c, &subject(POD, "CREATE", &p, None));
            assert_eq!(
                apply(&p, &m.patch)["spec"]["imagePullSecrets"],
                after,
                "{before}"
            );
        }
        // Already as wanted: no operation at all.
        let p = pod(json!([{"name": "a"}, {"name": "b"}]));
        assert!(
            mutate(&base, &subject(POD, "CREATE", &p, None))
                .patch
                .is_empty()
        );
        // Absent list: added as a list of objects, never a nested array.
        let p = json!({"spec": {"containers": []}});
        let m = mutate(&append, &subject(POD, "CREATE", &p, None));
        assert_eq!(
            apply(&p, &m.patch)["spec"]["imagePullSecrets"],
            json!([{"name": "a"}, {"name": "b"}])
        );
    }

    #[test]
    fn storage_class_only_when_absent() {
        let c = MutateConfig {
            default_storage_class: Some("fast".into()),
            ..MutateConfig::default()
        };
        let pvc = |spec: Value| json!({"metadata": {"name": "data"}, "spec": spec});
        let kind = ("", "PersistentVolumeClaim");
        let cases = [
            (json!({"resources": {}}), json!("fast")),
            (json!({"storageClassName": null}), json!("fast")),
            (json!({"storageClassName": ""}), json!("")), // static binding kept
            (json!({"storageClassName": "slow"}), json!("slow")),
        ];
        for (spec, want) in cases {
            let p = pvc(spec.clone());
            let m = mutate(&c, &subject(kind, "CREATE", &p, None));
            assert_eq!(
                apply(&p, &m.patch)["spec"]["storageClassName"],
                want,
                "{spec}"
            );
        }
        let p = pvc(json!({}));
        assert!(
            mutate(&c, &subject(kind, "UPDATE", &p, Some(&p)))
                .patch
                .is_empty()
        );
    }

    #[test]
    fn scope_namespace_and_opt_out() {
        let pod = json!({"metadata": {"annotations": {SKIP_ANNOTATION: "true"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}});
        let m = mutate(&full_cfg(), &subject(POD, "CREATE", &pod, None));
        assert!(m.patch.is_empty() && m.skipped.unwrap().contains(SKIP_ANNOTATION));
        let pod = json!({"spec": {"containers": [{"name": "c", "image": "nginx:1"}]}});
        let c = MutateConfig {
            exclude_namespaces: vec![NamespacePattern::parse("kube-*").unwrap()],
            ..full_cfg()
        };
        let mut s = subject(POD, "CREATE", &pod, None);
        s.namespace = Some("kube-system");
        assert!(mutate(&c, &s).patch.is_empty());
        s.namespace = Some("default");
        assert!(!mutate(&c, &s).patch.is_empty());
        s.operation = "DELETE";
        assert!(mutate(&c, &s).patch.is_empty());
    }

    #[test]
    fn pointer_escaping() {
        assert_eq!(
            pointer_token("image-bouncer.io/rewritten-images"),
            "image-bouncer.io~1rewritten-images"
        );
        assert_eq!(pointer_token("a~b/c~1"), "a~0b~1c~01");
        // The escaped path lands on the literal key.
        let doc = json!({"m": {"a~b/c": 1}});
        let op = PatchOp {
            op: "replace",
            path: format!("/m/{}", pointer_token("a~b/c")),
            value: json!(2),
        };
        assert_eq!(apply(&doc, &[op])["m"]["a~b/c"], 2);
    }
}
