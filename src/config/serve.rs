//! The server's settings: `serve`'s flags and environment (and
//! kube-image-bouncer's and k8s-mutate-image-and-policy-webhook's) become
//! plain validated values — addresses, TLS files, limits, deadlines, how
//! to load the policy — every problem reported at once.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, PolicyFlags, Rules};

/// Size caps and deadlines of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus headers.
    pub max_head: usize,
    /// Decoded body.
    pub max_body: usize,
    /// Paths with a cap of their own instead of `max_body`.
    pub path_caps: &'static [(&'static str, usize)],
    /// From the first byte of a request to its last.
    pub request_timeout: Duration,
    /// Between requests on a keep-alive connection.
    pub idle_timeout: Duration,
    /// For one response to be written.
    pub write_timeout: Duration,
}

/// The files a TLS configuration is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// `--self-signed`: what the server's throwaway certificate needs.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    /// Where to write its CA certificate, once listening.
    pub ca_out: PathBuf,
    /// `--client-ca`, if given.
    pub client_ca: Option<PathBuf>,
}

/// Validated server settings (built by [`serve_settings`]): plain values,
/// so that the server needs nothing of the flags.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// A plain-HTTP listener for /metrics, /healthz and /readyz only.
    pub metrics_listen: Option<SocketAddr>,
    /// Print `listening on ADDR` on stdout (not in JSON log mode, where
    /// stdout carries nothing but JSON... which is nothing).
    pub announce: bool,
    /// `None` only with `--insecure-http`.
    pub tls: Option<TlsFiles>,
    /// `--self-signed` (then `tls` is `None`): the server makes a throwaway
    /// certificate at start.
    pub self_signed: Option<SelfSigned>,
    /// Accepted client certificate names (empty: any the CA signed).
    pub client_names: Vec<String>,
    /// How to (re)load the policy and mutations.
    pub policy: PolicySource,
    pub workers: usize,
    pub max_connections: usize,
    /// Connections one client address may hold.
    pub max_connections_per_peer: usize,
    /// Request body bytes all connections may hold at once.
    pub max_body_memory: usize,
    pub limits: Limits,
    pub handshake_timeout: Duration,
    pub drain_timeout: Duration,
    /// How often files are checked for changes.
    pub reload_interval: Duration,
}

/// Where the rules come from, for the server's reloader: the policy file
/// to watch, and how to build [`Rules`] again from file, flags and
/// environment (what `PolicyFlags::load_rules` does), so that the server
/// imports no flag type.
#[derive(Clone)]
pub struct PolicySource {
    pub file: Option<PathBuf>,
    load: std::sync::Arc<dyn Fn() -> Result<Rules, ConfigError> + Send + Sync>,
}

impl std::fmt::Debug for PolicySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicySource({:?})", self.file)
    }
}

impl PolicySource {
    pub fn of(flags: PolicyFlags) -> Self {
        PolicySource {
            file: flags.file.clone(),
            load: std::sync::Arc::new(move || flags.load_rules()),
        }
    }

    pub fn load_rules(&self) -> Result<Rules, ConfigError> {
        (self.load)()
    }

    /// The files to watch for a reload: the policy file, or a policy
    /// directory and its policy files as they are now.
    pub fn paths(&self) -> Vec<PathBuf> {
        match &self.file {
            Some(p) if p.is_dir() => {
                let mut all = vec![p.clone()];
                all.extend(super::policy_files(p).unwrap_or_default());
                all
            }
            Some(p) => vec![p.clone()],
            None => Vec::new(),
        }
    }
}

