//! Signature facts for `verifyImages`: for each distinct image a rule
//! covers, the digest to verify (written in the reference, or — with
//! `verifyTags` — the tag's digest now), the signatures the registry holds
//! for it (sigstore bundles among its referrers, cosign's legacy
//! `sha256-<hex>.sig` image), each checked by `verify`; verdicts cached by
//! digest and by what was trusted, never by tag. The images of a review
//! are verified at the same time, each with an outcome of its own: a
//! registry that stalls one image cannot spend another's time. Running
//! out of time denies; only a registry's own error (an error status, a
//! refused connection) reaches `onRegistryError: allow`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::config::verify::VerifyRule;
use crate::digest::Digest;
use crate::flight::{Flights, Got, Outcome};
use crate::image_ref::ImageRef;
use crate::policy::{Facts, PolicySet, Request, SignatureFact, Signer};
use crate::registry::client::{Client, LookupError, MANIFEST_MAX};
use crate::verify::legacy::{self, Signed};

use super::attestations::{self, Candidate, Collected, Unmet};

/// A refusal (no signature, a bad one) is remembered briefly: a signature
/// pushed just now is seen within this.
pub const REFUSED_TTL: Duration = Duration::from_secs(30);
/// Verdicts remembered at most; when full, the least recently used go
/// first, refusals before verified digests, this many at a time.
const VERDICTS_MAX: usize = 4096;
/// What a full cache drops at once (`Flights` drops a sixteenth).
#[cfg(test)]
const EVICTED_AT_ONCE: usize = VERDICTS_MAX / 16;
/// Bytes fetched at most to verify one image's signatures, whatever they
/// are: referrers pages (or the fallback index), referrer manifests,
/// bundles, the legacy signature manifest and its layers, in both places
/// together. Each descriptor is fetched at most once per verification.
pub const FETCH_MAX: usize = 8 << 20;
/// The same for an entry with attestations: its three places (bundles,
/// `.sig`, `.att`) are read at once, each first reserving room for a
/// manifest.
pub const FETCH_MAX_ATTESTED: usize = 16 << 20;

/// A digest verified under a rule: its signature (or signatures, with a
/// threshold), and for each attestation item the statements that met it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    pub signed: Signed,
    pub items: Vec<Vec<Candidate>>,
    /// The most it may be remembered, when less than the rule's time.
    pub ttl_cap: Option<Duration>,
}

/// A reason quoted in a refusal, at most (they can hold what a registry
/// or a signer wrote).
const REASON_MAX: usize = 300;
/// Distinct reasons named in a refusal, at most.
const REASONS_MAX: usize = 8;

/// What verifying one digest under one rule came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Verified(Arc<Proven>),
    /// Checked and refused (no signature, none valid).
    Refused(String),
    /// The signature verified and an attestation item (its label) was not
    /// met: remembered as a refusal is.
    Unattested {
        item: String,
        why: String,
    },
    /// Could not be checked because the registry answered with an error
    /// or refused the connection: never cached; admitted only with
    /// `onRegistryError: allow`.
    Unavailable(String),
    /// The review's time ran out first: never cached, always denied.
    TimedOut(String),
    /// The registry could not be reached or spoken to, for a reason that
    /// is not the registry's own answer (DNS, TLS, a broken connection):
    /// never cached, always denied.
    Unreachable(String),
}

/// Verdicts by (repository@digest, rule fingerprint), and the
/// verifications under way (however many reviews ask for one image at
/// once, its signatures are fetched once). Refusals (cheap to make by the
/// thousand) leave a full cache before verified digests (they keep pods
/// running while a registry is down).
pub struct Verdicts(Flights<(String, String), Verdict>);

impl Default for Verdicts {
    fn default() -> Self {
        Verdicts(Flights::new(VERDICTS_MAX, |v| {
            u8::from(matches!(v, Verdict::Verified(_)))
        }))
    }
}

impl Verdicts {
    /// The verdict for `key`: remembered, or the one under way, or `run`
    /// (which the first asker runs for everyone), waiting at most until
    /// `deadline`. An outage or a timeout is remembered by no one and is
    /// nobody else's answer: a waiter with time left asks again. True
    /// with a remembered verdict.
    fn verdict(
        &self,
        key: (String, String),
        deadline: Instant,
        image: &str,
        verified_ttl: Duration,
        run: impl FnOnce() -> Verdict,
    ) -> (Verdict, bool) {
        let got = self.0.get(key, deadline, || {
            let value = run();
            let keep = kept_for(&value, verified_ttl);
            Outcome { value, keep }
        });
        match got {
            Got::Remembered(v) => (v, true),
            Got::Ran(v) | Got::Waited(v) => (v, false),
            Got::TimedOut => (timed_out(image), false),
        }
    }

    #[cfg(test)]
    fn get(&self, key: &(String, String)) -> Option<Verdict> {
        self.0.remembered(key)
    }

    #[cfg(test)]
    fn put(&self, key: (String, String), v: &Verdict, verified_ttl: Duration) {
        if let Some(keep) = kept_for(v, verified_ttl) {
            self.0.remember(key, v.clone(), keep);
        }
    }
}

