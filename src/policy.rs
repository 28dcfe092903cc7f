//! The image policy and the one function that decides: [`Policy::decide`].
//!
//! Every endpoint and the `check` command call `decide`; adapters in
//! `review/` only translate wire formats into a [`Request`] and a
//! [`Decision`] back. This module is pure: no I/O, no logging, no serde wire
//! types. Patterns are parsed once, when the policy is built (`config.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use crate::image_ref::{self, ImageRef};

/// Enforce denies; warn only reports (audit mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Enforce,
    Warn,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
        }
    }
}

mod set;
pub use set::PolicySet;

/// One validated policy (one file of a policy set). Built by `config`.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Its name in reasons, logs and metrics: the file name without its
    /// extension.
    pub name: Arc<str>,
    /// Namespaces it applies to (empty: all).
    pub namespaces: Vec<NamespacePattern>,
    /// Namespaces it does not apply to (wins over `namespaces`).
    pub exclude_namespaces: Vec<NamespacePattern>,
    pub mode: Mode,
    /// Refuse the `latest` tag and references with neither tag nor digest.
    pub deny_latest: bool,
    /// Refuse references without a digest.
    pub require_digest: bool,
    /// Empty: every registry is allowed (unless denied).
    pub allowed_registries: Vec<RegistryPattern>,
    /// Wins over the allow list.
    pub denied_registries: Vec<RegistryPattern>,
    pub exempt_images: Vec<ImagePattern>,
    pub exempt_namespaces: Vec<NamespacePattern>,
    /// Honour `*.image-policy.k8s.io/<ticket>: break-glass` annotations.
    pub break_glass: bool,
    /// Registry roots the mutations fill with mirrored images: an image
    /// there is judged by the upstream name it mirrors, since rules are
    /// written about the images users write (built from the mutate
    /// configuration).
    pub mirrors: Vec<MirrorBack>,
    /// `verifyImages`: images that must carry an accepted signature.
    pub verify_images: Vec<VerifyRequirement>,
}

/// A registry root holding mirrored images, and how a name there maps back
/// to the image it mirrors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorBack {
    /// Registry identity (`image_ref::canonical_host`) and port.
    host: String,
    port: Option<u16>,
    /// Path prefix below which everything is a mirror (empty: all).
    prefix: String,
    upstream: Upstream,
}

/// What a mirror root mirrors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// One registry (`host[:port]`), path for path.
    Registry(String),
    /// Any registry: the first path component names it (`quay.io`,
    /// `registry.local_5000` for a port), and a component without `.` or
    /// `_` starts a Docker Hub path — Docker Hub names have neither.
    ByRegistry,
}

/// The path component that names a registry below a by-registry mirror:
/// the identity, with `_port` (a host has no `_`, a Docker Hub name neither
/// `.` nor `_`, so the encoding is one-to-one). `None` for hosts it cannot
/// encode that way (IPv6 literals; a dotless host without a port).
pub fn registry_component(r: &ImageRef) -> Option<String> {
    let host = r.registry_host();
    if host.starts_with('[') {
        return None;
    }
    let c = match r.registry_port() {
        Some(p) => format!("{host}_{p}"),
        None if host.contains('.') => host.to_string(),
        None => return None,
    };
    image_ref::validate_path(&c).ok().map(|()| c)
}

impl MirrorBack {
    /// `domain` is `host[:port]` as configured; `prefix` may be empty.
    pub fn new(domain: &str, prefix: &str, upstream: Upstream) -> Self {
        let (host, port) = image_ref::split_port(domain);
        MirrorBack {
            host: image_ref::canonical_host(host),
            port: image_ref::canonical_port(port).unwrap_or(None),
            prefix: prefix.to_string(),
            upstream,
        }
    }

    /// True when `pattern` names this root or something inside it: such
    /// an entry can never match, as images here are judged upstream.
    pub fn covers(&self, pattern: &RegistryPattern) -> bool {
        let HostPattern::Exact(h) = &pattern.host else {
            return false;
        };
        let port_ok = pattern
            .port
            .is_none_or(|p| p == self.port.unwrap_or(image_ref::DEFAULT_PORT));
        let path_ok = match &pattern.path {
            PathPattern::Any => self.prefix.is_empty(),
            PathPattern::Prefix(p) | PathPattern::Glob(p) => {
                self.prefix.is_empty()
                    || p == &self.prefix
                    || p.strip_prefix(self.prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }
        };
        *h == self.host && port_ok && path_ok
    }

    /// The image `r` mirrors, if it lies below this root.
    fn upstream_of(&self, r: &ImageRef) -> Option<String> {
        if r.registry_host() != self.host || r.registry_port() != self.port {
            return None;
        }
        let rest = if self.prefix.is_empty() {
            r.path()
        } else {
            r.path()
                .strip_prefix(self.prefix.as_str())?
                .strip_prefix('/')?
        };
        let name = match &self.upstream {
            Upstream::Registry(domain) => format!("{domain}/{rest}"),
            Upstream::ByRegistry => match rest.split_once('/') {
                Some((first, below)) if first.contains(['.', '_']) => {
                    format!("{}/{below}", first.replacen('_', ":", 1))
                }
                _ => format!("{}/{rest}", image_ref::DOCKER_HUB),
            },
        };
        Some(name + &r.tag_and_digest())
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            name: Arc::from(DEFAULT_NAME),
            namespaces: Vec::new(),
            exclude_namespaces: Vec::new(),
            mode: Mode::Enforce,
            deny_latest: true,
            require_digest: false,
            allowed_registries: Vec::new(),
            denied_registries: Vec::new(),
            exempt_images: Vec::new(),
            exempt_namespaces: Vec::new(),
            break_glass: false,
            mirrors: Vec::new(),
            verify_images: Vec::new(),
        }
    }
}

/// The name of a policy given by flags alone (no file).
pub const DEFAULT_NAME: &str = "flags";

/// Violations (and images in audit annotations) a decision spells out; the
/// rest are counted. A reply's size then stays small whatever the request
/// holds: 500,000 copies of one bad image give one line and a count.
pub const MAX_LISTED: usize = 20;

/// The annotation value that asks for break-glass.
pub const BREAK_GLASS_VALUE: &str = "break-glass";
/// Break-glass annotation keys are `<something>.image-policy.k8s.io/<name>`.
const BREAK_GLASS_DOMAIN: &str = ".image-policy.k8s.io";

/// Which list of a pod spec a container is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerKind {
    Container,
    Init,
    Ephemeral,
    /// `spec.volumes[].image` (Kubernetes 1.31+): an image mounted as a
    /// volume, pulled like a container's.
    ImageVolume,
}

/// Where an image came from, when known (ImageReview does not name containers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub kind: ContainerKind,
    pub name: String,
}

impl fmt::Display for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ContainerKind::Container => "container",
            ContainerKind::Init => "init container",
            ContainerKind::Ephemeral => "ephemeral container",
            ContainerKind::ImageVolume => "image volume",
        };
        write!(f, "{kind} {:?}", self.name)
    }
}

/// One image to judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInput {
    pub image: String,
    pub container: Option<Container>,
}

impl ImageInput {
    pub fn bare(image: impl Into<String>) -> Self {
        ImageInput {
            image: image.into(),
            container: None,
        }
    }
}

/// What `decide` looks at.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub namespace: Option<String>,
    /// Pod annotations (only those that matter are read).
    pub annotations: BTreeMap<String, String>,
    pub images: Vec<ImageInput>,
    /// Signature facts gathered before deciding, by image as written.
    pub signatures: Facts,
    /// Signatures are judged elsewhere on this path (`/mutate` judges
    /// names before rewriting; the validating webhook, which sees the
    /// pinned digests, judges signatures). Off by default: fail closed.
    pub skip_signatures: bool,
}

/// Signature facts by image (as written in the request): one for each
/// `verifyImages` entry that covers it.
pub type Facts = BTreeMap<String, Vec<SignatureFact>>;

/// What signature verification found for one image under one
/// `verifyImages` entry (gathered by the admission step, not here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureFact {
    /// Index into `Policy::verify_images`.
    pub rule: usize,
    /// The signer and the digest it signed, or why nothing verified.
    pub outcome: Result<Signer, String>,
    /// The attestation item (`verifyImages[<i>].attestations[<j>]`) the
    /// refusal is about, when the signature itself verified.
    pub unmet: Option<String>,
}

/// A verified signature, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    pub digest: String,
    /// `key <name>` or `identity <subject> from issuer <issuer>`.
    pub by: String,
    /// Where the signature was (`sigstore bundle`, `legacy signature`).
    pub found_in: String,
    /// The trusted signing time (Unix seconds), where it came from, and
    /// the log index, when there is one (for reports).
    pub time: Option<i64>,
    pub time_source: Option<String>,
    pub log_index: Option<i64>,
    /// Each attestation item of the entry, with the statement that
    /// satisfied it.
    pub attestations: Vec<Attested>,
}

/// An attestation item satisfied, in words (for reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    /// `verifyImages[<i>].attestations[<j>]`.
    pub item: String,
    pub predicate_type: String,
    /// Who signed the statement (every signer, with a threshold).
    pub signer: String,
    /// sha256 of the envelope (the bundle or the `.att` layer).
    pub envelope: String,
    /// `sigstore bundle` or `legacy attestation`.
    pub found_in: String,
}

