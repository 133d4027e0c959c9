//! The docs are tested: README.md and every page under docs/ (snapbox for the matching).
//!
//! The conventions the tests hold the docs to:
//! - Every code fence names its language.
//! - A `console` block runs. Each line starting with `$ ` is a command, which must be
//!   `$ inception …`; the lines after it, up to the next `$ ` line, are its output as a
//!   terminal shows it (stdout and stderr as written). In the output, `...` on a line of its own
//!   stands for any lines, `[..]` within a line for any text (timings, img/s, losses), `[CWD]`
//!   for the folder the commands run in and `[VERSION]` for the tool's version. A command whose
//!   output has a line starting with `error:` must fail; every other one must succeed.
//! - Any other block with a line that calls `inception` is not run, and says why on the line
//!   just before it: `<!-- not run: REASON -->`; its subcommand and every `--flag` it names must
//!   still exist.
//! - The commands of one page run in order, in one fresh folder holding `data/` (the bundled
//!   MSLD), `configs/`, `img.jpg` (an MSLD photo), `runs/cv/` (a 3-fold cv of the smoke config,
//!   two epochs a fold) and `runs/train/` (the same trained on every image with that
//!   cv's calibration: what `make train` makes, in half a minute), made once for the test, with no CUDA device visible, fp32
//!   (`INCEPTION_PRECISION`, so that what `auto` takes on this CPU does not show) and downloads
//!   off.
//! - `docs/cli/<subcommand>.md` exists for every subcommand and opens with its `--help`.
//!
//! `INCEPTION_DOCS_BLESS=1 cargo test --release --test integration docs::` rewrites the `--help` blocks from
//! the binary (the only output that is regenerated; the rest is written by a person);
//! `INCEPTION_DOCS_BLESS=all` rewrites every output that differs, for a person to redact again
//! (a new machine: a trained network's figures follow the CPU).

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The README's length limit, in lines.
const README_LINES: usize = 160;

/// One fenced block of a Markdown file.
#[derive(Debug)]
struct Block {
    file: PathBuf,
    /// 1-based line of the opening fence.
    line: usize,
    lang: String,
    body: Vec<String>,
    /// The text of the nearest non-empty line before the fence.
    before: String,
}

/// One command of a `console` block and the output it shows.
#[derive(Debug)]
struct Example {
    /// 1-based line of the `$ ` line.
    line: usize,
    command: String,
    output: String,
}

/// README.md and every Markdown page under docs/, README first.
fn pages() -> Vec<PathBuf> {
    let root = common::repo();
    let mut out = vec![root.join("README.md")];
    let mut stack = vec![root.join("docs")];
    let mut found = vec![];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "md") {
                found.push(p);
            }
        }
    }
    found.sort();
    out.extend(found);
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(common::repo())
        .unwrap_or(p)
        .display()
        .to_string()
}

/// The fenced blocks of `file`, and the lines outside them (1-based number, text).
fn parse(file: &Path) -> (Vec<Block>, Vec<(usize, String)>) {
    let text = fs::read_to_string(file).unwrap();
    let mut blocks = vec![];
    let mut prose = vec![];
    let mut open: Option<Block> = None;
    let mut before = String::new();
    for (i, l) in text.lines().enumerate() {
        let fence = l.trim_start().starts_with("```");
        match open.take() {
            Some(b) if fence => blocks.push(b),
            Some(mut b) => {
                b.body.push(l.to_string());
                open = Some(b);
            }
            None if fence => {
                open = Some(Block {
                    file: file.to_path_buf(),
                    line: i + 1,
                    lang: l.trim_start().trim_start_matches('`').trim().to_string(),
                    body: vec![],
                    before: before.clone(),
                })
            }
            None => {
                if !l.trim().is_empty() {
                    before = l.trim().to_string();
                }
                prose.push((i + 1, l.to_string()));
            }
        }
    }
    assert!(
        open.is_none(),
        "{}: a code fence is never closed",
        rel(file)
    );
    (blocks, prose)
}

fn all_blocks() -> Vec<Block> {
    pages().iter().flat_map(|p| parse(p).0).collect()
}

