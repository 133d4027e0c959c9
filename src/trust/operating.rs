//! The screening operating point of a two-class model: the threshold t on the positive
//! class's probability (positive when p ≥ t) a screening use needs, chosen on out-of-fold
//! probabilities, and what it costs.
//!
//! The target threshold is the highest t whose sensitivity is at least S: the j-th largest
//! positive probability, j = ⌈S · positives⌉ (S taken to nine decimals, integer arithmetic).
//! Youden's J optimum is the t that maximises sensitivity + specificity − 1 over the observed
//! probabilities (the highest such t on ties). At a threshold: sensitivity, specificity, PPV
//! and NPV with their intervals, and PPV/NPV at a given prevalence π by Bayes' rule,
//! PPV = sens·π / (sens·π + (1 − spec)(1 − π)), whose interval takes the ends of the
//! sensitivity and specificity intervals (conservative: both ends at once).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::intervals::{Estimate, ProportionMethod};

/// The default target sensitivity.
pub const DEFAULT_SENSITIVITY: f64 = 0.95;

/// The measures at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AtThreshold {
    pub threshold: f64,
    pub sensitivity: Estimate,
    pub specificity: Estimate,
    pub ppv: Estimate,
    pub npv: Estimate,
    /// The prevalence PPV and NPV below are at.
    pub prevalence: f64,
    pub ppv_at_prevalence: Estimate,
    pub npv_at_prevalence: Estimate,
    pub true_positives: usize,
    pub false_positives: usize,
    pub true_negatives: usize,
    pub false_negatives: usize,
}

/// The operating point `cv.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatingPoint {
    pub positive_class: String,
    pub target_sensitivity: f64,
    pub threshold: f64,
    pub sensitivity: Estimate,
    pub specificity: Estimate,
    pub ppv: Estimate,
    pub npv: Estimate,
    /// Everything at the target threshold (the fields above repeat its main ones).
    pub at_target: AtThreshold,
    /// At Youden's J optimum.
    pub youden: AtThreshold,
    /// At 0.5.
    pub at_half: AtThreshold,
    pub interval_method: ProportionMethod,
}

/// Checks that `v` lies in (0, 1); `what` names it.
pub fn check_fraction(v: f64, what: &str) -> Result<()> {
    if !(v > 0.0 && v < 1.0) {
        bail!("{what} {v} is outside (0, 1)");
    }
    Ok(())
}

/// The PPV and NPV at prevalence `pi` for sensitivity `se` and specificity `sp`.
fn bayes(se: f64, sp: f64, pi: f64) -> (f64, f64) {
    let ppv_den = se * pi + (1.0 - sp) * (1.0 - pi);
    let npv_den = sp * (1.0 - pi) + (1.0 - se) * pi;
    let ppv = if ppv_den > 0.0 {
        se * pi / ppv_den
    } else {
        0.0
    };
    let npv = if npv_den > 0.0 {
        sp * (1.0 - pi) / npv_den
    } else {
        0.0
    };
    (ppv, npv)
}

/// The measures at threshold `t` of positive-class probabilities `p` for outcomes `positive`.
pub fn at_threshold(
    p: &[f64],
    positive: &[bool],
    t: f64,
    prevalence: Option<f64>,
    method: ProportionMethod,
    level: f64,
) -> AtThreshold {
    let (mut tp, mut fp, mut tn, mut fn_) = (0, 0, 0, 0);
    for (&v, &y) in p.iter().zip(positive) {
        match (v >= t, y) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, false) => tn += 1,
            (false, true) => fn_ += 1,
        }
    }
    let est = |k, n| method.estimate(k, n, level);
    let (se, sp) = (est(tp, tp + fn_), est(tn, tn + fp));
    let pi = prevalence.unwrap_or((tp + fn_) as f64 / p.len().max(1) as f64);
    let (ppv, npv) = bayes(se.value, sp.value, pi);
    let (ppv_lo, npv_lo) = bayes(se.low, sp.low, pi);
    let (ppv_hi, npv_hi) = bayes(se.high, sp.high, pi);
    AtThreshold {
        threshold: t,
        sensitivity: se,
        specificity: sp,
        ppv: est(tp, tp + fp),
        npv: est(tn, tn + fn_),
        prevalence: pi,
        ppv_at_prevalence: Estimate {
            value: ppv,
            low: ppv_lo,
            high: ppv_hi,
        },
        npv_at_prevalence: Estimate {
            value: npv,
            low: npv_lo,
            high: npv_hi,
        },
        true_positives: tp,
        false_positives: fp,
        true_negatives: tn,
        false_negatives: fn_,
    }
}

/// The highest threshold whose sensitivity is ≥ `target`.
pub fn target_threshold(p: &[f64], positive: &[bool], target: f64) -> Result<f64> {
    check_fraction(target, "the target sensitivity")?;
    let mut pos: Vec<f64> = p
        .iter()
        .zip(positive)
        .filter(|(_, &y)| y)
        .map(|(v, _)| *v)
        .collect();
    if pos.is_empty() {
        bail!("no positive images to choose a threshold on");
    }
    pos.sort_by(|a, b| b.total_cmp(a));
    const D: u128 = 1_000_000_000;
    let s = (target * 1e9).round() as u128;
    let j = (s * pos.len() as u128).div_ceil(D) as usize;
    Ok(pos[j.clamp(1, pos.len()) - 1])
}

/// Youden's J optimum over the observed probabilities (the highest threshold on ties).
pub fn youden_threshold(p: &[f64], positive: &[bool]) -> f64 {
    let npos = positive.iter().filter(|&&y| y).count().max(1) as f64;
    let nneg = positive.iter().filter(|&&y| !y).count().max(1) as f64;
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    let (mut tp, mut fp) = (0.0, 0.0);
    let (mut best, mut best_t) = (f64::NEG_INFINITY, 1.0);
    for (k, &i) in order.iter().enumerate() {
        if positive[i] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        let last_of_tie = order.get(k + 1).is_none_or(|&j| p[j] != p[i]);
        if last_of_tie {
            let j = tp / npos - fp / nneg;
            if j > best {
                best = j;
                best_t = p[i];
            }
        }
    }
    best_t
}

/// The operating point of positive-class probabilities `p` (outcomes `positive`).
pub fn operating_point(
    positive_class: &str,
    p: &[f64],
    positive: &[bool],
    target: f64,
    prevalence: Option<f64>,
    method: ProportionMethod,
    level: f64,
) -> Result<OperatingPoint> {
    if let Some(pi) = prevalence {
        check_fraction(pi, "the prevalence")?;
    }
    let t = target_threshold(p, positive, target)?;
    let at = |t| at_threshold(p, positive, t, prevalence, method, level);
    let at_target = at(t);
    Ok(OperatingPoint {
        positive_class: positive_class.to_string(),
        target_sensitivity: target,
        threshold: t,
        sensitivity: at_target.sensitivity,
        specificity: at_target.specificity,
        ppv: at_target.ppv,
        npv: at_target.npv,
        youden: at(youden_threshold(p, positive)),
        at_half: at(0.5),
        at_target,
        interval_method: method,
    })
}
