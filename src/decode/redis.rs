//! Redis's RESP (RESP2 and RESP3) from both directions of a connection.
//!
//! Commands are arrays of bulk strings (or inline lines); each is a record
//! answered by the next reply in order (pipelining), so `MULTI` ... `EXEC`
//! show as their commands with `QUEUED` and the `EXEC` with the array of
//! results. Pub/sub: `SUBSCRIBE a b` is answered by its confirmations, and
//! every `message`/`pmessage`/`smessage` (and RESP3 push) the server sends
//! after is a record of its own (`kind` message: channel as `query`,
//! payload as `response`).
//!
//! Values are read as they come, never held whole: a bulk string keeps at
//! most what its record shows, lines are bounded (`limits::RESP_LINE`),
//! nesting too (`limits::RESP_DEPTH`). Secrets: the arguments of `AUTH`,
//! `HELLO ... AUTH user pass`, `MIGRATE ... AUTH pass | AUTH2 user pass`
//! and `CONFIG SET requirepass|masterauth` are masked on the wire and shown
//! `[redacted]`.
//!
//! After lost bytes a direction is picked up again at the next call that
//! starts a RESP value; commands still waiting are shown unanswered.

use std::collections::VecDeque;

use super::db::{
    cut_text, name_of, DbDecoder, DbError, DbKind, DbOut, DbQuery, DbStatus, DbSystem, QueryText,
};
use super::limits::{
    DB_PENDING, DB_QUERY_KEEP, DB_RESPONSE_KEEP, RESP_ARGS, RESP_DEPTH, RESP_LINE,
};
use super::Peer;

const REDACTED: &str = "[redacted]";

/// Bytes kept of one top-level element (a command argument, a reply's
/// first elements).
const ELEM_KEEP: usize = 4096;

/// What a direction's first bytes say about RESP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A command (an array): this direction is the client's.
    Command,
    /// A reply: the server's.
    Reply,
    /// Too short to tell.
    Wait,
    /// Not RESP.
    Not,
}

/// Whether `data` (a direction's first bytes) starts a RESP value.
pub fn classify(data: &[u8]) -> Start {
    let Some(&t) = data.first() else {
        return Start::Wait;
    };
    if !matches!(t, b'*' | b'$' | b'+' | b'-' | b':') {
        return Start::Not;
    }
    // A type byte and a line of digits (a length or an integer), or text
    // for simple strings and errors.
    let line_end = data.windows(2).position(|w| w == b"\r\n");
    let line = &data[1..line_end.unwrap_or(data.len())];
    let numeric = matches!(t, b'*' | b'$' | b':');
    let ok = if numeric {
        let digits = line.strip_prefix(b"-").unwrap_or(line);
        digits.iter().all(u8::is_ascii_digit) && digits.len() <= 19
    } else {
        line.iter().all(|&c| c >= 0x20 && c != 0x7f)
    };
    match (ok, line_end) {
        (true, Some(_)) if !line.is_empty() && t == b'*' => Start::Command,
        (true, Some(_)) if !line.is_empty() => Start::Reply,
        (true, None) if data.len() < 64 => Start::Wait,
        _ => Start::Not,
    }
}

/// An open aggregate.
#[derive(Debug)]
struct Open {
    /// Elements still to come.
    left: u64,
    /// The closing mark for the summary (`]`, `}`).
    close: char,
    first: bool,
}

/// A complete top-level value, as much as is kept of it.
#[derive(Debug, Default)]
struct Value {
    kind: u8,
    /// Top-level elements (or the value itself, for a scalar): the first
    /// `RESP_ARGS`, each cut at `ELEM_KEEP`.
    elems: Vec<Vec<u8>>,
    /// Top-level elements in all.
    count: u64,
    /// A display of the whole value, cut at `DB_RESPONSE_KEEP`.
    summary: String,
    truncated: bool,
    /// The type of an error (`-`, `!`) anywhere at the top.
    error: bool,
    ts_first: u64,
}

