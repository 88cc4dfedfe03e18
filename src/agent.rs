//! The agent: wires discover -> pause -> inspect -> attach -> capture -> output.

use std::cell::RefCell;
use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, MapHandle, OpenObject, RingBufferBuilder};

use crate::abi::{self, Event};
use crate::bpf::discover::{DiscoverSkel, DiscoverSkelBuilder};
use crate::bpf::openssl::{OpensslSkel, OpensslSkelBuilder};
use crate::bpf::statictls::{StatictlsSkel, StatictlsSkelBuilder};
use crate::capture::Reassembler;
use crate::cli::Cli;
use crate::discover::{self, FileId};
use crate::hooks::{self, Plan};
use crate::inspect::{self, Inspection, Linkage, ProbePoint};
use crate::output::{Pipeline, Record};
use crate::pause::{Job, Pauser};
use crate::sni::{self, Pattern};

/// BPF_RB_NO_WAKEUP: the reader polls the data ring buffer on a timer instead
/// of being woken per record.
const BPF_RB_NO_WAKEUP: u32 = 1;
const INSPECT_WORKERS: usize = 2;

/// `seen_files` values (bpf/discover.bpf.c).
const FILE_PENDING: u8 = 1;
const FILE_DONE: u8 = 2;

/// Files being inspected, shared by the inspection workers.
type Inflight = Arc<std::sync::Mutex<std::collections::HashSet<FileId>>>;

/// What inspecting one job found.
enum Outcome {
    /// Another job inspects this file: wait for it.
    Duplicate,
    Tls {
        path: PathBuf,
        shown: String,
        insp: Inspection,
    },
    NotTls,
    /// The mapping is gone (process exited): let BPF report the file again.
    Gone,
    Failed(String),
}

struct Inspected {
    job: Job,
    outcome: Outcome,
}

/// Checks what the agent needs before touching BPF, with messages that say
/// what is missing.
pub fn preflight() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "plainsight must run as root: it loads BPF programs, attaches uprobes \
             and pauses processes with ptrace (CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_SYS_ADMIN)"
        );
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!(
            "this kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing): plainsight's BPF \
             programs are CO-RE and need a kernel built with CONFIG_DEBUG_INFO_BTF=y"
        );
    }
    ensure_tracefs()?;
    Ok(())
}

/// Tracepoints are found through tracefs; mount it where libbpf looks if the
/// system has not.
fn ensure_tracefs() -> Result<()> {
    let dir = Path::new("/sys/kernel/tracing");
    if dir.join("events").exists() || Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    let src = std::ffi::CString::new("tracefs").expect("no NUL");
    let target = std::ffi::CString::new("/sys/kernel/tracing").expect("no NUL");
    // SAFETY: valid NUL-terminated strings; no data argument.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        bail!(
            "tracefs is not mounted and mounting it on /sys/kernel/tracing failed ({}): \
             the tracepoint hooks need it",
            std::io::Error::last_os_error()
        );
    }
    log::info!("mounted tracefs on /sys/kernel/tracing");
    Ok(())
}

fn comm_key(name: &str) -> [u8; 16] {
    let mut k = [0u8; 16];
    let b = name.as_bytes();
    let n = b.len().min(15);
    k[..n].copy_from_slice(&b[..n]);
    k
}

fn fill_filters(pids_map: &dyn MapCore, comms_map: &dyn MapCore, cli: &Cli) -> Result<()> {
    for pid in &cli.pids {
        pids_map
            .update(&pid.to_ne_bytes(), &[1], MapFlags::ANY)
            .context("filling target_pids")?;
    }
    for c in &cli.comms {
        comms_map
            .update(&comm_key(c), &[1], MapFlags::ANY)
            .context("filling target_comms")?;
    }
    Ok(())
}

/// The `.rodata` every object has (filter.h): who the agent is and which
/// processes it looks at.
macro_rules! filter_rodata {
    ($ro:expr, $cli:expr) => {{
        $ro.agent_tgid = std::process::id();
        $ro.filter_pids = u8::from(!$cli.pids.is_empty());
        $ro.filter_comms = u8::from(!$cli.comms.is_empty());
    }};
}

/// The `.rodata` of the capture objects (emit.h, sni.h) on top of the filter.
macro_rules! capture_rodata {
    ($ro:expr, $cli:expr, $patterns:expr) => {{
        filter_rodata!($ro, $cli);
        $ro.max_capture = $cli.max_capture as u32;
        $ro.wakeup_flags = BPF_RB_NO_WAKEUP;
        $ro.sni_filter = u8::from(!$patterns.is_empty());
        $ro.capture_no_sni = u8::from($cli.capture_no_sni);
    }};
}

