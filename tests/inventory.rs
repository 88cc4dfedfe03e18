//! `plainsight --inventory` (issue #33): the map of what stays dark, on a
//! host running a JVM (attachable, and one refusing attach), an Erlang node
//! with `ssl` started, `openssl s_server`, grpcio's server and a crafted
//! stripped file the locator refuses; each row exact, no process stopped.
mod common;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_plainsight");

/// A process started for the scan, killed on drop.
fn spawn(cmd: &mut Command) -> Guard {
    Guard(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Waits until `pid` maps a file whose path contains `part`.
fn wait_mapped(pid: u32, part: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        if maps.lines().any(|l| l.contains(part)) {
            return;
        }
        assert!(Instant::now() < until, "{pid} never mapped {part}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn row<'a>(rows: &'a [Value], pid: u32, file_part: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["pid"] == pid && r["file"].as_str().unwrap_or("").contains(file_part))
        .unwrap_or_else(|| panic!("no row for {pid} {file_part}: {rows:#?}"))
}

#[test]
fn inventory_names_each_stack_and_state() {
    let dir = tempfile::tempdir().unwrap();
    // Java: one JVM the agent can attach to, one that refuses.
    let src = dir.path().join("Sleep.java");
    std::fs::write(
        &src,
        "public class Sleep { public static void main(String[] a) throws Exception { \
         Thread.sleep(60000); } }",
    )
    .unwrap();
    let jvm = spawn(Command::new("java").arg(&src));
    let jvm_closed = spawn(
        Command::new("java")
            .arg("-XX:+DisableAttachMechanism")
            .arg(&src),
    );
    // Erlang with its ssl application (and so the crypto NIF) started.
    let erl = spawn(Command::new("erl").args([
        "-noshell",
        "-eval",
        "ok = ssl:start(), _ = crypto:info_lib(), timer:sleep(60000).",
    ]));
    let (cert, key) = cert_args();
    let port = free_port().to_string();
    let s_server = spawn(Command::new("openssl").args([
        "s_server", "-quiet", "-accept", &port, "-cert", &cert, "-key", &key,
    ]));
    let mut grpc = Command::new("python3")
        .arg(script("grpc_pair.py"))
        .args(["server", "--cert", &cert, "--key", &key])
        .env("PYTHONPATH", repo().join("target/pymods"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(grpc.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let grpc = Guard(grpc);
    let decoy = spawn(Command::new(fixture("boringssl_decoy")).args(["x", "60"]));
    wait_mapped(jvm.0.id(), "libjvm.so");
    wait_mapped(jvm_closed.0.id(), "libjvm.so");
    wait_mapped(erl.0.id(), "crypto.so");
    wait_mapped(s_server.0.id(), "libssl.so");
    wait_mapped(grpc.0.id(), "cygrpc");

    let watched: Vec<u32> = [&jvm, &jvm_closed, &erl, &s_server, &grpc, &decoy]
        .iter()
        .map(|g| g.0.id())
        .collect();
    let t0 = Instant::now();
    let out = Command::new(AGENT)
        .args(["--inventory", "--output", "json"])
        .output()
        .unwrap();
    let took = t0.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No process was stopped by the scan.
    for &pid in &watched {
        assert_ne!(proc_state(pid).as_deref(), Some("T"), "{pid} stopped");
    }
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let check = |pid: u32, file: &str, stack: &str, captured: bool, reason: &str| {
        let r = row(&rows, pid, file);
        assert_eq!(r["stack"], stack, "{r}");
        assert_eq!(r["captured"], captured, "{r}");
        assert!(
            r["reason"].as_str().unwrap().starts_with(reason),
            "{r}: not {reason}"
        );
        let keys: Vec<&str> = r.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, ["captured", "comm", "file", "pid", "reason", "stack"]);
    };
    check(
        jvm.0.id(),
        "libjvm.so",
        "jsse",
        true,
        "plainsight's Java agent, loaded into the JVM",
    );
    check(
        jvm_closed.0.id(),
        "libjvm.so",
        "jsse",
        false,
        "attach refused: -XX:+DisableAttachMechanism",
    );
    check(
        erl.0.id(),
        "crypto.so",
        "erlang",
        true,
        "aead_cipher_nif->EVP_CipherInit_ex aead_cipher_nif->EVP_CipherUpdate \
         aead_cipher_nif<-EVP_DecryptFinal_ex aead_cipher_nif->EVP_CipherFinal_ex",
    );
    check(
        s_server.0.id(),
        "libssl.so.3",
        "openssl",
        true,
        "SSL_write SSL_read SSL_write_ex SSL_read_ex SSL_free SSL_ctrl",
    );
    check(
        grpc.0.id(),
        "cygrpc",
        "boringssl",
        true,
        "SSL_write SSL_read SSL_do_handshake SSL_set_tlsext_host_name SSL_free",
    );
    check(
        decoy.0.id(),
        "boringssl_decoy",
        "boringssl",
        false,
        "stripped BoringSSL whose functions cannot be located exactly: SSL_write: 2 functions fit",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plainsight: inventory of "), "{err}");
    eprintln!("inventory took {took:?}: {err}");
    // The text table names the same.
    let text = Command::new(AGENT).arg("--inventory").output().unwrap();
    let table = String::from_utf8_lossy(&text.stdout);
    assert!(table.starts_with("PROCESS "), "{table}");
    assert!(table.lines().any(|l| l.contains(&erl.0.id().to_string())
        && l.contains(" erlang ")
        && l.contains(" yes ")));
}
