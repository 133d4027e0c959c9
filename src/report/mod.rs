//! `inception report`: one page that shows a model to a person — model card (Mitchell et al.,
//! "Model Cards for Model Reporting", 2019), data card, every figure with its interval, and the
//! photos it gets wrong — gathered from a training run or a cv folder ([`gather`]) and written
//! as one self-contained HTML file ([`html`]) or as a Hugging Face Hub model card ([`markdown`]:
//! README.md with YAML metadata and a `model-index`). What a medical model's report must hold
//! follows TRIPOD+AI (Collins et al. 2024) and CLAIM (Mongan et al. 2020).

pub mod gallery;
pub mod html;
pub mod markdown;
pub mod svg;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::checkpoint::record::EpochRecord;
use crate::checkpoint::{self, Meta};
use crate::config::{Card, TrainConfig};
use crate::data::card::DataCard;
use crate::data::dataset::Dataset;
use crate::data::split::GroupBy;
use crate::device;
use crate::evaluate::{self, EvalReport};
use crate::metrics::Evaluation;
use crate::model::summary::Summary;
use crate::model::Model;
use crate::precision::{Compute, Precision};
use crate::runs::cv::{self, CvReport, Plan, CV_JSON, OOF, PLAN};
use crate::runs::oof;
use crate::runs::run::MODEL;
use crate::runs::run::{CONFIG_JSON, LAST, METRICS_CSV};
use crate::train::environment::RunEnvironment;
use crate::trust::calibration::Measures;
use crate::trust::conformal::{Coverage, ScoreKind};
use crate::trust::intervals::ProportionMethod;
use crate::trust::intervals::{BootstrapInterval, Estimate};
use crate::trust::{Intervals, MethodEstimate};
use gallery::{Prediction, Tile};

/// What the folder given to `report` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A cross-validation folder (plan.json, cv.json, fold-N/).
    Cv,
    /// A training run (config.json, metrics.csv, model.pt).
    Run,
}

/// How to gather a report.
#[derive(Debug, Clone)]
pub struct Options {
    pub dir: PathBuf,
    /// An external test set measured beside the cv's figures.
    pub data: Option<PathBuf>,
    /// Photos per class and kind in the gallery.
    pub per_kind: usize,
    /// The card's words given at report time (`--card`), instead of the config's.
    pub card: Option<Card>,
    /// The device and precision of the network's passes (Grad-CAM always in fp32).
    pub compute: Compute,
    /// The flags `compute` was made from, for `eval`.
    pub device: crate::device::DeviceChoice,
    pub precision: Precision,
}

/// An evaluation on a folder of images (`eval`'s report) with its predictions.
#[derive(Debug, Clone)]
pub struct Measured {
    /// What was measured: `the validation images of …`, `external folder …`.
    pub what: String,
    pub folder: String,
    /// What `eval --json` prints of it.
    pub eval: EvalReport,
    pub predictions: Vec<Prediction>,
    /// A warning about the set (the training data itself).
    pub note: Option<String>,
}

/// Training curves of one run (a cv's fold, or the run).
#[derive(Debug, Clone)]
pub struct Curves {
    pub name: String,
    pub rows: Vec<EpochRecord>,
}

/// Everything the page shows.
#[derive(Debug)]
pub struct Report {
    pub source: Source,
    pub dir: PathBuf,
    pub classes: Vec<String>,
    pub config: TrainConfig,
    pub dataset: String,
    /// The shipped model's record (a cv: fold 0's model.pt).
    pub meta: Meta,
    /// The checkpoints the report's model is made of (a cv: one per fold).
    pub models: Vec<PathBuf>,
    pub summary: Option<Summary>,
    pub environment: Option<RunEnvironment>,
    pub data_card: Option<DataCard>,
    /// Where the data card came from, or why there is none.
    pub data_card_note: String,
    /// A cv: images of each class in each fold's held-out part.
    pub fold_counts: Vec<Vec<usize>>,
    /// A cv's cv.json.
    pub cv: Option<CvReport>,
    /// A run's measures on its own validation images.
    pub validation: Option<Measured>,
    /// What cannot be shown, and why.
    pub missing: Vec<String>,
    pub external: Option<Measured>,
    /// Held-out predictions (a cv: out of fold; a run: its validation images).
    pub predictions: Vec<Prediction>,
    pub gallery: Vec<Tile>,
    pub curves: Vec<Curves>,
    pub train_seconds: f64,
    /// Limits the tool states from the data and the figures.
    pub limits: Vec<String>,
    pub card: Card,
}

