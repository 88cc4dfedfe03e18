//! Fuzz harnesses: one function per parser of outside input, each feeding
//! the parser the way the agent does and checking what the agent relies on
//! beyond "no panic" (bounded output, offsets inside the input, bytes out
//! never more than bytes in).
//!
//! The engine is `examples/fuzz.rs` (`make fuzz`); `tests/fuzz_regressions.rs`
//! runs every harness on the seed corpus and on every input that ever
//! crashed (`fuzz/`). A harness panics on a finding: either the parser
//! panicked, or one of the `assert!`s below failed.
//!
//! Inputs of the stream harnesses (HTTP/1, HTTP/2, the connection decoder,
//! the ring-buffer records) are a [`Script`]: calls in order, each with its
//! direction, so that bytes are split anywhere and interleaved as the
//! capture delivers them.
//!
//! The ClientHello/ServerHello parser exists only in BPF: `hello` runs the
//! very code statictls runs (`bpf/hello_parse.bpf.h`) in the kernel,
//! through a `syscall` program that BPF_PROG_TEST_RUN executes
//! (`bpf/hellotest.bpf.c`; root needed), and compares what it finds with an
//! independent reading of the same rules ([`hello_reference`]).

use std::path::Path;

use crate::abi::{self, Event, DATA_CHUNK};
use crate::capture::{Capture, Reassembler};
use crate::config::{ConfigFile, Filter};
use crate::decode::conn::{ConnDecoder, Item};
use crate::decode::db::{DbConn, DbQuery, DbSystem, QueryText};
use crate::decode::http1::{Http1Conn, MAX_BODY_KEEP};
use crate::decode::http2::{Http2Conn, Http2Error, MAX_HEADER_LIST};
use crate::decode::limits::{DB_MESSAGE_KEEP, DB_QUERY_KEEP, DB_RESPONSE_KEEP, DB_STATEMENT_BYTES};
use crate::decode::{Exchange, HttpMessage, Peer, Redact};
use crate::inspect::image::Image;
use crate::inspect::{self, elf, go, place, ElfSymbols, Target};
use crate::output::Record;
use crate::probes::PROBES;
use crate::sni;

/// A harness: runs one input, panics on a finding.
pub type Harness = fn(&[u8]);

/// Every harness, by name (the name is the folder under `fuzz/corpus/` and
/// `fuzz/regressions/`).
pub const HARNESSES: &[(&str, Harness)] = &[
    ("elf", elf),
    ("go", go),
    ("place", place),
    ("http1", http1),
    ("http2", http2),
    ("conn", conn),
    ("postgres", postgres),
    ("redis", redis),
    ("mysql", mysql),
    ("ring", ring),
    ("config", config),
    ("hello", hello),
];

/// The harness called `name`.
pub fn harness(name: &str) -> Option<Harness> {
    HARNESSES.iter().find(|h| h.0 == name).map(|h| h.1)
}

// ---------------------------------------------------------------------------
// Scripts: calls in order.

/// Flag bit of a script op: the call came from the server (HTTP/1, HTTP/2)
/// or was received by the captured process (connection decoder).
pub const OP_SERVER: u8 = 0x01;
/// Flag bit: a u16 count of lost bytes follows the data (connection decoder).
pub const OP_LOST: u8 = 0x02;
/// An op byte that ends the script (connection decoder: the close).
pub const OP_END: u8 = 0xff;

/// One call of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub flags: u8,
    pub data: Vec<u8>,
    pub lost: u16,
}

/// Script encoding: per op, a flags byte, a little-endian u16 length, that
/// many bytes (cut at the end of the input) and, with [`OP_LOST`], a u16
/// count of lost bytes. [`OP_END`] ends it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    pub ops: Vec<Op>,
    /// The script ended with [`OP_END`].
    pub ended: bool,
}

