//! Confidence intervals for the figures `eval` and `cv` report.
//!
//! - Proportions (accuracy, sensitivity, specificity, PPV, NPV): Wilson's score interval and
//!   the exact Clopper–Pearson interval, as statsmodels' `proportion_confint` (`wilson`, `beta`)
//!   writes them.
//! - ROC-AUC: DeLong, DeLong & Clarke-Pearson (1988) in the fast form of Sun & Xu (2014, IEEE
//!   Signal Processing Letters 21(11)): midranks instead of the O(mn) kernel matrix; also the
//!   paired test of two AUCs on the same images.
//! - Anything else (accuracy, macro-F1, AUC, ECE): a cluster bootstrap that resamples groups —
//!   the patient key the split uses — with replacement, not images, so that photos of one
//!   patient move together; percentile and BCa intervals as `scipy.stats.bootstrap` computes
//!   them from the same resamples (Efron & Tibshirani 1993, §14.3 and eq. 15.36; the
//!   acceleration from the leave-one-group-out jackknife).

use anyhow::{bail, Result};

use crate::data::loader::{default_threads, parallel_map};
use crate::metrics::midranks;
use crate::rng::SplitMix64;
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};
use statrs::function::beta::beta_reg;

/// The 95 % level every reported interval uses.
pub const LEVEL: f64 = 0.95;
/// Resamples of the cluster bootstrap.
pub const RESAMPLES: usize = 2000;
/// The bootstrap's seed: the same data give the same interval.
pub const SEED: u64 = 0;

/// A figure with its interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Estimate {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// How an interval of a proportion is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ProportionMethod {
    /// Wilson's score interval: close to nominal coverage, never outside [0, 1].
    #[default]
    Wilson,
    /// Clopper–Pearson: exact, at least nominal coverage (wider).
    ClopperPearson,
}

impl ProportionMethod {
    /// The name reports give.
    pub fn name(self) -> &'static str {
        match self {
            ProportionMethod::Wilson => "wilson",
            ProportionMethod::ClopperPearson => "clopper-pearson",
        }
    }

    /// `k` of `n` with its interval at `level` (`n` = 0: value 0, interval [0, 1]).
    pub fn estimate(self, k: usize, n: usize, level: f64) -> Estimate {
        let value = if n == 0 { 0.0 } else { k as f64 / n as f64 };
        let (low, high) = match (n, self) {
            (0, _) => (0.0, 1.0),
            (_, ProportionMethod::Wilson) => wilson(k, n, level),
            (_, ProportionMethod::ClopperPearson) => clopper_pearson(k, n, level),
        };
        Estimate { value, low, high }
    }
}

/// The standard normal distribution.
fn normal() -> Normal {
    // Mean 0 and sd 1 are valid parameters.
    Normal::standard()
}

/// Φ(x).
pub fn norm_cdf(x: f64) -> f64 {
    normal().cdf(x)
}

/// Φ⁻¹(p), ±∞ at 0 and 1.
pub fn norm_ppf(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    normal().inverse_cdf(p)
}

/// Wilson's score interval of `k` successes in `n > 0` trials at `level`.
pub fn wilson(k: usize, n: usize, level: f64) -> (f64, f64) {
    let z = norm_ppf(1.0 - (1.0 - level) / 2.0);
    let (q, nf) = (k as f64 / n as f64, n as f64);
    let z2 = z * z;
    let denom = 1.0 + z2 / nf;
    let center = (q + z2 / (2.0 * nf)) / denom;
    let dist = z * (q * (1.0 - q) / nf + z2 / (4.0 * nf * nf)).sqrt() / denom;
    // At k = 0 (k = n) the lower (upper) end is exactly 0 (1); the formula leaves a rounding
    // error there that would put the end on the wrong side of the estimate.
    let low = if k == 0 { 0.0 } else { center - dist };
    let high = if k == n { 1.0 } else { center + dist };
    (low, high)
}

/// The Clopper–Pearson interval of `k` successes in `n > 0` trials at `level`: the quantiles
/// α/2 of Beta(k, n − k + 1) and 1 − α/2 of Beta(k + 1, n − k).
pub fn clopper_pearson(k: usize, n: usize, level: f64) -> (f64, f64) {
    let a = (1.0 - level) / 2.0;
    let (kf, nf) = (k as f64, n as f64);
    let low = if k == 0 {
        0.0
    } else {
        beta_quantile(a, kf, nf - kf + 1.0)
    };
    let high = if k == n {
        1.0
    } else {
        beta_quantile(1.0 - a, kf + 1.0, nf - kf)
    };
    (low, high)
}

