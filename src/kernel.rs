//! The BPF objects: loading them with the hook plan and the filters, the
//! kernel hooks they attach, and everything user space does to their maps
//! (a file done or forgotten, a static-TLS process watched, counters, the
//! connections of exited processes).

use std::cell::RefCell;
use std::mem::MaybeUninit;

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, MapHandle, OpenObject, ProgramMut};

use crate::abi;
use crate::bpf::discover::{DiscoverSkel, DiscoverSkelBuilder};
use crate::bpf::openssl::{OpensslSkel, OpensslSkelBuilder};
use crate::bpf::statictls::{StatictlsSkel, StatictlsSkelBuilder};
use crate::config::{Filter, KernelSettings};
use crate::discover::FileId;
use crate::hooks::{self, Hook, Plan};
use crate::probes::Object;
use crate::sni::Pattern;

/// Entries of the server-name decision maps (`conns`, `go_conns`).
const DECISIONS: usize = 65_536;

/// `watched_pids`' value for an Erlang process (ERL_WATCHED in
/// bpf/erlang.bpf.h).
const ERLANG_WATCHED: u8 = 2;

/// BPF_RB_NO_WAKEUP: the reader polls the data ring buffers on a timer
/// instead of being woken per record.
const BPF_RB_NO_WAKEUP: u32 = 1;

/// The reader is woken when a data ring is this fraction full (it polls
/// otherwise): the rest of the ring holds what comes while it wakes.
pub const WAKE_AT_FRACTION: u32 = 4;

/// The three BPF objects and their kernel hooks.
pub struct Kernel {
    pub discover: DiscoverSkel<'static>,
    pub openssl: OpensslSkel<'static>,
    pub statictls: StatictlsSkel<'static>,
    plan: Plan,
    /// Tracepoints and trampolines attached for good (discover, process
    /// tracking).
    links: Vec<Link>,
    /// The static-TLS send/receive hooks: attached once a static TLS
    /// executable is found, so that hosts without one pay nothing per
    /// read and write.
    static_io: RefCell<Vec<Link>>,
    /// The C-API libraries' socket hook (`enable_tls_socket`).
    tls_socket: RefCell<Vec<Link>>,
    /// The ClientHello-sent hooks (`enable_client_hello`).
    client_hello: RefCell<Vec<Link>>,
}

/// Plaintext and discovery records lost, summed over CPUs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Data records the capture ring buffers had no room for.
    pub data_lost: u64,
    /// MMAP_EXEC_FILE records lost.
    pub discover_lost: u64,
    /// User buffers the capture programs could not read.
    pub unreadable: u64,
    /// Server-name decisions not stored because their map was full.
    pub sni_full: u64,
    /// Requests for per-process return probes the ring had no room for
    /// (asked again at the process's next call).
    pub returns_lost: u64,
    /// Wanted calls whose return was never seen (their plaintext is lost).
    pub returns_missed: u64,
    /// Sockets learned but not remembered: conn_socks was full.
    pub sock_full: u64,
    /// Erlang records not emitted: their key was never tied to its socket.
    pub erlang_untied: u64,
}

/// Storage for one object, kept for the life of the agent.
fn storage() -> &'static mut MaybeUninit<OpenObject> {
    Box::leak(Box::new(MaybeUninit::uninit()))
}

/// `.rodata` every object has (filter.h): who the agent is and which
/// processes it looks at.
macro_rules! filter_rodata {
    ($ro:expr, $f:expr) => {{
        $ro.agent_tgid = std::process::id();
        $ro.filter_pids = u8::from(!$f.pids.is_empty());
        $ro.filter_comms = u8::from(!$f.comms.is_empty());
        $ro.filter_containers = u8::from(!$f.containers.is_empty());
    }};
}

/// `.rodata` of the capture objects (emit.h, sni.h) on top of the filter.
macro_rules! capture_rodata {
    ($ro:expr, $s:expr) => {{
        filter_rodata!($ro, $s.filter);
        $ro.max_capture = $s.max_capture;
        $ro.wakeup_flags = BPF_RB_NO_WAKEUP;
        $ro.wake_at = u64::from($s.ring_buffer_bytes / WAKE_AT_FRACTION);
        $ro.sni_filter = u8::from(!$s.patterns.is_empty());
        $ro.capture_no_sni = u8::from($s.capture_no_sni);
        $ro.filter_ports = u8::from(!$s.filter.ports.is_empty());
        $ro.filter_peers = u8::from(!$s.filter.peers.is_empty());
    }};
}