/// How long a verdict is remembered: a verified digest for its rule's
/// time, a refusal briefly, an outage or a timeout not at all.
fn kept_for(v: &Verdict, verified_ttl: Duration) -> Option<Duration> {
    match v {
        Verdict::Verified(p) => Some(p.ttl_cap.map_or(verified_ttl, |c| c.min(verified_ttl))),
        Verdict::Refused(_) | Verdict::Unattested { .. } => Some(REFUSED_TTL),
        Verdict::Unavailable(_) | Verdict::TimedOut(_) | Verdict::Unreachable(_) => None,
    }
}

/// Facts for the images of `request` that `policy` wants verified, within
/// `budget`: the distinct images at the same time (at most
/// [`super::LOOKUPS_AT_ONCE`]), each with its own outcome.
pub fn gather(
    policy: &PolicySet,
    rules: &[VerifyRule],
    request: &Request,
    client: &Client,
    verdicts: &Verdicts,
    budget: Duration,
) -> Facts {
    let mut facts = Facts::new();
    if !policy.verifies() {
        return facts;
    }
    let deadline = Instant::now() + budget;
    // One verification per image and covering entry.
    let mut wanted: Vec<(&str, usize, &VerifyRule, bool)> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for input in &request.images {
        if !seen.insert(&input.image) {
            continue;
        }
        // Refused names (registry lists) and exempt images are not
        // looked up at all.
        for i in policy.verification_for(request.namespace.as_deref(), &input.image) {
            let (Some(rule), Some((_, req))) = (rules.get(i), policy.requirement(i)) else {
                continue;
            };
            wanted.push((&input.image, i, rule, req.verify_tags));
        }
    }
    if wanted.is_empty() {
        return facts;
    }
    let look_up = || {
        super::each_at_once(&wanted, super::LOOKUPS_AT_ONCE, |(image, _, rule, tags)| {
            fact(image, rule, *tags, client, verdicts, deadline)
        })
    };
    let outcomes = super::with_room(deadline, look_up).unwrap_or_else(|| {
        wanted
            .iter()
            .map(|(image, _, rule, _)| {
                super::COUNTS.timed_out();
                super::COUNTS.verification(&rule.policy, &rule.label, "timed_out");
                Err(format!(
                    "the review's time ran out before the signatures of {image} were verified ({} reviews were waiting on registries)",
                    super::REVIEWS_LOOKING_UP
                )
                .into())
            })
            .collect()
    });
    for ((image, i, _, _), outcome) in wanted.into_iter().zip(outcomes) {
        let (outcome, unmet) = match outcome {
            Ok(s) => (Ok(s), None),
            Err(r) => (Err(r.why), r.unmet),
        };
        facts
            .entry(image.to_string())
            .or_default()
            .push(SignatureFact {
                rule: i,
                outcome,
                unmet,
            });
    }
    facts
}

/// The fact for one image.
fn fact(
    image: &str,
    rule: &VerifyRule,
    verify_tags: bool,
    client: &Client,
    verdicts: &Verdicts,
    deadline: Instant,
) -> Result<Signer, Refusal> {
    let left = || deadline.saturating_duration_since(Instant::now());
    let r = ImageRef::parse(image).map_err(|e| e.reason())?;
    let digest = match r.digest() {
        Some(d) => Digest::parse(d)?,
        None => {
            let resolved = client.resolve_cached(&r, left());
            if !verify_tags {
                let name = format!("{}/{}", r.domain(), r.path());
                super::COUNTS.verification(&rule.policy, &rule.label, "refused");
                return Err(match resolved {
                    Ok(d) => format!(
                        "it names a tag, which can move after admission: pin it by digest (it resolves to {d} now: {name}@{d})"
                    ),
                    Err(e) => format!(
                        "it names a tag, which can move after admission: pin it by digest (its digest could not be looked up: {e})"
                    ),
                }
                .into());
            }
            match resolved {
                Ok(d) => d,
                Err(e) => {
                    let v = failed(&r, e, deadline);
                    count(rule, &v, false);
                    return outcome(v, rule, image, "its tag could not be resolved: ");
                }
            }
        }
    };
    let key = (
        format!(
            "{}:{}/{}@{digest}",
            r.registry_host(),
            r.registry_port().unwrap_or(443),
            r.path()
        ),
        rule.trust.fingerprint.clone(),
    );
    let (verdict, cached) = verdicts.verdict(key, deadline, image, rule.verified_ttl, || {
        verify_digest(&r, &digest, rule, client, deadline)
    });
    count(rule, &verdict, cached);
    outcome(verdict, rule, image, "")
}

/// Counts a verification for `/metrics`, by its policy, rule and result.
fn count(rule: &VerifyRule, v: &Verdict, cached: bool) {
    let result = match v {
        _ if cached => "cached",
        Verdict::Verified(_) => "verified",
        Verdict::Refused(_) | Verdict::Unattested { .. } => "refused",
        Verdict::TimedOut(_) => "timed_out",
        Verdict::Unavailable(_) | Verdict::Unreachable(_) => "registry_error",
    };
    super::COUNTS.verification(&rule.policy, &rule.label, result);
}

