//! The record that flows from the capture to every output, and what is
//! known of its connection.
//!
//! Capture ([`crate::capture`]) makes [`Record`]s; the outputs (raw and
//! decoded writers, pcapng, OTLP, metrics) read them side by side. What is
//! known of a connection beyond its bytes (its container, its socket's
//! endpoints, which end the captured process is) is one value,
//! [`ConnFacts`], carried by every record kind and shown by every output
//! from here: a new fact is added in this one place.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::abi::{self, Direction};
use crate::container::Container;

/// What a connection's descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
    Unix,
    Pipe,
    Other,
}

impl Transport {
    /// The OpenTelemetry `network.transport` value (and the JSON field).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Unix => "unix",
            Transport::Pipe => "pipe",
            Transport::Other => "other",
        }
    }
}

/// The socket of a connection, as the kernel saw it (`SOCK_INFO`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub transport: Transport,
    /// Inode of the socket's network namespace (0: not a socket).
    pub netns: u32,
    /// The process's descriptor, when the hook saw it.
    pub fd: Option<i32>,
    /// This process's end and the other one (IP sockets only; a v4-mapped
    /// IPv6 address is given as IPv4).
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    /// A TCP socket a listener accepted: the process is the server.
    pub accepted: bool,
    /// `local` and `peer` as JSON, made once: every record of the
    /// connection shows them.
    json: [Option<JsonEnd>; 2],
}

/// An address of a `SOCK_INFO` record: IPv4 in the first 4 bytes, or IPv6
/// (a v4-mapped one shown as IPv4).
fn address(family: u16, raw: [u8; 16]) -> Option<IpAddr> {
    match family {
        abi::AF_INET => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        abi::AF_INET6 => {
            let v6 = Ipv6Addr::from(raw);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        _ => None,
    }
}

impl Endpoints {
    /// From the kernel's record.
    pub fn of(s: &abi::SockInfo) -> Endpoints {
        let transport = match s.transport {
            abi::TRANSPORT_TCP => Transport::Tcp,
            abi::TRANSPORT_UDP => Transport::Udp,
            abi::TRANSPORT_UNIX => Transport::Unix,
            abi::TRANSPORT_PIPE => Transport::Pipe,
            _ => Transport::Other,
        };
        let ip = matches!(transport, Transport::Tcp | Transport::Udp);
        let at = |raw, port, unknown: u32| {
            address(s.family, raw)
                .filter(|_| ip && s.flags & unknown == 0)
                .map(|a| SocketAddr::new(a, port))
        };
        Endpoints::new(
            transport,
            s.netns,
            (s.fd >= 0).then_some(s.fd),
            (
                at(s.local_addr, s.local_port, abi::SOCK_FLAG_LOCAL_UNKNOWN),
                at(s.peer_addr, s.peer_port, abi::SOCK_FLAG_PEER_UNKNOWN),
            ),
            s.flags & abi::SOCK_FLAG_ACCEPTED != 0,
        )
    }

    /// From its parts (`ends`: this process's end and the other one).
    pub fn new(
        transport: Transport,
        netns: u32,
        fd: Option<i32>,
        (local, peer): (Option<SocketAddr>, Option<SocketAddr>),
        accepted: bool,
    ) -> Endpoints {
        Endpoints {
            transport,
            netns,
            fd,
            local,
            peer,
            accepted,
            json: [local.map(JsonEnd::from), peer.map(JsonEnd::from)],
        }
    }

    /// `ipv4` or `ipv6` (OpenTelemetry's `network.type`), for IP sockets.
    pub fn network_type(&self) -> Option<&'static str> {
        self.peer.map(|a| if a.is_ipv4() { "ipv4" } else { "ipv6" })
    }
}

/// [client, server] of a connection whose captured end is `local` and other
/// end `peer`, the captured process being the client or not.
fn by_role<T>(client: bool, local: T, peer: T) -> [T; 2] {
    if client {
        [local, peer]
    } else {
        [peer, local]
    }
}

/// What is known of a connection besides its bytes; every record kind
/// carries it, every output shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnFacts {
    /// The process's container (None: on the host).
    pub container: Option<Arc<Container>>,
    /// Its socket, once the kernel saw it (None: not known yet).
    pub endpoints: Option<Arc<Endpoints>>,
    /// The captured process is the connection's client (Some(true)) or
    /// its server (Some(false)), as far as its server name or its
    /// protocol told; else the socket says (see [`ConnFacts::is_client`]).
    pub client: Option<bool>,
}

/// One end of a connection, as JSON: `{"address": "127.0.0.1", "port": 443}`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct JsonEnd {
    pub address: String,
    pub port: u16,
}

impl From<SocketAddr> for JsonEnd {
    fn from(a: SocketAddr) -> JsonEnd {
        JsonEnd {
            address: a.ip().to_string(),
            port: a.port(),
        }
    }
}

/// [`ConnFacts`] as JSON fields (flattened into every record's head);
/// what is not known is absent.
#[derive(Debug, Serialize)]
pub struct JsonFacts<'a> {
    /// The full container id, for processes in a container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<&'a str>,
    /// Its Kubernetes pod's UID, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<&'a JsonEnd>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<&'a JsonEnd>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<u32>,
}

