//! `inception export`: a checkpoint, or an ensemble of them, as a traced TorchScript module for
//! serving engines (TorchServe, Triton's PyTorch backend, libtorch, `torch.jit.load`), with its
//! preprocessing written beside it as JSON.
//!
//! The module is recorded by libtorch's tracer (`torch.jit.trace`, here through tch's
//! `CModule::create_by_tracing`) from the network in eval mode, in fp32 on the CPU, with
//! BatchNorm folded into the convolutions as eval and predict run it. It takes a normalised
//! `[N, 3, S, S]` float tensor and returns logits `[N, classes]`. An ensemble returns the log of
//! its members' mean probabilities, whose softmax is the ensemble's prediction. Before it says
//! done, the command loads the saved file back and checks it against the network on a batch of
//! another size than the one traced.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use tch::{CModule, Device, Kind, Tensor};

use crate::checkpoint::{write_atomic, write_atomic_with};
use crate::cli::{ExportArgs, ExportFormat};
use crate::data::transform::resize_size;
use crate::ensemble::Ensemble;
use crate::precision::{Compute, Precision};
use crate::runs::given_or_latest;

/// Largest difference from the network's logits the saved module may show.
pub const TOLERANCE: f64 = 1e-4;

/// A validated export.
#[derive(Debug)]
pub struct ExportConfig {
    pub checkpoints: Vec<PathBuf>,
    pub out: PathBuf,
    /// Where the preprocessing goes: `OUT.json`.
    pub preprocessing: PathBuf,
    pub force: bool,
}

impl ExportConfig {
    pub fn from_args(args: &ExportArgs) -> Result<ExportConfig> {
        if args.format == ExportFormat::Torchscript {
            if let Some(n) = args.opset {
                bail!("--opset {n}: for --format onnx only");
            }
            if args.dynamic_batch {
                bail!("--dynamic-batch: for --format onnx only (a TorchScript module takes any batch)");
            }
            if args.int8 {
                bail!("--int8: for --format onnx only");
            }
            if args.fp16 {
                bail!("--fp16: for --format onnx only");
            }
        }
        if let Some(n) = args.opset {
            crate::onnx::Graph::new(n)?;
        }
        let checkpoints = given_or_latest(&args.checkpoint)?;
        let mut preprocessing = args.out.clone().into_os_string();
        preprocessing.push(".json");
        let cfg = ExportConfig {
            checkpoints,
            out: args.out.clone(),
            preprocessing: preprocessing.into(),
            force: args.force,
        };
        if !cfg.force {
            for p in [&cfg.out, &cfg.preprocessing] {
                if p.exists() {
                    bail!("{} exists; --force replaces it", p.display());
                }
            }
        }
        Ok(cfg)
    }
}

/// The preprocessing and interface of an exported module, written as `OUT.json`.
#[derive(Debug, Serialize)]
pub struct Interface {
    pub format: &'static str,
    /// `[N, 3, S, S]` float32, RGB, channel-major, normalised as below.
    pub input: String,
    pub output: String,
    pub image_size: i64,
    /// The shorter side is resized to this (bilinear, antialiased), then centre-cropped to
    /// `image_size`.
    pub resize_shorter_side: u32,
    pub mean: [f64; 3],
    pub std: [f64; 3],
    pub classes: Vec<String>,
    /// The same preprocessing in torchvision's words.
    pub torchvision: String,
    pub arch: String,
    pub members: Vec<String>,
    pub batchnorm_folded: bool,
    /// What a single checkpoint carries for calibrated answers (`train --calibration-from`):
    /// temperature, screening threshold, conformal thresholds; `None` for an ensemble (whose
    /// calibration applies to each member before the mean, which the module's output no longer
    /// allows) or a checkpoint without one.
    pub trust: Option<crate::trust::TrustRecord>,
    /// How `trust` turns the module's logits into the answers `inception predict` gives.
    pub trust_rule: Option<String>,
    pub tool_version: &'static str,
}

/// The rule that turns the module's logits into calibrated probabilities, a decision and a set.
fn trust_rule(t: &crate::trust::TrustRecord) -> String {
    let mut rule = format!(
        "T = {}; p = softmax(logits / T) (the probabilities inception predict reports, and \
         those the threshold and sets were fitted on)",
        t.temperature()
    );
    if let Some(th) = &t.threshold {
        rule.push_str(&format!(
            "; decision: {:?} when its p >= {}, else the other class",
            th.positive_class, th.threshold
        ));
    }
    if let Some(c) = &t.conformal {
        let score = match c.score {
            crate::trust::conformal::ScoreKind::Lac => "1 - p[c]",
            crate::trust::conformal::ScoreKind::Aps => {
                "the sum of p over the classes with p >= p[c]"
            }
        };
        let which = if c.class_conditional {
            "conformal.thresholds[c] (one per class, class order)"
        } else {
            "conformal.thresholds[0]"
        };
        rule.push_str(&format!(
            "; conformal set (alpha {}): every class c whose score {score} is <= {which}",
            c.alpha
        ));
    }
    rule
}

