//! One module per subcommand: each turns its raw arguments into a validated configuration,
//! then runs.

pub mod eval;
pub mod import;
pub mod predict;
pub mod summary;
pub mod train;

/// An error's whole chain on one line (`{:#}`), without the C++ stack trace libtorch appends
/// to its messages.
pub fn error_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let text = match text.find("Exception raised from") {
        Some(i) => text[..i].trim_end().to_string(),
        None => text,
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
