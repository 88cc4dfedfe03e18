//! The MySQL client/server protocol (MySQL, MariaDB) from both directions
//! of a connection, as seen inside TLS: the client's login packet first
//! (the server's greeting and the client's SSL request went before TLS, in
//! the clear), the authentication exchange, then commands.
//!
//! - `COM_QUERY`: a record answered by an OK packet (affected rows), an
//!   ERR packet (error number, SQLSTATE, message) or a result set (rows
//!   counted; several result sets add up);
//! - `COM_STMT_PREPARE` remembers the statement's text by the id the
//!   server gives it (bounded: `limits::DB_STATEMENTS`; a failed prepare
//!   is a record), `COM_STMT_EXECUTE` is a record with that text,
//!   `COM_STMT_CLOSE` forgets it;
//! - payloads of 16 MiB and more (packets of 0xffffff bytes and their
//!   continuations) are joined, keeping `limits::DB_MESSAGE_KEEP` bytes;
//! - secrets: the login packet past its fixed fields, every client packet
//!   of the authentication exchange and `COM_CHANGE_USER` are masked on the
//!   wire and never decoded.
//!
//! Lost bytes end decoding (packet boundaries are gone): the rest of the
//! connection is shown raw.

use std::collections::VecDeque;

use super::db::{
    name_of, statements_notice, text_of, DbDecoder, DbError, DbOut, DbQuery, DbStatus, DbSystem,
    Frame, Framer, Head, QueryText, Statements,
};
use super::limits::{DB_MESSAGE_KEEP, DB_PENDING};
use super::Peer;

const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_SSL: u32 = 0x800;
const CLIENT_DEPRECATE_EOF: u32 = 1 << 24;
const CLIENT_QUERY_ATTRIBUTES: u32 = 1 << 27;
/// MariaDB's extended capability (the last 4 filler bytes of the login
/// packet): an execution's column count is followed by a byte saying
/// whether the column definitions follow (0: the client has them cached).
const MARIADB_CLIENT_CACHE_METADATA: u32 = 1 << 4;
const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;
/// A packet of this length continues in the next.
const MAX_PACKET: u64 = 0xff_ffff;

const COM_QUIT: u8 = 0x01;
const COM_INIT_DB: u8 = 0x02;
const COM_QUERY: u8 = 0x03;
const COM_CHANGE_USER: u8 = 0x11;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;
const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
const COM_STMT_CLOSE: u8 = 0x19;

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The client's login packet comes next.
    Login,
    /// Authentication (switches, more data) until the server's OK or ERR.
    Auth,
    Command,
}

/// What a waiting command expects from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// OK, ERR or a result set (COM_QUERY, COM_STMT_EXECUTE).
    Results,
    /// COM_STMT_PREPARE's answer.
    Prepare,
    /// One OK, ERR or EOF packet (shown only if it is an error).
    One,
}

/// Where the answer to the first waiting command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Start,
    /// Column definitions still to come, then an EOF if `eof`.
    Columns {
        left: u64,
        eof: bool,
    },
    Rows,
    /// Definitions (and EOFs) of a prepared statement still to come.
    Skip(u64),
}

#[derive(Debug)]
struct Waiting {
    q: DbQuery,
    expect: Expect,
    /// The text of a statement being prepared.
    text: Option<(String, bool)>,
    /// Rows so far (all result sets).
    rows: u64,
    /// COM_STMT_EXECUTE (binary result sets).
    binary: bool,
    /// Shown (not a silent command's answer).
    shown: bool,
}

/// Decoder of one MySQL connection.
#[derive(Debug)]
pub struct MysqlConn {
    mode: QueryText,
    framers: [Framer; 2],
    /// A payload of several packets being joined, per direction.
    joining: [Option<Frame>; 2],
    phase: Phase,
    /// The capabilities the client asked for.
    caps: u32,
    /// MariaDB's extended capabilities (0 for MySQL clients).
    ext_caps: u32,
    /// The default database (login packet, COM_INIT_DB).
    database: Option<String>,
    statements: Statements<u32>,
    pending: VecDeque<Waiting>,
    reading: Reading,
    dropped: u64,
    /// Limits reached (statements forgotten, commands shown unanswered).
    pub notices: Vec<String>,
}

