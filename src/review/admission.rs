//! AdmissionReview (`admission.k8s.io/v1` and `v1beta1`) for the validating
//! webhook.
//!
//! Replies are built from the request: same apiVersion, same uid. The
//! object is decoded only for kinds that hold pods, and only after the
//! review itself was read, so a bad object still gets a proper reply with
//! the request's uid. The validating endpoint never returns a patch; the
//! mutating one returns one only when there is something to change.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::mutate::{self, MutateConfig, Mutation, Subject};
use crate::policy::{
    ContainerKind, Decision, Effect, ImageVerdict, MAX_LISTED, PolicySet, Request,
};
pub use crate::review::fast::admission::read_fast;
use crate::review::workload::{MAX_CONTAINERS, Object, PodPath, too_many_containers};
use crate::review::{push_annotations, push_json_string};

pub const V1: &str = "admission.k8s.io/v1";
pub const V1BETA1: &str = "admission.k8s.io/v1beta1";
pub const KIND: &str = "AdmissionReview";
/// The versions of kinds with pods: read without a copy, as are their
/// groups and kinds (`kinds::GROUPS`, `kinds::KINDS`).
pub(super) const KNOWN_VERSIONS: &[&str] = &["v1", "v1beta1"];
/// kubectl shows longer warnings, but the apiserver may cut them; keep short.
const WARNING_MAX: usize = 120;

/// The envelope, generic over how the object is read: `Object` by the fast
/// reader ([`read_fast`]), `Box<RawValue>` by serde when that gave up and we
/// need to know why, and for `/mutate`.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
pub struct AdmissionReview<O> {
    pub api_version: Option<Cow<'static, str>>,
    pub kind: Option<Cow<'static, str>>,
    pub request: Option<AdmissionRequest<O>>,
}

#[derive(Deserialize, Debug)]
#[serde(
    rename_all = "camelCase",
    default,
    bound(deserialize = "O: Deserialize<'de>")
)]
pub struct AdmissionRequest<O> {
    /// As read; a [`Review`] moves it into its own `uid`.
    pub uid: Option<String>,
    pub kind: GroupVersionKind,
    pub sub_resource: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub operation: Option<Cow<'static, str>>,
    pub dry_run: Option<bool>,
    pub object: Option<O>,
    pub old_object: Option<O>,
}

impl<O> Default for AdmissionRequest<O> {
    fn default() -> Self {
        AdmissionRequest {
            uid: None,
            kind: GroupVersionKind::default(),
            sub_resource: None,
            name: None,
            namespace: None,
            operation: None,
            dry_run: None,
            object: None,
            old_object: None,
        }
    }
}

/// The object kept undecoded, until we know the kind holds pods.
pub type Raw = Box<RawValue>;

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(default)]
pub struct GroupVersionKind {
    pub group: Cow<'static, str>,
    pub version: Cow<'static, str>,
    pub kind: Cow<'static, str>,
}

/// Why a review could not be answered at all (HTTP 400).
#[derive(Debug, PartialEq, Eq)]
pub enum BadReview {
    NotJson(String),
    Invalid(String),
}

impl std::fmt::Display for BadReview {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadReview::NotJson(e) => write!(f, "request body is not JSON: {e}"),
            BadReview::Invalid(e) => write!(f, "invalid AdmissionReview: {e}"),
        }
    }
}

/// A review we can reply to: its version and uid, and the request.
pub struct Review<O = Raw> {
    pub api_version: &'static str,
    pub uid: String,
    pub request: AdmissionRequest<O>,
    /// The object decoded as [`Object`], once, for whoever asks first
    /// (`/mutate` counts containers and pins digests from it).
    typed: std::cell::OnceCell<Option<Box<Object>>>,
}

impl Review<Raw> {
    /// The object decoded as [`Object`]; `None` if there is none or it is
    /// not of that shape. Decoded at the first call only.
    pub fn typed_object(&self) -> Option<&Object> {
        self.typed
            .get_or_init(|| {
                let raw = self.request.object.as_ref()?;
                serde_json::from_str::<Object>(raw.get()).ok().map(Box::new)
            })
            .as_deref()
    }
}

/// Reads the envelope, keeping the object undecoded: version, kind,
/// request and uid must be there.
pub fn parse(body: &[u8]) -> Result<Review, BadReview> {
    envelope(body)
}

fn envelope(body: &[u8]) -> Result<Review, BadReview> {
    // JSON is UTF-8. Checked up front and for the whole body, because serde
    // does not look inside strings it skips, and both readings of a review
    // must agree on what is JSON.
    let text =
        std::str::from_utf8(body).map_err(|e| BadReview::NotJson(format!("invalid UTF-8: {e}")))?;
    let review: AdmissionReview<Raw> = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            BadReview::Invalid(e.to_string())
        } else {
            BadReview::NotJson(e.to_string())
        }
    })?;
    checked(review)
}

