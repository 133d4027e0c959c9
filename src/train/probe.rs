//! The fitted linear probe: before fine-tuning, the class layer is set to the multinomial
//! logistic regression of the frozen backbone's features of the training images, as the "LP"
//! of LP-FT (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and Underperform
//! Out-of-Distribution"): the backbone's first gradients then come from a head that already
//! fits the data rather than from a random one.
//!
//! The objective is scikit-learn's `LogisticRegression(C=c)` (multinomial, lbfgs) with sample
//! weights: minimise Σᵢ sᵢ·(−log softmax(W xᵢ + b)[yᵢ]) + ‖W‖²/(2C) over W `[K, D]` and b `[K]`,
//! b unpenalised, sᵢ the weight of image i's class (the run's `class_weights`; 1 without). It is
//! strictly convex in W. Solved in f64 by L-BFGS (Nocedal & Wright 2006, algorithms 7.4–7.5:
//! memory 10, a backtracking Armijo line search that tolerates the objective's rounding) until
//! the gradient's largest entry is below 1e-10 × the images' total weight. It starts from zero,
//! which keeps Σₖ bₖ = 0 and Σₖ Wₖ = 0 (the loss does not change when every row moves alike, so
//! its gradient never moves them so, and the penalty's pulls them back to a zero sum).

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use super::RunData;
use crate::model::Model;
use crate::precision::Compute;

/// L-BFGS's memory: the number of past steps that shape the next direction.
const MEMORY: usize = 10;
/// At most this many L-BFGS iterations.
const MAX_ITERATIONS: usize = 10_000;

/// A fitted multinomial logistic regression.
#[derive(Debug)]
pub struct Fit {
    /// `[K, D]`, f64.
    pub weight: Tensor,
    /// `[K]`, f64.
    pub bias: Tensor,
    /// The objective at the solution.
    pub objective: f64,
    /// The largest entry of the gradient at the solution.
    pub grad_max: f64,
    pub iterations: usize,
    /// Whether `grad_max` fell below the tolerance (1e-10 × the images' total weight); when
    /// not, the fit is the best L-BFGS reached (no step lowered the objective, or the
    /// iterations ran out).
    pub converged: bool,
}

/// The objective and its gradient at `theta` = (W flattened row-major, b).
struct Problem<'a> {
    x: &'a Tensor,
    onehot: Tensor,
    weights: Tensor,
    c: f64,
    k: i64,
    d: i64,
}

impl Problem<'_> {
    fn eval(&self, theta: &Tensor) -> Result<(f64, Tensor)> {
        let w = theta
            .f_narrow(0, 0, self.k * self.d)?
            .f_view([self.k, self.d])?;
        let b = theta.f_narrow(0, self.k * self.d, self.k)?;
        let z = self.x.f_matmul(&w.f_tr()?)?.f_add(&b)?; // [N, K]
        let logp = z.f_log_softmax(-1, Kind::Double)?;
        let nll = logp
            .f_mul(&self.onehot)?
            .f_sum_dim_intlist(&[1i64][..], false, Kind::Double)?
            .f_neg()?; // [N]
        let f = nll
            .f_mul(&self.weights)?
            .f_sum(Kind::Double)?
            .double_value(&[])
            + w.f_square()?.f_sum(Kind::Double)?.double_value(&[]) / (2.0 * self.c);
        let dz = logp
            .f_exp()?
            .f_sub(&self.onehot)?
            .f_mul(&self.weights.f_unsqueeze(1)?)?; // [N, K]
        let dw = dz
            .f_tr()?
            .f_matmul(self.x)?
            .f_add(&w.f_div_scalar(self.c)?)?; // [K, D]
        let db = dz.f_sum_dim_intlist(&[0i64][..], false, Kind::Double)?; // [K]
        Ok((f, Tensor::f_cat(&[dw.f_flatten(0, -1)?, db], 0)?))
    }
}

fn dot(a: &Tensor, b: &Tensor) -> Result<f64> {
    Ok(a.f_dot(b)?.double_value(&[]))
}

fn abs_max(t: &Tensor) -> Result<f64> {
    Ok(t.f_abs()?.f_max()?.double_value(&[]))
}

