//! `inception completions SHELL` and `inception man`: shell completion scripts (clap_complete)
//! and roff manual pages (clap_mangen), generated from the same clap definitions as `--help`,
//! so they cannot drift from the command line.

use std::fs;
use std::io::Write;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};

pub fn completions(args: &CompletionsArgs) -> Result<()> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "inception", &mut out);
    std::io::stdout()
        .write_all(&out)
        .context("writing to stdout")
}

pub fn man(args: &ManArgs) -> Result<()> {
    let cmd = Cli::command();
    let Some(dir) = &args.out else {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        return std::io::stdout()
            .write_all(&out)
            .context("writing to stdout");
    };
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("writing manual pages into {}", dir.display()))?;
    let mut pages: Vec<String> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".1"))
        .collect();
    pages.sort();
    println!(
        "wrote {} manual pages into {}: {} (read one with man -l {})",
        pages.len(),
        dir.display(),
        pages.join(", "),
        dir.join("inception.1").display()
    );
    Ok(())
}
