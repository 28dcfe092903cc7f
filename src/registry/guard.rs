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

/// Whether an address is one no unnamed registry may be reached at.
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback() || v4.is_link_local() || v4.is_unspecified() || v4.octets()[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                // fe80::/10
                || (seg[0] & 0xffc0) == 0xfe80
                // AWS's instance metadata over IPv6.
                || v6 == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
    }
}

/// The hosts the configuration names (by `image_ref::canonical_host`),
/// which may be anywhere: shared by every agent of one client.
#[derive(Debug, Default, Clone)]
pub struct Named(Arc<RwLock<HashSet<String>>>);

impl Named {
    /// Names a host (`host` or `host:port`; the port is not part of it).
    pub fn add(&self, host_or_domain: &str) {
        let (host, _) = crate::image_ref::split_port(host_or_domain);
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(crate::image_ref::canonical_host(host));
    }

    fn contains(&self, host: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&crate::image_ref::canonical_host(host))
    }
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
        if self.named.contains(host) {
            return Ok(resolved);
        }
        let mut kept = self.empty();
        for a in resolved.iter().filter(|a| !forbidden(a.ip())) {
            kept.push(*a);
        }
        if kept.is_empty() {
            return Err(ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{host} {REFUSED}; it is only contacted when a `registries` entry names it"
                ),
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
            "::1",
            "::",
            "fe80::1",
            "febf::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(forbidden(a.parse().unwrap()), "{a}");
        }
        for a in [
            "10.0.0.1",
            "192.168.1.1",
            "8.8.8.8",
            "169.255.0.1",
            "fd00:ec2::253",
            "fec0::1",
            "2001:db8::1",
        ] {
            assert!(!forbidden(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn named_hosts_by_identity() {
        let n = Named::default();
        n.add("127.0.0.1:5000");
        n.add("Registry.Local");
        assert!(n.contains("127.0.0.1"));
        assert!(n.contains("registry.local"));
        assert!(!n.contains("127.0.0.2"));
    }
}
