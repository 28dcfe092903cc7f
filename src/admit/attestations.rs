//! Attestation facts for `verifyImages` entries with `attestations`: the
//! in-toto statements the registry holds for a digest — DSSE bundles among
//! its referrers (read by the signature lookup) and cosign's legacy
//! `sha256-<hex>.att` image — each verified under the entry's signers
//! (or an item's own), kept for the items whose predicate type it has and
//! whose condition it meets. Within the same allowance of bytes and the
//! same deadline as the signatures. A condition that reads `now` is
//! evaluated again at each review, over the statements kept.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use super::signatures::{
    Allowance, Verdict, enough, fetch_capped, found_one, matched, summarise, tag_layers, timed_out,
};
use crate::config::verify::{AttestationRule, VerifyRule};
use crate::digest::Digest;
use crate::image_ref::ImageRef;
use crate::policy::Attested;
use crate::registry::client::Client;
use crate::verify::legacy::{self, Signed};
use crate::verify::rules::Trust;
use crate::verify::statement::Statement;

/// A statement verified for an item: who signed it, where it was.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub statement: Arc<Statement>,
    pub signed: Signed,
    /// sha256 of the envelope (the bundle, or the `.att` layer).
    pub envelope: String,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.envelope == other.envelope && self.signed == other.signed
    }
}

impl Eq for Candidate {}

/// The statements found for each item of an entry, by item.
pub(super) struct Collected {
    pub items: Vec<Vec<Candidate>>,
    /// Predicate types verified that no item asked for (for refusals).
    other_types: Vec<String>,
    /// Each envelope's statement, read once.
    read: HashMap<String, Option<Arc<Statement>>>,
    /// Why bundles were refused (for an item's refusal).
    bundle_reasons: BTreeMap<String, usize>,
}

impl Collected {
    pub(super) fn new(rule: &VerifyRule) -> Collected {
        Collected {
            items: vec![Vec::new(); rule.attestations.len()],
            other_types: Vec::new(),
            read: HashMap::new(),
            bundle_reasons: BTreeMap::new(),
        }
    }

    /// Keeps why bundles were refused.
    pub(super) fn note(&mut self, reasons: &BTreeMap<String, usize>) {
        self.bundle_reasons = reasons.clone();
    }

    /// Those reasons as `bundles: <reasons>; `, or nothing.
    pub(super) fn noted(&self) -> String {
        if self.bundle_reasons.is_empty() {
            return String::new();
        }
        format!("bundles: {}; ", summarise(self.bundle_reasons.clone(), 0))
    }

    /// Adds what an envelope verified under a trust holds: for the items
    /// of that trust (`own`: an item's own signers; `None`: the entry's)
    /// whose predicate types it has.
    fn add(
        &mut self,
        rule: &VerifyRule,
        own: Option<usize>,
        signed: &Signed,
        envelope: &str,
        reasons: &mut BTreeMap<String, usize>,
    ) {
        let Some(payload) = &signed.statement else {
            return;
        };
        let statement = self
            .read
            .entry(envelope.to_string())
            .or_insert_with(|| match Statement::read(payload) {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    *reasons.entry(e).or_default() += 1;
                    None
                }
            })
            .clone();
        let Some(statement) = statement else {
            return;
        };
        let mut wanted = false;
        for (j, item) in rule.attestations.iter().enumerate() {
            let mine = match own {
                None => item.trust.is_none(),
                Some(o) => o == j,
            };
            if mine
                && item
                    .predicate_types
                    .iter()
                    .any(|t| *t == statement.predicate_type)
            {
                wanted = true;
                self.items[j].push(Candidate {
                    statement: statement.clone(),
                    signed: signed.clone(),
                    envelope: envelope.to_string(),
                });
            }
        }
        if !wanted && !self.other_types.contains(&statement.predicate_type) {
            self.other_types.push(statement.predicate_type.clone());
        }
    }

    /// Another place's findings, added to these.
    pub(super) fn merge(&mut self, other: Collected) {
        for (mine, theirs) in self.items.iter_mut().zip(other.items) {
            mine.extend(theirs);
        }
        for t in other.other_types {
            if !self.other_types.contains(&t) {
                self.other_types.push(t);
            }
        }
    }
}

/// The trusts an envelope is verified under: the entry's, then each
/// item's own.
fn trusts(rule: &VerifyRule) -> impl Iterator<Item = (Option<usize>, &Trust)> {
    std::iter::once((None, &rule.trust)).chain(
        rule.attestations
            .iter()
            .enumerate()
            .filter_map(|(j, a)| a.trust.as_ref().map(|t| (Some(j), t))),
    )
}

