//! Prometheus metrics (`--metrics-addr`): HTTP traffic seen, and the
//! agent's own health, served as text exposition on `/metrics`.
//!
//! Label values come from traced processes (names, server names, methods):
//! each is bounded. Servers and processes get their own label while they are
//! among the busiest ([`TopK`]); the rest count as `other`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::lock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label values of one kind given their own series, at most.
pub const MAX_LABEL_VALUES: usize = 50;
/// Candidates counted to find the busiest (Space-Saving: an estimate whose
/// error is bounded by the smallest count kept).
const CANDIDATES: usize = 512;
/// Label value bytes kept (longer ones are cut).
const MAX_LABEL_LEN: usize = 128;

/// A file's TLS stack and whether it is captured (the coverage map).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CoverageLabels {
    pub stack: String,
    pub captured: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub process: String,
    pub server: String,
    /// The server's port (bounded like the server; client ports never
    /// are labels: one series per connection).
    pub server_port: String,
    pub method: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    pub process: String,
    pub server: String,
    pub server_port: String,
    pub method: String,
    pub status_class: String,
}

/// Labels of a database command's duration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DbLabels {
    pub process: String,
    /// `postgresql`, `redis`, `mysql`.
    pub system: String,
    /// `SELECT`, `GET`, ... (the busiest; the rest `other`).
    pub operation: String,
    /// `ok` or `error`.
    pub status: String,
}

/// The busiest values of one label: a value has its own series while its
/// estimated count is among the `MAX_LABEL_VALUES` highest of those kept.
#[derive(Default)]
pub struct TopK {
    counts: HashMap<String, u64>,
}

impl TopK {
    /// Counts `value` once and returns the label to use: itself, or
    /// `other`.
    pub fn label(&mut self, value: &str) -> String {
        let value = cut(value);
        if let Some(c) = self.counts.get_mut(&value) {
            *c += 1;
        } else if self.counts.len() < CANDIDATES {
            self.counts.insert(value.clone(), 1);
        } else {
            // Space-Saving: the new value takes the place of the least
            // counted one, inheriting its count plus one.
            let (least, n) = self
                .counts
                .iter()
                .min_by_key(|(_, c)| **c)
                .map(|(k, c)| (k.clone(), *c))
                .expect("full");
            self.counts.remove(&least);
            self.counts.insert(value.clone(), n + 1);
        }
        let mine = self.counts[&value];
        let above = self.counts.values().filter(|&&c| c > mine).count();
        if above < MAX_LABEL_VALUES {
            value
        } else {
            "other".to_string()
        }
    }
}

fn cut(v: &str) -> String {
    let mut end = v.len().min(MAX_LABEL_LEN);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v[..end].to_string()
}

