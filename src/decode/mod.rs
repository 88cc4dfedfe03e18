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
//! - this module: what they share (exchanges and messages, gRPC details,
//!   header redaction).
//!
//! Decoders apply header redaction, so every output downstream sees masked
//! values.

pub mod conn;
pub mod http1;
pub mod http2;

/// Which peer sent a stream's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The side that sends requests (the TLS client, for HTTP).
    Client,
    Server,
}

/// A header list: names as sent (HTTP/2: lower case), raw values.
pub type Headers = Vec<(String, Vec<u8>)>;

/// Header values that are masked unless redaction is turned off.
#[derive(Debug, Clone)]
pub struct Redact {
    /// Lower-case header names.
    names: Vec<String>,
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
        Redact { names }
    }

    /// Nothing is masked (`--no-redact`).
    pub fn none() -> Redact {
        Redact { names: Vec::new() }
    }

    /// Whether the value of header `name` is masked.
    pub fn applies(&self, name: &str) -> bool {
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
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
