//! Helpers shared by the integration tests: the PyTorch reference fixtures, the binary, files.
#![allow(dead_code)]

pub mod browser;
pub mod fuzz;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use inception::checkpoint::read_safetensors;
use serde::Deserialize;
use tch::Tensor;

/// One reference case written by scripts/parity.py.
#[derive(Debug, Clone, Deserialize)]
pub struct Case {
    pub name: String,
    pub arch: String,
    pub classes: i64,
    pub image_size: i64,
    pub transform_input: bool,
    pub keys: Vec<String>,
    pub params: i64,
    pub aux_params: i64,
    pub macs: i64,
}

#[derive(Debug, Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `python3` with the project's Python dependencies (scripts/deps.sh) on its path.
pub fn python() -> Command {
    let mut cmd = Command::new("python3");
    let deps = repo().join(".deps/py");
    let mut path = std::env::var("PYTHONPATH").unwrap_or_default();
    if deps.exists() {
        path = if path.is_empty() {
            deps.display().to_string()
        } else {
            format!("{}:{path}", deps.display())
        };
    }
    cmd.env("PYTHONPATH", path);
    cmd
}

/// The folder `python3 scripts/SCRIPT --out DIR` writes, made once for each version of the
/// script and kept under target/tmp as `PREFIX-<hash of the script>` (complete once it holds
/// `marker`: the script writes into a partial folder that is renamed when it is done).
pub fn script_output(script: &str, prefix: &str, marker: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let path = repo().join("scripts").join(script);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("reading scripts/{script}: {e}"))
        .hash(&mut h);
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.join(format!("{prefix}-{:016x}", h.finish()));
    if dir.join(marker).exists() {
        return dir;
    }
    let partial = tmp.join(format!("{prefix}-partial-{}", std::process::id()));
    let out = python()
        .arg(&path)
        .arg("--out")
        .arg(&partial)
        .output()
        .unwrap_or_else(|e| panic!("running python3 scripts/{script}: {e}"));
    assert!(
        out.status.success(),
        "scripts/{script} failed (are the Python deps installed? `make deps`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if std::fs::rename(&partial, &dir).is_err() {
        // Another test binary made it meanwhile.
        let _ = std::fs::remove_dir_all(&partial);
    }
    dir
}

/// The folder of PyTorch reference fixtures, made by scripts/parity.py once for each version
/// of that script and kept under target/tmp.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| script_output("parity.py", "parity", "cases.json"))
}

pub fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixtures().join("cases.json")).expect("cases.json");
    serde_json::from_str::<Cases>(&text)
        .expect("parsing cases.json")
        .cases
}

pub fn case(name: &str) -> Case {
    cases()
        .into_iter()
        .find(|c| c.name == name)
        .expect("no such case")
}

/// The state_dict of a case.
pub fn state_dict(name: &str) -> BTreeMap<String, Tensor> {
    read_safetensors(&fixtures().join(format!("{name}.safetensors")))
        .expect("state_dict")
        .tensors
}

/// The case's input and PyTorch's eval-mode logits for it.
pub fn io(name: &str) -> (Tensor, Tensor) {
    let mut t = read_safetensors(&fixtures().join(format!("{name}.io.safetensors")))
        .expect("io")
        .tensors;
    (
        t.remove("input").expect("input"),
        t.remove("logits").expect("logits"),
    )
}

/// max |a − b| / max |b|.
pub fn relative_error(a: &Tensor, b: &Tensor) -> f64 {
    let diff = (a - b).abs().max().double_value(&[]);
    diff / b.abs().max().double_value(&[])
}

/// The inception binary as the tests run it: libtorch on one thread (OpenMP and MKL), so that
/// what a test trains is the same on any number of cores and whatever runs beside it, and
/// several tests can train at once ([`serial`]).
pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_inception"));
    cmd.env("OMP_NUM_THREADS", "1").env("MKL_NUM_THREADS", "1");
    cmd
}

