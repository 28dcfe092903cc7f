//! Process-wide counters, gauges and a latency histogram, rendered as
//! Prometheus text. Plain atomics: recording costs a few nanoseconds and no
//! lock; rendering reads them without stopping the world (values may be a
//! request apart, which Prometheus tolerates).

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Endpoints that are counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ImagePolicy,
    Validate,
    Mutate,
    Healthz,
    Readyz,
    Metrics,
    Other,
}

const ENDPOINTS: [Endpoint; 7] = [
    Endpoint::ImagePolicy,
    Endpoint::Validate,
    Endpoint::Mutate,
    Endpoint::Healthz,
    Endpoint::Readyz,
    Endpoint::Metrics,
    Endpoint::Other,
];

impl Endpoint {
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::ImagePolicy => "image_policy",
            Endpoint::Validate => "validate",
            Endpoint::Mutate => "mutate",
            Endpoint::Healthz => "healthz",
            Endpoint::Readyz => "readyz",
            Endpoint::Metrics => "metrics",
            Endpoint::Other => "other",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Denied,
    /// Answered, but the request could not be read (4xx, or a review that
    /// was refused as unreadable).
    Invalid,
    /// Not a review (health, metrics).
    Served,
}

const OUTCOMES: [Outcome; 4] = [
    Outcome::Allowed,
    Outcome::Denied,
    Outcome::Invalid,
    Outcome::Served,
];

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Invalid => "invalid",
            Outcome::Served => "served",
        }
    }
}

/// What was reloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    Certificate,
    Policy,
}

/// Prometheus text exposition (format 0.0.4), the one writer every
/// family on `/metrics` goes through.
#[derive(Default)]
pub struct Text(String);

impl Text {
    /// `# HELP` and `# TYPE` lines of a family.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        // Writing to a String cannot fail.
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    /// One sample, `name{labels} value`.
    pub fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl std::fmt::Display,
    ) -> &mut Self {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                // Label values may come from file names: escaped as the
                // exposition format says (backslash, quote, newline).
                let _ = write!(self.0, "{k}=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.0.push_str("\\\\"),
                        '"' => self.0.push_str("\\\""),
                        '\n' => self.0.push_str("\\n"),
                        c => self.0.push(c),
                    }
                }
                self.0.push('"');
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
        self
    }

    /// A family of one unlabelled sample.
    pub fn single(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        value: impl std::fmt::Display,
    ) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// A histogram's samples: `counts` per bucket of `bounds` and one more
    /// for +Inf (not cumulative), and the sum of what was observed.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
    ) -> &mut Self {
        let mut cumulative = 0;
        let bucket = format!("{name}_bucket");
        for (i, count) in counts.iter().enumerate() {
            cumulative += count;
            let le = bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), f64::to_string);
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, cumulative);
        }
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, cumulative)
    }

    pub fn finish(self) -> String {
        self.0
    }
}

/// Upper bounds (seconds) of the latency buckets: a review takes tens of
/// microseconds, the apiserver's patience is seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

#[derive(Default)]
struct Histogram {
    /// Cumulative counts are computed when rendering; these are per bucket,
    /// plus one for +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_nanos
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }
}

/// All metrics of the process.
#[derive(Default)]
pub struct Metrics {
    requests: [[AtomicU64; OUTCOMES.len()]; ENDPOINTS.len()],
    latency: [Histogram; ENDPOINTS.len()],
    /// [kind][ok, failed]
    reloads: [[AtomicU64; 2]; 2],
    cert_not_after: AtomicI64,
    open_connections: AtomicI64,
    busy_workers: AtomicI64,
    rejected_connections: AtomicU64,
    evicted_connections: AtomicU64,
    handshake_failures: AtomicU64,
    /// The policy in force: its file's hash (a label), for seeing which
    /// policy each replica holds after a ConfigMap change.
    policy_sha256: std::sync::Mutex<String>,
}

fn index<T: PartialEq>(all: &[T], x: T) -> usize {
    all.iter().position(|a| *a == x).unwrap_or(0)
}

impl Metrics {
    pub fn request(&self, ep: Endpoint, outcome: Outcome, took: Duration) {
        let e = index(&ENDPOINTS, ep);
        self.requests[e][index(&OUTCOMES, outcome)].fetch_add(1, Relaxed);
        self.latency[e].observe(took);
    }

    pub fn reload(&self, what: Reloaded, ok: bool) {
        let k = match what {
            Reloaded::Certificate => 0,
            Reloaded::Policy => 1,
        };
        self.reloads[k][usize::from(!ok)].fetch_add(1, Relaxed);
    }

    pub fn cert_not_after(&self) -> i64 {
        self.cert_not_after.load(Relaxed)
    }

    pub fn set_cert_not_after(&self, unix_secs: i64) {
        self.cert_not_after.store(unix_secs, Relaxed);
    }

    pub fn connection_opened(&self) {
        self.open_connections.fetch_add(1, Relaxed);
    }

    pub fn connection_closed(&self) {
        self.open_connections.fetch_sub(1, Relaxed);
    }

    pub fn open_connections(&self) -> i64 {
        self.open_connections.load(Relaxed)
    }

    pub fn worker_busy(&self, busy: bool) {
        self.busy_workers
            .fetch_add(if busy { 1 } else { -1 }, Relaxed);
    }

    pub fn connection_rejected(&self) {
        self.rejected_connections.fetch_add(1, Relaxed);
    }