impl Script {
    pub fn parse(mut b: &[u8]) -> Script {
        let mut s = Script::default();
        while let Some((&flags, rest)) = b.split_first() {
            if flags == OP_END {
                s.ended = true;
                break;
            }
            let len = match rest {
                [lo, hi, ..] => u16::from_le_bytes([*lo, *hi]) as usize,
                [lo] => *lo as usize,
                [] => 0,
            };
            let rest = rest.get(2..).unwrap_or(&[]);
            let n = len.min(rest.len());
            let (data, rest) = rest.split_at(n);
            let mut lost = 0;
            b = rest;
            if flags & OP_LOST != 0 && b.len() >= 2 {
                lost = u16::from_le_bytes([b[0], b[1]]);
                b = &b[2..];
            }
            s.ops.push(Op {
                flags,
                data: data.to_vec(),
                lost,
            });
        }
        s
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for op in &self.ops {
            out.push(op.flags);
            let n = op.data.len().min(u16::MAX as usize);
            out.extend_from_slice(&(n as u16).to_le_bytes());
            out.extend_from_slice(&op.data[..n]);
            if op.flags & OP_LOST != 0 {
                out.extend_from_slice(&op.lost.to_le_bytes());
            }
        }
        if self.ended {
            out.push(OP_END);
        }
        out
    }

    /// Adds a call.
    pub fn call(&mut self, server: bool, data: &[u8]) -> &mut Script {
        self.ops.push(Op {
            flags: u8::from(server),
            data: data.to_vec(),
            lost: 0,
        });
        self
    }
}

// ---------------------------------------------------------------------------
// Shared checks.

/// The names inspection keeps (as `inspect::interesting`).
fn interesting(name: &str) -> bool {
    inspect::interesting(name)
}

/// A body is never longer than it counts, nor kept past the limit.
fn check_message(m: &HttpMessage, fed: u64, what: &str) {
    assert!(
        m.body.len() <= MAX_BODY_KEEP,
        "{what}: {} body bytes kept",
        m.body.len()
    );
    assert!(
        m.body.len() as u64 <= m.body_len,
        "{what}: body of {} bytes counted as {}",
        m.body.len(),
        m.body_len
    );
    assert!(
        m.body_len <= fed,
        "{what}: body_len {} but only {fed} bytes were fed",
        m.body_len
    );
    assert!(
        m.ts_first_ns <= m.ts_last_ns,
        "{what}: first byte at {} after last at {}",
        m.ts_first_ns,
        m.ts_last_ns
    );
}

/// `fed`: bytes pushed by (client, server).
fn check_exchange(e: &Exchange, fed: [u64; 2]) {
    if let Some(m) = &e.request {
        check_message(m, fed[0], "request");
    }
    if let Some(m) = &e.response {
        check_message(m, fed[1], "response");
    }
}

/// A database record shows at most its bounds, and never more text than
/// the bytes it was made of allow (plus the redaction marks).
fn check_db(q: &DbQuery, fed: u64) {
    let len = |o: &Option<String>| o.as_ref().map_or(0, String::len);
    assert!(
        len(&q.query) <= DB_QUERY_KEEP + 32,
        "query of {}",
        len(&q.query)
    );
    assert!(
        len(&q.response) <= DB_RESPONSE_KEEP,
        "response of {}",
        len(&q.response)
    );
    assert!(
        len(&q.error) <= DB_MESSAGE_KEEP,
        "error of {}",
        len(&q.error)
    );
    assert!(q.ts_last_ns >= q.ts_first_ns, "ends before it starts");
    // sanitized text and summaries add a few bytes per element at most
    let shown = (len(&q.query) + len(&q.response) + len(&q.error)) as u64;
    assert!(
        shown <= 16 * fed + 1024,
        "{shown} bytes shown from {fed} bytes"
    );
}

