//! GoogLeNet (Szegedy et al. 2014, arXiv:1409.4842) as torchvision's `googlenet` builds it
//! (torchvision/models/googlenet.py, torchvision 0.28): `BasicConv2d` units (conv without bias,
//! BatchNorm eps 1e-3, ReLU), ceil-mode 3×3/2 max-pools, 3×3 in branch 3, adaptive average pool,
//! dropout 0.2 and one linear layer `fc`.
//!
//! Options, as in torchvision: the two auxiliary classifiers after 4a and 4d (`aux1`, `aux2`;
//! run only in training, where each adds 0.3 × its loss), and `transform_input`, which maps
//! inputs normalised with ImageNet's mean/std to the (x − 0.5)/0.5 normalisation that
//! torchvision's ImageNet weights were trained with.

use anyhow::Result;
use tch::nn::Path;
use tch::{TchError, Tensor};

use super::inception::{Inception, Style, BLOCKS};
use super::layers::{ConvBnRelu, Linear, MaxPool, Mode};
use super::summary::Walker;
use super::{Network, Spec, Tap};
use crate::data::transform::Normalization;

/// The smallest input side GoogLeNet accepts: 15 leaves a 1×1 map before `maxpool4`
/// (checked against the shape walk and a real forward pass in tests/integration/model.rs).
pub const MIN_IMAGE_SIZE: i64 = 15;

const POOL3: MaxPool = MaxPool {
    kernel: 3,
    stride: 2,
    padding: 0,
    ceil: true,
};
const POOL4: MaxPool = MaxPool {
    kernel: 2,
    stride: 2,
    padding: 0,
    ceil: true,
};
const DROPOUT: f64 = 0.2;
const AUX_DROPOUT: f64 = 0.7;

/// GoogLeNet's entry in the model's table.
pub static SPEC: Spec = Spec {
    name: "googlenet",
    head_prefixes: &["fc.", "aux1.", "aux2."],
    class_layer: Some("fc"),
    default_tap_layer: "inception5b",
    min_image_size: MIN_IMAGE_SIZE,
    tap_layers: super::seed::Seed::tap_layers,
    googlenet_options: true,
    published: Some(super::Published {
        file: "googlenet-1378be20.pth",
        url: Some("https://download.pytorch.org/models/googlenet-1378be20.pth"),
        what: "torchvision's GoogLeNet IMAGENET1K_V1 (acc@1 69.778)",
        transform_input: true,
        normalization: Normalization::IMAGENET,
    }),
    build: |root, c| {
        Box::new(GoogLeNet::new(
            root,
            c.num_classes,
            c.aux_logits,
            c.transform_input,
        ))
    },
};

/// The state_dict prefixes of the auxiliary heads.
pub const AUX_HEADS: [&str; 2] = ["aux1.", "aux2."];

/// Whether the state_dict entry `name` belongs to an auxiliary head.
pub fn is_aux(name: &str) -> bool {
    AUX_HEADS.iter().any(|p| name.starts_with(p))
}

/// ImageNet mean and std that `transform_input` undoes (torchvision's `_transform_input`).
const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

/// torchvision's `InceptionAux`: 4×4 average pool, 1×1 conv to 128, fc 2048→1024, fc → classes.
#[derive(Debug)]
pub struct InceptionAux {
    conv: ConvBnRelu,
    fc1: Linear,
    fc2: Linear,
}

impl InceptionAux {
    fn new(p: &Path, in_channels: i64, num_classes: i64) -> InceptionAux {
        let style = Style::TorchVision;
        InceptionAux {
            conv: style.unit(&(p / "conv"), 0, None, in_channels, 128, 1, 1, 0),
            fc1: Linear::new(p / "fc1", 2048, 1024, style.init()),
            fc2: Linear::new(p / "fc2", 1024, num_classes, style.init()),
        }
    }

    fn forward_t(&self, x: &Tensor, mode: Mode) -> Result<Tensor, TchError> {
        // x: [N, 512 or 528, 14, 14] at 224
        let x = x.f_adaptive_avg_pool2d([4, 4])?; // [N, C, 4, 4]
        let x = self
            .conv
            .forward_t(&x, mode.batch_stats)?
            .f_flatten(1, -1)?; // [N, 2048]
        let x = self
            .fc1
            .forward(&x)?
            .f_relu()?
            .f_dropout(AUX_DROPOUT, mode.train)?; // [N, 1024]
        self.fc2.forward(&x) // [N, num_classes]
    }

