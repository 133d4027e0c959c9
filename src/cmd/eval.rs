//! `inception eval`: a checkpoint measured on its recorded validation files, or on a folder; an
//! ensemble of checkpoints (or a cross-validation folder) measured on a folder.

use anyhow::{Context, Result};

use crate::cli::EvalArgs;
use crate::device::{self, DeviceChoice};
use crate::evaluate::{measure, EvalReport, Evaluated, Options};
use crate::precision::Compute;
use crate::text::csv_field;
use crate::trust::intervals::ProportionMethod;

/// Measures the checkpoint as the arguments say, writing the files they ask for.
pub fn eval(a: &EvalArgs) -> Result<EvalReport> {
    let choice: DeviceChoice = a.device.parse()?;
    let device = choice.resolve()?;
    let compute = Compute::new(device, a.precision, true)?;
    let options = Options {
        checkpoints: a.checkpoint.clone(),
        tta: a.tta,
        data: a.data.clone(),
        split: a.split.unwrap_or_default(),
        no_calibration: a.no_calibration,
        method: if a.clopper_pearson {
            ProportionMethod::ClopperPearson
        } else {
            ProportionMethod::Wilson
        },
        prevalence: a.prevalence,
        skip_bad: a.skip_bad,
        batch_size: a.batch_size,
        compute,
    };
    let m = measure(&options, || device::announce(choice, &compute))?;
    if let Some(file) = &a.predictions {
        crate::checkpoint::write_atomic(file, predictions_csv(&m).as_bytes())?;
    }
    if let Some(dir) = &a.plots {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let name = match m.report.members.as_slice() {
            [one] => one.clone(),
            many => format!("ensemble of {}", many.len()),
        };
        let title = format!(
            "{name} on {} ({}), {} images",
            m.root.display(),
            m.report.split,
            m.probs.len()
        );
        for f in crate::plot::evaluation(dir, &m.classes, &m.probs, &m.labels, &title)? {
            eprintln!("wrote {}", f.display());
        }
        let file = dir.join(crate::runs::cv::RELIABILITY_PNG);
        crate::plot::reliability::save(
            &file,
            &m.classes,
            &m.raw,
            &m.fitted,
            &m.labels,
            m.temperature_fitted,
        )?;
        eprintln!("wrote {}", file.display());
    }
    Ok(m.report)
}

/// `--predictions`: path, truth, prob_<class>…, decision, set (the classes of its conformal
/// set joined by `|`).
fn predictions_csv(m: &Evaluated) -> String {
    let classes = &m.classes;
    let mut csv = format!(
        "path,truth{},decision,set\n",
        classes
            .iter()
            .map(|c| format!(",{}", csv_field(&format!("prob_{c}"))))
            .collect::<String>()
    );
    for (((path, p), &y), answer) in m.paths.iter().zip(&m.probs).zip(&m.labels).zip(&m.answers) {
        csv += &csv_field(&path.display().to_string());
        csv += &format!(",{}", csv_field(&classes[y]));
        for v in p {
            csv += &format!(",{v:.9}");
        }
        let members: Vec<&str> = answer
            .set
            .iter()
            .flatten()
            .map(|&c| classes[c].as_str())
            .collect();
        csv += &format!(
            ",{},{}\n",
            csv_field(&classes[answer.decision]),
            csv_field(&members.join("|"))
        );
    }
    csv
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