/// One database decoder driven as the connection decoder drives it: calls
/// of both peers, lost bytes (a decoder that cannot resynchronise stops),
/// the close. Memory stays bounded, the wire form is never longer than
/// what came in (masking keeps lengths), records stay within their bounds.
/// The first byte's high bit chooses `--db-query-text full`.
fn db_harness(system: DbSystem, data: &[u8]) {
    let script = Script::parse(data);
    let mode = if data.first().is_some_and(|b| b & 0x80 != 0) {
        QueryText::Full
    } else {
        QueryText::Sanitized
    };
    let mut c = DbConn::new(system, mode);
    let (mut fed, mut wire) = (0u64, 0u64);
    let bound = 4 * DB_MESSAGE_KEEP + DB_STATEMENT_BYTES + 2 * DB_RESPONSE_KEEP;
    for (ts, op) in script.ops.iter().enumerate() {
        let p = peer(op);
        fed += op.data.len() as u64;
        let o = c.push(p, &op.data, ts as u64);
        wire += (o.wire.len() + o.raw.len()) as u64;
        assert!(wire <= fed, "{wire} wire bytes from {fed}");
        for q in &o.queries {
            check_db(q, fed);
        }
        if o.error.is_some() {
            return;
        }
        assert!(
            c.memory() <= bound + 2048 * 1024,
            "{} bytes held",
            c.memory()
        );
        if op.lost > 0 && !c.gap(p) {
            return;
        }
    }
    for q in c.finish() {
        check_db(&q, fed);
    }
}

/// The PostgreSQL decoder ([`db_harness`]).
pub fn postgres(data: &[u8]) {
    db_harness(DbSystem::Postgresql, data)
}

/// The Redis decoder ([`db_harness`]).
pub fn redis(data: &[u8]) {
    db_harness(DbSystem::Redis, data)
}

/// The MySQL decoder ([`db_harness`]).
pub fn mysql(data: &[u8]) {
    db_harness(DbSystem::Mysql, data)
}

/// Placement chose instructions of the function: the entry stays or moves
/// to an emulated instruction inside it; return points are emulated
/// instructions inside it; points without a return program have none.
fn check_placement(map: &[u8], t: &Target) {
    let Some(pl) = &t.place else { return };
    let end = (t.offset.saturating_add(t.size) as usize).min(map.len());
    let code = &map[(t.offset as usize).min(end)..end];
    let emulated_at = |o: u64, what: &str| {
        assert!(
            o >= t.offset && o < t.offset + code.len() as u64,
            "{}: {what} {o:#x} outside the function at {:#x}+{:#x}",
            t.symbol,
            t.offset,
            code.len()
        );
        let at = (o - t.offset) as usize;
        let mut d = iced_x86::Decoder::with_ip(64, &code[at..], o, iced_x86::DecoderOptions::NONE);
        let ins = d.decode();
        assert!(
            place::emulated(&ins, &code[at..]).is_some(),
            "{}: {what} {o:#x} is not an emulated instruction ({:?})",
            t.symbol,
            ins.code()
        );
    };
    if pl.entry.offset != t.offset {
        emulated_at(pl.entry.offset, "entry");
    }
    match &pl.returns {
        Ok(points) => {
            assert!(
                t.point.has_return(),
                "{}: return points without a return program",
                t.symbol
            );
            assert!(!points.is_empty(), "{}: no return point", t.symbol);
            for &o in points {
                emulated_at(o, "return point");
            }
        }
        Err(_) if t.point.has_return() => assert_eq!(
            pl.entry.offset, t.offset,
            "{}: a kept uretprobe keeps the entry program at the entry",
            t.symbol
        ),
        Err(_) => {}
    }
}

// ---------------------------------------------------------------------------
// Inspection.

