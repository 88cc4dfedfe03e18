//! Every fuzz harness on every seed of `fuzz/corpus/<harness>/` and on
//! every input that ever made one fail (`fuzz/regressions/<harness>/`).
//! Fast (`hello` runs BPF: root, as e2e runs); `make fuzz` does the fuzzing
//! itself.
//!
//! A few checks that the seeds reach deep into their parsers (a seed the
//! parser refuses at its first byte fuzzes nothing).

use std::path::{Path, PathBuf};

use plainsight::decode::conn::{ConnDecoder, Item};
use plainsight::decode::http2::Http2Conn;
use plainsight::decode::{Peer, Redact};
use plainsight::fuzzing::{self, Script, HARNESSES, OP_SERVER, PLACE_HEADER};
use plainsight::inspect::{elf, go, place};
use plainsight::probes::PROBES;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(kind: &str, harness: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(root().join(kind).join(harness)) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn every_harness_on_its_corpus_and_regressions() {
    let mut failed = Vec::new();
    for (name, h) in HARNESSES {
        let cases: Vec<PathBuf> = files("corpus", name)
            .into_iter()
            .chain(files("regressions", name))
            .collect();
        assert!(
            !cases.is_empty(),
            "no corpus or regression file for harness {name}"
        );
        for f in cases {
            let data = read(&f);
            let t = std::time::Instant::now();
            if std::panic::catch_unwind(|| h(&data)).is_err() {
                failed.push(f.display().to_string());
            }
            assert!(
                t.elapsed() < std::time::Duration::from_secs(5),
                "{}: took {:?}",
                f.display(),
                t.elapsed()
            );
        }
    }
    assert!(failed.is_empty(), "harnesses failed on: {failed:#?}");
}

#[test]
fn every_corpus_folder_is_a_harness() {
    for kind in ["corpus", "regressions"] {
        let Ok(rd) = std::fs::read_dir(root().join(kind)) else {
            continue;
        };
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(
                fuzzing::harness(&n).is_some(),
                "fuzz/{kind}/{n} is no harness"
            );
        }
    }
}

fn seed(harness: &str, name: &str) -> Vec<u8> {
    read(&root().join("corpus").join(harness).join(name))
}

/// The synthetic Go programs parse: crypto/tls found, RETs found; Go 1.16
/// refused by version.
#[test]
fn go_seeds_are_go_programs() {
    for (name, ok) in [
        ("go-1.19", true),
        ("go-1.22", true),
        ("go-1.16-refused", false),
    ] {
        let data = seed("go", name);
        let syms = elf::parse_symbols(&data[..], name, &|_| true).unwrap();
        let r = go::inspect_go(&data, &syms.segments, Path::new(name));
        if ok {
            let g = r
                .unwrap()
                .unwrap_or_else(|| panic!("{name}: no crypto/tls"));
            assert_eq!(g.write_rets.len(), 2, "{name}");
            assert!(g.handshake.is_some() && g.close.is_some(), "{name}");
        } else {
            assert!(r.unwrap_err().contains("Go before 1.17"), "{name}");
        }
    }
}

/// The placement seeds are real functions: Debian's libssl shape of
/// SSL_write gets its entry at +0x16 and its return at +0x38.
#[test]
fn place_seed_is_placed_inside() {
    let data = seed("place", "openssl_like-SSL_write");
    let (h, map) = data.split_at(PLACE_HEADER);
    assert_eq!(PROBES[h[0] as usize].point.symbol(), "SSL_write");
    let off = u64::from(u16::from_le_bytes([h[1], h[2]]));
    let size = u64::from(u16::from_le_bytes([h[3], h[4]]));
    let nr = u64::from(u16::from_le_bytes([h[5], h[6]]));
    let code = &map[off as usize..(off + size) as usize];
    let noreturn = |t: u64| {
        // the call of __stack_chk_fail's stub
        let at = (t - off) as usize;
        code.get(at) == Some(&0xe8)
            && i32::from_le_bytes(code[at + 1..at + 5].try_into().unwrap()) as i64 + t as i64 + 5
                == nr as i64
    };
    let e = place::choose_entry(
        code,
        off,
        place::arg_use(PROBES[h[0] as usize].point),
        &noreturn,
    );
    assert_eq!(e.offset, off + 0x16, "{}", e.why);
    assert_eq!(
        place::choose_returns(code, off, &noreturn).unwrap(),
        [off + 0x38]
    );
}

