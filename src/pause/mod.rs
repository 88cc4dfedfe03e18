//! Pause: hold a process still while the files it just mapped are inspected
//! and instrumented (spec: "Use PTRACE to pause execution of process").
//!
//! A small dispatcher thread reads `MMAP_EXEC_FILE` records from their own
//! ring buffers (a file mapped; or, `EXEC_SOURCE_RETURNS`, a process whose
//! first wanted connection needs its return probes) and hands each new
//! process to a tracer thread
//! ([`tracer`]), which stops it at once: `PTRACE_SEIZE` + `PTRACE_INTERRUPT`
//! on every thread (no SIGSTOP, so the parent's job control sees nothing).
//! Inspection runs on other threads; when every file of the process is
//! handled, or when `max_pause` has passed, its tracer detaches the threads,
//! which resumes them. If the agent dies, the kernel detaches its tracees
//! and they run on.
//!
//! Why one tracer per held process: ptrace requests must come from the
//! thread that seized, and `PTRACE_SEIZE` waits for the target's
//! `cred_guard_mutex`, which an exec holds while it reads the new program:
//! an exec from a stalled filesystem holds it for as long as the stall
//! lasts. Only the tracer of that process waits; the dispatcher notices,
//! sends its files for inspection without the pause, and goes on with
//! fresh tracers (at most [`MAX_TRACERS`]). Every other held process keeps
//! its bound, because no thread holding it ever makes a call that can
//! block.

mod tracer;

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender};
use libbpf_rs::{MapHandle, RingBufferBuilder};

use crate::abi::{self, Event, MmapExecFile};
use crate::discover::FileId;
use tracer::{Busy, Finished, Order, Tracer};

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
    /// The Prometheus pause counter and duration histogram, if served.
    pub metrics: Option<(
        prometheus_client::metrics::counter::Counter,
        prometheus_client::metrics::histogram::Histogram,
    )>,
    /// The first pauses' durations (at most `MAX_SAMPLES`).
    pub held: Vec<Duration>,
    /// Every pause.
    pub pauses: u64,
    /// The longest pause.
    pub longest: Duration,
    /// Processes that could not be paused (already traced, gone, ...).
    pub not_paused: u64,
    /// Stops that waited longer than the pause bound for the process's
    /// exec (sent for inspection unpaused, their tracer set aside).
    pub seize_blocked: u64,
    /// Tracer threads started.
    pub tracers: usize,
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
        if let Some((n, h)) = &self.metrics {
            n.inc();
            h.observe(d.as_secs_f64());
        }
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
        returns: MapHandle,
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
                if let Err(e) = pause_thread([events, returns], jobs, rx, w, s, max_pause, late) {
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
             {} resumed by the time bound, {} stops blocked by an exec; stopped at most {} us \
             after a mapping; {} tracer threads)",
            med.as_micros(),
            max.as_micros(),
            s.not_paused,
            s.timed_out,
            s.seize_blocked,
            s.max_stop_latency_us,
            s.tracers
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
        kick(&self.wake);
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

/// Tracer threads at most. One is busy per held process (a few ms each) and
/// one per process whose stop is blocked by an exec on a stalled
/// filesystem; beyond the cap, new processes are inspected without a pause
/// (counted as not pausable).
pub const MAX_TRACERS: usize = 64;

/// How long the dispatcher waits for the tracers at shutdown.
const TRACERS_SHUTDOWN_WAIT: Duration = Duration::from_millis(1500);

fn kick(wake: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
    unsafe { libc::write(wake.as_raw_fd(), &one as *const u64 as *const _, 8) };
}

fn job_of(ev: MmapExecFile, paused: bool) -> Job {
    Job {
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
    }
}

/// The hold requests' ring buffers (exec_events: files mapped;
/// return_requests: processes asking for return probes), their records
/// collected into `incoming`.
fn exec_ring<'m>(
    events: &'m [MapHandle; 2],
    incoming: &Rc<RefCell<Vec<MmapExecFile>>>,
) -> Result<libbpf_rs::RingBuffer<'m>> {
    let mut builder = RingBufferBuilder::new();
    for map in events {
        let sink = incoming.clone();
        builder
            .add(map, move |rec: &[u8]| {
                match abi::parse(rec) {
                    Ok(Event::MmapExecFile(e)) => sink.borrow_mut().push(e),
                    Ok(other) => log::warn!("unexpected record on a hold ring: {other:?}"),
                    Err(e) => log::warn!("bad MMAP_EXEC_FILE record: {e}"),
                }
                0
            })
            .context("hold request ring buffer")?;
    }
    builder.build().context("hold request ring buffers")
}

