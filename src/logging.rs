//! Log lines on stderr, as text or JSON lines, with UTC timestamps.
//!
//! `RUST_LOG` overrides the level (`info`, or `debug` with `--debug`).
//! Request bodies are only ever logged at `trace` (see `server/routes.rs`).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Installs the logger once; later calls do nothing.
pub fn init(format: Format, debug: bool) {
    // --debug is about this program: libraries (rustls) stay at info.
    let level = if debug {
        "info,image_bouncer=debug".to_string()
    } else {
        legacy_level().unwrap_or("info").to_string()
    };
    let env = env_logger::Env::default().default_filter_or(level);
    let mut b = env_logger::Builder::from_env(env);
    b.format(move |buf, record| {
        let ts = timestamp(SystemTime::now());
        match format {
            Format::Text => writeln!(buf, "{ts} {:<5} {}", record.level(), record.args()),
            Format::Json => {
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
    let _ = b.try_init();
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

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-24T05:43:00.123Z`.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_930_980_123);
        assert_eq!(timestamp(t), "2026-11-29T05:43:00.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000Z");
    }
}
