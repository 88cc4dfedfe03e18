//! Test harness: real agent, real TLS programs, real kernel.
//!
//! Every test starts its own agent filtered to the processes it starts itself
//! (by pid or by a unique process name), so tests running side by side do not
//! see each other's traffic. Everything started here is killed on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const AGENT: &str = env!("CARGO_BIN_EXE_plainsight");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the fixture programs once per test binary.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo().join("target/fixtures");
        // Inside the test VM the tree is read-only: built beforehand.
        if std::env::var_os("PLAINSIGHT_FIXTURES_PREBUILT").is_some() {
            return dir;
        }
        let st = Command::new("bash")
            .arg(repo().join("tests/fixtures/build.sh"))
            .arg(&dir)
            .stdout(Stdio::null())
            .status()
            .expect("running tests/fixtures/build.sh");
        assert!(st.success(), "building fixtures failed");
        dir
    })
}

pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

pub fn script(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

/// Kills a child (and waits) when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The python TLS test server on 127.0.0.1.
pub struct Server {
    pub port: u16,
    _child: Guard,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }
    pub fn start_with(extra: &[&str]) -> Server {
        let d = fixtures();
        let mut cmd = Command::new("python3");
        cmd.arg(script("tls_server.py"))
            .arg("--cert")
            .arg(d.join("cert.pem"))
            .arg("--key")
            .arg(d.join("key.pem"));
        let (port, child) = start_server(cmd.args(extra));
        Server {
            port,
            _child: child,
        }
    }
}

/// go_server (Go net/http over TLS) with `extra` options, e.g. `-h2`.
pub struct GoServer {
    pub port: u16,
    _child: Guard,
}

impl GoServer {
    pub fn start(extra: &[&str]) -> GoServer {
        let d = fixtures();
        let mut cmd = Command::new(fixture("go_server"));
        cmd.arg("-cert")
            .arg(d.join("cert.pem"))
            .arg("-key")
            .arg(d.join("key.pem"));
        let (port, child) = start_server(cmd.args(extra));
        GoServer {
            port,
            _child: child,
        }
    }
}

/// Runs `cmd` to its end, its stdout and stderr piped: its pid and output.
/// A failure fails the test, with its stderr.
pub fn run_to_end(cmd: &mut Command) -> (u32, std::process::Output) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (pid, out)
}

/// The agent's log line saying it instrumented a file whose line holds
/// `file`; fails the test when there is none.
pub fn instrumented_line(log: &str, file: &str) -> String {
    log.lines()
        .find(|l| l.contains("] instrumented") && l.contains(file))
        .unwrap_or_else(|| panic!("{file} not instrumented:\n{log}"))
        .to_string()
}

/// An agent under `--sni *.acme.com` that watches only two held clients:
/// `yes`, which names api.acme.com, and `no`, which names another server.
pub fn sni_pair_agent(yes: &Held, no: &Held) -> Agent {
    let (y, n) = (yes.pid.to_string(), no.pid.to_string());
    Agent::start(&["--sni", "*.acme.com", "--pid", &y, "--pid", &n])
}

/// Starts a test server that prints "PORT n" first; its port and guard.
fn start_server(cmd: &mut Command) -> (u16, Guard) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting a test server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .expect("PORT line")
        .parse()
        .unwrap();
    (port, Guard(child))
}

/// Runs a program that takes the OpenSSL test client's arguments (a copy of
/// `tls_client_openssl`, say) against port `port` of 127.0.0.1 with server
/// name api.acme.com and the request in `req`.
pub fn run_client_on(exe: &Path, port: u16, req: &Path) -> std::process::Output {
    Command::new(exe)
        .args([
            "127.0.0.1",
            &port.to_string(),
            "api.acme.com",
            req.to_str().unwrap(),
        ])
        .output()
        .unwrap()
}

/// [`run_client_on`] against `srv`.
pub fn run_client(exe: &Path, srv: &Server, req: &Path) -> std::process::Output {
    run_client_on(exe, srv.port, req)
}

