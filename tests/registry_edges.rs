//! The registry client where registries misbehave or sit behind
//! something: content that does not match its digest (the real registry
//! with its storage altered on disk), oversized manifests, an OCI index of
//! two platforms, the referrers tag schema, plain HTTP, a tag that moves
//! under the cache, the Bearer token flow (the real registry with token
//! auth, and a token realm written here), a CONNECT proxy with NO_PROXY,
//! and what the distribution registry cannot be made to do (stall
//! mid-body, redirect a blob to another host or to http), played by a few
//! lines of TLS on loopback that record what they are sent.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image_bouncer::credentials::Credentials;
use image_bouncer::digest::Digest;
use image_bouncer::image_ref::ImageRef;
use image_bouncer::registry::client::{Client, LookupError, OCI_INDEX};
use image_bouncer::registry::proxy::ProxyConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::registry::{Registry, Setup, basic, ca, start_with};

const WITHIN: Duration = Duration::from_secs(5);

fn alice(r: &Registry) -> Credentials {
    let auth = base64_std(b"alice:s3cret");
    Credentials::parse(&format!(
        r#"{{"auths": {{"127.0.0.1:{}": {{"auth": "{auth}"}}}}}}"#,
        r.port
    ))
    .unwrap()
}

fn base64_std(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn base64_url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn image(r: &Registry, rest: &str) -> ImageRef {
    ImageRef::parse(&format!("127.0.0.1:{}/{rest}", r.port)).unwrap()
}

fn permanent(answer: Result<impl std::fmt::Debug, LookupError>, want: &str) {
    match answer {
        Err(LookupError::Permanent(m)) => assert!(m.contains(want), "{want:?} in {m}"),
        other => panic!("wanted a permanent error with {want:?}, got {other:?}"),
    }
}

/// A multi-platform image (an OCI index of two manifests) resolves to the
/// index digest; manifests and blobs come back checked; and when the
/// registry's storage is altered on disk (what a compromised registry or
/// mirror serves), every path that reads it refuses the content.
#[test]
fn content_that_does_not_match_its_digest_is_refused() {
    let Some(r) = start_with("registry-lying", Setup::default()) else {
        return;
    };
    let (amd, amd_bytes) = r.push_image_manifest("team/app", "amd64", b"amd64 layer");
    let (arm, _) = r.push_image_manifest("team/app", "arm64", b"arm64 layer");
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{amd}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{arm}","size":{},"platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#,
        amd_bytes.len(),
        amd_bytes.len()
    );
    let index_digest = r.push_manifest("team/app", "multi", OCI_INDEX, index.as_bytes());
    let client = Client::new(alice(&r), ProxyConfig::default(), &ca(&r))
        .with_named_hosts(crate::registry::LOOPBACK);
    let multi = image(&r, "team/app:multi");
    assert_eq!(
        client.resolve(&multi, WITHIN).unwrap().to_string(),
        index_digest
    );
    let m = client.manifest(&multi, "multi", WITHIN).unwrap();
    assert_eq!(m.media_type, OCI_INDEX);
    assert_eq!(m.digest.to_string(), index_digest);
    let by_digest = client.manifest(&multi, &amd, WITHIN).unwrap();
    assert_eq!(by_digest.bytes, amd_bytes.as_bytes());
    // The config blob, by its descriptor.
    let layer = Digest::sha256_of(b"amd64 layer");
    assert_eq!(
        client.blob(&multi, &layer, 11, 1024, WITHIN).unwrap(),
        b"amd64 layer"
    );
    // A descriptor that says more than the cap: not even asked for.
    permanent(
        client.blob(&multi, &layer, 2048, 1024, WITHIN),
        "more than the 1024 accepted",
    );
    // A descriptor whose size is wrong: refused.
    permanent(client.blob(&multi, &layer, 5, 1024, WITHIN), "more than 5");

    // Now the registry lies: same length, other bytes.
    std::fs::write(r.blob_file(&layer.to_string()), b"evil! layer").unwrap();
    permanent(
        client.blob(&multi, &layer, 11, 1024, WITHIN),
        "whose digest is sha256:",
    );
    // Same length, still a manifest the registry can parse: one size
    // changed.
    let evil = amd_bytes.replace("\"size\":11}", "\"size\":12}");
    assert_ne!(evil, amd_bytes);
    std::fs::write(r.blob_file(&amd), &evil).unwrap();
    // By digest: the bytes are hashed, the header is not believed.
    permanent(client.manifest(&multi, &amd, WITHIN), "not the sha256:");
    // By tag: the registry's own Docker-Content-Digest does not match.
    permanent(client.manifest(&multi, "amd64", WITHIN), "not the sha256:");
}

