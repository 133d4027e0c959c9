//! Classification metrics against values worked out by hand (and by scikit-learn's
//! definitions: precision/recall/F1 per class, macro and support-weighted averages, ROC-AUC).

use inception::metrics::{evaluate, roc_auc};

fn classes(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("c{i}")).collect()
}

fn one_hot(pred: &[usize], k: usize) -> Vec<Vec<f64>> {
    pred.iter()
        .map(|&p| {
            (0..k)
                .map(|c| if c == p { 0.8 } else { 0.2 / (k - 1) as f64 })
                .collect()
        })
        .collect()
}

#[test]
fn per_class_and_averaged_scores_match_a_hand_count() {
    // truth:      0 0 0 0 1 1 1 2 2 2
    // prediction: 0 0 1 2 1 1 0 2 2 2
    let truth = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2];
    let pred = [0, 0, 1, 2, 1, 1, 0, 2, 2, 2];
    let e = evaluate(&classes(3), &one_hot(&pred, 3), &truth);
    assert_eq!(
        e.confusion,
        vec![vec![2, 1, 1], vec![1, 2, 0], vec![0, 0, 3]]
    );
    assert!((e.accuracy - 0.7).abs() < 1e-12);
    let p = [2.0 / 3.0, 2.0 / 3.0, 3.0 / 4.0];
    let r = [0.5, 2.0 / 3.0, 1.0];
    for c in 0..3 {
        let m = &e.per_class[c];
        assert!((m.precision - p[c]).abs() < 1e-12, "precision {c}");
        assert!((m.recall - r[c]).abs() < 1e-12, "recall {c}");
        let f1 = 2.0 * p[c] * r[c] / (p[c] + r[c]);
        assert!((m.f1 - f1).abs() < 1e-12, "f1 {c}");
    }
    assert_eq!(
        e.per_class.iter().map(|m| m.support).collect::<Vec<_>>(),
        vec![4, 3, 3]
    );
    let f1: Vec<f64> = e.per_class.iter().map(|m| m.f1).collect();
    assert!((e.macro_avg.f1 - f1.iter().sum::<f64>() / 3.0).abs() < 1e-12);
    let weighted = (4.0 * f1[0] + 3.0 * f1[1] + 3.0 * f1[2]) / 10.0;
    assert!((e.weighted_avg.f1 - weighted).abs() < 1e-12);
    assert!((e.loss - -(0.8f64.ln() * 7.0 + 0.1f64.ln() * 3.0) / 10.0).abs() < 1e-12);
    assert!(e.binary.is_none());
}

#[test]
fn two_classes_report_auc_sensitivity_and_specificity_of_the_first() {
    // Scores for class 0 (the positive one).
    let p0 = [0.9, 0.8, 0.4, 0.6, 0.3, 0.2];
    let truth = [0, 0, 0, 1, 1, 1];
    let probs: Vec<Vec<f64>> = p0.iter().map(|&p| vec![p, 1.0 - p]).collect();
    let e = evaluate(&classes(2), &probs, &truth);
    let b = e.binary.unwrap();
    assert_eq!(b.positive_class, "c0");
    // Positive–negative pairs ranked correctly: 9 pairs, one wrong (0.4 < 0.6).
    assert!((b.roc_auc - 8.0 / 9.0).abs() < 1e-12);
    assert!((b.sensitivity - 2.0 / 3.0).abs() < 1e-12);
    assert!((b.specificity - 2.0 / 3.0).abs() < 1e-12);
}

#[test]
fn roc_auc_counts_ties_as_one_half_and_degenerate_sets_as_chance() {
    assert!((roc_auc(&[0.5, 0.5], &[0, 1]) - 0.5).abs() < 1e-12);
    assert!((roc_auc(&[0.7, 0.5, 0.5], &[0, 0, 1]) - 0.75).abs() < 1e-12);
    assert!((roc_auc(&[0.1, 0.9], &[1, 0]) - 1.0).abs() < 1e-12);
    assert!((roc_auc(&[0.1, 0.9], &[0, 0]) - 0.5).abs() < 1e-12);
}
