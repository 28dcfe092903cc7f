//! The fault suite: hostile and broken clients against the real server,
//! while a well-behaved client (like the apiserver) keeps asking. Prints a
//! Markdown table and exits 1 if any check fails.
//!
//!   cargo build --release && cargo run --release --example faults -- --bin target/release/image-bouncer
//!   ... --idle 300 --slowloris 50 (the quick version CI runs)
//!
//! Checks: every attack is answered as it should (or cut off in time), the
//! good client sees no failure and no answer slower than its deadline, and
//! the server's threads and memory come back down afterwards.

#[path = "common.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// A good client's request fails when it errs, is answered with anything
/// but the allowed review, or takes longer than the apiserver would wait
/// (the webhook configuration `config webhook` writes gives it 5 s). How
/// fast it was answered is a measurement (the table's p99 and maximum),
/// not a pass or fail: on a loaded machine any fixed bound is crossed.
const APISERVER_WAITS: Duration = Duration::from_secs(5);
/// Server deadlines for this run, short so that the suite is quick.
const REQUEST_TIMEOUT_S: u64 = 2;
const HANDSHAKE_TIMEOUT_S: u64 = 2;

struct Row {
    fault: String,
    amount: String,
    outcome: String,
    ok: bool,
    good_p99_ms: f64,
    good_max_ms: f64,
    good_failures: usize,
    threads_peak: u64,
    rss_peak_mb: f64,
}

