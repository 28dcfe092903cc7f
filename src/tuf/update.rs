//! The TUF client workflow (specification 1.0.x, section 5): from the
//! trusted root and the metadata last trusted, update the root one
//! version at a time (each new root signed by a threshold of the old
//! root's keys and of its own), refuse a root that has expired (freeze),
//! then timestamp, snapshot and targets, each signed by its role's
//! threshold, no older than what was trusted (rollback), matching the
//! version, length and hashes the metadata above lists (mix and match),
//! unexpired; and finally one target, matching its length and hashes.
//! Every download has a cap. The bytes come from `fetch`: the workflow
//! itself does no I/O.

use std::collections::BTreeMap;

use crate::tuf::metadata::{self, Envelope, MetaFile, Root};

/// Bytes read at most per file when the metadata above gives no length
/// (python-tuf's defaults).
pub const ROOT_MAX: usize = 512_000;
pub const TIMESTAMP_MAX: usize = 16_384;
pub const SNAPSHOT_MAX: usize = 2_000_000;
pub const TARGETS_MAX: usize = 5_000_000;
/// A target is read up to its listed length, which may be no more.
pub const TARGET_MAX: usize = 8 << 20;
/// Root versions followed in one update, at most.
pub const ROTATIONS_MAX: u64 = 64;

/// Why a file could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    /// The repository does not have it (HTTP 404).
    NotFound,
    /// Anything else: the reason.
    Failed(String),
}

/// Gets a file by its path under the repository, reading at most the
/// cap given.
pub type Fetcher<'a> = dyn FnMut(&str, usize) -> Result<Vec<u8>, Fetch> + 'a;

/// What the client trusts going in, and comes out with: the metadata
/// files' bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub root: Vec<u8>,
    pub timestamp: Option<Vec<u8>>,
    pub snapshot: Option<Vec<u8>>,
    pub targets: Option<Vec<u8>>,
}

/// A finished update: the new state and the target's bytes.
#[derive(Debug, Clone)]
pub struct Updated {
    pub state: State,
    pub target: Vec<u8>,
    /// Root versions, from the one trusted to the one now trusted.
    pub root_versions: (u64, u64),
    pub timestamp_version: u64,
}

