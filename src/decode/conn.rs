//! One connection: its two directions rebuilt as ordered byte streams,
//! classified by their first bytes (HTTP/2 preface, HTTP/1 request or status
//! line, PostgreSQL's StartupMessage, MySQL's login packet, a RESP value;
//! anything else stays raw) and decoded.
//!
//! Database connections: PostgreSQL and MySQL stop decoding at lost bytes
//! (the rest is raw), Redis picks up again at the next call that starts a
//! RESP value.
//!
//! Lost bytes are never glued over: an HTTP/1 direction restarts its parser
//! at the next call (and stays raw until one parses), HTTP/2 loses its HPACK
//! state and the rest of the connection is shown raw. The `segments` carry
//! the bytes as they should appear on the wire (redacted), with the size of
//! every hole, for the pcapng writer.
//!
//! Everything shown as captured (raw chunks, HTTP/1 and raw segments) has
//! the values of sensitive header fields masked in place
//! ([`RawRedactor`], one per direction, fed every byte in order).
//!
//! A connection that makes the decoder hold more than
//! [`super::limits::CONN_MEMORY`], or whose exchanges add up to more than
//! [`super::limits::AMPLIFICATION_FACTOR`] times its plaintext (plus
//! [`super::limits::AMPLIFICATION_SLACK`]), is flushed and shown raw from there,
//! with a notice.

use super::db::{DbConn, DbQuery, DbSystem, QueryText};
use super::http1::{Http1Conn, Http1Error};
use super::http2::{self, Http2Conn};
use super::limits::{AMPLIFICATION_FACTOR, AMPLIFICATION_SLACK, CONN_MEMORY};
use super::raw::RawRedactor;
use super::{header_bytes, mysql, postgres, redis, Exchange, HttpMessage, Peer, Redact};

/// Bytes undecided after this many are raw.
const CLASSIFY_LIMIT: usize = 4096;

/// Calls are decoded in slices of at most this many bytes, the budgets
/// checked after each: what one slice can decode to before a check is
/// bounded (HTTP/2: ~150 messages of at most `MAX_HEADER_BYTES`).
const SLICE: usize = 4096;

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

/// What a connection's bytes turned into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Exchange(Box<Exchange>),
    /// A database command and its answer (or a pushed message).
    Db(Box<DbQuery>),
    /// Bytes that are not (or could not be decoded as) HTTP.
    Raw {
        /// The captured process sent them (write) or received them (read).
        outgoing: bool,
        ts_ns: u64,
        data: Vec<u8>,
    },
    /// Decoding problem (lost bytes, a protocol error); what follows says
    /// how the connection is shown from here.
    Notice {
        ts_ns: u64,
        text: String,
    },
}

/// Bytes for the wire view (pcapng).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub from_client: bool,
    pub ts_ns: u64,
    /// Bytes lost before these.
    pub gap_before: u64,
    pub data: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct Decoded {
    pub items: Vec<Item>,
    pub segments: Vec<Segment>,
}

/// A call held until the first bytes tell the protocol.
#[derive(Debug)]
struct Held {
    outgoing: bool,
    data: Vec<u8>,
    /// `data` as shown raw.
    masked: Vec<u8>,
    ts: u64,
}

#[derive(Debug)]
enum State {
    /// Calls held until the first bytes tell the protocol.
    Unknown(Vec<Held>),
    Http1 {
        conn: Box<Http1Conn>,
        failed: [bool; 2],
    },
    Http2(Box<Http2Conn>),
    Db(Box<DbConn>),
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Wait,
    Raw,
    Http1 {
        client_outgoing: bool,
    },
    Http2 {
        client_outgoing: bool,
    },
    Db {
        system: DbSystem,
        client_outgoing: bool,
        /// PostgreSQL picked up after its start-up.
        midstream: bool,
    },
}

fn could_become(data: &[u8], word: &[u8]) -> bool {
    let n = data.len().min(word.len());
    data[..n] == word[..n]
}

/// What the first bytes of one direction say about the connection.
fn classify(outgoing: bool, data: &[u8]) -> Verdict {
    if data.starts_with(http2::PREFACE) {
        return Verdict::Http2 {
            client_outgoing: outgoing,
        };
    }
    // A server's first SETTINGS frame: length a multiple of 6, type 4,
    // no flags, stream 0.
    if data.len() >= 9 && data[3] == 4 && data[4] == 0 && data[5..9] == [0, 0, 0, 0] {
        let len = u32::from_be_bytes([0, data[0], data[1], data[2]]);
        if len % 6 == 0 && len <= 16384 {
            return Verdict::Http2 {
                client_outgoing: !outgoing,
            };
        }
    }
    for m in METHODS {
        let word = format!("{m} ");
        if data.starts_with(word.as_bytes()) {
            return Verdict::Http1 {
                client_outgoing: outgoing,
            };
        }
    }
    if data.starts_with(b"HTTP/1.") {
        return Verdict::Http1 {
            client_outgoing: !outgoing,
        };
    }
    let (db, db_maybe) = classify_db(outgoing, data);
    if let Some(v) = db {
        return v;
    }
    let maybe = db_maybe
        || http2::maybe_preface(data)
        || could_become(data, b"HTTP/1.")
        || METHODS
            .iter()
            .any(|m| could_become(data, format!("{m} ").as_bytes()));
    if maybe && data.len() < CLASSIFY_LIMIT {
        Verdict::Wait
    } else {
        Verdict::Raw
    }
}

/// What the first bytes of one direction say about a database protocol:
/// a verdict, or whether one may still come.
fn classify_db(outgoing: bool, data: &[u8]) -> (Option<Verdict>, bool) {
    let db = |system, client_outgoing, midstream| {
        Some(Verdict::Db {
            system,
            client_outgoing,
            midstream,
        })
    };
    let pg = postgres::startup(data);
    if pg == Some(true) {
        return (db(DbSystem::Postgresql, outgoing, false), false);
    }
    if postgres::midstream_query(data) {
        return (db(DbSystem::Postgresql, outgoing, true), false);
    }
    let my = mysql::login(data);
    if my == Some(true) {
        return (db(DbSystem::Mysql, outgoing, false), false);
    }
    let resp = redis::classify(data);
    match resp {
        redis::Start::Command => return (db(DbSystem::Redis, outgoing, false), false),
        redis::Start::Reply => return (db(DbSystem::Redis, !outgoing, false), false),
        _ => {}
    }
    (
        None,
        pg.is_none() || my.is_none() || resp == redis::Start::Wait,
    )
}

