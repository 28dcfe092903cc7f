//! Attestations made here in cosign's formats (tests/signer.rs: a test
//! Fulcio with the build and source extensions, a test Rekor), in both
//! places cosign puts them (DSSE bundles among the referrers, the legacy
//! `.att` image), pushed to the real registry and judged by the real
//! server under the README's own example entry.

use crate::common::{Client, client_config, tls_server};
use crate::registry::{Registry, Setup, start_with};
use crate::signer::{Key, Leaf, Sigstore};
use crate::signing::{
    base_policy, digest_of, judge, push_annotated_bundles, push_bundles, push_image_of, write,
};

const ISSUER: &str = "https://token.actions.githubusercontent.com";
const SUBJECT: &str = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main";
const REPO_URI: &str = "https://github.com/acme/app";
/// 2026-01-01T01:00:00Z: inside the test leaves' day.
const SIGNED_AT: i64 = 1_767_229_200;
const DAY: (i32, u8, u8) = (2026, 1, 1);
const SLSA: &str = "https://slsa.dev/provenance/v1";
const VULN: &str = "https://cosign.sigstore.dev/attestation/vuln/v1";
const DSSE: &str = "application/vnd.dsse.envelope.v1+json";

fn att_tag(digest: &str) -> String {
    format!("{}.att", digest.replace(':', "-"))
}

/// The README's example entry, verbatim, for images of this registry.
fn readme_entry(reg: &str, root: &str) -> serde_json::Value {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("<!-- attestation-example -->\n```json\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the README's attestation example");
    let block = block
        .replace("ghcr.io/acme/*", &format!("{reg}/acme/*"))
        .replace("/etc/image-bouncer/trusted_root.json", root);
    serde_json::from_str(&block).expect("the README's example is JSON")
}

fn statement(digest: &str, predicate_type: &str, predicate: serde_json::Value) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap();
    serde_json::json!({"_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "app", "digest": {"sha256": hex}}],
        "predicateType": predicate_type, "predicate": predicate})
    .to_string()
}

fn provenance(repository: &str) -> serde_json::Value {
    serde_json::json!({"buildDefinition": {"buildType": "https://actions.github.io/buildtypes/workflow/v1",
        "externalParameters": {"workflow": {"repository": repository, "ref": "refs/heads/main", "path": ".github/workflows/release.yml"}}},
        "runDetails": {"builder": {"id": "https://github.com/actions/runner"}}})
}

fn scan(finished: &str, critical: u32) -> serde_json::Value {
    serde_json::json!({"scanner": {"uri": "pkg:github/aquasecurity/trivy", "version": "0.58.0",
        "result": {"summary": {"critical": critical, "high": 3}}},
        "metadata": {"scanStartedOn": finished, "scanFinishedOn": finished}})
}

/// A registry, its `host:port`, a test sigstore with its trusted root
/// written there, and the CI's leaf: the release workflow of `acme/app` on
/// main, with Fulcio's `.12` sourceRepositoryURI and `.14`
/// sourceRepositoryRef.
fn set_up(name: &str) -> Option<(Registry, String, Sigstore, String, Leaf)> {
    let r = start_with(name, Setup::default())?;
    let reg = format!("127.0.0.1:{}", r.port);
    let s = Sigstore::new();
    let root = write(&r.dir, "trusted_root.json", &s.trusted_root());
    let ci = s.leaf_with(
        SUBJECT,
        ISSUER,
        DAY,
        &[(12, REPO_URI), (14, "refs/heads/main")],
    );
    Some((r, reg, s, root, ci))
}

/// One image: its signature (a bundle, as `cosign sign` v3 writes it),
/// its provenance as a bundle, its scan in the legacy `.att` image.
struct Image<'a> {
    s: &'a Sigstore,
    signer: &'a Leaf,
    provenance: Option<String>,
    scan: Option<String>,
}

impl Image<'_> {
    fn push(&self, r: &Registry, repo: &str, digest: &str) {
        let mut bundles = vec![self.s.keyless_bundle(self.signer, digest, SIGNED_AT)];
        if let Some(p) = &self.provenance {
            bundles.push(self.s.keyless_statement_bundle(self.signer, p, SIGNED_AT));
        }
        let refs: Vec<&str> = bundles.iter().map(String::as_str).collect();
        push_bundles(r, repo, digest, &refs);
        if let Some(scan) = &self.scan {
            push_image_of(
                r,
                repo,
                &att_tag(digest),
                DSSE,
                &[self.s.att_layer(self.signer, scan, SIGNED_AT)],
            );
        }
    }
}

