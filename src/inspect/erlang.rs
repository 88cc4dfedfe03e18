//! Erlang/OTP's crypto NIF (`crypto.so`): Erlang's `ssl` seals and opens
//! every AEAD record with one call of its `aead_cipher_nif`, which calls
//! libcrypto's `EVP_CipherInit_ex`, `EVP_CipherUpdate`, `EVP_CipherFinal_ex`
//! and `EVP_DecryptFinal_ex` through its PLT (docs/erlang.md). The probes go
//! on those call instructions inside the function, found by decoding it:
//! libcrypto itself is never probed (every OpenSSL program would pay), and
//! only `beam.smp` runs this code. Exact or nothing: a function whose calls
//! are not all found, or not as expected, is reported, not probed.

use iced_x86::{Code, Decoder, DecoderOptions};
use object::read::elf::ElfFile64;
use object::{Endianness, Object, ObjectSymbol, ObjectSymbolTable, ReadRef, RelocationTarget};

use super::{ElfSymbols, ProbePoint, Target};

/// The NIF function whose calls are probed.
pub const NIF: &str = "aead_cipher_nif";

/// The libcrypto functions called, and what their call sites are.
const CALLEES: [(&str, Callee); 4] = [
    ("EVP_CipherInit_ex", Callee::Init),
    ("EVP_CipherUpdate", Callee::Update),
    ("EVP_CipherFinal_ex", Callee::SealFinal),
    ("EVP_DecryptFinal_ex", Callee::OpenFinal),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Callee {
    Init,
    Update,
    SealFinal,
    OpenFinal,
}

/// Instructions of the function decoded at most (it has about 500).
const MAX_INSNS: usize = 4096;
/// Largest function decoded (Debian's is 2189 bytes).
const MAX_SIZE: u64 = 64 << 10;
/// Dynamic relocations looked at, at most.
const MAX_RELOCS: usize = 1 << 16;

/// Where the probes go in `aead_cipher_nif`, or why they cannot.
pub fn targets<'d, R: ReadRef<'d>>(data: R, syms: &ElfSymbols) -> Result<Vec<Target>, String> {
    let f = syms.get(NIF).ok_or("no aead_cipher_nif")?;
    if f.size == 0 || f.size > MAX_SIZE {
        return Err(format!(
            "aead_cipher_nif has an unexpected size ({})",
            f.size
        ));
    }
    let stubs = callee_stubs(data)?;
    let code = super::elf::bytes_at(data, f.file_offset, f.size)
        .filter(|c| c.len() as u64 == f.size)
        .ok_or("aead_cipher_nif cannot be read")?;
    let sites = call_sites(code, f.vaddr, &stubs);
    let at = |ip: u64| f.file_offset + (ip - f.vaddr);
    let mut out = Vec::new();
    for (callee, ip, next) in &sites {
        let (point, offset, what) = match callee {
            Callee::Init => (
                ProbePoint::ErlangCipherInit,
                at(*ip),
                "EVP_CipherInit_ex call",
            ),
            Callee::Update => (
                ProbePoint::ErlangCipherUpdate,
                at(*ip),
                "EVP_CipherUpdate call",
            ),
            Callee::SealFinal => (
                ProbePoint::ErlangSealFinal,
                at(*ip),
                "EVP_CipherFinal_ex call",
            ),
            // Its result, at the instruction the call returns to.
            Callee::OpenFinal => (
                ProbePoint::ErlangOpenDone,
                at(*next),
                "EVP_DecryptFinal_ex return",
            ),
        };
        out.push(Target::new(
            point,
            format!("{NIF} +{:#x} ({what})", ip - f.vaddr),
            offset,
            0,
        ));
    }
    let count = |c: Callee| sites.iter().filter(|s| s.0 == c).count();
    // The sequence of docs/erlang.md: the cipher, then the key and nonce
    // (two paths), the additional data and the record (three calls), and
    // one end each way. Another shape is another NIF: not guessed at.
    if count(Callee::Init) < 2
        || count(Callee::Update) < 2
        || count(Callee::SealFinal) != 1
        || count(Callee::OpenFinal) != 1
    {
        return Err(format!(
            "aead_cipher_nif does not call libcrypto as expected: {} EVP_CipherInit_ex, {} \
             EVP_CipherUpdate, {} EVP_CipherFinal_ex, {} EVP_DecryptFinal_ex calls",
            count(Callee::Init),
            count(Callee::Update),
            count(Callee::SealFinal),
            count(Callee::OpenFinal)
        ));
    }
    Ok(out)
}

/// The PLT stubs of the callees: (stub address, callee), sorted.
fn callee_stubs<'d, R: ReadRef<'d>>(data: R) -> Result<Vec<(u64, Callee)>, String> {
    let elf = ElfFile64::<Endianness, R>::parse(data).map_err(|e| format!("not ELF: {e}"))?;
    let (Some(relocs), Some(dynsyms)) = (elf.dynamic_relocations(), elf.dynamic_symbol_table())
    else {
        return Err("no dynamic relocations".into());
    };
    // GOT slots of the callees (imports: relocated to their names).
    let mut slots: Vec<(u64, Callee)> = relocs
        .take(MAX_RELOCS)
        .filter_map(|(got, r)| match r.target() {
            RelocationTarget::Symbol(i) => {
                let sym = dynsyms.symbol_by_index(i).ok()?;
                let name = super::elf::plain_name(sym.name().ok()?);
                CALLEES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, c)| (got, *c))
            }
            _ => None,
        })
        .collect();
    slots.sort_unstable_by_key(|s| s.0);
    let mut stubs = super::elf::plt_stubs(&elf, |slot| {
        let k = slots.binary_search_by_key(&slot, |s| s.0).ok()?;
        Some(slots[k].1)
    });
    stubs.sort_unstable_by_key(|s| s.0);
    for (_, c) in CALLEES {
        if !stubs.iter().any(|s| s.1 == c) {
            return Err("aead_cipher_nif's libcrypto calls have no PLT stubs".into());
        }
    }
    Ok(stubs)
}

