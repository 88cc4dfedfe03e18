//! Fleet outputs end to end: OTLP spans and logs of real clients (curl,
//! python3, a Go client) received by an OTLP receiver built on the official
//! protobuf definitions, over gRPC and HTTP/protobuf; a collector that is
//! down; Prometheus metrics scraped by a real Prometheus server and checked
//! by promtool.

mod common;
mod otlp_receiver;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use otlp_receiver::Receiver;

const T: Duration = Duration::from_secs(60);

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Attributes as text (`s:` strings, `i:` integers).
fn attrs(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => format!("s:{s}"),
                Some(Value::IntValue(i)) => format!("i:{i}"),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn map(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Every span received, with its resource's attributes.
fn spans(r: &Receiver) -> Vec<(HashMap<String, String>, Span)> {
    r.with(|rec| {
        let mut v = Vec::new();
        for req in &rec.traces {
            for rs in &req.resource_spans {
                let res = attrs(&rs.resource.as_ref().unwrap().attributes);
                for ss in &rs.scope_spans {
                    assert_eq!(ss.scope.as_ref().unwrap().name, "plainsight");
                    for s in &ss.spans {
                        v.push((res.clone(), s.clone()));
                    }
                }
            }
        }
        v
    })
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// The one span of process `comm`; checks its resource.
fn span_of(r: &Receiver, comm: &str, pid: u32) -> Span {
    let all = spans(r);
    let mine: Vec<_> = all
        .iter()
        .filter(|(res, _)| res.get("process.executable.name") == Some(&format!("s:{comm}")))
        .collect();
    assert_eq!(mine.len(), 1, "spans of {comm}: {all:?}");
    let (res, span) = mine[0];
    assert_eq!(
        *res,
        map(&[
            ("service.name", format!("s:{comm}")),
            ("process.pid", format!("i:{pid}")),
            ("process.executable.name", format!("s:{comm}")),
            ("host.name", format!("s:{}", host_name())),
            ("deployment.environment.name", "s:test".into()),
        ])
    );
    span.clone()
}

/// A client span of a plain GET on `port` through `path`, user agent `ua`.
fn check_client_span(s: &Span, port: u16, path: &str, ua: &str, t0: u64, t1: u64) {
    assert_eq!(s.name, "GET");
    assert_eq!(s.kind, 3, "SPAN_KIND_CLIENT");
    assert_eq!(s.trace_id.len(), 16);
    assert_eq!(s.span_id.len(), 8);
    assert!(s.parent_span_id.is_empty());
    assert!(s.status.is_none(), "{:?}", s.status);
    assert!(
        t0 <= s.start_time_unix_nano
            && s.start_time_unix_nano < s.end_time_unix_nano
            && s.end_time_unix_nano <= t1,
        "{t0} {} {} {t1}",
        s.start_time_unix_nano,
        s.end_time_unix_nano
    );
    assert_eq!(
        attrs(&s.attributes),
        map(&[
            ("http.request.method", "s:GET".into()),
            ("url.full", format!("s:https://api.acme.com:{port}{path}")),
            ("server.address", "s:api.acme.com".into()),
            ("server.port", format!("i:{port}")),
            ("http.response.status_code", "i:200".into()),
            ("network.protocol.name", "s:http".into()),
            ("network.protocol.version", "s:1.1".into()),
            ("user_agent.original", format!("s:{ua}")),
            ("tls.server.name", "s:api.acme.com".into()),
            // The socket's, learned in the kernel.
            ("network.peer.address", "s:127.0.0.1".into()),
            ("network.peer.port", format!("i:{port}")),
            ("network.transport", "s:tcp".into()),
            ("network.type", "s:ipv4".into()),
        ])
    );
}

fn curl_version() -> String {
    let out = Command::new("curl").arg("--version").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().nth(1).unwrap().to_string()
}

/// curl, python3 and a Go client each make one GET; each gives one exact
/// CLIENT span; with --otlp-logs, the python exchange's messages come as
/// log records tied to its span.
fn three_clients(r: &Receiver, protocol: &str) {
    let srv = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let port = srv.port;
    let cacert = fixtures().join("cert.pem");
    let resolve = format!("api.acme.com:{port}:127.0.0.1");
    let curl_url = format!("https://api.acme.com:{port}/curl");
    let mut curl = Held::new(
        Path::new("/usr/bin/curl"),
        &[
            "-sS",
            "--http1.1",
            "--cacert",
            cacert.to_str().unwrap(),
            "--resolve",
            &resolve,
            &curl_url,
        ],
    );
    let req = format!(
        "GET /py?x=1 HTTP/1.1\r\nHost: api.acme.com:{port}\r\nUser-Agent: py-test\r\nConnection: close\r\n\r\n"
    );
    let reqf = request_file(dir.path(), req.as_bytes());
    let mut py = Held::with_env(
        Path::new("/usr/bin/python3"),
        &[
            script("py_client.py").to_str().unwrap(),
            "127.0.0.1",
            &port.to_string(),
            "api.acme.com",
            reqf.to_str().unwrap(),
        ],
        &[],
    );
    let addr = format!("127.0.0.1:{port}");
    let mut go = Held::new(
        &fixture("go_client"),
        &["-addr", &addr, "-sni", "api.acme.com", "-path", "/go"],
    );
    let mut agent = Agent::start(&[
        "--otlp-endpoint",
        &r.endpoint(),
        "--otlp-protocol",
        protocol,
        "--otlp-logs",
        "--pid",
        &curl.pid.to_string(),
        "--pid",
        &py.pid.to_string(),
        "--pid",
        &go.pid.to_string(),
    ]);
    let t0 = now_ns();
    for h in [&mut curl, &mut py, &mut go] {
        h.go(b"");
        let (ok, _, err) = h.finish(T);
        assert!(ok, "{err}");
    }
    let t1 = now_ns();
    r.wait("three spans", |rec| {
        rec.traces
            .iter()
            .flat_map(|t| &t.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum::<usize>()
            >= 3
    });
    let c = span_of(r, "curl", curl.pid);
    check_client_span(
        &c,
        port,
        "/curl",
        &format!("curl/{}", curl_version()),
        t0,
        t1,
    );
    let p = span_of(r, "python3", py.pid);
    check_client_span(&p, port, "/py?x=1", "py-test", t0, t1);
    let g = span_of(r, "go_client", go.pid);
    check_client_span(&g, port, "/go", "plainsight-go", t0, t1);
    // The python exchange's request and response as log records.
    r.wait("log records", |rec| {
        rec.logs.iter().flat_map(|l| &l.resource_logs).any(|rl| {
            attrs(&rl.resource.as_ref().unwrap().attributes)["process.executable.name"]
                == "s:python3"
        })
    });
    let records = r.with(|rec| {
        rec.logs
            .iter()
            .flat_map(|l| &l.resource_logs)
            .filter(|rl| {
                attrs(&rl.resource.as_ref().unwrap().attributes)["process.executable.name"]
                    == "s:python3"
            })
            .flat_map(|rl| &rl.scope_logs)
            .flat_map(|sl| sl.log_records.clone())
            .collect::<Vec<_>>()
    });
    let events: Vec<&str> = records.iter().map(|l| l.event_name.as_str()).collect();
    assert_eq!(events, ["http.request", "http.response"]);
    for l in &records {
        assert_eq!(l.trace_id, p.trace_id);
        assert_eq!(l.span_id, p.span_id);
    }
    let body = |l: &opentelemetry_proto::tonic::logs::v1::LogRecord| {
        let Some(Value::KvlistValue(kvs)) = l.body.as_ref().and_then(|b| b.value.clone()) else {
            panic!("{l:?}")
        };
        attrs(&kvs.values)["body"].clone()
    };
    assert_eq!(body(&records[0]), "s:");
    let resp = String::from_utf8(expected_response("GET", "/py?x=1", 0, true)).unwrap();
    let resp_body = resp.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(body(&records[1]), format!("s:{resp_body}"));
    let log = agent.stop();
    assert!(
        log.contains("OTLP: 3 spans exported, 0 spans and log records dropped, 0 failed exports"),
        "{log}"
    );
}

fn with_resource_env<T>(f: impl FnOnce() -> T) -> T {
    std::env::set_var(
        "OTEL_RESOURCE_ATTRIBUTES",
        "deployment.environment.name=test",
    );
    f()
}

#[test]
fn otlp_grpc_spans_and_logs_of_real_clients() {
    with_resource_env(|| three_clients(&Receiver::grpc(), "grpc"));
}

#[test]
fn otlp_http_protobuf_spans_and_logs_of_real_clients() {
    with_resource_env(|| three_clients(&Receiver::http(), "http/protobuf"));
}

/// A port nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn http_get(port: u16, path: &str) -> String {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    let (head, body) = s.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    body.to_string()
}

/// The value of a sample line `name{labels} value` in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// With the collector down, capture goes on (the exchange is in the JSON
/// output), failed exports are counted, and the span still queued at exit
/// is dropped and counted.
#[test]
fn otlp_collector_down_capture_goes_on() {
    let srv = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let mport = closed_port();
    let mut agent = Agent::start_decoded(
        "json",
        &[
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{}", closed_port()),
            "--metrics-addr",
            &format!("127.0.0.1:{mport}"),
            "--comm",
            "down_client",
        ],
    );
    let exe = dir.path().join("down_client");
    std::fs::copy(fixture("tls_client_openssl"), &exe).unwrap();
    let req = "GET /down HTTP/1.1\r\nHost: api.acme.com\r\nConnection: close\r\n\r\n";
    let f = request_file(dir.path(), req.as_bytes());
    let out = run_client(&exe, &srv, &f);
    assert!(out.status.success());
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let recs = agent.records();
        let done = recs
            .iter()
            .any(|r| r["type"] == "http" && r["path"] == "/down");
        let text = http_get(mport, "/metrics");
        let failures = sample(&text, "plainsight_otlp_export_failures_total").unwrap();
        if done && failures >= 1.0 {
            break;
        }
        assert!(Instant::now() < until, "{recs:?}\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = agent.stop();
    assert!(
        log.contains("OTLP: 0 spans exported, 1 spans and log records dropped"),
        "{log}"
    );
    assert!(log.contains("OTLP export to http://127.0.0.1:"), "{log}");
}

/// A real Prometheus server scrapes the agent: its query API gives the
/// request count of the captured client; `promtool check metrics` accepts
/// the exposition.
#[test]
fn prometheus_scrapes_the_agent() {
    let srv = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let mport = closed_port();
    let mut agent = Agent::start(&[
        "--metrics-addr",
        &format!("127.0.0.1:{mport}"),
        "--comm",
        "scraped_client",
    ]);
    let exe = dir.path().join("scraped_client");
    std::fs::copy(fixture("tls_client_openssl"), &exe).unwrap();
    for i in 0..3 {
        let req = format!("GET /n{i} HTTP/1.1\r\nHost: api.acme.com\r\nConnection: close\r\n\r\n");
        let f = request_file(dir.path(), req.as_bytes());
        let out = run_client(&exe, &srv, &f);
        assert!(out.status.success());
    }
    // The server's port is a label (the socket's, learned in the kernel).
    let series = format!(
        "plainsight_http_requests_total{{process=\"scraped_client\",server=\"api.acme.com\",server_port=\"{}\",method=\"GET\",status=\"200\"}}",
        srv.port
    );
    let until = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let text = http_get(mport, "/metrics");
        if sample(&text, &series) == Some(3.0) {
            break text;
        }
        assert!(Instant::now() < until, "{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // The coverage map: the client's one TLS file, captured.
    assert_eq!(
        sample(
            &text,
            "plainsight_tls_files{stack=\"openssl\",captured=\"true\"}"
        ),
        Some(1.0),
        "{text}"
    );
    // promtool on the exposition as served.
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/install-deps.sh --test installs prometheus)");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A real Prometheus scraping every 200 ms.
    let pport = closed_port();
    let conf = dir.path().join("prometheus.yml");
    std::fs::write(
        &conf,
        format!(
            "global:\n  scrape_interval: 200ms\nscrape_configs:\n  - job_name: plainsight\n    static_configs:\n      - targets: ['127.0.0.1:{mport}']\n"
        ),
    )
    .unwrap();
    let _prom = Guard(
        Command::new("prometheus")
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus"),
    );
    let query = "/api/v1/query?query=sum(plainsight_http_requests_total%7Bprocess%3D%22scraped_client%22%7D)";
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = std::net::TcpStream::connect(("127.0.0.1", pport))
            .ok()
            .map(|_| http_get(pport, query));
        if let Some(a) = answer {
            let v: serde_json::Value = serde_json::from_str(&a).unwrap();
            if let Some(r) = v["data"]["result"].as_array().and_then(|r| r.first()) {
                assert_eq!(r["value"][1], "3", "{a}");
                break;
            }
        }
        assert!(Instant::now() < until, "Prometheus never had the series");
        std::thread::sleep(Duration::from_millis(200));
    }
    agent.stop();
}
