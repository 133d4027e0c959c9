//! Text quoted from files into messages: names, keys, class names and URLs come from files a
//! stranger may have written, so before they reach a terminal their control characters are
//! escaped (a carriage return or an ESC sequence could otherwise draw a forged line over the
//! real one) and their length is bounded. [`escape`] is applied to every error line the
//! binary prints ([`error_line`]); [`quote`] and [`list`] bound what a message quotes.

use std::fmt::Write;

/// The most characters of one quoted name a message shows.
pub const QUOTED_CHARS: usize = 100;

/// The most names a message lists before "and N more".
pub const LISTED: usize = 10;

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
    let line = escape(&line);
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

/// `s` with every control character (C0, DEL, C1) and the Unicode line and paragraph
/// separators written as an escape (`\r`, `\n`, `\t`, `\u{1b}`), so that printing it can
/// neither move the cursor nor start a new line.
pub fn escape(s: &str) -> String {
    if !s.chars().any(needs_escape) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// Errors unless `name` (a class name, which every command prints) is free of control
/// characters; `what` says where it came from.
pub fn check_name(what: &str, name: &str) -> anyhow::Result<()> {
    if name.chars().any(needs_escape) {
        anyhow::bail!(
            "{what} {} holds a control character (a line break, a carriage return, an escape \
             sequence): class names are printed, so they may not",
            quote(name)
        );
    }
    Ok(())
}

/// A name quoted from a file: escaped, and cut to its first [`QUOTED_CHARS`] characters with
/// the length of the whole said after it.
pub fn quote(s: &str) -> String {
    let n = s.chars().count();
    if n <= QUOTED_CHARS {
        return escape(s);
    }
    let head: String = s.chars().take(QUOTED_CHARS).collect();
    format!("{}… ({n} characters)", escape(&head))
}

/// Names quoted from a file, comma-separated: the first [`LISTED`], each [`quote`]d, then
/// "and N more".
pub fn list<S: AsRef<str>>(names: &[S]) -> String {
    join_first(names.iter().map(|s| quote(s.as_ref())), names.len())
}

/// Items already built with [`quote`]d names, comma-separated: the first [`LISTED`], then
/// "and N more".
pub fn first<S: AsRef<str>>(items: &[S]) -> String {
    join_first(items.iter().map(|s| escape(s.as_ref())), items.len())
}

fn join_first(items: impl Iterator<Item = String>, n: usize) -> String {
    let mut out: Vec<String> = items.take(LISTED).collect();
    if n > LISTED {
        out.push(format!("and {} more", n - LISTED));
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_nothing_else_changes() {
        assert_eq!(escape("conv1.weight"), "conv1.weight");
        assert_eq!(escape("ünïcødé 猴痘"), "ünïcødé 猴痘");
        assert_eq!(
            escape("a\rwrote OUT.pt\x1b[2K\n\u{9b}\u{2028}"),
            "a\\rwrote OUT.pt\\u{1b}[2K\\n\\u{9b}\\u{2028}"
        );
        assert!(!escape("\x00\x07\x7f").chars().any(char::is_control));
    }

    #[test]
    fn a_class_name_with_a_control_character_is_refused_by_name() {
        assert!(check_name("class name", "Monkey Pox").is_ok());
        let e = check_name("class name", "Others\r\x1b[2Kwrote")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("class name Others\\r\\u{1b}[2Kwrote holds a control"),
            "{e}"
        );
    }

    #[test]
    fn a_long_name_is_cut_and_its_length_said() {
        let long = "k".repeat(5000);
        let q = quote(&long);
        assert!(q.starts_with(&"k".repeat(QUOTED_CHARS)));
        assert!(q.ends_with("… (5000 characters)"), "{q}");
        assert!(q.len() < 200);
        assert_eq!(quote("short"), "short");
    }

    #[test]
    fn a_list_shows_ten_names_then_how_many_more() {
        let names: Vec<String> = (0..25).map(|i| format!("n{i}")).collect();
        let l = list(&names);
        assert!(l.starts_with("n0, n1, "), "{l}");
        assert!(l.contains("n9, and 15 more"), "{l}");
        assert!(!l.contains("n10"));
        assert_eq!(list(&["a", "b"]), "a, b");
    }
}
