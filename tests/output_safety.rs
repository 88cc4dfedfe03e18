//! The agent's outputs on a hostile host (issue "Hostile host", items 7-9):
//!
//! - output paths (`--write`, `--pcap`) that another user prepared (a
//!   symlink, a FIFO, a file of theirs, a hard link) are refused before
//!   anything is loaded, and nothing is written through them;
//! - an output that can no longer be written (a full disk, a closed pipe)
//!   is reported and ends the agent;
//! - names, header values and bodies from the captured processes reach the
//!   console with their control characters escaped.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// What a victim file holds before and (it must) after the agent ran.
const PRECIOUS: &[u8] = b"precious data, not the agent's\n";
/// A process name that no test process has: the agent captures nothing.
const NOBODY: &str = "no-such-proc-x9";

/// A victim file with known content and mode 0644.
fn victim(dir: &Path) -> PathBuf {
    let v = dir.join("victim");
    std::fs::write(&v, PRECIOUS).unwrap();
    std::fs::set_permissions(&v, std::fs::Permissions::from_mode(0o644)).unwrap();
    v
}

/// The victim is untouched: same content, same mode.
fn assert_untouched(v: &Path) {
    assert_eq!(
        std::fs::read(v).unwrap(),
        PRECIOUS,
        "victim content changed"
    );
    let mode = std::fs::metadata(v).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o644, "victim mode changed to {mode:o}");
}

/// Runs the agent with `args` to its end (at most 20 s, then it is killed):
/// its exit status (None if it had to be killed) and stderr.
fn run_agent(args: &[&std::ffi::OsStr]) -> (Option<ExitStatus>, String) {
    let mut child = Command::new(AGENT)
        .args(args)
        .args(["--comm", NOBODY])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting plainsight");
    let err = collect_stderr(&mut child, |_| {});
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break Some(st);
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(100));
    let log = err.lock().unwrap().clone();
    (status, log)
}

/// Collects a child's stderr in the background; `on_line` sees each line.
fn collect_stderr(
    child: &mut Child,
    on_line: impl Fn(&str) + Send + 'static,
) -> Arc<Mutex<String>> {
    let err = child.stderr.take().unwrap();
    let sink = Arc::new(Mutex::new(String::new()));
    let s = sink.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            on_line(&line);
            let mut s = s.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    sink
}

/// The agent refused `path` for `reason`: status 1 (quickly, not killed),
/// an error line naming the path and the reason, and no BPF loaded (the
/// kernel hooks are announced right after the outputs are opened).
fn assert_refused(status: Option<ExitStatus>, log: &str, path: &Path, reason: &str) {
    let status = status.unwrap_or_else(|| panic!("agent still running after 20 s:\n{log}"));
    assert_eq!(status.code(), Some(1), "{status:?}\n{log}");
    let line = log
        .lines()
        .find(|l| l.starts_with("plainsight: error:"))
        .unwrap_or_else(|| panic!("no error line:\n{log}"));
    assert!(
        line.contains(path.to_str().unwrap()),
        "path not named: {line}"
    );
    assert!(line.contains(reason), "reason {reason:?} not given: {line}");
    assert!(
        !log.contains("kernel hooks"),
        "BPF was loaded first:\n{log}"
    );
}

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

/// `--write` onto a symlink planted in a shared directory: refused, the
/// file it points to keeps its content and mode.
#[test]
fn write_onto_a_symlink_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v = victim(dir.path());
    let link = dir.path().join("out.json");
    std::os::unix::fs::symlink(&v, &link).unwrap();
    let (st, log) = run_agent(&[os("--write"), link.as_os_str()]);
    assert_refused(st, &log, &link, "symbolic link");
    assert_untouched(&v);
}

/// The same for `--pcap`.
#[test]
fn pcap_onto_a_symlink_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v = victim(dir.path());
    let link = dir.path().join("out.pcapng");
    std::os::unix::fs::symlink(&v, &link).unwrap();
    let out = dir.path().join("out.json");
    let (st, log) = run_agent(&[
        os("--write"),
        out.as_os_str(),
        os("--pcap"),
        link.as_os_str(),
    ]);
    assert_refused(st, &log, &link, "symbolic link");
    assert_untouched(&v);
}

/// A symlink to a file that does not exist yet is not followed either
/// (it would create the file wherever it points).
#[test]
fn dangling_symlink_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("created-through-link");
    let link = dir.path().join("out.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (st, log) = run_agent(&[os("--write"), link.as_os_str()]);
    assert_refused(st, &log, &link, "symbolic link");
    assert!(!target.exists(), "a file was created through the link");
}

/// A FIFO nobody reads: refused at once (opening it must not block).
#[test]
fn write_onto_a_fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("out.json");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    let (st, log) = run_agent(&[os("--write"), fifo.as_os_str()]);
    assert_refused(st, &log, &fifo, "FIFO");
}

