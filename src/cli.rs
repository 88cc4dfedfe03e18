//! Command line.

use std::path::PathBuf;

use clap::Parser;

use crate::output::Format;

/// Upper bound of --max-capture (MAX_CHUNKS * DATA_CHUNK).
pub const MAX_CAPTURE_LIMIT: u64 = (crate::abi::MAX_CHUNKS * crate::abi::DATA_CHUNK) as u64;

/// plainsight shows the plaintext of the TLS traffic of every process on this
/// host: what programs hand their TLS library before encryption and get back
/// after decryption. It needs root (BPF, uprobes, ptrace) and a kernel with BTF.
///
/// Files that processes map are inspected as they are mapped (processes are
/// held paused for that short time); OpenSSL-family libraries (OpenSSL 1.1/3,
/// BoringSSL, AWS-LC, static libssl, node) get uprobes on SSL_write/SSL_read
/// and their _ex variants. Each successful call is printed with its process,
/// direction, connection and bytes.
#[derive(Debug, Parser)]
#[command(name = "plainsight", version, verbatim_doc_comment)]
pub struct Cli {
    /// Only capture from this process id (repeatable).
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Only capture from processes with this name, as in /proc/PID/comm
    /// (first 15 characters; repeatable).
    #[arg(short = 'c', long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
    pub output: Format,

    /// Write output to FILE (created with mode 0600) instead of stdout.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub write: Option<PathBuf>,

    /// Bytes captured per call at most; larger calls are cut and flagged
    /// "truncated". Calls up to this size arrive whole.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20,
          value_parser = clap::value_parser!(u64).range(1..=MAX_CAPTURE_LIMIT))]
    pub max_capture: u64,

    /// Longest time a process is held paused while its files are inspected.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub max_pause_ms: u64,

    /// Size of the plaintext ring buffer, in MiB (a power of two).
    #[arg(long, value_name = "MIB", default_value_t = 32)]
    pub ring_buffer_mib: u32,

    /// Largest executable file inspected, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 30)]
    pub max_elf_size: u64,

    /// Print the kernel and user-space hooks used, then exit.
    #[arg(long)]
    pub hooks: bool,

    /// More log output on stderr (-v: debug, -vv: trace).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Testing aid: delay every inspection by this long (shows pausing).
    #[arg(long, hide = true, default_value_t = 0)]
    pub test_inspect_delay_ms: u64,
}