/// Decoder of one connection.
#[derive(Debug)]
pub struct ConnDecoder {
    state: State,
    redact: Redact,
    /// Whether the captured process is the client (known once classified;
    /// raw connections count the process as the client).
    client_outgoing: Option<bool>,
    /// Bytes lost per direction (outgoing, incoming) not yet shown as a gap.
    gaps: [u64; 2],
    /// Masks what is shown raw, per direction (incoming, outgoing). While
    /// HTTP/1 decodes, its decoder masks (and these wait).
    raw: [RawRedactor; 2],
    /// Plaintext bytes pushed.
    captured: u64,
    /// Bytes of the exchanges made of them (see `exchange_size`).
    decoded: u64,
    /// How database query text is shown.
    query_text: QueryText,
}

/// The bytes an exchange shows: header and trailer fields, method, path,
/// authority, kept bodies (what the amplification budget counts).
pub fn exchange_size(e: &Exchange) -> u64 {
    let s = |o: &Option<String>| o.as_ref().map_or(0, String::len);
    let m = |o: &Option<HttpMessage>| {
        o.as_ref().map_or(0, |m| {
            header_bytes(&m.headers) + header_bytes(&m.trailers) + m.body.len()
        })
    };
    (s(&e.method) + s(&e.path) + s(&e.authority) + m(&e.request) + m(&e.response)) as u64
}

/// Adds raw bytes, joined to the previous item when that is raw bytes of
/// the same direction and call.
fn raw_item(out: &mut Decoded, outgoing: bool, ts_ns: u64, data: Vec<u8>) {
    if let Some(Item::Raw {
        outgoing: o,
        ts_ns: t,
        data: d,
    }) = out.items.last_mut()
    {
        if *o == outgoing && *t == ts_ns {
            d.extend_from_slice(&data);
            return;
        }
    }
    out.items.push(Item::Raw {
        outgoing,
        ts_ns,
        data,
    });
}

fn exchanges(out: &mut Decoded, list: Vec<Exchange>) {
    out.items
        .extend(list.into_iter().map(|e| Item::Exchange(Box::new(e))));
}

fn notices(out: &mut Decoded, ts_ns: u64, list: Vec<String>) {
    out.items
        .extend(list.into_iter().map(|text| Item::Notice { ts_ns, text }));
}

impl ConnDecoder {
    pub fn new(redact: Redact) -> ConnDecoder {
        ConnDecoder {
            state: State::Unknown(Vec::new()),
            raw: [
                RawRedactor::new(redact.clone()),
                RawRedactor::new(redact.clone()),
            ],
            redact,
            client_outgoing: None,
            gaps: [0, 0],
            captured: 0,
            decoded: 0,
            query_text: QueryText::default(),
        }
    }

    /// Database query text shown as `mode` says (default: sanitized).
    pub fn with_query_text(mut self, mode: QueryText) -> ConnDecoder {
        self.query_text = mode;
        self
    }

    /// Whether the captured process is the client (None: not known yet).
    pub fn process_is_client(&self) -> Option<bool> {
        self.client_outgoing
    }

    /// `--raw`: a call as captured with database passwords masked.
    /// Some(Some(bytes)): a database connection's call, masked (its length
    /// unchanged); Some(None): not known yet, or the masked form is not
    /// aligned with the call (held calls, inline commands); None: the
    /// connection is not a database's (the caller stops asking).
    pub fn db_mask(
        &mut self,
        outgoing: bool,
        data: &[u8],
        ts_ns: u64,
        lost: u64,
    ) -> Option<Option<Vec<u8>>> {
        if !matches!(self.state, State::Unknown(_) | State::Db(_)) {
            return None;
        }
        let d = self.push(outgoing, data, ts_ns, lost);
        if !matches!(self.state, State::Db(_) | State::Unknown(_)) {
            return None;
        }
        let from_client = self.client_outgoing == Some(outgoing);
        let mine: Vec<u8> = d
            .segments
            .into_iter()
            .filter(|s| s.from_client == from_client)
            .flat_map(|s| s.data)
            .collect();
        // held calls of this direction come first: this call is the tail
        Some(
            (mine.len() >= data.len() && !data.is_empty())
                .then(|| mine[mine.len() - data.len()..].to_vec()),
        )
    }

    /// Bytes of decoding state the connection holds (held calls, buffers,
    /// messages in progress, HPACK tables).
    pub fn memory(&self) -> usize {
        match &self.state {
            State::Unknown(held) => held.iter().map(|h| h.data.len() + h.masked.len()).sum(),
            State::Http1 { conn, .. } => conn.memory(),
            State::Http2(conn) => conn.memory(),
            State::Db(conn) => conn.memory(),
            State::Raw => 0,
        }
    }

