//! Calibration: temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural
//! Networks") fitted on out-of-fold logits, and the measures of how far a probability can be
//! believed.
//!
//! Conventions (written down because every library picks its own):
//! - **Which probability.** With two classes, the probability of the positive class (the
//!   first) against whether the image is positive — netcal's binary mode, the clinical
//!   prediction literature's (Van Calster et al. 2019). With more, the top-label confidence
//!   (the largest probability) against whether the argmax is right — netcal's multiclass mode.
//!   ECE, adaptive ECE, slope, intercept and Spiegelhalter's z all use that one probability;
//!   Brier and NLL use the whole distribution as scikit-learn does (two classes: the positive
//!   class's squared error; more: the sum over classes).
//! - **ECE.** 15 equal-width bins with edges `j · (1/15)` (as `np.linspace(0, 1, 16)`), each
//!   bin `[e_j, e_{j+1})` and the last also holding 1; a value exactly on an inner edge belongs
//!   to the bin above it. ECE = Σ_b (n_b / n) · |frequency_b − mean probability_b| over
//!   non-empty bins. Probabilities are clipped to [ε, 1 − ε] first (ε = f64's epsilon), as
//!   netcal does.
//! - **Adaptive ECE.** The same sum over 15 equal-mass bins: inner edges at the 1/15 … 14/15
//!   quantiles (linear interpolation) of the probabilities, outer edges 0 and 1 (netcal's
//!   `equal_intervals=False`).
//! - **Slope and intercept.** The logistic recalibration `logit P(y) = a + b · logit(p)`, fitted
//!   by maximum likelihood (Newton): b = 1 and a = 0 for a calibrated model; b < 1 means
//!   over-confident.
//! - **Spiegelhalter's z.** Σ (y − p)(1 − 2p) / √Σ (1 − 2p)² p (1 − p): standard normal for a
//!   calibrated model.
//! - **Noise floor.** The mean ECE of a perfectly calibrated model with the same probabilities
//!   on as many images: outcomes drawn as Bernoulli(p), 1,000 times (fewer past 2,000 images:
//!   two million outcomes in all, at least 200 draws), seeded.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// The number of ECE bins.
pub const BINS: usize = 15;
/// Draws of the ECE noise floor: 1,000, fewer for many images (two million outcomes in all,
/// at least 200 draws).
fn floor_draws(n: usize) -> usize {
    (2_000_000 / n.max(1)).clamp(200, 1000)
}

/// softmax(z / t).
pub fn softmax(z: &[f64], t: f64) -> Vec<f64> {
    let m = z.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b / t));
    let e: Vec<f64> = z.iter().map(|&v| (v / t - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// −log softmax(z / t)[y].
fn nll_one(z: &[f64], y: usize, t: f64) -> f64 {
    let m = z.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b / t));
    let lse = m + z.iter().map(|&v| (v / t - m).exp()).sum::<f64>().ln();
    lse - z[y] / t
}

/// The mean negative log-likelihood of `labels` under softmax(logits / t).
pub fn nll(logits: &[Vec<f64>], labels: &[usize], t: f64) -> f64 {
    let s: f64 = logits
        .iter()
        .zip(labels)
        .map(|(z, &y)| nll_one(z, y, t))
        .sum();
    s / labels.len().max(1) as f64
}

/// d/dβ of the mean NLL of softmax(β z) — the mean over images of E_p[z] − z_y — and its
/// second derivative, the mean of Var_p[z] ≥ 0 (the NLL is convex in β = 1/T).
fn nll_slope(logits: &[Vec<f64>], labels: &[usize], beta: f64) -> (f64, f64) {
    let (mut g, mut h) = (0.0, 0.0);
    for (z, &y) in logits.iter().zip(labels) {
        let p = softmax(z, 1.0 / beta);
        let mean: f64 = p.iter().zip(z).map(|(p, z)| p * z).sum();
        let second: f64 = p.iter().zip(z).map(|(p, z)| p * z * z).sum();
        g += mean - z[y];
        h += (second - mean * mean).max(0.0);
    }
    let n = labels.len() as f64;
    (g / n, h / n)
}

