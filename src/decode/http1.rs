//! HTTP/1.1 messages from one direction of a connection's plaintext stream:
//! request or response heads (httparse), bodies by Content-Length or chunked
//! transfer coding, several messages back to back (keep-alive, pipelining).
//! Bytes may arrive split anywhere.
#![allow(dead_code)]

use thiserror::Error;

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
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub head: Head,
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, Vec<u8>)>,
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

#[derive(Debug)]
enum Body {
    Length(usize),
    Chunked { body: Vec<u8>, state: Chunk },
    /// A response without length: ends when the connection does.
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(usize),
    DataEnd,
    Trailers,
}

/// Incremental parser for one direction.
#[derive(Debug)]
pub struct Parser {
    side: Side,
    buf: Vec<u8>,
    pending: Option<(Head, Body)>,
    failed: bool,
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

impl Parser {
    pub fn new(side: Side) -> Parser {
        Parser { side, buf: Vec::new(), pending: None, failed: false }
    }

    /// Feeds bytes; returns the messages they complete.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Message>, Http1Error> {
        if self.failed {
            return Ok(Vec::new());
        }
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

    /// The connection ended: a response read until close is complete.
    pub fn finish(&mut self) -> Option<Message> {
        match self.pending.take() {
            Some((head, Body::UntilClose)) => {
                Some(Message { head, body: std::mem::take(&mut self.buf), trailers: Vec::new() })
            }
            other => {
                self.pending = other;
                None
            }
        }
    }

    fn step(&mut self) -> Result<Option<Message>, Http1Error> {
        if self.pending.is_none() {
            let Some((head, used)) = self.parse_head()? else { return Ok(None) };
            self.buf.drain(..used);
            let body = self.body_kind(&head)?;
            self.pending = Some((head, body));
        }
        let (head, body) = self.pending.as_mut().expect("set above");
        match body {
            Body::Length(n) => {
                if self.buf.len() < *n {
                    return Ok(None);
                }
                let n = *n;
                let body: Vec<u8> = self.buf.drain(..n).collect();
                let head = head.clone();
                self.pending = None;
                Ok(Some(Message { head, body, trailers: Vec::new() }))
            }
            Body::UntilClose => Ok(None),
            Body::Chunked { body, state } => loop {
                match *state {
                    Chunk::Size => {
                        let Some(i) = find_crlf(&self.buf) else { return Ok(None) };
                        let line = std::str::from_utf8(&self.buf[..i]).map_err(|_| Http1Error::BadChunk)?;
                        let hex = line.split(';').next().unwrap_or("").trim();
                        let size = usize::from_str_radix(hex, 16).map_err(|_| Http1Error::BadChunk)?;
                        self.buf.drain(..i + 2);
                        *state = if size == 0 { Chunk::Trailers } else { Chunk::Data(size) };
                    }
                    Chunk::Data(n) => {
                        if self.buf.len() < n {
                            return Ok(None);
                        }
                        body.extend(self.buf.drain(..n));
                        *state = Chunk::DataEnd;
                    }
                    Chunk::DataEnd => {
                        if self.buf.len() < 2 {
                            return Ok(None);
                        }
                        if &self.buf[..2] != b"\r\n" {
                            return Err(Http1Error::BadChunk);
                        }
                        self.buf.drain(..2);
                        *state = Chunk::Size;
                    }
                    Chunk::Trailers => {
                        let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n").and_then(|i| {
                            if i == 0 {
                                Some(2)
                            } else {
                                self.buf.windows(4).position(|w| w == b"\r\n\r\n").map(|j| j + 4)
                            }
                        }) else {
                            return Ok(None);
                        };
                        let raw: Vec<u8> = self.buf.drain(..end).collect();
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
                        let body = std::mem::take(body);
                        let head = head.clone();
                        self.pending = None;
                        return Ok(Some(Message { head, body, trailers }));
                    }
                }
            },
        }
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
            hs.iter().map(|h| (h.name.to_string(), h.value.to_vec())).collect::<Vec<_>>()
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

