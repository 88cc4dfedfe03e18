//! PostgreSQL's frontend/backend protocol (version 3) from both directions
//! of a connection, as seen inside TLS: the client's StartupMessage first
//! (the SSLRequest went before TLS, in the clear), then typed messages.
//!
//! - simple queries (`Q`): one record each, answered at `ReadyForQuery`;
//!   several statements in one query make one record (the first
//!   `CommandComplete` names the operation, rows add up);
//! - the extended protocol: `Parse` remembers a statement's text by name
//!   (bounded: `limits::DB_STATEMENTS`), `Bind` ties a portal to it, each
//!   `Execute` is a record answered by its `CommandComplete` (or
//!   `EmptyQueryResponse`, `PortalSuspended`, `ErrorResponse`); after an
//!   error the server skips to `Sync`, and so do the records (skipped
//!   executions are not shown). Batches may be pipelined: answers are
//!   matched in order;
//! - COPY in and out: the query's record is answered by `COPY n`;
//! - `ErrorResponse`: SQLSTATE (`C`) and message (`M`);
//! - secrets: `PasswordMessage` (also SASL and GSS responses, type `p`) is
//!   masked on the wire and never decoded.
//!
//! A message with an unknown type is not PostgreSQL: decoding stops (the
//! rest of the connection is shown raw). Lost bytes do the same: message
//! boundaries are gone.

use std::collections::VecDeque;

use super::db::{
    name_of, statements_notice, text_of, DbDecoder, DbError, DbOut, DbQuery, DbStatus, DbSystem,
    Frame, Framer, Head, QueryText, Statements,
};
use super::limits::DB_PENDING;
use super::Peer;

/// The protocol version of a StartupMessage (3.0).
pub const PROTOCOL_3: u32 = 196_608;

/// Types of messages a client sends after the start-up.
const CLIENT_TYPES: &[u8] = b"QPBESHCDpXdcfF";
/// Types of messages a server sends.
const SERVER_TYPES: &[u8] = b"RSKZ123TDCEINnstGHWdcAVv";

/// Portals remembered (nearly always the unnamed one).
const PORTALS: usize = 64;

#[derive(Debug)]
enum Pending {
    /// A simple query: answered at ReadyForQuery.
    Simple {
        q: DbQuery,
        tagged: bool,
        data_rows: u64,
    },
    /// An Execute: answered by its CommandComplete.
    Execute { q: DbQuery, data_rows: u64 },
    /// A Sync: the server's ReadyForQuery ends the batch.
    Sync,
}

/// Decoder of one PostgreSQL connection.
#[derive(Debug)]
pub struct PgConn {
    mode: QueryText,
    client: Framer,
    server: Framer,
    statements: Statements<String>,
    /// Portal name -> statement name.
    portals: Vec<(String, String)>,
    pending: VecDeque<Pending>,
    /// The text of the last Parse (an error at Parse has no Execute).
    last_parse: Option<(String, bool, u64)>,
    /// Executes are being skipped to the next Sync (after an error).
    skipping: bool,
    pending_dropped: u64,
    /// The database (StartupMessage's `database`, else its `user`).
    database: Option<String>,
    /// Limits reached (statements forgotten, commands shown unanswered).
    pub notices: Vec<String>,
}

impl PgConn {
    /// A connection from its StartupMessage on.
    pub fn new(mode: QueryText) -> PgConn {
        let mut c = PgConn::midstream(mode);
        c.client = Framer::new(Head::PgUntyped);
        c
    }

    /// A connection picked up after its start-up (typed messages only).
    pub fn midstream(mode: QueryText) -> PgConn {
        PgConn {
            mode,
            client: Framer::new(Head::PgTyped),
            server: Framer::new(Head::PgTyped),
            statements: Statements::default(),
            portals: Vec::new(),
            pending: VecDeque::new(),
            last_parse: None,
            skipping: false,
            pending_dropped: 0,
            database: None,
            notices: Vec::new(),
        }
    }

