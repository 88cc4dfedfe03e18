//! Finding BoringSSL's TLS functions in a stripped file (issue #28):
//! Chromium, Bun, and every other program that links BoringSSL privately
//! and drops its symbols.
//!
//! What survives stripping is BoringSSL's error reporting:
//! `OPENSSL_PUT_ERROR(SSL, reason)` compiles to `ERR_put_error(16, 0,
//! reason, __FILE__, __LINE__)`, so `.../ssl/ssl_lib.cc` is in read-only
//! data and each error site loads its address into `rcx` (`lea rcx,
//! [rip+d]`, or `mov ecx, imm32` in a non-PIE executable such as Bun). The
//! (library, reason) pairs a function raises are public and have not
//! changed in BoringSSL's history; line numbers do change and are never
//! used. A function is recognised by the set of reasons its `ssl_lib.cc`
//! sites raise, plus call-graph facts (table below; measurements in
//! `docs/stripped-boringssl.md`).
//!
//! Function bounds come from `.eh_frame` where it covers the site (GCC
//! builds: grpcio, Android's library). Chromium and Bun have no FDE for
//! BoringSSL, so there the bounds come from the code: clang and LLD align
//! functions to 16 bytes and fill the gaps with `int3`, and the code holds
//! no data. A linear sweep from a padding point at least 4 KiB before the
//! site gives instruction boundaries; functions start after `int3` runs
//! and at direct-call targets (one `memchr`-driven pass over the code
//! collects calls into the swept regions), and a function runs to the next
//! start. A located function is accepted only if every instruction of its
//! range is reached from its entry (nothing of a neighbour merged in) and
//! its entry is an FDE's start with an entry frame or the target of a
//! `call` that decodes as one in a sweep of its own code.
//!
//! | probe point | BoringSSL function | rule (reasons of its ssl_lib.cc sites, library 16) |
//! |---|---|---|
//! | `SslWrite` | `SSL_write` | {111 BAD_LENGTH, 215 HANDSHAKE_FAILURE, 226 UNINITIALIZED} ⊆ R ⊆ those + {66}; before BAD_LENGTH existed (2022): R = {66, 215, 226} with an indirect call |
//! | `SslDoHandshake` | `SSL_do_handshake` | R = {134 CONNECTION_TYPE_NOT_SET}, called by `SSL_write` |
//! | (none) | `ssl_read_impl` | {215, 226} ⊆ R ⊆ those + {110, 182}, calls `SSL_do_handshake` |
//! | `SslRead` | `SSL_read` | R = {66 SHOULD_NOT_HAVE_BEEN_CALLED}, calls `ssl_read_impl`, stores to memory not on the stack (`SSL_peek`, the same otherwise, never does; its bytes come again through `SSL_read`, so it is not probed) |
//! | `SslSetHostName` | `SSL_set_tlsext_host_name` | {213} ⊆ R ⊆ {65, 213} |
//! | (none) | `SSL_new` | {185 NULL_SSL_CTX} ⊆ R ⊆ {65, 185} |
//! | `SslFree` | `ssl_st::~ssl_st` (every `SSL_free`, inlined or not, calls it) | no error: the first call of code shaped like `SSL_free` (`test rdi, rdi; je`, call D, `rdi` restored, call or jump F) where D and F are both callees of `SSL_new`, and D makes an indirect call (see [`destructor`]) |
//!
//! Checked against: Android's `libssl.so` (symbols: every address equal),
//! Chromium 156 (Debian), Bun 1.4.5, grpcio 1.85.4 (see the tests).
//!
//! Exact or nothing: a needed function that no rule settles to exactly one
//! candidate is an `Err` naming it and why; an optional one is left out
//! with its reason. Work is bounded by the `MAX_*` constants.

use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Instruction, OpAccess, Register};

use super::locate::{
    all_in, decode, error_target, padding, propagate, step, Flow, Image, Report, Site, Unwind, RCX,
    RDI, RDX, RSI,
};
use super::sweep::{rcx_xrefs, Sweeps};
use crate::probes::ProbePoint;
use std::sync::atomic::AtomicUsize;

/// The end of `__FILE__` of ssl_lib.cc's error sites, in two halves so
/// that this program's own read-only data does not hold it whole.
const PATH: [&[u8]; 2] = [b"ssl/ssl_", b"lib.cc\0"];
/// Copies of the path string considered.
const MAX_STRINGS: usize = 4;
/// Functions holding references that are decoded.
const MAX_FUNCTIONS: usize = 128;
/// Larger functions are not decoded (none of ssl_lib.cc's is near it).
const MAX_FUNCTION_SIZE: u64 = 16 << 10;
const LIB_SSL: u64 = 16;
const MALLOC_FAILURE: u64 = 65;
const SHOULD_NOT_HAVE_BEEN_CALLED: u64 = 66;
const BAD_HELLO_REQUEST: u64 = 110;
const BAD_LENGTH: u64 = 111;
const CONNECTION_TYPE_NOT_SET: u64 = 134;
const NO_RENEGOTIATION: u64 = 182;
const NULL_SSL_CTX: u64 = 185;
const INVALID_SERVERNAME: u64 = 213;
const HANDSHAKE_FAILURE: u64 = 215;
const UNINITIALIZED: u64 = 226;

