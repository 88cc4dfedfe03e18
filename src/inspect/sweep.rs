//! Function bounds without `.eh_frame` (issue #28): Chromium, Bun and Deno
//! have no FDE for their TLS library's functions.
//!
//! clang and LLD align functions to 16 bytes and fill the gaps with
//! `int3`, and x86-64 code from them holds no data. So a linear sweep from
//! a padding point (an aligned address after an `int3` byte) at least
//! [`SWEEP_LEAD`] before a site is in step with the instructions by the
//! time it reaches the site's function (x86 decoding resynchronises within
//! a few instructions even from a wrong start). Functions start after
//! `int3` runs and at the targets of direct calls; a function runs to the
//! next start. Call targets come from one pass over the code ([`rel32_scan`])
//! and count only if the call itself is an instruction of a sweep of its
//! own code: the four bytes after an `e8` inside another instruction name
//! a random address, which would split a function there.
//!
//! Callers then check what the bounds cannot promise: every instruction of
//! the range is reached from its entry (nothing of a neighbour merged in,
//! as happens when a function is only reached through pointers), and the
//! entry is the target of a validated call.

use iced_x86::{Code, Decoder, DecoderOptions, Instruction};

use super::locate::{Image, Sec, WindowFn, MAX_XREFS};

/// How far before a site the sweep starts, so that it is in step with the
/// instructions by the time it reaches the function.
const SWEEP_LEAD: u64 = 4 << 10;
/// How far back a padding point is searched for.
const MAX_BACK: u64 = 64 << 10;
/// The longest region swept around one site.
const MAX_SWEEP: u64 = 256 << 10;
/// Direct-call edges into swept regions kept.
const MAX_EDGES: usize = 1 << 20;
/// Callers of one located function checked by a sweep of their own code.
const MAX_CALLER_CHECKS: usize = 16;

/// A swept region: instruction boundaries from a padding point on.
struct Sweep {
    lo: u64,
    hi: u64,
    /// Sorted instruction starts.
    starts: Vec<u64>,
    /// Addresses right after a run of `int3`.
    after_pad: Vec<u64>,
}

impl Sweep {
    fn boundary(&self, x: u64) -> bool {
        self.starts.binary_search(&x).is_ok()
    }
}

/// The text section holding `x`.
pub(super) fn section_of<'a, 'd>(img: &'a Image<'d>, x: u64) -> Option<&'a Sec<'d>> {
    img.text.iter().find(|s| s.vaddr <= x && x < s.end())
}

/// The latest 16-byte-aligned address at or before `x - SWEEP_LEAD` that
/// follows an `int3` byte (LLD's fill), searched back `MAX_BACK`; else
/// the section's start when it is that near.
fn sync_before(sec: &Sec, x: u64) -> Option<u64> {
    let from = x.saturating_sub(SWEEP_LEAD).max(sec.vaddr) & !15;
    let floor = x.saturating_sub(MAX_BACK).max(sec.vaddr);
    // The bytes before each candidate: [floor - 1, from).
    let lo = floor.saturating_sub(1).max(sec.vaddr);
    let back = sec.at(lo, from.saturating_sub(lo))?;
    let mut a = from;
    while a > floor {
        if a > sec.vaddr && back.get((a - 1 - lo) as usize) == Some(&0xcc) {
            return Some(a);
        }
        a -= 16;
    }
    (floor == sec.vaddr).then_some(sec.vaddr)
}

/// Whether `x` is an instruction of a linear sweep from the padding
/// point before it.
fn is_instruction(img: &Image, x: u64) -> bool {
    let Some(sec) = section_of(img, x) else {
        return false;
    };
    let Some(lo) = sync_before(sec, x) else {
        return false;
    };
    let end = (x + 16).min(sec.end());
    let Some(code) = sec.at(lo, end - lo) else {
        return false;
    };
    let mut dec = Decoder::with_ip(64, code, lo, DecoderOptions::NONE);
    let mut ins = Instruction::default();
    while dec.can_decode() && dec.ip() < x {
        dec.decode_out(&mut ins);
    }
    dec.ip() == x
}