/// The README's example end to end: admitted with provenance and a fresh
/// clean scan from the pinned repository and branch; refused, each with
/// its reason, for every requirement broken one at a time.
#[test]
fn the_readme_attestation_example_end_to_end() {
    let Some((r, reg, s, root, ci)) = set_up("attesting") else {
        return;
    };
    let branch = s.leaf_with(
        "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/dev",
        ISSUER,
        DAY,
        &[(12, REPO_URI), (14, "refs/heads/dev")],
    );
    let fork = s.leaf_with(
        "https://github.com/mallory/app/.github/workflows/release.yml@refs/heads/main",
        ISSUER,
        DAY,
        &[
            (12, "https://github.com/mallory/app"),
            (14, "refs/heads/main"),
        ],
    );
    let now = image_bouncer::time::unix_now();
    let fresh = image_bouncer::time::rfc3339(now - 86_400);
    let stale = image_bouncer::time::rfc3339(now - 10 * 86_400);
    let good = |d: &str| Image {
        s: &s,
        signer: &ci,
        provenance: Some(statement(d, SLSA, provenance(REPO_URI))),
        scan: Some(statement(d, VULN, scan(&fresh, 0))),
    };
    let mut cases: Vec<(&str, String, &str)> = Vec::new();
    // Each case: its repository and digest, what it pushes there, what
    // the refusal says (nothing: admitted).
    let mut add = |name: &'static str, make: &dyn Fn(&str, &str), says: &'static str| {
        let d = digest_of(name);
        make(&format!("acme/{name}"), &d);
        cases.push((name, format!("{reg}/acme/{name}@{d}"), says));
    };
    add("ok", &|repo, d| good(d).push(&r, repo, d), "");
    add(
        "no-scan",
        &|repo, d| {
            (Image {
                scan: None,
                ..good(d)
            })
            .push(&r, repo, d)
        },
        "attestations[1] (https://cosign.sigstore.dev/attestation/vuln/v1): no statement of that type",
    );
    add(
        "wrong-type",
        &|repo, d| {
            Image {
                provenance: Some(statement(
                    d,
                    "https://slsa.dev/provenance/v0.2",
                    provenance(REPO_URI),
                )),
                ..good(d)
            }
            .push(&r, repo, d)
        },
        "attestations[0] (https://slsa.dev/provenance/v1): no statement of that type, signed by an accepted signer, names this digest (verified statements are of https://sigstore.dev/cosign/sign/v1, https://slsa.dev/provenance/v0.2)",
    );
    add(
        "critical",
        &|repo, d| {
            (Image {
                scan: Some(statement(d, VULN, scan(&fresh, 2))),
                ..good(d)
            })
            .push(&r, repo, d)
        },
        "attestations[1] (https://cosign.sigstore.dev/attestation/vuln/v1): its condition is false: timestamp(",
    );
    add(
        "stale",
        &|repo, d| {
            (Image {
                scan: Some(statement(d, VULN, scan(&stale, 0))),
                ..good(d)
            })
            .push(&r, repo, d)
        },
        "its condition is false",
    );
    add(
        "unreadable",
        &|repo, d| {
            (Image {
                scan: Some(statement(d, VULN, scan("yesterday", 0))),
                ..good(d)
            })
            .push(&r, repo, d)
        },
        "attestations[1] (https://cosign.sigstore.dev/attestation/vuln/v1): its condition could not be evaluated",
    );
    add(
        "other-repo",
        &|repo, d| {
            Image {
                provenance: Some(statement(
                    d,
                    SLSA,
                    provenance("https://github.com/mallory/app"),
                )),
                ..good(d)
            }
            .push(&r, repo, d)
        },
        "attestations[0] (https://slsa.dev/provenance/v1): its condition is false",
    );
    add(
        "other-digest",
        &|repo, d| {
            let other = digest_of("somewhere else");
            Image {
                provenance: Some(statement(&other, SLSA, provenance(REPO_URI))),
                ..good(d)
            }
            .push(&r, repo, d)
        },
        "a signature for another digest",
    );
    // The provenance signed by a fork's workflow (the signature and the
    // scan by CI).
    add(
        "fork",
        &|repo, d| {
            let sig = s.keyless_bundle(&ci, d, SIGNED_AT);
            let prov = s.keyless_statement_bundle(
                &fork,
                &statement(d, SLSA, provenance(REPO_URI)),
                SIGNED_AT,
            );
            push_bundles(&r, repo, d, &[&sig, &prov]);
            let att = s.att_layer(&ci, &statement(d, VULN, scan(&fresh, 0)), SIGNED_AT);
            push_image_of(&r, repo, &att_tag(d), DSSE, &[att]);
        },
        "identity \"https://github.com/mallory/app/.github/workflows/release.yml@refs/heads/main\" from issuer \"https://token.actions.githubusercontent.com\" is not accepted",
    );
    // A statement that names the digest, in an envelope whose signature
    // is over another statement.
    add(
        "swapped",
        &|repo, d| {
            let sig = s.keyless_bundle(&ci, d, SIGNED_AT);
            let signed = statement(d, SLSA, provenance("https://github.com/mallory/app"));
            let mut prov: serde_json::Value =
                serde_json::from_str(&s.keyless_statement_bundle(&ci, &signed, SIGNED_AT)).unwrap();
            prov["dsseEnvelope"]["payload"] =
                crate::signer::b64(statement(d, SLSA, provenance(REPO_URI)).as_bytes()).into();
            push_bundles(&r, repo, d, &[&sig, &prov.to_string()]);
            let att = s.att_layer(&ci, &statement(d, VULN, scan(&fresh, 0)), SIGNED_AT);
            push_image_of(&r, repo, &att_tag(d), DSSE, &[att]);
        },
        "the signature does not verify with its certificate's key",
    );
    // A scan of more than a statement may be.
    add(
        "huge",
        &|repo, d| {
            let mut big = scan(&fresh, 0);
            big["vulnerabilities"] = "x".repeat(1_200_000).into();
            Image {
                scan: Some(statement(d, VULN, big)),
                ..good(d)
            }
            .push(&r, repo, d)
        },
        "a DSSE layer of the .att image larger than accepted",
    );
    // Annotations only ever spare a fetch: a provenance bundle annotated
    // as an SBOM is not fetched once the signature is found (so the item
    // is not met), and one annotated as provenance that holds another
    // type does not meet it either.
    for (name, annotated, holds) in [
        ("annotated-sbom", "https://spdx.dev/Document", SLSA),
        ("annotated-slsa", SLSA, "https://slsa.dev/provenance/v0.2"),
    ] {
        add(
            name,
            &|repo, d| {
                let sig = s.keyless_bundle(&ci, d, SIGNED_AT);
                let prov = s.keyless_statement_bundle(
                    &ci,
                    &statement(d, holds, provenance(REPO_URI)),
                    SIGNED_AT,
                );
                push_annotated_bundles(
                    &r,
                    repo,
                    d,
                    &[
                        (&sig, Some("https://sigstore.dev/cosign/sign/v1")),
                        (&prov, Some(annotated)),
                    ],
                );
                let att = s.att_layer(&ci, &statement(d, VULN, scan(&fresh, 0)), SIGNED_AT);
                push_image_of(&r, repo, &att_tag(d), DSSE, &[att]);
            },
            "attestations[0] (https://slsa.dev/provenance/v1): no statement of that type",
        );
    }
    // Everything from the dev branch: the pinned ref refuses it.
    add(
        "branch",
        &|repo, d| {
            (Image {
                signer: &branch,
                ..good(d)
            })
            .push(&r, repo, d)
        },
        "sourceRepositoryRef is \"refs/heads/dev\", not \"refs/heads/main\"",
    );
    let policy = write(
        &r.dir,
        "policy.json",
        &base_policy(&r, serde_json::json!([readme_entry(&reg, &root)])).to_string(),
    );
    let (pki, server) = tls_server("attesting-server", &["--policy", &policy]);
    let mut c = Client::tls(server.addr, client_config(&pki.ca_file, None)).unwrap();
    for (name, image, says) in &cases {
        let (ok, why) = judge(&mut c, image);
        if says.is_empty() {
            assert!(ok, "{name}: {why}");
        } else {
            assert!(!ok && why.contains(says), "{name}: {why}");
        }
    }
    // `check --json` lists each item with the statement that met it.
    let ok = &cases[0].1;
    let out = crate::common::run(&["check", "--json", "--policy", &policy, ok], None);
    let v: serde_json::Value = serde_json::from_str(&crate::common::stdout(&out))
        .unwrap_or_else(|e| panic!("{e}: {}", crate::common::stderr(&out)));
    let sig = &v["images"][0]["signature"];
    assert_eq!(sig["verified"], true, "{v}");
    let items = sig["attestations"].as_array().expect("attestations listed");
    assert_eq!(items.len(), 2, "{v}");
    assert_eq!(items[0]["item"], "verifyImages[0].attestations[0]");
    assert_eq!(items[0]["predicate_type"], SLSA);
    assert_eq!(items[0]["found_in"], "sigstore bundle");
    assert_eq!(items[1]["predicate_type"], VULN);
    assert_eq!(items[1]["found_in"], "legacy attestation");
    for item in items {
        assert!(item["signer"].as_str().unwrap().contains(SUBJECT), "{item}");
        assert!(
            item["envelope"].as_str().unwrap().starts_with("sha256:"),
            "{item}"
        );
    }
    // In a PolicyReport an item not met is its own rule.
    let critical = &cases.iter().find(|c| c.0 == "critical").unwrap().1;
    let out = crate::common::run(
        &[
            "check",
            "--output",
            "policyreport",
            "--policy",
            &policy,
            ok,
            critical,
        ],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&crate::common::stdout(&out))
        .unwrap_or_else(|e| panic!("{e}: {}", crate::common::stderr(&out)));
    let results: Vec<&serde_json::Value> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["results"].as_array().unwrap())
        .collect();
    let of = |image: &str| {
        results
            .iter()
            .find(|r| r["properties"]["image"] == image)
            .unwrap_or_else(|| panic!("{image} in {v}"))
    };
    assert_eq!(of(ok)["result"], "pass", "{v}");
    let r = of(critical);
    assert_eq!(r["result"], "fail", "{v}");
    assert_eq!(r["rule"], "attestation-required", "{v}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("verifyImages[0].attestations[1]"),
        "{r}"
    );
}

