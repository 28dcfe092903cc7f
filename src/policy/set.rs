//! A policy set: several named policies, each with its own scope
//! (namespaces) and mode, judged together. An image is admitted when every
//! policy that applies and enforces admits it; a policy in warn mode that
//! would refuse it adds warnings. Pure, like the rest of `policy`.

use std::collections::BTreeSet;

use super::{Decision, Policy, Request, VerifyRequirement};

/// Every policy in force, in file-name order. Never empty when built by
/// `config` (a set of one for a single file or for flags alone).
#[derive(Debug, Clone)]
pub struct PolicySet {
    pub policies: Vec<Policy>,
}

impl Default for PolicySet {
    fn default() -> Self {
        PolicySet::one(Policy::default())
    }
}

impl From<Policy> for PolicySet {
    fn from(p: Policy) -> Self {
        PolicySet::one(p)
    }
}

impl PolicySet {
    pub fn one(policy: Policy) -> Self {
        PolicySet {
            policies: vec![policy],
        }
    }

    /// The set in a few words, for the log and `check --policy`.
    pub fn summary(&self) -> String {
        match self.policies.as_slice() {
            [one] => format!("policy {:?}: {}", one.name, one.summary()),
            many => {
                let each: Vec<String> = many
                    .iter()
                    .map(|p| format!("{:?} ({})", p.name, p.summary()))
                    .collect();
                format!("{} policies: {}", many.len(), each.join("; "))
            }
        }
    }

    /// The policies that apply to a request in `namespace`.
    pub fn applicable<'a>(
        &'a self,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Policy> {
        self.policies
            .iter()
            .filter(move |p| p.applies_to(namespace))
    }

    /// Whether any policy has `verifyImages` entries.
    pub fn verifies(&self) -> bool {
        self.policies.iter().any(|p| !p.verify_images.is_empty())
    }

    /// The `verifyImages` entry with set-wide index `index`, and the name
    /// of its policy.
    pub fn requirement(&self, index: usize) -> Option<(&str, &VerifyRequirement)> {
        self.policies.iter().find_map(|p| {
            p.verify_images
                .iter()
                .find(|v| v.index == index)
                .map(|v| (&*p.name, v))
        })
    }

    /// Judges the request under every applicable policy.
    pub fn decide(&self, req: &Request) -> Decision {
        let mut req = req.clone();
        self.decide_taking(&mut req)
    }

    /// [`PolicySet::decide`], moving the images into the verdicts
    /// (`req.images` is left empty, as `Policy::decide_taking` leaves it).
    pub fn decide_taking(&self, req: &mut Request) -> Decision {
        let ns = req.namespace.as_deref();
        let applicable: Vec<&Policy> = self.policies.iter().filter(|p| p.applies_to(ns)).collect();
        match applicable.as_slice() {
            [] => {
                // No policy covers the namespace: nothing to judge.
                let images = std::mem::take(&mut req.images);
                Decision {
                    allowed: true,
                    images: images.into_iter().map(super::unchecked).collect(),
                    exempt_namespace: None,
                    break_glass: None,
                }
            }
            [one] => one.decide_taking(req),
            [first, middle @ .., last] => {
                let mut decision = first.decide(req);
                for p in middle {
                    merge(&mut decision, p.decide(req));
                }
                merge(&mut decision, last.decide_taking(req));
                decision
            }
        }
    }

    /// Whether the admission step may ask a registry about `image` for a
    /// request in `namespace`: every policy that applies lets it be looked
    /// up (see `Policy::may_look_up`), so that no policy's registry lists
    /// can be got round by another's.
    pub fn may_look_up(&self, namespace: Option<&str>, image: &str) -> bool {
        self.applicable(namespace).all(|p| p.may_look_up(image))
    }

    /// The `verifyImages` entries (set-wide indices) an image of a request
    /// in `namespace` must be verified under: those of every applicable
    /// policy, and none when any applicable policy refuses to look the
    /// image up.
    pub fn verification_for(&self, namespace: Option<&str>, image: &str) -> Vec<usize> {
        if !self.verifies() || !self.may_look_up(namespace, image) {
            return Vec::new();
        }
        let all: BTreeSet<usize> = self
            .applicable(namespace)
            .flat_map(|p| p.verification_for(image))
            .collect();
        all.into_iter().collect()
    }
}

