//! Where to put a function's uprobes so that the kernel does not have to
//! single-step.
//!
//! On x86-64 the kernel emulates a few instructions when a uprobe hits them
//! (near `jmp`/`jcc`/`call` with a relative target, `push reg`) and turns a
//! 5-byte `nop` into a trampoline call; any other instruction is copied and
//! single-stepped out of line, ~10x dearer (measured: ~9.5 us against
//! ~0.7 us per hit). Function entries usually start with `sub rsp` or an
//! `endbr64`, so probing the entry is the expensive choice.
//!
//! Entry: the first emulated instruction of the straight-line code at the
//! start of the function, if no register the BPF program reads was written
//! before it (nor the stack pointer, for programs that read stack
//! arguments), and no branch lands between the entry and it. The program
//! then reads the arguments where they were at entry.
//!
//! Return: instead of a uretprobe (which also needs a hit at the entry),
//! one emulated instruction on every return path after which the return
//! register is no longer written: typically the stack-protector check
//! `jne __stack_chk_fail` of the epilogue. Every `ret` must have one; a
//! conditional jump qualifies only if its target calls a function that never
//! returns; no branch may land between it and the `ret`. Anything not proven
//! (indirect jumps, jumps out of the function, a write of the return
//! register, a call) keeps the uretprobe.

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, OpAccess,
    Register,
};

/// What a BPF program reads at the probe point.
#[derive(Debug, Clone, Copy)]
pub struct ArgUse {
    /// Registers (64-bit names).
    pub regs: &'static [Register],
    /// Arguments on the stack (relative to the stack pointer at entry).
    pub stack: bool,
}

/// Where an entry program goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntryChoice {
    /// File offset (the function's own offset when the entry stays).
    pub offset: u64,
    pub why: String,
}

/// Longest straight-line stretch searched for an entry point.
const ENTRY_WINDOW: usize = 32;
/// Instructions walked back from a `ret`.
const RETURN_WINDOW: usize = 24;
/// Longest function decoded.
const MAX_FUNCTION: usize = 64 * 1024;

/// How the kernel treats a probe on `i`, if it does not single-step.
pub fn emulated(i: &Instruction, bytes: &[u8]) -> Option<&'static str> {
    let len = i.len();
    match i.code() {
        Code::Jmp_rel8_64 if len == 2 => Some("jmp"),
        Code::Jmp_rel32_64 if len == 5 => Some("jmp"),
        Code::Call_rel32_64 if len == 5 => Some("call"),
        c if c.is_jcc_short_or_near() && (len == 2 || len == 6) => Some("jcc"),
        Code::Push_r64 if len == 1 || (len == 2 && bytes.first() == Some(&0x41)) => Some("push"),
        Code::Nop_rm32 if bytes.get(..5) == Some(&[0x0f, 0x1f, 0x44, 0x00, 0x00][..]) => {
            Some("nop5")
        }
        _ => None,
    }
}

struct Decoded {
    insns: Vec<Instruction>,
    /// Targets of direct branches inside the function.
    targets: Vec<u64>,
    /// An indirect jump (jump table, tail call through a pointer).
    indirect: bool,
    /// A jmp/jcc leaving the function, other than to a no-return function.
    jumps_out: bool,
}

fn decode(code: &[u8], start: u64, noreturn: &dyn Fn(u64) -> bool) -> Result<Decoded, String> {
    let code = &code[..code.len().min(MAX_FUNCTION)];
    let end = start + code.len() as u64;
    let mut dec = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
    let mut d = Decoded {
        insns: Vec::new(),
        targets: Vec::new(),
        indirect: false,
        jumps_out: false,
    };
    let mut ins = Instruction::default();
    while dec.can_decode() {
        dec.decode_out(&mut ins);
        if ins.is_invalid() {
            return Err(format!("undecodable instruction at {:#x}", ins.ip()));
        }
        match ins.flow_control() {
            FlowControl::UnconditionalBranch
            | FlowControl::ConditionalBranch
            | FlowControl::Call => {
                let t = ins.near_branch_target();
                if (start..end).contains(&t) {
                    d.targets.push(t);
                } else if ins.flow_control() != FlowControl::Call && !noreturn(t) {
                    d.jumps_out = true;
                }
            }
            FlowControl::IndirectBranch => d.indirect = true,
            _ => {}
        }
        d.insns.push(ins);
    }
    d.targets.sort_unstable();
    d.targets.dedup();
    Ok(d)
}

