//! Output: what people and programs read.
//!
//! The output thread ([`spawn`]) hands every [`Record`] to a [`Pipeline`],
//! which feeds each configured output:
//!
//! - by default, each connection is decoded (`crate::decode`) and written
//!   by [`access::AccessWriter`]: on the console one access-log line per
//!   HTTP exchange (`-v` adds headers, `-vv` bodies), or one JSON object per
//!   exchange; streams that are not HTTP come out as raw chunks, decoding
//!   problems as notices;
//! - `--raw` replaces that with [`Writer`]: each TLS call's plaintext as
//!   captured, plus the SNI and close records, as text or JSON;
//! - `--pcap` also writes the streams as TCP packets to a pcapng file
//!   ([`pcap`]).
//!
//! Files are created 0600: captured plaintext is sensitive.

pub mod access;
mod outfile;
pub mod pcap;

use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use serde::Serialize;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use crate::abi::Direction;
use crate::decode::conn::{ConnDecoder, Decoded, Item};
use crate::decode::db::QueryText;
use crate::decode::limits::{CONN_OVERHEAD, IDLE_TIMEOUT_NS, TOTAL_MEMORY, TOTAL_MEMORY_LOW};
use crate::decode::raw::RawRedactor;
use crate::decode::Redact;
use crate::escape;
pub use crate::record::{mono_now, CallRecord, Clock, ConnMeta, Record};
use crate::record::{ConnFacts, JsonFacts, QUEUED_BYTES};
use access::AccessWriter;
use pcap::PcapWriter;

/// How records are written (`-o`). The variants' doc comments are the
/// help text of `--output`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Lines for people: an access-log line per HTTP exchange (-v adds
    /// headers, -vv bodies), other streams raw; with --raw, a line per TLS
    /// call followed by its data (text as is, binary as hex), per server name
    /// and per close.
    Text,
    /// One JSON object per line: per HTTP exchange, raw chunk or notice; with
    /// --raw, per TLS call, server name and close.
    Json,
}

/// Opens an output file, readable and writable by its owner only: a new
/// file (mode 0600), or an existing regular file of root's with one link
/// (truncated, made 0600). A symlink, FIFO, device, directory, another
/// user's file or a hard link is refused with the reason (see `outfile`).
pub fn create_private(path: &Path) -> Result<std::fs::File> {
    outfile::create_private(path)
}

/// A coverage record as one JSON line: `{"type": "coverage", "time": ...,
/// "pid", "comm", "file", "stack", "captured", "reason"}`.
pub fn coverage_json(
    out: &mut dyn Write,
    clock: &Clock,
    c: &crate::record::Coverage,
) -> io::Result<()> {
    #[derive(Serialize)]
    struct Line<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        time: String,
        #[serde(flatten)]
        c: &'a crate::record::Coverage,
    }
    json_line(
        out,
        &Line {
            kind: "coverage",
            time: clock.rfc3339(c.ts_ns),
            c,
        },
    )
}

/// A coverage record as a console line (names escaped for the terminal).
pub fn coverage_text(
    out: &mut dyn Write,
    clock: &Clock,
    c: &crate::record::Coverage,
) -> io::Result<()> {
    writeln!(
        out,
        "{} {}[{}] coverage {} {}: {} ({})",
        clock.rfc3339(c.ts_ns),
        escape::terminal(&c.comm),
        c.pid,
        c.stack,
        escape::terminal(&c.file),
        if c.captured {
            "captured"
        } else {
            "not captured"
        },
        escape::terminal(&c.reason)
    )
}

/// `--raw`: writes every record as captured (each TLS call with its bytes,
/// each server name, each close) in one format, without decoding.
pub struct Writer {
    out: Box<dyn Write + Send>,
    format: Format,
    clock: Clock,
}

/// The fields every JSON record starts with.
#[derive(Serialize)]
pub struct JsonHead<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    pub ts_ns: u64,
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    pub comm: &'a str,
    pub conn: String,
    /// What is known of the connection (container, endpoints).
    #[serde(flatten)]
    pub facts: Option<JsonFacts<'a>>,
}

impl<'a> JsonHead<'a> {
    pub fn new(
        kind: &'static str,
        clock: &Clock,
        ts_ns: u64,
        pid: u32,
        tid: Option<u32>,
        comm: &'a str,
        conn: u64,
    ) -> Self {
        JsonHead {
            kind,
            time: clock.rfc3339(ts_ns),
            ts_ns,
            pid,
            tid,
            comm,
            conn: format!("{conn:#x}"),
            facts: None,
        }
    }

    /// The same, with what is known of its connection.
    pub fn with_facts(mut self, f: &'a ConnFacts) -> Self {
        self.facts = Some(f.json());
        self
    }
}

/// The head of a raw record: the common head and the descriptor.
#[derive(Serialize)]
struct RawHead<'a> {
    #[serde(flatten)]
    head: JsonHead<'a>,
    /// The process's descriptor of the connection, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    fd: Option<i32>,
}

#[derive(Serialize)]
struct JsonCall<'a> {
    #[serde(flatten)]
    head: RawHead<'a>,
    direction: &'static str,
    sni: Option<&'a str>,
    len: u32,
    captured: usize,
    truncated: bool,
    lost_bytes: u32,
    encoding: &'static str,
    data: String,
}

impl<'a> JsonCall<'a> {
    /// A call's JSON object: its bytes as UTF-8 text, or else base64.
    fn new(head: RawHead<'a>, c: &'a CallRecord) -> Self {
        let (encoding, data) = encode(&c.data);
        JsonCall {
            head,
            direction: c.direction.as_str(),
            sni: c.sni.as_deref(),
            len: c.len,
            captured: c.data.len(),
            truncated: c.truncated,
            lost_bytes: c.lost_bytes,
            encoding,
            data,
        }
    }
}

