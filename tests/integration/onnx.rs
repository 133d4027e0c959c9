//! `inception export --format onnx`: the written model passes `onnx.checker` (full check) and
//! strict shape inference, and ONNX Runtime, at basic and full graph optimisation, at batch 1
//! and 3, gives the tool's fp32 logits and probabilities for MSLD photos the tool preprocessed
//! (rtol 1e-4, atol 1e-5, same top-5), for every architecture — the seed network, GoogLeNet with
//! `transform_input`, EfficientNet-Lite0 with its ImageNet weights and flip averaging — at odd
//! image sizes down to the smallest each accepts, calibrated, and as an ensemble. Checked by
//! scripts/onnx_check.py with PyPI's onnx and onnxruntime (.deps/onnx).

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{assert_clean_failure, inception, repo, stderr};
use inception::checkpoint::{self, Meta};
use inception::data::image::load_rgb;
use inception::data::transform::{EvalTransform, Normalization};
use inception::ensemble::Ensemble;
use inception::model::{Arch, Flips, Model, NetConfig};
use inception::precision::{Compute, Precision};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

/// `python3` with .deps/onnx (onnx, onnxruntime) first on its path.
fn python_onnx() -> std::process::Command {
    let mut cmd = common::python();
    let onnx = repo().join(".deps/onnx");
    let path = std::env::var("PYTHONPATH").unwrap_or_default();
    cmd.env("PYTHONPATH", format!("{}:{path}", onnx.display()));
    cmd
}

/// A checkpoint of `arch` with `weights` (a fixture's state_dict, or fresh) at `size`.
#[allow(clippy::too_many_arguments)]
fn checkpoint_of(
    dir: &Path,
    name: &str,
    arch: Arch,
    classes: usize,
    size: i64,
    transform_input: bool,
    flips: Flips,
    weights: Option<&std::collections::BTreeMap<String, Tensor>>,
) -> PathBuf {
    // A fixture with auxiliary heads loads into a network that has them; export leaves them out.
    let aux_logits = weights.is_some_and(|sd| sd.keys().any(|k| k.starts_with("aux1.")));
    let config = NetConfig {
        transform_input,
        flips,
        aux_logits,
        ..NetConfig::new(arch, classes as i64)
    };
    tch::manual_seed(7);
    let mut model = Model::new(config, Device::Cpu).unwrap();
    if let Some(sd) = weights {
        model.load_state_dict(sd).unwrap();
    }
    let norm = match arch {
        Arch::EfficientnetLite0 => Normalization {
            mean: [0.498; 3],
            std: [0.502; 3],
        },
        _ => Normalization::IMAGENET,
    };
    let names = (0..classes).map(|c| format!("class {c}")).collect();
    let meta = Meta::new(config, names, size, norm, "a test".into());
    let path = dir.join(format!("{name}.pt"));
    checkpoint::save(&path, &model, &meta).unwrap();
    path
}

/// MSLD photos as the tool preprocesses them for `meta`: `[3, 3, S, S]`.
fn photos(meta: &Meta) -> Tensor {
    let t = EvalTransform {
        image_size: meta.image_size as u32,
        normalization: meta.normalization,
    };
    let imgs: Vec<_> = [
        "Monkey Pox/P13_1.jpg",
        "Others/1.jpg",
        "Monkey Pox/P19_2.jpg",
    ]
    .iter()
    .map(|p| load_rgb(&repo().join("data/monkeypox").join(p)).unwrap())
    .collect();
    t.batch(&imgs).unwrap()
}

fn write_f32(path: &Path, t: &Tensor) {
    let t = t.to_kind(Kind::Float).contiguous();
    let mut v = vec![0f32; t.numel()];
    t.copy_data(&mut v, t.numel());
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    fs::write(path, bytes).unwrap();
}

/// Exports `ckpts` as ONNX (dynamic batch) and checks it against the tool's logits and
/// probabilities in ONNX Runtime; the check's JSON.
fn export_and_check(dir: &Path, ckpts: &[&Path], extra: &[&str]) -> Value {
    export_and_check_within(dir, ckpts, extra, None)
}