/// A `verifyImages` entry as the policy sees it: which images must be
/// signed. What they must be signed by is the verifier's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyRequirement {
    /// `verifyImages[<i>]`, for reasons.
    pub label: String,
    /// Its place among every entry of the policy set: the index of its
    /// [`SignatureFact`]s and of the verifier's rule.
    pub index: usize,
    pub images: Vec<ImagePattern>,
    /// Verify a tag's current digest instead of refusing tag-only images
    /// on paths that cannot pin them.
    pub verify_tags: bool,
}

/// The rule an image broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    InvalidReference,
    /// `sha256:<hex>`: resolved locally by the runtime, from any registry.
    ImageId,
    DeniedRegistry,
    RegistryNotAllowed,
    LatestTag,
    Untagged,
    DigestRequired,
    /// A `verifyImages` entry matched and no signature verified.
    SignatureRequired,
    /// A `verifyImages` entry's signature verified, and an attestation
    /// item of it was not met.
    AttestationRequired,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::InvalidReference => "invalid-reference",
            Rule::ImageId => "image-id",
            Rule::DeniedRegistry => "denied-registry",
            Rule::RegistryNotAllowed => "registry-not-allowed",
            Rule::LatestTag => "latest-tag",
            Rule::Untagged => "untagged",
            Rule::DigestRequired => "digest-required",
            Rule::SignatureRequired => "signature-required",
            Rule::AttestationRequired => "attestation-required",
        }
    }

    /// A few words for places with little room (admission warnings).
    pub fn summary(self) -> &'static str {
        match self {
            Rule::InvalidReference => "not a valid image reference",
            Rule::ImageId => "an image ID, not an image reference",
            Rule::DeniedRegistry => "registry is in deniedRegistries",
            Rule::RegistryNotAllowed => "registry is not in allowedRegistries",
            Rule::LatestTag => "the latest tag is not allowed",
            Rule::Untagged => "no tag, so it resolves to :latest",
            Rule::DigestRequired => "not pinned by digest",
            Rule::SignatureRequired => "no accepted signature",
            Rule::AttestationRequired => "a required attestation is missing or not met",
        }
    }
}

/// A broken rule with the user-facing explanation (what, why, how to fix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: Rule,
    pub message: String,
    /// The policy whose rule it broke.
    pub policy: Arc<str>,
    pub effect: Effect,
}

/// What a violation does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Its policy enforces: the request is denied.
    Denies,
    /// Its policy is in warn mode: a warning.
    Warns,
    /// Its policy honoured a break-glass annotation: a warning, logged.
    BrokenGlass,
}

/// The verdict on one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageVerdict {
    pub image: String,
    pub container: Option<Container>,
    /// Full reference with the implicit tag, `None` if it did not parse.
    pub normalized: Option<String>,
    pub violations: Vec<Violation>,
    /// The `exemptImages` entry that exempted it.
    pub exempted_by: Option<String>,
}

/// The decision on a whole request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub images: Vec<ImageVerdict>,
    /// The namespace, when a policy's `exemptNamespaces` skipped its checks.
    pub exempt_namespace: Option<String>,
    /// The annotation key of an honoured break-glass request.
    pub break_glass: Option<String>,
}

