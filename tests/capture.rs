//! End to end: the agent captures the exact plaintext of real TLS programs
//! talking to a real TLS server on 127.0.0.1, through the real kernel.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);

fn hello_request(host: &str) -> Vec<u8> {
    format!("GET /hello HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Runs `program args` (started after an agent filtered to it), sends
/// nothing on stdin, and checks the captured request and response bytes.
fn capture_client(program: &std::path::Path, args: &[&str], request: &[u8], response: &[u8]) {
    let mut client = Held::new(program, args);
    let agent = Agent::start(&["--pid", &client.pid.to_string()]);
    client.go(b"");
    let (ok, stdout, stderr) = client.finish(T);
    assert!(ok, "client failed: {stderr}");
    let (w, r) = agent.wait_bytes(client.pid, request.len(), response.len());
    assert_eq!(show(&w), show(request), "request bytes");
    assert_eq!(w, request, "request bytes");
    assert_eq!(show(&r), show(response), "response bytes");
    assert_eq!(r, response, "response bytes");
    // The client really got that response (the body at least).
    let body_start = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(
        stdout.ends_with(&response[body_start..]),
        "client stdout: {}",
        show(&stdout)
    );
}

/// A GET /hello by the fixture client `name` (which takes host, port, server
/// name and request file), captured byte for byte.
fn hello_from_fixture(name: &str) {
    let srv = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let req = hello_request("api.acme.com");
    let f = request_file(dir.path(), &req);
    capture_client(
        &fixture(name),
        &[
            "127.0.0.1",
            &srv.port.to_string(),
            "api.acme.com",
            f.to_str().unwrap(),
        ],
        &req,
        &expected_response("GET", "/hello", 0, true),
    );
}

#[test]
fn curl_http1() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let url = format!("https://127.0.0.1:{}/hello", srv.port);
        let req = format!(
            "GET /hello HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: plainsight-test\r\nAccept: */*\r\n\r\n",
            srv.port
        );
        let curl = std::path::Path::new("/usr/bin/curl");
        capture_client(
            curl,
            &["-sk", "--http1.1", "-A", "plainsight-test", &url],
            req.as_bytes(),
            &expected_response("GET", "/hello", 0, false),
        );
    });
}

#[test]
fn python3_uses_the_ex_functions() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let dir = tempfile::tempdir().unwrap();
        let req = hello_request("api.acme.com");
        let f = request_file(dir.path(), &req);
        capture_client(
            std::path::Path::new("/usr/bin/python3"),
            &[
                script("py_client.py").to_str().unwrap(),
                "127.0.0.1",
                &srv.port.to_string(),
                "api.acme.com",
                f.to_str().unwrap(),
            ],
            &req,
            &expected_response("GET", "/hello", 0, true),
        );
    });
}

#[test]
fn boringssl_client() {
    rerun_if_host_stalled(|| hello_from_fixture("tls_client_boringssl"));
}

#[test]
fn statically_linked_openssl_client() {
    rerun_if_host_stalled(|| hello_from_fixture("tls_client_static"));
}

/// A copy of an executable already inspected (same build ID and size, a new
/// inode) is instrumented from the cache, without being parsed, and
/// captured byte for byte like the first. Results are shared between one
/// owner's files that only the owner may write: a copy owned by another
/// user, or one its group may write, is inspected anew (a forged file must
/// not lend its offsets to others' files).
#[test]
fn a_copy_of_a_known_executable_is_instrumented_from_the_cache() {
    let srv = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let req = hello_request("api.acme.com");
    let resp = expected_response("GET", "/hello", 0, true);
    let f = request_file(dir.path(), &req);
    let port = srv.port.to_string();
    let args = [
        "127.0.0.1",
        port.as_str(),
        "api.acme.com",
        f.to_str().unwrap(),
    ];
    let mut held = Vec::new();
    let names = [
        "cache_first",
        "cache_copy",
        "cache_other_owner",
        "cache_group_writable",
    ];
    for name in names {
        let exe = dir.path().join(name);
        std::fs::copy(fixture("tls_client_static"), &exe).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        match name {
            "cache_other_owner" => std::os::unix::fs::chown(&exe, Some(65534), None).unwrap(),
            "cache_group_writable" => {
                std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o775)).unwrap()
            }
            _ => {}
        }
        held.push(Held::new(&exe, &args));
    }
    let pids: Vec<String> = held.iter().map(|h| h.pid.to_string()).collect();
    let mut argv: Vec<&str> = Vec::new();
    for p in &pids {
        argv.extend(["--pid", p.as_str()]);
    }
    let agent = Agent::start(&argv);
    for h in &mut held {
        h.go(b"");
        let (ok, _, err) = h.finish(T);
        assert!(ok, "{err}");
        let (w, r) = agent.wait_bytes(h.pid, req.len(), resp.len());
        assert_eq!((show(&w), show(&r)), (show(&req), show(&resp)));
        assert_eq!((w, r), (req.clone(), resp.clone()));
    }
    let log = agent.stderr();
    let line = |name: &str| instrumented_line(&log, &format!("/{name} "));
    assert!(!line("cache_first").contains("known content"));
    assert!(
        line("cache_copy").contains("known content: GNU build ID"),
        "{}",
        line("cache_copy")
    );
    assert!(!line("cache_other_owner").contains("known content"));
    assert!(!line("cache_group_writable").contains("known content"));
}