/// An ELF file as a worker inspects it: symbols (`.dynsym`, `.symtab`, PLT
/// stubs of no-return functions), Go, the library kind, placement.
pub fn elf(data: &[u8]) {
    let shown = Path::new("fuzz.elf");
    let Ok(syms) = elf::symbols_and_go(data, shown, &interesting) else {
        return;
    };
    assert!(
        !syms.segments.is_empty(),
        "parsed without a loadable segment"
    );
    assert!(
        syms.noreturn.windows(2).all(|w| w[0] < w[1]),
        "no-return offsets not sorted: {:?}",
        syms.noreturn
    );
    for (name, loc) in &syms.functions {
        assert!(interesting(name), "kept {name:?}, which was not asked for");
        assert_eq!(
            elf::vaddr_to_offset(&syms.segments, loc.vaddr),
            Some(loc.file_offset),
            "{name}"
        );
    }
    if let Some(Ok(g)) = &syms.go {
        check_go(data, g);
    }
    let mut insp = inspect::classify(&syms);
    if insp.is_tls() {
        inspect::place_targets(data, &syms, &mut insp.targets);
        for t in &insp.targets {
            check_in_file(data, t);
            check_placement(data, t);
        }
    }
    // The SSL BIO's functions, from BIO_f_ssl's method table.
    if let Some(Ok(bio)) = inspect::sslbio::targets(data, &syms) {
        for t in &bio {
            check_in_file(data, t);
        }
    }
    // The exported functions, looked up in `.gnu.hash` as a worker does
    // first: only names asked for, at offsets inside the file.
    let names = inspect::exported_names();
    if let Ok(Some(ex)) = elf::exported_symbols(data, "fuzz.elf", &names, &|_| true) {
        assert!(ex.noreturn.windows(2).all(|w| w[0] < w[1]));
        for (name, loc) in &ex.functions {
            assert!(names.contains(&name.as_str()), "looked up {name:?}");
            assert!(loc.dynamic && loc.file_offset < data.len() as u64, "{name}");
        }
    }
    // A worker's whole inspection reads the file as it parses it: the
    // same result as over the bytes in memory.
    let img = Image::of_bytes(data);
    assert_eq!(
        format!("{:?}", inspect::inspect_bytes(&img, shown, true)),
        format!("{:?}", inspect::inspect_bytes(data, shown, true)),
    );
    // The content identity (build ID note), as the inspection cache reads it.
    if let Some(k) = inspect::cache::key_of_bytes(data) {
        assert!(
            (1..=128).contains(&k.id.len()),
            "build ID of {} bytes",
            k.id.len()
        );
        assert!(
            data.windows(k.id.len()).any(|w| w == k.id.as_slice()),
            "a build ID that is not in the file"
        );
    }
}

/// A uprobe goes at a file offset: one past the end of the file is refused
/// by the kernel (and fails the file's attach).
fn check_in_file(data: &[u8], t: &Target) {
    assert!(
        (t.offset as usize) < data.len(),
        "{}: offset {:#x} outside the file of {:#x} bytes",
        t.symbol,
        t.offset,
        data.len()
    );
}

/// Go's crypto/tls in an executable: pclntab (`gobin`), build info, RET
/// instructions, the probe targets made of them.
pub fn go(data: &[u8]) {
    let shown = Path::new("fuzz.go");
    // The segments as the ELF parser reads them; a file it refuses is still
    // handed to gobin (which reads the bytes on its own) with one segment.
    let segments = elf::parse_symbols(data, "fuzz.go", &|_| false)
        .map(|s| s.segments)
        .unwrap_or_else(|_| vec![(0x40_0000, data.len() as u64, 0)]);
    let found = go::inspect_go(data, &segments, shown);
    if let Ok(Some(g)) = &found {
        check_go(data, g);
    }
    let syms = ElfSymbols {
        is_executable: true,
        segments,
        go: found.transpose(),
        ..Default::default()
    };
    let insp = inspect::classify(&syms);
    for t in &insp.targets {
        check_in_file(data, t);
    }
}

/// Every Go probe offset is in the file, and every return point is a RET.
fn check_go(data: &[u8], g: &go::GoTls) {
    assert!(!g.write_rets.is_empty() && !g.read_rets.is_empty());
    for &o in [g.write, g.read].iter().chain(&g.handshake).chain(&g.close) {
        assert!(
            (o as usize) < data.len(),
            "Go entry {o:#x} outside the file"
        );
    }
    for &o in g.write_rets.iter().chain(&g.read_rets) {
        let code = data.get(o as usize..).unwrap_or(&[]);
        let mut d = iced_x86::Decoder::with_ip(64, code, o, iced_x86::DecoderOptions::NONE);
        let ins = d.decode();
        assert_eq!(
            ins.mnemonic(),
            iced_x86::Mnemonic::Ret,
            "Go return point {o:#x} is {:?}",
            ins.code()
        );
    }
}

