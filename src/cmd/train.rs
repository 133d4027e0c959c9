//! `inception train`: the config file, overridden by flags, validated; then the training loop.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::recipe::{apply_flags, apply_runtime_flags, compute_for, fetch_weights, set_if};
use crate::checkpoint;
use crate::checkpoint::record::EpochRecord;
use crate::cli::TrainArgs;
use crate::config::{self, TrainConfig};
use crate::dist::World;
use crate::plot::{CONFUSION_PNG, ROC_PNG};
use crate::runs::run::{BATCH_JPG, BEST, LAST, MODEL, RESULTS_PNG};
use crate::runs::RunDir;
use crate::train::{train, RunSummary, TrainJob};

/// Turns the arguments into a validated job; `world` places it among data-parallel processes.
pub fn job(a: &TrainArgs, world: Option<World>) -> Result<TrainJob> {
    let (config, run_dir, data) = match &a.resume {
        Some(last) => resume_config(a, last)?,
        None => {
            let mut cfg = config::load(a.config.as_ref())?;
            apply_flags(&mut cfg, &a.recipe)?;
            cfg.validate().context("training config")?;
            fetch_weights(&cfg)?;
            let dir = a
                .out
                .clone()
                .map(RunDir::Exact)
                .unwrap_or(RunDir::Next("train"));
            (cfg, dir, a.data.clone())
        }
    };
    config.validate().context("training config")?;
    run_dir.check()?;
    let mut compute = compute_for(&config)?;
    if let (Some(w), tch::Device::Cuda(_)) = (&world, compute.device) {
        // One GPU per process on each machine (LOCAL_RANK, as torchrun sets it).
        let local = std::env::var("LOCAL_RANK")
            .ok()
            .and_then(|r| r.parse::<usize>().ok())
            .unwrap_or(w.rank);
        let count = tch::Cuda::device_count().max(1) as usize;
        compute.device = tch::Device::Cuda(local % count);
    }
    let trust = match (&a.resume, &a.calibration_from) {
        (Some(_), Some(_)) => bail!("--calibration-from cannot be given with --resume (the run keeps what it was started with)"),
        (Some(last), None) => checkpoint::read_meta(last)?.trust,
        (None, Some(cv_dir)) => Some(calibration_from(cv_dir, &config, &data)?),
        (None, None) => None,
    };
    Ok(TrainJob {
        config,
        data,
        run_dir,
        compute,
        resume: a.resume.clone(),
        world,
        trust,
    })
}

/// The calibration, threshold and conformal sets a cv folder fitted, for a run of `config`
/// on `data`: refused when the cv measured another recipe or dataset (its calibration would
/// be of another model) or fitted none.
fn calibration_from(
    dir: &std::path::Path,
    config: &TrainConfig,
    data: &std::path::Path,
) -> Result<crate::trust::TrustRecord> {
    let cv = crate::runs::cv::CvReport::read(dir).context("--calibration-from")?;
    let Some(trust) = cv.trust else {
        bail!(
            "--calibration-from {}: that cv fitted no calibration ({})",
            dir.display(),
            cv.trust_note.as_deref().unwrap_or("no reason recorded")
        );
    };
    let here =
        std::fs::canonicalize(data).with_context(|| format!("resolving {}", data.display()))?;
    if here.display().to_string() != cv.dataset {
        bail!(
            "--calibration-from {}: that cv measured {}, and this run trains on {}",
            dir.display(),
            cv.dataset,
            here.display()
        );
    }
    let same = |c: &TrainConfig| TrainConfig {
        folds: None,
        fold: 0,
        val_fraction: 0.0,
        patience: 0,
        ..c.recipe()
    };
    if same(&cv.config) != same(config) {
        let (a, b) = (
            serde_json::to_value(same(&cv.config))?,
            serde_json::to_value(same(config))?,
        );
        let differ: Vec<String> = a
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| b.get(k.as_str()) != Some(v))
            .map(|(k, _)| k.clone())
            .collect();
        bail!(
            "--calibration-from {}: that cv measured another recipe ({} differ); its calibration \
             would be of another model",
            dir.display(),
            differ.join(", ")
        );
    }
    let mut trust = trust;
    let at = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    trust.fitted_on = format!("{} in {}", trust.fitted_on, at.display());
    Ok(trust)
}

