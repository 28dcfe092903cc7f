//! `image-bouncer test CASES`: a table of policy test cases — images, a
//! namespace, a kind, an endpoint, and what should happen — each written
//! as the apiserver would send it and run through the admission step the
//! server runs (`admit::Admission`), offline unless `--resolve`. What
//! `kyverno test` gives its users, for this policy format: the README's
//! guides run it before a policy goes from warn to enforce.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::Error;
use crate::admit::{Admission, Answer, Hold, Reply};
use crate::cli::{PolicyFlags, TestArgs};
use crate::files::read_limited;
use crate::kinds::{GROUPS, PodPath};

/// A cases file larger than this is a wrong path.
const CASES_MAX: u64 = 4 << 20;
/// The review timeout each case is sent with (the apiserver's longest).
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// One case, read and checked.
#[derive(Debug)]
struct Case {
    name: String,
    images: Vec<String>,
    namespace: String,
    kind: String,
    path: Endpoint,
    annotations: serde_json::Map<String, Value>,
    expect: Expect,
    reason: Option<String>,
    pinned: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    ImagePolicy,
    Validate,
    Mutate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Allow,
    Deny,
    Warn,
}

impl Expect {
    fn word(self) -> &'static str {
        match self {
            Expect::Allow => "allow",
            Expect::Deny => "deny",
            Expect::Warn => "warn",
        }
    }
}

/// What the step answered, in the cases' terms.
struct Seen {
    outcome: Expect,
    /// The reason (denied) or the warnings (allowed), as one text.
    words: String,
    /// With `/mutate`: the images the patch writes.
    written: Vec<String>,
}

/// Runs every case; `Ok(true)` when all behave as expected.
pub fn run(args: &TestArgs) -> Result<bool, Error> {
    let path = Path::new(&args.cases);
    let text = read_limited(path, CASES_MAX).map_err(Error::Input)?;
    let (policy, cases) = read_cases(&text, path).map_err(|problems| {
        Error::Input(format!(
            "{}: {} problem(s):\n  {}",
            path.display(),
            problems.len(),
            problems.join("\n  ")
        ))
    })?;
    let policy = args
        .policy
        .as_ref()
        .map(PathBuf::from)
        .or(policy)
        .ok_or_else(|| {
            Error::Usage(format!(
                "{}: no policy: give --policy FILE|DIR or a \"policy\" key in the cases file",
                path.display()
            ))
        })?;
    let rules = PolicyFlags {
        file: Some(policy),
        ..PolicyFlags::default()
    }
    .load_rules()?;
    let admission = if args.resolve {
        Admission::new(rules)
    } else {
        Admission::offline(rules)
    };
    let mut failed = 0;
    let mut out = String::new();
    for case in &cases {
        let seen = judge(&admission, case);
        if let Some(why) = mismatch(case, &seen) {
            failed += 1;
            out.push_str(&format!("FAIL  {}: {why}\n", case.name));
        }
    }
    out.push_str(&format!(
        "{} cases: {} passed, {failed} failed\n",
        cases.len(),
        cases.len() - failed
    ));
    print!("{out}");
    Ok(failed == 0)
}

/// Why a case did not behave as expected, or `None`.
fn mismatch(case: &Case, seen: &Seen) -> Option<String> {
    if seen.outcome != case.expect {
        let what = if seen.words.is_empty() {
            String::new()
        } else {
            format!(": {}", seen.words)
        };
        return Some(format!(
            "expected {}, got {}{what}",
            case.expect.word(),
            seen.outcome.word()
        ));
    }
    if let Some(r) = &case.reason
        && !seen.words.contains(r.as_str())
    {
        return Some(format!(
            "expected a reason containing {r:?}, got {:?}",
            seen.words
        ));
    }
    if let Some(p) = &case.pinned
        && !seen.written.iter().any(|w| w == p)
    {
        return Some(format!(
            "expected the image to become {p:?}, the patch wrote {:?}",
            seen.written
        ));
    }
    None
}

/// Sends the case as its endpoint's review through the admission step.
fn judge(admission: &Admission, case: &Case) -> Seen {
    let body = body(case);
    let answer = match case.path {
        Endpoint::ImagePolicy => admission.image_review(&body, Some(TIMEOUT), &Hold),
        Endpoint::Validate => admission.validate(&body, Some(TIMEOUT), &Hold),
        Endpoint::Mutate => admission.mutate(&body, Some(TIMEOUT), &Hold),
    };
    seen(case.path, answer)
}

