//! `image-bouncer check`: the policy engine offline, for CI pipelines.
//!
//! Images come from arguments and from documents (`-f`), JSON or YAML
//! (several in one stream or file, `---`): a Pod, any workload with a pod
//! template, a `List` (what `kubectl get ... -o json` prints), an
//! AdmissionReview or an ImageReview. Each pod is judged with its own
//! namespace and annotations, exactly as the webhook would, and every
//! finding names its object and container, with a summary: an audit of
//! what runs. `--policy FILE` alone checks the policy file.

mod policyreport;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;
use crate::admit::{Admission, CHECK_LOOKUP_BUDGET, Hold};
use crate::cli::CheckArgs;
use crate::config::Rules;
use crate::config::type_name;
use crate::files::read_limited;
use crate::mutate::{self, PatchOp, Subject};
use crate::policy::{Decision, Effect, ImageInput, PolicySet, Request};
use crate::review::admission::{self, PodObjects};
use crate::review::imagepolicy;
use crate::review::workload::{Object, PodPath};

/// Same cap as an HTTP request body: no manifest is bigger.
const DOCUMENT_MAX: u64 = 7 * 1024 * 1024;
/// `List` inside `List` deeper than this is not a real manifest.
const NESTING_MAX: usize = 16;

/// The `--json` output shape.
#[derive(Serialize, Debug, PartialEq)]
pub struct Report {
    pub allowed: bool,
    pub images: Vec<ImageReport>,
    pub summary: Summary,
}

/// Counts over a whole run.
#[derive(Serialize, Debug, PartialEq, Default)]
pub struct Summary {
    /// Pods and workloads (and reviews) read from documents.
    pub objects: usize,
    /// Container images judged.
    pub containers: usize,
    pub denied: usize,
    /// Allowed, but with findings (warn mode, break-glass, exemptions).
    pub warned: usize,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct ImageReport {
    /// `Deployment team-a/web`, when the image came from a document.
    pub object: Option<String>,
    /// `container "app"`, when known.
    pub container: Option<String>,
    pub image: String,
    pub normalized: Option<String>,
    pub allowed: bool,
    pub reasons: Vec<String>,
    pub warnings: Vec<String>,
    /// With `--resolve`: the digest the registry serves now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// With `--resolve`: why the registry could not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolve_error: Option<String>,
    /// Under a `verifyImages` entry: what verification found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureReport>,
}

/// What signature verification found for one image.
#[derive(Serialize, Debug, PartialEq)]
pub struct SignatureReport {
    /// `verifyImages[<i>]`.
    pub rule: String,
    pub verified: bool,
    /// The digest that was verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The key or identity that signed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The trusted signing time (RFC 3339) and where it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_index: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Each attestation item met, with the statement that met it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attestations: Vec<AttestationReport>,
}

/// An attestation item and the statement that met it.
#[derive(Serialize, Debug, PartialEq)]
pub struct AttestationReport {
    /// `verifyImages[<i>].attestations[<j>]`.
    pub item: String,
    pub predicate_type: String,
    pub signer: String,
    /// sha256 of the envelope (the bundle, or the `.att` layer).
    pub envelope: String,
    pub found_in: String,
}

/// What `check` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Text,
    Json,
    PolicyReport,
}

impl Output {
    fn of(args: &CheckArgs) -> Result<Output, Error> {
        match (args.output.as_deref(), args.json) {
            (None, false) | (Some("text"), false) => Ok(Output::Text),
            (None, true) | (Some("json"), _) => Ok(Output::Json),
            (Some("policyreport"), false) => Ok(Output::PolicyReport),
            (Some(o @ ("text" | "policyreport")), true) => Err(Error::Usage(format!(
                "--json and --output {o} ask for two outputs; give one"
            ))),
            (Some(other), _) => Err(Error::Usage(format!(
                "--output {other:?}: expected text, json or policyreport"
            ))),
        }
    }
}