/// A method as a label: the registered ones, else `_OTHER` (as the
/// OpenTelemetry conventions do).
pub fn method_label(m: Option<&str>) -> String {
    const KNOWN: &[&str] = &[
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    match m {
        Some(m) if KNOWN.contains(&m) => m.to_string(),
        Some(_) => "_OTHER".to_string(),
        None => "none".to_string(),
    }
}

/// Every metric the agent serves.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<DurationLabels, Histogram>,
    db_durations: Family<DbLabels, Histogram>,
    servers: Mutex<TopK>,
    operations: Mutex<TopK>,
    ports: Mutex<TopK>,
    processes: Mutex<TopK>,
    pub lost_records: Counter,
    pub output_dropped: Counter,
    pub pauses: Counter,
    pub pause_duration: Histogram,
    pub files_instrumented: Gauge,
    pub probes_attached: Gauge,
    tls_files: Family<CoverageLabels, Gauge>,
    pub otlp_export_failures: Counter,
    pub otlp_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<DurationLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.001, 2.0, 16))) as fn() -> Histogram,
        );
        let db_durations = Family::<DbLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0001, 2.0, 18))) as fn() -> Histogram,
        );
        let m = Metrics {
            registry: Registry::default(),
            requests,
            durations,
            db_durations,
            servers: Mutex::default(),
            operations: Mutex::default(),
            ports: Mutex::default(),
            processes: Mutex::default(),
            lost_records: Counter::default(),
            output_dropped: Counter::default(),
            pauses: Counter::default(),
            pause_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            files_instrumented: Gauge::default(),
            probes_attached: Gauge::default(),
            tls_files: Family::default(),
            otlp_export_failures: Counter::default(),
            otlp_dropped: Counter::default(),
        };
        registry.register(
            "plainsight_http_requests",
            "HTTP exchanges decoded, by process, TLS server name (or authority), method and status",
            m.requests.clone(),
        );
        registry.register(
            "plainsight_http_request_duration_seconds",
            "From the first byte of a request to the last byte of its response",
            m.durations.clone(),
        );
        registry.register(
            "plainsight_db_duration_seconds",
            "Database commands decoded (PostgreSQL, Redis, MySQL): from the first byte of a \
             command to the last byte of its answer, by process, system, operation and status",
            m.db_durations.clone(),
        );
        registry.register(
            "plainsight_lost_records",
            "Captured records lost: ring buffer full, or dropped by a slow output",
            m.lost_records.clone(),
        );
        registry.register(
            "plainsight_output_dropped",
            "Records dropped because the output could not keep up",
            m.output_dropped.clone(),
        );
        registry.register(
            "plainsight_pauses",
            "Processes held while their new files were inspected",
            m.pauses.clone(),
        );
        registry.register(
            "plainsight_pause_duration_seconds",
            "How long processes were held",
            m.pause_duration.clone(),
        );
        registry.register(
            "plainsight_files_instrumented",
            "Files with TLS probes attached now",
            m.files_instrumented.clone(),
        );
        registry.register(
            "plainsight_tls_files",
            "Files seen carrying TLS code, by stack and whether they are captured",
            m.tls_files.clone(),
        );
        registry.register(
            "plainsight_probes_attached",
            "Probes attached now",
            m.probes_attached.clone(),
        );
        registry.register(
            "plainsight_otlp_export_failures",
            "OTLP export attempts that failed (each is retried with backoff)",
            m.otlp_export_failures.clone(),
        );
        registry.register(
            "plainsight_otlp_dropped",
            "Spans and log records dropped: export queue full, or not sent by exit",
            m.otlp_dropped.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts one file carrying TLS code (the stacks are a fixed set: no
    /// bound needed on the labels).
    pub fn tls_file(&self, stack: &'static str, captured: bool) {
        self.tls_files
            .get_or_create(&CoverageLabels {
                stack: stack.to_string(),
                captured: captured.to_string(),
            })
            .inc();
    }

    /// Counts one decoded exchange (`server_port`: the server's port, when
    /// its socket is known).
    pub fn exchange(
        &self,
        process: &str,
        (server, server_port): (Option<&str>, Option<u16>),
        method: Option<&str>,
        status: Option<u16>,
        seconds: Option<f64>,
    ) {
        let process = lock(&self.processes).label(process);
        let server = lock(&self.servers).label(server.unwrap_or("unknown"));
        let server_port = match server_port {
            Some(p) => lock(&self.ports).label(&p.to_string()),
            None => "unknown".to_string(),
        };
        let method = method_label(method);
        let (status, class) = match status {
            Some(s) => (s.to_string(), format!("{}xx", s / 100)),
            None => ("none".to_string(), "none".to_string()),
        };
        self.requests
            .get_or_create(&RequestLabels {
                process: process.clone(),
                server: server.clone(),
                server_port: server_port.clone(),
                method: method.clone(),
                status,
            })
            .inc();
        if let Some(s) = seconds {
            self.durations
                .get_or_create(&DurationLabels {
                    process,
                    server,
                    server_port,
                    method,
                    status_class: class,
                })
                .observe(s);
        }
    }

    /// Times one answered database command.
    pub fn db(&self, process: &str, system: &str, operation: Option<&str>, ok: bool, seconds: f64) {
        let process = lock(&self.processes).label(process);
        let operation = lock(&self.operations).label(operation.unwrap_or("none"));
        self.db_durations
            .get_or_create(&DbLabels {
                process,
                system: system.to_string(),
                operation,
                status: if ok { "ok" } else { "error" }.to_string(),
            })
            .observe(seconds);
    }

    /// Sets a counter that mirrors a total kept elsewhere.
    pub fn set_total(c: &Counter, total: u64) {
        let now = c.get();
        if total > now {
            c.inc_by(total - now);
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

/// Longest request head read from a scraper.
const MAX_REQUEST: usize = 8 << 10;
/// A scraper gets this long to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Scrapes served (for the tests' and the exit report's sake).
pub static SCRAPES: AtomicU64 = AtomicU64::new(0);

/// Serves `/metrics` on `addr` from its own thread: one request per
/// connection, each bounded in size and time.
pub fn serve(addr: SocketAddr, metrics: std::sync::Arc<Metrics>) -> Result<SocketAddr> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("--metrics-addr {addr}: cannot listen"))?;
    let bound = listener.local_addr().context("metrics listener address")?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                if let Err(e) = answer(conn, &metrics) {
                    log::debug!("metrics request: {e}");
                }
            }
        })
        .context("spawning the metrics thread")?;
    Ok(bound)
}

