//! `image-bouncer certs` and `serve --self-signed`: a CA, a serving
//! certificate and a client certificate for the apiserver, ECDSA P-256.
//!
//! Renewal (new leaves from the CA in the folder) and CA rotation in three
//! steps (`rotate`); no CSR flow. Keys never leave the output folder and
//! are written mode 0600 (safely: `files.rs`); existing files are only
//! replaced with `--force`; a CA is never replaced implicitly.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::time::civil_from_days;

/// File names in the output folder (the serving pair uses the names of a
/// Kubernetes TLS secret).
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
/// Every CA to trust now: the CA, and during a rotation the other one.
/// Servers (`--client-ca`) and clients (`caBundle`, kubeconfig) use it.
pub const CA_BUNDLE: &str = "ca-bundle.crt";
/// The CA a rotation moves to, and the one it moved from.
pub const CA_NEXT_CERT: &str = "ca-next.crt";
pub const CA_NEXT_KEY: &str = "ca-next.key";
pub const CA_PREVIOUS_CERT: &str = "ca-previous.crt";
pub const CA_PREVIOUS_KEY: &str = "ca-previous.key";
pub const SERVER_CERT: &str = "tls.crt";
pub const SERVER_KEY: &str = "tls.key";
pub const CLIENT_CERT: &str = "apiserver-client.crt";
pub const CLIENT_KEY: &str = "apiserver-client.key";
/// The client certificate's subject CN, to be given to `--client-name`.
pub const CLIENT_CN: &str = "kube-apiserver";
/// Longest validity accepted; longer certificates are refused by some clients.
pub const MAX_DAYS: u32 = 3650;
/// A new CA's lifetime (as kubeadm's): leaves are renewed from it yearly,
/// and it is rotated well before it ends.
pub const CA_DAYS: u32 = 3650;

#[derive(Debug)]
pub enum CertError {
    Generate(rcgen::Error),
    BadName(String),
    Exists(Vec<PathBuf>),
    Write(PathBuf, std::io::Error),
    /// The folder holds one half of a CA.
    HalfCa {
        dir: PathBuf,
        there: &'static str,
        gone: &'static str,
    },
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertError::Generate(e) => write!(f, "cannot generate a certificate: {e}"),
            CertError::BadName(n) => write!(f, "{n:?} is not a DNS name for a certificate"),
            CertError::Exists(paths) => {
                let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                write!(
                    f,
                    "{} already exist; use --force to replace them",
                    names.join(", ")
                )
            }
            CertError::Write(p, e) => write!(f, "{}: {e}", p.display()),
            CertError::HalfCa { dir, there, gone } => write!(
                f,
                "{d}/{there} is there but {d}/{gone} is not, so the leaves cannot be issued from that CA, and a new CA would be refused by everything that trusts it (the apiserver would refuse every pod). Bring {gone} back (e.g. from where step 7 put it) and run the same command again; or, to replace the CA on purpose, pass --new-ca and follow the CA rotation steps",
                d = dir.display()
            ),
        }
    }
}

impl std::error::Error for CertError {}

impl From<rcgen::Error> for CertError {
    fn from(e: rcgen::Error) -> Self {
        CertError::Generate(e)
    }
}

/// PEM text of everything `certs` writes.
pub struct CertSet {
    pub ca_cert: String,
    pub ca_key: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
    /// Not-after of every certificate, Unix seconds.
    pub not_after: i64,
}

/// Valid from yesterday (clock skew between nodes) for `days` days.
fn set_validity(params: &mut CertificateParams, days: u32) -> i64 {
    let today = crate::time::unix_now().div_euclid(86_400);
    let at = |offset: i64| {
        let (y, m, d) = civil_from_days(today + offset);
        // civil_from_days yields a real calendar date: this cannot panic.
        rcgen::date_time_ymd(y as i32, m as u8, d as u8)
    };
    params.not_before = at(-1);
    params.not_after = at(i64::from(days));
    (today + i64::from(days)) * 86_400
}