/// An item with its own signers: the scan must be signed by the scanner's
/// key, whoever signed the image; the same scan signed by the image's own
/// signer does not count for it. A condition that could run long is
/// refused when the policy loads, before anything runs.
#[test]
fn an_items_own_signers_and_a_condition_refused_at_load() {
    let Some((r, reg, s, root, ci)) = set_up("attesting-own") else {
        return;
    };
    let scanner = Key::p256();
    let scanner_pub = write(&r.dir, "scanner.pub", &scanner.pem());
    let fresh = image_bouncer::time::rfc3339(image_bouncer::time::unix_now() - 3600);
    let push = |name: &str, by_scanner: bool| {
        let d = digest_of(name);
        let scan = statement(&d, VULN, scan(&fresh, 0));
        let att = if by_scanner {
            s.keyed_statement_bundle(&scanner, &scan, SIGNED_AT)
        } else {
            s.keyless_statement_bundle(&ci, &scan, SIGNED_AT)
        };
        let sig = s.keyless_bundle(&ci, &d, SIGNED_AT);
        push_bundles(&r, &format!("acme/{name}"), &d, &[&sig, &att]);
        format!("{reg}/acme/{name}@{d}")
    };
    let by_scanner = push("by-scanner", true);
    let by_ci = push("by-ci", false);
    let entry = |condition: &str| {
        serde_json::json!([{ "images": [format!("{reg}/acme/*")], "trustedRoot": root,
            "identities": [{"issuer": ISSUER, "subject": SUBJECT}],
            "attestations": [{"predicateType": "vuln", "keys": [scanner_pub], "condition": condition}]}])
    };
    let policy = write(
        &r.dir,
        "own.json",
        &base_policy(&r, entry("predicate.scanner.result.summary.critical == 0")).to_string(),
    );
    let (pki, server) = tls_server("attesting-own-server", &["--policy", &policy]);
    let mut c = Client::tls(server.addr, client_config(&pki.ca_file, None)).unwrap();
    let (ok, why) = judge(&mut c, &by_scanner);
    assert!(ok, "{why}");
    let (ok, why) = judge(&mut c, &by_ci);
    assert!(
        !ok && why.contains("attestations[0] (vuln): no statement of that type"),
        "{why}"
    );
    drop(server);
    let slow = write(
        &r.dir,
        "slow.json",
        &base_policy(&r, entry("predicate.a.all(x, predicate.a.all(y, x == y))")).to_string(),
    );
    let out = crate::common::run(&["check", "--policy", &slow, "nginx:1"], None);
    let err = crate::common::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("attestations[0].condition: the condition could cost"),
        "{err}"
    );
}
