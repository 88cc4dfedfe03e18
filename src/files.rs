//! Per-file bookkeeping: each executable file (by device and inode) is
//! inspected once, while every process that maps it meanwhile waits; once
//! done, the file keeps its probes until it is gone.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::time::{Duration, Instant};

use libbpf_rs::Link;

use crate::discover::FileId;
use crate::inspect::Inspection;
use crate::pause::Job;

/// The probes of one instrumented file.
pub struct Probes {
    /// Dropping them detaches the probes.
    pub links: Vec<Link>,
    /// The path the file was mapped from (as its process saw it).
    pub path: String,
    /// A process that maps it: its root resolves `path`.
    pub mapper: u32,
    /// Its return probes that go per process, if it has some and filters
    /// are given.
    pub returns: Option<PerProcess>,
}

impl Probes {
    /// All its links, the per-process ones too.
    pub fn into_links(self) -> Vec<Link> {
        let mut all = self.links;
        if let Some(r) = self.returns {
            all.extend(r.by_pid.into_values().flat_map(|(_, links)| links));
        }
        all
    }
}

/// What attaching a file's return probes to one more process needs, and
/// the processes that have them.
pub struct PerProcess {
    /// The file as inspected (attach goes through its descriptor).
    pub file: File,
    pub insp: Inspection,
    /// By pid: the process's start time (the kernel's, as BPF reports it)
    /// and its links.
    pub by_pid: HashMap<u32, (u64, Vec<Link>)>,
}

/// Where a file stands.
pub enum FileState {
    /// `job`'s process is being inspected for it (inspection `job.ticket`,
    /// started at `since`); the `waiting` jobs wait for the result (their
    /// processes stay held).
    Inspecting {
        job: Job,
        since: Instant,
        waiting: Vec<Job>,
    },
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
    /// The last inspection ticket handed out.
    tickets: u64,
    /// Files done without probes, oldest first: only the last
    /// `MAX_PLAIN_DONE` are remembered (one forgotten is inspected again if
    /// BPF reports it again), so that a host mapping millions of files does
    /// not grow the agent.
    plain_done: VecDeque<FileId>,
}

/// Files without TLS code remembered at most (as many as BPF's
/// `seen_files`).
pub const MAX_PLAIN_DONE: usize = 65_536;

impl Files {
    /// Starts an inspection of `job`'s file: a new ticket.
    fn start(&mut self, mut job: Job, waiting: Vec<Job>) -> Job {
        self.tickets += 1;
        job.ticket = self.tickets;
        let state = FileState::Inspecting {
            job: job.clone(),
            since: Instant::now(),
            waiting,
        };
        self.files.insert(job.file, state);
        job
    }

    /// Routes a job (one process mapping one file).
    pub fn admit(&mut self, job: Job) -> Admit {
        match self.files.get_mut(&job.file) {
            None => Admit::Inspect(self.start(job, Vec::new())),
            Some(FileState::Inspecting { waiting, .. }) => {
                waiting.push(job);
                Admit::Waiting
            }
            Some(FileState::Done { .. }) => Admit::Release(job),
        }
    }

    /// Whether `job` is the inspection in progress for its file (not one
    /// given up, whose result comes too late).
    pub fn current(&self, job: &Job) -> bool {
        matches!(
            self.files.get(&job.file),
            Some(FileState::Inspecting { job: j, .. }) if j.ticket == job.ticket
        )
    }

    /// `job`'s process, held for the inspection in progress, is to be
    /// resumed before it ends: true the first time (its stored job is no
    /// longer held, so that its release does not resume it twice).
    pub fn resume(&mut self, job: &Job) -> bool {
        match self.files.get_mut(&job.file) {
            Some(FileState::Inspecting { job: j, .. }) if j.ticket == job.ticket && j.paused => {
                j.paused = false;
                true
            }
            _ => false,
        }
    }

    /// Whether the inspection in progress for `job` still holds its process.
    pub fn held(&self, job: &Job) -> bool {
        matches!(
            self.files.get(&job.file),
            Some(FileState::Inspecting { job: j, .. }) if j.ticket == job.ticket && j.paused
        )
    }

