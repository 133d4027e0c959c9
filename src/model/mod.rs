//! The networks: the seed's InceptionV1 ([`seed`]) and torchvision's GoogLeNet ([`googlenet`]),
//! built from one inception block ([`inception`]) and a few layers ([`layers`]), EfficientNet-Lite0
//! ([`efficientnet`], the backbone whose ImageNet weights a package registry ships), plus the
//! layer-by-layer cost account ([`summary`]).
//!
//! A [`Model`] owns its var store; var-store paths are the PyTorch state_dict keys of the network
//! it mirrors, so [`Model::load_state_dict`] takes a PyTorch state_dict as it is.

pub mod efficientnet;
pub mod googlenet;
pub mod inception;
pub mod layers;
pub mod published;
pub mod seed;
pub mod summary;

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use layers::Mode;
use summary::{Summary, Walker};

pub use published::{published, Published};

/// Which network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// The seed tutorial's InceptionV1 (docs/MODEL.md), logits and adaptive pool.
    Seed,
    /// torchvision's GoogLeNet (BatchNorm, ceil-mode pools, optional auxiliary heads).
    Googlenet,
    /// EfficientNet-Lite0 (ReLU6 MBConv blocks, no squeeze-excitation), lukemelas' layout.
    #[serde(rename = "efficientnet_lite0")]
    #[value(name = "efficientnet_lite0")]
    EfficientnetLite0,
}

impl Arch {
    /// What the model knows of the network: its table entry, kept in the network's own file.
    pub fn spec(self) -> &'static Spec {
        match self {
            Arch::Seed => &seed::SPEC,
            Arch::Googlenet => &googlenet::SPEC,
            Arch::EfficientnetLite0 => &efficientnet::SPEC,
        }
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The state_dict prefixes of the class layer and of the heads that train from scratch
    /// on a pretrained backbone (GoogLeNet's auxiliary heads): what a linear probe trains.
    pub fn head_prefixes(self) -> &'static [&'static str] {
        self.spec().head_prefixes
    }

    /// The var-store path of the one linear layer that turns the pooled features into logits
    /// (`None`: the seed network's head has two).
    pub fn class_layer(self) -> Option<&'static str> {
        self.spec().class_layer
    }

    /// Whether the state_dict entry `name` belongs to a head ([`Arch::head_prefixes`]).
    pub fn is_head(self, name: &str) -> bool {
        self.head_prefixes().iter().any(|p| name.starts_with(p))
    }

    /// The layer Grad-CAM looks at by default: the last one with a spatial map.
    pub fn default_tap_layer(self) -> &'static str {
        self.spec().default_tap_layer
    }

    /// The smallest input side (pixels) the network accepts.
    pub fn min_image_size(self) -> i64 {
        self.spec().min_image_size
    }

    /// Whether torchvision's GoogLeNet options ([`NetConfig::aux_logits`],
    /// [`NetConfig::transform_input`]) exist for this network.
    pub fn has_googlenet_options(self) -> bool {
        self.spec().googlenet_options
    }

    /// The names of the networks that have the GoogLeNet options, for messages ("googlenet").
    pub fn with_googlenet_options() -> String {
        use clap::ValueEnum;
        let names: Vec<&str> = Arch::value_variants()
            .iter()
            .filter(|a| a.has_googlenet_options())
            .map(|a| a.name())
            .collect();
        names.join(" or ")
    }
}