/// A verdict as the policy reads it. An image whose own registry could
/// not be asked is denied, or with `onRegistryError: allow` admitted
/// unverified (logged and counted); one whose time ran out is always
/// denied.
fn outcome(
    verdict: Verdict,
    rule: &VerifyRule,
    image: &str,
    what: &str,
) -> Result<Signer, Refusal> {
    match verdict {
        Verdict::Verified(p) => {
            // A condition that reads `now` may have stopped holding since
            // the verdict was reached.
            attestations::rejudge(rule, &p.items, crate::time::unix_now()).map_err(|u| {
                Refusal {
                    why: format!("{what}{}", u.why),
                    unmet: Some(u.item),
                }
            })?;
            let s = &p.signed;
            Ok(Signer {
                digest: s.digest.clone(),
                by: s.signer.clone(),
                found_in: s.found_in.to_string(),
                time: s.time,
                time_source: s.time_source.map(str::to_string),
                log_index: s.log_index,
                attestations: attestations::attested(rule, &p.items),
            })
        }
        Verdict::Refused(why) | Verdict::Unreachable(why) => Err(format!("{what}{why}").into()),
        Verdict::Unattested { item, why } => Err(Refusal {
            why: format!("{what}{why}"),
            unmet: Some(item),
        }),
        Verdict::TimedOut(why) => {
            super::COUNTS.timed_out();
            Err(format!("{what}{why}").into())
        }
        Verdict::Unavailable(why) if rule.allow_on_registry_error => {
            super::COUNTS.admitted_on_registry_error();
            log::warn!(
                "{image}: admitted unverified ({}: onRegistryError allow): its registry could not be asked: {what}{why}",
                rule.label
            );
            Ok(Signer {
                digest: String::new(),
                by: format!("nobody (unverified: {what}{why}; onRegistryError allow)"),
                found_in: String::new(),
                time: None,
                time_source: None,
                log_index: None,
                attestations: Vec::new(),
            })
        }
        Verdict::Unavailable(why) => Err(format!("{what}{why}").into()),
    }
}

/// Why an image's fact is a refusal, and the attestation item it is
/// about when the signature itself verified.
pub(super) struct Refusal {
    why: String,
    unmet: Option<String>,
}

impl From<String> for Refusal {
    fn from(why: String) -> Refusal {
        Refusal { why, unmet: None }
    }
}

pub(super) fn timed_out(image: &str) -> Verdict {
    Verdict::TimedOut(format!(
        "the review's time ran out before the signatures of {image} were verified"
    ))
}

/// Bytes one verification may still fetch, shared by its two lookups.
pub(super) struct Allowance(AtomicUsize);

impl Allowance {
    /// Takes `n` bytes, or nothing when fewer are left.
    pub(super) fn take(&self, n: usize) -> bool {
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    }

    /// Takes up to `n` bytes, as many as are left; returns how many.
    pub(super) fn take_up_to(&self, n: usize) -> usize {
        match self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                Some(left - left.min(n))
            }) {
            Ok(left) | Err(left) => left.min(n),
        }
    }

    /// Gives back what a read took and did not use.
    pub(super) fn give_back(&self, n: usize) {
        self.0.fetch_add(n, Ordering::SeqCst);
    }
}

/// Fetches and checks the signatures of `digest` in `r`'s repository, in
/// both places cosign puts them — sigstore bundles attached as referrers
/// (cosign v3) and the legacy `sha256-<hex>.sig` image — looked up at the
/// same time (the legacy one on a second thread), so that a cold
/// verification costs the round trips of one format, not both. Both
/// draw on one allowance of [`FETCH_MAX`] bytes.
pub fn verify_digest(
    r: &ImageRef,
    digest: &Digest,
    rule: &VerifyRule,
    client: &Client,
    deadline: Instant,
) -> Verdict {
    let wants_statements = !rule.attestations.is_empty();
    let allowance = Allowance(AtomicUsize::new(if wants_statements {
        FETCH_MAX_ATTESTED
    } else {
        FETCH_MAX
    }));
    let place = Place {
        client,
        r,
        deadline,
        allowance: &allowance,
    };
    let mut collected = Collected::new(rule);
    let (legacy, legacy_found, bundles, bundles_found, att) = std::thread::scope(|s| {
        let legacy_place = || {
            let mut found = Vec::new();
            let v = legacy_verdict(&place, digest, rule, &mut found);
            (v, found)
        };
        let att_place = || {
            let mut c = Collected::new(rule);
            let v = attestations::att_verdict(&place, digest, rule, &mut c);
            (v, c)
        };
        let legacy = std::thread::Builder::new().spawn_scoped(s, legacy_place);
        let att = wants_statements.then(|| std::thread::Builder::new().spawn_scoped(s, att_place));
        let mut found = Vec::new();
        let bundles = bundle_verdict(
            r,
            digest,
            rule,
            client,
            deadline,
            &allowance,
            &mut found,
            &mut collected,
        );
        let lost = || Verdict::Refused("the signature lookup failed".into());
        let legacy = match legacy {
            Ok(handle) => handle.join().unwrap_or_else(|_| (lost(), Vec::new())),
            // Out of threads (a task limit): one place after the other.
            Err(_) => legacy_place(),
        };
        let att = match att {
            None => None,
            Some(Ok(handle)) => Some(
                handle
                    .join()
                    .unwrap_or_else(|_| (lost(), Collected::new(rule))),
            ),
            Some(Err(_)) => Some(att_place()),
        };
        (legacy.0, legacy.1, bundles, found, att)
    });
    let signature = signature_verdict(rule, bundles, bundles_found, legacy, legacy_found);
    let Verdict::Verified(proven) = signature else {
        return signature;
    };
    let Some((att, found)) = att else {
        return Verdict::Verified(proven);
    };
    collected.merge(found);
    match attestations::judge(
        rule,
        &collected.items,
        &collected.other_types,
        crate::time::unix_now(),
    ) {
        Ok(met) => {
            let (items, ttl_cap) = attestations::keep(rule, met);
            Verdict::Verified(Arc::new(Proven {
                signed: proven.signed.clone(),
                items,
                ttl_cap,
            }))
        }
        Err(why) => unmet(why, att, collected.noted()),
    }
}

