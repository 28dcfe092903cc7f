//! `verifyImages`: each entry read strictly (an unknown key anywhere is a
//! problem: a misspelt field must not silently weaken a rule), its key
//! and trusted-root files read and checked, and split into what the
//! policy needs (which images) and what the verifier needs (whom to
//! trust). All problems are reported with the rest of the file's.

use std::sync::Arc;

use serde_json::Value;

use super::{COMMENT_PREFIX, Walker, type_name};
use crate::policy::{ImagePattern, VerifyRequirement};
use crate::verify::keys::PublicKey;
use crate::verify::rules::{IdentityRule, Matcher, NamedKey, Trust};
use crate::verify::trust::TrustedRoot;

/// What the verifier applies for one entry.
#[derive(Debug, Clone, Default)]
pub struct VerifyRule {
    pub label: String,
    /// The policy whose entry it is (for metrics and logs).
    pub policy: String,
    pub trust: Trust,
    /// A registry that cannot be reached admits the image unverified
    /// (`onRegistryError: allow`), with a warning; default deny.
    pub allow_on_registry_error: bool,
    /// How long a verified digest stays admitted without asking again
    /// (`verifiedCacheSeconds`, default 24 h): also while its registry is
    /// down.
    pub verified_ttl: std::time::Duration,
    /// How many distinct listed signers (keys, identities) must each have
    /// a valid signature on the digest (`threshold`, default 1); of each
    /// attestation item too.
    pub threshold: usize,
    /// `attestations`: each item must be satisfied by a statement.
    pub attestations: Vec<AttestationRule>,
}

/// One `attestations` item: a statement of one of these predicate types,
/// signed by the entry's signers (or the item's own), naming the digest,
/// for which the condition holds.
#[derive(Debug, Clone)]
pub struct AttestationRule {
    /// `verifyImages[<i>].attestations[<j>]`.
    pub label: String,
    /// The predicate type as written (an alias, or the type itself).
    pub written: String,
    /// The predicate types it accepts, exactly.
    pub predicate_types: Vec<String>,
    pub condition: Option<Arc<crate::verify::condition::Condition>>,
    /// The item's own signers (with the entry's root and options), when
    /// it lists any.
    pub trust: Option<Trust>,
}

/// Attestation items of one entry, at most (each may verify every
/// statement again under its own signers).
const ITEMS_MAX: usize = 16;

/// Short names for the predicate types cosign writes (`cosign attest
/// --type`) and SLSA's provenance, as policies usually say them.
pub const PREDICATE_ALIASES: [(&str, &[&str]); 8] = [
    (
        "slsaprovenance",
        &[
            "https://slsa.dev/provenance/v0.2",
            "https://slsa.dev/provenance/v1",
        ],
    ),
    ("slsaprovenance02", &["https://slsa.dev/provenance/v0.2"]),
    ("slsaprovenance1", &["https://slsa.dev/provenance/v1"]),
    ("spdx", &["https://spdx.dev/Document"]),
    ("cyclonedx", &["https://cyclonedx.org/bom"]),
    ("vuln", &["https://cosign.sigstore.dev/attestation/vuln/v1"]),
    (
        "openvex",
        &["https://openvex.dev/ns", "https://openvex.dev/ns/v0.2.0"],
    ),
    ("custom", &["https://cosign.sigstore.dev/attestation/v1"]),
];

/// `verifiedCacheSeconds` when not given: a digest and its signatures
/// are immutable, and a day covers a registry outage.
pub const VERIFIED_TTL_DEFAULT: u64 = 24 * 3600;
/// At most a week: a revoked key or identity must stop counting.
const VERIFIED_TTL_MAX: u64 = 7 * 24 * 3600;

pub(super) const ENTRY_KEYS: &[&str] = &[
    "images",
    "trustedRoot",
    "keys",
    "identities",
    "ignoreTlog",
    "ignoreSCT",
    "verifyTags",
    "onRegistryError",
    "verifiedCacheSeconds",
    "threshold",
    "attestations",
];

/// Trusted roots and keys are small; more is not one.
const FILE_MAX: u64 = 4 << 20;