fn bytes_of<'a>(code: &'a [u8], start: u64, i: &Instruction) -> &'a [u8] {
    let off = (i.ip() - start) as usize;
    code.get(off..off + i.len()).unwrap_or(&[])
}

fn reg_name(r: Register) -> String {
    format!("{r:?}").to_lowercase()
}

/// The registers `i` writes (full 64-bit names).
fn writes(info: &mut InstructionInfoFactory, i: &Instruction) -> Vec<Register> {
    info.info(i)
        .used_registers()
        .iter()
        .filter(|u| {
            matches!(
                u.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            )
        })
        .map(|u| u.register().full_register())
        .collect()
}

/// Both choices for the function at file offset `start` whose bytes are
/// `code` (its symbol size), from one decoding: the entry program's point,
/// and the return points (`returns`: the probe has a return program).
pub fn choose(
    code: &[u8],
    start: u64,
    uses: ArgUse,
    returns: bool,
    noreturn: &dyn Fn(u64) -> bool,
) -> (EntryChoice, Result<Vec<u64>, String>) {
    match decode(code, start, noreturn) {
        Ok(d) => (
            entry_of(&d, code, start, uses),
            match returns {
                true => returns_of(&d, code, start, noreturn),
                false => Err("no return program".into()),
            },
        ),
        Err(e) => (
            EntryChoice {
                offset: start,
                why: format!("entry: {e}"),
            },
            Err(e),
        ),
    }
}

/// Chooses the entry program's attach point of the function at file offset
/// `start` whose bytes are `code` (its symbol size).
pub fn choose_entry(
    code: &[u8],
    start: u64,
    uses: ArgUse,
    noreturn: &dyn Fn(u64) -> bool,
) -> EntryChoice {
    choose(code, start, uses, false, noreturn).0
}

fn entry_of(d: &Decoded, code: &[u8], start: u64, uses: ArgUse) -> EntryChoice {
    let stay = |why: String| EntryChoice { offset: start, why };
    let Some(first) = d.insns.first() else {
        return stay("entry: empty function".into());
    };
    if let Some(kind) = emulated(first, bytes_of(code, start, first)) {
        return stay(format!("entry: the first instruction is emulated ({kind})"));
    }
    let mut info = InstructionInfoFactory::new();
    for (n, i) in d.insns.iter().enumerate().take(ENTRY_WINDOW) {
        if n > 0 && d.targets.binary_search(&i.ip()).is_ok() {
            return stay(format!(
                "entry: a branch lands at +{:#x} before any emulated instruction",
                i.ip() - start
            ));
        }
        if n > 0 {
            if let Some(kind) = emulated(i, bytes_of(code, start, i)) {
                return EntryChoice {
                    offset: i.ip(),
                    why: format!(
                        "+{:#x} ({kind}): first emulated instruction, arguments untouched",
                        i.ip() - start
                    ),
                };
            }
        }
        match i.flow_control() {
            FlowControl::Next => {}
            other => {
                return stay(format!(
                    "entry: control flow ({other:?}) at +{:#x} first",
                    i.ip() - start
                ))
            }
        }
        for r in writes(&mut info, i) {
            if uses.regs.contains(&r) {
                return stay(format!(
                    "entry: {} is written at +{:#x} first",
                    reg_name(r),
                    i.ip() - start
                ));
            }
            if uses.stack && r == Register::RSP {
                return stay(format!(
                    "entry: the stack pointer moves at +{:#x} first",
                    i.ip() - start
                ));
            }
        }
    }
    stay("entry: no emulated instruction near the start".into())
}

/// Chooses where the return program goes instead of a uretprobe: file
/// offsets, one per `ret`, or why not.
pub fn choose_returns(
    code: &[u8],
    start: u64,
    noreturn: &dyn Fn(u64) -> bool,
) -> Result<Vec<u64>, String> {
    returns_of(&decode(code, start, noreturn)?, code, start, noreturn)
}