/// Decodes linearly from a padding point before `x` to the end of the
/// first `int3` run after `x`.
fn sweep(img: &Image, x: u64) -> Result<Sweep, String> {
    let sec = section_of(img, x).ok_or_else(|| format!("{x:#x} is in no code section"))?;
    let lo = sync_before(sec, x).ok_or_else(|| format!("no padding before {x:#x}"))?;
    let end = sec.end().min(lo + MAX_SWEEP);
    let code = sec
        .at(lo, end - lo)
        .ok_or_else(|| format!("the code at {lo:#x} cannot be read"))?;
    let mut dec = Decoder::with_ip(64, code, lo, DecoderOptions::NONE);
    let mut sw = Sweep {
        lo,
        hi: end,
        starts: Vec::new(),
        after_pad: vec![lo],
    };
    let mut ins = Instruction::default();
    let mut in_pad = false;
    while dec.can_decode() {
        dec.decode_out(&mut ins);
        if ins.is_invalid() {
            if ins.ip() > x {
                sw.hi = ins.ip();
                break;
            }
            // Out of step: what came before proves nothing.
            sw.starts.clear();
            sw.after_pad.clear();
            in_pad = false;
            continue;
        }
        let int3 = ins.code() == Code::Int3;
        if in_pad && !int3 {
            sw.after_pad.push(ins.ip());
            if ins.ip() > x {
                sw.hi = ins.ip();
                break;
            }
        }
        in_pad = int3;
        sw.starts.push(ins.ip());
    }
    Ok(sw)
}

/// Regions swept around sites, and the calls into them.
pub(super) struct Sweeps {
    sweeps: Vec<Sweep>,
    /// (target, source) of `call rel32` into swept regions, sorted.
    calls: Vec<(u64, u64)>,
    /// Targets whose calls were checked, and the answer.
    checked: std::cell::RefCell<std::collections::HashMap<u64, bool>>,
}

impl Sweeps {
    /// Sweeps around each of `sites`, and drops the sites that are not an
    /// instruction of their sweep (bytes inside another instruction).
    pub(super) fn build(img: &Image, sites: &mut Vec<u64>) -> Result<Sweeps, String> {
        let mut sw = Sweeps {
            sweeps: Vec::new(),
            calls: Vec::new(),
            checked: Default::default(),
        };
        for &x in sites.iter() {
            if sw.sweep_of(x).is_none() {
                sw.sweeps.push(sweep(img, x)?);
            }
        }
        sw.sweeps.sort_by_key(|s| s.lo);
        sites.retain(|&x| sw.sweep_of(x).is_some_and(|s| s.boundary(x)));
        sw.calls = call_edges(img, &sw.sweeps)?;
        Ok(sw)
    }

    /// Whether `t` is the target of a validated call: `t` is an
    /// instruction of its sweep, and one of the first `MAX_CALLER_CHECKS`
    /// calls naming it is an instruction of a sweep of its own code (the
    /// four bytes after an `e8` inside another instruction name a random
    /// address, and one that names an instruction would split a function
    /// there). Checked when asked, once a target.
    fn called(&self, img: &Image, t: u64) -> bool {
        if let Some(&ok) = self.checked.borrow().get(&t) {
            return ok;
        }
        let k = self.calls.partition_point(|c| c.0 < t);
        let ok = self.sweep_of(t).is_some_and(|s| s.boundary(t))
            && self.calls[k..]
                .iter()
                .take_while(|c| c.0 == t)
                .take(MAX_CALLER_CHECKS)
                .any(|&(_, src)| match self.sweep_of(src) {
                    Some(sw) => sw.boundary(src),
                    None => is_instruction(img, src),
                });
        self.checked.borrow_mut().insert(t, ok);
        ok
    }

