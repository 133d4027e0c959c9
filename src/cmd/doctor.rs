//! `inception doctor`: what this installation can do (tool, libtorch, CPU, CUDA devices), a
//! two-second forward pass of GoogLeNet on each device, and what is broken with its fix. Exit
//! code 1 when something is.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::cli::DoctorArgs;
use crate::model::{Arch, Model, NetConfig};
use crate::precision::{auto_precision, auto_precision_line};
use crate::precision::{Compute, Precision};
use crate::system::System;

/// How long each device's smoke pass runs.
pub const SMOKE_SECONDS: f64 = 2.0;
const SMOKE_BATCH: i64 = 8;
const SMOKE_SIZE: i64 = 224;

/// One device's forward passes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Smoke {
    pub device: String,
    /// What `--precision auto` takes there, which the pass used.
    pub precision: String,
    pub images_per_s: Option<f64>,
    /// The error, when the pass failed or gave non-finite outputs.
    pub error: Option<String>,
}

/// Something that does not work, and how to fix it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Problem {
    pub problem: String,
    pub fix: String,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    system: &'a System,
    /// Device, what `--precision auto` takes there, and why.
    auto_precision: Vec<(String, String, String)>,
    smoke: &'a [Smoke],
    problems: &'a [Problem],
}

pub fn run(args: &DoctorArgs) -> Result<()> {
    let system = System::probe();
    let smoke: Vec<Smoke> = system.devices().into_iter().map(smoke_pass).collect();
    let problems = problems(&system, &smoke);
    if args.json {
        let auto = system
            .devices()
            .into_iter()
            .map(|d| {
                let (p, why) = auto_precision(d);
                (crate::device::describe(d), p, why)
            })
            .collect();
        let report = Report {
            system: &system,
            auto_precision: auto,
            smoke: &smoke,
            problems: &problems,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&system, &smoke, &problems));
    }
    if !problems.is_empty() {
        bail!(
            "{} problem(s) found (listed above, each with its fix)",
            problems.len()
        );
    }
    Ok(())
}

/// GoogLeNet with fresh weights, forward passes of a random batch for [`SMOKE_SECONDS`].
fn smoke_pass(device: Device) -> Smoke {
    let precision = Precision::Auto.resolve(device).unwrap_or(Precision::Fp32);
    let mut out = Smoke {
        device: crate::device::describe(device),
        precision: precision.to_string(),
        images_per_s: None,
        error: None,
    };
    match time_forward(device, precision) {
        Ok(rate) => out.images_per_s = Some(rate),
        Err(e) => out.error = Some(crate::text::error_line(&e)),
    }
    out
}

fn time_forward(device: Device, precision: Precision) -> Result<f64> {
    let compute = Compute::new(device, precision, false)?;
    let model = Model::new(NetConfig::new(Arch::Googlenet, 2), device)?;
    let x = Tensor::f_randn(
        [SMOKE_BATCH, 3, SMOKE_SIZE, SMOKE_SIZE],
        (Kind::Float, Device::Cpu),
    )?;
    let start = Instant::now();
    let mut images = 0;
    while images == 0 || start.elapsed() < Duration::from_secs_f64(SMOKE_SECONDS) {
        let p = tch::no_grad(|| compute.probabilities(&model, &x, Kind::Float))?;
        let total = p.f_sum(Kind::Double)?.double_value(&[]);
        if !total.is_finite() || (total - SMOKE_BATCH as f64).abs() > 1e-2 {
            bail!("the forward pass gave non-finite or unnormalised probabilities (sum {total})");
        }
        images += SMOKE_BATCH;
    }
    Ok(images as f64 / start.elapsed().as_secs_f64())
}

/// What is broken, from what was found.
pub fn problems(system: &System, smoke: &[Smoke]) -> Vec<Problem> {
    let mut out = vec![];
    for s in smoke {
        if let Some(e) = &s.error {
            out.push(Problem {
                problem: format!("a forward pass on {} fails: {e}", s.device),
                fix: if s.device == "cpu" {
                    "reinstall libtorch: rm -rf .deps && scripts/deps.sh, then cargo build --release"
                        .into()
                } else {
                    format!(
                        "check the GPU with nvidia-smi; try --precision fp32 on {}; a libtorch \
                         built for another CUDA version needs reinstalling (scripts/deps.sh)",
                        s.device
                    )
                },
            });
        }
    }
    if let Some(driver) = &system.driver {
        let seen = driver.devices.len() as i64;
        if seen > 0 && system.torch_cuda_devices == 0 {
            out.push(Problem {
                problem: format!(
                    "the NVIDIA driver (CUDA {}) sees {seen} GPU(s), libtorch none: it is a \
                     CPU-only build or cannot load its CUDA libraries{}",
                    driver.cuda_version,
                    match &system.libtorch.cuda_runtime {
                        Some(v) => format!(" (built for CUDA {v})"),
                        None => String::new(),
                    }
                ),
                fix: "install a libtorch built for a CUDA version this driver supports (the torch \
                      wheel of scripts/requirements.txt is; a LIBTORCH in your environment wins \
                      over it), then cargo build --release"
                    .into(),
            });
        }
    }
    if system.torch_cuda_devices > 1 && !system.distributed.nccl {
        out.push(Problem {
            problem: format!(
                "{} GPUs, but this build has no NCCL: training on several of them goes through \
                 Gloo and host memory (correct, slower)",
                system.torch_cuda_devices
            ),
            fix: "scripts/deps.sh (it installs the CUDA headers NCCL's process group needs into \
                  .deps/cuda, or set CUDA_INCLUDE to your CUDA toolkit's and NCCL's include \
                  folders), then cargo build --release"
                .into(),
        });
    }
    out
}