/// Reads `verifyImages` (`source` names the file); `first` is the set-wide
/// index its first entry gets (the entries of the files before it).
// One function on purpose, each key of an entry checked in turn, every problem collected with
// its path: split by key, the pieces would pass the same half-built entry and problem list
// around.
pub fn build(
    source: &str,
    v: &Value,
    first: usize,
    problems: &mut Vec<String>,
) -> (Vec<VerifyRequirement>, Vec<VerifyRule>) {
    let mut requirements = Vec::new();
    let mut rules = Vec::new();
    let at = |p: &str| format!("{source}: {p}");
    let Some(entries) = v.as_array() else {
        problems.push(format!(
            "{}: expected a list of entries, found {}",
            at("$.verifyImages"),
            type_name(v)
        ));
        return (requirements, rules);
    };
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("$.verifyImages[{i}]");
        let label = format!("verifyImages[{i}]");
        let Some(obj) = entry.as_object() else {
            problems.push(format!(
                "{}: expected an object, found {}",
                at(&path),
                type_name(entry)
            ));
            continue;
        };
        let mut images = Vec::new();
        let mut trust = Trust::default();
        let mut verify_tags = false;
        // Signers written, valid or not (a bad one is reported once, not
        // again as "nothing could ever verify").
        let mut signers_written = 0usize;
        let mut allow = false;
        let mut verified_ttl = VERIFIED_TTL_DEFAULT;
        let mut threshold = 1usize;
        let mut root_file: Option<String> = None;
        let mut attestation_items: Option<(String, &Value)> = None;
        let mut fingerprint = ring::digest::Context::new(&ring::digest::SHA256);
        // The policy file's readers, with their messages.
        let boolean = |k: &str, v: &Value, problems: &mut Vec<String>| {
            Walker { source, problems }
                .boolean(&format!("{path}.{k}"), v)
                .unwrap_or(false)
        };
        let strings = |k: &str, v: &Value, problems: &mut Vec<String>| -> Vec<String> {
            Walker { source, problems }
                .strings(&format!("{path}.{k}"), v)
                .into_iter()
                .map(|(_, s)| s)
                .collect()
        };
        for (k, v) in obj {
            let p = format!("{path}.{k}");
            match k.as_str() {
                k if k.starts_with(COMMENT_PREFIX) => {}
                "images" => {
                    for s in strings(k, v, problems) {
                        match ImagePattern::parse(&s) {
                            Ok(pat) => images.push(pat),
                            Err(e) => problems.push(format!("{}: {s:?}: {e}", at(&p))),
                        }
                    }
                }
                "trustedRoot" => match v.as_str() {
                    Some(f) => root_file = Some(f.to_string()),
                    None => problems.push(format!(
                        "{}: expected a file name, found {}",
                        at(&p),
                        type_name(v)
                    )),
                },
                "keys" => {
                    let files = strings(k, v, problems);
                    signers_written += files.len();
                    trust.keys = keys(&at(&p), files, &mut fingerprint, problems);
                }
                "identities" => {
                    trust.identities = identities(&at(&p), v, &mut signers_written, problems)
                }
                "ignoreTlog" => trust.ignore_tlog = boolean(k, v, problems),
                "ignoreSCT" => trust.ignore_sct = boolean(k, v, problems),
                "verifyTags" => verify_tags = boolean(k, v, problems),
                "verifiedCacheSeconds" => match v.as_u64() {
                    Some(n) if n <= VERIFIED_TTL_MAX => verified_ttl = n,
                    _ => problems.push(format!(
                        "{}: expected a number of seconds from 0 to {VERIFIED_TTL_MAX}, found {v}",
                        at(&p)
                    )),
                },
                "threshold" => match v.as_u64() {
                    Some(n @ 1..=64) => threshold = n as usize,
                    _ => problems.push(format!(
                        "{}: expected a number of signers from 1 to 64, found {v}",
                        at(&p)
                    )),
                },
                "attestations" => attestation_items = Some((p.clone(), v)),
                "onRegistryError" => match v.as_str() {
                    Some("deny") => allow = false,
                    Some("allow") => allow = true,
                    _ => problems.push(format!(
                        "{}: expected \"deny\" or \"allow\", found {v}",
                        at(&p)
                    )),
                },
                _ => problems.push(format!(
                    "{}: unknown key (expected one of {})",
                    at(&p),
                    ENTRY_KEYS.join(", ")
                )),
            }
        }
        if images.is_empty() {
            problems.push(format!(
                "{}: no images: say which images must be signed (\"*\" for all)",
                at(&path)
            ));
        }
        if trust.keys.is_empty() && trust.identities.is_empty() && signers_written == 0 {
            problems.push(format!(
                "{}: neither keys nor identities: nothing could ever verify",
                at(&path)
            ));
        }
        match &root_file {
            Some(f) => match crate::config::file_or_inline(f, FILE_MAX).and_then(|t| {
                fingerprint.update(t.as_bytes());
                let shown = if crate::config::is_inline(f) { "the inline trustedRoot" } else { f };
                TrustedRoot::parse(&t).map_err(|e| format!("{shown}: {e}"))
            }) {
                Ok(root) => trust.root = Some(Arc::new(root)),
                Err(e) => problems.push(format!("{}: {e}", at(&format!("{path}.trustedRoot")))),
            },
            None if !trust.identities.is_empty() => problems.push(format!(
                "{}: identities need a trustedRoot (the Fulcio CAs, Rekor and CT log keys)",
                at(&path)
            )),
            None if !trust.ignore_tlog => problems.push(format!(
                "{}: keys need a trustedRoot to check the transparency log entry, unless ignoreTlog is true",
                at(&path)
            )),
            None => {}
        }
        fingerprint_identities(
            &at(&format!("{path}.identities")),
            &trust.identities,
            &mut fingerprint,
            problems,
        );
        if threshold > signers_written.max(1) {
            problems.push(format!(
                "{}: threshold {threshold} is more than the {signers_written} signers listed: nothing could ever verify",
                at(&path)
            ));
        }
        fingerprint.update(&[trust.ignore_tlog as u8, trust.ignore_sct as u8]);
        // A verdict reached with fewer signers must not serve a rule
        // that asks for more.
        fingerprint.update(&(threshold as u64).to_be_bytes());
        let attestations = match attestation_items {
            Some((p, v)) => {
                let items = Items {
                    source,
                    label: &label,
                    entry: &trust,
                    threshold,
                };
                items.read(&p, v, problems)
            }
            None => Vec::new(),
        };
        // Every item's text: a verdict reached for other requirements
        // must not serve these.
        for a in &attestations {
            let own = a.trust.as_ref().map_or("", |t| t.fingerprint.as_str());
            let condition = a.condition.as_ref().map_or("", |c| c.source());
            fingerprint.update(
                format!(
                    "{}\n{}\n{}\n{own}\n{condition}\n",
                    a.label,
                    a.written,
                    a.predicate_types.join(",")
                )
                .as_bytes(),
            );
        }
        trust.fingerprint =
            crate::digest::Digest::sha256_of(fingerprint.finish().as_ref()).to_string();
        requirements.push(VerifyRequirement {
            label: label.clone(),
            index: first + rules.len(),
            images,
            verify_tags,
        });
        rules.push(VerifyRule {
            label,
            policy: String::new(),
            trust,
            allow_on_registry_error: allow,
            verified_ttl: std::time::Duration::from_secs(verified_ttl),
            threshold,
            attestations,
        });
    }
    (requirements, rules)
}