/// A FIFO with a reader waiting on it (who would get the plaintext).
#[test]
fn write_onto_a_fifo_with_a_reader_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("out.json");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    let mut reader = Guard(
        Command::new("cat")
            .arg(&fifo)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(200));
    let (st, log) = run_agent(&[os("--write"), fifo.as_os_str()]);
    assert_refused(st, &log, &fifo, "FIFO");
    let _ = reader.0.kill();
    let _ = reader.0.wait();
    let mut got = Vec::new();
    use std::io::Read;
    let _ = reader.0.stdout.take().unwrap().read_to_end(&mut got);
    assert!(got.is_empty(), "the reader got {got:?}");
}

/// A file another user created (and could read, or hold open): refused.
#[test]
fn file_of_another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v = victim(dir.path());
    std::os::unix::fs::chown(&v, Some(65534), Some(65534)).unwrap();
    let (st, log) = run_agent(&[os("--write"), v.as_os_str()]);
    assert_refused(st, &log, &v, "owned by uid 65534");
    assert_untouched(&v);
    assert_eq!(std::fs::metadata(&v).unwrap().uid(), 65534);
}

/// A hard link to a root file (the name in a shared directory, the data
/// elsewhere): refused.
#[test]
fn hard_link_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v = victim(dir.path());
    let link = dir.path().join("out.json");
    std::fs::hard_link(&v, &link).unwrap();
    let (st, log) = run_agent(&[os("--write"), link.as_os_str()]);
    assert_refused(st, &log, &link, "2 links");
    assert_untouched(&v);
}

/// Not a file at all: a directory, a character device.
#[test]
fn directory_and_device_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (st, log) = run_agent(&[os("--write"), dir.path().as_os_str()]);
    assert_refused(st, &log, dir.path(), "directory");
    let dev = Path::new("/dev/null");
    let (st, log) = run_agent(&[os("--write"), dev.as_os_str()]);
    assert_refused(st, &log, dev, "character device");
}

/// A new path is created with mode 0600; an existing file of root's is
/// truncated and made 0600 (as before).
#[test]
fn new_and_own_files_are_private() {
    let mut agent = Agent::start(&["--comm", NOBODY]);
    let mode = std::fs::metadata(&agent.out).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    agent.stop();

    let dir = tempfile::tempdir().unwrap();
    let own = victim(dir.path());
    let pcap = dir.path().join("new.pcapng");
    let agent = Console::start(
        Stdio::null(),
        &[
            "--comm",
            NOBODY,
            "--pcap",
            pcap.to_str().unwrap(),
            "--write",
            own.to_str().unwrap(),
        ],
    );
    drop(agent);
    let m = std::fs::metadata(&own).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o600);
    assert!(
        !std::fs::read(&own).unwrap().starts_with(PRECIOUS),
        "not truncated"
    );
    let m = std::fs::metadata(&pcap).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o600);
}