    /// Bytes held.
    pub fn memory(&self) -> usize {
        let pending: usize = self
            .pending
            .iter()
            .map(|p| match p {
                Pending::Simple { q, .. } | Pending::Execute { q, .. } => q.size() as usize,
                Pending::Sync => 16,
            })
            .sum();
        self.client.memory() + self.server.memory() + self.statements.memory() + pending
    }
}

impl DbDecoder for PgConn {
    /// [`DbDecoder::push`] into `out`, `rest` advanced past what was taken
    /// (on an error: the bytes from the one that failed).
    fn push_into(
        &mut self,
        peer: Peer,
        rest: &mut &[u8],
        ts: u64,
        out: &mut DbOut,
    ) -> Result<(), DbError> {
        loop {
            let frame = match peer {
                Peer::Client => {
                    let untyped = self.client.head_kind == Head::PgUntyped;
                    let check = move |h: &[u8]| check_type(h, untyped, CLIENT_TYPES, "client");
                    self.client
                        .next(rest, ts, &mut out.wire, &is_secret, &check)?
                }
                Peer::Server => {
                    let check = |h: &[u8]| check_type(h, false, SERVER_TYPES, "server");
                    self.server
                        .next(rest, ts, &mut out.wire, &|_, _| u64::MAX, &check)?
                }
            };
            let Some(f) = frame else { return Ok(()) };
            match peer {
                Peer::Client => self.client_message(&f, out),
                Peer::Server => self.server_message(&f, out),
            }
        }
    }
}

impl PgConn {
    /// The connection ended: what waits is shown unanswered.
    pub fn finish(&mut self) -> Vec<DbQuery> {
        self.pending
            .drain(..)
            .filter_map(|p| match p {
                Pending::Simple { q, .. } | Pending::Execute { q, .. } => Some(q),
                Pending::Sync => None,
            })
            .collect()
    }

    fn client_message(&mut self, f: &Frame, out: &mut DbOut) {
        if self.client.head_kind == Head::PgUntyped {
            // StartupMessage (or another untyped request): typed from here.
            self.client.head_kind = Head::PgTyped;
            self.database = startup_database(f.body.get(4..).unwrap_or_default());
            return;
        }
        let mut fields = f.body.split(|&b| b == 0);
        let mut next = || fields.next().map(text_of).unwrap_or_default();
        match f.head[0] {
            b'Q' => {
                let mut q = self.query(f.ts_first);
                q.set_sql(&next(), f.cut(), self.mode, false);
                self.queue(
                    Pending::Simple {
                        q,
                        tagged: false,
                        data_rows: 0,
                    },
                    out,
                );
            }
            b'P' => {
                let (name, text) = (next(), next());
                let cut = f.cut();
                if self.statements.insert(name, text.clone()) {
                    self.notices.push(statements_notice());
                }
                self.last_parse = Some((text, cut, f.ts_first));
            }
            b'B' => {
                let (portal, stmt) = (next(), next());
                self.portals.retain(|(p, _)| *p != portal);
                if self.portals.len() >= PORTALS {
                    self.portals.remove(0);
                }
                self.portals.push((portal, stmt));
            }
            b'E' => self.execute(&next(), f.ts_first, out),
            b'S' => self.queue(Pending::Sync, out),
            b'C' => {
                let name = text_of(f.body.get(1..).unwrap_or_default());
                let name = name.trim_end_matches('\0').to_string();
                match f.body.first() {
                    Some(b'S') => self.statements.remove(&name),
                    Some(b'P') => self.portals.retain(|(p, _)| *p != name),
                    _ => {}
                }
            }
            b'F' => {
                let mut q = self.query(f.ts_first);
                q.operation = Some("FUNCTION CALL".into());
                self.queue(
                    Pending::Simple {
                        q,
                        tagged: true,
                        data_rows: 0,
                    },
                    out,
                );
            }
            _ => {}
        }
    }

