//! Raw flags and the JSON policy file become a validated [`Policy`].
//!
//! Every problem is collected and reported at once, each with the JSON path
//! (`$.allowedRegistries[2]`) or flag that caused it, so a broken file is
//! fixed in one round. Flags are merged over the file: list flags add
//! entries, switches override. This module reads files; it does not watch
//! them (the server's reloader does).

use std::fmt;

use serde_json::Value;

use crate::cli::PolicyFlags;
use crate::mutate::MutateConfig;
use mutations::{RawMutate, build_mutate, merge_env, with_mirrors};

mod mutations;
mod serve;
mod strict;
pub mod verify;

use crate::policy::{ImagePattern, Mode, NamespacePattern, Policy, PolicySet, RegistryPattern};
pub use serve::{
    Limits, PolicySource, SelfSigned, Settings, TlsFiles, defaults, parse_duration, serve_settings,
};

/// A policy file larger than this is surely a mistake (a wrong path).
const POLICY_FILE_MAX: u64 = 4 * 1024 * 1024;

/// Keys starting with this are comments and ignored, at any level.
pub const COMMENT_PREFIX: &str = "//";

/// What a policy file and the flags configure: the policy every endpoint
/// decides with, and the mutations of `/mutate`.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// The policies every endpoint decides with.
    pub policy: PolicySet,
    pub mutate: MutateConfig,
    /// How to reach registries (credentials, their CAs).
    pub registry: RegistryConfig,
    /// Whom each `verifyImages` entry trusts (same order as
    /// `policy.verify_images`).
    pub verify: Vec<verify::VerifyRule>,
    /// The first 12 hex digits of the policy file's SHA-256, as read (to
    /// see which policy a replica holds); empty without a file.
    pub source_sha256: String,
    /// The files the policies name (keys, trusted roots, registry CAs,
    /// credentials): a server reloads when one of them changes.
    pub files: Vec<std::path::PathBuf>,
    /// Those files as they were just before this load read them.
    pub files_seen: crate::files::Fingerprint,
}

/// The registry settings of the policy file, read and checked.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// From `registryCredentials` (a docker config.json).
    pub credentials: crate::credentials::Credentials,
    /// Each registry's `ca` file (`registries`), trusted for it alone,
    /// besides the public roots.
    pub cas: std::collections::BTreeMap<String, Vec<rustls::pki_types::CertificateDer<'static>>>,
    /// Registries configured `plainHttp: true`: spoken to over http.
    pub plain_http: std::collections::BTreeSet<String>,
}

