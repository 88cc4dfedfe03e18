//! HotSpot's dynamic attach protocol, spoken by the agent itself.
//!
//! A HotSpot JVM does not listen for attach requests until asked: the asker
//! creates `/tmp/.attach_pid<PID>` (owned by the JVM's user) and sends it a
//! SIGQUIT; the JVM's signal dispatcher sees the file and, instead of printing
//! a thread dump, starts its attach listener on the UNIX socket
//! `/tmp/.java_pid<PID>`. A request is `1\0<command>\0<arg0>\0<arg1>\0<arg2>\0`
//! (protocol 1, always three arguments); the reply is a status line (`0` on
//! success) then the command's text, then the JVM closes the connection.
//!
//! The JVM may be hostile and live in a container, so:
//! - nothing is signalled that a SIGQUIT could kill (no handler yet, `-Xrs`),
//!   or that would only dump threads (attach disabled, OpenJ9, a listener
//!   already running);
//! - `/tmp` and `PID` are the JVM's own (its root, its pid namespace), `/tmp`
//!   is opened once without leaving that root and everything else is looked up
//!   relative to it, one component at a time, without following symlinks;
//! - the signal goes through a pidfd, so a recycled pid cannot receive it;
//! - every wait is bounded by the caller's deadline, every reply by a size.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use log::debug;

/// Replies longer than this are cut: `properties` is a few KiB, nothing we
/// ask for comes near, and a hostile JVM must not make us buffer without end.
const MAX_REPLY: usize = 1 << 20;
/// What is read of `/proc/PID/cmdline` and `environ`: far above what a real
/// command line holds, small enough that a hostile process cannot make us
/// read without end.
const MAX_PROC_TEXT: u64 = 1 << 20;
/// How often the signal mask is re-read while a young JVM sets up its
/// handlers (start-up takes tens to hundreds of milliseconds).
const QUIT_HANDLER_POLL: Duration = Duration::from_millis(50);
/// How often we look for the listener's socket after the SIGQUIT (it
/// usually appears within a few milliseconds).
const LISTENER_POLL: Duration = Duration::from_millis(10);
/// How long another attacher's listener start is awaited before we
/// signal too (its listener is usually up within 30 ms).
const PEER_WAIT: Duration = Duration::from_millis(500);
/// How long a JVM started with -Xrs may take to open its listener by
/// itself (at the end of its start-up, well under a second here).
const XRS_STARTUP: Duration = Duration::from_secs(10);
/// Time the connecting thread gets beyond the deadline to report back: its
/// connect is itself bounded by the deadline (SO_SNDTIMEO).
const CONNECT_GRACE: Duration = Duration::from_millis(200);
/// HotSpot's limits for protocol 1 (`AttachOperation::name_length_max`,
/// `arg_length_max`, `arg_count_max`): beyond them the request is a
/// protocol error.
const NAME_MAX: usize = 16;
const ARG_MAX: usize = 1024;
const ARG_COUNT: usize = 3;
/// How much younger than at `inspect` time the process behind the pid may
/// look before we call it another process: `/proc/uptime` and the start
/// time both have a 10 ms granularity.
const AGE_SLACK: Duration = Duration::from_millis(50);
/// Longest text of a JVM's refusal we keep.
const REFUSAL_TEXT_MAX: usize = 300;

/// What /proc says about a JVM before anything is sent to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JvmProc {
    /// The pid on the host (in our pid namespace).
    pub pid: u32,
    /// The pid the JVM knows itself by (its own pid namespace): the last
    /// value of `NSpid:` in `/proc/PID/status`. It names the attach files.
    pub nspid: u32,
    /// Effective uid (second field of `Uid:`), as seen from the host.
    pub uid: u32,
    /// Effective gid (second field of `Gid:`), as seen from the host.
    pub gid: u32,
    /// A SIGQUIT handler is installed (`SigCgt`): a SIGQUIT is safe.
    pub quit_caught: bool,
    /// SIGQUIT is ignored (`SigIgn`): inherited from a shell that started
    /// the JVM in the background until HotSpot installs its handler over
    /// it; for good if the JVM never does.
    pub quit_ignored: bool,
    /// `-Xrs` (or `-XX:+ReduceSignalUsage`) on the command line or in
    /// `JAVA_TOOL_OPTIONS`, `JDK_JAVA_OPTIONS`, `_JAVA_OPTIONS`.
    pub reduced_signals: bool,
    /// `-XX:+DisableAttachMechanism`, found the same way (last one wins).
    pub attach_disabled: bool,
    /// An OpenJ9 JVM (`libj9vm` mapped): its attach protocol is another one.
    pub openj9: bool,
    /// Time since the process started.
    pub age: Duration,
}

/// Why a JVM is not attached (logged once per JVM by the caller).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// `-Xrs`, or SIGQUIT ignored, and no listener running: no signal is
    /// sent.
    #[error(
        "started with -Xrs or ignoring SIGQUIT, and no attach listener running: a SIGQUIT would kill it or go unheard, not signalled"
    )]
    ReducedSignals,
    /// `-XX:+DisableAttachMechanism`: no signal is sent.
    #[error("started with -XX:+DisableAttachMechanism: it accepts no attach, not signalled")]
    AttachDisabled,
    /// OpenJ9 attaches another way: no signal is sent.
    #[error("an OpenJ9 JVM: it speaks another attach protocol, not signalled")]
    OpenJ9,
    /// No SIGQUIT handler appeared before the deadline: no signal is sent.
    #[error(
        "no SIGQUIT handler after waiting {waited:?} (still starting?): a SIGQUIT would kill it, not signalled"
    )]
    NoQuitHandler {
        /// How long we watched for the handler.
        waited: Duration,
    },
    /// Signalled, but the listener's socket did not appear in time.
    #[error("signalled, but no attach listener appeared within {waited:?}")]
    NoListener {
        /// How long we waited after the signal.
        waited: Duration,
    },
    /// The JVM answered with an error (its text, escaped and cut).
    #[error("the JVM refused: {0}")]
    Refused(String),
    /// Anything else: /proc, files, socket, timeouts, malformed replies.
    #[error("{0:#}")]
    Io(anyhow::Error),
}

/// A connection to the JVM's attach listener, made by [`connect`].
#[derive(Debug)]
pub struct Listener {
    stream: UnixStream,
    pid: u32,
}

/// Reads `/proc/PID` (status, cmdline, environ, maps, stat): nothing is
/// sent to the process.
pub fn inspect(pid: u32) -> anyhow::Result<JvmProc> {
    let status = read_status(pid)?;
    if status.tgid != pid {
        bail!(
            "{pid} is a thread of process {}, not a process",
            status.tgid
        );
    }
    let cmdline = read_proc(pid, "cmdline")?;
    let environ = read_proc(pid, "environ")?;
    let flags = option_flags(&cmdline, &environ);
    Ok(JvmProc {
        pid,
        nspid: status.nspid.unwrap_or(pid),
        uid: status.uid,
        gid: status.gid,
        quit_caught: status.quit_caught,
        quit_ignored: status.quit_ignored,
        reduced_signals: flags.reduced_signals,
        attach_disabled: flags.attach_disabled,
        openj9: maps_openj9(pid)?,
        age: process_age(pid)?,
    })
}

/// Connects to the JVM's attach listener, starting it if need be (trigger
/// file and SIGQUIT), never signalling a JVM that the signal could harm.
/// OpenJ9 and attach-disabled JVMs are refused before anything is looked
/// at; a JVM with reduced signals only if it has no listener running.
pub fn connect(jvm: &JvmProc, deadline: Instant) -> Result<Listener, Refusal> {
    refuse_early(jvm)?;
    let pid = jvm.pid;
    let tmp = open_tmp(pid).map_err(Refusal::Io)?;
    let name = c_name(&format!(".java_pid{}", jvm.nspid)).map_err(Refusal::Io)?;
    let stale = match try_running_listener(jvm, &tmp, &name, deadline)? {
        Existing::Connected(listener) => return Ok(listener),
        Existing::Stale(id) => Some(id),
        Existing::Absent => None,
    };
    // A JVM started with -Xrs opens its listener at start-up by itself
    // (HotSpot's `init_at_startup`), which was tried just above; without
    // one, the only way left is a signal that would kill it.
    // An inherited "ignore" (a JVM started in the background by a shell)
    // is not refused here: HotSpot installs its handler over it, which
    // wait_quit_handler waits for.
    if jvm.reduced_signals {
        // A young one may not have opened it yet: watch (never signal).
        let startup_left = XRS_STARTUP.saturating_sub(jvm.age);
        let until = deadline.min(Instant::now() + startup_left);
        if !wait_socket(&tmp, &name, jvm.uid, stale, until) {
            return Err(Refusal::ReducedSignals);
        }
    } else {
        start_listener(jvm, &tmp, &name, stale, deadline)?;
    }
    let stream = connect_socket(jvm, &tmp, &name, deadline)
        .with_context(|| format!("JVM {pid}: connecting to its new attach listener"))
        .map_err(Refusal::Io)?;
    Ok(Listener { stream, pid })
}