/// The envelope we answer: a version and kind we know, a request, a uid.
pub(super) fn checked<O>(review: AdmissionReview<O>) -> Result<Review<O>, BadReview> {
    let api_version = match review.api_version.as_deref() {
        Some(V1) => V1,
        Some(V1BETA1) => V1BETA1,
        other => {
            return Err(BadReview::Invalid(format!(
                "apiVersion {} is not {V1} or {V1BETA1}",
                other.map_or("(missing)".to_string(), |v| format!("{v:?}"))
            )));
        }
    };
    if review.kind.as_deref() != Some(KIND) {
        return Err(BadReview::Invalid(format!(
            "kind {} is not {KIND}",
            review
                .kind
                .as_deref()
                .map_or("(missing)".to_string(), |k| format!("{k:?}"))
        )));
    }
    let mut request = review
        .request
        .ok_or_else(|| BadReview::Invalid("no request".into()))?;
    // Moved into the review, which answers with it; the request keeps none.
    let uid = request
        .uid
        .take()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| BadReview::Invalid("request has no uid".into()))?;
    Ok(Review {
        api_version,
        uid,
        request,
        typed: std::cell::OnceCell::new(),
    })
}

/// What the log line says about a request: `CREATE Pod ns/name`.
pub struct Summary {
    pub operation: Cow<'static, str>,
    pub kind: Cow<'static, str>,
    pub name: String,
}

impl Summary {
    /// What `Display` writes, in one allocation of the right size (the
    /// formatter would grow a `String` two or three times).
    pub fn text(&self) -> String {
        [&*self.operation, " ", &*self.kind, " ", &self.name].concat()
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.operation, self.kind, self.name)
    }
}

impl<O> AdmissionRequest<O> {
    pub fn summary(&self) -> Summary {
        Summary {
            operation: self.operation.clone().unwrap_or(Cow::Borrowed("?")),
            kind: self.kind.kind.clone(),
            name: self.display_name(),
        }
    }

    /// `namespace/name` for logs (`(unnamed)` before generateName gave one).
    pub fn display_name(&self) -> String {
        let ns = self.namespace.as_deref().unwrap_or("");
        let name = self
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or("(unnamed)");
        if ns.is_empty() {
            return name.to_string();
        }
        [ns, "/", name].concat()
    }

    /// Which pod path to judge, or why the request is not judged.
    fn judged_path(&self) -> Result<PodPath, String> {
        let op = self.operation.as_deref().unwrap_or("");
        if op != "CREATE" && op != "UPDATE" {
            return Err(format!("operation {op:?} is not judged"));
        }
        let gvk = &self.kind;
        PodPath::of(&gvk.group, &gvk.kind)
            .ok_or_else(|| format!("kind {}/{} has no pods", gvk.group, gvk.kind))
    }
}

/// What a validating review asks to have judged, read off the wire.
pub enum Step {
    /// Not judged: another operation or a kind without pods.
    Skip(String),
    /// The object could not be read: denied with code 400.
    Invalid(String),
    /// The pod's images that are new in this request, to decide on.
    Judge(Request),
}

impl Step {
    /// The outcome once the policy has decided (with whatever facts the
    /// request carries by now).
    pub fn decide(self, policy: &PolicySet) -> Outcome {
        match self {
            Step::Skip(why) => Outcome::Skipped(why),
            Step::Invalid(e) => Outcome::Invalid(e),
            Step::Judge(mut request) => {
                let decision = policy.decide_taking(&mut request);
                Outcome::Decided { request, decision }
            }
        }
    }
}

/// What a reply needs of the review it answers, and the log line's words.
pub struct Head {
    pub api_version: &'static str,
    pub uid: String,
    pub summary: Summary,
}

/// A validating review, read: whom to answer and what to judge.
pub struct Validation {
    pub head: Head,
    pub step: Step,
}

/// Reads a validating review's body with the fast reader, the one reader
/// whose requests are judged: one pass decodes the envelope and the object
/// together. A body it does not read is refused (never judged by another
/// reader): serde_json, its oracle in tests, only words the refusal.
pub fn read_validate(body: &[u8]) -> Result<Validation, BadReview> {
    match read_validate_fast(body) {
        Some(read) => Ok(read),
        None => explain_refusal(body),
    }
}

/// Why the fast reader refused a body, in serde_json's words: the same
/// 400 or denial a serde reading gives, and for the few bodies serde_json
/// reads and the fast reader does not, a denial saying so.
fn explain_refusal(body: &[u8]) -> Result<Validation, BadReview> {
    let read = read_validate_serde(body)?;
    let step = match read.step {
        Step::Invalid(e) => Step::Invalid(e),
        Step::Judge(_) | Step::Skip(_) => Step::Invalid(UNREAD.to_string()),
    };
    Ok(Validation {
        head: read.head,
        step,
    })
}