/// Length of the [`place`] input's header.
pub const PLACE_HEADER: usize = 9;

/// Probe placement on one function. Input: a header of [`PLACE_HEADER`]
/// bytes (the probe point's index in the probe table; little-endian u16s:
/// the function's offset, its size as the symbol says (0xffff: to the end),
/// two offsets of no-return functions), then the bytes standing for the
/// file.
pub fn place(data: &[u8]) {
    if data.len() < PLACE_HEADER {
        return;
    }
    let (h, map) = data.split_at(PLACE_HEADER);
    let u16_at = |i: usize| u64::from(u16::from_le_bytes([h[i], h[i + 1]]));
    let point = PROBES[h[0] as usize % PROBES.len()].point;
    let offset = u16_at(1).min(map.len() as u64);
    let size = match u16_at(3) {
        0xffff => map.len() as u64 - offset,
        n => n,
    };
    let mut noreturn: Vec<u64> = [u16_at(5), u16_at(7)]
        .into_iter()
        .filter(|&o| o != 0)
        .collect();
    noreturn.sort_unstable();
    noreturn.dedup();
    let syms = ElfSymbols {
        noreturn,
        ..Default::default()
    };
    let mut targets = vec![Target {
        point,
        symbol: point.symbol().to_string(),
        offset,
        size,
        place: None,
        cookie: None,
    }];
    inspect::place_targets(map, &syms, &mut targets);
    let t = &targets[0];
    if size > 0 && offset < map.len() as u64 {
        assert!(t.place.is_some(), "a function with code was not placed");
    }
    check_placement(map, t);
    if let Some(pl) = &t.place {
        let _ = pl.explain(t);
    }
}

// ---------------------------------------------------------------------------
// Decoding.

fn peer(op: &Op) -> Peer {
    if op.flags & OP_SERVER != 0 {
        Peer::Server
    } else {
        Peer::Client
    }
}

/// Both directions of an HTTP/1.x connection, as the connection decoder
/// drives them: a failed direction shows its bytes raw and restarts at its
/// next call.
pub fn http1(data: &[u8]) {
    let script = Script::parse(data);
    let mut c = Http1Conn::new(Redact::new(&["x-api-key".to_string()]));
    let mut failed = [false; 2];
    let mut fed = [0u64; 2];
    let (mut bytes_in, mut wire_out) = (0u64, 0u64);
    for (ts, op) in script.ops.iter().enumerate() {
        let p = peer(op);
        let side = usize::from(p == Peer::Server);
        if failed[side] {
            c.restart(p);
            failed[side] = false;
        }
        fed[side] += op.data.len() as u64;
        bytes_in += op.data.len() as u64;
        let o = c.push(p, &op.data, ts as u64);
        wire_out += o.wire.len() as u64;
        for e in &o.exchanges {
            check_exchange(e, fed);
        }
        if o.error.is_some() {
            let rest = c.take_unparsed(p);
            assert!(
                rest.len() as u64 <= fed[side],
                "{} unparsed bytes of {} fed",
                rest.len(),
                fed[side]
            );
            failed[side] = true;
        }
        // Heads are rebuilt where values are redacted: "a:b\n" becomes
        // "a: [redacted]\r\n" at most.
        assert!(
            wire_out <= 4 * bytes_in + 64,
            "{wire_out} wire bytes from {bytes_in} bytes"
        );
        if c.upgraded {
            break;
        }
    }
    for e in c.finish() {
        check_exchange(&e, fed);
    }
}

