//! Finding aws-lc's AEAD functions in a stripped executable (issue #28):
//! rustls over aws-lc-rs, statically linked, without `.symtab` (uv, rustup).
//!
//! Without symbols, what is left of aws-lc's `crypto/fipsmodule/cipher/aead.c`
//! is its error reporting: `OPENSSL_PUT_ERROR(CIPHER, reason)` expands to
//! `ERR_put_error(30, 0, reason, __FILE__, __LINE__)`, so the path string is in
//! read-only data, each error site loads its address RIP-relative, and the
//! library and reason codes are constants moved into `edi` and `edx` before
//! the call. `.eh_frame` gives every function's bounds. So:
//!
//! 1. the path string (`.../crypto/fipsmodule/cipher/aead.c`) is searched for
//!    in the read-only data sections: a file without it is no aws-lc one
//!    (one `memmem` pass, the only cost most files pay);
//! 2. executable sections are scanned for `lea r64, [rip+disp32]` whose
//!    target is that string (`REX.W 8d /r`, mod 00, r/m 101);
//! 3. each hit must lie inside a function of `.eh_frame_hdr`'s table, which
//!    is decoded from its start (the hit must be one of its instructions);
//! 4. a constant propagation over the function's control flow (`mov r, imm`,
//!    `xor r, r`, `lea r, [rip+d]`, copies, `push imm`/`pop r` as clang -Oz
//!    makes them) gives, at every call, the constants in `rdi`, `rsi`, `rdx`,
//!    `rcx`, `r8`: a call with the path in `rcx` and 0 in `rsi` is an error
//!    site, and all of them must call one function (`ERR_put_error`);
//!    `__assert_fail` (the path in `rsi`) is not one;
//! 5. a function's signature is the set of (library, reason) of its error
//!    sites; every call of `ERR_put_error` in it must be resolved;
//! 6. each probed function is the one function whose signature is exactly
//!    its own (table below). It must start with the standard entry frame
//!    (CFA = rsp+8: not a `.cold` part), reach every non-padding instruction
//!    of its FDE's range from its entry (the range is the function), dispatch
//!    through the `EVP_AEAD` method table (an indirect call: not an
//!    error-only `.part` clone), and the error sites' line numbers must
//!    follow aead.c's order (init_with_direction, seal, seal_scatter, open);
//! 7. `EVP_AEAD_CTX_cleanup` raises no error: it is the one function of the
//!    whole file (every FDE of at most 128 bytes that reads a field at 0x20
//!    is decoded) whose code is `if (ctx->aead) { ctx->aead->cleanup(ctx)
//!    (NULL-checked or not); ctx->aead = NULL; }`, checked instruction by
//!    instruction on every path, nothing else in its range but padding.
//!    Nearness to the others proves nothing: uv's functions lie megabytes
//!    apart.
//!
//! | function (aws-lc)                  | signature: (30 = CIPHER, reasons)                                        | needed   |
//! |------------------------------------|--------------------------------------------------------------------------|----------|
//! | `EVP_AEAD_CTX_init_with_direction` | {120 UNSUPPORTED_KEY_SIZE}                                               | yes      |
//! | `EVP_AEAD_CTX_seal`                | {103 BUFFER_TOO_SMALL, 115 OUTPUT_ALIASES_INPUT, 117 TOO_LARGE}          | yes      |
//! | `EVP_AEAD_CTX_seal_scatter`        | {112 INVALID_OPERATION, 115 OUTPUT_ALIASES_INPUT}                        | optional |
//! | `EVP_AEAD_CTX_open`                | {101 BAD_DECRYPT, 103, 115}, or with `open_gather` inlined {101, 103, 104 CTRL_NOT_IMPLEMENTED, 115} | yes |
//! | `EVP_AEAD_CTX_cleanup`             | no error: its code's shape, `aead->cleanup` at offset 0x20               | optional |
//!
//! Not chosen by construction: `EVP_AEAD_CTX_init` ({124 NO_DIRECTION_SET},
//! or {120, 124} with init_with_direction inlined), `open_gather` ({104,
//! 115}), `copy` ({104, 108} and a CRYPTO-library site), `free` (a tail call
//! of `OPENSSL_free`, even with cleanup inlined), functions of other files
//! (another path in `rcx`).
//!
//! Checked (offsets and sizes equal to the unstripped file's symbols, see
//! the tests):
//!
//! | aws-lc-sys | aws-lc-rs / program                      | compiler             | found                    |
//! |------------|------------------------------------------|----------------------|--------------------------|
//! | 0.21.2     | 1.9.0 (2024-09), AEAD calls              | gcc 12               | all five                 |
//! | 0.29.0     | 1.13.1 (2025-05), AEAD calls             | gcc 12               | all five                 |
//! | 0.38.0     | rustup 1.29.0 (its release build)         | clang 22             | four: cleanup inlined into free and dropped |
//! | 0.47.0     | 1.19.0, rustls 0.23 client (e2e fixture) | gcc 12               | all five                 |
//! | 0.47.0     | 1.19.0, AEAD calls                       | clang 14             | four (cleanup as above)  |
//!
//! and a stand-in of aead.c (tests/fixtures/elf/awslc_aead_like.c) built by
//! gcc -O1/-O2/-O3/-Os (with CET's endbr64) and clang -O2/-Os/-Oz.
//!
//! Exact or nothing: any doubt (no candidate, two candidates, a reference
//! outside every function or between instructions, an unresolved error
//! site) is an `Err` with its reason for a needed function; an optional one
//! is left out (and said why in [`Report::omitted`]). Work is bounded: at
//! most [`MAX_XREFS`] references, [`MAX_FUNCTIONS`] functions decoded, each
//! at most [`MAX_FUNCTION_SIZE`] bytes, [`MAX_STEPS`] propagation steps,
//! [`MAX_FDES`] functions listed. x86-64 only. Not covered: files without
//! `.eh_frame` (deno is built so: function bounds unknown), aws-lc FIPS
//! builds (delocated: the module's strings sit in `.text`), BoringSSL
//! (another path).

use std::collections::HashMap;

use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Instruction, OpKind, Register};
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader, SectionHeader};
use object::{Endianness, Object, ObjectSection};

use super::elf::vaddr_to_offset;
use super::image;
use crate::probes::ProbePoint;

/// One located function: the probe point, its file offset, its size (from
/// the FDE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub point: ProbePoint,
    pub offset: u64,
    pub size: u64,
}

/// What was found, and why optional functions were left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// In the order of `ProbePoint::AEAD`.
    pub found: Vec<Located>,
    pub omitted: Vec<(ProbePoint, String)>,
}

/// The end of `__FILE__` in aead.c's error sites (the prefix depends on
/// where the crate was built, or what `-ffile-prefix-map` made of it), in
/// two halves joined at run time: whole, it would be in this program's own
/// read-only data, loaded by its code, and a stripped plainsight would look
/// like an aws-lc it cannot place.
const PATH: [&[u8]; 2] = [b"crypto/fipsmodule/cipher/", b"aead.c\0"];
/// Copies of the path string considered (two aws-lc versions linked
/// together make two; more is no real program).
const MAX_STRINGS: usize = 8;
/// References to the path string considered.
pub const MAX_XREFS: usize = 256;
/// Functions holding them that are decoded.
pub const MAX_FUNCTIONS: usize = 64;
/// Larger functions are not decoded: none of aead.c's is near this size.
pub const MAX_FUNCTION_SIZE: u64 = 4096;
/// Constant-propagation steps per function.
pub const MAX_STEPS: usize = 20_000;
/// Constants kept per register before it is "unknown".
const MAX_CONSTS: usize = 8;
/// Functions `.eh_frame_hdr` may list (node's 99 MB have 200,000).
pub const MAX_FDES: usize = 4 << 20;
/// `EVP_AEAD_CTX_cleanup` is a handful of instructions.
const MAX_CLEANUP_SIZE: u64 = 128;
/// `offsetof(EVP_AEAD, cleanup)`: after the 8 bytes of sizes and flags,
/// `init` and `init_with_direction` (the same in every aws-lc checked).
const CLEANUP_SLOT: u64 = 0x20;

/// `ERR_LIB_CIPHER`, and the `CIPHER_R_*` reasons of aead.c.
const LIB_CIPHER: u64 = 30;
const BAD_DECRYPT: u64 = 101;
const BUFFER_TOO_SMALL: u64 = 103;
const CTRL_NOT_IMPLEMENTED: u64 = 104;
const INVALID_OPERATION: u64 = 112;
const OUTPUT_ALIASES_INPUT: u64 = 115;
const TOO_LARGE: u64 = 117;
const UNSUPPORTED_KEY_SIZE: u64 = 120;

/// A function recognised by the reasons it raises (all in `LIB_CIPHER`).
struct Signature {
    point: ProbePoint,
    name: &'static str,
    /// Accepted reason sets, each sorted.
    sets: &'static [&'static [u64]],
    needed: bool,
}

/// In aead.c's source order (the line-number check relies on it).
const SIGNATURES: [Signature; 4] = [
    Signature {
        point: ProbePoint::AeadInit,
        name: "EVP_AEAD_CTX_init_with_direction",
        sets: &[&[UNSUPPORTED_KEY_SIZE]],
        needed: true,
    },
    Signature {
        point: ProbePoint::AeadSeal,
        name: "EVP_AEAD_CTX_seal",
        sets: &[&[BUFFER_TOO_SMALL, OUTPUT_ALIASES_INPUT, TOO_LARGE]],
        needed: true,
    },
    Signature {
        point: ProbePoint::AeadSealScatter,
        name: "EVP_AEAD_CTX_seal_scatter",
        sets: &[&[INVALID_OPERATION, OUTPUT_ALIASES_INPUT]],
        needed: false,
    },
    Signature {
        point: ProbePoint::AeadOpen,
        name: "EVP_AEAD_CTX_open",
        sets: &[
            &[BAD_DECRYPT, BUFFER_TOO_SMALL, OUTPUT_ALIASES_INPUT],
            // EVP_AEAD_CTX_open_gather inlined into it.
            &[
                BAD_DECRYPT,
                BUFFER_TOO_SMALL,
                CTRL_NOT_IMPLEMENTED,
                OUTPUT_ALIASES_INPUT,
            ],
        ],
        needed: true,
    },
];

