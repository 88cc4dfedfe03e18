//! Who talks to whom: every record names its connection's endpoints, as
//! the kernel saw its socket, by role (the same on both ends), with its
//! network namespace; --port and --peer select connections by them; the
//! pcapng file has the real four-tuple.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{ChildStdout, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

/// `openssl s_server -www` (an SSL BIO server) listening on `host:port`.
struct SServer {
    pid: u32,
    port: u16,
    _out: BufReader<ChildStdout>,
    _child: Guard,
}

impl SServer {
    /// On a free port of `host` (`127.0.0.1`, `::1`, ...), ready once it
    /// says ACCEPT.
    fn start(host: &str, extra: &[&str]) -> SServer {
        let port = TcpListener::bind((host, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bracketed = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        SServer::run(&["-accept", &bracketed], extra, port)
    }

    fn run(listen: &[&str], extra: &[&str], port: u16) -> SServer {
        let d = fixtures();
        let mut child = Command::new("openssl")
            .arg("s_server")
            .args(listen)
            .arg("-cert")
            .arg(d.join("cert.pem"))
            .arg("-key")
            .arg(d.join("key.pem"))
            .args(["-www"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("ACCEPT") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "s_server ended");
        }
        SServer {
            pid: child.id(),
            port,
            _out: out,
            _child: Guard(child),
        }
    }
}

/// curl (OpenSSL) to `url` on hold; `extra` before the URL. Prints its
/// own source port last.
fn held_curl(extra: &[&str], url: &str) -> Held {
    let mut args = vec!["-sk", "--http1.1", "-o", "/dev/null", "-w", "%{local_port}"];
    args.extend_from_slice(extra);
    args.push(url);
    Held::new(Path::new("/usr/bin/curl"), &args)
}

/// Runs held curl to its end; its source port.
fn finish_curl(c: &mut Held) -> u16 {
    c.go(b"");
    let (ok, out, err) = c.finish(T);
    assert!(ok, "curl failed: {err}");
    String::from_utf8_lossy(&out)
        .trim()
        .parse()
        .expect("curl's local port")
}

/// Records of `pid` once there are data records both ways and its close.
fn until_closed(agent: &Agent, pid: u32) -> Vec<Value> {
    let until = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let recs = agent.records();
        let of = |t: &str| recs.iter().any(|r| r["pid"] == pid && r["type"] == t);
        if (of("data") && of("close")) || std::time::Instant::now() > until {
            std::thread::sleep(Duration::from_millis(300));
            return agent.records();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// curl to `openssl s_server` over IPv4 and over IPv6: curl's own source
/// port is the client port of its records and of the server's records of
/// that connection; both ends name the same client and server.
#[test]
fn curl_and_s_server_agree_over_ipv4_and_ipv6() {
    rerun_if_host_stalled(|| {
        let netns = netns_of(std::process::id());
        for host in ["127.0.0.1", "::1"] {
            let srv = SServer::start(host, &[]);
            let url = if host.contains(':') {
                format!("https://[{host}]:{}/", srv.port)
            } else {
                format!("https://{host}:{}/", srv.port)
            };
            let mut curl = held_curl(&[], &url);
            let agent = Agent::start(&[
                "--pid",
                &curl.pid.to_string(),
                "--pid",
                &srv.pid.to_string(),
            ]);
            let port = finish_curl(&mut curl);
            let recs = until_closed(&agent, curl.pid);
            let recs_srv = until_closed(&agent, srv.pid);
            let server = (host, srv.port);
            let (c, n) = check_endpoints(&recs, curl.pid, (host, Some(port)), server, netns);
            assert_eq!(c, port);
            assert!(n >= 3, "{host}: {n} records of curl");
            let (c, n) = check_endpoints(&recs_srv, srv.pid, (host, Some(port)), server, netns);
            assert_eq!(c, port);
            assert!(n >= 3, "{host}: {n} records of s_server");
        }
    });
}

/// The data records of `pid` that belong to connection `name` (their bytes
/// contain `marker(name)`) have its client port (`ports`: name -> port) and
/// the server's port; how many there were.
fn keep_their_ports(
    recs: &[Value],
    pid: u32,
    ports: &[(String, u16)],
    server_port: u16,
    marker: impl Fn(&str) -> String,
) -> usize {
    let mut seen = 0;
    for r in recs
        .iter()
        .filter(|r| r["pid"] == pid && r["type"] == "data")
    {
        let text = String::from_utf8_lossy(&record_bytes(r)).into_owned();
        for (name, port) in ports {
            if text.contains(&marker(name)) {
                assert_eq!(r["client"]["port"], *port, "{name}: {r}");
                assert_eq!(r["server"]["port"], server_port, "{r}");
                seen += 1;
            }
        }
    }
    seen
}

/// Two connections of one process used in turn on one thread (a client
/// pool): each record keeps its own connection's endpoints.
#[test]
fn two_connections_of_one_thread_keep_their_endpoints() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let mut py = Held::new(
            Path::new("/usr/bin/python3"),
            &[
                script("two_conns.py").to_str().unwrap(),
                "127.0.0.1",
                &srv.port.to_string(),
            ],
        );
        let agent = Agent::start(&["--pid", &py.pid.to_string()]);
        py.go(b"");
        let (ok, out, err) = py.finish(T);
        assert!(ok, "two_conns.py failed: {err}");
        // "a=PORT b=PORT"
        let ports: Vec<(String, u16)> = String::from_utf8_lossy(&out)
            .split_whitespace()
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect();
        assert_eq!(ports.len(), 2, "{}", String::from_utf8_lossy(&out));
        let (w, _) = agent.wait_bytes(py.pid, 6 * 40, 6 * 40);
        assert!(w.len() >= 6 * 40, "requests: {}", show(&w));
        // Requests say /a0, /b1...; responses "ok GET /a0 0".
        let seen = keep_their_ports(&agent.records(), py.pid, &ports, srv.port, |n| {
            format!("/{n}")
        });
        assert_eq!(seen, 12, "3 requests and 3 responses on each connection");
    });
}

/// curl's parallel transfers: two connections driven by one thread
/// (libcurl's multi loop), its TLS records moved by its own BIO inside
/// each SSL call, so each socket is learned from the syscall the call
/// makes. Each connection's records keep its own source port.
#[test]
fn parallel_transfers_of_one_thread_keep_their_endpoints() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let url = |p: &str| format!("https://127.0.0.1:{}/{p}", srv.port);
        let (ua, ub) = (url("pa"), url("pb"));
        let mut curl = Held::new(
            Path::new("/usr/bin/curl"),
            &[
                "-sk",
                "--http1.1",
                "-Z",
                "--parallel-immediate",
                "-w",
                "%{local_port} %{url}\\n",
                "-o",
                "/dev/null",
                "-o",
                "/dev/null",
                &ua,
                &ub,
            ],
        );
        let agent = Agent::start(&["--pid", &curl.pid.to_string()]);
        curl.go(b"");
        let (ok, out, err) = curl.finish(T);
        assert!(ok, "curl failed: {err}");
        let text = String::from_utf8_lossy(&out).into_owned();
        let ports: Vec<(String, u16)> = text
            .lines()
            .filter_map(|l| {
                let (p, u) = l.split_once(' ')?;
                Some((u.rsplit('/').next()?.to_string(), p.parse().ok()?))
            })
            .collect();
        assert_eq!(ports.len(), 2, "{text}");
        assert_ne!(ports[0].1, ports[1].1, "two connections: {text}");
        agent.wait_bytes(curl.pid, 2 * 60, 2 * 60);
        let seen = keep_their_ports(&agent.records(), curl.pid, &ports, srv.port, |n| {
            format!("/{n} ")
        });
        assert_eq!(seen, 4, "a request and a response on each connection");
    });
}