pub fn run(args: &ExportArgs) -> Result<()> {
    let cfg = ExportConfig::from_args(args)?;
    let compute = Compute::new(Device::Cpu, Precision::Fp32, false)?;
    let mut ensemble = Ensemble::load(&cfg.checkpoints, compute)?;
    if args.format == ExportFormat::Onnx {
        return onnx(&cfg, &ensemble, args);
    }
    // Weights that require gradients cannot become the traced module's constants.
    for (_, m) in &mut ensemble.members {
        m.model.vs.freeze();
    }
    let meta = ensemble.meta().clone();
    let s = meta.image_size;

    tch::manual_seed(0);
    let example = Tensor::f_randn([2, 3, s, s], (Kind::Float, Device::Cpu))?;
    let module = tch::no_grad(|| trace(&ensemble, &example))?;
    // The module is saved to a temporary file, loaded back and checked on another batch size;
    // only then does it take OUT's place (an existing OUT stays as it was when the check fails).
    let check = Tensor::f_randn([3, 3, s, s], (Kind::Float, Device::Cpu))?;
    let mut diff = f64::NAN;
    write_atomic_with(&cfg.out, |tmp| {
        module
            .save(tmp)
            .map_err(|e| anyhow!("writing TorchScript: {e}"))?;
        diff = tch::no_grad(|| -> Result<f64> {
            let saved = CModule::load(tmp).context("loading the module back")?;
            let got = saved.forward_ts(&[&check])?;
            let want = logits(&ensemble, &check)?;
            Ok(got.f_sub(&want)?.f_abs()?.f_max()?.double_value(&[]))
        })?;
        if diff.is_nan() || diff > TOLERANCE {
            bail!(
                "the traced module's logits differ from the network's by {diff:.2e} (more than \
                 {TOLERANCE:e}); nothing written"
            );
        }
        Ok(())
    })?;

    let interface = interface(
        &ensemble,
        "torchscript",
        if ensemble.members.len() == 1 {
            "logits [N, classes]; softmax over dim 1 gives the probabilities".into()
        } else {
            format!(
                "log of the mean of {} members' probabilities [N, classes]; softmax over dim 1 \
             (or exp) gives the ensemble's probabilities",
                ensemble.members.len()
            )
        },
    );
    let mut text = serde_json::to_string_pretty(&interface)?;
    text.push('\n');
    write_atomic(&cfg.preprocessing, text.as_bytes())?;
    println!(
        "wrote {} (TorchScript, {} {}, input [N, 3, {s}, {s}], {} classes; loaded back, logits \
         within {diff:.1e} of the network's) and {} (its preprocessing)",
        cfg.out.display(),
        meta.arch,
        if ensemble.members.len() == 1 {
            "network".to_string()
        } else {
            format!("ensemble of {}", ensemble.members.len())
        },
        meta.classes.len(),
        cfg.preprocessing.display()
    );
    Ok(())
}

/// The preprocessing and interface written beside a module as OUT.json.
fn interface(ensemble: &Ensemble, format: &'static str, output: String) -> Interface {
    let meta = ensemble.meta();
    let s = meta.image_size;
    let single_trust = match ensemble.members.len() {
        1 => ensemble.trust.clone(),
        _ => None,
    };
    let resize = resize_size(s as u32);
    let n = meta.normalization;
    Interface {
        format,
        input: format!(
            "float32 [N, 3, {s}, {s}], RGB, channel-major, pixels/255 normalised by mean and std"
        ),
        output,
        image_size: s,
        resize_shorter_side: resize,
        mean: n.mean,
        std: n.std,
        classes: meta.classes.clone(),
        torchvision: format!(
            "Compose([Resize({resize}), CenterCrop({s}), ToTensor(), Normalize(mean={:?}, \
             std={:?})])",
            n.mean, n.std
        ),
        arch: meta.arch.name().into(),
        members: ensemble.files(),
        batchnorm_folded: true,
        trust: single_trust.clone(),
        trust_rule: single_trust.as_ref().map(trust_rule),
        tool_version: env!("CARGO_PKG_VERSION"),
    }
}

