//! Which proxy a registry request goes through, as Go's
//! `golang.org/x/net/http/httpproxy` (and so the kubelet and containerd)
//! reads the environment: `HTTPS_PROXY` for https, `HTTP_PROXY` for http
//! (upper case first, then lower case; no `ALL_PROXY`), and `NO_PROXY`:
//! entries trimmed, `*` for everything, a domain for itself and its
//! subdomains, a leading dot (or `*.`) for subdomains only, IP addresses and
//! CIDR ranges (IPv4 and IPv6), each with an optional `:port`. Loopback and
//! `localhost` never go through a proxy. Pure: the environment comes in as
//! a function, the answer goes out as a URL; nothing here connects.

use std::net::IpAddr;

/// The proxy settings read once from the environment.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    https: Option<String>,
    http: Option<String>,
    no_proxy: Vec<Entry>,
    /// `NO_PROXY=*`.
    none: bool,
}

/// Proxy URLs may carry credentials: never print them.
impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |p: &Option<String>| p.as_deref().map(redact);
        f.debug_struct("ProxyConfig")
            .field("https", &shown(&self.https))
            .field("http", &shown(&self.http))
            .field("no_proxy", &self.no_proxy)
            .field("none", &self.none)
            .finish()
    }
}

/// A proxy URL with any `user:password@` replaced, for logs.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A host name: `exact` matches it and its subdomains; otherwise only
    /// subdomains (a leading dot).
    Domain {
        name: String,
        exact: bool,
        port: Option<u16>,
    },
    Ip {
        addr: IpAddr,
        port: Option<u16>,
    },
    Cidr {
        net: IpAddr,
        bits: u8,
    },
}

impl ProxyConfig {
    /// Reads `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` (then their lower
    /// case spellings), as Go does.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Self {
        let get = |upper: &str| {
            env(upper)
                .or_else(|| env(&upper.to_ascii_lowercase()))
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .map(|v| {
                    if v.contains("://") {
                        v
                    } else {
                        format!("http://{v}")
                    }
                })
        };
        let no_proxy = env("NO_PROXY")
            .or_else(|| env("no_proxy"))
            .unwrap_or_default();
        let mut cfg = ProxyConfig {
            https: get("HTTPS_PROXY"),
            http: get("HTTP_PROXY"),
            ..ProxyConfig::default()
        };
        for raw in no_proxy.split(',') {
            let e = raw.trim().to_ascii_lowercase();
            if e.is_empty() {
                continue;
            }
            if e == "*" {
                cfg.none = true;
                continue;
            }
            if let Some(entry) = parse_entry(&e) {
                cfg.no_proxy.push(entry);
            }
        }
        cfg
    }

    /// The configured proxies' hosts and ports (an admin's choice, which
    /// may be on loopback): named for the connection to the proxy itself.
    pub fn hosts(&self) -> Vec<(String, u16)> {
        [&self.https, &self.http]
            .into_iter()
            .flatten()
            .filter_map(|url| {
                let (scheme, rest) = url.split_once("://").unwrap_or(("http", url.as_str()));
                let authority = rest.split('/').next().unwrap_or("");
                let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                let (host, port) = crate::image_ref::split_port(hostport);
                let default = if scheme.eq_ignore_ascii_case("https") {
                    443
                } else {
                    80
                };
                let port = port.and_then(|p| p.parse().ok()).unwrap_or(default);
                (!host.is_empty()).then(|| (host.to_string(), port))
            })
            .collect()
    }

    /// The proxy URL for a request to `host` (a name, an IP address, or a
    /// bracketed IPv6 address) and `port` over `https` or not; `None` to
    /// connect directly.
    pub fn proxy_for(&self, https: bool, host: &str, port: u16) -> Option<&str> {
        let proxy = if https { &self.https } else { &self.http };
        let proxy = proxy.as_deref()?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        if host == "localhost" || ip.is_some_and(|a| a.is_loopback()) || self.none {
            return None;
        }
        let bypass = self.no_proxy.iter().any(|e| match e {
            Entry::Cidr { net, bits } => ip.is_some_and(|a| in_cidr(a, *net, *bits)),
            Entry::Ip { addr, port: p } => ip == Some(*addr) && p.is_none_or(|p| p == port),
            Entry::Domain {
                name,
                exact,
                port: p,
            } => {
                p.is_none_or(|p| p == port)
                    && ((*exact && host == *name)
                        || host
                            .strip_suffix(name.as_str())
                            .is_some_and(|rest| rest.ends_with('.')))
            }
        });
        (!bypass).then_some(proxy)
    }
}

