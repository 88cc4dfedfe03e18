//! Per-file bookkeeping: each executable file (by device and inode) is
//! inspected once, while every process that maps it meanwhile waits; once
//! done, the file keeps its probes until it is gone.

use std::collections::HashMap;

use libbpf_rs::Link;

use crate::discover::FileId;
use crate::pause::Job;

/// The probes of one instrumented file.
pub struct Probes {
    /// Dropping them detaches the probes.
    pub links: Vec<Link>,
    /// The path the file was mapped from (as its process saw it).
    pub path: String,
}

/// Where a file stands.
pub enum FileState {
    /// One job's process is being inspected for it; these jobs wait for the
    /// result (their processes stay held).
    Inspecting { waiting: Vec<Job> },
    /// Inspected: its probes if it carries TLS code that could be
    /// instrumented; `static_tls` if its processes are watched on the
    /// static-TLS path.
    Done {
        probes: Option<Probes>,
        static_tls: bool,
    },
}

/// What to do with a job that just came in.
pub enum Admit {
    /// The file is new: inspect it.
    Inspect(Job),
    /// It is being inspected: the job waits.
    Waiting,
    /// It is done already: release the job now.
    Release(Job),
}

/// Every file the agent knows.
#[derive(Default)]
pub struct Files {
    files: HashMap<FileId, FileState>,
}

impl Files {
    /// Routes a job (one process mapping one file).
    pub fn admit(&mut self, job: Job) -> Admit {
        match self.files.get_mut(&job.file) {
            None => {
                self.files.insert(
                    job.file,
                    FileState::Inspecting {
                        waiting: Vec::new(),
                    },
                );
                Admit::Inspect(job)
            }
            Some(FileState::Inspecting { waiting }) => {
                waiting.push(job);
                Admit::Waiting
            }
            Some(FileState::Done { .. }) => Admit::Release(job),
        }
    }

    /// The inspecting process exited before its mapping could be read: the
    /// next waiting job takes over, if any; else the file is forgotten.
    pub fn gone(&mut self, file: FileId) -> Option<Job> {
        match self.files.get_mut(&file) {
            Some(FileState::Inspecting { waiting }) if !waiting.is_empty() => {
                Some(waiting.remove(0))
            }
            Some(FileState::Inspecting { .. }) => {
                self.files.remove(&file);
                None
            }
            _ => None,
        }
    }

    /// The inspection is over: records the outcome and returns the jobs that
    /// waited for it.
    pub fn finish(&mut self, file: FileId, probes: Option<Probes>, static_tls: bool) -> Vec<Job> {
        let done = FileState::Done { probes, static_tls };
        match self.files.insert(file, done) {
            Some(FileState::Inspecting { waiting }) => waiting,
            _ => Vec::new(),
        }
    }

    /// Whether the file's processes are watched on the static-TLS path.
    pub fn is_static(&self, file: FileId) -> bool {
        matches!(
            self.files.get(&file),
            Some(FileState::Done {
                static_tls: true,
                ..
            })
        )
    }

    /// Instrumented files and the paths they were mapped from.
    pub fn instrumented(&self) -> impl Iterator<Item = (FileId, &str)> {
        self.files.iter().filter_map(|(id, s)| match s {
            FileState::Done {
                probes: Some(p), ..
            } => Some((*id, p.path.as_str())),
            _ => None,
        })
    }

    /// Forgets a done file; returns its probes.
    pub fn remove(&mut self, file: FileId) -> Option<Probes> {
        match self.files.remove(&file) {
            Some(FileState::Done { probes, .. }) => probes,
            Some(other) => {
                // Still being inspected: keep it.
                self.files.insert(file, other);
                None
            }
            None => None,
        }
    }

    /// Every probe link, for the orderly stop.
    pub fn into_links(self) -> Vec<Link> {
        self.files
            .into_values()
            .filter_map(|s| match s {
                FileState::Done { probes, .. } => probes,
                FileState::Inspecting { .. } => None,
            })
            .flat_map(|p| p.links)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(pid: u32, ino: u64) -> Job {
        Job {
            pid,
            file: FileId { dev: 1, ino },
            source: 2,
            comm: "t".into(),
            paused: true,
            startup: false,
        }
    }

    #[test]
    fn one_inspection_per_file_others_wait() {
        let mut f = Files::default();
        assert!(matches!(f.admit(job(1, 5)), Admit::Inspect(j) if j.pid == 1));
        assert!(matches!(f.admit(job(2, 5)), Admit::Waiting));
        assert!(matches!(f.admit(job(3, 6)), Admit::Inspect(j) if j.pid == 3));
        let released = f.finish(FileId { dev: 1, ino: 5 }, None, true);
        assert_eq!(released.iter().map(|j| j.pid).collect::<Vec<_>>(), [2]);
        assert!(f.is_static(FileId { dev: 1, ino: 5 }));
        assert!(matches!(f.admit(job(4, 5)), Admit::Release(j) if j.pid == 4));
        assert_eq!(f.instrumented().count(), 0);
    }

    #[test]
    fn a_gone_process_hands_over_to_the_next() {
        let mut f = Files::default();
        let file = FileId { dev: 1, ino: 5 };
        let _ = f.admit(job(1, 5));
        let _ = f.admit(job(2, 5));
        assert_eq!(f.gone(file).map(|j| j.pid), Some(2));
        assert!(f.gone(file).is_none());
        // Forgotten: the next mapping inspects it again.
        assert!(matches!(f.admit(job(3, 5)), Admit::Inspect(_)));
        assert!(f.remove(file).is_none(), "still inspecting: kept");
        assert!(matches!(f.admit(job(4, 5)), Admit::Waiting));
    }
}
