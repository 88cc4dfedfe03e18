//! OTLP export: one span per decoded HTTP exchange (OpenTelemetry HTTP and
//! RPC semantic conventions), and with `--otlp-logs` its headers and bodies
//! as log records tied to the span, sent over gRPC or HTTP/protobuf to a
//! collector.
//!
//! Export never blocks capture: the output thread only `try_send`s into a
//! bounded queue (full: dropped and counted); one exporter thread batches,
//! sends, and retries with backoff while the collector is down.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use opentelemetry_proto::tonic::collector::logs::v1::{
    logs_service_client::LogsServiceClient, ExportLogsServiceRequest,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_client::TraceServiceClient, ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;

use super::metrics::Metrics;
use crate::decode::{Exchange, HttpMessage, Protocol};
use crate::record::Clock;

/// How the collector is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpProtocol {
    #[value(name = "grpc")]
    Grpc,
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

/// Export settings (command line and the standard OTEL_* variables).
#[derive(Debug, Clone)]
pub struct OtlpSettings {
    /// gRPC: the collector's URL; HTTP: the base URL, `/v1/traces` and
    /// `/v1/logs` are added.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// OTEL_EXPORTER_OTLP_HEADERS, sent with every export.
    pub headers: Vec<(String, String)>,
    /// OTEL_SERVICE_NAME: every span's service.name (else the process's
    /// executable name).
    pub service_name: Option<String>,
    /// OTEL_RESOURCE_ATTRIBUTES, added to every resource.
    pub resource: Vec<(String, String)>,
    pub logs: bool,
}

/// Spans (and their log records) waiting in the export queue, at most.
pub const QUEUE: usize = 4096;
/// Bytes of spans and log records (their protobuf size) queued or being
/// exported, at most: with --otlp-logs one exchange may carry two bodies of
/// 1 MiB, so the count of items alone would let a collector outage hold
/// gigabytes. Past it, new exchanges are dropped and counted.
pub const MAX_QUEUED_BYTES: usize = 64 << 20;
/// Spans per export request, at most.
const BATCH: usize = 512;
/// A batch is sent this long after its first span at the latest.
const BATCH_DELAY: Duration = Duration::from_millis(500);
/// Retry backoff: from the first to the longest wait.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// One export's time limit.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// At exit, what is queued gets this long to be sent.
const EXIT_FLUSH: Duration = Duration::from_secs(3);

