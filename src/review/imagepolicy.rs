//! ImageReview (`imagepolicy.k8s.io/v1alpha1`), the ImagePolicyWebhook
//! admission plugin's wire format.
//!
//! The reply is always a well-formed ImageReview: the apiserver treats any
//! non-2xx status or undecodable body as a backend failure and falls back to
//! `defaultAllow`, so even an unreadable review — not JSON, too large, too
//! slow, or refused for lack of memory — is answered `allowed: false` with
//! HTTP 200 ([`refusal`]).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

use crate::policy::{Decision, ImageInput, PolicySet, Request};
use crate::review::workload::{Capped, MAX_CONTAINERS, too_many_containers};
use crate::review::{push_annotations, push_json_string};

pub const API_VERSION: &str = "imagepolicy.k8s.io/v1alpha1";
pub const KIND: &str = "ImageReview";

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImageReview {
    pub api_version: Option<Cow<'static, str>>,
    pub kind: Option<Cow<'static, str>>,
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

/// What happened, for the log line and metrics.
#[derive(Debug)]
pub enum Outcome {
    /// `request.images` were moved into `decision.images`.
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
    pub fn to_request(self) -> Result<Request, String> {
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
        let spec = self.spec.ok_or("no spec")?;
        let containers = spec.containers.unwrap_or_default();
        if containers.total() > MAX_CONTAINERS {
            return Err(too_many_containers(containers.total()));
        }
        Ok(Request {
            namespace: spec.namespace.filter(|n| !n.is_empty()),
            annotations: spec.annotations.unwrap_or_default(),
            images: containers
                .into_items()
                .into_iter()
                .map(|c| ImageInput::bare(c.image))
                .collect(),
            ..Request::default()
        })
    }
}

/// Reads one ImageReview body into the request to decide on: `Err` when
/// it is not JSON at all, `Ok(Err(why))` when it is JSON but not a
/// readable ImageReview (denied as such).
pub fn read(body: &[u8]) -> Result<Result<Request, String>, NotJson> {
    // The fast reader is the one whose requests are judged; a body it
    // does not read is denied, and serde_json only words why.
    let parsed = match ImageReview::read_fast(body) {
        Some(r) => Ok(r),
        None => match serde_json::from_slice::<ImageReview>(body) {
            Ok(_) => Err(crate::review::admission::UNREAD.to_string()),
            Err(e) => Err(e.to_string()),
        },
    };
    match parsed {
        Ok(r) => Ok(r.to_request()),
        Err(e) => {
            // Wrong types are an unreadable review; broken syntax is not JSON.
            if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
                return Err(NotJson(e));
            }
            Ok(Err(e))
        }
    }
}

/// The outcome once the policy has decided on what [`read`] gave (with
/// whatever facts the request carries by now).
pub fn decide(read: Result<Request, String>, policy: &PolicySet) -> Outcome {
    match read {
        Ok(mut request) => {
            let decision = policy.decide_taking(&mut request);
            Outcome::Decided { request, decision }
        }
        Err(e) => Outcome::Invalid(e),
    }
}

/// The reply to an ImageReview, from what was decided.
pub fn reply(outcome: &Outcome) -> Vec<u8> {
    match outcome {
        Outcome::Decided { decision, .. } => reply_bytes(
            decision.allowed,
            &decision.reason(),
            decision.audit_annotations(),
        ),
        Outcome::Invalid(e) => {
            reply_bytes(false, &format!("invalid ImageReview: {e}"), BTreeMap::new())
        }
    }
}

/// A review that was not judged (unreadable, too large, overload): denied,
/// with why.
pub fn refusal(reason: &str) -> Vec<u8> {
    reply_bytes(false, reason, BTreeMap::new())
}

