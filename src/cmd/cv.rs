//! `inception cv`: cross-validation of a recipe — all folds here, one fold as a separate job
//! (`--only-fold`), an interrupted one continued (`--resume`), or the summary of folds trained
//! elsewhere (`--collect`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::other_flags;
use super::recipe::{apply_flags, apply_runtime_flags, compute_for, fetch_weights};
use crate::cli::{CvArgs, TrustArgs, TRUST_FLAGS};
use crate::config::{self, TrainConfig};
use crate::cv;
use crate::data::folder::{scan, Layout};
use crate::precision::Compute;
use crate::runs::cv::CvReport;
use crate::runs::cv::{unfinished, Plan, PLAN};
use crate::runs::RunDir;
use crate::trust::intervals::ProportionMethod;
use crate::trust::TrustConfig;

/// The default number of folds.
pub const DEFAULT_FOLDS: usize = 5;

/// The plan of a new cross-validation: the config file, the flags, the dataset.
fn new_plan(a: &CvArgs) -> Result<Plan> {
    if a.recipe.flags.fold.is_some() {
        bail!("cv trains every fold; --only-fold I trains one (--fold is for train)");
    }
    if a.recipe.more.no_folds {
        bail!("cv always splits into folds (--folds K, default {DEFAULT_FOLDS}); --no-folds is for train");
    }
    let mut cfg = config::load(a.config.as_ref())?;
    apply_flags(&mut cfg, &a.recipe)?;
    apply_trust_flags(&mut cfg.trust, &a.trust);
    cfg.folds = Some(cfg.folds.unwrap_or(DEFAULT_FOLDS));
    cfg.fold = 0;
    cfg.validate().context("training config")?;
    fetch_weights(&cfg)?;
    match scan(&a.data)? {
        Layout::Given { val, .. } => bail!(
            "{}: its own train/val split ({}) leaves nothing to cross-validate; cv takes one \
             folder of class folders (DIR/<class>/<image>)",
            a.data.display(),
            val.root.display()
        ),
        Layout::Single(f) => {
            let counts: Vec<(String, usize)> = (0..f.classes.len())
                .map(|c| {
                    let n = f.samples.iter().filter(|s| s.label == c).count();
                    (f.classes[c].clone(), n)
                })
                .collect();
            cfg.trust.check_counts(&a.data, &counts)?;
        }
    }
    let dataset =
        fs::canonicalize(&a.data).with_context(|| format!("resolving {}", a.data.display()))?;
    if let Some(i) = a.only_fold {
        let k = cfg.folds.unwrap_or(DEFAULT_FOLDS);
        if i >= k {
            bail!(
                "--only-fold {i}: the folds are 0 to {} for --folds {k}",
                k - 1
            );
        }
    }
    Ok(Plan {
        dataset: dataset.display().to_string(),
        config: cfg,
    })
}

/// The flags of what is fitted on the out-of-fold predictions, over the config's `trust`.
pub fn apply_trust_flags(t: &mut TrustConfig, a: &TrustArgs) {
    super::recipe::set_if(&mut t.target_sensitivity, a.target_sensitivity);
    if a.prevalence.is_some() {
        t.prevalence = a.prevalence;
    }
    super::recipe::set_if(&mut t.alpha, a.alpha);
    super::recipe::set_if(&mut t.score, a.conformal_score);
    if a.pooled_sets {
        t.class_conditional = false;
    }
    if a.clopper_pearson {
        t.intervals = ProportionMethod::ClopperPearson;
    }
    if a.no_calibration {
        t.calibrate = false;
    }
    if a.no_trust {
        t.fit = false;
    }
}

/// With --resume or --collect: trust flags refit the summary; the plan records them.
fn refit_flags(a: &CvArgs, dir: &Path, plan: &mut Plan) -> Result<()> {
    if TRUST_FLAGS.iter().any(|f| a.given.iter().any(|g| g == f)) {
        apply_trust_flags(&mut plan.config.trust, &a.trust);
        plan.config.trust.validate().context("trust")?;
        plan.write(dir)?;
    }
    Ok(())
}

/// The runtime flags given with --resume or --collect, applied to the plan's config.
fn with_runtime_flags(a: &CvArgs, mut cfg: TrainConfig) -> Result<TrainConfig> {
    apply_runtime_flags(&mut cfg, &a.recipe.runtime)?;
    Ok(cfg)
}

/// Refuses flags that would change what a cv folder measures.
fn only_runtime_flags(a: &CvArgs, mode: &str, allowed: &[&str]) -> Result<()> {
    let others = other_flags(&a.given, allowed);
    if !others.is_empty() {
        bail!(
            "{mode} takes the recipe from the cv folder's plan.json ({} cannot be given with it)",
            others.join(", ")
        );
    }
    Ok(())
}

/// Prepares the folder of a `--only-fold` job: new, or one whose plan is this plan. Jobs of
/// one array may start at once: each may find the folder made by another.
fn shared_folder(dir: &Path, plan: &Plan) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if !dir.join(PLAN).exists() {
        let foreign: Vec<String> = fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("fold-") && n != PLAN && !n.starts_with(".plan.json.tmp"))
            .collect();
        if !foreign.is_empty() {
            bail!(
                "--out {} holds files that are not a cross-validation's ({}); runs are never \
                 overwritten",
                dir.display(),
                foreign.join(", ")
            );
        }
        plan.write(dir)?;
    }
    if !Plan::read(dir)?.same_recipe(plan) {
        bail!(
            "{} holds a cross-validation with another plan (dataset or recipe); use another --out",
            dir.display()
        );
    }
    Ok(())
}

