//! The agent never leaves a process stopped and never falls over on bad input.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn hello_request() -> Vec<u8> {
    b"GET /hello HTTP/1.1\r\nHost: api.acme.com\r\nConnection: close\r\n\r\n".to_vec()
}

fn wait_state(pid: u32, want: &str, timeout: Duration) -> Option<String> {
    let until = Instant::now() + timeout;
    loop {
        let st = proc_state(pid);
        if st.as_deref().is_some_and(|s| s.starts_with(want)) || Instant::now() > until {
            return st;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL of the agent while it holds a process paused: the process runs on
/// and completes its request.
#[test]
fn agent_killed_while_holding_a_process_leaves_it_running() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let dir = tempfile::tempdir().unwrap();
        let name = format!("held{}", std::process::id() % 100000);
        let exe = dir.path().join(&name);
        std::fs::copy(fixture("tls_client_openssl"), &exe).unwrap();
        let f = request_file(dir.path(), &hello_request());
        // Inspection is held back for 20 s, so the process stays paused.
        let mut agent = Agent::start(&[
            "--comm",
            &name,
            "--test-inspect-delay-ms",
            "20000",
            "--max-pause-ms",
            "60000",
        ]);
        let child = Command::new(&exe)
            .args([
                "127.0.0.1",
                &srv.port.to_string(),
                "api.acme.com",
                f.to_str().unwrap(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut child = Guard(child);
        let st = wait_state(pid, "t", Duration::from_secs(10));
        assert!(
            st.as_deref().is_some_and(|s| s.starts_with("t")),
            "process should be held in tracing stop, state {st:?}; agent log:\n{}",
            agent.stderr()
        );
        // Still held a moment later: the pause is real.
        std::thread::sleep(Duration::from_millis(300));
        assert!(proc_state(pid).unwrap_or_default().starts_with("t"));

        agent.kill(); // SIGKILL
        let until = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Ok(Some(s)) = child.0.try_wait() {
                break Some(s);
            }
            if Instant::now() > until {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let status = status.unwrap_or_else(|| panic!("process still stuck: {:?}", proc_state(pid)));
        assert!(status.success());
        let mut out = Vec::new();
        use std::io::Read;
        child
            .0
            .stdout
            .take()
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, expected_response("GET", "/hello", 0, true));
    });
}

/// A pause is bounded even when inspection is slow.
#[test]
fn pauses_are_bounded_in_time() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let dir = tempfile::tempdir().unwrap();
        let name = format!("slow{}", std::process::id() % 100000);
        let exe = dir.path().join(&name);
        std::fs::copy(fixture("tls_client_openssl"), &exe).unwrap();
        let f = request_file(dir.path(), &hello_request());
        let mut agent = Agent::start(&[
            "--comm",
            &name,
            "--test-inspect-delay-ms",
            "5000",
            "--max-pause-ms",
            "200",
        ]);
        let t0 = Instant::now();
        let out = Command::new(&exe)
            .args([
                "127.0.0.1",
                &srv.port.to_string(),
                "api.acme.com",
                f.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let took = t0.elapsed();
        assert!(out.status.success());
        assert_eq!(out.stdout, expected_response("GET", "/hello", 0, true));
        // exe + a handful of libraries, each held at most 200 ms (+ slack)
        assert!(took < Duration::from_secs(4), "took {took:?}");
        let log = agent.stop();
        assert!(log.contains("resuming pid"), "{log}");
        let line = log.lines().find(|l| l.contains(" pauses (median")).unwrap();
        assert!(!line.contains(" 0 resumed by the time bound"), "{line}");
    });
}

/// A file that claims to be ELF but is garbage, mapped executable by a
/// process: the agent says so and goes on capturing.
#[test]
fn malformed_elf_mapped_executable_does_not_disturb_the_agent() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("broken-lib.so");
        let mut bytes = std::fs::read("/usr/lib/x86_64-linux-gnu/libssl.so.3").unwrap();
        bytes.truncate(8192);
        // Program and section header tables point far outside the file.
        bytes[0x20..0x28].copy_from_slice(&0x7fff_ffff_0000u64.to_le_bytes());
        bytes[0x28..0x30].copy_from_slice(&0x7fff_ffff_ff00u64.to_le_bytes());
        std::fs::write(&bad, &bytes).unwrap();
        let prog = dir.path().join("map_then_tls.py");
        std::fs::write(
            &prog,
            r#"
import mmap, os, socket, ssl, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
m = mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_EXEC)
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
with socket.create_connection(("127.0.0.1", int(sys.argv[2]))) as s:
    with ctx.wrap_socket(s, server_hostname="api.acme.com") as t:
        t.sendall(b"GET /hello HTTP/1.1\r\nHost: api.acme.com\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            d = t.recv(65536)
            if not d:
                break
            data += d
sys.stdout.buffer.write(data)
"#,
        )
        .unwrap();
        let mut client = Held::new(
            std::path::Path::new("/usr/bin/python3"),
            &[
                prog.to_str().unwrap(),
                bad.to_str().unwrap(),
                &srv.port.to_string(),
            ],
        );
        let mut agent = Agent::start(&["--pid", &client.pid.to_string()]);
        client.go(b"");
        let (ok, _, err) = client.finish(Duration::from_secs(30));
        assert!(ok, "{err}");
        let resp = expected_response("GET", "/hello", 0, true);
        let req = hello_request();
        let (w, r) = agent.wait_bytes(client.pid, req.len(), resp.len());
        assert_eq!(w, req);
        assert_eq!(r, resp);
        assert!(
            unsafe { libc::kill(agent.pid() as i32, 0) } == 0,
            "agent still alive"
        );
        let log = agent.stop();
        assert!(
            log.lines()
                .any(|l| l.contains("broken-lib.so") && l.contains("cannot inspect")),
            "agent should name the bad file: {log}"
        );
    });
}

