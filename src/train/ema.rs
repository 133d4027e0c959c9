//! An exponential moving average of a network's weights, as timm's `ModelEmaV2` (every
//! state_dict entry, BatchNorm statistics included), with the warm-up of TensorFlow's
//! `ExponentialMovingAverage(num_updates=…)`: after `t` updates the decay is
//! `min(decay, (1 + t) / (10 + t))`, so that the first steps do not keep the random initial
//! weights for long. Its weights are saved in `last.pt` as tensors named `ema.<name>`.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use crate::model::Model;
use crate::precision::Compute;

/// Prefix of the averaged weights in a checkpoint.
pub use crate::checkpoint::EMA_PREFIX as PREFIX;

/// The averaged copy of a network.
#[derive(Debug)]
pub struct Ema {
    /// The averaged network (eval mode only; never trained directly).
    pub model: Model,
    decay: f64,
}

impl Ema {
    /// A copy of `model`'s current weights, laid out as `compute` computes.
    pub fn new(model: &Model, decay: f64, compute: Compute) -> Result<Ema> {
        let mut copy = Model::new(model.config, compute.device)?;
        copy.load_state_dict(&model.state_dict())?;
        compute.prepare(&mut copy)?;
        Ok(Ema { model: copy, decay })
    }

    /// The decay used for the update after `steps` optimiser steps.
    pub fn decay_at(&self, steps: u64) -> f64 {
        let t = steps as f64;
        self.decay.min((1.0 + t) / (10.0 + t))
    }

    /// Moves the average towards `model`'s weights; `steps` counts the updates made before.
    pub fn update(&mut self, model: &Model, steps: u64) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let d = self.decay_at(steps);
        let live = model.state_dict();
        for (name, mut avg) in self.model.state_dict() {
            let Some(w) = live.get(&name) else {
                bail!("EMA: the network has no {name}");
            };
            if avg.kind() == Kind::Int64 {
                avg.f_copy_(w)?;
            } else {
                // avg ← d·avg + (1−d)·w
                let _ = avg.f_lerp_(w, 1.0 - d)?;
            }
        }
        Ok(())
    }

    /// The averaged weights as named tensors (`ema.<name>`), for `last.pt`.
    pub fn state(&self) -> BTreeMap<String, Tensor> {
        self.model
            .state_dict()
            .into_iter()
            .map(|(k, t)| (format!("{PREFIX}{k}"), t))
            .collect()
    }

    /// Restores the weights saved by [`Ema::state`].
    pub fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        let weights: BTreeMap<String, Tensor> = tensors
            .iter()
            .filter_map(|(k, t)| Some((k.strip_prefix(PREFIX)?.to_string(), t.shallow_clone())))
            .collect();
        if weights.is_empty() {
            bail!("the checkpoint holds no EMA weights (ema.*), but the run averages them");
        }
        self.model
            .load_state_dict(&weights)
            .context("the EMA weights in the checkpoint")
    }
}