    /// An Execute of `portal`: a record with its statement's text.
    fn execute(&mut self, portal: &str, ts: u64, out: &mut DbOut) {
        let mut q = self.query(ts);
        let stmt = self
            .portals
            .iter()
            .find(|(p, _)| p == portal)
            .map(|(_, s)| s.clone());
        if let Some(text) = stmt.and_then(|s| self.statements.get(&s).cloned()) {
            q.set_sql(&text, false, self.mode, false);
        }
        // The text of the statement, from its Parse in this batch when the
        // Parse came with it (the first byte of the batch).
        if let Some((_, _, t)) = &self.last_parse {
            q.ts_first_ns = (*t).min(ts);
        }
        self.last_parse = None;
        self.queue(Pending::Execute { q, data_rows: 0 }, out);
    }

    /// A record of this connection's database, for a command sent at `ts`.
    fn query(&self, ts: u64) -> DbQuery {
        let mut q = DbQuery::new(DbSystem::Postgresql, ts);
        q.namespace = self.database.clone();
        q
    }

    fn queue(&mut self, p: Pending, out: &mut DbOut) {
        if self.pending.len() >= DB_PENDING {
            if let Some(Pending::Simple { q, .. } | Pending::Execute { q, .. }) =
                self.pending.pop_front()
            {
                out.queries.push(q);
            }
            self.pending_dropped += 1;
            if self.pending_dropped == 1 {
                self.notices.push(format!(
                    "more than {DB_PENDING} PostgreSQL commands wait for their answer: the \
                     oldest are shown unanswered"
                ));
            }
        }
        self.pending.push_back(p);
    }

    fn server_message(&mut self, f: &Frame, out: &mut DbOut) {
        let ts = f.ts_last;
        match f.head[0] {
            b'C' => {
                let tag = text_of(f.body.split(|&b| b == 0).next().unwrap_or_default());
                self.complete(Some(&tag), ts, out);
            }
            b'I' | b's' => self.complete(None, ts, out),
            b'D' => {
                if let Some(
                    Pending::Simple { data_rows, .. } | Pending::Execute { data_rows, .. },
                ) = self.pending.front_mut()
                {
                    *data_rows += 1
                }
            }
            b'E' => self.error(&f.body, ts, out),
            b'Z' => self.ready(ts, out),
            _ => {}
        }
    }

    /// CommandComplete (with its tag), EmptyQueryResponse or
    /// PortalSuspended: answers the first waiting command.
    fn complete(&mut self, tag: Option<&str>, ts: u64, out: &mut DbOut) {
        let (op, rows) = tag.map(parse_tag).unwrap_or((None, None));
        match self.pending.front_mut() {
            Some(Pending::Simple {
                q,
                tagged,
                data_rows,
            }) => {
                if !*tagged {
                    if op.is_some() {
                        q.operation = op;
                    }
                    *tagged = true;
                }
                let r = rows.or((*data_rows > 0).then_some(*data_rows));
                if let Some(r) = r {
                    q.rows = Some(q.rows.unwrap_or(0) + r);
                }
                *data_rows = 0;
            }
            Some(Pending::Execute { .. }) => {
                let Some(Pending::Execute { mut q, data_rows }) = self.pending.pop_front() else {
                    return;
                };
                if op.is_some() {
                    q.operation = op;
                }
                q.rows = rows.or((data_rows > 0).then_some(data_rows));
                if tag.is_none() && q.rows.is_none() {
                    q.rows = Some(0);
                }
                q.answer(DbStatus::Ok, ts);
                out.queries.push(q);
            }
            _ => {}
        }
    }

