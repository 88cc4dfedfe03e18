//! HTTP/2 (RFC 9113) exchanges from both directions of one connection.
//!
//! Each direction is an ordered byte stream cut into frames (bytes may
//! arrive split anywhere); header blocks (HEADERS or PUSH_PROMISE plus their
//! CONTINUATIONs) are decoded with one HPACK decoder per direction, since
//! each direction has its own dynamic table. Streams become [`Exchange`]s,
//! returned when the response ends or the stream is reset.
//!
//! Besides exchanges, every complete frame is handed back in a "wire" form
//! that a dissector can read without the HPACK state we joined with and
//! without the secrets redaction removed: header blocks are re-encoded as
//! literals that never touch the dynamic table (see [`encode_literal_block`]),
//! every other frame is copied unchanged.
//!
//! Streams: the client's HEADERS on a new stream id opens an exchange, a
//! server PUSH_PROMISE opens one for the promised stream (its request being
//! the promised header list). Frames on streams that are not open (closed
//! earlier, or never opened) still update HPACK state and still appear in
//! the wire form, but make no exchange.
//!
//! What a peer can make the decoder hold or show is bounded (see
//! [`super::limits`]): header and trailer fields per message (a message's
//! fields are cut at `MAX_HEADER_BYTES` / `MAX_FIELDS`, trailers at
//! `MAX_TRAILERS`, with a notice), decoded header lists (`MAX_HEADER_LIST`:
//! an error), open streams (`MAX_STREAMS`: the lowest open stream is closed
//! for a new one, with a notice), kept bodies (`MAX_BODY_KEEP` per message,
//! `CONN_BODY_KEEP` across the connection's open streams; `body_len` counts
//! them all).
//!
//! Never-indexed literal fields (RFC 7541 6.2.3) are redacted like the
//! fields [`Redact`] names (regular fields and trailers; pseudo-header
//! fields are not).
//!
//! SETTINGS are not interpreted: the HPACK decoder follows the dynamic table
//! size updates the encoder sends in-band (which is all a passive reader
//! needs), up to [`MAX_TABLE_SIZE`]; SETTINGS_HEADER_TABLE_SIZE and
//! SETTINGS_MAX_FRAME_SIZE are not checked against.

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use thiserror::Error;

use super::limits::{CONN_BODY_KEEP, MAX_BODY_KEEP, MAX_FIELDS, MAX_HEADER_BYTES, MAX_TRAILERS};
pub use super::limits::{MAX_HEADER_BLOCK, MAX_HEADER_LIST, MAX_STREAMS, MAX_TABLE_SIZE};
use super::{
    grpc_message_count, grpc_path, Exchange, FieldBudget, Grpc, Headers, HttpMessage, Peer,
    Protocol, Redact, REDACTED,
};

/// What the client sends before its first frame.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A frame longer than this is refused rather than buffered. (The 24-bit
/// length field cannot exceed it, so this only states the bound: at most
/// one frame of 16 MiB is buffered per direction; the connection decoder's
/// memory budget, `limits::CONN_MEMORY`, stops a connection well before.)
pub const MAX_FRAME_LEN: usize = 16 << 20;
/// The HPACK dynamic table size before any size update (RFC 9113 6.5.2).
const DEFAULT_TABLE_SIZE: usize = 4096;
/// Notices about cut header blocks per connection; `finish` counts the rest.
const CUT_NOTICES: u64 = 8;

/// Largest frame payload in the wire form (the protocol's default
/// SETTINGS_MAX_FRAME_SIZE, which every peer accepts).
const WIRE_MAX_PAYLOAD: usize = 16384;
const FRAME_HEAD: usize = 9;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Http2Error {
    #[error("not HTTP/2: the client did not start with the connection preface")]
    BadPreface,
    #[error("HTTP/2 frame of {0} bytes is larger than the {max} byte limit", max = MAX_FRAME_LEN)]
    FrameTooLarge(usize),
    #[error("HTTP/2 header block on stream {0} is larger than {max} bytes", max = MAX_HEADER_BLOCK)]
    HeaderBlockTooLarge(u32),
    #[error("HTTP/2 header list on stream {0} decodes to more than {max} bytes", max = MAX_HEADER_LIST)]
    HeaderListTooLarge(u32),
    #[error("HPACK decode error on stream {stream}: {reason}")]
    Hpack { stream: u32, reason: String },
    #[error("HTTP/2 protocol error: {0}")]
    Protocol(String),
}

/// What one push produced.
#[derive(Debug, Default)]
pub struct Http2Output {
    /// Exchanges completed by the pushed bytes, in completion order.
    pub exchanges: Vec<Exchange>,
    /// The frames completed by the pushed bytes, in the pushing peer's
    /// direction, in the wire form (see the module documentation).
    pub wire: Vec<u8>,
}

/// True if `data` (the first bytes of a direction) is, or could still
/// become, the client preface.
pub fn maybe_preface(data: &[u8]) -> bool {
    if data.len() >= PREFACE.len() {
        data.starts_with(PREFACE)
    } else {
        PREFACE.starts_with(data)
    }
}

/// Encodes a header list as HPACK literals with a new name (RFC 7541
/// 6.2.2 "without indexing", or 6.2.3 "never indexed" where `never[i]` says
/// so: redacted and never-indexed fields): no index, no Huffman, no dynamic
/// table change, so any decoder reads it without prior state.
pub fn encode_literal_block(headers: &[(String, Vec<u8>)], never: &[bool]) -> Vec<u8> {
    let size: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 11).sum();
    let mut out = Vec::with_capacity(size);
    for (i, (name, value)) in headers.iter().enumerate() {
        out.push(if never.get(i).copied().unwrap_or(false) {
            0x10
        } else {
            0x00
        });
        encode_string(&mut out, name.as_bytes());
        encode_string(&mut out, value);
    }
    out
}

/// A string literal without Huffman coding (RFC 7541 5.2).
fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_integer(out, s.len(), 7, 0x00);
    out.extend_from_slice(s);
}

/// An integer with an N-bit prefix (RFC 7541 5.1); `first` holds the bits
/// above the prefix.
fn encode_integer(out: &mut Vec<u8>, value: usize, prefix_bits: u8, first: u8) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Reads an HPACK integer the way fluke-hpack does (at most 5 octets).
fn decode_integer(buf: &[u8], prefix_bits: u8) -> Option<(usize, usize)> {
    let first = *buf.first()?;
    let max = (1usize << prefix_bits) - 1;
    let mut value = first as usize & max;
    if value < max {
        return Some((value, 1));
    }
    let mut shift = 0;
    for (i, &b) in buf.iter().enumerate().skip(1) {
        value += ((b & 0x7f) as usize) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
        if i + 1 == 5 {
            return None;
        }
    }
    None
}

/// What walking a header block's representations tells.
#[derive(Debug, Default, PartialEq, Eq)]
struct BlockShape {
    /// Per field the block emits, in order: a never-indexed literal.
    never: Vec<bool>,
    /// The last dynamic table size update.
    table_size: Option<usize>,
}

/// Walks a header block's representations without decoding them: fluke-hpack
/// panics on some malformed input (a truncated dynamic table size update),
/// so blocks are checked for well-formed framing first; and fluke-hpack does
/// not say which fields were never-indexed literals.
fn check_block(buf: &[u8]) -> Result<BlockShape, &'static str> {
    fn string_len(buf: &[u8]) -> Result<usize, &'static str> {
        let (len, used) = decode_integer(buf, 7).ok_or("bad string length")?;
        if buf.len() - used < len {
            return Err("string longer than the block");
        }
        Ok(used + len)
    }
    let mut shape = BlockShape::default();
    let mut i = 0;
    while i < buf.len() {
        let rest = &buf[i..];
        let c = rest[0];
        let prefix = if c & 0x80 != 0 {
            7
        } else if c & 0x40 != 0 {
            6
        } else if c & 0x20 != 0 {
            5
        } else {
            4
        };
        let (index, mut used) = decode_integer(rest, prefix).ok_or("bad integer")?;
        let size_update = c & 0xe0 == 0x20;
        if size_update {
            shape.table_size = Some(index);
        } else {
            shape.never.push(c & 0xf0 == 0x10);
        }
        let literal = c & 0x80 == 0 && !size_update;
        if literal {
            if index == 0 {
                used += string_len(&rest[used..])?;
            }
            used += string_len(&rest[used..])?;
        }
        i += used;
    }
    Ok(shape)
}

/// A decoded header block.
#[derive(Debug)]
struct DecodedBlock {
    /// Fields kept by the budget (the last one maybe cut): name (UTF-8,
    /// lossy), value, sent as a never-indexed literal.
    fields: Vec<(String, Vec<u8>, bool)>,
    /// What the block held in all (fields, name and value bytes), when the
    /// budget cut it.
    cut: Option<(usize, usize)>,
    /// What is left of the budget.
    left: FieldBudget,
    table_size: Option<usize>,
}

/// Decodes one complete header block, keeping what `budget` allows.
fn decode_block(
    decoder: &mut fluke_hpack::Decoder<'static>,
    stream: u32,
    block: &[u8],
    mut budget: FieldBudget,
) -> Result<DecodedBlock, Http2Error> {
    let hpack = |reason: String| Http2Error::Hpack { stream, reason };
    let shape = check_block(block).map_err(|r| hpack(r.to_string()))?;
    let mut fields = Vec::new();
    let mut size = 0usize;
    let (mut sent, mut sent_bytes, mut cut) = (0usize, 0usize, false);
    let decoded = catch_unwind(AssertUnwindSafe(|| {
        decoder.decode_with_cb(block, |name, value| {
            size = size.saturating_add(name.len() + value.len() + 32);
            let never = shape.never.get(sent).copied().unwrap_or(false);
            sent += 1;
            sent_bytes = sent_bytes.saturating_add(name.len() + value.len());
            match budget.take(name.len(), value.len()) {
                Some(keep) if size <= MAX_HEADER_LIST => {
                    cut |= keep < value.len();
                    fields.push((
                        String::from_utf8_lossy(&name).into_owned(),
                        value[..keep].to_vec(),
                        never,
                    ));
                }
                _ => cut = true,
            }
        })
    }));
    match decoded {
        Ok(Ok(())) if size > MAX_HEADER_LIST => Err(Http2Error::HeaderListTooLarge(stream)),
        Ok(Ok(())) => Ok(DecodedBlock {
            fields,
            cut: cut.then_some((sent, sent_bytes)),
            left: budget,
            table_size: shape.table_size,
        }),
        Ok(Err(e)) => Err(hpack(format!("{e:?}"))),
        Err(_) => Err(hpack("decoder failed on malformed input".to_string())),
    }
}

