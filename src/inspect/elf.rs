//! Reading an ELF file's symbols and turning their addresses into the file
//! offsets uprobes are attached at.
//!
//! Both `.dynsym` (shared libraries, executables that export symbols such as
//! node) and `.symtab` (statically linked programs) are read. Versioned names
//! (`SSL_write@@OPENSSL_3.0.0`) are reduced to the plain name.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use object::elf::PT_LOAD;
use object::read::elf::Sym;
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Endianness, Object, ObjectSymbol, ReadRef, SymbolKind};
use thiserror::Error;

use super::budget;
use super::image::Image;

/// Why a file could not be inspected.
#[derive(Debug, Error)]
pub enum ElfError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is {size} bytes, more than the {limit} bytes inspected at most")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("{path} is not an ELF file")]
    NotElf { path: String },
    #[error("{path} is not a 64-bit little-endian ELF file this agent can probe")]
    Unsupported { path: String },
    #[error("malformed ELF file {path}: {reason}")]
    Malformed { path: String, reason: String },
    #[error("{path} is not inspected: {what}")]
    TooMuchWork { path: String, what: String },
}

/// Where a symbol is, both as a virtual address and as an offset in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymbolLocation {
    /// Address of the symbol in the file's own address space.
    pub vaddr: u64,
    /// Size in bytes (0 when the file does not say).
    pub size: u64,
    /// Offset of the symbol's first byte in the file: what a uprobe takes.
    pub file_offset: u64,
    /// Found in `.dynsym` (exported) rather than only in `.symtab`.
    pub dynamic: bool,
}

/// The function symbols of one ELF file, by plain name.
#[derive(Debug, Default)]
pub struct ElfSymbols {
    pub functions: HashMap<String, SymbolLocation>,
    /// The file has a `.symtab` (not stripped).
    pub has_symtab: bool,
    /// An executable (has an interpreter, or is `ET_EXEC`), not a library.
    pub is_executable: bool,
    /// Stripped executable whose bytes mention rustls (checked only for
    /// executables without `.symtab`).
    pub stripped_rustls: bool,
    /// PT_LOAD segments: (p_vaddr, p_filesz, p_offset).
    pub segments: Vec<(u64, u64, u64)>,
    /// Go crypto/tls found through `.gopclntab` (executables only), or why
    /// it cannot be probed.
    pub go: Option<Result<super::go::GoTls, String>>,
    /// Go's build information is where Go's own reader looks for it (only
    /// such files are parsed as Go).
    pub go_buildinfo: bool,
    /// File offsets of functions that never return (`__stack_chk_fail`,
    /// `abort`, ...) and of their PLT stubs, sorted.
    pub noreturn: Vec<u64>,
}

/// Functions that never return: a conditional jump to a call of one of
/// these is not a return path (probe placement relies on it).
pub const NORETURN: &[&str] = &[
    "__stack_chk_fail",
    "__stack_chk_fail_local",
    "abort",
    "__assert_fail",
    "__fortify_fail",
    "__chk_fail",
    "exit",
    "_exit",
    "__libc_fatal",
    "OPENSSL_die",
];

impl ElfSymbols {
    pub fn get(&self, name: &str) -> Option<&SymbolLocation> {
        self.functions.get(name)
    }
}

/// `SSL_write@@OPENSSL_3.0.0` -> `SSL_write`.
pub fn plain_name(name: &str) -> &str {
    match name.find('@') {
        Some(0) | None => name,
        Some(i) => &name[..i],
    }
}

/// Maps a virtual address to its file offset through the PT_LOAD segment
/// whose file-backed part contains it (no arithmetic overflow on crafted
/// headers).
pub fn vaddr_to_offset(segments: &[(u64, u64, u64)], vaddr: u64) -> Option<u64> {
    segments.iter().find_map(|&(p_vaddr, p_filesz, p_offset)| {
        let rel = vaddr.checked_sub(p_vaddr)?;
        (rel < p_filesz)
            .then(|| p_offset.checked_add(rel))
            .flatten()
    })
}

