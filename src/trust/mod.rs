//! Trust in one answer: calibrated probabilities, a screening threshold, conformal prediction
//! sets and an interval on every figure — fitted on the out-of-fold predictions `cv` writes,
//! the only predictions of a model on images it did not train on that a small dataset has.
//!
//! [`fit`] turns a cv's out-of-fold logits into a [`TrustReport`] (what `cv.json` shows) and a
//! [`TrustRecord`] (what a shipped model carries: the temperature if the cross-fitted check
//! says it helps, the threshold, the conformal thresholds). What the record is exact for: the
//! fold models, whose predictions it was fitted on; for a model retrained on every image it is
//! an estimate (that model is not the one that made the out-of-fold predictions).

pub mod calibration;
pub mod conformal;
pub mod intervals;
pub mod operating;
pub mod render;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use calibration::Measures;
use conformal::{Conformal, Coverage, ScoreKind};
use intervals::{BootstrapInterval, Estimate, ProportionMethod};
use operating::OperatingPoint;

/// The choices of calibration, operating point and conformal sets (`trust` in a config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// Fit calibration, threshold and sets at all: off, a cv only measures (data with fewer
    /// than [`conformal::MIN_PER_CLASS`] images of a class needs it off).
    pub fit: bool,
    /// Fit a temperature on the out-of-fold logits (shipped only if it helps cross-fitted).
    pub calibrate: bool,
    /// Two classes: the sensitivity the screening threshold must reach (positive: the first).
    pub target_sensitivity: f64,
    /// The prevalence PPV and NPV are also given at (`None`: the data's).
    pub prevalence: Option<f64>,
    /// The conformal miscoverage: sets hold the true class with probability ≥ 1 − α.
    pub alpha: f64,
    /// One conformal threshold per class (Mondrian) instead of one for all.
    pub class_conditional: bool,
    /// The conformal score: `lac`, or `aps` (more than two classes only).
    pub score: ScoreKind,
    /// Intervals of proportions: `wilson` or `clopper-pearson`.
    pub intervals: ProportionMethod,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            fit: true,
            calibrate: true,
            target_sensitivity: operating::DEFAULT_SENSITIVITY,
            prevalence: None,
            alpha: 0.1,
            class_conditional: true,
            score: ScoreKind::Lac,
            intervals: ProportionMethod::Wilson,
        }
    }
}

impl TrustConfig {
    /// Refuses a dataset too small for what is to be fitted, before anything is trained:
    /// every image is out of fold once, so a class with fewer than
    /// [`conformal::MIN_PER_CLASS`] images has too few out-of-fold predictions to fit a
    /// calibration or to promise coverage. `counts`: (class, images) of the dataset `root`.
    pub fn check_counts(&self, root: &std::path::Path, counts: &[(String, usize)]) -> Result<()> {
        if !self.fit {
            return Ok(());
        }
        if counts.len() < 2 {
            bail!(
                "{}: one class only, nothing to calibrate or screen for (--no-trust \
                 cross-validates without it)",
                root.display()
            );
        }
        for (name, n) in counts {
            if *n < conformal::MIN_PER_CLASS {
                bail!(
                    "{}: class {name:?} has {n} images, fewer than the {} out-of-fold images \
                     needed to fit a calibration, a screening threshold and conformal sets \
                     (add images, or pass --no-trust to cross-validate without them)",
                    root.display(),
                    conformal::MIN_PER_CLASS
                );
            }
        }
        Ok(())
    }

    /// Refuses values outside their range, naming them.
    pub fn validate(&self) -> Result<()> {
        operating::check_fraction(self.target_sensitivity, "target_sensitivity")?;
        operating::check_fraction(self.alpha, "alpha")?;
        if let Some(p) = self.prevalence {
            operating::check_fraction(p, "prevalence")?;
        }
        Ok(())
    }
}

/// The temperature a model carries.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Temperature {
    pub temperature: f64,
    /// Whether predictions use it (the cross-fitted check said it lowers the NLL).
    pub applied: bool,
}

/// The screening threshold a two-class model carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    pub positive_class: String,
    /// Positive when the (calibrated) probability of `positive_class` is ≥ this.
    pub threshold: f64,
    pub target_sensitivity: f64,
}

