//! What registry lookups cost, against the real distribution registry
//! (Debian's `docker-registry`, started here on 127.0.0.1 with TLS and
//! htpasswd Basic auth): a cached lookup, a cold lookup's round trips,
//! 100 concurrent reviews of one new image, and a 1,000-pod rollout of one
//! new tag through the real server's `/mutate`. Prints a Markdown table.
//!
//!   bench/registry.sh          (release build; needs docker-registry, htpasswd)

mod common;

use std::io::Write as _;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use image_bouncer::credentials::Credentials;
use image_bouncer::digest::Digest;
use image_bouncer::image_ref::ImageRef;
use image_bouncer::registry::client::Client;
use image_bouncer::registry::proxy::ProxyConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The image the real 2026 keyless signature is for, and who signed it.
const SERVER_IMAGE: &str =
    "sha256:c05263d2ff654c3a94243662440913f045075d59c436e2c69e9145ec2b87a321";
const GHA_SUBJECT: &str = "https://github.com/salrashid123/go-bazel-github-workflow/.github/workflows/release.yaml@refs/tags/v0.0.30";

struct Registry {
    child: Child,
    port: u16,
    agent: ureq::Agent,
    log: std::path::PathBuf,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn basic() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    )
}

impl Registry {
    fn start(work: &std::path::Path, pki: &Pki) -> Registry {
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", "alice", "s3cret"])
            .output()
            .expect("htpasswd (apache2-utils)");
        std::fs::write(work.join("htpasswd"), &htpasswd.stdout).expect("write");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {w}/data\nhttp:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {crt}\n    key: {key}\nauth:\n  htpasswd:\n    realm: bench\n    path: {w}/htpasswd\n",
            w = work.display(),
            crt = pki.path("tls.crt"),
            key = pki.path("tls.key"),
        );
        std::fs::write(work.join("registry.yml"), config).expect("write");
        let log = work.join("registry.log");
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new("docker-registry")
            .args(["serve", work.join("registry.yml").to_str().expect("path")])
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("docker-registry");
        let began = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "registry did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let roots = roots(pki)
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
                    .build(),
            )
            .build()
            .into();
        Registry {
            child,
            port,
            agent,
            log,
        }
    }

    fn blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = Digest::sha256_of(bytes).to_string();
        let base = format!("https://127.0.0.1:{}", self.port);
        let resp = self
            .agent
            .post(&format!("{base}/v2/{repo}/blobs/uploads/"))
            .header("Authorization", basic())
            .send_empty()
            .expect("upload");
        let loc = resp.headers()["location"]
            .to_str()
            .expect("location")
            .to_string();
        let loc = if loc.starts_with("http") {
            loc
        } else {
            format!("{base}{loc}")
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let resp = self
            .agent
            .put(&format!("{loc}{sep}digest={digest}"))
            .header("Authorization", basic())
            .send(bytes)
            .expect("upload");
        assert_eq!(resp.status().as_u16(), 201);
        digest
    }

    /// Pushes a one-layer image under `tag`; returns its digest.
    fn image(&self, repo: &str, tag: &str) -> String {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c = self.blob(repo, config);
        let l = self.blob(repo, tag.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{c}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{l}","size":{}}}]}}"#,
            config.len(),
            tag.len()
        );
        let resp = self
            .agent
            .put(&format!(
                "https://127.0.0.1:{}/v2/{repo}/manifests/{tag}",
                self.port
            ))
            .header("Authorization", basic())
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .send(manifest.as_bytes())
            .expect("push");
        assert_eq!(resp.status().as_u16(), 201);
        Digest::sha256_of(manifest.as_bytes()).to_string()
    }

    fn manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        let resp = self
            .agent
            .put(&format!(
                "https://127.0.0.1:{}/v2/{repo}/manifests/{reference}",
                self.port
            ))
            .header("Authorization", basic())
            .header("Content-Type", media_type)
            .send(bytes)
            .expect("push");
        assert_eq!(resp.status().as_u16(), 201, "manifest push");
    }

    /// Manifest HEADs the registry answered 200 for this tag.
    fn heads(&self, repo: &str, tag: &str) -> usize {
        std::thread::sleep(Duration::from_millis(300)); // the access log is asynchronous
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.contains(&format!("\"HEAD /v2/{repo}/manifests/{tag} ")) && l.contains("\" 200 ")
            })
            .count()
    }
}

