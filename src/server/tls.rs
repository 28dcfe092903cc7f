//! rustls server configuration from PEM files, client-certificate checks,
//! and file fingerprints for reloading.
//!
//! A reload builds a whole new `ServerConfig` (certificate, key and client
//! CA together) and the server swaps it in for new connections; established
//! connections keep the one they started with. This module reads files but
//! does not watch them or log: `server/mod.rs` does.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};

use crate::config::read_limited;
use crate::server::der;

/// PEM files are a few KB; a CA bundle maybe a few hundred.
const PEM_FILE_MAX: u64 = 1024 * 1024;
/// The only application protocol we speak. Offering `h2` would make the
/// apiserver's Go client switch to HTTP/2, which we do not implement.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The files a TLS configuration is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// A ready configuration and facts about its certificate.
pub struct Loaded {
    pub config: Arc<ServerConfig>,
    /// Not-after of the serving certificate, Unix seconds (0 if unreadable).
    pub not_after: i64,
}

#[derive(Debug)]
pub enum TlsError {
    Read(String),
    Pem {
        path: PathBuf,
        reason: String,
    },
    NoCertificate(PathBuf),
    Rustls {
        what: &'static str,
        source: rustls::Error,
    },
    ClientVerifier(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read(e) => f.write_str(e),
            TlsError::Pem { path, reason } => write!(f, "{}: {reason}", path.display()),
            TlsError::NoCertificate(p) => write!(f, "{}: no CERTIFICATE block found", p.display()),
            TlsError::Rustls { what, source } => write!(f, "{what}: {source}"),
            TlsError::ClientVerifier(e) => write!(f, "client CA: {e}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Rustls { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = read_limited(path, PEM_FILE_MAX).map_err(TlsError::Read)?;
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read_limited(path, PEM_FILE_MAX).map_err(TlsError::Read)?;
    // PKCS#1 (RSA), PKCS#8 and SEC1 (EC) blocks are all recognised.
    PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        reason: format!("no usable private key: {e}"),
    })
}

/// Builds a server configuration from the files; every failure names the
/// file and the reason.
pub fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let chain = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let not_after = der::cert_info(&chain[0]).map_or(0, |i| i.not_after);
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| TlsError::Rustls {
            what: "protocol versions",
            source,
        })?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|source| TlsError::Rustls {
                    what: "client CA certificate",
                    source,
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientVerifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Rustls {
            what: "certificate and key (do they belong together?)",
            source,
        })?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        not_after,
    })
}

/// Whether a verified client certificate names an accepted client: its
/// subject CN or one of its SAN DNS names is in `allowed`. An empty list
/// accepts every certificate the client CA signed.
pub fn client_name_allowed(cert: &CertificateDer<'_>, allowed: &[String]) -> Result<(), String> {
    if allowed.is_empty() {
        return Ok(());
    }
    let info = der::cert_info(cert).ok_or("client certificate could not be read")?;
    let names: Vec<&String> = info.common_names.iter().chain(&info.dns_names).collect();
    if names.iter().any(|n| allowed.contains(n)) {
        Ok(())
    } else {
        Err(format!(
            "client certificate names {names:?}, none of which is an accepted --client-name"
        ))
    }
}

/// What identifies a file's content: a Kubernetes secret volume swaps a
/// `..data` symlink (new inode), an in-place rewrite changes size, mtime or
/// at least the bytes (two same-size writes within one clock tick keep the
/// mtime, so the content is hashed too; these files are small). Missing
/// files fingerprint as `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Vec<Option<FileId>>);

/// Device, inode, size, mtime (s, ns) and a hash of the content.
type FileId = (u64, u64, u64, i64, i64, u64);

/// Files larger than this are not hashed (metadata must do).
const HASH_MAX: u64 = 8 * 1024 * 1024;

impl Fingerprint {
    pub fn of(paths: &[&Path]) -> Fingerprint {
        use std::hash::{Hash, Hasher};
        Fingerprint(
            paths
                .iter()
                .map(|p| {
                    let m = std::fs::metadata(p).ok()?;
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    if m.size() <= HASH_MAX {
                        std::fs::read(p).ok()?.hash(&mut h);
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

impl TlsFiles {
    pub fn paths(&self) -> Vec<&Path> {
        let mut v = vec![self.cert.as_path(), self.key.as_path()];
        if let Some(ca) = &self.client_ca {
            v.push(ca);
        }
        v
    }
}