/// Leaves the programs of the hook paths not taken unloaded.
fn disable_unused(obj: &mut OpenObject, plan: &Plan) {
    let unused = plan.unused();
    for mut p in obj.progs_mut() {
        if unused.iter().any(|u| p.name() == *u) {
            p.set_autoload(false);
        }
    }
}

/// Fills an object's pid and process-name filters (filter.h).
fn fill_filters(
    pids: &dyn MapCore,
    comms: &dyn MapCore,
    containers: &dyn MapCore,
    f: &Filter,
) -> Result<()> {
    for c in &f.containers {
        containers
            .update(&Filter::container_key(c).to_ne_bytes(), &[1], MapFlags::ANY)
            .context("filling target_containers")?;
    }
    for pid in &f.pids {
        pids.update(&pid.to_ne_bytes(), &[1], MapFlags::ANY)
            .context("filling target_pids")?;
    }
    for c in &f.comms {
        comms
            .update(&Filter::comm_key(c), &[1], MapFlags::ANY)
            .context("filling target_comms")?;
    }
    Ok(())
}

/// Fills an object's --port and --peer filters (sock.bpf.h).
fn fill_endpoint_filters(ports: &dyn MapCore, peers: &dyn MapCore, f: &Filter) -> Result<()> {
    for p in &f.ports {
        ports
            .update(&p.to_ne_bytes(), &[1], MapFlags::ANY)
            .context("filling target_ports")?;
    }
    for p in &f.peers {
        peers
            .update(&p.trie_key(), &[1], MapFlags::ANY)
            .with_context(|| format!("filling target_peers with {p}"))?;
    }
    Ok(())
}

/// Stores the server-name patterns in an object's two tries (sni.h).
fn store_patterns(
    suffixes: &dyn MapCore,
    prefixes: &dyn MapCore,
    patterns: &[Pattern],
) -> Result<()> {
    for (i, p) in patterns.iter().enumerate() {
        let (is_prefix, key) = p.trie_key();
        let map = if is_prefix { prefixes } else { suffixes };
        map.update(&key, &(i as u32 + 1).to_ne_bytes(), MapFlags::ANY)
            .with_context(|| format!("storing server-name pattern {p}"))?;
    }
    Ok(())
}

fn load_discover(s: &KernelSettings, plan: &Plan) -> Result<DiscoverSkel<'static>> {
    let mut open = DiscoverSkelBuilder::default()
        .open(storage())
        .context("opening BPF object discover")?;
    let ro = open
        .maps
        .rodata_data
        .as_deref_mut()
        .context("discover has no .rodata")?;
    filter_rodata!(ro, s.filter);
    disable_unused(open.open_object_mut(), plan);
    let skel = open.load().with_context(|| {
        format!(
            "loading BPF object discover (sched_process_exec; mmap via {})",
            plan.mmap
        )
    })?;
    fill_filters(
        &skel.maps.target_pids,
        &skel.maps.target_comms,
        &skel.maps.target_containers,
        &s.filter,
    )?;
    Ok(skel)
}

fn load_openssl(s: &KernelSettings) -> Result<OpensslSkel<'static>> {
    let mut open = OpensslSkelBuilder::default()
        .open(storage())
        .context("opening BPF object openssl")?;
    open.maps
        .data_events
        .set_max_entries(s.ring_buffer_bytes)
        .context("sizing the data ring buffer")?;
    let ro = open
        .maps
        .rodata_data
        .as_deref_mut()
        .context("openssl has no .rodata")?;
    capture_rodata!(ro, s);
    ro.returns_per_process = u8::from(s.returns_per_process());
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ro.tick_ns = 1_000_000_000 / u64::try_from(ticks).unwrap_or(100).max(1);
    let skel = open
        .load()
        .context("loading BPF object openssl (uprobes on SSL_*, gnutls_*)")?;
    fill_filters(
        &skel.maps.target_pids,
        &skel.maps.target_comms,
        &skel.maps.target_containers,
        &s.filter,
    )?;
    store_patterns(
        &skel.maps.sni_suffixes,
        &skel.maps.sni_prefixes,
        &s.patterns,
    )?;
    fill_endpoint_filters(&skel.maps.target_ports, &skel.maps.target_peers, &s.filter)?;
    Ok(skel)
}