#[test]
fn node_bundled_openssl() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        // node_client.js sends exactly these headers (see the fixture).
        let req = hello_request("api.acme.com");
        capture_client(
            std::path::Path::new("/usr/bin/node"),
            &[
                script("node_client.js").to_str().unwrap(),
                "127.0.0.1",
                &srv.port.to_string(),
                "api.acme.com",
                "GET",
                "/hello",
            ],
            &req,
            &expected_response("GET", "/hello", 0, true),
        );
    });
}

#[test]
fn openssl_s_client() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let req = hello_request("api.acme.com");
        let mut client = Held::new(
            std::path::Path::new("/usr/bin/openssl"),
            &[
                "s_client",
                "-connect",
                &format!("127.0.0.1:{}", srv.port),
                "-servername",
                "api.acme.com",
                "-quiet",
                "-ign_eof",
            ],
        );
        let agent = Agent::start(&["--pid", &client.pid.to_string()]);
        client.go(&req);
        let (_ok, _stdout, _stderr) = client.finish(T);
        let resp = expected_response("GET", "/hello", 0, true);
        let (w, r) = agent.wait_bytes(client.pid, req.len(), resp.len());
        assert_eq!(show(&w), show(&req));
        assert_eq!(w, req);
        assert_eq!(r, resp, "response: {}", show(&r));
    });
}

/// The program maps libssl.so with dlopen only after it started (and after
/// the agent started): the mmap hook finds it.
#[test]
fn dlopen_after_start() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let dir = tempfile::tempdir().unwrap();
        let req = hello_request("api.acme.com");
        let f = request_file(dir.path(), &req);
        let mut client = Held::new(
            &fixture("dlopen_client"),
            &[
                "127.0.0.1",
                &srv.port.to_string(),
                "api.acme.com",
                f.to_str().unwrap(),
            ],
        );
        let agent = Agent::start(&["--pid", &client.pid.to_string()]);
        client.go(b"");
        let (ok, _, err) = client.finish(T);
        assert!(ok, "{err}");
        let resp = expected_response("GET", "/hello", 0, true);
        let (w, r) = agent.wait_bytes(client.pid, req.len(), resp.len());
        assert_eq!(w, req, "request: {}", show(&w));
        assert_eq!(r, resp, "response: {}", show(&r));
    });
}

/// A process already running when the agent starts (libssl mapped already)
/// is found through procfs.
#[test]
fn process_running_before_the_agent() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let dir = tempfile::tempdir().unwrap();
        let req = hello_request("api.acme.com");
        let f = request_file(dir.path(), &req);
        let mut child = std::process::Command::new(fixture("tls_client_openssl"))
            .args([
                "127.0.0.1",
                &srv.port.to_string(),
                "api.acme.com",
                f.to_str().unwrap(),
            ])
            .env("TLS_CLIENT_WAIT_STDIN", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        // Let it map its libraries before the agent starts.
        std::thread::sleep(Duration::from_millis(300));
        let agent = Agent::start(&["--pid", &pid.to_string()]);
        {
            use std::io::Write;
            let mut s = child.stdin.take().unwrap();
            s.write_all(b"go\n").unwrap();
        }
        let _guard = Guard(child);
        let resp = expected_response("GET", "/hello", 0, true);
        let (w, r) = agent.wait_bytes(pid, req.len(), resp.len());
        assert_eq!(w, req);
        assert_eq!(r, resp);
    });
}

