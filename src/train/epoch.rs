//! One training epoch: for each batch the forward pass (under autocast), the loss, the
//! backward pass, the optimiser's update and the weight average's, and a progress bar on a
//! terminal. Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) mix each batch with its
//! reverse, as timm's `Mixup` does in its `batch` mode.

use std::io::IsTerminal;
use std::time::Instant;

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution};
use tch::{Kind, Reduction, Tensor};

use super::scaler::StepOutcome;
use super::{optim, RunData, State, AUX_WEIGHT};
use crate::config::TrainConfig;
use crate::precision::Compute;
use crate::rng::mix;

/// What one epoch measured.
#[derive(Debug, Clone, Copy)]
pub struct EpochStats {
    /// Mean loss as optimised (class weights, label smoothing, mixing, auxiliary heads).
    pub loss: f64,
    /// Share of training images whose dominant label (mixing: the larger share) was predicted.
    pub accuracy: f64,
    /// Learning rate of the last batch.
    pub lr: f64,
    /// Training images per second, data loading included.
    pub images_per_s: f64,
}

/// How a batch is mixed with its reverse: `x·λ + reverse(x)·(1−λ)` (mixup) or a box of the
/// reverse pasted in (CutMix); the loss weighs the two label sets by λ and 1−λ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mixing {
    Mixup {
        lambda: f64,
    },
    /// Box rows `y0..y1`, columns `x0..x1`; λ is the share of the image left unpasted.
    Cutmix {
        lambda: f64,
        y0: i64,
        y1: i64,
        x0: i64,
        x1: i64,
    },
}

impl Mixing {
    /// The mixing of batch `batch` of `epoch`, drawn from the config's α values and the seed
    /// alone; `None` when both are off.
    pub fn draw(cfg: &TrainConfig, epoch: u64, batch: u64, size: i64) -> Option<Mixing> {
        if cfg.mixup <= 0.0 && cfg.cutmix <= 0.0 {
            return None;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(mix(&[cfg.seed, epoch, batch, 2]));
        let cut = match (cfg.mixup > 0.0, cfg.cutmix > 0.0) {
            (true, true) => rng.random::<f64>() < 0.5,
            (_, cut) => cut,
        };
        let alpha = if cut { cfg.cutmix } else { cfg.mixup };
        let lambda = Beta::new(alpha, alpha)
            .map(|b| b.sample(&mut rng))
            .unwrap_or(1.0);
        if !cut {
            return Some(Mixing::Mixup { lambda });
        }
        // A box of area share 1−λ, centred uniformly, clipped to the image; λ then corrected.
        let side = ((1.0 - lambda).sqrt() * size as f64) as i64;
        let (cy, cx) = (rng.random_range(0..size), rng.random_range(0..size));
        let (y0, y1) = ((cy - side / 2).max(0), (cy + side / 2).min(size));
        let (x0, x1) = ((cx - side / 2).max(0), (cx + side / 2).min(size));
        let pasted = ((y1 - y0) * (x1 - x0)) as f64 / (size * size) as f64;
        Some(Mixing::Cutmix {
            lambda: 1.0 - pasted,
            y0,
            y1,
            x0,
            x1,
        })
    }

    /// The weight of the batch's own labels.
    pub fn lambda(&self) -> f64 {
        match *self {
            Mixing::Mixup { lambda } | Mixing::Cutmix { lambda, .. } => lambda,
        }
    }

    /// The mixed images `[N, 3, S, S]`.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let reversed = x.f_flip([0])?;
        Ok(match *self {
            Mixing::Mixup { lambda } => x
                .f_mul_scalar(lambda)?
                .f_add(&reversed.f_mul_scalar(1.0 - lambda)?)?,
            Mixing::Cutmix { y0, y1, x0, x1, .. } => {
                let out = x.f_detach_copy()?;
                let patch = reversed.f_slice(2, y0, y1, 1)?.f_slice(3, x0, x1, 1)?;
                out.f_slice(2, y0, y1, 1)?
                    .f_slice(3, x0, x1, 1)?
                    .f_copy_(&patch)?;
                out
            }
        })
    }
}