/// An agent started by the test with `stdout`, filtered to `pid`, and its
/// stderr; returns once it is ready.
struct Console {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Console {
    fn start(stdout: Stdio, args: &[&str]) -> Console {
        let mut child = Command::new(AGENT)
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting plainsight");
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = Mutex::new(tx);
        let stderr = collect_stderr(&mut child, move |l| {
            if l.contains("plainsight: ready") {
                let _ = tx.lock().unwrap().send(());
            }
        });
        let mut c = Console { child, stderr };
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            panic!("agent not ready in 60 s:\n{}", c.log());
        }
        let _ = c.child.try_wait();
        c
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the log has a line containing all of `words`.
    fn wait_line(&self, words: &[&str], timeout: Duration) -> Option<String> {
        let until = Instant::now() + timeout;
        loop {
            let log = self.log();
            if let Some(l) = log.lines().find(|l| words.iter().all(|w| l.contains(w))) {
                return Some(l.to_string());
            }
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        if self.wait_exit(Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- agent log ----\n{}---- end ----", self.log());
        }
    }
}

/// curl against the test server, held until `go`.
fn curl(port: u16, program: &Path, extra: &[&str]) -> Held {
    let cacert = fixtures().join("cert.pem");
    let resolve = format!("api.acme.com:{port}:127.0.0.1");
    let url = format!("https://api.acme.com:{port}/hello");
    let mut args = vec![
        "-sS",
        "--cacert",
        cacert.to_str().unwrap(),
        "--resolve",
        &resolve,
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Held::new(program, &args)
}

/// One exchange by a curl that the agent (stdout `out`) captures.
fn agent_sees_one_exchange(out: Stdio) -> Console {
    let srv = Server::start();
    let mut c = curl(srv.port, Path::new("/usr/bin/curl"), &[]);
    let agent = Console::start(out, &["--pid", &c.pid.to_string()]);
    c.go(b"");
    let (ok, _, err) = c.finish(Duration::from_secs(30));
    assert!(ok, "curl failed: {err}");
    agent
}

/// stdout on a full device: the agent says so, naming its output, instead
/// of going on silently.
#[test]
fn full_stdout_is_reported() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let agent = agent_sees_one_exchange(Stdio::from(full));
    let line = agent.wait_line(&["No space left on device"], Duration::from_secs(15));
    let line = line.unwrap_or_else(|| panic!("not reported:\n{}", agent.log()));
    assert!(line.contains("stdout"), "output not named: {line}");
}

/// ... and the agent ends: status 1 and the same error as its last word.
/// Needs the event loop of src/agent.rs to poll `output::has_stopped()`.
#[test]
fn full_stdout_ends_the_agent_with_an_error() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut agent = agent_sees_one_exchange(Stdio::from(full));
    let st = agent.wait_exit(Duration::from_secs(20));
    let st = st.unwrap_or_else(|| panic!("agent still running:\n{}", agent.log()));
    // The exit can be seen before the reader of its stderr has the last
    // line: wait for that line (bounded).
    let _ = agent.wait_line(&["plainsight: error: "], Duration::from_secs(5));
    let log = agent.log();
    assert_eq!(st.code(), Some(1), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("plainsight: error: ")
            && last.contains("stdout")
            && last.contains("No space left on device"),
        "{log}"
    );
    assert!(
        log.contains("connections tracked in the kernel at exit"),
        "no orderly stop:\n{log}"
    );
}

/// `plainsight | head -1`: the reader goes away; the agent ends quietly,
/// in order, with status 0.
#[test]
fn closed_stdout_ends_the_agent_quietly() {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both are new descriptors owned here; the read end is closed.
    let w = unsafe {
        libc::close(fds[0]);
        <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[1])
    };
    let mut agent = agent_sees_one_exchange(Stdio::from(w));
    let st = agent.wait_exit(Duration::from_secs(20));
    let st = st.unwrap_or_else(|| panic!("agent still running:\n{}", agent.log()));
    // The exit can be seen before the reader of its stderr has the last
    // line: wait for that line (bounded).
    let _ = agent.wait_line(&["plainsight: error: "], Duration::from_secs(5));
    let log = agent.log();
    assert_eq!(st.code(), Some(0), "{log}");
    assert!(!log.contains("error"), "{log}");
    assert!(
        log.contains("connections tracked in the kernel at exit"),
        "no orderly stop:\n{log}"
    );
}

/// A hostile process name, a header value with a C1 CSI (U+009B) and a
/// right-to-left override (HTTP parsers take both as obs-text; ESC and BEL
/// make the request undecodable, and it is shown as hex), a body with a
/// bare CR, in the console output (-vv): escaped, no control byte reaches
/// the file.
#[test]
fn console_output_escapes_control_characters() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let dir = tempfile::tempdir().unwrap();
        // comm is the executable's name: ESC [ 3 1 m curl
        let evil = dir.path().join("\x1b[31mcurl");
        std::os::unix::fs::symlink("/usr/bin/curl", &evil).unwrap();
        let mut c = curl(
            srv.port,
            &evil,
            &["-H", "X-Evil: a\u{9b}2J\u{202e}gpj.exe", "-d", "x\ry"],
        );
        let mut agent =
            Agent::start_with(&["--output", "text", "-vv"], &["--pid", &c.pid.to_string()]);
        c.go(b"");
        let (ok, _, err) = c.finish(Duration::from_secs(30));
        assert!(ok, "curl failed: {err}");
        let until = Instant::now() + Duration::from_secs(15);
        let text = loop {
            let t = std::fs::read(&agent.out).unwrap_or_default();
            if t.windows(6).any(|w| w == b"/hello") || Instant::now() > until {
                std::thread::sleep(Duration::from_millis(300));
                break std::fs::read(&agent.out).unwrap_or_default();
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        agent.stop();
        let shown = String::from_utf8_lossy(&text).into_owned();
        assert!(
            shown.contains(r"\x1b[31mcurl["),
            "comm not escaped:\n{shown}"
        );
        assert!(
            shown.contains(r"X-Evil: a\u{9b}2J\u{202e}gpj.exe"),
            "header not escaped:\n{shown}"
        );
        assert!(shown.contains(r"    x\ry"), "body not escaped:\n{shown}");
        let bad: Vec<u8> = text
            .iter()
            .copied()
            .filter(|&b| b < 0x20 && b != b'\n')
            .collect();
        assert!(bad.is_empty(), "control bytes {bad:x?} in:\n{shown}");
        assert!(!shown.contains('\u{9b}'), "C1 CSI in:\n{shown}");
        assert!(!shown.contains('\u{202e}'), "bidi override in:\n{shown}");
    });
}
