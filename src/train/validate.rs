//! Validation: the probabilities of every validation image in one deterministic pass, and the
//! metrics of [`crate::metrics`] over them.

use std::sync::Arc;

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::RunData;
use crate::data::folder::Sample;
use crate::data::loader::{
    default_threads, prepare, BadFile, Loader, Mode, Store, DEFAULT_CACHE_BYTES,
};
use crate::data::transform::EvalTransform;
use crate::metrics::{evaluate, Evaluation};
use crate::model::Model;
use crate::precision::Compute;

/// Probabilities of every image in `indices`, in order, with their labels; `probabilities`
/// turns a batch `[N, 3, S, S]` into `[N, classes]` f64 probabilities (one network, or an
/// ensemble).
pub fn predict_all(
    loader: &Loader,
    indices: &[usize],
    probabilities: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<(Vec<Vec<f64>>, Vec<usize>)> {
    let (mut probs, mut labels) = (vec![], vec![]);
    for batch in loader.batches(indices, 0) {
        let batch = batch?;
        let p = probabilities(&batch.images)?;
        probs.extend(Vec::<Vec<f64>>::try_from(p)?);
        labels.extend(batch.indices.iter().map(|&i| loader.samples[i].label));
    }
    Ok((probs, labels))
}

/// A model's predictions on the validation images and their metrics.
pub struct Validation {
    pub evaluation: Evaluation,
    pub probs: Vec<Vec<f64>>,
    pub labels: Vec<usize>,
}

/// `model` measured on the run's validation images; `None` when it has none.
pub fn validate(model: &Model, data: &RunData, compute: Compute) -> Result<Option<Validation>> {
    let val = &data.dataset.split.val;
    if val.is_empty() {
        return Ok(None);
    }
    let (probs, labels) = predict_all(&data.val_loader, val, |x| {
        compute.probabilities(model, x, Kind::Double)
    })?;
    Ok(Some(Validation {
        evaluation: evaluate(&data.dataset.classes, &probs, &labels),
        probs,
        labels,
    }))
}

/// Images decoded once for measuring, with the loader that batches them: what eval and cv's
/// summary measure checkpoints on.
pub struct EvalSet {
    pub loader: Loader,
    /// Sample indices that decoded, in order.
    pub good: Vec<usize>,
    /// Files that did not (only with `skip_bad`; otherwise they are an error).
    pub bad: Vec<BadFile>,
}

impl EvalSet {
    /// Decodes `samples` (on all cores) for inputs of `transform`'s size.
    pub fn prepare(
        samples: Vec<Sample>,
        transform: EvalTransform,
        batch_size: usize,
        skip_bad: bool,
    ) -> Result<EvalSet> {
        let size = transform.image_size;
        let p = prepare(
            &samples,
            size,
            DEFAULT_CACHE_BYTES,
            skip_bad,
            default_threads(),
        )?;
        if p.good.is_empty() {
            bail!("none of the {} images could be read", samples.len());
        }
        Ok(EvalSet {
            loader: eval_loader(p.store, Arc::new(samples), transform, batch_size),
            good: p.good,
            bad: p.bad,
        })
    }

    /// The probabilities of every readable image and their labels (see [`predict_all`]).
    pub fn predict(
        &self,
        probabilities: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<(Vec<Vec<f64>>, Vec<usize>)> {
        predict_all(&self.loader, &self.good, probabilities)
    }
}

/// A loader of deterministic evaluation batches over `store`'s images.
pub fn eval_loader(
    store: Arc<Store>,
    samples: Arc<Vec<Sample>>,
    transform: EvalTransform,
    batch_size: usize,
) -> Loader {
    Loader {
        store,
        samples,
        mode: Arc::new(Mode::Eval(transform)),
        batch_size,
        workers: default_threads(),
        prefetch: 2,
        seed: 0,
        drop_last: false,
        shard: None,
    }
}
