//! Shared by the fault suite and the soak run: a test PKI, starting the
//! server binary, a keep-alive HTTPS client, and /proc readings.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// A CA that can issue serving certificates again and again (rotation).
pub struct Pki {
    pub dir: PathBuf,
    params: CertificateParams,
    key: KeyPair,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("create the work folder");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "bench CA");
        let key = KeyPair::generate().expect("CA key");
        let ca = params.self_signed(&key).expect("CA certificate");
        std::fs::write(dir.join("ca.crt"), ca.pem()).expect("write ca.crt");
        Pki {
            dir: dir.to_path_buf(),
            params,
            key,
        }
    }

    /// Issues a localhost certificate into tls.crt/tls.key, replacing the
    /// files atomically (as a Secret volume update does).
    pub fn issue(&self) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .expect("sign");
        // Key first: a reload between the two sees a mismatch and keeps the
        // old pair, then the certificate completes the new one.
        write_atomic(&self.dir.join("tls.key"), key.serialize_pem().as_bytes());
        write_atomic(&self.dir.join("tls.crt"), cert.pem().as_bytes());
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

pub fn write_atomic(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Starts `bin serve ARGS --listen 127.0.0.1:0` and returns it with its
/// address. Its log goes to `log`.
pub fn start_server(bin: &str, args: &[String], log: &Path) -> (Child, SocketAddr) {
    let mut child = Command::new(bin)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("start the server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("server did not start, see {}", log.display()))
        .parse()
        .expect("address");
    (child, addr)
}

/// A client configuration trusting `ca`; `resume` allows TLS session
/// resumption (the apiserver's Go client does not resume).
pub fn tls_config(ca: &str, resume: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(c.expect("CA cert")).expect("add");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(config)
}

pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects and completes the handshake.
pub fn connect(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let name = ServerName::try_from("localhost").expect("static name");
    let mut conn =
        rustls::ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(rustls::StreamOwned::new(conn, sock))
}

/// Writes raw bytes and reads one response: status and body.
pub fn exchange<S: Read + Write>(s: &mut S, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    s.write_all(request)?;
    s.flush()?;
    read_response(s)
}

pub fn read_response<S: Read>(s: &mut S) -> std::io::Result<(u16, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = resp.parse(&buf) {
            let status = resp.code.unwrap_or(0);
            let len = content_length(resp.headers);
            while buf.len() < head + len {
                let n = s.read(&mut chunk)?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok((status, buf[head..head + len].to_vec()));
        }
    }
}

/// The `Content-Length` of a parsed head (0 when absent or unreadable).
pub fn content_length(headers: &[httparse::Header<'_>]) -> usize {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
        .unwrap_or(0)
}

pub fn post(path: &str, body: &[u8]) -> Vec<u8> {
    [
        format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len())
            .into_bytes(),
        body.to_vec(),
    ]
    .concat()
}

/// A process's resident memory (kB), peak resident memory (kB), threads.
pub fn proc_status(pid: u32) -> (u64, u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (get("VmRSS:"), get("VmHWM:"), get("Threads:"))
}

/// Where the fixtures shipped with the tests are.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The fixtures shipped with the tests.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Percentile of sorted microsecond latencies, in milliseconds.
pub fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

/// A well-behaved client, like the apiserver: one keep-alive connection,
/// a review every `every`, each checked, each with a deadline.
pub struct GoodClient {
    pub latencies_us: Vec<u64>,
    pub failures: Vec<String>,
}

pub fn good_client(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    every: Duration,
    deadline: Duration,
) -> std::thread::JoinHandle<GoodClient> {
    std::thread::spawn(move || {
        let allowed = post(
            "/image_policy?timeout=30s",
            &fixture("bench/imagereview-allowed.json"),
        );
        let denied = post(
            "/validate?timeout=10s",
            &fixture("bench/admission-v1-denied.json"),
        );
        let mut out = GoodClient {
            latencies_us: Vec::new(),
            failures: Vec::new(),
        };
        let mut conn: Option<Tls> = None;
        let mut i = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            i += 1;
            let (req, want): (&[u8], &[u8]) = if i.is_multiple_of(2) {
                (&allowed, b"\"allowed\":true")
            } else {
                (&denied, b"\"allowed\":false")
            };
            let t = std::time::Instant::now();
            let result = (|| {
                if conn.is_none() {
                    conn = Some(connect(addr, &config)?);
                }
                let c = conn
                    .as_mut()
                    .ok_or_else(|| std::io::Error::other("no connection"))?;
                exchange(c, req)
            })();
            let took = t.elapsed();
            match result {
                Ok((200, body))
                    if body.windows(want.len()).any(|w| w == want) && took <= deadline =>
                {
                    out.latencies_us.push(took.as_micros() as u64);
                }
                Ok((status, _)) => out.failures.push(format!("status {status} after {took:?}")),
                Err(e) => {
                    out.failures.push(format!("{e} after {took:?}"));
                    conn = None;
                }
            }
            std::thread::sleep(every);
        }
        out
    })
}