/// SIGINT: the agent resumes what it holds, detaches its probes, reports and
/// exits promptly.
#[test]
fn agent_exits_promptly_on_sigint() {
    rerun_if_host_stalled(|| {
        let mut agent = Agent::start(&["--pid", "1"]);
        let pid = agent.pid() as i32;
        unsafe { libc::kill(pid, libc::SIGINT) };
        let status = agent
            .wait_exit(Duration::from_secs(5))
            .expect("agent still running 5 s after SIGINT");
        assert!(status.success(), "{status:?}");
        // the summary is printed on the way out
        std::thread::sleep(Duration::from_millis(100));
        assert!(agent
            .stderr()
            .contains("connections tracked in the kernel at exit"));
    });
}

/// Executables that are deleted and no longer run get their probes
/// detached: 8 never-seen TLS programs (a new inode each) do not leave 8
/// files' worth of uprobes (file descriptors) behind.
#[test]
fn probes_of_deleted_files_are_released() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let dir = tempfile::tempdir().unwrap();
        let name = format!("gone{}", std::process::id() % 100000);
        let f = request_file(dir.path(), &hello_request());
        let agent = Agent::start(&["--comm", &name, "-v"]);
        let fds = || {
            std::fs::read_dir(format!("/proc/{}/fd", agent.pid()))
                .unwrap()
                .count()
        };
        let before = fds();
        for _ in 0..8 {
            let exe = dir.path().join(&name);
            std::fs::copy(fixture("tls_client_static"), &exe).unwrap();
            let out = Command::new(&exe)
                .args([
                    "127.0.0.1",
                    &srv.port.to_string(),
                    "api.acme.com",
                    f.to_str().unwrap(),
                ])
                .output()
                .unwrap();
            assert!(out.status.success());
            std::fs::remove_file(&exe).unwrap();
        }
        // Every run was captured...
        let writers = || -> std::collections::HashSet<u64> {
            agent
                .records()
                .iter()
                .filter(|r| r["type"] == "data" && r["direction"] == "write")
                .filter_map(|r| r["pid"].as_u64())
                .collect()
        };
        let until = Instant::now() + Duration::from_secs(5);
        while writers().len() < 8 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(writers().len(), 8, "{}", agent.stderr());
        // ...and the probes of the deleted files go after a sweep (every 5 s;
        // the kernel takes ~0.1 s per uprobe to detach).
        let until = Instant::now() + Duration::from_secs(25);
        while fds() > before + 15 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            fds() <= before + 15,
            "{} fds before, {} after; {}",
            before,
            fds(),
            agent.stderr()
        );
    });
}

