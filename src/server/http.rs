//! A small synchronous HTTP/1.1 server side on `httparse`: one connection,
//! request after request (keep-alive, pipelining), with every limit and
//! deadline enforced.
//!
//! It does what the apiserver needs and refuses the rest with a status
//! code: `Content-Length` and chunked bodies, `Expect: 100-continue`,
//! header count and size caps (431), body cap (413), deadlines for an idle
//! connection and for reading one request (408). It does not do routing
//! (`routes.rs`), TLS (`tls.rs`) or HTTP/2 (never offered in ALPN).

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub use crate::config::Limits;

use super::budget::{BodyBudget, BodyPermit};

/// Most headers a request may have; the apiserver sends about eight.
pub const MAX_HEADERS: usize = 64;
/// Most bytes taken from the transport at a time; a typical review fits
/// in one read.
const READ_CHUNK: usize = 16 * 1024;
/// The stack buffer of [`Transport::read_append`]'s default.
const PLAIN_CHUNK: usize = 4 * 1024;
/// How far past a deadline a read may wait, so that the socket's timeout
/// need not be set again before every read.
const TIMEOUT_SLACK: Duration = Duration::from_millis(10);
/// Buffer kept by a connection between requests; more is freed.
const KEEP_BUFFER: usize = 64 * 1024;

impl Limits {
    /// The body cap of a path.
    pub fn body_cap(&self, path: &str) -> usize {
        self.path_caps
            .iter()
            .find(|(p, _)| *p == path)
            .map_or(self.max_body, |(_, cap)| *cap)
    }
}

/// A byte stream whose timeouts we can set: a TCP socket, TLS over one, or
/// memory (tests and fuzzing).
pub trait Transport: Read + Write {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    /// Ends the session politely before the socket closes.
    fn finish(&mut self) {}
    /// One read of at most `max` bytes, appended to `buf`; `Ok(0)` at end
    /// of stream. This default reads through a small zeroed stack buffer
    /// (memory, in tests); a plain socket reads through the thread's
    /// scratch buffer, TLS appends rustls' plaintext without one.
    fn read_append(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let mut chunk = [0u8; PLAIN_CHUNK];
        let n = self.read(&mut chunk[..max.min(PLAIN_CHUNK)])?;
        buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }
}

impl Transport for TcpStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, t)
    }

    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, t)
    }

    /// Through the thread's scratch buffer (no TLS here uses it): the
    /// probes port, and reviews with `--insecure-http`.
    fn read_append(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        super::scratch::with(max, |chunk| {
            let n = self.read(chunk)?;
            buf.extend_from_slice(&chunk[..n]);
            Ok(n)
        })
    }
}

impl Transport for super::stream::TlsStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(t)
    }

    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.sock.set_write_timeout(t)
    }

    fn finish(&mut self) {
        self.conn.send_close_notify();
        let _ = self.conn.complete_io(&mut self.sock);
    }

    fn read_append(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        super::stream::TlsStream::read_append(self, buf, max)
    }
}

/// What a connection is doing, for the server's connection table: it
/// decides which connections are cheapest to close when room is needed.
#[derive(Debug)]
pub struct Activity {
    state: AtomicU8,
    /// When the state last changed, in [`now_ms`].
    since: AtomicU64,
    /// When the last byte of the request being read arrived.
    progress: AtomicU64,
    /// Body bytes charged to the budget for the request being read.
    held: AtomicUsize,
}

/// A connection's state, cheapest to close first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// TLS handshake in progress: nothing known about the client yet.
    Handshake = 0,
    /// Between requests on a keep-alive connection.
    Idle = 1,
    /// A request is arriving.
    Reading = 2,
    /// A request was read whole and is being judged or answered.
    Working = 3,
}

/// Milliseconds on a clock that starts with the first call (monotonic).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new(State::Handshake)
    }
}

impl Activity {
    pub fn new(state: State) -> Self {
        let now = now_ms();
        Activity {
            state: AtomicU8::new(state as u8),
            since: AtomicU64::new(now),
            progress: AtomicU64::new(now),
            held: AtomicUsize::new(0),
        }
    }

    pub fn set(&self, state: State) {
        let now = now_ms();
        self.since.store(now, Ordering::Relaxed);
        self.progress.store(now, Ordering::Relaxed);
        self.state.store(state as u8, Ordering::Release);
    }

    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            0 => State::Handshake,
            1 => State::Idle,
            2 => State::Reading,
            _ => State::Working,
        }
    }

    /// When the state last changed.
    pub fn since(&self) -> u64 {
        self.since.load(Ordering::Relaxed)
    }

    /// When bytes of the current request last arrived.
    pub fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    /// Body bytes the current request holds in the budget.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn arrived(&self) {
        self.progress.store(now_ms(), Ordering::Relaxed);
    }
}

