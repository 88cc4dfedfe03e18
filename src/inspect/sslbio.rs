//! OpenSSL's SSL BIO (`BIO_f_ssl`): programs that read and write through
//! it (`openssl s_server -WWW`, `BIO_new_ssl_connect` clients) never call
//! the exported `SSL_read`/`SSL_write`; the BIO's own read and write
//! functions are static. `BIO_f_ssl()` returns the address of their method
//! table, so the table is found by decoding that function, and its
//! function pointers by the relocations the dynamic linker applies to it
//! (or, in a non-PIE executable, by the addresses the file holds).
//!
//! The table (`struct bio_method_st`, OpenSSL 1.1.1 and 3.x): `int type`,
//! `const char *name`, then eight-byte slots: bwrite (the `_ex` form, at
//! 16), bwrite_old, bread (`_ex`, at 32), bread_old, bputs, bgets, ctrl (at
//! 64), create, destroy, callback_ctrl. It is taken only when its type is
//! `BIO_TYPE_SSL` and its name is "ssl" (OpenSSL 1.1.0 and older lay it
//! out otherwise, and are not probed this way).

use object::elf::{PF_X, PT_LOAD, R_X86_64_RELATIVE};
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Endianness, Object, ReadRef, RelocationFlags};

use super::budget;
use super::elf::{bytes_at, vaddr_to_offset, ElfSymbols};
use super::Target;
use crate::probes::ProbePoint;

/// `BIO_TYPE_SSL`: 7 | `BIO_TYPE_FILTER`.
const BIO_TYPE_SSL: u32 = 0x0207;
/// Offsets of the slots probed, in the method table.
const SLOT_WRITE: u64 = 16;
const SLOT_READ: u64 = 32;
const SLOT_CTRL: u64 = 64;
/// Bytes of `BIO_f_ssl` decoded, at most.
const MAX_CODE: u64 = 64;

/// The SSL BIO's write, read and ctrl functions of an OpenSSL library or
/// executable whose bytes are `data`, or why they were not found (None:
/// the file has no `BIO_f_ssl`).
pub fn targets<'d, R: ReadRef<'d>>(
    data: R,
    syms: &ElfSymbols,
) -> Option<Result<Vec<Target>, String>> {
    let f = syms.get("BIO_f_ssl")?;
    Some(find(data, syms, f.vaddr, f.file_offset))
}

fn find<'d, R: ReadRef<'d>>(
    data: R,
    syms: &ElfSymbols,
    vaddr: u64,
    offset: u64,
) -> Result<Vec<Target>, String> {
    let code = bytes_at(data, offset, MAX_CODE)
        .filter(|c| !c.is_empty())
        .ok_or("BIO_f_ssl is outside the file")?;
    let table = table_address(code, vaddr)?;
    let elf = ElfFile64::<Endianness, R>::parse(data).map_err(|e| e.to_string())?;
    let read = |at: u64, len: u64| -> Option<&'d [u8]> {
        data.read_bytes_at(vaddr_to_offset(&syms.segments, at)?, len)
            .ok()
    };
    let ty = read(table, 4).ok_or("its method table is outside the file")?;
    if u32::from_le_bytes(ty.try_into().expect("4 bytes")) != BIO_TYPE_SSL {
        return Err("its method table is not BIO_TYPE_SSL".into());
    }
    let relocs = table_relocations(&elf, table);
    let slot = |at: u64| pointer_at(&relocs, data, syms, table + at);
    let name = slot(8).and_then(|n| read(n, 4));
    if name != Some(b"ssl\0") {
        return Err("its method table is not named \"ssl\"".into());
    }
    let text = executable_ranges(&elf);
    let mut out = Vec::new();
    for (point, at) in [
        (ProbePoint::SslBioWrite, SLOT_WRITE),
        (ProbePoint::SslBioRead, SLOT_READ),
        (ProbePoint::SslBioCtrl, SLOT_CTRL),
    ] {
        let func = slot(at).ok_or_else(|| format!("{point} is not in the method table"))?;
        if !text.iter().any(|&(lo, hi)| func >= lo && func < hi) {
            return Err(format!("{point} does not point into code"));
        }
        let off = vaddr_to_offset(&syms.segments, func)
            .ok_or_else(|| format!("{point} is outside the file"))?;
        out.push(Target::new(point, point.symbol().to_string(), off, 0));
    }
    Ok(out)
}

