//! Decoded output: an access-log line per HTTP exchange on the console (with
//! headers at `-v`, bodies at `-vv`), or a JSON object per exchange; raw
//! streams are shown as such.

use std::io::{self, Write};

use base64::Engine;
use serde::Serialize;

use super::{json_line, write_data, Clock, Format, JsonHead};
use crate::decode::conn::Item;
use crate::decode::{Exchange, Headers, HttpMessage};

/// Who a connection belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnMeta {
    pub pid: u32,
    pub comm: String,
    pub conn: u64,
    pub sni: Option<String>,
}

/// Console bodies are cut after this many bytes (`-vv` shows them).
const CONSOLE_BODY: usize = 4096;
/// Raw chunks on the console without `-vv` are cut after this many bytes.
const CONSOLE_RAW: usize = 1024;

pub struct AccessWriter {
    out: Box<dyn Write + Send>,
    format: Format,
    detail: u8,
    clock: Clock,
}

#[derive(Serialize)]
struct JsonMessage<'a> {
    time: String,
    ts_ns: u64,
    headers: Vec<(&'a str, String)>,
    body_len: u64,
    body_encoding: &'static str,
    body: String,
    body_truncated: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    trailers: Vec<(&'a str, String)>,
    complete: bool,
}

#[derive(Serialize)]
struct JsonGrpc<'a> {
    service: &'a str,
    method: &'a str,
    status: Option<u32>,
    message: Option<&'a str>,
    request_messages: u32,
    response_messages: u32,
}

#[derive(Serialize)]
struct JsonExchange<'a> {
    #[serde(flatten)]
    head: JsonHead<'a>,
    sni: Option<&'a str>,
    protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_id: Option<u32>,
    method: Option<&'a str>,
    path: Option<&'a str>,
    authority: Option<&'a str>,
    status: Option<u16>,
    latency_ms: Option<f64>,
    request: Option<JsonMessage<'a>>,
    response: Option<JsonMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc: Option<JsonGrpc<'a>>,
}

#[derive(Serialize)]
struct JsonRaw<'a> {
    #[serde(flatten)]
    head: JsonHead<'a>,
    sni: Option<&'a str>,
    direction: &'static str,
    len: usize,
    encoding: &'static str,
    data: String,
}

#[derive(Serialize)]
struct JsonNotice<'a> {
    #[serde(flatten)]
    head: JsonHead<'a>,
    sni: Option<&'a str>,
    text: &'a str,
}

fn encode(data: &[u8]) -> (&'static str, String) {
    match std::str::from_utf8(data) {
        Ok(s) => ("utf8", s.to_string()),
        Err(_) => (
            "base64",
            base64::engine::general_purpose::STANDARD.encode(data),
        ),
    }
}