/// Which kind of folder `dir` is; an error naming what it lacks when it is neither, or when
/// it is unfinished.
pub fn source_of(dir: &Path) -> Result<Source> {
    if !dir.is_dir() {
        bail!("{}: no such folder", dir.display());
    }
    if dir.join(PLAN).is_file() {
        let plan = Plan::read(dir)?;
        let missing = cv::unfinished(dir, &plan);
        if !missing.is_empty() {
            bail!(
                "{}: an unfinished cv ({} of {} folds not finished); finish it with `inception \
                 cv --resume {}`",
                dir.display(),
                missing.len(),
                plan.folds(),
                dir.display()
            );
        }
        if !dir.join(CV_JSON).is_file() {
            bail!(
                "{}: a cv whose summary is not written (no cv.json); `inception cv --collect {}` \
                 writes it",
                dir.display(),
                dir.display()
            );
        }
        return Ok(Source::Cv);
    }
    if dir.join(CONFIG_JSON).is_file() && dir.join(METRICS_CSV).is_file() {
        if !dir.join(MODEL).is_file() {
            bail!(
                "{}: an unfinished training run (no {MODEL}); resume it with `inception train \
                 --resume {}`",
                dir.display(),
                dir.join(LAST).display()
            );
        }
        return Ok(Source::Run);
    }
    bail!(
        "{}: neither a training run (config.json, metrics.csv, {MODEL}) nor a cross-validation \
         folder (plan.json, cv.json)",
        dir.display()
    )
}

fn read_curves(dir: &Path, name: String) -> Result<Curves> {
    let path = dir.join(METRICS_CSV);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let rows = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(EpochRecord::from_csv_row)
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(Curves { name, rows })
}

/// `eval` of `checkpoint` (a file, or a cv folder as an ensemble) on `data` (or the run's
/// validation images), with its predictions.
fn measure(
    checkpoint: &Path,
    data: Option<&Path>,
    classes: &[String],
    opts: &Options,
    clopper_pearson: bool,
) -> Result<(EvalReport, Vec<Prediction>)> {
    let options = evaluate::Options {
        checkpoints: vec![checkpoint.to_path_buf()],
        tta: false,
        data: data.map(Path::to_path_buf),
        split: evaluate::Split::Val,
        no_calibration: false,
        method: if clopper_pearson {
            ProportionMethod::ClopperPearson
        } else {
            ProportionMethod::Wilson
        },
        prevalence: None,
        skip_bad: false,
        batch_size: 32,
        compute: opts.compute,
    };
    let m = evaluate::measure(&options, || device::announce(opts.device, &opts.compute))?;
    if m.classes != classes {
        bail!(
            "{}: its classes {:?} are not the report's {:?}",
            checkpoint.display(),
            m.classes,
            classes
        );
    }
    let model = match checkpoint.is_dir() {
        true => checkpoint.join(MODEL),
        false => checkpoint.to_path_buf(),
    };
    let preds = m
        .paths
        .iter()
        .zip(&m.probs)
        .zip(&m.labels)
        .map(|((file, probs), &truth)| Prediction {
            path: file
                .strip_prefix(&m.root)
                .unwrap_or(file)
                .display()
                .to_string(),
            file: file.clone(),
            truth,
            probs: probs.clone(),
            model: model.clone(),
        })
        .collect();
    Ok((m.report, preds))
}

/// The data card the run recorded, or one made now from its dataset (runs from before
/// data.json), or none when the dataset is gone.
fn data_card(run: &Path, cfg: &TrainConfig, dataset: &str) -> Result<(Option<DataCard>, String)> {
    if let Some(card) = DataCard::read(run)? {
        return Ok((Some(card), "recorded by training (data.json)".into()));
    }
    let root = Path::new(dataset);
    if !root.is_dir() {
        return Ok((
            None,
            format!(
                "not recorded (the run is older than data.json) and its dataset {dataset} is not \
                 here to scan"
            ),
        ));
    }
    let (ds, prepared) = Dataset::for_training(root, cfg, cfg.image_size as u32, 0)
        .with_context(|| format!("scanning the run's dataset {dataset} for its data card"))?;
    Ok((
        Some(DataCard::of(&ds, &prepared)),
        "scanned by the report from the dataset folder (the run is older than data.json)".into(),
    ))
}

