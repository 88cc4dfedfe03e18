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
/// held paused for that short time) and TLS code gets uprobes: the OpenSSL
/// family (OpenSSL 1.1/3, BoringSSL, AWS-LC, static libssl, node), GnuTLS,
/// NSS, mbedTLS, wolfSSL, rustls over aws-lc-rs or ring, and Go's crypto/tls. By default each HTTP
/// exchange (HTTP/1.1, HTTP/2, gRPC) is printed as one access-log line;
/// other streams are shown raw.
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

    /// Only capture connections with this port at either end (a server's
    /// port: 5432 for PostgreSQL, say); repeatable. Applied in the kernel.
    #[arg(long = "port", value_name = "N")]
    pub ports: Vec<u16>,

    /// Only capture connections whose other end is in this network
    /// (10.0.0.0/8, 2001:db8::/32, 192.0.2.7); repeatable. Applied in the
    /// kernel.
    #[arg(long = "peer", value_name = "ADDR[/PREFIX]")]
    pub peers: Vec<crate::peer::PeerPrefix>,

    /// Only capture from processes in this container: 12 or more hex digits
    /// of its id, as `docker ps` or `podman ps` show (repeatable; checked in
    /// the kernel by cgroup; needs the cgroup v2 or hybrid hierarchy).
    #[arg(long = "container", value_name = "ID")]
    pub containers: Vec<String>,

    /// Capture only connections whose TLS server name matches PATTERN: an
    /// exact name (api.acme.com), a suffix (*.acme.com) or a prefix (api.*).
    /// Case-insensitive; repeatable; matched inside the kernel. Without any,
    /// every connection is captured.
    #[arg(long = "sni", value_name = "PATTERN")]
    pub sni: Vec<String>,

    /// With --sni: also capture connections without a server name (clients
    /// connecting to IP addresses, and the servers' side of them).
    #[arg(long)]
    pub capture_no_sni: bool,

    /// YAML file with `sni`, `capture_no_sni`, `pids`, `comms`,
    /// `redact_headers` (the command-line options add to it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Output format: an access-log line per HTTP exchange (text), or a
    /// JSON object per exchange (json). Non-HTTP streams are shown raw.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
    pub output: Format,

    /// Write output to FILE (created with mode 0600) instead of stdout.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub write: Option<PathBuf>,

    /// Show each TLS call's plaintext as captured (one record per call),
    /// without HTTP decoding.
    #[arg(long)]
    pub raw: bool,

    /// Also write the plaintext streams as TCP packets to a pcapng FILE
    /// (mode 0600) for Wireshark/tshark; process, pid and server name are in
    /// packet comments.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,

    /// Console detail: -v adds headers, -vv bodies.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Export one OpenTelemetry span per decoded HTTP exchange to this
    /// collector (gRPC: its URL, as http://host:4317; HTTP/protobuf: its base
    /// URL, as http://host:4318, to which /v1/traces is added). Headers from
    /// OTEL_EXPORTER_OTLP_HEADERS, resource attributes from
    /// OTEL_RESOURCE_ATTRIBUTES, service.name from OTEL_SERVICE_NAME (else
    /// each process's name).
    #[arg(long, value_name = "URL", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// OTLP transport.
    #[arg(
        long,
        value_enum,
        value_name = "PROTOCOL",
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        default_value = "http/protobuf"
    )]
    pub otlp_protocol: crate::telemetry::otlp::OtlpProtocol,

    /// Also export each exchange's header fields and bodies (redacted) as
    /// OTLP log records tied to its span.
    #[arg(long, requires = "otlp_endpoint")]
    pub otlp_logs: bool,

    /// Serve Prometheus metrics on HOST:PORT/metrics (no port is opened
    /// without it).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Also mask the values of this header (repeatable; Authorization,
    /// Proxy-Authorization, Cookie and Set-Cookie always are).
    #[arg(long = "redact-header", value_name = "NAME")]
    pub redact_headers: Vec<String>,

    /// Show secret header values (Authorization, Cookie, ...) unmasked.
    /// Database passwords are masked whatever this says.
    #[arg(long)]
    pub no_redact: bool,

    /// Database query text (PostgreSQL, MySQL, Redis) in records and spans:
    /// `sanitized` replaces literals by `?` (SQL strings and numbers, Redis
    /// arguments after the key), as OpenTelemetry's conventions ask of
    /// instrumentations by default, since literals carry user data; `full`
    /// shows it as sent.
    #[arg(long, value_enum, value_name = "MODE", default_value = "sanitized")]
    pub db_query_text: crate::decode::db::QueryText,

    /// Bytes captured per call at most; larger calls are cut and flagged
    /// "truncated". Calls up to this size arrive whole.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20,
          value_parser = clap::value_parser!(u64).range(1..=MAX_CAPTURE_LIMIT))]
    pub max_capture: u64,

    /// Longest time a process is held paused while its files are inspected.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub max_pause_ms: u64,

    /// Longest inspection of one file; past it the file is left
    /// uninstrumented (and reported), its processes released.
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    pub max_inspect_ms: u64,

    /// Size of each plaintext ring buffer, in MiB (a power of two). The
    /// default holds 160 ms of the ~200 MB/s this agent captures without
    /// loss on its reference machine. The agent reads it every 10 ms while
    /// records come, every 100 ms when idle, and at once when it is a
    /// quarter full.
    #[arg(long, value_name = "MIB", default_value_t = 32)]
    pub ring_buffer_mib: u32,

    /// Largest executable file inspected, in bytes (the parts parsed are
    /// read into memory; all of it for Go and stripped executables).
    #[arg(long, value_name = "BYTES", default_value_t = 512 << 20)]
    pub max_elf_size: u64,

    /// Put every uprobe at its function's entry, with uretprobes for return
    /// values (what other tracers do; ~10x the cost per call here). By
    /// default probes go on instructions the kernel emulates inside the
    /// functions, where that is proven safe.
    #[arg(long)]
    pub probe_at_entry: bool,

    /// With filters (--sni, --pid, --comm, --container), keep the return
    /// probes of SSL_write/SSL_read & co. in every process, as without
    /// filters. By default they are attached only to processes that have a
    /// wanted connection (held once, at its first: 0.1-25 ms here), so that
    /// other processes pay the entry probe only.
    #[arg(long)]
    pub host_wide_returns: bool,

    /// Where inspection results are kept across restarts (a directory the
    /// agent makes root's and 0700, or refuses). A restarted agent then
    /// holds a process only for the attach of a file it knows.
    #[arg(long, default_value = "/var/cache/plainsight", value_name = "DIR")]
    pub cache_dir: std::path::PathBuf,

    /// Keep inspection results in memory only.
    #[arg(long)]
    pub no_cache_dir: bool,

    /// Do not attach, at start, the probes of the TLS files the cache on
    /// disk knows. By default each such file still at its path with the
    /// same content is instrumented before any process maps it, so that a
    /// restarted agent holds that process only for its bookkeeping.
    #[arg(long)]
    pub no_warm_start: bool,

    /// Never load plainsight's Java agent into JVMs (JSSE, the JDK's TLS,
    /// is then not captured). By default every JVM the process filters let
    /// through gets it, through HotSpot's dynamic attach.
    #[arg(long)]
    pub no_java: bool,

    /// Log, per instrumented file and function, where the probes went
    /// (entry or inner offset) and why.
    #[arg(long)]
    pub explain: bool,

    /// Serve the spec's kernel hooks (mmap, tcp_sendmsg, tcp_recvmsg) with
    /// syscall tracepoints even where the kernel allows fexit programs.
    #[arg(long, env = "PLAINSIGHT_TRACEPOINTS", value_parser = clap::builder::BoolishValueParser::new())]
    pub tracepoints: bool,

    /// Print the map of what stays dark, then exit: each running process's
    /// files that carry TLS code, their stack, and whether they are
    /// captured (and why not). Pauses no process, attaches no probe;
    /// `--output json` prints one object a row.
    #[arg(long)]
    pub inventory: bool,

    /// Print the kernel and user-space hooks used, then exit.
    #[arg(long)]
    pub hooks: bool,

    /// Agent log level on stderr: error, warn, info, debug, trace (RUST_LOG
    /// overrides).
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,

    /// Testing aid: delay every inspection by this long (shows pausing).
    #[arg(long, hide = true, default_value_t = 0)]
    pub test_inspect_delay_ms: u64,

    /// Testing aid: inspecting a file whose path contains this text blocks
    /// for 60 s (as a read on a stalled filesystem would).
    #[arg(long, hide = true, value_name = "TEXT")]
    pub test_stall_path: Option<String>,

    /// Testing aid: stop processes this long after their mapping is seen
    /// (shows how a late stop is reported).
    #[arg(long, hide = true, default_value_t = 0)]
    pub test_late_stop_ms: u64,
}

impl Cli {
    /// What the output thread produces.
    pub fn output_options(&self) -> crate::output::Options {
        crate::output::Options {
            format: self.output,
            detail: self.verbose,
            raw: self.raw,
            write: self.write.clone(),
            pcap: self.pcap.clone(),
            redact: if self.no_redact {
                crate::decode::Redact::none()
            } else {
                crate::decode::Redact::new(&self.redact_headers)
            },
            db_query_text: self.db_query_text,
        }
    }
}
