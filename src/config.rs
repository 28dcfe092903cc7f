//! Raw flags and the JSON policy file become a validated [`Policy`].
//!
//! Every problem is collected and reported at once, each with the JSON path
//! (`$.allowedRegistries[2]`) or flag that caused it, so a broken file is
//! fixed in one round. Flags are merged over the file: list flags add
//! entries, switches override. This module reads files; it does not watch
//! them (the server's reloader does).

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::policy::{ImagePattern, Mode, NamespacePattern, Policy, RegistryPattern};

/// A policy file larger than this is surely a mistake (a wrong path).
const POLICY_FILE_MAX: u64 = 4 * 1024 * 1024;

/// Keys starting with this are comments and ignored, at any level.
pub const COMMENT_PREFIX: &str = "//";

/// The policy flags shared by `check` and `serve`, after comma lists were
/// split. Built by `cli.rs`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyFlags {
    pub file: Option<PathBuf>,
    pub allow_registries: Vec<String>,
    pub deny_registries: Vec<String>,
    pub require_digest: bool,
    pub allow_latest: bool,
    pub mode: Option<String>,
    pub exempt_namespaces: Vec<String>,
    pub exempt_images: Vec<String>,
    pub break_glass: bool,
}

/// Everything wrong with a configuration, one problem per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<String>,
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

impl ConfigError {
    pub fn one(problem: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![problem.into()],
        }
    }
}

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
}

impl PolicyFlags {
    /// Reads the policy file (if any), merges the flags and validates all.
    pub fn load(&self) -> Result<Policy, ConfigError> {
        let mut problems = Vec::new();
        let mut raw = RawPolicy::default();
        if let Some(path) = &self.file {
            match read_limited(path, POLICY_FILE_MAX) {
                Ok(text) => {
                    raw = parse_policy_text(&text, &path.display().to_string(), &mut problems)
                }
                Err(e) => problems.push(e),
            }
        }
        self.merge_into(&mut raw);
        build(raw, &mut problems).ok_or(ConfigError { problems })
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

/// Reads a whole file, refusing anything larger than `max` bytes.
pub fn read_limited(path: &Path, max: u64) -> Result<String, String> {
    use std::io::Read;
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("{shown}: cannot open: {e}"))?;
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{shown}: cannot read: {e}"))?;
    if text.len() as u64 > max {
        return Err(format!("{shown}: larger than {max} bytes"));
    }
    Ok(text)
}

/// Parses the policy file's JSON, recording every problem with its path.
fn parse_policy_text(text: &str, source: &str, problems: &mut Vec<String>) -> RawPolicy {
    let mut raw = RawPolicy::default();
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            problems.push(format!("{source}: not valid JSON: {e}"));
            return raw;
        }
    };
    let Some(obj) = value.as_object() else {
        problems.push(format!(
            "{source}: $: expected an object, found {}",
            type_name(&value)
        ));
        return raw;
    };
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
            _ => w.problem(
                &path,
                format!("unknown key (expected one of {})", KNOWN_KEYS.join(", ")),
            ),
        }
    }
    raw
}

const KNOWN_KEYS: &[&str] = &[
    "mode",
    "denyLatest",
    "requireDigest",
    "allowedRegistries",
    "deniedRegistries",
    "exemptImages",
    "exemptNamespaces",
    "breakGlass",
];

/// Collects typed values out of JSON, recording type errors by path.
struct Walker<'a> {
    source: &'a str,
    problems: &'a mut Vec<String>,
}

impl Walker<'_> {
    fn problem(&mut self, path: &str, msg: impl fmt::Display) {
        self.problems
            .push(format!("{}: {path}: {msg}", self.source));
    }

    fn boolean(&mut self, path: &str, v: &Value) -> Option<bool> {
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

    /// An array of strings; each element's path is kept for later errors.
    fn strings(&mut self, path: &str, v: &Value) -> Vec<(String, String)> {
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
    let mut policy = Policy {
        allowed_registries: compile(raw.allowed, RegistryPattern::parse, problems),
        denied_registries: compile(raw.denied, RegistryPattern::parse, problems),
        exempt_images: compile(raw.exempt_images, ImagePattern::parse, problems),
        exempt_namespaces: compile(raw.exempt_namespaces, NamespacePattern::parse, problems),
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
    problems.is_empty().then_some(policy)
}

/// Splits repeatable flag values on commas (`--allow-registry a,b`).
pub fn split_commas(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, Vec<String>> {
        let mut problems = Vec::new();
        let raw = parse_policy_text(text, "p.json", &mut problems);
        build(raw, &mut problems).ok_or(problems)
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
    fn not_json_or_not_an_object() {
        assert!(parse("{").unwrap_err()[0].starts_with("p.json: not valid JSON"));
        assert_eq!(
            parse("[]").unwrap_err(),
            vec!["p.json: $: expected an object, found an array"]
        );
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
        let p = flags.load().unwrap();
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

    #[test]
    fn comma_lists() {
        let v = split_commas(&["a,b".into(), " c ,".into()]);
        assert_eq!(v, ["a", "b", "c"]);
    }
}