/// Runs the workflow for `target` (a name in the top-level targets) at
/// time `now` (Unix seconds). `fetch(path, cap)` gets a metadata file
/// (`3.root.json`, `timestamp.json`, …) or a target (`targets/<name>`).
pub fn update(
    trusted: &State,
    target: &str,
    now: i64,
    fetch: &mut Fetcher<'_>,
) -> Result<Updated, String> {
    // 5.2: the trusted root, however old (it is only a starting point).
    let first = Root::read(
        &Envelope::read(&trusted.root, "root").map_err(|e| format!("the trusted root: {e}"))?,
    )
    .map_err(|e| format!("the trusted root: {e}"))?;
    let mut root = first.clone();
    let mut root_bytes = trusted.root.clone();
    // 5.3: each next version, signed by the old root's and its own.
    for _ in 0..ROTATIONS_MAX {
        let path = format!("{}.root.json", root.version + 1);
        let bytes = match get(fetch, &path, ROOT_MAX) {
            Ok(b) => b,
            Err(None) => break,
            Err(Some(why)) => return Err(why),
        };
        let e = Envelope::read(&bytes, "root").map_err(|e| format!("{path}: {e}"))?;
        e.verify(&root, "root")
            .map_err(|why| format!("{path} is not signed by the root it replaces: {why}"))?;
        let next = Root::read(&e).map_err(|e| format!("{path}: {e}"))?;
        e.verify(&next, "root")
            .map_err(|why| format!("{path} is not signed by its own root keys: {why}"))?;
        if next.version != root.version + 1 {
            return Err(format!(
                "{path} says it is version {}, not {}",
                next.version,
                root.version + 1
            ));
        }
        root = next;
        root_bytes = bytes;
    }
    // 5.3.10: a root that has expired is a frozen repository.
    if root.expires <= now {
        return Err(format!(
            "the newest root (version {}) expired at {}: the repository may be frozen",
            root.version,
            crate::time::rfc3339(root.expires)
        ));
    }
    // 5.3.11: new timestamp or snapshot keys make the old metadata of
    // those roles no reference for rollback.
    let rotated = |role: &str| first.roles.get(role) != root.roles.get(role);
    let forget = rotated("timestamp") || rotated("snapshot");
    // Metadata kept from before counts only if the root now trusted
    // signed it (python-tuf's rule): state left half-written, or metadata
    // of keys since replaced, is no reference.
    let old = |b: &Option<Vec<u8>>, kind: &str| -> Option<Envelope> {
        b.as_deref()
            .and_then(|b| Envelope::read(b, kind).ok())
            .filter(|e| e.verify(&root, kind).is_ok())
    };
    let old_timestamp = if forget {
        None
    } else {
        old(&trusted.timestamp, "timestamp")
    };
    let old_snapshot = if forget {
        None
    } else {
        old(&trusted.snapshot, "snapshot")
    };

    // 5.4: the timestamp.
    let ts_bytes = need(fetch, "timestamp.json", TIMESTAMP_MAX)?;
    let ts = Envelope::read(&ts_bytes, "timestamp")?;
    ts.verify(&root, "timestamp")
        .map_err(|why| format!("timestamp.json is not signed by the timestamp role: {why}"))?;
    let ts_version = ts.version()?;
    let snapshot_meta = metadata::timestamp_snapshot(&ts)?;
    if let Some(old) = &old_timestamp {
        let (v, snap) = (old.version()?, metadata::timestamp_snapshot(old)?);
        if ts_version < v {
            return Err(format!(
                "timestamp.json is version {ts_version}, older than the version {v} trusted: a rollback"
            ));
        }
        if snapshot_meta.version < snap.version {
            return Err(format!(
                "timestamp.json names snapshot version {}, older than the {} trusted: a rollback",
                snapshot_meta.version, snap.version
            ));
        }
    }
    expired(&ts, "timestamp.json", now)?;

    // 5.5: the snapshot the timestamp names.
    let (path, snap_bytes, snap) = named(
        fetch,
        &root,
        "snapshot",
        &snapshot_meta,
        SNAPSHOT_MAX,
        "the timestamp",
    )?;
    let listed = metadata::snapshot_meta(&snap)?;
    if let Some(old) = &old_snapshot {
        for (name, was) in metadata::snapshot_meta(old)? {
            match listed.get(&name) {
                None => return Err(format!("{path} no longer lists {name}: a rollback")),
                Some(now) if now.version < was.version => {
                    return Err(format!(
                        "{path} lists {name} version {}, older than the {} trusted: a rollback",
                        now.version, was.version
                    ));
                }
                Some(_) => {}
            }
        }
    }
    expired(&snap, &path, now)?;

    // 5.6: the top-level targets the snapshot names.
    let targets_meta = listed
        .get("targets.json")
        .ok_or_else(|| format!("{path} does not list targets.json"))?;
    let (path, targets_bytes, targets) = named(
        fetch,
        &root,
        "targets",
        targets_meta,
        TARGETS_MAX,
        "the snapshot",
    )?;
    expired(&targets, &path, now)?;

    // 5.7: the target.
    let files = metadata::targets(&targets)?;
    let file = files
        .get(target)
        .ok_or_else(|| format!("{path} lists no {target} (delegated targets are not followed)"))?;
    let length = usize::try_from(file.length)
        .ok()
        .filter(|l| *l <= TARGET_MAX)
        .ok_or_else(|| {
            format!(
                "{target} is listed at {} bytes, more than accepted",
                file.length
            )
        })?;
    let name = match (root.consistent_snapshot, preferred_hash(&file.hashes)) {
        (true, Some(h)) => format!("targets/{h}.{target}"),
        _ => format!("targets/{target}"),
    };
    let bytes = need(fetch, &name, length)?;
    metadata::check_file(&bytes, Some(file.length), &file.hashes, target)?;
    Ok(Updated {
        state: State {
            root: root_bytes,
            timestamp: Some(ts_bytes),
            snapshot: Some(snap_bytes),
            targets: Some(targets_bytes),
        },
        target: bytes,
        root_versions: (first.version, root.version),
        timestamp_version: ts_version,
    })
}

