//! A policy set: several named policies, each with its own scope
//! (namespaces) and mode, judged together. An image is admitted when every
//! policy that applies and enforces admits it; a policy in warn mode that
//! would refuse it adds warnings. Pure, like the rest of `policy`.

use std::collections::BTreeSet;

use super::{
    Decision, Effect, ImageRef, ImageVerdict, Mode, Policy, Request, Rule, VerifyRequirement,
};

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

    /// Which policies apply to a request in `namespace`, found once (each
    /// is a match of namespace patterns): what a review's judgement and
    /// its counts go over, container after container.
    pub(crate) fn applying(&self, namespace: Option<&str>) -> Applying {
        let mut a = Applying {
            stack: [0; APPLYING_ON_STACK],
            heap: Vec::new(),
            len: 0,
        };
        for (i, p) in self.policies.iter().enumerate() {
            if !p.applies_to(namespace) {
                continue;
            }
            if a.len < APPLYING_ON_STACK {
                a.stack[a.len] = i;
            } else {
                if a.heap.is_empty() {
                    a.heap.extend_from_slice(&a.stack);
                }
                a.heap.push(i);
            }
            a.len += 1;
        }
        a
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
        let applying = self.applying(req.namespace.as_deref());
        match applying.indices() {
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
            &[one] => self.policies[one].decide_taking(req),
            _ => judge_together(self, &applying, req),
        }
    }

    /// Whether the admission step may ask a registry about `image` for a
    /// request in `namespace`. Never for an image that does not parse or
    /// whose mirrored upstream is node-local, whichever policies apply (a
    /// namespace no policy covers too). Not when the registry lists of an
    /// enforcing policy that judges the request refuse it: the request is
    /// denied anyway, and a refused name causes no connection. A policy in
    /// warn mode (or whose `exemptNamespaces` leave the request alone)
    /// refuses nothing, so its lists do not stop the lookups an enforcing
    /// policy's signature or pin needs.
    pub fn may_look_up(&self, namespace: Option<&str>, image: &str) -> bool {
        self.lookup(namespace, image).is_some()
    }

    /// The name a lookup for `image` is about, when [`PolicySet::may_look_up`]
    /// allows one: resolved once for every policy (their mirrors are the
    /// same).
    fn lookup(&self, namespace: Option<&str>, image: &str) -> Option<ImageRef> {
        let r = self.policies.first()?.lookup_target(image)?;
        let refused = self
            .applicable(namespace)
            .filter(|p| p.mode == Mode::Enforce && !p.exempts_namespace(namespace))
            .any(|p| p.refuses(&r));
        (!refused).then_some(r)
    }

    /// The `verifyImages` entries (set-wide indices) an image of a request
    /// in `namespace` must be verified under: those of every applicable
    /// policy, and none when any applicable policy refuses to look the
    /// image up.
    pub fn verification_for(&self, namespace: Option<&str>, image: &str) -> Vec<usize> {
        if !self.verifies() {
            return Vec::new();
        }
        let Some(r) = self.lookup(namespace, image) else {
            return Vec::new();
        };
        let all: BTreeSet<usize> = self
            .applicable(namespace)
            .flat_map(|p| p.verification_of(&r))
            .collect();
        all.into_iter().collect()
    }
}

/// Policies found on the stack before the list moves to the heap.
const APPLYING_ON_STACK: usize = 32;

/// The indices of the policies that apply to one request, in order.
pub(crate) struct Applying {
    stack: [usize; APPLYING_ON_STACK],
    heap: Vec<usize>,
    len: usize,
}

impl Applying {
    pub(crate) fn indices(&self) -> &[usize] {
        if self.len <= APPLYING_ON_STACK {
            &self.stack[..self.len]
        } else {
            &self.heap
        }
    }

    /// The policies themselves, in order.
    pub(crate) fn policies<'a>(
        &'a self,
        set: &'a PolicySet,
    ) -> impl Iterator<Item = &'a Policy> + 'a {
        self.indices().iter().map(|&i| &set.policies[i])
    }
}