/// RESP values of one direction, read as they come.
#[derive(Debug, Default)]
struct Reader {
    /// A line being read (without its type byte).
    line: Vec<u8>,
    /// The type byte of the line being read (0: none yet).
    ty: u8,
    /// Bulk payload bytes (and CRLF) still to come.
    bulk_left: Option<u64>,
    bulk_kind: u8,
    stack: Vec<Open>,
    value: Value,
    started: bool,
    /// Inline command (a client line not starting with a type byte).
    inline: bool,
    /// The client's element being masked (a secret argument).
    masking: bool,
    /// Masked elements up to this index (client).
    mask_until: u64,
    /// Index of the top-level element being read.
    index: u64,
}

impl Reader {
    fn memory(&self) -> usize {
        self.line.capacity()
            + self.stack.capacity() * 24
            + self.value.elems.iter().map(Vec::capacity).sum::<usize>()
            + self.value.summary.capacity()
    }

    fn reset(&mut self) {
        *self = Reader::default();
    }
}

#[derive(Debug)]
struct Waiting {
    q: DbQuery,
    /// Upper-case command name.
    cmd: String,
    /// Replies it takes (SUBSCRIBE a b: two).
    replies: u64,
}

/// Decoder of one Redis connection.
#[derive(Debug)]
pub struct RedisConn {
    mode: QueryText,
    readers: [Reader; 2],
    pending: VecDeque<Waiting>,
    /// Channels subscribed (from the last confirmation).
    subscribed: bool,
    /// Lost bytes: the client's next call must start an array (inline
    /// commands are not told from the rest of a value), and the
    /// server's calls are skipped until one that starts a value comes after
    /// it (replies to the commands before cannot be told apart).
    resync: [bool; 2],
    /// Commands that waited when bytes were lost: shown unanswered.
    orphans: Vec<DbQuery>,
    /// The database index chosen by `SELECT`.
    database: Option<String>,
    dropped: u64,
    /// Limits reached (commands shown unanswered).
    pub notices: Vec<String>,
}

impl RedisConn {
    /// A connection from its first command (or picked up midway).
    pub fn new(mode: QueryText) -> RedisConn {
        RedisConn {
            mode,
            readers: Default::default(),
            pending: VecDeque::new(),
            subscribed: false,
            resync: [false; 2],
            orphans: Vec::new(),
            database: None,
            dropped: 0,
            notices: Vec::new(),
        }
    }

    /// Bytes held (values being read, commands waiting).
    pub fn memory(&self) -> usize {
        self.readers.iter().map(Reader::memory).sum::<usize>()
            + self
                .pending
                .iter()
                .map(|w| w.q.size() as usize)
                .sum::<usize>()
    }

    /// Bytes of `peer` were lost: both readers restart (the client's at
    /// its next call that starts a value, the server's at one after that);
    /// commands waiting are shown unanswered (at the next push).
    pub fn gap(&mut self, _peer: Peer) {
        for r in &mut self.readers {
            r.reset();
        }
        self.resync = [true; 2];
        let waiting: Vec<DbQuery> = self.pending.drain(..).map(|w| w.q).collect();
        self.orphans.extend(waiting);
    }

    /// The connection ended: what waits is shown unanswered.
    pub fn finish(&mut self) -> Vec<DbQuery> {
        let mut all = std::mem::take(&mut self.orphans);
        all.extend(self.pending.drain(..).map(|w| w.q));
        all
    }
}

