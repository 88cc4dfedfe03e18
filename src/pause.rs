//! Pause: hold a process still while the files it just mapped are inspected
//! and instrumented (spec: "Use PTRACE to pause execution of process").
//!
//! One small dedicated thread reads `MMAP_EXEC_FILE` records from their own
//! ring buffer and stops the process at once: `PTRACE_SEIZE` + `PTRACE_INTERRUPT`
//! on every thread (no SIGSTOP, so the parent's job control sees nothing).
//! Inspection runs on other threads; when every file of the process is
//! handled, or when `max_pause` has passed, the threads are detached, which
//! resumes them. All ptrace calls happen on this thread, as ptrace requires.
//! If the agent dies, the kernel detaches its tracees and they run on.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender};
use libbpf_rs::{MapHandle, RingBufferBuilder};
use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::abi::{self, Event, MmapExecFile};
use crate::discover::FileId;

/// Work for the inspectors: one file one process mapped.
#[derive(Debug, Clone)]
pub struct Job {
    pub pid: u32,
    pub file: FileId,
    pub source: u32,
    pub comm: String,
    /// The process is held paused until this job is reported done.
    pub paused: bool,
    /// Part of the start-up scan of running processes.
    pub startup: bool,
    /// Which inspection this job is (set by the agent when it hands the job
    /// to a worker): a result that comes back after its inspection was
    /// given up is recognised and ignored.
    pub ticket: u64,
}

enum Control {
    Done(u32),
    Shutdown,
}

/// How long processes were held, for the summary and benchmarks.
#[derive(Debug, Default)]
pub struct PauseStats {
    /// The first pauses' durations (at most `MAX_SAMPLES`).
    pub held: Vec<Duration>,
    /// Every pause.
    pub pauses: u64,
    /// The longest pause.
    pub longest: Duration,
    /// Processes that could not be paused (already traced, gone, ...).
    pub not_paused: u64,
    /// Pauses ended by the time bound rather than by instrumentation.
    pub timed_out: u64,
    /// Longest time from a file being mapped to its process being stopped.
    pub max_stop_latency_us: u64,
}

/// How long shutdown waits for the pause thread.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// Pause durations kept for the exit report, at most (the count goes on).
const MAX_SAMPLES: usize = 100_000;

impl PauseStats {
    /// Counts one pause; keeps its duration while there is room.
    pub fn record(&mut self, d: Duration) {
        self.pauses += 1;
        self.longest = self.longest.max(d);
        if self.held.len() < MAX_SAMPLES {
            self.held.push(d);
        }
    }

    /// (count, median, max)
    /// (pauses, median of the durations kept, longest)
    pub fn summary(&self) -> (u64, Duration, Duration) {
        let mut v = self.held.clone();
        v.sort();
        let med = if v.is_empty() {
            Duration::ZERO
        } else {
            v[v.len() / 2]
        };
        (self.pauses, med, self.longest)
    }
}

/// The running pause thread.
pub struct Pauser {
    tx: Sender<Control>,
    wake: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<Mutex<PauseStats>>,
}

impl Pauser {
    /// Starts the thread. `events` is the `exec_events` ring buffer map;
    /// `late` (a testing aid, normally zero) delays every stop.
    pub fn start(
        events: MapHandle,
        jobs: Sender<Job>,
        max_pause: Duration,
        late: Duration,
    ) -> Result<Pauser> {
        // SAFETY: plain syscall; the fd is owned right away.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(std::io::Error::last_os_error()).context("eventfd");
        }
        // SAFETY: efd is a fresh descriptor we own.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(efd) });
        let (tx, rx) = crossbeam_channel::unbounded();
        let stats = Arc::new(Mutex::new(PauseStats::default()));
        let (w, s) = (wake.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("pause".into())
            .spawn(move || {
                if let Err(e) = pause_thread(events, jobs, rx, w, s, max_pause, late) {
                    log::error!("pause thread stopped: {e:#}");
                }
            })
            .context("spawning the pause thread")?;
        Ok(Pauser {
            tx,
            wake,
            thread: Some(thread),
            stats,
        })
    }

