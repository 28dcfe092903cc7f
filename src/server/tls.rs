//! rustls server configuration from PEM files, client-certificate checks,
//! and file fingerprints for reloading.
//!
//! A reload builds a whole new `ServerConfig` (certificate, key and client
//! CA together) and the server swaps it in for new connections; established
//! connections keep the one they started with. This module reads files but
//! does not watch them or log: `server/mod.rs` does.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};

pub use crate::config::TlsFiles;
use crate::der;
use crate::files::read_limited;

/// PEM files are a few KB; a CA bundle maybe a few hundred.
const PEM_FILE_MAX: u64 = 1024 * 1024;
/// The only application protocol we speak. Offering `h2` would make the
/// apiserver's Go client switch to HTTP/2, which we do not implement.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// A configuration in force: rustls' and what our own client checks need.
pub struct Active {
    pub config: Arc<ServerConfig>,
    /// The client CA certificates (empty without `--client-ca`).
    pub anchors: Vec<Anchor>,
}

/// A client CA, as far as the path length check needs it.
#[derive(Debug, Clone)]
pub struct Anchor {
    subject: Vec<u8>,
    path_len: Option<u64>,
}

/// What the client checks need of the client CA certificates.
pub fn anchors_of(certs: &[CertificateDer<'_>]) -> Vec<Anchor> {
    certs
        .iter()
        .filter_map(|c| der::cert_info(c))
        .map(|info| Anchor {
            subject: info.subject,
            path_len: info.path_len,
        })
        .collect()
}

/// A ready configuration and facts about its certificate.
pub struct Loaded {
    pub config: Arc<Active>,
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
    let mut anchors = Vec::new();
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            let certs = read_certs(ca)?;
            anchors = anchors_of(&certs);
            for cert in certs {
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
        config: Arc::new(Active {
            config: Arc::new(config),
            anchors,
        }),
        not_after,
    })
}

