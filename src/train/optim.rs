//! SGD with momentum and AdamW, written out so that their state can be saved in `last.pt` and
//! restored on `--resume` (tch's optimisers keep theirs out of reach). The update rules are
//! PyTorch's `torch.optim.SGD` (dampening 0, weight decay added to the gradient) and
//! `torch.optim.AdamW` (decoupled weight decay, bias-corrected moments, β = (0.9, 0.999),
//! ε = 1e-8). Weight decay applies to weights with two or more dimensions, not to biases or
//! BatchNorm parameters. As in PyTorch, each parameter counts its own updates (AdamW's bias
//! correction uses that count): a backbone frozen for the first epochs starts its moments
//! afresh when it thaws, with the correction of a first step, not of the run's.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use tch::Tensor;

use crate::config::OptimizerKind;
use crate::model::Model;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;
/// Prefix of the optimiser's tensors in a checkpoint.
pub use crate::checkpoint::OPTIMIZER_PREFIX as PREFIX;
/// The name under [`PREFIX`] of each parameter's update count.
const STEP: &str = "step";

struct Param {
    name: String,
    tensor: Tensor,
    decay: bool,
    /// Part of the backbone (not a head): its rate is scaled, and it can be frozen.
    backbone: bool,
    /// SGD: the momentum buffer; AdamW: the first and second moments.
    buffers: Vec<Tensor>,
    /// Updates made to this parameter.
    steps: u64,
}

/// An optimiser over a model's trainable parameters.
pub struct Optimizer {
    kind: OptimizerKind,
    params: Vec<Param>,
    momentum: f64,
    weight_decay: f64,
    /// The backbone's learning rate as a share of the step's.
    backbone_lr_mult: f64,
    /// Updates made so far.
    pub step: u64,
}

impl Optimizer {
    pub fn new(
        model: &Model,
        kind: OptimizerKind,
        momentum: f64,
        weight_decay: f64,
    ) -> Result<Self> {
        let buffers = match kind {
            OptimizerKind::Sgd => 1,
            OptimizerKind::Adamw => 2,
        };
        let params = model
            .state_dict()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(name, tensor)| {
                let bufs = (0..buffers)
                    .map(|_| tensor.f_zeros_like())
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Ok(Param {
                    decay: tensor.dim() > 1,
                    backbone: !model.config.arch.is_head(&name),
                    name,
                    tensor,
                    buffers: bufs,
                    steps: 0,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Optimizer {
            kind,
            params,
            momentum,
            weight_decay,
            backbone_lr_mult: 1.0,
            step: 0,
        })
    }

    /// Gives the backbone (every parameter outside the heads) `mult` × the learning rate.
    pub fn set_backbone_lr_mult(&mut self, mult: f64) {
        self.backbone_lr_mult = mult;
    }

    /// Freezes the backbone (no gradient, no update: a linear probe) or thaws it.
    pub fn freeze_backbone(&mut self, frozen: bool) -> Result<()> {
        for p in self.params.iter_mut().filter(|p| p.backbone) {
            if frozen {
                p.tensor.zero_grad();
            }
            p.tensor = p.tensor.f_set_requires_grad(!frozen)?;
        }
        Ok(())
    }

    /// The parameters it updates (shallow copies: the same storage).
    pub fn parameters(&self) -> Vec<Tensor> {
        self.params
            .iter()
            .map(|p| p.tensor.shallow_clone())
            .collect()
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.tensor.zero_grad();
        }
    }

    /// One update with learning rate `lr`, from the gradients of the last backward pass.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        let _guard = tch::no_grad_guard();
        self.step += 1;
        for p in &mut self.params {
            if !p.tensor.requires_grad() {
                continue;
            }
            let g = p.tensor.f_grad()?;
            if !g.defined() {
                continue;
            }
            let lr = match p.backbone {
                true => lr * self.backbone_lr_mult,
                false => lr,
            };
            p.steps += 1;
            let t = p.steps.min(i32::MAX as u64) as i32;
            let mut w = p.tensor.shallow_clone();
            match self.kind {
                OptimizerKind::Sgd => {
                    let g = if p.decay && self.weight_decay > 0.0 {
                        g.f_add(&w.f_mul_scalar(self.weight_decay)?)?
                    } else {
                        g
                    };
                    let buf = &mut p.buffers[0];
                    let _ = buf.f_mul_scalar_(self.momentum)?.f_add_(&g)?;
                    let _ = w.f_sub_(&buf.f_mul_scalar(lr)?)?;
                }
                OptimizerKind::Adamw => {
                    if p.decay && self.weight_decay > 0.0 {
                        let _ = w.f_mul_scalar_(1.0 - lr * self.weight_decay)?;
                    }
                    let (m, v) = p.buffers.split_at_mut(1);
                    let (m, v) = (&mut m[0], &mut v[0]);
                    let _ = m
                        .f_mul_scalar_(BETA1)?
                        .f_add_(&g.f_mul_scalar(1.0 - BETA1)?)?;
                    let _ = v
                        .f_mul_scalar_(BETA2)?
                        .f_add_(&g.f_mul(&g)?.f_mul_scalar(1.0 - BETA2)?)?;
                    let step_size = lr / (1.0 - BETA1.powi(t));
                    let denom = v
                        .f_sqrt()?
                        .f_div_scalar((1.0 - BETA2.powi(t)).sqrt())?
                        .f_add_scalar(EPS)?;
                    let _ = w.f_sub_(&m.f_div(&denom)?.f_mul_scalar(step_size)?)?;
                }
            }
        }
        Ok(())
    }

