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

use super::signatures::{Place, Verdict, enough, found_one, matched, summarise};
use crate::config::verify::{AttestationRule, VerifyRule};
use crate::digest::Digest;
use crate::policy::Attested;
use crate::verify::legacy::{self, Signed};
use crate::verify::rules::Trust;
use crate::verify::statement::{Needs, Statement};

/// Other predicate types named in a refusal, at most.
const MAX_OTHER_TYPES: usize = 5;

/// A statement verified for an item: who signed it, where it was.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub statement: Arc<Statement>,
    pub signed: Signed,
    /// sha256 of the envelope (the bundle, or the `.att` layer).
    pub envelope: String,
    /// Whether its item's condition reads `now` and it is kept to be
    /// judged again at each review.
    pub rejudge: bool,
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
    pub(super) other_types: Vec<String>,
    /// Each envelope's statement, read once for what its items need.
    read: HashMap<(String, Needs), Option<Arc<Statement>>>,
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

    /// Those reasons, if any.
    pub(super) fn noted(&self) -> Option<String> {
        (!self.bundle_reasons.is_empty()).then(|| summarise(self.bundle_reasons.clone(), 0))
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
        let Some(predicate_type) = crate::verify::statement::predicate_type(payload) else {
            *reasons
                .entry("a statement without a predicateType".into())
                .or_default() += 1;
            return;
        };
        // The items of this trust that want this type; nothing else is
        // converted.
        let wanting: Vec<usize> = rule
            .attestations
            .iter()
            .enumerate()
            .filter(|(j, item)| {
                let mine = match own {
                    None => item.trust.is_none(),
                    Some(o) => o == *j,
                };
                mine && item.predicate_types.contains(&predicate_type)
            })
            .map(|(j, _)| j)
            .collect();
        if wanting.is_empty() {
            self.other_type(predicate_type);
            return;
        }
        let needs = wanting
            .iter()
            .filter_map(|&j| rule.attestations[j].condition.as_ref())
            .fold(Needs::default(), |n, c| n.or(c.needs));
        let statement = self
            .read
            .entry((envelope.to_string(), needs))
            .or_insert_with(|| match Statement::read(payload, needs) {
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
        for j in wanting {
            self.items[j].push(Candidate {
                statement: statement.clone(),
                signed: signed.clone(),
                envelope: envelope.to_string(),
                rejudge: false,
            });
        }
    }

    /// A predicate type verified that no item asked for, kept for the
    /// refusal (at most [`MAX_OTHER_TYPES`]).
    fn other_type(&mut self, t: String) {
        if self.other_types.len() < MAX_OTHER_TYPES && !self.other_types.contains(&t) {
            self.other_types.push(t);
        }
    }

    /// Another place's findings, added to these.
    pub(super) fn merge(&mut self, other: Collected) {
        for (mine, theirs) in self.items.iter_mut().zip(other.items) {
            mine.extend(theirs);
        }
        for t in other.other_types {
            self.other_type(t);
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
    place: &Place<'_>,
    digest: &Digest,
    rule: &VerifyRule,
    collected: &mut Collected,
) -> Verdict {
    let digest_s = digest.to_string();
    let tag = legacy::attestation_tag(&digest_s);
    let (layers, total) = match place.tag_layers(&tag) {
        Ok(Some(x)) => x,
        Ok(None) => return Verdict::Refused(format!("no {tag}")),
        Err(v) => return v,
    };
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let walked = place.each_layer(
        &layers,
        "DSSE layer of the .att image",
        &mut reasons,
        |layer, blob, reasons| {
            for (own, trust) in trusts(rule) {
                match legacy::verify_attestation_layer(blob, &layer.annotations, &digest_s, trust) {
                    Ok(s) => collected.add(rule, own, &s, &layer.digest, reasons),
                    // The entry's reason is the one to tell.
                    Err(e) if own.is_none() => *reasons.entry(e).or_default() += 1,
                    Err(_) => {}
                }
            }
            None
        },
    );
    if let Some(v) = walked {
        return v;
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
) -> Result<Vec<Vec<Candidate>>, Unmet> {
    let mut kept = Vec::new();
    let mut budget = EVALUATION_BUDGET;
    for (item, candidates) in rule.attestations.iter().zip(items) {
        kept.push(
            item_met(
                item,
                candidates,
                rule.threshold,
                other_types,
                now,
                &mut budget,
            )
            .map_err(|why| Unmet {
                item: item.label.clone(),
                why,
            })?,
        );
    }
    Ok(kept)
}

/// The statements that meet one item, or why none do.
/// What one judgement of a verdict may spend evaluating conditions, in
/// their estimated costs (twice what one condition may cost: a few
/// hundred milliseconds of one core at worst); statements beyond it are
/// not evaluated, and count for nothing.
const EVALUATION_BUDGET: f64 = 2.0 * crate::verify::condition::MAX_COST;

fn item_met(
    item: &AttestationRule,
    candidates: &[Candidate],
    threshold: usize,
    other_types: &[String],
    now: i64,
    budget: &mut f64,
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
    let mut unjudged = 0;
    for c in candidates {
        let holds = match &item.condition {
            None => Ok(true),
            Some(cond) if *budget < cond.cost => {
                unjudged += 1;
                continue;
            }
            Some(cond) => {
                *budget -= cond.cost;
                cond.holds(&c.statement, now)
            }
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
    if unjudged > 0 {
        why = Some(format!(
            "{}{unjudged} statements not evaluated (what one verification may spend on conditions ran out)",
            why.map(|w| format!("{w}; ")).unwrap_or_default()
        ));
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

/// An item not met: its label, and why (a sentence that names it).
#[derive(Debug)]
pub struct Unmet {
    pub item: String,
    pub why: String,
}

/// Values a verdict keeps, at most, to judge its conditions on `now` again
/// at each review (a few hundred KB): beyond, it keeps none and is
/// remembered for [`NOW_TTL`] at most.
pub const KEPT_VALUES_MAX: usize = 1024;
/// How long a verdict whose conditions read `now` is remembered when it
/// keeps nothing to judge them again with.
pub const NOW_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// What a verdict keeps of the statements that met its items: for each
/// item the statements of the distinct signers it needs; their values
/// only for an item whose condition reads `now` (to be judged again at
/// each review), and only up to [`KEPT_VALUES_MAX`] in all. Returns the
/// most the verdict may be remembered, when less than its rule says.
pub(super) fn keep(
    rule: &VerifyRule,
    met: Vec<Vec<Candidate>>,
) -> (Vec<Vec<Candidate>>, Option<std::time::Duration>) {
    let mut kept: Vec<Vec<Candidate>> = Vec::new();
    for (item, candidates) in rule.attestations.iter().zip(met) {
        let mut signers: Vec<Signed> = Vec::new();
        let mut firsts: Vec<Candidate> = Vec::new();
        for c in candidates {
            if !signers.iter().any(|s| s.signer == c.signed.signer) {
                signers.push(c.signed.clone());
                firsts.push(c);
            }
        }
        let chosen = matched(&signers);
        let now = item.condition.as_ref().is_some_and(|c| c.uses_now);
        kept.push(
            firsts
                .into_iter()
                .enumerate()
                .filter(|(i, _)| chosen.contains(i))
                .take(rule.threshold.max(1))
                .map(|(_, c)| Candidate { rejudge: now, ..c })
                .collect(),
        );
    }
    let values: usize = kept
        .iter()
        .flatten()
        .filter(|c| c.rejudge)
        .map(|c| c.statement.values)
        .sum();
    let cap = values > KEPT_VALUES_MAX;
    for c in kept.iter_mut().flatten() {
        if !c.rejudge || cap {
            c.statement = Arc::new(c.statement.light());
            c.rejudge = false;
        }
    }
    let judged_for_now = rule
        .attestations
        .iter()
        .any(|a| a.condition.as_ref().is_some_and(|c| c.uses_now));
    (kept, (cap && judged_for_now).then_some(NOW_TTL))
}

/// A remembered verdict's conditions on `now`, judged again at `now`.
pub(super) fn rejudge(rule: &VerifyRule, kept: &[Vec<Candidate>], now: i64) -> Result<(), Unmet> {
    let mut budget = EVALUATION_BUDGET;
    for (item, candidates) in rule.attestations.iter().zip(kept) {
        if candidates.iter().any(|c| c.rejudge) {
            item_met(item, candidates, rule.threshold, &[], now, &mut budget).map_err(|why| {
                Unmet {
                    item: item.label.clone(),
                    why,
                }
            })?;
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::condition::Condition;

    fn candidate(signer: &str, listed: &str, finished: &str) -> Candidate {
        let statement = format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"digest":{{"sha256":"ab"}}}}],"predicateType":"v","predicate":{{"finished":"{finished}"}}}}"#
        );
        Candidate {
            statement: Arc::new(
                Statement::read(
                    statement.as_bytes(),
                    Needs {
                        predicate: true,
                        ..Needs::default()
                    },
                )
                .unwrap(),
            ),
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
            rejudge: false,
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
        let u = judge(&r, &kept, &[], NOW + 86_400).unwrap_err();
        assert_eq!(u.item, "verifyImages[0].attestations[0]");
        let e = u.why;
        assert!(
            e.starts_with("verifyImages[0].attestations[0] (vuln): its condition is false"),
            "{e}"
        );
        let e = judge(&r, &[Vec::new()], &["other/v1".into()], NOW)
            .unwrap_err()
            .why;
        assert!(
            e.contains("no statement of that type") && e.contains("other/v1"),
            "{e}"
        );
    }

    /// A verdict keeps the statements of the signers it needs, with their
    /// values only for a condition on `now` and only while they are few;
    /// otherwise it keeps none and is remembered five minutes at most.
    #[test]
    fn a_verdict_keeps_little() {
        let r = rule(1);
        let a = candidate("key a", "keys[0]", "2026-12-06T12:00:00Z");
        let (kept, cap) = keep(&r, vec![vec![a.clone(), a.clone()]]);
        assert_eq!(
            kept[0].len(),
            1,
            "one signer's second statement is not kept"
        );
        assert!(kept[0][0].rejudge && kept[0][0].statement.predicate.is_some());
        assert_eq!(cap, None);
        assert!(rejudge(&r, &kept, NOW).is_ok() && rejudge(&r, &kept, NOW + 86_400).is_err());
        // Many values: none kept, remembered briefly, not judged again.
        let mut big = a.clone();
        let list = vec!["0"; KEPT_VALUES_MAX].join(",");
        big.statement = Arc::new(
            Statement::read(
                format!(
                    r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"v","predicate":{{"finished":"2026-12-06T12:00:00Z","l":[{list}]}}}}"#
                )
                .as_bytes(),
                Needs {
                    predicate: true,
                    ..Needs::default()
                },
            )
            .unwrap(),
        );
        let (kept, cap) = keep(&r, vec![vec![big]]);
        assert_eq!(cap, Some(NOW_TTL));
        assert!(!kept[0][0].rejudge && kept[0][0].statement.predicate.is_none());
        // No condition on `now`: nothing kept to judge again, no cap.
        let mut plain = rule(1);
        plain.attestations[0].condition = None;
        let (kept, cap) = keep(&plain, vec![vec![a]]);
        assert!(!kept[0][0].rejudge && kept[0][0].statement.predicate.is_none());
        assert_eq!(cap, None);
    }

    /// One judgement evaluates conditions up to a budget: statements
    /// beyond it count for nothing, and the refusal says so.
    #[test]
    fn conditions_are_evaluated_within_a_budget() {
        let mut r = rule(1);
        let costly = Condition::compile(
            "predicate.a.all(x, x == 0) && predicate.b.all(x, x == 0) && predicate.c.all(x, x == 0) && predicate.d.all(x, x == 0)",
        )
        .unwrap();
        assert!(costly.cost * 3.0 > EVALUATION_BUDGET, "{}", costly.cost);
        r.attestations[0].condition = Some(Arc::new(costly));
        let with = |ok: bool| {
            let mut c = candidate("key a", "keys[0]", "x");
            let v = if ok { "[0]" } else { "[1]" };
            c.statement = Arc::new(
                Statement::read(
                    format!(
                        r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"v","predicate":{{"a":{v},"b":[0],"c":[0],"d":[0]}}}}"#
                    )
                    .as_bytes(),
                    Needs {
                        predicate: true,
                        ..Needs::default()
                    },
                )
                .unwrap(),
            );
            c
        };
        assert!(judge(&r, &[vec![with(true)]], &[], NOW).is_ok());
        let e = judge(&r, &[vec![with(false), with(false), with(true)]], &[], NOW)
            .unwrap_err()
            .why;
        assert!(e.contains("statements not evaluated"), "{e}");
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
        let e = judge(&r, &[vec![a.clone(), a2]], &[], NOW).unwrap_err().why;
        assert!(e.contains("only 1 of the 2 distinct signers"), "{e}");
        let e = judge(&r, &[vec![a, b_stale]], &[], NOW).unwrap_err().why;
        assert!(
            e.contains("only 1 of the 2") && e.contains("its condition is false"),
            "{e}"
        );
    }
}