    /// The inspecting process exited before its mapping could be read: the
    /// next waiting job takes over (with a new ticket), if any; else the
    /// file is forgotten.
    pub fn gone(&mut self, file: FileId) -> Option<Job> {
        match self.files.remove(&file) {
            Some(FileState::Inspecting { mut waiting, .. }) if !waiting.is_empty() => {
                let next = waiting.remove(0);
                Some(self.start(next, waiting))
            }
            Some(FileState::Inspecting { .. }) | None => None,
            Some(done) => {
                self.files.insert(file, done);
                None
            }
        }
    }

    /// The inspection is over: records the outcome and returns the jobs that
    /// waited for it.
    pub fn finish(&mut self, file: FileId, probes: Option<Probes>, static_tls: bool) -> Vec<Job> {
        if probes.is_none() {
            self.remember_plain(file);
        }
        let done = FileState::Done { probes, static_tls };
        match self.files.insert(file, done) {
            Some(FileState::Inspecting { waiting, .. }) => waiting,
            _ => Vec::new(),
        }
    }

    /// Inspections running for longer than `budget`: given up (the file is
    /// done, uninstrumented). Returns each file with every job to release
    /// (the inspecting one first).
    pub fn overdue(&mut self, budget: Duration) -> Vec<(FileId, Vec<Job>)> {
        let late: Vec<FileId> = self
            .files
            .iter()
            .filter(|(_, s)| matches!(s, FileState::Inspecting { since, .. } if since.elapsed() > budget))
            .map(|(f, _)| *f)
            .collect();
        late.into_iter()
            .map(|f| {
                let mut jobs = Vec::new();
                if let Some(FileState::Inspecting { job, waiting, .. }) = self.files.remove(&f) {
                    jobs.push(job);
                    jobs.extend(waiting);
                }
                self.files.insert(
                    f,
                    FileState::Done {
                        probes: None,
                        static_tls: false,
                    },
                );
                self.remember_plain(f);
                (f, jobs)
            })
            .collect()
    }

    fn remember_plain(&mut self, file: FileId) {
        self.plain_done.push_back(file);
        while self.plain_done.len() > MAX_PLAIN_DONE {
            let Some(old) = self.plain_done.pop_front() else {
                break;
            };
            if matches!(
                self.files.get(&old),
                Some(FileState::Done { probes: None, .. })
            ) {
                self.files.remove(&old);
            }
        }
    }

    /// Files the agent keeps state for.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether the agent keeps state for no file.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
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
    pub fn instrumented(&self) -> impl Iterator<Item = (FileId, &str, u32)> {
        self.files.iter().filter_map(|(id, s)| match s {
            FileState::Done {
                probes: Some(p), ..
            } => Some((*id, p.path.as_str(), p.mapper)),
            _ => None,
        })
    }

    /// Records another process that maps `file` (its first mapper is gone).
    pub fn set_mapper(&mut self, file: FileId, pid: u32) {
        if let Some(FileState::Done {
            probes: Some(p), ..
        }) = self.files.get_mut(&file)
        {
            p.mapper = pid;
        }
    }

    /// Files with probes, and probes in all.
    pub fn instrumented_count(&self) -> (usize, usize) {
        self.files.values().fold((0, 0), |(f, p), s| match s {
            FileState::Done {
                probes: Some(pr), ..
            } => (f + 1, p + pr.links.len()),
            _ => (f, p),
        })
    }

    /// Whether `file` is done and has probes.
    pub fn is_instrumented(&self, file: FileId) -> bool {
        matches!(
            self.files.get(&file),
            Some(FileState::Done {
                probes: Some(_),
                ..
            })
        )
    }

    /// The probes of an instrumented file.
    pub fn probes_mut(&mut self, file: FileId) -> Option<&mut Probes> {
        match self.files.get_mut(&file) {
            Some(FileState::Done {
                probes: Some(p), ..
            }) => Some(p),
            _ => None,
        }
    }

