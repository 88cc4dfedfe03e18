//! Decode: from the capture's per-call records to what people read.
//!
//! Each connection's two directions are rebuilt as ordered byte streams,
//! classified (HTTP/1.x, HTTP/2 by its preface, anything else stays raw)
//! and decoded into request/response exchanges:
//!
//! - [`conn`]: one connection, its streams, their classification, and what
//!   they turn into (exchanges, raw chunks, notices; segments for pcapng);
//! - [`http1`]: HTTP/1.1 messages from one direction;
//! - [`http2`]: HTTP/2 exchanges from both directions (frames, HPACK);
//! - [`postgres`], [`redis`], [`mysql`]: database commands and their
//!   answers from both directions, and [`db`], what they share (the
//!   record, framing, query text);
//! - [`raw`]: masking sensitive values in bytes shown as captured;
//! - [`limits`]: every bound on what a captured process can make the agent
//!   hold or write;
//! - this module: what they share (exchanges and messages, gRPC details,
//!   header redaction, the per-message header budget).
//!
//! Decoders apply header redaction, so every output downstream sees masked
//! values.

use std::borrow::Cow;

pub mod conn;
pub mod db;
pub mod http1;
pub mod http2;
pub mod limits;
pub mod mysql;
pub mod postgres;
pub mod raw;
pub mod redis;

/// Which peer sent a stream's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The side that sends requests (the TLS client, for HTTP).
    Client,
    Server,
}

impl Peer {
    /// 0 for the client, 1 for the server: the index of per-direction
    /// state kept in pairs.
    pub fn index(self) -> usize {
        usize::from(self == Peer::Server)
    }
}

/// A header list: names as sent (HTTP/2: lower case), raw values.
pub type Headers = Vec<(String, Vec<u8>)>;

/// Header values that are masked unless redaction is turned off.
///
/// In HTTP/2, a field the sender marked never-indexed (RFC 7541 6.2.3: it
/// asks intermediaries to treat the value as sensitive) is masked too,
/// whatever its name.
#[derive(Debug, Clone)]
pub struct Redact {
    /// Lower-case header names.
    names: Vec<String>,
    /// The longest of `names`.
    max_len: usize,
}

/// What a redacted value is replaced with.
pub const REDACTED: &[u8] = b"[redacted]";

impl Redact {
    /// Authorization, Proxy-Authorization, Cookie, Set-Cookie plus `extra`.
    pub fn new(extra: &[String]) -> Redact {
        let mut names: Vec<String> = [
            "authorization",
            "proxy-authorization",
            "cookie",
            "set-cookie",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        names.extend(extra.iter().map(|s| s.trim().to_ascii_lowercase()));
        names.retain(|n| !n.is_empty());
        let max_len = names.iter().map(String::len).max().unwrap_or(0);
        Redact { names, max_len }
    }

    /// Nothing is masked (`--no-redact`).
    pub fn none() -> Redact {
        Redact {
            names: Vec::new(),
            max_len: 0,
        }
    }

    /// Whether nothing is masked.
    pub fn is_none(&self) -> bool {
        self.names.is_empty()
    }

    /// Whether the value of header `name` is masked.
    pub fn applies(&self, name: &str) -> bool {
        self.applies_bytes(name.as_bytes())
    }

    /// [`Redact::applies`] for a name as bytes.
    pub fn applies_bytes(&self, name: &[u8]) -> bool {
        name.len() <= self.max_len
            && self
                .names
                .iter()
                .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
    }

    /// Whether the value of a field is masked: by its name, or because the
    /// sender marked it never-indexed (HTTP/2). Nothing is with `none`.
    pub fn applies_field(&self, name: &str, never_indexed: bool) -> bool {
        !self.is_none() && (never_indexed || self.applies(name))
    }

    /// The length of the longest masked name.
    pub fn max_name_len(&self) -> usize {
        self.max_len
    }

    /// `bytes` as captured with the values of sensitive header fields
    /// overwritten, the length unchanged: `Name: value` lines of HTTP/1-like
    /// text, and literal fields of HTTP/2 header blocks when `bytes` start
    /// with the client preface or a server's SETTINGS frame (see
    /// [`raw::RawRedactor`], which does the same across calls).
    pub fn raw<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        raw::RawRedactor::new(self.clone()).push(bytes)
    }

    /// Masks the values of the listed headers in place.
    pub fn headers(&self, headers: &mut Headers) {
        for (n, v) in headers.iter_mut() {
            if self.applies(n) {
                *v = REDACTED.to_vec();
            }
        }
    }
}

/// What a message may still keep of header and trailer fields
/// ([`limits::MAX_HEADER_BYTES`] of names and values, [`limits::MAX_FIELDS`]
/// fields). Fields are kept in order; the first one that does not fit whole
/// keeps what fits of its value (the total is then exactly the limit) and
/// every later one is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldBudget {
    pub bytes: usize,
    pub fields: usize,
}

impl Default for FieldBudget {
    fn default() -> FieldBudget {
        FieldBudget::message()
    }
}

impl FieldBudget {
    /// A whole message's budget.
    pub fn message() -> FieldBudget {
        FieldBudget {
            bytes: limits::MAX_HEADER_BYTES,
            fields: limits::MAX_FIELDS,
        }
    }