/// The `p` quantile of Beta(a, b), by bisection on the regularised incomplete beta function
/// to the last bit.
fn beta_quantile(p: f64, a: f64, b: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if beta_reg(a, b, mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// DeLong's estimate of an AUC and its variance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeLong {
    pub auc: f64,
    pub variance: f64,
}

/// The structural components of an AUC (Sun & Xu's V10 over positives, V01 over negatives)
/// for scores where higher means "positive"; `positive[i]` says which image is one.
fn components(scores: &[f64], positive: &[bool]) -> Result<(Vec<f64>, Vec<f64>)> {
    let x: Vec<f64> = scores
        .iter()
        .zip(positive)
        .filter(|(_, &p)| p)
        .map(|(s, _)| *s)
        .collect();
    let y: Vec<f64> = scores
        .iter()
        .zip(positive)
        .filter(|(_, &p)| !p)
        .map(|(s, _)| *s)
        .collect();
    let (m, n) = (x.len(), y.len());
    if m < 2 || n < 2 {
        bail!("DeLong's variance needs two positives and two negatives (got {m} and {n})");
    }
    let z: Vec<f64> = x.iter().chain(&y).copied().collect();
    let (tx, ty, tz) = (midranks(&x), midranks(&y), midranks(&z));
    let v10 = (0..m).map(|i| (tz[i] - tx[i]) / n as f64).collect();
    let v01 = (0..n)
        .map(|j| 1.0 - (tz[m + j] - ty[j]) / m as f64)
        .collect();
    Ok((v10, v01))
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The sample covariance (divisor k − 1) of two equally long series.
fn cov(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (mean(a), mean(b));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - ma) * (y - mb))
        .sum::<f64>()
        / (a.len() - 1) as f64
}

/// DeLong's AUC and variance of `scores` (higher = positive) against `positive`.
pub fn delong(scores: &[f64], positive: &[bool]) -> Result<DeLong> {
    let (v10, v01) = components(scores, positive)?;
    let variance = cov(&v10, &v10) / v10.len() as f64 + cov(&v01, &v01) / v01.len() as f64;
    Ok(DeLong {
        auc: mean(&v10),
        variance,
    })
}

/// The AUC with DeLong's interval at `level` (normal, clipped to [0, 1]).
pub fn auc_interval(scores: &[f64], positive: &[bool], level: f64) -> Result<Estimate> {
    let d = delong(scores, positive)?;
    let half = norm_ppf(1.0 - (1.0 - level) / 2.0) * d.variance.sqrt();
    Ok(Estimate {
        value: d.auc,
        low: (d.auc - half).max(0.0),
        high: (d.auc + half).min(1.0),
    })
}

/// DeLong's paired test of two AUCs on the same images.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairedAuc {
    pub auc_a: f64,
    pub auc_b: f64,
    /// (AUC_b − AUC_a) / its standard error.
    pub z: f64,
    /// Two-sided.
    pub p_value: f64,
}

/// DeLong's test that two scorings `a` and `b` of the same images have the same AUC.
pub fn delong_paired(a: &[f64], b: &[f64], positive: &[bool]) -> Result<PairedAuc> {
    let (a10, a01) = components(a, positive)?;
    let (b10, b01) = components(b, positive)?;
    let (m, n) = (a10.len() as f64, a01.len() as f64);
    let var = (cov(&a10, &a10) + cov(&b10, &b10) - 2.0 * cov(&a10, &b10)) / m
        + (cov(&a01, &a01) + cov(&b01, &b01) - 2.0 * cov(&a01, &b01)) / n;
    let (auc_a, auc_b) = (mean(&a10), mean(&b10));
    let z = if var > 0.0 {
        (auc_b - auc_a) / var.sqrt()
    } else {
        0.0
    };
    Ok(PairedAuc {
        auc_a,
        auc_b,
        z,
        p_value: 2.0 * norm_cdf(-z.abs()),
    })
}

/// Bootstrap intervals of one statistic.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapInterval {
    /// The statistic on all images.
    pub value: f64,
    pub percentile: [f64; 2],
    pub bca: [f64; 2],
    /// Groups resampled (patients), and resamples drawn.
    pub groups: usize,
    pub resamples: usize,
}