    /// One call's bytes. `lost` bytes of the call were never captured (lost
    /// records, or cut at the capture limit): they follow `data`.
    pub fn push(&mut self, outgoing: bool, data: &[u8], ts_ns: u64, lost: u64) -> Decoded {
        let mut out = Decoded::default();
        // An empty call carries nothing (BPF never sends one; a crafted
        // record could, and while the protocol is undecided every held call
        // is looked at again on each push).
        if data.is_empty() && lost == 0 {
            return out;
        }
        if let State::Unknown(held) = &mut self.state {
            let masked = self.raw[usize::from(outgoing)].push(data).into_owned();
            if lost > 0 {
                self.raw[usize::from(outgoing)].gap();
            }
            held.push(Held {
                outgoing,
                data: data.to_vec(),
                masked,
                ts: ts_ns,
            });
            let first: Vec<u8> = held
                .iter()
                .filter(|h| h.outgoing == outgoing)
                .flat_map(|h| h.data.clone())
                .collect();
            let verdict = match classify(outgoing, &first) {
                Verdict::Wait if lost > 0 => Verdict::Raw,
                v => v,
            };
            let state = match verdict {
                Verdict::Wait => return out,
                Verdict::Raw => {
                    self.client_outgoing = Some(true);
                    State::Raw
                }
                Verdict::Http1 { client_outgoing } => {
                    self.client_outgoing = Some(client_outgoing);
                    State::Http1 {
                        conn: Box::new(Http1Conn::new(self.redact.clone())),
                        failed: [false; 2],
                    }
                }
                Verdict::Http2 { client_outgoing } => {
                    self.client_outgoing = Some(client_outgoing);
                    State::Http2(Box::new(Http2Conn::new(self.redact.clone())))
                }
                Verdict::Db {
                    system,
                    client_outgoing,
                    midstream,
                } => {
                    self.client_outgoing = Some(client_outgoing);
                    State::Db(Box::new(if midstream {
                        DbConn::postgres_midstream(self.query_text)
                    } else {
                        DbConn::new(system, self.query_text)
                    }))
                }
            };
            let State::Unknown(held) = std::mem::replace(&mut self.state, state) else {
                unreachable!()
            };
            let n = held.len();
            for (i, h) in held.into_iter().enumerate() {
                let l = if i + 1 == n { lost } else { 0 };
                self.feed(h.outgoing, &h.data, Some(h.masked), h.ts, l, &mut out);
            }
        } else {
            self.feed(outgoing, data, None, ts_ns, lost, &mut out);
        }
        out
    }

    /// Decodes a call in slices of at most `SLICE` bytes, checking the
    /// budgets after each (a call can hold thousands of HTTP/2 messages).
    fn feed(
        &mut self,
        outgoing: bool,
        data: &[u8],
        pre_masked: Option<Vec<u8>>,
        ts_ns: u64,
        lost: u64,
        out: &mut Decoded,
    ) {
        let mut pos = 0;
        loop {
            let end = if self.decoding() {
                (pos + SLICE).min(data.len())
            } else {
                data.len()
            };
            let l = if end == data.len() { lost } else { 0 };
            let m = pre_masked.as_ref().map(|m| m[pos..end].to_vec());
            self.captured += (end - pos) as u64;
            let from = out.items.len();
            self.decode(outgoing, &data[pos..end], m, ts_ns, l, out);
            self.check_budgets(ts_ns, from, out);
            pos = end;
            if pos >= data.len() {
                return;
            }
        }
    }

    /// Whether a decoder runs (not raw, not undecided).
    fn decoding(&self) -> bool {
        matches!(
            self.state,
            State::Http1 { .. } | State::Http2(_) | State::Db(_)
        )
    }

    fn peer(&self, outgoing: bool) -> Peer {
        if Some(outgoing) == self.client_outgoing {
            Peer::Client
        } else {
            Peer::Server
        }
    }

    fn segment(&mut self, out: &mut Decoded, outgoing: bool, ts_ns: u64, data: Vec<u8>) {
        segment(
            &mut self.gaps,
            self.client_outgoing,
            out,
            outgoing,
            ts_ns,
            data,
        );
    }

    /// `masked`: the bytes as shown raw when already known (held calls);
    /// else the direction's redactor makes them (except under HTTP/1,
    /// whose decoder masks).
    fn decode(
        &mut self,
        outgoing: bool,
        data: &[u8],
        mut pre_masked: Option<Vec<u8>>,
        ts_ns: u64,
        lost: u64,
        out: &mut Decoded,
    ) {
        let peer = self.peer(outgoing);
        let ConnDecoder {
            state,
            gaps,
            client_outgoing,
            raw,
            redact,
            ..
        } = self;
        let client_outgoing = *client_outgoing;
        let mut seg = |out: &mut Decoded, data: Vec<u8>| {
            segment(gaps, client_outgoing, out, outgoing, ts_ns, data)
        };
        let redactor = &mut raw[usize::from(outgoing)];
        // The direction's redactor sees every byte it has not seen (held
        // calls it has), so that it stays in step.
        let mut masked = |data: &[u8], keep: bool| -> Vec<u8> {
            let m = match pre_masked.take() {
                Some(m) => m,
                None if keep => redactor.push(data).into_owned(),
                None => {
                    let _ = redactor.push(data);
                    Vec::new()
                }
            };
            if lost > 0 {
                redactor.gap();
            }
            m
        };
        match state {
            State::Unknown(_) => unreachable!("classified before decoding"),
            State::Raw => {
                let m = masked(data, true);
                raw_item(out, outgoing, ts_ns, m.clone());
                seg(out, m);
            }
            State::Http1 { conn, failed } => {
                let c = Call {
                    outgoing,
                    peer,
                    data,
                    ts_ns,
                    lost,
                };
                if http1_call(conn, failed, redact, &c, out, &mut seg) {
                    *raw = by_direction(conn.take_redactors(), client_outgoing);
                    *state = State::Raw;
                }
            }
            State::Http2(conn) => {
                masked(data, false);
                let c = Call {
                    outgoing,
                    peer,
                    data,
                    ts_ns,
                    lost,
                };
                if http2_call(conn, redact, &c, out, &mut seg) {
                    *state = State::Raw;
                }
            }
            State::Db(conn) => {
                masked(data, false);
                let c = Call {
                    outgoing,
                    peer,
                    data,
                    ts_ns,
                    lost,
                };
                if db_call(conn, &c, out, &mut seg) {
                    *state = State::Raw;
                }
            }
        }
        if lost > 0 {
            self.gaps[usize::from(!outgoing)] += lost;
        }
    }

    /// Stops decoding (what is open is flushed, the rest shown raw) when the
    /// connection holds or shows more than its budgets allow.
    fn check_budgets(&mut self, ts_ns: u64, from: usize, out: &mut Decoded) {
        self.decoded += out.items[from..]
            .iter()
            .map(|i| match i {
                Item::Exchange(e) => exchange_size(e),
                Item::Db(q) => q.size(),
                _ => 0,
            })
            .sum::<u64>();
        if !self.decoding() {
            return;
        }
        let allowed = AMPLIFICATION_FACTOR
            .saturating_mul(self.captured)
            .saturating_add(AMPLIFICATION_SLACK);
        let why = if self.decoded > allowed {
            format!(
                "decoded exchanges reached {} bytes from {} bytes of plaintext (limit: \
                 {AMPLIFICATION_FACTOR}x + {AMPLIFICATION_SLACK})",
                self.decoded, self.captured
            )
        } else {
            let held = self.memory();
            if held <= CONN_MEMORY {
                return;
            }
            format!("decoding state reached {held} bytes (limit: {CONN_MEMORY})")
        };
        self.stop(
            ts_ns,
            &format!(
                "{why}: open exchanges are flushed and the rest of the connection is shown raw"
            ),
            out,
        );
    }