/// The window between a file being mapped and the process being stopped is
/// the race the spec accepts; the pause threads run before ordinary tasks
/// to keep it short even on a busy host.
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

/// Sleeps until an exec event, a control message, or the timeout.
fn wait_for_work(ring_fd: i32, wake: &OwnedFd, timeout: Duration) {
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
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: fds is a valid array of two pollfd.
    unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    let mut buf = [0u8; 8];
    // SAFETY: reads at most 8 bytes into buf from our non-blocking eventfd.
    unsafe { libc::read(wake.as_raw_fd(), buf.as_mut_ptr() as *mut _, 8) };
}

/// The dispatcher's handle on one tracer thread.
struct TracerHandle {
    orders: Sender<Order>,
    busy: Arc<Busy>,
    thread: JoinHandle<()>,
    /// Hold orders sent, to tell a tracer that finished from one that was
    /// given the same process again meanwhile.
    sent: u64,
}

/// The dispatcher: which tracer holds which process.
struct Dispatcher {
    tracers: Vec<TracerHandle>,
    idle: Vec<usize>,
    by_pid: HashMap<u32, usize>,
    /// Processes whose stop is blocked (by an exec), and their tracer.
    blocked: HashMap<u32, usize>,
    finished_tx: Sender<Finished>,
    finished_rx: Receiver<Finished>,
    jobs: Sender<Job>,
    wake: Arc<OwnedFd>,
    stats: Arc<Mutex<PauseStats>>,
    max_pause: Duration,
    warned_cap: bool,
}

fn pause_thread(
    events: [MapHandle; 2],
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
    let (finished_tx, finished_rx) = crossbeam_channel::unbounded();
    let mut d = Dispatcher {
        tracers: Vec::new(),
        idle: Vec::new(),
        by_pid: HashMap::new(),
        blocked: HashMap::new(),
        finished_tx,
        finished_rx,
        jobs,
        wake,
        stats,
        max_pause,
        warned_cap: false,
    };
    // Blocked stops are noticed within a fraction of the bound.
    let check = (max_pause / 4).clamp(Duration::from_millis(10), Duration::from_millis(100));
    loop {
        let busy = d.idle.len() < d.tracers.len();
        wait_for_work(
            ring_fd,
            &d.wake,
            if busy {
                check
            } else {
                Duration::from_millis(500)
            },
        );
        let _ = ring.consume_raw();
        let batch: Vec<MmapExecFile> = incoming
            .borrow_mut()
            .drain(..)
            .filter(|ev| ev.pid != my_pid)
            .collect();
        if !late.is_zero() && !batch.is_empty() {
            std::thread::sleep(late);
        }
        for ev in batch {
            d.route(ev);
        }
        let mut shutdown = false;
        while let Ok(c) = rx.try_recv() {
            match c {
                Control::Done(pid) => d.done(pid),
                Control::Shutdown => shutdown = true,
            }
        }
        d.collect_finished();
        d.check_blocked();
        if shutdown {
            d.shutdown();
            return Ok(());
        }
    }
}

impl Dispatcher {
    /// Gives `ev` to the tracer of its process, or to a free one.
    fn route(&mut self, ev: MmapExecFile) {
        if ev.source == abi::EXEC_SOURCE_WATCHED {
            // Only news of the process (a JVM started): nothing to hold.
            let _ = self.jobs.send(job_of(ev, false));
            return;
        }
        if self.blocked.contains_key(&ev.pid) {
            self.unpaused(ev);
            return;
        }
        let i = match self.by_pid.get(&ev.pid) {
            Some(&i) => i,
            None => match self.free_tracer() {
                Some(i) => i,
                None => {
                    self.unpaused(ev);
                    return;
                }
            },
        };
        self.by_pid.insert(ev.pid, i);
        let t = &mut self.tracers[i];
        t.sent += 1;
        let _ = t.orders.send(Order::Hold(ev));
    }