/// A process started after the agent, that the agent knows only by name, is
/// captured from its very first request.
#[test]
fn process_started_after_the_agent_first_request() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let dir = tempfile::tempdir().unwrap();
        // A unique name, so that only this test's process matches.
        let name = format!("late{}", std::process::id() % 100000);
        let exe = dir.path().join(&name);
        std::fs::copy(fixture("tls_client_openssl"), &exe).unwrap();
        let req = hello_request("api.acme.com");
        let f = request_file(dir.path(), &req);
        let agent = Agent::start(&["--comm", &name]);
        let out = std::process::Command::new(&exe)
            .args([
                "127.0.0.1",
                &srv.port.to_string(),
                "api.acme.com",
                f.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        let resp = expected_response("GET", "/hello", 0, true);
        let pid = agent
            .records()
            .iter()
            .chain(std::iter::once(&serde_json::Value::Null))
            .find(|r| r["comm"] == name.as_str())
            .and_then(|r| r["pid"].as_u64())
            .map(|p| p as u32);
        let pid = match pid {
            Some(p) => p,
            None => {
                std::thread::sleep(Duration::from_secs(1));
                agent
                    .records()
                    .iter()
                    .find(|r| r["comm"] == name.as_str())
                    .and_then(|r| r["pid"].as_u64())
                    .expect("captured something") as u32
            }
        };
        let (w, r) = agent.wait_bytes(pid, req.len(), resp.len());
        assert_eq!(w, req);
        assert_eq!(r, resp);
    });
}

/// One SSL_write of exactly 1 MiB arrives whole, in one record, byte for byte.
#[test]
fn one_mebibyte_write_arrives_whole() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let dir = tempfile::tempdir().unwrap();
        let head = |n: usize| {
            format!("POST /upload HTTP/1.1\r\nHost: api.acme.com\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n")
        };
        let n = (1usize << 20) - head(1 << 20).len();
        let body: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
        let mut req = head(n).into_bytes();
        req.extend_from_slice(&body);
        assert_eq!(req.len(), 1 << 20);
        let f = request_file(dir.path(), &req);
        let mut client = Held::new(
            &fixture("tls_client_openssl"),
            &[
                "127.0.0.1",
                &srv.port.to_string(),
                "api.acme.com",
                f.to_str().unwrap(),
            ],
        );
        let agent = Agent::start(&["--pid", &client.pid.to_string()]);
        client.go(b"");
        let (ok, _, err) = client.finish(T);
        assert!(ok, "{err}");
        let resp = expected_response("POST", "/upload", body.len(), true);
        let (w, r) = agent.wait_bytes(client.pid, req.len(), resp.len());
        assert_eq!(w.len(), req.len());
        assert!(w == req, "1 MiB request differs");
        assert_eq!(r, resp);
        let writes: Vec<_> = agent
            .records()
            .into_iter()
            .filter(|r| r["type"] == "data" && r["pid"] == client.pid && r["direction"] == "write")
            .collect();
        assert_eq!(writes.len(), 1, "one call, one record");
        assert_eq!(writes[0]["len"], req.len());
        assert_eq!(writes[0]["truncated"], false);
        assert_eq!(writes[0]["lost_bytes"], 0);
    });
}

/// Above --max-capture, the call is cut and flagged.
#[test]
fn larger_than_the_cap_is_flagged_truncated() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let dir = tempfile::tempdir().unwrap();
        let body = vec![b'x'; 100_000];
        let mut req = format!(
            "POST /cap HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        let f = request_file(dir.path(), &req);
        let mut client = Held::new(
            &fixture("tls_client_openssl"),
            &["127.0.0.1", &srv.port.to_string(), "a", f.to_str().unwrap()],
        );
        let agent = Agent::start(&["--pid", &client.pid.to_string(), "--max-capture", "40000"]);
        client.go(b"");
        assert!(client.finish(T).0);
        let (w, _) = agent.wait_bytes(client.pid, 40000, 1);
        assert_eq!(w, &req[..40000]);
        let rec = agent
            .records()
            .into_iter()
            .find(|r| r["type"] == "data" && r["direction"] == "write")
            .unwrap();
        assert_eq!(rec["len"], req.len());
        assert_eq!(rec["captured"], 40000);
        assert_eq!(rec["truncated"], true);
    });
}

