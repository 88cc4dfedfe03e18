//! Output: what people and programs read. By default the capture is
//! decoded (`decode`) into an access log on the console or JSON objects per
//! HTTP exchange (`access`); `--raw` shows each TLS call's plaintext as
//! captured (`Writer`); `--pcap` writes the streams as TCP packets (`pcap`).
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
    Call(CallRecord),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A header line per call, then the data (text as is, binary as hex).
    Text,
    /// One JSON object per line.
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

/// Writes the raw records (one per TLS call) in one format.
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

    pub fn write(&mut self, r: &Record) -> io::Result<()> {
        match (self.format, r) {
            (Format::Json, Record::Call(c)) => {
                let (encoding, data) = match std::str::from_utf8(&c.data) {
                    Ok(s) => ("utf8", s.to_string()),
                    Err(_) => (
                        "base64",
                        base64::engine::general_purpose::STANDARD.encode(&c.data),
                    ),
                };
                let j = JsonCall {
                    head: JsonHead::new(
                        "data",
                        &self.clock,
                        c.ts_ns,
                        c.pid,
                        Some(c.tid),
                        &c.comm,
                        c.conn,
                    ),
                    direction: c.direction.as_str(),
                    sni: c.sni.as_deref(),
                    len: c.len,
                    captured: c.data.len(),
                    truncated: c.truncated,
                    lost_bytes: c.lost_bytes,
                    encoding,
                    data,
                };
                json_line(&mut self.out, &j)
            }
            (
                Format::Json,
                Record::Close {
                    pid,
                    tid,
                    comm,
                    conn,
                    ts_ns,
                    sni,
                },
            ) => {
                let j = JsonClose {
                    head: JsonHead::new(
                        "close",
                        &self.clock,
                        *ts_ns,
                        *pid,
                        Some(*tid),
                        comm,
                        *conn,
                    ),
                    sni: sni.as_deref(),
                };
                json_line(&mut self.out, &j)
            }
            (
                Format::Json,
                Record::Sni {
                    pid,
                    tid,
                    comm,
                    conn,
                    ts_ns,
                    name,
                    pattern,
                },
            ) => {
                let j = JsonSni {
                    head: JsonHead::new("sni", &self.clock, *ts_ns, *pid, Some(*tid), comm, *conn),
                    sni: name,
                    pattern: pattern.as_deref(),
                };
                json_line(&mut self.out, &j)
            }
            (
                Format::Text,
                Record::Sni {
                    pid,
                    comm,
                    conn,
                    ts_ns,
                    name,
                    pattern,
                    ..
                },
            ) => writeln!(
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
            (Format::Text, Record::Call(c)) => {
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
                    c.sni
                        .as_ref()
                        .map(|s| format!(" sni={s}"))
                        .unwrap_or_default(),
                    c.len,
                    flags
                )?;
                write_data(&mut self.out, &c.data)
            }
            (
                Format::Text,
                Record::Close {
                    pid,
                    comm,
                    conn,
                    ts_ns,
                    sni,
                    ..
                },
            ) => writeln!(
                self.out,
                "--- {} {}[{}] CLOSE conn={:#x}{}",
                self.clock.rfc3339(*ts_ns),
                comm,
                pid,
                conn,
                sni.as_ref()
                    .map(|s| format!(" sni={s}"))
                    .unwrap_or_default()
            ),
        }
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
    /// 0: access log; 1: headers; 2: bodies (console).
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
                    let burst = std::iter::once(r).chain(rx.try_iter());
                    if let Err(e) = burst.map(|r| p.handle(&r)).collect::<Result<()>>() {
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
