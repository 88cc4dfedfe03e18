//! JVMs: JSSE, the JDK's TLS, is written in Java, so no native library
//! carries its plaintext. Each JVM the filters let through gets
//! plainsight's Java agent (jvm/), loaded with HotSpot's dynamic attach
//! ([`attach`]); the agent hands JSSE's plaintext to a native library of
//! ours (jvm/native) whose functions the usual uprobe path instruments
//! (bpf/jsse.bpf.h) when the JVM maps it.
//!
//! Finding JVMs: inspection recognises `libjvm.so`, and BPF reports every
//! later process that maps that file without holding it
//! (`EXEC_SOURCE_WATCHED`); JVMs running at start-up come from the start-up
//! scan. Each is handled once (by pid and start time), on a thread of its
//! own: an attach may wait seconds for a JVM to install its signal
//! handlers, and must hold up neither the agent nor other JVMs.

pub mod attach;
pub mod files;

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::config::Filter;
use files::JvmDir;

/// How long one JVM's attach may take in all: the wait for its SIGQUIT
/// handler (a JVM seen at its first mapping has none yet) and for its
/// listener included.
const ATTACH_DEADLINE: Duration = Duration::from_secs(20);
/// Attaches in flight at most; more JVMs wait their turn.
const MAX_ATTACHING: usize = 8;
/// JVMs remembered at most (handled ones; the oldest half is forgotten).
const MAX_KNOWN: usize = 4096;
/// The property our Java agent sets (jvm/agent, Agent.PROPERTY).
const PROPERTY: &str = "plainsight.jsse";

/// What the manager needs to know.
#[derive(Debug, Clone)]
pub struct JvmSettings {
    /// `--no-java`: never attach.
    pub enabled: bool,
    /// The process filters: only JVMs they let through are attached.
    pub filter: Filter,
}

enum Msg {
    Seen(u32, String),
    /// The files of a JVM being attached (made before the agent is loaded:
    /// its first verdicts can come before the attach ends).
    Files(u32, Arc<JvmDir>),
    /// An attach ended: loaded or not.
    Done(u32, bool),
    /// What BPF decided for a JVM connection (pid, connection, wanted).
    Verdict(u32, u64, bool),
    Stop,
}

/// Where the capture hands JSSE verdicts (`JSSE_VERDICT` records) to the
/// JVM manager, which writes them into the JVM's verdict file.
#[derive(Clone)]
pub struct VerdictSink(Sender<Msg>);

/// Messages queued for the manager past which verdicts are dropped: a
/// process that announces connections without end (any process may map a
/// library exporting our functions) cannot grow the agent's memory. A
/// dropped verdict only leaves that connection handing its bytes to the
/// probe, which still decides them.
const MAX_QUEUED: usize = 65536;

impl VerdictSink {
    /// Connection `conn` of JVM `pid` is (not) wanted.
    pub fn send(&self, pid: u32, conn: u64, wanted: bool) {
        if self.0.len() < MAX_QUEUED {
            let _ = self.0.send(Msg::Verdict(pid, conn, wanted));
        }
    }
}

