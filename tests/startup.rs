//! Start-up beside others: agents (or other tracing tools) starting at the
//! same moment on a host where tracefs is not mounted yet. Each case runs
//! in a private mount namespace the test makes, with tracefs unmounted
//! there, so it replays a fresh machine whatever the host has mounted.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A private mount namespace without tracefs (nor debugfs, whose `tracing`
/// directory would mount it on access), held open by a sleeping process
/// that is killed on drop: the namespace goes with it.
struct NoTracefs {
    holder: Guard,
}

impl NoTracefs {
    fn new() -> NoTracefs {
        let script = "\
            for m in /sys/kernel/debug/tracing /sys/kernel/tracing /sys/kernel/debug; do \
              while umount -l $m 2>/dev/null; do :; done; \
            done; \
            if [ -e /sys/kernel/tracing/events ] || [ -e /sys/kernel/debug/tracing/events ]; \
            then echo MOUNTED; else echo CLEAN; fi; \
            exec sleep 600";
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let holder = Guard(child);
        assert_eq!(
            line.trim(),
            "CLEAN",
            "tracefs still mounted in the namespace"
        );
        NoTracefs { holder }
    }

    /// A command running the agent inside the namespace, with `env` set.
    fn agent(&self, env: &[(&str, &str)]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount=/proc/{}/ns/mnt", self.holder.0.id()))
            .arg("--")
            .arg("env");
        for (k, v) in env {
            c.arg(format!("{k}={v}"));
        }
        c.arg(AGENT);
        c
    }

    /// What is mounted on /sys/kernel/tracing in the namespace.
    fn tracing_mounts(&self) -> usize {
        let info = std::fs::read_to_string(format!("/proc/{}/mountinfo", self.holder.0.id()))
            .expect("the namespace's mountinfo");
        info.lines()
            .filter(|l| l.split(' ').nth(4) == Some("/sys/kernel/tracing"))
            .count()
    }
}

/// The race's loser, replayed exactly: the agent's own mount of tracefs
/// succeeds, then says EBUSY (fixture `mount_busy.so`, preloaded). The
/// agent goes on, becomes ready and captures a curl request byte for byte.
#[test]
fn an_agent_whose_tracefs_mount_says_busy_goes_on() {
    let ns = NoTracefs::new();
    assert_eq!(ns.tracing_mounts(), 0);
    let shim = fixture("mount_busy.so");
    let srv = Server::start();
    let url = format!("https://127.0.0.1:{}/startup", srv.port);
    let mut curl = Held::new(
        std::path::Path::new("/usr/bin/curl"),
        &["-sk", "--http1.1", "-A", "plainsight-test", &url],
    );
    let agent = Agent::start_cmd(
        ns.agent(&[("LD_PRELOAD", shim.to_str().unwrap())]),
        &["--output", "json", "--raw"],
        &["--pid", &curl.pid.to_string()],
    );
    let log = agent.stderr();
    assert!(
        log.contains("tracefs was mounted by someone else meanwhile"),
        "the shim did not answer EBUSY:\n{log}"
    );
    assert!(log.contains("Device or resource busy"), "{log}");
    assert_eq!(ns.tracing_mounts(), 1);
    curl.go(b"");
    let (ok, _, stderr) = curl.finish(Duration::from_secs(30));
    assert!(ok, "curl failed: {stderr}");
    let req = format!(
        "GET /startup HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: plainsight-test\r\nAccept: */*\r\n\r\n",
        srv.port
    );
    let resp = expected_response("GET", "/startup", 0, false);
    let (w, r) = agent.wait_bytes(curl.pid, req.len(), resp.len());
    assert_eq!(show(&w), show(req.as_bytes()));
    assert_eq!(show(&r), show(&resp));
}

/// Four agents started at the same moment where tracefs is not mounted:
/// every one becomes ready, and tracefs is mounted afterwards.
#[test]
fn four_agents_started_at_once_all_become_ready() {
    let ns = NoTracefs::new();
    // Each filtered to the namespace's sleeping holder: nothing to capture.
    let pid = ns.holder.0.id().to_string();
    let agents: Vec<Agent> = std::thread::scope(|s| {
        let started: Vec<_> = (0..4)
            .map(|_| {
                let cmd = ns.agent(&[]);
                let pid = pid.clone();
                s.spawn(move || Agent::start_cmd(cmd, &["--output", "json"], &["--pid", &pid]))
            })
            .collect();
        started.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(agents.len(), 4);
    let mounted: usize = agents
        .iter()
        .filter(|a| {
            a.stderr()
                .contains("mounted tracefs on /sys/kernel/tracing")
        })
        .count();
    assert!(mounted >= 1, "no agent mounted tracefs");
    assert!(ns.tracing_mounts() >= 1);
    for a in &agents {
        assert!(a.stderr().contains("plainsight: ready"));
    }
}
