//! The trust figures as the terminal shows them (cv's summary and `eval`).

use super::calibration::Measures;
use super::conformal::Coverage;
use super::intervals::{BootstrapInterval, Estimate};
use super::operating::{AtThreshold, OperatingPoint};
use super::{CalibrationReport, ConformalReport, EvalOperatingPoint, Intervals};

fn est(e: &Estimate) -> String {
    format!("{:.3} ({:.3}–{:.3})", e.value, e.low, e.high)
}

fn boot(b: &BootstrapInterval) -> String {
    format!(
        "{:.3} (percentile {:.3}–{:.3}, BCa {:.3}–{:.3})",
        b.value, b.percentile[0], b.percentile[1], b.bca[0], b.bca[1]
    )
}

/// The intervals block.
pub fn intervals(i: &Intervals) -> String {
    let mut out = format!(
        "\n95% intervals (proportions: {}; bootstrap: {} resamples of {} patients/groups)\n",
        i.accuracy.method,
        super::intervals::RESAMPLES,
        i.groups
    );
    out += &format!(
        "  accuracy      {:.3} ({:.3}–{:.3}); bootstrap {}\n",
        i.accuracy.value,
        i.accuracy.low,
        i.accuracy.high,
        boot(&i.accuracy_bootstrap)
    );
    out += &format!("  macro-F1      {}\n", boot(&i.macro_f1));
    if let Some(b) = &i.balanced_accuracy {
        out += &format!("  balanced acc. {}\n", boot(b));
    }
    if let Some(a) = &i.roc_auc {
        out += &format!(
            "  ROC-AUC       {:.3} ({:.3}–{:.3}, DeLong)",
            a.value, a.low, a.high
        );
        if let Some(b) = &i.roc_auc_bootstrap {
            out += &format!("; bootstrap {}", boot(b));
        }
        out += "\n";
    }
    for (name, e) in [
        ("sensitivity", &i.sensitivity),
        ("specificity", &i.specificity),
    ] {
        if let Some(e) = e {
            out += &format!("  {name:<13} {:.3} ({:.3}–{:.3})\n", e.value, e.low, e.high);
        }
    }
    out
}

/// One line of calibration measures.
pub fn measures(m: &Measures) -> String {
    let ci = m
        .ece_interval
        .map(|c| format!(" [{:.3}–{:.3}]", c[0], c[1]))
        .unwrap_or_default();
    let fit = match (m.slope, m.intercept) {
        (Some(s), Some(i)) => format!("slope {s:.3}, intercept {i:+.3}"),
        _ => "slope and intercept undefined (separable)".into(),
    };
    format!(
        "ECE {:.3}{ci} (noise floor {:.3}), adaptive ECE {:.3}, Brier {:.4}, NLL {:.4}, {fit}, \
         Spiegelhalter z {:+.2}",
        m.ece, m.ece_noise_floor, m.adaptive_ece, m.brier, m.nll, m.spiegelhalter_z
    )
}

/// The calibration block of cv.
pub fn calibration(c: &CalibrationReport) -> String {
    let temps: Vec<String> = c
        .folds
        .iter()
        .map(|f| format!("{:.2}", f.temperature))
        .collect();
    format!(
        "\ncalibration: temperature T = {:.3} fitted on every out-of-fold logit; cross-fitted \
         (T from four folds, NLL on the fifth): NLL {:.4} → {:.4}, so it is {}; T per held-out \
         fold {}\n  raw:        {}\n  at T:       {}\n",
        c.temperature,
        c.cross_fitted_nll_before,
        c.cross_fitted_nll_after,
        if c.applied {
            "applied to what this cv ships"
        } else {
            "not applied (it does not help on held-out folds)"
        },
        temps.join(", "),
        measures(&c.before),
        measures(&c.after)
    )
}

fn at(a: &AtThreshold) -> String {
    // A proportion of no images is undefined, not 0 (its interval would be all of [0, 1]).
    let of = |e: &Estimate, n: usize, none: &str| match n {
        0 => format!("undefined ({none})"),
        _ => est(e),
    };
    let (tp, fp, tn, fn_) = (
        a.true_positives,
        a.false_positives,
        a.true_negatives,
        a.false_negatives,
    );
    format!(
        "t = {:.4}: sensitivity {}, specificity {}, PPV {}, NPV {}; at prevalence {:.3} PPV {}, NPV {}",
        a.threshold,
        of(&a.sensitivity, tp + fn_, "no positive images"),
        of(&a.specificity, tn + fp, "no negative images"),
        of(&a.ppv, tp + fp, "nothing called positive"),
        of(&a.npv, tn + fn_, "nothing called negative"),
        a.prevalence,
        of(&a.ppv_at_prevalence, tp + fp, "nothing called positive"),
        of(&a.npv_at_prevalence, tn + fn_, "nothing called negative")
    )
}

/// The operating-point block.
pub fn operating_point(o: &OperatingPoint) -> String {
    format!(
        "\nscreening threshold for {} (positive when P ≥ t), intervals {}:\n  target sensitivity \
         {}: {}\n  Youden's J:          {}\n  0.5:                 {}\n",
        o.positive_class,
        o.interval_method.name(),
        o.target_sensitivity,
        at(&o.at_target),
        at(&o.youden),
        at(&o.at_half)
    )
}

/// Coverage and set sizes.
pub fn coverage(c: &Coverage) -> String {
    let per: Vec<String> = c
        .per_class
        .iter()
        .map(|p| {
            format!(
                "{} {:.3} (size {:.2}, {} images)",
                p.class, p.coverage, p.mean_set_size, p.images
            )
        })
        .collect();
    format!(
        "coverage {:.3}, mean set size {:.2} ({} one class, {} cannot tell, {} empty); per class: {}",
        c.coverage,
        c.mean_set_size,
        c.singletons,
        c.ambiguous,
        c.empty,
        per.join(", ")
    )
}

/// The conformal block of cv.
pub fn conformal(c: &ConformalReport) -> String {
    let th: Vec<String> = c.thresholds.iter().map(|t| format!("{t:.4}")).collect();
    format!(
        "\nconformal sets (alpha {}, {} score, {}; thresholds {}):\n  on the images fitted on: \
         {}\n  cross-fitted (thresholds from the other folds): {}\n",
        c.alpha,
        match c.score {
            super::conformal::ScoreKind::Lac => "LAC",
            super::conformal::ScoreKind::Aps => "APS",
        },
        if c.class_conditional {
            "one threshold per class"
        } else {
            "one threshold for all"
        },
        th.join(", "),
        coverage(&c.detail),
        coverage(&c.cross_fitted)
    )
}

/// `eval`'s operating-point block.
pub fn eval_operating_point(o: &EvalOperatingPoint) -> String {
    let chosen = match o.target_sensitivity {
        Some(s) => format!("the screening threshold (chosen for sensitivity {s} out of fold)"),
        None => "the threshold given".into(),
    };
    format!(
        "\n{} as positive, at {chosen}:\n  {}\n  at 0.5: {}\n",
        o.positive_class,
        at(&o.at_threshold),
        at(&o.at_half)
    )
}
