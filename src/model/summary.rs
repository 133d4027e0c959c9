//! A layer-by-layer account of a network: output shape, parameters and multiply-accumulates
//! (MACs) of every convolution, pool and linear layer, grouped by block and branch, and for each
//! inception block what its 1×1 reductions save (the seed's lesson, MODEL.md goals 1 and 2).
//!
//! MACs count the multiply-accumulates of convolutions and linear layers for one image
//! (`k·k·c_in·c_out·H_out·W_out`, `in·out`); BatchNorm, ReLU and pooling are not counted.
//! Parameters count weights, biases and BatchNorm scale/shift, not running statistics.

use anyhow::{bail, Result};
use serde::Serialize;

use super::layers::{Conv2d, ConvBnRelu, Cost, Linear, MaxPool, Shape};

/// One layer of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The block or part of the network: `stem`, `inception3a`, `head`, `aux1`, …
    pub group: String,
    /// The branch inside an inception block (`branch1` … `branch4`).
    pub branch: Option<String>,
    /// Var-store path of the layer (the PyTorch module name).
    pub name: String,
    /// What the layer is: `conv 3×3/1 +BN+ReLU`, `max-pool 3×3/2 ceil`, `linear`, …
    pub layer: String,
    /// Output shape for one image: `[C, H, W]`, or `[F]` after flattening.
    pub output: Vec<i64>,
    pub params: i64,
    pub macs: i64,
}

/// What an inception block costs with its 1×1 reductions and what it would cost without them.
#[derive(Debug, Clone, Serialize)]
pub struct BlockSaving {
    pub block: String,
    /// The block's input shape.
    pub input: Vec<i64>,
    pub params: i64,
    pub macs: i64,
    /// Branches 2 and 3 convolving the block's input directly (branches 1 and 4 unchanged).
    pub params_without_reductions: i64,
    pub macs_without_reductions: i64,
}

/// The whole account, as `inception summary` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub arch: String,
    pub num_classes: i64,
    pub image_size: i64,
    pub aux_logits: bool,
    pub layers: Vec<Row>,
    pub blocks: Vec<BlockSaving>,
    /// Parameters of every layer, auxiliary heads included.
    pub total_params: i64,
    /// MACs of one inference forward pass (auxiliary heads excluded: they never run then).
    pub total_macs: i64,
    /// Parameters and MACs of the auxiliary heads (training only), zero without them.
    pub aux_params: i64,
    pub aux_macs: i64,
}

/// Walks a network's layers in forward order, propagating the shape of one image.
#[derive(Debug)]
pub struct Walker {
    shape: Shape,
    flat: bool,
    group: String,
    branch: Option<String>,
    rows: Vec<Row>,
    blocks: Vec<BlockSaving>,
}

impl Walker {
    pub fn new(input: Shape) -> Walker {
        Walker {
            shape: input,
            flat: false,
            group: "stem".into(),
            branch: None,
            rows: vec![],
            blocks: vec![],
        }
    }

    /// The current shape of one image.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The cost of all layers walked so far.
    pub fn total(&self) -> Cost {
        self.rows
            .iter()
            .map(|r| Cost {
                params: r.params,
                macs: r.macs,
            })
            .sum()
    }

    /// Starts a new group of layers (a block, the stem, the head).
    pub fn group(&mut self, group: &str) {
        self.group = group.into();
        self.branch = None;
    }

    fn push(&mut self, name: &str, layer: String, cost: Cost) {
        let output = if self.flat {
            vec![self.shape[0]]
        } else {
            self.shape.to_vec()
        };
        self.rows.push(Row {
            group: self.group.clone(),
            branch: self.branch.clone(),
            name: name.into(),
            layer,
            output,
            params: cost.params,
            macs: cost.macs,
        });
    }