/// A process killed while the agent holds it: the agent notices, lets BPF
/// report the file again, and instruments it for the next process.
#[test]
fn process_killed_while_paused() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let dir = tempfile::tempdir().unwrap();
        let name = format!("dies{}", std::process::id() % 100000);
        let exe = dir.path().join(&name);
        std::fs::copy(fixture("tls_client_openssl"), &exe).unwrap();
        let f = request_file(dir.path(), &hello_request());
        let agent = Agent::start(&[
            "--comm",
            &name,
            "--test-inspect-delay-ms",
            "1500",
            "--max-pause-ms",
            "5000",
        ]);
        let args = [
            "127.0.0.1".to_string(),
            srv.port.to_string(),
            "api.acme.com".into(),
            f.to_str().unwrap().into(),
        ];
        let mut first = Command::new(&exe)
            .args(&args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let st = wait_state(first.id(), "t", Duration::from_secs(10));
        assert!(
            st.as_deref().is_some_and(|s| s.starts_with('t')),
            "held: {st:?}"
        );
        first.kill().unwrap();
        let status = first.wait().unwrap();
        assert!(!status.success());
        // The next run is instrumented and captured.
        let out = Command::new(&exe).args(&args).output().unwrap();
        assert!(out.status.success());
        let pid = {
            let until = Instant::now() + Duration::from_secs(15);
            loop {
                let p = agent
                    .records()
                    .iter()
                    .find(|r| r["type"] == "data" && r["comm"] == name.as_str())
                    .and_then(|r| r["pid"].as_u64());
                if let Some(p) = p {
                    break p as u32;
                }
                assert!(
                    Instant::now() < until,
                    "second run not captured: {}",
                    agent.stderr()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        let resp = expected_response("GET", "/hello", 0, true);
        let (w, r) = agent.wait_bytes(pid, hello_request().len(), resp.len());
        assert_eq!(w, hello_request());
        assert_eq!(r, resp);
    });
}

/// A stop that comes late is reported (a debug line and the exit summary);
/// the harness runs a failed test again only after such a report.
#[test]
fn a_late_stop_is_reported_and_only_then_is_a_failed_test_run_again() {
    use std::cell::Cell;
    let runs = Cell::new(0);
    rerun_if_host_stalled(|| {
        runs.set(runs.get() + 1);
        let late = if runs.get() == 1 { "80" } else { "0" };
        let mut h = Held::new(std::path::Path::new("/bin/sleep"), &["0.4"]);
        let mut agent = Agent::start(&["--pid", &h.pid.to_string(), "--test-late-stop-ms", late]);
        h.go(b"");
        let (ok, _, e) = h.finish(Duration::from_secs(10));
        assert!(ok, "{e}");
        let log = agent.stop();
        if runs.get() == 1 {
            let line = log
                .lines()
                .find(|l| l.contains(LATE_STOP))
                .unwrap_or_else(|| panic!("no late stop reported:\n{log}"));
            let us: u64 = line
                .split("stopped ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{line}"));
            assert!((80_000..2_000_000).contains(&us), "{line}");
            let summary = log
                .lines()
                .find(|l| l.contains("stopped at most"))
                .expect("summary");
            assert!(
                summary.contains(&format!("stopped at most {us} us")),
                "{summary}"
            );
            panic!("the first run fails on purpose, after a late stop");
        }
    });
    assert_eq!(runs.get(), 2, "run again after the late stop");

    // Without such a report a failure stands.
    let plain = Cell::new(0);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rerun_if_host_stalled(|| {
            plain.set(plain.get() + 1);
            panic!("a failure with no late stop");
        })
    }));
    assert!(r.is_err());
    assert_eq!(plain.get(), 1);
}