    /// Prints the pause statistics (at exit).
    pub fn report(&self) {
        let Ok(s) = self.stats.lock() else { return };
        let (n, med, max) = s.summary();
        eprintln!(
            "plainsight: {n} pauses (median {} us, max {} us; {} processes not pausable, \
             {} resumed by the time bound; stopped at most {} us after a mapping)",
            med.as_micros(),
            max.as_micros(),
            s.not_paused,
            s.timed_out,
            s.max_stop_latency_us
        );
        let list: Vec<String> = s.held.iter().map(|d| d.as_micros().to_string()).collect();
        eprintln!("plainsight: pause durations (us): {}", list.join(" "));
    }

    /// Every job of `pid` sent with `paused` must be reported done once.
    pub fn done(&self, pid: u32) {
        let _ = self.tx.send(Control::Done(pid));
        self.kick();
    }

    fn kick(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), &one as *const u64 as *const _, 8) };
    }

    /// Resumes every held process and stops the thread. Bounded: a thread
    /// blocked in the kernel (a PTRACE_SEIZE waiting on a target's exec
    /// from a stalled filesystem) is left behind after `SHUTDOWN_WAIT`;
    /// the agent then exits, and the kernel detaches whatever that thread
    /// still traces.
    pub fn shutdown(&mut self) {
        let _ = self.tx.send(Control::Shutdown);
        self.kick();
        let Some(t) = self.thread.take() else { return };
        let until = Instant::now() + SHUTDOWN_WAIT;
        while !t.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            log::warn!(
                "the pause thread did not stop within {} ms: exiting without it (the kernel releases its tracees)",
                SHUTDOWN_WAIT.as_millis()
            );
        }
    }
}

impl Drop for Pauser {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[derive(Debug)]
struct Tracee {
    stopped: bool,
    /// A signal caught in signal-delivery-stop, given back at detach.
    signal: Option<Signal>,
}

#[derive(Debug)]
struct Held {
    tracees: HashMap<i32, Tracee>,
    since: Instant,
    pending: usize,
    releasing: bool,
    recorded: bool,
}

struct State {
    held: HashMap<u32, Held>,
    /// tid -> pid of every tracee, for wait results.
    owner: HashMap<i32, u32>,
    /// Main threads stopped ahead of the rest of their batch.
    early: HashMap<u32, HashMap<i32, Tracee>>,
    stats: Arc<Mutex<PauseStats>>,
    max_pause: Duration,
}

/// The exec_events ring buffer, its records collected into `incoming`.
fn exec_ring<'m>(
    events: &'m MapHandle,
    incoming: &Rc<RefCell<Vec<MmapExecFile>>>,
) -> Result<libbpf_rs::RingBuffer<'m>> {
    let sink = incoming.clone();
    let mut builder = RingBufferBuilder::new();
    builder
        .add(events, move |rec: &[u8]| {
            match abi::parse(rec) {
                Ok(Event::MmapExecFile(e)) => sink.borrow_mut().push(e),
                Ok(other) => log::warn!("unexpected record on exec_events: {other:?}"),
                Err(e) => log::warn!("bad MMAP_EXEC_FILE record: {e}"),
            }
            0
        })
        .context("exec_events ring buffer")?;
    builder.build().context("exec_events ring buffer")
}