/// As [`export_and_check`], the outputs within `tol` (an fp16 model's) and the same top-1.
fn export_and_check_within(dir: &Path, ckpts: &[&Path], extra: &[&str], tol: Option<f64>) -> Value {
    let out = dir.join(format!("model-{}.onnx", ckpts.len()));
    let mut args = vec!["export", "--format", "onnx", "--dynamic-batch", "--force"];
    for c in ckpts {
        args.extend(["--checkpoint", c.to_str().unwrap()]);
    }
    args.extend(["--out", out.to_str().unwrap()]);
    args.extend(extra);
    let o = inception(dir, &args);
    assert!(o.status.success(), "{}", stderr(&o));

    let compute = Compute::new(Device::Cpu, Precision::Fp32, true).unwrap();
    let paths: Vec<PathBuf> = ckpts.iter().map(|p| p.to_path_buf()).collect();
    let ensemble = Ensemble::load(&paths, compute).unwrap();
    let meta = ensemble.meta().clone();
    let x = photos(&meta);
    let probs = tch::no_grad(|| ensemble.probabilities(compute, &x, Kind::Float)).unwrap();
    let logits = match ensemble.members.as_slice() {
        [(_, only)] => tch::no_grad(|| compute.logits(&only.model, &x)).unwrap(),
        _ => probs.log(),
    };
    let (xf, zf, pf) = (dir.join("x.f32"), dir.join("z.f32"), dir.join("p.f32"));
    write_f32(&xf, &x);
    write_f32(&zf, &logits);
    write_f32(&pf, &probs);
    let c = meta.classes.len();
    let o = python_onnx()
        .arg(repo().join("scripts/onnx_check.py"))
        .args([&out, &xf, &zf, &pf])
        .args(["3", &c.to_string(), &meta.image_size.to_string()])
        .args(tol.map(|t| t.to_string()))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "onnx_check.py on {}: {}",
        out.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["checker"], "ok");
    assert_eq!(
        v["outputs"]["logits"],
        serde_json::json!(["batch", c]),
        "{v}"
    );
    assert_eq!(
        v["outputs"]["probabilities"],
        serde_json::json!(["batch", c])
    );
    assert_eq!(v["metadata"]["classes"], serde_json::json!(meta.classes));
    assert_eq!(v["metadata"]["image_size"], meta.image_size);
    assert_eq!(
        v["metadata"]["mean"],
        serde_json::json!(meta.normalization.mean)
    );
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4, "{v}");
    for r in runs {
        let b = r["batch"].as_u64().unwrap() as usize;
        assert_eq!(r["shape"], serde_json::json!([b, c]));
        assert!(
            r["logits_close"].as_bool().unwrap(),
            "{} logits: {r}",
            out.display()
        );
        assert!(
            r["probabilities_close"].as_bool().unwrap(),
            "{} probabilities: {r}",
            out.display()
        );
        assert!(
            r["top_k_equal"].as_bool().unwrap(),
            "{} top-k: {r}",
            out.display()
        );
    }
    v
}

#[test]
fn the_seed_network_in_onnx_runtime_gives_the_tool_s_logits_at_odd_sizes_down_to_the_smallest() {
    let dir = tempfile::tempdir().unwrap();
    let sd = common::state_dict("seed_10");
    for size in [160, 41, Arch::Seed.min_image_size()] {
        let ck = checkpoint_of(
            dir.path(),
            "seed",
            Arch::Seed,
            10,
            size,
            false,
            Flips::default(),
            Some(&sd),
        );
        let v = export_and_check(dir.path(), &[&ck], &[]);
        assert_eq!(v["opset"], 17);
    }
}

#[test]
fn googlenet_with_transform_input_in_onnx_runtime_gives_the_tool_s_logits() {
    let dir = tempfile::tempdir().unwrap();
    let sd = common::state_dict("googlenet_tf_10");
    for size in [224, 37, Arch::Googlenet.min_image_size()] {
        let ck = checkpoint_of(
            dir.path(),
            "g",
            Arch::Googlenet,
            10,
            size,
            true,
            Flips::default(),
            Some(&sd),
        );
        export_and_check(dir.path(), &[&ck], &["--opset", "19"]);
    }
}