/// The group resamples of a cluster bootstrap: `resamples` rows, each `groups` group indices
/// drawn uniformly with replacement (SplitMix64, one stream per resample from `seed`).
pub fn resample_groups(groups: usize, resamples: usize, seed: u64) -> Vec<Vec<usize>> {
    let rows: Vec<usize> = (0..resamples).collect();
    parallel_map(&rows, default_threads(), |&r| {
        // One stream per resample, so that threads draw the same resamples in any order.
        let mut rng = SplitMix64::new(seed ^ (r as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
        (0..groups)
            .map(|_| rng.below(groups as u64) as usize)
            .collect::<Vec<usize>>()
    })
    .into_iter()
    .map(Option::unwrap_or_default)
    .collect()
}

/// The groups (patients) of a set of images and the bootstrap's resamples of them, drawn once
/// for every statistic of those images.
#[derive(Debug, Clone, PartialEq)]
pub struct Groups {
    /// `members[g]`: the images of group g ([`group_members`]).
    pub members: Vec<Vec<usize>>,
    /// [`RESAMPLES`] resamples ([`resample_groups`] from [`SEED`]).
    pub resamples: Vec<Vec<usize>>,
}

impl Groups {
    /// The groups of images whose group keys are `keys`.
    pub fn of<K: Eq + std::hash::Hash>(keys: &[K]) -> Groups {
        let members = group_members(keys);
        let resamples = resample_groups(members.len(), RESAMPLES, SEED);
        Groups { members, resamples }
    }

    /// The bootstrap intervals of `statistic` at [`LEVEL`].
    pub fn bootstrap(&self, statistic: impl Statistic) -> BootstrapInterval {
        cluster_bootstrap(&self.members, &self.resamples, LEVEL, statistic)
    }
}

/// The images of each group: `members[g]` lists the images whose group is `g`, for group
/// keys `keys[i]` of each image (groups numbered in order of first appearance).
pub fn group_members<K: Eq + std::hash::Hash>(keys: &[K]) -> Vec<Vec<usize>> {
    let mut index: std::collections::HashMap<&K, usize> = std::collections::HashMap::new();
    let mut members: Vec<Vec<usize>> = vec![];
    for (i, k) in keys.iter().enumerate() {
        let g = *index.entry(k).or_insert_with(|| {
            members.push(vec![]);
            members.len() - 1
        });
        members[g].push(i);
    }
    members
}

/// The linear-interpolation quantile (NumPy's default, `scipy.stats.quantile`'s `linear`) of
/// sorted values.
fn quantile_sorted(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let h = (n - 1) as f64 * p;
    let j = (h.floor() as usize).min(n - 1);
    let g = h - j as f64;
    if j + 1 >= n {
        return sorted[n - 1];
    }
    (1.0 - g) * sorted[j] + g * sorted[j + 1]
}

/// A statistic of images with weights (how often each was drawn).
pub trait Statistic: Sync {
    /// The value with image weights `w` (all ones: the data as they are).
    fn weighted(&self, w: &[f64]) -> f64;

    /// The value of one resample: the groups `drawn` (with repeats) of `members`, over `n`
    /// images.
    fn resampled(&self, members: &[Vec<usize>], drawn: &[usize], n: usize) -> f64 {
        let mut count = vec![0u32; members.len()];
        for &k in drawn {
            count[k] += 1;
        }
        let mut w = vec![0.0; n];
        for (k, m) in members.iter().enumerate() {
            for &i in m {
                w[i] = count[k] as f64;
            }
        }
        self.weighted(&w)
    }

    /// The value without the images `left_out` (one group), the other `n` − those weighing 1.
    fn without(&self, left_out: &[usize], n: usize) -> f64 {
        let mut w = vec![1.0; n];
        for &i in left_out {
            w[i] = 0.0;
        }
        self.weighted(&w)
    }
}

impl<F: Fn(&[f64]) -> f64 + Sync> Statistic for F {
    fn weighted(&self, w: &[f64]) -> f64 {
        self(w)
    }
}

/// A function `f` of the weighted sum Σ_i w_i x_i of per-image vectors `x_i` (sparse:
/// `(coordinate, value)` pairs) of length `dim`: counts, confusion matrices, ECE bins. Each
/// group's sum is taken once, so that a resample adds the sums of the groups it drew and the
/// jackknife takes one group's sum off the total.
pub struct SumStatistic<'a> {
    dim: usize,
    x: Vec<Vec<(usize, f64)>>,
    f: &'a (dyn Fn(&[f64]) -> f64 + Sync),
    /// Each group's sum, sparse, one after the other: group g's entries are
    /// `entries[start[g]..start[g + 1]]`.
    start: Vec<usize>,
    entries: Vec<(u32, f64)>,
    total: Vec<f64>,
}

impl<'a> SumStatistic<'a> {
    /// The statistic `f` of the sums of `x` over the groups `members`.
    pub fn new(
        members: &[Vec<usize>],
        dim: usize,
        x: Vec<Vec<(usize, f64)>>,
        f: &'a (dyn Fn(&[f64]) -> f64 + Sync),
    ) -> Self {
        let mut total = vec![0.0; dim];
        let mut dense = vec![0.0; dim];
        let mut seen = vec![false; dim];
        let (mut start, mut entries) = (vec![0], vec![]);
        for m in members {
            let mut touched = vec![];
            for &i in m {
                for &(c, v) in &x[i] {
                    if !seen[c] {
                        seen[c] = true;
                        touched.push(c);
                    }
                    dense[c] += v;
                }
            }
            touched.sort_unstable();
            for &c in &touched {
                entries.push((c as u32, dense[c]));
                total[c] += dense[c];
                dense[c] = 0.0;
                seen[c] = false;
            }
            start.push(entries.len());
        }
        SumStatistic {
            dim,
            x,
            f,
            start,
            entries,
            total,
        }
    }
}

impl Statistic for SumStatistic<'_> {
    fn weighted(&self, w: &[f64]) -> f64 {
        let mut sum = vec![0.0; self.dim];
        for (xi, &wi) in self.x.iter().zip(w) {
            if wi != 0.0 {
                for &(c, v) in xi {
                    sum[c] += wi * v;
                }
            }
        }
        (self.f)(&sum)
    }

    fn resampled(&self, _: &[Vec<usize>], drawn: &[usize], _: usize) -> f64 {
        let mut sum = vec![0.0; self.dim];
        for &k in drawn {
            for &(c, v) in &self.entries[self.start[k]..self.start[k + 1]] {
                sum[c as usize] += v;
            }
        }
        (self.f)(&sum)
    }

    fn without(&self, left_out: &[usize], _: usize) -> f64 {
        let mut sum = self.total.clone();
        for &i in left_out {
            for &(c, v) in &self.x[i] {
                sum[c] -= v;
            }
        }
        (self.f)(&sum)
    }
}