/// The examples of a `console` block.
fn examples(b: &Block) -> Vec<Example> {
    let mut out: Vec<Example> = vec![];
    for (i, l) in b.body.iter().enumerate() {
        if let Some(cmd) = l.strip_prefix("$ ") {
            out.push(Example {
                line: b.line + 1 + i,
                command: cmd.to_string(),
                output: String::new(),
            });
        } else if let Some(e) = out.last_mut() {
            e.output.push_str(l);
            e.output.push('\n');
        }
    }
    out
}

/// Whether a line of a shell block runs `inception` (after a prompt and `VAR=value`s).
fn calls_inception(line: &str) -> bool {
    let l = line.trim_start().trim_start_matches("$ ");
    l.split_whitespace()
        .find(|w| !w.contains('='))
        .is_some_and(|w| w == "inception" || w.ends_with("/inception"))
}

/// GitHub's anchor of a heading's text.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a page's headings.
fn anchors(file: &Path) -> BTreeSet<String> {
    parse(file)
        .1
        .iter()
        .filter(|(_, l)| l.starts_with('#'))
        .map(|(_, l)| anchor(l.trim_start_matches('#')))
        .collect()
}

/// The subcommands, from the clap definition.
fn subcommands() -> Vec<String> {
    use clap::CommandFactory;
    inception::cli::Cli::command()
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .filter(|n| n != "help")
        .collect()
}

