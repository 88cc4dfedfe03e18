//! The agent: sets up the parts of the flow, runs the event loop, reports at
//! exit.
//!
//! discover (`kernel`, BPF) -> pause (`pause`, its own thread) -> inspect
//! (`inspect::worker` threads) -> attach (`attach`) -> capture (BPF, then
//! `capture` on this thread) -> decode and output (`output` thread).
//! This thread owns the per-file state (`files`): jobs from the pause
//! thread and results from the workers both come here.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use crossbeam_channel::{Receiver, Sender};
use libbpf_rs::{Link, RingBuffer, RingBufferBuilder};

use crate::abi;
use crate::attach;
use crate::capture::Capture;
use crate::config::{InspectSettings, Settings, TelemetrySettings};
use crate::discover::{self, FileId};
use crate::escape;
use crate::files::{Admit, Files, PerProcess, Probes};
use crate::hooks;
use crate::inspect::worker::{self, Inspected, Outcome};
use crate::inspect::{Inspection, Linkage, TlsLibrary};
use crate::kernel::{Counters, Kernel};
use crate::output::{self, Pipeline, Record};
use crate::pause::{Job, Pauser};
use crate::telemetry::metrics::{self, Metrics};
use crate::telemetry::otlp::Otlp;
use crate::telemetry::TelemetrySink;

/// Records waiting for the output thread at most.
const OUTPUT_QUEUE: usize = 32 * 1024;
/// How often exited processes and deleted files are swept while processes
/// come, go and talk ...
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// ... and at least this often when nothing happens (an idle host changes
/// nothing that a sweep would find, bar the odd exit).
const IDLE_SWEEP_EVERY: Duration = Duration::from_secs(60);
/// The data rings are read this often while records come (BPF does not
/// wake the reader per record: waking costs the traced program more) ...
const POLL_BUSY: Duration = Duration::from_millis(10);
/// ... and, after this long without any, this seldom, so that an idle
/// agent sleeps. A ring a quarter full wakes the reader at once whatever
/// it waits for (`wake_at`, `ring_wakeups`).
const BUSY_FOR: Duration = Duration::from_secs(1);
const POLL_IDLE: Duration = Duration::from_millis(100);

/// Wake-ups of the data rings (BPF forces one per record once a ring is a
/// quarter full), as messages the event loop can wait for among its
/// others. Its own epoll instance, edge-triggered: it waits for the next
/// wake-up, never for records the loop has not read yet.
fn ring_wakeups(k: &Kernel) -> Result<Receiver<()>> {
    // SAFETY: plain syscall; the descriptor is owned right away.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        return Err(std::io::Error::last_os_error()).context("epoll_create1");
    }
    // SAFETY: epfd is a fresh descriptor we own.
    let epfd = unsafe { OwnedFd::from_raw_fd(epfd) };
    for map in [&k.openssl.maps.data_events, &k.statictls.maps.data_events] {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: 0,
        };
        let fd = map.as_fd().as_raw_fd();
        // SAFETY: valid descriptors and event; the maps live as long as the
        // agent (epoll forgets a closed descriptor by itself).
        if unsafe { libc::epoll_ctl(epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(std::io::Error::last_os_error()).context("epoll_ctl on a data ring");
        }
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("ring-wake".into())
        .stack_size(64 << 10)
        .spawn(move || {
            let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 2];
            loop {
                // SAFETY: evs has room for the 2 events asked for.
                let n = unsafe { libc::epoll_wait(epfd.as_raw_fd(), evs.as_mut_ptr(), 2, -1) };
                if n > 0 {
                    // Full: a wake-up is pending already.
                    if let Err(crossbeam_channel::TrySendError::Disconnected(_)) = tx.try_send(()) {
                        return;
                    }
                } else if n < 0
                    && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
                {
                    return;
                }
            }
        })
        .context("spawning the ring wake-up thread")?;
    Ok(rx)
}

/// A process's start time in clock ticks since boot (`/proc/PID/stat`'s
/// 22nd field; BPF's `process_born` gives the same): with the pid, its
/// identity.
pub(crate) fn process_born(pid: u32) -> Option<u64> {
    born_of_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The start time in a `/proc/PID/stat` line.
fn born_of_stat(stat: &str) -> Option<u64> {
    // The name, in parentheses, may hold spaces and parentheses itself.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// Checks what the agent needs before touching BPF, with messages that say
/// what is missing.
pub fn preflight() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "plainsight must run as root (uid 0): it loads BPF programs, attaches uprobes, \
             pauses processes with ptrace and reads every mapped file"
        );
    }
    check_capabilities(effective_capabilities()?)?;
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!(
            "this kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing): plainsight's BPF \
             programs are CO-RE and need a kernel built with CONFIG_DEBUG_INFO_BTF=y"
        );
    }
    crate::tracefs::ensure()
}

/// Capabilities: (number, name, what for). CAP_SYS_ADMIN stands in for the
/// first three (kernels before 5.8 and 5.9 have only it).
const NEEDED_CAPS: &[(u32, &str, &str)] = &[
    (39, "CAP_BPF", "load the BPF programs and maps"),
    (38, "CAP_PERFMON", "attach tracepoints and uprobes"),
    (
        40,
        "CAP_CHECKPOINT_RESTORE",
        "open mapped files through /proc/PID/map_files",
    ),
    (
        19,
        "CAP_SYS_PTRACE",
        "hold processes while their files are probed, read their maps",
    ),
    (2, "CAP_DAC_READ_SEARCH", "read every file a process maps"),
];
const CAP_SYS_ADMIN: u32 = 21;
/// Wanted, not needed: without them the agent says what it does instead.
const OPTIONAL_CAPS: &[(u32, &str, &str)] = &[
    (24, "CAP_SYS_RESOURCE", "the open-file limit stays as it is"),
    (23, "CAP_SYS_NICE", "the pause threads keep normal priority"),
];

/// The effective capability set (`CapEff` of /proc/self/status).
fn effective_capabilities() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("/proc/self/status")?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .context("no CapEff in /proc/self/status")?;
    u64::from_str_radix(hex.trim(), 16).context("CapEff in /proc/self/status")
}

