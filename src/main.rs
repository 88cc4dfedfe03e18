//! The `plainsight` command: parse the command line, set up logging, run the
//! agent (`plainsight::agent`).

use clap::Parser;

use plainsight::{agent, cli, config, hooks};

fn main() {
    let cli = cli::Cli::parse();
    // Log lines carry process names and paths from traced processes:
    // escaped, so that none can write control characters to the terminal.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(&cli.log_level))
        .format(plainsight::escape::log_format)
        .init();
    hooks::route_libbpf_messages();
    if cli.inventory {
        if let Err(e) = plainsight::inventory::run(cli.output, cli.max_elf_size, !cli.no_java) {
            eprintln!("plainsight: error: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    if cli.hooks {
        print!("{}", hooks::describe(&hooks::plan(cli.tracepoints)));
        return;
    }
    if let Err(e) = config::Settings::from_cli(cli).and_then(agent::run) {
        let e = format!("{e:#}");
        eprintln!("plainsight: error: {}", plainsight::escape::terminal(&e));
        std::process::exit(1);
    }
}
