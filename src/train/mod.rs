//! The training loop: epochs of augmented mini-batches ([`epoch`]), validation after each
//! ([`validate`]), the run folder with its config, split, metrics and checkpoints
//! ([`run_files`]), early stopping and exact resumption. What a run keeps between epochs is
//! [`State`]: the network, the optimiser, the weight average ([`ema`]) and the progress record.
//!
//! Loss: cross-entropy on logits (class weights and label smoothing as configured), plus 0.3 ×
//! each auxiliary head's loss for GoogLeNet with `aux_logits` (Szegedy et al. 2014, §5).

pub mod ema;
pub mod environment;
pub mod epoch;
pub mod optim;
pub mod probe;
pub mod run_files;
pub mod scaler;
pub mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::checkpoint;
use crate::checkpoint::record::{Best, EpochRecord, ResumeState};
use crate::config::TrainConfig;
use crate::data::dataset::{Dataset, SplitFiles};
use crate::data::loader::{default_threads, Loader, Mode};
use crate::data::transform::{EvalTransform, TrainTransform};
use crate::dist::{Backend, Group, World};
use crate::model::{Model, NetConfig};
use crate::precision::Compute;
use crate::rng::mix;
use crate::weights::{self, Source};
use ema::Ema;
use optim::Optimizer;
use run_files::RunFiles;
use scaler::GradScaler;
pub use validate::{eval_loader, predict_all, EvalSet};

/// Weight of each auxiliary head's loss.
pub const AUX_WEIGHT: f64 = 0.3;

/// A validated training job.
#[derive(Debug)]
pub struct TrainJob {
    pub config: TrainConfig,
    pub data: PathBuf,
    /// The run folder: `--out`, or the next free `runs/train[-N]`, or the resumed run's.
    pub run_dir: crate::runs::RunDir,
    /// Device, precision and layout.
    pub compute: Compute,
    /// A `last.pt` to continue from.
    pub resume: Option<PathBuf>,
    /// Data-parallel training: this process's place among the processes (`None`: alone).
    pub world: Option<World>,
    /// What the checkpoints carry for calibrated answers (`train --calibration-from`).
    pub trust: Option<crate::trust::TrustRecord>,
}

/// What a finished run reports.
#[derive(Debug)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    /// The best validation epoch (none without validation).
    pub best: Option<(Best, EpochRecord)>,
    /// The last epoch: what `model.pt` holds.
    pub last: Option<EpochRecord>,
    pub epochs_run: u64,
    pub stopped_early: bool,
}

/// The dataset of a run, decoded, with its loaders and loss weights.
pub struct RunData {
    pub dataset: Dataset,
    /// What the data was (`data.json`).
    pub card: crate::data::card::DataCard,
    pub split_files: SplitFiles,
    pub train_loader: Loader,
    pub val_loader: Loader,
    /// Class weights of the loss, on the device.
    pub class_weights: Option<Tensor>,
}