/// An image of an open file of `size` bytes (its size when it was
/// checked), read as it is parsed; more than `limit` bytes is refused.
pub fn image_of(file: File, size: u64, shown: &str, limit: u64) -> Result<Image, ElfError> {
    if size > limit {
        return Err(ElfError::TooLarge {
            path: shown.to_string(),
            size,
            limit,
        });
    }
    if size < 64 {
        return Err(ElfError::NotElf {
            path: shown.to_string(),
        });
    }
    Image::of_file(file, size).map_err(|reason| ElfError::Malformed {
        path: shown.to_string(),
        reason,
    })
}

/// Opens the file at `path` as an [`Image`] (tools; the agent opens through
/// the process's mapping, see `inspect::worker`).
pub fn open_image(path: &Path, limit: u64) -> Result<Image, ElfError> {
    let open_err = |source| ElfError::Open {
        path: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(open_err)?;
    let size = file.metadata().map_err(open_err)?.len();
    image_of(file, size, &path.display().to_string(), limit)
}

/// Reads the file at `path` whole (tests).
pub fn read_path(path: &Path, limit: u64) -> Result<Vec<u8>, ElfError> {
    let img = open_image(path, limit)?;
    Ok(whole(&img, &path.display().to_string())?.to_vec())
}
/// Reads the function symbols of the ELF file at `path` (at most `limit` bytes).
/// `want` decides which names are kept (all symbols are scanned).
#[cfg(test)]
pub fn read_symbols(
    path: &Path,
    limit: u64,
    want: &dyn Fn(&str) -> bool,
) -> Result<ElfSymbols, ElfError> {
    parse_symbols(
        &read_path(path, limit)?[..],
        &path.display().to_string(),
        want,
    )
}

/// Like [`read_symbols`], and for executables without the SSL API also
/// looks for Go's crypto/tls.
#[cfg(test)]
pub fn read_symbols_and_go(
    path: &Path,
    limit: u64,
    want: &dyn Fn(&str) -> bool,
) -> Result<ElfSymbols, ElfError> {
    symbols_and_go(&read_path(path, limit)?[..], path, want)
}

/// [`parse_symbols`], and for executables without the SSL API also Go's
/// crypto/tls (which reads the whole file).
pub fn symbols_and_go<'d, R: ReadRef<'d>>(
    data: R,
    path: &Path,
    want: &dyn Fn(&str) -> bool,
) -> Result<ElfSymbols, ElfError> {
    let mut syms = parse_symbols(data, &path.display().to_string(), want)?;
    if syms.is_executable && syms.go_buildinfo && syms.get("SSL_write").is_none() {
        let all = whole(data, &path.display().to_string())?;
        syms.go = super::go::inspect_go(all, &syms.segments, path).transpose();
    }
    Ok(syms)
}

/// Up to `len` bytes of `data` from file offset `at`, fewer where the file
/// ends; None past its end, or if they cannot be read.
pub fn bytes_at<'d, R: ReadRef<'d>>(data: R, at: u64, len: u64) -> Option<&'d [u8]> {
    let len = len.min(data.len().ok()?.checked_sub(at)?);
    data.read_bytes_at(at, len).ok()
}

/// All of `data`, or the error of a file that could not be read whole.
fn whole<'d, R: ReadRef<'d>>(data: R, shown: &str) -> Result<&'d [u8], ElfError> {
    data.len()
        .and_then(|n| data.read_bytes_at(0, n))
        .map_err(|()| ElfError::Malformed {
            path: shown.to_string(),
            reason: "it could not be read whole (it changed while read?)".into(),
        })
}

/// The PLT stubs of `elf` (`.plt`, `.plt.sec`, `.plt.got`; their first
/// `budget::MAX_PLT` bytes) that jump through a GOT slot `slot_of` knows:
/// each stub's address and what `slot_of` said of its slot.
pub fn plt_stubs<'d, R: ReadRef<'d>, T>(
    elf: &ElfFile64<'d, Endianness, R>,
    slot_of: impl Fn(u64) -> Option<T>,
) -> Vec<(u64, T)> {
    use object::read::ObjectSection;
    let mut out = Vec::new();
    for sec in elf.sections() {
        let Ok(name) = sec.name() else { continue };
        if !matches!(name, ".plt" | ".plt.sec" | ".plt.got") {
            continue;
        }
        let Ok(code) = sec.data() else { continue };
        let code = &code[..code.len().min(budget::MAX_PLT)];
        let entsize = match sec.elf_section_header().sh_entsize.get(elf.endian()) {
            0 => 16,
            n => n,
        };
        let mut dec =
            iced_x86::Decoder::with_ip(64, code, sec.address(), iced_x86::DecoderOptions::NONE);
        for ins in &mut dec {
            if ins.flow_control() != iced_x86::FlowControl::IndirectBranch
                || !ins.is_ip_rel_memory_operand()
            {
                continue;
            }
            if let Some(v) = slot_of(ins.ip_rel_memory_address()) {
                let stub = sec.address() + (ins.ip() - sec.address()) / entsize * entsize;
                out.push((stub, v));
            }
        }
    }
    out
}

