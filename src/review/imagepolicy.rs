//! ImageReview (`imagepolicy.k8s.io/v1alpha1`), the ImagePolicyWebhook
//! admission plugin's wire format.
//!
//! The reply is always a well-formed ImageReview: the apiserver treats any
//! non-2xx status or undecodable body as a backend failure and falls back to
//! `defaultAllow`, so even an unreadable review — not JSON, too large, too
//! slow, or refused for lack of memory — is answered `allowed: false` with
//! HTTP 200 ([`refusal`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::policy::{Decision, Gather, ImageInput, Policy, Request};
use crate::review::workload::{Capped, MAX_CONTAINERS, too_many_containers};

pub const API_VERSION: &str = "imagepolicy.k8s.io/v1alpha1";
pub const KIND: &str = "ImageReview";

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImageReview {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub spec: Option<Spec>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(default)]
pub struct Spec {
    /// Kept up to `MAX_CONTAINERS`, counted beyond.
    pub containers: Option<Capped<ContainerSpec>>,
    /// Only pod annotations whose key contains `.image-policy.k8s.io/`.
    pub annotations: Option<BTreeMap<String, String>>,
    pub namespace: Option<String>,
}

#[derive(Deserialize, Debug)]
pub struct ContainerSpec {
    pub image: String,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct Reply<'a> {
    api_version: &'static str,
    kind: &'static str,
    status: Status<'a>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    allowed: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    audit_annotations: BTreeMap<String, String>,
}

/// What happened, for the log line and metrics.
#[derive(Debug)]
pub enum Outcome {
    Decided {
        request: Request,
        decision: Decision,
    },
    /// JSON, but not an ImageReview we can read: denied (fail closed).
    Invalid(String),
}

/// The body is not JSON at all.
#[derive(Debug)]
pub struct NotJson(pub String);

impl ImageReview {
    /// The policy request this review asks about; `Err` names what is
    /// missing or wrong.
    pub fn to_request(&self) -> Result<Request, String> {
        match self.kind.as_deref() {
            Some(KIND) => {}
            Some(other) => return Err(format!("kind is {other:?}, expected \"{KIND}\"")),
            None => return Err(format!("kind is missing, expected \"{KIND}\"")),
        }
        // A missing apiVersion is tolerated, as the apiserver tolerates it
        // in replies; another version is not something we can read.
        if let Some(v) = self.api_version.as_deref().filter(|v| *v != API_VERSION) {
            return Err(format!("apiVersion {v:?} is not {API_VERSION}"));
        }
        let spec = self.spec.as_ref().ok_or("no spec")?;
        let containers = spec.containers.as_ref().map_or(&[][..], Capped::items);
        let count = spec.containers.as_ref().map_or(0, Capped::total);
        if count > MAX_CONTAINERS {
            return Err(too_many_containers(count));
        }
        Ok(Request {
            namespace: spec.namespace.clone().filter(|n| !n.is_empty()),
            annotations: spec.annotations.clone().unwrap_or_default(),
            images: containers
                .iter()
                .map(|c| ImageInput::bare(c.image.clone()))
                .collect(),
            ..Request::default()
        })
    }
}

/// Answers one ImageReview body: the reply bytes and what happened.
pub fn review(
    policy: &Policy,
    body: &[u8],
    gather: Gather<'_>,
) -> Result<(Vec<u8>, Outcome), NotJson> {
    let parsed = serde_json::from_slice::<ImageReview>(body).map_err(|e| e.to_string());
    let outcome = match parsed {
        Ok(r) => match r.to_request() {
            Ok(mut request) => {
                request.signatures = gather(&request);
                let decision = policy.decide(&request);
                Outcome::Decided { request, decision }
            }
            Err(e) => Outcome::Invalid(e),
        },
        Err(e) => {
            // Wrong types are an unreadable review; broken syntax is not JSON.
            if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
                return Err(NotJson(e));
            }
            Outcome::Invalid(e)
        }
    };
    let reply = match &outcome {
        Outcome::Decided { decision, .. } => reply_bytes(
            decision.allowed,
            &decision.reason(),
            decision.audit_annotations(),
        ),
        Outcome::Invalid(e) => {
            reply_bytes(false, &format!("invalid ImageReview: {e}"), BTreeMap::new())
        }
    };
    Ok((reply, outcome))
}