/// The HTTP/2 seeds decode to exchanges without an error.
#[test]
fn http2_seeds_decode() {
    for f in files("corpus", "http2") {
        let s = Script::parse(&read(&f));
        let mut c = Http2Conn::new(Redact::none());
        let mut n = 0;
        for op in &s.ops {
            let peer = if op.flags & OP_SERVER != 0 {
                Peer::Server
            } else {
                Peer::Client
            };
            let o = c
                .push(peer, &op.data, 0)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            n += o.exchanges.len();
        }
        assert!(n >= 2, "{}: {n} exchanges", f.display());
    }
}

/// The HTTP/1 conversations of the connection seeds make exchanges.
#[test]
fn conn_seeds_make_exchanges() {
    let data = seed("conn", "conn-00");
    let s = Script::parse(&data);
    let mut c = ConnDecoder::new(Redact::new(&[]));
    let mut items = Vec::new();
    for op in &s.ops {
        items.extend(c.push(op.flags & OP_SERVER == 0, &op.data, 1, 0).items);
    }
    assert!(
        items.iter().any(|i| matches!(i, Item::Exchange(_))),
        "{items:?}"
    );
}

/// Database seeds decode to records (each split every 7 bytes too), and
/// the connection decoder classifies the sessions in its corpus.
#[test]
fn db_seeds_make_records() {
    use plainsight::decode::db::{DbConn, DbSystem, QueryText};
    for (name, system, want) in [
        ("postgres", DbSystem::Postgresql, 4),
        ("redis", DbSystem::Redis, 11),
        ("mysql", DbSystem::Mysql, 4),
    ] {
        for f in files("corpus", name) {
            let s = Script::parse(&read(&f));
            let mut c = DbConn::new(system, QueryText::Full);
            let mut n = 0;
            for op in &s.ops {
                let peer = if op.flags & OP_SERVER != 0 {
                    Peer::Server
                } else {
                    Peer::Client
                };
                let o = c.push(peer, &op.data, 1);
                assert_eq!(o.error, None, "{}", f.display());
                n += o.queries.len();
            }
            assert_eq!(n, want, "{}", f.display());
        }
    }
    let dbs = files("corpus", "conn")
        .iter()
        .filter(|f| {
            let s = Script::parse(&read(f));
            let mut c = ConnDecoder::new(Redact::new(&[]));
            s.ops.iter().any(|op| {
                c.push(op.flags & OP_SERVER == 0, &op.data, 1, 0)
                    .items
                    .iter()
                    .any(|i| matches!(i, Item::Db(_)))
            })
        })
        .count();
    assert_eq!(dbs, 3);
}

/// Ring seeds are records the parser accepts.
#[test]
fn ring_seeds_parse() {
    for f in files("corpus", "ring") {
        let s = Script::parse(&read(&f));
        assert!(!s.ops.is_empty());
        for op in &s.ops {
            plainsight::abi::parse(&op.data).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        }
    }
}

/// The BPF ClientHello parser (run in the kernel) finds the server names of
/// real ClientHellos exactly, and tells a ServerHello.
#[test]
fn bpf_hello_parser_on_real_hellos() {
    let name = |f: &str| {
        let data = read(&root().join("corpus/hello").join(f));
        let got = fuzzing::hello_bpf(&data).unwrap();
        assert!(got.client_hello, "{f}");
        let (o, l) = (got.name.0 as usize, got.name.1 as usize);
        String::from_utf8_lossy(&data[o..o + l]).into_owned()
    };
    assert_eq!(name("python-tls13-sni"), "api.acme.com");
    assert_eq!(name("python-tls12-sni"), "www.example.org");
    assert_eq!(name("python-no-sni"), "");
    let sh = fuzzing::hello_bpf(&read(&root().join("corpus/hello/server-hello"))).unwrap();
    assert!(sh.server_hello && !sh.client_hello);
}
