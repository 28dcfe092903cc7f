//! Writing keys and configuration safely, for `certs`, `config apiserver`
//! and `serve --self-signed`.
//!
//! A root-run command that writes a CA key must not be steered by whoever
//! can write to the output folder: the folder is created private (0700),
//! and an existing one must belong to the caller and be writable by nobody
//! else; each file is written to a new temporary file in that folder
//! (created exclusively, never through a symlink, with its final mode)
//! and renamed over the target, so a reader sees the old file or the new
//! one, never half of one, and a symlink at the target is replaced, not
//! followed. Replacing a file of the caller's keeps its mode and group
//! (the service's group may read `tls.key`); a file owned by someone else
//! is refused.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Group and others may not write into an output folder.
const NOT_WRITABLE_BY_OTHERS: u32 = 0o022;

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

/// A group's ID, by name (from `/etc/group`) or as a number.
pub fn group_id(name: &str) -> io::Result<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group")?;
    groups
        .lines()
        .find_map(|l| {
            let mut fields = l.split(':');
            (fields.next() == Some(name))
                .then(|| fields.nth(1)?.parse().ok())
                .flatten()
        })
        .ok_or_else(|| {
            io::Error::other(format!(
                "there is no group {name:?} (create the service's user and group first: systemd-sysusers)"
            ))
        })
}

/// Gives `gid` the file or folder `path` (never through a symlink) with
/// `mode`.
pub fn share_with_group(path: &Path, gid: u32, mode: u32) -> io::Result<()> {
    // Opened without following a symlink, then changed through the open
    // file: what is checked is what is changed.
    use std::os::unix::fs::OpenOptionsExt;
    // Linux's value differs by architecture (the flake builds both).
    #[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
    const O_NOFOLLOW: i32 = 0o100_000;
    #[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
    const O_NOFOLLOW: i32 = 0o400_000;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NOFOLLOW)
        .open(path)?;
    std::os::unix::fs::fchown(&file, None, Some(gid))?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// The effective user ID of this process (Linux: `/proc/self/status`).
pub fn effective_uid() -> io::Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1)?.parse().ok())
        .ok_or_else(|| io::Error::other("no effective uid in /proc/self/status"))
}

/// Creates `dir` (and missing parents) 0700, or checks an existing one:
/// a directory of the caller's, not writable by group or others.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    // The folder itself, never where a symlink in its place points.
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => Err(io::Error::other(
            "is a symbolic link: give the folder itself",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir),
        Err(e) => Err(e),
        Ok(m) => {
            let uid = effective_uid()?;
            if !m.is_dir() {
                Err(io::Error::other("exists and is not a folder"))
            } else if m.uid() != uid {
                Err(io::Error::other(format!(
                    "the folder belongs to uid {}, not to this user (uid {uid}); use a folder of your own",
                    m.uid()
                )))
            } else if m.mode() & NOT_WRITABLE_BY_OTHERS != 0 {
                Err(io::Error::other(format!(
                    "the folder is writable by others (mode {:o}); run chmod go-w on it",
                    m.mode() & 0o7777
                )))
            } else {
                Ok(())
            }
        }
    }
}

/// A new folder with a random name below `parent`, created exclusively
/// and 0700 (never one that somebody made beforehand).
pub fn fresh_private_dir(parent: &Path, prefix: &str) -> io::Result<PathBuf> {
    for _ in 0..8 {
        let dir = parent.join(format!("{prefix}{}", random_hex(8)?));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("could not create a new private folder"))
}

pub fn random_hex(bytes: usize) -> io::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(crate::digest::hex(&buf))
}