/// The window between a file being mapped and the process being stopped is
/// the race the spec accepts; the pause thread runs before ordinary tasks to
/// keep it short even on a busy host.
fn raise_priority() {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: plain syscall on the calling thread with a valid parameter.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        log::debug!(
            "pause thread keeps normal priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Sleeps until an exec event, a control message, or the timeout: short
/// while processes are held (their bound is enforced on each turn).
fn wait_for_work(ring_fd: i32, wake: &OwnedFd, holding: bool) {
    let timeout_ms = if holding { 5 } else { 500 };
    let mut fds = [
        libc::pollfd {
            fd: ring_fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: fds is a valid array of two pollfd.
    unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
    let mut buf = [0u8; 8];
    // SAFETY: reads at most 8 bytes into buf from our non-blocking eventfd.
    unsafe { libc::read(wake.as_raw_fd(), buf.as_mut_ptr() as *mut _, 8) };
}

fn pause_thread(
    events: MapHandle,
    jobs: Sender<Job>,
    rx: Receiver<Control>,
    wake: Arc<OwnedFd>,
    stats: Arc<Mutex<PauseStats>>,
    max_pause: Duration,
    late: Duration,
) -> Result<()> {
    let incoming: Rc<RefCell<Vec<MmapExecFile>>> = Rc::default();
    let ring = exec_ring(&events, &incoming)?;
    let ring_fd = ring.epoll_fd();
    let my_pid = std::process::id();
    raise_priority();
    let mut st = State {
        held: HashMap::new(),
        owner: HashMap::new(),
        early: HashMap::new(),
        stats,
        max_pause,
    };
    loop {
        wait_for_work(ring_fd, &wake, !st.held.is_empty());
        let woke_ns = crate::output::mono_now();
        let _ = ring.consume_raw();
        let batch: Vec<MmapExecFile> = incoming
            .borrow_mut()
            .drain(..)
            .filter(|ev| ev.pid != my_pid)
            .collect();
        if !late.is_zero() && !batch.is_empty() {
            std::thread::sleep(late);
        }
        st.hold_batch(batch, woke_ns, &jobs);
        let mut shutdown = false;
        while let Ok(c) = rx.try_recv() {
            match c {
                Control::Done(pid) => st.done(pid),
                Control::Shutdown => shutdown = true,
            }
        }
        st.reap();
        st.enforce_deadline();
        st.detach_released();
        if shutdown {
            st.release_all();
            return Ok(());
        }
    }
}

fn list_threads(pid: u32) -> Vec<i32> {
    match std::fs::read_dir(format!("/proc/{pid}/task")) {
        Ok(rd) => rd
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

impl State {
    /// Seizes and interrupts the main thread of `pid` if it is not held yet,
    /// recording how long after the mapping (`mapped_ns`, monotonic) it was.
    /// Done for every event of a batch before [`State::hold`] lists threads:
    /// reading /proc/PID/task of a process fresh from exec was seen to block
    /// for over 10 ms, long enough for a short program to run to its end.
    /// Holds the processes of a batch of exec events and sends their jobs.
    /// Every new process's main thread is stopped before any procfs read for
    /// the others: one slow thread listing must not let the next process of
    /// the batch run on.
    fn hold_batch(&mut self, batch: Vec<MmapExecFile>, woke_ns: u64, jobs: &Sender<Job>) {
        for ev in &batch {
            self.stop_main(ev.pid, ev.ts_ns, woke_ns);
        }
        for ev in batch {
            let paused = self.hold(ev.pid);
            if !paused {
                log::debug!(
                    "pid {} ({}) not paused, {} us after its file was mapped",
                    ev.pid,
                    ev.comm,
                    crate::output::mono_now().saturating_sub(ev.ts_ns) / 1000
                );
            }
            let _ = jobs.send(Job {
                pid: ev.pid,
                file: FileId {
                    dev: ev.dev,
                    ino: ev.ino,
                },
                source: ev.source,
                comm: ev.comm,
                paused,
                startup: false,
                ticket: 0,
            });
        }
    }

    /// At shutdown: releases everything held. Threads not yet stopped need
    /// their stop before they can be detached; they are waited for a
    /// bounded time (the kernel detaches them anyway when the agent exits).
    fn release_all(&mut self) {
        for h in self.held.values_mut() {
            h.releasing = true;
        }
        let until = Instant::now() + Duration::from_millis(500);
        while !self.held.is_empty() && Instant::now() < until {
            self.reap();
            self.detach_released();
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn stop_main(&mut self, pid: u32, mapped_ns: u64, woke_ns: u64) {
        if self.held.contains_key(&pid) || self.early.contains_key(&pid) {
            return;
        }
        let mut tracees = HashMap::new();
        if self.seize(pid, pid as i32, &mut tracees) {
            let late = crate::output::mono_now().saturating_sub(mapped_ns) / 1000;
            if let Ok(mut s) = self.stats.lock() {
                s.max_stop_latency_us = s.max_stop_latency_us.max(late);
            }
            if late > 1_000 {
                log::debug!(
                    "pid {pid} stopped {late} us after its file was mapped (this thread woke {} us after it)",
                    woke_ns.saturating_sub(mapped_ns) / 1000
                );
            }
            self.early.insert(pid, tracees);
        }
    }

    /// Stops every thread of `pid` besides the main thread that
    /// [`State::stop_main`] stopped (or adds a job to a pause in progress).
    /// Returns whether the process is held.
    fn hold(&mut self, pid: u32) -> bool {
        let early = self.early.remove(&pid);
        if let Some(h) = self.held.get_mut(&pid) {
            if !h.releasing {
                h.pending += 1;
                return true;
            }
        }
        let mut tracees: HashMap<i32, Tracee> = self
            .held
            .remove(&pid)
            .map(|h| h.tracees)
            .or(early)
            .unwrap_or_default();
        // Threads may be created while we seize: go over the list again
        // until no new thread shows up.
        for _round in 0..4 {
            let mut new = 0;
            for tid in list_threads(pid) {
                if !tracees.contains_key(&tid) && self.seize(pid, tid, &mut tracees) {
                    new += 1;
                }
            }
            if new == 0 {
                break;
            }
        }
        if tracees.is_empty() {
            log::debug!("cannot pause pid {pid}: no thread could be stopped (gone?)");
            if let Ok(mut s) = self.stats.lock() {
                s.not_paused += 1;
            }
            return false;
        }
        self.held.insert(
            pid,
            Held {
                tracees,
                since: Instant::now(),
                pending: 1,
                releasing: false,
                recorded: false,
            },
        );
        true
    }

    /// Seizes and interrupts one thread of `pid`; false if it is gone.
    fn seize(&mut self, pid: u32, tid: i32, tracees: &mut HashMap<i32, Tracee>) -> bool {
        let p = Pid::from_raw(tid);
        match ptrace::seize(p, ptrace::Options::empty()) {
            Ok(()) => {
                if let Err(e) = ptrace::interrupt(p) {
                    log::debug!("interrupt {tid}: {e}");
                }
                tracees.insert(
                    tid,
                    Tracee {
                        stopped: false,
                        signal: None,
                    },
                );
                self.owner.insert(tid, pid);
                true
            }
            Err(Errno::ESRCH) => false,
            Err(e) => {
                log::debug!("cannot pause {pid} (thread {tid}): {e}");
                false
            }
        }
    }

    fn done(&mut self, pid: u32) {
        if let Some(h) = self.held.get_mut(&pid) {
            h.pending = h.pending.saturating_sub(1);
            if h.pending == 0 {
                h.releasing = true;
            }
        }
    }

    fn enforce_deadline(&mut self) {
        let now = Instant::now();
        for (pid, h) in self.held.iter_mut() {
            if !h.releasing && now.duration_since(h.since) > self.max_pause {
                log::warn!(
                    "resuming pid {pid} after {} ms although its files are not all instrumented",
                    self.max_pause.as_millis()
                );
                h.releasing = true;
                if let Ok(mut s) = self.stats.lock() {
                    s.timed_out += 1;
                }
            }
        }
    }

    /// Collects stop and exit notifications of tracees.
    fn reap(&mut self) {
        loop {
            let st = match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => s,
            };
            let Some(tid) = st.pid().map(|p| p.as_raw()) else {
                return;
            };
            let Some(&pid) = self.owner.get(&tid) else {
                continue;
            };
            let Some(h) = self.held.get_mut(&pid) else {
                self.owner.remove(&tid);
                continue;
            };
            match st {
                WaitStatus::PtraceEvent(..) => {
                    if let Some(t) = h.tracees.get_mut(&tid) {
                        t.stopped = true;
                    }
                }
                WaitStatus::Stopped(_, sig) => {
                    if let Some(t) = h.tracees.get_mut(&tid) {
                        t.stopped = true;
                        t.signal = Some(sig);
                    }
                }
                WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
                    h.tracees.remove(&tid);
                    self.owner.remove(&tid);
                }
                _ => {}
            }
        }
    }

    /// Detaches the stopped threads of released processes.
    fn detach_released(&mut self) {
        let mut finished = Vec::new();
        for (pid, h) in self.held.iter_mut() {
            if !h.releasing {
                continue;
            }
            if !h.recorded {
                h.recorded = true;
                if let Ok(mut s) = self.stats.lock() {
                    s.record(h.since.elapsed());
                }
                log::debug!("pid {pid} held {} us", h.since.elapsed().as_micros());
            }
            h.tracees.retain(|&tid, t| {
                if !t.stopped {
                    // Keep until its stop arrives (it is running meanwhile).
                    if std::fs::metadata(format!("/proc/{pid}/task/{tid}")).is_err() {
                        return false;
                    }
                    return true;
                }
                match ptrace::detach(Pid::from_raw(tid), t.signal) {
                    Ok(()) | Err(Errno::ESRCH) => false,
                    Err(e) => {
                        log::warn!("detach {tid}: {e}");
                        false
                    }
                }
            });
            if h.tracees.is_empty() {
                finished.push(*pid);
            }
        }
        for pid in finished {
            self.held.remove(&pid);
            self.owner.retain(|_, p| *p != pid);
        }
    }
}