impl RunData {
    /// Scans, splits and decodes the dataset, printing the scan report (rank 0 only). With
    /// several processes, each takes its slice of every global batch.
    pub fn load(job: &TrainJob) -> Result<RunData> {
        let cfg = &job.config;
        let image_size = cfg.image_size as u32;
        let cache = (cfg.cache_gib * (1u64 << 30) as f64) as u64;
        let (dataset, prepared) = Dataset::for_training(&job.data, cfg, image_size, cache)?;
        if World::leads(job.world.as_ref()) {
            print!("{}", dataset.report(&prepared));
        }
        let split_files = dataset.split_files();
        let card = crate::data::card::DataCard::of(&dataset, &prepared);
        let counts: Vec<usize> = (0..dataset.classes.len())
            .map(|c| {
                let label = |&&i: &&usize| dataset.samples[i].label == c;
                dataset.split.train.iter().filter(label).count()
            })
            .collect();
        let class_weights = match cfg.class_weights.resolve(&counts)? {
            Some(w) => Some(
                Tensor::f_from_slice(&w)?
                    .f_to_kind(Kind::Float)?
                    .f_to_device(job.compute.device)?,
            ),
            None => None,
        };
        let samples = Arc::new(dataset.samples.clone());
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
            shard: None,
        };
        // A last training batch of one image would break BatchNorm: dropped when it would be one.
        let drop_last = dataset.split.train.len() % cfg.batch_size == 1;
        let train_loader = Loader {
            shard: job.world.as_ref().map(|w| (w.rank, w.size)),
            ..loader(
                Mode::Train(TrainTransform {
                    image_size,
                    normalization: cfg.normalization,
                    augment: cfg.augment.clone(),
                }),
                drop_last,
            )
        };
        let val_loader = loader(
            Mode::Eval(EvalTransform {
                image_size,
                normalization: cfg.normalization,
            }),
            false,
        );
        Ok(RunData {
            dataset,
            card,
            split_files,
            train_loader,
            val_loader,
            class_weights,
        })
    }
}

/// What a run carries from one epoch to the next; `last.pt` holds all of it.
pub struct State {
    pub model: Model,
    pub optimizer: Optimizer,
    pub ema: Option<Ema>,
    /// The loss scaler, with fp16.
    pub scaler: Option<GradScaler>,
    /// The process group of data-parallel training.
    pub group: Option<Arc<Group>>,
    pub progress: ResumeState,
    /// Epochs completed.
    pub epochs_done: u64,
    /// The fitted probe, when this start fitted one.
    pub probe: Option<probe::ProbeReport>,
}

impl State {
    /// A fresh start, or the state saved in the job's `last.pt`; with a process group, every
    /// process starts from rank 0's weights (as DDP does).
    pub fn start(job: &TrainJob, data: &RunData, group: Option<Arc<Group>>) -> Result<State> {
        let cfg = &job.config;
        let compute = job.compute;
        let device = compute.device;
        let resumed = match &job.resume {
            Some(path) => Some((path, checkpoint::load(path, device)?)),
            None => None,
        };
        let (mut model, saved, progress, epochs_done) = match resumed {
            Some((path, ckpt)) => {
                let record = ckpt
                    .meta
                    .training
                    .as_ref()
                    .context("not a checkpoint written by training")?;
                let progress = record.resume.clone().with_context(|| {
                    format!(
                        "{} has no resume state (resume from last.pt)",
                        path.display()
                    )
                })?;
                if record.split != data.split_files {
                    bail!(
                        "{}: the dataset or its split differs from the run's",
                        path.display()
                    );
                }
                if World::leads(job.world.as_ref()) {
                    println!("resuming {} after epoch {}", path.display(), record.epoch);
                }
                let epoch = record.epoch;
                (ckpt.model, Some(ckpt.extra), progress, epoch)
            }
            None => {
                let classes = data.dataset.classes.len() as i64;
                let progress = ResumeState::default();
                (fresh_model(cfg, classes, device)?, None, progress, 0)
            }
        };
        compute.prepare(&mut model)?;
        let probe = match (cfg.probe_c, &job.resume) {
            (Some(c), None) => {
                let report = probe::fit_head(&mut model, data, compute, c, cfg.probe_views())?;
                if World::leads(job.world.as_ref()) {
                    println!("{}", report.line);
                }
                Some(report)
            }
            _ => None,
        };
        model.freeze_bn = cfg.freeze_bn;
        model.dropout = cfg.dropout;
        let mut optimizer = Optimizer::new(&model, cfg.optimizer, cfg.momentum, cfg.weight_decay)?;
        optimizer.set_backbone_lr_mult(cfg.backbone_lr_mult);
        let mut ema = match cfg.ema_decay > 0.0 {
            true => Some(Ema::new(&model, cfg.ema_decay, compute)?),
            false => None,
        };
        if let (Some(tensors), Some(path)) = (&saved, &job.resume) {
            let ctx = || format!("resuming from {}", path.display());
            optimizer
                .load_state(tensors, progress.optimizer_step)
                .with_context(ctx)?;
            if let Some(ema) = &mut ema {
                ema.load_state(tensors).with_context(ctx)?;
            }
        }
        // A run resumed in another precision starts a scaler afresh (or drops it).
        let scaler = (compute.precision == crate::precision::Precision::Fp16)
            .then(|| GradScaler::new(progress.scaler.unwrap_or_default()));
        let state = State {
            model,
            optimizer,
            ema,
            scaler,
            group,
            progress,
            epochs_done,
            probe,
        };
        state.broadcast_from_lead(true)?;
        Ok(state)
    }

