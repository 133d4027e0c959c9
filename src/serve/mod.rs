//! `inception serve`: the model behind an HTTP API (axum on tokio), with dynamic batching as
//! TorchServe and Triton do it: one worker thread owns the network and gathers concurrent
//! requests into batches of up to `max_batch`, waiting at most `max_wait` for a batch to fill;
//! images are decoded and preprocessed on tokio's blocking threads by the same code as
//! `predict` (src/data), so answers are `predict --json`'s.
//!
//! Endpoints: `GET /healthz`, `GET /v1/model`, `POST /v1/predict` (the image as the raw body;
//! `?top_k=`), `GET /metrics` (Prometheus text). Bounded: bodies over `max_body` get 413, what
//! is not a whole image 400 with the reason, a full queue 503 with `Retry-After`; every error is
//! JSON `{"error": …}`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};
use tokio::sync::oneshot;

use crate::cmd::predict::Prediction;
use crate::data::image::decode_bytes;
use crate::data::transform::EvalTransform;
use crate::ensemble::Ensemble;
use crate::precision::Compute;

/// How the server batches and bounds its work.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_batch: usize,
    pub max_wait: Duration,
    /// Preprocessed images waiting for the network.
    pub max_queue: usize,
    pub max_body_bytes: usize,
}

/// One preprocessed image waiting for the network, and where its probabilities go.
struct Job {
    /// `[3 × S × S]`, normalised.
    pixels: Vec<f32>,
    reply: oneshot::Sender<Result<Vec<f32>, String>>,
}

/// What the handlers share.
struct Shared {
    queue: SyncSender<Job>,
    transform: EvalTransform,
    model: ModelInfo,
    metrics: Arc<Metrics>,
}

/// Upper bounds of the latency histogram's buckets, in seconds.
const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds of the batch-size histogram's buckets.
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// A Prometheus histogram: cumulative counts per bucket, the sum and the count.
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum in millionths (an integer, for atomics).
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn observe(&self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if v <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add((v * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            out.push_str(&format!(
                "{name}_bucket{{le=\"{b}\"}} {}\n",
                c.load(Ordering::Relaxed)
            ));
        }
        let count = self.count.load(Ordering::Relaxed);
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {count}\n"));
        out.push_str(&format!(
            "{name}_sum {}\n{name}_count {count}\n",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        ));
    }
}

/// What `GET /metrics` reports.
struct Metrics {
    /// Requests by (route, status code).
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Histogram,
    batch_size: Histogram,
    /// Images waiting for the network.
    queued: AtomicU64,
}

impl Metrics {
    fn new() -> Metrics {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            latency: Histogram::new(&LATENCY_BUCKETS),
            batch_size: Histogram::new(&BATCH_BUCKETS),
            queued: AtomicU64::new(0),
        }
    }

    fn render(&self) -> String {
        let mut out = String::from(
            "# HELP inception_requests_total HTTP requests by route and status code.\n\
             # TYPE inception_requests_total counter\n",
        );
        if let Ok(r) = self.requests.lock() {
            for ((route, status), n) in r.iter() {
                out.push_str(&format!(
                    "inception_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}\n"
                ));
            }
        }
        self.latency.render(
            "inception_request_seconds",
            "Time from a request's arrival to its answer.",
            &mut out,
        );
        self.batch_size.render(
            "inception_batch_size",
            "Images per batch through the network.",
            &mut out,
        );
        out.push_str(&format!(
            "# HELP inception_queue_depth Images waiting for the network.\n\
             # TYPE inception_queue_depth gauge\ninception_queue_depth {}\n",
            self.queued.load(Ordering::Relaxed)
        ));
        out
    }
}

/// Counts every request by route and status, and times it.
async fn track(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let route = match req.uri().path() {
        "/healthz" => "/healthz",
        "/metrics" => "/metrics",
        "/v1/model" => "/v1/model",
        "/v1/predict" => "/v1/predict",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(req).await;
    if let Ok(mut r) = s.metrics.requests.lock() {
        *r.entry((route, response.status().as_u16())).or_default() += 1;
    }
    s.metrics.latency.observe(started.elapsed().as_secs_f64());
    response
}

/// `GET /v1/model`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub classes: Vec<String>,
    pub arch: String,
    pub image_size: i64,
    pub mean: [f64; 3],
    pub std: [f64; 3],
    /// The checkpoint files (several: an ensemble whose probabilities are averaged).
    pub members: Vec<String>,
    pub device: String,
    pub precision: String,
    pub max_batch: usize,
}