/// The denial of valid JSON the fast reader does not read.
pub const UNREAD: &str = "the review holds JSON this server does not read: an object of an unexpected shape, or values nested deeper than 64 levels inside a field it passes over";

/// [`read_validate`]'s fast reader alone; `None` when it gives up.
pub fn read_validate_fast(body: &[u8]) -> Option<Validation> {
    let review = read_fast(body)?;
    let req = &review.request;
    let step = match req.judged_path() {
        Err(why) => Step::Skip(why),
        Ok(path) => match &req.object {
            None => Step::Invalid(format!(
                "{} request for a {} has no object",
                req.operation.as_deref().unwrap_or(""),
                req.kind.kind
            )),
            Some(object) => {
                let old = req
                    .old_object
                    .as_deref()
                    .filter(|_| req.operation.as_deref() == Some("UPDATE"));
                pod_step(req, path, object, old)
            }
        },
    };
    Some(Validation {
        head: review.head(),
        step,
    })
}

/// [`read_validate`]'s serde_json reading alone (the fast reader's oracle).
pub fn read_validate_serde(body: &[u8]) -> Result<Validation, BadReview> {
    let review = parse(body)?;
    Ok(Validation {
        head: review.head(),
        step: review.request.validate_step(),
    })
}

impl<O> Review<O> {
    fn head(&self) -> Head {
        Head {
            api_version: self.api_version,
            uid: self.uid.clone(),
            summary: self.request.summary(),
        }
    }
}

impl AdmissionRequest<Raw> {
    /// What this request asks to have judged (the object decoded now).
    fn validate_step(&self) -> Step {
        match self.pod_objects() {
            Ok(PodObjects::Skip(why)) => Step::Skip(why),
            Ok(PodObjects::Pods { path, object, old }) => {
                pod_step(self, path, &object, old.as_deref())
            }
            Err(e) => Step::Invalid(e),
        }
    }
}

/// What happened, for the log line and metrics.
#[derive(Debug)]
pub enum Outcome {
    /// Not judged: another operation or a kind without pods.
    Skipped(String),
    /// `request.images` were moved into `decision.images`.
    Decided {
        request: Request,
        decision: Decision,
    },
    /// The object could not be read: denied with code 400.
    Invalid(String),
}

/// The pod inside a request's object (and old object) decoded, or why not.
pub enum PodObjects {
    Skip(String),
    Pods {
        path: PodPath,
        object: Box<Object>,
        old: Option<Box<Object>>,
    },
}

impl AdmissionRequest<Raw> {
    /// Decodes object and oldObject if this request is about pods.
    pub fn pod_objects(&self) -> Result<PodObjects, String> {
        let path = match self.judged_path() {
            Ok(p) => p,
            Err(why) => return Ok(PodObjects::Skip(why)),
        };
        let op = self.operation.as_deref().unwrap_or("");
        let decode = |raw: &RawValue, what: &str| {
            serde_json::from_str::<Object>(raw.get())
                .map(Box::new)
                .map_err(|e| format!("could not read the {} {what}: {e}", self.kind.kind))
        };
        let object = match &self.object {
            Some(raw) => decode(raw, "object")?,
            None => {
                return Err(format!(
                    "{op} request for a {} has no object",
                    self.kind.kind
                ));
            }
        };
        let old = match (op, &self.old_object) {
            ("UPDATE", Some(raw)) => Some(decode(raw, "oldObject")?),
            _ => None,
        };
        Ok(PodObjects::Pods { path, object, old })
    }
}

/// The reply to a validating review, from what was decided.
pub fn validate_reply(head: &Head, outcome: &Outcome) -> Vec<u8> {
    let response = match outcome {
        Outcome::Skipped(_) => Response::allow(&head.uid),
        Outcome::Invalid(e) => Response::deny(&head.uid, 400, "BadRequest", e.clone()),
        Outcome::Decided { decision, .. } => Response::from_decision(&head.uid, decision),
    };
    reply_bytes(head.api_version, response)
}

/// The images of a pod (or template) that are new in this request, as a
/// request to decide on.
fn pod_step<O>(
    req: &AdmissionRequest<O>,
    path: PodPath,
    object: &Object,
    old: Option<&Object>,
) -> Step {
    let Some(pod) = object.pod(path) else {
        return Step::Skip(format!("{} has no pod template", req.kind.kind));
    };
    let mut images = match pod.images() {
        Ok(images) => images,
        Err(e) => return Step::Invalid(e),
    };
    if let Some(old_pod) = old.and_then(|o| o.pod(path)) {
        // On UPDATE a container keeps its verdict only while it keeps its
        // image: the same list, the same name, the same image before. So an
        // old pod can still be labelled after the policy changed, but an
        // image it holds cannot be moved into another container (one with a
        // hostPath mount) or a new ephemeral container. An old object over
        // the cap vouches for nothing.
        let before: HashSet<(ContainerKind, String, String)> = old_pod
            .images()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| {
                let c = i.container?;
                Some((c.kind, c.name, i.image))
            })
            .collect();
        images.retain(|i| {
            let key = i
                .container
                .as_ref()
                .map(|c| (c.kind, c.name.clone(), i.image.clone()));
            key.is_none_or(|k| !before.contains(&k))
        });
    }
    Step::Judge(Request {
        namespace: req
            .namespace
            .clone()
            .or_else(|| pod.metadata.namespace.clone()),
        annotations: pod.metadata.annotations.clone(),
        images,
        signatures: Default::default(),
        skip_signatures: false,
    })
}

