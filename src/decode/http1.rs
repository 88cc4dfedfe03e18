//! HTTP/1.1 messages from one direction of a connection's plaintext stream:
//! request or response heads (httparse), bodies by Content-Length or chunked
//! transfer coding, several messages back to back (keep-alive, pipelining).
//! Bytes may arrive split anywhere.

use thiserror::Error;

use super::limits::{CONN_BODY_KEEP, MAX_PIPELINED, MAX_TRAILERS};
use super::raw::RawRedactor;
use super::{header_bytes, Exchange, FieldBudget, HttpMessage, Peer, Protocol, Redact};

pub use super::limits::MAX_BODY_KEEP;

/// Which side of the exchange the stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Requests,
    Responses,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Requests: method and target. Responses: status code and reason.
    pub method: Option<String>,
    pub path: Option<String>,
    pub status: Option<u16>,
    pub reason: Option<String>,
    pub version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub head: Head,
    /// The body (de-chunked), at most `MAX_BODY_KEEP` bytes of it.
    pub body: Vec<u8>,
    /// Body bytes in all (more than `body.len()` when cut).
    pub body_len: u64,
    /// Trailer fields of a chunked body, within the message's header
    /// budget.
    pub trailers: Vec<(String, Vec<u8>)>,
    /// Trailer fields sent, when some were dropped or cut.
    pub trailers_cut: Option<usize>,
    /// CLOCK_MONOTONIC ns of the pushes that carried the first and last byte.
    pub ts_first_ns: u64,
    pub ts_last_ns: u64,
}

impl Message {
    /// Bytes this message holds.
    fn memory(&self) -> usize {
        head_memory(&self.head) + self.body.len() + header_bytes(&self.trailers)
    }
}

fn head_memory(h: &Head) -> usize {
    header_bytes(&h.headers)
        + h.method.as_ref().map_or(0, String::len)
        + h.path.as_ref().map_or(0, String::len)
        + h.reason.as_ref().map_or(0, String::len)
        + 64
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Http1Error {
    #[error("not HTTP/1.x: {0}")]
    NotHttp(String),
    #[error("bad Content-Length")]
    BadLength,
    #[error("bad chunk size line")]
    BadChunk,
}

const MAX_HEADERS: usize = 128;
/// A head larger than this is not HTTP (or is hostile): the stream is shown
/// raw until a call starts a message. (The head's fields are then within
/// the per-message header budget, `limits::MAX_HEADER_BYTES`.)
const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug)]
enum Body {
    /// Bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// A response without length: ends when the connection does.
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

#[derive(Debug)]
struct Pending {
    head: Head,
    kind: Body,
    body: Vec<u8>,
    body_len: u64,
    ts_first_ns: u64,
}

impl Pending {
    /// Keeps what the message and the connection (`room`) allow of `data`.
    fn keep(&mut self, data: &[u8], room: &mut usize) {
        let n = data
            .len()
            .min(MAX_BODY_KEEP.saturating_sub(self.body.len()))
            .min(*room);
        self.body.extend_from_slice(&data[..n]);
        *room -= n;
        self.body_len += data.len() as u64;
    }
    fn done(self, trailers: Vec<(String, Vec<u8>)>, ts: u64) -> Message {
        Message {
            head: self.head,
            body: self.body,
            body_len: self.body_len,
            trailers,
            trailers_cut: None,
            ts_first_ns: self.ts_first_ns,
            ts_last_ns: ts,
        }
    }
}

/// Incremental parser for one direction.
#[derive(Debug)]
pub struct Parser {
    side: Side,
    buf: Vec<u8>,
    pending: Option<Pending>,
    failed: bool,
    /// Timestamp of the push that brought the first byte still in `buf`.
    buf_ts: u64,
    ts: u64,
    /// Responses: for each request not yet answered, whether it was HEAD
    /// (its response has no body whatever its headers say).
    head_requests: std::collections::VecDeque<bool>,
    /// Responses: how many of the next responses answer requests that were
    /// given up (`MAX_PIPELINED`) before their HEAD-ness was read: they
    /// are parsed by their own headers.
    skip_heads: u64,
    /// Body bytes the connection still lets this parser keep.
    pub room: usize,
}

fn find(b: &[u8], what: &[u8]) -> Option<usize> {
    b.windows(what.len()).position(|w| w == what)
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    find(b, b"\r\n")
}

impl Parser {
    pub fn new(side: Side) -> Parser {
        Parser {
            side,
            buf: Vec::new(),
            pending: None,
            failed: false,
            buf_ts: 0,
            ts: 0,
            head_requests: Default::default(),
            skip_heads: 0,
            room: usize::MAX,
        }
    }