/// The verdict of a verified signature with an item not met: `why`,
/// with what the bundles (`bundles`) and the `.att` image (`att`) said.
/// When the `.att` image could not be read to the end it might have held
/// what was missing: out of time or unreachable is denied and not
/// remembered; a registry that answers for the signature and fails for
/// the `.att` image only is a refusal, never `onRegistryError: allow`
/// (a registry must not choose to skip a requirement).
fn unmet(unmet: Unmet, att: Verdict, bundles: Option<String>) -> Verdict {
    let Unmet { item, why } = unmet;
    let bundles = bundles
        .map(|b| format!("; bundles: {b}"))
        .unwrap_or_default();
    let why = match att {
        v @ (Verdict::TimedOut(_) | Verdict::Unreachable(_)) => return v,
        Verdict::Unavailable(m) => {
            format!("{why}{bundles}; legacy attestations could not be fetched: {m}")
        }
        Verdict::Refused(also) if !also.starts_with("no ") && also != "nothing to verify" => {
            format!("{why}{bundles}; legacy attestations: {also}")
        }
        _ => format!("{why}{bundles}"),
    };
    Verdict::Unattested { item, why }
}

/// The signature's verdict from both places, with a threshold of distinct
/// signers when the rule has one.
fn signature_verdict(
    rule: &VerifyRule,
    bundles: Verdict,
    bundles_found: Vec<Signed>,
    legacy: Verdict,
    legacy_found: Vec<Signed>,
) -> Verdict {
    if rule.threshold <= 1 {
        return combine(bundles, legacy);
    }
    let mut found = bundles_found;
    for s in legacy_found {
        found_one(&mut found, s);
    }
    let signers = matched(&found);
    if signers.len() >= rule.threshold {
        return verified(together(&found, &signers));
    }
    // Too few signers: a place that ran out of time or could not be asked
    // says so (it might have held the rest); otherwise refused, naming who
    // did sign.
    match combine(bundles, legacy) {
        v @ (Verdict::TimedOut(_) | Verdict::Unreachable(_) | Verdict::Unavailable(_)) => v,
        Verdict::Verified(_) | Verdict::Refused(_) if found.is_empty() => {
            Verdict::Refused(format!(
                "no accepted signature; {} distinct signers are required",
                rule.threshold
            ))
        }
        other => {
            let who: Vec<&str> = signers.iter().map(|&i| found[i].signer.as_str()).collect();
            let rest = match other {
                Verdict::Refused(why) => format!("; besides: {why}"),
                _ => String::new(),
            };
            Verdict::Refused(format!(
                "only {} of the {} distinct signers required signed it ({}){rest}",
                signers.len(),
                rule.threshold,
                who.join("; ")
            ))
        }
    }
}

/// A signature verdict, before attestations are judged.
fn verified(s: Signed) -> Verdict {
    Verdict::Verified(Arc::new(Proven {
        signed: s,
        items: Vec::new(),
        ttl_cap: None,
    }))
}

/// Adds a verified signature to those found, unless its signer (the key,
/// or the certificate's identity) signed one already: a signer's second
/// signature counts once.
pub(super) fn found_one(found: &mut Vec<Signed>, s: Signed) {
    if !found.iter().any(|f| f.signer == s.signer) {
        found.push(s);
    }
}

/// Whether the signatures found meet `threshold`.
pub(super) fn enough(found: &[Signed], threshold: usize) -> bool {
    found.len() >= threshold && matched(found).len() >= threshold
}

/// The signatures (by index in `found`) of a largest set of distinct
/// signers each matched to a listed signer of its own (`keys[i]`,
/// `identities[i]`): an identity that more than one listed rule accepts
/// takes the one no other signer needs (a maximum bipartite matching, by
/// augmenting paths; the signatures are bounded by the layers looked at).
pub(super) fn matched(found: &[Signed]) -> Vec<usize> {
    let ids: Vec<Vec<&str>> = found
        .iter()
        .map(|s| s.listed.split(',').collect())
        .collect();
    // For each listed signer taken, the signature it went to.
    let mut taken: HashMap<&str, usize> = HashMap::new();
    fn augment<'a>(
        i: usize,
        ids: &[Vec<&'a str>],
        taken: &mut HashMap<&'a str, usize>,
        seen: &mut HashSet<&'a str>,
    ) -> bool {
        for &id in &ids[i] {
            if !seen.insert(id) {
                continue;
            }
            let free = match taken.get(id) {
                None => true,
                Some(&j) => augment(j, ids, taken, seen),
            };
            if free {
                taken.insert(id, i);
                return true;
            }
        }
        false
    }
    for i in 0..found.len() {
        augment(i, &ids, &mut taken, &mut HashSet::new());
    }
    let mut out: Vec<usize> = taken.into_values().collect();
    out.sort_unstable();
    out
}