impl ConnFacts {
    /// Whether the captured process is the client: as its server name or
    /// protocol told, else as its socket says (a TCP socket a listener
    /// accepted is the server's; any other IP socket connected).
    pub fn is_client(&self) -> Option<bool> {
        self.client.or_else(|| {
            let e = self.endpoints.as_deref()?;
            e.peer.map(|_| !e.accepted)
        })
    }

    /// The client's and the server's end, by role: the same whichever end
    /// was captured.
    pub fn client_server(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let [c, s] = self
            .role()
            .map_or([None, None], |(e, client)| by_role(client, e.local, e.peer));
        (c, s)
    }

    /// Its socket and whether the process is the client, when both are
    /// known.
    fn role(&self) -> Option<(&Endpoints, bool)> {
        Some((self.endpoints.as_deref()?, self.is_client()?))
    }

    /// The other end of the connection, as this process sees it.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.endpoints.as_deref().and_then(|e| e.peer)
    }

    /// The JSON fields.
    pub fn json(&self) -> JsonFacts<'_> {
        let e = self.endpoints.as_deref();
        let [client, server] = self.role().map_or([None, None], |(e, c)| {
            let [l, p] = &e.json;
            by_role(c, l.as_ref(), p.as_ref())
        });
        JsonFacts {
            container_id: self.container.as_deref().map(|c| c.id.as_str()),
            pod_uid: self.container.as_deref().and_then(|c| c.pod_uid.as_deref()),
            client,
            server,
            transport: e.map(|e| e.transport.as_str()),
            netns: e.map(|e| e.netns).filter(|&n| n != 0),
        }
    }

    /// On the console: the other end (` 127.0.0.1:8443`), or nothing.
    pub fn console_peer(&self) -> String {
        match (self.peer(), self.endpoints.as_deref()) {
            (Some(a), _) => format!(" {a}"),
            (None, Some(e)) if e.transport != Transport::Other => {
                format!(" {}", e.transport.as_str())
            }
            _ => String::new(),
        }
    }
}

/// The plaintext of one successful `SSL_write`/`SSL_read`-like call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub direction: Direction,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub conn: u64,
    pub ts_ns: u64,
    /// Bytes the call reported.
    pub len: u32,
    /// The bytes captured (`len` unless truncated or lost).
    pub data: Vec<u8>,
    /// The call reported more than the capture limit.
    pub truncated: bool,
    /// Bytes of the captured range that never arrived (lost records).
    pub lost_bytes: u32,
    /// Server name of the connection, when known.
    pub sni: Option<String>,
    /// What is known of its connection.
    pub facts: ConnFacts,
}

/// What the agent can see of one file that carries TLS code, when it is
/// first classified (the coverage map): which stack, and whether it is
/// captured (with which entry points) or not (and why).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Coverage {
    #[serde(skip)]
    pub ts_ns: u64,
    /// The process the file was first seen in.
    pub pid: u32,
    pub comm: String,
    /// Its path, as that process maps it.
    pub file: String,
    pub stack: &'static str,
    pub captured: bool,
    /// The entry points probed, or why it cannot be captured.
    pub reason: String,
}

/// Facts of no connection (a coverage record's).
static NO_FACTS: std::sync::LazyLock<ConnFacts> = std::sync::LazyLock::new(ConnFacts::default);

/// What the output thread receives.
#[derive(Debug, Clone)]
pub enum Record {
    /// One TLS call's plaintext.
    Call(CallRecord),
    /// A captured connection was closed.
    Close {
        pid: u32,
        tid: u32,
        comm: String,
        conn: u64,
        ts_ns: u64,
        sni: Option<String>,
        facts: ConnFacts,
    },
    /// SNI_CONFIGURED: a connection to capture got its server name.
    Sni {
        pid: u32,
        tid: u32,
        comm: String,
        conn: u64,
        ts_ns: u64,
        name: String,
        pattern: Option<String>,
        facts: ConnFacts,
    },
    /// A file carrying TLS code was classified (not a connection's).
    Coverage(Coverage),
}

impl Record {
    /// The bytes this record holds, as counted in [`QUEUED_BYTES`].
    pub fn queued_bytes(&self) -> usize {
        match self {
            Record::Call(c) => c.data.len(),
            _ => 0,
        }
    }

    /// What is known of the record's connection.
    pub fn facts(&self) -> &ConnFacts {
        match self {
            Record::Call(c) => &c.facts,
            Record::Close { facts, .. } | Record::Sni { facts, .. } => facts,
            Record::Coverage(_) => &NO_FACTS,
        }
    }
}

/// A connection as the decoded outputs (access log, OTLP, metrics) see it.
#[derive(Debug, Clone)]
pub struct ConnMeta {
    pub pid: u32,
    pub comm: String,
    pub conn: u64,
    pub sni: Option<String>,
    pub facts: ConnFacts,
}

impl ConnMeta {
    /// `client` or `server`, once known.
    pub fn side(&self) -> Option<&'static str> {
        self.facts
            .is_client()
            .map(|c| if c { "client" } else { "server" })
    }
}

