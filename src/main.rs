//! `parkcast`: one command-line entry to every part of the product. Each subcommand is glue: it parses
//! arguments, calls into the crates and prints a summary.

mod cli;
mod progress;
mod report;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    telemetry::init(&cli.global);
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