/// Parses `k1=v1,k2=v2` (OTEL_EXPORTER_OTLP_HEADERS,
/// OTEL_RESOURCE_ATTRIBUTES), values percent-decoded.
pub fn parse_pairs(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            let k = percent_decode(k.trim());
            (!k.is_empty()).then(|| (k, percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// One exchange for export.
pub struct Item {
    pub pid: u32,
    pub comm: String,
    /// The full container id, for a process in a container, and its
    /// Kubernetes pod's UID.
    pub container: Option<String>,
    pub pod_uid: Option<String>,
    pub span: Span,
    pub logs: Vec<LogRecord>,
    /// Its protobuf size, counted in `ExportStats::queued_bytes` while it
    /// waits (set by `OtlpSink::send`).
    size: usize,
}

/// The output thread's end of the exporter.
#[derive(Clone)]
pub struct OtlpSink {
    tx: Sender<Item>,
    pub logs: bool,
    stats: Arc<ExportStats>,
    metrics: Option<Arc<Metrics>>,
}

/// What the exporter did, for the exit report and the metrics.
#[derive(Default)]
pub struct ExportStats {
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
    pub failures: AtomicU64,
    /// Bytes of the items queued or in the batch being exported.
    queued_bytes: std::sync::atomic::AtomicUsize,
}

impl OtlpSink {
    /// Queues one exchange; never waits. Full (in items or in bytes):
    /// dropped and counted.
    pub fn send(&self, mut item: Item) {
        let n = 1 + item.logs.len() as u64;
        item.size =
            item.span.encoded_len() + item.logs.iter().map(|l| l.encoded_len()).sum::<usize>();
        let size = item.size;
        let queued = &self.stats.queued_bytes;
        let fits = queued.load(Ordering::Relaxed) + size <= MAX_QUEUED_BYTES;
        if fits {
            queued.fetch_add(size, Ordering::Relaxed);
            match self.tx.try_send(item) {
                Ok(()) => return,
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    queued.fetch_sub(size, Ordering::Relaxed);
                }
            }
        }
        self.stats.dropped.fetch_add(n, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.otlp_dropped.inc_by(n);
        }
    }
}

/// The running exporter.
pub struct Otlp {
    pub sink: OtlpSink,
    thread: std::thread::JoinHandle<()>,
    pub stats: Arc<ExportStats>,
    closing: Arc<std::sync::atomic::AtomicBool>,
}

impl Otlp {
    /// Starts the exporter thread. Nothing is connected yet: a collector
    /// that is down only shows as failed exports.
    pub fn start(s: OtlpSettings, metrics: Option<Arc<Metrics>>) -> Result<Otlp> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let stats = Arc::new(ExportStats::default());
        let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client = Client::new(&s)?;
        let exporter = Exporter {
            rx,
            client,
            settings: s.clone(),
            stats: stats.clone(),
            metrics: metrics.clone(),
            host: host_name(),
            warned: false,
            closing: closing.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("otlp".into())
            .spawn(move || exporter.run())
            .context("spawning the OTLP exporter thread")?;
        Ok(Otlp {
            sink: OtlpSink {
                tx,
                logs: s.logs,
                stats: stats.clone(),
                metrics,
            },
            thread,
            stats,
            closing,
        })
    }

    /// Waits for the exporter to send what is queued (bounded: it gives up
    /// after `EXIT_FLUSH`), once every sink is dropped.
    pub fn finish(self) {
        drop(self.sink);
        self.closing.store(true, Ordering::Release);
        let until = Instant::now() + EXIT_FLUSH + Duration::from_secs(1);
        while !self.thread.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.thread.is_finished() {
            let _ = self.thread.join();
        }
        eprintln!(
            "plainsight: OTLP: {} spans exported, {} spans and log records dropped, {} failed exports",
            self.stats.exported.load(Ordering::Relaxed),
            self.stats.dropped.load(Ordering::Relaxed),
            self.stats.failures.load(Ordering::Relaxed)
        );
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A transport to the collector.
enum Client {
    Grpc {
        rt: tokio::runtime::Runtime,
        channel: tonic::transport::Channel,
        headers: tonic::metadata::MetadataMap,
    },
    Http {
        agent: ureq::Agent,
        traces: String,
        logs: String,
        headers: Vec<(String, String)>,
    },
}

/// Whether a failed export may succeed later.
enum Failure {
    Retry(String),
    Drop(String),
}

impl Client {
    fn new(s: &OtlpSettings) -> Result<Client> {
        match s.protocol {
            OtlpProtocol::Grpc => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("OTLP gRPC runtime")?;
                let endpoint = tonic::transport::Endpoint::from_shared(s.endpoint.clone())
                    .with_context(|| format!("OTLP endpoint {:?}", s.endpoint))?
                    .timeout(EXPORT_TIMEOUT)
                    .connect_timeout(Duration::from_secs(5));
                let endpoint = if s.endpoint.starts_with("https://") {
                    endpoint
                        .tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots())
                        .context("OTLP TLS")?
                } else {
                    endpoint
                };
                let channel = {
                    let _guard = rt.enter();
                    endpoint.connect_lazy()
                };
                let mut headers = tonic::metadata::MetadataMap::new();
                for (k, v) in &s.headers {
                    let key = tonic::metadata::MetadataKey::from_bytes(k.to_lowercase().as_bytes())
                        .with_context(|| format!("OTLP header name {k:?}"))?;
                    let val = v
                        .parse()
                        .with_context(|| format!("OTLP header value of {k:?}"))?;
                    headers.insert(key, val);
                }
                Ok(Client::Grpc {
                    rt,
                    channel,
                    headers,
                })
            }
            OtlpProtocol::HttpProtobuf => {
                let base = s.endpoint.trim_end_matches('/');
                if !(base.starts_with("http://") || base.starts_with("https://")) {
                    bail!(
                        "OTLP endpoint {:?}: not an http:// or https:// URL",
                        s.endpoint
                    );
                }
                let agent = ureq::Agent::config_builder()
                    .timeout_global(Some(EXPORT_TIMEOUT))
                    .http_status_as_error(false)
                    .build()
                    .into();
                Ok(Client::Http {
                    agent,
                    traces: format!("{base}/v1/traces"),
                    logs: format!("{base}/v1/logs"),
                    headers: s.headers.clone(),
                })
            }
        }
    }

    fn export_traces(&self, req: ExportTraceServiceRequest) -> Result<(), Failure> {
        match self {
            Client::Grpc {
                rt,
                channel,
                headers,
            } => {
                let mut r = tonic::Request::new(req);
                *r.metadata_mut() = headers.clone();
                let mut c = TraceServiceClient::new(channel.clone());
                rt.block_on(c.export(r)).map(|_| ()).map_err(grpc_failure)
            }
            Client::Http {
                agent,
                traces,
                headers,
                ..
            } => http_post(agent, traces, headers, req.encode_to_vec()),
        }
    }

    fn export_logs(&self, req: ExportLogsServiceRequest) -> Result<(), Failure> {
        match self {
            Client::Grpc {
                rt,
                channel,
                headers,
            } => {
                let mut r = tonic::Request::new(req);
                *r.metadata_mut() = headers.clone();
                let mut c = LogsServiceClient::new(channel.clone());
                rt.block_on(c.export(r)).map(|_| ()).map_err(grpc_failure)
            }
            Client::Http {
                agent,
                logs,
                headers,
                ..
            } => http_post(agent, logs, headers, req.encode_to_vec()),
        }
    }
}

fn grpc_failure(s: tonic::Status) -> Failure {
    use tonic::Code::*;
    let text = format!("gRPC {:?}: {}", s.code(), s.message());
    match s.code() {
        Unavailable | DeadlineExceeded | ResourceExhausted | Aborted | Cancelled | Unknown => {
            Failure::Retry(text)
        }
        _ => Failure::Drop(text),
    }
}

fn http_post(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Result<(), Failure> {
    let mut req = agent
        .post(url)
        .header("Content-Type", "application/x-protobuf");
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    match req.send(&body[..]) {
        Ok(resp) => {
            let status = resp.status().as_u16();
            match status {
                200..=299 => Ok(()),
                429 | 502 | 503 | 504 => Err(Failure::Retry(format!("HTTP {status} from {url}"))),
                _ => Err(Failure::Drop(format!("HTTP {status} from {url}"))),
            }
        }
        Err(e) => Err(Failure::Retry(format!("{url}: {e}"))),
    }
}

struct Exporter {
    rx: Receiver<Item>,
    client: Client,
    settings: OtlpSettings,
    stats: Arc<ExportStats>,
    metrics: Option<Arc<Metrics>>,
    host: String,
    warned: bool,
    /// The agent is stopping: a failed export is not retried past the
    /// exit flush.
    closing: Arc<std::sync::atomic::AtomicBool>,
}

impl Exporter {
    fn run(mut self) {
        let mut closed = false;
        while !closed {
            let mut batch = Vec::new();
            match self.rx.recv() {
                Ok(i) => batch.push(i),
                Err(_) => break,
            }
            let until = Instant::now() + BATCH_DELAY;
            while batch.len() < BATCH {
                match self.rx.recv_deadline(until) {
                    Ok(i) => batch.push(i),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            self.send_with_retry(batch, None);
        }
        // The agent stops: what is still queued gets a bounded last try.
        let deadline = Instant::now() + EXIT_FLUSH;
        let mut rest: Vec<Item> = self.rx.try_iter().collect();
        while !rest.is_empty() {
            let batch: Vec<Item> = rest.drain(..rest.len().min(BATCH)).collect();
            self.send_with_retry(batch, Some(deadline));
        }
    }

    /// Sends a batch (see `send_batch`); its bytes leave the queue's count
    /// once it is sent or dropped.
    fn send_with_retry(&mut self, batch: Vec<Item>, deadline: Option<Instant>) {
        let bytes: usize = batch.iter().map(|i| i.size).sum();
        self.send_batch(batch, deadline);
        self.stats.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Sends a batch, retrying with backoff while the failure may pass;
    /// with a deadline (exit), gives up there and counts the batch dropped.
    fn send_batch(&mut self, batch: Vec<Item>, deadline: Option<Instant>) {
        let spans = batch.len() as u64;
        let records = spans + batch.iter().map(|i| i.logs.len() as u64).sum::<u64>();
        let (traces, logs) = self.requests(batch);
        let mut wait = BACKOFF_FIRST;
        let mut traces_sent = false;
        loop {
            let mut r = if traces_sent {
                Ok(())
            } else {
                self.client.export_traces(traces.clone())
            };
            if r.is_ok() {
                traces_sent = true;
                if let Some(l) = &logs {
                    r = self.client.export_logs(l.clone());
                }
            }
            let why = match r {
                Ok(()) => {
                    self.stats.exported.fetch_add(spans, Ordering::Relaxed);
                    if self.warned {
                        log::info!("OTLP: exporting to {} again", self.settings.endpoint);
                        self.warned = false;
                    }
                    return;
                }
                Err(Failure::Drop(why)) => {
                    self.failed(&why);
                    self.dropped(records);
                    return;
                }
                Err(Failure::Retry(why)) => why,
            };
            self.failed(&why);
            let until = Instant::now() + wait;
            while Instant::now() < until && !self.closing.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(50).min(wait));
            }
            let closing = self.closing.load(Ordering::Acquire);
            if closing || deadline.is_some_and(|d| Instant::now() + wait > d) {
                self.dropped(records);
                return;
            }
            wait = (wait * 2).min(BACKOFF_MAX);
        }
    }

    fn failed(&mut self, why: &str) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.otlp_export_failures.inc();
        }
        if !self.warned {
            self.warned = true;
            log::warn!(
                "OTLP export to {} failed ({}): retrying with backoff; spans beyond {QUEUE} or {} MiB queued are dropped and counted",
                self.settings.endpoint,
                crate::escape::terminal(why),
                MAX_QUEUED_BYTES >> 20
            );
        }
    }

    fn dropped(&self, n: u64) {
        self.stats.dropped.fetch_add(n, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.otlp_dropped.inc_by(n);
        }
    }

    /// The export requests of a batch, one resource per process.
    fn requests(
        &self,
        batch: Vec<Item>,
    ) -> (ExportTraceServiceRequest, Option<ExportLogsServiceRequest>) {
        type Spans = (Vec<Span>, Vec<LogRecord>);
        type Key = (u32, String, Option<String>, Option<String>);
        let mut by_process: BTreeMap<Key, Spans> = BTreeMap::new();
        for i in batch {
            let e = by_process
                .entry((i.pid, i.comm, i.container, i.pod_uid))
                .or_default();
            e.0.push(i.span);
            e.1.extend(i.logs);
        }
        let mut traces = ExportTraceServiceRequest::default();
        let mut logs = ExportLogsServiceRequest::default();
        for ((pid, comm, container, pod), (spans, records)) in by_process {
            let resource = self.resource(pid, &comm, container, pod);
            traces.resource_spans.push(ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            });
            if !records.is_empty() {
                logs.resource_logs.push(ResourceLogs {
                    resource: Some(resource),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(scope()),
                        log_records: records,
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                });
            }
        }
        let logs = (self.settings.logs && !logs.resource_logs.is_empty()).then_some(logs);
        (traces, logs)
    }

    fn resource(
        &self,
        pid: u32,
        comm: &str,
        container: Option<String>,
        pod: Option<String>,
    ) -> Resource {
        let service = self
            .settings
            .service_name
            .clone()
            .unwrap_or_else(|| comm.to_string());
        let mut attributes = vec![
            kv("service.name", service),
            kv_int("process.pid", i64::from(pid)),
            kv("process.executable.name", comm.to_string()),
            kv("host.name", self.host.clone()),
        ];
        if let Some(c) = container {
            attributes.push(kv("container.id", c));
        }
        if let Some(p) = pod {
            attributes.push(kv("k8s.pod.uid", p));
        }
        for (k, v) in &self.settings.resource {
            if !attributes.iter().any(|a| &a.key == k) {
                attributes.push(kv(k, v.clone()));
            }
        }
        Resource {
            attributes,
            ..Default::default()
        }
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "plainsight".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

fn kv(key: &str, v: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v)),
        }),
        ..Default::default()
    }
}