/// The relocations that can fill a PLT stub's GOT slot, as (slot, dynamic
/// symbol index), at most `max`: those of the PLT's own section
/// (`.rela.plt`: SHT_RELA with SHF_INFO_LINK), and those of `.rela.dyn`
/// only when the file has `.plt.got` stubs (whose slots it fills). A
/// large file's `.rela.dyn` is a million relative relocations (26 MB in
/// Chromium) that no stub uses: reading them cost more than the rest.
pub fn plt_relocations<'d, R: ReadRef<'d>>(
    elf: &ElfFile64<'d, Endianness, R>,
    max: usize,
) -> Vec<(u64, u32)> {
    use object::read::elf::SectionHeader as _;
    let e = elf.endian();
    let table = elf.elf_section_table();
    let plt_got = table
        .iter()
        .any(|h| table.section_name(e, h).is_ok_and(|n| n == b".plt.got"));
    let mut out = Vec::new();
    for h in table.iter() {
        let linked = h.sh_flags(e) & u64::from(object::elf::SHF_INFO_LINK) != 0;
        if h.sh_type(e) != object::elf::SHT_RELA || !(linked || plt_got) {
            continue;
        }
        let Ok(Some((relas, _))) = h.rela(e, elf.data()) else {
            continue;
        };
        for (i, r) in relas.iter().enumerate() {
            if out.len() >= max || (i % budget::CHECK_EVERY == 0 && budget::exhausted()) {
                return out;
            }
            let sym = r.r_sym(e, false);
            if sym != 0 {
                out.push((r.r_offset.get(e), sym));
            }
        }
    }
    out
}