fn load_statictls(s: &KernelSettings, plan: &Plan) -> Result<StatictlsSkel<'static>> {
    let mut open = StatictlsSkelBuilder::default()
        .open(storage())
        .context("opening BPF object statictls")?;
    open.maps
        .data_events
        .set_max_entries(s.ring_buffer_bytes)
        .context("sizing the static-TLS ring buffer")?;
    let ro = open
        .maps
        .rodata_data
        .as_deref_mut()
        .context("statictls has no .rodata")?;
    capture_rodata!(ro, s);
    disable_unused(open.open_object_mut(), plan);
    let skel = open.load().with_context(|| {
        format!(
            "loading BPF object statictls (ClientHello via {}, ServerHello via {}, AEAD, ring and Go uprobes)",
            plan.tcp_send, plan.tcp_recv
        )
    })?;
    fill_filters(
        &skel.maps.target_pids,
        &skel.maps.target_comms,
        &skel.maps.target_containers,
        &s.filter,
    )?;
    store_patterns(
        &skel.maps.sni_suffixes,
        &skel.maps.sni_prefixes,
        &s.patterns,
    )?;
    fill_endpoint_filters(&skel.maps.target_ports, &skel.maps.target_peers, &s.filter)?;
    Ok(skel)
}

/// The key of a file in `seen_files` and `static_files`.
pub fn file_key(f: FileId) -> [u8; std::mem::size_of::<abi::FileKey>()] {
    let mut k = [0u8; std::mem::size_of::<abi::FileKey>()];
    k[std::mem::offset_of!(abi::FileKey, dev)..][..8].copy_from_slice(&f.dev.to_ne_bytes());
    k[std::mem::offset_of!(abi::FileKey, ino)..][..8].copy_from_slice(&f.ino.to_ne_bytes());
    k
}

/// A per-CPU counter of a `stats` map, summed.
fn stat_sum(map: &dyn MapCore, idx: u32) -> u64 {
    match map.lookup_percpu(&idx.to_ne_bytes(), MapFlags::ANY) {
        Ok(Some(per_cpu)) => per_cpu
            .iter()
            .filter_map(|v| {
                v.get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_ne_bytes)
            })
            .sum(),
        _ => 0,
    }
}

impl Kernel {
    /// Loads the three objects with the hook plan, the filters and the
    /// server-name patterns, and attaches the static-TLS process tracking.
    /// Discovery is attached later ([`Kernel::attach_discover`]), once its
    /// reader runs.
    pub fn load(s: &KernelSettings, plan: Plan) -> Result<Kernel> {
        let discover = load_discover(s, &plan)?;
        let openssl = load_openssl(s)?;
        let statictls = load_statictls(s, &plan)?;
        let mut k = Kernel {
            discover,
            openssl,
            statictls,
            plan,
            links: Vec::new(),
            static_io: RefCell::default(),
            tls_socket: RefCell::default(),
            client_hello: RefCell::default(),
        };
        let links = k.attach_hooks(hooks::STATIC_PROCESS)?;
        k.links.extend(links);
        let links = k.attach_hooks(hooks::SERVER_HELLO)?;
        k.links.extend(links);
        Ok(k)
    }