fn roots(pki: &Pki) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(pki.path("ca.crt"))
        .expect("CA")
        .map(|c| c.expect("CA"))
        .collect()
}

fn main() {
    let mut bin = "target/release/image-bouncer".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--bin" {
            bin = args.next().expect("--bin PATH");
        }
    }
    let work = std::env::temp_dir().join(format!("ib-bench-registry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let pki = Pki::new(&work.join("pki"));
    pki.issue();
    let r = Registry::start(&work, &pki);
    let registry = format!("127.0.0.1:{}", r.port);
    let dockercfg = work.join("config.json");
    std::fs::write(
        &dockercfg,
        format!(
            r#"{{"auths": {{"{registry}": {{"auth": "{}"}}}}}}"#,
            base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
        ),
    )
    .expect("write");
    let creds = Credentials::parse(&std::fs::read_to_string(&dockercfg).expect("read"))
        .expect("credentials");
    let client = Arc::new(
        Client::new(creds, ProxyConfig::default(), &roots(&pki))
            .with_named_hosts(["127.0.0.1", "localhost"]),
    );
    let within = Duration::from_secs(5);
    let mut rows: Vec<(String, String)> = Vec::new();

    // 1. A cached lookup.
    let hot_digest = r.image("team/app", "hot");
    let hot = ImageRef::parse(&format!("{registry}/team/app:hot")).expect("image");
    assert_eq!(
        client
            .resolve_cached(&hot, within)
            .expect("lookup")
            .to_string(),
        hot_digest
    );
    let n = 1_000_000;
    let began = Instant::now();
    for _ in 0..n {
        std::hint::black_box(client.resolve_cached(&hot, within).expect("cached"));
    }
    let per = began.elapsed().as_nanos() as f64 / n as f64;
    rows.push((
        "cached lookup, per image".into(),
        format!("{:.2} µs ({n} lookups, one thread)", per / 1000.0),
    ));

    // 2. Cold lookups (a new tag each), credentials already learned.
    let tags: Vec<String> = (0..100).map(|i| format!("cold{i}")).collect();
    for t in &tags {
        r.image("team/app", t);
    }
    let sent = client.stats().requests();
    let mut took = Vec::new();
    for t in &tags {
        let img = ImageRef::parse(&format!("{registry}/team/app:{t}")).expect("image");
        let began = Instant::now();
        client.resolve_cached(&img, within).expect("cold lookup");
        took.push(began.elapsed().as_micros() as u64);
    }
    took.sort_unstable();
    let trips = (client.stats().requests() - sent) as f64 / tags.len() as f64;
    rows.push((
        "cold lookup, round trips (Basic learned)".into(),
        format!(
            "{trips:.2} per lookup; p50 {:.2} ms, p99 {:.2} ms (100 tags)",
            pct(&took, 0.5),
            pct(&took, 0.99)
        ),
    ));

    // 3. 100 concurrent reviews of one new image.
    r.image("team/app", "burst");
    let burst = ImageRef::parse(&format!("{registry}/team/app:burst")).expect("image");
    let sent = client.stats().requests();
    let threads: Vec<_> = (0..100)
        .map(|_| {
            let (c, i) = (client.clone(), burst.clone());
            std::thread::spawn(move || c.resolve_cached(&i, within).map(|d| d.to_string()))
        })
        .collect();
    for t in threads {
        t.join().expect("thread").expect("lookup");
    }
    rows.push((
        "100 concurrent lookups of one new tag".into(),
        format!(
            "{} registry request(s); {} manifest HEAD(s) in the registry's log",
            client.stats().requests() - sent,
            r.heads("team/app", "burst")
        ),
    ));

    // 5-8. Signature verification (the real 2026 keyless signature and the
    // real cosign image bundle, served by the registry).
    signatures(&r, &client, &registry, &mut rows);

    // 4. A 1,000-pod rollout of one new tag through the real server.
    let rollout_digest = r.image("team/app", "rollout");
    let policy = work.join("policy.json");
    std::fs::write(
        &policy,
        format!(
            r#"{{"registryCredentials": {:?}, "registries": {{"{registry}": {{"ca": {:?}}}}}, "mutate": {{"mutateDigest": ["*"]}}}}"#,
            dockercfg.display().to_string(),
            pki.path("ca.crt")
        ),
    )
    .expect("write");
    let (mut server, addr) = serve_with_policy(&bin, &pki, &policy, &work.join("server.log"));
    let mut review: serde_json::Value =
        serde_json::from_slice(&fixture("admission/pod-create-allowed.request.json"))
            .expect("fixture");
    review["request"]["object"]["spec"]["containers"][0]["image"] =
        format!("{registry}/team/app:rollout").into();
    let body = Arc::new(review.to_string().into_bytes());
    let config = tls_config(&pki.path("ca.crt"), false);
    let pinned = Arc::new(format!("{registry}/team/app:rollout@{rollout_digest}"));
    let began = Instant::now();
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let (config, body, pinned) = (config.clone(), body.clone(), pinned.clone());
            std::thread::spawn(move || {
                let mut tls = connect(addr, &config).expect("connect");
                let mut took = Vec::new();
                for _ in 0..1000 / 20 {
                    let t = Instant::now();
                    let (status, reply) =
                        exchange(&mut tls, &post("/mutate", &body)).expect("mutate");
                    took.push(t.elapsed().as_micros() as u64);
                    assert_eq!(status, 200);
                    let v: serde_json::Value = serde_json::from_slice(&reply).expect("json");
                    let patch = base64::engine::general_purpose::STANDARD
                        .decode(v["response"]["patch"].as_str().expect("a patch"))
                        .expect("base64");
                    assert!(
                        String::from_utf8_lossy(&patch).contains(pinned.as_str()),
                        "not pinned: {v}"
                    );
                }
                took
            })
        })
        .collect();
    let mut took: Vec<u64> = clients
        .into_iter()
        .flat_map(|t| t.join().expect("client"))
        .collect();
    let wall = began.elapsed();
    took.sort_unstable();
    rows.push((
        format!(
            "{}-pod rollout of one new tag (/mutate, 20 connections)",
            took.len()
        ),
        format!(
            "{} manifest HEAD(s) at the registry; {:.0} reviews/s, p50 {:.2} ms, p99 {:.2} ms",
            r.heads("team/app", "rollout"),
            took.len() as f64 / wall.as_secs_f64(),
            pct(&took, 0.5),
            pct(&took, 0.99)
        ),
    ));
    let _ = server.kill();
    let _ = server.wait();

    // 9. The per-review figures of bench/run.sh with verifyImages and
    // mutateDigest on, every verdict and digest cached.
    cached_reviews(&bin, &work, &pki, &registry, &dockercfg, &mut rows);

    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "| measurement | result |\n| --- | --- |");
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    drop(r);
    let _ = std::fs::remove_dir_all(&work);
}