/// The no-return functions of a file and their PLT stubs, as file offsets.
/// `defined`: the addresses of those the file defines.
fn noreturn_offsets<'d, R: ReadRef<'d>>(
    elf: &ElfFile64<'d, Endianness, R>,
    segments: &[(u64, u64, u64)],
    mut vaddrs: Vec<u64>,
) -> Vec<u64> {
    use object::read::ObjectSymbolTable;
    // GOT slots of imported no-return functions, then the PLT stubs that
    // jump through them.
    let mut slots: Vec<u64> = Vec::new();
    if let Some(dynsyms) = elf.dynamic_symbol_table() {
        for (got, idx) in plt_relocations(elf, budget::MAX_SYMBOLS) {
            if dynsyms
                .symbol_by_index(object::SymbolIndex(idx as usize))
                .ok()
                .and_then(|s| ObjectSymbol::name(&s).ok())
                .is_some_and(|n| NORETURN.contains(&plain_name(n)))
            {
                slots.push(got);
            }
        }
    }
    slots.sort_unstable();
    if !slots.is_empty() {
        let stubs = plt_stubs(elf, |slot| slots.binary_search(&slot).ok());
        vaddrs.extend(stubs.into_iter().map(|(stub, _)| stub));
    }
    let mut out: Vec<u64> = vaddrs
        .into_iter()
        .filter_map(|v| vaddr_to_offset(segments, v))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The addresses of the no-return functions defined in both symbol tables.
fn defined_noreturn<'d, R: ReadRef<'d>>(elf: &ElfFile64<'d, Endianness, R>) -> Vec<u64> {
    let mut vaddrs = Vec::new();
    for (i, sym) in elf.dynamic_symbols().chain(elf.symbols()).enumerate() {
        // Out of time: fewer no-return functions known only keeps more
        // uretprobes (placement proves less), never a wrong point.
        if i % budget::CHECK_EVERY == 0 && budget::exhausted() {
            break;
        }
        if sym.kind() == SymbolKind::Text
            && sym.is_definition()
            && ObjectSymbol::name(&sym).is_ok_and(|n| NORETURN.contains(&plain_name(n)))
        {
            vaddrs.push(ObjectSymbol::address(&sym));
        }
    }
    vaddrs
}

/// Whether Go's build information is where Go's own reader
/// (`debug/buildinfo`) finds it: at the start of the `.go.buildinfo`
/// section, or, without section headers, 16-byte aligned in the first 64
/// KiB of the first writable data segment. Anywhere else the magic is just
/// bytes (plainsight's own binary holds it as a constant), and a non-Go
/// file is not given to the Go parser (~0.3 s on a 69 MB executable).
fn go_buildinfo<'d, R: ReadRef<'d>>(elf: &ElfFile64<'d, Endianness, R>) -> bool {
    use object::read::ObjectSection;
    let magic = super::go::BUILDINFO_MAGIC;
    if let Some(sec) = elf.section_by_name(".go.buildinfo") {
        return sec.data().is_ok_and(|d| d.starts_with(magic));
    }
    let e = elf.endian();
    let Some(ph) = elf.elf_program_headers().iter().find(|ph| {
        ph.p_type(e) == PT_LOAD
            && ph.p_flags(e) & (object::elf::PF_X | object::elf::PF_W) == object::elf::PF_W
    }) else {
        return false;
    };
    bytes_at(elf.data(), ph.p_offset(e), ph.p_filesz(e).min(64 << 10))
        .is_some_and(|b| b.chunks(16).any(|c| c.starts_with(magic)))
}

/// An ELF file parsed, with what every reading of it needs.
struct Opened<'d, R: ReadRef<'d>> {
    elf: ElfFile64<'d, Endianness, R>,
    segments: Vec<(u64, u64, u64)>,
    is_executable: bool,
}

/// Parses the headers of ELF bytes. Never panics on malformed input.
fn open<'d, R: ReadRef<'d>>(data: R, shown: &str) -> Result<Opened<'d, R>, ElfError> {
    let ident = data.read_bytes_at(0, 6).unwrap_or(&[]);
    if ident.len() < 4 || &ident[..4] != b"\x7fELF" {
        return Err(ElfError::NotElf {
            path: shown.to_string(),
        });
    }
    // 64-bit little-endian only (x86_64 / aarch64 user space).
    if ident.len() < 6 || ident[4] != 2 || ident[5] != 1 {
        return Err(ElfError::Unsupported {
            path: shown.to_string(),
        });
    }
    let elf = ElfFile64::<Endianness, R>::parse(data).map_err(|e| ElfError::Malformed {
        path: shown.to_string(),
        reason: e.to_string(),
    })?;
    let endian = elf.endian();
    let size = data.len().unwrap_or(0);
    let segments: Vec<(u64, u64, u64)> = elf
        .elf_program_headers()
        .iter()
        .filter(|ph| ph.p_type(endian) == PT_LOAD)
        .map(|ph| (ph.p_vaddr(endian), ph.p_filesz(endian), ph.p_offset(endian)))
        // The part of a segment the file really has: a crafted header must
        // not give probe offsets past the end of the file.
        .filter_map(|(vaddr, filesz, offset)| {
            let room = size.checked_sub(offset)?;
            Some((vaddr, filesz.min(room), offset))
        })
        .collect();
    if segments.is_empty() {
        return Err(ElfError::Malformed {
            path: shown.to_string(),
            reason: "no loadable segment".into(),
        });
    }
    let e_type = elf.elf_header().e_type.get(endian);
    let has_interp = elf
        .elf_program_headers()
        .iter()
        .any(|ph| ph.p_type(endian) == object::elf::PT_INTERP);
    Ok(Opened {
        elf,
        segments,
        is_executable: e_type == object::elf::ET_EXEC || has_interp,
    })
}

