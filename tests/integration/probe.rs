//! The fitted linear probe (`probe_c`): its logistic regression against scikit-learn's, the
//! features it fits against the network's own logits, and a training run that starts from it.

use crate::common;

use inception::model::{Arch, Flips, Model, NetConfig};
use inception::train::probe::logistic_regression;
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

#[test]
fn pooled_features_times_the_class_layer_are_the_logits() {
    // Real weights (random ones leave nothing alive by the last layer): PyTorch's GoogLeNet of
    // a parity case, and the published EfficientNet-Lite0.
    let case = common::cases()
        .into_iter()
        .find(|c| c.arch == "googlenet")
        .expect("a googlenet parity case");
    let config = NetConfig {
        aux_logits: true,
        transform_input: case.transform_input,
        ..NetConfig::new(Arch::Googlenet, case.classes)
    };
    let mut googlenet = Model::new(config, Device::Cpu).unwrap();
    googlenet
        .load_state_dict(&common::state_dict(&case.name))
        .unwrap();
    let (x, _) = common::io(&case.name);
    let published = inception::model::published(Arch::EfficientnetLite0).unwrap();
    let file = inception::weights::hub::cache_dir()
        .unwrap()
        .join(published.file);
    let mut lite0 = Model::new(NetConfig::new(Arch::EfficientnetLite0, 1000), Device::Cpu).unwrap();
    lite0
        .load_state_dict(&inception::weights::read_state_dict(&file).unwrap())
        .unwrap();
    tch::manual_seed(3);
    let photo = Tensor::randn([2, 3, 96, 96], (Kind::Float, Device::Cpu));
    for (model, x) in [(&googlenet, &x), (&lite0, &photo)] {
        let arch = model.config.arch;
        let logits = tch::no_grad(|| model.forward_t(x, false)).unwrap().logits;
        let features = tch::no_grad(|| model.features(x)).unwrap();
        let sd = model.state_dict();
        let layer = arch.class_layer().unwrap();
        let w = &sd[&format!("{layer}.weight")];
        let b = &sd[&format!("{layer}.bias")];
        assert_eq!(features.size(), vec![x.size()[0], w.size()[1]], "{arch}");
        let again = features.matmul(&w.tr()) + b;
        let err = common::relative_error(&again, &logits);
        assert!(
            err < 1e-5,
            "{arch}: features·Wᵀ + b is {err:e} off the logits"
        );
        // The two images' logits differ by far more than that, so the check means something.
        let spread = common::relative_error(&logits.get(0), &logits.get(1));
        assert!(spread > 1e-3, "{arch}: degenerate input ({spread:e})");
    }
    let seed = Model::new(NetConfig::new(Arch::Seed, 2), Device::Cpu).unwrap();
    let x = Tensor::randn([1, 3, 64, 64], (Kind::Float, Device::Cpu));
    let err = seed.features(&x).unwrap_err().to_string();
    assert!(err.contains("seed"), "{err}");
}

#[test]
fn a_network_that_averages_over_flips_answers_the_same_for_a_flipped_photo() {
    let published = inception::model::published(Arch::EfficientnetLite0).unwrap();
    let file = inception::weights::hub::cache_dir()
        .unwrap()
        .join(published.file);
    let sd = inception::weights::read_state_dict(&file).unwrap();
    let net = |flips: Flips| {
        let config = NetConfig {
            flips,
            ..NetConfig::new(Arch::EfficientnetLite0, 1000)
        };
        let mut m = Model::new(config, Device::Cpu).unwrap();
        m.load_state_dict(&sd).unwrap();
        m
    };
    let both = Flips {
        horizontal: true,
        vertical: true,
    };
    let (plain, averaging) = (net(Flips::default()), net(both));
    tch::manual_seed(5);
    let x = Tensor::randn([2, 3, 96, 96], (Kind::Float, Device::Cpu));
    let logits = |m: &Model, x: &Tensor| tch::no_grad(|| m.forward_t(x, false)).unwrap().logits;
    // The four views' mean: the same for the photo and each of its flips.
    let z = logits(&averaging, &x);
    for dims in [vec![3i64], vec![2], vec![2, 3]] {
        let flipped = logits(&averaging, &x.flip(dims.as_slice()));
        let err = common::relative_error(&flipped, &z);
        assert!(err < 1e-5, "flip {dims:?}: {err:e}");
        // The plain network's answer does change, so the check can fail.
        let moved = common::relative_error(
            &logits(&plain, &x.flip(dims.as_slice())),
            &logits(&plain, &x),
        );
        assert!(
            moved > 1e-3,
            "flip {dims:?} moves the plain network by only {moved:e}"
        );
    }
    // It is the class layer on the mean of the four views' features.
    let views: Vec<Tensor> = [vec![], vec![3i64], vec![2], vec![2, 3]]
        .iter()
        .map(|d| {
            let v = if d.is_empty() {
                x.shallow_clone()
            } else {
                x.flip(d.as_slice())
            };
            tch::no_grad(|| plain.features(&v)).unwrap()
        })
        .collect();
    let mean = Tensor::stack(&views, 0).mean_dim(0, false, Kind::Float);
    let want = mean.matmul(&sd["_fc.weight"].tr()) + &sd["_fc.bias"];
    let err = common::relative_error(&z, &want);
    assert!(
        err < 1e-5,
        "flip-averaged logits vs the mean of the views' features: {err:e}"
    );
    let err = common::relative_error(&tch::no_grad(|| averaging.features(&x)).unwrap(), &mean);
    assert!(err < 1e-5, "features(): {err:e}");
    // The seed network has no single class layer to average for.
    let seed = NetConfig {
        flips: both,
        ..NetConfig::new(Arch::Seed, 2)
    };
    let err = Model::new(seed, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("single class layer"), "{err}");
}