/// A CA that can sign: its PEM files and the signer.
pub struct Ca {
    pub cert: String,
    pub key: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A new CA named `image-bouncer CA <date> <random>`, so that two CAs
    /// can be told apart in `openssl` output and logs.
    pub fn generate(days: u32) -> Result<Ca, CertError> {
        let mut ca = CertificateParams::default();
        let (y, m, d) = civil_from_days(crate::time::unix_now().div_euclid(86_400));
        let suffix =
            crate::files::random_hex(3).map_err(|e| CertError::Write("/dev/urandom".into(), e))?;
        ca.distinguished_name.push(
            DnType::CommonName,
            format!("image-bouncer CA {y:04}-{m:02}-{d:02} {suffix}"),
        );
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut ca, days);
        let key = KeyPair::generate()?;
        let cert = ca.self_signed(&key)?.pem();
        let key_pem = key.serialize_pem();
        Ok(Ca {
            cert,
            key: key_pem,
            issuer: Issuer::new(ca, key),
        })
    }

    /// An existing CA, from its PEM certificate and key.
    pub fn load(cert: &str, key: &str) -> Result<Ca, CertError> {
        let signing = KeyPair::from_pem(key)?;
        let issuer = Issuer::from_ca_cert_pem(cert, signing)?;
        Ok(Ca {
            cert: cert.to_string(),
            key: key.to_string(),
            issuer,
        })
    }
}

/// Certificates issued by a CA: serving, and optionally the apiserver's
/// client certificate.
pub struct Leaves {
    pub server_cert: String,
    pub server_key: String,
    pub client: Option<(String, String)>,
    /// Not-after, Unix seconds.
    pub not_after: i64,
}

/// Issues a serving certificate for `hosts` and `ips` and, with `client`,
/// a client certificate for the apiserver.
pub fn leaves(
    ca: &Ca,
    hosts: &[String],
    ips: &[IpAddr],
    days: u32,
    client: bool,
) -> Result<Leaves, CertError> {
    let mut server = CertificateParams::default();
    server.distinguished_name.push(
        DnType::CommonName,
        hosts
            .first()
            .map_or_else(|| "image-bouncer".to_string(), Clone::clone),
    );
    for h in hosts {
        let name = Ia5String::try_from(h.as_str()).map_err(|_| CertError::BadName(h.clone()))?;
        server.subject_alt_names.push(SanType::DnsName(name));
    }
    server
        .subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let not_after = set_validity(&mut server, days);
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &ca.issuer)?;
    let client = if client {
        let mut c = CertificateParams::default();
        c.distinguished_name.push(DnType::CommonName, CLIENT_CN);
        c.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        c.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        set_validity(&mut c, days);
        let key = KeyPair::generate()?;
        let cert = c.signed_by(&key, &ca.issuer)?;
        Some((cert.pem(), key.serialize_pem()))
    } else {
        None
    };
    Ok(Leaves {
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        client,
        not_after,
    })
}

/// Makes a CA and, signed by it, a serving certificate for `hosts` and
/// `ips` and a client certificate for the apiserver.
pub fn generate(hosts: &[String], ips: &[IpAddr], days: u32) -> Result<CertSet, CertError> {
    let ca = Ca::generate(days)?;
    let l = leaves(&ca, hosts, ips, days, true)?;
    let (client_cert, client_key) = l.client.unwrap_or_default();
    Ok(CertSet {
        ca_cert: ca.cert,
        ca_key: ca.key,
        server_cert: l.server_cert,
        server_key: l.server_key,
        client_cert,
        client_key,
        not_after: l.not_after,
    })
}

/// Checks that a host name is usable in a certificate and a URL.
pub fn check_host(h: &str) -> Result<(), CertError> {
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(CertError::BadName(h.to_string()))
    }
}