fn kv_int(key: &str, v: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Random nonzero ids (getrandom(2)).
fn random_id<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    loop {
        // SAFETY: fills b, at most N bytes.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), N, 0) };
        if n == N as isize && b.iter().any(|&x| x != 0) {
            return b;
        }
    }
}

/// `traceparent` (W3C): version 00, trace id, parent id.
fn traceparent(req: &HttpMessage) -> Option<([u8; 16], [u8; 8])> {
    let v = req
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("traceparent"))?;
    let s = std::str::from_utf8(&v.1).ok()?.trim();
    let mut parts = s.split('-');
    let (ver, tid, pid) = (parts.next()?, parts.next()?, parts.next()?);
    if ver != "00" || tid.len() != 32 || pid.len() != 16 {
        return None;
    }
    let hex = |s: &str, out: &mut [u8]| -> Option<()> {
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(())
    };
    let (mut t, mut p) = ([0u8; 16], [0u8; 8]);
    hex(tid, &mut t)?;
    hex(pid, &mut p)?;
    (t != [0; 16] && p != [0; 8]).then_some((t, p))
}

fn header<'a>(m: Option<&'a HttpMessage>, name: &str) -> Option<&'a [u8]> {
    m?.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// Host and port of an authority (`host`, `host:port`, `[v6]:port`).