/// Size of each data ring buffer, in bytes.
fn ring_buffer_bytes(cli: &Cli) -> Result<u32> {
    let rb = cli.ring_buffer_mib;
    if rb == 0 || !rb.is_power_of_two() || rb > 1024 {
        bail!("--ring-buffer-mib must be a power of two between 1 and 1024, not {rb}");
    }
    Ok(rb * 1024 * 1024)
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

/// Leaves the programs of the paths not taken unloaded (hooks.rs decides).
fn disable_unused(obj: &mut OpenObject, plan: &Plan) {
    let unused = plan.unused();
    for mut p in obj.progs_mut() {
        if unused.iter().any(|u| p.name() == *u) {
            p.set_autoload(false);
        }
    }
}

fn load_discover(cli: &Cli, plan: &Plan) -> Result<DiscoverSkel<'static>> {
    let storage: &'static mut MaybeUninit<OpenObject> = Box::leak(Box::new(MaybeUninit::uninit()));
    let mut open = DiscoverSkelBuilder::default()
        .open(storage)
        .context("opening BPF object discover")?;
    let ro = open
        .maps
        .rodata_data
        .as_deref_mut()
        .context("discover has no .rodata")?;
    filter_rodata!(ro, cli);
    disable_unused(open.open_object_mut(), plan);
    let skel = open.load().with_context(|| {
        format!(
            "loading BPF object discover (sched_process_exec; mmap via {})",
            plan.mmap
        )
    })?;
    fill_filters(&skel.maps.target_pids, &skel.maps.target_comms, cli)?;
    Ok(skel)
}

fn load_openssl(cli: &Cli, patterns: &[Pattern]) -> Result<OpensslSkel<'static>> {
    let storage: &'static mut MaybeUninit<OpenObject> = Box::leak(Box::new(MaybeUninit::uninit()));
    let mut open = OpensslSkelBuilder::default()
        .open(storage)
        .context("opening BPF object openssl")?;
    open.maps
        .data_events
        .set_max_entries(ring_buffer_bytes(cli)?)
        .context("sizing the data ring buffer")?;
    let ro = open
        .maps
        .rodata_data
        .as_deref_mut()
        .context("openssl has no .rodata")?;
    capture_rodata!(ro, cli, patterns);
    let skel = open
        .load()
        .context("loading BPF object openssl (uprobes on SSL_*)")?;
    fill_filters(&skel.maps.target_pids, &skel.maps.target_comms, cli)?;
    store_patterns(&skel.maps.sni_suffixes, &skel.maps.sni_prefixes, patterns)?;
    Ok(skel)
}

fn attach_discover(skel: &DiscoverSkel<'_>, plan: &Plan) -> Result<Vec<Link>> {
    let mut links = Vec::new();
    for h in plan.discover() {
        let prog = match h.program {
            "discover_exec" => &skel.progs.discover_exec,
            "discover_mmap_fexit" => &skel.progs.discover_mmap_fexit,
            "discover_mmap_enter" => &skel.progs.discover_mmap_enter,
            "discover_mmap_exit" => &skel.progs.discover_mmap_exit,
            other => bail!("no program {other}"),
        };
        links.push(prog.attach().with_context(|| {
            format!(
                "cannot attach {} ({} {}) for {}",
                h.program, h.kind, h.target, h.spec
            )
        })?);
    }
    log::info!(
        "kernel programs attached: {}",
        hooks::list(&plan.discover())
    );
    Ok(links)
}

fn load_statictls(cli: &Cli, patterns: &[Pattern], plan: &Plan) -> Result<StatictlsSkel<'static>> {
    let storage: &'static mut MaybeUninit<OpenObject> = Box::leak(Box::new(MaybeUninit::uninit()));
    let mut open = StatictlsSkelBuilder::default()
        .open(storage)
        .context("opening BPF object statictls")?;
    open.maps
        .data_events
        .set_max_entries(ring_buffer_bytes(cli)?)
        .context("sizing the static-TLS ring buffer")?;
    let ro = open
        .maps
        .rodata_data
        .as_deref_mut()
        .context("statictls has no .rodata")?;
    capture_rodata!(ro, cli, patterns);
    disable_unused(open.open_object_mut(), plan);
    let skel = open.load().with_context(|| {
        format!(
            "loading BPF object statictls (ClientHello via {}, ServerHello via {}, EVP_AEAD_CTX uprobes)",
            plan.tcp_send, plan.tcp_recv
        )
    })?;
    fill_filters(&skel.maps.target_pids, &skel.maps.target_comms, cli)?;
    store_patterns(&skel.maps.sni_suffixes, &skel.maps.sni_prefixes, patterns)?;
    Ok(skel)
}