#[test]
fn efficientnet_lite0_with_imagenet_weights_and_flip_averaging_in_onnx_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let p = inception::model::published(Arch::EfficientnetLite0).unwrap();
    let file = inception::weights::hub::cache_dir().unwrap().join(p.file);
    let sd = inception::weights::read_state_dict(&file).unwrap();
    let flips = Flips {
        horizontal: true,
        vertical: true,
    };
    // 1000 ImageNet classes: the top-5 order is a real check.
    let ck = checkpoint_of(
        dir.path(),
        "lite",
        Arch::EfficientnetLite0,
        1000,
        224,
        false,
        flips,
        Some(&sd),
    );
    export_and_check(dir.path(), &[&ck], &[]);
    for size in [17, Arch::EfficientnetLite0.min_image_size()] {
        let ck = checkpoint_of(
            dir.path(),
            "lite",
            Arch::EfficientnetLite0,
            1000,
            size,
            false,
            Flips::default(),
            Some(&sd),
        );
        export_and_check(dir.path(), &[&ck], &[]);
    }
}

#[test]
fn fp16_weights_and_arithmetic_give_the_tool_s_fp32_answers_within_a_stated_tolerance() {
    let dir = tempfile::tempdir().unwrap();
    let p = inception::model::published(Arch::EfficientnetLite0).unwrap();
    let file = inception::weights::hub::cache_dir().unwrap().join(p.file);
    let sd = inception::weights::read_state_dict(&file).unwrap();
    let ck = checkpoint_of(
        dir.path(),
        "lite",
        Arch::EfficientnetLite0,
        1000,
        224,
        false,
        Flips::default(),
        Some(&sd),
    );
    // float16 keeps about 3 significant digits, and 50 layers of fp16 arithmetic add up: logits
    // within 2 % + 0.1, probabilities within 0.02, the same top-1 of 1000 classes.
    export_and_check_within(dir.path(), &[&ck], &["--fp16"], Some(2e-2));
    // Two bytes a weight (BatchNorm's statistics are folded away).
    let bytes = fs::metadata(dir.path().join("model-1.onnx")).unwrap().len() as usize;
    let weights: usize = sd.values().map(|t| t.numel()).sum();
    assert!(
        bytes < 2 * weights + 500_000,
        "fp16: {bytes} bytes for {weights} weights"
    );
    let sd = common::state_dict("googlenet_tf_10");
    let ck = checkpoint_of(
        dir.path(),
        "g",
        Arch::Googlenet,
        10,
        224,
        true,
        Flips::default(),
        Some(&sd),
    );
    export_and_check_within(dir.path(), &[&ck], &["--fp16"], Some(2e-2));
}

#[test]
fn a_calibrated_checkpoint_answers_its_probabilities_and_an_ensemble_the_mean_of_its_members() {
    use inception::trust::{Temperature, TrustRecord};
    let dir = tempfile::tempdir().unwrap();
    let sd = common::state_dict("seed_10");
    let a = checkpoint_of(
        dir.path(),
        "a",
        Arch::Seed,
        10,
        96,
        false,
        Flips::default(),
        Some(&sd),
    );
    let b = checkpoint_of(
        dir.path(),
        "b",
        Arch::Seed,
        10,
        96,
        false,
        Flips::default(),
        None,
    );
    // A temperature of 2 shipped with a: its probabilities are softmax(logits / 2).
    let mut c = checkpoint::load(&a, Device::Cpu).unwrap();
    c.meta.trust = Some(TrustRecord {
        fitted_on: "a test".into(),
        classes: c.meta.classes.clone(),
        calibration: Some(Temperature {
            temperature: 2.0,
            applied: true,
        }),
        threshold: None,
        conformal: None,
    });
    let cal = dir.path().join("calibrated.pt");
    checkpoint::save(&cal, &c.model, &c.meta).unwrap();
    let v = export_and_check(dir.path(), &[&cal], &[]);
    assert_eq!(v["metadata"]["temperature"], 2.0);
    assert_eq!(v["metadata"]["trust"]["calibration"]["temperature"], 2.0);
    let v = export_and_check(dir.path(), &[&a, &b], &[]);
    assert_eq!(v["metadata"]["members"].as_array().unwrap().len(), 2);
}