/// Records a function symbol wanted by name.
fn add_function(
    out: &mut ElfSymbols,
    segments: &[(u64, u64, u64)],
    name: &str,
    vaddr: u64,
    size: u64,
    dynamic: bool,
) {
    let name = plain_name(name);
    if name.is_empty() || name.len() > budget::MAX_NAME {
        return;
    }
    if out.functions.len() >= budget::MAX_SYMBOLS && !out.functions.contains_key(name) {
        return;
    }
    if vaddr == 0 {
        return;
    }
    let Some(file_offset) = vaddr_to_offset(segments, vaddr) else {
        return;
    };
    out.functions
        .entry(name.to_string())
        .and_modify(|loc| loc.dynamic |= dynamic)
        .or_insert(SymbolLocation {
            vaddr,
            size,
            file_offset,
            dynamic,
        });
}

/// Parses ELF bytes and scans every symbol of both tables, keeping the
/// functions `want` names. Never panics on malformed input.
pub fn parse_symbols<'d, R: ReadRef<'d>>(
    data: R,
    shown: &str,
    want: &dyn Fn(&str) -> bool,
) -> Result<ElfSymbols, ElfError> {
    let Opened {
        elf,
        segments,
        is_executable,
    } = open(data, shown)?;
    let mut out = ElfSymbols {
        is_executable,
        ..Default::default()
    };
    let out_of_time = || ElfError::TooMuchWork {
        path: shown.to_string(),
        what: "its symbol tables take longer than the inspection budget".into(),
    };
    let mut add = |sym: &dyn SymLike, dynamic: bool| {
        if let Some(name) = sym.name().filter(|n| want(plain_name(n))) {
            add_function(
                &mut out,
                &segments,
                name,
                sym.address(),
                sym.size(),
                dynamic,
            );
        }
    };
    for (i, sym) in elf.dynamic_symbols().enumerate() {
        if i % budget::CHECK_EVERY == 0 && budget::exhausted() {
            return Err(out_of_time());
        }
        if sym.kind() == SymbolKind::Text && sym.is_definition() {
            add(&sym, true);
        }
    }
    let mut symtab = false;
    for (i, sym) in elf.symbols().enumerate() {
        if i % budget::CHECK_EVERY == 0 && budget::exhausted() {
            return Err(out_of_time());
        }
        symtab = true;
        if sym.kind() == SymbolKind::Text && sym.is_definition() {
            add(&sym, false);
        }
    }
    out.has_symtab = symtab;
    out.go_buildinfo = out.is_executable && go_buildinfo(&elf);
    out.noreturn = noreturn_offsets(&elf, &segments, defined_noreturn(&elf));
    out.segments = segments;
    if !symtab && out.is_executable {
        out.stripped_rustls = mentions_rustls(&elf);
    }
    Ok(out)
}

/// Whether the read-only data of `elf` names rustls (its panic and
/// debug strings): only those sections are read, not the code.
fn mentions_rustls<'d, R: ReadRef<'d>>(elf: &ElfFile64<'d, Endianness, R>) -> bool {
    use object::read::elf::SectionHeader;
    use object::read::ObjectSection;
    elf.sections().any(|s| {
        let h = s.elf_section_header();
        let flags = SectionHeader::sh_flags(h, elf.endian());
        SectionHeader::sh_type(h, elf.endian()) == object::elf::SHT_PROGBITS
            && flags & u64::from(object::elf::SHF_ALLOC) != 0
            && flags & u64::from(object::elf::SHF_EXECINSTR | object::elf::SHF_WRITE) == 0
            && s.data()
                .is_ok_and(|d| memchr::memmem::find(d, b"rustls").is_some())
    })
}