#[derive(Serialize)]
struct JsonClose<'a> {
    #[serde(flatten)]
    head: RawHead<'a>,
    sni: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonSni<'a> {
    #[serde(flatten)]
    head: RawHead<'a>,
    sni: &'a str,
    pattern: Option<&'a str>,
}

impl Writer {
    pub fn new(out: Box<dyn Write + Send>, format: Format) -> Writer {
        Writer {
            out,
            format,
            clock: Clock::new(),
        }
    }

    /// Writes one record in the writer's format.
    pub fn write(&mut self, r: &Record) -> io::Result<()> {
        match self.format {
            Format::Json => self.write_json(r),
            Format::Text => self.write_text(r),
        }
    }

    /// One JSON object: the record's [`JsonHead`], then the fields of its
    /// kind (a call's data, a close's server name, an SNI and its pattern).
    fn write_json(&mut self, r: &Record) -> io::Result<()> {
        let head = self.json_head(r);
        match r {
            Record::Coverage(c) => coverage_json(&mut self.out, &self.clock, c),
            Record::Call(c) => json_line(&mut self.out, &JsonCall::new(head, c)),
            Record::Close { sni, .. } => json_line(
                &mut self.out,
                &JsonClose {
                    head,
                    sni: sni.as_deref(),
                },
            ),
            Record::Sni { name, pattern, .. } => json_line(
                &mut self.out,
                &JsonSni {
                    head,
                    sni: name,
                    pattern: pattern.as_deref(),
                },
            ),
        }
    }

    /// The head of a record's JSON object: its type (`data`, `close` or
    /// `sni`), time, process, thread, connection, what is known of the
    /// connection and its descriptor.
    fn json_head<'r>(&self, r: &'r Record) -> RawHead<'r> {
        let (kind, ts_ns, pid, tid, comm, conn) = match r {
            Record::Call(c) => ("data", c.ts_ns, c.pid, c.tid, &c.comm, c.conn),
            Record::Close {
                pid,
                tid,
                comm,
                conn,
                ts_ns,
                ..
            } => ("close", *ts_ns, *pid, *tid, comm, *conn),
            Record::Sni {
                pid,
                tid,
                comm,
                conn,
                ts_ns,
                ..
            } => ("sni", *ts_ns, *pid, *tid, comm, *conn),
            Record::Coverage(c) => ("coverage", c.ts_ns, c.pid, c.pid, &c.comm, 0),
        };
        let facts = r.facts();
        RawHead {
            head: JsonHead::new(kind, &self.clock, ts_ns, pid, Some(tid), comm, conn)
                .with_facts(facts),
            fd: facts.endpoints.as_deref().and_then(|e| e.fd),
        }
    }

    /// A `--- ` header line per record; a call's data follows its line.
    /// Names from the processes are escaped for the terminal
    /// ([`escape::terminal`]).
    fn write_text(&mut self, r: &Record) -> io::Result<()> {
        match r {
            Record::Call(c) => self.text_call(c),
            Record::Coverage(c) => coverage_text(&mut self.out, &self.clock, c),
            Record::Sni {
                pid,
                comm,
                conn,
                ts_ns,
                name,
                pattern,
                facts,
                ..
            } => writeln!(
                self.out,
                "--- {} {}[{}]{} SNI conn={:#x} sni={}{}",
                self.clock.rfc3339(*ts_ns),
                escape::terminal(comm),
                pid,
                facts.console_peer(),
                conn,
                escape::terminal(name),
                pattern
                    .as_ref()
                    .map(|p| format!(" (matches {})", escape::terminal(p)))
                    .unwrap_or_default()
            ),
            Record::Close {
                pid,
                comm,
                conn,
                ts_ns,
                sni,
                facts,
                ..
            } => writeln!(
                self.out,
                "--- {} {}[{}]{} CLOSE conn={:#x}{}",
                self.clock.rfc3339(*ts_ns),
                escape::terminal(comm),
                pid,
                facts.console_peer(),
                conn,
                sni_field(sni.as_deref())
            ),
        }
    }

    /// A call's header line (who, direction, connection, length, whether
    /// bytes are missing), then its data: text as is, binary as hex.
    fn text_call(&mut self, c: &CallRecord) -> io::Result<()> {
        let mut flags = String::new();
        if c.truncated {
            flags.push_str(" truncated");
        }
        if c.lost_bytes > 0 {
            flags.push_str(&format!(" lost={}", c.lost_bytes));
        }
        let ctr = c
            .facts
            .container
            .as_ref()
            .map_or(String::new(), |k| format!(" ctr={}", k.short()));
        writeln!(
            self.out,
            "--- {} {}[{}/{}]{ctr}{} {} conn={:#x}{} len={}{}",
            self.clock.rfc3339(c.ts_ns),
            escape::terminal(&c.comm),
            c.pid,
            c.tid,
            c.facts.console_peer(),
            c.direction.as_str().to_uppercase(),
            c.conn,
            sni_field(c.sni.as_deref()),
            c.len,
            flags
        )?;
        write_data(&mut self.out, &c.data)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Bytes an output file's writes are gathered into.
const FILE_BUFFER: usize = 256 << 10;

/// stdout, or a private file ([`create_private`]); its write errors name
/// it (`cannot write to stdout: ...`) and keep their kind.
pub fn destination(path: Option<&Path>) -> Result<Box<dyn Write + Send>> {
    Ok(match path {
        // Records are written in bursts and flushed after each: a big
        // buffer makes a burst one write(2), not one per 8 KiB (each pays
        // the filesystem's per-call work).
        Some(p) => Box::new(BufWriter::with_capacity(
            FILE_BUFFER,
            Named {
                inner: create_private(p)?,
                name: escape::terminal_path(p).into_owned(),
            },
        )),
        None => Box::new(BufWriter::new(Named {
            inner: io::stdout(),
            name: "stdout".into(),
        })),
    })
}

/// A writer whose errors say where it writes.
struct Named<W> {
    inner: W,
    name: String,
}

impl<W> Named<W> {
    fn named(&self, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("cannot write to {}: {e}", self.name))
    }
}