/// Keys, each a file or the PEM itself (a ConfigMap value); a key listed
/// twice is a problem (one signer counted as two toward a threshold).
fn keys(
    at: &str,
    files: Vec<String>,
    fingerprint: &mut ring::digest::Context,
    problems: &mut Vec<String>,
) -> Vec<NamedKey> {
    let mut out: Vec<NamedKey> = Vec::new();
    for (n, f) in files.into_iter().enumerate() {
        let name = if crate::config::is_inline(&f) {
            format!("{at}.keys[{n}] (inline)")
        } else {
            f.clone()
        };
        match crate::config::file_or_inline(&f, FILE_MAX)
            .and_then(|pem| PublicKey::from_pem(&pem).map_err(|e| format!("{name}: {e}")))
        {
            Ok(key) => match out.iter().position(|k| k.key.spki == key.spki) {
                Some(first) => problems.push(format!(
                    "{at}[{n}]: {name} is the key of keys[{first}] again"
                )),
                None => {
                    fingerprint.update(&key.spki);
                    out.push(NamedKey { name, key });
                }
            },
            Err(e) => problems.push(format!("{at}: {e}")),
        }
    }
    out
}

/// What an entry's `attestations` are read against.
struct Items<'a> {
    source: &'a str,
    label: &'a str,
    entry: &'a Trust,
    threshold: usize,
}