/// The signatures of several signers as one verdict: every signer named,
/// the earliest trusted time.
fn together(found: &[Signed], signers: &[usize]) -> Signed {
    let mut chosen: Vec<&Signed> = signers.iter().map(|&i| &found[i]).collect();
    chosen.sort_by_key(|s| s.time.unwrap_or(i64::MAX));
    let mut first = chosen[0].clone();
    for s in &chosen[1..] {
        first.signer = format!("{} and {}", first.signer, s.signer);
        first.listed = format!("{},{}", first.listed, s.listed);
        if first.found_in != s.found_in {
            first.found_in = "sigstore bundle and legacy signature";
        }
    }
    first
}

/// One verdict from both places. Unavailable only when neither place
/// could be asked: a registry that answers one lookup and fails the other
/// on purpose must not reach onRegistryError's "allow". Out of time when
/// either place ran out and neither verified: what it had not yet looked
/// at might have verified, so nothing is remembered.
fn combine(bundles: Verdict, legacy: Verdict) -> Verdict {
    match (bundles, legacy) {
        (v @ Verdict::Verified(_), _) | (_, v @ Verdict::Verified(_)) => v,
        (v @ Verdict::TimedOut(_), _) | (_, v @ Verdict::TimedOut(_)) => v,
        (v @ Verdict::Unreachable(_), _) | (_, v @ Verdict::Unreachable(_)) => v,
        // Not a signature place's verdict (only attestations make one).
        (v @ Verdict::Unattested { .. }, _) | (_, v @ Verdict::Unattested { .. }) => v,
        (Verdict::Unavailable(b), Verdict::Unavailable(_)) => Verdict::Unavailable(b),
        (Verdict::Refused(b), Verdict::Refused(l)) => {
            Verdict::Refused(format!("no accepted signature: bundles: {b}; legacy: {l}"))
        }
        (Verdict::Refused(b), Verdict::Unavailable(l)) => Verdict::Refused(format!(
            "no accepted signature: bundles: {b}; legacy: could not be fetched: {l}"
        )),
        (Verdict::Unavailable(b), Verdict::Refused(l)) => Verdict::Refused(format!(
            "no accepted signature: bundles: could not be fetched: {b}; legacy: {l}"
        )),
    }
}

/// Maps a lookup failure to a verdict: the deadline's end is never an
/// outage; an error the registry gave (a status, a refused connection)
/// is; anything else it said is a refusal.
pub(super) fn failed(r: &ImageRef, e: LookupError, deadline: Instant) -> Verdict {
    match e {
        LookupError::TimedOut(_) => timed_out(&r.to_string()),
        _ if Instant::now() >= deadline => timed_out(&r.to_string()),
        LookupError::Transient(m) => Verdict::Unavailable(format!(
            "the registry could not be asked for signatures: {m}"
        )),
        LookupError::Unreachable(m) => Verdict::Unreachable(format!(
            "the registry could not be reached for signatures: {m}"
        )),
        LookupError::Permanent(m) => {
            Verdict::Refused(format!("its signatures could not be read: {m}"))
        }
    }
}

