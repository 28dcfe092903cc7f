//! The `mutate` section: its keys, the older project's environment
//! variables and `/mutate`'s flags merged over the file (flags >
//! environment > file, each value with where it came from), and the
//! validated [`MutateConfig`], mirrors checked against the policy.

use serde_json::Value;

use super::{COMMENT_PREFIX, Walker, type_name};
use crate::cli::{MUTATE_ENV, PolicyFlags, split_commas};
use crate::mutate::{Layout, MutateConfig, PullPolicy, Target};
use crate::policy::{ImagePattern, NamespacePattern, Policy, RegistryPattern};

/// The `mutate` settings before validation; each field is the value of the
/// highest source that set it (flags > environment > file), with where it
/// came from.
#[derive(Debug, Default)]
pub(super) struct RawMutate {
    pub(super) rewrite_registry: Option<(String, String)>,
    pub(super) rewrite_layout: Option<(String, String)>,
    /// (origin, from, to)
    pub(super) registry_mirrors: Option<Vec<(String, String, String)>>,
    pub(super) ignored_registries: Option<Vec<(String, String)>>,
    pub(super) image_pull_secrets: Option<Vec<(String, String)>>,
    pub(super) append_pull_secrets: Option<bool>,
    pub(super) image_pull_policy: Option<(String, String)>,
    pub(super) default_storage_class: Option<(String, String)>,
    pub(super) exclude_namespaces: Option<Vec<(String, String)>>,
    pub(super) mutate_templates: Option<bool>,
    pub(super) mutate_digest: Option<Vec<(String, String)>>,
    pub(super) on_registry_error: Option<(String, String)>,
}

impl PolicyFlags {
    pub(super) fn merge_mutate_into(&self, raw: &mut RawMutate) {
        let list = |flag: &str, v: &[String]| -> Option<Vec<(String, String)>> {
            (!v.is_empty()).then(|| v.iter().map(|s| (flag.to_string(), s.clone())).collect())
        };
        let one =
            |flag: &str, v: &Option<String>| v.as_ref().map(|s| (flag.to_string(), s.clone()));
        if let Some(v) = one("--rewrite-registry", &self.rewrite_registry) {
            raw.rewrite_registry = Some(v);
        }
        if let Some(v) = one("--rewrite-layout", &self.rewrite_layout) {
            raw.rewrite_layout = Some(v);
        }
        if !self.registry_mirrors.is_empty() {
            raw.registry_mirrors = Some(
                self.registry_mirrors
                    .iter()
                    .map(|pair| {
                        let (from, to) = pair.split_once('=').unwrap_or((pair, ""));
                        (
                            "--registry-mirror".to_string(),
                            from.to_string(),
                            to.to_string(),
                        )
                    })
                    .collect(),
            );
        }
        if let Some(v) = list("--ignore-registry", &self.ignored_registries) {
            raw.ignored_registries = Some(v);
        }
        if let Some(v) = list("--image-pull-secret", &self.image_pull_secrets) {
            raw.image_pull_secrets = Some(v);
        }
        if self.append_pull_secrets {
            raw.append_pull_secrets = Some(true);
        }
        if let Some(v) = one("--image-pull-policy", &self.image_pull_policy) {
            raw.image_pull_policy = Some(v);
        }
        if let Some(v) = one("--default-storage-class", &self.default_storage_class) {
            raw.default_storage_class = Some(v);
        }
        if let Some(v) = list("--exclude-namespace", &self.exclude_namespaces) {
            raw.exclude_namespaces = Some(v);
        }
        if self.mutate_templates {
            raw.mutate_templates = Some(true);
        }
    }
}

