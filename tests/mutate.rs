//! `/mutate` end to end, the drop-in environment of
//! k8s-mutate-image-and-policy-webhook, and `check --mutate`.

use std::process::Command;

use serde_json::Value;

use crate::common::{
    BIN, Client, Pki, client_config, fixtures, loopback, run, spawn_listening, stderr, stdout,
    tls_server,
};

fn decode_patch(reply: &Value) -> Value {
    let b64 = reply["response"]["patch"].as_str().expect("a patch");
    serde_json::from_slice(&crate::golden::base64_decode(b64)).unwrap()
}

fn apply(object: &Value, patch: &Value) -> Value {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
    let mut out = object.clone();
    json_patch::patch(&mut out, &ops).unwrap();
    out
}

/// The pod of `kubectl run --image=<image>`, as the apiserver sends it.
fn pod_review(image: &str) -> Value {
    let body = std::fs::read(fixtures().join("admission/pod-create-allowed.request.json")).unwrap();
    let mut review: Value = serde_json::from_slice(&body).unwrap();
    review["request"]["object"]["spec"]["containers"][0]["image"] = image.into();
    review
}

#[test]
fn mutate_over_tls_and_validate_never_patches() {
    let (pki, server) = tls_server(
        "mutate-e2e",
        &[
            "--rewrite-registry",
            "mirror.example.com",
            "--image-pull-secret",
            "regcred",
            "--image-pull-policy=Always",
            "--allow-registry",
            "docker.io/library",
        ],
    );
    let mut c = Client::tls(server.addr, client_config(&pki.ca_file, None)).unwrap();
    let request = pod_review("nginx:1.27");
    let reply = c
        .post("/mutate?timeout=10s", request.to_string().as_bytes())
        .unwrap()
        .json();
    assert_eq!(reply["response"]["allowed"], true);
    assert_eq!(reply["response"]["patchType"], "JSONPatch");
    let pod = apply(&request["request"]["object"], &decode_patch(&reply));
    assert_eq!(
        pod["spec"]["containers"][0]["image"],
        "mirror.example.com/library/nginx:1.27"
    );
    assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(
        pod["spec"]["imagePullSecrets"],
        serde_json::json!([{"name": "regcred"}])
    );
    // The mutated pod, validated: judged as the image it mirrors, which the
    // allow list names; no patch from /validate.
    let mut review = request.clone();
    review["request"]["object"] = pod;
    let v = c
        .post("/validate", review.to_string().as_bytes())
        .unwrap()
        .json();
    assert!(v["response"].get("patch").is_none());
    assert_eq!(v["response"]["allowed"], true, "{v}");
    server.wait_for_log(
        "/mutate: patched CREATE Pod default/v-127",
        std::time::Duration::from_secs(2),
    );

    // What the policy refuses as written is refused by /mutate, unpatched.
    let body =
        std::fs::read(fixtures().join("admission/pod-create-init-container-untagged.request.json"))
            .unwrap();
    let v = c.post("/mutate", &body).unwrap().json();
    assert_eq!(v["response"]["allowed"], false, "{v}");
    assert!(v["response"].get("patch").is_none());
    let message = v["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("image \"busybox\" has no tag"),
        "{message}"
    );
}