impl<W: Write> Write for Named<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.inner.write(b).map_err(|e| self.named(e))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().map_err(|e| self.named(e))
    }
}

/// What the output thread is asked to produce.
#[derive(Debug, Clone)]
pub struct Options {
    pub format: Format,
    /// Console detail: 0 access log; 1 adds headers; 2 adds bodies and
    /// shows raw chunks whole.
    pub detail: u8,
    /// Raw per-call records instead of decoded exchanges.
    pub raw: bool,
    pub write: Option<std::path::PathBuf>,
    pub pcap: Option<std::path::PathBuf>,
    pub redact: Redact,
    /// How database query text is shown (`--db-query-text`).
    pub db_query_text: QueryText,
}

struct ConnState {
    meta: ConnMeta,
    decoder: ConnDecoder,
    in_pcap: bool,
    /// `--raw`: masks the sensitive values of each call, per direction
    /// (read, write), across calls.
    masks: [RawRedactor; 2],
    /// `--raw`: a decoder run only to mask database passwords (PostgreSQL,
    /// MySQL, Redis) in the calls as captured; dropped once the connection
    /// is known to be something else.
    db_masker: Option<Box<ConnDecoder>>,
    /// Bytes of state counted for it (`CONN_OVERHEAD` + the decoder's).
    memory: usize,
    /// CLOCK_MONOTONIC ns of its last record.
    last_ns: u64,
    /// Its place in `Pipeline::lru`.
    seq: u64,
}

impl ConnState {
    /// Takes what a record knows of the connection: its container, its
    /// socket once known, and the role its server name told.
    fn learn(&mut self, f: &ConnFacts) {
        let m = &mut self.meta.facts;
        if f.container.is_some() {
            m.container = f.container.clone();
        }
        if f.endpoints.is_some() {
            m.endpoints = f.endpoints.clone();
        }
        if m.client.is_none() {
            m.client = f.client;
        }
    }
}

/// Records in, every configured output out.
///
/// Every connection's state is bounded by its decoder
/// (`limits::CONN_MEMORY`); all of them together by `total_memory`
/// (`limits::TOTAL_MEMORY`): past it, the least recently active are flushed
/// (with a notice) and forgotten until the total is under `total_low`.
/// Connections without data for `idle_ns` (`limits::IDLE_TIMEOUT_NS`) are
/// flushed and forgotten at the next sweep: some captures never see a
/// close.
pub struct Pipeline {
    raw: Option<Writer>,
    access: Option<AccessWriter>,
    pcap: Option<PcapWriter>,
    conns: HashMap<(u32, u64), ConnState>,
    redact: Redact,
    db_query_text: QueryText,
    clock: Clock,
    /// Connections by last activity (the order of their last record).
    lru: BTreeMap<u64, (u32, u64)>,
    next_seq: u64,
    /// Sum of the connections' `memory`.
    memory: usize,
    total_memory: usize,
    total_low: usize,
    idle_ns: u64,
    /// Connections evicted for the memory budget, and expired.
    evicted: u64,
    expired: u64,
    /// (evicted, expired) when last logged.
    logged: (u64, u64),
    /// OTLP and metrics (off unless configured).
    telemetry: crate::telemetry::TelemetrySink,
}

/// Why a connection is forgotten before its close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forget {
    Memory,
    Idle,
}

impl Pipeline {
    pub fn new(o: &Options) -> Result<Pipeline> {
        let out = destination(o.write.as_deref())?;
        let (raw, access) = if o.raw {
            (Some(Writer::new(out, o.format)), None)
        } else {
            (None, Some(AccessWriter::new(out, o.format, o.detail)))
        };
        let pcap = match &o.pcap {
            Some(p) => Some(
                PcapWriter::new(create_private(p)?)
                    .with_context(|| format!("writing pcapng to {}", p.display()))?,
            ),
            None => None,
        };
        Ok(Pipeline {
            raw,
            access,
            pcap,
            conns: HashMap::new(),
            redact: o.redact.clone(),
            db_query_text: o.db_query_text,
            clock: Clock::new(),
            lru: BTreeMap::new(),
            next_seq: 0,
            memory: 0,
            total_memory: TOTAL_MEMORY,
            total_low: TOTAL_MEMORY_LOW,
            idle_ns: IDLE_TIMEOUT_NS,
            evicted: 0,
            expired: 0,
            logged: (0, 0),
            telemetry: Default::default(),
        })
    }

    /// Hands every decoded exchange to `t` as well.
    pub fn with_telemetry(mut self, t: crate::telemetry::TelemetrySink) -> Pipeline {
        self.telemetry = t;
        self
    }

    /// Connections evicted for the memory budget, and expired, so far.
    pub fn stats(&self) -> (u64, u64) {
        (self.evicted, self.expired)
    }

    fn decoding(&self) -> bool {
        self.access.is_some() || self.pcap.is_some() || self.telemetry.is_on()
    }