/// A request with its body read.
#[derive(Debug)]
pub struct Request {
    /// Borrowed for the methods and paths and the Content-Type the server
    /// knows (no allocation per request for them), owned otherwise.
    pub method: Cow<'static, str>,
    /// Without the query string (the apiserver sends `?timeout=30s`).
    pub path: Cow<'static, str>,
    pub content_type: Option<Cow<'static, str>>,
    /// The apiserver's `?timeout=` (its webhook `timeoutSeconds`): how
    /// long it will wait for this answer.
    pub timeout: Option<Duration>,
    /// The request as read, the body from `body_at` on ([`Request::body`]);
    /// given back to the connection once answered ([`Conn::answered`]).
    buf: Vec<u8>,
    body_at: usize,
    pub keep_alive: bool,
    /// The body's share of the budget, held until the request is dropped.
    pub body_permit: Option<BodyPermit>,
}

impl Request {
    pub fn body(&self) -> &[u8] {
        &self.buf[self.body_at..]
    }
}

/// A response; `close` ends the connection after it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
    pub close: bool,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
            close: false,
        }
    }

    pub fn json(body: Vec<u8>) -> Self {
        Response::new(200, "application/json", body)
    }

    /// A plain-text error message.
    pub fn text(status: u16, message: impl std::fmt::Display) -> Self {
        Response::new(status, "text/plain; charset=utf-8", format!("{message}\n"))
    }
}

/// Why no request was read.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed, or stayed idle too long, between requests.
    Closed,
    /// Answer this and close the connection.
    Reject(u16, String),
    /// The connection broke mid-request.
    Io(io::Error),
}

/// One HTTP/1.1 connection.
pub struct Conn<T: Transport> {
    stream: T,
    buf: Vec<u8>,
    limits: Limits,
    /// The read timeout the socket has now, to skip the system call when it
    /// would not change (steady keep-alive traffic then makes none).
    read_timeout: Option<Duration>,
    budget: Option<Arc<BodyBudget>>,
    activity: Arc<Activity>,
    /// The path of a request refused after its head was parsed (so the
    /// refusal can be answered in the endpoint's own format).
    path: Option<Cow<'static, str>>,
}

/// What the request head says about the body and the connection.
struct Head {
    method: Cow<'static, str>,
    path: Cow<'static, str>,
    timeout: Option<Duration>,
    content_type: Option<Cow<'static, str>>,
    len: usize,
    content_length: Option<usize>,
    chunked: bool,
    expect_continue: bool,
    keep_alive: bool,
}