    /// ErrorResponse: the first waiting command failed; an extended batch
    /// is skipped to its Sync.
    fn error(&mut self, body: &[u8], ts: u64, out: &mut DbOut) {
        let (code, message) = error_fields(body);
        let fail = |q: &mut DbQuery| {
            q.error_code = code.clone();
            q.error = message.clone();
            q.answer(DbStatus::Error, ts);
        };
        match self.pending.front_mut() {
            Some(Pending::Simple { q, .. }) => fail(q),
            Some(Pending::Execute { .. }) => {
                if let Some(Pending::Execute { mut q, .. }) = self.pending.pop_front() {
                    fail(&mut q);
                    out.queries.push(q);
                }
                self.skipping = true;
            }
            // An error with no Execute waiting: at a Parse (its text), or
            // at start-up (authentication).
            _ => {
                let parse = self.last_parse.take();
                let mut q = self.query(parse.as_ref().map_or(ts, |p| p.2));
                if let Some((text, cut, _)) = &parse {
                    q.set_sql(text, *cut, self.mode, false);
                }
                fail(&mut q);
                out.queries.push(q);
                self.skipping = true;
            }
        }
    }

    /// ReadyForQuery: a simple query is answered; a batch ends (executions
    /// skipped after an error are dropped).
    fn ready(&mut self, ts: u64, out: &mut DbOut) {
        self.skipping = false;
        self.last_parse = None;
        while let Some(p) = self.pending.pop_front() {
            match p {
                Pending::Simple { mut q, .. } => {
                    if q.status.is_none() {
                        q.answer(DbStatus::Ok, ts);
                    }
                    out.queries.push(q);
                    return;
                }
                Pending::Sync => return,
                Pending::Execute { .. } => {}
            }
        }
    }
}

/// How much of a client message's payload is shown on the wire: none of a
/// PasswordMessage (SASL and GSS responses share its type `p`).
fn is_secret(h: &[u8], _first: u8) -> u64 {
    if h.first() == Some(&b'p') {
        0
    } else {
        u64::MAX
    }
}

fn check_type(h: &[u8], untyped: bool, known: &[u8], who: &str) -> Result<(), DbError> {
    if untyped || known.contains(&h[0]) {
        Ok(())
    } else {
        Err(DbError(format!(
            "PostgreSQL: unknown {who} message type 0x{:02x}",
            h[0]
        )))
    }
}

/// The database a StartupMessage's parameters (`name\0value\0` pairs)
/// ask for: `database`, which defaults to `user`.
fn startup_database(params: &[u8]) -> Option<String> {
    let mut fields = params.split(|&b| b == 0);
    let (mut user, mut db) = (None, None);
    while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
        match k {
            b"database" => db = name_of(v),
            b"user" => user = name_of(v),
            b"" => break,
            _ => {}
        }
    }
    db.or(user)
}

/// A CommandComplete tag (`SELECT 3`, `INSERT 0 1`, `CREATE TABLE`): the
/// operation (the words) and the row count (the last number, if any).
pub fn parse_tag(tag: &str) -> (Option<String>, Option<u64>) {
    let words: Vec<&str> = tag.split_whitespace().collect();
    let rows = words.last().and_then(|w| w.parse::<u64>().ok());
    let op: Vec<&str> = words
        .iter()
        .take_while(|w| !w.chars().all(|c| c.is_ascii_digit()))
        .copied()
        .collect();
    let op = (!op.is_empty()).then(|| op.join(" "));
    (op, rows)
}

/// SQLSTATE (`C`) and message (`M`) of an ErrorResponse.
pub fn error_fields(body: &[u8]) -> (Option<String>, Option<String>) {
    let (mut code, mut msg) = (None, None);
    for field in body.split(|&b| b == 0) {
        match field.split_first() {
            Some((b'C', v)) => code = Some(text_of(v)),
            Some((b'M', v)) => msg = Some(text_of(v)),
            _ => {}
        }
    }
    (code, msg)
}

/// Whether `data` (a direction's first bytes) is, or may become, a
/// StartupMessage: Some(true) it is, Some(false) it is not, None wait.
pub fn startup(data: &[u8]) -> Option<bool> {
    if data.len() < 8 {
        let len_ok = data.len() < 2 || data[..2] == [0, 0];
        let ver = [0u8, 3, 0, 0];
        let ver_ok = data.len() <= 4 || data[4..] == ver[..data.len() - 4];
        return if len_ok && ver_ok { None } else { Some(false) };
    }
    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let ver = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    Some(ver == PROTOCOL_3 && (8..=10_000).contains(&len))
}