/// The temperature T > 0 that minimises the mean NLL of softmax(z / T) on `logits` and
/// `labels`: the root of the NLL's derivative in β = 1/T, bracketed, then Newton's steps kept
/// inside the bracket (bisection where a step would leave it) to the last bit. Refused when no
/// finite T minimises it: every image right and separable (T → 0) or the logits no better
/// than uniform (T → ∞).
pub fn fit_temperature(logits: &[Vec<f64>], labels: &[usize]) -> Result<f64> {
    if labels.is_empty() {
        bail!("no predictions to fit a temperature on");
    }
    const LO: f64 = 1e-4;
    const HI: f64 = 1e4;
    if nll_slope(logits, labels, LO).0 >= 0.0 {
        bail!(
            "the NLL falls all the way to uniform probabilities (T → ∞): these logits do no \
             better than chance at any temperature"
        );
    }
    let (mut lo, mut hi) = (LO, 1.0);
    while nll_slope(logits, labels, hi).0 < 0.0 {
        lo = hi;
        hi *= 2.0;
        if hi > HI {
            bail!("the predictions are all right and separable: the temperature goes to 0");
        }
    }
    let mut beta = 0.5 * (lo + hi);
    for _ in 0..200 {
        let (g, h) = nll_slope(logits, labels, beta);
        if g == 0.0 {
            break;
        }
        if g < 0.0 {
            lo = beta;
        } else {
            hi = beta;
        }
        let newton = beta - g / h;
        let next = if h > 0.0 && newton > lo && newton < hi {
            newton
        } else {
            0.5 * (lo + hi)
        };
        if (next - beta).abs() <= 4.0 * f64::EPSILON * beta || hi - lo <= 4.0 * f64::EPSILON * hi {
            beta = next;
            break;
        }
        beta = next;
    }
    Ok(1.0 / beta)
}

/// The probability the measures look at (see the module header) and its outcome.
pub fn scored(probs: &[Vec<f64>], labels: &[usize]) -> (Vec<f64>, Vec<bool>) {
    probs
        .iter()
        .zip(labels)
        .map(|(p, &y)| {
            if p.len() == 2 {
                (p[0], y == 0)
            } else {
                let top = crate::metrics::argmax(p);
                (p[top], top == y)
            }
        })
        .unzip()
}

/// The ECE bin of `p` (already clipped) for edges `edges` (ascending, 0 first, 1 last):
/// the last edge ≤ p, the top edge belonging to the last bin.
fn bin_of(p: f64, edges: &[f64]) -> usize {
    let above = edges.partition_point(|&e| e <= p);
    above.saturating_sub(1).min(edges.len() - 2)
}

fn clip(p: f64) -> f64 {
    p.clamp(f64::EPSILON, 1.0 - f64::EPSILON)
}

/// Σ_b (n_b / n) |frequency_b − mean probability_b| over the bins `edges` make.
fn binned_error(p: &[f64], hit: &[bool], edges: &[f64]) -> f64 {
    let nb = edges.len() - 1;
    let (mut count, mut conf, mut acc) = (vec![0usize; nb], vec![0.0; nb], vec![0.0; nb]);
    for (&p, &h) in p.iter().zip(hit) {
        let p = clip(p);
        let b = bin_of(p, edges);
        count[b] += 1;
        conf[b] += p;
        acc[b] += h as u8 as f64;
    }
    let n = p.len().max(1) as f64;
    (0..nb)
        .filter(|&b| count[b] > 0)
        .map(|b| {
            let c = count[b] as f64;
            c / n * (acc[b] / c - conf[b] / c).abs()
        })
        .sum()
}

/// The equal-width edges `j · (1/15)`, the last exactly 1.
pub fn equal_width_edges() -> Vec<f64> {
    let step = 1.0 / BINS as f64;
    let mut e: Vec<f64> = (0..=BINS).map(|j| j as f64 * step).collect();
    e[BINS] = 1.0;
    e
}

/// Equal-mass edges: the j/15 quantiles of the (clipped) probabilities, outer edges 0 and 1.
fn equal_mass_edges(p: &[f64]) -> Vec<f64> {
    let mut s: Vec<f64> = p.iter().map(|&v| clip(v)).collect();
    s.sort_by(f64::total_cmp);
    let step = 1.0 / BINS as f64;
    let mut e: Vec<f64> = (0..=BINS)
        .map(|j| {
            let q = j as f64 * step;
            let h = (s.len() - 1) as f64 * q;
            let i = (h.floor() as usize).min(s.len() - 1);
            let g = h - i as f64;
            if i + 1 >= s.len() {
                s[s.len() - 1]
            } else {
                (1.0 - g) * s[i] + g * s[i + 1]
            }
        })
        .collect();
    e[0] = 0.0;
    e[BINS] = 1.0;
    e
}

/// Expected calibration error (15 equal-width bins) of probabilities `p` and outcomes `hit`.
pub fn ece(p: &[f64], hit: &[bool]) -> f64 {
    binned_error(p, hit, &equal_width_edges())
}

