//! HTTP/1.1 messages from one direction of a connection's plaintext stream:
//! request or response heads (httparse), bodies by Content-Length or chunked
//! transfer coding, several messages back to back (keep-alive, pipelining).
//! Bytes may arrive split anywhere.

use thiserror::Error;

use super::{Exchange, HttpMessage, Peer, Protocol, Redact, REDACTED};

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
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, Vec<u8>)>,
    /// CLOCK_MONOTONIC ns of the pushes that carried the first and last byte.
    pub ts_first_ns: u64,
    pub ts_last_ns: u64,
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
/// A head larger than this is not HTTP (or is hostile).
const MAX_HEAD: usize = 64 * 1024;
/// Body bytes kept per message; the rest is counted, not kept.
pub const MAX_BODY_KEEP: usize = 1 << 20;

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
    fn keep(&mut self, data: &[u8]) {
        let room = MAX_BODY_KEEP.saturating_sub(self.body.len());
        self.body.extend_from_slice(&data[..data.len().min(room)]);
        self.body_len += data.len() as u64;
    }
    fn done(self, trailers: Vec<(String, Vec<u8>)>, ts: u64) -> Message {
        Message {
            head: self.head,
            body: self.body,
            body_len: self.body_len,
            trailers,
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
    redact: Redact,
    /// The bytes consumed so far, heads rewritten where values are redacted.
    wire: Vec<u8>,
    /// Timestamp of the push that brought the first byte still in `buf`.
    buf_ts: u64,
    ts: u64,
    /// Responses: for each request not yet answered, whether it was HEAD
    /// (its response has no body whatever its headers say).
    head_requests: std::collections::VecDeque<bool>,
}

fn find(b: &[u8], what: &[u8]) -> Option<usize> {
    b.windows(what.len()).position(|w| w == what)
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    find(b, b"\r\n")
}

impl Parser {
    pub fn new(side: Side, redact: Redact) -> Parser {
        Parser {
            side,
            buf: Vec::new(),
            pending: None,
            failed: false,
            redact,
            wire: Vec::new(),
            buf_ts: 0,
            ts: 0,
            head_requests: Default::default(),
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

    /// The bytes consumed since the last call, as they should be shown on
    /// the wire (redacted header values replaced).
    pub fn take_wire(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.wire)
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

    /// Consumes `n` bytes of `buf` into the wire.
    fn take(&mut self, n: usize) -> Vec<u8> {
        let v: Vec<u8> = self.buf.drain(..n).collect();
        self.wire.extend_from_slice(&v);
        v
    }

    fn step(&mut self) -> Result<Option<Message>, Http1Error> {
        if self.pending.is_none() {
            if self.buf.is_empty() {
                return Ok(None);
            }
            let Some((head, used)) = self.parse_head()? else {
                return Ok(None);
            };
            if head.headers.iter().any(|(n, _)| self.redact.applies(n)) {
                self.buf.drain(..used);
                self.wire.extend_from_slice(&self.rebuild_head(&head));
            } else {
                self.take(used);
            }
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
                    self.pending.as_mut().expect("set above").keep(&d);
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
                    let trailers = raw
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
                    let p = self.pending.take().expect("set above");
                    return Ok(Some(p.done(trailers, ts)));
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
        self.pending
            .as_mut()
            .expect("a message in progress")
            .keep(&d);
        Some(n - k as u64)
    }

    /// The head as sent, with redacted values replaced.
    fn rebuild_head(&self, h: &Head) -> Vec<u8> {
        let mut out = Vec::new();
        match self.side {
            Side::Requests => out.extend_from_slice(
                format!(
                    "{} {} HTTP/1.{}\r\n",
                    h.method.as_deref().unwrap_or(""),
                    h.path.as_deref().unwrap_or(""),
                    h.version
                )
                .as_bytes(),
            ),
            Side::Responses => out.extend_from_slice(
                format!(
                    "HTTP/1.{} {} {}\r\n",
                    h.version,
                    h.status.unwrap_or(0),
                    h.reason.as_deref().unwrap_or("")
                )
                .as_bytes(),
            ),
        }
        for (n, v) in &h.headers {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(if self.redact.applies(n) { REDACTED } else { v });
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
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
            if s >= 200 && self.head_requests.pop_front().unwrap_or(false) {
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
#[derive(Debug)]
pub struct Http1Conn {
    requests: Parser,
    responses: Parser,
    waiting: std::collections::VecDeque<Message>,
    redact: Redact,
    /// A 101 response switched the connection to another protocol.
    pub upgraded: bool,
}

/// What one push produced.
#[derive(Debug, Default)]
pub struct Http1Output {
    pub exchanges: Vec<Exchange>,
    /// The consumed bytes of the pushing peer, as shown on the wire.
    pub wire: Vec<u8>,
    /// The peer's parser stopped here (its unconsumed bytes are in
    /// `take_unparsed`; `restart` tries again).
    pub error: Option<Http1Error>,
}

impl Http1Conn {
    pub fn new(redact: Redact) -> Http1Conn {
        Http1Conn {
            requests: Parser::new(Side::Requests, redact.clone()),
            responses: Parser::new(Side::Responses, redact.clone()),
            waiting: Default::default(),
            redact,
            upgraded: false,
        }
    }

    fn parser(&mut self, from: Peer) -> &mut Parser {
        match from {
            Peer::Client => &mut self.requests,
            Peer::Server => &mut self.responses,
        }
    }

    /// Bytes `from` sent in a call at `ts_ns`.
    pub fn push(&mut self, from: Peer, data: &[u8], ts_ns: u64) -> Http1Output {
        let r = self.parser(from).push(data, ts_ns);
        let mut out = Http1Output {
            wire: self.parser(from).take_wire(),
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
            match from {
                Peer::Client => {
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
                    let req = self.waiting.pop_front();
                    out.exchanges.push(self.exchange(req, Some((m, true))));
                }
            }
        }
        out
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
        let mut p = Parser::new(side, self.redact.clone());
        if from == Peer::Server {
            p.head_requests = self
                .waiting
                .iter()
                .map(|m| m.head.method.as_deref() == Some("HEAD"))
                .collect();
        }
        *self.parser(from) = p;
    }

    /// The connection ended: requests without a response, and a response
    /// read until close.
    pub fn finish(&mut self) -> Vec<Exchange> {
        let mut out = Vec::new();
        let _ = self.requests.finish();
        if let Some(resp) = self.responses.finish() {
            let req = self.waiting.pop_front();
            out.push(self.exchange(req, Some(resp)));
        }
        while let Some(req) = self.waiting.pop_front() {
            out.push(self.exchange(Some(req), None));
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PIPELINED: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /c HTTP/1.1\r\nHost: x\r\n\r\n";
    const RESPONSES: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\ngrpc-status: 0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";

    #[test]
    fn pipelined_requests() {
        let mut p = Parser::new(Side::Requests, Redact::none());
        let m = p.push(PIPELINED, 0).unwrap();
        let paths: Vec<_> = m.iter().map(|m| m.head.path.clone().unwrap()).collect();
        assert_eq!(paths, ["/a", "/b", "/c"]);
        assert_eq!(m[1].body, b"hello");
        assert_eq!(m[1].head.method.as_deref(), Some("POST"));
    }

    #[test]
    fn length_chunked_trailers_and_no_body() {
        let mut p = Parser::new(Side::Responses, Redact::none());
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
        let mut p = Parser::new(Side::Responses, Redact::none());
        assert!(p
            .push(b"HTTP/1.0 200 OK\r\n\r\nsome body", 0)
            .unwrap()
            .is_empty());
        let (m, complete) = p.finish().unwrap();
        assert_eq!(m.body, b"some body");
        assert!(complete);
        let mut p = Parser::new(Side::Requests, Redact::none());
        assert!(p.push(b"\x16\x03\x01\x02\x00binary", 0).is_err());
        assert!(
            p.push(b"GET / HTTP/1.1\r\n\r\n", 0).unwrap().is_empty(),
            "stays failed"
        );
        let mut p = Parser::new(Side::Responses, Redact::none());
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
        let mut p = Parser::new(Side::Responses, Redact::none());
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

    #[test]
    fn redacted_values_are_masked_on_the_wire() {
        let mut p = Parser::new(Side::Requests, Redact::new(&["X-Api-Key".into()]));
        let m = p
            .push(
                b"GET /k HTTP/1.1\r\nx-api-key: 123\r\nCookie: a=b\r\nAccept: */*\r\n\r\n",
                0,
            )
            .unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(
            p.take_wire(),
            b"GET /k HTTP/1.1\r\nx-api-key: [redacted]\r\nCookie: [redacted]\r\nAccept: */*\r\n\r\n"
        );
    }

    proptest! {
        /// Split anywhere, twice: the same messages as all at once.
        #[test]
        fn any_split_gives_the_same_messages(a in 0usize..=RESPONSES.len(), b in 0usize..=RESPONSES.len()) {
            let (a, b) = (a.min(b), a.max(b));
            let whole = Parser::new(Side::Responses, Redact::none()).push(RESPONSES, 0).unwrap();
            let mut p = Parser::new(Side::Responses, Redact::none());
            let mut got = p.push(&RESPONSES[..a], 0).unwrap();
            got.extend(p.push(&RESPONSES[a..b], 0).unwrap());
            got.extend(p.push(&RESPONSES[b..], 0).unwrap());
            prop_assert_eq!(got, whole);
        }

        #[test]
        fn requests_split_anywhere(a in 0usize..=PIPELINED.len()) {
            let whole = Parser::new(Side::Requests, Redact::none()).push(PIPELINED, 0).unwrap();
            let mut p = Parser::new(Side::Requests, Redact::none());
            let mut got = p.push(&PIPELINED[..a], 0).unwrap();
            got.extend(p.push(&PIPELINED[a..], 0).unwrap());
            prop_assert_eq!(got, whole);
        }

        /// Without redaction the wire is the input, byte for byte, however
        /// it is split.
        #[test]
        fn wire_is_the_input(a in 0usize..=RESPONSES.len()) {
            let mut p = Parser::new(Side::Responses, Redact::none());
            p.push(&RESPONSES[..a], 0).unwrap();
            let mut wire = p.take_wire();
            p.push(&RESPONSES[a..], 0).unwrap();
            wire.extend(p.take_wire());
            prop_assert_eq!(wire, RESPONSES);
        }

        /// Arbitrary bytes: an error or messages, never a panic.
        #[test]
        fn corrupt_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Parser::new(Side::Requests, Redact::none()).push(&data, 0);
            let mut p = Parser::new(Side::Responses, Redact::none());
            let _ = p.push(&data, 0);
            let _ = p.finish();
        }
    }
}
