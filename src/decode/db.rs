//! What the database decoders ([`super::postgres`], [`super::redis`],
//! [`super::mysql`]) share: the record they make ([`DbQuery`]), the
//! connection they are driven through ([`DbConn`]), length-prefixed framing
//! with a bounded keep ([`Framer`]), and query text handling (operation
//! names, `--db-query-text sanitized`).
//!
//! Secrets: every decoder masks what carries a password (PostgreSQL's
//! PasswordMessage and SASL responses, MySQL's auth responses, Redis `AUTH`
//! and `HELLO ... AUTH` arguments) in the wire bytes it hands on (pcapng)
//! and never puts them in a record, whatever `--no-redact` says: they are
//! credentials, not traffic.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use super::limits::{DB_MESSAGE_KEEP, DB_QUERY_KEEP, DB_STATEMENTS, DB_STATEMENT_BYTES};
use super::Peer;

/// Which database protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DbSystem {
    Postgresql,
    Redis,
    Mysql,
}

impl DbSystem {
    /// The name in records (and OpenTelemetry's `db.system.name`).
    pub fn as_str(self) -> &'static str {
        match self {
            DbSystem::Postgresql => "postgresql",
            DbSystem::Redis => "redis",
            DbSystem::Mysql => "mysql",
        }
    }
}

/// How query text is shown (`--db-query-text`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum QueryText {
    /// As sent.
    Full,
    /// Literals replaced by `?` (SQL strings and numbers; Redis arguments
    /// after the key).
    #[default]
    Sanitized,
}

/// What a record is: a command and its reply, or a message the server
/// pushed on its own (Redis pub/sub).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DbKind {
    #[default]
    Query,
    Message,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbStatus {
    Ok,
    Error,
}

impl DbStatus {
    /// The name in records.
    pub fn as_str(self) -> &'static str {
        match self {
            DbStatus::Ok => "ok",
            DbStatus::Error => "error",
        }
    }
}

/// One command (query, statement execution, Redis command) and what came
/// back; or a pushed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbQuery {
    /// The protocol.
    pub system: DbSystem,
    /// A command, or a pushed message.
    pub kind: DbKind,
    /// The database: PostgreSQL's from the StartupMessage, MySQL's from
    /// the login packet or `COM_INIT_DB`, Redis's index after `SELECT`.
    pub namespace: Option<String>,
    /// `SELECT`, `INSERT`, `GET`, ... (upper case).
    pub operation: Option<String>,
    /// The query or command text, secrets masked, sanitized unless
    /// `--db-query-text full`, cut at `limits::DB_QUERY_KEEP`.
    pub query: Option<String>,
    /// The text was longer than what is kept.
    pub query_truncated: bool,
    /// None: no answer was seen (the connection ended, bytes were lost).
    pub status: Option<DbStatus>,
    /// SQLSTATE (PostgreSQL), error number (MySQL), error prefix (Redis).
    pub error_code: Option<String>,
    /// MySQL's SQLSTATE, beside its error number.
    pub sqlstate: Option<String>,
    /// The server's error message.
    pub error: Option<String>,
    /// Rows returned or affected.
    pub rows: Option<u64>,
    /// Redis: the reply (summarised for aggregates), cut at
    /// `limits::DB_RESPONSE_KEEP`; a pushed message's payload.
    pub response: Option<String>,
    /// The reply was longer than what is kept.
    pub response_truncated: bool,
    /// CLOCK_MONOTONIC ns of the command's first byte (a message: its
    /// arrival) and of the answer's last.
    pub ts_first_ns: u64,
    /// See `ts_first_ns`.
    pub ts_last_ns: u64,
}

impl DbQuery {
    /// A command sent at `ts`, not answered yet.
    pub fn new(system: DbSystem, ts: u64) -> DbQuery {
        DbQuery {
            system,
            kind: DbKind::Query,
            namespace: None,
            operation: None,
            query: None,
            query_truncated: false,
            status: None,
            error_code: None,
            sqlstate: None,
            error: None,
            rows: None,
            response: None,
            response_truncated: false,
            ts_first_ns: ts,
            ts_last_ns: ts,
        }
    }