/// What a shipped model carries (in its checkpoint, or beside a cv folder in cv.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustRecord {
    /// What it was fitted on: the cv folder and its images.
    pub fitted_on: String,
    /// The classes, in the network's order, it was fitted for.
    pub classes: Vec<String>,
    pub calibration: Option<Temperature>,
    pub threshold: Option<Threshold>,
    pub conformal: Option<Conformal>,
}

impl TrustRecord {
    /// The temperature predictions use (1 when none is applied).
    pub fn temperature(&self) -> f64 {
        match self.calibration {
            Some(Temperature {
                temperature,
                applied: true,
            }) => temperature,
            _ => 1.0,
        }
    }
}

/// One fold of the cross-fitted check: T fitted on the other folds, scored on this one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossFold {
    pub fold: usize,
    pub images: usize,
    /// Fitted on the other folds' out-of-fold predictions.
    pub temperature: f64,
    /// Fitted on this fold's own (for how much T varies).
    pub own_temperature: Option<f64>,
    pub nll_before: f64,
    pub nll_after: f64,
}

/// `cv.json`'s `calibration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationReport {
    /// `temperature`.
    pub method: String,
    /// Fitted on every out-of-fold prediction.
    pub temperature: f64,
    /// Whether the shipped model uses it: the cross-fitted NLL is lower with it.
    pub applied: bool,
    pub fitted_on: String,
    /// The measures of the raw out-of-fold probabilities.
    pub before: Measures,
    /// Of the out-of-fold probabilities at the temperature (fitted on the same images, so
    /// optimistic: the cross-fitted NLL is the honest one).
    pub after: Measures,
    pub cross_fitted_nll_before: f64,
    pub cross_fitted_nll_after: f64,
    pub folds: Vec<CrossFold>,
}

/// `cv.json`'s `conformal`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConformalReport {
    pub alpha: f64,
    pub score: ScoreKind,
    pub class_conditional: bool,
    pub thresholds: Vec<f64>,
    /// Empirical coverage of the split-conformal sets on the images they were fitted on (by
    /// construction ≥ 1 − α there) and set sizes.
    pub coverage: f64,
    pub mean_set_size: f64,
    pub detail: Coverage,
    /// Cross-fitted: thresholds fitted on the other folds, sets on this fold's images (an
    /// honest estimate of coverage on new images).
    pub cross_fitted: Coverage,
}

/// Intervals of the pooled figures: `intervals` in `cv.json` and `eval --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intervals {
    pub level: f64,
    pub accuracy: MethodEstimate,
    pub balanced_accuracy: Option<BootstrapInterval>,
    pub macro_f1: BootstrapInterval,
    pub accuracy_bootstrap: BootstrapInterval,
    /// Two classes: DeLong.
    pub roc_auc: Option<MethodEstimate>,
    pub roc_auc_bootstrap: Option<BootstrapInterval>,
    pub sensitivity: Option<MethodEstimate>,
    pub specificity: Option<MethodEstimate>,
    /// The number of groups (patients) the bootstraps resample.
    pub groups: usize,
}

/// An estimate with the method behind its interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodEstimate {
    pub value: f64,
    pub low: f64,
    pub high: f64,
    pub method: String,
}

impl MethodEstimate {
    fn of(e: Estimate, method: &str) -> MethodEstimate {
        MethodEstimate {
            value: e.value,
            low: e.low,
            high: e.high,
            method: method.into(),
        }
    }
}

/// Macro-F1 and balanced accuracy of a (weighted) confusion matrix `confusion[truth · k +
/// prediction]`, as
/// [`crate::metrics::evaluate`] computes them: precision or recall 0 when undefined, F1 0 when
/// both are; balanced accuracy over the classes present.
pub fn macro_f1_and_balanced(confusion: &[f64], k: usize) -> (f64, f64) {
    let (mut f1, mut recall_sum, mut present) = (0.0, 0.0, 0);
    for c in 0..k {
        let tp = confusion[c * k + c];
        let support: f64 = (0..k).map(|p| confusion[c * k + p]).sum();
        let predicted: f64 = (0..k).map(|t| confusion[t * k + c]).sum();
        let precision = if predicted > 0.0 { tp / predicted } else { 0.0 };
        let recall = if support > 0.0 { tp / support } else { 0.0 };
        if precision + recall > 0.0 {
            f1 += 2.0 * precision * recall / (precision + recall);
        }
        if support > 0.0 {
            recall_sum += recall;
            present += 1;
        }
    }
    (
        f1 / k as f64,
        if present > 0 {
            recall_sum / present as f64
        } else {
            0.0
        },
    )
}