fn split_authority(a: &str) -> (String, Option<u16>) {
    if let Some(rest) = a.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once(']') {
            return (
                h.to_string(),
                p.strip_prefix(':').and_then(|p| p.parse().ok()),
            );
        }
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse().ok()),
        _ => (a.to_string(), None),
    }
}

/// What one exchange was, from the captured process's side.
pub struct Seen<'a> {
    pub pid: u32,
    pub comm: &'a str,
    pub sni: Option<&'a str>,
    pub container: Option<&'a str>,
    pub pod_uid: Option<&'a str>,
    /// The captured process sent the request.
    pub client: bool,
    /// Its connection's socket, when known.
    pub endpoints: Option<&'a crate::record::Endpoints>,
    pub exchange: &'a Exchange,
}

/// url.*, server.* and client.*: the URL a client asked for, or the path
/// and query a server was asked; the server's name and port (from the
/// request, else the socket) and the client's address and port (a
/// server's peer).
fn url_attributes(s: &Seen<'_>, attrs: &mut Vec<KeyValue>) {
    let ex = s.exchange;
    let authority = ex.authority.as_deref().or(s.sni);
    let (mut host, mut port) = authority.map(split_authority).unwrap_or_default();
    let e = s.endpoints;
    let (local, peer) = (e.and_then(|e| e.local), e.and_then(|e| e.peer));
    let server_end = if s.client { peer } else { local };
    if port.is_none() {
        port = server_end.map(|a| a.port());
    }
    if host.is_empty() {
        host = server_end.map(|a| a.ip().to_string()).unwrap_or_default();
    }
    let path = ex.path.as_deref().unwrap_or("");
    if s.client {
        if let Some(a) = authority {
            attrs.push(kv("url.full", format!("https://{a}{path}")));
        }
        if !host.is_empty() {
            attrs.push(kv("server.address", host));
        }
        attrs.push(kv_int("server.port", i64::from(port.unwrap_or(443))));
    } else {
        let (p, q) = path.split_once('?').unwrap_or((path, ""));
        attrs.push(kv("url.path", p.to_string()));
        if !q.is_empty() {
            attrs.push(kv("url.query", q.to_string()));
        }
        attrs.push(kv("url.scheme", "https".into()));
        if !host.is_empty() {
            attrs.push(kv("server.address", host));
        }
        if let Some(p) = port {
            attrs.push(kv_int("server.port", i64::from(p)));
        }
        if let Some(c) = peer {
            attrs.push(kv("client.address", c.ip().to_string()));
            attrs.push(kv_int("client.port", i64::from(c.port())));
        }
    }
    network_attributes(e, attrs);
}