fn answer(mut conn: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    conn.set_read_timeout(Some(READ_TIMEOUT))?;
    conn.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut n = 0;
    while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let line = head.lines().next().unwrap_or_default();
    let openmetrics = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("accept:") && l.contains("application/openmetrics-text")
    });
    let (status, ctype, body) = if line.starts_with("GET /metrics ") || line == "GET /metrics" {
        SCRAPES.fetch_add(1, Ordering::Relaxed);
        if openmetrics {
            (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                metrics.encode(),
            )
        } else {
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                text_format(&metrics.encode()),
            )
        }
    } else {
        (
            "404 Not Found",
            "text/plain",
            "only /metrics here\n".to_string(),
        )
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())
}

/// OpenMetrics text as the Prometheus text format 0.0.4, for scrapers and
/// tools that do not ask for OpenMetrics: a counter's HELP and TYPE name its
/// samples (`_total`), and there is no `# EOF` or `# UNIT`.
pub fn text_format(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for l in openmetrics.lines() {
        if l == "# EOF" || l.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, l.strip_prefix(p)?)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{p}{name}_total {tail}\n"));
                } else {
                    out.push_str(l);
                    out.push('\n');
                }
            }
            None => {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busiest_values_keep_their_label_the_rest_are_other() {
        let mut t = TopK::default();
        for i in 0..MAX_LABEL_VALUES {
            for _ in 0..3 {
                assert_eq!(t.label(&format!("s{i}")), format!("s{i}"));
            }
        }
        // A new value ranks below the 50 busier ones.
        assert_eq!(t.label("late"), "other");
        // Once busier than the rest, it has its own label.
        for _ in 0..3 {
            t.label("late");
        }
        assert_eq!(t.label("late"), "late");
        // Bounded however many values come.
        for i in 0..10_000 {
            t.label(&format!("flood{i}"));
        }
        assert!(t.counts.len() <= CANDIDATES);
        assert_eq!(t.label(&"x".repeat(1000)).len(), MAX_LABEL_LEN);
    }

    #[test]
    fn exposition_has_the_exchange() {
        let m = Metrics::new();
        m.exchange(
            "curl",
            (Some("api.acme.com"), Some(8443)),
            Some("GET"),
            Some(200),
            Some(0.004),
        );
        m.exchange(
            "curl",
            (Some("api.acme.com"), None),
            Some("BREW"),
            None,
            None,
        );
        let text = m.encode();
        assert!(text.contains(
            "plainsight_http_requests_total{process=\"curl\",server=\"api.acme.com\",server_port=\"8443\",method=\"GET\",status=\"200\"} 1\n"
        ), "{text}");
        assert!(text.contains(
            "plainsight_http_requests_total{process=\"curl\",server=\"api.acme.com\",server_port=\"unknown\",method=\"_OTHER\",status=\"none\"} 1\n"
        ), "{text}");
        assert!(text.contains(
            "plainsight_http_request_duration_seconds_count{process=\"curl\",server=\"api.acme.com\",server_port=\"8443\",method=\"GET\",status_class=\"2xx\"} 1\n"
        ), "{text}");
        assert!(text.ends_with("# EOF\n"));
        let old = text_format(&text);
        assert!(
            old.contains("# TYPE plainsight_http_requests_total counter\n"),
            "{old}"
        );
        assert!(
            old.contains("# HELP plainsight_http_requests_total HTTP exchanges"),
            "{old}"
        );
        assert!(
            old.contains("# TYPE plainsight_pause_duration_seconds histogram\n"),
            "{old}"
        );
        assert!(!old.contains("# EOF"));
    }

    #[test]
    fn exposition_has_database_durations() {
        let m = Metrics::new();
        m.db("psql", "postgresql", Some("SELECT"), true, 0.0003);
        m.db("psql", "postgresql", Some("SELECT"), false, 0.0003);
        let text = m.encode();
        assert!(
            text.contains(
                "plainsight_db_duration_seconds_count{process=\"psql\",system=\"postgresql\",\
                 operation=\"SELECT\",status=\"ok\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("status=\"error\""), "{text}");
    }
}