/// Refuses to start without a needed capability, naming each missing one.
pub fn check_capabilities(eff: u64) -> Result<()> {
    let has = |n: u32| eff & (1u64 << n) != 0;
    let admin = has(CAP_SYS_ADMIN);
    let missing: Vec<String> = NEEDED_CAPS
        .iter()
        .filter(|(n, _, _)| {
            let stands_in = admin && [38, 39, 40].contains(n);
            !(has(*n) || stands_in)
        })
        .map(|(_, name, why)| format!("{name} ({why})"))
        .collect();
    if !missing.is_empty() {
        bail!("missing capabilities: {}", missing.join(", "));
    }
    for (n, name, then) in OPTIONAL_CAPS {
        if !has(*n) {
            log::warn!("{name} is missing: {then}");
        }
    }
    Ok(())
}

/// Raises the open-file limit: every uprobe is a file descriptor.
fn raise_fd_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 && r.rlim_cur < r.rlim_max {
        r.rlim_cur = r.rlim_max;
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) };
    }
}

/// The running agent's state, owned by the event loop's thread.
struct Agent<'k> {
    kernel: &'k Kernel,
    files: Files,
    /// Files attached at start (a warm start) that no process mapped yet:
    /// their first mapping is logged and reported as their first sight.
    warm: HashMap<FileId, Warmed>,
    pauser: Pauser,
    /// Jobs to the inspection workers, and what new workers take them
    /// from and report to (a worker stuck past the budget is replaced).
    inspect: Sender<Job>,
    work_rx: Receiver<Job>,
    results: Sender<Inspected>,
    inspect_settings: InspectSettings,
    /// Workers started to replace stuck ones.
    replaced: usize,
    /// Files reported again after BPF's `seen_files` forgot them.
    rereported: u64,
    /// Links to detach in the background.
    reaper: Sender<Vec<Link>>,
    /// Finds deleted or replaced files in the background (see `Sweeper`).
    sweeper: Sweeper,
    /// Prometheus metrics (`--metrics-addr`).
    metrics: Option<Arc<Metrics>>,
    /// The OTLP exporter (`--otlp-endpoint`).
    otlp: Option<Otlp>,
    capture: Rc<RefCell<Capture>>,
    explain: bool,
    /// Jobs of the start-up scan not released yet; `ready` is announced
    /// when none is left.
    startup_pending: usize,
    ready: bool,
    /// What was reported already (the log says what is new).
    reported: Counters,
    dropped_reported: u64,
    /// Something happened since the last sweep (records, files, jobs).
    active: bool,
    /// Return probes go per process (filters given).
    returns_per_process: bool,
    /// Server-name patterns were given.
    sni_filter: bool,
    /// JVMs get the Java agent (src/jvm).
    jvms: crate::jvm::Jvms,
    /// Files inspection found to be a JVM's `libjvm.so`.
    jvm_files: HashSet<FileId>,
    /// OTP crypto NIFs instrumented: their processes are watched as
    /// Erlang processes (bpf/erlang.bpf.h).
    erlang_files: HashSet<FileId>,
    java_enabled: bool,
    /// Files carrying TLS code, by (stack, captured): the exit summary.
    coverage_counts: BTreeMap<(&'static str, bool), u64>,
    /// Executable mappings that were no ELF file (JIT code).
    not_elf: u64,
}

/// Runs until SIGINT/SIGTERM.
pub fn run(s: Settings) -> Result<()> {
    preflight()?;
    raise_fd_limit();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let (metrics, otlp) = start_telemetry(&s.telemetry)?;
    let pipeline = Pipeline::new(&s.output)?.with_telemetry(TelemetrySink {
        metrics: metrics.clone(),
        otlp: otlp.as_ref().map(|o| o.sink.clone()),
    });
    if let Some(dir) = &s.inspect.cache_dir {
        // Placement at function entries finds other offsets.
        let variant = if s.inspect.inner { "" } else { ":entry" };
        match crate::inspect::store::Store::open(dir, variant) {
            Ok(st) => crate::inspect::cache::set_store(st),
            Err(e) => log::warn!("inspection cache on disk not used: {e:#}"),
        }
    }
    let plan = hooks::plan(s.kernel.tracepoints);
    log::info!("{}", plan.summary());
    let mut kernel = Kernel::load(&s.kernel, plan)?;
    log_patterns(&s);

    let (out_tx, out_rx) = crossbeam_channel::bounded::<Record>(OUTPUT_QUEUE);
    let out_thread = output::spawn(out_rx, pipeline)?;
    let (work_tx, work_rx) = crossbeam_channel::unbounded::<Job>();
    let (res_tx, res_rx) = crossbeam_channel::unbounded::<Inspected>();
    worker::start(&work_rx, &res_tx, &s.inspect);
    let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
    let pauser = Pauser::start(
        kernel.exec_events()?,
        kernel.return_requests()?,
        job_tx.clone(),
        s.pause.max_pause,
        s.pause.late_stop,
    )?;
    if let (Some(m), Ok(mut st)) = (&metrics, pauser.stats.lock()) {
        st.metrics = Some((m.pauses.clone(), m.pause_duration.clone()));
    }
    // Before discovery: a process mapping one of these finds it done.
    let warmed = warm_start(&kernel, &s);
    kernel.attach_discover()?;

    let patterns = s.kernel.patterns.iter().map(|p| p.to_string()).collect();
    let jvms = crate::jvm::Jvms::start(s.java.clone());
    let capture = Rc::new(RefCell::new(
        Capture::new(out_tx, patterns)
            .with_jvm_verdicts(jvms.verdicts())
            .with_container_filter(s.kernel.filter.containers.clone())
            .with_endpoint_filter(s.kernel.filter.endpoints())
            .with_cgroup_names(kernel.cgroup_names()?),
    ));
    let ring = data_rings(&kernel, &capture)?;
    let mut agent = Agent {
        kernel: &kernel,
        files: Files::default(),
        warm: HashMap::new(),
        pauser,
        inspect: work_tx,
        work_rx,
        results: res_tx,
        inspect_settings: s.inspect.clone(),
        replaced: 0,
        rereported: 0,
        reaper: attach::start_reaper(),
        sweeper: Sweeper::start(),
        metrics,
        otlp,
        capture,
        explain: s.inspect.explain,
        startup_pending: 0,
        ready: false,
        reported: Counters::default(),
        dropped_reported: 0,
        active: true,
        returns_per_process: s.kernel.returns_per_process(),
        sni_filter: !s.kernel.patterns.is_empty(),
        jvms,
        jvm_files: HashSet::new(),
        erlang_files: HashSet::new(),
        java_enabled: s.java.enabled,
        coverage_counts: BTreeMap::new(),
        not_elf: 0,
    };
    agent.adopt(warmed);
    // `job_tx` lives as long as the loop: the job channel never closes.
    agent.scan_running(&s, &job_tx);
    let ring_wake = ring_wakeups(&kernel)?;
    agent.event_loop(&stop, &job_rx, &res_rx, &ring, &ring_wake)?;
    agent.stop(ring, out_thread);
    output::outcome()
}

