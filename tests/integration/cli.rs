//! The binary as a user runs it: summary, import, predict, devices, and their errors.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{
    assert_clean_failure, fixtures, import, import_case, inception, python, stderr, stdout,
};
use image::{Rgb, RgbImage};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

fn json(o: &std::process::Output) -> Value {
    assert!(o.status.success(), "failed: {}", stderr(o));
    serde_json::from_str(&stdout(o)).expect("stdout is JSON")
}

/// A textured test image (gradients and stripes) of the given size.
fn test_image(path: &Path, w: u32, h: u32, phase: u32) {
    let img = RgbImage::from_fn(w, h, |x, y| {
        let r = (x * 255 / w) as u8;
        let g = (y * 255 / h) as u8;
        let b = if ((x + phase) / 7 + y / 5).is_multiple_of(2) {
            230
        } else {
            20
        };
        Rgb([r, g, b])
    });
    img.save(path).unwrap();
}

/// `inception predict --checkpoint CKPT --device cpu ARGS…` in `dir`.
fn predict_on_cpu(dir: &Path, ckpt: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec![
        "predict",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    all.extend(args);
    inception(dir, &all)
}

#[test]
fn output_into_a_closed_pipe_ends_the_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    // The reading end is closed before the command writes: as `inception summary | head -0`.
    let mut child = common::bin()
        .args(["summary", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        o.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {err}",
        o.status
    );
    assert!(err.is_empty(), "{err}");
}

#[test]
fn summary_json_totals_agree_with_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let s = json(&inception(dir.path(), &["summary", "--json"]));
    assert_eq!(s["total_params"], 6_658_194);
    assert_eq!(s["arch"], "seed");
    let rows = s["layers"].as_array().unwrap();
    let sum: i64 = rows.iter().map(|r| r["params"].as_i64().unwrap()).sum();
    assert_eq!(sum, 6_658_194);
    assert_eq!(s["blocks"].as_array().unwrap().len(), 9);
    let table = stdout(&inception(dir.path(), &["summary"]));
    assert!(table.contains("total: 6,658,194 parameters"), "{table}");
    assert!(table.contains(&format!(
        "{} MACs",
        common_thousands(s["total_macs"].as_i64().unwrap())
    )));
    assert!(table.contains("inception5b.0.branch2.3"), "{table}");
}

fn common_thousands(n: i64) -> String {
    inception::cmd::summary::thousands(n)
}

#[test]
fn summary_refuses_an_input_below_the_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let o = inception(
        dir.path(),
        &["summary", "--arch", "googlenet", "--image-size", "8"],
    );
    let err = assert_clean_failure(&o);
    assert!(
        err.contains("image size 8 is too small for googlenet"),
        "{err}"
    );
}

#[test]
fn imported_googlenet_gives_pytorchs_logits_with_and_without_aux_heads() {
    let dir = tempfile::tempdir().unwrap();
    let classes = "a,b";
    let ckpt = import_case(dir.path(), "googlenet_2", classes, &[]);
    let (x, expected) = common::io("googlenet_2");
    let loaded = inception::checkpoint::load(&ckpt, Device::Cpu).unwrap();
    assert!(loaded.meta.aux_logits);
    let got = tch::no_grad(|| loaded.model.forward_t(&x, false))
        .unwrap()
        .logits;
    assert!(common::relative_error(&got, &expected) <= 1e-4);

    // The same state_dict without the auxiliary heads, as torchvision's ImageNet weights come.
    let sd = common::state_dict("googlenet_2");
    let kept: Vec<(String, Tensor)> = sd
        .into_iter()
        .filter(|(k, _)| !k.starts_with("aux"))
        .collect();
    let no_aux = dir.path().join("no_aux.safetensors");
    Tensor::write_safetensors(&kept, &no_aux).unwrap();
    let out = dir.path().join("no_aux.pt");
    let o = import(
        dir.path(),
        "googlenet",
        "no_aux.safetensors",
        classes,
        "no_aux.pt",
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("auxiliary heads absent"),
        "{}",
        stdout(&o)
    );
    let loaded = inception::checkpoint::load(&out, Device::Cpu).unwrap();
    assert!(!loaded.meta.aux_logits);
    let got = tch::no_grad(|| loaded.model.forward_t(&x, false))
        .unwrap()
        .logits;
    assert!(common::relative_error(&got, &expected) <= 1e-4);
}

