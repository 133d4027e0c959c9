//! The training loop: epochs of augmented mini-batches, validation after each, the run folder
//! with its config, split, metrics and checkpoints, early stopping and exact resumption.
//!
//! Loss: cross-entropy on logits (class weights and label smoothing as configured), plus 0.3 ×
//! each auxiliary head's loss for GoogLeNet with `aux_logits` (Szegedy et al. 2014, §5).

pub mod optim;
pub mod record;
pub mod run_dir;

use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tch::{Device, Kind, Reduction, Tensor};

use crate::checkpoint::{self, Checkpoint, Meta};
use crate::config::TrainConfig;
use crate::data::dataset::Dataset;
use crate::data::loader::{default_threads, mix, Loader, Mode, Store};
use crate::data::transform::{EvalTransform, TrainTransform};
use crate::metrics::{evaluate, Evaluation};
use crate::model::{Model, NetConfig};
use crate::precision::Compute;
use optim::{learning_rate, Optimizer};
use record::{Best, EpochRecord, ResumeState, TrainingRecord};

/// Weight of each auxiliary head's loss.
pub const AUX_WEIGHT: f64 = 0.3;

/// A validated training job.
#[derive(Debug)]
pub struct TrainJob {
    pub config: TrainConfig,
    pub data: PathBuf,
    /// The run folder: `--out`, or the next free `runs/train[-N]`, or the resumed run's.
    pub run_dir: run_dir::RunDir,
    /// Device, precision and layout.
    pub compute: Compute,
    /// A `last.pt` to continue from.
    pub resume: Option<PathBuf>,
}

/// What a finished run reports.
#[derive(Debug)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub best: Option<(Best, EpochRecord)>,
    pub epochs_run: u64,
    pub stopped_early: bool,
}

