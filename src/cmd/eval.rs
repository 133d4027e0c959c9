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
    let device = device::resolve(&a.device)?;
    let compute = Compute::new(device, a.precision, true)?;
    let mut ensemble = Ensemble::load(&a.checkpoint, compute)?;
    if a.tta {
        ensemble = ensemble.with_tta();
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
    let (probs, labels) = set.predict(|x| ensemble.probabilities(compute, x, tch::Kind::Double))?;
    let images_per_s = probs.len() as f64 / started.elapsed().as_secs_f64();
    if let Some(file) = &a.predictions {
        let mut csv = format!(
            "path,truth{}\n",
            meta.classes
                .iter()
                .map(|c| format!(",{}", csv_field(&format!("prob_{c}"))))
                .collect::<String>()
        );
        for ((&i, p), &y) in set.good.iter().zip(&probs).zip(&labels) {
            let path = &set.loader.samples[i].path;
            csv += &csv_field(&path.display().to_string());
            csv += &format!(",{}", csv_field(&meta.classes[y]));
            for v in p {
                csv += &format!(",{v:.9}");
            }
            csv += "\n";
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
    out
}