/// A denial of the review by the admission step (a lookup that failed),
/// in the review's version, with its uid.
pub fn refusal(review: &Review, message: &str) -> Vec<u8> {
    reply_bytes(
        review.api_version,
        Response::deny(
            &review.uid,
            403,
            "Forbidden",
            format!("image policy: {message}"),
        ),
    )
}

/// What the mutating endpoint did, for the log.
#[derive(Debug)]
pub enum MutateOutcome {
    Patched(Mutation),
    /// Nothing to change (or not looked at: the reason is inside).
    Unchanged(Mutation),
    /// The object could not be read; allowed unpatched (validation decides).
    Unreadable(String),
    /// The policy refuses the images as written: denied before rewriting
    /// (`request.images` were moved into `decision.images`).
    Denied {
        request: Request,
        decision: Decision,
    },
}

/// Answers a mutating review: allowed, with a JSON Patch only when there is
/// something to change (never `patch: null`).
pub fn mutate(
    policy: &PolicySet,
    cfg: &MutateConfig,
    review: &Review,
    pins: Option<&BTreeMap<String, String>>,
) -> (Vec<u8>, MutateOutcome) {
    let req = &review.request;
    // Rules are written about the images users write: judge those before
    // any rewrite, or a rule naming the original registry could never
    // match the rewritten name /validate sees.
    if cfg.rewrites()
        && let Ok(PodObjects::Pods { path, object, old }) = req.pod_objects()
        && let Step::Judge(mut request) = pod_step(req, path, &object, old.as_deref())
    {
        // Signatures are /validate's: they are not looked at here.
        request.skip_signatures = true;
        let decision = policy.decide_taking(&mut request);
        if !decision.allowed {
            let response = Response::from_decision(&review.uid, &decision);
            let reply = reply_bytes(review.api_version, response);
            return (reply, MutateOutcome::Denied { request, decision });
        }
    }
    let decode = |raw: Option<&Raw>| -> Result<Option<serde_json::Value>, String> {
        raw.map(|r| {
            serde_json::from_str(r.get()).map_err(|e| format!("could not read the object: {e}"))
        })
        .transpose()
    };
    // The generic decoding below costs several times the object's size and
    // patching walks every container: count them first, cheaply (the typed
    // decoder keeps at most MAX_CONTAINERS).
    let too_many = PodPath::of(&req.kind.group, &req.kind.kind).and_then(|path| {
        let n = review.typed_object()?.pod(path)?.container_count();
        (n > MAX_CONTAINERS).then(|| too_many_containers(n))
    });
    let decoded = match too_many {
        Some(e) => Err(e),
        None => decode(req.object.as_ref()).and_then(|o| Ok((o, decode(req.old_object.as_ref())?))),
    };
    let outcome = match decoded {
        Err(e) => MutateOutcome::Unreadable(e),
        Ok((object, old)) => {
            let null = serde_json::Value::Null;
            let m = mutate::mutate(
                cfg,
                &Subject {
                    group: &req.kind.group,
                    kind: &req.kind.kind,
                    sub_resource: req.sub_resource.as_deref(),
                    operation: req.operation.as_deref().unwrap_or(""),
                    namespace: req.namespace.as_deref(),
                    object: object.as_ref().unwrap_or(&null),
                    old_object: old.as_ref(),
                    pins,
                },
            );
            if m.patch.is_empty() {
                MutateOutcome::Unchanged(m)
            } else {
                MutateOutcome::Patched(m)
            }
        }
    };
    let response = match &outcome {
        MutateOutcome::Patched(m) => {
            // Serialising plain patch operations cannot fail.
            let json = serde_json::to_vec(&m.patch).unwrap_or_default();
            Response::allow(&review.uid)
                .with_patch(base64::engine::general_purpose::STANDARD.encode(&json))
        }
        _ => Response::allow(&review.uid),
    };
    (reply_bytes(review.api_version, response), outcome)
}

/// `response` of an AdmissionReview; also used by the mutating endpoint.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Response<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    /// Base64 of the JSON Patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    audit_annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Debug)]
struct Status {
    code: u16,
    reason: &'static str,
    message: String,
}