/// A manifest over 4 MiB is refused as it arrives, not buffered whole,
/// whether the registry announces its length or not. (The distribution
/// registry will not serve one — it answers 500 when its stored manifest
/// is made that large — so a scripted registry does.)
#[test]
fn a_5_mb_manifest_is_refused() {
    let pki = crate::common::Pki::new("registry-big");
    let (port, _) = scripted(
        &pki,
        "big",
        Box::new(|req, w| {
            let size = 5 << 20;
            let announced = if req.line.contains("/announced/") {
                format!("Content-Length: {size}\r\n")
            } else {
                String::new()
            };
            let _ = write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n{announced}Connection: close\r\n\r\n"
            );
            let chunk = vec![b' '; 64 * 1024];
            for _ in 0..(size / chunk.len()) {
                if w.write_all(&chunk).is_err() {
                    return;
                }
            }
        }),
    );
    let client = Client::new(
        Credentials::default(),
        ProxyConfig::default(),
        &pki_roots(&pki),
    )
    .with_named_hosts(crate::registry::LOOPBACK);
    for repo in ["announced", "streamed"] {
        let app = ImageRef::parse(&format!("127.0.0.1:{port}/{repo}/app:v1")).unwrap();
        permanent(
            client.manifest(&app, "v1", WITHIN),
            "sent more than 4194304 bytes",
        );
        permanent(
            client.manifest(&app, &Digest::sha256_of(b"x").to_string(), WITHIN),
            "sent more than 4194304 bytes",
        );
    }
}

/// The distribution registry 2.8 has no referrers API (404): the index
/// tagged `sha256-<hex>` is read instead, filtered by artifact type.
#[test]
fn referrers_fall_back_to_the_tag_schema() {
    let Some(r) = start_with("registry-referrers", Setup::default()) else {
        return;
    };
    let (subject, subject_bytes) = r.push_image_manifest("team/app", "v1", b"app layer");
    let client = Client::new(alice(&r), ProxyConfig::default(), &ca(&r))
        .with_named_hosts(crate::registry::LOOPBACK);
    let app = image(&r, "team/app:v1");
    let subject = Digest::parse(&subject).unwrap();
    assert_eq!(
        client.referrers(&app, &subject, None, WITHIN).unwrap(),
        vec![],
        "no tag, no referrers"
    );
    let (sig, sig_bytes) = r.push_image_manifest("team/app", "sig-manifest", b"signature");
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{sig}","size":{},"artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json"}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{sig}","size":{},"artifactType":"application/spdx+json"}}]}}"#,
        sig_bytes.len(),
        sig_bytes.len()
    );
    r.push_manifest("team/app", &subject.tag_form(), OCI_INDEX, index.as_bytes());
    let all = client.referrers(&app, &subject, None, WITHIN).unwrap();
    assert_eq!(all.len(), 2);
    let bundles = client
        .referrers(
            &app,
            &subject,
            Some("application/vnd.dev.sigstore.bundle.v0.3+json"),
            WITHIN,
        )
        .unwrap();
    assert_eq!(bundles.len(), 1);
    assert_eq!(bundles[0].digest, sig);
    assert_eq!(bundles[0].size, sig_bytes.len() as u64);
    // A fallback tag that is not an index is refused, not read as one.
    let (other, _) = r.push_image_manifest("team/app", "other", b"other layer");
    let other = Digest::parse(&other).unwrap();
    r.push_manifest(
        "team/app",
        &other.tag_form(),
        "application/vnd.oci.image.manifest.v1+json",
        subject_bytes.as_bytes(),
    );
    permanent(
        client.referrers(&app, &other, None, WITHIN),
        "not the OCI index",
    );
}

/// Plain HTTP only for a registry configured so; a tag moved is seen
/// once the cache's TTL has passed, not before.
#[test]
fn plain_http_by_configuration_and_a_moved_tag_after_the_ttl() {
    let Some(r) = start_with(
        "registry-plain",
        Setup {
            tls_host: None,
            ..Setup::default()
        },
    ) else {
        return;
    };
    let first = r.push_image_manifest("team/app", "v1", b"one").0;
    let app = image(&r, "team/app:v1");
    let tls_only = Client::new(alice(&r), ProxyConfig::default(), &[])
        .with_named_hosts(crate::registry::LOOPBACK);
    assert!(
        matches!(
            tls_only.resolve(&app, WITHIN),
            Err(LookupError::Unreachable(_))
        ),
        "https to a plain HTTP registry must fail"
    );
    let registry = format!("127.0.0.1:{}", r.port);
    let plain = Client::new(alice(&r), ProxyConfig::default(), &[])
        .with_named_hosts(crate::registry::LOOPBACK)
        .with_plain_http([&registry])
        .with_tag_ttl(Duration::from_millis(700));
    assert_eq!(
        plain.resolve_cached(&app, WITHIN).unwrap().to_string(),
        first
    );
    let moved = r.push_image_manifest("team/app", "v1", b"two").0;
    assert_eq!(
        plain.resolve_cached(&app, WITHIN).unwrap().to_string(),
        first,
        "within the TTL the cached digest is the answer"
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        plain.resolve_cached(&app, WITHIN).unwrap().to_string(),
        moved
    );
    // The policy file says so, and the server warns at start.
    let policy = r.dir.join("policy.json");
    std::fs::write(
        &policy,
        format!(
            r#"{{"registryCredentials": {:?}, "registries": {{"{registry}": {{"plainHttp": true}}}}}}"#,
            crate::registry::write_dockercfg(&r).to_str().unwrap()
        ),
    )
    .unwrap();
    let out = crate::common::run(
        &[
            "check",
            "--json",
            "--resolve",
            "--policy",
            policy.to_str().unwrap(),
            &app.to_string(),
        ],
        None,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["images"][0]["digest"], moved.as_str(), "{v}");
    assert!(
        crate::common::stderr(&out).contains("plain HTTP"),
        "{}",
        crate::common::stderr(&out)
    );
}

// ---------------------------------------------------------------------
// A few lines of TLS on loopback for what the real registry will not do.

