//! K-fold cross-validation of a training recipe: one ordinary training run per fold of the
//! stratified, patient-grouped partition ([`crate::data::split::kfold`]), each in `fold-I/` of
//! one cv folder, then a summary built from those folders alone ([`collect`]), so that folds
//! run apart (other processes, machines or GPUs) give the same summary as folds run here.
//!
//! The summary measures, for each fold, the checkpoint the fold ships (`model.pt`) on the
//! fold's validation images — plain and with test-time augmentation — and `best.pt` (chosen on
//! those same images, so optimistic); it reports mean, standard deviation and a 95 %
//! t-interval over folds ([`stats`]), and the metrics of the pooled out-of-fold predictions:
//! every image predicted once, by the model that did not train on it (`oof.csv`).

pub mod compare;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::Kind;

use crate::checkpoint::record::EpochRecord;
use crate::checkpoint::write_atomic;
use crate::data::dataset::Dataset;
use crate::data::transform::EvalTransform;
use crate::ensemble::Ensemble;
use crate::metrics::{evaluate, Evaluation};
use crate::precision::Compute;
use crate::runs::cv::{
    fold_dir, fold_finished, unfinished, Assessment, CvReport, FoldResult, MeasureSummary, Plan,
    CV_ACCURACY_PNG, CV_JSON, CV_ROC_PNG, MEASURES, OOF, RELIABILITY_PNG,
};
use crate::runs::oof::{self, OofRow};
use crate::runs::run::{BEST, MODEL};
use crate::runs::RunDir;
use crate::stats::Summary;
use crate::train::run_files::read_rows;
use crate::train::{train, EvalSet, TrainJob};

/// Trains fold `fold` to its end: from scratch, from its `last.pt` when a run was cut short,
/// or not at all when its `model.pt` exists. Returns whether it trained.
pub fn run_fold(dir: &Path, plan: &Plan, fold: usize, compute: Compute) -> Result<bool> {
    let folder = fold_dir(dir, fold);
    if fold_finished(dir, fold) {
        println!("fold {fold}: finished already ({})", folder.display());
        return Ok(false);
    }
    let last = folder.join(crate::runs::run::LAST);
    let resume = last.exists().then_some(last);
    fs::create_dir_all(&folder).with_context(|| format!("creating {}", folder.display()))?;
    println!(
        "\n== fold {fold} of {} → {}{}",
        plan.folds(),
        folder.display(),
        if resume.is_some() { " (resuming)" } else { "" }
    );
    let job = TrainJob {
        config: plan.fold_config(fold),
        data: PathBuf::from(&plan.dataset),
        run_dir: RunDir::Resumed(folder),
        compute,
        resume,
        world: None,
        trust: None,
    };
    train(&job)?;
    Ok(true)
}

impl FoldResult {
    fn new(fold: usize, epoch: u64, e: &Evaluation) -> FoldResult {
        FoldResult {
            fold,
            epoch,
            images: e.images,
            accuracy: e.accuracy,
            macro_f1: e.macro_avg.f1,
            roc_auc: e.binary.as_ref().map(|b| b.roc_auc),
            sensitivity: e.binary.as_ref().map(|b| b.sensitivity),
            specificity: e.binary.as_ref().map(|b| b.specificity),
        }
    }
}

impl Assessment {
    fn new(checkpoint: String, folds: Vec<FoldEntry>, classes: &[String]) -> Assessment {
        let mut per_fold = vec![];
        let (mut probs, mut labels) = (vec![], vec![]);
        for (r, p, l) in folds {
            per_fold.push(r);
            probs.extend(p);
            labels.extend(l);
        }
        let summary = MEASURES
            .iter()
            .filter_map(|(name, get)| {
                let values: Option<Vec<f64>> = per_fold.iter().map(get).collect();
                Some(MeasureSummary {
                    measure: name.to_string(),
                    summary: Summary::of(&values?),
                })
            })
            .collect();
        Assessment {
            checkpoint,
            per_fold,
            summary,
            pooled: evaluate(classes, &probs, &labels),
        }
    }
}

