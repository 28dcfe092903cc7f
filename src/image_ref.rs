//! Container image references: parse once, normalise like Docker, print back.
//!
//! The grammar is the one of distribution/reference (`name[:tag][@digest]`),
//! and normalisation follows Docker's `ParseNormalizedNamed`: a first path
//! component is a registry only if it contains `.` or `:`, is `localhost`, or
//! has an uppercase letter; otherwise the registry is `docker.io`, and a
//! one-component Docker Hub name gets `library/`.
//!
//! One deliberate difference: the legacy `index.docker.io` and `docker.io`
//! are recognised in any letter case (DNS ignores case, so `DOCKER.IO/x` is
//! Docker Hub too), which keeps registry rules from being bypassed by case.
//!
//! Besides the spelling, every reference carries its registry's *identity*
//! ([`canonical_host`], [`canonical_port`]): the spellings that reach the
//! same server are one registry, so that rules compare identities, not
//! text. Image IDs (`sha256:<hex>`, which a runtime resolves to whatever
//! local image has that ID) are refused here, before any rule sees them.
//!
//! This module does not decide anything about policy; see `policy.rs`.

use std::fmt;

/// The registry an image without one comes from.
pub const DOCKER_HUB: &str = "docker.io";
/// Older spelling of Docker Hub, normalised to [`DOCKER_HUB`].
const LEGACY_DOCKER_HUB: &str = "index.docker.io";
/// Every host name that reaches Docker Hub's registry API: the two names
/// Docker normalises, the API host containerd connects to for them, and the
/// older API host that still answers. A reference may spell any of them.
const DOCKER_HUB_HOSTS: &[&str] = &[
    DOCKER_HUB,
    LEGACY_DOCKER_HUB,
    "registry-1.docker.io",
    "registry.hub.docker.com",
];
/// Digest algorithms a runtime may look an image ID up by. containerd
/// resolves `sha256:<hex>` (and a unique prefix of the hex) to a local
/// image whatever registry it came from; the others are refused alike so
/// that no future algorithm opens the same door.
const ID_ALGORITHMS: &[&str] = &["sha256", "sha384", "sha512", "blake3", "sha1", "md5"];
/// The port an image reference without one is pulled from (HTTPS).
pub const DEFAULT_PORT: u16 = 443;
/// Docker Hub's namespace for official images (`nginx` -> `library/nginx`).
const OFFICIAL_NAMESPACE: &str = "library";
/// Tag used when a reference has neither tag nor digest.
pub const IMPLICIT_TAG: &str = "latest";
/// distribution/reference's NameTotalLengthMax: registry plus path.
const NAME_MAX: usize = 255;
/// The tag grammar allows `[\w][\w.-]{0,127}`.
const TAG_MAX: usize = 128;
/// Longest input we look at; anything longer cannot be a valid reference and
/// is refused before any work is done on it.
const INPUT_MAX: usize = 1024;

/// A parsed, normalised image reference, kept as the one string it prints
/// as and the positions of its parts (a reference costs one allocation,
/// two for a registry whose identity is spelled otherwise than Docker Hub).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// `domain/path[:tag][@digest]`: the domain as written except that
    /// Docker Hub is spelled `docker.io`, the path with Docker's defaults.
    text: String,
    /// `text[..domain_end]` is `host[:port]`; a '/' follows.
    domain_end: usize,
    /// `text[domain_end + 1..path_end]` is the repository path.
    path_end: usize,
    /// With a tag, its end: `text[path_end + 1..tag_end]`.
    tag_end: Option<usize>,
    /// With a digest (`algorithm:hex`): the rest of `text` after the '@'
    /// that follows the path or the tag.
    digest: bool,
    /// The registry's identity: [`canonical_host`] of the host.
    registry_host: std::borrow::Cow<'static, str>,
    /// [`canonical_port`]: `None` for no port or the default 443.
    registry_port: Option<u16>,
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageRef")
            .field("domain", &self.domain())
            .field("path", &self.path())
            .field("tag", &self.tag())
            .field("digest", &self.digest())
            .field("registry_host", &self.registry_host())
            .field("registry_port", &self.registry_port)
            .finish()
    }
}

/// Why a reference did not parse; `Display` names the part and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    input: String,
    kind: ErrorKind,
}

/// The part of a reference that is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    Empty,
    TooLong,
    /// A bare 64-hex string, or `algorithm:hex`: an image ID, which the
    /// runtime resolves locally whatever registry the image came from.
    ImageId,
    Uppercase(String),
    NameTooLong(usize),
    Registry(String),
    /// An IPv4 address not written as four plain decimal numbers.
    NumericHost(String),
    Port(String),
    PathComponent(String),
    EmptyPathComponent,
    Tag(String),
    Digest(String),
    DigestAlgorithm(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.input, self.reason())
    }
}

impl ParseError {
    /// What is wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The reason without the input, for messages that already quote it.
    pub fn reason(&self) -> String {
        Self::describe(&self.kind)
    }