/// The files of a set, with whether each is secret.
pub fn files(set: &CertSet) -> [(&'static str, &str, bool); 6] {
    [
        (CA_CERT, &set.ca_cert, false),
        (CA_KEY, &set.ca_key, true),
        (SERVER_CERT, &set.server_cert, false),
        (SERVER_KEY, &set.server_key, true),
        (CLIENT_CERT, &set.client_cert, false),
        (CLIENT_KEY, &set.client_key, true),
    ]
}

/// Writes a set into `dir` (created 0700 if needed, else checked with
/// `files::private_dir`): keys 0600, certificates 0644, each atomically.
/// Without `force`, refuses if any of the files (or a symlink in its place)
/// exists, before writing anything.
pub fn write(dir: &Path, set: &CertSet, force: bool) -> Result<Vec<PathBuf>, CertError> {
    crate::files::private_dir(dir).map_err(|e| CertError::Write(dir.to_path_buf(), e))?;
    let all: Vec<(&str, String, bool)> = files(set)
        .into_iter()
        .map(|(n, pem, secret)| (n, pem.to_string(), secret))
        .collect();
    write_all(dir, &all, force)
}

/// Writes `(name, PEM, secret)` files into `dir` (keys 0600, the rest
/// 0644); without `force` refuses first if any is there (a symlink too).
fn write_all(
    dir: &Path,
    files: &[(&str, String, bool)],
    force: bool,
) -> Result<Vec<PathBuf>, CertError> {
    if !force {
        let existing: Vec<PathBuf> = files
            .iter()
            .map(|(n, _, _)| dir.join(n))
            .filter(|p| crate::files::exists(p))
            .collect();
        if !existing.is_empty() {
            return Err(CertError::Exists(existing));
        }
    }
    let mut written = Vec::new();
    for (name, pem, secret) in files {
        let path = dir.join(name);
        write_file(&path, pem.as_bytes(), if *secret { 0o600 } else { 0o644 })?;
        written.push(path);
    }
    Ok(written)
}

/// Writes a file atomically with `mode` (see `files::write_atomic`).
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertError> {
    crate::files::write_atomic(path, bytes, mode)
        .map_err(|e| CertError::Write(path.to_path_buf(), e))
}

/// Where the CA that signs comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// The CA in the output folder if there is one (renewal keeps it),
    /// else a new one.
    Folder,
    /// Always a new CA.
    New,
    /// This CA (certificate and key files); only its certificate is copied
    /// into the output folder.
    Given { cert: PathBuf, key: PathBuf },
}

/// What `certs` is asked to issue.
pub struct Issue<'a> {
    pub dir: &'a Path,
    pub hosts: &'a [String],
    pub ips: &'a [IpAddr],
    pub days: u32,
    /// Also the apiserver's client certificate.
    pub client: bool,
    /// The service's group: it may read the folder and the serving key.
    pub group: Option<u32>,
    pub force: bool,
    pub ca: CaSource,
}

/// What was written.
pub struct Issued {
    pub written: Vec<PathBuf>,
    /// True when an existing CA signed (nothing that trusts it changes).
    pub ca_reused: bool,
    /// The leaves' not-after, Unix seconds.
    pub not_after: i64,
    /// The signing CA's not-after, Unix seconds (0 when nothing was issued).
    pub ca_not_after: i64,
    /// The leaves were cut short to end with their CA.
    pub cut_to_ca: bool,
}

/// Days a leaf issued now may last under `ca`: `wanted`, or fewer so that
/// it does not outlive the CA (a chain fails when its CA has expired, and
/// a leaf that claims more only hides the date that matters).
fn days_under(ca: &Ca, wanted: u32) -> Result<(u32, i64), CertError> {
    use rustls::pki_types::pem::PemObject;
    let not_after = rustls::pki_types::CertificateDer::from_pem_slice(ca.cert.as_bytes())
        .ok()
        .and_then(|der| crate::der::cert_info(&der))
        .map(|info| info.not_after)
        .ok_or_else(|| {
            CertError::Write(
                PathBuf::from(CA_CERT),
                std::io::Error::other("the CA certificate cannot be read"),
            )
        })?;
    let left = (not_after - crate::time::unix_now()).div_euclid(86_400);
    if left < 1 {
        return Err(CertError::Write(
            PathBuf::from(CA_CERT),
            std::io::Error::other(format!(
                "the CA expires on {} or has expired: nothing it signs would be trusted; rotate it (--rotate-ca begin) or, if it already expired, make a new one with --new-ca",
                crate::time::rfc3339(not_after)
            )),
        ));
    }
    Ok((
        wanted.min(u32::try_from(left).unwrap_or(u32::MAX)),
        not_after,
    ))
}