/// One architecture's entry in the model's table: what the rest of the tool may ask of it
/// without building it, and how to build it. Each network's file defines its `SPEC`; a new
/// architecture is that file, its `SPEC`, and a variant of [`Arch`] that [`Arch::spec`] maps
/// to it.
#[derive(Debug)]
pub struct Spec {
    /// The name in configs, flags and checkpoints.
    pub name: &'static str,
    /// See [`Arch::head_prefixes`].
    pub head_prefixes: &'static [&'static str],
    /// See [`Arch::class_layer`].
    pub class_layer: Option<&'static str>,
    /// See [`Arch::default_tap_layer`].
    pub default_tap_layer: &'static str,
    /// See [`Arch::min_image_size`].
    pub min_image_size: i64,
    /// The layers a [`Tap`] can name, in forward order.
    pub tap_layers: fn() -> Vec<String>,
    /// Whether [`NetConfig::aux_logits`] and [`NetConfig::transform_input`] exist for it
    /// (torchvision's GoogLeNet options).
    pub googlenet_options: bool,
    /// Its published ImageNet weights (`--pretrained`), if any.
    pub published: Option<Published>,
    /// A freshly initialised network whose variables live under `root`.
    pub build: fn(root: &tch::nn::Path, config: &NetConfig) -> Box<dyn Network>,
}

/// What every network does for the [`Model`] that holds it. Input checks, flip averaging
/// and the var store are the model's; a network is its layers.
pub trait Network: fmt::Debug + Send {
    /// Logits `[N, classes]` of `x` `[N, 3, H, W]`, and in training with auxiliary heads their
    /// logits too, handing the output of the layer `tap` names to it and going on with what
    /// it returns.
    fn forward(
        &self,
        x: &Tensor,
        mode: Mode,
        tap: &mut Tap,
    ) -> Result<(Tensor, Vec<Tensor>), tch::TchError>;

    /// Folds every BatchNorm into its convolution for inference ([`Model::fold_batchnorm`]).
    fn fold_batchnorm(&mut self) -> Result<(), tch::TchError>;

    /// Walks every layer in forward order into `w`; fails where an input is too small.
    fn describe(&self, w: &mut Walker) -> Result<()>;

    /// The eval-mode network up to the pooled features `[N, D]`, into an ONNX graph.
    fn onnx_features(
        &self,
        g: &mut crate::onnx::Graph,
        x: &crate::onnx::Value,
    ) -> Result<crate::onnx::Value>;

    /// The head on the pooled features: logits `[N, classes]`, into an ONNX graph.
    fn onnx_head(
        &self,
        g: &mut crate::onnx::Graph,
        f: &crate::onnx::Value,
    ) -> Result<crate::onnx::Value>;
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Flips of an image, viewed with the image itself: those a network averages its pooled
/// features over before the class layer (in evaluation), and those test-time augmentation
/// averages an ensemble's probabilities over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flips {
    pub horizontal: bool,
    pub vertical: bool,
}

impl Flips {
    /// No flips: the image only.
    pub const NONE: Flips = Flips {
        horizontal: false,
        vertical: false,
    };

    /// The dimensions each view flips (`[]` is the image itself).
    pub fn views(self) -> Vec<Vec<i64>> {
        let mut v = vec![vec![]];
        if self.horizontal {
            v.push(vec![3]);
        }
        if self.vertical {
            v.push(vec![2]);
        }
        if self.horizontal && self.vertical {
            v.push(vec![2, 3]);
        }
        v
    }

    pub fn any(self) -> bool {
        self.horizontal || self.vertical
    }

    /// How the views are named in reports.
    pub fn describe(self) -> String {
        match (self.horizontal, self.vertical) {
            (false, false) => "none".into(),
            (true, false) => "image + horizontal flip".into(),
            (false, true) => "image + vertical flip".into(),
            (true, true) => "image + horizontal, vertical and both flips".into(),
        }
    }
}

/// Everything that decides the network's structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    pub arch: Arch,
    pub num_classes: i64,
    /// GoogLeNet's auxiliary heads after 4a and 4d (training only).
    pub aux_logits: bool,
    /// GoogLeNet's torchvision `transform_input` re-normalisation.
    pub transform_input: bool,
    /// In evaluation, the class layer reads the pooled features averaged over these flips of
    /// the input and the input itself (googlenet and efficientnet_lite0).
    pub flips: Flips,
}

