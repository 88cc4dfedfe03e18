//! Mutations: AFL-style havoc (bit and byte flips, interesting integers,
//! arithmetic, range delete / insert / duplicate / overwrite, splicing with
//! another corpus entry, dictionary tokens) plus two structure-aware ones:
//! scripts are re-cut (a call split in two, two calls joined, a call's
//! direction or lost count changed, calls reordered) and ELF files are hit
//! where their headers and tables are.

use plainsight::fuzzing::{Script, OP_LOST, OP_SERVER};

/// xoshiro256**, seeded through splitmix64: deterministic per (seed, input).
pub struct Rng([u64; 4]);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    pub fn next(&mut self) -> u64 {
        let s = &mut self.0;
        let r = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        r
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

const INTERESTING8: &[u8] = &[0, 1, 0x7f, 0x80, 0xff, 0x10, 0x20, 0x40, 0x64, 9, 5];
const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    4,
    6,
    8,
    9,
    16,
    32,
    64,
    100,
    127,
    128,
    255,
    256,
    512,
    1000,
    1024,
    4095,
    4096,
    4097,
    16383,
    16384,
    16385,
    32767,
    32768,
    65535,
    65536,
    0x00ff_ffff,
    0x0100_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    u64::MAX - 1,
    0x40_0000,
    0x1000,
];

/// Tokens worth inserting, per harness.
pub fn dictionary(harness: &str) -> &'static [&'static [u8]] {
    match harness {
        "http1" | "conn" => &[
            b"\r\n",
            b"\r\n\r\n",
            b"GET / HTTP/1.1\r\n",
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.0 ",
            b"HTTP/1.1 101 Switching Protocols\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HEAD ",
            b"POST ",
            b"Content-Length: ",
            b"content-length:",
            b"Transfer-Encoding: chunked\r\n",
            b"Authorization: ",
            b"Cookie: ",
            b"Set-Cookie: ",
            b"Host: ",
            b"0\r\n\r\n",
            b"ffffffffffffffff\r\n",
            b";ext=1",
            b"18446744073709551615",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x00\x00\x00\x04\x00\x00\x00\x00\x00",
            b"Upgrade: websocket\r\n",
        ],
        "http2" => &[
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x00\x00\x00\x04\x00\x00\x00\x00\x00",
            b"\x00\x00\x00\x04\x01\x00\x00\x00\x00",
            b"\x00\x00\x05\x01\x05\x00\x00\x00\x01",
            b"\x00\x00\x00\x09\x04\x00\x00\x00\x01",
            b"\x00\x00\x00\x00\x01\x00\x00\x00\x01",
            b"\x00\x00\x04\x03\x00\x00\x00\x00\x01\x00\x00\x00\x08",
            b"\x00\x00\x04\x05\x04\x00\x00\x00\x01\x00\x00\x00\x02",
            b"\x3f\xe1\x1f",
            b"\x3f\xe1\xff\xff\x07",
            b"\x20",
            b"\x82\x84\x86\x87\x88",
            b"\x40\x0acustom-key\x0dcustom-header",
            b"\x10\x01a\x01b",
            b"\x7f\xff\xff\xff\x0f",
            b"\xbe\xbf\xc0\xfe\xff\x80",
            b"application/grpc",
            b"grpc-status",
        ],
        "config" => &[
            b"sni:",
            b"capture_no_sni: ",
            b"pids:",
            b"comms:",
            b"redact_headers:",
            b"\n  - ",
            b"[",
            b"]",
            b"{",
            b"}",
            b"&a ",
            b"*a",
            b"!!str ",
            b"!!binary ",
            b"<<: ",
            b"? ",
            b"|\n",
            b">-\n",
            b"'*.acme.com'",
            b"\"\\u0000\"",
            b"---\n",
            b"...\n",
            b"%YAML 1.2\n",
            b"true",
            b"0x7fffffff",
            b"4294967296",
            b"-1",
            b"~",
        ],
        "ring" => &[
            b"\x00\x00\x00\x00",
            b"\x01\x00\x00\x00",
            b"\x02\x00\x00\x00",
            b"\x03\x00\x00\x00",
            b"\x04\x00\x00\x00",
            b"\x05\x00\x00\x00",
            b"\x06\x00\x00\x00",
            b"\x07\x00\x00\x00",
            b"\x08\x00\x00\x00",
            b"\x00\x40\x00\x00",
            b"\xff\xff\xff\xff",
        ],
        _ => &[],
    }
}