/// network.*: the immediate peer, the transport and the IP version.
fn network_attributes(e: Option<&crate::record::Endpoints>, attrs: &mut Vec<KeyValue>) {
    let Some(e) = e else { return };
    if let Some(p) = e.peer {
        attrs.push(kv("network.peer.address", p.ip().to_string()));
        attrs.push(kv_int("network.peer.port", i64::from(p.port())));
    }
    attrs.push(kv("network.transport", e.transport.as_str().into()));
    if let Some(t) = e.network_type() {
        attrs.push(kv("network.type", t.into()));
    }
}

/// The span of an exchange (OpenTelemetry HTTP / RPC conventions) and, if
/// asked, log records of its messages tied to it.
pub fn item(s: &Seen<'_>, clock: &Clock, with_logs: bool) -> Item {
    let ex = s.exchange;
    let req = ex.request.as_ref();
    let resp = ex.response.as_ref();
    let start = req.or(resp).map_or(0, |m| m.ts_first_ns);
    let end = resp.or(req).map_or(start, |m| m.ts_last_ns).max(start);
    let (trace_id, parent) = match req.and_then(traceparent) {
        Some((t, p)) => (t.to_vec(), p.to_vec()),
        None => (random_id::<16>().to_vec(), Vec::new()),
    };
    let span_id = random_id::<8>().to_vec();
    let mut attrs = Vec::new();
    let known = ex
        .method
        .as_deref()
        .map(|m| super::metrics::method_label(Some(m)));
    if let (Some(m), Some(k)) = (ex.method.as_deref(), known.as_deref()) {
        attrs.push(kv("http.request.method", k.to_string()));
        if k == "_OTHER" {
            attrs.push(kv("http.request.method_original", m.to_string()));
        }
    }
    url_attributes(s, &mut attrs);
    if let Some(st) = ex.status {
        attrs.push(kv_int("http.response.status_code", i64::from(st)));
    }
    let version = match ex.protocol {
        Protocol::Http1 => "1.1",
        Protocol::Http2 => "2",
    };
    attrs.push(kv("network.protocol.name", "http".into()));
    attrs.push(kv("network.protocol.version", version.into()));
    if let Some(ua) = header(req, "user-agent") {
        attrs.push(kv(
            "user_agent.original",
            String::from_utf8_lossy(ua).into_owned(),
        ));
    }
    if let Some(sni) = s.sni {
        attrs.push(kv("tls.server.name", sni.to_string()));
    }
    let mut name = ex.method.clone().map_or("HTTP".to_string(), |_| {
        known
            .clone()
            .filter(|k| k != "_OTHER")
            .unwrap_or("HTTP".into())
    });
    let mut error = error_type(s.client, ex);
    if let Some(g) = &ex.grpc {
        attrs.push(kv("rpc.system", "grpc".into()));
        attrs.push(kv("rpc.service", g.service.clone()));
        attrs.push(kv("rpc.method", g.method.clone()));
        if let Some(code) = g.status {
            attrs.push(kv_int("rpc.grpc.status_code", i64::from(code)));
            if code != 0 && error.is_none() {
                error = Some(code.to_string());
            }
        }
        name = format!("{}/{}", g.service, g.method);
    }
    let status = match &error {
        Some(e) => {
            attrs.push(kv("error.type", e.clone()));
            Some(Status {
                code: StatusCode::Error as i32,
                message: String::new(),
            })
        }
        None => None,
    };
    let span = Span {
        trace_id: trace_id.clone(),
        span_id: span_id.clone(),
        parent_span_id: parent,
        name,
        kind: if s.client {
            SpanKind::Client as i32
        } else {
            SpanKind::Server as i32
        },
        start_time_unix_nano: unix_ns(clock.wall(start)),
        end_time_unix_nano: unix_ns(clock.wall(end)),
        attributes: attrs,
        status,
        ..Default::default()
    };
    let logs = if with_logs {
        [("http.request", req), ("http.response", resp)]
            .into_iter()
            .filter_map(|(event, m)| Some(log_record(event, m?, clock, &trace_id, &span_id)))
            .collect()
    } else {
        Vec::new()
    };
    Item {
        pid: s.pid,
        comm: s.comm.to_string(),
        container: s.container.map(str::to_string),
        pod_uid: s.pod_uid.map(str::to_string),
        size: 0,
        span,
        logs,
    }
}