/// Both directions of an HTTP/2 connection (frames, HPACK, streams). The
/// wire form handed to pcapng must read again without the decoder's state:
/// it is decoded by a fresh connection, which must not fail where the
/// original did not.
pub fn http2(data: &[u8]) {
    let script = Script::parse(data);
    let mut c = Http2Conn::new(Redact::none());
    let mut again = Http2Conn::new(Redact::none());
    let mut fed = [0u64; 2];
    let mut failed = false;
    let mut again_ok = true;
    for (ts, op) in script.ops.iter().enumerate() {
        let p = peer(op);
        fed[usize::from(p == Peer::Server)] += op.data.len() as u64;
        let o = match c.push(p, &op.data, ts as u64) {
            Ok(o) => o,
            Err(_) => {
                failed = true;
                continue;
            }
        };
        if failed {
            assert!(
                o.exchanges.is_empty() && o.wire.is_empty(),
                "output after the connection failed"
            );
            continue;
        }
        for e in &o.exchanges {
            check_exchange(e, fed);
            check_header_lists(e);
        }
        if again_ok {
            match again.push(p, &o.wire, ts as u64) {
                Ok(_) => {}
                // A block re-encoded as literals can outgrow the block
                // limit the original stayed under.
                Err(Http2Error::HeaderBlockTooLarge(_)) => again_ok = false,
                Err(e) => panic!("the wire form does not decode again: {e}"),
            }
        }
    }
    for e in c.finish() {
        check_exchange(&e, fed);
    }
}

fn check_header_lists(e: &Exchange) {
    for m in [&e.request, &e.response].into_iter().flatten() {
        let size: usize = m.headers.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
        assert!(size <= MAX_HEADER_LIST, "header list of {size} bytes");
    }
}

/// The per-connection decoder as the output thread drives it: calls with
/// their lost bytes, then the close.
pub fn conn(data: &[u8]) {
    let script = Script::parse(data);
    let mut c = ConnDecoder::new(Redact::new(&[]));
    let mut fed = [0u64; 2];
    let mut lost_in = 0u64;
    let (mut raw_out, mut gaps_out) = (0u64, 0u64);
    let mut check = |d: &crate::decode::conn::Decoded, fed: [u64; 2], lost_in: u64| {
        for item in &d.items {
            match item {
                Item::Raw { data, .. } => raw_out += data.len() as u64,
                // Which peer is the client is only known to the decoder:
                // bound bodies by all bytes fed.
                Item::Exchange(e) => check_exchange(e, [fed[0] + fed[1]; 2]),
                Item::Db(q) => check_db(q, fed[0] + fed[1]),
                Item::Notice { .. } => {}
            }
        }
        gaps_out += d.segments.iter().map(|s| s.gap_before).sum::<u64>();
        assert!(
            raw_out <= fed[0] + fed[1],
            "{raw_out} raw bytes from {} bytes",
            fed[0] + fed[1]
        );
        assert!(
            gaps_out <= lost_in,
            "{gaps_out} bytes of gaps from {lost_in} lost"
        );
    };
    for (ts, op) in script.ops.iter().enumerate() {
        let outgoing = op.flags & OP_SERVER == 0;
        fed[usize::from(!outgoing)] += op.data.len() as u64;
        lost_in += u64::from(op.lost);
        let d = c.push(outgoing, &op.data, ts as u64, u64::from(op.lost));
        check(&d, fed, lost_in);
    }
    let d = c.finish(script.ops.len() as u64);
    check(&d, fed, lost_in);
}

// ---------------------------------------------------------------------------
// Capture.