impl<T: Transport> Conn<T> {
    pub fn new(stream: T, limits: Limits) -> io::Result<Self> {
        stream.set_write_timeout(Some(limits.write_timeout))?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            limits,
            read_timeout: None,
            budget: None,
            activity: Arc::new(Activity::new(State::Idle)),
            path: None,
        })
    }

    /// Reports what the connection does to `activity` (the server's table).
    pub fn with_activity(mut self, activity: Arc<Activity>) -> Self {
        self.activity = activity;
        self
    }

    /// Shares `budget` for body memory with other connections.
    pub fn with_budget(mut self, budget: Arc<BodyBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Charges what the current request holds beyond its head (`held`
    /// bytes) to the budget, or answers 503 when no room comes soon.
    fn charge(
        &self,
        permit: &mut Option<BodyPermit>,
        held: usize,
        deadline: Instant,
    ) -> Result<(), ReadError> {
        self.activity.held.store(held, Ordering::Relaxed);
        match &self.budget {
            Some(b) if held > 0 && !b.charge(permit, held, deadline) => Err(ReadError::Reject(
                503,
                "too many large requests are being read; try again".into(),
            )),
            _ => Ok(()),
        }
    }

    /// One more read of the body; what arrived is charged at once.
    fn read_body(
        &mut self,
        head_len: usize,
        decoded: usize,
        deadline: Instant,
        permit: &mut Option<BodyPermit>,
    ) -> Result<(), ReadError> {
        self.read_or_fail(deadline)?;
        self.activity.arrived();
        let held = self.buf.len().saturating_sub(head_len) + decoded;
        self.charge(permit, held, deadline)
    }

    /// The path of the request just refused, if its head was parsed.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    pub fn stream_mut(&mut self) -> &mut T {
        &mut self.stream
    }

    /// Gives back the read buffer (a refused request's unread body may be
    /// in it) before the connection lingers.
    pub fn release_buffer(&mut self) {
        self.buf = Vec::new();
    }

    /// Waits for the next request and reads it whole. `busy` is set once
    /// its first byte arrived (so shutdown knows not to cut it off).
    pub fn read_request(&mut self) -> Result<Request, ReadError> {
        if self.buf.is_empty() {
            let idle_deadline = Instant::now() + self.limits.idle_timeout;
            match self.read_more(idle_deadline) {
                Ok(0) | Err(_) => return Err(ReadError::Closed),
                Ok(_) => {}
            }
        }
        self.activity.set(State::Reading);
        self.path = None;
        let deadline = Instant::now() + self.limits.request_timeout;
        let head = self.read_head(deadline)?;
        // The path is kept only for a refusal, to answer it in the
        // endpoint's own format (no copy on the way of a normal request).
        let (buf, body_at, permit) = match self.read_body_of(&head, deadline) {
            Ok(x) => x,
            Err(e) => {
                self.path = Some(head.path);
                return Err(e);
            }
        };
        self.activity.set(State::Working);
        self.activity
            .held
            .store(buf.len() - body_at, Ordering::Relaxed);
        Ok(Request {
            method: head.method,
            path: head.path,
            content_type: head.content_type,
            timeout: head.timeout,
            buf,
            body_at,
            keep_alive: head.keep_alive,
            body_permit: permit,
        })
    }

    /// The request was answered; the connection waits for the next one.
    /// Its buffer comes back for the next request unless it is large
    /// (then it is freed, not kept for the life of the connection) or
    /// bytes of the next request already wait in a buffer of their own.
    pub fn answered(&mut self, request: Request) {
        let Request {
            mut buf,
            body_permit,
            ..
        } = request;
        drop(body_permit);
        if self.buf.is_empty() && buf.capacity() <= KEEP_BUFFER {
            buf.clear();
            self.buf = buf;
        }
        self.activity.held.store(0, Ordering::Relaxed);
        self.activity.set(State::Idle);
    }

    /// Frees what the connection's buffer holds beyond [`KEEP_BUFFER`]
    /// (never the bytes in it): memory no budget counts must not outlive
    /// the request that needed it.
    fn trim(&mut self) {
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf.shrink_to(KEEP_BUFFER.max(self.buf.len()));
        }
    }

    /// Reads the body `head` announces: (a buffer holding it, where the
    /// body starts in it, its share of the budget). The connection's
    /// buffer itself is handed over, the head in front of the body, so
    /// that the body is not copied; bytes after it (the next request,
    /// pipelined) stay in a buffer of their own.
    fn read_body_of(
        &mut self,
        head: &Head,
        deadline: Instant,
    ) -> Result<(Vec<u8>, usize, Option<BodyPermit>), ReadError> {
        let mut permit = None;
        let cap = self.limits.body_cap(&head.path);
        if head.chunked {
            self.send_continue(head)?;
            let (body, consumed) = self.read_chunked(head.len, cap, deadline, &mut permit)?;
            self.buf.drain(..consumed);
            // The raw chunks may have grown the buffer far past the body
            // the budget counts: give that back now.
            self.trim();
            return Ok((body, 0, permit));
        }
        let n = head.content_length.unwrap_or(0);
        if n > cap {
            return Err(ReadError::Reject(
                413,
                format!("request body of {n} bytes is larger than the limit of {cap} bytes"),
            ));
        }
        if n > 0 {
            self.send_continue(head)?;
        }
        // What came with the head is charged too; then each read.
        self.charge(&mut permit, self.buf.len() - head.len, deadline)?;
        while self.buf.len() < head.len + n {
            self.read_body(head.len, 0, deadline, &mut permit)?;
        }
        let end = head.len + n;
        // (An empty rest allocates nothing.)
        let rest = self.buf[end..].to_vec();
        let mut buf = std::mem::replace(&mut self.buf, rest);
        buf.truncate(end);
        Ok((buf, head.len, permit))
    }

    fn send_continue(&mut self, head: &Head) -> Result<(), ReadError> {
        // Only when the body has not already been sent along.
        if head.expect_continue && self.buf.len() == head.len {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .and_then(|()| self.stream.flush())
                .map_err(ReadError::Io)?;
        }
        Ok(())
    }

    fn read_head(&mut self, deadline: Instant) -> Result<Head, ReadError> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    if len > self.limits.max_head {
                        return Err(too_large_head(self.limits.max_head));
                    }
                    return interpret(&req, len);
                }
                Ok(httparse::Status::Partial) => {
                    if self.buf.len() > self.limits.max_head {
                        return Err(too_large_head(self.limits.max_head));
                    }
                }
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(ReadError::Reject(
                        431,
                        format!("more than {MAX_HEADERS} header fields"),
                    ));
                }
                Err(e) => return Err(ReadError::Reject(400, format!("malformed request: {e}"))),
            }
            self.read_or_fail(deadline)?;
        }
    }

    /// Decodes a chunked body that starts at `start`; returns the body and
    /// the bytes consumed from the buffer.
    fn read_chunked(
        &mut self,
        start: usize,
        cap: usize,
        deadline: Instant,
        permit: &mut Option<BodyPermit>,
    ) -> Result<(Vec<u8>, usize), ReadError> {
        let mut body = Vec::new();
        let mut pos = start;
        loop {
            let (size_len, size) = loop {
                match httparse::parse_chunk_size(&self.buf[pos..]) {
                    Ok(httparse::Status::Complete(x)) => break x,
                    Ok(httparse::Status::Partial) => {
                        if self.buf.len() - pos > self.limits.max_head {
                            return Err(ReadError::Reject(400, "chunk size line too long".into()));
                        }
                        self.read_body(start, body.len(), deadline, permit)?;
                    }
                    Err(_) => return Err(ReadError::Reject(400, "malformed chunk size".into())),
                }
            };
            pos += size_len;
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size > cap.saturating_sub(body.len()) {
                return Err(ReadError::Reject(
                    413,
                    format!("chunked request body is larger than the limit of {cap} bytes"),
                ));
            }
            if size == 0 {
                // Trailer fields, if any, end with an empty line.
                loop {
                    match find_crlf(&self.buf[pos..]) {
                        Some(0) => return Ok((body, pos + 2)),
                        Some(n) => pos += n + 2,
                        None => {
                            if self.buf.len() - pos > self.limits.max_head {
                                return Err(ReadError::Reject(
                                    431,
                                    "trailer fields too large".into(),
                                ));
                            }
                            self.read_body(start, body.len(), deadline, permit)?;
                        }
                    }
                }
            }
            while self.buf.len() < pos + size + 2 {
                self.read_body(start, body.len(), deadline, permit)?;
            }
            body.extend_from_slice(&self.buf[pos..pos + size]);
            self.charge(permit, self.buf.len() - start + body.len(), deadline)?;
            if &self.buf[pos + size..pos + size + 2] != b"\r\n" {
                return Err(ReadError::Reject(400, "chunk not followed by CRLF".into()));
            }
            pos += size + 2;
        }
    }

    /// Reads more of a started request: EOF is a broken request, the
    /// deadline a 408.
    fn read_or_fail(&mut self, deadline: Instant) -> Result<(), ReadError> {
        match self.read_more(deadline) {
            Ok(0) => Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => Ok(()),
            Err(e) if is_timeout(&e) => Err(ReadError::Reject(
                408,
                "request not received in time".into(),
            )),
            Err(e) => Err(ReadError::Io(e)),
        }
    }

    /// One read into the buffer, waiting at most until `deadline`.
    ///
    /// The socket keeps one standing read timeout, at most the request
    /// timeout, across requests and idle waits, so steady traffic sets none:
    /// an idle wait longer than it is several waits in a row, and the
    /// timeout is shortened only when a deadline comes nearer than it
    /// (a slow request), and lengthened back when it is much shorter than
    /// needed.
    fn read_more(&mut self, deadline: Instant) -> io::Result<usize> {
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            let standing = remaining.min(self.limits.request_timeout);
            let keep = self
                .read_timeout
                .is_some_and(|t| t <= remaining + TIMEOUT_SLACK && t >= standing / 2);
            if !keep {
                self.stream.set_read_timeout(Some(standing))?;
                self.read_timeout = Some(standing);
            }
            // Only what arrived is appended: no buffer is zeroed or held
            // for a read.
            let read = self.stream.read_append(&mut self.buf, READ_CHUNK);
            match read {
                // The standing timeout ran out before the deadline.
                Err(e) if is_timeout(&e) => continue,
                // A signal or a tracer attaching: a socket with a receive
                // timeout is not restarted by the kernel (signal(7)).
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    /// Writes a whole response in one go (one TLS record for small ones).
    pub fn write_response(&mut self, r: &Response, keep_alive: bool) -> io::Result<()> {
        let mut out = Vec::with_capacity(r.body.len() + 160);
        out.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(&mut out, r.status.into());
        out.push(b' ');
        out.extend_from_slice(reason_phrase(r.status).as_bytes());
        out.extend_from_slice(b"\r\nContent-Type: ");
        out.extend_from_slice(r.content_type.as_bytes());
        out.extend_from_slice(b"\r\nContent-Length: ");
        push_decimal(&mut out, r.body.len() as u64);
        if !keep_alive {
            out.extend_from_slice(b"\r\nConnection: close");
        }
        for (name, value) in &r.headers {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&r.body);
        self.stream.write_all(&out)?;
        self.stream.flush()
    }
}

/// `n` in decimal, without a `String` for it.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn too_large_head(max: usize) -> ReadError {
    ReadError::Reject(431, format!("request head is larger than {max} bytes"))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A Go duration as the apiserver writes a webhook timeout (`10s`,
/// `1m0s`, `500ms`); anything else, or more than a minute, is `None`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 6 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(n), 2)
        } else if rest.starts_with('s') {
            (Duration::from_secs(n), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(n * 60), 1)
        } else {
            return None;
        };
        total += unit;
        rest = &rest[len..];
    }
    (total <= Duration::from_secs(60)).then_some(total)
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// The methods a route answers or refuses by name.
const KNOWN_METHODS: &[&str] = &["GET", "POST", "HEAD", "PUT", "DELETE"];
/// The paths the server answers.
const KNOWN_PATHS: &[&str] = &[
    "/",
    "/image_policy",
    "/validate",
    "/mutate",
    "/healthz",
    "/readyz",
    "/metrics",
];

