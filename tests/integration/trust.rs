//! Calibration, intervals, operating point and conformal sets against the references people
//! use for them (scripts/trust_reference.py: scipy, scikit-learn, statsmodels, netcal, MAPIE,
//! crepes, and a DeLong written from the paper's kernel), and conformal coverage against the
//! law split conformal predicts.

use crate::common;

use std::sync::OnceLock;

use inception::metrics::evaluate;
use inception::trust::calibration::{self, equal_width_edges, reliability};
use inception::trust::conformal::{self, Conformal, ScoreKind};
use inception::trust::intervals::{self, ProportionMethod};
use inception::trust::operating;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

/// Seeded logits of `n` images of `k` classes whose true class gets a boost `signal`, with
/// labels; scaled by `scale` so that the raw softmax is over-confident.
fn logits(n: usize, k: usize, signal: f64, scale: f64, seed: u64) -> (Vec<Vec<f64>>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut z = vec![];
    let mut y = vec![];
    for _ in 0..n {
        let label = rng.random_range(0..k);
        let row: Vec<f64> = (0..k)
            .map(|c| {
                let g: f64 = (0..4).map(|_| rng.random::<f64>() - 0.5).sum::<f64>() * 1.7;
                scale * (g + if c == label { signal } else { 0.0 })
            })
            .collect();
        z.push(row);
        y.push(label);
    }
    (z, y)
}

fn probs(z: &[Vec<f64>], t: f64) -> Vec<Vec<f64>> {
    inception::trust::softmax_rows(z, t)
}

fn names(k: usize) -> Vec<String> {
    (0..k).map(|c| format!("c{c}")).collect()
}

