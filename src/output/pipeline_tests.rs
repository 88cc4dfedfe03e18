//! The pipeline's budgets and redaction: `--raw` records masked, the least
//! recently active connection evicted past the total memory budget, idle
//! connections expired (with a fake clock: record timestamps and
//! [`Pipeline::sweep_at`]).

use super::*;
use crate::decode::limits::{CONN_OVERHEAD, IDLE_TIMEOUT_NS};
use serde_json::Value;

fn call(conn: u64, write: bool, ts_ns: u64, data: &[u8]) -> Record {
    Record::Call(CallRecord {
        facts: Default::default(),
        direction: if write {
            Direction::Write
        } else {
            Direction::Read
        },
        pid: 42,
        tid: 43,
        comm: "curl".into(),
        conn,
        ts_ns,
        len: data.len() as u32,
        data: data.to_vec(),
        truncated: false,
        lost_bytes: 0,
        sni: None,
    })
}

fn close(conn: u64, ts_ns: u64) -> Record {
    Record::Close {
        pid: 42,
        tid: 43,
        comm: "curl".into(),
        conn,
        ts_ns,
        sni: None,
        facts: Default::default(),
    }
}

/// A pipeline writing JSON to a file in `dir`.
fn pipeline(dir: &tempfile::TempDir, raw: bool) -> (Pipeline, std::path::PathBuf) {
    let out = dir.path().join("out.json");
    let o = Options {
        format: Format::Json,
        detail: 0,
        raw,
        write: Some(out.clone()),
        pcap: None,
        redact: Redact::new(&[]),
        db_query_text: Default::default(),
    };
    (Pipeline::new(&o).unwrap(), out)
}

fn records(p: &mut Pipeline, path: &std::path::Path) -> Vec<Value> {
    p.flush().unwrap();
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `--raw`: every call's bytes reach the writer with sensitive values
/// masked in place, also when a header line is cut between calls.
#[test]
fn raw_records_are_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, out) = pipeline(&dir, true);
    for r in [
        call(1, true, 1, b"GET / HTTP/1.1\r\nCoo"),
        call(
            1,
            true,
            2,
            b"kie: s=1\r\nAuthorization: Bearer x\r\nHost: h\r\n\r\n",
        ),
        call(1, false, 3, b"HTTP/1.1 200 OK\r\nSet-Cookie: a=b\r\n\r\n"),
        close(1, 4),
    ] {
        p.handle(&r).unwrap();
    }
    let data: Vec<String> = records(&mut p, &out)
        .iter()
        .filter(|r| r["type"] == "data")
        .map(|r| r["data"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        data,
        [
            "GET / HTTP/1.1\r\nCoo",
            "kie: ***\r\nAuthorization: ********\r\nHost: h\r\n\r\n",
            "HTTP/1.1 200 OK\r\nSet-Cookie: ***\r\n\r\n",
        ]
    );
    assert!(p.conns.is_empty(), "forgotten at the close");
}

