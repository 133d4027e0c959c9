//! Two cross-validations of the same images compared: is recipe B better or worse than A, or is
//! the difference noise?
//!
//! - **By fold** (when both split the images into the same folds): the paired t-test of the
//!   per-fold differences B − A of each measure (mean, sample std, 95 % t-interval, two-sided
//!   p-value with k − 1 degrees of freedom), as in Dietterich (1998) and Nadeau & Bengio (2003),
//!   who warn that fold results are not independent: the test is optimistic (Dietterich advises
//!   against it), so a p-value near 0.05 is no proof. Beside it the corrected resampled t-test
//!   (Nadeau & Bengio 2003; Bouckaert & Frank 2004): the variance of the differences scaled
//!   by 1/k + n_test/n_train instead of 1/k, which the verdict uses.
//! - **Image by image** (whenever both predicted the same images out of fold): the exact
//!   McNemar test on the images one of the two gets right and the other wrong (two-sided
//!   binomial test of those discordant pairs at ½; Dietterich 1998 recommends it for
//!   comparing two classifiers on one test set); for two classes also DeLong's paired test
//!   of the two out-of-fold ROC-AUCs (DeLong et al. 1988, [`crate::trust::intervals`]).
//!
//! Reads each folder's `cv.json` (per-fold measures of `model.pt`) and `oof.csv`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Serialize;

use crate::runs::cv::{CvReport, MEASURES, OOF};
use crate::stats::{inc_beta, Summary};

/// One image of `oof.csv`: its class, whether the model that did not train on it was right,
/// its fold, and its probability of the first class.
#[derive(Debug, Clone, PartialEq)]
struct OofRow {
    truth: String,
    right: bool,
    fold: usize,
    first: f64,
}

/// A cv folder as the comparison sees it.
struct Side {
    dir: PathBuf,
    cv: CvReport,
    oof: BTreeMap<String, OofRow>,
}

impl Side {
    /// Its `cv.json` (the out-of-fold predictions come with [`Side::read_oof`]).
    fn read(dir: &Path) -> Result<Side> {
        Ok(Side {
            dir: dir.to_path_buf(),
            cv: CvReport::read(dir)?,
            oof: BTreeMap::new(),
        })
    }

    fn read_oof(&mut self) -> Result<()> {
        self.oof = read_oof(&self.dir.join(OOF), &self.cv.classes, self.cv.folds)?;
        Ok(())
    }

    /// Measure `name` of folds 0, 1, … in order (`None` where a fold lacks it).
    fn per_fold(&self, name: &str) -> Option<Vec<f64>> {
        let (_, get) = MEASURES.iter().find(|(n, _)| *n == name)?;
        (0..self.cv.folds)
            .map(|k| {
                let fold = self.cv.model.per_fold.iter().find(|f| f.fold == k)?;
                get(fold)
            })
            .collect()
    }
}

fn read_oof(path: &Path, classes: &[String], folds: usize) -> Result<BTreeMap<String, OofRow>> {
    let mut rows = BTreeMap::new();
    for r in super::oof::read(path, classes, folds)? {
        let predicted = crate::metrics::argmax(&r.probs);
        rows.insert(
            r.path,
            OofRow {
                right: predicted == r.truth,
                truth: classes[r.truth].clone(),
                fold: r.fold,
                // From the logits where the file has them (full precision: ties at 9
                // decimals would move the AUC).
                first: r.logits.as_ref().map_or(r.probs[0], |z| {
                    crate::trust::calibration::softmax(z, 1.0)[0]
                }),
            },
        );
    }
    Ok(rows)
}

/// One measure of both sides and their paired difference over folds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairedMeasure {
    pub measure: String,
    pub a: Summary,
    pub b: Summary,
    /// B − A per fold, summarised.
    pub difference: Summary,
    /// The paired t statistic (infinite when every fold differs by the same non-zero amount).
    pub t: f64,
    /// Two-sided p-value of the paired t-test with folds − 1 degrees of freedom (NaN for one
    /// fold).
    pub p: f64,
    /// The corrected resampled t-test (Nadeau & Bengio): the variance scaled by
    /// 1/k + n_test/n_train.
    pub corrected_t: f64,
    pub corrected_p: f64,
}

/// The exact McNemar test of the images one side gets right and the other wrong.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct McNemar {
    /// Images A gets right and B wrong.
    pub only_a_right: usize,
    /// Images B gets right and A wrong.
    pub only_b_right: usize,
    /// Two-sided exact binomial p-value of the discordant images at ½ (1 when there are none).
    pub p: f64,
}

/// `inception compare`'s answer (`--json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    pub images: usize,
    pub classes: Vec<String>,
    pub folds: usize,
    /// Whether both put every image in the same fold: the per-fold test needs it.
    pub same_folds: bool,
    /// Per-fold paired tests (empty when the folds differ).
    pub by_fold: Vec<PairedMeasure>,
    /// Accuracy of the pooled out-of-fold predictions of each side.
    pub pooled_accuracy: [f64; 2],
    pub mcnemar: McNemar,
    /// Two classes: DeLong's paired test of the out-of-fold ROC-AUCs (`None` with fewer than
    /// two images of a class).
    pub delong: Option<crate::trust::intervals::PairedAuc>,
}