    /// Bytes this parser holds.
    pub fn memory(&self) -> usize {
        self.buf.len()
            + self.head_requests.len()
            + self
                .pending
                .as_ref()
                .map_or(0, |p| head_memory(&p.head) + p.body.len())
    }

    /// Body bytes of the message in progress.
    fn body_held(&self) -> usize {
        self.pending.as_ref().map_or(0, |p| p.body.len())
    }

    /// Responses: the oldest unanswered request was given up. Its HEAD-ness
    /// is forgotten unless its response is being read already (`reading`).
    fn give_up_oldest(&mut self, reading: bool) {
        if !reading && self.head_requests.pop_front().is_some() {
            self.skip_heads += 1;
        }
    }

    /// Responses: a request was sent (`head`: it was a HEAD request).
    pub fn expect_response(&mut self, head: bool) {
        self.head_requests.push_back(head);
    }

    /// Feeds bytes carried by a call at `ts_ns`; returns the messages they
    /// complete.
    pub fn push(&mut self, data: &[u8], ts_ns: u64) -> Result<Vec<Message>, Http1Error> {
        if self.failed {
            return Ok(Vec::new());
        }
        if self.buf.is_empty() {
            self.buf_ts = ts_ns;
        }
        self.ts = ts_ns;
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            match self.step() {
                Ok(Some(m)) => out.push(m),
                Ok(None) => return Ok(out),
                Err(e) => {
                    self.failed = true;
                    return Err(e);
                }
            }
        }
    }