fn header_list(h: &Headers) -> Vec<(&str, String)> {
    h.iter()
        .map(|(n, v)| (n.as_str(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

fn size(n: u64) -> String {
    match n {
        n if n < 10 * 1024 => format!("{n}B"),
        n if n < 10 * 1024 * 1024 => format!("{}KiB", n / 1024),
        n => format!("{}MiB", n >> 20),
    }
}

impl AccessWriter {
    /// `detail`: 0 access log, 1 adds headers, 2 adds bodies (console).
    pub fn new(out: Box<dyn Write + Send>, format: Format, detail: u8) -> AccessWriter {
        AccessWriter {
            out,
            format,
            detail,
            clock: Clock::new(),
        }
    }

    fn json_message<'a>(&self, m: &'a HttpMessage) -> JsonMessage<'a> {
        let (body_encoding, body) = encode(&m.body);
        JsonMessage {
            time: self.clock.rfc3339(m.ts_first_ns),
            ts_ns: m.ts_first_ns,
            headers: header_list(&m.headers),
            body_len: m.body_len,
            body_encoding,
            body,
            body_truncated: (m.body.len() as u64) < m.body_len,
            trailers: header_list(&m.trailers),
            complete: m.complete,
        }
    }

    pub fn write(&mut self, meta: &ConnMeta, item: &Item) -> io::Result<()> {
        match (self.format, item) {
            (Format::Json, Item::Exchange(e)) => {
                let ts = e
                    .request
                    .as_ref()
                    .or(e.response.as_ref())
                    .map(|m| m.ts_first_ns)
                    .unwrap_or(0);
                let j = JsonExchange {
                    head: JsonHead::new(
                        "http",
                        &self.clock,
                        ts,
                        meta.pid,
                        None,
                        &meta.comm,
                        meta.conn,
                    ),
                    sni: meta.sni.as_deref(),
                    protocol: e.protocol.as_str(),
                    stream_id: e.stream_id,
                    method: e.method.as_deref(),
                    path: e.path.as_deref(),
                    authority: e.authority.as_deref(),
                    status: e.status,
                    latency_ms: e.latency_ns().map(|n| n as f64 / 1e6),
                    request: e.request.as_ref().map(|m| self.json_message(m)),
                    response: e.response.as_ref().map(|m| self.json_message(m)),
                    grpc: e.grpc.as_ref().map(|g| JsonGrpc {
                        service: &g.service,
                        method: &g.method,
                        status: g.status,
                        message: g.message.as_deref(),
                        request_messages: g.request_messages,
                        response_messages: g.response_messages,
                    }),
                };
                json_line(&mut self.out, &j)
            }
            (
                Format::Json,
                Item::Raw {
                    outgoing,
                    ts_ns,
                    data,
                },
            ) => {
                let (encoding, text) = encode(data);
                let j = JsonRaw {
                    head: JsonHead::new(
                        "raw",
                        &self.clock,
                        *ts_ns,
                        meta.pid,
                        None,
                        &meta.comm,
                        meta.conn,
                    ),
                    sni: meta.sni.as_deref(),
                    direction: if *outgoing { "write" } else { "read" },
                    len: data.len(),
                    encoding,
                    data: text,
                };
                json_line(&mut self.out, &j)
            }
            (Format::Json, Item::Notice { ts_ns, text }) => {
                let j = JsonNotice {
                    head: JsonHead::new(
                        "notice",
                        &self.clock,
                        *ts_ns,
                        meta.pid,
                        None,
                        &meta.comm,
                        meta.conn,
                    ),
                    sni: meta.sni.as_deref(),
                    text,
                };
                json_line(&mut self.out, &j)
            }
            (Format::Text, Item::Exchange(e)) => self.console_exchange(meta, e),
            (
                Format::Text,
                Item::Raw {
                    outgoing,
                    ts_ns,
                    data,
                },
            ) => {
                writeln!(
                    self.out,
                    "{} {}[{}] {} raw {} {}",
                    self.clock.rfc3339(*ts_ns),
                    meta.comm,
                    meta.pid,
                    meta.sni.as_deref().unwrap_or("-"),
                    if *outgoing { "write" } else { "read" },
                    size(data.len() as u64)
                )?;
                let limit = if self.detail >= 2 {
                    usize::MAX
                } else {
                    CONSOLE_RAW
                };
                self.body(data, limit, "")
            }
            (Format::Text, Item::Notice { ts_ns, text }) => writeln!(
                self.out,
                "{} {}[{}] {} note: {}",
                self.clock.rfc3339(*ts_ns),
                meta.comm,
                meta.pid,
                meta.sni.as_deref().unwrap_or("-"),
                text
            ),
        }
    }

    fn console_exchange(&mut self, meta: &ConnMeta, e: &Exchange) -> io::Result<()> {
        let ts = e
            .request
            .as_ref()
            .or(e.response.as_ref())
            .map(|m| m.ts_first_ns)
            .unwrap_or(0);
        let dash = || "-".to_string();
        let mut line = format!(
            "{} {}[{}] {} {} {} {} {} {} req={} resp={}",
            self.clock.rfc3339(ts),
            meta.comm,
            meta.pid,
            meta.sni
                .as_deref()
                .or(e.authority.as_deref())
                .unwrap_or("-"),
            e.protocol.as_str(),
            e.method.as_deref().unwrap_or("-"),
            e.path.as_deref().unwrap_or("-"),
            e.status.map(|s| s.to_string()).unwrap_or_else(dash),
            e.latency_ns()
                .map(|n| format!("{:.2}ms", n as f64 / 1e6))
                .unwrap_or_else(dash),
            e.request
                .as_ref()
                .map(|m| size(m.body_len))
                .unwrap_or_else(dash),
            e.response
                .as_ref()
                .map(|m| size(m.body_len))
                .unwrap_or_else(dash),
        );
        if let Some(g) = &e.grpc {
            line.push_str(&format!(
                " grpc={}/{} grpc-status={}",
                g.service,
                g.method,
                g.status.map(|s| s.to_string()).unwrap_or_else(dash)
            ));
        }
        if e.response.as_ref().is_some_and(|m| !m.complete) || e.response.is_none() {
            line.push_str(" incomplete");
        }
        writeln!(self.out, "{line}")?;
        if self.detail == 0 {
            return Ok(());
        }
        for (m, mark) in [(&e.request, ">"), (&e.response, "<")] {
            let Some(m) = m else { continue };
            for (n, v) in &m.headers {
                writeln!(self.out, "  {mark} {n}: {}", String::from_utf8_lossy(v))?;
            }
            if self.detail >= 2 && !m.body.is_empty() {
                writeln!(self.out, "  {mark} [body {} bytes]", m.body_len)?;
                self.body(&m.body, CONSOLE_BODY, "    ")?;
            }
            for (n, v) in &m.trailers {
                writeln!(
                    self.out,
                    "  {mark} {n}: {} (trailer)",
                    String::from_utf8_lossy(v)
                )?;
            }
        }
        Ok(())
    }

    /// Printable text as is, anything else as hex, cut at `limit` bytes.
    fn body(&mut self, data: &[u8], limit: usize, indent: &str) -> io::Result<()> {
        let shown = &data[..data.len().min(limit)];
        let mut buf = Vec::new();
        write_data(&mut buf, shown)?;
        for line in String::from_utf8_lossy(&buf).lines() {
            writeln!(self.out, "{indent}{line}")?;
        }
        if shown.len() < data.len() {
            writeln!(
                self.out,
                "{indent}[... {} more bytes not shown]",
                data.len() - shown.len()
            )?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
