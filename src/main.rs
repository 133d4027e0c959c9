//! The `inception` binary: parses the command line and runs one subcommand.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use inception::cli::{given_flags, Cli, Command};
use inception::{cmd, text};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", text::error_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    inception::runtime::retain_freed_memory();
    let command = Cli::command();
    let matches = command.clone().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Some(why) = inception::cli::usage_error(&cli) {
        let mut command = command.clone();
        command
            .error(clap::error::ErrorKind::ArgumentConflict, why)
            .exit();
    }
    if let Some((name, sub)) = matches.subcommand() {
        let given = command
            .find_subcommand(name)
            .map(|c| given_flags(c, sub))
            .unwrap_or_default();
        match &mut cli.command {
            Command::Train(args) => args.given = given,
            Command::Cv(args) => args.given = given,
            _ => {}
        }
    }
    // The server's clients and data-parallel peers are sockets that may close at any time.
    let sockets = matches!(cli.command, Command::Serve(_))
        || inception::dist::World::from_env().is_ok_and(|w| w.is_some());
    if !sockets {
        inception::runtime::end_quietly_on_closed_pipe();
    }
    match cli.command {
        Command::Train(args) => cmd::train::run(&args),
        Command::Cv(args) => cmd::cv::run(&args),
        Command::Compare(args) => cmd::compare::run(&args),
        Command::Eval(args) => cmd::eval::run(&args),
        Command::Summary(args) => cmd::summary::run(&args),
        Command::Import(args) => cmd::import::run(&args),
        Command::Predict(args) => cmd::predict::run(&args),
        Command::Serve(args) => cmd::serve::run(&args),
        Command::Export(args) => cmd::export::run(&args),
        Command::Doctor(args) => cmd::doctor::run(&args),
        Command::Explain(args) => cmd::explain::run(&args),
        Command::Report(args) => cmd::report::run(&args),
        Command::Completions(args) => cmd::shell::completions(&args),
        Command::Man(args) => cmd::shell::man(&args),
    }
}
