//! The `inception` binary: parses the command line and runs one subcommand.

use std::process::ExitCode;

use clap::Parser;
use inception::cli::{Cli, Command};
use inception::cmd;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cmd::error_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Train(args) => cmd::train::run(&args),
        Command::Eval(args) => cmd::eval::run(&args),
        Command::Summary(args) => cmd::summary::run(&args),
        Command::Import(args) => cmd::import::run(&args),
        Command::Predict(args) => cmd::predict::run(&args),
    }
}