/// The exact response of tls_server.py (see its header comment).
pub fn expected_response(method: &str, path: &str, body_len: usize, close: bool) -> Vec<u8> {
    let body = format!("ok {method} {path} {body_len}\n");
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n",
        body.len()
    );
    if close {
        r.push_str("Connection: close\r\n");
    }
    r.push_str("\r\n");
    r.push_str(&body);
    r.into_bytes()
}

/// A running agent writing JSON lines to a private temporary file.
pub struct Agent {
    child: Option<Child>,
    pub out: PathBuf,
    _dir: tempfile::TempDir,
    stderr: Arc<Mutex<String>>,
}

impl Agent {
    /// Starts the agent (one JSON record per TLS call) with `args` and waits
    /// until it says it is ready.
    pub fn start(args: &[&str]) -> Agent {
        Agent::start_with(&["--output", "json", "--raw"], args)
    }

    /// Starts the agent with decoded output (`format`: json or text) and
    /// `args`.
    pub fn start_decoded(format: &str, args: &[&str]) -> Agent {
        Agent::start_with(&["--output", format], args)
    }

    /// The output file is in `out`; `dir()` holds it (for a pcap next to it).
    pub fn start_with(base: &[&str], args: &[&str]) -> Agent {
        Agent::start_cmd(Command::new(AGENT), base, args)
    }

