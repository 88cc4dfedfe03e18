//! Probe placement (issue 9): probes on emulated instructions inside the
//! functions capture the same bytes as entry probes; where the analysis
//! refuses (SSL_read_ex's return), the uretprobe fallback captures them;
//! `--probe-at-entry` keeps the classic placement.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);

/// The static OpenSSL client (its own copy of libssl, probed in the
/// executable) and python3 (libssl.so.3's `_ex` functions).
fn run_and_check(extra: &[&str]) -> String {
    let srv = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let req = b"GET /placed HTTP/1.1\r\nHost: api.acme.com\r\nConnection: close\r\n\r\n".to_vec();
    let f = request_file(dir.path(), &req);
    let port = srv.port.to_string();
    let args = [
        "127.0.0.1",
        port.as_str(),
        "api.acme.com",
        f.to_str().unwrap(),
    ];
    let mut c = Held::new(&fixture("tls_client_static"), &args);
    let py_script = script("py_client.py");
    let mut py_args = vec![py_script.to_str().unwrap()];
    py_args.extend(args);
    let mut py = Held::new(Path::new("/usr/bin/python3"), &py_args);
    let mut a: Vec<&str> = vec!["--explain"];
    let (cp, pp) = (c.pid.to_string(), py.pid.to_string());
    a.extend(["--pid", &cp, "--pid", &pp]);
    a.extend(extra);
    let mut agent = Agent::start(&a);
    c.go(b"");
    py.go(b"");
    assert!(c.finish(T).0);
    assert!(py.finish(T).0);
    let resp = expected_response("GET", "/placed", 0, true);
    for pid in [c.pid, py.pid] {
        let (w, r) = agent.wait_bytes(pid, req.len(), resp.len());
        assert_eq!(show(&w), show(&req));
        assert_eq!(w, req);
        assert_eq!(r, resp);
    }
    agent.stop()
}

#[test]
fn inner_points_and_the_uretprobe_fallback_capture_the_same_bytes() {
    rerun_if_host_stalled(|| {
        let log = run_and_check(&[]);
        let line = |sym: &str| {
            log.lines()
                .find(|l| l.contains("tls_client_static") && l.contains(&format!(": {sym}: ")))
                .unwrap_or_else(|| panic!("no placement line for {sym}:\n{log}"))
                .to_string()
        };
        // SSL_write / SSL_read: inside the function at both ends.
        for sym in ["SSL_write", "SSL_read"] {
            let l = line(sym);
            assert!(
                l.contains(": +0x16 (jcc): first emulated instruction"),
                "{l}"
            );
            assert!(l.contains("return at +0x38 instead of a uretprobe"), "{l}");
        }
        // python3 reads with SSL_read_ex, whose return the analysis refuses
        // (eax rewritten by cmovs after the last emulated instruction): the
        // uretprobe stays, and the bytes above came through it.
        let l = log
            .lines()
            .find(|l| l.contains("libssl.so.3: SSL_read_ex: "))
            .unwrap_or_else(|| panic!("no SSL_read_ex line:\n{log}"));
        assert!(
            l.contains("return: uretprobe (the return register is written at +0xd"),
            "{l}"
        );
        // Its entry program shares the uretprobe's hit at the entry.
        assert!(
            l.contains("SSL_read_ex: entry, shared with the uretprobe"),
            "{l}"
        );
    });
}

#[test]
fn probe_at_entry_still_captures() {
    rerun_if_host_stalled(|| {
        let log = run_and_check(&["--probe-at-entry"]);
        assert!(
            !log.contains("probe placement"),
            "no placement with --probe-at-entry:\n{log}"
        );
    });
}
