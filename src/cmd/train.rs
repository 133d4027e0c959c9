//! `inception train`: the config file, overridden by flags, validated; then the training loop.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::checkpoint;
use crate::cli::{fixed, RecipeArgs, TrainArgs};
use crate::config::{self, ClassWeights, TrainConfig};
use crate::data::transform::Augment;
use crate::device;
use crate::dist::World;
use crate::plot::{CONFUSION_PNG, ROC_PNG};
use crate::precision::Compute;
use crate::train::record::EpochRecord;
use crate::train::run_dir::RunDir;
use crate::train::run_files::{BATCH_JPG, BEST, LAST, MODEL, RESULTS_PNG};
use crate::train::{train, RunSummary, TrainJob};

/// Applies every flag that was given to `cfg`.
pub fn apply_flags(cfg: &mut TrainConfig, a: &RecipeArgs) -> Result<()> {
    macro_rules! set {
        ($($field:ident),*) => { $( if let Some(v) = &a.$field { cfg.$field = v.clone(); } )* };
    }
    set!(
        arch,
        aux_logits,
        image_size,
        epochs,
        batch_size,
        optimizer,
        lr,
        momentum,
        weight_decay,
        schedule,
        warmup_epochs,
        step_size,
        step_gamma,
        label_smoothing,
        seed,
        device,
        val_fraction,
        group_by,
        dedup,
        fold,
        patience,
        cache_gib,
        workers,
        precision,
        channels_last,
        ema_decay,
        mixup,
        cutmix,
        freeze_bn
    );
    if a.dropout.is_some() {
        cfg.dropout = a.dropout;
    }
    if a.folds.is_some() {
        cfg.folds = a.folds;
    }
    if a.no_folds {
        cfg.folds = None;
        cfg.fold = 0;
    }
    if a.init.is_some() {
        cfg.init = a.init.clone();
    }
    if a.no_init {
        cfg.init = None;
    }
    if let Some(w) = &a.class_weights {
        cfg.class_weights = ClassWeights::parse(w)?;
    }
    apply_skip_bad(cfg, a);
    if a.no_plots {
        cfg.plots = false;
    }
    if a.no_augment {
        cfg.augment = Augment::none();
    }
    let (crop_scale, crop_ratio) = (
        fixed("crop-scale", &a.crop_scale)?,
        fixed("crop-ratio", &a.crop_ratio)?,
    );
    let (mean, std) = (fixed("mean", &a.mean)?, fixed("std", &a.std)?);
    let aug = &mut cfg.augment;
    if a.no_crop {
        aug.random_resized_crop = None;
    }
    if let Some(scale) = crop_scale {
        aug.random_resized_crop
            .get_or_insert_with(Default::default)
            .scale = scale;
    }
    if let Some(ratio) = crop_ratio {
        aug.random_resized_crop
            .get_or_insert_with(Default::default)
            .ratio = ratio;
    }
    for (field, flag) in [
        (&mut aug.hflip, a.hflip),
        (&mut aug.vflip, a.vflip),
        (&mut aug.rotation, a.rotation),
        (&mut aug.brightness, a.brightness),
        (&mut aug.contrast, a.contrast),
        (&mut aug.saturation, a.saturation),
    ] {
        set_if(field, flag);
    }
    set_if(&mut cfg.normalization.mean, mean);
    set_if(&mut cfg.normalization.std, std);
    if a.arch == Some(crate::model::Arch::Seed) && a.aux_logits.is_none() {
        cfg.aux_logits = false;
    }
    Ok(())
}