    /// Ends decoding: a notice saying why, what is open as exchanges, bytes
    /// not decoded yet raw; the connection is raw from here.
    fn stop(&mut self, ts_ns: u64, why: &str, out: &mut Decoded) {
        out.items.push(Item::Notice {
            ts_ns,
            text: why.to_string(),
        });
        let client_outgoing = self.client_outgoing;
        // Bytes read but not decoded: (outgoing, masked, on the wire yet).
        let mut rest: Vec<(bool, Vec<u8>, bool)> = Vec::new();
        match std::mem::replace(&mut self.state, State::Raw) {
            State::Http1 { mut conn, .. } => {
                for peer in [Peer::Client, Peer::Server] {
                    let r = conn.take_unparsed(peer);
                    let outgoing = (peer == Peer::Client) == (client_outgoing == Some(true));
                    rest.push((outgoing, self.redact.raw(&r).into_owned(), true));
                }
                exchanges(out, conn.finish());
                notices(out, ts_ns, conn.take_notices());
                self.raw = by_direction(conn.take_redactors(), client_outgoing);
            }
            State::Http2(mut conn) => {
                for peer in [Peer::Client, Peer::Server] {
                    let r = conn.take_buffered(peer);
                    let outgoing = (peer == Peer::Client) == (client_outgoing == Some(true));
                    let m = RawRedactor::h2_frames(self.redact.clone())
                        .push(&r)
                        .into_owned();
                    rest.push((outgoing, m, false));
                }
                exchanges(out, conn.finish());
                notices(out, ts_ns, conn.take_notices());
            }
            State::Db(mut conn) => {
                db_queries(out, conn.finish());
                notices(out, ts_ns, conn.take_notices());
            }
            other => self.state = other,
        }
        for (outgoing, data, on_wire) in rest {
            if data.is_empty() {
                continue;
            }
            raw_item(out, outgoing, ts_ns, data.clone());
            if !on_wire {
                self.segment(out, outgoing, ts_ns, data);
            }
        }
    }

    /// The connection closed: what was still open.
    pub fn finish(&mut self, ts_ns: u64) -> Decoded {
        let mut out = Decoded::default();
        match std::mem::replace(&mut self.state, State::Raw) {
            State::Unknown(held) => {
                self.client_outgoing = Some(true);
                for h in held {
                    out.items.push(Item::Raw {
                        outgoing: h.outgoing,
                        ts_ns: h.ts,
                        data: h.masked.clone(),
                    });
                    self.segment(&mut out, h.outgoing, h.ts, h.masked);
                }
            }
            State::Http1 { mut conn, .. } => {
                exchanges(&mut out, conn.finish());
                notices(&mut out, ts_ns, conn.take_notices());
            }
            State::Http2(mut conn) => {
                exchanges(&mut out, conn.finish());
                notices(&mut out, ts_ns, conn.take_notices());
            }
            State::Db(mut conn) => {
                db_queries(&mut out, conn.finish());
                notices(&mut out, ts_ns, conn.take_notices());
            }
            State::Raw => {}
        }
        out
    }
}

/// One call being decoded.
struct Call<'a> {
    outgoing: bool,
    peer: Peer,
    data: &'a [u8],
    ts_ns: u64,
    /// Bytes lost after `data`.
    lost: u64,
}

/// A call on an HTTP/1 connection; true when the connection switched
/// protocols (shown raw from here).
fn http1_call(
    conn: &mut Http1Conn,
    failed: &mut [bool; 2],
    redact: &Redact,
    c: &Call<'_>,
    out: &mut Decoded,
    seg: &mut impl FnMut(&mut Decoded, Vec<u8>),
) -> bool {
    let (peer, ts_ns) = (c.peer, c.ts_ns);
    let side = peer.index();
    if failed[side] {
        // Try to pick up again at this call.
        conn.restart(peer);
    }
    let o = conn.push(peer, c.data, ts_ns);
    notices(out, ts_ns, conn.take_notices());
    exchanges(out, o.exchanges);
    match o.error {
        None => {
            if failed[side] {
                out.items.push(Item::Notice {
                    ts_ns,
                    text: format!("HTTP/1 {} stream decodable again", peer_name(peer)),
                });
                failed[side] = false;
            }
        }
        Some(e) => {
            let rest = conn.take_unparsed(peer);
            if !failed[side] {
                out.items.push(Item::Notice {
                    ts_ns,
                    text: http1_failure(peer, &e),
                });
            }
            failed[side] = true;
            raw_item(out, c.outgoing, ts_ns, redact.raw(&rest).into_owned());
        }
    }
    if c.lost > 0 {
        conn.restart(peer);
        conn.gap(peer);
        failed[side] = true;
        out.items.push(Item::Notice {
            ts_ns,
            text: format!(
                "{} bytes of the {} stream were not captured",
                c.lost,
                peer_name(peer)
            ),
        });
    }
    seg(out, o.wire);
    if conn.upgraded {
        out.items.push(Item::Notice {
            ts_ns,
            text: "the connection switched protocols (101): shown raw from here".into(),
        });
    }
    conn.upgraded
}

