//! Erlang/OTP's `ssl` (docs/erlang.md): an `httpc` client against the
//! tests' server and an `ssl:listen` server hit by curl, TLS 1.3 and 1.2,
//! under `--sni`: exact request and response bytes in the right process,
//! on the right side of its connection, with the server name from the
//! ClientHello; a connection with another name not captured at all.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn escript(name: &str) -> PathBuf {
    script(&format!("erlang/{name}"))
}

/// What httpc sends for `path` to 127.0.0.1:`port` (headers as inets
/// writes them, "connection: close" asked by the escript).
fn httpc_request(path: &str, port: u16) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\ncontent-length: 0\r\nte: \r\nhost: 127.0.0.1:{port}\r\n\
         connection: close\r\n\r\n"
    )
    .into_bytes()
}

/// The crypto NIF's coverage record: Erlang, captured (written once, for
/// the first of `pids` to map it).
fn assert_erlang_covered(agent: &Agent, pids: &[u32]) {
    let cov = agent.coverage();
    assert!(
        cov.iter().any(|c| pids.iter().any(|p| c["pid"] == *p)
            && c["stack"] == "erlang"
            && c["captured"] == true
            && c["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("/crypto.so"))),
        "{cov:?}"
    );
}

/// Stops the agent: every Erlang record was tied to its socket.
fn assert_all_tied(agent: &mut Agent) {
    let log = agent.stop();
    assert!(
        log.contains("; 0 Erlang records whose key was never tied to its socket"),
        "{log}"
    );
}

/// The server-name records of `pid`.
fn sni_records(recs: &[Value], pid: u32) -> Vec<&Value> {
    recs.iter()
        .filter(|r| r["type"] == "sni" && r["pid"] == pid)
        .collect()
}

/// Two httpc clients over TLS `version` under `--sni *.acme.com`: the one
/// naming api.acme.com captured exactly (its request written, the server's
/// response read, both as the server recorded them), the one naming
/// other.example not at all.
fn httpc_under_sni(version: &str, path: &str) {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("server.json");
    let srv = Server::start_with(&["--record", record.to_str().unwrap()]);
    let port = srv.port.to_string();
    let client = |name: &str| {
        Held::new(
            &escript("httpc_client.escript"),
            &[&port, name, path, version],
        )
    };
    let mut yes = client("api.acme.com");
    let mut no = client("other.example");
    let mut agent = sni_pair_agent(&yes, &no);
    yes.go(b"");
    no.go(b"");
    let t = Duration::from_secs(60);
    let (ok, body, err) = yes.finish(t);
    assert!(ok, "httpc: {err}");
    assert_eq!(body, format!("ok GET {path} 0\n").into_bytes());
    let (ok, _, err) = no.finish(t);
    assert!(ok, "httpc: {err}");

    let req = httpc_request(path, srv.port);
    let resp = expected_response("GET", path, 0, true);
    // What the server read and wrote on the captured connection.
    let seen = recorded(&record);
    let theirs = seen
        .iter()
        .find(|s| s.sni.as_deref() == Some("api.acme.com"))
        .expect("the server recorded the exchange");
    assert_eq!(show(&theirs.request), show(&req));
    assert_eq!(theirs.response, resp);

    let (w, r) = agent.wait_bytes(yes.pid, req.len(), resp.len());
    assert_eq!(show(&w), show(&req), "httpc's request, each byte once");
    assert_eq!(w, req);
    assert_eq!(r, resp, "the response httpc read");
    let recs = agent.records();
    assert_only_api_acme(&recs, no.pid);
    let sni = sni_records(&recs, yes.pid);
    assert_eq!(sni.len(), 1, "{sni:?}");
    assert_eq!(sni[0]["sni"], "api.acme.com");
    // The client's side: its own port is the client's, the server's port
    // the test server's, on every record.
    let (client_port, _) = check_loopback(&recs, yes.pid, None, srv.port);
    assert_eq!(
        Some(client_port),
        seen.iter()
            .find(|s| s.sni.as_deref() == Some("api.acme.com"))
            .map(|s| s.port)
    );
    assert_erlang_covered(&agent, &[yes.pid, no.pid]);
    assert_all_tied(&mut agent);
}

#[test]
fn httpc_tls13_captured_exactly_under_sni() {
    rerun_if_host_stalled(|| httpc_under_sni("tlsv1.3", "/erlang13"));
}

#[test]
fn httpc_tls12_captured_exactly_under_sni() {
    rerun_if_host_stalled(|| httpc_under_sni("tlsv1.2", "/erlang12"));
}

/// An `ssl:listen` server over TLS `version` (curl's options `curl_tls`),
/// under `--sni api.acme.com`: curl's connection to api.acme.com captured
/// on the server's side, exactly (curl's request read, what curl received
/// written), named from the ClientHello the server read; its connection
/// from curl naming other.example not at all.
fn ssl_server_under_sni(version: &str, curl_tls: &[&str]) {
    let (cert, key) = cert_args();
    let mut server = Held::new(&escript("ssl_server.escript"), &[&cert, &key, version]);
    let mut agent = Agent::start(&["--sni", "api.acme.com", "--pid", &server.pid.to_string()]);
    let port = server.run_for_port();
    let t = Duration::from_secs(60);
    let mut yes = curl_held("api.acme.com", port, curl_tls);
    yes.go(b"");
    let (ok, got, err) = yes.finish(t);
    assert!(ok, "curl: {err}");
    let body = b"hello from erlang /index.txt\n";
    let want = [
        &b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 29\r\n\
           Connection: close\r\n\r\n"[..],
        body,
    ]
    .concat();
    assert_eq!(show(&got), show(&want));
    let mut no = curl_held("other.example", port, curl_tls);
    no.go(b"");
    let (ok, _, err) = no.finish(t);
    assert!(ok, "curl: {err}");

    let req = curl_request("api.acme.com", port);
    let (w, r) = agent.wait_bytes(server.pid, want.len(), req.len());
    assert_eq!(show(&r), show(&req));
    assert_eq!(r, req, "the server read curl's request");
    assert_eq!(w, want, "the server wrote what curl received");
    let recs = agent.records();
    let sni = sni_records(&recs, server.pid);
    assert_eq!(sni.len(), 1, "other.example named nothing: {sni:?}");
    assert_eq!(sni[0]["sni"], "api.acme.com");
    assert!(recs
        .iter()
        .filter(|r| r["type"] == "data")
        .all(|r| r["sni"] == "api.acme.com" && r["pid"] == server.pid));
    // The server's side: the server's port is its own listening port.
    check_loopback(&recs, server.pid, None, port);
    assert_erlang_covered(&agent, &[server.pid]);
    assert_all_tied(&mut agent);
}

#[test]
fn ssl_server_tls13_captured_exactly_under_sni() {
    rerun_if_host_stalled(|| ssl_server_under_sni("tlsv1.3", &["--tlsv1.3"]));
}

#[test]
fn ssl_server_tls12_captured_exactly_under_sni() {
    rerun_if_host_stalled(|| ssl_server_under_sni("tlsv1.2", &["--tls-max", "1.2"]));
}

/// ChaCha20-Poly1305: no explicit nonce in TLS 1.2's records (the record
/// is tied by 16 bytes of ciphertext, as in TLS 1.3), and in TLS 1.3.
#[test]
fn ssl_server_chacha20_captured_exactly_under_sni() {
    rerun_if_host_stalled(|| {
        ssl_server_under_sni(
            "tlsv1.2",
            &[
                "--tls-max",
                "1.2",
                "--ciphers",
                "ECDHE-RSA-CHACHA20-POLY1305",
            ],
        );
        ssl_server_under_sni(
            "tlsv1.3",
            &[
                "--tlsv1.3",
                "--tls13-ciphers",
                "TLS_CHACHA20_POLY1305_SHA256",
            ],
        );
    });
}

/// A TLS 1.3 server's first send under its new key is its whole response,
/// here 13 records sealed before the send that ties the key: all held,
/// then emitted in order, exactly.
#[test]
fn ssl_server_tls13_large_first_response_exact() {
    rerun_if_host_stalled(|| {
        let (cert, key) = cert_args();
        let mut server = Held::new(&escript("ssl_server.escript"), &[&cert, &key, "tlsv1.3"]);
        let mut agent = Agent::start(&["--pid", &server.pid.to_string()]);
        let port = server.run_for_port();
        let n = 200_000;
        let body: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
        let url = format!("https://api.acme.com:{port}/big/{n}");
        let resolve = format!("api.acme.com:{port}:127.0.0.1");
        // To a file: a pipe nobody reads while curl runs would fill.
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("response");
        let mut curl = Held::new(
            std::path::Path::new("/usr/bin/curl"),
            &[
                "-o",
                out.to_str().unwrap(),
                "-sS",
                "-k",
                "-i",
                "--http1.1",
                "--tlsv1.3",
                "-A",
                "plainsight-test",
                "--resolve",
                &resolve,
                &url,
            ],
        );
        curl.go(b"");
        let (ok, _, err) = curl.finish(Duration::from_secs(60));
        assert!(ok, "curl: {err}");
        let got = std::fs::read(&out).unwrap();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {n}\r\n\
             Connection: close\r\n\r\n"
        );
        let want = [head.as_bytes(), &body].concat();
        assert!(got == want, "curl got {} bytes", got.len());
        let req = format!(
            "GET /big/{n} HTTP/1.1\r\nHost: api.acme.com:{port}\r\nUser-Agent: plainsight-test\r\n\
             Accept: */*\r\n\r\n"
        )
        .into_bytes();
        let (w, r) = agent.wait_bytes(server.pid, want.len(), req.len());
        assert_eq!(r, req);
        assert!(
            w == want,
            "the server's write: {} bytes of {}",
            w.len(),
            want.len()
        );
        assert_all_tied(&mut agent);
    });
}

/// Eight httpc connections of one node at once, TLS 1.3 then 1.2: each
/// connection's records are its own request and its own response, on the
/// socket the server saw that request on (every key tied to its socket).
#[test]
fn concurrent_httpc_connections_each_exact() {
    rerun_if_host_stalled(|| {
        for version in ["tlsv1.3", "tlsv1.2"] {
            concurrent_httpc(version);
        }
    });
}

fn concurrent_httpc(version: &str) {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("server.json");
    let srv = Server::start_with(&["--record", record.to_str().unwrap()]);
    let paths: Vec<String> = (0..8).map(|i| format!("/{version}/conn{i}")).collect();
    let mut cli = Held::new(
        &escript("httpc_client.escript"),
        &[
            &srv.port.to_string(),
            "api.acme.com",
            &paths.join(","),
            version,
        ],
    );
    let mut agent = Agent::start(&["--pid", &cli.pid.to_string()]);
    cli.go(b"");
    let (ok, out, err) = cli.finish(Duration::from_secs(60));
    assert!(ok, "httpc: {err}");
    let bodies: String = paths.iter().map(|p| format!("ok GET {p} 0\n")).collect();
    assert_eq!(String::from_utf8_lossy(&out), bodies);
    let total_w: usize = paths.iter().map(|p| httpc_request(p, srv.port).len()).sum();
    let total_r: usize = paths
        .iter()
        .map(|p| expected_response("GET", p, 0, true).len())
        .sum();
    agent.wait_bytes(cli.pid, total_w, total_r);
    let recs = agent.records();
    let mut conns: std::collections::BTreeMap<String, (Vec<u8>, Vec<u8>, u64)> = Default::default();
    for r in recs
        .iter()
        .filter(|r| r["type"] == "data" && r["pid"] == cli.pid)
    {
        let e = conns
            .entry(r["conn"].as_str().unwrap_or_default().to_string())
            .or_default();
        e.2 = r["client"]["port"].as_u64().unwrap_or(0);
        match r["direction"].as_str() {
            Some("write") => e.0.extend(record_bytes(r)),
            _ => e.1.extend(record_bytes(r)),
        }
    }
    assert_eq!(conns.len(), paths.len(), "{version}: one connection a path");
    for p in &paths {
        let req = httpc_request(p, srv.port);
        let (_, (_, r, port)) = conns
            .iter()
            .find(|(_, (w, _, _))| *w == req)
            .unwrap_or_else(|| panic!("{version}: no connection wrote the request for {p}"));
        assert_eq!(
            *r,
            expected_response("GET", p, 0, true),
            "{version}: {p}'s connection read its own response"
        );
        assert_eq!(
            *port,
            u64::from(seen_for(&record, p).port),
            "{version}: {p} on the socket the server saw it on"
        );
    }
    let sni = sni_records(&recs, cli.pid);
    assert_eq!(sni.len(), paths.len(), "{version}: {sni:?}");
    assert_all_tied(&mut agent);
}

/// A connection made before the agent started: its keys were never tied
/// to a socket (its ClientHello and record boundaries went unseen), so
/// nothing of it is emitted; its records are counted, not guessed.
#[test]
fn a_connection_older_than_the_agent_is_not_guessed() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let mut cli = Held::new(
            &escript("ssl_client_early.escript"),
            &[&srv.port.to_string(), "api.acme.com", "/early", "tlsv1.3"],
        );
        cli.go_keep_stdin();
        assert_eq!(cli.read_line(), "CONNECTED");
        let mut agent = Agent::start(&["--pid", &cli.pid.to_string()]);
        cli.send_line("go");
        cli.close_stdin();
        let (ok, out, err) = cli.finish(Duration::from_secs(60));
        assert!(ok, "client: {err}");
        assert_eq!(out, expected_response("GET", "/early", 0, true));
        std::thread::sleep(Duration::from_millis(500));
        let recs = agent.records();
        assert!(
            recs.iter().all(|r| r["pid"] != cli.pid),
            "nothing of a connection the agent did not see begin: {recs:?}"
        );
        let log = agent.stop();
        assert!(
            !log.contains("; 0 Erlang records whose key was never tied to its socket"),
            "its response counted: {log}"
        );
    });
}
