//! Cross-validation end to end on MSLD with the smoke recipe (seed network, 64 px): the folds,
//! the out-of-fold file, the statistics, kill-and-resume, folds run apart and collected; and the
//! ensembles eval and predict build from checkpoints.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{assert_clean_failure, inception, repo, serial, stderr, stdout};
use inception::data::dataset::SplitFiles;
use inception::metrics::evaluate;
use inception::stats::{t_quantile, Summary};
use serde_json::Value;

fn msld() -> String {
    repo().join("data/monkeypox").display().to_string()
}

fn smoke() -> String {
    repo().join("configs/smoke.json").display().to_string()
}

/// `inception cv` on MSLD, smoke recipe, 3 folds of 2 epochs, seed 1 (unless `extra` says; as
/// [`common::smoke_cv`]), and extra flags.
fn cv_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "cv",
        "--data",
        &msld(),
        "--config",
        &smoke(),
        "--folds",
        "3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if !extra.contains(&"--epochs") {
        args.extend(["--epochs".to_string(), "2".to_string()]);
    }
    if !extra.contains(&"--seed") {
        args.extend(["--seed".to_string(), "1".to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn cv(dir: &Path, extra: &[&str]) -> std::process::Output {
    let args = cv_args(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    inception(dir, &args)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

/// cv.json without what may differ between two equal runs: the folder and the timings.
fn comparable(mut v: Value) -> Value {
    let o = v.as_object_mut().unwrap();
    o.remove("cv");
    o.remove("train_seconds");
    v
}

fn group(path: &str) -> String {
    let stem = Path::new(path)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    stem.split('_').next().unwrap().to_string()
}

/// Parses oof.csv (no field of MSLD needs quoting).
fn oof_rows(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().split(',').map(String::from).collect();
    let rows = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    (header, rows)
}

#[test]
fn cv_partitions_the_patients_predicts_every_image_once_and_its_statistics_recompute() {
    let _serial = serial();
    // The shared cv: this test reads it only.
    let (base, o) = common::smoke_cv();
    assert!(o.status.success(), "{}", stderr(o));
    let out = stdout(o);
    assert!(
        out.contains("mean ± std") && out.contains("95% CI (t)"),
        "{out}"
    );
    assert!(
        out.contains("pooled out-of-fold predictions (183 images"),
        "{out}"
    );
    let run = base.join("runs/cv");

    // The folds' validation sides partition the images, and no patient is on two of them;
    // each fold trains on everything else.
    let mut seen = BTreeSet::new();
    let mut groups_by_fold = vec![];
    for f in 0..3 {
        let folder = run.join(format!("fold-{f}"));
        for file in ["model.pt", "best.pt", "last.pt", "metrics.csv"] {
            assert!(folder.join(file).exists(), "fold-{f}/{file}");
        }
        let split: SplitFiles =
            serde_json::from_str(&fs::read_to_string(folder.join("split.json")).unwrap()).unwrap();
        assert_eq!(split.train.len() + split.val.len(), 183);
        for e in &split.val {
            assert!(seen.insert(e.path.clone()), "{} validated twice", e.path);
        }
        let g: BTreeSet<String> = split.val.iter().map(|e| group(&e.path)).collect();
        let t: BTreeSet<String> = split.train.iter().map(|e| group(&e.path)).collect();
        assert!(g.is_disjoint(&t), "fold {f}: a patient on both sides");
        groups_by_fold.push(g);
    }
    assert_eq!(seen.len(), 183);
    // The charts are drawn from the fold results cv.json records (same pixels), and the ROC
    // chart exists beside them.
    let report = read_json(&run.join("cv.json"));
    let acc: Vec<f64> = report["model"]["per_fold"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["accuracy"].as_f64().unwrap())
        .collect();
    let summary = inception::stats::Summary::of(&acc);
    let expected = inception::plot::cv::render_accuracy(
        &acc,
        summary.mean,
        summary.std,
        "accuracy (model.pt)",
    )
    .unwrap();
    let drawn = image::open(run.join("cv_accuracy.png")).unwrap().to_rgb8();
    assert!(
        drawn == expected,
        "cv_accuracy.png is not drawn from cv.json's accuracies"
    );
    let roc = image::open(run.join("cv_roc.png")).unwrap().to_rgb8();
    assert_eq!(roc.dimensions(), (700, 700));
    for a in 0..3 {
        for b in a + 1..3 {
            assert!(groups_by_fold[a].is_disjoint(&groups_by_fold[b]));
        }
    }

    // oof.csv: every image once, in the fold that validated it.
    let (header, rows) = oof_rows(&run.join("oof.csv"));
    assert_eq!(
        header,
        [
            "path",
            "truth",
            "prob_Monkey Pox",
            "prob_Others",
            "logit_Monkey Pox",
            "logit_Others",
            "fold",
            "group"
        ]
    );
    assert_eq!(rows.len(), 183);
    let paths: BTreeSet<&String> = rows.iter().map(|r| &r[0]).collect();
    assert_eq!(paths.len(), 183);
    assert_eq!(paths.into_iter().cloned().collect::<BTreeSet<_>>(), seen);
    for r in &rows {
        let split: SplitFiles = serde_json::from_str(
            &fs::read_to_string(run.join(format!("fold-{}/split.json", r[6]))).unwrap(),
        )
        .unwrap();
        assert!(split.val.iter().any(|e| e.path == r[0] && e.class == r[1]));
    }

    // The pooled metrics are those of oof.csv's probabilities.
    let classes = vec!["Monkey Pox".to_string(), "Others".to_string()];
    let probs: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| vec![r[2].parse().unwrap(), r[3].parse().unwrap()])
        .collect();
    let labels: Vec<usize> = rows
        .iter()
        .map(|r| classes.iter().position(|c| *c == r[1]).unwrap())
        .collect();
    let e = evaluate(&classes, &probs, &labels);
    let report = read_json(&run.join("cv.json"));
    let pooled = &report["model"]["pooled"];
    assert_eq!(
        pooled["confusion"],
        serde_json::to_value(&e.confusion).unwrap()
    );
    for (key, want) in [("accuracy", e.accuracy), ("loss", e.loss)] {
        let got = pooled[key].as_f64().unwrap();
        assert!((got - want).abs() < 1e-6, "{key}: {got} vs {want}");
    }
    let auc = pooled["binary"]["roc_auc"].as_f64().unwrap();
    assert!((auc - e.binary.as_ref().unwrap().roc_auc).abs() < 1e-9);

    // Per fold: the accuracy of that fold's oof rows; then mean, std and the t-interval by hand.
    let per_fold = report["model"]["per_fold"].as_array().unwrap();
    let mut accs = vec![];
    for (f, fold) in per_fold.iter().enumerate() {
        let mine: Vec<&Vec<String>> = rows.iter().filter(|r| r[6] == f.to_string()).collect();
        let correct = mine
            .iter()
            .filter(|r| {
                let (a, b): (f64, f64) = (r[2].parse().unwrap(), r[3].parse().unwrap());
                let pred = if b > a { "Others" } else { "Monkey Pox" };
                pred == r[1]
            })
            .count();
        let acc = correct as f64 / mine.len() as f64;
        assert_eq!(fold["images"], mine.len());
        assert!((fold["accuracy"].as_f64().unwrap() - acc).abs() < 1e-12);
        accs.push(acc);
    }
    let mean = accs.iter().sum::<f64>() / 3.0;
    let sd = (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
    // t(0.975, 2) = 4.302653 (tables).
    let half = 4.302_653 * sd / 3f64.sqrt();
    let s = &report["model"]["summary"][0];
    assert_eq!(s["measure"], "accuracy");
    assert!((s["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert!((s["std"].as_f64().unwrap() - sd).abs() < 1e-12);
    assert!((s["ci95"][0].as_f64().unwrap() - (mean - half)).abs() < 1e-5);
    assert!((s["ci95"][1].as_f64().unwrap() - (mean + half)).abs() < 1e-5);
    let measures: Vec<&str> = report["model"]["summary"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["measure"].as_str().unwrap())
        .collect();
    assert_eq!(
        measures,
        [
            "accuracy",
            "macro_f1",
            "roc_auc",
            "sensitivity",
            "specificity"
        ]
    );
    assert_eq!(report["tta"], "image + horizontal flip");
    assert_ne!(
        report["model_tta"]["pooled"]["loss"], report["model"]["pooled"]["loss"],
        "TTA changed nothing"
    );
    // oof.csv holds what predict says with that fold's model.pt.
    for r in rows.iter().step_by(30) {
        let ckpt = run.join(format!("fold-{}/model.pt", r[6]));
        let image = format!("{}/{}", msld(), r[0]);
        let o = inception(
            base,
            &[
                "predict",
                "--json",
                "--device",
                "cpu",
                "--checkpoint",
                ckpt.to_str().unwrap(),
                &image,
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let p = &probabilities(&o)[&image];
        for (i, (class, prob)) in p.iter().enumerate() {
            assert_eq!(class, &classes[i]);
            let oof: f64 = r[2 + i].parse().unwrap();
            assert!((prob - oof).abs() < 1e-5, "{}: {prob} vs {oof}", r[0]);
        }
    }
    assert!(report["best"]["per_fold"].as_array().unwrap().len() == 3);

    // The logits read back bit for bit and give the probabilities; the group is the patient.
    let logits: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            (4..6)
                .map(|i| {
                    // Exact as f64 (what numpy reads) and an f32 value.
                    let v: f64 = r[i].parse().unwrap();
                    assert_eq!(format!("{v:e}"), r[i], "{} does not round-trip", r[i]);
                    assert_eq!((v as f32) as f64, v, "{} is not an f32 logit", r[i]);
                    v
                })
                .collect()
        })
        .collect();
    for (r, z) in rows.iter().zip(&logits) {
        let p0 = 1.0 / (1.0 + (z[1] - z[0]).exp());
        let oof: f64 = r[2].parse().unwrap();
        assert!(
            (p0 - oof).abs() < 1e-8,
            "{}: softmax of its logits {p0} vs {oof}",
            r[0]
        );
        assert_eq!(r[7], group(&r[0]), "{}", r[0]);
    }
    // The temperature in cv.json is the one these logits give (or, where none fits them, the
    // note says the library's reason); the record ships it.
    let cal = &report["calibration"];
    let shipped_t = match inception::trust::calibration::fit_temperature(&logits, &labels) {
        Ok(t) => {
            assert_eq!(cal["temperature"].as_f64().unwrap(), t);
            assert_eq!(cal["method"], "temperature");
            assert_eq!(cal["folds"].as_array().unwrap().len(), 3);
            let applied = cal["applied"].as_bool().unwrap();
            assert_eq!(
                applied,
                cal["cross_fitted_nll_after"].as_f64() < cal["cross_fitted_nll_before"].as_f64()
            );
            for side in ["before", "after"] {
                for key in ["ece", "adaptive_ece", "brier", "nll", "slope", "intercept"] {
                    assert!(
                        cal[side][key].is_number(),
                        "calibration.{side}.{key}: {}",
                        cal[side]
                    );
                }
            }
            if applied {
                t
            } else {
                1.0
            }
        }
        Err(e) => {
            assert!(cal.is_null(), "{cal}");
            let note = report["trust_note"].as_str().unwrap();
            assert!(note.contains(&e.to_string()), "{note}");
            1.0
        }
    };
    let op = &report["operating_point"];
    let th = op["threshold"].as_f64().unwrap();
    let p_cal: Vec<f64> = logits
        .iter()
        .map(|z| 1.0 / (1.0 + ((z[1] - z[0]) / shipped_t).exp()))
        .collect();
    let pos = labels.iter().filter(|&&y| y == 0).count();
    let caught = (0..rows.len())
        // The threshold is one of these probabilities; this formula and the tool's softmax
        // may differ in the last bit.
        .filter(|&i| labels[i] == 0 && p_cal[i] >= th - 1e-12)
        .count();
    assert!(
        caught as f64 / pos as f64 >= 0.95,
        "sensitivity at {th}: {caught}/{pos}"
    );
    assert_eq!(op["target_sensitivity"], 0.95);
    for key in ["sensitivity", "specificity", "ppv", "npv"] {
        let e = &op[key];
        assert!(
            e["low"].as_f64() <= e["value"].as_f64() && e["value"].as_f64() <= e["high"].as_f64(),
            "{key}: {e}"
        );
    }
    assert_eq!(report["trust"]["threshold"]["threshold"].as_f64(), Some(th));
    let conformal = &report["conformal"];
    assert_eq!(conformal["alpha"], 0.1);
    assert_eq!(conformal["class_conditional"], true);
    assert_eq!(conformal["thresholds"].as_array().unwrap().len(), 2);
    assert!(conformal["coverage"].as_f64().unwrap() >= 0.9);
    let iv = &report["intervals"];
    assert!(iv["accuracy"]["low"].as_f64() < iv["accuracy"]["high"].as_f64());
    assert_eq!(iv["accuracy"]["method"], "wilson");
    assert_eq!(iv["roc_auc"]["method"], "delong");
    let groups: BTreeSet<&String> = rows.iter().map(|r| &r[7]).collect();
    assert_eq!(iv["groups"].as_u64(), Some(groups.len() as u64));
    let rel = image::open(run.join("reliability.png")).unwrap().to_rgb8();
    assert_eq!(rel.dimensions(), (700, 720));
    assert!(out.contains("screening threshold for Monkey Pox"), "{out}");
    assert!(out.contains("conformal sets (alpha 0.1"), "{out}");

    // The cv folder is an ensemble for predict: three members.
    let image = format!("{}/Others/1.jpg", msld());
    let o = inception(
        base,
        &[
            "predict",
            "--checkpoint",
            run.to_str().unwrap(),
            "--device",
            "cpu",
            &image,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("ensemble of 3 members"),
        "{}",
        stderr(&o)
    );
    // Without --checkpoint, predict takes what the latest finished run ships: here the cv.
    let o = inception(base, &["predict", "--device", "cpu", &image]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("checkpoint: runs/cv (the most recent run)"),
        "{err}"
    );
    assert!(err.contains("ensemble of 3 members"), "{err}");
}

#[test]
fn t_quantiles_and_fold_summaries_match_tables_and_hand_computation() {
    // Student's t, 97.5 % quantiles, from printed tables.
    for (df, t) in [
        (1.0, 12.706_205),
        (2.0, 4.302_653),
        (4.0, 2.776_445),
        (9.0, 2.262_157),
        (30.0, 2.042_272),
    ] {
        let got = t_quantile(0.975, df);
        assert!((got - t).abs() < 1e-5, "df {df}: {got} vs {t}");
    }
    let s = Summary::of(&[0.6, 0.7, 0.8, 0.65, 0.75]);
    assert!((s.mean - 0.7).abs() < 1e-12);
    let sd = (0.025f64 / 4.0).sqrt(); // squares: .01 + 0 + .01 + .0025 + .0025
    assert!((s.std - sd).abs() < 1e-12);
    let half = 2.776_445 * sd / 5f64.sqrt();
    assert!((s.ci95[0] - (0.7 - half)).abs() < 1e-6);
    assert!((s.ci95[1] - (0.7 + half)).abs() < 1e-6);
    let one = Summary::of(&[0.5]);
    assert_eq!((one.std, one.ci95), (0.0, [0.5, 0.5]));
}

#[test]
fn cv_killed_mid_way_and_resumed_gives_the_summary_of_an_uninterrupted_one() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let o = cv(dir.path(), &["--epochs", "3", "--out", a.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));

    // The same cross-validation, killed (SIGKILL) while fold 1 trains.
    let b = dir.path().join("b");
    let args = cv_args(&["--epochs", "3", "--out", b.to_str().unwrap()]);
    let limit = Duration::from_secs(600);
    common::kill_once_written(dir.path(), &args, &b.join("fold-1/last.pt"), limit);
    assert!(!b.join("cv.json").exists(), "the kill came after the end");
    assert!(!b.join("fold-2").exists(), "the kill came after fold 1");
    assert!(b.join("fold-0/model.pt").exists());

    // Another recipe cannot be given with --resume.
    let o = inception(
        dir.path(),
        &["cv", "--resume", b.to_str().unwrap(), "--lr", "0.1"],
    );
    let err = assert_clean_failure(&o);
    assert!(err.contains("--lr cannot be given"), "{err}");

    let o = inception(dir.path(), &["cv", "--resume", b.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("fold 0: finished already"), "{out}");
    // Fold 1 continued from its last.pt, not from scratch.
    assert!(out.contains("fold-1 (resuming)"), "{out}");
    assert!(out.contains("fold-1/last.pt after epoch"), "{out}");
    assert_eq!(
        comparable(read_json(&a.join("cv.json"))),
        comparable(read_json(&b.join("cv.json"))),
        "resumed cross-validation differs from the uninterrupted one"
    );
    assert_eq!(
        fs::read_to_string(a.join("oof.csv")).unwrap(),
        fs::read_to_string(b.join("oof.csv")).unwrap()
    );
}

#[test]
fn folds_run_as_separate_jobs_and_collected_equal_the_all_in_one_run() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("all");
    let o = cv(dir.path(), &["--out", all.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // --json: stdout is cv.json alone, the training logs went to stderr.
    let printed: Value = serde_json::from_str(&stdout(&o)).expect("stdout is one JSON object");
    assert_eq!(printed, read_json(&all.join("cv.json")));
    assert!(stderr(&o).contains("epoch   2/2"), "{}", stderr(&o));

    // Two jobs of one array start at once in a folder that does not exist yet; the second
    // says which device it computes on (a runtime flag: the same plan).
    let apart = dir.path().join("apart");
    let jobs: Vec<_> = [("2", "auto"), ("0", "cpu")]
        .iter()
        .map(|(f, device)| {
            let args = cv_args(&[
                "--out",
                apart.to_str().unwrap(),
                "--only-fold",
                f,
                "--device",
                device,
            ]);
            common::bin()
                .args(&args)
                .current_dir(dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (job, f) in jobs.into_iter().zip([2, 0]) {
        let o = job.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stdout(&o).contains(&format!("fold {f} done")),
            "{}",
            stdout(&o)
        );
    }
    assert!(!apart.join("fold-1").exists());
    // Collecting before every fold is done names the missing one.
    let o = inception(dir.path(), &["cv", "--collect", apart.to_str().unwrap()]);
    let err = assert_clean_failure(&o);
    assert!(
        err.contains("1 of 3 folds not finished") && err.contains("fold-1"),
        "{err}"
    );
    // A job with another recipe cannot join the folder.
    let o = cv(
        dir.path(),
        &[
            "--out",
            apart.to_str().unwrap(),
            "--only-fold",
            "1",
            "--lr",
            "0.01",
        ],
    );
    let err = assert_clean_failure(&o);
    assert!(err.contains("another plan"), "{err}");
    let o = cv(
        dir.path(),
        &["--out", apart.to_str().unwrap(), "--only-fold", "1"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        apart.join("cv.json").exists(),
        "the last fold's job builds the summary"
    );
    let o = inception(
        dir.path(),
        &["cv", "--collect", apart.to_str().unwrap(), "--json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let collected: Value = serde_json::from_str(&stdout(&o)).unwrap();
    // The plan records the device of whichever job wrote it first: the one field that may differ.
    let without_device = |v: Value| {
        let mut v = comparable(v);
        v["config"].as_object_mut().unwrap().remove("device");
        v
    };
    assert_eq!(without_device(collected), without_device(printed));
    assert_eq!(
        fs::read_to_string(all.join("oof.csv")).unwrap(),
        fs::read_to_string(apart.join("oof.csv")).unwrap()
    );
}

/// predict --json's probabilities by path.
fn probabilities(o: &std::process::Output) -> BTreeMap<String, Vec<(String, f64)>> {
    let v: Vec<Value> = serde_json::from_str(&stdout(o)).unwrap();
    v.iter()
        .map(|p| {
            let mut top: Vec<(String, f64)> = p["top_k"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        s["class"].as_str().unwrap().to_string(),
                        s["probability"].as_f64().unwrap(),
                    )
                })
                .collect();
            top.sort_by(|a, b| a.0.cmp(&b.0));
            (p["path"].as_str().unwrap().to_string(), top)
        })
        .collect()
}

#[test]
fn an_ensemble_averages_its_members_and_refuses_a_member_that_does_not_fit() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let train = |out: &str, extra: &[&str]| {
        let (data, config) = (msld(), smoke());
        let mut args = vec!["train", "--data", &data, "--config", &config, "--out", out];
        args.extend(extra);
        let o = inception(dir.path(), &args);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    train("a", &["--epochs", "2"]);
    train("b", &["--epochs", "2", "--seed", "1"]);
    let (a, b) = ("a/model.pt", "b/model.pt");
    let folder = format!("{}/Others", msld());
    let predict = |ckpts: &[&str], extra: &[&str]| {
        let mut args = vec![
            "predict",
            "--json",
            "--device",
            "cpu",
            "--precision",
            "fp32",
        ];
        for c in ckpts {
            args.extend(["--checkpoint", c]);
        }
        args.extend(extra);
        args.push(&folder);
        let o = inception(dir.path(), &args);
        assert!(o.status.success(), "{}", stderr(&o));
        probabilities(&o)
    };
    let (pa, pb, pab) = (
        predict(&[a], &[]),
        predict(&[b], &[]),
        predict(&[a, b], &[]),
    );
    assert_eq!(pab.len(), 102);
    let mut differs = false;
    for (path, both) in &pab {
        for (i, (class, p)) in both.iter().enumerate() {
            let want = (pa[path][i].1 + pb[path][i].1) / 2.0;
            assert_eq!(class, &pa[path][i].0);
            assert!((p - want).abs() < 1e-6, "{path} {class}: {p} vs {want}");
            differs |= (pa[path][i].1 - pb[path][i].1).abs() > 1e-3;
        }
    }
    assert!(
        differs,
        "the two members predict the same: the test shows nothing"
    );

    // eval of the ensemble on the dataset: its loss and accuracy are those of the averaged
    // probabilities predict gives for every image.
    let o = inception(
        dir.path(),
        &[
            "eval",
            "--checkpoint",
            a,
            "--checkpoint",
            b,
            "--data",
            &msld(),
            "--json",
            "--device",
            "cpu",
            "--precision",
            "fp32",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let e: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(e["members"].as_array().unwrap().len(), 2);
    let data = msld();
    let all = {
        let args = [
            "predict",
            "--json",
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--checkpoint",
            a,
            "--checkpoint",
            b,
            &data,
        ];
        let o = inception(dir.path(), &args);
        assert!(o.status.success(), "{}", stderr(&o));
        probabilities(&o)
    };
    assert_eq!(all.len(), 183);
    let (mut loss, mut correct) = (0.0, 0);
    for (path, probs) in &all {
        let truth = Path::new(path)
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy();
        let p = probs.iter().find(|(c, _)| *c == truth).unwrap().1;
        loss -= p.ln();
        let best = probs.iter().max_by(|x, y| x.1.total_cmp(&y.1)).unwrap();
        correct += usize::from(best.0 == truth);
    }
    loss /= 183.0;
    let got = e["loss"].as_f64().unwrap();
    assert!(
        (got - loss).abs() < 1e-5,
        "eval loss {got}, from predict {loss}"
    );
    assert!((e["accuracy"].as_f64().unwrap() - correct as f64 / 183.0).abs() < 1e-12);
    let o = inception(
        dir.path(),
        &[
            "eval",
            "--checkpoint",
            a,
            "--checkpoint",
            b,
            "--data",
            &msld(),
            "--device",
            "cpu",
        ],
    );
    assert!(
        stdout(&o).contains("ensemble of 2 members"),
        "{}",
        stdout(&o)
    );

    // Members that do not fit are refused by name.
    train("c", &["--epochs", "1", "--image-size", "48"]);
    let o = inception(
        dir.path(),
        &[
            "predict",
            "--checkpoint",
            a,
            "--checkpoint",
            "c/model.pt",
            &folder,
        ],
    );
    let err = assert_clean_failure(&o);
    assert!(
        err.contains("c/model.pt cannot join") && err.contains("image size 48, not 64"),
        "{err}"
    );
    let renamed = dir.path().join("renamed");
    fs::create_dir_all(renamed.join("pox")).unwrap();
    fs::create_dir_all(renamed.join("other")).unwrap();
    for (class, to) in [("Monkey Pox", "pox"), ("Others", "other")] {
        for e in fs::read_dir(format!("{}/{class}", msld()))
            .unwrap()
            .flatten()
            .take(12)
        {
            fs::copy(e.path(), renamed.join(to).join(e.file_name())).unwrap();
        }
    }
    let renamed_s = renamed.to_str().unwrap().to_string();
    let o = inception(
        dir.path(),
        &[
            "train",
            "--data",
            &renamed_s,
            "--config",
            &smoke(),
            "--out",
            "d",
            "--group-by",
            "none",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = inception(
        dir.path(),
        &[
            "eval",
            "--checkpoint",
            a,
            "--checkpoint",
            "d/model.pt",
            "--data",
            &msld(),
        ],
    );
    let err = assert_clean_failure(&o);
    assert!(
        err.contains("d/model.pt cannot join") && err.contains("classes"),
        "{err}"
    );
    // An ensemble has no one recorded split: eval needs --data.
    let o = inception(dir.path(), &["eval", "--checkpoint", a, "--checkpoint", b]);
    let err = assert_clean_failure(&o);
    assert!(err.contains("give --data"), "{err}");
}

#[test]
fn tta_is_the_mean_over_the_image_and_the_flips_the_recipe_trained_with() {
    use inception::checkpoint::{self, Meta};
    use inception::data::transform::Normalization;
    use inception::ensemble::Ensemble;
    use inception::model::Flips;
    use inception::model::{Arch, Model, NetConfig};
    use inception::precision::{Compute, Precision};
    use tch::{Device, Kind, Tensor};

    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(7);
    let model = Model::new(NetConfig::new(Arch::Seed, 3), Device::Cpu).unwrap();
    // A fresh network answers nearly the same for everything: sharpen its class layer.
    tch::no_grad(|| {
        for (name, mut t) in model.state_dict() {
            if name.starts_with("classifier") && name.ends_with("weight") {
                let _ = t.g_mul_scalar_(30.0);
            }
        }
    });
    let meta = Meta::new(
        model.config,
        vec!["a".into(), "b".into(), "c".into()],
        64,
        Normalization::IMAGENET,
        "test".into(),
    );
    let path = dir.path().join("m.pt");
    checkpoint::save(&path, &model, &meta).unwrap();
    let compute = Compute::new(Device::Cpu, Precision::Fp32, false).unwrap();
    let plain = Ensemble::load(std::slice::from_ref(&path), compute).unwrap();
    let tta = Ensemble::load(&[path], compute).unwrap().with_tta();
    // No training record (an import): the horizontal flip ImageNet weights are trained with.
    assert_eq!(
        tta.tta,
        Flips {
            horizontal: true,
            vertical: false
        }
    );
    // Images brighter on the left, so that a horizontal flip changes what the network sees.
    let ramp = Tensor::linspace(2.0, -2.0, 64, (Kind::Float, Device::Cpu)).view([1, 1, 1, 64]);
    let x = Tensor::randn([4, 3, 64, 64], (Kind::Float, Device::Cpu)) * 0.1 + ramp;
    let p = |e: &Ensemble, x: &Tensor| e.probabilities(compute, x, Kind::Double).unwrap();
    let want = (p(&plain, &x) + p(&plain, &x.flip([3]))) / 2.0;
    let got = p(&tta, &x);
    let diff = (&got - &want).abs().max().double_value(&[]);
    assert!(diff < 1e-12, "{diff}");
    let unflipped = (&got - p(&plain, &x)).abs().max().double_value(&[]);
    assert!(
        unflipped > 1e-6,
        "the flip changed nothing: the test shows nothing"
    );
    // With both flips in the recipe: four views.
    let both = Flips {
        horizontal: true,
        vertical: true,
    };
    assert_eq!(both.views(), vec![vec![], vec![3], vec![2], vec![2, 3]]);
}

#[test]
fn cv_refuses_a_dataset_with_its_own_split_and_the_fold_flag_of_train() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("given");
    for side in ["train", "val"] {
        for class in ["a", "b"] {
            let folder = data.join(side).join(class);
            fs::create_dir_all(&folder).unwrap();
            image::RgbImage::new(8, 8)
                .save(folder.join("x.png"))
                .unwrap();
        }
    }
    let o = inception(dir.path(), &["cv", "--data", data.to_str().unwrap()]);
    let err = assert_clean_failure(&o);
    assert!(
        err.contains("its own train/val split") && err.contains("given/val"),
        "{err}"
    );
    let o = cv(dir.path(), &["--fold", "1"]);
    let err = assert_clean_failure(&o);
    assert!(err.contains("--only-fold I trains one"), "{err}");
    assert!(
        !dir.path().join("runs").exists(),
        "a refused cv left a folder"
    );
}

#[test]
fn the_paired_t_test_and_the_exact_mcnemar_test_match_hand_computation() {
    use inception::cv::compare::{mcnemar, paired};
    // Differences 0.1, 0.1, 0: mean 1/15, sd 1/√300, t = 2 with 2 degrees of freedom, whose
    // distribution function is ½ + t / (2√(2 + t²)): p = 1 − 2/√6.
    let m = paired("accuracy", &[0.6, 0.7, 0.8], &[0.7, 0.8, 0.8]);
    assert!((m.difference.mean - 1.0 / 15.0).abs() < 1e-12);
    assert!((m.t - 2.0).abs() < 1e-9, "{}", m.t);
    assert!((m.p - (1.0 - 2.0 / 6f64.sqrt())).abs() < 1e-9, "{}", m.p);
    assert!((m.a.mean - 0.7).abs() < 1e-12 && (m.b.mean - 23.0 / 30.0).abs() < 1e-12);
    // Equal results: no difference; a constant non-zero one: certain.
    assert_eq!(paired("x", &[0.5, 0.6], &[0.5, 0.6]).p, 1.0);
    assert_eq!(paired("x", &[0.5, 0.6], &[0.6, 0.7]).p, 0.0);
    // 1 against 6 discordant images: 2 · (C(7,0) + C(7,1)) / 2⁷ = 0.125.
    let mc = mcnemar(1, 6);
    assert!((mc.p - 0.125).abs() < 1e-12, "{}", mc.p);
    assert_eq!(mcnemar(6, 1).p, mc.p);
    assert_eq!(mcnemar(0, 0).p, 1.0);
    assert_eq!(mcnemar(5, 5).p, 1.0);
    // 0 against 10: 2 / 2¹⁰.
    assert!((mcnemar(0, 10).p - 2.0 / 1024.0).abs() < 1e-15);
    // Past 1074 discordant images 2⁻ⁿ underflows: a tie stays a tie, and the tails match
    // Python's exact integer sums (2·Σ_{i ≤ k} C(n, i) / 2ⁿ as a Fraction).
    assert_eq!(mcnemar(600, 600).p, 1.0);
    let rel = |x: f64, want: f64| ((x - want) / want).abs();
    assert!(rel(mcnemar(900, 1100).p, 8.457089535503927e-06) < 1e-6);
    assert!(rel(mcnemar(640, 560).p, 0.02253662756750957) < 1e-6);
    // One fold: no test.
    assert!(paired("x", &[0.5], &[0.6]).p.is_nan());
    // Corrected (Nadeau & Bengio) with n_test/n_train = ½: the variance scaled by 1/3 + ½
    // instead of 1/3, so t = 2 / √(5/2) = 2√(2/5), and p from the same closed form.
    let c = inception::cv::compare::paired_corrected(
        "accuracy",
        &[0.6, 0.7, 0.8],
        &[0.7, 0.8, 0.8],
        0.5,
    );
    assert!(
        (c.t - 2.0).abs() < 1e-9 && (c.p - m.p).abs() < 1e-12,
        "the plain test stays"
    );
    let t = 2.0 * (2.0f64 / 5.0).sqrt();
    assert!((c.corrected_t - t).abs() < 1e-9, "{}", c.corrected_t);
    let p = 1.0 - t / (2.0 + t * t).sqrt();
    assert!((c.corrected_p - p).abs() < 1e-9, "{} vs {p}", c.corrected_p);
    assert!(c.corrected_p > c.p);
    assert!(
        (m.corrected_p - m.p).abs() < 1e-15,
        "without a ratio the corrected test is the plain one"
    );
}

/// Whether each image of an `oof.csv` was predicted right (the highest probability's class).
fn oof_right(path: &Path) -> BTreeMap<String, bool> {
    let (header, rows) = oof_rows(path);
    let classes: Vec<String> = header
        .iter()
        .filter_map(|h| h.strip_prefix("prob_").map(str::to_string))
        .collect();
    rows.iter()
        .map(|r| {
            let p: Vec<f64> = r[2..2 + classes.len()]
                .iter()
                .map(|v| v.parse().unwrap())
                .collect();
            let best = (0..p.len()).fold(0, |b, c| if p[c] > p[b] { c } else { b });
            (r[0].clone(), classes[best] == r[1])
        })
        .collect()
}

#[test]
fn compare_pairs_two_cvs_fold_by_fold_and_image_by_image_and_refuses_what_does_not_pair() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (b, c) = (dir.path().join("b"), dir.path().join("c"));
    // A: the shared cv (the smoke recipe's lr, 0.001), read only; B: lr 0.01.
    let a = common::smoke_cv().0.join("runs/cv");
    let o = cv(
        dir.path(),
        &["--out", b.to_str().unwrap(), "--lr", "0.01", "--no-plots"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let compare = |x: &Path, y: &Path, json: bool| {
        let mut args = vec!["compare", x.to_str().unwrap(), y.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        inception(dir.path(), &args)
    };
    let o = compare(&a, &b, true);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["same_folds"], true);
    assert_eq!(r["images"], 183);
    // Fold by fold: the differences of the folds' own measures in cv.json.
    let (ja, jb) = (read_json(&a.join("cv.json")), read_json(&b.join("cv.json")));
    // DeLong's paired test of the out-of-fold AUCs: each side's AUC is its pooled one.
    for (side, j) in [("auc_a", &ja), ("auc_b", &jb)] {
        let pooled = j["model"]["pooled"]["binary"]["roc_auc"].as_f64().unwrap();
        let got = r["delong"][side].as_f64().unwrap();
        assert!(
            (got - pooled).abs() < 1e-6,
            "{side}: {got} vs pooled {pooled}"
        );
    }
    let p = r["delong"]["p_value"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p), "{}", r["delong"]);
    for m in r["by_fold"].as_array().unwrap() {
        let name = m["measure"].as_str().unwrap();
        let fold = |j: &Value| -> Vec<f64> {
            j["model"]["per_fold"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f[name].as_f64().unwrap())
                .collect()
        };
        let d: Vec<f64> = fold(&ja)
            .iter()
            .zip(fold(&jb))
            .map(|(x, y)| y - x)
            .collect();
        let expected = Summary::of(&d);
        assert!((m["difference"]["mean"].as_f64().unwrap() - expected.mean).abs() < 1e-12);
        assert!((m["difference"]["std"].as_f64().unwrap() - expected.std).abs() < 1e-12);
        let summary = ja["model"]["summary"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["measure"] == name)
            .unwrap();
        assert_eq!(m["a"]["mean"], summary["mean"], "{name}");
    }
    assert_eq!(r["by_fold"].as_array().unwrap().len(), 5);
    // Image by image: the discordant images of the two oof.csv files.
    let (ra, rb) = (oof_right(&a.join("oof.csv")), oof_right(&b.join("oof.csv")));
    let only_a = ra.iter().filter(|(k, &v)| v && !rb[*k]).count();
    let only_b = ra.iter().filter(|(k, &v)| !v && rb[*k]).count();
    assert_eq!(r["mcnemar"]["only_a_right"], only_a);
    assert_eq!(r["mcnemar"]["only_b_right"], only_b);
    let text = stdout(&compare(&a, &b, false));
    assert!(
        text.contains("the same 3 folds: paired fold by fold"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "B right where A is wrong: {only_b}, A right where B is wrong: {only_a}"
        )),
        "{text}"
    );
    // A cv compared with itself: no difference at all.
    assert!(
        stdout(&compare(&a, &a, false)).contains("verdict: no difference in accuracy shown"),
        "a cv against itself"
    );
    let same: Value = serde_json::from_str(&stdout(&compare(&a, &a, true))).unwrap();
    assert!(same["by_fold"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["difference"]["mean"] == 0.0 && m["p"] == 1.0));
    assert_eq!(same["mcnemar"]["p"], 1.0);

    // Another seed splits the patients otherwise: no fold-by-fold test (one epoch: what is
    // compared here is the folds, not the figures).
    let o = cv(
        dir.path(),
        &[
            "--out",
            c.to_str().unwrap(),
            "--seed",
            "2",
            "--epochs",
            "1",
            "--no-plots",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = compare(&a, &c, false);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("other folds (another seed or data)"),
        "{}",
        stdout(&o)
    );
    assert!(!stdout(&o).contains("paired t-test"), "{}", stdout(&o));

    // What does not pair is refused by name.
    let edited = dir.path().join("edited");
    fs::create_dir_all(&edited).unwrap();
    let mut j = ja.clone();
    j["classes"] = serde_json::json!(["Monkey Pox", "Chickenpox"]);
    fs::write(edited.join("cv.json"), j.to_string()).unwrap();
    fs::copy(a.join("oof.csv"), edited.join("oof.csv")).unwrap();
    let err = assert_clean_failure(&compare(&a, &edited, false));
    assert!(err.contains("[\"Monkey Pox\", \"Chickenpox\"]"), "{err}");
    fs::write(edited.join("cv.json"), ja.to_string()).unwrap();
    let oof = fs::read_to_string(a.join("oof.csv")).unwrap();
    let mut lines: Vec<&str> = oof.lines().collect();
    let dropped = lines.remove(1).split(',').next().unwrap().to_string();
    fs::write(edited.join("oof.csv"), lines.join("\n") + "\n").unwrap();
    let err = assert_clean_failure(&compare(&a, &edited, false));
    assert!(
        err.contains(&format!(
            "predicted different images (1 only in the first, e.g. {dropped:?}"
        )),
        "{err}"
    );
    // Probability columns in another order than cv.json's classes; a class that differs.
    let mut swapped: Vec<String> = oof.lines().map(str::to_string).collect();
    swapped[0] =
        "path,truth,prob_Others,prob_Monkey Pox,logit_Others,logit_Monkey Pox,fold,group".into();
    fs::write(edited.join("oof.csv"), swapped.join("\n") + "\n").unwrap();
    let err = assert_clean_failure(&compare(&a, &edited, false));
    assert!(
        err.contains(
            "oof.csv: expected the header \"path,truth,prob_Monkey Pox,prob_Others,\
             logit_Monkey Pox,logit_Others,fold,group\""
        ),
        "{err}"
    );
    let mut relabelled: Vec<String> = oof.lines().map(str::to_string).collect();
    let first = relabelled[1].clone();
    let (path, truth) = (
        first.split(',').next().unwrap(),
        first.split(',').nth(1).unwrap(),
    );
    let other = if truth == "Others" {
        "Monkey Pox"
    } else {
        "Others"
    };
    relabelled[1] = first.replacen(&format!(",{truth},"), &format!(",{other},"), 1);
    fs::write(edited.join("oof.csv"), relabelled.join("\n") + "\n").unwrap();
    let err = assert_clean_failure(&compare(&a, &edited, false));
    assert!(
        err.contains(&format!("{path}: its class is {truth:?} in ")),
        "{err}"
    );
    let err = assert_clean_failure(&compare(&a, dir.path(), false));
    assert!(
        err.contains("cv.json (is ") && err.contains("a finished cv folder?)"),
        "{err}"
    );
}