/// A statistic behind a reference, for [`intervals::cluster_bootstrap`].
struct Dyn<'a>(&'a dyn intervals::Statistic);

impl intervals::Statistic for Dyn<'_> {
    fn weighted(&self, w: &[f64]) -> f64 {
        self.0.weighted(w)
    }

    fn without(&self, left_out: &[usize], n: usize) -> f64 {
        self.0.without(left_out, n)
    }

    fn resampled(&self, members: &[Vec<usize>], drawn: &[usize], n: usize) -> f64 {
        self.0.resampled(members, drawn, n)
    }
}

/// The pooled intervals of probabilities `probs` for `labels`, the images' patients `groups`.
pub fn intervals(
    probs: &[Vec<f64>],
    labels: &[usize],
    classes: usize,
    groups: &intervals::Groups,
    method: ProportionMethod,
) -> Intervals {
    let members = &groups.members;
    use crate::metrics::argmax;
    let level = intervals::LEVEL;
    let k = classes;
    let preds: Vec<usize> = probs.iter().map(|p| argmax(p)).collect();
    let right = preds.iter().zip(labels).filter(|(p, y)| p == y).count();
    let boot = |stat: &dyn intervals::Statistic| groups.bootstrap(Dyn(stat));
    let hits: Vec<Vec<(usize, f64)>> = (0..labels.len())
        .map(|i| vec![(0, (preds[i] == labels[i]) as u8 as f64), (1, 1.0)])
        .collect();
    let accuracy_of = |s: &[f64]| s[0] / s[1];
    let accuracy_bootstrap = boot(&intervals::SumStatistic::new(
        members,
        2,
        hits,
        &accuracy_of,
    ));
    let cells: Vec<Vec<(usize, f64)>> = (0..labels.len())
        .map(|i| vec![(labels[i] * k + preds[i], 1.0)])
        .collect();
    let f1_of = |c: &[f64]| macro_f1_and_balanced(c, k).0;
    let balanced_of = |c: &[f64]| macro_f1_and_balanced(c, k).1;
    let macro_f1 = boot(&intervals::SumStatistic::new(
        members,
        k * k,
        cells.clone(),
        &f1_of,
    ));
    let balanced_accuracy = Some(boot(&intervals::SumStatistic::new(
        members,
        k * k,
        cells,
        &balanced_of,
    )));
    let (mut roc_auc, mut roc_auc_bootstrap, mut sensitivity, mut specificity) =
        (None, None, None, None);
    if classes == 2 {
        let scores: Vec<f64> = probs.iter().map(|p| p[0]).collect();
        let positive: Vec<bool> = labels.iter().map(|&y| y == 0).collect();
        roc_auc = intervals::auc_interval(&scores, &positive, level)
            .ok()
            .map(|e| MethodEstimate::of(e, "delong"));
        roc_auc_bootstrap = Some(boot(&intervals::AucStatistic::new(&scores, &positive)));
        let count = |c: usize| {
            let n = labels.iter().filter(|&&y| y == c).count();
            let k = (0..labels.len())
                .filter(|&i| labels[i] == c && preds[i] == c)
                .count();
            MethodEstimate::of(method.estimate(k, n, level), method.name())
        };
        sensitivity = Some(count(0));
        specificity = Some(count(1));
    }
    Intervals {
        level,
        accuracy: MethodEstimate::of(method.estimate(right, labels.len(), level), method.name()),
        balanced_accuracy,
        macro_f1,
        accuracy_bootstrap,
        roc_auc,
        roc_auc_bootstrap,
        sensitivity,
        specificity,
        groups: members.len(),
    }
}