/// Runs the command; `Ok(true)` when every image is allowed.
pub fn run(args: &CheckArgs) -> Result<bool, Error> {
    let output = Output::of(args)?;
    if args.mutate {
        if output == Output::PolicyReport {
            return Err(Error::Usage(
                "--output policyreport reports judgements, not the patches of --mutate".into(),
            ));
        }
        return print_patches(args);
    }
    // The admission step the server runs, for these rules.
    let admission = Admission::new(args.policy_flags().load_rules()?);
    let policy = &admission.rules().policy;
    if args.images.is_empty() && args.file.is_empty() {
        if let Some(file) = &args.policy {
            // `check --policy FILE`: the file alone, as a linter.
            match policy.policies.as_slice() {
                [one] => emit(&format!("{file}: a valid policy ({})\n", one.summary())),
                all => {
                    let mut text = format!("{file}: a valid set of {} policies\n", all.len());
                    for p in all {
                        text.push_str(&format!("  {}: {}\n", p.name, p.summary()));
                    }
                    emit(&text);
                }
            }
            return Ok(true);
        }
        return Err(Error::Usage(
            "give images as arguments, documents with -f, or only --policy FILE to check the file (see --help)".into(),
        ));
    }
    let mut requests = Vec::new();
    let texts = read_documents(args)?;
    if !args.images.is_empty() {
        requests.push((
            None,
            Request {
                namespace: args.namespace.clone(),
                annotations: BTreeMap::new(),
                images: args.images.iter().map(ImageInput::bare).collect(),
                ..Request::default()
            },
        ));
    }
    for (name, text) in &texts {
        requests.extend(
            labeled_requests(text, args.namespace.as_deref())
                .map_err(|e| Error::Input(format!("{name}: {e}")))?,
        );
    }
    if requests.iter().all(|(_, r)| r.images.is_empty()) {
        log::warn!("no container images found in the given documents");
    }
    warn_unscoped(policy, &requests);
    admission.gather_for_check(&mut requests);
    // The reports judge per policy themselves: the flat report below (and
    // its --resolve lookups) would be made for nothing.
    if output == Output::PolicyReport {
        let list = policyreport::reports(policy, &requests, crate::time::unix_now());
        let text = serde_json::to_string_pretty(&list)
            .map_err(|e| Error::Input(format!("cannot encode the reports: {e}")))?;
        emit(&format!("{text}\n"));
        // The reports carry the failures; a pipe into kubectl goes on.
        return Ok(true);
    }
    let mut report = report(policy, &requests);
    // Per image, the fact that decides: the first entry it fails, else
    // the first it passes.
    let facts: BTreeMap<&str, &crate::policy::SignatureFact> = requests
        .iter()
        .flat_map(|(_, r)| r.signatures.iter())
        .filter_map(|(k, v)| {
            v.iter()
                .find(|f| f.outcome.is_err())
                .or_else(|| v.first())
                .map(|f| (k.as_str(), f))
        })
        .collect();
    for i in &mut report.images {
        if let Some(f) = facts.get(i.image.as_str()) {
            let rule = policy
                .requirement(f.rule)
                .map(|(name, v)| format!("policy {name:?} {}", v.label))
                .unwrap_or_default();
            i.signature = Some(match &f.outcome {
                Ok(s) => SignatureReport {
                    rule,
                    verified: !s.digest.is_empty(),
                    digest: Some(s.digest.clone()).filter(|d| !d.is_empty()),
                    signer: Some(s.by.clone()),
                    signed_at: s.time.map(crate::time::rfc3339),
                    time_source: s.time_source.clone(),
                    log_index: s.log_index,
                    error: None,
                    attestations: s
                        .attestations
                        .iter()
                        .map(|a| AttestationReport {
                            item: a.item.clone(),
                            predicate_type: a.predicate_type.clone(),
                            signer: a.signer.clone(),
                            envelope: a.envelope.clone(),
                            found_in: a.found_in.clone(),
                        })
                        .collect(),
                },
                Err(e) => SignatureReport {
                    rule,
                    verified: false,
                    digest: None,
                    signer: None,
                    signed_at: None,
                    time_source: None,
                    log_index: None,
                    error: Some(e.clone()),
                    attestations: Vec::new(),
                },
            });
        }
    }
    if args.resolve {
        resolve(&admission, &mut report);
    }
    if output == Output::Json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::Input(format!("cannot encode the report: {e}")))?;
        emit(&format!("{text}\n"));
    } else {
        emit(&render_text(&report));
    }
    Ok(report.allowed)
}