/// Several policies judge one request: each distinct image is parsed once
/// (the mirrors, and so the name judged, are the same for every policy),
/// then each policy's rules are checked against it and only broken rules
/// are put in words — the cost of a policy that admits an image is its
/// matching, not a decision of its own.
fn judge_together(set: &PolicySet, applying: &Applying, req: &mut Request) -> Decision {
    let images = std::mem::take(&mut req.images);
    let ns = req.namespace.as_deref();
    let mut exempt_namespace = None;
    let mut break_glass = None;
    // What each applicable policy's violations do, on the stack for up to
    // 32 policies (this runs for every review); `None`: its
    // exemptNamespaces leave the request alone.
    let n = applying.indices().len();
    let mut on_stack = [None; 32];
    let mut on_heap;
    let effects: &mut [Option<Effect>] = if n <= on_stack.len() {
        &mut on_stack[..n]
    } else {
        on_heap = vec![None; n];
        &mut on_heap
    };
    for (e, p) in effects.iter_mut().zip(applying.policies(set)) {
        if let Some(ns) = ns.filter(|&ns| p.exempts_namespace(Some(ns))) {
            exempt_namespace.get_or_insert_with(|| ns.to_string());
            continue;
        }
        let (effect, glass) = p.effect(&req.annotations);
        *e = Some(effect);
        if glass.is_some() && break_glass.is_none() {
            break_glass = glass;
        }
    }
    let effects: &[Option<Effect>] = effects;
    // Each distinct image once: the name it is judged by, its normalised
    // form, and what each judging policy found, `n` entries from `at` in
    // `found` (a pod of 1,024 copies of one image costs one judgement per
    // policy).
    let mut found: Vec<Option<Found>> = Vec::with_capacity(n);
    let (mut distinct, slots) = super::distinct(&images, |image| {
        let r = set.policies[0].judged_name(image);
        let facts = req.signatures.get(image).map_or(&[][..], Vec::as_slice);
        let at = found.len();
        for (p, effect) in applying.policies(set).zip(effects) {
            found.push(effect.map(|_| match &r {
                Ok(r) => p.check(r, facts, req.skip_signatures),
                Err(failure) => (None, vec![failure.clone()]),
            }));
        }
        Judged {
            normalized: r.as_ref().ok().map(ImageRef::normalized),
            at,
        }
    });
    let mut verdicts = Vec::with_capacity(images.len());
    for (input, slot) in images.into_iter().zip(slots) {
        let (judged, uses) = &mut distinct[slot];
        // The last container of an image takes its normalised name.
        *uses -= 1;
        let normalized = if *uses == 0 {
            judged.normalized.take()
        } else {
            judged.normalized.clone()
        };
        let full = normalized.as_deref().unwrap_or("");
        let mut violations = Vec::new();
        let mut exempted_by = None;
        let mine = &found[judged.at..judged.at + n];
        for ((p, effect), found) in applying.policies(set).zip(effects).zip(mine) {
            let (Some(effect), Some((exempt, failures))) = (effect, found) else {
                continue;
            };
            if exempted_by.is_none() {
                exempted_by.clone_from(exempt);
            }
            if !failures.is_empty() {
                violations.extend(p.violations(&input, full, failures, *effect));
            }
        }
        verdicts.push(ImageVerdict {
            normalized,
            image: input.image,
            container: input.container,
            violations,
            exempted_by,
        });
    }
    let allowed = !verdicts
        .iter()
        .flat_map(|v| &v.violations)
        .any(|v| v.effect == Effect::Denies);
    Decision {
        allowed,
        images: verdicts,
        exempt_namespace,
        break_glass,
    }
}

/// A distinct image of a request: its normalised form, and where its
/// findings start in the request's list of them: one per applicable
/// policy, in order (`None` where the policy's exemptNamespaces leave the
/// request alone).
struct Judged {
    normalized: Option<String>,
    /// Where its findings start in the request's list of them.
    at: usize,
}