fn field<'a>(list: &'a Headers, name: &str) -> Option<&'a [u8]> {
    list.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

fn field_string(list: &Headers, name: &str) -> Option<String> {
    field(list, name).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2 spec).
fn percent_decode(v: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' && i + 3 <= v.len() {
            if let (Some(h), Some(l)) = (hex(v[i + 1]), hex(v[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn frame_name(ty: u8) -> &'static str {
    match ty {
        DATA => "DATA",
        HEADERS => "HEADERS",
        PRIORITY => "PRIORITY",
        RST_STREAM => "RST_STREAM",
        SETTINGS => "SETTINGS",
        PUSH_PROMISE => "PUSH_PROMISE",
        PING => "PING",
        GOAWAY => "GOAWAY",
        WINDOW_UPDATE => "WINDOW_UPDATE",
        CONTINUATION => "CONTINUATION",
        _ => "unknown",
    }
}

fn write_frame_head(out: &mut Vec<u8>, len: usize, ty: u8, flags: u8, stream: u32) {
    let len = (len as u32).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(ty);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
}

/// A re-encoded header block as HEADERS (or PUSH_PROMISE) plus CONTINUATIONs.
fn write_block_frames(
    out: &mut Vec<u8>,
    stream: u32,
    promised: Option<u32>,
    end_stream: bool,
    block: &[u8],
) {
    let (ty, prefix, mut flags) = match promised {
        Some(p) => (PUSH_PROMISE, (p & 0x7fff_ffff).to_be_bytes().to_vec(), 0),
        None => (
            HEADERS,
            Vec::new(),
            if end_stream { FLAG_END_STREAM } else { 0 },
        ),
    };
    let (first, rest) = block.split_at(block.len().min(WIRE_MAX_PAYLOAD - prefix.len()));
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    write_frame_head(out, prefix.len() + first.len(), ty, flags, stream);
    out.extend_from_slice(&prefix);
    out.extend_from_slice(first);
    let mut chunks = rest.chunks(WIRE_MAX_PAYLOAD).peekable();
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            FLAG_END_HEADERS
        } else {
            0
        };
        write_frame_head(out, chunk.len(), CONTINUATION, flags, stream);
        out.extend_from_slice(chunk);
    }
}

#[derive(Debug, Clone, Copy)]
struct FrameHead {
    len: usize,
    ty: u8,
    flags: u8,
    stream: u32,
}

impl FrameHead {
    fn parse(b: &[u8]) -> Option<FrameHead> {
        let b: &[u8; FRAME_HEAD] = b.get(..FRAME_HEAD)?.try_into().ok()?;
        Some(FrameHead {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize,
            ty: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        })
    }
}

/// Removes the pad length octet and the padding of a PADDED frame.
fn unpad(payload: &[u8], flags: u8, ty: u8) -> Result<&[u8], Http2Error> {
    if flags & FLAG_PADDED == 0 {
        return Ok(payload);
    }
    let Some((&pad, rest)) = payload.split_first() else {
        return Err(Http2Error::Protocol(format!(
            "padded {} frame without a pad length",
            frame_name(ty)
        )));
    };
    let pad = pad as usize;
    if pad > rest.len() {
        return Err(Http2Error::Protocol(format!(
            "{} padding longer than the frame",
            frame_name(ty)
        )));
    }
    Ok(&rest[..rest.len() - pad])
}

/// A header block waiting for its CONTINUATIONs.
#[derive(Debug)]
struct Block {
    stream: u32,
    /// PUSH_PROMISE: the promised stream.
    promised: Option<u32>,
    end_stream: bool,
    fragment: Vec<u8>,
    /// When the first byte of the HEADERS / PUSH_PROMISE frame came.
    ts_first: u64,
}

/// One direction's reading state.
struct Dir {
    /// Bytes of a frame (or of the preface) not complete yet.
    buf: Vec<u8>,
    /// When the first byte of `buf` came.
    buf_ts: u64,
    /// Client: the preface still has to be read.
    want_preface: bool,
    hpack: fluke_hpack::Decoder<'static>,
    /// The HPACK dynamic table's size limit (what it can hold).
    table_size: usize,
    block: Option<Block>,
}

impl Dir {
    fn new(want_preface: bool) -> Dir {
        let mut hpack = fluke_hpack::Decoder::new();
        hpack.set_max_allowed_table_size(MAX_TABLE_SIZE);
        Dir {
            buf: Vec::new(),
            buf_ts: 0,
            want_preface,
            hpack,
            table_size: DEFAULT_TABLE_SIZE,
            block: None,
        }
    }

    /// Bytes held: the partial frame, a header block waiting for its
    /// CONTINUATIONs, the HPACK table (at its limit, a bound of what it
    /// holds: entries count 32 bytes each beyond name and value).
    fn memory(&self) -> usize {
        self.buf.len() + self.block.as_ref().map_or(0, |b| b.fragment.len()) + self.table_size
    }
}

impl fmt::Debug for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dir")
            .field("buffered", &self.buf.len())
            .field("want_preface", &self.want_preface)
            .field("block", &self.block)
            .finish_non_exhaustive()
    }
}

/// An open stream.
#[derive(Debug, Default)]
struct Stream {
    method: Option<String>,
    path: Option<String>,
    authority: Option<String>,
    status: Option<u16>,
    /// The request's content-type is application/grpc*.
    grpc: bool,
    /// `complete` marks a message that ended with END_STREAM.
    request: Option<HttpMessage>,
    response: Option<HttpMessage>,
    /// What the request and the response may still keep of fields.
    budget: [FieldBudget; 2],
}

impl Stream {
    fn memory(&self) -> usize {
        let s = |o: &Option<String>| o.as_ref().map_or(0, String::len);
        let m = |o: &Option<HttpMessage>| o.as_ref().map_or(0, message_memory);
        128 + s(&self.method)
            + s(&self.path)
            + s(&self.authority)
            + m(&self.request)
            + m(&self.response)
    }
}

/// Bytes a message holds.
pub(super) fn message_memory(m: &HttpMessage) -> usize {
    super::header_bytes(&m.headers) + super::header_bytes(&m.trailers) + m.body.len()
}

/// Both directions of one HTTP/2 connection.
#[derive(Debug)]
pub struct Http2Conn {
    redact: Redact,
    client: Dir,
    server: Dir,
    streams: BTreeMap<u32, Stream>,
    /// Highest client stream opened: lower ones that are not open are closed.
    last_client_stream: u32,
    /// After an error or `finish`, pushes are ignored.
    stopped: bool,
    /// Exchanges completed by a push that then failed, handed out by `finish`.
    stranded: Vec<Exchange>,
    /// Body bytes the open streams may still keep in this push.
    room: usize,
    /// Streams closed early to make room for new ones (`MAX_STREAMS`).
    streams_cut: u64,
    /// Header blocks whose fields were cut.
    cuts: u64,
    /// What the decoder has to say (limits reached), in order.
    notices: Vec<String>,
}

impl Http2Conn {
    pub fn new(redact: Redact) -> Http2Conn {
        Http2Conn {
            redact,
            client: Dir::new(true),
            server: Dir::new(false),
            streams: BTreeMap::new(),
            last_client_stream: 0,
            stopped: false,
            stranded: Vec::new(),
            room: 0,
            streams_cut: 0,
            cuts: 0,
            notices: Vec::new(),
        }
    }

    /// Bytes the connection holds (buffers, HPACK tables, open streams).
    pub fn memory(&self) -> usize {
        self.client.memory()
            + self.server.memory()
            + self.streams.values().map(Stream::memory).sum::<usize>()
            + self
                .stranded
                .iter()
                .flat_map(|e| [&e.request, &e.response])
                .flatten()
                .map(message_memory)
                .sum::<usize>()
    }

    /// Body bytes kept by open streams.
    fn body_held(&self) -> usize {
        self.streams
            .values()
            .flat_map(|s| [&s.request, &s.response])
            .flatten()
            .map(|m| m.body.len())
            .sum()
    }

    /// Notices since the last call (limits reached).
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    /// The bytes of `from` read but not decoded yet (a partial frame; after
    /// an error, from the frame that failed on), to be shown raw when
    /// decoding stops.
    pub fn take_buffered(&mut self, from: Peer) -> Vec<u8> {
        std::mem::take(&mut self.dir(from).buf)
    }

    fn dir(&mut self, from: Peer) -> &mut Dir {
        match from {
            Peer::Client => &mut self.client,
            Peer::Server => &mut self.server,
        }
    }

    /// Bytes one peer sent, in order, with the CLOCK_MONOTONIC ns timestamp
    /// of the call that carried them. The Client direction starts with
    /// [`PREFACE`]. Bytes may be split anywhere.
    ///
    /// Returns the exchanges and the wire form of the frames these bytes
    /// complete. The first error fails the connection: that push returns the
    /// `Err` (exchanges it had completed are kept for [`Http2Conn::finish`]),
    /// every later push returns `Ok` with nothing.
    pub fn push(&mut self, from: Peer, data: &[u8], ts_ns: u64) -> Result<Http2Output, Http2Error> {
        let mut out = Http2Output::default();
        if self.stopped || data.is_empty() {
            return Ok(out);
        }
        self.room = CONN_BODY_KEEP.saturating_sub(self.body_held());
        let mut stored = std::mem::take(&mut self.dir(from).buf);
        let mut at = 0;
        let result = if stored.is_empty() {
            self.dir(from).buf_ts = ts_ns;
            self.read(from, data, ts_ns, &mut at, &mut out)
                .map(|used| data[used..].to_vec())
                .map_err(|e| (e, data[at..].to_vec()))
        } else {
            stored.extend_from_slice(data);
            match self.read(from, &stored, ts_ns, &mut at, &mut out) {
                Ok(used) => {
                    stored.drain(..used);
                    Ok(stored)
                }
                Err(e) => {
                    stored.drain(..at);
                    Err((e, stored))
                }
            }
        };
        match result {
            Ok(rest) => {
                self.dir(from).buf = rest;
                Ok(out)
            }
            Err((e, rest)) => {
                self.stopped = true;
                self.client = Dir::new(false);
                self.server = Dir::new(false);
                // From the frame that failed on: `take_buffered` hands it out.
                self.dir(from).buf = rest;
                self.stranded.append(&mut out.exchanges);
                Err(e)
            }
        }
    }