/// Runs a training job to its end.
pub fn train(job: &TrainJob) -> Result<RunSummary> {
    let cfg = &job.config;
    let compute = job.compute;
    let device = compute.device;
    let image_size = cfg.image_size as u32;
    let mut data = Dataset::for_training(&job.data, cfg)?;
    let cache = (cfg.cache_gib * (1u64 << 30) as f64) as u64;
    let prepared = data.prepare(image_size, cache, cfg.skip_bad)?;
    print!("{}", data.report(&prepared));
    let split_files = data.split_files();

    let classes = data.classes.clone();
    let counts: Vec<usize> = (0..classes.len())
        .map(|c| {
            data.split
                .train
                .iter()
                .filter(|&&i| data.samples[i].label == c)
                .count()
        })
        .collect();
    let weights = match cfg.class_weights.resolve(&counts)? {
        Some(w) => Some(
            Tensor::f_from_slice(&w)?
                .f_to_kind(Kind::Float)?
                .f_to_device(device)?,
        ),
        None => None,
    };
    // The network: the resumed run's, or a fresh one (from --init's weights when given).
    let (mut model, start_epoch, mut state, saved_optimizer) = match &job.resume {
        Some(path) => {
            let ckpt = checkpoint::load(path, device)?;
            let record = ckpt
                .meta
                .training
                .as_ref()
                .context("not a checkpoint written by training")?;
            let resume = record.resume.clone().with_context(|| {
                format!(
                    "{} has no resume state (resume from last.pt)",
                    path.display()
                )
            })?;
            if record.split != split_files {
                bail!(
                    "{}: the dataset or its split differs from the run's",
                    path.display()
                );
            }
            println!("resuming {} after epoch {}", path.display(), record.epoch);
            let epoch = record.epoch;
            (ckpt.model, epoch, resume, Some(ckpt.optimizer))
        }
        None => {
            let state = ResumeState {
                optimizer_step: 0,
                best: None,
                epochs_since_best: 0,
            };
            (
                fresh_model(cfg, classes.len() as i64, device)?,
                0,
                state,
                None,
            )
        }
    };
    compute.prepare(&mut model)?;
    let net = model.config;
    let mut opt = Optimizer::new(&model, cfg.optimizer, cfg.momentum, cfg.weight_decay)?;
    if let Some(tensors) = &saved_optimizer {
        opt.load_state(tensors, state.optimizer_step)?;
    }

    let run = job.run_dir.create()?;
    println!("run folder: {}", run.display());
    let write =
        |name: &str, text: String| checkpoint::write_atomic(&run.join(name), text.as_bytes());
    write("config.json", serde_json::to_string_pretty(cfg)? + "\n")?;
    write(
        "split.json",
        serde_json::to_string_pretty(&split_files)? + "\n",
    )?;
    let metrics_path = run.join("metrics.csv");
    let mut rows = read_rows(&metrics_path, start_epoch)?;

    let samples = Arc::new(data.samples.clone());
    let workers = if cfg.workers == 0 {
        default_threads()
    } else {
        cfg.workers
    };
    let loader = |mode: Mode, drop_last: bool| Loader {
        store: Arc::clone(&prepared.store),
        samples: Arc::clone(&samples),
        mode: Arc::new(mode),
        batch_size: cfg.batch_size,
        workers,
        prefetch: 2,
        seed: cfg.seed,
        drop_last,
    };
    let eval_tf = EvalTransform {
        image_size,
        normalization: cfg.normalization,
    };
    // A last training batch of one image would break BatchNorm: dropped when it would be one.
    let drop_last = data.split.train.len() % cfg.batch_size == 1;
    let train_loader = loader(
        Mode::Train(TrainTransform {
            image_size,
            normalization: cfg.normalization,
            augment: cfg.augment.clone(),
        }),
        drop_last,
    );
    let val_loader = loader(Mode::Eval(eval_tf), false);
    let dataset_abs = fs::canonicalize(&job.data).unwrap_or_else(|_| job.data.clone());
    let meta_for = |record: &EpochRecord, resume: Option<ResumeState>| {
        let mut meta = Meta::new(
            net,
            classes.clone(),
            cfg.image_size,
            cfg.normalization,
            format!("inception train, run {}", run.display()),
        );
        meta.training = Some(TrainingRecord {
            config: cfg.clone(),
            dataset: dataset_abs.display().to_string(),
            split: split_files.clone(),
            epoch: record.epoch,
            metrics: record.clone(),
            resume,
        });
        meta
    };

    let mut stopped_early = false;
    let mut epochs_run = 0;
    for epoch in start_epoch..cfg.epochs {
        if cfg.patience > 0 && state.epochs_since_best >= cfg.patience {
            stopped_early = true;
            break;
        }
        let started = Instant::now();
        tch::manual_seed(mix(&[cfg.seed, epoch, 1]) as i64);
        let (train_loss, train_acc, lr, images_per_s) = train_epoch(
            &model,
            &mut opt,
            &train_loader,
            &data.split.train,
            epoch,
            cfg,
            weights.as_ref(),
            compute,
        )?;
        let val = validate(&model, &val_loader, &data.split.val, &classes, compute)?;
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss,
            train_acc,
            val_loss: val.loss,
            val_acc: val.accuracy,
            val_macro_f1: val.macro_avg.f1,
            lr,
            images_per_s,
            seconds: started.elapsed().as_secs_f64(),
        };
        println!(
            "epoch {:>3}/{}  train loss {:.4} acc {:.3}  val loss {:.4} acc {:.3} macro-F1 {:.3}  \
             lr {:.2e}  {:.1} img/s  {:.1}s",
            record.epoch,
            cfg.epochs,
            record.train_loss,
            record.train_acc,
            record.val_loss,
            record.val_acc,
            record.val_macro_f1,
            record.lr,
            record.images_per_s,
            record.seconds
        );
        rows.push(record.csv_row());
        write(
            "metrics.csv",
            format!("{}\n{}\n", EpochRecord::CSV_HEADER, rows.join("\n")),
        )?;
        let improved = state.best.is_none_or(|b| b.beaten_by(&record));
        if improved {
            state.best = Some(Best {
                epoch: record.epoch,
                val_macro_f1: record.val_macro_f1,
                val_loss: record.val_loss,
            });
            state.epochs_since_best = 0;
            checkpoint::save(&run.join("best.pt"), &model, &meta_for(&record, None))?;
        } else {
            state.epochs_since_best += 1;
        }
        state.optimizer_step = opt.step;
        let last = meta_for(&record, Some(state.clone()));
        checkpoint::save_with(&run.join("last.pt"), &model, &last, &opt.state())?;
        epochs_run += 1;
    }

    let best = match state.best {
        Some(b) => {
            let ckpt: Checkpoint = checkpoint::load(&run.join("best.pt"), Device::Cpu)?;
            ckpt.meta.training.map(|t| (b, t.metrics))
        }
        None => None,
    };
    Ok(RunSummary {
        run_dir: run,
        best,
        epochs_run,
        stopped_early,
    })
}

/// A newly initialised network (seeded), from `cfg.init`'s weights where their shapes fit.
fn fresh_model(cfg: &TrainConfig, num_classes: i64, device: Device) -> Result<Model> {
    let init = match &cfg.init {
        Some(path) => Some((path, checkpoint::load(path, device)?)),
        None => None,
    };
    if let Some((path, src)) = &init {
        if src.meta.arch != cfg.arch {
            bail!(
                "--init {}: a {} checkpoint, not {}",
                path.display(),
                src.meta.arch,
                cfg.arch
            );
        }
    }
    let net = NetConfig {
        aux_logits: cfg.aux_logits,
        transform_input: init.as_ref().is_some_and(|(_, c)| c.meta.transform_input),
        ..NetConfig::new(cfg.arch, num_classes)
    };
    tch::manual_seed(mix(&[cfg.seed, u64::MAX, 0]) as i64);
    let mut model = Model::new(net, device)?;
    if let Some((path, src)) = &init {
        let report = model.init_from(&src.model)?;
        println!(
            "init: {} tensors from {}; {} start fresh ({})",
            report.copied.len(),
            path.display(),
            report.kept.len(),
            report.kept.join(", ")
        );
    }
    Ok(model)
}