/// Locates aws-lc's AEAD functions in a stripped ELF (`data`: the whole
/// file). Ok only when every needed function is found exactly once; Err
/// says which function and why otherwise ("no aws-lc ..." for a file that
/// does not carry aws-lc at all).
pub fn locate_awslc<'d, R: FileData<'d>>(data: R) -> Result<Vec<Located>, String> {
    locate_awslc_report(data).map(|r| r.found)
}

/// [`locate_awslc`], with the reasons optional functions were left out.
pub fn locate_awslc_report<'d, R: FileData<'d>>(data: R) -> Result<Report, String> {
    if Image::open(data, false)?.path_strings()?.is_empty() {
        return Err("no aws-lc: no crypto/fipsmodule/cipher/aead.c path in read-only data".into());
    }
    let img = Image::open(data, true)?;
    let paths = img.path_strings()?;
    // Without `.eh_frame` (deno), bounds come from the code (`sweep`).
    let unwind = img.unwind().ok();
    let funcs = img.referencing_functions(unwind.as_ref(), &paths)?;
    let err_fn = error_function(&funcs, &paths)?;
    let sigs: Vec<Result<Errors, String>> = funcs
        .iter()
        .map(|f| signature(&f.flow, err_fn, &paths))
        .collect();
    let mut report = Report {
        found: Vec::new(),
        omitted: Vec::new(),
    };
    let mut chosen: Vec<(&Signature, &Func, &Errors)> = Vec::new();
    for s in &SIGNATURES {
        match choose(s, &funcs, &sigs) {
            Ok((f, e)) => chosen.push((s, f, e)),
            Err(why) if s.needed => return Err(format!("{}: {why}", s.name)),
            Err(why) => report.omitted.push((s.point, why)),
        }
    }
    check_line_order(&chosen)?;
    for (s, f, _) in &chosen {
        report.found.push(img.located(s.point, f.start, f.size)?);
    }
    let taken: Vec<u64> = chosen.iter().map(|c| c.1.start).collect();
    let cleanup = match &unwind {
        Some(u) => img.find_cleanup(u, &taken),
        None => Err("no .eh_frame: the functions raising no error are not searched".into()),
    };
    match cleanup {
        Ok((start, size)) => {
            report
                .found
                .push(img.located(ProbePoint::AeadCleanup, start, size)?)
        }
        Err(why) => report.omitted.push((ProbePoint::AeadCleanup, why)),
    }
    report
        .found
        .sort_by_key(|l| ProbePoint::AEAD.iter().position(|p| *p == l.point));
    Ok(report)
}

/// The one function whose signature is one of `s`'s sets, with the checks
/// that make it a whole function that dispatches through the method table.
fn choose<'f>(
    s: &Signature,
    funcs: &'f [Func],
    sigs: &'f [Result<Errors, String>],
) -> Result<(&'f Func, &'f Errors), String> {
    let matching: Vec<(&Func, &Errors)> = funcs
        .iter()
        .zip(sigs)
        .filter_map(|(f, sig)| sig.as_ref().ok().map(|e| (f, e)))
        .filter(|(_, e)| e.lib_only(LIB_CIPHER) && s.sets.contains(&&e.reasons()[..]))
        .collect();
    let (f, e) = match matching[..] {
        [one] => one,
        [] => {
            let unresolved: Vec<String> = funcs
                .iter()
                .zip(sigs)
                .filter_map(|(f, s)| s.as_ref().err().map(|w| format!("{:#x}: {w}", f.start)))
                .collect();
            return Err(match unresolved.is_empty() {
                true => "no function raises exactly its errors".into(),
                false => format!(
                    "no function raises exactly its errors (unresolved: {})",
                    unresolved.join("; ")
                ),
            });
        }
        _ => {
            let at: Vec<String> = matching
                .iter()
                .map(|m| format!("{:#x}", m.0.start))
                .collect();
            return Err(format!(
                "{} functions raise its errors ({})",
                at.len(),
                at.join(", ")
            ));
        }
    };
    if !f.entry {
        return Err(format!(
            "the function at {:#x} does not start with a function's entry frame (a split-off part?)",
            f.start
        ));
    }
    if let Some(at) = f.flow.unreached {
        return Err(format!(
            "{at:#x} is not reached from the entry of the function at {:#x} (its FDE is larger than it)",
            f.start
        ));
    }
    if f.flow.indirect_calls == 0 {
        return Err(format!(
            "the function at {:#x} makes no indirect call (no dispatch through the EVP_AEAD table)",
            f.start
        ));
    }
    Ok((f, e))
}

/// aead.c defines init_with_direction, seal, seal_scatter and open in this
/// order: their error sites' line numbers must not interleave.
fn check_line_order(chosen: &[(&Signature, &Func, &Errors)]) -> Result<(), String> {
    for w in chosen.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let a_max = a.2.lines.iter().max();
        let b_min = b.2.lines.iter().min();
        match (a_max, b_min) {
            (Some(x), Some(y)) if x < y => {}
            _ => {
                return Err(format!(
                    "the error sites' lines of {} ({:?}) and {} ({:?}) are not in aead.c's order",
                    a.0.name, a.2.lines, b.0.name, b.2.lines
                ))
            }
        }
    }
    Ok(())
}

/// Where a located file's bytes come from: a slice (tests, fuzzing) or
/// an [`image::Image`] that keeps what it reads. Either way a scan of a
/// whole code section goes through [`image::Raw`] and keeps nothing.
pub trait FileData<'d>: object::ReadRef<'d> {
    fn view(self) -> View<'d>;
}

impl<'d> FileData<'d> for &'d [u8] {
    fn view(self) -> View<'d> {
        View::Mem(self)
    }
}

impl<'d> FileData<'d> for &'d image::Image {
    fn view(self) -> View<'d> {
        View::Image(self)
    }
}

/// See [`FileData`].
#[derive(Clone, Copy)]
pub enum View<'d> {
    Mem(&'d [u8]),
    Image(&'d image::Image),
}

impl<'d> View<'d> {
    fn get(self, offset: u64, len: u64) -> Option<&'d [u8]> {
        match self {
            View::Mem(m) => {
                let from = usize::try_from(offset).ok()?;
                m.get(from..from.checked_add(usize::try_from(len).ok()?)?)
            }
            View::Image(i) => i.get(offset, len),
        }
    }

    fn raw(self) -> image::Raw<'d> {
        match self {
            View::Mem(m) => image::Raw::Mem(m),
            View::Image(i) => i.raw(),
        }
    }
}

/// What [`Sec::scan`] runs on each window: `(address, bytes, n, out)`.
pub(super) type WindowFn<'a, T> =
    dyn Fn(u64, &[u8], usize, &mut Vec<T>) -> Result<(), String> + Sync + 'a;

/// Bytes scanned per read of a code section: a buffer that stays in the
/// core's cache while it is scanned.
const SCAN_WINDOW: usize = 512 << 10;
/// Sections at least this large are scanned by two threads.
const PARALLEL_SCAN: u64 = 16 << 20;
/// A section this large that must be read from the disk takes longer than
/// a process should be held (Chromium's 236 MB of code: ~150 ms from this
/// machine's disk alone): its process is resumed
/// ([`super::budget::on_disk_wait`]) and probed when the inspection ends.
const DISK_WAIT_SCAN: u64 = 128 << 20;

/// An allocated section: its address and size, its bytes read as they are
/// needed (a function's code, a sweep's region), or scanned window by
/// window ([`Sec::scan`]) without keeping them.
pub(super) struct Sec<'d> {
    pub(super) vaddr: u64,
    pub(super) size: u64,
    /// The section's file offset.
    offset: u64,
    view: View<'d>,
}

impl<'d> Sec<'d> {
    pub(super) fn end(&self) -> u64 {
        self.vaddr.saturating_add(self.size)
    }

    /// The bytes of `[at, at + len)` (addresses), all in the section.
    pub(super) fn at(&self, at: u64, len: u64) -> Option<&'d [u8]> {
        let from = at.checked_sub(self.vaddr)?;
        if from.checked_add(len)? > self.size {
            return None;
        }
        self.view.get(self.offset + from, len)
    }

    /// The whole section, kept (read-only data, unwind tables).
    pub(super) fn whole(&self) -> Option<&'d [u8]> {
        self.view.get(self.offset, self.size)
    }

    /// Runs `f(address, bytes, n, out)` over the section in windows: the
    /// window's first `n` positions start at `address`, and `bytes` runs
    /// up to `tail` bytes past them (less at the section's end), so a
    /// match of `tail + 1` bytes at any position is seen whole in exactly
    /// one window. A large section's two halves are scanned by two threads.
    /// What `f` pushes to `out` is returned, in address order.
    pub(super) fn scan<T: Send>(&self, tail: usize, f: &WindowFn<T>) -> Result<Vec<T>, String> {
        let raw = self.view.raw();
        let (offset, size, vaddr) = (self.offset, self.size, self.vaddr);
        let disk_wait = (size >= DISK_WAIT_SCAN)
            .then(super::budget::disk_wait)
            .flatten();
        let size_us = usize::try_from(size).map_err(|_| "a section too large".to_string())?;
        let part = |from: usize, to: usize| -> Result<Vec<T>, String> {
            let mut out = Vec::new();
            let bytes_end = |at: usize, n: usize| (at + n).saturating_add(tail).min(size_us);
            match raw {
                image::Raw::Mem(m) => {
                    let lo = usize::try_from(offset).map_err(|_| "offset".to_string())? + from;
                    let hi = lo + (bytes_end(from, to - from) - from);
                    let bytes = m.get(lo..hi).ok_or("a section past the file's end")?;
                    f(vaddr + from as u64, bytes, to - from, &mut out)?;
                }
                image::Raw::File(_) => {
                    let mut buf = vec![0u8; SCAN_WINDOW + tail];
                    let mut at = from;
                    while at < to {
                        let n = SCAN_WINDOW.min(to - at);
                        let m = bytes_end(at, n) - at;
                        let off = offset + at as u64;
                        match &disk_wait {
                            Some(wait) if !raw.read_cached(&mut buf[..m], off) => {
                                wait();
                                raw.read_exact_at(&mut buf[..m], off)?;
                            }
                            Some(_) => {}
                            None => raw.read_exact_at(&mut buf[..m], off)?,
                        }
                        f(vaddr + at as u64, &buf[..m], n, &mut out)?;
                        at += n;
                    }
                }
            }
            Ok(out)
        };
        if size < PARALLEL_SCAN {
            return part(0, size_us);
        }
        let mid = size_us / 2;
        std::thread::scope(|s| {
            let second = s.spawn(|| part(mid, size_us));
            let mut out = part(0, mid)?;
            let rest = second
                .join()
                .map_err(|_| "a code scan failed".to_string())??;
            out.extend(rest);
            Ok(out)
        })
    }
}