    /// Explains one kind of error.
    pub fn describe(kind: &ErrorKind) -> String {
        match kind {
            ErrorKind::Empty => "image reference is empty".to_string(),
            ErrorKind::TooLong => format!("image reference is longer than {INPUT_MAX} characters"),
            ErrorKind::ImageId => "this is an image ID: the runtime would run whatever local \
                 image has this ID, whichever registry it came from; write the image by name and \
                 digest instead, e.g. registry.example.com/team/app@sha256:<digest>"
                .to_string(),
            ErrorKind::Uppercase(p) => {
                format!("repository name must be lowercase (found {p:?})")
            }
            ErrorKind::NameTooLong(n) => {
                format!("repository name is {n} characters, the limit is {NAME_MAX}")
            }
            ErrorKind::Registry(r) => {
                format!("registry host {r:?} is not a valid host name or bracketed IPv6 address")
            }
            ErrorKind::NumericHost(h) => format!(
                "registry host {h:?} is an IPv4 address in a form runtimes read differently (octal, hex or short); write it as four decimal numbers without leading zeros"
            ),
            ErrorKind::Port(p) => format!("registry port {p:?} must be a number from 1 to 65535"),
            ErrorKind::PathComponent(c) => format!(
                "path component {c:?} must be lowercase letters and digits separated by '.', '_', '__' or '-'"
            ),
            ErrorKind::EmptyPathComponent => "repository path has an empty component".to_string(),
            ErrorKind::Tag(t) => format!(
                "tag {t:?} must be 1 to {TAG_MAX} characters of letters, digits, '_', '.' or '-', not starting with '.' or '-'"
            ),
            ErrorKind::Digest(d) => format!(
                "digest {d:?} must be algorithm:hex (sha256 has 64 lowercase hex digits, sha384 96, sha512 128)"
            ),
            ErrorKind::DigestAlgorithm(a) => {
                format!("digest algorithm {a:?} is not supported (use sha256, sha384 or sha512)")
            }
        }
    }
}

impl std::error::Error for ParseError {}

impl ImageRef {
    /// Parses and normalises a reference as Docker and the kubelet would.
    pub fn parse(input: &str) -> Result<ImageRef, ParseError> {
        let err = |kind| ParseError {
            input: truncate(input),
            kind,
        };
        if input.is_empty() {
            return Err(err(ErrorKind::Empty));
        }
        if input.len() > INPUT_MAX {
            return Err(err(ErrorKind::TooLong));
        }
        if is_image_id(input) {
            return Err(err(ErrorKind::ImageId));
        }

        let (name_and_tag, digest) = match split_at_byte(input, b'@') {
            Some((n, d)) => (n, Some(d)),
            None => (input, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a port.
        let last_slash = rfind_byte(name_and_tag, b'/').map_or(0, |i| i + 1);
        let (name, tag) = match rfind_byte(&name_and_tag[last_slash..], b':') {
            Some(i) => (
                &name_and_tag[..last_slash + i],
                Some(&name_and_tag[last_slash + i + 1..]),
            ),
            None => (name_and_tag, None),
        };

        let (domain, remainder) = split_domain(name);
        let hub = domain.eq_ignore_ascii_case(LEGACY_DOCKER_HUB)
            || domain.eq_ignore_ascii_case(DOCKER_HUB);
        let domain = if hub {
            DOCKER_HUB
        } else {
            validate_domain(domain).map_err(err)?;
            domain
        };
        let (host, port) = split_port(domain);
        let registry_host = host_identity(host);
        let registry_port = canonical_port(port).map_err(err)?;
        if remainder.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err(ErrorKind::Uppercase(remainder.to_string())));
        }
        let official = hub && find_byte(remainder, b'/').is_none();
        let mut text = String::with_capacity(
            domain.len()
                + 1
                + OFFICIAL_NAMESPACE.len()
                + 1
                + remainder.len()
                + tag.map_or(0, |t| 1 + t.len())
                + digest.map_or(0, |d| 1 + d.len())
                // Room for `into_normalized`'s implicit tag.
                + if tag.is_none() && digest.is_none() {
                    1 + IMPLICIT_TAG.len()
                } else {
                    0
                },
        );
        text.push_str(domain);
        let domain_end = text.len();
        text.push('/');
        if official {
            text.push_str(OFFICIAL_NAMESPACE);
            text.push('/');
        }
        text.push_str(remainder);
        let path_end = text.len();
        validate_path(&text[domain_end + 1..path_end]).map_err(err)?;
        // The limit applies to the name as written plus Docker's defaults.
        if path_end > NAME_MAX {
            return Err(err(ErrorKind::NameTooLong(path_end)));
        }
        let tag_end = match tag {
            Some(t) => {
                validate_tag(t).map_err(err)?;
                text.push(':');
                text.push_str(t);
                Some(text.len())
            }
            None => None,
        };
        if let Some(d) = digest {
            validate_digest(d).map_err(err)?;
            text.push('@');
            text.push_str(d);
        }
        Ok(ImageRef {
            text,
            domain_end,
            path_end,
            tag_end,
            digest: digest.is_some(),
            registry_host,
            registry_port,
        })
    }

    /// The registry's identity: every spelling of the same host gives the
    /// same string (see [`canonical_host`]).
    pub fn registry_host(&self) -> &str {
        &self.registry_host
    }

    /// The port as a number; `None` when absent or the default 443.
    pub fn registry_port(&self) -> Option<u16> {
        self.registry_port
    }