fn returns_of(
    d: &Decoded,
    code: &[u8],
    start: u64,
    noreturn: &dyn Fn(u64) -> bool,
) -> Result<Vec<u64>, String> {
    if d.indirect {
        return Err("indirect jump in the function".into());
    }
    if d.jumps_out {
        return Err("a jump leaves the function (tail call or split function)".into());
    }
    let is_target = |ip: u64| d.targets.binary_search(&ip).is_ok();
    let mut info = InstructionInfoFactory::new();
    let mut points = Vec::new();
    let rets: Vec<usize> = d
        .insns
        .iter()
        .enumerate()
        .filter(|(_, i)| i.flow_control() == FlowControl::Return)
        .map(|(n, _)| n)
        .collect();
    if rets.is_empty() {
        return Err("no ret instruction".into());
    }
    for &r in &rets {
        let ret_at = d.insns[r].ip() - start;
        let mut found = None;
        let mut k = r;
        for _ in 0..RETURN_WINDOW {
            if is_target(d.insns[k].ip()) {
                return Err(format!(
                    "a branch lands between the ret at +{ret_at:#x} and any emulated instruction"
                ));
            }
            if k == 0 {
                break;
            }
            k -= 1;
            let p = &d.insns[k];
            match p.flow_control() {
                FlowControl::Next => {}
                FlowControl::ConditionalBranch
                    if emulated(p, bytes_of(code, start, p)).is_some() && noreturn(p.near_branch_target()) =>
                {
                    found = Some(p.ip());
                    break;
                }
                other => {
                    return Err(format!(
                        "{other:?} at +{:#x} before the ret at +{ret_at:#x} (not a jump to a no-return call)",
                        p.ip() - start
                    ))
                }
            }
            if emulated(p, bytes_of(code, start, p)) == Some("push") {
                found = Some(p.ip());
                break;
            }
            if writes(&mut info, p).contains(&Register::RAX) {
                return Err(format!(
                    "the return register is written at +{:#x} after the last emulated instruction",
                    p.ip() - start
                ));
            }
        }
        match found {
            Some(ip) => points.push(ip),
            None => {
                return Err(format!(
                    "no emulated instruction shortly before the ret at +{ret_at:#x}"
                ))
            }
        }
    }
    points.sort_unstable();
    points.dedup();
    Ok(points)
}

