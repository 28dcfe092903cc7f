//! The webhook server: accept loop, connection threads, the worker pool,
//! reloading and shutdown.
//!
//! Threads: one acceptor; one small-stack thread per connection (bounded by
//! `--max-connections`) that only waits and does I/O — TLS handshake,
//! reading a request, writing a response — under deadlines, so idle or slow
//! clients cost a parked thread and never a worker; a fixed pool of
//! `--workers` permits for decoding and judging; and the main thread, which
//! watches signals and files. Configuration changes swap an `Arc` that new
//! requests (policy) or new connections (TLS) pick up.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};

use crate::admit::Admission;
use crate::config::ConfigError;
pub use crate::config::Settings;
use crate::metrics::{Metrics, Reloaded};

/// Kept here too: older paths name it `server::der`.
pub use crate::der;
pub mod budget;
pub mod http;
pub mod notify;
pub mod routes;
pub mod scratch;
pub mod stream;
mod table;
pub mod tls;

use http::{Activity, Conn, Limits, ReadError, State, Transport};
use table::{Table, Tracked};
use tls::Fingerprint;

/// Connection threads only parse HTTP and run rustls; 256 KiB is plenty and
/// keeps a thousand idle connections cheap (untouched stack is not resident).
const CONNECTION_STACK: usize = 256 * 1024;
/// Under this many days to expiry the serving certificate is warned about,
/// at start, on reload and every day (a year-old set-up expires unseen).
const EXPIRY_WARN_DAYS: i64 = 30;
/// How often the expiry is logged again.
const EXPIRY_LOG_EVERY: Duration = Duration::from_secs(24 * 3600);
/// How often the main thread looks at signal flags.
const SIGNAL_POLL: Duration = Duration::from_millis(50);
/// How long the kube-apiserver's Go client keeps an idle connection
/// (net/http's default `IdleConnTimeout`): the server must keep them
/// longer, so that it is always the client that closes an idle one.
const CLIENT_IDLE: Duration = Duration::from_secs(90);
/// How often draining checks whether connections are gone.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// A fixed number of permits to decode and judge requests.
pub struct Workers {
    state: Mutex<WorkerState>,
    freed: Condvar,
}

/// Free permits, and how many threads wait for one: a permit given back
/// wakes a waiter only if there is one (a condvar notify is a system call
/// even when nobody waits).
struct WorkerState {
    free: usize,
    waiting: usize,
}

/// Held while a worker is busy; gives the permit back when dropped.
pub struct Permit<'a> {
    workers: &'a Workers,
    metrics: &'a Metrics,
}

impl Workers {
    fn new(n: usize) -> Self {
        Workers {
            state: Mutex::new(WorkerState {
                free: n,
                waiting: 0,
            }),
            freed: Condvar::new(),
        }
    }

    /// Waits for a free worker.
    pub fn acquire<'a>(&'a self, metrics: &'a Metrics) -> Permit<'a> {
        self.take(metrics);
        Permit {
            workers: self,
            metrics,
        }
    }

    fn take(&self, metrics: &Metrics) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while st.free == 0 {
            st.waiting += 1;
            st = self.freed.wait(st).unwrap_or_else(PoisonError::into_inner);
            st.waiting -= 1;
        }
        st.free -= 1;
        drop(st);
        metrics.worker_busy(true);
    }

    fn give(&self, metrics: &Metrics) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.free += 1;
        let wake = st.waiting > 0;
        drop(st);
        if wake {
            self.freed.notify_one();
        }
        metrics.worker_busy(false);
    }

    /// For a holder of a permit about to wait on registries: lends its
    /// permit to others while `f` runs, and takes one back before
    /// returning, so that reviews waiting on a slow registry do not stop
    /// the others from being decoded and judged.
    pub fn lend<R>(&self, metrics: &Metrics, f: impl FnOnce() -> R) -> R {
        self.give(metrics);
        struct Retake<'a>(&'a Workers, &'a Metrics);
        impl Drop for Retake<'_> {
            fn drop(&mut self) {
                self.0.take(self.1);
            }
        }
        let _retake = Retake(self, metrics);
        f()
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.workers.give(self.metrics);
    }
}