    /// The connection's state (made on its first record), now the most
    /// recently active.
    fn conn(&mut self, pid: u32, comm: &str, conn: u64, ts_ns: u64) -> &mut ConnState {
        let redact = &self.redact;
        let db_query_text = self.db_query_text;
        let seq = self.next_seq;
        self.next_seq += 1;
        let st = self.conns.entry((pid, conn)).or_insert_with(|| {
            self.memory += CONN_OVERHEAD;
            ConnState {
                meta: ConnMeta {
                    facts: ConnFacts::default(),
                    pid,
                    comm: comm.to_string(),
                    conn,
                    sni: None,
                },
                decoder: ConnDecoder::new(redact.clone()).with_query_text(db_query_text),
                in_pcap: false,
                masks: [
                    RawRedactor::new(redact.clone()),
                    RawRedactor::new(redact.clone()),
                ],
                db_masker: Some(Box::new(ConnDecoder::new(Redact::none()))),
                memory: CONN_OVERHEAD,
                last_ns: ts_ns,
                seq,
            }
        });
        self.lru.remove(&st.seq);
        self.lru.insert(seq, (pid, conn));
        st.seq = seq;
        st.last_ns = st.last_ns.max(ts_ns);
        st
    }

    /// Counts what a connection holds now.
    fn account(&mut self, key: (u32, u64)) {
        if let Some(st) = self.conns.get_mut(&key) {
            let masker = st.db_masker.as_ref().map_or(0, |m| m.memory());
            let m = CONN_OVERHEAD + st.decoder.memory() + masker;
            self.memory = self.memory - st.memory + m;
            st.memory = m;
        }
    }

