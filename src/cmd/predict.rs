//! `inception predict`: classes and probabilities for images.

use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;

use anyhow::{anyhow, bail, Result};
use tch::Tensor;

use crate::cli::PredictArgs;
use crate::data::folder::{find_images, holds, PassedOver};
use crate::data::image::load_rgb;
use crate::data::loader::{default_threads, parallel_map};
use crate::data::transform::EvalTransform;
use crate::device::{self, DeviceChoice};
use crate::ensemble::Ensemble;
use crate::precision::Compute;
use crate::predict::Prediction;
use crate::runs::given_or_latest;
use crate::text::csv_field;

/// How predictions are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Csv,
}

/// A validated prediction job.
#[derive(Debug)]
pub struct PredictConfig {
    /// Checkpoint files or cross-validation folders: one model, or an ensemble.
    pub checkpoints: Vec<PathBuf>,
    /// Test-time augmentation.
    pub tta: bool,
    pub top_k: Option<usize>,
    pub format: Format,
    pub batch_size: usize,
    /// The device asked for (`auto` is said with its reason).
    pub device: DeviceChoice,
    /// Device, precision and layout.
    pub compute: Compute,
    /// The image files, after expanding folders and globs.
    pub images: Vec<PathBuf>,
    /// Arguments that named nothing readable, with the reason.
    pub missing: Vec<String>,
    /// Unreadable images are listed as skipped and do not fail the run.
    pub skip_bad: bool,
    /// Raw probabilities (`--no-calibration`).
    pub no_calibration: bool,
    /// The screening threshold instead of the checkpoint's (`--threshold`).
    pub threshold: Option<f64>,
}

impl PredictConfig {
    pub fn from_args(args: &PredictArgs) -> Result<PredictConfig> {
        if args.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        if args.top_k == Some(0) {
            bail!("--top-k must be at least 1");
        }
        let checkpoints = given_or_latest(&args.checkpoint)?;
        let choice: DeviceChoice = args.device.parse()?;
        let (images, missing) = expand(&args.paths);
        let format = match (args.json, args.csv) {
            (true, _) => Format::Json,
            (_, true) => Format::Csv,
            _ => Format::Text,
        };
        Ok(PredictConfig {
            checkpoints,
            tta: args.tta,
            top_k: args.top_k,
            format,
            batch_size: args.batch_size,
            device: choice,
            compute: Compute::new(choice.resolve()?, args.precision, true)?,
            images,
            missing,
            skip_bad: args.skip_bad,
            no_calibration: args.no_calibration,
            threshold: args.threshold,
        })
    }
}

/// Expands each argument: a file as it is, a folder into its images (recursively, sorted), a
/// glob pattern into the files it matches. Arguments that name nothing are returned apart.
pub fn expand(args: &[String]) -> (Vec<PathBuf>, Vec<String>) {
    let (mut files, mut missing) = (vec![], vec![]);
    for arg in args {
        let path = Path::new(arg);
        if path.is_file() {
            files.push(path.to_path_buf());
        } else if path.is_dir() {
            match find_images(path) {
                Ok((images, other)) => {
                    // Recognised formats that are not decoded are reported file by file, as
                    // unreadable images are; other files are passed over.
                    let mut found: Vec<PathBuf> = other
                        .iter()
                        .filter(|i| matches!(i.kind, PassedOver::Unsupported(_)))
                        .map(|i| i.path.clone())
                        .collect();
                    if images.is_empty() && found.is_empty() {
                        missing.push(format!(
                            "{arg}: a folder with no images ({})",
                            holds(&other)
                        ));
                    }
                    found.extend(images);
                    found.sort();
                    files.extend(found);
                }
                Err(e) => missing.push(format!("{arg}: {e:#}")),
            }
        } else if arg.contains(['*', '?', '[']) {
            let before = files.len();
            match glob::glob(arg) {
                Ok(paths) => files.extend(paths.flatten().filter(|p| p.is_file())),
                Err(e) => missing.push(format!("{arg}: not a valid pattern ({e})")),
            }
            if files.len() == before {
                missing.push(format!("{arg}: the pattern matches no file"));
            }
        } else {
            missing.push(format!("{arg}: no such file or folder"));
        }
    }
    (files, missing)
}

pub fn run(args: &PredictArgs) -> Result<()> {
    let cfg = PredictConfig::from_args(args)?;
    let mut ensemble = Ensemble::load(&cfg.checkpoints, cfg.compute)?;
    if cfg.tta {
        ensemble = ensemble.with_tta();
    }
    if cfg.no_calibration {
        ensemble = ensemble.without_calibration();
    }
    ensemble = ensemble.with_threshold(cfg.threshold)?;
    eprintln!("probabilities: {}", ensemble.calibration_note());
    if ensemble.members.len() > 1 {
        eprintln!(
            "ensemble of {} members: {}",
            ensemble.members.len(),
            ensemble.files().join(", ")
        );
    }
    device::announce(cfg.device, &cfg.compute);
    for m in &cfg.missing {
        eprintln!("error: {m}");
    }
    let (predictions, failures) = predict(&ensemble, &cfg)?;
    print!(
        "{}",
        render(&predictions, cfg.format, &ensemble.meta().classes)?
    );
    let total = cfg.images.len() + cfg.missing.len();
    if cfg.skip_bad && failures > 0 {
        eprintln!("skipped {failures} unreadable image(s) of {total} (listed above)");
    }
    let failed = if cfg.skip_bad { 0 } else { failures } + cfg.missing.len();
    if failed > 0 {
        bail!("{failed} of {total} inputs could not be read (listed above)");
    }
    Ok(())
}