/// Turns the arguments into a validated job; `world` places it among data-parallel processes.
pub fn job(a: &TrainArgs, world: Option<World>) -> Result<TrainJob> {
    let (config, run_dir, data) = match &a.resume {
        Some(last) => resume_config(a, last)?,
        None => {
            let mut cfg = config::load(a.config.as_ref())?;
            apply_flags(&mut cfg, &a.recipe)?;
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
    Ok(TrainJob {
        config,
        data,
        run_dir,
        compute,
        resume: a.resume.clone(),
        world,
    })
}

/// The flags that only say how to compute, not what (clap argument ids): those
/// [`apply_runtime_flags`] applies, which a resumed run or cv folder accepts.
pub const RUNTIME_FLAGS: [&str; 8] = [
    "device",
    "precision",
    "channels_last",
    "workers",
    "cache_gib",
    "skip_bad",
    "no_skip_bad",
    "no_plots",
];

/// A resumed run keeps its config and dataset; only --epochs (not with a cosine schedule),
/// --patience and the runtime flags change.
fn resume_config(a: &TrainArgs, last: &std::path::Path) -> Result<(TrainConfig, RunDir, PathBuf)> {
    let mut resumable = vec!["resume", "epochs", "patience", "nproc"];
    resumable.extend(RUNTIME_FLAGS);
    let fixed = super::other_flags(&a.given, &resumable);
    if !fixed.is_empty() {
        bail!(
            "--resume continues a run as it was configured ({} cannot change): only --epochs, \
             --patience, --nproc, --device, --precision, --channels-last, --workers, \
             --cache-gib, --skip-bad, --no-skip-bad and --no-plots may be given with it",
            fixed.join(", ")
        );
    }
    let meta = checkpoint::load(last, tch::Device::Cpu)?.meta;
    let record = meta
        .training
        .with_context(|| format!("{}: not written by inception train", last.display()))?;
    let mut cfg = record.config;
    if let Some(n) = a.recipe.epochs {
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
                    .map(|d| d.join(crate::train::run_files::MODEL))
                    .unwrap_or_default()
                    .display()
            );
        }
    }
    set_if(&mut cfg.epochs, a.recipe.epochs);
    set_if(&mut cfg.patience, a.recipe.patience);
    apply_runtime_flags(&mut cfg, &a.recipe);
    let dir = last
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok((cfg, RunDir::Resumed(dir), PathBuf::from(record.dataset)))
}

/// Applies the flags that say how to compute, not what (device, precision, layout, loader,
/// cache, unreadable files): the ones a resumed run or cv may change.
pub fn apply_runtime_flags(cfg: &mut TrainConfig, r: &RecipeArgs) {
    set_if(&mut cfg.workers, r.workers);
    set_if(&mut cfg.cache_gib, r.cache_gib);
    set_if(&mut cfg.precision, r.precision);
    set_if(&mut cfg.channels_last, r.channels_last);
    if let Some(d) = &r.device {
        cfg.device = d.clone();
    }
    apply_skip_bad(cfg, r);
    if r.no_plots {
        cfg.plots = false;
    }
}

fn apply_skip_bad(cfg: &mut TrainConfig, r: &RecipeArgs) {
    if r.skip_bad {
        cfg.skip_bad = true;
    }
    if r.no_skip_bad {
        cfg.skip_bad = false;
    }
}

/// The device, precision and layout `cfg` asks for, said on stderr.
pub fn compute_for(cfg: &TrainConfig) -> Result<Compute> {
    Compute::new(
        device::resolve(&cfg.device)?,
        cfg.precision,
        cfg.channels_last,
    )
}

fn set_if<T: Copy>(field: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *field = v;
    }
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
        print!("{}", summary_text(&job, &summary));
    }
    Ok(())
}

/// The lines that close a run: what model.pt and best.pt hold, and the files written.
fn summary_text(job: &TrainJob, s: &RunSummary) -> String {
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
    files.extend(["metrics.csv", "config.json", "split.json"]);
    for picture in [RESULTS_PNG, CONFUSION_PNG, ROC_PNG, BATCH_JPG] {
        if s.run_dir.join(picture).exists() {
            files.push(picture);
        }
    }
    let files: Vec<String> = files.iter().map(|f| format!("{d}/{f}")).collect();
    out += &format!("wrote {}\n", files.join(", "));
    out
}
