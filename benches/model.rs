//! The network's speed on this machine: training steps (forward, backward, AdamW update) and
//! inference forward passes of the seed network, batch 32, 224×224, in each layout and precision,
//! as ratios to fp32 in the default layout measured in the same process.
//!
//! Run: `cargo bench --bench model`. Environment: BENCH_ARCH (seed|googlenet), BENCH_BATCH
//! (32), BENCH_IMAGE_SIZE (224), BENCH_STEPS (3), BENCH_DEFAULT_MALLOC=1 (leave glibc's malloc
//! as it is instead of `runtime::retain_freed_memory`, as the binary does; the page faults per
//! training step show the difference).

use std::time::Instant;

use anyhow::Result;
use inception::config::OptimizerKind;
use inception::model::layers::channels_last;
use inception::model::{Arch, Model, NetConfig};
use inception::precision::{Autocast, Precision};
use inception::system::cpu_has_bf16;
use inception::train::optim::Optimizer;
use tch::{Device, Kind, Reduction, Tensor};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Variant {
    name: &'static str,
    channels_last: bool,
    precision: Precision,
}

fn main() -> Result<()> {
    let default_malloc = std::env::var("BENCH_DEFAULT_MALLOC").is_ok_and(|v| v == "1");
    if !default_malloc {
        inception::runtime::retain_freed_memory();
    }
    let arch = match std::env::var("BENCH_ARCH").as_deref() {
        Ok("googlenet") => Arch::Googlenet,
        _ => Arch::Seed,
    };
    let batch = env("BENCH_BATCH", 32) as i64;
    let size = env("BENCH_IMAGE_SIZE", 224) as i64;
    let steps = env("BENCH_STEPS", 3);
    let device = Device::Cpu;
    let x = Tensor::randn([batch, 3, size, size], (Kind::Float, device));
    let y = Tensor::randint(2, [batch], (Kind::Int64, device));
    let variants = [
        Variant {
            name: "fp32",
            channels_last: false,
            precision: Precision::Fp32,
        },
        Variant {
            name: "fp32 channels-last",
            channels_last: true,
            precision: Precision::Fp32,
        },
        Variant {
            name: "bf16 autocast",
            channels_last: false,
            precision: Precision::Bf16,
        },
        Variant {
            name: "bf16 channels-last",
            channels_last: true,
            precision: Precision::Bf16,
        },
    ];
    println!(
        "{arch}, batch {batch}, {size}×{size}, {} threads, CPU bf16: {}, malloc: {}",
        tch::get_num_threads(),
        cpu_has_bf16(),
        if default_malloc {
            "glibc default"
        } else {
            "freed memory retained"
        }
    );
    println!(
        "{:<34} {:>12} {:>8} {:>12} {:>8}",
        "", "train img/s", "×", "infer img/s", "×"
    );
    let (mut base_train, mut base_infer) = (0.0, 0.0);
    for v in &variants {
        let mut model = Model::new(NetConfig::new(arch, 2), device)?;
        if v.channels_last {
            model.to_channels_last()?;
        }
        let input = if v.channels_last {
            channels_last(&x)?
        } else {
            x.shallow_clone()
        };
        let mut opt = Optimizer::new(&model, OptimizerKind::Adamw, 0.9, 0.01)?;
        let mut step = || -> Result<()> {
            let logits = {
                let _ac = Autocast::new(v.precision, device);
                model.forward_t(&input, true)?.logits
            };
            let loss =
                logits.f_cross_entropy_loss(&y, None::<Tensor>, Reduction::Mean, -100, 0.0)?;
            opt.zero_grad();
            loss.f_backward()?;
            opt.step(1e-4)
        };
        step()?;
        let (t, faults) = (Instant::now(), inception::runtime::page_faults());
        for _ in 0..steps {
            step()?;
        }
        let train = (steps as i64 * batch) as f64 / t.elapsed().as_secs_f64();
        let faults = (inception::runtime::page_faults() - faults) / steps as i64;
        // The optimiser's share of a step: the AdamW update alone, on the last gradients.
        let t = Instant::now();
        for _ in 0..steps {
            opt.step(1e-4)?;
        }
        let update_ms = t.elapsed().as_secs_f64() * 1e3 / steps as f64;

        for fold in [false, true] {
            if fold {
                model.fold_batchnorm()?;
            }
            let infer = || -> Result<()> {
                let _g = tch::no_grad_guard();
                let _ac = Autocast::new(v.precision, device);
                model.forward_t(&input, false)?;
                Ok(())
            };
            infer()?;
            let t = Instant::now();
            for _ in 0..steps {
                infer()?;
            }
            let rate = (steps as i64 * batch) as f64 / t.elapsed().as_secs_f64();
            if base_train == 0.0 {
                base_train = train;
            }
            if base_infer == 0.0 {
                base_infer = rate;
            }
            let name = format!("{}{}", v.name, if fold { " + BN folded" } else { "" });
            let train_cell = if fold {
                String::new()
            } else {
                format!("{train:.1}")
            };
            let train_ratio = if fold {
                String::new()
            } else {
                format!("{:.2}", train / base_train)
            };
            println!(
                "{name:<34} {train_cell:>12} {train_ratio:>8} {rate:>12.1} {:>8.2}",
                rate / base_infer
            );
            if !fold {
                println!(
                    "{:<34} AdamW update alone: {update_ms:.0} ms per step; {faults} page faults \
                     per step",
                    ""
                );
            }
        }
    }
    Ok(())
}