    fn unpaused(&mut self, ev: MmapExecFile) {
        if let Ok(mut s) = self.stats.lock() {
            s.not_paused += 1;
        }
        let _ = self.jobs.send(job_of(ev, false));
    }

    fn free_tracer(&mut self) -> Option<usize> {
        if let Some(i) = self.idle.pop() {
            return Some(i);
        }
        if self.tracers.len() >= MAX_TRACERS {
            if !self.warned_cap {
                self.warned_cap = true;
                log::warn!(
                    "all {MAX_TRACERS} tracer threads are busy: new processes are inspected without a pause"
                );
            }
            return None;
        }
        let i = self.tracers.len();
        let (tx, rx) = crossbeam_channel::unbounded();
        let tracer = Tracer::new(
            i,
            self.jobs.clone(),
            self.finished_tx.clone(),
            self.wake.clone(),
            self.stats.clone(),
            self.max_pause,
        );
        let busy = tracer.busy.clone();
        let thread = std::thread::Builder::new()
            .name(format!("tracer-{i}"))
            .stack_size(256 << 10)
            .spawn(move || tracer.run(rx));
        match thread {
            Ok(thread) => {
                self.tracers.push(TracerHandle {
                    orders: tx,
                    busy,
                    thread,
                    sent: 0,
                });
                if let Ok(mut s) = self.stats.lock() {
                    s.tracers = self.tracers.len();
                }
                Some(i)
            }
            Err(e) => {
                log::warn!("cannot start a tracer thread: {e}");
                None
            }
        }
    }

    fn done(&mut self, pid: u32) {
        if let Some(&i) = self.by_pid.get(&pid) {
            let _ = self.tracers[i].orders.send(Order::Done);
        }
    }

    /// Tracers that hold nothing any more become free, unless they were
    /// given their process again after they reported.
    fn collect_finished(&mut self) {
        while let Ok(f) = self.finished_rx.try_recv() {
            if self.blocked.get(&f.pid) == Some(&f.tracer) {
                self.blocked.remove(&f.pid);
            }
            if f.holds != self.tracers[f.tracer].sent {
                continue;
            }
            if self.by_pid.get(&f.pid) == Some(&f.tracer) {
                self.by_pid.remove(&f.pid);
            }
            self.idle.push(f.tracer);
        }
    }

    /// A stop that waits past the pause bound waits on the process's exec:
    /// its file goes to inspection unpaused, and the process's later files
    /// too until the stop completes.
    fn check_blocked(&mut self) {
        let bound = self.max_pause.as_millis() as u64;
        for (i, t) in self.tracers.iter().enumerate() {
            let Some((pid, waited)) = t.busy.seizing() else {
                continue;
            };
            if waited <= bound || t.busy.abandoned.swap(true, Ordering::AcqRel) {
                continue;
            }
            log::warn!(
                "pid {pid}: stopping it has waited {waited} ms on its exec (a program on a stalled \
                 filesystem?): inspecting its files without a pause, capture goes on"
            );
            if let Ok(mut s) = self.stats.lock() {
                s.seize_blocked += 1;
            }
            self.blocked.insert(pid, i);
            if self.by_pid.get(&pid) == Some(&i) {
                self.by_pid.remove(&pid);
            }
            let unsent = t.busy.unsent.lock().map(|mut u| u.take()).unwrap_or(None);
            if let Some(ev) = unsent {
                let _ = self.jobs.send(job_of(ev, false));
            }
        }
    }

    /// Releases everything held, waiting a bounded time for the tracers; a
    /// tracer blocked in the kernel is left behind.
    fn shutdown(self) {
        for t in &self.tracers {
            let _ = t.orders.send(Order::Shutdown);
        }
        let until = Instant::now() + TRACERS_SHUTDOWN_WAIT;
        let mut left = self.tracers;
        while !left.is_empty() && Instant::now() < until {
            let (done, rest): (Vec<_>, Vec<_>) =
                left.into_iter().partition(|t| t.thread.is_finished());
            for t in done {
                let _ = t.thread.join();
            }
            left = rest;
            std::thread::sleep(Duration::from_millis(2));
        }
        if !left.is_empty() {
            log::warn!(
                "{} tracer threads are blocked in the kernel at exit (the kernel releases their tracees)",
                left.len()
            );
        }
    }
}
