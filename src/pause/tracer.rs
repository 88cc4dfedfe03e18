//! One tracer thread: holds one process at a time, from its stop to its
//! release, and is the only thread that makes ptrace calls on it (ptrace
//! requires the seizing thread for every later request).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::{job_of, kick, PauseStats};
use crate::abi::MmapExecFile;
use crate::lock;
use crate::pause::Job;

/// What the dispatcher asks of a tracer.
pub(super) enum Order {
    /// Hold this event's process (or count one more job of the process
    /// already held).
    Hold(MmapExecFile),
    /// One job of the held process is done.
    Done,
    Shutdown,
}

/// A tracer tells the dispatcher it holds nothing any more, after having
/// handled `holds` Hold orders in all.
pub(super) struct Finished {
    pub tracer: usize,
    pub pid: u32,
    pub holds: u64,
}

/// What the dispatcher can see of a tracer while it may be blocked.
#[derive(Default)]
pub(super) struct Busy {
    /// Monotonic ms at which the current `PTRACE_SEIZE` began; 0 if none.
    seizing_since_ms: AtomicU64,
    pid: AtomicU32,
    /// The event whose job is not sent yet. Whoever takes it sends the job:
    /// the tracer once its process is held, or the dispatcher when the
    /// tracer's seize is blocked (then it is sent unpaused).
    pub unsent: Mutex<Option<MmapExecFile>>,
    /// Set by the dispatcher when it gave up waiting for this seize.
    pub abandoned: AtomicBool,
}

impl Busy {
    /// The pid and how long (ms) a seize in progress has been waiting.
    pub fn seizing(&self) -> Option<(u32, u64)> {
        let since = self.seizing_since_ms.load(Ordering::Acquire);
        (since != 0).then(|| {
            let now = crate::output::mono_now() / 1_000_000;
            (self.pid.load(Ordering::Acquire), now.saturating_sub(since))
        })
    }
}

#[derive(Debug)]
struct Tracee {
    stopped: bool,
    /// A signal caught in signal-delivery-stop, given back at detach.
    signal: Option<Signal>,
}

struct Held {
    pid: u32,
    tracees: HashMap<i32, Tracee>,
    since: Instant,
    pending: usize,
    releasing: bool,
    recorded: bool,
}

pub(super) struct Tracer {
    pub index: usize,
    pub busy: Arc<Busy>,
    pub jobs: Sender<Job>,
    pub finished: Sender<Finished>,
    pub wake: Arc<OwnedFd>,
    pub stats: Arc<Mutex<PauseStats>>,
    pub max_pause: Duration,
    held: Option<Held>,
    holds: u64,
}

/// Polling interval while released threads still have to reach their stop.
const RELEASE_POLL: Duration = Duration::from_millis(1);

/// How long shutdown waits for threads to reach their stop.
const RELEASE_AT_SHUTDOWN: Duration = Duration::from_millis(500);

impl Tracer {
    pub fn new(
        index: usize,
        jobs: Sender<Job>,
        finished: Sender<Finished>,
        wake: Arc<OwnedFd>,
        stats: Arc<Mutex<PauseStats>>,
        max_pause: Duration,
    ) -> Tracer {
        Tracer {
            index,
            busy: Arc::default(),
            jobs,
            finished,
            wake,
            stats,
            max_pause,
            held: None,
            holds: 0,
        }
    }

