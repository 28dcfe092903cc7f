//! The floor server: the least a server can do per request with
//! image-bouncer's TLS configuration and socket handling, to measure
//! image-bouncer against. Same certificate loading and rustls
//! configuration (`server::tls::load`), same handshake and TLS stream
//! (`server::stream`: one `recv` per arrival, one `writev` per answer;
//! `server::scratch`: reads land in a per-thread buffer),
//! one thread per connection with the same stack and `TCP_NODELAY`, one
//! standing read timeout. Per request it parses the head with httparse,
//! reads `Content-Length` bytes and writes one fixed 200 answer; it does
//! not decode, judge, log or count anything.
//!
//! With `--check-json` it also checks that the body is JSON, with
//! image-bouncer's own strict reader (`review::fast::json`, UTF-8 first), and
//! answers 400 when it is not: the least any JSON webhook must do, to
//! tell the cost of checking JSON from the cost of the rest.
//!
//!   cargo run --release --example floor -- --cert tls.crt --key tls.key [--listen 127.0.0.1:0] [--check-json]
//!
//! Prints `listening on ADDR` on stdout, then serves until killed.

#[path = "common.rs"]
mod common;

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::content_length;
use image_bouncer::config::TlsFiles;
use image_bouncer::review::fast::json::Reader;
use image_bouncer::server::stream::{TlsStream, handshake};
use image_bouncer::server::tls;

const ANSWER_BODY: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"705ab4f5-6393-11e8-b7cc-42010a800002","allowed":true}}"#;

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut cert, mut key, mut listen) = (None, None, "127.0.0.1:0".to_string());
    let mut check_json = false;
    while let Some(a) = args.next() {
        if a == "--check-json" {
            check_json = true;
            continue;
        }
        let v = args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--cert" => cert = Some(PathBuf::from(v)),
            "--key" => key = Some(PathBuf::from(v)),
            "--listen" => listen = v,
            _ => usage(),
        }
    }
    let (Some(cert), Some(key)) = (cert, key) else {
        usage()
    };
    let files = TlsFiles {
        cert,
        key,
        client_ca: None,
    };
    let config = tls::load(&files).expect("TLS files").config.config.clone();
    let listener = TcpListener::bind(&listen).expect("listen");
    println!("listening on {}", listener.local_addr().expect("address"));
    let _ = std::io::stdout().flush();
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{ANSWER_BODY}",
        ANSWER_BODY.len()
    )
    .into_bytes();
    for socket in listener.incoming() {
        let Ok(socket) = socket else { continue };
        let _ = socket.set_nodelay(true);
        let (config, answer) = (config.clone(), answer.clone());
        let _ = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(5);
                if let Ok(mut tls) = handshake(config, socket, deadline) {
                    let _ = tls.sock.set_read_timeout(Some(Duration::from_secs(10)));
                    while serve_one(&mut tls, &answer, check_json) {}
                }
            });
    }
}

fn usage() -> ! {
    eprintln!("usage: floor --cert FILE --key FILE [--listen ADDR] [--check-json]");
    std::process::exit(2);
}

/// Answer to a body that is not JSON, with `--check-json`.
const NOT_JSON: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";

/// Whether `body` is one JSON value, by image-bouncer's strict reader.
fn is_json(body: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    let mut r = Reader::new(text);
    r.skip().is_ok() && r.end().is_ok()
}

/// Reads one request and writes the answer; false when the connection ends.
fn serve_one(tls: &mut TlsStream, answer: &[u8], check_json: bool) -> bool {
    let mut buf = Vec::new();
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = req.parse(&buf) {
            let end = head + content_length(req.headers);
            if buf.len() >= end {
                let answer = if check_json && !is_json(&buf[head..end]) {
                    NOT_JSON
                } else {
                    answer
                };
                return tls.write_all(answer).and_then(|()| tls.flush()).is_ok();
            }
        }
        // The same reads as image-bouncer's: plaintext appended to the
        // request buffer.
        let read = tls.read_append(&mut buf, 16 * 1024);
        if !matches!(read, Ok(n) if n > 0) {
            return false;
        }
    }
}