/// The rows of an existing `metrics.csv` up to `epochs` (a resumed run drops rows written
/// after its checkpoint).
fn read_rows(path: &Path, epochs: u64) -> Result<Vec<String>> {
    if epochs == 0 || !path.exists() {
        return Ok(vec![]);
    }
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .skip(1)
        .filter(|l| {
            l.split(',')
                .next()
                .and_then(|e| e.parse::<u64>().ok())
                .is_some_and(|e| e <= epochs)
        })
        .map(str::to_string)
        .collect())
}

#[allow(clippy::too_many_arguments)]
fn train_epoch(
    model: &Model,
    opt: &mut Optimizer,
    loader: &Loader,
    indices: &[usize],
    epoch: u64,
    cfg: &TrainConfig,
    weights: Option<&Tensor>,
    compute: Compute,
) -> Result<(f64, f64, f64, f64)> {
    let batches = loader.batches(indices, epoch);
    let total = batches.len();
    let bar = progress_bar(total as u64, epoch, cfg.epochs);
    let started = Instant::now();
    let (mut loss_sum, mut correct, mut seen) = (0.0, 0i64, 0usize);
    let mut lr = cfg.lr;
    for (b, batch) in batches.enumerate() {
        let batch = batch?;
        let x = compute.input(&batch.images)?;
        let y = batch.labels.f_to_device(compute.device)?;
        lr = learning_rate(cfg, epoch as f64 + b as f64 / total as f64);
        let (out, loss) = {
            let _autocast = compute.autocast();
            let out = model.forward_t(&x, true)?;
            let ce = |logits: &Tensor| {
                logits.f_cross_entropy_loss(&y, weights, Reduction::Mean, -100, cfg.label_smoothing)
            };
            let mut loss = ce(&out.logits)?;
            for aux in &out.aux_logits {
                loss = loss.f_add(&ce(aux)?.f_mul_scalar(AUX_WEIGHT)?)?;
            }
            (out, loss)
        };
        let value = loss.f_double_value(&[])?;
        if !value.is_finite() {
            bail!(
                "non-finite loss ({value}) at epoch {}, batch {}: training stopped; best.pt keeps \
                 the best epoch so far (try a lower --lr)",
                epoch + 1,
                b + 1
            );
        }
        opt.zero_grad();
        loss.f_backward()?;
        opt.step(lr)?;
        let n = batch.indices.len();
        loss_sum += value * n as f64;
        seen += n;
        correct += out
            .logits
            .f_argmax(-1, false)?
            .f_eq_tensor(&y)?
            .f_sum(Kind::Int64)?
            .int64_value(&[]);
        if let Some(bar) = &bar {
            let rate = seen as f64 / started.elapsed().as_secs_f64();
            bar.set_message(format!(
                "loss {:.4}  {rate:.1} img/s",
                loss_sum / seen as f64
            ));
            bar.inc(1);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let secs = started.elapsed().as_secs_f64();
    let seen_f = seen.max(1) as f64;
    Ok((
        loss_sum / seen_f,
        correct as f64 / seen_f,
        lr,
        seen as f64 / secs,
    ))
}

/// Probabilities of every image in `indices`, in order, with their labels.
pub fn predict_all(
    model: &Model,
    loader: &Loader,
    indices: &[usize],
    compute: Compute,
) -> Result<(Vec<Vec<f64>>, Vec<usize>)> {
    let (mut probs, mut labels) = (vec![], vec![]);
    for batch in loader.batches(indices, 0) {
        let batch = batch?;
        let p = compute.probabilities(model, &batch.images, Kind::Double)?;
        probs.extend(Vec::<Vec<f64>>::try_from(p)?);
        labels.extend(batch.indices.iter().map(|&i| loader.samples[i].label));
    }
    Ok((probs, labels))
}

fn validate(
    model: &Model,
    loader: &Loader,
    indices: &[usize],
    classes: &[String],
    compute: Compute,
) -> Result<Evaluation> {
    let (probs, labels) = predict_all(model, loader, indices, compute)?;
    Ok(evaluate(classes, &probs, &labels))
}

/// A progress bar on a terminal; `None` when stderr is not one (CI, pipes, files).
fn progress_bar(len: u64, epoch: u64, epochs: u64) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "epoch {prefix} [{bar:30}] {pos}/{len} batches  {msg}  ETA {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(format!("{}/{epochs}", epoch + 1));
    Some(bar)
}

/// A loader of deterministic evaluation batches over `store`'s images.
pub fn eval_loader(
    store: Arc<Store>,
    samples: Arc<Vec<crate::data::folder::Sample>>,
    transform: EvalTransform,
    batch_size: usize,
) -> Loader {
    Loader {
        store,
        samples,
        mode: Arc::new(Mode::Eval(transform)),
        batch_size,
        workers: default_threads(),
        prefetch: 2,
        seed: 0,
        drop_last: false,
    }
}