/// Reads every `-f` file (or stdin) as text, with a name for messages.
/// An input with nothing in it is an error: in `kubectl get ... | check
/// -f -` it means the command before the pipe failed, and a clean report
/// of nothing would hide that.
fn read_documents(args: &CheckArgs) -> Result<Vec<(String, String)>, Error> {
    let out = read_texts(args)?;
    for (name, text) in &out {
        let content = text
            .lines()
            .any(|l| !matches!(l.trim(), "" | "---" | "...") && !l.trim_start().starts_with('#'));
        if !content {
            return Err(Error::Input(format!(
                "{name}: no document was read (the input is empty): did the command before the pipe fail? Run pipelines with `set -o pipefail`"
            )));
        }
    }
    Ok(out)
}

fn read_texts(args: &CheckArgs) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    for f in &args.file {
        if f == "-" {
            let mut text = String::new();
            std::io::stdin()
                .take(DOCUMENT_MAX + 1)
                .read_to_string(&mut text)
                .map_err(|e| Error::Input(format!("stdin: cannot read: {e}")))?;
            if text.len() as u64 > DOCUMENT_MAX {
                return Err(Error::Input(format!(
                    "stdin: larger than {DOCUMENT_MAX} bytes"
                )));
            }
            out.push(("stdin".to_string(), text));
        } else {
            let text = read_limited(Path::new(f), DOCUMENT_MAX).map_err(Error::Input)?;
            out.push((f.clone(), text));
        }
    }
    Ok(out)
}

/// `check --mutate`: one JSON Patch per object, one per line.
fn print_patches(args: &CheckArgs) -> Result<bool, Error> {
    if args.file.is_empty() || !args.images.is_empty() {
        return Err(Error::Usage(
            "--mutate reads objects with -f and takes no image arguments".into(),
        ));
    }
    let admission = Admission::new(args.policy_flags().load_rules()?);
    let rules = admission.rules();
    // --resolve: digests pinned as /mutate pins them, by the same step.
    let pinning = args.resolve.then_some(&admission);
    let mut mutated = Vec::new();
    for (name, text) in read_documents(args)? {
        let patches = patched_from_text(rules, &text, args.namespace.as_deref(), pinning)
            .map_err(|e| Error::Input(format!("{name}: {e}")))?;
        for (doc, p) in patches {
            emit(&format!(
                "{}\n",
                serde_json::to_string(&p).unwrap_or_default()
            ));
            mutated.push(doc);
        }
    }
    if !args.validate {
        return Ok(true);
    }
    // Then as /validate would see them, mutated.
    let mut requests = Vec::new();
    for doc in &mutated {
        requests.extend(
            labeled_requests(&doc.to_string(), args.namespace.as_deref()).map_err(Error::Input)?,
        );
    }
    let report = report(&rules.policy, &requests);
    emit(&render_text(&report));
    Ok(report.allowed)
}