    /// Whether `file` is instrumented with return probes that go per
    /// process.
    pub fn has_per_process_returns(&self, file: FileId) -> bool {
        matches!(
            self.files.get(&file),
            Some(FileState::Done {
                probes: Some(Probes {
                    returns: Some(_),
                    ..
                }),
                ..
            })
        )
    }

    /// Takes the per-process return probes of processes that exited.
    pub fn forget_exited(&mut self, alive: &mut dyn FnMut(u32) -> bool) -> Vec<Link> {
        let mut gone = Vec::new();
        for s in self.files.values_mut() {
            let FileState::Done {
                probes: Some(Probes {
                    returns: Some(r), ..
                }),
                ..
            } = s
            else {
                continue;
            };
            let dead: Vec<u32> = r.by_pid.keys().copied().filter(|&p| !alive(p)).collect();
            for pid in dead {
                if let Some((_, links)) = r.by_pid.remove(&pid) {
                    gone.extend(links);
                }
            }
        }
        gone
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
            .flat_map(Probes::into_links)
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
            ticket: 0,
        }
    }

    #[test]
    fn one_inspection_per_file_others_wait() {
        let mut f = Files::default();
        let Admit::Inspect(first) = f.admit(job(1, 5)) else {
            panic!("a new file is inspected")
        };
        assert!(first.pid == 1 && f.current(&first));
        assert!(matches!(f.admit(job(2, 5)), Admit::Waiting));
        assert!(matches!(f.admit(job(3, 6)), Admit::Inspect(j) if j.pid == 3));
        let released = f.finish(FileId { dev: 1, ino: 5 }, None, true);
        assert_eq!(released.iter().map(|j| j.pid).collect::<Vec<_>>(), [2]);
        assert!(f.is_static(FileId { dev: 1, ino: 5 }));
        assert!(matches!(f.admit(job(4, 5)), Admit::Release(j) if j.pid == 4));
        assert_eq!(f.instrumented().count(), 0);
    }

    #[test]
    fn an_overdue_inspection_is_given_up_and_its_late_result_ignored() {
        let mut f = Files::default();
        let Admit::Inspect(first) = f.admit(job(1, 5)) else {
            panic!("a new file is inspected")
        };
        let _ = f.admit(job(2, 5));
        assert!(f.overdue(Duration::from_secs(60)).is_empty());
        std::thread::sleep(Duration::from_millis(5));
        let given_up = f.overdue(Duration::from_millis(1));
        assert_eq!(given_up.len(), 1);
        let pids: Vec<u32> = given_up[0].1.iter().map(|j| j.pid).collect();
        assert_eq!(
            pids,
            [1, 2],
            "the inspecting job first, then the waiting ones"
        );
        assert!(!f.current(&first), "its result, when it comes, is stale");
        assert!(matches!(f.admit(job(3, 5)), Admit::Release(_)));
    }

    #[test]
    fn files_without_tls_are_remembered_boundedly() {
        let mut f = Files::default();
        for ino in 0..(MAX_PLAIN_DONE as u64 + 10) {
            let Admit::Inspect(j) = f.admit(job(1, ino)) else {
                panic!("new")
            };
            assert!(f.finish(j.file, None, false).is_empty());
        }
        assert_eq!(f.len(), MAX_PLAIN_DONE);
        // The oldest were forgotten: inspected again when reported again.
        assert!(matches!(f.admit(job(1, 0)), Admit::Inspect(_)));
        assert!(matches!(f.admit(job(1, 20)), Admit::Release(_)));
    }

    #[test]
    fn a_gone_process_hands_over_to_the_next() {
        let mut f = Files::default();
        let file = FileId { dev: 1, ino: 5 };
        let _ = f.admit(job(1, 5));
        let _ = f.admit(job(2, 5));
        let next = f.gone(file).expect("the waiting job takes over");
        assert_eq!(next.pid, 2);
        assert!(f.current(&next), "with a ticket of its own");
        assert!(f.gone(file).is_none());
        // Forgotten: the next mapping inspects it again.
        assert!(matches!(f.admit(job(3, 5)), Admit::Inspect(_)));
        assert!(f.remove(file).is_none(), "still inspecting: kept");
        assert!(matches!(f.admit(job(4, 5)), Admit::Waiting));
    }
}