    /// The state as named tensors (`optimizer.<buffer>.<parameter>`, and each parameter's
    /// update count as `optimizer.step.<parameter>`), for a checkpoint.
    pub fn state(&self) -> BTreeMap<String, Tensor> {
        let names = self.buffer_names();
        let mut out = BTreeMap::new();
        for p in &self.params {
            for (b, t) in names.iter().zip(&p.buffers) {
                out.insert(format!("{PREFIX}{b}.{}", p.name), t.shallow_clone());
            }
            out.insert(
                format!("{PREFIX}{STEP}.{}", p.name),
                Tensor::from(p.steps as i64),
            );
        }
        out
    }

    /// Restores the state saved by [`Optimizer::state`] after `step` updates (a parameter
    /// without its own count, from a checkpoint written before there were any, takes `step`).
    pub fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>, step: u64) -> Result<()> {
        let names = self.buffer_names();
        let _guard = tch::no_grad_guard();
        for p in &mut self.params {
            for (b, buf) in names.iter().zip(p.buffers.iter_mut()) {
                let key = format!("{PREFIX}{b}.{}", p.name);
                let Some(src) = tensors.get(&key) else {
                    bail!("optimizer state {key} is missing");
                };
                if src.size() != buf.size() {
                    bail!(
                        "optimizer state {key}: expected {:?}, got {:?}",
                        buf.size(),
                        src.size()
                    );
                }
                buf.f_copy_(&src.f_to_device(buf.device())?)
                    .with_context(|| key.clone())?;
            }
        }
        for p in &mut self.params {
            p.steps = match tensors.get(&format!("{PREFIX}{STEP}.{}", p.name)) {
                Some(t) => t.f_int64_value(&[])?.max(0) as u64,
                None => step,
            };
        }
        self.step = step;
        Ok(())
    }

    fn buffer_names(&self) -> &'static [&'static str] {
        match self.kind {
            OptimizerKind::Sgd => &["momentum_buffer"],
            OptimizerKind::Adamw => &["exp_avg", "exp_avg_sq"],
        }
    }
}

/// The learning rate at fractional epoch `t` (epoch + batch / batches).
pub fn learning_rate(cfg: &crate::config::TrainConfig, t: f64) -> f64 {
    use crate::config::Schedule;
    let warm = cfg.warmup_epochs as f64;
    if t < warm {
        return cfg.lr * (0.01 + 0.99 * t / warm);
    }
    match cfg.schedule {
        Schedule::Constant => cfg.lr,
        Schedule::Step => {
            cfg.lr
                * cfg
                    .step_gamma
                    .powi((t / cfg.step_size as f64).floor() as i32)
        }
        Schedule::Cosine => {
            let span = (cfg.epochs as f64 - warm).max(1.0);
            let progress = ((t - warm) / span).clamp(0.0, 1.0);
            cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}
