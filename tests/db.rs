//! Databases decoded (#29): PostgreSQL 15, Redis 7 and MariaDB 10.11 from
//! Debian, each started here on 127.0.0.1 with TLS (the tests'
//! certificate), as its own user, from a temporary data folder; their
//! Debian clients (psql, redis-cli, mariadb), psycopg 3 for PostgreSQL's
//! extended protocol and DBD::MariaDB for MySQL's prepared statements.
//! Both ends of every connection: exact query text, operation, rows, error
//! codes, sides, pids; passwords never in any output.

mod common;
#[allow(dead_code)]
mod otlp_receiver;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
/// The password every server here wants: it must not leave the agent.
const PASSWORD: &str = "hunter2-Zq9";

/// A database server run as its user; stopped (SIGTERM, then SIGKILL) and
/// its data folder removed when dropped.
struct Daemon {
    child: Option<Child>,
    port: u16,
    _dir: tempfile::TempDir,
    /// The signal that stops it cleanly.
    stop: i32,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        unsafe { libc::kill(c.id() as i32, self.stop) };
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A temporary folder owned by `user`, with the tests' certificate and key
/// (the key readable by `user` only).
fn data_dir(user: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("plainsight-db-")
        .tempdir()
        .unwrap();
    let (c, k) = cert_args();
    std::fs::copy(c, dir.path().join("cert.pem")).unwrap();
    std::fs::copy(k, dir.path().join("key.pem")).unwrap();
    sh(&format!(
        "chown -R {user}: {d} && chmod 700 {d} && chmod 600 {d}/key.pem",
        d = dir.path().display()
    ));
    dir
}

fn sh(script: &str) {
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        o.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `program args` as `user` (setpriv execs it: the child is the program).
fn as_user(user: &str, program: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        user,
        "--regid",
        user,
        "--clear-groups",
        "--",
        program,
    ]);
    c
}

fn spawn(mut c: Command, log: &Path) -> Child {
    let f = std::fs::File::create(log).unwrap();
    c.stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap()
}

