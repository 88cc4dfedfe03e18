//! Seed inputs, made with the real encoders and layouts: HTTP/1 and HTTP/2
//! exchanges as clients and servers send them (HPACK from `fluke-hpack`, the
//! RFC 7541 examples with Huffman coding and table updates), ring-buffer
//! records laid out by the compiled BPF header's types, config files, the
//! ELF fixtures the unit tests compile (`target/elf-fixtures/`, built by
//! `cargo test --lib`), the functions in them for placement, and small
//! synthetic Go executables (a real Go program is megabytes).
//!
//! `cargo run --example fuzz -- --write-seeds` writes them to
//! `fuzz/corpus/<harness>/`.

use std::mem::offset_of;
use std::path::Path;

use plainsight::abi;
use plainsight::bpf::openssl::types as t;
use plainsight::fuzzing::{Script, OP_END, OP_LOST, OP_SERVER, PLACE_HEADER};
use plainsight::inspect::{self, elf};
use plainsight::probes::PROBES;

pub fn seeds(harness: &str) -> Vec<(String, Vec<u8>)> {
    match harness {
        "http1" => http1(),
        "http2" => http2(),
        "conn" => conn(),
        "postgres" => postgres(),
        "redis" => redis(),
        "mysql" => mysql(),
        "ring" => ring(),
        "config" => config(),
        "elf" => elf_files(),
        "place" => place(),
        "go" => go(),
        "hello" => hello(),
        _ => Vec::new(),
    }
}

fn named(prefix: &str, v: Vec<Vec<u8>>) -> Vec<(String, Vec<u8>)> {
    v.into_iter()
        .enumerate()
        .map(|(i, d)| (format!("{prefix}-{i:02}"), d))
        .collect()
}

// ---------------------------------------------------------------------------
// HTTP/1

const GET: &[u8] = b"GET /v1/items?x=1 HTTP/1.1\r\nHost: api.acme.com\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\nAuthorization: Bearer s3cret\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n\r\nhello from server\r\n";