/// Gathers everything the page shows from the folder `opts.dir`; nothing is written.
pub fn gather(opts: &Options) -> Result<Report> {
    let dir = &opts.dir;
    let source = source_of(dir)?;
    let mut missing = vec![];
    let (config, dataset, classes, run0, cv_json, models) = match source {
        Source::Cv => {
            let plan = Plan::read(dir)?;
            let report = CvReport::read(dir)?;
            let models: Vec<PathBuf> = (0..plan.folds())
                .map(|f| cv::fold_dir(dir, f).join(MODEL))
                .collect();
            (
                plan.fold_config(0),
                plan.dataset.clone(),
                report.classes.clone(),
                cv::fold_dir(dir, 0),
                Some(report),
                models,
            )
        }
        Source::Run => {
            let meta = checkpoint::read_meta(&dir.join(MODEL))?;
            let record = meta
                .training
                .as_ref()
                .with_context(|| format!("{}: records no training", dir.join(MODEL).display()))?;
            (
                record.config.clone(),
                record.dataset.clone(),
                meta.classes.clone(),
                dir.clone(),
                None,
                vec![dir.join(MODEL)],
            )
        }
    };
    let meta = checkpoint::read_meta(&models[0])?;
    if meta.classes != classes {
        bail!(
            "{}: classes {:?}, and {} says {:?}",
            models[0].display(),
            meta.classes,
            dir.display(),
            classes
        );
    }
    let summary = Model::new(meta.net_config(), tch::Device::Cpu)
        .and_then(|m| m.summary(meta.image_size))
        .ok();
    let environment = RunEnvironment::read(&run0)?;
    if environment.is_none() {
        missing.push(
            "device, precision, git commit, libtorch and the initial weights' hash: not \
             recorded (the run is older than environment.json)"
                .into(),
        );
    }
    let (data_card, data_card_note) = data_card(&run0, &config, &dataset)?;
    let clopper = matches!(
        config.trust.intervals,
        crate::trust::intervals::ProportionMethod::ClopperPearson
    );

    // The external set is measured first: a folder whose classes differ stops the report
    // before anything else is done.
    let external = match &opts.data {
        Some(data) => {
            let model = match source {
                Source::Cv => dir.clone(),
                Source::Run => models[0].clone(),
            };
            let (eval, predictions) = measure(&model, Some(data), &classes, opts, clopper)
                .with_context(|| format!("--data {}", data.display()))?;
            let same = |a: &Path, b: &Path| matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y);
            let note = same(data, Path::new(&dataset)).then(|| {
                "this is the folder the model trained on: its figures are not a test of the \
                 model, they measure how well it learnt its own training images"
                    .to_string()
            });
            Some(Measured {
                what: format!("external folder {}", data.display()),
                folder: data.display().to_string(),
                eval,
                predictions,
                note,
            })
        }
        None => None,
    };

    let mut curves = vec![];
    let mut fold_counts = vec![];
    let (validation, predictions, train_seconds) = match source {
        Source::Cv => {
            let v = cv_json.as_ref().context("cv.json")?;
            let folds = models.len();
            for f in 0..folds {
                curves.push(read_curves(&cv::fold_dir(dir, f), format!("fold {f}"))?);
            }
            let rows = oof::read(&dir.join(OOF), &classes, folds)?;
            fold_counts = vec![vec![0; classes.len()]; folds];
            let root = PathBuf::from(&dataset);
            let predictions = rows
                .into_iter()
                .map(|r| {
                    fold_counts[r.fold][r.truth] += 1;
                    Prediction {
                        file: root.join(&r.path),
                        path: r.path,
                        truth: r.truth,
                        probs: r.probs,
                        model: models[r.fold].clone(),
                    }
                })
                .collect();
            let seconds = v.train_seconds.iter().sum();
            (None, predictions, seconds)
        }
        Source::Run => {
            let c = read_curves(dir, "run".into())?;
            let seconds = c.rows.iter().map(|r| r.seconds).sum();
            curves.push(c);
            if config.validates() {
                let (eval, predictions) = measure(&models[0], None, &classes, opts, clopper)
                    .with_context(|| {
                        format!("measuring {} on its validation images", models[0].display())
                    })?;
                let m = Measured {
                    what: format!("the validation images of {}", dir.display()),
                    folder: dataset.clone(),
                    eval,
                    predictions: predictions.clone(),
                    note: None,
                };
                missing.push(
                    "cross-validation: this is one training run, measured on its own validation \
                     images (one split of the data); `inception cv` measures the recipe on every \
                     image, with intervals over folds, and fits calibration on it"
                        .into(),
                );
                if meta.trust.is_none() {
                    missing.push(
                        "a fitted calibration, screening threshold and conformal sets: this model \
                         carries none (a cv fits them on its out-of-fold predictions; `train \
                         --calibration-from CV_DIR` ships them), so its probabilities are raw and \
                         its decisions are at 0.5"
                            .into(),
                    );
                }
                (Some(m), predictions, seconds)
            } else {
                missing.push(format!(
                    "measures, curves and the gallery: this run validated on no images \
                     (val_fraction 0: every image trained){}",
                    match &meta.trust {
                        Some(t) => format!(
                            "; its calibration was fitted on {}: `inception report` on that cv \
                             folder shows its figures",
                            t.fitted_on
                        ),
                        None => String::new(),
                    }
                ));
                (None, vec![], seconds)
            }
        }
    };

    let chosen = gallery::select(&predictions, classes.len(), opts.per_kind);
    let gallery = if chosen.iter().any(|(_, _, l)| !l.is_empty()) {
        let compute = Compute {
            precision: Precision::Fp32,
            ..opts.compute
        };
        let (tiles, unreadable) = gallery::tiles(&predictions, &chosen, compute)?;
        if let Some(first) = unreadable.first() {
            missing.push(format!(
                "{} of the gallery's photos could not be read (has the dataset moved since \
                 training?), e.g. {first}",
                unreadable.len()
            ));
        }
        tiles
    } else {
        vec![]
    };
    let card = opts.card.clone().unwrap_or_else(|| config.card.clone());
    let mut report = Report {
        source,
        dir: dir.clone(),
        classes,
        config,
        dataset,
        meta,
        models,
        summary,
        environment,
        data_card,
        data_card_note,
        fold_counts,
        cv: cv_json,
        validation,
        missing,
        external,
        predictions,
        gallery,
        curves,
        train_seconds,
        limits: vec![],
        card,
    };
    report.limits = limits(&report);
    Ok(report)
}