/// Adaptive ECE (15 equal-mass bins).
pub fn adaptive_ece(p: &[f64], hit: &[bool]) -> f64 {
    if p.is_empty() {
        return 0.0;
    }
    binned_error(p, hit, &equal_mass_edges(p))
}

/// One reliability-diagram bin: images, mean probability, observed frequency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bin {
    pub low: f64,
    pub high: f64,
    pub count: usize,
    pub confidence: f64,
    pub frequency: f64,
}

/// The 15 equal-width bins of a reliability diagram.
pub fn reliability(p: &[f64], hit: &[bool]) -> Vec<Bin> {
    let edges = equal_width_edges();
    let mut bins: Vec<Bin> = edges
        .windows(2)
        .map(|w| Bin {
            low: w[0],
            high: w[1],
            count: 0,
            confidence: 0.0,
            frequency: 0.0,
        })
        .collect();
    for (&p, &h) in p.iter().zip(hit) {
        let p = clip(p);
        let b = &mut bins[bin_of(p, &edges)];
        b.count += 1;
        b.confidence += p;
        b.frequency += h as u8 as f64;
    }
    for b in &mut bins {
        if b.count > 0 {
            b.confidence /= b.count as f64;
            b.frequency /= b.count as f64;
        }
    }
    bins
}

/// The Brier score, as scikit-learn's `brier_score_loss`: two classes, the mean squared error
/// of the positive class's probability; more, the mean over images of the sum over classes.
pub fn brier(probs: &[Vec<f64>], labels: &[usize]) -> f64 {
    let s: f64 = probs
        .iter()
        .zip(labels)
        .map(|(p, &y)| {
            if p.len() == 2 {
                (p[0] - (y == 0) as u8 as f64).powi(2)
            } else {
                p.iter()
                    .enumerate()
                    .map(|(k, &v)| (v - (k == y) as u8 as f64).powi(2))
                    .sum()
            }
        })
        .sum();
    s / labels.len().max(1) as f64
}

/// The logistic recalibration `logit P(hit) = intercept + slope · logit(p)`, by Newton's
/// method with step halving (each step must raise the likelihood); `None` when the outcomes
/// are separable by p (no finite fit).
pub fn slope_intercept(p: &[f64], hit: &[bool]) -> Option<(f64, f64)> {
    let x: Vec<f64> = p
        .iter()
        .map(|&v| {
            let v = clip(v);
            (v / (1.0 - v)).ln()
        })
        .collect();
    let y: Vec<f64> = hit.iter().map(|&h| h as u8 as f64).collect();
    let loglik = |a: f64, b: f64| -> f64 {
        x.iter()
            .zip(&y)
            .map(|(&xi, &yi)| {
                let eta = a + b * xi;
                // log σ(η) = −log(1 + e^−η), written to stay finite for large |η|.
                let log1pexp = |t: f64| {
                    if t > 0.0 {
                        t + (-t).exp().ln_1p()
                    } else {
                        t.exp().ln_1p()
                    }
                };
                -(yi * log1pexp(-eta) + (1.0 - yi) * log1pexp(eta))
            })
            .sum()
    };
    let (mut a, mut b) = (0.0f64, 0.0f64);
    let mut ll = loglik(a, b);
    for _ in 0..200 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (&xi, &yi) in x.iter().zip(&y) {
            let mu = 1.0 / (1.0 + (-(a + b * xi)).exp());
            let w = mu * (1.0 - mu);
            ga += yi - mu;
            gb += (yi - mu) * xi;
            haa += w;
            hab += w * xi;
            hbb += w * xi * xi;
        }
        let det = haa * hbb - hab * hab;
        if !(det.is_finite() && det > 0.0) {
            return None;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        let mut step = 1.0;
        let (mut na, mut nb, mut nll) = (a + da, b + db, loglik(a + da, b + db));
        while matches!(nll.partial_cmp(&ll), None | Some(std::cmp::Ordering::Less)) && step > 1e-10
        {
            step *= 0.5;
            na = a + step * da;
            nb = b + step * db;
            nll = loglik(na, nb);
        }
        let converged =
            (na - a).abs() < 1e-12 * (1.0 + a.abs()) && (nb - b).abs() < 1e-12 * (1.0 + b.abs());
        (a, b, ll) = (na, nb, nll);
        if !(a.is_finite() && b.is_finite()) || a.abs() > 1e6 || b.abs() > 1e6 {
            return None;
        }
        if converged {
            return Some((b, a));
        }
    }
    None
}