/// Out-of-fold predictions: each image's logits, class, fold and group (patient) key.
#[derive(Debug, Clone, PartialEq)]
pub struct Oof {
    pub classes: Vec<String>,
    pub logits: Vec<Vec<f64>>,
    pub labels: Vec<usize>,
    pub folds: Vec<usize>,
    pub groups: Vec<String>,
}

/// What [`fit`] gives: the report for `cv.json` and the record to ship.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    /// Why no temperature was fitted, if none was.
    pub note: Option<String>,
    pub calibration: Option<CalibrationReport>,
    pub operating_point: Option<OperatingPoint>,
    pub conformal: ConformalReport,
    pub record: TrustRecord,
}

/// softmax(z / t) of every row.
pub fn softmax_rows(logits: &[Vec<f64>], t: f64) -> Vec<Vec<f64>> {
    logits.iter().map(|z| calibration::softmax(z, t)).collect()
}

/// Fits calibration, operating point and conformal sets on out-of-fold predictions `oof`,
/// as `cfg` asks; `fitted_on` names them. Refused, with nothing written, when a class has
/// fewer than [`conformal::MIN_PER_CLASS`] images or only one class is there.
pub fn fit(oof: &Oof, cfg: &TrustConfig, fitted_on: &str) -> Result<Fitted> {
    cfg.validate()?;
    if !cfg.fit {
        bail!("not fitted: the cv was asked to fit nothing (--no-trust)");
    }
    let k = oof.classes.len();
    for (c, name) in oof.classes.iter().enumerate() {
        let n = oof.labels.iter().filter(|&&y| y == c).count();
        if n < conformal::MIN_PER_CLASS {
            bail!(
                "class {name:?} has {n} out-of-fold images: fewer than the {} needed to fit a \
                 calibration or promise coverage",
                conformal::MIN_PER_CLASS
            );
        }
    }
    if k < 2 {
        bail!("one class only: nothing to calibrate");
    }
    let groups = intervals::Groups::of(&oof.groups);
    let (calibration, note) = match cfg.calibrate {
        true => match calibrate(oof, &groups, fitted_on) {
            Ok(c) => (Some(c), None),
            Err(e) => (
                None,
                Some(format!(
                    "no temperature: {e:#}; the raw probabilities are shipped"
                )),
            ),
        },
        false => (None, Some("no temperature (calibrate is off)".to_string())),
    };
    let t = calibration
        .as_ref()
        .filter(|c| c.applied)
        .map_or(1.0, |c| c.temperature);
    let probs = softmax_rows(&oof.logits, t);
    let operating_point = if k == 2 {
        let p: Vec<f64> = probs.iter().map(|p| p[0]).collect();
        let positive: Vec<bool> = oof.labels.iter().map(|&y| y == 0).collect();
        Some(operating::operating_point(
            &oof.classes[0],
            &p,
            &positive,
            cfg.target_sensitivity,
            cfg.prevalence,
            cfg.intervals,
            intervals::LEVEL,
        )?)
    } else {
        None
    };
    let fit_sets = |probs: &[Vec<f64>], labels: &[usize]| {
        Conformal::fit(
            probs,
            labels,
            &oof.classes,
            cfg.alpha,
            cfg.score,
            cfg.class_conditional,
        )
    };
    let sets_model = fit_sets(&probs, &oof.labels)?;
    let sets: Vec<Vec<usize>> = probs.iter().map(|p| sets_model.set(p)).collect();
    let detail = conformal::coverage(&sets, &oof.labels, &oof.classes);
    let mut cross_sets = vec![vec![]; probs.len()];
    for f in distinct(&oof.folds) {
        // Nothing of the held-out fold is used: with a temperature shipped, the one fitted on
        // the other folds (the cross-fitted check's) scales every probability here.
        let t_f = match &calibration {
            Some(c) if c.applied => c
                .folds
                .iter()
                .find(|x| x.fold == f)
                .map_or(c.temperature, |x| x.temperature),
            _ => 1.0,
        };
        let probs_f = softmax_rows(&oof.logits, t_f);
        let (train, test): (Vec<usize>, Vec<usize>) =
            (0..probs.len()).partition(|&i| oof.folds[i] != f);
        let p: Vec<Vec<f64>> = train.iter().map(|&i| probs_f[i].clone()).collect();
        let l: Vec<usize> = train.iter().map(|&i| oof.labels[i]).collect();
        let model = fit_sets(&p, &l).with_context(|| format!("the folds other than fold {f}"))?;
        for i in test {
            cross_sets[i] = model.set(&probs_f[i]);
        }
    }
    let conformal = ConformalReport {
        alpha: cfg.alpha,
        score: cfg.score,
        class_conditional: cfg.class_conditional,
        thresholds: sets_model.thresholds.clone(),
        coverage: detail.coverage,
        mean_set_size: detail.mean_set_size,
        detail,
        cross_fitted: conformal::coverage(&cross_sets, &oof.labels, &oof.classes),
    };
    let record = TrustRecord {
        fitted_on: fitted_on.to_string(),
        classes: oof.classes.clone(),
        calibration: calibration.as_ref().map(|c| Temperature {
            temperature: c.temperature,
            applied: c.applied,
        }),
        threshold: operating_point.as_ref().map(|o| Threshold {
            positive_class: o.positive_class.clone(),
            threshold: o.threshold,
            target_sensitivity: o.target_sensitivity,
        }),
        conformal: Some(sets_model),
    };
    Ok(Fitted {
        note,
        calibration,
        operating_point,
        conformal,
        record,
    })
}

