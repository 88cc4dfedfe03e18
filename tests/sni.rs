//! Server-name filtering in the kernel, with real TLS programs.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);

fn hello(host: &str) -> Vec<u8> {
    format!("GET /hello HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// One client run against the server with server name `sni` ("-": none).
struct Run {
    held: Held,
    request: Vec<u8>,
    _dir: tempfile::TempDir,
}

/// Makes a client of `kind` that connects with server name `sni`.
fn client(kind: &str, port: u16, sni: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let host = if sni == "-" { "127.0.0.1" } else { sni };
    let req = hello(host);
    let f = request_file(dir.path(), &req);
    let port_s = port.to_string();
    let fa = f.to_str().unwrap();
    let held = match kind {
        "curl" => {
            let resolve = format!("{sni}:{port}:127.0.0.1");
            let url = if sni == "-" {
                format!("https://127.0.0.1:{port}/hello")
            } else {
                format!("https://{sni}:{port}/hello")
            };
            let mut args = vec![
                "-sk",
                "--http1.1",
                "-H",
                "Connection: close",
                "-H",
                "User-Agent:",
                "-H",
                "Accept:",
            ];
            if sni != "-" {
                args.extend(["--resolve", &resolve]);
            }
            args.push(&url);
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            Held::new(Path::new("/usr/bin/curl"), &refs)
        }
        "python3" => Held::new(
            Path::new("/usr/bin/python3"),
            &[
                script("py_client.py").to_str().unwrap(),
                "127.0.0.1",
                &port_s,
                sni,
                fa,
            ],
        ),
        "node" => Held::new(
            Path::new("/usr/bin/node"),
            &[
                script("node_client.js").to_str().unwrap(),
                "127.0.0.1",
                &port_s,
                sni,
                "GET",
                "/hello",
            ],
        ),
        "boringssl" => Held::new(
            &fixture("tls_client_boringssl"),
            &["127.0.0.1", &port_s, sni, fa],
        ),
        "openssl" => Held::new(
            &fixture("tls_client_openssl"),
            &["127.0.0.1", &port_s, sni, fa],
        ),
        other => panic!("no client {other}"),
    };
    let request = if kind == "curl" {
        // curl writes the port into Host when it is not 443.
        format!("GET /hello HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n")
            .into_bytes()
    } else {
        req
    };
    Run {
        held,
        request,
        _dir: dir,
    }
}

/// Runs `matching` and `other` under one agent with `args`; the first must
/// be captured byte for byte (and carry its server name), the second not at all.
fn check(kind: &str, args: &[&str], matching: &str, other: &str) {
    let srv = Server::start();
    let mut yes = client(kind, srv.port, matching);
    let mut no = client(kind, srv.port, other);
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    for p in [yes.held.pid, no.held.pid] {
        all.push("--pid".into());
        all.push(p.to_string());
    }
    let refs: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
    let agent = Agent::start(&refs);
    yes.held.go(b"");
    no.held.go(b"");
    let (ok1, _, e1) = yes.held.finish(T);
    let (ok2, _, e2) = no.held.finish(T);
    assert!(ok1 && ok2, "{e1} {e2}");
    let resp = expected_response("GET", "/hello", 0, true);
    let (w, r) = agent.wait_bytes(yes.held.pid, yes.request.len(), resp.len());
    assert_eq!(show(&w), show(&yes.request));
    assert_eq!(w, yes.request);
    assert_eq!(r, resp);
    let recs = agent.records();
    let leaked: Vec<_> = recs.iter().filter(|r| r["pid"] == no.held.pid).collect();
    assert!(
        leaked.is_empty(),
        "non-matching connection captured: {leaked:?}"
    );
    // Every data record of the matching one carries its server name.
    let want = matching.to_ascii_lowercase();
    for r in recs.iter().filter(|r| r["type"] == "data") {
        if matching == "-" {
            assert!(r["sni"].is_null());
        } else {
            assert_eq!(r["sni"], want.as_str(), "{r}");
        }
    }
    if matching != "-" {
        assert!(
            recs.iter()
                .any(|r| r["type"] == "sni" && r["sni"] == want.as_str()),
            "an sni record"
        );
    }
}

#[test]
fn curl_suffix_pattern() {
    rerun_if_host_stalled(|| {
        check(
            "curl",
            &["--sni", "*.acme.com"],
            "api.acme.com",
            "other.example",
        );
    });
}

#[test]
fn python3_suffix_pattern() {
    rerun_if_host_stalled(|| {
        check(
            "python3",
            &["--sni", "*.acme.com"],
            "api.acme.com",
            "other.example",
        );
    });
}

#[test]
fn node_suffix_pattern() {
    rerun_if_host_stalled(|| {
        check(
            "node",
            &["--sni", "*.acme.com"],
            "api.acme.com",
            "other.example",
        );
    });
}

#[test]
fn boringssl_suffix_pattern() {
    rerun_if_host_stalled(|| {
        check(
            "boringssl",
            &["--sni", "*.acme.com"],
            "api.acme.com",
            "other.example",
        );
    });
}

#[test]
fn prefix_pattern() {
    rerun_if_host_stalled(|| {
        check(
            "openssl",
            &["--sni", "api.*"],
            "api.acme.com",
            "other.example",
        );
    });
}

#[test]
fn exact_pattern_does_not_match_subdomains() {
    rerun_if_host_stalled(|| {
        check(
            "openssl",
            &["--sni", "api.acme.com"],
            "api.acme.com",
            "x.api.acme.com",
        );
    });
}

#[test]
fn mixed_case_names_and_patterns() {
    rerun_if_host_stalled(|| {
        check(
            "openssl",
            &["--sni", "API.Acme.COM"],
            "Api.ACME.com",
            "other.example",
        );
    });
}

#[test]
fn no_server_name_is_not_captured_by_default() {
    rerun_if_host_stalled(|| {
        check("openssl", &["--sni", "*.acme.com"], "api.acme.com", "-");
    });
}

#[test]
fn no_server_name_is_captured_with_the_option() {
    rerun_if_host_stalled(|| {
        check(
            "openssl",
            &["--sni", "*.acme.com", "--capture-no-sni"],
            "-",
            "other.example",
        );
    });
}

#[test]
fn patterns_from_a_yaml_config() {
    rerun_if_host_stalled(|| {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("plainsight.yaml");
        std::fs::write(&cfg, "sni:\n  - '*.acme.com'\n").unwrap();
        check(
            "openssl",
            &["--config", cfg.to_str().unwrap()],
            "api.acme.com",
            "other.example",
        );
    });
}

#[test]
fn bad_patterns_are_refused_naming_them() {
    rerun_if_host_stalled(|| {
        for bad in ["", "a*b.com", "*", "ex ample.com", &"a".repeat(300)] {
            let out = std::process::Command::new(AGENT)
                .args(["--sni", bad])
                .output()
                .unwrap();
            assert!(!out.status.success());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("server-name pattern"), "{err}");
            assert!(err.contains(&format!("{bad:?}")), "pattern named: {err}");
        }
    });
}

/// 10,000 connections of one long-running process leave the kernel's
/// connection map small: entries go at SSL_free.
#[test]
fn connection_map_stays_bounded() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let n = 10_000;
        let mut client = Held::new(
            &fixture("many_conns"),
            &[
                "127.0.0.1",
                &srv.port.to_string(),
                "api.acme.com",
                &n.to_string(),
            ],
        );
        let mut agent = Agent::start(&["--pid", &client.pid.to_string(), "--sni", "*.acme.com"]);
        // It prints "done N", then stays alive until its stdin closes: the map
        // is checked while the process still runs (no exit clean-up helps).
        client.go_keep_stdin();
        assert_eq!(client.read_line(), format!("done {n}"));
        std::thread::sleep(Duration::from_millis(500));
        assert!(proc_state(client.pid).is_some(), "still running");
        let recs = agent.records();
        let sni_records = recs.iter().filter(|r| r["type"] == "sni").count();
        let closes = recs.iter().filter(|r| r["type"] == "close").count();
        let log = agent.stop();
        let tracked: usize = log
            .lines()
            .find_map(|l| l.strip_prefix("plainsight: connections tracked in the kernel at exit: "))
            .expect("summary line")
            .trim()
            .parse()
            .unwrap();
        assert_eq!(sni_records, n, "every connection matched once");
        assert_eq!(closes, n, "every connection freed once");
        eprintln!("connections tracked after {n} connections: {tracked}");
        assert!(tracked <= 10, "{tracked} connections still tracked");
        // Their sockets too: learned once each, freed at SSL_free; none
        // stayed unknown, none was dropped for the bound.
        let sockets = log
            .lines()
            .find_map(|l| l.strip_prefix("plainsight: sockets: "))
            .expect("sockets line");
        let n_of = |what: &str| -> u64 {
            let at = sockets
                .find(what)
                .unwrap_or_else(|| panic!("{what} in {sockets}"));
            let num = sockets[..at].trim_end().rsplit([' ', ',']).next().unwrap();
            num.parse().unwrap()
        };
        assert_eq!(
            n_of("connections with data whose socket stayed unknown"),
            0,
            "{sockets}"
        );
        assert_eq!(n_of("sockets not remembered"), 0, "{sockets}");
        assert_eq!(n_of("connections forgotten for the bound"), 0, "{sockets}");
        assert!(n_of("tracked in the kernel at exit") <= 10, "{sockets}");
        let with_ends = recs
            .iter()
            .filter(|r| r["type"] == "data" && r["server"]["port"] == srv.port)
            .count();
        let data = recs.iter().filter(|r| r["type"] == "data").count();
        assert_eq!(with_ends, data, "every data record names its server");
    });
}

/// A trimmed OpenSSL without `SSL_ctrl` (the fixture's symbol removed, as
/// when LTO inlines the call that sets the name): the name comes from the
/// ClientHello the client sends; a client naming another server is not
/// captured.
#[test]
fn openssl_without_ssl_ctrl_named_by_its_client_hello() {
    rerun_if_host_stalled(|| client_under_sni("tls_client_static_noctrl"));
}
