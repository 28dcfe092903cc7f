//! The soak run: mixed load for a while with the certificate rotated and the
//! policy reloaded underneath (once broken, then fixed), then SIGTERM.
//! Prints a table and exits 1 if any valid request failed, memory or
//! threads grew past their bound, or the shutdown was not clean.
//!
//!   cargo run --release --example soak -- --bin target/release/image-bouncer            (10 minutes)
//!   ... --seconds 30 --rotate-every 5 --reload-every 4                                (the CI version)

#[path = "common.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;

const POLICY_A: &str =
    r#"{"exemptNamespaces": ["kube-system"], "mutate": {"rewriteRegistry": "mirror.example.com"}}"#;
const POLICY_B: &str = r#"{"exemptNamespaces": ["kube-system", "monitoring"], "mutate": {"rewriteRegistry": "mirror.example.com"}}"#;
const POLICY_BROKEN: &str = r#"{"exemptNamespaces": "not a list", "denyLatest": "maybe"}"#;
/// Allowed growth of resident memory from the end of warm-up to the end.
const RSS_GROWTH_BOUND_KB: u64 = 8 * 1024;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bin: String = arg(&args, "--bin", "target/release/image-bouncer".to_string());
    let seconds: u64 = arg(&args, "--seconds", 600);
    let clients: usize = arg(&args, "--clients", 8);
    let rotate_every: u64 = arg(&args, "--rotate-every", 30);
    let reload_every: u64 = arg(&args, "--reload-every", 20);

    let dir = std::env::temp_dir().join(format!("image-bouncer-soak-{}", std::process::id()));
    let pki = Pki::new(&dir);
    pki.issue();
    let policy = dir.join("policy.json");
    write_atomic(&policy, POLICY_A.as_bytes());
    let server_args: Vec<String> = [
        "--cert",
        &pki.path("tls.crt"),
        "--key",
        &pki.path("tls.key"),
        "--policy",
        &policy.display().to_string(),
        "--reload-interval",
        "500ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log = dir.join("server.log");
    let (mut child, addr) = start_server(&bin, &server_args, &log);
    let pid = child.id();
    let config = tls_config(&pki.path("ca.crt"), true);

    // (path, body, expected verdict text)
    let mix: Arc<Vec<(Vec<u8>, &'static [u8])>> = Arc::new(vec![
        (
            post(
                "/image_policy?timeout=30s",
                &fixture("bench/imagereview-allowed.json"),
            ),
            b"\"allowed\":true",
        ),
        (
            post(
                "/image_policy?timeout=30s",
                &fixture("bench/imagereview-denied.json"),
            ),
            b"\"allowed\":false",
        ),
        (
            post(
                "/validate?timeout=10s",
                &fixture("bench/admission-v1-allowed.json"),
            ),
            b"\"allowed\":true",
        ),
        (
            post(
                "/validate?timeout=10s",
                &fixture("bench/admission-v1-denied.json"),
            ),
            b"\"allowed\":false",
        ),
        (
            post(
                "/validate?timeout=10s",
                &fixture("bench/admission-v1beta1-denied.json"),
            ),
            b"\"allowed\":false",
        ),
        (
            post(
                "/mutate?timeout=10s",
                &fixture("bench/admission-v1-allowed.json"),
            ),
            b"\"patchType\":\"JSONPatch\"",
        ),
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok_count, fail_count) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..clients)
        .map(|w| {
            let (mix, stop, config, ok, fail) = (
                mix.clone(),
                stop.clone(),
                config.clone(),
                ok_count.clone(),
                fail_count.clone(),
            );
            std::thread::spawn(move || {
                let mut conn: Option<Tls> = None;
                let mut i = w;
                let mut first_errors = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let (req, want) = &mix[i % mix.len()];
                    i += 1;
                    // A new connection now and then, to meet rotated certificates.
                    if i % 500 == 0 {
                        conn = None;
                    }
                    let result = (|| {
                        if conn.is_none() {
                            conn = Some(connect(addr, &config)?);
                        }
                        exchange(
                            conn.as_mut().ok_or_else(|| std::io::Error::other("none"))?,
                            req,
                        )
                    })();
                    match result {
                        Ok((200, body)) if body.windows(want.len()).any(|x| x == *want) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            fail.fetch_add(1, Ordering::Relaxed);
                            if first_errors.len() < 3 {
                                first_errors.push(format!(
                                    "{:?}",
                                    other.map(|(s, b)| (
                                        s,
                                        String::from_utf8_lossy(&b).into_owned()
                                    ))
                                ));
                            }
                            conn = None;
                        }
                    }
                    // A realistic pace, not a benchmark: leave CPU for the rest.
                    std::thread::sleep(Duration::from_millis(2));
                }
                first_errors
            })
        })
        .collect();

    let start = Instant::now();
    let total = Duration::from_secs(seconds);
    let warmup = total / 10;
    let (mut rotations, mut reloads, mut broken_pushed) = (0u64, 0u64, false);
    let (mut next_rotate, mut next_reload) = (
        Duration::from_secs(rotate_every),
        Duration::from_secs(reload_every),
    );
    let mut broken_until: Option<Duration> = None;
    let (mut warm_rss, mut max_rss_after_warmup, mut max_threads) = (0u64, 0u64, 0u64);
    while start.elapsed() < total {
        std::thread::sleep(Duration::from_millis(250));
        let now = start.elapsed();
        if now >= next_rotate {
            pki.issue();
            rotations += 1;
            next_rotate += Duration::from_secs(rotate_every);
        }
        if let Some(until) = broken_until
            && now >= until
        {
            write_atomic(&policy, POLICY_A.as_bytes());
            broken_until = None;
            reloads += 1;
        }
        if now >= next_reload {
            if !broken_pushed && now >= total / 2 {
                // Broken for a while: the previous policy must stay in force.
                write_atomic(&policy, POLICY_BROKEN.as_bytes());
                broken_pushed = true;
                broken_until = Some(now + Duration::from_secs(reload_every.min(5)));
            } else if broken_until.is_none() {
                write_atomic(
                    &policy,
                    if reloads % 2 == 0 { POLICY_B } else { POLICY_A }.as_bytes(),
                );
                reloads += 1;
            }
            next_reload += Duration::from_secs(reload_every);
        }
        let (rss, _, threads) = proc_status(pid);
        max_threads = max_threads.max(threads);
        if now < warmup {
            warm_rss = rss;
        } else {
            max_rss_after_warmup = max_rss_after_warmup.max(rss);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for w in workers {
        errors.extend(w.join().expect("client"));
    }
    let metrics = connect(addr, &config)
        .and_then(|mut c| exchange(&mut c, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
        .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let counter = |line: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let cert_ok = counter("image_bouncer_reloads_total{kind=\"certificate\",outcome=\"success\"}");
    let policy_ok = counter("image_bouncer_reloads_total{kind=\"policy\",outcome=\"success\"}");
    let policy_failed = counter("image_bouncer_reloads_total{kind=\"policy\",outcome=\"failure\"}");

    // SIGTERM: a clean, prompt exit.
    let t = Instant::now();
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
    }
    let status = child.wait().expect("wait");
    let stop_took = t.elapsed();

    let ok = ok_count.load(Ordering::Relaxed);
    let failed = fail_count.load(Ordering::Relaxed);
    let growth = max_rss_after_warmup.saturating_sub(warm_rss);
    let checks = [
        (
            "valid requests failed",
            failed == 0,
            format!("{failed} of {}", ok + failed),
        ),
        (
            "certificate rotations seen",
            cert_ok >= rotations.saturating_sub(1) && rotations > 0,
            format!("{rotations} rotated, {cert_ok} reloads"),
        ),
        (
            "policy reloads seen",
            policy_ok >= reloads.saturating_sub(1) && reloads > 0,
            format!("{reloads} written, {policy_ok} reloads"),
        ),
        (
            "broken policy refused, old one kept",
            broken_pushed && policy_failed >= 1,
            format!("{policy_failed} failed reloads"),
        ),
        (
            "memory growth after warm-up",
            growth <= RSS_GROWTH_BOUND_KB,
            format!(
                "{:.1} MB at warm-up, {:.1} MB max after (bound +{} MB)",
                warm_rss as f64 / 1024.0,
                max_rss_after_warmup as f64 / 1024.0,
                RSS_GROWTH_BOUND_KB / 1024
            ),
        ),
        (
            "threads",
            max_threads <= clients as u64 + 8,
            format!("{max_threads} max (bound {} = clients + 8)", clients + 8),
        ),
        (
            "SIGTERM",
            status.success() && stop_took < Duration::from_secs(12),
            format!("{status} after {stop_took:.2?}"),
        ),
    ];
    println!(
        "soak: {seconds} s, {clients} clients, {:.0} requests/s, certificate every {rotate_every} s, policy every {reload_every} s",
        (ok + failed) as f64 / seconds as f64
    );
    println!();
    println!("| check | result | measured |");
    println!("| --- | --- | --- |");
    let mut bad = 0;
    for (name, pass, detail) in &checks {
        bad += usize::from(!pass);
        println!(
            "| {name} | {} | {detail} |",
            if *pass { "ok" } else { "**FAILED**" }
        );
    }
    if !errors.is_empty() {
        eprintln!("first errors: {errors:?}");
    }
    if bad == 0 {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("server log kept in {}", log.display());
    }
    println!("soak: {} passed, {bad} failed", checks.len() - bad);
    if bad > 0 {
        std::process::exit(1);
    }
}