/// The paired t-test of `b − a`, fold by fold (its corrected form equal to it).
pub fn paired(measure: &str, a: &[f64], b: &[f64]) -> PairedMeasure {
    paired_corrected(measure, a, b, 0.0)
}

/// Two-sided P(|T| ≥ |t|) for Student's t with `df` degrees of freedom.
fn two_sided(t: f64, df: f64) -> f64 {
    // I_{df/(df+t²)}(df/2, ½), without the cancellation of 2·(1 − F(|t|)) when p is tiny.
    inc_beta(df / 2.0, 0.5, df / (df + t * t))
}

/// The paired t-test of `b − a`, fold by fold, and the corrected resampled t-test with
/// `test_train` = n_test / n_train of a fold.
pub fn paired_corrected(measure: &str, a: &[f64], b: &[f64], test_train: f64) -> PairedMeasure {
    assert_eq!(a.len(), b.len(), "paired: one value per fold on each side");
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    let diff = Summary::of(&d);
    let k = d.len() as f64;
    let (t, p) = if d.len() < 2 || !diff.mean.is_finite() || !diff.std.is_finite() {
        (f64::NAN, f64::NAN)
    } else if diff.std > 0.0 {
        let t = diff.mean / (diff.std / k.sqrt());
        (t, two_sided(t, k - 1.0))
    } else if diff.mean == 0.0 {
        (0.0, 1.0)
    } else {
        (diff.mean.signum() * f64::INFINITY, 0.0)
    };
    let (corrected_t, corrected_p) = if t.is_finite() && diff.std > 0.0 {
        let ct = diff.mean / (diff.std * (1.0 / k + test_train).sqrt());
        (ct, two_sided(ct, k - 1.0))
    } else {
        (t, p)
    };
    PairedMeasure {
        measure: measure.into(),
        a: Summary::of(a),
        b: Summary::of(b),
        difference: diff,
        t,
        p,
        corrected_t,
        corrected_p,
    }
}

/// The exact two-sided McNemar test: `P(X ≤ min(b, c)) · 2` for X ~ Binomial(b + c, ½), at most 1.
pub fn mcnemar(only_a_right: usize, only_b_right: usize) -> McNemar {
    let n = only_a_right + only_b_right;
    let k = only_a_right.min(only_b_right);
    let tail = if n == 0 {
        1.0
    } else if n <= 1000 {
        // Σ_{i ≤ k} C(n, i) / 2ⁿ, each term from the last: C(n, i) = C(n, i − 1)·(n − i + 1)/i.
        let mut term = 0.5f64.powi(n as i32);
        let mut tail = term;
        for i in 1..=k {
            term *= (n - i + 1) as f64 / i as f64;
            tail += term;
        }
        tail
    } else {
        // 2⁻ⁿ underflows past n ≈ 1074: the binomial tail as I_½(n − k, k + 1).
        inc_beta((n - k) as f64, (k + 1) as f64, 0.5)
    };
    McNemar {
        only_a_right,
        only_b_right,
        p: (2.0 * tail).min(1.0),
    }
}