impl NetConfig {
    pub fn new(arch: Arch, num_classes: i64) -> NetConfig {
        NetConfig {
            arch,
            num_classes,
            aux_logits: false,
            transform_input: false,
            flips: Flips::default(),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.num_classes < 2 {
            bail!(
                "a classifier needs at least 2 classes, got {}",
                self.num_classes
            );
        }
        if self.flips.any() && self.arch.class_layer().is_none() {
            bail!(
                "arch {}: averaging features over flips needs a single class layer",
                self.arch
            );
        }
        if !self.arch.has_googlenet_options() && (self.aux_logits || self.transform_input) {
            bail!(
                "auxiliary heads and transform_input exist only for --arch {}",
                Arch::with_googlenet_options()
            );
        }
        Ok(())
    }
}

/// A look into a forward pass: the output of the layer named `layer` (`conv1`, `conv2`, `conv3`,
/// `inception3a` … `inception5b`) goes through `f`, and the pass goes on with what `f` returns
/// (Grad-CAM keeps it and detaches it to take gradients with respect to it).
pub struct Tap<'a> {
    layer: Option<&'a str>,
    f: Option<&'a mut dyn FnMut(Tensor) -> Result<Tensor, tch::TchError>>,
    /// Whether the layer was met.
    pub hit: bool,
}

impl<'a> Tap<'a> {
    /// No tap.
    pub fn none() -> Tap<'static> {
        Tap {
            layer: None,
            f: None,
            hit: false,
        }
    }

    pub fn new(
        layer: &'a str,
        f: &'a mut dyn FnMut(Tensor) -> Result<Tensor, tch::TchError>,
    ) -> Tap<'a> {
        Tap {
            layer: Some(layer),
            f: Some(f),
            hit: false,
        }
    }

    /// `x`, or what the tap makes of it when `name` is its layer.
    pub fn at(&mut self, name: &str, x: Tensor) -> Result<Tensor, tch::TchError> {
        match (&mut self.f, self.layer) {
            (Some(f), Some(layer)) if layer == name => {
                self.hit = true;
                f(x)
            }
            _ => Ok(x),
        }
    }
}

/// The layers a [`Tap`] can name in `arch`, in forward order.
pub fn tap_layers(arch: Arch) -> Vec<String> {
    (arch.spec().tap_layers)()
}

/// What a forward pass returns: logits `[N, classes]`, and in training with auxiliary heads
/// their logits too.
#[derive(Debug)]
pub struct Output {
    pub logits: Tensor,
    pub aux_logits: Vec<Tensor>,
}

/// A network and the var store that holds its weights.
#[derive(Debug)]
pub struct Model {
    pub vs: VarStore,
    pub config: NetConfig,
    /// In training, BatchNorm normalises with its running statistics, not the batch's (they
    /// stay as they are); γ and β still learn. A training setting, not saved with the weights.
    pub freeze_bn: bool,
    /// In training, the final dropout's probability (`None`: the architecture's).
    pub dropout: Option<f64>,
    /// In training, the backbone is frozen (a linear-probe phase): it runs as in eval but for
    /// BatchNorm, which [`Model::freeze_bn`] decides. A training setting, not saved.
    pub frozen_backbone: bool,
    net: Box<dyn Network>,
}

impl Model {
    /// Builds a freshly initialised network on `device`.
    pub fn new(config: NetConfig, device: Device) -> Result<Model> {
        config.validate()?;
        let vs = VarStore::new(device);
        let root = vs.root();
        let net = (config.arch.spec().build)(&root, &config);
        Ok(Model {
            vs,
            config,
            freeze_bn: false,
            dropout: None,
            frozen_backbone: false,
            net,
        })
    }