/// Random probability rows (Dirichlet(1, …, 1) by normalised exponentials).
fn dirichlet(n: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<f64>> {
    (0..n)
        .map(|_| {
            let e: Vec<f64> = (0..k).map(|_| -rng.random::<f64>().ln()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        })
        .collect()
}

/// Everything the references are asked about, computed once per test binary.
struct Cases {
    input: Value,
    reference: Value,
}

fn cases() -> &'static Cases {
    static CASES: OnceLock<Cases> = OnceLock::new();
    CASES.get_or_init(|| {
        let (z2, y2) = logits(240, 2, 1.2, 3.0, 1);
        let (z3, y3) = logits(300, 3, 1.5, 2.5, 2);
        let t2 = calibration::fit_temperature(&z2, &y2).unwrap();
        let t3 = calibration::fit_temperature(&z3, &y3).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let members: Vec<Vec<usize>> = {
            let mut m = vec![];
            let mut i = 0;
            while i < 150 {
                let size = rng.random_range(1..4usize).min(150 - i);
                m.push((i..i + size).collect());
                i += size;
            }
            m
        };
        let right: Vec<bool> = (0..150).map(|_| rng.random::<f64>() < 0.7).collect();
        let resamples = intervals::resample_groups(members.len(), 2000, 7);
        let delong_pos: Vec<bool> = (0..80).map(|_| rng.random::<f64>() < 0.4).collect();
        // Rounded scores: ties, which the midranks must count one half.
        let a: Vec<f64> = delong_pos
            .iter()
            .map(|&p| ((rng.random::<f64>() + if p { 0.3 } else { 0.0 }) * 10.0).round() / 10.0)
            .collect();
        let b: Vec<f64> = delong_pos
            .iter()
            .map(|&p| rng.random::<f64>() + if p { 0.5 } else { 0.0 })
            .collect();
        let edge = equal_width_edges();
        let on_edges: Vec<f64> = vec![0.0, edge[1], edge[2], edge[3], edge[7], edge[14], 1.0, 0.5];
        let hits: Vec<bool> = vec![false, true, true, false, true, true, true, false];
        let conf2_cal = dirichlet(300, 2, &mut rng);
        let conf2_y: Vec<usize> = conf2_cal
            .iter()
            .map(|p| (rng.random::<f64>() >= p[0]) as usize)
            .collect();
        let conf3_cal = dirichlet(400, 3, &mut rng);
        let conf3_y: Vec<usize> = (0..400).map(|_| rng.random_range(0..3)).collect();
        let input = json!({
            "calibration": {"logits": z2, "labels": y2, "temperatures": [1.0, t2]},
            "calibration3": {"logits": z3, "labels": y3, "temperatures": [1.0, t3]},
            "edges": {"p": on_edges, "hit": hits.iter().map(|&h| h as u8).collect::<Vec<_>>()},
            "proportions": {"counts": [[0, 10], [3, 10], [10, 10], [57, 183], [1, 1], [999, 1000]]},
            "delong": {"a": a, "b": b, "positive": delong_pos},
            "bootstrap": {"members": members, "right": right.iter().map(|&r| r as u8).collect::<Vec<_>>(), "resamples": resamples},
            "agreement": {"truth": (0..120).map(|_| rng.random_range(0..2)).collect::<Vec<usize>>(),
                          "pred": (0..120).map(|_| rng.random_range(0..2)).collect::<Vec<usize>>()},
            "agreement3": {"truth": (0..120).map(|_| rng.random_range(0..3)).collect::<Vec<usize>>(),
                           "pred": (0..120).map(|_| rng.random_range(0..3)).collect::<Vec<usize>>()},
            "conformal": {"cal_probs": conf2_cal, "cal_labels": conf2_y,
                          "test_probs": dirichlet(100, 2, &mut rng), "alpha": 0.1},
            "conformal3": {"cal_probs": conf3_cal, "cal_labels": conf3_y,
                           "test_probs": dirichlet(100, 3, &mut rng), "alpha": 0.2},
        });
        let dir = tempfile::tempdir().unwrap();
        let (inp, out) = (dir.path().join("cases.json"), dir.path().join("ref.json"));
        std::fs::write(&inp, serde_json::to_vec(&input).unwrap()).unwrap();
        let run = common::python_stats()
            .arg(common::repo().join("scripts/trust_reference.py"))
            .arg(&inp)
            .arg(&out)
            .output()
            .expect("running scripts/trust_reference.py");
        assert!(
            run.status.success(),
            "scripts/trust_reference.py failed (are the test deps installed? `make deps`):\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let reference = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        Cases { input, reference }
    })
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn vec_f(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(f).collect()
}

fn rows<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap()
}

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!(
        (a - b).abs() <= tol * b.abs().max(1.0),
        "{what}: tool {a}, reference {b} (|Δ| = {:e})",
        (a - b).abs()
    );
}

fn check_calibration(case: &str) {
    let c = cases();
    let input = &c.input[case];
    let z: Vec<Vec<f64>> = rows(&input["logits"]);
    let y: Vec<usize> = rows(&input["labels"]);
    let r = &c.reference[case];
    let t = calibration::fit_temperature(&z, &y).unwrap();
    let rel = (t - f(&r["temperature"])).abs() / f(&r["temperature"]);
    assert!(
        rel < 1e-5,
        "{case}: temperature {t} vs scipy's {}",
        r["temperature"]
    );
    assert!(
        t > 1.2,
        "{case}: the logits were made over-confident, T = {t}"
    );
    for at in r["at"].as_array().unwrap() {
        let tt = f(&at["t"]);
        let p = probs(&z, tt);
        let m = calibration::measures(&p, &y, None);
        close(
            m.ece,
            f(&at["ece"]),
            1e-12,
            &format!("{case} T={tt} ECE (netcal)"),
        );
        close(
            m.adaptive_ece,
            f(&at["adaptive_ece"]),
            1e-12,
            &format!("{case} T={tt} adaptive ECE (netcal)"),
        );
        close(
            m.brier,
            f(&at["brier"]),
            1e-12,
            &format!("{case} T={tt} Brier (scikit-learn)"),
        );
        close(
            m.nll,
            f(&at["nll"]),
            1e-12,
            &format!("{case} T={tt} log loss (scikit-learn)"),
        );
        close(
            m.slope.unwrap(),
            f(&at["slope"]),
            1e-6,
            &format!("{case} T={tt} slope (statsmodels)"),
        );
        close(
            m.intercept.unwrap(),
            f(&at["intercept"]),
            1e-6,
            &format!("{case} T={tt} intercept (statsmodels)"),
        );
    }
    // The fitted temperature lowers the NLL and brings the slope towards 1.
    let (before, after) = (
        calibration::measures(&probs(&z, 1.0), &y, None),
        calibration::measures(&probs(&z, t), &y, None),
    );
    assert!(after.nll < before.nll);
    assert!((after.slope.unwrap() - 1.0).abs() < (before.slope.unwrap() - 1.0).abs());
}

#[test]
fn temperature_ece_brier_nll_slope_and_intercept_equal_scipy_netcal_sklearn_and_statsmodels_for_two_classes(
) {
    check_calibration("calibration");
}

#[test]
fn the_same_measures_equal_the_references_for_three_classes_with_the_top_label() {
    check_calibration("calibration3");
}

#[test]
fn probabilities_exactly_on_bin_edges_fall_in_the_bin_above_as_in_netcal() {
    let c = cases();
    let p: Vec<f64> = rows(&c.input["edges"]["p"]);
    let hit: Vec<bool> = c.input["edges"]["hit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64() == Some(1))
        .collect();
    close(
        calibration::ece(&p, &hit),
        f(&c.reference["edges"]),
        1e-12,
        "ECE on bin edges (netcal)",
    );
    let bins = reliability(&p, &hit);
    let counts: Vec<usize> = bins.iter().map(|b| b.count).collect();
    // 0 → bin 0; 1/15 → bin 1; 2/15 → bin 2; 3/15 → bin 3; 7/15 and 0.5 → bin 7;
    // 14/15 → bin 14; 1 → bin 14 (the last bin holds its top edge).
    assert_eq!(counts, vec![1, 1, 1, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 2]);
}

#[test]
fn wilson_and_clopper_pearson_bounds_equal_statsmodels() {
    let c = cases();
    let counts: Vec<(usize, usize)> = rows(&c.input["proportions"]["counts"]);
    for ((k, n), r) in counts
        .iter()
        .zip(c.reference["proportions"].as_array().unwrap())
    {
        let w = intervals::wilson(*k, *n, 0.95);
        let b = intervals::clopper_pearson(*k, *n, 0.95);
        let (rw, rb) = (vec_f(&r["wilson"]), vec_f(&r["beta"]));
        for (tool, refv, what) in [
            (w.0, rw[0], "wilson low"),
            (w.1, rw[1], "wilson high"),
            (b.0, rb[0], "beta low"),
            (b.1, rb[1], "beta high"),
        ] {
            assert!(
                (tool - refv).abs() < 1e-10,
                "{k}/{n} {what}: {tool} vs statsmodels {refv}"
            );
        }
    }
}

#[test]
fn delong_auc_variance_and_paired_test_equal_the_kernel_form_written_in_numpy() {
    let c = cases();
    let input = &c.input["delong"];
    let a: Vec<f64> = rows(&input["a"]);
    let b: Vec<f64> = rows(&input["b"]);
    let pos: Vec<bool> = rows(&input["positive"]);
    let r = &c.reference["delong"];
    let d = intervals::delong(&a, &pos).unwrap();
    close(d.auc, f(&r["auc"]), 1e-12, "AUC");
    assert!(
        (d.variance - f(&r["variance"])).abs() / f(&r["variance"]) < 1e-6,
        "variance {} vs {}",
        d.variance,
        r["variance"]
    );
    let labels: Vec<usize> = pos.iter().map(|&p| if p { 0 } else { 1 }).collect();
    close(
        d.auc,
        inception::metrics::roc_auc(&a, &labels),
        1e-12,
        "AUC vs Mann–Whitney",
    );
    let paired = intervals::delong_paired(&a, &b, &pos).unwrap();
    close(paired.auc_b, f(&r["auc_b"]), 1e-12, "AUC b");
    assert!(
        (paired.z - f(&r["z"])).abs() / f(&r["z"]).abs() < 1e-6,
        "z {} vs {}",
        paired.z,
        r["z"]
    );
    assert!(
        (paired.p_value - f(&r["p"])).abs() < 1e-9,
        "p {} vs {}",
        paired.p_value,
        r["p"]
    );
    // One positive: no variance to estimate.
    let e = intervals::delong(&[0.9, 0.2, 0.3], &[true, false, false]).unwrap_err();
    assert!(
        e.to_string()
            .contains("two positives and two negatives (got 1 and 2)"),
        "{e}"
    );
}

#[test]
fn the_cluster_bootstrap_equals_scipys_percentile_and_bca_on_the_same_resampled_patients() {
    let c = cases();
    let input = &c.input["bootstrap"];
    let members: Vec<Vec<usize>> = rows(&input["members"]);
    let right: Vec<u8> = rows(&input["right"]);
    let resamples: Vec<Vec<usize>> = rows(&input["resamples"]);
    // The accuracy of the images drawn, each weighted by how often its patient was drawn.
    let acc = |w: &[f64]| {
        let hit: f64 = (0..right.len())
            .filter(|&i| right[i] == 1)
            .map(|i| w[i])
            .sum();
        hit / w.iter().sum::<f64>()
    };
    let b = intervals::cluster_bootstrap(&members, &resamples, 0.95, acc);
    let r = &c.reference["bootstrap"];
    let (p, bca) = (vec_f(&r["percentile"]), vec_f(&r["bca"]));
    for i in 0..2 {
        close(b.percentile[i], p[i], 1e-12, "percentile bound");
        // BCa: its acceleration and bias correction move the quantile with rounding.
        close(b.bca[i], bca[i], 1e-9, "BCa bound");
    }
    assert!(b.percentile[0] < b.value && b.value < b.percentile[1]);
}

#[test]
fn resampling_patients_widens_the_interval_when_a_patients_photos_agree() {
    // 60 patients of 3 photos each, all of a patient's photos right or all wrong: the
    // patient-cluster bootstrap's interval is wider than the one that treats the 180 photos
    // as independent, by about √3 (the design effect of perfectly correlated clusters).
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let patient_right: Vec<bool> = (0..60).map(|_| rng.random::<f64>() < 0.7).collect();
    let right: Vec<bool> = (0..180).map(|i| patient_right[i / 3]).collect();
    let acc = |w: &[f64]| {
        let hit: f64 = (0..right.len()).filter(|&i| right[i]).map(|i| w[i]).sum();
        hit / w.iter().sum::<f64>()
    };
    let clusters: Vec<Vec<usize>> = (0..60).map(|p| vec![3 * p, 3 * p + 1, 3 * p + 2]).collect();
    let singles: Vec<Vec<usize>> = (0..180).map(|i| vec![i]).collect();
    let width = |groups: &[Vec<usize>]| {
        let rs = intervals::resample_groups(groups.len(), 2000, 7);
        let b = intervals::cluster_bootstrap(groups, &rs, 0.95, acc);
        b.percentile[1] - b.percentile[0]
    };
    let ratio = width(&clusters) / width(&singles);
    assert!(
        (1.4..2.1).contains(&ratio),
        "cluster / image interval width {ratio}"
    );
}

#[test]
fn the_fast_sum_and_auc_statistics_equal_the_plain_weighted_ones_in_every_resample() {
    // Their own resample and jackknife paths (group sums; the AUC's pair shares) against the
    // generic path that weighs every image: the same percentile and BCa bounds.
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let n = 120;
    let mut members = vec![];
    let mut i = 0;
    while i < n {
        let size = rng.random_range(1..4usize).min(n - i);
        members.push((i..i + size).collect::<Vec<usize>>());
        i += size;
    }
    let right: Vec<bool> = (0..n).map(|_| rng.random::<f64>() < 0.6).collect();
    let positive: Vec<bool> = (0..n).map(|_| rng.random::<f64>() < 0.4).collect();
    let scores: Vec<f64> = positive
        .iter()
        .map(|&p| ((rng.random::<f64>() + if p { 0.3 } else { 0.0 }) * 10.0).round() / 10.0)
        .collect();
    let rs = intervals::resample_groups(members.len(), 500, 3);
    let x: Vec<Vec<(usize, f64)>> = right
        .iter()
        .map(|&r| vec![(0, r as u8 as f64), (1, 1.0)])
        .collect();
    let ratio = |s: &[f64]| s[0] / s[1];
    let fast = intervals::cluster_bootstrap(
        &members,
        &rs,
        0.95,
        intervals::SumStatistic::new(&members, 2, x, &ratio),
    );
    let plain = intervals::cluster_bootstrap(&members, &rs, 0.95, |w: &[f64]| {
        let hit: f64 = (0..n).filter(|&i| right[i]).map(|i| w[i]).sum();
        hit / w.iter().sum::<f64>()
    });
    let order = intervals::score_order(&scores);
    let fast_auc = intervals::cluster_bootstrap(
        &members,
        &rs,
        0.95,
        intervals::AucStatistic::new(&scores, &positive),
    );
    let plain_auc = intervals::cluster_bootstrap(&members, &rs, 0.95, |w: &[f64]| {
        intervals::weighted_auc(&scores, &positive, &order, w)
    });
    for (f, p, what) in [(fast, plain, "accuracy"), (fast_auc, plain_auc, "AUC")] {
        close(f.value, p.value, 1e-12, what);
        for k in 0..2 {
            close(
                f.percentile[k],
                p.percentile[k],
                1e-12,
                &format!("{what} percentile"),
            );
            close(f.bca[k], p.bca[k], 1e-9, &format!("{what} BCa"));
        }
    }
}

#[test]
fn kappa_mcc_and_balanced_accuracy_equal_scikit_learns() {
    let c = cases();
    for (case, k) in [("agreement", 2), ("agreement3", 3)] {
        let truth: Vec<usize> = rows(&c.input[case]["truth"]);
        let pred: Vec<usize> = rows(&c.input[case]["pred"]);
        let p: Vec<Vec<f64>> = pred
            .iter()
            .map(|&q| {
                (0..k)
                    .map(|c| if c == q { 0.9 } else { 0.1 / (k - 1) as f64 })
                    .collect()
            })
            .collect();
        let e = evaluate(&names(k), &p, &truth);
        let r = &c.reference[case];
        close(e.cohen_kappa, f(&r["kappa"]), 1e-12, &format!("{case} κ"));
        close(e.mcc, f(&r["mcc"]), 1e-12, &format!("{case} MCC"));
        close(
            e.balanced_accuracy,
            f(&r["balanced_accuracy"]),
            1e-12,
            &format!("{case} balanced accuracy"),
        );
    }
}

#[test]
fn conformal_sets_equal_mapies_pooled_and_crepes_mondrian_sets() {
    let c = cases();
    for case in ["conformal", "conformal3"] {
        let input = &c.input[case];
        let cal: Vec<Vec<f64>> = rows(&input["cal_probs"]);
        let y: Vec<usize> = rows(&input["cal_labels"]);
        let test: Vec<Vec<f64>> = rows(&input["test_probs"]);
        let alpha = f(&input["alpha"]);
        let k = cal[0].len();
        let pooled = Conformal::fit(&cal, &y, &names(k), alpha, ScoreKind::Lac, false).unwrap();
        let mondrian = Conformal::fit(&cal, &y, &names(k), alpha, ScoreKind::Lac, true).unwrap();
        let want_pooled: Vec<Vec<usize>> = rows(&c.reference[case]["pooled"]);
        let want_mondrian: Vec<Vec<usize>> = rows(&c.reference[case]["mondrian"]);
        let got_pooled: Vec<Vec<usize>> = test.iter().map(|p| pooled.set(p)).collect();
        let got_mondrian: Vec<Vec<usize>> = test.iter().map(|p| mondrian.set(p)).collect();
        assert_eq!(got_pooled, want_pooled, "{case}: pooled LAC sets vs MAPIE");
        assert_eq!(
            got_mondrian, want_mondrian,
            "{case}: Mondrian sets vs crepes' p-values > α"
        );
        // crepes' own predict_set also keeps a p-value equal to α: never a smaller set.
        let crepes: Vec<Vec<usize>> = rows(&c.reference[case]["crepes_predict_set"]);
        for (mine, theirs) in got_mondrian.iter().zip(&crepes) {
            assert!(
                mine.iter().all(|y| theirs.contains(y)),
                "{mine:?} ⊄ {theirs:?}"
            );
        }
        // Not all alike: some singletons and some with more than one class.
        assert!(got_mondrian.iter().any(|s| s.len() == 1));
        assert!(got_mondrian.iter().any(|s| s.len() > 1));
    }
}

#[test]
fn the_conformal_rank_is_exact_integer_arithmetic_and_refuses_too_few_images() {
    // (19 + 1) · 0.9 = 18 exactly; floating point makes it 18.000000000000004 → 19.
    assert_eq!(conformal::rank(19, 0.1).unwrap(), 18);
    assert_eq!(conformal::rank(99, 0.05).unwrap(), 95);
    assert_eq!(conformal::rank(100, 0.1).unwrap(), 91);
    let e = conformal::rank(8, 0.1).unwrap_err().to_string();
    assert!(
        e.contains("8 calibration images are too few for alpha 0.1"),
        "{e}"
    );
    assert!(e.contains("at least 9"), "{e}");
    assert!(conformal::rank(100, 1.5).is_err());
    assert!(conformal::rank(100, 0.0).is_err());
    let few = vec![vec![0.7, 0.3]; 30];
    let labels: Vec<usize> = (0..30).map(|i| (i < 10) as usize).collect();
    let e = Conformal::fit(&few, &labels, &names(2), 0.1, ScoreKind::Lac, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("class \"c1\" has 10 calibration images"), "{e}");
    let e = Conformal::fit(&few, &labels, &names(2), 0.1, ScoreKind::Aps, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("more than two classes"), "{e}");
}

/// Beta-Binomial(m, a, b) mean and variance.
fn beta_binomial(m: f64, a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    (m * a / s, m * a * b * (s + m) / (s * s * (s + 1.0)))
}

#[test]
fn split_conformal_coverage_follows_the_beta_binomial_law_pooled_and_per_class() {
    let (alpha, n, m, trials) = (0.1, 60usize, 40usize, 3000usize);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    // One image per patient: exchangeable draws. Two classes, 40 % positive.
    let draw = |count: usize, rng: &mut ChaCha8Rng| -> (Vec<Vec<f64>>, Vec<usize>) {
        let mut p = vec![];
        let mut y = vec![];
        for _ in 0..count {
            let label = (rng.random::<f64>() >= 0.4) as usize;
            let s: f64 = rng.random::<f64>() * 0.6 + if label == 0 { 0.3 } else { 0.0 };
            p.push(vec![s, 1.0 - s]);
            y.push(label);
        }
        (p, y)
    };
    let mut pooled_counts = vec![];
    let mut class_cover = [vec![], vec![]];
    for _ in 0..trials {
        let (cp, cy) = draw(n, &mut rng);
        let (tp, ty) = draw(m, &mut rng);
        let pooled = Conformal::fit(&cp, &cy, &names(2), alpha, ScoreKind::Lac, false).unwrap();
        pooled_counts.push(
            tp.iter()
                .zip(&ty)
                .filter(|(p, &y)| pooled.set(p).contains(&y))
                .count() as f64,
        );
        // Class-conditional: coverage of each class on its own (n_c calibration images).
        if cy.iter().filter(|&&y| y == 0).count() >= 20
            && cy.iter().filter(|&&y| y == 1).count() >= 20
        {
            let mondrian =
                Conformal::fit(&cp, &cy, &names(2), alpha, ScoreKind::Lac, true).unwrap();
            for (c, cover) in class_cover.iter_mut().enumerate() {
                let idx: Vec<usize> = (0..m).filter(|&i| ty[i] == c).collect();
                let covered = idx
                    .iter()
                    .filter(|&&i| mondrian.set(&tp[i]).contains(&c))
                    .count();
                if !idx.is_empty() {
                    cover.push(covered as f64 / idx.len() as f64);
                }
            }
        }
    }
    let l = ((n + 1) as f64 * alpha).floor();
    let (mean_t, var_t) = beta_binomial(m as f64, (n + 1) as f64 - l, l);
    let mean = pooled_counts.iter().sum::<f64>() / trials as f64;
    let var = pooled_counts
        .iter()
        .map(|c| (c - mean).powi(2))
        .sum::<f64>()
        / (trials - 1) as f64;
    let se = (var / trials as f64).sqrt();
    assert!(
        (mean - mean_t).abs() < 4.0 * se,
        "covered per {m}: {mean} vs Beta-Binomial {mean_t} (se {se})"
    );
    // Coverage in [1 − α, 1 − α + 1/(n + 1)] within four standard errors.
    let cov = mean / m as f64;
    let cse = se / m as f64;
    assert!(
        cov > 1.0 - alpha - 4.0 * cse && cov < 1.0 - alpha + 1.0 / (n + 1) as f64 + 4.0 * cse,
        "coverage {cov}"
    );
    assert!(
        (var / var_t - 1.0).abs() < 0.12,
        "variance {var} vs Beta-Binomial {var_t}"
    );
    for (c, covers) in class_cover.iter().enumerate() {
        let mc = covers.iter().sum::<f64>() / covers.len() as f64;
        let sd = (covers.iter().map(|v| (v - mc).powi(2)).sum::<f64>() / (covers.len() - 1) as f64)
            .sqrt();
        let se = sd / (covers.len() as f64).sqrt();
        assert!(
            covers.len() > trials / 2,
            "class {c}: {} trials",
            covers.len()
        );
        assert!(
            mc > 1.0 - alpha - 4.0 * se,
            "class {c} coverage {mc} below 1 − α"
        );
    }
}

#[test]
fn cross_conformal_sets_cover_at_least_one_minus_two_alpha() {
    let alpha = 0.1;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (folds, n) = (5usize, 100usize);
    let mut covered = 0usize;
    let mut total = 0usize;
    for _ in 0..300 {
        // Each fold model is a slightly different scorer of the same data.
        let shift: Vec<f64> = (0..folds).map(|_| rng.random::<f64>() * 0.1).collect();
        let prob = |x: f64, f: usize| {
            let p = (x + shift[f]).clamp(0.0, 1.0);
            vec![p, 1.0 - p]
        };
        let mut cal = vec![];
        for i in 0..n {
            let y = rng.random_range(0..2usize);
            let x = rng.random::<f64>() * 0.7 + if y == 0 { 0.2 } else { 0.0 };
            let fold = i % folds;
            cal.push(conformal::CalibrationScore {
                fold,
                label: y,
                score: ScoreKind::Lac.score(&prob(x, fold), y),
            });
        }
        for _ in 0..10 {
            let y = rng.random_range(0..2usize);
            let x = rng.random::<f64>() * 0.7 + if y == 0 { 0.2 } else { 0.0 };
            let fp: Vec<Vec<f64>> = (0..folds).map(|f| prob(x, f)).collect();
            let set = conformal::cross_set(&cal, &fp, 2, alpha, ScoreKind::Lac, true).unwrap();
            covered += set.contains(&y) as usize;
            total += 1;
        }
    }
    let cov = covered as f64 / total as f64;
    assert!(cov >= 1.0 - 2.0 * alpha, "cross-conformal coverage {cov}");
    assert!(cov < 0.999, "sets are not trivially everything: {cov}");
}

#[test]
fn the_screening_threshold_is_the_highest_reaching_the_target_sensitivity() {
    // Positives (class 0) at 0.9 0.8 0.7 0.6 0.3; negatives at 0.65 0.4 0.2 0.1.
    let p = [0.9, 0.8, 0.7, 0.6, 0.3, 0.65, 0.4, 0.2, 0.1];
    let pos = [true, true, true, true, true, false, false, false, false];
    assert_eq!(operating::target_threshold(&p, &pos, 0.8).unwrap(), 0.6);
    assert_eq!(operating::target_threshold(&p, &pos, 0.95).unwrap(), 0.3);
    assert_eq!(operating::target_threshold(&p, &pos, 0.6).unwrap(), 0.7);
    // Youden: at 0.6 sens 0.8, spec 0.75 (J 0.55); at 0.7 sens 0.6 spec 1 (J 0.6); at 0.3
    // sens 1, spec 0.5 (J 0.5).
    assert_eq!(operating::youden_threshold(&p, &pos), 0.7);
    let op = operating::operating_point(
        "mpox",
        &p,
        &pos,
        0.8,
        Some(0.1),
        ProportionMethod::Wilson,
        0.95,
    )
    .unwrap();
    assert_eq!(op.threshold, 0.6);
    assert_eq!(
        (op.at_target.true_positives, op.at_target.false_positives),
        (4, 1)
    );
    close(op.sensitivity.value, 0.8, 1e-15, "sensitivity");
    close(op.specificity.value, 0.75, 1e-15, "specificity");
    let w = intervals::wilson(4, 5, 0.95);
    close(op.sensitivity.low, w.0, 1e-15, "sensitivity's Wilson low");
    close(op.ppv.value, 0.8, 1e-15, "PPV in the data");
    // At 10 % prevalence: 0.8·0.1 / (0.8·0.1 + 0.25·0.9).
    close(
        op.at_target.ppv_at_prevalence.value,
        0.08 / (0.08 + 0.225),
        1e-15,
        "PPV at 10 %",
    );
    assert!(op.at_target.ppv_at_prevalence.low < op.at_target.ppv_at_prevalence.value);
    assert_eq!(op.at_half.threshold, 0.5);
    let e = operating::operating_point("mpox", &p, &pos, 1.2, None, ProportionMethod::Wilson, 0.95)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("the target sensitivity 1.2 is outside (0, 1)"),
        "{e}"
    );
    let e = operating::operating_point(
        "mpox",
        &p,
        &pos,
        0.9,
        Some(0.0),
        ProportionMethod::Wilson,
        0.95,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("the prevalence 0 is outside (0, 1)"),
        "{e}"
    );
}

#[test]
fn fitting_on_out_of_fold_predictions_reports_cross_fitted_calibration_and_ships_its_record() {
    let (z, y) = logits(200, 2, 1.2, 3.0, 9);
    let folds: Vec<usize> = (0..200).map(|i| i % 5).collect();
    let groups: Vec<String> = (0..200).map(|i| format!("P{}", i / 2)).collect();
    let oof = inception::trust::Oof {
        classes: names(2),
        logits: z.clone(),
        labels: y.clone(),
        folds,
        groups,
    };
    let fit = inception::trust::fit(&oof, &Default::default(), "test").unwrap();
    let cal = fit.calibration.as_ref().unwrap();
    assert_eq!(cal.folds.len(), 5);
    assert!(
        cal.applied,
        "over-confident logits: the cross-fitted NLL falls with T"
    );
    assert!(cal.cross_fitted_nll_after < cal.cross_fitted_nll_before);
    assert_eq!(fit.record.temperature(), cal.temperature);
    let t = calibration::fit_temperature(&z, &y).unwrap();
    assert_eq!(cal.temperature, t);
    assert!(cal.after.ece_interval.is_some());
    let op = fit.operating_point.as_ref().unwrap();
    assert!(op.sensitivity.value >= 0.95);
    let th = fit.record.threshold.as_ref().unwrap();
    assert_eq!(th.threshold, op.threshold);
    let sets = fit.record.conformal.as_ref().unwrap();
    assert_eq!(sets.thresholds.len(), 2);
    assert!(fit.conformal.coverage >= 0.9);
    // Too few images of a class: refused, naming it.
    let few = inception::trust::Oof {
        labels: (0..200).map(|i| (i >= 15) as usize).collect(),
        ..oof.clone()
    };
    let e = inception::trust::fit(&few, &Default::default(), "test")
        .unwrap_err()
        .to_string();
    assert!(e.contains("class \"c0\" has 15 out-of-fold images"), "{e}");
    let bad = inception::trust::TrustConfig {
        alpha: 1.0,
        ..Default::default()
    };
    let e = inception::trust::fit(&oof, &bad, "test")
        .unwrap_err()
        .to_string();
    assert!(e.contains("alpha 1 is outside (0, 1)"), "{e}");
}

fn cli(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    common::inception(dir, args)
}

fn json_file(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_cv_ships_its_calibration_with_the_model_trained_on_every_image_and_refuses_another_recipe() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = common::repo().join("data/monkeypox");
    let data = data.to_str().unwrap();
    let smoke = common::repo().join("configs/smoke.json");
    let smoke = smoke.to_str().unwrap();
    let recipe = [
        "--data", data, "--config", smoke, "--epochs", "3", "--seed", "1", "--device", "cpu",
    ];
    // Values outside (0, 1) are refused before anything is trained or written.
    for (flag, v, msg) in [
        ("--alpha", "1.5", "alpha 1.5 is outside (0, 1)"),
        (
            "--target-sensitivity",
            "0",
            "target_sensitivity 0 is outside (0, 1)",
        ),
        ("--prevalence", "1", "prevalence 1 is outside (0, 1)"),
    ] {
        let mut args = vec!["cv", "--folds", "3", "--out", "bad", flag, v];
        args.extend(recipe);
        let err = common::assert_clean_failure(&cli(d, &args));
        assert!(err.contains(msg), "{err}");
        assert!(!d.join("bad").exists(), "{flag} {v}: a cv folder was made");
    }
    let mut args = vec!["cv", "--folds", "3", "--out", "cv", "--alpha", "0.2"];
    args.extend(recipe);
    let o = cli(d, &args);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let cv = json_file(&d.join("cv/cv.json"));
    assert_eq!(cv["conformal"]["alpha"], 0.2);
    let record = cv["trust"].clone();
    assert!(record.is_object(), "{}", cv["trust_note"]);
    assert!(
        record["calibration"]["temperature"].as_f64().unwrap() > 0.0,
        "{record}"
    );

    // The model trained on every image carries the cv's record.
    let mut args = vec![
        "train",
        "--val-fraction",
        "0",
        "--calibration-from",
        "cv",
        "--out",
        "all",
    ];
    args.extend(recipe);
    let o = cli(d, &args);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let meta = inception::checkpoint::read_meta(&d.join("all/model.pt")).unwrap();
    let mut shipped = serde_json::to_value(meta.trust.as_ref().unwrap()).unwrap();
    let at = std::fs::canonicalize(d.join("cv")).unwrap();
    let fitted_on = format!(
        "{} in {}",
        record["fitted_on"].as_str().unwrap(),
        at.display()
    );
    assert_eq!(shipped["fitted_on"], fitted_on.as_str());
    shipped["fitted_on"] = record["fitted_on"].clone();
    assert_eq!(shipped, record);
    let photo = format!("{data}/Others/1.jpg");
    let o = cli(
        d,
        &[
            "predict",
            "--json",
            "--device",
            "cpu",
            // fp32 as the TorchScript module below (auto takes bf16 on a CPU that has it).
            "--precision",
            "fp32",
            "--checkpoint",
            "all/model.pt",
            &photo,
        ],
    );
    let p: Value = serde_json::from_str(&common::stdout(&o)).unwrap();
    assert_eq!(p[0]["threshold"], record["threshold"]["threshold"]);
    let applied = record["calibration"]["applied"].as_bool().unwrap_or(false);
    assert_eq!(p[0]["calibrated"], applied);
    assert!(p[0]["set"].is_array());
    // eval gives PPV and NPV at a prevalence it is told, by Bayes' rule from its sensitivity
    // and specificity; one outside (0, 1) is refused.
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--json",
            "--device",
            "cpu",
            "--checkpoint",
            "all/model.pt",
            "--data",
            data,
        ];
        args.extend(extra);
        cli(d, &args)
    };
    let o = eval(&["--prevalence", "0.1"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let e: Value = serde_json::from_str(&common::stdout(&o)).unwrap();
    // At the shipped threshold and at 0.5: the model's answers differ between them, so not
    // both can be degenerate (sensitivity 1, specificity 0 makes the PPV the prevalence).
    let mut informative = 0;
    for key in ["at_threshold", "at_half"] {
        let at = &e["operating_point"][key];
        assert_eq!(at["prevalence"], 0.1, "{at}");
        let v = |k: &str| at[k]["value"].as_f64().unwrap();
        let (se, sp) = (v("sensitivity"), v("specificity"));
        if se > 0.0 && sp > 0.0 && (se < 1.0 || sp < 1.0) {
            informative += 1;
            let ppv = se * 0.1 / (se * 0.1 + (1.0 - sp) * 0.9);
            let npv = sp * 0.9 / (sp * 0.9 + (1.0 - se) * 0.1);
            let (gp, gn) = (v("ppv_at_prevalence"), v("npv_at_prevalence"));
            assert!(
                (gp - ppv).abs() < 1e-12,
                "{key}: PPV at 10 %: {gp} vs {ppv}"
            );
            assert!(
                (gn - npv).abs() < 1e-12,
                "{key}: NPV at 10 %: {gn} vs {npv}"
            );
            assert!(
                (gp - 0.1).abs() > 1e-3,
                "{key}: PPV {gp} is just the prevalence"
            );
        }
    }
    assert!(
        informative > 0,
        "both operating points degenerate: {}",
        e["operating_point"]
    );
    let o = eval(&[]);
    let e: Value = serde_json::from_str(&common::stdout(&o)).unwrap();
    let share = 81.0 / 183.0;
    let data_prevalence = e["operating_point"]["at_threshold"]["prevalence"]
        .as_f64()
        .unwrap();
    assert!((data_prevalence - share).abs() < 1e-12, "{data_prevalence}");
    let err = common::assert_clean_failure(&eval(&["--prevalence", "1.5"]));
    assert!(err.contains("--prevalence 1.5 is outside (0, 1)"), "{err}");
    // export writes the record beside the TorchScript module, with a rule that turns the
    // module's logits into predict's probability, decision and set.
    let o = cli(
        d,
        &["export", "--checkpoint", "all/model.pt", "--out", "all.ts"],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let interface = json_file(&d.join("all.ts.json"));
    assert_eq!(interface["trust"]["threshold"], record["threshold"]);
    assert_eq!(interface["trust"]["conformal"], record["conformal"]);
    let rule = interface["trust_rule"].as_str().unwrap();
    // The temperature as the cv recorded it (1 when its check said it does not help).
    let t = match record["calibration"]["applied"].as_bool() {
        Some(true) => record["calibration"]["temperature"].as_f64().unwrap(),
        _ => 1.0,
    };
    assert!(
        rule.starts_with(&format!("T = {t}; p = softmax(logits / T)")),
        "{rule}"
    );
    let module = tch::CModule::load(d.join("all.ts")).unwrap();
    let transform = inception::data::transform::EvalTransform {
        image_size: meta.image_size as u32,
        normalization: meta.normalization,
    };
    let img = inception::data::image::load_rgb(std::path::Path::new(&photo)).unwrap();
    let x = transform.batch(&[img]).unwrap();
    let z = tch::no_grad(|| module.forward_ts(&[x])).unwrap();
    let probs = Vec::<f64>::try_from((z / t).softmax(-1, tch::Kind::Double).get(0)).unwrap();
    let top = if probs[0] >= probs[1] { 0 } else { 1 };
    let shown = p[0]["probability"].as_f64().unwrap();
    assert!(
        (probs[top] - shown).abs() < 1e-4,
        "{probs:?} vs predict's {shown}"
    );
    assert_eq!(p[0]["class"], meta.classes[top].as_str());
    let th = interface["trust"]["threshold"]["threshold"]
        .as_f64()
        .unwrap();
    let decision = if probs[0] >= th { 0 } else { 1 };
    assert_eq!(p[0]["decision"], meta.classes[decision].as_str());
    let limits: Vec<f64> =
        serde_json::from_value(interface["trust"]["conformal"]["thresholds"].clone()).unwrap();
    let set: Vec<&str> = (0..2)
        .filter(|&c| 1.0 - probs[c] <= limits[if limits.len() == 1 { 0 } else { c }])
        .map(|c| meta.classes[c].as_str())
        .collect();
    assert_eq!(p[0]["set"], json!(set));

    // Another recipe, another dataset: refused by name, nothing written.
    let mut args = vec![
        "train",
        "--val-fraction",
        "0",
        "--calibration-from",
        "cv",
        "--out",
        "other",
        "--lr",
        "0.01",
    ];
    args.extend(recipe);
    let err = common::assert_clean_failure(&cli(d, &args));
    assert!(
        err.contains("that cv measured another recipe (lr differ)"),
        "{err}"
    );
    assert!(!d.join("other").exists());
    let tiny = common::light_and_dark(d, 64);
    let args = [
        "train",
        "--data",
        tiny.to_str().unwrap(),
        "--config",
        smoke,
        "--epochs",
        "2",
        "--val-fraction",
        "0",
        "--calibration-from",
        "cv",
        "--out",
        "other",
    ];
    let err = common::assert_clean_failure(&cli(d, &args));
    assert!(
        err.contains("that cv measured") && err.contains("and this run trains on"),
        "{err}"
    );
    assert!(!d.join("other").exists());

    // --collect refits with other choices, and plan.json records them.
    let o = cli(
        d,
        &[
            "cv",
            "--collect",
            "cv",
            "--alpha",
            "0.1",
            "--pooled-sets",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let again: Value = serde_json::from_str(&common::stdout(&o)).unwrap();
    assert_eq!(again["conformal"]["alpha"], 0.1);
    assert_eq!(again["conformal"]["class_conditional"], false);
    assert_eq!(
        again["conformal"]["thresholds"].as_array().unwrap().len(),
        1
    );
    assert_eq!(
        json_file(&d.join("cv/plan.json"))["config"]["trust"]["alpha"],
        0.1
    );
    // The calibration does not depend on the sets' choices.
    assert_eq!(again["calibration"], cv["calibration"]);

    // Too few images of a class to calibrate: refused before anything is trained, naming the
    // class and its count; --no-trust cross-validates without, and nothing can ship that.
    let mut args = vec![
        "cv",
        "--data",
        tiny.to_str().unwrap(),
        "--config",
        smoke,
        "--epochs",
        "1",
        "--folds",
        "2",
        "--group-by",
        "none",
        "--out",
        "tinycv",
        "--device",
        "cpu",
    ];
    let err = common::assert_clean_failure(&cli(d, &args));
    assert!(
        err.contains("has 12 images, fewer than the 20 out-of-fold images")
            && err.contains("--no-trust"),
        "{err}"
    );
    assert!(!d.join("tinycv").exists());
    args.push("--no-trust");
    let o = cli(d, &args);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(
        common::stdout(&o).contains("no calibration, threshold or conformal sets: not fitted"),
        "{}",
        common::stdout(&o)
    );
    let t = json_file(&d.join("tinycv/cv.json"));
    assert!(t["trust"].is_null());
    assert!(t["calibration"].is_null() && t["conformal"].is_null());
    assert_eq!(
        json_file(&d.join("tinycv/plan.json"))["config"]["trust"]["fit"],
        false
    );
    let args = [
        "train",
        "--data",
        tiny.to_str().unwrap(),
        "--config",
        smoke,
        "--epochs",
        "1",
        "--group-by",
        "none",
        "--val-fraction",
        "0",
        "--calibration-from",
        "tinycv",
        "--out",
        "tinyall",
    ];
    let err = common::assert_clean_failure(&cli(d, &args));
    assert!(
        err.contains("that cv fitted no calibration (not fitted"),
        "{err}"
    );
}

#[test]
fn weighted_statistics_equal_the_unweighted_ones_on_the_images_drawn_with_repeats() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let k = 3;
    let n = 90;
    let probs = dirichlet(n, k, &mut rng);
    let labels: Vec<usize> = (0..n).map(|_| rng.random_range(0..k)).collect();
    // Scores with ties, for the AUC (first class positive).
    let scores: Vec<f64> = probs.iter().map(|p| (p[0] * 20.0).round() / 20.0).collect();
    let positive: Vec<bool> = labels.iter().map(|&y| y == 0).collect();
    let order = intervals::score_order(&scores);
    for _ in 0..20 {
        let w: Vec<f64> = (0..n).map(|_| rng.random_range(0..4) as f64).collect();
        let drawn: Vec<usize> = (0..n)
            .flat_map(|i| std::iter::repeat_n(i, w[i] as usize))
            .collect();
        let p: Vec<Vec<f64>> = drawn.iter().map(|&i| probs[i].clone()).collect();
        let l: Vec<usize> = drawn.iter().map(|&i| labels[i]).collect();
        let e = evaluate(&names(k), &p, &l);
        let mut confusion = vec![0.0; k * k];
        for i in 0..n {
            confusion[labels[i] * k + inception::metrics::argmax(&probs[i])] += w[i];
        }
        let (f1, balanced) = inception::trust::macro_f1_and_balanced(&confusion, k);
        close(f1, e.macro_avg.f1, 1e-12, "macro-F1");
        close(balanced, e.balanced_accuracy, 1e-12, "balanced accuracy");
        let s: Vec<f64> = drawn.iter().map(|&i| scores[i]).collect();
        let y: Vec<usize> = drawn.iter().map(|&i| (!positive[i]) as usize).collect();
        let auc = intervals::weighted_auc(&scores, &positive, &order, &w);
        close(auc, inception::metrics::roc_auc(&s, &y), 1e-12, "AUC");
    }
}

#[test]
fn aps_sets_grow_down_the_ranking_until_the_threshold_and_need_three_classes() {
    // Three classes, probabilities 0.5, 0.3, 0.2: APS scores (the mass at or above each
    // class) 0.5, 0.8, 1.0. Calibration images of class 0 scoring as given; the threshold is
    // the ⌈(n+1)(1−α)⌉-th smallest score.
    assert_eq!(ScoreKind::Aps.score(&[0.5, 0.3, 0.2], 0), 0.5);
    assert!((ScoreKind::Aps.score(&[0.5, 0.3, 0.2], 1) - 0.8).abs() < 1e-15);
    assert!((ScoreKind::Aps.score(&[0.5, 0.3, 0.2], 2) - 1.0).abs() < 1e-15);
    // 19 calibration images of class 0, its probability 0.38, 0.41, …, 0.92 and the top one,
    // so its APS score is that probability; α = 0.1: k = 18, the threshold 0.89.
    let cal: Vec<Vec<f64>> = (1..=19)
        .map(|i| {
            let own = 0.35 + 0.03 * i as f64;
            vec![own, (1.0 - own) / 2.0, (1.0 - own) / 2.0]
        })
        .collect();
    let labels = vec![0usize; 19];
    let c = Conformal::fit(&cal, &labels, &names(3), 0.1, ScoreKind::Aps, false).unwrap();
    assert!((c.thresholds[0] - 0.89).abs() < 1e-12, "{:?}", c.thresholds);
    // 0.5, 0.3, 0.2: scores 0.5, 0.8, 1.0 → the two first classes.
    assert_eq!(c.set(&[0.5, 0.3, 0.2]), vec![0, 1]);
    // Without randomisation or "include the last label", a confident image whose top class
    // alone passes the threshold gets the empty set (MAPIE's include_last_label=False).
    assert_eq!(c.set(&[0.95, 0.03, 0.02]), Vec::<usize>::new());
}

#[test]
fn class_conditional_coverage_follows_the_beta_binomial_law_for_each_class() {
    // Fixed class counts in every draw (30 and 40 calibration images, 20 and 25 test images),
    // one image per patient: class c's covered test images follow
    // Beta-Binomial(m_c, n_c + 1 − l_c, l_c), l_c = ⌊(n_c + 1) α⌋, whatever the other class does.
    let (alpha, trials) = (0.1, 3000usize);
    let (n, m) = ([30usize, 40], [20usize, 25]);
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let draw = |counts: [usize; 2], rng: &mut ChaCha8Rng| -> (Vec<Vec<f64>>, Vec<usize>) {
        let mut p = vec![];
        let mut y = vec![];
        for (c, &k) in counts.iter().enumerate() {
            for _ in 0..k {
                let s: f64 = rng.random::<f64>() * 0.6 + if c == 0 { 0.3 } else { 0.1 };
                p.push(vec![s, 1.0 - s]);
                y.push(c);
            }
        }
        (p, y)
    };
    let mut covered = [vec![], vec![]];
    for _ in 0..trials {
        let (cp, cy) = draw(n, &mut rng);
        let (tp, ty) = draw(m, &mut rng);
        let sets = Conformal::fit(&cp, &cy, &names(2), alpha, ScoreKind::Lac, true).unwrap();
        for (c, cover) in covered.iter_mut().enumerate() {
            let k = (0..tp.len())
                .filter(|&i| ty[i] == c && sets.set(&tp[i]).contains(&c))
                .count();
            cover.push(k as f64);
        }
    }
    for c in 0..2 {
        let l = ((n[c] + 1) as f64 * alpha).floor();
        let (mean_t, var_t) = beta_binomial(m[c] as f64, (n[c] + 1) as f64 - l, l);
        let v = &covered[c];
        let mean = v.iter().sum::<f64>() / trials as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (trials - 1) as f64;
        let se = (var / trials as f64).sqrt();
        assert!(
            (mean - mean_t).abs() < 4.0 * se,
            "class {c}: mean {mean} vs {mean_t} (se {se})"
        );
        assert!(
            (var / var_t - 1.0).abs() < 0.12,
            "class {c}: variance {var} vs {var_t}"
        );
    }
}