/// Sigstore bundles among the referrers of `digest`. A referrer that
/// cannot be fetched or read is skipped (its reason counted) and the
/// search goes on within the allowance and the deadline.
// The lookup's context, passed as the legacy one is; a struct for one caller would only rename it.
#[allow(clippy::too_many_arguments)]
fn bundle_verdict(
    r: &ImageRef,
    digest: &Digest,
    rule: &VerifyRule,
    client: &Client,
    deadline: Instant,
    allowance: &Allowance,
    found: &mut Vec<Signed>,
    collected: &mut Collected,
) -> Verdict {
    use crate::verify::bundle;
    let left = || deadline.saturating_duration_since(Instant::now());
    let reserved = allowance.take_up_to(MANIFEST_MAX);
    let listed = match client.referrers_capped(r, digest, None, reserved, left()) {
        Ok((l, read)) => {
            allowance.give_back(reserved.saturating_sub(read));
            l
        }
        Err(e) => return failed(r, e, deadline),
    };
    // Each descriptor once, however often it is listed.
    let mut listed_once: HashSet<&str> = HashSet::new();
    let candidates: Vec<_> = listed
        .iter()
        .filter(|d| {
            d.artifact_type
                .as_deref()
                .is_some_and(|a| a.starts_with(bundle::LAYER_PREFIX))
                && listed_once.insert(d.digest.as_str())
        })
        .collect();
    if candidates.is_empty() {
        return Verdict::Refused("no sigstore bundle among the referrers".into());
    }
    let digest_s = digest.to_string();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut bundles_seen: HashSet<String> = HashSet::new();
    for d in candidates.iter().take(legacy::MAX_LAYERS) {
        if left().is_zero() {
            return timed_out(&r.to_string());
        }
        let size_ok = usize::try_from(d.size)
            .ok()
            .filter(|n| *n <= MANIFEST_MAX && allowance.take(*n));
        let Some(size) = size_ok else {
            *reasons
                .entry("a referrer larger than the bytes left to fetch".into())
                .or_default() += 1;
            continue;
        };
        let m = match client.manifest_capped(r, &d.digest, size, left()) {
            Ok(m) => m,
            Err(e) => match failed(r, e, deadline) {
                v @ Verdict::TimedOut(_) => return v,
                _ => {
                    *reasons
                        .entry("a referrer that could not be fetched".into())
                        .or_default() += 1;
                    continue;
                }
            },
        };
        #[derive(serde::Deserialize)]
        struct M {
            #[serde(default)]
            layers: Vec<crate::registry::client::Descriptor>,
            #[serde(default)]
            annotations: BTreeMap<String, String>,
        }
        let (layer, annotations) = match serde_json::from_slice::<M>(&m.bytes) {
            Ok(M {
                layers,
                annotations,
            }) if layers.len() == 1 && layers[0].media_type.starts_with(bundle::LAYER_PREFIX) => {
                (layers.into_iter().next(), annotations)
            }
            _ => (None, BTreeMap::new()),
        };
        // Once the signature is found, a bundle whose annotation names a
        // predicate type no item asks for is not fetched. The annotation
        // only ever spares a fetch: what a bundle holds is decided by its
        // signed statement.
        if enough(found, rule.threshold)
            && annotations
                .get(bundle::PREDICATE_TYPE_ANNOTATION)
                .is_some_and(|t| {
                    !rule
                        .attestations
                        .iter()
                        .any(|a| a.predicate_types.contains(t))
                })
        {
            continue;
        }
        let Some(layer) = layer else {
            *reasons
                .entry("a referrer that is not one bundle layer".into())
                .or_default() += 1;
            continue;
        };
        if !bundles_seen.insert(layer.digest.clone()) {
            continue; // that bundle was checked already
        }
        let blob = match fetch_capped(
            client,
            r,
            &layer.digest,
            layer.size,
            "bundle",
            allowance,
            &mut reasons,
            deadline,
        ) {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(v) => return v,
        };
        let entry = bundle::verify(&blob, &digest_s, &rule.trust);
        attestations::bundle_for_items(
            rule,
            &blob,
            &layer.digest,
            &digest_s,
            entry.as_ref().ok(),
            collected,
            &mut reasons,
        );
        match entry {
            Ok(s) => {
                found_one(found, s);
                // With attestations to find, every bundle is looked at.
                if rule.attestations.is_empty() && enough(found, rule.threshold) {
                    return verified(found[0].clone());
                }
            }
            Err(e) => *reasons.entry(e.reason).or_default() += 1,
        }
    }
    collected.note(&reasons);
    if enough(found, rule.threshold) {
        return verified(found[0].clone());
    }
    Verdict::Refused(summarise(
        reasons,
        candidates.len().saturating_sub(legacy::MAX_LAYERS),
    ))
}

/// One signature blob (a payload or a bundle) by its descriptor, within
/// the allowance: `None` when it cannot be had (too large, a bad digest,
/// the registry failed it; the reason is counted), `Err` with the
/// verdict when the time ran out.
// The Err is the rare out-of-time verdict, met once per verification: not
// worth a box on the common path.
#[allow(clippy::too_many_arguments, clippy::result_large_err)]
pub(super) fn fetch_capped(
    client: &Client,
    r: &ImageRef,
    digest: &str,
    size: u64,
    what: &str,
    allowance: &Allowance,
    reasons: &mut BTreeMap<String, usize>,
    deadline: Instant,
) -> Result<Option<Vec<u8>>, Verdict> {
    let Ok(d) = Digest::parse(digest) else {
        *reasons
            .entry(format!("a {what} with a bad digest"))
            .or_default() += 1;
        return Ok(None);
    };
    let size_ok = usize::try_from(size)
        .ok()
        .filter(|n| *n <= legacy::MAX_PAYLOAD && allowance.take(*n));
    let Some(_) = size_ok else {
        *reasons
            .entry(format!("a {what} larger than accepted"))
            .or_default() += 1;
        return Ok(None);
    };
    let left = deadline.saturating_duration_since(Instant::now());
    match client.blob(r, &d, size, legacy::MAX_PAYLOAD, left) {
        Ok(b) => Ok(Some(b)),
        Err(e) => match failed(r, e, deadline) {
            v @ Verdict::TimedOut(_) => Err(v),
            _ => {
                *reasons
                    .entry(format!("a {what} that could not be fetched"))
                    .or_default() += 1;
                Ok(None)
            }
        },
    }
}

/// Reasons, each once with its count, and what was not looked at.
/// Each reason is cut to [`REASON_MAX`] characters, and at most
/// [`REASONS_MAX`] are named.
pub(super) fn summarise(reasons: BTreeMap<String, usize>, skipped: usize) -> String {
    let kinds = reasons.len();
    let mut why: Vec<String> = reasons
        .into_iter()
        .take(REASONS_MAX)
        .map(|(r, n)| {
            let r = crate::verify::clipped(&r, REASON_MAX);
            if n > 1 { format!("{r} (×{n})") } else { r }
        })
        .collect();
    if kinds > REASONS_MAX {
        why.push(format!("{} other reasons", kinds - REASONS_MAX));
    }
    if skipped > 0 {
        why.push(format!("{skipped} more not looked at"));
    }
    if why.is_empty() {
        why.push("nothing to verify".into());
    }
    why.join("; ")
}

/// Where one of cosign's tag images is read: its registry, the
/// verification's deadline and allowance.
pub(super) struct Place<'a> {
    client: &'a Client,
    r: &'a ImageRef,
    deadline: Instant,
    allowance: &'a Allowance,
}

