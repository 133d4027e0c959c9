//! A cross-validation's folder: `plan.json` (the dataset and resolved recipe), one run folder
//! per fold (`fold-I/`, [`crate::runs::run`]), and once collected `cv.json` (the summary,
//! [`CvReport`]), `oof.csv` (the out-of-fold predictions,
//! [`crate::runs::oof`]) and the pictures. Every name here.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::run::MODEL;
use crate::checkpoint::write_atomic;
use crate::config::TrainConfig;
use crate::metrics::Evaluation;
use crate::stats::Summary;
use crate::trust::operating::OperatingPoint;
use crate::trust::{CalibrationReport, ConformalReport, Intervals, TrustRecord};

/// What the cv folder was asked to do.
pub const PLAN: &str = "plan.json";
/// The summary ([`CvReport`]).
pub const CV_JSON: &str = "cv.json";
/// The out-of-fold predictions.
pub const OOF: &str = "oof.csv";
/// Each fold's accuracy, mean ± std.
pub const CV_ACCURACY_PNG: &str = "cv_accuracy.png";
/// Two classes: each fold's ROC curve and the pooled out-of-fold one.
pub const CV_ROC_PNG: &str = "cv_roc.png";
/// The out-of-fold reliability diagram (also `eval --plots`' name for its own).
pub const RELIABILITY_PNG: &str = "reliability.png";

/// The dataset and the resolved recipe of a cross-validation (`folds` set; `fold` unused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The dataset folder (absolute).
    pub dataset: String,
    pub config: TrainConfig,
}

impl Plan {
    /// The number of folds.
    pub fn folds(&self) -> usize {
        self.config.folds.unwrap_or(0)
    }

    /// Reads `DIR/plan.json`.
    pub fn read(dir: &Path) -> Result<Plan> {
        let path = dir.join(PLAN);
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} ({} is not a cv folder, or its plan was lost)",
                path.display(),
                dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes `DIR/plan.json` (atomically).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)? + "\n";
        write_atomic(&dir.join(PLAN), text.as_bytes())
    }

    /// Whether `other` trains the same: the dataset and the config but for the fields that
    /// only say how to compute ([`TrainConfig::recipe`]), which jobs of one cv may set each
    /// for its own machine.
    pub fn same_recipe(&self, other: &Plan) -> bool {
        self.dataset == other.dataset && self.config.recipe() == other.config.recipe()
    }

    /// The training config of fold `fold`.
    pub fn fold_config(&self, fold: usize) -> TrainConfig {
        TrainConfig {
            fold,
            ..self.config.clone()
        }
    }
}

/// The run folder of fold `fold`.
pub fn fold_dir(dir: &Path, fold: usize) -> PathBuf {
    dir.join(format!("fold-{fold}"))
}

/// Whether fold `fold` of the cv folder `dir` is trained to its end (its `model.pt` exists).
pub fn fold_finished(dir: &Path, fold: usize) -> bool {
    fold_dir(dir, fold).join(MODEL).exists()
}

/// The folds of `dir`'s plan that are not finished.
pub fn unfinished(dir: &Path, plan: &Plan) -> Vec<usize> {
    (0..plan.folds())
        .filter(|&f| !fold_finished(dir, f))
        .collect()
}

/// The folds' `model.pt` of the cv folder `dir`, in fold order; an error when the folder is no
/// cv folder or a fold of its plan is not finished.
pub fn members(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.join(PLAN).exists() {
        bail!(
            "{}: a folder, but not a cross-validation folder (no {}); give a checkpoint file",
            dir.display(),
            PLAN
        );
    }
    let plan = Plan::read(dir)?;
    let unfinished = unfinished(dir, &plan);
    if !unfinished.is_empty() {
        let names: Vec<String> = unfinished.iter().map(|f| format!("fold-{f}")).collect();
        bail!(
            "{}: {} of {} folds not finished (no {MODEL}): {}; `inception cv --resume {}` \
             finishes them",
            dir.display(),
            unfinished.len(),
            plan.folds(),
            names.join(", "),
            dir.display()
        );
    }
    Ok((0..plan.folds())
        .map(|f| fold_dir(dir, f).join(MODEL))
        .collect())
}