/// One request as the scripted server read it.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Handler = dyn Fn(&Seen, &mut dyn Write) + Send + Sync;

/// Serves TLS (a certificate for localhost and 127.0.0.1 from `pki`) on
/// a loopback port, one request per connection, recording each request.
fn scripted(
    pki: &crate::common::Pki,
    name: &str,
    handler: Box<Handler>,
) -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let config = crate::common::tls_server_config(pki, name);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let handler: Arc<Handler> = Arc::from(handler);
    std::thread::spawn(move || {
        for sock in listener.incoming().flatten() {
            let (config, log, handler) = (config.clone(), log.clone(), handler.clone());
            std::thread::spawn(move || {
                let tls =
                    rustls::StreamOwned::new(rustls::ServerConnection::new(config).unwrap(), sock);
                let mut reader = BufReader::new(tls);
                let Some(req) = read_request(&mut reader) else {
                    return;
                };
                log.lock().unwrap().push(req.clone());
                let tls = reader.get_mut();
                handler(&req, tls);
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    (port, seen)
}

fn read_request(r: &mut impl BufRead) -> Option<Seen> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    if line.is_empty() {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Seen {
        line: line.trim_end().to_string(),
        headers,
        body,
    })
}

fn pki_roots(pki: &crate::common::Pki) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(&pki.ca_file)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn creds_for(host_port: &str) -> Credentials {
    Credentials::parse(&format!(
        r#"{{"auths": {{"{host_port}": {{"auth": "{}"}}}}}}"#,
        base64_std(b"alice:s3cret")
    ))
    .unwrap()
}

/// Issue 33, 3: a registry with the referrers API that answers 404 for
/// a repository it does not hold (as zot does) teaches nothing about its
/// other repositories: their bundles are still found through the API.
#[test]
fn one_repositorys_referrers_404_hides_nothing_elsewhere() {
    let pki = crate::common::Pki::new("registry-referrers-404");
    let subject = Digest::sha256_of(b"subject");
    let listed = Digest::sha256_of(b"bundle manifest");
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{listed}","size":10,"artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json"}}]}}"#
    );
    let (port, seen) = scripted(
        &pki,
        "referrers-404",
        Box::new(move |req, w| {
            if req.line.starts_with("GET /v2/present/referrers/") {
                let _ = write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Type: {OCI_INDEX}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{index}",
                    index.len()
                );
            } else {
                let body = r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#;
                let _ = write!(
                    w,
                    "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        }),
    );
    let client = Client::new(
        Credentials::default(),
        ProxyConfig::default(),
        &pki_roots(&pki),
    )
    .with_named_hosts(crate::registry::LOOPBACK);
    let missing = ImageRef::parse(&format!("127.0.0.1:{port}/missing@{subject}")).unwrap();
    let present = ImageRef::parse(&format!("127.0.0.1:{port}/present@{subject}")).unwrap();
    for _ in 0..2 {
        assert_eq!(
            client.referrers(&missing, &subject, None, WITHIN).unwrap(),
            vec![]
        );
        let found = client.referrers(&present, &subject, None, WITHIN).unwrap();
        assert_eq!(found.len(), 1, "{:?}", seen.lock().unwrap());
        assert_eq!(found[0].digest, listed.to_string());
    }
}

/// A registry that stalls mid-body is given up on at the deadline, as out
/// of time (never a registry error); one that redirects a blob to storage elsewhere gets
/// the blob fetched there without its credentials, and checked; one that
/// redirects to http is refused and the http host never hears from us.
#[test]
fn stalls_and_redirects() {
    let pki = crate::common::Pki::new("registry-scripted");
    let blob = b"the real blob".to_vec();
    let digest = Digest::sha256_of(&blob);
    // Storage elsewhere: answers any GET with the blob.
    let served = blob.clone();
    let (storage, storage_seen) = scripted(
        &pki,
        "storage",
        Box::new(move |_, w| {
            let _ = write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                served.len()
            );
            let _ = w.write_all(&served);
        }),
    );
    // Plain http: must never be reached.
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let http_port = http.local_addr().unwrap().port();
    http.set_nonblocking(true).unwrap();
    let (registry, registry_seen) = scripted(
        &pki,
        "registry",
        Box::new(move |req, w| {
            if req.header("authorization").is_none() {
                let _ = w.write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            } else if req.line.contains("/stall/") {
                let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{\"schema");
                let _ = w.flush();
                std::thread::sleep(Duration::from_secs(8));
            } else if req.line.contains("/tohttp/") {
                let _ = write!(
                    w,
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{http_port}/blob\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            } else {
                let _ = write!(
                    w,
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: https://localhost:{storage}/bucket/blob?sig=1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        }),
    );
    let client = Client::new(
        creds_for(&format!("127.0.0.1:{registry}")),
        ProxyConfig::default(),
        &pki_roots(&pki),
    )
    .with_named_hosts(crate::registry::LOOPBACK);
    let img = |repo: &str| ImageRef::parse(&format!("127.0.0.1:{registry}/{repo}:v1")).unwrap();
    // Redirected blob: fetched, checked, no credentials at the storage.
    assert_eq!(
        client
            .blob(&img("team/app"), &digest, blob.len() as u64, 1024, WITHIN)
            .unwrap(),
        blob
    );
    let at_storage = storage_seen.lock().unwrap().clone();
    assert_eq!(at_storage.len(), 1);
    assert!(
        at_storage[0].header("authorization").is_none(),
        "{at_storage:?}"
    );
    assert!(
        registry_seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.header("authorization") == Some(basic("alice", "s3cret").as_str())),
        "the registry itself got the credentials"
    );
    // The same storage serving other bytes than the digest: refused.
    let other = Digest::sha256_of(b"another blob!");
    permanent(
        client.blob(&img("team/app"), &other, 13, 1024, WITHIN),
        "not the sha256:",
    );
    // https -> http: refused, nothing sent there.
    permanent(
        client.blob(&img("team/tohttp"), &digest, 13, 1024, WITHIN),
        "not https",
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(http.accept().is_err(), "the http host was contacted");
    // A stall mid-body: given up at the deadline.
    let began = Instant::now();
    let stalled = client.manifest(&img("team/stall"), "v1", Duration::from_secs(2));
    assert!(
        matches!(&stalled, Err(LookupError::TimedOut(_))),
        "{stalled:?}"
    );
    let took = began.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "a stalled body held the lookup for {took:?}"
    );
}

/// A CONNECT proxy on loopback: it sees the registry's name and port
/// (the registry's name resolves only there); NO_PROXY sends requests
/// direct by name, by domain suffix, by port; proxy credentials reach the
/// proxy and never an error.
#[test]
fn a_connect_proxy_and_no_proxy() {
    let Some(r) = start_with(
        "registry-proxied",
        Setup {
            tls_host: Some("registry.test"),
            ..Setup::default()
        },
    ) else {
        return;
    };
    let digest = r.push_image_manifest("team/app", "v1", b"proxied").0;
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_port = proxy.local_addr().unwrap().port();
    let connects: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = connects.clone();
    let upstream = r.port;
    std::thread::spawn(move || {
        for sock in proxy.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(sock.try_clone().unwrap());
                let Some(req) = read_request(&mut reader) else {
                    return;
                };
                log.lock().unwrap().push(req.clone());
                let mut client = sock;
                // The registry's name is known here alone.
                if !req
                    .line
                    .starts_with(&format!("CONNECT registry.test:{upstream} "))
                {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
                    return;
                }
                let server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let buffered = reader.buffer().to_vec();
                let _ = s2.write_all(&buffered);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                });
                let (mut s3, mut c3) = (server, client);
                let _ = std::io::copy(&mut s3, &mut c3);
            });
        }
    });
    let app = ImageRef::parse(&format!("registry.test:{}/team/app:v1", r.port)).unwrap();
    let creds = creds_for(&format!("registry.test:{}", r.port));
    let via = |no_proxy: &str| {
        let env: Vec<(String, String)> = vec![
            (
                "HTTPS_PROXY".into(),
                format!("http://proxyuser:proxypass@127.0.0.1:{proxy_port}"),
            ),
            ("NO_PROXY".into(), no_proxy.into()),
        ];
        let proxies =
            ProxyConfig::from_env(&|k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()));
        Client::new(creds.clone(), proxies, &ca(&r)).with_named_hosts(crate::registry::LOOPBACK)
    };
    let count = || connects.lock().unwrap().len();
    for no_proxy in [
        "",
        "other.test",
        ".registry.test",
        &format!("registry.test:{}", r.port.wrapping_add(1)),
        "10.0.0.0/8, localhost",
    ] {
        let before = count();
        assert_eq!(
            via(no_proxy).resolve(&app, WITHIN).unwrap().to_string(),
            digest,
            "NO_PROXY={no_proxy:?}"
        );
        assert!(count() > before, "NO_PROXY={no_proxy:?} went direct");
    }
    let last = connects.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        last.header("proxy-authorization"),
        Some(basic("proxyuser", "proxypass").as_str())
    );
    for no_proxy in [
        "registry.test",
        "test",
        ".test",
        "*",
        &format!(" registry.test:{} ", r.port),
    ] {
        let before = count();
        // Direct: registry.test does not resolve here.
        let answer = via(no_proxy).resolve(&app, WITHIN);
        match &answer {
            Err(LookupError::Unreachable(m)) => {
                assert!(!m.contains("proxypass"), "{m}");
            }
            other => panic!("NO_PROXY={no_proxy:?}: {other:?}"),
        }
        assert_eq!(count(), before, "NO_PROXY={no_proxy:?} used the proxy");
    }
}

// ---------------------------------------------------------------------
// The Bearer token flow: the real registry with token auth, and a token
// realm written here (the registry's token auth needs a token server).

/// The realm: checks Basic credentials (alice) or a refresh token, and
/// issues ES256 JWTs the registry verifies against `token.crt`.
fn token_realm(pki: &crate::common::Pki, dir: &std::path::Path) -> (u16, Arc<Mutex<Vec<Seen>>>) {
    // The signing certificate: self-signed, the registry's root bundle.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test token issuer");
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("token.crt"), cert.pem()).unwrap();
    let x5c = base64_std(cert.der());
    let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &key.serialize_der(),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let signer = Arc::new(signer);
    scripted(
        pki,
        "realm",
        Box::new(move |req, w| {
            let target = req.line.split(' ').nth(1).unwrap_or("");
            let form = if req.line.starts_with("POST ") {
                String::from_utf8_lossy(&req.body).to_string()
            } else {
                target.split_once('?').map_or("", |(_, q)| q).to_string()
            };
            let param = |name: &str| {
                form.split('&')
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                    .map(|v| {
                        v.replace("%3A", ":")
                            .replace("%2F", "/")
                            .replace("%2C", ",")
                    })
            };
            let user = if req.line.starts_with("POST ") {
                (param("grant_type").as_deref() == Some("refresh_token")
                    && param("refresh_token").as_deref() == Some("refresh-abc"))
                .then_some("alice")
            } else {
                match req.header("authorization") {
                    Some(a) if a == basic("alice", "s3cret") => Some("alice"),
                    Some(_) => {
                        let _ = w.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        return;
                    }
                    None => None,
                }
            };
            let mut access = Vec::new();
            if let (Some(_), Some(scope)) = (user, param("scope")) {
                let mut parts = scope.splitn(3, ':');
                let (kind, name, actions) = (
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                );
                access.push(serde_json::json!({
                    "type": kind, "name": name,
                    "actions": actions.split(',').collect::<Vec<_>>(),
                }));
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]});
            let claims = serde_json::json!({
                "iss": "test-issuer", "sub": user.unwrap_or(""), "aud": "test-registry",
                "exp": now + 300, "nbf": now - 10, "iat": now - 10,
                "jti": format!("{now}-{}", access.len()), "access": access,
            });
            let signing_input = format!(
                "{}.{}",
                base64_url(header.to_string().as_bytes()),
                base64_url(claims.to_string().as_bytes())
            );
            let sig = signer
                .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
                .unwrap();
            let body = serde_json::json!({
                "token": format!("{signing_input}.{}", base64_url(sig.as_ref())),
                "expires_in": 300,
            })
            .to_string();
            let _ = write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }),
    )
}