/// Objects without a namespace fall only under the policies that name
/// none: in a CI gate before `kubectl apply -n prod`, a policy scoped to
/// `prod` would pass by unseen. Say so, naming them.
fn warn_unscoped(policy: &PolicySet, requests: &[(Option<Origin>, Request)]) {
    let scoped: Vec<&str> = policy
        .policies
        .iter()
        .filter(|p| !p.namespaces.is_empty())
        .map(|p| &*p.name)
        .collect();
    let unknown = requests
        .iter()
        .filter(|(_, r)| r.namespace.is_none())
        .count();
    if unknown > 0 && !scoped.is_empty() {
        log::warn!(
            "{unknown} object(s) have no namespace, so the policies scoped to namespaces ({}) were not applied to them; give the namespace they will run in with -n",
            scoped.join(", ")
        );
    }
}

/// Writes to stdout. A reader that went away (`| head`) ends the output
/// quietly: the exit status still says what was decided.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// The patches `/mutate` would return for every object in `text`: an
/// AdmissionReview as it is, any other object as if it were created. An
/// object the policy refuses as written gets no patch (`/mutate` denies it).
pub fn patches_from_text(
    rules: &Rules,
    text: &str,
    namespace: Option<&str>,
) -> Result<Vec<Vec<PatchOp>>, String> {
    Ok(patched_from_text(rules, text, namespace, None)?
        .into_iter()
        .map(|(_, p)| p)
        .collect())
}

/// As [`patches_from_text`], each with its document as patched; with the
/// admission step (`--resolve`), digests are pinned as `/mutate` pins them.
fn patched_from_text(
    rules: &Rules,
    text: &str,
    namespace: Option<&str>,
    resolver: Option<&Admission>,
) -> Result<Vec<(Value, Vec<PatchOp>)>, String> {
    let mut out = Vec::new();
    for doc in documents(text)? {
        collect_patches(rules, &doc, namespace, resolver, 0, &mut out)?;
    }
    Ok(out)
}

/// An object as the AdmissionReview of its creation, as the apiserver
/// would send it to `/mutate`.
fn creation_review(doc: &Value, kind: &str, namespace: Option<&str>) -> Value {
    let api_version = doc
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("v1");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": admission::KIND,
        "request": {
            "uid": "image-bouncer-check",
            "kind": {"group": group, "version": version, "kind": kind},
            "operation": "CREATE",
            "namespace": namespace,
            "object": doc,
        },
    })
}