    /// Bytes received but not consumed (after an error: all of the rest).
    pub fn take_unparsed(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// The connection ended: a response read until close is complete; any
    /// other message in progress is returned cut (`None` if there is none).
    pub fn finish(&mut self) -> Option<(Message, bool)> {
        let p = self.pending.take()?;
        let complete = matches!(p.kind, Body::UntilClose);
        let ts = self.ts;
        Some((p.done(Vec::new(), ts), complete))
    }

    /// Consumes `n` bytes of `buf`.
    fn take(&mut self, n: usize) -> Vec<u8> {
        self.buf.drain(..n).collect()
    }

    fn step(&mut self) -> Result<Option<Message>, Http1Error> {
        if self.pending.is_none() {
            if self.buf.is_empty() {
                return Ok(None);
            }
            let Some((head, used)) = self.parse_head()? else {
                return Ok(None);
            };
            self.buf.drain(..used);
            let kind = self.body_kind(&head)?;
            let ts_first_ns = self.buf_ts;
            self.buf_ts = self.ts;
            self.pending = Some(Pending {
                head,
                kind,
                body: Vec::new(),
                body_len: 0,
                ts_first_ns,
            });
        }
        let ts = self.ts;
        loop {
            let p = self.pending.as_mut().expect("set above");
            match p.kind {
                Body::Length(0) => {
                    let p = self.pending.take().expect("set above");
                    return Ok(Some(p.done(Vec::new(), ts)));
                }
                Body::Length(n) => {
                    let Some(left) = self.body_bytes(n) else {
                        return Ok(None);
                    };
                    self.pending.as_mut().expect("set above").kind = Body::Length(left);
                }
                Body::UntilClose => {
                    let d = self.take(self.buf.len());
                    let room = &mut self.room;
                    self.pending.as_mut().expect("set above").keep(&d, room);
                    return Ok(None);
                }
                Body::Chunked(Chunk::Size) => {
                    let Some(i) = find_crlf(&self.buf) else {
                        if self.buf.len() > 1024 {
                            return Err(Http1Error::BadChunk);
                        }
                        return Ok(None);
                    };
                    let line =
                        std::str::from_utf8(&self.buf[..i]).map_err(|_| Http1Error::BadChunk)?;
                    let hex = line.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(hex, 16).map_err(|_| Http1Error::BadChunk)?;
                    self.take(i + 2);
                    let p = self.pending.as_mut().expect("set above");
                    p.kind = Body::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    });
                }
                Body::Chunked(Chunk::Data(n)) => {
                    let Some(left) = self.body_bytes(n) else {
                        return Ok(None);
                    };
                    self.pending.as_mut().expect("set above").kind = Body::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                }
                Body::Chunked(Chunk::DataEnd) => {
                    if self.buf.len() < 2 {
                        return Ok(None);
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(Http1Error::BadChunk);
                    }
                    self.take(2);
                    self.pending.as_mut().expect("set above").kind = Body::Chunked(Chunk::Size);
                }
                Body::Chunked(Chunk::Trailers) => {
                    let end = if self.buf.starts_with(b"\r\n") {
                        Some(2)
                    } else {
                        find(&self.buf, b"\r\n\r\n").map(|j| j + 4)
                    };
                    let Some(end) = end else {
                        if self.buf.len() > MAX_HEAD {
                            return Err(Http1Error::NotHttp("trailers too large".into()));
                        }
                        return Ok(None);
                    };
                    let raw = self.take(end);
                    let mut trailers: Vec<(String, Vec<u8>)> = raw
                        .split(|&b| b == b'\n')
                        .filter_map(|l| {
                            let l = l.strip_suffix(b"\r").unwrap_or(l);
                            let i = l.iter().position(|&b| b == b':')?;
                            Some((
                                String::from_utf8_lossy(&l[..i]).trim().to_string(),
                                l[i + 1..].trim_ascii().to_vec(),
                            ))
                        })
                        .collect();
                    let sent = trailers.len();
                    let p = self.pending.as_ref().expect("set above");
                    let mut budget = FieldBudget::message();
                    for (n, v) in &p.head.headers {
                        budget.take(n.len(), v.len());
                    }
                    budget.fields = budget.fields.min(MAX_TRAILERS);
                    let cut = budget.keep(&mut trailers);
                    let p = self.pending.take().expect("set above");
                    let mut m = p.done(trailers, ts);
                    m.trailers_cut = cut.then_some(sent);
                    return Ok(Some(m));
                }
            }
        }
    }

    /// Consumes up to `n` body bytes that are there; None if none are.
    /// Returns how many of the `n` are still to come.
    fn body_bytes(&mut self, n: u64) -> Option<u64> {
        if self.buf.is_empty() {
            return None;
        }
        let k = n.min(self.buf.len() as u64) as usize;
        let d = self.take(k);
        let room = &mut self.room;
        self.pending
            .as_mut()
            .expect("a message in progress")
            .keep(&d, room);
        Some(n - k as u64)
    }

    fn parse_head(&self) -> Result<Option<(Head, usize)>, Http1Error> {
        let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let too_big = |e: String| {
            if self.buf.len() > MAX_HEAD {
                Err(Http1Error::NotHttp(e))
            } else {
                Ok(None)
            }
        };
        let collect = |hs: &[httparse::Header<'_>]| {
            hs.iter()
                .map(|h| (h.name.to_string(), h.value.to_vec()))
                .collect::<Vec<_>>()
        };
        match self.side {
            Side::Requests => {
                let mut r = httparse::Request::new(&mut hs);
                match r.parse(&self.buf) {
                    Ok(httparse::Status::Complete(n)) => Ok(Some((
                        Head {
                            method: r.method.map(str::to_string),
                            path: r.path.map(str::to_string),
                            status: None,
                            reason: None,
                            version: r.version.unwrap_or(1),
                            headers: collect(r.headers),
                        },
                        n,
                    ))),
                    Ok(httparse::Status::Partial) => too_big("head too large".into()),
                    Err(e) => Err(Http1Error::NotHttp(e.to_string())),
                }
            }
            Side::Responses => {
                let mut r = httparse::Response::new(&mut hs);
                match r.parse(&self.buf) {
                    Ok(httparse::Status::Complete(n)) => Ok(Some((
                        Head {
                            method: None,
                            path: None,
                            status: r.code,
                            reason: r.reason.map(str::to_string),
                            version: r.version.unwrap_or(1),
                            headers: collect(r.headers),
                        },
                        n,
                    ))),
                    Ok(httparse::Status::Partial) => too_big("head too large".into()),
                    Err(e) => Err(Http1Error::NotHttp(e.to_string())),
                }
            }
        }
    }

    fn body_kind(&mut self, head: &Head) -> Result<Body, Http1Error> {
        if let (Side::Responses, Some(s)) = (self.side, head.status) {
            let head_request = if s < 200 {
                false
            } else if self.skip_heads > 0 {
                self.skip_heads -= 1;
                false
            } else {
                self.head_requests.pop_front().unwrap_or(false)
            };
            if head_request {
                return Ok(Body::Length(0));
            }
        }
        let chunked = head
            .header("transfer-encoding")
            .map(|v| {
                String::from_utf8_lossy(v)
                    .to_ascii_lowercase()
                    .contains("chunked")
            })
            .unwrap_or(false);
        if chunked {
            return Ok(Body::Chunked(Chunk::Size));
        }
        if let Some(v) = head.header("content-length") {
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or(Http1Error::BadLength)?;
            return Ok(Body::Length(n));
        }
        match (self.side, head.status) {
            // 1xx, 204 and 304 responses have no body
            (Side::Responses, Some(s)) if (100..200).contains(&s) || s == 204 || s == 304 => {
                Ok(Body::Length(0))
            }
            (Side::Responses, _) => Ok(Body::UntilClose),
            (Side::Requests, _) => Ok(Body::Length(0)),
        }
    }
}

