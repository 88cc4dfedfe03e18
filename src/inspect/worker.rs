//! The inspection workers: threads that read the file of each job (through
//! the process that mapped it) and report what it carries.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::cache::{self, Known};
use super::{elf, inspect_bytes, Inspection};
use crate::config::InspectSettings;
use crate::discover::{self, ExecMapping, FileId};
use crate::pause::Job;

/// Inspection threads: the pause path's latency, within the machine's
/// cores.
pub const WORKERS: usize = 2;

/// What inspecting one job found.
pub enum Outcome {
    /// TLS code to instrument.
    Tls {
        /// The file, opened once through the process's mapping and checked
        /// to be the one BPF reported: probes are attached through it
        /// (`/proc/self/fd/N`), never through a path looked up again.
        file: File,
        /// The path to show (as the process saw it).
        shown: String,
        insp: Inspection,
        /// Found in the cache by this content identity (not parsed again).
        known: Option<String>,
    },
    NotTls,
    /// TLS code the agent cannot capture (the coverage map's dark files).
    Dark {
        shown: String,
        dark: super::Dark,
    },
    /// Not an ELF file (JIT code in a `memfd:` file, say): counted.
    NotElf,
    /// A JVM's `libjvm.so` (`shown`: its path): its processes get the
    /// Java agent.
    Jvm {
        shown: String,
    },
    /// The mapping is gone (the process exited): another process mapping
    /// it may take over.
    Gone,
    /// Not a result: the inspection goes on, but must read more of the
    /// file from the disk than a process may be held for, so its process
    /// is resumed now (its result follows).
    Resume,
    Failed(String),
}

/// A job and what its inspection found.
pub struct Inspected {
    pub job: Job,
    pub outcome: Outcome,
}

/// overlayfs: the file a process maps is the lower/upper layer's inode
/// (what BPF and /proc/PID/maps report), while opening the mapping gives
/// the overlay's view of it.
const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;

/// Opens the file of a mapping through `/proc/PID/map_files` and checks
/// that it is the file BPF reported: the same (device, inode), or, on
/// overlayfs, a mapping that still shows that identity after the open.
/// Returns it with its metadata.
pub(crate) fn open_checked(
    pid: u32,
    m: &ExecMapping,
    want: FileId,
) -> Result<(File, std::fs::Metadata), String> {
    let path = m.map_files_path(pid);
    let file = File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let md = file
        .metadata()
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    let got = FileId::of(&md);
    if got == want {
        return Ok((file, md));
    }
    if is_overlay(&file) && discover::find_mapping(pid, want).is_some_and(|n| n.start == m.start) {
        return Ok((file, md));
    }
    Err(format!(
        "the mapping at {:#x} of pid {pid} is now file {got}, not {want}: left alone",
        m.start
    ))
}

/// `path` (as process `pid` shows it) if the agent itself reaches file
/// `want` by it: the process shares the agent's mount namespace and the
/// path names that file now. A hint for a warm start, which opens it and
/// checks the content again.
fn own_path(pid: u32, path: &str, want: FileId) -> Option<&str> {
    let ns = |p: &str| std::fs::metadata(p).ok().map(|m| FileId::of(&m));
    let shared =
        ns(&format!("/proc/{pid}/ns/mnt")).is_some_and(|n| Some(n) == ns("/proc/self/ns/mnt"));
    (shared && path.starts_with('/') && ns(path) == Some(want)).then_some(path)
}

fn is_overlay(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a statfs buffer of the right type.
    unsafe {
        libc::fstatfs(file.as_raw_fd(), &mut st) == 0 && st.f_type as i64 == OVERLAYFS_SUPER_MAGIC
    }
}

