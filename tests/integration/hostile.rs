//! Weights from strangers: every class of hostile `torch.save` file (scripts/hostile_pth.py)
//! is refused by `import` with one line naming the file and the reason, in bounded time and
//! memory, with nothing written; every file the reader accepts, PyTorch's
//! `torch.load(weights_only=True)` accepts too — the hand-built clean files, and whatever
//! survives a fixed run of mutations (bit flips, truncations, spliced opcodes) of real files.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{fuzz, python, repo, script_output};
use inception::weights;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Entry {
    file: String,
    reason: String,
    torch_refuses: bool,
    /// Read by the reader, and refused only by the network it does not fit.
    #[serde(default)]
    read: bool,
}

/// The files scripts/hostile_pth.py writes, made once per version of the script.
fn corpus() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| script_output("hostile_pth.py", "hostile", "manifest.json"))
}

fn manifest() -> Vec<Entry> {
    serde_json::from_slice(&fs::read(corpus().join("manifest.json")).unwrap()).unwrap()
}

/// What `torch.load(weights_only=True)` says of each file: `None` where it read it.
fn torch_load(files: &[PathBuf]) -> BTreeMap<String, Option<String>> {
    let mut answers = BTreeMap::new();
    for chunk in files.chunks(500) {
        let out = python()
            .arg(repo().join("scripts/hostile_pth.py"))
            .arg("--torch-load")
            .args(chunk)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "torch.load check failed (`make deps`?):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: BTreeMap<String, Option<String>> = serde_json::from_slice(&out.stdout).unwrap();
        answers.extend(got);
    }
    answers
}

/// A finished child's exit code, wall time and peak resident memory (from `wait4`); killed
/// past `limit`.
struct Finished {
    code: Option<i32>,
    stderr: String,
    wall: Duration,
    max_rss: u64,
}

