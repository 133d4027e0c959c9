//! How long the trust figures take on many images: calibration (temperature, cross-fitted
//! check, every measure with its patient-bootstrap interval), the operating point, conformal
//! sets fitted and cross-fitted, and the pooled intervals (Wilson, DeLong, the cluster
//! bootstrap of accuracy, macro-F1, balanced accuracy and AUC) for 10,000 out-of-fold
//! predictions of 5,000 patients, then 10,000 prediction sets. The baseline in the same
//! process: one pass of computing every image's softmax, to set the scale.
//! `cargo bench --bench trust`.

use std::time::Instant;

use inception::trust::{self, Oof, TrustConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn main() -> anyhow::Result<()> {
    let n = 10_000;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let labels: Vec<usize> = (0..n).map(|_| rng.random_range(0..2)).collect();
    let logits: Vec<Vec<f64>> = labels
        .iter()
        .map(|&y| {
            let s = (rng.random::<f64>() - 0.5) * 6.0 + if y == 0 { 1.5 } else { -1.5 };
            vec![s, -s]
        })
        .collect();
    let oof = Oof {
        classes: vec!["Monkey Pox".into(), "Others".into()],
        logits: logits.clone(),
        labels: labels.clone(),
        folds: (0..n).map(|i| i % 5).collect(),
        groups: (0..n).map(|i| format!("P{}", i / 2)).collect(),
    };
    let started = Instant::now();
    let probs = trust::softmax_rows(&logits, 1.0);
    let baseline = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let fitted = trust::fit(&oof, &TrustConfig::default(), "a benchmark")?;
    let fit = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let groups = trust::intervals::Groups::of(&oof.groups);
    let iv = trust::intervals(&probs, &labels, 2, &groups, Default::default());
    let intervals = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let sets = fitted
        .record
        .conformal
        .as_ref()
        .map(|c| probs.iter().map(|p| c.set(p)).collect::<Vec<_>>());
    let set_time = started.elapsed().as_secs_f64();

    println!("{n} images, {} patients", groups.members.len());
    println!(
        "  softmax of every image (baseline):      {:>8.4} s",
        baseline
    );
    println!(
        "  fit: temperature, cross-fitted check, measures, ECE intervals, threshold, conformal: {:>8.4} s ({:.0}× the baseline)",
        fit,
        fit / baseline
    );
    println!(
        "  pooled intervals (Wilson, DeLong, 4 cluster bootstraps of 2,000): {:>8.4} s",
        intervals
    );
    println!(
        "  {} prediction sets:                  {:>8.4} s",
        sets.map_or(0, |s| s.len()),
        set_time
    );
    println!(
        "  total: {:.3} s; accuracy {:.3} ({:.3}–{:.3})",
        fit + intervals + set_time,
        iv.accuracy.value,
        iv.accuracy.low,
        iv.accuracy.high
    );
    Ok(())
}