/// Both directions of an HTTP/1.x connection: requests and responses paired
/// in order (keep-alive, pipelining), interim 1xx responses skipped.
///
/// At most [`MAX_PIPELINED`] requests wait for their response: past that,
/// the oldest is shown without one, and the response that answers it later
/// is shown without its request.
#[derive(Debug)]
pub struct Http1Conn {
    requests: Parser,
    responses: Parser,
    waiting: std::collections::VecDeque<Message>,
    /// Requests given up (shown without a response) whose responses have
    /// not come yet: the next responses are theirs.
    unpaired: u64,
    /// Requests given up in all.
    given_up: u64,
    redact: Redact,
    /// Masks the pushed bytes for the wire, per direction (client, server).
    raw: [RawRedactor; 2],
    /// What the decoder has to say (limits reached), in order.
    notices: Vec<String>,
    /// A 101 response switched the connection to another protocol.
    pub upgraded: bool,
}

/// What one push produced.
#[derive(Debug, Default)]
pub struct Http1Output {
    pub exchanges: Vec<Exchange>,
    /// The pushed bytes as shown on the wire: the values of sensitive
    /// header fields overwritten with `*` (see [`RawRedactor`]), the length
    /// unchanged.
    pub wire: Vec<u8>,
    /// The peer's parser stopped here (its unconsumed bytes are in
    /// `take_unparsed`; `restart` tries again).
    pub error: Option<Http1Error>,
}

impl Http1Conn {
    pub fn new(redact: Redact) -> Http1Conn {
        Http1Conn {
            requests: Parser::new(Side::Requests),
            responses: Parser::new(Side::Responses),
            waiting: Default::default(),
            unpaired: 0,
            given_up: 0,
            raw: [
                RawRedactor::new(redact.clone()),
                RawRedactor::new(redact.clone()),
            ],
            redact,
            notices: Vec::new(),
            upgraded: false,
        }
    }

    fn parser(&mut self, from: Peer) -> &mut Parser {
        match from {
            Peer::Client => &mut self.requests,
            Peer::Server => &mut self.responses,
        }
    }

    /// Bytes the connection holds (buffers, messages in progress or waiting).
    pub fn memory(&self) -> usize {
        self.requests.memory()
            + self.responses.memory()
            + self.waiting.iter().map(Message::memory).sum::<usize>()
    }

    /// Body bytes kept by messages not shown yet.
    fn body_held(&self) -> usize {
        self.requests.body_held()
            + self.responses.body_held()
            + self.waiting.iter().map(|m| m.body.len()).sum::<usize>()
    }