/// `--format onnx`: the model written by [`crate::export`], then OUT.json.
fn onnx(cfg: &ExportConfig, ensemble: &Ensemble, args: &ExportArgs) -> Result<()> {
    if args.fp16 && ensemble.members.len() > 1 {
        bail!(
            "--fp16 with an ensemble of {}: the log of its mean probability underflows in \
             float16 (a class below 6e-8 gets logit −inf); export it in fp32, or each member \
             with --fp16",
            ensemble.members.len()
        );
    }
    let opts = crate::export::Options {
        opset: args.opset.unwrap_or(crate::onnx::DEFAULT_OPSET),
        dynamic_batch: args.dynamic_batch,
    };
    let model = crate::export::model(ensemble, opts)?;
    let meta = ensemble.meta();
    let s = meta.image_size;
    // The graph, run operator by operator as ONNX defines them, must give the network's
    // probabilities before it is written.
    tch::manual_seed(0);
    let x = Tensor::f_randn([2, 3, s, s], (Kind::Float, Device::Cpu))?;
    let graph = model.graph.as_ref().context("a model without a graph")?;
    let values = crate::onnx::eval::run(graph, &x).context("checking the ONNX graph")?;
    let got = values
        .get("probabilities")
        .context("the graph has no probabilities")?;
    let compute = Compute::new(Device::Cpu, Precision::Fp32, false)?;
    let want = tch::no_grad(|| ensemble.probabilities(compute, &x, Kind::Float))?;
    let diff = got.f_sub(&want)?.f_abs()?.f_max()?.double_value(&[]);
    if diff.is_nan() || diff > TOLERANCE {
        bail!(
            "the ONNX graph's probabilities differ from the network's by {diff:.2e} (more than \
             {TOLERANCE:e}); nothing written"
        );
    }
    let mut model = model;
    let mut int8_note = String::new();
    if let Some(dir) = args.calib.as_ref().filter(|_| args.int8) {
        let weights = match args.full_range {
            true => crate::onnx::quantize::Weights::FullRange,
            false => crate::onnx::quantize::Weights::NoSaturation,
        };
        let graph = model.graph.as_ref().context("no graph")?;
        let (graph, note) = quantize(ensemble, graph, dir, weights)?;
        model.graph = Some(graph);
        model
            .metadata_props
            .push(crate::onnx::proto::StringStringEntryProto {
                key: Some("quantization".into()),
                value: Some(
                    serde_json::json!({
                        "scheme": "QDQ int8: uint8 activations (per tensor, asymmetric), int8 \
                                   weights (per output channel, symmetric), int32 biases",
                        "weights": weights.describe(),
                        "calibration": dir.display().to_string(),
                        "note": note,
                    })
                    .to_string(),
                ),
            });
        int8_note = format!("; int8: {note}");
    }
    if args.fp16 {
        let graph = crate::onnx::half::fp16(model.graph.as_ref().context("no graph")?)?;
        let values = crate::onnx::eval::run(&graph, &x).context("checking the fp16 graph")?;
        let got = values.get("probabilities").context("no probabilities")?;
        let d = got.f_sub(&want)?.f_abs()?.f_max()?.double_value(&[]);
        if d.is_nan() || d > FP16_TOLERANCE {
            bail!(
                "the fp16 graph's probabilities differ from the network's by {d:.2e} (more \
                 than {FP16_TOLERANCE:e}); nothing written"
            );
        }
        model.graph = Some(graph);
        int8_note = format!(
            "; fp16, each operator's output rounded to float16: probabilities within {d:.1e} of \
             the network's"
        );
    }
    let bytes = prost::Message::encode_to_vec(&model);
    let output = format!(
        "logits [N, classes] and probabilities [N, classes]: {}",
        match ensemble.members.len() {
            1 => "softmax(logits / T) at the temperature the checkpoint ships (1 without)".into(),
            k => format!("the mean of {k} members' softmax(logits / T); logits is its log"),
        }
    );
    let interface = interface(ensemble, "onnx", output);
    write_atomic(&cfg.out, &bytes)?;
    let mut text = serde_json::to_string_pretty(&interface)?;
    text.push('\n');
    write_atomic(&cfg.preprocessing, text.as_bytes())?;
    println!(
        "wrote {} (ONNX opset {}, {} {}, input [{}, 3, {s}, {s}], outputs logits and \
         probabilities, {} classes, {:.1} MB; the fp32 graph run op by op: probabilities within \
         {diff:.1e} of the network's{int8_note}) and {} (its preprocessing)",
        cfg.out.display(),
        opts.opset,
        meta.arch,
        match ensemble.members.len() {
            1 => "network".to_string(),
            k => format!("ensemble of {k}"),
        },
        if opts.dynamic_batch { "batch" } else { "1" },
        meta.classes.len(),
        bytes.len() as f64 / 1e6,
        cfg.preprocessing.display()
    );
    Ok(())
}