impl Listener {
    /// Sends one command (protocol 1: `1\0<cmd>\0<arg0>\0<arg1>\0<arg2>\0`,
    /// missing arguments empty) and reads the whole reply (at most 1 MiB,
    /// until the JVM closes, failing at the deadline). Returns the status
    /// code and the text after the first line. HotSpot closes the
    /// connection after one reply, hence `self`.
    pub fn command(
        self,
        cmd: &str,
        args: &[&str],
        deadline: Instant,
    ) -> Result<(i32, String), Refusal> {
        let pid = self.pid;
        let context = || format!("JVM {pid}: attach command {cmd:?}");
        let request = encode_request(cmd, args)
            .with_context(context)
            .map_err(Refusal::Io)?;
        let mut stream = self.stream;
        send_all(&stream, &request, deadline)
            .context("sending the request")
            .with_context(context)
            .map_err(Refusal::Io)?;
        let raw = receive(&mut stream, deadline)
            .context("reading the reply")
            .with_context(context)
            .map_err(Refusal::Io)?;
        let (code, text) = parse_reply(&raw)
            .with_context(context)
            .map_err(Refusal::Io)?;
        debug!("JVM {pid}: {cmd:?} answered {code}, {} bytes", raw.len());
        Ok((code, text))
    }
}

/// The JVM's system properties (command `properties`).
pub fn properties(jvm: &JvmProc, deadline: Instant) -> Result<HashMap<String, String>, Refusal> {
    let (code, text) = connect(jvm, deadline)?.command("properties", &[], deadline)?;
    if code != 0 {
        return Err(Refusal::Refused(clip(&format!("error {code}: {text}"))));
    }
    Ok(parse_properties(&text))
}

/// Loads a java agent jar (`jar_in_jvm` is a path in the JVM's mount
/// namespace) and runs its `agentmain` with `options` (none when empty).
/// Succeeds only when the JVM and the agent both report success.
pub fn load_agent(
    jvm: &JvmProc,
    jar_in_jvm: &str,
    options: &str,
    deadline: Instant,
) -> Result<(), Refusal> {
    // The instrument library splits its argument at the first '=': a jar
    // path holding one would be cut there.
    if jar_in_jvm.is_empty() || jar_in_jvm.contains('=') {
        return Err(Refusal::Io(anyhow!(
            "JVM {}: agent jar path {:?} is empty or holds '='",
            jvm.pid,
            jar_in_jvm
        )));
    }
    let arg = if options.is_empty() {
        jar_in_jvm.to_string()
    } else {
        format!("{jar_in_jvm}={options}")
    };
    let listener = connect(jvm, deadline)?;
    let (code, text) = listener.command("load", &["instrument", "false", &arg], deadline)?;
    load_outcome(code, &text).map_err(Refusal::Refused)?;
    debug!("JVM {}: agent {jar_in_jvm} loaded", jvm.pid);
    Ok(())
}

// ---------------------------------------------------------------------------
// /proc

/// The fields of `/proc/PID/status` that matter here.
#[derive(Debug, Default, PartialEq, Eq)]
struct Status {
    tgid: u32,
    nspid: Option<u32>,
    uid: u32,
    gid: u32,
    quit_caught: bool,
    quit_ignored: bool,
}

fn read_proc(pid: u32, name: &str) -> anyhow::Result<Vec<u8>> {
    let path = format!("/proc/{pid}/{name}");
    let mut out = Vec::new();
    File::open(&path)
        .and_then(|f| f.take(MAX_PROC_TEXT).read_to_end(&mut out))
        .with_context(|| format!("reading {path}"))?;
    Ok(out)
}

fn read_status(pid: u32) -> anyhow::Result<Status> {
    let raw = read_proc(pid, "status")?;
    parse_status(&String::from_utf8_lossy(&raw))
        .with_context(|| format!("process {pid}: parsing /proc/{pid}/status"))
}

fn parse_status(text: &str) -> anyhow::Result<Status> {
    let (mut tgid, mut uid, mut gid, mut caught, mut ignored) = (None, None, None, None, None);
    let mut nspid = None;
    // The kernel escapes newlines in `Name:`, so a process cannot forge
    // lines of its own here.
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let mut fields = value.split_whitespace();
        match key {
            "Tgid" => tgid = fields.next().map(str::parse::<u32>).transpose()?,
            "NSpid" => nspid = fields.last().map(str::parse::<u32>).transpose()?,
            "Uid" => uid = fields.nth(1).map(str::parse::<u32>).transpose()?,
            "Gid" => gid = fields.nth(1).map(str::parse::<u32>).transpose()?,
            "SigCgt" => caught = fields.next().map(|m| signal_in_mask(m, 3)).transpose()?,
            "SigIgn" => ignored = fields.next().map(|m| signal_in_mask(m, 3)).transpose()?,
            _ => {}
        }
    }
    Ok(Status {
        tgid: tgid.context("no Tgid line")?,
        nspid,
        uid: uid.context("no effective uid")?,
        gid: gid.context("no effective gid")?,
        quit_caught: caught.context("no SigCgt line")?,
        quit_ignored: ignored.context("no SigIgn line")?,
    })
}

/// Whether signal `sig` is set in a `/proc` signal mask: hexadecimal, most
/// significant digit first, bit `sig - 1`.
fn signal_in_mask(mask: &str, sig: u32) -> anyhow::Result<bool> {
    if mask.is_empty() || !mask.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("malformed signal mask {mask:?}");
    }
    let bit = sig.checked_sub(1).context("signal 0")?;
    let from_end = (bit / 4) as usize;
    let Some(index) = mask.len().checked_sub(from_end + 1) else {
        return Ok(false);
    };
    let digit = (mask.as_bytes()[index] as char)
        .to_digit(16)
        .context("not a hex digit")?;
    Ok(digit >> (bit % 4) & 1 == 1)
}

/// The flags found in a JVM's options.
#[derive(Debug, Default, PartialEq, Eq)]
struct Flags {
    reduced_signals: bool,
    attach_disabled: bool,
}

/// Launcher options followed by a value in the next argument (the java
/// launcher's `IsWhiteSpaceOption` and the class path forms).
const TAKES_VALUE: &[&[u8]] = &[
    b"-cp",
    b"-classpath",
    b"--class-path",
    b"-p",
    b"--module-path",
    b"--upgrade-module-path",
    b"--add-modules",
    b"--enable-native-access",
    b"--limit-modules",
    b"--add-exports",
    b"--add-opens",
    b"--add-reads",
    b"--patch-module",
    b"--source",
];

/// Finds `-Xrs` and `-XX:±DisableAttachMechanism` the way HotSpot would
/// see them: `JAVA_TOOL_OPTIONS` first, then the launcher's
/// `JDK_JAVA_OPTIONS` and command line, `_JAVA_OPTIONS` last; the last
/// `DisableAttachMechanism` wins. `-Xrs` counts anywhere, even among the
/// program's own arguments: a wrong "yes" only costs an attach, a wrong
/// "no" could cost the JVM.
fn option_flags(cmdline: &[u8], environ: &[u8]) -> Flags {
    let env = |name: &[u8]| -> Vec<&[u8]> {
        // getenv(3) takes the first of duplicate entries, so do we.
        let value = environ
            .split(|&b| b == 0)
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix(b"="))
            .unwrap_or_default();
        value
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .collect()
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let mut options = env(b"JAVA_TOOL_OPTIONS");
    options.extend(env(b"JDK_JAVA_OPTIONS"));
    options.extend(vm_options(&args));
    options.extend(env(b"_JAVA_OPTIONS"));
    let reduces = |o: &&[u8]| *o == b"-Xrs" || *o == b"-XX:+ReduceSignalUsage";
    let attach_disabled = options
        .iter()
        .rev()
        .find_map(|o| match *o {
            b"-XX:+DisableAttachMechanism" => Some(true),
            b"-XX:-DisableAttachMechanism" => Some(false),
            _ => None,
        })
        .unwrap_or(false);
    Flags {
        reduced_signals: options.iter().any(reduces) || args.iter().any(reduces),
        attach_disabled,
    }
}