impl DbDecoder for RedisConn {
    /// [`DbDecoder::push`] into `out`, `rest` advanced past what was taken.
    fn push_into(
        &mut self,
        peer: Peer,
        rest: &mut &[u8],
        ts: u64,
        out: &mut DbOut,
    ) -> Result<(), DbError> {
        out.queries.append(&mut self.orphans);
        let s = peer.index();
        if self.resync[s] {
            let starts = match peer {
                Peer::Client => classify(rest) == Start::Command,
                Peer::Server => {
                    !self.resync[0] && matches!(classify(rest), Start::Command | Start::Reply)
                }
            };
            if !starts {
                out.raw.extend_from_slice(rest);
                *rest = &[];
                return Ok(());
            }
            self.resync[s] = false;
            out.notices.push(format!(
                "Redis {} stream decodable again",
                if s == 0 { "command" } else { "reply" }
            ));
        }
        while !rest.is_empty() {
            let done = self.step(peer, rest, ts, &mut out.wire)?;
            if done {
                let r = &mut self.readers[s];
                let v = std::mem::take(&mut r.value);
                r.started = false;
                r.index = 0;
                r.mask_until = 0;
                r.inline = false;
                r.masking = false;
                match peer {
                    Peer::Client => self.command(v, out),
                    Peer::Server => self.reply(v, ts, out),
                }
            }
        }
        Ok(())
    }
}