/// One `NO_PROXY` entry; `None` for one that is not an address, range or
/// name (ignored, as Go does).
fn parse_entry(e: &str) -> Option<Entry> {
    if let Some((net, bits)) = e.split_once('/') {
        let net: IpAddr = net
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?;
        let bits: u8 = bits.parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        return (bits <= max).then_some(Entry::Cidr { net, bits });
    }
    // `[v6]:port`, `v6`, `v4:port`, `host:port`.
    let (host, port) = if let Some(rest) = e.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        (
            h.to_string(),
            after.strip_prefix(':').and_then(|p| p.parse().ok()),
        )
    } else if e.parse::<IpAddr>().is_ok() {
        (e.to_string(), None)
    } else {
        match e.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => {
                (h.to_string(), p.parse().ok())
            }
            _ => (e.to_string(), None),
        }
    };
    if let Ok(addr) = host.parse::<IpAddr>() {
        return Some(Entry::Ip { addr, port });
    }
    // `*.x` and `.x`: subdomains only; `x`: itself and its subdomains.
    let (name, exact) = match host.strip_prefix("*.").or_else(|| host.strip_prefix('.')) {
        Some(n) => (n.to_string(), false),
        None => (host, true),
    };
    (!name.is_empty()).then_some(Entry::Domain { name, exact, port })
}

fn in_cidr(a: IpAddr, net: IpAddr, bits: u8) -> bool {
    let mask = |width: u32, bits: u8| -> u128 {
        if bits == 0 {
            0
        } else {
            (!0u128) << (width - u32::from(bits))
        }
    };
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let m = mask(32, bits) as u32;
            (u32::from(a) & m) == (u32::from(n) & m)
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let m = mask(128, bits);
            (u128::from(a) & m) == (u128::from(n) & m)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(no_proxy: &str) -> ProxyConfig {
        let no = no_proxy.to_string();
        ProxyConfig::from_env(&move |k| match k {
            "HTTPS_PROXY" => Some("http://user:secret@proxy.corp:3128".into()),
            "http_proxy" => Some("proxy.corp:3129".into()),
            "NO_PROXY" => Some(no.clone()),
            _ => None,
        })
    }

    /// (NO_PROXY, https?, host, port, proxied?)
    const CASES: &[(&str, bool, &str, u16, bool)] = &[
        ("", true, "ghcr.io", 443, true),
        ("", false, "ghcr.io", 80, true), // http uses HTTP_PROXY (lower case here)
        ("*", true, "ghcr.io", 443, false),
        ("ghcr.io", true, "ghcr.io", 443, false), // itself
        ("ghcr.io", true, "pkg.ghcr.io", 443, false), // and subdomains
        ("ghcr.io", true, "evilghcr.io", 443, true), // not a suffix match on text
        (".corp.example", true, "corp.example", 443, true), // leading dot: subdomains only
        (".corp.example", true, "reg.corp.example", 443, false),
        ("*.corp.example", true, "reg.corp.example", 443, false),
        (
            " registry.local , other ",
            true,
            "registry.local",
            443,
            false,
        ), // trimmed
        ("registry.local:5000", true, "registry.local", 5000, false),
        ("registry.local:5000", true, "registry.local", 443, true), // another port
        ("10.0.0.0/8", true, "10.1.2.3", 443, false),
        ("10.0.0.0/8", true, "11.1.2.3", 443, true),
        ("10.0.0.0/8", true, "ten.example", 443, true), // names are not resolved
        ("fd00::/8", true, "[fd12::1]", 443, false),
        ("192.168.1.5", true, "192.168.1.5", 5000, false),
        ("[fd00::1]:5000", true, "[fd00::1]", 5000, false),
        ("[fd00::1]:5000", true, "[fd00::1]", 443, true),
        ("", true, "localhost", 5000, false), // loopback is never proxied
        ("", true, "127.0.0.1", 5000, false),
        ("", true, "[::1]", 5000, false),
        ("REGISTRY.LOCAL", true, "Registry.Local", 443, false), // case
    ];

    #[test]
    fn no_proxy_as_go_reads_it() {
        for (no, https, host, port, proxied) in CASES {
            let c = cfg(no);
            let got = c.proxy_for(*https, host, *port);
            assert_eq!(got.is_some(), *proxied, "NO_PROXY={no:?} {host}:{port}");
        }
        assert_eq!(
            cfg("").proxy_for(false, "x.io", 80),
            Some("http://proxy.corp:3129")
        );
        // No ALL_PROXY, and no proxy when none is set.
        let none = ProxyConfig::from_env(&|k| (k == "ALL_PROXY").then(|| "http://p:1".into()));
        assert_eq!(none.proxy_for(true, "ghcr.io", 443), None);
    }

    #[test]
    fn credentials_never_show() {
        let c = cfg("");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("secret") && shown.contains("***@proxy.corp:3128"),
            "{shown}"
        );
        assert_eq!(redact("http://proxy:3128"), "http://proxy:3128");
    }
}