/// A warm start: a restarted agent attaches, before any process maps it,
/// each TLS file its cache on disk knows at the path it saw it, with the
/// same content. The process that maps it is then held for no attach, and
/// is logged, reported and captured as at a first sight. Other content at
/// that path is not attached: it is inspected when mapped, as new.
#[test]
fn a_restarted_agent_attaches_known_files_at_start() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache").display().to_string();
        let exe = dir.path().join("warm_client");
        let shown = exe.display().to_string();
        let put = |src: &str| {
            let _ = std::fs::remove_file(&exe);
            std::fs::copy(fixture(src), &exe).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        let req = hello_request("api.acme.com");
        let resp = expected_response("GET", "/hello", 0, true);
        let f = request_file(dir.path(), &req);
        // One agent's run of the client: its pid and the agent's log.
        let run = || {
            let mut agent = Agent::start(&["--comm", "warm_client", "--cache-dir", &cache]);
            let (pid, _) = run_to_end(
                std::process::Command::new(&exe)
                    .args(["127.0.0.1", &srv.port.to_string(), "api.acme.com"])
                    .arg(&f),
            );
            let (w, r) = agent.wait_bytes(pid, req.len(), resp.len());
            assert_eq!((show(&w), show(&r)), (show(&req), show(&resp)));
            let cov: Vec<_> = agent
                .coverage()
                .into_iter()
                .filter(|c| c["file"] == shown.as_str())
                .collect();
            assert_eq!(cov.len(), 1, "{cov:?}");
            assert_eq!(
                (cov[0]["pid"].as_u64(), &cov[0]["captured"]),
                (Some(pid as u64), &serde_json::json!(true))
            );
            let log = agent.stop();
            let line = instrumented_line(&log, &format!("{shown} "));
            // Seen at its exec, or (the fexit hook on mmap) at the
            // loader's mapping just before it.
            let by = format!(" by warm_client[{pid}]");
            assert!(
                line.contains(&format!("executed{by}")) || line.contains(&format!("mapped{by}")),
                "{line}"
            );
            (line, log)
        };
        put("tls_client_static");
        let (line, log) = run();
        assert!(!log.contains("warm start"), "{log}");
        assert!(!line.contains("known content"), "{line}");
        // Restarted: attached before the client ran.
        let (line, log) = run();
        assert!(
            log.contains("warm start: 1 known TLS files attached in "),
            "{log}"
        );
        assert!(log.contains(&format!("warm start: {shown} [")), "{log}");
        assert!(
            line.contains("known content: GNU build ID") && line.contains(", attached at start)"),
            "{line}"
        );
        // Other content at the cached path: inspected when run, as new.
        put("tls_client_static_noctrl");
        let (line, log) = run();
        assert!(
            log.contains("warm start: 0 known TLS files attached in "),
            "{log}"
        );
        assert!(log.contains(", 1 cached paths gone or changed"), "{log}");
        assert!(!line.contains("known content"), "{line}");
    });
}

/// The inspection cache on disk: a second agent on the same `--cache-dir`
/// knows curl's files from the first one's results (no reading, no
/// parsing), says so, and captures as well.
#[test]
fn a_restarted_agent_knows_files_from_its_cache_on_disk() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache").display().to_string();
        let curl = named("/usr/bin/curl", "cache_curl");
        let url = format!("https://127.0.0.1:{}/cached", srv.port);
        let run = |agent: &Agent| {
            let out = std::process::Command::new(&curl)
                .args(["-sk", "--http1.1", &url])
                .output()
                .unwrap();
            assert_eq!(out.stdout, b"ok GET /cached 0\n");
            let pid_of = || {
                agent
                    .records()
                    .iter()
                    .filter(|r| r["type"] == "data" && r["direction"] == "read")
                    .map(|r| r["pid"].as_u64().unwrap() as u32)
                    .next_back()
            };
            let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while pid_of().is_none() {
                assert!(std::time::Instant::now() < until, "curl not captured");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let pid = pid_of().unwrap();
            let resp = expected_response("GET", "/cached", 0, false);
            assert_eq!(agent.wait_bytes(pid, 0, resp.len()).1, resp);
        };
        let mut first = Agent::start(&["--comm", "cache_curl", "--cache-dir", &cache]);
        run(&first);
        let log = first.stop();
        assert!(!log.contains("known content"), "{log}");
        assert!(
            log.contains("inspection cache on disk: 0 results found"),
            "{log}"
        );
        let mut second = Agent::start(&["--comm", "cache_curl", "--cache-dir", &cache]);
        run(&second);
        let log = second.stop();
        let libssl = instrumented_line(&log, "libssl.so.3");
        assert!(libssl.contains("known content: GNU build ID"), "{libssl}");
        assert!(
            !log.contains("inspection cache on disk: 0 results found"),
            "{log}"
        );
    });
}