/// Attaches the tracepoints of the static-TLS path. `process` ones always;
/// the send/receive ones once a static TLS executable has been found.
fn attach_static_hooks(skel: &StatictlsSkel<'_>, process: bool, plan: &Plan) -> Result<Vec<Link>> {
    let p = &skel.progs;
    let mut links = Vec::new();
    let wanted = if process {
        hooks::STATIC_PROCESS.to_vec()
    } else {
        plan.static_io()
    };
    for h in &wanted {
        let prog = match h.program {
            "static_exec" => &p.static_exec,
            "static_fork" => &p.static_fork,
            "static_exit" => &p.static_exit,
            "static_write" => &p.static_write,
            "static_sendto" => &p.static_sendto,
            "static_writev" => &p.static_writev,
            "static_sendmsg" => &p.static_sendmsg,
            "static_read_enter" => &p.static_read_enter,
            "static_read_exit" => &p.static_read_exit,
            "static_recvfrom_enter" => &p.static_recvfrom_enter,
            "static_recvfrom_exit" => &p.static_recvfrom_exit,
            "static_tcp_send_entry" => &p.static_tcp_send_entry,
            "static_tcp_send_exit" => &p.static_tcp_send_exit,
            "static_tcp_recv_entry" => &p.static_tcp_recv_entry,
            "static_tcp_recv_exit" => &p.static_tcp_recv_exit,
            other => bail!("no program {other}"),
        };
        links.push(prog.attach().with_context(|| {
            format!(
                "cannot attach {} ({} {}) for {}",
                h.program, h.kind, h.target, h.spec
            )
        })?);
    }
    if !process {
        log::info!(
            "static TLS executable found: kernel programs attached: {}",
            hooks::list(&wanted)
        );
    }
    Ok(links)
}