    /// `--raw`: the call with the values of sensitive header fields masked
    /// (see `RawRedactor`), as the connection's earlier calls leave off.
    fn masked<'r>(&mut self, c: &'r CallRecord) -> Cow<'r, CallRecord> {
        let Some(st) = self.conns.get_mut(&(c.pid, c.conn)) else {
            return Cow::Borrowed(c);
        };
        let mask = &mut st.masks[usize::from(c.direction == Direction::Write)];
        if c.lost_bytes > 0 {
            mask.gap();
        }
        let lost = u64::from(c.len).saturating_sub(c.data.len() as u64);
        let outgoing = c.direction == Direction::Write;
        if let Some(m) = &mut st.db_masker {
            match m.db_mask(outgoing, &c.data, c.ts_ns, lost) {
                Some(Some(data)) => return Cow::Owned(CallRecord { data, ..c.clone() }),
                Some(None) => {}
                None => st.db_masker = None,
            }
        }
        let data = mask.push(&c.data);
        let out = match data {
            Cow::Borrowed(_) => Cow::Borrowed(c),
            Cow::Owned(data) => Cow::Owned(CallRecord { data, ..c.clone() }),
        };
        if (c.len as usize) > c.data.len() {
            mask.gap();
        }
        out
    }

    pub fn handle(&mut self, r: &Record) -> Result<()> {
        match r {
            Record::Call(c) => {
                let key = (c.pid, c.conn);
                let st = self.conn(c.pid, &c.comm, c.conn, c.ts_ns);
                if c.sni.is_some() {
                    st.meta.sni = c.sni.clone();
                }
                st.learn(&c.facts);
                if self.raw.is_some() {
                    let masked;
                    let rec = match self.masked(c) {
                        Cow::Borrowed(_) => r,
                        Cow::Owned(m) => {
                            masked = Record::Call(m);
                            &masked
                        }
                    };
                    if let Some(w) = &mut self.raw {
                        w.write(rec)?;
                    }
                    self.account(key);
                }
                if self.decoding() {
                    let Some(st) = self.conns.get_mut(&key) else {
                        return Ok(());
                    };
                    let lost = (c.len as u64).saturating_sub(c.data.len() as u64);
                    let outgoing = c.direction == Direction::Write;
                    let d = st.decoder.push(outgoing, &c.data, c.ts_ns, lost);
                    self.emit(key, d)?;
                    self.account(key);
                }
                self.within_budget(c.ts_ns)?;
            }
            Record::Sni {
                pid,
                comm,
                conn,
                name,
                ts_ns,
                facts,
                ..
            } => {
                if let Some(w) = &mut self.raw {
                    w.write(r)?;
                }
                let st = self.conn(*pid, comm, *conn, *ts_ns);
                st.meta.sni = Some(name.clone());
                st.learn(facts);
                self.within_budget(*ts_ns)?;
            }
            Record::Close {
                pid, conn, ts_ns, ..
            } => {
                if let Some(w) = &mut self.raw {
                    w.write(r)?;
                }
                self.close((*pid, *conn), *ts_ns)?
            }
            Record::Coverage(c) => {
                if let Some(w) = &mut self.raw {
                    w.write(r)?;
                }
                if let Some(a) = &mut self.access {
                    a.coverage(c)?;
                }
                self.telemetry.coverage(c);
            }
        }
        Ok(())
    }

    fn close(&mut self, key: (u32, u64), ts_ns: u64) -> Result<()> {
        self.end(key, ts_ns, None)
    }

    /// Flushes a connection (what its decoder has open), after `notice`,
    /// and forgets it.
    fn end(&mut self, key: (u32, u64), ts_ns: u64, notice: Option<String>) -> Result<()> {
        let Some(st) = self.conns.get_mut(&key) else {
            return Ok(());
        };
        let mut d = st.decoder.finish(ts_ns);
        if let Some(text) = notice {
            d.items.insert(0, Item::Notice { ts_ns, text });
        }
        if self.decoding() {
            self.emit(key, d)?;
        }
        if let Some(st) = self.conns.remove(&key) {
            self.lru.remove(&st.seq);
            self.memory -= st.memory;
            if let (Some(p), true) = (&mut self.pcap, st.in_pcap) {
                p.close(pcap_key(key), self.clock.wall(ts_ns))?;
            }
        }
        Ok(())
    }

    /// Flushes and forgets a connection before its close, saying why.
    fn forget(&mut self, key: (u32, u64), ts_ns: u64, why: Forget) -> Result<()> {
        let text = match why {
            Forget::Memory => {
                self.evicted += 1;
                format!(
                    "the decoding state of all connections reached {} bytes (limit {}): this \
                     connection, the least recently active, is flushed and forgotten ({} \
                     evicted so far); later data starts afresh",
                    self.memory,
                    self.total_memory,
                    plural(self.evicted, "connection")
                )
            }
            Forget::Idle => {
                self.expired += 1;
                format!(
                    "no data for {} s (the close was not seen): the connection is flushed and \
                     forgotten ({} expired so far); later data starts afresh",
                    self.idle_ns / 1_000_000_000,
                    plural(self.expired, "connection")
                )
            }
        };
        if self.evicted + self.expired == 1 {
            log::warn!("output: {text}");
        }
        self.end(key, ts_ns, Some(text))
    }

    /// Past the total budget, evicts the least recently active connections
    /// (never the last one) until under `total_low`.
    fn within_budget(&mut self, ts_ns: u64) -> Result<()> {
        if self.memory <= self.total_memory {
            return Ok(());
        }
        while self.memory > self.total_low && self.conns.len() > 1 {
            let Some((_, &key)) = self.lru.iter().next() else {
                break;
            };
            self.forget(key, ts_ns, Forget::Memory)?;
        }
        Ok(())
    }

    /// Logs the evictions and expiries since the last time.
    fn report(&mut self) {
        if self.logged != (self.evicted, self.expired) {
            self.logged = (self.evicted, self.expired);
            log::warn!(
                "output: {} evicted for the decoding memory budget ({} bytes), {} expired \
                 after {} s without data, since the start",
                plural(self.evicted, "connection"),
                self.total_memory,
                plural(self.expired, "connection"),
                self.idle_ns / 1_000_000_000
            );
        }
    }

    fn emit(&mut self, key: (u32, u64), d: Decoded) -> Result<()> {
        let Some(st) = self.conns.get_mut(&key) else {
            return Ok(());
        };
        if let Some(c) = st.decoder.process_is_client() {
            st.meta.facts.client = Some(c);
        }
        if let Some(a) = &mut self.access {
            for item in &d.items {
                a.write(&st.meta, item)?;
            }
        }
        if self.telemetry.is_on() {
            for item in &d.items {
                match item {
                    Item::Exchange(e) => self.telemetry.exchange(&st.meta, e, &self.clock),
                    Item::Db(q) => self.telemetry.db(&st.meta, q, &self.clock),
                    _ => {}
                }
            }
        }
        if let Some(p) = &mut self.pcap {
            for s in &d.segments {
                let when = self.clock.wall(s.ts_ns);
                if !st.in_pcap {
                    let (client, server) = pcap_endpoints(&st.meta.facts, key);
                    // tshark prints packet comments: escaped like the console.
                    let ctr = st
                        .meta
                        .facts
                        .container
                        .as_ref()
                        .map_or(String::new(), |c| format!(" container={}", c.id));
                    let comment = format!(
                        "{}[{}] sni={}{ctr}",
                        escape::terminal(&st.meta.comm),
                        st.meta.pid,
                        escape::terminal(st.meta.sni.as_deref().unwrap_or("-"))
                    );
                    p.open(pcap_key(key), client, server, when, comment)?;
                    st.in_pcap = true;
                }
                p.data(pcap_key(key), s.from_client, when, &s.data, s.gap_before)?;
            }
        }
        Ok(())
    }

    /// Ends the connections of processes that have exited, and those idle
    /// for longer than the idle timeout.
    pub fn sweep(&mut self) -> Result<()> {
        let dead: Vec<(u32, u64)> = self
            .conns
            .keys()
            .filter(|(pid, _)| !Path::new(&format!("/proc/{pid}")).exists())
            .copied()
            .collect();
        for key in dead {
            self.close(key, mono_now())?;
        }
        self.sweep_at(mono_now())
    }

    /// Expires the connections without data since `now_ns - idle_ns`.
    pub fn sweep_at(&mut self, now_ns: u64) -> Result<()> {
        let mut idle: Vec<(u64, (u32, u64))> = self
            .conns
            .iter()
            .filter(|(_, st)| now_ns.saturating_sub(st.last_ns) > self.idle_ns)
            .map(|(k, st)| (st.seq, *k))
            .collect();
        idle.sort_unstable();
        for (_, key) in idle {
            self.forget(key, now_ns, Forget::Idle)?;
        }
        self.report();
        Ok(())
    }

    /// Ends every connection (the agent stops).
    pub fn finish(&mut self) -> Result<()> {
        let keys: Vec<_> = self.conns.keys().copied().collect();
        for key in keys {
            self.close(key, mono_now())?;
        }
        self.report();
        self.flush()
    }

    pub fn flush(&mut self) -> Result<()> {
        if let Some(w) = &mut self.raw {
            w.flush()?;
        }
        if let Some(a) = &mut self.access {
            a.flush()?;
        }
        if let Some(p) = &mut self.pcap {
            p.flush()?;
        }
        Ok(())
    }
}

/// Why the output thread stopped before it was told to (see [`stopped`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// The reader of stdout went away (`plainsight | head -1`): nothing
    /// more can be shown; the agent ends as on SIGINT, with status 0.
    ReaderGone,
    /// An output could not be written (a full disk, an I/O error) or the
    /// thread failed: what, where and why. The agent ends with an error.
    Failed(String),
}

impl Stopped {
    /// What an output error means: a closed pipe is the reader's doing,
    /// anything else a failure.
    pub fn of(e: &anyhow::Error) -> Stopped {
        let broken_pipe = e
            .chain()
            .filter_map(|c| c.downcast_ref::<io::Error>())
            .any(|io| io.kind() == io::ErrorKind::BrokenPipe);
        if broken_pipe {
            Stopped::ReaderGone
        } else {
            Stopped::Failed(format!("{e:#}"))
        }
    }
}

