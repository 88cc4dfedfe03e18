//! GnuTLS: wget, gnutls-cli and gnutls-serv, exact bytes.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(30);

#[test]
fn gnutls_cli_with_and_without_a_matching_name() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let req = b"GET /g HTTP/1.1\r\nHost: api.acme.com\r\nConnection: close\r\n\r\n".to_vec();
        let cli = |sni: &str| {
            Held::new(
                Path::new("/usr/bin/gnutls-cli"),
                &[
                    "--insecure",
                    "--port",
                    &srv.port.to_string(),
                    "--sni-hostname",
                    sni,
                    "127.0.0.1",
                ],
            )
        };
        let mut yes = cli("api.acme.com");
        let mut no = cli("other.example");
        let agent = sni_pair_agent(&yes, &no);
        yes.go(&req);
        no.go(&req);
        let _ = yes.finish(T);
        let _ = no.finish(T);
        let resp = expected_response("GET", "/g", 0, true);
        let (w, r) = agent.wait_bytes(yes.pid, req.len(), resp.len());
        assert_eq!(show(&w), show(&req));
        assert_eq!(w, req, "each write exactly once (send calls send2)");
        assert_eq!(r, resp);
        let recs = agent.records();
        assert_only_api_acme(&recs, no.pid);
        check_loopback(&recs, yes.pid, None, srv.port);
    });
}

#[test]
fn wget_without_patterns_and_not_captured_with_one() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let url = format!("https://127.0.0.1:{}/wget", srv.port);
        let args = [
            "-q",
            "-O",
            "-",
            "--no-check-certificate",
            "-U",
            "plainsight-test",
            url.as_str(),
        ];
        let mut all = Held::new(Path::new("/usr/bin/wget"), &args);
        let agent = Agent::start(&["--pid", &all.pid.to_string()]);
        all.go(b"");
        let (ok, out, err) = all.finish(T);
        assert!(ok, "{err}");
        assert_eq!(out, b"ok GET /wget 0\n");
        let req = format!(
            "GET /wget HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: plainsight-test\r\nAccept: */*\r\nAccept-Encoding: identity\r\nConnection: Keep-Alive\r\n\r\n",
            srv.port
        )
        .into_bytes();
        let resp = expected_response("GET", "/wget", 0, false);
        let (w, r) = agent.wait_bytes(all.pid, req.len(), resp.len());
        assert_eq!(show(&w), show(&req));
        assert_eq!(w, req);
        assert_eq!(r, resp);
        drop(agent);

        // An IP address has no server name: with a pattern, nothing is captured.
        let mut none = Held::new(Path::new("/usr/bin/wget"), &args);
        let agent = Agent::start(&["--pid", &none.pid.to_string(), "--sni", "*.acme.com"]);
        none.go(b"");
        assert!(none.finish(T).0);
        std::thread::sleep(Duration::from_millis(500));
        assert!(agent.records().iter().all(|r| r["type"] != "data"));
    });
}

/// gnutls-serv as the server: what it reads is the client's request, what it
/// writes is exactly what the client receives.
#[test]
fn gnutls_serv_captured_on_the_server_side() {
    rerun_if_host_stalled(|| {
        let d = fixtures();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut server = Held::new(
            Path::new("/usr/bin/gnutls-serv"),
            &[
                "--http",
                "--x509certfile",
                d.join("cert.pem").to_str().unwrap(),
                "--x509keyfile",
                d.join("key.pem").to_str().unwrap(),
                "-p",
                &port.to_string(),
            ],
        );
        let agent = Agent::start(&["--pid", &server.pid.to_string()]);
        server.go_keep_stdin();
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "gnutls-serv did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let dir = tempfile::tempdir().unwrap();
        let req = b"GET /from-client HTTP/1.0\r\nHost: api.acme.com\r\n\r\n".to_vec();
        let f = request_file(dir.path(), &req);
        let out = std::process::Command::new(fixture("tls_client_openssl"))
            .args([
                "127.0.0.1",
                &port.to_string(),
                "api.acme.com",
                f.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(out.stdout.starts_with(b"HTTP/1.0 200 OK"));
        let (w, r) = agent.wait_bytes(server.pid, out.stdout.len(), req.len());
        assert_eq!(r, req, "server read the request");
        assert_eq!(show(&w), show(&out.stdout));
        assert_eq!(w, out.stdout, "server wrote what the client got");
        let recs = agent.records();
        check_loopback(&recs, server.pid, None, port);
    });
}
