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

/// Prints the hook table (`--hooks`).
pub fn describe() -> String {
    let mut s = String::from("kernel hooks:\n");
    for h in DISCOVER {
        s.push_str(&format!("  {:<40} {:<11} {:<22} {}\n", h.spec, h.kind.to_string(), h.program, h.target));
    }
    s.push_str("user-space hooks: uprobes/uretprobes on SSL_write, SSL_read, SSL_write_ex, SSL_read_ex, SSL_free\n");
    s
}
