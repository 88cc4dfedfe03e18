//! `plainsight --inventory`: the map of what stays dark, once, for the
//! processes running now. Every executable file each process maps is
//! classified by its content (the inspection the agent runs, without
//! placing probes), each distinct file once (by content key where it has
//! one, else by device and inode); a row per process and TLS-carrying
//! file says its stack and whether the agent captures it, or why not. No
//! process is paused, no BPF is loaded, no probe attached.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use crate::discover::{self, FileId};
use crate::inspect::{cache, elf, inspect_bytes, worker};
use crate::output::Format;

/// Processes looked at, at most.
const MAX_PROCESSES: usize = 1 << 16;
/// Time for one file's inspection (as the agent's default).
const BUDGET: Duration = Duration::from_secs(3);

/// One process and one file carrying TLS code.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Row {
    pub pid: u32,
    pub comm: String,
    pub file: String,
    pub stack: &'static str,
    pub captured: bool,
    pub reason: String,
}

/// What a file was found to carry (None: no TLS code).
type Verdict = Option<(&'static str, bool, String)>;

/// What the scan saw, besides the rows.
#[derive(Debug, Default)]
pub struct Scanned {
    pub rows: Vec<Row>,
    pub processes: usize,
    pub files_read: usize,
    pub not_elf: usize,
    pub unreadable: usize,
}

/// Scans every process once. `java`: whether JVMs get the Java agent.
pub fn scan(max_elf_size: u64, java: bool) -> Scanned {
    let mut out = Scanned::default();
    let mut by_file: HashMap<FileId, Verdict> = HashMap::new();
    let mut by_content: HashMap<cache::ContentKey, Verdict> = HashMap::new();
    let me = std::process::id();
    for pid in pids().into_iter().filter(|&p| p != me) {
        out.processes += 1;
        let comm = discover::comm(pid).unwrap_or_default();
        for m in discover::exec_mappings(pid) {
            let verdict = match by_file.get(&m.file) {
                Some(v) => v.clone(),
                None => {
                    let v = classify(pid, &m, max_elf_size, &mut by_content, &mut out);
                    by_file.insert(m.file, v.clone());
                    v
                }
            };
            let Some((stack, captured, reason)) = verdict else {
                continue;
            };
            let (captured, reason) = match stack {
                "jsse" => jvm_state(pid, java),
                _ => (captured, reason),
            };
            out.rows.push(Row {
                pid,
                comm: comm.clone(),
                file: m.path.clone(),
                stack,
                captured,
                reason,
            });
        }
    }
    out
}

/// The processes now, by pid (as `discover::all_pids`, bounded while
/// /proc is read).
fn pids() -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .take(MAX_PROCESSES)
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// Reads and classifies the file of mapping `m` of `pid`.
fn classify(
    pid: u32,
    m: &discover::ExecMapping,
    max_elf_size: u64,
    by_content: &mut HashMap<cache::ContentKey, Verdict>,
    out: &mut Scanned,
) -> Verdict {
    if discover::fs_type(pid, m.file).is_some_and(|t| discover::may_stall(&t)) {
        return None;
    }
    let Ok((file, md)) = worker::open_checked(pid, m, m.file) else {
        out.unreadable += 1;
        return None;
    };
    let key = cache::key(&file, &md);
    if let Some(v) = key.as_ref().and_then(|k| by_content.get(k)) {
        return v.clone();
    }
    out.files_read += 1;
    crate::inspect::budget::start(Some(BUDGET));
    let shown = std::path::Path::new(&m.path);
    let inspected = elf::image_of(file, md.len(), &m.path, max_elf_size)
        .and_then(|img| inspect_bytes(&img, shown, false));
    let v = match inspected {
        Ok(i) if i.is_jvm() => Some(("jsse", true, String::new())),
        Ok(i) if i.is_tls() => {
            let stack = i.library.map_or("unknown", |l| l.stack());
            Some((stack, true, crate::agent::entry_points(&i)))
        }
        Ok(i) => i.unsupported.map(|d| (d.stack, false, d.why)),
        Err(elf::ElfError::NotElf { .. }) => {
            out.not_elf += 1;
            None
        }
        Err(e) => {
            log::debug!("{e}");
            out.unreadable += 1;
            None
        }
    };
    if let Some(k) = key {
        by_content.insert(k, v.clone());
    }
    v
}

/// Whether the agent would load its Java agent into JVM `pid`.
fn jvm_state(pid: u32, java: bool) -> (bool, String) {
    if !java {
        return (false, "--no-java".into());
    }
    match crate::jvm::attach::inspect(pid) {
        Ok(j) if j.attach_disabled => (false, "attach refused: -XX:+DisableAttachMechanism".into()),
        Ok(j) if j.openj9 => (false, "attach refused: an OpenJ9 JVM".into()),
        Ok(_) => (true, "plainsight's Java agent, loaded into the JVM".into()),
        Err(e) => (false, format!("attach not possible: {e:#}")),
    }
}

/// Prints the rows: a table, or one JSON object a row.
pub fn print(out: &mut dyn Write, s: &Scanned, format: Format) -> std::io::Result<()> {
    match format {
        Format::Json => {
            for r in &s.rows {
                serde_json::to_writer(&mut *out, r)?;
                out.write_all(b"\n")?;
            }
        }
        Format::Text => {
            let t = crate::escape::terminal;
            writeln!(
                out,
                "{:<16} {:>7}  {:<10} {:<8} {:<60} REASON",
                "PROCESS", "PID", "STACK", "CAPTURED", "FILE"
            )?;
            for r in &s.rows {
                writeln!(
                    out,
                    "{:<16} {:>7}  {:<10} {:<8} {:<60} {}",
                    t(&r.comm),
                    r.pid,
                    r.stack,
                    if r.captured { "yes" } else { "no" },
                    t(&r.file),
                    t(&r.reason)
                )?;
            }
        }
    }
    Ok(())
}

/// `--inventory`: scans, prints to stdout, and says on stderr what it
/// read and how long it took.
pub fn run(format: Format, max_elf_size: u64, java: bool) -> Result<()> {
    let t0 = Instant::now();
    let s = scan(max_elf_size, java);
    print(&mut std::io::stdout().lock(), &s, format)?;
    eprintln!(
        "plainsight: inventory of {} processes: {} rows, {} files read, {} mappings no ELF file \
         (JIT code), {} files unreadable, in {} ms",
        s.processes,
        s.rows.len(),
        s.files_read,
        s.not_elf,
        s.unreadable,
        t0.elapsed().as_millis()
    );
    Ok(())
}
