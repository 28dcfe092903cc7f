//! The registry client against the real CNCF distribution registry
//! (Debian's `docker-registry`), started here on 127.0.0.1 with TLS
//! (certificates from `image-bouncer certs`) and htpasswd Basic auth
//! (`htpasswd` from `apache2-utils`). Images are pushed through the
//! registry API by the test itself.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use base64::Engine as _;
use image_bouncer::credentials::Credentials;
use image_bouncer::digest::Digest;
use image_bouncer::image_ref::ImageRef;
use image_bouncer::registry::client::{Client, LookupError};
use image_bouncer::registry::proxy::ProxyConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::common::{run, temp_dir};

pub struct Registry {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    /// `https://127.0.0.1:<port>` (or `http://` for a plain one).
    pub base: String,
    /// The Authorization header pushes carry.
    pub push_auth: String,
    agent: ureq::Agent,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How a test registry is set up.
pub struct Setup<'a> {
    /// Names its serving certificate holds (besides 127.0.0.1); `None`:
    /// plain HTTP.
    pub tls_host: Option<&'a str>,
    /// `auth:` section of its configuration; `None`: htpasswd with alice.
    pub auth: Option<String>,
    /// The Authorization header for pushes (default alice's Basic).
    pub push_auth: Option<String>,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            tls_host: Some("localhost"),
            auth: None,
            push_auth: None,
        }
    }
}

/// True when the registry can run here; in CI (which installs it) a
/// missing registry is a failure.
pub fn have_registry() -> bool {
    let have = |b: &str| Command::new(b).arg("--version").output().is_ok();
    if !have("docker-registry") || !Path::new("/usr/bin/htpasswd").exists() {
        assert!(
            std::env::var("CI").is_err(),
            "docker-registry and htpasswd are needed"
        );
        eprintln!("skip: docker-registry or htpasswd is not installed");
        return false;
    }
    true
}

/// Starts the registry, or `None` when it is not installed (CI installs
/// it and sets CI=true, where a missing registry is a failure).
fn start(name: &str) -> Option<Registry> {
    start_with(name, Setup::default())
}

pub fn start_with(name: &str, setup: Setup) -> Option<Registry> {
    if !have_registry() {
        return None;
    }
    let dir = temp_dir(name);
    let pki = dir.join("pki");
    let tls = match setup.tls_host {
        Some(host) => {
            let out = run(
                &[
                    "certs",
                    "--out",
                    pki.to_str().unwrap(),
                    "--host",
                    host,
                    "--ip",
                    "127.0.0.1",
                ],
                None,
            );
            assert!(out.status.success());
            format!(
                "  tls:\n    certificate: {d}/pki/tls.crt\n    key: {d}/pki/tls.key\n",
                d = dir.display()
            )
        }
        None => String::new(),
    };
    let htpasswd = Command::new("htpasswd")
        .args(["-Bbn", "alice", "s3cret"])
        .output()
        .unwrap();
    std::fs::write(dir.join("htpasswd"), &htpasswd.stdout).unwrap();
    let auth = setup.auth.unwrap_or_else(|| {
        format!(
            "  htpasswd:\n    realm: test\n    path: {}/htpasswd\n",
            dir.display()
        )
    });
    // A free port can be taken by another test between our probe and the
    // registry's bind: then this registry exits, and another one answers
    // on "our" port. Wait for our own registry to say it listens, and try
    // another port if it could not.
    let (child, port) = 'started: {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let config = format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{tls}auth:\n{auth}",
                d = dir.display()
            );
            std::fs::write(dir.join("config.yml"), config).unwrap();
            let log = std::fs::File::create(dir.join("registry.log")).unwrap();
            let mut child = Command::new("docker-registry")
                .args(["serve", dir.join("config.yml").to_str().unwrap()])
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let start = Instant::now();
            loop {
                let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
                if log.contains(&format!("listening on 127.0.0.1:{port}")) {
                    break 'started (child, port);
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "registry did not start: {log}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("the registry could not bind a port five times");
    };
    let mut builder = ureq::Agent::config_builder().http_status_as_error(false);
    if setup.tls_host.is_some() {
        let roots: Vec<ureq::tls::Certificate<'static>> =
            CertificateDer::pem_file_iter(dir.join("pki/ca.crt"))
                .unwrap()
                .map(|c| ureq::tls::Certificate::from_der(c.unwrap().as_ref()).to_owned())
                .collect();
        builder = builder.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(roots)))
                .build(),
        );
    }
    let scheme = if setup.tls_host.is_some() {
        "https"
    } else {
        "http"
    };
    Some(Registry {
        child,
        port,
        base: format!("{scheme}://127.0.0.1:{port}"),
        push_auth: setup.push_auth.unwrap_or_else(|| basic("alice", "s3cret")),
        dir,
        agent: builder.build().into(),
    })
}