/// `s` borrowed from `known` when it is one of them, else a copy.
fn known(s: &str, known: &[&'static str]) -> Cow<'static, str> {
    match known.iter().find(|k| **k == s) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(s.to_string()),
    }
}

/// Reads what we need from a parsed head, refusing ambiguous framing.
fn interpret(req: &httparse::Request<'_, '_>, len: usize) -> Result<Head, ReadError> {
    let bad = |m: &str| Err(ReadError::Reject(400, m.to_string()));
    let method = known(req.method.unwrap_or(""), KNOWN_METHODS);
    let target = req.path.unwrap_or("");
    let (path, query) = match target.bytes().position(|b| b == b'?') {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, ""),
    };
    let timeout = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("timeout="))
        .and_then(parse_go_duration);
    let path = known(path, KNOWN_PATHS);
    let http11 = req.version == Some(1);
    let mut head = Head {
        method,
        path,
        timeout,
        content_type: None,
        len,
        content_length: None,
        chunked: false,
        expect_continue: false,
        keep_alive: http11,
    };
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).map(str::trim);
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let digits = value
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
            let Some(digits) = digits else {
                return bad("invalid Content-Length");
            };
            // Too large to represent is simply too large (413 later).
            let n = digits.parse::<usize>().unwrap_or(usize::MAX);
            if head.content_length.is_some_and(|old| old != n) {
                return bad("conflicting Content-Length headers");
            }
            head.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.is_ok_and(|v| v.eq_ignore_ascii_case("chunked")) || head.chunked {
                return Err(ReadError::Reject(
                    501,
                    "only Transfer-Encoding: chunked is supported".into(),
                ));
            }
            head.chunked = true;
        } else if name.eq_ignore_ascii_case("expect") {
            if !value.is_ok_and(|v| v.eq_ignore_ascii_case("100-continue")) {
                return Err(ReadError::Reject(
                    417,
                    "only Expect: 100-continue is supported".into(),
                ));
            }
            head.expect_continue = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.unwrap_or("").split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && !http11 {
                    head.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            head.content_type = Some(match std::str::from_utf8(h.value) {
                Ok(v) => known(v.trim(), &["application/json"]),
                Err(_) => Cow::Owned(String::from_utf8_lossy(h.value).trim().to_string()),
            });
        }
    }
    if head.chunked && head.content_length.is_some() {
        // Both framings at once is how requests are smuggled.
        return bad("both Transfer-Encoding and Content-Length");
    }
    Ok(head)
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::MemoryTransport;
    use crate::server::budget::ROOM_WAIT;
    use std::net::TcpListener;
    use std::sync::Mutex;
    use std::thread;

    const LIMITS: Limits = Limits {
        max_head: 1024,
        max_body: 64,
        path_caps: &[("/big", 128)],
        request_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        write_timeout: Duration::from_secs(1),
    };

    #[test]
    fn known_names_are_borrowed_and_others_copied() {
        assert!(matches!(
            known("/validate", KNOWN_PATHS),
            Cow::Borrowed("/validate")
        ));
        assert!(matches!(
            known("POST", KNOWN_METHODS),
            Cow::Borrowed("POST")
        ));
        // Case and prefixes matter: these are other names.
        for other in ["/Validate", "/validate/", "post", "/valid", ""] {
            let got = known(other, KNOWN_PATHS);
            assert!(matches!(got, Cow::Owned(_)), "{other:?}");
            assert_eq!(got, other);
        }
    }

    #[test]
    fn decimals_are_written_as_to_string_writes_them() {
        for n in [0, 7, 10, 200, 413, 65_535, 1_000_000, u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    /// Sends `chunks` (with pauses) to a fresh connection and returns what
    /// the server side read: requests or the error that ended it.
    fn serve(chunks: Vec<(Vec<u8>, u64)>) -> Vec<Result<Request, String>> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            for (bytes, pause_ms) in chunks {
                thread::sleep(Duration::from_millis(pause_ms));
                if s.write_all(&bytes).is_err() {
                    break;
                }
            }
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            out
        });
        let (sock, _) = listener.accept().unwrap();
        let mut conn = Conn::new(sock, LIMITS).unwrap();
        let mut got = Vec::new();
        loop {
            match conn.read_request() {
                Ok(r) => {
                    let keep = r.keep_alive;
                    conn.write_response(&Response::text(200, "ok"), keep)
                        .unwrap();
                    got.push(Ok(r));
                    if !keep {
                        break;
                    }
                }
                Err(ReadError::Closed) => break,
                Err(ReadError::Reject(code, m)) => {
                    got.push(Err(format!("{code} {m}")));
                    break;
                }
                Err(ReadError::Io(e)) => {
                    got.push(Err(format!("io {e}")));
                    break;
                }
            }
        }
        drop(conn);
        client.join().unwrap();
        got
    }

    fn one(raw: &str) -> Result<Request, String> {
        serve(vec![(raw.as_bytes().to_vec(), 0)]).remove(0)
    }

    #[test]
    fn content_length_and_query_string() {
        let r = one("POST /image_policy?timeout=30s HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}").unwrap();
        assert_eq!(
            (r.method.as_ref(), r.path.as_ref(), r.body()),
            ("POST", "/image_policy", &b"{}"[..])
        );
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        assert!(!r.keep_alive);
    }

    #[test]
    fn keep_alive_and_pipelining() {
        let two = "POST /a HTTP/1.1\r\nContent-Length: 1\r\n\r\nxGET /b HTTP/1.1\r\nConnection: close\r\n\r\n";
        let got = serve(vec![(two.as_bytes().to_vec(), 0)]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().unwrap().body(), b"x");
        assert_eq!(got[1].as_ref().unwrap().path, "/b");
    }

    #[test]
    fn chunked_body_in_pieces() {
        let got = serve(vec![
            (b"POST /v HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nab".to_vec(), 0),
            (b"c\r\n2;ext=1\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n".to_vec(), 20),
        ]);
        assert_eq!(got[0].as_ref().unwrap().body(), b"abcde");
    }

    #[test]
    fn limits_and_malformed_requests() {
        let cases = [
            ("POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n", "413"),
            (
                "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                "413",
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n",
                "413",
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "400 conflicting",
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                "400 invalid Content-Length",
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "400 both",
            ),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", "501"),
            ("POST / HTTP/1.1\r\nExpect: magic\r\n\r\n", "417"),
            ("GARBAGE\r\n\r\n", "400 malformed"),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "400 malformed chunk",
            ),
        ];
        for (raw, want) in cases {
            let got = one(raw).map(|r| r.path).unwrap_err();
            assert!(got.starts_with(want), "{raw:?}: {got}");
        }
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: y\r\n"))
            .collect();
        assert!(
            one(&format!("GET / HTTP/1.1\r\n{many}\r\n"))
                .unwrap_err()
                .starts_with("431")
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
        assert!(one(&big).unwrap_err().starts_with("431"));
    }

    #[test]
    fn a_path_can_have_its_own_body_cap() {
        let req = |path: &str, n: usize| {
            let raw = format!(
                "POST {path} HTTP/1.1\r\nContent-Length: {n}\r\n\r\n{}",
                "x".repeat(n)
            );
            Conn::new(MemoryTransport::new([raw.into_bytes()]), LIMITS)
                .unwrap()
                .read_request()
                .map(|r| r.body().len())
        };
        assert_eq!(req("/big", 100).unwrap(), 100);
        assert!(matches!(req("/big", 129), Err(ReadError::Reject(413, _))));
        assert!(matches!(req("/other", 100), Err(ReadError::Reject(413, _))));
    }

    #[test]
    fn slow_request_times_out_and_idle_connection_closes() {
        let got = serve(vec![
            (b"POST / HTTP/1.1\r\nContent-Le".to_vec(), 0),
            (b"ngth: 1\r\n".to_vec(), 500),
        ]);
        assert!(got[0].as_ref().unwrap_err().starts_with("408"), "{got:?}");
        // Nothing sent: closed quietly after the idle timeout.
        let started = Instant::now();
        assert!(serve(vec![(Vec::new(), 0)]).is_empty());
        assert!(started.elapsed() >= LIMITS.idle_timeout);
    }

    fn body_conn(budget: &Arc<BodyBudget>, len: usize) -> Conn<MemoryTransport> {
        let req = format!(
            "POST / HTTP/1.1\r\nContent-Length: {len}\r\n\r\n{}",
            "x".repeat(len)
        );
        let limits = Limits {
            max_body: 4 * 1024 * 1024,
            ..LIMITS
        };
        Conn::new(MemoryTransport::new([req.into_bytes()]), limits)
            .unwrap()
            .with_budget(budget.clone())
    }

    /// The body is the connection's own buffer handed out: bytes of the
    /// next request that came with it stay behind, and an answered
    /// request gives the buffer back, unless it grew past what a
    /// connection keeps.
    #[test]
    fn answered_requests_give_their_buffer_back() {
        const K: usize = 1024;
        let post = |body: &str| {
            format!(
                "POST /v HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let large = "y".repeat(KEEP_BUFFER + K);
        let pieces = [
            format!("{}{}", post("first"), post("second")),
            post("third"),
            post(&large),
            post("last"),
        ];
        let limits = Limits {
            max_body: 4 * K * K,
            ..LIMITS
        };
        let mut conn =
            Conn::new(MemoryTransport::new(pieces.map(String::into_bytes)), limits).unwrap();
        let first = conn.read_request().unwrap();
        assert_eq!(first.body(), b"first");
        assert!(
            conn.buf.starts_with(b"POST /v"),
            "the pipelined request stays"
        );
        conn.answered(first);
        let second = conn.read_request().unwrap();
        assert_eq!(second.body(), b"second");
        assert!(conn.buf.is_empty());
        let kept = second.buf.as_ptr();
        conn.answered(second);
        assert_eq!(
            conn.buf.as_ptr(),
            kept,
            "the same buffer serves the next request"
        );
        let third = conn.read_request().unwrap();
        assert_eq!((third.body(), third.buf.as_ptr()), (&b"third"[..], kept));
        conn.answered(third);
        let big = conn.read_request().unwrap();
        assert_eq!(big.body(), large.as_bytes());
        assert!(big.buf.capacity() > KEEP_BUFFER);
        conn.answered(big);
        assert!(
            conn.buf.capacity() <= KEEP_BUFFER,
            "a large buffer is freed"
        );
        assert_eq!(conn.read_request().unwrap().body(), b"last");
    }

    /// A chunked body is decoded into a buffer of its own; the raw chunks
    /// grew the connection's buffer, which is cut back to what a
    /// connection keeps once the body is read, whether a pipelined request
    /// follows or not, and whatever the decoded body's size (each size
    /// line may carry an extension up to the head limit, so a few bytes
    /// of body can take far more on the wire).
    #[test]
    fn chunked_bodies_leave_no_large_buffer_behind() {
        const K: usize = 1024;
        // `data` in chunks of `size` bytes, each size line with an
        // extension of `ext` bytes.
        let chunked = |data: &str, size: usize, ext: usize| {
            let mut raw = String::from("POST /v HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
            for piece in data.as_bytes().chunks(size) {
                let piece = std::str::from_utf8(piece).unwrap();
                raw += &format!("{:x};e={}\r\n{piece}\r\n", piece.len(), "x".repeat(ext));
            }
            raw + "0\r\n\r\n"
        };
        let next = "POST /v HTTP/1.1\r\nContent-Length: 4\r\n\r\nnext";
        let large = "y".repeat(3 * KEEP_BUFFER);
        let small = "z".repeat(200);
        let cases = [
            (large.as_str(), large.len(), 0),
            (small.as_str(), 1, LIMITS.max_head - 16),
        ];
        for (body, size, ext) in cases {
            for pipelined in [false, true] {
                let raw = chunked(body, size, ext) + if pipelined { next } else { "" };
                assert!(raw.len() > 2 * KEEP_BUFFER);
                let limits = Limits {
                    max_body: 4 * K * K,
                    ..LIMITS
                };
                // In pieces, so that the buffer grows as a slow client makes it.
                let pieces: Vec<Vec<u8>> =
                    raw.as_bytes().chunks(7 * K).map(<[u8]>::to_vec).collect();
                let mut conn = Conn::new(MemoryTransport::new(pieces), limits).unwrap();
                let req = conn.read_request().unwrap();
                assert_eq!(req.body(), body.as_bytes());
                let kept = conn.buf.capacity();
                assert!(kept <= KEEP_BUFFER, "{kept} bytes kept while judging");
                conn.answered(req);
                let kept = conn.buf.capacity();
                assert!(kept <= KEEP_BUFFER, "{kept} bytes kept idle");
                if pipelined {
                    assert_eq!(conn.read_request().unwrap().body(), b"next");
                }
            }
        }
    }

    #[test]
    fn body_memory_is_shared_and_bounded() {
        let budget = BodyBudget::new(50);
        let first = body_conn(&budget, 40).read_request().unwrap();
        assert_eq!(budget.used(), 40);
        // No room for 30 more: refused soon, well before the deadline.
        let started = Instant::now();
        match body_conn(&budget, 30).read_request() {
            Err(ReadError::Reject(503, _)) => {}
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() >= ROOM_WAIT);
        assert!(started.elapsed() < LIMITS.request_timeout);
        // Answered requests give their room back.
        drop(first);
        assert_eq!(budget.used(), 0);
        let second = body_conn(&budget, 30).read_request().unwrap();
        assert_eq!(second.body().len(), 30);
        // A body larger than the whole budget still gets through alone.
        drop(second);
        let big = body_conn(&BodyBudget::new(10), 64).read_request().unwrap();
        assert_eq!(big.body().len(), 64);
    }

    #[test]
    fn large_bodies_leave_room_for_small_ones() {
        const K: usize = 1024;
        let budget = BodyBudget::new(1024 * K);
        let large = body_conn(&budget, 700 * K).read_request().unwrap();
        assert_eq!(large.body().len(), 700 * K);
        // Another large one would fit in the whole budget, but not in the
        // three quarters that parts beyond 64 KiB may use.
        assert!(matches!(
            body_conn(&budget, 200 * K).read_request(),
            Err(ReadError::Reject(503, _))
        ));
        // An ordinary review still fits.
        let small = body_conn(&budget, 60 * K).read_request().unwrap();
        assert_eq!(budget.used(), 760 * K);
        drop((large, small));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_full_budget_asks_to_close_a_stalled_request() {
        let budget = BodyBudget::new(100);
        let held = Arc::new(Mutex::new(Some(
            body_conn(&budget, 90).read_request().unwrap(),
        )));
        let asked = Arc::new(AtomicUsize::new(0));
        {
            let (held, asked) = (held.clone(), asked.clone());
            budget.on_full(Box::new(move || {
                asked.fetch_add(1, Ordering::Relaxed);
                held.lock().unwrap().take().is_some()
            }));
        }
        let started = Instant::now();
        let r = body_conn(&budget, 50).read_request().unwrap();
        assert_eq!(r.body().len(), 50);
        assert_eq!(asked.load(Ordering::Relaxed), 1);
        assert!(
            started.elapsed() < ROOM_WAIT,
            "waited {:?}",
            started.elapsed()
        );
        assert_eq!(budget.used(), 50);
    }

    #[test]
    fn an_announced_body_costs_nothing_until_it_is_sent() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"POST / HTTP/1.1\r\nContent-Length: 60\r\n\r\n0123456789")
                .unwrap();
            thread::sleep(Duration::from_millis(150));
            s
        });
        let (sock, _) = listener.accept().unwrap();
        let budget = BodyBudget::new(1000);
        let b = budget.clone();
        let server = thread::spawn(move || {
            let mut conn = Conn::new(sock, LIMITS).unwrap().with_budget(b);
            conn.read_request()
                .map(|r| r.body().len())
                .map_err(|e| format!("{e:?}"))
        });
        thread::sleep(Duration::from_millis(80));
        // Ten bytes arrived of sixty announced: ten are charged.
        assert_eq!(budget.used(), 10);
        drop(client.join().unwrap());
        assert!(server.join().unwrap().is_err());
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn expect_continue_is_answered() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
                .unwrap();
            let mut first = [0u8; 25];
            s.read_exact(&mut first).unwrap();
            s.write_all(b"{}").unwrap();
            first
        });
        let (sock, _) = listener.accept().unwrap();
        let mut conn = Conn::new(sock, LIMITS).unwrap();
        let r = conn.read_request().unwrap();
        assert_eq!(r.body(), b"{}");
        assert_eq!(&client.join().unwrap(), b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn the_apiservers_timeout_is_read_as_go_writes_it() {
        let s = Duration::from_secs;
        for (text, want) in [
            ("10s", Some(s(10))),
            ("30s", Some(s(30))),
            ("1m0s", Some(s(60))),
            ("500ms", Some(Duration::from_millis(500))),
            ("2m", None),
            ("", None),
            ("10", None),
            ("s", None),
            ("-1s", None),
            ("1h", None),
            ("99999999999s", None),
        ] {
            assert_eq!(parse_go_duration(text), want, "{text:?}");
        }
    }
}