/// Runs every unfinished fold of `dir` in order.
fn run_folds(dir: &Path, plan: &Plan, compute: Compute) -> Result<()> {
    for f in 0..plan.folds() {
        cv::run_fold(dir, plan, f, compute)?;
    }
    Ok(())
}

/// What the command did: a summary, or one fold trained with others still to come.
enum Outcome {
    Report(Box<CvReport>),
    FoldDone {
        dir: PathBuf,
        fold: usize,
        left: Vec<usize>,
    },
}

fn execute(a: &CvArgs) -> Result<Outcome> {
    if let Some(dir) = &a.collect {
        let mut allowed = vec!["collect", "json", "device", "precision", "channels_last"];
        allowed.extend(TRUST_FLAGS);
        only_runtime_flags(a, "--collect", &allowed)?;
        let mut plan = Plan::read(dir)?;
        refit_flags(a, dir, &mut plan)?;
        let compute = compute_for(&with_runtime_flags(a, plan.config)?)?;
        return Ok(Outcome::Report(Box::new(cv::collect(dir, compute)?)));
    }
    if let Some(dir) = &a.resume {
        let runtime = crate::cli::runtime_flag_ids();
        let mut allowed = vec!["resume", "json"];
        allowed.extend(runtime.iter().map(String::as_str));
        allowed.extend(TRUST_FLAGS);
        only_runtime_flags(a, "--resume", &allowed)?;
        let mut plan = Plan::read(dir)?;
        refit_flags(a, dir, &mut plan)?;
        plan.config = with_runtime_flags(a, plan.config)?;
        let compute = compute_for(&plan.config)?;
        println!("resuming cross-validation {}", dir.display());
        run_folds(dir, &plan, compute)?;
        return Ok(Outcome::Report(Box::new(cv::collect(dir, compute)?)));
    }
    let plan = new_plan(a)?;
    let compute = compute_for(&plan.config)?;
    if let (Some(fold), Some(dir)) = (a.only_fold, &a.out) {
        shared_folder(dir, &plan)?;
        cv::run_fold(dir, &plan, fold, compute)?;
        let left = unfinished(dir, &plan);
        if left.is_empty() {
            return Ok(Outcome::Report(Box::new(cv::collect(dir, compute)?)));
        }
        return Ok(Outcome::FoldDone {
            dir: dir.clone(),
            fold,
            left,
        });
    }
    let run_dir = a
        .out
        .clone()
        .map(RunDir::Exact)
        .unwrap_or(RunDir::Next("cv"));
    run_dir.check()?;
    let dir = run_dir.create()?;
    plan.write(&dir)?;
    println!("cross-validation folder: {}", dir.display());
    run_folds(&dir, &plan, compute)?;
    Ok(Outcome::Report(Box::new(cv::collect(&dir, compute)?)))
}

pub fn run(a: &CvArgs) -> Result<()> {
    if let Some(w) = crate::dist::World::from_env()? {
        bail!(
            "cv in {} processes (WORLD_SIZE is set): every process would train every fold; \
             folds run as separate jobs with --only-fold I (scripts/slurm-cv.sh)",
            w.size
        );
    }
    // With --json only the summary goes to stdout: the training logs go to stderr meanwhile.
    let outcome = if a.json {
        let _redirect = StdoutToStderr::new();
        execute(a)
    } else {
        execute(a)
    }?;
    match outcome {
        Outcome::Report(r) if a.json => println!("{}", serde_json::to_string_pretty(&r)?),
        Outcome::Report(r) => {
            print!("{}", cv::render(&r));
            println!(
                "the page that shows this model to a person: inception report {}",
                r.cv
            );
        }
        Outcome::FoldDone { dir, fold, left } if a.json => {
            let done = serde_json::json!({"cv": dir, "fold": fold, "unfinished": left});
            println!("{}", serde_json::to_string_pretty(&done)?);
        }
        Outcome::FoldDone { dir, fold, left } => {
            let left: Vec<String> = left.iter().map(|f| f.to_string()).collect();
            println!(
                "fold {fold} done; not finished yet in {}: fold {}; once they are, `inception cv \
                 --collect {}` writes the summary (the job that finishes the last fold does it by \
                 itself)",
                dir.display(),
                left.join(", "),
                dir.display()
            );
        }
    }
    Ok(())
}

/// Sends what is written to stdout to stderr while alive (file descriptor 1 duplicated from
/// 2, restored on drop).
struct StdoutToStderr {
    saved: Option<i32>,
}

impl StdoutToStderr {
    fn new() -> StdoutToStderr {
        let _ = std::io::stdout().flush();
        // SAFETY: plain descriptor calls on this process's own standard streams.
        let saved = unsafe { libc::dup(1) };
        if saved < 0 || unsafe { libc::dup2(2, 1) } < 0 {
            return StdoutToStderr { saved: None };
        }
        StdoutToStderr { saved: Some(saved) }
    }
}

impl Drop for StdoutToStderr {
    fn drop(&mut self) {
        let _ = std::io::stdout().flush();
        if let Some(fd) = self.saved {
            // SAFETY: as in `new`; `fd` is the duplicate made there.
            unsafe {
                libc::dup2(fd, 1);
                libc::close(fd);
            }
        }
    }
}
