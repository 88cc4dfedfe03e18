//! Decoded output, what the decoder (`crate::decode::conn`) makes of a
//! connection: on the console an access-log line per HTTP exchange (with
//! headers at `-v`, bodies at `-vv`), or a JSON object per exchange. Bytes
//! that are not HTTP are shown raw (on the console cut at 1 KiB unless
//! `-vv`), decoding problems as notices.
//!
//! On the console, everything the captured processes control (process and
//! server names, methods, paths, gRPC names, header names and values,
//! bodies, notices) is escaped for the terminal (`crate::escape`); JSON
//! strings are escaped by `super::json_line`.

use std::io::{self, Write};

use serde::Serialize;

use super::{encode, json_line, write_data, Clock, Format, JsonHead};
use crate::decode::conn::Item;
use crate::decode::db::{DbKind, DbQuery, DbStatus};
use crate::decode::{Exchange, Grpc, Headers, HttpMessage};
use crate::escape::{terminal, terminal_bytes};
pub use crate::record::ConnMeta;

/// Console bodies are cut after this many bytes (`-vv` shows them).
const CONSOLE_BODY: usize = 4096;
/// Raw chunks on the console without `-vv` are cut after this many bytes.
const CONSOLE_RAW: usize = 1024;
/// Query text on a database record's console line is cut after this many
/// bytes (`-v` shows it whole on a line of its own).
const CONSOLE_QUERY: usize = 120;

/// Writes decoded items (exchanges, raw chunks, notices) in one format.
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
    /// Header or trailer fields cut by the per-message budget.
    headers_truncated: bool,
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
    /// Which end of the connection the captured process is.
    #[serde(skip_serializing_if = "Option::is_none")]
    side: Option<&'static str>,
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

/// A database command and its answer (`type: "db"`).
#[derive(Serialize)]
struct JsonDb<'a> {
    #[serde(flatten)]
    head: JsonHead<'a>,
    sni: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    side: Option<&'static str>,
    system: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    /// `message` for a pushed message (Redis pub/sub); absent for commands.
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    operation: Option<&'a str>,
    query: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    query_truncated: bool,
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sqlstate: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    response_truncated: bool,
    latency_ms: Option<f64>,
}

#[derive(Serialize)]
struct JsonRaw<'a> {
    #[serde(flatten)]
    head: JsonHead<'a>,
    sni: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    side: Option<&'static str>,
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

/// When an exchange started: the first byte of its request, or else of its
/// response (0 when it has neither).
fn exchange_ts(e: &Exchange) -> u64 {
    e.request
        .as_ref()
        .or(e.response.as_ref())
        .map(|m| m.ts_first_ns)
        .unwrap_or(0)
}

/// `write` for bytes the captured process sent, else `read`.
fn direction(outgoing: bool) -> &'static str {
    if outgoing {
        "write"
    } else {
        "read"
    }
}

/// The gRPC details of an exchange as JSON.
fn json_grpc(g: &Grpc) -> JsonGrpc<'_> {
    JsonGrpc {
        service: &g.service,
        method: &g.method,
        status: g.status,
        message: g.message.as_deref(),
        request_messages: g.request_messages,
        response_messages: g.response_messages,
    }
}