impl Items<'_> {
    /// `attestations`: each `{predicateType, condition?, keys?,
    /// identities?}`.
    fn read(&self, p: &str, v: &Value, problems: &mut Vec<String>) -> Vec<AttestationRule> {
        let at = |p: &str| format!("{}: {p}", self.source);
        let Some(items) = v.as_array() else {
            problems.push(format!(
                "{}: expected a list of attestation items, found {}",
                at(p),
                type_name(v)
            ));
            return Vec::new();
        };
        if items.len() > ITEMS_MAX {
            problems.push(format!(
                "{}: {} attestation items, more than the {ITEMS_MAX} an entry may require",
                at(p),
                items.len()
            ));
            return Vec::new();
        }
        let mut out = Vec::new();
        for (j, item) in items.iter().enumerate() {
            let here = format!("{p}[{j}]");
            let Some(obj) = item.as_object() else {
                problems.push(format!(
                    "{}: expected an object, found {}",
                    at(&here),
                    type_name(item)
                ));
                continue;
            };
            let before = problems.len();
            let mut written = None;
            let mut condition = None;
            let mut own = Trust {
                root: self.entry.root.clone(),
                ignore_tlog: self.entry.ignore_tlog,
                ignore_sct: self.entry.ignore_sct,
                ..Trust::default()
            };
            let mut own_signers = 0usize;
            let mut fingerprint = ring::digest::Context::new(&ring::digest::SHA256);
            for (k, v) in obj {
                let kp = format!("{here}.{k}");
                match k.as_str() {
                    k if k.starts_with(COMMENT_PREFIX) => {}
                    "predicateType" => match v.as_str() {
                        Some(t) if !t.is_empty() => written = Some(t.to_string()),
                        _ => problems.push(format!(
                            "{}: expected a predicate type (a URI, or one of {}), found {v}",
                            at(&kp),
                            aliases()
                        )),
                    },
                    "condition" => match v.as_str() {
                        Some(c) => match crate::verify::condition::Condition::compile(c) {
                            Ok(c) => condition = Some(Arc::new(c)),
                            Err(e) => problems.push(format!("{}: {e}", at(&kp))),
                        },
                        None => problems.push(format!(
                            "{}: expected a CEL expression, found {}",
                            at(&kp),
                            type_name(v)
                        )),
                    },
                    "keys" => {
                        let files: Vec<String> = Walker {
                            source: self.source,
                            problems,
                        }
                        .strings(&kp, v)
                        .into_iter()
                        .map(|(_, s)| s)
                        .collect();
                        own_signers += files.len();
                        own.keys = keys(&at(&kp), files, &mut fingerprint, problems);
                    }
                    "identities" => {
                        own.identities = identities(&at(&kp), v, &mut own_signers, problems);
                        fingerprint_identities(
                            &at(&kp),
                            &own.identities,
                            &mut fingerprint,
                            problems,
                        );
                    }
                    _ => problems.push(format!(
                        "{}: unknown key (expected predicateType, condition, keys, identities)",
                        at(&kp)
                    )),
                }
            }
            let Some(written) = written else {
                if problems.len() == before {
                    problems.push(format!("{}: no predicateType", at(&here)));
                }
                continue;
            };
            let predicate_types: Vec<String> =
                match PREDICATE_ALIASES.iter().find(|(a, _)| *a == written) {
                    Some((_, types)) => types.iter().map(|t| t.to_string()).collect(),
                    None if written.contains(':') => vec![written.clone()],
                    None => {
                        problems.push(format!(
                            "{}: {written:?} is neither a predicate type URI nor one of {}",
                            at(&format!("{here}.predicateType")),
                            aliases()
                        ));
                        continue;
                    }
                };
            if own_signers > 0 {
                if !own.identities.is_empty() && own.root.is_none() {
                    problems.push(format!(
                        "{}: identities need the entry's trustedRoot",
                        at(&here)
                    ));
                }
                if self.threshold > own_signers {
                    problems.push(format!(
                        "{}: the entry's threshold {} is more than the {own_signers} signers this item lists",
                        at(&here),
                        self.threshold
                    ));
                }
            }
            if problems.len() > before {
                continue;
            }
            own.fingerprint =
                crate::digest::Digest::sha256_of(fingerprint.finish().as_ref()).to_string();
            out.push(AttestationRule {
                label: format!("{}.attestations[{j}]", self.label),
                written,
                predicate_types,
                condition,
                trust: (own_signers > 0).then_some(own),
            });
        }
        out
    }
}