/// The second outside review's case: rules about upstream registries must
/// hold behind a rewrite, at /mutate and at /validate.
#[test]
fn rules_about_upstream_registries_hold_behind_a_rewrite() {
    let pki = Pki::new("mutate-upstream");
    let (cert, key) = pki.server("server");
    // The review's policy names the mirror in the allow list: an entry that
    // can never match (mirrored names are judged upstream), so refused.
    let policy = pki.dir.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"allowedRegistries":["mirror.example.com","docker.io/library"],"deniedRegistries":["docker.io/evilcorp","quay.io"],"mutate":{"rewriteRegistry":"mirror.example.com"}}"#,
    )
    .unwrap();
    let out = run(
        &["check", "--policy", policy.to_str().unwrap(), "nginx:1.27"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(
            "allowedRegistries: \"mirror.example.com\" names a registry the mutations fill"
        ),
        "{}",
        stderr(&out)
    );
    std::fs::write(
        &policy,
        r#"{"allowedRegistries":["docker.io/library"],"deniedRegistries":["docker.io/evilcorp","quay.io"],"mutate":{"rewriteRegistry":"mirror.example.com"}}"#,
    )
    .unwrap();
    let server = crate::common::Server::start(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ]);
    let mut c = Client::tls(server.addr, client_config(&pki.ca_file, None)).unwrap();
    let denied = |c: &mut Client, path: &str, image: &str| -> String {
        let v = c
            .post(path, pod_review(image).to_string().as_bytes())
            .unwrap()
            .json();
        assert_eq!(v["response"]["allowed"], false, "{path} {image}: {v}");
        assert!(v["response"].get("patch").is_none());
        v["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // /mutate judges the image as written, before any rewrite.
    let m = denied(&mut c, "/mutate", "quay.io/evilcorp/miner:1");
    assert!(m.contains("deniedRegistries entry \"quay.io\""), "{m}");
    // /validate judges a mirrored name by the image it mirrors.
    for (image, entry) in [
        ("mirror.example.com/quay.io/evilcorp/miner:1", "\"quay.io\""),
        (
            "mirror.example.com/evilcorp/miner:1",
            "\"docker.io/evilcorp\"",
        ),
    ] {
        let m = denied(&mut c, "/validate", image);
        assert!(
            m.contains(&format!("deniedRegistries entry {entry}")),
            "{image}: {m}"
        );
    }
    // check agrees.
    let out = run(
        &[
            "check",
            "--policy",
            policy.to_str().unwrap(),
            "quay.io/evilcorp/miner:1",
            "mirror.example.com/quay.io/evilcorp/miner:1",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    // An allowed image goes through both.
    let v = c
        .post("/mutate", pod_review("nginx:1.27").to_string().as_bytes())
        .unwrap()
        .json();
    assert_eq!(v["response"]["allowed"], true);
    let v = c
        .post(
            "/validate",
            pod_review("mirror.example.com/library/nginx:1.27")
                .to_string()
                .as_bytes(),
        )
        .unwrap()
        .json();
    assert_eq!(v["response"]["allowed"], true, "{v}");
}

#[test]
fn drop_in_for_the_environment_of_the_older_project() {
    let pki = Pki::new("mutate-legacy");
    let (cert, key) = pki.server("server");
    // No arguments at all, only the older project's variables.
    let (mut child, printed) = spawn_listening(
        Command::new(BIN)
            .env("TLS_CERT_FILE", &cert)
            .env("TLS_KEY_FILE", &key)
            .env("PORT", "0")
            .env("REGISTRY", "mirror.example.com")
            .env("IMAGE_PULL_SECRET", "regcred")
            .env("FORCE_IMAGE_PULL_POLICY", "true")
            .env("DEFAULT_STORAGE_CLASS", "fast")
            .env("EXCLUDE_NAMESPACES", "kube-system")
            .env("LOG_LEVEL", "debug"),
    );
    let addr = loopback(printed);
    let mut c = Client::tls(addr, client_config(&pki.ca_file, None)).unwrap();
    let body =
        std::fs::read(fixtures().join("mutate/pvc-create-class-absent.request.json")).unwrap();
    let reply = c.post("/mutate", &body).unwrap().json();
    assert_eq!(
        decode_patch(&reply),
        serde_json::json!([{"op": "add", "path": "/spec/storageClassName", "value": "fast"}])
    );
    let body = std::fs::read(fixtures().join("admission/pod-create-allowed.request.json")).unwrap();
    let reply = c.post("/mutate", &body).unwrap().json();
    let patch = decode_patch(&reply).to_string();
    assert!(
        patch.contains("mirror.example.com/library/nginx:1.27") && patch.contains("regcred"),
        "{patch}"
    );
    // The policy (default: no latest) is applied before the rewrite.
    let body = std::fs::read(fixtures().join("admission/pod-create-latest.request.json")).unwrap();
    assert_eq!(
        c.post("/mutate", &body).unwrap().json()["response"]["allowed"],
        false
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn check_mutate_prints_the_patch() {
    let deploy = fixtures().join("admission/deployment-create-allowed.request.json");
    let review: Value = serde_json::from_slice(&std::fs::read(&deploy).unwrap()).unwrap();
    let object = review["request"]["object"].to_string();
    let out = run(
        &[
            "check",
            "--mutate",
            "--mutate-templates",
            "--rewrite-registry=mirror.example.com",
            "-f",
            "-",
        ],
        Some(&object),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{}", stdout(&out));
    let patched = apply(
        &review["request"]["object"],
        &serde_json::from_str(lines[0]).unwrap(),
    );
    assert_eq!(
        patched["spec"]["template"]["spec"]["containers"][0]["image"],
        "mirror.example.com/library/nginx:1.27"
    );
    // The AdmissionReview itself is mutated exactly as /mutate would.
    let out = run(
        &[
            "check",
            "--mutate",
            "--rewrite-registry=mirror.example.com",
            "-f",
            deploy.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(stdout(&out).trim(), "[]", "templates are off by default");
    let out = run(&["check", "--mutate", "nginx"], None);
    assert_eq!(out.status.code(), Some(2));
}

/// The mutate-then-validate set-up offline: patches, then the verdict on
/// the mutated objects.
#[test]
fn check_mutate_validate_judges_the_mutated_objects() {
    let docs = "kind: Pod\nmetadata: {name: ok}\nspec: {containers: [{name: c, image: 'quay.io/team/app:1'}]}\n---\nkind: Pod\nmetadata: {name: bad}\nspec: {containers: [{name: c, image: 'ghcr.io/evil/x:1'}]}\n";
    let out = run(
        &[
            "check",
            "--mutate",
            "--validate",
            "--rewrite-registry",
            "mirror.example.com",
            "--allow-registry",
            "quay.io/team",
            "-f",
            "-",
        ],
        Some(docs),
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains("mirror.example.com/quay.io/team/app:1"),
        "{text}"
    );
    assert_eq!(lines[1], "[]", "{text}"); // refused as written: no patch
    assert!(text.contains("ALLOW  Pod ok  container \"c\"  mirror.example.com/quay.io/team/app:1  quay.io/team/app:1"), "{text}");
    assert!(text.contains("DENY   Pod bad"), "{text}");
}
