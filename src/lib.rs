//! plainsight: the plaintext of every process's TLS traffic.
//!
//! The modules follow the flow of the agent:
//! discover (BPF reports executable files as they are mapped) -> pause
//! (ptrace) -> inspect (ELF symbols, probe placement) -> attach (uprobes) ->
//! capture (BPF copies plaintext; records reassembled per call) -> decode
//! (streams, HTTP/1, HTTP/2) -> output (access log, JSON, pcapng).
//!
//! The binary (`src/main.rs`), the tests and the fuzz harnesses all use this
//! library.

#![warn(clippy::too_many_lines)]

/// Locks a mutex even if a holder panicked: what is guarded with it
/// (counters, label caches, a pending job) stays meaningful.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub mod abi;
pub mod agent;
pub mod attach;
pub mod bpf;
pub mod capture;
pub mod cli;
pub mod config;
pub mod container;
pub mod decode;
pub mod discover;
pub mod escape;
pub mod files;
pub mod fsat;
pub mod fuzzing;
pub mod hooks;
pub mod inspect;
pub mod inventory;
pub mod jvm;
pub mod kernel;
pub mod output;
pub mod pause;
pub mod peer;
pub mod probes;
pub mod record;
pub mod sni;
pub mod telemetry;
pub mod tracefs;