/// Predictions as text, JSON or CSV.
pub fn render(predictions: &[Prediction], format: Format, classes: &[String]) -> Result<String> {
    let mut out = String::new();
    match format {
        Format::Json => out = serde_json::to_string_pretty(predictions)? + "\n",
        Format::Text => {
            for p in predictions {
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
                out += &format!(
                    "{}: {} {:.4}{rest}; {}\n",
                    p.path,
                    p.class,
                    p.probability,
                    p.verdict(classes)
                );
            }
        }
        Format::Csv => {
            let k = predictions.iter().map(|p| p.top_k.len()).max().unwrap_or(1);
            out += "path,class,probability";
            for i in 2..=k {
                out += &format!(",class_{i},probability_{i}");
            }
            out += ",calibrated,decision,set\n";
            for p in predictions {
                out += &csv_field(&p.path);
                for s in &p.top_k {
                    out += &format!(",{},{:.6}", csv_field(&s.class), s.probability);
                }
                for _ in p.top_k.len()..k {
                    out += ",,";
                }
                let set = p.set.as_ref().map(|s| s.join("|")).unwrap_or_default();
                out += &format!(
                    ",{},{},{}\n",
                    p.calibrated,
                    csv_field(&p.decision),
                    csv_field(&set)
                );
            }
        }
    }
    Ok(out)
}

/// The files of one batch, decoded and preprocessed ahead of the network.
struct ReadBatch<'a> {
    /// The files that decoded, in order.
    paths: Vec<&'a Path>,
    /// Why the others did not, in order.
    failures: Vec<anyhow::Error>,
    /// `[paths.len(), 3, S, S]`; `None` when no file decoded.
    images: Option<Tensor>,
}

/// Decodes and preprocesses `files` on `threads` threads.
fn read_batch<'a>(
    files: &'a [PathBuf],
    transform: &EvalTransform,
    threads: usize,
) -> Result<ReadBatch<'a>> {
    let read = parallel_map(files, threads, |path| -> Result<Vec<f32>> {
        let s = transform.image_size as usize;
        let mut data = Vec::with_capacity(3 * s * s);
        transform.apply_into(&load_rgb(path)?, &mut data);
        Ok(data)
    });
    let (mut paths, mut failures, mut data) = (vec![], vec![], vec![]);
    for (path, r) in files.iter().zip(read) {
        match r {
            Some(Ok(d)) => {
                paths.push(path.as_path());
                data.extend_from_slice(&d);
            }
            Some(Err(e)) => failures.push(e),
            None => bail!("a decoding thread died on {}", path.display()),
        }
    }
    let s = transform.image_size as i64;
    let images = if paths.is_empty() {
        None
    } else {
        Some(Tensor::f_from_slice(&data)?.f_view([paths.len() as i64, 3, s, s])?)
    };
    Ok(ReadBatch {
        paths,
        failures,
        images,
    })
}

/// Predicts every readable image; unreadable ones are reported on stderr and counted. A reader
/// thread decodes the next batch (on all cores) while the network runs on this one.
pub fn predict(ensemble: &Ensemble, cfg: &PredictConfig) -> Result<(Vec<Prediction>, usize)> {
    let meta = ensemble.meta();
    let transform = EvalTransform {
        image_size: meta.image_size as u32,
        normalization: meta.normalization,
    };
    let k = cfg.top_k.unwrap_or(5).min(meta.classes.len());
    let mut predictions = Vec::with_capacity(cfg.images.len());
    let mut failures = 0;
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = sync_channel(1);
        let (images, transform) = (&cfg.images, &transform);
        let reader = scope.spawn(move || {
            for chunk in images.chunks(cfg.batch_size) {
                if tx
                    .send(read_batch(chunk, transform, default_threads()))
                    .is_err()
                {
                    return;
                }
            }
        });
        for batch in rx {
            let batch = batch?;
            for e in &batch.failures {
                let what = if cfg.skip_bad { "skipped" } else { "error" };
                eprintln!("{what}: {}", crate::text::error_line(e));
            }
            failures += batch.failures.len();
            let Some(images) = &batch.images else {
                continue;
            };
            let answers = ensemble.answers(cfg.compute, images)?;
            let threshold = ensemble.threshold();
            for (path, a) in batch.paths.iter().zip(&answers) {
                let path = path.display().to_string();
                predictions.push(Prediction::from_answer(
                    path,
                    a,
                    &meta.classes,
                    k,
                    ensemble.is_calibrated(),
                    threshold,
                ));
            }
        }
        reader
            .join()
            .map_err(|_| anyhow!("the thread reading the images stopped on an internal error"))
    })?;
    Ok((predictions, failures))
}
