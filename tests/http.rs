//! Decoded output end to end: curl over HTTP/1.1 and HTTP/2 (several
//! requests on one connection), python3 urllib, a gRPC-style exchange,
//! redaction, the console access log, and the pcapng file read by tshark.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
const SECRET: &str = "Bearer s3cret-token";

fn curl(port: u16, extra: &[&str], paths: &[&str]) -> Held {
    let cacert = fixtures().join("cert.pem");
    let resolve = format!("api.acme.com:{port}:127.0.0.1");
    let mut args: Vec<String> = vec![
        "-sS".into(),
        "--cacert".into(),
        cacert.display().to_string(),
        "--resolve".into(),
        resolve,
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(
        paths
            .iter()
            .map(|p| format!("https://api.acme.com:{port}{p}")),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Held::new(Path::new("/usr/bin/curl"), &args)
}

/// A field of a message's `headers` or `trailers` list.
fn field<'a>(msg: &'a Value, list: &str, name: &str) -> Option<&'a str> {
    msg[list]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|h| h[1].as_str())
}

fn header<'a>(msg: &'a Value, name: &str) -> Option<&'a str> {
    field(msg, "headers", name)
}

fn trailer<'a>(msg: &'a Value, name: &str) -> Option<&'a str> {
    field(msg, "trailers", name)
}

fn run(mut h: Held) -> Vec<u8> {
    h.go(b"");
    let (ok, out, err) = h.finish(T);
    assert!(ok, "client failed: {err}");
    out
}

fn pcap_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("capture.pcapng")
}

