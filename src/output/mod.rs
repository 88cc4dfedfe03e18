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
pub mod pcap;

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use base64::Engine;
use serde::Serialize;

use std::collections::HashMap;

use crate::abi::Direction;
use crate::capture::CallRecord;
use crate::decode::conn::{ConnDecoder, Decoded};
use crate::decode::Redact;
use access::{AccessWriter, ConnMeta};
use pcap::PcapWriter;

/// What the output thread receives.
#[derive(Debug, Clone)]
pub enum Record {
    /// One TLS call's plaintext.
    Call(CallRecord),
    /// A captured connection was closed.
    Close {
        pid: u32,
        tid: u32,
        comm: String,
        conn: u64,
        ts_ns: u64,
        sni: Option<String>,
    },
    /// SNI_CONFIGURED: a connection to capture got its server name.
    Sni {
        pid: u32,
        tid: u32,
        comm: String,
        conn: u64,
        ts_ns: u64,
        name: String,
        pattern: Option<String>,
    },
}

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

/// Converts CLOCK_MONOTONIC nanoseconds (BPF's clock) to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    offset_ns: i128,
}

impl Clock {
    pub fn new() -> Clock {
        let mono = mono_now() as i128;
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i128;
        Clock {
            offset_ns: wall - mono,
        }
    }
    /// RFC 3339 wall-clock time, in microseconds, of a BPF timestamp.
    pub fn rfc3339(&self, mono_ns: u64) -> String {
        humantime::format_rfc3339_micros(self.wall(mono_ns)).to_string()
    }

    pub fn wall(&self, mono_ns: u64) -> SystemTime {
        let ns = (mono_ns as i128 + self.offset_ns).max(0) as u64;
        UNIX_EPOCH + Duration::from_nanos(ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Opens an output file, readable and writable by its owner only.
pub fn create_private(path: &Path) -> Result<std::fs::File> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create output file {}", path.display()))?;
    // An existing file keeps its mode on open: tighten it.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {} to mode 0600", path.display()))?;
    Ok(f)
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
        }
    }
}

