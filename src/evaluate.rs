//! Measuring a model on labelled images: a checkpoint on its recorded validation files (or the
//! other side of its split), or a checkpoint or ensemble on a folder. The figures `eval`
//! prints and the report shows: metrics, calibration, the operating point, conformal
//! coverage, and their intervals (patients resampled for the bootstrap).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::data::dataset::Dataset;
use crate::data::folder::Sample;
use crate::data::split::GroupBy;
use crate::data::transform::EvalTransform;
use crate::ensemble::{Answer, Ensemble};
use crate::metrics::{evaluate, Evaluation};
use crate::precision::Compute;
use crate::train::EvalSet;
use crate::trust::intervals::ProportionMethod;
use crate::trust::{EvalCalibration, EvalConformal, EvalOperatingPoint, Intervals};

/// Which recorded files of a checkpoint's split are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Split {
    #[default]
    Val,
    Train,
    All,
}

/// What to measure, and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Checkpoints (several, or a cv folder: an ensemble).
    pub checkpoints: Vec<PathBuf>,
    /// Average the flipped views (test-time augmentation).
    pub tta: bool,
    /// A folder of class folders; `None`: the checkpoint's recorded `split`.
    pub data: Option<PathBuf>,
    pub split: Split,
    /// Measure the raw probabilities, not the calibrated ones the checkpoint carries.
    pub no_calibration: bool,
    pub method: ProportionMethod,
    /// The prevalence PPV and NPV are also given at.
    pub prevalence: Option<f64>,
    /// Leave out unreadable files (listed) instead of failing.
    pub skip_bad: bool,
    pub batch_size: usize,
    pub compute: Compute,
}

/// A measurement: the report, and each image's answer behind it.
#[derive(Debug)]
pub struct Evaluated {
    pub report: EvalReport,
    pub classes: Vec<String>,
    /// The folder measured (the dataset's root for a recorded split).
    pub root: PathBuf,
    /// The images measured, in order (unreadable ones left out).
    pub paths: Vec<PathBuf>,
    pub labels: Vec<usize>,
    /// The probabilities measured (calibrated when the model ships a temperature).
    pub probs: Vec<Vec<f64>>,
    /// Before and after the model's fitted temperature.
    pub raw: Vec<Vec<f64>>,
    pub fitted: Vec<Vec<f64>>,
    pub answers: Vec<Answer>,
    /// Whether the model carries a fitted temperature.
    pub temperature_fitted: bool,
}

/// What `eval --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// The checkpoint, or the ensemble's members joined by `+`.
    pub checkpoint: String,
    /// The checkpoints whose probabilities were averaged (one for a single checkpoint).
    pub members: Vec<String>,
    /// The views averaged by test-time augmentation (`none` without --tta).
    pub tta: String,
    pub data: String,
    /// `val`, `train`, `all` (of the recorded split), or `folder` (with --data).
    pub split: String,
    /// Files left out as unreadable (with --skip-bad).
    pub skipped: Vec<String>,
    /// Images per second from reading the files to the probabilities: decoding, preprocessing
    /// and the network.
    pub images_per_s: f64,
    #[serde(flatten)]
    pub evaluation: Evaluation,
    /// Whether the probabilities measured are calibrated, and how.
    pub calibrated: bool,
    pub calibration_note: String,
    /// The checkpoint's temperature and the calibration measures before and after it.
    pub calibration: Option<EvalCalibration>,
    /// Two classes: the metrics at the threshold decisions are taken at, and at 0.5.
    pub operating_point: Option<EvalOperatingPoint>,
    /// Coverage and set sizes of the checkpoint's conformal prediction sets.
    pub conformal: Option<EvalConformal>,
    /// 95 % intervals (patients resampled for the bootstrap).
    pub intervals: Intervals,
}

/// The images to measure: from --data, or the checkpoint's recorded split.
fn images(a: &Options, ensemble: &Ensemble) -> Result<(PathBuf, String, Vec<Sample>)> {
    let meta = ensemble.meta();
    let classes = &meta.classes;
    if let Some(dir) = &a.data {
        let ds = Dataset::all_for_eval(dir)?;
        if ds.classes != *classes {
            bail!(
                "{}: its class folders {:?} are not the checkpoint's classes {:?}",
                dir.display(),
                ds.classes,
                classes
            );
        }
        return Ok((dir.clone(), "folder".into(), ds.samples));
    }
    if ensemble.members.len() > 1 {
        bail!(
            "an ensemble of {} checkpoints has no one validation split: give --data DIR (images \
             none of them trained on); `inception cv --collect` measures a cv folder out of fold",
            ensemble.members.len()
        );
    }
    let record = meta.training.as_ref().with_context(|| {
        format!(
            "{} records no dataset (an imported checkpoint?): give --data DIR",
            ensemble.files()[0]
        )
    })?;
    let root = PathBuf::from(&record.dataset);
    let ds = Dataset::from_split_files(&root, classes, &record.split)?;
    let (name, idx) = match a.split {
        Split::Val => ("val", ds.split.val.clone()),
        Split::Train => ("train", ds.split.train.clone()),
        Split::All => ("all", (0..ds.samples.len()).collect()),
    };
    let samples = idx.iter().map(|&i| ds.samples[i].clone()).collect();
    Ok((root, name.into(), samples))
}