fn fixture_text(p: &str) -> String {
    String::from_utf8(fixture(p)).expect("utf-8")
}

/// Pushes the real signatures and measures verifying them.
fn signatures(
    r: &Registry,
    client: &Arc<Client>,
    registry: &str,
    rows: &mut Vec<(String, String)>,
) {
    use image_bouncer::admit::signatures::{Verdicts, gather};
    use image_bouncer::config::verify::VerifyRule;
    use image_bouncer::policy::{
        ImageInput, ImagePattern, Policy, PolicySet, Request, VerifyRequirement,
    };
    use image_bouncer::verify::rules::{IdentityRule, Matcher, Trust};
    use image_bouncer::verify::trust::TrustedRoot;
    const ATTESTED: &str =
        "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4";
    let served = fixture_text("sigstore/image-legacy/gha-keyless-2026/signature-manifest.json");
    let m: serde_json::Value = serde_json::from_str(&served).expect("json");
    let payload = fixture_text("sigstore/image-legacy/gha-keyless-2026/payload.json");
    let layer = m["layers"][0]["digest"]
        .as_str()
        .expect("layer")
        .to_string();
    r.blob("team/server_image", payload.as_bytes());
    let config = format!(
        r#"{{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{{"created":"0001-01-01T00:00:00Z"}}],"os":"","rootfs":{{"type":"layers","diff_ids":["{layer}"]}},"config":{{}}}}"#
    );
    r.blob("team/server_image", config.as_bytes());
    let oci = "application/vnd.oci.image.manifest.v1+json";
    r.manifest(
        "team/server_image",
        &format!("{}.sig", SERVER_IMAGE.replace(':', "-")),
        oci,
        served.as_bytes(),
    );
    // The bundle, as a referrer in the fallback index.
    let bundle = fixture_text(
        "sigstore/image-bundle/cosign-oci-attestation-2025/oci-attestation.sigstore.json",
    );
    let at = "application/vnd.dev.sigstore.bundle.v0.3+json";
    let bl = r.blob("team/attested", bundle.as_bytes());
    let empty = r.blob("team/attested", b"{}");
    let rm = serde_json::json!({"schemaVersion": 2, "mediaType": oci, "artifactType": at,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2, "digest": empty},
        "layers": [{"mediaType": at, "size": bundle.len(), "digest": bl}]})
    .to_string();
    let rmd = Digest::sha256_of(rm.as_bytes()).to_string();
    r.manifest("team/attested", &rmd, oci, rm.as_bytes());
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": oci, "size": rm.len(), "digest": rmd, "artifactType": at}]}).to_string();
    r.manifest(
        "team/attested",
        &ATTESTED.replace(':', "-"),
        "application/vnd.oci.image.index.v1+json",
        index.as_bytes(),
    );

    let root = Arc::new(
        TrustedRoot::parse(&fixture_text("sigstore/trusted-roots/public-good.json")).expect("root"),
    );
    let identity = |issuer: &str, subject: &str| IdentityRule {
        issuer: Matcher::Exact(issuer.into()),
        subject: Matcher::Exact(subject.into()),
        extensions: Vec::new(),
    };
    let trust = Trust {
        identities: vec![
            identity("https://token.actions.githubusercontent.com", GHA_SUBJECT),
            identity("https://github.com/login/oauth", "cody@soyland.com"),
        ],
        root: Some(root),
        fingerprint: "bench".into(),
        ..Trust::default()
    };
    let policy: PolicySet = Policy {
        verify_images: vec![VerifyRequirement {
            label: "verifyImages[0]".into(),
            index: 0,
            images: vec![ImagePattern::parse("*").expect("pattern")],
            verify_tags: false,
        }],
        ..Policy::default()
    }
    .into();
    let rules = vec![VerifyRule {
        label: "verifyImages[0]".into(),
        policy: "bench".into(),
        trust: trust.clone(),
        allow_on_registry_error: false,
        verified_ttl: Duration::from_secs(3600),
        threshold: 1,
        attestations: Vec::new(),
    }];
    let request = |image: &str| Request {
        images: vec![ImageInput::bare(image)],
        ..Request::default()
    };
    let within = Duration::from_secs(5);
    for (name, image) in [
        (
            "legacy .sig",
            format!("{registry}/team/server_image@{SERVER_IMAGE}"),
        ),
        (
            "bundle referrer (fallback index)",
            format!("{registry}/team/attested@{ATTESTED}"),
        ),
    ] {
        let verdicts = Verdicts::default();
        let sent = client.stats().requests();
        let began = Instant::now();
        let facts = gather(&policy, &rules, &request(&image), client, &verdicts, within);
        let took = began.elapsed();
        assert!(
            facts.values().flatten().all(|f| f.outcome.is_ok()),
            "{name}: {facts:?}"
        );
        rows.push((
            format!("cold verification, {name}"),
            format!(
                "{} registry requests ({} ms wall)",
                client.stats().requests() - sent,
                took.as_millis()
            ),
        ));
        if name.starts_with("legacy") {
            let n = 100_000;
            let req = request(&image);
            let began = Instant::now();
            for _ in 0..n {
                std::hint::black_box(gather(&policy, &rules, &req, client, &verdicts, within));
            }
            rows.push((
                "cached verified image, per review".into(),
                format!(
                    "{:.2} µs ({n} reviews of one image)",
                    began.elapsed().as_nanos() as f64 / n as f64 / 1000.0
                ),
            ));
            // 100 concurrent reviews of the image, nothing cached yet.
            let verdicts = Arc::new(Verdicts::default());
            let sent = client.stats().requests();
            let threads: Vec<_> = (0..100)
                .map(|_| {
                    let (c, v, p, ru, req) = (
                        client.clone(),
                        verdicts.clone(),
                        policy.clone(),
                        rules.clone(),
                        request(&image),
                    );
                    std::thread::spawn(move || gather(&p, &ru, &req, &c, &v, within))
                })
                .collect();
            for t in threads {
                let f = t.join().expect("thread");
                assert!(f.values().flatten().all(|f| f.outcome.is_ok()));
            }
            rows.push((
                "100 concurrent reviews of one new signed image".into(),
                format!(
                    "{} registry requests (one verification)",
                    client.stats().requests() - sent
                ),
            ));
        }
    }
    attested(client, registry, &policy, &rules[0], rows);
    // CPU of one keyless verification (no I/O): the real 2026 layer.
    let ann: std::collections::BTreeMap<String, String> =
        serde_json::from_value(m["layers"][0]["annotations"].clone()).expect("annotations");
    let n = 2000;
    let began = Instant::now();
    for _ in 0..n {
        image_bouncer::verify::legacy::verify_layer(payload.as_bytes(), &ann, SERVER_IMAGE, &trust)
            .expect("verifies");
    }
    // Bundles with a timestamp, and with a Rekor v2 proof and a timestamp
    // (the sigstore-python and conformance vectors, verified in process).
    let bv = |name: &str,
              bundle: &str,
              root: &str,
              artifact: &str,
              issuer: &str,
              subject: &str,
              rows: &mut Vec<(String, String)>| {
        use image_bouncer::verify::bundle::{Artifact, verify_artifact};
        let root = Arc::new(TrustedRoot::parse(&fixture_text(root)).expect("root"));
        let trust = Trust {
            identities: vec![identity(issuer, subject)],
            root: Some(root),
            ..Trust::default()
        };
        let bundle = fixture(bundle);
        let file = fixture(artifact);
        let n = 500;
        let began = Instant::now();
        for _ in 0..n {
            verify_artifact(&bundle, &Artifact::File(&file), &trust).expect("verifies");
        }
        rows.push((
            name.into(),
            format!(
                "{:.0} µs ({n} runs, one thread)",
                began.elapsed().as_micros() as f64 / n as f64
            ),
        ));
    };
    // The TSA vector's root is the `trustedRoot` member of its config.
    let tsa_config: serde_json::Value = serde_json::from_str(&fixture_text(
        "sigstore/sigstore-python/tsa/trust_config.json",
    ))
    .expect("json");
    let tsa_root = std::env::temp_dir().join(format!("ib-bench-tsa-{}.json", std::process::id()));
    std::fs::write(&tsa_root, tsa_config["trustedRoot"].to_string()).expect("write");
    {
        use image_bouncer::verify::bundle::{Artifact, verify_artifact};
        let root = Arc::new(
            TrustedRoot::parse(&std::fs::read_to_string(&tsa_root).expect("root")).expect("root"),
        );
        let trust = Trust {
            identities: vec![identity(
                "https://accounts.google.com",
                "alexis.challande@trailofbits.com",
            )],
            root: Some(root),
            ..Trust::default()
        };
        let bundle = fixture("sigstore/sigstore-python/tsa/bundle.txt.sigstore");
        let file = fixture("sigstore/sigstore-python/tsa/bundle.txt");
        let n = 500;
        let began = Instant::now();
        for _ in 0..n {
            verify_artifact(&bundle, &Artifact::File(&file), &trust).expect("verifies");
        }
        rows.push((
            "CPU of one cold verification with RFC 3161 timestamps (SET + 2 timestamps, chain, SCT)".into(),
            format!("{:.0} µs ({n} runs, one thread)", began.elapsed().as_micros() as f64 / n as f64),
        ));
    }
    let _ = std::fs::remove_file(&tsa_root);
    bv(
        "CPU of one cold verification with a Rekor v2 proof and a timestamp (checkpoint, proof, TSA, chain, SCT)",
        "sigstore/conformance/bundle-verify/rekor2-happy-path/bundle.sigstore.json",
        "sigstore/conformance/bundle-verify/rekor2-happy-path/trusted_root.json",
        "sigstore/conformance/bundle-verify/a.txt",
        "https://token.actions.githubusercontent.com",
        "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main",
        rows,
    );
    rows.push((
        "CPU of one keyless verification (signature, SET, chain, SCT, identity)".into(),
        format!(
            "{:.0} µs ({n} runs, one thread)",
            began.elapsed().as_micros() as f64 / n as f64
        ),
    ));
}

