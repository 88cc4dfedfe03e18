//! Return probes per process (issue 18): with filters given, the return
//! probes of SSL_write and SSL_read are only in the memory of processes that
//! have a wanted connection; other processes pay the entry probe alone.
//! Checked where the kernel puts a uprobe: the int3 byte in the process's
//! own copy of the page.
//!
//! One test function: an agent of another test running beside it, without
//! filters, would put its return probes into every process.

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::*;
use plainsight::inspect::{inspect_file, ProbePoint};

const LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";
const T: Duration = Duration::from_secs(30);
const INT3: u8 = 0xcc;

/// The file offsets of SSL_write's and SSL_read's inner return points in
/// the system libssl (placement proves them there).
fn return_points() -> Vec<u64> {
    let insp = inspect_file(std::path::Path::new(LIBSSL), 1 << 30, true).unwrap();
    let mut v = Vec::new();
    for point in [ProbePoint::SslWrite, ProbePoint::SslRead] {
        let t = insp.targets.iter().find(|t| t.point == point).unwrap();
        let rets = t
            .return_points()
            .unwrap_or_else(|| panic!("{point:?}: no inner return point in {LIBSSL}"));
        v.extend_from_slice(rets);
    }
    v
}

/// The byte at file offset `off` of libssl as process `pid` sees it.
fn byte_in(pid: u32, off: u64) -> u8 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    for l in maps.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 6 || !f[5].ends_with("/libssl.so.3") || !f[1].contains('x') {
            continue;
        }
        let (s, e) = f[0].split_once('-').unwrap();
        let start = u64::from_str_radix(s, 16).unwrap();
        let end = u64::from_str_radix(e, 16).unwrap();
        let map_off = u64::from_str_radix(f[2], 16).unwrap();
        if off >= map_off && off < map_off + (end - start) {
            let mut b = [0u8];
            let mem = File::open(format!("/proc/{pid}/mem")).unwrap();
            mem.read_exact_at(&mut b, start + off - map_off).unwrap();
            return b[0];
        }
    }
    panic!("libssl offset {off:#x} is not mapped executable in {pid}:\n{maps}");
}

/// The bytes at `points` in a client with a wanted connection and in one
/// without, after their exchanges, under `--sni api.acme.com` and `extra`
/// (or, `by_pid`, with the wanted client's pid as the only filter).
fn after_exchanges(points: &[u64], extra: &[&str], by_pid: bool) -> (Vec<u8>, Vec<u8>) {
    let srv = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let req = b"GET /returns HTTP/1.1\r\nHost: api.acme.com\r\nConnection: close\r\n\r\n".to_vec();
    let f = request_file(dir.path(), &req);
    let port = srv.port.to_string();
    let client = |sni: &str| {
        Held::with_env(
            &fixture("tls_client_openssl"),
            &["127.0.0.1", &port, sni, f.to_str().unwrap()],
            &[("TLS_CLIENT_WAIT_AFTER", "1")],
        )
    };
    let (mut wanted, mut other) = (client("api.acme.com"), client("other.example"));
    let wanted_pid = wanted.pid.to_string();
    let mut args = if by_pid {
        vec!["--pid", wanted_pid.as_str()]
    } else {
        vec!["--sni", "api.acme.com"]
    };
    args.extend(extra);
    let mut agent = Agent::start(&args);
    wanted.go_keep_stdin();
    other.go_keep_stdin();
    let resp = expected_response("GET", "/returns", 0, true);
    assert_eq!(show(&wanted.read_to_end()), show(&resp));
    assert_eq!(show(&other.read_to_end()), show(&resp));
    // Captured from its first call: the process was held while its return
    // probes went in.
    let (w, r) = agent.wait_bytes(wanted.pid, req.len(), resp.len());
    assert_eq!(show(&w), show(&req));
    assert_eq!(r, resp);
    let bytes = |pid| points.iter().map(|&o| byte_in(pid, o)).collect::<Vec<u8>>();
    let (in_wanted, in_other) = (bytes(wanted.pid), bytes(other.pid));
    wanted.send_line("");
    other.send_line("");
    assert!(wanted.finish(T).0);
    assert!(other.finish(T).0);
    assert_only_api_acme(&agent.records(), other.pid);
    let log = agent.stop();
    // Every wanted call's return was seen: the process was held before its
    // first call on the connection returned.
    assert!(
        log.contains("return probes: 0 wanted calls returned without one in place"),
        "{log}"
    );
    (in_wanted, in_other)
}

#[test]
fn return_probes_are_only_in_processes_with_a_wanted_connection() {
    let points = return_points();
    let file = std::fs::read(LIBSSL).unwrap();
    let original: Vec<u8> = points.iter().map(|&o| file[o as usize]).collect();
    assert!(!original.contains(&INT3), "{original:x?}");
    let probed = vec![INT3; points.len()];

    rerun_if_host_stalled(|| {
        let (wanted, other) = after_exchanges(&points, &[], false);
        assert_eq!(wanted, probed, "the wanted client has the return probes");
        assert_eq!(other, original, "the other client has none");
    });
    rerun_if_host_stalled(|| {
        let (wanted, other) = after_exchanges(&points, &["--host-wide-returns"], false);
        assert_eq!(wanted, probed);
        assert_eq!(other, probed, "--host-wide-returns: in every process");
    });
    // A process filter alone: the wanted client gets them while it is held
    // for its files (every connection of it is wanted), the other none.
    rerun_if_host_stalled(|| {
        let (wanted, other) = after_exchanges(&points, &[], true);
        assert_eq!(wanted, probed);
        assert_eq!(other, original);
    });
}