#[test]
fn transform_input_is_recorded_and_applied() {
    let dir = tempfile::tempdir().unwrap();
    let classes = "0,1,2,3,4,5,6,7,8,9";
    let ckpt = import_case(
        dir.path(),
        "googlenet_tf_10",
        classes,
        &["--transform-input"],
    );
    let loaded = inception::checkpoint::load(&ckpt, Device::Cpu).unwrap();
    assert!(loaded.meta.transform_input);
    let (x, expected) = common::io("googlenet_tf_10");
    let got = tch::no_grad(|| loaded.model.forward_t(&x, false))
        .unwrap()
        .logits;
    assert!(common::relative_error(&got, &expected) <= 1e-4);
    // Without the flag the same weights give other logits.
    let other = tempfile::tempdir().unwrap();
    let plain = import_case(other.path(), "googlenet_tf_10", classes, &[]);
    let loaded = inception::checkpoint::load(&plain, Device::Cpu).unwrap();
    assert!(!loaded.meta.transform_input);
    let got = tch::no_grad(|| loaded.model.forward_t(&x, false))
        .unwrap()
        .logits;
    assert!(common::relative_error(&got, &expected) > 1e-3);
}

#[test]
fn import_lists_missing_unexpected_and_misshaped_tensors_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut sd = common::state_dict("seed_2");
    sd.remove("inception4c.branch3.3.weight");
    sd.insert(
        "head.weight".into(),
        Tensor::zeros([3], (Kind::Float, Device::Cpu)),
    );
    sd.insert(
        "conv1.bias".into(),
        Tensor::zeros([65], (Kind::Float, Device::Cpu)),
    );
    let named: Vec<(String, Tensor)> = sd.into_iter().collect();
    Tensor::write_safetensors(&named, dir.path().join("bad.safetensors")).unwrap();
    let o = import(dir.path(), "seed", "bad.safetensors", "x,y", "m.pt", &[]);
    let err = assert_clean_failure(&o);
    assert!(err.contains("bad.safetensors"), "{err}");
    assert!(
        err.contains("missing: inception4c.branch3.3.weight"),
        "{err}"
    );
    assert!(err.contains("unexpected: head.weight"), "{err}");
    assert!(
        err.contains("conv1.bias (expected [64], got [65])"),
        "{err}"
    );
    assert!(!dir.path().join("m.pt").exists());
}