/// The router and the network's worker thread (which ends when the router is dropped).
pub fn app(ensemble: Ensemble, compute: Compute, limits: Limits) -> Result<Router> {
    let meta = ensemble.meta().clone();
    let transform = EvalTransform {
        image_size: meta.image_size as u32,
        normalization: meta.normalization,
    };
    let model = ModelInfo {
        classes: meta.classes.clone(),
        arch: meta.arch.to_string(),
        image_size: meta.image_size,
        mean: meta.normalization.mean,
        std: meta.normalization.std,
        members: ensemble.files(),
        device: crate::device::describe(compute.device),
        precision: compute.precision.to_string(),
        max_batch: limits.max_batch,
    };
    let (queue, jobs) = sync_channel(limits.max_queue.max(1));
    let size = meta.image_size;
    let metrics = Arc::new(Metrics::new());
    let worker_metrics = Arc::clone(&metrics);
    std::thread::Builder::new()
        .name("network".into())
        .spawn(move || worker(ensemble, compute, jobs, limits, size, &worker_metrics))
        .context("starting the network's thread")?;
    let shared = Arc::new(Shared {
        queue,
        transform,
        model,
        metrics,
    });
    Ok(Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_text))
        .route("/v1/model", get(model_info))
        .route("/v1/predict", post(predict))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(from_fn_with_state(Arc::clone(&shared), track))
        .with_state(shared))
}

async fn model_info(State(s): State<Arc<Shared>>) -> Json<ModelInfo> {
    Json(s.model.clone())
}

async fn metrics_text(State(s): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct PredictQuery {
    top_k: Option<usize>,
}

/// An error answer: the status and the reason, as JSON `{"error": …}`.
fn error(status: StatusCode, reason: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": reason.into() }))).into_response()
}

async fn predict(
    State(s): State<Arc<Shared>>,
    Query(q): Query<PredictQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), e.body_text()),
    };
    let k = q.top_k.unwrap_or(5).clamp(1, s.model.classes.len());
    let transform = s.transform;
    let pixels = tokio::task::spawn_blocking(move || -> Result<Vec<f32>> {
        let img = decode_bytes(&body, Path::new("upload"))?;
        let n = transform.image_size as usize;
        let mut data = Vec::with_capacity(3 * n * n);
        transform.apply_into(&img, &mut data);
        Ok(data)
    })
    .await;
    let pixels = match pixels {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("{e:#}")),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "decoding failed"),
    };
    let (reply, answer) = oneshot::channel();
    match s.queue.try_send(Job { pixels, reply }) {
        Ok(()) => {
            s.metrics.queued.fetch_add(1, Ordering::Relaxed);
        }
        Err(TrySendError::Full(_)) => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "the queue is full");
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return r;
        }
        Err(TrySendError::Disconnected(_)) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "the network has stopped")
        }
    }
    let probs = match answer.await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "the network has stopped"),
    };
    let prediction = Prediction::from_probabilities("upload".into(), &probs, &s.model.classes, k);
    Json(vec![prediction]).into_response()
}

/// The network's thread: takes a job, gathers more until the batch is full or `max_wait` has
/// passed since the first, runs them as one batch, answers each.
fn worker(
    ensemble: Ensemble,
    compute: Compute,
    jobs: Receiver<Job>,
    limits: Limits,
    size: i64,
    metrics: &Metrics,
) {
    while let Ok(first) = jobs.recv() {
        let deadline = Instant::now() + limits.max_wait;
        let mut batch = vec![first];
        while batch.len() < limits.max_batch {
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
        let result = run_batch(&ensemble, compute, &batch, size);
        match result {
            Ok(rows) => {
                for (job, row) in batch.into_iter().zip(rows) {
                    let _ = job.reply.send(Ok(row));
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.reply.send(Err(format!("{e:#}")));
                }
            }
        }
    }
}

fn run_batch(
    ensemble: &Ensemble,
    compute: Compute,
    batch: &[Job],
    size: i64,
) -> Result<Vec<Vec<f32>>> {
    let mut data = Vec::with_capacity(batch.len() * batch[0].pixels.len());
    for job in batch {
        data.extend_from_slice(&job.pixels);
    }
    let images = Tensor::f_from_slice(&data)?.f_view([batch.len() as i64, 3, size, size])?;
    let probs = ensemble.probabilities(compute, &images, Kind::Float)?;
    Ok(Vec::<Vec<f32>>::try_from(&probs)?)
}
