//! The CUDA paths, on the first CUDA device: logits against PyTorch's in fp32, bf16 and fp16;
//! short fp16 and bf16 training runs whose loss falls; a run killed and resumed; what `auto`
//! takes there. Each test is skipped, saying why on stderr, where libtorch sees no CUDA device;
//! with `INCEPTION_TEST_CUDA=1` (scripts/gpu-check.sh) a missing device fails them instead.

use crate::common;

use std::fs;
use std::time::Duration;

use common::{cases, inception, io, relative_error, serial, state_dict, stderr, stdout};
use inception::checkpoint;
use inception::checkpoint::record::EpochRecord;
use inception::model::{Arch, Model, NetConfig};
use inception::precision::{Compute, Precision, Why};
use tch::{Device, Kind};

/// The device to test on, or `None` (said on stderr) where there is none.
fn cuda(test: &str) -> Option<Device> {
    if tch::Cuda::device_count() > 0 {
        return Some(Device::Cuda(0));
    }
    assert!(
        std::env::var_os("INCEPTION_TEST_CUDA").is_none(),
        "INCEPTION_TEST_CUDA is set, but libtorch sees no CUDA device (inception doctor says why)"
    );
    eprintln!("{test}: skipped, libtorch sees no CUDA device");
    None
}

#[test]
fn logits_on_cuda_match_pytorch_in_fp32_and_stay_close_in_bf16_and_fp16() {
    let Some(device) = cuda("logits_on_cuda") else {
        return;
    };
    for c in cases() {
        let (x, expected) = io(&c.name);
        for (precision, tolerance) in [
            (Precision::Fp32, 1e-4),
            (Precision::Bf16, 5e-2),
            (Precision::Fp16, 1e-2),
        ] {
            let a = if c.arch == "seed" {
                Arch::Seed
            } else {
                Arch::Googlenet
            };
            let config = NetConfig {
                aux_logits: a == Arch::Googlenet,
                transform_input: c.transform_input,
                ..NetConfig::new(a, c.classes)
            };
            let mut model = Model::new(config, device).unwrap();
            model.load_state_dict(&state_dict(&c.name)).unwrap();
            let compute = Compute::new(device, precision, true).unwrap();
            compute.prepare(&mut model).unwrap();
            let logits = tch::no_grad(|| {
                let _autocast = compute.autocast();
                let input = compute.input(&x).unwrap();
                model.forward_t(&input, false).unwrap().logits
            });
            assert_eq!(logits.device(), device);
            let got = logits.to_kind(Kind::Float).to_device(Device::Cpu);
            let err = relative_error(&got, &expected);
            println!(
                "{} {precision} on cuda: max|Δlogit|/max|logit| = {err:e}",
                c.name
            );
            assert!(
                err <= tolerance,
                "{} {precision}: {err:e} > {tolerance:e}",
                c.name
            );
        }
    }
}

#[test]
fn auto_precision_on_cuda_follows_the_compute_capability() {
    let Some(device) = cuda("auto_precision_on_cuda") else {
        return;
    };
    let (p, why) = Precision::Auto.choose(device).unwrap();
    let Why::Cuda {
        capability: Some((major, _)),
    } = why
    else {
        panic!("the driver gave no compute capability: {why:?}");
    };
    let want = match major {
        8.. => Precision::Bf16,
        7 => Precision::Fp16,
        _ => Precision::Fp32,
    };
    assert_eq!(p, want, "{why}");
}