/// (request side, response side) pairs, each a list of calls.
fn http1_conversations() -> Vec<Vec<(bool, &'static [u8])>> {
    vec![
        vec![(false, GET), (true, OK)],
        vec![
            (false, b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nX-Api-Key: k\r\n\r\n"),
            (true, b"HTTP/1.1 100 Continue\r\n\r\n"),
            (false, b"5\r\nhello\r\n6;ext=1\r\n world\r\n"),
            (false, b"0\r\nX-Checksum: abc\r\n\r\n"),
            (true, b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nSet-Cookie: s=1\r\n\r\n4\r\nokay\r\n0\r\n\r\n"),
        ],
        vec![
            (false, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nHEAD /b HTTP/1.1\r\nHost: h\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\nCookie: a=b\r\n\r\n"),
            (true, b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nHTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"),
        ],
        vec![
            (false, b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
            (true, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
            (false, b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"),
        ],
        vec![
            (false, b"GET / HTTP/1.0\r\n\r\n"),
            (true, b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nbody until close"),
            (true, b" and more"),
        ],
        vec![
            (false, b"PUT /k HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcOPTIONS * HTTP/1.1\r\n\r\n"),
            (true, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nAllow: GET\r\nContent-Length: 2\r\n\r\nok"),
        ],
    ]
}

fn split_calls(conv: &[(bool, &[u8])], every: usize) -> Script {
    let mut s = Script::default();
    for (server, data) in conv {
        for piece in data.chunks(every.max(1)) {
            s.call(*server, piece);
        }
    }
    s
}

fn http1() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for conv in http1_conversations() {
        v.push(split_calls(&conv, usize::MAX).encode());
    }
    // Split anywhere: byte by byte, and in odd pieces.
    v.push(split_calls(&http1_conversations()[0], 1).encode());
    v.push(split_calls(&http1_conversations()[1], 7).encode());
    named("http1", v)
}

// ---------------------------------------------------------------------------
// HTTP/2

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.push(ty);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn hpack(enc: &mut fluke_hpack::Encoder<'_>, headers: &[(&str, &str)]) -> Vec<u8> {
    enc.encode(headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
}

const SETTINGS: &[u8] = &[0, 3, 0, 0, 0, 100, 0, 4, 0, 0x60, 0, 0];

/// A GET and a POST on one connection, gRPC with trailers, and the frames
/// around them (SETTINGS, WINDOW_UPDATE, PING, GOAWAY).
fn h2_basic() -> (Vec<u8>, Vec<u8>) {
    let (mut ce, mut se) = (fluke_hpack::Encoder::new(), fluke_hpack::Encoder::new());
    let mut c = PREFACE.to_vec();
    c.extend(frame(4, 0, 0, SETTINGS));
    c.extend(frame(8, 0, 0, &[0, 0x0f, 0, 1]));
    let get = [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "api.acme.com"),
        (":path", "/v1/items"),
        ("user-agent", "curl/7.88.1"),
        ("authorization", "Bearer s3cret"),
    ];
    c.extend(frame(1, 5, 1, &hpack(&mut ce, &get)));
    let grpc = [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "api.acme.com"),
        (":path", "/helloworld.Greeter/SayHello"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    c.extend(frame(1, 4, 3, &hpack(&mut ce, &grpc)));
    c.extend(frame(
        0,
        1,
        3,
        &[0, 0, 0, 0, 7, 0x0a, 5, b'w', b'o', b'r', b'l', b'd'],
    ));
    c.extend(frame(6, 0, 0, b"pingpong"));
    let mut s = frame(4, 0, 0, &[0, 5, 0, 0, 0x40, 0]);
    s.extend(frame(4, 1, 0, &[]));
    let resp = [
        (":status", "200"),
        ("content-type", "text/plain"),
        ("content-length", "5"),
        ("set-cookie", "a=b"),
    ];
    s.extend(frame(1, 4, 1, &hpack(&mut se, &resp)));
    s.extend(frame(0, 1, 1, b"hello"));
    s.extend(frame(
        1,
        4,
        3,
        &hpack(
            &mut se,
            &[(":status", "200"), ("content-type", "application/grpc")],
        ),
    ));
    s.extend(frame(0, 0, 3, &[0, 0, 0, 0, 3, 0x0a, 1, b'x']));
    s.extend(frame(
        1,
        5,
        3,
        &hpack(
            &mut se,
            &[("grpc-status", "0"), ("grpc-message", "ok%20done")],
        ),
    ));
    s.extend(frame(6, 1, 0, b"pingpong"));
    s.extend(frame(7, 0, 0, &[0, 0, 0, 3, 0, 0, 0, 0]));
    (c, s)
}

/// CONTINUATION, padding, priority, PUSH_PROMISE, RST_STREAM.
fn h2_framing() -> (Vec<u8>, Vec<u8>) {
    let (mut ce, mut se) = (fluke_hpack::Encoder::new(), fluke_hpack::Encoder::new());
    let mut c = PREFACE.to_vec();
    c.extend(frame(4, 0, 0, &[]));
    let block = hpack(
        &mut ce,
        &[
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "h"),
            (":path", "/index.html"),
            ("cookie", "c=1"),
            ("x-long", "0123456789abcdef0123456789abcdef"),
        ],
    );
    let (a, rest) = block.split_at(5);
    let (b, d) = rest.split_at(rest.len() / 2);
    // padded, with priority
    let mut p = vec![3u8, 0x80, 0, 0, 0, 15];
    p.extend_from_slice(a);
    p.extend_from_slice(&[0, 0, 0]);
    c.extend(frame(1, 0x08 | 0x20, 1, &p));
    c.extend(frame(9, 0, 1, b));
    c.extend(frame(9, 4, 1, d));
    c.extend(frame(2, 0, 5, &[0, 0, 0, 1, 16]));
    c.extend(frame(
        1,
        5,
        5,
        &hpack(
            &mut ce,
            &[(":method", "GET"), (":path", "/x"), (":scheme", "https")],
        ),
    ));
    c.extend(frame(3, 0, 5, &[0, 0, 0, 8]));
    let mut s = frame(4, 0, 0, &[]);
    let mut pp = vec![0, 0, 0, 2];
    pp.extend(hpack(
        &mut se,
        &[
            (":method", "GET"),
            (":path", "/style.css"),
            (":scheme", "https"),
            (":authority", "h"),
        ],
    ));
    s.extend(frame(5, 4, 1, &pp));
    s.extend(frame(1, 4, 1, &hpack(&mut se, &[(":status", "200")])));
    let mut padded = vec![4u8];
    padded.extend_from_slice(b"<html>");
    padded.extend_from_slice(&[0; 4]);
    s.extend(frame(0, 0x08 | 1, 1, &padded));
    s.extend(frame(
        1,
        4,
        2,
        &hpack(&mut se, &[(":status", "200"), ("content-type", "text/css")]),
    ));
    s.extend(frame(0, 1, 2, b"body{}"));
    s.extend(frame(1, 1 | 4, 5, &hpack(&mut se, &[(":status", "103")])));
    (c, s)
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// RFC 7541 C.4 (requests, Huffman) and C.6 (responses, Huffman, a
/// 256-byte table with evictions), as three exchanges.
fn h2_rfc7541() -> (Vec<u8>, Vec<u8>) {
    let reqs = [
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ];
    let resps = [
        "3fe1 01 4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ff c1 c0 bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ];
    let mut c = PREFACE.to_vec();
    c.extend(frame(4, 0, 0, &[]));
    let mut s = frame(4, 0, 0, &[]);
    for (i, (q, r)) in reqs.iter().zip(resps).enumerate() {
        let id = 1 + 2 * i as u32;
        c.extend(frame(1, 5, id, &hex(q)));
        s.extend(frame(1, 5, id, &hex(r)));
    }
    (c, s)
}

/// The client's bytes, then the server's, in calls of `every` bytes.
fn interleave(c: &[u8], s: &[u8], every: usize) -> Script {
    let mut sc = Script::default();
    for piece in c.chunks(every) {
        sc.call(false, piece);
    }
    for piece in s.chunks(every) {
        sc.call(true, piece);
    }
    sc
}

fn http2() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for (c, s) in [h2_basic(), h2_framing(), h2_rfc7541()] {
        let mut sc = Script::default();
        sc.call(false, &c).call(true, &s);
        v.push(sc.encode());
        v.push(interleave(&c, &s, 13).encode());
    }
    named("http2", v)
}

// ---------------------------------------------------------------------------
// Databases: conversations as their clients and servers send them (the
// layouts of PostgreSQL's protocol 3, RESP, MySQL's protocol 4.1).

/// A PostgreSQL message.
fn pg(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![ty];
    v.extend(((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn cstrs(parts: &[&str]) -> Vec<u8> {
    parts
        .iter()
        .flat_map(|p| [p.as_bytes(), b"\0"].concat())
        .collect()
}

/// (client, server) calls of a PostgreSQL session: start-up, password,
/// a simple query, an extended batch with a named statement, an error,
/// COPY.
fn pg_session() -> Vec<(bool, Vec<u8>)> {
    let body = b"\0\x03\0\0user\0u\0database\0d\0\0";
    let mut startup = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    startup.extend_from_slice(body);
    let mut auth = pg(b'R', &[0, 0, 0, 3]);
    auth.extend(pg(b'R', &[0, 0, 0, 0]));
    auth.extend(pg(b'S', b"server_version\x0015\0"));
    auth.extend(pg(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]));
    auth.extend(pg(b'Z', b"I"));
    let mut ext = pg(
        b'P',
        &[cstrs(&["s1", "SELECT $1::int + 'x'"]), vec![0, 0]].concat(),
    );
    ext.extend(pg(b'B', &[cstrs(&["", "s1"]), vec![0; 6]].concat()));
    ext.extend(pg(b'D', b"P\0"));
    ext.extend(pg(b'E', &[cstrs(&[""]), vec![0; 4]].concat()));
    ext.extend(pg(b'S', b""));
    ext.extend(pg(
        b'P',
        &[cstrs(&["", "SELECT * FROM nope"]), vec![0, 0]].concat(),
    ));
    ext.extend(pg(b'E', &[cstrs(&[""]), vec![0; 4]].concat()));
    ext.extend(pg(b'S', b""));
    let mut ext_r = pg(b'1', b"");
    ext_r.extend(pg(b'2', b""));
    ext_r.extend(pg(b'T', &[0, 0]));
    ext_r.extend(pg(b'D', &[0, 1, 0, 0, 0, 1, b'2']));
    ext_r.extend(pg(b'C', b"SELECT 1\0"));
    ext_r.extend(pg(b'Z', b"I"));
    ext_r.extend(pg(
        b'E',
        b"SERROR\0C42P01\0Mrelation \"nope\" does not exist\0\0",
    ));
    ext_r.extend(pg(b'Z', b"I"));
    let mut q_r = pg(b'T', &[0, 0]);
    q_r.extend(pg(b'D', &[0, 0]));
    q_r.extend(pg(b'C', b"SELECT 1\0"));
    q_r.extend(pg(b'Z', b"I"));
    let mut copy_r = pg(b'H', &[0, 0, 0]);
    copy_r.extend(pg(b'd', b"1\n"));
    copy_r.extend(pg(b'c', b""));
    copy_r.extend(pg(b'C', b"COPY 1\0"));
    copy_r.extend(pg(b'Z', b"I"));
    vec![
        (false, startup),
        (true, auth[..9].to_vec()),
        (false, pg(b'p', b"s3cret\0")),
        (true, auth[9..].to_vec()),
        (false, pg(b'Q', b"select 'marker', 1\0")),
        (true, q_r),
        (false, ext),
        (true, ext_r),
        (false, pg(b'Q', b"COPY t TO STDOUT\0")),
        (true, copy_r),
        (false, pg(b'X', b"")),
    ]
}

fn resp_cmd(args: &[&str]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend(format!("${}\r\n{a}\r\n", a.len()).bytes());
    }
    v
}

/// (client, server) calls of a Redis session: AUTH, commands, an error,
/// a pipeline, MULTI/EXEC, RESP3 after HELLO, pub/sub.
fn redis_session() -> Vec<(bool, Vec<u8>)> {
    let mut pipeline = resp_cmd(&["SET", "k", "v"]);
    pipeline.extend(resp_cmd(&["LPUSH", "k", "x"]));
    pipeline.extend(resp_cmd(&["LRANGE", "l", "0", "-1"]));
    pipeline.extend(resp_cmd(&["MULTI"]));
    pipeline.extend(resp_cmd(&["INCR", "n"]));
    pipeline.extend(resp_cmd(&["EXEC"]));
    vec![
        (false, resp_cmd(&["AUTH", "default", "s3cret"])),
        (true, b"+OK\r\n".to_vec()),
        (false, pipeline),
        (
            true,
            b"+OK\r\n-WRONGTYPE Operation against a key\r\n*2\r\n$1\r\na\r\n$-1\r\n+OK\r\n+QUEUED\r\n*1\r\n:1\r\n"
                .to_vec(),
        ),
        (false, resp_cmd(&["HELLO", "3", "AUTH", "u", "p"])),
        (
            true,
            b"%2\r\n+server\r\n+redis\r\n+proto\r\n:3\r\n|1\r\n+a\r\n+b\r\n_\r\n".to_vec(),
        ),
        (false, b"PING\r\n".to_vec()),
        (true, b"+PONG\r\n,1.5\r\n".to_vec()),
        (false, resp_cmd(&["SUBSCRIBE", "a", "b"])),
        (
            true,
            b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n>3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n>3\r\n$7\r\nmessage\r\n$1\r\na\r\n=9\r\ntxt:hello\r\n"
                .to_vec(),
        ),
    ]
}

/// A MySQL packet.
fn my(seq: u8, body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_le_bytes()[..3].to_vec();
    v.push(seq);
    v.extend_from_slice(body);
    v
}

/// (client, server) calls of a MySQL session: login (after TLS), an auth
/// switch, a query with a result set, an error, a prepared statement
/// executed, an OK.
fn mysql_session() -> Vec<(bool, Vec<u8>)> {
    let caps: u32 = 0x200 | 0x800 | 0x8000 | 0x80000 | 0x8;
    let mut login = caps.to_le_bytes().to_vec();
    login.extend([0, 0, 0, 1, 33]);
    login.extend([0; 23]);
    login.extend(b"app\0\x05s3crtd\0mysql_native_password\0");
    let mut rs = my(1, &[1]);
    rs.extend(my(
        2,
        b"\x03def\0\0\0\x01m\0\x0c\x21\0\x0f\0\0\0\xfd\0\0\x1f\0\0",
    ));
    rs.extend(my(3, &[0xfe, 0, 0, 2, 0]));
    rs.extend(my(4, b"\x06marker"));
    rs.extend(my(5, &[0xfe, 0, 0, 2, 0]));
    let mut prep = my(1, &[0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0]);
    prep.extend(my(2, b"paramdef"));
    prep.extend(my(3, &[0xfe, 0, 0, 2, 0]));
    prep.extend(my(4, b"coldef"));
    prep.extend(my(5, &[0xfe, 0, 0, 2, 0]));
    let mut exec_r = my(1, &[1]);
    exec_r.extend(my(2, b"coldef"));
    exec_r.extend(my(3, &[0xfe, 0, 0, 2, 0]));
    exec_r.extend(my(4, &[0, 0, 1, 0, 0, 0]));
    exec_r.extend(my(5, &[0xfe, 0, 0, 2, 0]));
    vec![
        (false, my(2, &login)),
        (
            true,
            my(3, b"\xfemysql_native_password\0saltsaltsaltsaltsalt\0"),
        ),
        (false, my(4, b"scrambledscrambled20")),
        (true, my(5, &[0, 0, 0, 2, 0, 0, 0])),
        (false, my(0, b"\x03SELECT 'marker' AS m")),
        (true, rs),
        (false, my(0, b"\x03SELECT * FROM nope")),
        (
            true,
            my(1, b"\xff\x7a\x04#42S02Table 'd.nope' doesn't exist"),
        ),
        (false, my(0, b"\x16SELECT ? AS m")),
        (true, prep),
        (
            false,
            my(
                0,
                &[0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 0, 1, 0, 0, 0],
            ),
        ),
        (true, exec_r),
        (false, my(0, b"\x03UPDATE t SET a = 1")),
        (true, my(1, &[0, 3, 0, 2, 0, 0, 0])),
        (false, my(0, &[0x19, 1, 0, 0, 0])),
        (false, my(0, &[0x01])),
    ]
}

/// A session as a script (server calls flagged), whole and split.
fn db_scripts(session: &[(bool, Vec<u8>)]) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for (every, full) in [(usize::MAX, 0u8), (7, 0x80), (1, 0)] {
        let mut s = Script::default();
        for (server, data) in session {
            for c in data.chunks(every.min(data.len().max(1))) {
                s.call(*server, c);
            }
        }
        let mut b = s.encode();
        if let Some(f) = b.first_mut() {
            *f |= full;
        }
        v.push(b);
    }
    v
}

fn postgres() -> Vec<(String, Vec<u8>)> {
    named("postgres", db_scripts(&pg_session()))
}

fn redis() -> Vec<(String, Vec<u8>)> {
    named("redis", db_scripts(&redis_session()))
}

fn mysql() -> Vec<(String, Vec<u8>)> {
    named("mysql", db_scripts(&mysql_session()))
}

// ---------------------------------------------------------------------------
// The connection decoder: what a process sends (outgoing) and receives.

fn conn() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for conv in http1_conversations().iter().take(3) {
        v.push(split_calls(conv, usize::MAX).encode());
    }
    // The captured process is the server: requests come in.
    let mut s = Script::default();
    s.call(true, &GET[..2])
        .call(true, &GET[2..])
        .call(false, OK);
    v.push(s.encode());
    // Lost bytes in the middle of a body, then a new request.
    let mut s = Script::default();
    s.call(
        false,
        b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345",
    );
    s.ops[0].flags |= OP_LOST;
    s.ops[0].lost = 5;
    s.call(false, b"GET /b HTTP/1.1\r\n\r\n")
        .call(true, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    s.ended = true;
    v.push(s.encode());
    let (c, sv) = h2_basic();
    let mut s = Script::default();
    s.call(false, &c).call(true, &sv);
    s.ended = true;
    v.push(s.encode());
    // HTTP/2 seen from the server side, and losing bytes.
    let (c, sv) = h2_framing();
    let mut s = interleave(&sv, &c, 64);
    for op in &mut s.ops {
        op.flags ^= OP_SERVER;
    }
    s.ops[3].flags |= OP_LOST;
    s.ops[3].lost = 100;
    v.push(s.encode());
    // Not HTTP: a TLS record and an SSH banner.
    let mut s = Script::default();
    s.call(false, b"\x16\x03\x01\x00\x05hello")
        .call(true, b"SSH-2.0-OpenSSH_9.2\r\n");
    v.push(s.encode());
    // Databases, seen from the client (outgoing commands) and the server.
    for (i, session) in [pg_session(), redis_session(), mysql_session()]
        .iter()
        .enumerate()
    {
        let mut s = Script::default();
        for (server, data) in session {
            s.call(*server == (i == 1), data);
        }
        s.ended = true;
        v.push(s.encode());
    }
    let mut e = Script::default();
    e.call(false, b"PRI * HTTP/2.0\r\n");
    let mut b = e.encode();
    b.push(OP_END);
    v.push(b);
    named("conn", v)
}

// ---------------------------------------------------------------------------
// Ring-buffer records, laid out by the compiled header.

struct Rec(Vec<u8>);

impl Rec {
    fn new(len: usize, ty: u32) -> Rec {
        let mut r = Rec(vec![0; len]);
        r.u32(0, ty);
        r
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Rec {
        self.0[off..off + 4].copy_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Rec {
        self.0[off..off + 8].copy_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, off: usize, b: &[u8]) -> &mut Rec {
        self.0[off..off + b.len()].copy_from_slice(b);
        self
    }
}

struct Call<'a> {
    write: bool,
    tid: u32,
    ts: u64,
    conn: u64,
    len: u32,
    captured: u32,
    offset: u32,
    flags: u32,
    data: &'a [u8],
}

fn data_record(c: &Call<'_>) -> Vec<u8> {
    type E = t::ssl_data_event;
    let head = offset_of!(E, data);
    let ty = if c.write {
        abi::SSL_EVENT_TYPE_WRITE
    } else {
        abi::SSL_EVENT_TYPE_READ
    };
    let mut r = Rec::new(head + c.data.len(), ty);
    r.u32(offset_of!(E, pid), 100 + c.tid / 2)
        .u32(offset_of!(E, tid), c.tid)
        .u32(offset_of!(E, flags), c.flags)
        .u64(offset_of!(E, ts_ns), c.ts)
        .u64(offset_of!(E, conn), c.conn)
        .u32(offset_of!(E, len), c.len)
        .u32(offset_of!(E, captured), c.captured)
        .u32(offset_of!(E, offset), c.offset)
        .u32(offset_of!(E, chunk_len), c.data.len() as u32)
        .bytes(offset_of!(E, comm), b"curl")
        .bytes(head, c.data);
    r.0
}

/// One call cut into chunks as BPF emits them.
fn call_records(
    write: bool,
    tid: u32,
    ts: u64,
    conn: u64,
    data: &[u8],
    chunk: usize,
) -> Vec<Vec<u8>> {
    data.chunks(chunk)
        .enumerate()
        .map(|(i, d)| {
            data_record(&Call {
                write,
                tid,
                ts,
                conn,
                len: data.len() as u32,
                captured: data.len() as u32,
                offset: (i * chunk) as u32,
                flags: 0,
                data: d,
            })
        })
        .collect()
}

fn sni_record(ty: u32, tid: u32, conn: u64, name: &str) -> Vec<u8> {
    type E = t::sni_event;
    let mut r = Rec::new(std::mem::size_of::<E>(), ty);
    r.u32(offset_of!(E, pid), 100 + tid / 2)
        .u32(offset_of!(E, tid), tid)
        .u32(offset_of!(E, rule), 1)
        .u64(offset_of!(E, ts_ns), 5)
        .u64(offset_of!(E, conn), conn)
        .bytes(offset_of!(E, comm), b"python3")
        .bytes(offset_of!(E, name), name.as_bytes());
    r.0
}

/// SOCK_INFO: connection `conn` of thread `tid`'s process goes over TCP
/// from 127.0.0.1:40412 to 10.0.3.7:8443 (descriptor 5).
fn sock_record(tid: u32, conn: u64) -> Vec<u8> {
    type E = t::sock_event;
    let mut r = Rec::new(std::mem::size_of::<E>(), abi::SOCK_INFO);
    r.u32(offset_of!(E, pid), 100 + tid / 2)
        .u32(offset_of!(E, tid), tid)
        .u32(offset_of!(E, fd), 5)
        .u64(offset_of!(E, conn), conn)
        .u32(offset_of!(E, netns), 4026531840)
        .bytes(offset_of!(E, family), &abi::AF_INET.to_le_bytes())
        .bytes(offset_of!(E, transport), &[abi::TRANSPORT_TCP as u8])
        .bytes(offset_of!(E, local_port), &40412u16.to_le_bytes())
        .bytes(offset_of!(E, peer_port), &8443u16.to_le_bytes())
        .bytes(offset_of!(E, local_addr), &[127, 0, 0, 1])
        .bytes(offset_of!(E, peer_addr), &[10, 0, 3, 7]);
    r.0
}

fn other_records() -> Vec<Vec<u8>> {
    type M = t::mmap_exec_file_event;
    let mut m = Rec::new(std::mem::size_of::<M>(), abi::MMAP_EXEC_FILE);
    m.u32(offset_of!(M, pid), 7)
        .u32(offset_of!(M, source), abi::EXEC_SOURCE_MMAP)
        .u64(offset_of!(M, dev), 8 << 20 | 1)
        .u64(offset_of!(M, ino), 1234)
        .bytes(offset_of!(M, comm), b"node");
    type C = t::ssl_close_event;
    let mut c = Rec::new(std::mem::size_of::<C>(), abi::SSL_EVENT_TYPE_CLOSE);
    c.u32(offset_of!(C, pid), 100)
        .u32(offset_of!(C, tid), 1)
        .u64(offset_of!(C, conn), 0xdead)
        .bytes(offset_of!(C, comm), b"curl");
    vec![m.0, c.0]
}

fn ring() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    // SNI, a request and a response (the response in three chunks,
    // interleaved with another thread's call), the close.
    let mut s = Script::default();
    s.call(
        false,
        &sni_record(abi::SNI_CONFIGURED, 1, 0xdead, "api.acme.com"),
    );
    s.call(false, &sock_record(1, 0xdead));
    for r in call_records(true, 1, 10, 0xdead, GET, usize::MAX) {
        s.call(false, &r);
    }
    let resp = call_records(false, 1, 11, 0xdead, OK, 30);
    s.call(false, &resp[0]);
    for r in call_records(true, 3, 12, 0xbeef, b"other thread", usize::MAX) {
        s.call(false, &r);
    }
    for r in &resp[1..] {
        s.call(false, r);
    }
    let others = other_records();
    s.call(false, &others[1]).call(true, &others[0]);
    v.push(s.encode());
    // A lost chunk, a truncated call, the static path's SNI_SENT.
    let mut s = Script::default();
    s.call(
        false,
        &sni_record(abi::SNI_SENT, 2, 0x77, "www.example.org"),
    );
    let chunks = call_records(false, 2, 20, 0x77, OK, 16);
    s.call(false, &chunks[0]).call(false, &chunks[2]);
    s.call(
        false,
        &data_record(&Call {
            write: true,
            tid: 2,
            ts: 21,
            conn: 0x77,
            len: 1 << 22,
            captured: 64,
            offset: 0,
            flags: abi::DATA_FLAG_TRUNCATED,
            data: &[b'x'; 64],
        }),
    );
    v.push(s.encode());
    // A call of more than one full chunk.
    let big: Vec<u8> = (0..abi::DATA_CHUNK + 100)
        .map(|i| (i % 251) as u8)
        .collect();
    let mut s = Script::default();
    for r in call_records(true, 4, 30, 9, &big, abi::DATA_CHUNK) {
        s.call(false, &r);
    }
    v.push(s.encode());
    named("ring", v)
}

// ---------------------------------------------------------------------------
// Config files.

fn config() -> Vec<(String, Vec<u8>)> {
    let files: [&str; 6] = [
        "sni:\n  - '*.acme.com'\n  - api.*\ncapture_no_sni: true\npids: [12]\nredact_headers: [x-api-key]\n",
        "# plainsight.yaml\nsni: [api.acme.com, \"*.internal.example\", 'grpc.*']\ncapture_no_sni: false\npids:\n  - 1\n  - 4294967295\ncomms:\n  - curl\n  - a-very-long-process-name\nredact_headers:\n  - X-Api-Key\n  - x-auth-token\n",
        "{sni: [a.b], pids: [], comms: [node], redact_headers: []}\n",
        "---\nsni: &names\n  - one.example\n  - two.example\ncomms: *names\n...\n",
        "sni: >-\n  folded\n",
        "",
    ];
    files
        .iter()
        .enumerate()
        .map(|(i, f)| (format!("config-{i:02}.yaml"), f.as_bytes().to_vec()))
        .collect()
}

// ---------------------------------------------------------------------------
// ELF: the unit tests' fixtures, their functions, synthetic Go programs.

const FIXTURES: &[&str] = &[
    "openssl_like.so",
    "boringssl_like.so",
    "gnutls_like.so",
    "notls.so",
    "awslc_static",
    "ring_static",
    "openssl_exported",
    "stripped_rustls",
];

fn fixture(name: &str) -> Option<Vec<u8>> {
    std::fs::read(Path::new("target/elf-fixtures").join(name)).ok()
}

fn elf_files() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = FIXTURES
        .iter()
        .filter_map(|n| Some((n.to_string(), fixture(n)?)))
        .collect();
    v.push(("go-1.19".into(), go_elf("go1.19.8", GoTab::Go118)));
    v
}

fn place() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for name in [
        "openssl_like.so",
        "boringssl_like.so",
        "gnutls_like.so",
        "awslc_static",
        "ring_static",
    ] {
        let Some(data) = fixture(name) else { continue };
        let Ok(syms) = elf::parse_symbols(&data[..], name, &|_| true) else {
            continue;
        };
        let mut funcs: Vec<_> = syms
            .functions
            .iter()
            .filter(|(_, l)| l.size > 0 && l.size < 4096)
            .filter_map(|(n, l)| {
                let point = PROBES
                    .iter()
                    .map(|p| p.point)
                    .find(|p| p.symbol() == n)
                    .or_else(|| inspect::aead_point(n))
                    .or_else(|| inspect::ring_point(n))?;
                let p = PROBES.iter().position(|p| p.point == point)?;
                Some((n.clone(), p, *l))
            })
            .collect();
        funcs.sort_by(|a, b| a.0.cmp(&b.0));
        for (n, point, loc) in funcs {
            // The window from the no-return stubs it may call to its end.
            let lo = syms
                .noreturn
                .iter()
                .copied()
                .chain([loc.file_offset])
                .min()
                .unwrap_or(0)
                & !0xf;
            let lo = lo.max(loc.file_offset.saturating_sub(0xff00));
            let end = (loc.file_offset + loc.size) as usize;
            let Some(code) = data.get(lo as usize..end) else {
                continue;
            };
            let mut h = vec![0u8; PLACE_HEADER];
            h[0] = point as u8;
            h[1..3].copy_from_slice(&((loc.file_offset - lo) as u16).to_le_bytes());
            h[3..5].copy_from_slice(&(loc.size as u16).to_le_bytes());
            for (i, nr) in syms
                .noreturn
                .iter()
                .filter(|&&o| o >= lo)
                .take(2)
                .enumerate()
            {
                h[5 + 2 * i..7 + 2 * i].copy_from_slice(&((nr - lo) as u16).to_le_bytes());
            }
            h.extend_from_slice(code);
            v.push((
                format!(
                    "{}-{}",
                    name.trim_end_matches(".so"),
                    n.rsplit("EVP_AEAD_CTX_").next().unwrap_or(&n)
                ),
                h,
            ));
        }
    }
    v.dedup_by(|a, b| a.0 == b.0);
    v
}

/// pclntab layouts the generator writes.
#[derive(Clone, Copy)]
pub enum GoTab {
    Go118,
    Go120,
}

/// A small static Go-like executable: one PT_LOAD, `.text` with the
/// crypto/tls functions (RETs inside), `.gopclntab` naming them,
/// `.go.buildinfo` with `version`.
pub fn go_elf(version: &str, tab: GoTab) -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const TEXT: usize = 0x100;
    let funcs = [
        "main.main",
        "crypto/tls.(*Conn).Write",
        "crypto/tls.(*Conn).Read",
        "crypto/tls.(*Conn).clientHandshake",
        "crypto/tls.(*Conn).Close",
    ];
    // push rbp; mov rbp,rsp; test rax,rax; je +2; pop rbp; ret; pop rbp; ret; int3 padding
    let body: &[u8] = &[
        0x55, 0x48, 0x89, 0xe5, 0x48, 0x85, 0xc0, 0x74, 0x02, 0x5d, 0xc3, 0x5d, 0xc3,
    ];
    let mut text = Vec::new();
    for _ in funcs {
        let mut f = body.to_vec();
        f.resize(0x40, 0xcc);
        text.extend(f);
    }
    let pcln = pclntab(&funcs, BASE + TEXT as u64, 0x40, tab);
    let mut bi = b"\xff Go buildinf:".to_vec();
    bi.extend_from_slice(&[8, 2]);
    bi.resize(32, 0);
    bi.push(version.len() as u8);
    bi.extend_from_slice(version.as_bytes());
    let modinfo = "path\tcommand-line-arguments\nbuild\t-compiler=gc\n";
    bi.push(modinfo.len() as u8);
    bi.extend_from_slice(modinfo.as_bytes());
    let shstr = b"\0.text\0.gopclntab\0.go.buildinfo\0.shstrtab\0".to_vec();

    let mut out = vec![0u8; TEXT];
    out.extend(&text);
    let align = |out: &mut Vec<u8>| out.resize(out.len().next_multiple_of(16), 0);
    align(&mut out);
    let pcln_off = out.len();
    out.extend(&pcln);
    align(&mut out);
    let bi_off = out.len();
    out.extend(&bi);
    let shstr_off = out.len();
    out.extend(&shstr);
    align(&mut out);
    let shoff = out.len();
    // section headers: null, .text, .gopclntab, .go.buildinfo, .shstrtab
    let sections = [
        (0u32, 0u32, 0u64, 0usize, 0usize),
        (1, 1, 6, TEXT, text.len()),
        (7, 1, 2, pcln_off, pcln.len()),
        (18, 1, 3, bi_off, bi.len()),
        (32, 3, 0, shstr_off, shstr.len()),
    ];
    for (name, ty, flags, off, size) in sections {
        let mut sh = vec![0u8; 64];
        sh[0..4].copy_from_slice(&name.to_le_bytes());
        sh[4..8].copy_from_slice(&ty.to_le_bytes());
        sh[8..16].copy_from_slice(&flags.to_le_bytes());
        let addr = if ty == 1 { BASE + off as u64 } else { 0 };
        sh[16..24].copy_from_slice(&addr.to_le_bytes());
        sh[24..32].copy_from_slice(&(off as u64).to_le_bytes());
        sh[32..40].copy_from_slice(&(size as u64).to_le_bytes());
        sh[48..56].copy_from_slice(&1u64.to_le_bytes());
        out.extend(sh);
    }
    let total = out.len() as u64;
    // ELF header
    let mut h = vec![0u8; 64];
    h[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
    h[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    h[18..20].copy_from_slice(&0x3eu16.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h[24..32].copy_from_slice(&(BASE + TEXT as u64).to_le_bytes());
    h[32..40].copy_from_slice(&64u64.to_le_bytes());
    h[40..48].copy_from_slice(&(shoff as u64).to_le_bytes());
    h[52..54].copy_from_slice(&64u16.to_le_bytes());
    h[54..56].copy_from_slice(&56u16.to_le_bytes());
    h[56..58].copy_from_slice(&1u16.to_le_bytes());
    h[58..60].copy_from_slice(&64u16.to_le_bytes());
    h[60..62].copy_from_slice(&(sections.len() as u16).to_le_bytes());
    h[62..64].copy_from_slice(&(sections.len() as u16 - 1).to_le_bytes());
    // PT_LOAD of the whole file, R+X
    let mut ph = vec![0u8; 56];
    ph[0..4].copy_from_slice(&1u32.to_le_bytes());
    ph[4..8].copy_from_slice(&5u32.to_le_bytes());
    ph[16..24].copy_from_slice(&BASE.to_le_bytes());
    ph[24..32].copy_from_slice(&BASE.to_le_bytes());
    ph[32..40].copy_from_slice(&total.to_le_bytes());
    ph[40..48].copy_from_slice(&total.to_le_bytes());
    ph[48..56].copy_from_slice(&0x1000u64.to_le_bytes());
    out[..64].copy_from_slice(&h);
    out[64..120].copy_from_slice(&ph);
    out
}

/// A Go 1.18+ pclntab: pcHeader, funcnametab, cutab, filetab, pctab,
/// functab with `_func` records.
fn pclntab(funcs: &[&str], text_va: u64, size: u32, tab: GoTab) -> Vec<u8> {
    let (magic, func_len) = match tab {
        GoTab::Go118 => (0xffff_fff0u32, 40usize),
        GoTab::Go120 => (0xffff_fff1u32, 44usize),
    };
    let mut names = Vec::new();
    let mut name_off = Vec::new();
    for f in funcs {
        name_off.push(names.len() as u32);
        names.extend_from_slice(f.as_bytes());
        names.push(0);
    }
    let header = 8 + 8 * 8;
    let funcname = header;
    let cu = funcname + names.len();
    let filetab = cu + 4;
    let files = b"main.go\0";
    let pctab = filetab + files.len();
    let pcdata = [0u8, 2, 0, 0]; // one pc-value pair, then end
    let functab = pctab + pcdata.len();
    let n = funcs.len();
    let mut t = vec![0u8; header];
    t[0..4].copy_from_slice(&magic.to_le_bytes());
    t[6] = 1;
    t[7] = 8;
    let fields = [
        n as u64,
        1,
        text_va,
        funcname as u64,
        cu as u64,
        filetab as u64,
        pctab as u64,
        functab as u64,
    ];
    for (i, f) in fields.iter().enumerate() {
        t[8 + 8 * i..16 + 8 * i].copy_from_slice(&f.to_le_bytes());
    }
    t.extend(&names);
    t.extend([0u8; 4]);
    t.extend(files);
    t.extend(pcdata);
    let records = (n + 1) * 8;
    for i in 0..=n {
        let entry = (i as u32) * size;
        let off = if i < n {
            (records + i * func_len) as u32
        } else {
            0
        };
        t.extend(entry.to_le_bytes());
        t.extend(off.to_le_bytes());
    }
    for (i, _) in funcs.iter().enumerate() {
        let mut f = vec![0u8; func_len];
        f[0..4].copy_from_slice(&((i as u32) * size).to_le_bytes());
        f[4..8].copy_from_slice(&name_off[i].to_le_bytes());
        t.extend(f);
    }
    t
}

fn go() -> Vec<(String, Vec<u8>)> {
    vec![
        ("go-1.19".into(), go_elf("go1.19.8", GoTab::Go118)),
        ("go-1.22".into(), go_elf("go1.22.1", GoTab::Go120)),
        ("go-1.16-refused".into(), go_elf("go1.16.15", GoTab::Go118)),
        ("go-devel".into(), go_elf("devel +abc", GoTab::Go120)),
    ]
}

// ---------------------------------------------------------------------------
// ClientHello / ServerHello (real ones from Python's ssl are in the corpus)

/// A ClientHello record: `exts` (type, body) in order.
fn client_hello(session: usize, suites: usize, exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend([0x5a; 32]);
    body.push(session as u8);
    body.extend(vec![7; session]);
    body.extend((suites as u16 * 2).to_be_bytes());
    body.extend(vec![0x13; suites * 2]);
    body.extend([1, 0]);
    let mut e = Vec::new();
    for (t, b) in exts {
        e.extend(t.to_be_bytes());
        e.extend((b.len() as u16).to_be_bytes());
        e.extend(b);
    }
    body.extend((e.len() as u16).to_be_bytes());
    body.extend(e);
    let mut hs = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
    hs.extend(body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

fn sni(kind: u8, name: &[u8]) -> Vec<u8> {
    let mut v = ((name.len() + 3) as u16).to_be_bytes().to_vec();
    v.push(kind);
    v.extend((name.len() as u16).to_be_bytes());
    v.extend(name);
    v
}

fn hello() -> Vec<(String, Vec<u8>)> {
    let host = sni(0, b"api.acme.com");
    let others: Vec<(u16, Vec<u8>)> = (0..70).map(|i| (10 + i, vec![i as u8; 3])).collect();
    let mut v = vec![
        client_hello(32, 3, &[(0, host.clone())]),
        client_hello(
            0,
            1,
            &[(11, vec![1, 0]), (10, vec![0, 2, 0, 29]), (0, host.clone())],
        ),
        client_hello(0, 1, &[(0, sni(1, b"not-a-host-name"))]),
        client_hello(0, 1, &[(0, sni(0, &[b'a'; 300]))]),
        client_hello(255, 100, &[(0, host.clone())]),
    ];
    let mut many = others[..63].to_vec();
    many.push((0, host.clone()));
    v.push(client_hello(0, 1, &many));
    let mut too_many = others.clone();
    too_many.push((0, host.clone()));
    v.push(client_hello(0, 1, &too_many));
    // Cut inside the name, and a record longer than the bytes copied.
    let whole = client_hello(0, 1, &[(0, host)]);
    v.push(whole[..whole.len() - 4].to_vec());
    let mut long = client_hello(0, 1, &[(21, vec![0; 5000]), (0, sni(0, b"x.io"))]);
    long.truncate(4200);
    v.push(long);
    named("hello", v)
}