pub fn ca(r: &Registry) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(r.dir.join("pki/ca.crt"))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

pub fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

impl Registry {
    /// The access log once every request answered so far is in it: the
    /// registry writes a line after the response, so a test that counts
    /// lines asks for a marker path and waits for its line (never a fixed
    /// sleep, which a loaded machine outlasts).
    pub fn settled_log(&self) -> String {
        let marker = format!("/v2/settled-{}/tags/list", std::process::id());
        let _ = self.agent.get(&format!("{}{marker}", self.base)).call();
        let path = self.dir.join("registry.log");
        let start = std::time::Instant::now();
        loop {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            if log.contains(&marker) {
                return log;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the registry never logged {marker}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Pushes a blob and returns its digest.
    pub fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = Digest::sha256_of(bytes).to_string();
        let resp = self
            .agent
            .post(&format!("{}/v2/{repo}/blobs/uploads/", self.base))
            .header("Authorization", &self.push_auth)
            .send_empty()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202, "upload start");
        let location = resp
            .headers()
            .get("location")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("{}{location}", self.base)
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let resp = self
            .agent
            .put(&format!("{location}{sep}digest={digest}"))
            .header("Authorization", &self.push_auth)
            .header("Content-Type", "application/octet-stream")
            .send(bytes)
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "blob upload");
        digest
    }

    /// Pushes a manifest under `reference`; returns its digest.
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> String {
        let mut resp = self
            .agent
            .put(&format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header("Authorization", &self.push_auth)
            .header("Content-Type", media_type)
            .send(bytes)
            .unwrap();
        let status = resp.status().as_u16();
        assert_eq!(
            status,
            201,
            "manifest push: {}",
            resp.body_mut().read_to_string().unwrap_or_default()
        );
        Digest::sha256_of(bytes).to_string()
    }

    /// Pushes a one-layer OCI image manifest under `tag`; returns
    /// (manifest digest, its bytes).
    pub fn push_image_manifest(&self, repo: &str, tag: &str, layer: &[u8]) -> (String, String) {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config_digest = self.push_blob(repo, config);
        let layer_digest = self.push_blob(repo, layer);
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{}}}]}}"#,
            config.len(),
            layer.len()
        );
        let d = self.push_manifest(
            repo,
            tag,
            "application/vnd.oci.image.manifest.v1+json",
            manifest.as_bytes(),
        );
        (d, manifest)
    }

    /// Where the registry keeps a blob's bytes on disk.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir.join(format!(
            "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

/// Pushes a one-layer OCI image under `tag`; returns the manifest digest.
fn push_image(r: &Registry, repo: &str, tag: &str, layer: &[u8]) -> String {
    r.push_image_manifest(repo, tag, layer).0
}

