//! The BPF -> user space event ABI: a byte-exact reading of `bpf/events.h`.
//!
//! Records are parsed field by field from the ring buffer bytes (no casts of
//! unaligned memory); a record shorter than its header is an error.

use thiserror::Error;

use std::mem::{offset_of, size_of};

use crate::bpf::openssl::types as t;

/// `struct file_key`: a file in `seen_files` and `static_files`.
pub type FileKey = t::file_key;
/// Key of `returns_asked` (openssl.bpf.c).
pub type ReturnsKey = t::returns_key;

pub const MMAP_EXEC_FILE: u32 = t::event_type::MMAP_EXEC_FILE.0;
pub const SSL_EVENT_TYPE_WRITE: u32 = t::event_type::SSL_EVENT_TYPE_WRITE.0;
pub const SSL_EVENT_TYPE_READ: u32 = t::event_type::SSL_EVENT_TYPE_READ.0;
pub const SSL_EVENT_TYPE_CLOSE: u32 = t::event_type::SSL_EVENT_TYPE_CLOSE.0;
pub const SNI_CONFIGURED: u32 = t::event_type::SNI_CONFIGURED.0;
pub const SNI_SENT: u32 = t::event_type::SNI_SENT.0;
pub const SNI_RECEIVED: u32 = t::event_type::SNI_RECEIVED.0;
pub const SOCK_INFO: u32 = t::event_type::SOCK_INFO.0;
pub const JSSE_VERDICT: u32 = t::event_type::JSSE_VERDICT.0;

pub const TRANSPORT_TCP: u32 = t::sock_transport::TRANSPORT_TCP.0;
pub const TRANSPORT_UDP: u32 = t::sock_transport::TRANSPORT_UDP.0;
pub const TRANSPORT_UNIX: u32 = t::sock_transport::TRANSPORT_UNIX.0;
pub const TRANSPORT_PIPE: u32 = t::sock_transport::TRANSPORT_PIPE.0;
pub const SOCK_FLAG_ACCEPTED: u32 = t::sock_event_flags::SOCK_FLAG_ACCEPTED.0;
pub const SOCK_FLAG_LOCAL_UNKNOWN: u32 = t::sock_event_flags::SOCK_FLAG_LOCAL_UNKNOWN.0;
pub const SOCK_FLAG_PEER_UNKNOWN: u32 = t::sock_event_flags::SOCK_FLAG_PEER_UNKNOWN.0;
/// Socket families as `sock_event.family` gives them (the kernel's).
pub const AF_INET: u16 = libc::AF_INET as u16;
pub const AF_INET6: u16 = libc::AF_INET6 as u16;

pub const EXEC_SOURCE_EXEC: u32 = t::exec_source::EXEC_SOURCE_EXEC.0;
pub const EXEC_SOURCE_MMAP: u32 = t::exec_source::EXEC_SOURCE_MMAP.0;
pub const EXEC_SOURCE_RETURNS: u32 = t::exec_source::EXEC_SOURCE_RETURNS.0;
pub const EXEC_SOURCE_WATCHED: u32 = t::exec_source::EXEC_SOURCE_WATCHED.0;

/// Size of one plaintext chunk.
pub const DATA_CHUNK: usize = t::abi_sizes::DATA_CHUNK.0 as usize;
/// Largest number of chunks per call.
pub const MAX_CHUNKS: usize = t::abi_sizes::MAX_CHUNKS.0 as usize;
/// Longest server name in an event, with its NUL.
pub const MAX_NAME: usize = t::abi_sizes::MAX_NAME.0 as usize;
pub const DATA_FLAG_TRUNCATED: u32 = t::data_flags::DATA_FLAG_TRUNCATED.0;

/// `seen_files` values.
pub const FILE_PENDING: u8 = t::seen_state::FILE_PENDING.0 as u8;
pub const FILE_DONE: u8 = t::seen_state::FILE_DONE.0 as u8;
pub const FILE_WATCHED: u8 = t::seen_state::FILE_WATCHED.0 as u8;