/// Plaintext bytes in records queued for the output thread: the capture
/// side stops queueing (and counts drops) past `MAX_QUEUED_BYTES`, so a slow
/// output bounds the agent's memory in bytes, not only in records.
pub static QUEUED_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Plaintext bytes queued for the output thread at most.
pub const MAX_QUEUED_BYTES: usize = 64 << 20;

/// Converts CLOCK_MONOTONIC nanoseconds (BPF's clock) to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub(crate) offset_ns: i128,
}

impl Clock {
    pub fn new() -> Clock {
        let mono = mono_now() as i128;
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i128;
        Clock {
            offset_ns: wall - mono,
        }
    }
    /// RFC 3339 wall-clock time, in microseconds, of a BPF timestamp.
    pub fn rfc3339(&self, mono_ns: u64) -> String {
        humantime::format_rfc3339_micros(self.wall(mono_ns)).to_string()
    }

    pub fn wall(&self, mono_ns: u64) -> SystemTime {
        let ns = (mono_ns as i128 + self.offset_ns).max(0) as u64;
        UNIX_EPOCH + Duration::from_nanos(ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// CLOCK_MONOTONIC now, in ns (BPF's `bpf_ktime_get_ns`).
pub fn mono_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(
        family: u16,
        transport: u32,
        flags: u32,
        local: [u8; 16],
        peer: [u8; 16],
    ) -> abi::SockInfo {
        abi::SockInfo {
            pid: 1,
            tid: 1,
            fd: 5,
            ts_ns: 0,
            conn: 9,
            cgroup: 0,
            netns: 4026531840,
            family,
            transport,
            flags,
            local_port: 40412,
            peer_port: 8443,
            local_addr: local,
            peer_addr: peer,
        }
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut r = [0u8; 16];
        r[..4].copy_from_slice(&a);
        r
    }

    #[test]
    fn a_client_over_ipv4() {
        let e = Endpoints::of(&sock(
            abi::AF_INET,
            abi::TRANSPORT_TCP,
            0,
            v4([127, 0, 0, 1]),
            v4([10, 0, 3, 7]),
        ));
        let f = ConnFacts {
            endpoints: Some(Arc::new(e)),
            ..Default::default()
        };
        assert_eq!(f.is_client(), Some(true));
        let (c, s) = f.client_server();
        assert_eq!(c, Some("127.0.0.1:40412".parse().unwrap()));
        assert_eq!(s, Some("10.0.3.7:8443".parse().unwrap()));
        let j = serde_json::to_string(&f.json()).unwrap();
        assert_eq!(
            j,
            r#"{"client":{"address":"127.0.0.1","port":40412},"server":{"address":"10.0.3.7","port":8443},"transport":"tcp","netns":4026531840}"#
        );
        assert_eq!(f.console_peer(), " 10.0.3.7:8443");
    }

    #[test]
    fn an_accepted_socket_is_the_servers_and_v4_mapped_is_v4() {
        let mut local = [0u8; 16];
        local[10] = 0xff;
        local[11] = 0xff;
        local[12..].copy_from_slice(&[127, 0, 0, 1]);
        let peer = Ipv6Addr::LOCALHOST.octets();
        let e = Endpoints::of(&sock(
            abi::AF_INET6,
            abi::TRANSPORT_TCP,
            abi::SOCK_FLAG_ACCEPTED,
            local,
            peer,
        ));
        assert_eq!(e.local, Some("127.0.0.1:40412".parse().unwrap()));
        assert_eq!(e.peer, Some("[::1]:8443".parse().unwrap()));
        let f = ConnFacts {
            endpoints: Some(Arc::new(e)),
            ..Default::default()
        };
        // The server: its local end is the server's.
        let (c, s) = f.client_server();
        assert_eq!(c, Some("[::1]:8443".parse().unwrap()));
        assert_eq!(s, Some("127.0.0.1:40412".parse().unwrap()));
        // What the server name or protocol told wins over the socket.
        let told = ConnFacts {
            client: Some(true),
            ..f
        };
        assert_eq!(
            told.client_server().0,
            Some("127.0.0.1:40412".parse().unwrap())
        );
    }

    #[test]
    fn unix_and_pipes_have_no_addresses() {
        for (t, name) in [(abi::TRANSPORT_UNIX, "unix"), (abi::TRANSPORT_PIPE, "pipe")] {
            let e = Endpoints::of(&sock(1, t, 0, v4([1, 2, 3, 4]), v4([5, 6, 7, 8])));
            assert_eq!((e.local, e.peer), (None, None));
            let f = ConnFacts {
                endpoints: Some(Arc::new(e)),
                ..Default::default()
            };
            let j = serde_json::to_value(f.json()).unwrap();
            assert_eq!(j["transport"], name);
            assert!(j.get("client").is_none() && j.get("server").is_none());
            assert_eq!(f.console_peer(), format!(" {name}"));
        }
    }

    #[test]
    fn nothing_known_writes_nothing() {
        let f = ConnFacts::default();
        assert_eq!(serde_json::to_string(&f.json()).unwrap(), "{}");
        assert_eq!(f.console_peer(), "");
    }
}