#[test]
fn every_fence_names_its_language_and_every_command_line_is_inception() {
    let mut bad = vec![];
    for b in all_blocks() {
        let at = format!("{}:{}", rel(&b.file), b.line);
        if b.lang.is_empty() {
            bad.push(format!("{at}: a fence without a language"));
        }
        if b.lang == "console" {
            let ex = examples(&b);
            if ex.is_empty() {
                bad.push(format!("{at}: a console block without a `$ ` line"));
            }
            for e in ex {
                if !e.command.starts_with("inception ") && e.command != "inception" {
                    bad.push(format!(
                        "{}:{}: `$ {}` does not start with inception",
                        rel(&b.file),
                        e.line,
                        e.command
                    ));
                }
            }
        } else if b.body.iter().any(|l| calls_inception(l))
            && !(b.before.starts_with("<!-- not run: ") && b.before.ends_with("-->"))
        {
            bad.push(format!(
                "{at}: a {} block that calls inception is neither a console block nor marked \
                 `<!-- not run: REASON -->` on the line before it",
                b.lang
            ));
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let link = |s: &str| -> Vec<String> {
        let mut out = vec![];
        let mut rest = s;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            match after.find(')') {
                Some(j) => {
                    out.push(after[..j].to_string());
                    rest = &after[j..];
                }
                None => break,
            }
        }
        out
    };
    let mut bad = vec![];
    let mut checked = 0;
    for page in pages() {
        for (n, l) in parse(&page).1 {
            for target in link(&l) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, frag) = match target.split_once('#') {
                    Some((p, f)) => (p, Some(f)),
                    None => (target.as_str(), None),
                };
                let file = if path.is_empty() {
                    page.clone()
                } else {
                    page.parent().unwrap().join(path)
                };
                if !file.exists() {
                    bad.push(format!("{}:{n}: {target}: no such file", rel(&page)));
                    continue;
                }
                if let Some(f) = frag {
                    if !anchors(&file).contains(f) {
                        bad.push(format!("{}:{n}: {target}: no such heading", rel(&page)));
                    }
                }
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} links found: the parser lost them"
    );
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

#[test]
fn every_subcommand_has_a_page_that_opens_with_its_help_and_the_index_lists_it() {
    let root = common::repo();
    let summary = fs::read_to_string(root.join("docs/SUMMARY.md")).unwrap();
    let mut bad = vec![];
    for s in subcommands() {
        let page = root.join(format!("docs/cli/{s}.md"));
        if !page.exists() {
            bad.push(format!("docs/cli/{s}.md is missing"));
            continue;
        }
        let first = parse(&page).0.into_iter().next();
        let opens = first.as_ref().is_some_and(|b| {
            b.lang == "console"
                && examples(b)
                    .first()
                    .is_some_and(|e| e.command == format!("inception {s} --help"))
        });
        if !opens {
            bad.push(format!(
                "docs/cli/{s}.md does not open with `$ inception {s} --help`"
            ));
        }
        if !summary.contains(&format!("(cli/{s}.md)")) {
            bad.push(format!("docs/SUMMARY.md does not list cli/{s}.md"));
        }
    }
    // And every page under docs/ is in the index.
    for p in pages().iter().skip(1) {
        let r = p
            .strip_prefix(root.join("docs"))
            .unwrap()
            .display()
            .to_string();
        if r != "SUMMARY.md" && !summary.contains(&format!("({r})")) {
            bad.push(format!("docs/SUMMARY.md does not list {r}"));
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

#[test]
fn every_flag_and_subcommand_has_help_text() {
    use clap::CommandFactory;
    let cli = inception::cli::Cli::command();
    let mut bare = vec![];
    for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
        if sub.get_about().is_none() {
            bare.push(sub.get_name().to_string());
        }
        for arg in sub.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                bare.push(format!("{} {id}", sub.get_name()));
            }
        }
    }
    assert!(bare.is_empty(), "without help text: {bare:?}");
}

#[test]
fn the_config_table_lists_exactly_the_config_fields() {
    let page = common::repo().join("docs/config.md");
    let mut listed = BTreeSet::new();
    for (_, l) in parse(&page).1 {
        let Some(cell) = l.strip_prefix("| `") else {
            continue;
        };
        let first = cell.split(" |").next().unwrap();
        for name in format!("`{first}").split(", ") {
            listed.insert(name.trim_matches('`').to_string());
        }
    }
    let fields: BTreeSet<String> =
        match serde_json::to_value(inception::config::TrainConfig::default()).unwrap() {
            serde_json::Value::Object(m) => m.keys().cloned().collect(),
            v => panic!("the config is not an object: {v}"),
        };
    assert_eq!(
        listed, fields,
        "docs/config.md's table against TrainConfig's fields"
    );
}

#[test]
fn the_readme_is_short_and_the_make_targets_it_names_exist() {
    let root = common::repo();
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let n = readme.lines().count();
    assert!(
        n <= README_LINES,
        "README.md has {n} lines, more than {README_LINES}"
    );
    let makefile = fs::read_to_string(root.join("Makefile")).unwrap();
    let targets: BTreeSet<&str> = makefile
        .lines()
        .filter_map(|l| l.split_once(':').map(|(t, _)| t))
        .filter(|t| !t.is_empty() && !t.contains(' ') && !t.starts_with('.') && !t.contains('='))
        .collect();
    // `make X` in inline code, and `make X` lines of code blocks.
    let target_of = |rest: &str| -> Option<String> {
        let t: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '-')
            .collect();
        (!t.is_empty()).then_some(t)
    };
    let mut named = BTreeSet::new();
    for page in pages() {
        let (blocks, prose) = parse(&page);
        for (_, l) in &prose {
            for (i, _) in l.match_indices("`make ") {
                named.extend(target_of(&l[i + 6..]).map(|t| (rel(&page), t)));
            }
        }
        for b in &blocks {
            for l in &b.body {
                if let Some(rest) = l.trim_start().strip_prefix("make ") {
                    named.extend(target_of(rest).map(|t| (rel(&page), t)));
                }
            }
        }
    }
    assert!(named.iter().any(|(_, t)| t == "test"), "{named:?}");
    let missing: Vec<String> = named
        .iter()
        .filter(|(_, t)| !targets.contains(t.as_str()))
        .map(|(p, t)| format!("{p}: make {t}"))
        .collect();
    assert!(
        missing.is_empty(),
        "no such make target: {missing:?} (targets: {targets:?})"
    );
}

/// The folder every page's commands start from, made once: data, configs, a photo and a
/// small trained model.
fn base() -> &'static Path {
    static BASE: OnceLock<tempfile::TempDir> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = common::repo();
        for d in ["data", "configs"] {
            // Copies, not links: a path the tool resolves must not lead into the checkout.
            copy_tree(&root.join(d), &dir.path().join(d));
        }
        fs::copy(
            root.join("data/monkeypox/Monkey Pox/P13_1.jpg"),
            dir.path().join("img.jpg"),
        )
        .unwrap();
        let started = std::time::Instant::now();
        // Two epochs, not the smoke config's one, and seed 1 (seed 0's folds were at chance on
        // this machine): a network that answers nearly the same for every photo would make the
        // examples read like a fault.
        let smoke = [
            "--data",
            "data/monkeypox",
            "--config",
            "configs/smoke.json",
            "--epochs",
            "2",
            "--seed",
            "1",
        ];
        let cv = ["cv", "--folds", "3", "--out", "runs/cv", "--no-plots"];
        let o = run_in(dir.path(), &[&cv[..], &smoke[..]].concat());
        assert!(o.0, "the docs' cross-validation: {}", o.1);
        let train = [
            "train",
            "--val-fraction",
            "0",
            "--calibration-from",
            "runs/cv",
            "--out",
            "runs/train",
            "--no-plots",
        ];
        let o = run_in(dir.path(), &[&train[..], &smoke[..]].concat());
        assert!(o.0, "training the docs' model: {}", o.1);
        println!(
            "{:6.1} s  the docs' cv and model",
            started.elapsed().as_secs_f64()
        );
        dir
    })
    .path()
}