/// A bundle checked for the items: under every item's own signers (the
/// entry's were checked by the signature lookup, and their verdict is
/// `entry`).
pub(super) fn bundle_for_items(
    rule: &VerifyRule,
    blob: &[u8],
    envelope: &str,
    digest: &str,
    entry: Option<&Signed>,
    collected: &mut Collected,
    reasons: &mut BTreeMap<String, usize>,
) {
    if rule.attestations.is_empty() {
        return;
    }
    if let Some(s) = entry {
        collected.add(rule, None, s, envelope, reasons);
    }
    for (own, trust) in trusts(rule).skip(1) {
        if let Ok(s) = crate::verify::bundle::verify(blob, digest, trust) {
            collected.add(rule, own, &s, envelope, reasons);
        }
    }
}

/// cosign's legacy `sha256-<hex>.att` image: each layer a DSSE envelope,
/// verified under the entry's signers and each item's own. Never a
/// signature; what it holds goes to `collected`. Refused (with its
/// reasons) when it was looked through, or why it could not be.
pub(super) fn att_verdict(
    r: &ImageRef,
    digest: &Digest,
    rule: &VerifyRule,
    client: &Client,
    deadline: Instant,
    allowance: &Allowance,
    collected: &mut Collected,
) -> Verdict {
    let left = || deadline.saturating_duration_since(Instant::now());
    let digest_s = digest.to_string();
    let tag = legacy::attestation_tag(&digest_s);
    let (layers, total) = match tag_layers(r, &tag, client, deadline, allowance) {
        Ok(Some(x)) => x,
        Ok(None) => return Verdict::Refused(format!("no {tag}")),
        Err(v) => return v,
    };
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut seen: HashMap<String, ()> = HashMap::new();
    for layer in &layers {
        if left().is_zero() {
            return timed_out(&r.to_string());
        }
        if seen.insert(layer.digest.clone(), ()).is_some() {
            continue;
        }
        let blob = match fetch_capped(
            client,
            r,
            &layer.digest,
            layer.size,
            "DSSE layer of the .att image",
            allowance,
            &mut reasons,
            deadline,
        ) {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(v) => return v,
        };
        for (own, trust) in trusts(rule) {
            match legacy::verify_attestation_layer(&blob, &layer.annotations, &digest_s, trust) {
                Ok(s) => collected.add(rule, own, &s, &layer.digest, &mut reasons),
                // The entry's reason is the one to tell.
                Err(e) if own.is_none() => *reasons.entry(e).or_default() += 1,
                Err(_) => {}
            }
        }
    }
    Verdict::Refused(summarise(reasons, total - layers.len()))
}

/// Each item judged over what was found: the statements whose condition
/// holds at `now`, from enough distinct signers. `Err` with the reason of
/// the first item not met.
pub(super) fn judge(
    rule: &VerifyRule,
    items: &[Vec<Candidate>],
    other_types: &[String],
    now: i64,
) -> Result<Vec<Vec<Candidate>>, String> {
    let mut kept = Vec::new();
    for (item, candidates) in rule.attestations.iter().zip(items) {
        kept.push(item_met(
            item,
            candidates,
            rule.threshold,
            other_types,
            now,
        )?);
    }
    Ok(kept)
}

/// The statements that meet one item, or why none do.
fn item_met(
    item: &AttestationRule,
    candidates: &[Candidate],
    threshold: usize,
    other_types: &[String],
    now: i64,
) -> Result<Vec<Candidate>, String> {
    let named = || format!("{} ({})", item.label, item.written);
    if candidates.is_empty() {
        let others = if other_types.is_empty() {
            String::new()
        } else {
            format!(" (verified statements are of {})", other_types.join(", "))
        };
        return Err(format!(
            "{}: no statement of that type, signed by an accepted signer, names this digest{others}",
            named()
        ));
    }
    let mut kept: Vec<Candidate> = Vec::new();
    let mut why = None;
    for c in candidates {
        let holds = match &item.condition {
            None => Ok(true),
            Some(cond) => cond.holds(&c.statement, now),
        };
        match (holds, &item.condition) {
            (Ok(true), _) => kept.push(c.clone()),
            (Ok(false), Some(cond)) => {
                why.get_or_insert_with(|| format!("its condition is false: {}", cond.source()));
            }
            (Err(e), Some(cond)) => {
                why.get_or_insert_with(|| {
                    format!(
                        "its condition could not be evaluated: {e} (in {})",
                        cond.source()
                    )
                });
            }
            (_, None) => {}
        }
    }
    let mut signers: Vec<Signed> = Vec::new();
    for c in &kept {
        found_one(&mut signers, c.signed.clone());
    }
    if enough(&signers, threshold) {
        return Ok(kept);
    }
    Err(match why {
        Some(why) if kept.is_empty() => format!("{}: {why}", named()),
        _ => format!(
            "{}: only {} of the {threshold} distinct signers required signed a statement that meets it{}",
            named(),
            matched(&signers).len(),
            why.map(|w| format!("; {w}")).unwrap_or_default()
        ),
    })
}

