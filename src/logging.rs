//! Log lines on stderr, as text or JSON lines, with UTC timestamps, and
//! when they are written.
//!
//! `RUST_LOG` overrides the level (`info`, or `debug` with `--debug`).
//! Request bodies are only ever logged at `trace` (see `server/routes.rs`).
//!
//! Info and debug lines (one per decision) collect in a buffer that is
//! written out every [`FLUSH_EVERY`], when it holds [`FLUSH_AT`] bytes, on
//! [`flush`] (before the `listening on` line and at exit) and on a panic:
//! a review costs no write of its own. Warnings and errors are written at
//! once, with everything before them. What a crash (SIGKILL, an abort,
//! the OOM killer) can lose is the info lines of its last 100 ms, never a
//! warning or an error. `--log-sync` writes every line at once.

use std::cell::Cell;
use std::io::Write;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// How long an info line may wait in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A buffer this full is written out by the thread that filled it.
pub const FLUSH_AT: usize = 64 * 1024;

/// Set once JSON lines are chosen: only they show a line's fields.
static FIELDS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether log lines show their structured fields (`--log-format json`):
/// a caller may skip building fields that no line would show.
pub fn shows_fields() -> bool {
    FIELDS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Lines not yet written; [`WRITING`] orders the writes of two flushes.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static WRITING: Mutex<()> = Mutex::new(());

thread_local! {
    /// Set by the formatter for the line being logged: a warning or worse.
    static URGENT: Cell<bool> = const { Cell::new(false) };
    /// Set by [`Deferred::write`] when its line filled the buffer, so that
    /// the `flush` after it need not take the lock again.
    static FULL: Cell<bool> = const { Cell::new(false) };
}

/// Writes out the buffered lines (a no-op with `--log-sync`, where there
/// are none). Call before exiting; the server calls it once it listens.
pub fn flush() {
    let _order = WRITING.lock().unwrap_or_else(PoisonError::into_inner);
    let bytes = std::mem::take(&mut *PENDING.lock().unwrap_or_else(PoisonError::into_inner));
    if !bytes.is_empty() {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(&bytes);
        let _ = err.flush();
    }
}

/// env_logger's pipe: appends to [`PENDING`]; its per-line `flush` writes
/// out only for a warning, an error or a full buffer.
struct Deferred;

impl Write for Deferred {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
        pending.extend_from_slice(bytes);
        if pending.len() >= FLUSH_AT {
            FULL.with(|f| f.set(true));
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if FULL.with(|f| f.replace(false)) | URGENT.with(Cell::get) {
            flush();
        }
        Ok(())
    }
}

/// Installs the logger once; later calls do nothing. `sync`: every line is
/// written when logged, as `--log-sync` asks.
pub fn init(format: Format, debug: bool, sync: bool) {
    // --debug is about this program: libraries (rustls) stay at info.
    let level = if debug {
        "info,image_bouncer=debug".to_string()
    } else {
        legacy_level().unwrap_or("info").to_string()
    };
    FIELDS.store(format == Format::Json, std::sync::atomic::Ordering::Relaxed);
    let env = env_logger::Env::default().default_filter_or(level);
    let mut b = env_logger::Builder::from_env(env);
    b.format(move |buf, record| {
        URGENT.with(|u| u.set(record.level() <= log::Level::Warn));
        match format {
            Format::Text => {
                buf.write_all(&crate::time::stamp(SystemTime::now()))?;
                // The level padded to five, as `{:<5}` pads it.
                let level = match record.level() {
                    log::Level::Error => " ERROR ",
                    log::Level::Warn => " WARN  ",
                    log::Level::Info => " INFO  ",
                    log::Level::Debug => " DEBUG ",
                    log::Level::Trace => " TRACE ",
                };
                buf.write_all(level.as_bytes())?;
                writeln!(buf, "{}", record.args())
            }
            Format::Json => {
                let ts = crate::time::timestamp(SystemTime::now());
                let mut line = serde_json::json!({
                    "ts": ts,
                    "level": record.level().as_str().to_ascii_lowercase(),
                    "target": record.target(),
                    "msg": record.args().to_string(),
                });
                // Structured fields (a decision's endpoint, verdict, ...)
                // each get their own key; they never replace the above.
                if let Some(obj) = line.as_object_mut() {
                    let mut fields = Fields(obj);
                    let _ = record.key_values().visit(&mut fields);
                }
                writeln!(buf, "{line}")
            }
        }
    });
    // The flusher first: without it nothing would write the buffer.
    let sync = sync
        || std::thread::Builder::new()
            .name("log-flush".into())
            .stack_size(64 * 1024)
            .spawn(|| {
                loop {
                    std::thread::sleep(FLUSH_EVERY);
                    flush();
                }
            })
            .is_err();
    if !sync {
        b.target(env_logger::Target::Pipe(Box::new(Deferred)));
    }
    if b.try_init().is_ok() && !sync {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            flush();
            previous(info);
        }));
    }
}

/// Collects a record's key-value fields into the JSON line.
struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl<'kvs> log::kv::VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        let key = key.as_str();
        if !self.0.contains_key(key) {
            self.0.insert(
                key.to_string(),
                serde_json::Value::String(value.to_string()),
            );
        }
        Ok(())
    }
}

/// `LOG_LEVEL` of k8s-mutate-image-and-policy-webhook (trace, debug, info,
/// warn, error, fatal, panic), honoured when `RUST_LOG` is not set.
fn legacy_level() -> Option<&'static str> {
    let v = std::env::var("LOG_LEVEL").ok()?;
    Some(match v.trim().to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "fatal" | "panic" => "error",
        _ => return None,
    })
}
