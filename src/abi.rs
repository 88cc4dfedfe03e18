//! The BPF -> user space event ABI: a byte-exact reading of `bpf/events.h`.
//!
//! Records are parsed field by field from the ring buffer bytes (no casts of
//! unaligned memory); a record shorter than its header is an error.

use thiserror::Error;

pub const MMAP_EXEC_FILE: u32 = 1;
pub const SSL_EVENT_TYPE_WRITE: u32 = 2;
pub const SSL_EVENT_TYPE_READ: u32 = 3;
pub const SSL_EVENT_TYPE_CLOSE: u32 = 4;
pub const SNI_CONFIGURED: u32 = 5;
pub const SNI_SENT: u32 = 6;

pub const EXEC_SOURCE_EXEC: u32 = 1;
pub const EXEC_SOURCE_MMAP: u32 = 2;

/// Size of one plaintext chunk (`DATA_CHUNK`).
pub const DATA_CHUNK: usize = 16384;
/// Largest number of chunks per call (`MAX_CHUNKS`).
pub const MAX_CHUNKS: usize = 4096;
pub const DATA_FLAG_TRUNCATED: u32 = 1;

pub const STAT_DATA_LOST: u32 = 0;
pub const STAT_DISCOVER_LOST: u32 = 1;
pub const STAT_READ_FAILED: u32 = 2;

const MMAP_EVENT_LEN: usize = 56;
const DATA_HEADER_LEN: usize = 64;
const CLOSE_EVENT_LEN: usize = 48;
const SNI_EVENT_LEN: usize = 48 + 256;

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
    pub comm: String,
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
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
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
            Ok(Event::MmapExecFile(MmapExecFile {
                pid: u32_at(b, 4),
                tid: u32_at(b, 8),
                source: u32_at(b, 12),
                dev: u64_at(b, 16),
                ino: u64_at(b, 24),
                ts_ns: u64_at(b, 32),
                comm: comm_at(b, 40),
            }))
        }
        t @ (SSL_EVENT_TYPE_WRITE | SSL_EVENT_TYPE_READ) => {
            if b.len() < DATA_HEADER_LEN {
                return Err(AbiError::Short(b.len()));
            }
            let chunk_len = u32_at(b, 44) as usize;
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
                pid: u32_at(b, 4),
                tid: u32_at(b, 8),
                flags: u32_at(b, 12),
                ts_ns: u64_at(b, 16),
                conn: u64_at(b, 24),
                len: u32_at(b, 32),
                captured: u32_at(b, 36),
                offset: u32_at(b, 40),
                comm: comm_at(b, 48),
                data: &b[DATA_HEADER_LEN..DATA_HEADER_LEN + chunk_len],
            }))
        }
        SSL_EVENT_TYPE_CLOSE => {
            if b.len() < CLOSE_EVENT_LEN {
                return Err(AbiError::Short(b.len()));
            }
            Ok(Event::Close(Close {
                pid: u32_at(b, 4),
                tid: u32_at(b, 8),
                ts_ns: u64_at(b, 16),
                conn: u64_at(b, 24),
                comm: comm_at(b, 32),
            }))
        }
        t @ (SNI_CONFIGURED | SNI_SENT) => {
            if b.len() < SNI_EVENT_LEN {
                return Err(AbiError::Short(b.len()));
            }
            let raw = &b[48..SNI_EVENT_LEN];
            let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
            let e = SniConfigured {
                pid: u32_at(b, 4),
                tid: u32_at(b, 8),
                rule: u32_at(b, 12),
                ts_ns: u64_at(b, 16),
                conn: u64_at(b, 24),
                comm: comm_at(b, 32),
                name: String::from_utf8_lossy(&raw[..end]).into_owned(),
            };
            Ok(if t == SNI_SENT {
                Event::SniSent(e)
            } else {
                Event::SniConfigured(e)
            })
        }
        t => Err(AbiError::UnknownType(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::openssl::types as ot;
    use std::mem::{offset_of, size_of};

    /// The offsets used above are the ones the C compiler laid out (the
    /// skeleton generator reads them from the BPF object's BTF).
    #[test]
    fn layout_matches_the_c_header() {
        assert_eq!(offset_of!(ot::ssl_data_event, flags), 12);
        assert_eq!(offset_of!(ot::ssl_data_event, ts_ns), 16);
        assert_eq!(offset_of!(ot::ssl_data_event, conn), 24);
        assert_eq!(offset_of!(ot::ssl_data_event, len), 32);
        assert_eq!(offset_of!(ot::ssl_data_event, captured), 36);
        assert_eq!(offset_of!(ot::ssl_data_event, offset), 40);
        assert_eq!(offset_of!(ot::ssl_data_event, chunk_len), 44);
        assert_eq!(offset_of!(ot::ssl_data_event, comm), 48);
        assert_eq!(offset_of!(ot::ssl_data_event, data), DATA_HEADER_LEN);
        assert_eq!(
            size_of::<ot::ssl_data_event>(),
            DATA_HEADER_LEN + DATA_CHUNK
        );
        assert_eq!(offset_of!(ot::sni_event, rule), 12);
        assert_eq!(offset_of!(ot::sni_event, conn), 24);
        assert_eq!(offset_of!(ot::sni_event, comm), 32);
        assert_eq!(offset_of!(ot::sni_event, name), 48);
        assert_eq!(size_of::<ot::sni_event>(), SNI_EVENT_LEN);
        assert_eq!(offset_of!(ot::ssl_close_event, conn), 24);
        assert_eq!(offset_of!(ot::ssl_close_event, comm), 32);
        assert_eq!(size_of::<ot::ssl_close_event>(), CLOSE_EVENT_LEN);
    }

    fn data_record(t: u32, chunk: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; DATA_HEADER_LEN];
        b[0..4].copy_from_slice(&t.to_le_bytes());
        b[4..8].copy_from_slice(&42u32.to_le_bytes());
        b[24..32].copy_from_slice(&0xdeadu64.to_le_bytes());
        b[32..36].copy_from_slice(&(chunk.len() as u32).to_le_bytes());
        b[36..40].copy_from_slice(&(chunk.len() as u32).to_le_bytes());
        b[44..48].copy_from_slice(&(chunk.len() as u32).to_le_bytes());
        b[48..52].copy_from_slice(b"curl");
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
    fn truncated_records_are_errors() {
        let r = data_record(SSL_EVENT_TYPE_WRITE, b"abc");
        assert_eq!(parse(&r[..10]), Err(AbiError::Short(10)));
        assert!(matches!(
            parse(&r[..r.len() - 1]),
            Err(AbiError::BadChunk { .. })
        ));
        assert_eq!(parse(&[9, 0, 0, 0]), Err(AbiError::UnknownType(9)));
        assert_eq!(parse(&[1]), Err(AbiError::Short(1)));
    }
}
