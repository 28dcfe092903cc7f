//! `image-bouncer certs` and `serve --self-signed`: a CA, a serving
//! certificate and a client certificate for the apiserver, ECDSA P-256.
//!
//! Kept deliberately small: no renewal, no CSR flow. Keys never leave the
//! output folder and are written mode 0600 (safely: `files.rs`); existing
//! files are only replaced with `--force`.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::logging::civil_from_days;

/// File names in the output folder (the serving pair uses the names of a
/// Kubernetes TLS secret).
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "tls.crt";
pub const SERVER_KEY: &str = "tls.key";
pub const CLIENT_CERT: &str = "apiserver-client.crt";
pub const CLIENT_KEY: &str = "apiserver-client.key";
/// The client certificate's subject CN, to be given to `--client-name`.
pub const CLIENT_CN: &str = "kube-apiserver";
/// Longest validity accepted; longer certificates are refused by some clients.
pub const MAX_DAYS: u32 = 3650;

#[derive(Debug)]
pub enum CertError {
    Generate(rcgen::Error),
    BadName(String),
    Exists(Vec<PathBuf>),
    Write(PathBuf, std::io::Error),
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

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// Valid from yesterday (clock skew between nodes) for `days` days.
fn set_validity(params: &mut CertificateParams, days: u32) -> i64 {
    let today = unix_now().div_euclid(86_400);
    let at = |offset: i64| {
        let (y, m, d) = civil_from_days(today + offset);
        // civil_from_days yields a real calendar date: this cannot panic.
        rcgen::date_time_ymd(y as i32, m as u8, d as u8)
    };
    params.not_before = at(-1);
    params.not_after = at(i64::from(days));
    (today + i64::from(days)) * 86_400
}

/// Makes a CA and, signed by it, a serving certificate for `hosts` and
/// `ips` and a client certificate for the apiserver.
pub fn generate(hosts: &[String], ips: &[IpAddr], days: u32) -> Result<CertSet, CertError> {
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "image-bouncer CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let not_after = set_validity(&mut ca, days);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::from_params(&ca, &ca_key);

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
    set_validity(&mut server, days);
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &issuer)?;

    let mut client = CertificateParams::default();
    client
        .distinguished_name
        .push(DnType::CommonName, CLIENT_CN);
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    set_validity(&mut client, days);
    let client_key = KeyPair::generate()?;
    let client_cert = client.signed_by(&client_key, &issuer)?;

    Ok(CertSet {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key.serialize_pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
        not_after,
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
    let all = files(set);
    if !force {
        let existing: Vec<PathBuf> = all
            .iter()
            .map(|(n, _, _)| dir.join(n))
            .filter(|p| crate::files::exists(p))
            .collect();
        if !existing.is_empty() {
            return Err(CertError::Exists(existing));
        }
    }
    crate::files::private_dir(dir).map_err(|e| CertError::Write(dir.to_path_buf(), e))?;
    let mut written = Vec::new();
    for (name, pem, secret) in all {
        let path = dir.join(name);
        write_file(&path, pem.as_bytes(), if secret { 0o600 } else { 0o644 })?;
        written.push(path);
    }
    Ok(written)
}

/// Writes a file atomically with `mode` (see `files::write_atomic`).
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertError> {
    crate::files::write_atomic(path, bytes, mode)
        .map_err(|e| CertError::Write(path.to_path_buf(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::der::cert_info;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use std::os::unix::fs::PermissionsExt;

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