/// The direct calls of the stubs in `code` (at `vaddr`): (callee, the
/// call's address, the next instruction's).
fn call_sites(code: &[u8], vaddr: u64, stubs: &[(u64, Callee)]) -> Vec<(Callee, u64, u64)> {
    let mut out = Vec::new();
    let mut d = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
    for ins in d.iter().take(MAX_INSNS) {
        if ins.code() != Code::Call_rel32_64 {
            continue;
        }
        // A call that ends the function has no instruction after it to
        // probe: not this NIF's shape (the count check refuses it).
        let end = vaddr.saturating_add(code.len() as u64);
        if let Ok(k) = stubs.binary_search_by_key(&ins.near_branch_target(), |s| s.0) {
            if ins.next_ip() < end {
                out.push((stubs[k].1, ins.ip(), ins.next_ip()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `call rel32` at `at` to `target`.
    fn call(at: u64, target: u64) -> Vec<u8> {
        let rel = (target as i64 - (at as i64 + 5)) as i32;
        [&[0xe8][..], &rel.to_le_bytes()].concat()
    }

    /// Direct calls of the stubs are found, with the address after each;
    /// calls elsewhere, and a call that ends the code, are not.
    #[test]
    fn call_sites_of_the_stubs_only() {
        let base = 0x1000;
        let stubs = [(0x100, Callee::Init), (0x110, Callee::OpenFinal)];
        let mut code = call(base, 0x100);
        code.extend(call(base + 5, 0x200)); // not a stub
        code.push(0x90);
        code.extend(call(base + 11, 0x110));
        code.push(0x90);
        code.extend(call(base + 17, 0x100)); // the last instruction
        let sites = call_sites(&code, base, &stubs);
        assert_eq!(
            sites,
            [
                (Callee::Init, base, base + 5),
                (Callee::OpenFinal, base + 11, base + 16)
            ]
        );
    }

    /// Debian 12's crypto-5.1.2, where docs/erlang.md measured: the calls
    /// at the offsets it lists (checked when the file is installed).
    #[test]
    fn debian_crypto_nif_calls() {
        let path = std::path::Path::new("/usr/lib/erlang/lib/crypto-5.1.2/priv/lib/crypto.so");
        if !path.exists() {
            return;
        }
        let insp = super::super::inspect_file(path, 1 << 30, true).unwrap();
        assert_eq!(insp.library, Some(super::super::TlsLibrary::Erlang));
        let f = 0xa090;
        let at = |p: ProbePoint| -> Vec<u64> {
            insp.targets
                .iter()
                .filter(|t| t.point == p)
                .map(|t| t.offset - f)
                .collect()
        };
        assert_eq!(at(ProbePoint::ErlangCipherInit), [0x2ec, 0x595, 0x62e]);
        assert_eq!(at(ProbePoint::ErlangCipherUpdate), [0x5cf, 0x6a7, 0x6e0]);
        assert_eq!(at(ProbePoint::ErlangSealFinal), [0x7f8]);
        assert_eq!(at(ProbePoint::ErlangOpenDone), [0x7e1]);
    }
}