fn put_int(data: &mut [u8], at: usize, v: u64, width: usize, big: bool) {
    let b = if big {
        v.to_be_bytes()[8 - width..].to_vec()
    } else {
        v.to_le_bytes()[..width].to_vec()
    };
    let n = width.min(data.len() - at);
    data[at..at + n].copy_from_slice(&b[..n]);
}

/// A position to mutate: anywhere, or (ELF) in the headers and tables.
fn position(rng: &mut Rng, data: &[u8], hot: &[(usize, usize)]) -> usize {
    if !hot.is_empty() && rng.chance(2) {
        let (s, e) = hot[rng.below(hot.len())];
        let s = s.min(data.len() - 1);
        let e = e.clamp(s + 1, data.len());
        return s + rng.below(e - s);
    }
    rng.below(data.len())
}

/// One havoc step.
fn havoc(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8], dict: &[&[u8]], hot: &[(usize, usize)]) {
    if data.is_empty() {
        data.push(rng.next() as u8);
        return;
    }
    match rng.below(16) {
        0 => {
            let p = position(rng, data, hot);
            data[p] ^= 1 << rng.below(8);
        }
        1 => {
            let p = position(rng, data, hot);
            data[p] = rng.next() as u8;
        }
        2 => {
            let p = position(rng, data, hot);
            data[p] = INTERESTING8[rng.below(INTERESTING8.len())];
        }
        3 | 4 => {
            let p = position(rng, data, hot);
            let p = if rng.chance(2) { p & !3 } else { p };
            let width = [2, 4, 8][rng.below(3)];
            let v = INTERESTING[rng.below(INTERESTING.len())];
            let v = if rng.chance(4) { v.wrapping_neg() } else { v };
            put_int(data, p, v, width, rng.chance(3));
        }
        5 => {
            let p = position(rng, data, hot);
            let d = 1 + rng.below(35) as u8;
            data[p] = if rng.chance(2) {
                data[p].wrapping_add(d)
            } else {
                data[p].wrapping_sub(d)
            };
        }
        6 => {
            // u16/u32 arithmetic, either endianness
            let p = position(rng, data, hot);
            let width = [2, 4][rng.below(2)];
            if p + width <= data.len() {
                let big = rng.chance(2);
                let mut v = 0u64;
                for i in 0..width {
                    let b = data[if big { p + i } else { p + width - 1 - i }];
                    v = v << 8 | u64::from(b);
                }
                let d = 1 + rng.below(64) as u64;
                let v = if rng.chance(2) {
                    v.wrapping_add(d)
                } else {
                    v.wrapping_sub(d)
                };
                put_int(data, p, v, width, big);
            }
        }
        7 | 8 => {
            // delete a range
            let p = rng.below(data.len());
            let most = if rng.chance(4) { 4096 } else { 32 };
            let n = 1 + rng.below((data.len() - p).min(most));
            data.drain(p..p + n);
        }
        9 => {
            // insert random bytes or a run of one byte
            let p = rng.below(data.len() + 1);
            let most = if rng.chance(8) { 2048 } else { 16 };
            let n = 1 + rng.below(most);
            let byte = rng.next() as u8;
            let run = rng.chance(2);
            let ins: Vec<u8> = (0..n)
                .map(|_| if run { byte } else { rng.next() as u8 })
                .collect();
            data.splice(p..p, ins);
        }
        10 => {
            // duplicate a range somewhere
            let s = rng.below(data.len());
            let n = 1 + rng.below((data.len() - s).min(512));
            let chunk = data[s..s + n].to_vec();
            let times = if rng.chance(8) { 1 + rng.below(64) } else { 1 };
            let p = rng.below(data.len() + 1);
            data.splice(p..p, chunk.repeat(times));
        }
        11 => {
            // overwrite a range with another of the same input
            let s = rng.below(data.len());
            let d = rng.below(data.len());
            let n = 1 + rng.below((data.len() - s.max(d)).min(64));
            let chunk = data[s..s + n].to_vec();
            data[d..d + n].copy_from_slice(&chunk);
        }
        12 | 13 if !other.is_empty() => {
            // splice: a piece of another corpus entry, inserted or over the tail
            let s = rng.below(other.len());
            let n = 1 + rng.below((other.len() - s).min(1024));
            let p = rng.below(data.len() + 1);
            if rng.chance(2) {
                data.truncate(p);
            }
            data.splice(
                p.min(data.len())..p.min(data.len()),
                other[s..s + n].iter().copied(),
            );
        }
        12..=14 if !dict.is_empty() => {
            let t = dict[rng.below(dict.len())];
            let p = rng.below(data.len() + 1);
            if rng.chance(2) && p + t.len() <= data.len() {
                data[p..p + t.len()].copy_from_slice(t);
            } else {
                data.splice(p..p, t.iter().copied());
            }
        }
        _ => {
            let n = rng.below(data.len());
            data.truncate(n.max(1));
        }
    }
}