/// Attaches the uprobes an inspection asks for; all or nothing.
fn attach_file(
    skel: &OpensslSkel<'_>,
    st: &StatictlsSkel<'_>,
    path: &Path,
    insp: &Inspection,
) -> Result<Vec<Link>> {
    let p = &skel.progs;
    let sp = &st.progs;
    let mut links = Vec::new();
    let mut groups: Vec<(&libbpf_rs::ProgramMut<'_>, bool, Vec<usize>, String)> = Vec::new();
    for t in &insp.targets {
        let (entry, ret) = match t.point {
            ProbePoint::AeadInit => (&sp.aead_init_entry, None),
            ProbePoint::AeadCleanup => (&sp.aead_cleanup_entry, None),
            ProbePoint::AeadSeal => (&sp.aead_seal_entry, None),
            ProbePoint::AeadSealScatter => (&sp.aead_seal_scatter_entry, None),
            ProbePoint::AeadOpen => (&sp.aead_open_entry, Some(&sp.aead_open_return)),
            ProbePoint::RingInit => (&sp.ring_init_entry, Some(&sp.ring_init_return)),
            ProbePoint::RingSeal => (&sp.ring_seal_entry, None),
            ProbePoint::RingOpen => (&sp.ring_open_entry, Some(&sp.ring_open_return)),
            ProbePoint::GnutlsSend => (&p.gnutls_send_entry, Some(&p.gnutls_send_return)),
            ProbePoint::GnutlsRecv => (&p.gnutls_recv_entry, Some(&p.gnutls_recv_return)),
            ProbePoint::GnutlsServerName => (&p.gnutls_server_name_entry, None),
            ProbePoint::GnutlsDeinit => (&p.gnutls_deinit_entry, None),
            ProbePoint::GoWrite => (&sp.go_write_entry, None),
            ProbePoint::GoWriteRet => (&sp.go_write_ret, None),
            ProbePoint::GoRead => (&sp.go_read_entry, None),
            ProbePoint::GoReadRet => (&sp.go_read_ret, None),
            ProbePoint::GoHandshake => (&sp.go_handshake_entry, None),
            ProbePoint::GoClose => (&sp.go_close_entry, None),
            ProbePoint::SslWrite => (&p.ssl_write_entry, Some(&p.ssl_write_return)),
            ProbePoint::SslRead => (&p.ssl_read_entry, Some(&p.ssl_read_return)),
            ProbePoint::SslWriteEx => (&p.ssl_write_ex_entry, Some(&p.ssl_write_ex_return)),
            ProbePoint::SslReadEx => (&p.ssl_read_ex_entry, Some(&p.ssl_read_ex_return)),
            ProbePoint::SslFree => (&p.ssl_free_entry, None),
            ProbePoint::SslCtrl => (&p.ssl_ctrl_entry, None),
            ProbePoint::SslSetHostName => (&p.ssl_set_host_name_entry, None),
        };
        // The entry program where `place` put it; the return program at
        // the inner return points when proven, else as a uretprobe.
        let mut points: Vec<(&libbpf_rs::ProgramMut<'_>, bool, usize)> =
            vec![(entry, false, t.entry_offset() as usize)];
        if let Some(r) = ret {
            match t.return_points() {
                Some(v) => points.extend(v.iter().map(|&o| (r, false, o as usize))),
                None => points.push((r, true, t.offset as usize)),
            }
        }
        for (prog, retprobe, off) in points {
            match groups
                .iter_mut()
                .find(|g| std::ptr::eq(g.0, prog) && g.1 == retprobe)
            {
                Some(g) => g.2.push(off),
                None => groups.push((prog, retprobe, vec![off], t.symbol.clone())),
            }
        }
    }
    // One uprobe_multi link per program (every RET of a Go function in one):
    // multi links are attached and detached without the perf-event path
    // and its global mutex, and their grace periods overlap.
    for (prog, retprobe, offsets, symbol) in groups {
        let what = || {
            format!(
                "{} {symbol} at {offsets:#x?} of {}",
                if retprobe { "uretprobe" } else { "uprobe" },
                path.display()
            )
        };
        if !NO_UPROBE_MULTI.load(Ordering::Relaxed) {
            let opts = libbpf_rs::UprobeMultiOpts {
                syms: Vec::new(),
                offsets: offsets.clone(),
                ref_ctr_offsets: Vec::new(),
                cookies: Vec::new(),
                retprobe,
                session: false,
                _non_exhaustive: (),
            };
            match prog.attach_uprobe_multi_with_opts(-1, path, "", opts) {
                Ok(l) => {
                    links.push(l);
                    continue;
                }
                // Kernels before 6.6 have no uprobe_multi links.
                Err(e) if e.kind() == libbpf_rs::ErrorKind::InvalidInput && links.is_empty() => {
                    log::info!("this kernel has no uprobe_multi links ({e}): using one perf-event uprobe per offset");
                    NO_UPROBE_MULTI.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(anyhow::Error::new(e).context(what())),
            }
        }
        for &off in &offsets {
            let opts = libbpf_rs::UprobeOpts {
                retprobe,
                ..Default::default()
            };
            links.push(
                prog.attach_uprobe_with_opts(-1, path, off, opts)
                    .with_context(what)?,
            );
        }
    }
    Ok(links)
}

/// Records waiting for the output thread at most.
const OUTPUT_QUEUE: usize = 32 * 1024;

/// Set once the kernel refused a uprobe_multi link (before 6.6).
static NO_UPROBE_MULTI: AtomicBool = AtomicBool::new(false);

fn inspect_job(job: &Job, limit: u64, inner: bool) -> Outcome {
    let Some(m) = discover::find_mapping(job.pid, job.file) else {
        return Outcome::Gone;
    };
    let path = m.map_files_path(job.pid);
    match inspect::inspect_file(&path, limit, inner) {
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

fn start_workers(
    jobs: Receiver<Job>,
    results: Sender<Inspected>,
    inflight: Inflight,
    limit: u64,
    delay: Duration,
    inner: bool,
) {
    for i in 0..INSPECT_WORKERS {
        let (jobs, results, inflight) = (jobs.clone(), results.clone(), inflight.clone());
        let _ = std::thread::Builder::new()
            .name(format!("inspect-{i}"))
            .spawn(move || {
                for job in jobs {
                    let first = inflight
                        .lock()
                        .map(|mut s| s.insert(job.file))
                        .unwrap_or(true);
                    if !first {
                        if results
                            .send(Inspected {
                                job,
                                outcome: Outcome::Duplicate,
                            })
                            .is_err()
                        {
                            return;
                        }
                        continue;
                    }
                    if !delay.is_zero() {
                        std::thread::sleep(delay);
                    }
                    let t0 = Instant::now();
                    let outcome = inspect_job(&job, limit, inner);
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
    }
}

fn start_output(rx: Receiver<Record>, mut p: Pipeline) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("output".into())
        .spawn(move || {
            let mut last_sweep = Instant::now();
            let fail = |e: anyhow::Error| log::error!("output: {e:#}");
            loop {
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(r) => {
                        if let Err(e) = p.handle(&r) {
                            return fail(e);
                        }
                        for r in rx.try_iter() {
                            if let Err(e) = p.handle(&r) {
                                return fail(e);
                            }
                        }
                        if let Err(e) = p.flush() {
                            return fail(e);
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                if last_sweep.elapsed() >= Duration::from_secs(5) {
                    last_sweep = Instant::now();
                    if let Err(e) = p.sweep().and_then(|()| p.flush()) {
                        return fail(e);
                    }
                }
            }
            if let Err(e) = p.finish() {
                fail(e);
            }
        })
        .expect("spawning the output thread")
}

fn stat_sum(map: &dyn MapCore, idx: u32) -> u64 {
    match map.lookup_percpu(&idx.to_ne_bytes(), MapFlags::ANY) {
        Ok(Some(per_cpu)) => per_cpu
            .iter()
            .filter_map(|v| {
                v.get(..8)
                    .map(|b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])))
            })
            .sum(),
        _ => 0,
    }
}

/// Runs until SIGINT/SIGTERM.
pub fn run(cli: Cli) -> Result<()> {
    // Refuse bad patterns before anything else, naming them.
    let patterns = sni::parse_all(&cli.sni)?;
    preflight()?;
    raise_fd_limit();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let pipeline = Pipeline::new(&cli.output_options())?;

    let plan = hooks::plan(cli.tracepoints);
    log::info!("{}", plan.summary());
    let dskel = load_discover(&cli, &plan)?;
    let oskel = load_openssl(&cli, &patterns)?;
    let sskel = load_statictls(&cli, &patterns, &plan)?;
    let static_process_links = attach_static_hooks(&sskel, true, &plan)?;
    let mut static_io_links: Vec<Link> = Vec::new();
    if !patterns.is_empty() {
        let list: Vec<_> = patterns.iter().map(|p| p.to_string()).collect();
        log::info!(
            "capturing connections whose server name matches {}{}",
            list.join(", "),
            if cli.capture_no_sni {
                ", and connections without a server name"
            } else {
                ""
            }
        );
    }

    // Bounded: an output slower than the capture loses records (counted and
    // reported) instead of growing the agent's memory.
    let (out_tx, out_rx) = crossbeam_channel::bounded::<Record>(OUTPUT_QUEUE);
    let dropped: Rc<std::cell::Cell<u64>> = Rc::default();
    let out_thread = start_output(out_rx, pipeline);

    let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
    let (res_tx, res_rx) = crossbeam_channel::unbounded::<Inspected>();
    let inflight: Inflight = Arc::default();
    start_workers(
        job_rx,
        res_tx,
        inflight.clone(),
        cli.max_elf_size,
        Duration::from_millis(cli.test_inspect_delay_ms),
        !cli.probe_at_entry,
    );

    let exec_events = MapHandle::try_from(&dskel.maps.exec_events).context("exec_events map")?;
    let mut pauser = Pauser::start(
        exec_events,
        job_tx.clone(),
        Duration::from_millis(cli.max_pause_ms),
        Duration::from_millis(cli.test_late_stop_ms),
    )?;
    let discover_links = attach_discover(&dskel, &plan)?;

    // Processes already running: inspect what they have mapped (no pause).
    let me = std::process::id();
    let mut startup_pending = 0usize;
    let mut startup_pids: HashMap<FileId, Vec<u32>> = HashMap::new();
    for pid in discover::all_pids() {
        if pid == me || (!cli.pids.is_empty() && !cli.pids.contains(&pid)) {
            continue;
        }
        let comm = discover::comm(pid).unwrap_or_default();
        if !cli.comms.is_empty() && !cli.comms.iter().any(|c| comm_key(c) == comm_key(&comm)) {
            continue;
        }
        for m in discover::exec_mappings(pid) {
            startup_pids.entry(m.file).or_default().push(pid);
            let key = file_key(m.file);
            // Marks the file seen; fails if BPF already reported it.
            if dskel
                .maps
                .seen_files
                .update(&key, &[FILE_PENDING], MapFlags::NO_EXIST)
                .is_err()
            {
                continue;
            }
            startup_pending += 1;
            let _ = job_tx.send(Job {
                pid,
                file: m.file,
                source: abi::EXEC_SOURCE_MMAP,
                comm: comm.clone(),
                paused: false,
                startup: true,
            });
        }
    }

    // Plaintext records.
    let reasm: Rc<RefCell<Reassembler>> = Rc::default();
    let reasm_at_exit = reasm.clone();
    let names: Rc<RefCell<HashMap<(u32, u64), String>>> = Rc::default();
    let conn_names = names.clone();
    let out = out_tx.clone();
    let dropped_in = dropped.clone();
    let send = move |r: Record| {
        if out.try_send(r).is_err() {
            dropped_in.set(dropped_in.get() + 1);
        }
    };
    let pattern_text: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
    let handler = Rc::new(move |rec: &[u8]| {
        match abi::parse(rec) {
            Ok(Event::Data(c)) => {
                for mut call in reasm.borrow_mut().push(&c) {
                    call.sni = conn_names.borrow().get(&(call.pid, call.conn)).cloned();
                    send(Record::Call(call));
                }
            }
            Ok(Event::Close(c)) => {
                let sni = conn_names.borrow_mut().remove(&(c.pid, c.conn));
                send(Record::Close {
                    pid: c.pid,
                    tid: c.tid,
                    comm: c.comm,
                    conn: c.conn,
                    ts_ns: c.ts_ns,
                    sni,
                });
            }
            Ok(Event::SniConfigured(e)) | Ok(Event::SniSent(e)) => {
                conn_names
                    .borrow_mut()
                    .insert((e.pid, e.conn), e.name.clone());
                let pattern = (e.rule as usize)
                    .checked_sub(1)
                    .and_then(|i| pattern_text.get(i))
                    .cloned();
                send(Record::Sni {
                    pid: e.pid,
                    tid: e.tid,
                    comm: e.comm,
                    conn: e.conn,
                    ts_ns: e.ts_ns,
                    name: e.name,
                    pattern,
                });
            }
            Ok(other) => log::warn!("unexpected record on a data ring buffer: {other:?}"),
            Err(e) => log::warn!("bad data record: {e}"),
        }
        0
    });
    let mut rb = RingBufferBuilder::new();
    let h1 = handler.clone();
    rb.add(&oskel.maps.data_events, move |rec: &[u8]| h1(rec))
        .context("openssl data ring buffer")?;
    let h2 = handler.clone();
    rb.add(&sskel.maps.data_events, move |rec: &[u8]| h2(rec))
        .context("statictls data ring buffer")?;
    let ring = rb.build().context("data ring buffers")?;

    let mut attached: HashMap<FileId, Attached> = HashMap::new();
    let reaper = start_reaper();
    // Files whose inspection is over, and jobs waiting for one in progress.
    let mut finished: std::collections::HashSet<FileId> = Default::default();
    let mut waiting: HashMap<FileId, Vec<Job>> = HashMap::new();
    // Files on the static-TLS path (their processes are watched).
    let mut static_set: std::collections::HashSet<FileId> = Default::default();
    let mut ready = false;
    let mut last_stats = Instant::now();
    let mut lost_reported = 0u64;
    let mut dropped_reported = 0u64;
    let mut last_sweep = Instant::now();
    if startup_pending == 0 {
        announce_ready(0);
        ready = true;
    }
    while !stop.load(Ordering::Relaxed) {
        let first = match res_rx.recv_timeout(Duration::from_millis(10)) {
            Ok(r) => Some(r),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => bail!("inspection workers stopped"),
        };
        for r in first.into_iter().chain(res_rx.try_iter()) {
            let file = r.job.file;
            let mut released = vec![r.job.clone()];
            match r.outcome {
                Outcome::Duplicate if !finished.contains(&file) => {
                    // Hold it until the inspection in progress is over.
                    waiting.entry(file).or_default().push(r.job.clone());
                    released.clear();
                }
                Outcome::Duplicate => {}
                Outcome::Gone => {
                    handle_inspected(&r, &oskel, &sskel, &dskel, &mut attached, cli.explain);
                    if let Ok(mut s) = inflight.lock() {
                        s.remove(&file);
                    }
                    // Another process mapping it takes over the inspection.
                    let mut rest = waiting.remove(&file).unwrap_or_default().into_iter();
                    if let Some(next) = rest.next() {
                        let _ = job_tx.send(next);
                        waiting.insert(file, rest.collect());
                    }
                }
                _ => {
                    handle_inspected(&r, &oskel, &sskel, &dskel, &mut attached, cli.explain);
                    if let Outcome::Tls { insp, .. } = &r.outcome {
                        let static_tls = matches!(
                            insp.library,
                            Some(
                                inspect::TlsLibrary::AwsLc
                                    | inspect::TlsLibrary::Ring
                                    | inspect::TlsLibrary::GoTls
                            )
                        );
                        if static_tls && attached.contains_key(&file) {
                            static_set.insert(file);
                            // Running processes of it seen at start-up.
                            for pid in startup_pids.remove(&file).unwrap_or_default() {
                                watch_static(&sskel, file, pid);
                            }
                            if static_io_links.is_empty() {
                                match attach_static_hooks(&sskel, false, &plan) {
                                    Ok(l) => static_io_links = l,
                                    Err(e) => log::warn!("static TLS capture unavailable: {e:#}"),
                                }
                            }
                        }
                    }
                    finished.insert(file);
                    let _ =
                        dskel
                            .maps
                            .seen_files
                            .update(&file_key(file), &[FILE_DONE], MapFlags::ANY);
                    released.extend(waiting.remove(&file).unwrap_or_default());
                }
            }
            for job in released {
                // Every process that mapped a static TLS executable is
                // watched, also those held while another inspected it.
                if static_set.contains(&job.file) {
                    watch_static(&sskel, job.file, job.pid);
                }
                if job.paused {
                    pauser.done(job.pid);
                }
                if job.startup {
                    startup_pending -= 1;
                    if startup_pending == 0 && !ready {
                        announce_ready(attached.len());
                        ready = true;
                    }
                }
            }
        }
        let _ = ring.consume_raw();
        if last_sweep.elapsed() >= Duration::from_secs(5) {
            last_sweep = Instant::now();
            sweep_exited(
                &[
                    &oskel.maps.conns,
                    &sskel.maps.key_ctxs,
                    &sskel.maps.ring_keys,
                    &sskel.maps.hello_sent,
                    &sskel.maps.go_conns,
                ],
                &names,
            );
            for file in stale_files(&attached) {
                if let Some(a) = attached.remove(&file) {
                    log::debug!("{} [{file}] is gone: detaching its probes", a.path);
                    let _ = reaper.send(a.links);
                }
                let key = file_key(file);
                let _ = dskel.maps.seen_files.delete(&key);
                let _ = sskel.maps.static_files.delete(&key);
                finished.remove(&file);
                static_set.remove(&file);
                if let Ok(mut s) = inflight.lock() {
                    s.remove(&file);
                }
            }
        }
        if last_stats.elapsed() >= Duration::from_secs(1) {
            last_stats = Instant::now();
            if dropped.get() > dropped_reported {
                log::warn!(
                    "dropped {} records: the output cannot keep up ({} in all)",
                    dropped.get() - dropped_reported,
                    dropped.get()
                );
                dropped_reported = dropped.get();
            }
            let lost = stat_sum(&oskel.maps.stats, abi::STAT_DATA_LOST)
                + stat_sum(&sskel.maps.stats, abi::STAT_DATA_LOST);
            if lost > lost_reported {
                log::warn!(
                    "lost {} plaintext records: the ring buffer was full ({} in all; see --ring-buffer-mib)",
                    lost - lost_reported,
                    lost
                );
                lost_reported = lost;
            }
        }
    }

    // Orderly stop: resume everything, drain, detach probes, report.
    pauser.shutdown();
    let _ = ring.consume_raw();
    drop(ring);
    drop(handler); // holds a sender of the output channel
                   // Calls whose last chunks never came are delivered as they are.
    for call in reasm_at_exit.borrow_mut().flush() {
        let _ = out_tx.send(Record::Call(call));
    }
    let by_output = dropped.get();
    let lost = stat_sum(&oskel.maps.stats, abi::STAT_DATA_LOST)
        + stat_sum(&sskel.maps.stats, abi::STAT_DATA_LOST)
        + by_output;
    let lost_discover = stat_sum(&dskel.maps.stats, abi::STAT_DISCOVER_LOST);
    let unreadable = stat_sum(&oskel.maps.stats, abi::STAT_READ_FAILED);
    let tracked = oskel.maps.conns.keys().count();
    drop(out_tx);
    let _ = out_thread.join();
    drop(reaper);
    // uprobe_multi links: their detach waits overlap when done side by side.
    let mut all: Vec<Link> = attached.into_values().flat_map(|a| a.links).collect();
    let per = all.len().div_ceil(64).max(1);
    let mut handles = Vec::new();
    while !all.is_empty() {
        let chunk: Vec<Link> = all.drain(..per.min(all.len())).collect();
        handles.push(std::thread::spawn(move || drop(chunk)));
    }
    for h in handles {
        let _ = h.join();
    }
    drop(discover_links);
    drop(static_process_links);
    drop(static_io_links);
    let st = pauser.stats.lock().map(|s| {
        (
            s.summary(),
            s.not_paused,
            s.timed_out,
            s.max_stop_latency_us,
        )
    });
    if let Ok(((n, med, max), not_paused, timed_out, late)) = st {
        eprintln!(
            "plainsight: {n} pauses (median {} us, max {} us; {not_paused} processes not pausable, \
             {timed_out} resumed by the time bound; stopped at most {late} us after a mapping)",
            med.as_micros(),
            max.as_micros()
        );
    }
    if let Ok(s) = pauser.stats.lock() {
        let list: Vec<String> = s.held.iter().map(|d| d.as_micros().to_string()).collect();
        eprintln!("plainsight: pause durations (us): {}", list.join(" "));
    }
    eprintln!(
        "plainsight: lost records: {lost} plaintext ({by_output} of them dropped by a slow output), \
         {lost_discover} file discovery; {unreadable} unreadable buffers"
    );
    eprintln!("plainsight: connections tracked in the kernel at exit: {tracked}");
    Ok(())
}

/// Forgets the connections of processes that exited: entries of the kernel
/// maps (all keyed by a leading u32 pid) and their server names. Each pid is
/// looked up in procfs once per sweep.
fn sweep_exited(maps: &[&dyn MapCore], names: &Rc<RefCell<HashMap<(u32, u64), String>>>) {
    let mut known: HashMap<u32, bool> = HashMap::new();
    let mut alive = |pid: u32| {
        *known
            .entry(pid)
            .or_insert_with(|| Path::new(&format!("/proc/{pid}")).exists())
    };
    for map in maps {
        let dead: Vec<Vec<u8>> = map
            .keys()
            .filter(|k| k.len() >= 4 && !alive(u32::from_ne_bytes([k[0], k[1], k[2], k[3]])))
            .collect();
        for k in dead {
            let _ = map.delete(&k);
        }
    }
    names.borrow_mut().retain(|(pid, _), _| alive(*pid));
}

fn announce_ready(files: usize) {
    eprintln!("plainsight: ready ({files} TLS files instrumented)");
}

fn file_key(f: FileId) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&f.dev.to_ne_bytes());
    k[8..].copy_from_slice(&f.ino.to_ne_bytes());
    k
}

/// Detaching one uprobe waits for an RCU tasks-trace grace period under the
/// kernel's global trace-event mutex (~0.1 s here): links are dropped one by
/// one on this thread, so that attaching (on the pause path) never waits
/// behind more than one of them.
fn start_reaper() -> Sender<Vec<Link>> {
    let (tx, rx) = crossbeam_channel::unbounded::<Vec<Link>>();
    let _ = std::thread::Builder::new()
        .name("detach".into())
        .spawn(move || {
            for links in rx {
                for l in links {
                    drop(l);
                }
            }
        });
    tx
}

/// The probes of one instrumented file.
struct Attached {
    /// Dropping them detaches the probes.
    links: Vec<Link>,
    /// The path the file was mapped from (as its process saw it).
    path: String,
}

/// Whether `path` still names the file `id` (from the agent's view).
fn still_named(path: &str, id: FileId) -> bool {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => {
            let dev = m.dev();
            FileId::from_major_minor(libc::major(dev) as u64, libc::minor(dev) as u64, m.ino())
                == id
        }
        Err(_) => false,
    }
}

/// Files that were deleted (or replaced) and that no process maps any more:
/// their probes can never fire again.
fn stale_files(attached: &HashMap<FileId, Attached>) -> Vec<FileId> {
    let candidates: Vec<FileId> = attached
        .iter()
        .filter(|(id, a)| !still_named(&a.path, **id))
        .map(|(id, _)| *id)
        .collect();
    if candidates.is_empty() {
        return candidates;
    }
    let mut mapped = std::collections::HashSet::new();
    for pid in discover::all_pids() {
        for m in discover::exec_mappings(pid) {
            mapped.insert(m.file);
        }
    }
    candidates
        .into_iter()
        .filter(|f| !mapped.contains(f))
        .collect()
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

/// Watches `pid` (and future executions of `file`) on the static-TLS path.
fn watch_static(st: &StatictlsSkel<'_>, file: FileId, pid: u32) {
    let _ = st
        .maps
        .static_files
        .update(&file_key(file), &[1], MapFlags::ANY);
    let _ = st
        .maps
        .watched_pids
        .update(&pid.to_ne_bytes(), &[1], MapFlags::ANY);
}

fn handle_inspected(
    r: &Inspected,
    oskel: &OpensslSkel<'_>,
    sskel: &StatictlsSkel<'_>,
    dskel: &DiscoverSkel<'_>,
    attached: &mut HashMap<FileId, Attached>,
    explain: bool,
) {
    let job = &r.job;
    match &r.outcome {
        Outcome::Tls { path, shown, insp } => {
            if attached.contains_key(&job.file) {
                return;
            }
            match attach_file(oskel, sskel, path, insp) {
                Ok(links) => {
                    // "name" or "name x3" for repeated probe points (Go RETs).
                    let mut names: Vec<String> = Vec::new();
                    let mut i = 0;
                    while i < insp.targets.len() {
                        let sym = &insp.targets[i].symbol;
                        let n = insp.targets[i..]
                            .iter()
                            .take_while(|t| &t.symbol == sym)
                            .count();
                        names.push(if n > 1 {
                            format!("{sym} x{n}")
                        } else {
                            sym.clone()
                        });
                        i += n;
                    }
                    log::info!(
                        "instrumented {shown} [{}] ({}, {}) {} by {}[{}]: {}",
                        job.file,
                        insp.library.map(|l| l.to_string()).unwrap_or_default(),
                        match insp.linkage {
                            Linkage::Exported => "exported",
                            Linkage::Static => "statically linked",
                        },
                        if job.source == abi::EXEC_SOURCE_EXEC {
                            "executed"
                        } else {
                            "mapped"
                        },
                        job.comm,
                        job.pid,
                        names.join(" ")
                    );
                    for t in &insp.targets {
                        let Some(p) = &t.place else { continue };
                        if explain {
                            log::info!("  probe placement in {shown}: {}", p.explain(t));
                        } else {
                            log::debug!("  probe placement in {shown}: {}", p.explain(t));
                        }
                    }
                    attached.insert(
                        job.file,
                        Attached {
                            links,
                            path: shown.clone(),
                        },
                    );
                }
                Err(e) => log::warn!("cannot instrument {shown}: {e:#}"),
            }
        }
        Outcome::NotTls | Outcome::Duplicate => {}
        Outcome::Gone => {
            let _ = dskel.maps.seen_files.delete(&file_key(job.file));
            log::debug!(
                "pid {} exited before {} could be inspected",
                job.pid,
                job.file
            );
        }
        Outcome::Failed(e) => log::warn!("cannot inspect {e}"),
    }
}