/// "3 captured (openssl 2, boringssl 1), 1 not captured (erlang 1)".
fn coverage_summary(counts: &BTreeMap<(&'static str, bool), u64>) -> String {
    let part = |captured: bool| {
        let by: Vec<String> = counts
            .iter()
            .filter(|((_, c), _)| *c == captured)
            .map(|((s, _), n)| format!("{s} {n}"))
            .collect();
        let total: u64 = counts
            .iter()
            .filter(|((_, c), _)| *c == captured)
            .map(|(_, n)| n)
            .sum();
        let what = if captured { "captured" } else { "not captured" };
        match by.is_empty() {
            true => format!("0 {what}"),
            false => format!("{total} {what} ({})", by.join(", ")),
        }
    };
    format!("{}, {}", part(true), part(false))
}

/// The entry points probed in a file, by name, each once.
pub fn entry_points(insp: &Inspection) -> String {
    let mut names: Vec<&str> = Vec::new();
    for t in &insp.targets {
        if !names.contains(&t.point.symbol()) {
            names.push(t.point.symbol());
        }
    }
    names.join(" ")
}

fn log_patterns(s: &Settings) {
    if s.kernel.patterns.is_empty() {
        return;
    }
    let list: Vec<_> = s.kernel.patterns.iter().map(|p| p.to_string()).collect();
    log::info!(
        "capturing connections whose server name matches {}{}",
        list.join(", "),
        if s.kernel.capture_no_sni {
            ", and connections without a server name"
        } else {
            ""
        }
    );
}

/// The two capture objects' ring buffers, read on this thread.
fn data_rings<'k>(k: &'k Kernel, capture: &Rc<RefCell<Capture>>) -> Result<RingBuffer<'k>> {
    let mut rb = RingBufferBuilder::new();
    for (map, what) in [
        (&k.openssl.maps.data_events, "openssl data ring buffer"),
        (&k.statictls.maps.data_events, "statictls data ring buffer"),
    ] {
        let c = capture.clone();
        rb.add(map, move |rec: &[u8]| {
            c.borrow_mut().on_record(rec);
            0
        })
        .context(what)?;
    }
    rb.build().context("data ring buffers")
}

