//! Which addresses a registry request may connect to. Registries are named
//! by whoever writes a pod's image, so a request must never reach the
//! node's or the pod network's own services: loopback, link-local (where
//! clouds serve instance metadata and credentials, 169.254.169.254 and
//! fd00:ec2::254) and the unspecified address (which Linux connects to
//! loopback) are refused, whatever name leads there (a literal, a DNS name,
//! a redirect, a token realm), unless the configuration names that host
//! itself (a `registries` entry, a proxy). Checked where the name is
//! resolved, so that what is checked is what is connected to.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};

use ureq::config::Config;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// What the refusal says; [`refusal`] recognises it.
const REFUSED: &str = "is a loopback, link-local or metadata address";

/// Whether an address is one no unnamed registry may be reached at
/// (`image_ref::is_node_local`).
pub fn forbidden(ip: IpAddr) -> bool {
    crate::image_ref::is_node_local(ip)
}

/// The hosts the configuration names (by `image_ref::canonical_host`)
/// with the port each is named on, which may be anywhere: shared by every
/// agent of one client. Naming `127.0.0.1:5000` opens that port, not the
/// node's other services.
#[derive(Debug, Default, Clone)]
pub struct Named(Arc<RwLock<HashSet<HostPort>>>);

/// A host by identity, and its port (`None`: every port).
type HostPort = (String, Option<u16>);

impl Named {
    /// Names `host:port`; `host` alone is every port of it (for tests and
    /// callers that name a whole host on purpose).
    pub fn add(&self, host_or_domain: &str) {
        let (host, port) = crate::image_ref::split_port(host_or_domain);
        let port = port.and_then(|p| p.parse::<u16>().ok());
        self.add_port(host, port);
    }

    /// Names `host` on `port` (`None`: every port).
    pub fn add_port(&self, host: &str, port: Option<u16>) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((crate::image_ref::canonical_host(host), port));
    }

    /// Whether `host` on `port` is named.
    pub fn contains(&self, host: &str, port: u16) -> bool {
        let host = crate::image_ref::canonical_host(host);
        let named = self.0.read().unwrap_or_else(PoisonError::into_inner);
        named.contains(&(host.clone(), Some(port))) || named.contains(&(host, None))
    }
}

/// Refuses a target that names a node-local address literally and is not
/// named: the check for connections whose names a proxy resolves (the
/// resolver below only sees the proxy's).
pub fn check_literal(named: &Named, host: &str, port: u16) -> Result<(), String> {
    let (host, _) = crate::image_ref::split_port(host);
    if crate::image_ref::node_local_literal(host) && !named.contains(host, port) {
        return Err(refused_text(host));
    }
    Ok(())
}

fn refused_text(host: &str) -> String {
    format!("{host} {REFUSED}; it is only contacted when a `registries` entry names it")
}

/// ureq's resolver, keeping only the addresses a request may reach.
#[derive(Debug)]
pub struct Guarded {
    pub named: Named,
}

impl Resolver for Guarded {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let resolved = DefaultResolver::default().resolve(uri, config, timeout)?;
        let host = uri.host().unwrap_or("");
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("http") {
                80
            } else {
                443
            });
        if self.named.contains(host, port) {
            return Ok(resolved);
        }
        let mut kept = self.empty();
        for a in resolved.iter().filter(|a| !forbidden(a.ip())) {
            kept.push(*a);
        }
        if kept.is_empty() {
            return Err(ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                refused_text(host),
            )));
        }
        Ok(kept)
    }
}

/// The refusal's words, if `e` is the guard's refusal.
pub fn refusal(e: &ureq::Error) -> Option<String> {
    match e {
        ureq::Error::Io(io)
            if io.kind() == std::io::ErrorKind::PermissionDenied
                && io.to_string().contains(REFUSED) =>
        {
            Some(io.to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_local_addresses_are_forbidden() {
        for a in [
            "127.0.0.1",
            "127.1.2.3",
            "169.254.169.254",
            "169.254.0.1",
            "0.0.0.0",
            "100.100.100.200",
            "168.63.129.16",
            "::1",
            "::",
            "fe80::1",
            "febf::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
        ] {
            assert!(forbidden(a.parse().unwrap()), "{a}");
        }
        for a in [
            "10.0.0.1",
            "192.168.1.1",
            "8.8.8.8",
            "169.255.0.1",
            "100.100.100.201",
            "fd00:ec2::253",
            "fec0::1",
            "2001:db8::1",
            "64:ff9b::808:808",
            "::ffff:8.8.8.8",
        ] {
            assert!(!forbidden(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn named_hosts_by_identity_and_port() {
        let n = Named::default();
        n.add("127.0.0.1:5000");
        n.add("Registry.Local");
        assert!(n.contains("127.0.0.1", 5000));
        assert!(
            !n.contains("127.0.0.1", 10250),
            "another port of a named host"
        );
        assert!(n.contains("registry.local", 443) && n.contains("REGISTRY.local", 8080));
        assert!(!n.contains("127.0.0.2", 5000));
        assert!(check_literal(&n, "127.0.0.1", 5000).is_ok());
        assert!(check_literal(&n, "127.0.0.1", 22).is_err());
        assert!(check_literal(&n, "[::ffff:169.254.169.254]", 443).is_err());
        assert!(check_literal(&n, "registry.example", 443).is_ok());
    }
}