    /// The thread's loop: orders in, held processes released at their
    /// bound whatever arrives.
    pub fn run(mut self, orders: Receiver<Order>) {
        super::raise_priority();
        loop {
            let order = match &self.held {
                None => orders.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(h) if h.releasing => orders.recv_timeout(RELEASE_POLL),
                Some(h) => {
                    let left = (h.since + self.max_pause).saturating_duration_since(Instant::now());
                    orders.recv_timeout(left.max(RELEASE_POLL))
                }
            };
            match order {
                Ok(Order::Hold(ev)) => {
                    self.holds += 1;
                    self.hold(ev);
                }
                Ok(Order::Done) => self.done(),
                Ok(Order::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                    self.release_all();
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.reap();
            self.enforce_deadline();
            self.detach_released();
        }
    }

    fn send_job(&self, ev: MmapExecFile, paused: bool) {
        let _ = self.jobs.send(job_of(ev, paused));
    }

    /// Holds `ev`'s process (all its threads) and sends its job.
    fn hold(&mut self, ev: MmapExecFile) {
        if let Some(h) = self.held.as_mut() {
            if h.pid != ev.pid {
                // The dispatcher sends one process per tracer; never hold two.
                self.send_job(ev, false);
                return;
            }
            if !h.releasing {
                h.pending += 1;
                self.send_job(ev, true);
                return;
            }
            // Released but not yet detached: hold it again.
            h.releasing = false;
            h.recorded = false;
            h.since = Instant::now();
            h.pending = 1;
            self.seize_all(ev.pid);
            self.send_job(ev, true);
            return;
        }
        let (pid, mapped_ns) = (ev.pid, ev.ts_ns);
        self.busy.abandoned.store(false, Ordering::Release);
        *lock(&self.busy.unsent) = Some(ev);
        self.held = Some(Held {
            pid,
            tracees: HashMap::new(),
            since: Instant::now(),
            pending: 1,
            releasing: false,
            recorded: false,
        });
        if self.seize(pid, pid as i32) && !self.busy.abandoned.load(Ordering::Acquire) {
            self.note_stop_latency(pid, mapped_ns);
        }
        self.seize_all(pid);
        let unsent = lock(&self.busy.unsent).take();
        let held = self.held.as_ref().is_some_and(|h| !h.tracees.is_empty());
        match unsent {
            Some(ev) => {
                if !held {
                    log::debug!("cannot pause pid {pid}: no thread could be stopped (gone?)");
                    lock(&self.stats).not_paused += 1;
                    // Gone before the stop: a stop that came this late
                    // missed whatever the process did meanwhile (its first
                    // TLS calls, when a return-probe request was late).
                    let late = crate::output::mono_now().saturating_sub(mapped_ns) / 1000;
                    if late > 1_000 {
                        log::debug!("pid {pid} was gone {late} us after its file was mapped");
                    }
                }
                self.send_job(ev, held);
                if !held {
                    self.finish();
                }
            }
            None => {
                // The dispatcher gave up on a blocked seize and sent the job
                // unpaused: let go at once.
                log::info!("pid {pid}: the blocked stop completed; resuming it at once");
                if let Some(h) = self.held.as_mut() {
                    h.releasing = true;
                    h.recorded = true;
                }
                self.detach_released();
            }
        }
        if self
            .held
            .as_ref()
            .is_some_and(|h| h.since.elapsed() > self.max_pause)
        {
            self.enforce_deadline();
        }
    }

    fn note_stop_latency(&self, pid: u32, mapped_ns: u64) {
        let late = crate::output::mono_now().saturating_sub(mapped_ns) / 1000;
        {
            let mut s = lock(&self.stats);
            s.max_stop_latency_us = s.max_stop_latency_us.max(late);
        }
        if late > 1_000 {
            log::debug!("pid {pid} stopped {late} us after its file was mapped");
        }
    }

    /// Seizes every thread of `pid` not seized yet. Threads may be created
    /// while we seize: the list is read again until no new thread shows up.
    fn seize_all(&mut self, pid: u32) {
        for _round in 0..4 {
            let mut new = 0;
            for tid in list_threads(pid) {
                let known = self
                    .held
                    .as_ref()
                    .is_some_and(|h| h.tracees.contains_key(&tid));
                if !known && self.seize(pid, tid) {
                    new += 1;
                }
            }
            if new == 0 {
                break;
            }
        }
    }

    /// Seizes and interrupts one thread of `pid`; false if it is gone.
    /// The only call here that can block for long (see the module docs).
    fn seize(&mut self, pid: u32, tid: i32) -> bool {
        let p = Pid::from_raw(tid);
        self.busy.pid.store(pid, Ordering::Release);
        self.busy.seizing_since_ms.store(
            (crate::output::mono_now() / 1_000_000).max(1),
            Ordering::Release,
        );
        let r = ptrace::seize(p, ptrace::Options::empty());
        self.busy.seizing_since_ms.store(0, Ordering::Release);
        match r {
            Ok(()) => {
                if let Err(e) = ptrace::interrupt(p) {
                    log::debug!("interrupt {tid}: {e}");
                }
                if let Some(h) = self.held.as_mut() {
                    h.tracees.insert(
                        tid,
                        Tracee {
                            stopped: false,
                            signal: None,
                        },
                    );
                }
                true
            }
            Err(Errno::ESRCH) => false,
            Err(e) => {
                log::debug!("cannot pause {pid} (thread {tid}): {e}");
                false
            }
        }
    }

    fn done(&mut self) {
        if let Some(h) = self.held.as_mut() {
            h.pending = h.pending.saturating_sub(1);
            if h.pending == 0 {
                h.releasing = true;
            }
        }
    }

    fn enforce_deadline(&mut self) {
        let Some(h) = self.held.as_mut() else { return };
        if !h.releasing && h.since.elapsed() > self.max_pause {
            log::warn!(
                "resuming pid {} after {} ms although its files are not all instrumented",
                h.pid,
                self.max_pause.as_millis()
            );
            h.releasing = true;
            lock(&self.stats).timed_out += 1;
        }
    }

    /// Collects stop and exit notifications of this thread's own tracees
    /// (`__WNOTHREAD`: other tracers' tracees are theirs to wait for).
    fn reap(&mut self) {
        let flags = WaitPidFlag::WNOHANG | WaitPidFlag::__WALL | WaitPidFlag::__WNOTHREAD;
        loop {
            let st = match waitpid(None, Some(flags)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => s,
            };
            let Some(tid) = st.pid().map(|p| p.as_raw()) else {
                return;
            };
            let Some(h) = self.held.as_mut() else {
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
                }
                _ => {}
            }
        }
    }

    /// Detaches the stopped threads of a released process; tells the
    /// dispatcher once none is left.
    fn detach_released(&mut self) {
        let Some(h) = self.held.as_mut() else { return };
        if !h.releasing {
            return;
        }
        if !h.recorded {
            h.recorded = true;
            lock(&self.stats).record(h.since.elapsed());
            log::debug!("pid {} held {} us", h.pid, h.since.elapsed().as_micros());
        }
        let pid = h.pid;
        h.tracees.retain(|&tid, t| {
            if !t.stopped {
                // Kept until its stop arrives (it is running meanwhile).
                return std::fs::metadata(format!("/proc/{pid}/task/{tid}")).is_ok();
            }
            match ptrace::detach(Pid::from_raw(tid), t.signal) {
                Ok(()) => {}
                Err(Errno::ESRCH) => {
                    // Killed while stopped: collect it if it is a zombie.
                    let flags = WaitPidFlag::WNOHANG | WaitPidFlag::__WALL;
                    let _ = waitpid(Pid::from_raw(tid), Some(flags));
                }
                Err(e) => log::warn!("detach {tid}: {e}"),
            }
            false
        });
        if h.tracees.is_empty() {
            self.finish();
        }
    }

    fn finish(&mut self) {
        let Some(h) = self.held.take() else { return };
        let _ = self.finished.send(Finished {
            tracer: self.index,
            pid: h.pid,
            holds: self.holds,
        });
        kick(&self.wake);
    }

    /// At shutdown: releases what is held. Threads not yet stopped need
    /// their stop before they can be detached; they are waited for a
    /// bounded time (the kernel detaches them anyway when the agent exits).
    fn release_all(&mut self) {
        if let Some(h) = self.held.as_mut() {
            h.releasing = true;
        }
        let until = Instant::now() + RELEASE_AT_SHUTDOWN;
        while self.held.is_some() && Instant::now() < until {
            self.reap();
            self.detach_released();
            std::thread::sleep(Duration::from_millis(2));
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