/// The Bearer flow against the real registry: a 401 challenge sends us to
/// the realm with Basic credentials (or an identity token's refresh), the
/// token is cached per repository, wrong or missing credentials are told
/// apart, and the realm is never sent the registry's credentials unless
/// the challenge pointed there.
#[test]
fn the_bearer_token_flow() {
    if !crate::registry::have_registry() {
        return;
    }
    let pki = crate::common::Pki::new("registry-token");
    let dir = pki.dir.clone();
    let (realm, realm_seen) = token_realm(&pki, &dir);
    // A token for pushing, from the realm itself.
    let push_token = || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(Arc::new(
                        pki_roots(&pki)
                            .iter()
                            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
                            .collect(),
                    )))
                    .build(),
            )
            .build()
            .into();
        let text = agent
            .get(&format!(
                "https://127.0.0.1:{realm}/token?service=test-registry&scope=repository:team/app:pull,push"
            ))
            .header("Authorization", basic("alice", "s3cret"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        format!("Bearer {}", v["token"].as_str().unwrap())
    };
    let auth = format!(
        "  token:\n    realm: https://127.0.0.1:{realm}/token\n    service: test-registry\n    issuer: test-issuer\n    rootcertbundle: {}\n",
        dir.join("token.crt").display()
    );
    let Some(r) = start_with(
        "registry-bearer",
        Setup {
            auth: Some(auth),
            push_auth: Some(push_token()),
            ..Setup::default()
        },
    ) else {
        return;
    };
    let digest = r.push_image_manifest("team/app", "v1", b"behind tokens").0;
    r.push_image_manifest("team/app", "v2", b"second tag");
    let roots: Vec<CertificateDer<'static>> = ca(&r).into_iter().chain(pki_roots(&pki)).collect();
    let app = |tag: &str| image(&r, &format!("team/app:{tag}"));
    let realm_requests = || realm_seen.lock().unwrap().len();

    let before = realm_requests();
    let client = Client::new(alice(&r), ProxyConfig::default(), &roots)
        .with_named_hosts(crate::registry::LOOPBACK);
    assert_eq!(
        client.resolve(&app("v1"), WITHIN).unwrap().to_string(),
        digest
    );
    let asked = realm_seen.lock().unwrap()[before..].to_vec();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(
        asked[0].header("authorization"),
        Some(basic("alice", "s3cret").as_str())
    );
    assert!(
        asked[0]
            .line
            .contains("scope=repository%3Ateam%2Fapp%3Apull")
            && asked[0].line.contains("service=test-registry"),
        "{}",
        asked[0].line
    );
    // The token is cached: another tag of the same repository is one
    // request to the registry and none to the realm.
    let sent = client.stats().requests();
    client.resolve(&app("v2"), WITHIN).unwrap();
    assert_eq!(realm_requests(), before + 1, "the token was not reused");
    assert_eq!(
        client.stats().requests(),
        sent + 1,
        "one round trip with a cached token"
    );

    // An identity token: refreshed with a POST, no password anywhere.
    let refresh = Credentials::parse(&format!(
        r#"{{"auths": {{"127.0.0.1:{}": {{"identitytoken": "refresh-abc"}}}}}}"#,
        r.port
    ))
    .unwrap();
    let before = realm_requests();
    let with_refresh = Client::new(refresh, ProxyConfig::default(), &roots)
        .with_named_hosts(crate::registry::LOOPBACK);
    assert_eq!(
        with_refresh
            .resolve(&app("v1"), WITHIN)
            .unwrap()
            .to_string(),
        digest
    );
    let asked = realm_seen.lock().unwrap()[before..].to_vec();
    assert!(asked[0].line.starts_with("POST "), "{asked:?}");
    assert!(asked[0].header("authorization").is_none());

    // Wrong credentials: the realm refuses them. None: an anonymous token
    // the registry refuses.
    let wrong = Credentials::parse(&format!(
        r#"{{"auths": {{"127.0.0.1:{}": {{"auth": "{}"}}}}}}"#,
        r.port,
        base64_std(b"alice:wrong")
    ))
    .unwrap();
    permanent(
        Client::new(wrong, ProxyConfig::default(), &roots)
            .with_named_hosts(crate::registry::LOOPBACK)
            .resolve(&app("v1"), WITHIN),
        "the credentials were refused",
    );
    let before = realm_requests();
    permanent(
        Client::new(Credentials::default(), ProxyConfig::default(), &roots)
            .with_named_hosts(crate::registry::LOOPBACK)
            .resolve(&app("v1"), WITHIN),
        "no credentials are configured for it",
    );
    let asked = realm_seen.lock().unwrap()[before..].to_vec();
    assert!(
        asked.iter().all(|s| s.header("authorization").is_none()),
        "{asked:?}"
    );
    // Credentials for the realm's host only (127.0.0.1 on the realm's
    // port) are not the registry's: the registry's challenge decides.
    let realm_creds = creds_for(&format!("127.0.0.1:{realm}"));
    let before = realm_requests();
    permanent(
        Client::new(realm_creds, ProxyConfig::default(), &roots)
            .with_named_hosts(crate::registry::LOOPBACK)
            .resolve(&app("v1"), WITHIN),
        "no credentials are configured for it",
    );
    let asked = realm_seen.lock().unwrap()[before..].to_vec();
    assert!(asked.iter().all(|s| s.header("authorization").is_none()));
}