impl Policy {
    /// The policy in a few words, for the log and `check --policy`:
    /// `mode enforce, 4 allowed and 1 denied registries, 1 exempt images,
    /// 1 exempt namespaces, 2 verifyImages`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "mode {}, {} allowed and {} denied registries, {} exempt images, {} exempt namespaces, {} verifyImages",
            self.mode.as_str(),
            self.allowed_registries.len(),
            self.denied_registries.len(),
            self.exempt_images.len(),
            self.exempt_namespaces.len(),
            self.verify_images.len()
        );
        let names = |l: &[NamespacePattern]| {
            l.iter()
                .map(|p| p.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.namespaces.is_empty() {
            s.push_str(&format!(", in namespaces {}", names(&self.namespaces)));
        }
        if !self.exclude_namespaces.is_empty() {
            s.push_str(&format!(", not in {}", names(&self.exclude_namespaces)));
        }
        s
    }

    /// Judges every image of the request and lists every violation.
    pub fn decide(&self, req: &Request) -> Decision {
        self.judge(req, req.images.clone())
    }

    /// [`Policy::decide`], moving each image and its container into its
    /// verdict rather than copying them: `req.images` is left empty (the
    /// decision's verdicts hold them, in the same order).
    pub fn decide_taking(&self, req: &mut Request) -> Decision {
        let images = std::mem::take(&mut req.images);
        self.judge(req, images)
    }

    fn judge(&self, req: &Request, images: Vec<ImageInput>) -> Decision {
        if let Some(ns) = req.namespace.as_deref()
            && self.exempts_namespace(Some(ns))
        {
            return Decision {
                allowed: true,
                images: images.into_iter().map(unchecked).collect(),
                exempt_namespace: Some(ns.to_string()),
                break_glass: None,
            };
        }
        // Each distinct image is judged once, however many containers use
        // it: `slots` says which assessment serves each image, and each
        // assessment counts the images it serves, so that the last of them
        // takes its strings instead of copying them.
        let (mut assessed, slots) = distinct(&images, |image| {
            let facts = req.signatures.get(image).map_or(&[][..], Vec::as_slice);
            self.assess(image, facts, req.skip_signatures)
        });
        let images: Vec<ImageVerdict> = images
            .into_iter()
            .zip(slots)
            .map(|(input, slot)| {
                let (a, left) = &mut assessed[slot];
                *left -= 1;
                self.render(input, a, *left == 0)
            })
            .collect();
        let violated = images.iter().any(|v| !v.violations.is_empty());
        let (effect, break_glass) = self.effect(&req.annotations);
        let mut images = images;
        if effect != Effect::Denies {
            for v in images.iter_mut().flat_map(|i| i.violations.iter_mut()) {
                v.effect = effect;
            }
        }
        Decision {
            allowed: !(effect == Effect::Denies && violated),
            images,
            exempt_namespace: None,
            break_glass,
        }
    }

    /// All rules for one image, without the words (which name the
    /// container and are written by [`Policy::render`]).
    fn assess(
        &self,
        image: &str,
        signatures: &[SignatureFact],
        skip_signatures: bool,
    ) -> Assessment {
        match self.judged_name(image) {
            Err(failure) => Assessment {
                normalized: None,
                exempted_by: None,
                failures: vec![failure],
            },
            Ok(r) => {
                let (exempted_by, failures) = self.check(&r, signatures, skip_signatures);
                Assessment {
                    normalized: Some(r.into_normalized()),
                    exempted_by,
                    failures,
                }
            }
        }
    }

    /// The reference the rules judge `image` by: as written, or the image
    /// a mirror of it mirrors; or the rule it breaks by not parsing. The
    /// mirrors are the mutations', the same for every policy of a set.
    pub(crate) fn judged_name(&self, image: &str) -> Result<ImageRef, (Rule, String)> {
        let parsed = ImageRef::parse(image).map(|r| {
            // A mirrored image is judged as the image it mirrors.
            match self.mirrors.iter().find_map(|m| m.upstream_of(&r)) {
                Some(up) => ImageRef::parse(&up).map_err(|_| up),
                None => Ok(r),
            }
        });
        match parsed {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(up)) => Err((
                Rule::InvalidReference,
                format!(
                    "it lies in a registry mirror, and the image it mirrors ({up:?}) is not a valid reference"
                ),
            )),
            // Not a tag rule: no tag or exemption option lets an ID through.
            Err(e) if *e.kind() == image_ref::ErrorKind::ImageId => {
                Err((Rule::ImageId, e.reason()))
            }
            Err(e) => Err((Rule::InvalidReference, e.reason())),
        }
    }

    /// This policy's rules for a parsed image: the `exemptImages` entry
    /// that exempts it, or each rule it breaks with its detail.
    pub(crate) fn check(
        &self,
        r: &ImageRef,
        signatures: &[SignatureFact],
        skip_signatures: bool,
    ) -> (Option<String>, Vec<(Rule, String)>) {
        if let Some(p) = self.exempt_images.iter().find(|p| p.matches(r)) {
            return (Some(p.raw.clone()), Vec::new());
        }
        let mut failures = Vec::new();
        match self.registry_lists(r) {
            Listed::Denied(p) => failures.push((Rule::DeniedRegistry, p.raw.clone())),
            Listed::NotAllowed => failures.push((Rule::RegistryNotAllowed, String::new())),
            Listed::Admitted => {}
        }
        if self.deny_latest && r.digest().is_none() {
            match r.tag() {
                None => failures.push((Rule::Untagged, String::new())),
                Some(image_ref::IMPLICIT_TAG) => failures.push((Rule::LatestTag, String::new())),
                Some(_) => {}
            }
        }
        if self.require_digest && r.digest().is_none() {
            failures.push((Rule::DigestRequired, String::new()));
        }
        // Every entry that covers the image must be satisfied (an image
        // is not let off a strict entry because a lenient one also names
        // it).
        for req in self.verify_requirements(r).filter(|_| !skip_signatures) {
            let fact = signatures.iter().find(|f| f.rule == req.index);
            let rule = match fact.and_then(|f| f.unmet.as_ref()) {
                Some(_) => Rule::AttestationRequired,
                None => Rule::SignatureRequired,
            };
            let detail = match fact.map(|f| &f.outcome) {
                Some(Ok(_)) => None,
                Some(Err(why)) => Some(format!("{} requires it; {why}", req.label)),
                None => Some(format!(
                    "{} requires it, and its signatures were not verified",
                    req.label
                )),
            };
            if let Some(d) = detail {
                failures.push((rule, d));
            }
        }
        (None, failures)
    }

    /// The `verifyImages` entries (index and entry) an image falls under:
    /// every one whose patterns cover it, judged by the name the other
    /// rules judge (a mirrored image by the image it mirrors). Each must
    /// be satisfied.
    fn verify_requirements<'a>(
        &'a self,
        r: &'a ImageRef,
    ) -> impl Iterator<Item = &'a VerifyRequirement> + 'a {
        self.verify_images
            .iter()
            .filter(|v| v.images.iter().any(|p| p.covers(r)))
    }

    /// What the registry lists say of an image (judged by the name the
    /// other rules judge).
    fn registry_lists(&self, r: &ImageRef) -> Listed<'_> {
        if let Some(p) = self.denied_registries.iter().find(|p| p.matches(r)) {
            Listed::Denied(p)
        } else if !self.allowed_registries.is_empty()
            && !self.allowed_registries.iter().any(|p| p.matches(r))
        {
            Listed::NotAllowed
        } else {
            Listed::Admitted
        }
    }

    /// The name a lookup for `image` would be about, whatever the lists
    /// say: the image as written, or the image a mirror of it mirrors
    /// (judged as [`Policy::decide`] judges); `None` for an image that does
    /// not parse (or is an image ID) or whose mirrored upstream is a
    /// node-local address (a pull-through mirror would reach it on our
    /// behalf: a pod must not make the webhook reach an address of its
    /// choosing). The mirrors are the mutations', the same for every policy
    /// of a set.
    pub(crate) fn lookup_target(&self, image: &str) -> Option<ImageRef> {
        let r = ImageRef::parse(image).ok()?;
        match self.mirrors.iter().find_map(|m| m.upstream_of(&r)) {
            Some(up) => ImageRef::parse(&up)
                .ok()
                .filter(|up| !image_ref::node_local_literal(up.registry_host())),
            None => Some(r),
        }
    }

    /// Whether this policy's registry lists refuse `r` (an image its
    /// `exemptImages` exempt is not refused: its rules do not look).
    pub(crate) fn refuses(&self, r: &ImageRef) -> bool {
        !self.exempt_images.iter().any(|p| p.matches(r))
            && !matches!(self.registry_lists(r), Listed::Admitted)
    }

    /// What this policy's violations do to a request with these pod
    /// annotations, and the break-glass annotation it honours, if any.
    pub(crate) fn effect(
        &self,
        annotations: &BTreeMap<String, String>,
    ) -> (Effect, Option<String>) {
        let glass = if self.break_glass {
            break_glass_key(annotations)
        } else {
            None
        };
        let effect = match (&glass, self.mode) {
            (Some(_), _) => Effect::BrokenGlass,
            (None, Mode::Warn) => Effect::Warns,
            (None, Mode::Enforce) => Effect::Denies,
        };
        (effect, glass)
    }

    /// Whether a request in `namespace` is left alone by this policy's
    /// `exemptNamespaces`.
    pub(crate) fn exempts_namespace(&self, namespace: Option<&str>) -> bool {
        namespace.is_some_and(|ns| self.exempt_namespaces.iter().any(|p| p.matches(ns)))
    }

    /// Whether the policy applies to a request in `namespace`: listed in
    /// `namespaces` (or none listed) and not in `excludeNamespaces`. A
    /// request without a namespace (ImageReview from an older apiserver,
    /// `check` of an object without one) falls under the policies that
    /// list no namespaces.
    pub fn applies_to(&self, namespace: Option<&str>) -> bool {
        match namespace {
            Some(ns) => {
                (self.namespaces.is_empty() || self.namespaces.iter().any(|p| p.matches(ns)))
                    && !self.exclude_namespaces.iter().any(|p| p.matches(ns))
            }
            None => self.namespaces.is_empty(),
        }
    }

    /// The `verifyImages` entries (their set-wide indices) an image must
    /// be verified under, given the name lookups are about
    /// ([`Policy::lookup_target`]): none when this policy's registry lists
    /// refuse it (it is refused whatever its signatures), when it is
    /// exempt, or when no entry covers it. The admission step asks the set
    /// (`PolicySet::verification_for`) before gathering signatures.
    pub(crate) fn verification_of(&self, r: &ImageRef) -> Vec<usize> {
        if self.verify_images.is_empty()
            || self.exempt_images.iter().any(|p| p.matches(r))
            || !matches!(self.registry_lists(r), Listed::Admitted)
        {
            return Vec::new();
        }
        self.verify_requirements(r).map(|v| v.index).collect()
    }

    /// The verdict on one container's image: what, why, how to fix.
    /// `last`: no other image needs `a`, so its strings are taken.
    fn render(&self, input: ImageInput, a: &mut Assessment, last: bool) -> ImageVerdict {
        let full = a.normalized.as_deref().unwrap_or("");
        let violations = self.violations(&input, full, &a.failures, Effect::Denies);
        let (normalized, exempted_by) = if last {
            (a.normalized.take(), a.exempted_by.take())
        } else {
            (a.normalized.clone(), a.exempted_by.clone())
        };
        ImageVerdict {
            image: input.image,
            container: input.container,
            normalized,
            violations,
            exempted_by,
        }
    }

    /// The words of each broken rule for one container's image (`full`:
    /// its normalised reference), naming this policy.
    pub(crate) fn violations(
        &self,
        input: &ImageInput,
        full: &str,
        failures: &[(Rule, String)],
        effect: Effect,
    ) -> Vec<Violation> {
        let who = Who(input);
        let name = &self.name;
        failures
            .iter()
            .map(|(rule, detail)| {
                let message = match rule {
                    Rule::InvalidReference => {
                        format!("{who} is not a valid image reference: {detail}")
                    }
                    Rule::ImageId => format!("{who} is refused: {detail}"),
                    Rule::DeniedRegistry => format!(
                        "{who} resolves to {full}, which matches deniedRegistries entry {detail:?}; use an image from an allowed registry"
                    ),
                    Rule::RegistryNotAllowed => {
                        let allowed: Vec<&str> = self
                            .allowed_registries
                            .iter()
                            .map(|p| p.raw.as_str())
                            .collect();
                        format!(
                            "{who} resolves to {full}, which is not in allowedRegistries ({}); use an image from one of them",
                            allowed.join(", ")
                        )
                    }
                    Rule::Untagged => format!(
                        "{who} has no tag, so it resolves to {full}; the latest tag is not allowed, pin a version tag or a digest"
                    ),
                    Rule::LatestTag => format!(
                        "{who} resolves to {full}; the latest tag is not allowed, pin a version tag or a digest"
                    ),
                    Rule::DigestRequired => format!(
                        "{who} resolves to {full}, which is not pinned by digest; use name@sha256:<digest>"
                    ),
                    Rule::SignatureRequired => format!("{who} must be signed: {detail}"),
                    Rule::AttestationRequired => format!("{who} must be attested: {detail}"),
                };
                Violation {
                    rule: *rule,
                    message: format!("policy {name:?}: {message}"),
                    policy: self.name.clone(),
                    effect,
                }
            })
            .collect()
    }
}

/// Each distinct image of `images` judged once by `judge`: the
/// judgements with how many images each serves, and for each image the
/// index of its own. A few images are matched by a look back, more
/// through a map (a pod of 1,024 containers costs a lookup each, not a
/// scan).
pub(crate) fn distinct<T>(
    images: &[ImageInput],
    mut judge: impl FnMut(&str) -> T,
) -> (Vec<(T, usize)>, Vec<usize>) {
    const FEW: usize = 8;
    let mut judged = Vec::new();
    let mut slots: Vec<usize> = Vec::with_capacity(images.len());
    let mut by_image: HashMap<&str, usize> = HashMap::new();
    for (n, i) in images.iter().enumerate() {
        let known = if images.len() <= FEW {
            images[..n]
                .iter()
                .position(|j| j.image == i.image)
                .map(|k| slots[k])
        } else {
            by_image.get(i.image.as_str()).copied()
        };
        let slot = known.unwrap_or_else(|| {
            judged.push((judge(&i.image), 0));
            if images.len() > FEW {
                by_image.insert(&i.image, judged.len() - 1);
            }
            judged.len() - 1
        });
        judged[slot].1 += 1;
        slots.push(slot);
    }
    (judged, slots)
}

/// The verdict on an image no rule looked at (an exempt namespace).
fn unchecked(input: ImageInput) -> ImageVerdict {
    ImageVerdict {
        normalized: ImageRef::parse(&input.image)
            .ok()
            .map(ImageRef::into_normalized),
        image: input.image,
        container: input.container,
        violations: Vec::new(),
        exempted_by: None,
    }
}

/// What the registry lists say of one image.
enum Listed<'a> {
    Admitted,
    /// The `deniedRegistries` entry that matched.
    Denied(&'a RegistryPattern),
    NotAllowed,
}

/// What the rules found for one distinct image.
struct Assessment {
    /// Full reference with the implicit tag; `None` if it did not parse.
    normalized: Option<String>,
    exempted_by: Option<String>,
    /// Each broken rule with its detail: the parse error, or the
    /// deniedRegistries entry that matched.
    failures: Vec<(Rule, String)>,
}

/// At most [`MAX_LISTED`] of `items` joined by `sep`, then `more(count)`
/// for the rest.
fn listed(items: &[&str], sep: &str, more: impl Fn(usize) -> String) -> String {
    let mut out = items
        .iter()
        .take(MAX_LISTED)
        .copied()
        .collect::<Vec<_>>()
        .join(sep);
    if items.len() > MAX_LISTED {
        out.push_str(&more(items.len() - MAX_LISTED));
    }
    out
}