    fn body_kind(&self, head: &Head) -> Result<Body, Http1Error> {
        let chunked = head
            .header("transfer-encoding")
            .map(|v| String::from_utf8_lossy(v).to_ascii_lowercase().contains("chunked"))
            .unwrap_or(false);
        if chunked {
            return Ok(Body::Chunked { body: Vec::new(), state: Chunk::Size });
        }
        if let Some(v) = head.header("content-length") {
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or(Http1Error::BadLength)?;
            return Ok(Body::Length(n));
        }
        match (self.side, head.status) {
            // 1xx, 204 and 304 responses have no body
            (Side::Responses, Some(s)) if (100..200).contains(&s) || s == 204 || s == 304 => Ok(Body::Length(0)),
            (Side::Responses, _) => Ok(Body::UntilClose),
            (Side::Requests, _) => Ok(Body::Length(0)),
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
        let mut p = Parser::new(Side::Requests);
        let m = p.push(PIPELINED).unwrap();
        let paths: Vec<_> = m.iter().map(|m| m.head.path.clone().unwrap()).collect();
        assert_eq!(paths, ["/a", "/b", "/c"]);
        assert_eq!(m[1].body, b"hello");
        assert_eq!(m[1].head.method.as_deref(), Some("POST"));
    }

    #[test]
    fn length_chunked_trailers_and_no_body() {
        let mut p = Parser::new(Side::Responses);
        let m = p.push(RESPONSES).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].body, b"abc");
        assert_eq!(m[1].body, b"Wikipedia");
        assert_eq!(m[1].trailers, vec![("grpc-status".to_string(), b"0".to_vec())]);
        assert_eq!(m[2].head.status, Some(204));
    }

    #[test]
    fn until_close_and_garbage() {
        let mut p = Parser::new(Side::Responses);
        assert!(p.push(b"HTTP/1.0 200 OK\r\n\r\nsome body").unwrap().is_empty());
        assert_eq!(p.finish().unwrap().body, b"some body");
        let mut p = Parser::new(Side::Requests);
        assert!(p.push(b"\x16\x03\x01\x02\x00binary").is_err());
        assert!(p.push(b"GET / HTTP/1.1\r\n\r\n").unwrap().is_empty(), "stays failed");
        let mut p = Parser::new(Side::Responses);
        assert_eq!(
            p.push(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Err(Http1Error::BadLength)
        );
    }

    proptest! {
        /// Split anywhere, twice: the same messages as all at once.
        #[test]
        fn any_split_gives_the_same_messages(a in 0usize..=RESPONSES.len(), b in 0usize..=RESPONSES.len()) {
            let (a, b) = (a.min(b), a.max(b));
            let whole = Parser::new(Side::Responses).push(RESPONSES).unwrap();
            let mut p = Parser::new(Side::Responses);
            let mut got = p.push(&RESPONSES[..a]).unwrap();
            got.extend(p.push(&RESPONSES[a..b]).unwrap());
            got.extend(p.push(&RESPONSES[b..]).unwrap());
            prop_assert_eq!(got, whole);
        }

        #[test]
        fn requests_split_anywhere(a in 0usize..=PIPELINED.len()) {
            let whole = Parser::new(Side::Requests).push(PIPELINED).unwrap();
            let mut p = Parser::new(Side::Requests);
            let mut got = p.push(&PIPELINED[..a]).unwrap();
            got.extend(p.push(&PIPELINED[a..]).unwrap());
            prop_assert_eq!(got, whole);
        }

        /// Arbitrary bytes: an error or messages, never a panic.
        #[test]
        fn corrupt_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Parser::new(Side::Requests).push(&data);
            let mut p = Parser::new(Side::Responses);
            let _ = p.push(&data);
            let _ = p.finish();
        }
    }
}