/// Features, labels and weights of a synthetic problem with `k` overlapping classes.
fn problem(n: i64, d: i64, k: i64, seed: i64) -> (Tensor, Vec<i64>, Vec<f64>) {
    tch::manual_seed(seed);
    let labels: Vec<i64> = (0..n).map(|i| (i * 7 + i / 3) % k).collect();
    let y = Tensor::from_slice(&labels);
    let centres = Tensor::randn([k, d], (Kind::Double, Device::Cpu)) * 0.8;
    let x = centres.index_select(0, &y)
        + Tensor::randn([n, d], (Kind::Double, Device::Cpu)) * 1.5
        + 2.0;
    let class_weight = [0.8, 1.3, 1.05];
    let weights = labels.iter().map(|&c| class_weight[c as usize]).collect();
    (x, labels, weights)
}

#[test]
fn the_fitted_probe_equals_scikit_learns_logistic_regression() {
    // (classes, C, seed, images, features): the last as the probe meets MSLD's folds, more
    // features than images, which the classes separate.
    let cases = [
        (2i64, 0.3f64, 11i64, 90i64, 12i64),
        (3, 0.05, 12, 90, 12),
        (3, 4.0, 13, 90, 12),
        (2, 0.5, 14, 40, 600),
    ];
    let mut inputs = vec![];
    let mut ours = vec![];
    for &(k, c, seed, n, d) in &cases {
        let (x, y, s) = problem(n, d, k, seed);
        let fit = logistic_regression(&x, &y, &s, k, c).unwrap();
        assert!(
            fit.converged,
            "k={k} C={c} {n}×{d}: largest gradient {:e}",
            fit.grad_max
        );
        let probs = (x.matmul(&fit.weight.tr()) + &fit.bias).softmax(-1, Kind::Double);
        // The bias is unique only up to a shared constant: ours keeps Σ b = 0.
        let bsum = fit.bias.sum(Kind::Double).double_value(&[]);
        assert!(bsum.abs() < 1e-9, "k={k}: Σ b = {bsum}");
        // With two classes scikit-learn fits one row v = W₁ − W₀ with penalty ‖v‖²/(2C′);
        // the softmax's two rows ±v/2 carry ‖v‖²/2, so C′ = 2C.
        let sk_c = if k == 2 { 2.0 * c } else { c };
        inputs.push(json!({
            "x": Vec::<Vec<f64>>::try_from(&x).unwrap(), "y": y, "w": s, "c": sk_c,
        }));
        ours.push((fit, probs));
    }
    let script = r#"
import json, sys
import numpy as np
from sklearn.linear_model import LogisticRegression
out = []
for case in json.load(open(sys.argv[1])):
    m = LogisticRegression(C=case["c"], tol=1e-12, max_iter=100000)
    m.fit(np.array(case["x"]), np.array(case["y"]), sample_weight=np.array(case["w"]))
    out.append({"proba": m.predict_proba(np.array(case["x"])).tolist(),
                "coef": m.coef_.tolist()})
json.dump(out, open(sys.argv[2], "w"))
"#;
    let dir = tempfile::tempdir().unwrap();
    let (inp, outp) = (dir.path().join("in.json"), dir.path().join("out.json"));
    std::fs::write(&inp, serde_json::to_vec(&inputs).unwrap()).unwrap();
    let run = common::python_stats()
        .args(["-c", script])
        .arg(&inp)
        .arg(&outp)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "scikit-learn reference failed (`make deps`?):\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let refs: Vec<Value> = serde_json::from_slice(&std::fs::read(&outp).unwrap()).unwrap();
    for ((&(k, c, _, _, _), (fit, probs)), r) in cases.iter().zip(&ours).zip(&refs) {
        let rp = Tensor::from_slice(
            &r["proba"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
                .collect::<Vec<f64>>(),
        )
        .view([-1, k]);
        let dp = (probs - &rp).abs().max().double_value(&[]);
        assert!(
            dp < 1e-6,
            "k={k} C={c}: probabilities {dp:e} off scikit-learn's"
        );
        let coef: Vec<Vec<f64>> = serde_json::from_value(r["coef"].clone()).unwrap();
        let rc = Tensor::from_slice(&coef.concat()).view([coef.len() as i64, -1]);
        let mine = if k == 2 {
            (fit.weight.get(1) - fit.weight.get(0)).unsqueeze(0)
        } else {
            fit.weight.shallow_clone()
        };
        let dc = common::relative_error(&mine.to_kind(Kind::Float), &rc.to_kind(Kind::Float));
        assert!(dc < 1e-5, "k={k} C={c}: weights {dc:e} off scikit-learn's");
    }
    // Another C gives other probabilities: the comparison can fail.
    let (x, y, s) = problem(90, 12, 3, 12);
    let other = logistic_regression(&x, &y, &s, 3, 0.5).unwrap();
    let p = (x.matmul(&other.weight.tr()) + &other.bias).softmax(-1, Kind::Double);
    let d = (p - &ours[1].1).abs().max().double_value(&[]);
    assert!(d > 1e-2, "C = 0.5 and C = 0.05 agree within {d:e}");
}

#[test]
fn the_probe_refuses_what_it_cannot_fit() {
    let (x, y, s) = problem(10, 4, 2, 1);
    let bad = |r: anyhow::Result<_>| format!("{:#}", r.unwrap_err());
    assert!(bad(logistic_regression(&x, &y, &s, 2, 0.0)).contains("C must be"));
    assert!(bad(logistic_regression(&x, &y[..9], &s, 2, 1.0)).contains("9 labels"));
    assert!(bad(logistic_regression(&x, &y, &[-1.0; 10], 2, 1.0)).contains("weights must be"));
    let mut y3 = y.clone();
    y3[0] = 5;
    assert!(bad(logistic_regression(&x, &y3, &s, 2, 1.0)).contains("label 5"));
}

#[test]
fn a_run_with_probe_c_starts_from_the_fitted_class_layer() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let data = common::light_and_dark(dir.path(), 40);
    let run = |out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let mut args = vec![
            "train",
            "--data",
            data.to_str().unwrap(),
            "--arch",
            "efficientnet_lite0",
            "--pretrained",
            "--offline",
            "--image-size",
            "32",
            "--lr",
            "1e-9",
            "--warmup-epochs",
            "0",
            "--batch-size",
            "6",
            "--val-fraction",
            "0.25",
            "--no-plots",
            "--precision",
            "fp32",
            "--out",
            out.to_str().unwrap(),
        ];
        if !extra.contains(&"--epochs") {
            args.extend(["--epochs", "1", "--freeze-epochs", "1"]);
        }
        args.extend(extra);
        let o = common::inception(dir.path(), &args);
        assert!(o.status.success(), "{}", common::stderr(&o));
        (common::stdout(&o), out)
    };
    let (said, fitted) = run("fitted", &["--probe-c", "1"]);
    assert!(
        said.contains("linear probe: _fc fitted on the features of 18 training images (1280 each), C = 1: training accuracy 1.000"),
        "{said}"
    );
    let metrics = std::fs::read_to_string(fitted.join("metrics.csv")).unwrap();
    let row: Vec<&str> = metrics.lines().nth(1).unwrap().split(',').collect();
    // The class layer barely moved (lr 1e-9) from a fit that separates the classes.
    let val_acc: f64 = row[4].parse().unwrap();
    assert_eq!(
        val_acc, 1.0,
        "validation accuracy of the fitted probe: {metrics}"
    );
    // The probe alone: no epochs, its fit is the run's one record (epoch 0) and model.pt.
    let (said, alone) = run(
        "alone",
        &["--probe-c", "1", "--epochs", "0", "--freeze-epochs", "0"],
    );
    assert!(said.contains("epoch   0/0  train loss"), "{said}");
    let metrics = std::fs::read_to_string(alone.join("metrics.csv")).unwrap();
    let rows: Vec<&str> = metrics.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{metrics}");
    let row: Vec<&str> = rows[0].split(',').collect();
    assert_eq!(
        (row[0], row[2], row[4]),
        ("0", "1.000000", "1.000000"),
        "{metrics}"
    );
    for f in ["model.pt", "best.pt", "last.pt"] {
        assert!(alone.join(f).is_file(), "{f}");
    }
    // The same class layer as the run whose one epoch moved it by lr 1e-9.
    assert!(common::weights_apart(&alone, &fitted) < 1e-5);
    // With the flips the augmentation uses (the recipe's: both), each image in four views.
    let (said, _) = run("flips", &["--probe-c", "1", "--probe-flips", "true"]);
    assert!(
        said.contains("linear probe: _fc fitted on the features of 18 training images in 4 views (1280 each), C = 1: training accuracy 1.000"),
        "{said}"
    );
    // Averaging over flips: recorded in model.pt, and predict answers the same for a photo
    // and its mirror image.
    let (said, averaged) = run("averaged", &["--probe-c", "1", "--average-flips", "true"]);
    assert!(said.contains("training images (1280 each)"), "{said}");
    let meta = inception::checkpoint::read_meta(&averaged.join("model.pt")).unwrap();
    assert_eq!(
        meta.flips,
        Flips {
            horizontal: true,
            vertical: true
        }
    );
    // At the working size (32 px → 36, centre crop with equal margins) nothing is resampled,
    // so the mirror image's input is exactly the mirrored input.
    let (photo, mirror) = (dir.path().join("photo.png"), dir.path().join("mirror.png"));
    let img = image::RgbImage::from_fn(36, 36, |x, y| {
        image::Rgb([
            (x * 7 + y * 3) as u8,
            (x * y % 251) as u8,
            (200 - x * 5) as u8,
        ])
    });
    img.save(&photo).unwrap();
    image::imageops::flip_horizontal(&img)
        .save(&mirror)
        .unwrap();
    let o = common::inception(
        dir.path(),
        &[
            "predict",
            "--json",
            "--precision",
            "fp32",
            "--checkpoint",
            averaged.join("model.pt").to_str().unwrap(),
            photo.to_str().unwrap(),
            mirror.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let p: Value = serde_json::from_str(&common::stdout(&o)).unwrap();
    let (a, b) = (
        p[0]["probability"].as_f64().unwrap(),
        p[1]["probability"].as_f64().unwrap(),
    );
    assert!(
        (a - b).abs() < 1e-5 && p[0]["class"] == p[1]["class"],
        "{p}"
    );
    let (said, plain) = run("plain", &[]);
    assert!(!said.contains("linear probe"), "{said}");
    // The fit's signature in model.pt: fitted from zero, its two rows are each other's negative
    // and its biases sum to zero (lr 1e-9 moves them by less than 1e-6); a fresh layer's are not.
    let head = |run: &std::path::Path| {
        let sd = inception::checkpoint::load(&run.join("model.pt"), Device::Cpu)
            .unwrap()
            .model
            .state_dict();
        let (w, b) = (&sd["_fc.weight"], &sd["_fc.bias"]);
        let scale = w.abs().max().double_value(&[]);
        let rows = (w.get(0) + w.get(1)).abs().max().double_value(&[]) / scale;
        (rows, b.sum(Kind::Double).double_value(&[]).abs())
    };
    let (rows, bias) = head(&fitted);
    assert!(
        rows < 1e-4 && bias < 1e-4,
        "fitted: W₀ + W₁ {rows:e}, Σ b {bias:e}"
    );
    let (rows, _) = head(&plain);
    assert!(rows > 0.1, "a fresh class layer: W₀ + W₁ {rows:e}");
    let config: Value =
        serde_json::from_slice(&std::fs::read(fitted.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["probe_c"], 1.0);
    assert!(common::weights_apart(&fitted, &plain) > 0.0);
    // The seed network has no single class layer; a C of 0 is no C.
    for (args, want) in [
        (
            vec!["--arch", "seed", "--probe-c", "1"],
            "probe_c: arch seed",
        ),
        (
            vec!["--probe-c", "0"],
            "probe_c must be a positive number, got 0",
        ),
        (vec!["--probe-flips", "true"], "probe_flips needs probe_c"),
        (
            vec!["--epochs", "0"],
            "epochs must be at least 1 (0 only with probe_c",
        ),
        (
            vec!["--arch", "seed", "--average-flips", "true"],
            "average_flips: arch seed",
        ),
        (
            vec!["--average-flips", "true", "--hflip", "0", "--vflip", "0"],
            "average_flips needs a flip",
        ),
    ] {
        let mut all = vec!["train", "--data", data.to_str().unwrap()];
        all.extend(args);
        let o = common::inception(dir.path(), &all);
        let err = common::assert_clean_failure(&o);
        assert!(err.contains(want), "{err}");
    }
}