impl RedisConn {
    /// Reads from `rest` until a top-level value completes (true) or the
    /// bytes run out.
    fn step(
        &mut self,
        peer: Peer,
        rest: &mut &[u8],
        ts: u64,
        wire: &mut Vec<u8>,
    ) -> Result<bool, DbError> {
        let r = &mut self.readers[peer.index()];
        if !r.started {
            r.started = true;
            r.value.ts_first = ts;
        }
        if let Some(left) = r.bulk_left {
            let take = (left.min(rest.len() as u64)) as usize;
            let bytes = &rest[..take];
            // the payload without its CRLF
            let payload = &bytes[..take.min(left.saturating_sub(2) as usize)];
            scalar_bytes(r, payload);
            if r.masking {
                wire.extend(std::iter::repeat_n(b'*', payload.len()));
                wire.extend_from_slice(&bytes[payload.len()..]);
            } else {
                wire.extend_from_slice(bytes);
            }
            *rest = &rest[take..];
            let left = left - take as u64;
            if left > 0 {
                r.bulk_left = Some(left);
                return Ok(false);
            }
            r.bulk_left = None;
            return Ok(end_scalar(r));
        }
        // Empty lines between commands (redis-cli --pipe sends one): the
        // server skips them.
        let between = r.ty == 0 && r.line.is_empty() && r.stack.is_empty() && !r.inline;
        if between && peer == Peer::Client && matches!(rest[0], b'\r' | b'\n') {
            wire.push(rest[0]);
            *rest = &rest[1..];
            r.started = false;
            return Ok(false);
        }
        // A line: up to LF.
        let nl = rest.iter().position(|&b| b == b'\n');
        let take = nl.map_or(rest.len(), |p| p + 1);
        let piece = &rest[..take];
        let mut body = piece;
        if r.ty == 0 && r.line.is_empty() {
            let t = piece[0];
            if is_type(t) {
                r.ty = t;
                body = &piece[1..];
            } else if peer == Peer::Client && r.stack.is_empty() && t.is_ascii_graphic() {
                // An inline command: its line goes on the wire once read
                // whole (its secrets masked).
                r.inline = true;
                r.ty = b'i';
            } else {
                return Err(DbError(format!("RESP: unexpected byte 0x{t:02x}")));
            }
        }
        r.line.extend_from_slice(body);
        if !r.inline {
            wire.extend_from_slice(piece);
        }
        *rest = &rest[take..];
        if r.line.len() > RESP_LINE {
            return Err(DbError(format!(
                "RESP: a line longer than {RESP_LINE} bytes"
            )));
        }
        if nl.is_none() {
            return Ok(false);
        }
        let mut line = std::mem::take(&mut r.line);
        let ty = std::mem::replace(&mut r.ty, 0);
        if ty == b'i' {
            wire.extend(inline(r, &line));
            return Ok(true);
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        line_value(r, ty, &line)
    }

    /// A command complete: a record waiting for its reply.
    fn command(&mut self, v: Value, out: &mut DbOut) {
        let Some(name) = v.elems.first() else { return };
        let cmd = String::from_utf8_lossy(name).to_ascii_uppercase();
        let (cmd, _) = cut_text(cmd, 32);
        if cmd == "SELECT" {
            self.database = v.elems.get(1).and_then(|d| name_of(d));
        }
        let mut q = DbQuery::new(DbSystem::Redis, v.ts_first);
        q.namespace = self.database.clone();
        q.operation = Some(cmd.clone());
        let (text, cut) = command_text(&v, self.mode);
        q.query = Some(text);
        q.query_truncated = cut;
        let replies = match cmd.as_str() {
            "SUBSCRIBE" | "PSUBSCRIBE" | "SSUBSCRIBE" | "UNSUBSCRIBE" | "PUNSUBSCRIBE"
            | "SUNSUBSCRIBE" => v.count.saturating_sub(1).max(1),
            _ => 1,
        };
        if self.pending.len() >= DB_PENDING {
            if let Some(w) = self.pending.pop_front() {
                out.queries.push(w.q);
            }
            self.dropped += 1;
            if self.dropped == 1 {
                self.notices.push(format!(
                    "more than {DB_PENDING} Redis commands wait for their reply: the oldest \
                     are shown unanswered"
                ));
            }
        }
        self.pending.push_back(Waiting { q, cmd, replies });
    }

    /// A reply complete: answers the first waiting command, or is a
    /// pushed message.
    fn reply(&mut self, v: Value, ts: u64, out: &mut DbOut) {
        if v.kind == b'|' {
            return; // an attribute: out of band
        }
        let first = v
            .elems
            .first()
            .map(|e| String::from_utf8_lossy(e).to_ascii_lowercase());
        let aggregate = matches!(v.kind, b'*' | b'>');
        let first = first.as_deref().filter(|_| aggregate);
        if let Some(kind @ ("message" | "pmessage" | "smessage")) = first {
            if v.kind == b'>' || self.subscribed {
                out.queries.push(message(kind, &v, ts));
                return;
            }
        }
        if let Some(
            c @ ("subscribe" | "psubscribe" | "ssubscribe" | "unsubscribe" | "punsubscribe"
            | "sunsubscribe"),
        ) = first
        {
            self.subscribed = v
                .elems
                .get(2)
                .and_then(|n| std::str::from_utf8(n).ok()?.parse::<u64>().ok())
                .is_some_and(|n| n > 0);
            let ours = self
                .pending
                .front()
                .is_some_and(|w| w.cmd.eq_ignore_ascii_case(c));
            if !ours {
                return; // more confirmations than counted
            }
            if let Some(w) = self.pending.front_mut() {
                w.replies = w.replies.saturating_sub(1);
                if w.replies > 0 {
                    return;
                }
            }
            if let Some(mut w) = self.pending.pop_front() {
                // a confirmation is no list of rows
                answer(&mut w.q, &v, ts);
                w.q.rows = None;
                out.queries.push(w.q);
            }
            return;
        } else if v.kind == b'>' {
            return; // other pushes (invalidation): not an answer
        }
        let Some(mut w) = self.pending.pop_front() else {
            return;
        };
        answer(&mut w.q, &v, ts);
        out.queries.push(w.q);
    }
}

fn is_type(t: u8) -> bool {
    matches!(
        t,
        b'+' | b'-'
            | b':'
            | b'$'
            | b'*'
            | b'_'
            | b','
            | b'#'
            | b'('
            | b'!'
            | b'='
            | b'%'
            | b'~'
            | b'>'
            | b'|'
    )
}

/// An inline command (`PING`, `AUTH pass`): its words as elements, its
/// line as it goes on the wire (secrets masked).
fn inline(r: &mut Reader, line: &[u8]) -> Vec<u8> {
    let mut wire = line.to_vec();
    let mut pos = 0;
    for w in line.split(|c| c.is_ascii_whitespace()) {
        let start = pos;
        pos += w.len() + 1;
        if w.is_empty() {
            continue;
        }
        begin_elem(r, false);
        if r.masking {
            wire[start..start + w.len()].fill(b'*');
        }
        scalar_bytes(r, w);
        end_scalar(r);
        r.value.count += 1;
    }
    r.value.kind = b'*';
    wire
}

/// A complete line of type `ty`: a scalar, a bulk length, an aggregate
/// header. True when the top-level value is complete.
fn line_value(r: &mut Reader, ty: u8, line: &[u8]) -> Result<bool, DbError> {
    match ty {
        b'$' | b'!' | b'=' => {
            let n = number(line)?;
            if r.stack.is_empty() && !r.value.kind_set() {
                r.value.kind = ty;
            }
            begin_elem(r, false);
            if ty == b'!' {
                r.value.error = r.stack.is_empty() || r.value.error;
            }
            if n < 0 {
                push_summary(r, "(nil)");
                return Ok(end_scalar(r));
            }
            r.bulk_kind = ty;
            r.bulk_left = Some(n as u64 + 2);
            Ok(false)
        }
        b'*' | b'%' | b'~' | b'>' | b'|' => {
            let n = number(line)?;
            if r.stack.is_empty() && !r.value.kind_set() {
                r.value.kind = ty;
            }
            begin_elem(r, true);
            if n < 0 {
                push_summary(r, "(nil)");
                return Ok(end_scalar(r));
            }
            if r.stack.len() >= RESP_DEPTH {
                return Err(DbError(format!("RESP: nested deeper than {RESP_DEPTH}")));
            }
            let n = n as u64;
            let (left, open, close) = match ty {
                b'%' | b'|' => (n.saturating_mul(2), '{', '}'),
                _ => (n, '[', ']'),
            };
            if r.stack.is_empty() {
                r.value.count = n;
            }
            push_char(r, open);
            r.stack.push(Open {
                left,
                close,
                first: true,
            });
            if left == 0 {
                return Ok(close_done(r));
            }
            Ok(false)
        }
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
            if r.stack.is_empty() && !r.value.kind_set() {
                r.value.kind = ty;
            }
            begin_elem(r, false);
            if ty == b'-' {
                r.value.error = r.stack.is_empty() || r.value.error;
                if !r.stack.is_empty() {
                    push_summary(r, "(error) ");
                }
            }
            if ty == b'_' {
                push_summary(r, "(nil)");
            } else {
                scalar_bytes(r, line);
            }
            Ok(end_scalar(r))
        }
        _ => Err(DbError(format!("RESP: unexpected type byte 0x{ty:02x}"))),
    }
}