    /// Before `epoch`: the backbone frozen, BatchNorm included, for the first
    /// `freeze_epochs` (a linear probe of the class layer), trained after.
    pub fn enter_phase(&mut self, cfg: &TrainConfig, epoch: u64) -> Result<()> {
        let frozen = epoch < cfg.freeze_epochs;
        self.optimizer.freeze_backbone(frozen)?;
        self.model.freeze_bn = cfg.freeze_bn || frozen;
        self.model.frozen_backbone = frozen;
        Ok(())
    }

    /// Copies rank 0's model (all of it, or only its buffers: BatchNorm's running statistics,
    /// which each process updates from its own images) and weight average into every process,
    /// as DDP's `broadcast_buffers` does. Nothing without a process group.
    pub fn broadcast_from_lead(&self, all: bool) -> Result<()> {
        let Some(g) = &self.group else {
            return Ok(());
        };
        let mut tensors: Vec<Tensor> = self
            .model
            .state_dict()
            .into_values()
            .filter(|t| all || !t.requires_grad())
            .collect();
        if let Some(ema) = &self.ema {
            tensors.extend(ema.model.state_dict().into_values());
        }
        let _guard = tch::no_grad_guard();
        g.broadcast(&tensors, 0)
    }

    /// The weights the run validates and ships: the average when there is one.
    pub fn shipped(&self) -> &Model {
        match &self.ema {
            Some(e) => &e.model,
            None => &self.model,
        }
    }

    /// Records a finished epoch; true when it is the best so far.
    fn record(&mut self, record: &EpochRecord) -> bool {
        self.epochs_done = record.epoch;
        self.progress.optimizer_step = self.optimizer.step;
        self.progress.scaler = self.scaler.as_ref().map(|s| s.state);
        let Some(now) = Best::of(record) else {
            return false;
        };
        let improved = self.progress.best.is_none_or(|b| b.beaten_by(&now));
        if improved {
            self.progress.best = Some(now);
            self.progress.epochs_since_best = 0;
        } else {
            self.progress.epochs_since_best += 1;
        }
        improved
    }

    /// Whether `patience` epochs have passed without a better one.
    fn out_of_patience(&self, patience: u64) -> bool {
        patience > 0 && self.progress.epochs_since_best >= patience
    }
}

/// What every process of a data-parallel job must share, a line each, for [`Group::join`] to
/// compare: the tool's version, the precision as resolved, the checkpoint it resumes from (its
/// epoch and checksum), and the recipe ([`TrainConfig::recipe`]: not the fields that only say
/// how to compute, which may differ by process; precision as written, `auto`, resolves by
/// device) with `skip_bad`, and of `init` only whether it is given, since its path may differ
/// by machine and rank 0's weights are broadcast.
pub fn agreement(job: &TrainJob) -> Result<String> {
    fn flatten(prefix: &str, v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let key = match prefix {
                        "" => k.clone(),
                        p => format!("{p}.{k}"),
                    };
                    flatten(&key, v, out);
                }
            }
            v => out.push_str(&format!("{prefix}={v}\n")),
        }
    }
    let recipe = TrainConfig {
        skip_bad: job.config.skip_bad,
        ..job.config.recipe()
    };
    let mut config = serde_json::to_value(&recipe).context("describing the config")?;
    if let Some(m) = config.as_object_mut() {
        m.insert("init".into(), job.config.init.is_some().into());
    }
    let resume = match &job.resume {
        None => "none".to_string(),
        Some(path) => {
            let meta = checkpoint::read_meta(path)?;
            let epoch = meta.training.as_ref().map_or(0, |t| t.epoch);
            format!("after epoch {epoch}, checksum {}", meta.checksum)
        }
    };
    let mut out = format!(
        "inception={}\nprecision={}\nresume={resume}\n",
        env!("CARGO_PKG_VERSION"),
        job.compute.precision,
    );
    flatten("", &config, &mut out);
    Ok(out)
}

