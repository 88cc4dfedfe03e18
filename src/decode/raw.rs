//! Redaction of bytes shown as captured (raw chunks, `--raw` records, the
//! pcapng bytes of HTTP/1 and of streams that are not decoded): the values
//! of sensitive header fields are overwritten in place, so the length and
//! everything around them stay as they were.
//!
//! A [`RawRedactor`] follows one direction of a connection across calls. It
//! picks its reading from the first bytes, as the decoder does:
//!
//! - HTTP/2 (the client preface, or a server's first SETTINGS frame):
//!   frames are followed; in header blocks (HEADERS, PUSH_PROMISE,
//!   CONTINUATION) the HPACK representations are walked and the value of a
//!   literal field is masked when its name is sensitive (a literal name,
//!   plain or Huffman-coded, or a static table name) or when it is a
//!   never-indexed literal (RFC 7541 6.2.3: the sender marked it
//!   sensitive). Plain octets become `*`; Huffman-coded octets become
//!   `0xf9`, the 8-bit code of `*`, so the block still decodes (to `*`s);
//! - anything else is read as text lines: in a line `Name: value` with a
//!   sensitive name, the value (up to the line end, obsolete folded
//!   continuation lines included) becomes `*`s. That covers HTTP/1 heads and
//!   trailers wherever a call cuts them.
//!
//! Bytes that were lost break the reading: after a gap, text starts at a
//! line (a value being masked stays masked to its line end) and HTTP/2
//! assumes the next call starts a frame (what writers do), with the HPACK
//! walk off until the next header block starts.
//!
//! Names whose value is masked: those of [`Redact`]; with `--no-redact`
//! nothing is masked.

use std::borrow::Cow;

use super::http2::PREFACE;
use super::Redact;

/// HPACK static table names (RFC 7541 Appendix A), index 1 first.
const STATIC_NAMES: [&str; 61] = [
    ":authority",
    ":method",
    ":method",
    ":path",
    ":path",
    ":scheme",
    ":scheme",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "accept",
    "access-control-allow-origin",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-range",
    "content-type",
    "cookie",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "link",
    "location",
    "max-forwards",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "refresh",
    "retry-after",
    "server",
    "set-cookie",
    "strict-transport-security",
    "transfer-encoding",
    "user-agent",
    "vary",
    "via",
    "www-authenticate",
];

/// The Huffman code of `*` (RFC 7541 Appendix B: 8 bits, `11111001`).
const HUFFMAN_STAR: u8 = 0xf9;

const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// The name of static table entry `index` (1-based), if it is one.
pub(super) fn static_name(index: u64) -> Option<&'static str> {
    STATIC_NAMES
        .get(usize::try_from(index).ok()?.checked_sub(1)?)
        .copied()
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Copy-on-write output of one chunk.
struct Out<'a> {
    data: &'a [u8],
    owned: Option<Vec<u8>>,
}