/// Defaults of `serve`, each with why.
pub mod defaults {
    use std::time::Duration;
    /// kube-image-bouncer's port, so its manifests work unchanged.
    pub const PORT: u16 = 1323;
    /// Enough for the apiserver's connection pool and a thousand idle
    /// clients; each costs a parked thread with a 256 KiB stack.
    pub const MAX_CONNECTIONS: usize = 4096;
    /// One client address (an attacker's pod) cannot take the whole table,
    /// so it cannot make others' connections the ones closed; the apiserver
    /// needs far fewer (its pool keeps 25 idle per host).
    pub const MAX_CONNECTIONS_PER_PEER: usize = 256;
    /// Reviews are tiny CPU jobs; more workers than cores only queue.
    pub const MIN_WORKERS: usize = 2;
    pub const MAX_WORKERS: usize = 1024;
    /// The apiserver caps objects at about 3 MB and an UPDATE review holds
    /// two of them.
    pub const MAX_BODY: usize = 7 * 1024 * 1024;
    /// An ImageReview is built by the apiserver from a pod of up to 3 MiB
    /// with Go's JSON encoder, which writes `<`, `>` and `&` as six-byte
    /// escapes: up to six times the pod, plus headroom. (A 1.3 MB pod of
    /// `<<<` is a 7.8 MB review; refusing it would make the apiserver fall
    /// back to `defaultAllow`.)
    pub const MAX_IMAGE_REVIEW_BODY: usize = 20 * 1024 * 1024;
    pub const PATH_BODY_CAPS: &[(&str, usize)] = &[("/image_policy", MAX_IMAGE_REVIEW_BODY)];
    /// Request bodies held at once by all connections: dozens of large
    /// UPDATE reviews, and well inside the Deployment's 256 MiB limit (the
    /// read buffer may hold a second copy briefly).
    pub const MAX_BODY_MEMORY_MIB: usize = 64;
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
// One function on purpose, every flag checked in one pass so that all problems are reported at
// once; each check is a few lines.
pub fn serve_settings(
    a: &crate::cli::ServeArgs,
    legacy_env: bool,
) -> Result<Settings, ConfigError> {
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
        // A self-signed first try stays on this machine.
        (None, port) if a.self_signed => Some(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            port.unwrap_or(defaults::PORT),
        ))),
        (None, port) => Some(std::net::SocketAddr::from((
            [0, 0, 0, 0],
            port.unwrap_or(defaults::PORT),
        ))),
    };
    let metrics_listen = a.metrics_listen.as_ref().and_then(|l| {
        l.parse::<std::net::SocketAddr>()
            .map_err(|_| {
                problems.push(format!(
                    "--metrics-listen: {l:?} is not an address like 127.0.0.1:9090"
                ))
            })
            .ok()
    });
    let self_signed = a.self_signed && a.cert.is_none() && a.key.is_none() && !a.insecure_http;
    if a.self_signed && !self_signed {
        problems
            .push("--self-signed cannot be combined with --cert, --key or --insecure-http".into());
    }
    if a.self_signed_ca.is_some() && !a.self_signed {
        problems.push("--self-signed-ca needs --self-signed".into());
    }
    let tls = match (&a.cert, &a.key, a.insecure_http) {
        _ if a.self_signed => None,
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
            problems.push("TLS is required: give --cert and --key (make them with `image-bouncer certs`), or try it out with --self-signed (plain HTTP only with --insecure-http, for testing)".into());
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
    let max_connections_per_peer = a
        .max_connections_per_peer
        .unwrap_or(defaults::MAX_CONNECTIONS_PER_PEER);
    if max_connections_per_peer == 0 {
        problems.push("--max-connections-per-peer must be at least 1".into());
    }
    let max_body_memory_mib = a
        .max_body_memory_mib
        .unwrap_or(defaults::MAX_BODY_MEMORY_MIB);
    if max_body_memory_mib == 0 {
        problems.push("--max-body-memory-mib must be at least 1".into());
    }
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
    let policy = PolicyFlags {
        legacy_env,
        ..a.policy_flags()
    };
    // The policy is checked now too, so every problem shows at once.
    if let Err(e) = policy.load_rules() {
        problems.extend(e.problems);
    }
    let self_signed = self_signed.then(|| SelfSigned {
        ca_out: PathBuf::from(
            a.self_signed_ca
                .as_deref()
                .unwrap_or("image-bouncer-ca.crt"),
        ),
        client_ca: a.client_ca.as_ref().map(Into::into),
    });
    match listen {
        Some(listen) if problems.is_empty() => Ok(Settings {
            listen,
            metrics_listen,
            announce: a.log_format.as_deref() != Some("json"),
            tls,
            self_signed,
            client_names: a.client_name.clone(),
            policy: PolicySource::of(policy),
            workers,
            max_connections,
            max_connections_per_peer,
            max_body_memory: max_body_memory_mib.saturating_mul(1024 * 1024),
            limits: Limits {
                max_head: defaults::MAX_HEAD,
                max_body: defaults::MAX_BODY,
                path_caps: defaults::PATH_BODY_CAPS,
                request_timeout,
                idle_timeout,
                write_timeout: defaults::WRITE_TIMEOUT,
            },
            handshake_timeout,
            drain_timeout,
            reload_interval,
        }),
        _ => Err(ConfigError {
            problems,
            files: Vec::new(),
            files_seen: Default::default(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let e = serve_settings(&args, false).unwrap_err();
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
        let none = serve_settings(&crate::cli::ServeArgs::default(), false).unwrap_err();
        assert!(none.problems[0].starts_with("TLS is required"));
    }
}