    /// `host[:port]`, e.g. `docker.io`, `registry:5000`, `[::1]:5000`.
    pub fn domain(&self) -> &str {
        &self.text[..self.domain_end]
    }

    /// The host without a port (IPv6 keeps its brackets).
    pub fn host(&self) -> &str {
        split_port(self.domain()).0
    }

    pub fn port(&self) -> Option<&str> {
        split_port(self.domain()).1
    }

    /// Repository path below the registry, e.g. `library/nginx`.
    pub fn path(&self) -> &str {
        &self.text[self.domain_end + 1..self.path_end]
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag_end.map(|end| &self.text[self.path_end + 1..end])
    }

    pub fn digest(&self) -> Option<&str> {
        let after = self.tag_end.unwrap_or(self.path_end);
        self.digest.then(|| &self.text[after + 1..])
    }

    /// True when neither tag nor digest was given, so `latest` applies.
    pub fn is_untagged(&self) -> bool {
        self.tag_end.is_none() && !self.digest
    }

    /// The tag a runtime would pull: the explicit one, or `latest` when the
    /// reference has neither tag nor digest.
    pub fn effective_tag(&self) -> Option<&str> {
        match (self.tag(), self.digest) {
            (Some(t), _) => Some(t),
            (None, false) => Some(IMPLICIT_TAG),
            (None, true) => None,
        }
    }

    /// `domain/path`, without tag or digest.
    pub fn name(&self) -> String {
        self.text[..self.path_end].to_string()
    }

    /// The full reference with the implicit `:latest` spelled out: what the
    /// runtime will actually pull.
    pub fn normalized(&self) -> String {
        let mut s = self.written(1 + IMPLICIT_TAG.len());
        if self.is_untagged() {
            s.push(':');
            s.push_str(IMPLICIT_TAG);
        }
        s
    }

    /// [`ImageRef::normalized`] in the reference's own string (parsing
    /// left room for the implicit tag): no allocation.
    pub fn into_normalized(self) -> String {
        let untagged = self.is_untagged();
        let mut s = self.text;
        if untagged {
            s.push(':');
            s.push_str(IMPLICIT_TAG);
        }
        s
    }

    /// `domain/path[:tag][@digest]` in a string with room for `extra`
    /// bytes more (one allocation).
    fn written(&self, extra: usize) -> String {
        let mut s = String::with_capacity(self.text.len() + extra);
        s.push_str(&self.text);
        s
    }

    /// The same image on another registry root (`mirror.example.com` or
    /// `mirror.example.com/prefix`). The Docker Hub `library/` namespace is
    /// kept, as registry mirrors of Docker Hub expect it.
    pub fn with_domain_and_prefix(&self, domain: &str, prefix: &str) -> String {
        let mut s = String::with_capacity(domain.len() + prefix.len() + self.text.len() + 2);
        s.push_str(domain);
        if !prefix.is_empty() {
            s.push('/');
            s.push_str(prefix);
        }
        s.push('/');
        s.push_str(self.path());
        self.push_tag_and_digest(&mut s);
        s
    }

    /// `:tag@digest` as given (either may be absent).
    pub fn tag_and_digest(&self) -> String {
        let mut s = String::new();
        self.push_tag_and_digest(&mut s);
        s
    }

    fn push_tag_and_digest(&self, s: &mut String) {
        // `[:tag][@digest]` is the end of `text`, as written.
        s.push_str(&self.text[self.path_end..]);
    }
}

impl fmt::Display for ImageRef {
    /// `domain/path[:tag][@digest]`, exactly what was parsed (no implicit
    /// tag), so that parsing the output gives the same reference.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written(0))
    }
}