fn read(path: &Path) -> Result<String, CertError> {
    crate::files::read_limited(path, 1 << 20)
        .map_err(|e| CertError::Write(path.to_path_buf(), std::io::Error::other(e)))
}

fn load_ca(dir: &Path, cert: &str, key: &str) -> Result<Ca, CertError> {
    Ca::load(&read(&dir.join(cert))?, &read(&dir.join(key))?)
}

/// Issues leaves (and a CA when needed) into a folder, then refreshes the
/// trust bundle.
pub fn issue(i: &Issue<'_>) -> Result<Issued, CertError> {
    issue_leaves(i, true)
}

/// [`issue`]; `bundle`: also rewrite `ca-bundle.crt` (a rotation step
/// writes it once, at its end).
fn issue_leaves(i: &Issue<'_>, bundle: bool) -> Result<Issued, CertError> {
    let dir = i.dir;
    crate::files::private_dir(dir).map_err(|e| CertError::Write(dir.to_path_buf(), e))?;
    let has = |name: &str| crate::files::exists(&dir.join(name));
    let mut files: Vec<(&str, String, bool)> = Vec::new();
    let (ca, ca_reused) = match &i.ca {
        CaSource::Given { cert, key } => {
            let ca = Ca::load(&read(cert)?, &read(key)?)?;
            files.push((CA_CERT, ca.cert.clone(), false));
            (ca, true)
        }
        CaSource::Folder if has(CA_CERT) && has(CA_KEY) => (load_ca(dir, CA_CERT, CA_KEY)?, true),
        // Half a CA (the key was moved off the node) is never replaced
        // behind the admin's back: whatever trusts it would refuse the new
        // leaves.
        CaSource::Folder if has(CA_CERT) || has(CA_KEY) => {
            let (there, gone) = if has(CA_CERT) {
                (CA_CERT, CA_KEY)
            } else {
                (CA_KEY, CA_CERT)
            };
            return Err(CertError::HalfCa {
                dir: dir.to_path_buf(),
                there,
                gone,
            });
        }
        _ => {
            let ca = Ca::generate(CA_DAYS)?;
            files.push((CA_CERT, ca.cert.clone(), false));
            files.push((CA_KEY, ca.key.clone(), true));
            (ca, false)
        }
    };
    let (days, ca_not_after) = days_under(&ca, i.days)?;
    let l = leaves(&ca, i.hosts, i.ips, days, i.client)?;
    files.push((SERVER_CERT, l.server_cert, false));
    files.push((SERVER_KEY, l.server_key, true));
    if let Some((c, k)) = l.client {
        files.push((CLIENT_CERT, c, false));
        files.push((CLIENT_KEY, k, true));
    }
    let mut written = write_all(dir, &files, i.force)?;
    if bundle {
        written.push(write_bundle(dir)?);
    }
    share(i)?;
    Ok(Issued {
        written,
        ca_reused,
        not_after: l.not_after,
        ca_not_after,
        cut_to_ca: days < i.days,
    })
}

/// With a group: the folder 0750 and the serving key 0640 for it, so that
/// the service (running as that group) reads what it serves with, and
/// nothing else secret (the CA and client keys stay 0600).
fn share(i: &Issue<'_>) -> Result<(), CertError> {
    let Some(gid) = i.group else {
        return Ok(());
    };
    for (path, mode) in [
        (i.dir.to_path_buf(), 0o750),
        (i.dir.join(SERVER_KEY), 0o640),
    ] {
        if crate::files::exists(&path) {
            crate::files::share_with_group(&path, gid, mode)
                .map_err(|e| CertError::Write(path.clone(), e))?;
        }
    }
    Ok(())
}

/// `ca-bundle.crt`: the CA, and during a rotation the next or previous one.
pub fn write_bundle(dir: &Path) -> Result<PathBuf, CertError> {
    let mut bundle = String::new();
    for name in [CA_CERT, CA_NEXT_CERT, CA_PREVIOUS_CERT] {
        let path = dir.join(name);
        if crate::files::exists(&path) {
            bundle.push_str(read(&path)?.trim_end());
            bundle.push('\n');
        }
    }
    let path = dir.join(CA_BUNDLE);
    write_file(&path, bundle.as_bytes(), 0o644)?;
    Ok(path)
}