impl<'a> Out<'a> {
    fn new(data: &'a [u8]) -> Out<'a> {
        Out { data, owned: None }
    }
    fn set(&mut self, i: usize, b: u8) {
        if self.data[i] == b && self.owned.is_none() {
            return;
        }
        self.owned.get_or_insert_with(|| self.data.to_vec())[i] = b;
    }
    fn done(self) -> Cow<'a, [u8]> {
        match self.owned {
            Some(v) => Cow::Owned(v),
            None => Cow::Borrowed(self.data),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At the first byte of a line.
    Start,
    /// In a header name (collected in `name`).
    Name,
    /// After the colon of a sensitive name, before the value.
    Ows,
    /// In a sensitive value.
    Mask,
    /// Anywhere else in a line.
    Skip,
}

#[derive(Debug, Clone)]
struct Text {
    state: Line,
    name: Vec<u8>,
    /// The last header line was masked (a folded continuation line is too).
    last_masked: bool,
}

impl Text {
    fn new() -> Text {
        Text {
            state: Line::Start,
            name: Vec::new(),
            last_masked: false,
        }
    }

    fn gap(&mut self) {
        self.state = match self.state {
            Line::Mask | Line::Ows => Line::Mask,
            _ => Line::Start,
        };
        self.last_masked = false;
    }

    fn run(&mut self, r: &Redact, out: &mut Out<'_>) {
        let data = out.data;
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            match self.state {
                Line::Skip => {
                    match memchr::memchr(b'\n', &data[i..]) {
                        Some(k) => {
                            i += k + 1;
                            self.state = Line::Start;
                        }
                        None => i = data.len(),
                    }
                    continue;
                }
                Line::Start => {
                    if b == b'\n' {
                        self.last_masked = false;
                    } else if (b == b' ' || b == b'\t') && self.last_masked {
                        self.state = Line::Ows;
                    } else if is_tchar(b) {
                        self.last_masked = false;
                        self.name.clear();
                        self.name.push(b);
                        self.state = Line::Name;
                    } else {
                        self.last_masked = false;
                        self.state = Line::Skip;
                    }
                }
                Line::Name => {
                    if b == b':' {
                        if r.applies_bytes(&self.name) {
                            self.state = Line::Ows;
                            self.last_masked = true;
                        } else {
                            self.state = Line::Skip;
                        }
                    } else if b == b'\n' {
                        self.state = Line::Start;
                    } else if is_tchar(b) && self.name.len() < r.max_name_len() {
                        self.name.push(b);
                    } else {
                        self.state = Line::Skip;
                    }
                }
                Line::Ows | Line::Mask => match b {
                    b'\n' => self.state = Line::Start,
                    b'\r' => {}
                    b' ' | b'\t' if self.state == Line::Ows => {}
                    _ => {
                        self.state = Line::Mask;
                        out.set(i, b'*');
                    }
                },
            }
            i += 1;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// The first octet of a representation.
    Start,
    /// Continuation octets of a representation's integer.
    Index { kind: Kind, value: u64, shift: u32 },
    /// A string's length: its first octet (`first`) or continuation.
    Len {
        value: bool,
        mask: bool,
        first: bool,
        huffman: bool,
        len: u64,
        shift: u32,
    },
    /// A string's octets.
    Str {
        value: bool,
        mask: bool,
        huffman: bool,
        left: u64,
    },
    /// Lost track (malformed block, or joined mid-block): nothing until the
    /// next block.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Indexed,
    Literal { never: bool },
    SizeUpdate,
}

/// The HPACK representations of one header block, octet by octet.
#[derive(Debug, Clone)]
struct Hpack {
    state: Field,
    /// A literal name's octets (as sent: maybe Huffman-coded), up to a bound.
    name: Vec<u8>,
    never: bool,
}

impl Hpack {
    fn new() -> Hpack {
        Hpack {
            state: Field::Start,
            name: Vec::new(),
            never: false,
        }
    }

    /// The name is known: its value string follows.
    fn value(&mut self, sensitive: bool) {
        self.state = Field::Len {
            value: true,
            mask: sensitive || self.never,
            first: true,
            huffman: false,
            len: 0,
            shift: 0,
        };
    }

    /// The integer of a representation is complete.
    fn indexed(&mut self, r: &Redact, kind: Kind, index: u64) {
        match kind {
            Kind::Indexed | Kind::SizeUpdate => self.state = Field::Start,
            Kind::Literal { never } => {
                self.never = never;
                if index == 0 {
                    self.name.clear();
                    self.state = Field::Len {
                        value: false,
                        mask: false,
                        first: true,
                        huffman: false,
                        len: 0,
                        shift: 0,
                    };
                } else {
                    // A dynamic table name is not known here.
                    let sensitive = static_name(index).is_some_and(|n| r.applies(n));
                    self.value(sensitive);
                }
            }
        }
    }

    /// A string is complete.
    fn string_done(&mut self, r: &Redact, value: bool, huffman: bool) {
        if value {
            self.state = Field::Start;
            return;
        }
        let sensitive = if huffman {
            fluke_hpack::huffman::HuffmanDecoder::new()
                .decode(&self.name)
                .is_ok_and(|n| r.applies_bytes(&n))
        } else {
            r.applies_bytes(&self.name)
        };
        self.value(sensitive);
    }

    fn byte(&mut self, r: &Redact, b: u8) -> Option<u8> {
        match self.state {
            Field::Off => {}
            Field::Start => {
                let (kind, prefix) = if b & 0x80 != 0 {
                    (Kind::Indexed, 7)
                } else if b & 0x40 != 0 {
                    (Kind::Literal { never: false }, 6)
                } else if b & 0x20 != 0 {
                    (Kind::SizeUpdate, 5)
                } else {
                    (
                        Kind::Literal {
                            never: b & 0x10 != 0,
                        },
                        4,
                    )
                };
                let max = (1u64 << prefix) - 1;
                let v = u64::from(b) & max;
                if v < max {
                    self.indexed(r, kind, v);
                } else {
                    self.state = Field::Index {
                        kind,
                        value: v,
                        shift: 0,
                    };
                }
            }
            Field::Index { kind, value, shift } => {
                let Some(value) = continue_int(value, shift, b) else {
                    self.state = Field::Off;
                    return None;
                };
                if b & 0x80 == 0 {
                    self.indexed(r, kind, value);
                } else {
                    self.state = Field::Index {
                        kind,
                        value,
                        shift: shift + 7,
                    };
                }
            }
            Field::Len {
                value,
                mask,
                first,
                huffman,
                len,
                shift,
            } => {
                let (huffman, len, more) = if first {
                    let l = u64::from(b & 0x7f);
                    (b & 0x80 != 0, l, l == 0x7f)
                } else {
                    let Some(l) = continue_int(len, shift, b) else {
                        self.state = Field::Off;
                        return None;
                    };
                    (huffman, l, b & 0x80 != 0)
                };
                if more {
                    self.state = Field::Len {
                        value,
                        mask,
                        first: false,
                        huffman,
                        len,
                        shift: if first { 0 } else { shift + 7 },
                    };
                } else if len == 0 {
                    self.string_done(r, value, huffman);
                } else {
                    self.state = Field::Str {
                        value,
                        mask,
                        huffman,
                        left: len,
                    };
                }
            }
            Field::Str {
                value,
                mask,
                huffman,
                left,
            } => {
                // Huffman codes of some token characters are longer than 8
                // bits: room for a coded name up to 4 times the longest.
                if !value && self.name.len() < 4 * r.max_name_len() + 8 {
                    self.name.push(b);
                }
                if left == 1 {
                    self.string_done(r, value, huffman);
                } else {
                    self.state = Field::Str {
                        value,
                        mask,
                        huffman,
                        left: left - 1,
                    };
                }
                if mask {
                    return Some(if huffman { HUFFMAN_STAR } else { b'*' });
                }
            }
        }
        None
    }
}

/// One continuation octet of an HPACK integer (RFC 7541 5.1); None when it
/// is too large to be real.
fn continue_int(value: u64, shift: u32, b: u8) -> Option<u64> {
    if shift > 28 {
        return None;
    }
    Some(value + (u64::from(b & 0x7f) << shift))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Collecting the 9 octets of a frame header.
    Head,
    /// The pad length octet of a PADDED header frame.
    PadLen,
    /// Octets before the block (priority, promised stream id).
    Pre,
    /// Header block octets.
    Block,
    /// Octets to skip (padding, other frames' payloads).
    Tail,
}

#[derive(Debug, Clone)]
struct H2 {
    /// Client preface octets still to pass.
    preface: usize,
    part: Part,
    head: [u8; 9],
    head_len: usize,
    /// Octets left in the current part.
    left: usize,
    ty: u8,
    flags: u8,
    /// Header frames: octets of the payload after the pad length octet, and
    /// of padding.
    avail: usize,
    pad: usize,
    hpack: Hpack,
}

impl H2 {
    fn new(preface: usize) -> H2 {
        H2 {
            preface,
            part: Part::Head,
            head: [0; 9],
            head_len: 0,
            left: 0,
            ty: 0,
            flags: 0,
            avail: 0,
            pad: 0,
            hpack: Hpack::new(),
        }
    }

    /// After lost bytes: the next octet starts a frame; the block walk
    /// waits for the next HEADERS or PUSH_PROMISE.
    fn gap(&mut self) {
        self.preface = 0;
        self.part = Part::Head;
        self.head_len = 0;
        self.hpack.state = Field::Off;
    }

    fn frame_start(&mut self) {
        let h = self.head;
        let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
        self.ty = h[3];
        self.flags = h[4];
        match self.ty {
            HEADERS | PUSH_PROMISE => self.hpack = Hpack::new(),
            CONTINUATION => {}
            _ => {
                self.part = Part::Tail;
                self.left = len;
                return;
            }
        }
        if self.ty != CONTINUATION && self.flags & FLAG_PADDED != 0 {
            self.part = Part::PadLen;
            self.left = len;
            self.avail = len.saturating_sub(1);
        } else {
            self.avail = len;
            self.block_parts(0);
        }
    }

    /// The pad length is known: the parts of a header frame's payload.
    fn block_parts(&mut self, pad: usize) {
        let pre = match self.ty {
            HEADERS if self.flags & FLAG_PRIORITY != 0 => 5,
            PUSH_PROMISE => 4,
            _ => 0,
        };
        if self.avail < pre + pad {
            // Malformed: skip it, and stop reading the block.
            self.hpack.state = Field::Off;
            self.part = Part::Tail;
            self.left = self.avail;
            return;
        }
        self.pad = pad;
        self.part = Part::Pre;
        self.left = pre;
        self.avail -= pre + pad;
    }

    /// Moves past parts that are complete.
    fn advance(&mut self) {
        while self.left == 0 {
            match self.part {
                Part::Head | Part::PadLen => return,
                Part::Pre => {
                    self.part = Part::Block;
                    self.left = self.avail;
                }
                Part::Block => {
                    self.part = Part::Tail;
                    self.left = self.pad;
                    self.pad = 0;
                }
                Part::Tail => {
                    self.part = Part::Head;
                    self.head_len = 0;
                    return;
                }
            }
        }
    }

    fn run(&mut self, r: &Redact, out: &mut Out<'_>) {
        let data = out.data;
        let mut i = 0;
        if self.preface > 0 {
            let n = self.preface.min(data.len());
            i = n;
            self.preface -= n;
        }
        while i < data.len() {
            match self.part {
                Part::Head => {
                    self.head[self.head_len] = data[i];
                    self.head_len += 1;
                    i += 1;
                    if self.head_len == 9 {
                        self.frame_start();
                    }
                }
                Part::PadLen => {
                    let pad = data[i] as usize;
                    i += 1;
                    self.block_parts(pad);
                }
                Part::Pre | Part::Tail => {
                    let n = self.left.min(data.len() - i);
                    i += n;
                    self.left -= n;
                }
                Part::Block => {
                    let n = self.left.min(data.len() - i);
                    for (k, &b) in data[i..i + n].iter().enumerate() {
                        if let Some(m) = self.hpack.byte(r, b) {
                            out.set(i + k, m);
                        }
                    }
                    i += n;
                    self.left -= n;
                }
            }
            self.advance();
        }
    }
}

#[derive(Debug, Clone)]
enum Mode {
    /// The first bytes (up to the preface's length), while they could still
    /// be either kind: they decide.
    New(Vec<u8>),
    Text(Text),
    H2(Box<H2>),
}

/// Whether the first bytes of a direction could still become the client
/// preface or a server's first SETTINGS frame head.
fn undecided(first: &[u8]) -> bool {
    let n = first.len();
    let preface = n < PREFACE.len() && PREFACE.starts_with(first);
    let settings = n < 9
        && first.get(3).is_none_or(|&b| b == 4)
        && first.get(4).is_none_or(|&b| b == 0)
        && first.iter().skip(5).all(|&b| b == 0);
    preface || settings
}

/// Whether the first bytes of a direction start as HTTP/2 does.
fn starts_h2(first: &[u8]) -> bool {
    first.starts_with(PREFACE)
        || (first.len() >= 9
            && first[3] == 4
            && first[4] == 0
            && first[5..9] == [0; 4]
            && u32::from_be_bytes([0, first[0], first[1], first[2]]) % 6 == 0)
}

/// Masks sensitive header values in one direction's bytes, call after call.
#[derive(Debug, Clone)]
pub struct RawRedactor {
    redact: Redact,
    mode: Mode,
}

impl RawRedactor {
    pub fn new(redact: Redact) -> RawRedactor {
        RawRedactor {
            redact,
            mode: Mode::New(Vec::new()),
        }
    }

    /// One that reads HTTP/2 frames from the first byte (a frame head).
    pub fn h2_frames(redact: Redact) -> RawRedactor {
        RawRedactor {
            redact,
            mode: Mode::H2(Box::new(H2::new(0))),
        }
    }

    /// The next bytes of the direction, masked (borrowed when unchanged).
    pub fn push<'a>(&mut self, data: &'a [u8]) -> Cow<'a, [u8]> {
        if self.redact.is_none() || data.is_empty() {
            return Cow::Borrowed(data);
        }
        if let Mode::New(first) = &mut self.mode {
            let before = first.len();
            let take = data.len().min(PREFACE.len() - before);
            first.extend_from_slice(&data[..take]);
            if take == data.len() && undecided(first) {
                return Cow::Borrowed(data);
            }
            let first = std::mem::take(first);
            let mut mode = if starts_h2(&first) {
                let preface = if first.starts_with(PREFACE) {
                    PREFACE.len()
                } else {
                    0
                };
                Mode::H2(Box::new(H2::new(preface)))
            } else {
                Mode::Text(Text::new())
            };
            // The bytes seen before (nothing to mask in them) set the state.
            let mut seen = Out::new(&first[..before]);
            match &mut mode {
                Mode::Text(t) => t.run(&self.redact, &mut seen),
                Mode::H2(h) => h.run(&self.redact, &mut seen),
                Mode::New(_) => unreachable!("decided"),
            }
            self.mode = mode;
        }
        let mut out = Out::new(data);
        match &mut self.mode {
            Mode::New(_) => unreachable!("decided above"),
            Mode::Text(t) => t.run(&self.redact, &mut out),
            Mode::H2(h) => h.run(&self.redact, &mut out),
        }
        out.done()
    }

    /// Bytes of the direction were lost here.
    pub fn gap(&mut self) {
        match &mut self.mode {
            // Too little was seen to tell: text, from a line start.
            Mode::New(_) => self.mode = Mode::Text(Text::new()),
            Mode::Text(t) => t.gap(),
            Mode::H2(h) => h.gap(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact() -> Redact {
        Redact::new(&["X-Api-Key".into()])
    }

    fn masked(data: &[u8]) -> Vec<u8> {
        redact().raw(data).into_owned()
    }

    #[test]
    fn http1_values_are_masked_in_place() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer abc\r\ncookie:x=1\r\nX-API-KEY: \t k \r\nAccept: */*\r\n\r\nbody";
        assert_eq!(
            masked(head),
            b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: **********\r\ncookie:***\r\nX-API-KEY: \t **\r\nAccept: */*\r\n\r\nbody"
        );
        let resp = b"HTTP/1.1 200 OK\r\nSet-Cookie: a=b;\r\n  folded\r\nProxy-Authorization: Basic x\nServer: s\r\n\r\n";
        assert_eq!(
            masked(resp),
            b"HTTP/1.1 200 OK\r\nSet-Cookie: ****\r\n  ******\r\nProxy-Authorization: *******\nServer: s\r\n\r\n"
        );
        // not header lines: unchanged, and borrowed
        for text in [
            &b"Authorization without colon\r\nX-Authorization: v\r\n"[..],
            b"a cookie: in a sentence\n",
            b"\x00\x01Cookie: binary before",
        ] {
            assert!(matches!(redact().raw(text), Cow::Borrowed(_)), "{text:?}");
        }
        assert_eq!(
            Redact::none().raw(b"Cookie: a\r\n").into_owned(),
            b"Cookie: a\r\n"
        );
    }

    #[test]
    fn http1_split_anywhere_gives_the_same_bytes() {
        let head: &[u8] = b"POST /p HTTP/1.1\r\nAuthorization: Bearer s3cret\r\nContent-Length: 2\r\nCookie: c=1\r\n\r\nhi";
        let whole = masked(head);
        for i in 0..=head.len() {
            for j in i..=head.len() {
                let mut r = RawRedactor::new(redact());
                let mut got = r.push(&head[..i]).into_owned();
                got.extend_from_slice(&r.push(&head[i..j]));
                got.extend_from_slice(&r.push(&head[j..]));
                assert_eq!(got, whole, "split at {i}, {j}");
            }
        }
    }

    #[test]
    fn a_gap_keeps_masking_a_cut_value() {
        let mut r = RawRedactor::new(redact());
        assert_eq!(
            &*r.push(b"GET / HTTP/1.1\r\nCookie: ab"),
            b"GET / HTTP/1.1\r\nCookie: **"
        );
        r.gap();
        assert_eq!(&*r.push(b"cd\r\nHost: h\r\n"), b"**\r\nHost: h\r\n");
        r.gap();
        assert_eq!(&*r.push(b"Cookie: x\r\n"), b"Cookie: *\r\n");
    }

    fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.push(ty);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn http2_literal_values_are_masked() {
        let mut block = vec![
            0x82, // :method GET (indexed)
            0x57, 0x06, b'B', b'e', b'a', b'r', b'e',
            b'r', // authorization (static 23), incremental
            0x0f, 0x11, 0x03, b'a', b'=',
            b'1', // cookie (static 32) without indexing, index 17 = 15 + 2
            0x10, 0x01, b'x', 0x02, b'h', b'i', // never indexed, literal name "x"
            0x40, 0x09, b'x', b'-', b'a', b'p', b'i', b'-', b'k', b'e', b'y', 0x01,
            b'k', // x-api-key literal name
            0x00, 0x01, b'a', 0x01, b'v', // harmless literal
            0xbe, // dynamic index 62
        ];
        // Huffman-coded name "cookie" and value "abc"
        let hname = [0x21, 0xcf, 0xd4, 0xc5]; // "cookie"
        let hvalue = [0x1c, 0x64]; // "abc"
        block.extend([0x40, 0x80 | hname.len() as u8]);
        block.extend(hname);
        block.extend([0x80 | hvalue.len() as u8]);
        block.extend(hvalue);
        let mut expected = vec![
            0x82, 0x57, 0x06, b'*', b'*', b'*', b'*', b'*', b'*', 0x0f, 0x11, 0x03, b'*', b'*',
            b'*', 0x10, 0x01, b'x', 0x02, b'*', b'*', 0x40, 0x09, b'x', b'-', b'a', b'p', b'i',
            b'-', b'k', b'e', b'y', 0x01, b'*', 0x00, 0x01, b'a', 0x01, b'v', 0xbe,
        ];
        expected.extend([0x40, 0x84]);
        expected.extend(hname);
        expected.extend([0x82, 0xf9, 0xf9]);
        // sanity: the Huffman test strings are what they say
        let mut d = fluke_hpack::huffman::HuffmanDecoder::new();
        assert_eq!(d.decode(&hname).unwrap(), b"cookie");
        assert_eq!(d.decode(&hvalue).unwrap(), b"abc");
        assert_eq!(d.decode(&[0xf9, 0xf9]).unwrap(), b"**");

        let data_payload = b"Cookie: in a DATA frame stays";
        let mut client = PREFACE.to_vec();
        client.extend(frame(4, 0, 0, &[]));
        client.extend(frame(HEADERS, 0x4, 1, &block));
        client.extend(frame(0, 0, 1, data_payload));
        let mut want = PREFACE.to_vec();
        want.extend(frame(4, 0, 0, &[]));
        want.extend(frame(HEADERS, 0x4, 1, &expected));
        want.extend(frame(0, 0, 1, data_payload));
        assert_eq!(masked(&client), want);
        // split anywhere: the same
        for i in 0..=client.len() {
            let mut r = RawRedactor::new(redact());
            let mut got = r.push(&client[..i]).into_owned();
            got.extend_from_slice(&r.push(&client[i..]));
            assert_eq!(got, want, "split at {i}");
        }
        // the masked block still decodes, to stars
        let list = fluke_hpack::Decoder::new().decode(&expected).unwrap();
        assert_eq!(list[1], (b"authorization".to_vec(), b"******".to_vec()));
        assert_eq!(list[7], (b"cookie".to_vec(), b"**".to_vec()));
    }

    #[test]
    fn http2_padding_priority_continuation_and_push_promise() {
        // HEADERS, padded and with priority, its block continued in a
        // CONTINUATION in the middle of a value; then a PUSH_PROMISE.
        let block = [
            0x10, 0x06, b'c', b'o', b'o', b'k', b'i', b'e', 0x04, b's', b'e', b'c', b'r',
        ];
        let mut payload = vec![2u8, 0, 0, 0, 0, 16];
        payload.extend(&block[..11]);
        payload.extend([0, 0]);
        let mut server = frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]);
        server.extend(frame(HEADERS, FLAG_PADDED | FLAG_PRIORITY, 1, &payload));
        server.extend(frame(CONTINUATION, 0x4, 1, &block[11..]));
        server.extend(frame(PUSH_PROMISE, 0x4, 1, &[0, 0, 0, 2, 0x5f, 0x1, b'z']));
        let mut want = frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]);
        let mut p = vec![2u8, 0, 0, 0, 0, 16];
        p.extend(&block[..9]);
        p.extend(b"**");
        p.extend([0, 0]);
        want.extend(frame(HEADERS, FLAG_PADDED | FLAG_PRIORITY, 1, &p));
        want.extend(frame(CONTINUATION, 0x4, 1, b"**"));
        // content-type (static 31): not sensitive
        want.extend(frame(PUSH_PROMISE, 0x4, 1, &[0, 0, 0, 2, 0x5f, 0x1, b'z']));
        assert_eq!(masked(&server), want);
    }
}