/// Runs the inception binary with `args` in `dir`.
pub fn inception(dir: &Path, args: &[&str]) -> Output {
    bin()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running inception")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a clean failure: exit code 1, an `error:` line, no panic or backtrace.
pub fn assert_clean_failure(o: &Output) -> String {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected exit code 1; stderr: {err}"
    );
    assert!(err.contains("error: "), "no error line: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("stack backtrace"),
        "panic: {err}"
    );
    assert!(!err.contains("frame #"), "C++ backtrace leaked: {err}");
    err
}

/// A finished cross-validation of the smoke recipe on MSLD (`cv --folds 3 --epochs 2 --seed 1`:
/// the seed whose two-epoch folds, on one thread, are not all at chance, so that a temperature
/// fits their logits), made
/// once per test run in `runs/cv` of a folder of its own and shared by the tests that only
/// read it (a test that changes a cv makes its own): the folder, where `runs/cv` is the latest
/// finished run, and the cv's output. Callers hold [`serial`] (it trains).
pub fn smoke_cv() -> (&'static Path, &'static Output) {
    static CV: OnceLock<(tempfile::TempDir, Output)> = OnceLock::new();
    let (dir, out) = CV.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let data = repo().join("data/monkeypox");
        let config = repo().join("configs/smoke.json");
        let o = inception(
            dir.path(),
            &[
                "cv",
                "--data",
                data.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
                "--folds",
                "3",
                "--epochs",
                "2",
                "--seed",
                "1",
            ],
        );
        (dir, o)
    });
    (dir.path(), out)
}

/// Held by each test that trains: a turn to use one of the machine's cores. The binary
/// computes on one thread ([`bin`]), so as many tests train at once as there are cores.
pub fn serial() -> Turn {
    take(1)
}

/// All the turns at once: for a test whose commands compute on several threads (the docs'
/// examples run as a user's shell runs them), which would otherwise share cores with others.
pub fn serial_all() -> Turn {
    take(cores())
}

fn take(n: usize) -> Turn {
    let (count, freed) = turns();
    let mut held = count.lock().unwrap_or_else(|e| e.into_inner());
    while *held + n > cores() {
        held = freed.wait(held).unwrap_or_else(|e| e.into_inner());
    }
    *held += n;
    Turn(n)
}

/// A test's turns ([`serial`]), given back when dropped.
pub struct Turn(usize);

impl Drop for Turn {
    fn drop(&mut self) {
        let (count, freed) = turns();
        *count.lock().unwrap_or_else(|e| e.into_inner()) -= self.0;
        freed.notify_all();
    }
}

fn turns() -> &'static (std::sync::Mutex<usize>, std::sync::Condvar) {
    static TURNS: OnceLock<(std::sync::Mutex<usize>, std::sync::Condvar)> = OnceLock::new();
    TURNS.get_or_init(Default::default)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `inception import --arch ARCH --weights WEIGHTS --classes CLASSES --out OUT EXTRA…` in `dir`.
pub fn import(
    dir: &Path,
    arch: &str,
    weights: &str,
    classes: &str,
    out: &str,
    extra: &[&str],
) -> Output {
    let mut args = vec![
        "import",
        "--arch",
        arch,
        "--weights",
        weights,
        "--classes",
        classes,
        "--out",
        out,
    ];
    args.extend(extra);
    inception(dir, &args)
}

/// Imports the PyTorch fixture `case` (its arch from its name) into `dir/CASE.pt`.
pub fn import_case(dir: &Path, case: &str, classes: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(format!("{case}.pt"));
    let weights = fixtures().join(format!("{case}.safetensors"));
    let arch = if case.starts_with("seed") {
        "seed"
    } else {
        "googlenet"
    };
    let o = import(
        dir,
        arch,
        weights.to_str().unwrap(),
        classes,
        out.to_str().unwrap(),
        extra,
    );
    assert!(o.status.success(), "import failed: {}", stderr(&o));
    out
}