/// A network namespace and a veth pair, removed on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str, host_ip: &str, ns_ip: &str) -> Netns {
        let name = format!("ps-{tag}-{}", std::process::id());
        let (h, n) = (
            format!("psh{}", std::process::id()),
            format!("psn{}", std::process::id()),
        );
        let ip = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().expect("ip");
            assert!(st.success(), "ip {args:?}");
        };
        let ns = Netns { name: name.clone() };
        ip(&["netns", "add", &name]);
        ip(&["link", "add", &h, "type", "veth", "peer", "name", &n]);
        ip(&["link", "set", &n, "netns", &name]);
        ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &h]);
        ip(&["link", "set", &h, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{ns_ip}/24"),
            "dev",
            &n,
        ]);
        ip(&["-n", &name, "link", "set", &n, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ns
    }

    fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/run/netns/{}", self.name))
            .unwrap()
            .ino()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end, and so the pair.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// curl in a network namespace the test made, to a server on the host
/// side of a veth pair: the client's records have the namespace's inode
/// and the 10.x addresses, the server's the host's namespace.
#[test]
fn a_connection_in_a_network_namespace() {
    rerun_if_host_stalled(|| {
        let ns = Netns::new("ep", "10.231.7.1", "10.231.7.2");
        let srv = SServer::start("10.231.7.1", &[]);
        let url = format!("https://10.231.7.1:{}/", srv.port);
        let mut curl = Held::new(
            Path::new("/usr/sbin/ip"),
            &[
                "netns",
                "exec",
                &ns.name,
                "curl",
                "-sk",
                "--http1.1",
                "-o",
                "/dev/null",
                "-w",
                "%{local_port}",
                &url,
            ],
        );
        let agent = Agent::start(&[
            "--pid",
            &curl.pid.to_string(),
            "--pid",
            &srv.pid.to_string(),
        ]);
        let port = finish_curl(&mut curl);
        let recs = until_closed(&agent, curl.pid);
        let server = ("10.231.7.1", srv.port);
        check_endpoints(
            &recs,
            curl.pid,
            ("10.231.7.2", Some(port)),
            server,
            ns.inode(),
        );
        let recs = until_closed(&agent, srv.pid);
        let host = netns_of(std::process::id());
        assert_ne!(host, ns.inode());
        check_endpoints(&recs, srv.pid, ("10.231.7.2", Some(port)), server, host);
    });
}

/// --port and --peer select connections in the kernel: of two servers (on
/// 127.0.0.1 and 127.0.0.2), only the one asked for is captured.
#[test]
fn port_and_peer_filters() {
    rerun_if_host_stalled(|| {
        let a = SServer::start("127.0.0.1", &[]);
        let b = SServer::start("127.0.0.2", &[]);
        for (want, args) in [
            (a.port, vec!["--port".to_string(), a.port.to_string()]),
            (
                b.port,
                vec!["--peer".to_string(), "127.0.0.2/32".to_string()],
            ),
        ] {
            // By name (so that curl sends one: its SNI record comes before
            // its socket is known, and is held until it is).
            let ra = format!("api.acme.com:{}:127.0.0.1", a.port);
            let rb = format!("api.acme.com:{}:127.0.0.2", b.port);
            let mut ca = held_curl(
                &["--resolve", &ra],
                &format!("https://api.acme.com:{}/", a.port),
            );
            let mut cb = held_curl(
                &["--resolve", &rb],
                &format!("https://api.acme.com:{}/", b.port),
            );
            let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
            let (pa, pb) = (ca.pid.to_string(), cb.pid.to_string());
            all.extend(["--pid", &pa, "--pid", &pb]);
            let agent = Agent::start(&all);
            finish_curl(&mut ca);
            finish_curl(&mut cb);
            let (wanted, other) = if want == a.port {
                (&ca, &cb)
            } else {
                (&cb, &ca)
            };
            let recs = until_closed(&agent, wanted.pid);
            assert!(
                recs.iter()
                    .any(|r| r["pid"] == wanted.pid && r["type"] == "data"),
                "{args:?}: nothing of the wanted connection"
            );
            for r in recs.iter().filter(|r| r["pid"] == wanted.pid) {
                assert_eq!(r["server"]["port"], want, "{args:?}: {r}");
            }
            let sni: Vec<&Value> = recs
                .iter()
                .filter(|r| r["pid"] == wanted.pid && r["type"] == "sni")
                .collect();
            assert_eq!(sni.len(), 1, "{args:?}: {recs:?}");
            assert_eq!(sni[0]["sni"], "api.acme.com");
            let leaked: Vec<&Value> = recs.iter().filter(|r| r["pid"] == other.pid).collect();
            assert!(leaked.is_empty(), "{args:?}: {leaked:?}");
        }
    });
}

/// The pcapng file of a connection has its real addresses and ports, read
/// back by tshark (HTTP on a port other than 80 with `-d
/// tcp.port==PORT,http`, as the README says).
#[test]
fn pcapng_has_the_real_four_tuple() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let url = format!("https://127.0.0.1:{}/four", srv.port);
        let mut curl = held_curl(&[], &url);
        let dir = tempfile::tempdir().unwrap();
        let pcap = dir.path().join("c.pcapng");
        let mut agent = Agent::start_decoded(
            "json",
            &[
                "--pid",
                &curl.pid.to_string(),
                "--pcap",
                pcap.to_str().unwrap(),
            ],
        );
        let port = finish_curl(&mut curl);
        agent.exchanges(curl.pid, 1);
        agent.stop();
        let out = Command::new("tshark")
            .arg("-r")
            .arg(&pcap)
            .args(["-d", &format!("tcp.port=={},http", srv.port)])
            .args(["-Y", "http.request", "-T", "fields"])
            .args([
                "-e",
                "ip.src",
                "-e",
                "tcp.srcport",
                "-e",
                "ip.dst",
                "-e",
                "tcp.dstport",
            ])
            .args(["-e", "http.request.uri"])
            .output()
            .expect("tshark");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.trim(),
            format!("127.0.0.1\t{port}\t127.0.0.1\t{}\t/four", srv.port),
            "tshark: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// TLS over a unix socket: the records say so, with no addresses.
#[test]
fn tls_over_a_unix_socket() {
    rerun_if_host_stalled(|| {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("tls.sock");
        let s = sock.to_str().unwrap();
        let srv = SServer::run(&["-unix", s], &[], 0);
        let mut client = Held::new(
            Path::new("/usr/bin/openssl"),
            &["s_client", "-unix", s, "-quiet", "-ign_eof"],
        );
        let agent = Agent::start(&["--pid", &client.pid.to_string()]);
        client.go(b"GET / HTTP/1.0\r\n\r\n");
        let (_, _, _) = client.finish(T);
        let (w, _) = agent.wait_bytes(client.pid, 18, 1);
        assert_eq!(show(&w), show(b"GET / HTTP/1.0\r\n\r\n"));
        let recs = agent.records();
        let data: Vec<&Value> = recs
            .iter()
            .filter(|r| r["pid"] == client.pid && r["type"] == "data")
            .collect();
        assert!(!data.is_empty());
        for r in data {
            assert_eq!(r["transport"], "unix", "{r}");
            assert!(
                r.get("client").is_none() && r.get("server").is_none(),
                "{r}"
            );
            assert!(r["fd"].as_i64().is_some_and(|fd| fd >= 0), "{r}");
        }
        drop(srv);
    });
}
