//! What the agent runs with: the command line and the `--config` file,
//! merged and checked once, then handed out in one direction to the parts
//! that use it (kernel objects, pause thread, inspection, output).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::cli::Cli;
use crate::output;
pub use crate::peer::{EndpointFilter, PeerPrefix};
use crate::sni::{self, Pattern};

/// The `--config` file (YAML).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub sni: Vec<String>,
    #[serde(default)]
    pub capture_no_sni: bool,
    #[serde(default)]
    pub pids: Vec<u32>,
    #[serde(default)]
    pub comms: Vec<String>,
    #[serde(default)]
    pub redact_headers: Vec<String>,
    #[serde(default)]
    pub containers: Vec<String>,
}

impl ConfigFile {
    /// Reads and parses a config file.
    pub fn read(path: &Path) -> Result<ConfigFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        serde_saphyr::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))
    }
}

/// Which processes are looked at (in the kernel).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub pids: Vec<u32>,
    /// Process names as in /proc/PID/comm.
    pub comms: Vec<String>,
    /// Container id prefixes (12 to 64 lower-case hex digits).
    pub containers: Vec<String>,
    /// `--port`: connections with one of these ports at either end.
    pub ports: Vec<u16>,
    /// `--peer`: connections whose other end is in one of these prefixes.
    pub peers: Vec<PeerPrefix>,
}

impl Filter {
    /// A process name as the kernel keys it: NUL-padded, at most 15 bytes.
    pub fn comm_key(name: &str) -> [u8; 16] {
        let mut k = [0u8; 16];
        let b = name.as_bytes();
        let n = b.len().min(15);
        k[..n].copy_from_slice(&b[..n]);
        k
    }

    /// The kernel's key of a container id prefix: its first 12 hex digits
    /// as a number (filter.h, container_key).
    pub fn container_key(prefix: &str) -> u64 {
        prefix.bytes().take(12).fold(0u64, |k, b| {
            k << 4 | u64::from((b as char).to_digit(16).unwrap_or(0))
        })
    }

    /// Checks and normalizes `--container` values.
    pub fn container_prefixes(given: &[String]) -> Result<Vec<String>> {
        given
            .iter()
            .map(|c| {
                let c = c.trim().to_ascii_lowercase();
                if (12..=64).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(c)
                } else {
                    bail!("--container {c:?}: give 12 to 64 hex digits of a container id")
                }
            })
            .collect()
    }

    /// The endpoint part (`--port`, `--peer`).
    pub fn endpoints(&self) -> EndpointFilter {
        EndpointFilter {
            ports: self.ports.clone(),
            peers: self.peers.clone(),
        }
    }

    /// Whether a container id starts with one of `--container`'s prefixes.
    pub fn container_matches(prefixes: &[String], id: &str) -> bool {
        prefixes.iter().any(|p| id.starts_with(p.as_str()))
    }

    /// Whether a container id passes the `--container` prefixes.
    pub fn wants_container(&self, id: Option<&str>) -> bool {
        self.containers.is_empty()
            || id.is_some_and(|id| Filter::container_matches(&self.containers, id))
    }

    /// Whether a process found at start-up passes the filter.
    pub fn wants(&self, pid: u32, comm: &str) -> bool {
        (self.pids.is_empty() || self.pids.contains(&pid))
            && (self.comms.is_empty()
                || self
                    .comms
                    .iter()
                    .any(|c| Filter::comm_key(c) == Filter::comm_key(comm)))
            && (self.containers.is_empty()
                || self.wants_container(
                    crate::container::of_pid(pid)
                        .as_ref()
                        .map(|c| c.id.as_str()),
                ))
    }
}