/// `dir/photos` with 12 light and 12 dark noisy `side`-pixel PNGs (classes `light`, `dark`): a
/// task any network learns within a few steps.
pub fn light_and_dark(dir: &Path, side: u32) -> PathBuf {
    let data = dir.join("photos");
    for (class, level) in [("light", 190.0), ("dark", 60.0)] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..12u32 {
            let img = image::RgbImage::from_fn(side, side, |x, y| {
                let noise = ((x * 7 + y * 13 + i * 31) % 41) as f64 - 20.0;
                image::Rgb([(level + noise) as u8; 3])
            });
            img.save(data.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    data
}

/// The start of a PNG whose header claims `w × h` pixels (8-bit RGB), with no pixel data:
/// what a decompression bomb looks like to a decoder that trusts headers.
pub fn png_header_claiming(w: u32, h: u32) -> Vec<u8> {
    png_header_of(w, h, 8, 2)
}

/// A PNG header of `w × h` pixels, `bit_depth` and `colour_type`, and empty IDAT and IEND.
pub fn png_header_of(w: u32, h: u32, bit_depth: u8, colour_type: u8) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = b"IHDR".to_vec();
    chunk.extend(w.to_be_bytes());
    chunk.extend(h.to_be_bytes());
    chunk.extend([bit_depth, colour_type, 0, 0, 0]);
    out.extend(13u32.to_be_bytes());
    out.extend(&chunk);
    out.extend(crc32fast::hash(&chunk).to_be_bytes());
    for kind in [b"IDAT", b"IEND"] {
        out.extend(0u32.to_be_bytes());
        out.extend(kind);
        out.extend(crc32fast::hash(kind).to_be_bytes());
    }
    out
}

/// The largest difference between the weights of two runs' `model.pt`, relative to the largest
/// weight of the first (a bias of size 1e-7 differs in its last bits by 1e-10: noise, not a
/// different step).
pub fn weights_apart(a: &Path, b: &Path) -> f64 {
    let load = |run: &Path| {
        inception::checkpoint::load(&run.join("model.pt"), tch::Device::Cpu)
            .unwrap()
            .model
            .state_dict()
    };
    let (x, y) = (load(a), load(b));
    assert_eq!(x.len(), y.len());
    let (mut diff, mut size) = (0f64, 0f64);
    for (name, t) in x.iter().filter(|(_, t)| t.is_floating_point()) {
        diff = diff.max((t - &y[name]).abs().max().double_value(&[]));
        size = size.max(t.abs().max().double_value(&[]));
    }
    diff / size
}

/// `train` flags under which two processes of batch B take the steps of one process of batch
/// 2B when BatchNorm is frozen (`--freeze-bn true`, given apart): the seed network, no dropout,
/// no class weights (a weighted mean over B is not one over 2B), SGD (AdamW's normalised step
/// turns the last-bit noise of near-zero gradients into whole steps), fp32, 24 px, 2 epochs.
pub const DATA_PARALLEL_EQUIVALENT: [&str; 22] = [
    "--arch",
    "seed",
    "--image-size",
    "24",
    "--dropout",
    "0",
    "--class-weights",
    "none",
    "--optimizer",
    "sgd",
    "--lr",
    "0.05",
    "--precision",
    "fp32",
    "--val-fraction",
    "0.34",
    "--group-by",
    "none",
    "--dedup",
    "off",
    "--epochs",
    "2",
];

/// Starts the binary with `args` in `dir` (its output discarded), kills it with SIGKILL as
/// soon as `file` exists, and reaps it. Fails if `file` has not appeared within `limit`.
pub fn kill_once_written<S: AsRef<std::ffi::OsStr>>(
    dir: &Path,
    args: impl IntoIterator<Item = S>,
    file: &Path,
    limit: std::time::Duration,
) {
    use std::process::Stdio;
    let mut child = bin()
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !file.exists() {
        assert!(
            started.elapsed() < limit,
            "no {} after {limit:?}",
            file.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `python3` with the statistics references (scipy, scikit-learn, statsmodels, netcal, MAPIE,
/// crepes: scripts/requirements-stats.txt in .deps/stats) before the torch environment.
pub fn python_stats() -> Command {
    let mut cmd = python();
    let mut path = format!(
        "{}:{}",
        repo().join(".deps/stats").display(),
        repo().join(".deps/py").display()
    );
    if let Ok(env) = std::env::var("PYTHONPATH") {
        if !env.is_empty() {
            path = format!("{path}:{env}");
        }
    }
    cmd.env("PYTHONPATH", path);
    cmd
}
