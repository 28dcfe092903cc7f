//! `image-bouncer check` end to end: verdicts, output shapes, exit codes.

use serde_json::Value;

use crate::common::{fixtures, run, stderr, stdout, temp_dir};

fn check_json(args: &[&str], stdin: Option<&str>) -> (i32, Value) {
    let mut all = vec!["check", "--json"];
    all.extend_from_slice(args);
    let out = run(&all, stdin);
    let v: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("{e}: {} / {}", stdout(&out), stderr(&out)));
    (out.status.code().unwrap(), v)
}

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn tricky_references_get_the_right_verdict() {
    let pinned = format!("nginx:latest@{DIGEST}");
    // (image, allowed, normalized or null, fragment of the reason)
    let cases: Vec<(&str, bool, Option<&str>, &str)> = vec![
        ("nginx:1.27", true, Some("docker.io/library/nginx:1.27"), ""),
        (
            "nginx",
            false,
            Some("docker.io/library/nginx:latest"),
            "has no tag",
        ),
        (
            "nginx:latest",
            false,
            Some("docker.io/library/nginx:latest"),
            "latest tag is not allowed",
        ),
        (&pinned, true, None, ""),
        (
            "registry:5000/app:v1",
            true,
            Some("registry:5000/app:v1"),
            "",
        ),
        (
            "localhost:5000",
            true,
            Some("docker.io/library/localhost:5000"),
            "",
        ), // a tag, not a port
        (
            "[::1]:5000/app",
            false,
            Some("[::1]:5000/app:latest"),
            "has no tag",
        ),
        (
            "index.docker.io/library/redis:7",
            true,
            Some("docker.io/library/redis:7"),
            "",
        ),
        (
            "NGINX:1.0",
            false,
            None,
            "repository name must be lowercase",
        ),
        ("repo@sha256:abc", false, None, "digest \"sha256:abc\""),
    ];
    for (image, allowed, normalized, reason) in cases {
        let (code, v) = check_json(&["--", image], None);
        let img = &v["images"][0];
        assert_eq!(img["allowed"], allowed, "{image}: {v}");
        assert_eq!(code, if allowed { 0 } else { 1 }, "{image}");
        if let Some(n) = normalized {
            assert_eq!(img["normalized"], n, "{image}");
        }
        if !reason.is_empty() {
            assert!(
                img["reasons"][0].as_str().unwrap().contains(reason),
                "{image}: {v}"
            );
        }
    }
}

#[test]
fn allow_list_bypass_attempts_are_denied() {
    for image in [
        "docker.io.evil.com/x:1",
        "ghcr.io/acme-evil/app:1",
        "ghcr.io/acmeapp:1",
        "gcr.io.evil.com/p/a:1",
    ] {
        let (code, v) = check_json(
            &[
                "--allow-registry=docker.io",
                "--allow-registry",
                "ghcr.io/acme,*.gcr.io",
                "--",
                image,
            ],
            None,
        );
        assert_eq!(code, 1, "{image}: {v}");
        assert!(
            v["images"][0]["reasons"][0]
                .as_str()
                .unwrap()
                .contains("not in allowedRegistries")
        );
    }
    let (code, v) = check_json(
        &[
            "--registry-whitelist=docker.io,ghcr.io/acme,*.gcr.io",
            "nginx:1",
            "ghcr.io/acme/app:1",
            "eu.gcr.io/p/a:1",
        ],
        None,
    );
    assert_eq!(code, 0, "{v}");
}

#[test]
fn json_output_has_exactly_the_documented_shape() {
    let (code, v) = check_json(&["nginx", "busybox:1.36"], None);
    assert_eq!(code, 1);
    assert_eq!(v["allowed"], false);
    let obj = v.as_object().unwrap();
    assert_eq!(
        obj.keys().collect::<Vec<_>>(),
        ["allowed", "images", "summary"]
    );
    let img = v["images"][0].as_object().unwrap();
    let mut keys: Vec<&String> = img.keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "allowed",
            "container",
            "image",
            "normalized",
            "object",
            "reasons",
            "warnings"
        ]
    );
    assert_eq!(
        v["summary"],
        serde_json::json!({"objects": 0, "containers": 2, "denied": 1, "warned": 0})
    );
    assert_eq!(v["images"][1]["allowed"], true);
}