/// The ROC-AUC as a bootstrap statistic: weighted Mann–Whitney by one sweep of the images in
/// score order, and its jackknife from each image's share of the pairs.
pub struct AucStatistic<'a> {
    scores: &'a [f64],
    positive: &'a [bool],
    order: Vec<usize>,
    /// For a positive image: the negatives below it plus half the tied ones; for a negative:
    /// the positives above it plus half the tied ones.
    pairs: Vec<f64>,
    u: f64,
    npos: f64,
    nneg: f64,
}

impl<'a> AucStatistic<'a> {
    /// The AUC of `scores` (higher = positive) against `positive`.
    pub fn new(scores: &'a [f64], positive: &'a [bool]) -> Self {
        let order = score_order(scores);
        let n = scores.len();
        let mut pairs = vec![0.0; n];
        let npos = positive.iter().filter(|&&p| p).count() as f64;
        let nneg = n as f64 - npos;
        let (mut neg_below, mut pos_below) = (0.0, 0.0);
        let mut i = 0;
        while i < n {
            let mut j = i;
            while j < n && scores[order[j]] == scores[order[i]] {
                j += 1;
            }
            let pt = order[i..j].iter().filter(|&&k| positive[k]).count() as f64;
            let nt = (j - i) as f64 - pt;
            for &k in &order[i..j] {
                pairs[k] = if positive[k] {
                    neg_below + 0.5 * nt
                } else {
                    (npos - pos_below - pt) + 0.5 * pt
                };
            }
            neg_below += nt;
            pos_below += pt;
            i = j;
        }
        let u = (0..n).filter(|&k| positive[k]).map(|k| pairs[k]).sum();
        AucStatistic {
            scores,
            positive,
            order,
            pairs,
            u,
            npos,
            nneg,
        }
    }
}

impl Statistic for AucStatistic<'_> {
    fn weighted(&self, w: &[f64]) -> f64 {
        weighted_auc(self.scores, self.positive, &self.order, w)
    }

    fn without(&self, left_out: &[usize], _: usize) -> f64 {
        // U without the group: its positives' and its negatives' pairs off, the pairs inside
        // the group (taken off twice) back on.
        let mut u = self.u;
        let (mut p, mut q) = (0.0, 0.0);
        for &i in left_out {
            u -= self.pairs[i];
            if self.positive[i] {
                p += 1.0;
            } else {
                q += 1.0;
            }
        }
        for &i in left_out {
            for &j in left_out {
                if self.positive[i] && !self.positive[j] {
                    u += match self.scores[i].total_cmp(&self.scores[j]) {
                        std::cmp::Ordering::Greater => 1.0,
                        std::cmp::Ordering::Equal => 0.5,
                        std::cmp::Ordering::Less => 0.0,
                    };
                }
            }
        }
        let (wp, wn) = (self.npos - p, self.nneg - q);
        if wp == 0.0 || wn == 0.0 {
            0.5
        } else {
            u / (wp * wn)
        }
    }
}