/// What one policy found of one image: the exemptImages entry that
/// exempts it, and the rules it breaks with their details.
type Found = (Option<String>, Vec<(Rule, String)>);

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

    /// Only an enforcing policy that judges the request stops a lookup
    /// with its registry lists: a warn policy's (or one whose
    /// exemptNamespaces leave the request alone) does not keep an
    /// enforcing policy's signatures from being checked. Whatever applies,
    /// a mirror of a node-local address is never looked up.
    #[test]
    fn lookups_follow_the_policies_that_can_deny() {
        use crate::policy::{MirrorBack, Upstream};
        let signed = named("signed", |p| {
            p.verify_images = vec![VerifyRequirement {
                label: "verifyImages[0]".into(),
                index: 0,
                images: vec![ImagePattern::parse("ghcr.io/acme/*").unwrap()],
                verify_tags: false,
            }];
        });
        let lists = |name: &str, mode: Mode| {
            named(name, |p| {
                p.mode = mode;
                p.allowed_registries =
                    vec![RegistryPattern::parse("registry.corp.example").unwrap()];
                p.exempt_namespaces = ns(&["sandbox"]);
            })
        };
        let image = "ghcr.io/acme/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let staged = PolicySet {
            policies: vec![signed.clone(), lists("rollout", Mode::Warn)],
        };
        assert_eq!(staged.verification_for(Some("dev"), image), [0]);
        let enforced = PolicySet {
            policies: vec![signed.clone(), lists("corp", Mode::Enforce)],
        };
        assert!(enforced.verification_for(Some("dev"), image).is_empty());
        assert_eq!(enforced.verification_for(Some("sandbox"), image), [0]);
        let mirror = MirrorBack::new("mirror.example", "", Upstream::ByRegistry);
        let scoped = PolicySet {
            policies: vec![named("prod-only", |p| {
                p.namespaces = ns(&["prod"]);
                p.mirrors = vec![mirror.clone()];
            })],
        };
        assert!(scoped.may_look_up(Some("dev"), "mirror.example/quay.io/x:1"));
        assert!(!scoped.may_look_up(Some("dev"), "mirror.example/127.0.0.1_5000/x:1"));
        assert!(!scoped.may_look_up(
            Some("dev"),
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        ));
    }

    /// Many containers of a few images: each distinct image judged once
    /// per policy, every container given its own verdict, in order.
    #[test]
    fn many_containers_few_images() {
        let set = PolicySet {
            policies: vec![named("a", |_| {}), named("b", |p| p.require_digest = true)],
        };
        let images: Vec<&str> = (0..20)
            .map(|i| if i % 2 == 0 { "nginx:1" } else { "busybox" })
            .collect();
        for n in [4, 20] {
            let d = set.decide(&request(Some("x"), &images[..n]));
            assert_eq!(d.images.len(), n);
            for (i, v) in d.images.iter().enumerate() {
                assert_eq!(v.image, images[i]);
                // nginx:1 breaks b's digest rule; busybox also a's and b's latest rule.
                let want = if i % 2 == 0 { 1 } else { 3 };
                assert_eq!(v.violations.len(), want, "{n} {i}: {:?}", v.violations);
            }
        }
    }

    /// More policies than the stack holds: every one judges, in order.
    #[test]
    fn more_policies_than_the_stack_holds() {
        let set = PolicySet {
            policies: (0..40)
                .map(|i| named(&format!("p{i:02}"), |p| p.namespaces = ns(&["x", "y"])))
                .chain([named("elsewhere", |p| p.namespaces = ns(&["z"]))])
                .collect(),
        };
        assert_eq!(
            set.applying(Some("x")).indices(),
            (0..40).collect::<Vec<_>>()
        );
        let d = set.decide(&request(Some("x"), &["nginx"]));
        let names: Vec<&str> = d.images[0].violations.iter().map(|v| &*v.policy).collect();
        let want: Vec<String> = (0..40).map(|i| format!("p{i:02}")).collect();
        assert_eq!(names, want);
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
