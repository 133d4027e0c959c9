//! Loader throughput against the training step it feeds, at the same batch size.
//!
//! Prints images/s of the loader (cold: decoding every image on the fly; cached: from the
//! in-memory working-size copies) and of one seed-network training step (forward, backward,
//! SGD update) on the CPU, and their ratios. The data issue's goal: the loader at least 5× the
//! training step. Uses data/monkeypox (MSLD), else 200 generated JPEGs.
//!
//! Run: `cargo bench --bench loader` (after `make build`). Environment: BENCH_BATCH (32),
//! BENCH_IMAGE_SIZE (224), BENCH_STEPS (3).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use inception::data::folder::{scan_tree, Sample};
use inception::data::loader::{default_threads, prepare, Loader, Mode};
use inception::data::transform::{Augment, Normalization, TrainTransform};
use inception::model::{Arch, Model, NetConfig};
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn dataset(tmp: &Path) -> Result<Vec<Sample>> {
    let msld = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/monkeypox");
    if msld.is_dir() {
        return Ok(scan_tree(&msld)?.samples);
    }
    for c in ["a", "b"] {
        std::fs::create_dir_all(tmp.join(c))?;
        for i in 0..100u32 {
            let img = image::RgbImage::from_fn(300, 250, |x, y| {
                image::Rgb([(x * 7 + i) as u8, (y * 5) as u8, ((x ^ y) + i) as u8])
            });
            img.save(tmp.join(c).join(format!("{i}.jpg")))?;
        }
    }
    Ok(scan_tree(tmp)?.samples)
}

fn loader_rate(loader: &Loader, idx: &[usize], epochs: u64) -> Result<f64> {
    let start = Instant::now();
    let mut n = 0;
    for epoch in 0..epochs {
        for batch in loader.batches(idx, epoch) {
            n += batch?.indices.len();
        }
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    inception::runtime::retain_freed_memory();
    let batch = env("BENCH_BATCH", 32);
    let size = env("BENCH_IMAGE_SIZE", 224) as u32;
    let steps = env("BENCH_STEPS", 3);
    let tmp = tempfile::tempdir()?;
    let samples = dataset(tmp.path())?;
    let idx: Vec<usize> = (0..samples.len()).collect();
    let threads = default_threads();

    let t = Instant::now();
    let cached = prepare(&samples, size, 4 << 30, false, threads)?;
    let prepare_rate = samples.len() as f64 / t.elapsed().as_secs_f64();
    let uncached = prepare(&samples, size, 0, false, threads)?;
    let mode = Arc::new(Mode::Train(TrainTransform {
        image_size: size,
        normalization: Normalization::IMAGENET,
        augment: Augment {
            rotation: 10.0,
            brightness: 0.2,
            contrast: 0.2,
            ..Augment::default()
        },
    }));
    let make = |store| Loader {
        store,
        samples: Arc::new(samples.clone()),
        mode: Arc::clone(&mode),
        batch_size: batch,
        workers: threads,
        prefetch: 2,
        seed: 0,
        drop_last: false,
        shard: None,
    };
    let cold = loader_rate(&make(uncached.store), &idx, 1)?;
    let warm = loader_rate(&make(cached.store), &idx, 2)?;

    let model = Model::new(NetConfig::new(Arch::Seed, 2), Device::Cpu)?;
    let mut opt = tch::nn::Sgd {
        momentum: 0.9,
        ..Default::default()
    }
    .build(&model.vs, 0.01)?;
    let x = Tensor::randn(
        [batch as i64, 3, size as i64, size as i64],
        (Kind::Float, Device::Cpu),
    );
    let y = Tensor::zeros([batch as i64], (Kind::Int64, Device::Cpu));
    let mut step = || -> Result<()> {
        let loss = model
            .forward_t(&x, true)?
            .logits
            .cross_entropy_for_logits(&y);
        opt.backward_step(&loss);
        Ok(())
    };
    step()?; // warm-up
    let t = Instant::now();
    for _ in 0..steps {
        step()?;
    }
    let train = (steps * batch) as f64 / t.elapsed().as_secs_f64();

    println!(
        "loader vs training step: {} images, batch {batch}, {size}×{size}, {threads} threads",
        samples.len()
    );
    println!("{:<42} {:>10} {:>10}", "", "images/s", "× step");
    println!(
        "{:<42} {:>10.1} {:>10.1}",
        "decode + resize once (prepare)",
        prepare_rate,
        prepare_rate / train
    );
    println!(
        "{:<42} {:>10.1} {:>10.1}",
        "loader, cold (decoding on the fly)",
        cold,
        cold / train
    );
    println!(
        "{:<42} {:>10.1} {:>10.1}",
        "loader, cached (working-size images)",
        warm,
        warm / train
    );
    println!(
        "{:<42} {:>10.1} {:>10.1}",
        "training step, seed network, fp32", train, 1.0
    );
    Ok(())
}
