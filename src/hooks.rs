//! The kernel hooks and which program type serves each: the one place that
//! decides it.
//!
//! The spec hooks the kernel with fexit programs (mmap, tcp_sendmsg,
//! tcp_recvmsg). Kernels that refuse BPF trampolines (this project's CI
//! kernel, which also lacks kprobes) get the tracepoint path, which emits the
//! same events.

use std::fmt;

/// Program types a hook can be served by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Tracepoint,
}

impl fmt::Display for HookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HookKind::Tracepoint => "tracepoint",
        })
    }
}

/// One kernel-side hook of the spec.
#[derive(Debug, Clone, Copy)]
pub struct Hook {
    /// What the spec hooks, in its words.
    pub spec: &'static str,
    /// The BPF program that serves it.
    pub program: &'static str,
    pub kind: HookKind,
    /// Where it attaches.
    pub target: &'static str,
}

/// Discovery of executable files (spec: fexit on mmap).
pub const DISCOVER: &[Hook] = &[
    Hook {
        spec: "main executable mapped at exec",
        program: "discover_exec",
        kind: HookKind::Tracepoint,
        target: "sched/sched_process_exec",
    },
    Hook {
        spec: "mmap of an executable file (arguments)",
        program: "discover_mmap_enter",
        kind: HookKind::Tracepoint,
        target: "syscalls/sys_enter_mmap",
    },
    Hook {
        spec: "mmap of an executable file (result)",
        program: "discover_mmap_exit",
        kind: HookKind::Tracepoint,
        target: "syscalls/sys_exit_mmap",
    },
];

/// A hook of the static-TLS path; `process` ones are attached at start, the
/// others once a static TLS executable is found.
#[derive(Debug, Clone, Copy)]
pub struct StaticHook {
    pub hook: Hook,
    pub process: bool,
}

const fn tp(spec: &'static str, program: &'static str, target: &'static str, process: bool) -> StaticHook {
    StaticHook { hook: Hook { spec, program, kind: HookKind::Tracepoint, target }, process }
}

/// The static-TLS path (spec: fexit on tcp_sendmsg / tcp_recvmsg).
pub const STATIC_TLS: &[StaticHook] = &[
    tp("watch executions of static TLS executables", "static_exec", "sched/sched_process_exec", true),
    tp("watch their children", "static_fork", "sched/sched_process_fork", true),
    tp("forget exited threads", "static_exit", "sched/sched_process_exit", true),
    tp("ClientHello on send (write)", "static_write", "syscalls/sys_enter_write", false),
    tp("ClientHello on send (sendto)", "static_sendto", "syscalls/sys_enter_sendto", false),
    tp("ClientHello on send (writev)", "static_writev", "syscalls/sys_enter_writev", false),
    tp("ClientHello on send (sendmsg)", "static_sendmsg", "syscalls/sys_enter_sendmsg", false),
    tp("ServerHello on receive (read)", "static_read_enter", "syscalls/sys_enter_read", false),
    tp("ServerHello on receive (read)", "static_read_exit", "syscalls/sys_exit_read", false),
    tp("ServerHello on receive (recvfrom)", "static_recvfrom_enter", "syscalls/sys_enter_recvfrom", false),
    tp("ServerHello on receive (recvfrom)", "static_recvfrom_exit", "syscalls/sys_exit_recvfrom", false),
];

/// Prints the hook table (`--hooks`).
pub fn describe() -> String {
    let mut s = String::from("kernel hooks:\n");
    for h in DISCOVER {
        s.push_str(&format!("  {:<40} {:<11} {:<22} {}\n", h.spec, h.kind.to_string(), h.program, h.target));
    }
    for h in STATIC_TLS {
        let h = h.hook;
        s.push_str(&format!("  {:<40} {:<11} {:<22} {}\n", h.spec, h.kind.to_string(), h.program, h.target));
    }
    s.push_str(
        "user-space hooks: uprobes/uretprobes on SSL_write, SSL_read, SSL_write_ex, SSL_read_ex, SSL_free, \
         SSL_ctrl, SSL_set_tlsext_host_name; EVP_AEAD_CTX_init_with_direction, _seal, _seal_scatter, _open, _cleanup\n",
    );
    s
}
