//! Classification metrics, shared by training (every epoch) and `inception eval`: accuracy,
//! per-class precision, recall, F1 and support, macro and weighted averages, the confusion
//! matrix (rows = truth, columns = prediction), and for two classes ROC-AUC, sensitivity and
//! specificity with the first class as the positive one.

use serde::{Deserialize, Serialize};

/// Precision, recall, F1 and support of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

/// An average of per-class precision, recall and F1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Average {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Two-class measures, the first class being the positive one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binary {
    pub positive_class: String,
    /// Area under the ROC curve of the positive class's probability (ties count one half).
    pub roc_auc: f64,
    /// Recall of the positive class.
    pub sensitivity: f64,
    /// Recall of the negative class.
    pub specificity: f64,
}

/// Everything measured on one set of images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub images: usize,
    pub accuracy: f64,
    /// Mean cross-entropy (unweighted, without label smoothing).
    pub loss: f64,
    pub per_class: Vec<ClassMetrics>,
    pub macro_avg: Average,
    pub weighted_avg: Average,
    /// `confusion[truth][prediction]`.
    pub confusion: Vec<Vec<usize>>,
    pub binary: Option<Binary>,
    /// The mean recall over the classes present (scikit-learn's `balanced_accuracy_score`).
    pub balanced_accuracy: f64,
    /// Cohen's κ: agreement of prediction and truth beyond chance.
    pub cohen_kappa: f64,
    /// Matthews' correlation (its multi-class form, Gorodkin 2004); 0 when undefined.
    pub mcc: f64,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Measures predictions: `probs[i]` the class probabilities of image `i`, `labels[i]` its class.
pub fn evaluate(classes: &[String], probs: &[Vec<f64>], labels: &[usize]) -> Evaluation {
    let k = classes.len();
    let n = labels.len();
    let mut confusion = vec![vec![0usize; k]; k];
    let mut loss = 0.0;
    for (p, &y) in probs.iter().zip(labels) {
        let pred = argmax(p);
        confusion[y][pred] += 1;
        loss -= p[y].max(1e-12).ln();
    }
    let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
    let per_class: Vec<ClassMetrics> = (0..k)
        .map(|c| {
            let tp = confusion[c][c];
            let predicted: usize = (0..k).map(|t| confusion[t][c]).sum();
            let support: usize = confusion[c].iter().sum();
            let (precision, recall) = (ratio(tp, predicted), ratio(tp, support));
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            ClassMetrics {
                class: classes[c].clone(),
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect();
    let mean = |f: fn(&ClassMetrics) -> f64| per_class.iter().map(f).sum::<f64>() / k as f64;
    let weighted = |f: fn(&ClassMetrics) -> f64| {
        per_class
            .iter()
            .map(|m| f(m) * m.support as f64)
            .sum::<f64>()
            / n.max(1) as f64
    };
    let binary = (k == 2).then(|| Binary {
        positive_class: classes[0].clone(),
        roc_auc: roc_auc(&probs.iter().map(|p| p[0]).collect::<Vec<_>>(), labels),
        sensitivity: per_class[0].recall,
        specificity: per_class[1].recall,
    });
    let (balanced_accuracy, cohen_kappa, mcc) = agreement(&confusion);
    Evaluation {
        balanced_accuracy,
        cohen_kappa,
        mcc,
        images: n,
        accuracy: ratio(correct, n),
        loss: if n > 0 { loss / n as f64 } else { 0.0 },
        macro_avg: Average {
            precision: mean(|m| m.precision),
            recall: mean(|m| m.recall),
            f1: mean(|m| m.f1),
        },
        weighted_avg: Average {
            precision: weighted(|m| m.precision),
            recall: weighted(|m| m.recall),
            f1: weighted(|m| m.f1),
        },
        per_class,
        confusion,
        binary,
    }
}

/// Balanced accuracy, Cohen's κ and Matthews' correlation of a confusion matrix
/// (`confusion[truth][prediction]`).
fn agreement(confusion: &[Vec<usize>]) -> (f64, f64, f64) {
    let k = confusion.len();
    let truth: Vec<f64> = confusion
        .iter()
        .map(|r| r.iter().sum::<usize>() as f64)
        .collect();
    let pred: Vec<f64> = (0..k)
        .map(|c| confusion.iter().map(|r| r[c]).sum::<usize>() as f64)
        .collect();
    let n: f64 = truth.iter().sum();
    let correct: f64 = (0..k).map(|c| confusion[c][c] as f64).sum();
    let present: Vec<usize> = (0..k).filter(|&c| truth[c] > 0.0).collect();
    let balanced = if present.is_empty() {
        0.0
    } else {
        present
            .iter()
            .map(|&c| confusion[c][c] as f64 / truth[c])
            .sum::<f64>()
            / present.len() as f64
    };
    if n == 0.0 {
        return (balanced, 0.0, 0.0);
    }
    let (po, pe) = (
        correct / n,
        (0..k).map(|c| truth[c] * pred[c]).sum::<f64>() / (n * n),
    );
    let kappa = if pe < 1.0 {
        (po - pe) / (1.0 - pe)
    } else {
        0.0
    };
    let tp: f64 = (0..k).map(|c| truth[c] * pred[c]).sum();
    let num = correct * n - tp;
    let den = ((n * n - pred.iter().map(|p| p * p).sum::<f64>())
        * (n * n - truth.iter().map(|t| t * t).sum::<f64>()))
    .sqrt();
    let mcc = if den > 0.0 { num / den } else { 0.0 };
    (balanced, kappa, mcc)
}

/// Index of the largest value (the first on ties).
pub fn argmax<T: PartialOrd>(p: &[T]) -> usize {
    let mut best = 0;
    for (i, v) in p.iter().enumerate() {
        if *v > p[best] {
            best = i;
        }
    }
    best
}

/// Midranks (1-based, ties share their mean rank) of `x`.
pub fn midranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            ranks[o] = r;
        }
        i = j + 1;
    }
    ranks
}

/// ROC-AUC of `scores` for class 0 as positive (Mann–Whitney U, ties count one half).
/// 0.5 when one side is empty.
pub fn roc_auc(scores: &[f64], labels: &[usize]) -> f64 {
    let ranks = midranks(scores);
    let pos = labels.iter().filter(|&&y| y == 0).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return 0.5;
    }
    let rank_sum: f64 = labels
        .iter()
        .zip(&ranks)
        .filter(|(&y, _)| y == 0)
        .map(|(_, r)| r)
        .sum();
    (rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos * neg) as f64
}

/// The ROC curve of `scores` for class 0 as positive: (false-positive rate, true-positive rate)
/// from (0, 0) to (1, 1), one point per distinct score, highest first. Its trapezoid area is
/// [`roc_auc`].
pub fn roc_curve(scores: &[f64], labels: &[usize]) -> Vec<(f64, f64)> {
    let pos = labels.iter().filter(|&&l| l == 0).count().max(1) as f64;
    let neg = labels.iter().filter(|&&l| l != 0).count().max(1) as f64;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut points = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0.0, 0.0);
    for (k, &i) in order.iter().enumerate() {
        if labels[i] == 0 {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        let last_of_tie = order.get(k + 1).is_none_or(|&j| scores[j] != scores[i]);
        if last_of_tie {
            points.push((fp / neg, tp / pos));
        }
    }
    points
}
