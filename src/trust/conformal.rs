//! Split-conformal prediction sets (Vovk et al. 2005; Angelopoulos & Bates 2023, "Conformal
//! Prediction: A Gentle Introduction"): from the scores of images the model did not train on,
//! a threshold such that a new image's set holds its true class with probability ≥ 1 − α.
//!
//! - **Scores.** LAC (least ambiguous set-valued classifier, Sadinle et al. 2019): 1 − the
//!   probability of the class. APS (adaptive prediction sets, Romano et al. 2020, without
//!   randomisation): the sum of the probabilities of the classes ranked at or above it —
//!   offered only for more than two classes (with two, every APS set is both classes).
//! - **Threshold.** The k-th smallest calibration score, k = ⌈(n + 1)(1 − α)⌉, computed in
//!   integer arithmetic with α taken to nine decimals (so that n = 19, α = 0.1 gives k = 18,
//!   where floating point says 19); refused when k > n (too few images for that α).
//! - **Mondrian** (class-conditional, the default): one threshold per class from the images of
//!   that class, so that coverage holds for each class on its own — for the mpox photos, not
//!   only on average.
//! - **Set.** A class is in the set when its score is ≤ its threshold: one class, several
//!   ("cannot tell: refer"), or none.
//! - **Cross-conformal** ([`cross_set`]) for the fold models used together (CV+, Barber et al.
//!   2021; Romano et al. 2020 §4): each calibration image is compared with the score the fold
//!   model that did not train on it gives the new image; coverage ≥ 1 − 2α.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// The least a class needs to calibrate on.
pub const MIN_PER_CLASS: usize = 20;

/// The conformity score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScoreKind {
    /// 1 − p(class).
    #[default]
    Lac,
    /// Σ p of the classes ranked at or above the class.
    Aps,
}

impl ScoreKind {
    /// Its name in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            ScoreKind::Lac => "lac",
            ScoreKind::Aps => "aps",
        }
    }

    /// The score of class `y` for probabilities `p`.
    pub fn score(self, p: &[f64], y: usize) -> f64 {
        match self {
            ScoreKind::Lac => 1.0 - p[y],
            ScoreKind::Aps => p.iter().filter(|&&v| v > p[y]).sum::<f64>() + p[y],
        }
    }
}

/// A fitted split-conformal predictor: what a shipped model records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conformal {
    pub alpha: f64,
    pub score: ScoreKind,
    pub class_conditional: bool,
    /// One threshold, or one per class (class order).
    pub thresholds: Vec<f64>,
    /// The calibration images behind each threshold.
    pub calibration_images: Vec<usize>,
}

/// α as a fraction of 10⁹ (α must lie in (0, 1)).
fn alpha_parts(alpha: f64) -> Result<u128> {
    if !(alpha > 0.0 && alpha < 1.0) {
        bail!("alpha {alpha} is outside (0, 1)");
    }
    Ok((alpha * 1e9).round() as u128)
}

/// k = ⌈(n + 1)(1 − α)⌉ in integer arithmetic; an error when k > n.
pub fn rank(n: usize, alpha: f64) -> Result<usize> {
    const D: u128 = 1_000_000_000;
    let a = alpha_parts(alpha)?;
    let k = ((n as u128 + 1) * (D - a)).div_ceil(D) as usize;
    if k > n || n == 0 {
        bail!(
            "{n} calibration images are too few for alpha {alpha}: the set would need the \
             {k}-th smallest score (at least {} images)",
            min_images(alpha)?
        );
    }
    Ok(k.max(1))
}

/// The fewest calibration images for which [`rank`] is defined at `alpha`.
pub fn min_images(alpha: f64) -> Result<usize> {
    let mut n = 1;
    const D: u128 = 1_000_000_000;
    let a = alpha_parts(alpha)?;
    while ((n as u128 + 1) * (D - a)).div_ceil(D) as usize > n {
        n += 1;
    }
    Ok(n)
}

/// The k-th smallest of `scores` for k = [`rank`].
fn threshold(scores: &mut [f64], alpha: f64) -> Result<f64> {
    let k = rank(scores.len(), alpha)?;
    scores.sort_by(f64::total_cmp);
    Ok(scores[k - 1])
}