/// The JVM's options on a java launcher command line: the arguments after
/// the program name up to the main class, `-jar` or `-m` (what follows is
/// the program's).
fn vm_options<'a>(args: &[&'a [u8]]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = args.iter().skip(1);
    while let Some(&arg) = rest.next() {
        let ends = matches!(arg, b"-jar" | b"-m" | b"--module") || arg.starts_with(b"--module=");
        if !arg.starts_with(b"-") || ends {
            break;
        }
        if TAKES_VALUE.contains(&arg) {
            rest.next();
            continue;
        }
        out.push(arg);
    }
    out
}

fn maps_openj9(pid: u32) -> anyhow::Result<bool> {
    let path = format!("/proc/{pid}/maps");
    let mut maps = BufReader::new(File::open(&path).with_context(|| format!("opening {path}"))?);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = maps
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading {path}"))?;
        if n == 0 {
            return Ok(false);
        }
        if line.windows(7).any(|w| w == b"libj9vm") {
            return Ok(true);
        }
    }
}

fn process_age(pid: u32) -> anyhow::Result<Duration> {
    let stat = read_proc(pid, "stat")?;
    let start_ticks =
        parse_start_ticks(&stat).with_context(|| format!("process {pid}: parsing its stat"))?;
    let uptime = std::fs::read_to_string("/proc/uptime").context("reading /proc/uptime")?;
    let up: f64 = uptime
        .split_whitespace()
        .next()
        .context("empty /proc/uptime")?
        .parse()
        .context("parsing /proc/uptime")?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        bail!("no clock tick rate");
    }
    let age = (up - start_ticks as f64 / hz as f64).max(0.0);
    Duration::try_from_secs_f64(age).context("process age out of range")
}

/// Field 22 (`starttime`, in clock ticks since boot) of `/proc/PID/stat`.
/// The command name (field 2, in parentheses) may hold spaces and `)`: the
/// fields are counted from the last `)`.
fn parse_start_ticks(stat: &[u8]) -> anyhow::Result<u64> {
    let close = stat
        .iter()
        .rposition(|&b| b == b')')
        .context("no ')' in stat")?;
    let rest = std::str::from_utf8(&stat[close + 1..]).context("stat is not text")?;
    let field = rest
        .split_whitespace()
        .nth(22 - 3)
        .context("stat too short")?;
    field.parse().context("malformed starttime")
}

// ---------------------------------------------------------------------------
// Connecting

/// What a `.java_pid` socket found before any signal turned out to be.
enum Existing {
    Connected(Listener),
    /// A socket nobody listens on (left by an earlier JVM with that pid),
    /// by device and inode: the new one will replace it.
    Stale((u64, u64)),
    Absent,
}

fn refuse_early(jvm: &JvmProc) -> Result<(), Refusal> {
    if jvm.openj9 {
        return Err(Refusal::OpenJ9);
    }
    if jvm.attach_disabled {
        return Err(Refusal::AttachDisabled);
    }
    Ok(())
}

/// Opens the JVM's `/tmp` (an `O_PATH` directory): through its root, the
/// lookup confined to that root and refusing `/proc` magic links, so a
/// symlink planted in the container cannot lead us out of it.
pub(super) fn open_tmp(pid: u32) -> anyhow::Result<OwnedFd> {
    let root = open_at(
        libc::AT_FDCWD,
        &c_name(&format!("/proc/{pid}/root"))?,
        libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
    )
    .with_context(|| format!("JVM {pid}: opening /proc/{pid}/root"))?;
    open_in_root(&root, c"tmp").with_context(|| format!("JVM {pid}: opening its /tmp"))
}

/// Opens directory `path` as seen from inside `root` (`O_PATH`): `..` and
/// absolute symlinks stop at `root`, `/proc` magic links are refused.
fn open_in_root(root: &OwnedFd, path: &CStr) -> io::Result<OwnedFd> {
    crate::fsat::open_resolved(
        root.as_raw_fd(),
        path,
        libc::O_PATH | libc::O_DIRECTORY,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
}

/// A listener may already run (an earlier attach, jcmd): connecting to it
/// needs no signal, and a SIGQUIT to a JVM whose listener runs would print
/// a thread dump into its output.
fn try_running_listener(
    jvm: &JvmProc,
    tmp: &OwnedFd,
    name: &CStr,
    deadline: Instant,
) -> Result<Existing, Refusal> {
    let Some(id) = socket_id(tmp, name, jvm.uid) else {
        return Ok(Existing::Absent);
    };
    match connect_socket(jvm, tmp, name, deadline) {
        Ok(stream) => {
            debug!("JVM {}: attach listener already running", jvm.pid);
            Ok(Existing::Connected(Listener {
                stream,
                pid: jvm.pid,
            }))
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNREFUSED | libc::ENOENT)) => {
            debug!("JVM {}: stale attach socket ({e}), will signal", jvm.pid);
            Ok(Existing::Stale(id))
        }
        // Anything else (a full backlog, a timeout) may be a running
        // listener: signalling it would dump its threads.
        Err(e) => Err(Refusal::Io(anyhow!(e).context(format!(
            "JVM {}: connecting to its running attach listener",
            jvm.pid
        )))),
    }
}

/// Waits for the SIGQUIT handler, creates the trigger file, signals, and
/// waits for a new socket. The trigger file we create is removed whatever
/// happens (the guard's drop).
fn start_listener(
    jvm: &JvmProc,
    tmp: &OwnedFd,
    name: &CStr,
    stale: Option<(u64, u64)>,
    deadline: Instant,
) -> Result<(), Refusal> {
    let pid = jvm.pid;
    // The pidfd pins the process: if it exits and its pid is reused, the
    // signal fails instead of reaching a stranger.
    let pidfd = pidfd_open(pid)
        .with_context(|| format!("JVM {pid}: pidfd_open"))
        .map_err(Refusal::Io)?;
    wait_quit_handler(jvm, &pidfd, deadline)?;
    let trigger = Trigger::create(tmp, jvm).map_err(Refusal::Io)?;
    // A SIGQUIT landing once the listener is up prints a thread dump. So,
    // last look for a listener started meanwhile; and someone else's
    // trigger file means another attacher (jcmd, another agent) is starting
    // it right now: give its signal time to work before sending ours.
    let look_until = if trigger.created {
        Instant::now()
    } else {
        deadline.min(Instant::now() + PEER_WAIT)
    };
    if wait_socket(tmp, name, jvm.uid, stale, look_until) {
        debug!("JVM {pid}: attach listener started by another attacher");
        return Ok(());
    }
    let signalled = Instant::now();
    pidfd_signal(&pidfd, libc::SIGQUIT)
        .with_context(|| format!("JVM {pid}: sending SIGQUIT"))
        .map_err(Refusal::Io)?;
    let appeared = wait_socket(tmp, name, jvm.uid, stale, deadline);
    drop(trigger);
    let waited = signalled.elapsed();
    if !appeared {
        return Err(Refusal::NoListener { waited });
    }
    debug!("JVM {pid}: attach listener up {waited:?} after SIGQUIT");
    Ok(())
}

/// Re-reads the signal masks until SIGQUIT is caught: a JVM installs its
/// handler during start-up, and a SIGQUIT before that kills it
/// (JDK-8186709). The mask is always read afresh, not taken from
/// `inspect`, and checked to belong to the process behind the pidfd.
fn wait_quit_handler(jvm: &JvmProc, pidfd: &OwnedFd, deadline: Instant) -> Result<(), Refusal> {
    let start = Instant::now();
    loop {
        let status = current_status(jvm, pidfd).map_err(Refusal::Io)?;
        if status.quit_caught {
            if !jvm.quit_caught {
                debug!(
                    "JVM {}: SIGQUIT handler after {:?}",
                    jvm.pid,
                    start.elapsed()
                );
            }
            return Ok(());
        }
        let Some(left) = remaining(deadline) else {
            if status.quit_ignored {
                return Err(Refusal::ReducedSignals);
            }
            return Err(Refusal::NoQuitHandler {
                waited: start.elapsed(),
            });
        };
        std::thread::sleep(left.min(QUIT_HANDLER_POLL));
    }
}