/// A resumed run keeps its config and dataset; only --epochs (not with a cosine schedule),
/// --patience and the runtime flags change.
fn resume_config(a: &TrainArgs, last: &std::path::Path) -> Result<(TrainConfig, RunDir, PathBuf)> {
    let runtime = crate::cli::runtime_flag_ids();
    let mut resumable = vec!["resume", "epochs", "patience", "nproc"];
    resumable.extend(runtime.iter().map(String::as_str));
    let fixed = super::other_flags(&a.given, &resumable);
    if !fixed.is_empty() {
        bail!(
            "--resume continues a run as it was configured ({} cannot change): only --epochs, \
             --patience, --nproc and how to compute ({}) may be given with it",
            fixed.join(", "),
            super::other_flags(&runtime, &[]).join(", ")
        );
    }
    let meta = checkpoint::load(last, tch::Device::Cpu)?.meta;
    let record = meta
        .training
        .with_context(|| format!("{}: not written by inception train", last.display()))?;
    let mut cfg = record.config;
    if let Some(n) = a.recipe.flags.epochs {
        // A cosine schedule is planned for the run's length: another end would bend it and
        // the learning rate would jump at the resumed epoch. Step and constant schedules do
        // not depend on the end.
        if n != cfg.epochs && cfg.schedule == crate::config::Schedule::Cosine {
            bail!(
                "--epochs {n} with --resume: this run's cosine schedule was planned for {} \
                 epochs, and another end would make the learning rate jump; resume without \
                 --epochs to finish it, or train on from its weights in a new run: \
                 inception train --init {} --epochs {n} (and its other flags)",
                cfg.epochs,
                last.parent()
                    .map(|d| d.join(crate::runs::run::MODEL))
                    .unwrap_or_default()
                    .display()
            );
        }
    }
    set_if(&mut cfg.epochs, a.recipe.flags.epochs);
    set_if(&mut cfg.patience, a.recipe.flags.patience);
    apply_runtime_flags(&mut cfg, &a.recipe.runtime)?;
    let dir = last
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok((cfg, RunDir::Resumed(dir), PathBuf::from(record.dataset)))
}

pub fn run(a: &TrainArgs) -> Result<()> {
    if let Some(n) = a.nproc {
        if World::from_env()?.is_some() {
            bail!("--nproc {n}: this process is already one of several (WORLD_SIZE is set)");
        }
        if n == 0 {
            bail!("--nproc 0: at least one process");
        }
        if n > 1 {
            crate::dist::require().with_context(|| format!("--nproc {n}"))?;
            // The flags are checked once here, not N times in the processes.
            let job = job(a, None)?;
            crate::dist::Backend::choose(job.compute.device, n)?;
            return crate::dist::launch(n);
        }
    }
    let job = job(a, World::from_env()?)?;
    let summary = train(&job)?;
    if World::leads(job.world.as_ref()) {
        println!();
        print!(
            "{}",
            summary_text(&job, &summary, a.calibration_from.as_deref())
        );
    }
    Ok(())
}

/// The lines that close a run: what model.pt and best.pt hold, and the files written.
fn summary_text(job: &TrainJob, s: &RunSummary, cv: Option<&std::path::Path>) -> String {
    let val = |r: &EpochRecord| match (r.val_acc, r.val_macro_f1, r.val_loss) {
        (Some(a), Some(f), Some(l)) => {
            format!("val accuracy {a:.4}, val macro-F1 {f:.4}, val loss {l:.4}")
        }
        _ => "not validated".into(),
    };
    let weights = if job.config.ema_decay > 0.0 {
        "weight average"
    } else {
        "weights"
    };
    let mut out = String::new();
    match &s.last {
        Some(r) => {
            out += &format!(
                "model.pt (the model to use: the {weights} after the last epoch, {}): {}\n",
                r.epoch,
                val(r)
            )
        }
        None => out += "no epoch was run\n",
    }
    if let Some((best, r)) = &s.best {
        out += &format!(
            "best.pt (best validation epoch, {}; chosen on the validation images, so its \
             numbers are optimistic): {}\n",
            best.epoch,
            val(r)
        );
    }
    if !job.config.validates() {
        out += "no validation images (val_fraction 0): every image trained; no best.pt\n";
    }
    if s.stopped_early {
        out += &format!(
            "stopped early: {} epochs without improvement\n",
            job.config.patience
        );
    }
    let d = s.run_dir.display();
    let mut files = vec![MODEL, LAST];
    if s.best.is_some() {
        files.push(BEST);
    }
    files.extend([
        "metrics.csv",
        "config.json",
        "split.json",
        crate::data::card::FILE,
        crate::runs::run::ENVIRONMENT_JSON,
    ]);
    for picture in [RESULTS_PNG, CONFUSION_PNG, ROC_PNG, BATCH_JPG] {
        if s.run_dir.join(picture).exists() {
            files.push(picture);
        }
    }
    let files: Vec<String> = files.iter().map(|f| format!("{d}/{f}")).collect();
    out += &format!("wrote {}\n", files.join(", "));
    // A run that validated on nothing has no figures of its own: the cv that measured its
    // recipe has them.
    out += &match (job.config.validates(), cv) {
        (false, Some(cv)) => format!(
            "the page that shows this model to a person: inception report {} (the cv that \
             measured this recipe; this run has no validation images)\n",
            cv.display()
        ),
        _ => format!("the page that shows this model to a person: inception report {d}\n"),
    };
    out
}
