//! Denials of service by cheap requests, against the real binary: an
//! announced body, a stalled body, idle and half-open connections, one
//! client address holding many. Each must leave a real review answered
//! quickly, since the webhook fails closed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::{Client, client_config, tls_server};

/// A small ImageReview that the default policy allows.
const REVIEW: &[u8] = br#"{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"nginx:1.27"}],"namespace":"default"}}"#;

fn allowed_quickly(
    addr: SocketAddr,
    config: &std::sync::Arc<rustls::ClientConfig>,
    body: &[u8],
) -> Duration {
    let started = Instant::now();
    let mut c = Client::tls(addr, config.clone()).unwrap();
    let r = c.post("/image_policy", body).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"]["allowed"], true, "{}", r.text());
    started.elapsed()
}

fn metric(addr: SocketAddr, config: &std::sync::Arc<rustls::ClientConfig>, name: &str) -> i64 {
    let text = Client::tls(addr, config.clone())
        .unwrap()
        .get("/metrics")
        .unwrap()
        .text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// A TLS connection that has sent `bytes` and then waits.
fn stalled(
    addr: SocketAddr,
    config: &std::sync::Arc<rustls::ClientConfig>,
    bytes: &[u8],
) -> Client {
    let mut c = Client::tls(addr, config.clone()).unwrap();
    c.send_raw_nowait(bytes).unwrap();
    c
}

#[test]
fn announced_bodies_cost_nothing_until_sent() {
    let (pki, server) = tls_server(
        "dos-announced",
        &["--max-body-memory-mib", "8", "--request-timeout", "10s"],
    );
    let config = client_config(&pki.ca_file, None);
    // Nine connections announce 7 MiB, one 1 MiB; none sends a byte of it.
    let mut held = Vec::new();
    for n in [7 * 1024 * 1024; 9].into_iter().chain([1024 * 1024]) {
        let head = format!(
            "POST /validate HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {n}\r\n\r\n"
        );
        held.push(stalled(server.addr, &config, head.as_bytes()));
    }
    std::thread::sleep(Duration::from_millis(200));
    let took = allowed_quickly(server.addr, &config, REVIEW);
    assert!(
        took < Duration::from_secs(1),
        "a real review waited {took:?}"
    );
    drop(held);
}

#[test]
fn a_stalled_body_is_closed_when_its_memory_is_needed() {
    let (pki, server) = tls_server(
        "dos-stalled",
        &["--max-body-memory-mib", "8", "--request-timeout", "10s"],
    );
    let config = client_config(&pki.ca_file, None);
    // 6 MiB of a 7 MiB body really sent, then silence.
    let head = format!(
        "POST /validate HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        7 * 1024 * 1024
    );
    let mut attacker = stalled(server.addr, &config, head.as_bytes());
    attacker
        .send_raw_nowait(&vec![b' '; 6 * 1024 * 1024])
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // A real 3 MiB review needs that room: the stalled body goes.
    let mut big = br#"{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"nginx:1.27"}],"annotations":{"x":""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 3 * 1024 * 1024));
    big.extend_from_slice(b"\"}}}");
    let took = allowed_quickly(server.addr, &config, &big);
    assert!(
        took < Duration::from_secs(2),
        "a real review waited {took:?}"
    );
    assert!(
        metric(
            server.addr,
            &config,
            "image_bouncer_evicted_connections_total"
        ) >= 1
    );
    // The attacker's connection was closed.
    assert!(attacker.get("/healthz").is_err());
}

/// Idle TCP connections (no handshake) fill the table; a new client is
/// still served, the oldest idle ones are closed for it.
#[test]
fn idle_connections_cannot_shut_out_a_client() {
    let (pki, server) = tls_server(
        "dos-idle",
        &[
            "--max-connections",
            "32",
            "--handshake-timeout",
            "60s",
            "--idle-timeout",
            "120s",
        ],
    );
    let config = client_config(&pki.ca_file, None);
    let mut idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    // And idle keep-alive TLS connections that completed a request.
    for _ in 0..8 {
        let mut c = Client::tls(server.addr, config.clone()).unwrap();
        assert_eq!(c.get("/healthz").unwrap().status, 200);
        std::mem::forget(c);
    }
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..5 {
        let took = allowed_quickly(server.addr, &config, REVIEW);
        assert!(took < Duration::from_secs(1), "waited {took:?}");
    }
    assert!(
        metric(
            server.addr,
            &config,
            "image_bouncer_evicted_connections_total"
        ) >= 32
    );
    assert_eq!(
        metric(
            server.addr,
            &config,
            "image_bouncer_rejected_connections_total"
        ),
        0
    );
    // The first idle connections were the ones closed.
    idle[0]
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    assert_eq!(idle[0].read(&mut [0u8; 1]).unwrap_or(0), 0);
    idle.clear();
}

/// One client address holds at most --max-connections-per-peer: past it,
/// its own oldest connection is closed, never another client's.
#[test]
fn one_client_address_is_limited_to_its_share() {
    let (pki, server) = tls_server(
        "dos-peer",
        &[
            "--max-connections-per-peer",
            "4",
            "--handshake-timeout",
            "60s",
        ],
    );
    let config = client_config(&pki.ca_file, None);
    // A keep-alive client from 127.0.0.1 first.
    let mut good = Client::tls(server.addr, config.clone()).unwrap();
    assert_eq!(good.get("/healthz").unwrap().status, 200);
    // Ten idle connections from 127.0.0.2.
    let from = |ip: [u8; 4]| {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
        s.connect(&server.addr.into()).unwrap();
        TcpStream::from(s)
    };
    let mut other: Vec<TcpStream> = (0..10).map(|_| from([127, 0, 0, 2])).collect();
    let start = Instant::now();
    loop {
        // 4 from 127.0.0.2, the good client, and this metrics request.
        let open = metric(server.addr, &config, "image_bouncer_open_connections");
        if open <= 6 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{open} connections open"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        metric(
            server.addr,
            &config,
            "image_bouncer_evicted_connections_total"
        ) >= 6
    );
    // The other client's connection was never the one closed.
    assert_eq!(good.get("/healthz").unwrap().status, 200);
    let _ = other.iter_mut().map(|s| s.write_all(b"")).count();
    other.clear();
}