/// What is read of the file.
pub(super) struct Image<'d> {
    segments: Vec<(u64, u64, u64)>,
    /// Allocated, read-only, not executable.
    pub(super) rodata: Vec<Sec<'d>>,
    /// Allocated, executable.
    pub(super) text: Vec<Sec<'d>>,
    /// ET_EXEC: code may load addresses as 32-bit immediates.
    pub(super) fixed: bool,
    eh_frame_hdr: Option<Sec<'d>>,
    eh_frame: Option<Sec<'d>>,
}

impl<'d> Image<'d> {
    /// The file's allocated sections; executable ones only if `text` (the
    /// path strings are looked for first: most files have none, and their
    /// code is never read).
    pub(super) fn open<R: FileData<'d>>(data: R, text: bool) -> Result<Image<'d>, String> {
        let elf = ElfFile64::<Endianness, R>::parse(data).map_err(|e| format!("not ELF64: {e}"))?;
        let e = elf.endian();
        if elf.elf_header().e_machine(e) != object::elf::EM_X86_64 {
            return Err("not an x86-64 file".into());
        }
        let size = data.len().map_err(|()| "no size".to_string())?;
        let data_len = size;
        let segments = elf
            .elf_program_headers()
            .iter()
            .filter(|ph| ph.p_type(e) == object::elf::PT_LOAD)
            .filter_map(|ph| {
                let room = size.checked_sub(ph.p_offset(e))?;
                Some((ph.p_vaddr(e), ph.p_filesz(e).min(room), ph.p_offset(e)))
            })
            .collect();
        let mut img = Image {
            segments,
            rodata: Vec::new(),
            text: Vec::new(),
            eh_frame_hdr: None,
            eh_frame: None,
            fixed: elf.elf_header().e_type(e) == object::elf::ET_EXEC,
        };
        for s in elf.sections() {
            let h = s.elf_section_header();
            let flags = h.sh_flags(e);
            let exec = flags & u64::from(object::elf::SHF_EXECINSTR) != 0;
            if h.sh_type(e) != object::elf::SHT_PROGBITS
                || flags & u64::from(object::elf::SHF_ALLOC) == 0
                || (exec && !text)
            {
                continue;
            }
            // Code is read when it is needed; the rest whole, now.
            let Some((offset, size)) = s.file_range() else {
                continue;
            };
            if offset.checked_add(size).is_none_or(|end| end > data_len) {
                continue;
            }
            let sec = Sec {
                vaddr: s.address(),
                size,
                offset,
                view: data.view(),
            };
            if !exec && sec.whole().is_none() {
                continue;
            }
            match s.name() {
                Ok(".eh_frame_hdr") => img.eh_frame_hdr = Some(sec),
                Ok(".eh_frame") => img.eh_frame = Some(sec),
                _ if flags & u64::from(object::elf::SHF_EXECINSTR) != 0 => img.text.push(sec),
                _ if flags & u64::from(object::elf::SHF_WRITE) == 0 => img.rodata.push(sec),
                _ => {}
            }
        }
        Ok(img)
    }

    /// Address ranges (half-open) of the strings ending in `PATH`: from
    /// the string's start (after the NUL before it: a shorter path may be
    /// the tail of a longer one, merged by the linker) to the match.
    fn path_strings(&self) -> Result<Vec<(u64, u64)>, String> {
        // `.../cipher/aead.c`, not `.../cipher/xaead.c`.
        let found = self.strings_holding(&PATH.concat(), |b| b == b'/', MAX_STRINGS)?;
        Ok(found.into_iter().map(|(from, at)| (from, at + 1)).collect())
    }

    /// Where `needle` occurs in the read-only data, if the byte before it
    /// passes `before` (or it starts a section): the address of the string
    /// holding it (after the NUL before it, looked for at most 4 KiB back)
    /// and of the match. More than `max` is an error.
    pub(super) fn strings_holding(
        &self,
        needle: &[u8],
        before: impl Fn(u8) -> bool,
        max: usize,
    ) -> Result<Vec<(u64, u64)>, String> {
        let mut out = Vec::new();
        for s in &self.rodata {
            // Kept whole since `open`.
            let bytes = s.whole().unwrap_or_default();
            for i in memchr::memmem::find_iter(bytes, needle) {
                if i > 0 && !before(bytes[i - 1]) {
                    continue;
                }
                let back = i.saturating_sub(4096);
                let from = bytes[back..i]
                    .iter()
                    .rposition(|&b| b == 0)
                    .map_or(back, |z| back + z + 1);
                out.push((s.vaddr + from as u64, s.vaddr + i as u64));
                if out.len() > max {
                    let shown = String::from_utf8_lossy(needle);
                    return Err(format!("more than {max} copies of the path {shown}"));
                }
            }
        }
        Ok(out)
    }