impl Place<'_> {
    /// The layers of one of cosign's tag images (`.sig`, `.att`) within
    /// the allowance: `None` when there is no such tag (nothing read, so
    /// nothing taken), `Err` with the verdict when it cannot be read.
    // The Err is the rare failed lookup, met once per verification.
    #[allow(clippy::result_large_err)]
    pub(super) fn tag_layers(
        &self,
        tag: &str,
    ) -> Result<Option<(Vec<legacy::SigLayer>, usize)>, Verdict> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let reserved = self.allowance.take_up_to(MANIFEST_MAX);
        let manifest = match self.client.manifest_capped(self.r, tag, reserved, left) {
            Ok(m) => {
                self.allowance
                    .give_back(reserved.saturating_sub(m.bytes.len()));
                m
            }
            Err(LookupError::Permanent(m)) if m.contains("(404)") => {
                self.allowance.give_back(reserved);
                return Ok(None);
            }
            Err(e) => return Err(failed(self.r, e, self.deadline)),
        };
        legacy::signature_layers(&manifest.bytes)
            .map(Some)
            .map_err(Verdict::Refused)
    }

    /// The layers of a tag image (`.sig`, `.att`) in order, each with its
    /// blob: a blob several layers share is fetched once, a layer whose
    /// blob cannot be had is skipped (its reason counted as `what`'s).
    /// `each` sees every layer whose blob was had and may end the walk
    /// with a verdict; so does the deadline.
    pub(super) fn each_layer(
        &self,
        layers: &[legacy::SigLayer],
        what: &str,
        reasons: &mut BTreeMap<String, usize>,
        mut each: impl FnMut(&legacy::SigLayer, &[u8], &mut BTreeMap<String, usize>) -> Option<Verdict>,
    ) -> Option<Verdict> {
        let mut blobs: HashMap<&str, Option<Vec<u8>>> = HashMap::new();
        for layer in layers {
            if Instant::now() >= self.deadline {
                return Some(timed_out(&self.r.to_string()));
            }
            if !blobs.contains_key(layer.digest.as_str()) {
                let got = match fetch_capped(
                    self.client,
                    self.r,
                    &layer.digest,
                    layer.size,
                    what,
                    self.allowance,
                    reasons,
                    self.deadline,
                ) {
                    Ok(b) => b,
                    Err(v) => return Some(v),
                };
                blobs.insert(&layer.digest, got);
            }
            if let Some(Some(blob)) = blobs.get(layer.digest.as_str())
                && let Some(v) = each(layer, blob, reasons)
            {
                return Some(v);
            }
        }
        None
    }
}