impl Value {
    fn kind_set(&self) -> bool {
        self.kind != 0
    }
}

fn number(line: &[u8]) -> Result<i64, DbError> {
    if line == b"?" {
        return Err(DbError("RESP: streamed values are not decoded".into()));
    }
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|n| *n >= -1)
        .ok_or_else(|| DbError("RESP: bad length".into()))
}

/// An element starts: separators in the summary, a new top-level element
/// (client: whether it is a secret). The top-level aggregate itself is no
/// element.
fn begin_elem(r: &mut Reader, aggregate: bool) {
    if let Some(top) = r.stack.last_mut() {
        let first = std::mem::replace(&mut top.first, false);
        if !first {
            push_summary(r, ", ");
        }
    } else if aggregate {
        return;
    }
    if r.stack.len() <= 1 {
        r.masking = r.index >= 1 && r.index <= r.mask_until;
        if r.value.elems.len() < RESP_ARGS {
            r.value.elems.push(Vec::new());
        }
    }
}

/// Bytes of a scalar (a bulk payload comes in pieces).
fn scalar_bytes(r: &mut Reader, b: &[u8]) {
    let top_level = r.stack.len() <= 1;
    if r.masking {
        return;
    }
    if top_level && (r.index as usize) < RESP_ARGS {
        if let Some(e) = r.value.elems.last_mut() {
            let room = ELEM_KEEP.saturating_sub(e.len());
            e.extend_from_slice(&b[..b.len().min(room)]);
        }
    }
    push_summary(r, &String::from_utf8_lossy(b));
}