impl Agent<'_> {
    /// Processes already running: their mapped files are inspected (they
    /// are not paused).
    fn scan_running(&mut self, s: &Settings, jobs: &Sender<Job>) {
        let me = std::process::id();
        for pid in discover::all_pids() {
            let comm = discover::comm(pid).unwrap_or_default();
            if pid == me || !s.kernel.filter.wants(pid, &comm) {
                continue;
            }
            for m in discover::exec_mappings(pid) {
                // Marks the file seen, so that BPF reports no more of it;
                // the job goes through the same queue as BPF's.
                self.kernel.claim(m.file);
                self.startup_pending += 1;
                let _ = jobs.send(Job {
                    pid,
                    file: m.file,
                    source: abi::EXEC_SOURCE_MMAP,
                    comm: comm.clone(),
                    paused: false,
                    startup: true,
                    ticket: 0,
                });
            }
        }
        if self.startup_pending == 0 {
            self.announce_ready();
        }
    }

    fn announce_ready(&mut self) {
        self.ready = true;
        eprintln!(
            "plainsight: ready ({} TLS files instrumented)",
            self.files.instrumented().count()
        );
    }

    fn event_loop(
        &mut self,
        stop: &AtomicBool,
        jobs: &Receiver<Job>,
        results: &Receiver<Inspected>,
        ring: &RingBuffer<'_>,
        ring_wake: &Receiver<()>,
    ) -> Result<()> {
        let mut last_sweep = Instant::now();
        let mut last_stats = Instant::now();
        let mut last_records = Instant::now();
        let mut follow_up = false;
        // The output thread stops on a write error (or a closed stdout):
        // then the agent stops too, cleanly, instead of capturing for no one.
        while !stop.load(Ordering::Relaxed) && !output::has_stopped() {
            let poll = if last_records.elapsed() < BUSY_FOR {
                POLL_BUSY
            } else {
                POLL_IDLE
            };
            crossbeam_channel::select! {
                recv(jobs) -> j => if let Ok(j) = j { self.admit(j) },
                recv(results) -> r => match r {
                    Ok(r) => self.inspected(r),
                    Err(_) => bail!("inspection workers stopped"),
                },
                recv(ring_wake) -> _ => {},
                default(poll) => {}
            }
            for j in jobs.try_iter() {
                self.admit(j);
            }
            for r in results.try_iter() {
                self.inspected(r);
            }
            self.give_up_overdue();
            if ring.consume_raw() > 0 {
                last_records = Instant::now();
                self.active = true;
            }
            let since = last_sweep.elapsed();
            if (since >= SWEEP_EVERY && (self.active || follow_up)) || since >= IDLE_SWEEP_EVERY {
                last_sweep = Instant::now();
                // The sweeper answers at the next sweep: one more after
                // activity collects what this one started.
                follow_up = std::mem::take(&mut self.active);
                self.sweep();
            }
            if last_stats.elapsed() >= Duration::from_secs(1) {
                last_stats = Instant::now();
                self.report_losses();
            }
        }
        Ok(())
    }

    /// A process mapped a file (from the pause dispatcher and tracers, or the start-up scan).
    fn admit(&mut self, job: Job) {
        self.active = true;
        if job.source == abi::EXEC_SOURCE_RETURNS {
            // BPF's request: the process's start time in `file.dev` (the
            // asking library's inode in `file.ino` says nothing more here).
            self.attach_returns(job.pid, job.file.dev, &job.comm);
            if job.paused {
                self.pauser.done(job.pid);
            }
            return;
        }
        if job.source == abi::EXEC_SOURCE_WATCHED {
            // Another process mapped a JVM's library, or a file on the
            // static-TLS path (never held: its probes are in).
            if self.jvm_files.contains(&job.file) {
                self.jvms.seen(job.pid, &job.comm);
            } else if self.files.is_static(job.file) {
                let erlang = self.erlang_files.contains(&job.file);
                self.kernel.watch_static(job.file, job.pid, erlang);
            }
            return;
        }
        if self.jvm_files.contains(&job.file) {
            // A JVM running at start-up, its library known already.
            self.jvms.seen(job.pid, &job.comm);
        }
        match self.files.admit(job) {
            Admit::Inspect(job) => {
                if let Err(e) = self.inspect.send(job) {
                    // No worker left: never keep a process held for it.
                    self.release(e.into_inner());
                }
            }
            Admit::Waiting => {}
            Admit::Release(job) => {
                if let Some(w) = self.warm.remove(&job.file) {
                    self.first_use(&job, w);
                } else if job.startup {
                    // Running before the agent, after another process
                    // had this file done.
                    self.returns_for_all_connections(&job);
                } else {
                    // Reported again by BPF: its LRU `seen_files` evicted
                    // the file. Mark it again, or every mapping of it
                    // would be reported (and held).
                    self.rereported += 1;
                    match self.files.is_static(job.file) {
                        true => self.kernel.mark_watched(job.file),
                        false => self.kernel.mark_done(job.file),
                    }
                }
                self.release(job);
            }
        }
    }

    /// Takes the files a warm start attached: done, with their probes, until
    /// a process maps one ([`Agent::first_use`]).
    fn adopt(&mut self, warmed: Vec<(Warmed, Probes)>) {
        for (w, probes) in warmed {
            if w.insp.library == Some(TlsLibrary::Erlang) {
                self.erlang_files.insert(w.id);
            }
            self.files
                .finish(w.id, Some(probes), is_static_tls(&w.insp));
            self.warm.insert(w.id, w);
        }
    }

    /// The first process to map a file attached at start: what its first
    /// sight would have logged, reported and turned on, without attaching.
    fn first_use(&mut self, job: &Job, w: Warmed) {
        let known = format!("{}, attached at start", w.known);
        self.announce(job, &w.path, &w.insp, Some(&known));
        self.settle(job.file, is_static_tls(&w.insp), &[job]);
    }

    /// Inspections past their time budget (a crafted file, a file on a
    /// stalled filesystem): the file is left uninstrumented and reported,
    /// its processes released, and the stuck worker replaced (a bounded
    /// number of times).
    fn give_up_overdue(&mut self) {
        for (file, jobs) in self.files.overdue(self.inspect_settings.budget) {
            let who = jobs
                .first()
                .map(|j| format!("{}[{}]", j.comm, j.pid))
                .unwrap_or_default();
            log::warn!(
                "inspecting file {file} (mapped by {who}) took longer than {} ms: left uninstrumented",
                self.inspect_settings.budget.as_millis()
            );
            self.kernel.mark_done(file);
            for job in jobs {
                self.release(job);
            }
            if self.replaced < worker::MAX_REPLACED {
                self.replaced += 1;
                worker::start_one(
                    worker::WORKERS + self.replaced,
                    &self.work_rx,
                    &self.results,
                    &self.inspect_settings,
                );
            } else {
                log::error!(
                    "{} inspection workers are stuck: files queue until one is free",
                    worker::MAX_REPLACED
                );
            }
        }
    }

    /// An inspection must read more of its file from the disk than a
    /// process may be held for: its process is resumed now, and probed
    /// when the inspection ends.
    fn resume_early(&mut self, job: &Job) {
        if self.files.resume(job) {
            log::debug!(
                "pid {} resumed while {} is read from the disk (probed when its inspection ends)",
                job.pid,
                job.file
            );
            self.pauser.done(job.pid);
        }
    }

    /// A worker is done with a job.
    fn inspected(&mut self, mut r: Inspected) {
        let file = r.job.file;
        if let Outcome::Resume = r.outcome {
            return self.resume_early(&r.job);
        }
        if !self.files.current(&r.job) {
            // Given up already (its jobs were released then).
            log::debug!("late inspection result for {file} ignored");
            return;
        }
        if !self.files.held(&r.job) {
            r.job.paused = false; // resumed already
        }
        if let Outcome::Gone = r.outcome {
            log::debug!("pid {} exited before {file} could be inspected", r.job.pid);
            // Another process mapping it takes over, or BPF reports it anew.
            match self.files.gone(file) {
                Some(next) => {
                    if let Err(e) = self.inspect.send(next) {
                        self.release(e.into_inner());
                    }
                }
                None => self.kernel.forget(file),
            }
            self.release(r.job);
            return;
        }
        let (probes, static_tls) = match &r.outcome {
            Outcome::Tls { shown, insp, .. }
                if insp.library == Some(TlsLibrary::Erlang) && !self.kernel.erlang_walks() =>
            {
                // Nothing attached: its records could not be tied to their
                // sockets, so none would be emitted.
                let why = "Erlang's records are tied to their sockets on the send/receive syscall \
                           tracepoints; this kernel's hooks are tcp_sendmsg/tcp_recvmsg trampolines";
                log::info!("{shown} (pid {}): {why}", r.job.pid);
                self.coverage(&r.job, shown, "erlang", false, why.to_string());
                (None, false)
            }
            Outcome::Tls {
                file,
                shown,
                insp,
                known,
            } => {
                let rpp = self.returns_per_process;
                match attach_inspection(self.kernel, rpp, r.job.file, r.job.pid, file, shown, insp)
                {
                    Ok(probes) => {
                        self.announce(&r.job, shown, insp, known.as_deref());
                        (Some(probes), is_static_tls(insp))
                    }
                    Err(e) => {
                        log::warn!("cannot instrument {shown}: {e:#}");
                        let stack = insp.library.map_or("unknown", |l| l.stack());
                        let why = "its probes could not be attached".to_string();
                        self.coverage(&r.job, shown, stack, false, why);
                        (None, false)
                    }
                }
            }
            Outcome::Dark { shown, dark } => {
                // Once a file: later processes mapping it are not reported.
                log::info!(
                    "{shown} (pid {}) carries {} TLS that cannot be captured: {}",
                    r.job.pid,
                    dark.stack,
                    dark.why
                );
                self.coverage(&r.job, shown, dark.stack, false, dark.why.clone());
                (None, false)
            }
            Outcome::NotElf => {
                // JIT code in a memfd file (V8, the JVM, Erlang's BEAM).
                self.not_elf += 1;
                log::debug!(
                    "pid {}: an executable mapping that is not an ELF file",
                    r.job.pid
                );
                (None, false)
            }
            Outcome::Jvm { shown } => {
                let (captured, reason) = match self.java_enabled {
                    true => (true, "plainsight's Java agent, loaded into each JVM"),
                    false => (false, "--no-java"),
                };
                self.coverage(&r.job, shown, "jsse", captured, reason.to_string());
                (None, false)
            }
            Outcome::Failed(e) => {
                log::warn!("cannot inspect {e}");
                (None, false)
            }
            _ => (None, false),
        };
        if static_tls
            && matches!(&r.outcome, Outcome::Tls { insp, .. } if insp.library == Some(TlsLibrary::Erlang))
        {
            self.erlang_files.insert(file);
        }
        let waiting = self.files.finish(file, probes, static_tls);
        if let Outcome::Jvm { .. } = r.outcome {
            // Every later mapping of it is news of a JVM.
            self.kernel.mark_watched(file);
            self.jvm_files.insert(file);
            for job in std::iter::once(&r.job).chain(&waiting) {
                self.jvms.seen(job.pid, &job.comm);
            }
        } else {
            let first: Vec<&Job> = std::iter::once(&r.job).chain(&waiting).collect();
            self.settle(file, static_tls, &first);
        }
        self.release(r.job);
        for job in waiting {
            self.release(job);
        }
    }

    /// A file is done, and `first` are the processes that mapped it
    /// first: BPF reports no more of its mappings (or, on the static-TLS
    /// path, reports each without holding it), and the kernel hooks its
    /// probes rely on are attached.
    fn settle(&mut self, file: FileId, static_tls: bool, first: &[&Job]) {
        if static_tls {
            // A module (a shared object) on the static-TLS path: every
            // process that maps it later must have its sockets watched,
            // which for executables the exec hook does by itself.
            self.kernel.mark_watched(file);
            self.kernel.enable_static_io();
        } else {
            self.kernel.mark_done(file);
        }
        if !self.returns_per_process && self.files.has_per_process_returns(file) {
            // Every connection of this C-API library may be wanted (no
            // filters, or return probes everywhere): its sockets too.
            self.kernel.enable_tls_socket();
        }
        for job in first {
            self.returns_for_all_connections(job);
        }
    }

    /// With process filters only, every connection of `job`'s process is
    /// wanted, so each would ask for its file's return probes at its first
    /// call. The process is held (or was running before the agent): they
    /// are attached now.
    fn returns_for_all_connections(&mut self, job: &Job) {
        if self.returns_per_process
            && !self.sni_filter
            && self.files.has_per_process_returns(job.file)
        {
            if let Some(born) = process_born(job.pid) {
                self.attach_returns(job.pid, born, &job.comm);
            }
        }
    }

    /// Sends a coverage record for a file first classified, and counts it.
    fn coverage(
        &mut self,
        job: &Job,
        shown: &str,
        stack: &'static str,
        captured: bool,
        reason: String,
    ) {
        *self.coverage_counts.entry((stack, captured)).or_default() += 1;
        self.capture.borrow_mut().coverage(crate::record::Coverage {
            ts_ns: crate::record::mono_now(),
            pid: job.pid,
            comm: job.comm.clone(),
            file: shown.to_string(),
            stack,
            captured,
            reason,
        });
    }

    /// Process `pid` (started at `born`, in clock ticks since boot) has or
    /// will have a wanted connection: attaches the return probes of all its
    /// TLS libraries to it (NSS's calls are in another library than the
    /// name that asks), and tells BPF which it has.
    fn attach_returns(&mut self, pid: u32, born: u64, comm: &str) {
        let t0 = Instant::now();
        // A wanted connection: its socket is looked for from now on.
        self.kernel.enable_tls_socket();
        // A process may have tens of thousands of executable mappings.
        let mut done: HashSet<FileId> = HashSet::new();
        let mut attached: Vec<String> = Vec::new();
        for m in discover::exec_mappings(pid) {
            if !done.insert(m.file) {
                continue;
            }
            let Some(p) = self.files.probes_mut(m.file) else {
                continue;
            };
            let Some(r) = p.returns.as_mut() else {
                continue;
            };
            if !matches!(r.by_pid.get(&pid), Some((b, _)) if *b == born) {
                match attach::attach_file(
                    self.kernel,
                    &r.file,
                    m.file.ino,
                    &r.insp,
                    attach::Scope::Returns(pid),
                ) {
                    Ok(links) => {
                        // A pid reused by a new process: the old links
                        // were for a task that is gone.
                        if let Some((_, old)) = r.by_pid.insert(pid, (born, links)) {
                            let _ = self.reaper.send(old);
                        }
                        attached.push(p.path.clone());
                    }
                    Err(e) => {
                        log::warn!(
                            "pid {pid}: cannot attach the return probes of {}: {e:#}",
                            p.path
                        );
                        continue;
                    }
                }
            }
            self.kernel.mark_returns_asked(pid, m.file.ino, born);
        }
        if !attached.is_empty() {
            log::debug!(
                "{comm}[{pid}] has a wanted connection: return probes of {} attached for it in {} us",
                attached.join(", "),
                t0.elapsed().as_micros()
            );
        }
    }

    /// A file's probes are in, for `job`'s process (the first to map it):
    /// logged, the ClientHello hooks turned on where its stack needs them,
    /// and reported by a coverage record.
    fn announce(&mut self, job: &Job, shown: &str, insp: &Inspection, known: Option<&str>) {
        self.log_instrumented(job, shown, insp, known);
        if names_only_by_hello(insp) {
            self.kernel.enable_client_hello();
        }
        let stack = insp.library.map_or("unknown", |l| l.stack());
        self.coverage(job, shown, stack, true, entry_points(insp));
    }

    fn log_instrumented(&self, job: &Job, shown: &str, insp: &Inspection, known: Option<&str>) {
        // "name" or "name x3" for repeated probe points (Go RETs).
        let mut names: Vec<String> = Vec::new();
        for chunk in insp.targets.chunk_by(|a, b| a.symbol == b.symbol) {
            let sym = &chunk[0].symbol;
            names.push(match chunk.len() {
                1 => sym.clone(),
                n => format!("{sym} x{n}"),
            });
        }
        let ctr = crate::container::of_pid(job.pid)
            .map_or(String::new(), |c| format!(" in container {}", c.short()));
        log::info!(
            "instrumented {shown}{ctr} [{}] ({}, {}{}) {} by {}[{}]: {}",
            job.file,
            insp.library.map(|l| l.to_string()).unwrap_or_default(),
            match insp.linkage {
                Linkage::Exported => "exported",
                Linkage::Static => "statically linked",
            },
            known.map_or(String::new(), |k| format!(", known content: {k}")),
            if job.source == abi::EXEC_SOURCE_EXEC {
                "executed"
            } else {
                "mapped"
            },
            job.comm,
            job.pid,
            names.join(" ")
        );
        if self.returns_per_process && attach::has_per_process_returns(insp) {
            let line = format!(
                "  return probes in {shown}: per process, attached when a process has a wanted \
                 connection (filters given; --host-wide-returns keeps them in every process)"
            );
            if self.explain {
                log::info!("{line}");
            } else {
                log::debug!("{line}");
            }
        }
        for t in &insp.targets {
            let Some(p) = &t.place else { continue };
            if self.explain {
                log::info!("  probe placement in {shown}: {}", p.explain(t));
            } else {
                log::debug!("  probe placement in {shown}: {}", p.explain(t));
            }
        }
    }

    /// A job is over: its process runs on (watched if its file is on the
    /// static-TLS path).
    fn release(&mut self, job: Job) {
        if self.files.is_static(job.file) {
            let erlang = self.erlang_files.contains(&job.file);
            self.kernel.watch_static(job.file, job.pid, erlang);
        }
        if job.paused {
            self.pauser.done(job.pid);
        }
        if job.startup {
            self.startup_pending -= 1;
            if self.startup_pending == 0 && !self.ready {
                self.announce_ready();
            }
        }
    }

    /// Forgets exited processes, and detaches the probes of files deleted
    /// or replaced that no process maps any more.
    fn sweep(&mut self) {
        let mut known: HashMap<u32, bool> = HashMap::new();
        let mut alive = |pid: u32| {
            *known
                .entry(pid)
                .or_insert_with(|| Path::new(&format!("/proc/{pid}")).exists())
        };
        self.kernel.sweep_exited(&mut alive);
        let gone = self.files.forget_exited(&mut alive);
        if !gone.is_empty() {
            let _ = self.reaper.send(gone);
        }
        if self.reported.sni_full > 0 && self.kernel.clear_sni_overflow() {
            log::info!("server-name decision maps have room again: connections without one are captured again");
        }
        self.capture.borrow_mut().forget_exited(&mut alive);
        let instrumented = self
            .files
            .instrumented()
            .map(|(id, p, m)| (id, p.to_string(), m));
        let (stale, mappers) = self.sweeper.exchange(instrumented.collect());
        for (file, pid) in mappers {
            self.files.set_mapper(file, pid);
        }
        for file in stale {
            if !self.files.is_instrumented(file) {
                continue;
            }
            self.warm.remove(&file);
            if let Some(p) = self.files.remove(file) {
                log::debug!("{} [{file}] is gone: detaching its probes", p.path);
                let _ = self.reaper.send(p.into_links());
            }
            self.kernel.forget(file);
        }
    }

    /// Logs records lost since the last report.
    fn report_losses(&mut self) {
        let dropped = self.capture.borrow().dropped();
        if dropped > self.dropped_reported {
            log::warn!(
                "dropped {} records: the output cannot keep up ({dropped} in all)",
                dropped - self.dropped_reported,
            );
            self.dropped_reported = dropped;
        }
        let c = self.kernel.counters();
        self.update_metrics(&c, dropped);
        if c.sni_full > self.reported.sni_full {
            log::warn!(
                "{} server-name decisions not stored: too many connections with a server name \
                 at once ({} in all); connections without one are not captured until there is room",
                c.sni_full - self.reported.sni_full,
                c.sni_full
            );
        }
        if c.returns_missed > self.reported.returns_missed {
            log::warn!(
                "{} wanted TLS calls returned without a return probe in place: their plaintext is \
                 lost ({} in all; a process's first calls before its return probes went in)",
                c.returns_missed - self.reported.returns_missed,
                c.returns_missed
            );
        }
        if c.erlang_untied > self.reported.erlang_untied {
            log::warn!(
                "{} Erlang TLS records not captured: their key could not be tied to its socket \
                 exactly ({} in all; a connection that started before the agent, or more records \
                 before the tie than are held)",
                c.erlang_untied - self.reported.erlang_untied,
                c.erlang_untied
            );
        }
        if c.data_lost > self.reported.data_lost {
            log::warn!(
                "lost {} plaintext records: the ring buffer was full ({} in all; see --ring-buffer-mib)",
                c.data_lost - self.reported.data_lost,
                c.data_lost
            );
        }
        self.reported = c;
    }

    /// Orderly stop: resume everything, drain, detach probes, report.
    /// Sets the health metrics that mirror totals kept elsewhere.
    fn update_metrics(&self, c: &Counters, dropped: u64) {
        let Some(m) = &self.metrics else { return };
        Metrics::set_total(&m.lost_records, c.data_lost + dropped);
        Metrics::set_total(&m.output_dropped, dropped);
        let (files, probes) = self.files.instrumented_count();
        m.files_instrumented.set(files as i64);
        m.probes_attached.set(probes as i64);
    }

    fn stop(mut self, ring: RingBuffer<'_>, out_thread: std::thread::JoinHandle<()>) {
        self.jvms.stop();
        self.pauser.shutdown();
        let _ = ring.consume_raw();
        drop(ring);
        self.capture.borrow_mut().flush();
        let by_output = self.capture.borrow().dropped();
        let (sockets_unknown, conns_evicted) = self.capture.borrow().socket_stats();
        let counters = self.kernel.counters();
        let tracked = self.kernel.tracked_connections();
        let tracked_sockets = self.kernel.tracked_sockets();
        // The capture holds the last sender of the output queue.
        drop(self.capture);
        let _ = out_thread.join();
        if let Some(o) = self.otlp.take() {
            o.finish();
        }
        drop(self.reaper);
        attach::detach_all(self.files.into_links());
        self.pauser.report();
        eprintln!(
            "plainsight: lost records: {} plaintext ({by_output} of them dropped by a slow output), \
             {} file discovery; {} unreadable buffers; {} server-name decisions not stored; \
             {} files reported again after seen_files forgot them; {} Erlang records whose key \
             was never tied to its socket",
            counters.data_lost + by_output,
            counters.discover_lost,
            counters.unreadable,
            counters.sni_full,
            self.rereported,
            counters.erlang_untied
        );
        eprintln!(
            "plainsight: return probes: {} wanted calls returned without one in place, {} requests \
             for them lost",
            counters.returns_missed, counters.returns_lost
        );
        eprintln!("plainsight: connections tracked in the kernel at exit: {tracked}");
        eprintln!(
            "plainsight: TLS files: {}; {} executable mappings were no ELF file (JIT code)",
            coverage_summary(&self.coverage_counts),
            self.not_elf
        );
        if let Some(st) = crate::inspect::cache::store() {
            use std::sync::atomic::Ordering::Relaxed;
            eprintln!(
                "plainsight: inspection cache on disk: {} results found, {} written, {} corrupt \
                 entries ignored",
                st.found.load(Relaxed),
                st.written.load(Relaxed),
                st.corrupt.load(Relaxed)
            );
        }
        eprintln!(
            "plainsight: sockets: {sockets_unknown} connections with data whose socket stayed \
             unknown, {} sockets not remembered (map full), {conns_evicted} connections \
             forgotten for the bound, {tracked_sockets} tracked in the kernel at exit",
            counters.sock_full
        );
    }
}