/// The status of the process behind `pidfd`, which must still look like
/// the inspected JVM: same ids, not younger.
fn current_status(jvm: &JvmProc, pidfd: &OwnedFd) -> anyhow::Result<Status> {
    let pid = jvm.pid;
    let status = read_status(pid)?;
    let age = process_age(pid)?;
    // The process behind the pidfd is alive, so the pid was not reused
    // while we read: what we read is its.
    pidfd_signal(pidfd, 0).with_context(|| format!("JVM {pid}: gone"))?;
    let same = status.tgid == pid
        && status.nspid.unwrap_or(pid) == jvm.nspid
        && status.uid == jvm.uid
        && status.gid == jvm.gid
        && age + AGE_SLACK >= jvm.age;
    if !same {
        bail!("JVM {pid}: the pid now names another process (or its ids changed)");
    }
    Ok(status)
}

/// The `.attach_pid<PID>` file that tells the JVM a SIGQUIT is an attach
/// request; removed on drop if we created it.
struct Trigger<'a> {
    dir: &'a OwnedFd,
    name: CString,
    created: bool,
}

impl<'a> Trigger<'a> {
    fn create(tmp: &'a OwnedFd, jvm: &JvmProc) -> anyhow::Result<Self> {
        let pid = jvm.pid;
        let name = c_name(&format!(".attach_pid{}", jvm.nspid))?;
        let flags =
            libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_WRONLY | libc::O_CLOEXEC;
        let file = match crate::fsat::open_at(tmp.as_raw_fd(), &name, flags, 0o600) {
            Ok(f) => f,
            Err(err) if err.raw_os_error() == Some(libc::EEXIST) => {
                return Self::reuse(tmp, name, jvm);
            }
            Err(err) => {
                return Err(err).with_context(|| {
                    format!("JVM {pid}: creating /tmp/{}", name.to_string_lossy())
                });
            }
        };
        let trigger = Trigger {
            dir: tmp,
            name,
            created: true,
        };
        // HotSpot ignores a trigger file not owned by its effective uid
        // (or, in recent JDKs, root); JDK 8 wants its own uid.
        // SAFETY: fchown on a descriptor we own.
        if unsafe { libc::fchown(file.as_raw_fd(), jvm.uid, jvm.gid) } != 0 {
            return Err(io::Error::last_os_error()).with_context(|| {
                format!(
                    "JVM {pid}: chown of /tmp/{}",
                    trigger.name.to_string_lossy()
                )
            });
        }
        Ok(trigger)
    }

    /// Another attacher's trigger file (jcmd, a previous run) serves as
    /// well if it is what the JVM expects; it is theirs to remove.
    fn reuse(tmp: &'a OwnedFd, name: CString, jvm: &JvmProc) -> anyhow::Result<Self> {
        let st = stat_at(tmp, &name).with_context(|| {
            format!(
                "JVM {}: looking at /tmp/{}",
                jvm.pid,
                name.to_string_lossy()
            )
        })?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_uid != jvm.uid {
            bail!(
                "JVM {}: /tmp/{} exists but is not a regular file owned by uid {} (mode {:o}, uid {}): not signalling",
                jvm.pid,
                name.to_string_lossy(),
                jvm.uid,
                st.st_mode,
                st.st_uid
            );
        }
        debug!(
            "JVM {}: reusing the existing /tmp/{}",
            jvm.pid,
            name.to_string_lossy()
        );
        Ok(Trigger {
            dir: tmp,
            name,
            created: false,
        })
    }
}

impl Drop for Trigger<'_> {
    fn drop(&mut self) {
        if !self.created {
            return;
        }
        // SAFETY: `name` is NUL-terminated, `dir` an open directory.
        if unsafe { libc::unlinkat(self.dir.as_raw_fd(), self.name.as_ptr(), 0) } != 0 {
            let err = io::Error::last_os_error();
            debug!("removing /tmp/{}: {err}", self.name.to_string_lossy());
        }
    }
}

/// Polls for the listener's socket (owned by the JVM's user, not the stale
/// one seen before) until the deadline.
fn wait_socket(
    tmp: &OwnedFd,
    name: &CStr,
    uid: u32,
    stale: Option<(u64, u64)>,
    deadline: Instant,
) -> bool {
    loop {
        if let Some(id) = socket_id(tmp, name, uid) {
            if Some(id) != stale {
                return true;
            }
        }
        let Some(left) = remaining(deadline) else {
            return false;
        };
        std::thread::sleep(left.min(LISTENER_POLL));
    }
}

/// Device and inode of `name` in `dir` if it is a socket owned by `uid`
/// (not following a symlink).
fn socket_id(dir: &OwnedFd, name: &CStr, uid: u32) -> Option<(u64, u64)> {
    let st = stat_at(dir, name).ok()?;
    let is_socket = st.st_mode & libc::S_IFMT == libc::S_IFSOCK;
    (is_socket && st.st_uid == uid).then_some((st.st_dev, st.st_ino))
}

/// Connects to the socket `name` in `tmp`: opened without following a
/// symlink, checked, then reached through `/proc/self/fd/N` (the inode the
/// descriptor holds, no second lookup), as the JVM's user.
fn connect_socket(
    jvm: &JvmProc,
    tmp: &OwnedFd,
    name: &CStr,
    deadline: Instant,
) -> io::Result<UnixStream> {
    let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let path_fd = open_at(tmp.as_raw_fd(), name, flags)?;
    let st = fstat(&path_fd)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK || st.st_uid != jvm.uid {
        return Err(io::Error::other(format!(
            "/tmp/{} is not a socket owned by uid {} (mode {:o}, uid {})",
            name.to_string_lossy(),
            jvm.uid,
            st.st_mode,
            st.st_uid
        )));
    }
    let left = remaining(deadline).ok_or_else(deadline_passed)?;
    let fd = connect_as(path_fd, jvm.uid, jvm.gid, left)?;
    Ok(UnixStream::from(fd))
}

/// Connects from a short-lived thread that takes the JVM's uid and gid:
/// the listener checks its peer's credentials (SO_PEERCRED, taken at
/// connect), and older JDKs want exactly their own. Only that thread
/// changes: the raw syscalls act on the calling thread, where glibc's
/// wrappers would change every thread of the agent.
fn connect_as(path_fd: OwnedFd, uid: u32, gid: u32, timeout: Duration) -> io::Result<OwnedFd> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("jvm-attach".into())
        .spawn(move || {
            // The O_PATH descriptor lives in this thread: `/proc/self/fd/N`
            // must keep naming it until the connect is done, even if the
            // caller stopped waiting.
            let result = become_user(uid, gid).and_then(|()| connect_path_fd(&path_fd, timeout));
            // If the caller gave up, the socket is dropped (closed) here.
            let _ = tx.send(result);
        })?;
    rx.recv_timeout(timeout + CONNECT_GRACE)
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connect did not finish",
            ))
        })
}