/// The JVM manager's handle, owned by the agent's event loop.
pub struct Jvms {
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl Jvms {
    /// Starts the manager thread.
    pub fn start(s: JvmSettings) -> Jvms {
        let (tx, rx) = crossbeam_channel::unbounded();
        let me = tx.clone();
        let thread = std::thread::Builder::new()
            .name("jvms".into())
            .spawn(move || Manager::new(s, me).run(&rx))
            .map_err(|e| log::error!("cannot start the JVM thread: {e}: Java is not captured"))
            .ok();
        Jvms { tx, thread }
    }

    /// Where the capture sends JSSE verdicts.
    pub fn verdicts(&self) -> VerdictSink {
        VerdictSink(self.tx.clone())
    }

    /// Process `pid` (named `comm`) runs a JVM.
    pub fn seen(&self, pid: u32, comm: &str) {
        let _ = self.tx.send(Msg::Seen(pid, comm.to_string()));
    }

    /// Stops the manager; the files given to JVMs are removed.
    pub fn stop(mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The manager thread's state.
struct Manager {
    s: JvmSettings,
    tx: Sender<Msg>,
    /// JVMs handled, by pid: their start time (clock ticks), and the files
    /// they were given.
    known: HashMap<u32, (u64, Option<Arc<JvmDir>>)>,
    /// Attaches in flight, and JVMs waiting for a free slot.
    attaching: usize,
    queue: Vec<(u32, String)>,
}

impl Manager {
    fn new(s: JvmSettings, tx: Sender<Msg>) -> Manager {
        Manager {
            s,
            tx,
            known: HashMap::new(),
            attaching: 0,
            queue: Vec::new(),
        }
    }

    fn run(mut self, rx: &Receiver<Msg>) {
        let mut last_check = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(Msg::Seen(pid, comm)) => self.seen(pid, comm),
                Ok(Msg::Files(pid, dir)) => self.files(pid, dir),
                Ok(Msg::Done(pid, ok)) => self.done(pid, ok),
                Ok(Msg::Verdict(pid, conn, wanted)) => {
                    if let Some((_, Some(d))) = self.known.get(&pid) {
                        d.set_verdict(conn, wanted);
                    }
                }
                Ok(Msg::Stop) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            }
            if last_check.elapsed() >= Duration::from_secs(1) {
                last_check = Instant::now();
                self.forget_exited();
            }
        }
        // Attaches in flight finish by their deadline; their files are
        // removed as they report.
        let until = Instant::now() + ATTACH_DEADLINE;
        while self.attaching > 0 && Instant::now() < until {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Msg::Files(pid, dir)) => self.files(pid, dir),
                Ok(Msg::Done(pid, ok)) => self.done(pid, ok),
                _ => {}
            }
        }
        for (_, (_, dir)) in self.known.drain() {
            if let Some(d) = dir {
                d.remove();
            }
        }
    }

    fn seen(&mut self, pid: u32, comm: String) {
        if !self.s.enabled || !self.s.filter.wants(pid, &comm) {
            return;
        }
        let Some(born) = crate::agent::process_born(pid) else {
            return;
        };
        if matches!(self.known.get(&pid), Some((b, _)) if *b == born) {
            return;
        }
        if let Some((_, Some(old))) = self.known.insert(pid, (born, None)) {
            old.remove();
        }
        if self.known.len() > MAX_KNOWN {
            self.forget_exited();
        }
        if self.attaching >= MAX_ATTACHING {
            self.queue.push((pid, comm));
            return;
        }
        self.spawn(pid, comm);
    }

    fn spawn(&mut self, pid: u32, comm: String) {
        let tx = self.tx.clone();
        let started = std::thread::Builder::new()
            .name(format!("jvm-{pid}"))
            .spawn(move || {
                let ok = attach_one(pid, &comm, &tx);
                let _ = tx.send(Msg::Done(pid, ok));
            });
        match started {
            Ok(_) => self.attaching += 1,
            Err(e) => log::warn!("java: pid {pid}: cannot start its attach thread: {e}"),
        }
    }

    fn files(&mut self, pid: u32, dir: Arc<JvmDir>) {
        match self.known.get_mut(&pid) {
            Some((_, slot)) => *slot = Some(dir),
            None => dir.remove(),
        }
    }

    fn done(&mut self, pid: u32, ok: bool) {
        self.attaching = self.attaching.saturating_sub(1);
        if !ok {
            if let Some((_, slot)) = self.known.get_mut(&pid) {
                if let Some(d) = slot.take() {
                    d.remove();
                }
            }
        }
        if let Some((pid, comm)) = self.queue.pop() {
            self.spawn(pid, comm);
        }
    }

    /// JVMs that exited: their files go.
    fn forget_exited(&mut self) {
        self.known.retain(|pid, (born, dir)| {
            let alive = crate::agent::process_born(*pid) == Some(*born);
            if !alive {
                if let Some(d) = dir.take() {
                    log::debug!("java: pid {pid} exited: its files removed");
                    d.remove();
                }
            }
            alive
        });
        if self.known.len() > MAX_KNOWN {
            let mut pids: Vec<u32> = self.known.keys().copied().collect();
            pids.sort_unstable();
            for p in pids.into_iter().take(MAX_KNOWN / 2) {
                if let Some((_, Some(d))) = self.known.remove(&p) {
                    d.remove();
                }
            }
        }
    }
}

/// Attaches plainsight's Java agent to JVM `pid`; its files go to the
/// manager (`tx`) before the load. Whether it was loaded; every outcome is
/// logged once.
fn attach_one(pid: u32, comm: &str, tx: &Sender<Msg>) -> bool {
    let t0 = Instant::now();
    let deadline = t0 + ATTACH_DEADLINE;
    let jvm = match attach::inspect(pid) {
        Ok(j) => j,
        Err(e) => {
            log::debug!("java: pid {pid} ({comm}) not attached: {e:#}");
            return false;
        }
    };
    let props = match attach::properties(&jvm, deadline) {
        Ok(p) => p,
        Err(e) => {
            log::warn!("java: {comm}[{pid}] not attached: {e}");
            return false;
        }
    };
    let version = format!(
        "{} {}",
        props.get("java.vm.name").map_or("?", |s| s.as_str()),
        props.get("java.version").map_or("?", |s| s.as_str())
    );
    let version = crate::escape::terminal(&version);
    if let Some(v) = props.get(PROPERTY) {
        log::info!(
            "java: {comm}[{pid}] ({version}) has plainsight's Java agent already ({}): not loaded again",
            crate::escape::terminal(v)
        );
        return false;
    }
    let dir = match JvmDir::create(pid, jvm.nspid, jvm.uid, jvm.gid) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            log::warn!("java: {comm}[{pid}] not attached: {e:#}");
            return false;
        }
    };
    let _ = tx.send(Msg::Files(pid, dir.clone()));
    let options = format!("{},{}", dir.lib, dir.verdicts);
    if let Err(e) = attach::load_agent(&jvm, &dir.jar, &options, deadline) {
        log::warn!("java: {comm}[{pid}] ({version}) not attached: {e}");
        return false;
    }
    let woven = attach::properties(&jvm, deadline)
        .ok()
        .and_then(|p| p.get(PROPERTY).cloned())
        .unwrap_or_default();
    log::info!(
        "java: plainsight's Java agent loaded into {comm}[{pid}] ({version}) in {} ms: {}",
        t0.elapsed().as_millis(),
        crate::escape::terminal(&woven)
    );
    true
}