/// The metadata of `role` that `meta` (in `by`, the metadata above it)
/// names: fetched by version under consistent snapshots, within its
/// listed length, matching its length and hashes when listed, signed by
/// the role's threshold, of the version named. Its path, bytes and
/// envelope; expiry is the caller's, in the specification's order.
fn named(
    fetch: &mut Fetcher<'_>,
    root: &Root,
    role: &str,
    meta: &MetaFile,
    cap: usize,
    by: &str,
) -> Result<(String, Vec<u8>, Envelope), String> {
    let path = if root.consistent_snapshot {
        format!("{}.{role}.json", meta.version)
    } else {
        format!("{role}.json")
    };
    let bytes = need(fetch, &path, capped(meta, cap))?;
    meta.check(&bytes, &path)?;
    let e = Envelope::read(&bytes, role).map_err(|e| format!("{path}: {e}"))?;
    e.verify(root, role)
        .map_err(|why| format!("{path} is not signed by the {role} role: {why}"))?;
    if e.version()? != meta.version {
        return Err(format!(
            "{path} is version {}, not the {} {by} names",
            e.version()?,
            meta.version
        ));
    }
    Ok((path, bytes, e))
}

/// A file within `cap`: `Err(None)` when the repository has none.
fn get(fetch: &mut Fetcher<'_>, path: &str, cap: usize) -> Result<Vec<u8>, Option<String>> {
    match fetch(path, cap) {
        Ok(b) if b.len() > cap => Err(Some(format!("{path}: more than the {cap} bytes accepted"))),
        Ok(b) => Ok(b),
        Err(Fetch::NotFound) => Err(None),
        Err(Fetch::Failed(why)) => Err(Some(format!("{path}: {why}"))),
    }
}

/// A file that must be there.
fn need(fetch: &mut Fetcher<'_>, path: &str, cap: usize) -> Result<Vec<u8>, String> {
    get(fetch, path, cap)
        .map_err(|e| e.unwrap_or_else(|| format!("{path}: the repository has no such file")))
}

/// The cap for a file the metadata above may give the length of.
fn capped(m: &MetaFile, default: usize) -> usize {
    m.length
        .and_then(|l| usize::try_from(l).ok())
        .map_or(default, |l| l.min(default))
}

/// The hash a consistent-snapshot target is named by: sha256 if listed.
fn preferred_hash(hashes: &BTreeMap<String, String>) -> Option<&str> {
    hashes
        .get("sha256")
        .or_else(|| hashes.get("sha512"))
        .map(String::as_str)
}

