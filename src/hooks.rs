//! The kernel hooks and which program type serves each: the one place that
//! decides it.
//!
//! The spec hooks the kernel with fexit programs: mmap (executable files),
//! tcp_sendmsg (the ClientHello) and tcp_recvmsg (the ServerHello). At start
//! the agent loads, per hook, an empty fexit program on that function
//! (`bpf/probe.bpf.c`); where it loads, the hook is served by BPF
//! trampolines, elsewhere by syscall tracepoints (kernels that refuse
//! trampolines, like this project's CI kernel). Both paths emit the same
//! events. `--tracepoints` forces the tracepoint path.

use std::fmt;
use std::mem::MaybeUninit;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};

/// Program types a hook can be served by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Tracepoint,
    RawTracepoint,
    Fentry,
    Fexit,
}

impl fmt::Display for HookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HookKind::Tracepoint => "tracepoint",
            HookKind::RawTracepoint => "raw_tracepoint",
            HookKind::Fentry => "fentry",
            HookKind::Fexit => "fexit",
        })
    }
}

/// One BPF program and where it attaches.
#[derive(Debug, Clone, Copy)]
pub struct Hook {
    /// What it does, in the spec's words.
    pub spec: &'static str,
    /// The BPF program that serves it.
    pub program: &'static str,
    pub kind: HookKind,
    /// Where it attaches.
    pub target: &'static str,
}

const fn tp(spec: &'static str, program: &'static str, target: &'static str) -> Hook {
    Hook {
        spec,
        program,
        kind: HookKind::Tracepoint,
        target,
    }
}

const fn tramp(
    spec: &'static str,
    program: &'static str,
    kind: HookKind,
    target: &'static str,
) -> Hook {
    Hook {
        spec,
        program,
        kind,
        target,
    }
}

/// How one spec hook is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// fexit (with an fentry noting the arguments where the call consumes
    /// them), as the spec says.
    Trampoline,
    Tracepoint,
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Path::Trampoline => "fexit",
            Path::Tracepoint => "tracepoint",
        })
    }
}

/// A hook of the spec, its two ways, and the function probed to choose.
pub struct SpecHook {
    pub name: &'static str,
    /// The kernel function the fexit path hooks (probed at start).
    pub function: &'static str,
    pub trampoline: &'static [Hook],
    pub tracepoint: &'static [Hook],
}

/// Executable file mappings (discover.bpf.c).
pub const MMAP: SpecHook = SpecHook {
    name: "mmap",
    function: "vm_mmap_pgoff",
    trampoline: &[tramp(
        "mmap of an executable file",
        "discover_mmap_fexit",
        HookKind::Fexit,
        "vm_mmap_pgoff",
    )],
    tracepoint: &[
        tp(
            "mmap of an executable file (arguments)",
            "discover_mmap_enter",
            "syscalls/sys_enter_mmap",
        ),
        tp(
            "mmap of an executable file (result)",
            "discover_mmap_exit",
            "syscalls/sys_exit_mmap",
        ),
    ],
};

/// ClientHello on the send path (statictls.bpf.c).
pub const TCP_SEND: SpecHook = SpecHook {
    name: "tcp_sendmsg",
    function: "tcp_sendmsg",
    trampoline: &[
        tramp(
            "ClientHello on send (buffer)",
            "static_tcp_send_entry",
            HookKind::Fentry,
            "tcp_sendmsg",
        ),
        tramp(
            "ClientHello on send",
            "static_tcp_send_exit",
            HookKind::Fexit,
            "tcp_sendmsg",
        ),
    ],
    tracepoint: &[
        tp(
            "ClientHello on send (write)",
            "static_write",
            "syscalls/sys_enter_write",
        ),
        tp(
            "ClientHello on send (sendto)",
            "static_sendto",
            "syscalls/sys_enter_sendto",
        ),
        tp(
            "ClientHello on send (writev)",
            "static_writev",
            "syscalls/sys_enter_writev",
        ),
        tp(
            "ClientHello on send (sendmsg)",
            "static_sendmsg",
            "syscalls/sys_enter_sendmsg",
        ),
        // Erlang's records, walked over the bytes each send took.
        tp(
            "Erlang records sent (write)",
            "static_write_exit",
            "syscalls/sys_exit_write",
        ),
        tp(
            "Erlang records sent (sendto)",
            "static_sendto_exit",
            "syscalls/sys_exit_sendto",
        ),
        tp(
            "Erlang records sent (writev)",
            "static_writev_exit",
            "syscalls/sys_exit_writev",
        ),
        tp(
            "Erlang records sent (sendmsg)",
            "static_sendmsg_exit",
            "syscalls/sys_exit_sendmsg",
        ),
    ],
};

