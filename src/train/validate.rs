//! Validation: the probabilities of every validation image in one deterministic pass, and the
//! metrics of [`crate::metrics`] over them.

use std::sync::Arc;

use anyhow::Result;
use tch::{Kind, Tensor};

use super::RunData;
use crate::data::folder::Sample;
use crate::data::loader::{default_threads, Loader, Mode, Store};
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

/// `model` measured on the run's validation images; `None` when it has none.
pub fn validate(model: &Model, data: &RunData, compute: Compute) -> Result<Option<Evaluation>> {
    let val = &data.dataset.split.val;
    if val.is_empty() {
        return Ok(None);
    }
    let (probs, labels) = predict_all(&data.val_loader, val, |x| {
        compute.probabilities(model, x, Kind::Double)
    })?;
    Ok(Some(evaluate(&data.dataset.classes, &probs, &labels)))
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
    }
}
