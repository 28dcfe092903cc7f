//! `image-bouncer trust update` and `trust show`: keeping a sigstore
//! `trusted_root.json` current from a TUF repository (sigstore's by
//! default), beside the webhook and never during admission, and showing
//! what a trusted root holds. The update verifies everything before it
//! writes: the target is written atomically only when the metadata and
//! the target verify and the target reads as a trusted root; otherwise
//! the old file stays. The metadata trusted is kept beside the output
//! (`<out>.tuf/`), so that the next run can refuse a rollback or a freeze.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::{TrustShowArgs, TrustUpdateArgs};
use crate::registry::client::{Client, LookupError};
use crate::tuf::update::{self, Fetch, State};
use crate::verify::trust::TrustedRoot;

/// How long one download may take, at most, unless `--timeout` says.
const DOWNLOAD_TIME: Duration = Duration::from_secs(30);

/// The folder the metadata trusted is kept in, beside `out`.
pub fn state_dir(out: &Path) -> PathBuf {
    let name = out.file_name().map_or_else(
        || "trusted_root.json".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    out.with_file_name(format!("{name}.tuf"))
}

/// What an update came to, in words.
pub fn update(a: &TrustUpdateArgs) -> Result<String, String> {
    let out = PathBuf::from(&a.out);
    let dir = state_dir(&out);
    let base = a
        .tuf_url
        .clone()
        .unwrap_or_else(|| crate::tuf::PUBLIC_GOOD_URL.to_string());
    let base = base.trim_end_matches('/').to_string();
    let targets = a.targets_url.clone().map_or_else(
        || format!("{base}/targets"),
        |t| t.trim_end_matches('/').to_string(),
    );
    let from = a
        .previous
        .as_ref()
        .map_or_else(|| dir.clone(), PathBuf::from);
    // Only a file that is not there is absent: one that cannot be read
    // must not quietly drop the rollback protection it gives.
    let read = |name: &str| -> Result<Option<Vec<u8>>, String> {
        match std::fs::read(from.join(name)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", from.join(name).display())),
        }
    };
    // The root last trusted, else the one given, else sigstore's.
    let root = match (read("root.json")?, &a.tuf_root) {
        (Some(r), _) => r,
        (None, Some(f)) => std::fs::read(f).map_err(|e| format!("{f}: {e}"))?,
        (None, None) => crate::tuf::PUBLIC_GOOD_ROOT.to_vec(),
    };
    let trusted = State {
        root,
        timestamp: read("timestamp.json")?,
        snapshot: read("snapshot.json")?,
        targets: read("targets.json")?,
    };
    let client = client_for(&[&base, &targets])?;
    let within = a.timeout.map_or(DOWNLOAD_TIME, Duration::from_secs);
    let mut fetch = |path: &str, cap: usize| -> Result<Vec<u8>, Fetch> {
        let url = match path.strip_prefix("targets/") {
            Some(t) => format!("{targets}/{t}"),
            None => format!("{base}/{path}"),
        };
        client.get_url(&url, cap, within).map_err(|e| match e {
            // Buckets without list permission answer 403 for what they
            // lack (python-tuf and go-tuf read it so too).
            LookupError::Permanent(m) if m.ends_with("(404)") || m.ends_with("(403)") => {
                Fetch::NotFound
            }
            LookupError::Permanent(m)
            | LookupError::Transient(m)
            | LookupError::Unreachable(m)
            | LookupError::TimedOut(m) => Fetch::Failed(m),
        })
    };
    let now = crate::time::unix_now();
    let done = update::update(&trusted, crate::tuf::TRUSTED_ROOT_TARGET, now, &mut fetch)?;
    let text = String::from_utf8(done.target.clone())
        .map_err(|_| "the trusted root is not UTF-8".to_string())?;
    let root =
        TrustedRoot::parse(&text).map_err(|e| format!("the trusted root does not read: {e}"))?;
    if root.authorities.is_empty() && root.tlogs.is_empty() {
        return Err("the trusted root holds no certificate authority and no log".into());
    }
    // The metadata first (a later run checks against it), then the root.
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let keep = |name: &str, bytes: &Option<Vec<u8>>| -> Result<(), String> {
        match bytes {
            Some(b) => crate::files::write_atomic(&dir.join(name), b, 0o644)
                .map_err(|e| format!("{}: {e}", dir.join(name).display())),
            None => Ok(()),
        }
    };
    // The root last: a run cut short leaves the old root with newer
    // metadata, which the next run checks against it (and drops what
    // that root did not sign).
    keep("timestamp.json", &done.state.timestamp)?;
    keep("snapshot.json", &done.state.snapshot)?;
    keep("targets.json", &done.state.targets)?;
    keep("root.json", &Some(done.state.root.clone()))?;
    if let Some(p) = &a.configmap_patch {
        write_patch(Path::new(p), &done.state, &done.target)?;
    }
    let changed = std::fs::read(&out).ok().as_deref() != Some(done.target.as_slice());
    if changed {
        crate::files::write_atomic(&out, &done.target, 0o644)
            .map_err(|e| format!("{}: {e}", out.display()))?;
    }
    let (from, to) = done.root_versions;
    Ok(format!(
        "{}: {} (TUF root version {from}{}, timestamp version {}, trusted root sha256:{})",
        out.display(),
        if changed { "updated" } else { "unchanged" },
        if to != from {
            format!(" → {to}")
        } else {
            String::new()
        },
        done.timestamp_version,
        crate::digest::hex(ring::digest::digest(&ring::digest::SHA256, &done.target).as_ref())
    ))
}

/// The trusted root and the metadata trusted as a JSON merge patch of a
/// ConfigMap's `data`: the in-cluster CronJob keeps both in one ConfigMap
/// (read back with `--previous` from its mount).
fn write_patch(path: &Path, state: &State, target: &[u8]) -> Result<(), String> {
    let text = |b: &[u8]| {
        String::from_utf8(b.to_vec()).map_err(|_| "metadata that is not UTF-8".to_string())
    };
    let mut data = serde_json::Map::new();
    data.insert(crate::tuf::TRUSTED_ROOT_TARGET.into(), text(target)?.into());
    for (name, bytes) in [
        ("root.json", Some(&state.root)),
        ("timestamp.json", state.timestamp.as_ref()),
        ("snapshot.json", state.snapshot.as_ref()),
        ("targets.json", state.targets.as_ref()),
    ] {
        if let Some(b) = bytes {
            data.insert(name.into(), text(b)?.into());
        }
    }
    let patch = serde_json::json!({ "data": data });
    crate::files::write_atomic(path, patch.to_string().as_bytes(), 0o644)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A client for the repository's hosts: the registry client's settings
/// (proxies from the environment, timeouts, the address guard), these
/// hosts named (a repository on loopback is the admin's choice), plain
/// http allowed to a host given with `http://` (TUF metadata is signed).
fn client_for(urls: &[&str]) -> Result<Client, String> {
    let mut hosts = Vec::new();
    let mut plain = Vec::new();
    for url in urls {
        let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(r), _) => (true, r),
            (None, Some(r)) => (false, r),
            _ => return Err(format!("{url}: not an http(s) URL")),
        };
        let authority = rest.split('/').next().unwrap_or_default().to_string();
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("{url}: not an http(s) URL"));
        }
        if !https {
            plain.push(authority.clone());
        }
        // Named on its own port only: a redirect to another port of the
        // host, or elsewhere on loopback, stays refused by the guard.
        let (host, port) = crate::image_ref::split_port(&authority);
        let port = port.unwrap_or(if https { "443" } else { "80" });
        hosts.push(format!("{host}:{port}"));
    }
    let proxies = crate::registry::proxy::ProxyConfig::from_env(&|k| std::env::var(k).ok());
    let client = Client::new(crate::credentials::Credentials::default(), proxies, &[])
        .with_plain_http(plain.iter())
        .with_named_hosts(hosts.iter().map(String::as_str));
    Ok(client)
}