impl<'a> Response<'a> {
    pub fn allow(uid: &'a str) -> Self {
        Response {
            uid,
            allowed: true,
            status: None,
            patch_type: None,
            patch: None,
            warnings: Vec::new(),
            audit_annotations: BTreeMap::new(),
        }
    }

    /// A deny always carries a message: without one the apiserver answers
    /// "denied the request without explanation".
    pub fn deny(uid: &'a str, code: u16, reason: &'static str, message: String) -> Self {
        Response {
            allowed: false,
            status: Some(Status {
                code,
                reason,
                message,
            }),
            ..Response::allow(uid)
        }
    }

    pub fn from_decision(uid: &'a str, d: &Decision) -> Self {
        let mut r = if d.allowed {
            Response::allow(uid)
        } else {
            Response::deny(
                uid,
                403,
                "Forbidden",
                format!("image policy: {}", d.reason()),
            )
        };
        r.warnings = short_warnings(d);
        r.audit_annotations = d.audit_annotations();
        r
    }

    /// Adds a JSON Patch (already base64-encoded).
    pub fn with_patch(mut self, base64_patch: String) -> Self {
        self.patch_type = Some("JSONPatch");
        self.patch = Some(base64_patch);
        self
    }
}

/// Serialises a reply in the request's apiVersion: written out directly
/// into one buffer sized for it, the bytes serde_json writes for the
/// envelope around the `Serialize` of [`Response`] (a test holds them
/// equal).
pub fn reply_bytes(api_version: &str, response: Response<'_>) -> Vec<u8> {
    let r = &response;
    let status = r.status.as_ref().map_or(0, |s| s.message.len() + 64);
    let warnings: usize = r.warnings.iter().map(|w| w.len() + 4).sum();
    let annotations: usize = r
        .audit_annotations
        .iter()
        .map(|(k, v)| k.len() + v.len() + 6)
        .sum();
    let patch = r.patch.as_ref().map_or(0, |p| p.len() + 40);
    let mut out = Vec::with_capacity(
        96 + api_version.len() + r.uid.len() + status + warnings + annotations + patch,
    );
    out.extend_from_slice(b"{\"apiVersion\":");
    push_json_string(&mut out, api_version);
    out.extend_from_slice(b",\"kind\":");
    push_json_string(&mut out, KIND);
    out.extend_from_slice(b",\"response\":{\"uid\":");
    push_json_string(&mut out, r.uid);
    out.extend_from_slice(if r.allowed {
        b",\"allowed\":true"
    } else {
        b",\"allowed\":false"
    });
    if let Some(s) = &r.status {
        // Vec's io::Write cannot fail.
        let _ = write!(out, ",\"status\":{{\"code\":{},\"reason\":", s.code);
        push_json_string(&mut out, s.reason);
        out.extend_from_slice(b",\"message\":");
        push_json_string(&mut out, &s.message);
        out.push(b'}');
    }
    if let Some(t) = r.patch_type {
        out.extend_from_slice(b",\"patchType\":");
        push_json_string(&mut out, t);
    }
    if let Some(p) = &r.patch {
        out.extend_from_slice(b",\"patch\":");
        push_json_string(&mut out, p);
    }
    if !r.warnings.is_empty() {
        out.extend_from_slice(b",\"warnings\":[");
        for (n, w) in r.warnings.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            push_json_string(&mut out, w);
        }
        out.push(b']');
    }
    push_annotations(&mut out, &r.audit_annotations);
    out.extend_from_slice(b"}}");
    out
}

/// Warnings kubectl shows: one per violation that did not deny (a policy
/// in warn mode, or bypassed by break-glass), each short and naming its
/// policy; shown with a denial too.
fn short_warnings(d: &Decision) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(key) = &d.break_glass {
        out.push(clip(format!(
            "image policy bypassed by break-glass annotation {key}"
        )));
    }
    let mut all = d.violations().filter(|(_, x)| x.effect != Effect::Denies);
    for (v, violation) in all.by_ref().take(MAX_LISTED) {
        let why = if violation.effect == Effect::BrokenGlass {
            "break-glass"
        } else {
            "warn mode"
        };
        out.push(clip(format!(
            "image policy ({why}, policy {:?}): {}: {}",
            violation.policy,
            who(v),
            violation.rule.summary()
        )));
    }
    let more = all.count();
    if more > 0 {
        out.push(format!("image policy: and {more} more violations"));
    }
    out
}

fn who(v: &ImageVerdict) -> String {
    match &v.container {
        Some(c) => format!("{c} {:?}", v.image),
        None => format!("{:?}", v.image),
    }
}