// One function on purpose, one recursion over the shapes a document can have (lists, reviews,
// objects), each as /mutate would treat it.
fn collect_patches(
    rules: &Rules,
    doc: &Value,
    namespace: Option<&str>,
    resolver: Option<&Admission>,
    depth: usize,
    out: &mut Vec<(Value, Vec<PatchOp>)>,
) -> Result<(), String> {
    let unchanged = || (doc.clone(), Vec::new());
    if depth > NESTING_MAX {
        return Err(format!("lists nested deeper than {NESTING_MAX}"));
    }
    let items = match doc {
        Value::Array(items) => Some(items),
        _ if doc
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k.ends_with("List")) =>
        {
            doc.get("items").and_then(Value::as_array)
        }
        _ => None,
    };
    if let Some(items) = items {
        for item in items {
            collect_patches(rules, item, namespace, resolver, depth + 1, out)?;
        }
        return Ok(());
    }
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("expected a Kubernetes object with a \"kind\"")?;
    if kind == admission::KIND {
        // Exactly what /mutate answers for this review.
        let review = admission::parse(doc.to_string().as_bytes()).map_err(|e| e.to_string())?;
        // With --resolve, the pins /mutate would look up, the same way.
        let pins = match resolver {
            Some(a) => match a.pins(&review, CHECK_LOOKUP_BUDGET, &Hold) {
                Ok(p) => Some(p),
                Err(reason) => {
                    // /mutate would deny this one; the others go on.
                    log::warn!(
                        "{}: /mutate would deny it: {reason}",
                        review.request.summary().text()
                    );
                    out.push(unchanged());
                    return Ok(());
                }
            },
            None => None,
        };
        match admission::mutate(&rules.policy, &rules.mutate, &review, pins.as_ref()).1 {
            admission::MutateOutcome::Patched(m) | admission::MutateOutcome::Unchanged(m) => {
                let mut patched = doc.clone();
                if let Some(object) = patched.pointer_mut("/request/object") {
                    mutate::apply(object, &m.patch)?;
                }
                out.push((patched, m.patch));
            }
            admission::MutateOutcome::Denied { .. } => out.push(unchanged()),
            admission::MutateOutcome::Unreadable(e) => return Err(e),
        }
        return Ok(());
    }
    let group = doc
        .get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.rsplit_once('/').map(|(g, _)| g))
        .unwrap_or("");
    let ns = doc
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .or(namespace);
    if resolver.is_some() && !rules.mutate.mutate_digest.is_empty() {
        // Pinned as /mutate pins: through its own step, on the review of
        // the object's creation; the object comes back patched.
        let review = creation_review(doc, kind, ns);
        let mut inner = Vec::new();
        collect_patches(rules, &review, namespace, resolver, depth + 1, &mut inner)?;
        for (patched_review, patch) in inner {
            let object = patched_review
                .pointer("/request/object")
                .cloned()
                .unwrap_or_else(|| doc.clone());
            out.push((object, patch));
        }
        return Ok(());
    }
    // As /mutate: what the policy refuses as written is not rewritten.
    if rules.mutate.rewrites() {
        let mut requests = Vec::new();
        collect(doc, ns, depth, &mut requests)?;
        if requests
            .iter()
            .any(|(_, r)| !rules.policy.decide(r).allowed)
        {
            out.push(unchanged());
            return Ok(());
        }
    }
    let m = mutate::mutate(
        &rules.mutate,
        &Subject {
            group,
            kind,
            sub_resource: None,
            operation: "CREATE",
            namespace: ns,
            object: doc,
            old_object: None,
            // Offline: no registry lookups, so nothing is pinned.
            pins: None,
        },
    );
    let mut patched = doc.clone();
    mutate::apply(&mut patched, &m.patch)?;
    out.push((patched, m.patch));
    Ok(())
}

/// Asks each image's registry for the digest it serves (each distinct
/// image once), with the client and settings the server would use.
fn resolve(admission: &Admission, report: &mut Report) {
    let mut done: BTreeMap<String, Result<String, String>> = BTreeMap::new();
    for i in &mut report.images {
        let Some(name) = i.normalized.clone() else {
            continue;
        };
        let answer = done
            .entry(name.clone())
            .or_insert_with(|| admission.resolve(&name));
        match answer {
            Ok(d) => i.digest = Some(d.clone()),
            Err(e) => i.resolve_error = Some(e.clone()),
        }
    }
}

/// Judges every request and flattens the verdicts per image.
pub fn report(policy: &PolicySet, requests: &[(Option<Origin>, Request)]) -> Report {
    let mut images = Vec::new();
    let mut allowed = true;
    let mut summary = Summary::default();
    for (object, req) in requests {
        let d = policy.decide(req);
        allowed &= d.allowed;
        summary.objects += usize::from(object.is_some());
        for mut r in image_reports(&d) {
            summary.containers += 1;
            if !r.allowed {
                summary.denied += 1;
            } else if !r.warnings.is_empty() {
                summary.warned += 1;
            }
            r.object = object.as_ref().map(ToString::to_string);
            images.push(r);
        }
    }
    Report {
        allowed,
        images,
        summary,
    }
}

fn image_reports(d: &Decision) -> Vec<ImageReport> {
    d.images
        .iter()
        .map(|v| {
            let mut reasons = Vec::new();
            let mut warnings = Vec::new();
            for x in &v.violations {
                match (x.effect, &d.break_glass) {
                    (Effect::Denies, _) => reasons.push(x.message.clone()),
                    (Effect::BrokenGlass, Some(key)) => warnings.push(format!(
                        "allowed by break-glass annotation {key:?}: {}",
                        x.message
                    )),
                    _ => warnings.push(format!("warn mode: {}", x.message)),
                }
            }
            if let Some(ns) = &d.exempt_namespace {
                warnings.push(format!("not checked: namespace {ns:?} is exempt"));
            }
            if let Some(p) = &v.exempted_by {
                warnings.push(format!("not checked: exempt by exemptImages entry {p:?}"));
            }
            ImageReport {
                object: None,
                container: v.container.as_ref().map(ToString::to_string),
                image: v.image.clone(),
                normalized: v.normalized.clone(),
                allowed: reasons.is_empty(),
                reasons,
                warnings,
                digest: None,
                resolve_error: None,
                signature: None,
            }
        })
        .collect()
}