/// Switches the calling thread (only) to `uid`/`gid`, no supplementary
/// groups. The kernel marks the whole agent non-dumpable when a thread's
/// ids change, which keeps the JVM's user from ptracing this thread (and
/// through it, root's memory); we make sure of it even if
/// `fs.suid_dumpable` is 1, and leave it so: restoring it while another
/// such thread runs would open that door.
fn become_user(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: geteuid and getegid only read the thread's ids.
    if unsafe { (libc::geteuid(), libc::getegid()) } == (uid, gid) {
        return Ok(()); // a JVM running as root: nothing to change
    }
    // SAFETY: raw credential syscalls on the calling thread, no pointers
    // but a null group list of length 0.
    unsafe {
        if libc::syscall(
            libc::SYS_setgroups,
            0 as libc::c_long,
            std::ptr::null::<libc::gid_t>(),
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        let g = gid as libc::c_long;
        if libc::syscall(libc::SYS_setresgid, g, g, g) != 0 {
            return Err(io::Error::last_os_error());
        }
        let u = uid as libc::c_long;
        if libc::syscall(libc::SYS_setresuid, u, u, u) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Creates an AF_UNIX stream socket and connects it to the socket inode
/// `path_fd` refers to, the connect bounded by `timeout` (a listener whose
/// backlog is full would otherwise keep us waiting).
fn connect_path_fd(path_fd: &OwnedFd, timeout: Duration) -> io::Result<OwnedFd> {
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket returned a new descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    set_timeout(&sock, libc::SO_SNDTIMEO, timeout)?;
    let path = format!("/proc/self/fd/{}", path_fd.as_raw_fd());
    // SAFETY: sockaddr_un is plain old data; all zeroes is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // The path is ~20 bytes, far below sun_path's 108: the zip never cuts
    // it, and the zeroed tail is its terminating NUL.
    for (dst, src) in addr.sun_path.iter_mut().zip(path.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + path.len() + 1;
    loop {
        // SAFETY: `addr` is a valid sockaddr_un of at least `len` bytes.
        let r = unsafe {
            libc::connect(
                sock.as_raw_fd(),
                &addr as *const libc::sockaddr_un as *const libc::sockaddr,
                len as libc::socklen_t,
            )
        };
        if r == 0 {
            return Ok(sock);
        }
        let err = io::Error::last_os_error();
        // Interrupted while waiting for the backlog: still unconnected, so
        // connecting again is right.
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

// ---------------------------------------------------------------------------
// The protocol

/// Encodes a protocol 1 request: version, command, exactly three arguments.
fn encode_request(cmd: &str, args: &[&str]) -> anyhow::Result<Vec<u8>> {
    if cmd.is_empty() || cmd.len() > NAME_MAX || cmd.contains('\0') {
        bail!("bad command name {cmd:?}");
    }
    if args.len() > ARG_COUNT {
        bail!("{} arguments, protocol 1 carries {ARG_COUNT}", args.len());
    }
    let mut out = b"1\0".to_vec();
    out.extend_from_slice(cmd.as_bytes());
    out.push(0);
    for i in 0..ARG_COUNT {
        let arg = args.get(i).copied().unwrap_or("");
        if arg.len() > ARG_MAX || arg.contains('\0') {
            bail!("argument {i} is longer than {ARG_MAX} bytes or holds a NUL");
        }
        out.extend_from_slice(arg.as_bytes());
        out.push(0);
    }
    Ok(out)
}

fn send_all(stream: &UnixStream, mut buf: &[u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        let left = remaining(deadline).ok_or_else(deadline_passed)?;
        stream.set_write_timeout(Some(left))?;
        // MSG_NOSIGNAL: a JVM closing early gives EPIPE, not a SIGPIPE to
        // the agent.
        // SAFETY: `buf` is a live slice of the length passed.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    return Err(deadline_passed())
                }
                _ => return Err(err),
            }
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Reads until the JVM closes the connection, at most [`MAX_REPLY`] bytes
/// (the rest is dropped), failing at the deadline: each read is bounded by
/// the time left.
fn receive(stream: &mut UnixStream, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let left = remaining(deadline).ok_or_else(deadline_passed)?;
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => {
                let room = MAX_REPLY - out.len();
                out.extend_from_slice(&chunk[..n.min(room)]);
                if n >= room {
                    debug!("attach reply cut at {MAX_REPLY} bytes");
                    return Ok(out);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no complete reply before the deadline ({} bytes)",
                        out.len()
                    ),
                ));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Splits a reply into its status code (first line) and the rest.
fn parse_reply(raw: &[u8]) -> anyhow::Result<(i32, String)> {
    let text = String::from_utf8_lossy(raw);
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let code = first
        .trim()
        .parse::<i32>()
        .with_context(|| format!("malformed reply: {}", clip(first)))?;
    Ok((code, rest.to_string()))
}

/// Whether a `load` of the instrument agent succeeded. Seen replies:
/// JDK 17 and 25 `0\nreturn code: N\n` (N is the agent's result: 100 the
/// jar cannot be read or names no Agent-Class, 102 the class is missing or
/// agentmain threw); JDK 8 printed the bare number; a library that does
/// not load gives `-1` (JDK 17) or `0` (JDK 25!) and "<lib> was not
/// loaded."; JDK 21+ with -XX:-EnableDynamicAgentLoading gives `0` and a
/// sentence. Only a parsable 0 after a 0 is success.
fn load_outcome(code: i32, text: &str) -> Result<(), String> {
    let first = text.lines().next().unwrap_or("").trim();
    let result = first
        .strip_prefix("return code:")
        .unwrap_or(first)
        .trim()
        .parse::<i32>();
    match (code, result) {
        (0, Ok(0)) => Ok(()),
        (0, Ok(n)) => Err(clip(&format!(
            "the agent failed to start: {}",
            agent_error(n)
        ))),
        _ if text.trim().is_empty() => Err(format!("error {code} without text")),
        _ => Err(clip(text)),
    }
}

/// What the instrument library's return codes mean (InvocationAdapter.c).
fn agent_error(code: i32) -> String {
    let why = match code {
        100 => "the jar cannot be opened or names no Agent-Class",
        101 => "the jar cannot be added to the class path",
        102 => "the agent class is missing or its agentmain threw",
        _ => "see the JVM's standard error",
    };
    format!("return code {code}, {why}")
}

/// A JVM's text for our log: control characters escaped, at most
/// [`REFUSAL_TEXT_MAX`] characters.
fn clip(text: &str) -> String {
    let escaped = crate::escape::terminal(text.trim());
    if escaped.chars().count() <= REFUSAL_TEXT_MAX {
        return escaped.into_owned();
    }
    let mut out: String = escaped.chars().take(REFUSAL_TEXT_MAX - 1).collect();
    out.push('…');
    out
}

// ---------------------------------------------------------------------------
// java.util.Properties text

/// Parses the `java.util.Properties` text format: `key=value`, `key:value`
/// or `key value` lines, `#`/`!` comments, backslash escapes (`\uXXXX`,
/// `\t`, `\n`, `\r`, `\f`, any other character as itself) and lines
/// continued by an odd number of trailing backslashes. Lenient where Java
/// throws (a malformed `\u` is kept as text). Later keys win.
fn parse_properties(text: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for line in logical_lines(text) {
        let (key, value) = split_key_value(&line);
        map.insert(unescape(key), unescape(value));
    }
    map
}

fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0c')
}

/// Joins continued lines (leading blanks of a continuation dropped) and
/// drops comments and blank lines; escapes stay for `unescape`.
fn logical_lines(text: &str) -> Vec<String> {
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for natural in normalized.split('\n') {
        let trimmed = natural.trim_start_matches(is_blank);
        let continuing = current.is_some();
        if !continuing && (trimmed.is_empty() || trimmed.starts_with(['#', '!'])) {
            continue;
        }
        let backslashes = trimmed.chars().rev().take_while(|&c| c == '\\').count();
        let mut line = current.take().unwrap_or_default();
        if backslashes % 2 == 1 {
            line.push_str(&trimmed[..trimmed.len() - 1]);
            current = Some(line);
        } else {
            line.push_str(trimmed);
            out.push(line);
        }
    }
    out.extend(current);
    out
}

/// Splits a logical line at the first unescaped `=`, `:` or blank; blanks
/// and one `=`/`:` around the separator are dropped.
fn split_key_value(line: &str) -> (&str, &str) {
    let mut escaped = false;
    let mut end = line.len();
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '=' || c == ':' || is_blank(c) {
            end = i;
            break;
        }
    }
    let (key, rest) = line.split_at(end);
    let rest = rest.trim_start_matches(is_blank);
    let rest = rest.strip_prefix(['=', ':']).unwrap_or(rest);
    (key, rest.trim_start_matches(is_blank))
}

/// Resolves backslash escapes. `\uXXXX` are UTF-16 units, so a surrogate
/// pair makes one character.
fn unescape(s: &str) -> String {
    let mut units: Vec<u16> = Vec::with_capacity(s.len());
    let mut chars = s.chars();
    let mut buf = [0u16; 2];
    while let Some(c) = chars.next() {
        let c = if c != '\\' {
            c
        } else {
            match chars.next() {
                None => break,
                Some('t') => '\t',
                Some('n') => '\n',
                Some('r') => '\r',
                Some('f') => '\x0c',
                Some('u') => {
                    let hex: String = chars.clone().take(4).collect();
                    match u16::from_str_radix(&hex, 16) {
                        Ok(unit)
                            if hex.len() == 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) =>
                        {
                            chars.nth(3);
                            units.push(unit);
                            continue;
                        }
                        _ => 'u',
                    }
                }
                Some(other) => other,
            }
        };
        units.extend_from_slice(c.encode_utf16(&mut buf));
    }
    String::from_utf16_lossy(&units)
}

// ---------------------------------------------------------------------------
// Small system helpers

fn c_name(s: &str) -> anyhow::Result<CString> {
    Ok(crate::fsat::name(s)?)
}

fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

fn deadline_passed() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "deadline passed")
}

fn open_at(dir: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    crate::fsat::open_at(dir, name, flags, 0)
}

/// `fstatat` without following a final symlink.
fn stat_at(dir: &OwnedFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: stat is plain old data; all zeroes is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated and `st` a live stat.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain old data; all zeroes is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a live stat, `fd` an open descriptor.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn set_timeout(sock: &OwnedFd, which: libc::c_int, timeout: Duration) -> io::Result<()> {
    // A zero timeval means "wait forever": never pass one.
    let timeout = timeout.max(Duration::from_micros(1));
    let tv = libc::timeval {
        tv_sec: timeout.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: `tv` is a live timeval of the size passed.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            which,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_long, 0 as libc::c_long) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `sig` (0: only checks the process is alive) through a pidfd.
fn pidfd_signal(pidfd: &OwnedFd, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: a null siginfo is allowed (the kernel fills in a kill-like one).
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd() as libc::c_long,
            sig as libc::c_long,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_long,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tjava: x\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\n\
Ngid:\t0\nPid:\t4242\nPPid:\t1\nUid:\t1000\t1001\t1000\t1001\nGid:\t2000\t2001\t2000\t2001\n\
NSpid:\t4242\t77\t1\nSigQ:\t0/63477\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n\
SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\nSigCgt:\t2000000181005ccf\n";

    #[test]
    fn status_fields() -> anyhow::Result<()> {
        let st = parse_status(STATUS)?;
        let want = Status {
            tgid: 4242,
            nspid: Some(1),
            uid: 1001,
            gid: 2001,
            quit_caught: true,
            quit_ignored: false,
        };
        assert_eq!(st, want);
        // Old kernels have no NSpid line: the pid is the JVM's own.
        let old = STATUS.replace("NSpid:\t4242\t77\t1\n", "");
        assert_eq!(parse_status(&old)?.nspid, None);
        let ignoring = STATUS.replace("SigIgn:\t0000000000000000", "SigIgn:\t0000000000000004");
        assert!(parse_status(&ignoring)?.quit_ignored);
        assert!(parse_status(&STATUS.replace("Uid:", "Xid:")).is_err());
        Ok(())
    }

    #[test]
    fn signal_masks() -> anyhow::Result<()> {
        assert!(signal_in_mask("0000000000000004", 3)?);
        assert!(signal_in_mask("fffffffffffffffb", 2)?);
        assert!(!signal_in_mask("fffffffffffffffb", 3)?);
        assert!(!signal_in_mask("0000000000000003", 3)?);
        assert!(signal_in_mask("8000000000000000", 64)?);
        assert!(signal_in_mask("4", 3)?);
        assert!(!signal_in_mask("4", 9)?);
        assert!(signal_in_mask("", 3).is_err());
        assert!(signal_in_mask("00zz", 3).is_err());
        Ok(())
    }

    #[test]
    fn start_ticks_after_a_tricky_name() -> anyhow::Result<()> {
        let stat =
            b"4242 (ja) va (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 2 0 0 20 0 30 0 987654 1 2";
        assert_eq!(parse_start_ticks(stat)?, 987654);
        assert!(parse_start_ticks(b"4242 (java) S 1").is_err());
        Ok(())
    }

    fn flags(cmdline: &str, environ: &str) -> Flags {
        option_flags(cmdline.replace(' ', "\0").as_bytes(), environ.as_bytes())
    }

    #[test]
    fn option_flags_from_cmdline_with_nuls() {
        let raw = b"/usr/bin/java\0-Xrs\0-cp\0/app\0Main\0";
        assert!(option_flags(raw, b"").reduced_signals);
        let none = flags("java -Xmx1g -cp /app Main", "");
        assert_eq!(none, Flags::default());
        let disabled = flags("java -XX:+DisableAttachMechanism -jar app.jar", "");
        assert!(disabled.attach_disabled);
        assert!(!disabled.reduced_signals);
    }

    #[test]
    fn option_flags_last_wins() {
        let on_off = "java -XX:+DisableAttachMechanism -XX:-DisableAttachMechanism Main";
        assert!(!flags(on_off, "").attach_disabled);
        let off_on = "java -XX:-DisableAttachMechanism -XX:+DisableAttachMechanism Main";
        assert!(flags(off_on, "").attach_disabled);
        // The command line overrides JAVA_TOOL_OPTIONS, _JAVA_OPTIONS
        // overrides the command line.
        let tool = "A=1\0JAVA_TOOL_OPTIONS=-Xmx1g -XX:+DisableAttachMechanism\0";
        assert!(flags("java Main", tool).attach_disabled);
        assert!(!flags("java -XX:-DisableAttachMechanism Main", tool).attach_disabled);
        let late = "_JAVA_OPTIONS=-XX:+DisableAttachMechanism\0";
        assert!(flags("java -XX:-DisableAttachMechanism Main", late).attach_disabled);
        assert!(flags("java Main", "JDK_JAVA_OPTIONS=  -Xrs \0").reduced_signals);
        // Another variable's value is not an option.
        assert!(!flags("java Main", "XJAVA_TOOL_OPTIONS=-Xrs\0").reduced_signals);
    }

    #[test]
    fn option_flags_after_the_main_class_are_the_programs() {
        // A program argument does not re-enable attaching...
        let cmd = "java -XX:+DisableAttachMechanism -cp -XX:-DisableAttachMechanism Main -XX:-DisableAttachMechanism";
        assert!(flags(cmd, "").attach_disabled);
        let jar = "java -XX:+DisableAttachMechanism -jar app.jar -XX:-DisableAttachMechanism";
        assert!(flags(jar, "").attach_disabled);
        // ... but -Xrs anywhere keeps us from signalling.
        assert!(flags("java -cp /app Main -Xrs", "").reduced_signals);
        assert!(flags("java -XX:+ReduceSignalUsage Main", "").reduced_signals);
    }

    #[test]
    fn properties_text() {
        let text = "#Mon Dec 07 06:33:04 UTC 2026\n\
java.version=17.0.15\n\
path.separator=\\:\n\
line.separator=\\n\n\
  ! a comment\n\
\n\
key\\=with\\:seps = value with spaces  \n\
spaced   value\n\
colon:v\n\
tab\\tkey=a\\tb\n\
empty=\n\
multi=one, \\\n    two, \\\r\n\tthree\n\
even=ends\\\\\n\
next=1\n\
latin=caf\\u00e9 \\u20AC\n\
emoji=\\uD83D\\uDE00\n\
bad=\\u12x\n\
java.version=25\n";
        let p = parse_properties(text);
        let get = |k: &str| p.get(k).map(String::as_str);
        assert_eq!(get("java.version"), Some("25"));
        assert_eq!(get("path.separator"), Some(":"));
        assert_eq!(get("line.separator"), Some("\n"));
        assert_eq!(get("key=with:seps"), Some("value with spaces  "));
        assert_eq!(get("spaced"), Some("value"));
        assert_eq!(get("colon"), Some("v"));
        assert_eq!(get("tab\tkey"), Some("a\tb"));
        assert_eq!(get("empty"), Some(""));
        assert_eq!(get("multi"), Some("one, two, three"));
        assert_eq!(get("even"), Some("ends\\"));
        assert_eq!(get("next"), Some("1"));
        assert_eq!(get("latin"), Some("café €"));
        assert_eq!(get("emoji"), Some("😀"));
        assert_eq!(get("bad"), Some("u12x"));
        assert_eq!(p.len(), 14);
    }

    #[test]
    fn properties_continuation_keeps_comment_like_lines() {
        let p = parse_properties("a=1\\\n#not a comment\nb=2\\");
        assert_eq!(p.get("a").map(String::as_str), Some("1#not a comment"));
        assert_eq!(p.get("b").map(String::as_str), Some("2"));
    }

    #[test]
    fn replies() -> anyhow::Result<()> {
        assert_eq!(
            parse_reply(b"0\nreturn code: 0\n")?,
            (0, "return code: 0\n".into())
        );
        let bogus = parse_reply(b"-1\nOperation bogus not recognized!")?;
        assert_eq!(bogus, (-1, "Operation bogus not recognized!".into()));
        assert_eq!(parse_reply(b"0")?, (0, String::new()));
        assert!(parse_reply(b"").is_err());
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\n").is_err());
        Ok(())
    }

    #[test]
    fn load_replies_as_seen_on_jdk_17_and_25() {
        let outcome = |raw: &[u8]| -> Result<(), String> {
            let (code, text) = parse_reply(raw).map_err(|e| e.to_string())?;
            load_outcome(code, &text)
        };
        // Success, JDK 17 and 25 alike; JDK 8 printed the bare result.
        assert_eq!(outcome(b"0\nreturn code: 0\n"), Ok(()));
        assert_eq!(outcome(b"0\n0\n"), Ok(()));
        // agentmain threw, or the class is missing / the jar unreadable.
        let threw = outcome(b"0\nreturn code: 102\n").unwrap_err();
        assert!(
            threw.contains("102") && threw.contains("agentmain"),
            "{threw}"
        );
        assert!(outcome(b"0\nreturn code: 100\n")
            .unwrap_err()
            .contains("100"));
        // A library that does not load: -1 on JDK 17, 0 on JDK 25.
        let jdk17 = b"-1\ninstrument was not loaded.\ninstrument: cannot open shared object file\n";
        let refusal = outcome(jdk17).unwrap_err();
        assert_eq!(
            refusal,
            "instrument was not loaded.\\ninstrument: cannot open shared object file"
        );
        let jdk25 =
            b"0\nnosuchlib was not loaded.\nlibnosuchlib.so: cannot open shared object file\n";
        assert!(outcome(jdk25)
            .unwrap_err()
            .starts_with("nosuchlib was not loaded."));
        let disabled = b"0\nDynamic agent loading is not enabled. Use -XX:+EnableDynamicAgentLoading to launch target VM.\n";
        assert!(outcome(disabled)
            .unwrap_err()
            .starts_with("Dynamic agent loading"));
        assert!(outcome(b"0\n").is_err());
        assert!(outcome(b"-1\n").is_err());
    }

    #[test]
    fn refusal_text_is_escaped_and_cut() {
        let clipped = clip(&format!("\x1b[2Jboom\r{}", "x".repeat(1000)));
        assert!(clipped.starts_with("\\x1b[2Jboom\\r"), "{clipped}");
        assert_eq!(clipped.chars().count(), REFUSAL_TEXT_MAX);
        assert!(clipped.ends_with('…'));
        assert_eq!(clip("  short \n"), "short");
    }

    #[test]
    fn requests() -> anyhow::Result<()> {
        assert_eq!(encode_request("properties", &[])?, b"1\0properties\0\0\0\0");
        let load = encode_request("load", &["instrument", "false", "/a.jar=x"])?;
        assert_eq!(load, b"1\0load\0instrument\0false\0/a.jar=x\0");
        assert!(encode_request("load", &["a", "b", "c", "d"]).is_err());
        assert!(encode_request("load", &["a\0b"]).is_err());
        assert!(encode_request("", &[]).is_err());
        assert!(encode_request("averyveryverylongname", &[]).is_err());
        assert!(encode_request("load", &[&"x".repeat(ARG_MAX + 1)]).is_err());
        Ok(())
    }

    #[test]
    fn refusals_before_any_signal() {
        // Our own process, which has no attach listener: every refusal
        // must come before any signal (a SIGQUIT would kill the test).
        let jvm = own_jvm(std::process::id());
        let deadline = Instant::now() + Duration::from_secs(1);
        let refused = |j: JvmProc| connect(&j, deadline).err().map(|e| e.to_string());
        let openj9 = refused(JvmProc {
            openj9: true,
            ..jvm.clone()
        });
        assert!(openj9.is_some_and(|e| e.contains("OpenJ9")));
        let disabled = refused(JvmProc {
            attach_disabled: true,
            ..jvm.clone()
        });
        assert!(disabled.is_some_and(|e| e.contains("DisableAttachMechanism")));
        let xrs = refused(JvmProc {
            reduced_signals: true,
            ..jvm.clone()
        });
        assert!(xrs.is_some_and(|e| e.contains("-Xrs")));
        // An inherited "ignore" is waited out (HotSpot installs its handler
        // over it); this process never catches SIGQUIT: no signal either.
        let ignoring = JvmProc {
            quit_ignored: true,
            ..jvm
        };
        let short = Instant::now() + Duration::from_millis(200);
        let waited = connect(&ignoring, short).err();
        let not_signalled = waited.as_ref().map(|e| e.to_string());
        assert!(
            not_signalled.is_some_and(|e| e.contains("not signalled")),
            "{waited:?}"
        );
    }

    /// A JvmProc for our own ids, naming files in a test directory.
    fn own_jvm(nspid: u32) -> JvmProc {
        // SAFETY: geteuid and getegid only read the ids.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        JvmProc {
            pid: std::process::id(),
            nspid,
            uid,
            gid,
            quit_caught: true,
            quit_ignored: false,
            reduced_signals: false,
            attach_disabled: false,
            openj9: false,
            // Not older than this process: it must pass for it.
            age: Duration::ZERO,
        }
    }

    fn dir_fd(path: &std::path::Path) -> anyhow::Result<OwnedFd> {
        use std::os::unix::ffi::OsStrExt;
        let name = CString::new(path.as_os_str().as_bytes())?;
        Ok(open_at(
            libc::AT_FDCWD,
            &name,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )?)
    }

    #[test]
    fn tmp_lookup_stays_in_the_root() -> anyhow::Result<()> {
        use std::os::unix::fs::{symlink, MetadataExt};
        let root = tempfile::tempdir()?;
        std::fs::create_dir(root.path().join("etc"))?;
        symlink("/etc", root.path().join("abs"))?;
        symlink("../../../../../etc", root.path().join("dots"))?;
        symlink("/proc/self/root/etc", root.path().join("magic"))?;
        let inside = std::fs::metadata(root.path().join("etc"))?.ino();
        let rootfd = dir_fd(root.path())?;
        assert_eq!(fstat(&open_in_root(&rootfd, c"abs")?)?.st_ino, inside);
        assert_eq!(fstat(&open_in_root(&rootfd, c"dots")?)?.st_ino, inside);
        assert!(open_in_root(&rootfd, c"magic").is_err());
        // Through the real /proc, a magic link is refused outright.
        let slash = dir_fd(std::path::Path::new("/"))?;
        let err = open_in_root(&slash, c"proc/self/root").err();
        assert_eq!(err.and_then(|e| e.raw_os_error()), Some(libc::ELOOP));
        Ok(())
    }

    #[test]
    fn trigger_file_is_ours_and_removed() -> anyhow::Result<()> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let tmp = tempfile::tempdir()?;
        let fd = dir_fd(tmp.path())?;
        let jvm = own_jvm(4242);
        let path = tmp.path().join(".attach_pid4242");
        let trigger = Trigger::create(&fd, &jvm)?;
        let meta = std::fs::symlink_metadata(&path)?;
        assert!(meta.is_file());
        assert_eq!(meta.uid(), jvm.uid);
        assert_eq!(meta.permissions().mode() & 0o077, 0);
        drop(trigger);
        assert!(!path.exists());
        // Someone else's (well-formed) trigger is used and left in place.
        std::fs::write(&path, "")?;
        drop(Trigger::create(&fd, &jvm)?);
        assert!(path.exists());
        Ok(())
    }

    #[test]
    fn planted_trigger_symlink_is_refused() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let fd = dir_fd(tmp.path())?;
        let target = tmp.path().join("victim");
        std::fs::write(&target, "keep")?;
        let path = tmp.path().join(".attach_pid4242");
        std::os::unix::fs::symlink(&target, &path)?;
        let err = Trigger::create(&fd, &own_jvm(4242))
            .err()
            .map(|e| format!("{e:#}"));
        assert!(err.is_some_and(|e| e.contains("not a regular file")));
        assert!(std::fs::symlink_metadata(&path)?.file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(&target)?, "keep");
        Ok(())
    }

    /// A fake listener: accepts once, reads a request, answers `reply`
    /// (or nothing, keeping the connection open for a while).
    fn fake_listener(
        path: &std::path::Path,
        reply: Option<&'static [u8]>,
    ) -> anyhow::Result<std::thread::JoinHandle<Vec<u8>>> {
        use std::io::Write as _;
        let server = std::os::unix::net::UnixListener::bind(path)?;
        Ok(std::thread::spawn(move || {
            let Ok((mut conn, _)) = server.accept() else {
                return Vec::new();
            };
            let mut request = vec![0u8; 4096];
            let n = conn.read(&mut request).unwrap_or(0);
            request.truncate(n);
            match reply {
                Some(r) => drop(conn.write_all(r)),
                None => std::thread::sleep(Duration::from_secs(2)),
            }
            request
        }))
    }

    #[test]
    fn command_through_the_fd_of_the_socket() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let fd = dir_fd(tmp.path())?;
        let server = fake_listener(&tmp.path().join(".java_pid4242"), Some(b"0\nhello\n"))?;
        let jvm = own_jvm(4242);
        let deadline = Instant::now() + Duration::from_secs(5);
        let stream = connect_socket(&jvm, &fd, c".java_pid4242", deadline)?;
        let listener = Listener {
            stream,
            pid: jvm.pid,
        };
        let reply = listener.command("properties", &[], deadline)?;
        assert_eq!(reply, (0, "hello\n".to_string()));
        let request = server.join().map_err(|_| anyhow!("server panicked"))?;
        assert_eq!(request, b"1\0properties\0\0\0\0");
        Ok(())
    }

    #[test]
    fn socket_symlink_is_not_followed() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let fd = dir_fd(tmp.path())?;
        let real = tmp.path().join("real.sock");
        let _server = std::os::unix::net::UnixListener::bind(&real)?;
        std::os::unix::fs::symlink(&real, tmp.path().join(".java_pid4242"))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let jvm = own_jvm(4242);
        assert!(connect_socket(&jvm, &fd, c".java_pid4242", deadline).is_err());
        assert_eq!(socket_id(&fd, c".java_pid4242", jvm.uid), None);
        Ok(())
    }

    #[test]
    fn a_silent_listener_costs_the_deadline_only() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let fd = dir_fd(tmp.path())?;
        let _server = fake_listener(&tmp.path().join(".java_pid4242"), None)?;
        let jvm = own_jvm(4242);
        let start = Instant::now();
        let deadline = start + Duration::from_millis(300);
        let stream = connect_socket(&jvm, &fd, c".java_pid4242", deadline)?;
        let listener = Listener {
            stream,
            pid: jvm.pid,
        };
        let result = listener.command("properties", &[], deadline);
        assert!(matches!(result, Err(Refusal::Io(_))), "{result:?}");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(1),
            "{took:?}"
        );
        Ok(())
    }

    #[test]
    fn inspect_self() -> anyhow::Result<()> {
        let me = inspect(std::process::id())?;
        assert!(!me.openj9);
        assert!(me.age < Duration::from_secs(24 * 3600 * 365));
        Ok(())
    }

    // Live checks against real JVMs, run by hand:
    //   PLAINSIGHT_TEST_JVMS=pid,pid PLAINSIGHT_TEST_AGENT_JAR=/tmp/x/agent.jar \
    //   PLAINSIGHT_TEST_REFUSED=pid,pid PLAINSIGHT_TEST_JAVA=/path/java,/path/java \
    //   PLAINSIGHT_TEST_CLASSPATH=/tmp/x PLAINSIGHT_TEST_OUT=/tmp/x/out \
    //   cargo test --lib jvm::attach -- --ignored --nocapture --test-threads 1

    fn env_list(name: &str) -> Vec<String> {
        // RUST_LOG=debug shows the steps and their timings.
        let _ = env_logger::builder().is_test(true).try_init();
        std::env::var(name)
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    #[test]
    #[ignore = "needs running JVMs (PLAINSIGHT_TEST_JVMS, PLAINSIGHT_TEST_AGENT_JAR, PLAINSIGHT_TEST_OUT)"]
    fn live_properties_and_agent() -> anyhow::Result<()> {
        let jar = std::env::var("PLAINSIGHT_TEST_AGENT_JAR")?;
        let out = std::env::var("PLAINSIGHT_TEST_OUT")?;
        for pid in env_list("PLAINSIGHT_TEST_JVMS") {
            let jvm = inspect(pid.parse()?)?;
            println!("{jvm:?}");
            let start = Instant::now();
            let props = properties(&jvm, start + Duration::from_secs(10))?;
            println!(
                "pid {pid}: java.version {:?} in {:?}",
                props.get("java.version"),
                start.elapsed()
            );
            anyhow::ensure!(props.contains_key("java.version"));
            let start = Instant::now();
            let options = format!("{out}/agent-{pid}.txt");
            load_agent(&jvm, &jar, &options, start + Duration::from_secs(10))?;
            println!("pid {pid}: agent loaded in {:?}", start.elapsed());
            let failed = load_agent(
                &jvm,
                &jar,
                "throw",
                Instant::now() + Duration::from_secs(10),
            );
            println!("pid {pid}: throwing agent: {failed:?}");
            anyhow::ensure!(matches!(failed, Err(Refusal::Refused(_))));
        }
        Ok(())
    }

    #[test]
    #[ignore = "needs running JVMs started with -Xrs or attach disabled (PLAINSIGHT_TEST_REFUSED)"]
    fn live_refused() -> anyhow::Result<()> {
        for pid in env_list("PLAINSIGHT_TEST_REFUSED") {
            let jvm = inspect(pid.parse()?)?;
            let result = properties(&jvm, Instant::now() + Duration::from_secs(5));
            let version = result.as_ref().map(|p| p.get("java.version"));
            println!("pid {pid}: {version:?}");
            // A -Xrs JVM may be attached through the listener it started by
            // itself; otherwise both must be refused (and not signalled).
            let fine = match &result {
                Ok(_) => jvm.reduced_signals,
                Err(Refusal::ReducedSignals) => jvm.reduced_signals,
                Err(Refusal::AttachDisabled) => jvm.attach_disabled,
                Err(_) => false,
            };
            anyhow::ensure!(fine, "pid {pid}: unexpected outcome");
        }
        Ok(())
    }

    #[test]
    #[ignore = "starts JVMs (PLAINSIGHT_TEST_JAVA, PLAINSIGHT_TEST_CLASSPATH, PLAINSIGHT_TEST_OUT)"]
    fn live_young_jvm_survives() -> anyhow::Result<()> {
        let classpath = std::env::var("PLAINSIGHT_TEST_CLASSPATH")?;
        let out = std::env::var("PLAINSIGHT_TEST_OUT")?;
        for java in env_list("PLAINSIGHT_TEST_JAVA") {
            for round in 0..5 {
                let log_path = format!("{out}/young-{round}.log");
                let mut child = std::process::Command::new(&java)
                    .args(["-cp", &classpath, "Sleeper"])
                    .stdout(File::create(&log_path)?)
                    .spawn()?;
                let result = young_attach(child.id());
                let alive = child.try_wait()?.is_none();
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log_path)?;
                let dumped = log.contains("Full thread dump");
                println!("{java} round {round}: alive {alive}, dump {dumped}, {result:?}");
                anyhow::ensure!(alive && !dumped, "the JVM died or dumped its threads");
                result?;
            }
        }
        Ok(())
    }

    fn young_attach(pid: u32) -> anyhow::Result<()> {
        let start = Instant::now();
        // The agent meets a JVM once `java` is executed: a wrapper (setpriv,
        // a shell) must have exec'd it first.
        while !std::fs::read_link(format!("/proc/{pid}/exe"))?.ends_with("java") {
            anyhow::ensure!(start.elapsed() < Duration::from_secs(2), "java not exec'd");
            std::thread::sleep(Duration::from_millis(1));
        }
        let jvm = inspect(pid)?;
        println!(
            "  at inspect: age {:?}, quit caught {}",
            jvm.age, jvm.quit_caught
        );
        let props = properties(&jvm, start + Duration::from_secs(20))?;
        println!(
            "  java.version {:?} after {:?}",
            props.get("java.version"),
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }
}