/// A review that was not judged (unreadable, too large, overload): denied,
/// with why.
pub fn refusal(reason: &str) -> Vec<u8> {
    reply_bytes(false, reason, BTreeMap::new())
}

fn reply_bytes(
    allowed: bool,
    reason: &str,
    audit_annotations: BTreeMap<String, String>,
) -> Vec<u8> {
    let reply = Reply {
        api_version: API_VERSION,
        kind: KIND,
        status: Status {
            allowed,
            reason,
            audit_annotations,
        },
    };
    // Serialising these plain structs cannot fail (string keys only).
    serde_json::to_vec(&reply).unwrap_or_else(|_| {
        br#"{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","status":{"allowed":false,"reason":"internal error"}}"#.to_vec()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn answer(body: &str) -> Value {
        let (bytes, _) = review(
            &Policy::default(),
            body.as_bytes(),
            &crate::policy::no_facts,
        )
        .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn decides_and_echoes_version_and_kind() {
        let v = answer(
            r#"{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"nginx:1.27"}],"namespace":"default"},"status":{"allowed":false}}"#,
        );
        assert_eq!(
            v,
            json!({"apiVersion": API_VERSION, "kind": KIND, "status": {"allowed": true}})
        );
        let v = answer(r#"{"kind":"ImageReview","spec":{"containers":[{"image":"busybox"}]}}"#);
        assert_eq!(v["status"]["allowed"], false);
        assert!(
            v["status"]["reason"]
                .as_str()
                .unwrap()
                .contains("docker.io/library/busybox:latest")
        );
        assert_eq!(
            v["status"]["auditAnnotations"]["denied-images"],
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn huge_reviews_cost_and_answer_little() {
        // 500,000 containers: counted, not kept, and refused.
        let many = format!(
            r#"{{"kind":"ImageReview","spec":{{"containers":[{}]}}}}"#,
            vec![r#"{"image":"a"}"#; 500_000].join(",")
        );
        let (bytes, outcome) = review(
            &Policy::default(),
            many.as_bytes(),
            &crate::policy::no_facts,
        )
        .unwrap();
        assert!(matches!(outcome, Outcome::Invalid(_)));
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["status"]["allowed"], false);
        assert!(
            v["status"]["reason"]
                .as_str()
                .unwrap()
                .contains("500000 containers, more than the 1024"),
            "{v}"
        );
        assert!(bytes.len() < 300, "{} bytes", bytes.len());
        // At the cap, every image bad: the reply lists 20 and counts the rest.
        let list: Vec<String> = (0..1024)
            .map(|i| format!(r#"{{"image":"a{i}"}}"#))
            .collect();
        let body = format!(
            r#"{{"kind":"ImageReview","spec":{{"containers":[{}]}}}}"#,
            list.join(",")
        );
        let (bytes, _) = review(
            &Policy::default(),
            body.as_bytes(),
            &crate::policy::no_facts,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let reason = v["status"]["reason"].as_str().unwrap();
        assert_eq!(reason.matches("has no tag").count(), 20, "{reason}");
        assert!(reason.ends_with("; and 1004 more violations"), "{reason}");
        assert!(
            v["status"]["auditAnnotations"]["denied-images"]
                .as_str()
                .unwrap()
                .ends_with(" (and 1004 more)")
        );
        assert!(bytes.len() < 8 * 1024, "{} bytes", bytes.len());
    }

    #[test]
    fn unreadable_reviews_are_denied_not_errors() {
        for body in [
            r#"{}"#,
            r#"[]"#,
            r#"{"kind":"AdmissionReview","spec":{}}"#,
            r#"{"kind":"ImageReview"}"#,
            r#"{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v2","spec":{}}"#,
            r#"{"kind":"ImageReview","spec":{"containers":[{"image":7}]}}"#,
            r#"{"kind":"ImageReview","spec":{"containers":"nginx"}}"#,
        ] {
            let v = answer(body);
            assert_eq!(v["kind"], KIND, "{body}");
            assert_eq!(v["status"]["allowed"], false, "{body}");
            assert!(
                v["status"]["reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("invalid ImageReview: "),
                "{body}: {v}"
            );
        }
        assert!(review(&Policy::default(), b"{not json", &crate::policy::no_facts).is_err());
        assert!(review(&Policy::default(), b"", &crate::policy::no_facts).is_err());
    }
}