    /// Notices since the last call (limits reached).
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    /// Bytes `from` sent in a call at `ts_ns`.
    pub fn push(&mut self, from: Peer, data: &[u8], ts_ns: u64) -> Http1Output {
        let room = CONN_BODY_KEEP.saturating_sub(self.body_held());
        self.parser(from).room = room;
        let r = self.parser(from).push(data, ts_ns);
        let mut out = Http1Output {
            wire: self.raw[from.index()].push(data).into_owned(),
            ..Default::default()
        };
        let msgs = match r {
            Ok(m) => m,
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        };
        for m in msgs {
            if let Some(sent) = m.trailers_cut {
                self.notices.push(format!(
                    "HTTP/1 {}: trailer fields cut to {} of the {sent} sent \
                     (limits: {MAX_TRAILERS} trailers, {} header bytes per message)",
                    side_name(from),
                    m.trailers.len(),
                    super::limits::MAX_HEADER_BYTES
                ));
            }
            match from {
                Peer::Client => {
                    if self.waiting.len() >= MAX_PIPELINED {
                        out.exchanges.push(self.give_up_oldest());
                    }
                    self.responses
                        .expect_response(m.head.method.as_deref() == Some("HEAD"));
                    self.waiting.push_back(m);
                }
                Peer::Server => {
                    let status = m.head.status.unwrap_or(0);
                    if status == 101 {
                        self.upgraded = true;
                    } else if (100..200).contains(&status) {
                        continue;
                    }
                    let req = self.answered();
                    out.exchanges.push(self.exchange(req, Some((m, true))));
                }
            }
        }
        out
    }

    /// The request a final response answers (None: one given up).
    fn answered(&mut self) -> Option<Message> {
        if self.unpaired > 0 {
            self.unpaired -= 1;
            None
        } else {
            self.waiting.pop_front()
        }
    }

    /// Shows the oldest waiting request without its response.
    fn give_up_oldest(&mut self) -> Exchange {
        let reading = self.unpaired == 0 && self.responses.pending.is_some();
        self.responses.give_up_oldest(reading);
        let req = self.waiting.pop_front();
        self.unpaired += 1;
        self.given_up += 1;
        if self.given_up == 1 {
            self.notices.push(format!(
                "HTTP/1: more than {MAX_PIPELINED} requests wait for a response: the oldest \
                 are shown without one (their responses without their request)"
            ));
        }
        self.exchange(req, None)
    }

    /// Bytes `from` sent were lost after the last push.
    pub fn gap(&mut self, from: Peer) {
        self.raw[from.index()].gap();
    }

    /// The wire redactors (client, server), to go on where this decoder
    /// stops.
    pub fn take_redactors(&mut self) -> [RawRedactor; 2] {
        let fresh = || RawRedactor::new(self.redact.clone());
        std::mem::replace(&mut self.raw, [fresh(), fresh()])
    }

    /// Bytes a failed parser had not consumed.
    pub fn take_unparsed(&mut self, from: Peer) -> Vec<u8> {
        self.parser(from).take_unparsed()
    }

    /// Starts the peer's parser afresh (after lost bytes or an error); a
    /// message in progress is dropped.
    pub fn restart(&mut self, from: Peer) {
        let side = match from {
            Peer::Client => Side::Requests,
            Peer::Server => Side::Responses,
        };
        let mut p = Parser::new(side);
        if from == Peer::Server {
            p.head_requests = self
                .waiting
                .iter()
                .map(|m| m.head.method.as_deref() == Some("HEAD"))
                .collect();
            p.skip_heads = self.unpaired;
        }
        *self.parser(from) = p;
    }

    /// The connection ended: requests without a response, and a response
    /// read until close.
    pub fn finish(&mut self) -> Vec<Exchange> {
        let mut out = Vec::new();
        let _ = self.requests.finish();
        if let Some(resp) = self.responses.finish() {
            let req = self.answered();
            out.push(self.exchange(req, Some(resp)));
        }
        while let Some(req) = self.waiting.pop_front() {
            out.push(self.exchange(Some(req), None));
        }
        if self.given_up > 0 {
            self.notices.push(format!(
                "HTTP/1: {} requests were shown without their response (more than \
                 {MAX_PIPELINED} were waiting)",
                self.given_up
            ));
        }
        out
    }