/// Whether `data` starts with a whole simple query or Parse message (a
/// connection picked up after its start-up): type, length, NUL-ended text.
pub fn midstream_query(data: &[u8]) -> bool {
    if data.len() < 6 || !matches!(data[0], b'Q' | b'P') {
        return false;
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    (5..1 << 20).contains(&len) && data.len() > len && data[len] == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![ty];
        v.extend(((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn startup_msg() -> Vec<u8> {
        let body = b"\0\x03\0\0user\0u\0database\0d\0\0";
        let mut v = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    fn cstr(parts: &[&str]) -> Vec<u8> {
        parts
            .iter()
            .flat_map(|p| [p.as_bytes(), b"\0"].concat())
            .collect()
    }

    fn run(c: &mut PgConn, peer: Peer, data: &[u8], ts: u64) -> DbOut {
        c.push(peer, data, ts).expect("decodes")
    }

    #[test]
    fn simple_query_with_password_and_rows() {
        let mut c = PgConn::new(QueryText::Full);
        let mut first = startup_msg();
        assert_eq!(startup(&first), Some(true));
        assert_eq!(startup(&first[..5]), None);
        assert_eq!(startup(b"GET / HTTP"), Some(false));
        let pw = msg(b'p', b"s3cret\0");
        first.extend(&pw);
        let o = run(&mut c, Peer::Client, &first, 1);
        assert!(o.queries.is_empty());
        assert!(!o.wire.windows(6).any(|w| w == b"s3cret"));
        assert_eq!(o.wire.len(), first.len());
        run(&mut c, Peer::Server, &msg(b'R', &[0, 0, 0, 0]), 2);
        run(&mut c, Peer::Server, &msg(b'Z', b"I"), 3);
        let q = msg(b'Q', b"select 'marker', 2\0");
        run(&mut c, Peer::Client, &q[..3], 10);
        run(&mut c, Peer::Client, &q[3..], 11);
        let mut resp = msg(b'T', &[0, 0]);
        resp.extend(msg(b'D', &[0, 0]));
        resp.extend(msg(b'C', b"SELECT 1\0"));
        resp.extend(msg(b'Z', b"I"));
        let o = run(&mut c, Peer::Server, &resp, 15);
        assert_eq!(o.queries.len(), 1);
        let r = &o.queries[0];
        assert_eq!(r.namespace.as_deref(), Some("d"));
        assert_eq!(r.operation.as_deref(), Some("SELECT"));
        assert_eq!(r.query.as_deref(), Some("select 'marker', 2"));
        assert_eq!(
            (r.rows, r.status, r.latency_ns()),
            (Some(1), Some(DbStatus::Ok), Some(5))
        );
    }

    #[test]
    fn extended_pipeline_with_error_and_named_statement() {
        let mut c = PgConn::midstream(QueryText::Sanitized);
        let mut b = msg(
            b'P',
            &[
                cstr(&["s1", "SELECT * FROM t WHERE id = $1 AND x = 'k'"]),
                vec![0, 0],
            ]
            .concat(),
        );
        b.extend(msg(b'B', &[cstr(&["", "s1"]), vec![0; 6]].concat()));
        b.extend(msg(b'E', &[cstr(&[""]), vec![0; 4]].concat()));
        b.extend(msg(b'S', b""));
        // second batch: a bad Parse, Execute skipped
        b.extend(msg(
            b'P',
            &[cstr(&["", "SELECT * FROM nope"]), vec![0, 0]].concat(),
        ));
        b.extend(msg(b'B', &[cstr(&["", ""]), vec![0; 6]].concat()));
        b.extend(msg(b'E', &[cstr(&[""]), vec![0; 4]].concat()));
        b.extend(msg(b'S', b""));
        // third: the named statement again
        b.extend(msg(b'B', &[cstr(&["", "s1"]), vec![0; 6]].concat()));
        b.extend(msg(b'E', &[cstr(&[""]), vec![0; 4]].concat()));
        b.extend(msg(b'S', b""));
        run(&mut c, Peer::Client, &b, 1);
        let mut r = msg(b'1', b"");
        r.extend(msg(b'2', b""));
        r.extend(msg(b'D', b""));
        r.extend(msg(b'D', b""));
        r.extend(msg(b'C', b"SELECT 2\0"));
        r.extend(msg(b'Z', b"I"));
        r.extend(msg(
            b'E',
            b"SERROR\0C42P01\0Mrelation \"nope\" does not exist\0\0",
        ));
        r.extend(msg(b'Z', b"I"));
        r.extend(msg(b'2', b""));
        r.extend(msg(b'C', b"SELECT 0\0"));
        r.extend(msg(b'Z', b"I"));
        let o = run(&mut c, Peer::Server, &r, 9);
        let q = &o.queries;
        assert_eq!(q.len(), 3, "{q:#?}");
        assert_eq!(
            q[0].query.as_deref(),
            Some("SELECT * FROM t WHERE id = $1 AND x = ?")
        );
        assert_eq!(q[0].rows, Some(2));
        assert_eq!(q[1].status, Some(DbStatus::Error));
        assert_eq!(q[1].error_code.as_deref(), Some("42P01"));
        assert_eq!(
            q[1].error.as_deref(),
            Some("relation \"nope\" does not exist")
        );
        assert_eq!(q[1].query.as_deref(), Some("SELECT * FROM nope"));
        assert_eq!(q[2].query, q[0].query);
        assert_eq!(q[2].rows, Some(0));
        assert!(c.finish().is_empty());
    }

    #[test]
    fn copy_and_multi_statement_and_errors_in_simple_queries() {
        let mut c = PgConn::midstream(QueryText::Full);
        run(&mut c, Peer::Client, &msg(b'Q', b"COPY t FROM STDIN\0"), 1);
        run(&mut c, Peer::Server, &msg(b'G', &[0, 0, 0]), 2);
        let mut d = msg(b'd', b"1\n2\n");
        d.extend(msg(b'c', b""));
        run(&mut c, Peer::Client, &d, 3);
        let mut r = msg(b'C', b"COPY 2\0");
        r.extend(msg(b'Z', b"I"));
        let o = run(&mut c, Peer::Server, &r, 4);
        assert_eq!(o.queries[0].operation.as_deref(), Some("COPY"));
        assert_eq!(o.queries[0].rows, Some(2));
        run(
            &mut c,
            Peer::Client,
            &msg(b'Q', b"insert into t values (1); select nope\0"),
            5,
        );
        let mut r = msg(b'C', b"INSERT 0 1\0");
        r.extend(msg(b'E', b"C42703\0Mcolumn \"nope\" does not exist\0\0"));
        r.extend(msg(b'Z', b"E"));
        let o = run(&mut c, Peer::Server, &r, 6);
        let q = &o.queries[0];
        assert_eq!((q.operation.as_deref(), q.rows), (Some("INSERT"), Some(1)));
        assert_eq!(
            (q.status, q.error_code.as_deref()),
            (Some(DbStatus::Error), Some("42703"))
        );
        assert!(c.push(Peer::Server, b"\x01\0\0\0\x04", 7).is_err());
    }

    #[test]
    fn tags() {
        assert_eq!(parse_tag("INSERT 0 5"), (Some("INSERT".into()), Some(5)));
        assert_eq!(
            parse_tag("CREATE TABLE"),
            (Some("CREATE TABLE".into()), None)
        );
        assert!(midstream_query(&msg(b'Q', b"select 1\0")));
        assert!(!midstream_query(b"POST / HTTP/1.1\r\n"));
    }
}
