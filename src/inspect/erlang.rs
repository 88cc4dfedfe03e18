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
    let mut cookie = None;
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
            // Its result, after the call returns.
            Callee::OpenFinal => {
                let (ip, verified) = result_point(code, f.vaddr, *next);
                cookie = Some(verified);
                (
                    ProbePoint::ErlangOpenDone,
                    at(ip),
                    "EVP_DecryptFinal_ex return",
                )
            }
        };
        let mut t = Target::new(
            point,
            format!("{NIF} +{:#x} ({what})", ip - f.vaddr),
            offset,
            0,
        );
        t.cookie = cookie.take();
        out.push(t);
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
/// Where `EVP_DecryptFinal_ex`'s result is read, with the value `eax`
/// holds there when the call returned 1 (the tag verified), as the probe's
/// cookie. At the instruction the call returns to, unless the kernel would
/// single-step that one (~10 us a record here): then at the first one it
/// emulates, as long as those before it only compare the result or add a
/// constant to it (`sub eax, 1; je`). `next` is inside `code`.
fn result_point(code: &[u8], vaddr: u64, next: u64) -> (u64, u64) {
    use iced_x86::{Mnemonic, OpKind, Register};
    let at_call = (next, 1);
    let Some(rest) = usize::try_from(next - vaddr)
        .ok()
        .and_then(|o| code.get(o..))
    else {
        return at_call;
    };
    let mut want: i32 = 1;
    let mut d = Decoder::with_ip(64, rest, next, DecoderOptions::NONE);
    for ins in d.iter().take(8) {
        let o = (ins.ip() - next) as usize;
        let bytes = rest.get(o..o + ins.len()).unwrap_or_default();
        if super::place::emulated(&ins, bytes).is_some() {
            return (ins.ip(), u64::from(want as u32));
        }
        let on_eax = ins.op_count() == 2
            && ins.op0_kind() == OpKind::Register
            && matches!(ins.op0_register(), Register::EAX | Register::RAX);
        let imm = || match ins.op1_kind() {
            OpKind::Immediate8to32
            | OpKind::Immediate32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => i32::try_from(ins.immediate(1) as i64).ok(),
            _ => None,
        };
        match ins.mnemonic() {
            // Flags only.
            Mnemonic::Test | Mnemonic::Cmp => {}
            Mnemonic::Sub if on_eax => match imm() {
                Some(v) => want = want.wrapping_sub(v),
                None => return at_call,
            },
            Mnemonic::Add if on_eax => match imm() {
                Some(v) => want = want.wrapping_add(v),
                None => return at_call,
            },
            _ => return at_call,
        }
    }
    at_call
}

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

    /// The result is read at the first emulated instruction after the
    /// call, with what eax then holds for 1, as long as only compares and
    /// constant additions come before it; else right after the call.
    #[test]
    fn the_result_is_read_without_a_single_step_when_its_value_is_known() {
        let base = 0x2000;
        // sub eax, 1; je +0
        let sub_je = [0x83, 0xe8, 0x01, 0x0f, 0x84, 0, 0, 0, 0];
        assert_eq!(result_point(&sub_je, base, base), (base + 3, 0));
        // test eax, eax; jne +0
        let test_jne = [0x85, 0xc0, 0x75, 0x00];
        assert_eq!(result_point(&test_jne, base, base), (base + 2, 1));
        // cmp eax, 1; add eax, 4; jmp +0
        let cmp_add_jmp = [0x83, 0xf8, 0x01, 0x83, 0xc0, 0x04, 0xeb, 0x00];
        assert_eq!(result_point(&cmp_add_jmp, base, base), (base + 6, 5));
        // jcc right away: read there, unchanged.
        assert_eq!(result_point(&[0x74, 0x00], base, base), (base, 1));
        // mov ebx, eax; je: eax may be anything then (not followed).
        let mov_je = [0x89, 0xc3, 0x74, 0x00];
        assert_eq!(result_point(&mov_je, base, base), (base, 1));
        // sub eax, ebx: not a constant.
        let sub_reg = [0x29, 0xd8, 0x74, 0x00];
        assert_eq!(result_point(&sub_reg, base, base), (base, 1));
        // sub ecx, 1 touches another register: not followed either.
        let sub_ecx = [0x83, 0xe9, 0x01, 0x74, 0x00];
        assert_eq!(result_point(&sub_ecx, base, base), (base, 1));
        // Code that ends first: right after the call.
        assert_eq!(result_point(&[0x83, 0xe8], base, base), (base, 1));
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
        // `sub eax, 1` at +0x7e1 is single-stepped; the `je` after it is
        // emulated, and eax is 0 there when the tag verified.
        assert_eq!(at(ProbePoint::ErlangOpenDone), [0x7e4]);
        let done = insp
            .targets
            .iter()
            .find(|t| t.point == ProbePoint::ErlangOpenDone);
        assert_eq!(done.and_then(|t| t.cookie), Some(0));
    }
}