/// Header fields as JSON `[name, value]` pairs, values as lossy UTF-8.
fn header_list(h: &Headers) -> Vec<(&str, String)> {
    h.iter()
        .map(|(n, v)| (n.as_str(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

/// The first `limit` bytes of `data`, or fewer if they would end inside a
/// UTF-8 character of text.
fn cut(data: &[u8], limit: usize) -> &[u8] {
    let shown = &data[..data.len().min(limit)];
    match std::str::from_utf8(shown) {
        // valid up to an incomplete character at the end
        Err(e) if shown.len() < data.len() && e.error_len().is_none() => &shown[..e.valid_up_to()],
        _ => shown,
    }
}

/// A byte count for the console: bytes under 10 KiB, KiB under 10 MiB,
/// else MiB (rounded down).
fn size(n: u64) -> String {
    match n {
        n if n < 10 * 1024 => format!("{n}B"),
        n if n < 10 * 1024 * 1024 => format!("{}KiB", n / 1024),
        n => format!("{}MiB", n >> 20),
    }
}

impl AccessWriter {
    /// A coverage record, in the writer's format.
    pub fn coverage(&mut self, c: &crate::record::Coverage) -> io::Result<()> {
        match self.format {
            Format::Json => super::coverage_json(&mut self.out, &self.clock, c),
            Format::Text => super::coverage_text(&mut self.out, &self.clock, c),
        }
    }

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
            headers_truncated: m.headers_truncated,
            trailers: header_list(&m.trailers),
            complete: m.complete,
        }
    }

    /// Writes one decoded item (exchange, raw chunk or notice) in the
    /// writer's format.
    pub fn write(&mut self, meta: &ConnMeta, item: &Item) -> io::Result<()> {
        match (self.format, item) {
            (Format::Json, Item::Exchange(e)) => self.json_exchange(meta, e),
            (Format::Json, Item::Db(q)) => self.json_db(meta, q),
            (Format::Text, Item::Db(q)) => self.console_db(meta, q),
            (
                Format::Json,
                Item::Raw {
                    outgoing,
                    ts_ns,
                    data,
                },
            ) => self.json_raw(meta, *outgoing, *ts_ns, data),
            (Format::Json, Item::Notice { ts_ns, text }) => self.json_notice(meta, *ts_ns, text),
            (Format::Text, Item::Exchange(e)) => self.console_exchange(meta, e),
            (
                Format::Text,
                Item::Raw {
                    outgoing,
                    ts_ns,
                    data,
                },
            ) => self.console_raw(meta, *outgoing, *ts_ns, data),
            (Format::Text, Item::Notice { ts_ns, text }) => self.console_notice(meta, *ts_ns, text),
        }
    }

    /// The fields every JSON object of a connection starts with (no thread:
    /// an item can come from the calls of several).
    fn json_head<'a>(&self, kind: &'static str, ts_ns: u64, meta: &'a ConnMeta) -> JsonHead<'a> {
        JsonHead::new(
            kind,
            &self.clock,
            ts_ns,
            meta.pid,
            None,
            &meta.comm,
            meta.conn,
        )
        .with_facts(&meta.facts)
    }

    /// An `http` object: the exchange's summary, both messages in full
    /// (bodies as UTF-8 or base64) and its gRPC details.
    fn json_exchange(&mut self, meta: &ConnMeta, e: &Exchange) -> io::Result<()> {
        let j = JsonExchange {
            head: self.json_head("http", exchange_ts(e), meta),
            sni: meta.sni.as_deref(),
            side: meta.side(),
            protocol: e.protocol.as_str(),
            stream_id: e.stream_id,
            method: e.method.as_deref(),
            path: e.path.as_deref(),
            authority: e.authority.as_deref(),
            status: e.status,
            latency_ms: e.latency_ns().map(|n| n as f64 / 1e6),
            request: e.request.as_ref().map(|m| self.json_message(m)),
            response: e.response.as_ref().map(|m| self.json_message(m)),
            grpc: e.grpc.as_ref().map(json_grpc),
        };
        json_line(&mut self.out, &j)
    }

    /// A `db` object: the command, its answer, its latency.
    fn json_db(&mut self, meta: &ConnMeta, q: &DbQuery) -> io::Result<()> {
        let j = JsonDb {
            head: self.json_head("db", q.ts_first_ns, meta),
            sni: meta.sni.as_deref(),
            side: meta.side(),
            system: q.system.as_str(),
            namespace: q.namespace.as_deref(),
            kind: (q.kind == DbKind::Message).then_some("message"),
            operation: q.operation.as_deref(),
            query: q.query.as_deref(),
            query_truncated: q.query_truncated,
            status: q.status.map(DbStatus::as_str),
            error_code: q.error_code.as_deref(),
            sqlstate: q.sqlstate.as_deref(),
            error: q.error.as_deref(),
            rows: q.rows,
            response: q.response.as_deref(),
            response_truncated: q.response_truncated,
            latency_ms: q.latency_ns().map(|n| n as f64 / 1e6),
        };
        json_line(&mut self.out, &j)
    }

    /// A database line: who, system, operation, rows or error, latency,
    /// the query (cut); `-v` adds the whole query and the reply.
    fn console_db(&mut self, meta: &ConnMeta, q: &DbQuery) -> io::Result<()> {
        let line = self.db_line(meta, q);
        writeln!(self.out, "{line}")?;
        if self.detail == 0 {
            return Ok(());
        }
        if let Some(text) = &q.query {
            writeln!(self.out, "  > {}", terminal(text))?;
        }
        if let Some(r) = &q.response {
            writeln!(self.out, "  < [reply {} bytes]", r.len())?;
            self.body(r.as_bytes(), CONSOLE_BODY, "    ")?;
        }
        Ok(())
    }

    fn db_line(&self, meta: &ConnMeta, q: &DbQuery) -> String {
        let who = self.console_who(q.ts_first_ns, meta, meta.sni.as_deref().unwrap_or(""));
        let mut line = format!(
            "{} {} {}",
            who.trim_end(),
            q.system.as_str(),
            terminal(q.operation.as_deref().unwrap_or("-"))
        );
        let outcome = match (q.kind, q.status) {
            (DbKind::Message, _) => String::new(),
            (_, None) => "unanswered".into(),
            (_, Some(DbStatus::Error)) => format!(
                "error {} {}",
                terminal(q.error_code.as_deref().unwrap_or("-")),
                terminal(q.error.as_deref().unwrap_or(""))
            ),
            (_, Some(DbStatus::Ok)) => match q.rows {
                Some(1) => "1 row".into(),
                Some(n) => format!("{n} rows"),
                None => "ok".into(),
            },
        };
        if !outcome.is_empty() {
            line.push(' ');
            line.push_str(&outcome);
        }
        if let Some(n) = q.latency_ns() {
            line.push_str(&format!(" {:.2}ms", n as f64 / 1e6));
        }
        if let Some(text) = &q.query {
            let shown = String::from_utf8_lossy(cut(text.as_bytes(), CONSOLE_QUERY));
            let more = if shown.len() < text.len() || q.query_truncated {
                " …"
            } else {
                ""
            };
            line.push_str(&format!(" {}{more}", terminal(&shown)));
        }
        if q.kind == DbKind::Message {
            if let Some(r) = &q.response {
                let shown = String::from_utf8_lossy(cut(r.as_bytes(), CONSOLE_QUERY));
                line.push_str(&format!(" {}", terminal(&shown)));
            }
        }
        line
    }

    /// A `raw` object: bytes that are not HTTP, whole, as UTF-8 or base64.
    fn json_raw(
        &mut self,
        meta: &ConnMeta,
        outgoing: bool,
        ts_ns: u64,
        data: &[u8],
    ) -> io::Result<()> {
        let (encoding, text) = encode(data);
        let j = JsonRaw {
            head: self.json_head("raw", ts_ns, meta),
            sni: meta.sni.as_deref(),
            side: meta.side(),
            direction: direction(outgoing),
            len: data.len(),
            encoding,
            data: text,
        };
        json_line(&mut self.out, &j)
    }

    /// A `notice` object: what went wrong while decoding.
    fn json_notice(&mut self, meta: &ConnMeta, ts_ns: u64, text: &str) -> io::Result<()> {
        let j = JsonNotice {
            head: self.json_head("notice", ts_ns, meta),
            sni: meta.sni.as_deref(),
            text,
        };
        json_line(&mut self.out, &j)
    }

    /// The start of every console line: time, process and server name.
    fn console_who(&self, ts_ns: u64, meta: &ConnMeta, server: &str) -> String {
        let ctr = meta
            .facts
            .container
            .as_ref()
            .map_or(String::new(), |c| format!(" ctr={}", c.short()));
        // Client lines read as before; a server's say so.
        let side = if meta.facts.is_client() == Some(false) {
            " (server)"
        } else {
            ""
        };
        // The other end: a client's server, a server's client.
        format!(
            "{} {}[{}]{ctr}{side}{} {}",
            self.clock.rfc3339(ts_ns),
            terminal(&meta.comm),
            meta.pid,
            meta.facts.console_peer(),
            terminal(server)
        )
    }

    /// A `raw` line (direction, size), then the bytes: cut at
    /// `CONSOLE_RAW` unless `-vv`.
    fn console_raw(
        &mut self,
        meta: &ConnMeta,
        outgoing: bool,
        ts_ns: u64,
        data: &[u8],
    ) -> io::Result<()> {
        let who = self.console_who(ts_ns, meta, meta.sni.as_deref().unwrap_or("-"));
        writeln!(
            self.out,
            "{who} raw {} {}",
            direction(outgoing),
            size(data.len() as u64)
        )?;
        let limit = if self.detail >= 2 {
            usize::MAX
        } else {
            CONSOLE_RAW
        };
        self.body(data, limit, "")
    }

    /// A `note:` line.
    fn console_notice(&mut self, meta: &ConnMeta, ts_ns: u64, text: &str) -> io::Result<()> {
        let who = self.console_who(ts_ns, meta, meta.sni.as_deref().unwrap_or("-"));
        writeln!(self.out, "{who} note: {}", terminal(text))
    }

    /// The access-log line, then (`-v`) each message's headers, (`-vv`)
    /// body and trailers.
    fn console_exchange(&mut self, meta: &ConnMeta, e: &Exchange) -> io::Result<()> {
        let line = self.access_line(meta, e);
        writeln!(self.out, "{line}")?;
        if self.detail == 0 {
            return Ok(());
        }
        for (m, mark) in [(&e.request, ">"), (&e.response, "<")] {
            if let Some(m) = m {
                self.console_message(m, mark)?;
            }
        }
        Ok(())
    }

    /// One exchange on one line: who, server (SNI, else authority),
    /// protocol, method, path, status, latency, body sizes, gRPC call and
    /// status, and `incomplete` when the response was not seen whole.
    fn access_line(&self, meta: &ConnMeta, e: &Exchange) -> String {
        let dash = || "-".to_string();
        let server = meta
            .sni
            .as_deref()
            .or(e.authority.as_deref())
            .unwrap_or("-");
        let mut line = format!(
            "{} {} {} {} {} {} req={} resp={}",
            self.console_who(exchange_ts(e), meta, server),
            e.protocol.as_str(),
            terminal(e.method.as_deref().unwrap_or("-")),
            terminal(e.path.as_deref().unwrap_or("-")),
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
                terminal(&g.service),
                terminal(&g.method),
                g.status.map(|s| s.to_string()).unwrap_or_else(dash)
            ));
        }
        if e.response.as_ref().is_some_and(|m| !m.complete) || e.response.is_none() {
            line.push_str(" incomplete");
        }
        line
    }

    /// A message's headers, body (`-vv`, cut at `CONSOLE_BODY`) and
    /// trailers, indented, marked `>` (request) or `<` (response).
    fn console_message(&mut self, m: &HttpMessage, mark: &str) -> io::Result<()> {
        for (n, v) in &m.headers {
            writeln!(self.out, "  {mark} {}: {}", terminal(n), terminal_bytes(v))?;
        }
        if self.detail >= 2 && !m.body.is_empty() {
            writeln!(self.out, "  {mark} [body {} bytes]", m.body_len)?;
            self.body(&m.body, CONSOLE_BODY, "    ")?;
        }
        for (n, v) in &m.trailers {
            writeln!(
                self.out,
                "  {mark} {}: {} (trailer)",
                terminal(n),
                terminal_bytes(v)
            )?;
        }
        Ok(())
    }

    /// Printable text as is (escaped: see `write_data`), anything else as
    /// hex, cut at `limit` bytes (before a UTF-8 character the limit would
    /// split, so that text stays text).
    fn body(&mut self, data: &[u8], limit: usize, indent: &str) -> io::Result<()> {
        let shown = cut(data, limit);
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

#[cfg(test)]
mod tests {
    use super::super::tests::{fixed_clock, SharedBuf};
    use super::*;
    use crate::decode::Protocol;
    use crate::record::ConnFacts;

    /// A process in a container: JSON objects carry the full id, console
    /// lines the short one.
    #[test]
    fn container_ids() {
        let id = "3f5e9c1b2a7d4e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f";
        let meta = ConnMeta {
            pid: 42,
            comm: "curl".into(),
            conn: 0xabc,
            sni: Some("example.com".into()),
            facts: ConnFacts {
                container: Some(std::sync::Arc::new(crate::container::Container {
                    id: id.into(),
                    pod_uid: None,
                })),
                ..Default::default()
            },
        };
        let item = Item::Notice {
            ts_ns: 1,
            text: "n".into(),
        };
        for (format, want) in [
            (Format::Json, format!("\"container_id\":\"{id}\"")),
            (
                Format::Text,
                " curl[42] ctr=3f5e9c1b2a7d example.com".to_string(),
            ),
        ] {
            let buf = SharedBuf::default();
            let mut w = AccessWriter {
                out: Box::new(buf.clone()),
                format,
                detail: 0,
                clock: fixed_clock(),
            };
            w.write(&meta, &item).unwrap();
            w.flush().unwrap();
            let text = buf.text();
            assert!(text.contains(&want), "{text}");
        }
    }

    /// A server's lines say so; JSON objects give the side.
    #[test]
    fn server_side_is_shown() {
        let meta = ConnMeta {
            pid: 7,
            comm: "nginx".into(),
            conn: 0x1,
            sni: None,
            facts: ConnFacts {
                client: Some(false),
                ..Default::default()
            },
        };
        let item = Item::Notice {
            ts_ns: 1,
            text: "n".into(),
        };
        let raw = Item::Raw {
            outgoing: true,
            ts_ns: 1,
            data: b"x".to_vec(),
        };
        for (format, it, want) in [
            (Format::Text, &item, " nginx[7] (server) -"),
            (Format::Json, &raw, "\"side\":\"server\""),
        ] {
            let buf = SharedBuf::default();
            let mut w = AccessWriter {
                out: Box::new(buf.clone()),
                format,
                detail: 0,
                clock: fixed_clock(),
            };
            w.write(&meta, it).unwrap();
            w.flush().unwrap();
            let text = buf.text();
            assert!(text.contains(want), "{text}");
        }
    }

    fn db_items() -> Vec<Item> {
        use crate::decode::db::DbSystem;
        let mut ok = DbQuery::new(DbSystem::Postgresql, 1_000);
        ok.set_sql("select 'marker'", false, Default::default(), false);
        ok.rows = Some(1);
        ok.answer(DbStatus::Ok, 311_000);
        let mut err = DbQuery::new(DbSystem::Mysql, 2_000);
        err.set_sql("SELECT * FROM nope", false, Default::default(), true);
        err.error_code = Some("1146".into());
        err.sqlstate = Some("42S02".into());
        err.error = Some("Table 'd.nope' doesn't exist\x1b[2J".into());
        err.answer(DbStatus::Error, 1_002_000);
        let mut msg = DbQuery::new(DbSystem::Redis, 3_000);
        msg.kind = DbKind::Message;
        msg.operation = Some("MESSAGE".into());
        msg.query = Some("news".into());
        msg.response = Some("hello".into());
        msg.status = Some(DbStatus::Ok);
        [ok, err, msg]
            .into_iter()
            .map(|q| Item::Db(Box::new(q)))
            .collect()
    }

    /// Database records: one line each (rows, error with its code, a
    /// pushed message), the query sanitized by default, terminal escapes
    /// escaped; JSON objects of type db.
    #[test]
    fn db_records() {
        let text = output(Format::Text, 0, &db_items());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].ends_with(" curl[42] example.com postgresql SELECT 1 row 0.31ms select ?"),
            "{text}"
        );
        assert!(
            lines[1].ends_with(
                " curl[42] mysql SELECT error 1146 Table 'd.nope' doesn't exist\\x1b[2J 1.00ms \
                 SELECT * FROM nope"
            ),
            "{text}"
        );
        assert!(
            lines[2].ends_with(" curl[42] example.com redis MESSAGE news hello"),
            "{text}"
        );
        let json = output(Format::Json, 0, &db_items());
        let v: Vec<serde_json::Value> = json
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(v[0]["type"], "db");
        assert_eq!(v[0]["system"], "postgresql");
        assert_eq!(v[0]["operation"], "SELECT");
        assert_eq!(v[0]["query"], "select ?");
        assert_eq!(v[0]["status"], "ok");
        assert_eq!(v[0]["rows"], 1);
        assert_eq!(v[0]["latency_ms"], 0.31);
        assert_eq!(v[1]["error_code"], "1146");
        assert_eq!(v[1]["sqlstate"], "42S02");
        assert_eq!(v[1]["status"], "error");
        assert_eq!(v[2]["kind"], "message");
        assert_eq!(v[2]["response"], "hello");
        assert_eq!(v[2]["latency_ms"], serde_json::Value::Null);
    }

    /// `-v`: the whole query and Redis's reply under the line (the reply
    /// like a body: text, or hex when it holds control bytes).
    #[test]
    fn db_records_verbose() {
        use crate::decode::db::DbSystem;
        let mut q = DbQuery::new(DbSystem::Redis, 1_000);
        q.operation = Some("GET".into());
        q.query = Some("GET k".into());
        q.response = Some("va\x1blue".into());
        q.answer(DbStatus::Ok, 2_000);
        let text = output(Format::Text, 1, &[Item::Db(Box::new(q))]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with(" redis GET ok 0.00ms GET k"), "{text}");
        assert_eq!(
            lines[1..],
            // a reply with control bytes is shown as hex, like a body
            [
                "  > GET k",
                "  < [reply 6 bytes]",
                "    00000000  76 61 1b 6c 75 65                                 va.lue"
            ]
        );
    }

    fn output(format: Format, detail: u8, items: &[Item]) -> String {
        let buf = SharedBuf::default();
        let mut w = AccessWriter {
            out: Box::new(buf.clone()),
            format,
            detail,
            clock: fixed_clock(),
        };
        let meta = ConnMeta {
            facts: Default::default(),
            pid: 42,
            comm: "curl".into(),
            conn: 0xabc,
            sni: Some("example.com".into()),
        };
        let no_sni = ConnMeta {
            facts: Default::default(),
            sni: None,
            ..meta.clone()
        };
        for (i, item) in items.iter().enumerate() {
            // Every other item on a connection whose server name is unknown.
            let m = if i % 2 == 0 { &meta } else { &no_sni };
            w.write(m, item).unwrap();
        }
        w.flush().unwrap();
        buf.text()
    }

    fn message(ts: u64, headers: &[(&str, &str)], body: &[u8], body_len: u64) -> HttpMessage {
        HttpMessage {
            ts_first_ns: ts,
            ts_last_ns: ts + 2_500_000,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: body.to_vec(),
            body_len,
            trailers: Vec::new(),
            complete: true,
            headers_truncated: false,
        }
    }

    /// Exchanges of every shape: complete HTTP/1.1, gRPC over HTTP/2 with a
    /// cut binary body and trailers, a request without response, a
    /// response whose request was not seen.
    fn sample_exchanges() -> Vec<Item> {
        let full = Exchange {
            protocol: Protocol::Http1,
            stream_id: None,
            method: Some("POST".into()),
            path: Some("/v1/items?id=7".into()),
            authority: Some("api.example.com".into()),
            status: Some(201),
            request: Some(message(
                1_000_000,
                &[("Host", "api.example.com"), ("Content-Length", "5")],
                b"hello",
                5,
            )),
            response: Some(message(
                3_000_000,
                &[("Content-Length", "20000")],
                b"{\"id\":7}",
                20_000,
            )),
            grpc: None,
        };
        let mut grpc_resp = message(
            9_000_000,
            &[("content-type", "application/grpc")],
            &[0, 0, 0, 0, 2, 8, 1, 0xff],
            20 * 1024 * 1024,
        );
        grpc_resp.trailers = vec![("grpc-status".into(), b"0".to_vec())];
        grpc_resp.complete = false;
        grpc_resp.headers_truncated = true;
        let grpc = Exchange {
            protocol: Protocol::Http2,
            stream_id: Some(3),
            method: Some("POST".into()),
            path: Some("/helloworld.Greeter/SayHello".into()),
            authority: Some("grpc.example.com".into()),
            status: Some(200),
            request: Some(message(8_000_000, &[("te", "trailers")], &[], 0)),
            response: Some(grpc_resp),
            grpc: Some(Grpc {
                service: "helloworld.Greeter".into(),
                method: "SayHello".into(),
                status: Some(0),
                message: Some("ok".into()),
                request_messages: 1,
                response_messages: 2,
            }),
        };
        let unanswered = Exchange {
            protocol: Protocol::Http1,
            stream_id: None,
            method: Some("GET".into()),
            path: Some("/".into()),
            authority: None,
            status: None,
            request: Some(message(10_000_000, &[], &[], 0)),
            response: None,
            grpc: Some(Grpc::default()),
        };
        let orphan = Exchange {
            protocol: Protocol::Http2,
            stream_id: Some(5),
            method: None,
            path: None,
            authority: None,
            status: Some(404),
            request: None,
            response: Some(message(11_000_000, &[], b"nope", 4)),
            grpc: None,
        };
        [full, grpc, unanswered, orphan]
            .into_iter()
            .map(|e| Item::Exchange(Box::new(e)))
            .collect()
    }

    /// Raw chunks (text, binary, long text) and a notice.
    fn sample_raw() -> Vec<Item> {
        vec![
            Item::Raw {
                outgoing: true,
                ts_ns: 12_000_000,
                data: b"hello\nworld".to_vec(),
            },
            Item::Raw {
                outgoing: false,
                ts_ns: 13_000_000,
                data: (0..20u8).chain([0xff]).collect(),
            },
            Item::Notice {
                ts_ns: 14_000_000,
                text: "bytes lost: showing raw".into(),
            },
            Item::Raw {
                outgoing: false,
                ts_ns: 15_000_000,
                data: vec![b'r'; 1030],
            },
        ]
    }

    /// The lines, each with its newline.
    fn lines(ls: &[&str]) -> String {
        ls.join("\n") + "\n"
    }

    /// One line per exchange: who, what, status, latency, sizes, gRPC, incomplete.
    #[test]
    fn console_access_log() {
        let expected = lines(&[
            "2023-11-14T22:13:20.001000Z curl[42] example.com HTTP/1.1 POST /v1/items?id=7 201 4.50ms req=5B resp=19KiB",
            "2023-11-14T22:13:20.008000Z curl[42] grpc.example.com HTTP/2 POST /helloworld.Greeter/SayHello 200 3.50ms req=0B resp=20MiB grpc=helloworld.Greeter/SayHello grpc-status=0 incomplete",
            "2023-11-14T22:13:20.010000Z curl[42] example.com HTTP/1.1 GET / - - req=0B resp=- grpc=/ grpc-status=- incomplete",
            "2023-11-14T22:13:20.011000Z curl[42] - HTTP/2 - - 404 - req=- resp=4B",
        ]);
        assert_eq!(output(Format::Text, 0, &sample_exchanges()), expected);
    }

    /// `-v`: request (`>`) and response (`<`) headers and trailers.
    #[test]
    fn console_headers() {
        let expected = lines(&[
            "2023-11-14T22:13:20.001000Z curl[42] example.com HTTP/1.1 POST /v1/items?id=7 201 4.50ms req=5B resp=19KiB",
            "  > Host: api.example.com",
            "  > Content-Length: 5",
            "  < Content-Length: 20000",
            "2023-11-14T22:13:20.008000Z curl[42] grpc.example.com HTTP/2 POST /helloworld.Greeter/SayHello 200 3.50ms req=0B resp=20MiB grpc=helloworld.Greeter/SayHello grpc-status=0 incomplete",
            "  > te: trailers",
            "  < content-type: application/grpc",
            "  < grpc-status: 0 (trailer)",
            "2023-11-14T22:13:20.010000Z curl[42] example.com HTTP/1.1 GET / - - req=0B resp=- grpc=/ grpc-status=- incomplete",
            "2023-11-14T22:13:20.011000Z curl[42] - HTTP/2 - - 404 - req=- resp=4B",
        ]);
        assert_eq!(output(Format::Text, 1, &sample_exchanges()), expected);
    }

    /// `-vv`: bodies too, text as is and binary as hex, indented.
    #[test]
    fn console_bodies() {
        let expected = lines(&[
            "2023-11-14T22:13:20.001000Z curl[42] example.com HTTP/1.1 POST /v1/items?id=7 201 4.50ms req=5B resp=19KiB",
            "  > Host: api.example.com",
            "  > Content-Length: 5",
            "  > [body 5 bytes]",
            "    hello",
            "  < Content-Length: 20000",
            "  < [body 20000 bytes]",
            r#"    {"id":7}"#,
            "2023-11-14T22:13:20.008000Z curl[42] grpc.example.com HTTP/2 POST /helloworld.Greeter/SayHello 200 3.50ms req=0B resp=20MiB grpc=helloworld.Greeter/SayHello grpc-status=0 incomplete",
            "  > te: trailers",
            "  < content-type: application/grpc",
            "  < [body 20971520 bytes]",
            "    00000000  00 00 00 00 02 08 01 ff                           ........",
            "  < grpc-status: 0 (trailer)",
            "2023-11-14T22:13:20.010000Z curl[42] example.com HTTP/1.1 GET / - - req=0B resp=- grpc=/ grpc-status=- incomplete",
            "2023-11-14T22:13:20.011000Z curl[42] - HTTP/2 - - 404 - req=- resp=4B",
            "  < [body 4 bytes]",
            "    nope",
        ]);
        assert_eq!(output(Format::Text, 2, &sample_exchanges()), expected);
    }

    /// Raw chunks are cut at `CONSOLE_RAW` bytes without `-vv`.
    #[test]
    fn console_raw_and_notices() {
        let expected = lines(&[
            "2023-11-14T22:13:20.012000Z curl[42] example.com raw write 11B",
            "hello",
            "world",
            "2023-11-14T22:13:20.013000Z curl[42] - raw read 21B",
            "00000000  00 01 02 03 04 05 06 07  08 09 0a 0b 0c 0d 0e 0f  ................",
            "00000010  10 11 12 13 ff                                    .....",
            "2023-11-14T22:13:20.014000Z curl[42] example.com note: bytes lost: showing raw",
            "2023-11-14T22:13:20.015000Z curl[42] - raw read 1030B",
            &"r".repeat(1024),
            "[... 6 more bytes not shown]",
        ]);
        assert_eq!(output(Format::Text, 0, &sample_raw()), expected);
    }

    /// `-vv` shows raw chunks whole.
    #[test]
    fn console_raw_uncut() {
        let expected = lines(&[
            "2023-11-14T22:13:20.012000Z curl[42] example.com raw write 11B",
            "hello",
            "world",
            "2023-11-14T22:13:20.013000Z curl[42] - raw read 21B",
            "00000000  00 01 02 03 04 05 06 07  08 09 0a 0b 0c 0d 0e 0f  ................",
            "00000010  10 11 12 13 ff                                    .....",
            "2023-11-14T22:13:20.014000Z curl[42] example.com note: bytes lost: showing raw",
            "2023-11-14T22:13:20.015000Z curl[42] - raw read 1030B",
            &"r".repeat(1030),
        ]);
        assert_eq!(output(Format::Text, 2, &sample_raw()), expected);
    }

    /// One JSON object per exchange, whatever the detail.
    #[test]
    fn json_exchanges() {
        let expected = lines(&[
            r#"{"type":"http","time":"2023-11-14T22:13:20.001000Z","ts_ns":1000000,"pid":42,"comm":"curl","conn":"0xabc","sni":"example.com","protocol":"HTTP/1.1","method":"POST","path":"/v1/items?id=7","authority":"api.example.com","status":201,"latency_ms":4.5,"request":{"time":"2023-11-14T22:13:20.001000Z","ts_ns":1000000,"headers":[["Host","api.example.com"],["Content-Length","5"]],"body_len":5,"body_encoding":"utf8","body":"hello","body_truncated":false,"headers_truncated":false,"complete":true},"response":{"time":"2023-11-14T22:13:20.003000Z","ts_ns":3000000,"headers":[["Content-Length","20000"]],"body_len":20000,"body_encoding":"utf8","body":"{\"id\":7}","body_truncated":true,"headers_truncated":false,"complete":true}}"#,
            r#"{"type":"http","time":"2023-11-14T22:13:20.008000Z","ts_ns":8000000,"pid":42,"comm":"curl","conn":"0xabc","sni":null,"protocol":"HTTP/2","stream_id":3,"method":"POST","path":"/helloworld.Greeter/SayHello","authority":"grpc.example.com","status":200,"latency_ms":3.5,"request":{"time":"2023-11-14T22:13:20.008000Z","ts_ns":8000000,"headers":[["te","trailers"]],"body_len":0,"body_encoding":"utf8","body":"","body_truncated":false,"headers_truncated":false,"complete":true},"response":{"time":"2023-11-14T22:13:20.009000Z","ts_ns":9000000,"headers":[["content-type","application/grpc"]],"body_len":20971520,"body_encoding":"base64","body":"AAAAAAIIAf8=","body_truncated":true,"headers_truncated":true,"trailers":[["grpc-status","0"]],"complete":false},"grpc":{"service":"helloworld.Greeter","method":"SayHello","status":0,"message":"ok","request_messages":1,"response_messages":2}}"#,
            r#"{"type":"http","time":"2023-11-14T22:13:20.010000Z","ts_ns":10000000,"pid":42,"comm":"curl","conn":"0xabc","sni":"example.com","protocol":"HTTP/1.1","method":"GET","path":"/","authority":null,"status":null,"latency_ms":null,"request":{"time":"2023-11-14T22:13:20.010000Z","ts_ns":10000000,"headers":[],"body_len":0,"body_encoding":"utf8","body":"","body_truncated":false,"headers_truncated":false,"complete":true},"response":null,"grpc":{"service":"","method":"","status":null,"message":null,"request_messages":0,"response_messages":0}}"#,
            r#"{"type":"http","time":"2023-11-14T22:13:20.011000Z","ts_ns":11000000,"pid":42,"comm":"curl","conn":"0xabc","sni":null,"protocol":"HTTP/2","stream_id":5,"method":null,"path":null,"authority":null,"status":404,"latency_ms":null,"request":null,"response":{"time":"2023-11-14T22:13:20.011000Z","ts_ns":11000000,"headers":[],"body_len":4,"body_encoding":"utf8","body":"nope","body_truncated":false,"headers_truncated":false,"complete":true}}"#,
        ]);
        assert_eq!(output(Format::Json, 2, &sample_exchanges()), expected);
    }

    /// Raw chunks (never cut) and notices as JSON objects.
    #[test]
    fn json_raw_and_notices() {
        let expected = lines(&[
            r#"{"type":"raw","time":"2023-11-14T22:13:20.012000Z","ts_ns":12000000,"pid":42,"comm":"curl","conn":"0xabc","sni":"example.com","direction":"write","len":11,"encoding":"utf8","data":"hello\nworld"}"#,
            r#"{"type":"raw","time":"2023-11-14T22:13:20.013000Z","ts_ns":13000000,"pid":42,"comm":"curl","conn":"0xabc","sni":null,"direction":"read","len":21,"encoding":"base64","data":"AAECAwQFBgcICQoLDA0ODxAREhP/"}"#,
            r#"{"type":"notice","time":"2023-11-14T22:13:20.014000Z","ts_ns":14000000,"pid":42,"comm":"curl","conn":"0xabc","sni":"example.com","text":"bytes lost: showing raw"}"#,
            &(r#"{"type":"raw","time":"2023-11-14T22:13:20.015000Z","ts_ns":15000000,"pid":42,"comm":"curl","conn":"0xabc","sni":null,"direction":"read","len":1030,"encoding":"utf8","data":""#.to_owned() + &"r".repeat(1030) + r#""}"#),
        ]);
        assert_eq!(output(Format::Json, 0, &sample_raw()), expected);
    }

    /// Everything a hostile process controls reaches the console escaped:
    /// its name, the server name, method, path, gRPC names, header names
    /// and values (a raw 0x9b byte as `\x9b`, U+009B as `\u{9b}`), bodies
    /// and raw chunks (a bare `\r`), notices.
    #[test]
    fn console_escapes_control_characters() {
        let mut req = message(1_000_000, &[], b"a=1\rEVIL", 8);
        req.headers = vec![
            (
                "x-\x1bevil".into(),
                b"a\x07b\xc2\x9b2J \x9b\x1b]0;t\x07".to_vec(),
            ),
            ("user-agent".into(), b"ok/1.0".to_vec()),
        ];
        let mut resp = message(2_000_000, &[], b"\xe2\x80\xaeflipped\r\n", 11);
        resp.trailers = vec![("grpc-message".into(), b"bad\r\nnews".to_vec())];
        let e = Exchange {
            protocol: Protocol::Http2,
            stream_id: Some(1),
            method: Some("GET\x1b[8m".into()),
            path: Some("/\x1b[2J\u{202e}x".into()),
            authority: Some("a\tb".into()),
            status: Some(200),
            request: Some(req),
            response: Some(resp),
            grpc: Some(Grpc {
                service: "svc\x07".into(),
                method: "M\u{9b}".into(),
                status: Some(0),
                ..Grpc::default()
            }),
        };
        let items = [
            Item::Exchange(Box::new(e)),
            Item::Notice {
                ts_ns: 3_000_000,
                text: "bad header \x1b[31m".into(),
            },
            Item::Raw {
                outgoing: true,
                ts_ns: 4_000_000,
                data: b"line\rover\n".to_vec(),
            },
        ];
        let buf = SharedBuf::default();
        let mut w = AccessWriter {
            out: Box::new(buf.clone()),
            format: Format::Text,
            detail: 2,
            clock: fixed_clock(),
        };
        let meta = ConnMeta {
            facts: Default::default(),
            pid: 7,
            comm: "\x1b[31mcurl".into(),
            conn: 1,
            sni: Some("api\r\n2026 forged".into()),
        };
        let no_sni = ConnMeta {
            facts: Default::default(),
            sni: None,
            ..meta.clone()
        };
        w.write(&no_sni, &items[0]).unwrap();
        w.write(&meta, &items[1]).unwrap();
        w.write(&meta, &items[2]).unwrap();
        let expected = lines(&[
            r"2023-11-14T22:13:20.001000Z \x1b[31mcurl[7] a\tb HTTP/2 GET\x1b[8m /\x1b[2J\u{202e}x 200 3.50ms req=8B resp=11B grpc=svc\x07/M\u{9b} grpc-status=0",
            r"  > x-\x1bevil: a\x07b\u{9b}2J \x9b\x1b]0;t\x07",
            "  > user-agent: ok/1.0",
            "  > [body 8 bytes]",
            r"    a=1\rEVIL",
            "  < [body 11 bytes]",
            r"    \u{202e}flipped",
            r"  < grpc-message: bad\r\nnews (trailer)",
            r"2023-11-14T22:13:20.003000Z \x1b[31mcurl[7] api\r\n2026 forged note: bad header \x1b[31m",
            r"2023-11-14T22:13:20.004000Z \x1b[31mcurl[7] api\r\n2026 forged raw write 10B",
            r"line\rover",
        ]);
        assert_eq!(buf.text(), expected);
    }

    /// A UTF-8 body cut inside a character stays text, cut before it.
    #[test]
    fn console_body_is_cut_at_a_character() {
        // 2-byte characters after one ASCII byte: the limit falls inside one
        let body = "x".to_owned() + &"é".repeat(CONSOLE_BODY / 2);
        let e = Exchange {
            protocol: Protocol::Http1,
            stream_id: None,
            method: Some("GET".into()),
            path: Some("/".into()),
            authority: None,
            status: Some(200),
            request: None,
            response: Some(message(2_000, &[], body.as_bytes(), body.len() as u64)),
            grpc: None,
        };
        let expected = lines(&[
            "2023-11-14T22:13:20.000002Z curl[42] example.com HTTP/1.1 GET / 200 - req=- resp=4097B",
            "  < [body 4097 bytes]",
            &("    x".to_owned() + &"é".repeat(CONSOLE_BODY / 2 - 1)),
            "    [... 2 more bytes not shown]",
        ]);
        assert_eq!(
            output(Format::Text, 2, &[Item::Exchange(Box::new(e))]),
            expected
        );
    }

    /// `-vv` bodies are cut at `CONSOLE_BODY` bytes.
    #[test]
    fn console_body_is_cut() {
        let e = Exchange {
            protocol: Protocol::Http1,
            stream_id: None,
            method: Some("GET".into()),
            path: Some("/big".into()),
            authority: None,
            status: Some(200),
            request: Some(message(1_000, &[], &[], 0)),
            response: Some(message(2_000, &[], &[b'b'; CONSOLE_BODY + 4], 5000)),
            grpc: None,
        };
        let expected = lines(&[
            "2023-11-14T22:13:20.000001Z curl[42] example.com HTTP/1.1 GET /big 200 2.50ms req=0B resp=5000B",
            "  < [body 5000 bytes]",
            &("    ".to_owned() + &"b".repeat(CONSOLE_BODY)),
            "    [... 4 more bytes not shown]",
        ]);
        assert_eq!(
            output(Format::Text, 2, &[Item::Exchange(Box::new(e))]),
            expected
        );
    }
}
