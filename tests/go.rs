//! Go crypto/tls: client fixtures with and without symbols, PIE, many
//! concurrent requests, and a Go server; exact bytes.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(60);

fn get_request(port: u16, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: api.acme.com:{port}\r\nUser-Agent: plainsight-go\r\n\r\n")
        .into_bytes()
}

fn go_get(bin: &str) {
    let srv = Server::start();
    let addr = format!("127.0.0.1:{}", srv.port);
    let mut yes = Held::new(
        &fixture(bin),
        &["-addr", &addr, "-sni", "api.acme.com", "-path", "/hello"],
    );
    let mut no = Held::new(
        &fixture(bin),
        &["-addr", &addr, "-sni", "other.example", "-path", "/hello"],
    );
    let agent = sni_pair_agent(&yes, &no);
    yes.go(b"");
    no.go(b"");
    let (ok, out, err) = yes.finish(T);
    assert!(ok, "{err}");
    assert_eq!(out, b"ok 1\n");
    assert!(no.finish(T).0);
    let req = get_request(srv.port, "/hello");
    let resp = expected_response("GET", "/hello", 0, false);
    let (w, r) = agent.wait_bytes(yes.pid, req.len(), resp.len());
    assert_eq!(show(&w), show(&req), "{bin}");
    assert_eq!(w, req);
    assert_eq!(r, resp);
    let recs = agent.records();
    assert_only_api_acme(&recs, no.pid);
    // The socket its ClientHello went over: every record has it.
    let (_, n) = check_loopback(&recs, yes.pid, None, srv.port);
    assert!(n >= 3, "{n} records with endpoints");
}

#[test]
fn go_client_with_symbols() {
    rerun_if_host_stalled(|| {
        go_get("go_client");
    });
}

#[test]
fn go_client_stripped() {
    rerun_if_host_stalled(|| {
        go_get("go_client_stripped");
    });
}

#[test]
fn go_client_pie() {
    rerun_if_host_stalled(|| {
        go_get("go_client_pie");
    });
}

#[test]
fn go_client_post_with_a_body() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..1000).map(|i| b'A' + (i % 26) as u8).collect();
        let bf = dir.path().join("body");
        std::fs::write(&bf, &body).unwrap();
        let addr = format!("127.0.0.1:{}", srv.port);
        let mut c = Held::new(
            &fixture("go_client"),
            &[
                "-addr",
                &addr,
                "-sni",
                "api.acme.com",
                "-method",
                "POST",
                "-path",
                "/upload",
                "-body-file",
                bf.to_str().unwrap(),
            ],
        );
        let agent = Agent::start(&["--pid", &c.pid.to_string()]);
        c.go(b"");
        assert!(c.finish(T).0);
        let mut req = format!(
            "POST /upload HTTP/1.1\r\nHost: api.acme.com:{}\r\nUser-Agent: plainsight-go\r\nContent-Length: 1000\r\n\r\n",
            srv.port
        )
        .into_bytes();
        req.extend_from_slice(&body);
        let resp = expected_response("POST", "/upload", 1000, false);
        let (w, r) = agent.wait_bytes(c.pid, req.len(), resp.len());
        assert_eq!(w, req);
        assert_eq!(r, resp);
    });
}

/// 100 requests, 8 at a time over 8 connections: every request and response
/// exactly once, on the connection that carried it.
#[test]
fn go_client_concurrent_requests_by_connection() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let addr = format!("127.0.0.1:{}", srv.port);
        let n = 100;
        let mut c = Held::new(
            &fixture("go_client"),
            &[
                "-addr",
                &addr,
                "-sni",
                "api.acme.com",
                "-n",
                &n.to_string(),
                "-c",
                "8",
                "-path",
                "/r",
            ],
        );
        let agent = Agent::start(&["--pid", &c.pid.to_string(), "--sni", "api.acme.com"]);
        c.go(b"");
        let (ok, out, err) = c.finish(T);
        assert!(ok, "{err}");
        assert_eq!(String::from_utf8_lossy(&out).trim(), format!("ok {n}"));
        let req_len: usize = (0..n)
            .map(|i| get_request(srv.port, &format!("/r/{i}")).len())
            .sum();
        let resp_len: usize = (0..n)
            .map(|i| expected_response("GET", &format!("/r/{i}"), 0, false).len())
            .sum();
        let _ = agent.wait_bytes(c.pid, req_len, resp_len);
        let mut writes: HashMap<String, Vec<u8>> = HashMap::new();
        let mut reads: HashMap<String, Vec<u8>> = HashMap::new();
        for r in agent
            .records()
            .iter()
            .filter(|r| r["type"] == "data" && r["pid"] == c.pid)
        {
            let conn = r["conn"].as_str().unwrap().to_string();
            let m = if r["direction"] == "write" {
                &mut writes
            } else {
                &mut reads
            };
            m.entry(conn).or_default().extend(record_bytes(r));
        }
        assert!(
            writes.len() > 1 && writes.len() <= 8,
            "{} connections",
            writes.len()
        );
        let mut seen = vec![0; n];
        for (conn, w) in &writes {
            // Requests on this connection, in order, and the responses read on it.
            let mut expect_resp = Vec::new();
            let mut rest: &[u8] = w;
            while !rest.is_empty() {
                let line_end = rest
                    .windows(2)
                    .position(|x| x == b"\r\n")
                    .expect("request line");
                let line = std::str::from_utf8(&rest[..line_end]).unwrap();
                let path = line.split(' ').nth(1).unwrap();
                let i: usize = path.strip_prefix("/r/").unwrap().parse().unwrap();
                seen[i] += 1;
                let req = get_request(srv.port, path);
                assert!(rest.starts_with(&req), "request bytes on {conn}");
                rest = &rest[req.len()..];
                expect_resp.extend(expected_response("GET", path, 0, false));
            }
            assert_eq!(
                reads.get(conn).map(|v| v.as_slice()),
                Some(expect_resp.as_slice()),
                "responses on {conn}"
            );
        }
        assert!(
            seen.iter().all(|&k| k == 1),
            "each request exactly once: {seen:?}"
        );
    });
}