/// The distinct values of `v`, ascending.
fn distinct(v: &[usize]) -> Vec<usize> {
    let mut d = v.to_vec();
    d.sort_unstable();
    d.dedup();
    d
}

/// The temperature on all out-of-fold logits and the cross-fitted check of it.
fn calibrate(oof: &Oof, groups: &intervals::Groups, fitted_on: &str) -> Result<CalibrationReport> {
    let temperature = calibration::fit_temperature(&oof.logits, &oof.labels)?;
    let mut folds = vec![];
    let (mut before, mut after) = (0.0, 0.0);
    for f in distinct(&oof.folds) {
        let (train, test): (Vec<usize>, Vec<usize>) =
            (0..oof.labels.len()).partition(|&i| oof.folds[i] != f);
        let pick = |idx: &[usize]| -> (Vec<Vec<f64>>, Vec<usize>) {
            (
                idx.iter().map(|&i| oof.logits[i].clone()).collect(),
                idx.iter().map(|&i| oof.labels[i]).collect(),
            )
        };
        let (zt, yt) = pick(&train);
        let (zv, yv) = pick(&test);
        let t = calibration::fit_temperature(&zt, &yt)
            .with_context(|| format!("on the folds other than fold {f}"))?;
        let (b, a) = (
            calibration::nll(&zv, &yv, 1.0),
            calibration::nll(&zv, &yv, t),
        );
        before += b * yv.len() as f64;
        after += a * yv.len() as f64;
        folds.push(CrossFold {
            fold: f,
            images: yv.len(),
            temperature: t,
            own_temperature: calibration::fit_temperature(&zv, &yv).ok(),
            nll_before: b,
            nll_after: a,
        });
    }
    let n = oof.labels.len() as f64;
    let measure =
        |t: f64| calibration::measures(&softmax_rows(&oof.logits, t), &oof.labels, Some(groups));
    Ok(CalibrationReport {
        method: "temperature".into(),
        temperature,
        applied: after < before,
        fitted_on: fitted_on.to_string(),
        before: measure(1.0),
        after: measure(temperature),
        cross_fitted_nll_before: before / n,
        cross_fitted_nll_after: after / n,
        folds,
    })
}

/// `eval`'s `calibration`: the record's temperature and the measures on these images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalCalibration {
    /// `temperature`.
    pub method: String,
    /// The temperature the checkpoint's calibration fitted.
    pub temperature: f64,
    /// Whether the probabilities reported are at it (it ships and no `--no-calibration`).
    pub applied: bool,
    /// The measures of the raw probabilities.
    pub before: Measures,
    /// Of the probabilities at the temperature.
    pub after: Measures,
}