/// What one database command was, from the captured process's side.
pub struct DbSeen<'a> {
    pub pid: u32,
    pub comm: &'a str,
    pub container: Option<&'a str>,
    pub pod_uid: Option<&'a str>,
    /// The captured process sent the command.
    pub client: bool,
    pub endpoints: Option<&'a crate::record::Endpoints>,
    pub query: &'a crate::decode::db::DbQuery,
}

/// The span of a database command (OpenTelemetry database conventions):
/// `db.system.name`, `db.operation.name`, `db.query.text` (as
/// `--db-query-text` shows it), `db.response.status_code` and `error.type`
/// on failure, `db.response.returned_rows`, `server.address`/`server.port`
/// (the socket's server end), the network peer.
pub fn db_item(s: &DbSeen<'_>, clock: &Clock) -> Item {
    use crate::decode::db::DbStatus;
    let q = s.query;
    let mut attrs = vec![kv("db.system.name", q.system.as_str().into())];
    if let Some(ns) = &q.namespace {
        attrs.push(kv("db.namespace", ns.clone()));
    }
    if let Some(op) = &q.operation {
        attrs.push(kv("db.operation.name", op.clone()));
    }
    if let Some(text) = &q.query {
        attrs.push(kv("db.query.text", text.clone()));
    }
    let e = s.endpoints;
    let (local, peer) = (e.and_then(|e| e.local), e.and_then(|e| e.peer));
    let server_end = if s.client { peer } else { local };
    if let Some(a) = server_end {
        attrs.push(kv("server.address", a.ip().to_string()));
        attrs.push(kv_int("server.port", i64::from(a.port())));
    }
    if let (false, Some(c)) = (s.client, peer) {
        attrs.push(kv("client.address", c.ip().to_string()));
        attrs.push(kv_int("client.port", i64::from(c.port())));
    }
    network_attributes(e, &mut attrs);
    if let Some(rows) = q.rows {
        attrs.push(kv_int("db.response.returned_rows", rows as i64));
    }
    let status = match q.status {
        Some(DbStatus::Error) => {
            let code = q.error_code.clone().unwrap_or_else(|| "_OTHER".into());
            attrs.push(kv("db.response.status_code", code.clone()));
            attrs.push(kv("error.type", code));
            Some(Status {
                code: StatusCode::Error as i32,
                message: q.error.clone().unwrap_or_default(),
            })
        }
        None => {
            attrs.push(kv("error.type", "incomplete".into()));
            None
        }
        Some(DbStatus::Ok) => None,
    };
    let span = Span {
        trace_id: random_id::<16>().to_vec(),
        span_id: random_id::<8>().to_vec(),
        name: q
            .operation
            .clone()
            .unwrap_or_else(|| q.system.as_str().to_string()),
        kind: if s.client {
            SpanKind::Client as i32
        } else {
            SpanKind::Server as i32
        },
        start_time_unix_nano: unix_ns(clock.wall(q.ts_first_ns)),
        end_time_unix_nano: unix_ns(clock.wall(q.ts_last_ns.max(q.ts_first_ns))),
        attributes: attrs,
        status,
        ..Default::default()
    };
    Item {
        pid: s.pid,
        comm: s.comm.to_string(),
        container: s.container.map(str::to_string),
        pod_uid: s.pod_uid.map(str::to_string),
        size: 0,
        span,
        logs: Vec::new(),
    }
}

/// error.type: the status code when it is an error for this side (4xx and
/// 5xx for a client, 5xx for a server), `incomplete` when the exchange was
/// cut (no response, or a message that did not end).
fn error_type(client: bool, ex: &Exchange) -> Option<String> {
    match ex.status {
        Some(s) if s >= 500 || (client && s >= 400) => return Some(s.to_string()),
        _ => {}
    }
    let cut = ex.response.is_none()
        || ex.request.as_ref().is_some_and(|m| !m.complete)
        || ex.response.as_ref().is_some_and(|m| !m.complete);
    cut.then(|| "incomplete".to_string())
}