#[test]
fn documents_from_stdin_and_files() {
    // A Deployment from the apiserver fixtures, wrapped in an AdmissionReview.
    let review = fixtures().join("admission/deployment-create-latest.request.json");
    let (code, v) = check_json(&["-f", review.to_str().unwrap()], None);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["images"][0]["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("policy \"flags\": container "),
        "{v}"
    );

    let review = fixtures().join("imagereview/pod-create-allowed.request.json");
    let (code, v) = check_json(&["-f", review.to_str().unwrap()], None);
    assert_eq!(code, 0, "{v}");

    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},
        "spec":{"containers":[{"name":"app","image":"nginx:1.27"}],
                "initContainers":[{"name":"init","image":"busybox"}]}}"#;
    let out = run(&["check", "-f", "-"], Some(pod));
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("ALLOW  Pod p  container \"app\"  nginx:1.27  docker.io/library/nginx:1.27"),
        "{text}"
    );
    assert!(
        text.contains("init container \"init\" image \"busybox\" has no tag"),
        "{text}"
    );
}

#[test]
fn namespaces_and_warn_mode() {
    let (code, v) = check_json(
        &["--exempt-namespace=kube-*", "-n", "kube-system", "nginx"],
        None,
    );
    assert_eq!(code, 0, "{v}");
    assert!(
        v["images"][0]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("exempt")
    );
    let (code, v) = check_json(&["--mode=warn", "nginx"], None);
    assert_eq!(code, 0);
    assert_eq!(v["images"][0]["allowed"], true);
    assert!(
        v["images"][0]["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("warn mode: ")
    );
}

#[test]
fn broken_policy_file_lists_every_problem_and_exits_2() {
    let dir = temp_dir("broken-policy");
    let file = dir.join("policy.json");
    std::fs::write(
        &file,
        r#"{"mode": "audit", "allowedRegistries": ["ghcr.io/Acme", 3], "denyLatest": "no", "extra": true}"#,
    )
    .unwrap();
    let out = run(
        &["check", "--policy", file.to_str().unwrap(), "nginx:1"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for fragment in [
        "5 problems",
        "$.mode: mode \"audit\"",
        "$.allowedRegistries[0]: \"ghcr.io/Acme\"",
        "$.allowedRegistries[1]: expected a string",
        "$.denyLatest: expected true or false",
        "$.extra: unknown key",
    ] {
        assert!(err.contains(fragment), "missing {fragment:?} in {err}");
    }
    assert!(stdout(&out).is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn duplicate_keys_in_the_policy_file_exit_2() {
    let dir = temp_dir("duplicate-keys");
    let file = dir.join("policy.json");
    std::fs::write(
        &file,
        r#"{"allowedRegistries": ["ghcr.io"], "allowedRegistries": []}"#,
    )
    .unwrap();
    let out = run(
        &["check", "--policy", file.to_str().unwrap(), "evil.com/x:1"],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("$.allowedRegistries: the key is given twice"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// An audit of what runs: `kubectl get ... -o json` (a List) or the YAML
/// kept in git, several documents in one file.
#[test]
fn audit_of_a_list_and_of_multi_document_yaml() {
    let list = r#"{"apiVersion":"v1","kind":"List","items":[
        {"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"shop"},
         "spec":{"template":{"spec":{"containers":[{"name":"app","image":"nginx:latest"}]}}}},
        {"apiVersion":"v1","kind":"Pod","metadata":{"name":"db-0","namespace":"shop"},
         "spec":{"containers":[{"name":"db","image":"postgres:16"}]}}]}"#;
    let (code, v) = check_json(&["-f", "-"], Some(list));
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["images"][0]["object"], "Deployment shop/web");
    assert_eq!(v["images"][0]["container"], "container \"app\"");
    assert_eq!(v["images"][1]["object"], "Pod shop/db-0");
    assert_eq!(
        v["summary"],
        serde_json::json!({"objects": 2, "containers": 2, "denied": 1, "warned": 0})
    );
    let yaml = "# from git\napiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: report\n  namespace: ops\nspec:\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers:\n          - name: r\n            image: ghcr.io/acme/report:2.1\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: debug\nspec:\n  containers:\n  - name: sh\n    image: busybox\n";
    let dir = temp_dir("audit-yaml");
    let file = dir.join("manifests.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = run(&["check", "-n", "ops", "-f", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("ALLOW  CronJob ops/report  container \"r\"  ghcr.io/acme/report:2.1"),
        "{text}"
    );
    assert!(
        text.contains("DENY   Pod ops/debug  container \"sh\"  busybox"),
        "{text}"
    );
    assert!(
        text.ends_with("2 objects, 2 containers: 1 denied, 0 warned, 1 allowed\n"),
        "{text}"
    );
    // Warn mode: nothing denied, the findings still listed, exit 0.
    let out = run(
        &["check", "--mode", "warn", "-f", file.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("0 denied, 1 warned"),
        "{}",
        stdout(&out)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_policy_file_alone_is_checked() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/policy.json");
    let out = run(&["check", "--policy", file], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("a valid policy"), "{}", stdout(&out));
}

#[test]
fn the_example_policy_file_is_valid() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/policy.json");
    let out = run(
        &[
            "check",
            "--policy",
            file,
            "ghcr.io/acme/app:1.0",
            "ghcr.io/acme/experimental/x:1",
        ],
        None,
    );
    // A safe start: warn mode, so nothing is refused yet.
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("ALLOW  ghcr.io/acme/app:1.0"), "{text}");
    assert!(
        text.contains("WARN   ghcr.io/acme/experimental/x:1"),
        "{text}"
    );
    assert!(
        text.contains("deniedRegistries entry \"ghcr.io/acme/experimental\""),
        "{text}"
    );
    // The same file in enforce mode refuses it.
    let out = run(
        &[
            "check",
            "--policy",
            file,
            "--mode",
            "enforce",
            "ghcr.io/acme/experimental/x:1",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["check"],
        vec!["check", "--bogus"],
        vec!["check", "--json=1", "x"],
        vec!["check", "--mode", "loud", "x:1"],
        vec!["check", "-f", "/nonexistent/file.json"],
        vec!["nonsense"],
    ] {
        let out = run(&args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).is_empty(), "{args:?}");
    }
    let out = run(&["check", "-f", "-"], Some("{not json"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("stdin: neither JSON (") && stderr(&out).contains("nor YAML ("),
        "{}",
        stderr(&out)
    );
    let out = run(&["--help"], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("check"));
}

/// Issue 34, 7: an audit pipe that read nothing (the command before it
/// failed) is an error naming the likely cause, not a clean report; a
/// reader that goes away (`| head`) ends the output quietly.
#[test]
fn an_empty_pipe_is_an_error_and_a_closed_one_is_quiet() {
    for empty in ["", "\n", "---\n# nothing\n"] {
        let out = run(&["check", "-f", "-"], Some(empty));
        assert_eq!(out.status.code(), Some(2), "{empty:?}");
        assert!(
            stderr(&out).contains("no document was read") && stderr(&out).contains("pipefail"),
            "{}",
            stderr(&out)
        );
    }
    // The reader closes before anything is written.
    let images: Vec<String> = (0..3000).map(|i| format!("nginx:1.{i}")).collect();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_image-bouncer"));
    cmd.arg("check")
        .args(&images)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

/// Issue 34 (in-cluster): a policy's files are read beside it, whatever
/// the working folder (a ConfigMap key next to the policy), or given
/// inline (a PEM string, a trusted root's JSON); a missing file says
/// "cannot open".
#[test]
fn policy_files_are_read_beside_the_policy_or_inline() {
    let dir = crate::common::temp_dir("policy-relative");
    let key =
        std::fs::read_to_string(crate::common::fixtures().join("cosign/keyed-p384/cosign.pub"))
            .unwrap();
    std::fs::write(dir.join("cosign.pub"), &key).unwrap();
    let root = std::fs::read_to_string(
        crate::common::fixtures().join("sigstore/trusted-roots/public-good.json"),
    )
    .unwrap();
    std::fs::write(dir.join("trusted_root.json"), &root).unwrap();
    let policy = serde_json::json!({
        "verifyImages": [
            {"images": ["ghcr.io/acme/a"], "keys": ["cosign.pub"], "trustedRoot": "trusted_root.json"},
            {"images": ["ghcr.io/acme/b"], "keys": [key], "trustedRoot": root},
        ],
    });
    std::fs::write(dir.join("policy.json"), policy.to_string()).unwrap();
    // From another working folder.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_image-bouncer"))
        .args([
            "check",
            "--policy",
            dir.join("policy.json").to_str().unwrap(),
        ])
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A file that is not there: the reason says so.
    let broken = serde_json::json!({
        "registries": {"registry.example": {"ca": "missing-ca.crt"}},
        "verifyImages": [{"images": ["*"], "keys": ["missing.pub"], "ignoreTlog": true}],
    });
    std::fs::write(dir.join("broken.json"), broken.to_string()).unwrap();
    let out = run(
        &[
            "check",
            "--policy",
            dir.join("broken.json").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(
        e.contains(&format!(
            "{}: cannot open",
            dir.join("missing-ca.crt").display()
        )),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            "{}: cannot open",
            dir.join("missing.pub").display()
        )),
        "{e}"
    );
}

/// The complete policy of docs/policy.md, copied as a reader would (with
/// the two files it names beside it), is a valid policy.
#[test]
fn the_readmes_complete_policy_is_valid() {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/policy.md"),
    )
    .unwrap();
    let after = readme
        .split_once("A complete policy, to copy")
        .expect("the README's complete policy")
        .1;
    let block = after
        .split_once("```json\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .expect("its JSON block")
        .0;
    let dir = crate::common::temp_dir("readme-policy");
    std::fs::write(dir.join("policy.json"), block).unwrap();
    std::fs::copy(
        crate::common::fixtures().join("sigstore/trusted-roots/public-good.json"),
        dir.join("trusted_root.json"),
    )
    .unwrap();
    std::fs::copy(
        crate::common::fixtures().join("cosign/keyed-p384/cosign.pub"),
        dir.join("payments-cosign.pub"),
    )
    .unwrap();
    let out = run(
        &[
            "check",
            "--policy",
            dir.join("policy.json").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// The v1alpha2 `openAPIV3Schema` of the published CRD of `kind`.
fn report_schema(kind: &str) -> Value {
    let file = match kind {
        "PolicyReport" => "policyreport/wgpolicyk8s.io_policyreports.yaml",
        _ => "policyreport/wgpolicyk8s.io_clusterpolicyreports.yaml",
    };
    let text = std::fs::read_to_string(fixtures().join(file)).unwrap();
    let crd = image_bouncer::yaml::documents(&text).unwrap().remove(0);
    assert_eq!(crd["spec"]["names"]["kind"], kind);
    crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1alpha2")
        .map(|v| v["schema"]["openAPIV3Schema"].clone())
        .expect("a v1alpha2 version")
}

/// Checks `v` against a CRD's structural schema as the apiserver would,
/// and more strictly: types, required fields, enums, and no field the
/// schema does not name (the apiserver would drop it silently).
fn conforms(v: &Value, schema: &Value, at: &str, problems: &mut Vec<String>) {
    let ty = schema["type"].as_str().unwrap_or("");
    let ok = match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" | "date" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    };
    if !ok {
        problems.push(format!("{at}: expected {ty}, found {v}"));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(v)
    {
        problems.push(format!("{at}: {v} is not one of {allowed:?}"));
    }
    for r in schema["required"].as_array().into_iter().flatten() {
        if v.get(r.as_str().unwrap()).is_none() {
            problems.push(format!("{at}: {r} is required"));
        }
    }
    if let Some(items) = v.as_array() {
        for (i, item) in items.iter().enumerate() {
            conforms(item, &schema["items"], &format!("{at}[{i}]"), problems);
        }
    }
    if let Some(fields) = v.as_object() {
        let props = schema["properties"].as_object();
        let extra = &schema["additionalProperties"];
        for (k, value) in fields {
            match props.and_then(|p| p.get(k)) {
                Some(s) => conforms(value, s, &format!("{at}.{k}"), problems),
                None if extra.is_object() => conforms(value, extra, &format!("{at}.{k}"), problems),
                // `metadata` is an object the schema leaves open.
                None if props.is_none() => {}
                None => problems.push(format!("{at}.{k}: not in the schema")),
            }
        }
    }
}

/// `check --output policyreport` over workloads in two namespaces and one
/// without, judged by a set of two policies (an enforcing base and a
/// digest policy in warn mode exempting one image): one PolicyReport per
/// namespace and a ClusterPolicyReport, a result per image and policy,
/// each object valid under the published CRD's schema.
#[test]
fn policy_reports_match_the_crd() {
    let dir = temp_dir("check-policyreport");
    let set = dir.join("policy.d");
    std::fs::create_dir_all(&set).unwrap();
    std::fs::write(
        set.join("base.json"),
        r#"{"allowedRegistries": ["ghcr.io", "docker.io/library"]}"#,
    )
    .unwrap();
    std::fs::write(
        set.join("pinned.yaml"),
        "mode: warn\nrequireDigest: true\nexemptImages: [\"ghcr.io/acme/tools\"]\n",
    )
    .unwrap();
    let docs = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: team-a, uid: 11111111-2222-3333-4444-555555555555}
spec:
  template:
    spec:
      containers:
      - {name: app, image: "ghcr.io/acme/app:1.0"}
      - {name: tools, image: "ghcr.io/acme/tools:2"}
---
apiVersion: v1
kind: Pod
metadata: {name: bad, namespace: team-b}
spec:
  containers:
  - {name: c, image: "quay.io/evil/miner:1"}
---
apiVersion: batch/v1
kind: Job
metadata: {name: loose}
spec:
  template:
    spec:
      containers:
      - {name: j, image: "busybox:1.36"}
"#;
    let out = run(
        &[
            "check",
            "--policy",
            set.to_str().unwrap(),
            "-o",
            "policyreport",
            "-f",
            "-",
        ],
        Some(docs),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let list: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (&list["apiVersion"], &list["kind"]),
        (&"v1".into(), &"List".into())
    );
    let items = list["items"].as_array().unwrap();
    let kinds: Vec<(&str, Option<&str>)> = items
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap(),
                i["metadata"]["namespace"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("ClusterPolicyReport", None),
            ("PolicyReport", Some("team-a")),
            ("PolicyReport", Some("team-b"))
        ]
    );
    for item in items {
        let mut problems = Vec::new();
        conforms(
            item,
            &report_schema(item["kind"].as_str().unwrap()),
            "$",
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:#?}\n{item:#}");
    }
    let results = |i: usize| -> Vec<(String, String, String)> {
        items[i]["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["policy"].as_str().unwrap().to_string(),
                    r["properties"]["image"].as_str().unwrap().to_string(),
                    r["result"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let own = |v: &[(&str, &str, &str)]| -> Vec<(String, String, String)> {
        v.iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect()
    };
    assert_eq!(
        results(1),
        own(&[
            ("base", "ghcr.io/acme/app:1.0", "pass"),
            ("base", "ghcr.io/acme/tools:2", "pass"),
            ("pinned", "ghcr.io/acme/app:1.0", "warn"),
            ("pinned", "ghcr.io/acme/tools:2", "skip"),
        ])
    );
    assert_eq!(
        results(2),
        own(&[
            ("base", "quay.io/evil/miner:1", "fail"),
            ("pinned", "quay.io/evil/miner:1", "warn")
        ])
    );
    assert_eq!(
        results(0),
        own(&[
            ("base", "busybox:1.36", "pass"),
            ("pinned", "busybox:1.36", "warn")
        ])
    );
    assert_eq!(
        items[2]["summary"],
        serde_json::json!({"pass": 0, "fail": 1, "warn": 1, "error": 0, "skip": 0})
    );
    let fail = &items[2]["results"][0];
    assert_eq!(fail["rule"], "registry-not-allowed");
    assert!(
        fail["message"]
            .as_str()
            .unwrap()
            .starts_with("policy \"base\": container \"c\""),
        "{fail}"
    );
    assert_eq!(
        fail["resources"][0],
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "name": "bad", "namespace": "team-b"})
    );
    assert_eq!(
        items[1]["results"][0]["resources"][0]["uid"],
        "11111111-2222-3333-4444-555555555555"
    );
    // A wrong field is caught: the check is not vacuous.
    let mut broken = items[2].clone();
    broken["results"][0]["result"] = "denied".into();
    broken["results"][0]["severity2"] = "x".into();
    let mut problems = Vec::new();
    conforms(&broken, &report_schema("PolicyReport"), "$", &mut problems);
    assert_eq!(problems.len(), 2, "{problems:?}");
    // A policy scoped to namespaces does not judge an object without one:
    // said on stderr, and -n brings it in.
    std::fs::write(
        set.join("prod.yaml"),
        "namespaces: [prod]\nrequireDigest: true\n",
    )
    .unwrap();
    let pod = "{\"kind\": \"Pod\", \"metadata\": {\"name\": \"p\"}, \"spec\": {\"containers\": [{\"name\": \"c\", \"image\": \"ghcr.io/acme/app:1.0\"}]}}";
    let out = run(
        &["check", "--policy", set.to_str().unwrap(), "-f", "-"],
        Some(pod),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("the policies scoped to namespaces (prod) were not applied"),
        "{}",
        stderr(&out)
    );
    let out = run(
        &[
            "check",
            "--policy",
            set.to_str().unwrap(),
            "-n",
            "prod",
            "-f",
            "-",
        ],
        Some(pod),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    std::fs::remove_file(set.join("prod.yaml")).unwrap();
    // The text summary of the same set names each policy.
    let out = run(&["check", "--policy", set.to_str().unwrap()], None);
    let text = stdout(&out);
    assert!(text.contains("a valid set of 2 policies"), "{text}");
    assert!(text.contains("\n  pinned: mode warn"), "{text}");
}

/// `image-bouncer test`: a cases file run against a policy set on the
/// three paths, offline; a case that expects the wrong thing fails with a
/// line saying what happened (exit 1); a broken cases file is exit 2.
#[test]
fn policy_test_cases() {
    let dir = temp_dir("policy-test-cases");
    let set = dir.join("policy.d");
    std::fs::create_dir_all(&set).unwrap();
    std::fs::write(
        set.join("base.json"),
        r#"{"allowedRegistries": ["ghcr.io/acme", "docker.io/library"]}"#,
    )
    .unwrap();
    let key = fixtures().join("cosign/keyed-p384/cosign.pub");
    std::fs::write(
        set.join("signed.yaml"),
        format!(
            "mode: warn\nnamespaces: [prod]\nverifyImages:\n- images: [\"ghcr.io/acme/*\"]\n  ignoreTlog: true\n  keys: [{:?}]\n",
            key.to_str().unwrap()
        ),
    )
    .unwrap();
    let cases = r#"
policy: policy.d
cases:
- name: a pinned version from an allowed registry
  image: "ghcr.io/acme/app:1.0"
  namespace: dev
  expect: allow
- name: another registry is refused, by the base policy
  image: "quay.io/evil/miner:1"
  expect: deny
  reason: 'policy "base"'
- name: latest is refused on the ImageReview path too
  image: "nginx:latest"
  path: image_policy
  expect: deny
  reason: latest tag is not allowed
- name: unsigned in prod only warns while signed.yaml is in warn mode
  images: ["ghcr.io/acme/app:1.0"]
  namespace: prod
  kind: Deployment
  expect: warn
  reason: 'policy "signed"'
- name: break-glass is off, so the annotation changes nothing
  image: "busybox"
  kind: CronJob
  annotations: {"ops.image-policy.k8s.io/t-1": "break-glass"}
  expect: deny
- name: /mutate without mutations admits as it is
  image: "ghcr.io/acme/app:1.0"
  path: mutate
  expect: allow
"#;
    let file = dir.join("cases.yaml");
    std::fs::write(&file, cases).unwrap();
    let out = run(&["test", file.to_str().unwrap()], None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(stdout(&out), "6 cases: 6 passed, 0 failed\n");
    // The staged roll-out's next step: signed.yaml enforced, the same
    // case now fails — as the table says it would.
    let enforced = std::fs::read_to_string(set.join("signed.yaml"))
        .unwrap()
        .replace("mode: warn", "mode: enforce");
    std::fs::write(set.join("signed.yaml"), enforced).unwrap();
    let out = run(&["test", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("FAIL  unsigned in prod only warns while signed.yaml is in warn mode: expected warn, got deny: image policy: policy \"signed\": container \"c0\" image \"ghcr.io/acme/app:1.0\" must be signed"),
        "{text}"
    );
    assert!(text.ends_with("6 cases: 5 passed, 1 failed\n"), "{text}");
    // A broken cases file: every problem, exit 2.
    std::fs::write(
        &file,
        "cases:\n- image: x\n  expect: maybe\n  colour: red\n",
    )
    .unwrap();
    let out = run(
        &[
            "test",
            "--policy",
            set.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("$.cases[0].expect: \"maybe\" is not allow, deny or warn"),
        "{err}"
    );
    assert!(err.contains("$.cases[0].colour: unknown key"), "{err}");
}