/// Adds one policy's decision to the decision so far: the violations of
/// each image together, denied when either denies.
fn merge(into: &mut Decision, next: Decision) {
    into.allowed &= next.allowed;
    for (mine, theirs) in into.images.iter_mut().zip(next.images) {
        mine.violations.extend(theirs.violations);
        if mine.normalized.is_none() {
            mine.normalized = theirs.normalized;
        }
        if mine.exempted_by.is_none() {
            mine.exempted_by = theirs.exempted_by;
        }
    }
    if into.exempt_namespace.is_none() {
        into.exempt_namespace = next.exempt_namespace;
    }
    if into.break_glass.is_none() {
        into.break_glass = next.break_glass;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{
        Effect, ImageInput, ImagePattern, Mode, NamespacePattern, RegistryPattern, Rule,
        VerifyRequirement,
    };
    use std::collections::BTreeMap;

    fn named(name: &str, f: impl FnOnce(&mut Policy)) -> Policy {
        let mut p = Policy {
            name: name.into(),
            ..Policy::default()
        };
        f(&mut p);
        p
    }

    fn ns(list: &[&str]) -> Vec<NamespacePattern> {
        list.iter()
            .map(|s| NamespacePattern::parse(s).unwrap())
            .collect()
    }

    fn request(namespace: Option<&str>, images: &[&str]) -> Request {
        Request {
            namespace: namespace.map(str::to_string),
            images: images.iter().map(|i| ImageInput::bare(*i)).collect(),
            ..Request::default()
        }
    }

    /// A base policy in enforce and a digest policy in warn for some
    /// namespaces: the warn one never denies, and names itself.
    #[test]
    fn enforce_and_warn_policies_together() {
        let set = PolicySet {
            policies: vec![
                named("base", |p| {
                    p.allowed_registries = vec![RegistryPattern::parse("ghcr.io").unwrap()];
                }),
                named("pinned", |p| {
                    p.mode = Mode::Warn;
                    p.require_digest = true;
                    p.namespaces = ns(&["prod", "team-*"]);
                }),
            ],
        };
        let d = set.decide(&request(Some("prod"), &["ghcr.io/a/b:1"]));
        assert!(d.allowed);
        assert!(d.reasons().is_empty());
        let w = d.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with(
                "image policy (warn mode): policy \"pinned\": image \"ghcr.io/a/b:1\""
            ),
            "{w:?}"
        );
        // Out of the warn policy's namespaces: nothing to say.
        let d = set.decide(&request(Some("dev"), &["ghcr.io/a/b:1"]));
        assert!(d.allowed && d.warnings().is_empty());
        // The enforcing one denies, and the warn one still warns.
        let d = set.decide(&request(Some("team-x"), &["quay.io/a/b:1"]));
        assert!(!d.allowed);
        assert_eq!(d.reasons().len(), 1);
        assert!(
            d.reasons()[0].starts_with("policy \"base\": "),
            "{:?}",
            d.reasons()
        );
        assert_eq!(d.warnings().len(), 1);
        let effects: Vec<(&str, Effect)> = d.images[0]
            .violations
            .iter()
            .map(|v| (&*v.policy, v.effect))
            .collect();
        assert_eq!(
            effects,
            [("base", Effect::Denies), ("pinned", Effect::Warns)]
        );
        let a = d.audit_annotations();
        assert_eq!(a["denied-images"], "quay.io/a/b:1");
        assert_eq!(a["warn-images"], "quay.io/a/b:1");
    }

    /// Each policy's exemptions, exempt namespaces and break-glass reach
    /// that policy only.
    #[test]
    fn exemptions_reach_their_own_policy_only() {
        let strict = |name: &str| {
            named(name, |p| {
                p.require_digest = true;
            })
        };
        let exempting = named("lenient", |p| {
            p.require_digest = true;
            p.exempt_images = vec![ImagePattern::parse("ghcr.io/a/*").unwrap()];
            p.exempt_namespaces = ns(&["kube-system"]);
            p.break_glass = true;
        });
        let set = PolicySet {
            policies: vec![exempting, strict("strict")],
        };
        for (req, why) in [
            (request(Some("default"), &["ghcr.io/a/b:1"]), "exempt image"),
            (
                request(Some("kube-system"), &["quay.io/x:1"]),
                "exempt namespace",
            ),
        ] {
            let d = set.decide(&req);
            assert!(!d.allowed, "{why}");
            assert!(
                d.reasons()
                    .iter()
                    .all(|r| r.starts_with("policy \"strict\"")),
                "{why}: {:?}",
                d.reasons()
            );
        }
        let mut glass = request(Some("default"), &["quay.io/x:1"]);
        glass.annotations = BTreeMap::from([(
            "a.image-policy.k8s.io/t".to_string(),
            "break-glass".to_string(),
        )]);
        let d = set.decide(&glass);
        assert!(
            !d.allowed,
            "break-glass of one policy let another's rule off"
        );
        assert_eq!(d.reasons().len(), 1);
        assert!(d.reasons()[0].starts_with("policy \"strict\""));
        assert!(
            d.warnings()
                .iter()
                .any(|w| w.starts_with("break-glass: policy \"lenient\"")),
            "{:?}",
            d.warnings()
        );
    }

    #[test]
    fn namespaces_and_exclusions() {
        let p = named("p", |p| {
            p.namespaces = ns(&["team-*"]);
            p.exclude_namespaces = ns(&["team-sandbox"]);
        });
        assert!(p.applies_to(Some("team-a")));
        assert!(!p.applies_to(Some("team-sandbox")));
        assert!(!p.applies_to(Some("teams")));
        assert!(!p.applies_to(None));
        let all = named("all", |p| p.exclude_namespaces = ns(&["dev"]));
        assert!(all.applies_to(None) && all.applies_to(Some("x")) && !all.applies_to(Some("dev")));
        // No policy applies: nothing is judged, and nothing denies.
        let set = PolicySet { policies: vec![p] };
        let d = set.decide(&request(Some("other"), &["nginx:latest"]));
        assert!(d.allowed && d.images[0].violations.is_empty());
        assert_eq!(d.images.len(), 1);
    }

    /// Signatures are asked for under the entries of the policies that
    /// apply, by their set-wide index; a name any applicable policy's
    /// lists refuse is never looked up.
    #[test]
    fn verification_follows_scope() {
        let entry = |index: usize| VerifyRequirement {
            label: "verifyImages[0]".into(),
            index,
            images: vec![ImagePattern::parse("ghcr.io/*").unwrap()],
            verify_tags: true,
        };
        let set = PolicySet {
            policies: vec![
                named("a", |p| p.verify_images = vec![entry(0)]),
                named("b", |p| {
                    p.namespaces = ns(&["prod"]);
                    p.verify_images = vec![entry(1)];
                }),
                named("c", |p| {
                    p.namespaces = ns(&["locked"]);
                    p.denied_registries = vec![RegistryPattern::parse("ghcr.io/evil").unwrap()];
                }),
            ],
        };
        assert_eq!(set.verification_for(Some("dev"), "ghcr.io/x/y:1"), [0]);
        assert_eq!(set.verification_for(Some("prod"), "ghcr.io/x/y:1"), [0, 1]);
        assert!(set.may_look_up(Some("dev"), "ghcr.io/evil/y:1"));
        assert!(!set.may_look_up(Some("locked"), "ghcr.io/evil/y:1"));
        assert!(
            set.verification_for(Some("locked"), "ghcr.io/evil/y:1")
                .is_empty()
        );
        assert_eq!(
            set.requirement(1).map(|(p, r)| (p, r.index)),
            Some(("b", 1))
        );
        // Unverified, the entry of each applicable policy is a violation of that policy.
        let d = set.decide(&request(Some("prod"), &["ghcr.io/x/y:1"]));
        let rules: Vec<(&str, Rule)> = d.images[0]
            .violations
            .iter()
            .map(|v| (&*v.policy, v.rule))
            .collect();
        assert_eq!(
            rules,
            [
                ("a", Rule::SignatureRequired),
                ("b", Rule::SignatureRequired)
            ]
        );
    }
}