/// Indexes of the per-CPU `stats` arrays.
pub const STAT_DATA_LOST: u32 = t::stat_index::STAT_DATA_LOST.0;
pub const STAT_DISCOVER_LOST: u32 = t::stat_index::STAT_DISCOVER_LOST.0;
pub const STAT_READ_FAILED: u32 = t::stat_index::STAT_READ_FAILED.0;
pub const STAT_SNI_FULL: u32 = t::stat_index::STAT_SNI_FULL.0;
pub const STAT_RETURNS_LOST: u32 = t::stat_index::STAT_RETURNS_LOST.0;
pub const STAT_RETURN_MISSED: u32 = t::stat_index::STAT_RETURN_MISSED.0;
pub const STAT_SOCK_FULL: u32 = t::stat_index::STAT_SOCK_FULL.0;
pub const STAT_ERLANG_UNTIED: u32 = t::stat_index::STAT_ERLANG_UNTIED.0;

const MMAP_EVENT_LEN: usize = size_of::<t::mmap_exec_file_event>();
const DATA_HEADER_LEN: usize = offset_of!(t::ssl_data_event, data);
const CLOSE_EVENT_LEN: usize = size_of::<t::ssl_close_event>();
const SNI_EVENT_LEN: usize = size_of::<t::sni_event>();
const SOCK_EVENT_LEN: usize = size_of::<t::sock_event>();
const JSSE_VERDICT_LEN: usize = size_of::<t::jsse_verdict_event>();

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AbiError {
    #[error("record of {0} bytes is too short")]
    Short(usize),
    #[error("unknown event type {0}")]
    UnknownType(u32),
    #[error("chunk of {chunk_len} bytes does not fit the {have} bytes of its record")]
    BadChunk { chunk_len: usize, have: usize },
}

/// Direction of plaintext relative to the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Handed to the library to be encrypted and sent.
    Write,
    /// Returned by the library after decryption.
    Read,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Write => "write",
            Direction::Read => "read",
        }
    }
}

/// `MMAP_EXEC_FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MmapExecFile {
    pub pid: u32,
    pub tid: u32,
    pub source: u32,
    /// Kernel-internal dev_t: `major << 20 | minor`.
    pub dev: u64,
    pub ino: u64,
    pub ts_ns: u64,
    pub comm: String,
}

/// One chunk of `SSL_EVENT_TYPE_WRITE` / `SSL_EVENT_TYPE_READ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataChunk<'a> {
    pub direction: Direction,
    pub pid: u32,
    pub tid: u32,
    pub flags: u32,
    pub ts_ns: u64,
    pub conn: u64,
    /// The task's cgroup (v2) id (see `cgroup_names`).
    pub cgroup: u64,
    pub len: u32,
    pub captured: u32,
    pub offset: u32,
    pub comm: String,
    pub data: &'a [u8],
}

/// `SSL_EVENT_TYPE_CLOSE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub pid: u32,
    pub tid: u32,
    pub ts_ns: u64,
    pub conn: u64,
    /// The task's cgroup (v2) id (see `cgroup_names`).
    pub cgroup: u64,
    pub comm: String,
}

/// `SOCK_INFO`: the socket of connection `conn` of process `pid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SockInfo {
    pub pid: u32,
    pub tid: u32,
    /// The descriptor; -1 when the hook saw the socket only.
    pub fd: i32,
    pub ts_ns: u64,
    pub conn: u64,
    pub cgroup: u64,
    /// Inode of the socket's network namespace (0: none).
    pub netns: u32,
    /// The kernel's address family (0: not a socket).
    pub family: u16,
    /// `TRANSPORT_*`.
    pub transport: u32,
    /// `SOCK_FLAG_*`.
    pub flags: u32,
    pub local_port: u16,
    pub peer_port: u16,
    /// Network order; IPv4 in the first 4 bytes.
    pub local_addr: [u8; 16],
    pub peer_addr: [u8; 16],
}