    /// [`Agent::start_with`] through `cmd`, a command that ends by running
    /// the agent in its own process (`nsenter ... plainsight`, say) with
    /// the arguments appended.
    pub fn start_cmd(mut cmd: Command, base: &[&str], args: &[&str]) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("capture.json");
        let mut child = cmd
            .args(base)
            .arg("--write")
            .arg(&out)
            .args(["--log-level", "debug"])
            .args(args)
            // Each agent its own cache on disk, unless the test gives one:
            // a test sees first sights.
            .args(if args.contains(&"--cache-dir") {
                Vec::new()
            } else {
                vec![
                    "--cache-dir".to_string(),
                    dir.path().join("cache").display().to_string(),
                ]
            })
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting plainsight");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("plainsight: ready") {
                    let _ = tx.send(());
                }
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut agent = Agent {
            child: Some(child),
            out,
            _dir: dir,
            stderr,
        };
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let log = agent.stderr();
            agent.kill();
            panic!("agent not ready in 60 s; stderr:\n{log}");
        }
        agent
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The JSON records of connections written so far (not the coverage
    /// records of files: [`Agent::coverage`]).
    pub fn records(&self) -> Vec<Value> {
        self.all_records()
            .into_iter()
            .filter(|r| r["type"] != "coverage")
            .collect()
    }

    /// The coverage records written so far (one per file carrying TLS).
    pub fn coverage(&self) -> Vec<Value> {
        self.all_records()
            .into_iter()
            .filter(|r| r["type"] == "coverage")
            .collect()
    }

    fn all_records(&self) -> Vec<Value> {
        let s = std::fs::read_to_string(&self.out).unwrap_or_default();
        s.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Data records of `pid` in one direction, bytes concatenated in order.
    pub fn bytes(&self, pid: u32, direction: &str) -> Vec<u8> {
        data_of(&self.records(), pid, direction)
    }

    /// The decoded exchanges ("http" records) of `pid`, once there are
    /// `n` (bounded wait), and a little longer for any that must not come.
    pub fn exchanges(&self, pid: u32, n: usize) -> Vec<Value> {
        let of_pid = || -> Vec<Value> {
            self.records()
                .into_iter()
                .filter(|r| r["type"] == "http" && r["pid"] == pid)
                .collect()
        };
        let until = Instant::now() + Duration::from_secs(15);
        while of_pid().len() < n && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        of_pid()
    }

    /// Waits until `pid` has at least `write` and `read` bytes captured.
    pub fn wait_bytes(&self, pid: u32, write: usize, read: usize) -> (Vec<u8>, Vec<u8>) {
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            let recs = self.records();
            let (w, r) = (data_of(&recs, pid, "write"), data_of(&recs, pid, "read"));
            if (w.len() >= write && r.len() >= read) || Instant::now() > until {
                // A little longer, to catch anything extra that must not be there.
                std::thread::sleep(Duration::from_millis(300));
                let recs = self.records();
                return (data_of(&recs, pid, "write"), data_of(&recs, pid, "read"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGINT, wait for exit, return stderr; records pause statistics.
    pub fn stop(&mut self) -> String {
        let Some(mut c) = self.child.take() else {
            return self.stderr();
        };
        {
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            let until = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > until {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        let log = self.stderr();
        record_pause_stats(&log);
        if log.contains(LATE_STOP) {
            HOST_STALLED.with(|c| c.set(true));
        }
        log
    }

    /// Waits up to `timeout` for the agent to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + timeout;
        let c = self.child.as_mut()?;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let log = self.stop();
        // A failing test shows what the agent saw (in CI there is no rerun).
        if std::thread::panicking() {
            eprintln!("---- agent log ----\n{log}---- end of agent log ----");
        }
    }
}

/// What the agent's debug line about a late stop says (src/pause.rs).
pub const LATE_STOP: &str = "after its file was mapped";

thread_local! {
    /// Set when an agent of this test thread logged that it stopped a
    /// process more than 1 ms after the process mapped a file (the agent
    /// logs that only then).
    static HOST_STALLED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs an end-to-end test body; if it fails after an agent of it reported
/// that its pause thread was woken more than 1 ms late, runs it once more.
///
/// The pause thread (SCHED_FIFO) normally stops a process within ~0.1 ms of
/// the mapping (p50 68 us, p90 147 us here). With several agents starting at
/// once on this 2-vCPU virtual machine (PREEMPT_NONE), it has been seen to
/// wake 2 ms late, and once 62 ms late. The rustls fixture sends its
/// ClientHello within 3-4 ms of exec even under strace, so a late stop can miss the whole
/// connection. Such a run says nothing either way about the agent, so it is
/// repeated; a failure without such a report, or a second failure, fails
/// the test.
pub fn rerun_if_host_stalled(body: impl Fn()) {
    HOST_STALLED.with(|c| c.set(false));
    let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&body));
    if let Err(e) = first {
        if !HOST_STALLED.with(|c| c.get()) {
            std::panic::resume_unwind(e);
        }
        eprintln!("the agent's pause thread was woken late by the host (see its log above): running the test once more");
        HOST_STALLED.with(|c| c.set(false));
        body();
    }
}

/// Appends the agent's pause durations to target/pause-times.log.
fn record_pause_stats(log: &str) {
    for line in log.lines().filter(|l| {
        l.contains("pause durations (us):")
            || l.contains(" pauses (median")
            || l.contains(LATE_STOP)
    }) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(repo().join("target/pause-times.log"))
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

pub fn data_of(recs: &[Value], pid: u32, direction: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for r in recs {
        if r["type"] == "data" && r["pid"] == pid && r["direction"] == direction {
            out.extend(record_bytes(r));
        }
    }
    out
}

pub fn record_bytes(r: &Value) -> Vec<u8> {
    let d = r["data"].as_str().unwrap_or_default();
    match r["encoding"].as_str() {
        Some("base64") => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(d).unwrap()
        }
        _ => d.as_bytes().to_vec(),
    }
}

/// A program started behind `sh -c 'read go; exec PROGRAM'`: its pid is known
/// before it runs PROGRAM, so an agent can be filtered to it first, and
/// PROGRAM is started after the agent (discovered by BPF, paused, probed).
pub struct Held {
    pub pid: u32,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
}

impl Held {
    pub fn new(program: &Path, args: &[&str]) -> Held {
        Held::with_env(program, args, &[])
    }
    pub fn with_env(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Held {
        Held::spawn(program, args, env, None)
    }
    /// [`Held::new`], run in directory `dir`.
    pub fn in_dir(program: &Path, args: &[&str], dir: &Path) -> Held {
        Held::spawn(program, args, &[], Some(dir))
    }
    fn spawn(program: &Path, args: &[&str], env: &[(&str, &str)], dir: Option<&Path>) -> Held {
        let mut cmd = Command::new("sh");
        if let Some(d) = dir {
            cmd.current_dir(d);
        }
        cmd.arg("-c")
            .arg("read go; exec \"$0\" \"$@\"")
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawning sh");
        let stdin = child.stdin.take();
        Held {
            pid: child.id(),
            child: Some(child),
            stdin,
        }
    }

    /// Lets the program run; `input` follows on its stdin, then EOF.
    pub fn go(&mut self, input: &[u8]) {
        let mut s = self.stdin.take().expect("go once");
        s.write_all(b"go\n").unwrap();
        s.write_all(input).unwrap();
        drop(s);
    }

    /// Lets the program run, keeping its stdin open.
    pub fn go_keep_stdin(&mut self) {
        let s = self.stdin.as_mut().expect("stdin");
        s.write_all(b"go\n").unwrap();
        s.flush().unwrap();
    }

    /// Writes one line to the program's stdin (after `go_keep_stdin`).
    pub fn send_line(&mut self, line: &str) {
        let s = self.stdin.as_mut().expect("stdin");
        s.write_all(line.as_bytes()).unwrap();
        s.write_all(b"\n").unwrap();
        s.flush().unwrap();
    }

    /// Closes the program's stdin (EOF).
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Lets a held server that prints "PORT n" first run, its stdin kept
    /// open; its port.
    pub fn run_for_port(&mut self) -> u16 {
        self.go_keep_stdin();
        let line = self.read_line();
        line.trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the server said {line:?}, not PORT n"))
    }

    /// Reads one line of the program's stdout (blocking).
    pub fn read_line(&mut self) -> String {
        let c = self.child.as_mut().expect("running");
        let out = c.stdout.as_mut().expect("stdout");
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        use std::io::Read;
        while out.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
            line.push(b[0]);
        }
        String::from_utf8_lossy(&line).into_owned()
    }

    /// Reads the program's stdout until it is closed (blocking).
    pub fn read_to_end(&mut self) -> Vec<u8> {
        use std::io::Read;
        let c = self.child.as_mut().expect("running");
        let mut v = Vec::new();
        c.stdout
            .as_mut()
            .expect("stdout")
            .read_to_end(&mut v)
            .unwrap();
        v
    }

    /// Waits for exit (bounded); returns (success, stdout, stderr).
    pub fn finish(&mut self, timeout: Duration) -> (bool, Vec<u8>, String) {
        let mut c = self.child.take().expect("finish once");
        let until = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            if Instant::now() > until {
                let _ = c.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let o = c.wait_with_output().unwrap();
        (
            o.status.success(),
            o.stdout,
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Under `--sni api.acme.com`: nothing of process `excluded` (its server
/// name did not match) was captured, and every data record names
/// api.acme.com.
pub fn assert_only_api_acme(recs: &[Value], excluded: u32) {
    assert!(
        recs.iter().all(|r| r["pid"] != excluded),
        "other.example captured"
    );
    assert!(recs
        .iter()
        .filter(|r| r["type"] == "data")
        .all(|r| r["sni"] == "api.acme.com"));
}

/// A request file in a temporary directory.
pub fn request_file(dir: &Path, bytes: &[u8]) -> PathBuf {
    let p = dir.join("request.bin");
    std::fs::write(&p, bytes).unwrap();
    p
}

/// `State:` of /proc/PID/status, e.g. "t (tracing stop)".
pub fn proc_state(pid: u32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("State:").map(|v| v.trim().to_string()))
}

pub fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(400)]).into_owned()
}

/// The inode of process `pid`'s network namespace.
pub fn netns_of(pid: u32) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .expect("a network namespace")
        .ino()
}

/// Every record of `pid` that belongs to a connection names its
/// endpoints by role: the `server` and a client at address `client.0`
/// (and port `client.1` when given) in network namespace `netns`, over
/// TCP; raw records also carry the descriptor. Data, close and decoded
/// records must have them; a server-name record may come before the socket
/// is known, and then has none, and a connection without data (a port
/// probe's, a failed handshake's) may close before it is known. Returns the
/// client's port (the same on every record) and how many records were
/// checked.
pub fn check_endpoints(
    recs: &[Value],
    pid: u32,
    client: (&str, Option<u16>),
    server: (&str, u16),
    netns: u64,
) -> (u16, usize) {
    let mut port = client.1;
    let mut checked = 0;
    // Each record's connection lifetime (by id, which a library may reuse
    // after a close): an index per lifetime, and whether it had data.
    let mine: Vec<&Value> = recs.iter().filter(|r| r["pid"] == pid).collect();
    let mut life: Vec<usize> = Vec::new();
    let mut had_data: Vec<bool> = Vec::new();
    let mut open: Vec<(Value, usize)> = Vec::new();
    for r in &mine {
        let at = match open.iter().position(|(c, _)| *c == r["conn"]) {
            Some(i) => open[i].1,
            None => {
                had_data.push(false);
                open.push((r["conn"].clone(), had_data.len() - 1));
                had_data.len() - 1
            }
        };
        life.push(at);
        match r["type"].as_str() {
            Some("data" | "http" | "raw") => had_data[at] = true,
            Some("close") => open.retain(|(c, _)| *c != r["conn"]),
            _ => {}
        }
    }
    for (r, at) in mine.iter().zip(life) {
        let kind = r["type"].as_str().unwrap_or("");
        // A connection without data (a port probe's, a failed handshake's)
        // is not the one checked.
        if !had_data[at] || (r.get("server").is_none() && kind == "sni") {
            continue;
        }
        assert_eq!(r["server"]["address"], server.0, "server address: {r}");
        assert_eq!(r["server"]["port"], server.1, "server port: {r}");
        assert_eq!(r["client"]["address"], client.0, "client address: {r}");
        let p = r["client"]["port"].as_u64().expect("a client port") as u16;
        assert_eq!(*port.get_or_insert(p), p, "client port: {r}");
        assert_eq!(r["netns"], netns, "netns: {r}");
        assert_eq!(r["transport"], "tcp", "{r}");
        if ["data", "sni", "close"].contains(&kind) {
            assert!(r["fd"].as_i64().is_some_and(|fd| fd >= 0), "fd: {r}");
        } else {
            assert!(r.get("fd").is_none(), "{r}");
        }
        checked += 1;
    }
    assert!(checked > 0, "no record of {pid} names its endpoints");
    (port.expect("a client port"), checked)
}

/// [`check_endpoints`] of a connection on 127.0.0.1 in this test's
/// network namespace: its server on `server_port`, its client on
/// `client_port` when given.
pub fn check_loopback(
    recs: &[Value],
    pid: u32,
    client_port: Option<u16>,
    server_port: u16,
) -> (u16, usize) {
    let netns = netns_of(std::process::id());
    check_endpoints(
        recs,
        pid,
        ("127.0.0.1", client_port),
        ("127.0.0.1", server_port),
        netns,
    )
}

/// `target` under the name `name`: a symlink in target/named/. A process's
/// name is its executable's file name, so an agent filtered to `--comm
/// name` never holds the processes of `target` that tests beside it run (a
/// process can be paused by one agent at a time).
pub fn named(target: &str, name: &str) -> PathBuf {
    let dir = repo().join("target/named");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join(name);
    if std::fs::read_link(&link).ok().as_deref() != Some(Path::new(target)) {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link).unwrap();
    }
    link
}

/// The test certificate and key, as paths.
pub fn cert_args() -> (String, String) {
    let d = fixtures();
    (
        d.join("cert.pem").display().to_string(),
        d.join("key.pem").display().to_string(),
    )
}

/// A free port on 127.0.0.1 (for nginx, whose port is in its configuration).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_port(port: u16) {
    let until = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// nginx, its configuration written here: TLS on 127.0.0.1, HTTP/1.1 and
/// HTTP/2 (curl chooses by ALPN), one process.
pub fn nginx_conf(dir: &Path, port: u16) -> PathBuf {
    let (c, k) = cert_args();
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\nevents {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         server_tokens off;\n  server {{\n    listen 127.0.0.1:{port} ssl http2;\n\
         ssl_certificate {c};\n    ssl_certificate_key {k};\n\
         location / {{ default_type text/plain; return 200 \"hello $request_method $uri\\n\"; }}\n  }}\n}}\n"
    );
    let p = dir.join("nginx.conf");
    std::fs::write(&p, conf).unwrap();
    p
}

/// An HTTP/1.1 GET of `path` for `host`, asking to close.
pub fn request(path: &str, host: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// The image the tests run containers of (scripts/container-image.sh).
pub const IMAGE: &str = "localhost/plainsight-test:bookworm-2";

/// `podman run` options every container of the tests gets: runc (crun refuses this
/// host's hybrid cgroup layout), the host's network (the test servers listen
/// on 127.0.0.1), and limits root can set here (it lacks CAP_SYS_RESOURCE).
pub const RUN: &[&str] = &[
    "--runtime",
    "runc",
    "--network",
    "host",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// Whether podman can run here at all (else why not). The image itself is
/// made by `make test` (scripts/container-image.sh): missing, the test
/// fails.
pub fn podman_works() -> Result<(), String> {
    let out = std::process::Command::new("podman")
        .arg("info")
        .output()
        .map_err(|e| format!("podman cannot start: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "podman cannot run here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let image = std::process::Command::new("podman")
        .args(["image", "exists", IMAGE])
        .status()
        .unwrap();
    assert!(
        image.success(),
        "{IMAGE} missing: run scripts/container-image.sh"
    );
    Ok(())
}

/// Removes the container when dropped.
pub struct Remove(pub String);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::process::Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.0])
            .output();
    }
}

/// What the test server recorded (tls_server.py --record): per request,
/// (client port, server name, request bytes, response bytes).
pub struct Seen {
    pub port: u16,
    pub sni: Option<String>,
    pub request: Vec<u8>,
    pub response: Vec<u8>,
}

pub fn recorded(path: &Path) -> Vec<Seen> {
    let b64 = |v: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            Seen {
                port: v["port"].as_u64().unwrap() as u16,
                sni: v["sni"].as_str().map(String::from),
                request: b64(&v["request"]),
                response: b64(&v["response"]),
            }
        })
        .collect()
}

/// The one request the server saw for `path`.
pub fn seen_for(rec: &Path, path: &str) -> Seen {
    let needle = format!(" {path} HTTP/1.1\r\n");
    let mut v: Vec<Seen> = recorded(rec)
        .into_iter()
        .filter(|s| {
            s.request
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
        })
        .collect();
    assert_eq!(v.len(), 1, "requests for {path} the server saw");
    v.remove(0)
}

/// lighttpd serving TLS on 127.0.0.1:`port` with its TLS module `module`
/// (`mod_mbedtls`, `mod_wolfssl`), the test certificate, one process, and
/// one file, `/index.txt` ([`LIGHTTPD_BODY`]); its configuration and
/// document root are written in `dir`. Returns the configuration's path.
pub fn lighttpd_conf(dir: &Path, port: u16, module: &str) -> PathBuf {
    let (c, k) = cert_args();
    let d = dir.display();
    std::fs::write(dir.join("index.txt"), LIGHTTPD_BODY).unwrap();
    let conf = format!(
        "server.document-root = \"{d}\"\nserver.bind = \"127.0.0.1\"\nserver.port = {port}\n\
         server.modules = (\"{module}\")\nserver.errorlog = \"{d}/error.log\"\n\
         ssl.engine = \"enable\"\nssl.pemfile = \"{c}\"\nssl.privkey = \"{k}\"\n"
    );
    let p = dir.join("lighttpd.conf");
    std::fs::write(&p, conf).unwrap();
    p
}

/// The body of lighttpd's `/index.txt` ([`lighttpd_conf`]).
pub const LIGHTTPD_BODY: &[u8] = b"hello from lighttpd\n";

/// lighttpd with `conf`, held until `go`: in the foreground (`-D`), its
/// modules from Debian's directory.
pub fn lighttpd(conf: &Path) -> Held {
    Held::new(
        Path::new("/usr/sbin/lighttpd"),
        &[
            "-D",
            "-f",
            conf.to_str().unwrap(),
            "-m",
            "/usr/lib/lighttpd",
        ],
    )
}

/// curl, held until `go`, fetching `/index.txt` from 127.0.0.1:`port` as
/// `https://NAME:PORT` over HTTP/1.1 with user agent `plainsight-test`, the
/// response's headers and body on stdout as received (`-i`); `extra`
/// options first (`--tls-max 1.2`, say).
pub fn curl_held(name: &str, port: u16, extra: &[&str]) -> Held {
    let resolve = format!("{name}:{port}:127.0.0.1");
    let url = format!("https://{name}:{port}/index.txt");
    let mut args = extra.to_vec();
    args.extend([
        "-sS",
        "-k",
        "-i",
        "--http1.1",
        "-A",
        "plainsight-test",
        "--resolve",
        resolve.as_str(),
        url.as_str(),
    ]);
    Held::new(Path::new("/usr/bin/curl"), &args)
}

/// The request [`curl_held`] sends for server name `name` on `port`.
pub fn curl_request(name: &str, port: u16) -> Vec<u8> {
    format!(
        "GET /index.txt HTTP/1.1\r\nHost: {name}:{port}\r\nUser-Agent: plainsight-test\r\nAccept: */*\r\n\r\n"
    )
    .into_bytes()
}

/// A test client taking tls_client's arguments (`mbedtls_client`,
/// `wolfssl_client`), run twice under `--sni *.acme.com`: with server name
/// api.acme.com it is captured, exactly (its request written, the test
/// server's response read, with its endpoints), with other.example not at
/// all.
pub fn client_under_sni(exe: &str) {
    let srv = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let req = request("/embedded", "api.acme.com");
    let f = request_file(dir.path(), &req);
    let port = srv.port.to_string();
    let cli = |sni: &str| {
        Held::new(
            &fixture(exe),
            &["127.0.0.1", &port, sni, f.to_str().unwrap()],
        )
    };
    let mut yes = cli("api.acme.com");
    let mut no = cli("other.example");
    let agent = sni_pair_agent(&yes, &no);
    yes.go(b"");
    no.go(b"");
    let t = Duration::from_secs(30);
    let resp = expected_response("GET", "/embedded", 0, true);
    let (ok, out, err) = yes.finish(t);
    assert!(ok, "{exe}: {err}");
    assert_eq!(out, resp, "{exe} got the server's response");
    let (ok, _, err) = no.finish(t);
    assert!(ok, "{exe}: {err}");
    let (w, r) = agent.wait_bytes(yes.pid, req.len(), resp.len());
    assert_eq!(show(&w), show(&req));
    assert_eq!(w, req, "{exe}: its request, each write once");
    assert_eq!(r, resp, "{exe}: the response it read");
    let recs = agent.records();
    assert_only_api_acme(&recs, no.pid);
    assert!(
        recs.iter()
            .any(|r| r["type"] == "sni" && r["pid"] == yes.pid && r["sni"] == "api.acme.com"),
        "{exe}: no server-name record"
    );
    check_loopback(&recs, yes.pid, None, srv.port);
}

/// lighttpd with TLS module `module` hit by curl (`curl_extra`: its TLS
/// options), under `--sni api.acme.com`: the server's side of curl's
/// connection to api.acme.com is captured, its name from the ClientHello
/// it read, what it read exactly curl's request and what it wrote exactly
/// what curl received (and curl's own capture, through OpenSSL, the same);
/// curl's connection to other.example, on either side, not at all.
/// `agent_extra`: more options for the agent.
pub fn lighttpd_under_sni(module: &str, curl_extra: &[&str], agent_extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = lighttpd(&lighttpd_conf(dir.path(), port, module));
    let mut yes = curl_held("api.acme.com", port, curl_extra);
    let mut no = curl_held("other.example", port, curl_extra);
    let (s, y, n) = (
        server.pid.to_string(),
        yes.pid.to_string(),
        no.pid.to_string(),
    );
    let mut args = vec![
        "--sni",
        "api.acme.com",
        "--pid",
        &s,
        "--pid",
        &y,
        "--pid",
        &n,
    ];
    args.extend(agent_extra);
    let agent = Agent::start(&args);
    server.go_keep_stdin();
    wait_port(port);
    let t = Duration::from_secs(30);
    yes.go(b"");
    let (ok, got, err) = yes.finish(t);
    assert!(ok, "curl: {err}");
    assert!(got.ends_with(LIGHTTPD_BODY), "{}", show(&got));
    no.go(b"");
    let (ok, _, err) = no.finish(t);
    assert!(ok, "curl: {err}");
    let req = curl_request("api.acme.com", port);
    let (w, r) = agent.wait_bytes(server.pid, got.len(), req.len());
    assert_eq!(show(&r), show(&req));
    assert_eq!(r, req, "{module}: lighttpd read curl's request");
    assert_eq!(w, got, "{module}: lighttpd wrote what curl received");
    let (cw, cr) = agent.wait_bytes(yes.pid, req.len(), got.len());
    assert_eq!((cw, cr), (req, got), "curl's own side");
    let recs = agent.records();
    assert_only_api_acme(&recs, no.pid);
    assert!(
        recs.iter()
            .any(|r| r["type"] == "sni" && r["pid"] == server.pid && r["sni"] == "api.acme.com"),
        "{module}: no server-name record of lighttpd"
    );
    // The server's records name both ends (curl's, OpenSSL's path, are
    // checked elsewhere).
    check_loopback(&recs, server.pid, None, port);
    assert!(
        recs.iter()
            .any(|r| r["type"] == "close" && r["pid"] == server.pid),
        "{module}: no close record of lighttpd"
    );
}

/// lighttpd with TLS module `module`, its process the agent's only filter,
/// decoded: curl's HTTP/1.1 and HTTP/2 requests are one exchange each, on
/// the server's side, with the name curl sent, the status and the body.
pub fn lighttpd_decoded(module: &str) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = lighttpd(&lighttpd_conf(dir.path(), port, module));
    let agent = Agent::start_decoded("json", &["--pid", &server.pid.to_string()]);
    server.go_keep_stdin();
    wait_port(port);
    let resolve = format!("api.acme.com:{port}:127.0.0.1");
    for (query, http) in [("one", "--http1.1"), ("two", "--http2")] {
        let url = format!("https://api.acme.com:{port}/index.txt?{query}");
        let out = Command::new("curl")
            .args(["-sS", "-k", http, "--resolve", &resolve, &url])
            .output()
            .unwrap();
        assert_eq!(out.stdout, LIGHTTPD_BODY, "{module} {http}");
    }
    let ex = agent.exchanges(server.pid, 2);
    let got = exchange_rows(&ex);
    let row = |p: &str, path: &str| {
        (
            p.to_string(),
            path.to_string(),
            "server".to_string(),
            "api.acme.com".to_string(),
            200,
            String::from_utf8_lossy(LIGHTTPD_BODY).into_owned(),
        )
    };
    assert_eq!(
        got,
        [
            row("HTTP/1.1", "/index.txt?one"),
            row("HTTP/2", "/index.txt?two")
        ],
        "{module}"
    );
}

/// One decoded exchange as (protocol, path, side, server name, status,
/// response body).
pub type ExchangeRow = (String, String, String, String, u64, String);

/// The exchanges `ex` as [`ExchangeRow`]s, sorted (what a server test
/// compares).
pub fn exchange_rows(ex: &[Value]) -> Vec<ExchangeRow> {
    let mut got: Vec<ExchangeRow> = ex
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("?").to_string();
            (
                s("protocol"),
                s("path"),
                s("side"),
                s("sni"),
                e["status"].as_u64().unwrap_or(0),
                e["response"]["body"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    got.sort();
    got
}