impl MysqlConn {
    /// A connection from the client's login packet on.
    pub fn new(mode: QueryText) -> MysqlConn {
        MysqlConn {
            mode,
            framers: [Framer::new(Head::Mysql), Framer::new(Head::Mysql)],
            joining: [None, None],
            phase: Phase::Login,
            caps: 0,
            ext_caps: 0,
            database: None,
            statements: Statements::default(),
            pending: VecDeque::new(),
            reading: Reading::Start,
            dropped: 0,
            notices: Vec::new(),
        }
    }

    /// Bytes held (partial packets, statements, commands waiting).
    pub fn memory(&self) -> usize {
        self.framers.iter().map(Framer::memory).sum::<usize>()
            + self
                .joining
                .iter()
                .flatten()
                .map(|f| f.body.capacity())
                .sum::<usize>()
            + self.statements.memory()
            + self
                .pending
                .iter()
                .map(|w| w.q.size() as usize)
                .sum::<usize>()
    }

    /// The connection ended: what waits is shown unanswered.
    pub fn finish(&mut self) -> Vec<DbQuery> {
        self.pending
            .drain(..)
            .filter(|w| w.shown)
            .map(|w| w.q)
            .collect()
    }
}

impl DbDecoder for MysqlConn {
    /// [`DbDecoder::push`] into `out`, `rest` advanced past what was taken.
    fn push_into(
        &mut self,
        peer: Peer,
        rest: &mut &[u8],
        ts: u64,
        out: &mut DbOut,
    ) -> Result<(), DbError> {
        let ok = |_: &[u8]| Ok(());
        loop {
            let s = peer.index();
            // what is masked depends on the phase, which a packet may change
            let phase = self.phase;
            let mask = move |h: &[u8], first: u8| match peer {
                Peer::Client => client_clear(phase, h, first),
                Peer::Server => u64::MAX,
            };
            let Some(f) = self.framers[s].next(rest, ts, &mut out.wire, &mask, &ok)? else {
                return Ok(());
            };
            let Some(p) = self.join(s, f) else { continue };
            match peer {
                Peer::Client => self.client_packet(&p, out),
                Peer::Server => self.server_packet(&p, out),
            }
        }
    }
}

impl MysqlConn {
    /// A packet of a payload: the whole payload once its last packet came.
    fn join(&mut self, s: usize, f: Frame) -> Option<Frame> {
        let continued = f.len == MAX_PACKET;
        let whole = match self.joining[s].take() {
            Some(mut p) => {
                let room = DB_MESSAGE_KEEP.saturating_sub(p.body.len());
                p.body.extend_from_slice(&f.body[..f.body.len().min(room)]);
                p.len += f.len;
                p.ts_last = f.ts_last;
                p
            }
            None => f,
        };
        if continued {
            self.joining[s] = Some(whole);
            None
        } else {
            Some(whole)
        }
    }

    fn client_packet(&mut self, f: &Frame, out: &mut DbOut) {
        match self.phase {
            Phase::Login => {
                let le = |r: std::ops::Range<usize>| {
                    f.body
                        .get(r)
                        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                };
                self.caps = le(0..4);
                // CLIENT_MYSQL (bit 0) unset: a MariaDB client
                if self.caps & 1 == 0 {
                    self.ext_caps = le(28..32);
                }
                self.database = login_database(&f.body, self.caps);
                self.phase = Phase::Auth;
            }
            Phase::Auth => {}
            Phase::Command => {
                if f.head[3] == 0 {
                    self.command(f, out);
                }
            }
        }
    }

