//! What a `verifyImages` entry trusts, as values the verifier applies:
//! keys, keyless identities (issuer and subject, each exact or a regex
//! matched against the **whole** value), the trusted root, and the
//! options that waive a check. Built and validated by `config`.

use std::sync::Arc;

use crate::verify::keys::PublicKey;
use crate::verify::trust::TrustedRoot;

/// An exact value, or a regex that must match all of it.
#[derive(Debug, Clone)]
pub enum Matcher {
    Exact(String),
    /// Compiled from `^(?:<pattern>)$`; `source` is what was written.
    Regex {
        source: String,
        re: regex::Regex,
    },
}

impl Matcher {
    /// A regex matched whole, as if wrapped in `^(?:…)$`: a pattern that
    /// matches a prefix only (`https://github.com/acme/`) matches nothing
    /// longer.
    pub fn regex(source: &str) -> Result<Matcher, String> {
        // Checked as written first, so that the error points into what the
        // admin wrote (not into the anchors added below) on one line.
        let plain = |e: regex::Error| match e {
            regex::Error::Syntax(s) => s
                .lines()
                .rev()
                .find(|l| l.starts_with("error: "))
                .map_or(s.clone(), |l| l.trim_start_matches("error: ").to_string()),
            other => other.to_string(),
        };
        regex::RegexBuilder::new(source)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("{source:?} is not a regular expression: {}", plain(e)))?;
        let re = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("{source:?} is not a regular expression: {}", plain(e)))?;
        Ok(Matcher::Regex {
            source: source.to_string(),
            re,
        })
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(v) => v == value,
            Matcher::Regex { re, .. } => re.is_match(value),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Matcher::Exact(v) => format!("{v:?}"),
            Matcher::Regex { source, .. } => format!("/{source}/"),
        }
    }
}

/// One accepted keyless signer.
#[derive(Debug, Clone)]
pub struct IdentityRule {
    pub issuer: Matcher,
    pub subject: Matcher,
    /// Certificate extensions that must be present with exactly these
    /// values (`sourceRepositoryURI`, …; see `fulcio::EXTENSIONS`).
    pub extensions: Vec<(&'static str, String)>,
}

impl IdentityRule {
    /// Why a certificate holder with the right issuer and subject still
    /// is not this signer: the first extension missing or different.
    fn extensions_differ(&self, identity: &crate::verify::fulcio::Identity) -> Option<String> {
        self.extensions
            .iter()
            .find_map(|(name, want)| match identity.extensions.get(name) {
                Some(v) if v == want => None,
                Some(v) => Some(format!("its certificate's {name} is {v:?}, not {want:?}")),
                None => Some(format!("its certificate has no {name} (expected {want:?})")),
            })
    }
}

/// A key, and where it came from (for reports).
#[derive(Debug, Clone)]
pub struct NamedKey {
    pub name: String,
    pub key: PublicKey,
}

impl NamedKey {
    /// The signer in words, for logs and reports: `key <name> (<type>,
    /// sha256:<first 16 hex digits of the key's SPKI digest>)`.
    pub fn words(&self) -> String {
        let d = crate::digest::Digest::sha256_of(&self.key.spki).to_string();
        let short = d.get(..23).unwrap_or(&d);
        format!("key {} ({}, {short})", self.name, self.key.describe())
    }
}

/// Everything one rule trusts.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub keys: Vec<NamedKey>,
    pub identities: Vec<IdentityRule>,
    pub root: Option<Arc<TrustedRoot>>,
    pub ignore_tlog: bool,
    pub ignore_sct: bool,
    /// sha256 over the contents of the keys and the root and the options:
    /// a cached verdict is only as good as what it was checked against.
    pub fingerprint: String,
}

impl Trust {
    /// Whether a certificate's holder is one of the accepted identities:
    /// an issuer is required (a certificate without one matches nothing),
    /// and some SAN value must match the same rule's subject. Returns the
    /// signer in words, and every listed identity that accepts it
    /// (`identities[<i>]`, comma-separated: a threshold gives each signer
    /// one of them).
    pub fn accept(
        &self,
        identity: &crate::verify::fulcio::Identity,
    ) -> Result<(String, String), String> {
        let subject = identity.subjects.join(", ");
        let mut differs = None;
        let matched: Vec<String> = identity
            .issuer
            .as_deref()
            .map(|issuer| {
                self.identities
                    .iter()
                    .enumerate()
                    .filter(|(_, rule)| {
                        rule.issuer.matches(issuer)
                            && identity.subjects.iter().any(|s| rule.subject.matches(s))
                    })
                    .filter(|(_, rule)| match rule.extensions_differ(identity) {
                        Some(why) => {
                            differs.get_or_insert(why);
                            false
                        }
                        None => true,
                    })
                    .map(|(i, _)| format!("identities[{i}]"))
                    .collect()
            })
            .unwrap_or_default();
        match (identity.issuer.as_deref(), matched.is_empty()) {
            (Some(issuer), false) => Ok((
                format!("identity {subject} from issuer {issuer}"),
                matched.join(","),
            )),
            (issuer, _) => Err(format!(
                "identity {subject:?} from issuer {:?} is not accepted{}",
                issuer.unwrap_or("(none)"),
                differs.map(|why| format!(": {why}")).unwrap_or_default()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes_match_whole_values() {
        let m = Matcher::regex(
            "https://github.com/acme/.+/\\.github/workflows/release\\.yml@refs/tags/v.+",
        )
        .unwrap();
        assert!(
            m.matches("https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.2")
        );
        // Only a prefix, or with something after it: no match.
        let prefix = Matcher::regex("https://github.com/acme/").unwrap();
        assert!(
            !prefix.matches("https://github.com/acme/app/.github/workflows/x.yml@refs/heads/main")
        );
        assert!(!m.matches(
            "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.2\nx"
        ));
        assert!(
            !m.matches("xhttps://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1")
        );
        // An alternation cannot escape the anchors.
        let alt = Matcher::regex("a|b").unwrap();
        assert!(alt.matches("a") && alt.matches("b") && !alt.matches("ab") && !alt.matches("xa"));
        assert!(Matcher::regex("(").is_err());
        assert!(
            Matcher::Exact("a".into()).matches("a") && !Matcher::Exact("a".into()).matches("ab")
        );
    }
}
