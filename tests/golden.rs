//! Golden wire tests: every `<case>.request.json` under
//! `tests/fixtures/{imagereview,admission}` is POSTed to the real server over
//! TLS, exactly as the apiserver sends it (query string included), and the
//! reply must equal `<case>.response.json`. A `<case>.policy.d` folder (a
//! policy set) or `<case>.policy.json` next to the request selects the
//! policy (else the folder's `default.policy.json`,
//! else none). For `/mutate` the base64 `patch` is shown decoded in the
//! expectation, so that it can be reviewed, and it is applied to the request
//! object with an independent JSON Patch implementation. `BLESS=1 cargo
//! test` rewrites the expectations; review the diff before committing it.

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

fn run_folder(kind: &str, path: &str, check: fn(&str, &Value, &mut Value)) {
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
        let policy = [
            dir.join(format!("{name}.policy.d")),
            dir.join(format!("{name}.policy.json")),
            dir.join("default.policy.json"),
        ]
        .into_iter()
        .find(|p| p.exists());
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
        let mut got = observed(reply.status, &reply.body);
        let request_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        check(&name, &request_json, &mut got);
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
            // ImageReview, so every case, a body that is not JSON too, gets one.
            {
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
        let got = &*got;
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

#[test]
fn mutate_golden() {
    run_folder("mutate", "/mutate?timeout=10s", |name, req, got| {
        if got.get("httpStatus").is_some() {
            assert!(name.starts_with("malformed-"), "{name} got {got}");
            return;
        }
        assert_eq!(got["apiVersion"], req["apiVersion"], "{name}");
        assert_eq!(got["response"]["uid"], req["request"]["uid"], "{name}");
        // It denies only what the policy refuses as written (before rewriting).
        assert_eq!(
            got["response"]["allowed"],
            !name.contains("denied"),
            "{name}"
        );
        let response = got["response"].as_object_mut().unwrap();
        // Both or neither, and never `patch: null`.
        assert_eq!(
            response.contains_key("patch"),
            response.contains_key("patchType"),
            "{name}"
        );
        let Some(encoded) = response.get("patch") else {
            return;
        };
        assert_eq!(response["patchType"], "JSONPatch", "{name}");
        let bytes = base64_decode(encoded.as_str().unwrap());
        let patch: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(
            !patch.as_array().unwrap().is_empty(),
            "{name}: an empty patch must be left out"
        );
        let ops: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
        let mut object = req["request"]["object"].clone();
        json_patch::patch(&mut object, &ops).unwrap_or_else(|e| panic!("{name}: {e}"));
        response.insert("patch".into(), patch);
    });
}

/// Standard base64 with padding; panics on anything else.
pub fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    assert_eq!(s.len() % 4, 0, "base64 length");
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let mut n = 0u32;
        let mut pad = 0;
        for &c in chunk {
            n <<= 6;
            if c == b'=' {
                pad += 1;
            } else {
                n |= ALPHABET
                    .iter()
                    .position(|&a| a == c)
                    .expect("base64 alphabet") as u32;
            }
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    out
}