/// ServerHello on the receive path (statictls.bpf.c).
pub const TCP_RECV: SpecHook = SpecHook {
    name: "tcp_recvmsg",
    function: "tcp_recvmsg",
    trampoline: &[
        tramp(
            "ServerHello on receive (buffer)",
            "static_tcp_recv_entry",
            HookKind::Fentry,
            "tcp_recvmsg",
        ),
        tramp(
            "ServerHello on receive",
            "static_tcp_recv_exit",
            HookKind::Fexit,
            "tcp_recvmsg",
        ),
    ],
    tracepoint: &[
        tp(
            "ServerHello on receive (read)",
            "static_read_enter",
            "syscalls/sys_enter_read",
        ),
        tp(
            "ServerHello on receive (read)",
            "static_read_exit",
            "syscalls/sys_exit_read",
        ),
        tp(
            "ServerHello on receive (recvfrom)",
            "static_recvfrom_enter",
            "syscalls/sys_enter_recvfrom",
        ),
        tp(
            "ServerHello on receive (recvfrom)",
            "static_recvfrom_exit",
            "syscalls/sys_exit_recvfrom",
        ),
    ],
};

/// Hooks with a single way, always attached.
pub const DISCOVER_EXEC: &[Hook] = &[tp(
    "main executable mapped at exec",
    "discover_exec",
    "sched/sched_process_exec",
)];

/// The static-TLS path's process tracking (attached at start).
pub const STATIC_PROCESS: &[Hook] = &[
    tp(
        "watch executions of static TLS executables",
        "static_exec",
        "sched/sched_process_exec",
    ),
    tp(
        "watch their children",
        "static_fork",
        "sched/sched_process_fork",
    ),
    tp(
        "forget exited threads",
        "static_exit",
        "sched/sched_process_exit",
    ),
];

/// Servers of the C-API libraries (openssl.bpf.c): the ClientHello a thread
/// in SSL_do_handshake / SSL_accept / gnutls_handshake reads names its
/// connection. Syscall tracepoints on every kernel (attached at start), at
/// exit only: the buffer is in the registers saved at entry.
pub const SERVER_HELLO: &[Hook] = &[
    tp(
        "ClientHello read by a server (read)",
        "accept_read_ret",
        "syscalls/sys_exit_read",
    ),
    tp(
        "ClientHello read by a server (recvfrom)",
        "accept_recvfrom_ret",
        "syscalls/sys_exit_recvfrom",
    ),
];

/// Clients of an OpenSSL-family library that has no probed call setting
/// the server name (a trimmed library without `SSL_ctrl`): the ClientHello
/// their handshake thread sends names the connection. Attached once such a
/// library is instrumented (a host without one pays nothing per write).
pub const CLIENT_HELLO: &[Hook] = &[
    tp(
        "ClientHello sent by a client not named through a probed call (write)",
        "accept_write",
        "syscalls/sys_enter_write",
    ),
    tp(
        "ClientHello sent by a client not named through a probed call (sendto)",
        "accept_sendto",
        "syscalls/sys_enter_sendto",
    ),
];

/// The socket of a C-API library's connection (openssl.bpf.c,
/// tlssock.bpf.h): the descriptor of the syscall a TLS call makes on its
/// own thread while it is in flight. A raw tracepoint on every kernel
/// (cheaper per syscall than eight syscall tracepoints), attached once a
/// C-API library has a wanted connection.
pub const TLS_SOCKET: &[Hook] = &[Hook {
    spec: "socket of a TLS call (its syscalls)",
    program: "tls_sock_sys_enter",
    kind: HookKind::RawTracepoint,
    target: "sys_enter",
}];

/// The path chosen for each spec hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub mmap: Path,
    pub tcp_send: Path,
    pub tcp_recv: Path,
}

impl Plan {
    fn pick(h: &SpecHook, p: Path) -> &'static [Hook] {
        match p {
            Path::Trampoline => h.trampoline,
            Path::Tracepoint => h.tracepoint,
        }
    }

    /// discover.bpf.c programs to load and attach.
    pub fn discover(&self) -> Vec<Hook> {
        DISCOVER_EXEC
            .iter()
            .chain(Plan::pick(&MMAP, self.mmap))
            .copied()
            .collect()
    }

    /// statictls.bpf.c send/receive programs (attached once a static TLS
    /// executable is found).
    pub fn static_io(&self) -> Vec<Hook> {
        Plan::pick(&TCP_SEND, self.tcp_send)
            .iter()
            .chain(Plan::pick(&TCP_RECV, self.tcp_recv))
            .copied()
            .collect()
    }

    /// Programs of the path not taken: not loaded at all.
    pub fn unused(&self) -> Vec<&'static str> {
        let other = |h: &SpecHook, p: Path| match p {
            Path::Trampoline => h.tracepoint,
            Path::Tracepoint => h.trampoline,
        };
        [
            (&MMAP, self.mmap),
            (&TCP_SEND, self.tcp_send),
            (&TCP_RECV, self.tcp_recv),
        ]
        .into_iter()
        .flat_map(|(h, p)| other(h, p).iter().map(|k| k.program))
        .collect()
    }

    /// One line for the start-up log.
    pub fn summary(&self) -> String {
        format!(
            "kernel hooks: {} via {}, {} via {}, {} via {}",
            MMAP.name, self.mmap, TCP_SEND.name, self.tcp_send, TCP_RECV.name, self.tcp_recv
        )
    }
}