/// The reply, written out directly: exactly what serde_json writes for
/// `{apiVersion, kind, status: {allowed, reason?, auditAnnotations?}}` (a
/// test holds the two equal), without its serializer on every review.
fn reply_bytes(
    allowed: bool,
    reason: &str,
    audit_annotations: BTreeMap<String, String>,
) -> Vec<u8> {
    let annotations: usize = audit_annotations
        .iter()
        .map(|(k, v)| k.len() + v.len() + 6)
        .sum();
    let mut out = Vec::with_capacity(128 + reason.len() + annotations);
    for piece in [
        "{\"apiVersion\":\"",
        API_VERSION,
        "\",\"kind\":\"",
        KIND,
        "\",\"status\":{\"allowed\":",
        if allowed { "true" } else { "false" },
    ] {
        out.extend_from_slice(piece.as_bytes());
    }
    if !reason.is_empty() {
        out.extend_from_slice(b",\"reason\":");
        push_json_string(&mut out, reason);
    }
    push_annotations(&mut out, &audit_annotations);
    out.extend_from_slice(b"}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// The reply as serde_json writes it: what `reply_bytes` must write.
    #[derive(serde::Serialize, Debug)]
    #[serde(rename_all = "camelCase")]
    struct Reply<'a> {
        api_version: &'static str,
        kind: &'static str,
        status: Status<'a>,
    }

    #[derive(serde::Serialize, Debug)]
    #[serde(rename_all = "camelCase")]
    struct Status<'a> {
        allowed: bool,
        #[serde(skip_serializing_if = "str::is_empty")]
        reason: &'a str,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        audit_annotations: BTreeMap<String, String>,
    }

    #[test]
    fn reply_is_written_as_serde_json_writes_it() {
        let mut strings: Vec<String> = vec![
            String::new(),
            "image docker.io/library/busybox:latest has no tag".into(),
            "a \"quoted\" \\ back\\slash".into(),
            "é, 漢字, \u{7f}, \u{85}, \u{2028}, 🦀".into(),
        ];
        // Every ASCII character, alone and between others.
        strings.extend((0u8..0x80).map(|b| format!("x{}y", char::from(b))));
        strings.push((0u8..0x80).map(char::from).collect());
        for (n, reason) in strings.iter().enumerate() {
            let mut annotations = BTreeMap::new();
            for key in strings.iter().skip(n % 7).step_by(13).take(n % 4) {
                annotations.insert(format!("image-policy.k8s.io/{key}"), reason.clone());
            }
            for allowed in [true, false] {
                let want = serde_json::to_vec(&Reply {
                    api_version: API_VERSION,
                    kind: KIND,
                    status: Status {
                        allowed,
                        reason,
                        audit_annotations: annotations.clone(),
                    },
                })
                .unwrap();
                let got = reply_bytes(allowed, reason, annotations.clone());
                assert!(
                    got == want,
                    "{reason:?}: {} vs {}",
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want)
                );
            }
        }
    }

    /// read → decide → reply, as the admission step runs them, with no
    /// signatures gathered.
    fn review(policy: &PolicySet, body: &[u8]) -> Result<(Vec<u8>, Outcome), NotJson> {
        let outcome = decide(read(body)?, policy);
        Ok((reply(&outcome), outcome))
    }

    fn answer(body: &str) -> Value {
        let (bytes, _) = review(&PolicySet::default(), body.as_bytes()).unwrap();
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
        let (bytes, outcome) = review(&PolicySet::default(), many.as_bytes()).unwrap();
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
        let (bytes, _) = review(&PolicySet::default(), body.as_bytes()).unwrap();
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

    /// Every ImageReview request body of the golden fixtures and the bench.
    fn fixture_bodies() -> Vec<Vec<u8>> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut out = Vec::new();
        for dir in ["imagereview", "bench"] {
            for e in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = e.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                if (dir == "imagereview" && name.ends_with(".request.json"))
                    || (dir == "bench" && name.starts_with("imagereview"))
                {
                    out.push(std::fs::read(&path).unwrap());
                }
            }
        }
        assert!(out.len() > 10, "{}", out.len());
        out
    }

    #[test]
    fn fast_reader_reads_what_serde_reads() {
        let mut fast = 0;
        for body in fixture_bodies() {
            crate::fuzzing::image_review_reading_agrees(&body);
            if serde_json::from_slice::<ImageReview>(&body).is_ok() {
                assert!(
                    ImageReview::read_fast(&body).is_some(),
                    "{}",
                    String::from_utf8_lossy(&body)
                );
                fast += 1;
            }
        }
        assert!(fast > 10, "{fast}");
        crate::fuzzing::readers_agree_on_mutations(
            &fixture_bodies(),
            crate::fuzzing::image_review_reading_agrees,
            |body| ImageReview::read_fast(body).is_some(),
        );
    }

    /// Where a reader could differ from serde: both agree, and the fast
    /// one reads those it should.
    #[test]
    fn fast_reader_edge_cases() {
        let cases: &[(&str, bool)] = &[
            (
                r#"{"kind":"ImageReview","spec":{"containers":[{"image":"a:1"}]}}"#,
                true,
            ),
            // An escaped key, an escaped value, unknown fields anywhere.
            (
                r#"{"kind":"ImageReview","spec":{"containers":[{"im\u0061ge":"a\u003a1","x":[{}]}],"y":1},"z":null}"#,
                true,
            ),
            // A field twice: serde refuses it, in a struct, not in a map.
            (
                r#"{"kind":"ImageReview","kind":"ImageReview","spec":{}}"#,
                false,
            ),
            (r#"{"spec":{"namespace":"a","namespace":"b"}}"#, false),
            (
                r#"{"spec":{"containers":[{"image":"a","image":"b"}]}}"#,
                false,
            ),
            (r#"{"spec":{"annotations":{"k":"1","k":"2"}}}"#, true),
            // null is None for the options, refused for the image.
            (
                r#"{"apiVersion":null,"kind":null,"spec":{"containers":null,"annotations":null,"namespace":null}}"#,
                true,
            ),
            (r#"{"spec":null}"#, true),
            (r#"{"spec":{"containers":[{"image":null}]}}"#, false),
            (r#"{"spec":{"containers":[{}]}}"#, false),
            (r#"{"spec":{"annotations":{"k":null}}}"#, false),
            (r#"{"spec":{"annotations":{"k":1}}}"#, false),
            (r#"{"spec":{"containers":[1]}}"#, false),
            // The sequence form of a struct: serde reads it, the fast reader does not.
            (
                r#"["imagepolicy.k8s.io/v1alpha1","ImageReview",null]"#,
                false,
            ),
            // Broken JSON and trailing bytes.
            (r#"{"spec":{"containers":[{"image":"a"},]}}"#, false),
            (r#"{"spec":{}} {}"#, false),
            ("{\"spec\":{\"namespace\":\"\u{1}\"}}", false),
        ];
        for (body, read) in cases {
            crate::fuzzing::image_review_reading_agrees(body.as_bytes());
            assert_eq!(
                ImageReview::read_fast(body.as_bytes()).is_some(),
                *read,
                "{body}"
            );
        }
        // The last duplicate annotation wins, as in serde's map.
        let r = ImageReview::read_fast(br#"{"spec":{"annotations":{"k":"1","k":"2"}}}"#).unwrap();
        assert_eq!(r.spec.unwrap().annotations.unwrap()["k"], "2");
        // Past the cap, containers are counted, not kept.
        let many = format!(
            r#"{{"spec":{{"containers":[{}]}}}}"#,
            vec![r#"{"image":"a"}"#; MAX_CONTAINERS + 5].join(",")
        );
        let r = ImageReview::read_fast(many.as_bytes()).unwrap();
        let c = r.spec.unwrap().containers.unwrap();
        assert_eq!(
            (c.items().len(), c.total()),
            (MAX_CONTAINERS, MAX_CONTAINERS + 5)
        );
    }

    /// Valid JSON the fast reader does not read (nesting past its skip
    /// depth) is denied, not read by serde_json instead and judged.
    #[test]
    fn only_the_fast_reader_is_judged() {
        let body = format!(
            r#"{{"spec":{{"containers":[{{"image":"busybox:1"}}],"x":{}1{}}}}}"#,
            "[".repeat(80),
            "]".repeat(80)
        );
        assert!(ImageReview::read_fast(body.as_bytes()).is_none());
        assert!(serde_json::from_slice::<ImageReview>(body.as_bytes()).is_ok());
        let v = answer(&body);
        assert_eq!(v["status"]["allowed"], false, "{v}");
        assert!(
            v["status"]["reason"]
                .as_str()
                .unwrap()
                .contains("does not read"),
            "{v}"
        );
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
        assert!(review(&PolicySet::default(), b"{not json").is_err());
        assert!(review(&PolicySet::default(), b"").is_err());
    }
}