/// Fits `features` `[N, D]` (f64) to `labels` in `0..classes` with per-image weights
/// `weights` and penalty ‖W‖²/(2C): see the module's objective.
pub fn logistic_regression(
    features: &Tensor,
    labels: &[i64],
    weights: &[f64],
    classes: i64,
    c: f64,
) -> Result<Fit> {
    let size = features.size();
    let [n, d] = size[..] else {
        bail!("features: expected shape [N, D], got {size:?}");
    };
    if labels.len() as i64 != n || weights.len() as i64 != n {
        bail!(
            "{n} feature rows, {} labels and {} weights: expected one each",
            labels.len(),
            weights.len()
        );
    }
    if let Some(bad) = labels.iter().find(|&&y| !(0..classes).contains(&y)) {
        bail!("label {bad} is not a class in 0..{classes}");
    }
    if !(c.is_finite() && c > 0.0) {
        bail!("C must be a positive number, got {c}");
    }
    if let Some(w) = weights.iter().find(|w| !(w.is_finite() && **w > 0.0)) {
        bail!("image weights must be positive numbers, got {w}");
    }
    let x = features
        .f_to_kind(Kind::Double)?
        .f_to_device(tch::Device::Cpu)?;
    let problem = Problem {
        x: &x,
        onehot: Tensor::f_from_slice(labels)?
            .f_one_hot(classes)?
            .f_to_kind(Kind::Double)?,
        weights: Tensor::f_from_slice(weights)?,
        c,
        k: classes,
        d,
    };
    let mut theta = Tensor::f_zeros([classes * d + classes], (Kind::Double, tch::Device::Cpu))?;
    let (mut f, mut g) = problem.eval(&theta)?;
    // The loss sums over images: the tolerance scales with their total weight.
    let tol = 1e-10 * weights.iter().sum::<f64>().max(1.0);
    let mut memory: std::collections::VecDeque<(Tensor, Tensor, f64)> = Default::default();
    let noise = 1e-13 * f.abs().max(1.0);
    let mut iterations = 0;
    while iterations < MAX_ITERATIONS && abs_max(&g)? > tol {
        iterations += 1;
        // Two-loop recursion: r ≈ H⁻¹ g.
        let mut q = g.copy();
        let mut alphas = Vec::with_capacity(memory.len());
        for (s, y, rho) in memory.iter().rev() {
            let a = rho * dot(s, &q)?;
            q = q.f_sub(&y.f_mul_scalar(a)?)?;
            alphas.push(a);
        }
        let gamma = match memory.back() {
            Some((s, y, _)) => dot(s, y)? / dot(y, y)?,
            None => 1.0 / abs_max(&g)?.max(1.0),
        };
        let mut r = q.f_mul_scalar(gamma)?;
        for ((s, y, rho), a) in memory.iter().zip(alphas.iter().rev()) {
            let beta = rho * dot(y, &r)?;
            r = r.f_add(&s.f_mul_scalar(a - beta)?)?;
        }
        let mut direction = r.f_neg()?;
        let mut slope = dot(&g, &direction)?;
        // Not a descent direction (or NaN): start again from the gradient.
        if !matches!(slope.partial_cmp(&0.0), Some(std::cmp::Ordering::Less)) {
            memory.clear();
            direction = g.f_neg()?;
            slope = -dot(&g, &g)?;
        }
        let mut step = 1.0;
        let mut accepted = None;
        for _ in 0..60 {
            let candidate = theta.f_add(&direction.f_mul_scalar(step)?)?;
            let (f_new, g_new) = problem.eval(&candidate)?;
            // Armijo's sufficient decrease, give or take the objective's rounding: near the
            // minimum the decrease is below what f64 resolves in a sum over the images, and the
            // gradient, not the objective, still says how far the minimum is.
            if f_new.is_finite() && f_new <= f + 1e-4 * step * slope + noise {
                accepted = Some((candidate, f_new, g_new));
                break;
            }
            step *= 0.5;
        }
        // No step lowers the objective: as close to the minimum as f64 can tell.
        let Some((next, f_new, g_new)) = accepted else {
            break;
        };
        let s = next.f_sub(&theta)?;
        let y = g_new.f_sub(&g)?;
        let sy = dot(&s, &y)?;
        if sy > 1e-12 * dot(&y, &y)?.max(f64::MIN_POSITIVE) {
            if memory.len() == MEMORY {
                memory.pop_front();
            }
            memory.push_back((s, y, 1.0 / sy));
        }
        (theta, f, g) = (next, f_new, g_new);
    }
    let grad_max = abs_max(&g)?;
    Ok(Fit {
        weight: theta.f_narrow(0, 0, classes * d)?.f_view([classes, d])?,
        bias: theta.f_narrow(0, classes * d, classes)?,
        objective: f,
        grad_max,
        iterations,
        converged: grad_max <= tol,
    })
}