#[derive(Serialize)]
struct JsonCall<'a> {
    #[serde(flatten)]
    head: JsonHead<'a>,
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
    fn new(head: JsonHead<'a>, c: &'a CallRecord) -> Self {
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
    head: JsonHead<'a>,
    sni: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonSni<'a> {
    #[serde(flatten)]
    head: JsonHead<'a>,
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
    /// `sni`), time, process, thread and connection.
    fn json_head<'r>(&self, r: &'r Record) -> JsonHead<'r> {
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
        };
        JsonHead::new(kind, &self.clock, ts_ns, pid, Some(tid), comm, conn)
    }

    /// A `--- ` header line per record; a call's data follows its line.
    fn write_text(&mut self, r: &Record) -> io::Result<()> {
        match r {
            Record::Call(c) => self.text_call(c),
            Record::Sni {
                pid,
                comm,
                conn,
                ts_ns,
                name,
                pattern,
                ..
            } => writeln!(
                self.out,
                "--- {} {}[{}] SNI conn={:#x} sni={}{}",
                self.clock.rfc3339(*ts_ns),
                comm,
                pid,
                conn,
                name,
                pattern
                    .as_ref()
                    .map(|p| format!(" (matches {p})"))
                    .unwrap_or_default()
            ),
            Record::Close {
                pid,
                comm,
                conn,
                ts_ns,
                sni,
                ..
            } => writeln!(
                self.out,
                "--- {} {}[{}] CLOSE conn={:#x}{}",
                self.clock.rfc3339(*ts_ns),
                comm,
                pid,
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
        writeln!(
            self.out,
            "--- {} {}[{}/{}] {} conn={:#x}{} len={}{}",
            self.clock.rfc3339(c.ts_ns),
            c.comm,
            c.pid,
            c.tid,
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

/// stdout, or a new private file.
pub fn destination(path: Option<&Path>) -> Result<Box<dyn Write + Send>> {
    Ok(match path {
        Some(p) => Box::new(BufWriter::new(create_private(p)?)),
        None => Box::new(BufWriter::new(io::stdout())),
    })
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
}

struct ConnState {
    meta: ConnMeta,
    decoder: ConnDecoder,
    in_pcap: bool,
}

/// Records in, every configured output out.
pub struct Pipeline {
    raw: Option<Writer>,
    access: Option<AccessWriter>,
    pcap: Option<PcapWriter>,
    conns: HashMap<(u32, u64), ConnState>,
    redact: Redact,
    clock: Clock,
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
            clock: Clock::new(),
        })
    }

    fn decoding(&self) -> bool {
        self.access.is_some() || self.pcap.is_some()
    }

    fn conn(&mut self, pid: u32, comm: &str, conn: u64) -> &mut ConnState {
        let redact = &self.redact;
        self.conns.entry((pid, conn)).or_insert_with(|| ConnState {
            meta: ConnMeta {
                pid,
                comm: comm.to_string(),
                conn,
                sni: None,
            },
            decoder: ConnDecoder::new(redact.clone()),
            in_pcap: false,
        })
    }

    pub fn handle(&mut self, r: &Record) -> Result<()> {
        if let Some(w) = &mut self.raw {
            w.write(r)?;
        }
        if !self.decoding() {
            return Ok(());
        }
        match r {
            Record::Call(c) => {
                let st = self.conn(c.pid, &c.comm, c.conn);
                if c.sni.is_some() {
                    st.meta.sni = c.sni.clone();
                }
                let lost = (c.len as u64).saturating_sub(c.data.len() as u64);
                let d = st
                    .decoder
                    .push(c.direction == Direction::Write, &c.data, c.ts_ns, lost);
                self.emit((c.pid, c.conn), d)?;
            }
            Record::Sni {
                pid,
                comm,
                conn,
                name,
                ..
            } => {
                self.conn(*pid, comm, *conn).meta.sni = Some(name.clone());
            }
            Record::Close {
                pid, conn, ts_ns, ..
            } => self.close((*pid, *conn), *ts_ns)?,
        }
        Ok(())
    }

    fn close(&mut self, key: (u32, u64), ts_ns: u64) -> Result<()> {
        let Some(st) = self.conns.get_mut(&key) else {
            return Ok(());
        };
        let d = st.decoder.finish(ts_ns);
        self.emit(key, d)?;
        if let Some(st) = self.conns.remove(&key) {
            if let (Some(p), true) = (&mut self.pcap, st.in_pcap) {
                p.close(pcap_key(key), self.clock.wall(ts_ns))?;
            }
        }
        Ok(())
    }

    fn emit(&mut self, key: (u32, u64), d: Decoded) -> Result<()> {
        let Some(st) = self.conns.get_mut(&key) else {
            return Ok(());
        };
        if let Some(a) = &mut self.access {
            for item in &d.items {
                a.write(&st.meta, item)?;
            }
        }
        if let Some(p) = &mut self.pcap {
            for s in &d.segments {
                let when = self.clock.wall(s.ts_ns);
                if !st.in_pcap {
                    let (client, server) = pcap::synthetic_endpoints(key.0, key.1);
                    let comment = format!(
                        "{}[{}] sni={}",
                        st.meta.comm,
                        st.meta.pid,
                        st.meta.sni.as_deref().unwrap_or("-")
                    );
                    p.open(pcap_key(key), client, server, when, comment)?;
                    st.in_pcap = true;
                }
                p.data(pcap_key(key), s.from_client, when, &s.data, s.gap_before)?;
            }
        }
        Ok(())
    }

    /// Ends the connections of processes that have exited.
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
        Ok(())
    }

    /// Ends every connection (the agent stops).
    pub fn finish(&mut self) -> Result<()> {
        let keys: Vec<_> = self.conns.keys().copied().collect();
        for key in keys {
            self.close(key, mono_now())?;
        }
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

/// Starts the output thread: it hands every record to the pipeline,
/// flushes after each burst, and sweeps idle connections every 5 s. It ends
/// when every sender is gone, finishing the pipeline.
pub fn spawn(
    rx: crossbeam_channel::Receiver<Record>,
    mut p: Pipeline,
) -> Result<std::thread::JoinHandle<()>> {
    use crossbeam_channel::RecvTimeoutError;
    use std::time::{Duration, Instant};
    let run = move || {
        let mut last_sweep = Instant::now();
        let fail = |e: anyhow::Error| log::error!("output: {e:#}");
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(r) => {
                    let mut burst = std::iter::once(r).chain(rx.try_iter());
                    if let Err(e) = burst.try_for_each(|r| p.handle(&r)) {
                        return fail(e);
                    }
                    if let Err(e) = p.flush() {
                        return fail(e);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if last_sweep.elapsed() >= Duration::from_secs(5) {
                last_sweep = Instant::now();
                if let Err(e) = p.sweep().and_then(|()| p.flush()) {
                    return fail(e);
                }
            }
        }
        if let Err(e) = p.finish() {
            fail(e);
        }
    };
    std::thread::Builder::new()
        .name("output".into())
        .spawn(run)
        .context("spawning the output thread")
}

fn pcap_key((pid, conn): (u32, u64)) -> u64 {
    conn ^ ((pid as u64) << 32).rotate_left(7)
}

/// CLOCK_MONOTONIC now, in ns (BPF's clock).
pub fn mono_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
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

/// ` sni=NAME` when the server name is known, else nothing.
fn sni_field(sni: Option<&str>) -> String {
    sni.map(|s| format!(" sni={s}")).unwrap_or_default()
}

/// One JSON object and its newline.
fn json_line(out: &mut dyn Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}

fn is_text(data: &[u8]) -> bool {
    match std::str::from_utf8(data) {
        Ok(s) => s
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\r' | '\n' | '\t')),
        Err(_) => false,
    }
}

/// Text as is (with a final newline); anything else as a hex dump.
pub fn write_data(out: &mut dyn Write, data: &[u8]) -> io::Result<()> {
    if is_text(data) {
        out.write_all(data)?;
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
mod tests {
    use super::*;
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
            },
            Record::Sni {
                pid: 42,
                tid: 43,
                comm: "curl".into(),
                conn: 0xabd,
                ts_ns: 4_000,
                name: "other.org".into(),
                pattern: None,
            },
            Record::Close {
                pid: 42,
                tid: 44,
                comm: "curl".into(),
                conn: 0xabc,
                ts_ns: 5_000_000_000,
                sni: Some("example.com".into()),
            },
            Record::Close {
                pid: 42,
                tid: 44,
                comm: "curl".into(),
                conn: 0xabd,
                ts_ns: 6_000_000_000,
                sni: None,
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
}