    /// A client packet that starts a command (sequence id 0).
    fn command(&mut self, f: &Frame, out: &mut DbOut) {
        let Some((&cmd, body)) = f.body.split_first() else {
            return;
        };
        let cut = f.cut();
        if cmd == COM_INIT_DB {
            self.database = name_of(body);
        }
        let mut q = DbQuery::new(DbSystem::Mysql, f.ts_first);
        q.namespace = self.database.clone();
        let (expect, text) = match cmd {
            COM_QUERY => {
                let text = query_text(body, self.caps);
                q.set_sql(&text_of(text), cut, self.mode, true);
                (Expect::Results, None)
            }
            COM_STMT_PREPARE => (Expect::Prepare, Some((text_of(body), cut))),
            COM_STMT_EXECUTE => {
                let id = body
                    .get(..4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                if let Some(t) = id.and_then(|id| self.statements.get(&id)).cloned() {
                    q.set_sql(&t, false, self.mode, true);
                }
                (Expect::Results, None)
            }
            COM_STMT_CLOSE => {
                if let Some(b) = body.get(..4) {
                    self.statements
                        .remove(&u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                }
                return;
            }
            COM_STMT_SEND_LONG_DATA | COM_QUIT => return,
            COM_CHANGE_USER => {
                self.phase = Phase::Auth;
                return;
            }
            _ => {
                q.operation = Some(command_name(cmd));
                (Expect::One, None)
            }
        };
        let shown = expect == Expect::Results;
        let binary = cmd == COM_STMT_EXECUTE;
        self.queue(
            Waiting {
                q,
                expect,
                text,
                rows: 0,
                binary,
                shown,
            },
            out,
        );
    }

    fn queue(&mut self, w: Waiting, out: &mut DbOut) {
        if self.pending.len() >= DB_PENDING {
            if let Some(old) = self.pending.pop_front() {
                if old.shown {
                    out.queries.push(old.q);
                }
            }
            self.reading = Reading::Start;
            self.dropped += 1;
            if self.dropped == 1 {
                self.notices.push(format!(
                    "more than {DB_PENDING} MySQL commands wait for their answer: the oldest \
                     are shown unanswered"
                ));
            }
        }
        self.pending.push_back(w);
    }

    fn server_packet(&mut self, f: &Frame, out: &mut DbOut) {
        let first = f.body.first().copied();
        match self.phase {
            Phase::Login => {}
            Phase::Auth => match first {
                Some(0x00) => self.phase = Phase::Command,
                Some(0xff) => {
                    let mut q = DbQuery::new(DbSystem::Mysql, f.ts_first);
                    fail(&mut q, &f.body, f.ts_last);
                    out.queries.push(q);
                    self.phase = Phase::Login;
                }
                _ => {}
            },
            Phase::Command => self.answer(f, out),
        }
    }

    /// A packet of the answer to the first waiting command.
    fn answer(&mut self, f: &Frame, out: &mut DbOut) {
        let Some(w) = self.pending.front_mut() else {
            return;
        };
        let deprecate_eof = self.caps & CLIENT_DEPRECATE_EOF != 0;
        let b = &f.body;
        let first = b.first().copied().unwrap_or(0);
        let end_of_rows = first == 0xfe && f.len < MAX_PACKET;
        let done = match (self.reading, w.expect) {
            (_, _)
                if first == 0xff
                    && !matches!(self.reading, Reading::Skip(_) | Reading::Columns { .. }) =>
            {
                fail(&mut w.q, b, f.ts_last);
                w.shown = true;
                true
            }
            (Reading::Start, Expect::One) => true,
            (Reading::Start, Expect::Prepare) => {
                let (id, cols, params) = prepare_ok(b);
                let eof = u64::from(!deprecate_eof);
                let defs = |n: u64| if n > 0 { n + eof } else { 0 };
                if let (Some(id), Some((text, _))) = (id, w.text.take()) {
                    if self.statements.insert(id, text) {
                        self.notices.push(statements_notice());
                    }
                }
                let skip = defs(cols) + defs(params);
                if skip > 0 {
                    self.reading = Reading::Skip(skip);
                    false
                } else {
                    true
                }
            }
            (Reading::Start, Expect::Results) => {
                if first == 0x00 {
                    let (rows, status) = ok_packet(b);
                    w.rows += rows;
                    status & SERVER_MORE_RESULTS_EXISTS == 0
                } else if first == 0xfb {
                    false // LOCAL INFILE: the client sends the file, then OK
                } else {
                    let (n, used) = lenenc(b).unwrap_or((0, 1));
                    let cached = w.binary
                        && self.ext_caps & MARIADB_CLIENT_CACHE_METADATA != 0
                        && b.get(used) == Some(&0);
                    let left = if cached { 0 } else { n };
                    self.reading = if left == 0 && deprecate_eof {
                        Reading::Rows
                    } else {
                        Reading::Columns {
                            left,
                            eof: !deprecate_eof,
                        }
                    };
                    false
                }
            }
            (Reading::Columns { left, eof }, _) => {
                self.reading = match (left, eof) {
                    (0 | 1, false) => Reading::Rows,
                    (0, true) => Reading::Rows, // the EOF after them
                    (1, true) => Reading::Columns { left: 0, eof: true },
                    (n, e) => Reading::Columns {
                        left: n - 1,
                        eof: e,
                    },
                };
                false
            }
            (Reading::Rows, _) if end_of_rows => {
                let status = if deprecate_eof {
                    ok_packet(b).1
                } else {
                    b.get(3..5).map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
                };
                self.reading = Reading::Start;
                status & SERVER_MORE_RESULTS_EXISTS == 0
            }
            (Reading::Rows, _) => {
                w.rows += 1;
                false
            }
            (Reading::Skip(n), _) => {
                self.reading = Reading::Skip(n - 1);
                n <= 1
            }
        };
        if !done {
            return;
        }
        self.reading = Reading::Start;
        let Some(mut w) = self.pending.pop_front() else {
            return;
        };
        if w.q.status.is_none() {
            w.q.rows = Some(w.rows);
            w.q.answer(DbStatus::Ok, f.ts_last);
        }
        if w.q.status == Some(DbStatus::Error) {
            if let Some((text, cut)) = w.text.take() {
                w.q.set_sql(&text, cut, self.mode, true);
            }
        }
        if w.shown {
            out.queries.push(w.q);
        }
    }
}

/// The database a login packet names (CLIENT_CONNECT_WITH_DB): after the
/// fixed fields, the user name and the auth response.
fn login_database(b: &[u8], caps: u32) -> Option<String> {
    const CONNECT_WITH_DB: u32 = 0x8;
    const SECURE_CONNECTION: u32 = 0x8000;
    const AUTH_LENENC: u32 = 0x20_0000;
    if caps & CONNECT_WITH_DB == 0 {
        return None;
    }
    let rest = b.get(32..)?;
    let user_end = rest.iter().position(|&c| c == 0)?;
    let rest = &rest[user_end + 1..];
    let rest = if caps & AUTH_LENENC != 0 {
        let (n, used) = lenenc(rest)?;
        rest.get(used + usize::try_from(n).ok()?..)?
    } else if caps & SECURE_CONNECTION != 0 {
        let n = usize::from(*rest.first()?);
        rest.get(1 + n..)?
    } else {
        let end = rest.iter().position(|&c| c == 0)?;
        &rest[end + 1..]
    };
    let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
    name_of(&rest[..end])
}

/// How much of a client packet's payload shows on the wire (the rest is
/// masked): the login packet's fixed fields (capabilities, sizes,
/// character set, filler), nothing of an authentication packet, the
/// command byte of COM_CHANGE_USER; everything else.
fn client_clear(phase: Phase, h: &[u8], first: u8) -> u64 {
    match phase {
        Phase::Login => 32,
        Phase::Auth => 0,
        Phase::Command if h[3] == 0 && first == COM_CHANGE_USER => 1,
        Phase::Command => u64::MAX,
    }
}

/// The query of a COM_QUERY payload: after the query attributes when the
/// client announced them (a count of 0 parameters and 1 set; with
/// parameters, the text cannot be found without their types: empty).
fn query_text(body: &[u8], caps: u32) -> &[u8] {
    if caps & CLIENT_QUERY_ATTRIBUTES == 0 {
        return body;
    }
    match lenenc(body) {
        Some((0, n)) => match lenenc(&body[n..]) {
            Some((_, m)) => &body[n + m..],
            None => &[],
        },
        _ => &[],
    }
}

/// A length-encoded integer: its value and size.
pub fn lenenc(b: &[u8]) -> Option<(u64, usize)> {
    let le = |s: &[u8]| s.iter().rev().fold(0u64, |a, &x| a << 8 | u64::from(x));
    match *b.first()? {
        n @ 0..=0xfa => Some((u64::from(n), 1)),
        0xfc => Some((le(b.get(1..3)?), 3)),
        0xfd => Some((le(b.get(1..4)?), 4)),
        0xfe => Some((le(b.get(1..9)?), 9)),
        _ => None,
    }
}

/// An OK packet (or the 0xfe one ending rows): affected rows, status.
fn ok_packet(b: &[u8]) -> (u64, u16) {
    let Some((rows, n)) = b.get(1..).and_then(lenenc) else {
        return (0, 0);
    };
    let Some((_, m)) = b.get(1 + n..).and_then(lenenc) else {
        return (rows, 0);
    };
    let at = 1 + n + m;
    let status = b
        .get(at..at + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]));
    (rows, status)
}