/// metrics.csv of a run folder.
fn rows(run: &std::path::Path) -> Vec<EpochRecord> {
    fs::read_to_string(run.join("metrics.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|r| EpochRecord::from_csv_row(r).unwrap())
        .collect()
}

#[test]
fn training_on_cuda_in_fp16_and_bf16_lowers_the_loss() {
    let Some(_) = cuda("training_on_cuda") else {
        return;
    };
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let data = common::light_and_dark(dir.path(), 64);
    let config = common::repo().join("configs/smoke.json");
    for precision in ["fp16", "bf16"] {
        let o = inception(
            dir.path(),
            &[
                "train",
                "--data",
                data.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
                "--device",
                "cuda",
                "--precision",
                precision,
                "--epochs",
                "4",
                "--batch-size",
                "8",
                "--group-by",
                "none",
                "--out",
                precision,
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("compute: {precision}")),
            "{}",
            stderr(&o)
        );
        let r = rows(&dir.path().join(precision));
        println!(
            "{precision}: train loss by epoch {:?}",
            r.iter().map(|r| r.train_loss).collect::<Vec<_>>()
        );
        assert!(r[3].train_loss < r[0].train_loss, "{precision}: {r:?}");
        let last =
            checkpoint::load(&dir.path().join(precision).join("last.pt"), Device::Cpu).unwrap();
        let scaler = last.meta.training.unwrap().resume.unwrap().scaler;
        assert_eq!(scaler.is_some(), precision == "fp16", "{scaler:?}");
    }
}

#[test]
fn a_run_killed_on_cuda_resumes_from_its_last_epoch_and_finishes() {
    let Some(_) = cuda("a_run_killed_on_cuda") else {
        return;
    };
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let data = common::repo().join("data/monkeypox");
    let config = common::repo().join("configs/smoke.json");
    let run = dir.path().join("run");
    let (d, c) = (data.display().to_string(), config.display().to_string());
    let args = [
        "train", "--data", &d, "--config", &c, "--device", "cuda", "--epochs", "8",
    ];
    let args = args.into_iter().chain(["--out", run.to_str().unwrap()]);
    common::kill_once_written(
        dir.path(),
        args,
        &run.join("last.pt"),
        Duration::from_secs(300),
    );
    assert!(
        !run.join("model.pt").exists(),
        "the run ended before the kill"
    );
    let done = checkpoint::load(&run.join("last.pt"), Device::Cpu)
        .unwrap()
        .meta
        .training
        .unwrap()
        .epoch;
    let o = inception(
        dir.path(),
        &["train", "--resume", run.join("last.pt").to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("after epoch {done}")),
        "{}",
        stdout(&o)
    );
    // cuDNN chooses kernels by timing, so a resumed run is not bit for bit the same as an
    // uninterrupted one here (it is on the CPU: tests/integration/train.rs); it has every epoch once.
    let epochs: Vec<u64> = rows(&run).iter().map(|r| r.epoch).collect();
    assert_eq!(epochs, (1..=8).collect::<Vec<_>>());
    for f in ["model.pt", "last.pt", "best.pt"] {
        checkpoint::load(&run.join(f), Device::Cuda(0)).unwrap();
    }
}

#[test]
fn data_parallel_on_cuda_steps_like_one_process_of_the_whole_batch() {
    // As tests/integration/train.rs's CPU test (frozen BatchNorm and common::DATA_PARALLEL_EQUIVALENT: then
    // 2 × 4 images average to the gradient of 8), on CUDA, with the backend the tool chooses:
    // NCCL with one GPU per process where there are two GPUs; where there is one, both
    // processes share it over Gloo (NCCL refuses two ranks on one GPU), which tests Gloo's CUDA
    // path and says that NCCL did not run.
    let Some(_) = cuda("data_parallel_on_cuda") else {
        return;
    };
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let data = common::light_and_dark(dir.path(), 24);
    let config = common::repo().join("configs/smoke.json");
    let (d, config) = (data.display().to_string(), config.display().to_string());
    let gpus = tch::Cuda::device_count();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--data",
            &d,
            "--config",
            &config,
            "--device",
            "cuda",
            "--freeze-bn",
            "true",
            "--no-plots",
        ];
        args.extend(common::DATA_PARALLEL_EQUIVALENT);
        args.extend(extra);
        let o = common::bin()
            .args(&args)
            .env_remove("INCEPTION_DIST_BACKEND")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    run(&["--batch-size", "8", "--out", "one"]);
    let out = run(&["--batch-size", "4", "--nproc", "2", "--out", "two"]);
    let name = match (gpus >= 2, inception::dist::nccl_available()) {
        (true, true) => "NCCL",
        _ => "Gloo",
    };
    assert!(
        out.contains(&format!("data-parallel: 2 processes (c10d, {name})")),
        "{out}"
    );
    if gpus == 1 && inception::dist::nccl_available() {
        assert!(
            out.contains(
                "data-parallel over Gloo rather than NCCL: 2 processes on this machine share 1 \
                 GPU(s)"
            ),
            "{out}"
        );
    }
    let apart = common::weights_apart(&dir.path().join("one"), &dir.path().join("two"));
    eprintln!(
        "data-parallel on cuda ({name}, {gpus} GPU(s)): 2 × 4 and 1 × 8 differ by {:e} of the \
         largest weight{}",
        apart,
        if gpus < 2 {
            "; NCCL not run: it needs two GPUs"
        } else {
            ""
        }
    );
    // cuDNN may pick other kernels for 4 images than for 8: fp32 rounding, not another step.
    assert!(apart <= 1e-4, "2 × 4 and 1 × 8 differ by {apart:e}");
}
