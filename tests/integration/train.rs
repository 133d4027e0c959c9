//! The whole job end to end on data/monkeypox (MSLD) with the smoke recipe: train, eval,
//! predict, interrupt-and-resume, and the errors a training run can meet.

use crate::common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{assert_clean_failure, inception, repo, serial, stderr, stdout};
use inception::checkpoint;
use inception::checkpoint::record::EpochRecord;
use inception::config::TrainConfig;
use inception::data::dataset::SplitFiles;
use serde_json::Value;
use tch::Device;

fn msld() -> String {
    repo().join("data/monkeypox").display().to_string()
}

fn smoke() -> String {
    repo().join("configs/smoke.json").display().to_string()
}

/// `inception train` on MSLD with the smoke recipe and extra flags, in `dir`.
fn train(dir: &Path, extra: &[&str]) -> std::process::Output {
    let (data, config) = (msld(), smoke());
    let mut args = vec!["train", "--data", &data, "--config", &config];
    args.extend(extra);
    inception(dir, &args)
}

/// metrics.csv rows without the timing columns (images/s, seconds).
fn metric_rows(run: &Path) -> Vec<String> {
    fs::read_to_string(run.join("metrics.csv"))
        .unwrap()
        .lines()
        .map(|l| l.split(',').take(7).collect::<Vec<_>>().join(","))
        .collect()
}

fn group(path: &str) -> String {
    let stem = Path::new(path)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    stem.split('_').next().unwrap().to_string()
}

#[test]
fn a_smoke_run_writes_a_complete_run_folder_and_never_overwrites_one() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let o = train(dir.path(), &["--epochs", "2", "--seed", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("Monkey Pox     81"), "scan report: {out}");
    assert!(out.contains("Others        102"), "scan report: {out}");
    assert!(out.contains("smallest 224×224, largest 224×224"), "{out}");
    assert!(out.contains("model.pt (the model to use"), "{out}");
    assert!(out.contains("best.pt (best validation epoch"), "{out}");
    let run = dir.path().join("runs/train");

    // config.json: the smoke recipe with the flags applied.
    let cfg = TrainConfig::from_file(&run.join("config.json")).unwrap();
    let mut expected = TrainConfig::from_file(Path::new(&smoke())).unwrap();
    expected.epochs = 2;
    expected.seed = 3;
    assert_eq!(cfg, expected);

    // split.json: every image once, no patient on both sides.
    let split: SplitFiles =
        serde_json::from_str(&fs::read_to_string(run.join("split.json")).unwrap()).unwrap();
    assert_eq!(split.train.len() + split.val.len(), 183);
    let tg: BTreeSet<String> = split.train.iter().map(|f| group(&f.path)).collect();
    let vg: BTreeSet<String> = split.val.iter().map(|f| group(&f.path)).collect();
    assert!(tg.is_disjoint(&vg));

    // metrics.csv: the header and one row per epoch, values in range.
    let text = fs::read_to_string(run.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "epoch,train_loss,train_acc,val_loss,val_acc,val_macro_f1,lr,images_per_s,seconds"
    );
    assert_eq!(lines.len(), 3);
    for (i, line) in lines[1..].iter().enumerate() {
        let v: Vec<f64> = line.split(',').map(|x| x.parse().unwrap()).collect();
        assert_eq!(v[0] as usize, i + 1);
        assert!(v[1].is_finite() && v[1] > 0.0);
        for acc in [v[2], v[4], v[5]] {
            assert!((0.0..=1.0).contains(&acc), "{line}");
        }
        assert!(v[7] > 0.0 && v[8] > 0.0);
    }

    // best.pt and last.pt load, and record how they were made.
    let best = checkpoint::load(&run.join("best.pt"), Device::Cpu).unwrap();
    let rec = best.meta.training.as_ref().unwrap();
    assert_eq!(rec.split, split);
    assert!(rec.resume.is_none());
    assert!(best.extra.is_empty());
    let last = checkpoint::load(&run.join("last.pt"), Device::Cpu).unwrap();
    let rec = last.meta.training.as_ref().unwrap();
    assert_eq!(rec.epoch, 2);
    assert!(rec.resume.is_some());
    assert!(last
        .extra
        .keys()
        .any(|k| k.starts_with("optimizer.exp_avg_sq.conv1")));
    assert_eq!(last.meta.classes, vec!["Monkey Pox", "Others"]);

    // A second run gets its own folder.
    let o = train(dir.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.path().join("runs/train-2/best.pt").exists());
    assert!(run.join("best.pt").exists());
    // An --out folder that holds files is refused, and left as it was.
    let o = train(dir.path(), &["--out", run.to_str().unwrap()]);
    let err = assert_clean_failure(&o);
    assert!(err.contains("exists and is not empty"), "{err}");
    assert_eq!(fs::read_to_string(run.join("metrics.csv")).unwrap(), text);
}