/// The steps of a CA rotation; each keeps admission working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateStep {
    /// A new CA (`ca-next.*`), trusted beside the old one in the bundle.
    Begin,
    /// New leaves from the new CA, which becomes `ca.*`; the old one stays
    /// in the bundle (`ca-previous.*`).
    Switch,
    /// The old CA leaves the bundle.
    Finish,
}

impl RotateStep {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "begin" => Ok(RotateStep::Begin),
            "switch" => Ok(RotateStep::Switch),
            "finish" => Ok(RotateStep::Finish),
            other => Err(format!("{other:?} is not begin, switch or finish")),
        }
    }
}

fn missing(dir: &Path, name: &str, hint: &str) -> CertError {
    CertError::Write(
        dir.join(name),
        std::io::Error::other(format!("missing; {hint}")),
    )
}

/// One step of a CA rotation in `dir`; `Switch` issues leaves as [`issue`].
// One function on purpose, the three steps of a rotation, each a few guarded file moves;
// together they show the order the files change in.
pub fn rotate(step: RotateStep, i: &Issue<'_>) -> Result<Issued, CertError> {
    let dir = i.dir;
    crate::files::private_dir(dir).map_err(|e| CertError::Write(dir.to_path_buf(), e))?;
    let has = |name: &str| crate::files::exists(&dir.join(name));
    let mut written = Vec::new();
    let (mut not_after, mut ca_not_after, mut cut_to_ca) = (0, 0, false);
    match step {
        RotateStep::Begin => {
            if !(has(CA_CERT) && has(CA_KEY)) {
                return Err(missing(dir, CA_KEY, "there is no CA to rotate from"));
            }
            if has(CA_NEXT_CERT) || has(CA_PREVIOUS_CERT) {
                return Err(CertError::Write(
                    dir.to_path_buf(),
                    std::io::Error::other(
                        "a rotation is under way: run --rotate-ca switch or finish",
                    ),
                ));
            }
            let next = Ca::generate(CA_DAYS)?;
            for (name, pem, mode) in [
                (CA_NEXT_CERT, &next.cert, 0o644),
                (CA_NEXT_KEY, &next.key, 0o600),
            ] {
                write_file(&dir.join(name), pem.as_bytes(), mode)?;
                written.push(dir.join(name));
            }
        }
        RotateStep::Switch => {
            if !(has(CA_NEXT_CERT) && has(CA_NEXT_KEY)) {
                return Err(missing(dir, CA_NEXT_CERT, "run --rotate-ca begin first"));
            }
            let (next_cert, next_key) = (
                read(&dir.join(CA_NEXT_CERT))?,
                read(&dir.join(CA_NEXT_KEY))?,
            );
            // The old CA is kept as ca-previous first, once: a switch that
            // stops half-way and is run again still knows the old CA (it
            // would otherwise take the new ca.crt for it and drop the old
            // one from the bundle).
            if !has(CA_PREVIOUS_CERT) {
                let (old_cert, old_key) = (read(&dir.join(CA_CERT))?, read(&dir.join(CA_KEY))?);
                for (name, pem, mode) in [
                    (CA_PREVIOUS_CERT, &old_cert, 0o644),
                    (CA_PREVIOUS_KEY, &old_key, 0o600),
                ] {
                    write_file(&dir.join(name), pem.as_bytes(), mode)?;
                }
            }
            // Issue first: nothing moves if the new CA cannot sign. The
            // bundle is not rewritten until the end: written in between
            // (ca.crt already the new CA, ca-previous.crt not yet there)
            // it would hold the new CA twice and not the old one, and a
            // server reloading then would refuse every client still on an
            // old-CA certificate (`UnknownCA`, seen under load).
            let issued = issue_leaves(
                &Issue {
                    ca: CaSource::Given {
                        cert: dir.join(CA_NEXT_CERT),
                        key: dir.join(CA_NEXT_KEY),
                    },
                    force: true,
                    ..*i
                },
                false,
            )?;
            for (name, pem, mode) in [(CA_CERT, &next_cert, 0o644), (CA_KEY, &next_key, 0o600)] {
                write_file(&dir.join(name), pem.as_bytes(), mode)?;
            }
            for name in [CA_NEXT_CERT, CA_NEXT_KEY] {
                std::fs::remove_file(dir.join(name))
                    .map_err(|e| CertError::Write(dir.join(name), e))?;
            }
            written = issued.written;
            not_after = issued.not_after;
            ca_not_after = issued.ca_not_after;
            cut_to_ca = issued.cut_to_ca;
        }
        RotateStep::Finish => {
            if !has(CA_PREVIOUS_CERT) {
                return Err(missing(
                    dir,
                    CA_PREVIOUS_CERT,
                    "run --rotate-ca switch first",
                ));
            }
            for name in [CA_PREVIOUS_CERT, CA_PREVIOUS_KEY] {
                if has(name) {
                    std::fs::remove_file(dir.join(name))
                        .map_err(|e| CertError::Write(dir.join(name), e))?;
                }
            }
        }
    }
    written.push(write_bundle(dir)?);
    written.dedup();
    share(i)?;
    Ok(Issued {
        written,
        ca_reused: step != RotateStep::Switch,
        not_after,
        ca_not_after,
        cut_to_ca,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::der::cert_info;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use std::os::unix::fs::PermissionsExt;

    /// Every `ca-bundle.crt` a rotation writes trusts every CA a client
    /// may still hold: during `switch` the old CA never leaves the bundle
    /// (the cause of `UnknownCA` failures seen under load). A reader
    /// polls the bundle while the steps run, many times over.
    #[test]
    fn a_rotation_never_writes_a_bundle_without_the_old_ca() {
        let dir = std::env::temp_dir().join(format!("ib-rotation-bundle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let hosts = ["localhost".to_string()];
        let issue = |ca: CaSource, force: bool| Issue {
            dir: &dir,
            hosts: &hosts,
            ips: &[],
            days: 30,
            client: true,
            group: None,
            force,
            ca,
        };
        issue_leaves(&issue(CaSource::Folder, false), true).unwrap();
        let bundle = dir.join(CA_BUNDLE);
        let certs_in = |text: &str| -> std::collections::BTreeSet<String> {
            text.split("-----END CERTIFICATE-----")
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect()
        };
        for round in 0..10 {
            rotate(RotateStep::Begin, &issue(CaSource::Folder, true)).unwrap();
            let old = certs_in(&read(&dir.join(CA_CERT)).unwrap());
            let stop = std::sync::atomic::AtomicBool::new(false);
            let missing = std::thread::scope(|s| {
                let watcher = s.spawn(|| {
                    let mut missing = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if let Ok(text) = std::fs::read_to_string(&bundle)
                            && !old.is_subset(&certs_in(&text))
                        {
                            missing += 1;
                        }
                    }
                    missing
                });
                rotate(RotateStep::Switch, &issue(CaSource::Folder, true)).unwrap();
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                watcher.join().unwrap()
            });
            assert_eq!(
                missing, 0,
                "round {round}: a bundle without the old CA was readable"
            );
            rotate(RotateStep::Finish, &issue(CaSource::Folder, true)).unwrap();
        }
        // A switch that stopped after the old CA was kept and the new one
        // written as ca.crt, run again: the old CA stays trusted.
        rotate(RotateStep::Begin, &issue(CaSource::Folder, true)).unwrap();
        let old = certs_in(&read(&dir.join(CA_CERT)).unwrap());
        std::fs::copy(dir.join(CA_CERT), dir.join(CA_PREVIOUS_CERT)).unwrap();
        std::fs::copy(dir.join(CA_KEY), dir.join(CA_PREVIOUS_KEY)).unwrap();
        std::fs::copy(dir.join(CA_NEXT_CERT), dir.join(CA_CERT)).unwrap();
        rotate(RotateStep::Switch, &issue(CaSource::Folder, true)).unwrap();
        assert!(old.is_subset(&certs_in(&read(&bundle).unwrap())));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A new CA lasts CA_DAYS; leaves renewed from a CA that ends sooner
    /// than `--days` end with it (and say so), and an expired CA signs
    /// nothing.
    #[test]
    fn leaves_never_outlive_their_ca() {
        let dir = std::env::temp_dir().join(format!("ib-ca-life-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let hosts = ["localhost".to_string()];
        let issue = |force: bool| Issue {
            dir: &dir,
            hosts: &hosts,
            ips: &[],
            days: 365,
            client: true,
            group: None,
            force,
            ca: CaSource::Folder,
        };
        let day = |t: i64| t.div_euclid(86_400);
        let today = day(crate::time::unix_now());
        let first = issue_leaves(&issue(false), true).unwrap();
        assert_eq!(day(first.ca_not_after) - today, i64::from(CA_DAYS));
        assert_eq!(day(first.not_after) - today, 365);
        assert!(!first.cut_to_ca);
        // The same folder with a CA that has 10 days left.
        let short = Ca::generate(10).unwrap();
        write_file(&dir.join(CA_CERT), short.cert.as_bytes(), 0o644).unwrap();
        write_file(&dir.join(CA_KEY), short.key.as_bytes(), 0o600).unwrap();
        let renewed = issue_leaves(&issue(true), true).unwrap();
        assert!(renewed.cut_to_ca && renewed.ca_reused);
        assert_eq!(day(renewed.ca_not_after) - today, 10);
        assert!(renewed.not_after <= renewed.ca_not_after);
        let served = CertificateDer::from_pem_file(dir.join(SERVER_CERT)).unwrap();
        assert_eq!(cert_info(&served).unwrap().not_after, renewed.not_after);
        // An expired CA (valid from yesterday for 0 days) is refused.
        let expired = Ca::generate(0).unwrap();
        write_file(&dir.join(CA_CERT), expired.cert.as_bytes(), 0o644).unwrap();
        write_file(&dir.join(CA_KEY), expired.key.as_bytes(), 0o600).unwrap();
        let e = issue_leaves(&issue(true), true).err().unwrap().to_string();
        assert!(e.contains("has expired") && e.contains("--new-ca"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn generates_a_working_chain() {
        let set = generate(
            &["webhook.example".into(), "localhost".into()],
            &["127.0.0.1".parse().unwrap()],
            30,
        )
        .unwrap();
        let server = CertificateDer::from_pem_slice(set.server_cert.as_bytes()).unwrap();
        let info = cert_info(&server).unwrap();
        assert_eq!(info.dns_names, ["webhook.example", "localhost"]);
        assert_eq!(info.common_names, ["webhook.example"]);
        assert_eq!(info.not_after, set.not_after);
        let client = CertificateDer::from_pem_slice(set.client_cert.as_bytes()).unwrap();
        assert_eq!(cert_info(&client).unwrap().common_names, [CLIENT_CN]);
        // rustls accepts the serving pair with the CA as trust anchor.
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(set.ca_cert.as_bytes()).unwrap())
            .unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            crate::server::tls::provider(),
        )
        .build()
        .unwrap();
        let now = rustls::pki_types::UnixTime::now();
        for name in ["webhook.example", "localhost", "127.0.0.1"] {
            let sn = rustls::pki_types::ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&server, &[], &sn, &[], now)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other = rustls::pki_types::ServerName::try_from("evil.example").unwrap();
        assert!(
            verifier
                .verify_server_cert(&server, &[], &other, &[], now)
                .is_err()
        );
    }

    #[test]
    fn writes_keys_private_and_refuses_to_overwrite() {
        let dir = std::env::temp_dir().join(format!("ib-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let set = generate(&["localhost".into()], &[], 1).unwrap();
        let written = write(&dir, &set, false).unwrap();
        assert_eq!(written.len(), 6);
        for (name, _, secret) in files(&set) {
            let mode = std::fs::metadata(dir.join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, if secret { 0o600 } else { 0o644 }, "{name}");
        }
        let e = write(&dir, &set, false).unwrap_err().to_string();
        assert!(e.contains("already exist; use --force"), "{e}");
        assert!(write(&dir, &set, true).is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn host_names() {
        for ok in [
            "localhost",
            "image-bouncer.local",
            "a.b-c.example",
            "*.example.com",
        ] {
            assert!(check_host(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x.example", "a..b", "under_score.example", "x y"] {
            assert!(check_host(bad).is_err(), "{bad}");
        }
    }
}
