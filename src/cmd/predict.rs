//! `inception predict`: classes and probabilities for images.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::Serialize;
use tch::{Device, Kind};

use crate::checkpoint::{self, Checkpoint};
use crate::cli::PredictArgs;
use crate::data::image::load_rgb;
use crate::data::transform::EvalTransform;
use crate::device;

/// A validated prediction job.
#[derive(Debug)]
pub struct PredictConfig {
    pub checkpoint: PathBuf,
    pub top_k: Option<usize>,
    pub json: bool,
    pub batch_size: usize,
    pub device: Device,
    pub images: Vec<PathBuf>,
}

impl PredictConfig {
    pub fn from_args(args: &PredictArgs) -> Result<PredictConfig> {
        if args.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        if args.top_k == Some(0) {
            bail!("--top-k must be at least 1");
        }
        Ok(PredictConfig {
            checkpoint: args.checkpoint.clone(),
            top_k: args.top_k,
            json: args.json,
            batch_size: args.batch_size,
            device: device::resolve(&args.device)?,
            images: args.images.clone(),
        })
    }
}

/// One class and its probability.
#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    pub class: String,
    pub probability: f64,
}

/// The prediction for one image.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub path: String,
    pub class: String,
    pub probability: f64,
    pub top_k: Vec<Scored>,
}

pub fn run(args: &PredictArgs) -> Result<()> {
    let cfg = PredictConfig::from_args(args)?;
    let ckpt = checkpoint::load(&cfg.checkpoint, cfg.device)?;
    let (predictions, failures) = predict(&ckpt, &cfg)?;
    if cfg.json {
        println!("{}", serde_json::to_string_pretty(&predictions)?);
    } else {
        for p in &predictions {
            let rest: Vec<String> = p
                .top_k
                .iter()
                .skip(1)
                .map(|s| format!("{} {:.4}", s.class, s.probability))
                .collect();
            let rest = if rest.is_empty() {
                String::new()
            } else {
                format!("  ({})", rest.join(", "))
            };
            println!("{}: {} {:.4}{rest}", p.path, p.class, p.probability);
        }
    }
    if failures > 0 {
        bail!(
            "{failures} of {} images could not be read (listed above)",
            cfg.images.len()
        );
    }
    Ok(())
}

/// Predicts every readable image; unreadable ones are reported on stderr and counted.
pub fn predict(ckpt: &Checkpoint, cfg: &PredictConfig) -> Result<(Vec<Prediction>, usize)> {
    let meta = &ckpt.meta;
    let transform = EvalTransform {
        image_size: meta.image_size as u32,
        normalization: meta.normalization,
    };
    let k = cfg.top_k.unwrap_or(5).min(meta.classes.len());
    let mut predictions = Vec::with_capacity(cfg.images.len());
    let mut failures = 0;
    let _guard = tch::no_grad_guard();
    for chunk in cfg.images.chunks(cfg.batch_size) {
        let mut images = Vec::with_capacity(chunk.len());
        let mut paths = Vec::with_capacity(chunk.len());
        for path in chunk {
            match load_rgb(path) {
                Ok(img) => {
                    images.push(img);
                    paths.push(path);
                }
                Err(e) => {
                    eprintln!("error: {}", crate::cmd::error_line(&e));
                    failures += 1;
                }
            }
        }
        if images.is_empty() {
            continue;
        }
        let x = transform.batch(&images)?.f_to_device(cfg.device)?;
        let logits = ckpt.model.forward_t(&x, false)?.logits;
        let probs = logits
            .f_softmax(-1, Kind::Float)?
            .f_to_device(Device::Cpu)?;
        let (values, indices) = probs.f_topk(k as i64, -1, true, true)?;
        let values = Vec::<Vec<f32>>::try_from(&values)?;
        let indices = Vec::<Vec<i64>>::try_from(&indices)?;
        for ((path, v), i) in paths.iter().zip(values).zip(indices) {
            let top_k: Vec<Scored> = v
                .iter()
                .zip(&i)
                .map(|(p, &c)| Scored {
                    class: meta.classes[c as usize].clone(),
                    probability: *p as f64,
                })
                .collect();
            predictions.push(Prediction {
                path: path.display().to_string(),
                class: top_k[0].class.clone(),
                probability: top_k[0].probability,
                top_k,
            });
        }
    }
    Ok((predictions, failures))
}