/// The items as reports show them: the statements that met each.
pub(super) fn attested(rule: &VerifyRule, kept: &[Vec<Candidate>]) -> Vec<Attested> {
    rule.attestations
        .iter()
        .zip(kept)
        .filter_map(|(item, cands)| {
            let first = cands.first()?;
            let mut signers: Vec<Signed> = Vec::new();
            for c in cands {
                found_one(&mut signers, c.signed.clone());
            }
            Some(Attested {
                item: item.label.clone(),
                predicate_type: first.statement.predicate_type.clone(),
                signer: signers
                    .iter()
                    .map(|s| s.signer.as_str())
                    .collect::<Vec<_>>()
                    .join(" and "),
                envelope: first.envelope.clone(),
                found_in: first.signed.found_in.to_string(),
            })
        })
        .collect()
}

/// The other predicate types seen, for the refusal.
pub(super) fn other_types(c: &Collected) -> &[String] {
    &c.other_types
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::condition::Condition;

    fn candidate(signer: &str, listed: &str, finished: &str) -> Candidate {
        let statement = format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"digest":{{"sha256":"ab"}}}}],"predicateType":"v","predicate":{{"finished":"{finished}"}}}}"#
        );
        Candidate {
            statement: Arc::new(Statement::read(statement.as_bytes()).unwrap()),
            signed: Signed {
                digest: "sha256:ab".into(),
                signer: signer.into(),
                listed: listed.into(),
                found_in: "sigstore bundle",
                reference: String::new(),
                time: None,
                time_source: None,
                log_index: None,
                statement: None,
            },
            envelope: format!("sha256:{signer}{finished}"),
        }
    }

    fn rule(threshold: usize) -> VerifyRule {
        VerifyRule {
            threshold,
            attestations: vec![AttestationRule {
                label: "verifyImages[0].attestations[0]".into(),
                written: "vuln".into(),
                predicate_types: vec!["v".into()],
                condition: Some(Arc::new(
                    Condition::compile("timestamp(predicate.finished) > now - duration('24h')")
                        .unwrap(),
                )),
                trust: None,
            }],
            ..VerifyRule::default()
        }
    }

    /// 2026-12-07T00:00:00Z.
    const NOW: i64 = 1_796_601_600;

    /// A condition on `now` holds until it does not: the same statements
    /// kept in a cached verdict are refused a day later.
    #[test]
    fn conditions_on_now_are_judged_at_the_time_given() {
        let r = rule(1);
        let items = vec![vec![candidate("key a", "keys[0]", "2026-12-06T12:00:00Z")]];
        let kept = judge(&r, &items, &[], NOW).unwrap();
        assert_eq!(kept[0].len(), 1);
        let e = judge(&r, &kept, &[], NOW + 86_400).unwrap_err();
        assert!(
            e.starts_with("verifyImages[0].attestations[0] (vuln): its condition is false"),
            "{e}"
        );
        let e = judge(&r, &[Vec::new()], &["other/v1".into()], NOW).unwrap_err();
        assert!(
            e.contains("no statement of that type") && e.contains("other/v1"),
            "{e}"
        );
    }

    /// With a threshold, distinct listed signers each need a statement
    /// that meets the item; one signer's two statements count once, and a
    /// statement that fails its condition counts for nothing.
    #[test]
    fn a_threshold_counts_signers_of_statements_that_meet_the_item() {
        let r = rule(2);
        let fresh = "2026-12-06T12:00:00Z";
        let stale = "2026-11-01T00:00:00Z";
        let a = candidate("key a", "keys[0]", fresh);
        let a2 = candidate("key a", "keys[0]", "2026-12-06T13:00:00Z");
        let b = candidate("key b", "keys[1]", fresh);
        let b_stale = candidate("key b", "keys[1]", stale);
        assert!(judge(&r, &[vec![a.clone(), b.clone()]], &[], NOW).is_ok());
        let e = judge(&r, &[vec![a.clone(), a2]], &[], NOW).unwrap_err();
        assert!(e.contains("only 1 of the 2 distinct signers"), "{e}");
        let e = judge(&r, &[vec![a, b_stale]], &[], NOW).unwrap_err();
        assert!(
            e.contains("only 1 of the 2") && e.contains("its condition is false"),
            "{e}"
        );
    }
}
