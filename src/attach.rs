//! Attach: put an inspection's uprobes into the kernel (uprobe_multi links,
//! or one perf-event uprobe per offset on kernels without them), and take
//! them out again in the background.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use crossbeam_channel::Sender;
use libbpf_rs::{Link, ProgramMut};

use crate::inspect::{Inspection, Target};
use crate::kernel::Kernel;

/// Whether this kernel has uprobe_multi links (6.6 and later): decided
/// once from the kernel's release, not from a failed attach, which a
/// crafted file could cause and which would then switch every later attach
/// to the slower per-offset uprobes.
fn uprobe_multi() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        let release = kernel_release();
        let has = kernel_at_least(&release, (6, 6));
        if !has {
            log::info!(
                "kernel {release} has no uprobe_multi links: one perf-event uprobe per offset"
            );
        }
        has
    })
}

/// The running kernel's release (`uname -r`).
fn kernel_release() -> String {
    // SAFETY: uname fills the zeroed struct it is given.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    // SAFETY: uname NUL-terminates its fields.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// "6.18.44-fc" >= (6, 6)
fn kernel_at_least(release: &str, want: (u32, u32)) -> bool {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next().and_then(|v| v.parse::<u32>().ok());
    let minor = it.next().and_then(|v| v.parse::<u32>().ok());
    match (major, minor) {
        (Some(a), Some(b)) => (a, b) >= want,
        _ => true,
    }
}

/// Which of an inspection's probes one attach puts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every probe, in every process.
    All,
    /// Every probe in every process, but the return programs that may go
    /// per process ([`crate::probes::Probe::per_process_return`]).
    EntriesOnly,
    /// Only those return programs, in process `pid`.
    Returns(u32),
}

impl Scope {
    fn takes(self, per_process_return: bool) -> bool {
        match self {
            Scope::All => true,
            Scope::EntriesOnly => !per_process_return,
            Scope::Returns(_) => per_process_return,
        }
    }

    /// The pid a link is for (-1: every process); a pid the kernel cannot
    /// have is an error, never every process.
    fn pid(self) -> Result<i32> {
        match self {
            Scope::Returns(pid) => i32::try_from(pid)
                .ok()
                .filter(|&p| p > 0)
                .with_context(|| format!("pid {pid} out of range")),
            _ => Ok(-1),
        }
    }
}

/// One program at a set of offsets: one link.
struct Group<'a> {
    prog: ProgramMut<'a>,
    name: &'static str,
    retprobe: bool,
    offsets: Vec<usize>,
    /// One per offset: the file's inode, or the target's own cookie.
    cookies: Vec<u64>,
    symbol: String,
}

/// One place a program goes.
struct Point {
    prog: &'static str,
    /// A uretprobe (at the function's entry) rather than a uprobe.
    retprobe: bool,
    offset: usize,
    /// A return program that may be attached per process.
    per_process: bool,
    /// Its cookie, if not the file's inode ([`Target::cookie`]).
    cookie: Option<u64>,
}

/// Where a target's programs go. The entry program where placement put
/// it; the return program at the inner return points when proven, else as
/// a uretprobe at the entry.
fn points(t: &Target, scope: Scope) -> Vec<Point> {
    let probe = t.point.probe();
    // Return probes per process: most processes have none on this function.
    let entry = match scope {
        Scope::EntriesOnly if probe.per_process_return => t.entry_offset_without_uretprobe(),
        _ => t.entry_offset(),
    };
    let mut v = vec![Point {
        prog: probe.entry,
        retprobe: false,
        offset: entry as usize,
        per_process: false,
        cookie: t.cookie,
    }];
    if let Some(r) = probe.ret {
        let per_process = probe.per_process_return;
        match t.return_points() {
            Some(rets) => v.extend(rets.iter().map(|&o| Point {
                prog: r,
                retprobe: false,
                offset: o as usize,
                per_process,
                cookie: None,
            })),
            None => v.push(Point {
                prog: r,
                retprobe: true,
                offset: t.offset as usize,
                per_process,
                cookie: None,
            }),
        }
    }
    v
}

/// Whether an inspection has return programs that may go per process.
pub fn has_per_process_returns(insp: &Inspection) -> bool {
    insp.targets
        .iter()
        .any(|t| points(t, Scope::All).iter().any(|p| p.per_process))
}

/// Groups the targets' points in `scope` by program: every RET of a Go
/// function, or every ring function of a kind, in one link.
fn groups<'k>(k: &'k Kernel, insp: &Inspection, scope: Scope, ino: u64) -> Result<Vec<Group<'k>>> {
    let mut groups: Vec<Group<'k>> = Vec::new();
    for t in &insp.targets {
        let object = t.point.probe().object;
        for p in points(t, scope)
            .into_iter()
            .filter(|p| scope.takes(p.per_process))
        {
            if let Some(g) = groups
                .iter_mut()
                .find(|g| g.name == p.prog && g.retprobe == p.retprobe)
            {
                g.offsets.push(p.offset);
                g.cookies.push(p.cookie.unwrap_or(ino));
                continue;
            }
            let prog = k
                .program(object, p.prog)
                .with_context(|| format!("no BPF program {} in {object:?}", p.prog))?;
            groups.push(Group {
                prog,
                name: p.prog,
                retprobe: p.retprobe,
                offsets: vec![p.offset],
                cookies: vec![p.cookie.unwrap_or(ino)],
                symbol: t.symbol.clone(),
            });
        }
    }
    Ok(groups)
}

