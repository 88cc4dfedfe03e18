//! The `plainsight` command: parse the command line, set up logging, run the
//! agent (`plainsight::agent`).

use clap::Parser;

use plainsight::{agent, cli, config, hooks};

fn main() {
    let cli = cli::Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(&cli.log_level))
        .format_target(false)
        .init();
    hooks::route_libbpf_messages();
    if cli.hooks {
        print!("{}", hooks::describe(&hooks::plan(cli.tracepoints)));
        return;
    }
    if let Err(e) = config::Settings::from_cli(cli).and_then(agent::run) {
        eprintln!("plainsight: error: {e:#}");
        std::process::exit(1);
    }
}