/// Script mutations: the same bytes cut, joined, turned or reordered.
fn rescript(rng: &mut Rng, data: &[u8]) -> Option<Vec<u8>> {
    let mut s = Script::parse(data);
    if s.ops.is_empty() {
        return None;
    }
    let i = rng.below(s.ops.len());
    match rng.below(7) {
        0 | 1 => {
            let op = &mut s.ops[i];
            if op.data.len() < 2 {
                return None;
            }
            let at = 1 + rng.below(op.data.len() - 1);
            let mut second = op.clone();
            second.data = op.data.split_off(at);
            op.flags &= !OP_LOST;
            s.ops.insert(i + 1, second);
        }
        2 => {
            if i + 1 >= s.ops.len() {
                return None;
            }
            let next = s.ops.remove(i + 1);
            s.ops[i].data.extend_from_slice(&next.data);
        }
        3 => s.ops[i].flags ^= OP_SERVER,
        4 => {
            let op = &mut s.ops[i];
            op.flags |= OP_LOST;
            op.lost = [1, 5, 100, 16384, u16::MAX][rng.below(5)];
        }
        5 => {
            let j = rng.below(s.ops.len());
            s.ops.swap(i, j);
        }
        _ => {
            let op = s.ops[i].clone();
            s.ops.insert(rng.below(s.ops.len() + 1), op);
        }
    }
    Some(s.encode())
}

/// Where an ELF file's headers and tables are (mutated more often).
pub fn elf_hot(data: &[u8]) -> Vec<(usize, usize)> {
    let u16_at = |o: usize| {
        data.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u64_at = |o: usize| {
        data.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8")) as usize)
    };
    let mut hot = vec![(0, 64)];
    let (Some(phoff), Some(shoff), Some(phnum), Some(shnum)) =
        (u64_at(0x20), u64_at(0x28), u16_at(0x38), u16_at(0x3c))
    else {
        return hot;
    };
    hot.push((phoff, phoff.saturating_add(phnum.min(64) * 56)));
    hot.push((shoff, shoff.saturating_add(shnum.min(128) * 64)));
    for i in 0..shnum.min(128) {
        let sh = shoff.saturating_add(i * 64);
        let (Some(ty), Some(off), Some(size)) = (
            data.get(sh + 4..sh + 8)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4"))),
            u64_at(sh + 0x18),
            u64_at(sh + 0x20),
        ) else {
            break;
        };
        // SYMTAB, DYNAMIC, RELA, DYNSYM, and Go's tables (PROGBITS are
        // many: only small ones).
        if matches!(ty, 2 | 4 | 6 | 11) || (ty == 1 && size <= 4096) {
            hot.push((off, off.saturating_add(size.min(4096))));
        }
    }
    hot.retain(|&(s, e)| s < data.len() && e > s);
    hot
}

/// A new input from `base` (and `other`, for splicing).
pub fn mutate(
    rng: &mut Rng,
    harness: &str,
    base: &[u8],
    other: &[u8],
    max_len: usize,
    hot: &[(usize, usize)],
) -> Vec<u8> {
    let scripted = matches!(harness, "http1" | "http2" | "conn" | "ring");
    let mut data = base.to_vec();
    if scripted && rng.chance(3) {
        for _ in 0..1 + rng.below(3) {
            if let Some(d) = rescript(rng, &data) {
                data = d;
            }
        }
        if rng.chance(2) {
            data.truncate(max_len);
            return data;
        }
    }
    let dict = dictionary(harness);
    let steps = 1 << rng.below(5);
    for _ in 0..steps {
        havoc(rng, &mut data, other, dict, hot);
    }
    data.truncate(max_len);
    data
}
