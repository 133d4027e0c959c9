//! The folders the tool writes, each format with its one owner: where they go (`runs/train`,
//! then `runs/train-2`, `runs/train-3`…, `runs/cv`… for cross-validation, never overwriting
//! one; this file), a training run's files ([`run`]), a cross-validation's ([`cv`]) and its
//! out-of-fold predictions ([`oof`]); and reading back the JSON they hold ([`json`]).

pub mod cv;
pub mod json;
pub mod oof;
pub mod run;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};

/// Where `inception train` looks for and makes run folders.
pub const RUNS: &str = "runs";

/// The run folder a training job writes to.
#[derive(Debug, Clone)]
pub enum RunDir {
    /// The next free `runs/NAME[-N]` (`train`, `cv`).
    Next(&'static str),
    /// A folder the user chose with `--out`: new or empty.
    Exact(PathBuf),
    /// The folder of a resumed run.
    Resumed(PathBuf),
}

impl RunDir {
    /// Fails early when an `--out` folder already holds files.
    pub fn check(&self) -> Result<()> {
        if let RunDir::Exact(p) = self {
            if p.exists()
                && fs::read_dir(p)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(true)
            {
                bail!(
                    "--out {} exists and is not empty; runs are never overwritten",
                    p.display()
                );
            }
        }
        Ok(())
    }

    /// Creates (or, resumed, reuses) the folder and returns its path.
    pub fn create(&self) -> Result<PathBuf> {
        match self {
            RunDir::Resumed(p) => Ok(p.clone()),
            RunDir::Exact(p) => {
                self.check()?;
                fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
                Ok(p.clone())
            }
            RunDir::Next(base) => {
                let runs = Path::new(RUNS);
                fs::create_dir_all(runs).with_context(|| format!("creating {}", runs.display()))?;
                for n in 1u32..=u32::MAX {
                    let name = if n == 1 {
                        base.to_string()
                    } else {
                        format!("{base}-{n}")
                    };
                    let p = runs.join(name);
                    // create_dir fails if it exists: claiming a name is atomic.
                    match fs::create_dir(&p) {
                        Ok(()) => return Ok(p),
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                        Err(e) => {
                            return Err(e).with_context(|| format!("creating {}", p.display()))
                        }
                    }
                }
                bail!("no free run folder name under {}", runs.display())
            }
        }
    }
}

/// The `--checkpoint`s given, or else what the most recent finished run under `runs/` ships
/// ([`latest_model`]), said on stderr: the default of predict, explain and export.
pub fn given_or_latest(given: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    let c = latest_model(Path::new(RUNS))?;
    eprintln!("checkpoint: {} (the most recent run)", c.display());
    Ok(vec![c])
}

/// What the most recent finished run under `runs/` ships: a training run's `model.pt`, or a
/// finished cross-validation's folder (its folds' `model.pt` as an ensemble), by the time
/// `model.pt` or `cv.json` was written.
pub fn latest_model(runs: &Path) -> Result<PathBuf> {
    let mut found: Option<(SystemTime, PathBuf)> = None;
    let entries = fs::read_dir(runs).with_context(|| {
        format!(
            "no --checkpoint given and no {} folder to take the latest run from",
            runs.display()
        )
    })?;
    for entry in entries.flatten() {
        let dir = entry.path();
        for (marker, model) in [
            (dir.join(run::MODEL), dir.join(run::MODEL)),
            (dir.join(cv::CV_JSON), dir.clone()),
        ] {
            if let Ok(modified) = fs::metadata(&marker).and_then(|m| m.modified()) {
                if found.as_ref().is_none_or(|(t, _)| modified > *t) {
                    found = Some((modified, model));
                }
            }
        }
    }
    match found {
        Some((_, p)) => Ok(p),
        None => bail!(
            "no --checkpoint given and no finished run under {} (none has a model.pt or a \
             cv.json)",
            runs.display()
        ),
    }
}