impl std::str::FromStr for ImageRef {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

/// The first `b` (ASCII) in `s`. A plain loop: cheaper than `str::find`'s
/// `memchr` set-up on strings as short as image names.
fn find_byte(s: &str, b: u8) -> Option<usize> {
    s.bytes().position(|c| c == b)
}

/// The last `b` (ASCII) in `s`.
fn rfind_byte(s: &str, b: u8) -> Option<usize> {
    s.bytes().rposition(|c| c == b)
}

/// `s` around its first `b` (ASCII), as `str::split_once` splits it.
fn split_at_byte(s: &str, b: u8) -> Option<(&str, &str)> {
    find_byte(s, b).map(|i| (&s[..i], &s[i + 1..]))
}

/// Splits `name` into registry and remainder by Docker's rule. Shared with
/// the policy patterns so that `nginx` means the same thing everywhere.
pub fn split_domain(name: &str) -> (&str, &str) {
    match split_at_byte(name, b'/') {
        Some((first, rest)) if looks_like_registry(first) => (first, rest),
        _ => (DOCKER_HUB, name),
    }
}

/// Docker's rule for "is this first path component a registry".
pub fn looks_like_registry(first: &str) -> bool {
    first.bytes().any(|b| b == b'.' || b == b':')
        || first == "localhost"
        || first.bytes().any(|b| b.is_ascii_uppercase())
}

/// Splits `host[:port]` (with IPv6 in brackets) into host and port.
pub fn split_port(domain: &str) -> (&str, Option<&str>) {
    let host_end = if domain.starts_with('[') {
        find_byte(domain, b']').map_or(domain.len(), |i| i + 1)
    } else {
        find_byte(domain, b':').unwrap_or(domain.len())
    };
    match domain[host_end..].strip_prefix(':') {
        Some(port) => (&domain[..host_end], Some(port)),
        None => (domain, None),
    }
}

/// True when the whole reference is an image ID: 64 hex digits, or a digest
/// algorithm, `:` and hex digits (any number of them: a runtime accepts a
/// unique prefix). `app:3f2a...` is a tag, because `app` is no algorithm.
fn is_image_id(input: &str) -> bool {
    if input.len() == 64 && input.bytes().all(is_lower_hex) {
        return true;
    }
    match split_at_byte(input, b':') {
        Some((algorithm, hex)) => {
            ID_ALGORITHMS.contains(&algorithm)
                && !hex.is_empty()
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
        }
        None => false,
    }
}

/// The identity of a registry host: lower case; Docker Hub's host names
/// (`docker.io`, `index.docker.io`, `registry-1.docker.io`,
/// `registry.hub.docker.com`) are `docker.io`; an IPv6 literal in its RFC
/// 5952 form (`[fd00:0::1]` is `[fd00::1]`), or as IPv4 when it is
/// IPv4-mapped (`[::ffff:a00:5]` is `10.0.0.5`). (IPv4 in other forms than
/// a plain dotted quad is refused by [`validate_domain`].) Two spellings
/// with the same identity connect to the same server.
pub fn canonical_host(host: &str) -> String {
    host_identity(host).into_owned()
}

/// Whether an address belongs to the node or its cloud rather than to a
/// registry: loopback, link-local (169.254.0.0/16, fe80::/10, where clouds
/// serve instance metadata), unspecified (which Linux connects to
/// loopback), 0.0.0.0/8, the metadata addresses outside those ranges
/// (AWS's fd00:ec2::254, Alibaba's 100.100.100.200, Azure's 168.63.129.16),
/// and any of these embedded in IPv6 (IPv4-mapped, IPv4-compatible, NAT64
/// 64:ff9b::/96).
pub fn is_node_local(ip: std::net::IpAddr) -> bool {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_link_local()
                || v4.octets()[0] == 0
                || v4 == Ipv4Addr::new(100, 100, 100, 200)
                || v4 == Ipv4Addr::new(168, 63, 129, 16)
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            let embedded = Ipv4Addr::new(
                (seg[6] >> 8) as u8,
                seg[6] as u8,
                (seg[7] >> 8) as u8,
                seg[7] as u8,
            );
            let mapped = v6.to_ipv4_mapped().is_some();
            let compatible =
                seg[..6].iter().all(|s| *s == 0) && !v6.is_loopback() && !v6.is_unspecified();
            let nat64 = seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (seg[0] & 0xffc0) == 0xfe80
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
                || ((mapped || compatible || nat64) && is_node_local(IpAddr::V4(embedded)))
        }
    }
}

/// The node-local address a host names literally (`127.0.0.1`,
/// `[::1]`), if it is one.
pub fn node_local_literal(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>().is_ok_and(is_node_local)
}

/// [`canonical_host`], borrowed for Docker Hub (no copy for the registry
/// most references name).
fn host_identity(host: &str) -> std::borrow::Cow<'static, str> {
    use std::borrow::Cow;
    if DOCKER_HUB_HOSTS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(host))
    {
        return Cow::Borrowed(DOCKER_HUB);
    }
    let lower = host.to_ascii_lowercase();
    if let Some(inner) = lower.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return Cow::Owned(match inner.parse::<std::net::Ipv6Addr>() {
            Ok(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => format!("[{v6}]"),
            },
            // Grammar-valid but not an address (`[::::]`): it cannot be
            // dialled; keep the spelling.
            Err(_) => lower,
        });
    }
    Cow::Owned(lower)
}

/// An IPv4 address as `inet_aton` reads it, to recognise one written in
/// another form than a dotted quad: one to four parts, each
/// decimal, octal (leading `0`) or hex (`0x`), the last filling the rest.
fn loose_ipv4(s: &str) -> Option<std::net::Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(4);
    for p in &parts {
        let (digits, radix) = if let Some(h) = p.strip_prefix("0x") {
            (h, 16)
        } else if p.len() > 1 && p.starts_with('0') {
            (&p[1..], 8)
        } else {
            (*p, 10)
        };
        if digits.is_empty() && radix != 16 {
            return None;
        }
        let v = if digits.is_empty() {
            0
        } else {
            u32::from_str_radix(digits, radix).ok()?
        };
        values.push(v);
    }
    let (last, leading) = values.split_last()?;
    if leading.iter().any(|&v| v > 255) {
        return None;
    }
    let room = 32 - 8 * leading.len() as u32;
    if room < 32 && *last >= 1 << room {
        return None;
    }
    let mut addr: u32 = 0;
    for (i, v) in leading.iter().enumerate() {
        addr |= v << (24 - 8 * i as u32);
    }
    Some(std::net::Ipv4Addr::from(addr | last))
}