/// What the BPF objects are loaded with.
#[derive(Debug, Clone)]
pub struct KernelSettings {
    pub filter: Filter,
    pub patterns: Vec<Pattern>,
    pub capture_no_sni: bool,
    /// Bytes captured per call at most.
    pub max_capture: u32,
    /// Size of each data ring buffer.
    pub ring_buffer_bytes: u32,
    /// Serve the spec's kernel hooks with tracepoints even where fexit loads.
    pub tracepoints: bool,
    /// Keep the return probes in every process even when filters are given
    /// (`--host-wide-returns`).
    pub host_wide_returns: bool,
}

impl KernelSettings {
    /// Whether return probes are attached per process, to the processes
    /// with a wanted connection: when filters are given (most processes'
    /// calls are then not captured, and pay the entry probe only). When
    /// everything is captured, every TLS process would ask, and a probe in
    /// every process costs less than holding each.
    pub fn returns_per_process(&self) -> bool {
        let f = &self.filter;
        let filtered = !self.patterns.is_empty()
            || !f.pids.is_empty()
            || !f.comms.is_empty()
            || !f.containers.is_empty()
            || !f.ports.is_empty()
            || !f.peers.is_empty();
        filtered && !self.host_wide_returns
    }
}

/// How files are inspected.
#[derive(Debug, Clone)]
pub struct InspectSettings {
    /// Largest file inspected, in bytes.
    pub max_elf_size: u64,
    /// Place probes inside functions (`--probe-at-entry` turns it off).
    pub inner: bool,
    /// Log every placement decision at info level.
    pub explain: bool,
    /// Testing aid: delay every inspection.
    pub delay: Duration,
    /// Longest inspection of one file; past it the file is left
    /// uninstrumented and reported.
    pub budget: Duration,
    /// Testing aid: inspecting a file whose path contains this blocks.
    pub stall_path: Option<String>,
    /// The inspection cache on disk (None: memory only).
    pub cache_dir: Option<std::path::PathBuf>,
    /// Attach the probes of the TLS files the cache on disk knows at start.
    pub warm_start: bool,
}

/// How processes are held.
#[derive(Debug, Clone)]
pub struct PauseSettings {
    pub max_pause: Duration,
    /// Testing aid: stop processes this late.
    pub late_stop: Duration,
}

/// Everything the agent runs with.
pub struct Settings {
    pub kernel: KernelSettings,
    pub java: crate::jvm::JvmSettings,
    pub inspect: InspectSettings,
    pub pause: PauseSettings,
    pub output: output::Options,
    pub telemetry: TelemetrySettings,
}