    fn describe(&self, w: &mut Walker, name: &str) -> Result<()> {
        w.adaptive_avg_pool(&format!("{name}.avgpool"), 4);
        w.unit(&self.conv)?;
        w.flatten();
        w.linear(&self.fc1, true)?;
        w.linear(&self.fc2, false)
    }
}

/// torchvision's GoogLeNet.
#[derive(Debug)]
pub struct GoogLeNet {
    conv1: ConvBnRelu,
    conv2: ConvBnRelu,
    conv3: ConvBnRelu,
    blocks: Vec<Inception>,
    aux: Option<[InceptionAux; 2]>,
    fc: Linear,
    transform_input: bool,
}

/// What follows block `i`: a max-pool, an auxiliary head's tap, or nothing.
enum After {
    Pool(&'static str, MaxPool),
    Aux(usize),
    Nothing,
}

fn after(i: usize) -> After {
    match BLOCKS[i].0 {
        "3b" => After::Pool("maxpool3", POOL3),
        "4e" => After::Pool("maxpool4", POOL4),
        "4a" => After::Aux(0),
        "4d" => After::Aux(1),
        _ => After::Nothing,
    }
}

impl GoogLeNet {
    pub fn new(root: &Path, num_classes: i64, aux_logits: bool, transform_input: bool) -> Self {
        let style = Style::TorchVision;
        let blocks = BLOCKS
            .iter()
            .map(|(name, config)| {
                Inception::new(&(root / format!("inception{name}")), *config, style)
            })
            .collect();
        let aux = aux_logits.then(|| {
            [
                InceptionAux::new(&(root / "aux1"), 512, num_classes),
                InceptionAux::new(&(root / "aux2"), 528, num_classes),
            ]
        });
        GoogLeNet {
            conv1: style.unit(&(root / "conv1"), 0, None, 3, 64, 7, 2, 3),
            conv2: style.unit(&(root / "conv2"), 0, None, 64, 64, 1, 1, 0),
            conv3: style.unit(&(root / "conv3"), 0, None, 64, 192, 3, 1, 1),
            blocks,
            aux,
            fc: Linear::new(root / "fc", 1024, num_classes, style.init()),
            transform_input,
        }
    }

    /// Logits, and in training with auxiliary heads also their logits (aux1, aux2), handing
    /// the output of the layer `tap` names to the tap and going on with what it returns.
    pub fn forward_tapped(
        &self,
        x: &Tensor,
        mode: Mode,
        tap: &mut Tap,
    ) -> Result<(Tensor, Vec<Tensor>), TchError> {
        // x: [N, 3, S, S]; sizes below are for S = 224
        let x = if self.transform_input {
            transform_input(x)?
        } else {
            x.shallow_clone()
        };
        let x = tap.at("conv1", self.conv1.forward_t(&x, mode.batch_stats)?)?; // [N, 64, 112, 112]
        let x = POOL3.forward(&x)?; // [N, 64, 56, 56]
        let x = tap.at("conv2", self.conv2.forward_t(&x, mode.batch_stats)?)?; // [N, 64, 56, 56]
        let x = tap.at("conv3", self.conv3.forward_t(&x, mode.batch_stats)?)?; // [N, 192, 56, 56]
        let mut x = POOL3.forward(&x)?; // [N, 192, 28, 28]
        let mut aux_logits = vec![];
        for (i, block) in self.blocks.iter().enumerate() {
            // 3a, 3b: 28×28; 4a–4e: 14×14; 5a, 5b: 7×7
            x = tap.at(
                &format!("inception{}", BLOCKS[i].0),
                block.forward_t(&x, mode.batch_stats)?,
            )?;
            match (after(i), &self.aux) {
                (After::Pool(_, pool), _) => x = pool.forward(&x)?,
                (After::Aux(k), Some(heads)) if mode.train => {
                    aux_logits.push(heads[k].forward_t(&x, mode)?);
                }
                _ => {}
            }
        }
        let x = x.f_adaptive_avg_pool2d([1, 1])?.f_flatten(1, -1)?; // [N, 1024]
        let x = x.f_dropout(mode.dropout(DROPOUT), mode.train)?;
        Ok((self.fc.forward(&x)?, aux_logits)) // [N, num_classes]
    }