/// Starts the metrics server and the OTLP exporter, as configured.
fn start_telemetry(t: &TelemetrySettings) -> Result<(Option<Arc<Metrics>>, Option<Otlp>)> {
    let metrics = match t.metrics_addr {
        Some(addr) => {
            let m = Arc::new(Metrics::new());
            let bound = metrics::serve(addr, m.clone())?;
            log::info!("metrics: http://{bound}/metrics");
            Some(m)
        }
        None => None,
    };
    let otlp = match &t.otlp {
        Some(o) => {
            log::info!(
                "OTLP: exporting spans{} to {} ({:?})",
                if o.logs { " and logs" } else { "" },
                escape::terminal(&o.endpoint),
                o.protocol
            );
            Some(Otlp::start(o.clone(), metrics.clone())?)
        }
        None => None,
    };
    Ok((metrics, otlp))
}

/// Whether `path` still names the file `id`, as process `mapper` sees it
/// (its root: a container's files are in their own mount namespace).
fn still_named(path: &str, id: FileId, mapper: u32) -> bool {
    let seen = format!("/proc/{mapper}/root{path}");
    std::fs::metadata(seen).is_ok_and(|m| FileId::of(&m) == id)
}

/// What the sweeper is given (file, path, a process that maps it) and what
/// it finds (files stale, and files whose mapper is gone with a process
/// that still maps them).
type SweepIn = Vec<(FileId, String, u32)>;
type SweepOut = (Vec<FileId>, Vec<(FileId, u32)>);