/// `container "app" image "nginx"`, or `image "nginx"` when the container
/// is not known.
struct Who<'a>(&'a ImageInput);

impl fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.container {
            Some(c) => write!(f, "{c} image {:?}", self.0.image),
            None => write!(f, "image {:?}", self.0.image),
        }
    }
}

/// The first (in key order) annotation asking for break-glass, if any.
fn break_glass_key(annotations: &BTreeMap<String, String>) -> Option<String> {
    annotations
        .iter()
        .find(|(k, v)| v.as_str() == BREAK_GLASS_VALUE && is_break_glass_key(k))
        .map(|(k, _)| k.clone())
}

/// `<prefix>.image-policy.k8s.io/<name>` with a non-empty prefix and name.
pub fn is_break_glass_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((domain, name)) => {
            !name.is_empty()
                && domain.len() > BREAK_GLASS_DOMAIN.len()
                && domain.ends_with(BREAK_GLASS_DOMAIN)
        }
        None => false,
    }
}

impl ImageVerdict {
    pub fn messages(&self) -> impl Iterator<Item = &str> {
        self.violations.iter().map(|v| v.message.as_str())
    }

    /// The name used in audit annotations: normalised, or as given.
    pub fn audit_name(&self) -> &str {
        self.normalized.as_deref().unwrap_or(&self.image)
    }
}

impl Decision {
    /// Every violation, with the image it is about.
    pub fn violations(&self) -> impl Iterator<Item = (&ImageVerdict, &Violation)> {
        self.images
            .iter()
            .flat_map(|v| v.violations.iter().map(move |x| (v, x)))
    }

    /// Violations that deny the request (empty when allowed).
    pub fn reasons(&self) -> Vec<&str> {
        self.violations()
            .filter(|(_, x)| x.effect == Effect::Denies)
            .map(|(_, x)| x.message.as_str())
            .collect()
    }

    /// Everything the user should see besides a denial: violations of
    /// policies in warn mode or bypassed by break-glass, and the
    /// break-glass use itself; at most [`MAX_LISTED`] violations, then a
    /// count.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(key) = &self.break_glass {
            out.push(format!(
                "image policy bypassed by break-glass annotation {key:?}"
            ));
        }
        let mut all = self
            .violations()
            .filter(|(_, x)| x.effect != Effect::Denies);
        for (_, x) in all.by_ref().take(MAX_LISTED) {
            let prefix = if x.effect == Effect::BrokenGlass {
                "break-glass"
            } else {
                "image policy (warn mode)"
            };
            out.push(format!("{prefix}: {}", x.message));
        }
        let more = all.count();
        if more > 0 {
            out.push(format!("image policy: and {more} more violations"));
        }
        out
    }

    /// The violation messages joined for a single `reason` field: at most
    /// [`MAX_LISTED`], then how many more.
    pub fn reason(&self) -> String {
        listed(&self.reasons(), "; ", |n| {
            format!("; and {n} more violations")
        })
    }

    /// The distinct images with a violation that `pick` selects, at most
    /// [`MAX_LISTED`] of them, then how many more.
    fn violators(&self, pick: impl Fn(Effect) -> bool) -> Option<String> {
        let mut seen = HashSet::new();
        let names: Vec<&str> = self
            .images
            .iter()
            .filter(|v| v.violations.iter().any(|x| pick(x.effect)))
            .map(ImageVerdict::audit_name)
            .filter(|n| seen.insert(*n))
            .collect();
        (!names.is_empty()).then(|| listed(&names, ",", |n| format!(" (and {n} more)")))
    }

    /// Audit annotations (keys without prefix; the apiserver adds one).
    pub fn audit_annotations(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Some(key) = &self.break_glass {
            out.insert("break-glass".to_string(), key.clone());
            if let Some(v) = self.violators(|e| e == Effect::BrokenGlass) {
                out.insert("break-glass-images".to_string(), v);
            }
        }
        if let Some(v) = self.violators(|e| e == Effect::Warns) {
            out.insert("warn-images".to_string(), v);
        }
        if let Some(v) = self.violators(|e| e == Effect::Denies) {
            out.insert("denied-images".to_string(), v);
        }
        if let Some(ns) = &self.exempt_namespace {
            out.insert("exempt-namespace".to_string(), ns.clone());
        }
        out
    }
}

/// A registry entry: `host[:port]`, `host[:port]/path/prefix` or
/// `*.domain[...]`, matched at component boundaries only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryPattern {
    pub raw: String,
    host: HostPattern,
    /// The port written, as a number (443 too); `None` is any port.
    port: Option<u16>,
    /// Empty: the whole registry.
    path: PathPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// A registry identity (`image_ref::canonical_host`).
    Exact(String),
    /// Lowercase `.domain`: any host strictly below it, as written or by
    /// identity (`*.docker.io` covers `registry-1.docker.io`).
    Subdomain(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathPattern {
    Any,
    /// The path itself or anything below it (`acme` matches `acme/app`).
    Prefix(String),
    /// A `*` pattern over the whole path (exemptImages only).
    Glob(String),
}

/// An `exemptImages` entry: a registry pattern whose path may contain `*`,
/// optionally with a tag or digest that must then match exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePattern {
    pub raw: String,
    base: RegistryPattern,
    tag: Option<String>,
    digest: Option<String>,
}

/// An `exemptNamespaces` entry: a name, or a `*` pattern (`team-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePattern(String);

impl NamespacePattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'*');
        if ok {
            Ok(NamespacePattern(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is not a namespace name (lowercase letters, digits, '-', optionally '*')"
            ))
        }
    }

    pub fn matches(&self, ns: &str) -> bool {
        glob(&self.0, ns, false)
    }
}

impl RegistryPattern {
    /// Parses a registry list entry. `nginx` means `docker.io/library/nginx`
    /// exactly as in an image reference.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::parse_with(s, false)
    }

    fn parse_with(s: &str, glob: bool) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("{s:?}: {why}"));
        if s.is_empty() {
            return bad("empty registry pattern");
        }
        if s.bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return bad("contains white space");
        }
        if s.contains("://") {
            return bad("give the registry without a scheme, e.g. \"registry.example.com/team\"");
        }
        let (wild, rest) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        // A pattern without a registry is normalised like `docker run`
        // would (`nginx` is docker.io/library/nginx); after an explicit
        // registry the path is literal (`docker.io/library` is that
        // namespace).
        let (domain, path, implicit_hub) = match rest.split_once('/') {
            Some((first, p)) if wild || image_ref::looks_like_registry(first) => {
                (first, Some(p), false)
            }
            Some(_) => (image_ref::DOCKER_HUB, Some(rest), true),
            None if wild || image_ref::looks_like_registry(rest) => (rest, None, false),
            None => (image_ref::DOCKER_HUB, Some(rest), true),
        };
        if domain.contains('*') {
            return bad("'*' is only allowed as a leading \"*.\" in the host");
        }
        image_ref::validate_domain(domain).map_err(|e| format!("{s:?}: {}", kind_text(&e)))?;
        let (host, port) = image_ref::split_port(domain);
        if wild && host.starts_with('[') {
            return bad("a wildcard cannot apply to an IPv6 address");
        }
        let host = if wild {
            host.to_ascii_lowercase()
        } else {
            image_ref::canonical_host(host)
        };
        image_ref::canonical_port(port).map_err(|e| format!("{s:?}: {}", kind_text(&e)))?;
        // A written port is that port only, 443 included (`canonical_port`
        // would make it "absent", which here means any port).
        let port = port.and_then(|p| p.parse::<u16>().ok());
        let path = match path {
            None => PathPattern::Any,
            Some(p) => {
                let p = if implicit_hub && !p.contains('/') && !p.contains('*') {
                    format!("library/{p}")
                } else {
                    p.to_string()
                };
                if !glob && p.contains('*') {
                    let prefix = s.trim_end_matches("/*").trim_end_matches('*');
                    return bad(&format!(
                        "registry entries are prefixes: drop the '*' ({prefix:?} already covers everything below it)"
                    ));
                }
                if glob && p.contains('*') {
                    let check = p.replace('*', "x");
                    image_ref::validate_path(&check)
                        .map_err(|e| format!("{s:?}: {}", kind_text(&e)))?;
                    PathPattern::Glob(p)
                } else {
                    image_ref::validate_path(&p)
                        .map_err(|e| format!("{s:?}: {}", kind_text(&e)))?;
                    PathPattern::Prefix(p)
                }
            }
        };
        Ok(RegistryPattern {
            raw: s.to_string(),
            host: if wild {
                HostPattern::Subdomain(format!(".{host}"))
            } else {
                HostPattern::Exact(host)
            },
            port,
            path,
        })
    }

    /// True when the reference is on this registry (and below this path).
    pub fn matches(&self, r: &ImageRef) -> bool {
        self.matches_registry(r) && self.matches_path(r, false)
    }

    /// Host and port, compared by identity.
    fn matches_registry(&self, r: &ImageRef) -> bool {
        let below = |host: &str, suffix: &str| {
            host.len() > suffix.len()
                && host
                    .get(host.len() - suffix.len()..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
        };
        let host_ok = match &self.host {
            HostPattern::Exact(h) => r.registry_host() == h,
            HostPattern::Subdomain(suffix) => {
                below(r.host(), suffix) || below(r.registry_host(), suffix)
            }
        };
        // An entry without a port covers every port of that host; an image
        // without one is pulled from 443.
        let image_port = r.registry_port().unwrap_or(image_ref::DEFAULT_PORT);
        host_ok && self.port.is_none_or(|p| p == image_port)
    }

    /// The path: at or below a prefix, or the whole path exactly when
    /// `exact` (an exemption with a tag or digest names one repository).
    fn matches_path(&self, r: &ImageRef, exact: bool) -> bool {
        match &self.path {
            PathPattern::Any => !exact,
            PathPattern::Prefix(p) => {
                r.path() == p
                    || (!exact
                        && r.path()
                            .strip_prefix(p.as_str())
                            .is_some_and(|rest| rest.starts_with('/')))
            }
            // One repository when pinned: `*` then stays within a component.
            PathPattern::Glob(g) => glob(g, r.path(), exact),
        }
    }
}