    /// A program of the capture objects, by name.
    pub fn program(&self, object: Object, name: &str) -> Option<ProgramMut<'_>> {
        let obj = match object {
            Object::Openssl => self.openssl.object(),
            Object::Statictls => self.statictls.object(),
        };
        obj.progs_mut().find(|p| p.name() == name)
    }

    /// Attaches kernel hooks (programs of discover, statictls or openssl).
    fn attach_hooks(&self, list: &[Hook]) -> Result<Vec<Link>> {
        let mut links = Vec::new();
        for h in list {
            let prog = [
                self.discover.object(),
                self.statictls.object(),
                self.openssl.object(),
            ]
            .into_iter()
            .find_map(|o| o.progs_mut().find(|p| p.name() == h.program))
            .with_context(|| format!("no BPF program {}", h.program))?;
            links.push(prog.attach().with_context(|| {
                format!(
                    "cannot attach {} ({} {}) for {}",
                    h.program, h.kind, h.target, h.spec
                )
            })?);
        }
        Ok(links)
    }

    /// Starts reporting executable files (exec and mmap hooks).
    pub fn attach_discover(&mut self) -> Result<()> {
        let list = self.plan.discover();
        let links = self.attach_hooks(&list)?;
        self.links.extend(links);
        log::info!("kernel programs attached: {}", hooks::list(&list));
        Ok(())
    }

    /// Attaches the hook that finds C-API connections' sockets, once: when
    /// a first connection of such a library is wanted (a host where none
    /// is pays nothing per syscall). A failure is logged: capture goes on
    /// without endpoints on that path.
    pub fn enable_tls_socket(&self) {
        let done = "a TLS library has a wanted connection";
        if let Err(e) = self.attach_once(&self.tls_socket, hooks::TLS_SOCKET, done) {
            log::error!("{e:#}: connections of TLS libraries get no endpoints");
        }
    }

    /// Attaches the hooks that name a client by the ClientHello it sends,
    /// once: when a library that cannot be told the name through a probed
    /// call is instrumented. A failure is logged: such clients stay
    /// unnamed.
    pub fn enable_client_hello(&self) {
        let done = "an OpenSSL-family library without SSL_ctrl";
        if let Err(e) = self.attach_once(&self.client_hello, hooks::CLIENT_HELLO, done) {
            log::error!("{e:#}: clients of libraries without SSL_ctrl stay unnamed");
        }
    }

    /// Whether the static-TLS send and receive hooks are the syscall
    /// tracepoints, where Erlang's records are walked
    /// (bpf/erlang_sock.bpf.h): the trampolines see one segment of a vector
    /// write.
    pub fn erlang_walks(&self) -> bool {
        matches!(
            (self.plan.tcp_send, self.plan.tcp_recv),
            (hooks::Path::Tracepoint, hooks::Path::Tracepoint)
        )
    }

    /// Attaches the static-TLS send/receive hooks, once.
    pub fn enable_static_io(&self) {
        let done = "static TLS executable found";
        if let Err(e) = self.attach_once(&self.static_io, &self.plan.static_io(), done) {
            log::warn!("static TLS capture unavailable: {e:#}");
        }
    }

    /// Attaches `list` into `slot` unless it is there already (a failed
    /// attach is tried again next time); logs why (`why`) and what.
    fn attach_once(&self, slot: &RefCell<Vec<Link>>, list: &[Hook], why: &str) -> Result<()> {
        if !slot.borrow().is_empty() {
            return Ok(());
        }
        *slot.borrow_mut() = self.attach_hooks(list)?;
        log::info!("{why}: kernel programs attached: {}", hooks::list(list));
        Ok(())
    }

    /// The ring buffer the pause dispatcher reads MMAP_EXEC_FILE from.
    pub fn exec_events(&self) -> Result<MapHandle> {
        MapHandle::try_from(&self.discover.maps.exec_events).context("exec_events map")
    }

    /// The ring buffer of requests for per-process return probes
    /// (openssl.bpf.c, want_returns), read by the pause dispatcher too.
    pub fn return_requests(&self) -> Result<MapHandle> {
        MapHandle::try_from(&self.openssl.maps.return_requests).context("return_requests map")
    }

    /// Records that process `pid` (started at `born`, the kernel's start
    /// time) has the return probes of library `ino`: its calls there do
    /// not ask again.
    pub fn mark_returns_asked(&self, pid: u32, ino: u64, born: u64) {
        type K = abi::ReturnsKey;
        let mut key = [0u8; std::mem::size_of::<K>()];
        key[std::mem::offset_of!(K, pid)..][..4].copy_from_slice(&pid.to_ne_bytes());
        key[std::mem::offset_of!(K, file)..][..8].copy_from_slice(&ino.to_ne_bytes());
        let _ = self
            .openssl
            .maps
            .returns_asked
            .update(&key, &born.to_ne_bytes(), MapFlags::ANY);
    }

    /// The capture objects' `cgroup_names` maps (emit.h).
    pub fn cgroup_names(&self) -> Result<Vec<MapHandle>> {
        Ok(vec![
            MapHandle::try_from(&self.openssl.maps.cgroup_names).context("cgroup_names map")?,
            MapHandle::try_from(&self.statictls.maps.cgroup_names).context("cgroup_names map")?,
        ])
    }

    /// Marks a file seen (being inspected) unless BPF reported it already:
    /// processes found at start-up. True if this call marked it.
    pub fn claim(&self, file: FileId) -> bool {
        let pending = [abi::FILE_PENDING];
        self.discover
            .maps
            .seen_files
            .update(&file_key(file), &pending, MapFlags::NO_EXIST)
            .is_ok()
    }

    /// The file is inspected (and instrumented if it carries TLS): BPF
    /// reports no more mappings of it.
    pub fn mark_done(&self, file: FileId) {
        let done = [abi::FILE_DONE];
        if let Err(e) = self
            .discover
            .maps
            .seen_files
            .update(&file_key(file), &done, MapFlags::ANY)
        {
            log::warn!("cannot mark file {file} done: {e}");
        }
    }

    /// The file is a JVM's library or on the static-TLS path: BPF reports
    /// every process that maps it (`EXEC_SOURCE_WATCHED`), never to be held.
    pub fn mark_watched(&self, file: FileId) {
        let watched = [abi::FILE_WATCHED];
        if let Err(e) =
            self.discover
                .maps
                .seen_files
                .update(&file_key(file), &watched, MapFlags::ANY)
        {
            log::warn!("cannot watch file {file}: {e}");
        }
    }

    /// Forgets a file: the next mapping of it is reported again.
    pub fn forget(&self, file: FileId) {
        let key = file_key(file);
        let _ = self.discover.maps.seen_files.delete(&key);
        let _ = self.statictls.maps.static_files.delete(&key);
    }

    /// Watches `pid` (and future executions of `file`) on the static-TLS
    /// path; `erlang`: as an Erlang process (`file` is OTP's crypto NIF),
    /// whose TLS sockets bpf/erlang_sock.bpf.h walks.
    pub fn watch_static(&self, file: FileId, pid: u32, erlang: bool) {
        let m = &self.statictls.maps;
        let _ = m.static_files.update(&file_key(file), &[1], MapFlags::ANY);
        let value = if erlang { ERLANG_WATCHED } else { 1 };
        let _ = m
            .watched_pids
            .update(&pid.to_ne_bytes(), &[value], MapFlags::ANY);
    }

    /// Records and buffers lost, summed over both capture objects.
    pub fn counters(&self) -> Counters {
        let (o, s) = (&self.openssl.maps.stats, &self.statictls.maps.stats);
        Counters {
            data_lost: stat_sum(o, abi::STAT_DATA_LOST) + stat_sum(s, abi::STAT_DATA_LOST),
            discover_lost: stat_sum(&self.discover.maps.stats, abi::STAT_DISCOVER_LOST),
            unreadable: stat_sum(o, abi::STAT_READ_FAILED) + stat_sum(s, abi::STAT_READ_FAILED),
            sni_full: stat_sum(o, abi::STAT_SNI_FULL) + stat_sum(s, abi::STAT_SNI_FULL),
            returns_lost: stat_sum(o, abi::STAT_RETURNS_LOST),
            returns_missed: stat_sum(o, abi::STAT_RETURN_MISSED),
            sock_full: stat_sum(o, abi::STAT_SOCK_FULL),
            erlang_untied: stat_sum(s, abi::STAT_ERLANG_UNTIED),
        }
    }

    /// Clears the server-name overflow flags (sni.h) of the objects whose
    /// decision map has room again (at most three quarters full); returns
    /// whether it cleared one.
    pub fn clear_sni_overflow(&self) -> bool {
        let zero = 0u32.to_ne_bytes();
        let mut cleared = false;
        for (flag, decisions) in [
            (&self.openssl.maps.sni_overflow, &self.openssl.maps.conns),
            (
                &self.statictls.maps.sni_overflow,
                &self.statictls.maps.go_conns,
            ),
        ] {
            let set = matches!(flag.lookup(&zero, MapFlags::ANY), Ok(Some(v)) if v.iter().any(|b| *b != 0));
            if !set {
                continue;
            }
            if decisions.keys().count() <= DECISIONS * 3 / 4 {
                cleared |= flag
                    .update(&zero, &0u32.to_ne_bytes(), MapFlags::ANY)
                    .is_ok();
            }
        }
        cleared
    }

    /// Connections the openssl object still tracks.
    pub fn tracked_connections(&self) -> usize {
        self.openssl.maps.conns.keys().count()
    }

    /// Sockets of C-API connections the kernel remembers (conn_socks;
    /// entries go at SSL_free and with their process).
    pub fn tracked_sockets(&self) -> usize {
        self.openssl.maps.conn_socks.keys().count()
    }

    /// Deletes the entries of processes that exited from the per-connection
    /// maps (all keyed by a leading u32 pid).
    pub fn sweep_exited(&self, alive: &mut dyn FnMut(u32) -> bool) {
        let s = &self.statictls.maps;
        let maps: [&dyn MapCore; 8] = [
            &self.openssl.maps.conns,
            &self.openssl.maps.conn_socks,
            &s.go_socks,
            &self.openssl.maps.returns_asked,
            &s.key_ctxs,
            &s.ring_keys,
            &s.hello_sent,
            &s.go_conns,
        ];
        for map in maps {
            let dead: Vec<Vec<u8>> = map
                .keys()
                .filter(|k| k.len() >= 4 && !alive(u32::from_ne_bytes([k[0], k[1], k[2], k[3]])))
                .collect();
            for k in dead {
                let _ = map.delete(&k);
            }
        }
    }
}