/// The server gives a review's lookups the apiserver's own timeout (its
/// `?timeout=`) less 2 s, and denies when that runs out: a registry that
/// never answers holds `/mutate?timeout=3s` about 1 s, and a review
/// without the query the default 3 s.
#[test]
fn the_lookup_deadline_follows_the_apiservers_timeout() {
    let pki = crate::common::Pki::new("registry-deadline");
    let (port, _) = scripted(
        &pki,
        "silent",
        Box::new(|_, _| std::thread::sleep(Duration::from_secs(10))),
    );
    let policy = pki.dir.join("policy.json");
    std::fs::write(
        &policy,
        format!(
            r#"{{"registries": {{"127.0.0.1:{port}": {{"ca": {:?}}}}}, "mutate": {{"mutateDigest": ["*"]}}}}"#,
            pki.ca_file.to_str().unwrap()
        ),
    )
    .unwrap();
    let (server_pki, server) = crate::common::tls_server(
        "registry-deadline-server",
        &["--policy", policy.to_str().unwrap()],
    );
    let body =
        std::fs::read(crate::common::fixtures().join("admission/pod-create-allowed.request.json"))
            .unwrap();
    let review: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let config = crate::common::client_config(&server_pki.ca_file, None);
    // Another image each time: a failure is remembered for a moment.
    for (path, repo, low, high) in [
        ("/mutate?timeout=3s", "one", 900, 2000),
        ("/mutate", "two", 2900, 4500),
    ] {
        let mut v = review.clone();
        v["request"]["object"]["spec"]["containers"][0]["image"] =
            format!("127.0.0.1:{port}/team/{repo}:v1").into();
        let body = v.to_string();
        let mut c = crate::common::Client::tls(server.addr, config.clone()).unwrap();
        let began = Instant::now();
        let v = c.post(path, body.as_bytes()).unwrap().json();
        let took = began.elapsed().as_millis();
        assert_eq!(v["response"]["allowed"], false, "{v}");
        assert!(
            v["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("could not be pinned"),
            "{v}"
        );
        assert!((low..high).contains(&took), "{path}: {took} ms: {v}");
    }
}

/// At most `MAX_IN_FLIGHT` requests are under way to one registry however
/// many reviews ask; the rest wait their turn within their deadline.
#[test]
fn requests_to_one_registry_are_capped() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let pki = crate::common::Pki::new("registry-slots");
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (n, m) = (now.clone(), most.clone());
    let digest = Digest::sha256_of(b"m").to_string();
    let (port, seen) = scripted(
        &pki,
        "slow",
        Box::new(move |_, w| {
            let here = n.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(here, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(300));
            n.fetch_sub(1, Ordering::SeqCst);
            let _ = write!(
                w,
                "HTTP/1.1 200 OK\r\nDocker-Content-Digest: {digest}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }),
    );
    let client = Arc::new(
        Client::new(
            Credentials::default(),
            ProxyConfig::default(),
            &pki_roots(&pki),
        )
        .with_named_hosts(crate::registry::LOOPBACK),
    );
    let answers: Vec<_> = (0..20)
        .map(|i| {
            let c = client.clone();
            let img = ImageRef::parse(&format!("127.0.0.1:{port}/team/app:v{i}")).unwrap();
            std::thread::spawn(move || c.resolve(&img, WITHIN))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    assert_eq!(seen.lock().unwrap().len(), 20);
    let most = most.load(Ordering::SeqCst);
    assert!(
        (2..=image_bouncer::registry::client::MAX_IN_FLIGHT).contains(&most),
        "{most} at once"
    );
    assert!(
        !client
            .stats()
            .render()
            .contains("image_bouncer_registry_slot_waits_total 0\n"),
        "{}",
        client.stats().render()
    );
}

/// A pooled connection the registry closed as our request went out is
/// retried once on a new connection, and counted.
#[test]
fn a_stale_pooled_connection_is_retried_once() {
    let pki = crate::common::Pki::new("registry-stale");
    let config = crate::common::tls_server_config(&pki, "stale");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let digest = Digest::sha256_of(b"stale").to_string();
    let connections = Arc::new(Mutex::new(0usize));
    let counted = connections.clone();
    std::thread::spawn(move || {
        for sock in listener.incoming().flatten() {
            *counted.lock().unwrap() += 1;
            let (config, digest) = (config.clone(), digest.clone());
            std::thread::spawn(move || {
                let tls =
                    rustls::StreamOwned::new(rustls::ServerConnection::new(config).unwrap(), sock);
                let mut reader = BufReader::new(tls);
                // The first request is answered and the connection kept;
                // the second is read and the connection dropped unanswered.
                if read_request(&mut reader).is_none() {
                    return;
                }
                let _ = write!(
                    reader.get_mut(),
                    "HTTP/1.1 200 OK\r\nDocker-Content-Digest: {digest}\r\nContent-Length: 0\r\n\r\n"
                );
                let _ = reader.get_mut().flush();
                let _ = read_request(&mut reader);
                let _ = reader.get_mut().sock.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    let client = Client::new(
        Credentials::default(),
        ProxyConfig::default(),
        &pki_roots(&pki),
    )
    .with_named_hosts(crate::registry::LOOPBACK);
    let img = |tag: &str| ImageRef::parse(&format!("127.0.0.1:{port}/team/app:{tag}")).unwrap();
    assert_eq!(
        client.resolve(&img("a"), WITHIN).unwrap().to_string(),
        Digest::sha256_of(b"stale").to_string()
    );
    let second = client.resolve(&img("b"), WITHIN);
    assert!(second.is_ok(), "{second:?}");
    assert_eq!(
        *connections.lock().unwrap(),
        2,
        "the second lookup reused, then reconnected once"
    );
    let metrics = client.stats().render();
    assert!(
        metrics.contains("image_bouncer_registry_stale_retries_total 1\n"),
        "{metrics}"
    );
}

/// What a token endpoint says is believed within reason: an absurd
/// `expires_in` neither overflows a clock nor keeps a token for ever, a
/// token that cannot be a header value is refused, and a realm that is
/// not https gets nothing.
#[test]
fn token_answers_are_believed_within_reason() {
    let pki = crate::common::Pki::new("registry-token-edges");
    let port = Arc::new(Mutex::new(0u16));
    let p = port.clone();
    let digest = Digest::sha256_of(b"t").to_string();
    let (registry, seen) = scripted(
        &pki,
        "tokens",
        Box::new(move |req, w| {
            let port = *p.lock().unwrap();
            let target = req.line.split(' ').nth(1).unwrap_or("");
            let long = format!(r#"{{"token":"{}"}}"#, "a".repeat(20_000));
            let body = if target.starts_with("/token-huge") {
                r#"{"token":"abc","expires_in":18446744073709551615}"#
            } else if target.starts_with("/token-bad") {
                "{\"token\":\"a\\r\\nX-Injected: 1\"}"
            } else if target.starts_with("/token-long") {
                long.as_str()
            } else if req.header("authorization") == Some("Bearer abc") {
                let _ = write!(
                    w,
                    "HTTP/1.1 200 OK\r\nDocker-Content-Digest: {digest}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                return;
            } else {
                let realm = if target.contains("/bad/") {
                    format!("https://127.0.0.1:{port}/token-bad")
                } else if target.contains("/long/") {
                    format!("https://127.0.0.1:{port}/token-long")
                } else if target.contains("/user/") {
                    format!("https://10.0.0.1@127.0.0.1:{port}/token-huge")
                } else if target.contains("/http/") {
                    format!("http://127.0.0.1:{port}/token-huge")
                } else {
                    format!("https://127.0.0.1:{port}/token-huge")
                };
                let _ = write!(
                    w,
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",service=\"s\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                return;
            };
            let _ = write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }),
    );
    *port.lock().unwrap() = registry;
    let client = Client::new(
        creds_for(&format!("127.0.0.1:{registry}")),
        ProxyConfig::default(),
        &pki_roots(&pki),
    )
    .with_named_hosts(crate::registry::LOOPBACK);
    let img = |repo: &str| ImageRef::parse(&format!("127.0.0.1:{registry}/{repo}:v1")).unwrap();
    assert_eq!(
        client
            .resolve(&img("team/app"), WITHIN)
            .unwrap()
            .to_string(),
        Digest::sha256_of(b"t").to_string()
    );
    permanent(
        client.resolve(&img("team/bad/app"), WITHIN),
        "cannot be a header value",
    );
    permanent(
        client.resolve(&img("team/long/app"), WITHIN),
        "at most 16384",
    );
    let before = seen.lock().unwrap().len();
    permanent(client.resolve(&img("team/user/app"), WITHIN), "user part");
    assert_eq!(
        seen.lock().unwrap().len(),
        before + 1,
        "the realm was asked"
    );
    let before = seen.lock().unwrap().len();
    permanent(
        client.resolve(&img("team/http/app"), WITHIN),
        "is not https",
    );
    let asked = seen.lock().unwrap()[before..].to_vec();
    assert_eq!(asked.len(), 1, "only the registry was asked: {asked:?}");
}

/// Only the registry's own challenge is answered: a redirect to a host
/// that asks for credentials gets none, and its token realm is never
/// contacted.
#[test]
fn a_redirect_target_cannot_ask_for_the_registrys_credentials() {
    let pki = crate::common::Pki::new("registry-redirect-401");
    let realm_port = Arc::new(Mutex::new(0u16));
    let rp = realm_port.clone();
    let (other, other_seen) = scripted(
        &pki,
        "other",
        Box::new(move |_, w| {
            let port = *rp.lock().unwrap();
            let _ = write!(
                w,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"https://localhost:{port}/token\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }),
    );
    *realm_port.lock().unwrap() = other;
    let (registry, _) = scripted(
        &pki,
        "redirecting",
        Box::new(move |req, w| {
            if req.header("authorization").is_none() {
                let _ = w.write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"r\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            } else {
                let _ = write!(
                    w,
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: https://localhost:{other}/v2/x/manifests/v1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        }),
    );
    let client = Client::new(
        creds_for(&format!("127.0.0.1:{registry}")),
        ProxyConfig::default(),
        &pki_roots(&pki),
    )
    .with_named_hosts(crate::registry::LOOPBACK);
    let img = ImageRef::parse(&format!("127.0.0.1:{registry}/team/app:v1")).unwrap();
    permanent(
        client.manifest(&img, "v1", WITHIN),
        "they are not sent there",
    );
    let seen = other_seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "only the redirected request: {seen:?}");
    assert!(seen[0].header("authorization").is_none(), "{seen:?}");
    assert!(
        seen[0].line.starts_with("GET /v2/"),
        "the realm was contacted: {seen:?}"
    );
}

/// A lookup that ran out of its caller's time is not another caller's
/// answer: a review with time left that was waiting on it asks again,
/// and nothing is remembered.
#[test]
fn one_reviews_deadline_is_not_anothers_failure() {
    let pki = crate::common::Pki::new("registry-deadline-share");
    let digest = Digest::sha256_of(b"slow").to_string();
    let (port, seen) = scripted(
        &pki,
        "slowish",
        Box::new(move |_, w| {
            std::thread::sleep(Duration::from_millis(700));
            let _ = write!(
                w,
                "HTTP/1.1 200 OK\r\nDocker-Content-Digest: {digest}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }),
    );
    let client = Arc::new(
        Client::new(
            Credentials::default(),
            ProxyConfig::default(),
            &pki_roots(&pki),
        )
        .with_named_hosts(crate::registry::LOOPBACK),
    );
    let img = ImageRef::parse(&format!("127.0.0.1:{port}/team/app:v1")).unwrap();
    let (c, i) = (client.clone(), img.clone());
    let hurried = std::thread::spawn(move || c.resolve_cached(&i, Duration::from_millis(300)));
    std::thread::sleep(Duration::from_millis(50));
    let patient = client.resolve_cached(&img, Duration::from_secs(5));
    assert!(
        matches!(hurried.join().unwrap(), Err(LookupError::TimedOut(_))),
        "the hurried lookup had 300 ms"
    );
    assert_eq!(
        patient.unwrap().to_string(),
        Digest::sha256_of(b"slow").to_string()
    );
    assert!(seen.lock().unwrap().len() >= 2);
}

/// Verification has the review's deadline too, and running out denies:
/// a registry that never answers the signature lookups makes
/// `/validate?timeout=3s` deny "the review's time ran out" in about a
/// second.
#[test]
fn a_stalled_signature_lookup_denies_at_the_deadline() {
    let pki = crate::common::Pki::new("registry-verify-deadline");
    let (port, _) = scripted(
        &pki,
        "silent-sigs",
        Box::new(|_, _| std::thread::sleep(Duration::from_secs(10))),
    );
    let key = crate::common::fixtures().join("cosign/keyed-p384/cosign.pub");
    let policy = pki.dir.join("policy.json");
    std::fs::write(
        &policy,
        serde_json::json!({
            "registries": {(format!("127.0.0.1:{port}")): {"ca": pki.ca_file.to_str().unwrap()}},
            "verifyImages": [{"images": ["*"], "keys": [key.to_str().unwrap()], "ignoreTlog": true}],
        })
        .to_string(),
    )
    .unwrap();
    let (server_pki, server) = crate::common::tls_server(
        "registry-verify-deadline-server",
        &["--policy", policy.to_str().unwrap()],
    );
    let body =
        std::fs::read(crate::common::fixtures().join("admission/pod-create-allowed.request.json"))
            .unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["request"]["object"]["spec"]["containers"][0]["image"] =
        format!("127.0.0.1:{port}/team/app@{}", Digest::sha256_of(b"app")).into();
    let mut c = crate::common::Client::tls(
        server.addr,
        crate::common::client_config(&server_pki.ca_file, None),
    )
    .unwrap();
    let began = Instant::now();
    let v = c
        .post("/validate?timeout=3s", v.to_string().as_bytes())
        .unwrap()
        .json();
    let took = began.elapsed();
    assert_eq!(v["response"]["allowed"], false, "{v}");
    let m = v["response"]["status"]["message"].as_str().unwrap();
    assert!(
        m.contains("the review's time ran out before the signatures of"),
        "{m}"
    );
    assert!(took < Duration::from_millis(2500), "{took:?}");
}