    /// The connection closed: exchanges still open are returned (by stream
    /// id) with `complete == false` on the unfinished messages, after any
    /// completed by a push that failed. Later pushes are ignored.
    pub fn finish(&mut self) -> Vec<Exchange> {
        self.stopped = true;
        self.client = Dir::new(false);
        self.server = Dir::new(false);
        let mut out = std::mem::take(&mut self.stranded);
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        out.extend(ids.into_iter().filter_map(|id| self.close(id)));
        if self.streams_cut > 0 {
            self.notices.push(format!(
                "HTTP/2: {} streams were closed early (shown incomplete): more than \
                 {MAX_STREAMS} were open at once",
                self.streams_cut
            ));
            self.streams_cut = 0;
        }
        if self.cuts > CUT_NOTICES {
            self.notices.push(format!(
                "HTTP/2: {} more header blocks were cut (limits per message: \
                 {MAX_HEADER_BYTES} bytes, {MAX_FIELDS} fields, {MAX_TRAILERS} trailers)",
                self.cuts - CUT_NOTICES
            ));
            self.cuts = 0;
        }
        out
    }

    /// Reads the preface and whole frames from `input`; returns the bytes
    /// used. `at`: where the unit being read starts (on an error, the one
    /// that failed).
    fn read(
        &mut self,
        from: Peer,
        input: &[u8],
        ts: u64,
        at: &mut usize,
        out: &mut Http2Output,
    ) -> Result<usize, Http2Error> {
        let mut pos = 0;
        if self.dir(from).want_preface {
            let n = input.len().min(PREFACE.len());
            if input[..n] != PREFACE[..n] {
                return Err(Http2Error::BadPreface);
            }
            if n < PREFACE.len() {
                return Ok(0);
            }
            self.dir(from).want_preface = false;
            out.wire.extend_from_slice(PREFACE);
            pos = PREFACE.len();
        }
        // Bytes after the first unit read in this call came with this call.
        let mut start_ts = if pos == 0 { self.dir(from).buf_ts } else { ts };
        while let Some(head) = FrameHead::parse(&input[pos..]) {
            *at = pos;
            self.check_head(from, &head)?;
            let end = pos + FRAME_HEAD + head.len;
            if input.len() < end {
                break;
            }
            self.frame(from, head, &input[pos..end], start_ts, ts, out)?;
            pos = end;
            start_ts = ts;
        }
        if pos > 0 {
            self.dir(from).buf_ts = ts;
        }
        Ok(pos)
    }

    /// Checks what a frame header alone tells, before buffering the payload.
    fn check_head(&mut self, from: Peer, h: &FrameHead) -> Result<(), Http2Error> {
        let proto = |what: &str| {
            Err(Http2Error::Protocol(format!(
                "{} frame {what}",
                frame_name(h.ty)
            )))
        };
        if h.len > MAX_FRAME_LEN {
            return Err(Http2Error::FrameTooLarge(h.len));
        }
        let pending = self
            .dir(from)
            .block
            .as_ref()
            .map(|b| (b.stream, b.fragment.len()));
        match (pending, h.ty) {
            (Some((stream, _)), CONTINUATION) if stream == h.stream => {}
            (Some(_), _) => return proto("inside another stream's header block"),
            (None, CONTINUATION) => return proto("without a header block to continue"),
            _ => {}
        }
        match h.ty {
            DATA | HEADERS | PRIORITY | RST_STREAM | PUSH_PROMISE | CONTINUATION
                if h.stream == 0 =>
            {
                return proto("on stream 0")
            }
            SETTINGS | PING | GOAWAY if h.stream != 0 => return proto("on a stream other than 0"),
            _ => {}
        }
        let fixed = match h.ty {
            PRIORITY => Some(5),
            RST_STREAM | WINDOW_UPDATE => Some(4),
            PING => Some(8),
            _ => None,
        };
        if fixed.is_some_and(|n| n != h.len) {
            return proto(&format!("of bad length {}", h.len));
        }
        if h.ty == SETTINGS && (h.len % 6 != 0 || (h.flags & FLAG_ACK != 0 && h.len != 0)) {
            return proto(&format!("of bad length {}", h.len));
        }
        if h.ty == GOAWAY && h.len < 8 {
            return proto(&format!("of bad length {}", h.len));
        }
        if matches!(h.ty, HEADERS | PUSH_PROMISE | CONTINUATION)
            && pending.map_or(0, |(_, n)| n).saturating_add(h.len) > MAX_HEADER_BLOCK
        {
            return Err(Http2Error::HeaderBlockTooLarge(h.stream));
        }
        Ok(())
    }

    /// One complete frame (`raw`: head and payload), already checked.
    fn frame(
        &mut self,
        from: Peer,
        h: FrameHead,
        raw: &[u8],
        start_ts: u64,
        ts: u64,
        out: &mut Http2Output,
    ) -> Result<(), Http2Error> {
        let payload = &raw[FRAME_HEAD..];
        match h.ty {
            DATA => {
                let data = unpad(payload, h.flags, h.ty)?;
                out.wire.extend_from_slice(raw);
                self.on_data(
                    from,
                    h.stream,
                    data,
                    h.flags & FLAG_END_STREAM != 0,
                    ts,
                    out,
                );
            }
            HEADERS => {
                let mut fragment = unpad(payload, h.flags, h.ty)?;
                if h.flags & FLAG_PRIORITY != 0 {
                    fragment = fragment.get(5..).ok_or_else(|| {
                        Http2Error::Protocol("HEADERS frame too short for its priority".into())
                    })?;
                }
                let block = Block {
                    stream: h.stream,
                    promised: None,
                    end_stream: h.flags & FLAG_END_STREAM != 0,
                    fragment: fragment.to_vec(),
                    ts_first: start_ts,
                };
                self.start_block(from, block, h.flags, ts, out)?;
            }
            PUSH_PROMISE => {
                let p = unpad(payload, h.flags, h.ty)?;
                if p.len() < 4 {
                    return Err(Http2Error::Protocol(
                        "PUSH_PROMISE frame without a promised stream".into(),
                    ));
                }
                let promised = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff;
                let block = Block {
                    stream: h.stream,
                    promised: Some(promised),
                    end_stream: false,
                    fragment: p[4..].to_vec(),
                    ts_first: start_ts,
                };
                self.start_block(from, block, h.flags, ts, out)?;
            }
            CONTINUATION => {
                let dir = self.dir(from);
                if let Some(block) = dir.block.as_mut() {
                    block.fragment.extend_from_slice(payload);
                }
                if h.flags & FLAG_END_HEADERS != 0 {
                    if let Some(block) = dir.block.take() {
                        self.end_block(from, block, ts, out)?;
                    }
                }
            }
            RST_STREAM => {
                out.wire.extend_from_slice(raw);
                out.exchanges.extend(self.close(h.stream));
            }
            _ => out.wire.extend_from_slice(raw),
        }
        Ok(())
    }

    fn start_block(
        &mut self,
        from: Peer,
        block: Block,
        flags: u8,
        ts: u64,
        out: &mut Http2Output,
    ) -> Result<(), Http2Error> {
        if flags & FLAG_END_HEADERS != 0 {
            self.end_block(from, block, ts, out)
        } else {
            self.dir(from).block = Some(block);
            Ok(())
        }
    }

    /// What a header block of `from` may keep: the budget of the message it
    /// starts or continues (trailers), and for trailers how many more may
    /// be kept.
    fn budget_for(&self, from: Peer, block: &Block) -> (FieldBudget, Option<usize>) {
        let fresh = (FieldBudget::message(), None);
        if block.promised.is_some() {
            return fresh;
        }
        let Some(st) = self.streams.get(&block.stream) else {
            return fresh;
        };
        let i = from.index();
        let msg = if i == 0 { &st.request } else { &st.response };
        match msg {
            Some(m) if !m.complete => (
                st.budget[i],
                Some(MAX_TRAILERS.saturating_sub(m.trailers.len())),
            ),
            Some(_) => fresh,
            None => (st.budget[i], None),
        }
    }

    /// A whole header block: decode, re-encode for the wire, apply to the stream.
    fn end_block(
        &mut self,
        from: Peer,
        block: Block,
        ts: u64,
        out: &mut Http2Output,
    ) -> Result<(), Http2Error> {
        let (base, trailers) = self.budget_for(from, &block);
        let mut budget = base;
        if let Some(t) = trailers {
            budget.fields = budget.fields.min(t);
        }
        let dir = self.dir(from);
        let d = decode_block(&mut dir.hpack, block.stream, &block.fragment, budget)?;
        if let Some(size) = d.table_size {
            dir.table_size = size;
        }
        if let Some((sent, sent_bytes)) = d.cut {
            self.cut_notice(
                from,
                &block,
                trailers.is_some(),
                &d.fields,
                sent,
                sent_bytes,
            );
        }
        let left = FieldBudget {
            bytes: d.left.bytes,
            fields: base.fields.saturating_sub(d.fields.len()),
        };
        let mut pseudo = Headers::new();
        let mut regular = Headers::new();
        let mut wire_list = Headers::new();
        let mut wire_never = Vec::new();
        let mut content_type = None;
        for (name, mut value, never) in d.fields {
            let mut sensitive = never;
            if name.starts_with(':') {
                pseudo.push((name.clone(), value.clone()));
            } else {
                if content_type.is_none() && name.eq_ignore_ascii_case("content-type") {
                    content_type = Some(value.clone());
                }
                if self.redact.applies_field(&name, never) {
                    value = REDACTED.to_vec();
                    sensitive = true;
                }
                regular.push((name.clone(), value.clone()));
            }
            wire_list.push((name, value));
            wire_never.push(sensitive);
        }
        write_block_frames(
            &mut out.wire,
            block.stream,
            block.promised,
            block.end_stream,
            &encode_literal_block(&wire_list, &wire_never),
        );
        let fields = Fields {
            pseudo,
            regular,
            content_type,
            ts_first: block.ts_first,
            ts_last: ts,
            left,
            cut: d.cut.is_some(),
        };
        match (from, block.promised) {
            (Peer::Server, Some(promised)) => self.on_promise(promised, fields, out),
            // A client cannot push: its block only mattered for HPACK state.
            (Peer::Client, Some(_)) => {}
            (Peer::Client, None) => {
                self.on_request_headers(block.stream, fields, block.end_stream, out)
            }
            (Peer::Server, None) => {
                self.on_response_headers(block.stream, fields, block.end_stream, out)
            }
        }
        Ok(())
    }

