//! rustls programs (static TLS, no stable ABI): the ClientHello path and the
//! AEAD key-context path, with real rustls clients built as fixtures.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);

/// A POST with a body and a multi-record response (/big/N).
fn post_big(host: &str, n: usize) -> Vec<u8> {
    let body = "name=plainsight&value=1234567890".repeat(4);
    format!(
        "POST /big/{n} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn big_response(n: usize) -> Vec<u8> {
    let body: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    r.extend(body);
    r
}

fn run(bin: &str, tls: &str, cipher: &str) {
    let srv = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let n = 50_000;
    let req = post_big("api.acme.com", n);
    let f = request_file(dir.path(), &req);
    let port = srv.port.to_string();
    let fa = f.to_str().unwrap();
    let args = [
        "127.0.0.1",
        port.as_str(),
        "api.acme.com",
        fa,
        tls,
        "--cipher",
        cipher,
    ];
    let mut yes = Held::new(&fixture(bin), &args);
    let other_req = post_big("other.example", 10);
    let f2 = dir.path().join("other.bin");
    std::fs::write(&f2, &other_req).unwrap();
    let args2 = [
        "127.0.0.1",
        port.as_str(),
        "other.example",
        f2.to_str().unwrap(),
        tls,
        "--cipher",
        cipher,
    ];
    let mut no = Held::new(&fixture(bin), &args2);
    // The first static TLS process makes the agent attach the syscall
    // tracepoints while the process is held; parallel tests' agents
    // contend for the kernel's trace-event mutex, so allow a longer hold.
    let agent = Agent::start(&[
        "--sni",
        "*.acme.com",
        "--pid",
        &yes.held_pid(),
        "--pid",
        &no.held_pid(),
        "--max-pause-ms",
        "5000",
    ]);
    yes.go(b"");
    let (ok, out, err) = yes.finish(T);
    assert!(ok, "{err}");
    let resp = big_response(n);
    assert_eq!(out, resp, "the client itself got the response");
    no.go(b"");
    let (ok2, _, err2) = no.finish(T);
    assert!(ok2, "{err2}");
    let (w, r) = agent.wait_bytes(yes.pid, req.len(), resp.len());
    if w != req {
        eprintln!("agent log:\n{}", agent.stderr());
    }
    assert_eq!(show(&w), show(&req), "{bin} {tls} {cipher}: request");
    assert_eq!(w, req);
    assert_eq!(r.len(), resp.len(), "{bin} {tls} {cipher}: response length");
    assert!(r == resp, "{bin} {tls} {cipher}: response bytes differ");
    let recs = agent.records();
    assert!(
        recs.iter().all(|r| r["pid"] != no.pid),
        "other.example must not be captured"
    );
    assert!(recs
        .iter()
        .any(|r| r["type"] == "sni" && r["sni"] == "api.acme.com"));
    for r in recs.iter().filter(|r| r["type"] == "data") {
        assert_eq!(r["sni"], "api.acme.com");
    }
    // The socket its ClientHello went over: every record has it.
    let (_, n) = check_loopback(&recs, yes.pid, None, srv.port);
    assert!(n >= 3, "{bin}: {n} records with endpoints");
}

trait HeldPid {
    fn held_pid(&self) -> String;
}
impl HeldPid for Held {
    fn held_pid(&self) -> String {
        self.pid.to_string()
    }
}

#[test]
fn awslc_tls13_aes_gcm() {
    rerun_if_host_stalled(|| {
        run("rustls_client_awslc", "--tls13", "aesgcm");
    });
}

#[test]
fn awslc_tls13_chacha20() {
    rerun_if_host_stalled(|| {
        run("rustls_client_awslc", "--tls13", "chacha");
    });
}

#[test]
fn awslc_tls12_aes_gcm() {
    rerun_if_host_stalled(|| {
        run("rustls_client_awslc", "--tls12", "aesgcm");
    });
}

#[test]
fn awslc_tls12_chacha20() {
    rerun_if_host_stalled(|| {
        run("rustls_client_awslc", "--tls12", "chacha");
    });
}

/// rustls on aws-lc, stripped: aws-lc's functions located without symbols
/// (src/inspect/locate.rs), captured exactly like the unstripped build,
/// under `--sni` (the other name not captured), TLS 1.3 and 1.2.
#[test]
fn stripped_awslc_tls13_aes_gcm() {
    rerun_if_host_stalled(|| {
        run("rustls_client_awslc_stripped", "--tls13", "aesgcm");
    });
}

#[test]
fn stripped_awslc_tls12_chacha() {
    rerun_if_host_stalled(|| {
        run("rustls_client_awslc_stripped", "--tls12", "chacha");
    });
}

#[test]
fn ring_tls13_aes_gcm() {
    rerun_if_host_stalled(|| {
        run("rustls_client_ring", "--tls13", "aesgcm");
    });
}

#[test]
fn ring_tls13_chacha20() {
    rerun_if_host_stalled(|| {
        run("rustls_client_ring", "--tls13", "chacha");
    });
}

#[test]
fn ring_tls12_aes_gcm() {
    rerun_if_host_stalled(|| {
        run("rustls_client_ring", "--tls12", "aesgcm");
    });
}

#[test]
fn ring_tls12_chacha20() {
    rerun_if_host_stalled(|| {
        run("rustls_client_ring", "--tls12", "chacha");
    });
}

/// uv (PyPI's wheel: a stripped Rust program, rustls on aws-lc-rs, built by
/// others): its aws-lc located without symbols, its index request and the
/// server's answer captured exactly as the server saw them.
#[test]
fn uv_a_real_stripped_program() {
    rerun_if_host_stalled(|| {
        let uv = repo().join("target/uv/uv");
        assert!(
            uv.exists(),
            "run scripts/uv.sh target/uv (make test-deps does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("server.jsonl");
        let srv = Server::start_with(&["--record", rec.to_str().unwrap()]);
        let exe = named(uv.to_str().unwrap(), "uv_stripped");
        let agent = Agent::start(&["--comm", "uv_stripped"]);
        let index = format!("https://127.0.0.1:{}/simple/", srv.port);
        let out = std::process::Command::new(&exe)
            .args([
                "pip",
                "install",
                "--dry-run",
                "--break-system-packages",
                "--python",
                "/usr/bin/python3",
                "--allow-insecure-host",
                "127.0.0.1",
                "--index-url",
                &index,
                "idna",
            ])
            .env("UV_NO_CACHE", "1")
            .current_dir(dir.path())
            .output()
            .unwrap();
        // The test server answers text, not an index: uv says so.
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("Unsupported `Content-Type` \"text/plain\""),
            "{err}"
        );
        let seen = recorded(&rec);
        assert_eq!(seen.len(), 1);
        let (req, resp) = (&seen[0].request, &seen[0].response);
        assert!(req.starts_with(b"GET /simple/idna/ HTTP/1.1\r\n"));
        let pid = {
            let until = std::time::Instant::now() + T;
            loop {
                if let Some(r) = agent.records().iter().find(|r| r["type"] == "data") {
                    break r["pid"].as_u64().unwrap() as u32;
                }
                assert!(
                    std::time::Instant::now() < until,
                    "uv not captured:\n{}",
                    agent.stderr()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        let (w, r) = agent.wait_bytes(pid, req.len(), resp.len());
        assert_eq!((show(&w), show(&r)), (show(req), show(resp)));
        assert!(agent
            .stderr()
            .lines()
            .any(|l| l.contains("instrumented") && l.contains("EVP_AEAD_CTX_seal (located)")));
    });
}