    fn sweep_of(&self, x: u64) -> Option<&Sweep> {
        self.sweeps.iter().find(|s| s.lo <= x && x < s.hi)
    }

    /// `[start, end)` of the function holding `x` in its sweep: from the
    /// latest function start at or before it to the next one; and whether
    /// the start is a validated call's target.
    pub(super) fn bounds(
        &self,
        img: &Image,
        x: u64,
        max_size: u64,
    ) -> Result<(u64, u64, bool), String> {
        let sw = self
            .sweep_of(x)
            .ok_or_else(|| format!("{x:#x} was not swept"))?;
        let is_start = |t: u64| sw.after_pad.binary_search(&t).is_ok() || self.called(img, t);
        let k = sw.starts.partition_point(|&a| a <= x);
        let start = sw.starts[..k]
            .iter()
            .rev()
            .find(|&&a| is_start(a))
            .copied()
            .ok_or_else(|| format!("no function start before {x:#x}"))?;
        let end = sw.starts[k..]
            .iter()
            .find(|&&a| is_start(a))
            .copied()
            .unwrap_or(sw.hi);
        if end - start > max_size {
            return Err(format!("the function at {start:#x} is too large"));
        }
        Ok((start, end, self.called(img, start)))
    }
}

/// Every `call rel32` (e8) whose target is in a swept region, as sorted
/// (target, source) pairs: one pass over the code.
fn call_edges(img: &Image, sweeps: &[Sweep]) -> Result<Vec<(u64, u64)>, String> {
    let lo = sweeps.first().map_or(0, |s| s.lo);
    let hi = sweeps.iter().map(|s| s.hi).max().unwrap_or(0);
    let mut out = Vec::new();
    for s in &img.text {
        for (p, t) in code_refs(s, Rel32::CALL, (lo, hi), &|_| true)? {
            let k = sweeps.partition_point(|w| w.lo <= t);
            if k > 0 && t < sweeps[k - 1].hi && out.len() <= MAX_EDGES {
                out.push((t, p));
            }
        }
    }
    if out.len() > MAX_EDGES {
        return Err(format!("more than {MAX_EDGES} calls into the swept code"));
    }
    out.sort_unstable();
    Ok(out)
}

/// An instruction of `len` bytes with opcode (or ModRM) `op` at `op_at`
/// and a rel32 at `disp_at`, relative to its end.
#[derive(Clone, Copy)]
pub(super) struct Rel32 {
    pub(super) op_at: u8,
    pub(super) op: u8,
    pub(super) disp_at: usize,
    pub(super) len: usize,
}

impl Rel32 {
    /// `call rel32`.
    const CALL: Rel32 = Rel32 {
        op_at: 0,
        op: 0xe8,
        disp_at: 1,
        len: 5,
    };
    /// `lea rcx, [rip+disp32]` (REX, 8d, ModRM 0d).
    const LEA_RCX: Rel32 = Rel32 {
        op_at: 2,
        op: 0x0d,
        disp_at: 3,
        len: 7,
    };
    /// `lea r64, [rip+disp32]` (REX.W, 8d, ModRM mod=00 r/m=101).
    pub(super) const LEA: Rel32 = Rel32 {
        op_at: 1,
        op: 0x8d,
        disp_at: 3,
        len: 7,
    };
}

/// Positions scanned per block by [`rel32_scan`]: small enough that the
/// displacements reaching a small target range from one block share at
/// most a few high bytes.
const SCAN_BLOCK: usize = 4 << 20;