/// Compares the cv folders `a` and `b`: they must hold the same classes and have predicted the
/// same images with the same truths.
pub fn compare(a: &Path, b: &Path) -> Result<Comparison> {
    let (mut sa, mut sb) = (Side::read(a)?, Side::read(b)?);
    if sa.cv.classes != sb.cv.classes {
        bail!(
            "{} has the classes {:?} and {} {:?}: only cross-validations of the same classes compare",
            a.display(),
            sa.cv.classes,
            b.display(),
            sb.cv.classes
        );
    }
    sa.read_oof()?;
    sb.read_oof()?;
    let only = |x: &Side, y: &Side| -> Vec<String> {
        x.oof
            .keys()
            .filter(|k| !y.oof.contains_key(*k))
            .cloned()
            .collect()
    };
    let (only_a, only_b) = (only(&sa, &sb), only(&sb, &sa));
    if !only_a.is_empty() || !only_b.is_empty() {
        let first = |v: &[String]| v.first().map_or("none".into(), |s| format!("{s:?}"));
        bail!(
            "{} and {} predicted different images ({} only in the first, e.g. {}; {} only in the \
             second, e.g. {}): only cross-validations of the same images compare",
            a.display(),
            b.display(),
            only_a.len(),
            first(&only_a),
            only_b.len(),
            first(&only_b)
        );
    }
    if let Some((path, _)) = sa.oof.iter().find(|(k, r)| sb.oof[*k].truth != r.truth) {
        bail!(
            "{path}: its class is {:?} in {} and {:?} in {}",
            sa.oof[path].truth,
            a.display(),
            sb.oof[path].truth,
            b.display()
        );
    }
    let same_folds =
        sa.cv.folds == sb.cv.folds && sa.oof.iter().all(|(k, r)| sb.oof[k].fold == r.fold);
    let n = sa.oof.len();
    // n_test / n_train, averaged over the folds.
    let test_train = {
        let k = sa.cv.folds.max(1);
        (0..k)
            .map(|f| {
                let test = sa.oof.values().filter(|r| r.fold == f).count() as f64;
                test / (n as f64 - test).max(1.0)
            })
            .sum::<f64>()
            / k as f64
    };
    let by_fold = match same_folds {
        false => vec![],
        true => [
            "accuracy",
            "macro_f1",
            "roc_auc",
            "sensitivity",
            "specificity",
        ]
        .iter()
        .filter_map(|m| {
            Some(paired_corrected(
                m,
                &sa.per_fold(m)?,
                &sb.per_fold(m)?,
                test_train,
            ))
        })
        .collect(),
    };
    let delong = (sa.cv.classes.len() == 2)
        .then(|| {
            let keys: Vec<&String> = sa.oof.keys().collect();
            let positive: Vec<bool> = keys
                .iter()
                .map(|k| sa.oof[*k].truth == sa.cv.classes[0])
                .collect();
            let a: Vec<f64> = keys.iter().map(|k| sa.oof[*k].first).collect();
            let b: Vec<f64> = keys.iter().map(|k| sb.oof[*k].first).collect();
            crate::trust::intervals::delong_paired(&a, &b, &positive).ok()
        })
        .flatten();
    let count = |f: &dyn Fn(&OofRow, &OofRow) -> bool| {
        sa.oof.iter().filter(|(k, r)| f(r, &sb.oof[*k])).count()
    };
    let accuracy = |s: &Side| s.oof.values().filter(|r| r.right).count() as f64 / n.max(1) as f64;
    Ok(Comparison {
        a: sa.dir.display().to_string(),
        b: sb.dir.display().to_string(),
        images: n,
        classes: sa.cv.classes.clone(),
        folds: sa.cv.folds,
        same_folds,
        by_fold,
        pooled_accuracy: [accuracy(&sa), accuracy(&sb)],
        mcnemar: mcnemar(
            count(&|x, y| x.right && !y.right),
            count(&|x, y| !x.right && y.right),
        ),
        delong,
    })
}

/// The comparison as printed.
pub fn render(c: &Comparison) -> String {
    let mut out = format!("A: {}\nB: {}\n", c.a, c.b);
    out += &format!(
        "{} images, {} classes; {}\n\n",
        c.images,
        c.classes.len(),
        match c.same_folds {
            true => format!("the same {} folds: paired fold by fold", c.folds),
            false => "other folds (another seed or data): no fold-by-fold test, only image by \
                      image"
                .into(),
        }
    );
    if !c.by_fold.is_empty() {
        out += &format!(
            "{:<12} {:>15} {:>15}   {}\n",
            "measure",
            "A",
            "B",
            "B − A over folds: mean (95 % CI), paired t-test; corrected resampled t-test"
        );
        for m in &c.by_fold {
            out += &format!(
                "{:<12} {:>15} {:>15}   {:+.3} ({:+.3} to {:+.3}), t = {:.2}, p = {:.3}; \
                 corrected t = {:.2}, p = {:.3}\n",
                m.measure,
                format!("{:.3} ± {:.3}", m.a.mean, m.a.std),
                format!("{:.3} ± {:.3}", m.b.mean, m.b.std),
                m.difference.mean,
                m.difference.ci95[0],
                m.difference.ci95[1],
                m.t,
                m.p,
                m.corrected_t,
                m.corrected_p
            );
        }
        out += "\n";
    }
    let mc = &c.mcnemar;
    out += &format!(
        "image by image (out-of-fold predictions): A {:.3}, B {:.3}; B right where A is wrong: {}, \
         A right where B is wrong: {}; exact McNemar p = {:.3}\n",
        c.pooled_accuracy[0], c.pooled_accuracy[1], mc.only_b_right, mc.only_a_right, mc.p
    );
    if let Some(d) = &c.delong {
        out += &format!(
            "out-of-fold ROC-AUC: A {:.3}, B {:.3}; DeLong's paired test z = {:.2}, p = {:.3}\n",
            d.auc_a, d.auc_b, d.z, d.p_value
        );
    }
    out += &format!("verdict: {}\n", verdict(c));
    out
}

/// A winner only when the corrected fold-by-fold test and McNemar's both say p < 0.05 and
/// point the same way.
fn verdict(c: &Comparison) -> &'static str {
    let mc = &c.mcnemar;
    let accuracy = c.by_fold.iter().find(|m| m.measure == "accuracy");
    let b_better = mc.only_b_right > mc.only_a_right;
    let agree = mc.only_b_right != mc.only_a_right
        && accuracy
            .is_none_or(|m| m.difference.mean != 0.0 && (m.difference.mean > 0.0) == b_better);
    let significant = accuracy.is_none_or(|m| m.corrected_p < 0.05) && mc.p < 0.05;
    match (agree && significant, b_better) {
        (true, true) => "B is more accurate than A (p < 0.05 in every test here)",
        (true, false) => "B is less accurate than A (p < 0.05 in every test here)",
        (false, _) => "no difference in accuracy shown at the 5 % level",
    }
}