/// cosign's legacy `sha256-<hex>.sig` image. Layers that share a payload
/// (several signatures of one payload) fetch it once.
fn legacy_verdict(
    place: &Place<'_>,
    digest: &Digest,
    rule: &VerifyRule,
    found: &mut Vec<Signed>,
) -> Verdict {
    let digest_s = digest.to_string();
    let tag = legacy::signature_tag(&digest_s);
    let (layers, total) = match place.tag_layers(&tag) {
        Ok(Some(x)) => x,
        Ok(None) => return Verdict::Refused(format!("no signature found (no {tag})")),
        Err(v) => return v,
    };
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let walked = place.each_layer(
        &layers,
        "signature layer",
        &mut reasons,
        |layer, payload, reasons| {
            match legacy::verify_layer(payload, &layer.annotations, &digest_s, &rule.trust) {
                Ok(s) => {
                    found_one(found, s);
                    if enough(found, rule.threshold) {
                        return Some(verified(found[0].clone()));
                    }
                }
                Err(e) => *reasons.entry(e).or_default() += 1,
            }
            None
        },
    );
    if let Some(v) = walked {
        return v;
    }
    if layers.is_empty() {
        return Verdict::Refused("the signature image has no layers".into());
    }
    Verdict::Refused(summarise(reasons, total - layers.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed() -> Signed {
        Signed {
            digest: "d".into(),
            signer: "s".into(),
            listed: "keys[0]".into(),
            found_in: "legacy signature",
            reference: "r".into(),
            time: None,
            time_source: None,
            log_index: None,
            statement: None,
        }
    }

    /// Signers count toward a threshold once each, each toward a listed
    /// signer of its own: an identity two rules accept takes the one the
    /// other signer cannot; the same identity signing twice counts once.
    #[test]
    fn distinct_signers_are_matched_to_listed_ones() {
        let by = |signer: &str, listed: &str| Signed {
            signer: signer.into(),
            listed: listed.into(),
            ..signed()
        };
        let mut found = Vec::new();
        // alice matches ".*@acme" (0) and "alice|bob@acme" (1); the bot only 0.
        found_one(
            &mut found,
            by("identity alice@acme", "identities[0],identities[1]"),
        );
        found_one(
            &mut found,
            by("identity alice@acme", "identities[0],identities[1]"),
        );
        assert_eq!(found.len(), 1, "one signer's second signature counts once");
        assert!(!enough(&found, 2));
        found_one(&mut found, by("identity bot@acme", "identities[0]"));
        assert_eq!(matched(&found), [0, 1]);
        assert!(enough(&found, 2));
        let v = together(&found, &matched(&found));
        assert!(
            v.signer.contains("alice") && v.signer.contains("bot"),
            "{}",
            v.signer
        );
        // Two signers only one listed rule accepts: one counts.
        let two = vec![
            by("identity bob@x", "identities[0]"),
            by("identity eve@x", "identities[0]"),
        ];
        assert_eq!(matched(&two).len(), 1);
        // Two keys: two.
        let keys = vec![by("key a", "keys[0]"), by("key b", "keys[1]")];
        assert!(enough(&keys, 2) && !enough(&keys, 3));
    }

    /// An item not met with the `.att` image unreadable: never an outage
    /// that `onRegistryError: allow` would admit; out of time stays out of
    /// time.
    #[test]
    fn an_unmet_item_is_never_an_outage() {
        let item = "verifyImages[0].attestations[0]";
        let text = || format!("{item} (vuln): no statement");
        let why = || Unmet {
            item: item.into(),
            why: text(),
        };
        let v = unmet(why(), Verdict::Unavailable("503".into()), None);
        assert!(
            matches!(&v, Verdict::Unattested { item: i, why: m } if i == item && m.contains("could not be fetched: 503")),
            "{v:?}"
        );
        assert_eq!(kept_for(&v, Duration::from_secs(86_400)), Some(REFUSED_TTL));
        let v = unmet(why(), Verdict::TimedOut("late".into()), None);
        assert!(matches!(v, Verdict::TimedOut(_)));
        let v = unmet(
            why(),
            Verdict::Refused("no sha256-x.att".into()),
            Some("a signature for another digest".into()),
        );
        assert_eq!(
            v,
            Verdict::Unattested {
                item: item.into(),
                why: format!("{}; bundles: a signature for another digest", text())
            }
        );
    }

    #[test]
    fn one_place_refusing_is_not_an_outage() {
        let signed = Signed {
            digest: "sha256:0".into(),
            signer: "key k".into(),
            listed: "keys[0]".into(),
            found_in: "legacy signature",
            reference: "r".into(),
            time: None,
            time_source: None,
            log_index: None,
            statement: None,
        };
        let v = || verified(signed.clone());
        let r = || Verdict::Refused("no".into());
        let u = || Verdict::Unavailable("down".into());
        assert_eq!(combine(v(), u()), v());
        assert_eq!(combine(u(), v()), v());
        assert!(matches!(combine(u(), u()), Verdict::Unavailable(_)));
        assert!(matches!(combine(r(), u()), Verdict::Refused(_)));
        assert!(matches!(combine(u(), r()), Verdict::Refused(_)));
        assert!(matches!(combine(r(), r()), Verdict::Refused(_)));
        // Out of time: never an outage, never remembered as a refusal.
        let t = || Verdict::TimedOut("late".into());
        assert_eq!(combine(v(), t()), v());
        assert_eq!(combine(t(), v()), v());
        for (b, l) in [(t(), u()), (u(), t()), (t(), r()), (r(), t()), (t(), t())] {
            assert!(matches!(combine(b, l), Verdict::TimedOut(_)));
        }
        let verdicts = Verdicts::default();
        let key = ("r@d".to_string(), "f".to_string());
        verdicts.put(key.clone(), &t(), Duration::from_secs(60));
        assert_eq!(verdicts.get(&key), None);
    }

    /// A full cache loses its least recently used entries, refusals
    /// first, never all of them (issue 33, 5).
    #[test]
    fn a_full_cache_evicts_the_least_used_not_everything() {
        let verdicts = Verdicts::default();
        let key = |i: usize| (format!("r@{i}"), "f".to_string());
        let signed = signed();
        let day = Duration::from_secs(86_400);
        for i in 0..VERDICTS_MAX {
            verdicts.put(key(i), &verified(signed.clone()), day);
        }
        // Entry 0 is in use; then many more distinct signed digests.
        for i in VERDICTS_MAX..VERDICTS_MAX * 3 {
            assert!(
                verdicts.get(&key(0)).is_some(),
                "lost the entry in use at {i}"
            );
            verdicts.put(key(i), &verified(signed.clone()), day);
        }
        let held = verdicts.0.len();
        assert!(
            (VERDICTS_MAX - EVICTED_AT_ONCE..=VERDICTS_MAX).contains(&held),
            "{held}"
        );
        // The most recent ones are there; the oldest unused ones are not.
        assert!(verdicts.get(&key(VERDICTS_MAX * 3 - 1)).is_some());
        assert!(verdicts.get(&key(1)).is_none());
    }

    /// A full cache gives up refusals before verified digests.
    #[test]
    fn refusals_go_before_verified_digests() {
        let verdicts = Verdicts::default();
        let key = |i: usize| (format!("r@{i}"), "f".to_string());
        let signed = signed();
        let day = Duration::from_secs(86_400);
        verdicts.put(key(0), &verified(signed), day);
        for i in 1..VERDICTS_MAX + 10 {
            verdicts.put(key(i), &Verdict::Refused("no".into()), day);
        }
        assert!(matches!(verdicts.get(&key(0)), Some(Verdict::Verified(_))));
        verdicts.put(key(0), &Verdict::Unavailable("down".into()), day);
        assert!(
            matches!(verdicts.get(&key(0)), Some(Verdict::Verified(_))),
            "outages are not remembered"
        );
    }
}