/// Spiegelhalter's z statistic of probabilities `p` and outcomes `hit`.
pub fn spiegelhalter_z(p: &[f64], hit: &[bool]) -> f64 {
    let (mut num, mut var) = (0.0, 0.0);
    for (&p, &h) in p.iter().zip(hit) {
        let y = h as u8 as f64;
        num += (y - p) * (1.0 - 2.0 * p);
        var += (1.0 - 2.0 * p).powi(2) * p * (1.0 - p);
    }
    if var > 0.0 {
        num / var.sqrt()
    } else {
        0.0
    }
}

/// The mean ECE a perfectly calibrated model with probabilities `p` would show on this many
/// images (outcomes drawn as Bernoulli(p), seeded).
pub fn ece_noise_floor(p: &[f64]) -> f64 {
    let edges = equal_width_edges();
    let bins: Vec<usize> = p.iter().map(|&v| bin_of(clip(v), &edges)).collect();
    let (mut count, mut conf) = ([0.0; BINS], [0.0; BINS]);
    for (&b, &v) in bins.iter().zip(p) {
        count[b] += 1.0;
        conf[b] += clip(v);
    }
    let n = p.len().max(1) as f64;
    let mut rng = crate::rng::SplitMix64::new(0);
    let mut total = 0.0;
    let draws = floor_draws(p.len());
    for _ in 0..draws {
        let mut hits = [0.0; BINS];
        for (&b, &v) in bins.iter().zip(p) {
            hits[b] += (rng.unit() < v) as u8 as f64;
        }
        // Σ_b (n_b / n) |hits_b / n_b − conf_b / n_b| = Σ_b |hits_b − conf_b| / n.
        total += (0..BINS)
            .filter(|&b| count[b] > 0.0)
            .map(|b| (hits[b] - conf[b]).abs())
            .sum::<f64>()
            / n;
    }
    total / draws as f64
}

/// Every calibration measure of one set of predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measures {
    pub ece: f64,
    /// The ECE a perfectly calibrated model would show here (see the module header).
    pub ece_noise_floor: f64,
    /// The patient-bootstrap 95 % percentile interval of the ECE.
    pub ece_interval: Option<[f64; 2]>,
    pub adaptive_ece: f64,
    pub brier: f64,
    pub nll: f64,
    /// `None` when the outcomes are separable (no finite logistic fit).
    pub slope: Option<f64>,
    pub intercept: Option<f64>,
    pub spiegelhalter_z: f64,
}

/// The measures of probabilities `probs` (rows sum to 1) for `labels`; with `groups` (the
/// images' patients) the ECE gets its bootstrap interval.
pub fn measures(
    probs: &[Vec<f64>],
    labels: &[usize],
    groups: Option<&crate::trust::intervals::Groups>,
) -> Measures {
    let (p, hit) = scored(probs, labels);
    let fit = slope_intercept(&p, &hit);
    let nll = probs
        .iter()
        .zip(labels)
        .map(|(p, &y)| -p[y].max(f64::MIN_POSITIVE).ln())
        .sum::<f64>()
        / labels.len().max(1) as f64;
    let ece_interval = groups.map(|groups| {
        use crate::trust::intervals as iv;
        let members = &groups.members;
        let edges = equal_width_edges();
        // Per image: its bin's count, probability and outcome, in 3 · BINS sums.
        let x: Vec<Vec<(usize, f64)>> = p
            .iter()
            .zip(&hit)
            .map(|(&v, &h)| {
                let b = bin_of(clip(v), &edges);
                vec![
                    (3 * b, 1.0),
                    (3 * b + 1, clip(v)),
                    (3 * b + 2, h as u8 as f64),
                ]
            })
            .collect();
        let of_sums = |s: &[f64]| -> f64 {
            let total: f64 = (0..BINS).map(|b| s[3 * b]).sum();
            (0..BINS)
                .filter(|&b| s[3 * b] > 0.0)
                .map(|b| {
                    let c = s[3 * b];
                    c / total * (s[3 * b + 2] / c - s[3 * b + 1] / c).abs()
                })
                .sum()
        };
        let stat = iv::SumStatistic::new(members, 3 * BINS, x, &of_sums);
        groups.bootstrap(stat).percentile
    });
    Measures {
        ece: ece(&p, &hit),
        ece_noise_floor: ece_noise_floor(&p),
        ece_interval,
        adaptive_ece: adaptive_ece(&p, &hit),
        brier: brier(probs, labels),
        nll,
        slope: fit.map(|f| f.0),
        intercept: fit.map(|f| f.1),
        spiegelhalter_z: spiegelhalter_z(&p, &hit),
    }
}