    /// Command start to answer end, when answered.
    pub fn latency_ns(&self) -> Option<u64> {
        (self.kind == DbKind::Query && self.status.is_some())
            .then(|| self.ts_last_ns.saturating_sub(self.ts_first_ns))
    }

    /// Marks it answered at `ts` with `status`.
    pub fn answer(&mut self, status: DbStatus, ts: u64) {
        self.status = Some(status);
        self.ts_last_ns = ts.max(self.ts_first_ns);
    }

    /// Sets the query text (and the operation from it when none is known),
    /// as `mode` says; `cut`: the text was longer.
    pub fn set_sql(&mut self, text: &str, cut: bool, mode: QueryText, mysql: bool) {
        if self.operation.is_none() {
            self.operation = sql_operation(text);
        }
        let shown = match mode {
            QueryText::Full => text.to_string(),
            QueryText::Sanitized => sanitize_sql(text, mysql),
        };
        let (shown, more) = cut_text(shown, DB_QUERY_KEEP);
        self.query = Some(shown);
        self.query_truncated = cut || more;
    }

    /// The bytes the record shows (for the amplification budget).
    pub fn size(&self) -> u64 {
        let s = |o: &Option<String>| o.as_ref().map_or(0, String::len);
        let texts = s(&self.namespace) + s(&self.operation) + s(&self.query);
        (texts + s(&self.error) + s(&self.response) + 64) as u64
    }
}

/// `s` cut to at most `max` bytes at a character boundary; true if cut.
pub fn cut_text(mut s: String, max: usize) -> (String, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    (s, true)
}

/// Names kept (database names, Redis indexes) at most this long.
const NAME_KEEP: usize = 128;

/// A database name from the stream, bounded.
pub fn name_of(b: &[u8]) -> Option<String> {
    (!b.is_empty()).then(|| cut_text(text_of(b), NAME_KEEP).0)
}