    /// Every conv + BatchNorm unit, auxiliary heads included.
    fn units_mut(&mut self) -> Vec<&mut ConvBnRelu> {
        let mut units = vec![&mut self.conv1, &mut self.conv2, &mut self.conv3];
        units.extend(self.blocks.iter_mut().flat_map(Inception::units_mut));
        if let Some(aux) = &mut self.aux {
            units.extend(aux.iter_mut().map(|a| &mut a.conv));
        }
        units
    }
}

impl Network for GoogLeNet {
    fn forward(
        &self,
        x: &Tensor,
        mode: Mode,
        tap: &mut Tap,
    ) -> Result<(Tensor, Vec<Tensor>), TchError> {
        self.forward_tapped(x, mode, tap)
    }

    fn fold_batchnorm(&mut self) -> Result<(), TchError> {
        for u in self.units_mut() {
            u.fold()?;
        }
        Ok(())
    }

    fn describe(&self, w: &mut Walker) -> Result<()> {
        w.group("stem");
        w.unit(&self.conv1)?;
        w.pool(&POOL3, "maxpool1")?;
        w.unit(&self.conv2)?;
        w.unit(&self.conv3)?;
        w.pool(&POOL3, "maxpool2")?;
        for (i, block) in self.blocks.iter().enumerate() {
            let group = format!("inception{}", BLOCKS[i].0);
            w.group(&group);
            block.describe(w, &group)?;
            match (after(i), &self.aux) {
                (After::Pool(name, pool), _) => {
                    w.group(name);
                    w.pool(&pool, name)?;
                }
                (After::Aux(k), Some(heads)) => {
                    let name = format!("aux{}", k + 1);
                    w.side(&name, |w| heads[k].describe(w, &name))?;
                }
                _ => {}
            }
        }
        w.group("head");
        w.adaptive_avg_pool("avgpool", 1);
        w.flatten();
        w.linear(&self.fc, false)
    }

    /// The pooled 1024 features of the eval-mode network in an ONNX graph, `transform_input`'s
    /// affine kept as its own Mul and Add (folding it into conv1 would be wrong at the padded
    /// border, where the affine's shift is not applied to the zeros).
    fn onnx_features(
        &self,
        g: &mut crate::onnx::Graph,
        x: &crate::onnx::Value,
    ) -> Result<crate::onnx::Value> {
        let x = if self.transform_input {
            let scale: Vec<f32> = IMAGENET_STD.iter().map(|s| (s / 0.5) as f32).collect();
            let shift: Vec<f32> = IMAGENET_MEAN
                .iter()
                .map(|m| ((m - 0.5) / 0.5) as f32)
                .collect();
            let scale = g.init_f32("transform_input.scale", &[1, 3, 1, 1], &scale);
            let shift = g.init_f32("transform_input.shift", &[1, 3, 1, 1], &shift);
            g.affine(x, &scale, &shift)
        } else {
            x.clone()
        };
        let x = self.conv1.onnx(g, &x)?;
        let x = POOL3.onnx(g, &x)?;
        let x = self.conv2.onnx(g, &x)?;
        let x = self.conv3.onnx(g, &x)?;
        let mut x = POOL3.onnx(g, &x)?;
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.onnx(g, &x)?;
            if let After::Pool(_, pool) = after(i) {
                x = pool.onnx(g, &x)?;
            }
        }
        Ok(g.pool_flatten(&x))
    }

    /// The class layer `fc` on features.
    fn onnx_head(
        &self,
        g: &mut crate::onnx::Graph,
        f: &crate::onnx::Value,
    ) -> Result<crate::onnx::Value> {
        self.fc.onnx(g, f)
    }
}

/// torchvision's `_transform_input`: x·(std/0.5) + (mean − 0.5)/0.5 per channel.
fn transform_input(x: &Tensor) -> Result<Tensor, TchError> {
    let opts = (x.f_kind()?, x.device());
    let scale = Tensor::f_from_slice(&IMAGENET_STD.map(|s| s / 0.5))?.f_to_kind(opts.0)?;
    let shift = Tensor::f_from_slice(&IMAGENET_MEAN.map(|m| (m - 0.5) / 0.5))?.f_to_kind(opts.0)?;
    let scale = scale.f_to_device(opts.1)?.f_view([1, 3, 1, 1])?;
    let shift = shift.f_to_device(opts.1)?.f_view([1, 3, 1, 1])?;
    x.f_mul(&scale)?.f_add(&shift)
}
