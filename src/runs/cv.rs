//! A cross-validation's folder: `plan.json` (the dataset and resolved recipe), one run folder
//! per fold (`fold-I/`, [`crate::runs::run`]), and once collected `cv.json` (the summary,
//! [`CvSummary`] as read back), `oof.csv` (the out-of-fold predictions,
//! [`crate::runs::oof`]) and the pictures. Every name here.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::run::MODEL;
use crate::checkpoint::write_atomic;
use crate::config::TrainConfig;
use crate::trust::TrustRecord;

/// What the cv folder was asked to do.
pub const PLAN: &str = "plan.json";
/// The summary (`crate::cv::CvReport` as written).
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

/// What is read back from `cv.json`: the one type every reader of it uses (the report's
/// page, the ensemble's calibration, `train --calibration-from`, `compare`). Fields a summary
/// gained later are optional, so older summaries still read.
#[derive(Debug, Clone, Deserialize)]
pub struct CvSummary {
    pub dataset: String,
    pub folds: usize,
    pub classes: Vec<String>,
    pub config: TrainConfig,
    /// What the folds ship (`model.pt`), fold by fold.
    pub model: FoldResults,
    /// What the shipped model carries; `None` when nothing was fitted (`trust_note` says why).
    #[serde(default)]
    pub trust: Option<TrustRecord>,
    #[serde(default)]
    pub trust_note: Option<String>,
}

impl CvSummary {
    /// Reads `DIR/cv.json`.
    pub fn read(dir: &Path) -> Result<CvSummary> {
        let path = dir.join(CV_JSON);
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (is {} a finished cv folder?)",
                path.display(),
                dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a cv.json of this tool version (`inception cv --collect {}` \
                 rewrites it)",
                path.display(),
                dir.display()
            )
        })
    }
}

/// The per-fold measures of one checkpoint of every fold, as `cv.json` holds them.
#[derive(Debug, Clone, Deserialize)]
pub struct FoldResults {
    pub per_fold: Vec<FoldResult>,
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