/// One measure over the folds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasureSummary {
    pub measure: String,
    #[serde(flatten)]
    pub summary: Summary,
}

/// A checkpoint of every fold, measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// Which checkpoint: `model.pt`, `model.pt + TTA` or `best.pt`.
    pub checkpoint: String,
    pub per_fold: Vec<FoldResult>,
    /// Mean, std and 95 % CI over folds of each measure.
    pub summary: Vec<MeasureSummary>,
    /// The metrics of all folds' predictions pooled (each image once).
    pub pooled: Evaluation,
}

impl Assessment {
    /// The summary of `measure`.
    pub fn measure(&self, measure: &str) -> Option<&Summary> {
        self.summary
            .iter()
            .find(|m| m.measure == measure)
            .map(|m| &m.summary)
    }
}

/// Everything `cv.json` holds: the one type that writes it and every reader of it reads
/// (the report's page, the ensemble's calibration, `train --calibration-from`, `compare`).
/// `best`, `calibration`, `operating_point`, `conformal`, `trust` and `trust_note` may be
/// absent; a summary older than `intervals` (2026-12-04) does not read, and `inception cv
/// --collect` rewrites it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvReport {
    pub cv: String,
    pub dataset: String,
    pub folds: usize,
    pub classes: Vec<String>,
    pub config: TrainConfig,
    /// The views test-time augmentation averaged.
    pub tta: String,
    /// `model.pt` of each fold: what the folds ship.
    pub model: Assessment,
    /// The same with test-time augmentation.
    pub model_tta: Assessment,
    /// `best.pt` of each fold, chosen on its validation images (optimistic).
    pub best: Option<Assessment>,
    /// Seconds each fold's training took (the sum of its metrics.csv rows).
    pub train_seconds: Vec<f64>,
    /// 95 % intervals of the pooled out-of-fold figures (patients resampled).
    pub intervals: Intervals,
    /// The temperature fitted on the out-of-fold logits and its measures before and after.
    pub calibration: Option<CalibrationReport>,
    /// Two classes: the screening threshold at the target sensitivity.
    pub operating_point: Option<OperatingPoint>,
    /// The conformal prediction sets' thresholds and coverage.
    pub conformal: Option<ConformalReport>,
    /// What the shipped model carries (`train --calibration-from`; the cv folder as an
    /// ensemble): `None` when it could not be fitted, `trust_note` says why.
    pub trust: Option<TrustRecord>,
    /// Why nothing, or no temperature, was fitted.
    pub trust_note: Option<String>,
}

impl CvReport {
    /// Reads `DIR/cv.json` (a figure written as `null`, JSON having no NaN, reads as NaN).
    pub fn read(dir: &Path) -> Result<CvReport> {
        let path = dir.join(CV_JSON);
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (is {} a finished cv folder?)",
                path.display(),
                dir.display()
            )
        })?;
        super::json::from_str(&text).with_context(|| {
            format!(
                "{} is not a cv.json of this tool version (`inception cv --collect {}` \
                 rewrites it)",
                path.display(),
                dir.display()
            )
        })
    }
}

/// One fold's measures of one checkpoint on the fold's validation images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldResult {
    pub fold: usize,
    /// The epoch the checkpoint holds.
    pub epoch: u64,
    pub images: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// Two classes only (the first class positive).
    pub roc_auc: Option<f64>,
    pub sensitivity: Option<f64>,
    pub specificity: Option<f64>,
}

/// How a measure is read from a fold's result (`None`: not defined for this data).
pub type Measure = fn(&FoldResult) -> Option<f64>;

/// The measures named in reports, in order, with how to read them from a fold.
pub const MEASURES: [(&str, Measure); 5] = [
    ("accuracy", |r| Some(r.accuracy)),
    ("macro_f1", |r| Some(r.macro_f1)),
    ("roc_auc", |r| r.roc_auc),
    ("sensitivity", |r| r.sensitivity),
    ("specificity", |r| r.specificity),
];