/// Bytes as text (invalid UTF-8 replaced).
pub fn text_of(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What a decoder made of some bytes.
#[derive(Debug, Default)]
pub struct DbOut {
    /// Commands answered (or given up on) and pushed messages, in order.
    pub queries: Vec<DbQuery>,
    /// The bytes consumed, secrets masked (for pcapng).
    pub wire: Vec<u8>,
    /// Bytes not decoded: skipped while looking for a message start
    /// (after lost bytes), or from where `error` struck on: shown raw.
    pub raw: Vec<u8>,
    /// Decoding problems worth saying (picked up again after lost bytes).
    pub notices: Vec<String>,
    /// The stream is not (or no longer) the protocol: the rest of the
    /// connection is raw.
    pub error: Option<DbError>,
}

/// A stream the decoder cannot follow: the rest of the connection is raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbError(pub String);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A database protocol's decoder, fed one direction's bytes at a time.
pub trait DbDecoder {
    /// `rest`'s bytes from `peer` into `out`, `rest` advanced past what
    /// was taken.
    fn push_into(
        &mut self,
        peer: Peer,
        rest: &mut &[u8],
        ts: u64,
        out: &mut DbOut,
    ) -> Result<(), DbError>;

    /// One call's bytes from `peer`.
    fn push(&mut self, peer: Peer, data: &[u8], ts: u64) -> Result<DbOut, DbError> {
        let mut out = DbOut::default();
        self.push_into(peer, &mut &data[..], ts, &mut out)?;
        Ok(out)
    }
}

/// A database connection being decoded, whatever its protocol.
#[derive(Debug)]
pub enum DbConn {
    Postgres(Box<super::postgres::PgConn>),
    Redis(Box<super::redis::RedisConn>),
    Mysql(Box<super::mysql::MysqlConn>),
}

impl DbConn {
    /// A decoder for `system`, from the client's first message on
    /// (PostgreSQL's StartupMessage, MySQL's login packet; Redis has none).
    pub fn new(system: DbSystem, mode: QueryText) -> DbConn {
        match system {
            DbSystem::Postgresql => DbConn::Postgres(Box::new(super::postgres::PgConn::new(mode))),
            DbSystem::Redis => DbConn::Redis(Box::new(super::redis::RedisConn::new(mode))),
            DbSystem::Mysql => DbConn::Mysql(Box::new(super::mysql::MysqlConn::new(mode))),
        }
    }

    /// A PostgreSQL decoder picking up a connection after its start-up.
    pub fn postgres_midstream(mode: QueryText) -> DbConn {
        DbConn::Postgres(Box::new(super::postgres::PgConn::midstream(mode)))
    }

    /// The protocol decoded.
    pub fn system(&self) -> DbSystem {
        match self {
            DbConn::Postgres(_) => DbSystem::Postgresql,
            DbConn::Redis(_) => DbSystem::Redis,
            DbConn::Mysql(_) => DbSystem::Mysql,
        }
    }

    /// One call's bytes from `peer`: what they decode to, up to an error
    /// (the bytes from there are `raw`).
    pub fn push(&mut self, peer: Peer, data: &[u8], ts: u64) -> DbOut {
        let mut out = DbOut::default();
        let mut rest = data;
        let r = match self {
            DbConn::Postgres(c) => c.push_into(peer, &mut rest, ts, &mut out),
            DbConn::Redis(c) => c.push_into(peer, &mut rest, ts, &mut out),
            DbConn::Mysql(c) => c.push_into(peer, &mut rest, ts, &mut out),
        };
        if let Err(e) = r {
            out.error = Some(e);
            out.raw.extend_from_slice(rest);
        }
        out
    }

    /// Bytes of `peer` were lost after the last call: true if decoding
    /// goes on (at the next call that starts a message), false if the rest
    /// of the connection must be shown raw.
    pub fn gap(&mut self, peer: Peer) -> bool {
        match self {
            DbConn::Postgres(_) | DbConn::Mysql(_) => false,
            DbConn::Redis(c) => {
                c.gap(peer);
                true
            }
        }
    }

    /// The connection ended: commands still waiting, unanswered.
    pub fn finish(&mut self) -> Vec<DbQuery> {
        match self {
            DbConn::Postgres(c) => c.finish(),
            DbConn::Redis(c) => c.finish(),
            DbConn::Mysql(c) => c.finish(),
        }
    }

    /// Bytes of state held (partial messages, statements, waiting
    /// commands).
    pub fn memory(&self) -> usize {
        match self {
            DbConn::Postgres(c) => c.memory(),
            DbConn::Redis(c) => c.memory(),
            DbConn::Mysql(c) => c.memory(),
        }
    }

    /// Notices gathered since the last call (limits reached).
    pub fn take_notices(&mut self) -> Vec<String> {
        match self {
            DbConn::Postgres(c) => std::mem::take(&mut c.notices),
            DbConn::Redis(c) => std::mem::take(&mut c.notices),
            DbConn::Mysql(c) => std::mem::take(&mut c.notices),
        }
    }
}

/// Prepared statements' texts by name or id, bounded in number
/// (`DB_STATEMENTS`) and bytes (`DB_STATEMENT_BYTES`): past either, the
/// oldest is forgotten.
#[derive(Debug)]
pub struct Statements<K> {
    map: HashMap<K, String>,
    /// Keys, oldest first.
    order: VecDeque<K>,
    bytes: usize,
    /// Statements forgotten for the bounds.
    pub evicted: u64,
}

impl<K> Default for Statements<K> {
    fn default() -> Self {
        Statements {
            map: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            evicted: 0,
        }
    }
}

impl<K: Hash + Eq + Clone> Statements<K> {
    /// Remembers `text` under `k` (replacing what it had); true when this
    /// is the first time an older statement had to be forgotten.
    pub fn insert(&mut self, k: K, text: String) -> bool {
        self.remove(&k);
        let first = self.evicted == 0;
        while !self.order.is_empty()
            && (self.order.len() >= DB_STATEMENTS || self.bytes + text.len() > DB_STATEMENT_BYTES)
        {
            if let Some(old) = self.order.pop_front() {
                if let Some(t) = self.map.remove(&old) {
                    self.bytes -= t.len();
                }
                self.evicted += 1;
            }
        }
        self.bytes += text.len();
        self.order.push_back(k.clone());
        self.map.insert(k, text);
        first && self.evicted > 0
    }

    /// The text of statement `k`, if remembered.
    pub fn get(&self, k: &K) -> Option<&String> {
        self.map.get(k)
    }

    /// Forgets statement `k` (closed by the client).
    pub fn remove(&mut self, k: &K) {
        if let Some(t) = self.map.remove(k) {
            self.bytes -= t.len();
            self.order.retain(|o| o != k);
        }
    }

    /// Bytes held (texts and a rough per-entry cost).
    pub fn memory(&self) -> usize {
        self.bytes + self.map.len() * 64
    }
}

/// The notice for the first statement forgotten.
pub fn statements_notice() -> String {
    format!(
        "more than {DB_STATEMENTS} prepared statements or {DB_STATEMENT_BYTES} bytes of their \
         text on this connection: the oldest are forgotten (their executions show no text)"
    )
}

// ---------------------------------------------------------------------------
// Framing.

/// How a message header reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// PostgreSQL: type byte, big-endian u32 length counting itself.
    PgTyped,
    /// PostgreSQL's first client message: u32 length, no type.
    PgUntyped,
    /// MySQL: little-endian u24 payload length, sequence id.
    Mysql,
}