struct Ctx {
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    pid: u32,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut bin, mut idle, mut slow) = (
        String::from("target/release/image-bouncer"),
        1000usize,
        200usize,
    );
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bin" => bin = args.next().expect("--bin PATH"),
            "--idle" => idle = args.next().and_then(|v| v.parse().ok()).expect("--idle N"),
            "--slowloris" => {
                slow = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--slowloris N")
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let dir = std::env::temp_dir().join(format!("image-bouncer-faults-{}", std::process::id()));
    let pki = Pki::new(&dir);
    pki.issue();
    let server_args: Vec<String> = [
        "--cert",
        &pki.path("tls.crt"),
        "--key",
        &pki.path("tls.key"),
        "--request-timeout",
        &format!("{REQUEST_TIMEOUT_S}s"),
        "--handshake-timeout",
        &format!("{HANDSHAKE_TIMEOUT_S}s"),
        "--max-connections",
        &format!("{}", idle * 2 + 500),
        // These attacks come from one address and must all be held.
        "--max-connections-per-peer",
        &format!("{}", idle * 2 + 500),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (mut child, addr) = start_server(&bin, &server_args, &dir.join("server.log"));
    let ctx = Ctx {
        addr,
        config: tls_config(&pki.path("ca.crt"), true),
        pid: child.id(),
    };
    std::thread::sleep(Duration::from_millis(200));
    let (base_rss, _, base_threads) = proc_status(ctx.pid);

    let mut rows = Vec::new();
    rows.push(phase(
        &ctx,
        "idle keep-alive TLS connections",
        &format!("{idle}"),
        || idle_tls(&ctx, idle),
    ));
    rows.push(phase(
        &ctx,
        "idle TCP connections, no handshake",
        &format!("{idle}"),
        || idle_tcp(&ctx, idle),
    ));
    rows.push(phase(
        &ctx,
        "slowloris (1 byte / 200 ms)",
        &format!("{slow}"),
        || slowloris(&ctx, slow),
    ));
    rows.push(phase(&ctx, "header floods", "100 requests", || {
        header_flood(&ctx)
    }));
    rows.push(phase(&ctx, "10 MB bodies", "20 + 3 chunked", || {
        big_bodies(&ctx)
    }));
    rows.push(phase(&ctx, "truncated TLS handshakes", "300", || {
        truncated_tls(&ctx)
    }));
    rows.push(phase(&ctx, "invalid UTF-8", "4 requests", || {
        invalid_utf8(&ctx)
    }));
    rows.push(phase(
        &ctx,
        "deeply nested JSON",
        "4 × 100k levels",
        || nested_json(&ctx),
    ));
    rows.push(phase(
        &ctx,
        "malformed reviews",
        "every malformed fixture",
        || malformed(&ctx),
    ));

    // Everything released again?
    std::thread::sleep(Duration::from_secs(HANDSHAKE_TIMEOUT_S + 1));
    let (end_rss, peak_rss, end_threads) = proc_status(ctx.pid);
    let recovered = end_threads <= base_threads + 4;
    let _ = child.kill();
    let _ = child.wait();

    // Denials of service by cheap requests, against a server with the
    // production deadlines and memory budget and a table of `cap`
    // connections, which the attacks fill.
    let cap = (idle / 2).max(64);
    // The quick (debug build) run decodes slowly: fewer at once, so that the
    // two workers do not queue the good client past its deadline.
    let amplified = if idle >= 1000 { 12 } else { 3 };
    let dos_args: Vec<String> = [
        "--cert",
        &pki.path("tls.crt"),
        "--key",
        &pki.path("tls.key"),
        "--max-connections",
        &cap.to_string(),
        "--max-connections-per-peer",
        &cap.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (mut dos_child, dos_addr) = start_server(&bin, &dos_args, &dir.join("dos.log"));
    let dos = Ctx {
        addr: dos_addr,
        config: ctx.config.clone(),
        pid: dos_child.id(),
    };
    std::thread::sleep(Duration::from_millis(200));
    rows.push(phase(
        &dos,
        "announced bodies, nothing sent",
        "9 × 7 MiB + 1 MiB",
        || announced_bodies(&dos),
    ));
    rows.push(phase(
        &dos,
        "stalled bodies (6 of 7 MiB sent)",
        "12 (72 MiB > the 64 MiB budget)",
        || stalled_bodies(&dos),
    ));
    rows.push(phase(
        &dos,
        "table full of idle TCP connections",
        &format!("{} (2 × the cap of {cap})", 2 * cap),
        || full_table(&dos, 2 * cap),
    ));
    rows.push(phase(
        &dos,
        "amplification: 7 MB ImageReview of 500,000 containers",
        &format!("{amplified} at once"),
        || amplification(&dos, amplified),
    ));
    let _ = dos_child.kill();
    let _ = dos_child.wait();

    println!(
        "| fault | amount | outcome | good client p99 / max ms | good client failures | server threads peak | server RSS peak MB |"
    );
    println!("| --- | --- | --- | ---: | ---: | ---: | ---: |");
    let mut failed = 0;
    for r in &rows {
        let ok = r.ok && r.good_failures == 0;
        failed += usize::from(!ok);
        println!(
            "| {} | {} | {}{} | {:.2} / {:.2} | {} | {} | {:.1} |",
            r.fault,
            r.amount,
            r.outcome,
            if ok { "" } else { " **FAILED**" },
            r.good_p99_ms,
            r.good_max_ms,
            r.good_failures,
            r.threads_peak,
            r.rss_peak_mb
        );
    }
    println!();
    println!(
        "server: {base_threads} threads and {:.1} MB before, {end_threads} threads and {:.1} MB after, {:.1} MB peak; threads back to idle: {recovered}",
        base_rss as f64 / 1024.0,
        end_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0
    );
    failed += usize::from(!recovered);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "faults: {} passed, {failed} failed",
        rows.len() + 1 - failed
    );
    if failed > 0 {
        std::process::exit(1);
    }
}

/// Runs one attack with the good client and a sampler alongside.
fn phase(ctx: &Ctx, fault: &str, amount: &str, attack: impl FnOnce() -> (String, bool)) -> Row {
    let stop = Arc::new(AtomicBool::new(false));
    let good = good_client(
        ctx.addr,
        ctx.config.clone(),
        stop.clone(),
        Duration::from_millis(10),
        APISERVER_WAITS,
    );
    let (threads_peak, rss_peak) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let sampler = {
        let (stop, tp, rp, pid) = (
            stop.clone(),
            threads_peak.clone(),
            rss_peak.clone(),
            ctx.pid,
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (rss, _, threads) = proc_status(pid);
                tp.fetch_max(threads, Ordering::Relaxed);
                rp.fetch_max(rss, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let (outcome, ok) = attack();
    stop.store(true, Ordering::Relaxed);
    let mut g = good.join().expect("good client");
    let _ = sampler.join();
    g.latencies_us.sort_unstable();
    if !g.failures.is_empty() {
        eprintln!(
            "{fault}: good client failures: {:?}",
            &g.failures[..g.failures.len().min(5)]
        );
    }
    Row {
        fault: fault.to_string(),
        amount: amount.to_string(),
        outcome,
        ok: ok && !g.latencies_us.is_empty(),
        good_p99_ms: pct(&g.latencies_us, 0.99),
        good_max_ms: g.latencies_us.last().map_or(0.0, |m| *m as f64 / 1000.0),
        good_failures: g.failures.len(),
        threads_peak: threads_peak.load(Ordering::Relaxed),
        rss_peak_mb: rss_peak.load(Ordering::Relaxed) as f64 / 1024.0,
    }
}

fn idle_tls(ctx: &Ctx, n: usize) -> (String, bool) {
    let conns: Vec<Tls> = (0..n)
        .filter_map(|_| connect(ctx.addr, &ctx.config).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let (_, _, threads) = proc_status(ctx.pid);
    let held = conns.len();
    drop(conns);
    (
        format!("{held} held open for 2 s ({threads} server threads)"),
        held == n,
    )
}

fn idle_tcp(ctx: &Ctx, n: usize) -> (String, bool) {
    let socks: Vec<TcpStream> = (0..n)
        .filter_map(|_| TcpStream::connect(ctx.addr).ok())
        .collect();
    let opened = socks.len();
    // The handshake deadline must close every one of them.
    let start = Instant::now();
    let mut closed = 0;
    for mut s in socks {
        let _ = s.set_read_timeout(Some(Duration::from_secs(HANDSHAKE_TIMEOUT_S + 3)));
        let mut b = [0u8; 1];
        if matches!(s.read(&mut b), Ok(0) | Err(_))
            && start.elapsed() < Duration::from_secs(HANDSHAKE_TIMEOUT_S + 3)
        {
            closed += 1;
        }
    }
    (
        format!("{closed} of {opened} closed by the {HANDSHAKE_TIMEOUT_S} s handshake deadline"),
        closed == n,
    )
}

fn slowloris(ctx: &Ctx, n: usize) -> (String, bool) {
    let head = b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\nX-Slow: ";
    let mut conns: Vec<Tls> = (0..n)
        .filter_map(|_| connect(ctx.addr, &ctx.config).ok())
        .collect();
    let start = Instant::now();
    let mut i = 0;
    // Trickle until past the request deadline.
    while start.elapsed() < Duration::from_secs(REQUEST_TIMEOUT_S + 1) {
        for c in &mut conns {
            let _ = c.write_all(&head[i % head.len()..i % head.len() + 1]);
            let _ = c.flush();
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut cut = 0;
    for c in &mut conns {
        if matches!(read_response(c), Ok((408, _)) | Err(_)) {
            cut += 1;
        }
    }
    (
        format!("{cut} of {n} cut off with 408 by the {REQUEST_TIMEOUT_S} s request deadline"),
        cut == n,
    )
}

fn header_flood(ctx: &Ctx) -> (String, bool) {
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let huge = format!("X-Big: {}\r\n", "a".repeat(32 * 1024));
    let mut got = Vec::new();
    for i in 0..100 {
        let headers = if i % 2 == 0 { &many } else { &huge };
        let req =
            format!("POST /validate HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: 2\r\n\r\n{{}}");
        let status = connect(ctx.addr, &ctx.config)
            .and_then(|mut c| exchange(&mut c, req.as_bytes()))
            .map_or(0, |r| r.0);
        got.push(status);
    }
    let all = got.iter().all(|s| *s == 431);
    (
        format!(
            "{} of 100 answered 431",
            got.iter().filter(|s| **s == 431).count()
        ),
        all,
    )
}

fn big_bodies(ctx: &Ctx) -> (String, bool) {
    // Only the head is sent: a 413 (not the request deadline's 408) means
    // the server refused the body without waiting for it.
    let mut unread = 0;
    for _ in 0..20 {
        let r = connect(ctx.addr, &ctx.config).and_then(|mut c| {
            exchange(&mut c, b"POST /validate HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 10485760\r\n\r\n")
        });
        if matches!(r, Ok((413, _))) {
            unread += 1;
        }
    }
    let mut chunked = 0;
    let block = vec![b'a'; 64 * 1024];
    for _ in 0..3 {
        let Ok(mut c) = connect(ctx.addr, &ctx.config) else {
            continue;
        };
        let _ = c.write_all(b"POST /validate HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
        // 10 MB in 64 KiB chunks; the server stops reading past 7 MiB.
        for _ in 0..160 {
            if c.write_all(format!("{:x}\r\n", block.len()).as_bytes())
                .is_err()
                || c.write_all(&block).is_err()
                || c.write_all(b"\r\n").is_err()
            {
                break;
            }
        }
        let _ = c.flush();
        if matches!(read_response(&mut c), Ok((413, _))) {
            chunked += 1;
        }
    }
    (
        format!("{unread} of 20 refused with 413 unread, {chunked} of 3 chunked refused with 413"),
        unread == 20 && chunked == 3,
    )
}

fn truncated_tls(ctx: &Ctx) -> (String, bool) {
    // The first bytes of a real ClientHello.
    let mut hello = Vec::new();
    {
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut conn = rustls::ClientConnection::new(ctx.config.clone(), name).expect("client");
        let _ = conn.write_tls(&mut hello);
    }
    let mut closed = 0;
    let mut stalled = Vec::new();
    for i in 0..300 {
        let Ok(mut s) = TcpStream::connect(ctx.addr) else {
            continue;
        };
        let cut = 5 + (i * 7) % (hello.len() - 5);
        let _ = s.write_all(&hello[..cut]);
        if i % 3 == 0 {
            stalled.push(s); // send part, then nothing
        } else {
            drop(s); // send part, then hang up
            closed += 1;
        }
    }
    let start = Instant::now();
    let mut dropped = 0;
    for mut s in stalled.iter().take(100) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(HANDSHAKE_TIMEOUT_S + 3)));
        let mut b = [0u8; 64];
        // Either an alert and close, or just close.
        loop {
            match s.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        if start.elapsed() < Duration::from_secs(HANDSHAKE_TIMEOUT_S + 3) {
            dropped += 1;
        }
    }
    (
        format!(
            "{closed} hung up mid-handshake; {dropped} of {} stalled ones dropped within the handshake deadline",
            stalled.len()
        ),
        dropped == stalled.len(),
    )
}

/// Sends one request on a fresh connection, returns the status.
fn status_of(ctx: &Ctx, raw: &[u8]) -> u16 {
    connect(ctx.addr, &ctx.config)
        .and_then(|mut c| exchange(&mut c, raw))
        .map_or(0, |r| r.0)
}

fn invalid_utf8(ctx: &Ctx) -> (String, bool) {
    let mut body = br#"{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"ng"#.to_vec();
    body.extend_from_slice(&[0xff, 0xfe]);
    body.extend_from_slice(br#"inx"}]}}"#);
    let image_review = connect(ctx.addr, &ctx.config)
        .and_then(|mut c| exchange(&mut c, &post("/image_policy", &body)));
    // An ImageReview that cannot be read is denied with HTTP 200 (fail closed).
    let needle = b"\"allowed\":false";
    let denied =
        matches!(&image_review, Ok((200, b)) if b.windows(needle.len()).any(|w| w == needle));
    let got = [
        if denied { 200 } else { 0 },
        status_of(ctx, &post("/validate", &body)),
        status_of(ctx, b"GET /\xff\xfe HTTP/1.1\r\n\r\n"),
        status_of(ctx, b"GET /healthz HTTP/1.1\r\nX: \xff\xfe\r\n\r\n"),
    ];
    // ImageReview: denied; AdmissionReview: 400. Path: 400 or 404. Header value: ignored.
    let ok = got[0] == 200 && got[1] == 400 && (got[2] == 400 || got[2] == 404) && got[3] == 200;
    (format!("statuses {got:?}"), ok)
}

fn nested_json(ctx: &Ctx) -> (String, bool) {
    let deep = |prefix: &str, suffix: &str| {
        let mut b = prefix.as_bytes().to_vec();
        b.extend(std::iter::repeat_n(b'[', 100_000));
        b.extend(std::iter::repeat_n(b']', 100_000));
        b.extend_from_slice(suffix.as_bytes());
        b
    };
    let image_review = deep(
        r#"{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"x":"#,
        "}}",
    );
    let admission = deep(
        r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","object":{"spec":"#,
        "}}}",
    );
    let got = [
        status_of(ctx, &post("/image_policy", &deep("", ""))),
        status_of(ctx, &post("/validate", &deep("", ""))),
        status_of(ctx, &post("/image_policy", &image_review)),
        status_of(ctx, &post("/validate", &admission)),
    ];
    // Refused by the decoder's depth limit: never a crash.
    let ok = got.iter().all(|s| *s == 400 || *s == 200);
    (
        format!("statuses {got:?}, server alive"),
        ok && status_of(ctx, b"GET /healthz HTTP/1.1\r\n\r\n") == 200,
    )
}

fn malformed(ctx: &Ctx) -> (String, bool) {
    let mut n = 0;
    let mut wrong = Vec::new();
    for (folder, path) in [
        ("imagereview", "/image_policy"),
        ("admission", "/validate"),
        ("mutate", "/mutate"),
    ] {
        let dir = fixtures_dir().join(folder);
        for entry in std::fs::read_dir(&dir).expect("fixtures") {
            let p = entry.expect("entry").path();
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string();
            if !name.starts_with("malformed-") || !name.ends_with(".request.json") {
                continue;
            }
            n += 1;
            let status = status_of(ctx, &post(path, &std::fs::read(&p).expect("read")));
            // ImageReview is always answered 200 (denied); an AdmissionReview
            // with a uid but an unreadable object too.
            let answered = folder == "imagereview" || name.contains("object");
            let expected = if answered { 200 } else { 400 };
            if status != expected {
                wrong.push(format!("{folder}/{name}: {status}"));
            }
        }
    }
    (
        format!(
            "{} of {n} answered as the wire contract says {wrong:?}",
            n - wrong.len()
        ),
        wrong.is_empty() && n > 0,
    )
}

/// Ten connections announce large bodies and send none of them: they hold
/// no memory, so the good client is not kept waiting.
fn announced_bodies(ctx: &Ctx) -> (String, bool) {
    let mut held = Vec::new();
    for n in [7 << 20; 9].into_iter().chain([1 << 20]) {
        if let Ok(mut c) = connect(ctx.addr, &ctx.config) {
            let head = format!(
                "POST /validate HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {n}\r\n\r\n"
            );
            if c.write_all(head.as_bytes())
                .and_then(|()| c.flush())
                .is_ok()
            {
                held.push(c);
            }
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    let n = held.len();
    drop(held);
    (format!("{n} of 10 held for 3 s"), n == 10)
}

/// Twelve connections each send 6 MiB of a 7 MiB body and stall: more
/// than the budget. Some are closed as others need room; ordinary reviews
/// keep their quarter.
fn stalled_bodies(ctx: &Ctx) -> (String, bool) {
    let head = format!(
        "POST /validate HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        7 << 20
    );
    let block = vec![b' '; 6 << 20];
    let mut conns = Vec::new();
    for _ in 0..12 {
        if let Ok(mut c) = connect(ctx.addr, &ctx.config) {
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(&block);
            let _ = c.flush();
            conns.push(c);
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    // A closed connection answers a read with EOF or an error (or a 503).
    let mut closed = 0;
    for c in &mut conns {
        let _ = c.sock.set_read_timeout(Some(Duration::from_millis(100)));
        let mut b = [0u8; 64];
        match c.read(&mut b) {
            Ok(0) => closed += 1,
            Ok(_) => closed += 1,
            Err(e)
                if e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut =>
            {
                closed += 1
            }
            Err(_) => {}
        }
    }
    let n = conns.len();
    drop(conns);
    (
        format!("{closed} of {n} closed or refused by the server to make room"),
        n == 12 && closed >= 2,
    )
}

/// Twice the connection cap of raw TCP connections that never handshake:
/// the oldest are closed for newer ones, no connection is refused, and the
/// good client keeps its keep-alive connection.
fn full_table(ctx: &Ctx, n: usize) -> (String, bool) {
    let socks: Vec<TcpStream> = (0..n)
        .filter_map(|_| TcpStream::connect(ctx.addr).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let opened = socks.len();
    let mut c = match connect(ctx.addr, &ctx.config) {
        Ok(c) => c,
        Err(e) => return (format!("a new client could not connect: {e}"), false),
    };
    let metrics = exchange(&mut c, b"GET /metrics HTTP/1.1\r\n\r\n")
        .map(|r| r.1)
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&metrics);
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(u64::MAX)
    };
    let (evicted, rejected) = (
        value("image_bouncer_evicted_connections_total"),
        value("image_bouncer_rejected_connections_total"),
    );
    drop(socks);
    (
        format!(
            "{opened} opened; {evicted} closed to make room, {rejected} refused; a new client got in"
        ),
        opened == n && rejected == 0 && evicted >= (n / 2) as u64,
    )
}

/// The review of the outside report: 500,000 `{"image":"a"}` in 7 MB.
fn amplification(ctx: &Ctx, at_once: usize) -> (String, bool) {
    let body = format!(
        r#"{{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{{"containers":[{}]}}}}"#,
        vec![r#"{"image":"a"}"#; 500_000].join(",")
    );
    let request = post("/image_policy", body.as_bytes());
    let workers: Vec<_> = (0..at_once)
        .map(|_| {
            let (addr, config, request) = (ctx.addr, ctx.config.clone(), request.clone());
            std::thread::spawn(move || {
                let mut c = connect(addr, &config)?;
                c.sock.set_read_timeout(Some(Duration::from_secs(20)))?;
                exchange(&mut c, &request)
            })
        })
        .collect();
    let mut sizes = Vec::new();
    let mut denied = 0;
    for w in workers {
        if let Ok(Ok((200, b))) = w.join() {
            sizes.push(b.len());
            let needle = b"\"allowed\":false";
            if b.windows(needle.len()).any(|w| w == needle) {
                denied += 1;
            }
        }
    }
    let largest = sizes.iter().copied().max().unwrap_or(0);
    (
        format!(
            "{denied} of {at_once} denied with HTTP 200; body {} bytes, reply at most {largest} bytes",
            body.len()
        ),
        denied == at_once && largest < 1024,
    )
}