/// Fleet outputs.
#[derive(Debug, Clone, Default)]
pub struct TelemetrySettings {
    pub otlp: Option<crate::telemetry::otlp::OtlpSettings>,
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl TelemetrySettings {
    fn from_cli(cli: &Cli) -> TelemetrySettings {
        use crate::telemetry::otlp::{parse_pairs, OtlpSettings};
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        TelemetrySettings {
            otlp: cli.otlp_endpoint.clone().map(|endpoint| OtlpSettings {
                endpoint,
                protocol: cli.otlp_protocol,
                headers: env("OTEL_EXPORTER_OTLP_HEADERS")
                    .map(|h| parse_pairs(&h))
                    .unwrap_or_default(),
                service_name: env("OTEL_SERVICE_NAME"),
                resource: env("OTEL_RESOURCE_ATTRIBUTES")
                    .map(|h| parse_pairs(&h))
                    .unwrap_or_default(),
                logs: cli.otlp_logs,
            }),
            metrics_addr: cli.metrics_addr,
        }
    }
}

/// Size of each data ring buffer, in bytes, from `--ring-buffer-mib`.
fn ring_buffer_bytes(mib: u32) -> Result<u32> {
    if mib == 0 || !mib.is_power_of_two() || mib > 1024 {
        bail!("--ring-buffer-mib must be a power of two between 1 and 1024, not {mib}");
    }
    Ok(mib * 1024 * 1024)
}

impl Settings {
    /// Merges the `--config` file into the command line (the command line
    /// adds to it) and checks everything: bad server-name patterns are
    /// refused here, naming them, before anything is loaded.
    pub fn from_cli(mut cli: Cli) -> Result<Settings> {
        if let Some(path) = &cli.config {
            let f = ConfigFile::read(path)?;
            cli.sni.extend(f.sni);
            cli.capture_no_sni |= f.capture_no_sni;
            cli.pids.extend(f.pids);
            cli.comms.extend(f.comms);
            cli.redact_headers.extend(f.redact_headers);
            cli.containers.extend(f.containers);
        }
        let output = cli.output_options();
        let telemetry = TelemetrySettings::from_cli(&cli);
        let java = crate::jvm::JvmSettings {
            enabled: !cli.no_java,
            filter: Filter {
                pids: cli.pids.clone(),
                comms: cli.comms.clone(),
                containers: cli.containers.clone(),
                ports: Vec::new(),
                peers: Vec::new(),
            },
        };
        Ok(Settings {
            java,
            kernel: KernelSettings {
                filter: Filter {
                    pids: cli.pids,
                    comms: cli.comms,
                    containers: Filter::container_prefixes(&cli.containers)?,
                    ports: cli.ports.clone(),
                    peers: cli.peers.clone(),
                },
                patterns: sni::parse_all(&cli.sni)?,
                capture_no_sni: cli.capture_no_sni,
                max_capture: u32::try_from(cli.max_capture)
                    .context("--max-capture is larger than 4 GiB")?,
                ring_buffer_bytes: ring_buffer_bytes(cli.ring_buffer_mib)?,
                tracepoints: cli.tracepoints,
                host_wide_returns: cli.host_wide_returns,
            },
            inspect: InspectSettings {
                max_elf_size: cli.max_elf_size,
                inner: !cli.probe_at_entry,
                explain: cli.explain,
                delay: Duration::from_millis(cli.test_inspect_delay_ms),
                budget: Duration::from_millis(cli.max_inspect_ms),
                stall_path: cli.test_stall_path.clone(),
                cache_dir: (!cli.no_cache_dir).then(|| cli.cache_dir.clone()),
                warm_start: !cli.no_warm_start,
            },
            pause: PauseSettings {
                max_pause: Duration::from_millis(cli.max_pause_ms),
                late_stop: Duration::from_millis(cli.test_late_stop_ms),
            },
            output,
            telemetry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn yaml_config_adds_to_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(
            &p,
            "sni:\n  - '*.acme.com'\n  - api.*\ncapture_no_sni: true\npids: [12]\nredact_headers: [x-api-key]\n",
        )
        .unwrap();
        let args = [
            "plainsight",
            "--sni",
            "x.org",
            "--config",
            p.to_str().unwrap(),
        ];
        let s = Settings::from_cli(Cli::parse_from(args)).unwrap();
        let pats: Vec<String> = s.kernel.patterns.iter().map(|p| p.to_string()).collect();
        assert_eq!(pats, ["x.org", "*.acme.com", "api.*"]);
        assert!(s.kernel.capture_no_sni);
        assert_eq!(s.kernel.filter.pids, [12]);
        assert!(s.output.redact.applies("X-Api-Key"));
        std::fs::write(&p, "snis: [a]\n").unwrap();
        let e = Settings::from_cli(Cli::parse_from(args)).err().unwrap();
        assert!(format!("{e:#}").contains("invalid config file"), "{e:#}");
    }

    #[test]
    fn ring_buffer_size_is_checked() {
        assert_eq!(ring_buffer_bytes(32).unwrap(), 32 << 20);
        for bad in [0, 3, 2048] {
            assert!(ring_buffer_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn start_up_filter() {
        let f = Filter {
            pids: vec![],
            comms: vec!["a-very-long-process-name".into()],
            ..Default::default()
        };
        assert!(f.wants(1, "a-very-long-pro"));
        assert!(!f.wants(1, "curl"));
        assert!(Filter::default().wants(7, "x"));
    }
}