/// A fold's result with the probabilities and labels it was measured from.
type FoldEntry = (FoldResult, Vec<Vec<f64>>, Vec<usize>);

/// One checkpoint's predictions on its fold's validation images.
struct FoldPredictions {
    epoch: u64,
    probs: Vec<Vec<f64>>,
    labels: Vec<usize>,
}

/// Builds the summary from the fold folders of `dir`: every fold must be finished. Writes
/// `oof.csv` and `cv.json` there.
pub fn collect(dir: &Path, compute: Compute) -> Result<CvReport> {
    let plan = Plan::read(dir)?;
    let k = plan.folds();
    let missing: Vec<String> = unfinished(dir, &plan)
        .iter()
        .map(|f| format!("fold-{f}"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{}: {} of {k} folds not finished (no {MODEL}): {}",
            dir.display(),
            missing.len(),
            missing.join(", ")
        );
    }
    let root = PathBuf::from(&plan.dataset);
    let (mut model, mut model_tta, mut best) = (vec![], vec![], vec![]);
    let mut rows: Vec<OofRow> = vec![];
    let mut oof_samples = vec![];
    let mut classes: Vec<String> = vec![];
    let mut tta_views = String::new();
    let mut train_seconds = vec![];
    for f in 0..k {
        let folder = fold_dir(dir, f);
        let mut ensemble = Ensemble::load(&[folder.join(MODEL)], compute)?;
        let meta = ensemble.meta().clone();
        let record = meta
            .training
            .as_ref()
            .with_context(|| format!("{}: no training record", folder.join(MODEL).display()))?;
        if record.config.folds != Some(k) || record.config.fold != f {
            bail!(
                "{}: trained as fold {} of {:?}, not fold {f} of {k}",
                folder.display(),
                record.config.fold,
                record.config.folds
            );
        }
        if f == 0 {
            classes = meta.classes.clone();
        } else if meta.classes != classes {
            bail!(
                "{}: classes {:?}, not fold 0's {classes:?}",
                folder.display(),
                meta.classes
            );
        }
        train_seconds.push(train_seconds_of(&folder)?);
        let ds = Dataset::from_split_files(&root, &classes, &record.split)?;
        let val: Vec<_> = ds
            .split
            .val
            .iter()
            .map(|&i| ds.samples[i].clone())
            .collect();
        let transform = EvalTransform {
            image_size: meta.image_size as u32,
            normalization: meta.normalization,
        };
        let set = EvalSet::prepare(val.clone(), transform, 32, false)?;
        let predict = |ensemble: &Ensemble| -> Result<FoldPredictions> {
            let (probs, labels) =
                set.predict(|x| ensemble.probabilities(compute, x, Kind::Double))?;
            Ok(FoldPredictions {
                epoch: ensemble.meta().training.as_ref().map_or(0, |t| t.epoch),
                probs,
                labels,
            })
        };
        let net = &ensemble.members[0].1.model;
        let (logits, labels) = set.predict(|x| compute.logits(net, x))?;
        let plain = FoldPredictions {
            epoch: meta.training.as_ref().map_or(0, |t| t.epoch),
            probs: crate::trust::softmax_rows(&logits, 1.0),
            labels,
        };
        for (((sample, p), z), &y) in val.iter().zip(&plain.probs).zip(&logits).zip(&plain.labels) {
            let rel = sample.path.strip_prefix(&root).unwrap_or(&sample.path);
            rows.push(OofRow {
                path: rel.to_string_lossy().into_owned(),
                truth: y,
                probs: p.clone(),
                logits: Some(z.clone()),
                fold: f,
                group: None,
            });
            oof_samples.push(sample.clone());
        }
        ensemble = ensemble.with_tta();
        tta_views = ensemble.tta.describe();
        let tta = predict(&ensemble)?;
        let best_path = folder.join(BEST);
        let best_pred = match best_path.exists() {
            true => Some(predict(&Ensemble::load(&[best_path], compute)?)?),
            false => None,
        };
        let entry = |p: FoldPredictions| {
            let e = evaluate(&classes, &p.probs, &p.labels);
            (FoldResult::new(f, p.epoch, &e), p.probs, p.labels)
        };
        model.push(entry(plain));
        model_tta.push(entry(tta));
        if let Some(b) = best_pred {
            best.push(entry(b));
        }
    }
    let keys = plan.config.group_by.grouping(&oof_samples, &classes)?.keys;
    for ((row, key), sample) in rows.iter_mut().zip(keys).zip(&oof_samples) {
        // File by file, the key is the path: written relative, as the path column is.
        row.group = Some(if Path::new(&key) == sample.path {
            row.path.clone()
        } else {
            key
        });
    }
    let mut oof_text = oof::header(&classes);
    for r in &rows {
        oof::write_row(&mut oof_text, r, &classes);
    }
    let trust = fit_trust(dir, &plan, &classes, &rows);
    if plan.config.plots {
        plot_folds(dir, &classes, &model)?;
        if let Ok(t) = &trust {
            plot_reliability(dir, &classes, &rows, t)?;
        }
    }
    let probs: Vec<Vec<f64>> = rows.iter().map(|r| r.probs.clone()).collect();
    let labels: Vec<usize> = rows.iter().map(|r| r.truth).collect();
    let groups: Vec<&str> = rows
        .iter()
        .map(|r| r.group.as_deref().unwrap_or(""))
        .collect();
    let intervals = crate::trust::intervals(
        &probs,
        &labels,
        classes.len(),
        &crate::trust::intervals::Groups::of(&groups),
        plan.config.trust.intervals,
    );
    let (calibration, operating_point, conformal, trust, trust_note) = match trust {
        Ok(t) => (
            t.calibration,
            t.operating_point,
            Some(t.conformal),
            Some(t.record),
            t.note,
        ),
        Err(e) => (None, None, None, None, Some(format!("{e:#}"))),
    };
    let report = CvReport {
        intervals,
        calibration,
        operating_point,
        conformal,
        trust,
        trust_note,
        cv: dir.display().to_string(),
        dataset: plan.dataset.clone(),
        folds: k,
        model: Assessment::new(MODEL.into(), model, &classes),
        model_tta: Assessment::new(format!("{MODEL} + TTA"), model_tta, &classes),
        best: (best.len() == k).then(|| Assessment::new(BEST.into(), best, &classes)),
        classes,
        config: plan.config,
        tta: tta_views,
        train_seconds,
    };
    write_atomic(&dir.join(OOF), oof_text.as_bytes())?;
    let json = serde_json::to_string_pretty(&report)? + "\n";
    write_atomic(&dir.join(CV_JSON), json.as_bytes())?;
    Ok(report)
}

