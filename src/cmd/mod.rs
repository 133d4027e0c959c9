//! One module per subcommand: each turns its raw arguments into a validated configuration,
//! then runs.

pub mod compare;
pub mod cv;
pub mod doctor;
pub mod eval;
pub mod explain;
pub mod export;
pub mod import;
pub mod predict;
pub mod recipe;
pub mod report;
pub mod serve;
pub mod shell;
pub mod summary;
pub mod train;

/// The flags among `given` (clap argument ids) that are not in `allowed`, as `--flag-name`.
pub fn other_flags(given: &[String], allowed: &[&str]) -> Vec<String> {
    given
        .iter()
        .filter(|id| !allowed.contains(&id.as_str()))
        .map(|id| format!("--{}", id.replace('_', "-")))
        .collect()
}