/// A call on an HTTP/2 connection; true when decoding stopped (lost bytes,
/// an error): the rest of the connection is shown raw.
fn http2_call(
    conn: &mut Http2Conn,
    redact: &Redact,
    c: &Call<'_>,
    out: &mut Decoded,
    seg: &mut impl FnMut(&mut Decoded, Vec<u8>),
) -> bool {
    let (peer, ts_ns) = (c.peer, c.ts_ns);
    let why = match conn.push(peer, c.data, ts_ns) {
        Ok(o) => {
            notices(out, ts_ns, conn.take_notices());
            exchanges(out, o.exchanges);
            seg(out, o.wire);
            if c.lost == 0 {
                return false;
            }
            format!(
                "{} bytes of the HTTP/2 {} stream were not captured: the rest of the \
                 connection is shown raw",
                c.lost,
                peer_name(peer)
            )
        }
        Err(e) => format!("HTTP/2: {e}: the rest of the connection is shown raw"),
    };
    out.items.push(Item::Notice { ts_ns, text: why });
    // A partial frame; after an error, from the frame that failed on (some
    // of it may have come in earlier calls).
    let rest = conn.take_buffered(peer);
    exchanges(out, conn.finish());
    notices(out, ts_ns, conn.take_notices());
    if !rest.is_empty() {
        let rest = RawRedactor::h2_frames(redact.clone())
            .push(&rest)
            .into_owned();
        raw_item(out, c.outgoing, ts_ns, rest.clone());
        seg(out, rest);
    }
    true
}

fn db_queries(out: &mut Decoded, list: Vec<DbQuery>) {
    out.items
        .extend(list.into_iter().map(|q| Item::Db(Box::new(q))));
}

/// A call on a database connection; true when decoding stopped (a
/// protocol error; lost bytes of PostgreSQL or MySQL): the rest of the
/// connection is shown raw.
fn db_call(
    conn: &mut DbConn,
    c: &Call<'_>,
    out: &mut Decoded,
    seg: &mut impl FnMut(&mut Decoded, Vec<u8>),
) -> bool {
    let (peer, ts_ns) = (c.peer, c.ts_ns);
    let name = conn.system().as_str();
    let o = conn.push(peer, c.data, ts_ns);
    notices(out, ts_ns, o.notices);
    notices(out, ts_ns, conn.take_notices());
    db_queries(out, o.queries);
    seg(out, o.wire);
    // Why decoding stops here, if it does.
    let stop = match o.error {
        Some(e) => Some(format!(
            "{name}: {e}: the rest of the connection is shown raw"
        )),
        None if c.lost == 0 => None,
        None if conn.gap(peer) => {
            out.items.push(Item::Notice {
                ts_ns,
                text: format!(
                    "{} bytes of the {name} {} stream were not captured: decoding resumes at \
                     the next call that starts a message",
                    c.lost,
                    peer_name(peer)
                ),
            });
            None
        }
        None => Some(format!(
            "{} bytes of the {name} {} stream were not captured: the rest of the connection \
             is shown raw",
            c.lost,
            peer_name(peer)
        )),
    };
    if let Some(text) = &stop {
        out.items.push(Item::Notice {
            ts_ns,
            text: text.clone(),
        });
    }
    if !o.raw.is_empty() {
        raw_item(out, c.outgoing, ts_ns, o.raw.clone());
        seg(out, o.raw);
    }
    if stop.is_none() {
        return false;
    }
    db_queries(out, conn.finish());
    notices(out, ts_ns, conn.take_notices());
    true
}

/// Redactors by peer (client, server) as redactors by direction
/// (incoming, outgoing).
fn by_direction(
    [client, server]: [RawRedactor; 2],
    client_outgoing: Option<bool>,
) -> [RawRedactor; 2] {
    if client_outgoing == Some(true) {
        [server, client]
    } else {
        [client, server]
    }
}

/// Wire bytes of one direction, after the hole lost before them.
fn segment(
    gaps: &mut [u64; 2],
    client_outgoing: Option<bool>,
    out: &mut Decoded,
    outgoing: bool,
    ts_ns: u64,
    data: Vec<u8>,
) {
    let from_client = client_outgoing == Some(outgoing);
    let gap = std::mem::take(&mut gaps[usize::from(!outgoing)]);
    if let Some(last) = out.segments.last_mut() {
        if gap == 0 && last.from_client == from_client && last.ts_ns == ts_ns {
            last.data.extend_from_slice(&data);
            return;
        }
    }
    if !data.is_empty() || gap > 0 {
        out.segments.push(Segment {
            from_client,
            ts_ns,
            gap_before: gap,
            data,
        });
    }
}

fn peer_name(p: Peer) -> &'static str {
    match p {
        Peer::Client => "request",
        Peer::Server => "response",
    }
}

