//! Signature facts for `verifyImages`: for each distinct image a rule
//! covers, the digest to verify (written in the reference, or — with
//! `verifyTags` — the tag's digest now), the signatures the registry holds
//! for it (cosign's `sha256-<hex>.sig` image), each checked by `verify`;
//! verdicts cached by digest and by what was trusted, never by tag. All
//! of it within the review's deadline: running out denies.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::verify::VerifyRule;
use crate::image_ref::ImageRef;
use crate::policy::{Facts, Policy, Request, SignatureFact, Signer};
use crate::registry::client::{Client, LookupError};
use crate::registry::digest::Digest;
use crate::verify::legacy::{self, Signed};

/// A refusal (no signature, a bad one) is remembered briefly: a signature
/// pushed just now is seen within this.
pub const REFUSED_TTL: Duration = Duration::from_secs(30);
/// Verdicts remembered at most.
const VERDICTS_MAX: usize = 4096;
/// Bytes fetched at most for one image's signatures.
pub const FETCH_MAX: usize = 8 << 20;

/// What verifying one digest under one rule came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Verified(Signed),
    /// Checked and refused (no signature, none valid).
    Refused(String),
    /// Could not be checked (registry down, timeout): never cached.
    Unavailable(String),
}

/// Verdicts by (repository, digest, rule fingerprint), and the
/// verifications under way (however many reviews ask for one image at
/// once, its signatures are fetched once).
#[derive(Default)]
pub struct Verdicts {
    cache: Mutex<HashMap<(String, String), (Verdict, Instant)>>,
    inflight: Mutex<HashMap<(String, String), Arc<Flight>>>,
}

/// One verification under way.
#[derive(Default)]
struct Flight {
    verdict: Mutex<Option<Verdict>>,
    done: Condvar,
}

impl Verdicts {
    /// The verdict for `key`: remembered, or the one under way, or `run`
    /// (which the first asker runs for everyone), waiting at most until
    /// `deadline`.
    fn verdict(
        &self,
        key: (String, String),
        deadline: Instant,
        image: &str,
        verified_ttl: Duration,
        run: impl FnOnce() -> Verdict,
    ) -> Verdict {
        if let Some(v) = self.get(&key) {
            return v;
        }
        let (flight, leader) = {
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            match inflight.get(&key) {
                Some(f) => (f.clone(), false),
                None => {
                    let f = Arc::new(Flight::default());
                    inflight.insert(key.clone(), f.clone());
                    (f, true)
                }
            }
        };
        if leader {
            // Whatever happens in `run` (a panic included), the flight is
            // removed and its waiters woken.
            struct Land<'a> {
                verdicts: &'a Verdicts,
                key: &'a (String, String),
                flight: &'a Flight,
            }
            impl Drop for Land<'_> {
                fn drop(&mut self) {
                    self.verdicts
                        .inflight
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(self.key);
                    self.flight.done.notify_all();
                }
            }
            let land = Land {
                verdicts: self,
                key: &key,
                flight: &flight,
            };
            let v = run();
            self.put(key.clone(), &v, verified_ttl);
            *flight
                .verdict
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(v.clone());
            drop(land);
            return v;
        }
        let mut v = flight
            .verdict
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while v.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Verdict::Unavailable(format!("verification timed out for {image}"));
            }
            v = flight
                .done
                .wait_timeout(v, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let got = v
            .clone()
            .unwrap_or_else(|| Verdict::Unavailable("no verdict".into()));
        drop(v);
        // The first asker's outage or timeout is not this one's answer
        // while this one has time left: ask again.
        if matches!(got, Verdict::Unavailable(_)) && Instant::now() < deadline {
            return self.verdict(key, deadline, image, verified_ttl, run);
        }
        got
    }

    fn get(&self, key: &(String, String)) -> Option<Verdict> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(v, _)| v.clone())
    }

    fn put(&self, key: (String, String), v: &Verdict, verified_ttl: Duration) {
        let ttl = match v {
            Verdict::Verified(_) => verified_ttl,
            Verdict::Refused(_) => REFUSED_TTL,
            Verdict::Unavailable(_) => return,
        };
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= VERDICTS_MAX {
            // Expired first, then refusals (cheap to make by the thousand),
            // and verified digests only last: they keep pods running while
            // a registry is down.
            let now = Instant::now();
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= VERDICTS_MAX {
                cache.retain(|_, (v, _)| matches!(v, Verdict::Verified(_)));
            }
            if cache.len() >= VERDICTS_MAX {
                cache.clear();
            }
        }
        cache.insert(key, (v.clone(), Instant::now() + ttl));
    }
}