    pub(super) fn unwind(&self) -> Result<Unwind<'d>, String> {
        match (&self.eh_frame_hdr, &self.eh_frame) {
            (Some(h), Some(f)) => match (h.whole(), f.whole()) {
                (Some(hb), Some(fb)) => Unwind::new(h.vaddr, hb, f.vaddr, fb),
                _ => Err("the unwind tables cannot be read".into()),
            },
            _ => Err("no .eh_frame_hdr or .eh_frame: function bounds unknown".into()),
        }
    }

    /// The bytes of `[start, start + size)` in one executable section.
    pub(super) fn code(&self, start: u64, size: u64) -> Option<&'d [u8]> {
        let end = start.checked_add(size)?;
        let s = self
            .text
            .iter()
            .find(|s| s.vaddr <= start && end <= s.end())?;
        s.at(start, size)
    }

    pub(super) fn located(
        &self,
        point: ProbePoint,
        start: u64,
        size: u64,
    ) -> Result<Located, String> {
        let offset = vaddr_to_offset(&self.segments, start)
            .ok_or_else(|| format!("{start:#x} is in no loadable segment"))?;
        Ok(Located {
            point,
            offset,
            size,
        })
    }

    /// Addresses of the `lea r64, [rip+disp32]` instructions (their REX
    /// byte) whose target lies in one of `ranges`.
    pub(super) fn lea_xrefs(&self, ranges: &[(u64, u64)]) -> Result<Vec<u64>, String> {
        let lo = ranges.iter().map(|r| r.0).min().unwrap_or(0);
        let hi = ranges.iter().map(|r| r.1).max().unwrap_or(0);
        let mut out = Vec::new();
        for s in &self.text {
            // REX.W (any R/X/B), opcode 8d, ModRM mod=00 r/m=101.
            let lea = |b: &[u8]| b[0] & 0xf8 == 0x48 && b[2] & 0xc7 == 0x05;
            for (at, target) in
                super::sweep::code_refs(s, super::sweep::Rel32::LEA, (lo, hi), &lea)?
            {
                if ranges.iter().any(|&(lo, hi)| (lo..hi).contains(&target)) {
                    out.push(at);
                    if out.len() > MAX_XREFS {
                        return Err(format!("more than {MAX_XREFS} references to the path"));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The functions that load the path, decoded and analysed; every
    /// reference must be an instruction of a function `.eh_frame` knows.
    fn referencing_functions(
        &self,
        unwind: Option<&Unwind>,
        paths: &[(u64, u64)],
    ) -> Result<Vec<Func>, String> {
        let xrefs = self.lea_xrefs(paths)?;
        if xrefs.is_empty() {
            return Err("aws-lc's aead.c path is never referenced from code".into());
        }
        let mut fdes = Vec::new();
        let mut unbounded = Vec::new();
        for x in xrefs {
            match unwind {
                Some(u) => fdes.push((
                    x,
                    u.containing(x)?.ok_or_else(|| {
                        format!("a reference to aead.c's path at {x:#x} is in no function")
                    })?,
                )),
                None => unbounded.push(x),
            }
        }
        if !unbounded.is_empty() {
            let sw = super::sweep::Sweeps::build(self, &mut unbounded)?;
            for &x in &unbounded {
                let (start, end, called) = sw.bounds(self, x, MAX_FUNCTION_SIZE)?;
                // A validated call's target stands for the entry frame.
                let fde = Fde {
                    start,
                    size: end - start,
                    entry: called,
                };
                fdes.push((x, fde));
            }
        }
        let mut funcs: Vec<Func> = Vec::new();
        for (x, fde) in fdes {
            if let Some(f) = funcs.iter().find(|f| f.start == fde.start) {
                if f.flow.decoded && f.insn_at(x).is_none() {
                    return Err(format!(
                        "{x:#x} is not an instruction boundary of {:#x}",
                        f.start
                    ));
                }
                continue;
            }
            if funcs.len() >= MAX_FUNCTIONS {
                return Err(format!(
                    "more than {MAX_FUNCTIONS} functions reference aead.c's path"
                ));
            }
            let f = self.analyse(fde)?;
            if f.flow.decoded && f.insn_at(x).is_none() {
                return Err(format!(
                    "{x:#x} is not an instruction boundary of {:#x}",
                    f.start
                ));
            }
            funcs.push(f);
        }
        Ok(funcs)
    }

    fn analyse(&self, fde: Fde) -> Result<Func, String> {
        let mut f = Func {
            start: fde.start,
            size: fde.size,
            entry: fde.entry,
            insns: Vec::new(),
            flow: Flow::default(),
        };
        if fde.size > MAX_FUNCTION_SIZE {
            // Too large to be one of aead.c's: not a candidate, not decoded.
            return Ok(f);
        }
        let code = self.code(fde.start, fde.size).ok_or_else(|| {
            format!(
                "the function at {:#x} is outside executable sections",
                fde.start
            )
        })?;
        f.insns = decode(code, fde.start)?;
        f.flow = propagate(&f.insns, fde.start, fde.start + fde.size)?;
        Ok(f)
    }
}

/// Decodes `code` at `start` whole: every byte an instruction's, the last
/// one ending at the end.
pub(super) fn decode(code: &[u8], start: u64) -> Result<Vec<Instruction>, String> {
    let mut dec = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
    let mut out = Vec::new();
    let mut ins = Instruction::default();
    while dec.can_decode() {
        dec.decode_out(&mut ins);
        if ins.is_invalid() {
            return Err(format!("undecodable bytes at {:#x}", ins.ip()));
        }
        out.push(ins);
    }
    Ok(out)
}

/// One decoded function.
struct Func {
    start: u64,
    size: u64,
    /// Starts with the standard entry frame.
    entry: bool,
    insns: Vec<Instruction>,
    flow: Flow,
}

impl Func {
    fn insn_at(&self, ip: u64) -> Option<usize> {
        self.insns.binary_search_by_key(&ip, |i| i.ip()).ok()
    }
}

/// The error codes of one function: (library, reason) pairs and the lines.
#[derive(Debug)]
struct Errors {
    codes: Vec<(u64, u64)>,
    lines: Vec<u64>,
}

impl Errors {
    fn lib_only(&self, lib: u64) -> bool {
        !self.codes.is_empty() && self.codes.iter().all(|c| c.0 == lib)
    }

    fn reasons(&self) -> Vec<u64> {
        self.codes.iter().map(|c| c.1).collect()
    }
}

/// The function that aead.c's error sites call (`ERR_put_error`): one
/// target for all of them. An error site: the path in `rcx`, 0 in `rsi`.
fn error_function(funcs: &[Func], paths: &[(u64, u64)]) -> Result<u64, String> {
    let sites = funcs.iter().flat_map(|f| &f.flow.sites);
    error_target(sites, paths, None, "aead.c")
}

/// The one function that error sites call among `sites`: calls with one of
/// the `paths` (a source file's name) in `rcx`, 0 in `rsi` and, if given,
/// the library `lib` in `rdi`. `file` names the source in messages. Shared
/// by the aws-lc and BoringSSL locators (`ERR_put_error` in both).
pub(super) fn error_target<'s>(
    sites: impl Iterator<Item = &'s Site>,
    paths: &[(u64, u64)],
    lib: Option<u64>,
    file: &str,
) -> Result<u64, String> {
    let mut targets: Vec<u64> = sites
        .filter(|s| {
            s.regs[RCX].consts().is_some_and(|v| all_in(v, paths))
                && s.regs[RSI].consts() == Some(&[0][..])
                && lib.is_none_or(|l| s.regs[RDI].consts() == Some(&[l][..]))
        })
        .map(|s| s.target)
        .collect();
    targets.sort_unstable();
    targets.dedup();
    match targets[..] {
        [t] => Ok(t),
        [] => Err(format!(
            "no call passes {file}'s path as ERR_put_error's file"
        )),
        _ => Err(format!(
            "{file}'s error sites call {} different functions",
            targets.len()
        )),
    }
}

/// Whether every value of `v` lies in one of `ranges` (half-open).
pub(super) fn all_in(v: &[u64], ranges: &[(u64, u64)]) -> bool {
    v.iter()
        .all(|x| ranges.iter().any(|&(lo, hi)| (lo..hi).contains(x)))
}

/// The (library, reason) set of a function's calls of `err_fn`, each of
/// which must name aead.c and have constant codes.
fn signature(flow: &Flow, err_fn: u64, paths: &[(u64, u64)]) -> Result<Errors, String> {
    if !flow.decoded {
        return Err("not decoded (too large)".into());
    }
    let mut e = Errors {
        codes: Vec::new(),
        lines: Vec::new(),
    };
    for s in flow.sites.iter().filter(|s| s.target == err_fn) {
        let known = |r: usize, what: &str| {
            s.regs[r]
                .consts()
                .ok_or_else(|| format!("the {what} at {:#x} is not a constant", s.at))
        };
        let file = known(RCX, "file")?;
        if !all_in(file, paths) {
            return Err(format!("the error at {:#x} names another file", s.at));
        }
        let (libs, reasons) = (known(RDI, "library")?, known(RDX, "reason")?);
        for &l in libs {
            e.codes.extend(reasons.iter().map(|&r| (l, r)));
        }
        e.lines.extend_from_slice(known(R8, "line")?);
    }
    e.codes.sort_unstable();
    e.codes.dedup();
    e.lines.sort_unstable();
    e.lines.dedup();
    Ok(e)
}

pub(super) const RCX: usize = 1;
pub(super) const RDX: usize = 2;
pub(super) const RSI: usize = 6;
pub(super) const RDI: usize = 7;
const R8: usize = 8;

/// What a register holds: one of a few constants, or unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Val {
    Top,
    Set { n: u8, v: [u64; MAX_CONSTS] },
}

impl Val {
    fn one(x: u64) -> Val {
        let mut v = [0; MAX_CONSTS];
        v[0] = x;
        Val::Set { n: 1, v }
    }

    pub(super) fn consts(&self) -> Option<&[u64]> {
        match self {
            Val::Top => None,
            Val::Set { n, v } => v.get(..usize::from(*n)),
        }
    }

    fn join(self, other: Val) -> Val {
        let (Some(a), Some(b)) = (self.consts(), other.consts()) else {
            return Val::Top;
        };
        let mut out = self;
        for &x in b {
            if a.contains(&x) {
                continue;
            }
            let Val::Set { n, v } = &mut out else {
                return Val::Top;
            };
            if usize::from(*n) == MAX_CONSTS {
                return Val::Top;
            }
            v[usize::from(*n)] = x;
            *n += 1;
        }
        out
    }

    /// The value after a 32-bit move (zero-extended).
    fn low32(self) -> Val {
        match self {
            Val::Top => Val::Top,
            Val::Set { n, mut v } => {
                v.iter_mut().for_each(|x| *x &= 0xffff_ffff);
                Val::Set { n, v }
            }
        }
    }
}

/// Values pushed and not yet popped that are known (the top ones).
const MAX_PUSHED: usize = 4;

/// The general registers, and the top of the stack as far as pushes
/// tell it: clang at -Oz loads constants as `push imm; pop reg`, the pop
/// sometimes in a block shared by several error sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Regs {
    r: [Val; 16],
    /// `pushed[..n]`, the last one on top.
    pushed: [Val; MAX_PUSHED],
    n: u8,
}

impl Regs {
    fn unknown() -> Regs {
        Regs {
            r: [Val::Top; 16],
            pushed: [Val::Top; MAX_PUSHED],
            n: 0,
        }
    }

    fn push(&mut self, v: Val) {
        if usize::from(self.n) == MAX_PUSHED {
            self.pushed.copy_within(1.., 0);
            self.n -= 1;
        }
        self.pushed[usize::from(self.n)] = v;
        self.n += 1;
    }

    fn pop(&mut self) -> Val {
        if self.n == 0 {
            return Val::Top;
        }
        self.n -= 1;
        self.pushed[usize::from(self.n)]
    }
}

impl std::ops::Index<usize> for Regs {
    type Output = Val;
    fn index(&self, i: usize) -> &Val {
        &self.r[i]
    }
}

impl std::ops::IndexMut<usize> for Regs {
    fn index_mut(&mut self, i: usize) -> &mut Val {
        &mut self.r[i]
    }
}

/// Both states' values; of the pushed values, the top ones both know.
fn join_regs(a: &Regs, b: &Regs) -> Regs {
    let mut out = *a;
    for (o, x) in out.r.iter_mut().zip(&b.r) {
        *o = o.join(*x);
    }
    out.n = a.n.min(b.n);
    let (ka, kb) = (usize::from(a.n), usize::from(b.n));
    for i in 1..=usize::from(out.n) {
        out.pushed[usize::from(out.n) - i] = a.pushed[ka - i].join(b.pushed[kb - i]);
    }
    out
}

/// A 64-bit general register's number (`eax`, `al` -> `rax`'s).
fn gpr(r: Register) -> Option<usize> {
    let f = r.full_register();
    f.is_gpr64().then(|| f.number())
}

/// A call (or a jump out of the function) and the registers before it.
#[derive(Debug)]
pub(super) struct Site {
    pub(super) at: u64,
    pub(super) target: u64,
    pub(super) regs: Regs,
}

#[derive(Debug, Default)]
pub(super) struct Flow {
    pub(super) decoded: bool,
    pub(super) sites: Vec<Site>,
    /// Calls through a register or memory other than a RIP-relative slot.
    pub(super) indirect_calls: usize,
    /// The first instruction no path from the entry reaches, other than
    /// padding: the FDE's range is more than the function.
    pub(super) unreached: Option<u64>,
}

/// Alignment between functions and blocks: nops, and int3 (LLD's fill).
pub(super) fn padding(i: &Instruction) -> bool {
    matches!(
        i.mnemonic(),
        iced_x86::Mnemonic::Nop | iced_x86::Mnemonic::Int3
    )
}

/// The first non-padding instruction of `insns` not `seen`.
fn first_unreached(insns: &[Instruction], seen: &[bool]) -> Option<u64> {
    insns
        .iter()
        .zip(seen)
        .find(|(i, &s)| !s && !padding(i))
        .map(|(i, _)| i.ip())
}

/// Registers a call does not preserve (System V).
const CALLER_SAVED: [usize; 9] = [0, 1, 2, 6, 7, 8, 9, 10, 11];

/// The registers after `ins`: constants from `mov r, imm`, `xor r, r`,
/// `lea r, [rip+d]`, register copies and `push`/`pop`; anything else
/// written is unknown.
pub(super) fn step(
    regs: &mut Regs,
    ins: &Instruction,
    info: &mut iced_x86::InstructionInfoFactory,
) {
    let reg = |n: u32| {
        (n < ins.op_count() && ins.op_kind(n) == OpKind::Register)
            .then(|| gpr(ins.op_register(n)))
            .flatten()
    };
    let (dst, src) = (reg(0), reg(1));
    match ins.code() {
        Code::Pushq_imm8 | Code::Pushq_imm32 => {
            return regs.push(Val::one(ins.immediate(0)));
        }
        Code::Push_r64 => return regs.push(src.or(dst).map_or(Val::Top, |r| regs[r])),
        Code::Pop_r64 => {
            let v = regs.pop();
            if let Some(d) = dst {
                regs[d] = v;
            }
            return;
        }
        _ => {}
    }
    let val = match ins.code() {
        Code::Mov_r32_imm32 | Code::Mov_rm32_imm32 => Some(Val::one(u64::from(ins.immediate32()))),
        Code::Mov_r64_imm64 => Some(Val::one(ins.immediate64())),
        Code::Mov_rm64_imm32 => Some(Val::one(ins.immediate32to64() as u64)),
        Code::Xor_r32_rm32
        | Code::Xor_rm32_r32
        | Code::Xor_r64_rm64
        | Code::Xor_rm64_r64
        | Code::Sub_r32_rm32
        | Code::Sub_rm32_r32
        | Code::Sub_r64_rm64
        | Code::Sub_rm64_r64
            if src.is_some() && src == dst =>
        {
            Some(Val::one(0))
        }
        Code::Lea_r64_m if ins.is_ip_rel_memory_operand() => {
            Some(Val::one(ins.ip_rel_memory_address()))
        }
        Code::Mov_r64_rm64 | Code::Mov_rm64_r64 => src.map(|s| regs[s]),
        Code::Mov_r32_rm32 | Code::Mov_rm32_r32 => src.map(|s| regs[s].low32()),
        _ => None,
    };
    if let (Some(d), Some(v)) = (dst, val) {
        regs[d] = v;
        return;
    }
    let call = matches!(
        ins.flow_control(),
        FlowControl::Call | FlowControl::IndirectCall
    );
    for u in info.info(ins).used_registers() {
        let written = matches!(
            u.access(),
            iced_x86::OpAccess::Write
                | iced_x86::OpAccess::CondWrite
                | iced_x86::OpAccess::ReadWrite
                | iced_x86::OpAccess::ReadCondWrite
        );
        if let (true, Some(g)) = (written, gpr(u.register())) {
            regs[g] = Val::Top;
            // The stack pointer moved otherwise than by a push or pop:
            // what was pushed is no longer known to be on top.
            // (A call's push is its callee's pop.)
            regs.n = if g == 4 && !call { 0 } else { regs.n };
        }
    }
    if call {
        CALLER_SAVED.iter().for_each(|&r| regs[r] = Val::Top);
    }
}

/// The state at block `to` joined with `regs`; queued again if it grew.
fn merge(blocks: &mut HashMap<usize, Regs>, work: &mut Vec<usize>, to: usize, regs: &Regs) {
    let new = match blocks.get(&to) {
        Some(old) => join_regs(old, regs),
        None => *regs,
    };
    if blocks.get(&to) != Some(&new) {
        blocks.insert(to, new);
        work.push(to);
    }
}

/// The first instruction of every block a direct branch starts.
fn leaders(insns: &[Instruction], start: u64, end: u64) -> Result<Vec<bool>, String> {
    let mut leader = vec![false; insns.len()];
    for ins in insns {
        let t = ins.near_branch_target();
        if matches!(
            ins.flow_control(),
            FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch
        ) && (start..end).contains(&t)
        {
            let k = insns
                .binary_search_by_key(&t, |i| i.ip())
                .map_err(|_| format!("a branch at {:#x} lands between instructions", ins.ip()))?;
            leader[k] = true;
        }
    }
    Ok(leader)
}

/// Constant propagation over the function `insns` (`[start, end)`) to a
/// fixed point: the registers at every direct call and jump out of it.
pub(super) fn propagate(insns: &[Instruction], start: u64, end: u64) -> Result<Flow, String> {
    let index = |ip: u64| insns.binary_search_by_key(&ip, |i| i.ip()).ok();
    let leader = leaders(insns, start, end)?;
    let mut info = iced_x86::InstructionInfoFactory::new();
    let mut blocks: HashMap<usize, Regs> = HashMap::from([(0, Regs::unknown())]);
    let mut at_site: HashMap<usize, (u64, Regs)> = HashMap::new();
    let mut work = vec![0usize];
    let mut steps = 0usize;
    let mut seen = vec![false; insns.len()];
    while let Some(b) = work.pop() {
        let Some(mut regs) = blocks.get(&b).copied() else {
            continue;
        };
        let mut k = b;
        while let Some(ins) = insns.get(k) {
            steps += 1;
            if steps > MAX_STEPS {
                return Err(format!("more than {MAX_STEPS} propagation steps"));
            }
            seen[k] = true;
            let t = ins.near_branch_target();
            let inside = index(t).filter(|_| (start..end).contains(&t));
            let mut site = |target: u64| {
                let e = at_site.entry(k).or_insert((target, regs));
                e.1 = join_regs(&e.1, &regs);
            };
            match (ins.flow_control(), inside) {
                (FlowControl::Call, _) => site(t),
                // Through a GOT slot (-fno-plt): the slot names the callee.
                (FlowControl::IndirectCall, _) if ins.is_ip_rel_memory_operand() => {
                    site(ins.ip_rel_memory_address() | 1 << 63)
                }
                (FlowControl::ConditionalBranch, Some(to)) => {
                    merge(&mut blocks, &mut work, to, &regs)
                }
                // A conditional tail call.
                (FlowControl::ConditionalBranch, None) => site(t),
                (FlowControl::UnconditionalBranch, Some(to)) => {
                    merge(&mut blocks, &mut work, to, &regs);
                    break;
                }
                (FlowControl::UnconditionalBranch, None) => {
                    site(t);
                    break;
                }
                (FlowControl::Next | FlowControl::IndirectCall, _) => {}
                // ret, jmp through a register or table, int3, ud2, ...
                _ => break,
            }
            step(&mut regs, ins, &mut info);
            k += 1;
            if leader.get(k) == Some(&true) {
                merge(&mut blocks, &mut work, k, &regs);
                break;
            }
        }
    }
    let mut sites: Vec<Site> = at_site
        .into_iter()
        .filter_map(|(k, (target, regs))| {
            Some(Site {
                at: insns.get(k)?.ip(),
                target,
                regs,
            })
        })
        .collect();
    sites.sort_by_key(|s| s.at);
    let indirect_calls = insns
        .iter()
        .filter(|i| i.flow_control() == FlowControl::IndirectCall && !i.is_ip_rel_memory_operand())
        .count();
    Ok(Flow {
        decoded: true,
        sites,
        indirect_calls,
        unreached: first_unreached(insns, &seen),
    })
}

/// A bounded little-endian reader.
struct Rd<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Rd<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.bytes(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }

    fn uleb(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn sleb(&mut self) -> Option<i64> {
        let mut v = 0i64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= i64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if shift + 7 < 64 && b & 0x40 != 0 {
                    v |= -1i64 << (shift + 7);
                }
                return Some(v);
            }
        }
        None
    }

    fn cstr(&mut self, max: usize) -> Option<&'a [u8]> {
        let rest = self.b.get(self.pos..)?;
        let n = rest.iter().take(max + 1).position(|&c| c == 0)?;
        self.pos += n + 1;
        rest.get(..n)
    }

    /// A `DW_EH_PE_*` encoded pointer whose field is at address `field`
    /// (absolute and PC-relative only; indirect ones are refused).
    fn ptr(&mut self, enc: u8, field: u64) -> Option<u64> {
        let v = match enc & 0x0f {
            0x00 | 0x04 | 0x0c => self.u64()?,
            0x01 => self.uleb()?,
            0x02 => u64::from(self.u16()?),
            0x03 => u64::from(self.u32()?),
            0x09 => self.sleb()? as u64,
            0x0a => self.u16()? as i16 as i64 as u64,
            0x0b => self.u32()? as i32 as i64 as u64,
            _ => return None,
        };
        match enc & 0xf0 {
            0x00 => Some(v),
            0x10 => Some(field.wrapping_add(v)),
            _ => None,
        }
    }
}