/// tshark on the pcapng: fields `fields` of the packets `filter` keeps.
/// The server's real port is in the file, so HTTP is asked for on it (as
/// the README says: `-d tcp.port==PORT,http`; a stream that starts with
/// the HTTP/2 preface goes on to HTTP/2).
fn tshark(pcap: &Path, port: u16, filter: &str, fields: &[&str]) -> String {
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"])
        .arg(pcap)
        .args(["-d", &format!("tcp.port=={port},http")])
        .args(["-Y", filter, "-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let o = cmd
        .output()
        .expect("running tshark (installed by scripts/install-deps.sh --test)");
    assert!(
        o.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Three requests on one keep-alive connection, the same over HTTP/2.
fn keep_alive(version: &str, protocol: &str) {
    let srv = GoServer::start(&["-h2"]);
    let dir = tempfile::tempdir().unwrap();
    let pcap = pcap_path(&dir);
    let c = curl(
        srv.port,
        &[version, "-H", &format!("Authorization: {SECRET}")],
        &["/a", "/b?x=1", "/c"],
    );
    let mut agent = Agent::start_decoded(
        "json",
        &[
            "--pid",
            &c.pid.to_string(),
            "--pcap",
            pcap.to_str().unwrap(),
        ],
    );
    let pid = c.pid;
    assert_eq!(run(c), b"ok GET /a 0\nok GET /b?x=1 0\nok GET /c 0\n");
    let ex = agent.exchanges(pid, 3);
    agent.stop();
    assert_eq!(ex.len(), 3, "{ex:#?}");
    let conns: std::collections::HashSet<_> = ex.iter().map(|e| e["conn"].clone()).collect();
    assert_eq!(conns.len(), 1, "one connection");
    for (e, path) in ex.iter().zip(["/a", "/b?x=1", "/c"]) {
        assert_eq!(e["protocol"], protocol);
        assert_eq!(e["method"], "GET");
        assert_eq!(e["path"], path);
        assert_eq!(e["status"], 200);
        assert_eq!(e["sni"], "api.acme.com");
        assert_eq!(e["authority"], format!("api.acme.com:{}", srv.port));
        let req = &e["request"];
        assert_eq!(header(req, "authorization"), Some("[redacted]"));
        assert_eq!(header(req, "accept"), Some("*/*"));
        assert!(header(req, "user-agent").is_some_and(|u| u.starts_with("curl/")));
        let resp = &e["response"];
        let body = format!("ok GET {path} 0\n");
        assert_eq!(resp["body"], body);
        assert_eq!(resp["body_len"], body.len());
        assert_eq!(header(resp, "content-type"), Some("text/plain"));
        assert_eq!(
            header(resp, "content-length"),
            Some(body.len().to_string().as_str())
        );
        assert!(e["latency_ms"].as_f64().is_some_and(|l| l > 0.0));
    }
    if protocol == "HTTP/2" {
        let ids: Vec<_> = ex
            .iter()
            .map(|e| e["stream_id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids, [1, 3, 5]);
    }
    // The secret is in no output.
    let raw = std::fs::read(&agent.out).unwrap();
    let p = std::fs::read(&pcap).unwrap();
    for bytes in [&raw, &p] {
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "secret leaked"
        );
    }
    // tshark reads the same requests from the pcapng.
    let (filter, fields) = if protocol == "HTTP/2" {
        (
            "http2.type == 1 && http2.header.name == \":path\"",
            vec!["http2.headers.path"],
        )
    } else {
        ("http.request", vec!["http.request.uri"])
    };
    let out = tshark(&pcap, srv.port, filter, &fields);
    let paths: Vec<&str> = out.lines().collect();
    assert_eq!(paths, ["/a", "/b?x=1", "/c"], "tshark output:\n{out}");
    let status_field = if protocol == "HTTP/2" {
        "http2.headers.status"
    } else {
        "http.response.code"
    };
    let status_filter = if protocol == "HTTP/2" {
        "http2.headers.status"
    } else {
        "http.response"
    };
    let out = tshark(&pcap, srv.port, status_filter, &[status_field]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["200", "200", "200"],
        "tshark output:\n{out}"
    );
    let out = tshark(&pcap, srv.port, "frame.comment", &["frame.comment"]);
    assert!(
        out.lines()
            .next()
            .is_some_and(|l| l == format!("curl[{pid}] sni=api.acme.com")),
        "{out}"
    );
}

#[test]
fn curl_http1_keep_alive() {
    rerun_if_host_stalled(|| {
        keep_alive("--http1.1", "HTTP/1.1");
    });
}

#[test]
fn curl_http2_several_streams() {
    rerun_if_host_stalled(|| {
        keep_alive("--http2", "HTTP/2");
    });
}

/// A POST body and `--no-redact`.
#[test]
fn curl_http2_post_without_redaction() {
    rerun_if_host_stalled(|| {
        let srv = GoServer::start(&["-h2"]);
        let c = curl(
            srv.port,
            &[
                "--http2",
                "-H",
                &format!("Authorization: {SECRET}"),
                "-H",
                "Cookie: sid=42",
                "--data-binary",
                "name=plainsight&x=1",
            ],
            &["/form"],
        );
        let mut agent = Agent::start_decoded("json", &["--pid", &c.pid.to_string(), "--no-redact"]);
        let pid = c.pid;
        assert_eq!(run(c), b"ok POST /form 19\n");
        let ex = agent.exchanges(pid, 1);
        agent.stop();
        assert_eq!(ex.len(), 1);
        let e = &ex[0];
        assert_eq!(e["method"], "POST");
        assert_eq!(header(&e["request"], "authorization"), Some(SECRET));
        assert_eq!(header(&e["request"], "cookie"), Some("sid=42"));
        assert_eq!(
            header(&e["request"], "content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(e["request"]["body"], "name=plainsight&x=1");
        assert_eq!(e["response"]["body"], "ok POST /form 19\n");
    });
}

/// gRPC framing over HTTP/2: service, method, messages, trailers.
#[test]
fn grpc_style_exchange() {
    rerun_if_host_stalled(|| {
        let srv = GoServer::start(&["-h2"]);
        let dir = tempfile::tempdir().unwrap();
        let msg = dir.path().join("msg.bin");
        std::fs::write(&msg, b"\x00\x00\x00\x00\x05hello\x00\x00\x00\x00\x03abc").unwrap();
        let data = format!("@{}", msg.display());
        let grpc = [
            "--http2",
            "-H",
            "Content-Type: application/grpc",
            "-H",
            "TE: trailers",
            "--data-binary",
            &data,
        ];
        let ok = curl(srv.port, &grpc, &["/helloworld.Greeter/SayHello"]);
        let mut failing: Vec<&str> = grpc.to_vec();
        failing.extend([
            "-H",
            "X-Want-Status: 5",
            "-H",
            "X-Want-Message: no such greeting",
        ]);
        let bad = curl(srv.port, &failing, &["/helloworld.Greeter/SayBye"]);
        let mut agent = Agent::start_decoded(
            "json",
            &["--pid", &ok.pid.to_string(), "--pid", &bad.pid.to_string()],
        );
        let (ok_pid, bad_pid) = (ok.pid, bad.pid);
        let out = run(ok);
        assert_eq!(
            out,
            b"\x00\x00\x00\x00\x0breply:hello\x00\x00\x00\x00\x09reply:abc"
        );
        run(bad);
        let e = agent.exchanges(ok_pid, 1);
        let f = agent.exchanges(bad_pid, 1);
        agent.stop();
        let e = &e[0];
        assert_eq!(e["protocol"], "HTTP/2");
        assert_eq!(e["method"], "POST");
        assert_eq!(e["path"], "/helloworld.Greeter/SayHello");
        assert_eq!(e["status"], 200);
        assert_eq!(e["grpc"]["service"], "helloworld.Greeter");
        assert_eq!(e["grpc"]["method"], "SayHello");
        assert_eq!(e["grpc"]["status"], 0);
        assert_eq!(e["grpc"]["message"], "fine");
        assert_eq!(e["grpc"]["request_messages"], 2);
        assert_eq!(e["grpc"]["response_messages"], 2);
        assert_eq!(
            header(&e["response"], "content-type"),
            Some("application/grpc")
        );
        assert_eq!(trailer(&e["response"], "grpc-status"), Some("0"));
        assert_eq!(e["response"]["body_len"], out.len());
        let f = &f[0];
        assert_eq!(f["grpc"]["method"], "SayBye");
        assert_eq!(f["grpc"]["status"], 5);
        assert_eq!(f["grpc"]["message"], "no such greeting");
    });
}

/// python3 urllib (HTTP/1.1, Connection: close), a JSON POST with a cookie.
#[test]
fn python_urllib() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let code = r#"
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[1])
ctx.check_hostname = False
req = urllib.request.Request(sys.argv[2], data=b'{"q": 1}',
    headers={"Content-Type": "application/json", "Cookie": "session=abc"})
sys.stdout.write(urllib.request.urlopen(req, context=ctx).read().decode())
"#;
        let url = format!("https://127.0.0.1:{}/py/search", srv.port);
        let cacert = fixtures().join("cert.pem");
        let h = Held::new(
            Path::new("/usr/bin/python3"),
            &["-c", code, cacert.to_str().unwrap(), &url],
        );
        let mut agent = Agent::start_decoded("json", &["--pid", &h.pid.to_string()]);
        let pid = h.pid;
        assert_eq!(run(h), b"ok POST /py/search 8\n");
        let ex = agent.exchanges(pid, 1);
        agent.stop();
        assert_eq!(ex.len(), 1, "{ex:#?}");
        let e = &ex[0];
        assert_eq!(e["protocol"], "HTTP/1.1");
        assert_eq!(e["method"], "POST");
        assert_eq!(e["path"], "/py/search");
        assert_eq!(e["status"], 200);
        assert_eq!(e["sni"], Value::Null);
        assert_eq!(header(&e["request"], "cookie"), Some("[redacted]"));
        assert_eq!(
            header(&e["request"], "content-type"),
            Some("application/json")
        );
        assert_eq!(header(&e["request"], "connection"), Some("close"));
        assert_eq!(e["request"]["body"], r#"{"q": 1}"#);
        let body = "ok POST /py/search 8\n";
        assert_eq!(e["response"]["body"], body);
        assert_eq!(
            header(&e["response"], "content-length"),
            Some(body.len().to_string().as_str())
        );
    });
}

/// The default console output: one access-log line per exchange, headers
/// with -v, bodies with -vv.
#[test]
fn console_access_log() {
    rerun_if_host_stalled(|| {
        let srv = GoServer::start(&["-h2"]);
        let c = curl(
            srv.port,
            &["--http1.1", "-H", "Cookie: a=b"],
            &["/one", "/two"],
        );
        let mut agent = Agent::start_decoded("text", &["--pid", &c.pid.to_string(), "-vv"]);
        let pid = c.pid;
        run(c);
        let until = Instant::now() + Duration::from_secs(15);
        let text = loop {
            let t = std::fs::read_to_string(&agent.out).unwrap_or_default();
            if t.matches(" HTTP/1.1 GET ").count() >= 2 || Instant::now() > until {
                break t;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        agent.stop();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" HTTP/1.1 GET "))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        for (l, p) in lines.iter().zip(["/one", "/two"]) {
            // The client's line shows its server's endpoint.
            let want = format!(
                "curl[{pid}] 127.0.0.1:{} api.acme.com HTTP/1.1 GET {p} 200 ",
                srv.port
            );
            assert!(l.contains(&want), "{l}");
            assert!(
                l.ends_with(&format!(
                    " req=0B resp={}B",
                    format!("ok GET {p} 0\n").len()
                )),
                "{l}"
            );
        }
        assert!(text.contains("  > Cookie: [redacted]\n"), "{text}");
        assert!(text.contains("  < Content-Type: text/plain\n"), "{text}");
        assert!(text.contains("    ok GET /two 0\n"), "{text}");
    });
}

/// A stream that is not HTTP stays raw: the exact bytes, per call.
#[test]
fn non_http_stays_raw() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let dir = tempfile::tempdir().unwrap();
        let bytes = b"\x16\xfe\x00binary, not HTTP\r\n\r\n".to_vec();
        let f = request_file(dir.path(), &bytes);
        let port = srv.port.to_string();
        let c = Held::new(
            &fixture("tls_client_openssl"),
            &["127.0.0.1", &port, "api.acme.com", f.to_str().unwrap()],
        );
        let mut agent = Agent::start_decoded("json", &["--pid", &c.pid.to_string()]);
        let pid = c.pid;
        let mut c = c;
        c.go(b"");
        // The test server does not answer garbage; the write is what counts.
        c.finish(Duration::from_secs(3));
        let until = Instant::now() + Duration::from_secs(15);
        let raw = loop {
            let got: Vec<Value> = agent
                .records()
                .into_iter()
                .filter(|r| r["type"] == "raw" && r["pid"] == pid && r["direction"] == "write")
                .collect();
            if !got.is_empty() || Instant::now() > until {
                break got;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        agent.stop();
        assert_eq!(raw.len(), 1, "{raw:#?}");
        assert_eq!(raw[0]["encoding"], "base64");
        assert_eq!(record_bytes(&raw[0]), bytes);
        assert_eq!(raw[0]["sni"], "api.acme.com");
        assert!(agent.records().iter().all(|r| r["type"] != "http"));
    });
}