fn http1_failure(peer: Peer, e: &Http1Error) -> String {
    format!(
        "HTTP/1 {} stream: {e}: shown raw until a call starts a message",
        peer_name(peer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchanges(d: &Decoded) -> Vec<&Exchange> {
        d.items
            .iter()
            .filter_map(|i| match i {
                Item::Exchange(e) => Some(&**e),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn classifies_by_first_bytes() {
        assert_eq!(
            classify(true, b"GET / HTTP/1.1\r\n"),
            Verdict::Http1 {
                client_outgoing: true
            }
        );
        assert_eq!(
            classify(false, b"GET / HTTP/1.1\r\n"),
            Verdict::Http1 {
                client_outgoing: false
            }
        );
        assert_eq!(
            classify(false, b"HTTP/1.1 200 OK\r\n"),
            Verdict::Http1 {
                client_outgoing: true
            }
        );
        assert_eq!(classify(true, b"PO"), Verdict::Wait);
        assert_eq!(classify(true, b"PRI * HTTP/2.0\r\n"), Verdict::Wait);
        assert_eq!(
            classify(true, http2::PREFACE),
            Verdict::Http2 {
                client_outgoing: true
            }
        );
        assert_eq!(
            classify(false, &[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]),
            Verdict::Http2 {
                client_outgoing: true
            }
        );
        assert_eq!(classify(true, b"\x00\x01binary"), Verdict::Raw);
        assert_eq!(classify(true, b"SSH-2.0-OpenSSH"), Verdict::Raw);
    }

    fn db_queries(d: &Decoded) -> Vec<&DbQuery> {
        d.items
            .iter()
            .filter_map(|i| match i {
                Item::Db(q) => Some(&**q),
                _ => None,
            })
            .collect()
    }

    fn pg(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![ty];
        v.extend(((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    /// Database streams by their first bytes, whichever end is captured;
    /// HTTP and the rest as before.
    #[test]
    fn classifies_databases() {
        let db = |system, client_outgoing, midstream| Verdict::Db {
            system,
            client_outgoing,
            midstream,
        };
        let startup = b"\0\0\0\x10\0\x03\0\0user\0u\0\0";
        assert_eq!(
            classify(true, startup),
            db(DbSystem::Postgresql, true, false)
        );
        assert_eq!(
            classify(false, startup),
            db(DbSystem::Postgresql, false, false)
        );
        assert_eq!(classify(true, &startup[..6]), Verdict::Wait);
        assert_eq!(
            classify(true, &pg(b'Q', b"select 1\0")),
            db(DbSystem::Postgresql, true, true)
        );
        let mut login = vec![40, 0, 0, 2];
        login.extend((0x200u32 | 0x800 | 0x8000).to_le_bytes());
        login.extend([0, 0, 0, 1, 33]);
        login.extend([0; 23]);
        login.extend(b"root\0\0");
        assert_eq!(classify(false, &login), db(DbSystem::Mysql, false, false));
        assert_eq!(classify(true, &login[..20]), Verdict::Wait);
        assert_eq!(
            classify(true, b"*1\r\n$4\r\nPING\r\n"),
            db(DbSystem::Redis, true, false)
        );
        assert_eq!(
            classify(true, b"+PONG\r\n"),
            db(DbSystem::Redis, false, false)
        );
        assert_eq!(classify(true, b"*1"), Verdict::Wait);
        assert_eq!(classify(true, b"*x\r\n"), Verdict::Raw);
    }

    /// A PostgreSQL server's side: the client's password is masked on the
    /// wire, the query is a record, the server is the captured process.
    #[test]
    fn postgres_server_side_with_password_masked() {
        let mut c = ConnDecoder::new(Redact::new(&[])).with_query_text(QueryText::Full);
        let startup = b"\0\0\0\x10\0\x03\0\0user\0u\0\0";
        assert!(c.push(false, &startup[..3], 1, 0).items.is_empty());
        let d = c.push(false, &startup[3..], 2, 0);
        assert_eq!(c.process_is_client(), Some(false));
        assert!(d.items.is_empty());
        let d = c.push(false, &pg(b'p', b"hunter2\0"), 3, 0);
        assert_eq!(d.segments[0].data, b"p\0\0\0\x0c********");
        c.push(false, &pg(b'Q', b"select 'marker'\0"), 4, 0);
        let mut r = pg(b'D', &[0, 1]);
        r.extend(pg(b'C', b"SELECT 1\0"));
        r.extend(pg(b'Z', b"I"));
        let d = c.push(true, &r, 9, 0);
        let q = db_queries(&d);
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].query.as_deref(), Some("select 'marker'"));
        assert_eq!((q[0].rows, q[0].latency_ns()), (Some(1), Some(5)));
        // lost bytes: the rest is raw, with a notice
        let d = c.push(false, &pg(b'Q', b"select 2\0"), 10, 100);
        assert_eq!(notices(&d).len(), 1, "{d:?}");
        let d = c.push(true, b"anything", 11, 0);
        assert_eq!(raw_bytes(&d), 8);
        assert_eq!(db_queries(&c.finish(12)).len(), 0);
    }

    /// A protocol error keeps what the call decoded before it; the rest of
    /// the call, and of the connection, is raw.
    #[test]
    fn db_protocol_error_mid_call() {
        let mut c = ConnDecoder::new(Redact::new(&[])).with_query_text(QueryText::Full);
        c.push(true, &pg(b'Q', b"select 1\0"), 1, 0);
        let mut r = pg(b'C', b"SELECT 1\0");
        r.extend(pg(b'Z', b"I"));
        r.extend(b"\x01garbage");
        let d = c.push(false, &r, 2, 0);
        assert_eq!(db_queries(&d).len(), 1);
        let n = notices(&d);
        assert_eq!(
            n,
            [
                "postgresql: PostgreSQL: unknown server message type 0x01: the rest of the \
              connection is shown raw"
            ]
        );
        assert_eq!(raw_bytes(&d), 3, "after the 5-byte header that failed");
        let d = c.push(true, b"more", 3, 0);
        assert_eq!(raw_bytes(&d), 4);
    }

    /// Redis resumes after lost bytes at a call that starts a value.
    #[test]
    fn redis_resumes_after_lost_bytes() {
        let mut c = ConnDecoder::new(Redact::new(&[])).with_query_text(QueryText::Full);
        c.push(true, b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n", 1, 0);
        let d = c.push(false, b"$5\r\nhel", 2, 10);
        assert_eq!(notices(&d).len(), 1, "{d:?}");
        let d = c.push(false, b"lo-rest\r\n", 3, 0);
        assert_eq!(raw_bytes(&d), 9);
        let q = db_queries(&d);
        assert_eq!(q.len(), 1, "the GET a shown unanswered");
        assert_eq!((q[0].query.as_deref(), q[0].status), (Some("GET a"), None));
        let d = c.push(true, b"*2\r\n$3\r\nGET\r\n$1\r\nb\r\n", 4, 0);
        assert_eq!(notices(&d).len(), 1, "decodable again");
        let d = c.push(false, b"$1\r\nx\r\n", 5, 0);
        let q = db_queries(&d);
        assert_eq!(q[0].query.as_deref(), Some("GET b"));
        assert_eq!(q[0].response.as_deref(), Some("x"));
    }

    #[test]
    fn server_side_capture_and_split_first_line() {
        // The captured process is the server: requests are incoming.
        let mut c = ConnDecoder::new(Redact::new(&[]));
        assert!(c.push(false, b"GE", 1, 0).items.is_empty());
        assert!(c
            .push(
                false,
                b"T /x HTTP/1.1\r\nHost: a\r\nCookie: s=1\r\n\r\n",
                2,
                0
            )
            .items
            .is_empty());
        assert_eq!(c.process_is_client(), Some(false));
        let d = c.push(
            true,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
            5,
            0,
        );
        let e = exchanges(&d);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path.as_deref(), Some("/x"));
        assert_eq!(e[0].status, Some(200));
        assert_eq!(e[0].request.as_ref().unwrap().ts_first_ns, 1);
        assert_eq!(e[0].latency_ns(), Some(4));
        assert_eq!(
            e[0].request.as_ref().unwrap().header("cookie"),
            Some(&b"[redacted]"[..])
        );
        assert_eq!(e[0].response.as_ref().unwrap().body, b"hi");
    }

    #[test]
    fn a_gap_restarts_the_parser_at_a_later_call() {
        let mut c = ConnDecoder::new(Redact::none());
        c.push(
            true,
            b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345",
            1,
            5,
        );
        // The rest of the body was lost; the next call is a new request.
        let d = c.push(true, b"GET /b HTTP/1.1\r\n\r\n", 2, 0);
        assert!(d.items.iter().any(|i| matches!(i, Item::Notice { .. })));
        assert_eq!(d.segments[0].gap_before, 5);
        let d = c.push(false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 3, 0);
        let e = exchanges(&d);
        assert_eq!(e[0].path.as_deref(), Some("/b"));
    }

    #[test]
    fn not_http_is_raw_and_wire_is_unchanged() {
        let mut c = ConnDecoder::new(Redact::new(&[]));
        let d = c.push(true, b"\x16hello", 1, 0);
        assert_eq!(
            d.items,
            vec![Item::Raw {
                outgoing: true,
                ts_ns: 1,
                data: b"\x16hello".to_vec()
            }]
        );
        assert_eq!(d.segments[0].data, b"\x16hello");
        assert!(d.segments[0].from_client);
    }

    #[test]
    fn redacted_wire_for_http1() {
        let mut c = ConnDecoder::new(Redact::new(&[]));
        let d = c.push(
            true,
            b"GET / HTTP/1.1\r\nAuthorization: Bearer abc\r\nHost: h\r\n\r\n",
            1,
            0,
        );
        assert_eq!(
            d.segments[0].data,
            b"GET / HTTP/1.1\r\nAuthorization: **********\r\nHost: h\r\n\r\n"
        );
        let mut c = ConnDecoder::new(Redact::none());
        let d = c.push(
            true,
            b"GET / HTTP/1.1\r\nAuthorization: Bearer abc\r\n\r\n",
            1,
            0,
        );
        assert_eq!(
            d.segments[0].data,
            b"GET / HTTP/1.1\r\nAuthorization: Bearer abc\r\n\r\n"
        );
    }

    #[test]
    fn upgrade_switches_to_raw() {
        let mut c = ConnDecoder::new(Redact::none());
        c.push(
            true,
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            1,
            0,
        );
        let d = c.push(false, b"HTTP/1.1 101 Switching Protocols\r\n\r\n", 2, 0);
        assert_eq!(exchanges(&d)[0].status, Some(101));
        let d = c.push(true, b"\x81\x05hello", 3, 0);
        assert!(matches!(d.items[0], Item::Raw { .. }));
    }

    fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend([ty, flags]);
        f.extend(stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// The client side of the flood: `messages` HEADERS frames, each
    /// referencing a 3900-byte dynamic table entry `refs` times, each
    /// followed by a RST_STREAM if `reset`.
    fn flood(refs: usize, messages: u32, reset: bool) -> Vec<u8> {
        let mut client = http2::PREFACE.to_vec();
        client.extend(frame(4, 0, 0, &[]));
        for i in 0..messages {
            let mut block = vec![0x82, 0x87, 0x84];
            if i == 0 {
                block.extend([0x40, 0x07]);
                block.extend(b"x-flood");
                block.extend([0x7f, 0xbd, 0x1d]); // 3900 = 127 + 3773
                block.extend(vec![b'v'; 3900]);
            }
            block.extend(vec![0xbe; refs]);
            client.extend(frame(1, 0x5, 2 * i + 1, &block));
            if reset {
                client.extend(frame(3, 0, 2 * i + 1, &[0, 0, 0, 8]));
            }
        }
        client
    }

    fn notices(d: &Decoded) -> Vec<&str> {
        d.items
            .iter()
            .filter_map(|i| match i {
                Item::Notice { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    fn raw_bytes(d: &Decoded) -> usize {
        d.items
            .iter()
            .map(|i| match i {
                Item::Raw { data, .. } => data.len(),
                _ => 0,
            })
            .sum()
    }

    /// Exchanges that end at once (RST_STREAM), each cut at 64 KiB: past
    /// 16x the plaintext + 1 MiB of decoded output the connection goes raw,
    /// even within one call.
    #[test]
    fn amplification_budget_makes_the_connection_raw() {
        let bytes = flood(250, 400, true);
        let mut c = ConnDecoder::new(Redact::none());
        let d = c.push(true, &bytes, 1, 0);
        let decoded: u64 = exchanges(&d).iter().map(|e| exchange_size(e)).sum();
        let n = exchanges(&d).len();
        // 65512 bytes each (64 KiB less the pseudo-header fields, plus
        // method and path). The budget is checked after each 4 KiB slice:
        // after 2 slices (8192 bytes, 15 messages: 982 680 bytes) it holds
        // (16 * 8192 + 1 MiB = 1 179 648); after 3 (12 288 bytes, 30
        // messages: 1 965 360 bytes) it does not (1 245 184).
        assert_eq!(n, 30, "{:?}", notices(&d));
        assert_eq!(decoded, 30 * 65512);
        assert!(decoded > 16 * 12288 + (1 << 20));
        let n = notices(&d);
        assert_eq!(n.len(), 2 + CUT_NOTICES_SEEN, "{n:#?}");
        assert_eq!(
            n[CUT_NOTICES_SEEN],
            "decoded exchanges reached 1965360 bytes from 12288 bytes of plaintext (limit: \
             16x + 1048576): open exchanges are flushed and the rest of the connection is \
             shown raw"
        );
        assert_eq!(
            *n.last().unwrap(),
            "HTTP/2: 22 more header blocks were cut (limits per message: 65536 bytes, 256 \
             fields, 64 trailers)"
        );
        // everything after the last complete frame of the slice that went
        // over is shown as captured: preface and SETTINGS (33 bytes), the
        // first message (HEADERS 4174 + RST_STREAM 13), 29 more (275 each)
        assert_eq!(raw_bytes(&d), bytes.len() - (33 + 4187 + 29 * 275));
        let more = c.push(true, &flood(250, 2, true)[33..], 2, 0);
        assert!(exchanges(&more).is_empty());
        assert_eq!(raw_bytes(&more), flood(250, 2, true).len() - 33);
    }

    /// Cut header blocks say so (the first eight: see http2).
    const CUT_NOTICES_SEEN: usize = 8;

    /// Streams left open, each holding 64 KiB of headers: past 4 MiB of
    /// decoding state the connection is flushed (open exchanges shown
    /// incomplete) and goes raw.
    #[test]
    fn memory_budget_makes_the_connection_raw() {
        let bytes = flood(250, 400, false);
        let mut c = ConnDecoder::new(Redact::none());
        let mut d = Decoded::default();
        let mut most = 0;
        for (i, call) in bytes.chunks(1000).enumerate() {
            let o = c.push(true, call, i as u64, 0);
            most = most.max(c.memory());
            d.items.extend(o.items);
        }
        assert!(most <= CONN_MEMORY, "{most}");
        assert_eq!(c.memory(), 0, "raw");
        let ex = exchanges(&d);
        // 65 640 bytes per stream (64 KiB of fields, method, path, overhead)
        // and 8 KiB of HPACK tables: over 4 MiB with the 64th stream, in
        // the call that also brought the 65th
        assert_eq!(ex.len(), 65);
        assert!(ex.iter().all(|e| e.response.is_none()));
        let n = notices(&d);
        let stop = n
            .iter()
            .find(|t| t.starts_with("decoding state reached "))
            .unwrap_or_else(|| panic!("{n:#?}"));
        assert!(stop.ends_with(
            " bytes (limit: 4194304): open exchanges are flushed and the rest of the \
             connection is shown raw"
        ));
        // the rest after the 65th HEADERS frame: preface and SETTINGS (33
        // bytes), the first (4174), 64 more (262 each)
        assert_eq!(raw_bytes(&d), bytes.len() - (33 + 4174 + 64 * 262));
        assert!(c.finish(9).items.is_empty());
    }

    /// Bytes shown as captured have sensitive values masked: after an
    /// HTTP/1 error, after lost bytes (HTTP/1 and HTTP/2), in streams that
    /// are not HTTP; the pcapng segments too.
    #[test]
    fn raw_fallbacks_are_redacted() {
        // HTTP/1: a request, then garbage with a cookie line
        let mut c = ConnDecoder::new(Redact::new(&[]));
        c.push(true, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 1, 0);
        let d = c.push(true, b"\x01garbage\r\nCookie: zz\r\n", 2, 0);
        assert_eq!(
            d.items[1],
            Item::Raw {
                outgoing: true,
                ts_ns: 2,
                data: b"\x01garbage\r\nCookie: **\r\n".to_vec()
            }
        );
        assert_eq!(d.segments[0].data, b"\x01garbage\r\nCookie: **\r\n");
        // HTTP/1: lost bytes, the next call continues a head
        let mut c = ConnDecoder::new(Redact::new(&[]));
        c.push(true, b"GET / HTTP/1.1\r\nHost: h\r\n", 1, 100);
        let d = c.push(true, b"X: y\r\nAuthorization: Bearer t\r\n\r\n", 2, 0);
        let raw: Vec<_> = d
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Raw { data, .. } => Some(data.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(raw, [b"X: y\r\nAuthorization: ********\r\n\r\n".to_vec()]);
        // HTTP/2: lost bytes, then frames with a literal authorization
        let mut c = ConnDecoder::new(Redact::new(&[]));
        let mut first = http2::PREFACE.to_vec();
        first.extend(frame(4, 0, 0, &[]));
        c.push(true, &first, 1, 7);
        let block = [0x82, 0x57, 0x03, b'a', b'b', b'c'];
        let d = c.push(true, &frame(1, 0x5, 3, &block), 2, 0);
        assert_eq!(
            d.items,
            vec![Item::Raw {
                outgoing: true,
                ts_ns: 2,
                data: frame(1, 0x5, 3, &[0x82, 0x57, 0x03, b'*', b'*', b'*'])
            }]
        );
        // not HTTP
        let mut c = ConnDecoder::new(Redact::new(&[]));
        let d = c.push(false, b"\x16hello\r\nset-cookie:  s=1\r\n", 1, 0);
        assert_eq!(
            d.items,
            vec![Item::Raw {
                outgoing: false,
                ts_ns: 1,
                data: b"\x16hello\r\nset-cookie:  ***\r\n".to_vec()
            }]
        );
        assert_eq!(d.segments[0].data, b"\x16hello\r\nset-cookie:  ***\r\n");
    }

    /// An HTTP/2 error shows the rest from the frame that failed, masked.
    #[test]
    fn http2_error_shows_the_rest_from_the_failing_frame() {
        let mut c = ConnDecoder::new(Redact::new(&[]));
        let mut client = http2::PREFACE.to_vec();
        client.extend(frame(4, 0, 0, &[]));
        let good = frame(1, 0x5, 1, &[0x82, 0x87, 0x84]);
        client.extend(&good);
        let bad = frame(0, 0, 0, b"DATA on stream 0");
        let after = frame(1, 0x5, 3, &[0x17, 0x01, b'x']); // never-indexed authorization
        c.push(true, &client, 1, 0);
        let mut call = bad.clone();
        call.extend(&after);
        let d = c.push(true, &call[..5], 2, 0);
        assert!(d.items.is_empty());
        let d = c.push(true, &call[5..], 3, 0);
        let n = notices(&d);
        assert_eq!(n.len(), 1);
        assert!(n[0].starts_with("HTTP/2: HTTP/2 protocol error: DATA frame on stream 0"));
        let mut want = bad.clone();
        want.extend(frame(1, 0x5, 3, &[0x17, 0x01, b'*']));
        assert_eq!(raw_bytes(&d), want.len());
        assert!(d.items.contains(&Item::Raw {
            outgoing: true,
            ts_ns: 3,
            data: want
        }));
    }

    #[test]
    fn close_reports_open_requests_and_until_close_bodies() {
        let mut c = ConnDecoder::new(Redact::none());
        c.push(true, b"GET /a HTTP/1.1\r\n\r\n", 1, 0);
        c.push(false, b"HTTP/1.0 200 OK\r\n\r\nbody until close", 2, 0);
        let d = c.finish(3);
        let e = exchanges(&d);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].response.as_ref().unwrap().body, b"body until close");
        assert!(e[0].response.as_ref().unwrap().complete);
    }
}