/// True when something (a file, a symlink, dangling or not) is at `path`.
pub fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Writes `bytes` to `path` atomically with `mode` (or, replacing a
/// regular file of the caller's, that file's mode and group).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("not a file name"))?
        .to_string_lossy()
        .into_owned();
    let old = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => {
            let uid = effective_uid()?;
            if m.uid() != uid {
                return Err(io::Error::other(format!(
                    "exists and belongs to uid {}, not to this user (uid {uid}); remove it first",
                    m.uid()
                )));
            }
            Some(m)
        }
        // A symlink or anything else is replaced, never written through.
        _ => None,
    };
    let mode = old.as_ref().map_or(mode, |m| m.mode() & 0o7777);
    let tmp = dir.join(format!(".{name}.{}.tmp", random_hex(6)?));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            // O_CREAT|O_EXCL: fails on anything there, a symlink included
            // (POSIX: it is not followed), so this file is new and ours.
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have taken bits away; this file is our own.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        // Keep the old file's group, when it is not the new file's already
        // (a process in a user namespace may not change a group at all).
        if let Some(m) = &old
            && f.metadata()?.gid() != m.gid()
        {
            std::os::unix::fs::fchown(&f, None, Some(m.gid()))?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// What identifies a file's content: a Kubernetes secret volume swaps a
/// `..data` symlink (new inode), an in-place rewrite changes size, mtime or
/// at least the bytes (two same-size writes within one clock tick keep the
/// mtime, so the content is hashed too; these files are small). Missing
/// files fingerprint as `None`; anything but a regular file (a device, a
/// FIFO a policy might name) by its metadata alone, never read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint(Vec<Option<FileId>>);

/// Device, inode, size, mtime (s, ns) and a hash of the content.
type FileId = (u64, u64, u64, i64, i64, u64);

/// Bytes of a file hashed at most (beyond, metadata must do).
const HASH_MAX: u64 = 8 * 1024 * 1024;

impl Fingerprint {
    pub fn of(paths: &[&Path]) -> Fingerprint {
        use std::hash::{Hash, Hasher};
        use std::io::Read;
        Fingerprint(
            paths
                .iter()
                .map(|p| {
                    let m = std::fs::metadata(p).ok()?;
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    if m.is_file() && m.size() <= HASH_MAX {
                        let mut bytes = Vec::new();
                        std::fs::File::open(p)
                            .ok()?
                            .take(HASH_MAX + 1)
                            .read_to_end(&mut bytes)
                            .ok()?;
                        bytes.hash(&mut h);
                    }
                    Some((
                        m.dev(),
                        m.ino(),
                        m.size(),
                        m.mtime(),
                        m.mtime_nsec(),
                        h.finish(),
                    ))
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ib-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn writes_replace_symlinks_and_keep_modes() {
        let dir = temp("atomic");
        private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        // A dangling symlink where the key goes: replaced, not followed.
        let elsewhere = temp("atomic-elsewhere");
        symlink(&elsewhere, dir.join("ca.key")).unwrap();
        assert!(exists(&dir.join("ca.key")));
        write_atomic(&dir.join("ca.key"), b"secret", 0o600).unwrap();
        assert!(!elsewhere.exists());
        let m = std::fs::symlink_metadata(dir.join("ca.key")).unwrap();
        assert!(m.file_type().is_file());
        assert_eq!(m.mode() & 0o777, 0o600);
        // A file of ours keeps the mode it was given (e.g. 0640 for a group).
        std::fs::set_permissions(dir.join("ca.key"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        write_atomic(&dir.join("ca.key"), b"new", 0o600).unwrap();
        let m = std::fs::metadata(dir.join("ca.key")).unwrap();
        assert_eq!(
            (m.mode() & 0o777, std::fs::read(dir.join("ca.key")).unwrap()),
            (0o640, b"new".to_vec())
        );
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unsafe_folders_and_foreign_files_are_refused() {
        let dir = temp("unsafe");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = private_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("writable by others"), "{e}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        private_dir(&dir).unwrap();
        // A file (or folder) owned by someone else: only root can make one.
        if effective_uid().unwrap() == 0 {
            let key = dir.join("ca.key");
            std::fs::write(&key, b"attacker's").unwrap();
            std::os::unix::fs::chown(&key, Some(65534), Some(65534)).unwrap();
            let e = write_atomic(&key, b"secret", 0o600)
                .unwrap_err()
                .to_string();
            assert!(e.contains("belongs to uid 65534"), "{e}");
            assert_eq!(std::fs::read(&key).unwrap(), b"attacker's");
            std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
            let e = private_dir(&dir).unwrap_err().to_string();
            assert!(e.contains("belongs to uid 65534"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fresh_folders_are_new_and_private() {
        let parent = temp("fresh");
        std::fs::create_dir_all(&parent).unwrap();
        let a = fresh_private_dir(&parent, "x-").unwrap();
        let b = fresh_private_dir(&parent, "x-").unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::metadata(&a).unwrap().mode() & 0o777, 0o700);
        std::fs::remove_dir_all(&parent).unwrap();
    }
}