/// The address `BIO_f_ssl` (its first bytes `code`, at `vaddr`) returns:
/// its `lea rax, [rip + table]` before the `ret`.
fn table_address(code: &[u8], vaddr: u64) -> Result<u64, String> {
    use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Register};
    let mut table = None;
    for ins in Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE) {
        if ins.code() == Code::Lea_r64_m
            && ins.op0_register() == Register::RAX
            && ins.is_ip_rel_memory_operand()
        {
            table = Some(ins.ip_rel_memory_address());
        } else if ins.flow_control() == FlowControl::Return {
            return table.ok_or_else(|| "BIO_f_ssl returns no table address".to_string());
        } else if ins.code() != Code::Endbr64 && ins.code() != Code::Nopd {
            return Err("BIO_f_ssl is not `lea rax, [rip + table]; ret`".into());
        }
    }
    Err("BIO_f_ssl does not return".into())
}

/// Bytes of the method table read (its twelve slots).
const TABLE_LEN: u64 = 96;

/// The dynamic relocations applied inside the method table at `table`, read
/// in one pass: (address, the R_X86_64_RELATIVE addend, or None for another
/// kind), the first one of each address.
fn table_relocations<'d, R: ReadRef<'d>>(
    elf: &ElfFile64<'d, Endianness, R>,
    table: u64,
) -> Vec<(u64, Option<u64>)> {
    let mut out: Vec<(u64, Option<u64>)> = Vec::new();
    let Some(relocs) = elf.dynamic_relocations() else {
        return out;
    };
    for (i, (off, r)) in relocs.enumerate() {
        if i >= budget::MAX_SYMBOLS || (i % budget::CHECK_EVERY == 0 && budget::exhausted()) {
            break;
        }
        if off < table || off >= table.saturating_add(TABLE_LEN) || out.iter().any(|e| e.0 == off) {
            continue;
        }
        let value = match r.flags() {
            RelocationFlags::Elf { r_type } if r_type == R_X86_64_RELATIVE => {
                u64::try_from(r.addend()).ok()
            }
            _ => None,
        };
        out.push((off, value));
    }
    out
}

/// The pointer stored at `at`: the addend of its R_X86_64_RELATIVE
/// relocation (shared libraries, PIE), else the eight bytes the file holds.
fn pointer_at<'d, R: ReadRef<'d>>(
    relocs: &[(u64, Option<u64>)],
    data: R,
    syms: &ElfSymbols,
    at: u64,
) -> Option<u64> {
    if let Some(&(_, value)) = relocs.iter().find(|e| e.0 == at) {
        return value;
    }
    let b = data
        .read_bytes_at(vaddr_to_offset(&syms.segments, at)?, 8)
        .ok()?;
    match u64::from_le_bytes(b.try_into().ok()?) {
        0 => None,
        v => Some(v),
    }
}

/// Virtual address ranges of the executable segments.
fn executable_ranges<'d, R: ReadRef<'d>>(elf: &ElfFile64<'d, Endianness, R>) -> Vec<(u64, u64)> {
    let e = elf.endian();
    elf.elf_program_headers()
        .iter()
        .filter(|ph| ph.p_type(e) == PT_LOAD && ph.p_flags(e) & PF_X != 0)
        .map(|ph| {
            let lo = ph.p_vaddr(e);
            (lo, lo.saturating_add(ph.p_filesz(e)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian's libssl.so.3: the three functions, in its code.
    #[test]
    fn finds_the_ssl_bio_functions_of_the_system_libssl() {
        let path = std::path::Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
        let data = std::fs::read(path).expect("libssl.so.3 (libssl3)");
        let syms = super::super::elf::parse_symbols(&data[..], "libssl", &|n| n == "BIO_f_ssl")
            .expect("parses");
        let t = targets(&data[..], &syms)
            .expect("has BIO_f_ssl")
            .expect("found");
        let points: Vec<_> = t.iter().map(|t| t.point).collect();
        assert_eq!(
            points,
            [
                ProbePoint::SslBioWrite,
                ProbePoint::SslBioRead,
                ProbePoint::SslBioCtrl
            ]
        );
        // Each is a function: what it starts with is code (endbr64 or a push / sub).
        for t in &t {
            let b = &data[t.offset as usize..t.offset as usize + 4];
            assert!(t.offset > 0 && b != [0, 0, 0, 0], "{t:?}");
        }
    }

    /// Only `lea rax, [rip + table]; ret` gives a table.
    #[test]
    fn refuses_a_function_that_is_not_lea_ret() {
        // mov eax, 1; ret
        let code = [0xb8, 1, 0, 0, 0, 0xc3];
        assert!(table_address(&code, 0x1000).is_err());
        // lea rax, [rip + 0x10]; ret -> 0x1000 + 7 + 0x10
        let code = [0x48, 0x8d, 0x05, 0x10, 0, 0, 0, 0xc3];
        assert_eq!(table_address(&code, 0x1000), Ok(0x1017));
    }
}
