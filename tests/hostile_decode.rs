//! A hostile process end to end: the HPACK amplification flood of the
//! "Hostile host" issue, sent through a real TLS client (python3's ssl, so
//! libssl's SSL_write) while the agent decodes to a JSON file. The agent
//! must stay alive, small (RssAnon) and terse (output size), and still
//! capture a normal request made afterwards with exact values.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(120);
/// What the agent may hold (RssAnon) at any time during the flood.
const MAX_RSS_ANON: u64 = 256 << 20;
/// What the agent may write for the whole test.
const MAX_OUTPUT: u64 = 64 << 20;

/// `RssAnon:` of /proc/PID/status, in bytes.
fn rss_anon(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| {
        let kb = l.strip_prefix("RssAnon:")?.trim().strip_suffix("kB")?;
        kb.trim().parse::<u64>().ok().map(|k| k * 1024)
    })
}

/// Samples the largest RssAnon of `pid` every 10 ms until dropped.
struct RssWatch {
    max: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let max = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (max.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(r) = rss_anon(pid) {
                    m.fetch_max(r, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssWatch {
            max,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.max.load(Ordering::Relaxed)
    }
}

/// h2_flood.py's discarding TLS server (never answers).
struct SinkServer {
    port: u16,
    _child: Guard,
}

impl SinkServer {
    fn start() -> SinkServer {
        let d = fixtures();
        let mut child = Command::new("python3")
            .arg(script("h2_flood.py"))
            .arg("serve")
            .arg(d.join("cert.pem"))
            .arg(d.join("key.pem"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting h2_flood.py serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .expect("PORT line")
            .parse()
            .unwrap();
        SinkServer {
            port,
            _child: Guard(child),
        }
    }
}

fn flood(port: u16, messages: u32, refs: u32, reset: bool) -> Held {
    let s = script("h2_flood.py");
    let (port, messages, refs) = (port.to_string(), messages.to_string(), refs.to_string());
    let mut args = vec![s.to_str().unwrap(), "flood", &port, &messages, &refs];
    if reset {
        args.push("reset");
    }
    Held::new(Path::new("/usr/bin/python3"), &args)
}

fn curl(port: u16, extra: &[&str], path: &str) -> Held {
    let cacert = fixtures().join("cert.pem");
    let resolve = format!("api.acme.com:{port}:127.0.0.1");
    let url = format!("https://api.acme.com:{port}{path}");
    let mut args = vec![
        "-sS",
        "--cacert",
        cacert.to_str().unwrap(),
        "--resolve",
        &resolve,
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    Held::new(Path::new("/usr/bin/curl"), &args)
}

/// The records of `pid` of one type, once `until_n` are there (bounded wait).
fn records_of(agent: &Agent, pid: u32, kind: &str, until_n: usize, wait: Duration) -> Vec<Value> {
    let until = Instant::now() + wait;
    loop {
        let got: Vec<Value> = agent
            .records()
            .into_iter()
            .filter(|r| r["type"] == kind && r["pid"] == pid)
            .collect();
        if got.len() >= until_n || Instant::now() > until {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn header<'a>(msg: &'a Value, name: &str) -> Option<&'a str> {
    msg["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|h| h[1].as_str())
}

/// The flood of the issue (400 HEADERS frames, each referencing one 3.9 KB
/// dynamic table entry 1000 times: ~400 KB of plaintext that decode to
/// 1.5 GB), then the same with 250 references (under the header list limit,
/// so decoded and cut) with streams left open, and with every stream reset
/// at once. Then a normal curl request over HTTP/2.
#[test]
fn hpack_flood_is_bounded() {
    rerun_if_host_stalled(|| {
        let sink = SinkServer::start();
        let go = GoServer::start(&["-h2"]);
        let floods = [
            flood(sink.port, 400, 1000, false),
            flood(sink.port, 400, 250, false),
            flood(sink.port, 400, 250, true),
        ];
        let after = curl(
            go.port,
            &["--http2", "-H", "Authorization: Bearer s3cret-token"],
            "/after",
        );
        let mut args: Vec<String> = Vec::new();
        for pid in floods.iter().map(|f| f.pid).chain([after.pid]) {
            args.push("--pid".into());
            args.push(pid.to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut agent = Agent::start_decoded("json", &args);
        let watch = RssWatch::start(agent.pid());
        let mut sent = 0u64;
        let flood_pids: Vec<u32> = floods.iter().map(|f| f.pid).collect();
        for mut f in floods {
            f.go(b"");
            let (ok, out, err) = f.finish(T);
            assert!(ok, "flood client failed: {err}");
            let out = String::from_utf8_lossy(&out);
            sent += out
                .trim()
                .strip_prefix("SENT ")
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no SENT line: {out}"));
        }
        // Each flood connection ends up shown raw, with a notice saying why
        // (checked after the size limits).
        let until = Instant::now() + Duration::from_secs(30);
        let mut not_raw: Vec<u32> = flood_pids.clone();
        while !not_raw.is_empty() && Instant::now() < until {
            let recs = agent.records();
            not_raw.retain(|&pid| {
                !recs.iter().any(|r| {
                    r["type"] == "notice"
                        && r["pid"] == pid
                        && r["text"].as_str().unwrap_or("").contains("raw")
                })
            });
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            agent.wait_exit(Duration::ZERO).is_none(),
            "the agent died during the flood"
        );
        let pid = after.pid;
        let mut after = after;
        after.go(b"");
        let (ok, out, err) = after.finish(T);
        assert!(ok, "curl failed: {err}");
        assert_eq!(out, b"ok GET /after 0\n");
        let ex = records_of(&agent, pid, "http", 1, Duration::from_secs(30));
        let max_rss = watch.finish();
        assert!(
            agent.wait_exit(Duration::ZERO).is_none(),
            "the agent died after the flood"
        );
        agent.stop();
        let output = std::fs::metadata(&agent.out).map(|m| m.len()).unwrap_or(0);
        eprintln!(
            "flood: {sent} bytes of plaintext sent; agent RssAnon max {} KiB; output {} KiB",
            max_rss >> 10,
            output >> 10
        );
        let recs = agent.records();
        for &pid in &flood_pids {
            let kinds = |k: &str| {
                recs.iter()
                    .filter(|r| r["pid"] == pid && r["type"] == k)
                    .count()
            };
            eprintln!(
                "flood pid {pid}: {} http, {} raw, {} notice records; last notice: {}",
                kinds("http"),
                kinds("raw"),
                kinds("notice"),
                recs.iter()
                    .filter(|r| r["pid"] == pid && r["type"] == "notice")
                    .filter_map(|r| r["text"].as_str())
                    .find(|t| t.contains("raw"))
                    .unwrap_or("-")
            );
        }
        assert!(
            max_rss < MAX_RSS_ANON,
            "agent RssAnon reached {max_rss} bytes (limit {MAX_RSS_ANON})"
        );
        assert!(
            output < MAX_OUTPUT,
            "agent wrote {output} bytes for {sent} bytes of plaintext (limit {MAX_OUTPUT})"
        );
        assert!(
            not_raw.is_empty(),
            "no notice that the flood connections of {not_raw:?} are shown raw"
        );
        assert_eq!(ex.len(), 1, "{ex:#?}");
        let e = &ex[0];
        assert_eq!(e["protocol"], "HTTP/2");
        assert_eq!(e["method"], "GET");
        assert_eq!(e["path"], "/after");
        assert_eq!(e["status"], 200);
        assert_eq!(e["sni"], "api.acme.com");
        assert_eq!(e["authority"], format!("api.acme.com:{}", go.port));
        assert_eq!(header(&e["request"], "authorization"), Some("[redacted]"));
        assert_eq!(e["response"]["body"], "ok GET /after 0\n");
        assert_eq!(e["response"]["complete"], true);
    });
}