fn expired(e: &Envelope, what: &str, now: i64) -> Result<(), String> {
    let at = e.expires()?;
    if at <= now {
        return Err(format!(
            "{what} expired at {} (a freeze, or a repository no longer kept)",
            crate::time::rfc3339(at)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> Vec<u8> {
        let p = format!(
            "{}/tests/fixtures/tuf/sigstore/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    const TARGET: &str = "targets/6494e21ea73fa7ee769f85f57d5a3e6a08725eae1e38c755fc3517c9e6bc0b66.trusted_root.json";

    /// sigstore's repository as it stood on 2026-08-21, from the files
    /// kept: roots 5 to 15, the timestamp, snapshot and targets, and the
    /// trusted root (consistent snapshots: by version and by hash).
    fn sigstore() -> BTreeMap<String, Vec<u8>> {
        let mut files: BTreeMap<String, Vec<u8>> = (5..=15)
            .map(|v| format!("{v}.root.json"))
            .chain(["timestamp.json", "165.snapshot.json", "14.targets.json"].map(String::from))
            .map(|n| {
                let b = file(&n);
                (n, b)
            })
            .collect();
        files.insert(TARGET.into(), file("trusted_root.json"));
        files
    }

    fn served(
        files: &BTreeMap<String, Vec<u8>>,
    ) -> impl FnMut(&str, usize) -> Result<Vec<u8>, Fetch> + '_ {
        |path, _| files.get(path).cloned().ok_or(Fetch::NotFound)
    }

    fn at(t: &str) -> i64 {
        crate::time::parse_rfc3339(t).unwrap()
    }

    fn from(version: u64) -> State {
        State {
            root: file(&format!("{version}.root.json")),
            ..State::default()
        }
    }

    /// sigstore's own metadata verifies: the root chain from version 5 to
    /// 15 (ten rotations, key changes and threshold changes among them),
    /// then timestamp, snapshot, targets and the trusted root, which is
    /// byte for byte the one sigstore publishes.
    #[test]
    fn sigstores_own_repository_verifies() {
        let files = sigstore();
        let done = update(
            &from(5),
            "trusted_root.json",
            at("2026-08-22T00:00:00Z"),
            &mut served(&files),
        )
        .unwrap();
        assert_eq!(done.root_versions, (5, 15));
        assert_eq!(done.timestamp_version, 762);
        assert_eq!(done.target, file("trusted_root.json"));
        assert_eq!(done.state.root, file("15.root.json"));
        // The embedded anchor is root 15, and reads as sigstore's: five
        // root keys, three to sign, one online key for timestamp and
        // snapshot.
        assert_eq!(
            crate::tuf::PUBLIC_GOOD_ROOT,
            file("15.root.json").as_slice()
        );
        let root =
            Root::read(&Envelope::read(crate::tuf::PUBLIC_GOOD_ROOT, "root").unwrap()).unwrap();
        assert_eq!(root.version, 15);
        assert_eq!(root.roles["root"].threshold, 3);
        assert_eq!(root.roles["root"].keyids.len(), 5);
        assert_eq!(
            root.roles["timestamp"].keyids,
            root.roles["snapshot"].keyids
        );
        assert!(root.keys.values().all(|k| k.supported()));
        assert!(root.consistent_snapshot);
        // Again from 15, with what the first update trusted: nothing new,
        // the same target.
        let again = update(
            &done.state,
            "trusted_root.json",
            at("2026-08-22T00:00:00Z"),
            &mut served(&files),
        )
        .unwrap();
        assert_eq!(again.root_versions, (15, 15));
    }

    /// Each way the real metadata can be made to lie is refused.
    #[test]
    fn tampering_with_sigstores_metadata_is_refused() {
        let day = at("2026-08-22T00:00:00Z");
        let refused = |files: &BTreeMap<String, Vec<u8>>, now: i64| {
            update(&from(14), "trusted_root.json", now, &mut served(files)).unwrap_err()
        };
        // After the timestamp's expiry; after root 15's (a freeze).
        let e = refused(&sigstore(), at("2026-08-29T00:00:00Z"));
        assert!(e.contains("timestamp.json expired"), "{e}");
        let e = refused(&sigstore(), at("2026-12-07T00:00:00Z"));
        assert!(
            e.contains("the newest root (version 15) expired") && e.contains("frozen"),
            "{e}"
        );
        // One byte of the target.
        let mut files = sigstore();
        files.get_mut(TARGET).unwrap()[100] ^= 1;
        let e = refused(&files, day);
        assert!(e.contains("does not match its sha256 hash"), "{e}");
        // A root whose signatures were made for other bytes.
        let mut files = sigstore();
        let root = String::from_utf8(files["15.root.json"].clone()).unwrap();
        files.insert(
            "15.root.json".into(),
            root.replacen("2026-11-20T13:58:18Z", "2036-11-20T13:58:18Z", 1)
                .into_bytes(),
        );
        let e = refused(&files, day);
        assert!(
            e.contains("15.root.json is not signed by the root it replaces"),
            "{e}"
        );
        // The targets of another snapshot (mix and match).
        let mut files = sigstore();
        let targets = files.remove("14.targets.json").unwrap();
        files.insert(
            "14.targets.json".into(),
            targets[..targets.len() - 2].to_vec(),
        );
        let e = refused(&files, day);
        assert!(e.contains("14.targets.json"), "{e}");
        // Version 16 claimed by a copy of 15.
        let mut files = sigstore();
        let r15 = files["15.root.json"].clone();
        files.insert("16.root.json".into(), r15);
        let e = refused(&files, day);
        assert!(
            e.contains("16.root.json") && e.contains("version 15, not 16"),
            "{e}"
        );
    }
}