/// The figures a page's headline reads: accuracy with its interval, from the cv's pooled
/// out-of-fold predictions or a run's validation images.
pub fn headline(r: &Report) -> Option<(&MethodEstimate, usize)> {
    match (&r.cv, &r.validation) {
        (Some(cv), _) => Some((&cv.intervals.accuracy, cv.model.pooled.images)),
        (None, Some(m)) => Some((&m.eval.intervals.accuracy, m.eval.evaluation.images)),
        _ => None,
    }
}

/// One measured set as the page shows it: a cv's pooled out-of-fold figures, or `eval`'s of a
/// run's validation images or of an external folder (the two hold the same figures in types of
/// their own).
pub struct Figures<'a> {
    pub pooled: &'a Evaluation,
    pub intervals: &'a Intervals,
    pub calibration: Option<Calibration<'a>>,
    pub operating_point: Option<Operating<'a>>,
    pub conformal: Option<Sets<'a>>,
}

/// A fitted temperature and the calibration measures before and after it.
pub struct Calibration<'a> {
    pub temperature: f64,
    pub applied: bool,
    pub before: &'a Measures,
    pub after: &'a Measures,
}

/// Two classes: the decision threshold and the figures at it.
pub struct Operating<'a> {
    pub positive_class: &'a str,
    /// The sensitivity the threshold was chosen for (`None`: the default 0.5).
    pub target_sensitivity: Option<f64>,
    pub threshold: f64,
    pub sensitivity: &'a Estimate,
    pub specificity: &'a Estimate,
    pub ppv: &'a Estimate,
    pub npv: &'a Estimate,
}

