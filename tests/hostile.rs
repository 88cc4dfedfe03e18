//! A hostile host: what any local process can do to the agent (map files and
//! change them, stall a filesystem, flood its bookkeeping) must not crash,
//! hang, blind or misuse it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use plainsight::discover::FileId;

fn hello_request() -> Vec<u8> {
    b"GET /hello HTTP/1.1\r\nHost: api.acme.com\r\nConnection: close\r\n\r\n".to_vec()
}

/// Runs a copy of the OpenSSL test client against `srv` with the request
/// in `req`.
fn run_client(exe: &Path, srv: &Server, req: &Path) -> std::process::Output {
    Command::new(exe)
        .args([
            "127.0.0.1",
            &srv.port.to_string(),
            "api.acme.com",
            req.to_str().unwrap(),
        ])
        .output()
        .unwrap()
}

/// Runs the OpenSSL test client once (a fresh copy named `name`, so the
/// agent inspects it anew) and checks that the agent captured its exchange
/// exactly.
fn capture_still_works(agent: &Agent, srv: &Server, dir: &Path, name: &str) {
    let exe = dir.join(name);
    std::fs::copy(fixture("tls_client_openssl"), &exe).unwrap();
    let req = hello_request();
    let f = request_file(dir, &req);
    let out = run_client(&exe, srv, &f);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resp = expected_response("GET", "/hello", 0, true);
    assert_eq!(out.stdout, resp);
    // The client's pid is gone; its records are found by its bytes.
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let recs = agent.records();
        let pids: Vec<u32> = recs
            .iter()
            .filter(|r| r["comm"] == name && r["type"] == "data")
            .filter_map(|r| r["pid"].as_u64().map(|p| p as u32))
            .collect();
        if let Some(&pid) = pids.first() {
            let (w, r) = agent.wait_bytes(pid, req.len(), resp.len());
            assert_eq!(show(&w), show(&req));
            assert_eq!(show(&r), show(&resp));
            return;
        }
        assert!(
            Instant::now() < until,
            "{name} was not captured; agent log:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn alive(pid: u32) -> bool {
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

/// Files mapped executable and truncated while the agent reads them: the
/// agent reads files with pread (no mapping, so no SIGBUS), stays alive and
/// goes on capturing.
#[test]
fn files_truncated_while_inspected_do_not_kill_the_agent() {
    let srv = Server::start();
    let dir = tempfile::tempdir().unwrap();
    // Executables of 256 MiB (a small ELF, then a sparse tail): reading one
    // takes long enough to be truncated in the middle.
    let mut files = Vec::new();
    for i in 0..3 {
        let p = dir.path().join(format!("big{i}"));
        std::fs::copy("/usr/bin/true", &p).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
        files.push(p);
    }
    let prog = dir.path().join("map_big.py");
    std::fs::write(
        &prog,
        r#"
import mmap, os, sys
maps = []
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    maps.append(mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_EXEC))
print("mapped", flush=True)
sys.stdin.read()
"#,
    )
    .unwrap();
    let mut args = vec![prog.to_str().unwrap()];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let mut mapper = Held::new(Path::new("/usr/bin/python3"), &args);
    let agent = Agent::start(&[
        "--comm",
        "python3",
        "--comm",
        "after_trunc",
        "--max-elf-size",
        &(300u64 << 20).to_string(),
    ]);
    mapper.go_keep_stdin();
    // Truncate each file as soon as the process has it mapped: the agent
    // is then reading it (the process is held until it is done).
    for f in &files {
        let until = Instant::now() + Duration::from_secs(20);
        let name = f.to_str().unwrap();
        loop {
            let maps =
                std::fs::read_to_string(format!("/proc/{}/maps", mapper.pid)).unwrap_or_default();
            if maps.contains(name) {
                break;
            }
            assert!(Instant::now() < until, "{name} never mapped");
            std::thread::sleep(Duration::from_micros(200));
        }
        std::fs::OpenOptions::new()
            .write(true)
            .open(f)
            .unwrap()
            .set_len(0)
            .unwrap();
    }
    assert_eq!(mapper.read_line().trim(), "mapped");
    assert!(alive(agent.pid()), "agent died: {}", agent.stderr());
    capture_still_works(&agent, &srv, dir.path(), "after_trunc");
    assert!(alive(agent.pid()), "agent died: {}", agent.stderr());
}

/// An inspection that never ends (a file on a stalled filesystem) is given
/// up at its budget: the process runs on, the file is reported, and the
/// stuck workers are replaced, so other programs are still captured.
#[test]
fn stalled_inspections_are_given_up_and_capture_goes_on() {
    let srv = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let mut mappers = Vec::new();
    // As many stalled files as there are workers, so that without
    // replacement nothing else could be inspected.
    for i in 0..2 {
        let p = dir.path().join(format!("stalled-{i}.so"));
        std::fs::copy(fixture("tls_client_openssl"), &p).unwrap();
        mappers.push(p);
    }
    let prog = dir.path().join("map_one.py");
    std::fs::write(
        &prog,
        r#"
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
m = mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_EXEC)
print("mapped", flush=True)
"#,
    )
    .unwrap();
    let mut agent = Agent::start(&[
        "--comm",
        "python3",
        "--comm",
        "after_stall",
        "--test-stall-path",
        "stalled-",
        "--max-inspect-ms",
        "500",
        "--max-pause-ms",
        "30000",
    ]);
    for p in &mappers {
        let t0 = Instant::now();
        let out = Command::new("/usr/bin/python3")
            .args([prog.to_str().unwrap(), p.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "mapped");
        // Held until the budget, not until the pause bound (30 s).
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    }
    capture_still_works(&agent, &srv, dir.path(), "after_stall");
    let log = agent.stop();
    for p in &mappers {
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(
            log.lines().any(
                |l| l.contains("took longer than 500 ms: left uninstrumented")
                    && l.contains("python3")
            ),
            "no report for {name}: {log}"
        );
    }
}

/// The agent's BPF map named `name` (found through its descriptors).
fn agent_map(agent_pid: u32, name: &str) -> libbpf_rs::MapHandle {
    use libbpf_rs::MapCore;
    for e in std::fs::read_dir(format!("/proc/{agent_pid}/fdinfo")).unwrap() {
        let info = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
        let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(m) = libbpf_rs::MapHandle::from_map_id(id) else {
            continue;
        };
        if m.name().to_str() == Some(name) {
            return m;
        }
    }
    panic!("agent {agent_pid} has no map {name}");
}

fn file_key(path: &Path) -> [u8; 16] {
    plainsight::kernel::file_key(FileId::of(&std::fs::metadata(path).unwrap()))
}

/// BPF's `seen_files` is an LRU: a file it forgot is reported again. The
/// agent marks it done again, so that its next mappings are not reported
/// (and held) one by one.
#[test]
fn a_file_forgotten_by_seen_files_is_marked_done_again() {
    use libbpf_rs::MapCore;
    let srv = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&["--comm", "forgotten"]);
    capture_still_works(&agent, &srv, dir.path(), "forgotten");
    let seen = agent_map(agent.pid(), "seen_files");
    let exe = dir.path().join("forgotten");
    let key = file_key(&exe);
    let state = |k: &[u8]| seen.lookup(k, libbpf_rs::MapFlags::ANY).unwrap();
    assert_eq!(state(&key), Some(vec![2]), "FILE_DONE after its inspection");
    // Forget every file, as an eviction would.
    for k in seen.keys().collect::<Vec<_>>() {
        let _ = seen.delete(&k);
    }
    let req = hello_request();
    let f = request_file(dir.path(), &req);
    let out = run_client(&exe, &srv, &f);
    assert!(out.status.success());
    let until = Instant::now() + Duration::from_secs(5);
    while state(&key) != Some(vec![2]) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        state(&key),
        Some(vec![2]),
        "reported again, and marked FILE_DONE again (not left FILE_PENDING)"
    );
}