#[test]
fn eval_and_predict_agree_exactly_on_the_validation_files() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // Four epochs: enough for the smoke network to predict both classes on this split.
    let o = train(dir.path(), &["--epochs", "4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = dir.path().join("runs/train");
    let ckpt = run.join("model.pt");
    let o = inception(
        dir.path(),
        &[
            "eval",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--json",
            "--precision",
            "fp32",
            "--predictions",
            "eval.csv",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let e: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let split: SplitFiles =
        serde_json::from_str(&fs::read_to_string(run.join("split.json")).unwrap()).unwrap();
    assert_eq!(e["images"], split.val.len());
    assert_eq!(e["split"], "val");
    let confusion: Vec<Vec<u64>> = serde_json::from_value(e["confusion"].clone()).unwrap();
    let total: u64 = confusion.iter().flatten().sum();
    assert_eq!(total as usize, split.val.len());
    assert!(
        confusion[0][0] + confusion[1][0] > 0 && confusion[0][1] + confusion[1][1] > 0,
        "the model predicts one class only: {confusion:?}"
    );
    let auc = e["binary"]["roc_auc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&auc));

    // eval's per-image probabilities (--predictions) against predict's, image by image. Without
    // --checkpoint predict takes the latest run's model.pt.
    let rows: Vec<Vec<String>> = fs::read_to_string(dir.path().join("eval.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    assert_eq!(rows.len(), split.val.len());
    let paths: Vec<String> = split
        .val
        .iter()
        .map(|f| format!("{}/{}", msld(), f.path))
        .collect();
    let mut args = vec!["predict", "--json", "--precision", "fp32"];
    args.extend(paths.iter().map(String::as_str));
    let o = inception(dir.path(), &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("runs/train/model.pt"), "{}", stderr(&o));
    let preds: Vec<Value> = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(preds.len(), split.val.len());
    let mut correct = 0;
    for ((p, f), row) in preds.iter().zip(&split.val).zip(&rows) {
        assert!(row[0].ends_with(&f.path), "{} vs {}", row[0], f.path);
        assert_eq!(row[1], f.class);
        for (k, class) in ["Monkey Pox", "Others"].iter().enumerate() {
            let from_eval: f64 = row[2 + k].parse().unwrap();
            let from_predict = p["top_k"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["class"] == *class)
                .unwrap()["probability"]
                .as_f64()
                .unwrap();
            assert!(
                (from_eval - from_predict).abs() <= 1e-6,
                "{}: {class} {from_eval} by eval, {from_predict} by predict",
                f.path
            );
        }
        correct += usize::from(p["class"].as_str() == Some(f.class.as_str()));
    }
    let acc = correct as f64 / split.val.len() as f64;
    assert_eq!(
        acc,
        e["accuracy"].as_f64().unwrap(),
        "predict and eval disagree"
    );

    // The text report, the train side, and --data on the whole folder.
    let o = inception(
        dir.path(),
        &["eval", "--checkpoint", ckpt.to_str().unwrap()],
    );
    let text = stdout(&o);
    assert!(text.contains("confusion matrix (rows = truth"), "{text}");
    assert!(text.contains("ROC-AUC"), "{text}");
    let o = inception(
        dir.path(),
        &[
            "eval",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--split",
            "train",
            "--json",
        ],
    );
    let e: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(e["images"], split.train.len());
    let data = msld();
    let o = inception(
        dir.path(),
        &[
            "eval",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--data",
            &data,
            "--json",
        ],
    );
    let e: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(e["images"], 183);

    // A folder whose classes are not the checkpoint's is refused.
    let other = dir.path().join("other");
    for c in ["cat", "dog"] {
        fs::create_dir_all(other.join(c)).unwrap();
        image::RgbImage::new(8, 8)
            .save(other.join(c).join("a.png"))
            .unwrap();
    }
    let o = inception(
        dir.path(),
        &[
            "eval",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--data",
            other.to_str().unwrap(),
        ],
    );
    let err = assert_clean_failure(&o);
    assert!(err.contains("are not the checkpoint's classes"), "{err}");
}

#[test]
fn a_run_killed_mid_way_and_resumed_ends_like_an_uninterrupted_one() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // With a weight average and batch mixing, whose state must come back too.
    let recipe = [
        "--epochs",
        "3",
        "--ema-decay",
        "0.9",
        "--mixup",
        "0.4",
        "--cutmix",
        "1.0",
    ];
    let a = dir.path().join("a");
    let mut args = recipe.to_vec();
    args.extend(["--out", a.to_str().unwrap()]);
    let o = train(dir.path(), &args);
    assert!(o.status.success(), "{}", stderr(&o));

    // The same run, killed (SIGKILL) once its first epoch is on disk.
    let b = dir.path().join("b");
    let (data, config) = (msld(), smoke());
    let mut args = vec!["train", "--data", &data, "--config", &config];
    args.extend(recipe);
    args.extend(["--out", b.to_str().unwrap()]);
    common::kill_once_written(
        dir.path(),
        args,
        &b.join("last.pt"),
        Duration::from_secs(120),
    );
    // Whatever moment the kill hit, the checkpoints on disk are whole.
    let last = checkpoint::load(&b.join("last.pt"), Device::Cpu).unwrap();
    checkpoint::load(&b.join("best.pt"), Device::Cpu).unwrap();
    let done = last.meta.training.unwrap().epoch;
    assert!(done >= 1);

    let o = inception(
        dir.path(),
        &["train", "--resume", b.join("last.pt").to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("after epoch {done}")),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        metric_rows(&a),
        metric_rows(&b),
        "resumed run differs from the uninterrupted one"
    );
    let (ba, bb) = (
        checkpoint::load(&a.join("best.pt"), Device::Cpu).unwrap(),
        checkpoint::load(&b.join("best.pt"), Device::Cpu).unwrap(),
    );
    assert_eq!(
        ba.meta.training.unwrap().epoch,
        bb.meta.training.unwrap().epoch
    );
    // The shipped weights (the average) are the same, bit for bit.
    let (ma, mb) = (
        checkpoint::load(&a.join("model.pt"), Device::Cpu).unwrap(),
        checkpoint::load(&b.join("model.pt"), Device::Cpu).unwrap(),
    );
    assert_eq!(ma.meta.checksum, mb.meta.checksum);
    let last = checkpoint::load(&b.join("last.pt"), Device::Cpu).unwrap();
    let ema_conv = &last.extra["ema.conv1.weight"];
    assert!(ema_conv.equal(&mb.model.state_dict()["conv1.weight"]));
    assert!(!ema_conv.equal(&last.model.state_dict()["conv1.weight"]));

    // Resuming with another recipe is refused.
    let o = inception(
        dir.path(),
        &[
            "train",
            "--resume",
            b.join("last.pt").to_str().unwrap(),
            "--lr",
            "0.1",
        ],
    );
    let err = assert_clean_failure(&o);
    assert!(
        err.contains("--resume continues a run") && err.contains("(--lr cannot change)"),
        "{err}"
    );
}

#[test]
fn a_non_finite_loss_stops_training_naming_epoch_and_batch_and_keeps_best() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // A step schedule that multiplies the learning rate by 1e30 after the first epoch.
    let o = train(
        dir.path(),
        &[
            "--epochs",
            "3",
            "--schedule",
            "step",
            "--step-size",
            "1",
            "--step-gamma",
            "1e30",
        ],
    );
    let err = assert_clean_failure(&o);
    assert!(err.contains("non-finite loss"), "{err}");
    assert!(err.contains("at epoch 2, batch"), "{err}");
    let best = dir.path().join("runs/train/best.pt");
    let ckpt = checkpoint::load(&best, Device::Cpu).unwrap();
    assert_eq!(ckpt.meta.training.unwrap().epoch, 1);
}

#[test]
fn every_shipped_config_reads_and_validates() {
    let mut n = 0;
    for dir in ["configs", "benches/recipes"] {
        for e in std::fs::read_dir(common::repo().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "json") {
                let cfg = TrainConfig::from_file(&p).unwrap_or_else(|e| panic!("{e:#}"));
                cfg.validate()
                    .unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
                n += 1;
            }
        }
    }
    assert!(n >= 5, "only {n} configs found");
    // The pretrained recipe is the fitted probe alone on flip-averaged features (docs/pretrained.md).
    let p = TrainConfig::from_file(&common::repo().join("configs/pretrained.json")).unwrap();
    assert_eq!(
        (p.epochs, p.probe_c, p.average_flips),
        (0, Some(0.05), true)
    );
}

#[test]
fn a_config_that_does_not_set_aux_logits_gets_them_only_for_googlenet_from_scratch() {
    let aux = |json: &str| {
        let cfg = TrainConfig::from_json(json).unwrap();
        cfg.validate().unwrap();
        cfg.aux_logits
    };
    assert!(aux("{}"));
    assert!(aux(r#"{"arch": "googlenet"}"#));
    assert!(!aux(r#"{"arch": "googlenet", "pretrained": true}"#));
    assert!(aux(
        r#"{"arch": "googlenet", "pretrained": true, "aux_logits": true}"#
    ));
    assert!(!aux(r#"{"arch": "efficientnet_lite0"}"#));
    assert!(!aux(r#"{"arch": "seed"}"#));
    let err = TrainConfig::from_json(r#"{"arch": "seed", "aux_logits": true}"#)
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(err
        .to_string()
        .contains("aux_logits exists only for arch googlenet"));
}

#[test]
fn config_errors_name_the_field_and_create_no_run() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    fs::write(&bad, r#"{"epochz": 3}"#).unwrap();
    let data = msld();
    let o = inception(
        dir.path(),
        &["train", "--data", &data, "--config", bad.to_str().unwrap()],
    );
    let err = assert_clean_failure(&o);
    assert!(
        err.contains("bad.json") && err.contains("unknown field `epochz`"),
        "{err}"
    );
    let o = train(dir.path(), &["--val-fraction", "1.5"]);
    let err = assert_clean_failure(&o);
    assert!(err.contains("val_fraction"), "{err}");
    let o = train(dir.path(), &["--class-weights", "1,2,3"]);
    let err = assert_clean_failure(&o);
    assert!(err.contains("3 numbers for 2 classes"), "{err}");
    let o = inception(
        dir.path(),
        &["train", "--data", "nowhere", "--config", &smoke()],
    );
    let err = assert_clean_failure(&o);
    assert!(err.contains("nowhere"), "{err}");
    let runs: Vec<PathBuf> = fs::read_dir(dir.path().join("runs"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("metrics.csv").exists())
                .collect()
        })
        .unwrap_or_default();
    assert!(runs.is_empty(), "a failed start left runs: {runs:?}");
}

#[test]
fn kfold_flags_choose_the_validation_fold() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let o = train(
        dir.path(),
        &[
            "--folds",
            "4",
            "--fold",
            "1",
            "--no-augment",
            "--rotation",
            "5",
            "--mean",
            "0.5,0.5,0.5",
            "--precision",
            "fp32",
            "--channels-last",
            "false",
            "--out",
            "k",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("fold 1 of 4"), "{}", stdout(&o));
    let split: SplitFiles =
        serde_json::from_str(&fs::read_to_string(dir.path().join("k/split.json")).unwrap())
            .unwrap();
    let v = split.val.len() as f64;
    assert!((v - 183.0 / 4.0).abs() <= 6.0, "{v}");
    let cfg = TrainConfig::from_file(&dir.path().join("k/config.json")).unwrap();
    assert_eq!((cfg.folds, cfg.fold), (Some(4), 1));
    let augment = inception::data::transform::Augment {
        rotation: 5.0,
        ..inception::data::transform::Augment::none()
    };
    assert_eq!(cfg.augment, augment);
    assert_eq!(cfg.normalization.mean, [0.5, 0.5, 0.5]);
    assert_eq!(
        (cfg.precision, cfg.channels_last),
        (inception::precision::Precision::Fp32, false)
    );
    assert!(
        stderr(&o).contains("compute: fp32 (as asked)\n"),
        "{}",
        stderr(&o)
    );
    let best = checkpoint::load(&dir.path().join("k/best.pt"), Device::Cpu).unwrap();
    assert_eq!(best.meta.normalization.mean, [0.5, 0.5, 0.5]);

    // The other folds: their validation sides are disjoint, together they are every image,
    // and no patient is on both sides of any fold.
    let mut splits = vec![split];
    for f in ["0", "2", "3"] {
        let out = format!("k{f}");
        let o = train(
            dir.path(),
            &["--folds", "4", "--fold", f, "--no-plots", "--out", &out],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let s: SplitFiles = serde_json::from_str(
            &fs::read_to_string(dir.path().join(&out).join("split.json")).unwrap(),
        )
        .unwrap();
        splits.push(s);
    }
    let mut seen = BTreeSet::new();
    for s in &splits {
        assert_eq!(s.train.len() + s.val.len(), 183);
        for e in &s.val {
            assert!(
                seen.insert(e.path.clone()),
                "{} validated by two folds",
                e.path
            );
        }
        let v: BTreeSet<String> = s.val.iter().map(|e| group(&e.path)).collect();
        let t: BTreeSet<String> = s.train.iter().map(|e| group(&e.path)).collect();
        assert!(v.is_disjoint(&t), "a patient on both sides");
    }
    assert_eq!(seen.len(), 183, "the folds' validation sides miss images");
}

#[test]
fn patience_stops_a_run_after_that_many_epochs_without_improvement() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let o = train(
        dir.path(),
        &["--epochs", "6", "--patience", "1", "--out", "p"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Replay the rule on the recorded metrics: stop once an epoch fails to beat the best.
    let text = fs::read_to_string(dir.path().join("p/metrics.csv")).unwrap();
    let rows: Vec<(f64, f64)> = text
        .lines()
        .skip(1)
        .map(|l| {
            let v: Vec<f64> = l.split(',').map(|x| x.parse().unwrap()).collect();
            (v[5], v[3])
        })
        .collect();
    let mut best: Option<(f64, f64)> = None;
    let mut expected = 6;
    for (i, &(f1, loss)) in rows.iter().enumerate() {
        let better = best.is_none_or(|(bf, bl)| f1 > bf || (f1 == bf && loss < bl));
        if better {
            best = Some((f1, loss));
        } else {
            expected = i + 1;
            break;
        }
    }
    assert_eq!(rows.len(), expected, "{text}");
    assert_eq!(
        stdout(&o).contains("stopped early"),
        expected < 6,
        "{}",
        stdout(&o)
    );
}

#[test]
fn init_starts_from_an_imported_checkpoint() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let weights = common::fixtures().join("googlenet_2.safetensors");
    let o = inception(
        dir.path(),
        &[
            "import",
            "--arch",
            "googlenet",
            "--weights",
            weights.to_str().unwrap(),
            "--classes",
            "x,y",
            "--transform-input",
            "--out",
            "start.pt",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = train(
        dir.path(),
        &[
            "--arch",
            "googlenet",
            "--aux-logits",
            "true",
            "--init",
            "start.pt",
            "--out",
            "r",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("init: 364 tensors from start.pt; 0 start fresh"),
        "{out}"
    );
    let best = checkpoint::load(&dir.path().join("r/best.pt"), Device::Cpu).unwrap();
    assert!(
        best.meta.transform_input,
        "transform_input comes from the init checkpoint"
    );
    // A checkpoint of another network is refused.
    let o = train(dir.path(), &["--init", "start.pt", "--out", "s"]);
    let err = assert_clean_failure(&o);
    assert!(err.contains("a googlenet checkpoint, not seed"), "{err}");
}

#[test]
fn val_fraction_zero_trains_on_every_image_and_ships_model_pt_only() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let o = train(dir.path(), &["--val-fraction", "0", "--out", "all"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("no validation images (val_fraction 0)"),
        "{out}"
    );
    assert!(out.contains("183 train, 0 val"), "{out}");
    let run = dir.path().join("all");
    assert!(run.join("model.pt").exists() && run.join("last.pt").exists());
    assert!(!run.join("best.pt").exists());
    let text = fs::read_to_string(run.join("metrics.csv")).unwrap();
    let row: Vec<&str> = text.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(&row[3..6], ["", "", ""], "{text}");
    let model = checkpoint::load(&run.join("model.pt"), Device::Cpu).unwrap();
    let rec = model.meta.training.unwrap();
    assert_eq!((rec.split.train.len(), rec.split.val.len()), (183, 0));
    // Early stopping needs validation images.
    let o = train(dir.path(), &["--val-fraction", "0", "--patience", "2"]);
    let err = assert_clean_failure(&o);
    assert!(err.contains("patience needs validation images"), "{err}");
}

#[test]
fn the_weight_average_moves_by_the_warmed_up_decay() {
    use inception::model::{Arch, Model, NetConfig};
    use inception::precision::{Compute, Precision};
    use inception::train::ema::Ema;

    let compute = Compute::new(Device::Cpu, Precision::Fp32, false).unwrap();
    tch::manual_seed(1);
    let model = Model::new(NetConfig::new(Arch::Seed, 2), Device::Cpu).unwrap();
    let mut ema = Ema::new(&model, 0.99, compute).unwrap();
    assert!((ema.decay_at(0) - 0.1).abs() < 1e-12);
    assert!((ema.decay_at(90) - 0.91).abs() < 1e-12);
    assert!((ema.decay_at(100_000) - 0.99).abs() < 1e-12);
    let before = model.state_dict()["conv1.weight"].copy();
    tch::no_grad(|| {
        for (_, mut t) in model.state_dict() {
            if t.kind() != tch::Kind::Int64 {
                let _ = t.g_add_scalar_(1.0);
            }
        }
    });
    ema.update(&model, 90).unwrap();
    let avg = &ema.model.state_dict()["conv1.weight"];
    let want = &before * 0.91 + (&before + 1.0) * 0.09;
    let diff = (avg - want).abs().max().double_value(&[]);
    assert!(diff < 1e-6, "{diff}");
    // BatchNorm statistics are averaged too.
    let averaged = ema.model.state_dict();
    let (name, rv) = averaged
        .iter()
        .find(|(k, _)| k.ends_with("running_var"))
        .unwrap();
    let mean = rv.mean(tch::Kind::Float).double_value(&[]);
    assert!((mean - 1.09).abs() < 1e-6, "{name}: {mean}");
}

#[test]
fn mixup_and_cutmix_mix_each_batch_with_its_reverse_by_the_drawn_share() {
    use inception::train::epoch::Mixing;
    use tch::{Kind, Tensor};

    let mut cfg = TrainConfig {
        mixup: 0.4,
        ..TrainConfig::default()
    };
    let x = Tensor::randn([4, 3, 16, 16], (Kind::Float, Device::Cpu));
    let m = Mixing::draw(&cfg, 3, 1, 16).unwrap();
    assert_eq!(
        Mixing::draw(&cfg, 3, 1, 16),
        Some(m),
        "the draw depends on the seed alone"
    );
    let Mixing::Mixup { lambda } = m else {
        panic!("mixup only, got {m:?}")
    };
    assert!((0.0..=1.0).contains(&lambda));
    let want = &x * lambda + x.flip([0]) * (1.0 - lambda);
    assert!(m.apply(&x).unwrap().allclose(&want, 1e-6, 1e-6, false));

    cfg.mixup = 0.0;
    cfg.cutmix = 1.0;
    let mut boxes = 0;
    for batch in 0..20 {
        let m = Mixing::draw(&cfg, 0, batch, 16).unwrap();
        let Mixing::Cutmix {
            lambda,
            y0,
            y1,
            x0,
            x1,
        } = m
        else {
            panic!("cutmix only, got {m:?}")
        };
        let area = ((y1 - y0) * (x1 - x0)) as f64;
        assert!((lambda - (1.0 - area / 256.0)).abs() < 1e-12, "{m:?}");
        let mixed = m.apply(&x).unwrap();
        let inside = Tensor::zeros([4, 3, 16, 16], (Kind::Bool, Device::Cpu));
        let _ = inside.slice(2, y0, y1, 1).slice(3, x0, x1, 1).fill_(1);
        let expected = x.flip([0]).where_self(&inside, &x);
        assert!(mixed.equal(&expected), "{m:?}");
        boxes += usize::from(area > 0.0);
    }
    assert!(boxes > 10, "almost no box was pasted");
    cfg.cutmix = 0.0;
    assert_eq!(Mixing::draw(&cfg, 0, 0, 16), None);
}

#[test]
fn mixing_changes_what_training_optimises() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let loss = |extra: &[&str], out: &str| {
        let mut args = vec!["--out", out];
        args.extend(extra);
        let o = train(dir.path(), &args);
        assert!(o.status.success(), "{}", stderr(&o));
        metric_rows(&dir.path().join(out))[1]
            .split(',')
            .nth(1)
            .unwrap()
            .to_string()
    };
    let plain = loss(&[], "plain");
    assert_ne!(plain, loss(&["--mixup", "0.4"], "mixup"));
    assert_ne!(plain, loss(&["--cutmix", "1.0"], "cutmix"));
}

#[test]
fn train_with_no_data_flag_trains_on_the_repositorys_copy_of_msld() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (config, out_s) = (smoke(), out.display().to_string());
    let o = inception(&repo(), &["train", "--config", &config, "--out", &out_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("data: data/monkeypox — 2 classes, 183 images"),
        "{}",
        stdout(&o)
    );
    assert!(out.join("model.pt").is_file());
}

#[test]
fn a_missing_data_folder_says_where_data_comes_from() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in ["train", "cv"] {
        let o = inception(dir.path(), &[cmd]);
        let err = assert_clean_failure(&o);
        assert!(
            err.contains("data folder data/monkeypox does not exist")
                && err.contains("a clone of the repository has MSLD in data/monkeypox")
                && err.contains("data/README.md"),
            "{cmd}: {err}"
        );
        assert!(!dir.path().join("runs").exists(), "{cmd} made a run folder");
        // Checked before anything is announced: the error is all that is printed.
        assert_eq!(err.lines().count(), 1, "{cmd}: {err}");
    }
    let o = inception(
        dir.path(),
        &["eval", "--checkpoint", "absent.pt", "--data", &msld()],
    );
    let err = assert_clean_failure(&o);
    assert_eq!(err.lines().count(), 1, "eval: {err}");
}

#[test]
fn camera_named_photos_train_with_the_default_grouping_file_by_file() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("photos");
    for (class, source) in [("lesion", "Monkey Pox"), ("other", "Others")] {
        fs::create_dir_all(data.join(class)).unwrap();
        let mut files: Vec<_> = fs::read_dir(repo().join("data/monkeypox").join(source))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for (i, f) in files.iter().take(10).enumerate() {
            fs::copy(f, data.join(class).join(format!("IMG_{:04}.JPG", i))).unwrap();
        }
    }
    // The built-in recipe groups automatically.
    let builtin: TrainConfig = serde_json::from_str(inception::config::MONKEYPOX).unwrap();
    assert_eq!(builtin.group_by.to_string(), "auto");
    let (data_s, config) = (data.display().to_string(), smoke());
    let o = inception(
        dir.path(),
        &["train", "--data", &data_s, "--config", &config],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("groups: 20 by nothing, file by file (auto: the file-name prefix \"IMG\""),
        "{out}"
    );
    assert!(out.contains("→ 16 train, 4 val"), "{out}");
}

#[test]
fn a_run_draws_its_pictures_from_what_it_measured_and_no_plots_draws_none() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // fp32, so that predict's probabilities below are the ones validation computed.
    let o = train(
        dir.path(),
        &["--epochs", "3", "--out", "run", "--precision", "fp32"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let run = dir.path().join("run");

    // results.png: the metrics.csv columns, curve by curve (parsed here independently).
    let text = fs::read_to_string(run.join("metrics.csv")).unwrap();
    let rows: Vec<Vec<f64>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|x| x.parse().unwrap()).collect())
        .collect();
    let records: Vec<EpochRecord> = text
        .lines()
        .skip(1)
        .map(|l| EpochRecord::from_csv_row(l).unwrap())
        .collect();
    let panels = inception::plot::results::panels(&records);
    let column = |c: usize| -> Vec<(f64, f64)> { rows.iter().map(|r| (r[0], r[c])).collect() };
    let titles: Vec<&str> = panels.iter().map(|p| p.title).collect();
    assert_eq!(
        titles,
        ["loss", "accuracy", "validation macro-F1", "learning rate"]
    );
    assert_eq!(panels[0].series[0].points, column(1));
    assert_eq!(panels[0].series[1].points, column(3));
    assert_eq!(panels[1].series[0].points, column(2));
    assert_eq!(panels[1].series[1].points, column(4));
    assert_eq!(panels[2].series[0].points, column(5));
    assert_eq!(panels[3].series[0].points, column(6));
    let drawn = image::open(run.join("results.png")).unwrap().to_rgb8();
    assert!(
        drawn == inception::plot::results::render(&records).unwrap(),
        "results.png is not drawn from metrics.csv"
    );
    let blue = drawn.pixels().filter(|p| p.0 == [31, 119, 180]).count();
    let orange = drawn.pixels().filter(|p| p.0 == [255, 127, 14]).count();
    assert!(
        blue > 500 && orange > 500,
        "curves: {blue} blue, {orange} orange pixels"
    );

    // confusion_matrix.png and roc.png: model.pt on the validation images, as eval and
    // predict measure it.
    let ckpt = run.join("model.pt").display().to_string();
    let o = inception(
        dir.path(),
        &["eval", "--checkpoint", &ckpt, "--json", "--plots", "p"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let e: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let confusion: Vec<Vec<usize>> = serde_json::from_value(e["confusion"].clone()).unwrap();
    let classes = vec!["Monkey Pox".to_string(), "Others".to_string()];
    let title = format!(
        "model.pt (epoch 3) on the {} validation images",
        e["images"]
    );
    let expected = inception::plot::confusion::render(&classes, &confusion, &title).unwrap();
    let drawn = image::open(run.join("confusion_matrix.png"))
        .unwrap()
        .to_rgb8();
    assert!(
        drawn == expected,
        "confusion_matrix.png is not eval's confusion matrix"
    );
    let split: SplitFiles =
        serde_json::from_str(&fs::read_to_string(run.join("split.json")).unwrap()).unwrap();
    let mut args = vec![
        "predict".to_string(),
        "--json".into(),
        "--precision".into(),
        "fp32".into(),
        "--checkpoint".into(),
        ckpt.clone(),
    ];
    args.extend(split.val.iter().map(|f| format!("{}/{}", msld(), f.path)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = inception(dir.path(), &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let preds: Vec<Value> = serde_json::from_str(&stdout(&o)).unwrap();
    let scores: Vec<f64> = preds
        .iter()
        .map(|p| {
            p["top_k"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["class"] == "Monkey Pox")
                .unwrap()["probability"]
                .as_f64()
                .unwrap()
        })
        .collect();
    let labels: Vec<usize> = split
        .val
        .iter()
        .map(|f| usize::from(f.class != "Monkey Pox"))
        .collect();
    let curve = inception::plot::roc::Curve {
        name: title,
        points: inception::metrics::roc_curve(&scores, &labels),
        auc: inception::metrics::roc_auc(&scores, &labels),
        bold: false,
    };
    let expected = inception::plot::roc::render(&[curve], "Monkey Pox").unwrap();
    let drawn = image::open(run.join("roc.png")).unwrap().to_rgb8();
    assert!(
        drawn == expected,
        "roc.png is not the ROC of predict's probabilities"
    );
    // eval --plots drew the same kinds of picture into its folder.
    for f in ["confusion_matrix.png", "roc.png"] {
        let img = image::open(dir.path().join("p").join(f)).unwrap();
        assert!(img.width() >= 700, "{f}");
    }

    // train_batch0.jpg: the first batch of 16 at 64 px, enlarged to 128 px tiles, 4×4.
    let mosaic = image::open(run.join("train_batch0.jpg")).unwrap().to_rgb8();
    assert_eq!(mosaic.dimensions(), (512, 512));
    let colours: BTreeSet<[u8; 3]> = mosaic.pixels().map(|p| p.0).collect();
    assert!(colours.len() > 1000, "{} colours", colours.len());

    let o = train(
        dir.path(),
        &["--epochs", "1", "--out", "quiet", "--no-plots"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        "results.png",
        "confusion_matrix.png",
        "roc.png",
        "train_batch0.jpg",
    ] {
        assert!(
            !dir.path().join("quiet").join(f).exists(),
            "{f} with --no-plots"
        );
    }
}

#[test]
fn resume_refuses_another_end_for_a_cosine_schedule_and_says_how_to_train_on() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let o = train(
        dir.path(),
        &["--epochs", "1", "--schedule", "cosine", "--out", "run"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let last = dir.path().join("run/last.pt").display().to_string();
    let before = fs::read(dir.path().join("run/metrics.csv")).unwrap();
    let o = inception(dir.path(), &["train", "--resume", &last, "--epochs", "3"]);
    let err = assert_clean_failure(&o);
    assert!(
        err.contains("planned for 1 epochs") && err.contains("inception train --init"),
        "{err}"
    );
    assert_eq!(
        fs::read(dir.path().join("run/metrics.csv")).unwrap(),
        before
    );
    // The same end is fine (nothing left to run), and a constant schedule may be extended.
    let o = inception(dir.path(), &["train", "--resume", &last, "--epochs", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = train(dir.path(), &["--epochs", "1", "--out", "flat"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let flat = dir.path().join("flat/last.pt").display().to_string();
    let o = inception(dir.path(), &["train", "--resume", &flat, "--epochs", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lrs: Vec<String> = fs::read_to_string(dir.path().join("flat/metrics.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(6).unwrap().to_string())
        .collect();
    assert_eq!(lrs.len(), 2);
    assert_eq!(lrs[0], lrs[1], "a constant schedule keeps its rate");
}

#[test]
fn a_resumed_run_removes_the_temporary_files_of_killed_saves_and_nothing_else() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let o = train(dir.path(), &["--epochs", "1", "--out", "run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = dir.path().join("run");
    // A save killed mid-write (a process id that cannot exist), one of this test's own process
    // (alive), and files that only look similar.
    let dead = run.join(".best.pt.tmp-2147483646");
    let alive = run.join(format!(".last.pt.tmp-{}", std::process::id()));
    let others = [
        run.join(".notes.tmp-abc"),
        run.join("mine.tmp-5"),
        run.join(".tmp-7"),
    ];
    for f in others.iter().chain([&dead, &alive]) {
        fs::write(f, "x").unwrap();
    }
    let last = run.join("last.pt").display().to_string();
    let o = inception(dir.path(), &["train", "--resume", &last, "--epochs", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("removed"), "{}", stdout(&o));
    assert!(!dead.exists(), "the killed save's file is still there");
    assert!(
        alive.exists(),
        "a live process's temporary file was removed"
    );
    for f in &others {
        assert!(f.exists(), "{} was removed", f.display());
    }
}

#[test]
fn skip_bad_goes_through_train_eval_and_predict_and_corrupt_checkpoints_are_refused_by_name() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // 12 photos of each class, and one cut JPEG in each.
    let data = dir.path().join("photos");
    for class in ["Monkey Pox", "Others"] {
        fs::create_dir_all(data.join(class)).unwrap();
        let mut files: Vec<_> = fs::read_dir(repo().join("data/monkeypox").join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files.iter().take(12) {
            fs::copy(f, data.join(class).join(f.file_name().unwrap())).unwrap();
        }
        let bytes = fs::read(&files[12]).unwrap();
        fs::write(data.join(class).join("cut.jpg"), &bytes[..bytes.len() / 2]).unwrap();
    }
    let (d, config) = (data.display().to_string(), smoke());
    let base = [
        "train",
        "--data",
        &d,
        "--config",
        &config,
        "--group-by",
        "none",
    ];
    let o = inception(dir.path(), &[&base[..], &["--out", "a"]].concat());
    let err = assert_clean_failure(&o);
    assert!(
        err.contains("2 images cannot be read") && err.contains("cut.jpg: truncated"),
        "{err}"
    );
    assert!(
        !dir.path().join("a").exists(),
        "a refused run left a folder"
    );
    let o = inception(
        dir.path(),
        &[&base[..], &["--out", "b", "--skip-bad"]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("24 images (2 unreadable skipped"), "{out}");
    assert_eq!(out.matches("  skipped: ").count(), 2, "{out}");

    // skip_bad, init and folds from a config file; --no-skip-bad, --no-init and --no-folds
    // switch each off (each refusal below comes from the one setting left on).
    let mut cfg: Value = serde_json::from_str(&fs::read_to_string(&config).unwrap()).unwrap();
    cfg["skip_bad"] = true.into();
    cfg["init"] = "no-such-init.pt".into();
    cfg["folds"] = 3.into();
    cfg["fold"] = 7.into();
    fs::write(dir.path().join("file.json"), cfg.to_string()).unwrap();
    let from_file = |extra: &[&str]| {
        let mut args = vec!["train", "--data", &d, "--config", "file.json"];
        args.extend(["--group-by", "none"]);
        args.extend(extra);
        inception(dir.path(), &args)
    };
    let err = assert_clean_failure(&from_file(&["--no-folds", "--out", "x"]));
    assert!(err.contains("no-such-init.pt"), "{err}");
    let err = assert_clean_failure(&from_file(&["--no-init", "--out", "x"]));
    assert!(err.contains("fold") && err.contains('7'), "{err}");
    let err = assert_clean_failure(&from_file(&[
        "--no-init",
        "--no-folds",
        "--no-skip-bad",
        "--out",
        "x",
    ]));
    assert!(err.contains("cut.jpg: truncated"), "{err}");
    let o = from_file(&["--no-init", "--no-folds", "--out", "c"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("24 images (2 unreadable skipped"));
    let saved: Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join("c/config.json")).unwrap())
            .unwrap();
    assert_eq!(
        (&saved["skip_bad"], &saved["init"], &saved["folds"]),
        (&Value::Bool(true), &Value::Null, &Value::Null)
    );
    let err = assert_clean_failure(&inception(
        dir.path(),
        &["cv", "--data", &d, "--config", &config, "--no-folds"],
    ));
    assert!(err.contains("--no-folds is for train"), "{err}");

    let ckpt = dir.path().join("b/model.pt").display().to_string();
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--checkpoint", &ckpt, "--data", &d, "--json"];
        args.extend(extra);
        inception(dir.path(), &args)
    };
    let err = assert_clean_failure(&eval(&[]));
    assert!(err.contains("cut.jpg: truncated"), "{err}");
    let o = eval(&["--skip-bad"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(e["images"], 24);
    let skipped: Vec<String> = serde_json::from_value(e["skipped"].clone()).unwrap();
    assert_eq!(skipped.len(), 2);
    assert!(
        skipped.iter().all(|s| s.contains("cut.jpg: truncated")),
        "{skipped:?}"
    );

    // A checkpoint cut short and one with a flipped bit: predict, eval and --resume refuse them
    // by name.
    let good = fs::read(dir.path().join("b/model.pt")).unwrap();
    fs::write(dir.path().join("cut.pt"), &good[..good.len() / 2]).unwrap();
    let mut flipped = good.clone();
    let at = flipped.len() - 1000;
    flipped[at] ^= 0x10;
    fs::write(dir.path().join("flipped.pt"), &flipped).unwrap();
    let last = fs::read(dir.path().join("b/last.pt")).unwrap();
    fs::create_dir_all(dir.path().join("r")).unwrap();
    fs::write(dir.path().join("r/last.pt"), &last[..last.len() - 7]).unwrap();
    let img = data.join("Others").display().to_string();
    for (bad, args) in [
        (
            "cut.pt",
            vec!["predict", "--checkpoint", "cut.pt", img.as_str()],
        ),
        (
            "flipped.pt",
            vec!["predict", "--checkpoint", "flipped.pt", img.as_str()],
        ),
        (
            "cut.pt",
            vec!["eval", "--checkpoint", "cut.pt", "--data", &d],
        ),
        (
            "flipped.pt",
            vec!["eval", "--checkpoint", "flipped.pt", "--data", &d],
        ),
        ("r/last.pt", vec!["train", "--resume", "r/last.pt"]),
    ] {
        let err = assert_clean_failure(&inception(dir.path(), &args));
        assert!(err.contains(bad), "{args:?}: {err}");
        assert!(
            err.contains("checksum mismatch") || err.contains("truncated or corrupted"),
            "{args:?}: {err}"
        );
    }
}

/// Whether `dir` holds a checkpoint's temporary file of process `pid` (any process: `None`).
fn save_in_progress(dir: &Path, pid: Option<u32>) -> bool {
    let tag = match pid {
        Some(p) => format!(".pt.tmp-{p}"),
        None => ".pt.tmp-".into(),
    };
    fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.contains(&tag) && (pid.is_none() || name.ends_with(&tag))
        })
    })
}

#[test]
fn a_run_killed_at_random_moments_and_during_saves_ends_bit_for_bit_like_an_uninterrupted_one() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let recipe = ["--epochs", "5", "--ema-decay", "0.9", "--no-plots"];
    let a = dir.path().join("a");
    let o = train(
        dir.path(),
        &[&recipe[..], &["--out", a.to_str().unwrap()]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));

    let b = dir.path().join("b");
    let (data, config) = (msld(), smoke());
    let spawn = |resume: bool| {
        let mut cmd = common::bin();
        if resume {
            cmd.args(["train", "--resume", b.join("last.pt").to_str().unwrap()]);
        } else {
            cmd.args(["train", "--data", &data, "--config", &config])
                .args(recipe)
                .arg("--out")
                .arg(&b);
        }
        cmd.env(inception::checkpoint::SLOW_SAVE_ENV, "150")
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut kills, mut during_saves, mut of_resumed) = (0, 0, 0);
    let mut resume = false;
    while kills < 12 {
        let mut child = spawn(resume);
        let pid = child.id();
        let started = Instant::now();
        // A new run is killed only once its first epoch is saved (before, it would just start
        // over). Then every other kill waits for one of this process's saves to be under way;
        // the others come at a random moment, 0.2–3.2 s later.
        let in_save = kills % 2 == 1;
        let delay = Duration::from_millis(200 + next() % 3000);
        let mut since: Option<Instant> = None;
        loop {
            assert!(started.elapsed() < Duration::from_secs(120), "stuck");
            if since.is_none() && (resume || b.join("last.pt").exists()) {
                since = Some(Instant::now());
            }
            let ready = match since {
                None => false,
                Some(_) if in_save => save_in_progress(&b, Some(pid)),
                Some(t) => t.elapsed() >= delay,
            };
            if ready || child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if child.try_wait().unwrap().is_some() {
            // The run got to its end before this kill: no more kills to make.
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        of_resumed += usize::from(resume);
        during_saves += usize::from(save_in_progress(&b, Some(pid)));
        assert!(
            !b.join("model.pt").exists(),
            "a kill came after the run ended"
        );
        // Whatever the kill hit, the checkpoints on disk are whole.
        for f in ["last.pt", "best.pt"] {
            if b.join(f).exists() {
                checkpoint::load(&b.join(f), Device::Cpu)
                    .unwrap_or_else(|e| panic!("{f} after kill {kills}: {e:#}"));
            }
        }
        resume = true;
    }
    assert!(kills >= 10, "only {kills} kills before the run ended");
    assert!(during_saves >= 3, "only {during_saves} kills during a save");
    assert!(of_resumed >= 3, "only {of_resumed} kills of resumed runs");
    // Let it finish.
    let status = spawn(resume).wait().unwrap();
    assert!(status.success());
    assert_eq!(metric_rows(&a), metric_rows(&b), "metrics differ");
    for f in ["model.pt", "last.pt", "best.pt"] {
        let (x, y) = (
            checkpoint::load(&a.join(f), Device::Cpu).unwrap(),
            checkpoint::load(&b.join(f), Device::Cpu).unwrap(),
        );
        assert_eq!(x.meta.checksum, y.meta.checksum, "{f} differs");
    }
    // The killed saves left nothing behind once the run reopened its folder.
    assert!(!save_in_progress(&b, None), "stale temporary files");
}

#[test]
fn fp16_trains_with_loss_scaling_and_resumes_its_scale_exactly() {
    // fp16 autocast on the CPU (slow there, but the same autocast, scaler and checkpoint code
    // as on CUDA), on 12 light and 12 dark noisy 24 px pictures: learnt within a few steps.
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let data = common::light_and_dark(dir.path(), 24);
    let (d, config) = (data.display().to_string(), smoke());
    let run = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--data",
            &d,
            "--config",
            &config,
            "--precision",
            "fp16",
            "--image-size",
            "24",
            "--batch-size",
            "8",
            "--group-by",
            "none",
            "--no-plots",
        ];
        args.extend(extra);
        let o = inception(dir.path(), &args);
        assert!(o.status.success(), "{}", stderr(&o));
        o
    };
    let o = run(&["--epochs", "3", "--out", "a"]);
    assert!(stderr(&o).contains("compute: fp16"), "{}", stderr(&o));
    let rows: Vec<EpochRecord> = fs::read_to_string(dir.path().join("a/metrics.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|r| EpochRecord::from_csv_row(r).unwrap())
        .collect();
    assert!(
        rows[2].train_loss < rows[0].train_loss,
        "the loss did not fall: {rows:?}"
    );
    let resume_state = |run: &str| {
        let ckpt = checkpoint::load(&dir.path().join(run).join("last.pt"), Device::Cpu).unwrap();
        ckpt.meta.training.unwrap().resume.unwrap()
    };
    let a = resume_state("a");
    let scaler = a.scaler.expect("last.pt of an fp16 run keeps the scaler");
    assert!(
        scaler.scale <= 65536.0 && scaler.scale.log2().fract() == 0.0,
        "{scaler:?}"
    );
    // 9 steps (3 epochs of 3 batches): each stepped or was skipped, and the tracker counts
    // the clean ones since the last skip.
    println!("{a:?}");
    assert!(a.optimizer_step <= 9 && scaler.growth_tracker <= a.optimizer_step);

    // Stopped after 1 epoch and resumed to 3: the same scaler state and the same weights.
    run(&["--epochs", "1", "--out", "b"]);
    let o = inception(
        dir.path(),
        &["train", "--resume", "b/last.pt", "--epochs", "3"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(resume_state("b"), a);
    for f in ["model.pt", "last.pt"] {
        let load =
            |run: &str| checkpoint::load(&dir.path().join(run).join(f), Device::Cpu).unwrap();
        assert_eq!(
            load("a").meta.checksum,
            load("b").meta.checksum,
            "{f} differs"
        );
    }
}

#[test]
fn nproc_trains_in_processes_whose_rank_0_writes_the_run_and_a_dead_one_stops_the_others() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let data = common::light_and_dark(dir.path(), 24);
    let (d, config) = (data.display().to_string(), smoke());
    let args = |epochs: &'static str, out: &'static str| {
        vec![
            "train".to_string(),
            "--data".into(),
            d.clone(),
            "--config".into(),
            config.clone(),
            "--image-size".into(),
            "24".into(),
            "--batch-size".into(),
            "4".into(),
            "--group-by".into(),
            "none".into(),
            "--no-plots".into(),
            "--epochs".into(),
            epochs.into(),
            "--nproc".into(),
            "2".into(),
            "--out".into(),
            out.into(),
        ]
    };
    let a: Vec<String> = args("2", "a");
    let o = inception(
        dir.path(),
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("data-parallel: 2 processes (c10d, Gloo), 4 images per step each, 8 in all"),
        "{out}"
    );
    assert_eq!(
        out.matches("epoch   1/2").count(),
        1,
        "rank 1 spoke too: {out}"
    );
    assert_eq!(
        metric_rows(&dir.path().join("a")).len(),
        1 + 2,
        "header and 2 epochs"
    );
    checkpoint::load(&dir.path().join("a/model.pt"), Device::Cpu).unwrap();
    // Resumed in two processes to a longer (constant-schedule) run.
    let o = inception(
        dir.path(),
        &[
            "train",
            "--resume",
            "a/last.pt",
            "--epochs",
            "3",
            "--nproc",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("resuming a/last.pt after epoch 2"),
        "{}",
        stdout(&o)
    );
    assert_eq!(metric_rows(&dir.path().join("a")).len(), 1 + 3);
    // cv launched as several processes is refused: each would train every fold.
    let o = common::bin()
        .args(["cv", "--data", &d, "--config", &config])
        .env("WORLD_SIZE", "2")
        .env("RANK", "0")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = assert_clean_failure(&o);
    assert!(
        err.contains("every process would train every fold"),
        "{err}"
    );
    // The backend: NCCL asked for on the CPU, or one c10d does not have here, is refused
    // before any process starts.
    for (backend, why) in [
        ("nccl", "INCEPTION_DIST_BACKEND=nccl: NCCL needs CUDA devices, and this process computes on the CPU"),
        ("mpi", "INCEPTION_DIST_BACKEND=\"mpi\": expected gloo or nccl"),
    ] {
        let o = common::bin()
            .args(args("2", "c"))
            .env("INCEPTION_DIST_BACKEND", backend)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = assert_clean_failure(&o);
        assert!(err.contains(why), "{err}");
        assert!(!err.contains(" of 2 exited"), "processes were started: {err}");
        assert!(!dir.path().join("c").exists(), "a run folder was started");
    }

    // A long run whose rank 1 is killed: the launcher stops rank 0 and says what happened.
    let mut launcher = common::bin()
        .args(args("500", "b"))
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !dir.path().join("b/last.pt").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no last.pt after 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let children = |parent: u32| -> Vec<(u32, String)> {
        fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| {
                        s.rsplit(')')
                            .next()?
                            .split_whitespace()
                            .nth(1)?
                            .parse()
                            .ok()
                    })
                    == Some(parent)
            })
            .map(|pid| {
                let env = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                let rank = env
                    .split(|&b| b == 0)
                    .find_map(|v| v.strip_prefix(b"RANK="))
                    .map(|r| String::from_utf8_lossy(r).into_owned())
                    .unwrap_or_default();
                (pid, rank)
            })
            .collect()
    };
    let ranks = children(launcher.id());
    assert_eq!(ranks.len(), 2, "{ranks:?}");
    let rank1 = ranks.iter().find(|(_, r)| r == "1").unwrap().0;
    let rank0 = ranks.iter().find(|(_, r)| r == "0").unwrap().0;
    // SAFETY: sending SIGKILL to a child process of the launcher this test started.
    assert_eq!(unsafe { libc::kill(rank1 as i32, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let status = launcher.wait().unwrap();
    assert!(
        killed.elapsed() < Duration::from_secs(60),
        "the launcher hung"
    );
    let mut err = String::new();
    std::io::Read::read_to_string(&mut launcher.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "error: process 1 of 2 was killed by a signal; the other processes were stopped"
        ),
        "{err}"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{rank0}")).exists()
            || fs::read_to_string(format!("/proc/{rank0}/stat")).is_ok_and(|s| s.contains(") Z")),
        "rank 0 still runs"
    );
    // What rank 0 saved stays whole.
    checkpoint::load(&dir.path().join("b/last.pt"), Device::Cpu).unwrap();
}

/// Starts `inception` as ranks 0 and 1 of 2 by hand, as a scheduler would, each with its own
/// arguments, in `dir`; their outputs once both have ended (a panic after 90 s: they waited
/// instead of refusing).
fn two_ranks_by_hand(dir: &Path, ranks: [Vec<String>; 2]) -> Vec<std::process::Output> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let started = Instant::now();
    let mut children: Vec<_> = ranks
        .iter()
        .enumerate()
        .map(|(rank, args)| {
            common::bin()
                .args(args)
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .current_dir(dir)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    while children.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
        if started.elapsed() > Duration::from_secs(90) {
            children.iter_mut().for_each(|c| c.kill().unwrap_or(()));
            panic!("the processes waited instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

/// Every rank's error contains `what` and the rank's own `rank R of 2: {context}`.
fn all_refuse(outputs: &[std::process::Output], context: &str, what: &str) {
    for (rank, o) in outputs.iter().enumerate() {
        let err = assert_clean_failure(o);
        assert!(
            err.contains(&format!("rank {rank} of 2: {context}")),
            "{err}"
        );
        assert!(err.contains(what), "{err}");
    }
}

#[test]
fn processes_started_with_different_settings_data_or_checkpoints_all_refuse_before_training() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let data = common::light_and_dark(dir.path(), 24);
    let config = smoke();
    let train = |data: &Path, batch: &str, seed: &str, out: &str| -> Vec<String> {
        let args = [
            "train",
            "--data",
            data.to_str().unwrap(),
            "--config",
            &config,
            "--image-size",
            "24",
            "--group-by",
            "none",
            "--no-plots",
            "--batch-size",
            batch,
            "--seed",
            seed,
            "--out",
            out,
        ];
        args.iter().map(|a| a.to_string()).collect()
    };
    // Another batch size on rank 1: refused before the process group is made.
    let outputs = two_ranks_by_hand(
        dir.path(),
        [train(&data, "4", "0", "run"), train(&data, "2", "0", "run")],
    );
    all_refuse(
        &outputs,
        "joining the Gloo process group",
        "not started alike: rank 0 has batch_size=4 where rank 1 has batch_size=2",
    );
    assert!(!dir.path().join("run").exists(), "a run folder was started");
    // Rank 1's copy of the data lacks an image: refused once both have read their data.
    let other = dir.path().join("other");
    for class in ["light", "dark"] {
        fs::create_dir_all(other.join(class)).unwrap();
        for i in 0..12 {
            if (class, i) != ("dark", 5) {
                let f = format!("{class}/{i}.png");
                fs::copy(data.join(&f), other.join(&f)).unwrap();
            }
        }
    }
    let outputs = two_ranks_by_hand(
        dir.path(),
        [
            train(&data, "4", "0", "run"),
            train(&other, "4", "0", "run"),
        ],
    );
    all_refuse(
        &outputs,
        "comparing the data of ",
        "not started alike: rank 0 has train=",
    );
    assert!(
        outputs[0].stderr.ends_with(b"\n")
            && stderr(&outputs[0]).contains("images (paths and classes: CRC-32 ")
            && stderr(&outputs[0]).contains("where rank 1 has train="),
        "{}",
        stderr(&outputs[0])
    );
    assert!(!dir.path().join("run").exists(), "a run folder was started");
    // Each resuming from another run's last.pt (two runs of 1 epoch, other seeds) for a second epoch.
    for (seed, out) in [("0", "r0"), ("1", "r1")] {
        let mut alone = common::bin();
        let o = alone
            .args(train(&data, "4", seed, out))
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let resume = |run: &str| -> Vec<String> {
        [
            "train",
            "--resume",
            &format!("{run}/last.pt"),
            "--epochs",
            "2",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let outputs = two_ranks_by_hand(dir.path(), [resume("r0"), resume("r1")]);
    all_refuse(
        &outputs,
        "joining the Gloo process group",
        "not started alike: rank 0 has resume=after epoch 1, checksum ",
    );
    assert_eq!(
        metric_rows(&dir.path().join("r0")).len(),
        1 + 1,
        "r0 trained on"
    );
}

#[test]
fn two_processes_of_batch_4_train_like_one_of_batch_8_with_frozen_batchnorm_and_no_dropout() {
    // Per-process BatchNorm normalises each process's 4 images by their own statistics, not by
    // all 8 (by design, as DDP without SyncBatchNorm), and each process draws its own dropout
    // masks: with BatchNorm frozen (running statistics) and dropout 0 every image's gradient is
    // its own, and the averaged gradient of 2 × 4 is the gradient of 8 (with the other settings
    // of common::DATA_PARALLEL_EQUIVALENT), 16 training images.
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let data = common::light_and_dark(dir.path(), 24);
    let (d, config) = (data.display().to_string(), smoke());
    let run = |freeze: &str, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--data",
            &d,
            "--config",
            &config,
            "--freeze-bn",
            freeze,
            "--no-plots",
        ];
        args.extend(common::DATA_PARALLEL_EQUIVALENT);
        args.extend(extra);
        let o = inception(dir.path(), &args);
        assert!(o.status.success(), "{}", stderr(&o));
        o
    };
    let o = run("true", &["--batch-size", "8", "--out", "one"]);
    assert!(stdout(&o).contains("16 train, 8 val"), "{}", stdout(&o));
    run(
        "true",
        &["--batch-size", "4", "--nproc", "2", "--out", "two"],
    );
    let apart = |x: &str, y: &str| common::weights_apart(&dir.path().join(x), &dir.path().join(y));
    let d = apart("one", "two");
    assert!(d <= 1e-5, "2 × 4 and 1 × 8 differ by {d:e}");
    // The loss each logs is the loss over the same 8 images a step.
    let loss = |run: &str| -> Vec<f64> {
        fs::read_to_string(dir.path().join(run).join("metrics.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|r| EpochRecord::from_csv_row(r).unwrap().train_loss)
            .collect()
    };
    for (a, b) in loss("one").iter().zip(loss("two")) {
        assert!((a - b).abs() <= 1e-5 * a.abs(), "train loss {a} vs {b}");
    }
    // Without freezing, per-process batch statistics make them differ, as they should.
    run("false", &["--batch-size", "8", "--out", "three"]);
    run(
        "false",
        &["--batch-size", "4", "--nproc", "2", "--out", "four"],
    );
    let d = apart("three", "four");
    assert!(
        d > 1e-3,
        "with batch statistics, 2 × 4 and 1 × 8 differ by only {d:e}"
    );
}

#[test]
fn adamw_corrects_each_parameters_moments_by_its_own_updates_and_saves_the_counts() {
    // A backbone frozen for 50 steps and then thawed takes a first AdamW step of size lr (the
    // bias correction of its first update), as PyTorch's per-parameter `step` gives; corrected
    // by the run's 51 steps it would be 0.7·lr, and some ten steps later 1.6·lr.
    use inception::config::OptimizerKind;
    use inception::model::{Arch, Model, NetConfig};
    use inception::train::optim::Optimizer;

    tch::manual_seed(3);
    let model = Model::new(NetConfig::new(Arch::Seed, 2), Device::Cpu).unwrap();
    let mut opt = Optimizer::new(&model, OptimizerKind::Adamw, 0.9, 0.0).unwrap();
    let x = tch::Tensor::randn([4, 3, 64, 64], (tch::Kind::Float, Device::Cpu));
    let y = tch::Tensor::from_slice(&[0i64, 1, 0, 1]);
    let lr = 1e-3;
    let step = |opt: &mut Optimizer| {
        opt.zero_grad();
        let out = model.forward_t(&x, true).unwrap();
        out.logits.cross_entropy_for_logits(&y).backward();
        opt.step(lr).unwrap();
    };
    let w = |name: &str| model.state_dict()[name].detach().copy();
    let name = "conv1.weight";
    opt.freeze_backbone(true).unwrap();
    let before = w(name);
    for _ in 0..50 {
        step(&mut opt);
    }
    assert!(w(name).equal(&before), "a frozen parameter moved");
    opt.freeze_backbone(false).unwrap();
    step(&mut opt);
    let moved = (w(name) - &before).abs();
    let max = moved.max().double_value(&[]);
    assert!(
        max <= lr * 1.001 && max > lr * 0.95,
        "first step {max:e}, lr {lr:e}"
    );
    // The counts travel with the state: 51 updates of the head, 1 of the backbone.
    let state = opt.state();
    assert_eq!(
        state["optimizer.step.classifier.2.weight"].int64_value(&[]),
        51
    );
    assert_eq!(state[&format!("optimizer.step.{name}")].int64_value(&[]), 1);
    let mut other = Optimizer::new(&model, OptimizerKind::Adamw, 0.9, 0.0).unwrap();
    other.load_state(&state, opt.step).unwrap();
    assert_eq!(
        other.state()[&format!("optimizer.step.{name}")].int64_value(&[]),
        1
    );
}
