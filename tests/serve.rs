//! `image-bouncer serve` end to end: the real binary on 127.0.0.1 with
//! certificates made here, spoken to over real TLS.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{
    Client, Pki, Server, client_config, fixtures, loopback, run, spawn_listening, stderr,
    tls_server,
};

const REVIEW_LATEST: &str = "imagereview/pod-create-latest.request.json";
const REVIEW_OK: &str = "imagereview/pod-create-allowed.request.json";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap()
}

fn allowed(reply: &crate::common::Reply) -> bool {
    reply.json()["status"]["allowed"].as_bool().unwrap()
}

#[test]
fn reviews_health_and_errors_over_one_keep_alive_connection() {
    let (pki, server) = tls_server("basic", &[]);
    let mut c = Client::tls(server.addr, client_config(&pki.ca_file, None)).unwrap();
    let r = c
        .post("/image_policy?timeout=30s", &fixture(REVIEW_LATEST))
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(!allowed(&r));
    let r = c
        .post(
            "/validate?timeout=10s",
            &fixture("admission/pod-create-allowed.request.json"),
        )
        .unwrap();
    assert_eq!(r.json()["response"]["allowed"], true);
    let r = c
        .post("/", &fixture("admission/pod-create-latest.request.json"))
        .unwrap();
    assert_eq!(r.json()["response"]["status"]["code"], 403);
    assert_eq!(c.get("/healthz").unwrap().status, 200);
    assert_eq!(c.get("/readyz").unwrap().text(), "ready\n");
    let r = c.get("/image_policy").unwrap();
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    assert_eq!(c.get("/nope").unwrap().status, 404);
    let r = c
        .send_raw(
            b"POST /validate HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}",
        )
        .unwrap();
    assert_eq!(r.status, 415);
    let r = c.post("/validate", b"{\"kind\":").unwrap();
    assert_eq!(r.status, 400);
    assert!(
        r.text().starts_with("request body is not JSON"),
        "{}",
        r.text()
    );
    // Chunked bodies are decoded too.
    let body = fixture(REVIEW_OK);
    let (a, b) = body.split_at(40);
    let chunked = [
        b"POST /image_policy HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
        format!("{:x}\r\n", a.len()).into_bytes(),
        a.to_vec(),
        format!("\r\n{:x}\r\n", b.len()).into_bytes(),
        b.to_vec(),
        b"\r\n0\r\n\r\n".to_vec(),
    ]
    .concat();
    assert!(allowed(&c.send_raw(&chunked).unwrap()));

    let metrics = c.get("/metrics").unwrap().text();
    for line in [
        "image_bouncer_requests_total{endpoint=\"image_policy\",outcome=\"denied\"} 1",
        "image_bouncer_requests_total{endpoint=\"image_policy\",outcome=\"allowed\"} 1",
        "image_bouncer_requests_total{endpoint=\"validate\",outcome=\"allowed\"} 1",
        "image_bouncer_requests_total{endpoint=\"validate\",outcome=\"denied\"} 1",
        "image_bouncer_requests_total{endpoint=\"validate\",outcome=\"invalid\"} 2",
        "image_bouncer_requests_total{endpoint=\"image_policy\",outcome=\"invalid\"} 1",
        "image_bouncer_open_connections 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    let expiry: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("image_bouncer_certificate_expiry_timestamp_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(expiry > 1_900_000_000, "{expiry}");
    // One info line per decision, its level padded to five.
    server.wait_for_log(
        " INFO  /image_policy: denied: Pod (ImageReview) namespace=\"default\" images=[\"nginx:latest\"]",
        Duration::from_secs(30),
    );
}

#[test]
fn oversize_body_gets_413_without_being_read() {
    let (pki, server) = tls_server("oversize", &[]);
    let mut c = Client::tls(server.addr, client_config(&pki.ca_file, None)).unwrap();
    // Answered before a byte of the body is sent (none is).
    let r = c
        .send_raw(b"POST /validate HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 10485760\r\n\r\n")
        .unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
    // A client that keeps sending past the cap (10 MB chunked) still
    // reads the 413: the server drops the rest before it closes, so the
    // close does not reset the connection under the client's read.
    for _ in 0..5 {
        let mut c = Client::tls(server.addr, client_config(&pki.ca_file, None)).unwrap();
        let _ = c.send_raw_nowait(b"POST /validate HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
        let block = vec![b'a'; 64 * 1024];
        let mut chunk = format!("{:x}\r\n", block.len()).into_bytes();
        chunk.extend_from_slice(&block);
        chunk.extend_from_slice(b"\r\n");
        for _ in 0..160 {
            if c.send_raw_nowait(&chunk).is_err() {
                break;
            }
        }
        let r = c.read_reply().expect("the 413, not a reset");
        assert_eq!(r.status, 413);
    }
    // A body just under the cap is read and answered.
    let mut big = br#"{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"nginx:1.27"}],"annotations":{"x":""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 7 * 1024 * 1024 - 200));
    big.extend_from_slice(b"\"}}}");
    let mut c = Client::tls(server.addr, client_config(&pki.ca_file, None)).unwrap();
    assert!(allowed(&c.post("/image_policy", &big).unwrap()));
}

/// The apiserver falls back to `defaultAllow` on any answer but a 200
/// ImageReview: every refusal on /image_policy is one, denying.
#[test]
fn image_review_refusals_are_200_denials() {
    let (pki, server) = tls_server("imagereview-refusals", &["--request-timeout", "500ms"]);
    let config = client_config(&pki.ca_file, None);
    let cases: [(&[u8], &str); 4] = [
        (
            b"POST /image_policy HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 31457280\r\n\r\n",
            "request refused (413)",
        ),
        (
            b"POST /image_policy HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}",
            "is not JSON; send application/json",
        ),
        (
            b"POST /image_policy HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n{nope",
            "request body is not JSON",
        ),
        // Half a body, then silence: the request deadline.
        (
            b"POST /image_policy HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"kind\"",
            "request refused (408)",
        ),
    ];
    for (raw, want) in cases {
        let mut c = Client::tls(server.addr, config.clone()).unwrap();
        let r = c.send_raw(raw).unwrap();
        assert_eq!(r.status, 200, "{want}: {}", r.text());
        let v = r.json();
        assert_eq!(v["kind"], "ImageReview", "{want}");
        assert_eq!(v["status"]["allowed"], false, "{want}");
        let reason = v["status"]["reason"].as_str().unwrap();
        assert!(reason.contains(want), "{want}: {reason}");
    }
    // The second review's case: a 1.3 MB pod whose padding image is `<<<...`,
    // which the apiserver's encoder writes as six-byte escapes: a 7.8 MB
    // ImageReview. It is read and judged (denied), not refused with a 413
    // that the apiserver would turn into defaultAllow.
    let mut big = br#"{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"evil.io/miner:latest"},{"image":""#.to_vec();
    for _ in 0..1_300_000 {
        big.extend_from_slice(b"\\u003c");
    }
    big.extend_from_slice(br#""}],"namespace":"default"}}"#);
    assert!(big.len() > 7_800_000);
    let mut c = Client::tls(server.addr, config.clone()).unwrap();
    let r = c.post("/image_policy", &big).unwrap();
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["status"]["allowed"], false);
    let reason = v["status"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("evil.io/miner:latest; the latest tag is not allowed"),
        "{reason}"
    );
    // Other endpoints keep their HTTP status.
    let mut c = Client::tls(server.addr, config).unwrap();
    let r = c
        .send_raw(b"POST /validate HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 10485760\r\n\r\n")
        .unwrap();
    assert_eq!(r.status, 413);
}

#[test]
fn client_certificates_are_required_and_checked() {
    let pki = Pki::new("mtls");
    let (cert, key) = pki.server("server");
    let (good_cert, good_key) = pki.issue("apiserver", "kube-apiserver", &[], true);
    let (other_cert, other_key) = pki.issue("other", "someone-else", &[], true);
    let stranger = Pki::new("mtls-stranger");
    let (bad_cert, bad_key) = stranger.issue("stranger", "kube-apiserver", &[], true);
    let server = Server::start(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--client-ca",
        pki.ca_file.to_str().unwrap(),
        "--client-name",
        "kube-apiserver",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let with = |c: &std::path::Path, k: &std::path::Path| client_config(&pki.ca_file, Some((c, k)));
    let mut ok = Client::tls(server.addr, with(&good_cert, &good_key)).unwrap();
    assert_eq!(
        ok.post("/image_policy", &fixture(REVIEW_OK))
            .unwrap()
            .status,
        200
    );
    // No certificate, one from another CA, one with another name: refused.
    for config in [
        client_config(&pki.ca_file, None),
        with(&bad_cert, &bad_key),
        with(&other_cert, &other_key),
    ] {
        let refused = Client::tls(server.addr, config)
            .and_then(|mut c| c.post("/image_policy", &fixture(REVIEW_OK)));
        assert!(refused.is_err(), "{refused:?}");
    }
    server.wait_for_log(
        "none of which is an accepted --client-name",
        Duration::from_secs(30),
    );
    let metrics = ok.get("/metrics").unwrap().text();
    assert!(
        metrics.contains("image_bouncer_tls_handshake_failures_total 3"),
        "{metrics}"
    );
    // Refused handshakes are logged (rate-limited) with the peer.
    assert!(
        server
            .log()
            .contains("refused a TLS handshake from 127.0.0.1:"),
        "{}",
        server.log()
    );
    // Probes and metrics without a client certificate, on their own plain
    // port, which serves nothing else.
    let log = server.log();
    let probe: std::net::SocketAddr = log
        .split("also on http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let mut plain = Client::plain(probe);
    let m = plain.get("/metrics").unwrap();
    assert_eq!(m.status, 200);
    assert!(m.text().contains("image_bouncer_requests_total"));
    assert_eq!(plain.get("/readyz").unwrap().status, 200);
    let r = Client::plain(probe)
        .post("/image_policy", &fixture(REVIEW_OK))
        .unwrap();
    assert_eq!(r.status, 404);
}

#[test]
fn certificate_rotation_is_seen_by_new_connections() {
    let pki = Pki::new("rotate");
    let (cert, key) = pki.server("server");
    let server = Server::start(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--reload-interval",
        "100ms",
    ]);
    let config = client_config(&pki.ca_file, None);
    let mut old = Client::tls(server.addr, config.clone()).unwrap();
    let first = old.server_cert.clone();
    // Rotate in place, as cert-manager or an admin would.
    let (new_cert, new_key) = pki.server("server2");
    std::fs::copy(&new_key, &key).unwrap();
    std::fs::copy(&new_cert, &cert).unwrap();
    server.wait_for_log("certificate reloaded", Duration::from_secs(30));
    let fresh = Client::tls(server.addr, config.clone()).unwrap();
    assert_ne!(
        fresh.server_cert, first,
        "a new connection must get the new certificate"
    );
    assert_eq!(
        fresh.server_cert,
        std::fs::read(&new_cert)
            .map(|pem| {
                use rustls::pki_types::{CertificateDer, pem::PemObject};
                CertificateDer::from_pem_slice(&pem).unwrap().to_vec()
            })
            .unwrap()
    );
    // The established connection keeps working.
    assert_eq!(
        old.post("/image_policy", &fixture(REVIEW_OK))
            .unwrap()
            .status,
        200
    );
    // A broken certificate is refused and the current one stays in use.
    std::fs::write(&cert, "not a certificate").unwrap();
    server.wait_for_log("certificate reload failed", Duration::from_secs(30));
    let still = Client::tls(server.addr, config).unwrap();
    assert_eq!(still.server_cert, fresh.server_cert);
}

#[test]
fn policy_reload_and_broken_policy_keeps_the_old_one() {
    let pki = Pki::new("policy-reload");
    let (cert, key) = pki.server("server");
    let policy = pki.dir.join("policy.json");
    std::fs::write(&policy, r#"{"denyLatest": true}"#).unwrap();
    let server = Server::start(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        "--reload-interval",
        "100ms",
    ]);
    let config = client_config(&pki.ca_file, None);
    let ask = || {
        allowed(
            &Client::tls(server.addr, config.clone())
                .unwrap()
                .post("/image_policy", &fixture(REVIEW_LATEST))
                .unwrap(),
        )
    };
    assert!(!ask());
    // Which policy is in force: the reload line and /metrics name its hash.
    let sha = |text: &str| {
        use std::fmt::Write as _;
        let d = ring_sha256(text.as_bytes());
        d[..6].iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    };
    let metrics = || {
        Client::tls(server.addr, config.clone())
            .unwrap()
            .get("/metrics")
            .unwrap()
            .text()
    };
    let first = sha(r#"{"denyLatest": true}"#);
    assert!(
        server
            .log()
            .contains("policy loaded: policy \"policy\": mode enforce"),
        "{}",
        server.log()
    );
    assert!(metrics().contains(&format!(
        "image_bouncer_policy_info{{sha256=\"{first}\"}} 1"
    )));
    std::fs::write(&policy, r#"{"denyLatest": false}"#).unwrap();
    server.wait_for_log("policy reloaded", Duration::from_secs(30));
    assert!(ask());
    let second = sha(r#"{"denyLatest": false}"#);
    server.wait_for_log(&format!("sha256 {second}"), Duration::from_secs(30));
    assert!(metrics().contains(&format!(
        "image_bouncer_policy_info{{sha256=\"{second}\"}} 1"
    )));
    // Broken: the previous policy (latest allowed) stays in force.
    std::fs::write(
        &policy,
        r#"{"denyLatest": "maybe", "allowedRegistries": ["x.io/UPPER"]}"#,
    )
    .unwrap();
    server.wait_for_log("policy reload failed", Duration::from_secs(30));
    assert!(
        server
            .log()
            .contains("$.denyLatest: expected true or false"),
        "{}",
        server.log()
    );
    assert!(ask());
    // SIGHUP reloads at once, whatever the file's timestamps say.
    std::fs::write(&policy, r#"{"denyLatest": true}"#).unwrap();
    server.signal("HUP");
    server.wait_for_log("SIGHUP", Duration::from_secs(30));
    let start = Instant::now();
    while ask() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "policy not reloaded after SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A key given twice is an error, not last-wins: latest stays denied.
    std::fs::write(&policy, r#"{"denyLatest": true, "denyLatest": false}"#).unwrap();
    server.wait_for_log(
        "$.denyLatest: the key is given twice",
        Duration::from_secs(30),
    );
    assert!(!ask());
    let metrics = Client::tls(server.addr, config)
        .unwrap()
        .get("/metrics")
        .unwrap()
        .text();
    assert!(
        metrics.contains("image_bouncer_reloads_total{kind=\"policy\",outcome=\"failure\"} 2"),
        "{metrics}"
    );
}

/// A policy directory laid out as a mounted ConfigMap (each key a symlink
/// into `..data`, swapped at once): an added file is a new policy on both
/// paths, a broken one leaves the whole previous set in force.
#[test]
fn a_policy_directory_reloads_as_one_set() {
    use std::os::unix::fs::symlink;
    let dir = crate::common::temp_dir("policy-set-folder").join("policy.d");
    std::fs::create_dir_all(&dir).unwrap();
    // Writes a new `..data` generation holding `files` and swaps it in.
    let generation = std::cell::Cell::new(0);
    let publish = |files: &[(&str, &str)]| {
        generation.set(generation.get() + 1);
        let data = dir.join(format!("..gen{}", generation.get()));
        std::fs::create_dir_all(&data).unwrap();
        for (name, text) in files {
            std::fs::write(data.join(name), text).unwrap();
            let link = dir.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(format!("..data/{name}"), &link).unwrap();
            }
        }
        let tmp = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        symlink(data.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
    };
    let base = r#"{"denyLatest": false}"#;
    let audit = "# reported only\nmode: warn\ndenyLatest: true\n";
    publish(&[("base.json", base), ("audit.yaml", audit)]);
    let (pki, server) = tls_server(
        "policy-set",
        &[
            "--policy",
            dir.to_str().unwrap(),
            "--reload-interval",
            "100ms",
        ],
    );
    let config = client_config(&pki.ca_file, None);
    let post = |path: &str, body: &str| {
        Client::tls(server.addr, config.clone())
            .unwrap()
            .post(path, &fixture(body))
            .unwrap()
            .json()
    };
    let review = || post("/image_policy", REVIEW_LATEST);
    let validate = || post("/validate", "admission/pod-create-latest.request.json");
    assert!(
        server
            .log()
            .contains("policy loaded: 2 policies: \"audit\" (mode warn"),
        "{}",
        server.log()
    );
    // Allowed by the enforcing policy; the warn one warns, naming itself.
    let v = review();
    assert_eq!(v["status"]["allowed"], true, "{v}");
    assert!(
        v["status"]["auditAnnotations"]["warn-images"].is_string(),
        "{v}"
    );
    let v = validate();
    assert_eq!(v["response"]["allowed"], true, "{v}");
    let warning = v["response"]["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.starts_with("image policy (warn mode, policy \"audit\")"),
        "{v}"
    );
    // A third file, enforcing: both paths deny, naming it.
    publish(&[
        ("base.json", base),
        ("audit.yaml", audit),
        ("strict.yaml", "denyLatest: true\n"),
    ]);
    server.wait_for_log("policy reloaded: 3 policies", Duration::from_secs(30));
    let v = review();
    assert_eq!(v["status"]["allowed"], false, "{v}");
    assert!(
        v["status"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("policy \"strict\": "),
        "{v}"
    );
    let v = validate();
    assert_eq!(v["response"]["allowed"], false, "{v}");
    assert!(
        v["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("image policy: policy \"strict\": "),
        "{v}"
    );
    // One broken file (and strict.yaml gone): refused whole, every file's
    // problem logged, the three policies stay in force.
    publish(&[
        ("base.json", base),
        ("audit.yaml", "mode: warn\nmode: enforce\n"),
        ("broken.yaml", "a: &x 1\n"),
    ]);
    std::fs::remove_file(dir.join("strict.yaml")).unwrap();
    server.wait_for_log("policy reload failed", Duration::from_secs(30));
    let log = server.log();
    assert!(
        log.contains("audit.yaml: line 2: $: the key \"mode\" is given twice"),
        "{log}"
    );
    assert!(
        log.contains("broken.yaml: line 1: $.a: YAML anchors"),
        "{log}"
    );
    assert_eq!(review()["status"]["allowed"], false);
    assert_eq!(validate()["response"]["allowed"], false);
    let metrics = Client::tls(server.addr, config.clone())
        .unwrap()
        .get("/metrics")
        .unwrap()
        .text();
    assert!(
        metrics.contains("image_bouncer_reloads_total{kind=\"policy\",outcome=\"failure\"} 1"),
        "{metrics}"
    );
    // What each policy made of the six reviews (three on each path): all
    // warned by "audit" (warn mode) and passed by "base"; the four after
    // "strict" came failed by it.
    for want in [
        "image_bouncer_policy_decisions_total{policy=\"audit\",mode=\"warn\",result=\"warn\"} 6",
        "image_bouncer_policy_decisions_total{policy=\"base\",mode=\"enforce\",result=\"pass\"} 6",
        "image_bouncer_policy_decisions_total{policy=\"strict\",mode=\"enforce\",result=\"fail\"} 4",
    ] {
        assert!(metrics.contains(want), "{want} in {metrics}");
    }
    crate::registry::promtool_check(&metrics);
}

#[test]
fn slow_and_idle_clients_do_not_starve_others() {
    let (pki, server) = tls_server("slow", &["--request-timeout", "1s", "--workers", "2"]);
    let config = client_config(&pki.ca_file, None);
    // 200 idle TCP connections that never start a handshake, and 20
    // established TLS connections trickling a request one byte at a time.
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    let mut trickling: Vec<Client> = (0..20)
        .map(|_| Client::tls(server.addr, config.clone()).unwrap())
        .collect();
    let head = b"POST /validate HTTP/1.1\r\nContent-Length: 100\r\n\r\n{";
    // A fresh, well-behaved client is served promptly meanwhile.
    for round in 0..5 {
        for c in &mut trickling {
            let _ = c.send_raw_nowait(&head[round..round + 1]);
        }
        let started = Instant::now();
        let mut good = Client::tls(server.addr, config.clone()).unwrap();
        let r = good.post("/image_policy", &fixture(REVIEW_OK)).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(good.get("/healthz").unwrap().status, 200);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "round {round}: {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The trickling clients are cut off by the request deadline with a 408.
    std::thread::sleep(Duration::from_millis(900));
    let r = trickling[0].read_reply().unwrap();
    assert_eq!(r.status, 408);
    drop(idle);
}

#[test]
fn sigterm_drains_in_flight_requests_and_closes_idle_ones() {
    let (pki, mut server) = tls_server("drain", &[]);
    let config = client_config(&pki.ca_file, None);
    let mut idle = Client::tls(server.addr, config.clone()).unwrap();
    assert_eq!(idle.get("/healthz").unwrap().status, 200);
    let mut inflight = Client::tls(server.addr, config.clone()).unwrap();
    let body = fixture(REVIEW_LATEST);
    let head = format!(
        "POST /image_policy HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    inflight.send_raw_nowait(head.as_bytes()).unwrap();
    inflight.send_raw_nowait(&body[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    server.signal("TERM");
    server.wait_for_log("shutting down", Duration::from_secs(30));
    // No new connections once draining.
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        Client::tls(server.addr, config)
            .and_then(|mut c| c.get("/healthz"))
            .is_err()
    );
    // The idle keep-alive connection was closed.
    assert!(idle.get("/healthz").is_err());
    // The request in flight is finished and answered, then the server exits 0.
    inflight.send_raw_nowait(&body[10..]).unwrap();
    let r = inflight.read_reply().unwrap();
    assert_eq!(r.status, 200);
    assert!(!allowed(&r));
    assert_eq!(r.header("connection"), Some("close"));
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// Decision lines are buffered (no write per review) but reach the log
/// while the server runs, and none is lost when it exits on SIGTERM: the
/// last line, logged just before exit, is there too.
#[test]
fn buffered_log_lines_arrive_and_survive_a_clean_shutdown() {
    let (pki, mut server) = tls_server("log-buffer", &[]);
    let mut c = Client::tls(server.addr, client_config(&pki.ca_file, None)).unwrap();
    let review = |i: usize| {
        format!(
            r#"{{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{{"containers":[{{"image":"example.com/app{i}:latest"}}]}}}}"#
        )
    };
    assert!(!allowed(
        &c.post("/image_policy", review(0).as_bytes()).unwrap()
    ));
    server.wait_for_log("example.com/app0:latest", Duration::from_secs(30));
    for i in 1..=200 {
        assert!(!allowed(
            &c.post("/image_policy", review(i).as_bytes()).unwrap()
        ));
    }
    drop(c);
    server.signal("TERM");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
    // The process is gone; what it wrote is in the pipe, read by the
    // test's reader thread.
    server.wait_for_log("all connections closed; exiting", Duration::from_secs(30));
    let log = server.log();
    for i in 0..=200 {
        let image = format!("images=[\"example.com/app{i}:latest\"]");
        assert_eq!(log.matches(&image).count(), 1, "{image}: {log}");
    }
}

/// A tracer attaching (strace, a debugger) interrupts every blocked
/// system call, and a socket with a receive timeout is not restarted by
/// the kernel: an idle keep-alive connection must live through it.
#[test]
fn keep_alive_connections_survive_a_tracer_attaching() {
    let (pki, server) = tls_server("tracer", &[]);
    let mut c = Client::tls(server.addr, client_config(&pki.ca_file, None)).unwrap();
    assert!(allowed(
        &c.post("/image_policy", &fixture(REVIEW_OK)).unwrap()
    ));
    let tracer = std::process::Command::new("strace")
        .args([
            "-f",
            "-e",
            "trace=none",
            "-p",
            &server.child.id().to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("strace (CI installs it)");
    std::thread::sleep(Duration::from_millis(500));
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(tracer.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let out = tracer.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("attached"), "strace did not attach: {said}");
    // The same connection, after every thread was interrupted.
    assert!(allowed(
        &c.post("/image_policy", &fixture(REVIEW_OK)).unwrap()
    ));
    assert!(allowed(
        &c.post("/image_policy", &fixture(REVIEW_OK)).unwrap()
    ));
}

#[test]
fn startup_errors_exit_2_and_name_the_problem() {
    let cases: &[(&[&str], &str)] = &[
        (&["serve"], "TLS is required"),
        (
            &[
                "serve",
                "--cert",
                "/nonexistent.crt",
                "--key",
                "/nonexistent.key",
            ],
            "/nonexistent.crt: cannot open",
        ),
        (
            &["serve", "--insecure-http", "--policy", "/nonexistent.json"],
            "/nonexistent.json: cannot open",
        ),
        (&["serve", "--listen", "localhost"], "--listen"),
    ];
    for (args, want) in cases {
        let out = run(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
    // A key that does not belong to the certificate.
    let pki = Pki::new("mismatch");
    let (cert, _) = pki.server("a");
    let (_, other_key) = pki.server("b");
    let out = run(
        &[
            "serve",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            other_key.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("do they belong together?"),
        "{}",
        stderr(&out)
    );
    // A port in use is a runtime failure: exit 1.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(&["serve", "--insecure-http", "--listen", &addr], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot listen on"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn insecure_http_only_when_asked_and_with_a_warning() {
    let server = Server::start(&["--insecure-http"]);
    let mut c = Client::plain(server.addr);
    assert!(allowed(
        &c.post("/image_policy", &fixture(REVIEW_OK)).unwrap()
    ));
    assert!(server.log().contains("serving plain HTTP"));
}

#[test]
fn kube_image_bouncer_command_line_serves() {
    let pki = Pki::new("compat");
    let (cert, key) = pki.server("server");
    // No subcommand, its flag spellings, as in its Kubernetes manifest.
    let (mut child, printed) =
        spawn_listening(std::process::Command::new(crate::common::BIN).args([
            &format!("--cert={}", cert.display()),
            &format!("--key={}", key.display()),
            "--debug",
            // -p 0 would listen on every address; tests stay on loopback.
            "--listen",
            "127.0.0.1:0",
            "--registry-whitelist=docker.io",
        ]));
    let addr = loopback(printed);
    let mut c = Client::tls(addr, client_config(&pki.ca_file, None)).unwrap();
    let r = c
        .post(
            "/image_policy",
            &fixture("imagereview/pod-create-multicontainer-annotations.request.json"),
        )
        .unwrap();
    // ghcr.io is not on the whitelist.
    assert!(!allowed(&r));
    assert!(
        r.json()["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("ghcr.io/org/sidecar:v2")
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // Its environment variables work on this path too (no subcommand),
    // as with `serve`.
    let (mut child, printed) = spawn_listening(
        std::process::Command::new(crate::common::BIN)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--registry-whitelist",
                "docker.io",
            ])
            .env("BOUNCER_CERTIFICATE", &cert)
            .env("BOUNCER_KEY", &key),
    );
    let mut c = Client::tls(loopback(printed), client_config(&pki.ca_file, None)).unwrap();
    assert_eq!(c.get("/healthz").unwrap().status, 200);
    child.kill().unwrap();
    child.wait().unwrap();
    // Generic names alone change nothing: PORT does not make a server,
    // REGISTRY does not make check --mutate rewrite.
    let out = std::process::Command::new(crate::common::BIN)
        .env("PORT", "9443")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage: image-bouncer"));
    let mut check = std::process::Command::new(crate::common::BIN)
        .args(["check", "--mutate", "-f", "-"])
        .env("REGISTRY", "mirror.example.com")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"nginx:1.27"}]}}"#)
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    let _ = std::io::stdout().flush();
}

#[test]
fn secret_volume_symlink_swap_is_seen() {
    // The layout kubelet gives a mounted Secret: files are symlinks into
    // `..data`, itself a symlink to a timestamped folder that is swapped.
    let pki = Pki::new("symlink");
    let vol = pki.dir.join("vol");
    let gen1 = vol.join("..2026_11_24_01");
    std::fs::create_dir_all(&gen1).unwrap();
    let (c1, k1) = pki.server("gen1");
    std::fs::copy(&c1, gen1.join("tls.crt")).unwrap();
    std::fs::copy(&k1, gen1.join("tls.key")).unwrap();
    std::os::unix::fs::symlink("..2026_11_24_01", vol.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/tls.crt", vol.join("tls.crt")).unwrap();
    std::os::unix::fs::symlink("..data/tls.key", vol.join("tls.key")).unwrap();
    let server = Server::start(&[
        "--cert",
        vol.join("tls.crt").to_str().unwrap(),
        "--key",
        vol.join("tls.key").to_str().unwrap(),
        "--reload-interval",
        "100ms",
    ]);
    let config = client_config(&pki.ca_file, None);
    let before = Client::tls(server.addr, config.clone())
        .unwrap()
        .server_cert;
    let gen2 = vol.join("..2026_11_24_02");
    std::fs::create_dir_all(&gen2).unwrap();
    let (c2, k2) = pki.server("gen2");
    std::fs::copy(&c2, gen2.join("tls.crt")).unwrap();
    std::fs::copy(&k2, gen2.join("tls.key")).unwrap();
    // Atomic swap, as kubelet does it: a new link renamed over ..data.
    std::os::unix::fs::symlink("..2026_11_24_02", vol.join("..data_tmp")).unwrap();
    std::fs::rename(vol.join("..data_tmp"), vol.join("..data")).unwrap();
    std::fs::remove_dir_all(&gen1).unwrap();
    server.wait_for_log("certificate reloaded", Duration::from_secs(30));
    let after = Client::tls(server.addr, config).unwrap().server_cert;
    assert_ne!(before, after);
}

#[test]
fn json_log_lines() {
    let server = Server::start(&["--insecure-http", "--log-format", "json"]);
    let mut c = Client::plain(server.addr);
    assert!(!allowed(
        &c.post("/image_policy", &fixture(REVIEW_LATEST)).unwrap()
    ));
    server.wait_for_log("/image_policy: denied", Duration::from_secs(30));
    let mut decisions = 0;
    for line in server.log().lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["ts"].as_str().unwrap().ends_with('Z'), "{line}");
        assert!(v["level"].is_string() && v["msg"].is_string(), "{line}");
        // A decision's facts are fields of their own.
        if v["verdict"] == "denied" {
            decisions += 1;
            assert_eq!(v["endpoint"], "/image_policy", "{line}");
            assert_eq!(v["images"], "nginx:latest", "{line}");
            assert!(
                v["reason"].as_str().unwrap().contains("latest tag"),
                "{line}"
            );
        }
    }
    assert_eq!(decisions, 1, "{}", server.log());
}

/// With JSON logs, stdout carries nothing (a bare line would break JSON
/// pod logs); the address is in the log line's `addr` field.
#[test]
fn json_logs_leave_stdout_empty() {
    let mut child = std::process::Command::new(crate::common::BIN)
        .args([
            "serve",
            "--insecure-http",
            "--log-format",
            "json",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Issue 34, 8: a serving certificate that has expired (made here with
/// OpenSSL's `ca -startdate/-enddate`, the one tool at hand that writes
/// dates in the past) makes `/readyz` answer 503 naming it, and the log
/// gives its date and the renewal command.
#[test]
fn an_expired_serving_certificate_is_not_ready() {
    let dir = crate::common::temp_dir("expired-cert");
    let sh = |script: &str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(&dir)
            .output()
            .unwrap()
    };
    let have_openssl = sh("command -v openssl").status.success();
    if !have_openssl {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "openssl is missing"
        );
        return;
    }
    let made = sh(
        "touch index.txt && echo 01 > serial && printf '[ca]\\ndefault_ca = d\\n[d]\\ndatabase = index.txt\\nserial = serial\\nnew_certs_dir = .\\ndefault_md = sha256\\npolicy = p\\ncopy_extensions = copy\\n[p]\\ncommonName = supplied\\n' > ca.cnf \
         && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key -out tls.csr -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
         && openssl ca -batch -config ca.cnf -selfsign -keyfile tls.key -in tls.csr -out tls.crt -startdate 20200101000000Z -enddate 20200102000000Z",
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let server = Server::start(&[
        "--cert",
        dir.join("tls.crt").to_str().unwrap(),
        "--key",
        dir.join("tls.key").to_str().unwrap(),
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    server.wait_for_log("expired on 2020-01-02", Duration::from_secs(30));
    assert!(server.log().contains("certs --out"), "{}", server.log());
    // Logged after the certificate's expiry: wait for it too.
    server.wait_for_log("also on http://", Duration::from_secs(30));
    let probes = server
        .log()
        .lines()
        .find_map(|l| l.split("also on http://").nth(1).map(str::to_string))
        .unwrap();
    let addr: std::net::SocketAddr = probes.trim().parse().unwrap();
    let r = Client::plain(addr).get("/readyz").unwrap();
    assert_eq!(r.status, 503);
    assert!(r.text().contains("expired on 2020-01-02"), "{}", r.text());
}

/// SHA-256 of `bytes` (with the test's own hasher: the sha256sum tool
/// may not be there).
fn ring_sha256(bytes: &[u8]) -> Vec<u8> {
    image_bouncer::digest::Digest::sha256_of(bytes)
        .to_string()
        .trim_start_matches("sha256:")
        .as_bytes()
        .chunks(2)
        .map(|h| u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap())
        .collect()
}

/// A file a policy names (here its trusted root, as `trust update` would
/// rewrite it) is watched like the policy: a new root is loaded without a
/// signal, a root that does not parse is refused (logged and counted)
/// with the previous one in force, and fixing it loads again.
#[test]
fn files_a_policy_names_are_watched() {
    let dir = crate::common::temp_dir("named-files-watched");
    let root = dir.join("keys/trusted_root.json");
    std::fs::create_dir_all(root.parent().unwrap()).unwrap();
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sigstore/trusted-roots"
    );
    let swap = |text: &[u8]| {
        let tmp = root.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &root).unwrap();
    };
    swap(&std::fs::read(format!("{fixtures}/public-good.json")).unwrap());
    let policy = dir.join("policy.json");
    std::fs::write(
        &policy,
        serde_json::json!({"verifyImages": [{"images": ["ghcr.io/acme/*"], "trustedRoot": "keys/trusted_root.json",
            "identities": [{"issuer": "https://token.actions.githubusercontent.com", "subjectRegExp": "https://github.com/acme/.+"}]}]})
        .to_string(),
    )
    .unwrap();
    let (pki, server) = tls_server(
        "named-files",
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--reload-interval",
            "100ms",
        ],
    );
    // How often the log says `what`, and waiting until it has said it n times.
    let count = |what: &str| server.log().matches(what).count();
    let until = |what: &str, n: usize| {
        let start = Instant::now();
        while count(what) < n {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let reloads = || count("policy reloaded");
    let wait = |n: usize| until("policy reloaded", n);
    let failures = || count("policy reload failed");
    // The policy, with one file name changed.
    let rename = |from: &str, to: &str| {
        let text = std::fs::read_to_string(&policy).unwrap().replace(from, to);
        std::fs::write(&policy, text).unwrap();
    };
    assert_eq!(reloads(), 0, "{}", server.log());
    swap(&std::fs::read(format!("{fixtures}/staging.json")).unwrap());
    wait(1);
    swap(b"{\"mediaType\": \"not a root\"");
    server.wait_for_log("policy reload failed", Duration::from_secs(30));
    assert!(
        server.log().contains("trusted_root.json"),
        "{}",
        server.log()
    );
    let metrics = Client::tls(server.addr, client_config(&pki.ca_file, None))
        .unwrap()
        .get("/metrics")
        .unwrap()
        .text();
    assert!(
        metrics.contains("image_bouncer_reloads_total{kind=\"policy\",outcome=\"failure\"} 1"),
        "{metrics}"
    );
    swap(&std::fs::read(format!("{fixtures}/public-good.json")).unwrap());
    wait(2);
    // Quiet again: nothing more is reloaded.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(reloads(), 2, "{}", server.log());
    // A policy naming a file not there yet: refused; the file appearing
    // loads it, without a signal.
    rename("keys/trusted_root.json", "keys/later.json");
    until("policy reload failed", 2);
    std::fs::copy(
        format!("{fixtures}/public-good.json"),
        root.with_file_name("later.json"),
    )
    .unwrap();
    wait(3);
    // A device named as a file: refused, never read by the watcher (it
    // would never end), and the server goes on answering.
    rename("keys/later.json", "/dev/zero");
    until("policy reload failed", 3);
    std::thread::sleep(Duration::from_millis(500));
    let ready = Client::tls(server.addr, client_config(&pki.ca_file, None))
        .unwrap()
        .get("/readyz")
        .unwrap()
        .text();
    assert_eq!(ready.trim(), "ready");
    assert_eq!(failures(), 3, "{}", server.log());
}
