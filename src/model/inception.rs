//! The inception block (Szegedy et al. 2014, arXiv:1409.4842, Fig. 2b and Table 1): four
//! branches side by side, concatenated on the channel axis, with 1×1 convolutions that shrink
//! the channels before the expensive 3×3 ones.
//!
//! One implementation serves both networks; [`Style`] chooses the details and the state_dict
//! names of the seed (docs/MODEL.md) or of torchvision's `googlenet`.

use tch::nn::Path;
use tch::{TchError, Tensor};

use super::layers::{
    conv_cost, path_name, BatchNorm2d, Conv2d, ConvBnRelu, Cost, MaxPool, Shape, WeightInit,
};
use super::summary::Walker;

/// The channel counts of one block, as in the paper's Table 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockConfig {
    pub in_channels: i64,
    pub c1: i64,
    pub c3_reduce: i64,
    pub c3: i64,
    pub c5_reduce: i64,
    pub c5: i64,
    pub pool_proj: i64,
}

impl BlockConfig {
    const fn new(t: [i64; 7]) -> BlockConfig {
        BlockConfig {
            in_channels: t[0],
            c1: t[1],
            c3_reduce: t[2],
            c3: t[3],
            c5_reduce: t[4],
            c5: t[5],
            pool_proj: t[6],
        }
    }

    pub fn out_channels(&self) -> i64 {
        self.c1 + self.c3 + self.c5 + self.pool_proj
    }
}

/// The nine blocks, 3a to 5b: in, 1×1, 3×3 reduce, 3×3, "5×5" reduce, "5×5", pool proj.
pub const BLOCKS: [(&str, BlockConfig); 9] = [
    ("3a", BlockConfig::new([192, 64, 96, 128, 16, 32, 32])),
    ("3b", BlockConfig::new([256, 128, 128, 192, 32, 96, 64])),
    ("4a", BlockConfig::new([480, 192, 96, 208, 16, 48, 64])),
    ("4b", BlockConfig::new([512, 160, 112, 224, 24, 64, 64])),
    ("4c", BlockConfig::new([512, 128, 128, 256, 24, 64, 64])),
    ("4d", BlockConfig::new([512, 112, 144, 288, 32, 64, 64])),
    ("4e", BlockConfig::new([528, 256, 160, 320, 32, 128, 128])),
    ("5a", BlockConfig::new([832, 256, 160, 320, 32, 128, 128])),
    ("5b", BlockConfig::new([832, 384, 192, 384, 48, 128, 128])),
];

/// Whose conventions a block follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// The seed: convolutions with bias, BatchNorm eps 1e-5, PyTorch default init, branches as
    /// flat Sequentials (`branch2.3.weight`).
    Seed,
    /// torchvision: `BasicConv2d` (conv without bias, BatchNorm eps 1e-3), truncated-normal init,
    /// ceil-mode pool in branch 4, names such as `branch2.1.bn.weight`.
    TorchVision,
}

impl Style {
    pub fn conv_bias(self) -> bool {
        self == Style::Seed
    }

    pub fn bn_eps(self) -> f64 {
        match self {
            Style::Seed => 1e-5,
            Style::TorchVision => 1e-3,
        }
    }

    pub fn init(self) -> WeightInit {
        match self {
            Style::Seed => WeightInit::TorchDefault,
            Style::TorchVision => WeightInit::TruncNormal001,
        }
    }

    /// A conv + BatchNorm + ReLU unit. `seed_index` is the conv's index in the seed's flat
    /// Sequential (its BatchNorm follows at +1); `tv_index` the `BasicConv2d`'s index in
    /// torchvision's Sequential, `None` where the branch is a bare `BasicConv2d`.
    #[allow(clippy::too_many_arguments)]
    pub fn unit(
        self,
        branch: &Path,
        seed_index: usize,
        tv_index: Option<usize>,
        cin: i64,
        cout: i64,
        kernel: i64,
        stride: i64,
        padding: i64,
    ) -> ConvBnRelu {
        let (conv_path, bn_path) = match (self, tv_index) {
            (Style::Seed, _) => (branch / seed_index, branch / (seed_index + 1)),
            (Style::TorchVision, Some(i)) => (branch / i / "conv", branch / i / "bn"),
            (Style::TorchVision, None) => (branch / "conv", branch / "bn"),
        };
        ConvBnRelu::new(
            Conv2d::new(
                conv_path,
                cin,
                cout,
                kernel,
                stride,
                padding,
                self.conv_bias(),
                self.init(),
            ),
            BatchNorm2d::new(bn_path, cout, self.bn_eps()),
        )
    }
}

/// One inception block.
#[derive(Debug)]
pub struct Inception {
    /// Var-store path of the block (`inception3a`, the seed's `inception5b.0`).
    pub name: String,
    pub config: BlockConfig,
    style: Style,
    branch1: ConvBnRelu,
    branch2: [ConvBnRelu; 2],
    branch3: [ConvBnRelu; 2],
    pool: MaxPool,
    branch4: ConvBnRelu,
}