/// What fitting the probe did, for the run's first line and, in a run of no epochs, its
/// epoch-0 record.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// The line the run prints.
    pub line: String,
    /// Loss: the mean cross-entropy on the training images' features, weighted by class as
    /// fitted (the penalty left out); accuracy on them; learning rate 0; training images (not
    /// views) per second, features included.
    pub stats: super::epoch::EpochStats,
}

/// Sets `model`'s class layer to the fit on the features of the run's training images (as
/// validation preprocesses them: no augmentation; also in `flips`' views, each weighing
/// 1/views) and says how it fits them.
pub fn fit_head(
    model: &mut Model,
    data: &RunData,
    compute: Compute,
    c: f64,
    flips: crate::model::Flips,
) -> Result<ProbeReport> {
    let started = std::time::Instant::now();
    let arch = model.config.arch;
    let layer = arch
        .class_layer()
        .with_context(|| format!("arch {arch} has no single class layer to fit"))?;
    let train = &data.dataset.split.train;
    let views = flips.views();
    let (mut rows, mut labels) = (vec![], vec![]);
    for batch in data.val_loader.batches(train, 0) {
        let batch = batch?;
        for dims in &views {
            let x = match dims.is_empty() {
                true => batch.images.shallow_clone(),
                false => batch.images.f_flip(dims.as_slice())?,
            };
            rows.push(compute.features(model, &x)?);
            labels.extend(
                batch
                    .indices
                    .iter()
                    .map(|&i| data.val_loader.samples[i].label as i64),
            );
        }
    }
    if rows.is_empty() {
        bail!("the linear probe needs training images: the split left none");
    }
    let features = Tensor::f_cat(&rows, 0)?;
    let class_weights: Vec<f64> = match &data.class_weights {
        Some(w) => Vec::<f64>::try_from(w.f_to_kind(Kind::Double)?.f_to_device(tch::Device::Cpu)?)?,
        None => vec![1.0; data.dataset.classes.len()],
    };
    let share = 1.0 / views.len() as f64;
    let weights: Vec<f64> = labels
        .iter()
        .map(|&y| class_weights[y as usize] * share)
        .collect();
    let classes = model.config.num_classes;
    let fit = logistic_regression(&features, &labels, &weights, classes, c)?;
    {
        let _no_grad = tch::no_grad_guard();
        let vars = model.vs.variables();
        for (name, value) in [("weight", &fit.weight), ("bias", &fit.bias)] {
            let key = format!("{layer}.{name}");
            let mut var = vars
                .get(&key)
                .with_context(|| format!("the model has no {key}"))?
                .shallow_clone();
            if var.size() != value.size() {
                bail!(
                    "{key}: expected shape {:?}, got {:?}",
                    var.size(),
                    value.size()
                );
            }
            var.f_copy_(&value.f_to_kind(var.kind())?.f_to_device(var.device())?)?;
        }
    }
    let logits = features.f_matmul(&fit.weight.f_tr()?)?.f_add(&fit.bias)?;
    let y = Tensor::f_from_slice(&labels)?;
    let w = Tensor::f_from_slice(&weights)?;
    let nll = logits
        .f_log_softmax(-1, Kind::Double)?
        .f_gather(1, &y.f_unsqueeze(1)?, false)?
        .f_squeeze_dim(1)?
        .f_neg()?;
    let loss = nll.f_mul(&w)?.f_sum(Kind::Double)?.double_value(&[]) / weights.iter().sum::<f64>();
    let predicted = logits.f_argmax(-1, false)?;
    let right = predicted
        .f_eq_tensor(&y)?
        .f_sum(Kind::Int64)?
        .int64_value(&[]);
    let accuracy = right as f64 / labels.len() as f64;
    let line = format!(
        "linear probe: {layer} fitted on the features of {} training images{} ({} each), C = \
         {c}: training accuracy {:.3} (L-BFGS, {} iterations, largest gradient {:.1e}{})",
        labels.len() / views.len(),
        match views.len() {
            1 => String::new(),
            n => format!(" in {n} views"),
        },
        features.size()[1],
        accuracy,
        fit.iterations,
        fit.grad_max,
        match fit.converged {
            true => "",
            false => ": not converged, the best L-BFGS reached",
        }
    );
    Ok(ProbeReport {
        line,
        stats: super::epoch::EpochStats {
            loss,
            accuracy,
            lr: 0.0,
            images_per_s: (labels.len() / views.len()) as f64 / started.elapsed().as_secs_f64(),
        },
    })
}