impl Walker<'_> {
    /// The `mutate` section.
    pub(super) fn mutate(&mut self, path: &str, v: &Value) -> RawMutate {
        let mut raw = RawMutate::default();
        let Some(obj) = v.as_object() else {
            self.problem(path, format!("expected an object, found {}", type_name(v)));
            return raw;
        };
        let source = self.source;
        for (key, v) in obj {
            let p = format!("{path}.{key}");
            let origin = format!("{source}: {p}");
            match key.as_str() {
                k if k.starts_with(COMMENT_PREFIX) => {}
                "rewriteRegistry" => raw.rewrite_registry = self.string(&p, v).map(|s| (origin, s)),
                "rewriteLayout" => raw.rewrite_layout = self.string(&p, v).map(|s| (origin, s)),
                "registryMirrors" => {
                    let Some(map) = v.as_object() else {
                        self.problem(
                            &p,
                            format!(
                                "expected an object of registry: target, found {}",
                                type_name(v)
                            ),
                        );
                        continue;
                    };
                    let mut pairs = Vec::new();
                    for (from, to) in map {
                        let at = format!("{p}.{from}");
                        if let Some(to) = self.string(&at, to) {
                            pairs.push((format!("{source}: {at}"), from.clone(), to));
                        }
                    }
                    raw.registry_mirrors = Some(pairs);
                }
                "ignoredRegistries" => raw.ignored_registries = Some(self.strings(&p, v)),
                "imagePullSecrets" => raw.image_pull_secrets = Some(self.strings(&p, v)),
                "appendImagePullSecrets" => raw.append_pull_secrets = self.boolean(&p, v),
                "imagePullPolicy" => {
                    raw.image_pull_policy = self.string(&p, v).map(|s| (origin, s))
                }
                "defaultStorageClass" => {
                    raw.default_storage_class = self.string(&p, v).map(|s| (origin, s))
                }
                "excludeNamespaces" => raw.exclude_namespaces = Some(self.strings(&p, v)),
                "mutateTemplates" => raw.mutate_templates = self.boolean(&p, v),
                "mutateDigest" => raw.mutate_digest = Some(self.strings(&p, v)),
                "onRegistryError" => {
                    raw.on_registry_error = self.string(&p, v).map(|s| (origin, s))
                }
                _ => self.problem(
                    &p,
                    format!("unknown key (expected one of {})", MUTATE_KEYS.join(", ")),
                ),
            }
        }
        raw
    }
}

pub(super) const MUTATE_KEYS: &[&str] = &[
    "rewriteRegistry",
    "rewriteLayout",
    "registryMirrors",
    "ignoredRegistries",
    "imagePullSecrets",
    "appendImagePullSecrets",
    "imagePullPolicy",
    "defaultStorageClass",
    "excludeNamespaces",
    "mutateTemplates",
    "mutateDigest",
    "onRegistryError",
];