impl Conformal {
    /// Fits thresholds on calibration probabilities `probs` (images the model did not train
    /// on) and their `labels`; `classes` names them in errors.
    pub fn fit(
        probs: &[Vec<f64>],
        labels: &[usize],
        classes: &[String],
        alpha: f64,
        score: ScoreKind,
        class_conditional: bool,
    ) -> Result<Conformal> {
        if score == ScoreKind::Aps && classes.len() <= 2 {
            bail!("the APS score needs more than two classes (with two, every APS set holds both)");
        }
        let scores: Vec<f64> = probs
            .iter()
            .zip(labels)
            .map(|(p, &y)| score.score(p, y))
            .collect();
        let (thresholds, calibration_images) = if class_conditional {
            let mut t = vec![];
            let mut n = vec![];
            for (c, name) in classes.iter().enumerate() {
                let mut s: Vec<f64> = scores
                    .iter()
                    .zip(labels)
                    .filter(|(_, &y)| y == c)
                    .map(|(s, _)| *s)
                    .collect();
                if s.len() < MIN_PER_CLASS {
                    bail!(
                        "class {name:?} has {} calibration images, fewer than the {MIN_PER_CLASS} \
                         needed to promise coverage for it",
                        s.len()
                    );
                }
                n.push(s.len());
                t.push(threshold(&mut s, alpha).map_err(|e| e.context(format!("class {name:?}")))?);
            }
            (t, n)
        } else {
            let mut s = scores.clone();
            (vec![threshold(&mut s, alpha)?], vec![scores.len()])
        };
        Ok(Conformal {
            alpha,
            score,
            class_conditional,
            thresholds,
            calibration_images,
        })
    }

    /// The threshold class `y` is held to.
    fn threshold_of(&self, y: usize) -> f64 {
        if self.class_conditional {
            self.thresholds[y]
        } else {
            self.thresholds[0]
        }
    }

    /// The prediction set of an image with probabilities `p`: the classes (ascending) whose
    /// score is within their threshold.
    pub fn set(&self, p: &[f64]) -> Vec<usize> {
        (0..p.len())
            .filter(|&y| self.score.score(p, y) <= self.threshold_of(y))
            .collect()
    }
}

/// Empirical coverage and set sizes of sets on labelled images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Coverage {
    /// The share of images whose set holds their class.
    pub coverage: f64,
    pub mean_set_size: f64,
    /// Per class (class order): coverage, mean set size and images.
    pub per_class: Vec<ClassCoverage>,
    /// Images with one class, with more ("cannot tell: refer"), with none.
    pub singletons: usize,
    pub ambiguous: usize,
    pub empty: usize,
}

/// Coverage on the images of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassCoverage {
    pub class: String,
    pub images: usize,
    pub coverage: f64,
    pub mean_set_size: f64,
}

/// The coverage of `sets` for `labels`.
pub fn coverage(sets: &[Vec<usize>], labels: &[usize], classes: &[String]) -> Coverage {
    let n = labels.len().max(1) as f64;
    let covered = |s: &Vec<usize>, y: usize| s.contains(&y);
    let per_class = classes
        .iter()
        .enumerate()
        .map(|(c, name)| {
            let idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
            let m = idx.len().max(1) as f64;
            ClassCoverage {
                class: name.clone(),
                images: idx.len(),
                coverage: idx.iter().filter(|&&i| covered(&sets[i], c)).count() as f64 / m,
                mean_set_size: idx.iter().map(|&i| sets[i].len()).sum::<usize>() as f64 / m,
            }
        })
        .collect();
    Coverage {
        coverage: sets
            .iter()
            .zip(labels)
            .filter(|(s, &y)| covered(s, y))
            .count() as f64
            / n,
        mean_set_size: sets.iter().map(Vec::len).sum::<usize>() as f64 / n,
        per_class,
        singletons: sets.iter().filter(|s| s.len() == 1).count(),
        ambiguous: sets.iter().filter(|s| s.len() > 1).count(),
        empty: sets.iter().filter(|s| s.is_empty()).count(),
    }
}

/// One calibration image of a cross-conformal predictor: its fold, class and score under the
/// fold model that did not train on it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CalibrationScore {
    pub fold: usize,
    pub label: usize,
    pub score: f64,
}

/// The cross-conformal (CV+) set of a new image: `fold_probs[f]` its probabilities under fold
/// model `f`. Class y is in the set when fewer than (1 − α)(n + 1) calibration images score
/// below the new image's score for y under their own fold model — counted among all images,
/// or (`class_conditional`) among those of class y, n their number.
pub fn cross_set(
    calibration: &[CalibrationScore],
    fold_probs: &[Vec<f64>],
    classes: usize,
    alpha: f64,
    score: ScoreKind,
    class_conditional: bool,
) -> Result<Vec<usize>> {
    const D: u128 = 1_000_000_000;
    let a = alpha_parts(alpha)?;
    let mut set = vec![];
    for y in 0..classes {
        let pool: Vec<&CalibrationScore> = calibration
            .iter()
            .filter(|c| !class_conditional || c.label == y)
            .collect();
        let mut below = 0u128;
        for c in &pool {
            let p = fold_probs.get(c.fold).ok_or_else(|| {
                anyhow::anyhow!("no fold model {} for a calibration image", c.fold)
            })?;
            if c.score < score.score(p, y) {
                below += 1;
            }
        }
        // below < (1 − α)(n + 1)  ⇔  below · D < (D − a)(n + 1)
        if below * D < (D - a) * (pool.len() as u128 + 1) {
            set.push(y);
        }
    }
    Ok(set)
}