/// Facts for the images of `request` that `policy` wants verified, within
/// `budget`.
pub fn gather(
    policy: &Policy,
    rules: &[VerifyRule],
    request: &Request,
    client: &Client,
    verdicts: &Verdicts,
    budget: Duration,
) -> Facts {
    let mut facts = Facts::new();
    if policy.verify_images.is_empty() {
        return facts;
    }
    let deadline = Instant::now() + budget;
    for input in &request.images {
        if facts.contains_key(&input.image) {
            continue;
        }
        let Some(i) = policy.verification_for(&input.image) else {
            continue;
        };
        let (Some(rule), Some(req)) = (rules.get(i), policy.verify_images.get(i)) else {
            continue;
        };
        let outcome = fact(
            &input.image,
            rule,
            req.verify_tags,
            client,
            verdicts,
            deadline,
        );
        facts.insert(input.image.clone(), SignatureFact { rule: i, outcome });
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
) -> Result<Signer, String> {
    let left = || deadline.saturating_duration_since(Instant::now());
    let r = ImageRef::parse(image).map_err(|e| e.reason())?;
    let digest = match r.digest() {
        Some(d) => Digest::parse(d)?,
        None => {
            let resolved = client.resolve_cached(&r, left());
            if !verify_tags {
                let name = format!("{}/{}", r.domain(), r.path());
                return Err(match resolved {
                    Ok(d) => format!(
                        "it names a tag, which can move after admission: pin it by digest (it resolves to {d} now: {name}@{d})"
                    ),
                    Err(e) => format!(
                        "it names a tag, which can move after admission: pin it by digest (its digest could not be looked up: {e})"
                    ),
                });
            }
            match resolved {
                Ok(d) => d,
                Err(e) => {
                    return unavailable(
                        rule,
                        image,
                        &format!("its tag could not be resolved: {e}"),
                    );
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
    let verdict = verdicts.verdict(key, deadline, image, rule.verified_ttl, || {
        verify_digest(&r, &digest, rule, client, deadline)
    });
    match verdict {
        Verdict::Verified(s) => Ok(Signer {
            digest: s.digest.clone(),
            by: s.signer.clone(),
            time: s.time,
            time_source: s.time_source.map(str::to_string),
            log_index: s.log_index,
        }),
        Verdict::Refused(why) => Err(why),
        Verdict::Unavailable(why) => unavailable(rule, image, &why),
    }
}

/// A signature that could not be checked: denied, or with
/// `onRegistryError: allow` admitted unverified (and logged).
fn unavailable(rule: &VerifyRule, image: &str, why: &str) -> Result<Signer, String> {
    if rule.allow_on_registry_error {
        log::warn!(
            "{image}: admitted unverified ({}: onRegistryError allow): {why}",
            rule.label
        );
        Ok(Signer {
            digest: String::new(),
            by: format!("nobody (unverified: {why}; onRegistryError allow)"),
            time: None,
            time_source: None,
            log_index: None,
        })
    } else {
        Err(why.to_string())
    }
}

/// Fetches and checks the signatures of `digest` in `r`'s repository, in
/// both places cosign puts them — sigstore bundles attached as referrers
/// (cosign v3) and the legacy `sha256-<hex>.sig` image — looked up at the
/// same time (the legacy one on a second thread), so that a cold
/// verification costs the round trips of one format, not both.
pub fn verify_digest(
    r: &ImageRef,
    digest: &Digest,
    rule: &VerifyRule,
    client: &Client,
    deadline: Instant,
) -> Verdict {
    let (legacy, bundles) = std::thread::scope(|s| {
        let legacy = s.spawn(|| legacy_verdict(r, digest, rule, client, deadline));
        let bundles = bundle_verdict(r, digest, rule, client, deadline);
        (
            legacy
                .join()
                .unwrap_or_else(|_| Verdict::Refused("the signature lookup failed".into())),
            bundles,
        )
    });
    combine(bundles, legacy)
}

/// One verdict from both places. Unavailable only when neither place
/// could be asked: a registry that answers one lookup and fails the other
/// on purpose must not reach onRegistryError's "allow".
fn combine(bundles: Verdict, legacy: Verdict) -> Verdict {
    match (bundles, legacy) {
        (v @ Verdict::Verified(_), _) | (_, v @ Verdict::Verified(_)) => v,
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

/// Maps a lookup failure to a verdict: transient ones (and anything once
/// the time is up) cannot be told from an outage.
fn failed(r: &ImageRef, e: LookupError, deadline: Instant) -> Verdict {
    match e {
        _ if Instant::now() >= deadline => {
            Verdict::Unavailable(format!("verification timed out for {r}"))
        }
        LookupError::Transient(m) => Verdict::Unavailable(format!(
            "the registry could not be asked for signatures: {m}"
        )),
        LookupError::Permanent(m) => {
            Verdict::Refused(format!("its signatures could not be read: {m}"))
        }
    }
}

/// Sigstore bundles among the referrers of `digest`.
fn bundle_verdict(
    r: &ImageRef,
    digest: &Digest,
    rule: &VerifyRule,
    client: &Client,
    deadline: Instant,
) -> Verdict {
    use crate::verify::bundle;
    let left = || deadline.saturating_duration_since(Instant::now());
    let listed = match client.referrers(r, digest, None, left()) {
        Ok(l) => l,
        Err(e) => return failed(r, e, deadline),
    };
    let candidates: Vec<_> = listed
        .iter()
        .filter(|d| {
            d.artifact_type
                .as_deref()
                .is_some_and(|a| a.starts_with(bundle::LAYER_PREFIX))
        })
        .collect();
    if candidates.is_empty() {
        return Verdict::Refused("no sigstore bundle among the referrers".into());
    }
    let digest_s = digest.to_string();
    let mut fetched = 0usize;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for d in candidates.iter().take(legacy::MAX_LAYERS) {
        if left().is_zero() {
            return Verdict::Unavailable(format!("verification timed out for {r}"));
        }
        let m = match client.manifest(r, &d.digest, left()) {
            Ok(m) => m,
            Err(e) => return failed(r, e, deadline),
        };
        fetched += m.bytes.len();
        #[derive(serde::Deserialize)]
        struct M {
            #[serde(default)]
            layers: Vec<crate::registry::client::Descriptor>,
        }
        let layer = match serde_json::from_slice::<M>(&m.bytes) {
            Ok(M { layers })
                if layers.len() == 1 && layers[0].media_type.starts_with(bundle::LAYER_PREFIX) =>
            {
                layers.into_iter().next()
            }
            _ => None,
        };
        let Some(layer) = layer else {
            *reasons
                .entry("a referrer that is not one bundle layer".into())
                .or_default() += 1;
            continue;
        };
        let blob = match fetch_capped(
            client,
            r,
            &layer.digest,
            layer.size,
            "bundle",
            &mut fetched,
            &mut reasons,
            deadline,
        ) {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(v) => return v,
        };
        match bundle::verify(&blob, &digest_s, &rule.trust) {
            Ok(s) => return Verdict::Verified(s),
            Err(e) => *reasons.entry(e).or_default() += 1,
        }
    }
    Verdict::Refused(summarise(
        reasons,
        candidates.len().saturating_sub(legacy::MAX_LAYERS),
    ))
}

/// One signature blob (a payload or a bundle) by its descriptor, within
/// the caps: `None` when the caps refuse it (the reason is counted),
/// `Err` with the verdict when the registry cannot be asked.
#[allow(clippy::too_many_arguments)]
fn fetch_capped(
    client: &Client,
    r: &ImageRef,
    digest: &str,
    size: u64,
    what: &str,
    fetched: &mut usize,
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
        .filter(|n| *n <= legacy::MAX_PAYLOAD && *fetched + n <= FETCH_MAX);
    let Some(n) = size_ok else {
        *reasons
            .entry(format!("a {what} larger than accepted"))
            .or_default() += 1;
        return Ok(None);
    };
    *fetched += n;
    let left = deadline.saturating_duration_since(Instant::now());
    client
        .blob(r, &d, size, legacy::MAX_PAYLOAD, left)
        .map(Some)
        .map_err(|e| failed(r, e, deadline))
}

/// Reasons, each once with its count, and what was not looked at.
fn summarise(reasons: BTreeMap<String, usize>, skipped: usize) -> String {
    let mut why: Vec<String> = reasons
        .into_iter()
        .map(|(r, n)| if n > 1 { format!("{r} (×{n})") } else { r })
        .collect();
    if skipped > 0 {
        why.push(format!("{skipped} more not looked at"));
    }
    if why.is_empty() {
        why.push("nothing to verify".into());
    }
    why.join("; ")
}

/// cosign's legacy `sha256-<hex>.sig` image.
fn legacy_verdict(
    r: &ImageRef,
    digest: &Digest,
    rule: &VerifyRule,
    client: &Client,
    deadline: Instant,
) -> Verdict {
    let left = || deadline.saturating_duration_since(Instant::now());
    let timed_out = || Verdict::Unavailable(format!("verification timed out for {r}"));
    let transient = |e: LookupError| failed(r, e, deadline);
    let digest_s = digest.to_string();
    let tag = legacy::signature_tag(&digest_s);
    let manifest = match client.manifest(r, &tag, left()) {
        Ok(m) => m,
        Err(LookupError::Permanent(m)) if m.contains("(404)") => {
            return Verdict::Refused(format!("no signature found (no {tag})"));
        }
        Err(e) => return transient(e),
    };
    let (layers, total) = match legacy::signature_layers(&manifest.bytes) {
        Ok(x) => x,
        Err(e) => return Verdict::Refused(e),
    };
    let mut fetched = manifest.bytes.len();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for layer in &layers {
        if left().is_zero() {
            return timed_out();
        }
        let payload = match fetch_capped(
            client,
            r,
            &layer.digest,
            layer.size,
            "signature layer",
            &mut fetched,
            &mut reasons,
            deadline,
        ) {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(v) => return v,
        };
        match legacy::verify_layer(&payload, &layer.annotations, &digest_s, &rule.trust) {
            Ok(s) => return Verdict::Verified(s),
            Err(e) => *reasons.entry(e).or_default() += 1,
        }
    }
    if layers.is_empty() {
        return Verdict::Refused("the signature image has no layers".into());
    }
    Verdict::Refused(summarise(reasons, total - layers.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_place_refusing_is_not_an_outage() {
        let signed = Signed {
            digest: "sha256:0".into(),
            signer: "key k".into(),
            reference: "r".into(),
            time: None,
            time_source: None,
            log_index: None,
        };
        let v = || Verdict::Verified(signed.clone());
        let r = || Verdict::Refused("no".into());
        let u = || Verdict::Unavailable("down".into());
        assert_eq!(combine(v(), u()), v());
        assert_eq!(combine(u(), v()), v());
        assert!(matches!(combine(u(), u()), Verdict::Unavailable(_)));
        assert!(matches!(combine(r(), u()), Verdict::Refused(_)));
        assert!(matches!(combine(u(), r()), Verdict::Refused(_)));
        assert!(matches!(combine(r(), r()), Verdict::Refused(_)));
    }

    /// A full cache gives up refusals before verified digests.
    #[test]
    fn refusals_go_before_verified_digests() {
        let verdicts = Verdicts::default();
        let key = |i: usize| (format!("r@{i}"), "f".to_string());
        let signed = Signed {
            digest: "d".into(),
            signer: "s".into(),
            reference: "r".into(),
            time: None,
            time_source: None,
            log_index: None,
        };
        let day = Duration::from_secs(86_400);
        verdicts.put(key(0), &Verdict::Verified(signed), day);
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