/// An entry with two attestation items, both met by the statement of the
/// real cosign bundle (one condition without `now`, one with): the CPU of
/// this process per cold verification (the referrer bundle fetched and
/// verified, the `.sig` and `.att` images asked for, both conditions), and
/// per cached review (the condition on `now` evaluated again).
fn attested(
    client: &Arc<Client>,
    registry: &str,
    policy: &image_bouncer::policy::PolicySet,
    rule: &image_bouncer::config::verify::VerifyRule,
    rows: &mut Vec<(String, String)>,
) {
    use image_bouncer::admit::signatures::{Verdicts, gather};
    use image_bouncer::config::verify::{AttestationRule, VerifyRule};
    use image_bouncer::policy::{ImageInput, Request};
    use image_bouncer::verify::condition::Condition;
    let item = |j: usize, condition: &str| AttestationRule {
        label: format!("verifyImages[0].attestations[{j}]"),
        written: "custom".into(),
        predicate_types: vec!["https://cosign.sigstore.dev/attestation/v1".into()],
        condition: Some(Arc::new(Condition::compile(condition).expect("condition"))),
        trust: None,
    };
    let rules = vec![VerifyRule {
        attestations: vec![
            item(0, "predicate.Data.contains('foo')"),
            item(1, "timestamp(predicate.Timestamp) < now"),
        ],
        ..rule.clone()
    }];
    let request = Request {
        images: vec![ImageInput::bare(format!(
            "{registry}/team/attested@sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4"
        ))],
        ..Request::default()
    };
    let within = Duration::from_secs(5);
    let pid = std::process::id();
    let ticks = clock_ticks();
    let n = 200;
    let sent = client.stats().requests();
    let (cpu, began) = (cpu_ticks(pid), Instant::now());
    for _ in 0..n {
        let verdicts = Verdicts::default();
        let facts = gather(policy, &rules, &request, client, &verdicts, within);
        assert!(
            facts
                .values()
                .flatten()
                .all(|f| f.outcome.as_ref().is_ok_and(|s| s.attestations.len() == 2)),
            "{facts:?}"
        );
    }
    rows.push((
        "cold verification with two attestation items (bundle referrer, .sig and .att asked), CPU of this process".into(),
        format!(
            "{:.2} ms per verification, {} registry requests each, {:.1} ms wall ({n} verifications)",
            (cpu_ticks(pid) - cpu) as f64 / ticks * 1000.0 / n as f64,
            (client.stats().requests() - sent) / n as u64,
            began.elapsed().as_secs_f64() * 1000.0 / n as f64
        ),
    ));
    let verdicts = Verdicts::default();
    gather(policy, &rules, &request, client, &verdicts, within);
    let n = 100_000;
    let began = Instant::now();
    for _ in 0..n {
        std::hint::black_box(gather(policy, &rules, &request, client, &verdicts, within));
    }
    // The costliest kind of condition allowed: a loop over the largest
    // list a statement may hold.
    {
        use image_bouncer::verify::statement::{MAX_VALUES, Needs, Statement};
        let list = vec!["0"; MAX_VALUES - 20].join(",");
        let statement = Statement::read(
            format!(
                r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"v","predicate":{{"a":[{list}]}}}}"#
            )
            .as_bytes(),
            Needs {
                predicate: true,
                ..Needs::default()
            },
        )
        .expect("statement");
        let c = Condition::compile("predicate.a.all(x, x == 0)").expect("condition");
        let n = 20;
        let began = Instant::now();
        for _ in 0..n {
            assert_eq!(c.holds(&statement, 0), Ok(true));
        }
        rows.push((
            format!(
                "CEL: a loop over {} values (estimated cost {:.0} of the {:.0} allowed)",
                MAX_VALUES - 20,
                c.cost,
                image_bouncer::verify::condition::MAX_COST
            ),
            format!(
                "{:.1} ms per evaluation ({n} runs, one thread)",
                began.elapsed().as_secs_f64() * 1000.0 / n as f64
            ),
        ));
    }
    rows.push((
        "cached verified image with two attestation items (one condition on now evaluated again), per review".into(),
        format!(
            "{:.2} µs ({n} reviews of one image)",
            began.elapsed().as_nanos() as f64 / n as f64 / 1000.0
        ),
    ));
}