/// Trains `state` for one epoch over the training split. The losses and the count of correct
/// predictions stay on the device until the epoch ends (or a terminal's progress bar asks every
/// [`BAR_EVERY`] batches): no step waits for the device, except fp16's for the scaler's
/// inf/NaN check, as GradScaler's does.
pub fn train_epoch(
    state: &mut State,
    data: &RunData,
    epoch: u64,
    cfg: &TrainConfig,
    compute: Compute,
) -> Result<EpochStats> {
    let batches = data.train_loader.batches(&data.dataset.split.train, epoch);
    let total = batches.len();
    let bar = progress_bar(total as u64, epoch, cfg.epochs);
    let started = Instant::now();
    let mut losses: Vec<Tensor> = Vec::with_capacity(total);
    let mut sizes: Vec<usize> = Vec::with_capacity(total);
    let mut correct: Option<Tensor> = None;
    let mut lr = cfg.lr;
    let weights = data.class_weights.as_ref();
    for (b, batch) in batches.enumerate() {
        let batch = batch?;
        let mixing = Mixing::draw(cfg, epoch, b as u64, cfg.image_size);
        let images = match &mixing {
            Some(m) => m.apply(&batch.images)?,
            None => batch.images.shallow_clone(),
        };
        let x = compute.input(&images)?;
        let y = compute.to_device(&batch.labels)?;
        let y_rev = y.f_flip([0])?;
        lr = optim::learning_rate(cfg, epoch as f64 + b as f64 / total as f64);
        let (out, loss) = {
            let _autocast = compute.autocast();
            let out = state.model.forward_t(&x, true)?;
            let ce = |logits: &Tensor, y: &Tensor| {
                logits.f_cross_entropy_loss(y, weights, Reduction::Mean, -100, cfg.label_smoothing)
            };
            let mixed = |logits: &Tensor| -> Result<Tensor> {
                Ok(match &mixing {
                    None => ce(logits, &y)?,
                    Some(m) => ce(logits, &y)?
                        .f_mul_scalar(m.lambda())?
                        .f_add(&ce(logits, &y_rev)?.f_mul_scalar(1.0 - m.lambda())?)?,
                })
            };
            let mut loss = mixed(&out.logits)?;
            for aux in &out.aux_logits {
                loss = loss.f_add(&mixed(aux)?.f_mul_scalar(AUX_WEIGHT)?)?;
            }
            (out, loss)
        };
        backward_and_step(state, &loss, lr)?;
        losses.push(loss.f_detach()?.f_to_kind(Kind::Double)?);
        sizes.push(batch.indices.len());
        let dominant = match &mixing {
            Some(m) if m.lambda() < 0.5 => &y_rev,
            _ => &y,
        };
        let hits = out
            .logits
            .f_argmax(-1, false)?
            .f_eq_tensor(dominant)?
            .f_sum(Kind::Int64)?;
        correct = Some(match correct {
            None => hits,
            Some(c) => c.f_add(&hits)?,
        });
        if let Some(bar) = &bar {
            if b % BAR_EVERY == 0 || b + 1 == total {
                let (sum, seen) = finite_weighted(&read_values(&losses)?, &sizes);
                let rate = seen as f64 / started.elapsed().as_secs_f64();
                bar.set_message(format!("loss {:.4}  {rate:.1} img/s", sum / seen as f64));
            }
            bar.inc(1);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    // With several processes: each batch's loss is the mean of theirs, the counts their sums.
    let losses = stacked(&losses, compute.device)?;
    let correct = match correct {
        Some(c) => c,
        None => Tensor::f_zeros([], (Kind::Int64, compute.device))?,
    };
    let mut all = sizes.iter().sum::<usize>();
    let losses = match &state.group {
        None => losses,
        Some(g) => {
            g.all_reduce_sum(&[losses.shallow_clone(), correct.shallow_clone()])?;
            all *= g.size;
            losses.f_div_scalar(g.size as f64)?
        }
    };
    let values = Vec::<f64>::try_from(&losses.f_to_device(tch::Device::Cpu)?)?;
    if state.scaler.is_none() {
        if let Some(b) = values.iter().position(|v| !v.is_finite()) {
            bail!(
                "non-finite loss ({}) at epoch {}, batch {}: training stopped; best.pt (with \
                 validation) keeps the best epoch so far (try a lower --lr)",
                values[b],
                epoch + 1,
                b + 1
            );
        }
    }
    // With the loss scaler, a batch with a non-finite loss was a skipped step: left out.
    let (loss_sum, seen) = finite_weighted(&values, &sizes);
    let correct = correct.f_int64_value(&[])?;
    Ok(EpochStats {
        loss: loss_sum / seen.max(1) as f64,
        accuracy: correct as f64 / all.max(1) as f64,
        lr,
        images_per_s: all as f64 / started.elapsed().as_secs_f64(),
    })
}

/// Batches between two readings of the loss for a terminal's progress bar.
pub const BAR_EVERY: usize = 10;

/// The backward pass and the optimiser's update of one batch (and the weight average's): plain,
/// or through the loss scaler with fp16, whose skipped steps leave the weights, the optimiser
/// and the average as they were. Returns whether the weights were updated.
pub fn backward_and_step(state: &mut State, loss: &Tensor, lr: f64) -> Result<bool> {
    state.optimizer.zero_grad();
    let steps_before = state.optimizer.step;
    let params = state.optimizer.parameters();
    let group = state.group.clone();
    let backward = |loss: &Tensor| -> Result<()> {
        loss.f_backward()?;
        if let Some(g) = &group {
            g.average_gradients(&params)?;
        }
        Ok(())
    };
    let stepped = match &mut state.scaler {
        None => {
            backward(loss)?;
            state.optimizer.step(lr)?;
            true
        }
        Some(scaler) => {
            backward(&scaler.scale_loss(loss)?)?;
            let optimizer = &mut state.optimizer;
            let outcome = scaler.step(&params, || optimizer.step(lr))?;
            if scaler.scale() < MIN_SCALE {
                bail!(
                    "the fp16 loss scale fell to {:e}: the gradients are inf or NaN at every \
                     scale (try a lower --lr, or --precision bf16 or fp32)",
                    scaler.scale()
                );
            }
            outcome == StepOutcome::Stepped
        }
    };
    if stepped {
        if let Some(ema) = &mut state.ema {
            ema.update(&state.model, steps_before)?;
        }
    }
    Ok(stepped)
}

/// Below this loss scale (fp16's smallest subnormal, 2^-24) no scale can help.
const MIN_SCALE: f64 = 1.0 / (1u64 << 24) as f64;

/// The batches' losses as one `[batches]` tensor (empty without batches).
fn stacked(losses: &[Tensor], device: tch::Device) -> Result<Tensor> {
    Ok(match losses.is_empty() {
        true => Tensor::f_zeros([0], (Kind::Double, device))?,
        false => Tensor::f_stack(losses, 0)?,
    })
}

/// The losses of the batches so far, read from the device at once.
fn read_values(losses: &[Tensor]) -> Result<Vec<f64>> {
    let all = stacked(losses, tch::Device::Cpu)?.f_to_device(tch::Device::Cpu)?;
    Ok(Vec::<f64>::try_from(&all)?)
}

/// Σ loss × batch size over the finite losses, and the images they cover.
fn finite_weighted(values: &[f64], sizes: &[usize]) -> (f64, usize) {
    let (mut sum, mut seen) = (0.0, 0);
    for (v, n) in values.iter().zip(sizes) {
        if v.is_finite() {
            sum += v * *n as f64;
            seen += n;
        }
    }
    (sum, seen)
}

/// A progress bar on a terminal; `None` when stderr is not one (CI, pipes, files).
fn progress_bar(len: u64, epoch: u64, epochs: u64) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "epoch {prefix} [{bar:30}] {pos}/{len} batches  {msg}  ETA {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(format!("{}/{epochs}", epoch + 1));
    Some(bar)
}