/// Everything wrong with a configuration, one problem per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<String>,
    /// The files the policies that failed name, as far as they were read
    /// (a server watches them: fixing one loads again).
    pub files: Vec<std::path::PathBuf>,
    pub files_seen: crate::files::Fingerprint,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "invalid configuration: {one}"),
            many => {
                write!(f, "invalid configuration ({} problems):", many.len())?;
                for p in many {
                    write!(f, "\n  {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// The policy file's settings before patterns are compiled; `None` or empty
/// where the file says nothing.
#[derive(Debug, Default)]
struct RawPolicy {
    mode: Option<(String, String)>,
    deny_latest: Option<bool>,
    require_digest: Option<bool>,
    break_glass: Option<bool>,
    /// (where it came from, value)
    allowed: Vec<(String, String)>,
    denied: Vec<(String, String)>,
    exempt_images: Vec<(String, String)>,
    exempt_namespaces: Vec<(String, String)>,
    namespaces: Vec<(String, String)>,
    exclude_namespaces: Vec<(String, String)>,
    /// The server-wide keys the file gave (`registries`,
    /// `registryCredentials`, `mutate`): one file of a set may give them.
    server_wide: Vec<&'static str>,
    /// (where, path) of `registryCredentials`.
    registry_credentials: Option<(String, String)>,
    registries: Vec<RawRegistry>,
    /// (source, the `verifyImages` value), read by `verify::build`.
    verify_images: Option<(String, Value)>,
}

/// (where, registry, CA file, plain HTTP) of one `registries` entry.
type RawRegistry = (String, String, Option<String>, Option<bool>);

/// The policy files of a directory, in name order: every `*.json`,
/// `*.yaml` and `*.yml` in it, not hidden ones and not folders; in a
/// mounted ConfigMap, those of the `..data` generation in force. Files the
/// server watches for a reload.
pub fn policy_files(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>, String> {
    // A mounted ConfigMap: each key is a link into `..data`, itself a
    // link the kubelet swaps to a new folder at once. Read that folder,
    // resolved once, so that a swap between two reads cannot mix old
    // files with new ones (a mix could be valid and lose a rule).
    let data = dir.join("..data");
    let resolved;
    let dir = match std::fs::symlink_metadata(&data) {
        Ok(m) if m.file_type().is_symlink() => {
            resolved = std::fs::canonicalize(&data)
                .map_err(|e| format!("{}: cannot resolve: {e}", data.display()))?;
            resolved.as_path()
        }
        _ => dir,
    };
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("{}: cannot list: {e}", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: cannot list: {e}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let wanted = !name.starts_with('.')
            && [".json", ".yaml", ".yml"].iter().any(|e| name.ends_with(e))
            // A ConfigMap key is a symlink to a file: followed.
            && path.is_file();
        if wanted {
            out.push(path);
        }
    }
    out.sort();
    // Two files of one name (a.json and a.yaml) would be two policies
    // with one name in every reason.
    let mut names: Vec<(String, &std::path::PathBuf)> =
        out.iter().map(|p| (policy_name(p), p)).collect();
    names.sort();
    if let Some(w) = names.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(format!(
            "{} and {} are both policy {:?}: rename one",
            w[0].1.display(),
            w[1].1.display(),
            w[0].0
        ));
    }
    Ok(out)
}

/// A policy's name: its file name without the extension.
fn policy_name(path: &std::path::Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn is_yaml(path: &std::path::Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

impl PolicyFlags {
    /// Reads the policy file (if any), merges the flags and validates all.
    pub fn load(&self) -> Result<PolicySet, ConfigError> {
        self.load_rules().map(|r| r.policy)
    }

    /// Policy and mutations from file, environment and flags.
    pub fn load_rules(&self) -> Result<Rules, ConfigError> {
        self.load_rules_with_env(&|k| std::env::var(k).ok())
    }

    /// As [`Self::load_rules`], with the environment given (for tests).
    // One function on purpose: the files of a set, the one that may hold
    // the server-wide keys and the flags are read together, and every
    // problem of every file is collected before anything is built.
    pub fn load_rules_with_env(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Rules, ConfigError> {
        let mut problems = Vec::new();
        let directory = self.file.as_deref().filter(|p| p.is_dir());
        let files: Vec<std::path::PathBuf> = match (&self.file, directory) {
            (_, Some(dir)) => policy_files(dir).unwrap_or_else(|e| {
                problems.push(e);
                Vec::new()
            }),
            (Some(file), None) => vec![file.clone()],
            (None, None) => Vec::new(),
        };
        if directory.is_some() && self.has_rule_flags() {
            problems.push(
                "the policy rule flags (--allow-registry, --deny-registry, --require-digest, --allow-latest, --exempt-namespace, --exempt-image, --break-glass) apply to a single policy file; with a policy directory, write them in one of its files (--mode still applies to every policy)".to_string(),
            );
        }
        let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
        let mut raws: Vec<(std::sync::Arc<str>, RawPolicy)> = Vec::new();
        let mut named: Vec<std::path::PathBuf> = Vec::new();
        let mut raw_mutate = RawMutate::default();
        let mut raw_registry = (None, Vec::new());
        // The file that gave the server-wide keys.
        let mut server_wide_from: Option<String> = None;
        for path in &files {
            let source = path.display().to_string();
            let text = match read_limited(path, POLICY_FILE_MAX) {
                Ok(text) => text,
                Err(e) => {
                    // Still one policy, so that the flags' problems are
                    // reported with the file's.
                    problems.push(e);
                    raws.push((
                        std::sync::Arc::from(policy_name(path)),
                        RawPolicy::default(),
                    ));
                    continue;
                }
            };
            // One file: the hash of its text (`sha256sum` shows it); a
            // set: of each name and text, in order.
            if directory.is_some() {
                sha.update(path.file_name().map_or(&[][..], |n| n.as_encoded_bytes()));
                sha.update(&[0]);
                sha.update(&(text.len() as u64).to_be_bytes());
            }
            sha.update(text.as_bytes());
            let (mut raw, mutate) = parse_policy_text(&text, &source, is_yaml(path), &mut problems);
            // Files the policy names are read beside it (a ConfigMap key
            // next to the policy's).
            named.extend(anchor_paths(
                &mut raw,
                path.parent().unwrap_or(std::path::Path::new("")),
            ));
            if !raw.server_wide.is_empty() {
                match &server_wide_from {
                    Some(first) => problems.push(format!(
                        "{source}: {} may be given in one policy file only, and {first} gives server-wide keys already (registries, registryCredentials and mutate belong together in one file)",
                        raw.server_wide.join(", ")
                    )),
                    None => {
                        server_wide_from = Some(source.clone());
                        raw_mutate = mutate;
                        raw_registry = (
                            raw.registry_credentials.take(),
                            std::mem::take(&mut raw.registries),
                        );
                    }
                }
            }
            raws.push((std::sync::Arc::from(policy_name(path)), raw));
        }
        if files.is_empty() && directory.is_none() {
            raws.push((
                std::sync::Arc::from(crate::policy::DEFAULT_NAME),
                RawPolicy::default(),
            ));
        }
        if directory.is_none()
            && let Some((_, raw)) = raws.first_mut()
        {
            self.merge_into(raw);
        } else if let Some(m) = &self.mode {
            for (_, raw) in &mut raws {
                raw.mode = Some(("--mode".to_string(), m.clone()));
            }
        }
        if self.legacy_env {
            merge_env(&mut raw_mutate, env, &mut problems);
        }
        self.merge_mutate_into(&mut raw_mutate);
        let mutate = build_mutate(raw_mutate, &mut problems);
        problems.extend(
            mutate
                .overlapping_targets()
                .into_iter()
                .map(|e| format!("mutate: {e}")),
        );
        // The named files as they are before they are read: one changed
        // while this load reads it is seen as changed afterwards.
        named.sort();
        named.dedup();
        let files_seen =
            crate::files::Fingerprint::of(&named.iter().map(|p| p.as_path()).collect::<Vec<_>>());
        let mut policies = Vec::new();
        let mut verify = Vec::new();
        for (name, mut raw) in raws {
            let (requirements, mut rules) = match raw.verify_images.take() {
                Some((source, v)) => verify::build(&source, &v, verify.len(), &mut problems),
                None => Default::default(),
            };
            for r in &mut rules {
                r.policy = name.to_string();
            }
            verify.extend(rules);
            if let Some(mut p) = build(raw, &mut problems) {
                p.name = name;
                p.verify_images = requirements;
                policies.push(with_mirrors(p, &mutate, &mut problems));
            }
        }
        let registry = build_registry(&raw_registry, &mut problems);
        if problems.is_empty() && policies.is_empty() {
            problems.push(format!(
                "{}: holds no policy file (*.json, *.yaml or *.yml); an empty set would admit everything",
                directory.map(|d| d.display().to_string()).unwrap_or_default()
            ));
        }
        if !problems.is_empty() {
            return Err(ConfigError {
                problems,
                files: named,
                files_seen,
            });
        }
        let source_sha256 = if files.is_empty() {
            String::new()
        } else {
            crate::digest::hex(&sha.finish().as_ref()[..6])
        };
        Ok(Rules {
            policy: PolicySet { policies },
            mutate,
            registry,
            verify,
            source_sha256,
            files: named,
            files_seen,
        })
    }

    /// Whether any flag that writes a rule was given (not `--mode`).
    fn has_rule_flags(&self) -> bool {
        !(self.allow_registries.is_empty()
            && self.deny_registries.is_empty()
            && self.exempt_images.is_empty()
            && self.exempt_namespaces.is_empty())
            || self.require_digest
            || self.allow_latest
            || self.break_glass
    }

    fn merge_into(&self, raw: &mut RawPolicy) {
        let tagged = |flag: &str, v: &[String]| -> Vec<(String, String)> {
            v.iter().map(|s| (flag.to_string(), s.clone())).collect()
        };
        raw.allowed
            .extend(tagged("--allow-registry", &self.allow_registries));
        raw.denied
            .extend(tagged("--deny-registry", &self.deny_registries));
        raw.exempt_images
            .extend(tagged("--exempt-image", &self.exempt_images));
        raw.exempt_namespaces
            .extend(tagged("--exempt-namespace", &self.exempt_namespaces));
        if self.require_digest {
            raw.require_digest = Some(true);
        }
        if self.allow_latest {
            raw.deny_latest = Some(false);
        }
        if self.break_glass {
            raw.break_glass = Some(true);
        }
        if let Some(m) = &self.mode {
            raw.mode = Some(("--mode".to_string(), m.clone()));
        }
    }
}

use crate::files::read_limited;

/// Parses the policy file's JSON, recording every problem with its path.
/// Whether a value where a file name is expected holds the data itself:
/// a PEM block (keys, CA certificates) or a JSON document (a trusted
/// root), as a ConfigMap or Secret value would.
pub(crate) fn is_inline(value: &str) -> bool {
    let t = value.trim_start();
    t.starts_with("-----BEGIN ") || t.starts_with('{')
}

/// The contents a policy value names: the data written inline, or the
/// file's, read whole up to `max` bytes.
pub(crate) fn file_or_inline(value: &str, max: u64) -> Result<String, String> {
    if is_inline(value) {
        return Ok(value.to_string());
    }
    read_limited(std::path::Path::new(value), max)
}

/// A relative file name in the policy file, as a path beside it.
fn anchor(base: &std::path::Path, value: &mut String) {
    let p = std::path::Path::new(value.as_str());
    if !is_inline(value) && p.is_relative() && !base.as_os_str().is_empty() {
        *value = base.join(p).display().to_string();
    }
}

/// Every file name the policy file gives (registryCredentials, a
/// registry's ca, verifyImages keys and trustedRoot, attestation items'
/// keys), read beside it; returns them (not the data written inline), to
/// be watched for changes.
fn anchor_paths(raw: &mut RawPolicy, base: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut named: Vec<&mut String> = Vec::new();
    if let Some((_, path)) = &mut raw.registry_credentials {
        named.push(path);
    }
    for (_, _, ca, _) in &mut raw.registries {
        if let Some(ca) = ca {
            named.push(ca);
        }
    }
    // The strings of a list (`keys`).
    fn strings(v: &mut Value) -> impl Iterator<Item = &mut String> {
        v.as_array_mut()
            .into_iter()
            .flatten()
            .filter_map(|k| match k {
                Value::String(k) => Some(k),
                _ => None,
            })
    }
    if let Some((_, Value::Array(entries))) = &mut raw.verify_images {
        for entry in entries.iter_mut().filter_map(Value::as_object_mut) {
            for (k, v) in entry.iter_mut() {
                match (k.as_str(), v) {
                    ("trustedRoot", Value::String(r)) => named.push(r),
                    ("keys", v) => named.extend(strings(v)),
                    ("attestations", Value::Array(items)) => {
                        for item in items.iter_mut().filter_map(Value::as_object_mut) {
                            named.extend(item.get_mut("keys").into_iter().flat_map(strings));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    named
        .into_iter()
        .filter(|v| !is_inline(v))
        .map(|v| {
            anchor(base, v);
            std::path::PathBuf::from(v.as_str())
        })
        .collect()
}

fn parse_policy_text(
    text: &str,
    source: &str,
    yaml: bool,
    problems: &mut Vec<String>,
) -> (RawPolicy, RawMutate) {
    let mut raw = RawPolicy::default();
    let mut raw_mutate = RawMutate::default();
    let parsed = if yaml {
        match crate::yaml::policy_document(text) {
            Ok(v) => Ok((v, Vec::new())),
            Err(e) => {
                problems.push(format!("{source}: {e}"));
                return (raw, raw_mutate);
            }
        }
    } else {
        strict::parse(text)
    };
    let value: Value = match parsed {
        Ok((v, duplicates)) => {
            // A repeated key would otherwise be silently last-wins.
            problems.extend(duplicates.into_iter().map(|d| format!("{source}: {d}")));
            v
        }
        Err(e) => {
            // YAML is what people try first; say what is expected.
            let hint = if text.trim_start().starts_with('{') {
                ""
            } else {
                " (the policy file is a JSON object, e.g. {\"allowedRegistries\": [\"ghcr.io/acme\"]}; for YAML, name the file *.yaml; deploy/policy.json is a commented example)"
            };
            problems.push(format!("{source}: not valid JSON: {e}{hint}"));
            return (raw, raw_mutate);
        }
    };
    let Some(obj) = value.as_object() else {
        problems.push(format!(
            "{source}: $: expected an object, found {}",
            type_name(&value)
        ));
        return (raw, raw_mutate);
    };
    // A trusted root (or another sigstore document) beside the policies
    // of a folder is read as one: say so, not "unknown key".
    if let Some(m) = obj.get("mediaType").and_then(Value::as_str)
        && m.starts_with("application/vnd.dev.sigstore")
    {
        problems.push(format!(
            "{source}: a sigstore document ({m}), not a policy: keep keys and trusted roots out of a policy folder (e.g. in /etc/image-bouncer/keys/)"
        ));
        return (raw, raw_mutate);
    }
    let mut w = Walker { source, problems };
    for (key, v) in obj {
        let path = format!("$.{key}");
        match key.as_str() {
            k if k.starts_with(COMMENT_PREFIX) => {}
            "mode" => raw.mode = w.string(&path, v).map(|s| (format!("{source}: {path}"), s)),
            "denyLatest" => raw.deny_latest = w.boolean(&path, v),
            "requireDigest" => raw.require_digest = w.boolean(&path, v),
            "breakGlass" => raw.break_glass = w.boolean(&path, v),
            "allowedRegistries" => raw.allowed = w.strings(&path, v),
            "deniedRegistries" => raw.denied = w.strings(&path, v),
            "exemptImages" => raw.exempt_images = w.strings(&path, v),
            "exemptNamespaces" => raw.exempt_namespaces = w.strings(&path, v),
            "namespaces" => raw.namespaces = w.strings(&path, v),
            "excludeNamespaces" => raw.exclude_namespaces = w.strings(&path, v),
            "mutate" => {
                raw.server_wide.push("mutate");
                raw_mutate = w.mutate(&path, v)
            }
            "registryCredentials" => {
                raw.server_wide.push("registryCredentials");
                raw.registry_credentials =
                    w.string(&path, v).map(|s| (format!("{source}: {path}"), s))
            }
            "registries" => {
                raw.server_wide.push("registries");
                raw.registries = w.registries(&path, v)
            }
            "verifyImages" => raw.verify_images = Some((source.to_string(), v.clone())),
            _ => w.problem(
                &path,
                format!("unknown key (expected one of {})", KNOWN_KEYS.join(", ")),
            ),
        }
    }
    (raw, raw_mutate)
}

const KNOWN_KEYS: &[&str] = &[
    "verifyImages",
    "mode",
    "denyLatest",
    "requireDigest",
    "allowedRegistries",
    "deniedRegistries",
    "exemptImages",
    "exemptNamespaces",
    "namespaces",
    "excludeNamespaces",
    "breakGlass",
    "mutate",
    "registryCredentials",
    "registries",
];

/// Collects typed values out of JSON, recording type errors by path: the
/// one set of readers (and messages) for every part of the policy file.
pub(super) struct Walker<'a> {
    pub(super) source: &'a str,
    pub(super) problems: &'a mut Vec<String>,
}

impl Walker<'_> {
    fn problem(&mut self, path: &str, msg: impl fmt::Display) {
        self.problems
            .push(format!("{}: {path}: {msg}", self.source));
    }

    pub(super) fn boolean(&mut self, path: &str, v: &Value) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                self.problem(
                    path,
                    format!("expected true or false, found {}", type_name(other)),
                );
                None
            }
        }
    }

    fn string(&mut self, path: &str, v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            other => {
                self.problem(
                    path,
                    format!("expected a string, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// `registries`: registry -> {"ca": file, "plainHttp": bool}.
    fn registries(
        &mut self,
        path: &str,
        v: &Value,
    ) -> Vec<(String, String, Option<String>, Option<bool>)> {
        let mut out = Vec::new();
        let Some(map) = v.as_object() else {
            self.problem(
                path,
                format!(
                    "expected an object of registry: settings, found {}",
                    type_name(v)
                ),
            );
            return out;
        };
        for (registry, settings) in map {
            let at = format!("{path}.{registry}");
            let Some(obj) = settings.as_object() else {
                self.problem(
                    &at,
                    format!("expected an object, found {}", type_name(settings)),
                );
                continue;
            };
            let (mut ca, mut plain) = (None, None);
            for (k, v) in obj {
                let p = format!("{at}.{k}");
                match k.as_str() {
                    k if k.starts_with(COMMENT_PREFIX) => {}
                    "ca" => ca = self.string(&p, v),
                    "plainHttp" => plain = self.boolean(&p, v),
                    _ => self.problem(&p, "unknown key (expected ca, plainHttp)"),
                }
            }
            out.push((
                format!("{}: {at}", self.source),
                registry.clone(),
                ca,
                plain,
            ));
        }
        out
    }

    /// An array of strings; each element's path is kept for later errors.
    pub(super) fn strings(&mut self, path: &str, v: &Value) -> Vec<(String, String)> {
        let Value::Array(items) = v else {
            self.problem(
                path,
                format!("expected an array of strings, found {}", type_name(v)),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            if let Some(s) = self.string(&p, item) {
                out.push((format!("{}: {p}", self.source), s));
            }
        }
        out
    }
}

/// Describes a JSON value's type for error messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Compiles patterns; `None` if anything was wrong (all of it recorded).
fn build(raw: RawPolicy, problems: &mut Vec<String>) -> Option<Policy> {
    fn compile<T>(
        items: Vec<(String, String)>,
        parse: fn(&str) -> Result<T, String>,
        problems: &mut Vec<String>,
    ) -> Vec<T> {
        items
            .into_iter()
            .filter_map(|(origin, s)| {
                parse(&s)
                    .map_err(|e| problems.push(format!("{origin}: {e}")))
                    .ok()
            })
            .collect()
    }
    let before = problems.len();
    let mut policy = Policy {
        allowed_registries: compile(raw.allowed, RegistryPattern::parse, problems),
        denied_registries: compile(raw.denied, RegistryPattern::parse, problems),
        exempt_images: compile(raw.exempt_images, ImagePattern::parse, problems),
        exempt_namespaces: compile(raw.exempt_namespaces, NamespacePattern::parse, problems),
        namespaces: compile(raw.namespaces, NamespacePattern::parse, problems),
        exclude_namespaces: compile(raw.exclude_namespaces, NamespacePattern::parse, problems),
        ..Policy::default()
    };
    if let Some((origin, m)) = raw.mode {
        match m.as_str() {
            "enforce" => policy.mode = Mode::Enforce,
            "warn" => policy.mode = Mode::Warn,
            other => problems.push(format!(
                "{origin}: mode {other:?} is not \"enforce\" or \"warn\""
            )),
        }
    }
    if let Some(b) = raw.deny_latest {
        policy.deny_latest = b;
    }
    if let Some(b) = raw.require_digest {
        policy.require_digest = b;
    }
    if let Some(b) = raw.break_glass {
        policy.break_glass = b;
    }
    (problems.len() == before).then_some(policy)
}

/// Reads the credentials file and the registries' CA files.
fn build_registry(
    raw: &(Option<(String, String)>, Vec<RawRegistry>),
    problems: &mut Vec<String>,
) -> RegistryConfig {
    use rustls::pki_types::pem::PemObject;
    let mut out = RegistryConfig::default();
    if let Some((origin, path)) = &raw.0 {
        // Inline credentials are secrets: never printed, named instead.
        let shown = if is_inline(path) {
            "the inline registryCredentials"
        } else {
            path.as_str()
        };
        match file_or_inline(path, 1 << 20) {
            Ok(text) => match crate::credentials::Credentials::parse(&text) {
                Ok(c) => {
                    for u in &c.unsupported {
                        log::warn!("{shown}: {u}");
                    }
                    out.credentials = c;
                }
                Err(e) => problems.extend(e.into_iter().map(|p| format!("{origin}: {shown}: {p}"))),
            },
            Err(e) => problems.push(format!("{origin}: {e}")),
        }
    }
    for (origin, registry, ca, plain) in &raw.1 {
        if let Err(e) = crate::image_ref::validate_domain(registry) {
            problems.push(format!(
                "{origin}: {}",
                crate::image_ref::ParseError::describe(&e)
            ));
        }
        if *plain == Some(true) {
            if ca.is_some() {
                problems.push(format!(
                    "{origin}: a plain HTTP registry has no certificate to check; give ca or plainHttp, not both"
                ));
            }
            log::warn!(
                "{origin}: {registry} is spoken to over plain HTTP: its answers can be changed and its credentials and tokens read on the way"
            );
            out.plain_http.insert(registry.clone());
        }
        if let Some(ca) = ca {
            let shown = if is_inline(ca) {
                "the inline ca"
            } else {
                ca.as_str()
            };
            let certs: Vec<_> = match file_or_inline(ca, 1 << 20) {
                Ok(pem) => rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
                    .filter_map(Result::ok)
                    .collect(),
                Err(e) => {
                    // The file's own error: "cannot open: No such file".
                    problems.push(format!("{origin}: {e}"));
                    continue;
                }
            };
            if certs.is_empty() {
                problems.push(format!(
                    "{origin}: {shown}: no PEM certificate could be read"
                ));
            }
            out.cas.entry(registry.clone()).or_default().extend(certs);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::split_commas;
    use crate::mutate::PullPolicy;

    fn parse(text: &str) -> Result<Policy, Vec<String>> {
        let mut problems = Vec::new();
        let (raw, _) = parse_policy_text(text, "p.json", false, &mut problems);
        match build(raw, &mut problems) {
            Some(p) if problems.is_empty() => Ok(p),
            _ => Err(problems),
        }
    }

    /// One list of keys: the parser's (unknown keys are refused against
    /// it) is the one `--help` names and the reference documents, each key
    /// in its table.
    #[test]
    fn the_key_lists_agree_with_help_and_docs() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
        let help = match crate::cli::parse(&["check".to_string(), "--help".to_string()]) {
            Err(e) => e.output,
            Ok(_) => panic!("check --help printed no help"),
        };
        // The help is wrapped: one line of words first.
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        let listed = help
            .split("keys ")
            .nth(1)
            .and_then(|s| s.split(" (docs/policy.md)").next())
            .expect("--policy's help lists the keys");
        let mut in_help: Vec<&str> = listed.split(", ").collect();
        let mut known = KNOWN_KEYS.to_vec();
        in_help.sort_unstable();
        known.sort_unstable();
        assert_eq!(in_help, known, "check --help");
        let row = |key: &str| format!("\n| `{key}` |");
        let policy_doc = read("docs/policy.md");
        for key in KNOWN_KEYS.iter().chain(verify::ENTRY_KEYS) {
            assert!(
                policy_doc.contains(&row(key)),
                "docs/policy.md: no row for {key}"
            );
        }
        let mutate_doc = read("docs/migration.md");
        for key in mutations::MUTATE_KEYS {
            assert!(
                mutate_doc.contains(&row(key)),
                "docs/migration.md: no row for {key}"
            );
        }
    }

    #[test]
    fn full_file() {
        let p = parse(
            r#"{
              "// why": "comments are keys starting with //",
              "mode": "warn",
              "denyLatest": false,
              "requireDigest": true,
              "allowedRegistries": ["ghcr.io/acme", "*.gcr.io"],
              "deniedRegistries": ["docker.io"],
              "exemptImages": ["registry.k8s.io/pause:3.9"],
              "exemptNamespaces": ["kube-system"],
              "breakGlass": true
            }"#,
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Warn);
        assert!(!p.deny_latest && p.require_digest && p.break_glass);
        assert_eq!(p.allowed_registries.len(), 2);
        assert_eq!(p.denied_registries[0].raw, "docker.io");
        assert_eq!(p.exempt_images.len(), 1);
        assert_eq!(p.exempt_namespaces.len(), 1);
    }

    #[test]
    fn empty_file_is_the_default_policy() {
        let p = parse("{}").unwrap();
        assert!(p.deny_latest && !p.require_digest && !p.break_glass);
        assert_eq!(p.mode, Mode::Enforce);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let problems = parse(
            r#"{
              "mode": "audit",
              "denyLatest": "yes",
              "allowedRegistries": ["ghcr.io", 7, "ghcr.io/Acme"],
              "deniedRegistries": "docker.io",
              "exemptNamespaces": ["Kube"],
              "allowRegistries": []
            }"#,
        )
        .unwrap_err();
        let expected = [
            "p.json: $.mode: mode \"audit\" is not \"enforce\" or \"warn\"",
            "p.json: $.denyLatest: expected true or false, found a string",
            "p.json: $.allowedRegistries[1]: expected a string, found a number",
            "p.json: $.allowedRegistries[2]: \"ghcr.io/Acme\": path component",
            "p.json: $.deniedRegistries: expected an array of strings, found a string",
            "p.json: $.exemptNamespaces[0]: \"Kube\" is not a namespace name",
            "p.json: $.allowRegistries: unknown key",
        ];
        for e in expected {
            assert!(
                problems.iter().any(|p| p.starts_with(e)),
                "missing {e:?} in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    }

    #[test]
    fn duplicate_keys_are_problems_with_the_others() {
        let problems = parse(
            r#"{"allowedRegistries":["ghcr.io"],"allowedRegistries":[],"mode":"enforce","mode":"warn",
                "mutate":{"imagePullPolicy":"Always","imagePullPolicy":"Never"},"denyLatest":1}"#,
        )
        .unwrap_err();
        for e in [
            "p.json: $.allowedRegistries: the key is given twice",
            "p.json: $.mode: the key is given twice",
            "p.json: $.mutate.imagePullPolicy: the key is given twice",
            "p.json: $.denyLatest: expected true or false",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(e)),
                "missing {e:?} in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), 4, "{problems:#?}");
    }

    #[test]
    fn mirrored_names_are_judged_upstream_and_useless_entries_refused() {
        let r = rules(
            r#"{"allowedRegistries": ["docker.io/library", "registry.local:5000"], "deniedRegistries": ["quay.io", "docker.io/evilcorp"],
                "mutate": {"rewriteRegistry": "mirror.example.com", "registryMirrors": {"ghcr.io": "m2.example.com/ghcr"}}}"#,
            PolicyFlags::default(),
            &[],
        )
        .unwrap();
        let verdict = |image: &str| {
            let d = r.policy.decide(&crate::policy::Request {
                images: vec![crate::policy::ImageInput::bare(image)],
                ..Default::default()
            });
            (
                d.allowed,
                d.images[0].normalized.clone().unwrap_or_default(),
            )
        };
        // (image, allowed, judged as)
        for (image, allowed, upstream) in [
            (
                "mirror.example.com/quay.io/evilcorp/miner:1",
                false,
                "quay.io/evilcorp/miner:1",
            ),
            (
                "mirror.example.com/evilcorp/miner:1",
                false,
                "docker.io/evilcorp/miner:1",
            ),
            (
                "mirror.example.com/library/nginx:1.27",
                true,
                "docker.io/library/nginx:1.27",
            ),
            (
                "MIRROR.example.com:443/library/nginx:1.27",
                true,
                "docker.io/library/nginx:1.27",
            ),
            (
                "mirror.example.com/registry.local_5000/app:1",
                true,
                "registry.local:5000/app:1",
            ),
            (
                "m2.example.com/ghcr/acme/app:1",
                false,
                "ghcr.io/acme/app:1",
            ),
            (
                "m2.example.com/other/app:1",
                false,
                "m2.example.com/other/app:1",
            ), // not the mirror
        ] {
            assert_eq!(verdict(image), (allowed, upstream.to_string()), "{image}");
        }
        let problems = rules(
            r#"{"allowedRegistries": ["mirror.example.com", "m2.example.com"], "deniedRegistries": ["m2.example.com/ghcr/evil"],
                "mutate": {"rewriteRegistry": "mirror.example.com", "registryMirrors": {"ghcr.io": "m2.example.com/ghcr", "quay.io": "mirror.example.com/quay"}}}"#,
            PolicyFlags::default(),
            &[],
        )
        .unwrap_err()
        .problems;
        for e in [
            "mutate: targets \"mirror.example.com/quay\" and \"mirror.example.com\" overlap",
            "policy \"policy\": allowedRegistries: \"mirror.example.com\" names a registry the mutations fill",
            "policy \"policy\": deniedRegistries: \"m2.example.com/ghcr/evil\" names a registry",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(e)),
                "missing {e:?} in {problems:#?}"
            );
        }
        // m2.example.com as a whole is more than the mirror: allowed.
        assert_eq!(problems.len(), 3, "{problems:#?}");
        // A flat rewrite cannot be read back: its target is named as written.
        assert!(
            rules(
                r#"{"allowedRegistries": ["mirror.example.com"], "mutate": {"rewriteRegistry": "mirror.example.com", "rewriteLayout": "flat"}}"#,
                PolicyFlags::default(),
                &[],
            )
            .is_ok()
        );
    }

    #[test]
    fn a_pull_secret_given_twice_is_refused() {
        let problems = rules(
            r#"{"mutate": {"imagePullSecrets": ["regcred", "other", "regcred"]}}"#,
            PolicyFlags::default(),
            &[],
        )
        .unwrap_err()
        .problems;
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains("\"regcred\" is given twice"),
            "{problems:#?}"
        );
    }

    #[test]
    fn registry_settings_are_checked_with_the_rest() {
        let problems = parse_rules_problems(
            r#"{"registryCredentials": "/nonexistent/config.json",
                "registries": {"registry.local:5000": {"ca": "/nonexistent/ca.crt", "plainHttp": true, "x": 1},
                               "bad host": {}}}"#,
        );
        for e in [
            "$.registryCredentials: /nonexistent/config.json: cannot open",
            "$.registries.registry.local:5000.x: unknown key",
            "give ca or plainHttp, not both",
            "/nonexistent/ca.crt: cannot open",
            "$.registries.bad host: registry host",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(e)),
                "missing {e:?} in {problems:#?}"
            );
        }
    }

    fn parse_rules_problems(text: &str) -> Vec<String> {
        rules(text, PolicyFlags::default(), &[])
            .unwrap_err()
            .problems
    }

    #[test]
    fn not_json_or_not_an_object() {
        assert!(parse("{").unwrap_err()[0].starts_with("p.json: not valid JSON"));
        let yaml = parse("allowedRegistries:\n- ghcr.io\n").unwrap_err();
        assert!(
            yaml[0].contains("for YAML, name the file *.yaml"),
            "{yaml:?}"
        );
        assert_eq!(
            parse("[]").unwrap_err(),
            vec!["p.json: $: expected an object, found an array"]
        );
    }

    /// `threshold`: at least one and at most the signers listed; a key or
    /// an identity listed twice is refused (it would count twice); the
    /// threshold is part of what a cached verdict was reached under.
    #[test]
    fn thresholds_are_checked() {
        let key = format!(
            "{}/tests/fixtures/cosign/keyed-p384/cosign.pub",
            env!("CARGO_MANIFEST_DIR")
        );
        let entry = |extra: &str| {
            format!(
                r#"{{"verifyImages": [{{"images": ["*"], "ignoreTlog": true, "keys": [{key:?}]{extra}}}]}}"#
            )
        };
        let id = r#"{"issuer": "https://i.example", "subject": "s@example.com"}"#;
        for (extra, want) in [
            (
                r#", "threshold": 2"#.to_string(),
                "threshold 2 is more than the 1 signers listed",
            ),
            (
                r#", "threshold": 0"#.to_string(),
                "expected a number of signers from 1 to 64",
            ),
            (
                format!(r#", "keys": [{key:?}, {key:?}]"#),
                "is the key of keys[0] again",
            ),
        ] {
            let text =
                entry(&extra).replacen(&format!(r#""keys": [{key:?}], "keys""#), r#""keys""#, 1);
            let e = rules(&text, PolicyFlags::default(), &[]).unwrap_err();
            assert!(e.problems.iter().any(|p| p.contains(want)), "{want}: {e}");
        }
        let twice = format!(
            r#"{{"verifyImages": [{{"images": ["*"], "trustedRoot": {:?}, "identities": [{id}, {id}]}}]}}"#,
            format!(
                "{}/tests/fixtures/sigstore/trusted-roots/public-good.json",
                env!("CARGO_MANIFEST_DIR")
            )
        );
        let e = rules(&twice, PolicyFlags::default(), &[]).unwrap_err();
        assert!(
            e.problems[0].contains("the same identity as identities[0]"),
            "{e}"
        );
        let one = rules(&entry(""), PolicyFlags::default(), &[]).unwrap();
        let with_id = format!(
            r#"{{"verifyImages": [{{"images": ["*"], "trustedRoot": {:?}, "keys": [{key:?}], "identities": [{id}], "threshold": 2}}]}}"#,
            format!(
                "{}/tests/fixtures/sigstore/trusted-roots/public-good.json",
                env!("CARGO_MANIFEST_DIR")
            )
        );
        let two = rules(&with_id, PolicyFlags::default(), &[]).unwrap();
        assert_eq!((one.verify[0].threshold, two.verify[0].threshold), (1, 2));
        let other = rules(
            &with_id.replace(r#""threshold": 2"#, r#""threshold": 1"#),
            PolicyFlags::default(),
            &[],
        )
        .unwrap();
        assert_ne!(
            two.verify[0].trust.fingerprint,
            other.verify[0].trust.fingerprint
        );
    }

    /// A folder of files, made for one test and removed after.
    struct Folder(std::path::PathBuf);

    impl Folder {
        fn new(name: &str, files: &[(&str, &str)]) -> Folder {
            let dir = std::env::temp_dir().join(format!("ib-set-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            for (file, text) in files {
                let path = dir.join(file);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            }
            Folder(dir)
        }

        fn load(&self, flags: PolicyFlags) -> Result<Rules, ConfigError> {
            PolicyFlags {
                file: Some(self.0.clone()),
                ..flags
            }
            .load_rules_with_env(&|_| None)
        }
    }

    impl Drop for Folder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A policy directory: its JSON and YAML files, in name order, named
    /// by file; hidden files, folders (a ConfigMap's `..data`) and other
    /// extensions are not policies.
    #[test]
    fn a_directory_is_a_policy_set() {
        let key = format!(
            "{}/tests/fixtures/cosign/keyed-p384/cosign.pub",
            env!("CARGO_MANIFEST_DIR")
        );
        let signed = format!(
            "mode: warn\nnamespaces: [prod]\nverifyImages:\n- images: [\"ghcr.io/acme/*\"]\n  ignoreTlog: true\n  keys: [{key:?}]\n"
        );
        let dir = Folder::new(
            "set",
            &[
                ("b-signed.yaml", &signed),
                (
                    "a-base.json",
                    r#"{"allowedRegistries": ["ghcr.io"], "verifyImages": [{"images": ["ghcr.io/x/*"], "ignoreTlog": true, "keys": ["KEY"]}]}"#,
                ),
                (".hidden.json", "not even JSON"),
                ("..data/c.json", "{}"),
                ("notes.txt", "not a policy"),
                ("c.yml", "excludeNamespaces: [kube-system]\n"),
            ],
        );
        std::fs::write(
            dir.0.join("a-base.json"),
            std::fs::read_to_string(dir.0.join("a-base.json"))
                .unwrap()
                .replace("KEY", &key),
        )
        .unwrap();
        let rules = dir.load(PolicyFlags::default()).unwrap();
        let names: Vec<&str> = rules.policy.policies.iter().map(|p| &*p.name).collect();
        assert_eq!(names, ["a-base", "b-signed", "c"]);
        let b = &rules.policy.policies[1];
        assert_eq!(b.mode, Mode::Warn);
        assert!(b.applies_to(Some("prod")) && !b.applies_to(Some("dev")));
        // Entries are numbered across the set, as the verifier's rules are.
        assert_eq!(rules.verify.len(), 2);
        assert_eq!(b.verify_images[0].index, 1);
        assert_eq!(rules.policy.policies[0].verify_images[0].index, 0);
        assert_eq!(rules.source_sha256.len(), 12);
        // --mode is every policy's; rule flags belong in a file.
        let all_warn = dir
            .load(PolicyFlags {
                mode: Some("warn".into()),
                ..PolicyFlags::default()
            })
            .unwrap();
        assert!(
            all_warn
                .policy
                .policies
                .iter()
                .all(|p| p.mode == Mode::Warn)
        );
        let e = dir
            .load(PolicyFlags {
                allow_registries: vec!["quay.io".into()],
                ..PolicyFlags::default()
            })
            .unwrap_err();
        assert!(
            e.problems[0].contains("apply to a single policy file"),
            "{e}"
        );
    }

    /// A mounted ConfigMap: the policies are those of the `..data`
    /// generation in force, read there (a swap between two reads cannot
    /// mix generations), even before the kubelet links a new key.
    #[test]
    fn a_configmap_folder_is_read_in_its_generation() {
        use std::os::unix::fs::symlink;
        let dir = Folder::new(
            "configmap",
            &[
                ("..gen1/a.json", r#"{"deniedRegistries": ["evil.io"]}"#),
                ("..gen2/a.json", "{}"),
                ("..gen2/b.json", r#"{"deniedRegistries": ["evil.io"]}"#),
            ],
        );
        symlink("..gen2", dir.0.join("..data")).unwrap();
        // Only a.json is linked at the top so far.
        symlink("..data/a.json", dir.0.join("a.json")).unwrap();
        let files = policy_files(&dir.0).unwrap();
        let shown: Vec<String> = files
            .iter()
            .map(|p| {
                p.strip_prefix(std::fs::canonicalize(&dir.0).unwrap())
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(shown, ["..gen2/a.json", "..gen2/b.json"]);
        let rules = dir.load(PolicyFlags::default()).unwrap();
        let names: Vec<&str> = rules.policy.policies.iter().map(|p| &*p.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(rules.policy.policies[1].denied_registries.len(), 1);
    }

    /// Server-wide keys in two files, two files of one name, an empty
    /// folder, and YAML that is not plain data: each is a problem naming
    /// its file, all reported at once.
    #[test]
    fn a_broken_set_reports_every_file() {
        let dir = Folder::new(
            "broken",
            &[
                (
                    "a.json",
                    r#"{"registries": {"r.example": {"plainHttp": true}}}"#,
                ),
                ("b.yaml", "mutate:\n  rewriteRegistry: mirror.example\n"),
                ("c.yaml", "base: &b [ghcr.io]\nallowedRegistries: *b\n"),
                ("d.yaml", "mode: warn\nmode: enforce\n"),
                ("e.yaml", "mode: warn\n---\nmode: enforce\n"),
                ("f.yaml", "verifyImages:\n- images: [x]\n  keyz: []\n"),
            ],
        );
        let e = dir.load(PolicyFlags::default()).unwrap_err().problems;
        let find = |file: &str, what: &str| {
            assert!(
                e.iter().any(|p| p.contains(file) && p.contains(what)),
                "no {what:?} for {file} in {e:#?}"
            )
        };
        find("b.yaml", "a.json gives server-wide keys already");
        find("c.yaml", "YAML anchors (&name) are not supported");
        find("d.yaml", "$: the key \"mode\" is given twice");
        find("e.yaml", "holds 2 YAML documents");
        find("f.yaml", "$.verifyImages[0].keyz: unknown key");
        let root = std::fs::read_to_string(format!(
            "{}/tests/fixtures/sigstore/trusted-roots/public-good.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let misplaced = Folder::new(
            "root-in-set",
            &[("base.json", "{}"), ("trusted_root.json", &root)],
        );
        let e = misplaced.load(PolicyFlags::default()).unwrap_err();
        assert!(
            e.problems[0].contains("not a policy: keep keys and trusted roots out"),
            "{e}"
        );
        let twins = Folder::new("twins", &[("a.json", "{}"), ("a.yaml", "{}")]);
        let e = twins.load(PolicyFlags::default()).unwrap_err();
        assert!(e.problems[0].contains("are both policy \"a\""), "{e}");
        let empty = Folder::new("empty", &[("readme.md", "")]);
        let e = empty.load(PolicyFlags::default()).unwrap_err();
        assert!(e.problems[0].contains("holds no policy file"), "{e}");
    }

    #[test]
    fn flags_merge_over_file() {
        let dir = std::env::temp_dir().join(format!("ib-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("policy.json");
        std::fs::write(
            &file,
            r#"{"allowedRegistries": ["ghcr.io"], "mode": "warn"}"#,
        )
        .unwrap();
        let flags = PolicyFlags {
            file: Some(file.clone()),
            allow_registries: vec!["quay.io".into()],
            allow_latest: true,
            mode: Some("enforce".into()),
            ..PolicyFlags::default()
        };
        let p = flags.load().unwrap().policies.remove(0);
        let raws: Vec<&str> = p
            .allowed_registries
            .iter()
            .map(|r| r.raw.as_str())
            .collect();
        assert_eq!(raws, ["ghcr.io", "quay.io"]);
        assert!(!p.deny_latest);
        assert_eq!(p.mode, Mode::Enforce);

        let bad = PolicyFlags {
            file: Some(dir.join("missing.json")),
            deny_registries: vec!["http://x".into()],
            ..PolicyFlags::default()
        };
        let e = bad.load().unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
        assert!(e.problems[0].contains("missing.json: cannot open"));
        assert!(e.problems[1].starts_with("--deny-registry: \"http://x\""));
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn rules(text: &str, flags: PolicyFlags, env: &[(&str, &str)]) -> Result<Rules, ConfigError> {
        // One folder per call: tests run in parallel.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ib-rules-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("policy.json");
        std::fs::write(&file, text).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let r = PolicyFlags {
            file: Some(file),
            ..flags
        }
        .load_rules_with_env(&lookup);
        std::fs::remove_dir_all(dir).unwrap();
        r
    }

    #[test]
    fn mutate_section_of_the_file() {
        let r = rules(
            r#"{"mutate": {
                "// note": "comments work here too",
                "rewriteRegistry": "mirror.example.com/all",
                "registryMirrors": {"index.docker.io": "mirror.example.com/hub", "GHCR.io": "mirror.example.com/ghcr"},
                "ignoredRegistries": ["registry.k8s.io"],
                "imagePullSecrets": ["regcred", "other"],
                "appendImagePullSecrets": true,
                "imagePullPolicy": "IfNotPresent",
                "defaultStorageClass": "fast-ssd",
                "excludeNamespaces": ["kube-*"],
                "mutateTemplates": true
            }}"#,
            PolicyFlags::default(),
            &[],
        )
        .unwrap();
        let m = &r.mutate;
        assert_eq!(
            m.rewrite_registry.as_ref().unwrap().raw,
            "mirror.example.com/all"
        );
        let mut froms: Vec<&str> = m.registry_mirrors.iter().map(|(f, _)| f.as_str()).collect();
        froms.sort_unstable();
        assert_eq!(froms, ["docker.io", "ghcr.io"]);
        assert_eq!(m.ignored_registries.len(), 1);
        assert_eq!(m.image_pull_secrets, ["regcred", "other"]);
        assert!(m.append_pull_secrets && m.mutate_templates);
        assert_eq!(m.image_pull_policy, Some(PullPolicy::IfNotPresent));
        assert_eq!(m.default_storage_class.as_deref(), Some("fast-ssd"));
        assert_eq!(m.exclude_namespaces.len(), 1);
    }

    #[test]
    fn mutate_problems_are_all_reported_with_paths() {
        let e = rules(
            r#"{"mutate": {
                "rewriteRegistry": "mirror",
                "registryMirrors": {"docker.io/library": "m.example.com", "ghcr.io": 5},
                "imagePullSecrets": ["Bad_Name"],
                "imagePullPolicy": "Sometimes",
                "defaultStorageClass": "",
                "excludeNamespaces": "kube-system",
                "bogus": 1
            }}"#,
            PolicyFlags::default(),
            &[],
        )
        .unwrap_err();
        for want in [
            "$.mutate.rewriteRegistry: \"mirror\": the target must start with a registry host",
            "$.mutate.registryMirrors.docker.io/library: \"docker.io/library\": a mirrored registry is a host[:port]",
            "$.mutate.registryMirrors.ghcr.io: expected a string",
            "$.mutate.imagePullSecrets[0]: \"Bad_Name\" is not a Kubernetes object name",
            "$.mutate.imagePullPolicy: \"Sometimes\" is not Always",
            "$.mutate.defaultStorageClass: \"\" is not a Kubernetes object name",
            "$.mutate.excludeNamespaces: expected an array",
            "$.mutate.bogus: unknown key",
        ] {
            assert!(
                e.problems.iter().any(|p| p.contains(want)),
                "missing {want} in {e}"
            );
        }
        assert_eq!(e.problems.len(), 8, "{e}");
    }

    #[test]
    fn precedence_is_flags_then_environment_then_file() {
        let file = r#"{"mutate": {"rewriteRegistry": "file.example.com", "imagePullSecrets": ["from-file"], "defaultStorageClass": "file-class"}}"#;
        let env = [
            ("REGISTRY", "env.example.com"),
            ("IMAGE_PULL_SECRET", "env-a,env-b"),
            ("IMAGE_PULL_SECRET_APPEND", "true"),
            ("FORCE_IMAGE_PULL_POLICY", "true"),
            ("IMAGE_PULL_POLICY_TO_FORCE", "Never"),
            ("EXCLUDE_NAMESPACES", "kube-system,kube-public"),
            ("IGNORED_REGISTRIES", "registry.k8s.io"),
        ];
        // Outside the drop-in mode the variables are not read at all.
        let r = rules(file, PolicyFlags::default(), &env).unwrap().mutate;
        assert_eq!(r.rewrite_registry.unwrap().raw, "file.example.com");
        let legacy = || PolicyFlags {
            legacy_env: true,
            ..PolicyFlags::default()
        };
        let r = rules(file, legacy(), &env).unwrap().mutate;
        assert_eq!(r.rewrite_registry.unwrap().raw, "env.example.com");
        assert_eq!(r.image_pull_secrets, ["env-a", "env-b"]);
        assert!(r.append_pull_secrets);
        assert_eq!(r.image_pull_policy, Some(PullPolicy::Never));
        assert_eq!(r.default_storage_class.as_deref(), Some("file-class"));
        assert_eq!(r.exclude_namespaces.len(), 2);
        assert_eq!(r.ignored_registries.len(), 1);
        let flags = PolicyFlags {
            rewrite_registry: Some("flag.example.com".into()),
            image_pull_secrets: vec!["from-flag".into()],
            ..legacy()
        };
        let r = rules(file, flags, &env).unwrap().mutate;
        assert_eq!(r.rewrite_registry.unwrap().raw, "flag.example.com");
        assert_eq!(r.image_pull_secrets, ["from-flag"]);
        // FORCE_IMAGE_PULL_POLICY alone forces Always; false forces nothing.
        let r = rules("{}", legacy(), &[("FORCE_IMAGE_PULL_POLICY", "true")]).unwrap();
        assert_eq!(r.mutate.image_pull_policy, Some(PullPolicy::Always));
        let r = rules(
            "{}",
            legacy(),
            &[("FORCE_IMAGE_PULL_POLICY", "false"), ("REGISTRY", "")],
        )
        .unwrap();
        assert_eq!(r.mutate.image_pull_policy, None);
        assert!(r.mutate.rewrite_registry.is_none(), "empty means unset");
        let e = rules("{}", legacy(), &[("IMAGE_PULL_SECRET_APPEND", "maybe")]).unwrap_err();
        assert_eq!(
            e.problems,
            ["environment IMAGE_PULL_SECRET_APPEND: \"maybe\" is not true or false"]
        );
    }

    #[test]
    fn comma_lists() {
        let v = split_commas(&["a,b".into(), " c ,".into()]);
        assert_eq!(v, ["a", "b", "c"]);
    }

    /// `verifyImages` read strictly: a good entry loads (keys, root,
    /// identities); every problem of a bad one is reported at once.
    #[test]
    fn verify_images_are_read_strictly() {
        let f = |p: &str| format!("{}/tests/fixtures/{p}", env!("CARGO_MANIFEST_DIR"));
        let good = format!(
            r#"{{"verifyImages": [{{"images": ["ghcr.io/acme/*"], "trustedRoot": {:?}, "keys": [{:?}],
                "identities": [{{"issuer": "https://token.actions.githubusercontent.com", "subjectRegExp": "https://github.com/acme/.+"}}],
                "ignoreSCT": false, "verifyTags": true, "onRegistryError": "deny", "// why": "a comment"}}]}}"#,
            f("sigstore/trusted-roots/public-good.json"),
            f("cosign/keyed-p384/cosign.pub")
        );
        let r = rules(&good, PolicyFlags::default(), &[]).unwrap();
        assert_eq!(r.policy.policies[0].verify_images.len(), 1);
        assert!(r.policy.policies[0].verify_images[0].verify_tags);
        assert_eq!(r.verify[0].trust.keys.len(), 1);
        assert_eq!(r.verify[0].trust.identities.len(), 1);
        assert!(r.verify[0].trust.root.is_some());
        assert!(r.verify[0].trust.fingerprint.starts_with("sha256:"));
        assert_eq!(
            r.verify[0].verified_ttl,
            std::time::Duration::from_secs(86_400)
        );
        let problems = parse_rules_problems(&format!(
            r#"{{"verifyImages": [
                {{"images": ["ghcr.io/acme/*"], "keys": ["/nonexistent.pub"], "ignoreTLog": true, "verifiedCacheSeconds": -1}},
                {{"images": [], "identities": [{{"issuer": "x", "subject": "a", "subjectRegExp": "b"}}, {{"issuer": "x", "subjectRegexp": "b"}}, {{"issuerRegExp": "(", "subject": "a"}}]}},
                {{"images": ["*"], "keys": [{:?}]}},
                {{"images": ["*"], "identities": [{{"issuer": "x", "subject": "y"}}], "trustedRoot": {:?}}},
                "not an entry",
                {{"images": ["*"], "identities": [{{"issuer": "x", "subject": "y"}}]}}
            ]}}"#,
            f("cosign/keyed-p384/payload.json"),
            f("cosign/keyed-p384/cosign.pub")
        ));
        for want in [
            "$.verifyImages[0].ignoreTLog: unknown key",
            "$.verifyImages[0].keys: /nonexistent.pub: cannot open",
            "$.verifyImages[0].verifiedCacheSeconds: expected a number of seconds",
            "$.verifyImages[1]: no images",
            "$.verifyImages[1].identities[0]: give exactly one",
            "$.verifyImages[1].identities[1].subjectRegexp: unknown key",
            "$.verifyImages[1].identities[2].issuerRegExp: \"(\" is not a regular expression",
            "$.verifyImages[5]: identities need a trustedRoot",
            "no PEM PUBLIC KEY",
            "$.verifyImages[2]: keys need a trustedRoot",
            "$.verifyImages[3].trustedRoot",
            "$.verifyImages[4]: expected an object",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(want)),
                "{want:?} in {problems:#?}"
            );
        }
        // A bad key file or pattern is one problem, without follow-ons.
        for unwanted in [
            "$.verifyImages[0]: neither keys nor identities",
            "$.verifyImages[1].identities[2]: give exactly one",
        ] {
            assert!(
                !problems.iter().any(|p| p.contains(unwanted)),
                "{unwanted:?} in {problems:#?}"
            );
        }
        assert!(
            problems.iter().all(|p| !p.contains('\n')),
            "one line each: {problems:#?}"
        );
    }

    /// Attestation items and pinned extensions: a good entry loads with
    /// its aliases resolved and its conditions compiled; each mistake is
    /// reported with its path (and a condition's with its position).
    #[test]
    fn attestations_and_extensions_are_read_strictly() {
        let root = format!(
            "{}/tests/fixtures/sigstore/trusted-roots/public-good.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let good = format!(
            r#"{{"verifyImages": [{{"images": ["ghcr.io/acme/*"], "trustedRoot": {root:?},
                "identities": [{{"issuer": "https://token.actions.githubusercontent.com", "subjectRegExp": "https://github.com/acme/.+",
                                 "extensions": {{"sourceRepositoryURI": "https://github.com/acme/app", "sourceRepositoryRef": "refs/heads/main"}}}}],
                "attestations": [
                  {{"predicateType": "slsaprovenance", "condition": "predicate.buildDefinition.externalParameters.workflow.repository == 'https://github.com/acme/app'"}},
                  {{"predicateType": "https://example.com/custom/v1"}}]}}]}}"#
        );
        let r = rules(&good, PolicyFlags::default(), &[]).unwrap();
        let a = &r.verify[0].attestations;
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].label, "verifyImages[0].attestations[0]");
        assert_eq!(
            a[0].predicate_types,
            [
                "https://slsa.dev/provenance/v0.2",
                "https://slsa.dev/provenance/v1"
            ]
        );
        assert!(a[0].condition.is_some() && a[1].condition.is_none());
        assert_eq!(r.verify[0].trust.identities[0].extensions.len(), 2);
        // Another condition is another cache key.
        let other = rules(
            &good.replace("acme/app'", "acme/app2'"),
            PolicyFlags::default(),
            &[],
        )
        .unwrap();
        assert_ne!(
            r.verify[0].trust.fingerprint,
            other.verify[0].trust.fingerprint
        );
        let problems = parse_rules_problems(&format!(
            r#"{{"verifyImages": [{{"images": ["*"], "trustedRoot": {root:?},
                "identities": [{{"issuer": "x", "subject": "y", "extensions": {{"sourceRepository": "a", "buildTrigger": ""}}}}],
                "attestations": [
                  {{"predicateType": "slsa"}},
                  {{"predicateType": "vuln", "condition": "predicate.x >"}},
                  {{"predicateType": "vuln", "condition": "predicate.a.all(x, predicate.a.all(y, x == y))"}},
                  {{"condition": "true"}},
                  {{"predicateType": "vuln", "keys": ["/nonexistent.pub"], "typo": 1}},
                  {{"predicateType": "vuln", "identities": [{{"issuer": "x", "subject": "y"}}, {{"issuer": "x", "subject": "y"}}]}}]}}]}}"#
        ));
        for want in [
            "identities[0].extensions.sourceRepository: unknown certificate extension (expected one of buildSignerURI",
            "identities[0].extensions.buildTrigger: expected a non-empty string",
            "attestations[0].predicateType: \"slsa\" is neither a predicate type URI nor one of slsaprovenance",
            "attestations[1].condition: the condition does not parse: at 1:",
            "attestations[2].condition: the condition could cost",
            "attestations[3]: no predicateType",
            "attestations[4].keys: /nonexistent.pub: cannot open",
            "attestations[4].typo: unknown key",
            "attestations[5].identities[1]: the same identity as identities[0]",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(want)),
                "{want:?} in {problems:#?}"
            );
        }
    }
}
