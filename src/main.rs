//! plainsight: the plaintext of every process's TLS traffic.
//!
//! The flow follows the spec: discover (BPF reports executable files as they
//! are mapped) -> pause (ptrace) -> inspect (ELF symbols) -> attach (uprobes)
//! -> capture (BPF copies plaintext) -> decode (streams, HTTP/1, HTTP/2) ->
//! output (access log, JSON, pcapng).

mod abi;
mod agent;
mod bpf;
mod capture;
mod cli;
mod decode;
mod discover;
mod hooks;
mod inspect;
mod output;
mod pause;
mod sni;

use clap::Parser;

fn main() {
    let mut cli = cli::Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(&cli.log_level))
        .format_target(false)
        .init();
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, |lvl, msg| {
        let msg = msg.trim_end();
        if hooks::PROBING.load(std::sync::atomic::Ordering::Relaxed) {
            log::trace!("libbpf (probing hooks): {msg}");
            return;
        }
        match lvl {
            libbpf_rs::PrintLevel::Warn => log::warn!("libbpf: {msg}"),
            libbpf_rs::PrintLevel::Info => log::debug!("libbpf: {msg}"),
            libbpf_rs::PrintLevel::Debug => log::trace!("libbpf: {msg}"),
        }
    })));
    if cli.hooks {
        print!("{}", hooks::describe(&hooks::plan(cli.tracepoints)));
        return;
    }
    if let Err(e) = cli.apply_config().and_then(|()| agent::run(cli)) {
        eprintln!("plainsight: error: {e:#}");
        std::process::exit(1);
    }
}