/// One line per image: verdict, where it is (object, container), the
/// reference as given, normalised, reasons; then the summary.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    for i in &report.images {
        let exempt = i.warnings.iter().all(|w| w.starts_with("not checked: "));
        let verdict = match (i.allowed, i.warnings.is_empty()) {
            (false, _) => "DENY ",
            (true, true) => "ALLOW",
            (true, false) if exempt => "EXEMPT",
            (true, false) => "WARN ",
        };
        let normalized = i.normalized.as_deref().unwrap_or("(invalid)");
        out.push_str(verdict);
        for place in [&i.object, &i.container].into_iter().flatten() {
            out.push_str("  ");
            out.push_str(place);
        }
        out.push_str(&format!("  {}  {normalized}", i.image));
        for r in i.reasons.iter().chain(&i.warnings) {
            out.push_str("\n       ");
            out.push_str(r);
        }
        if let Some(d) = &i.digest {
            out.push_str(&format!("\n       resolves to {d}"));
        }
        if let Some(e) = &i.resolve_error {
            out.push_str(&format!("\n       cannot resolve: {e}"));
        }
        if let Some(s) = i.signature.as_ref().filter(|s| s.verified) {
            out.push_str(&format!(
                "\n       signed ({}): {} by {}{}",
                s.rule,
                s.digest.as_deref().unwrap_or(""),
                s.signer.as_deref().unwrap_or(""),
                s.signed_at
                    .as_deref()
                    .map(|t| format!(" at {t}"))
                    .unwrap_or_default()
            ));
        }
        out.push('\n');
    }
    let s = &report.summary;
    if s.objects > 0 {
        out.push_str(&format!(
            "{} objects, {} containers: {} denied, {} warned, {} allowed\n",
            s.objects,
            s.containers,
            s.denied,
            s.warned,
            s.containers - s.denied - s.warned
        ));
    }
    out
}

/// The documents of `text`: JSON (one or several concatenated), else
/// YAML (several separated by `---`).
pub fn documents(text: &str) -> Result<Vec<Value>, String> {
    let json: Result<Vec<Value>, _> = serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .collect();
    match json {
        Ok(docs) => Ok(docs),
        Err(json_error) => crate::yaml::documents(text)
            .map_err(|yaml_error| format!("neither JSON ({json_error}) nor YAML ({yaml_error})")),
    }
}

/// Reads every document in `text`: one request per pod.
pub fn requests_from_text(text: &str, namespace: Option<&str>) -> Result<Vec<Request>, String> {
    Ok(labeled_requests(text, namespace)?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// As [`requests_from_text`], each with the object it came from
/// (`Deployment ns/name`).
pub fn labeled_requests(
    text: &str,
    namespace: Option<&str>,
) -> Result<Vec<(Option<Origin>, Request)>, String> {
    let mut out = Vec::new();
    for (n, doc) in documents(text)?.iter().enumerate() {
        collect(doc, namespace, 0, &mut out).map_err(|e| format!("document {}: {e}", n + 1))?;
    }
    Ok(out)
}

/// The object a request came from: named in reports as `Kind
/// namespace/name` (`Kind name` without a namespace), and the reference a
/// PolicyReport result points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: Option<String>,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.namespace.as_deref(), self.name.as_str()) {
            (_, "") => write!(f, "{}", self.kind),
            (Some(ns), name) => write!(f, "{} {ns}/{name}", self.kind),
            (None, name) => write!(f, "{} {name}", self.kind),
        }
    }
}