/// What every process must have read from its data (the classes and, per side of the split,
/// the count and a CRC-32 of the files' paths and classes), for [`crate::dist::Store::agree`].
fn data_agreement(data: &RunData) -> String {
    let side = |files: &[crate::data::dataset::FileEntry]| {
        let mut crc = crc32fast::Hasher::new();
        for f in files {
            crc.update(f.path.as_bytes());
            crc.update(&[0]);
            crc.update(f.class.as_bytes());
            crc.update(&[0]);
        }
        format!(
            "{} images (paths and classes: CRC-32 {:08x})",
            files.len(),
            crc.finalize()
        )
    };
    format!(
        "classes={:?}\ntrain={}\nval={}\n",
        data.dataset.classes,
        side(&data.split_files.train),
        side(&data.split_files.val)
    )
}

/// Runs a training job to its end: `model.pt` is written last, so its presence means the
/// run is complete.
pub fn train(job: &TrainJob) -> Result<RunSummary> {
    let cfg = &job.config;
    let group = match &job.world {
        Some(w) => {
            let (backend, passed_over) = Backend::choose(job.compute.device, w.local_size)?;
            if let (Some(why), 0) = (passed_over, w.rank) {
                println!("data-parallel over Gloo rather than NCCL: {why}");
            }
            Some(Arc::new(Group::join(
                w,
                backend,
                crate::dist::DEFAULT_TIMEOUT,
                &agreement(job)?,
            )?))
        }
        None => None,
    };
    let data = RunData::load(job)?;
    if let (Some(g), Some(w)) = (&group, &job.world) {
        g.store
            .agree("data", &data_agreement(&data))
            .with_context(|| {
                format!(
                    "rank {} of {}: comparing the data of {}",
                    w.rank,
                    w.size,
                    job.data.display()
                )
            })?;
    }
    if cfg.validates() && data.dataset.split.val.is_empty() {
        bail!(
            "{}: the split left no validation images",
            job.data.display()
        );
    }
    let mut state = State::start(job, &data, group)?;
    let lead = World::leads(job.world.as_ref());
    // Only rank 0 writes the run folder.
    let mut files = match lead {
        true => Some(RunFiles::open(job, &data, state.epochs_done)?),
        false => None,
    };
    if let Some(f) = &files {
        crate::device::announce(cfg.device, &job.compute);
        if let (Some(w), Some(g)) = (&job.world, &state.group) {
            println!(
                "data-parallel: {} processes (c10d, {}), {} images per step each, {} in all",
                w.size,
                g.backend.name(),
                cfg.batch_size,
                cfg.batch_size * w.size
            );
        }
        println!("run folder: {}", f.dir.display());
    }

    let mut stopped_early = false;
    let mut epochs_run = 0;
    let mut last = None;
    let mut last_val = None;
    if let (true, Some(f)) = (cfg.plots && state.epochs_done == 0, &files) {
        plot_first_batch(&data, cfg, &f.dir)?;
    }
    for epoch in state.epochs_done..cfg.epochs {
        if state.out_of_patience(cfg.patience) {
            stopped_early = true;
            break;
        }
        let started = Instant::now();
        tch::manual_seed(mix(&[cfg.seed, epoch, 1]) as i64);
        state.enter_phase(cfg, epoch)?;
        let stats = epoch::train_epoch(&mut state, &data, epoch, cfg, job.compute)?;
        state.broadcast_from_lead(false)?;
        let (record, val) = close_epoch(
            &mut state,
            &data,
            job,
            files.as_mut(),
            epoch + 1,
            stats,
            started,
        )?;
        epochs_run += 1;
        last = Some(record);
        last_val = val;
    }
    // A run of no epochs (`probe_c` alone): the fitted probe is its one record, epoch 0.
    if let (0, Some(p)) = (cfg.epochs, state.probe.as_ref().map(|p| p.stats)) {
        let (record, val) =
            close_epoch(&mut state, &data, job, files.as_mut(), 0, p, Instant::now())?;
        last = Some(record);
        last_val = val;
    }
    if let Some(g) = &state.group {
        g.shutdown()?;
    }
    let Some(files) = files else {
        // Another rank: rank 0 writes and reports.
        return Ok(RunSummary {
            run_dir: PathBuf::new(),
            best: None,
            last,
            epochs_run,
            stopped_early,
        });
    };
    let last = match last {
        Some(r) => Some(r),
        None => files.last_record()?,
    };
    if let Some(record) = &last {
        files.save_model(&state, record)?;
    }
    if cfg.plots {
        // model.pt's weights measured on the validation images (the last epoch's pass, or one
        // more when a resumed run had no epoch left).
        let val = match last_val {
            Some(v) => Some(v),
            None => validate::validate(state.shipped(), &data, job.compute)?,
        };
        if let (Some(v), Some(r)) = (val, &last) {
            crate::plot::evaluation(
                &files.dir,
                &data.dataset.classes,
                &v.probs,
                &v.labels,
                &format!(
                    "model.pt (epoch {}) on the {} validation images",
                    r.epoch,
                    v.labels.len()
                ),
            )?;
        }
    }
    let best = match state.progress.best {
        Some(b) => Some((b, files.best_record()?)),
        None => None,
    };
    Ok(RunSummary {
        run_dir: files.dir,
        best,
        last,
        epochs_run,
        stopped_early,
    })
}