    /// Says that a block's fields were cut (the first few times per
    /// connection; `finish` says how many more).
    fn cut_notice(
        &mut self,
        from: Peer,
        block: &Block,
        trailers: bool,
        kept: &[(String, Vec<u8>, bool)],
        sent: usize,
        sent_bytes: usize,
    ) {
        self.cuts += 1;
        if self.cuts > CUT_NOTICES {
            return;
        }
        let kept_bytes: usize = kept.iter().map(|(n, v, _)| n.len() + v.len()).sum();
        let what = match (from, block.promised, trailers) {
            (_, Some(_), _) => "promised request headers",
            (Peer::Client, None, false) => "request headers",
            (Peer::Client, None, true) => "request trailers",
            (Peer::Server, None, false) => "response headers",
            (Peer::Server, None, true) => "response trailers",
        };
        self.notices.push(format!(
            "HTTP/2 stream {} {what} cut: {} of {sent} fields, {kept_bytes} of {sent_bytes} \
             name and value bytes kept (limits per message: {MAX_HEADER_BYTES} bytes, \
             {MAX_FIELDS} fields, {MAX_TRAILERS} trailers)",
            block.stream,
            kept.len()
        ));
    }

    /// Opens a stream; past `MAX_STREAMS` open, the lowest is closed first.
    fn open(&mut self, id: u32, f: Fields, end_stream: bool, out: &mut Http2Output) {
        if self.streams.len() >= MAX_STREAMS {
            if let Some(low) = self.streams.keys().next().copied() {
                out.exchanges.extend(self.close(low));
                self.streams_cut += 1;
                if self.streams_cut == 1 {
                    self.notices.push(format!(
                        "HTTP/2: more than {MAX_STREAMS} streams open at once: the lowest \
                         open stream ({low}) is closed (shown incomplete) for each new one"
                    ));
                }
            }
        }
        let authority = f
            .pseudo_string(":authority")
            .or_else(|| field_string(&f.regular, "host"));
        let stream = Stream {
            method: f.pseudo_string(":method"),
            path: f.pseudo_string(":path"),
            authority,
            status: None,
            grpc: f
                .content_type
                .as_deref()
                .is_some_and(|v| v.starts_with(b"application/grpc")),
            request: Some(HttpMessage {
                headers_truncated: f.cut,
                ..HttpMessage::begin(f.ts_first, f.ts_last, f.regular, end_stream)
            }),
            response: None,
            budget: [f.left, FieldBudget::message()],
        };
        self.streams.insert(id, stream);
    }

    fn on_request_headers(&mut self, id: u32, f: Fields, end_stream: bool, out: &mut Http2Output) {
        if let Some(stream) = self.streams.get_mut(&id) {
            // Trailers (a second block on an open request).
            if let Some(req) = stream.request.as_mut().filter(|r| !r.complete) {
                req.trailers.extend(f.regular);
                req.headers_truncated |= f.cut;
                req.ts_last_ns = f.ts_last;
                req.complete = end_stream;
                stream.budget[0] = f.left;
            }
            return;
        }
        if id % 2 == 0 || id <= self.last_client_stream {
            // Not client-initiated, or a stream that is already closed.
            return;
        }
        self.last_client_stream = id;
        self.open(id, f, end_stream, out)
    }

    fn on_promise(&mut self, promised: u32, f: Fields, out: &mut Http2Output) {
        if promised == 0 || promised % 2 == 1 || self.streams.contains_key(&promised) {
            return;
        }
        // The promised request has no body: it is complete as promised.
        self.open(promised, f, true, out)
    }

    fn on_response_headers(&mut self, id: u32, f: Fields, end_stream: bool, out: &mut Http2Output) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        match stream.response.as_mut() {
            None => {
                let status = f
                    .pseudo_string(":status")
                    .and_then(|s| s.trim().parse::<u16>().ok());
                if status.is_some_and(|s| (100..200).contains(&s)) && !end_stream {
                    return; // informational: the final response follows
                }
                stream.status = status;
                stream.response = Some(HttpMessage {
                    headers_truncated: f.cut,
                    ..HttpMessage::begin(f.ts_first, f.ts_last, f.regular, end_stream)
                });
                stream.budget[1] = f.left;
            }
            Some(resp) if !resp.complete => {
                resp.trailers.extend(f.regular);
                resp.headers_truncated |= f.cut;
                resp.ts_last_ns = f.ts_last;
                resp.complete = end_stream;
                stream.budget[1] = f.left;
            }
            Some(_) => return,
        }
        if end_stream {
            out.exchanges.extend(self.close(id));
        }
    }

    fn on_data(
        &mut self,
        from: Peer,
        id: u32,
        data: &[u8],
        end_stream: bool,
        ts: u64,
        out: &mut Http2Output,
    ) {
        let room = &mut self.room;
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let msg = match from {
            Peer::Client => stream.request.as_mut(),
            Peer::Server => stream.response.as_mut(),
        };
        if let Some(msg) = msg.filter(|m| !m.complete) {
            let n = data
                .len()
                .min(MAX_BODY_KEEP.saturating_sub(msg.body.len()))
                .min(*room);
            msg.body.extend_from_slice(&data[..n]);
            *room -= n;
            msg.body_len += data.len() as u64;
            msg.ts_last_ns = ts;
            msg.complete = end_stream;
        }
        if end_stream && from == Peer::Server {
            out.exchanges.extend(self.close(id));
        }
    }

    /// Removes a stream and makes its exchange.
    fn close(&mut self, id: u32) -> Option<Exchange> {
        let stream = self.streams.remove(&id)?;
        let grpc = stream.grpc.then(|| {
            let (service, method) = stream
                .path
                .as_deref()
                .and_then(grpc_path)
                .unwrap_or_default();
            let resp = stream.response.as_ref();
            let get = |name: &str| {
                resp.and_then(|r| field(&r.trailers, name).or_else(|| field(&r.headers, name)))
            };
            Grpc {
                service,
                method,
                status: get("grpc-status")
                    .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok()),
                message: get("grpc-message").map(percent_decode),
                request_messages: stream
                    .request
                    .as_ref()
                    .map_or(0, |m| grpc_message_count(&m.body)),
                response_messages: resp.map_or(0, |m| grpc_message_count(&m.body)),
            }
        });
        Some(Exchange {
            protocol: Protocol::Http2,
            stream_id: Some(id),
            method: stream.method,
            path: stream.path,
            authority: stream.authority,
            status: stream.status,
            request: stream.request,
            response: stream.response,
            grpc,
        })
    }
}

/// A decoded header block, split and redacted.
struct Fields {
    pseudo: Headers,
    /// Redacted.
    regular: Headers,
    /// The content-type as sent (before redaction).
    content_type: Option<Vec<u8>>,
    ts_first: u64,
    ts_last: u64,
    /// What the message may still keep of fields after these.
    left: FieldBudget,
    /// The budget cut or dropped some of the block's fields.
    cut: bool,
}

impl Fields {
    fn pseudo_string(&self, name: &str) -> Option<String> {
        field_string(&self.pseudo, name)
    }
}

#[cfg(test)]
mod tests {
    use super::super::REDACTED;
    use super::*;
    use fluke_hpack::{Decoder, Encoder};
    use proptest::prelude::*;

    fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        write_frame_head(&mut f, payload.len(), ty, flags, stream);
        f.extend_from_slice(payload);
        f
    }

    fn hs(list: &[(&str, &str)]) -> Headers {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    /// Builds both directions of a connection with real HPACK encoders.
    struct Conv {
        client: Vec<u8>,
        server: Vec<u8>,
        ce: Encoder<'static>,
        se: Encoder<'static>,
    }

    impl Conv {
        fn new() -> Conv {
            let mut client = PREFACE.to_vec();
            client.extend(frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]));
            let mut server = frame(SETTINGS, 0, 0, &[]);
            server.extend(frame(SETTINGS, FLAG_ACK, 0, &[]));
            client.extend(frame(SETTINGS, FLAG_ACK, 0, &[]));
            Conv {
                client,
                server,
                ce: Encoder::new(),
                se: Encoder::new(),
            }
        }
        fn block(&mut self, from: Peer, list: &[(&str, &str)]) -> Vec<u8> {
            let enc = if from == Peer::Client {
                &mut self.ce
            } else {
                &mut self.se
            };
            enc.encode(list.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
        }
        fn out(&mut self, from: Peer) -> &mut Vec<u8> {
            if from == Peer::Client {
                &mut self.client
            } else {
                &mut self.server
            }
        }
        fn headers(&mut self, from: Peer, stream: u32, end: bool, list: &[(&str, &str)]) {
            let b = self.block(from, list);
            let flags = FLAG_END_HEADERS | if end { FLAG_END_STREAM } else { 0 };
            self.out(from).extend(frame(HEADERS, flags, stream, &b));
        }
        fn data(&mut self, from: Peer, stream: u32, end: bool, body: &[u8]) {
            let flags = if end { FLAG_END_STREAM } else { 0 };
            self.out(from).extend(frame(DATA, flags, stream, body));
        }
    }

    /// Pushes all client bytes then all server bytes.
    fn run(
        conn: &mut Http2Conn,
        client: &[u8],
        server: &[u8],
    ) -> (Vec<Exchange>, Vec<u8>, Vec<u8>) {
        let c = conn.push(Peer::Client, client, 1).unwrap();
        let s = conn.push(Peer::Server, server, 2).unwrap();
        let mut ex = c.exchanges;
        ex.extend(s.exchanges);
        (ex, c.wire, s.wire)
    }

    fn get_request(c: &mut Conv, stream: u32, path: &str) {
        c.headers(
            Peer::Client,
            stream,
            true,
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", path),
                (":authority", "example.com"),
            ],
        );
    }

    /// A connection exercising most frame kinds, for the split tests.
    fn fixture() -> (Vec<u8>, Vec<u8>) {
        let mut c = Conv::new();
        // stream 1: POST with a padded DATA frame and a PRIORITY-flagged HEADERS
        let b = c.block(
            Peer::Client,
            &[
                (":method", "POST"),
                (":scheme", "https"),
                (":path", "/up"),
                (":authority", "a.test"),
                ("content-type", "text/plain"),
            ],
        );
        let mut p = vec![2u8, 0, 0, 0, 0, 16];
        p.extend(&b);
        p.extend([0, 0]);
        c.client.extend(frame(
            HEADERS,
            FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY,
            1,
            &p,
        ));
        c.client.extend(frame(
            DATA,
            FLAG_PADDED | FLAG_END_STREAM,
            1,
            &[3, b'h', b'i', 0, 0, 0],
        ));
        // stream 3: headers in HEADERS + 2 CONTINUATIONs
        let b = c.block(
            Peer::Client,
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/cont"),
                (":authority", "a.test"),
                ("x-long", &"v".repeat(40)),
            ],
        );
        c.client.extend(frame(HEADERS, FLAG_END_STREAM, 3, &b[..5]));
        c.client.extend(frame(CONTINUATION, 0, 3, &b[5..20]));
        c.client
            .extend(frame(CONTINUATION, FLAG_END_HEADERS, 3, &b[20..]));
        get_request(&mut c, 5, "/reset");
        c.client.extend(frame(PING, 0, 0, b"12345678"));
        c.client.extend(frame(WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]));
        c.client.extend(frame(0xfa, 0, 0, b"unknown type"));
        c.client.extend(frame(PRIORITY, 0, 3, &[0, 0, 0, 0, 7]));
        // responses: 3 first (with a 100 Continue before), then 1, 5 reset
        c.headers(Peer::Server, 3, false, &[(":status", "100")]);
        c.headers(
            Peer::Server,
            3,
            false,
            &[(":status", "200"), ("content-type", "text/html")],
        );
        c.data(Peer::Server, 3, false, b"<html>");
        c.headers(Peer::Server, 1, false, &[(":status", "201")]);
        c.data(Peer::Server, 3, true, b"</html>");
        c.server.extend(frame(RST_STREAM, 0, 5, &[0, 0, 0, 8]));
        c.headers(Peer::Server, 1, true, &[("x-trailer", "t")]);
        c.server.extend(frame(PING, FLAG_ACK, 0, b"12345678"));
        c.server
            .extend(frame(GOAWAY, 0, 0, &[0, 0, 0, 5, 0, 0, 0, 0]));
        (c.client, c.server)
    }

    #[test]
    fn full_exchange_exact() {
        let mut c = Conv::new();
        c.headers(
            Peer::Client,
            1,
            false,
            &[
                (":method", "POST"),
                (":scheme", "https"),
                (":path", "/submit"),
                (":authority", "example.com"),
                ("accept", "*/*"),
            ],
        );
        c.data(Peer::Client, 1, false, b"hel");
        c.data(Peer::Client, 1, true, b"lo");
        c.headers(
            Peer::Server,
            1,
            false,
            &[(":status", "200"), ("content-type", "text/plain")],
        );
        c.data(Peer::Server, 1, false, b"world");
        c.data(Peer::Server, 1, true, b"");
        let mut conn = Http2Conn::new(Redact::none());
        let (ex, cw, sw) = run(&mut conn, &c.client, &c.server);
        let expected = Exchange {
            protocol: Protocol::Http2,
            stream_id: Some(1),
            method: Some("POST".into()),
            path: Some("/submit".into()),
            authority: Some("example.com".into()),
            status: Some(200),
            request: Some(HttpMessage {
                ts_first_ns: 1,
                ts_last_ns: 1,
                headers: hs(&[("accept", "*/*")]),
                body: b"hello".to_vec(),
                body_len: 5,
                trailers: vec![],
                complete: true,
                headers_truncated: false,
            }),
            response: Some(HttpMessage {
                ts_first_ns: 2,
                ts_last_ns: 2,
                headers: hs(&[("content-type", "text/plain")]),
                body: b"world".to_vec(),
                body_len: 5,
                trailers: vec![],
                complete: true,
                headers_truncated: false,
            }),
            grpc: None,
        };
        assert_eq!(ex, vec![expected.clone()]);
        assert!(cw.starts_with(PREFACE));
        assert!(conn.finish().is_empty());
        // the wire form decodes to the same exchange with a fresh decoder
        let mut again = Http2Conn::new(Redact::none());
        let (ex2, cw2, sw2) = run(&mut again, &cw, &sw);
        assert_eq!(ex2, vec![expected]);
        assert_eq!((cw2, sw2), (cw, sw), "the wire form is a fixed point");
    }

    #[test]
    fn timestamps_follow_the_pushes() {
        let mut c = Conv::new();
        let start = c.client.len();
        get_request(&mut c, 1, "/t");
        c.headers(Peer::Server, 1, false, &[(":status", "200")]);
        c.data(Peer::Server, 1, true, b"x");
        let mut conn = Http2Conn::new(Redact::none());
        // the HEADERS frame is split over the pushes at 10 and 20
        assert!(conn
            .push(Peer::Client, &c.client[..start + 3], 10)
            .unwrap()
            .exchanges
            .is_empty());
        assert!(conn
            .push(Peer::Client, &c.client[start + 3..], 20)
            .unwrap()
            .exchanges
            .is_empty());
        let n = c.server.len();
        assert!(conn
            .push(Peer::Server, &c.server[..n - 1], 30)
            .unwrap()
            .exchanges
            .is_empty());
        let ex = conn
            .push(Peer::Server, &c.server[n - 1..], 40)
            .unwrap()
            .exchanges;
        let req = ex[0].request.as_ref().unwrap();
        let resp = ex[0].response.as_ref().unwrap();
        assert_eq!((req.ts_first_ns, req.ts_last_ns), (10, 20));
        assert_eq!((resp.ts_first_ns, resp.ts_last_ns), (30, 40));
        assert_eq!(ex[0].latency_ns(), Some(30));
    }

    #[test]
    fn fixture_streams() {
        let (client, server) = fixture();
        let mut conn = Http2Conn::new(Redact::none());
        let (ex, _, _) = run(&mut conn, &client, &server);
        let ids: Vec<_> = ex.iter().map(|e| e.stream_id.unwrap()).collect();
        assert_eq!(ids, [3, 5, 1], "completion order");
        // CONTINUATIONs joined, 100 skipped
        assert_eq!(ex[0].path.as_deref(), Some("/cont"));
        assert_eq!(
            ex[0].request.as_ref().unwrap().headers,
            hs(&[("x-long", &"v".repeat(40))])
        );
        assert_eq!(ex[0].status, Some(200));
        assert_eq!(ex[0].response.as_ref().unwrap().body, b"<html></html>");
        assert_eq!(
            ex[0].response.as_ref().unwrap().headers,
            hs(&[("content-type", "text/html")])
        );
        // reset before any response
        assert_eq!(ex[1].path.as_deref(), Some("/reset"));
        assert!(ex[1].request.as_ref().unwrap().complete);
        assert_eq!(ex[1].response, None);
        // padding and priority removed, trailers
        assert_eq!(ex[2].method.as_deref(), Some("POST"));
        assert_eq!(ex[2].authority.as_deref(), Some("a.test"));
        assert_eq!(ex[2].request.as_ref().unwrap().body, b"hi");
        assert_eq!(ex[2].status, Some(201));
        let resp = ex[2].response.as_ref().unwrap();
        assert!(resp.complete);
        assert!(resp.headers.is_empty());
        assert_eq!(resp.trailers, hs(&[("x-trailer", "t")]));
        assert!(conn.finish().is_empty());
    }

    #[test]
    fn hpack_dynamic_table_across_requests_rfc7541_c3() {
        let c3: [&[u8]; 3] = [
            &[
                0x82, 0x86, 0x84, 0x41, 0x0f, b'w', b'w', b'w', b'.', b'e', b'x', b'a', b'm', b'p',
                b'l', b'e', b'.', b'c', b'o', b'm',
            ],
            &[
                0x82, 0x86, 0x84, 0xbe, 0x58, 0x08, b'n', b'o', b'-', b'c', b'a', b'c', b'h', b'e',
            ],
            &[
                0x82, 0x87, 0x85, 0xbf, 0x40, 0x0a, b'c', b'u', b's', b't', b'o', b'm', b'-', b'k',
                b'e', b'y', 0x0c, b'c', b'u', b's', b't', b'o', b'm', b'-', b'v', b'a', b'l', b'u',
                b'e',
            ],
        ];
        let mut client = PREFACE.to_vec();
        for (i, b) in c3.iter().enumerate() {
            client.extend(frame(
                HEADERS,
                FLAG_END_HEADERS | FLAG_END_STREAM,
                1 + 2 * i as u32,
                b,
            ));
        }
        let mut conn = Http2Conn::new(Redact::none());
        let out = conn.push(Peer::Client, &client, 5).unwrap();
        assert!(out.exchanges.is_empty());
        let ex = conn.finish();
        assert_eq!(ex.len(), 3);
        assert_eq!(
            ex[1].request.as_ref().unwrap().headers,
            hs(&[("cache-control", "no-cache")])
        );
        let third = &ex[2];
        assert_eq!(third.stream_id, Some(5));
        assert_eq!(third.method.as_deref(), Some("GET"));
        assert_eq!(third.path.as_deref(), Some("/index.html"));
        assert_eq!(third.authority.as_deref(), Some("www.example.com"));
        assert_eq!(
            third.request.as_ref().unwrap().headers,
            hs(&[("custom-key", "custom-value")])
        );
        assert_eq!(third.response, None);
        // the wire form needs no dynamic table: each block alone decodes
        let mut again = Http2Conn::new(Redact::none());
        again.push(Peer::Client, &out.wire, 5).unwrap();
        assert_eq!(again.finish(), ex);
    }

    #[test]
    fn large_header_block_is_rewired_with_continuations() {
        let big = "b".repeat(40_000);
        let mut c = Conv::new();
        get_request(&mut c, 1, "/big");
        c.headers(
            Peer::Server,
            1,
            true,
            &[(":status", "200"), ("x-big", &big)],
        );
        let mut conn = Http2Conn::new(Redact::none());
        let (ex, _, sw) = run(&mut conn, &c.client, &c.server);
        assert_eq!(
            ex[0].response.as_ref().unwrap().header("x-big"),
            Some(big.as_bytes())
        );
        // SETTINGS, SETTINGS ack, then HEADERS + 2 CONTINUATIONs of at most 16384 bytes
        let mut pos = 18;
        let mut kinds = vec![];
        while let Some(h) = FrameHead::parse(&sw[pos..]) {
            assert!(h.len <= WIRE_MAX_PAYLOAD);
            kinds.push((h.ty, h.flags));
            pos += FRAME_HEAD + h.len;
        }
        assert_eq!(pos, sw.len());
        assert_eq!(
            kinds,
            [
                (HEADERS, FLAG_END_STREAM),
                (CONTINUATION, 0),
                (CONTINUATION, FLAG_END_HEADERS)
            ]
        );
        let mut again = Http2Conn::new(Redact::none());
        let (ex2, _, _) = run(&mut again, &c.client, &sw);
        assert_eq!(ex2, ex);
    }

    #[test]
    fn push_promise_keeps_hpack_state_and_opens_the_pushed_stream() {
        let mut c = Conv::new();
        get_request(&mut c, 1, "/");
        let pb = c.block(
            Peer::Server,
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/style.css"),
                (":authority", "example.com"),
            ],
        );
        let mut p = vec![0, 0, 0, 2];
        p.extend(pb);
        c.server
            .extend(frame(PUSH_PROMISE, FLAG_END_HEADERS, 1, &p));
        c.headers(
            Peer::Server,
            1,
            true,
            &[(":status", "200"), ("x-shared", "1")],
        );
        c.headers(
            Peer::Server,
            2,
            false,
            &[(":status", "200"), ("x-shared", "1")],
        );
        c.data(Peer::Server, 2, true, b"css");
        let mut conn = Http2Conn::new(Redact::none());
        let (ex, _, sw) = run(&mut conn, &c.client, &c.server);
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[1].stream_id, Some(2));
        assert_eq!(ex[1].path.as_deref(), Some("/style.css"));
        assert_eq!(
            ex[1].response.as_ref().unwrap().header("x-shared"),
            Some(&b"1"[..])
        );
        assert_eq!(ex[1].response.as_ref().unwrap().body, b"css");
        let mut again = Http2Conn::new(Redact::none());
        assert_eq!(run(&mut again, &c.client, &sw).0, ex);
    }

    #[test]
    fn interleaved_streams() {
        let mut c = Conv::new();
        get_request(&mut c, 1, "/one");
        get_request(&mut c, 3, "/three");
        c.headers(Peer::Server, 1, false, &[(":status", "200")]);
        c.headers(Peer::Server, 3, false, &[(":status", "404")]);
        c.data(Peer::Server, 1, false, b"a1");
        c.data(Peer::Server, 3, false, b"b1");
        c.data(Peer::Server, 1, false, b"a2");
        c.data(Peer::Server, 3, true, b"b2");
        c.data(Peer::Server, 1, true, b"a3");
        let mut conn = Http2Conn::new(Redact::none());
        let (ex, _, _) = run(&mut conn, &c.client, &c.server);
        let got: Vec<_> = ex
            .iter()
            .map(|e| {
                (
                    e.stream_id.unwrap(),
                    e.path.clone().unwrap(),
                    e.status.unwrap(),
                    e.response.as_ref().unwrap().body.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (3, "/three".into(), 404, b"b1b2".to_vec()),
                (1, "/one".into(), 200, b"a1a2a3".to_vec())
            ]
        );
    }

    #[test]
    fn rst_stream_ends_the_exchange_incomplete() {
        let mut c = Conv::new();
        get_request(&mut c, 1, "/dl");
        c.headers(Peer::Server, 1, false, &[(":status", "200")]);
        c.data(Peer::Server, 1, false, b"part");
        let mut conn = Http2Conn::new(Redact::none());
        let (ex, _, _) = run(&mut conn, &c.client, &c.server);
        assert!(ex.is_empty());
        let out = conn
            .push(Peer::Client, &frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]), 9)
            .unwrap();
        assert_eq!(out.wire, frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]));
        assert_eq!(out.exchanges.len(), 1);
        let e = &out.exchanges[0];
        assert!(e.request.as_ref().unwrap().complete);
        let resp = e.response.as_ref().unwrap();
        assert!(!resp.complete);
        assert_eq!(resp.body, b"part");
        // late frames on the closed stream are ignored
        let late = frame(DATA, FLAG_END_STREAM, 1, b"more");
        assert!(conn
            .push(Peer::Server, &late, 10)
            .unwrap()
            .exchanges
            .is_empty());
        assert!(conn.finish().is_empty());
    }

    #[test]
    fn finish_returns_open_streams_incomplete() {
        let mut c = Conv::new();
        c.headers(
            Peer::Client,
            1,
            false,
            &[(":method", "PUT"), (":path", "/x"), ("host", "h.test")],
        );
        c.data(Peer::Client, 1, false, b"abc");
        let mut conn = Http2Conn::new(Redact::none());
        conn.push(Peer::Client, &c.client, 1).unwrap();
        let ex = conn.finish();
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].authority.as_deref(), Some("h.test"), "Host fallback");
        assert!(!ex[0].request.as_ref().unwrap().complete);
        assert_eq!(ex[0].request.as_ref().unwrap().body, b"abc");
        // finished: later pushes are ignored
        let more = frame(DATA, FLAG_END_STREAM, 1, b"d");
        assert!(conn.push(Peer::Client, &more, 2).unwrap().wire.is_empty());
    }

    fn grpc_call(c: &mut Conv, stream: u32) {
        c.headers(
            Peer::Client,
            stream,
            false,
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/helloworld.Greeter/SayHello"),
                (":authority", "g:50051"),
                ("content-type", "application/grpc+proto"),
                ("te", "trailers"),
            ],
        );
        c.data(
            Peer::Client,
            stream,
            true,
            &[0, 0, 0, 0, 2, 10, 0, 0, 0, 0, 0, 0],
        );
    }

    #[test]
    fn grpc_with_trailers_and_trailers_only() {
        let mut c = Conv::new();
        grpc_call(&mut c, 1);
        grpc_call(&mut c, 3);
        grpc_call(&mut c, 5);
        c.headers(
            Peer::Server,
            1,
            false,
            &[(":status", "200"), ("content-type", "application/grpc")],
        );
        c.data(Peer::Server, 1, false, &[0, 0, 0, 0, 3, 1, 2, 3]);
        c.headers(Peer::Server, 1, true, &[("grpc-status", "0")]);
        c.headers(
            Peer::Server,
            3,
            false,
            &[(":status", "200"), ("content-type", "application/grpc")],
        );
        c.headers(
            Peer::Server,
            3,
            true,
            &[("grpc-status", "5"), ("grpc-message", "no%20such%20user")],
        );
        c.headers(
            Peer::Server,
            5,
            true,
            &[
                (":status", "200"),
                ("content-type", "application/grpc"),
                ("grpc-status", "14"),
                ("grpc-message", "unavailable"),
            ],
        );
        let mut conn = Http2Conn::new(Redact::none());
        let (ex, _, _) = run(&mut conn, &c.client, &c.server);
        let g: Vec<_> = ex.iter().map(|e| e.grpc.clone().unwrap()).collect();
        let mk = |status, message: Option<&str>, resp| Grpc {
            service: "helloworld.Greeter".into(),
            method: "SayHello".into(),
            status: Some(status),
            message: message.map(str::to_string),
            request_messages: 2,
            response_messages: resp,
        };
        assert_eq!(
            g,
            vec![
                mk(0, None, 1),
                mk(5, Some("no such user"), 0),
                mk(14, Some("unavailable"), 0)
            ]
        );
        assert_eq!(
            ex[0].response.as_ref().unwrap().trailers,
            hs(&[("grpc-status", "0")])
        );
        assert!(ex.iter().all(|e| e.response.as_ref().unwrap().complete));
    }

    #[test]
    fn redaction_in_exchanges_and_in_the_wire() {
        let mut c = Conv::new();
        c.headers(
            Peer::Client,
            1,
            true,
            &[
                (":method", "GET"),
                (":path", "/me"),
                (":authority", "x"),
                ("authorization", "Bearer s3cret"),
                ("cookie", "sid=1"),
                ("accept", "*/*"),
            ],
        );
        c.headers(
            Peer::Server,
            1,
            true,
            &[(":status", "200"), ("set-cookie", "sid=2"), ("server", "t")],
        );
        let mut conn = Http2Conn::new(Redact::new(&[]));
        let (ex, cw, sw) = run(&mut conn, &c.client, &c.server);
        let req = ex[0].request.as_ref().unwrap();
        assert_eq!(req.header("authorization"), Some(REDACTED));
        assert_eq!(req.header("cookie"), Some(REDACTED));
        assert_eq!(req.header("accept"), Some(&b"*/*"[..]));
        assert_eq!(
            ex[0].response.as_ref().unwrap().header("set-cookie"),
            Some(REDACTED)
        );
        for secret in [&b"s3cret"[..], b"sid=1", b"sid=2"] {
            assert!(!cw.windows(secret.len()).any(|w| w == secret));
            assert!(!sw.windows(secret.len()).any(|w| w == secret));
        }
        let mut again = Http2Conn::new(Redact::none());
        let (ex2, _, _) = run(&mut again, &cw, &sw);
        let req2 = ex2[0].request.as_ref().unwrap();
        assert_eq!(req2.header("authorization"), Some(REDACTED));
        assert_eq!(req2.header("cookie"), Some(REDACTED));
        assert_eq!(
            ex2[0].response.as_ref().unwrap().header("set-cookie"),
            Some(REDACTED)
        );
        assert_eq!(ex2, ex);
    }

    #[test]
    fn literal_block_decodes_back_with_fluke_hpack() {
        let list: Headers = vec![
            (":method".into(), b"GET".to_vec()),
            ("a".repeat(200), vec![0xff, 0, 1]),
            ("x-empty".into(), vec![]),
            ("x-126".into(), vec![b'v'; 126]),
            ("x-127".into(), vec![b'v'; 127]),
            ("x-big".into(), vec![b'z'; 70_000]),
        ];
        let block = encode_literal_block(&list, &[false, true]);
        // without indexing, then never indexed (RFC 7541 6.2.2, 6.2.3)
        assert_eq!(
            &block[..9],
            &[0x00, 7, b':', b'm', b'e', b't', b'h', b'o', b'd']
        );
        // 200 = 127 + 73 (RFC 7541 5.1)
        assert_eq!(&block[13..16], &[0x10, 0x7f, 73]);
        assert_eq!(
            check_block(&block).unwrap().never,
            [false, true, false, false, false, false]
        );
        let decoded = Decoder::new().decode(&block).unwrap();
        let want: Vec<(Vec<u8>, Vec<u8>)> = list
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.clone()))
            .collect();
        assert_eq!(decoded, want);
        let mut d = Decoder::new();
        d.decode(&block).unwrap();
        assert_eq!(
            d.decode(&[0xbe]),
            Err(fluke_hpack::decoder::DecoderError::HeaderIndexOutOfBounds),
            "nothing indexed"
        );
    }

    #[test]
    fn preface_checks() {
        assert!(maybe_preface(b""));
        assert!(maybe_preface(b"PRI * HT"));
        assert!(maybe_preface(PREFACE));
        assert!(maybe_preface(&[PREFACE, b"\0\0\0\x04"].concat()));
        assert!(!maybe_preface(b"GET / HTTP/1.1\r\n"));
        assert!(!maybe_preface(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"));
        let mut conn = Http2Conn::new(Redact::none());
        assert!(conn
            .push(Peer::Client, b"PRI * ", 1)
            .unwrap()
            .wire
            .is_empty());
        assert_eq!(
            conn.push(Peer::Client, &PREFACE[6..], 2).unwrap().wire,
            PREFACE
        );
        let mut conn = Http2Conn::new(Redact::none());
        assert_eq!(
            conn.push(Peer::Client, b"GET / HTTP/1.1\r\n", 1)
                .unwrap_err(),
            Http2Error::BadPreface
        );
        assert!(
            conn.push(Peer::Client, PREFACE, 2).unwrap().wire.is_empty(),
            "stays failed"
        );
    }

    #[test]
    fn corrupt_frames_are_errors() {
        let with = |server: Vec<u8>| {
            let mut conn = Http2Conn::new(Redact::none());
            conn.push(Peer::Client, PREFACE, 1).unwrap();
            conn.push(Peer::Server, &server, 2)
        };
        // a truncated dynamic table size update makes fluke-hpack panic: refused before
        for bad in [
            &[0x3f][..],
            &[0x3f, 0xff, 0xff, 0xff, 0xff, 0xff],
            &[0xff],
            &[0x40, 0x05, b'a'],
            &[0x20],
        ] {
            let r = with(frame(HEADERS, FLAG_END_HEADERS, 1, bad));
            assert!(
                matches!(r, Err(Http2Error::Hpack { stream: 1, .. })),
                "{bad:?}: {r:?}"
            );
        }
        assert!(with(frame(HEADERS, FLAG_END_HEADERS, 1, &[0xbe]))
            .unwrap_err()
            .to_string()
            .contains("HeaderIndexOutOfBounds"));
        // absurd lengths: a header block is refused at once; DATA waits (bounded by 24 bits)
        assert_eq!(
            with(vec![0xff, 0xff, 0xff, HEADERS, 0, 0, 0, 0, 1]).unwrap_err(),
            Http2Error::HeaderBlockTooLarge(1)
        );
        assert!(with(vec![0xff, 0xff, 0xff, DATA, 0, 0, 0, 0, 1, 1, 2, 3])
            .unwrap()
            .wire
            .is_empty());
        assert!(matches!(
            with(frame(DATA, 0, 0, b"x")),
            Err(Http2Error::Protocol(_))
        ));
        assert!(matches!(
            with(frame(PING, 0, 0, b"short")),
            Err(Http2Error::Protocol(_))
        ));
        assert!(matches!(
            with(frame(SETTINGS, 0, 0, &[0; 5])),
            Err(Http2Error::Protocol(_))
        ));
        assert!(matches!(
            with(frame(DATA, FLAG_PADDED, 1, &[9, 1])),
            Err(Http2Error::Protocol(_))
        ));
        assert!(matches!(
            with(frame(CONTINUATION, FLAG_END_HEADERS, 1, &[0x82])),
            Err(Http2Error::Protocol(_))
        ));
        let mut interrupted = frame(HEADERS, 0, 1, &[0x88]);
        interrupted.extend(frame(DATA, 0, 1, b"x"));
        assert!(matches!(with(interrupted), Err(Http2Error::Protocol(_))));
        // an HPACK bomb: one 4000-byte entry referenced 2000 times
        let mut bomb = vec![0x40, 0x01, b'x'];
        encode_integer(&mut bomb, 4000, 7, 0);
        assert_eq!(bomb[3..], [0x7f, 0xa1, 0x1e]);
        bomb.extend(vec![b'v'; 4000]);
        bomb.extend(vec![0xbe; 2000]);
        assert_eq!(
            with(frame(HEADERS, FLAG_END_HEADERS, 1, &bomb)).unwrap_err(),
            Http2Error::HeaderListTooLarge(1)
        );
        // truncated frames: nothing yet, nothing at the end
        let mut c = Conv::new();
        get_request(&mut c, 1, "/");
        let mut conn = Http2Conn::new(Redact::none());
        conn.push(Peer::Client, &c.client[..c.client.len() - 2], 1)
            .unwrap();
        assert!(conn.finish().is_empty());
    }

    /// A request whose fields add up to 70 000 bytes keeps exactly
    /// `MAX_HEADER_BYTES` of names and values (pseudo-header fields
    /// included), the crossing field cut; a notice says what was cut, and
    /// the wire form holds the cut list.
    #[test]
    fn header_list_is_cut_at_64_kib_exactly() {
        let mut c = Conv::new();
        let values: Vec<(String, String)> = (0..70)
            .map(|i| (format!("x-{i:02}"), "v".repeat(996)))
            .collect();
        let mut list: Vec<(&str, &str)> = vec![
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
            (":authority", "example.com"),
        ];
        list.extend(values.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        c.headers(Peer::Client, 1, true, &list);
        c.headers(Peer::Server, 1, true, &[(":status", "204")]);
        let mut conn = Http2Conn::new(Redact::none());
        let (ex, cw, sw) = run(&mut conn, &c.client, &c.server);
        let req = ex[0].request.as_ref().unwrap();
        let pseudo = 10 + 12 + 6 + 21;
        assert_eq!(
            super::super::header_bytes(&req.headers) + pseudo,
            MAX_HEADER_BYTES
        );
        // 65 whole fields of 1000 bytes, then 536 - 49 of the next: 4 of name, 483 of value
        assert_eq!(req.headers.len(), 66);
        assert_eq!(req.headers[65], ("x-65".to_string(), vec![b'v'; 483]));
        assert!(req.headers_truncated);
        assert!(!ex[0].response.as_ref().unwrap().headers_truncated);
        assert_eq!(ex[0].path.as_deref(), Some("/"));
        assert_eq!(
            conn.take_notices(),
            [
                "HTTP/2 stream 1 request headers cut: 70 of 74 fields, 65536 of 70049 name and \
              value bytes kept (limits per message: 65536 bytes, 256 fields, 64 trailers)"
            ]
        );
        let mut again = Http2Conn::new(Redact::none());
        let mut cut = ex.clone();
        // The wire form holds what was kept: nothing more is cut from it.
        cut[0].request.as_mut().unwrap().headers_truncated = false;
        assert!(
            run(&mut again, &cw, &sw).0 == cut,
            "the wire form decodes the same"
        );
        assert!(
            again.take_notices().is_empty(),
            "the wire form is within the limits"
        );
    }

    /// Trailers: at most `MAX_TRAILERS` per message, however many blocks
    /// bring them.
    #[test]
    fn trailers_are_capped() {
        let mut c = Conv::new();
        c.headers(
            Peer::Client,
            1,
            false,
            &[(":method", "POST"), (":path", "/t"), (":scheme", "https")],
        );
        let names: Vec<String> = (0..100).map(|i| format!("t{i:02}")).collect();
        // 10 blocks of 10 trailers on the open request, the last one ending it
        for k in 0..10 {
            let list: Vec<(&str, &str)> = names[k * 10..k * 10 + 10]
                .iter()
                .map(|n| (n.as_str(), "v"))
                .collect();
            c.headers(Peer::Client, 1, k == 9, &list);
        }
        c.headers(Peer::Server, 1, true, &[(":status", "200")]);
        let mut conn = Http2Conn::new(Redact::none());
        let (ex, _, _) = run(&mut conn, &c.client, &c.server);
        let req = ex[0].request.as_ref().unwrap();
        assert!(req.complete);
        assert_eq!(req.trailers.len(), MAX_TRAILERS);
        assert_eq!(req.trailers[63], ("t63".to_string(), b"v".to_vec()));
        let notices = conn.take_notices();
        assert_eq!(notices.len(), 4, "{notices:#?}");
        assert!(notices[0].starts_with("HTTP/2 stream 1 request trailers cut: 4 of 10 fields"));
    }

    /// The flood of the "Hostile host" issue: one 3.9 KB dynamic table
    /// entry referenced from every header block. 1000 references decode to
    /// more than `MAX_HEADER_LIST`: an error (the connection goes raw).
    /// 250 references are decoded and cut at `MAX_HEADER_BYTES`; past
    /// `MAX_STREAMS` open streams, the lowest are closed.
    #[test]
    fn hpack_flood_is_bounded() {
        let flood = |refs: usize, messages: u32| {
            let mut client = PREFACE.to_vec();
            let mut literal = vec![0x40, 0x07];
            literal.extend(b"x-flood");
            encode_integer(&mut literal, 3900, 7, 0);
            literal.extend(vec![b'v'; 3900]);
            for i in 0..messages {
                let mut block = vec![0x82, 0x87, 0x84];
                if i == 0 {
                    block.extend(&literal);
                }
                block.extend(vec![0xbe; refs]);
                client.extend(frame(
                    HEADERS,
                    FLAG_END_HEADERS | FLAG_END_STREAM,
                    2 * i + 1,
                    &block,
                ));
            }
            client
        };
        let mut conn = Http2Conn::new(Redact::none());
        assert_eq!(
            conn.push(Peer::Client, &flood(1000, 400), 1).unwrap_err(),
            Http2Error::HeaderListTooLarge(1)
        );
        let mut conn = Http2Conn::new(Redact::none());
        let bytes = flood(250, 400);
        let o = conn.push(Peer::Client, &bytes, 1).unwrap();
        assert_eq!(o.exchanges.len(), 400 - MAX_STREAMS);
        assert!(o.exchanges.iter().all(|e| e.response.is_none()));
        let memory = conn.memory();
        assert!(memory < MAX_STREAMS * (MAX_HEADER_BYTES + 1024), "{memory}");
        let kept: Vec<usize> = o
            .exchanges
            .iter()
            .map(|e| super::super::header_bytes(&e.request.as_ref().unwrap().headers))
            .collect();
        // :method GET, :scheme https, :path / = 28 bytes, the rest x-flood
        assert!(kept.iter().all(|&k| k == MAX_HEADER_BYTES - 28), "{kept:?}");
        let notices = conn.take_notices();
        assert_eq!(notices.len(), CUT_NOTICES as usize + 1, "{notices:#?}");
        assert_eq!(
            notices[CUT_NOTICES as usize],
            "HTTP/2: more than 256 streams open at once: the lowest open stream (1) is closed \
             (shown incomplete) for each new one"
        );
        assert_eq!(conn.finish().len(), MAX_STREAMS);
        assert_eq!(
            conn.take_notices(),
            [
                "HTTP/2: 144 streams were closed early (shown incomplete): more than 256 were open at once",
                "HTTP/2: 392 more header blocks were cut (limits per message: 65536 bytes, 256 fields, 64 trailers)",
            ]
        );
        let output: usize = kept.len() * MAX_HEADER_BYTES + MAX_STREAMS * MAX_HEADER_BYTES;
        assert!(output < 26 << 20, "400 messages, at most 64 KiB each");
        assert!(bytes.len() < 110_000);
    }

    /// New streams past `MAX_STREAMS` close the lowest open one.
    #[test]
    fn streams_over_the_limit_close_the_lowest() {
        let mut c = Conv::new();
        for i in 0..300 {
            get_request(&mut c, 2 * i + 1, &format!("/{i}"));
        }
        let mut conn = Http2Conn::new(Redact::none());
        let o = conn.push(Peer::Client, &c.client, 1).unwrap();
        let closed: Vec<_> = o.exchanges.iter().map(|e| e.stream_id.unwrap()).collect();
        assert_eq!(closed, (0..44).map(|i| 2 * i + 1).collect::<Vec<u32>>());
        assert_eq!(conn.take_notices().len(), 1);
        // the server answers an early stream (closed: ignored) and a late one
        c.headers(Peer::Server, 1, true, &[(":status", "200")]);
        c.headers(Peer::Server, 599, true, &[(":status", "201")]);
        let o = conn.push(Peer::Server, &c.server, 2).unwrap();
        assert_eq!(o.exchanges.len(), 1);
        assert_eq!(o.exchanges[0].stream_id, Some(599));
        assert_eq!(o.exchanges[0].status, Some(201));
        assert_eq!(conn.finish().len(), MAX_STREAMS - 1);
        assert_eq!(conn.take_notices().len(), 1);
    }

    /// Never-indexed literals (RFC 7541 6.2.3) are redacted whatever their
    /// name, in the exchange and in the wire form (which marks them
    /// never-indexed again); pseudo-header fields are not; `--no-redact`
    /// keeps them.
    #[test]
    fn never_indexed_fields_are_redacted() {
        let mut block = vec![0x82, 0x87]; // :method GET, :scheme https
        block.extend([0x14, 0x05]); // never indexed, name :path (static 4)
        block.extend(b"/k?t1");
        block.extend([0x10, 0x07]); // never indexed, new name
        block.extend(b"x-token");
        block.extend([0x03]);
        block.extend(b"abc");
        block.extend([0x00, 0x01, b'a', 0x01, b'b']); // without indexing: kept
        let mut client = PREFACE.to_vec();
        client.extend(frame(
            HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            1,
            &block,
        ));
        let server = frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, &[0x88]);
        let mut conn = Http2Conn::new(Redact::new(&[]));
        let (ex, cw, sw) = run(&mut conn, &client, &server);
        let req = ex[0].request.as_ref().unwrap();
        assert_eq!(ex[0].path.as_deref(), Some("/k?t1"));
        assert_eq!(req.headers, hs(&[("x-token", "[redacted]"), ("a", "b")]));
        let mut wire_block = vec![0x00, 7];
        // the pseudo-header field stays never-indexed (not redacted)
        wire_block.extend(b":method\x03GET\x00\x07:scheme\x05https\x10\x05:path\x05/k?t1");
        wire_block.extend(b"\x10\x07x-token\x0a[redacted]\x00\x01a\x01b");
        let mut want = PREFACE.to_vec();
        want.extend(frame(
            HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            1,
            &wire_block,
        ));
        assert_eq!(cw, want);
        let mut again = Http2Conn::new(Redact::new(&[]));
        assert_eq!(run(&mut again, &cw, &sw).0, ex);
        let mut plain = Http2Conn::new(Redact::none());
        let (ex, _, _) = run(&mut plain, &client, &server);
        assert_eq!(
            ex[0].request.as_ref().unwrap().headers,
            hs(&[("x-token", "abc"), ("a", "b")])
        );
    }

    /// Bodies kept across open streams stop at `CONN_BODY_KEEP`.
    #[test]
    fn connection_body_keep_is_bounded() {
        let mut c = Conv::new();
        let body = vec![b'b'; 16384];
        for id in [1, 3, 5] {
            c.headers(
                Peer::Client,
                id,
                false,
                &[(":method", "POST"), (":path", "/"), (":scheme", "https")],
            );
            for _ in 0..64 {
                c.data(Peer::Client, id, false, &body);
            }
        }
        let mut conn = Http2Conn::new(Redact::none());
        conn.push(Peer::Client, &c.client, 1).unwrap();
        let ex = conn.finish();
        let kept: Vec<_> = ex
            .iter()
            .map(|e| {
                let r = e.request.as_ref().unwrap();
                (r.body.len(), r.body_len)
            })
            .collect();
        let n = MAX_BODY_KEEP as u64;
        assert_eq!(kept, [(MAX_BODY_KEEP, n), (MAX_BODY_KEEP, n), (0, n)]);
    }

    #[test]
    fn exchanges_before_an_error_are_kept_for_finish() {
        let mut c = Conv::new();
        get_request(&mut c, 1, "/ok");
        c.headers(Peer::Server, 1, true, &[(":status", "204")]);
        c.server
            .extend(frame(HEADERS, FLAG_END_HEADERS, 1, &[0x3f]));
        let mut conn = Http2Conn::new(Redact::none());
        conn.push(Peer::Client, &c.client, 1).unwrap();
        assert!(conn.push(Peer::Server, &c.server, 2).is_err());
        assert!(conn
            .push(Peer::Server, b"anything", 3)
            .unwrap()
            .exchanges
            .is_empty());
        let ex = conn.finish();
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].status, Some(204));
    }

    /// Cuts `data` at the given points (any order, any value).
    fn cut<'a>(data: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
        let mut p: Vec<usize> = points.iter().map(|&x| x % (data.len() + 1)).collect();
        p.push(0);
        p.push(data.len());
        p.sort_unstable();
        p.windows(2).map(|w| &data[w[0]..w[1]]).collect()
    }

    #[test]
    fn every_single_split_point() {
        let (client, server) = fixture();
        let whole = run(&mut Http2Conn::new(Redact::new(&[])), &client, &server);
        for i in 0..=client.len().max(server.len()) {
            let mut conn = Http2Conn::new(Redact::new(&[]));
            let (mut ex, mut cw, mut sw) = (vec![], vec![], vec![]);
            for part in cut(&client, &[i]) {
                let o = conn.push(Peer::Client, part, 1).unwrap();
                ex.extend(o.exchanges);
                cw.extend(o.wire);
            }
            for part in cut(&server, &[i]) {
                let o = conn.push(Peer::Server, part, 2).unwrap();
                ex.extend(o.exchanges);
                sw.extend(o.wire);
            }
            assert_eq!(
                (&ex, &cw, &sw),
                (&whole.0, &whole.1, &whole.2),
                "split at {i}"
            );
        }
    }

    proptest! {
        /// Any split points give the same exchanges and the same wire bytes.
        #[test]
        fn any_splits_give_the_same_result(
            cp in proptest::collection::vec(any::<usize>(), 0..12),
            sp in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let (client, server) = fixture();
            let whole = run(&mut Http2Conn::new(Redact::new(&[])), &client, &server);
            let mut conn = Http2Conn::new(Redact::new(&[]));
            let (mut ex, mut cw, mut sw) = (vec![], vec![], vec![]);
            for part in cut(&client, &cp) {
                let o = conn.push(Peer::Client, part, 1).unwrap();
                ex.extend(o.exchanges);
                cw.extend(o.wire);
            }
            for part in cut(&server, &sp) {
                let o = conn.push(Peer::Server, part, 2).unwrap();
                ex.extend(o.exchanges);
                sw.extend(o.wire);
            }
            prop_assert_eq!(ex, whole.0);
            prop_assert_eq!(cw, whole.1);
            prop_assert_eq!(sw, whole.2);
            prop_assert!(conn.finish().is_empty());
        }

        /// Random bytes after the preface: an error or some output, never a panic.
        #[test]
        fn random_bytes_never_panic(
            client in proptest::collection::vec(any::<u8>(), 0..600),
            server in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut conn = Http2Conn::new(Redact::new(&[]));
            let _ = conn.push(Peer::Client, &[PREFACE, &client].concat(), 1);
            let _ = conn.push(Peer::Server, &server, 2);
            let _ = conn.push(Peer::Client, &client, 3);
            let _ = conn.finish();
        }

        /// Frame-shaped garbage (valid heads, random payloads) reaches the
        /// HPACK decoder and the stream logic: never a panic.
        #[test]
        fn random_frames_never_panic(
            frames in proptest::collection::vec((0u8..11, any::<u8>(), 0u32..8, proptest::collection::vec(any::<u8>(), 0..40)), 0..20),
        ) {
            let mut conn = Http2Conn::new(Redact::new(&[]));
            let mut bytes = PREFACE.to_vec();
            for (ty, flags, stream, payload) in &frames {
                bytes.extend(frame(*ty, *flags, *stream, payload));
            }
            let _ = conn.push(Peer::Client, &bytes, 1);
            let _ = conn.push(Peer::Server, &bytes[PREFACE.len()..], 2);
            let _ = conn.finish();
        }
    }
}