/// `cv_accuracy.png` (each fold's accuracy, mean ± std) and, for two classes, `cv_roc.png`
/// (each fold's ROC curve and the pooled out-of-fold one), from each fold's `model.pt`.
fn plot_folds(dir: &Path, classes: &[String], folds: &[FoldEntry]) -> Result<()> {
    let acc: Vec<f64> = folds.iter().map(|(r, _, _)| r.accuracy).collect();
    let s = Summary::of(&acc);
    let img = crate::plot::cv::render_accuracy(&acc, s.mean, s.std, "accuracy (model.pt)")?;
    crate::plot::save(&img, &dir.join(CV_ACCURACY_PNG))?;
    if classes.len() == 2 {
        let curve = |name: String, probs: &[Vec<f64>], labels: &[usize], bold: bool| {
            let scores: Vec<f64> = probs.iter().map(|p| p[0]).collect();
            crate::plot::roc::Curve {
                name,
                points: crate::metrics::roc_curve(&scores, labels),
                auc: crate::metrics::roc_auc(&scores, labels),
                bold,
            }
        };
        let mut curves: Vec<_> = folds
            .iter()
            .enumerate()
            .map(|(f, (_, p, l))| curve(format!("fold {f}"), p, l, false))
            .collect();
        let probs: Vec<Vec<f64>> = folds.iter().flat_map(|(_, p, _)| p.clone()).collect();
        let labels: Vec<usize> = folds.iter().flat_map(|(_, _, l)| l.clone()).collect();
        curves.push(curve("pooled out-of-fold".into(), &probs, &labels, true));
        let img = crate::plot::roc::render(&curves, &classes[0])?;
        crate::plot::save(&img, &dir.join(CV_ROC_PNG))?;
    }
    Ok(())
}