impl Head {
    fn len(self) -> usize {
        match self {
            Head::PgTyped => 5,
            Head::PgUntyped | Head::Mysql => 4,
        }
    }

    /// The payload length a complete header announces.
    fn payload(self, h: &[u8]) -> Result<u64, DbError> {
        let be = |b: &[u8]| u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let n = match self {
            Head::PgTyped => be(&h[1..5]),
            Head::PgUntyped => be(&h[0..4]),
            Head::Mysql => return Ok(u64::from(u32::from_le_bytes([h[0], h[1], h[2], 0]))),
        };
        n.checked_sub(4)
            .ok_or_else(|| DbError(format!("message length {n} is below 4")))
    }
}

/// A complete message: its header, the first `DB_MESSAGE_KEEP` bytes of
/// its payload, the payload's length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    /// The header as read.
    pub head: Vec<u8>,
    /// The payload's first `DB_MESSAGE_KEEP` bytes.
    pub body: Vec<u8>,
    /// The payload's length.
    pub len: u64,
    /// The call of its first byte, of its last.
    pub ts_first: u64,
    /// See `ts_first`.
    pub ts_last: u64,
}

impl Frame {
    /// The payload was longer than what is kept.
    pub fn cut(&self) -> bool {
        (self.body.len() as u64) < self.len
    }
}

/// Length-prefixed messages from one direction, across calls: at most a
/// header and `DB_MESSAGE_KEEP` payload bytes are held whatever the
/// announced length (the rest is counted and passed on).
#[derive(Debug)]
pub struct Framer {
    /// How the next header reads (PostgreSQL's first client message has
    /// no type).
    pub head_kind: Head,
    frame: Frame,
    /// Payload bytes still to come (None: in the header).
    need: Option<u64>,
    /// Payload bytes shown before the rest is masked on the wire (None:
    /// not decided yet, at the first payload byte).
    clear: Option<u64>,
}

impl Framer {
    /// Messages whose headers read as `head_kind`.
    pub fn new(head_kind: Head) -> Framer {
        Framer {
            head_kind,
            frame: Frame::default(),
            need: None,
            clear: None,
        }
    }

