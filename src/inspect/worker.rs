//! The inspection workers: threads that read the file of each job (through
//! the process that mapped it) and report what it carries.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::{inspect_file, Inspection};
use crate::config::InspectSettings;
use crate::discover;
use crate::pause::Job;

/// Inspection threads: the pause path's latency, within the machine's
/// cores.
pub const WORKERS: usize = 2;

/// What inspecting one job found.
pub enum Outcome {
    /// TLS code to instrument.
    Tls {
        /// `/proc/PID/map_files/...`: the file as the process mapped it.
        path: PathBuf,
        /// The path to show (as the process saw it).
        shown: String,
        insp: Inspection,
    },
    NotTls,
    /// The mapping is gone (the process exited): another process mapping
    /// it may take over.
    Gone,
    Failed(String),
}

/// A job and what its inspection found.
pub struct Inspected {
    pub job: Job,
    pub outcome: Outcome,
}

fn inspect_job(job: &Job, s: &InspectSettings) -> Outcome {
    let Some(m) = discover::find_mapping(job.pid, job.file) else {
        return Outcome::Gone;
    };
    let path = m.map_files_path(job.pid);
    match inspect_file(&path, s.max_elf_size, s.inner) {
        Ok(insp) if insp.is_tls() => Outcome::Tls {
            path,
            shown: m.path,
            insp,
        },
        Ok(Inspection {
            unsupported: Some(why),
            ..
        }) => Outcome::Failed(format!(
            "{} (pid {}) cannot be instrumented: {why}",
            m.path, job.pid
        )),
        Ok(_) => Outcome::NotTls,
        Err(e) => Outcome::Failed(format!("{} (mapped by pid {}): {e}", m.path, job.pid)),
    }
}

/// Starts the workers; they stop when `jobs` is closed or `results` is.
pub fn start(jobs: Receiver<Job>, results: Sender<Inspected>, s: &InspectSettings) {
    for i in 0..WORKERS {
        let (jobs, results, s) = (jobs.clone(), results.clone(), s.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("inspect-{i}"))
            .spawn(move || {
                for job in jobs {
                    if !s.delay.is_zero() {
                        std::thread::sleep(s.delay);
                    }
                    let t0 = Instant::now();
                    let outcome = inspect_job(&job, &s);
                    let took = t0.elapsed();
                    if took > Duration::from_millis(20) {
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
}
