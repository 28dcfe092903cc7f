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
            "mirror.example.com",
        ],
    );
    let body =
        std::fs::read(fixtures().join("admission/pod-create-init-container-untagged.request.json"))
            .unwrap();
    let request: Value = serde_json::from_slice(&body).unwrap();
    let mut c = Client::tls(server.addr, client_config(&pki.ca_file, None)).unwrap();
    let reply = c.post("/mutate?timeout=10s", &body).unwrap().json();
    assert_eq!(reply["response"]["allowed"], true);
    assert_eq!(reply["response"]["patchType"], "JSONPatch");
    let pod = apply(&request["request"]["object"], &decode_patch(&reply));
    assert_eq!(
        pod["spec"]["containers"][0]["image"],
        "mirror.example.com/library/nginx:1.27"
    );
    assert_eq!(
        pod["spec"]["initContainers"][0]["image"],
        "mirror.example.com/library/busybox"
    );
    assert_eq!(
        pod["spec"]["initContainers"][0]["imagePullPolicy"],
        "Always"
    );
    assert_eq!(
        pod["spec"]["imagePullSecrets"],
        serde_json::json!([{"name": "regcred"}])
    );

    // The combined setup: the mutated pod, validated, passes the allow list
    // except for the untagged image; the original would not.
    let mut review = request.clone();
    review["request"]["object"] = pod;
    let v = c
        .post("/validate", review.to_string().as_bytes())
        .unwrap()
        .json();
    assert!(v["response"].get("patch").is_none());
    let message = v["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("mirror.example.com/library/busybox") && message.contains("has no tag"),
        "{message}"
    );
    assert!(!message.contains("allowedRegistries"), "{message}");
    let v = c.post("/validate", &body).unwrap().json();
    assert!(
        v["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("not in allowedRegistries")
    );
    server.wait_for_log(
        "/mutate: patched CREATE Pod default/v-127",
        std::time::Duration::from_secs(2),
    );
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
    let body = std::fs::read(fixtures().join("admission/pod-create-latest.request.json")).unwrap();
    let reply = c.post("/mutate", &body).unwrap().json();
    let patch = decode_patch(&reply).to_string();
    assert!(
        patch.contains("mirror.example.com/library/nginx:latest") && patch.contains("regcred"),
        "{patch}"
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