    /// Bytes held.
    pub fn memory(&self) -> usize {
        self.frame.head.len() + self.frame.body.capacity()
    }

    /// Inside a message (bytes of it were taken).
    pub fn mid_message(&self) -> bool {
        !self.frame.head.is_empty()
    }

    /// What is held of an unfinished message (header, kept payload).
    pub fn take_partial(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.frame.head);
        v.append(&mut self.frame.body);
        self.need = None;
        self.frame = Frame::default();
        v
    }

    /// Takes bytes from `data` until a message completes (returned) or
    /// `data` is empty. `mask(head, first payload byte)` says how many
    /// payload bytes are shown on the wire before the rest is masked (`*`:
    /// a secret; `u64::MAX`: none is); `check(head)` refuses a header.
    pub fn next(
        &mut self,
        data: &mut &[u8],
        ts: u64,
        wire: &mut Vec<u8>,
        mask: &dyn Fn(&[u8], u8) -> u64,
        check: &dyn Fn(&[u8]) -> Result<(), DbError>,
    ) -> Result<Option<Frame>, DbError> {
        let need = match self.need {
            Some(n) => n,
            None if data.is_empty() => return Ok(None),
            None => {
                if self.frame.head.is_empty() {
                    self.frame.ts_first = ts;
                }
                let hl = self.head_kind.len();
                let take = (hl - self.frame.head.len()).min(data.len());
                self.frame.head.extend_from_slice(&data[..take]);
                wire.extend_from_slice(&data[..take]);
                *data = &data[take..];
                if self.frame.head.len() < hl {
                    return Ok(None);
                }
                check(&self.frame.head)?;
                let n = self.head_kind.payload(&self.frame.head)?;
                self.frame.len = n;
                self.clear = None;
                self.need = Some(n);
                n
            }
        };
        let take = (need.min(data.len() as u64)) as usize;
        if take > 0 && self.clear.is_none() {
            self.clear = Some(mask(&self.frame.head, data[0]));
        }
        let room = DB_MESSAGE_KEEP.saturating_sub(self.frame.body.len());
        self.frame.body.extend_from_slice(&data[..take.min(room)]);
        let offset = self.frame.len - need;
        let shown = self
            .clear
            .unwrap_or(u64::MAX)
            .saturating_sub(offset)
            .min(take as u64) as usize;
        wire.extend_from_slice(&data[..shown]);
        wire.extend(std::iter::repeat_n(b'*', take - shown));
        *data = &data[take..];
        let left = need - take as u64;
        if left > 0 {
            self.need = Some(left);
            return Ok(None);
        }
        self.need = None;
        let mut f = std::mem::take(&mut self.frame);
        f.ts_last = ts;
        Ok(Some(f))
    }
}

// ---------------------------------------------------------------------------
// Query text.

/// The first keyword of an SQL text, upper case (comments and opening
/// parentheses skipped); None if it does not start with a word.
pub fn sql_operation(text: &str) -> Option<String> {
    let rest = skip_blank(text);
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphabetic() || *c == '_')
        .take(32)
        .collect();
    (!word.is_empty()).then(|| word.to_ascii_uppercase())
}