/// A port as a number (`05000` is 5000); `None` when absent or the default
/// 443, which is where a reference without a port is pulled from.
pub fn canonical_port(port: Option<&str>) -> Result<Option<u16>, ErrorKind> {
    let Some(p) = port else {
        return Ok(None);
    };
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(ErrorKind::Port(truncate(p))),
        Ok(DEFAULT_PORT) => Ok(None),
        Ok(n) => Ok(Some(n)),
    }
}

/// Checks `host[:port]` against the reference grammar.
pub fn validate_domain(domain: &str) -> Result<(), ErrorKind> {
    let (host, port) = split_port(domain);
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        // distribution accepts hex digits and colons only: no zone, no
        // embedded IPv4.
        inner.strip_suffix(']').is_some_and(|v6| {
            !v6.is_empty() && v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':')
        })
    } else {
        !host.is_empty() && host.split('.').all(is_domain_component)
    };
    if !host_ok {
        return Err(ErrorKind::Registry(host.to_string()));
    }
    // `010.0.0.5`, `0xa.0.0.5`, `10.5`: the C resolver reads them as
    // addresses (octal, hex, short), older Go read `010` as decimal, newer
    // Go asks DNS. No reading is safe to assume, so none is accepted.
    if !host.starts_with('[')
        && loose_ipv4(&host.to_ascii_lowercase()).is_some_and(|v4| v4.to_string() != host)
    {
        return Err(ErrorKind::NumericHost(host.to_string()));
    }
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(ErrorKind::Port(p.to_string()));
    }
    Ok(())
}

fn is_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
}

/// Checks a repository path: components of `[a-z0-9]+` joined by `.`, `_`,
/// `__` or runs of `-`, separated by `/`.
pub fn validate_path(path: &str) -> Result<(), ErrorKind> {
    // Each '/'-separated component, as `path.split('/')` gives them.
    let mut rest = path;
    loop {
        let (component, next) = match split_at_byte(rest, b'/') {
            Some((c, next)) => (c, Some(next)),
            None => (rest, None),
        };
        if component.is_empty() {
            return Err(ErrorKind::EmptyPathComponent);
        }
        if !is_path_component(component) {
            return Err(ErrorKind::PathComponent(component.to_string()));
        }
        match next {
            Some(next) => rest = next,
            None => return Ok(()),
        }
    }
}

fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        // One run of alphanumerics.
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        // One separator: '.', '_', '__', or any run of '-'.
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

fn validate_tag(tag: &str) -> Result<(), ErrorKind> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= TAG_MAX
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-');
    if ok {
        Ok(())
    } else {
        Err(ErrorKind::Tag(truncate(tag)))
    }
}