impl ImagePattern {
    /// An entry with a tag or digest names one repository at that tag or
    /// digest; without, a registry or path prefix as on the registry lists.
    /// `host:port` without a path is a registry (`10.0.0.5:5000`), never a
    /// host with a tag.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "*" {
            // Every image of every registry.
            return Ok(ImagePattern {
                raw: s.to_string(),
                base: RegistryPattern {
                    raw: s.to_string(),
                    host: HostPattern::Subdomain(String::new()),
                    port: None,
                    path: PathPattern::Any,
                },
                tag: None,
                digest: None,
            });
        }
        let (name_and_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (s, None),
        };
        // No path: `host[:port]` is a registry, as on the registry lists.
        let (host, port) = image_ref::split_port(name_and_tag);
        let registry_only = !name_and_tag.contains('/')
            && (host.starts_with('[') || image_ref::looks_like_registry(host));
        let (name, tag) = if registry_only {
            if digest.is_some() {
                return Err(format!(
                    "{s:?}: a digest needs a repository: write host/repository@sha256:..."
                ));
            }
            if port.is_some_and(|p| !p.bytes().all(|b| b.is_ascii_digit())) {
                return Err(format!(
                    "{s:?}: a registry has no tag; write host/repository:tag to exempt one image, or host:port for a whole registry"
                ));
            }
            (name_and_tag, None)
        } else {
            let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
            match name_and_tag[last_slash..].rfind(':') {
                Some(i) => (
                    &name_and_tag[..last_slash + i],
                    Some(&name_and_tag[last_slash + i + 1..]),
                ),
                None => (name_and_tag, None),
            }
        };
        if tag.is_some() || digest.is_some() {
            // Let the reference parser check tag and digest syntax.
            let probe = format!(
                "x{}{}",
                tag.map(|t| format!(":{t}")).unwrap_or_default(),
                digest.map(|d| format!("@{d}")).unwrap_or_default()
            );
            ImageRef::parse(&probe).map_err(|e| format!("{s:?}: {}", e.reason()))?;
        }
        Ok(ImagePattern {
            raw: s.to_string(),
            base: RegistryPattern::parse_with(name, true)
                .map_err(|e| e.replacen(&format!("{name:?}"), &format!("{s:?}"), 1))?,
            tag: tag.map(str::to_string),
            digest: digest.map(str::to_string),
        })
    }

    /// Exemption semantics (`exemptImages`): reaches no further than
    /// written. A tag entry names that tag, not a digest written beside it.
    pub fn matches(&self, r: &ImageRef) -> bool {
        let pinned = self.tag.is_some() || self.digest.is_some();
        // A tag without a digest exempts what that tag names, not any
        // digest written beside it (the runtime pulls the digest).
        let digest_ok = match self.digest.as_deref() {
            Some(d) => r.digest() == Some(d),
            None => self.tag.is_none() || r.digest().is_none(),
        };
        self.base.matches_registry(r)
            && self.base.matches_path(r, pinned)
            && self.tag.as_deref().is_none_or(|t| r.tag() == Some(t))
            && digest_ok
    }

    /// Requirement semantics (`verifyImages`): reaches at least as far as
    /// an exemption of the same text would ([`ImagePattern::matches`]),
    /// and over every spelling that can pull the image it names. A tag
    /// entry covers that tag (the implicit `latest` too), with or without
    /// a digest beside it, and every digest of that repository, since a
    /// digest may be what the tag names (`app:prod@sha256:<other>` and
    /// `app@sha256:<other>` run `<other>`, which nothing here can tell
    /// apart from the tag's digest without asking a registry). A digest
    /// entry covers that digest whatever the tag. In a path, `*` crosses
    /// `/` whether or not a tag is written.
    pub fn covers(&self, r: &ImageRef) -> bool {
        if !self.base.matches_registry(r) {
            return false;
        }
        let pinned = self.tag.is_some() || self.digest.is_some();
        let path_ok = match &self.base.path {
            PathPattern::Glob(g) => glob(g, r.path(), false),
            _ => self.base.matches_path(r, pinned),
        };
        if !path_ok {
            return false;
        }
        if !pinned {
            return true;
        }
        let by_digest = r
            .digest()
            .is_some_and(|d| self.tag.is_some() || self.digest.as_deref() == Some(d));
        let by_tag = self
            .tag
            .as_deref()
            .is_some_and(|t| r.effective_tag() == Some(t));
        by_digest || by_tag || self.matches(r)
    }
}