/// Conformal prediction sets: their promise and what they did.
pub struct Sets<'a> {
    pub alpha: f64,
    pub score: ScoreKind,
    pub class_conditional: bool,
    pub coverage: f64,
    pub mean_set_size: f64,
    pub detail: &'a Coverage,
    /// A cv's: thresholds from the other folds, sets on each fold's images.
    pub cross_fitted: Option<&'a Coverage>,
}

impl<'a> Figures<'a> {
    /// A cv's pooled out-of-fold figures.
    pub fn of_cv(cv: &'a CvReport) -> Figures<'a> {
        Figures {
            pooled: &cv.model.pooled,
            intervals: &cv.intervals,
            calibration: cv.calibration.as_ref().map(|c| Calibration {
                temperature: c.temperature,
                applied: c.applied,
                before: &c.before,
                after: &c.after,
            }),
            operating_point: cv.operating_point.as_ref().map(|o| Operating {
                positive_class: &o.positive_class,
                target_sensitivity: Some(o.target_sensitivity),
                threshold: o.threshold,
                sensitivity: &o.sensitivity,
                specificity: &o.specificity,
                ppv: &o.ppv,
                npv: &o.npv,
            }),
            conformal: cv.conformal.as_ref().map(|c| Sets {
                alpha: c.alpha,
                score: c.score,
                class_conditional: c.class_conditional,
                coverage: c.coverage,
                mean_set_size: c.mean_set_size,
                detail: &c.detail,
                cross_fitted: Some(&c.cross_fitted),
            }),
        }
    }

    /// `eval`'s figures.
    pub fn of_eval(e: &'a EvalReport) -> Figures<'a> {
        Figures {
            pooled: &e.evaluation,
            intervals: &e.intervals,
            calibration: e.calibration.as_ref().map(|c| Calibration {
                temperature: c.temperature,
                applied: c.applied,
                before: &c.before,
                after: &c.after,
            }),
            operating_point: e.operating_point.as_ref().map(|o| Operating {
                positive_class: &o.positive_class,
                target_sensitivity: o.target_sensitivity,
                threshold: o.threshold,
                sensitivity: &o.sensitivity,
                specificity: &o.specificity,
                ppv: &o.ppv,
                npv: &o.npv,
            }),
            conformal: e.conformal.as_ref().map(|c| Sets {
                alpha: c.alpha,
                score: c.score,
                class_conditional: c.class_conditional,
                coverage: c.coverage,
                mean_set_size: c.mean_set_size,
                detail: &c.detail,
                cross_fitted: None,
            }),
        }
    }

    /// The pooled figures with their 95 % intervals, in the page's order: (name, figure).
    pub fn intervals(&self) -> Vec<(&'static str, Interval)> {
        let iv = self.intervals;
        [
            ("accuracy", Some(Interval::method(&iv.accuracy))),
            (
                "balanced_accuracy",
                iv.balanced_accuracy.as_ref().map(Interval::bootstrap),
            ),
            ("macro_f1", Some(Interval::bootstrap(&iv.macro_f1))),
            ("roc_auc", iv.roc_auc.as_ref().map(Interval::method)),
            ("sensitivity", iv.sensitivity.as_ref().map(Interval::method)),
            ("specificity", iv.specificity.as_ref().map(Interval::method)),
        ]
        .into_iter()
        .filter_map(|(name, i)| Some((name, i?)))
        .collect()
    }
}

/// A figure with its interval and how the interval was made.
pub struct Interval {
    pub value: f64,
    pub low: f64,
    pub high: f64,
    pub method: String,
}

impl Interval {
    fn method(e: &MethodEstimate) -> Interval {
        Interval {
            value: e.value,
            low: e.low,
            high: e.high,
            method: e.method.clone(),
        }
    }

    fn bootstrap(b: &BootstrapInterval) -> Interval {
        Interval {
            value: b.value,
            low: b.percentile[0],
            high: b.percentile[1],
            method: format!(
                "bootstrap over {} patients, {} resamples",
                b.groups, b.resamples
            ),
        }
    }
}

/// How the images were split, in words: a cv's folds, or the run's split as its data card
/// recorded it.
pub fn split_line(r: &Report) -> Option<String> {
    match r.source {
        Source::Cv if r.config.group_by == GroupBy::None => Some(format!(
            "{} folds of single images (group_by none), seed {}: every image held out once",
            r.models.len(),
            r.config.seed
        )),
        Source::Cv => Some(format!(
            "{} folds by group (group_by {}: the scan below says what it found), seed {}: every \
             image held out once, by a model that never saw its group",
            r.models.len(),
            r.config.group_by,
            r.config.seed
        )),
        Source::Run => r.data_card.as_ref().map(|d| d.split.clone()),
    }
}

/// The training time in words: seconds, and over how many folds.
pub fn training_time(r: &Report) -> String {
    match r.source {
        Source::Cv => format!("{:.1} s over {} folds", r.train_seconds, r.models.len()),
        Source::Run => format!("{:.1} s", r.train_seconds),
    }
}

/// The limits the tool states itself, from the data and the figures.
/// The largest class and its share of the images: the accuracy of always answering it (from
/// the data card, else from the held-out predictions).
pub fn majority(r: &Report) -> Option<(String, f64)> {
    let counts = class_counts(r);
    let n: usize = counts.iter().map(|c| c.1).sum();
    let (name, most) = counts.into_iter().max_by_key(|c| c.1)?;
    (n > 0).then(|| (name, most as f64 / n as f64))
}

/// Images per class: the data card's, else the held-out predictions'.
fn class_counts(r: &Report) -> Vec<(String, usize)> {
    match &r.data_card {
        Some(d) => d
            .classes
            .iter()
            .map(|c| (c.class.clone(), c.images))
            .collect(),
        None => r
            .classes
            .iter()
            .enumerate()
            .map(|(c, name)| {
                (
                    name.clone(),
                    r.predictions.iter().filter(|p| p.truth == c).count(),
                )
            })
            .collect(),
    }
}

fn limits(r: &Report) -> Vec<String> {
    let mut out = vec![];
    let counts = class_counts(r);
    let n: usize = counts.iter().map(|c| c.1).sum();
    if let Some((big, majority)) = majority(r) {
        let groups = r
            .data_card
            .as_ref()
            .and_then(|d| d.groups)
            .map(|g| format!(" from {g} patients (groups)"))
            .unwrap_or_default();
        let mut line = format!("{n} images{groups}");
        if let Some((acc, images)) = headline(r) {
            let (lo, hi) = (acc.low, acc.high);
            if lo.is_finite() && hi.is_finite() {
                line += &format!(
                    "; the 95 % interval on accuracy ({images} held-out images) is {:.3}–{:.3}, \
                     ±{:.1} points",
                    lo,
                    hi,
                    (hi - lo) * 50.0
                );
                if lo <= majority {
                    out.push(format!(
                        "The accuracy's interval reaches down to the majority-class rate \
                         {majority:.3}: on this evidence the model may be no better than always \
                         answering {big:?}."
                    ));
                }
            }
        }
        out.insert(0, line + ".");
        out.push(format!(
            "Majority-class accuracy is {majority:.3} (always {big:?}): accuracy is to be read \
             against it."
        ));
        if let Some((small, least)) = counts.iter().min_by_key(|c| c.1) {
            if *least < 100 {
                out.push(format!(
                    "The smallest class, {small:?}, has {least} images: its recall and precision \
                     are measured on few photos (see their intervals)."
                ));
            }
        }
    }
    if r.external.is_none() {
        out.push(
            "Every figure comes from one dataset (held-out images of the same source): no \
             external test set was measured, so how it does on photos from other clinics, \
             cameras or skin types is unknown (`inception report DIR --data TEST_DIR` measures \
             one)."
                .into(),
        );
    }
    let figures =
        r.cv.as_ref()
            .map(Figures::of_cv)
            .or_else(|| r.validation.as_ref().map(|m| Figures::of_eval(&m.eval)));
    if let Some(op) = figures.and_then(|f| f.operating_point) {
        let spec = op.specificity.value;
        if let (Some(target), true) = (
            op.target_sensitivity,
            spec.is_finite() && op.threshold.is_finite(),
        ) {
            if spec < 0.5 {
                out.push(format!(
                    "At the screening threshold {:.3} (target sensitivity {}), specificity is \
                     {spec:.3}: most photos of other conditions are flagged too.",
                    op.threshold,
                    serde_json::Value::from(target)
                ));
            }
        }
    }
    out.push(
        "It classifies photos into the classes it was trained on only: a photo of anything else \
         still gets one of them."
            .into(),
    );
    out
}
