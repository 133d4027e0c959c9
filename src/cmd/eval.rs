//! `inception eval`: a checkpoint measured on its recorded validation files, or on a folder; an
//! ensemble of checkpoints (or a cross-validation folder) measured on a folder.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::cli::{EvalArgs, EvalSplit};
use crate::cmd::csv_field;
use crate::data::dataset::Dataset;
use crate::data::folder::Sample;
use crate::data::transform::EvalTransform;
use crate::device;
use crate::ensemble::Ensemble;
use crate::metrics::{evaluate, Evaluation};
use crate::precision::Compute;
use crate::train::EvalSet;
use crate::trust::intervals::ProportionMethod;
use crate::trust::{EvalCalibration, EvalConformal, EvalOperatingPoint, Intervals};

/// What `eval --json` prints.
#[derive(Debug, Serialize)]
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
fn images(a: &EvalArgs, ensemble: &Ensemble) -> Result<(PathBuf, String, Vec<Sample>)> {
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
    let (name, idx) = match a.split.unwrap_or(EvalSplit::Val) {
        EvalSplit::Val => ("val", ds.split.val.clone()),
        EvalSplit::Train => ("train", ds.split.train.clone()),
        EvalSplit::All => ("all", (0..ds.samples.len()).collect()),
    };
    let samples = idx.iter().map(|&i| ds.samples[i].clone()).collect();
    Ok((root, name.into(), samples))
}

/// Measures the checkpoint as the arguments say.
pub fn eval(a: &EvalArgs) -> Result<EvalReport> {
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if let Some(p) = a.prevalence {
        crate::trust::operating::check_fraction(p, "--prevalence")?;
    }
    let device = device::resolve(&a.device)?;
    let compute = Compute::new(device, a.precision, true)?;
    let mut ensemble = Ensemble::load(&a.checkpoint, compute)?;
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
    device::announce(&a.device, &compute);
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
        .map_or("auto", |t| t.config.group_by.as_str());
    let good: Vec<Sample> = set
        .good
        .iter()
        .map(|&i| set.loader.samples[i].clone())
        .collect();
    let groups = crate::data::split::GroupBy::parse(group_by)?
        .grouping(&good, &meta.classes)?
        .keys;
    let method = if a.clopper_pearson {
        ProportionMethod::ClopperPearson
    } else {
        ProportionMethod::Wilson
    };
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
    if let Some(file) = &a.predictions {
        let mut csv = format!(
            "path,truth{},decision,set\n",
            meta.classes
                .iter()
                .map(|c| format!(",{}", csv_field(&format!("prob_{c}"))))
                .collect::<String>()
        );
        for (((&i, p), &y), answer) in set.good.iter().zip(&probs).zip(&labels).zip(&answers) {
            let path = &set.loader.samples[i].path;
            csv += &csv_field(&path.display().to_string());
            csv += &format!(",{}", csv_field(&meta.classes[y]));
            for v in p {
                csv += &format!(",{v:.9}");
            }
            let members: Vec<&str> = answer
                .set
                .iter()
                .flatten()
                .map(|&c| meta.classes[c].as_str())
                .collect();
            csv += &format!(
                ",{},{}\n",
                csv_field(&meta.classes[answer.decision]),
                csv_field(&members.join("|"))
            );
        }
        crate::checkpoint::write_atomic(file, csv.as_bytes())?;
    }
    let members = ensemble.files();
    if let Some(dir) = &a.plots {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let name = match members.as_slice() {
            [one] => one.clone(),
            many => format!("ensemble of {}", many.len()),
        };
        let title = format!(
            "{name} on {} ({split}), {} images",
            root.display(),
            probs.len()
        );
        for f in crate::plot::evaluation(dir, &meta.classes, &probs, &labels, &title)? {
            eprintln!("wrote {}", f.display());
        }
        let file = dir.join(crate::cv::RELIABILITY_PNG);
        crate::plot::reliability::save(
            &file,
            &meta.classes,
            &raw,
            &fitted,
            &labels,
            ensemble.fitted_temperature().is_some(),
        )?;
        eprintln!("wrote {}", file.display());
    }
    Ok(EvalReport {
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
    })
}

pub fn run(a: &EvalArgs) -> Result<()> {
    let report = eval(a)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// The report as printed.
pub fn render(r: &EvalReport) -> String {
    let e = &r.evaluation;
    let mut out = match r.members.len() {
        1 => format!(
            "{} on {} ({}): {} images\n",
            r.checkpoint, r.data, r.split, e.images
        ),
        n => format!(
            "ensemble of {n} members (mean of their probabilities): {}\non {} ({}): {} images\n",
            r.members.join(", "),
            r.data,
            r.split,
            e.images
        ),
    };
    if r.tta != "none" {
        out += &format!("test-time augmentation: {}\n", r.tta);
    }
    for s in &r.skipped {
        out += &format!("skipped: {s}\n");
    }
    out += &format!(
        "accuracy {:.4}   loss {:.4}   ({:.1} images/s)\n\n",
        e.accuracy, e.loss, r.images_per_s
    );
    let width = e
        .per_class
        .iter()
        .map(|m| m.class.chars().count())
        .max()
        .unwrap_or(0)
        .max(12);
    out += &format!(
        "{:<width$}  {:>9}  {:>7}  {:>7}  {:>7}\n",
        "", "precision", "recall", "f1", "support"
    );
    for m in &e.per_class {
        out += &format!(
            "{:<width$}  {:>9.4}  {:>7.4}  {:>7.4}  {:>7}\n",
            m.class, m.precision, m.recall, m.f1, m.support
        );
    }
    for (name, avg) in [
        ("macro avg", &e.macro_avg),
        ("weighted avg", &e.weighted_avg),
    ] {
        out += &format!(
            "{name:<width$}  {:>9.4}  {:>7.4}  {:>7.4}  {:>7}\n",
            avg.precision, avg.recall, avg.f1, e.images
        );
    }
    out += "\nconfusion matrix (rows = truth, columns = prediction)\n";
    out += &format!("{:<width$}", "");
    for m in &e.per_class {
        out += &format!("  {:>10}", m.class);
    }
    out += "\n";
    for (m, row) in e.per_class.iter().zip(&e.confusion) {
        out += &format!("{:<width$}", m.class);
        for v in row {
            out += &format!("  {v:>10}");
        }
        out += "\n";
    }
    if let Some(b) = &e.binary {
        out += &format!(
            "\nROC-AUC {:.4}   sensitivity ({}) {:.4}   specificity {:.4}\n",
            b.roc_auc, b.positive_class, b.sensitivity, b.specificity
        );
    }
    out += &format!(
        "balanced accuracy {:.4}   Cohen's kappa {:.4}   MCC {:.4}\n",
        e.balanced_accuracy, e.cohen_kappa, e.mcc
    );
    out += &crate::trust::render::intervals(&r.intervals);
    out += &format!("\nprobabilities: {}\n", r.calibration_note);
    if let Some(c) = &r.calibration {
        out += &format!(
            "  raw:      {}\n  at T {:.3}: {}\n",
            crate::trust::render::measures(&c.before),
            c.temperature,
            crate::trust::render::measures(&c.after)
        );
    }
    if let Some(o) = &r.operating_point {
        out += &crate::trust::render::eval_operating_point(o);
    }
    if let Some(c) = &r.conformal {
        out += &format!(
            "\nconformal sets ({}, alpha {}): {}\n",
            c.kind,
            c.alpha,
            crate::trust::render::coverage(&c.detail)
        );
    }
    out
}