/// What the entry program of `point` reads (the probe table,
/// `crate::probes`).
pub fn arg_use(point: super::ProbePoint) -> ArgUse {
    let p = point.probe();
    ArgUse {
        regs: p.regs,
        stack: !p.stack.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Register::*;

    const NEVER: &dyn Fn(u64) -> bool = &|_| false;

    /// Debian 12 libssl.so.3's SSL_write (objdump), at 0x35980, with the
    /// stack-protector failure call at +0x7e.
    const SSL_WRITE: &[u8] = &[
        0x48, 0x83, 0xec, 0x18, // sub rsp,0x18
        0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0x00, 0x00, 0x00, // mov rax,fs:0x28
        0x48, 0x89, 0x44, 0x24, 0x08, // mov [rsp+8],rax
        0x31, 0xc0, // xor eax,eax
        0x85, 0xd2, // test edx,edx
        0x78, 0x2f, // js +0x47
        0x48, 0x89, 0xe1, // mov rcx,rsp
        0x48, 0x63, 0xd2, // movsxd rdx,edx
        0xe8, 0xfd, 0xfb, 0xff, 0xff, // call (outside)
        0x85, 0xc0, // test eax,eax
        0x7e, 0x03, // jle +0x2a
        0x8b, 0x04, 0x24, // mov eax,[rsp]
        0x48, 0x8b, 0x54, 0x24, 0x08, // +0x2a: mov rdx,[rsp+8]
        0x64, 0x48, 0x2b, 0x14, 0x25, 0x28, 0x00, 0x00, 0x00, // sub rdx,fs:0x28
        0x75, 0x44, // +0x38: jne +0x7e
        0x48, 0x83, 0xc4, 0x18, // add rsp,0x18
        0x31, 0xd2, 0x31, 0xc9, 0x31, 0xf6, 0x31, 0xff, // xor edx,ecx,esi,edi
        0xc3, // ret
        // +0x47: error path
        0xe8, 0xf4, 0x99, 0xfe, 0xff, // call ERR_new (outside)
        0xb8, 0xff, 0xff, 0xff, 0xff, // mov eax,-1
        0xeb, 0xd7, // jmp +0x2a
        // padding so that +0x7e exists
        0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90,
        0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90,
        0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0xe8, 0x00,
        0x00, 0x00, 0x00, // +0x7e: call __stack_chk_fail (target faked below)
    ];

    fn chk_fail(t: u64) -> bool {
        t == 0x1000 + 0x7e
    }

    #[test]
    fn ssl_write_gets_inner_points() {
        let e = choose_entry(
            SSL_WRITE,
            0x1000,
            ArgUse {
                regs: &[RDI, RSI],
                stack: false,
            },
            &chk_fail,
        );
        assert_eq!(e.offset, 0x1000 + 0x16, "{}", e.why);
        let r = choose_returns(SSL_WRITE, 0x1000, &chk_fail).unwrap();
        assert_eq!(r, [0x1000 + 0x38]);
    }

    #[test]
    fn a_written_argument_register_keeps_the_entry() {
        // The program would read rdx, which movsxd writes... only after js:
        // still fine. But rax is written before js: a Go-style reader of rax
        // keeps the entry.
        let e = choose_entry(
            SSL_WRITE,
            0x1000,
            ArgUse {
                regs: &[RAX],
                stack: false,
            },
            NEVER,
        );
        assert_eq!(e.offset, 0x1000);
        assert!(e.why.contains("rax is written at +0x4"), "{}", e.why);
        let e = choose_entry(
            SSL_WRITE,
            0x1000,
            ArgUse {
                regs: &[RDI],
                stack: true,
            },
            NEVER,
        );
        assert_eq!(e.offset, 0x1000);
        assert!(e.why.contains("stack pointer"), "{}", e.why);
    }

    #[test]
    fn without_a_no_return_target_the_uretprobe_stays() {
        let e = choose_returns(SSL_WRITE, 0x1000, NEVER).unwrap_err();
        assert!(e.contains("not a jump to a no-return call"), "{e}");
    }

    #[test]
    fn return_register_written_after_the_last_emulated_instruction() {
        // SSL_write_ex: sub rsp,8; call; xor edx,edx; test eax,eax;
        // cmovs eax,edx; add rsp,8; ret
        let code = [
            0x48, 0x83, 0xec, 0x08, 0xe8, 0x00, 0x10, 0x00, 0x00, 0x31, 0xd2, 0x85, 0xc0, 0x0f,
            0x48, 0xc2, 0x48, 0x83, 0xc4, 0x08, 0xc3,
        ];
        let e = choose_entry(
            &code,
            0x2000,
            ArgUse {
                regs: &[RDI, RSI, RCX],
                stack: false,
            },
            NEVER,
        );
        assert_eq!(e.offset, 0x2004, "{}", e.why);
        let r = choose_returns(&code, 0x2000, NEVER).unwrap_err();
        assert!(r.contains("return register is written"), "{r}");
    }

    #[test]
    fn branch_targets_and_indirect_jumps_are_refused() {
        // mov rdi,rdi; (target) nop; jz back to the nop; ret
        let code = [0x48, 0x89, 0xff, 0x90, 0x74, 0xfd, 0xc3];
        let e = choose_entry(
            &code,
            0,
            ArgUse {
                regs: &[RSI],
                stack: false,
            },
            NEVER,
        );
        assert_eq!(e.offset, 0);
        assert!(e.why.contains("branch lands"), "{}", e.why);
        // jmp [rax]; ret
        let code = [0x48, 0x83, 0xec, 0x08, 0xff, 0x20, 0xc3];
        assert!(choose_returns(&code, 0, NEVER)
            .unwrap_err()
            .contains("indirect"));
        // an emulated first instruction stays at the entry
        let code = [0x55, 0x48, 0x89, 0xe5, 0xc3];
        let e = choose_entry(
            &code,
            0,
            ArgUse {
                regs: &[RDI],
                stack: false,
            },
            NEVER,
        );
        assert_eq!(e.offset, 0);
        assert!(e.why.contains("push"), "{}", e.why);
    }

    #[test]
    fn garbage_never_panics() {
        for seed in 0..200u32 {
            let code: Vec<u8> = (0..64)
                .map(|i| (seed.wrapping_mul(2654435761).wrapping_add(i * 97) >> 7) as u8)
                .collect();
            let _ = choose_entry(
                &code,
                0x40,
                ArgUse {
                    regs: &[RDI],
                    stack: true,
                },
                NEVER,
            );
            let _ = choose_returns(&code, 0x40, &|t| t % 3 == 0);
        }
    }
}