/// The checks on a client certificate chain (already verified by webpki
/// against the client CA) that webpki does not make: the leaf must be meant
/// for client authentication (an extendedKeyUsage with clientAuth; webpki
/// accepts a certificate without the extension), the chain must respect the
/// path length of the CA that signed it (webpki keeps no constraints on
/// trust anchors), and with `allowed` names the certificate must name one:
/// one of its SAN DNS names, or when it has none its single subject CN.
pub fn client_allowed(
    chain: &[CertificateDer<'_>],
    anchors: &[Anchor],
    allowed: &[String],
) -> Result<(), String> {
    let infos: Vec<der::CertInfo> = chain
        .iter()
        .map(|c| der::cert_info(c))
        .collect::<Option<_>>()
        .ok_or("client certificate could not be read")?;
    let leaf = infos.first().ok_or("no client certificate")?;
    if leaf.client_auth != Some(true) {
        return Err("client certificate is not for client authentication (no clientAuth in its extended key usage)".into());
    }
    // Follow issuers through the certificates sent, to the CA.
    let mut issuer = &leaf.issuer;
    let mut intermediates = 0u64;
    loop {
        let matching: Vec<&Anchor> = anchors.iter().filter(|a| &a.subject == issuer).collect();
        if !matching.is_empty() {
            if matching
                .iter()
                .any(|a| a.path_len.is_none_or(|n| intermediates <= n))
            {
                break;
            }
            return Err(format!(
                "client certificate chain has {intermediates} intermediate CA certificates, more than the client CA's path length allows"
            ));
        }
        let next = infos[1..].iter().find(|i| &i.subject == issuer);
        match next {
            Some(i) if (intermediates as usize) < infos.len() => {
                intermediates += 1;
                issuer = &i.issuer;
            }
            _ => return Err("client certificate chain does not lead to a client CA".into()),
        }
    }
    if allowed.is_empty() {
        return Ok(());
    }
    let names: Vec<&String> = if !leaf.dns_names.is_empty() {
        leaf.dns_names.iter().collect()
    } else if leaf.common_names.len() == 1 {
        leaf.common_names.iter().collect()
    } else {
        Vec::new()
    };
    if names.iter().any(|n| allowed.contains(n)) {
        Ok(())
    } else {
        Err(format!(
            "client certificate names {names:?} (its SAN DNS names, or its one CN when it has none), none of which is an accepted --client-name"
        ))
    }
}

pub use crate::files::Fingerprint;

impl TlsFiles {
    pub fn paths(&self) -> Vec<&Path> {
        let mut v = vec![self.cert.as_path(), self.key.as_path()];
        if let Some(ca) = &self.client_ca {
            v.push(ca);
        }
        v
    }
}

/// `--self-signed`: a throwaway CA and serving certificate for localhost,
/// made at start and written to a new private temporary folder (so that
/// reloading works as for given files; the server removes the folder when
/// it ends). Returns the files and the CA certificate, which the server
/// writes where clients look once it listens (a failed start must not
/// replace the CA file of one that runs).
pub fn throwaway(ss: &crate::config::SelfSigned) -> Result<(TlsFiles, String), String> {
    use crate::certs;
    let loopback: [std::net::IpAddr; 2] = [
        std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::Ipv6Addr::LOCALHOST.into(),
    ];
    let set =
        certs::generate(&["localhost".to_string()], &loopback, 30).map_err(|e| e.to_string())?;
    // A new folder with a random name, never one made beforehand by
    // someone who could then read the keys or swap the certificate.
    let tmp = std::env::temp_dir();
    let dir = crate::files::fresh_private_dir(&tmp, "image-bouncer-self-signed-").map_err(|e| {
        format!(
            "{}: cannot create a private folder for the throwaway key ({e}); set TMPDIR to a writable folder, or give --cert and --key",
            tmp.display()
        )
    })?;
    certs::write(&dir, &set, false).map_err(|e| e.to_string())?;
    Ok((
        TlsFiles {
            cert: dir.join(certs::SERVER_CERT),
            key: dir.join(certs::SERVER_KEY),
            client_ca: ss.client_ca.clone(),
        },
        set.ca_cert,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, SanType,
    };

    struct Ca {
        params: CertificateParams,
        key: KeyPair,
        der: CertificateDer<'static>,
    }

    fn ca(name: &str, constraint: BasicConstraints, issuer: Option<&Ca>) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(constraint);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = match issuer {
            None => params.self_signed(&key).unwrap(),
            Some(i) => params
                .signed_by(&key, &Issuer::from_params(&i.params, &i.key))
                .unwrap(),
        };
        Ca {
            der: cert.der().clone(),
            params,
            key,
        }
    }

    fn leaf(
        issuer: &Ca,
        cn: &str,
        dns: &[&str],
        eku: Vec<ExtendedKeyUsagePurpose>,
    ) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = dns
            .iter()
            .map(|d| SanType::DnsName((*d).try_into().unwrap()))
            .collect();
        params.extended_key_usages = eku;
        let key = KeyPair::generate().unwrap();
        params
            .signed_by(&key, &Issuer::from_params(&issuer.params, &issuer.key))
            .unwrap()
            .der()
            .clone()
    }

    #[test]
    fn client_chains_are_checked_where_webpki_does_not() {
        let client = || vec![ExtendedKeyUsagePurpose::ClientAuth];
        let root = ca("root pathlen 0", BasicConstraints::Constrained(0), None);
        let anchors = anchors_of(std::slice::from_ref(&root.der));
        let names = ["kube-apiserver".to_string()];
        // Directly under the CA, clientAuth, CN only: accepted.
        let ok = leaf(&root, "kube-apiserver", &[], client());
        assert_eq!(client_allowed(&[ok], &anchors, &names), Ok(()));
        // No extendedKeyUsage, or only serverAuth: refused.
        for eku in [vec![], vec![ExtendedKeyUsagePurpose::ServerAuth]] {
            let c = leaf(&root, "kube-apiserver", &[], eku);
            let e = client_allowed(&[c], &anchors, &[]).unwrap_err();
            assert!(e.contains("not for client authentication"), "{e}");
        }
        // Under an intermediate although the CA says pathlen 0: refused.
        let mid = ca("intermediate", BasicConstraints::Unconstrained, Some(&root));
        let c = leaf(&mid, "kube-apiserver", &[], client());
        let e = client_allowed(&[c.clone(), mid.der.clone()], &anchors, &names).unwrap_err();
        assert!(
            e.contains("1 intermediate CA certificates, more than"),
            "{e}"
        );
        // An unconstrained root allows it.
        let open = ca("root", BasicConstraints::Unconstrained, None);
        let mid2 = ca(
            "intermediate 2",
            BasicConstraints::Unconstrained,
            Some(&open),
        );
        let c2 = leaf(&mid2, "kube-apiserver", &[], client());
        let open_anchors = anchors_of(std::slice::from_ref(&open.der));
        assert_eq!(
            client_allowed(&[c2, mid2.der.clone()], &open_anchors, &names),
            Ok(())
        );
        // With a DNS SAN, the CN is not a name.
        let c = leaf(&root, "kube-apiserver", &["other.example.com"], client());
        let e = client_allowed(std::slice::from_ref(&c), &anchors, &names).unwrap_err();
        assert!(e.contains("[\"other.example.com\"]"), "{e}");
        assert_eq!(
            client_allowed(&[c], &anchors, &["other.example.com".to_string()]),
            Ok(())
        );
    }
}