/// `eval`'s `operating_point` (two classes): the metrics at the threshold decisions are taken
/// at (the recorded screening threshold, else 0.5), and at 0.5.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalOperatingPoint {
    pub positive_class: String,
    /// The sensitivity the threshold was chosen for on out-of-fold predictions (`None`: no
    /// recorded threshold).
    pub target_sensitivity: Option<f64>,
    pub threshold: f64,
    pub sensitivity: Estimate,
    pub specificity: Estimate,
    pub ppv: Estimate,
    pub npv: Estimate,
    pub at_threshold: operating::AtThreshold,
    pub at_half: operating::AtThreshold,
}

/// `eval`'s `conformal`: the checkpoint's sets on these images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConformal {
    pub alpha: f64,
    pub score: ScoreKind,
    pub class_conditional: bool,
    pub thresholds: Vec<f64>,
    /// `cross-conformal` (a cv folder's fold models) or `split`.
    pub kind: String,
    pub coverage: f64,
    pub mean_set_size: f64,
    pub detail: Coverage,
}

/// Everything [`measure`] gives `eval`.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub calibration: Option<EvalCalibration>,
    pub operating_point: Option<EvalOperatingPoint>,
    pub conformal: Option<EvalConformal>,
    pub intervals: Intervals,
}

/// What `eval` needs to know of the model it measures.
pub struct Model<'a> {
    pub classes: &'a [String],
    pub record: Option<&'a TrustRecord>,
    /// Whether the reported probabilities are at the record's temperature.
    pub calibrated: bool,
    /// The threshold decisions were taken at (two classes).
    pub threshold: Option<f64>,
    /// The sets were cross-conformal.
    pub cross: bool,
}

/// The trust figures of a model's answers on labelled images: raw probabilities, those at
/// the record's temperature (`fitted`), those its decisions and sets were taken on (`basis`),
/// conformal sets (when it has them), labels, and each image's group key; PPV and NPV also at
/// `prevalence` (`None`: the images').
#[allow(clippy::too_many_arguments)]
pub fn measure(
    model: &Model,
    raw: &[Vec<f64>],
    fitted: &[Vec<f64>],
    basis: &[Vec<f64>],
    sets: Option<&[Vec<usize>]>,
    labels: &[usize],
    groups: &[String],
    method: ProportionMethod,
    prevalence: Option<f64>,
) -> Measured {
    let groups = intervals::Groups::of(groups);
    let k = model.classes.len();
    let calibration = model
        .record
        .and_then(|r| r.calibration)
        .map(|c| EvalCalibration {
            method: "temperature".into(),
            temperature: c.temperature,
            applied: model.calibrated,
            before: calibration::measures(raw, labels, Some(&groups)),
            after: calibration::measures(fitted, labels, Some(&groups)),
        });
    let operating_point = model.threshold.filter(|_| k == 2).map(|t| {
        let p: Vec<f64> = basis.iter().map(|p| p[0]).collect();
        let positive: Vec<bool> = labels.iter().map(|&y| y == 0).collect();
        let at =
            |t| operating::at_threshold(&p, &positive, t, prevalence, method, intervals::LEVEL);
        let at_t = at(t);
        EvalOperatingPoint {
            positive_class: model.classes[0].clone(),
            target_sensitivity: model
                .record
                .and_then(|r| r.threshold.as_ref())
                .map(|t| t.target_sensitivity),
            threshold: t,
            sensitivity: at_t.sensitivity,
            specificity: at_t.specificity,
            ppv: at_t.ppv,
            npv: at_t.npv,
            at_threshold: at_t,
            at_half: at(0.5),
        }
    });
    let conformal = match (model.record.and_then(|r| r.conformal.as_ref()), sets) {
        (Some(c), Some(sets)) => {
            let detail = conformal::coverage(sets, labels, model.classes);
            Some(EvalConformal {
                alpha: c.alpha,
                score: c.score,
                class_conditional: c.class_conditional,
                thresholds: c.thresholds.clone(),
                kind: if model.cross {
                    "cross-conformal"
                } else {
                    "split"
                }
                .into(),
                coverage: detail.coverage,
                mean_set_size: detail.mean_set_size,
                detail,
            })
        }
        _ => None,
    };
    Measured {
        calibration,
        operating_point,
        conformal,
        intervals: intervals(basis, labels, k, &groups, method),
    }
}