/// go_server, held until [`Held::run_for_port`] (so that an agent started
/// meanwhile sees it from its first instruction).
fn held_go_server() -> Held {
    let d = fixtures();
    Held::new(
        &fixture("go_server"),
        &[
            "-cert",
            d.join("cert.pem").to_str().unwrap(),
            "-key",
            d.join("key.pem").to_str().unwrap(),
        ],
    )
}

/// A Go TLS server, captured on its side.
#[test]
fn go_server_side() {
    rerun_if_host_stalled(|| {
        let mut server = held_go_server();
        let agent = Agent::start(&["--pid", &server.pid.to_string()]);
        let port = server.run_for_port();
        let dir = tempfile::tempdir().unwrap();
        let req = b"GET /srv HTTP/1.1\r\nHost: api.acme.com\r\nConnection: close\r\n\r\n".to_vec();
        let f = request_file(dir.path(), &req);
        let out = run_client_on(&fixture("tls_client_openssl"), port, &f);
        assert!(out.status.success());
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nok GET /srv 0\n";
        assert_eq!(out.stdout, resp);
        let (w, r) = agent.wait_bytes(server.pid, resp.len(), req.len());
        assert_eq!(r, req, "server read the request");
        assert_eq!(w, resp, "server wrote the response");
        // The socket its client's ClientHello came from.
        let recs = agent.records();
        check_loopback(&recs, server.pid, None, port);
    });
}

/// Both ends captured by one agent: the Go server's exchange says
/// `side: server`, the OpenSSL client's `side: client`, each with the same
/// request and response; the console marks the server's line.
#[test]
fn exchanges_say_which_side_the_process_is_on() {
    rerun_if_host_stalled(|| {
        let mut server = held_go_server();
        let agent = Agent::start_decoded("json", &["--comm", "go_server", "--comm", "side_client"]);
        let port = server.run_for_port();
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("side_client");
        std::fs::copy(fixture("tls_client_openssl"), &exe).unwrap();
        let req = b"GET /side HTTP/1.1\r\nHost: api.acme.com\r\nConnection: close\r\n\r\n".to_vec();
        let f = request_file(dir.path(), &req);
        let out = run_client_on(&exe, port, &f);
        assert!(out.status.success());
        let until = std::time::Instant::now() + Duration::from_secs(15);
        let sides = loop {
            let mut sides: Vec<(String, String, u64)> = agent
                .records()
                .iter()
                .filter(|r| r["type"] == "http" && r["path"] == "/side")
                .map(|r| {
                    (
                        r["side"].as_str().unwrap_or("?").to_string(),
                        r["comm"].as_str().unwrap().to_string(),
                        r["status"].as_u64().unwrap_or(0),
                    )
                })
                .collect();
            sides.sort();
            if sides.len() >= 2 || std::time::Instant::now() > until {
                break sides;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(
            sides,
            [
                ("client".to_string(), "side_client".to_string(), 200),
                ("server".to_string(), "go_server".to_string(), 200),
            ]
        );
    });
}

/// Only files with Go's build information where Go's own reader looks are
/// parsed as Go: every Go fixture (with section headers or stripped of
/// symbols), never plainsight itself, whose read-only data holds the magic
/// bytes as a constant.
#[test]
fn go_build_information_is_looked_for_where_go_puts_it() {
    use plainsight::inspect::{elf, go::BUILDINFO_MAGIC};
    let scan = |p: &std::path::Path| {
        let data = std::fs::read(p).unwrap();
        let has_magic = data
            .windows(BUILDINFO_MAGIC.len())
            .any(|w| w == BUILDINFO_MAGIC);
        let syms = elf::symbols_and_go(&data[..], p, &|_| false).unwrap();
        (
            has_magic,
            syms.go_buildinfo,
            syms.go.is_some_and(|g| g.is_ok()),
        )
    };
    for bin in [
        "go_client",
        "go_client_pie",
        "go_client_stripped",
        "go_server",
    ] {
        assert_eq!(scan(&fixture(bin)), (true, true, true), "{bin}");
    }
    let own = std::path::Path::new(env!("CARGO_BIN_EXE_plainsight"));
    assert_eq!(scan(own), (true, false, false));
}