fn inspect_job(job: &Job, s: &InspectSettings) -> Outcome {
    let Some(m) = discover::find_mapping(job.pid, job.file) else {
        return Outcome::Gone;
    };
    // Checked before the file is opened: an open, a stat or a read there
    // could block this thread for as long as the filesystem's server likes.
    if let Some(t) = discover::fs_type(job.pid, job.file).filter(|t| discover::may_stall(t)) {
        return Outcome::Failed(format!(
            "{} (mapped by pid {}) is on a {t} filesystem: not read or instrumented (the process \
             serving it could stall the agent's reads and probes)",
            m.path, job.pid
        ));
    }
    let (file, md) = match open_checked(job.pid, &m, job.file) {
        Ok(f) => f,
        Err(e) => return Outcome::Failed(format!("{} (mapped by pid {}): {e}", m.path, job.pid)),
    };
    if s.stall_path
        .as_ref()
        .is_some_and(|p| m.path.contains(p.as_str()))
    {
        // A read that does not return: nothing local does that any more
        // (files on filesystems that can stall are not read), so the
        // replacement of stuck workers is shown with this testing aid.
        std::thread::sleep(Duration::from_secs(60));
    }
    let shown = Path::new(&m.path);
    // The same content seen before (another inode: a copy, a container
    // layer): its result, without reading or parsing the file.
    let key = cache::key(&file, &md);
    if let Some((k, hit)) = key
        .as_ref()
        .and_then(|k| Some((k, cache::shared().get(k)?)))
    {
        return match hit {
            Known::Tls(insp) => Outcome::Tls {
                file,
                shown: m.path,
                insp: (*insp).clone(),
                known: Some(k.short()),
            },
            Known::NotTls => Outcome::NotTls,
        };
    }
    super::budget::start(Some(s.budget));
    // Read as parsed, through its own descriptor: the one attached through
    // stays open.
    let inspected = file
        .try_clone()
        .map_err(|source| elf::ElfError::Open {
            path: m.path.clone(),
            source,
        })
        .and_then(|dup| elf::image_of(dup, md.len(), &m.path, s.max_elf_size))
        .and_then(|img| inspect_bytes(&img, shown, s.inner));
    if let (Some(k), Ok(insp), false) = (key, &inspected, super::budget::exhausted()) {
        // Only whole results: not a file refused or cut short by a budget.
        if insp.is_tls() {
            let hint = own_path(job.pid, &m.path, job.file);
            cache::shared().insert(k, Known::Tls(std::sync::Arc::new(insp.clone())), hint);
        } else if insp.unsupported.is_none() && !insp.is_jvm() {
            cache::shared().insert(k, Known::NotTls, None);
        }
    }
    match inspected {
        Ok(insp) if insp.is_tls() => Outcome::Tls {
            file,
            shown: m.path,
            insp,
            known: None,
        },
        Ok(Inspection {
            unsupported: Some(dark),
            ..
        }) => Outcome::Dark {
            shown: m.path,
            dark,
        },
        Ok(insp) if insp.is_jvm() => Outcome::Jvm { shown: m.path },
        Ok(_) => Outcome::NotTls,
        Err(elf::ElfError::NotElf { .. }) => Outcome::NotElf,
        Err(e) => Outcome::Failed(format!("{} (mapped by pid {}): {e}", m.path, job.pid)),
    }
}

/// Workers started, at most, to replace ones stuck past the inspection
/// budget (blocked on a stalled filesystem, or busy on a crafted file).
pub const MAX_REPLACED: usize = 8;

/// Starts the workers; they stop when `jobs` is closed or `results` is.
pub fn start(jobs: &Receiver<Job>, results: &Sender<Inspected>, s: &InspectSettings) {
    for i in 0..WORKERS {
        start_one(i, jobs, results, s);
    }
}

/// Starts one worker.
pub fn start_one(i: usize, jobs: &Receiver<Job>, results: &Sender<Inspected>, s: &InspectSettings) {
    let (jobs, results, s) = (jobs.clone(), results.clone(), s.clone());
    let spawned = std::thread::Builder::new()
        .name(format!("inspect-{i}"))
        .spawn(move || {
            for job in jobs {
                if !s.delay.is_zero() {
                    std::thread::sleep(s.delay);
                }
                let t0 = Instant::now();
                // Sent once, from the thread that waits on the disk.
                let (tx, resume, sent) = (results.clone(), job.clone(), AtomicBool::new(false));
                super::budget::on_disk_wait(Some(Arc::new(move || {
                    if !sent.swap(true, Ordering::Relaxed) {
                        let _ = tx.send(Inspected {
                            job: resume.clone(),
                            outcome: Outcome::Resume,
                        });
                    }
                })));
                let outcome = inspect_job(&job, &s);
                super::budget::on_disk_wait(None);
                let took = t0.elapsed();
                if took > Duration::from_millis(2) {
                    log::debug!(
                        "inspecting file {} (pid {}) took {} ms",
                        job.file,
                        job.pid,
                        took.as_millis()
                    );
                }
                if results.send(Inspected { job, outcome }).is_err() {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start inspection worker {i}: {e}");
    }
}