/// Ring-buffer records (one script op each) as the capture loop reads them:
/// parsed, chunks reassembled per thread; the same records through the
/// whole capture side (server names, closes) into the output queue.
pub fn ring(data: &[u8]) {
    let script = Script::parse(data);
    let mut reasm = Reassembler::default();
    let (tx, rx) = crossbeam_channel::bounded(64);
    let mut capture = Capture::new(tx, vec!["*.acme.com".into()]);
    let (mut chunk_bytes, mut call_bytes) = (0u64, 0u64);
    let mut out_bytes = 0u64;
    let drain = |out_bytes: &mut u64| {
        for r in rx.try_iter() {
            if let Record::Call(c) = r {
                *out_bytes += c.data.len() as u64;
            }
        }
    };
    for op in &script.ops {
        let rec = &op.data[..];
        if let Ok(Event::Data(c)) = abi::parse(rec) {
            assert!(
                c.data.len() <= DATA_CHUNK,
                "chunk of {} bytes",
                c.data.len()
            );
            let start = c.data.as_ptr() as usize - rec.as_ptr() as usize;
            assert!(
                start + c.data.len() <= rec.len(),
                "chunk outside its record"
            );
            chunk_bytes += c.data.len() as u64;
            for call in reasm.push(&c) {
                call_bytes += call.data.len() as u64;
            }
            assert!(
                call_bytes <= chunk_bytes,
                "{call_bytes} bytes of calls from {chunk_bytes} bytes of chunks"
            );
        }
        capture.on_record(rec);
        drain(&mut out_bytes);
        if op.flags & OP_SERVER != 0 {
            capture.forget_exited(&mut |pid| pid % 2 == 0);
        }
    }
    call_bytes += reasm
        .flush()
        .iter()
        .map(|c| c.data.len() as u64)
        .sum::<u64>();
    assert!(call_bytes <= chunk_bytes);
    capture.flush();
    drain(&mut out_bytes);
    assert!(
        out_bytes <= chunk_bytes,
        "{out_bytes} bytes queued from {chunk_bytes} bytes of chunks"
    );
}

// ---------------------------------------------------------------------------
// Configuration.

/// The `--config` file: YAML into [`ConfigFile`], then what
/// `Settings::from_cli` does with it (server-name patterns checked and laid
/// out for the kernel's tries, redaction, the start-up filter).
pub fn config(data: &[u8]) {
    // The agent reads the file with read_to_string: not UTF-8 is an error.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(f) = serde_saphyr::from_str::<ConfigFile>(text) else {
        return;
    };
    if let Ok(patterns) = sni::parse_all(&f.sni) {
        for p in &patterns {
            let (_, key) = p.trie_key();
            assert_eq!(
                key.len(),
                4 + sni::MAX_NAME,
                "{p}: trie key of {} bytes",
                key.len()
            );
            let bits = u32::from_ne_bytes(key[..4].try_into().expect("4 bytes"));
            assert!(
                bits as usize <= 8 * sni::MAX_NAME,
                "{p}: prefix of {bits} bits"
            );
            let _ = p.to_string();
        }
    }
    let r = Redact::new(&f.redact_headers);
    assert!(r.applies("Cookie"));
    let filter = Filter {
        pids: f.pids,
        comms: f.comms,
        containers: Filter::container_prefixes(&f.containers).unwrap_or_default(),
        ..Default::default()
    };
    for c in &filter.comms {
        let k = Filter::comm_key(c);
        assert_eq!(k[15], 0, "comm key of {c:?} is not NUL-terminated");
    }
    let _ = filter.wants(1, "curl");
}

// ---------------------------------------------------------------------------
// ClientHello / ServerHello (BPF)

/// What the BPF parser found in a send's first bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct HelloFound {
    /// A ClientHello record whose fields reach its extensions.
    pub client_hello: bool,
    /// The server name's offset and length in the bytes (length 0: none).
    pub name: (u32, u32),
    /// A ServerHello record header.
    pub server_hello: bool,
}

/// The bytes the BPF side copies of a send (`HELLO_MAX`).
pub const HELLO_MAX: usize = 4096;