/// A docker config.json with alice's credentials for this registry.
pub fn write_dockercfg(r: &Registry) -> PathBuf {
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    let path = r.dir.join("config.json");
    let text = format!(
        r#"{{"auths": {{"127.0.0.1:{}": {{"auth": "{auth}"}}}}}}"#,
        r.port
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn missing_image(r: &Registry) -> String {
    format!("127.0.0.1:{}/team/app:nope", r.port)
}

fn credentials(key: &str, user: &str, pass: &str) -> Credentials {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    Credentials::parse(&format!(
        r#"{{"auths": {{"{key}": {{"auth": "{auth}"}}}}}}"#
    ))
    .unwrap()
}

#[test]
fn tags_resolve_to_the_digest_pushed_only_with_the_right_credentials() {
    let Some(r) = start("registry-resolve") else {
        return;
    };
    let digest = push_image(&r, "team/app", "v1", b"layer one");
    let image = ImageRef::parse(&format!("127.0.0.1:{}/team/app:v1", r.port)).unwrap();
    let within = Duration::from_secs(5);
    let client = |creds: Credentials| {
        Client::new(creds, ProxyConfig::default(), &ca(&r))
            .with_named_hosts(crate::registry::LOOPBACK)
    };
    // The right credentials, for exactly this registry.
    let ok = client(credentials(
        &format!("127.0.0.1:{}", r.port),
        "alice",
        "s3cret",
    ));
    assert_eq!(ok.resolve(&image, within).unwrap().to_string(), digest);
    // The tag moves: the new digest (no cache in the client itself). The
    // registry asked for Basic once; from then on one round trip.
    let moved = push_image(&r, "team/app", "v1", b"layer two");
    assert_ne!(moved, digest);
    let sent = ok.stats().requests();
    assert_eq!(ok.resolve(&image, within).unwrap().to_string(), moved);
    assert_eq!(ok.stats().requests(), sent + 1);
    // A digest reference is its own answer.
    let pinned = ImageRef::parse(&format!("127.0.0.1:{}/team/app@{digest}", r.port)).unwrap();
    assert_eq!(ok.resolve(&pinned, within).unwrap().to_string(), digest);
    // No credentials, wrong ones, ones for a lookalike host or another port.
    for (creds, why) in [
        (Credentials::default(), "none are configured for it"),
        (
            credentials(&format!("127.0.0.1:{}", r.port), "alice", "wrong"),
            "refused",
        ),
        (
            credentials(
                &format!("127.0.0.1.attacker.net:{}", r.port),
                "alice",
                "s3cret",
            ),
            "none are configured for it",
        ),
        (
            credentials("127.0.0.1", "alice", "s3cret"),
            "none are configured for it",
        ),
        (
            credentials(&format!("localhost:{}", r.port), "alice", "s3cret"),
            "none are configured for it",
        ),
    ] {
        match client(creds).resolve(&image, within) {
            Err(LookupError::Permanent(m)) => assert!(m.contains(why), "{why}: {m}"),
            other => panic!("{why}: {other:?}"),
        }
    }
    // A registry's CA is trusted for that registry only.
    let creds = || credentials(&format!("127.0.0.1:{}", r.port), "alice", "s3cret");
    let for_port = |port: u16| {
        let cas = std::collections::BTreeMap::from([(format!("127.0.0.1:{port}"), ca(&r))]);
        Client::new(creds(), ProxyConfig::default(), &[])
            .with_named_hosts(crate::registry::LOOPBACK)
            .with_registry_cas(&cas)
    };
    assert_eq!(
        for_port(r.port)
            .resolve(&image, within)
            .unwrap()
            .to_string(),
        moved
    );
    let other = for_port(r.port.wrapping_add(1).max(1));
    assert!(
        matches!(other.resolve(&image, within), Err(LookupError::Unreachable(m)) if m.contains("certificate") || m.contains("UnknownIssuer") || m.contains("TLS")),
        "the CA of another registry was trusted"
    );
    // check --resolve: the same client, configured by the policy file.
    let dockercfg = write_dockercfg(&r);
    let policy = r.dir.join("policy.json");
    std::fs::write(
        &policy,
        format!(
            r#"{{"registryCredentials": {:?}, "registries": {{"127.0.0.1:{}": {{"ca": {:?}}}}}}}"#,
            dockercfg.to_str().unwrap(),
            r.port,
            r.dir.join("pki/ca.crt").to_str().unwrap()
        ),
    )
    .unwrap();
    let out = run(
        &[
            "check",
            "--json",
            "--resolve",
            "--policy",
            policy.to_str().unwrap(),
            &image.to_string(),
            &missing_image(&r),
        ],
        None,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["images"][0]["digest"], moved.as_str(), "{v}");
    assert!(
        v["images"][1]["resolve_error"]
            .as_str()
            .unwrap()
            .contains("404"),
        "{v}"
    );
    // A tag that is not there, and a registry that is down.
    let missing = ImageRef::parse(&format!("127.0.0.1:{}/team/app:nope", r.port)).unwrap();
    assert!(
        matches!(ok.resolve(&missing, within), Err(LookupError::Permanent(m)) if m.contains("404"))
    );
    let port = r.port;
    drop(r);
    let down = ImageRef::parse(&format!("127.0.0.1:{port}/team/app:v1")).unwrap();
    assert!(matches!(
        ok.resolve(&down, within),
        Err(LookupError::Transient(_))
    ));
}

/// `/mutate` pins `name:tag` to `name:tag@sha256:...` for `mutateDigest`
/// images, over TLS against the real registry; a lookup that fails denies,
/// unless `onRegistryError` is `allow`.
#[test]
fn mutate_pins_digests_end_to_end() {
    let Some(r) = start("registry-pin") else {
        return;
    };
    let digest = push_image(&r, "team/app", "v1", b"pinned layer");
    let dockercfg = write_dockercfg(&r);
    let policy_file = |on_error: &str| {
        let p = r.dir.join(format!("policy-{on_error}.json"));
        std::fs::write(
            &p,
            format!(
                r#"{{"registryCredentials": {:?}, "registries": {{"127.0.0.1:{}": {{"ca": {:?}}}}}, "mutate": {{"mutateDigest": ["*"], "onRegistryError": "{on_error}"}}}}"#,
                dockercfg.to_str().unwrap(),
                r.port,
                r.dir.join("pki/ca.crt").to_str().unwrap()
            ),
        )
        .unwrap();
        p
    };
    let review = |image: &str| {
        let body = std::fs::read(
            crate::common::fixtures().join("admission/pod-create-allowed.request.json"),
        )
        .unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        v["request"]["object"]["spec"]["containers"][0]["image"] = image.into();
        v.to_string()
    };
    let image = format!("127.0.0.1:{}/team/app:v1", r.port);
    let deny = policy_file("deny");
    let (pki, server) =
        crate::common::tls_server("registry-pin-server", &["--policy", deny.to_str().unwrap()]);
    let config = crate::common::client_config(&pki.ca_file, None);
    let mut c = crate::common::Client::tls(server.addr, config.clone()).unwrap();
    let v = c.post("/mutate", review(&image).as_bytes()).unwrap().json();
    assert_eq!(v["response"]["allowed"], true, "{v}");
    let patch: serde_json::Value = serde_json::from_slice(&crate::golden::base64_decode(
        v["response"]["patch"].as_str().unwrap(),
    ))
    .unwrap();
    let pinned = format!("{image}@{digest}");
    assert!(
        patch
            .as_array()
            .unwrap()
            .iter()
            .any(|op| op["path"] == "/spec/containers/0/image" && op["value"] == pinned.as_str()),
        "{patch}"
    );
    // `image-bouncer test --resolve` sees the same pin, and offline none.
    let cases = r.dir.join("pin-cases.yaml");
    std::fs::write(
        &cases,
        format!("cases:\n- {{name: pinned, image: {image:?}, path: mutate, expect: allow, pinned: {pinned:?}}}\n"),
    )
    .unwrap();
    let test = |extra: &[&str]| {
        let mut args = vec!["test", "--policy", deny.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push(cases.to_str().unwrap());
        crate::common::run(&args, None)
    };
    let out = test(&["--resolve"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::common::stdout(&out)
    );
    let out = test(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        crate::common::stdout(&out).starts_with("FAIL  pinned: expected the image to become"),
        "{}",
        crate::common::stdout(&out)
    );
    // `check --mutate --resolve` pins as /mutate does: the same patch for
    // the review, and for the bare Pod as if it were created.
    let review_file = r.dir.join("review.json");
    std::fs::write(&review_file, review(&image)).unwrap();
    let pod: serde_json::Value = serde_json::from_str(&review(&image)).unwrap();
    let pod_file = r.dir.join("pod.json");
    std::fs::write(&pod_file, pod["request"]["object"].to_string()).unwrap();
    for f in [&review_file, &pod_file] {
        let out = crate::common::run(
            &[
                "check",
                "--mutate",
                "--resolve",
                "--policy",
                deny.to_str().unwrap(),
                "-f",
                f.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            crate::common::stderr(&out)
        );
        let printed: serde_json::Value =
            serde_json::from_str(crate::common::stdout(&out).trim()).unwrap();
        assert!(
            printed.as_array().unwrap().iter().any(
                |op| op["path"] == "/spec/containers/0/image" && op["value"] == pinned.as_str()
            ),
            "{}: {printed}",
            f.display()
        );
    }
    // A tag the registry does not have: denied, naming image and status.
    let missing = format!("127.0.0.1:{}/team/app:nope", r.port);
    let v = c
        .post("/mutate", review(&missing).as_bytes())
        .unwrap()
        .json();
    assert_eq!(v["response"]["allowed"], false, "{v}");
    let m = v["response"]["status"]["message"].as_str().unwrap();
    assert!(
        m.contains("could not be pinned") && m.contains("404"),
        "{m}"
    );
    // The same image again: from the cache. All of it counted.
    let v = c.post("/mutate", review(&image).as_bytes()).unwrap().json();
    assert_eq!(v["response"]["allowed"], true);
    let metrics = c.get("/metrics").unwrap().text();
    for want in [
        "image_bouncer_registry_lookups_total{outcome=\"ok\"} 1",
        "image_bouncer_registry_lookups_total{outcome=\"permanent\"} 1",
        "image_bouncer_registry_cache_total{result=\"hit\"} 1",
        "image_bouncer_registry_cache_total{result=\"miss\"} 2",
    ] {
        assert!(metrics.contains(want), "{want} in {metrics}");
    }
    // The exposition, registry histogram included, passes promtool's lint.
    promtool_check(&metrics);
    // An image volume is pinned like a container's image.
    let mut v: serde_json::Value = serde_json::from_str(&review(&image)).unwrap();
    v["request"]["object"]["spec"]["volumes"] =
        serde_json::json!([{"name": "data", "image": {"reference": image}}]);
    let reply = c.post("/mutate", v.to_string().as_bytes()).unwrap().json();
    let patch: serde_json::Value = serde_json::from_slice(&crate::golden::base64_decode(
        reply["response"]["patch"].as_str().unwrap(),
    ))
    .unwrap();
    assert!(
        patch
            .as_array()
            .unwrap()
            .iter()
            .any(|op| op["path"] == "/spec/volumes/0/image/reference"
                && op["value"] == pinned.as_str()),
        "{patch}"
    );
    drop(server);
    // onRegistryError allow: admitted, unpinned.
    let allow = policy_file("allow");
    let (pki, server) =
        crate::common::tls_server("registry-pin-allow", &["--policy", allow.to_str().unwrap()]);
    let mut c = crate::common::Client::tls(
        server.addr,
        crate::common::client_config(&pki.ca_file, None),
    )
    .unwrap();
    let v = c
        .post("/mutate", review(&missing).as_bytes())
        .unwrap()
        .json();
    assert_eq!(v["response"]["allowed"], true, "{v}");
    assert!(v["response"].get("patch").is_none(), "{v}");
}

/// Manifest lookups the registry answered 200, from its access log.
fn manifest_heads(r: &Registry, repo: &str) -> usize {
    let log = r.settled_log();
    log.lines()
        .filter(|l| l.contains(&format!("\"HEAD /v2/{repo}/manifests/")) && l.contains("\" 200 "))
        .count()
}

/// 100 reviews at once of one new image make one registry lookup, and the
/// answer is then cached.
#[test]
fn concurrent_lookups_of_one_image_are_one_request() {
    let Some(r) = start("registry-flight") else {
        return;
    };
    let digest = push_image(&r, "team/hot", "v1", b"hot layer");
    let client = std::sync::Arc::new(
        Client::new(
            credentials(&format!("127.0.0.1:{}", r.port), "alice", "s3cret"),
            ProxyConfig::default(),
            &ca(&r),
        )
        .with_named_hosts(crate::registry::LOOPBACK),
    );
    let image = ImageRef::parse(&format!("127.0.0.1:{}/team/hot:v1", r.port)).unwrap();
    let answers: Vec<_> = (0..100)
        .map(|_| {
            let (c, i) = (client.clone(), image.clone());
            std::thread::spawn(move || c.resolve_cached(&i, Duration::from_secs(5)))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap().unwrap().to_string())
        .collect();
    assert!(answers.iter().all(|a| *a == digest));
    assert_eq!(
        client
            .resolve_cached(&image, Duration::from_secs(5))
            .unwrap()
            .to_string(),
        digest
    );
    assert_eq!(
        manifest_heads(&r, "team/hot"),
        1,
        "{}",
        std::fs::read_to_string(r.dir.join("registry.log")).unwrap()
    );
}

/// A registry that answers 429 with `Retry-After` gets no request before
/// that time; the review gets a clear "rate limiting" reason. (The
/// distribution registry never rate-limits, so this one is a few lines of
/// TLS on loopback that counts what it is sent.)
#[test]
fn retry_after_is_honoured() {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let pki = crate::common::Pki::new("registry-429");
    let config = crate::common::tls_server_config(&pki, "limited");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for sock in listener.incoming().flatten() {
            let mut tls = rustls::StreamOwned::new(
                rustls::ServerConnection::new(config.clone()).unwrap(),
                sock,
            );
            let mut buf = [0u8; 4096];
            if tls.read(&mut buf).unwrap_or(0) > 0 {
                seen.fetch_add(1, Ordering::SeqCst);
                let _ = tls.write_all(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 30\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = tls.flush();
            }
        }
    });
    let ca: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.ca_file)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let client = Client::new(Credentials::default(), ProxyConfig::default(), &ca)
        .with_named_hosts(crate::registry::LOOPBACK);
    let image = ImageRef::parse(&format!("127.0.0.1:{port}/team/app:v1")).unwrap();
    let first = client.resolve(&image, Duration::from_secs(5));
    assert!(
        matches!(&first, Err(LookupError::Transient(m)) if m.contains("Retry-After 30 s")),
        "{first:?}"
    );
    let second = client.resolve(&image, Duration::from_secs(5));
    assert!(
        matches!(&second, Err(LookupError::Transient(m)) if m.contains("no request for")),
        "{second:?}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    // The wait is the repository's: another repository of the registry is
    // still asked (one repository's answer stops no lookup elsewhere).
    let other = ImageRef::parse(&format!("127.0.0.1:{port}/team/other:v1")).unwrap();
    let third = client.resolve(&other, Duration::from_secs(5));
    assert!(
        matches!(&third, Err(LookupError::Transient(m)) if m.contains("Retry-After 30 s")),
        "{third:?}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 2);
}

/// The loopback hosts test registries and token realms listen on: named,
/// as a `registries` entry names them, so that the client's guard lets
/// requests reach them (`registry::guard`).
pub const LOOPBACK: [&str; 3] = ["127.0.0.1", "127.0.0.2", "localhost"];

/// `promtool check metrics` passes the exposition (promtool is needed in
/// CI; elsewhere the check is skipped).
pub fn promtool_check(metrics: &str) {
    use std::io::Write as _;
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(std::env::var("CI").is_err(), "promtool is needed");
        return;
    }
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
