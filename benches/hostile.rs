//! The reader's fuzz run at length: mutants (bit flips, truncations, spliced opcodes) of the
//! clean files scripts/hostile_pth.py writes, each read in process; counts panics (must be
//! none), how many read, and the slowest read as a multiple of reading the clean file (the
//! baseline, in the same process). Every mutant read is checked against
//! `torch.load(weights_only=True)` when PyTorch is installed (`make deps`).
//! `cargo bench --bench hostile` (`INCEPTION_FUZZ_CASES`, default 20,000).

#[path = "../tests/common/fuzz.rs"]
mod fuzz;

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use inception::weights;

fn main() -> anyhow::Result<()> {
    let cases: u64 = std::env::var("INCEPTION_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir()?;
    let corpus = tmp.path().join("corpus");
    let status = Command::new("python3")
        .env("PYTHONPATH", repo.join(".deps/py"))
        .arg(repo.join("scripts/hostile_pth.py"))
        .arg("--out")
        .arg(&corpus)
        .status()?;
    anyhow::ensure!(status.success(), "scripts/hostile_pth.py failed");
    let names = [
        "clean.zip.pth",
        "clean.legacy.pth",
        "torch.zip.pth",
        "torch.legacy.pth",
    ];
    let bases: Vec<Vec<u8>> = names
        .iter()
        .filter_map(|n| fs::read(corpus.join(n)).ok())
        .collect();
    let start = Instant::now();
    for _ in 0..100 {
        for n in &names[..2] {
            weights::read_state_dict(&corpus.join(n))?;
        }
    }
    let clean = start.elapsed() / 200;
    let mut rng = fuzz::rng(3636);
    let (mut panics, mut read, mut slowest) = (0, Vec::new(), Duration::ZERO);
    let start = Instant::now();
    for case in 0..cases {
        let bytes = fuzz::mutate(&bases[(case % bases.len() as u64) as usize], &mut rng);
        let path = tmp.path().join(format!("m{case}.pth"));
        fs::write(&path, &bytes)?;
        let t = Instant::now();
        match std::panic::catch_unwind(|| weights::read_state_dict(&path)) {
            Err(_) => panics += 1,
            Ok(Ok(_)) => read.push(path),
            Ok(Err(_)) => fs::remove_file(&path)?,
        }
        slowest = slowest.max(t.elapsed());
    }
    let all = start.elapsed();
    println!(
        "hostile: {cases} mutants in {:.1} s ({:.0}/s), {panics} panics, {} read; the slowest \
         {:.1}x reading a clean file ({:.3} ms)",
        all.as_secs_f64(),
        cases as f64 / all.as_secs_f64(),
        read.len(),
        slowest.as_secs_f64() / clean.as_secs_f64(),
        clean.as_secs_f64() * 1e3
    );
    let mut refused = 0;
    for chunk in read.chunks(500) {
        let out = Command::new("python3")
            .env("PYTHONPATH", repo.join(".deps/py"))
            .arg(repo.join("scripts/hostile_pth.py"))
            .arg("--torch-load")
            .args(chunk)
            .output()?;
        if !out.status.success() {
            println!("hostile: PyTorch not installed, the mutants read are not checked");
            break;
        }
        let answers: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&out.stdout)?;
        for (file, answer) in &answers {
            if let Some(e) = answer.as_str() {
                refused += 1;
                if refused <= 10 {
                    let keep = std::env::temp_dir().join(format!("hostile-refused-{refused}.pth"));
                    let _ = fs::copy(file, &keep);
                    println!(
                        "hostile: read here, refused by PyTorch ({}): {e}",
                        keep.display()
                    );
                }
            }
        }
    }
    println!("hostile: {refused} of the mutants read are refused by PyTorch");
    anyhow::ensure!(
        panics == 0 && refused == 0,
        "the reader failed the fuzz run"
    );
    Ok(())
}