/// Calls `f(p, target)` for every position `p` of `sec` where an
/// instruction of `len` bytes would have `op` at `op_at` and a rel32 at
/// `disp_at` (relative to its end) naming `target` in `[lo, hi)`. The
/// bytes are not decoded: callers check what they need.
///
/// Code is full of `call` opcodes and `lea` ModRMs, so looking at each is
/// slow; instead each block is searched (AVX2, memchr's packed-pair
/// prefilter) for the opcode together with the displacement's high byte,
/// which only a few values can have for targets in the range.
fn rel32_scan(
    vaddr: u64,
    b: &[u8],
    ins: Rel32,
    (lo, hi): (u64, u64),
    f: &mut dyn FnMut(usize, u64),
) {
    let Rel32 {
        op_at,
        op,
        disp_at,
        len,
    } = ins;
    if hi <= lo || b.len() < len {
        return;
    }
    let last = b.len() - len + 1;
    let mut check = |p: usize| {
        let d = &b[p + disp_at..p + disp_at + 4];
        let rel = i32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        let t = (vaddr + (p + len) as u64).wrapping_add(rel as i64 as u64);
        if b[p + usize::from(op_at)] == op && (lo..hi).contains(&t) {
            f(p, t);
        }
    };
    let mut start = 0;
    while start < last {
        let end = (start + SCAN_BLOCK).min(last);
        let first_end = (vaddr + (start + len) as u64) as i64;
        let last_end = (vaddr + (end - 1 + len) as u64) as i64;
        let rmin = (lo as i64 - last_end).max(i64::from(i32::MIN));
        let rmax = ((hi - 1) as i64 - first_end).min(i64::from(i32::MAX));
        if rmin <= rmax {
            let tops: Vec<u8> = ((rmin >> 24)..=(rmax >> 24)).map(|v| v as u8).collect();
            let hay = &b[start..end + len - 1];
            for &top in &tops {
                match pair_finder(op_at, op, disp_at + 3, top, len) {
                    Some(finder) if hay.len() >= finder.min_haystack_len() && tops.len() <= 4 => {
                        let mut at = 0;
                        while let Some(k) = hay.get(at..).and_then(|h| {
                            (h.len() >= finder.min_haystack_len())
                                .then(|| finder.find_prefilter(h))
                                .flatten()
                        }) {
                            let p = start + at + k;
                            if p < end {
                                check(p);
                            }
                            at += k + 1;
                        }
                        // The tail shorter than the finder's minimum.
                        let tail = hay.len().saturating_sub(finder.min_haystack_len()).max(at);
                        for p in (start + tail..end).filter(|&p| b[p + usize::from(op_at)] == op) {
                            check(p);
                        }
                    }
                    _ => {
                        for i in memchr::memchr_iter(
                            op,
                            &b[start + usize::from(op_at)..end + usize::from(op_at)],
                        ) {
                            check(start + i);
                        }
                        break;
                    }
                }
            }
        }
        start = end;
    }
}

/// Hits kept per section scanned (a crafted file full of matches stops
/// there). More than [`MAX_EDGES`] is an error for calls anyway, and no
/// real file has that many loads of a short string.
const MAX_HITS: usize = MAX_EDGES + 1;

/// [`rel32_scan`]'s hits in `sec` whose instruction bytes `keep` accepts,
/// as (instruction address, target), read window by window
/// ([`Sec::scan`]). More than [`MAX_HITS`], or a window that cannot be
/// read, is an error: a partial list would look complete.
pub(super) fn code_refs(
    sec: &Sec,
    ins: Rel32,
    range: (u64, u64),
    keep: &(dyn Fn(&[u8]) -> bool + Sync),
) -> Result<Vec<(u64, u64)>, String> {
    let len = ins.len;
    let hits = sec.scan(len - 1, &|at, bytes, _, out| {
        let mut full = false;
        rel32_scan(at, bytes, ins, range, &mut |p, t| {
            if !keep(&bytes[p..p + len]) {
                return;
            }
            match out.len() < MAX_HITS {
                true => out.push((at + p as u64, t)),
                false => full = true,
            }
        });
        match full {
            true => Err(format!("more than {MAX_HITS} references in the code")),
            false => Ok(()),
        }
    })?;
    match hits.len() > MAX_HITS {
        true => Err(format!("more than {MAX_HITS} references in the code")),
        false => Ok(hits),
    }
}