/// Waits for the port; on failure shows the server's log.
fn ready(port: u16, log: &Path) {
    let until = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < until,
            "server not listening on {port}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// PostgreSQL 15: `password` authentication on 127.0.0.1 (the password
/// crosses the connection in clear, inside TLS), TLS on.
fn postgres() -> Daemon {
    let dir = data_dir("postgres");
    let d = dir.path();
    std::fs::write(d.join("pw"), PASSWORD).unwrap();
    sh(&format!("chown postgres: {}/pw", d.display()));
    let bin = Path::new("/usr/lib/postgresql/15/bin");
    let o = as_user("postgres", bin.join("initdb").to_str().unwrap())
        .args(["-D", d.join("data").to_str().unwrap(), "-U", "postgres"])
        .args(["--auth-local=trust", "--auth-host=password"])
        .arg(format!("--pwfile={}", d.join("pw").display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let port = free_port();
    let mut c = as_user("postgres", bin.join("postgres").to_str().unwrap());
    c.args(["-D", d.join("data").to_str().unwrap()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", &format!("port={port}")])
        .args(["-c", "ssl=on", "-c", "fsync=off"])
        .args([
            "-c",
            &format!("ssl_cert_file={}", d.join("cert.pem").display()),
        ])
        .args([
            "-c",
            &format!("ssl_key_file={}", d.join("key.pem").display()),
        ])
        .args(["-c", &format!("unix_socket_directories={}", d.display())]);
    let log = d.join("server.log");
    let child = spawn(c, &log);
    ready(port, &log);
    Daemon {
        child: Some(child),
        port,
        _dir: dir,
        stop: libc::SIGINT,
    }
}

/// Redis 7 with TLS only, a password, nothing saved.
fn redis() -> Daemon {
    let dir = data_dir("redis");
    let d = dir.path();
    let port = free_port();
    let mut c = as_user("redis", "/usr/bin/redis-server");
    c.args(["--port", "0", "--bind", "127.0.0.1"])
        .args(["--tls-port", &port.to_string()])
        .args(["--tls-cert-file", d.join("cert.pem").to_str().unwrap()])
        .args(["--tls-key-file", d.join("key.pem").to_str().unwrap()])
        .args(["--tls-auth-clients", "no", "--requirepass", PASSWORD])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--dir", d.to_str().unwrap()]);
    let log = d.join("server.log");
    let child = spawn(c, &log);
    ready(port, &log);
    Daemon {
        child: Some(child),
        port,
        _dir: dir,
        stop: libc::SIGTERM,
    }
}

/// MariaDB 10.11 with TLS, user `app` (password) on 127.0.0.1, database
/// `d` with table `t` (1, 2, 3).
fn mariadb() -> Daemon {
    let dir = data_dir("mysql");
    let d = dir.path();
    let o = Command::new("mariadb-install-db")
        .args(["--user=mysql", "--skip-test-db"])
        .arg(format!("--datadir={}", d.join("data").display()))
        .arg("--auth-root-authentication-method=socket")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let port = free_port();
    let sock = d.join("sock");
    let mut c = as_user("mysql", "/usr/sbin/mariadbd");
    c.arg("--no-defaults")
        .arg(format!("--datadir={}", d.join("data").display()))
        .arg(format!("--socket={}", sock.display()))
        .arg(format!("--pid-file={}", d.join("pid").display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--ssl-cert={}", d.join("cert.pem").display()))
        .arg(format!("--ssl-key={}", d.join("key.pem").display()))
        .args(["--skip-log-bin", "--innodb-buffer-pool-size=16M"]);
    let log = d.join("server.log");
    let child = spawn(c, &log);
    ready(port, &log);
    // Over the unix socket (no TLS: nothing to capture), as root.
    let setup = format!(
        "CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; \
         GRANT ALL ON *.* TO 'app'@'127.0.0.1'; CREATE DATABASE d; \
         CREATE TABLE d.t (a INT); INSERT INTO d.t VALUES (1), (2), (3);"
    );
    let o = Command::new("mariadb")
        .args(["-S", sock.to_str().unwrap(), "-u", "root", "-e", &setup])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Daemon {
        child: Some(child),
        port,
        _dir: dir,
        stop: libc::SIGTERM,
    }
}

/// The db records of the agent that `pick` keeps, once there are `n`
/// (bounded wait), and a little longer for any that must not come.
fn db_records(agent: &Agent, n: usize, pick: impl Fn(&Value) -> bool) -> Vec<Value> {
    let of = || -> Vec<Value> {
        agent
            .records()
            .into_iter()
            .filter(|r| r["type"] == "db" && pick(r))
            .collect()
    };
    let until = Instant::now() + Duration::from_secs(20);
    while of().len() < n && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    of()
}

/// (operation, query, status, rows, error code) of each record.
fn summary(recs: &[Value]) -> Vec<(String, String, String, String, String)> {
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    };
    recs.iter()
        .map(|r| {
            (
                s(&r["operation"]),
                s(&r["query"]),
                s(&r["status"]),
                s(&r["rows"]),
                s(&r["error_code"]),
            )
        })
        .collect()
}

fn row(
    op: &str,
    query: &str,
    status: &str,
    rows: &str,
    code: &str,
) -> (String, String, String, String, String) {
    (
        op.into(),
        query.into(),
        status.into(),
        rows.into(),
        code.into(),
    )
}

/// Every record of the client `pid` is its side's, with its connection's
/// endpoints (the server's port), a latency; the server's records (by its
/// `comm`) are the same commands, the other side of the same connections.
fn check_both_ends(client: &[Value], server: &[Value], pid: u32, port: u16, comm: &str) {
    assert_eq!(summary(client), summary(server), "both ends see the same");
    for r in client {
        assert_eq!(
            (
                &r["pid"],
                &r["side"],
                &r["server"]["port"],
                &r["server"]["address"]
            ),
            (
                &Value::from(pid),
                &Value::from("client"),
                &Value::from(port),
                &Value::from("127.0.0.1")
            ),
            "{r}"
        );
        if r["status"] != Value::Null && r["kind"] != "message" {
            assert!(r["latency_ms"].as_f64().is_some_and(|l| l > 0.0), "{r}");
        }
    }
    let client_ports: Vec<&Value> = client.iter().map(|r| &r["client"]["port"]).collect();
    for (r, cport) in server.iter().zip(client_ports) {
        assert_eq!(
            (
                &r["comm"],
                &r["side"],
                &r["server"]["port"],
                &r["client"]["port"]
            ),
            (
                &Value::from(comm),
                &Value::from("server"),
                &Value::from(port),
                cport
            ),
            "{r}"
        );
    }
}

/// No output of the agents holds the password: not the decoded records,
/// not the bytes of the raw records (decoded from base64 where binary).
fn check_no_password(agents: &[&Agent]) {
    for a in agents {
        let text = std::fs::read_to_string(&a.out).unwrap_or_default();
        assert!(!text.contains(PASSWORD), "password in {text}");
        let recs = a.records();
        for r in recs.iter().filter(|r| r["type"] == "data") {
            let b = record_bytes(r);
            assert!(
                !b.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()),
                "password in {r}"
            );
        }
    }
}

fn run_held(mut h: Held, input: &[u8]) -> (String, String) {
    h.go(input);
    let (ok, out, err) = h.finish(T);
    let out = String::from_utf8_lossy(&out).into_owned();
    assert!(ok, "client failed: {out}{err}");
    (out, err)
}

#[test]
fn postgres_psql_queries_errors_copy_both_ends() {
    rerun_if_host_stalled(|| {
        let pg = postgres();
        let port = pg.port.to_string();
        let decoded = Agent::start_decoded("json", &["--port", &port, "--db-query-text", "full"]);
        let raw = Agent::start(&["--port", &port]);
        let conninfo =
            format!("host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=require");
        let psql = Held::with_env(
            Path::new("/usr/bin/psql"),
            &[
                &conninfo,
                "-X",
                "-c",
                "SELECT 'marker-pg-1' AS m, g FROM generate_series(1, 3) g",
                "-c",
                "SELECT * FROM nope",
                "-c",
                "CREATE TEMP TABLE t (a int); INSERT INTO t VALUES (1), (2)",
                "-c",
                "COPY (SELECT a FROM t) TO STDOUT",
            ],
            &[("PGPASSWORD", PASSWORD)],
        );
        let pid = psql.pid;
        let (out, err) = run_held(psql, b"");
        assert!(
            out.contains("marker-pg-1") && out.contains("1\n2\n"),
            "{out}"
        );
        assert!(err.contains("relation \"nope\" does not exist"), "{err}");
        let client = db_records(&decoded, 4, |r| r["pid"] == pid);
        let server = db_records(&decoded, 4, |r| r["comm"] == "postgres");
        assert_eq!(
            summary(&client),
            [
                row(
                    "SELECT",
                    "SELECT 'marker-pg-1' AS m, g FROM generate_series(1, 3) g",
                    "ok",
                    "3",
                    "-"
                ),
                row("SELECT", "SELECT * FROM nope", "error", "-", "42P01"),
                row(
                    "CREATE TABLE",
                    "CREATE TEMP TABLE t (a int); INSERT INTO t VALUES (1), (2)",
                    "ok",
                    "2",
                    "-"
                ),
                row("COPY", "COPY (SELECT a FROM t) TO STDOUT", "ok", "2", "-"),
            ]
        );
        assert_eq!(client[1]["error"], "relation \"nope\" does not exist");
        assert!(client
            .iter()
            .all(|r| r["system"] == "postgresql" && r["namespace"] == "postgres"));
        check_both_ends(&client, &server, pid, pg.port, "postgres");
        // the password went to the server inside TLS: captured, masked
        let (w, _) = raw.wait_bytes(pid, 1, 1);
        assert!(w.windows(4).any(|x| x == b"****"), "{}", show(&w));
        check_no_password(&[&decoded, &raw]);
    });
}

const PSYCOPG: &str = r#"
import sys, psycopg
conn = psycopg.connect(host="127.0.0.1", port=int(sys.argv[1]), user="postgres",
                       password=sys.argv[2], dbname="postgres", sslmode="require")
cur = conn.cursor()
cur.execute("SELECT %s::text AS m, generate_series(1, 3)", ("marker-pg-2",))
assert len(cur.fetchall()) == 3
cur.execute("SELECT %s::int + 1", (41,), prepare=True)
cur.execute("SELECT %s::int + 1", (42,), prepare=True)
assert cur.fetchone()[0] == 43
with conn.pipeline():
    cur.execute("CREATE TEMP TABLE t (a int)")
    cur.executemany("INSERT INTO t VALUES (%s)", [(1,), (2,), (3,)])
    cur.execute("SELECT count(*) FROM t WHERE a > 1")
try:
    cur.execute("SELECT * FROM nope WHERE a = %s", (1,))
except psycopg.errors.UndefinedTable:
    print("undefined table")
conn.close()
"#;

/// psycopg 3: the extended protocol (Parse with $n placeholders, Bind,
/// Execute, Sync), a named prepared statement executed twice, a pipelined
/// batch, an error at Parse. Query text sanitized (the default).
#[test]
fn postgres_psycopg_extended_protocol_pipeline_both_ends() {
    rerun_if_host_stalled(|| {
        let pg = postgres();
        let port = pg.port.to_string();
        let decoded = Agent::start_decoded("json", &["--port", &port]);
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("pg.py");
        std::fs::write(&script, PSYCOPG).unwrap();
        let lib = repo().join("target/psycopg");
        let py = Held::with_env(
            Path::new("/usr/bin/python3"),
            &[script.to_str().unwrap(), &port, PASSWORD],
            &[("PYTHONPATH", lib.to_str().unwrap())],
        );
        let pid = py.pid;
        let (out, _) = run_held(py, b"");
        assert_eq!(out, "undefined table\n");
        let client = db_records(&decoded, 10, |r| r["pid"] == pid);
        let server = db_records(&decoded, 10, |r| r["comm"] == "postgres");
        let plus = row("SELECT", "SELECT $1::int + ?", "ok", "1", "-");
        let insert = row("INSERT", "INSERT INTO t VALUES ($1)", "ok", "1", "-");
        assert_eq!(
            summary(&client),
            [
                row("BEGIN", "BEGIN", "ok", "-", "-"),
                row(
                    "SELECT",
                    "SELECT $1::text AS m, generate_series(?, ?)",
                    "ok",
                    "3",
                    "-"
                ),
                plus.clone(),
                plus,
                row(
                    "CREATE TABLE",
                    "CREATE TEMP TABLE t (a int)",
                    "ok",
                    "-",
                    "-"
                ),
                insert.clone(),
                insert.clone(),
                insert,
                row(
                    "SELECT",
                    "SELECT count(*) FROM t WHERE a > ?",
                    "ok",
                    "1",
                    "-"
                ),
                row(
                    "SELECT",
                    "SELECT * FROM nope WHERE a = $1",
                    "error",
                    "-",
                    "42P01"
                ),
            ]
        );
        check_both_ends(&client, &server, pid, pg.port, "postgres");
        check_no_password(&[&decoded]);
    });
}

fn redis_cli(port: u16, args: &[&str]) -> Held {
    let ca = fixtures().join("cert.pem");
    let mut a: Vec<String> = [
        "--tls",
        "--cacert",
        ca.to_str().unwrap(),
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "--no-auth-warning",
        "-a",
        PASSWORD,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(args.iter().map(|s| s.to_string()));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    Held::new(Path::new("/usr/bin/redis-cli"), &a)
}

/// redis-cli: AUTH (masked), a command with a marker, a type error, a
/// pipelined batch (--pipe: replies matched in order), MULTI/EXEC, and
/// pub/sub (the subscriber's message is a record of its own).
#[test]
fn redis_cli_commands_errors_pipeline_pubsub_both_ends() {
    rerun_if_host_stalled(|| {
        let r = redis();
        let port = r.port.to_string();
        let decoded = Agent::start_decoded("json", &["--port", &port, "--db-query-text", "full"]);
        let raw = Agent::start(&["--port", &port]);
        let set = redis_cli(r.port, &["SET", "k", "marker-redis-1"]);
        let set_pid = set.pid;
        assert_eq!(run_held(set, b"").0, "OK\n");
        let push = redis_cli(r.port, &["LPUSH", "k", "x"]);
        let push_pid = push.pid;
        let (out, _) = run_held(push, b"");
        assert!(out.starts_with("WRONGTYPE"), "{out}");
        let batch = redis_cli(r.port, &["--pipe"]);
        let batch_pid = batch.pid;
        let lines = "*3\r\n$3\r\nSET\r\n$1\r\nn\r\n$1\r\n1\r\n*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n\
                     *2\r\n$3\r\nGET\r\n$1\r\nn\r\n*1\r\n$5\r\nMULTI\r\n*2\r\n$4\r\nINCR\r\n\
                     $1\r\nn\r\n*1\r\n$4\r\nEXEC\r\n";
        run_held(batch, lines.as_bytes());
        // a subscriber, then a publisher
        let mut sub = redis_cli(r.port, &["SUBSCRIBE", "news"]);
        let sub_pid = sub.pid;
        sub.go_keep_stdin();
        let until = Instant::now() + Duration::from_secs(20);
        while db_records(&decoded, 0, |x| {
            x["pid"] == sub_pid && x["operation"] == "SUBSCRIBE"
        })
        .is_empty()
        {
            assert!(Instant::now() < until, "no SUBSCRIBE record");
        }
        let publish = redis_cli(r.port, &["PUBLISH", "news", "hello-marker"]);
        assert_eq!(run_held(publish, b"").0, "1\n");

        let of = |pid: u32, n| db_records(&decoded, n, move |x| x["pid"] == pid);
        let auth = row("AUTH", "AUTH [redacted]", "ok", "-", "-");
        let set_recs = of(set_pid, 2);
        assert_eq!(
            summary(&set_recs),
            [
                auth.clone(),
                row("SET", "SET k marker-redis-1", "ok", "-", "-")
            ]
        );
        assert_eq!(set_recs[1]["response"], "OK");
        let push_recs = of(push_pid, 2);
        assert_eq!(
            summary(&push_recs)[1],
            row("LPUSH", "LPUSH k x", "error", "-", "WRONGTYPE")
        );
        assert_eq!(
            push_recs[1]["error"],
            "Operation against a key holding the wrong kind of value"
        );
        let batch_recs = of(batch_pid, 8);
        let replies: Vec<(&str, &str)> = batch_recs
            .iter()
            .map(|x| {
                (
                    x["query"].as_str().unwrap_or("-"),
                    x["response"].as_str().unwrap_or("-"),
                )
            })
            .collect();
        assert_eq!(
            replies[..7],
            [
                ("AUTH [redacted]", "OK"),
                ("SET n 1", "OK"),
                ("INCR n", "2"),
                ("GET n", "2"),
                ("MULTI", "OK"),
                ("INCR n", "QUEUED"),
                ("EXEC", "[3]"),
            ]
        );
        // --pipe's last command: an ECHO of 20 random bytes
        assert_eq!(batch_recs[7]["operation"], "ECHO");
        let sub_recs = of(sub_pid, 3);
        assert_eq!(
            summary(&sub_recs)[..2],
            [auth, row("SUBSCRIBE", "SUBSCRIBE news", "ok", "-", "-")]
        );
        assert_eq!(sub_recs[1]["response"], "[subscribe, news, 1]");
        let m = &sub_recs[2];
        assert_eq!(
            (&m["kind"], &m["operation"], &m["query"], &m["response"]),
            (
                &Value::from("message"),
                &Value::from("MESSAGE"),
                &Value::from("news"),
                &Value::from("hello-marker")
            )
        );
        drop(sub);
        // the server's side of the first client's connection
        let cport = &set_recs[0]["client"]["port"];
        let server = db_records(&decoded, 2, |x| {
            x["comm"] == "redis-server" && &x["client"]["port"] == cport
        });
        check_both_ends(&set_recs, &server, set_pid, r.port, "redis-server");
        check_no_password(&[&decoded, &raw]);
    });
}

const DBD: &str = r#"
use strict; use DBI;
my ($port, $ca, $pw) = @ARGV;
my $dbh = DBI->connect("DBI:MariaDB:database=d;host=127.0.0.1;port=$port;mariadb_ssl=1;"
    . "mariadb_ssl_ca_file=$ca;mariadb_server_prepare=1", "app", $pw,
    {RaiseError => 1, PrintError => 0});
my $sth = $dbh->prepare("SELECT ? AS m, a FROM t WHERE a >= ?");
$sth->execute("marker-my-2", 12);
my $n = 0; $n++ while $sth->fetchrow_array;
$sth->execute("marker-my-3", 13);
$n++ while $sth->fetchrow_array;
print "rows $n\n";
eval { $dbh->prepare("SELECT * FROM nope WHERE a = ?") }; print "failed\n" if $@;
$dbh->disconnect;
"#;

/// The mariadb client (COM_QUERY: a marker, an error, rows affected) and
/// DBD::MariaDB with server-side prepared statements (COM_STMT_PREPARE
/// once, COM_STMT_EXECUTE twice with the remembered text, a failed
/// prepare); the console line too.
#[test]
fn mariadb_queries_prepared_statements_errors_both_ends() {
    rerun_if_host_stalled(|| {
        let m = mariadb();
        let port = m.port.to_string();
        let decoded = Agent::start_decoded("json", &["--port", &port, "--db-query-text", "full"]);
        let text = Agent::start_decoded("text", &["--port", &port, "--comm", "mariadb"]);
        let raw = Agent::start(&["--port", &port]);
        let ca = fixtures().join("cert.pem");
        let cli = Held::new(
            Path::new("/usr/bin/mariadb"),
            &[
                "--ssl",
                &format!("--ssl-ca={}", ca.display()),
                "-h",
                "127.0.0.1",
                "-P",
                &port,
                "-u",
                "app",
                &format!("-p{PASSWORD}"),
                "d",
                "--force",
            ],
        );
        let cli_pid = cli.pid;
        let (out, err) = {
            let mut h = cli;
            h.go(
                b"SELECT 'marker-my-1' AS m, a FROM t;\nSELECT * FROM nope;\n\
                  UPDATE t SET a = a + 10 WHERE a > 1;\n",
            );
            let (_, out, err) = h.finish(T);
            (String::from_utf8_lossy(&out).into_owned(), err)
        };
        assert!(out.contains("marker-my-1"), "{out}");
        assert!(err.contains("ERROR 1146 (42S02)"), "{err}");
        let client = db_records(&decoded, 3, |r| r["pid"] == cli_pid);
        assert_eq!(
            summary(&client),
            [
                row(
                    "SELECT",
                    "SELECT 'marker-my-1' AS m, a FROM t",
                    "ok",
                    "3",
                    "-"
                ),
                row("SELECT", "SELECT * FROM nope", "error", "-", "1146"),
                row(
                    "UPDATE",
                    "UPDATE t SET a = a + 10 WHERE a > 1",
                    "ok",
                    "2",
                    "-"
                ),
            ]
        );
        assert_eq!(
            (&client[1]["sqlstate"], &client[1]["error"]),
            (
                &Value::from("42S02"),
                &Value::from("Table 'd.nope' doesn't exist")
            )
        );
        assert!(client
            .iter()
            .all(|r| r["system"] == "mysql" && r["namespace"] == "d"));
        let cport = &client[0]["client"]["port"];
        let server = db_records(&decoded, 3, |r| {
            r["comm"] == "mariadbd" && &r["client"]["port"] == cport
        });
        check_both_ends(&client, &server, cli_pid, m.port, "mariadbd");

        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("dbd.pl");
        std::fs::write(&script, DBD).unwrap();
        let perl = Held::new(
            Path::new("/usr/bin/perl"),
            &[
                script.to_str().unwrap(),
                &port,
                ca.to_str().unwrap(),
                PASSWORD,
            ],
        );
        let perl_pid = perl.pid;
        assert_eq!(run_held(perl, b"").0, "rows 3\nfailed\n");
        let prepared: Vec<Value> = db_records(&decoded, 3, |r| {
            r["pid"] == perl_pid && r["query"].as_str().is_some_and(|q| q.contains('?'))
        });
        // the table is 1, 12, 13 after the update
        let exec = "SELECT ? AS m, a FROM t WHERE a >= ?";
        assert_eq!(
            summary(&prepared),
            [
                row("SELECT", exec, "ok", "2", "-"),
                row("SELECT", exec, "ok", "1", "-"),
                row(
                    "SELECT",
                    "SELECT * FROM nope WHERE a = ?",
                    "error",
                    "-",
                    "1146"
                ),
            ]
        );
        assert_eq!(prepared[2]["sqlstate"], "42S02");

        // the console: one line per command
        let lines = std::fs::read_to_string(&text.out).unwrap_or_default();
        let who = format!(" mariadb[{cli_pid}] 127.0.0.1:{port} mysql ");
        let mine: Vec<&str> = lines.lines().filter(|l| l.contains(&who)).collect();
        assert_eq!(mine.len(), 3, "{lines}");
        assert!(
            mine[0].contains(&format!("{who}SELECT 3 rows "))
                && mine[0].ends_with("ms SELECT ? AS m, a FROM t"),
            "{lines}"
        );
        assert!(
            mine[1].contains(&format!(
                "{who}SELECT error 1146 Table 'd.nope' doesn't exist "
            )),
            "{lines}"
        );
        check_no_password(&[&decoded, &raw, &text]);
    });
}

/// A span's attributes as `key=value` text, sorted.
fn span_attrs(s: &Span) -> Vec<String> {
    let mut v: Vec<String> = s
        .attributes
        .iter()
        .map(
            |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Any::StringValue(x)) => format!("{}={x}", kv.key),
                Some(Any::IntValue(i)) => format!("{}={i}", kv.key),
                other => format!("{}={other:?}", kv.key),
            },
        )
        .collect();
    v.sort();
    v
}

/// The spans of process `pid`.
fn spans_of(r: &otlp_receiver::Receiver, pid: u32) -> Vec<Span> {
    r.with(|rec| {
        rec.traces
            .iter()
            .flat_map(|t| &t.resource_spans)
            .filter(|rs| {
                rs.resource.as_ref().is_some_and(|res| {
                    res.attributes.iter().any(|kv| {
                        kv.key == "process.pid"
                            && kv.value.as_ref().and_then(|v| v.value.as_ref())
                                == Some(&Any::IntValue(i64::from(pid)))
                    })
                })
            })
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| ss.spans.clone())
            .collect()
    })
}

/// psql's queries as OTLP spans (database conventions, sanitized text by
/// default) and in the Prometheus histogram.
#[test]
fn postgres_otlp_spans_and_prometheus_histogram() {
    rerun_if_host_stalled(|| {
        let pg = postgres();
        let port = pg.port.to_string();
        let r = otlp_receiver::Receiver::http();
        let mport = free_port();
        let _agent = Agent::start_decoded(
            "json",
            &[
                "--port",
                &port,
                "--otlp-endpoint",
                &r.endpoint(),
                "--metrics-addr",
                &format!("127.0.0.1:{mport}"),
            ],
        );
        let conninfo =
            format!("host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=require");
        let psql = Held::with_env(
            Path::new("/usr/bin/psql"),
            &[
                &conninfo,
                "-X",
                "-c",
                "SELECT 42 AS marker",
                "-c",
                "SELECT * FROM nope",
            ],
            &[("PGPASSWORD", PASSWORD)],
        );
        let pid = psql.pid;
        let mut h = psql;
        h.go(b"");
        h.finish(T);
        let until = Instant::now() + Duration::from_secs(20);
        while spans_of(&r, pid).len() < 2 {
            assert!(Instant::now() < until, "no spans of psql");
            std::thread::sleep(Duration::from_millis(100));
        }
        let spans = spans_of(&r, pid);
        assert_eq!(spans.len(), 2);
        let cport = |s: &Span| {
            span_attrs(s)
                .into_iter()
                .filter(|a| !a.starts_with("network.peer.port="))
                .collect::<Vec<_>>()
        };
        let common = |rest: &[&str]| {
            let mut v: Vec<String> = [
                "db.namespace=postgres",
                "db.operation.name=SELECT",
                "db.system.name=postgresql",
                "network.peer.address=127.0.0.1",
                "network.transport=tcp",
                "network.type=ipv4",
                "server.address=127.0.0.1",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            v.push(format!("server.port={port}"));
            v.extend(rest.iter().map(|s| s.to_string()));
            v.sort();
            v
        };
        assert_eq!(
            cport(&spans[0]),
            common(&[
                "db.query.text=SELECT ? AS marker",
                "db.response.returned_rows=1"
            ])
        );
        assert_eq!(
            cport(&spans[1]),
            common(&[
                "db.query.text=SELECT * FROM nope",
                "db.response.status_code=42P01",
                "error.type=42P01"
            ])
        );
        assert!(spans
            .iter()
            .all(|s| s.name == "SELECT" && s.kind == SpanKind::Client as i32));
        let st = spans[1].status.as_ref().unwrap();
        assert_eq!(st.message, "relation \"nope\" does not exist");
        let mut c = std::net::TcpStream::connect(("127.0.0.1", mport)).unwrap();
        use std::io::{Read, Write};
        write!(
            c,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        c.read_to_string(&mut text).unwrap();
        for status in ["ok", "error"] {
            let series = format!(
                "plainsight_db_duration_seconds_count{{process=\"psql\",system=\"postgresql\",\
                 operation=\"SELECT\",status=\"{status}\"}} 1"
            );
            assert!(text.contains(&series), "{series} in {text}");
        }
    });
}
