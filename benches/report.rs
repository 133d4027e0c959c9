//! Whether `inception report` stays bounded when the cv is large: a cv of MSLD (the smoke
//! recipe, 3 folds of 1 epoch) is reported as it is (183 images), then again with its oof.csv
//! grown to 10,000 out-of-fold predictions of 5,000 patients (photos hard-linked under new names
//! in a dataset folder of that size, random probabilities), in the same process: the time and
//! the page's size of each, and their ratios. The page's size is bounded by the gallery's cap,
//! not by the number of images. `cargo bench --bench report`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn inception(dir: &Path, args: &[&str]) -> Result<()> {
    let o = Command::new(env!("CARGO_BIN_EXE_inception"))
        .args(args)
        .current_dir(dir)
        .output()
        .context("running inception")?;
    if !o.status.success() {
        bail!("inception {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(())
}

/// Seconds of `inception report DIR --out OUT`, and the page's bytes.
fn report(dir: &Path, cv: &Path, out: &Path) -> Result<(f64, u64)> {
    let started = Instant::now();
    inception(
        dir,
        &[
            "report",
            cv.to_str().context("path")?,
            "--out",
            out.to_str().context("path")?,
            "--force",
        ],
    )?;
    Ok((started.elapsed().as_secs_f64(), fs::metadata(out)?.len()))
}

fn main() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let msld = repo.join("data/monkeypox");
    let small = dir.join("cv");
    inception(
        dir,
        &[
            "cv",
            "--data",
            msld.to_str().context("path")?,
            "--config",
            repo.join("configs/smoke.json").to_str().context("path")?,
            "--folds",
            "3",
            "--out",
            "cv",
            "--no-plots",
        ],
    )?;

    // The same cv folder, with a dataset of 10,000 photos and an oof.csv of each.
    let n = 10_000;
    let classes = ["Monkey Pox", "Others"];
    let data = dir.join("big-data");
    let mut photos: Vec<Vec<PathBuf>> = vec![];
    for class in classes {
        fs::create_dir_all(data.join(class))?;
        let mut files: Vec<PathBuf> = fs::read_dir(msld.join(class))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        files.sort();
        photos.push(files);
    }
    let big = dir.join("big-cv");
    fs::create_dir_all(&big)?;
    let plan = fs::read_to_string(small.join("plan.json"))?;
    let dataset = fs::canonicalize(&msld)?.display().to_string();
    let big_data = data.display().to_string();
    fs::write(big.join("plan.json"), plan.replace(&dataset, &big_data))?;
    let cv_json = fs::read_to_string(small.join("cv.json"))?;
    fs::write(big.join("cv.json"), cv_json.replace(&dataset, &big_data))?;
    for f in 0..3 {
        let (from, to) = (
            small.join(format!("fold-{f}")),
            big.join(format!("fold-{f}")),
        );
        fs::create_dir_all(&to)?;
        for e in fs::read_dir(&from)? {
            let e = e?;
            std::os::unix::fs::symlink(e.path(), to.join(e.file_name()))?;
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut oof = String::from(
        "path,truth,prob_Monkey Pox,prob_Others,logit_Monkey Pox,logit_Others,fold,group\n",
    );
    for i in 0..n {
        let c = i % 2;
        let src = &photos[c][(i / 2) % photos[c].len()];
        let name = format!("{}/P{}_{}.jpg", classes[c], i / 2, i);
        fs::hard_link(src, data.join(&name))?;
        let z: f64 = (rng.random::<f64>() - 0.5) * 6.0 + if c == 0 { 1.0 } else { -1.0 };
        let p = 1.0 / (1.0 + (-2.0 * z).exp());
        oof += &format!(
            "{name},{},{p:.9},{:.9},{:e},{:e},{},P{}\n",
            classes[c],
            1.0 - p,
            z,
            -z,
            i % 3,
            i / 2
        );
    }
    fs::write(big.join("oof.csv"), oof)?;

    let (t_small, b_small) = report(dir, &small, &dir.join("small.html"))?;
    let (t_big, b_big) = report(dir, &big, &dir.join("big.html"))?;
    println!(
        "report of a cv of 183 images:    {t_small:6.2} s, {:7.0} kB",
        b_small as f64 / 1e3
    );
    println!(
        "report of a cv of {n} images: {t_big:6.2} s, {:7.0} kB",
        b_big as f64 / 1e3
    );
    println!(
        "ratio 10,000 / 183 images: time {:.2}×, size {:.2}× (images {:.0}×)",
        t_big / t_small,
        b_big as f64 / b_small as f64,
        n as f64 / 183.0
    );
    Ok(())
}