fn render(system: &System, smoke: &[Smoke], problems: &[Problem]) -> String {
    let mut s = String::new();
    let lt = &system.libtorch;
    s += &format!("inception {}\n", system.tool_version);
    s += &format!(
        "libtorch {} at {}\n",
        lt.version,
        lt.path
            .as_deref()
            .unwrap_or("(not found in this process's mapped files)")
    );
    match (&lt.cuda_runtime, &lt.cudnn) {
        (Some(c), Some(d)) => s += &format!("  built with CUDA {c}, cuDNN {d}\n"),
        (Some(c), None) => s += &format!("  built with CUDA {c}, without cuDNN\n"),
        _ => s += "  CPU-only (no CUDA library loaded)\n",
    }
    s += &format!(
        "CPU: {} threads ({} inter-op), kernels {}, bf16 {}; --precision auto takes {}\n",
        system.threads,
        system.interop_threads,
        lt.cpu_capability.as_deref().unwrap_or("unknown"),
        if system.cpu_bf16 {
            "native (AVX512-BF16 or AMX)"
        } else {
            "emulated (no AVX512-BF16 or AMX)"
        },
        auto_precision_line(Device::Cpu)
    );
    match &system.driver {
        None => {
            s += &format!(
                "CUDA: {}; libtorch sees {} device(s)\n",
                system.no_driver.as_deref().unwrap_or("no NVIDIA driver"),
                system.torch_cuda_devices
            )
        }
        Some(d) => {
            s += &format!(
                "CUDA: driver supports CUDA {}, {} device(s); libtorch sees {}, cuDNN {}\n",
                d.cuda_version,
                d.devices.len(),
                system.torch_cuda_devices,
                if system.cudnn_available {
                    "available"
                } else {
                    "not available"
                }
            );
            for dev in &d.devices {
                s += &format!(
                    "  cuda:{} {}, {:.1} GiB, compute capability {}.{}; --precision auto takes {}\n",
                    dev.index,
                    dev.name,
                    dev.memory_bytes as f64 / (1u64 << 30) as f64,
                    dev.capability.0,
                    dev.capability.1,
                    auto_precision_line(Device::Cuda(dev.index))
                );
            }
        }
    }
    let yes = |b: bool| if b { "yes" } else { "no" };
    s += &format!(
        "multi-process training (c10d): Gloo {}, NCCL {}\n",
        yes(system.distributed.gloo),
        yes(system.distributed.nccl)
    );
    s += &format!(
        "smoke test: GoogLeNet forward passes, batch {SMOKE_BATCH} at {SMOKE_SIZE} px, random \
         weights, {SMOKE_SECONDS} s per device\n"
    );
    for r in smoke {
        match (&r.images_per_s, &r.error) {
            (_, Some(e)) => s += &format!("  {:<7} {:<5} FAILED: {e}\n", r.device, r.precision),
            (Some(rate), None) => {
                s += &format!(
                    "  {:<7} {:<5} {rate:.1} images/s, ok\n",
                    r.device, r.precision
                )
            }
            (None, None) => {}
        }
    }
    if problems.is_empty() {
        s += "no problems found\n";
    }
    for p in problems {
        s += &format!("problem: {}\n  fix: {}\n", p.problem, p.fix);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::{CudaDevice, Driver};

    fn system(driver_gpus: usize, torch_gpus: i64) -> System {
        let mut s = System::probe();
        s.driver = Some(Driver {
            cuda_version: "12.8".into(),
            devices: (0..driver_gpus)
                .map(|i| CudaDevice {
                    index: i,
                    name: "GPU".into(),
                    memory_bytes: 1 << 34,
                    capability: (8, 0),
                })
                .collect(),
        });
        s.torch_cuda_devices = torch_gpus;
        s.distributed.nccl = true;
        s
    }

    fn ok(device: &str) -> Smoke {
        Smoke {
            device: device.into(),
            precision: "bf16".into(),
            images_per_s: Some(10.0),
            error: None,
        }
    }

    #[test]
    fn gpus_the_driver_sees_and_libtorch_does_not_are_a_problem_with_a_fix() {
        let p = problems(&system(2, 0), &[ok("cpu")]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].problem.contains("sees 2 GPU(s), libtorch none"),
            "{p:?}"
        );
        assert!(p[0]
            .fix
            .contains("install a libtorch built for a CUDA version"));
        assert!(problems(&system(2, 2), &[ok("cpu"), ok("cuda:0"), ok("cuda:1")]).is_empty());
        assert!(problems(&system(0, 0), &[ok("cpu")]).is_empty());
    }

    #[test]
    fn several_gpus_without_nccl_are_a_problem_with_a_fix() {
        let mut s = system(2, 2);
        s.distributed.nccl = false;
        let p = problems(&s, &[ok("cpu"), ok("cuda:0"), ok("cuda:1")]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].problem.contains("2 GPUs, but this build has no NCCL"),
            "{p:?}"
        );
        assert!(p[0].fix.contains("scripts/deps.sh"));
        let one = system(1, 1);
        let mut one_without = one.clone();
        one_without.distributed.nccl = false;
        assert!(problems(&one_without, &[ok("cpu"), ok("cuda:0")]).is_empty());
    }

    #[test]
    fn a_failed_smoke_pass_is_a_problem_named_by_device() {
        let mut bad = ok("cuda:1");
        bad.error = Some("CUDA error: out of memory".into());
        let p = problems(&system(2, 2), &[ok("cpu"), ok("cuda:0"), bad]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0]
            .problem
            .contains("on cuda:1 fails: CUDA error: out of memory"));
        assert!(p[0].fix.contains("nvidia-smi"));
    }
}