/// `SNI_CONFIGURED`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniConfigured {
    pub pid: u32,
    pub tid: u32,
    /// Id of the matching pattern (1-based), 0 when no patterns were given.
    pub rule: u32,
    pub ts_ns: u64,
    pub conn: u64,
    /// The task's cgroup (v2) id (see `cgroup_names`).
    pub cgroup: u64,
    pub comm: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    MmapExecFile(MmapExecFile),
    Data(DataChunk<'a>),
    Close(Close),
    SniConfigured(SniConfigured),
    /// `SNI_SENT`: same layout; `conn` is the static path's connection id.
    SniSent(SniConfigured),
    /// `SNI_RECEIVED`: same layout; a server's connection, named by its
    /// client.
    SniReceived(SniConfigured),
    SockInfo(SockInfo),
    /// `JSSE_VERDICT`: (pid, connection, wanted) of a JVM connection.
    JsseVerdict(u32, u64, bool),
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}
fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().expect("2 bytes"))
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}
/// A NUL-terminated `char[16]` as text.
pub fn comm_at(b: &[u8], off: usize) -> String {
    let raw = &b[off..off + 16];
    let end = raw.iter().position(|&c| c == 0).unwrap_or(16);
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Parses one ring buffer record.
pub fn parse(b: &[u8]) -> Result<Event<'_>, AbiError> {
    if b.len() < 4 {
        return Err(AbiError::Short(b.len()));
    }
    match u32_at(b, 0) {
        MMAP_EXEC_FILE => {
            if b.len() < MMAP_EVENT_LEN {
                return Err(AbiError::Short(b.len()));
            }
            type E = t::mmap_exec_file_event;
            Ok(Event::MmapExecFile(MmapExecFile {
                pid: u32_at(b, offset_of!(E, pid)),
                tid: u32_at(b, offset_of!(E, tid)),
                source: u32_at(b, offset_of!(E, source)),
                dev: u64_at(b, offset_of!(E, dev)),
                ino: u64_at(b, offset_of!(E, ino)),
                ts_ns: u64_at(b, offset_of!(E, ts_ns)),
                comm: comm_at(b, offset_of!(E, comm)),
            }))
        }
        t @ (SSL_EVENT_TYPE_WRITE | SSL_EVENT_TYPE_READ) => {
            if b.len() < DATA_HEADER_LEN {
                return Err(AbiError::Short(b.len()));
            }
            type E = t::ssl_data_event;
            let chunk_len = u32_at(b, offset_of!(E, chunk_len)) as usize;
            let have = b.len() - DATA_HEADER_LEN;
            if chunk_len > have || chunk_len > DATA_CHUNK {
                return Err(AbiError::BadChunk { chunk_len, have });
            }
            Ok(Event::Data(DataChunk {
                direction: if t == SSL_EVENT_TYPE_WRITE {
                    Direction::Write
                } else {
                    Direction::Read
                },
                pid: u32_at(b, offset_of!(E, pid)),
                tid: u32_at(b, offset_of!(E, tid)),
                flags: u32_at(b, offset_of!(E, flags)),
                ts_ns: u64_at(b, offset_of!(E, ts_ns)),
                conn: u64_at(b, offset_of!(E, conn)),
                cgroup: u64_at(b, offset_of!(E, cgroup)),
                len: u32_at(b, offset_of!(E, len)),
                captured: u32_at(b, offset_of!(E, captured)),
                offset: u32_at(b, offset_of!(E, offset)),
                comm: comm_at(b, offset_of!(E, comm)),
                data: &b[DATA_HEADER_LEN..DATA_HEADER_LEN + chunk_len],
            }))
        }
        SSL_EVENT_TYPE_CLOSE => {
            if b.len() < CLOSE_EVENT_LEN {
                return Err(AbiError::Short(b.len()));
            }
            type E = t::ssl_close_event;
            Ok(Event::Close(Close {
                pid: u32_at(b, offset_of!(E, pid)),
                tid: u32_at(b, offset_of!(E, tid)),
                ts_ns: u64_at(b, offset_of!(E, ts_ns)),
                conn: u64_at(b, offset_of!(E, conn)),
                cgroup: u64_at(b, offset_of!(E, cgroup)),
                comm: comm_at(b, offset_of!(E, comm)),
            }))
        }
        SOCK_INFO => parse_sock(b),
        t @ (SNI_CONFIGURED | SNI_SENT | SNI_RECEIVED) => {
            if b.len() < SNI_EVENT_LEN {
                return Err(AbiError::Short(b.len()));
            }
            type E = t::sni_event;
            let raw = &b[offset_of!(E, name)..][..MAX_NAME];
            let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
            let e = SniConfigured {
                pid: u32_at(b, offset_of!(E, pid)),
                tid: u32_at(b, offset_of!(E, tid)),
                rule: u32_at(b, offset_of!(E, rule)),
                ts_ns: u64_at(b, offset_of!(E, ts_ns)),
                conn: u64_at(b, offset_of!(E, conn)),
                cgroup: u64_at(b, offset_of!(E, cgroup)),
                comm: comm_at(b, offset_of!(E, comm)),
                name: String::from_utf8_lossy(&raw[..end]).into_owned(),
            };
            Ok(match t {
                SNI_SENT => Event::SniSent(e),
                SNI_RECEIVED => Event::SniReceived(e),
                _ => Event::SniConfigured(e),
            })
        }
        JSSE_VERDICT => {
            if b.len() < JSSE_VERDICT_LEN {
                return Err(AbiError::Short(b.len()));
            }
            type E = t::jsse_verdict_event;
            Ok(Event::JsseVerdict(
                u32_at(b, offset_of!(E, pid)),
                u64_at(b, offset_of!(E, conn)),
                u32_at(b, offset_of!(E, wanted)) != 0,
            ))
        }
        t => Err(AbiError::UnknownType(t)),
    }
}