/// State shared by all threads.
pub struct Shared {
    /// The admission step in force: rules, their registry client and the
    /// verdict cache, swapped as one on reload.
    admission: RwLock<Arc<Admission>>,
    tls: RwLock<Option<Arc<tls::Active>>>,
    pub metrics: Metrics,
    pub workers: Workers,
    body_budget: Arc<budget::BodyBudget>,
    draining: AtomicBool,
    conns: Mutex<Table>,
    /// Refused TLS handshakes are logged at most once a second.
    handshake_log: RateLimit,
    next_id: AtomicU64,
    settings: Settings,
    /// The files the policies name, watched for changes, and how they were
    /// when last read.
    named: Mutex<(Vec<std::path::PathBuf>, Fingerprint)>,
}

/// Lends a request's worker permit while its review waits on registries.
pub struct Lender<'a>(&'a Shared);

impl crate::admit::Wait for Lender<'_> {
    fn lend(&self, f: &mut dyn FnMut()) {
        self.0.workers.lend(&self.0.metrics, f);
    }
}

impl Shared {
    /// The admission step in force now.
    pub fn admission(&self) -> Arc<Admission> {
        self.admission
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn lender(&self) -> Lender<'_> {
        Lender(self)
    }

    fn tls_config(&self) -> Option<Arc<tls::Active>> {
        self.tls
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `None` when ready; otherwise why not (for `/readyz`).
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.draining.load(Ordering::Acquire) {
            return Some("shutting down".into());
        }
        // An expired serving certificate: every client refuses it, so the
        // server is not ready, and says why.
        let not_after = self.metrics.cert_not_after();
        if self.settings.tls.is_some() && not_after > 0 && not_after <= crate::time::unix_now() {
            return Some(expired_text(not_after, self.settings.self_signed.is_some()));
        }
        None
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// A server problem that stops it (exit status 1).
#[derive(Debug)]
pub enum ServeError {
    Config(ConfigError),
    Tls(tls::TlsError),
    Bind(SocketAddr, std::io::Error),
    Signals(std::io::Error),
    /// The `--self-signed` CA file could not be written.
    SelfSignedCa(String),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Config(e) => e.fmt(f),
            ServeError::Tls(e) => write!(f, "TLS: {e}"),
            ServeError::Bind(a, e) => write!(f, "cannot listen on {a}: {e}"),
            ServeError::Signals(e) => write!(f, "cannot install signal handlers: {e}"),
            ServeError::SelfSignedCa(e) => write!(f, "--self-signed: {e}"),
        }
    }
}

impl std::error::Error for ServeError {}

/// Signal flags set by handlers, read by the main thread.
struct Signals {
    hup: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
}

fn install_signals() -> std::io::Result<Signals> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let s = Signals {
        hup: Arc::new(AtomicBool::new(false)),
        term: Arc::new(AtomicBool::new(false)),
    };
    signal_hook::flag::register(SIGHUP, s.hup.clone())?;
    signal_hook::flag::register(SIGTERM, s.term.clone())?;
    signal_hook::flag::register(SIGINT, s.term.clone())?;
    Ok(s)
}

