//! The `inception` binary: parses the command line and runs one subcommand.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use inception::cli::{given_flags, Cli, Command};
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
    inception::runtime::retain_freed_memory();
    let command = Cli::command();
    let matches = command.clone().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let (Command::Train(args), Some(("train", sub)), Some(train)) = (
        &mut cli.command,
        matches.subcommand(),
        command.find_subcommand("train"),
    ) {
        args.given = given_flags(train, sub);
    }
    match cli.command {
        Command::Train(args) => cmd::train::run(&args),
        Command::Eval(args) => cmd::eval::run(&args),
        Command::Summary(args) => cmd::summary::run(&args),
        Command::Import(args) => cmd::import::run(&args),
        Command::Predict(args) => cmd::predict::run(&args),
    }
}