/// Looks for stale files on its own thread: a stat of a path can wait on
/// whatever filesystem the path now leads through (a FUSE mount placed on
/// it, say), and the event loop must never wait. One sweep at a time; while
/// one is stuck, none is started and nothing is found stale.
struct Sweeper {
    ask: Sender<SweepIn>,
    found: Receiver<SweepOut>,
}

impl Sweeper {
    fn start() -> Sweeper {
        let (ask, asked) = crossbeam_channel::bounded::<SweepIn>(1);
        let (tell, found) = crossbeam_channel::bounded(1);
        let spawned = std::thread::Builder::new()
            .name("sweep".into())
            .spawn(move || {
                for files in asked {
                    if tell.send(stale_files(files)).is_err() {
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            log::warn!("no sweep thread ({e}): probes of deleted files stay until exit");
        }
        Sweeper { ask, found }
    }

    /// Returns what the last sweep found, and starts the next one over
    /// `files` unless one is still running.
    fn exchange(&self, files: SweepIn) -> SweepOut {
        let stale = self.found.try_recv().unwrap_or_default();
        let _ = self.ask.try_send(files);
        stale
    }
}

/// Files that were deleted (or replaced) and that no process maps any more:
/// their probes can never fire again.
fn stale_files(files: SweepIn) -> SweepOut {
    let candidates: Vec<FileId> = files
        .into_iter()
        .filter(|(id, path, mapper)| !still_named(path, *id, *mapper))
        .map(|(id, _, _)| id)
        .collect();
    if candidates.is_empty() {
        return (candidates, Vec::new());
    }
    let mut mapped = HashMap::new();
    for pid in discover::all_pids() {
        for m in discover::exec_mappings(pid) {
            mapped.insert(m.file, pid);
        }
    }
    let (kept, stale): (Vec<FileId>, Vec<FileId>) =
        candidates.into_iter().partition(|f| mapped.contains_key(f));
    let mappers = kept.into_iter().map(|f| (f, mapped[&f])).collect();
    (stale, mappers)
}

/// A file attached by the warm start (its probes go to [`Files`]).
struct Warmed {
    id: FileId,
    path: String,
    insp: Inspection,
    /// Its content identity, for the log.
    known: String,
}

/// Longest wait for the warm start's opening of cached paths.
const WARM_DEADLINE: Duration = Duration::from_secs(2);

/// Attaches the probes of the TLS files the cache on disk knows, where they
/// are still at a path the agent saw them at, with the same content
/// (`inspect::warm`). Before discovery is attached: no process is held
/// meanwhile, and one that maps such a file later finds it done.
fn warm_start(kernel: &Kernel, s: &Settings) -> Vec<(Warmed, Probes)> {
    use crate::inspect::{cache, warm};
    let Some(store) = cache::store().filter(|_| s.inspect.warm_start) else {
        return Vec::new();
    };
    let t0 = Instant::now();
    let found = warm::open_known(store, WARM_DEADLINE);
    let me = std::process::id();
    let rpp = s.kernel.returns_per_process();
    let mut out: Vec<(Warmed, Probes)> = Vec::new();
    for f in found.files {
        if out.iter().any(|(w, _)| w.id == f.id) {
            continue; // one file at two cached paths
        }
        if f.insp.library == Some(TlsLibrary::Erlang) && !kernel.erlang_walks() {
            continue; // its first sight says why it is not attached
        }
        // The agent as the mapper: the path resolves in its own root.
        match attach_inspection(kernel, rpp, f.id, me, &f.file, &f.path, &f.insp) {
            Ok(probes) => {
                cache::shared()
                    .remember(f.key.clone(), cache::Known::Tls(Arc::new(f.insp.clone())));
                let w = Warmed {
                    id: f.id,
                    known: f.key.short(),
                    path: f.path,
                    insp: f.insp,
                };
                out.push((w, probes));
            }
            Err(e) => log::warn!("warm start: cannot instrument {}: {e:#}", f.path),
        }
    }
    if !out.is_empty() || found.skipped > 0 || found.timed_out {
        log::info!(
            "warm start: {} known TLS files attached in {} ms{}{}",
            out.len(),
            t0.elapsed().as_millis(),
            match found.skipped {
                0 => String::new(),
                n => format!(", {n} cached paths gone or changed"),
            },
            if found.timed_out {
                ", the rest given up (opening them took too long)"
            } else {
                ""
            }
        );
    }
    for (w, _) in &out {
        log::debug!(
            "warm start: {} [{}] ({})",
            w.path,
            w.id,
            entry_points(&w.insp)
        );
    }
    out
}

/// Whether an instrumented file's processes are watched on the static-TLS
/// path (their connections found by the ClientHello they send).
fn is_static_tls(insp: &Inspection) -> bool {
    matches!(
        insp.library,
        Some(TlsLibrary::AwsLc | TlsLibrary::Ring | TlsLibrary::GoTls | TlsLibrary::Erlang)
    )
}

/// Attaches the probes of `insp` to `file` (file `id`, mapped by process
/// `mapper`): all of them, or, with `returns_per_process`, the entries
/// alone (what attaching its return probes to one process later needs is
/// kept with them).
fn attach_inspection(
    kernel: &Kernel,
    returns_per_process: bool,
    id: FileId,
    mapper: u32,
    file: &std::fs::File,
    shown: &str,
    insp: &Inspection,
) -> Result<Probes> {
    let t0 = Instant::now();
    let per_process = returns_per_process && attach::has_per_process_returns(insp);
    let scope = if per_process {
        attach::Scope::EntriesOnly
    } else {
        attach::Scope::All
    };
    let links = attach::attach_file(kernel, file, id.ino, insp, scope)?;
    if t0.elapsed() > Duration::from_millis(2) {
        log::debug!("attaching {shown} took {} us", t0.elapsed().as_micros());
    }
    let returns = match per_process.then(|| file.try_clone()) {
        Some(Ok(file)) => Some(PerProcess {
            file,
            insp: insp.clone(),
            by_pid: HashMap::new(),
        }),
        Some(Err(e)) => {
            log::warn!("{shown}: no return probes per process: {e}");
            None
        }
        None => None,
    };
    Ok(Probes {
        links,
        path: shown.to_string(),
        mapper,
        returns,
    })
}

/// An OpenSSL-family library with no probed call that sets a client's
/// server name (no `SSL_ctrl`, no `SSL_set_tlsext_host_name`): its clients
/// are named by the ClientHello they send.
fn names_only_by_hello(insp: &Inspection) -> bool {
    matches!(
        insp.library,
        Some(TlsLibrary::OpenSsl | TlsLibrary::BoringSsl)
    ) && !insp.targets.iter().any(|t| {
        matches!(
            t.point,
            crate::probes::ProbePoint::SslCtrl | crate::probes::ProbePoint::SslSetHostName
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_a_stat_line() {
        let line = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 116 0 0 0 0 0 0 0 20 0 1 0 \
                    987654 2449408 220 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        assert_eq!(born_of_stat(line), Some(987654));
        let me = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(born_of_stat(&me).is_some_and(|t| t > 0), "{me}");
        assert_eq!(born_of_stat("4242 (no end"), None);
        assert_eq!(born_of_stat("4242 (short) S 1 2 3"), None);
    }

    #[test]
    fn capabilities_are_named_when_missing() {
        let all: u64 = [39, 38, 40, 19, 2, 24, 23].iter().map(|n| 1u64 << n).sum();
        assert!(check_capabilities(all).is_ok());
        let e = check_capabilities(all & !(1 << 19))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "missing capabilities: CAP_SYS_PTRACE (hold processes while their files are probed, read their maps)"
        );
        // CAP_SYS_ADMIN stands in for CAP_BPF, CAP_PERFMON and CAP_CHECKPOINT_RESTORE.
        let old = (1u64 << 21) | (1 << 19) | (1 << 2);
        assert!(check_capabilities(old).is_ok());
        let e = check_capabilities(1 << 39).unwrap_err().to_string();
        assert!(
            e.contains("CAP_PERFMON") && e.contains("CAP_DAC_READ_SEARCH"),
            "{e}"
        );
    }
}