/// The origin of an object of `kind` (its `apiVersion` and `uid` from
/// `doc` when it has them).
fn origin(doc: Option<&Value>, kind: &str, namespace: Option<&str>, name: &str) -> Origin {
    let text = |p: &str| {
        doc.and_then(|d| d.pointer(p))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Origin {
        api_version: text("/apiVersion").unwrap_or_default(),
        kind: kind.to_string(),
        namespace: namespace.filter(|n| !n.is_empty()).map(str::to_string),
        name: name.to_string(),
        uid: text("/metadata/uid"),
    }
}

/// Appends one request per pod found in `doc`.
fn collect(
    doc: &Value,
    namespace: Option<&str>,
    depth: usize,
    out: &mut Vec<(Option<Origin>, Request)>,
) -> Result<(), String> {
    if depth > NESTING_MAX {
        return Err(format!("lists nested deeper than {NESTING_MAX}"));
    }
    if let Value::Array(items) = doc {
        for item in items {
            collect(item, namespace, depth + 1, out)?;
        }
        return Ok(());
    }
    let Some(kind) = doc.get("kind").and_then(Value::as_str) else {
        return Err(format!(
            "expected a Kubernetes object with a \"kind\", found {}",
            type_name(doc)
        ));
    };
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let at = |e: String| format!("{kind} {name:?}: {e}");
    match kind {
        imagepolicy::KIND => {
            let review =
                imagepolicy::ImageReview::deserialize(doc).map_err(|e| at(e.to_string()))?;
            let o = origin(None, "ImageReview", None, "");
            out.push((Some(o), review.to_request().map_err(at)?));
        }
        admission::KIND => {
            let text = doc.to_string();
            let review = admission::parse(text.as_bytes()).map_err(|e| at(e.to_string()))?;
            let req = &review.request;
            if let PodObjects::Pods { path, object, .. } = req.pod_objects().map_err(at)? {
                let ns = req.namespace.as_deref().or(namespace);
                let raw: Option<Value> = req
                    .object
                    .as_ref()
                    .and_then(|r| serde_json::from_str(r.get()).ok());
                let mut o = origin(
                    raw.as_ref(),
                    &req.kind.kind,
                    ns,
                    req.name.as_deref().unwrap_or(""),
                );
                if o.api_version.is_empty() {
                    o.api_version = match req.kind.group.as_ref() {
                        "" => req.kind.version.to_string(),
                        g => format!("{g}/{}", req.kind.version),
                    };
                }
                push_pod(&object, path, ns, o, out).map_err(at)?;
            }
        }
        k if k.ends_with("List") && doc.get("items").is_some() => match doc.get("items") {
            Some(Value::Array(items)) => {
                for item in items {
                    collect(item, namespace, depth + 1, out)?;
                }
            }
            _ => return Err(at("items: expected an array".into())),
        },
        _ => {
            if let Some(path) = PodPath::of_kind(kind) {
                let object = Object::deserialize(doc).map_err(|e| at(e.to_string()))?;
                let ns = object.metadata.namespace.clone();
                let ns = ns.as_deref().or(namespace);
                push_pod(&object, path, ns, origin(Some(doc), kind, ns, name), out).map_err(at)?;
            }
        }
    }
    Ok(())
}

fn push_pod(
    object: &Object,
    path: PodPath,
    namespace: Option<&str>,
    label: Origin,
    out: &mut Vec<(Option<Origin>, Request)>,
) -> Result<(), String> {
    if let Some(pod) = object.pod(path) {
        out.push((
            Some(label),
            Request {
                namespace: namespace.map(str::to_string),
                annotations: pod.metadata.annotations.clone(),
                images: pod.images()?,
                ..Request::default()
            },
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_of_every_shape() {
        let text = r#"
            {"kind": "List", "items": [
                {"kind": "Deployment", "metadata": {"name": "d", "namespace": "prod"},
                 "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "nginx"}]}}}},
                {"kind": "Service", "metadata": {"name": "s"}, "spec": {}}
            ]}
            {"kind": "ImageReview", "spec": {"containers": [{"image": "x:1"}], "namespace": "ns1"}}
            [{"kind": "Pod", "spec": {"initContainers": [{"name": "i", "image": "busybox:1"}]}}]
        "#;
        let reqs = requests_from_text(text, Some("default")).unwrap();
        let got: Vec<(Option<&str>, Vec<&str>)> = reqs
            .iter()
            .map(|r| {
                (
                    r.namespace.as_deref(),
                    r.images.iter().map(|i| i.image.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (Some("prod"), vec!["nginx"]),
                (Some("ns1"), vec!["x:1"]),
                (Some("default"), vec!["busybox:1"]),
            ]
        );
    }

    #[test]
    fn yaml_documents_and_lists_name_their_objects() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: team-a}\nspec:\n  template:\n    spec:\n      containers:\n      - {name: app, image: nginx}\n---\nkind: List\nitems:\n- kind: Pod\n  metadata: {name: p}\n  spec: {containers: [{name: c, image: 'ghcr.io/x/y:1'}]}\n";
        let reqs = labeled_requests(text, Some("default")).unwrap();
        let r = report(&PolicySet::default(), &reqs);
        let places: Vec<(Option<&str>, Option<&str>, bool)> = r
            .images
            .iter()
            .map(|i| (i.object.as_deref(), i.container.as_deref(), i.allowed))
            .collect();
        assert_eq!(
            places,
            [
                (
                    Some("Deployment team-a/web"),
                    Some("container \"app\""),
                    false
                ),
                (Some("Pod default/p"), Some("container \"c\""), true),
            ]
        );
        assert_eq!(
            r.summary,
            Summary {
                objects: 2,
                containers: 2,
                denied: 1,
                warned: 0
            }
        );
        let text = render_text(&r);
        assert!(
            text.starts_with("DENY   Deployment team-a/web  container \"app\"  nginx  "),
            "{text}"
        );
        assert!(
            text.ends_with("2 objects, 2 containers: 1 denied, 0 warned, 1 allowed\n"),
            "{text}"
        );
    }

    #[test]
    fn bad_documents_are_explained() {
        let cases = [
            ("{", "neither JSON (EOF while parsing"),
            ("kind: Pod\n  bad: [", "nor YAML"),
            ("7", "expected a Kubernetes object"),
            (
                r#"{"kind":"Pod","metadata":{"name":"p"},"spec":{"containers":{}}}"#,
                "Pod \"p\": invalid type: map, expected a sequence",
            ),
            (
                r#"{"kind":"ImageReview","spec":{"containers":[{"image":1}]}}"#,
                "invalid type: integer `1`, expected a string",
            ),
        ];
        for (text, want) in cases {
            let e = requests_from_text(text, None).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn text_and_json_report() {
        let policy = PolicySet::default();
        let reqs = vec![(
            None,
            Request {
                images: vec![ImageInput::bare("nginx"), ImageInput::bare("nginx:1.27")],
                ..Request::default()
            },
        )];
        let r = report(&policy, &reqs);
        assert!(!r.allowed);
        let text = render_text(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "DENY   nginx  docker.io/library/nginx:latest");
        assert!(
            lines[1]
                .trim_start()
                .starts_with("policy \"flags\": image \"nginx\" has no tag")
        );
        assert_eq!(lines[2], "ALLOW  nginx:1.27  docker.io/library/nginx:1.27");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["images"][1],
            serde_json::json!({
                "object": null, "container": null,
                "image": "nginx:1.27", "normalized": "docker.io/library/nginx:1.27",
                "allowed": true, "reasons": [], "warnings": []
            })
        );
    }
}