/// Percentile and BCa intervals at `level` of `statistic` from the group resamples
/// `resamples` of `members` (see [`group_members`]). The statistic is given each image's
/// weight — how many times the resample drew its group — which is the statistic of the images
/// taken with repeats without building that list; the jackknife leaves one group out.
pub fn cluster_bootstrap(
    members: &[Vec<usize>],
    resamples: &[Vec<usize>],
    level: f64,
    statistic: impl Statistic,
) -> BootstrapInterval {
    let n = members.iter().flatten().map(|&i| i + 1).max().unwrap_or(0);
    let g = members.len();
    let value = statistic.weighted(&vec![1.0; n]);
    let threads = default_threads();
    let rows: Vec<usize> = (0..resamples.len()).collect();
    let theta: Vec<f64> = parallel_map(&rows, threads, |&r| {
        statistic.resampled(members, &resamples[r], n)
    })
    .into_iter()
    .map(|v| v.unwrap_or(f64::NAN))
    .collect();
    let jack: Vec<f64> = parallel_map(members, threads, |m| statistic.without(m, n))
        .into_iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect();
    let mut theta = theta;
    let b = theta.len() as f64;
    let below = theta.iter().filter(|&&t| t < value).count() as f64;
    let at_or_below = theta.iter().filter(|&&t| t <= value).count() as f64;
    let z0 = norm_ppf((below + at_or_below) / (2.0 * b));
    let jm = mean(&jack);
    let gf = g as f64;
    let u: Vec<f64> = jack.iter().map(|t| (gf - 1.0) * (jm - t)).collect();
    let num = u.iter().map(|x| x.powi(3)).sum::<f64>() / gf.powi(3);
    let den = u.iter().map(|x| x.powi(2)).sum::<f64>() / gf.powi(2);
    // All jackknife values equal (e.g. every image right): no acceleration, where scipy's
    // 0/0 would make the BCa bounds NaN.
    let a = if den > 0.0 {
        num / den.powf(1.5) / 6.0
    } else {
        0.0
    };
    let alpha = (1.0 - level) / 2.0;
    let za = norm_ppf(alpha);
    let adjusted = |zq: f64| {
        let num = z0 + zq;
        norm_cdf(z0 + num / (1.0 - a * num))
    };
    theta.sort_by(f64::total_cmp);
    let q = |p: f64| {
        if p.is_nan() {
            f64::NAN
        } else {
            quantile_sorted(&theta, p)
        }
    };
    BootstrapInterval {
        value,
        percentile: [q(alpha), q(1.0 - alpha)],
        bca: [q(adjusted(za)), q(adjusted(-za))],
        groups: g,
        resamples: resamples.len(),
    }
}

/// The ROC-AUC of `scores` (higher = positive) with image weights `w`, from the images'
/// order by score `order` (ascending; [`score_order`]): the weighted Mann–Whitney U, ties one
/// half; 0.5 when a side weighs nothing.
pub fn weighted_auc(scores: &[f64], positive: &[bool], order: &[usize], w: &[f64]) -> f64 {
    let (mut u, mut neg_below, mut wp, mut wn) = (0.0, 0.0, 0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        let (mut pt, mut nt) = (0.0, 0.0);
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            let k = order[j];
            if positive[k] {
                pt += w[k];
            } else {
                nt += w[k];
            }
            j += 1;
        }
        u += pt * (neg_below + 0.5 * nt);
        neg_below += nt;
        wp += pt;
        wn += nt;
        i = j;
    }
    if wp == 0.0 || wn == 0.0 {
        0.5
    } else {
        u / (wp * wn)
    }
}

/// The images in ascending order of `scores`.
pub fn score_order(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_holds_its_estimate_and_ends_at_exactly_0_and_1_for_none_and_all() {
        for n in 1..=300usize {
            for k in 0..=n {
                let (low, high) = wilson(k, n, 0.95);
                let q = k as f64 / n as f64;
                assert!(low <= q && q <= high, "{k}/{n}: {low} {q} {high}");
            }
            let (low, high) = wilson(0, n, 0.95);
            assert_eq!(low, 0.0, "0/{n}");
            assert!(high > 0.0 && high < 1.0, "0/{n}: {high}");
            let (low, high) = wilson(n, n, 0.95);
            assert_eq!(high, 1.0, "{n}/{n}");
            assert!(low > 0.0 && low < 1.0, "{n}/{n}: {low}");
        }
    }
}