fn run_bounded(dir: &Path, args: &[&str], limit: Duration) -> Finished {
    let err_path = dir.join("..").join(format!(
        "stderr-{}",
        dir.file_name().unwrap().to_string_lossy()
    ));
    let child = common::bin()
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    // Reaped by wait4 below (which also gives the peak RSS), not by Child::wait.
    std::mem::forget(child);
    let start = Instant::now();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4 failed");
        if start.elapsed() > limit {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            panic!("{args:?} ran past {limit:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let wall = start.elapsed();
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    let _ = fs::remove_file(&err_path);
    Finished {
        code,
        stderr,
        wall,
        max_rss: usage.ru_maxrss as u64 * 1024,
    }
}

fn import_args(file: &Path) -> Vec<String> {
    ["import", "--arch", "seed", "--weights"]
        .iter()
        .map(|s| s.to_string())
        .chain([file.display().to_string()])
        .chain(
            ["--classes", "a,b", "--out", "out.pt"]
                .iter()
                .map(|s| s.to_string()),
        )
        .collect()
}

/// The longest a refusal may take: seconds, where the files were made to cost minutes to
/// hours; generous, since CI machines are shared.
const WALL: Duration = Duration::from_secs(30);

/// The most memory a refusal may take above an import that reads nothing hostile.
const MEMORY: u64 = 1 << 30;

#[test]
fn every_hostile_file_is_refused_in_bounded_time_and_memory_by_one_line_naming_it() {
    let entries = manifest();
    assert!(entries.len() >= 35, "{} files", entries.len());
    let tmp = tempfile::tempdir().unwrap();
    // The baseline: the same import of the clean file (refused only for not fitting the seed).
    let base_dir = tmp.path().join("base");
    fs::create_dir(&base_dir).unwrap();
    let clean = corpus().join("clean.zip.pth");
    let args = import_args(&clean);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let base = run_bounded(&base_dir, &args, WALL);
    assert_eq!(base.code, Some(1), "{}", base.stderr);
    assert!(base.stderr.contains("do not fit"), "{}", base.stderr);
    for (n, e) in entries.iter().enumerate() {
        let file = corpus().join(&e.file);
        let dir = tmp.path().join(format!("case{n}"));
        fs::create_dir(&dir).unwrap();
        let args = import_args(&file);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let f = run_bounded(&dir, &args, WALL);
        let err = &f.stderr;
        assert_eq!(f.code, Some(1), "{}: exit {:?}: {err}", e.file, f.code);
        assert_eq!(err.lines().count(), 1, "{}: not one line: {err:?}", e.file);
        assert!(
            err.starts_with("error: ") && err.contains(&file.display().to_string()),
            "{}: the line does not name the file: {err}",
            e.file
        );
        assert!(
            err.contains(&e.reason),
            "{}: no {:?} in: {err}",
            e.file,
            e.reason
        );
        assert!(
            !err.contains('\r') && !err.contains('\x1b') && !err.contains("panicked"),
            "{}: {err:?}",
            e.file
        );
        assert!(
            err.len() < 2000,
            "{}: a line of {} bytes",
            e.file,
            err.len()
        );
        assert!(
            fs::read_dir(&dir).unwrap().next().is_none(),
            "{}: something was written",
            e.file
        );
        assert!(
            f.max_rss < base.max_rss + MEMORY,
            "{}: {} MB resident, the baseline {} MB",
            e.file,
            f.max_rss >> 20,
            base.max_rss >> 20
        );
        eprintln!(
            "{}: refused in {:.2} s, {} MB resident (baseline {} MB)",
            e.file,
            f.wall.as_secs_f64(),
            f.max_rss >> 20,
            base.max_rss >> 20
        );
    }
    assert!(!tmp.path().join("pwned").exists());
}

#[test]
fn the_clean_files_read_as_pytorch_reads_them_and_pytorch_refuses_every_payload() {
    let entries = manifest();
    // The hand-built clean files, and torch.save's own where PyTorch wrote them.
    let clean: Vec<&str> = [
        "clean.zip.pth",
        "clean.legacy.pth",
        "torch.zip.pth",
        "torch.legacy.pth",
    ]
    .into_iter()
    .filter(|n| corpus().join(n).exists())
    .collect();
    let mut files: Vec<PathBuf> = clean.iter().map(|n| corpus().join(n)).collect();
    for &name in &clean {
        let t = weights::read_state_dict(&corpus().join(name)).unwrap();
        assert_eq!(t.keys().collect::<Vec<_>>(), ["b", "w"], "{name}");
        assert_eq!(Vec::<f32>::try_from(&t["w"]).unwrap(), [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(Vec::<f32>::try_from(&t["b"]).unwrap(), [0.5, -0.5]);
    }
    for e in &entries {
        let file = corpus().join(&e.file);
        let read = weights::read_state_dict(&file);
        assert_eq!(read.is_ok(), e.read, "{}: {:?}", e.file, read.err());
        if e.torch_refuses {
            files.push(file);
        }
    }
    let answers = torch_load(&files);
    for file in &files {
        let answer = &answers[&file.display().to_string()];
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        match (clean.contains(&name.as_str()), answer) {
            (true, None) | (false, Some(_)) => {}
            (true, Some(e)) => panic!("PyTorch refuses the clean {}: {e}", file.display()),
            (false, None) => panic!("PyTorch reads {}: not hostile", file.display()),
        }
        if let Some(e) = answer {
            assert!(
                e.contains("Weights only load failed"),
                "{}: {e}",
                file.display()
            );
        }
    }
}

/// How many mutants the test tries (`INCEPTION_FUZZ_CASES` for more; the bench tries many).
fn fuzz_cases() -> u64 {
    std::env::var("INCEPTION_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

#[test]
fn mutated_files_never_panic_and_read_only_when_pytorch_reads_them_too() {
    // The hand-built files, and torch.save's own (written where PyTorch is installed, as in CI).
    let bases: Vec<Vec<u8>> = [
        "clean.zip.pth",
        "clean.legacy.pth",
        "torch.zip.pth",
        "torch.legacy.pth",
    ]
    .iter()
    .filter_map(|n| fs::read(corpus().join(n)).ok())
    .collect();
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = fuzz::rng(36);
    let mut accepted = Vec::new();
    let mut slowest = Duration::ZERO;
    for case in 0..fuzz_cases() {
        let base = &bases[(case % bases.len() as u64) as usize];
        let bytes = fuzz::mutate(base, &mut rng);
        let path = tmp.path().join(format!("m{case}.pth"));
        fs::write(&path, &bytes).unwrap();
        let start = Instant::now();
        let read = std::panic::catch_unwind(|| weights::read_state_dict(&path));
        let took = start.elapsed();
        slowest = slowest.max(took);
        assert!(took < WALL, "mutant {case} took {took:?}");
        match read {
            Err(_) => panic!("mutant {case} ({}) panicked the reader", path.display()),
            Ok(Ok(_)) => accepted.push(path),
            Ok(Err(e)) => {
                let line = format!("{e:#}");
                assert!(line.contains(&path.display().to_string()), "{line}");
                fs::remove_file(&path).unwrap();
            }
        }
    }
    eprintln!(
        "{} mutants, {} read, the slowest in {:.3} s",
        fuzz_cases(),
        accepted.len(),
        slowest.as_secs_f64()
    );
    assert!(
        !accepted.is_empty(),
        "no mutant read: the mutations test nothing"
    );
    let answers = torch_load(&accepted);
    let refused: Vec<String> = accepted
        .iter()
        .filter_map(|p| {
            let key = p.display().to_string();
            answers[&key].as_ref().map(|e| format!("{key}: {e}"))
        })
        .collect();
    assert!(
        refused.is_empty(),
        "the reader read files PyTorch refuses:\n{}",
        refused.join("\n")
    );
}

#[test]
fn class_names_with_control_characters_are_refused_and_printed_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = corpus().join("clean.zip.pth");
    let f = run_bounded(
        tmp.path(),
        &[
            "import",
            "--arch",
            "seed",
            "--weights",
            clean.to_str().unwrap(),
            "--classes",
            "a\r\x1b[2Kwrote out.pt: seed,b",
            "--out",
            "out.pt",
        ],
        WALL,
    );
    assert_eq!(f.code, Some(1), "{}", f.stderr);
    assert_eq!(f.stderr.lines().count(), 1, "{:?}", f.stderr);
    assert!(
        f.stderr.contains(
            "--classes: class a\\r\\u{1b}[2Kwrote out.pt: seed holds a control character"
        ),
        "{:?}",
        f.stderr
    );
    assert!(!f.stderr.contains('\x1b') && !f.stderr.contains('\r'));
    assert!(fs::read_dir(tmp.path()).unwrap().next().is_none());
}
