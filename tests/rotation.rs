//! Certificate renewal and CA rotation against the running server, under
//! load: every step of the runbook keeps every review answered.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{Client, Server, client_config, run, stderr, stdout, temp_dir};

const REVIEW: &[u8] = br#"{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"nginx:1.27"}]}}"#;

fn certs(pki: &Path, extra: &[&str]) -> String {
    let mut args = vec!["certs", "--out", pki.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = run(&args, None);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// The apiserver's view: the bundle it trusts and the client certificate
/// it presents, as read from the files now — what `config apiserver
/// --force` embeds in its kubeconfig, which it reads when it (re)starts.
fn apiserver(pki: &Path) -> Arc<rustls::ClientConfig> {
    client_config(
        &pki.join("ca-bundle.crt"),
        Some((
            &pki.join("apiserver-client.crt"),
            &pki.join("apiserver-client.key"),
        )),
    )
}

#[test]
fn renewal_and_ca_rotation_fail_no_review() {
    let dir = temp_dir("rotation");
    let pki = dir.join("pki");
    let names = ["--host", "localhost", "--ip", "127.0.0.1"];
    let first = certs(&pki, &names);
    assert!(first.contains("--client-ca"), "{first}");
    let server = Server::start(&[
        "--cert",
        pki.join("tls.crt").to_str().unwrap(),
        "--key",
        pki.join("tls.key").to_str().unwrap(),
        "--client-ca",
        pki.join("ca-bundle.crt").to_str().unwrap(),
        "--client-name",
        "kube-apiserver",
        "--reload-interval",
        "100ms",
    ]);
    // The apiserver's configuration with a generation number, and the
    // generation of the last finished review: the load thread reviews one
    // at a time, so once a review of generation g has finished, no older
    // configuration is in use.
    let current = Arc::new(Mutex::new((0u64, apiserver(&pki))));
    let used = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (current, used, stop, ok, failed, addr) = (
            current.clone(),
            used.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
            server.addr,
        );
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // A new connection each time: every handshake sees the
                // server's current certificate and trust.
                let (generation, config) = current.lock().unwrap().clone();
                let answer =
                    Client::tls(addr, config).and_then(|mut c| c.post("/image_policy", REVIEW));
                match answer {
                    Ok(r) if r.status == 200 && r.json()["status"]["allowed"] == true => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(format!("{:?}", other.map(|r| r.status)));
                    }
                }
                used.store(generation, Ordering::Release);
                std::thread::sleep(Duration::from_millis(5));
            }
            errors
        })
    };
    let reloads = || server.log().matches("certificate reloaded").count();
    // Until the server holds what the files now say. One `certs` run writes
    // several files, and a slow disk can spread them over more than one
    // reload check (every 100 ms), so the server may reload more than once
    // per step: wait for at least one reload after `before` and then for
    // four quiet checks. A check after the last write reloads unless the
    // server already holds the final files, so quiet means settled.
    let settle = |before: usize| {
        let start = std::time::Instant::now();
        let (mut seen, mut since) = (before, std::time::Instant::now());
        loop {
            let now = reloads();
            if now != seen {
                (seen, since) = (now, std::time::Instant::now());
            }
            if seen > before && since.elapsed() >= Duration::from_millis(400) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no reload: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // The apiserver restarts with the files as they are now: no review of
    // the configuration before is still under way when this returns.
    let restart = |generation: u64| {
        *current.lock().unwrap() = (generation, apiserver(&pki));
        let start = std::time::Instant::now();
        while used.load(Ordering::Acquire) < generation {
            assert!(start.elapsed() < Duration::from_secs(20), "no review");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    std::thread::sleep(Duration::from_millis(300));

    // Renewal: new leaves from the same CA; nothing else changes.
    let before = reloads();
    let renewed = certs(&pki, &[&names[..], &["--force"]].concat());
    assert!(renewed.contains("issued from the existing CA"), "{renewed}");
    settle(before);
    restart(1);

    // Rotation, step 1: trust both CAs. The server reloads the bundle; the
    // apiserver gets it at its restart.
    let before = reloads();
    let begun = certs(&pki, &["--rotate-ca", "begin"]);
    assert!(begun.contains("rotation begun"), "{begun}");
    settle(before);
    restart(2);
    // Step 2: leaves from the new CA; the old client certificate is still
    // trusted until the apiserver has the new one.
    let before = reloads();
    certs(&pki, &[&["--rotate-ca", "switch"][..], &names].concat());
    settle(before);
    restart(3);
    // Step 3: drop the old CA; the apiserver restarts without it.
    let before = reloads();
    certs(&pki, &["--rotate-ca", "finish"]);
    settle(before);
    restart(4);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let errors = load.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("rotation under load: {ok} reviews, {failed} failed");
    assert_eq!(failed, 0, "{failed} failed of {}: {errors:?}", ok + failed);
    assert!(ok > 50, "only {ok} reviews");
    // After the rotation the old CA is gone: a client with a certificate of
    // it is refused, and the bundle holds one certificate.
    let bundle = std::fs::read_to_string(pki.join("ca-bundle.crt")).unwrap();
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 1);
    assert!(!pki.join("ca-previous.crt").exists() && !pki.join("ca-next.crt").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn cas_have_distinct_names_and_in_cluster_names_get_no_client_certificate() {
    let dir = temp_dir("ca-names");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let out = certs(&a, &["--host", "image-bouncer.image-bouncer.svc"]);
    assert!(!out.contains("--client-ca"), "{out}");
    assert!(!a.join("apiserver-client.crt").exists());
    certs(
        &b,
        &["--host", "image-bouncer.image-bouncer.svc", "--client-cert"],
    );
    assert!(b.join("apiserver-client.crt").exists());
    let subject = |p: &Path| {
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_file(p.join("ca.crt")).unwrap();
        image_bouncer::server::der::cert_info(&der)
            .unwrap()
            .common_names
    };
    let (na, nb) = (subject(&a), subject(&b));
    assert_ne!(na, nb);
    assert!(na[0].starts_with("image-bouncer CA 20"), "{na:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_certificate_near_expiry_is_warned_about_at_start() {
    let dir = temp_dir("expiry");
    let pki = dir.join("pki");
    certs(&pki, &["--host", "localhost", "--days", "20"]);
    let server = Server::start(&[
        "--cert",
        pki.join("tls.crt").to_str().unwrap(),
        "--key",
        pki.join("tls.key").to_str().unwrap(),
    ]);
    server.wait_for_log(
        "the serving certificate expires in",
        Duration::from_secs(30),
    );
    assert!(server.log().contains("WARN"), "{}", server.log());
    assert!(server.log().contains("keeps the CA"), "{}", server.log());
    drop(server);
    std::fs::remove_dir_all(dir).unwrap();
}