/// `s` after leading white space, comments and `(`.
fn skip_blank(mut s: &str) -> &str {
    loop {
        let t = s.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(r) = t.strip_prefix("--") {
            s = r.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(r) = t.strip_prefix("/*") {
            s = r.split_once("*/").map_or("", |(_, r)| r);
        } else {
            return t;
        }
    }
}

/// SQL with its literals replaced by `?`: quoted strings (`'...'` with
/// `''` and backslash escapes, `E'...'`, PostgreSQL's `$tag$...$tag$`;
/// MySQL's `"..."` too), numbers not part of a name, and `X'..'`/`B'..'`
/// prefixes with their string. Identifiers (`"..."` in PostgreSQL,
/// backticks), comments, parameters (`$1`, `?`) and keywords stay.
pub fn sanitize_sql(text: &str, mysql: bool) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let prev_word = i > 0 && is_word(b[i - 1]);
        let next = match c {
            b'\'' => Some(quoted(b, i, b'\'')),
            b'"' if mysql => Some(quoted(b, i, b'"')),
            b'"' | b'`' => {
                let end = quoted(b, i, c);
                out.push_str(&text[i..end]);
                i = end;
                continue;
            }
            b'$' if !mysql && !prev_word => dollar_quoted(b, i),
            b'-' if b.get(i + 1) == Some(&b'-') => {
                let end = b[i..]
                    .iter()
                    .position(|&x| x == b'\n')
                    .map_or(b.len(), |p| i + p);
                out.push_str(&text[i..end]);
                i = end;
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = text[i + 2..].find("*/").map_or(b.len(), |p| i + 2 + p + 2);
                out.push_str(&text[i..end]);
                i = end;
                continue;
            }
            b'0'..=b'9' if !prev_word => Some(number(b, i)),
            _ => None,
        };
        match next {
            Some(end) => {
                // A string's prefix (E, X, B, N) went out as a letter:
                // take it back so that `X'ff'` is one `?`.
                if c == b'\''
                    && i > 0
                    && matches!(
                        b[i - 1],
                        b'E' | b'e' | b'X' | b'x' | b'B' | b'b' | b'N' | b'n'
                    )
                    && (i < 2 || !is_word(b[i - 2]))
                {
                    out.pop();
                }
                out.push('?');
                i = end;
            }
            None => {
                let ch_len = utf8_len(c);
                let end = (i + ch_len).min(b.len());
                out.push_str(&text[i..end]);
                i = end;
            }
        }
    }
    out
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        0xc0..=0xdf => 2,
        _ => 1,
    }
}

/// The end of a string quoted by `q` starting at `i` (doubled quotes and
/// backslash escapes stay inside); the end of the text if unterminated.
fn quoted(b: &[u8], i: usize, q: u8) -> usize {
    let mut j = i + 1;
    while j < b.len() {
        if b[j] == b'\\' {
            j += 2;
            continue;
        }
        if b[j] == q {
            if b.get(j + 1) == Some(&q) {
                j += 2;
                continue;
            }
            return j + 1;
        }
        j += 1;
    }
    b.len()
}

/// PostgreSQL's `$tag$ ... $tag$` at `i`: its end, or None when `$` starts
/// a parameter (`$1`) or nothing.
fn dollar_quoted(b: &[u8], i: usize) -> Option<usize> {
    let tag_end = b[i + 1..]
        .iter()
        .position(|&c| !(c.is_ascii_alphabetic() || c == b'_'))
        .map(|p| i + 1 + p)?;
    // a tag is an identifier (at most 63 bytes in PostgreSQL): a longer
    // run is no tag, and the search below stays linear in practice
    if b[tag_end] != b'$' || tag_end - i > 64 {
        return None;
    }
    let tag = &b[i..=tag_end];
    let body = tag_end + 1;
    let close = b[body..]
        .windows(tag.len())
        .position(|w| w == tag)
        .map_or(b.len(), |p| body + p + tag.len());
    Some(close)
}