#[test]
fn bad_export_flags_get_one_clear_error_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let sd = common::state_dict("seed_10");
    let ck = checkpoint_of(
        dir.path(),
        "s",
        Arch::Seed,
        10,
        64,
        false,
        Flips::default(),
        Some(&sd),
    );
    let out = dir.path().join("m.onnx");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "export",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        inception(dir.path(), &args)
    };
    let err = assert_clean_failure(&run(&["--format", "onnx", "--opset", "9"]));
    assert!(
        err.contains("--opset 9") && err.contains("13 to 21"),
        "{err}"
    );
    let err = assert_clean_failure(&run(&["--opset", "17"]));
    assert!(err.contains("--opset 17: for --format onnx only"), "{err}");
    let err = assert_clean_failure(&run(&["--dynamic-batch"]));
    assert!(
        err.contains("--dynamic-batch: for --format onnx only"),
        "{err}"
    );
    let err = assert_clean_failure(&run(&["--fp16"]));
    assert!(err.contains("--fp16: for --format onnx only"), "{err}");
    for flags in [
        vec!["--format", "onnx", "--fp16", "--int8", "--calib", "x"],
        vec!["--format", "onnx", "--calib", "x"],
        vec!["--format", "onnx", "--full-range"],
    ] {
        let o = run(&flags);
        assert_eq!(o.status.code(), Some(2), "clap's usage error: {flags:?}");
    }
    // An ensemble in float16 would give −inf logits: refused.
    let err = assert_clean_failure(&inception(
        dir.path(),
        &[
            "export",
            "--format",
            "onnx",
            "--fp16",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--checkpoint",
            ck.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert!(err.contains("--fp16 with an ensemble of 2"), "{err}");
    // int8 needs its calibration images, and they must be there.
    let o = run(&["--format", "onnx", "--int8"]);
    assert_eq!(o.status.code(), Some(2), "clap's usage error");
    assert!(stderr(&o).contains("--calib"), "{}", stderr(&o));
    let empty = dir.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let err = assert_clean_failure(&run(&[
        "--format",
        "onnx",
        "--int8",
        "--calib",
        empty.to_str().unwrap(),
    ]));
    assert!(
        err.contains("--calib") && err.contains("no images"),
        "{err}"
    );
    assert!(!out.exists());
    fs::write(&out, "mine").unwrap();
    let err = assert_clean_failure(&run(&["--format", "onnx"]));
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(fs::read_to_string(&out).unwrap(), "mine");
}

/// Every MSLD photo as the tool preprocesses them for `meta`, with their labels: the first
/// `calib` of each class (by path) first, then the rest.
fn all_photos(meta: &Meta, calib: usize) -> (Tensor, Vec<i64>) {
    let t = EvalTransform {
        image_size: meta.image_size as u32,
        normalization: meta.normalization,
    };
    let mut first = vec![];
    let mut rest = vec![];
    for (c, class) in ["Monkey Pox", "Others"].iter().enumerate() {
        let mut files: Vec<PathBuf> = fs::read_dir(repo().join("data/monkeypox").join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for (i, f) in files.into_iter().enumerate() {
            let item = (load_rgb(&f).unwrap(), c as i64);
            match i < calib {
                true => first.push(item),
                false => rest.push(item),
            }
        }
    }
    first.extend(rest);
    let labels = first.iter().map(|(_, y)| *y).collect();
    let imgs: Vec<_> = first.into_iter().map(|(img, _)| img).collect();
    (t.batch(&imgs).unwrap(), labels)
}

#[test]
fn int8_agrees_with_fp32_on_msld_as_onnx_runtime_s_own_quantiser_does() {
    let _turn = common::serial();
    let dir = tempfile::tempdir().unwrap();
    // The pretrained recipe (a fitted probe on ImageNet features) at 96 px, on half of the
    // patients: a model that has learnt something and is wrong on some photos, in seconds.
    let run = dir.path().join("run");
    let o = inception(
        &repo(),
        &[
            "train",
            "--data",
            "data/monkeypox",
            "--config",
            "configs/pretrained.json",
            "--image-size",
            "96",
            "--offline",
            "--val-fraction",
            "0.5",
            "--no-plots",
            "--out",
            run.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let ck = run.join("model.pt");
    // Calibration on a folder of 40 photos of each class; measured on all 183.
    let calib = dir.path().join("calib");
    let mut n_calib = 0;
    for class in ["Monkey Pox", "Others"] {
        fs::create_dir_all(calib.join(class)).unwrap();
        let mut files: Vec<PathBuf> = fs::read_dir(repo().join("data/monkeypox").join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files.iter().take(40) {
            fs::copy(f, calib.join(class).join(f.file_name().unwrap())).unwrap();
            n_calib += 1;
        }
    }
    let (fp32, int8) = (dir.path().join("fp32.onnx"), dir.path().join("int8.onnx"));
    let full = dir.path().join("int8-full.onnx");
    let c = calib.to_str().unwrap();
    for (out, extra) in [
        (&fp32, vec![]),
        (&int8, vec!["--int8", "--calib", c]),
        (&full, vec!["--int8", "--calib", c, "--full-range"]),
    ] {
        let mut args = vec![
            "export",
            "--format",
            "onnx",
            "--dynamic-batch",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        let o = inception(dir.path(), &args);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let size_ratio =
        fs::metadata(&int8).unwrap().len() as f64 / fs::metadata(&fp32).unwrap().len() as f64;
    assert!(
        size_ratio < 0.4,
        "int8 weights: the model is {size_ratio:.2} of fp32's size"
    );

    let meta = checkpoint::read_meta(&ck).unwrap();
    // The calibration images first: ONNX Runtime's quantiser calibrates on the same ones.
    let (x, labels) = all_photos(&meta, 40);
    let xf = dir.path().join("x.f32");
    write_f32(&xf, &x);
    let yf = dir.path().join("y.i64");
    fs::write(
        &yf,
        labels
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let n = labels.len();
    // Both int8 models in one run of the script (the fp32 model and ONNX Runtime's own
    // quantisations are run once for both).
    let o = python_onnx()
        .arg(repo().join("scripts/onnx_int8_check.py"))
        .args([&fp32, &full, &xf, &yf])
        .args([
            n.to_string(),
            meta.image_size.to_string(),
            n_calib.to_string(),
        ])
        .arg(&int8)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let checked: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(checked.len(), 2, "{}", String::from_utf8_lossy(&o.stdout));
    for (v, m) in checked.iter().zip([&full, &int8]) {
        eprintln!("int8 against fp32 on MSLD ({}): {v}", m.display());
    }
    // --full-range: where nothing saturates (its U8U8 twin here; a VNNI or ARM CPU), top-1
    // agrees with fp32's on >= 98 % and accuracy is within one point (98.9 % and equal on
    // 2026-12-06).
    let v = &checked[0];
    let f = |k: &str| v[k].as_f64().unwrap();
    assert!(f("twin_agreement") >= 0.98, "{v}");
    assert!(
        (f("accuracy_twin") - f("accuracy_fp32")).abs() <= 0.01 + 1e-12,
        "{v}"
    );

    let v = &checked[1];
    let f = |k: &str| v[k].as_f64().unwrap();
    // No U8S8 kernel of this CPU saturated: the same weights run by U8U8 kernels, which cannot,
    // give the same answers (ONNX Runtime's default int8 weights fell to 84 % on a CPU
    // without VNNI).
    assert!(
        f("twin_equal") >= 0.99,
        "the int8 graph saturated on this CPU: {v}"
    );
    // Weights whose neighbours could saturate take a coarser scale: within three points of
    // fp32's top-1 and two of its accuracy (97.8 % and 1.1 on 2026-12-06), and no further from
    // fp32 than ONNX Runtime's own saturation-free quantiser (U8U8) by more than two images.
    assert!(f("agreement") >= 0.97, "{v}");
    assert!(
        (f("accuracy_int8") - f("accuracy_fp32")).abs() <= 0.02 + 1e-12,
        "{v}"
    );
    assert!(
        f("agreement") >= f("reference_agreement") - 2.0 / n as f64 - 1e-12,
        "{v}"
    );
    // ONNX Runtime runs it with its int8 kernels: the QDQ pairs fused away.
    let ops = &v["optimized_ops"];
    let int8_ops = [
        "QLinearConv",
        "QGemm",
        "QLinearAdd",
        "QLinearGlobalAveragePool",
    ]
    .iter()
    .filter_map(|k| ops[k].as_u64())
    .sum::<u64>();
    assert!(
        int8_ops >= 30,
        "ONNX Runtime did not fuse the QDQ graph into int8 kernels: {ops}"
    );
}