/// A program calls SSL_ctrl(SET_TLSEXT_HOSTNAME) on 70,000 made-up
/// connections, more than the kernel map of server-name decisions holds.
/// A connection whose name did not match must stay uncaptured (an LRU map
/// would forget it and capture it as "without a server name"), a matching
/// one is still captured, and connections without a name are not captured
/// while decisions cannot be stored (fail closed), with a warning.
#[test]
fn an_ssl_ctrl_flood_does_not_capture_non_matching_connections() {
    let mut flood = Held::new(&fixture("ssl_flood"), &["70000"]);
    let mut agent = Agent::start(&[
        "--pid",
        &flood.pid.to_string(),
        "--sni",
        "*.acme.com",
        "--capture-no-sni",
    ]);
    flood.go(b"");
    let (ok, out, err) = flood.finish(Duration::from_secs(60));
    assert!(ok, "{err}");
    assert_eq!(out, b"done\n");
    let (w, _) = agent.wait_bytes(flood.pid, 9, 0);
    assert_eq!(show(&w), "acme-data", "only the matching connection");
    let recs = agent.records();
    let conns: Vec<&str> = recs
        .iter()
        .filter(|r| r["type"] == "data")
        .filter_map(|r| r["conn"].as_str())
        .collect();
    assert_eq!(conns.len(), 1, "{conns:?}");
    let log = agent.stop();
    assert!(
        log.contains("server-name decisions not stored"),
        "the overflow is reported: {log}"
    );
}