/// Locates stripped BoringSSL's functions in `data` (the whole ELF file).
/// `Err` starting with "no BoringSSL" for a file that does not carry it.
pub fn locate_boringssl<'d, R: super::locate::FileData<'d>>(data: R) -> Result<Report, String> {
    if path_strings(&Image::open(data, false)?)?.is_empty() {
        return Err("no BoringSSL: no ssl/ssl_lib.cc path in read-only data".into());
    }
    let img = Image::open(data, true)?;
    let paths = path_strings(&img)?;
    // SSL_free's openings are collected in the same pass over the code.
    let kept = (AtomicUsize::new(0), AtomicUsize::new(0));
    let (mut xrefs, shapes) = rcx_xrefs(&img, &paths, OPENING_READ - 1, &|at, b, n, out| {
        free_openings(at, b, n, out, (&kept.0, &kept.1))
    })?;
    if img.fixed {
        xrefs.extend(imm_xrefs(&img, &paths)?);
    }
    xrefs.sort_unstable();
    xrefs.dedup();
    if xrefs.is_empty() {
        return Err("no BoringSSL: ssl_lib.cc's path is never loaded by code".into());
    }
    let unwind = img.unwind().ok();
    let mut funcs = Funcs::find(&img, unwind.as_ref(), &xrefs)?;
    resolve_plt(data, &mut funcs.list);
    let err_fn = error_function(&funcs.list, &paths)?;
    let sigs: Vec<Result<Vec<u64>, String>> = funcs
        .list
        .iter()
        .map(|f| reasons(f, err_fn, &paths))
        .collect();
    let r = Rules {
        funcs: &funcs,
        sigs: &sigs,
    };
    let mut report = Report {
        found: Vec::new(),
        omitted: Vec::new(),
    };
    let write = r.write().map_err(|w| format!("SSL_write: {w}"))?;
    let handshake = r
        .handshake(write)
        .map_err(|w| format!("SSL_do_handshake: {w}"))?;
    let read_impl = r
        .read_impl(write, handshake)
        .map_err(|w| format!("ssl_read_impl: {w}"))?;
    let read = r.read(read_impl).map_err(|w| format!("SSL_read: {w}"))?;
    let mut chosen = vec![
        (ProbePoint::SslWrite, write),
        (ProbePoint::SslRead, read),
        (ProbePoint::SslDoHandshake, handshake),
    ];
    match r.host_name() {
        Ok(i) => chosen.push((ProbePoint::SslSetHostName, i)),
        Err(w) => report.omitted.push((ProbePoint::SslSetHostName, w)),
    }
    for (point, i) in chosen {
        let f = &funcs.list[i];
        funcs
            .check_entry(f)
            .map_err(|w| format!("{}: {w}", point.symbol()))?;
        report.found.push(img.located(point, f.start, f.size)?);
    }
    match r
        .ssl_new()
        .and_then(|n| destructor(&img, &funcs.list[n], &shapes))
    {
        // Entry only: the size is not needed (no return probe).
        Ok(d) => report.found.push(img.located(ProbePoint::SslFree, d, 0)?),
        Err(w) => report.omitted.push((ProbePoint::SslFree, w)),
    }
    Ok(report)
}

/// Bytes of a free function's opening searched for: `test rdi, rdi; je`.
const FREE_OPENING: [u8; 4] = [0x48, 0x85, 0xff, 0x74];
/// What is read of an opening for its shape.
const OPENING_READ: usize = 64;
/// Free-shaped openings examined at most.
const MAX_FREE_SHAPES: usize = 1 << 18;
/// Free shapes (D, F) kept at most.
const MAX_SHAPES: usize = 1 << 16;
/// What is read of `~ssl_st` for its indirect call.
const MAX_DESTRUCTOR_READ: usize = 1024;

/// Every free-shaped opening of a window of code (`at`, `bytes`, its `n`
/// positions; [`Sec::scan`]) as (D, F) ([`free_shape`]): SSL_new's callees
/// are not known yet, so all are kept, to be matched with them
/// (`destructor`). `kept`: the openings seen and the shapes kept so far
/// by all windows, bounded.
fn free_openings(
    at: u64,
    bytes: &[u8],
    n: usize,
    out: &mut Vec<(u64, u64)>,
    (kept, kept_shapes): (&AtomicUsize, &AtomicUsize),
) -> Result<(), String> {
    let (mut seen, mut many) = (0, false);
    super::sweep::for_each_match(bytes, &FREE_OPENING, 1, 3, &mut |i| {
        if i >= n || many {
            return; // the next window's
        }
        seen += 1;
        let code = &bytes[i..(i + OPENING_READ).min(bytes.len())];
        // Cheap first: the destroying call comes within a few bytes.
        if !code.get(5..24).is_some_and(|c| c.contains(&0xe8)) {
            return;
        }
        if let Some((d, f)) = free_shape(code, at + i as u64) {
            if d != f {
                out.push((d, f));
            }
        }
        many = seen > MAX_FREE_SHAPES || out.len() > MAX_SHAPES;
    });
    let all = kept.fetch_add(seen, std::sync::atomic::Ordering::Relaxed) + seen;
    let shapes = kept_shapes.fetch_add(out.len(), std::sync::atomic::Ordering::Relaxed) + out.len();
    match many || all > MAX_FREE_SHAPES || shapes > MAX_SHAPES {
        true => Err(format!("more than {MAX_FREE_SHAPES} free-shaped openings")),
        false => Ok(()),
    }
}