fn push_summary(r: &mut Reader, s: &str) {
    let v = &mut r.value;
    if v.truncated {
        return;
    }
    let room = DB_RESPONSE_KEEP.saturating_sub(v.summary.len());
    if s.len() <= room {
        v.summary.push_str(s);
    } else {
        let (part, _) = cut_text(s.to_string(), room);
        v.summary.push_str(&part);
        v.truncated = true;
    }
}

fn push_char(r: &mut Reader, c: char) {
    let mut b = [0; 4];
    push_summary(r, c.encode_utf8(&mut b));
}

/// A scalar ended: the masking of the next element (client), the
/// aggregates it closes. True when the top-level value is complete.
fn end_scalar(r: &mut Reader) -> bool {
    if r.masking {
        push_summary(r, REDACTED);
        if let Some(e) = r.value.elems.last_mut() {
            *e = REDACTED.as_bytes().to_vec();
        }
        r.masking = false;
    }
    r.bulk_kind = 0;
    if r.stack.len() <= 1 {
        secrets_after(r);
        r.index += 1;
    }
    close_done(r)
}

/// Closes the aggregates whose last element came; true when none is open.
fn close_done(r: &mut Reader) -> bool {
    loop {
        let Some(top) = r.stack.last_mut() else {
            return true;
        };
        if top.left > 0 && !top.first {
            top.left -= 1;
        } else if top.left > 0 {
            // just opened: its elements are still to come
            return false;
        }
        if top.left > 0 {
            return false;
        }
        let close = top.close;
        r.stack.pop();
        push_char(r, close);
        if r.stack.is_empty() {
            return true;
        }
        // the aggregate was itself an element of its parent
        if r.stack.len() == 1 {
            r.index += 1;
        }
    }
}

/// Client commands whose next arguments are secrets, from the elements
/// read so far.
fn secrets_after(r: &mut Reader) {
    let elems = &r.value.elems;
    let i = r.index as usize;
    let Some(cmd) = elems.first() else { return };
    let is = |e: &[u8], w: &str| e.eq_ignore_ascii_case(w.as_bytes());
    let cur = elems.get(i).map(Vec::as_slice).unwrap_or_default();
    // PASS: no Redis command, but POP3's (whose `+OK` greeting reads as a
    // reply of a connection picked up midway)
    let extra = if i == 0 && (is(cmd, "AUTH") || is(cmd, "PASS")) {
        u64::MAX - 1
    } else if i >= 1 && (is(cmd, "HELLO") || is(cmd, "MIGRATE")) && is(cur, "AUTH") {
        if is(cmd, "HELLO") {
            2
        } else {
            1
        }
    } else if i >= 1 && is(cmd, "MIGRATE") && is(cur, "AUTH2") {
        2
    } else if i >= 2
        && is(cmd, "CONFIG")
        && elems.get(1).is_some_and(|s| is(s, "SET"))
        && (is(cur, "requirepass") || is(cur, "masterauth"))
    {
        1
    } else {
        return;
    };
    r.mask_until = r.mask_until.max((i as u64).saturating_add(extra));
}

/// The command's text: its elements joined by spaces (sanitized: the name
/// and key, `?` for the rest; secrets always `[redacted]`).
fn command_text(v: &Value, mode: QueryText) -> (String, bool) {
    let mut parts: Vec<String> = Vec::new();
    for (i, e) in v.elems.iter().enumerate() {
        let s = String::from_utf8_lossy(e).into_owned();
        let keep = mode == QueryText::Full || i <= 1 || s == REDACTED;
        parts.push(if keep { s } else { "?".into() });
    }
    let more = v.count.saturating_sub(v.elems.len() as u64);
    if more > 0 {
        parts.push(format!("... ({more} more)"));
    }
    let cut_elem = v.elems.iter().any(|e| e.len() >= ELEM_KEEP);
    let (t, cut) = cut_text(parts.join(" "), DB_QUERY_KEEP);
    (t, cut || cut_elem || more > 0)
}