/// One function of `.eh_frame`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fde {
    pub(super) start: u64,
    pub(super) size: u64,
    /// At its first byte the frame is a function entry's: CFA = rsp+8 and
    /// the return address at CFA-8 (a `.cold` part starts with another).
    pub(super) entry: bool,
}

/// What an FDE takes from its CIE.
struct Cie {
    /// Encoding of the FDE's addresses (`R` augmentation).
    enc: u8,
    /// Augmentation data present (`z`).
    z: bool,
    /// Its initial instructions leave a function entry's frame.
    entry: bool,
}

/// Function bounds from `.eh_frame_hdr`'s sorted table and `.eh_frame`.
pub(super) struct Unwind<'d> {
    hdr_vaddr: u64,
    /// (initial location, FDE address) pairs, 4 + 4 bytes, relative to
    /// `.eh_frame_hdr`.
    table: &'d [u8],
    frame_vaddr: u64,
    frame: &'d [u8],
}

impl<'d> Unwind<'d> {
    fn new(
        hdr_vaddr: u64,
        hdr: &'d [u8],
        frame_vaddr: u64,
        frame: &'d [u8],
    ) -> Result<Self, String> {
        let bad = |what: &str| Err(format!("unsupported .eh_frame_hdr: {what}"));
        let [version, ptr_enc, count_enc, table_enc, ..] = *hdr else {
            return bad("too short");
        };
        // What every linker writes: a udata4 count and a table of datarel
        // sdata4 pairs.
        if version != 1 || count_enc != 0x03 || table_enc != 0x3b {
            return bad("version or encodings");
        }
        let ptr_len = match ptr_enc & 0x0f {
            _ if ptr_enc == 0xff => 0,
            0x03 | 0x0b => 4,
            0x00 | 0x04 | 0x0c => 8,
            _ => return bad("eh_frame_ptr encoding"),
        };
        let mut r = Rd {
            b: hdr,
            pos: 4 + ptr_len,
        };
        let Some(count) = r.u32().and_then(|c| usize::try_from(c).ok()) else {
            return bad("too short");
        };
        let Some(table) = count.checked_mul(8).and_then(|n| r.bytes(n)) else {
            return bad("table past its end");
        };
        Ok(Unwind {
            hdr_vaddr,
            table,
            frame_vaddr,
            frame,
        })
    }

    fn len(&self) -> usize {
        self.table.len() / 8
    }

    /// Entry `i`: (function start, FDE address).
    fn entry(&self, i: usize) -> Option<(u64, u64)> {
        let e = self.table.get(i.checked_mul(8)?..)?.get(..8)?;
        let rel = |b: &[u8]| -> Option<u64> {
            let v = i32::from_le_bytes(b.try_into().ok()?);
            Some(self.hdr_vaddr.wrapping_add(v as i64 as u64))
        };
        Some((rel(&e[..4])?, rel(&e[4..])?))
    }