/// Cuts a warning to [`WARNING_MAX`] bytes at a character boundary.
fn clip(mut s: String) -> String {
    if s.len() > WARNING_MAX {
        let mut end = WARNING_MAX - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn summary_text_is_its_display() {
        for (op, ns, name, shown) in [
            (Some("CREATE"), Some("shop"), Some("web"), "shop/web"),
            (None, None, Some(""), "(unnamed)"),
            (Some("UPDATE"), Some(""), None, "(unnamed)"),
            (Some("CONNECT"), Some("ns"), Some("a/b c"), "ns/a/b c"),
        ] {
            let req = AdmissionRequest::<Raw> {
                operation: op.map(|o| Cow::Owned(o.to_string())),
                namespace: ns.map(str::to_string),
                name: name.map(str::to_string),
                kind: GroupVersionKind {
                    kind: Cow::Borrowed("Pod"),
                    ..GroupVersionKind::default()
                },
                ..AdmissionRequest::default()
            };
            let s = req.summary();
            assert_eq!(s.text(), s.to_string());
            assert_eq!(req.display_name(), shown);
        }
        let req = AdmissionRequest::<Raw> {
            namespace: Some("shop".into()),
            ..AdmissionRequest::default()
        };
        assert_eq!(req.summary().text(), "?  shop/(unnamed)");
    }

    /// The reply as serde_json writes it: what `reply_bytes` must write.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Reply<'a> {
        api_version: &'a str,
        kind: &'static str,
        response: Response<'a>,
    }

    /// Every part of a reply, with every character class in its strings,
    /// is written byte for byte as serde_json writes it.
    #[test]
    fn reply_is_written_as_serde_json_writes_it() {
        let odd = "quote \" back \\ tab \t nl \n ctl \u{1} \u{1f} del \u{7f} é 😀 </script>";
        let responses = || {
            let mut noted = Response::allow("uid-2").with_patch("W3sib3AiOiJ=".to_string());
            noted.warnings = vec![odd.to_string(), "second".to_string()];
            noted.audit_annotations = [
                ("image-policy.k8s.io/a".to_string(), odd.to_string()),
                ("b".to_string(), String::new()),
            ]
            .into();
            let mut denied = Response::deny("uid-3", 403, "Forbidden", odd.to_string());
            denied.warnings = vec![String::new()];
            vec![
                Response::allow("705ab4f5-6393-11e8-b7cc-42010a800002"),
                Response::allow(""),
                noted,
                denied,
                Response::deny(odd, 400, "BadRequest", String::new()),
            ]
        };
        for version in [V1, V1BETA1] {
            for (mine, theirs) in responses().into_iter().zip(responses()) {
                let want = serde_json::to_vec(&Reply {
                    api_version: version,
                    kind: KIND,
                    response: theirs,
                })
                .unwrap();
                let got = reply_bytes(version, mine);
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want)
                );
            }
        }
    }

    use super::*;
    use crate::policy::Mode;
    use serde_json::{Value, json};

    /// read → decide (nothing gathered) → reply, as the admission step.
    fn validate_body(policy: &PolicySet, body: &[u8]) -> Result<(Vec<u8>, Outcome), BadReview> {
        let read = read_validate(body)?;
        let outcome = read.step.decide(policy);
        Ok((validate_reply(&read.head, &outcome), outcome))
    }

    fn run(policy: &PolicySet, review: Value) -> Value {
        let body = serde_json::to_vec(&review).unwrap();
        let read = read_validate_serde(&body).unwrap();
        let outcome = read.step.decide(policy);
        serde_json::from_slice(&validate_reply(&read.head, &outcome)).unwrap()
    }

    fn pod_review(op: &str, images: &[&str], old: Option<&[&str]>) -> Value {
        let pod = |imgs: &[&str]| json!({"metadata": {"name": "p"}, "spec": {"containers": imgs.iter().enumerate().map(|(i, im)| json!({"name": format!("c{i}"), "image": im})).collect::<Vec<_>>()}});
        json!({"apiVersion": V1, "kind": KIND, "request": {
            "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "default", "operation": op,
            "object": pod(images), "oldObject": old.map(pod)
        }})
    }

    /// Every request body of the golden fixtures and the bench.
    fn fixture_bodies() -> Vec<(String, Vec<u8>)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut out = Vec::new();
        for dir in ["admission", "mutate", "bench"] {
            for e in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = e.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                if name.ends_with(".request.json")
                    || (dir == "bench" && name.starts_with("admission"))
                {
                    out.push((format!("{dir}/{name}"), std::fs::read(&path).unwrap()));
                }
            }
        }
        assert!(out.len() > 20, "{}", out.len());
        out
    }

    #[test]
    fn fast_reader_reads_every_well_formed_fixture_as_serde_does() {
        let mut fast = 0;
        for (name, body) in fixture_bodies() {
            crate::fuzzing::fast_reading_agrees(&body);
            // Whatever serde reads whole, the fast reader reads too (it
            // gives up only on the odd or the broken).
            let serde = serde_json::from_slice::<AdmissionReview<Object>>(&body)
                .ok()
                .is_some_and(|r| checked(r).is_ok());
            if serde {
                assert!(read_fast(&body).is_some(), "{name}");
                fast += 1;
            } else if !serde {
                assert!(read_fast(&body).is_none(), "{name}");
            }
        }
        assert!(fast > 20, "{fast}");
    }

    /// Same answers on bodies near the valid ones: each fixture with bytes
    /// replaced, removed, doubled or swapped for JSON's special characters.
    #[test]
    fn fast_reader_agrees_with_serde_on_mutated_reviews() {
        let bodies: Vec<Vec<u8>> = fixture_bodies().into_iter().map(|(_, b)| b).collect();
        crate::fuzzing::readers_agree_on_mutations(
            &bodies,
            crate::fuzzing::fast_reading_agrees,
            |body| read_fast(body).is_some(),
        );
    }

    /// The fast reader's review is moved from reader to judge a few times:
    /// its objects live on the heap, so each move copies a few hundred
    /// bytes, not the 1.2 KB two inline objects took.
    #[test]
    fn a_fast_review_is_small_to_move() {
        let size = std::mem::size_of::<Review<Box<Object>>>();
        assert!(size < 2 * std::mem::size_of::<Object>(), "{size} bytes");
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/bench/admission-v1-allowed.json"
        ))
        .expect("bench fixture");
        let review = read_fast(&body).expect("read by the fast reader");
        assert!(review.request.object.is_some_and(|o| o.spec.is_some()));
    }

    /// Bodies where a reader could go wrong: both readings agree, and the
    /// fast one reads those it should.
    #[test]
    fn fast_reader_edge_cases() {
        let pod = |object: &str| {
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","kind":{{"group":"","version":"v1","kind":"Pod"}},"operation":"CREATE","object":{object}}}}}"#
            )
        };
        // (object, read by the fast reader)
        let cases: &[(&str, bool)] = &[
            (r#"{"spec":{"containers":[{"image":"a:1"}]}}"#, true),
            (r#"{"spec":{"containers":[{"im\u0061ge":"a:1"}]}}"#, true), // escaped key
            (r#"{"spec":{"containers":[{"image":"a\u003a1"}]}}"#, true), // escaped value
            (
                r#"{"spec":{"containers":[{"image":"a:1","image":"b:1"}]}}"#,
                false,
            ), // duplicate
            (
                r#"{"spec":{"containers":[{"image":"a:1"}]},"spec":{}}"#,
                false,
            ),
            (r#"{"spec":{"containers":[{"image":5}]}}"#, false),
            (r#"{"spec":{"containers":[null]}}"#, false),
            (
                r#"{"spec":{"containers":null,"volumes":null},"metadata":null}"#,
                true,
            ),
            (
                r#"{"spec":{"containers":[{"image":"a:1","env":[{"x":"\ud800"}]}]}}"#,
                true,
            ),
            (
                r#"{"spec":{"containers":[{"image":"a:1","x":"a\u0001"}]}}"#,
                true,
            ),
            (
                r#"{"spec":{"containers":[{"image":"a:1","x":"tab	raw"}]}}"#,
                false,
            ),
            (r#"{"spec":{"containers":[{"image":"a:1","x":01}]}}"#, false),
            (
                r#"{"spec":{"containers":[{"image":"a:1","x":[1,]}]}}"#,
                false,
            ),
            (r#"{"spec":{"containers":[{"image":"a:1"}],}}"#, false),
            (
                r#"{"metadata":{"annotations":{"a.image-policy.k8s.io/b":"break-glass","c":"d"}}}"#,
                true,
            ),
            (
                r#"{"metadata":{"annotations":{"a.image-policy.k8s.io/b":null}}}"#,
                false,
            ),
            (r#"{"metadata":{"annotations":{"other":7}}}"#, false),
            (r#"{"metadata":{"annotations":{"k":"v","k":"w"}}}"#, true), // last wins, as in Go
            (
                r#"{"spec":{"containers":[{"image":"\ud83d\ude00"}]}}"#,
                true,
            ),
            (r#"{"spec":{"containers":[{"image":"\ud83d"}]}}"#, false), // serde refuses it too
        ];
        for (object, fast) in cases {
            let body = pod(object);
            crate::fuzzing::fast_reading_agrees(body.as_bytes());
            assert_eq!(read_fast(body.as_bytes()).is_some(), *fast, "{object}");
        }
        let body = pod(r#"{"spec":{"containers":[{"image":"a:1"}]}}"#);
        for bad in [
            format!("{body}x"),
            format!("\u{feff}{body}"),
            body.replace("\"u\"", "\"\""),
        ] {
            assert!(read_fast(bad.as_bytes()).is_none(), "{bad}");
        }
        let deep = pod(&format!(
            "{{\"x\":{}1{}}}",
            "[".repeat(120),
            "]".repeat(120)
        ));
        assert!(read_fast(deep.as_bytes()).is_none());
        crate::fuzzing::fast_reading_agrees(deep.as_bytes());
        // Deeper than one skip goes (64) but within serde_json's 128: the
        // fast reader gives up, and although serde_json reads it, it is
        // not judged by that other reader: it is denied, saying why.
        let deep = pod(&format!(
            "{{\"spec\":{{\"containers\":[{{\"image\":\"busybox:1\"}}]}},\"x\":{}1{}}}",
            "[".repeat(80),
            "]".repeat(80)
        ));
        assert!(read_fast(deep.as_bytes()).is_none());
        assert!(parse(deep.as_bytes()).is_ok());
        let (reply, outcome) = validate_body(&PolicySet::default(), deep.as_bytes()).unwrap();
        assert!(matches!(outcome, Outcome::Invalid(ref e) if e == UNREAD));
        let reply = String::from_utf8_lossy(&reply);
        assert!(
            reply.contains("\"allowed\":false") && reply.contains("does not read"),
            "{reply}"
        );
    }

    #[test]
    fn deny_names_container_image_rule_and_fix() {
        let v = run(
            &PolicySet::default(),
            pod_review("CREATE", &["nginx:1", "busybox"], None),
        );
        assert_eq!(v["apiVersion"], V1);
        assert_eq!(v["kind"], KIND);
        let r = &v["response"];
        assert_eq!(r["uid"], "u-1");
        assert_eq!(r["allowed"], false);
        assert_eq!(r["status"]["code"], 403);
        let msg = r["status"]["message"].as_str().unwrap();
        assert!(
            msg.starts_with(
                "image policy: policy \"flags\": container \"c1\" image \"busybox\" has no tag"
            ),
            "{msg}"
        );
        assert!(msg.contains("pin a version tag or a digest"));
        assert!(r.get("patch").is_none() && r.get("patchType").is_none());
    }

    #[test]
    fn update_judges_only_new_images() {
        let p = PolicySet::default();
        let v = run(&p, pod_review("UPDATE", &["busybox"], Some(&["busybox"])));
        assert_eq!(v["response"]["allowed"], true, "{v}");
        let v = run(
            &p,
            pod_review("UPDATE", &["busybox", "nginx"], Some(&["busybox"])),
        );
        assert_eq!(v["response"]["allowed"], false);
        assert!(
            !v["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("busybox")
        );
    }

    #[test]
    fn delete_and_other_kinds_are_not_judged() {
        let mut r = pod_review("DELETE", &["busybox"], None);
        r["request"]["object"] = Value::Null;
        assert_eq!(run(&PolicySet::default(), r)["response"]["allowed"], true);
        let mut r = pod_review("CREATE", &["busybox"], None);
        r["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "ConfigMap"});
        assert_eq!(run(&PolicySet::default(), r)["response"]["allowed"], true);
    }

    #[test]
    fn v1beta1_is_answered_in_v1beta1() {
        let mut r = pod_review("CREATE", &["nginx:1"], None);
        r["apiVersion"] = json!(V1BETA1);
        let v = run(&PolicySet::default(), r);
        assert_eq!(v["apiVersion"], V1BETA1);
        assert_eq!(v["response"]["allowed"], true);
    }

    #[test]
    fn unreadable_object_is_a_400_deny_with_the_uid() {
        let mut r = pod_review("CREATE", &["nginx:1"], None);
        r["request"]["object"]["spec"]["containers"] = json!("nope");
        let v = run(&PolicySet::default(), r);
        assert_eq!(v["response"]["uid"], "u-1");
        assert_eq!(v["response"]["allowed"], false);
        assert_eq!(v["response"]["status"]["code"], 400);
        assert!(
            v["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .starts_with("could not read the Pod object")
        );
    }

    #[test]
    fn envelope_errors() {
        let cases: &[(&str, &str)] = &[
            ("{", "not JSON"),
            ("[]", "invalid AdmissionReview"),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
                "no request",
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#,
                "no uid",
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":""}}"#,
                "no uid",
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview","request":{"uid":"x"}}"#,
                "apiVersion",
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"ImageReview","request":{"uid":"x"}}"#,
                "kind",
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":5}}"#,
                "invalid type",
            ),
        ];
        for (body, want) in cases {
            let e = parse(body.as_bytes()).err().unwrap().to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn warn_mode_warnings_are_short() {
        let p: PolicySet = crate::policy::Policy {
            mode: Mode::Warn,
            ..Default::default()
        }
        .into();
        let long = format!("registry.example.com/{}/app", "a".repeat(150));
        let v = run(&p, pod_review("CREATE", &[&long], None));
        assert_eq!(v["response"]["allowed"], true);
        let w = v["response"]["warnings"][0].as_str().unwrap();
        assert!(
            w.len() <= WARNING_MAX
                && w.starts_with("image policy (warn mode, policy \"flags\"): container \"c0\" "),
            "{w}"
        );
        assert_eq!(
            v["response"]["auditAnnotations"]["warn-images"]
                .as_str()
                .unwrap(),
            format!("{long}:latest")
        );
    }
}