    pub fn connection_evicted(&self) {
        self.evicted_connections.fetch_add(1, Relaxed);
    }

    pub fn handshake_failed(&self) {
        self.handshake_failures.fetch_add(1, Relaxed);
    }

    pub fn requests_total(&self, ep: Endpoint, outcome: Outcome) -> u64 {
        self.requests[index(&ENDPOINTS, ep)][index(&OUTCOMES, outcome)].load(Relaxed)
    }

    /// The policy now in force (the first hex digits of its file's hash).
    pub fn set_policy(&self, sha256: &str) {
        *self
            .policy_sha256
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = sha256.to_string();
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut t = Text::default();
        let policy = self
            .policy_sha256
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if !policy.is_empty() {
            let name = "image_bouncer_policy_info";
            t.family(
                name,
                "gauge",
                "The policy in force, by the first hex digits of its file's SHA-256.",
            )
            .sample(name, &[("sha256", &policy)], 1);
        }
        let name = "image_bouncer_requests_total";
        t.family(name, "counter", "HTTP requests by endpoint and outcome.");
        for (e, ep) in ENDPOINTS.iter().enumerate() {
            for (o, out) in OUTCOMES.iter().enumerate() {
                let v = self.requests[e][o].load(Relaxed);
                if v > 0 {
                    t.sample(
                        name,
                        &[("endpoint", ep.label()), ("outcome", out.label())],
                        v,
                    );
                }
            }
        }
        let name = "image_bouncer_request_duration_seconds";
        t.family(
            name,
            "histogram",
            "Time from a complete request to its response, by endpoint.",
        );
        for (e, ep) in ENDPOINTS.iter().enumerate() {
            let h = &self.latency[e];
            if h.count.load(Relaxed) == 0 {
                continue;
            }
            let counts: Vec<u64> = h.buckets.iter().map(|b| b.load(Relaxed)).collect();
            let sum = h.sum_nanos.load(Relaxed) as f64 / 1e9;
            t.histogram(name, &[("endpoint", ep.label())], &BUCKETS, &counts, sum);
        }
        let name = "image_bouncer_reloads_total";
        t.family(
            name,
            "counter",
            "Certificate and policy reloads by outcome.",
        );
        for (k, kind) in ["certificate", "policy"].iter().enumerate() {
            for (o, outcome) in ["success", "failure"].iter().enumerate() {
                let v = self.reloads[k][o].load(Relaxed);
                t.sample(name, &[("kind", kind), ("outcome", outcome)], v);
            }
        }
        let gauges: [(&str, &str, i64); 3] = [
            (
                "image_bouncer_certificate_expiry_timestamp_seconds",
                "Not-after time of the serving certificate (Unix seconds).",
                self.cert_not_after.load(Relaxed),
            ),
            (
                "image_bouncer_open_connections",
                "Client connections open now.",
                self.open_connections.load(Relaxed),
            ),
            (
                "image_bouncer_busy_workers",
                "Workers judging a request now.",
                self.busy_workers.load(Relaxed),
            ),
        ];
        for (name, help, v) in gauges {
            t.single(name, "gauge", help, v);
        }
        let counters: [(&str, &str, u64); 3] = [
            (
                "image_bouncer_rejected_connections_total",
                "New connections closed at once: the table was full and no open connection could be closed for them.",
                self.rejected_connections.load(Relaxed),
            ),
            (
                "image_bouncer_evicted_connections_total",
                "Open connections closed to make room (handshakes, idle keep-alives, stalled requests).",
                self.evicted_connections.load(Relaxed),
            ),
            (
                "image_bouncer_tls_handshake_failures_total",
                "TLS handshakes that failed, timed out or presented a refused client certificate.",
                self.handshake_failures.load(Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            t.single(name, "counter", help, v);
        }
        t.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_cumulative_buckets() {
        let m = Metrics::default();
        m.request(
            Endpoint::Validate,
            Outcome::Denied,
            Duration::from_micros(80),
        );
        m.request(
            Endpoint::Validate,
            Outcome::Denied,
            Duration::from_millis(3),
        );
        m.request(
            Endpoint::ImagePolicy,
            Outcome::Allowed,
            Duration::from_secs(2),
        );
        m.reload(Reloaded::Policy, false);
        m.set_cert_not_after(1_900_000_000);
        let text = m.render();
        for line in [
            "image_bouncer_requests_total{endpoint=\"validate\",outcome=\"denied\"} 2",
            "image_bouncer_requests_total{endpoint=\"image_policy\",outcome=\"allowed\"} 1",
            "image_bouncer_request_duration_seconds_bucket{endpoint=\"validate\",le=\"0.0001\"} 1",
            "image_bouncer_request_duration_seconds_bucket{endpoint=\"validate\",le=\"0.0025\"} 1",
            "image_bouncer_request_duration_seconds_bucket{endpoint=\"validate\",le=\"0.005\"} 2",
            "image_bouncer_request_duration_seconds_bucket{endpoint=\"image_policy\",le=\"1\"} 0",
            "image_bouncer_request_duration_seconds_bucket{endpoint=\"image_policy\",le=\"+Inf\"} 1",
            "image_bouncer_request_duration_seconds_count{endpoint=\"validate\"} 2",
            "image_bouncer_reloads_total{kind=\"policy\",outcome=\"failure\"} 1",
            "image_bouncer_certificate_expiry_timestamp_seconds 1900000000",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert_eq!(m.requests_total(Endpoint::Validate, Outcome::Denied), 2);
    }
}
