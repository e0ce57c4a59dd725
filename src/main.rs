use std::process::ExitCode;

use clap::Parser;
use kicky_agent::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    kicky_agent::logging::init(cli.log_format, cli.verbose);
    kicky_agent::harden::no_core_dumps();
    kicky_agent::redact::redact_panics();
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => kicky_agent::error::report(&err),
    }
}
