//! Load generator for image-bouncer: N concurrent HTTPS keep-alive clients
//! POST one body for a fixed time and check every answer, then print
//! throughput and latency percentiles as one JSON line.
//!
//! cargo run --release --example loadgen -- --addr 127.0.0.1:8443 --ca ca.crt \
//!   --path /validate --body tests/fixtures/bench/admission-v1-allowed.json -c 8 -d 5
//!
//! The expected verdict comes from the body's file name: a name containing
//! `denied` must be answered `allowed: false`, any other `allowed: true`.
//! Any other answer, a non-200 status or a broken connection counts as an
//! error. `--new-connection` makes every request a fresh TLS handshake.
//! `--any-verdict` accepts any 200 answer (for the floor server of
//! `bench/floor.rs`, whose answer is fixed).

#[path = "common.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Tls, connect, exchange, tls_config};

struct Args {
    addr: SocketAddr,
    ca: String,
    path: String,
    body: String,
    concurrency: usize,
    duration: Duration,
    new_connection: bool,
    /// With --new-connection: resume TLS sessions instead of full handshakes.
    resume: bool,
    /// Any 200 answer will do.
    any_verdict: bool,
    /// Stop after this many answered requests (all clients together)
    /// instead of after `duration`.
    count: Option<u64>,
}

fn usage() -> ! {
    eprintln!(
        "usage: loadgen --addr HOST:PORT --ca FILE --path PATH --body FILE [-c N] [-d SECS] [--new-connection [--resume]] [--any-verdict] [-n COUNT]"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let (mut addr, mut ca, mut path, mut body) = (None, None, None, None);
    let (mut concurrency, mut duration, mut new_connection, mut resume) = (1, 5.0, false, false);
    let mut any_verdict = false;
    let mut count = None;
    while let Some(a) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--addr" => addr = val().parse().ok(),
            "--ca" => ca = Some(val()),
            "--path" => path = Some(val()),
            "--body" => body = Some(val()),
            "-c" | "--concurrency" => concurrency = val().parse().unwrap_or_else(|_| usage()),
            "-d" | "--duration" => duration = val().parse().unwrap_or_else(|_| usage()),
            "--new-connection" => new_connection = true,
            "--resume" => resume = true,
            "--any-verdict" => any_verdict = true,
            "-n" | "--requests" => count = Some(val().parse().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    match (addr, ca, path, body) {
        (Some(addr), Some(ca), Some(path), Some(body)) => Args {
            addr,
            ca,
            path,
            body,
            concurrency,
            duration: Duration::from_secs_f64(duration),
            new_connection,
            resume,
            any_verdict,
            count,
        },
        _ => usage(),
    }
}

fn main() {
    let args = parse_args();
    let body = std::fs::read(&args.body).expect("read body");
    let expect_allowed = !args.body.contains("denied");
    let needle: &[u8] = if args.any_verdict {
        b""
    } else if expect_allowed {
        b"\"allowed\":true"
    } else {
        b"\"allowed\":false"
    };
    let request: Arc<Vec<u8>> = Arc::new(
        [
            format!(
                "POST {} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                args.path,
                body.len()
            )
            .into_bytes(),
            body,
        ]
        .concat(),
    );
    let config = tls_config(&args.ca, args.resume);
    let stop = Arc::new(AtomicBool::new(false));
    // Requests claimed so far, against `--requests`.
    let claimed = Arc::new(AtomicU64::new(0));
    let limit = args.count.unwrap_or(u64::MAX);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (config, request, stop) = (config.clone(), request.clone(), stop.clone());
            let claimed = claimed.clone();
            let (addr, fresh) = (args.addr, args.new_connection);
            std::thread::spawn(move || {
                let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
                let mut errors = 0u64;
                let report = |e: &dyn std::fmt::Display, errors: &mut u64| {
                    if *errors == 0 {
                        eprintln!("loadgen: first error: {e}");
                    }
                    *errors += 1;
                };
                let mut conn: Option<Tls> = None;
                while !stop.load(Ordering::Relaxed)
                    && claimed.fetch_add(1, Ordering::Relaxed) < limit
                {
                    let t = Instant::now();
                    if conn.is_none() || fresh {
                        match connect(addr, &config) {
                            Ok(c) => conn = Some(c),
                            Err(e) => {
                                report(&e, &mut errors);
                                continue;
                            }
                        }
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    match exchange(c, &request) {
                        Ok((200, reply))
                            if needle.is_empty()
                                || reply.windows(needle.len()).any(|w| w == needle) =>
                        {
                            latencies
                                .push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                        }
                        Ok((status, reply)) => {
                            let text = String::from_utf8_lossy(&reply);
                            report(&format!("unexpected answer {status}: {text}"), &mut errors);
                            conn = None;
                        }
                        Err(e) => {
                            report(&e, &mut errors);
                            conn = None;
                        }
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    if args.count.is_none() {
        std::thread::sleep(args.duration);
        stop.store(true, Ordering::Relaxed);
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.join().expect("worker thread");
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        f64::from(all[i]) / 1000.0
    };
    println!(
        "{{\"requests\":{},\"errors\":{errors},\"seconds\":{elapsed:.2},\"rps\":{:.0},\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3}}}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        all.last().map_or(0.0, |m| f64::from(*m) / 1000.0),
    );
    if errors > 0 {
        std::process::exit(1);
    }
}