/// Measures the weights on the validation images after epoch `epoch` (1-based; 0 is the
/// fitted probe of a run of no epochs), keeps the record and, on rank 0 (`files`), prints and
/// writes it: metrics.csv, results.png (not for epoch 0: one point is no curve), best.pt when it
/// is the best so far, last.pt. `started`: when the epoch began, for its seconds.
fn close_epoch(
    state: &mut State,
    data: &RunData,
    job: &TrainJob,
    files: Option<&mut RunFiles>,
    epoch: u64,
    stats: epoch::EpochStats,
    started: Instant,
) -> Result<(EpochRecord, Option<validate::Validation>)> {
    let cfg = &job.config;
    let val = validate::validate(state.shipped(), data, job.compute)?;
    let e = val.as_ref().map(|v| &v.evaluation);
    let record = EpochRecord {
        epoch,
        train_loss: stats.loss,
        train_acc: stats.accuracy,
        val_loss: e.map(|v| v.loss),
        val_acc: e.map(|v| v.accuracy),
        val_macro_f1: e.map(|v| v.macro_avg.f1),
        lr: stats.lr,
        images_per_s: stats.images_per_s,
        seconds: started.elapsed().as_secs_f64(),
    };
    let best = state.record(&record);
    if let Some(files) = files {
        println!("{}", record.line(cfg.epochs));
        files.append(&record)?;
        if cfg.plots && epoch > 0 {
            files.plot_results()?;
        }
        if best {
            files.save_best(state, &record)?;
        }
        files.save_last(state, &record)?;
    }
    Ok((record, val))
}

