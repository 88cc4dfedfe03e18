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

/// Runs the OpenSSL test client once (a fresh copy named `name`, so the
/// agent inspects it anew) and checks that the agent captured its exchange
/// exactly. Returns the client's pid.
fn capture_still_works(agent: &Agent, srv: &Server, dir: &Path, name: &str) -> u32 {
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
            return pid;
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
    // python3 under a name of its own (see stall_mapper below).
    let python = named("/usr/bin/python3", "trunc_mapper");
    let mut mapper = Held::new(&python, &args);
    let agent = Agent::start(&[
        "--comm",
        "trunc_mapper",
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

/// An inspection that never ends (a read that does not return, shown with
/// a testing aid: files on filesystems that can stall are not read, see
/// below) is given up at its budget: the process runs on, the file is reported, and the
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
    // python3 under a name of its own: another test's agent here pauses
    // every python3, and a process has one tracer at a time.
    let python = dir.path().join("stall_mapper");
    std::os::unix::fs::symlink("/usr/bin/python3", &python).unwrap();
    let mut agent = Agent::start(&[
        "--comm",
        "stall_mapper",
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
        let out = Command::new(&python)
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
                    && l.contains("stall_mapper")
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
///
/// The fixture is a stand-in library: it writes right after setting the
/// name, without the handshake a real TLS connection has between the two,
/// during which a process is held for its per-process return probes. The
/// decision map is what this test is about: return probes everywhere.
#[test]
fn an_ssl_ctrl_flood_does_not_capture_non_matching_connections() {
    rerun_if_host_stalled(ssl_ctrl_flood);
}

fn ssl_ctrl_flood() {
    let mut flood = Held::new(&fixture("ssl_flood"), &["70000"]);
    let mut agent = Agent::start(&[
        "--pid",
        &flood.pid.to_string(),
        "--sni",
        "*.acme.com",
        "--capture-no-sni",
        "--host-wide-returns",
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

/// A FUSE filesystem that stalls every read (tests/fixtures/stall_fuse.py),
/// mounted for one test; released and unmounted when dropped.
struct StalledFs {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
    mnt: tempfile::TempDir,
}

impl StalledFs {
    fn mount(source: &Path) -> StalledFs {
        use std::process::Stdio;
        let mnt = tempfile::tempdir().unwrap();
        let mut child = Command::new("/usr/bin/python3")
            .arg(script("stall_fuse.py"))
            .args([mnt.path(), source])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut fs = StalledFs { child, out, mnt };
        assert_eq!(fs.line(), "mounted");
        fs
    }

    fn file(&self, name: &str) -> std::path::PathBuf {
        self.mnt.path().join(name)
    }

    fn line(&mut self) -> String {
        use std::io::BufRead;
        let mut l = String::new();
        self.out.read_line(&mut l).unwrap();
        l.trim().to_string()
    }

    fn release(&mut self) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"release\n").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for StalledFs {
    fn drop(&mut self) {
        // End of input: stalled reads fail, the filesystem is unmounted.
        drop(self.child.stdin.take());
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until && !matches!(self.child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.mnt.path())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A program maps code from a FUSE filesystem whose server never answers:
/// the agent does not open, stat or read it (a read there would block in
/// the kernel uninterruptibly, and the agent could then not even exit),
/// says so naming the filesystem, lets the process run at once, goes on
/// capturing, and exits promptly.
#[test]
fn files_on_a_stalled_filesystem_are_not_read() {
    let srv = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let mut fs = StalledFs::mount(&fixture("tls_client_openssl"));
    let mut agent = Agent::start(&["--comm", "fuse_mapper", "--comm", "after_fuse"]);
    let t0 = Instant::now();
    // It keeps the mapping until its stdin ends: a stop that comes late
    // (a loaded host) still finds it.
    let mut mapper = Command::new(named("/usr/bin/python3", "fuse_mapper"))
        .arg(script("exec_then_map.py"))
        .args(["--map-only", fs.file("file0").to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(mapper.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "mapped\n");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "held {:?}",
        t0.elapsed()
    );
    let want = format!("{} (mapped by pid ", fs.file("file0").display());
    let said = |log: &str| {
        log.lines()
            .any(|l| l.contains(&want) && l.contains("is on a fuse filesystem: not read"))
    };
    let until = Instant::now() + Duration::from_secs(10);
    while !said(&agent.stderr()) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(mapper.stdin.take());
    assert!(mapper.wait().unwrap().success());
    capture_still_works(&agent, &srv, dir.path(), "after_fuse");
    let t0 = Instant::now();
    let log = agent.stop();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(said(&log), "{log}");
    fs.release();
    assert_eq!(fs.line(), "released 0", "the agent never read the file");
}

/// A process in an exec that never finishes (its program is on a stalled
/// FUSE filesystem: the exec holds the process's exec lock, on which
/// PTRACE_SEIZE waits) maps new code. Stopping it blocks; only its own
/// tracer waits: its file is inspected unpaused after the pause bound, a
/// later program is still paused and captured, the process is not left
/// stopped when the exec fails, and the agent exits promptly.
#[test]
fn a_stop_blocked_by_an_exec_does_not_stop_the_pausing() {
    use libbpf_rs::MapCore;
    let srv = Server::start();
    let dir = tempfile::tempdir().unwrap();
    // Declared before the filesystem, so dropped after it: on a failure the
    // stalled exec is released first, and the process can be killed.
    let mut hostile: Held;
    let mut fs = StalledFs::mount(&fixture("tls_client_openssl"));
    let fresh = dir.path().join("fresh-code.so");
    std::fs::copy(fixture("tls_client_openssl"), &fresh).unwrap();
    let mut agent = Agent::start(&[
        "--comm",
        "after_exec",
        "--comm",
        "exec_mapper",
        "--max-pause-ms",
        "500",
    ]);
    hostile = Held::new(
        &named("/usr/bin/python3", "exec_mapper"),
        &[
            script("exec_then_map.py").to_str().unwrap(),
            fs.file("prog").to_str().unwrap(),
            fresh.to_str().unwrap(),
        ],
    );
    hostile.go_keep_stdin();
    assert_eq!(hostile.read_line(), "started");
    assert_eq!(fs.line(), "stalled 1", "the exec waits on the filesystem");
    hostile.send_line("map");
    assert_eq!(hostile.read_line(), "mapped");
    // The agent's stop of `hostile` now waits on the exec: past the pause
    // bound a fresh program is still paused and captured.
    std::thread::sleep(Duration::from_millis(800));
    let client = capture_still_works(&agent, &srv, dir.path(), "after_exec");
    // The file the blocked process mapped was inspected all the same.
    let seen = agent_map(agent.pid(), "seen_files");
    let state = seen.lookup(&file_key(&fresh), libbpf_rs::MapFlags::ANY);
    assert_eq!(state.unwrap(), Some(vec![2]), "FILE_DONE");
    fs.release();
    assert_eq!(fs.line(), "released 1");
    assert_eq!(hostile.read_line(), "exec failed: Input/output error");
    let (ok, _, err) = hostile.finish(Duration::from_secs(10));
    assert!(ok, "the process ran on to its end: {err}");
    let t0 = Instant::now();
    let log = agent.stop();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let warned = format!("pid {}: stopping it has waited", hostile.pid);
    assert!(log.contains(&warned), "{warned:?} not in: {log}");
    assert!(log.contains("1 stops blocked by an exec"), "{log}");
    let held = format!("pid {client} held");
    assert!(log.contains(&held), "the later program was paused: {log}");
}