thread_local! {
    static HELLO_PROG: std::cell::RefCell<Option<crate::bpf::hellotest::HellotestSkel<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `bpf/hellotest.bpf.c` on the first `HELLO_MAX` bytes of `data` (at
/// least one byte) in the kernel.
pub fn hello_bpf(data: &[u8]) -> anyhow::Result<HelloFound> {
    use anyhow::Context;
    use libbpf_rs::skel::{OpenSkel, SkelBuilder};
    use libbpf_rs::ProgramInput;
    use std::mem::MaybeUninit;

    let n = data.len().min(HELLO_MAX);
    anyhow::ensure!(n > 0, "no bytes");
    HELLO_PROG.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let storage = Box::leak(Box::new(MaybeUninit::uninit()));
            let open = crate::bpf::hellotest::HellotestSkelBuilder::default()
                .open(storage)
                .context("opening hellotest")?;
            *slot = Some(open.load().context("loading hellotest (root needed)")?);
        }
        let skel = slot.as_ref().expect("loaded above");
        let mut t = crate::bpf::hellotest::types::hello_test {
            len: n as u32,
            ..Default::default()
        };
        t.data[..n].copy_from_slice(&data[..n]);
        // SAFETY: hello_test is a plain C struct of integers and bytes.
        let ctx = unsafe {
            std::slice::from_raw_parts_mut(
                (&mut t as *mut crate::bpf::hellotest::types::hello_test).cast::<u8>(),
                std::mem::size_of_val(&t),
            )
        };
        let input = ProgramInput {
            context_in: Some(ctx),
            ..Default::default()
        };
        let out = skel
            .progs
            .hello_test
            .test_run(input)
            .context("BPF_PROG_TEST_RUN")?;
        anyhow::ensure!(
            out.return_value == 0,
            "hello_test returned {}",
            out.return_value
        );
        Ok(HelloFound {
            client_hello: t.client_hello != 0,
            name: (t.name_off, t.name_len),
            server_hello: t.server_hello != 0,
        })
    })
}

/// The parser's rules read afresh, for the comparison: the first
/// `HELLO_MAX` bytes of a send; a handshake record (0x16, major version 3)
/// holding a ClientHello (type 1) of at least 48 bytes; session id, cipher
/// suites and compression methods skipped by their lengths, each length
/// within the bytes; then at most 64 extensions within the extensions'
/// length (cut to the bytes); the first server_name extension (type 0)
/// gives its first entry if that is a host_name (type 0) lying wholly
/// within. `name` is (0, 0) for none.
pub fn hello_reference(data: &[u8]) -> HelloFound {
    let b = &data[..data.len().min(HELLO_MAX)];
    let server_hello = b.len() >= 6 && b[0] == 0x16 && b[1] == 3 && b[5] == 2;
    let none = HelloFound {
        client_hello: false,
        name: (0, 0),
        server_hello,
    };
    if b.len() < 48 || b[0] != 0x16 || b[1] != 3 || b[5] != 1 {
        return none;
    }
    let u8_at = |i: usize| usize::from(b[i]);
    let u16_at = |i: usize| usize::from(b[i]) << 8 | usize::from(b[i + 1]);
    let mut off = 43;
    off += 1 + u8_at(off);
    if off + 2 > b.len() {
        return none;
    }
    off += 2 + u16_at(off);
    if off + 1 > b.len() {
        return none;
    }
    off += 1 + u8_at(off);
    if off + 2 > b.len() {
        return none;
    }
    let end = (off + 2 + u16_at(off)).min(b.len());
    let mut at = off + 2;
    let mut name = (0, 0);
    for _ in 0..64 {
        if at + 4 > end {
            break;
        }
        if u16_at(at) == 0 {
            if at + 9 <= end && b[at + 6] == 0 {
                let (o, l) = (at + 9, u16_at(at + 7));
                name = (o as u32, if o + l > end { 0 } else { l as u32 });
            }
            break;
        }
        at += 4 + u16_at(at + 2);
    }
    HelloFound {
        client_hello: true,
        name,
        server_hello,
    }
}

/// The BPF ClientHello/ServerHello parser on any bytes (empty input: one
/// zero byte): it must find what [`hello_reference`] finds, and a name only
/// inside the bytes.
pub fn hello(data: &[u8]) {
    let data = if data.is_empty() { &[0u8][..] } else { data };
    let got = hello_bpf(data).expect("running bpf/hellotest.bpf.c");
    let (off, len) = got.name;
    if len > 0 {
        assert!((off + len) as usize <= data.len().min(HELLO_MAX), "{got:?}");
    }
    assert_eq!(got, hello_reference(data), "BPF parser vs reference");
}
