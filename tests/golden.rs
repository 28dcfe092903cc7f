//! Golden wire tests: every `<case>.request.json` under
//! `tests/fixtures/{imagereview,admission}` is POSTed to the real server over
//! TLS, exactly as the apiserver sends it (query string included), and the
//! reply must equal `<case>.response.json`. A `<case>.policy.json` next to
//! the request selects the policy. `BLESS=1 cargo test` rewrites the
//! expectations; review the diff before committing it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::common::{Client, Pki, Server, client_config, fixtures};

/// Cases of one folder, by name.
fn cases(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p
                .file_name()?
                .to_str()?
                .strip_suffix(".request.json")?
                .to_string();
            Some((name, p))
        })
        .collect();
    out.sort();
    out
}

/// What the test compares: the JSON reply, or status and text for non-200.
fn observed(status: u16, body: &[u8]) -> Value {
    if status == 200 {
        serde_json::from_slice(body).unwrap()
    } else {
        json!({"httpStatus": status, "body": String::from_utf8_lossy(body)})
    }
}

fn run_folder(kind: &str, path: &str, check: fn(&str, &Value, &Value)) {
    let dir = fixtures().join(kind);
    let pki = Pki::new(&format!("golden-{kind}"));
    let (cert, key) = pki.server("server");
    let config = client_config(&pki.ca_file, None);
    let base = [
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let bless = std::env::var_os("BLESS").is_some();
    let mut servers: BTreeMap<Option<PathBuf>, Server> = BTreeMap::new();
    let mut failures = Vec::new();
    let all = cases(&dir);
    assert!(all.len() >= 10, "only {} {kind} cases", all.len());
    for (name, request) in all {
        let policy = dir.join(format!("{name}.policy.json"));
        let policy = policy.exists().then_some(policy);
        let server = servers.entry(policy.clone()).or_insert_with(|| {
            let mut args: Vec<&str> = base.to_vec();
            if let Some(p) = &policy {
                args.extend(["--policy", p.to_str().unwrap()]);
            }
            Server::start(&args)
        });
        let body = std::fs::read(&request).unwrap();
        let reply = Client::tls(server.addr, config.clone())
            .unwrap()
            .post(path, &body)
            .unwrap();
        let got = observed(reply.status, &reply.body);
        let request_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        check(&name, &request_json, &got);
        let expected_file = dir.join(format!("{name}.response.json"));
        if bless {
            std::fs::write(
                &expected_file,
                serde_json::to_string_pretty(&got).unwrap() + "\n",
            )
            .unwrap();
            continue;
        }
        let expected: Value = match std::fs::read(&expected_file) {
            Ok(b) => serde_json::from_slice(&b).unwrap(),
            Err(_) => {
                failures.push(format!("{name}: no {}", expected_file.display()));
                continue;
            }
        };
        if got != expected {
            failures.push(format!(
                "{name}:\n  expected {}\n  got      {}",
                serde_json::to_string(&expected).unwrap(),
                serde_json::to_string(&got).unwrap()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden mismatches (BLESS=1 to rewrite):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn imagereview_golden() {
    run_folder(
        "imagereview",
        "/image_policy?timeout=30s",
        |name, _req, got| {
            // The apiserver falls back to defaultAllow on anything but a 200
            // ImageReview, so only a body that is not JSON may get a 400.
            if name.contains("not-json") {
                assert_eq!(got["httpStatus"], 400, "{name}");
            } else {
                assert_eq!(got["apiVersion"], "imagepolicy.k8s.io/v1alpha1", "{name}");
                assert_eq!(got["kind"], "ImageReview", "{name}");
                assert!(got["status"]["allowed"].is_boolean(), "{name}");
                if got["status"]["allowed"] == false {
                    assert!(
                        !got["status"]["reason"].as_str().unwrap().is_empty(),
                        "{name}"
                    );
                }
            }
        },
    );
}

#[test]
fn admission_golden() {
    run_folder("admission", "/validate?timeout=10s", |name, req, got| {
        if got.get("httpStatus").is_some() {
            assert!(name.starts_with("malformed-"), "{name} got {got}");
            return;
        }
        // The apiserver refuses replies with another version, kind or uid.
        assert_eq!(got["apiVersion"], req["apiVersion"], "{name}");
        assert_eq!(got["kind"], "AdmissionReview", "{name}");
        assert_eq!(got["response"]["uid"], req["request"]["uid"], "{name}");
        assert!(
            got["response"].get("patch").is_none(),
            "{name}: a validating webhook never patches"
        );
        if got["response"]["allowed"] == false {
            assert!(
                !got["response"]["status"]["message"]
                    .as_str()
                    .unwrap()
                    .is_empty(),
                "{name}"
            );
        }
    });
}