/// The end of a number at `i` (digits, a fraction, an exponent, hex).
fn number(b: &[u8], i: usize) -> usize {
    let mut j = i;
    if b[i] == b'0' && matches!(b.get(i + 1), Some(b'x' | b'X')) {
        j += 2;
        while j < b.len() && b[j].is_ascii_hexdigit() {
            j += 1;
        }
        return j;
    }
    while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.') {
        j += 1;
    }
    if j < b.len() && matches!(b[j], b'e' | b'E') {
        let mut k = j + 1;
        if k < b.len() && matches!(b[k], b'+' | b'-') {
            k += 1;
        }
        if k < b.len() && b[k].is_ascii_digit() {
            j = k;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
        }
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations() {
        assert_eq!(sql_operation("select 1").as_deref(), Some("SELECT"));
        assert_eq!(
            sql_operation("  /* c */ -- x\n (SELECT 1)").as_deref(),
            Some("SELECT")
        );
        assert_eq!(sql_operation("1"), None);
        assert_eq!(sql_operation(""), None);
    }

    #[test]
    fn sanitized_sql() {
        let s = |t: &str| sanitize_sql(t, false);
        assert_eq!(
            s("SELECT * FROM t WHERE a = 'x''y' AND b = 42 AND c = 1.5e3"),
            "SELECT * FROM t WHERE a = ? AND b = ? AND c = ?"
        );
        assert_eq!(s("SELECT $1, t2.c1 FROM t2"), "SELECT $1, t2.c1 FROM t2");
        assert_eq!(s("SELECT $$a 'b'$$, $x$q$x$"), "SELECT ?, ?");
        assert_eq!(s("SELECT E'a\\'b', X'ff'"), "SELECT ?, ?");
        assert_eq!(
            s("SELECT \"Col 1\" FROM t -- 'kept'\n/* 2 */"),
            "SELECT \"Col 1\" FROM t -- 'kept'\n/* 2 */"
        );
        assert_eq!(
            s("INSERT INTO t VALUES (1,'é')"),
            "INSERT INTO t VALUES (?,?)"
        );
        assert_eq!(s("SELECT 'unterminated"), "SELECT ?");
        let long_tag = format!("SELECT ${}$ 1", "a".repeat(100));
        assert_eq!(s(&long_tag), long_tag.replace(" 1", " ?"));
        assert_eq!(
            sanitize_sql("SELECT \"a\", `b` FROM t WHERE x = 0x1F", true),
            "SELECT ?, `b` FROM t WHERE x = ?"
        );
    }

    #[test]
    fn framer_keeps_a_bounded_prefix_and_masks() {
        let mut f = Framer::new(Head::PgTyped);
        let mut msg = vec![b'p', 0, 0, 0, 9];
        msg.extend(b"hunt2");
        let mut big = vec![b'Q'];
        let n = DB_MESSAGE_KEEP + 100;
        big.extend(((n + 4) as u32).to_be_bytes());
        big.extend(vec![b'a'; n]);
        let mut all = msg.clone();
        all.extend(&big);
        let mut wire = Vec::new();
        let mut d = &all[..];
        let mask = |h: &[u8], _: u8| if h[0] == b'p' { 0 } else { u64::MAX };
        let ok = |_: &[u8]| Ok(());
        let a = f.next(&mut d, 1, &mut wire, &mask, &ok).unwrap().unwrap();
        assert_eq!(a.body, b"hunt2");
        let b = f.next(&mut d, 2, &mut wire, &mask, &ok).unwrap().unwrap();
        assert_eq!(
            (b.body.len(), b.len, b.cut()),
            (DB_MESSAGE_KEEP, n as u64, true)
        );
        assert_eq!(&wire[..10], b"p\0\0\0\x09*****");
        assert_eq!(wire.len(), all.len());
        let mut d: &[u8] = &[b'Q', 0, 0, 0, 2];
        assert!(f.next(&mut d, 3, &mut wire, &mask, &ok).is_err());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn pg(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![ty];
        v.extend(((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn my(seq: u8, body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_le_bytes()[..3].to_vec();
        v.push(seq);
        v.extend_from_slice(body);
        v
    }

    /// Calls as (from the server, bytes).
    type Calls = Vec<(bool, Vec<u8>)>;

    /// A short session of each system.
    fn sessions() -> Vec<(DbSystem, Calls)> {
        let startup = [&[0u8, 0, 0, 14, 0, 3, 0, 0][..], b"user\0\0"].concat();
        let mut q = pg(b'Q', b"select 'a', 1\0");
        q.extend(pg(b'P', b"s\0select $1\0\0\0"));
        q.extend(pg(b'B', b"\0s\0\0\0\0\0\0\0"));
        q.extend(pg(b'E', b"\0\0\0\0\0"));
        q.extend(pg(b'S', b""));
        let mut r = pg(b'C', b"SELECT 1\0");
        r.extend(pg(b'Z', b"I"));
        r.extend(pg(b'E', b"C42P01\0Mnope\0\0"));
        r.extend(pg(b'Z', b"I"));
        let pg_s = vec![
            (false, startup),
            (false, pg(b'p', b"pw\0")),
            (true, pg(b'Z', b"I")),
            (false, q),
            (true, r),
        ];
        let redis_s = vec![
            (
                false,
                b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
                    .to_vec(),
            ),
            (true, b"+OK\r\n-ERR no\r\n".to_vec()),
            (false, b"*2\r\n$6\r\nLRANGE\r\n$1\r\nl\r\n".to_vec()),
            (true, b"*2\r\n$1\r\na\r\n%1\r\n+k\r\n:1\r\n".to_vec()),
        ];
        let mut login = (0x200u32 | 0x800 | 0x8000).to_le_bytes().to_vec();
        login.extend([0, 0, 0, 1, 33]);
        login.extend([0; 23]);
        login.extend(b"u\0\x02pw");
        let mut rs = my(1, &[1]);
        rs.extend(my(2, b"coldef"));
        rs.extend(my(3, &[0xfe, 0, 0, 2, 0]));
        rs.extend(my(4, b"\x01a"));
        rs.extend(my(5, &[0xfe, 0, 0, 2, 0]));
        let mysql_s = vec![
            (false, my(2, &login)),
            (true, my(3, &[0, 0, 0, 2, 0, 0, 0])),
            (false, my(0, b"\x03select 'a'")),
            (true, rs),
            (false, my(0, b"\x03select x")),
            (true, my(1, b"\xff\x7a\x04#42S02nope")),
        ];
        vec![
            (DbSystem::Postgresql, pg_s),
            (DbSystem::Redis, redis_s),
            (DbSystem::Mysql, mysql_s),
        ]
    }

    fn feed(system: DbSystem, calls: &[(bool, Vec<u8>)], cut: &[usize]) -> (Vec<DbQuery>, Vec<u8>) {
        let mut c = DbConn::new(system, QueryText::Full);
        let (mut qs, mut wire) = (Vec::new(), Vec::new());
        for (i, (server, data)) in calls.iter().enumerate() {
            let peer = if *server { Peer::Server } else { Peer::Client };
            let at = cut.get(i).map_or(0, |c| c % (data.len() + 1));
            for part in [&data[..at], &data[at..]] {
                if part.is_empty() {
                    continue;
                }
                let o = c.push(peer, part, 1);
                assert_eq!(o.error, None);
                qs.extend(o.queries);
                wire.extend(o.wire);
            }
        }
        (qs, wire)
    }

    proptest! {
        /// Calls split anywhere: the same records and wire bytes as whole.
        #[test]
        fn any_split_gives_the_same_records(cut in proptest::collection::vec(any::<usize>(), 6)) {
            for (system, calls) in sessions() {
                let whole = feed(system, &calls, &[]);
                prop_assert!(!whole.0.is_empty());
                prop_assert_eq!(feed(system, &calls, &cut), whole);
            }
        }

        /// Arbitrary bytes from either side: records or an error, never a
        /// panic; the wire form no longer than what came in.
        #[test]
        fn corrupt_input_never_panics(
            calls in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..256)), 0..8),
            which in 0usize..3,
        ) {
            let system = [DbSystem::Postgresql, DbSystem::Redis, DbSystem::Mysql][which];
            let mut c = DbConn::new(system, QueryText::Sanitized);
            let (mut fed, mut wire) = (0, 0);
            for (server, data) in &calls {
                let peer = if *server { Peer::Server } else { Peer::Client };
                fed += data.len();
                let o = c.push(peer, data, 1);
                wire += o.wire.len() + o.raw.len();
                prop_assert!(wire <= fed);
                if o.error.is_some() {
                    break;
                }
            }
            let _ = c.finish();
        }
    }
}
