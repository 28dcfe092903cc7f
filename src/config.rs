//! Raw flags and the JSON policy file become a validated [`Policy`].
//!
//! Every problem is collected and reported at once, each with the JSON path
//! (`$.allowedRegistries[2]`) or flag that caused it, so a broken file is
//! fixed in one round. Flags are merged over the file: list flags add
//! entries, switches override. This module reads files; it does not watch
//! them (the server's reloader does).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Defaults of `serve`, each with why.
pub mod defaults {
    use std::time::Duration;
    /// kube-image-bouncer's port, so its manifests work unchanged.
    pub const PORT: u16 = 1323;
    /// Enough for the apiserver's connection pool and a thousand idle
    /// clients; each costs a parked thread with a 256 KiB stack.
    pub const MAX_CONNECTIONS: usize = 4096;
    /// Reviews are tiny CPU jobs; more workers than cores only queue.
    pub const MIN_WORKERS: usize = 2;
    pub const MAX_WORKERS: usize = 1024;
    /// The apiserver caps objects at about 3 MB and an UPDATE review holds
    /// two of them.
    pub const MAX_BODY: usize = 7 * 1024 * 1024;
    /// The apiserver sends about 500 bytes of headers.
    pub const MAX_HEAD: usize = 16 * 1024;
    /// A real request arrives in milliseconds; this only stops trickling.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    /// Longer than the Go client's 90 s idle timeout, so the client, not
    /// us, closes idle connections (a request racing our close would fail).
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
    pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
    pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
    /// Below Kubernetes' default 30 s termination grace period.
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
    pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);
}

/// Parses `500ms`, `10s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 10s or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unit must be ms, s or m")),
    };
    if !(0.001..=86_400.0).contains(&secs) {
        return Err(format!("{s:?} must be between 1ms and 24h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Checks `serve` flags completely (before any socket is bound) and turns
/// them into server settings.
pub fn serve_settings(a: &crate::cli::ServeArgs) -> Result<crate::server::Settings, ConfigError> {
    use crate::server::http::Limits;
    use crate::server::tls::TlsFiles;
    let mut problems = Vec::new();
    let listen = match (&a.listen, a.port) {
        (Some(l), _) => l
            .parse::<std::net::SocketAddr>()
            .map_err(|_| {
                problems.push(format!(
                    "--listen: {l:?} is not an address like 0.0.0.0:8443 or [::]:8443"
                ))
            })
            .ok(),
        (None, port) => Some(std::net::SocketAddr::from((
            [0, 0, 0, 0],
            port.unwrap_or(defaults::PORT),
        ))),
    };
    let tls = match (&a.cert, &a.key, a.insecure_http) {
        (Some(c), Some(k), false) => Some(TlsFiles {
            cert: c.into(),
            key: k.into(),
            client_ca: a.client_ca.as_ref().map(Into::into),
        }),
        (None, None, true) => None,
        (_, _, true) => {
            problems.push("--insecure-http cannot be combined with --cert or --key".into());
            None
        }
        (Some(_), None, false) => {
            problems.push("--cert needs --key".into());
            None
        }
        (None, Some(_), false) => {
            problems.push("--key needs --cert".into());
            None
        }
        (None, None, false) => {
            problems.push("TLS is required: give --cert and --key (plain HTTP only with --insecure-http, for testing)".into());
            None
        }
    };
    if a.client_ca.is_some() && a.insecure_http {
        problems.push("--client-ca needs TLS, not --insecure-http".into());
    }
    if !a.client_name.is_empty() && a.client_ca.is_none() {
        problems.push("--client-name needs --client-ca".into());
    }
    let cpus = std::thread::available_parallelism().map_or(defaults::MIN_WORKERS, usize::from);
    let workers = a.workers.unwrap_or(cpus.max(defaults::MIN_WORKERS));
    if !(1..=defaults::MAX_WORKERS).contains(&workers) {
        problems.push(format!(
            "--workers must be between 1 and {}",
            defaults::MAX_WORKERS
        ));
    }
    let max_connections = a.max_connections.unwrap_or(defaults::MAX_CONNECTIONS);
    if max_connections == 0 {
        problems.push("--max-connections must be at least 1".into());
    }
    if let Some(f) = a
        .log_format
        .as_ref()
        .filter(|f| *f != "text" && *f != "json")
    {
        problems.push(format!("--log-format {f:?} is not text or json"));
    }
    let mut duration = |flag: &str, v: &Option<String>, default: Duration| match v {
        None => default,
        Some(s) => parse_duration(s).unwrap_or_else(|e| {
            problems.push(format!("{flag}: {e}"));
            default
        }),
    };
    let request_timeout = duration(
        "--request-timeout",
        &a.request_timeout,
        defaults::REQUEST_TIMEOUT,
    );
    let idle_timeout = duration("--idle-timeout", &a.idle_timeout, defaults::IDLE_TIMEOUT);
    let handshake_timeout = duration(
        "--handshake-timeout",
        &a.handshake_timeout,
        defaults::HANDSHAKE_TIMEOUT,
    );
    let drain_timeout = duration("--drain-timeout", &a.drain_timeout, defaults::DRAIN_TIMEOUT);
    let reload_interval = duration(
        "--reload-interval",
        &a.reload_interval,
        defaults::RELOAD_INTERVAL,
    );
    let policy = a.policy_flags();
    // The policy is checked now too, so every problem shows at once.
    if let Err(e) = policy.load() {
        problems.extend(e.problems);
    }
    match listen {
        Some(listen) if problems.is_empty() => Ok(crate::server::Settings {
            listen,
            tls,
            client_names: a.client_name.clone(),
            policy,
            workers,
            max_connections,
            limits: Limits {
                max_head: defaults::MAX_HEAD,
                max_body: defaults::MAX_BODY,
                request_timeout,
                idle_timeout,
                write_timeout: defaults::WRITE_TIMEOUT,
            },
            handshake_timeout,
            drain_timeout,
            reload_interval,
        }),
        _ => Err(ConfigError { problems }),
    }
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
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["", "s", "10h", "0s", "-1s", "1e9"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serve_flags_are_all_checked_at_once() {
        let args = crate::cli::ServeArgs {
            cert: Some("c.pem".into()),
            listen: Some("nowhere".into()),
            client_name: vec!["apiserver".into()],
            workers: Some(0),
            log_format: Some("xml".into()),
            idle_timeout: Some("forever".into()),
            mode: Some("loud".into()),
            ..Default::default()
        };
        let e = serve_settings(&args).unwrap_err();
        for want in [
            "--listen",
            "--cert needs --key",
            "--client-name needs --client-ca",
            "--workers",
            "--log-format",
            "--idle-timeout",
            "--mode: mode \"loud\"",
        ] {
            assert!(
                e.problems.iter().any(|p| p.starts_with(want)),
                "missing {want} in {e}"
            );
        }
        assert_eq!(e.problems.len(), 7, "{e}");
        let none = serve_settings(&crate::cli::ServeArgs::default()).unwrap_err();
        assert!(none.problems[0].starts_with("TLS is required"));
    }

    #[test]
    fn comma_lists() {
        let v = split_commas(&["a,b".into(), " c ,".into()]);
        assert_eq!(v, ["a", "b", "c"]);
    }
}