/// CPU and system calls per review through the real server, on one
/// keep-alive connection, for the 6.3 KB Pod AdmissionReview of bench/run.sh
/// with its images in the registry: the signed image by digest, the others
/// by a tag. Once with a policy that only allows the registry, once with a
/// `verifyImages` rule for the signed image and `mutateDigest` for all,
/// after one review has filled the caches. The difference is what the
/// cached path costs.
fn cached_reviews(
    bin: &str,
    work: &std::path::Path,
    pki: &Pki,
    registry: &str,
    dockercfg: &std::path::Path,
    rows: &mut Vec<(String, String)>,
) {
    const N: usize = 20_000;
    let mut review: serde_json::Value =
        serde_json::from_slice(&fixture("bench/admission-v1-allowed.json")).expect("fixture");
    let spec = &mut review["request"]["object"]["spec"];
    spec["containers"][0]["image"] = format!("{registry}/team/server_image@{SERVER_IMAGE}").into();
    spec["containers"][1]["image"] = format!("{registry}/team/app:rollout").into();
    spec["initContainers"][0]["image"] = format!("{registry}/team/app:rollout").into();
    let body = review.to_string().into_bytes();
    let base = serde_json::json!({
        "registryCredentials": dockercfg.display().to_string(),
        "registries": {registry: {"ca": pki.path("ca.crt")}},
        "allowedRegistries": [registry],
    });
    let mut with = base.clone();
    with["verifyImages"] = serde_json::json!([{
        "images": [format!("{registry}/team/server_image")],
        "trustedRoot": fixtures_dir().join("sigstore/trusted-roots/public-good.json"),
        "identities": [{"issuer": "https://token.actions.githubusercontent.com", "subject": GHA_SUBJECT}],
    }]);
    with["mutate"] = serde_json::json!({"mutateDigest": ["*"]});
    let config = tls_config(&pki.path("ca.crt"), false);
    let strace = Command::new("strace").arg("-V").output().is_ok();
    let mut figures = Vec::new();
    for (name, policy) in [
        ("registry allow-list only", base),
        ("verifyImages + mutateDigest, cached", with),
    ] {
        let file = work.join("cached-policy.json");
        std::fs::write(&file, policy.to_string()).expect("write");
        let (mut server, addr) =
            serve_with_policy(bin, pki, &file, &work.join("cached-server.log"));
        let mut tls = connect(addr, &config).expect("connect");
        let mut round = |path: &str, n: usize| {
            for _ in 0..n {
                let (status, reply) = exchange(&mut tls, &post(path, &body)).expect("review");
                assert_eq!(status, 200);
                let v: serde_json::Value = serde_json::from_slice(&reply).expect("json");
                assert_eq!(v["response"]["allowed"], true, "{name} {path}: {v}");
            }
        };
        for path in ["/validate", "/mutate"] {
            round(path, 50); // fills the caches
            let before = cpu_ticks(server.id());
            let began = Instant::now();
            round(path, N);
            let wall = began.elapsed();
            let cpu = (cpu_ticks(server.id()) - before) as f64 * 1e6 / clock_ticks() / N as f64;
            let calls = if strace {
                let out = work.join("strace.txt");
                let mut tracer = Command::new("strace")
                    .args(["-c", "-f", "-o"])
                    .arg(&out)
                    .args(["-p", &server.id().to_string()])
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("strace");
                std::thread::sleep(Duration::from_millis(500));
                round(path, 2000);
                std::thread::sleep(Duration::from_millis(200));
                let _ = Command::new("kill")
                    .args(["-INT", &tracer.id().to_string()])
                    .status();
                let _ = tracer.wait();
                format!("{:.2}", strace_calls(&out) as f64 / 2000.0)
            } else {
                "-".into()
            };
            figures.push((name, path, N as f64 / wall.as_secs_f64(), cpu, calls));
        }
        let _ = server.kill();
        let _ = server.wait();
    }
    for (name, path, rps, cpu, calls) in &figures {
        rows.push((
            format!("{path}, {name} (6.3 KB Pod, c1 keep-alive)"),
            format!(
                "{rps:.0} reviews/s, server CPU {cpu:.1} µs/review, {calls} system calls/review"
            ),
        ));
    }
    for path in ["/validate", "/mutate"] {
        let cpu = |n: &str| {
            figures
                .iter()
                .find(|f| f.0 == n && f.1 == path)
                .map_or(0.0, |f| f.3)
        };
        rows.push((
            format!("{path}: what the cached path adds"),
            format!(
                "{:+.1} µs of CPU per review",
                cpu("verifyImages + mutateDigest, cached") - cpu("registry allow-list only")
            ),
        ));
    }
}

/// The real server with the bench PKI's serving certificate and `policy`.
fn serve_with_policy(
    bin: &str,
    pki: &Pki,
    policy: &std::path::Path,
    log: &std::path::Path,
) -> (Child, std::net::SocketAddr) {
    let args = [
        "--cert".into(),
        pki.path("tls.crt"),
        "--key".into(),
        pki.path("tls.key"),
        "--policy".into(),
        policy.display().to_string(),
    ];
    start_server(bin, &args, log)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn clock_ticks() -> f64 {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0)
}

/// The total of calls in an `strace -c` summary.
fn strace_calls(path: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let p: Vec<&str> = l.split_whitespace().collect();
            (p.len() >= 5 && p[0].parse::<f64>().is_ok() && p[p.len() - 1] != "total")
                .then(|| p[3].parse::<u64>().ok())
                .flatten()
        })
        .sum()
}
