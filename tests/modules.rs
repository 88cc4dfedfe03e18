//! TLS inside modules (issue #33): grpcio's cygrpc (BoringSSL linked in,
//! stripped) and hf_transfer's module (a trimmed static OpenSSL), loaded by
//! Python from PyPI's wheels (target/pymods, scripts/pypi-modules.sh).
mod common;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn pymods() -> PathBuf {
    let p = repo().join("target/pymods");
    assert!(
        p.join("grpc").exists(),
        "run scripts/pypi-modules.sh target/pymods (make test-deps does)"
    );
    p
}

/// Python under the name `name` (so that `--comm` keeps to this test).
fn python(name: &str) -> Command {
    let mut c = Command::new(named("/usr/bin/python3", name));
    c.env("PYTHONPATH", pymods());
    c
}

fn wait_records(agent: &Agent, what: &str, n: usize, pick: impl Fn(&Value) -> bool) -> Vec<Value> {
    let until = Instant::now() + T;
    loop {
        let got: Vec<Value> = agent.records().into_iter().filter(|r| pick(r)).collect();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < until,
            "{what}: {} of {n} records: {got:#?}\n{}",
            got.len(),
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The gRPC server of `grpc_pair.py`, killed on drop.
struct GrpcServer {
    port: u16,
    pid: u32,
    _guard: Guard,
}

fn grpc_server(name: &str) -> GrpcServer {
    let (cert, key) = cert_args();
    let mut child = python(name)
        .arg(script("grpc_pair.py"))
        .args(["server", "--cert", &cert, "--key", &key])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .strip_prefix("PORT ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("grpc server said {line:?}"));
    let pid = child.id();
    GrpcServer {
        port,
        pid,
        _guard: Guard(child),
    }
}

fn grpc_call(name: &str, port: u16, server_name: &str, say: &str) -> (u32, String) {
    let (cert, _) = cert_args();
    let (pid, out) = run_to_end(
        python(name)
            .arg(script("grpc_pair.py"))
            .args(["client", "--port", &port.to_string(), "--ca", &cert])
            .args(["--name", server_name, "--say", say]),
    );
    (pid, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A gRPC unary call between two Python processes over grpcio's own
/// BoringSSL, located without symbols in the shared module: both ends
/// decoded (service, method, status, the client's server name from its
/// ClientHello probe), and a failing call's status and message.
#[test]
fn grpcio_client_and_server_decoded() {
    rerun_if_host_stalled(|| {
        let agent = Agent::start_decoded(
            "json",
            &["--comm", "grpc_srv_e2e", "--comm", "grpc_cli_e2e"],
        );
        let srv = grpc_server("grpc_srv_e2e");
        let (ok_pid, ok) = grpc_call("grpc_cli_e2e", srv.port, "api.acme.com", "grpc-marker");
        assert_eq!(ok, "echo:grpc-marker\n");
        let (fail_pid, fail) = grpc_call("grpc_cli_e2e", srv.port, "api.acme.com", "fail-now");
        assert_eq!(fail, "status 5\n");
        let calls = wait_records(&agent, "grpc exchanges", 4, |r| r["type"] == "http");
        for (pid, side, status) in [
            (ok_pid, "client", 0),
            (fail_pid, "client", 5),
            (srv.pid, "server", 0),
            (srv.pid, "server", 5),
        ] {
            let e = calls
                .iter()
                .find(|e| e["pid"] == pid && e["side"] == side && e["grpc"]["status"] == status)
                .unwrap_or_else(|| panic!("no {side} call of {pid} with {status}: {calls:#?}"));
            assert_eq!(e["protocol"], "HTTP/2");
            assert_eq!(e["path"], "/plainsight.Echo/Say");
            assert_eq!(e["grpc"]["service"], "plainsight.Echo");
            assert_eq!(e["grpc"]["method"], "Say");
            assert_eq!(e["grpc"]["request_messages"], 1);
            assert_eq!(
                e["grpc"]["response_messages"],
                if status == 0 { 1 } else { 0 }
            );
            if status == 5 {
                assert_eq!(e["grpc"]["message"], "no such thing");
            }
            if side == "client" {
                assert_eq!(e["sni"], "api.acme.com");
            }
        }
        let line = instrumented_line(&agent.stderr(), "cygrpc");
        assert!(line.contains("(boringssl, statically linked)"), "{line}");
    });
}

/// The same in raw form: the length-prefixed gRPC messages in the bytes
/// each side wrote and read; and `--sni` keeps the named client only.
#[test]
fn grpcio_raw_messages_and_server_name_filter() {
    rerun_if_host_stalled(|| {
        let srv = grpc_server("grpc_srv2_e2e");
        let agent = Agent::start(&["--comm", "grpc_cli2_e2e", "--sni", "api.acme.com"]);
        let (named_pid, _) = grpc_call("grpc_cli2_e2e", srv.port, "api.acme.com", "raw-marker");
        let (other_pid, _) = grpc_call("grpc_cli2_e2e", srv.port, "other.example", "raw-other");
        let request = [&[0u8, 0, 0, 0, 10][..], b"raw-marker"].concat();
        let reply = [&[0u8, 0, 0, 0, 15][..], b"echo:raw-marker"].concat();
        let until = Instant::now() + T;
        loop {
            let w = data_of(&agent.records(), named_pid, "write");
            let r = data_of(&agent.records(), named_pid, "read");
            let has = |b: &[u8], m: &[u8]| b.windows(m.len()).any(|x| x == m);
            if has(&w, &request) && has(&r, &reply) {
                break;
            }
            assert!(Instant::now() < until, "{}\n{}", show(&w), show(&r));
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut agent = agent;
        agent.stop();
        let recs = agent.records();
        assert!(
            recs.iter().all(|r| r["pid"] != other_pid),
            "the call to other.example was captured"
        );
        assert!(recs
            .iter()
            .filter(|r| r["type"] == "data")
            .all(|r| r["sni"] == "api.acme.com"));
    });
}

/// hf_transfer (Rust, native-tls over OpenSSL 3.4 linked into the module,
/// trimmed to SSL_write_ex, SSL_read, SSL_read_ex, SSL_ctrl): its request
/// and the answer exactly as the server saw them; `--sni` drops the
/// unnamed connection.
#[test]
fn hf_transfer_trimmed_openssl() {
    rerun_if_host_stalled(|| {
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("server.jsonl");
        let srv = Server::start_with(&["--record", rec.to_str().unwrap()]);
        let agent = Agent::start(&["--comm", "hf_e2e", "--sni", "localhost"]);
        let (cert, _) = cert_args();
        let code = format!(
            "import hf_transfer\n\
             for host in ('127.0.0.1', 'localhost'):\n\
             \x20   try: hf_transfer.download(f'https://{{host}}:{}/hf-{{host}}', '{}/out', 1, 1024)\n\
             \x20   except Exception as e: print(e)\n",
            srv.port,
            dir.path().display()
        );
        let out = python("hf_e2e")
            .args(["-c", &code])
            .env("SSL_CERT_FILE", &cert)
            .output()
            .unwrap();
        // The test server sends no Content-Range: hf_transfer says so.
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "No content length\nNo content length\n"
        );
        let seen = seen_for(&rec, "/hf-localhost");
        let first = wait_records(&agent, "hf_transfer", 1, |r| r["type"] == "data").remove(0);
        let pid = first["pid"].as_u64().unwrap() as u32;
        let (w, r) = agent.wait_bytes(pid, seen.request.len(), seen.response.len());
        assert_eq!(
            (show(&w), show(&r)),
            (show(&seen.request), show(&seen.response))
        );
        assert_eq!(first["sni"], "localhost");
        let line = instrumented_line(&agent.stderr(), "hf_transfer");
        assert!(
            line.contains("SSL_read SSL_write_ex SSL_write_ex2 SSL_read_ex SSL_free SSL_ctrl"),
            "{line}"
        );
        // Its coverage record: the module, its stack, captured.
        let cov = agent
            .coverage()
            .into_iter()
            .find(|r| {
                r["file"]
                    .as_str()
                    .is_some_and(|f| f.contains("hf_transfer"))
            })
            .unwrap_or_else(|| panic!("no coverage record: {:#?}", agent.coverage()));
        assert_eq!(cov["stack"], "openssl");
        assert_eq!(cov["captured"], true);
        assert_eq!(cov["pid"], pid);
        assert!(cov["reason"]
            .as_str()
            .unwrap()
            .starts_with("SSL_read SSL_write_ex SSL_write_ex2 SSL_read_ex SSL_free SSL_ctrl"));
    });
}

/// The project's rustls client built as a module (cdylib), on aws-lc and
/// on ring, loaded by Python through ctypes: its request and the answer
/// exactly as the server saw them, in Python's process; a connection named
/// other.example is left out under `--sni api.acme.com`.
#[test]
fn rustls_modules_awslc_and_ring() {
    rerun_if_host_stalled(|| {
        for provider in ["awslc", "ring"] {
            let lib = fixture(&format!("librustls_module_{provider}.so"));
            let dir = tempfile::tempdir().unwrap();
            let rec = dir.path().join("server.jsonl");
            let srv = Server::start_with(&["--record", rec.to_str().unwrap()]);
            let name = format!("mod_{provider}_e2e");
            let agent = Agent::start(&["--comm", &name, "--sni", "api.acme.com"]);
            let mut pids = Vec::new();
            for (sni, path) in [("other.example", "/other"), ("api.acme.com", "/module")] {
                let req = request_file(dir.path(), &request(path, sni));
                let child = python(&name)
                    .args([
                        "-c",
                        "import ctypes, sys\n\
                         f = ctypes.CDLL(sys.argv[1]).plainsight_fetch\n\
                         sys.exit(f(*[a.encode() for a in sys.argv[2:6]]))",
                    ])
                    .arg(&lib)
                    .args(["127.0.0.1", &srv.port.to_string(), sni])
                    .arg(&req)
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                pids.push(child.id());
                let out = child.wait_with_output().unwrap();
                assert!(out.status.success(), "{provider} {sni}");
                assert!(
                    String::from_utf8_lossy(&out.stdout).ends_with(&format!("ok GET {path} 0\n"))
                );
            }
            let seen = seen_for(&rec, "/module");
            let (w, r) = agent.wait_bytes(pids[1], seen.request.len(), seen.response.len());
            assert_eq!(
                (show(&w), show(&r)),
                (show(&seen.request), show(&seen.response)),
                "{provider}"
            );
            let mut agent = agent;
            agent.stop();
            assert!(
                agent.records().iter().all(|r| r["pid"] != pids[0]),
                "{provider}: other.example was captured"
            );
            let module = format!("librustls_module_{provider}.so");
            assert!(
                agent
                    .stderr()
                    .lines()
                    .any(|l| l.contains("] instrumented") && l.contains(&module)),
                "{}",
                agent.stderr()
            );
        }
    });
}

/// psycopg-binary's bundled libssl (OpenSSL 3.5, from its PyPI wheel):
/// `SSL_write_ex2` is probed where a library exports it, and OpenSSL 3.3+'s
/// `SSL_write_ex`, a wrapper calling `SSL_write_ex2`, still gives each
/// write once. The request goes through each form in turn, the exact
/// bytes once each, and the response through `SSL_read`.
#[test]
fn openssl_3_5_write_ex2_and_its_wrapper() {
    let libs = pymods().join("psycopg_binary.libs");
    let libssl = std::fs::read_dir(&libs)
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/pypi-modules.sh)", libs.display()))
        .map(|e| e.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("libssl-") && n.ends_with(".so.3")
        })
        .expect("psycopg-binary's libssl");
    for form in ["ex2", "ex", "write"] {
        rerun_if_host_stalled(|| {
            let srv = Server::start();
            let dir = tempfile::tempdir().unwrap();
            let req = b"GET /hello HTTP/1.1\r\nHost: api.acme.com\r\nConnection: close\r\n\r\n";
            let f = request_file(dir.path(), req);
            let mut client = Held::with_env(
                &fixture("dlopen_client"),
                &[
                    "127.0.0.1",
                    &srv.port.to_string(),
                    "api.acme.com",
                    f.to_str().unwrap(),
                ],
                &[
                    ("DLOPEN_CLIENT_LIB", libssl.to_str().unwrap()),
                    ("DLOPEN_CLIENT_WRITE", form),
                ],
            );
            let agent = Agent::start(&["--pid", &client.pid.to_string(), "--sni", "api.acme.com"]);
            client.go(b"");
            let (ok, _, err) = client.finish(T);
            assert!(ok, "{form}: {err}");
            let resp = expected_response("GET", "/hello", 0, true);
            let (w, r) = agent.wait_bytes(client.pid, req.len(), resp.len());
            assert_eq!(show(&w), show(req), "{form}");
            assert_eq!(r, resp, "{form}: response: {}", show(&r));
            let line = instrumented_line(&agent.stderr(), "libssl-");
            assert!(
                line.contains("SSL_write SSL_read SSL_write_ex SSL_write_ex2 SSL_read_ex SSL_free"),
                "{line}"
            );
        });
    }
}