/// Calibration, operating point and conformal sets fitted on the out-of-fold rows as the
/// plan's `trust` asks.
fn fit_trust(
    dir: &Path,
    plan: &Plan,
    classes: &[String],
    rows: &[OofRow],
) -> Result<crate::trust::Fitted> {
    let oof = crate::trust::Oof {
        classes: classes.to_vec(),
        logits: rows
            .iter()
            .map(|r| r.logits.clone().unwrap_or_default())
            .collect(),
        labels: rows.iter().map(|r| r.truth).collect(),
        folds: rows.iter().map(|r| r.fold).collect(),
        groups: rows
            .iter()
            .map(|r| r.group.clone().unwrap_or_default())
            .collect(),
    };
    let _ = dir;
    let what = format!(
        "the out-of-fold predictions of a {}-fold cv ({} images)",
        plan.folds(),
        rows.len()
    );
    crate::trust::fit(&oof, &plan.config.trust, &what)
}

/// `reliability.png`: the out-of-fold probabilities' reliability, raw and at the temperature.
fn plot_reliability(
    dir: &Path,
    classes: &[String],
    rows: &[OofRow],
    fitted: &crate::trust::Fitted,
) -> Result<()> {
    use crate::trust::calibration::{ece, reliability, scored};
    let labels: Vec<usize> = rows.iter().map(|r| r.truth).collect();
    let logits: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| r.logits.clone().unwrap_or_default())
        .collect();
    let mut series = vec![];
    let mut add = |name: String, t: f64| {
        let (p, hit) = scored(&crate::trust::softmax_rows(&logits, t), &labels);
        series.push(crate::plot::reliability::Series {
            name,
            bins: reliability(&p, &hit),
            ece: ece(&p, &hit),
        });
    };
    add("raw".into(), 1.0);
    if let Some(c) = &fitted.calibration {
        add(
            format!(
                "T = {:.3}{}",
                c.temperature,
                if c.applied {
                    " (shipped)"
                } else {
                    " (not shipped)"
                }
            ),
            c.temperature,
        );
    }
    let what = if classes.len() == 2 {
        format!("P({})", classes[0])
    } else {
        "top-label confidence".to_string()
    };
    let img = crate::plot::reliability::render(&series, &what, rows.len())?;
    crate::plot::save(&img, &dir.join(RELIABILITY_PNG))
}

/// The seconds a run folder's epochs took, from its metrics.csv.
fn train_seconds_of(folder: &Path) -> Result<f64> {
    let path = folder.join("metrics.csv");
    let rows = read_rows(&path, u64::MAX)?;
    let column = EpochRecord::CSV_HEADER
        .split(',')
        .position(|c| c == "seconds")
        .context("metrics.csv has no seconds column")?;
    Ok(rows
        .iter()
        .filter_map(|l| l.split(',').nth(column)?.parse::<f64>().ok())
        .sum())
}