fn validate_digest(digest: &str) -> Result<(), ErrorKind> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(ErrorKind::Digest(truncate(digest)));
    };
    let len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        other => {
            // Anything that fits the grammar but is unknown gets its own
            // message; garbage is reported as a bad digest.
            let grammar_ok = !other.is_empty()
                && other.as_bytes()[0].is_ascii_alphabetic()
                && other
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+.-_".contains(&b));
            if grammar_ok && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ErrorKind::DigestAlgorithm(other.to_string()));
            }
            return Err(ErrorKind::Digest(truncate(digest)));
        }
    };
    if hex.len() == len && hex.bytes().all(is_lower_hex) {
        Ok(())
    } else {
        Err(ErrorKind::Digest(truncate(digest)))
    }
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// Keeps error messages short when the input is huge.
fn truncate(s: &str) -> String {
    const SHOWN: usize = 200;
    if s.len() <= SHOWN {
        return s.to_string();
    }
    let mut end = SHOWN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const H64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// Expected outcome: the full reference as displayed, or an error fragment.
    enum Expect {
        Ok(&'static str),
        Err(&'static str),
    }
    use Expect::{Err as E, Ok as O};

    const CASES: &[(&str, Expect)] = &[
        // Docker Hub short names.
        ("nginx", O("docker.io/library/nginx")),
        ("nginx:1.27", O("docker.io/library/nginx:1.27")),
        ("nginx:latest", O("docker.io/library/nginx:latest")),
        ("library/nginx", O("docker.io/library/nginx")),
        ("docker/docker", O("docker.io/docker/docker")),
        ("debian", O("docker.io/library/debian")),
        ("docker.io/debian", O("docker.io/library/debian")),
        ("docker.io/library/debian", O("docker.io/library/debian")),
        ("docker.io/docker/docker", O("docker.io/docker/docker")),
        ("index.docker.io/debian", O("docker.io/library/debian")),
        (
            "index.docker.io/library/debian",
            O("docker.io/library/debian"),
        ),
        (
            "index.docker.io/docker/docker",
            O("docker.io/docker/docker"),
        ),
        ("INDEX.DOCKER.IO/debian", O("docker.io/library/debian")), // hub in any case
        ("library/foo/bar", O("docker.io/library/foo/bar")),
        ("store/foo/bar", O("docker.io/store/foo/bar")),
        ("other/library", O("docker.io/other/library")),
        ("test_com/foo", O("docker.io/test_com/foo")), // '_' does not make a host
        (
            "ubuntu-12.04-base",
            O("docker.io/library/ubuntu-12.04-base"),
        ),
        ("192.168.0.1", O("docker.io/library/192.168.0.1")), // no slash: a name
        ("192.168.0.1:80", O("docker.io/library/192.168.0.1:80")), // tag, not port
        ("localhost:5000", O("docker.io/library/localhost:5000")), // tag, not port
        ("d/docker", O("docker.io/d/docker")),
        ("jess/t", O("docker.io/jess/t")),
        ("docker-rules/docker", O("docker.io/docker-rules/docker")),
        (
            "docker---rules/docker",
            O("docker.io/docker---rules/docker"),
        ),
        ("dock__er/docker", O("docker.io/dock__er/docker")),
        (
            "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
            O("docker.io/library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev"),
        ),
        // Registries.
        ("localhost/debian", O("localhost/debian")),
        ("localhost/library/debian", O("localhost/library/debian")),
        ("localhost:5000/app:v1", O("localhost:5000/app:v1")),
        ("registry:5000/app", O("registry:5000/app")), // ':' makes it a registry
        ("test.com/foo", O("test.com/foo")),
        ("test.com:8080/foo", O("test.com:8080/foo")),
        ("test-com:8080/foo", O("test-com:8080/foo")),
        ("xn--n3h.com/foo", O("xn--n3h.com/foo")),
        (
            "xn--n3h.com:18080/foo:xn--n3h.com",
            O("xn--n3h.com:18080/foo:xn--n3h.com"),
        ),
        (
            "127.0.0.1:5000/docker/docker",
            O("127.0.0.1:5000/docker/docker"),
        ),
        ("192.168.0.1:8/debian", O("192.168.0.1:8/debian")),
        ("quay.io/team/app:1", O("quay.io/team/app:1")),
        (
            "sub-dom1.foo.com/bar/baz/quux",
            O("sub-dom1.foo.com/bar/baz/quux"),
        ),
        ("Docker/docker", O("Docker/docker")), // uppercase first component = registry
        ("DOCKER/docker", O("DOCKER/docker")),
        ("Foo/bar:v1", O("Foo/bar:v1")),
        ("[fc00::1]:5000/docker", O("[fc00::1]:5000/docker")),
        (
            "[fc00::1]:5000/docker/docker",
            O("[fc00::1]:5000/docker/docker"),
        ),
        (
            "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
            O("[fc00:1:2:3:4:5:6:7]:5000/library/debian"),
        ),
        ("[2001:db8::1]/repo:tag", O("[2001:db8::1]/repo:tag")), // IPv6 without port
        (
            "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
            O("docker.io/library/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"),
        ),
        // Tags and digests.
        (
            "app:v1.2.3-rc.1_x",
            O("docker.io/library/app:v1.2.3-rc.1_x"),
        ),
        ("app:_under", O("docker.io/library/app:_under")),
        ("app:UPPER", O("docker.io/library/app:UPPER")), // tags may be uppercase
        (
            "busybox:latest@sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa",
            O(
                "docker.io/library/busybox:latest@sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa",
            ),
        ),
        (
            "test:5000/repo@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            O(
                "test:5000/repo@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            ),
        ),
        // Invalid: the error names the part.
        ("", E("empty")),
        ("NGINX:1.0", E("repository name must be lowercase")),
        ("docker/Docker", E("must be lowercase")),
        ("docker.io/docker/Docker", E("must be lowercase")),
        ("-docker", E("path component \"-docker\"")),
        ("-docker/docker", E("path component \"-docker\"")),
        ("docker-/docker", E("path component \"docker-\"")),
        (
            "-docker.io/docker/docker",
            E("registry host \"-docker.io\""),
        ),
        ("docker///docker", E("empty component")),
        ("docker.io/docker///docker", E("empty component")),
        ("docker/", E("empty component")),
        ("____/____", E("path component")),
        ("_docker/_docker", E("path component")),
        ("dock..er/docker", E("registry host \"dock..er\"")), // a dot makes it a registry
        ("dock_.er/docker", E("registry host")),
        ("dock-.er/docker", E("registry host")),
        ("dock___er/docker", E("path component")), // three underscores
        ("https://github.com/docker/docker", E("registry port \"\"")),
        ("[fc00::1]", E("path component")),
        ("[fc00::1]:5000", E("path component")),
        ("fc00::1:5000/debian", E("registry port")),
        ("[fe80::1%eth0]:5000/debian", E("registry host")),
        ("[2001:db8:3:4::192.0.2.33]:5000/debian", E("registry host")),
        ("registry:port/app", E("registry port \"port\"")),
        (
            "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
            E("image ID"),
        ),
        // Image IDs: the runtime resolves them locally, from any registry.
        ("sha256:abc", E("image ID")), // a unique prefix is enough for containerd
        ("sha256:0", E("image ID")),
        ("sha256:ABCDEF", E("image ID")),
        ("sha512:abcdef", E("image ID")),
        ("blake3:ab", E("image ID")),
        ("md5:00", E("image ID")),
        ("sha256:latest", O("docker.io/library/sha256:latest")), // not hex: a tag
        (
            "app:0123456789abcdef0123456789abcdef01234567",
            O("docker.io/library/app:0123456789abcdef0123456789abcdef01234567"),
        ), // a commit hash as a tag is fine
        ("registry:99999/app", E("registry port \"99999\"")),
        // IPv4 only as a plain dotted quad: runtimes disagree on the rest.
        (
            "010.0.0.5/x:1",
            E("registry host \"010.0.0.5\" is an IPv4 address in a form"),
        ),
        ("0x0a.0.0.5/x:1", E("in a form runtimes read differently")),
        ("0XA.0.0.5/x:1", E("in a form runtimes read differently")),
        ("10.5:5000/x:1", E("in a form runtimes read differently")),
        (
            "167772165:5000/x:1",
            E("in a form runtimes read differently"),
        ),
        ("10.0.0.5:5000/x:1", O("10.0.0.5:5000/x:1")),
        ("registry:0/app", E("registry port \"0\"")),
        ("nginx:", E("tag \"\"")),
        (":justtag", E("empty component")),
        ("app:-dash", E("tag \"-dash\"")),
        ("app:.dot", E("tag \".dot\"")),
        ("app:tag with space", E("tag")),
        ("aa/asdf$$^/aa", E("path component \"asdf$$^\"")),
        (
            "@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            E("empty component"),
        ),
        (
            "repo@sha256:ffffffffffffffffffffffffffffffffff",
            E("digest"),
        ),
        (
            "repo@sha256:FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
            E("digest"),
        ),
        (
            "validname@invaliddigest:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            E("not supported"),
        ),
        ("repo@sha256", E("digest \"sha256\"")),
        ("repo@sha256:abc@sha256:abc", E("digest")),
        ("app:tag@", E("digest \"\"")),
        ("ünïcode/app", E("path component")),
        ("nginx\n", E("path component")),
    ];

    #[test]
    fn reference_table() {
        let long_tag = format!("app:{}", "a".repeat(129));
        let long_name = format!("{}/docker", "a".repeat(250));
        let max_tag = format!("app:{}", "a".repeat(128));
        let digest512 = format!("app@sha512:{}", "ab".repeat(64));
        let digest384 = format!("app@sha384:{}", "ab".repeat(48));
        let extra: Vec<(String, Expect)> = vec![
            (long_tag, E("tag")),
            (long_name, E("limit is 255")),
            (max_tag.clone(), O("")),
            (digest512, O("")),
            (digest384, O("")),
            (format!("app@sha256:{H64}0"), E("digest")),
            (format!("sha256:{H64}"), E("image ID")),
            (format!("sha384:{H64}{}", &H64[..32]), E("image ID")),
            ("x".repeat(2000), E("longer than")),
        ];
        let all = CASES
            .iter()
            .map(|(i, e)| (i.to_string(), e))
            .chain(extra.iter().map(|(i, e)| (i.clone(), e)));
        let mut count = 0;
        for (input, expect) in all {
            count += 1;
            match (ImageRef::parse(&input), expect) {
                (Ok(r), Expect::Ok(full)) => {
                    if !full.is_empty() {
                        assert_eq!(r.to_string(), *full, "input {input:?}");
                    }
                    // The owned form is the same string, in the
                    // reference's own allocation.
                    let normalized = r.normalized();
                    let at = r.text.as_ptr();
                    let owned = r.into_normalized();
                    assert_eq!(owned, normalized, "input {input:?}");
                    assert_eq!(owned.as_ptr(), at, "input {input:?}");
                }
                (Err(e), Expect::Err(fragment)) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains(fragment),
                        "input {input:?}: {msg:?} lacks {fragment:?}"
                    );
                }
                (Ok(r), Expect::Err(f)) => {
                    panic!("input {input:?} parsed as {r}, expected error {f:?}")
                }
                (Err(e), Expect::Ok(_)) => panic!("input {input:?} failed: {e}"),
            }
        }
        assert!(count >= 60, "only {count} cases");
    }

    /// (reference, registry identity, port): spellings of one server agree.
    const IDENTITIES: &[(&str, &str, Option<u16>)] = &[
        ("nginx:1", "docker.io", None),
        ("index.docker.io/library/nginx:1", "docker.io", None),
        ("registry-1.docker.io/library/nginx:1.27", "docker.io", None), // Hub's API host
        ("REGISTRY-1.DOCKER.IO/library/nginx:1", "docker.io", None),
        ("registry.hub.docker.com/library/nginx:1", "docker.io", None),
        ("ghcr.io/a/b:1", "ghcr.io", None),
        ("GHCR.IO/a/b:1", "ghcr.io", None),
        ("ghcr.io:443/a/b:1", "ghcr.io", None), // the default port
        ("ghcr.io:05000/a/b:1", "ghcr.io", Some(5000)),
        ("[fd00::1]/x:1", "[fd00::1]", None),
        ("[fd00:0::1]:5000/x:1", "[fd00::1]", Some(5000)),
        ("[fd00:0:0:0:0:0:0:1]/x:1", "[fd00::1]", None),
        ("[FD00:0000::0001]/x:1", "[fd00::1]", None),
        ("[2001:db8:0:0:1:0:0:1]/x:1", "[2001:db8::1:0:0:1]", None), // RFC 5952 4.2.3
        ("[::ffff:a00:5]/x:1", "10.0.0.5", None),                    // IPv4-mapped
        ("10.0.0.5:5000/x:1", "10.0.0.5", Some(5000)),
        ("10.0.0.256/x:1", "10.0.0.256", None), // not an address: a name
        ("1.2.3.4.5/x:1", "1.2.3.4.5", None),
        ("localhost:5000/x:1", "localhost", Some(5000)),
    ];

    #[test]
    fn registry_identity() {
        for (input, host, port) in IDENTITIES {
            let r = ImageRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(
                (r.registry_host(), r.registry_port()),
                (*host, *port),
                "{input}"
            );
        }
    }

    #[test]
    fn error_message_names_input_and_reason() {
        let e = ImageRef::parse("NGINX:1.0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"NGINX:1.0\": repository name must be lowercase (found \"NGINX\")"
        );
    }

    #[test]
    fn parts_and_implicit_tag() {
        let r = ImageRef::parse("[::1]:5000/team/app").unwrap();
        assert_eq!(r.domain(), "[::1]:5000");
        assert_eq!(r.host(), "[::1]");
        assert_eq!(r.port(), Some("5000"));
        assert_eq!(r.path(), "team/app");
        assert!(r.is_untagged());
        assert_eq!(r.effective_tag(), Some("latest"));
        assert_eq!(r.normalized(), "[::1]:5000/team/app:latest");

        let pinned = ImageRef::parse(&format!("nginx@sha256:{H64}")).unwrap();
        assert!(!pinned.is_untagged());
        assert_eq!(pinned.effective_tag(), None);
        assert_eq!(
            pinned.normalized(),
            format!("docker.io/library/nginx@sha256:{H64}")
        );
        assert_eq!(pinned.host(), "docker.io");
        assert_eq!(pinned.port(), None);

        let both = ImageRef::parse(&format!("nginx:latest@sha256:{H64}")).unwrap();
        assert_eq!(both.tag(), Some("latest"));
        assert_eq!(both.digest(), Some(format!("sha256:{H64}").as_str()));
        assert_eq!(both.name(), "docker.io/library/nginx");
        assert_eq!(both.tag_and_digest(), format!(":latest@sha256:{H64}"));

        // Every part of a reference with all of them, and the same parts
        // printed by Debug; the registry's identity apart from its spelling.
        let r = ImageRef::parse(&format!(
            "Registry-1.Docker.IO:443/team/app:v1@sha256:{H64}"
        ))
        .unwrap();
        assert_eq!(
            (r.domain(), r.path(), r.tag(), r.digest()),
            (
                "Registry-1.Docker.IO:443",
                "team/app",
                Some("v1"),
                Some(format!("sha256:{H64}").as_str())
            )
        );
        assert_eq!((r.registry_host(), r.registry_port()), ("docker.io", None));
        assert_eq!(
            format!("{r:?}"),
            format!(
                "ImageRef {{ domain: \"Registry-1.Docker.IO:443\", path: \"team/app\", tag: Some(\"v1\"), digest: Some(\"sha256:{H64}\"), registry_host: \"docker.io\", registry_port: None }}"
            )
        );
        let r = ImageRef::parse("Example.COM:5000/a/b").unwrap();
        assert_eq!(
            (r.registry_host(), r.registry_port()),
            ("example.com", Some(5000))
        );
        assert_eq!((r.tag(), r.digest(), r.path()), (None, None, "a/b"));
    }

    #[test]
    fn rewrites_onto_another_registry() {
        let r = ImageRef::parse("nginx:1.27").unwrap();
        assert_eq!(
            r.with_domain_and_prefix("mirror.example.com", ""),
            "mirror.example.com/library/nginx:1.27"
        );
        let r = ImageRef::parse(&format!("ghcr.io/org/app:v1@sha256:{H64}")).unwrap();
        assert_eq!(
            r.with_domain_and_prefix("m.example.com", "ghcr"),
            format!("m.example.com/ghcr/org/app:v1@sha256:{H64}")
        );
    }

    /// A small deterministic generator (xorshift) so the property test needs
    /// no extra crate and never flakes.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[(self.next() % items.len() as u64) as usize]
        }
    }

    /// parse(display(parse(x))) == parse(x) for every x that parses, over
    /// random strings built from the pieces references are made of.
    #[test]
    fn display_round_trips() {
        const PIECES: &[&str] = &[
            "a",
            "b",
            "z9",
            "nginx",
            "library",
            "/",
            "/",
            ":",
            ":",
            "@",
            ".",
            "_",
            "__",
            "-",
            "--",
            "localhost",
            "docker.io",
            "index.docker.io",
            "INDEX.docker.io",
            "Docker",
            "5000",
            "[::1]",
            "[fc00::1]",
            "registry",
            "latest",
            "v1.2",
            "sha256:",
            H64,
            "sha512:",
            "X",
            "",
            "%",
            " ",
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut parsed = 0;
        for _ in 0..50_000 {
            let n = 1 + rng.next() % 8;
            let s: String = (0..n).map(|_| rng.pick(PIECES)).collect();
            if let Ok(r) = ImageRef::parse(&s) {
                parsed += 1;
                let again = ImageRef::parse(&r.to_string())
                    .unwrap_or_else(|e| panic!("{s:?} -> {r} does not reparse: {e}"));
                assert_eq!(again, r, "input {s:?}");
                assert_eq!(again.to_string(), r.to_string());
            }
        }
        // The generator must actually exercise the success path.
        assert!(parsed > 1_000, "only {parsed} generated inputs parsed");
    }
}