    /// Runs the network on `x` (`[N, 3, H, W]`, normalised).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Output> {
        let size = x.size();
        match size.as_slice() {
            [_, 3, h, w] => {
                check_image_size(self.config.arch, *h.min(w))?;
            }
            _ => bail!("input: expected shape [N, 3, H, W], got {size:?}"),
        }
        if !train && self.config.flips.any() {
            return Ok(Output {
                logits: self.flip_averaged_logits(x)?,
                aux_logits: vec![],
            });
        }
        let mode = Mode {
            train,
            batch_stats: train && !self.freeze_bn,
            dropout: self.dropout,
            backbone_frozen: self.frozen_backbone,
        };
        let (logits, aux_logits) = self.net.forward(x, mode, &mut Tap::none())?;
        Ok(Output { logits, aux_logits })
    }

    /// Eval-mode logits, with `tap` looking at one layer on the way ([`Tap`]).
    pub fn forward_tapped(&self, x: &Tensor, tap: &mut Tap) -> Result<Tensor> {
        let size = x.size();
        match size.as_slice() {
            [_, 3, h, w] => check_image_size(self.config.arch, *h.min(w))?,
            _ => bail!("input: expected shape [N, 3, H, W], got {size:?}"),
        }
        Ok(self.net.forward(x, Mode::plain(false), tap)?.0)
    }

    /// Eval-mode pooled features `[N, D]`: what the class layer ([`Arch::class_layer`]) reads,
    /// so that `features·Wᵀ + b` are the logits; averaged over [`NetConfig::flips`]' views when
    /// it has any. Not for the seed network (two-layer head).
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let views = self.config.flips.views();
        if views.len() == 1 {
            return self.features_of_view(x);
        }
        let n = x.size()[0];
        let flipped = views
            .iter()
            .map(|dims| match dims.is_empty() {
                true => Ok(x.shallow_clone()),
                false => x.f_flip(dims.as_slice()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let all = Tensor::f_cat(&flipped, 0)?; // [V·N, 3, H, W]
        let f = self.features_of_view(&all)?; // [V·N, D]
        Ok(f.f_view([views.len() as i64, n, -1])?.f_mean_dim(
            &[0i64][..],
            false,
            tch::Kind::Float,
        )?) // [N, D]
    }

    /// The class layer on the flip-averaged features: the eval-mode logits `[N, classes]`.
    fn flip_averaged_logits(&self, x: &Tensor) -> Result<Tensor> {
        let layer = self
            .config
            .arch
            .class_layer()
            .context("flips need a single class layer")?;
        let vars = self.vs.variables();
        let get = |name: &str| {
            vars.get(&format!("{layer}.{name}"))
                .with_context(|| format!("the model has no {layer}.{name}"))
        };
        let (w, b) = (get("weight")?, get("bias")?);
        let f = self.features(x)?; // [N, D]
        Ok(f.f_matmul(&w.f_tr()?)?.f_add(b)?) // [N, classes]
    }

    /// [`Model::features`] of the input as it is.
    fn features_of_view(&self, x: &Tensor) -> Result<Tensor> {
        if self.config.arch.class_layer().is_none() {
            bail!(
                "arch {}: no single class layer to take features for",
                self.config.arch
            );
        }
        let layer = self.config.arch.default_tap_layer();
        let mut kept: Option<Tensor> = None;
        {
            let mut keep = |t: Tensor| -> Result<Tensor, tch::TchError> {
                kept = Some(t.shallow_clone());
                Ok(t)
            };
            let mut tap = Tap::new(layer, &mut keep);
            let _logits = self.forward_tapped(x, &mut tap)?;
        }
        let map = kept.with_context(|| format!("layer {layer} was not met"))?; // [N, D, h, w]
        Ok(map.f_mean_dim(&[2i64, 3][..], false, tch::Kind::Float)?) // [N, D]
    }

    /// The layer-by-layer account for square inputs of side `image_size`.
    pub fn summary(&self, image_size: i64) -> Result<Summary> {
        check_image_size(self.config.arch, image_size)?;
        let mut w = Walker::new([3, image_size, image_size]);
        self.describe(&mut w)?;
        let arch = self.config.arch.name();
        Ok(w.finish(arch, self.config.num_classes, image_size, &["aux1", "aux2"]))
    }

    /// Gives every convolution weight channels-last strides (why: the precision module's
    /// `Compute`); the values, names and shapes stay as they are.
    pub fn to_channels_last(&mut self) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for (_, mut t) in self.vs.variables() {
            if t.dim() == 4 {
                let cl = layers::channels_last(&t)?;
                t.f_set_data(&cl)?;
            }
        }
        Ok(())
    }

    /// Folds every BatchNorm into its convolution for inference (eval and predict): the same
    /// logits in eval mode without the BatchNorm passes. Training forward passes are not
    /// affected; the var store keeps the unfolded weights.
    pub fn fold_batchnorm(&mut self) -> Result<()> {
        Ok(self.net.fold_batchnorm()?)
    }

    /// Walks every layer in forward order; fails where an input is too small for a window.
    pub fn describe(&self, w: &mut Walker) -> Result<()> {
        self.net.describe(w)
    }

    /// Number of trainable parameters in the var store.
    pub fn num_params(&self) -> i64 {
        self.vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum()
    }

    /// The state_dict: every variable (running statistics included) by its PyTorch name.
    pub fn state_dict(&self) -> BTreeMap<String, Tensor> {
        self.vs.variables().into_iter().collect()
    }

    /// Copies a PyTorch state_dict into the network. Every key must be known and of the right
    /// shape, and every variable present, except `num_batches_tracked`, which PyTorch itself
    /// treats as optional. All problems are listed in one error.
    pub fn load_state_dict(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        let vars = self.state_dict();
        let optional = |k: &str| k.ends_with(".num_batches_tracked");
        if let Some(problems) = misfit(&vars, tensors, optional, |_| false) {
            bail!(
                "the weights do not fit the {} network with {} classes: {problems}",
                self.config.arch,
                self.config.num_classes,
            );
        }
        tch::no_grad(|| -> Result<()> {
            for (k, t) in tensors {
                let var = &vars[k];
                let src = t.f_to_kind(var.kind())?.f_to_device(var.device())?;
                var.shallow_clone()
                    .f_copy_(&src)
                    .with_context(|| format!("copying {k}"))?;
            }
            Ok(())
        })
    }
}