/// Set while probing: libbpf's messages about the expected refusals are
/// not shown (`route_libbpf_messages` reads it).
static PROBING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sends libbpf's messages to the log; while hooks are probed, its messages
/// about the expected refusals only at trace level.
pub fn route_libbpf_messages() {
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, |lvl, msg| {
        let msg = msg.trim_end();
        if PROBING.load(std::sync::atomic::Ordering::Relaxed) {
            log::trace!("libbpf (probing hooks): {msg}");
            return;
        }
        match lvl {
            libbpf_rs::PrintLevel::Warn => log::warn!("libbpf: {msg}"),
            libbpf_rs::PrintLevel::Info => log::debug!("libbpf: {msg}"),
            libbpf_rs::PrintLevel::Debug => log::trace!("libbpf: {msg}"),
        }
    })));
}

/// Whether an empty fexit program on `function` loads in this kernel.
fn trampoline_loads(function: &str) -> bool {
    let mut storage = MaybeUninit::uninit();
    let Ok(mut open) = crate::bpf::probe::ProbeSkelBuilder::default().open(&mut storage) else {
        return false;
    };
    let p = &mut open.progs;
    p.probe_mmap.set_autoload(function == MMAP.function);
    p.probe_tcp_sendmsg
        .set_autoload(function == TCP_SEND.function);
    p.probe_tcp_recvmsg
        .set_autoload(function == TCP_RECV.function);
    let loaded = open.load().is_ok();
    loaded
}

/// Decides the path of every spec hook (`force_tracepoints`: `--tracepoints`).
pub fn plan(force_tracepoints: bool) -> Plan {
    let choose = |h: &SpecHook| {
        if !force_tracepoints && trampoline_loads(h.function) {
            Path::Trampoline
        } else {
            Path::Tracepoint
        }
    };
    PROBING.store(true, std::sync::atomic::Ordering::Relaxed);
    let plan = Plan {
        mmap: choose(&MMAP),
        tcp_send: choose(&TCP_SEND),
        tcp_recv: choose(&TCP_RECV),
    };
    PROBING.store(false, std::sync::atomic::Ordering::Relaxed);
    plan
}

/// "program (kind target), ..." for the log.
pub fn list(hooks: &[Hook]) -> String {
    hooks
        .iter()
        .map(|h| format!("{} ({} {})", h.program, h.kind, h.target))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Prints the hooks in use (`--hooks`).
pub fn describe(plan: &Plan) -> String {
    let mut s = format!("{}\nkernel hooks:\n", plan.summary());
    for h in plan
        .discover()
        .iter()
        .chain(STATIC_PROCESS)
        .chain(SERVER_HELLO)
        .chain(CLIENT_HELLO)
        .chain(TLS_SOCKET)
        .chain(plan.static_io().iter())
    {
        s.push_str(&format!(
            "  {:<40} {:<11} {:<22} {}\n",
            h.spec,
            h.kind.to_string(),
            h.program,
            h.target
        ));
    }
    s.push_str(&crate::probes::describe());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_path_lists_the_other_as_unused() {
        let p = Plan {
            mmap: Path::Trampoline,
            tcp_send: Path::Tracepoint,
            tcp_recv: Path::Trampoline,
        };
        let used: Vec<&str> = p
            .discover()
            .iter()
            .chain(p.static_io().iter())
            .map(|h| h.program)
            .collect();
        assert!(used.contains(&"discover_mmap_fexit") && used.contains(&"static_write"));
        assert!(used.contains(&"static_tcp_recv_exit") && !used.contains(&"static_read_exit"));
        let unused = p.unused();
        assert!(
            unused.contains(&"discover_mmap_enter") && unused.contains(&"static_tcp_send_exit")
        );
        for u in &unused {
            assert!(!used.contains(u), "{u} both used and unused");
        }
        assert_eq!(
            p.summary(),
            "kernel hooks: mmap via fexit, tcp_sendmsg via tracepoint, tcp_recvmsg via fexit"
        );
    }
}
