//! The seed's InceptionV1, exactly as docs/MODEL.md describes it (a Chinese tutorial's
//! PyTorch code, after Szegedy et al. 2014), with the two fixes that file asks for: the network
//! returns logits (no softmax inside), and an adaptive average pool replaces the fixed 7×7 one
//! (the same numbers at 224, and other input sizes work).
//!
//! Kept as the seed has them: a stem without BatchNorm, 2×2 max-pools, the 1×1 `conv2` with
//! padding 1 (it grows the map by 2), 3×3 in branch 3, dropout 0.4 and a two-layer head.
//! State_dict names are the seed module's: `conv1.weight`, `inception3a.branch2.3.weight`,
//! `inception5b.0.branch1.1.running_mean`, `classifier.2.bias`.

use anyhow::Result;
use tch::nn::Path;
use tch::{TchError, Tensor};

use super::inception::{Inception, Style, BLOCKS};
use super::layers::{Conv2d, Linear, MaxPool, Mode};
use super::summary::Walker;
use super::{Network, Spec, Tap};

/// The smallest input side the seed network accepts: the four 2×2 pools need a 2×2 map before
/// the last one (checked against the shape walk and a real forward pass in tests/integration/model.rs).
pub const MIN_IMAGE_SIZE: i64 = 23;

const POOL: MaxPool = MaxPool {
    kernel: 2,
    stride: 2,
    padding: 0,
    ceil: false,
};
const DROPOUT: f64 = 0.4;

/// The seed network's entry in the model's table.
pub static SPEC: Spec = Spec {
    name: "seed",
    head_prefixes: &["classifier."],
    class_layer: None,
    default_tap_layer: "inception5b",
    min_image_size: MIN_IMAGE_SIZE,
    tap_layers: Seed::tap_layers,
    googlenet_options: false,
    published: None,
    build: |root, config| Box::new(Seed::new(root, config.num_classes)),
};

/// The seed network.
#[derive(Debug)]
pub struct Seed {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    blocks: Vec<Inception>,
    fc1: Linear,
    fc2: Linear,
}

impl Seed {
    pub fn new(root: &Path, num_classes: i64) -> Seed {
        let style = Style::Seed;
        let init = style.init();
        let blocks = BLOCKS
            .iter()
            .map(|(name, config)| {
                // The seed wraps 5b in a Sequential with the average pool and dropout.
                let p = if *name == "5b" {
                    root / "inception5b" / 0
                } else {
                    root / format!("inception{name}")
                };
                Inception::new(&p, *config, style)
            })
            .collect();
        let head = root / "classifier";
        Seed {
            conv1: Conv2d::new(root / "conv1", 3, 64, 7, 2, 3, true, init),
            conv2: Conv2d::new(root / "conv2", 64, 64, 1, 1, 1, true, init),
            conv3: Conv2d::new(root / "conv3", 64, 192, 3, 1, 1, true, init),
            blocks,
            fc1: Linear::new(&head / 0, 1024, 1024, init),
            fc2: Linear::new(&head / 2, 1024, num_classes, init),
        }
    }

    /// Whether a max-pool follows block `i` (after 3b and 4e).
    fn pool_after(i: usize) -> bool {
        matches!(BLOCKS[i].0, "3b" | "4e")
    }

    /// The layers a tap can name (the stem's convolutions and the blocks), in forward order.
    pub fn tap_layers() -> Vec<String> {
        let mut names: Vec<String> = ["conv1", "conv2", "conv3"].map(String::from).to_vec();
        names.extend(BLOCKS.iter().map(|(b, _)| format!("inception{b}")));
        names
    }