/// The reply to a command: status, error, response text.
fn answer(q: &mut DbQuery, v: &Value, ts: u64) {
    let status = if v.error && matches!(v.kind, b'-' | b'!') {
        DbStatus::Error
    } else {
        DbStatus::Ok
    };
    if status == DbStatus::Error {
        let (code, msg) = match v.summary.split_once(' ') {
            Some((c, m)) if c.chars().all(|c| c.is_ascii_uppercase()) => (c, m),
            _ => ("ERR", v.summary.as_str()),
        };
        q.error_code = Some(code.to_string());
        q.error = Some(msg.to_string());
    } else if matches!(v.kind, b'*' | b'%' | b'~') {
        q.rows = Some(v.count);
    }
    q.response = Some(v.summary.clone());
    q.response_truncated = v.truncated;
    q.answer(status, ts);
}

/// A pub/sub message pushed by the server.
fn message(kind: &str, v: &Value, ts: u64) -> DbQuery {
    let mut q = DbQuery::new(DbSystem::Redis, v.ts_first);
    q.kind = DbKind::Message;
    q.operation = Some(kind.to_ascii_uppercase());
    let s = |i: usize| {
        v.elems
            .get(i)
            .map(|e| String::from_utf8_lossy(e).into_owned())
    };
    // pmessage: pattern, channel, payload
    let (chan, payload) = if kind == "pmessage" {
        (s(2), s(3))
    } else {
        (s(1), s(2))
    };
    q.query = chan;
    q.response = payload;
    q.status = Some(DbStatus::Ok);
    q.ts_last_ns = ts.max(q.ts_first_ns);
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Vec<u8> {
        let mut v = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            v.extend(format!("${}\r\n{a}\r\n", a.len()).bytes());
        }
        v
    }

    fn run(c: &mut RedisConn, p: Peer, d: &[u8], ts: u64) -> DbOut {
        c.push(p, d, ts).expect("decodes")
    }

    #[test]
    fn classifies() {
        assert_eq!(classify(b"*2\r\n$3\r\nGET"), Start::Command);
        assert_eq!(classify(b"+OK\r\n"), Start::Reply);
        assert_eq!(classify(b"*2"), Start::Wait);
        assert_eq!(classify(b"*x\r\n"), Start::Not);
        assert_eq!(classify(b"GET / HTTP/1.1"), Start::Not);
        assert_eq!(classify(b"-"), Start::Wait);
    }

    #[test]
    fn pipeline_auth_errors_and_arrays() {
        let mut c = RedisConn::new(QueryText::Full);
        let mut b = cmd(&["AUTH", "default", "hunter2"]);
        b.extend(cmd(&["SET", "k", "marker"]));
        b.extend(cmd(&["LPUSH", "k", "x"]));
        b.extend(cmd(&["LRANGE", "l", "0", "-1"]));
        b.extend(cmd(&["HELLO", "3", "AUTH", "u", "pw", "SETNAME", "n"]));
        let o = run(&mut c, Peer::Client, &b[..7], 1);
        assert!(o.queries.is_empty());
        let o2 = run(&mut c, Peer::Client, &b[7..], 2);
        let wire = [o.wire, o2.wire].concat();
        assert_eq!(wire.len(), b.len());
        let w = String::from_utf8(wire).unwrap();
        assert!(
            !w.contains("hunter2") && !w.contains("pw\r") && w.contains("*******"),
            "{w}"
        );
        assert!(!w.contains("$1\r\nu\r\n"), "HELLO's user is masked: {w}");
        let r = b"+OK\r\n+OK\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n*2\r\n$1\r\na\r\n$-1\r\n%1\r\n+server\r\n+redis\r\n";
        let o = run(&mut c, Peer::Server, r, 5);
        let q = &o.queries;
        assert_eq!(q.len(), 5);
        assert_eq!(q[0].query.as_deref(), Some("AUTH [redacted] [redacted]"));
        assert_eq!(q[1].query.as_deref(), Some("SET k marker"));
        assert_eq!(q[1].response.as_deref(), Some("OK"));
        assert_eq!(q[2].status, Some(DbStatus::Error));
        assert_eq!(q[2].error_code.as_deref(), Some("WRONGTYPE"));
        assert_eq!(
            q[2].error.as_deref(),
            Some("Operation against a key holding the wrong kind of value")
        );
        assert_eq!(
            (q[3].response.as_deref(), q[3].rows),
            (Some("[a, (nil)]"), Some(2))
        );
        assert_eq!(
            q[4].query.as_deref(),
            Some("HELLO 3 AUTH [redacted] [redacted] SETNAME n")
        );
        assert_eq!(q[4].response.as_deref(), Some("{server, redis}"));
        assert_eq!(q[1].latency_ns(), Some(3));
    }

    #[test]
    fn sanitized_multi_exec_and_pubsub() {
        let mut c = RedisConn::new(QueryText::Sanitized);
        let mut b = cmd(&["MULTI"]);
        b.extend(cmd(&["SET", "k", "v1"]));
        b.extend(cmd(&["INCR", "n"]));
        b.extend(cmd(&["EXEC"]));
        b.extend(cmd(&["SUBSCRIBE", "a", "b"]));
        run(&mut c, Peer::Client, &b, 1);
        let r = b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n";
        let o = run(&mut c, Peer::Server, r, 2);
        let q = &o.queries;
        assert_eq!(q.len(), 6, "{q:#?}");
        assert_eq!(q[1].query.as_deref(), Some("SET k ?"));
        assert_eq!(q[1].response.as_deref(), Some("QUEUED"));
        assert_eq!(q[1].namespace, None);
        assert_eq!(q[3].response.as_deref(), Some("[OK, 1]"));
        assert_eq!(q[4].operation.as_deref(), Some("SUBSCRIBE"));
        assert_eq!(q[5].kind, DbKind::Message);
        assert_eq!(
            (q[5].query.as_deref(), q[5].response.as_deref()),
            (Some("a"), Some("hello"))
        );
        assert!(c.finish().is_empty());
        // SELECT names the database of what follows
        run(&mut c, Peer::Client, &cmd(&["SELECT", "3"]), 3);
        run(&mut c, Peer::Client, &cmd(&["GET", "k"]), 3);
        let o = run(&mut c, Peer::Server, b"+OK\r\n$-1\r\n", 4);
        assert_eq!(o.queries[1].namespace.as_deref(), Some("3"));
        assert_eq!(o.queries[1].response.as_deref(), Some("(nil)"));
    }

    #[test]
    fn resynchronises_after_lost_bytes_and_rejects_garbage() {
        let mut c = RedisConn::new(QueryText::Full);
        run(&mut c, Peer::Client, &cmd(&["GET", "a"])[..6], 1);
        c.gap(Peer::Client);
        let o = run(&mut c, Peer::Client, b"tail of something\r\n", 2);
        assert_eq!(o.raw, b"tail of something\r\n");
        // a reply before the client picked up again: skipped
        let o = run(&mut c, Peer::Server, b"+OK\r\n", 3);
        assert_eq!(o.raw, b"+OK\r\n");
        let o = run(&mut c, Peer::Client, &cmd(&["GET", "b"]), 3);
        assert_eq!(o.notices.len(), 1);
        let o = run(&mut c, Peer::Server, b"$1\r\nx\r\n", 4);
        assert_eq!(o.queries[0].query.as_deref(), Some("GET b"));
        assert!(c.push(Peer::Server, b"\x00", 5).is_err());
        let mut deep = RedisConn::new(QueryText::Full);
        assert!(deep.push(Peer::Server, &b"*1\r\n".repeat(40), 1).is_err());
    }
}