#[test]
fn import_refuses_wrong_class_count_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let weights = fixtures().join("seed_2.safetensors");
    let w = weights.to_str().unwrap();
    let o = import(dir.path(), "seed", w, "a,b,c", "m.pt", &[]);
    let err = assert_clean_failure(&o);
    assert!(
        err.contains("classifier.2.weight (expected [3, 1024], got [2, 1024])"),
        "{err}"
    );

    let o = import(dir.path(), "seed", w, "a,b", "m.pt", &["--mean", "0.5,0.5"]);
    let err = assert_clean_failure(&o);
    assert!(
        err.contains("--mean takes 3 comma-separated numbers, got 2"),
        "{err}"
    );

    // A custom normalisation is recorded.
    let o = import(
        dir.path(),
        "seed",
        w,
        "a,b",
        "norm.pt",
        &["--mean", "0.5,0.4,0.3", "--std", "0.2,0.2,0.2"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let meta = inception::checkpoint::load(&dir.path().join("norm.pt"), Device::Cpu)
        .unwrap()
        .meta;
    assert_eq!(meta.normalization.mean, [0.5, 0.4, 0.3]);
    assert_eq!(meta.normalization.std, [0.2, 0.2, 0.2]);

    fs::write(dir.path().join("m.pt"), "precious").unwrap();
    let o = import(dir.path(), "seed", w, "a,b", "m.pt", &[]);
    let err = assert_clean_failure(&o);
    assert!(err.contains("m.pt exists"), "{err}");
    assert_eq!(
        fs::read_to_string(dir.path().join("m.pt")).unwrap(),
        "precious"
    );

    let o = import(
        dir.path(),
        "seed",
        "nowhere.safetensors",
        "a,b",
        "n.pt",
        &[],
    );
    let err = assert_clean_failure(&o);
    assert!(err.contains("nowhere.safetensors"), "{err}");
}

#[test]
fn predict_matches_torchvision_preprocessing_and_pytorch_probabilities() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = import_case(dir.path(), "googlenet_2", "Monkey Pox,Others", &[]);
    let mut images: Vec<PathBuf> = vec![];
    for (i, (w, h)) in [(320u32, 240u32), (180, 300), (256, 256)]
        .iter()
        .enumerate()
    {
        let p = dir.path().join(format!("img{i}.png"));
        test_image(&p, *w, *h, i as u32 * 3);
        images.push(p);
    }
    images.push(common::repo().join("data/monkeypox/Monkey Pox/P13_1.jpg"));
    let paths: Vec<&str> = images.iter().map(|p| p.to_str().unwrap()).collect();
    let got = json(&predict_on_cpu(
        dir.path(),
        &ckpt,
        &[&["--json"], &paths[..]].concat(),
    ));

    let o = python()
        .arg(common::repo().join("scripts/parity.py"))
        .args([
            "--out",
            fixtures().to_str().unwrap(),
            "--predict",
            "googlenet_2",
        ])
        .args(&paths)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let reference: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let expected = &reference["probabilities"];

    // The preprocessing: ours against torchvision's, image by image.
    let tv =
        inception::checkpoint::read_safetensors(Path::new(reference["tensors"].as_str().unwrap()))
            .unwrap()
            .tensors;
    let ckpt = inception::checkpoint::load(&ckpt, Device::Cpu).unwrap();
    let transform = inception::data::transform::EvalTransform {
        image_size: 224,
        normalization: ckpt.meta.normalization,
    };
    let decoded: Vec<_> = images
        .iter()
        .map(|p| inception::data::image::load_rgb(p).unwrap())
        .collect();
    let ours = transform.batch(&decoded).unwrap();
    let diff = (&ours - &tv["input"]).abs();
    // One step of 8 bits is 1/255/0.225 ≈ 0.017 after normalisation: resampling (PIL's
    // fixed-point bilinear against image's triangle filter) and JPEG decoders differ by a few
    // steps at sharp edges, and by a small fraction of one on average.
    let (max, mean) = (
        diff.max().double_value(&[]),
        diff.mean(Kind::Float).double_value(&[]),
    );
    assert!(
        max < 0.08 && mean < 0.003,
        "transform differs from torchvision: max {max}, mean {mean}"
    );
    // The logits on our preprocessing stay close to PyTorch's on torchvision's.
    let logits = tch::no_grad(|| ckpt.model.forward_t(&ours, false))
        .unwrap()
        .logits;
    let err = common::relative_error(&logits, &tv["logits"]);
    assert!(err < 1e-2, "logits differ by {err}");

    let got = got.as_array().unwrap();
    assert_eq!(got.len(), images.len());
    for g in got {
        let path = g["path"].as_str().unwrap();
        let top = g["top_k"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        let total: f64 = top.iter().map(|s| s["probability"].as_f64().unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-5, "{path}: {total}");
        assert_eq!(g["class"], top[0]["class"]);
        let want = expected[path].as_array().unwrap();
        for s in top {
            let idx = if s["class"] == "Monkey Pox" { 0 } else { 1 };
            let diff = (s["probability"].as_f64().unwrap() - want[idx].as_f64().unwrap()).abs();
            assert!(diff < 0.02, "{path}: {s} vs torchvision {want:?}");
        }
    }
}

#[test]
fn predict_reports_an_unreadable_image_and_still_predicts_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = import_case(dir.path(), "seed_2", "Monkey Pox,Others", &[]);
    test_image(&dir.path().join("good.png"), 64, 48, 0);
    fs::write(dir.path().join("fake.jpg"), "not really a jpeg").unwrap();
    fs::write(dir.path().join("empty.png"), "").unwrap();
    let o = predict_on_cpu(dir.path(), &ckpt, &["good.png", "fake.jpg", "empty.png"]);
    let err = assert_clean_failure(&o);
    assert!(err.contains("fake.jpg"), "{err}");
    assert!(err.contains("empty.png"), "{err}");
    assert!(err.contains("2 of 3 inputs could not be read"), "{err}");
    let out = stdout(&o);
    assert!(out.starts_with("good.png: "), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert_eq!(
        fs::read(dir.path().join("fake.jpg")).unwrap(),
        b"not really a jpeg"
    );
}

#[test]
fn predict_refuses_msld_jpegs_cut_short_and_predicts_only_the_whole_one() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = import_case(dir.path(), "seed_2", "Monkey Pox,Others", &[]);
    let bytes = fs::read(common::repo().join("data/monkeypox/Others/23_1.jpg")).unwrap();
    let n = bytes.len();
    let mut names = vec!["whole.jpg".to_string()];
    fs::write(dir.path().join("whole.jpg"), &bytes).unwrap();
    for cut in [n / 3, n / 2, n - 2, n - 1] {
        let name = format!("cut-{cut}.jpg");
        fs::write(dir.path().join(&name), &bytes[..cut]).unwrap();
        names.push(name);
    }
    let args: Vec<&str> = names.iter().map(String::as_str).collect();
    let o = predict_on_cpu(dir.path(), &ckpt, &args);
    let err = assert_clean_failure(&o);
    for name in &names[1..] {
        assert!(
            err.lines()
                .any(|l| l.contains(name.as_str()) && l.contains("truncated")),
            "{name}: {err}"
        );
    }
    let out = stdout(&o);
    assert!(out.starts_with("whole.jpg: "), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");

    // --skip-bad: the whole one is predicted, the cut ones are listed, exit code 0.
    let mut skip = args.clone();
    skip.push("--skip-bad");
    let o = predict_on_cpu(dir.path(), &ckpt, &skip);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 1, "{}", stdout(&o));
    assert!(stderr(&o).contains("truncated"), "{}", stderr(&o));
}