/// What a trusted root holds, one line each, with validity.
pub fn show(a: &TrustShowArgs) -> Result<String, String> {
    let text = crate::files::read_limited(Path::new(&a.file), 4 << 20)?;
    let root = TrustedRoot::parse(&text).map_err(|e| format!("{}: {e}", a.file))?;
    let valid = |v: &crate::verify::trust::Validity| {
        format!(
            "valid from {}{}",
            crate::time::rfc3339(v.start),
            v.end
                .map(|e| format!(" to {}", crate::time::rfc3339(e)))
                .unwrap_or_else(|| ", open-ended".into())
        )
    };
    let id = |b: &[u8]| {
        let h = crate::digest::hex(b);
        h.get(..16).unwrap_or(&h).to_string()
    };
    let mut out = vec![format!("{}:", a.file)];
    let authority = |kind: &str, ca: &crate::verify::trust::Authority| {
        format!(
            "  {kind:<16} {} ({} certificates), {}",
            ca.uri,
            ca.chain.len(),
            valid(&ca.valid)
        )
    };
    out.extend(root.authorities.iter().map(|ca| authority("Fulcio CA", ca)));
    // Rekor v2 logs sign checkpoints with Ed25519; v1 with ECDSA.
    let rekor = |log: &crate::verify::trust::Log| {
        if log.key.describe() == "Ed25519" {
            "Rekor v2"
        } else {
            "Rekor v1"
        }
    };
    let logs = root
        .tlogs
        .iter()
        .map(|l| (rekor(l), l))
        .chain(root.ctlogs.iter().map(|l| ("CT log", l)));
    for (kind, log) in logs {
        out.push(format!(
            "  {kind:<16} {} ({}, log ID {}…), {}",
            log.base_url,
            log.key.describe(),
            id(&log.id),
            valid(&log.valid)
        ));
    }
    out.extend(
        root.timestamp_authorities
            .iter()
            .map(|tsa| authority("TSA", tsa)),
    );
    Ok(out.join("\n"))
}