    /// The last entry starting at or before `addr`.
    fn index_at(&self, addr: u64) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.entry(mid) {
                Some((s, _)) if s <= addr => lo = mid + 1,
                _ => hi = mid,
            }
        }
        lo.checked_sub(1)
    }

    /// The function holding `addr`, if any.
    pub(super) fn containing(&self, addr: u64) -> Result<Option<Fde>, String> {
        let Some(i) = self.index_at(addr) else {
            return Ok(None);
        };
        let f = self.fde(i)?;
        Ok((f.start <= addr && addr - f.start < f.size).then_some(f))
    }

    /// `.eh_frame` from offset `off` up to its record's end, and where the
    /// record's contents start.
    fn record(&self, off: usize) -> Option<Rd<'d>> {
        let mut r = Rd {
            b: self.frame,
            pos: off,
        };
        let len = usize::try_from(r.u32()?).ok()?;
        // 0 ends the section; 0xffffffff is the 64-bit format (never
        // written for x86-64 code).
        if len == 0 || len == 0xffff_ffff {
            return None;
        }
        let end = r.pos.checked_add(len)?;
        Some(Rd {
            b: self.frame.get(..end)?,
            pos: r.pos,
        })
    }

    fn cie(&self, off: usize) -> Option<Cie> {
        let mut r = self.record(off)?;
        if r.u32()? != 0 {
            return None;
        }
        let version = r.u8()?;
        let aug = r.cstr(8)?;
        match version {
            1 | 3 => {}
            4 => {
                r.u16()?;
            }
            _ => return None,
        }
        let code_align = r.uleb()?;
        let data_align = r.sleb()?;
        let ra = match version {
            1 => u64::from(r.u8()?),
            _ => r.uleb()?,
        };
        let mut cie = Cie {
            enc: 0,
            z: aug.first() == Some(&b'z'),
            entry: code_align == 1 && data_align == -8 && ra == 16,
        };
        if cie.z {
            let n = usize::try_from(r.uleb()?).ok()?;
            let data_end = r.pos.checked_add(n)?;
            for &c in &aug[1..] {
                match c {
                    b'R' => cie.enc = r.u8()?,
                    b'P' => {
                        let e = r.u8()?;
                        r.ptr(e & 0x0f, 0)?;
                    }
                    b'L' => {
                        r.u8()?;
                    }
                    // A signal frame's "function" is no function.
                    b'S' => cie.entry = false,
                    _ => break,
                }
            }
            r.pos = data_end;
        } else if !aug.is_empty() {
            return None;
        }
        cie.entry &= initial_frame_is_entry(r.b.get(r.pos..)?);
        Some(cie)
    }

    /// Entry `i`'s FDE, checked against the table.
    fn fde(&self, i: usize) -> Result<Fde, String> {
        let (loc, at) = self.entry(i).ok_or("no such .eh_frame_hdr entry")?;
        let bad = || format!("malformed FDE at {at:#x}");
        let off = at
            .checked_sub(self.frame_vaddr)
            .and_then(|o| usize::try_from(o).ok())
            .ok_or_else(bad)?;
        let mut r = self.record(off).ok_or_else(bad)?;
        let id_at = r.pos;
        let cie_off = r
            .u32()
            .filter(|&p| p != 0)
            .and_then(|p| id_at.checked_sub(usize::try_from(p).ok()?))
            .ok_or_else(bad)?;
        let cie = self.cie(cie_off).ok_or_else(bad)?;
        let field = self.frame_vaddr.wrapping_add(r.pos as u64);
        let start = r.ptr(cie.enc, field).ok_or_else(bad)?;
        let size = r.ptr(cie.enc & 0x0f, 0).ok_or_else(bad)?;
        if start != loc {
            return Err(format!("FDE at {at:#x} and .eh_frame_hdr disagree"));
        }
        if cie.z {
            let n = usize::try_from(r.uleb().ok_or_else(bad)?).map_err(|_| bad())?;
            r.bytes(n).ok_or_else(bad)?;
        }
        let rest = r.b.get(r.pos..).ok_or_else(bad)?;
        Ok(Fde {
            start,
            size,
            entry: cie.entry && keeps_entry_frame(rest),
        })
    }
}

/// A CIE's initial instructions: `def_cfa rsp, 8` and `offset rip, 1`
/// (times the data alignment -8), and nothing else but nops.
fn initial_frame_is_entry(ops: &[u8]) -> bool {
    let mut r = Rd { b: ops, pos: 0 };
    let (mut cfa, mut ra) = (None, false);
    while let Some(op) = r.u8() {
        match op {
            0x00 => {}
            0x0c => match (r.uleb(), r.uleb()) {
                (Some(reg), Some(off)) => cfa = Some((reg, off)),
                _ => return false,
            },
            0x90 => ra = r.uleb() == Some(1),
            _ => return false,
        }
    }
    cfa == Some((7, 8)) && ra
}

/// An FDE's instructions change nothing before the first advance: the
/// function's first byte has the CIE's (entry) frame.
fn keeps_entry_frame(ops: &[u8]) -> bool {
    let mut r = Rd { b: ops, pos: 0 };
    while let Some(op) = r.u8() {
        let delta = match op {
            0x00 => continue,
            0x40..=0x7f => Some(u64::from(op & 0x3f)),
            0x02 => r.u8().map(u64::from),
            0x03 => r.u16().map(u64::from),
            0x04 => r.u32().map(u64::from),
            _ => return false,
        };
        match delta {
            Some(0) => continue,
            Some(_) => return true,
            None => return false,
        }
    }
    true
}

impl Image<'_> {
    /// `EVP_AEAD_CTX_cleanup`: the one function of the whole file (but
    /// `taken`) whose code is its code. Linkers reorder functions (uv's are
    /// megabytes apart), so nearness proves nothing; uniqueness does.
    fn find_cleanup(&self, unwind: &Unwind, taken: &[u64]) -> Result<(u64, u64), String> {
        if unwind.len() > MAX_FDES {
            return Err(format!("more than {MAX_FDES} functions"));
        }
        let mut found = Vec::new();
        let mut next = unwind.entry(0).map(|e| e.0);
        for i in 0..unwind.len() {
            let Some(start) = next else { break };
            next = unwind.entry(i + 1).map(|e| e.0);
            // The table is sorted: the next start bounds this function
            // (the last one is bounded by its section).
            let room = next.map_or(MAX_CLEANUP_SIZE, |n| n.saturating_sub(start));
            let Some(code) = self.code(start, room.min(MAX_CLEANUP_SIZE)) else {
                continue;
            };
            if !loads_field(code, CLEANUP_SLOT) || taken.contains(&start) {
                continue;
            }
            // A malformed FDE is no candidate.
            let Ok(f) = unwind.fde(i) else { continue };
            if f.size > MAX_CLEANUP_SIZE || !f.entry {
                continue;
            }
            let Some(code) = self.code(start, f.size) else {
                continue;
            };
            if decode(code, start).is_ok_and(|insns| is_cleanup(&insns, start, start + f.size)) {
                found.push((start, f.size));
            }
        }
        match found[..] {
            [one] => Ok(one),
            [] => Err("no function has EVP_AEAD_CTX_cleanup's code (inlined into free?)".into()),
            _ => Err(format!(
                "{} functions have EVP_AEAD_CTX_cleanup's code",
                found.len()
            )),
        }
    }
}

/// Whether `code` may read `[reg+disp]` with an 8-bit displacement: `mov
/// r64, [m]` (8b), `call [m]` (ff) or `cmp [m], imm8` (83) with ModRM mod 01
/// and no SIB. Cheap, over-inclusive: only what passes is decoded.
fn loads_field(code: &[u8], disp: u64) -> bool {
    let Ok(d) = u8::try_from(disp) else {
        return false;
    };
    memchr::memchr_iter(d, code).any(|p| {
        p >= 2
            && code[p - 1] & 0xc0 == 0x40
            && code[p - 1] & 7 != 4
            && matches!(code[p - 2], 0x8b | 0xff | 0x83)
    })
}

/// What a register holds in `EVP_AEAD_CTX_cleanup(ctx)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sym {
    /// `ctx`, the argument.
    Ctx,
    /// `ctx->aead`.
    Aead,
    /// `ctx->aead->cleanup`.
    Cleanup,
    Zero,
    Other,
}

/// One path through the candidate.
#[derive(Debug, Clone)]
struct Walk {
    k: usize,
    regs: [Sym; 16],
    stack: Vec<Sym>,
    called: bool,
    stored: bool,
}

enum Next {
    On,
    To(u64),
    Fork(u64),
    Ret,
    No,
}

/// Whether `insns` (`[start, end)`) is `EVP_AEAD_CTX_cleanup`: on every
/// path, only `ctx->aead` and `ctx->aead->cleanup` are read and tested, at
/// most one call (of `cleanup`, with `ctx`), then at most one store
/// (`ctx->aead = NULL`, after the call if there was one), a balanced stack
/// and `ret`; and one path calls and stores; every other instruction in
/// the range is padding.
fn is_cleanup(insns: &[Instruction], start: u64, end: u64) -> bool {
    let index = |t: u64| {
        (start..end)
            .contains(&t)
            .then(|| insns.binary_search_by_key(&t, |i| i.ip()).ok())
            .flatten()
    };
    let mut regs = [Sym::Other; 16];
    regs[RDI] = Sym::Ctx;
    let mut todo = vec![Walk {
        k: 0,
        regs,
        stack: Vec::new(),
        called: false,
        stored: false,
    }];
    let (mut steps, mut whole) = (0, false);
    let mut seen = vec![false; insns.len()];
    while let Some(mut w) = todo.pop() {
        loop {
            steps += 1;
            let Some(ins) = insns.get(w.k).filter(|_| steps <= 512) else {
                return false;
            };
            seen[w.k] = true;
            match cleanup_step(&mut w, ins) {
                Next::On => w.k += 1,
                Next::To(t) => match index(t) {
                    Some(k) => w.k = k,
                    None => return false,
                },
                Next::Fork(t) => {
                    let Some(k) = index(t).filter(|_| todo.len() < 16) else {
                        return false;
                    };
                    todo.push(Walk { k, ..w.clone() });
                    w.k += 1;
                }
                Next::Ret if w.stack.is_empty() && w.called <= w.stored => {
                    whole |= w.called;
                    break;
                }
                Next::Ret | Next::No => return false,
            }
        }
    }
    // Nothing but padding after the function: the FDE is exactly it.
    whole && first_unreached(insns, &seen).is_none()
}

/// The memory operand of `ins` as (what its base holds, displacement):
/// base register only, no index, no segment override.
fn operand(w: &Walk, ins: &Instruction) -> Option<(Sym, u64)> {
    let base = gpr(ins.memory_base())?;
    (ins.memory_index() == Register::None && ins.segment_prefix() == Register::None)
        .then(|| (w.regs[base], ins.memory_displacement64()))
}

