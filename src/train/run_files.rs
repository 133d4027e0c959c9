//! Writing a run folder ([`crate::runs::run`] names its files): the config, split, data card
//! and environment at the start, a `metrics.csv` row after every epoch, and the checkpoints
//! (`model.pt` when the run ends: the last epoch's weights, averaged when EMA is on). Every
//! file is written atomically.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::Device;

use super::environment;
use super::{RunData, State, TrainJob};
use crate::checkpoint::record::{EpochRecord, ResumeState, TrainingRecord};
use crate::checkpoint::{self, write_atomic, Meta};
use crate::config::TrainConfig;
use crate::data::dataset::SplitFiles;
use crate::runs::run::{
    BEST, CONFIG_JSON, DATA_JSON, ENVIRONMENT_JSON, LAST, METRICS_CSV, MODEL, RESULTS_PNG,
    SPLIT_JSON,
};

/// A run folder being written.
pub struct RunFiles {
    pub dir: PathBuf,
    config: TrainConfig,
    dataset: String,
    split: SplitFiles,
    classes: Vec<String>,
    /// `metrics.csv` rows so far.
    rows: Vec<String>,
    /// What the checkpoints carry for calibrated answers.
    trust: Option<crate::trust::TrustRecord>,
}

impl RunFiles {
    /// Creates (or, resumed, reopens) the run folder and writes its config and split; a
    /// resumed run keeps the metrics of its first `epochs_done` epochs.
    pub fn open(job: &TrainJob, data: &RunData, epochs_done: u64) -> Result<RunFiles> {
        let dir = job.run_dir.create()?;
        for stale in checkpoint::remove_stale_temporaries(&dir)? {
            println!(
                "removed {} (left by a save that was killed)",
                stale.display()
            );
        }
        let files = RunFiles {
            rows: read_rows(&dir.join(METRICS_CSV), epochs_done)?,
            dir,
            config: job.config.clone(),
            dataset: fs::canonicalize(&job.data)
                .unwrap_or_else(|_| job.data.clone())
                .display()
                .to_string(),
            split: data.split_files.clone(),
            classes: data.dataset.classes.clone(),
            trust: job.trust.clone(),
        };
        if let Some(t) = &files.trust {
            if t.classes != files.classes {
                bail!(
                    "the calibration was fitted for the classes {:?}, and this dataset has {:?}",
                    t.classes,
                    files.classes
                );
            }
        }
        files.write(
            CONFIG_JSON,
            serde_json::to_string_pretty(&files.config)? + "\n",
        )?;
        files.write(
            SPLIT_JSON,
            serde_json::to_string_pretty(&files.split)? + "\n",
        )?;
        files.write(DATA_JSON, serde_json::to_string_pretty(&data.card)? + "\n")?;
        // A resumed run keeps the record of how it started.
        if !files.dir.join(ENVIRONMENT_JSON).exists() {
            let env = environment::RunEnvironment::of(job)?;
            files.write(ENVIRONMENT_JSON, serde_json::to_string_pretty(&env)? + "\n")?;
        }
        Ok(files)
    }

    fn write(&self, name: &str, text: String) -> Result<()> {
        write_atomic(&self.dir.join(name), text.as_bytes())
    }

    /// Adds an epoch's row to `metrics.csv`.
    pub fn append(&mut self, record: &EpochRecord) -> Result<()> {
        self.rows.push(record.csv_row());
        let text = format!("{}\n{}\n", EpochRecord::CSV_HEADER, self.rows.join("\n"));
        self.write(METRICS_CSV, text)
    }

    /// The rows of `metrics.csv` so far, parsed.
    pub fn records(&self) -> Result<Vec<EpochRecord>> {
        self.rows
            .iter()
            .map(|r| EpochRecord::from_csv_row(r))
            .collect()
    }

    /// `results.png`, from the rows of `metrics.csv`.
    pub fn plot_results(&self) -> Result<()> {
        let img = crate::plot::results::render(&self.records()?)?;
        crate::plot::save(&img, &self.dir.join(RESULTS_PNG))
    }

    /// The checkpoint record of a network of this run after `record`'s epoch.
    fn meta(&self, state: &State, record: &EpochRecord, resume: Option<ResumeState>) -> Meta {
        let cfg = &self.config;
        let mut meta = Meta::new(
            state.model.config,
            self.classes.clone(),
            cfg.image_size,
            cfg.normalization,
            format!("inception train, run {}", self.dir.display()),
        );
        meta.training = Some(TrainingRecord {
            config: cfg.clone(),
            dataset: self.dataset.clone(),
            split: self.split.clone(),
            epoch: record.epoch,
            metrics: record.clone(),
            resume,
        });
        meta.trust = self.trust.clone();
        meta
    }

    /// `best.pt`: the shipped weights of this (best) epoch.
    pub fn save_best(&self, state: &State, record: &EpochRecord) -> Result<()> {
        let meta = self.meta(state, record, None);
        checkpoint::save(&self.dir.join(BEST), state.shipped(), &meta)
    }

    /// `last.pt`: the trained weights, the optimiser's buffers, the average, the progress.
    pub fn save_last(&self, state: &State, record: &EpochRecord) -> Result<()> {
        let meta = self.meta(state, record, Some(state.progress.clone()));
        let mut extra = state.optimizer.state();
        if let Some(ema) = &state.ema {
            extra.extend(ema.state());
        }
        checkpoint::save_with(&self.dir.join(LAST), &state.model, &meta, &extra)
    }

    /// `model.pt`: the shipped weights at the end of the run.
    pub fn save_model(&self, state: &State, record: &EpochRecord) -> Result<()> {
        let meta = self.meta(state, record, None);
        checkpoint::save(&self.dir.join(MODEL), state.shipped(), &meta)
    }

    /// The epoch record of a checkpoint in this folder.
    fn record_of(&self, name: &str) -> Result<EpochRecord> {
        let path = self.dir.join(name);
        checkpoint::load(&path, Device::Cpu)?
            .meta
            .training
            .map(|t| t.metrics)
            .with_context(|| format!("{}: no training record", path.display()))
    }

    /// The epoch `last.pt` holds (for a resumed run that had no epoch left to run).
    pub fn last_record(&self) -> Result<Option<EpochRecord>> {
        match self.dir.join(LAST).exists() {
            true => self.record_of(LAST).map(Some),
            false => Ok(None),
        }
    }

    /// The epoch `best.pt` holds.
    pub fn best_record(&self) -> Result<EpochRecord> {
        self.record_of(BEST)
    }
}

/// The rows of an existing `metrics.csv` up to `epochs` (a resumed run drops rows written
/// after its checkpoint).
pub fn read_rows(path: &Path, epochs: u64) -> Result<Vec<String>> {
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
