//! Stripped static TLS (issue #28) in real programs built by others:
//! Chromium (Debian), Bun and Deno (npm), located without symbols and
//! captured exactly; a crafted stripped file gets no probe.
mod common;
use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn stripped(name: &str) -> PathBuf {
    let p = repo().join("target/stripped").join(name);
    assert!(
        p.exists(),
        "{} missing: make test-deps (scripts/npm-binary.sh) installs it",
        p.display()
    );
    p
}

/// The first record of `kind` for which `pick` holds, waited for.
fn wait_record(agent: &Agent, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + T;
    loop {
        if let Some(r) = agent.records().into_iter().find(|r| pick(r)) {
            return r;
        }
        assert!(
            Instant::now() < until,
            "{what} not captured:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn located_line(agent: &Agent, exe: &str) -> String {
    instrumented_line(&agent.stderr(), exe)
}

/// A JavaScript runtime (Bun, Deno) fetching `url`: the server's record of
/// the exchange equals what the runtime's process wrote and read.
fn runtime_fetch(
    exe: &str,
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
    path: &str,
    endpoints: bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("server.jsonl");
    let srv = Server::start_with(&["--record", rec.to_str().unwrap()]);
    let prog = named(stripped(exe).to_str().unwrap(), name);
    let agent = Agent::start(&["--comm", name]);
    let url = format!("https://localhost:{}{path}", srv.port);
    let script = format!("const r = await fetch('{url}'); console.log(r.status, await r.text());");
    let out = Command::new(&prog)
        .args(args)
        .arg(&script)
        .envs(env.iter().copied())
        .env("HOME", dir.path())
        .env("DENO_DIR", dir.path())
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("200 ok GET {path} 0\n\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = seen_for(&rec, path);
    let first = wait_record(&agent, exe, |r| r["type"] == "data");
    let pid = first["pid"].as_u64().unwrap() as u32;
    let (w, r) = agent.wait_bytes(pid, seen.request.len(), seen.response.len());
    assert_eq!(
        (show(&w), show(&r)),
        (show(&seen.request), show(&seen.response))
    );
    assert_eq!(first["sni"], "localhost");
    // Who talks to whom: the server's end, from the socket the ClientHello
    // went out on (Deno's AEAD path). Bun's BoringSSL writes into a memory
    // BIO and its event loop sends later: no socket is known for it.
    if endpoints {
        assert_eq!(first["server"]["address"], "127.0.0.1", "{first}");
        assert_eq!(first["server"]["port"], srv.port, "{first}");
    } else {
        assert!(first.get("server").is_none(), "{first}");
    }
    assert_eq!(seen.sni.as_deref(), Some("localhost"));
}

/// Bun 1.4.5 (BoringSSL, no .eh_frame, not PIE): its `fetch`; then a
/// server-name filter. One test: two agents each holding only its own Bun
/// still race to pause the other's (Bun renames its threads early).
#[test]
fn bun_fetch_exact_bytes_and_server_name_filter() {
    rerun_if_host_stalled(|| {
        runtime_fetch(
            "bun",
            "bun_e2e",
            &["-e"],
            &[("NODE_TLS_REJECT_UNAUTHORIZED", "0")],
            "/bun-marker",
            false,
        );
        bun_server_name_filter();
    });
}

/// Deno 2.9.6 (rustls on aws-lc, no .eh_frame, functions unaligned): its
/// `fetch`, through the AEAD path.
#[test]
fn deno_fetch_exact_bytes() {
    rerun_if_host_stalled(|| {
        runtime_fetch(
            "deno",
            "deno_e2e",
            &["eval", "--unsafely-ignore-certificate-errors=localhost"],
            &[("NO_COLOR", "1")],
            "/deno-marker",
            true,
        )
    });
}

/// Deno offers HTTP/2 by ALPN: against an HTTP/2 server its requests are
/// decoded as such.
#[test]
fn deno_fetch_http2_decoded() {
    rerun_if_host_stalled(|| {
        let srv = GoServer::start(&["-h2"]);
        let dir = tempfile::tempdir().unwrap();
        let prog = named(stripped("deno").to_str().unwrap(), "deno_h2_e2e");
        let agent = Agent::start_decoded("json", &["--comm", "deno_h2_e2e"]);
        let script = format!(
            "for (const p of ['/h2-a', '/h2-b']) {{ \
               const r = await fetch('https://localhost:{}' + p); console.log(await r.text()); }}",
            srv.port
        );
        let out = Command::new(&prog)
            .args([
                "eval",
                "--unsafely-ignore-certificate-errors=localhost",
                &script,
            ])
            .env("HOME", dir.path())
            .env("DENO_DIR", dir.path())
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ok GET /h2-a 0\n\nok GET /h2-b 0\n\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for path in ["/h2-a", "/h2-b"] {
            let e = wait_record(&agent, path, |r| r["type"] == "http" && r["path"] == path);
            assert_eq!(e["protocol"], "HTTP/2", "{e}");
            assert_eq!(e["method"], "GET");
            assert_eq!(e["status"], 200);
            assert_eq!(e["sni"], "localhost");
            assert_eq!(e["server"]["port"], srv.port);
            assert_eq!(e["response"]["body"], format!("ok GET {path} 0\n"));
        }
    });
}

/// `--sni localhost`: Bun's request to 127.0.0.1 (no server name) is not
/// captured, its request to localhost is.
fn bun_server_name_filter() {
    {
        let srv = Server::start();
        let prog = named(stripped("bun").to_str().unwrap(), "bun_sni_e2e");
        let agent = Agent::start(&["--comm", "bun_sni_e2e", "--sni", "localhost"]);
        let script = format!(
            "for (const h of ['127.0.0.1', 'localhost']) {{ \
               const r = await fetch(`https://${{h}}:{}/from-${{h}}`); await r.text(); }}",
            srv.port
        );
        let out = Command::new(&prog)
            .args(["-e", &script])
            .env("NODE_TLS_REJECT_UNAUTHORIZED", "0")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let named = wait_record(&agent, "bun to localhost", |r| {
            r["type"] == "data" && record_bytes(r).starts_with(b"GET /from-localhost ")
        });
        assert_eq!(named["sni"], "localhost");
        let mut agent = agent;
        agent.stop();
        let all = agent.records();
        assert!(
            !all.iter()
                .any(|r| record_bytes(r).windows(14).any(|w| w == b"from-127.0.0.1")),
            "the unnamed connection was captured"
        );
    }
}

/// Drops the page cache of `path` (its pages no process maps).
fn evict(path: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: advice on a descriptor this test owns.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "posix_fadvise({path})");
}

/// Chromium 156 (BoringSSL, no FDE for it, 297 MB): `--dump-dom` of a page
/// over HTTP/1.1 and over HTTP/2 (ALPN), decoded. The first run starts
/// with its executable out of the page cache: the 236 MB of code must come
/// from the disk, so the browser is resumed before its inspection ends
/// (the log says so) and probed after, still in time for its request.
#[test]
fn chromium_dump_dom_http1_and_http2() {
    rerun_if_host_stalled(|| {
        let h1 = Server::start();
        let h2 = GoServer::start(&["-h2"]);
        let agent = Agent::start_decoded("json", &["--comm", "chromium"]);
        evict("/usr/lib/chromium/chromium");
        let mut first = None;
        for (port, path) in [(h1.port, "/chromium-h1"), (h2.port, "/chromium-h2")] {
            let dir = tempfile::tempdir().unwrap();
            let child = Command::new("chromium")
                .args([
                    "--headless=new",
                    "--no-sandbox",
                    "--ignore-certificate-errors",
                    "--disable-gpu",
                    "--no-first-run",
                    "--dump-dom",
                ])
                .arg(format!("--user-data-dir={}", dir.path().display()))
                .arg(format!("https://localhost:{port}{path}"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            first.get_or_insert(child.id());
            let out = child.wait_with_output().unwrap();
            let dom = String::from_utf8_lossy(&out.stdout);
            assert!(dom.contains(&format!("ok GET {path} 0")), "{dom}");
        }
        for (path, protocol) in [("/chromium-h1", "HTTP/1.1"), ("/chromium-h2", "HTTP/2")] {
            let e = wait_record(&agent, path, |r| r["type"] == "http" && r["path"] == path);
            assert_eq!(e["protocol"], protocol, "{e}");
            assert_eq!(e["method"], "GET");
            assert_eq!(e["status"], 200);
            assert_eq!(e["sni"], "localhost");
            assert_eq!(e["response"]["body"], format!("ok GET {path} 0\n"));
            let pid = e["pid"].as_u64().unwrap();
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            assert!(
                exe.is_none()
                    || exe.as_deref() == Some(std::path::Path::new("/usr/lib/chromium/chromium")),
                "{exe:?}"
            );
        }
        let resumed = format!("pid {} resumed while", first.unwrap());
        assert!(
            agent.stderr().contains(&resumed),
            "{resumed}:\n{}",
            agent.stderr()
        );
        let line = located_line(&agent, "/usr/lib/chromium/chromium");
        assert!(
            line.contains("(boringssl, statically linked)")
                && line.contains("SSL_write (located) SSL_read (located) SSL_do_handshake (located) SSL_set_tlsext_host_name (located) SSL_free (located)"),
            "{line}"
        );
    });
}

/// A crafted stripped file that looks like BoringSSL (the path string,
/// ERR_put_error sites) but has two functions raising SSL_write's errors:
/// reported, and nothing of it is probed.
#[test]
fn crafted_decoy_gets_no_probe() {
    let exe = fixture("boringssl_decoy");
    let prog = named(exe.to_str().unwrap(), "decoy_e2e");
    let mut agent = Agent::start(&["--comm", "decoy_e2e"]);
    // It stays 30 s (`x 30`): an exited process's files are not read.
    let _decoy = Guard(Command::new(&prog).args(["x", "30"]).spawn().unwrap());
    let until = Instant::now() + T;
    let want =
        "stripped BoringSSL whose functions cannot be located exactly: SSL_write: 2 functions fit";
    while !agent.stderr().contains(want) {
        assert!(Instant::now() < until, "{}", agent.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = agent.stop();
    // Its coverage record says what it is and why it stays dark.
    let cov = agent.coverage();
    assert_eq!(cov.len(), 1, "{cov:#?}");
    assert_eq!(cov[0]["stack"], "boringssl");
    assert_eq!(cov[0]["captured"], false);
    assert!(cov[0]["file"]
        .as_str()
        .unwrap()
        .ends_with("/boringssl_decoy"));
    assert!(
        cov[0]["reason"].as_str().unwrap().starts_with(want),
        "{}",
        cov[0]
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("] instrumented") && l.contains("boringssl_decoy")),
        "{log}"
    );
}