/// What [`Model::init_from`] copied and what it left as initialised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    pub copied: Vec<String>,
    /// Variables whose shape differs (the class layers when the class count changes) or that
    /// the source lacks.
    pub kept: Vec<String>,
    /// Tensors of the source not used (heads this network lacks, or of another shape).
    pub left_out: Vec<String>,
}

impl Model {
    /// Starts from another network's weights (a checkpoint of the same arch): every variable
    /// with the same name and shape is copied; the rest keep their initialisation.
    pub fn init_from(&mut self, source: &Model) -> Result<InitReport> {
        self.init_from_state_dict(&source.state_dict())
    }

    /// Starts from a state_dict (say torchvision's ImageNet GoogLeNet): the backbone must
    /// match name for name and shape for shape; a head ([`Arch::head_prefixes`]) of another
    /// shape (another class count) or absent starts fresh, and heads this network lacks (the
    /// auxiliary ones when off) are left out. Every other difference is listed in one error.
    pub fn init_from_state_dict(&mut self, src: &BTreeMap<String, Tensor>) -> Result<InitReport> {
        let arch = self.config.arch;
        let vars = self.state_dict();
        let optional = |k: &str| arch.is_head(k) || k.ends_with(".num_batches_tracked");
        if let Some(problems) = misfit(&vars, src, optional, |k| arch.is_head(k)) {
            bail!("the weights do not fit the {arch} backbone: {problems}");
        }
        let (mut copied, mut kept) = (vec![], vec![]);
        tch::no_grad(|| -> Result<()> {
            for (k, var) in vars {
                match src.get(&k) {
                    Some(t) if t.size() == var.size() => {
                        let t = t.f_to_kind(var.kind())?.f_to_device(var.device())?;
                        var.shallow_clone()
                            .f_copy_(&t)
                            .with_context(|| format!("copying {k}"))?;
                        copied.push(k);
                    }
                    _ => kept.push(k),
                }
            }
            Ok(())
        })?;
        let left_out = src
            .keys()
            .filter(|k| !copied.contains(k))
            .cloned()
            .collect();
        Ok(InitReport {
            copied,
            kept,
            left_out,
        })
    }
}