/// COM_STMT_PREPARE's OK: statement id, columns, parameters.
fn prepare_ok(b: &[u8]) -> (Option<u32>, u64, u64) {
    if b.len() < 9 || b[0] != 0 {
        return (None, 0, 0);
    }
    let id = u32::from_le_bytes([b[1], b[2], b[3], b[4]]);
    let cols = u16::from_le_bytes([b[5], b[6]]);
    let params = u16::from_le_bytes([b[7], b[8]]);
    (Some(id), u64::from(cols), u64::from(params))
}

/// An ERR packet: error number, SQLSTATE, message.
fn fail(q: &mut DbQuery, b: &[u8], ts: u64) {
    let code = b.get(1..3).map(|c| u16::from_le_bytes([c[0], c[1]]));
    let rest = b.get(3..).unwrap_or_default();
    let (state, msg) = match rest.split_first() {
        Some((b'#', r)) if r.len() >= 5 => (Some(text_of(&r[..5])), &r[5..]),
        _ => (None, rest),
    };
    q.error_code = code.map(|c| c.to_string());
    q.sqlstate = state;
    q.error = Some(text_of(msg));
    q.answer(DbStatus::Error, ts);
}

/// The name of a command shown only when it fails.
fn command_name(cmd: u8) -> String {
    match cmd {
        0x02 => "USE".into(),
        0x0e => "PING".into(),
        0x1a => "STMT_RESET".into(),
        0x1f => "RESET_CONNECTION".into(),
        0x1b => "SET_OPTION".into(),
        c => format!("COMMAND_0x{c:02x}"),
    }
}

