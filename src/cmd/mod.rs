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

/// An error's whole chain on one line (`{:#}`), without the C++ stack trace libtorch appends
/// to its messages.
pub fn error_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let text = match text.find("Exception raised from") {
        Some(i) => text[..i].trim_end().to_string(),
        None => text,
    };
    let line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    // Whatever a message quotes from a file, it can neither draw on the terminal nor flood it.
    let line = crate::text::escape(&line);
    match line.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => format!(
            "{}… ({} more characters)",
            &line[..cut],
            line[cut..].chars().count()
        ),
        None => line,
    }
}

/// The longest error line printed.
const MAX_ERROR_CHARS: usize = 4000;

/// A CSV field, quoted when it holds a comma, a quote or a line break.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The flags among `given` (clap argument ids) that are not in `allowed`, as `--flag-name`.
pub fn other_flags(given: &[String], allowed: &[&str]) -> Vec<String> {
    given
        .iter()
        .filter(|id| !allowed.contains(&id.as_str()))
        .map(|id| format!("--{}", id.replace('_', "-")))
        .collect()
}