/// The end of a connection: `ssl_st::~ssl_st` (`rdi` = the SSL), which
/// every `SSL_free` calls, also where LTO inlined `SSL_free` into its
/// callers (Bun: 28 sites), so it is probed rather than SSL_free. It raises
/// no error, so it is found by code shape: `SSL_free` is `if (ssl == NULL)
/// return; ssl->~ssl_st(); OPENSSL_free(ssl);` ([`free_shape`]), and both
/// functions it calls are called by `SSL_new` too (its failure path
/// destroys the new SSL the same way). The one such destructor must make
/// an indirect call (`ssl->method->ssl_free`). `shapes`: (D, F) of every
/// free-shaped opening ([`free_openings`]).
fn destructor(img: &Image, ssl_new: &Func, shapes: &[(u64, u64)]) -> Result<u64, String> {
    if shapes.len() > MAX_SHAPES {
        return Err(format!("more than {MAX_SHAPES} free-shaped functions"));
    }
    let callees: std::collections::HashSet<u64> = ssl_new
        .flow
        .sites
        .iter()
        .map(|s| s.target)
        .filter(|t| t >> 63 == 0)
        .collect();
    let mut found: Vec<u64> = Vec::new();
    for &(d, f) in shapes {
        if callees.contains(&d) && callees.contains(&f) && !found.contains(&d) {
            found.push(d);
        }
    }
    found.retain(|&d| {
        img.code(d, MAX_DESTRUCTOR_READ as u64)
            .or_else(|| img.code(d, 64))
            .is_some_and(|c| makes_indirect_call(c, d))
    });
    match found[..] {
        [d] => Ok(d),
        [] => Err("no SSL_free-shaped code calls a callee of SSL_new".into()),
        _ => Err(format!(
            "{} candidates for ~ssl_st ({})",
            found.len(),
            found
                .iter()
                .map(|d| format!("{d:#x}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// In `test rdi, rdi; je ...; <prologue>; call D; mov rdi, <saved>;
/// <epilogue>; call|jmp F` at `code` (address `at`), D and F: a pointer
/// checked, destroyed, then freed. Only pushes, pops, `mov rbp, rsp`, the
/// copy of `rdi`, stack adjustments and `endbr64` may come between.
fn free_shape(code: &[u8], at: u64) -> Option<(u64, u64)> {
    let mut d = Decoder::with_ip(64, code, at, DecoderOptions::NONE);
    let test = d.decode();
    let je = d.decode();
    if test.code() != Code::Test_rm64_r64
        || test.op0_register() != Register::RDI
        || test.op1_register() != Register::RDI
        || je.code() != Code::Je_rel8_64
    {
        return None;
    }
    let frame = |ins: &Instruction| match ins.code() {
        Code::Push_r64 | Code::Pop_r64 | Code::Endbr64 => true,
        Code::Mov_r64_rm64 | Code::Mov_rm64_r64 => {
            ins.op0_register() == Register::RBP && ins.op1_register() == Register::RSP
        }
        Code::Sub_rm64_imm8 | Code::Sub_rm64_imm32 | Code::Add_rm64_imm8 | Code::Add_rm64_imm32 => {
            ins.op0_register() == Register::RSP
        }
        _ => false,
    };
    // Where `rdi` is kept across the call: a register, or a stack slot
    // (GCC -Os); `None` before it is saved.
    #[derive(PartialEq, Clone, Copy)]
    enum Kept {
        Reg(Register),
        Slot(u64),
        Restored,
    }
    let slot = |ins: &Instruction, n: u32| {
        (ins.op_kind(n) == iced_x86::OpKind::Memory
            && ins.memory_base() == Register::RSP
            && ins.memory_index() == Register::None)
            .then(|| ins.memory_displacement64())
    };
    let reg = |ins: &Instruction, n: u32| {
        (ins.op_kind(n) == iced_x86::OpKind::Register).then(|| ins.op_register(n))
    };
    let moves = |ins: &Instruction| matches!(ins.code(), Code::Mov_r64_rm64 | Code::Mov_rm64_r64);
    let mut kept = None;
    let mut destroy = None;
    for _ in 0..12 {
        let ins = d.decode();
        match ins.code() {
            Code::Call_rel32_64 if destroy.is_none() => destroy = Some(ins.near_branch_target()),
            Code::Call_rel32_64 | Code::Jmp_rel32_64 | Code::Jmp_rel8_64 => {
                return (destroy.is_some() && kept == Some(Kept::Restored))
                    .then(|| (destroy.unwrap_or(0), ins.near_branch_target()));
            }
            _ if frame(&ins) => {}
            // Before the call: rdi kept; after it: rdi restored from there.
            _ if moves(&ins) && destroy.is_none() && reg(&ins, 1) == Some(Register::RDI) => {
                kept = match (reg(&ins, 0), slot(&ins, 0)) {
                    (Some(r), _) => Some(Kept::Reg(r)),
                    (None, Some(d)) => Some(Kept::Slot(d)),
                    _ => return None,
                };
            }
            _ if moves(&ins) && destroy.is_some() && reg(&ins, 0) == Some(Register::RDI) => {
                let from = match (reg(&ins, 1), slot(&ins, 1)) {
                    (Some(r), _) => Kept::Reg(r),
                    (None, Some(d)) => Kept::Slot(d),
                    _ => return None,
                };
                if Some(from) != kept {
                    return None;
                }
                kept = Some(Kept::Restored);
            }
            _ => return None,
        }
    }
    None
}

/// Whether `code` (at `at`), read linearly up to its first `ret` or
/// `int3`, calls through a register-based memory operand or a register.
fn makes_indirect_call(code: &[u8], at: u64) -> bool {
    let mut d = Decoder::with_ip(64, code, at, DecoderOptions::NONE);
    for ins in &mut d {
        match ins.flow_control() {
            FlowControl::IndirectCall if !ins.is_ip_rel_memory_operand() => return true,
            FlowControl::Return | FlowControl::Interrupt => return false,
            _ if ins.is_invalid() => return false,
            _ => {}
        }
    }
    false
}

/// Address ranges of the strings ending in `PATH` (from the string's
/// start to its NUL).
fn path_strings(img: &Image) -> Result<Vec<(u64, u64)>, String> {
    let path = PATH.concat();
    let found = img.strings_holding(&path, |b| b == b'/' || b == 0, MAX_STRINGS)?;
    Ok(found
        .into_iter()
        .map(|(from, at)| (from, at + path.len() as u64))
        .collect())
}

/// In an ET_EXEC file: `mov ecx, imm32` whose immediate is a path
/// string's start. Returns the instruction addresses.
fn imm_xrefs(img: &Image, paths: &[(u64, u64)]) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    for &(start, _) in paths {
        let Ok(imm) = u32::try_from(start) else {
            continue;
        };
        // `mov ecx, imm32`: the file is ERR_put_error's fourth argument.
        // Whether the b9 is an instruction is for the sweep to say.
        let mut needle = [0xb9, 0, 0, 0, 0];
        needle[1..].copy_from_slice(&imm.to_le_bytes());
        for s in &img.text {
            let hits = s.scan(needle.len() - 1, &|at, bytes, n, out| {
                for i in memchr::memmem::find_iter(bytes, &needle) {
                    if i < n && out.len() <= super::locate::MAX_XREFS {
                        out.push(at + i as u64);
                    }
                }
                Ok(())
            })?;
            out.extend(hits);
            if out.len() > super::locate::MAX_XREFS {
                return Err("too many references to ssl_lib.cc's path".into());
            }
        }
    }
    Ok(out)
}

/// One function holding a reference, decoded.
struct Func {
    start: u64,
    /// Up to its last instruction that is not padding.
    size: u64,
    /// From an FDE whose frame at the start is a function entry's.
    fde_entry: bool,
    /// From a sweep: the start is the target of a direct call.
    called: bool,
    insns: Vec<Instruction>,
    flow: Flow,
}

impl Func {
    fn calls(&self, target: u64) -> bool {
        self.flow.sites.iter().any(|s| s.target == target)
    }

    /// Writes memory through a register other than the stack's or the
    /// frame pointer's, other than by a string copy (SSL_read consumes
    /// `s3->pending_app_data`; SSL_peek writes only the caller's buffer). `rbp` is the frame pointer only in a function
    /// that makes it one (`mov rbp, rsp`); GCC uses it as any register.
    fn stores(&self) -> bool {
        let frame = self.insns.iter().take(8).any(|i| {
            matches!(i.code(), Code::Mov_r64_rm64 | Code::Mov_rm64_r64)
                && i.op0_register() == Register::RBP
                && i.op1_register() == Register::RSP
        });
        let mut info = iced_x86::InstructionInfoFactory::new();
        // An inlined memcpy (`rep movsb`) writes the caller's buffer.
        let copy = |i: &Instruction| {
            use iced_x86::Mnemonic::*;
            matches!(
                i.mnemonic(),
                Movsb | Movsw | Movsd | Movsq | Stosb | Stosw | Stosd | Stosq
            )
        };
        self.insns.iter().filter(|i| !copy(i)).any(|ins| {
            info.info(ins).used_memory().iter().any(|m| {
                let base = m.base();
                matches!(
                    m.access(),
                    OpAccess::Write | OpAccess::ReadWrite | OpAccess::CondWrite
                ) && !matches!(base, Register::RSP | Register::RIP | Register::None)
                    && !(frame && base == Register::RBP)
            })
        })
    }
}

/// The functions holding the references, with what bounded them.
struct Funcs {
    list: Vec<Func>,
}

impl Funcs {
    fn find(img: &Image, unwind: Option<&Unwind>, xrefs: &[u64]) -> Result<Funcs, String> {
        let mut fs = Funcs { list: Vec::new() };
        let mut unbounded = Vec::new();
        for &x in xrefs {
            match unwind.map(|u| u.containing(x)).transpose()?.flatten() {
                Some(fde) if fs.list.iter().all(|f| f.start != fde.start) => {
                    let mut f = analyse(img, fde.start, fde.size)?;
                    f.fde_entry = fde.entry;
                    fs.push(f)?;
                }
                Some(_) => {}
                None => unbounded.push(x),
            }
        }
        if unbounded.is_empty() {
            return Ok(fs);
        }
        let sw = Sweeps::build(img, &mut unbounded)?;
        for &x in &unbounded {
            let (start, end, called) = sw.bounds(img, x, MAX_FUNCTION_SIZE)?;
            if fs.list.iter().all(|f| f.start != start) {
                let mut f = analyse(img, start, end - start)?;
                f.called = called;
                fs.push(f)?;
            }
        }
        Ok(fs)
    }

    fn push(&mut self, f: Func) -> Result<(), String> {
        if self.list.len() >= MAX_FUNCTIONS {
            return Err(format!(
                "more than {MAX_FUNCTIONS} functions load ssl_lib.cc's path"
            ));
        }
        self.list.push(f);
        Ok(())
    }

    /// The entry of `f` is a function's: an FDE's with an entry frame, or
    /// the target of a `call` that is an instruction of a sweep of its
    /// own code; and all of `f` is reached from it.
    fn check_entry(&self, f: &Func) -> Result<(), String> {
        if let Some(at) = f.flow.unreached {
            return Err(format!(
                "{at:#x} is not reached from the entry of the function at {:#x}",
                f.start
            ));
        }
        if f.fde_entry {
            return Ok(());
        }
        if !f.called {
            return Err(format!("nothing calls the function at {:#x}", f.start));
        }
        Ok(())
    }
}

/// Decodes `[start, start + size)` and propagates constants; jumps out of
/// it to a shared error block are followed to the block's call.
fn analyse(img: &Image, start: u64, size: u64) -> Result<Func, String> {
    let mut f = Func {
        start,
        size,
        fde_entry: false,
        called: false,
        insns: Vec::new(),
        flow: Flow::default(),
    };
    if size > MAX_FUNCTION_SIZE {
        return Ok(f);
    }
    let code = img
        .code(start, size)
        .ok_or_else(|| format!("the function at {start:#x} is outside code"))?;
    f.insns = decode(code, start)?;
    if let Some(last) = f.insns.iter().rposition(|i| !padding(i)) {
        f.size = f.insns[last].next_ip() - start;
    }
    f.flow = propagate(&f.insns, start, start + size)?;
    for s in &mut f.flow.sites {
        follow_shared_block(img, s, start, start + size);
    }
    Ok(f)
}

/// Symbol relocations (GOT slots) kept at most.
const MAX_PLT_ENTRIES: usize = 1 << 16;

/// Calls through the file's own PLT to a function it defines (a shared
/// library calling its exported functions, like Android's `libssl.so`)
/// become calls of that function: the stub's GOT slot is relocated to the
/// symbol, whose value is the function.
fn resolve_plt<'d, R: object::ReadRef<'d>>(data: R, funcs: &mut [Func]) {
    use object::read::elf::ElfFile64;
    use object::{Endianness, Object, ObjectSymbol, ObjectSymbolTable};
    let Ok(elf) = ElfFile64::<Endianness, R>::parse(data) else {
        return;
    };
    let Some(dynsyms) = elf.dynamic_symbol_table() else {
        return;
    };
    let mut slots: Vec<(u64, u64)> = super::elf::plt_relocations(&elf, MAX_PLT_ENTRIES)
        .into_iter()
        .filter_map(|(got, i)| {
            let sym = dynsyms
                .symbol_by_index(object::SymbolIndex(i as usize))
                .ok()?;
            (sym.is_definition() && sym.address() != 0).then(|| (got, sym.address()))
        })
        .collect();
    if slots.is_empty() {
        return;
    }
    slots.sort_unstable();
    let mut stubs = super::elf::plt_stubs(&elf, |slot| {
        let k = slots.binary_search_by_key(&slot, |s| s.0).ok()?;
        Some(slots[k].1)
    });
    stubs.sort_unstable();
    for site in funcs.iter_mut().flat_map(|f| f.flow.sites.iter_mut()) {
        if let Ok(k) = stubs.binary_search_by_key(&site.target, |s| s.0) {
            site.target = stubs[k].1;
        }
    }
}

/// Instructions read of a shared error block before its call.
const MAX_BLOCK: usize = 8;

/// A site that jumps out of its function (LTO and clang merge the tails
/// of error paths, even across functions) becomes the call the jump
/// reaches, with the registers the block's own moves leave.
fn follow_shared_block(img: &Image, s: &mut Site, start: u64, end: u64) {
    let Some(code) = img.code(s.at, 16) else {
        return;
    };
    let mut d = Decoder::with_ip(64, code, s.at, DecoderOptions::NONE);
    let jump = d.decode();
    if !matches!(
        jump.flow_control(),
        FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch
    ) || (start..end).contains(&s.target)
    {
        return;
    }
    let Some(block) = img
        .code(s.target, 15 * MAX_BLOCK as u64)
        .or_else(|| img.code(s.target, 64))
    else {
        return;
    };
    let mut d = Decoder::with_ip(64, block, s.target, DecoderOptions::NONE);
    let mut regs = s.regs;
    let mut info = iced_x86::InstructionInfoFactory::new();
    for _ in 0..MAX_BLOCK {
        let ins = d.decode();
        match ins.flow_control() {
            FlowControl::Call => {
                s.target = ins.near_branch_target();
                s.regs = regs;
                return;
            }
            FlowControl::Next => step(&mut regs, &ins, &mut info),
            _ => return,
        }
    }
}

/// The one function ssl_lib.cc's error sites call: `ERR_put_error(16, 0,
/// reason, path, line)`.
fn error_function(funcs: &[Func], paths: &[(u64, u64)]) -> Result<u64, String> {
    let sites = funcs.iter().flat_map(|f| &f.flow.sites);
    error_target(sites, paths, Some(LIB_SSL), "ssl_lib.cc")
}

/// The sorted reasons of `f`'s ssl_lib.cc error sites. A site whose file,
/// library or reason is not a known constant makes the set unknown.
fn reasons(f: &Func, err_fn: u64, paths: &[(u64, u64)]) -> Result<Vec<u64>, String> {
    if !f.flow.decoded {
        return Err("not decoded (too large)".into());
    }
    let mut out = Vec::new();
    for s in &f.flow.sites {
        let file = s.regs[RCX].consts();
        let ours = file.is_some_and(|v| all_in(v, paths));
        let mixed = file.is_some_and(|v| !ours && v.iter().any(|x| all_in(&[*x], paths)));
        if s.target != err_fn {
            // The path passed to something else (an assertion): only a
            // call that looks like an error site must reach ERR_put_error.
            if ours && s.regs[RSI].consts() == Some(&[0][..]) {
                return Err(format!("the error site at {:#x} is not followed", s.at));
            }
            continue;
        }
        if mixed || (file.is_none() && s.regs[RSI].consts() == Some(&[0][..])) {
            return Err(format!("the file of the error at {:#x} is not known", s.at));
        }
        if !ours {
            continue;
        }
        if s.regs[RDI].consts() != Some(&[LIB_SSL][..]) {
            return Err(format!("the error at {:#x} is not the SSL library's", s.at));
        }
        let r = s.regs[RDX]
            .consts()
            .ok_or_else(|| format!("the reason at {:#x} is not a constant", s.at))?;
        out.extend_from_slice(r);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// `required ⊆ r ⊆ required ∪ optional`.
fn fits(r: &[u64], required: &[u64], optional: &[u64]) -> bool {
    required.iter().all(|x| r.contains(x))
        && r.iter()
            .all(|x| required.contains(x) || optional.contains(x))
}

/// The rules of the table in the module's documentation.
struct Rules<'a> {
    funcs: &'a Funcs,
    sigs: &'a [Result<Vec<u64>, String>],
}

impl Rules<'_> {
    /// The indices of the functions whose reasons pass `pred`.
    fn matching(&self, pred: impl Fn(usize, &[u64]) -> bool) -> Vec<usize> {
        self.sigs
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().ok().filter(|r| pred(i, r)).map(|_| i))
            .collect()
    }

    /// Exactly one, or why not (with the functions left unresolved).
    fn one(&self, found: Vec<usize>) -> Result<usize, String> {
        match found[..] {
            [i] => Ok(i),
            [] => {
                let unresolved: Vec<String> = self
                    .funcs
                    .list
                    .iter()
                    .zip(self.sigs)
                    .filter_map(|(f, s)| s.as_ref().err().map(|w| format!("{:#x}: {w}", f.start)))
                    .collect();
                Err(match unresolved.is_empty() {
                    true => "no function fits".into(),
                    false => format!("no function fits (unresolved: {})", unresolved.join("; ")),
                })
            }
            _ => Err(format!(
                "{} functions fit ({})",
                found.len(),
                found
                    .iter()
                    .map(|&i| format!("{:#x}", self.funcs.list[i].start))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    fn write(&self) -> Result<usize, String> {
        let now = [BAD_LENGTH, HANDSHAKE_FAILURE, UNINITIALIZED];
        let found = self.matching(|_, r| fits(r, &now, &[SHOULD_NOT_HAVE_BEEN_CALLED]));
        if !found.is_empty() || !self.matching(|_, r| r.contains(&BAD_LENGTH)).is_empty() {
            return self.one(found);
        }
        // Before BAD_LENGTH (BoringSSL of 2022).
        let old = [
            SHOULD_NOT_HAVE_BEEN_CALLED,
            HANDSHAKE_FAILURE,
            UNINITIALIZED,
        ];
        self.one(self.matching(|i, r| r == old && self.funcs.list[i].flow.indirect_calls > 0))
    }

    fn handshake(&self, write: usize) -> Result<usize, String> {
        let w = &self.funcs.list[write];
        self.one(
            self.matching(|i, r| {
                r == [CONNECTION_TYPE_NOT_SET] && w.calls(self.funcs.list[i].start)
            }),
        )
    }

    fn read_impl(&self, write: usize, handshake: usize) -> Result<usize, String> {
        let h = self.funcs.list[handshake].start;
        self.one(self.matching(|i, r| {
            i != write
                && fits(
                    r,
                    &[HANDSHAKE_FAILURE, UNINITIALIZED],
                    &[BAD_HELLO_REQUEST, NO_RENEGOTIATION],
                )
                && self.funcs.list[i].calls(h)
        }))
    }

    fn read(&self, read_impl: usize) -> Result<usize, String> {
        let ri = self.funcs.list[read_impl].start;
        self.one(self.matching(|i, r| {
            let f = &self.funcs.list[i];
            r == [SHOULD_NOT_HAVE_BEEN_CALLED] && f.calls(ri) && f.stores()
        }))
    }

    fn ssl_new(&self) -> Result<usize, String> {
        self.one(self.matching(|_, r| fits(r, &[NULL_SSL_CTX], &[MALLOC_FAILURE])))
    }

    fn host_name(&self) -> Result<usize, String> {
        self.one(self.matching(|_, r| fits(r, &[INVALID_SERVERNAME], &[MALLOC_FAILURE])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `PLAINSIGHT_LOCATE=path[:path...]`: prints what the locator finds in
    /// each file and how long it took (a tool for new builds).
    #[test]
    fn locate_files_from_env() {
        let Ok(list) = std::env::var("PLAINSIGHT_LOCATE") else {
            return;
        };
        for p in list.split(':') {
            let data = std::fs::read(p).expect("read");
            let t = std::time::Instant::now();
            let r = locate_boringssl(&data[..]);
            eprintln!("{p}: {:?} in {:?}", r, t.elapsed());
            if std::env::var("PLAINSIGHT_LOCATE_DEBUG").is_ok() {
                dump(&data);
            }
        }
    }

    fn dump(data: &[u8]) {
        let img = Image::open(data, true).unwrap();
        let paths = path_strings(&img).unwrap();
        let mut xrefs = img.lea_xrefs(&paths).unwrap();
        if img.fixed {
            xrefs.extend(imm_xrefs(&img, &paths).unwrap());
        }
        eprintln!("paths {paths:x?} xrefs {}", xrefs.len());
        let unwind = img.unwind().ok();
        let funcs = match Funcs::find(&img, unwind.as_ref(), &xrefs) {
            Ok(f) => f,
            Err(e) => return eprintln!("funcs: {e}"),
        };
        let err_fn = error_function(&funcs.list, &paths);
        eprintln!("err_fn {err_fn:x?}");
        let Ok(err_fn) = err_fn else { return };
        for f in &funcs.list {
            let callees: Vec<String> = f
                .flow
                .sites
                .iter()
                .filter(|s| s.target != err_fn)
                .map(|s| format!("{:#x}", s.target))
                .collect();
            eprintln!(
                "{:#x}+{:#x} fde {} called {} unreached {:x?} R {:?} stores {} calls {}",
                f.start,
                f.size,
                f.fde_entry,
                f.called,
                f.flow.unreached,
                reasons(f, err_fn, &paths),
                f.stores(),
                callees.join(",")
            );
        }
    }

    use super::super::testfixtures::{nm, section_offset};
    use std::path::{Path, PathBuf};

    /// The probe points and file offsets the symbols of `unstripped` give;
    /// the connection's end is the destructor `destructor` names, or (a
    /// file without its symbol) the first call of `SSL_free`.
    fn truth(unstripped: &Path, dynamic: bool, destructor: Option<&str>) -> Vec<(ProbePoint, u64)> {
        let syms = nm(unstripped, dynamic);
        let mut v: Vec<(ProbePoint, u64)> = [
            ProbePoint::SslWrite,
            ProbePoint::SslRead,
            ProbePoint::SslDoHandshake,
            ProbePoint::SslSetHostName,
        ]
        .iter()
        .map(|&p| {
            let s = &syms[p.symbol()];
            (p, section_offset(unstripped, s.vaddr))
        })
        .collect();
        let d = match destructor {
            Some(name) => syms[name].vaddr,
            None => {
                let at = syms["SSL_free"].vaddr;
                let off = section_offset(unstripped, at) as usize;
                let data = std::fs::read(unstripped).unwrap();
                free_shape(&data[off..off + 64], at).unwrap().0
            }
        };
        v.push((ProbePoint::SslFree, section_offset(unstripped, d)));
        v
    }

    fn located(path: &Path) -> Result<Vec<(ProbePoint, u64)>, String> {
        let data = std::fs::read(path).unwrap();
        let r = locate_boringssl(&data[..])?;
        Ok(r.found.iter().map(|l| (l.point, l.offset)).collect())
    }

    fn strip(path: &Path) -> PathBuf {
        let out = path.with_extension("stripped");
        let st = std::process::Command::new("strip")
            .args(["-s", "-o"])
            .arg(&out)
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success());
        out
    }

    /// The ssl_lib.cc stand-in built by `cc` with `flags` into `dir`.
    fn build(dir: &Path, cc: &str, flags: &[&str]) -> PathBuf {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/elf");
        let name = std::iter::once(cc)
            .chain(flags.iter().copied())
            .collect::<Vec<_>>()
            .join("_")
            .replace(['=', '-'], "");
        let out = dir.join(name);
        let run = std::process::Command::new(cc)
            .args(flags)
            .args(["-fPIE", "-pie", "-Wall", "-Werror", "-o"])
            .arg(&out)
            .arg(src.join("boringssl_sslib_like.c"))
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        out
    }

    /// Bounds from `.eh_frame` (gcc, clang) and from the code (clang + lld
    /// without unwind tables: int3 padding, no FDE), stripped: exactly the
    /// symbols' offsets.
    #[test]
    fn stand_in_builds_match_their_symbols() {
        let dir = tempfile::tempdir().unwrap();
        let no_fde = ["-fno-asynchronous-unwind-tables", "-fno-unwind-tables"];
        let variants: Vec<(&str, Vec<&str>)> = vec![
            ("cc", vec!["-O2"]),
            ("cc", vec!["-Os"]),
            ("clang", vec!["-O2"]),
            ("clang", [&["-O2", "-fuse-ld=lld"][..], &no_fde].concat()),
            (
                "clang",
                [&["-O2", "-fuse-ld=lld", "-ffunction-sections"][..], &no_fde].concat(),
            ),
        ];
        for (cc, flags) in &variants {
            let u = build(dir.path(), cc, flags);
            let want = truth(&u, false, Some("ssl_st_destroy"));
            let s = strip(&u);
            assert_eq!(located(&s), Ok(want.clone()), "{cc} {flags:?}");
            assert_eq!(located(&u), Ok(want), "{cc} {flags:?} with symbols");
        }
    }

    /// Doubt gives no answer: a second function raising SSL_write's errors,
    /// or SSL_write raising one more; the file is still said to carry
    /// BoringSSL (not "no BoringSSL"), so the agent reports it.
    #[test]
    fn decoys_and_near_misses_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (extra, why) in [
            ("-DDECOY", "SSL_write: 2 functions fit"),
            ("-DNEAR_MISS", "SSL_write: no function fits"),
        ] {
            for lld in [false, true] {
                let mut flags = vec!["-O2", extra];
                if lld {
                    flags.extend(["-fuse-ld=lld", "-fno-asynchronous-unwind-tables"]);
                }
                let s = strip(&build(dir.path(), "clang", &flags));
                let e = located(&s).unwrap_err();
                assert!(e.starts_with(why), "{flags:?}: {e}");
            }
        }
    }

    /// Android's libssl.so.0 (android-libboringssl, BoringSSL of 2022: no
    /// BAD_LENGTH yet; calls through its own PLT) and its `strip -s` copy:
    /// exactly its exported symbols. (scripts/install-deps.sh installs it
    /// for the build; the agent never runs the locator on it, as its
    /// symbols classify it.)
    #[test]
    fn android_libssl_matches_its_symbols() {
        let lib = Path::new("/usr/lib/x86_64-linux-gnu/android/libssl.so.0");
        assert!(
            lib.exists(),
            "android-libboringssl is not installed (make deps)"
        );
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("libssl.so");
        std::fs::copy(lib, &copy).unwrap();
        let want = truth(lib, true, None);
        assert_eq!(located(&strip(&copy)), Ok(want.clone()));
        assert_eq!(located(lib), Ok(want));
    }

    /// Files without BoringSSL are said to be so, cheaply.
    #[test]
    fn other_files_carry_no_boringssl() {
        let e = located(Path::new("/bin/sh")).unwrap_err();
        assert!(e.starts_with("no BoringSSL"), "{e}");
        assert!(locate_boringssl(&b"hello"[..]).is_err());
    }

    #[test]
    fn reason_sets() {
        assert!(fits(&[111, 215, 226], &[111, 215, 226], &[66]));
        assert!(fits(&[66, 111, 215, 226], &[111, 215, 226], &[66]));
        assert!(!fits(&[111, 215], &[111, 215, 226], &[66]));
        assert!(!fits(&[65, 111, 215, 226], &[111, 215, 226], &[66]));
    }
}

#[cfg(test)]
mod timing {
    /// `PLAINSIGHT_INSPECT=path`: the whole inspection's time and bytes
    /// read (a tool, like `PLAINSIGHT_LOCATE`).
    #[test]
    fn inspect_files_from_env() {
        let Ok(list) = std::env::var("PLAINSIGHT_INSPECT") else {
            return;
        };
        for p in list.split(':') {
            for _ in 0..2 {
                let t = std::time::Instant::now();
                let img = super::super::elf::open_image(std::path::Path::new(p), 1 << 30).unwrap();
                let n = img.len();
                let _ = object::ReadRef::read_bytes_at(&img, 0, n as u64);
                eprintln!("{p}: read whole in {:?}", t.elapsed());
                let t = std::time::Instant::now();
                let r = super::locate_boringssl(&img);
                eprintln!("{:?}", r.as_ref().map(|r| &r.omitted));
                eprintln!("{p}: locate {:?}", t.elapsed());
            }
            {
                use super::super::*;
                let path = std::path::Path::new(p);
                let img = elf::open_image(path, 1 << 30).unwrap();
                let t = std::time::Instant::now();
                let syms = symbols(&img, path, true).unwrap();
                let mut insp = classify(&syms);
                eprintln!("symbols {:?} {} MB", t.elapsed(), img.bytes_read() >> 20);
                locate_stripped(&img, &mut insp);
                eprintln!("located {:?} {} MB", t.elapsed(), img.bytes_read() >> 20);
                place_targets(&img, &syms, &mut insp.targets);
                eprintln!("placed {:?} {} MB", t.elapsed(), img.bytes_read() >> 20);
            }
            let cpu = || {
                // SAFETY: getrusage fills the struct it is given.
                let mut u: libc::rusage = unsafe { std::mem::zeroed() };
                unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
                let us = |t: libc::timeval| t.tv_sec * 1_000_000 + t.tv_usec;
                us(u.ru_utime) + us(u.ru_stime)
            };
            // PLAINSIGHT_COLD: each run with an empty page cache.
            let cold = std::env::var_os("PLAINSIGHT_COLD").is_some();
            for _ in 0..3 {
                if cold {
                    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
                }
                let t = std::time::Instant::now();
                let c = cpu();
                let img = super::super::elf::open_image(std::path::Path::new(p), 1 << 30).unwrap();
                let r = super::super::inspect_bytes(&img, std::path::Path::new(p), true);
                eprintln!(
                    "{p}: {:?} in {:?} ({} us of CPU), {} MB read",
                    r.map(|i| i.targets.len()),
                    t.elapsed(),
                    cpu() - c,
                    img.bytes_read() >> 20
                );
            }
        }
    }
}