/// A `SOCK_INFO` record.
fn parse_sock(b: &[u8]) -> Result<Event<'_>, AbiError> {
    if b.len() < SOCK_EVENT_LEN {
        return Err(AbiError::Short(b.len()));
    }
    type E = t::sock_event;
    let addr = |off: usize| -> [u8; 16] { b[off..off + 16].try_into().expect("16 bytes") };
    Ok(Event::SockInfo(SockInfo {
        pid: u32_at(b, offset_of!(E, pid)),
        tid: u32_at(b, offset_of!(E, tid)),
        fd: u32_at(b, offset_of!(E, fd)) as i32,
        ts_ns: u64_at(b, offset_of!(E, ts_ns)),
        conn: u64_at(b, offset_of!(E, conn)),
        cgroup: u64_at(b, offset_of!(E, cgroup)),
        netns: u32_at(b, offset_of!(E, netns)),
        family: u16_at(b, offset_of!(E, family)),
        transport: u32::from(b[offset_of!(E, transport)]),
        flags: u32::from(b[offset_of!(E, flags)]),
        local_port: u16_at(b, offset_of!(E, local_port)),
        peer_port: u16_at(b, offset_of!(E, peer_port)),
        local_addr: addr(offset_of!(E, local_addr)),
        peer_addr: addr(offset_of!(E, peer_addr)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the parser relies on beyond the offsets it takes from the
    /// compiled header: the type comes first, little-endian u32 fields
    /// are 4 bytes and u64 fields 8, names are TASK_COMM_LEN bytes, every
    /// event fits its record, and the ABI constants have their meaning.
    #[test]
    fn event_layouts() {
        assert_eq!(offset_of!(t::mmap_exec_file_event, r#type), 0);
        assert_eq!(offset_of!(t::ssl_data_event, r#type), 0);
        assert_eq!(offset_of!(t::ssl_close_event, r#type), 0);
        assert_eq!(offset_of!(t::sni_event, r#type), 0);
        assert_eq!(offset_of!(t::sock_event, r#type), 0);
        let k = t::sock_event::default();
        assert_eq!(size_of_val(&k.local_addr) + size_of_val(&k.peer_addr), 32);
        assert_eq!(size_of_val(&k.transport) + size_of_val(&k.flags), 2);
        assert_eq!(size_of_val(&k.local_port) + size_of_val(&k.family), 4);
        let e = t::mmap_exec_file_event::default();
        assert_eq!(size_of_val(&e.comm), 16);
        assert_eq!(size_of_val(&e.dev) + size_of_val(&e.ino), 16);
        let d = t::ssl_data_event::default();
        assert_eq!(size_of_val(&d.comm), 16);
        assert_eq!(size_of_val(&d.data), DATA_CHUNK);
        assert_eq!(size_of::<t::ssl_data_event>(), DATA_HEADER_LEN + DATA_CHUNK);
        let s = t::sni_event::default();
        assert_eq!(size_of_val(&s.name), MAX_NAME);
        assert_eq!(offset_of!(t::sni_event, name) + MAX_NAME, SNI_EVENT_LEN);
        assert_eq!(size_of::<FileKey>(), 16);
        // Swept by a leading pid (Kernel::sweep_exited).
        assert_eq!(offset_of!(ReturnsKey, pid), 0);
        assert_eq!(size_of::<ReturnsKey>(), 16);
        assert!(DATA_CHUNK.is_power_of_two());
        assert_eq!(
            t::stat_index::STAT_MAX.0,
            [
                STAT_DATA_LOST,
                STAT_DISCOVER_LOST,
                STAT_READ_FAILED,
                STAT_SNI_FULL,
                STAT_RETURNS_LOST,
                STAT_RETURN_MISSED,
                STAT_SOCK_FULL,
                STAT_ERLANG_UNTIED
            ]
            .len() as u32,
            "STAT_MAX counts the stats"
        );
        assert_ne!(FILE_PENDING, FILE_DONE);
    }

    #[test]
    fn mmap_event_roundtrip() {
        type E = t::mmap_exec_file_event;
        let mut b = vec![0u8; MMAP_EVENT_LEN];
        let put32 = |b: &mut [u8], o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_le_bytes());
        put32(&mut b, 0, MMAP_EXEC_FILE);
        put32(&mut b, offset_of!(E, pid), 7);
        put32(&mut b, offset_of!(E, source), EXEC_SOURCE_EXEC);
        b[offset_of!(E, ino)..][..8].copy_from_slice(&99u64.to_le_bytes());
        b[offset_of!(E, comm)..][..4].copy_from_slice(b"node");
        let Event::MmapExecFile(m) = parse(&b).unwrap() else {
            panic!("not an mmap event")
        };
        assert_eq!(
            (m.pid, m.source, m.ino, m.comm.as_str()),
            (7, EXEC_SOURCE_EXEC, 99, "node")
        );
        assert_eq!(
            parse(&b[..MMAP_EVENT_LEN - 1]),
            Err(AbiError::Short(MMAP_EVENT_LEN - 1))
        );
    }

    fn data_record(t: u32, chunk: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; DATA_HEADER_LEN];
        b[0..4].copy_from_slice(&t.to_le_bytes());
        type E = t::ssl_data_event;
        let n = (chunk.len() as u32).to_le_bytes();
        b[offset_of!(E, pid)..][..4].copy_from_slice(&42u32.to_le_bytes());
        b[offset_of!(E, conn)..][..8].copy_from_slice(&0xdeadu64.to_le_bytes());
        b[offset_of!(E, len)..][..4].copy_from_slice(&n);
        b[offset_of!(E, captured)..][..4].copy_from_slice(&n);
        b[offset_of!(E, chunk_len)..][..4].copy_from_slice(&n);
        b[offset_of!(E, comm)..][..4].copy_from_slice(b"curl");
        b.extend_from_slice(chunk);
        b
    }

    #[test]
    fn data_chunk_roundtrip() {
        let r = data_record(SSL_EVENT_TYPE_READ, b"HTTP/1.1 200 OK\r\n");
        let Event::Data(d) = parse(&r).unwrap() else {
            panic!()
        };
        assert_eq!(d.direction, Direction::Read);
        assert_eq!(d.pid, 42);
        assert_eq!(d.conn, 0xdead);
        assert_eq!(d.comm, "curl");
        assert_eq!(d.data, b"HTTP/1.1 200 OK\r\n");
    }

    #[test]
    fn sock_info_roundtrip() {
        type E = t::sock_event;
        let mut b = vec![0u8; SOCK_EVENT_LEN];
        b[0..4].copy_from_slice(&SOCK_INFO.to_le_bytes());
        b[offset_of!(E, pid)..][..4].copy_from_slice(&42u32.to_le_bytes());
        b[offset_of!(E, fd)..][..4].copy_from_slice(&(-1i32).to_le_bytes());
        b[offset_of!(E, conn)..][..8].copy_from_slice(&0xbeefu64.to_le_bytes());
        b[offset_of!(E, netns)..][..4].copy_from_slice(&4026531840u32.to_le_bytes());
        b[offset_of!(E, family)..][..2].copy_from_slice(&AF_INET.to_le_bytes());
        b[offset_of!(E, transport)] = TRANSPORT_TCP as u8;
        b[offset_of!(E, flags)] = SOCK_FLAG_ACCEPTED as u8;
        b[offset_of!(E, local_port)..][..2].copy_from_slice(&8443u16.to_le_bytes());
        b[offset_of!(E, peer_port)..][..2].copy_from_slice(&40412u16.to_le_bytes());
        b[offset_of!(E, local_addr)..][..4].copy_from_slice(&[127, 0, 0, 1]);
        b[offset_of!(E, peer_addr)..][..4].copy_from_slice(&[10, 0, 3, 7]);
        let Event::SockInfo(s) = parse(&b).unwrap() else {
            panic!("not a sock event")
        };
        assert_eq!((s.pid, s.fd, s.conn, s.netns), (42, -1, 0xbeef, 4026531840));
        assert_eq!(
            (s.family, s.transport, s.flags),
            (AF_INET, TRANSPORT_TCP, SOCK_FLAG_ACCEPTED)
        );
        assert_eq!((s.local_port, s.peer_port), (8443, 40412));
        assert_eq!(&s.local_addr[..4], &[127, 0, 0, 1]);
        assert_eq!(&s.peer_addr[..4], &[10, 0, 3, 7]);
        assert_eq!(
            parse(&b[..SOCK_EVENT_LEN - 1]),
            Err(AbiError::Short(SOCK_EVENT_LEN - 1))
        );
    }

    #[test]
    fn jsse_verdicts_parse() {
        type E = t::jsse_verdict_event;
        let mut b = vec![0u8; JSSE_VERDICT_LEN];
        b[..4].copy_from_slice(&JSSE_VERDICT.to_le_bytes());
        b[offset_of!(E, pid)..][..4].copy_from_slice(&77u32.to_le_bytes());
        b[offset_of!(E, conn)..][..8].copy_from_slice(&(1u64 << 62 | 5).to_le_bytes());
        b[offset_of!(E, wanted)..][..4].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(parse(&b), Ok(Event::JsseVerdict(77, 1 << 62 | 5, true)));
        b[offset_of!(E, wanted)..][..4].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(parse(&b), Ok(Event::JsseVerdict(77, 1 << 62 | 5, false)));
    }

    #[test]
    fn truncated_records_are_errors() {
        let r = data_record(SSL_EVENT_TYPE_WRITE, b"abc");
        assert_eq!(parse(&r[..10]), Err(AbiError::Short(10)));
        assert!(matches!(
            parse(&r[..r.len() - 1]),
            Err(AbiError::BadChunk { .. })
        ));
        assert_eq!(parse(&[99, 0, 0, 0]), Err(AbiError::UnknownType(99)));
        assert_eq!(parse(&[9, 0, 0, 0]), Err(AbiError::Short(4)));
        assert_eq!(parse(&[1]), Err(AbiError::Short(1)));
    }
}