    /// Logits, handing the output of the layer `tap` names to the tap and going on with what
    /// it returns.
    pub fn forward_tapped(
        &self,
        x: &Tensor,
        mode: Mode,
        tap: &mut Tap,
    ) -> Result<Tensor, TchError> {
        // x: [N, 3, S, S]; sizes below are for S = 224. ReLU in place: a convolution's backward
        // needs its input, not its output.
        let x = tap.at("conv1", self.conv1.forward(x)?.f_relu_()?)?; // [N, 64, 112, 112]
        let x = POOL.forward(&x)?; // [N, 64, 56, 56]
        let x = tap.at("conv2", self.conv2.forward(&x)?.f_relu_()?)?; // [N, 64, 58, 58]
        let x = tap.at("conv3", self.conv3.forward(&x)?.f_relu_()?)?; // [N, 192, 58, 58]
        let mut x = POOL.forward(&x)?; // [N, 192, 29, 29]
        for (i, block) in self.blocks.iter().enumerate() {
            // 3a, 3b: 29×29; 4a–4e: 14×14; 5a, 5b: 7×7
            x = tap.at(
                &format!("inception{}", BLOCKS[i].0),
                block.forward_t(&x, mode.batch_stats)?,
            )?;
            if Self::pool_after(i) {
                x = POOL.forward(&x)?;
            }
        }
        let x = x.f_adaptive_avg_pool2d([1, 1])?; // [N, 1024, 1, 1]
        let x = x
            .f_dropout(mode.dropout(DROPOUT), mode.train)?
            .f_flatten(1, -1)?; // [N, 1024]
        let x = self.fc1.forward(&x)?.f_relu()?; // [N, 1024]
        self.fc2.forward(&x) // [N, num_classes]
    }
}

impl Network for Seed {
    fn forward(
        &self,
        x: &Tensor,
        mode: Mode,
        tap: &mut Tap,
    ) -> Result<(Tensor, Vec<Tensor>), TchError> {
        Ok((self.forward_tapped(x, mode, tap)?, vec![]))
    }

    /// Every conv + BatchNorm unit (the stem has none).
    fn fold_batchnorm(&mut self) -> Result<(), TchError> {
        for u in self.blocks.iter_mut().flat_map(Inception::units_mut) {
            u.fold()?;
        }
        Ok(())
    }

    fn describe(&self, w: &mut Walker) -> Result<()> {
        w.group("stem");
        w.conv_relu(&self.conv1)?;
        w.pool(&POOL, "maxpool1")?;
        w.conv_relu(&self.conv2)?;
        w.conv_relu(&self.conv3)?;
        w.pool(&POOL, "maxpool2")?;
        let mut pools = ["maxpool3", "maxpool4"].into_iter();
        for (i, block) in self.blocks.iter().enumerate() {
            let group = format!("inception{}", BLOCKS[i].0);
            w.group(&group);
            block.describe(w, &group)?;
            if let Some(name) = Self::pool_after(i).then(|| pools.next()).flatten() {
                w.group(name);
                w.pool(&POOL, name)?;
            }
        }
        w.group("head");
        w.adaptive_avg_pool("inception5b.1", 1);
        w.flatten();
        w.linear(&self.fc1, true)?;
        w.linear(&self.fc2, false)
    }

    /// The pooled 1024 features.
    fn onnx_features(
        &self,
        g: &mut crate::onnx::Graph,
        x: &crate::onnx::Value,
    ) -> Result<crate::onnx::Value> {
        let x = self.conv1.onnx_relu(g, x)?;
        let x = POOL.onnx(g, &x)?;
        let x = self.conv2.onnx_relu(g, &x)?;
        let x = self.conv3.onnx_relu(g, &x)?;
        let mut x = POOL.onnx(g, &x)?;
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.onnx(g, &x)?;
            if Self::pool_after(i) {
                x = POOL.onnx(g, &x)?;
            }
        }
        Ok(g.pool_flatten(&x))
    }

    /// The two-layer classifier.
    fn onnx_head(
        &self,
        g: &mut crate::onnx::Graph,
        f: &crate::onnx::Value,
    ) -> Result<crate::onnx::Value> {
        let x = self.fc1.onnx(g, f)?;
        let x = g.relu(&x);
        self.fc2.onnx(g, &x)
    }
}