    fn too_small(&self, name: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "the input is too small: layer {name} gets {}×{} and has no room for its window",
            self.shape[1],
            self.shape[2]
        )
    }

    /// A layer described by its caller: its label, output shape and cost.
    pub fn layer(&mut self, name: &str, label: String, out: Shape, cost: Cost) {
        self.shape = out;
        self.push(name, label, cost);
    }

    /// A convolution without BatchNorm (the seed's stem), followed by ReLU.
    pub fn conv_relu(&mut self, c: &Conv2d) -> Result<()> {
        self.shape = c
            .out_shape(self.shape)
            .ok_or_else(|| self.too_small(&c.name))?;
        let label = format!("{} +bias+ReLU", conv_label(c));
        self.push(&c.name, label, c.cost(self.shape));
        Ok(())
    }

    /// A conv + BatchNorm + ReLU unit; the BatchNorm's parameters are counted on this row.
    pub fn unit(&mut self, u: &ConvBnRelu) -> Result<()> {
        self.shape = u
            .out_shape(self.shape)
            .ok_or_else(|| self.too_small(&u.conv.name))?;
        let bias = if u.conv.has_bias() { " +bias" } else { "" };
        let label = format!("{}{bias} +BN+ReLU", conv_label(&u.conv));
        self.push(&u.conv.name, label, u.cost(self.shape));
        Ok(())
    }

    pub fn pool(&mut self, p: &MaxPool, name: &str) -> Result<()> {
        self.shape = p
            .out_shape(self.shape)
            .ok_or_else(|| self.too_small(name))?;
        let ceil = if p.ceil { " ceil" } else { "" };
        let pad = if p.padding > 0 {
            format!(" pad {}", p.padding)
        } else {
            String::new()
        };
        let label = format!("max-pool {0}×{0}/{1}{pad}{ceil}", p.kernel, p.stride);
        self.push(name, label, Cost::default());
        Ok(())
    }

    /// Adaptive average pooling to `size`×`size`.
    pub fn adaptive_avg_pool(&mut self, name: &str, size: i64) {
        self.shape = [self.shape[0], size, size];
        self.push(
            name,
            format!("avg-pool adaptive →{size}×{size}"),
            Cost::default(),
        );
    }

    /// Flattening to a vector of `C·H·W` features (no row of its own).
    pub fn flatten(&mut self) {
        self.shape = [self.shape[0] * self.shape[1] * self.shape[2], 1, 1];
        self.flat = true;
    }

    pub fn linear(&mut self, l: &Linear, relu: bool) -> Result<()> {
        if !self.flat || self.shape[0] != l.in_features {
            bail!(
                "layer {}: expected {} input features, got shape {:?}",
                l.name,
                l.in_features,
                self.shape
            );
        }
        self.shape = [l.out_features, 1, 1];
        let label = if relu { "linear +ReLU" } else { "linear" };
        self.push(&l.name, label.into(), l.cost());
        Ok(())
    }

    /// Runs `f` for one branch of an inception block: it starts from the block's input and
    /// its output shape is returned; the walker's shape is left at the block's input.
    pub fn branch(
        &mut self,
        group: &str,
        branch: &str,
        f: impl FnOnce(&mut Walker) -> Result<()>,
    ) -> Result<Shape> {
        let input = self.shape;
        self.group = group.into();
        self.branch = Some(branch.into());
        f(self)?;
        let out = self.shape;
        self.shape = input;
        self.branch = None;
        Ok(out)
    }

    /// Runs `f` on a side path (an auxiliary head) and returns to the current shape afterwards.
    pub fn side(&mut self, group: &str, f: impl FnOnce(&mut Walker) -> Result<()>) -> Result<()> {
        let (shape, flat, main_group) = (self.shape, self.flat, self.group.clone());
        self.group(group);
        f(self)?;
        self.shape = shape;
        self.flat = flat;
        self.group = main_group;
        Ok(())
    }

    /// Concatenates the branch outputs on the channel axis.
    pub fn concat(&mut self, outputs: &[Shape]) -> Result<()> {
        let first = outputs.first().copied().unwrap_or(self.shape);
        if outputs.iter().any(|o| o[1..] != first[1..]) {
            bail!(
                "branches of {} end at different sizes: {outputs:?}",
                self.group
            );
        }
        self.shape = [outputs.iter().map(|o| o[0]).sum(), first[1], first[2]];
        Ok(())
    }

    pub fn block_saving(&mut self, block: &str, input: Shape, with: Cost, without: Cost) {
        self.blocks.push(BlockSaving {
            block: block.into(),
            input: input.to_vec(),
            params: with.params,
            macs: with.macs,
            params_without_reductions: without.params,
            macs_without_reductions: without.macs,
        });
    }

    /// Closes the walk. `aux_groups` names the groups that run only in training.
    pub fn finish(
        self,
        arch: &str,
        num_classes: i64,
        image_size: i64,
        aux_groups: &[&str],
    ) -> Summary {
        let (mut total, mut aux) = (Cost::default(), Cost::default());
        for r in &self.rows {
            let c = Cost {
                params: r.params,
                macs: r.macs,
            };
            if aux_groups.contains(&r.group.as_str()) {
                aux = aux + c;
            } else {
                total = total + c;
            }
        }
        Summary {
            arch: arch.into(),
            num_classes,
            image_size,
            aux_logits: aux.params > 0,
            layers: self.rows,
            blocks: self.blocks,
            total_params: total.params + aux.params,
            total_macs: total.macs,
            aux_params: aux.params,
            aux_macs: aux.macs,
        }
    }
}

fn conv_label(c: &Conv2d) -> String {
    let pad = if c.padding > 0 {
        format!(" pad {}", c.padding)
    } else {
        String::new()
    };
    format!("conv {0}×{0}/{1}{pad}", c.kernel, c.stride)
}