/// The report as printed.
pub fn render(r: &CvReport) -> String {
    let mut out = format!(
        "\ncross-validation {}: {} folds of {} ({} images)\n",
        r.cv, r.folds, r.dataset, r.model.pooled.images
    );
    out += &table(&r.model, "model.pt of each fold (what the folds ship)");
    out += &pooled(&r.model.pooled, &r.classes);
    out += &format!(
        "\nwith test-time augmentation ({}):\n{}",
        r.tta,
        means(&r.model_tta)
    );
    if let Some(b) = &r.best {
        out += &format!(
            "\nbest.pt of each fold (its epoch chosen on these same images, so optimistic):\n{}",
            means(b)
        );
    }
    out += &crate::trust::render::intervals(&r.intervals);
    if let Some(c) = &r.calibration {
        out += &crate::trust::render::calibration(c);
    }
    if let Some(o) = &r.operating_point {
        out += &crate::trust::render::operating_point(o);
    }
    if let Some(c) = &r.conformal {
        out += &crate::trust::render::conformal(c);
    }
    match (&r.trust, &r.trust_note) {
        (None, Some(n)) => out += &format!("\nno calibration, threshold or conformal sets: {n}\n"),
        (Some(_), Some(n)) => out += &format!("\n{n}\n"),
        _ => {}
    }
    let total: f64 = r.train_seconds.iter().sum();
    out += &format!("\ntraining time: {:.0} s over {} folds\n", total, r.folds);
    out
}

/// The per-fold table with mean ± std and the 95 % CI.
fn table(a: &Assessment, title: &str) -> String {
    let cols: Vec<&MeasureSummary> = a.summary.iter().collect();
    let mut out = format!("\n{title}\n{:<10}{:>7}{:>7}", "fold", "epoch", "images");
    for c in &cols {
        out += &format!("{:>14}", c.measure);
    }
    out += "\n";
    for r in &a.per_fold {
        out += &format!("{:<10}{:>7}{:>7}", r.fold, r.epoch, r.images);
        for c in &cols {
            let get = MEASURES
                .iter()
                .find(|(n, _)| *n == c.measure)
                .map(|(_, g)| g);
            let v = get.and_then(|g| g(r)).unwrap_or(f64::NAN);
            out += &format!("{v:>14.4}");
        }
        out += "\n";
    }
    out += &format!("{:<24}", "mean ± std");
    for c in &cols {
        out += &format!(
            "{:>14}",
            format!("{:.3} ± {:.3}", c.summary.mean, c.summary.std)
        );
    }
    out += &format!("\n{:<24}", "95% CI (t)");
    for c in &cols {
        out += &format!(
            "{:>14}",
            format!("{:.3}–{:.3}", c.summary.ci95[0], c.summary.ci95[1])
        );
    }
    out + "\n"
}

/// One line per measure: mean ± std [CI].
fn means(a: &Assessment) -> String {
    a.summary
        .iter()
        .map(|m| {
            format!(
                "  {:<12} {:.3} ± {:.3}  (95% CI {:.3}–{:.3})\n",
                m.measure, m.summary.mean, m.summary.std, m.summary.ci95[0], m.summary.ci95[1]
            )
        })
        .collect()
}

/// The pooled out-of-fold metrics with the confusion matrix.
fn pooled(e: &Evaluation, classes: &[String]) -> String {
    let mut out = format!(
        "\npooled out-of-fold predictions ({} images, each by the fold model that did not train \
         on it): accuracy {:.4}, macro-F1 {:.4}",
        e.images, e.accuracy, e.macro_avg.f1
    );
    if let Some(b) = &e.binary {
        out += &format!(
            ", ROC-AUC {:.4}, sensitivity ({}) {:.4}, specificity {:.4}",
            b.roc_auc, b.positive_class, b.sensitivity, b.specificity
        );
    }
    let width = classes
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    out += &format!("\nconfusion (rows = truth)\n{:<width$}", "");
    for c in classes {
        out += &format!("  {c:>width$}");
    }
    out += "\n";
    for (c, row) in classes.iter().zip(&e.confusion) {
        out += &format!("{c:<width$}");
        for v in row {
            out += &format!("  {v:>width$}");
        }
        out += "\n";
    }
    out
}