/// A packed-pair prefilter for `op` at `op_at` and `top` at `top_at`.
fn pair_finder(
    op_at: u8,
    op: u8,
    top_at: usize,
    top: u8,
    len: usize,
) -> Option<memchr::arch::x86_64::avx2::packedpair::Finder> {
    use memchr::arch::all::packedpair::Pair;
    let mut needle = vec![0u8; len];
    needle[usize::from(op_at)] = op;
    needle[top_at] = top;
    let pair = Pair::with_indices(&needle, op_at, u8::try_from(top_at).ok()?)?;
    memchr::arch::x86_64::avx2::packedpair::Finder::with_pair(&needle, pair)
}

/// `lea rcx, [rip+disp32]` (48 8d 0d) loading one of the strings `paths`:
/// the file is ERR_put_error's fourth argument, loaded straight into its
/// register in every build seen. Returns the instruction addresses, and
/// what `also` collected from the same windows of code (`tail` bytes past
/// each window's positions): a second search that would otherwise read
/// all the code again.
pub(super) fn rcx_xrefs<T: Send>(
    img: &Image,
    paths: &[(u64, u64)],
    tail: usize,
    also: &WindowFn<'_, T>,
) -> Result<(Vec<u64>, Vec<T>), String> {
    enum Hit<T> {
        Ref(u64),
        Also(T),
    }
    let lo = paths.iter().map(|p| p.0).min().unwrap_or(0);
    let hi = paths.iter().map(|p| p.1).max().unwrap_or(0);
    let lea = |b: &[u8]| b[0] & 0xfb == 0x48 && b[1] == 0x8d;
    let len = Rel32::LEA_RCX.len;
    let (mut refs, mut more) = (Vec::new(), Vec::new());
    for s in &img.text {
        let hits = s.scan(tail.max(len - 1), &|at, bytes, n, out| {
            let mut found = 0;
            let own = &bytes[..(n + len - 1).min(bytes.len())];
            rel32_scan(at, own, Rel32::LEA_RCX, (lo, hi), &mut |p, t| {
                if lea(&own[p..p + len]) && paths.iter().any(|&(lo, hi)| (lo..hi).contains(&t)) {
                    found += 1;
                    if found <= MAX_XREFS {
                        out.push(Hit::Ref(at + p as u64));
                    }
                }
            });
            if found > MAX_XREFS {
                return Err("too many references to the path".into());
            }
            let mut extra = Vec::new();
            also(at, bytes, n, &mut extra)?;
            out.extend(extra.into_iter().map(Hit::Also));
            Ok(())
        })?;
        for h in hits {
            match h {
                Hit::Ref(x) => refs.push(x),
                Hit::Also(t) => more.push(t),
            }
        }
        if refs.len() > MAX_XREFS {
            return Err("too many references to the path".into());
        }
    }
    Ok((refs, more))
}

/// Calls `f` at every position of `needle` in `hay`, prefiltered on the
/// needle's bytes `i1` and `i2` (AVX2 packed pair; memmem without AVX2):
/// for code, where memmem's byte-frequency heuristics, made for text,
/// pick bytes that are everywhere.
pub(super) fn for_each_match(hay: &[u8], needle: &[u8], i1: u8, i2: u8, f: &mut dyn FnMut(usize)) {
    use memchr::arch::all::packedpair::Pair;
    use memchr::arch::x86_64::avx2::packedpair::Finder;
    let finder = Pair::with_indices(needle, i1, i2).and_then(|p| Finder::with_pair(needle, p));
    let Some(finder) = finder else {
        memchr::memmem::find_iter(hay, needle).for_each(f);
        return;
    };
    let min = finder.min_haystack_len().max(needle.len());
    let mut at = 0;
    while hay.len() - at >= min {
        match finder.find(&hay[at..], needle) {
            Some(k) => {
                f(at + k);
                at += k + 1;
            }
            None => return,
        }
    }
    // The tail shorter than the finder's minimum.
    memchr::memmem::find_iter(&hay[at..], needle).for_each(|k| f(at + k));
}
