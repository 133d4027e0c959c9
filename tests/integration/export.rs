//! `inception export`: the TorchScript module, loaded by PyTorch's `torch.jit.load`, gives
//! `inception predict --precision fp32`'s answers, for both networks and for an ensemble.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{assert_clean_failure, import_case, inception, python, repo, stderr, stdout};
use inception::data::image::load_rgb;
use inception::data::transform::{EvalTransform, Normalization};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

const CLASSES: &str = "Monkey Pox,Others";

/// Four MSLD photos, two of each class.
fn msld_images() -> Vec<PathBuf> {
    [
        "Monkey Pox/P13_1.jpg",
        "Monkey Pox/P19_2.jpg",
        "Others/23_1.jpg",
        "Others/58_!.jpg",
    ]
    .iter()
    .map(|p| repo().join("data/monkeypox").join(p))
    .collect()
}

/// The batch predict feeds the network for `images`: decoded and transformed by the tool.
fn batch(images: &[PathBuf]) -> Tensor {
    let t = EvalTransform {
        image_size: 224,
        normalization: Normalization::IMAGENET,
    };
    let decoded: Vec<_> = images.iter().map(|p| load_rgb(p).unwrap()).collect();
    t.batch(&decoded).unwrap()
}

fn export(dir: &Path, checkpoints: &[&Path], out: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["export".to_string()];
    for c in checkpoints {
        args.extend(["--checkpoint".into(), c.display().to_string()]);
    }
    args.extend(["--out".into(), out.into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    inception(dir, &args)
}

/// What PyTorch's `torch.jit.load(model)` returns for `input`.
fn torchscript_output(dir: &Path, model: &Path, input: &Tensor) -> Tensor {
    let file = dir.join("input.safetensors");
    Tensor::write_safetensors(&[("input", input)], &file).unwrap();
    let o = python()
        .arg(repo().join("scripts/torchscript_predict.py"))
        .arg(model)
        .arg("--tensor")
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rows: Vec<Vec<f64>> = serde_json::from_value(v["logits"].clone()).unwrap();
    let n = rows.len() as i64;
    let flat: Vec<f64> = rows.concat();
    Tensor::from_slice(&flat).view([n, -1])
}

/// `inception predict --precision fp32 --json`'s probabilities `[N, classes]`, in class order.
fn predicted(dir: &Path, checkpoints: &[&Path], images: &[PathBuf]) -> Tensor {
    let mut args = vec!["predict".to_string()];
    for c in checkpoints {
        args.extend(["--checkpoint".into(), c.display().to_string()]);
    }
    args.extend(["--device", "cpu", "--precision", "fp32", "--json"].map(String::from));
    args.extend(images.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = inception(dir, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let classes: Vec<&str> = CLASSES.split(',').collect();
    let mut flat = vec![];
    for p in v.as_array().unwrap() {
        for c in &classes {
            let s = p["top_k"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["class"] == *c)
                .unwrap();
            flat.push(s["probability"].as_f64().unwrap());
        }
    }
    Tensor::from_slice(&flat).view([images.len() as i64, -1])
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn pytorch_loads_the_module_and_gets_predicts_answers_for_both_networks() {
    let dir = tempfile::tempdir().unwrap();
    let images = msld_images();
    let input = batch(&images);
    for case in ["seed_2", "googlenet_2"] {
        let ckpt = import_case(dir.path(), case, CLASSES, &[]);
        let out = format!("{case}.ts");
        let o = export(dir.path(), &[&ckpt], &out, &[]);
        assert!(o.status.success(), "{case}: {}", stderr(&o));
        let model = dir.path().join(&out);

        // The preprocessing beside it is the checkpoint's.
        let spec: Value = serde_json::from_str(
            &fs::read_to_string(dir.path().join(format!("{out}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(spec["image_size"], 224);
        assert_eq!(spec["resize_shorter_side"], 256);
        assert_eq!(spec["classes"], serde_json::json!(["Monkey Pox", "Others"]));
        assert_eq!(spec["mean"], serde_json::json!([0.485, 0.456, 0.406]));
        assert_eq!(spec["std"], serde_json::json!([0.229, 0.224, 0.225]));

        // Traced on a batch of 2, run on 4: the batch size is not baked in.
        let logits = torchscript_output(dir.path(), &model, &input);
        assert_eq!(logits.size(), [4, 2], "{case}");
        let mut net = inception::checkpoint::load(&ckpt, Device::Cpu)
            .unwrap()
            .model;
        net.fold_batchnorm().unwrap();
        let ours = tch::no_grad(|| net.forward_t(&input, false))
            .unwrap()
            .logits;
        let d = max_diff(&logits, &ours.to_kind(Kind::Double));
        assert!(d <= 1e-4, "{case}: logits differ by {d}");

        let probs = logits.softmax(1, Kind::Double);
        let d = max_diff(&probs, &predicted(dir.path(), &[&ckpt], &images));
        assert!(
            d <= 1e-4,
            "{case}: probabilities differ from predict's by {d}"
        );
    }
}

#[test]
fn an_exported_ensemble_gives_the_ensembles_probabilities() {
    let dir = tempfile::tempdir().unwrap();
    let images = msld_images();
    let a = import_case(dir.path(), "seed_2", CLASSES, &[]);
    let b = import_case(dir.path(), "googlenet_2", CLASSES, &[]);
    let o = export(dir.path(), &[&a, &b], "both.ts", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("ensemble of 2"), "{}", stdout(&o));
    let out = torchscript_output(dir.path(), &dir.path().join("both.ts"), &batch(&images));
    let probs = out.softmax(1, Kind::Double);
    let want = predicted(dir.path(), &[&a, &b], &images);
    let d = max_diff(&probs, &want);
    assert!(
        d <= 1e-4,
        "ensemble probabilities differ from predict's by {d}"
    );
    // And they are not simply one member's.
    let only_a = predicted(dir.path(), &[&a], &images);
    assert!(max_diff(&want, &only_a) > 1e-3);
}

#[test]
fn export_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = import_case(dir.path(), "seed_2", CLASSES, &[]);
    fs::write(dir.path().join("m.ts"), "mine").unwrap();
    let err = assert_clean_failure(&export(dir.path(), &[&ckpt], "m.ts", &[]));
    assert!(err.contains("m.ts exists; --force replaces it"), "{err}");
    assert_eq!(fs::read(dir.path().join("m.ts")).unwrap(), b"mine");
    assert!(!dir.path().join("m.ts.json").exists());

    let o = export(dir.path(), &[&ckpt], "m.ts", &["--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(fs::metadata(dir.path().join("m.ts")).unwrap().len() > 1000);
    // ONNX: tests/integration/onnx.rs.
}
