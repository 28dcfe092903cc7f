//! `check --output policyreport`: what each policy made of each container
//! image, as `wgpolicyk8s.io/v1alpha2` PolicyReports (one per namespace)
//! and a ClusterPolicyReport (objects without a namespace), the format
//! Policy Reporter and the dashboards users already run read. Printed as a
//! `v1` List, so that `kubectl apply -f -` takes it as it is.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::Origin;
use crate::policy::{Effect, PolicySet, Request};

/// The reports' name in each namespace, and the results' `source`.
const NAME: &str = "image-bouncer";

/// One report per namespace (the cluster-scoped one under `None`), each
/// with a result per container image and policy that applies: `pass`,
/// `fail` (an enforcing policy refuses it), `warn` (a policy in warn mode
/// would, or break-glass let it through), `skip` (the policy's
/// exemptions leave it alone). `now` is the results' timestamp.
pub fn reports(set: &PolicySet, requests: &[(Option<Origin>, Request)], now: i64) -> Value {
    let mut by_namespace: BTreeMap<Option<String>, Vec<Value>> = BTreeMap::new();
    for (origin, request) in requests {
        let namespace = request.namespace.clone();
        let resource = origin.as_ref().filter(|o| !o.name.is_empty()).map(|o| {
            let mut r = json!({"apiVersion": o.api_version, "kind": o.kind, "name": o.name});
            if let Some(ns) = &o.namespace {
                r["namespace"] = ns.as_str().into();
            }
            if let Some(uid) = &o.uid {
                r["uid"] = uid.as_str().into();
            }
            r
        });
        let results = by_namespace.entry(namespace).or_default();
        for policy in set.applicable(request.namespace.as_deref()) {
            let d = policy.decide(request);
            for v in &d.images {
                let (result, message) = if v.violations.is_empty() {
                    match (&d.exempt_namespace, &v.exempted_by) {
                        (Some(ns), _) => ("skip", format!("namespace {ns:?} is exempt")),
                        (None, Some(p)) => ("skip", format!("exempt by exemptImages entry {p:?}")),
                        (None, None) => ("pass", "admitted".to_string()),
                    }
                } else {
                    let result = match v.violations[0].effect {
                        Effect::Denies => "fail",
                        Effect::Warns | Effect::BrokenGlass => "warn",
                    };
                    let mut words: Vec<&str> =
                        v.violations.iter().map(|x| x.message.as_str()).collect();
                    let glass;
                    if v.violations[0].effect == Effect::BrokenGlass {
                        glass = format!(
                            "allowed by break-glass annotation {:?}",
                            d.break_glass.as_deref().unwrap_or("")
                        );
                        words.insert(0, &glass);
                    }
                    (result, words.join("; "))
                };
                let rule = if v.violations.is_empty() {
                    "image".to_string()
                } else {
                    let mut rules: Vec<&str> =
                        v.violations.iter().map(|x| x.rule.as_str()).collect();
                    rules.dedup();
                    rules.join(",")
                };
                let mut properties = json!({"image": v.image, "mode": policy.mode.as_str()});
                if let Some(c) = &v.container {
                    properties["container"] = c.to_string().into();
                }
                if let Some(n) = &v.normalized {
                    properties["normalized"] = n.as_str().into();
                }
                let mut r = json!({
                    "policy": &*policy.name,
                    "rule": rule,
                    "result": result,
                    "message": message,
                    "source": NAME,
                    "category": "Supply Chain Security",
                    "scored": true,
                    "timestamp": {"seconds": now, "nanos": 0},
                    "properties": properties,
                });
                if let Some(res) = &resource {
                    r["resources"] = json!([res]);
                }
                results.push(r);
            }
        }
    }
    let items: Vec<Value> = by_namespace
        .into_iter()
        .filter(|(_, results)| !results.is_empty())
        .map(|(namespace, results)| report(namespace, results))
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// One report: its results and their counts.
fn report(namespace: Option<String>, results: Vec<Value>) -> Value {
    let mut summary = json!({"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 0});
    for r in &results {
        if let Some(k) = r["result"].as_str()
            && let Some(n) = summary[k].as_u64()
        {
            summary[k] = (n + 1).into();
        }
    }
    let mut metadata = json!({"name": NAME, "labels": {"app.kubernetes.io/managed-by": NAME}});
    let kind = match namespace {
        Some(ns) => {
            metadata["namespace"] = ns.into();
            "PolicyReport"
        }
        None => "ClusterPolicyReport",
    };
    json!({
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": kind,
        "metadata": metadata,
        "summary": summary,
        "results": results,
    })
}