/// One message as a log record: its (redacted) header fields and body.
fn log_record(
    event: &str,
    m: &HttpMessage,
    clock: &Clock,
    trace_id: &[u8],
    span_id: &[u8],
) -> LogRecord {
    let fields = |list: &crate::decode::Headers| AnyValue {
        value: Some(Value::ArrayValue(ArrayValue {
            values: list
                .iter()
                .map(|(n, v)| AnyValue {
                    value: Some(Value::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(Value::StringValue(n.clone())),
                            },
                            AnyValue {
                                value: Some(Value::StringValue(
                                    String::from_utf8_lossy(v).into_owned(),
                                )),
                            },
                        ],
                    })),
                })
                .collect(),
        })),
    };
    let body = match std::str::from_utf8(&m.body) {
        Ok(s) => Value::StringValue(s.to_string()),
        Err(_) => Value::BytesValue(m.body.clone()),
    };
    let mut values = vec![
        KeyValue {
            key: "headers".into(),
            value: Some(fields(&m.headers)),
            ..Default::default()
        },
        KeyValue {
            key: "body".into(),
            value: Some(AnyValue { value: Some(body) }),
            ..Default::default()
        },
        kv_int("body_len", m.body_len as i64),
    ];
    if !m.trailers.is_empty() {
        values.push(KeyValue {
            key: "trailers".into(),
            value: Some(fields(&m.trailers)),
            ..Default::default()
        });
    }
    let t = unix_ns(clock.wall(m.ts_first_ns));
    LogRecord {
        time_unix_nano: t,
        observed_time_unix_nano: t,
        severity_number: 9, // INFO
        severity_text: "INFO".into(),
        body: Some(AnyValue {
            value: Some(Value::KvlistValue(KeyValueList { values })),
        }),
        attributes: vec![kv("event.name", event.to_string())],
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        flags: 1,
        event_name: event.to_string(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_percent_decoding() {
        assert_eq!(
            parse_pairs("api-key=s%3Dcret, x = y ,bad,=v"),
            vec![
                ("api-key".to_string(), "s=cret".to_string()),
                ("x".to_string(), "y".to_string())
            ]
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41%zz"), "A%zz");
    }

    fn text(list: &[KeyValue]) -> Vec<String> {
        list.iter()
            .map(
                |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => format!("{}={s}", kv.key),
                    Some(Value::IntValue(i)) => format!("{}={i}", kv.key),
                    v => format!("{}={v:?}", kv.key),
                },
            )
            .collect()
    }

    /// A gRPC call seen on the server side that failed (grpc-status 5),
    /// carrying a traceparent: SERVER kind, RPC name and attributes, the
    /// caller's trace and parent, an error status.
    #[test]
    fn grpc_server_span() {
        let req = HttpMessage {
            ts_first_ns: 1_000,
            ts_last_ns: 2_000,
            headers: vec![
                ("user-agent".into(), b"grpc-go/1.60".to_vec()),
                (
                    "traceparent".into(),
                    b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_vec(),
                ),
            ],
            complete: true,
            ..Default::default()
        };
        let resp = HttpMessage {
            ts_first_ns: 5_000,
            ts_last_ns: 9_000,
            complete: true,
            ..Default::default()
        };
        let ex = Exchange {
            protocol: Protocol::Http2,
            stream_id: Some(1),
            method: Some("POST".into()),
            path: Some("/helloworld.Greeter/SayHello".into()),
            authority: Some("grpc.acme.com:50051".into()),
            status: Some(200),
            request: Some(req),
            response: Some(resp),
            grpc: Some(crate::decode::Grpc {
                service: "helloworld.Greeter".into(),
                method: "SayHello".into(),
                status: Some(5),
                message: Some("not found".into()),
                request_messages: 1,
                response_messages: 0,
            }),
        };
        let seen = Seen {
            pid: 7,
            comm: "greeter",
            sni: Some("grpc.acme.com"),
            container: None,
            pod_uid: None,
            client: false,
            endpoints: Some(&crate::record::Endpoints::new(
                crate::record::Transport::Tcp,
                1,
                Some(9),
                (
                    Some("10.0.0.5:50051".parse().unwrap()),
                    Some("10.0.0.9:41000".parse().unwrap()),
                ),
                true,
            )),
            exchange: &ex,
        };
        let clock = Clock::new();
        let it = item(&seen, &clock, true);
        let s = &it.span;
        assert_eq!(s.name, "helloworld.Greeter/SayHello");
        assert_eq!(s.kind, SpanKind::Server as i32);
        assert_eq!(hex(&s.trace_id), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(hex(&s.parent_span_id), "b7ad6b7169203331");
        assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 8_000);
        assert_eq!(s.status.as_ref().unwrap().code, StatusCode::Error as i32);
        assert_eq!(
            text(&s.attributes),
            [
                "http.request.method=POST",
                "url.path=/helloworld.Greeter/SayHello",
                "url.scheme=https",
                "server.address=grpc.acme.com",
                "server.port=50051",
                "client.address=10.0.0.9",
                "client.port=41000",
                "network.peer.address=10.0.0.9",
                "network.peer.port=41000",
                "network.transport=tcp",
                "network.type=ipv4",
                "http.response.status_code=200",
                "network.protocol.name=http",
                "network.protocol.version=2",
                "user_agent.original=grpc-go/1.60",
                "tls.server.name=grpc.acme.com",
                "rpc.system=grpc",
                "rpc.service=helloworld.Greeter",
                "rpc.method=SayHello",
                "rpc.grpc.status_code=5",
                "error.type=5",
            ]
        );
        assert_eq!(it.logs.len(), 2);
        assert!(it.logs.iter().all(|l| l.span_id == s.span_id));
    }

    /// A failed query seen from the client: database conventions, the
    /// SQLSTATE as status code and error type, the server's socket end.
    #[test]
    fn db_client_span() {
        use crate::decode::db::{DbQuery, DbStatus, DbSystem};
        let mut q = DbQuery::new(DbSystem::Postgresql, 1_000);
        q.set_sql(
            "SELECT * FROM nope WHERE a = 1",
            false,
            Default::default(),
            false,
        );
        q.error_code = Some("42P01".into());
        q.error = Some("relation \"nope\" does not exist".into());
        q.answer(DbStatus::Error, 3_000);
        let ends = crate::record::Endpoints::new(
            crate::record::Transport::Tcp,
            1,
            Some(3),
            (
                Some("127.0.0.1:41000".parse().unwrap()),
                Some("127.0.0.1:5432".parse().unwrap()),
            ),
            false,
        );
        let seen = DbSeen {
            pid: 7,
            comm: "psql",
            container: None,
            pod_uid: None,
            client: true,
            endpoints: Some(&ends),
            query: &q,
        };
        let it = db_item(&seen, &Clock::new());
        let s = &it.span;
        assert_eq!(s.name, "SELECT");
        assert_eq!(s.kind, SpanKind::Client as i32);
        assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 2_000);
        assert_eq!(s.status.as_ref().unwrap().code, StatusCode::Error as i32);
        assert_eq!(
            text(&s.attributes),
            [
                "db.system.name=postgresql",
                "db.operation.name=SELECT",
                "db.query.text=SELECT * FROM nope WHERE a = ?",
                "server.address=127.0.0.1",
                "server.port=5432",
                "network.peer.address=127.0.0.1",
                "network.peer.port=5432",
                "network.transport=tcp",
                "network.type=ipv4",
                "db.response.status_code=42P01",
                "error.type=42P01",
            ]
        );
    }

    /// Items are bounded in bytes, not only in number: exchanges with large
    /// bodies are dropped (and counted) once MAX_QUEUED_BYTES wait, and
    /// room comes back as the exporter takes them.
    #[test]
    fn the_queue_is_bounded_in_bytes() {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let stats = Arc::new(ExportStats::default());
        let sink = OtlpSink {
            tx,
            logs: true,
            stats: stats.clone(),
            metrics: None,
        };
        let big = |body: usize| Item {
            pid: 1,
            comm: "x".into(),
            container: None,
            pod_uid: None,
            span: Span::default(),
            logs: vec![LogRecord {
                body: Some(AnyValue {
                    value: Some(Value::BytesValue(vec![0; body])),
                }),
                ..Default::default()
            }],
            size: 0,
        };
        for _ in 0..3 {
            sink.send(big(30 << 20));
        }
        assert_eq!(rx.len(), 2, "two 30 MiB items fit in 64 MiB, not three");
        assert_eq!(
            stats.dropped.load(Ordering::Relaxed),
            2,
            "the span and its record"
        );
        // The exporter's accounting when it is done with one.
        let i = rx.recv().unwrap();
        stats.queued_bytes.fetch_sub(i.size, Ordering::Relaxed);
        sink.send(big(30 << 20));
        assert_eq!(rx.len(), 2);
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn authorities() {
        assert_eq!(
            split_authority("api.acme.com:8443"),
            ("api.acme.com".into(), Some(8443))
        );
        assert_eq!(
            split_authority("api.acme.com"),
            ("api.acme.com".into(), None)
        );
        assert_eq!(split_authority("[::1]:9"), ("::1".into(), Some(9)));
        assert_eq!(split_authority("::1"), ("::1".into(), None));
    }
}