/// Set once by the output thread when it stops on its own.
static STOPPED: std::sync::Mutex<Option<Stopped>> = std::sync::Mutex::new(None);
static HAS_STOPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the output thread has stopped on its own (cheap: for the event
/// loop to poll on every turn, and end when it has).
pub fn has_stopped() -> bool {
    HAS_STOPPED.load(std::sync::atomic::Ordering::Acquire)
}

/// Why the output thread stopped on its own, if it did.
pub fn stopped() -> Option<Stopped> {
    STOPPED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// For the agent's exit, after the output thread was joined: an error if
/// the output failed (its last flush included), `Ok` if it worked to the
/// end or its reader went away.
pub fn outcome() -> Result<()> {
    match stopped() {
        Some(Stopped::Failed(why)) => Err(anyhow::anyhow!("output failed: {why}")),
        _ => Ok(()),
    }
}

/// Records why the output thread stopped (the first reason wins) and says
/// so at once: a closed stdout at info level, a failure as an error.
fn report_stop(why: Stopped) {
    match &why {
        Stopped::ReaderGone => log::info!("output: stdout was closed by its reader: stopping"),
        Stopped::Failed(m) => log::error!("output stopped: {m}"),
    }
    let mut s = STOPPED.lock().unwrap_or_else(|e| e.into_inner());
    if s.is_none() {
        *s = Some(why);
    }
    HAS_STOPPED.store(true, std::sync::atomic::Ordering::Release);
}

/// The output thread's work: every record to the pipeline, a flush after
/// each burst, a sweep of idle connections every 5 s; the pipeline is
/// finished when every sender is gone. Stops at the first error.
fn output_loop(rx: crossbeam_channel::Receiver<Record>, mut p: Pipeline) -> Result<()> {
    use crossbeam_channel::RecvTimeoutError;
    use std::time::Instant;
    let mut last_sweep = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(r) => {
                let mut burst = std::iter::once(r).chain(rx.try_iter());
                burst.try_for_each(|r| {
                    let done = p.handle(&r);
                    QUEUED_BYTES.fetch_sub(r.queued_bytes(), std::sync::atomic::Ordering::Relaxed);
                    done
                })?;
                p.flush()?;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_sweep.elapsed() >= Duration::from_secs(5) {
            last_sweep = Instant::now();
            p.sweep().and_then(|()| p.flush())?;
        }
    }
    p.finish()
}

/// [`output_loop`], with any early end (an error, a panic) as a [`Stopped`].
fn guarded(rx: crossbeam_channel::Receiver<Record>, p: Pipeline) -> Result<(), Stopped> {
    let run = std::panic::AssertUnwindSafe(|| output_loop(rx, p));
    match std::panic::catch_unwind(run) {
        Ok(r) => r.map_err(|e| Stopped::of(&e)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Stopped::Failed(format!(
                "the output thread panicked: {}",
                escape::terminal(&what)
            )))
        }
    }
}

/// Starts the output thread ([`output_loop`]). It never stops silently:
/// if an output cannot be written, or the thread panics, it says so and
/// sets [`has_stopped`] / [`stopped`] for the event loop, which must end
/// the agent (the records that follow would be lost).
pub fn spawn(
    rx: crossbeam_channel::Receiver<Record>,
    p: Pipeline,
) -> Result<std::thread::JoinHandle<()>> {
    let run = move || {
        if let Err(why) = guarded(rx, p) {
            report_stop(why);
        }
    };
    std::thread::Builder::new()
        .name("output".into())
        .spawn(run)
        .context("spawning the output thread")
}

/// `n` and the noun, plural unless 1.
fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The TCP endpoints of a connection in the pcapng file: its real ones
/// when its socket is a known TCP one, else synthetic ones (fd00::/8).
fn pcap_endpoints(f: &ConnFacts, key: (u32, u64)) -> (pcap::Endpoint, pcap::Endpoint) {
    let tcp = f
        .endpoints
        .as_deref()
        .is_some_and(|e| e.transport == crate::record::Transport::Tcp);
    match f.client_server() {
        (Some(c), Some(s)) if tcp => (pcap::Endpoint::from(c), pcap::Endpoint::from(s)),
        _ => pcap::synthetic_endpoints(key.0, key.1),
    }
}

fn pcap_key((pid, conn): (u32, u64)) -> u64 {
    conn ^ ((pid as u64) << 32).rotate_left(7)
}

/// The encoding name and the bytes for JSON: `utf8` and the text when they
/// are valid UTF-8, else `base64` and their standard base64.
fn encode(data: &[u8]) -> (&'static str, String) {
    match std::str::from_utf8(data) {
        Ok(s) => ("utf8", s.to_string()),
        Err(_) => (
            "base64",
            base64::engine::general_purpose::STANDARD.encode(data),
        ),
    }
}

/// ` sni=NAME` when the server name is known (escaped for the terminal),
/// else nothing.
fn sni_field(sni: Option<&str>) -> String {
    sni.map(|s| format!(" sni={}", escape::terminal(s)))
        .unwrap_or_default()
}

/// One JSON object and its newline; strings carry DEL, C1 and bidi
/// characters as `\u` escapes too ([`escape::JsonSafe`]).
fn json_line(out: &mut dyn Write, value: &impl Serialize) -> io::Result<()> {
    // Serialized into a buffer of this thread's, then written at once: a
    // record is dozens of small pieces, each a dynamic call on `out`.
    thread_local! {
        static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    LINE.with(|line| {
        let mut buf = line.borrow_mut();
        buf.clear();
        let mut ser = serde_json::Serializer::with_formatter(&mut *buf, escape::JsonSafe);
        value.serialize(&mut ser)?;
        buf.push(b'\n');
        let r = out.write_all(&buf);
        // A huge record does not keep its buffer for ever.
        if buf.capacity() > 1 << 20 {
            *buf = Vec::new();
        }
        r
    })
}

fn is_text(data: &[u8]) -> bool {
    match std::str::from_utf8(data) {
        Ok(s) => s
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\r' | '\n' | '\t')),
        Err(_) => false,
    }
}

/// Text as is (with a final newline), but for a `\r` that does not end a
/// line and bidi controls, which are escaped ([`escape::text`]); anything
/// else (not UTF-8, other controls) as a hex dump.
pub fn write_data(out: &mut dyn Write, data: &[u8]) -> io::Result<()> {
    if is_text(data) {
        // is_text: valid UTF-8
        let s = std::str::from_utf8(data).unwrap_or_default();
        out.write_all(escape::text(s).as_bytes())?;
        if !data.ends_with(b"\n") {
            out.write_all(b"\n")?;
        }
        return Ok(());
    }
    for (i, row) in data.chunks(16).enumerate() {
        let mut line = format!("{:08x}  ", i * 16);
        for j in 0..16 {
            match row.get(j) {
                Some(b) => line.push_str(&format!("{b:02x} ")),
                None => line.push_str("   "),
            }
            if j == 7 {
                line.push(' ');
            }
        }
        line.push(' ');
        line.extend(row.iter().map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '.'
            }
        }));
        writeln!(out, "{line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod pipeline_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Arc, Mutex};

    /// A `Write` whose bytes the test reads back after the writer has them.
    #[derive(Clone, Default)]
    pub(super) struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl SharedBuf {
        pub(super) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A clock where monotonic 0 is 2023-11-14T22:13:20Z.
    pub(super) fn fixed_clock() -> Clock {
        Clock {
            offset_ns: 1_700_000_000_000_000_000,
        }
    }

    fn raw_output(format: Format, records: &[Record]) -> String {
        let buf = SharedBuf::default();
        let mut w = Writer {
            out: Box::new(buf.clone()),
            format,
            clock: fixed_clock(),
        };
        for r in records {
            w.write(r).unwrap();
        }
        w.flush().unwrap();
        buf.text()
    }

    /// One record of every kind, with and without the optional parts.
    fn sample_records() -> Vec<Record> {
        let call = CallRecord {
            facts: Default::default(),
            direction: Direction::Write,
            pid: 42,
            tid: 43,
            comm: "curl".into(),
            conn: 0xabc,
            ts_ns: 1_500_000,
            len: 100,
            data: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            truncated: true,
            lost_bytes: 7,
            sni: Some("example.com".into()),
        };
        let binary = CallRecord {
            facts: Default::default(),
            direction: Direction::Read,
            ts_ns: 2_000_000_001,
            len: 3,
            data: vec![0, 0xff, b'A'],
            truncated: false,
            lost_bytes: 0,
            sni: None,
            ..call.clone()
        };
        vec![
            Record::Call(call),
            Record::Call(binary),
            Record::Sni {
                pid: 42,
                tid: 43,
                comm: "curl".into(),
                conn: 0xabc,
                ts_ns: 3_000,
                name: "example.com".into(),
                pattern: Some("*.com".into()),
                facts: Default::default(),
            },
            Record::Sni {
                pid: 42,
                tid: 43,
                comm: "curl".into(),
                conn: 0xabd,
                ts_ns: 4_000,
                name: "other.org".into(),
                pattern: None,
                facts: Default::default(),
            },
            Record::Close {
                pid: 42,
                tid: 44,
                comm: "curl".into(),
                conn: 0xabc,
                ts_ns: 5_000_000_000,
                sni: Some("example.com".into()),
                facts: Default::default(),
            },
            Record::Close {
                pid: 42,
                tid: 44,
                comm: "curl".into(),
                conn: 0xabd,
                ts_ns: 6_000_000_000,
                sni: None,
                facts: Default::default(),
            },
        ]
    }

    /// The lines, each with its newline.
    fn lines(ls: &[&str]) -> String {
        ls.join("\n") + "\n"
    }

    /// `--raw`: a header line per call and its data; a line per SNI and close.
    #[test]
    fn raw_text_records() {
        let expected = lines(&[
            "--- 2023-11-14T22:13:20.001500Z curl[42/43] WRITE conn=0xabc sni=example.com len=100 truncated lost=7",
            "GET / HTTP/1.1\r",
            "\r",
            "--- 2023-11-14T22:13:22.000000Z curl[42/43] READ conn=0xabc len=3",
            "00000000  00 ff 41                                          ..A",
            "--- 2023-11-14T22:13:20.000003Z curl[42] SNI conn=0xabc sni=example.com (matches *.com)",
            "--- 2023-11-14T22:13:20.000004Z curl[42] SNI conn=0xabd sni=other.org",
            "--- 2023-11-14T22:13:25.000000Z curl[42] CLOSE conn=0xabc sni=example.com",
            "--- 2023-11-14T22:13:26.000000Z curl[42] CLOSE conn=0xabd",
        ]);
        assert_eq!(raw_output(Format::Text, &sample_records()), expected);
    }

    /// `--raw --format json`: an object per record, data as UTF-8 or base64.
    #[test]
    fn raw_json_records() {
        let expected = lines(&[
            r#"{"type":"data","time":"2023-11-14T22:13:20.001500Z","ts_ns":1500000,"pid":42,"tid":43,"comm":"curl","conn":"0xabc","direction":"write","sni":"example.com","len":100,"captured":18,"truncated":true,"lost_bytes":7,"encoding":"utf8","data":"GET / HTTP/1.1\r\n\r\n"}"#,
            r#"{"type":"data","time":"2023-11-14T22:13:22.000000Z","ts_ns":2000000001,"pid":42,"tid":43,"comm":"curl","conn":"0xabc","direction":"read","sni":null,"len":3,"captured":3,"truncated":false,"lost_bytes":0,"encoding":"base64","data":"AP9B"}"#,
            r#"{"type":"sni","time":"2023-11-14T22:13:20.000003Z","ts_ns":3000,"pid":42,"tid":43,"comm":"curl","conn":"0xabc","sni":"example.com","pattern":"*.com"}"#,
            r#"{"type":"sni","time":"2023-11-14T22:13:20.000004Z","ts_ns":4000,"pid":42,"tid":43,"comm":"curl","conn":"0xabd","sni":"other.org","pattern":null}"#,
            r#"{"type":"close","time":"2023-11-14T22:13:25.000000Z","ts_ns":5000000000,"pid":42,"tid":44,"comm":"curl","conn":"0xabc","sni":"example.com"}"#,
            r#"{"type":"close","time":"2023-11-14T22:13:26.000000Z","ts_ns":6000000000,"pid":42,"tid":44,"comm":"curl","conn":"0xabd","sni":null}"#,
        ]);
        assert_eq!(raw_output(Format::Json, &sample_records()), expected);
    }

    #[test]
    fn text_is_printed_as_is_and_binary_as_hex() {
        let mut v = Vec::new();
        write_data(&mut v, b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(v, b"GET / HTTP/1.1\r\n\r\n");
        let mut v = Vec::new();
        write_data(&mut v, &[0, 1, 2, b'A']).unwrap();
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "00000000  00 01 02 41                                       ...A\n"
        );
    }

    #[test]
    fn output_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.json");
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _f = create_private(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"");
    }

    /// `--raw` text records of a hostile process: its name, server name and
    /// data reach the terminal escaped.
    #[test]
    fn raw_text_records_are_escaped() {
        let call = CallRecord {
            facts: Default::default(),
            direction: Direction::Write,
            pid: 42,
            tid: 43,
            comm: "\x1b[31mevil".into(),
            conn: 0xabc,
            ts_ns: 0,
            len: 16,
            data: "innocent\rEVIL\u{202e}\r\n".as_bytes().to_vec(),
            truncated: false,
            lost_bytes: 0,
            sni: Some("a.com\r\nforged".into()),
        };
        let records = [
            Record::Call(call),
            Record::Sni {
                pid: 42,
                tid: 43,
                comm: "\x07".into(),
                conn: 0xabc,
                ts_ns: 0,
                name: "x\u{9b}2J".into(),
                pattern: Some("*\x1b".into()),
                facts: Default::default(),
            },
            Record::Close {
                pid: 42,
                tid: 43,
                comm: "\x1b]0;t\x07".into(),
                conn: 0xabc,
                ts_ns: 0,
                sni: Some("\t".into()),
                facts: Default::default(),
            },
        ];
        let expected = lines(&[
            r"--- 2023-11-14T22:13:20.000000Z \x1b[31mevil[42/43] WRITE conn=0xabc sni=a.com\r\nforged len=16",
            "innocent\\rEVIL\\u{202e}\r",
            r"--- 2023-11-14T22:13:20.000000Z \x07[42] SNI conn=0xabc sni=x\u{9b}2J (matches *\x1b)",
            r"--- 2023-11-14T22:13:20.000000Z \x1b]0;t\x07[42] CLOSE conn=0xabc sni=\t",
        ]);
        assert_eq!(raw_output(Format::Text, &records), expected);
        // and in JSON, the same strings with nothing a terminal acts on
        let json = raw_output(Format::Json, &records);
        assert!(json.contains(r#""comm":"\u001b[31mevil""#), "{json}");
        assert!(json.contains(r#""sni":"x\u009b2J""#), "{json}");
        assert!(
            json.contains(r#""data":"innocent\rEVIL\u202e\r\n""#),
            "{json}"
        );
        assert!(!json.chars().any(|c| c.is_control() && c != '\n'), "{json}");
    }

    /// A text body with a bare CR and a bidi override: escaped, lines kept.
    #[test]
    fn text_data_is_escaped() {
        let mut v = Vec::new();
        write_data(&mut v, "ok\r\nhidden\rshown\t\u{2067}x".as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "ok\r\nhidden\\rshown\t\\u{2067}x\n"
        );
    }

    /// A writer that fails as a full disk or a closed pipe does.
    struct Failing(io::ErrorKind);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(match self.0 {
                io::ErrorKind::StorageFull => io::Error::from_raw_os_error(libc::ENOSPC),
                _ => io::Error::from_raw_os_error(libc::EPIPE),
            })
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Output errors name the output and keep their kind; a closed pipe is
    /// the reader going away, anything else a failure.
    #[test]
    fn output_errors_are_named_and_classified() {
        let mut full = BufWriter::new(Named {
            inner: Failing(io::ErrorKind::StorageFull),
            name: "/var/tmp/x.json".into(),
        });
        full.write_all(b"x").unwrap();
        let e = full.flush().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        let e = anyhow::Error::from(e).context("writing");
        assert_eq!(
            Stopped::of(&e),
            Stopped::Failed(
                "writing: cannot write to /var/tmp/x.json: No space left on device (os error 28)"
                    .into()
            )
        );
        let mut closed = Named {
            inner: Failing(io::ErrorKind::BrokenPipe),
            name: "stdout".into(),
        };
        let e = closed.write(b"x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot write to stdout: Broken pipe (os error 32)"
        );
        assert_eq!(Stopped::of(&anyhow::Error::from(e)), Stopped::ReaderGone);
    }
}