/// `train_batch0.jpg`: the first training batch of the first epoch, as augmented.
fn plot_first_batch(data: &RunData, cfg: &TrainConfig, dir: &std::path::Path) -> Result<()> {
    let Some(batch) = data
        .train_loader
        .batches(&data.dataset.split.train, 0)
        .next()
    else {
        return Ok(());
    };
    let batch = batch?;
    let labels: Vec<String> = batch
        .indices
        .iter()
        .map(|&i| data.dataset.classes[data.dataset.samples[i].label].clone())
        .collect();
    let img = crate::plot::mosaic::render(&batch.images, &labels, &cfg.normalization)?;
    crate::plot::save(&img, &dir.join(crate::runs::run::BATCH_JPG))
}

/// A newly initialised network (seeded), from `cfg.init`'s or the published weights
/// (`cfg.pretrained`) where they are given.
fn fresh_model(cfg: &TrainConfig, num_classes: i64, device: Device) -> Result<Model> {
    let (flag, path) = match (&cfg.init, cfg.pretrained) {
        (Some(spec), _) => ("--init", Some(weights::resolve(spec)?)),
        (None, true) => ("--pretrained", Some(weights::pretrained_path(cfg.arch)?)),
        (None, false) => (Default::default(), None),
    };
    let source = match &path {
        // The reader's errors name the file.
        Some(p) => Some(weights::read(p, device).context(flag)?),
        None => None,
    };
    if let Some(p) = crate::model::published(cfg.arch).filter(|_| cfg.pretrained) {
        if p.normalization != cfg.normalization {
            println!(
                "note: {} were trained on inputs normalised with mean {:?}, std {:?}; this run \
                 normalises with mean {:?}, std {:?} (the config's normalization)",
                p.what,
                p.normalization.mean,
                p.normalization.std,
                cfg.normalization.mean,
                cfg.normalization.std
            );
        }
    }
    let transform_input = match &source {
        Some(Source::Checkpoint(c)) => {
            if c.meta.arch != cfg.arch {
                bail!(
                    "{flag} {}: a {} checkpoint, not {}",
                    path.as_deref().unwrap_or(Path::new("")).display(),
                    c.meta.arch,
                    cfg.arch
                );
            }
            c.meta.transform_input
        }
        Some(Source::StateDict(_)) => {
            cfg.pretrained && crate::model::published(cfg.arch).is_some_and(|p| p.transform_input)
        }
        None => false,
    };
    let net = NetConfig {
        aux_logits: cfg.aux_logits,
        transform_input,
        flips: cfg.flips(),
        ..NetConfig::new(cfg.arch, num_classes)
    };
    tch::manual_seed(mix(&[cfg.seed, u64::MAX, 0]) as i64);
    let mut model = Model::new(net, device)?;
    if let (Some(source), Some(path)) = (&source, &path) {
        let report = match source {
            Source::Checkpoint(c) => model.init_from(&c.model),
            // The published GoogLeNet's auxiliary heads are untrained (torchvision says so):
            // with them on, they start fresh.
            Source::StateDict(sd) if cfg.pretrained => {
                let mut sd: BTreeMap<String, Tensor> = sd
                    .iter()
                    .map(|(k, t)| (k.clone(), t.shallow_clone()))
                    .collect();
                sd.retain(|k, _| !crate::model::googlenet::is_aux(k));
                model.init_from_state_dict(&sd)
            }
            Source::StateDict(sd) => model.init_from_state_dict(sd),
        }
        .with_context(|| format!("{flag} {}", path.display()))?;
        let mut line = format!(
            "init: {} tensors from {}; {} start fresh ({})",
            report.copied.len(),
            path.display(),
            report.kept.len(),
            report.kept.join(", ")
        );
        if !report.left_out.is_empty() {
            line += &format!("; left out: {}", report.left_out.join(", "));
        }
        println!("{line}");
    }
    Ok(model)
}