/// Largest difference of the fp16 graph's probabilities from the fp32 network's.
pub const FP16_TOLERANCE: f64 = 1e-2;

/// The least top-1 agreement with fp32, on the calibration images, an int8 graph is written
/// with.
const MIN_INT8_AGREEMENT: f64 = 0.9;

/// Most images int8 calibration reads.
const CALIBRATION_IMAGES: usize = 300;

/// The QDQ int8 graph of `graph`, calibrated on the images under `dir`, and a line on how its
/// top-1 agrees with the float graph's on them.
fn quantize(
    ensemble: &Ensemble,
    graph: &crate::onnx::proto::GraphProto,
    dir: &std::path::Path,
    weights: crate::onnx::quantize::Weights,
) -> Result<(crate::onnx::proto::GraphProto, String)> {
    let (mut files, _) = crate::data::folder::find_images(dir)
        .with_context(|| format!("--calib {}", dir.display()))?;
    files.sort();
    files.truncate(CALIBRATION_IMAGES);
    if files.is_empty() {
        bail!("--calib {}: no images there", dir.display());
    }
    let meta = ensemble.meta();
    let t = crate::data::transform::EvalTransform {
        image_size: meta.image_size as u32,
        normalization: meta.normalization,
    };
    let mut batches = vec![];
    for chunk in files.chunks(8) {
        let imgs = chunk
            .iter()
            .map(|f| crate::data::image::load_rgb(f))
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("--calib {}", dir.display()))?;
        batches.push(t.batch(&imgs)?);
    }
    let mut ranges = crate::onnx::quantize::Ranges::default();
    for b in &batches {
        ranges.observe(graph, b)?;
    }
    let q = crate::onnx::quantize::qdq(graph, &ranges, weights)?;
    let (mut same, mut n) = (0usize, 0usize);
    for b in &batches {
        let top = |g: &crate::onnx::proto::GraphProto| -> Result<Vec<i64>> {
            let v = crate::onnx::eval::run(g, b)?;
            let p = v.get("probabilities").context("no probabilities")?;
            Ok(Vec::<i64>::try_from(p.f_argmax(1, false)?)?)
        };
        let (a, c) = (top(graph)?, top(&q)?);
        same += a.iter().zip(&c).filter(|(x, y)| x == y).count();
        n += a.len();
    }
    let agreement = same as f64 / n as f64;
    if agreement < MIN_INT8_AGREEMENT {
        bail!(
            "--int8: the quantised graph's top-1 agrees with fp32's on only {same} of {n} \
             calibration images ({:.1} %, less than {:.0} %); nothing written (more, or more \
             varied, --calib images may help)",
            100.0 * agreement,
            100.0 * MIN_INT8_AGREEMENT
        );
    }
    let note = format!(
        "calibrated on {} images of {}; on them its top-1 agrees with fp32's on {same} of {n} \
         ({:.1} %)",
        files.len(),
        dir.display(),
        100.0 * agreement
    );
    Ok((q, note))
}

/// What the exported module computes: a member's logits, or an ensemble's log mean probability.
fn logits(ensemble: &Ensemble, x: &Tensor) -> Result<Tensor> {
    if let [(_, only)] = ensemble.members.as_slice() {
        return Ok(only.model.forward_t(x, false)?.logits);
    }
    let mut sum: Option<Tensor> = None;
    for (_, m) in &ensemble.members {
        let p = m
            .model
            .forward_t(x, false)?
            .logits
            .f_softmax(1, Kind::Float)?;
        sum = Some(match sum {
            None => p,
            Some(s) => s.f_add(&p)?,
        });
    }
    let sum = sum.context("an ensemble without members")?;
    Ok(sum.f_div_scalar(ensemble.members.len() as f64)?.f_log()?)
}

/// Records [`logits`] on `example` as a TorchScript module.
fn trace(ensemble: &Ensemble, example: &Tensor) -> Result<CModule> {
    let mut failure = None;
    let module = CModule::create_by_tracing(
        "Inception",
        "forward",
        &[example.shallow_clone()],
        &mut |inputs| match logits(ensemble, &inputs[0]) {
            Ok(t) => vec![t],
            Err(e) => {
                failure = Some(e);
                vec![inputs[0].shallow_clone()]
            }
        },
    );
    if let Some(e) = failure {
        return Err(e.context("tracing the network"));
    }
    module.map_err(|e| anyhow!("tracing the network: {e}"))
}