/// Copies `from` into `to`, keeping symbolic links as links.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (p, q) = (e.path(), to.join(e.file_name()));
        let t = e.file_type().unwrap();
        if t.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&p).unwrap(), &q).unwrap();
        } else if t.is_dir() {
            copy_tree(&p, &q);
        } else {
            fs::copy(&p, &q).unwrap();
            // "The most recent run" is by modification time: keep it.
            let when = fs::metadata(&p).unwrap().modified().unwrap();
            fs::File::options()
                .write(true)
                .open(&q)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
    }
}

/// Runs the binary in `dir` as the docs' commands run: (success, stdout and stderr as written).
fn run_in(dir: &Path, args: &[&str]) -> (bool, String) {
    let log = dir.join(".docs-output");
    let f = fs::File::create(&log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_inception"));
    // `--help` shows the variables a flag reads, with their values: as a user's shell has them.
    if !args.contains(&"--help") {
        cmd.env("INCEPTION_PRECISION", "fp32");
    }
    let status = cmd
        .args(args)
        .current_dir(dir)
        .env("CUDA_VISIBLE_DEVICES", "")
        .env("INCEPTION_OFFLINE", "1")
        .env("TORCH_HOME", dir.join(".torch"))
        .env("NO_COLOR", "1")
        // Two threads, whatever the machine. The figures a trained network gives still follow
        // the CPU: libtorch's portable kernels and MKL's reproducible mode, which this test
        // once asked for, gave other figures on an Intel Xeon than on the AMD EPYC they were
        // blessed on (2026-12-08) at twice the time, so the kernels are the machine's own and
        // a new machine's figures are blessed again (`INCEPTION_DOCS_BLESS=all`, then redact).
        .env("OMP_NUM_THREADS", "2")
        .env_remove("MKL_NUM_THREADS")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .status()
        .unwrap();
    let out = fs::read_to_string(&log).unwrap();
    fs::remove_file(&log).unwrap();
    (status.success(), out)
}

#[test]
fn every_console_block_runs_as_shown() {
    let _serial = common::serial_all();
    let bless = std::env::var("INCEPTION_DOCS_BLESS").is_ok_and(|v| v == "1" || v == "all");
    // `INCEPTION_DOCS_BLESS=all`: every output that differs, for a person to redact again.
    let bless_all = std::env::var("INCEPTION_DOCS_BLESS").is_ok_and(|v| v == "all");
    let mut failures = vec![];
    let mut ran = 0;
    let mut by_page: BTreeMap<PathBuf, Vec<Block>> = BTreeMap::new();
    for b in all_blocks().into_iter().filter(|b| b.lang == "console") {
        by_page.entry(b.file.clone()).or_default().push(b);
    }
    let base_dir = fs::canonicalize(base()).unwrap().display().to_string();
    for (page, blocks) in by_page {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(base(), dir.path());
        let cwd = fs::canonicalize(dir.path()).unwrap();
        let mut redactions = snapbox::Redactions::new();
        redactions
            .insert("[CWD]", cwd.display().to_string())
            .unwrap();
        redactions
            .insert("[VERSION]", env!("CARGO_PKG_VERSION"))
            .unwrap();
        let mut blessed: Vec<(usize, usize, String)> = vec![];
        for b in &blocks {
            for e in examples(b) {
                let words = shlex::split(&e.command).unwrap_or_default();
                let args: Vec<&str> = words.iter().skip(1).map(String::as_str).collect();
                let started = std::time::Instant::now();
                let (ok, actual) = run_in(&cwd, &args);
                ran += 1;
                println!(
                    "{:6.1} s  {}:{}: $ {}",
                    started.elapsed().as_secs_f64(),
                    rel(&page),
                    e.line,
                    e.command
                );
                let at = format!("{}:{}: $ {}", rel(&page), e.line, e.command);
                let must_fail = e.output.lines().any(|l| l.starts_with("error:"));
                if ok == must_fail {
                    failures.push(format!(
                        "{at}: {} where the docs show {}\n{actual}",
                        if ok { "succeeded" } else { "failed" },
                        if must_fail { "an error" } else { "success" }
                    ));
                    continue;
                }
                let result = snapbox::Assert::new()
                    .redact_with(redactions.clone())
                    .try_eq(
                        Some(&at),
                        snapbox::Data::text(actual.clone()),
                        snapbox::Data::text(e.output.clone()),
                    );
                if let Err(err) = result {
                    if bless_all {
                        let text = actual
                            .replace(&cwd.display().to_string(), "[CWD]")
                            .replace(&base_dir, "[..]")
                            .replace(env!("CARGO_PKG_VERSION"), "[VERSION]");
                        // A line that still matches its redacted version keeps it.
                        let old: Vec<&str> = e.output.lines().collect();
                        let kept: Vec<String> = text
                            .lines()
                            .enumerate()
                            .map(|(i, new)| match old.get(i) {
                                Some(o)
                                    if o.contains("[..]")
                                        && snapbox::Assert::new()
                                            .redact_with(redactions.clone())
                                            .try_eq(
                                                None,
                                                snapbox::Data::text(new),
                                                snapbox::Data::text(*o),
                                            )
                                            .is_ok() =>
                                {
                                    o.to_string()
                                }
                                _ => new.to_string(),
                            })
                            .collect();
                        blessed.push((e.line, e.output.lines().count(), kept.join("\n")));
                    } else if bless && e.command.ends_with("--help") {
                        let n = e.output.lines().count();
                        blessed.push((e.line, n, actual));
                    } else {
                        failures.push(format!("{err}"));
                    }
                }
            }
        }
        if !blessed.is_empty() {
            let text = fs::read_to_string(&page).unwrap();
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            for (line, n, actual) in blessed.into_iter().rev() {
                let new: Vec<String> = actual.lines().map(str::to_string).collect();
                lines.splice(line..line + n, new);
            }
            fs::write(&page, lines.join("\n") + "\n").unwrap();
        }
    }
    assert!(ran >= subcommands().len(), "only {ran} commands ran");
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn every_inception_line_that_is_not_run_names_a_real_subcommand_and_its_flags() {
    use clap::CommandFactory;
    let cli = inception::cli::Cli::command();
    let mut bad = vec![];
    let mut checked = 0;
    for b in all_blocks().into_iter().filter(|b| b.lang != "console") {
        for (i, line) in b.body.iter().enumerate() {
            if !calls_inception(line) {
                continue;
            }
            let at = format!("{}:{}", rel(&b.file), b.line + 1 + i);
            // The words after `inception`, up to a comment or a pipe.
            let code = line.split(" #").next().unwrap_or_default();
            let words: Vec<&str> = code
                .split_whitespace()
                .skip_while(|w| !(*w == "inception" || w.ends_with("/inception")))
                .skip(1)
                .take_while(|w| !matches!(*w, "|" | "&&" | ";" | ">" | "2>"))
                .collect();
            let Some(name) = words.first() else {
                continue;
            };
            let Some(sub) = cli.find_subcommand(name) else {
                // `--version`-style flags, and doctor's first output line (`inception 0.1.0`).
                if !name.starts_with('-') && !name.starts_with(|c: char| c.is_ascii_digit()) {
                    bad.push(format!("{at}: `inception {name}`: no such subcommand"));
                }
                continue;
            };
            checked += 1;
            for w in &words[1..] {
                let w = w.trim_start_matches('[').trim_start_matches('(');
                let Some(flag) = w.strip_prefix("--") else {
                    continue;
                };
                let flag: String = flag
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                let known = flag == "help"
                    || sub
                        .get_arguments()
                        .any(|a| a.get_long() == Some(flag.as_str()));
                if !flag.is_empty() && !known {
                    bad.push(format!("{at}: `inception {name}` has no --{flag}"));
                }
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} lines checked: the parser lost them"
    );
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}
