//! Dynamic loss scaling for fp16 training, with the semantics of PyTorch's
//! `torch.amp.GradScaler` (Micikevicius et al. 2018, "Mixed Precision Training"): the loss is
//! multiplied by the scale before the backward pass so that small fp16 gradients do not flush
//! to zero; the gradients are divided by it again before the optimiser (and its weight decay)
//! sees them. A step whose gradients hold an inf or NaN is skipped and the scale halved; after
//! `growth_interval` clean steps in a row the scale doubles.

use anyhow::Result;

use tch::{Kind, Tensor};

pub use crate::checkpoint::record::ScalerState;

/// GradScaler's defaults.
pub const INIT_SCALE: f64 = 65536.0;
pub const GROWTH_FACTOR: f64 = 2.0;
pub const BACKOFF_FACTOR: f64 = 0.5;
pub const GROWTH_INTERVAL: u64 = 2000;

impl Default for ScalerState {
    fn default() -> Self {
        ScalerState {
            scale: INIT_SCALE,
            growth_tracker: 0,
        }
    }
}

/// What one scaled step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// The gradients were finite: the optimiser stepped.
    Stepped,
    /// Some gradient held an inf or NaN: the step was skipped and the scale backed off.
    Skipped,
}

/// A dynamic loss scaler.
#[derive(Debug, Clone, PartialEq)]
pub struct GradScaler {
    pub state: ScalerState,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: u64,
}

impl Default for GradScaler {
    fn default() -> Self {
        GradScaler::new(ScalerState::default())
    }
}

impl GradScaler {
    /// A scaler with GradScaler's factors, continuing from `state`.
    pub fn new(state: ScalerState) -> Self {
        GradScaler {
            state,
            growth_factor: GROWTH_FACTOR,
            backoff_factor: BACKOFF_FACTOR,
            growth_interval: GROWTH_INTERVAL,
        }
    }

    pub fn scale(&self) -> f64 {
        self.state.scale
    }

    /// `loss × scale`, to call `backward` on.
    pub fn scale_loss(&self, loss: &Tensor) -> Result<Tensor> {
        Ok(loss.f_mul_scalar(self.state.scale)?)
    }

    /// Divides every defined gradient of `params` by the scale in place and says whether any
    /// of them holds an inf or NaN (GradScaler's `unscale_`; the reciprocal is taken in double
    /// and rounded to float, as PyTorch does). One device synchronisation, for the answer.
    pub fn unscale(&self, params: &[Tensor]) -> Result<bool> {
        let inv = (1.0 / self.state.scale) as f32 as f64;
        let mut found: Option<Tensor> = None;
        let _guard = tch::no_grad_guard();
        for p in params {
            let mut g = p.f_grad()?;
            if !g.defined() {
                continue;
            }
            let _ = g.f_mul_scalar_(inv)?;
            let bad = g.f_isfinite()?.f_logical_not()?.f_any()?;
            found = Some(match found {
                None => bad,
                Some(f) => f.f_logical_or(&bad)?,
            });
        }
        Ok(match found {
            Some(f) => f.f_to_kind(Kind::Int64)?.f_int64_value(&[])? != 0,
            None => false,
        })
    }

    /// GradScaler's `update`: back off and restart the count after a step with non-finite
    /// gradients; grow after `growth_interval` clean steps in a row (unless the grown scale
    /// would overflow fp32, where PyTorch keeps its scale).
    pub fn update(&mut self, found_inf: bool) {
        let s = &mut self.state;
        if found_inf {
            s.scale *= self.backoff_factor;
            s.growth_tracker = 0;
            return;
        }
        s.growth_tracker += 1;
        if s.growth_tracker == self.growth_interval {
            let grown = s.scale * self.growth_factor;
            if (grown as f32).is_finite() {
                s.scale = grown;
            }
            s.growth_tracker = 0;
        }
    }

    /// Unscales the gradients of `params`, runs `step` unless they hold an inf or NaN, and
    /// updates the scale: GradScaler's `unscale_`, `step` and `update` in one.
    pub fn step(
        &mut self,
        params: &[Tensor],
        step: impl FnOnce() -> Result<()>,
    ) -> Result<StepOutcome> {
        let found_inf = self.unscale(params)?;
        let outcome = if found_inf {
            StepOutcome::Skipped
        } else {
            step()?;
            StepOutcome::Stepped
        };
        self.update(found_inf);
        Ok(outcome)
    }
}