/// The functions named `names` that the file exports, found through its
/// `.gnu.hash` table (a few lookups, where a scan reads every symbol: node
/// has 184,000). None: the file has no usable `.gnu.hash`, or what it
/// exports does not settle what the file is. Never panics on malformed
/// input.
///
/// What this finds is all a file that exports its TLS library needs;
/// `settled` says whether it is (None otherwise, before the no-return
/// functions are looked for), and the caller falls back to
/// [`parse_symbols`] for the others. No-return functions are looked up the
/// same way, and imported ones found through the PLT as in a scan; ones
/// only in `.symtab` are not known (placement then proves less, never a
/// wrong point).
pub fn exported_symbols<'d, R: ReadRef<'d>>(
    data: R,
    shown: &str,
    names: &[&str],
    settled: &dyn Fn(&ElfSymbols) -> bool,
) -> Result<Option<ElfSymbols>, ElfError> {
    let Opened {
        elf,
        segments,
        is_executable,
    } = open(data, shown)?;
    let endian = elf.endian();
    let sections = elf.elf_section_table();
    // object's lookup divides by the bucket count and masks by the bloom
    // count: a crafted table with either at zero is not used.
    match sections.gnu_hash_header(endian, data) {
        Ok(Some(h)) if h.bucket_count.get(endian) > 0 && h.bloom_count.get(endian) > 0 => {}
        _ => return Ok(None),
    }
    let Ok(Some((hash, _))) = sections.gnu_hash(endian, data) else {
        return Ok(None);
    };
    let dynsym = elf.elf_dynamic_symbol_table();
    let versions = sections
        .versions(endian, data)
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut out = ElfSymbols {
        is_executable,
        has_symtab: !elf.elf_symbol_table().is_empty(),
        ..Default::default()
    };
    let mut noreturn = Vec::new();
    let lookup = |name: &str| {
        let (_, sym) = hash.find(
            endian,
            name.as_bytes(),
            object::elf::gnu_hash(name.as_bytes()),
            None,
            dynsym,
            &versions,
        )?;
        let defined = sym.st_type() == object::elf::STT_FUNC
            && sym.st_shndx(endian) != object::elf::SHN_UNDEF;
        defined.then(|| (sym.st_value(endian), sym.st_size(endian)))
    };
    for &name in names {
        if let Some((vaddr, size)) = lookup(name) {
            add_function(&mut out, &segments, name, vaddr, size, true);
        }
    }
    if !settled(&out) {
        return Ok(None);
    }
    for &name in NORETURN {
        if let Some((vaddr, _)) = lookup(name) {
            noreturn.push(vaddr);
        }
    }
    out.noreturn = noreturn_offsets(&elf, &segments, noreturn);
    out.segments = segments;
    Ok(Some(out))
}

/// The few symbol accessors used above, over both symbol tables.
trait SymLike {
    fn name(&self) -> Option<&str>;
    fn address(&self) -> u64;
    fn size(&self) -> u64;
}