/// `*` patterns: `*` matches any run of characters, or with
/// `within_component` any run without `/`. Nothing else is special.
fn glob(pattern: &str, text: &str, within_component: bool) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    // Backtracking to the last `*` only: at most |p| * |t| steps.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star
            && !(within_component && t[st] == b'/')
        {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

fn kind_text(kind: &image_ref::ErrorKind) -> String {
    image_ref::ParseError::describe(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entries a set of this one policy verifies `image` under.
    fn verification(p: &Policy, image: &str) -> Vec<usize> {
        PolicySet::one(p.clone()).verification_for(None, image)
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn policy(allow: &[&str], deny: &[&str]) -> Policy {
        Policy {
            allowed_registries: allow
                .iter()
                .map(|p| RegistryPattern::parse(p).unwrap())
                .collect(),
            denied_registries: deny
                .iter()
                .map(|p| RegistryPattern::parse(p).unwrap())
                .collect(),
            ..Policy::default()
        }
    }

    fn decide(p: &Policy, images: &[&str]) -> Decision {
        p.decide(&Request {
            images: images.iter().map(|i| ImageInput::bare(*i)).collect(),
            ..Request::default()
        })
    }

    /// An image used by several containers is judged once, but every
    /// container gets its own verdict (its name in the messages), in
    /// order, whether the verdicts copy the inputs (`decide`) or take them
    /// (`decide_taking`), with few images (looked up by a look back) or
    /// many (through a map).
    #[test]
    fn every_container_gets_its_verdict_when_images_repeat() {
        let mut p = policy(&["ghcr.io"], &["evil.io"]);
        p.exempt_images = vec![ImagePattern::parse("ghcr.io/tools/debug").unwrap()];
        let pool = [
            "ghcr.io/a/app:1",
            "evil.io/x:1",
            "ghcr.io/tools/debug",
            "ghcr.io/a/app:1",
            "NOT VALID",
            "nginx:1",
            "evil.io/x:1",
        ];
        for n in [5, 7, 20] {
            let images: Vec<ImageInput> = (0..n)
                .map(|i| ImageInput {
                    image: pool[i % pool.len()].to_string(),
                    container: Some(Container {
                        kind: ContainerKind::Container,
                        name: format!("c{i}"),
                    }),
                })
                .collect();
            let mut req = Request {
                images: images.clone(),
                ..Request::default()
            };
            let copied = p.decide(&req);
            assert_eq!(req.images, images, "decide leaves the request as it was");
            let taken = p.decide_taking(&mut req);
            assert!(req.images.is_empty());
            assert_eq!(copied, taken, "{n} images");
            assert!(!taken.allowed);
            assert_eq!(taken.images.len(), n);
            for (i, (v, input)) in taken.images.iter().zip(&images).enumerate() {
                assert_eq!((&v.image, &v.container), (&input.image, &input.container));
                let name = format!("\"c{i}\"");
                let alone = p.decide(&Request {
                    images: vec![input.clone()],
                    ..Request::default()
                });
                assert_eq!(v, &alone.images[0], "{n} images, #{i}");
                match pool[i % pool.len()] {
                    "ghcr.io/a/app:1" => {
                        assert!(v.violations.is_empty());
                        assert_eq!(v.normalized.as_deref(), Some("ghcr.io/a/app:1"));
                    }
                    "ghcr.io/tools/debug" => {
                        assert_eq!(v.exempted_by.as_deref(), Some("ghcr.io/tools/debug"));
                        assert_eq!(v.normalized.as_deref(), Some("ghcr.io/tools/debug:latest"));
                    }
                    _ => {
                        assert!(!v.violations.is_empty());
                        assert!(
                            v.violations.iter().all(|x| x.message.contains(&name)),
                            "{v:?}"
                        );
                    }
                }
            }
        }
    }

    /// (pattern, image, matches?)
    const MATCHES: &[(&str, &str, bool)] = &[
        ("docker.io", "nginx:1", true),
        ("docker.io", "docker.io.evil.com/x:1", false), // not a prefix match on strings
        ("docker.io", "index.docker.io/library/nginx:1", true),
        ("docker.io", "DOCKER.IO/library/nginx:1", true),
        ("index.docker.io", "nginx:1", true),
        ("ghcr.io/acme", "ghcr.io/acme/app:1", true),
        ("ghcr.io/acme", "ghcr.io/acme:1", true),
        ("ghcr.io/acme", "ghcr.io/acme-evil/app:1", false),
        ("ghcr.io/acme", "ghcr.io/acmeapp:1", false),
        ("ghcr.io/acme", "GHCR.io/acme/app:1", true), // host ignores case
        ("ghcr.io/acme/", "ghcr.io/acme/app:1", false), // never parses, see INVALID
        ("*.gcr.io", "eu.gcr.io/p/a:1", true),
        ("*.gcr.io", "a.b.gcr.io/p/a:1", true),
        ("*.gcr.io", "gcr.io/p/a:1", false), // the apex is not a subdomain
        ("*.gcr.io", "gcr.io.evil.com/p/a:1", false),
        ("*.gcr.io", "evilgcr.io/p/a:1", false),
        ("*.gcr.io/proj", "eu.gcr.io/proj/a:1", true),
        ("*.gcr.io/proj", "eu.gcr.io/other/a:1", false),
        ("nginx", "nginx:1", true),
        ("nginx", "docker.io/library/nginx:1", true),
        ("nginx", "nginx-evil:1", false),
        ("nginx", "evil.com/library/nginx:1", false),
        ("library/nginx", "nginx:1", true),
        ("docker.io/library", "nginx:1", true), // explicit registry: a literal path
        ("docker.io/library", "acme/app:1", false),
        ("docker.io/nginx", "nginx:1", false), // the "nginx" namespace, not library/nginx
        ("docker.io/nginx", "nginx/nginx-ingress:1", true),
        ("acme/app", "acme/app:1", true),
        ("registry:5000", "registry:5000/app:1", true),
        ("registry:5000", "registry:5001/app:1", false),
        ("registry:5000", "registry/app:1", false), // 'registry' alone is a Hub name
        ("registry.local", "registry.local:5000/app:1", true), // no port: any port
        ("localhost", "localhost:5000/app:1", true),
        ("localhost", "localhost/app:1", true),
        ("localhost", "app:1", false),
        ("[::1]:5000", "[::1]:5000/app:1", true),
        ("[::1]:5000", "[::2]:5000/app:1", false),
        ("quay.io", "quay.io:443/team/app:1", true),
        // Registries compare by identity, not spelling.
        ("docker.io", "registry-1.docker.io/library/nginx:1.27", true), // Hub's API host
        ("docker.io", "REGISTRY-1.docker.io/library/nginx:1", true),
        ("docker.io", "registry.hub.docker.com/library/nginx:1", true),
        ("registry-1.docker.io", "nginx:1", true),
        ("nginx", "registry-1.docker.io/library/nginx:1", true),
        ("*.docker.io", "registry-1.docker.io/library/nginx:1", true), // as written
        ("*.docker.io", "nginx:1", false),
        ("[fd00::1]", "[fd00:0::1]:5000/x:1", true),
        ("[fd00::1]", "[fd00:0:0:0:0:0:0:1]/x:1", true),
        ("[fd00:0::1]:5000", "[fd00::1]:5000/x:1", true),
        ("[fd00::1]", "[fd00::2]/x:1", false),
        ("10.0.0.5", "[::ffff:a00:5]/x:1", true),
        ("10.0.0.5", "10.0.0.50/x:1", false),
        ("ghcr.io:443", "ghcr.io/a:1", true), // the default port
        ("ghcr.io:443", "ghcr.io:443/a:1", true),
        ("ghcr.io:443", "ghcr.io:5000/a:1", false), // 443 only, not any port
        ("registry:5000", "registry:05000/app:1", true),
    ];

    #[test]
    fn registry_matching_respects_boundaries() {
        for (pattern, image, want) in MATCHES {
            let Ok(p) = RegistryPattern::parse(pattern) else {
                assert!(!want, "{pattern} should parse");
                continue;
            };
            let r = ImageRef::parse(image).unwrap();
            assert_eq!(p.matches(&r), *want, "{pattern} vs {image}");
        }
    }

    const INVALID: &[(&str, &str)] = &[
        ("", "empty"),
        ("ghcr.io/acme/", "empty component"),
        ("https://ghcr.io", "without a scheme"),
        ("gh cr.io", "white space"),
        ("*.", "registry host"),
        ("foo.*.io", "only allowed as a leading"),
        ("*.[::1]", "IPv6"),
        ("ghcr.io/Acme", "path component"),
        ("reg:abc", "registry port"),
        (
            "ghcr.io/acme/*",
            "entries are prefixes: drop the '*' (\"ghcr.io/acme\"",
        ),
        ("ghcr.io/ac*", "entries are prefixes"),
    ];

    #[test]
    fn invalid_patterns_are_explained() {
        for (pattern, fragment) in INVALID {
            let e = RegistryPattern::parse(pattern).unwrap_err();
            assert!(e.contains(fragment), "{pattern:?}: {e}");
        }
    }

    #[test]
    fn deny_latest_and_untagged_but_not_pinned() {
        let p = Policy::default();
        let d = decide(
            &p,
            &[
                "nginx",
                "nginx:latest",
                "nginx:1.27",
                &format!("nginx:latest@{D}"),
                &format!("nginx@{D}"),
            ],
        );
        assert!(!d.allowed);
        let rules: Vec<Vec<Rule>> = d
            .images
            .iter()
            .map(|v| v.violations.iter().map(|x| x.rule).collect())
            .collect();
        assert_eq!(
            rules,
            vec![
                vec![Rule::Untagged],
                vec![Rule::LatestTag],
                vec![],
                vec![],
                vec![]
            ]
        );
        assert_eq!(
            d.images[0].normalized.as_deref(),
            Some("docker.io/library/nginx:latest")
        );
        // Every violation is listed, not only the first.
        assert_eq!(d.reasons().len(), 2);
        assert!(
            d.reason().contains("image \"nginx\" has no tag"),
            "{}",
            d.reason()
        );
        assert_eq!(
            d.audit_annotations()
                .get("denied-images")
                .map(String::as_str),
            Some("docker.io/library/nginx:latest") // each image once
        );
    }

    #[test]
    fn allow_latest_when_configured() {
        let p = Policy {
            deny_latest: false,
            ..Policy::default()
        };
        assert!(decide(&p, &["nginx"]).allowed);
    }

    #[test]
    fn deny_wins_over_allow() {
        let p = policy(&["ghcr.io"], &["ghcr.io/evil"]);
        let d = decide(
            &p,
            &["ghcr.io/good/app:1", "ghcr.io/evil/app:1", "quay.io/x/y:1"],
        );
        assert!(!d.allowed);
        assert!(d.images[0].violations.is_empty());
        assert_eq!(d.images[1].violations[0].rule, Rule::DeniedRegistry);
        assert_eq!(d.images[2].violations[0].rule, Rule::RegistryNotAllowed);
        assert!(
            d.images[2].violations[0]
                .message
                .contains("not in allowedRegistries (ghcr.io)")
        );
    }

    #[test]
    fn allow_list_bypass_attempts_fail() {
        let p = policy(&["docker.io", "ghcr.io/acme", "*.gcr.io"], &[]);
        for image in [
            "docker.io.evil.com/x:1",
            "ghcr.io/acme-evil/app:1",
            "ghcr.io/acmeapp:1",
            "gcr.io.evil.com/p/a:1",
            "evil.com/docker.io/x:1",
            "evil.com:443/ghcr.io/acme/x:1",
        ] {
            let d = decide(&p, &[image]);
            assert!(!d.allowed, "{image} bypassed the allow list");
            assert_eq!(
                d.images[0].violations[0].rule,
                Rule::RegistryNotAllowed,
                "{image}"
            );
        }
        for image in ["nginx:1", "ghcr.io/acme/app:1", "eu.gcr.io/p/a:1"] {
            assert!(decide(&p, &[image]).allowed, "{image}");
        }
    }

    #[test]
    fn deny_list_holds_against_other_spellings() {
        let p = policy(&[], &["docker.io", "[fd00::1]", "10.0.0.5"]);
        for image in [
            "registry-1.docker.io/library/nginx:1.27",
            "registry.hub.docker.com/library/nginx:1.27",
            "Index.Docker.IO/library/nginx:1.27",
            "[fd00:0::1]:5000/x:1",
            "[fd00:0:0:0:0:0:0:1]/x:1",
            "[FD00::0001]/x:1",
            "[::ffff:a00:5]/x:1",
        ] {
            let d = decide(&p, &[image]);
            let rules: Vec<Rule> = d.images[0].violations.iter().map(|v| v.rule).collect();
            assert_eq!(rules, [Rule::DeniedRegistry], "{image}");
        }
        // Other IPv4 forms (which runtimes read differently) are refused.
        for image in [
            "010.0.0.5/x:1",
            "0xa.0.0.5:5000/x:1",
            "10.5/x:1",
            "167772165:5000/x:1",
        ] {
            let d = decide(&p, &[image]);
            assert_eq!(
                d.images[0].violations[0].rule,
                Rule::InvalidReference,
                "{image}"
            );
        }
    }

    #[test]
    fn image_ids_are_refused_whatever_the_options() {
        let lax = Policy {
            deny_latest: false,
            exempt_images: ["docker.io", "sha256", "docker.io/library/sha256"]
                .iter()
                .map(|s| ImagePattern::parse(s).unwrap())
                .collect(),
            ..Policy::default()
        };
        let long = format!("sha256:{}", &D[7..]);
        for id in [
            "sha256:abc",
            "sha256:0123456789",
            long.as_str(),
            "sha512:ff",
        ] {
            let d = decide(&lax, &[id]);
            assert!(!d.allowed, "{id}");
            let v = &d.images[0].violations[0];
            assert_eq!(v.rule, Rule::ImageId, "{id}");
            assert!(v.message.contains("is an image ID"), "{}", v.message);
            assert!(v.message.contains("@sha256:<digest>"), "{}", v.message);
            assert_eq!(d.images[0].exempted_by, None);
        }
        // A commit hash as a tag is a tag.
        assert!(decide(&lax, &["app:0123456789abcdef0123456789abcdef01234567"]).allowed);
    }

    #[test]
    fn exemptions_reach_no_further_than_written() {
        let p = Policy {
            exempt_images: [
                "10.0.0.5:5000",
                "registry.k8s.io/pause:3.9",
                "[fd00::1]:5000",
                &format!("ghcr.io/acme/app@{D}"),
                "quay.io/tools",
            ]
            .iter()
            .map(|s| ImagePattern::parse(s).unwrap())
            .collect(),
            ..policy(
                &[],
                &[
                    "10.0.0.5",
                    "registry.k8s.io",
                    "[fd00::1]",
                    "ghcr.io",
                    "quay.io",
                ],
            )
        };
        let exempt = |image: &str| {
            let d = decide(&p, &[image]);
            d.images[0].exempted_by.is_some()
        };
        // (image, exempt?)
        for (image, want) in [
            ("10.0.0.5:5000/anything:1", true), // host:port is a registry
            ("10.0.0.5:8080/evil:5000", false), // not host 10.0.0.5 with tag 5000
            ("10.0.0.5/evil:5000", false),
            ("registry.k8s.io/pause:3.9", true),
            ("registry.k8s.io/pause/evil:3.9", false), // one repository, exactly
            ("registry.k8s.io/pause:3.10", false),
            ("registry.k8s.io/pausex:3.9", false),
            ("[fd00:0::1]:5000/x:1", true),
            ("[fd00::1]:5001/x:1", false),
            (&format!("ghcr.io/acme/app@{D}"), true),
            (&format!("ghcr.io/acme/app/x@{D}"), false),
            ("quay.io/tools/jq:1", true), // no tag: a path prefix, as documented
            ("quay.io/toolsx/jq:1", false),
        ] {
            assert_eq!(exempt(image), want, "{image}");
        }
        // A tag exempts what it names, not a digest written beside it.
        let p = ImagePattern::parse("registry.k8s.io/pause:3.9").unwrap();
        assert!(!p.matches(&ImageRef::parse(&format!("registry.k8s.io/pause:3.9@{D}")).unwrap()));
        // `*` in a pinned entry stays within one path component.
        let p = ImagePattern::parse("quay.io/acme/*:1").unwrap();
        assert!(p.matches(&ImageRef::parse("quay.io/acme/x:1").unwrap()));
        assert!(!p.matches(&ImageRef::parse("quay.io/acme/x/evil:1").unwrap()));
        let p = ImagePattern::parse("ghcr.io/acme/*/debug").unwrap(); // unpinned: crosses `/`
        assert!(p.matches(&ImageRef::parse("ghcr.io/acme/a/b/debug:1").unwrap()));
        for bad in [
            "registry.local:v1",
            &format!("10.0.0.5:5000@{D}"),
            "[::1]:x",
        ] {
            assert!(ImagePattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn require_digest() {
        let p = Policy {
            require_digest: true,
            ..Policy::default()
        };
        let d = decide(&p, &["nginx:1.27", &format!("nginx@{D}")]);
        assert!(!d.allowed);
        assert_eq!(d.images[0].violations[0].rule, Rule::DigestRequired);
        assert!(d.images[1].violations.is_empty());
    }

    #[test]
    fn invalid_reference_is_denied_with_parse_error() {
        let d = decide(&Policy::default(), &["NGINX:1.0"]);
        assert!(!d.allowed);
        let v = &d.images[0].violations[0];
        assert_eq!(v.rule, Rule::InvalidReference);
        assert_eq!(
            v.message,
            "policy \"flags\": image \"NGINX:1.0\" is not a valid image reference: repository name must be lowercase (found \"NGINX\")"
        );
        assert_eq!(d.images[0].normalized, None);
        // Even in a namespace that allows everything else, it stays unparsed.
        assert_eq!(d.audit_annotations()["denied-images"], "NGINX:1.0");
    }

    #[test]
    fn container_names_appear_in_reasons() {
        let d = Policy::default().decide(&Request {
            images: vec![ImageInput {
                image: "busybox".into(),
                container: Some(Container {
                    kind: ContainerKind::Init,
                    name: "setup".into(),
                }),
            }],
            ..Request::default()
        });
        assert!(
            d.reason().starts_with(
                "policy \"flags\": init container \"setup\" image \"busybox\" has no tag"
            ),
            "{}",
            d.reason()
        );
    }

    #[test]
    fn exemptions() {
        let p = Policy {
            exempt_images: [
                "registry.k8s.io/pause:3.9",
                "ghcr.io/acme/*/debug",
                "quay.io/tools",
            ]
            .iter()
            .map(|s| ImagePattern::parse(s).unwrap())
            .collect(),
            exempt_namespaces: vec![NamespacePattern::parse("kube-*").unwrap()],
            ..policy(&["docker.io"], &[])
        };
        let d = decide(
            &p,
            &[
                "registry.k8s.io/pause:3.9",
                "ghcr.io/acme/x/debug",
                "quay.io/tools/jq",
            ],
        );
        assert!(d.allowed, "{:?}", d.reasons());
        assert_eq!(
            d.images[0].exempted_by.as_deref(),
            Some("registry.k8s.io/pause:3.9")
        );
        let d = decide(
            &p,
            &[
                "registry.k8s.io/pause:3.10",
                "ghcr.io/acme/x/prod:1",
                "quay.io/toolsx:1",
            ],
        );
        assert_eq!(d.reasons().len(), 3);

        let d = p.decide(&Request {
            namespace: Some("kube-system".into()),
            images: vec![ImageInput::bare("evil.com/x")],
            ..Request::default()
        });
        assert!(d.allowed);
        assert_eq!(d.exempt_namespace.as_deref(), Some("kube-system"));
        assert_eq!(d.audit_annotations()["exempt-namespace"], "kube-system");
    }

    #[test]
    fn warn_mode_allows_and_reports() {
        let p = Policy {
            mode: Mode::Warn,
            ..Policy::default()
        };
        let d = decide(&p, &["nginx"]);
        assert!(d.allowed);
        assert!(d.reasons().is_empty());
        assert_eq!(d.warnings().len(), 1);
        assert!(
            d.warnings()[0]
                .starts_with("image policy (warn mode): policy \"flags\": image \"nginx\""),
            "{:?}",
            d.warnings()
        );
        assert_eq!(
            d.audit_annotations()["warn-images"],
            "docker.io/library/nginx:latest"
        );
    }

    #[test]
    fn break_glass_only_when_enabled() {
        let annotations: BTreeMap<String, String> = [(
            "mycluster.image-policy.k8s.io/ticket-1234".to_string(),
            "break-glass".to_string(),
        )]
        .into();
        let req = Request {
            annotations: annotations.clone(),
            images: vec![ImageInput::bare("nginx")],
            ..Request::default()
        };
        assert!(!Policy::default().decide(&req).allowed);
        let p = Policy {
            break_glass: true,
            ..Policy::default()
        };
        let d = p.decide(&req);
        assert!(d.allowed);
        assert_eq!(
            d.break_glass.as_deref(),
            Some("mycluster.image-policy.k8s.io/ticket-1234")
        );
        let audit = d.audit_annotations();
        assert_eq!(
            audit["break-glass"],
            "mycluster.image-policy.k8s.io/ticket-1234"
        );
        assert_eq!(
            audit["break-glass-images"],
            "docker.io/library/nginx:latest"
        );
        assert!(d.warnings()[0].contains("break-glass annotation"));

        for (k, v) in [
            ("image-policy.k8s.io/ticket", "break-glass"), // no cluster prefix
            ("x.image-policy.k8s.io/", "break-glass"),     // no name
            ("x.image-policy.k8s.io.evil/t", "break-glass"),
            ("x.image-policy.k8s.io/t", "Break-Glass"),
        ] {
            let req = Request {
                annotations: [(k.to_string(), v.to_string())].into(),
                images: vec![ImageInput::bare("nginx")],
                ..Request::default()
            };
            assert!(!p.decide(&req).allowed, "{k}={v}");
        }
    }

    #[test]
    fn globs() {
        for (p, t, within, want) in [
            ("*", "a/b", false, true),
            ("*", "a/b", true, false),
            ("a*c", "abbbc", true, true),
            ("a*c", "abbbd", false, false),
            ("team-*", "team-a", false, true),
            ("team-*", "team", false, false),
            ("*-x-*", "a-x-b", false, true),
            ("", "", false, true),
            ("a", "", false, false),
        ] {
            assert_eq!(glob(p, t, within), want, "{p} {t} {within}");
        }
    }

    #[test]
    fn image_patterns() {
        for bad in ["ghcr.io/acme:-x", "ghcr.io/acme@md5:00", "ghcr.io/ACME/*"] {
            assert!(ImagePattern::parse(bad).is_err(), "{bad}");
        }
        let p = ImagePattern::parse(&format!("nginx@{D}")).unwrap();
        assert!(p.matches(&ImageRef::parse(&format!("nginx@{D}")).unwrap()));
        assert!(!p.matches(&ImageRef::parse("nginx:1").unwrap()));
        assert!(NamespacePattern::parse("Kube").is_err());
    }

    /// A verifyImages entry: the image is admitted only with a verified
    /// fact for that entry; exemptions, warn mode and the /mutate
    /// pre-judgement work as for every rule.
    #[test]
    fn signatures_are_required_where_an_entry_matches() {
        let mut p = Policy {
            verify_images: vec![VerifyRequirement {
                label: "verifyImages[0]".into(),
                index: 0,
                images: vec![ImagePattern::parse("ghcr.io/acme/*").unwrap()],
                verify_tags: false,
            }],
            exempt_images: vec![ImagePattern::parse("ghcr.io/acme/tools").unwrap()],
            ..Policy::default()
        };
        let image = "ghcr.io/acme/app@sha256:0000000000000000000000000000000000000000000000000000000000000000";
        let req = |facts: Facts| Request {
            images: vec![
                ImageInput::bare(image),
                ImageInput::bare("docker.io/library/nginx:1.27"),
            ],
            signatures: facts,
            ..Request::default()
        };
        let fact = |rule: usize, outcome: Result<Signer, String>| {
            Facts::from([(
                image.to_string(),
                vec![SignatureFact {
                    rule,
                    outcome,
                    unmet: None,
                }],
            )])
        };
        let signed = Ok(Signer {
            digest: "sha256:0".into(),
            by: "key k".into(),
            found_in: "sigstore bundle".into(),
            time: None,
            time_source: None,
            log_index: None,
            attestations: Vec::new(),
        });
        assert!(p.decide(&req(fact(0, signed.clone()))).allowed);
        let d = p.decide(&req(Facts::new()));
        assert!(!d.allowed);
        assert_eq!(d.images[0].violations[0].rule, Rule::SignatureRequired);
        assert!(
            d.images[0].violations[0]
                .message
                .contains("verifyImages[0] requires it"),
            "{:?}",
            d.images[0]
        );
        assert!(d.images[1].violations.is_empty(), "nginx is not covered");
        let d = p.decide(&req(fact(0, Err("a signature by an unknown key".into()))));
        assert!(d.images[0].violations[0].message.contains("unknown key"));
        // A fact for another entry is no fact for this one.
        assert!(!p.decide(&req(fact(1, signed.clone()))).allowed);
        assert_eq!(verification(&p, image), vec![0]);
        assert!(
            verification(&p, "ghcr.io/acme/tools:1").is_empty(),
            "exempt"
        );
        assert!(verification(&p, "quay.io/acme/app:1").is_empty());
        assert!(verification(&p, "not a ref").is_empty());
        let skipped = Request {
            skip_signatures: true,
            ..req(Facts::new())
        };
        assert!(p.decide(&skipped).allowed);
        p.mode = Mode::Warn;
        assert!(p.decide(&req(Facts::new())).allowed);
    }

    /// A requirement reaches at least as far as an exemption of the same
    /// text, over every spelling that pulls what it names: a tag entry
    /// covers `tag@digest` and digests of its repository (issue 33, 1).
    #[test]
    fn a_requirement_covers_every_spelling_of_what_it_names() {
        const D2: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        let covers = |pattern: &str, image: &str| {
            ImagePattern::parse(pattern)
                .unwrap()
                .covers(&ImageRef::parse(image).unwrap())
        };
        let exempts = |pattern: &str, image: &str| {
            ImagePattern::parse(pattern)
                .unwrap()
                .matches(&ImageRef::parse(image).unwrap())
        };
        let tag = "registry.example/acme/app:prod";
        for image in [
            "registry.example/acme/app:prod".to_string(),
            format!("registry.example/acme/app:prod@{D}"),
            format!("registry.example/acme/app@{D}"),
            format!("registry.example/acme/app:dev@{D2}"),
            "REGISTRY.Example:443/acme/app:prod".to_string(),
            // An entry without a port covers every port of its host.
            "registry.example:5000/acme/app:prod".to_string(),
            format!("registry.example:443/acme/app:prod@{D2}"),
        ] {
            assert!(covers(tag, &image), "{image}");
        }
        for image in [
            "registry.example/acme/app:dev",
            "registry.example/acme/app",
            "registry.example/acme/app2:prod",
            "other.example/acme/app:prod",
        ] {
            assert!(!covers(tag, image), "{image}");
        }
        // Docker Hub's spellings, and the implicit tag.
        for image in [
            "nginx:1.27".to_string(),
            "docker.io/library/nginx:1.27".to_string(),
            "index.docker.io/library/nginx:1.27".to_string(),
            format!("registry-1.docker.io/library/nginx:1.27@{D}"),
            format!("nginx@{D}"),
        ] {
            assert!(covers("nginx:1.27", &image), "{image}");
        }
        assert!(covers("nginx:latest", "nginx"));
        assert!(covers("nginx:latest", "docker.io/library/nginx"));
        // A digest entry covers its digest whatever the tag.
        let pinned = format!("registry.example/acme/app@{D}");
        assert!(covers(&pinned, &format!("registry.example/acme/app:x@{D}")));
        assert!(!covers(&pinned, &format!("registry.example/acme/app@{D2}")));
        // A glob with a tag crosses components when it requires.
        assert!(covers(
            "registry.example/acme/*:prod",
            "registry.example/acme/team/app:prod"
        ));
        // Whatever an exemption of the same text exempts, the requirement
        // covers (over a grid of patterns and images).
        let patterns = [
            "registry.example/acme/app:prod",
            "registry.example/acme",
            "registry.example/acme/*",
            "registry.example/acme/*:prod",
            "*.example/acme/app:prod",
            "nginx:1.27",
            "nginx",
            "registry.example:5000",
        ];
        let images = [
            "registry.example/acme/app:prod".to_string(),
            format!("registry.example/acme/app:prod@{D}"),
            format!("registry.example/acme/app@{D}"),
            "registry.example/acme/team/app:prod".to_string(),
            "a.registry.example/acme/app:prod".to_string(),
            "nginx:1.27".to_string(),
            format!("nginx:1.27@{D}"),
            "registry.example:5000/x:1".to_string(),
        ];
        for p in patterns {
            for i in &images {
                if exempts(p, i) {
                    assert!(covers(p, i), "{p} exempts {i} but does not require it");
                }
            }
        }
    }

    /// Every entry that covers an image must be satisfied: a lenient tag
    /// entry (which covers the repository's digests) listed before a
    /// strict one does not let a digest off the strict one.
    #[test]
    fn every_covering_entry_must_be_satisfied() {
        let entry = |label: &str, pattern: &str| VerifyRequirement {
            label: label.into(),
            index: label[13..14].parse().unwrap(),
            images: vec![ImagePattern::parse(pattern).unwrap()],
            verify_tags: false,
        };
        let p = Policy {
            verify_images: vec![
                entry("verifyImages[0]", "reg.example/acme/app:dev"),
                entry("verifyImages[1]", "reg.example/acme/*"),
            ],
            ..Policy::default()
        };
        let image = format!("reg.example/acme/app@{D}");
        assert_eq!(verification(&p, &image), vec![0, 1]);
        assert_eq!(verification(&p, "reg.example/acme/other:1"), vec![1]);
        let signed = |rule: usize| SignatureFact {
            rule,
            unmet: None,
            outcome: Ok(Signer {
                digest: D.into(),
                by: "key k".into(),
                found_in: "sigstore bundle".into(),
                time: None,
                time_source: None,
                log_index: None,
                attestations: Vec::new(),
            }),
        };
        let req = |facts: Vec<SignatureFact>| Request {
            images: vec![ImageInput::bare(image.clone())],
            signatures: Facts::from([(image.clone(), facts)]),
            ..Request::default()
        };
        let d = p.decide(&req(vec![signed(0)]));
        assert!(!d.allowed);
        assert!(
            d.reason().contains("verifyImages[1] requires it"),
            "{}",
            d.reason()
        );
        assert!(p.decide(&req(vec![signed(0), signed(1)])).allowed);
    }

    /// A pull-through mirror is not asked for an upstream on the node or
    /// its cloud's metadata address: the mirror would fetch it for us.
    #[test]
    fn a_mirror_is_not_asked_for_a_node_local_upstream() {
        let p = Policy {
            mirrors: vec![MirrorBack::new("mirror.example", "", Upstream::ByRegistry)],
            ..Policy::default()
        };
        let p = PolicySet::one(p);
        assert!(p.may_look_up(None, "mirror.example/quay.io/acme/app:1"));
        for image in [
            "mirror.example/169.254.169.254/latest/x:1",
            "mirror.example/127.0.0.1_10250/x:1",
        ] {
            assert!(!p.may_look_up(None, image), "{image}");
        }
    }

    /// An image the registry lists refuse is never looked up (issue 33, 7).
    #[test]
    fn refused_names_are_not_looked_up() {
        let mut p = policy(&["registry.example"], &["registry.example/bad"]);
        p.verify_images = vec![VerifyRequirement {
            label: "verifyImages[0]".into(),
            index: 0,
            images: vec![ImagePattern::parse("*").unwrap()],
            verify_tags: false,
        }];
        let set = PolicySet::one(p.clone());
        assert!(set.may_look_up(None, "registry.example/acme/app:1"));
        assert_eq!(verification(&p, "registry.example/acme/app:1"), vec![0]);
        for refused in [
            "registry.example/bad/app:1",
            "169.254.169.254/latest/meta-data:1",
            "127.0.0.1:8080/x:1",
            "evil.example/x:1",
            "not a ref",
            D,
        ] {
            assert!(!set.may_look_up(None, refused), "{refused}");
            assert!(verification(&p, refused).is_empty(), "{refused}");
        }
    }
}