/// The predicate type aliases, for messages.
fn aliases() -> String {
    PREDICATE_ALIASES
        .iter()
        .map(|(a, _)| *a)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Identities into a fingerprint, as text; one written twice is a problem
/// (`at` names the list).
fn fingerprint_identities(
    at: &str,
    identities: &[IdentityRule],
    fingerprint: &mut ring::digest::Context,
    problems: &mut Vec<String>,
) {
    let described: Vec<_> = identities.iter().map(describe).collect();
    for (i, (issuer, subject, extensions)) in described.iter().enumerate() {
        fingerprint.update(format!("{issuer}\n{subject}\n{extensions}\n").as_bytes());
        if let Some(first) = described[..i].iter().position(|e| e == &described[i]) {
            problems.push(format!(
                "{at}[{i}]: the same identity as identities[{first}] (one signer counted twice toward a threshold)"
            ));
        }
    }
}

/// An identity rule as text: what a verdict was reached under.
fn describe(r: &IdentityRule) -> (String, String, String) {
    let extensions: Vec<String> = r
        .extensions
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    (
        r.issuer.describe(),
        r.subject.describe(),
        extensions.join(","),
    )
}

/// `identities`: each `{issuer | issuerRegExp, subject | subjectRegExp,
/// extensions?}`.
/// The identities of an entry; `written` counts those written, valid or
/// not.
fn identities(
    at: &str,
    v: &Value,
    written: &mut usize,
    problems: &mut Vec<String>,
) -> Vec<IdentityRule> {
    let Some(items) = v.as_array() else {
        problems.push(format!(
            "{at}: expected a list of identities, found {}",
            type_name(v)
        ));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (j, item) in items.iter().enumerate() {
        let here = format!("{at}[{j}]");
        let Some(obj) = item.as_object() else {
            problems.push(format!(
                "{here}: expected an object, found {}",
                type_name(item)
            ));
            continue;
        };
        let (mut issuer, mut subject) = (Vec::new(), Vec::new());
        // Fields written, valid or not: a bad pattern is one problem, not
        // also "give exactly one" or "nothing could ever verify".
        let (mut issuers_written, mut subjects_written) = (0, 0);
        let mut broken = false;
        let mut extensions = Vec::new();
        for (k, v) in obj {
            if k == "extensions" {
                match certificate_extensions(&format!("{here}.extensions"), v, problems) {
                    Some(e) => extensions = e,
                    None => broken = true,
                }
                continue;
            }
            let value = match v.as_str() {
                Some(s) if !s.is_empty() => s,
                _ if k.starts_with(COMMENT_PREFIX) => continue,
                _ => {
                    problems.push(format!(
                        "{here}.{k}: expected a non-empty string, found {v}"
                    ));
                    continue;
                }
            };
            let m = match k.as_str() {
                k if k.starts_with(COMMENT_PREFIX) => continue,
                "issuer" | "subject" => Ok(Matcher::Exact(value.to_string())),
                "issuerRegExp" | "subjectRegExp" => Matcher::regex(value),
                _ => {
                    problems.push(format!(
                        "{here}.{k}: unknown key (expected issuer or issuerRegExp, subject or subjectRegExp, extensions)"
                    ));
                    continue;
                }
            };
            if k.starts_with("issuer") {
                issuers_written += 1;
            } else {
                subjects_written += 1;
            }
            match (m, k.starts_with("issuer")) {
                (Ok(m), true) => issuer.push(m),
                (Ok(m), false) => subject.push(m),
                (Err(e), _) => {
                    broken = true;
                    problems.push(format!("{here}.{k}: {e}"));
                }
            }
        }
        *written += 1;
        if broken && issuers_written == 1 && subjects_written == 1 {
            continue;
        }
        if issuer.len() != 1 || subject.len() != 1 {
            problems.push(format!(
                "{here}: give exactly one of issuer/issuerRegExp and one of subject/subjectRegExp"
            ));
            continue;
        }
        out.push(IdentityRule {
            issuer: issuer.remove(0),
            subject: subject.remove(0),
            extensions,
        });
    }
    out
}

/// An identity's `extensions`: certificate extensions by the names
/// sigstore's clients give them, each a non-empty exact value.
fn certificate_extensions(
    here: &str,
    v: &Value,
    problems: &mut Vec<String>,
) -> Option<Vec<(&'static str, String)>> {
    let Some(obj) = v.as_object() else {
        problems.push(format!(
            "{here}: expected an object of extension names and values, found {}",
            type_name(v)
        ));
        return None;
    };
    let names = crate::verify::fulcio::EXTENSIONS;
    let mut out = Vec::new();
    let before = problems.len();
    for (k, v) in obj {
        if k.starts_with(COMMENT_PREFIX) {
            continue;
        }
        let Some((_, name)) = names.iter().find(|(_, n)| n == k) else {
            problems.push(format!(
                "{here}.{k}: unknown certificate extension (expected one of {})",
                names.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ")
            ));
            continue;
        };
        match v.as_str() {
            Some(s) if !s.is_empty() => out.push((*name, s.to_string())),
            _ => problems.push(format!(
                "{here}.{k}: expected a non-empty string (an exact value), found {v}"
            )),
        }
    }
    (problems.len() == before).then_some(out)
}