/// How the state_dict `src` fails to fit the network's variables `vars`, in one line (`None`:
/// it fits): the variables it lacks (but those `optional` allows), the tensors the network
/// lacks and those of another shape (but those `exempt` allows), each list bounded.
fn misfit(
    vars: &BTreeMap<String, Tensor>,
    src: &BTreeMap<String, Tensor>,
    optional: impl Fn(&str) -> bool,
    exempt: impl Fn(&str) -> bool,
) -> Option<String> {
    let quote = |k: &String| crate::text::quote(k);
    let missing: Vec<String> = vars
        .keys()
        .filter(|k| !src.contains_key(*k) && !optional(k))
        .map(quote)
        .collect();
    let unexpected: Vec<String> = src
        .keys()
        .filter(|k| !vars.contains_key(*k) && !exempt(k))
        .map(quote)
        .collect();
    let misshaped: Vec<String> = src
        .iter()
        .filter_map(|(k, t)| {
            let v = vars.get(k)?;
            (v.size() != t.size() && !exempt(k)).then(|| {
                format!(
                    "{} (expected {:?}, got {:?})",
                    crate::text::quote(k),
                    v.size(),
                    t.size()
                )
            })
        })
        .collect();
    let problems: Vec<String> = [
        ("missing", missing),
        ("unexpected", unexpected),
        ("mis-shaped", misshaped),
    ]
    .into_iter()
    .filter(|(_, list)| !list.is_empty())
    .map(|(what, list)| format!("{} {what}: {}", list.len(), crate::text::first(&list)))
    .collect();
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// Errors when `size` is below what `arch` accepts.
pub fn check_image_size(arch: Arch, size: i64) -> Result<()> {
    let min = arch.min_image_size();
    if size < min {
        bail!("image size {size} is too small for {arch}: the smallest it accepts is {min}");
    }
    Ok(())
}

impl Model {
    /// The eval-mode network written into an ONNX graph: `x` `[N, 3, H, W]` → logits
    /// `[N, classes]`; with flip averaging, the class layer reads the mean of the features of
    /// the image and its flips, as [`Model::features`] computes them.
    pub fn onnx(
        &self,
        g: &mut crate::onnx::Graph,
        x: &crate::onnx::Value,
    ) -> Result<crate::onnx::Value> {
        check_image_size(self.config.arch, x.shape[1].min(x.shape[2]))?;
        let mut views = vec![];
        for dims in self.config.flips.views() {
            let v = match dims.is_empty() {
                true => x.clone(),
                false => g.flip(x, &dims),
            };
            views.push(self.net.onnx_features(g, &v)?); // [N, D]
        }
        let f = g.mean(&views)?;
        self.net.onnx_head(g, &f) // [N, classes]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    /// The table's names are the ones configs, flags and checkpoints spell (the enum's serde
    /// and clap names), and each entry builds the network it names.
    #[test]
    fn each_table_entry_is_spelled_as_its_arch_and_builds_that_network() {
        for arch in Arch::value_variants() {
            let spec = arch.spec();
            let json = serde_json::to_string(arch).unwrap();
            assert_eq!(json, format!("\"{}\"", spec.name));
            let flag = arch.to_possible_value().unwrap();
            assert_eq!(flag.get_name(), spec.name);
            let model = Model::new(NetConfig::new(*arch, 3), Device::Cpu).unwrap();
            let class = spec.class_layer.map_or("classifier.2", |l| l);
            let w = &model.state_dict()[&format!("{class}.weight")];
            assert_eq!(w.size()[0], 3, "{arch}: {class}");
            assert!(spec
                .head_prefixes
                .iter()
                .any(|p| class.starts_with(p.trim_end_matches('.'))));
            assert!((spec.tap_layers)().contains(&spec.default_tap_layer.to_string()));
        }
    }
}