/// `--raw`: database passwords are masked in the calls as captured
/// (Redis AUTH, PostgreSQL's PasswordMessage, a MySQL login), lengths
/// unchanged; other bytes as they were.
#[test]
fn raw_database_passwords_are_masked() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, out) = pipeline(&dir, true);
    let startup = b"\0\0\0\x10\0\x03\0\0user\0u\0\0";
    let mut login = vec![45, 0, 0, 2];
    login.extend((0x200u32 | 0x800 | 0x8000).to_le_bytes());
    login.extend([0, 0, 0, 1, 33]);
    login.extend([0; 23]);
    login.extend(b"root\0\x07pw-pw-7");
    for r in [
        call(
            1,
            true,
            1,
            b"*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$7\r\npw-pw-1\r\n",
        ),
        call(1, true, 2, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
        call(2, true, 3, startup),
        call(2, false, 4, b"R\0\0\0\x08\0\0\0\x03"),
        call(2, true, 5, b"p\0\0\0\x0cpw-pw-2\0"),
        call(3, true, 6, &login),
    ] {
        p.handle(&r).unwrap();
    }
    let data: Vec<Vec<u8>> = records(&mut p, &out)
        .iter()
        .filter(|r| r["type"] == "data")
        .map(|r| match r["encoding"].as_str() {
            Some("base64") => base64::engine::general_purpose::STANDARD
                .decode(r["data"].as_str().unwrap())
                .unwrap(),
            _ => r["data"].as_str().unwrap().as_bytes().to_vec(),
        })
        .collect();
    assert_eq!(data[0], b"*3\r\n$4\r\nAUTH\r\n$1\r\n*\r\n$7\r\n*******\r\n");
    assert_eq!(data[1], b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    assert_eq!(data[4], b"p\0\0\0\x0c********");
    assert_eq!(&data[5][..36], &login[..36]);
    assert_eq!(data[5][36..], [b'*'; 13]);
    assert_eq!(data[5].len(), login.len());
}

/// A connection with one request waiting for its response.
fn waiting(p: &mut Pipeline, conn: u64, ts_ns: u64) {
    let req = format!("GET /{conn} HTTP/1.1\r\nHost: h{conn}\r\n\r\n");
    p.handle(&call(conn, true, ts_ns, req.as_bytes())).unwrap();
}

fn notices_of(recs: &[Value], conn: u64) -> Vec<String> {
    recs.iter()
        .filter(|r| r["type"] == "notice" && r["conn"] == format!("{conn:#x}"))
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect()
}

/// Past the total budget, the least recently active connection is
/// flushed (its open exchange shown), with a notice, and forgotten.
#[test]
fn the_least_recently_active_connection_is_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, out) = pipeline(&dir, false);
    waiting(&mut p, 1, 10);
    let one = p.memory;
    assert_eq!(one, p.conns[&(42, 1)].memory);
    assert!(one > CONN_OVERHEAD);
    // room for three such connections (the first gets a second request)
    let limit = 3 * one + 200;
    p.total_memory = limit;
    p.total_low = limit;
    waiting(&mut p, 2, 20);
    waiting(&mut p, 3, 30);
    // 1 is active again: 2 is now the least recently active
    p.handle(&call(1, true, 40, b"GET /1b HTTP/1.1\r\nHost: h1\r\n\r\n"))
        .unwrap();
    let two = p.memory;
    waiting(&mut p, 4, 50);
    let mut left: Vec<u64> = p.conns.keys().map(|k| k.1).collect();
    left.sort_unstable();
    assert_eq!(left, [1, 3, 4]);
    assert_eq!(p.stats(), (1, 0));
    assert!(two > 3 * one && two <= limit);
    assert_eq!(p.memory, two);
    let recs = records(&mut p, &out);
    let flushed: Vec<&Value> = recs
        .iter()
        .filter(|r| r["type"] == "http" && r["conn"] == "0x2")
        .collect();
    assert_eq!(flushed.len(), 1);
    assert_eq!(flushed[0]["path"], "/2");
    assert_eq!(flushed[0]["response"], Value::Null);
    assert_eq!(
        notices_of(&recs, 2),
        [format!(
            "the decoding state of all connections reached {} bytes (limit {}): this \
             connection, the least recently active, is flushed and forgotten (1 connection \
             evicted so far); later data starts afresh",
            two + one,
            limit
        )]
    );
    assert!(recs
        .iter()
        .all(|r| r["conn"] != "0x1" || r["type"] != "notice"));
    // later data on the evicted connection starts afresh
    p.handle(&call(
        2,
        false,
        60,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    ))
    .unwrap();
    assert!(p.conns.contains_key(&(42, 2)));
}

/// Connections without data for `IDLE_TIMEOUT_NS` are flushed and
/// forgotten at the next sweep (their close may never come).
#[test]
fn idle_connections_expire() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, out) = pipeline(&dir, false);
    let s = 1_000_000_000u64;
    waiting(&mut p, 1, 100 * s);
    waiting(&mut p, 2, 200 * s);
    p.sweep_at(100 * s + IDLE_TIMEOUT_NS).unwrap();
    assert_eq!(p.conns.len(), 2, "not idle for longer than the timeout yet");
    p.sweep_at(100 * s + IDLE_TIMEOUT_NS + 1).unwrap();
    assert_eq!(p.conns.keys().map(|k| k.1).collect::<Vec<_>>(), [2]);
    assert_eq!(p.stats(), (0, 1));
    let recs = records(&mut p, &out);
    assert_eq!(
        notices_of(&recs, 1),
        [
            "no data for 300 s (the close was not seen): the connection is flushed and \
          forgotten (1 connection expired so far); later data starts afresh"
        ]
    );
    assert!(recs
        .iter()
        .any(|r| r["type"] == "http" && r["conn"] == "0x1" && r["path"] == "/1"));
    let before = p.memory;
    p.sweep_at(200 * s + IDLE_TIMEOUT_NS + 1).unwrap();
    assert!(p.conns.is_empty());
    assert_eq!(p.memory, 0);
    assert!(before > 0);
    assert_eq!(p.stats(), (0, 2));
}