/// The reply in the cases' terms.
fn seen(path: Endpoint, answer: Answer) -> Seen {
    let v: Value = match answer.reply {
        Reply::Json(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        Reply::Text(status, text) => {
            return Seen {
                outcome: Expect::Deny,
                words: format!("HTTP {status}: {text}"),
                written: Vec::new(),
            };
        }
    };
    if path == Endpoint::ImagePolicy {
        let s = &v["status"];
        let allowed = s["allowed"] == true;
        let warned = s["auditAnnotations"].as_object().is_some_and(|a| {
            a.keys()
                .any(|k| k.ends_with("warn-images") || k.starts_with("break-glass"))
        });
        return Seen {
            outcome: outcome(allowed, warned),
            words: match (allowed, s["auditAnnotations"].as_object()) {
                (false, _) => s["reason"].as_str().unwrap_or("").to_string(),
                (true, Some(a)) => a
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join("; "),
                (true, None) => String::new(),
            },
            written: Vec::new(),
        };
    }
    let r = &v["response"];
    let allowed = r["allowed"] == true;
    let warnings: Vec<&str> = r["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut words = warnings.join("; ");
    if !allowed {
        let message = r["status"]["message"].as_str().unwrap_or("");
        words = if words.is_empty() {
            message.to_string()
        } else {
            format!("{message}; {words}")
        };
    }
    let written = r["patch"]
        .as_str()
        .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok())
        .and_then(|p| serde_json::from_slice::<Vec<Value>>(&p).ok())
        .unwrap_or_default()
        .iter()
        .filter(|op| {
            op["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/image") || p.ends_with("/reference"))
        })
        .filter_map(|op| op["value"].as_str().map(str::to_string))
        .collect();
    Seen {
        outcome: outcome(allowed, !warnings.is_empty()),
        words,
        written,
    }
}

fn outcome(allowed: bool, warned: bool) -> Expect {
    match (allowed, warned) {
        (false, _) => Expect::Deny,
        (true, true) => Expect::Warn,
        (true, false) => Expect::Allow,
    }
}

/// The review the apiserver would send for the case: an ImageReview, or
/// an AdmissionReview (v1, CREATE) of an object of the case's kind with
/// the images in its pod (or template), one container each.
fn body(case: &Case) -> Vec<u8> {
    let containers: Vec<Value> = case
        .images
        .iter()
        .enumerate()
        .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
        .collect();
    if case.path == Endpoint::ImagePolicy {
        return json!({"apiVersion": "imagepolicy.k8s.io/v1alpha1", "kind": "ImageReview",
            "spec": {"containers": containers, "annotations": case.annotations, "namespace": case.namespace}})
        .to_string()
        .into_bytes();
    }
    let group = GROUPS
        .iter()
        .find(|g| PodPath::of(g, &case.kind).is_some())
        .copied()
        .unwrap_or("");
    let api_version = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    };
    let pod =
        json!({"metadata": {"annotations": case.annotations}, "spec": {"containers": containers}});
    let mut object = json!({"apiVersion": api_version, "kind": case.kind,
        "metadata": {"name": "test", "namespace": case.namespace}});
    match PodPath::of(group, &case.kind).map(PodPath::pointer) {
        Some("") | None => {
            object["metadata"]["annotations"] = Value::Object(case.annotations.clone());
            object["spec"] = pod["spec"].clone();
        }
        Some(pointer) => {
            let mut at = &mut object;
            for part in pointer.trim_start_matches('/').split('/') {
                at = &mut at[part];
            }
            *at = pod;
        }
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "image-bouncer-test", "kind": {"group": group, "version": "v1", "kind": case.kind},
            "resource": {"group": group, "version": "v1", "resource": format!("{}s", case.kind.to_lowercase())},
            "namespace": case.namespace, "name": "test", "operation": "CREATE",
            "userInfo": {"username": "image-bouncer-test"}, "object": object}})
    .to_string()
    .into_bytes()
}