#[test]
fn predict_keeps_the_input_order_across_batches_read_ahead_even_when_a_batch_is_all_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = import_case(dir.path(), "seed_2", "Monkey Pox,Others", &[]);
    fs::write(dir.path().join("fake.jpg"), "not really a jpeg").unwrap();
    fs::write(dir.path().join("empty.png"), "").unwrap();
    for (i, name) in ["c.png", "a.png", "b.png"].iter().enumerate() {
        test_image(&dir.path().join(name), 40 + 8 * i as u32, 48, i as u32);
    }
    let o = predict_on_cpu(
        dir.path(),
        &ckpt,
        &[
            "--batch-size",
            "2",
            "fake.jpg",
            "empty.png",
            "c.png",
            "a.png",
            "b.png",
        ],
    );
    let err = assert_clean_failure(&o);
    let (fake, empty) = (
        err.find("fake.jpg").unwrap(),
        err.find("empty.png").unwrap(),
    );
    assert!(fake < empty, "{err}");
    assert!(err.contains("2 of 5 inputs could not be read"), "{err}");
    let out = stdout(&o);
    let order: Vec<&str> = out.lines().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(order, ["c.png", "a.png", "b.png"], "{out}");
}

#[test]
fn predict_refuses_a_file_that_is_not_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    test_image(&dir.path().join("a.png"), 32, 32, 0);
    let o = inception(dir.path(), &["predict", "--checkpoint", "a.png", "a.png"]);
    let err = assert_clean_failure(&o);
    assert!(
        err.contains("checkpoint a.png") && err.contains("not a safetensors file"),
        "{err}"
    );
    // Folders and globs: a folder is walked for images only; a pattern that matches nothing
    // and a missing file are reported.
    let ckpt = import_case(dir.path(), "seed_2", "a,b", &[]);
    fs::create_dir_all(dir.path().join("imgs/sub")).unwrap();
    test_image(&dir.path().join("imgs/x.png"), 32, 32, 0);
    test_image(&dir.path().join("imgs/sub/y.png"), 32, 32, 1);
    fs::write(dir.path().join("imgs/notes.txt"), "not an image").unwrap();
    let o = predict_on_cpu(
        dir.path(),
        &ckpt,
        &["--csv", "imgs", "im*/x.png", "nope*.png", "missing.png"],
    );
    let err = assert_clean_failure(&o);
    assert!(
        err.contains("nope*.png: the pattern matches no file"),
        "{err}"
    );
    assert!(err.contains("missing.png: no such file or folder"), "{err}");
    assert!(err.contains("2 of 5 inputs could not be read"), "{err}");
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "path,class,probability,class_2,probability_2,calibrated,decision,set"
    );
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[1].starts_with("imgs/sub/y.png,") || lines[1].starts_with("imgs/x.png,"),
        "{out}"
    );
    assert!(lines[3].starts_with("im"), "{out}");
}