impl<'data, 'file, R: object::ReadRef<'data>> SymLike
    for object::read::elf::ElfSymbol64<'data, 'file, Endianness, R>
{
    fn name(&self) -> Option<&str> {
        ObjectSymbol::name(self).ok()
    }
    fn address(&self) -> u64 {
        ObjectSymbol::address(self)
    }
    fn size(&self) -> u64 {
        ObjectSymbol::size(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::testfixtures::{fixture, nm, plt_stub, section_offset};
    use proptest::prelude::*;

    #[test]
    fn versioned_names_are_reduced() {
        assert_eq!(plain_name("SSL_write@@OPENSSL_3.0.0"), "SSL_write");
        assert_eq!(plain_name("SSL_read@OPENSSL_1_1_0"), "SSL_read");
        assert_eq!(plain_name("SSL_read"), "SSL_read");
        assert_eq!(plain_name("@weird"), "@weird");
    }

    #[test]
    fn offsets_follow_the_segment() {
        // non-PIE: text segment at 0x401000 from file offset 0x1000
        let segs = [(0x400000, 0x1000, 0), (0x401000, 0x5000, 0x1000)];
        assert_eq!(vaddr_to_offset(&segs, 0x401234), Some(0x1234));
        assert_eq!(vaddr_to_offset(&segs, 0x400010), Some(0x10));
        assert_eq!(vaddr_to_offset(&segs, 0x406000), None);
        // shared object where vaddr and offset differ by a page
        let segs = [(0x0, 0x2000, 0x0), (0x3000, 0x1000, 0x2000)];
        assert_eq!(vaddr_to_offset(&segs, 0x3010), Some(0x2010));
    }

    #[test]
    fn openssl_like_symbols_are_found_with_offsets() {
        let path = fixture("openssl_like");
        let syms = read_symbols(&path, 1 << 30, &|n| n.starts_with("SSL_")).unwrap();
        assert!(syms.has_symtab && !syms.is_executable);
        let mut names: Vec<_> = syms.functions.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "SSL_ctrl",
                "SSL_free",
                "SSL_read",
                "SSL_read_ex",
                "SSL_write",
                "SSL_write_ex"
            ]
        );
        let dynsym = nm(&path, true);
        // The bytes at the file offset are the function's code: compare with
        // the section data found through the section table.
        let data = std::fs::read(&path).unwrap();
        let elf = ElfFile64::<Endianness>::parse(&*data).unwrap();
        let text = elf.section_by_name(".text").unwrap();
        use object::ObjectSection;
        let (toff, _) = text.file_range().unwrap();
        for (name, loc) in &syms.functions {
            let want = dynsym[name];
            assert_eq!(want.kind, 'T', "{name}");
            assert!(loc.dynamic, "{name}");
            assert_eq!(loc.vaddr, want.vaddr, "{name}");
            assert_eq!(loc.size, want.size, "{name}");
            assert!(loc.size > 0, "{name}");
            assert_eq!(loc.file_offset, section_offset(&path, want.vaddr), "{name}");
            assert_eq!(loc.file_offset - toff, loc.vaddr - text.address(), "{name}");
        }
        // SSL_write's code starts `sub rsp,0x18` (see the placement test).
        let w = syms.get("SSL_write").expect("SSL_write exported");
        assert_eq!(
            &data[w.file_offset as usize..][..4],
            &[0x48, 0x83, 0xec, 0x18]
        );
        // The only no-return function it calls: __stack_chk_fail's PLT stub.
        assert_eq!(syms.noreturn, [plt_stub(&path, "__stack_chk_fail")]);
    }

    /// Static linkage: in `.symtab` only; exported from an executable
    /// (`-rdynamic`): in `.dynsym` too.
    #[test]
    fn executables_static_and_exported() {
        for (name, dynamic) in [("openssl_static", false), ("openssl_exported", true)] {
            let path = fixture(name);
            let syms = read_symbols(&path, 1 << 30, &|n| n.starts_with("SSL_")).unwrap();
            assert!(syms.has_symtab && syms.is_executable, "{name}");
            assert!(!syms.stripped_rustls, "{name}");
            let symtab = nm(&path, false);
            assert_eq!(syms.functions.len(), 6, "{name}");
            for (f, loc) in &syms.functions {
                assert_eq!(loc.dynamic, dynamic, "{name} {f}");
                assert_eq!(loc.vaddr, symtab[f].vaddr, "{name} {f}");
                assert_eq!(loc.size, symtab[f].size, "{name} {f}");
                assert_eq!(
                    loc.file_offset,
                    section_offset(&path, loc.vaddr),
                    "{name} {f}"
                );
            }
        }
    }

    #[test]
    fn stripped_executables_have_no_symtab() {
        for (name, rustls) in [("stripped", false), ("stripped_rustls", true)] {
            let path = fixture(name);
            let syms = read_symbols(&path, 1 << 30, &|_| true).unwrap();
            assert!(!syms.has_symtab && syms.is_executable, "{name}");
            assert!(syms.functions.is_empty(), "{name}: {:?}", syms.functions);
            assert_eq!(syms.stripped_rustls, rustls, "{name}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(
            parse_symbols(&b"hello"[..], "x", &|_| true),
            Err(ElfError::NotElf { .. })
        ));
        let mut hdr = b"\x7fELF\x02\x01\x01".to_vec();
        hdr.resize(64, 0xff);
        assert!(parse_symbols(&hdr[..], "x", &|_| true).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        // Any corruption of a real ELF file's header area (a shared library
        // built as libssl is: headers, .dynsym, .dynstr, relocations, in the
        // first 4 KiB) or of its end (.symtab, .strtab, the section headers)
        // parses or errors, never panics.
        #[test]
        fn corrupted_elf_never_panics(
            pos in 0usize..4096,
            val in any::<u8>(),
            cut in 64usize..8192,
            tail in 1usize..4096,
        ) {
            static DATA: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            let data = DATA.get_or_init(|| {
                let d = std::fs::read(fixture("openssl_like")).unwrap();
                assert!(d.len() > 8192, "fixture too small: {}", d.len());
                d
            });
            let mut d = data.clone();
            d[pos] = val;
            let _ = parse_symbols(&d[..], "x", &|_| true);
            let _ = parse_symbols(&d[..cut], "x", &|_| true);
            let mut d = data.clone();
            let n = d.len();
            d[n - tail] = val;
            let _ = parse_symbols(&d[..], "x", &|_| true);
        }
    }
}