    /// Takes a field: how many bytes of its value are kept, or None if the
    /// field is dropped.
    pub fn take(&mut self, name_len: usize, value_len: usize) -> Option<usize> {
        if self.fields == 0 || name_len > self.bytes {
            *self = FieldBudget {
                bytes: 0,
                fields: 0,
            };
            return None;
        }
        let keep = value_len.min(self.bytes - name_len);
        if keep < value_len {
            *self = FieldBudget {
                bytes: 0,
                fields: 0,
            };
        } else {
            self.fields -= 1;
            self.bytes -= name_len + keep;
        }
        Some(keep)
    }

    /// Takes what fits of `list`; true if anything was cut or dropped.
    pub fn keep(&mut self, list: &mut Headers) -> bool {
        let mut kept = 0;
        let mut cut = false;
        for (i, (n, v)) in list.iter_mut().enumerate() {
            match self.take(n.len(), v.len()) {
                Some(k) => {
                    cut |= k < v.len();
                    v.truncate(k);
                    kept = i + 1;
                }
                None => {
                    cut = true;
                    break;
                }
            }
        }
        list.truncate(kept);
        cut
    }
}

/// The name and value bytes of a header list.
pub fn header_bytes(list: &Headers) -> usize {
    list.iter().map(|(n, v)| n.len() + v.len()).sum()
}

/// One request or response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpMessage {
    /// CLOCK_MONOTONIC ns of the first and of the last byte's call.
    pub ts_first_ns: u64,
    pub ts_last_ns: u64,
    /// Regular header fields (HTTP/2: without pseudo-headers), redacted.
    pub headers: Headers,
    /// The body (de-chunked, DATA payloads joined), possibly cut.
    pub body: Vec<u8>,
    /// Body bytes in all (more than `body.len()` when the body was cut).
    pub body_len: u64,
    /// Trailer fields, redacted.
    pub trailers: Headers,
    /// The message ended as framed (not cut by a reset or the close).
    pub complete: bool,
    /// Header or trailer fields were cut or dropped by the per-message
    /// budget (`limits::MAX_HEADER_BYTES`, `MAX_FIELDS`, `MAX_TRAILERS`).
    pub headers_truncated: bool,
}

impl HttpMessage {
    /// A message whose head (and body so far: none) was seen.
    pub fn begin(
        ts_first_ns: u64,
        ts_last_ns: u64,
        headers: Headers,
        complete: bool,
    ) -> HttpMessage {
        HttpMessage {
            ts_first_ns,
            ts_last_ns,
            headers,
            complete,
            ..Default::default()
        }
    }

    #[cfg(test)]
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "HTTP/1.1",
            Protocol::Http2 => "HTTP/2",
        }
    }
}

/// gRPC call details (request content-type application/grpc*).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grpc {
    /// From the path `/package.Service/Method`.
    pub service: String,
    pub method: String,
    /// `grpc-status` of the trailers (or of a trailers-only response).
    pub status: Option<u32>,
    pub message: Option<String>,
    /// Length-prefixed messages in each direction.
    pub request_messages: u32,
    pub response_messages: u32,
}

/// A request and its response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub protocol: Protocol,
    /// HTTP/2 stream id.
    pub stream_id: Option<u32>,
    pub method: Option<String>,
    pub path: Option<String>,
    /// `:authority`, or the Host header.
    pub authority: Option<String>,
    pub status: Option<u16>,
    pub request: Option<HttpMessage>,
    pub response: Option<HttpMessage>,
    pub grpc: Option<Grpc>,
}

impl Exchange {
    /// Request start to response end, when both were seen.
    pub fn latency_ns(&self) -> Option<u64> {
        Some(
            self.response
                .as_ref()?
                .ts_last_ns
                .saturating_sub(self.request.as_ref()?.ts_first_ns),
        )
    }
}

/// Splits a gRPC path `/pkg.Service/Method`.
pub fn grpc_path(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix('/')?;
    let (svc, method) = rest.split_once('/')?;
    if svc.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((svc.to_string(), method.to_string()))
}

/// Counts the complete gRPC length-prefixed messages in a body.
pub fn grpc_message_count(body: &[u8]) -> u32 {
    let mut n = 0;
    let mut rest = body;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if rest.len() - 5 < len {
            break;
        }
        rest = &rest[5 + len..];
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_is_case_insensitive_and_extendable() {
        let r = Redact::new(&["X-Api-Key".into()]);
        let mut h: Headers = vec![
            ("Authorization".into(), b"Bearer s3cret".to_vec()),
            ("x-api-key".into(), b"k".to_vec()),
            ("Accept".into(), b"*/*".to_vec()),
        ];
        r.headers(&mut h);
        assert_eq!(h[0].1, REDACTED);
        assert_eq!(h[1].1, REDACTED);
        assert_eq!(h[2].1, b"*/*");
        assert!(!Redact::none().applies("cookie"));
    }

    #[test]
    fn grpc_paths_and_messages() {
        assert_eq!(
            grpc_path("/helloworld.Greeter/SayHello"),
            Some(("helloworld.Greeter".into(), "SayHello".into()))
        );
        assert_eq!(grpc_path("/index.html"), None);
        assert_eq!(
            grpc_message_count(&[0, 0, 0, 0, 2, 8, 1, 0, 0, 0, 0, 0, 1]),
            2
        );
        assert_eq!(grpc_message_count(&[0, 0, 0, 0, 9, 1]), 0);
    }
}