#[test]
fn an_absent_or_malformed_device_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = import_case(dir.path(), "seed_2", "a,b", &[]);
    test_image(&dir.path().join("a.png"), 32, 32, 0);
    let count = tch::Cuda::device_count();
    let absent = format!("cuda:{count}");
    for (device, message) in [
        (
            absent.as_str(),
            format!("CUDA device {count} is not available"),
        ),
        ("gpu", "expected auto, cpu, cuda or cuda:N".to_string()),
    ] {
        let o = inception(
            dir.path(),
            &[
                "predict",
                "--checkpoint",
                ckpt.to_str().unwrap(),
                "--device",
                device,
                "a.png",
            ],
        );
        let err = assert_clean_failure(&o);
        assert!(err.contains(&message), "{device}: {err}");
    }
    let auto = [
        "predict",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--device",
        "auto",
        "a.png",
    ];
    let o = inception(dir.path(), &auto);
    assert!(o.status.success(), "{}", stderr(&o));
    let expected = if count > 0 {
        "device: cuda:0"
    } else {
        "device: cpu (no CUDA device found)"
    };
    assert!(stderr(&o).contains(expected), "{}", stderr(&o));
}

#[test]
fn doctor_reports_the_libtorch_it_runs_on_with_its_cuda_library_and_a_working_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let report = json(&inception(dir.path(), &["doctor", "--json"]));
    let lt = &report["libtorch"];
    let path = PathBuf::from(lt["path"].as_str().unwrap());
    assert!(
        path.is_file() && path.ends_with("libtorch_cpu.so"),
        "{path:?}"
    );
    // The version the tool was built with is the one of the libtorch it loaded.
    let version_py = path.parent().unwrap().join("../version.py");
    if let Ok(text) = fs::read_to_string(&version_py) {
        let v = text
            .lines()
            .find_map(|l| l.strip_prefix("__version__ = '"))
            .unwrap();
        assert!(
            v.starts_with(lt["version"].as_str().unwrap()),
            "{v} vs {lt}"
        );
    }
    // A libtorch with a CUDA library must have it loaded, or no GPU would ever be used.
    if path.parent().unwrap().join("libtorch_cuda.so").exists() {
        assert!(
            lt["cuda_runtime"].is_string(),
            "libtorch_cuda not loaded: {lt}"
        );
    }
    let bf16 = fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .split_whitespace()
        .any(|f| f == "avx512_bf16" || f == "amx_bf16");
    assert_eq!(report["cpu_bf16"], bf16);
    let auto = &report["auto_precision"][0];
    assert_eq!(auto[0], "cpu");
    assert_eq!(auto[1], if bf16 { "bf16" } else { "fp32" });
    assert_eq!(
        auto[2],
        if bf16 {
            "this CPU has native bf16"
        } else {
            "this CPU has no native bf16 (AVX512-BF16 or AMX)"
        }
    );
    let gpus = report["driver"]["devices"]
        .as_array()
        .map_or(0, |d| d.len() as i64);
    assert_eq!(report["torch_cuda_devices"], gpus, "{report}");
    let cpu = &report["smoke"][0];
    assert_eq!(cpu["device"], "cpu");
    assert!(cpu["error"].is_null(), "{cpu}");
    assert!(cpu["images_per_s"].as_f64().unwrap() > 0.0, "{cpu}");
    assert_eq!(report["smoke"].as_array().unwrap().len() as i64, 1 + gpus);
    assert_eq!(report["problems"], serde_json::json!([]));

    let o = inception(dir.path(), &["doctor"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("no problems found"), "{}", stdout(&o));
}

