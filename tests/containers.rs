//! Containers with a real runtime: Debian's podman (runc) runs curl in an
//! image made by debootstrap from Debian's packages
//! (scripts/container-image.sh). Its records carry the container's id, a
//! curl on the host's none, and `--container` keeps only the container's.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The name curl runs under here, in containers and on the host: exec'd
/// through a symlink of that name (a process's name is its executable's
/// file name). The agents here select it with `--comm`, so they never
/// hold the `curl` processes of tests running beside them (a process can
/// be paused by one agent at a time).
const CURL: &str = "ctr_curl";

/// A shell line that runs curl as [`CURL`] with the arguments after it
/// (`sh -c LINE sh ARGS...`), in a container.
const CURL_IN_SH: &str = "ln -sf /usr/bin/curl /tmp/ctr_curl && exec /tmp/ctr_curl \"$@\"";

/// curl as [`CURL`] on the host.
fn host_curl() -> std::path::PathBuf {
    named("/usr/bin/curl", CURL)
}

/// `curl` in a new container (host network, this machine's runc and
/// limits) to `path`; returns the container's id.
fn curl_in_container(port: u16, path: &str, dir: &Path) -> String {
    let cidfile = dir.join(format!("cid{}", path.replace('/', "_")));
    let certs = fixtures();
    let out = Command::new("podman")
        .args(["run", "--rm"])
        .args(RUN)
        .args([
            "--cidfile",
            cidfile.to_str().unwrap(),
            "-v",
            &format!("{}:/certs:ro", certs.display()),
            IMAGE,
            "sh",
            "-c",
            CURL_IN_SH,
            "sh",
            "-sS",
            "--http1.1",
            "--cacert",
            "/certs/cert.pem",
            "--resolve",
            &format!("api.acme.com:{port}:127.0.0.1"),
            &format!("https://api.acme.com:{port}{path}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.stdout,
        format!("ok GET {path} 0\n").as_bytes(),
        "the container's curl got the response"
    );
    std::fs::read_to_string(cidfile).unwrap().trim().to_string()
}

fn curl_on_host(port: u16, path: &str) {
    let out = Command::new(host_curl())
        .args([
            "-sS",
            "--http1.1",
            "--cacert",
            fixtures().join("cert.pem").to_str().unwrap(),
            "--resolve",
            &format!("api.acme.com:{port}:127.0.0.1"),
            &format!("https://api.acme.com:{port}{path}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
}

/// The `http` records of `path`, once there (bounded wait).
fn exchanges_of(agent: &Agent, path: &str, want: usize) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let got: Vec<Value> = agent
            .records()
            .into_iter()
            .filter(|r| r["type"] == "http" && r["path"] == path)
            .collect();
        if got.len() >= want || Instant::now() > until {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn container_curl_carries_its_id_and_container_filter_keeps_it_only() {
    if let Err(why) = podman_works() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let srv = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let all = Agent::start_decoded("json", &["--comm", CURL]);
    let raw = Agent::start(&["--comm", CURL]);
    // A container's id is known once it runs: the filtered agent is given
    // the id of a container kept running for the test, curl runs in it.
    let certs = format!("{}:/certs:ro", fixtures().display());
    let keeper = Command::new("podman")
        .args(["run", "-d"])
        .args(RUN)
        .args(["-v", &certs, IMAGE, "sleep", "120"])
        .output()
        .unwrap();
    assert!(
        keeper.status.success(),
        "{}",
        String::from_utf8_lossy(&keeper.stderr)
    );
    let kept = String::from_utf8(keeper.stdout).unwrap().trim().to_string();
    let _cleanup = Remove(kept.clone());
    let only = Agent::start_decoded("json", &["--comm", CURL, "--container", &kept[..16]]);
    // curl in the kept container, in a fresh one, and on the host.
    exec_curl(&kept, srv.port, "/in-kept");
    let fresh = curl_in_container(srv.port, "/in-fresh", dir.path());
    curl_on_host(srv.port, "/on-host");

    let kept_ex = exchanges_of(&all, "/in-kept", 1);
    assert_eq!(kept_ex.len(), 1, "{:?}", all.records());
    assert_eq!(kept_ex[0]["container_id"], kept.as_str());
    assert_eq!(kept_ex[0]["status"], 200);
    let fresh_ex = exchanges_of(&all, "/in-fresh", 1);
    assert_eq!(fresh_ex.len(), 1);
    assert_eq!(fresh_ex[0]["container_id"], fresh.as_str());
    let host_ex = exchanges_of(&all, "/on-host", 1);
    assert_eq!(host_ex.len(), 1);
    assert!(host_ex[0].get("container_id").is_none(), "{}", host_ex[0]);

    // Raw records: every kind (sni, data, close) of the container's curl
    // carries its id, as its exchange does.
    let kinds = raw_kinds_of(&raw, "/in-kept");
    assert_eq!(
        kinds
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<std::collections::BTreeSet<_>>(),
        ["close", "data", "sni"].into_iter().collect(),
        "{kinds:?}"
    );
    for (kind, id) in &kinds {
        assert_eq!(id.as_deref(), Some(kept.as_str()), "{kind}");
    }

    // --container: the kept container's exchange only.
    let got = exchanges_of(&only, "/in-kept", 1);
    assert_eq!(got.len(), 1, "{:?}\n{}", only.records(), only.stderr());
    let others: Vec<Value> = only
        .records()
        .into_iter()
        .filter(|r| {
            r.get("container_id")
                .map(|c| c != kept.as_str())
                .unwrap_or(true)
        })
        .collect();
    assert!(others.is_empty(), "{others:?}");
}

/// The kind and container id of every raw record of the process whose
/// request went to `path`, once its close is there (bounded wait).
fn raw_kinds_of(agent: &Agent, path: &str) -> Vec<(String, Option<String>)> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let recs = agent.records();
        let pid = recs.iter().find_map(|r| {
            let hit = r["type"] == "data"
                && record_bytes(r)
                    .windows(path.len())
                    .any(|w| w == path.as_bytes());
            hit.then(|| r["pid"].clone())
        });
        let mine: Vec<(String, Option<String>)> = recs
            .iter()
            .filter(|r| pid.as_ref().is_some_and(|p| r["pid"] == *p))
            .map(|r| {
                let id = r
                    .get("container_id")
                    .and_then(|c| c.as_str())
                    .map(str::to_string);
                (r["type"].as_str().unwrap_or("").to_string(), id)
            })
            .collect();
        if mine.iter().any(|(k, _)| k == "close") || Instant::now() > until {
            return mine;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `curl` run inside the running container `id`.
fn exec_curl(id: &str, port: u16, path: &str) {
    let out = Command::new("podman")
        .args([
            "exec",
            id,
            "sh",
            "-c",
            CURL_IN_SH,
            "sh",
            "-sS",
            "--http1.1",
            "--cacert",
            "/certs/cert.pem",
            "--resolve",
            &format!("api.acme.com:{port}:127.0.0.1"),
            &format!("https://api.acme.com:{port}{path}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman exec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, format!("ok GET {path} 0\n").as_bytes());
}

/// As a service or a DaemonSet runs it, with some capabilities only: a
/// missing one is named and the agent does not start.
#[test]
fn a_missing_capability_is_named() {
    let out = Command::new("setpriv")
        .args(["--bounding-set=-sys_ptrace", "--inh-caps=-all"])
        .arg(env!("CARGO_BIN_EXE_plainsight"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing capabilities: CAP_SYS_PTRACE (hold processes"),
        "{err}"
    );
}

/// The capabilities the systemd unit and the DaemonSet give (read from
/// deploy/plainsight.service) are enough: the agent started with only those
/// captures a curl exactly.
#[test]
fn the_deployment_capabilities_suffice() {
    let unit = std::fs::read_to_string(repo().join("deploy/plainsight.service")).unwrap();
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .unwrap()
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let daemonset =
        std::fs::read_to_string(repo().join("deploy/kubernetes/daemonset.yaml")).unwrap();
    for c in &caps {
        let name = c[1..].to_uppercase();
        assert!(
            daemonset.contains(&format!("- {name} ")),
            "{name} is in the unit but not in the DaemonSet"
        );
    }
    let srv = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.json");
    let log = dir.path().join("log");
    let mut agent = Guard(
        Command::new("setpriv")
            .arg(format!("--bounding-set=-all,{}", caps.join(",")))
            .arg("--inh-caps=-all")
            .arg(env!("CARGO_BIN_EXE_plainsight"))
            .args(["--comm", CURL, "-o", "json", "--write"])
            .arg(&out)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let until = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("plainsight: ready")
    {
        assert!(
            Instant::now() < until,
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        assert!(
            agent.0.try_wait().unwrap().is_none(),
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    curl_on_host(srv.port, "/with-few-caps");
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let found = text.lines().any(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["type"] == "http" && v["path"] == "/with-few-caps" && v["status"] == 200
        });
        if found {
            break;
        }
        assert!(Instant::now() < until, "not captured: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGINT) };
    let _ = agent.0.wait();
}

/// The capabilities the DaemonSet adds (its `add:` list).
fn daemonset_capabilities() -> Vec<String> {
    let yaml = std::fs::read_to_string(repo().join("deploy/kubernetes/daemonset.yaml")).unwrap();
    let at = yaml.find("add:").expect("capabilities add list");
    yaml[at..]
        .lines()
        .skip(1)
        .map_while(|l| l.trim().strip_prefix("- "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// The agent in a container as the DaemonSet runs it: the host's pids, all
/// capabilities dropped but the DaemonSet's (less any this machine's root
/// lacks itself), read-only root, tracefs and BTF mounted read-only. It
/// captures a curl on the host exactly, and stops cleanly.
#[test]
fn the_agent_in_a_container_as_the_daemonset_runs_it() {
    if let Err(why) = podman_works() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let eff = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| Some(u64::from_str_radix(l.strip_prefix("CapEff:")?.trim(), 16).unwrap()))
        .unwrap();
    let have = |name: &str| match name {
        "SYS_RESOURCE" => eff & (1 << 24) != 0,
        _ => true,
    };
    let caps: Vec<String> = daemonset_capabilities()
        .into_iter()
        .filter(|c| have(c))
        .collect();
    assert!(caps.len() >= 6, "{caps:?}");
    let srv = Server::start();
    let name = format!("plainsight-ds-{}", std::process::id());
    let bin = env!("CARGO_BIN_EXE_plainsight");
    let run = Command::new("podman")
        .args(["run", "-d", "--name", &name, "--pid", "host"])
        .args(RUN)
        .args([
            "--cap-drop",
            "ALL",
            "--cap-add",
            &caps.join(","),
            "--security-opt",
            "seccomp=unconfined",
            "--read-only",
            "-v",
            "/sys/kernel/tracing:/sys/kernel/tracing:ro",
            "-v",
            "/sys/kernel/btf:/sys/kernel/btf:ro",
            "-v",
            &format!("{bin}:/plainsight:ro"),
            IMAGE,
            "/plainsight",
            "--comm",
            CURL,
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let _remove = Remove(name.clone());
    let logs = |n: &str| {
        let o = Command::new("podman").args(["logs", n]).output().unwrap();
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let until = Instant::now() + Duration::from_secs(60);
    while !logs(&name).1.contains("plainsight: ready") {
        assert!(Instant::now() < until, "{:?}", logs(&name));
        std::thread::sleep(Duration::from_millis(100));
    }
    curl_on_host(srv.port, "/from-the-daemonset");
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (out, err) = logs(&name);
        let found = out
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| {
                v["type"] == "http" && v["path"] == "/from-the-daemonset" && v["status"] == 200
            });
        if found {
            break;
        }
        assert!(Instant::now() < until, "{out}\n{err}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let stop = Command::new("podman")
        .args(["stop", "-t", "10", &name])
        .output()
        .unwrap();
    assert!(stop.status.success());
    assert!(
        logs(&name)
            .1
            .contains("connections tracked in the kernel at exit"),
        "a clean stop"
    );
}