/// The cases file: `{policy?, cases: [...]}`, every problem with its path.
fn read_cases(text: &str, path: &Path) -> Result<(Option<PathBuf>, Vec<Case>), Vec<String>> {
    let doc = crate::yaml::documents(text).map_err(|e| vec![e])?;
    let [doc] = doc.as_slice() else {
        return Err(vec![format!("expected one document, found {}", doc.len())]);
    };
    let mut problems = Vec::new();
    let mut policy = None;
    let mut cases = Vec::new();
    let Some(top) = doc.as_object() else {
        return Err(vec!["$: expected an object with \"cases\"".into()]);
    };
    for (k, v) in top {
        match k.as_str() {
            "policy" => match v.as_str() {
                // Beside the cases file, as a policy's own files are.
                Some(p) => policy = Some(path.parent().unwrap_or(Path::new("")).join(p)),
                None => problems.push("$.policy: expected a file or folder name".into()),
            },
            "cases" => match v.as_array() {
                Some(list) => {
                    for (i, c) in list.iter().enumerate() {
                        if let Some(c) = read_case(c, &format!("$.cases[{i}]"), &mut problems) {
                            cases.push(c);
                        }
                    }
                }
                None => problems.push("$.cases: expected a list".into()),
            },
            k if k.starts_with("//") => {}
            other => problems.push(format!("$.{other}: unknown key (expected policy, cases)")),
        }
    }
    if cases.is_empty() && problems.is_empty() {
        problems.push("$.cases: no cases".into());
    }
    if problems.is_empty() {
        Ok((policy, cases))
    } else {
        Err(problems)
    }
}

fn read_case(v: &Value, at: &str, problems: &mut Vec<String>) -> Option<Case> {
    let before = problems.len();
    let Some(o) = v.as_object() else {
        problems.push(format!("{at}: expected an object"));
        return None;
    };
    let string = |k: &str, problems: &mut Vec<String>| -> Option<String> {
        match o.get(k) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                problems.push(format!("{at}.{k}: expected a string, found {other}"));
                None
            }
        }
    };
    for k in o.keys() {
        if !CASE_KEYS.contains(&k.as_str()) && !k.starts_with("//") {
            problems.push(format!(
                "{at}.{k}: unknown key (expected one of {})",
                CASE_KEYS.join(", ")
            ));
        }
    }
    let mut images: Vec<String> = string("image", problems).into_iter().collect();
    match o.get("images") {
        None => {}
        Some(Value::Array(list)) => {
            for (i, x) in list.iter().enumerate() {
                match x.as_str() {
                    Some(s) => images.push(s.to_string()),
                    None => problems.push(format!("{at}.images[{i}]: expected a string")),
                }
            }
        }
        Some(_) => problems.push(format!("{at}.images: expected a list of images")),
    }
    if images.is_empty() {
        problems.push(format!("{at}: no image (give image or images)"));
    }
    let path = match string("path", problems).as_deref() {
        None | Some("validate") => Endpoint::Validate,
        Some("image_policy") => Endpoint::ImagePolicy,
        Some("mutate") => Endpoint::Mutate,
        Some(other) => {
            problems.push(format!(
                "{at}.path: {other:?} is not image_policy, validate or mutate"
            ));
            Endpoint::Validate
        }
    };
    let expect = match string("expect", problems).as_deref() {
        Some("allow") => Expect::Allow,
        Some("deny") => Expect::Deny,
        Some("warn") => Expect::Warn,
        Some(other) => {
            problems.push(format!("{at}.expect: {other:?} is not allow, deny or warn"));
            Expect::Deny
        }
        None => {
            problems.push(format!("{at}.expect: required (allow, deny or warn)"));
            Expect::Deny
        }
    };
    let kind = string("kind", problems).unwrap_or_else(|| "Pod".into());
    if PodPath::of_kind(&kind).is_none() {
        problems.push(format!("{at}.kind: {kind:?} is not a kind with pods"));
    }
    if path == Endpoint::ImagePolicy && kind != "Pod" {
        problems.push(format!("{at}.kind: an ImageReview is about a Pod"));
    }
    let pinned = string("pinned", problems);
    if pinned.is_some() && path != Endpoint::Mutate {
        problems.push(format!("{at}.pinned: only /mutate pins (path: mutate)"));
    }
    let annotations = match o.get("annotations") {
        None => serde_json::Map::new(),
        Some(Value::Object(m)) if m.values().all(Value::is_string) => m.clone(),
        Some(_) => {
            problems.push(format!("{at}.annotations: expected a map of strings"));
            serde_json::Map::new()
        }
    };
    let case = Case {
        name: string("name", problems).unwrap_or_else(|| at.trim_start_matches("$.").to_string()),
        images,
        namespace: string("namespace", problems).unwrap_or_else(|| "default".into()),
        kind,
        path,
        annotations,
        expect,
        reason: string("reason", problems),
        pinned,
    };
    (problems.len() == before).then_some(case)
}

const CASE_KEYS: &[&str] = &[
    "name",
    "image",
    "images",
    "namespace",
    "kind",
    "path",
    "annotations",
    "expect",
    "reason",
    "pinned",
];
