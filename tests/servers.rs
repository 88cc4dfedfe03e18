//! Both ends (#17): servers captured on their side with the server name
//! their clients sent (so `--sni` selects their connections), OpenSSL's SSL
//! BIO, and NSS. Exact bytes, side and pairing, against real servers
//! (nginx, node, python, Go, rustls) and real clients (tstclnt).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

/// The OpenSSL test client against `port` with server name `sni`.
fn client(port: u16, sni: &str, req: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let f = request_file(dir.path(), req);
    let out = Command::new(fixture("tls_client_openssl"))
        .args(["127.0.0.1", &port.to_string(), sni, f.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `server` (held, prints its port), one raw and one decoded agent on
/// it with `--sni api.acme.com`, and a client for api.acme.com and one for
/// other.example. Checks: the server's reads are exactly the first
/// request, its writes exactly `response` (given the path), every record
/// names api.acme.com, the other connection is not captured, and the
/// decoded exchange is the server's side with its status.
fn sni_server(name: &str, program: &Path, args: &[&str], response: fn(&str) -> Vec<u8>) {
    rerun_if_host_stalled(|| {
        // Held before it runs, so that the agents see it start.
        let mut held = Held::new(program, args);
        let pid = held.pid.to_string();
        let raw = Agent::start(&["--sni", "api.acme.com", "--pid", &pid]);
        let decoded = Agent::start_decoded("json", &["--sni", "api.acme.com", "--pid", &pid]);
        let port = held.run_for_port();
        let yes = request("/yes", "api.acme.com");
        let want = response("/yes");
        assert_eq!(client(port, "api.acme.com", &yes), want, "{name}");
        let no = request("/no", "other.example");
        assert_eq!(
            client(port, "other.example", &no),
            response("/no"),
            "{name}"
        );

        let (w, r) = raw.wait_bytes(held.pid, want.len(), yes.len());
        assert_eq!(show(&r), show(&yes), "{name}: the server's reads");
        assert_eq!(r, yes, "{name}");
        assert_eq!(w, want, "{name}: the server's writes");
        let recs = raw.records();
        let names: Vec<&Value> = recs
            .iter()
            .filter(|r| r["type"] == "data" || r["type"] == "sni")
            .map(|r| &r["sni"])
            .collect();
        assert!(
            !names.is_empty() && names.iter().all(|n| *n == "api.acme.com"),
            "{name}: {names:?}"
        );
        // Its client's endpoint and its own, by role, on raw and decoded
        // records.
        let (cport, _) = check_loopback(&recs, held.pid, None, port);

        let ex = decoded.exchanges(held.pid, 1);
        assert_eq!(ex.len(), 1, "{name}: {ex:?}");
        check_loopback(&ex, held.pid, Some(cport), port);
        let e = &ex[0];
        assert_eq!(
            (
                &e["side"],
                &e["sni"],
                &e["method"],
                &e["path"],
                &e["status"]
            ),
            (
                &Value::from("server"),
                &Value::from("api.acme.com"),
                &Value::from("GET"),
                &Value::from("/yes"),
                &Value::from(200)
            ),
            "{name}"
        );
        assert!(
            e["latency_ms"].as_f64().is_some_and(|l| l >= 0.0),
            "{name}: {e}"
        );
    });
}

fn python_response(path: &str) -> Vec<u8> {
    expected_response("GET", path, 0, true)
}

#[test]
fn python_ssl_server_by_its_clients_server_name() {
    let (c, k) = cert_args();
    let script = script("tls_server.py");
    sni_server(
        "python",
        Path::new("/usr/bin/python3"),
        &[script.to_str().unwrap(), "--cert", &c, "--key", &k],
        python_response,
    );
}

#[test]
fn node_https_server_by_its_clients_server_name() {
    let (c, k) = cert_args();
    let script = script("node_server.js");
    sni_server(
        "node",
        Path::new("/usr/bin/node"),
        &[script.to_str().unwrap(), "--cert", &c, "--key", &k],
        python_response,
    );
}

#[test]
fn rustls_servers_by_their_clients_server_name() {
    let (c, k) = cert_args();
    for (bin, version) in [
        ("rustls_server_awslc", "--tls13-only"),
        ("rustls_server_awslc", "--tls12-only"),
        ("rustls_server_ring", "--tls13-only"),
    ] {
        sni_server(
            &format!("{bin} {version}"),
            &fixture(bin),
            &["--cert", &c, "--key", &k, version],
            python_response,
        );
    }
}

#[test]
fn go_server_by_its_clients_server_name() {
    let (c, k) = cert_args();
    // net/http sorts its headers (go_server.go).
    fn go_response(path: &str) -> Vec<u8> {
        let body = format!("ok GET {path} 0\n");
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
    sni_server(
        "go",
        &fixture("go_server"),
        &["-cert", &c, "-key", &k],
        go_response,
    );
}

/// curl's response body; its own source port in `local_port`.
fn curl_from(port: u16, sni: &str, path: &str, http: &str, local_port: &mut Vec<u16>) -> String {
    let out = Command::new("curl")
        .args([
            "-sk",
            "-w",
            "\n%{local_port}",
            http,
            "--resolve",
            &format!("{sni}:{port}:127.0.0.1"),
            &format!("https://{sni}:{port}{path}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, p) = text.rsplit_once('\n').expect("curl's local port");
    local_port.push(p.parse().expect("a port"));
    body.to_string()
}

#[test]
fn nginx_http1_and_http2_by_their_clients_server_name() {
    rerun_if_host_stalled(|| {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = nginx_conf(dir.path(), port);
        let e = dir.path().join("error.log").display().to_string();
        let mut held = Held::new(
            Path::new("/usr/sbin/nginx"),
            &["-c", conf.to_str().unwrap(), "-e", &e],
        );
        let pid = held.pid;
        let agent = Agent::start_decoded(
            "json",
            &["--sni", "api.acme.com", "--pid", &pid.to_string()],
        );
        held.go_keep_stdin();
        wait_port(port);
        let mut ports = Vec::new();
        let mut curl =
            |sni: &str, path: &str, http: &str| curl_from(port, sni, path, http, &mut ports);
        assert_eq!(curl("api.acme.com", "/h1", "--http1.1"), "hello GET /h1\n");
        assert_eq!(curl("api.acme.com", "/h2", "--http2"), "hello GET /h2\n");
        assert_eq!(curl("other.example", "/no", "--http2"), "hello GET /no\n");
        let ex = agent.exchanges(pid, 2);
        let got = exchange_rows(&ex);
        let row = |p: &str, path: &str| {
            (
                p.to_string(),
                path.to_string(),
                "server".to_string(),
                "api.acme.com".to_string(),
                200,
                format!("hello GET {path}\n"),
            )
        };
        assert_eq!(got, [row("HTTP/1.1", "/h1"), row("HTTP/2", "/h2")]);
        // Each exchange names its own client: curl's source port.
        for (path, p) in [("/h1", ports[0]), ("/h2", ports[1])] {
            let one: Vec<Value> = ex.iter().filter(|e| e["path"] == path).cloned().collect();
            check_loopback(&one, pid, Some(p), port);
        }
    });
}

/// OpenSSL's SSL BIO on both ends: `openssl s_server -WWW` serves a file
/// through BIO_f_ssl, bio_client fetches it through BIO_new_ssl_connect.
/// Each end's bytes exactly once, and the server's connection has its
/// client's server name.
#[test]
fn ssl_bio_on_both_ends() {
    rerun_if_host_stalled(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("page.txt"), "served through an SSL BIO\n").unwrap();
        let port = free_port();
        let (c, k) = cert_args();
        let accept = format!("127.0.0.1:{port}");
        let mut server = Held::in_dir(
            Path::new("/usr/bin/openssl"),
            &[
                "s_server", "-WWW", "-quiet", "-accept", &accept, "-cert", &c, "-key", &k,
            ],
            dir.path(),
        );
        let req = b"GET /page.txt HTTP/1.0\r\n\r\n".to_vec();
        let f = request_file(dir.path(), &req);
        let mut cl = Held::new(
            &fixture("bio_client"),
            &[
                "127.0.0.1",
                &port.to_string(),
                "api.acme.com",
                f.to_str().unwrap(),
            ],
        );
        let agent = Agent::start(&[
            "--sni",
            "api.acme.com",
            "--pid",
            &server.pid.to_string(),
            "--pid",
            &cl.pid.to_string(),
        ]);
        server.go_keep_stdin();
        wait_port(port);
        cl.go(b"");
        let (ok, out, err) = cl.finish(T);
        assert!(ok, "{err}");
        let resp =
            b"HTTP/1.0 200 ok\r\nContent-type: text/plain\r\n\r\nserved through an SSL BIO\n";
        assert_eq!(out, resp);
        let (w, r) = agent.wait_bytes(server.pid, resp.len(), req.len());
        assert_eq!((show(&r), show(&w)), (show(&req), show(resp)), "s_server");
        let (w, r) = agent.wait_bytes(cl.pid, req.len(), resp.len());
        assert_eq!((show(&w), show(&r)), (show(&req), show(resp)), "bio_client");
        let recs = agent.records();
        for pid in [server.pid, cl.pid] {
            let names: Vec<&Value> = recs
                .iter()
                .filter(|r| r["type"] == "data" && r["pid"] == pid)
                .map(|r| &r["sni"])
                .collect();
            assert!(
                names.iter().all(|n| *n == "api.acme.com"),
                "{pid}: {names:?}"
            );
        }
    });
}

/// NSS: Debian's tstclnt, captured exactly; the other server name not.
#[test]
fn nss_tstclnt_exact_bytes_and_server_name_filter() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let port = srv.port.to_string();
        let tstclnt = Path::new("/usr/bin/tstclnt");
        // no certificate database, accept the test certificate, client
        // speaks first (the request on stdin), server name by -a
        let args = |sni: &str| -> Vec<String> {
            [
                "-D",
                "-o",
                "-f",
                "-h",
                "127.0.0.1",
                "-p",
                port.as_str(),
                "-a",
                sni,
            ]
            .map(String::from)
            .to_vec()
        };
        // The request from a file: with a pipe on stdin tstclnt does not
        // exit after the response. Only this test runs tstclnt.
        let agent = Agent::start(&["--sni", "api.acme.com", "--comm", "tstclnt"]);
        let dir = tempfile::tempdir().unwrap();
        let run = |sni: &str, req: &[u8]| {
            let f = request_file(dir.path(), req);
            let mut cmd = Command::new(tstclnt);
            cmd.args(args(sni)).stdin(std::fs::File::open(&f).unwrap());
            let (pid, out) = run_to_end(&mut cmd);
            (pid, out.stdout)
        };
        let req = request("/nss", "api.acme.com");
        let resp = expected_response("GET", "/nss", 0, true);
        let (yes, out) = run("api.acme.com", &req);
        assert_eq!(out, resp);
        let (no, _) = run("other.example", &request("/other", "other.example"));
        let (w, r) = agent.wait_bytes(yes, req.len(), resp.len());
        assert_eq!((show(&w), show(&r)), (show(&req), show(&resp)));
        assert_eq!((w, r), (req, resp));
        let recs = agent.records();
        assert_only_api_acme(&recs, no);
        check_loopback(&recs, yes, None, srv.port);
    });
}

/// `--capture-no-sni` keeps its meaning on a server: a client that sends no
/// server name is captured with it and not without it; a non-matching
/// name never.
#[test]
fn a_server_connection_without_server_name_follows_capture_no_sni() {
    rerun_if_host_stalled(|| {
        let (c, k) = cert_args();
        let script = script("tls_server.py");
        let mut held = Held::new(
            Path::new("/usr/bin/python3"),
            &[script.to_str().unwrap(), "--cert", &c, "--key", &k],
        );
        let pid = held.pid.to_string();
        let with = Agent::start(&["--sni", "api.acme.com", "--capture-no-sni", "--pid", &pid]);
        let without = Agent::start(&["--sni", "api.acme.com", "--pid", &pid]);
        let port = held.run_for_port();
        let bare = request("/bare", "127.0.0.1");
        let want = python_response("/bare");
        assert_eq!(client(port, "-", &bare), want);
        let no = request("/no", "other.example");
        assert_eq!(client(port, "other.example", &no), python_response("/no"));
        let (w, r) = with.wait_bytes(held.pid, want.len(), bare.len());
        assert_eq!((show(&r), show(&w)), (show(&bare), show(&want)));
        assert!(with
            .records()
            .iter()
            .filter(|r| r["type"] == "data")
            .all(|r| r["sni"].is_null()));
        // Both agents read the same ring records as they come: the second
        // has had as long as the first.
        std::thread::sleep(Duration::from_millis(500));
        let recs = without.records();
        assert!(recs.iter().all(|r| r["type"] != "data"), "{recs:?}");
    });
}

/// GnuTLS's gnutls-serv: its connection named by the ClientHello read in
/// gnutls_handshake.
#[test]
fn gnutls_server_by_its_clients_server_name() {
    rerun_if_host_stalled(|| {
        let (c, k) = cert_args();
        let port = free_port();
        let mut held = Held::new(
            Path::new("/usr/bin/gnutls-serv"),
            &[
                "--http",
                "-q",
                "-p",
                &port.to_string(),
                "--x509certfile",
                &c,
                "--x509keyfile",
                &k,
            ],
        );
        let pid = held.pid;
        let agent = Agent::start_decoded(
            "json",
            &["--sni", "api.acme.com", "--pid", &pid.to_string()],
        );
        held.go_keep_stdin();
        wait_port(port);
        curl_from(port, "api.acme.com", "/g", "--http1.1", &mut Vec::new());
        curl_from(port, "other.example", "/o", "--http1.1", &mut Vec::new());
        let ex = agent.exchanges(pid, 1);
        let got: Vec<_> = ex
            .iter()
            .map(|e| (&e["path"], &e["side"], &e["sni"], &e["status"]))
            .collect();
        assert_eq!(
            got,
            [(
                &Value::from("/g"),
                &Value::from("server"),
                &Value::from("api.acme.com"),
                &Value::from(200)
            )]
        );
    });
}