/// Runs the server until SIGTERM or SIGINT, then drains and returns.
// One function on purpose, the start-up sequence in the order it must happen (throwaway TLS,
// policy, certificate, signals, listeners, announcement, threads), easier to check read top to
// bottom.
pub fn serve(mut settings: Settings) -> Result<(), ServeError> {
    // --self-signed: the throwaway certificate, made now (the settings
    // only ask for it).
    let throwaway_ca = match &settings.self_signed {
        Some(ss) => {
            let (files, ca) = tls::throwaway(ss).map_err(ServeError::SelfSignedCa)?;
            settings.tls = Some(files);
            Some((ss.ca_out.clone(), ca))
        }
        None => None,
    };
    // The throwaway key's folder goes with the server, however it ends.
    struct Throwaway(Option<std::path::PathBuf>);
    impl Drop for Throwaway {
        fn drop(&mut self) {
            if let Some(dir) = &self.0 {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
    let _throwaway = Throwaway(
        settings
            .self_signed
            .as_ref()
            .and(settings.tls.as_ref())
            .and_then(|t| t.cert.parent().map(std::path::Path::to_path_buf)),
    );
    let initial = fingerprints(&settings);
    let rules = settings.policy.load_rules().map_err(ServeError::Config)?;
    let metrics = Metrics::default();
    metrics.set_policy(&rules.source_sha256);
    if !rules.source_sha256.is_empty() {
        info!(
            "policy loaded: {}, sha256 {}",
            rules.policy.summary(),
            rules.source_sha256
        );
    }
    let tls_config = match &settings.tls {
        Some(files) => {
            let loaded = tls::load(files).map_err(ServeError::Tls)?;
            metrics.set_cert_not_after(loaded.not_after);
            log_cert_expiry(loaded.not_after, settings.self_signed.is_some());
            Some(loaded.config)
        }
        None => {
            warn!(
                "serving plain HTTP (--insecure-http): the apiserver will not talk to this, and reviews travel unencrypted"
            );
            None
        }
    };
    let signals = install_signals().map_err(ServeError::Signals)?;
    let listener = listen(settings.listen).map_err(|e| ServeError::Bind(settings.listen, e))?;
    let local = listener
        .local_addr()
        .map_err(|e| ServeError::Bind(settings.listen, e))?;
    settings.max_connections = clamp_to_open_files(settings.max_connections, open_files_limit());
    let named = Mutex::new((rules.files.clone(), rules.files_seen.clone()));
    let shared = Arc::new(Shared {
        named,
        admission: RwLock::new(Arc::new(Admission::new(rules))),
        tls: RwLock::new(tls_config),
        metrics,
        workers: Workers::new(settings.workers),
        body_budget: budget::BodyBudget::new(settings.max_body_memory),
        draining: AtomicBool::new(false),
        conns: Mutex::new(Table::default()),
        handshake_log: RateLimit::new(Duration::from_secs(1)),
        next_id: AtomicU64::new(0),
        settings,
    });
    {
        // Memory for bodies runs out: close the slowest body first. A weak
        // reference, so the budget does not keep the server alive.
        let weak = Arc::downgrade(&shared);
        shared.body_budget.on_full(Box::new(move || {
            weak.upgrade().is_some_and(|s| {
                s.conns
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .close_slowest_body(&s.metrics)
            })
        }));
    }
    let scheme = if shared.settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    if let Some((path, pem)) = &throwaway_ca {
        // Only now: a start that failed to bind leaves a running server's
        // CA file alone.
        crate::certs::write_file(path, pem.as_bytes(), 0o644)
            .map_err(|e| ServeError::SelfSignedCa(e.to_string()))?;
        info!(
            "--self-signed: serving a throwaway certificate for localhost; its CA is in {0} (curl --cacert {0} https://localhost:{1}/healthz)",
            path.display(),
            local.port()
        );
    }
    let probes = match shared.settings.metrics_listen {
        Some(addr) => {
            let l = listen(addr).map_err(|e| ServeError::Bind(addr, e))?;
            let probe_local = l.local_addr().map_err(|e| ServeError::Bind(addr, e))?;
            info!(addr = probe_local.to_string().as_str(); "/metrics, /healthz and /readyz also on http://{probe_local}");
            Some(l)
        }
        None => None,
    };
    info!(
        addr = local.to_string().as_str();
        "serving {scheme}://{local} ({} workers, at most {} connections)",
        shared.settings.workers, shared.settings.max_connections
    );
    let idle = shared.settings.limits.idle_timeout;
    if idle < CLIENT_IDLE {
        warn!(
            "--idle-timeout {idle:?} is shorter than the {CLIENT_IDLE:?} after which the kube-apiserver's client closes an idle connection itself: a connection closed here just as the apiserver sends a review on it fails that review with EOF, which the apiserver does not retry (a refused pod, seen on kube-apiserver 1.32)"
        );
    }
    // Everything so far, the address among it, is in the log before anyone
    // is told the server listens.
    crate::logging::flush();
    if shared.settings.announce {
        // Tests and scripts wait for this line on stdout to know the port.
        println!("listening on {local}");
        let _ = std::io::stdout().flush();
    }

    let acceptor = {
        let shared = shared.clone();
        thread::Builder::new()
            .name("accept".into())
            .spawn(move || accept_loop(&shared, &listener, Port::Webhook))
            .map_err(|e| ServeError::Bind(local, e))?
    };
    if let Some(l) = probes {
        let shared = shared.clone();
        thread::Builder::new()
            .name("accept-probes".into())
            .spawn(move || accept_loop(&shared, &l, Port::Probes))
            .map_err(|e| ServeError::Bind(local, e))?;
    }
    // Serving: `systemctl start` (Type=notify) returns now, not before.
    notify::notify(&format!("READY=1\nSTATUS=serving {scheme}://{local}"));
    watch(&shared, &signals, initial);
    notify::notify("STOPPING=1\nSTATUS=draining");
    drain(&shared, local);
    let _ = acceptor.join();
    Ok(())
}

/// Connections the kernel completes before we accept them. Bursts (an
/// apiserver restart, a load test) must not overflow it: an overflow drops
/// the SYN and the client waits a full second to retry. The kernel caps it
/// at net.core.somaxconn.
const LISTEN_BACKLOG: i32 = 4096;

/// Binds with SO_REUSEADDR (a restart must not wait for TIME_WAIT) and
/// a real backlog.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// File descriptors kept for the listener, the files we read, and logging.
const SPARE_FDS: usize = 64;

/// The soft open-file limit, read from /proc (no libc call needed).
fn open_files_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Each connection holds two descriptors (the socket and the copy used to
/// close it on shutdown). Past the limit accept() would fail and spin; stay
/// below it and refuse cleanly instead.
fn clamp_to_open_files(wanted: usize, limit: Option<usize>) -> usize {
    let Some(limit) = limit else {
        return wanted;
    };
    let fits = limit.saturating_sub(SPARE_FDS) / 2;
    if wanted > fits {
        warn!(
            "--max-connections {wanted} needs {} open files but the limit is {limit}; serving at most {fits} connections (raise LimitNOFILE or ulimit -n)",
            wanted * 2 + SPARE_FDS
        );
        fits.max(1)
    } else {
        wanted
    }
}

/// The main thread's loop: reload on SIGHUP or file change, return on
/// SIGTERM/SIGINT.
/// Fingerprints of the policy file and the TLS files, in that order.
type Fingerprints = (Option<Fingerprint>, Option<Fingerprint>);

fn fingerprints(s: &Settings) -> Fingerprints {
    (
        s.policy.file.as_deref().map(|_| {
            // A directory's files, as they are now (a file added or
            // removed changes the list).
            let paths = s.policy.paths();
            Fingerprint::of(&paths.iter().map(|p| p.as_path()).collect::<Vec<_>>())
        }),
        s.tls.as_ref().map(|t| Fingerprint::of(&t.paths())),
    )
}

/// A fingerprint of the files the policies name (keys, trusted roots,
/// registry CAs) as last loaded, or as a failed load named them: a `trust
/// update` writing a new root, or a file a failed policy was missing, is
/// picked up without a signal.
fn named_fingerprint(shared: &Shared) -> Fingerprint {
    let files = shared
        .named
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .0
        .clone();
    Fingerprint::of(&files.iter().map(|p| p.as_path()).collect::<Vec<_>>())
}

/// Those files as the last load saw them, just before reading them.
fn named_seen(shared: &Shared) -> Fingerprint {
    shared
        .named
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .1
        .clone()
}

/// `initial` was taken before the files were first loaded, so that a change
/// made while they were being loaded is still seen.
fn watch(shared: &Shared, signals: &Signals, initial: Fingerprints) {
    let s = &shared.settings;
    let (mut last_policy, mut last_tls) = initial;
    let mut next_check = Instant::now() + s.reload_interval;
    let mut next_expiry_log = Instant::now() + EXPIRY_LOG_EVERY;
    while !signals.term.load(Ordering::Acquire) {
        thread::sleep(SIGNAL_POLL);
        if s.tls.is_some() && Instant::now() >= next_expiry_log {
            next_expiry_log = Instant::now() + EXPIRY_LOG_EVERY;
            log_cert_expiry(
                shared.metrics.cert_not_after(),
                shared.settings.self_signed.is_some(),
            );
        }
        let hup = signals.hup.swap(false, Ordering::AcqRel);
        if hup {
            info!("SIGHUP: reloading certificate and policy");
        } else if Instant::now() < next_check {
            continue;
        }
        next_check = Instant::now() + s.reload_interval;
        let (p, t) = fingerprints(s);
        let policy_changed =
            hup || p != last_policy || named_fingerprint(shared) != named_seen(shared);
        let tls_changed = hup || t != last_tls;
        if !(policy_changed || tls_changed) {
            continue;
        }
        // `systemctl reload` returns once READY=1 follows.
        notify::notify("RELOADING=1\nSTATUS=reloading");
        let mut failed = Vec::new();
        if policy_changed {
            if !reload_policy(shared) {
                failed.push("policy");
            }
            last_policy = p;
        }
        if tls_changed {
            if !reload_tls(shared) {
                failed.push("certificate");
            }
            last_tls = t;
        }
        notify::notify(&if failed.is_empty() {
            "READY=1\nSTATUS=serving".to_string()
        } else {
            format!(
                "READY=1\nSTATUS=serving; the new {} was refused, the previous one stays in force (see the log)",
                failed.join(" and ")
            )
        });
    }
    info!("shutting down: no new connections, finishing requests in flight");
}

/// Reloads the policy; false when the new one was refused.
fn reload_policy(shared: &Shared) -> bool {
    let loaded = shared.settings.policy.load_rules();
    // The files named (by the policy now in force, or by the one that
    // failed) and how they were before this load read them: the next
    // change, even one made while it read them, reloads.
    *shared.named.lock().unwrap_or_else(PoisonError::into_inner) = match &loaded {
        Ok(r) => (r.files.clone(), r.files_seen.clone()),
        Err(e) => (e.files.clone(), e.files_seen.clone()),
    };
    match loaded {
        Ok(r) => {
            let summary = if r.source_sha256.is_empty() {
                r.policy.summary()
            } else {
                format!("{}, sha256 {}", r.policy.summary(), r.source_sha256)
            };
            shared.metrics.set_policy(&r.source_sha256);
            // One swap: no request sees new rules with an old client.
            let next = Arc::new(shared.admission().reloaded(r));
            *shared
                .admission
                .write()
                .unwrap_or_else(PoisonError::into_inner) = next;
            shared.metrics.reload(Reloaded::Policy, true);
            info!("policy reloaded: {summary}");
            true
        }
        Err(e) => {
            shared.metrics.reload(Reloaded::Policy, false);
            error!("policy reload failed, the previous policy stays in force: {e}");
            false
        }
    }
}

/// Reloads the certificate; false when the new one was refused.
fn reload_tls(shared: &Shared) -> bool {
    let Some(files) = &shared.settings.tls else {
        return true;
    };
    match tls::load(files) {
        Ok(loaded) => {
            *shared.tls.write().unwrap_or_else(PoisonError::into_inner) = Some(loaded.config);
            shared.metrics.set_cert_not_after(loaded.not_after);
            shared.metrics.reload(Reloaded::Certificate, true);
            info!("certificate reloaded; new connections use it");
            log_cert_expiry(loaded.not_after, shared.settings.self_signed.is_some());
            true
        }
        Err(e) => {
            shared.metrics.reload(Reloaded::Certificate, false);
            error!("certificate reload failed, the previous certificate stays in use: {e}");
            false
        }
    }
}

/// Why an expired serving certificate stops service, with the date and
/// what to do.
fn expired_text(not_after: i64, throwaway: bool) -> String {
    let date = crate::time::date(not_after);
    if throwaway {
        format!(
            "the throwaway --self-signed certificate expired on {date}; restart to make a new one"
        )
    } else {
        format!(
            "the serving certificate expired on {date}: clients refuse it; renew it with `image-bouncer certs --out <pki> --host ... --force` (keeps the CA; bring ca.key back first)"
        )
    }
}

/// The serving certificate's remaining validity, in the log. A throwaway
/// `--self-signed` certificate is not one to renew.
fn log_cert_expiry(not_after: i64, throwaway: bool) {
    let now = crate::time::unix_now();
    let days = (not_after - now) / 86_400;
    if not_after <= now {
        error!("{}", expired_text(not_after, throwaway));
    } else if throwaway {
        info!("the throwaway --self-signed certificate is valid for {days} more days");
    } else if days < EXPIRY_WARN_DAYS {
        warn!(
            "the serving certificate expires in {days} days: renew it with `image-bouncer certs --out <pki> --host ... --force` (keeps the CA)"
        );
    } else {
        info!("the serving certificate is valid for {days} more days");
    }
}

/// Stops accepting, closes idle connections, waits for busy ones.
fn drain(shared: &Shared, local: SocketAddr) {
    shared.draining.store(true, Ordering::Release);
    // Wake the acceptor, which blocks in accept().
    let wake_ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let _ = TcpStream::connect_timeout(
        &SocketAddr::new(wake_ip, local.port()),
        Duration::from_secs(1),
    );
    let deadline = Instant::now() + shared.settings.drain_timeout;
    loop {
        let left = {
            let table = shared.conns.lock().unwrap_or_else(PoisonError::into_inner);
            for c in table.conns.values() {
                if matches!(c.activity.state(), State::Handshake | State::Idle) {
                    let _ = c.socket.shutdown(std::net::Shutdown::Both);
                }
            }
            table.conns.len()
        };
        if left == 0 {
            info!("all connections closed; exiting");
            return;
        }
        if Instant::now() >= deadline {
            warn!("{left} connections still busy after the drain timeout; exiting anyway");
            return;
        }
        thread::sleep(DRAIN_POLL);
    }
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// TLS (unless --insecure-http), every endpoint.
    Webhook,
    /// Plain HTTP, /metrics, /healthz and /readyz only.
    Probes,
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener, port: Port) {
    loop {
        let (socket, peer) = match listener.accept() {
            Ok(x) => x,
            Err(e) => {
                if shared.is_draining() {
                    return;
                }
                // EMFILE and friends: back off instead of spinning.
                warn!("accept failed: {e}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if shared.is_draining() {
            return;
        }
        let _ = socket.set_nodelay(true);
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new(State::Handshake));
        let Ok(copy) = socket.try_clone() else {
            continue;
        };
        {
            let mut table = shared.conns.lock().unwrap_or_else(PoisonError::into_inner);
            if !table.make_room_for(peer.ip(), &shared.settings, &shared.metrics) {
                drop(table);
                shared.metrics.connection_rejected();
                debug!("refused {peer}: no connection could be closed to make room");
                continue;
            }
            table.insert(
                id,
                Tracked {
                    socket: copy,
                    peer: peer.ip(),
                    activity: activity.clone(),
                },
            );
        }
        shared.metrics.connection_opened();
        let shared2 = shared.clone();
        let spawned = thread::Builder::new()
            .name("conn".into())
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                let _guard = ConnGuard {
                    shared: &shared2,
                    id,
                };
                connection(&shared2, socket, peer, activity, port);
            });
        if let Err(e) = spawned {
            warn!("cannot start a thread for {peer}: {e}");
            shared
                .conns
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(id);
            shared.metrics.connection_closed();
        }
    }
}

/// Unregisters a connection however its thread ends.
struct ConnGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        self.shared
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(self.id);
        self.shared.metrics.connection_closed();
    }
}

/// Serves one connection: handshake, then requests until it closes.
fn connection(
    shared: &Shared,
    socket: TcpStream,
    peer: SocketAddr,
    activity: Arc<Activity>,
    port: Port,
) {
    let limits = shared.settings.limits;
    match (port, shared.tls_config()) {
        (Port::Probes, _) | (_, None) => {
            activity.set(State::Idle);
            serve_requests(shared, socket, limits, activity, port);
        }
        (Port::Webhook, Some(config)) => match handshake(shared, config, socket) {
            Ok(stream) => {
                activity.set(State::Idle);
                serve_requests(shared, stream, limits, activity, port);
            }
            Err(e) => {
                shared.metrics.handshake_failed();
                if let Some(suppressed) = shared.handshake_log.allow() {
                    let more = if suppressed > 0 {
                        format!(" ({suppressed} more since the last such line)")
                    } else {
                        String::new()
                    };
                    warn!(peer = peer.to_string().as_str(), reason = e.as_str();
                          "refused a TLS handshake from {peer}: {e}{more}");
                }
            }
        },
    }
}

/// At most one line per interval, counting what it leaves out: refused
/// handshakes are worth a line, a flood of them is not worth a disk.
pub struct RateLimit {
    every_ms: u64,
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimit {
    pub fn new(every: Duration) -> Self {
        RateLimit {
            every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines left out since the last one)` when a line may go out.
    pub fn allow(&self) -> Option<u64> {
        let now = http::now_ms().saturating_add(self.every_ms);
        let last = self.last.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= self.every_ms
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Completes the TLS handshake within the handshake timeout and checks the
/// client certificate's name.
fn handshake(
    shared: &Shared,
    active: Arc<tls::Active>,
    socket: TcpStream,
) -> Result<stream::TlsStream, String> {
    let deadline = Instant::now() + shared.settings.handshake_timeout;
    let tls = stream::handshake(active.config.clone(), socket, deadline)?;
    if let Some(chain) = tls.conn.peer_certificates()
        && let Err(e) = tls::client_allowed(chain, &active.anchors, &shared.settings.client_names)
    {
        warn!("refused a client: {e}");
        return Err(e);
    }
    Ok(tls)
}

/// How long, and how many bytes, a refused request's unread rest is read
/// and dropped before the connection closes.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 8 << 20;

/// After refusing a request whose body was not read (a 413, say): reads
/// and drops what the client still sends, within [`LINGER_TIME`] and
/// [`LINGER_BYTES`], so that closing does not reset the connection while
/// data is unread — a reset makes the client's kernel discard the refusal
/// before the client has read it, and the client sees "connection reset"
/// instead of the reason.
fn linger<T: Transport>(stream: &mut T) {
    stream.finish();
    let deadline = Instant::now() + LINGER_TIME;
    let mut dropped = 0usize;
    let mut buf = [0u8; 16 * 1024];
    while dropped < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => dropped += n,
        }
    }
}

/// Reads and answers requests until the client closes, an error, or
/// shutdown.
fn serve_requests<T: Transport>(
    shared: &Shared,
    stream: T,
    limits: Limits,
    activity: Arc<Activity>,
    port: Port,
) {
    let Ok(conn) = Conn::new(stream, limits) else {
        return;
    };
    let mut conn = conn
        .with_budget(shared.body_budget.clone())
        .with_activity(activity);
    loop {
        let req = match conn.read_request() {
            Ok(r) => r,
            Err(ReadError::Closed) => break,
            Err(ReadError::Io(e)) => {
                debug!("connection broke mid-request: {e}");
                break;
            }
            Err(ReadError::Reject(status, message)) => {
                debug!("rejected a request: {status} {message}");
                shared.metrics.request(
                    crate::metrics::Endpoint::Other,
                    crate::metrics::Outcome::Invalid,
                    Duration::ZERO,
                );
                let response = routes::refused(conn.path(), status, &message);
                // Lingering holds the connection, not memory: the buffer
                // goes first. A 503 (no room for bodies) does not linger.
                conn.release_buffer();
                if conn.write_response(&response, false).is_ok() && status != 503 {
                    linger(conn.stream_mut());
                }
                break;
            }
        };
        let response = routes::handle(shared, &req, port);
        let keep_alive = req.keep_alive && !response.close && !shared.is_draining();
        let written = conn.write_response(&response, keep_alive);
        conn.answered(req);
        if written.is_err() || !keep_alive {
            break;
        }
    }
    conn.stream_mut().finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_in_the_open_file_limit() {
        assert_eq!(clamp_to_open_files(4096, None), 4096);
        assert_eq!(clamp_to_open_files(4096, Some(1_048_576)), 4096);
        assert_eq!(
            clamp_to_open_files(4096, Some(1024)),
            (1024 - SPARE_FDS) / 2
        );
        assert_eq!(clamp_to_open_files(10, Some(10)), 1);
        assert!(open_files_limit().is_some_and(|l| l > 0));
    }
}