/// Attaches the uprobes of an inspection that `scope` takes, in the open
/// file `file` (through `/proc/self/fd/N`: the inode that was inspected,
/// whatever its path names now); all or nothing (links attached before a
/// failure are dropped, detaching them). Every probe carries the file's
/// inode as its cookie (an entry program names its library with it when
/// it asks for return probes), unless its target sets one of its own.
pub fn attach_file(
    k: &Kernel,
    file: &File,
    ino: u64,
    insp: &Inspection,
    scope: Scope,
) -> Result<Vec<Link>> {
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let path = fd_path.as_path();
    let pid = scope.pid()?;
    let mut links = Vec::new();
    // One uprobe_multi link per program: multi links are attached and
    // detached without the perf-event path and its global mutex, and their
    // grace periods overlap.
    for g in groups(k, insp, scope, ino)? {
        let what = || {
            format!(
                "{} {} at {:#x?} of {}{}",
                if g.retprobe { "uretprobe" } else { "uprobe" },
                g.symbol,
                g.offsets,
                path.display(),
                if pid > 0 {
                    format!(" for pid {pid}")
                } else {
                    String::new()
                }
            )
        };
        if uprobe_multi() {
            links.push(attach_multi(&g, path, pid).with_context(what)?);
            continue;
        }
        for (&off, &cookie) in g.offsets.iter().zip(&g.cookies) {
            let opts = libbpf_rs::UprobeOpts {
                retprobe: g.retprobe,
                cookie,
                ..Default::default()
            };
            links.push(
                g.prog
                    .attach_uprobe_with_opts(pid, path, off, opts)
                    .with_context(what)?,
            );
        }
    }
    Ok(links)
}

fn attach_multi(g: &Group<'_>, path: &Path, pid: i32) -> libbpf_rs::Result<Link> {
    let opts = libbpf_rs::UprobeMultiOpts {
        syms: Vec::new(),
        offsets: g.offsets.clone(),
        ref_ctr_offsets: Vec::new(),
        cookies: g.cookies.clone(),
        retprobe: g.retprobe,
        session: false,
        _non_exhaustive: (),
    };
    g.prog.attach_uprobe_multi_with_opts(pid, path, "", opts)
}

/// Detaching one uprobe waits for an RCU tasks-trace grace period under the
/// kernel's global trace-event mutex (~0.1 s here): links are dropped on
/// their own thread, so that attaching (on the pause path) never waits
/// behind them. Links that queue up meanwhile (processes with return probes
/// of their own exiting together) are dropped side by side, a few threads
/// at once, so that their grace periods overlap.
pub fn start_reaper() -> Sender<Vec<Link>> {
    let (tx, rx) = crossbeam_channel::unbounded::<Vec<Link>>();
    let spawned = std::thread::Builder::new()
        .name("detach".into())
        .spawn(move || {
            while let Ok(mut all) = rx.recv() {
                for more in rx.try_iter() {
                    all.extend(more);
                }
                detach_parallel(all, REAPER_THREADS);
            }
        });
    if let Err(e) = spawned {
        // The links are then dropped where they are sent from.
        log::warn!("cannot start the detach thread: {e}");
    }
    tx
}

/// Threads the reaper drops a backlog with at most.
const REAPER_THREADS: usize = 8;

/// Detaches many links at exit: uprobe_multi links' detach waits overlap
/// when done side by side.
pub fn detach_all(all: Vec<Link>) {
    detach_parallel(all, 64);
}

/// Drops `all` on at most `threads` threads.
fn detach_parallel(mut all: Vec<Link>, threads: usize) {
    if all.len() <= 1 {
        return;
    }
    let per = all.len().div_ceil(threads).max(1);
    let mut handles = Vec::new();
    while !all.is_empty() {
        let chunk: Vec<Link> = all.drain(..per.min(all.len())).collect();
        handles.push(std::thread::spawn(move || drop(chunk)));
    }
    for h in handles {
        let _ = h.join();
    }
}

#[cfg(test)]
mod tests {
    use super::{kernel_at_least, points, Scope};
    use crate::probes::ProbePoint;

    /// Debian's mbedTLS opens `mbedtls_ssl_read` with an instruction the
    /// kernel single-steps, and its return keeps a uretprobe: with return
    /// probes host-wide the entry shares the uretprobe's hit there; where
    /// they go per process, every process gets the entry inside instead.
    #[test]
    fn an_entry_shared_with_a_per_process_uretprobe_moves_inside() {
        let lib = std::fs::read_dir("/usr/lib/x86_64-linux-gnu")
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("libmbedtls.so."))
            })
            .expect("libmbedtls (scripts/install-deps.sh)");
        let i = crate::inspect::inspect_file(&lib, 1 << 30, true).unwrap();
        let t = i
            .targets
            .iter()
            .find(|t| t.point == ProbePoint::MbedtlsRead)
            .unwrap();
        let inner = t.entry_offset_without_uretprobe();
        assert!(inner > t.offset && inner < t.offset + 16, "{t:?}");
        assert!(t.return_points().is_none(), "{t:?}");
        let entry = |scope| points(t, scope)[0].offset as u64;
        assert_eq!(entry(Scope::All), t.offset);
        assert_eq!(entry(Scope::EntriesOnly), inner);
        // The uretprobe itself stays at the entry, whichever process has it.
        let ret = points(t, Scope::EntriesOnly);
        assert_eq!((ret[1].retprobe, ret[1].offset as u64), (true, t.offset));
    }

    #[test]
    fn kernel_releases() {
        assert!(kernel_at_least("6.18.44-fc-v669", (6, 6)));
        assert!(kernel_at_least("6.6.0", (6, 6)));
        assert!(!kernel_at_least("6.1.0-56-amd64", (6, 6)));
        assert!(!kernel_at_least("5.15.0", (6, 6)));
        assert!(kernel_at_least("7.0", (6, 6)));
        assert!(kernel_at_least("weird", (6, 6)), "unknown: try multi links");
    }
}