    fn exchange(&self, req: Option<Message>, resp: Option<(Message, bool)>) -> Exchange {
        let msg = |m: &Message, complete: bool| {
            let mut headers = m.head.headers.clone();
            self.redact.headers(&mut headers);
            let mut trailers = m.trailers.clone();
            self.redact.headers(&mut trailers);
            HttpMessage {
                ts_first_ns: m.ts_first_ns,
                ts_last_ns: m.ts_last_ns,
                headers,
                body: m.body.clone(),
                body_len: m.body_len,
                trailers,
                complete,
                headers_truncated: m.trailers_cut.is_some(),
            }
        };
        Exchange {
            protocol: Protocol::Http1,
            stream_id: None,
            method: req.as_ref().and_then(|r| r.head.method.clone()),
            path: req.as_ref().and_then(|r| r.head.path.clone()),
            authority: req
                .as_ref()
                .and_then(|r| r.head.header("host"))
                .map(|h| String::from_utf8_lossy(h).into_owned()),
            status: resp.as_ref().and_then(|(r, _)| r.head.status),
            request: req.as_ref().map(|r| msg(r, true)),
            response: resp.as_ref().map(|(r, c)| msg(r, *c)),
            grpc: None,
        }
    }
}

fn side_name(p: Peer) -> &'static str {
    match p {
        Peer::Client => "request",
        Peer::Server => "response",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PIPELINED: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /c HTTP/1.1\r\nHost: x\r\n\r\n";
    const RESPONSES: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\ngrpc-status: 0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";

    #[test]
    fn pipelined_requests() {
        let mut p = Parser::new(Side::Requests);
        let m = p.push(PIPELINED, 0).unwrap();
        let paths: Vec<_> = m.iter().map(|m| m.head.path.clone().unwrap()).collect();
        assert_eq!(paths, ["/a", "/b", "/c"]);
        assert_eq!(m[1].body, b"hello");
        assert_eq!(m[1].head.method.as_deref(), Some("POST"));
    }

    #[test]
    fn length_chunked_trailers_and_no_body() {
        let mut p = Parser::new(Side::Responses);
        let m = p.push(RESPONSES, 0).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].body, b"abc");
        assert_eq!(m[1].body, b"Wikipedia");
        assert_eq!(
            m[1].trailers,
            vec![("grpc-status".to_string(), b"0".to_vec())]
        );
        assert_eq!(m[2].head.status, Some(204));
    }

    #[test]
    fn until_close_and_garbage() {
        let mut p = Parser::new(Side::Responses);
        assert!(p
            .push(b"HTTP/1.0 200 OK\r\n\r\nsome body", 0)
            .unwrap()
            .is_empty());
        let (m, complete) = p.finish().unwrap();
        assert_eq!(m.body, b"some body");
        assert!(complete);
        let mut p = Parser::new(Side::Requests);
        assert!(p.push(b"\x16\x03\x01\x02\x00binary", 0).is_err());
        assert!(
            p.push(b"GET / HTTP/1.1\r\n\r\n", 0).unwrap().is_empty(),
            "stays failed"
        );
        let mut p = Parser::new(Side::Responses);
        assert_eq!(
            p.push(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 0),
            Err(Http1Error::BadLength)
        );
    }

    #[test]
    fn head_responses_have_no_body_and_interim_responses_are_skipped() {
        let mut c = Http1Conn::new(Redact::none());
        let o = c.push(Peer::Client, b"HEAD /h HTTP/1.1\r\n\r\nPOST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi", 1);
        assert!(o.exchanges.is_empty() && o.error.is_none());
        let o = c.push(
            Peer::Server,
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx",
            2,
        );
        let got: Vec<_> = o
            .exchanges
            .iter()
            .map(|e| (e.path.clone().unwrap(), e.status.unwrap()))
            .collect();
        assert_eq!(got, [("/h".to_string(), 200), ("/p".to_string(), 201)]);
        assert_eq!(o.exchanges[1].request.as_ref().unwrap().body, b"hi");
        assert_eq!(o.exchanges[1].response.as_ref().unwrap().body, b"x");
    }

    #[test]
    fn big_bodies_are_counted_beyond_what_is_kept() {
        let mut p = Parser::new(Side::Responses);
        let n = MAX_BODY_KEEP + 100;
        let mut m = p
            .push(
                format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n").as_bytes(),
                1,
            )
            .unwrap();
        let chunk = vec![b'a'; 1 << 20];
        let mut sent = 0;
        while sent < n {
            let k = chunk.len().min(n - sent);
            m.extend(p.push(&chunk[..k], 2).unwrap());
            sent += k;
        }
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].body.len(), MAX_BODY_KEEP);
        assert_eq!(m[0].body_len, n as u64);
        assert_eq!((m[0].ts_first_ns, m[0].ts_last_ns), (1, 2));
    }

    /// More than `MAX_PIPELINED` unanswered requests: the oldest are shown
    /// without a response, and the responses that answer them later without
    /// their request; the rest pair up as before.
    #[test]
    fn unanswered_pipelined_requests_are_capped() {
        let mut c = Http1Conn::new(Redact::none());
        let mut reqs = Vec::new();
        for i in 0..70 {
            reqs.extend(format!("GET /{i} HTTP/1.1\r\nHost: h\r\n\r\n").bytes());
        }
        let o = c.push(Peer::Client, &reqs, 1);
        let given_up: Vec<_> = o
            .exchanges
            .iter()
            .map(|e| (e.path.clone().unwrap(), e.response.is_some()))
            .collect();
        let want: Vec<_> = (0..6).map(|i| (format!("/{i}"), false)).collect();
        assert_eq!(given_up, want);
        assert_eq!(c.waiting.len(), MAX_PIPELINED);
        assert_eq!(c.responses.head_requests.len(), MAX_PIPELINED);
        let notices = c.take_notices();
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert!(notices[0].contains("more than 64 requests"), "{notices:?}");
        // The 70 responses come.
        let mut resps = Vec::new();
        for i in 0..70 {
            let body = format!("r{i}");
            resps.extend(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .bytes(),
            );
        }
        let o = c.push(Peer::Server, &resps, 2);
        assert!(o.error.is_none(), "{:?}", o.error);
        assert_eq!(o.exchanges.len(), 70);
        for (i, e) in o.exchanges.iter().enumerate() {
            assert_eq!(
                e.response.as_ref().unwrap().body,
                format!("r{i}").as_bytes()
            );
            if i < 6 {
                assert_eq!(e.request, None, "{i}");
            } else {
                assert_eq!(e.path.as_deref(), Some(format!("/{i}").as_str()));
            }
        }
        assert!(c.take_notices().is_empty());
        assert!(c.finish().is_empty());
        assert_eq!(
            c.take_notices(),
            ["HTTP/1: 6 requests were shown without their response (more than 64 were waiting)"]
        );
    }

    /// A HEAD request that was not given up keeps its meaning: its
    /// response has no body whatever its headers say.
    #[test]
    fn head_flags_follow_given_up_requests() {
        let mut c = Http1Conn::new(Redact::none());
        let mut reqs = Vec::new();
        for i in 0..65 {
            reqs.extend(format!("GET /{i} HTTP/1.1\r\n\r\n").bytes());
        }
        reqs.extend(b"HEAD /h HTTP/1.1\r\n\r\n");
        let o = c.push(Peer::Client, &reqs, 1);
        assert_eq!(o.exchanges.len(), 2);
        let mut resps = Vec::new();
        for i in 0..65 {
            resps.extend(format!("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n{}", i % 10).bytes());
        }
        resps.extend(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
        resps.extend(b"HTTP/1.1 204 No Content\r\n\r\n");
        let o = c.push(Peer::Server, &resps, 2);
        assert!(o.error.is_none());
        assert_eq!(o.exchanges.len(), 67);
        assert!(o.exchanges[..2].iter().all(|e| e.request.is_none()));
        assert_eq!(o.exchanges[2].path.as_deref(), Some("/2"));
        assert_eq!(o.exchanges[65].path.as_deref(), Some("/h"));
        assert_eq!(o.exchanges[65].response.as_ref().unwrap().body_len, 0);
        assert_eq!(o.exchanges[66].status, Some(204));
        assert_eq!(o.exchanges[66].request, None);
    }

    /// Trailers: at most `MAX_TRAILERS`, and head plus trailers within
    /// `MAX_HEADER_BYTES`, the crossing field cut to fit exactly.
    #[test]
    fn trailers_are_capped() {
        let mut c = Http1Conn::new(Redact::none());
        c.push(Peer::Client, b"GET / HTTP/1.1\r\n\r\n", 1);
        let mut resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
        for i in 0..100 {
            resp.extend(format!("t{i:02}: v\r\n").bytes());
        }
        resp.extend(b"\r\n");
        let o = c.push(Peer::Server, &resp, 2);
        let r = o.exchanges[0].response.as_ref().unwrap();
        assert_eq!(r.trailers.len(), MAX_TRAILERS);
        assert_eq!(r.trailers[63], ("t63".to_string(), b"v".to_vec()));
        assert!(r.headers_truncated);
        assert!(!o.exchanges[0].request.as_ref().unwrap().headers_truncated);
        assert_eq!(
            c.take_notices(),
            ["HTTP/1 response: trailer fields cut to 64 of the 100 sent (limits: 64 trailers, 65536 header bytes per message)"]
        );
        // bytes: a 40000-byte header and two 20000-byte trailers
        c.push(Peer::Client, b"GET / HTTP/1.1\r\n\r\n", 3);
        let big = "h".repeat(40_000);
        let t = "t".repeat(20_000);
        let resp = format!(
            "HTTP/1.1 200 OK\r\nX-Big: {big}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: {t}\r\nB: {t}\r\nC: c\r\n\r\n"
        );
        let o = c.push(Peer::Server, resp.as_bytes(), 4);
        let r = o.exchanges[0].response.as_ref().unwrap();
        let total = header_bytes(&r.headers) + header_bytes(&r.trailers);
        assert_eq!(total, super::super::limits::MAX_HEADER_BYTES);
        assert_eq!(r.trailers.len(), 2);
        assert_eq!(r.trailers[0].1.len(), 20_000);
        assert_eq!(r.trailers[1].1.len(), 65_536 - 40_005 - 24 - 20_001 - 1);
        assert_eq!(c.take_notices().len(), 1);
    }

    /// Bodies kept across a connection's waiting messages stop at
    /// `CONN_BODY_KEEP`; the rest is counted.
    #[test]
    fn connection_body_keep_is_bounded() {
        let mut c = Http1Conn::new(Redact::none());
        let body = vec![b'x'; MAX_BODY_KEEP];
        for i in 0..3 {
            c.push(
                Peer::Client,
                format!(
                    "POST /{i} HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
                1,
            );
            c.push(Peer::Client, &body, 1);
        }
        let kept: Vec<_> = c
            .waiting
            .iter()
            .map(|m| (m.body.len(), m.body_len))
            .collect();
        let n = MAX_BODY_KEEP as u64;
        assert_eq!(kept, [(MAX_BODY_KEEP, n), (MAX_BODY_KEEP, n), (0, n)]);
        assert!(c.memory() < CONN_BODY_KEEP + 4096);
        // answered: room again
        let o = c.push(
            Peer::Server,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            2,
        );
        assert_eq!(
            o.exchanges[0].request.as_ref().unwrap().body.len(),
            MAX_BODY_KEEP
        );
        c.push(
            Peer::Client,
            b"POST /3 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            3,
        );
        assert_eq!(c.waiting.back().unwrap().body, b"abc");
    }

    proptest! {
        /// Split anywhere, twice: the same messages as all at once.
        #[test]
        fn any_split_gives_the_same_messages(a in 0usize..=RESPONSES.len(), b in 0usize..=RESPONSES.len()) {
            let (a, b) = (a.min(b), a.max(b));
            let whole = Parser::new(Side::Responses).push(RESPONSES, 0).unwrap();
            let mut p = Parser::new(Side::Responses);
            let mut got = p.push(&RESPONSES[..a], 0).unwrap();
            got.extend(p.push(&RESPONSES[a..b], 0).unwrap());
            got.extend(p.push(&RESPONSES[b..], 0).unwrap());
            prop_assert_eq!(got, whole);
        }

        #[test]
        fn requests_split_anywhere(a in 0usize..=PIPELINED.len()) {
            let whole = Parser::new(Side::Requests).push(PIPELINED, 0).unwrap();
            let mut p = Parser::new(Side::Requests);
            let mut got = p.push(&PIPELINED[..a], 0).unwrap();
            got.extend(p.push(&PIPELINED[a..], 0).unwrap());
            prop_assert_eq!(got, whole);
        }

        /// Arbitrary bytes: an error or messages, never a panic.
        #[test]
        fn corrupt_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Parser::new(Side::Requests).push(&data, 0);
            let mut p = Parser::new(Side::Responses);
            let _ = p.push(&data, 0);
            let _ = p.finish();
        }
    }
}