/// Measures the checkpoints as `a` says; `started` is called once the inputs are read and
/// checked, before the network runs (the command announces its device there).
pub fn measure(a: &Options, started: impl FnOnce()) -> Result<Evaluated> {
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if let Some(p) = a.prevalence {
        crate::trust::operating::check_fraction(p, "--prevalence")?;
    }
    let compute = a.compute;
    let mut ensemble = Ensemble::load(&a.checkpoints, compute)?;
    if a.tta {
        ensemble = ensemble.with_tta();
    }
    if a.no_calibration {
        ensemble = ensemble.without_calibration();
    }
    let (root, split, samples) = images(a, &ensemble)?;
    if samples.is_empty() {
        bail!("no images to measure in {} ({split})", root.display());
    }
    started();
    let meta = ensemble.meta();
    let size = meta.image_size as u32;
    let started = std::time::Instant::now();
    let transform = EvalTransform {
        image_size: size,
        normalization: meta.normalization,
    };
    let set = EvalSet::prepare(samples, transform, a.batch_size, a.skip_bad)?;
    let answers = std::cell::RefCell::new(vec![]);
    let (probs, labels) = set.predict(|x| {
        let a = ensemble.answers(compute, x)?;
        let rows: Vec<Vec<f64>> = a.iter().map(|a| a.probs.clone()).collect();
        answers.borrow_mut().extend(a);
        Ok(tch::Tensor::f_from_slice(&rows.concat())?
            .f_view([rows.len() as i64, meta.classes.len() as i64])?)
    })?;
    let answers = answers.into_inner();
    let images_per_s = probs.len() as f64 / started.elapsed().as_secs_f64();
    let raw: Vec<Vec<f64>> = answers.iter().map(|a| a.raw.clone()).collect();
    let fitted: Vec<Vec<f64>> = answers.iter().map(|a| a.fitted.clone()).collect();
    let basis = if ensemble.ships_temperature() {
        &fitted
    } else {
        &raw
    };
    let sets: Option<Vec<Vec<usize>>> = answers.iter().map(|a| a.set.clone()).collect();
    let group_by = meta
        .training
        .as_ref()
        .map_or(GroupBy::Auto, |t| t.config.group_by.clone());
    let good: Vec<Sample> = set
        .good
        .iter()
        .map(|&i| set.loader.samples[i].clone())
        .collect();
    let groups = group_by.grouping(&good, &meta.classes)?.keys;
    let method = a.method;
    let measured = crate::trust::measure(
        &crate::trust::Model {
            classes: &meta.classes,
            record: ensemble.trust.as_ref(),
            calibrated: ensemble.is_calibrated(),
            threshold: ensemble.threshold(),
            cross: ensemble.cross.is_some(),
        },
        &raw,
        &fitted,
        basis,
        sets.as_deref(),
        &labels,
        &groups,
        method,
        a.prevalence,
    );
    let members = ensemble.files();
    let report = EvalReport {
        checkpoint: members.join(" + "),
        members,
        tta: ensemble.tta.describe(),
        data: root.display().to_string(),
        split,
        skipped: set.bad.iter().map(|b| b.reason.clone()).collect(),
        images_per_s,
        evaluation: evaluate(&meta.classes, &probs, &labels),
        calibrated: ensemble.is_calibrated(),
        calibration_note: ensemble.calibration_note(),
        calibration: measured.calibration,
        operating_point: measured.operating_point,
        conformal: measured.conformal,
        intervals: measured.intervals,
    };
    let paths = set
        .good
        .iter()
        .map(|&i| set.loader.samples[i].path.clone())
        .collect();
    Ok(Evaluated {
        report,
        classes: meta.classes.clone(),
        root,
        paths,
        labels,
        probs,
        raw,
        fitted,
        answers,
        temperature_fitted: ensemble.fitted_temperature().is_some(),
    })
}