/// Reads the mutation variables of the environment (empty means unset, as
/// in the older project).
pub(super) fn merge_env(
    raw: &mut RawMutate,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) {
    let get = |k: &str| {
        env(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let origin = |k: &str| format!("environment {k}");
    let list = |k: &str| {
        get(k).map(|v| {
            split_commas(&[v])
                .into_iter()
                .map(|s| (origin(k), s))
                .collect::<Vec<_>>()
        })
    };
    let mut boolean = |k: &str| match get(k).map(|v| v.to_ascii_lowercase()).as_deref() {
        None => None,
        Some("true" | "1" | "yes") => Some(true),
        Some("false" | "0" | "no") => Some(false),
        Some(other) => {
            problems.push(format!("{}: {other:?} is not true or false", origin(k)));
            None
        }
    };
    for k in MUTATE_ENV {
        if get(k).is_some() {
            log::info!("environment variable {k} is part of the configuration");
        }
    }
    if let Some(v) = get("REGISTRY") {
        raw.rewrite_registry = Some((origin("REGISTRY"), v));
    }
    if let Some(v) = list("IMAGE_PULL_SECRET") {
        raw.image_pull_secrets = Some(v);
    }
    if let Some(b) = boolean("IMAGE_PULL_SECRET_APPEND") {
        raw.append_pull_secrets = Some(b);
    }
    if boolean("FORCE_IMAGE_PULL_POLICY") == Some(true) {
        let policy = get("IMAGE_PULL_POLICY_TO_FORCE").unwrap_or_else(|| "Always".into());
        raw.image_pull_policy = Some((origin("IMAGE_PULL_POLICY_TO_FORCE"), policy));
    }
    if let Some(v) = get("DEFAULT_STORAGE_CLASS") {
        raw.default_storage_class = Some((origin("DEFAULT_STORAGE_CLASS"), v));
    }
    if let Some(v) = list("EXCLUDE_NAMESPACES") {
        raw.exclude_namespaces = Some(v);
    }
    if let Some(v) = list("IGNORED_REGISTRIES").or_else(|| list("IGNORE_REGISTRIES")) {
        raw.ignored_registries = Some(v);
    }
}

/// Validates the mutation settings, recording every problem.
pub(super) fn build_mutate(raw: RawMutate, problems: &mut Vec<String>) -> MutateConfig {
    let mut check = |origin: &str, r: Result<(), String>| {
        if let Err(e) = r {
            problems.push(format!("{origin}: {e}"));
        }
    };
    let mut cfg = MutateConfig {
        append_pull_secrets: raw.append_pull_secrets.unwrap_or(false),
        mutate_templates: raw.mutate_templates.unwrap_or(false),
        ..MutateConfig::default()
    };
    if let Some((origin, l)) = raw.rewrite_layout {
        check(&origin, Layout::parse(&l).map(|l| cfg.rewrite_layout = l));
    }
    if let Some((origin, t)) = raw.rewrite_registry {
        check(
            &origin,
            Target::parse(&t).map(|t| cfg.rewrite_registry = Some(t)),
        );
    }
    for (origin, from, to) in raw.registry_mirrors.unwrap_or_default() {
        let from_ok = mirror_source(&from);
        let to_ok = Target::parse(&to);
        match (from_ok, to_ok) {
            (Ok(from), Ok(to)) => cfg.registry_mirrors.push((from, to)),
            (Err(e), _) | (_, Err(e)) => check(&origin, Err(e)),
        }
    }
    for (origin, r) in raw.ignored_registries.unwrap_or_default() {
        check(
            &origin,
            RegistryPattern::parse(&r).map(|p| cfg.ignored_registries.push(p)),
        );
    }
    for (origin, name) in raw.image_pull_secrets.unwrap_or_default() {
        // A name twice would be patched in twice (the apiserver warns on
        // every pod).
        let unique = if cfg.image_pull_secrets.contains(&name) {
            Err(format!("{name:?} is given twice"))
        } else {
            object_name(&name)
        };
        check(
            &origin,
            unique.map(|()| cfg.image_pull_secrets.push(name.clone())),
        );
    }
    if let Some((origin, p)) = raw.image_pull_policy {
        check(
            &origin,
            PullPolicy::parse(&p).map(|p| cfg.image_pull_policy = Some(p)),
        );
    }
    if let Some((origin, c)) = raw.default_storage_class {
        check(
            &origin,
            object_name(&c).map(|()| cfg.default_storage_class = Some(c.clone())),
        );
    }
    for (origin, p) in raw.mutate_digest.unwrap_or_default() {
        check(
            &origin,
            ImagePattern::parse(&p).map(|p| cfg.mutate_digest.push(p)),
        );
    }
    if let Some((origin, v)) = raw.on_registry_error {
        check(
            &origin,
            match v.as_str() {
                "deny" => Ok(()),
                "allow" => {
                    cfg.allow_on_registry_error = true;
                    Ok(())
                }
                other => Err(format!(
                    "onRegistryError {other:?} is not \"deny\" or \"allow\""
                )),
            },
        );
    }
    for (origin, ns) in raw.exclude_namespaces.unwrap_or_default() {
        check(
            &origin,
            NamespacePattern::parse(&ns).map(|p| cfg.exclude_namespaces.push(p)),
        );
    }
    cfg
}

/// A `registryMirrors` key: a registry `host[:port]`, by identity (as
/// `mutate::mirror_key` writes an image's registry).
pub(super) fn mirror_source(from: &str) -> Result<String, String> {
    use crate::image_ref as r;
    if from.contains('/') {
        return Err(format!(
            "{from:?}: a mirrored registry is a host[:port], without a path"
        ));
    }
    let describe = |e| format!("{from:?}: {}", r::ParseError::describe(&e));
    r::validate_domain(from).map_err(describe)?;
    let (host, port) = r::split_port(from);
    let host = r::canonical_host(host);
    Ok(match r::canonical_port(port).map_err(describe)? {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

/// A Kubernetes object name (DNS subdomain): secrets, storage classes.
pub(super) fn object_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a Kubernetes object name (lowercase letters, digits, '-' and '.')"
        ))
    }
}

/// Lets the policy judge a mirrored image by the image it mirrors, and
/// refuses what the mutations would make meaningless: targets that
/// overlap (two sources, one name), and rule entries naming a mirror root,
/// which can never match since images there are judged upstream.
pub(super) fn with_mirrors(
    mut policy: Policy,
    mutate: &MutateConfig,
    problems: &mut Vec<String>,
) -> Policy {
    policy.mirrors = mutate.mirrors_back();
    let entries = [
        ("allowedRegistries", &policy.allowed_registries),
        ("deniedRegistries", &policy.denied_registries),
    ];
    for (key, list) in entries {
        for p in list.iter() {
            if policy.mirrors.iter().any(|m| m.covers(p)) {
                problems.push(format!(
                    "policy {:?}: {key}: {:?} names a registry the mutations fill with mirrored images; those are judged by the image they mirror, so name the upstream registries instead",
                    policy.name, p.raw
                ));
            }
        }
    }
    policy
}