/// Kernel of branch 3's second convolution: 3×3 in the seed and in torchvision (the paper: 5×5).
const BRANCH3_KERNEL: i64 = 3;

impl Inception {
    pub fn new(p: &Path, c: BlockConfig, style: Style) -> Inception {
        let (b1, b2, b3, b4) = (p / "branch1", p / "branch2", p / "branch3", p / "branch4");
        let k5 = BRANCH3_KERNEL;
        Inception {
            name: path_name(p),
            config: c,
            style,
            branch1: style.unit(&b1, 0, None, c.in_channels, c.c1, 1, 1, 0),
            branch2: [
                style.unit(&b2, 0, Some(0), c.in_channels, c.c3_reduce, 1, 1, 0),
                style.unit(&b2, 3, Some(1), c.c3_reduce, c.c3, 3, 1, 1),
            ],
            branch3: [
                style.unit(&b3, 0, Some(0), c.in_channels, c.c5_reduce, 1, 1, 0),
                style.unit(&b3, 3, Some(1), c.c5_reduce, c.c5, k5, 1, k5 / 2),
            ],
            pool: MaxPool {
                kernel: 3,
                stride: 1,
                padding: 1,
                ceil: style == Style::TorchVision,
            },
            branch4: style.unit(&b4, 1, Some(1), c.in_channels, c.pool_proj, 1, 1, 0),
        }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        // x: [N, in, H, W] → each branch [N, c_i, H, W] → [N, c1+c3+c5+pool_proj, H, W]
        let y1 = self.branch1.forward_t(x, train)?;
        let y2 = self.branch2[1].forward_t(&self.branch2[0].forward_t(x, train)?, train)?;
        let y3 = self.branch3[1].forward_t(&self.branch3[0].forward_t(x, train)?, train)?;
        let y4 = self.branch4.forward_t(&self.pool.forward(x)?, train)?;
        Tensor::f_cat(&[y1, y2, y3, y4], 1)
    }

    /// Adds this block's layers to the summary, and what it would cost without its 1×1
    /// reductions (branches 2 and 3 convolving the block's input directly).
    pub fn describe(&self, w: &mut Walker, group: &str) -> anyhow::Result<()> {
        let input = w.shape();
        let before = w.total();
        let outputs = [
            w.branch(group, "branch1", |w| w.unit(&self.branch1))?,
            w.branch(group, "branch2", |w| {
                self.branch2.iter().try_for_each(|u| w.unit(u))
            })?,
            w.branch(group, "branch3", |w| {
                self.branch3.iter().try_for_each(|u| w.unit(u))
            })?,
            w.branch(group, "branch4", |w| {
                w.pool(&self.pool, &format!("{}.branch4.0", self.name))?;
                w.unit(&self.branch4)
            })?,
        ];
        w.concat(&outputs)?;
        let with = w.total() - before;
        w.block_saving(group, input, with, self.cost_without_reductions(input));
        Ok(())
    }

    /// Every conv + BatchNorm unit of the block.
    pub fn units_mut(&mut self) -> Vec<&mut ConvBnRelu> {
        let [a, b] = &mut self.branch2;
        let [c, d] = &mut self.branch3;
        vec![&mut self.branch1, a, b, c, d, &mut self.branch4]
    }

    fn cost_without_reductions(&self, input: Shape) -> Cost {
        let c = &self.config;
        let out = |ch: i64| [ch, input[1], input[2]];
        let bias = self.style.conv_bias();
        let bn = |ch: i64| Cost {
            params: 2 * ch,
            macs: 0,
        };
        conv_cost(c.in_channels, c.c1, 1, bias, out(c.c1))
            + bn(c.c1)
            + conv_cost(c.in_channels, c.c3, 3, bias, out(c.c3))
            + bn(c.c3)
            + conv_cost(c.in_channels, c.c5, BRANCH3_KERNEL, bias, out(c.c5))
            + bn(c.c5)
            + conv_cost(c.in_channels, c.pool_proj, 1, bias, out(c.pool_proj))
            + bn(c.pool_proj)
    }
}

impl Inception {
    /// The block into an ONNX graph: the four branches, concatenated.
    pub fn onnx(
        &self,
        g: &mut crate::onnx::Graph,
        x: &crate::onnx::Value,
    ) -> anyhow::Result<crate::onnx::Value> {
        let y1 = self.branch1.onnx(g, x)?;
        let y2 = self.branch2[0].onnx(g, x)?;
        let y2 = self.branch2[1].onnx(g, &y2)?;
        let y3 = self.branch3[0].onnx(g, x)?;
        let y3 = self.branch3[1].onnx(g, &y3)?;
        let y4 = self.pool.onnx(g, x)?;
        let y4 = self.branch4.onnx(g, &y4)?;
        g.concat(&[y1, y2, y3, y4])
    }
}