/// Whether `data` (a direction's first bytes) is, or may become, a
/// client's login packet after TLS started (protocol 4.1, SSL asked for,
/// the filler zero but for MariaDB's capabilities): Some(true) it is, Some(false) it is not, None wait.
pub fn login(data: &[u8]) -> Option<bool> {
    let plausible_head =
        |d: &[u8]| (d.len() < 3 || d[2] == 0) && (d.len() < 4 || matches!(d[3], 1 | 2));
    if !plausible_head(data) {
        return Some(false);
    }
    if data.len() < 36 {
        return None;
    }
    let len = u32::from_le_bytes([data[0], data[1], data[2], 0]);
    let caps = u32::from_le_bytes([data[4], data[5], data[6], data[7]]);
    // 23 filler bytes; MariaDB puts its extended capabilities in the
    // last 4
    let filler = &data[4 + 9..4 + 28];
    Some(
        len >= 32
            && caps & CLIENT_PROTOCOL_41 != 0
            && caps & CLIENT_SSL != 0
            && filler.iter().all(|&b| b == 0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u8, body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_le_bytes()[..3].to_vec();
        v.push(seq);
        v.extend_from_slice(body);
        v
    }

    fn login_pkt(deprecate_eof: bool) -> Vec<u8> {
        let mut caps = CLIENT_PROTOCOL_41 | CLIENT_SSL | 0x8000 | 0x80000 | 0x8;
        if deprecate_eof {
            caps |= CLIENT_DEPRECATE_EOF;
        }
        let mut b = caps.to_le_bytes().to_vec();
        b.extend([0, 0, 0, 1, 33]);
        b.extend([0; 23]);
        b.extend(b"root\0");
        b.extend([5]);
        b.extend(b"s3crt");
        b.extend(b"d\0mysql_native_password\0");
        pkt(2, &b)
    }

    fn run(c: &mut MysqlConn, p: Peer, d: &[u8], ts: u64) -> DbOut {
        c.push(p, d, ts).expect("decodes")
    }

    fn ok(seq: u8, rows: u8, status: u16) -> Vec<u8> {
        let mut b = vec![0, rows, 0];
        b.extend(status.to_le_bytes());
        b.extend([0, 0]);
        pkt(seq, &b)
    }

    fn eof(seq: u8, status: u16) -> Vec<u8> {
        let mut b = vec![0xfe, 0, 0];
        b.extend(status.to_le_bytes());
        pkt(seq, &b)
    }

    fn logged_in(deprecate_eof: bool) -> MysqlConn {
        let mut c = MysqlConn::new(QueryText::Full);
        let l = login_pkt(deprecate_eof);
        assert_eq!(login(&l), Some(true));
        assert_eq!(login(&l[..10]), None);
        assert_eq!(login(b"GET / HTTP/1.1\r\n"), Some(false));
        let o = run(&mut c, Peer::Client, &l, 1);
        assert!(!o.wire.windows(5).any(|w| w == b"s3crt"));
        // an auth switch, the client's answer, OK
        run(
            &mut c,
            Peer::Server,
            &pkt(3, b"\xfemysql_native_password\0salt"),
            2,
        );
        let o = run(&mut c, Peer::Client, &pkt(4, b"hunter2hunter2hunter"), 3);
        assert_eq!(&o.wire[4..], b"********************");
        run(&mut c, Peer::Server, &ok(5, 0, 2), 4);
        c
    }

    #[test]
    fn query_result_set_and_error() {
        let mut c = logged_in(false);
        let mut q = vec![COM_QUERY];
        q.extend(b"SELECT 'marker', 1");
        run(&mut c, Peer::Client, &pkt(0, &q), 10);
        let mut r = pkt(1, &[2]);
        r.extend(pkt(2, b"coldef1"));
        r.extend(pkt(3, b"coldef2"));
        r.extend(eof(4, 2));
        r.extend(pkt(5, b"\x06marker\x011"));
        r.extend(pkt(6, b"\x06marker\x012"));
        r.extend(eof(7, 2));
        let o = run(&mut c, Peer::Server, &r, 12);
        let x = &o.queries[0];
        assert_eq!(x.namespace.as_deref(), Some("d"));
        assert_eq!(x.query.as_deref(), Some("SELECT 'marker', 1"));
        assert_eq!((x.operation.as_deref(), x.rows), (Some("SELECT"), Some(2)));
        assert_eq!(x.latency_ns(), Some(2));
        let mut q = vec![COM_QUERY];
        q.extend(b"SELECT * FROM nope");
        run(&mut c, Peer::Client, &pkt(0, &q), 13);
        let o = run(
            &mut c,
            Peer::Server,
            &pkt(1, b"\xff\x7a\x04#42S02Table 'd.nope' doesn't exist"),
            14,
        );
        let x = &o.queries[0];
        assert_eq!(
            (
                x.error_code.as_deref(),
                x.sqlstate.as_deref(),
                x.error.as_deref()
            ),
            (
                Some("1146"),
                Some("42S02"),
                Some("Table 'd.nope' doesn't exist")
            )
        );
    }

    #[test]
    fn prepared_statements_and_ok_packets() {
        let mut c = logged_in(true);
        let mut p = vec![COM_STMT_PREPARE];
        p.extend(b"INSERT INTO t VALUES (?)");
        run(&mut c, Peer::Client, &pkt(0, &p), 1);
        // id 7, 0 columns, 1 parameter: one definition, no EOF
        let mut r = pkt(1, &[0, 7, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        r.extend(pkt(2, b"paramdef"));
        let o = run(&mut c, Peer::Server, &r, 2);
        assert!(o.queries.is_empty());
        let mut e = vec![COM_STMT_EXECUTE, 7, 0, 0, 0, 0, 1, 0, 0, 0];
        e.extend([0, 1, 3, 0, 5, 0, 0, 0]);
        run(&mut c, Peer::Client, &pkt(0, &e), 3);
        let o = run(&mut c, Peer::Server, &ok(1, 1, 2), 4);
        let x = &o.queries[0];
        assert_eq!(x.query.as_deref(), Some("INSERT INTO t VALUES (?)"));
        assert_eq!((x.operation.as_deref(), x.rows), (Some("INSERT"), Some(1)));
        // a result set ended by an OK packet (deprecate EOF)
        let mut q = vec![COM_QUERY];
        q.extend(b"select 1");
        run(&mut c, Peer::Client, &pkt(0, &q), 5);
        let mut r = pkt(1, &[1]);
        r.extend(pkt(2, b"coldef"));
        r.extend(pkt(3, b"\x011"));
        r.extend(pkt(4, &[0xfe, 0, 0, 2, 0, 0, 0]));
        let o = run(&mut c, Peer::Server, &r, 6);
        assert_eq!(o.queries[0].rows, Some(1));
    }

    /// MariaDB clients caching column definitions: an execution's column
    /// count says whether they follow.
    #[test]
    fn mariadb_cached_metadata() {
        let mut c = MysqlConn::new(QueryText::Full);
        let mut l = login_pkt(false);
        l[4] &= !1; // no CLIENT_MYSQL: MariaDB
        l[4 + 28] = MARIADB_CLIENT_CACHE_METADATA as u8;
        assert_eq!(login(&l), Some(true));
        run(&mut c, Peer::Client, &l, 1);
        run(&mut c, Peer::Server, &ok(2, 0, 2), 2);
        let mut p = vec![COM_STMT_PREPARE];
        p.extend(b"SELECT a FROM t");
        run(&mut c, Peer::Client, &pkt(0, &p), 3);
        let mut r = pkt(1, &[0, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        r.extend(pkt(2, b"coldef"));
        r.extend(eof(3, 2));
        run(&mut c, Peer::Server, &r, 4);
        let exec = pkt(0, &[COM_STMT_EXECUTE, 9, 0, 0, 0, 0, 1, 0, 0, 0]);
        for (ts, follows) in [(5, 1u8), (7, 0)] {
            run(&mut c, Peer::Client, &exec, ts);
            let mut r = pkt(1, &[1, follows]);
            let mut seq = 2;
            if follows == 1 {
                r.extend(pkt(seq, b"coldef"));
                seq += 1;
            }
            r.extend(eof(seq, 2));
            r.extend(pkt(seq + 1, &[0, 0, 1, 0, 0, 0]));
            r.extend(eof(seq + 2, 2));
            let o = run(&mut c, Peer::Server, &r, ts + 1);
            assert_eq!(o.queries.len(), 1);
            assert_eq!(o.queries[0].rows, Some(1));
            assert_eq!(o.queries[0].query.as_deref(), Some("SELECT a FROM t"));
        }
    }

    #[test]
    fn payloads_over_16_mib_are_joined() {
        let mut c = logged_in(false);
        let text = format!("SELECT '{}'", "a".repeat(MAX_PACKET as usize));
        let mut payload = vec![COM_QUERY];
        payload.extend(text.as_bytes());
        let (a, b) = payload.split_at(MAX_PACKET as usize);
        let mut bytes = pkt(0, a);
        bytes.extend(pkt(1, b));
        let mut wire = 0;
        for chunk in bytes.chunks(1 << 20) {
            wire += run(&mut c, Peer::Client, chunk, 1).wire.len();
        }
        assert_eq!(wire, bytes.len());
        assert!(c.memory() < 2 * DB_MESSAGE_KEEP);
        let o = run(&mut c, Peer::Server, &ok(2, 0, 2), 2);
        let x = &o.queries[0];
        assert!(x.query_truncated);
        assert_eq!(x.operation.as_deref(), Some("SELECT"));
        assert_eq!(x.query.as_ref().map(String::len), Some(DB_MESSAGE_KEEP - 1));
    }
}
