//! The network's thread: dynamic batching as TorchServe and Triton do it. One thread owns the
//! ensemble; it takes a job, gathers more until the batch holds `max_batch` images or
//! `max_wait` has passed since the first, runs the predictions as one batch and answers each.
//! Explanations (a forward and a backward pass each) run one by one after the batch.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::Result;
use tch::Tensor;
use tokio::sync::oneshot;

use super::metrics::Metrics;
use crate::ensemble::Ensemble;
use crate::explain::{ensemble_maps, Method};
use crate::metrics::argmax;
use crate::precision::Compute;

/// What one image needs from the network.
pub enum Work {
    /// Class probabilities.
    Predict,
    /// Probabilities and a class activation map of `class` (default: the most probable).
    Explain {
        class: Option<usize>,
        layer: String,
        method: Method,
    },
}

/// One preprocessed image waiting for the network, and where its answer goes.
pub struct Job {
    /// `[3 × S × S]`, normalised.
    pub pixels: Vec<f32>,
    pub work: Work,
    pub reply: oneshot::Sender<Result<Answer, String>>,
}

/// The network's answer for one image.
pub struct Answer {
    /// (Calibrated) probabilities, the decision at the threshold and the conformal set, as
    /// predict computes them.
    pub answer: crate::ensemble::Answer,
    /// For an explanation: the class explained and its map, `S × S` values in [0, 1].
    pub map: Option<(usize, Vec<f32>)>,
}

/// How the thread batches.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub max_batch: usize,
    pub max_wait: Duration,
    /// The image side `S`.
    pub size: i64,
}

/// Runs until every sender of `jobs` is gone.
pub fn run(
    ensemble: Ensemble,
    compute: Compute,
    jobs: Receiver<Job>,
    batching: Batching,
    metrics: &Metrics,
) {
    while let Ok(first) = jobs.recv() {
        let deadline = Instant::now() + batching.max_wait;
        let mut batch = vec![first];
        while batch.len() < batching.max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            match jobs.recv_timeout(left) {
                Ok(job) => batch.push(job),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        metrics
            .queued
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        metrics.batch_size.observe(batch.len() as f64);
        // A panic inside libtorch must not end the thread that every later request needs.
        let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            answer(&ensemble, compute, batch, batching.size)
        }));
        if answered.is_err() {
            eprintln!("error: the network panicked on a batch; its requests got 500");
        }
    }
}

/// Runs one batch's predictions together, then its explanations one by one, and answers each.
fn answer(ensemble: &Ensemble, compute: Compute, batch: Vec<Job>, size: i64) {
    let (explain, predict): (Vec<Job>, Vec<Job>) = batch
        .into_iter()
        .partition(|j| matches!(j.work, Work::Explain { .. }));
    if !predict.is_empty() {
        let answers = batch_of(&predict, size).and_then(|x| ensemble.answers(compute, &x));
        match answers {
            Ok(rows) => {
                for (job, answer) in predict.into_iter().zip(rows) {
                    let _ = job.reply.send(Ok(Answer { answer, map: None }));
                }
            }
            Err(e) => {
                for job in predict {
                    let _ = job.reply.send(Err(format!("{e:#}")));
                }
            }
        }
    }
    for job in explain {
        let answer = explanation(ensemble, compute, &job, size);
        let _ = job.reply.send(answer.map_err(|e| format!("{e:#}")));
    }
}

/// The jobs' images as one batch `[N, 3, S, S]` on the CPU.
fn batch_of(jobs: &[Job], size: i64) -> Result<Tensor> {
    let mut data = Vec::with_capacity(jobs.len() * jobs[0].pixels.len());
    for job in jobs {
        data.extend_from_slice(&job.pixels);
    }
    Ok(Tensor::f_from_slice(&data)?.f_view([jobs.len() as i64, 3, size, size])?)
}

fn explanation(ensemble: &Ensemble, compute: Compute, job: &Job, size: i64) -> Result<Answer> {
    let Work::Explain {
        class,
        layer,
        method,
    } = &job.work
    else {
        anyhow::bail!("not an explanation");
    };
    let x = batch_of(std::slice::from_ref(job), size)?;
    let answer = ensemble
        .answers(compute, &x)?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no answer for the image"))?;
    let class = class.unwrap_or_else(|| argmax(&answer.probs));
    let map = ensemble_maps(ensemble, compute, &x, &[class as i64], layer, *method)?;
    Ok(Answer {
        answer,
        map: Some((class, map)),
    })
}