/// One instruction of a path through a cleanup candidate.
fn cleanup_step(w: &mut Walk, ins: &Instruction) -> Next {
    let reg = |n: u32| {
        (n < ins.op_count() && ins.op_kind(n) == OpKind::Register)
            .then(|| gpr(ins.op_register(n)))
            .flatten()
            // The stack pointer moves only by push/pop and add/sub 8.
            .filter(|&r| r != 4)
    };
    let is_mem = |n: u32| n < ins.op_count() && ins.op_kind(n) == OpKind::Memory;
    let tested = |s: Sym| matches!(s, Sym::Aead | Sym::Cleanup);
    let field = |m: Option<(Sym, u64)>| match m {
        Some((Sym::Ctx, 0)) => Some(Sym::Aead),
        Some((Sym::Aead, CLEANUP_SLOT)) => Some(Sym::Cleanup),
        _ => None,
    };
    let t = ins.near_branch_target();
    let store_null = |w: &mut Walk| match (operand(w, ins), w.stored) {
        (Some((Sym::Ctx, 0)), false) => {
            w.stored = true;
            Next::On
        }
        _ => Next::No,
    };
    match ins.code() {
        _ if matches!(
            ins.mnemonic(),
            iced_x86::Mnemonic::Nop | iced_x86::Mnemonic::Endbr64
        ) =>
        {
            Next::On
        }
        Code::Push_r64 if w.stack.len() < 8 => {
            let v = gpr(ins.op0_register()).map_or(Sym::Other, |r| w.regs[r]);
            w.stack.push(v);
            Next::On
        }
        Code::Pop_r64 => match (gpr(ins.op0_register()), w.stack.pop()) {
            (Some(r), Some(v)) if r != 4 => {
                w.regs[r] = v;
                Next::On
            }
            _ => Next::No,
        },
        Code::Sub_rm64_imm8 | Code::Add_rm64_imm8
            if ins.op0_kind() == OpKind::Register
                && ins.op0_register() == Register::RSP
                && ins.immediate8to64() == 8 =>
        {
            if ins.code() == Code::Sub_rm64_imm8 && w.stack.len() < 8 {
                w.stack.push(Sym::Other);
                Next::On
            } else if ins.code() == Code::Add_rm64_imm8 && w.stack.pop().is_some() {
                Next::On
            } else {
                Next::No
            }
        }
        Code::Mov_r64_rm64 | Code::Mov_rm64_r64 => match (reg(0), reg(1)) {
            (Some(d), Some(s)) => {
                w.regs[d] = w.regs[s];
                Next::On
            }
            (Some(d), None) if is_mem(1) => match field(operand(w, ins)) {
                Some(v) => {
                    w.regs[d] = v;
                    Next::On
                }
                None => Next::No,
            },
            (None, Some(s)) if is_mem(0) && w.regs[s] == Sym::Zero => store_null(w),
            _ => Next::No,
        },
        Code::Mov_rm64_imm32 if is_mem(0) && ins.immediate32() == 0 => store_null(w),
        // clang -Oz: `and qword [ctx], 0`.
        Code::And_rm64_imm8 if is_mem(0) && ins.immediate8to64() == 0 => store_null(w),
        Code::Xor_r32_rm32 | Code::Xor_rm32_r32 => match (reg(0), reg(1)) {
            (Some(d), Some(s)) if d == s => {
                w.regs[d] = Sym::Zero;
                Next::On
            }
            _ => Next::No,
        },
        Code::Test_rm64_r64 => match (reg(0), reg(1)) {
            (Some(a), Some(b)) if a == b && tested(w.regs[a]) => Next::On,
            _ => Next::No,
        },
        Code::Cmp_rm64_imm8 if ins.immediate8to64() == 0 => {
            let ok = match reg(0) {
                Some(r) => tested(w.regs[r]),
                None => is_mem(0) && field(operand(w, ins)).is_some(),
            };
            if ok {
                Next::On
            } else {
                Next::No
            }
        }
        c if c.is_jcc_short_or_near() => Next::Fork(t),
        Code::Jmp_rel8_64 | Code::Jmp_rel32_64 => Next::To(t),
        Code::Call_rm64 if !w.called && !w.stored && w.regs[RDI] == Sym::Ctx => {
            let target = match reg(0) {
                Some(r) => w.regs[r],
                None if is_mem(0) => field(operand(w, ins)).unwrap_or(Sym::Other),
                None => Sym::Other,
            };
            if target != Sym::Cleanup {
                return Next::No;
            }
            w.called = true;
            CALLER_SAVED.iter().for_each(|&r| w.regs[r] = Sym::Other);
            Next::On
        }
        Code::Retnq => Next::Ret,
        _ => Next::No,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::{ObjectSymbol, ObjectSymbolTable};
    use std::path::{Path, PathBuf};

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn order(l: &Located) -> Option<usize> {
        ProbePoint::AEAD.iter().position(|p| *p == l.point)
    }

    /// The AEAD functions as the symbol table of `data` has them: file
    /// offsets through the section table (not the segments the locator
    /// uses), sizes from the symbols.
    fn truth(data: &[u8]) -> Vec<Located> {
        let elf = object::File::parse(data).unwrap();
        let syms = elf.symbol_table().expect("an unstripped file");
        let mut v: Vec<Located> = syms
            .symbols()
            .filter_map(|s| {
                let point = crate::inspect::aead_point(s.name().ok()?)?;
                let sec = elf.section_by_index(s.section_index()?).ok()?;
                let (off, _) = sec.file_range()?;
                Some(Located {
                    point,
                    offset: off + s.address() - sec.address(),
                    size: s.size(),
                })
            })
            .collect();
        v.sort_by_key(order);
        v
    }

    fn has_symtab(data: &[u8]) -> bool {
        object::File::parse(data).unwrap().symbol_table().is_some()
    }

    /// The locator finds in `stripped` exactly the functions the symbols of
    /// `unstripped` name (both files of one build), and the same in
    /// `unstripped`.
    fn check_pair(unstripped: &Path, stripped: &Path) -> Report {
        let want = truth(&std::fs::read(unstripped).unwrap());
        let data = std::fs::read(stripped).unwrap();
        assert!(!has_symtab(&data), "{} has symbols", stripped.display());
        let t = std::time::Instant::now();
        let got = locate_awslc_report(&data[..])
            .unwrap_or_else(|e| panic!("{}: {e}", stripped.display()));
        eprintln!(
            "{}: {:?} in {:?}; omitted {:?}",
            stripped.display(),
            got.found,
            t.elapsed(),
            got.omitted
        );
        assert_eq!(got.found, want, "{}", stripped.display());
        let again = locate_awslc(&std::fs::read(unstripped).unwrap()[..]).unwrap();
        assert_eq!(again, want, "{}", unstripped.display());
        got
    }

    /// rustls 0.23 over aws-lc-rs 1.19 (aws-lc-sys 0.47), the e2e fixture
    /// and its `strip -s` copy (built by `make fixtures`; skipped without).
    #[test]
    fn rustls_fixture_stripped_matches_its_symbols() {
        let dir = repo().join("target/fixtures");
        let (u, s) = (
            dir.join("rustls_client_awslc"),
            dir.join("rustls_client_awslc_stripped"),
        );
        if !u.exists() || !s.exists() {
            eprintln!("skipped: {} not built (make fixtures)", s.display());
            return;
        }
        let r = check_pair(&u, &s);
        let points: Vec<ProbePoint> = r.found.iter().map(|l| l.point).collect();
        assert_eq!(points, ProbePoint::AEAD);
    }

    /// Other aws-lc-sys versions, built by hand into target/locate-fixtures
    /// (`<name>` and `<name>_stripped`; not part of the tree).
    #[test]
    fn hand_built_versions_match_their_symbols() {
        let Ok(dir) = std::fs::read_dir(repo().join("target/locate-fixtures")) else {
            eprintln!("skipped: no target/locate-fixtures");
            return;
        };
        let mut n = 0;
        for e in dir.flatten() {
            let u = e.path();
            let name = u.file_name().unwrap().to_string_lossy().to_string();
            let s = u.with_file_name(format!("{name}_stripped"));
            if name.ends_with("_stripped") || !s.exists() {
                continue;
            }
            check_pair(&u, &s);
            n += 1;
        }
        eprintln!("{n} pairs checked");
    }

    /// Any files named in `PLAINSIGHT_LOCATE` (colon-separated): what the
    /// locator says and how long it takes (the best of 5). Nothing without.
    #[test]
    fn locate_named_files() {
        let Some(list) = std::env::var_os("PLAINSIGHT_LOCATE") else {
            return;
        };
        for p in std::env::split_paths(&list) {
            let data = std::fs::read(&p).unwrap();
            let mut best = std::time::Duration::MAX;
            let mut r = Err(String::new());
            for _ in 0..5 {
                let t = std::time::Instant::now();
                r = locate_awslc_report(&data[..]);
                best = best.min(t.elapsed());
            }
            eprintln!("{} ({} bytes, {best:?}): {r:?}", p.display(), data.len());
            // The code scan alone, even where the locator stops before it.
            let img = Image::open(&data[..], true).unwrap();
            let paths = img.path_strings().unwrap();
            let t = std::time::Instant::now();
            let x = img.lea_xrefs(&paths);
            let text: u64 = img.text.iter().map(|s| s.size).sum();
            eprintln!(
                "  {text} bytes of code scanned in {:?}: {x:x?}",
                t.elapsed()
            );
        }
    }

    /// Builds the aead.c stand-in (tests/fixtures/elf/awslc_aead_*.c) with
    /// `cc` and `flags` into `dir`: the program and its `strip -s` copy.
    /// None when that compiler is not installed.
    fn build_like(dir: &Path, cc: &str, flags: &[&str]) -> Option<(PathBuf, PathBuf)> {
        let src = repo().join("tests/fixtures/elf");
        let name: String = std::iter::once(cc)
            .chain(flags.iter().copied())
            .collect::<Vec<_>>()
            .join("_")
            .replace(['=', '-'], "");
        let out = dir.join(&name);
        let run = std::process::Command::new(cc)
            .args(flags)
            .args(["-fPIE", "-pie", "-ffunction-sections", "-Wl,--gc-sections"])
            .args(["-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&out)
            .arg(src.join("awslc_aead_like.c"))
            .arg(src.join("awslc_aead_main.c"))
            .output();
        let run = match run {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && cc != "cc" => return None,
            r => r.unwrap(),
        };
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let stripped = dir.join(format!("{name}_stripped"));
        let st = std::process::Command::new("strip")
            .arg("-s")
            .arg("-o")
            .arg(&stripped)
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success());
        Some((out, stripped))
    }

    /// The stand-in built by gcc and clang, optimized several ways, old and
    /// new cleanup, with CET's endbr64: all five functions, exactly.
    #[test]
    fn stand_in_builds_match_their_symbols() {
        let dir = tempfile::tempdir().unwrap();
        let variants: &[(&str, &[&str])] = &[
            ("cc", &["-O2"]),
            ("cc", &["-O2", "-DOLD_CLEANUP"]),
            ("cc", &["-O3", "-fcf-protection=full"]),
            ("cc", &["-Os"]),
            ("cc", &["-O1"]),
            ("clang", &["-O2"]),
            ("clang", &["-O2", "-DOLD_CLEANUP"]),
            ("clang", &["-Os"]),
            // Constants through push imm / pop reg.
            ("clang", &["-Oz"]),
        ];
        for (cc, flags) in variants {
            let Some((u, s)) = build_like(dir.path(), cc, flags) else {
                eprintln!("skipped: no {cc}");
                continue;
            };
            let r = check_pair(&u, &s);
            let points: Vec<ProbePoint> = r.found.iter().map(|l| l.point).collect();
            assert_eq!(points, ProbePoint::AEAD, "{cc} {flags:?}");
        }
    }

    /// Doubt gives no answer: two functions raising seal's errors; error
    /// paths moved into `.cold` parts (their FDEs start inside a frame);
    /// two cleanup look-alikes (cleanup alone is left out).
    #[test]
    fn doubt_gives_no_answer() {
        let dir = tempfile::tempdir().unwrap();
        let locate = |flag: &str| {
            let (_, s) = build_like(dir.path(), "cc", &["-O2", flag]).unwrap();
            locate_awslc_report(&std::fs::read(s).unwrap()[..])
        };
        let e = locate("-DDECOY_SEAL").unwrap_err();
        assert!(
            e.starts_with("EVP_AEAD_CTX_seal: 2 functions raise its errors"),
            "{e}"
        );
        let e = locate("-DCOLD_ERRORS").unwrap_err();
        assert!(
            e.starts_with("EVP_AEAD_CTX_init_with_direction: the function at")
                && e.contains("does not start with a function's entry frame"),
            "{e}"
        );
        let r = locate("-DDECOY_CLEANUP").unwrap();
        assert!(r.found.iter().all(|l| l.point != ProbePoint::AeadCleanup));
        assert_eq!(r.found.len(), 4);
        assert_eq!(
            r.omitted,
            [(
                ProbePoint::AeadCleanup,
                "2 functions have EVP_AEAD_CTX_cleanup's code".to_string()
            )]
        );
    }

    /// A program without aws-lc is told apart by the path string alone;
    /// what is no x86-64 ELF is an error, not a panic.
    #[test]
    fn no_awslc() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("plain.c");
        std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
        let out = dir.path().join("plain");
        let st = std::process::Command::new("cc")
            .arg("-O2")
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .status()
            .unwrap();
        assert!(st.success());
        let e = locate_awslc(&std::fs::read(&out).unwrap()[..]).unwrap_err();
        assert!(e.starts_with("no aws-lc"), "{e}");
        assert!(locate_awslc(&b"hello"[..]).is_err());
        assert!(locate_awslc(&[][..]).is_err());
        let mut hdr = b"\x7fELF\x02\x01\x01".to_vec();
        hdr.resize(64, 0xff);
        assert!(locate_awslc(&hdr[..]).is_err());
    }

    /// Random corruption of the bytes the locator reads (`.eh_frame_hdr`,
    /// `.eh_frame`, the code, the path string) and truncation: never a
    /// panic, and any answer is the truth (a corrupted function is refused
    /// or left out, never replaced by another).
    #[test]
    fn corruption_never_misleads() {
        let dir = tempfile::tempdir().unwrap();
        let (u, s) = build_like(dir.path(), "cc", &["-O2"]).unwrap();
        let want = truth(&std::fs::read(u).unwrap());
        let data = std::fs::read(s).unwrap();
        let elf = object::File::parse(&data[..]).unwrap();
        let ranges: Vec<(usize, usize)> = [".eh_frame_hdr", ".eh_frame", ".text", ".rodata"]
            .iter()
            .filter_map(|n| elf.section_by_name(n)?.file_range())
            .map(|(o, n)| (o as usize, n as usize))
            .collect();
        assert_eq!(ranges.len(), 4);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let (mut ok, mut refused) = (0, 0);
        for i in 0..600 {
            let mut d = data.clone();
            for _ in 0..1 + rnd(3) {
                let (o, n) = ranges[rnd(ranges.len())];
                let at = o + rnd(n);
                d[at] = rnd(256) as u8;
            }
            if i % 10 == 0 {
                d.truncate(rnd(d.len()));
            }
            match locate_awslc_report(&d[..]) {
                Ok(r) => {
                    ok += 1;
                    for l in &r.found {
                        assert!(want.contains(l), "mutation {i}: {l:?} not in {want:?}");
                    }
                }
                Err(_) => refused += 1,
            }
        }
        eprintln!("{ok} answered, {refused} refused");
    }

    /// Bytes of EVP_AEAD_CTX_cleanup as compilers make it, and near misses.
    #[test]
    fn cleanup_shapes() {
        let is = |code: &[u8]| {
            let insns = decode(code, 0x1000).unwrap();
            is_cleanup(&insns, 0x1000, 0x1000 + code.len() as u64)
        };
        // gcc 12, aws-lc-sys 0.47 (NULL-checked method).
        let gcc: &[u8] = &[
            0x48, 0x8b, 0x07, 0x48, 0x85, 0xc0, 0x74, 0x18, 0x53, 0x48, 0x8b, 0x40, 0x20, 0x48,
            0x89, 0xfb, 0x48, 0x85, 0xc0, 0x74, 0x02, 0xff, 0xd0, 0x48, 0xc7, 0x03, 0x00, 0x00,
            0x00, 0x00, 0x5b, 0xc3, 0xc3,
        ];
        assert!(is(gcc));
        // gcc 12, aws-lc-sys 0.21 (method called unchecked, through memory).
        let old: &[u8] = &[
            0x48, 0x8b, 0x07, 0x48, 0x85, 0xc0, 0x74, 0x18, 0x53, 0x48, 0x89, 0xfb, 0xff, 0x50,
            0x20, 0x48, 0xc7, 0x03, 0x00, 0x00, 0x00, 0x00, 0x5b, 0xc3, 0x0f, 0x1f, 0x84, 0x00,
            0x00, 0x00, 0x00, 0x00, 0xc3,
        ];
        assert!(is(old));
        // clang 14: push first, ctx copied back into rdi.
        let clang: &[u8] = &[
            0x53, 0x48, 0x8b, 0x07, 0x48, 0x85, 0xc0, 0x74, 0x18, 0x48, 0x89, 0xfb, 0x48, 0x8b,
            0x40, 0x20, 0x48, 0x85, 0xc0, 0x74, 0x05, 0x48, 0x89, 0xdf, 0xff, 0xd0, 0x48, 0xc7,
            0x03, 0x00, 0x00, 0x00, 0x00, 0x5b, 0xc3,
        ];
        assert!(is(clang));
        // Another method slot (0x28: open).
        let mut slot = gcc.to_vec();
        slot[12] = 0x28;
        assert!(!is(&slot));
        // No store after the call.
        let mut nostore = gcc.to_vec();
        nostore.splice(23..30, [0x90; 7]);
        assert!(!is(&nostore));
        // A store of something else than NULL.
        let mut store1 = gcc.to_vec();
        store1[26] = 1;
        assert!(!is(&store1));
        // The argument not passed: rdi overwritten before the call.
        let mut clobber = clang.to_vec();
        clobber.splice(21..24, [0x48, 0x89, 0xc7]);
        assert!(!is(&clobber));
        // A tail call instead of the return.
        let mut tail = gcc.to_vec();
        tail.splice(31..32, [0xe9, 0, 0, 0, 0]);
        assert!(!is(&tail));
        // Unbalanced stack.
        let mut unbalanced = gcc.to_vec();
        unbalanced[30] = 0x90;
        assert!(!is(&unbalanced));
    }

    /// CFI: the standard x86-64 CIE, an FDE that starts at a function
    /// entry (advance first) and a `.cold` part's (CFA offset set first).
    #[test]
    fn entry_frames() {
        assert!(initial_frame_is_entry(&[
            0x0c, 0x07, 0x08, 0x90, 0x01, 0, 0
        ]));
        assert!(!initial_frame_is_entry(&[0x0c, 0x07, 0x10, 0x90, 0x01]));
        assert!(!initial_frame_is_entry(&[0x0c, 0x07, 0x08]));
        assert!(!initial_frame_is_entry(&[0x0c, 0x07]));
        assert!(keeps_entry_frame(&[0x41, 0x0e, 0x10, 0x83, 0x02]));
        assert!(keeps_entry_frame(&[]));
        assert!(keeps_entry_frame(&[0x00, 0x02, 0x05, 0x0e, 0x10]));
        assert!(!keeps_entry_frame(&[0x0e, 0x30, 0x83, 0x02, 0x41]));
        assert!(!keeps_entry_frame(&[0x40, 0x0e, 0x30]));
        assert!(!keeps_entry_frame(&[0x03, 0x01]));
    }

    #[test]
    fn leb128_and_pointers() {
        let mut r = Rd {
            b: &[0x78, 0xe5, 0x8e, 0x26, 0x80],
            pos: 0,
        };
        assert_eq!(r.sleb(), Some(-8));
        assert_eq!(r.uleb(), Some(624_485));
        assert_eq!(r.uleb(), None);
        let mut r = Rd {
            b: &[0xf0, 0xff, 0xff, 0xff],
            pos: 0,
        };
        assert_eq!(r.ptr(0x1b, 0x1000), Some(0xff0));
        r.pos = 0;
        assert_eq!(r.ptr(0x9b, 0x1000), None);
    }

    #[test]
    fn constants_join_up_to_a_cap() {
        let mut v = Val::one(1);
        assert_eq!(v.join(Val::one(1)).consts(), Some(&[1][..]));
        for x in 2..=MAX_CONSTS as u64 {
            v = v.join(Val::one(x));
        }
        assert_eq!(v.consts().map(<[u64]>::len), Some(MAX_CONSTS));
        assert_eq!(v.join(Val::one(99)), Val::Top);
        assert_eq!(Val::one(1).join(Val::Top), Val::Top);
        assert_eq!(Val::one(0x1_0000_0005).low32().consts(), Some(&[5][..]));
    }
}