#[test]
fn bash_completion_completes_subcommands_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let o = inception(dir.path(), &["completions", "bash"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let script = dir.path().join("inception.bash");
    fs::write(&script, &o.stdout).unwrap();
    // What bash offers after `inception expo`, `inception ex` and `inception export --f`.
    let complete = |words: &str| {
        let n = words.split(' ').count() - 1;
        let cmd = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={n}; COMP_LINE='{words}'; \
             COMP_POINT=${{#COMP_LINE}}; _inception inception \"${{COMP_WORDS[{n}]}}\" \
             \"${{COMP_WORDS[{}]}}\"; echo \"${{COMPREPLY[@]}}\"",
            script.display(),
            n - 1
        );
        let o = std::process::Command::new("bash")
            .args(["-c", &cmd])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    assert_eq!(complete("inception expo").trim(), "export");
    assert_eq!(complete("inception ex").trim(), "export explain");
    let flags = complete("inception export --f");
    assert!(
        flags.contains("--format") && flags.contains("--force"),
        "{flags}"
    );
    for shell in ["zsh", "fish", "powershell"] {
        let o = inception(dir.path(), &["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        assert!(stdout(&o).contains("doctor"), "{shell}");
    }
}

#[test]
fn man_pages_cover_every_subcommand_and_its_flags() {
    let dir = tempfile::tempdir().unwrap();
    let o = inception(dir.path(), &["man"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let page = stdout(&o);
    assert!(page.contains(".TH inception 1"), "{page}");
    let o = inception(dir.path(), &["man", "--out", "pages"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for sub in [
        "train",
        "cv",
        "eval",
        "predict",
        "export",
        "doctor",
        "import",
        "summary",
        "explain",
        "completions",
        "man",
    ] {
        assert!(page.contains(&format!("inception\\-{sub}(1)")), "{sub}");
        let text = fs::read_to_string(dir.path().join(format!("pages/inception-{sub}.1"))).unwrap();
        assert!(text.contains(&format!(".TH inception-{sub} 1")), "{sub}");
    }
    // Every long flag of every subcommand is on its page (from the clap definitions).
    use clap::CommandFactory;
    for sub in inception::cli::Cli::command().get_subcommands() {
        let name = sub.get_name();
        let text =
            fs::read_to_string(dir.path().join(format!("pages/inception-{name}.1"))).unwrap();
        for arg in sub.get_arguments() {
            if let Some(long) = arg.get_long() {
                let roff = format!("\\-\\-{}", long.replace('-', "\\-"));
                assert!(
                    text.contains(&roff),
                    "{name}: --{long} missing from its page"
                );
            }
        }
    }
}

#[test]
fn import_force_replaces_and_classes_file_names_the_classes() {
    let dir = tempfile::tempdir().unwrap();
    let w = fixtures().join("seed_2.safetensors").display().to_string();
    fs::write(dir.path().join("classes.txt"), "  lesion \n\nother\n").unwrap();
    fs::write(dir.path().join("m.pt"), "old").unwrap();
    let o = inception(
        dir.path(),
        &[
            "import",
            "--arch",
            "seed",
            "--weights",
            &w,
            "--classes-file",
            "classes.txt",
            "--out",
            "m.pt",
            "--force",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let meta = inception::checkpoint::load(&dir.path().join("m.pt"), Device::Cpu)
        .unwrap()
        .meta;
    assert_eq!(meta.classes, ["lesion", "other"]);
    // --classes and --classes-file together are a usage error (clap: exit code 2).
    let o = inception(
        dir.path(),
        &[
            "import",
            "--arch",
            "seed",
            "--weights",
            &w,
            "--classes",
            "a,b",
            "--classes-file",
            "classes.txt",
            "--out",
            "n.pt",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!dir.path().join("n.pt").exists());
}

#[test]
fn precision_flags_choose_how_eval_and_predict_compute() {
    let dir = tempfile::tempdir().unwrap();
    // The seed network: googlenet_2's random weights saturate its softmax on this image.
    let ckpt = import_case(dir.path(), "seed_2", "Monkey Pox,Others", &[]);
    let img = common::repo().join("data/monkeypox/Others/23_1.jpg");
    let prob = |precision: &str| -> f64 {
        let o = predict_on_cpu(
            dir.path(),
            &ckpt,
            &["--json", "--precision", precision, img.to_str().unwrap()],
        );
        assert!(
            stderr(&o).contains(&format!("compute: {precision}")),
            "{}",
            stderr(&o)
        );
        json(&o)[0]["top_k"][0]["probability"].as_f64().unwrap()
    };
    let (fp32, bf16) = (prob("fp32"), prob("bf16"));
    assert_eq!(fp32, prob("fp32"), "fp32 is repeatable");
    assert!(fp32 != bf16, "bf16 computed the same bits as fp32: {fp32}");
    assert!((fp32 - bf16).abs() < 0.05, "{fp32} vs {bf16}");
    // eval takes the flag too; --split does not go with --data (usage error, exit code 2).
    let data = common::repo().join("data/monkeypox").display().to_string();
    let o = inception(
        dir.path(),
        &[
            "eval",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--data",
            &data,
            "--device",
            "cpu",
            "--precision",
            "fp32",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("compute: fp32"), "{}", stderr(&o));
    let o = inception(
        dir.path(),
        &[
            "eval",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--data",
            &data,
            "--split",
            "train",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
