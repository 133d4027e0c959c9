//! `inception serve`: the model behind an HTTP API and a web page (axum on tokio), with dynamic
//! batching as TorchServe and Triton do it (src/serve/worker.rs). Images are decoded and
//! preprocessed on tokio's blocking threads by the same code as `predict` (src/data), so
//! answers are `predict --json`'s.
//!
//! Endpoints: `GET /` (the page, src/serve/page.html), `POST /v1/predict` (images as the raw
//! body or multipart, several files allowed; `?top_k=`), `POST /v1/explain` (one image; the
//! Grad-CAM overlay as PNG; `?class=&layer=&method=`), `GET /v1/model`, `GET /healthz`,
//! `GET /metrics` (Prometheus text, src/serve/metrics.rs). Bounded: a body over `max_body` gets
//! 413, one that has not arrived within `read_timeout` 408, what is not a whole image 400 with
//! the reason, a full queue 503 with `Retry-After`; every error is JSON `{"error": …}`.

mod metrics;
mod worker;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use self::metrics::{track, Metrics};
use self::worker::{Answer, Batching, Job, Work};
use crate::data::image::decode_bytes;
use crate::data::transform::EvalTransform;
use crate::ensemble::Ensemble;
use crate::explain::{self, Method};
use crate::precision::Compute;
use crate::predict::Prediction;

/// How the server batches and bounds its work.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_batch: usize,
    pub max_wait: Duration,
    /// Preprocessed images waiting for the network.
    pub max_queue: usize,
    pub max_body_bytes: usize,
    /// Longest a request body may take to arrive.
    pub read_timeout: Duration,
}

/// What the handlers share.
struct Shared {
    queue: SyncSender<Job>,
    transform: EvalTransform,
    model: ModelInfo,
    metrics: Arc<Metrics>,
    limits: Limits,
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
    /// The layers `/v1/explain?layer=` takes, and the one it takes by default.
    pub explain_layers: Vec<String>,
    pub explain_layer: String,
    /// Whether probabilities are calibrated, and how (`calibration`).
    pub calibrated: bool,
    pub calibration: String,
    /// Two classes: the screening threshold decisions are taken at.
    pub threshold: Option<f64>,
    /// Whether answers carry conformal prediction sets, and at which α.
    pub conformal_alpha: Option<f64>,
}

/// The router and the network's thread (which ends when the router is dropped).
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
        explain_layers: crate::model::tap_layers(meta.arch),
        explain_layer: meta.arch.default_tap_layer().into(),
        calibrated: ensemble.is_calibrated(),
        calibration: ensemble.calibration_note(),
        threshold: ensemble.threshold(),
        conformal_alpha: ensemble
            .trust
            .as_ref()
            .and_then(|t| t.conformal.as_ref())
            .map(|c| c.alpha),
    };
    let (queue, jobs) = sync_channel(limits.max_queue.max(1));
    let batching = Batching {
        max_batch: limits.max_batch,
        max_wait: limits.max_wait,
        size: meta.image_size,
    };
    let metrics = Arc::new(Metrics::new());
    let worker_metrics = Arc::clone(&metrics);
    std::thread::Builder::new()
        .name("network".into())
        .spawn(move || worker::run(ensemble, compute, jobs, batching, &worker_metrics))
        .context("starting the network's thread")?;
    let shared = Arc::new(Shared {
        queue,
        transform,
        model,
        metrics: Arc::clone(&metrics),
        limits,
    });
    Ok(Router::new()
        .route("/", get(|| async { Html(include_str!("page.html")) }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_text))
        .route("/v1/model", get(model_info))
        .route("/v1/predict", post(predict))
        .route("/v1/explain", post(explain))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "not a method this endpoint takes",
            )
        })
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .with_state(shared)
        .layer(from_fn_with_state(metrics, track)))
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

/// An error answer: the status and the reason, as JSON `{"error": …}`.
fn error(status: StatusCode, reason: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": reason.into() }))).into_response()
}

/// The uploaded files of a request, each with the name answers call it by: the raw body
/// (`upload`), or every file field of a `multipart/form-data` body (its file name). The whole
/// body must arrive within the read timeout and fit in the body limit.
async fn uploads(s: &Shared, req: Request) -> Result<Vec<(String, Bytes)>, Response> {
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    let read = async move {
        if !multipart {
            return match Bytes::from_request(req, &()).await {
                Ok(b) => Ok(vec![("upload".to_string(), b)]),
                Err(e) => Err(error(e.status(), e.body_text())),
            };
        }
        let mut form = Multipart::from_request(req, &())
            .await
            .map_err(|e| error(e.status(), e.body_text()))?;
        let mut files = vec![];
        loop {
            let field = match form.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(error(e.status(), e.body_text())),
            };
            let Some(name) = field.file_name().map(str::to_string) else {
                let field_name = field.name().unwrap_or("").to_string();
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("multipart field {field_name:?} is not a file"),
                ));
            };
            match field.bytes().await {
                Ok(b) => files.push((name, b)),
                Err(e) => return Err(error(e.status(), e.body_text())),
            }
        }
        if files.is_empty() {
            return Err(error(StatusCode::BAD_REQUEST, "the form holds no file"));
        }
        Ok(files)
    };
    match tokio::time::timeout(s.limits.read_timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                s.limits.read_timeout.as_secs_f64()
            ),
        )),
    }
}

/// Decodes and preprocesses each upload on a blocking thread: the normalised pixels and the
/// centre crop they were taken from. The first that is not a whole image fails the request.
async fn preprocess(
    s: &Shared,
    files: Vec<(String, Bytes)>,
) -> Result<Vec<(String, Vec<f32>, image::RgbImage)>, Response> {
    let transform = s.transform;
    let tasks: Vec<_> = files
        .into_iter()
        .map(|(name, bytes)| {
            tokio::task::spawn_blocking(move || {
                let img = decode_bytes(&bytes, Path::new(&name)).with_context(|| name.clone())?;
                let crop = transform.crop(&img);
                let n = transform.image_size as usize;
                let mut pixels = Vec::with_capacity(3 * n * n);
                transform.values_of_crop(&crop, &mut pixels);
                anyhow::Ok((name, pixels, crop))
            })
        })
        .collect();
    let mut out = vec![];
    for t in tasks {
        match t.await {
            Ok(Ok(x)) => out.push(x),
            Ok(Err(e)) => return Err(error(StatusCode::BAD_REQUEST, format!("{e:#}"))),
            Err(_) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, "decoding failed")),
        }
    }
    Ok(out)
}

/// Queues one image for the network.
#[allow(clippy::result_large_err)] // the error is the answer to send, built once per request
fn enqueue(
    s: &Shared,
    pixels: Vec<f32>,
    work: Work,
) -> Result<oneshot::Receiver<Result<Answer, String>>, Response> {
    let (reply, answer) = oneshot::channel();
    // Counted before it is sent, so that the worker's count of what it took never goes first.
    s.metrics.queued.fetch_add(1, Ordering::Relaxed);
    let sent = s.queue.try_send(Job {
        pixels,
        work,
        reply,
    });
    if sent.is_err() {
        s.metrics.queued.fetch_sub(1, Ordering::Relaxed);
    }
    match sent {
        Ok(()) => Ok(answer),
        Err(TrySendError::Full(_)) => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "the queue is full");
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Err(r)
        }
        Err(TrySendError::Disconnected(_)) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the network has stopped",
        )),
    }
}

/// The network's answer to a queued image.
async fn answer(rx: oneshot::Receiver<Result<Answer, String>>) -> Result<Answer, Response> {
    match rx.await {
        Ok(Ok(a)) => Ok(a),
        Ok(Err(e)) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e)),
        // The reply was dropped unanswered: the network's thread panicked on this batch.
        Err(_) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the network failed on this request",
        )),
    }
}

#[derive(Debug, Deserialize)]
struct PredictQuery {
    top_k: Option<usize>,
}

/// `POST /v1/predict`: one prediction per uploaded image, as `predict --json` writes them.
async fn predict(
    State(s): State<Arc<Shared>>,
    q: Result<Query<PredictQuery>, QueryRejection>,
    req: Request,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return error(e.status(), e.body_text()),
    };
    let k = q.top_k.unwrap_or(5).clamp(1, s.model.classes.len());
    let images = match uploads(&s, req).await {
        Ok(files) => match preprocess(&s, files).await {
            Ok(images) => images,
            Err(r) => return r,
        },
        Err(r) => return r,
    };
    // All of the request's images are queued before any answer is awaited, so that they can
    // share a batch.
    let mut waiting = vec![];
    for (name, pixels, _) in images {
        match enqueue(&s, pixels, Work::Predict) {
            Ok(rx) => waiting.push((name, rx)),
            Err(r) => return r,
        }
    }
    let mut predictions = vec![];
    for (name, rx) in waiting {
        match answer(rx).await {
            Ok(a) => predictions.push(Prediction::from_answer(
                name,
                &a.answer,
                &s.model.classes,
                k,
                s.model.calibrated,
                s.model.threshold,
            )),
            Err(r) => return r,
        }
    }
    Json(predictions).into_response()
}

#[derive(Debug, Deserialize)]
struct ExplainQuery {
    class: Option<String>,
    layer: Option<String>,
    method: Option<String>,
}

/// `POST /v1/explain`: the class activation map of one image over its centre crop, as PNG;
/// the class explained and its probability also in the headers `X-Class`, `X-Probability`.
async fn explain(
    State(s): State<Arc<Shared>>,
    q: Result<Query<ExplainQuery>, QueryRejection>,
    req: Request,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return error(e.status(), e.body_text()),
    };
    let class = match &q.class {
        None => None,
        Some(name) => match s.model.classes.iter().position(|c| c == name) {
            Some(i) => Some(i),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "class {name:?} is not a class of the model; its classes: {}",
                        s.model.classes.join(", ")
                    ),
                )
            }
        },
    };
    let layer = q
        .layer
        .clone()
        .unwrap_or_else(|| s.model.explain_layer.clone());
    if !s.model.explain_layers.contains(&layer) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "layer {layer:?} is not a layer of the network; valid: {}",
                s.model.explain_layers.join(", ")
            ),
        );
    }
    let method = match q.method.as_deref() {
        None => Method::GradCam,
        Some(m) => match <Method as clap::ValueEnum>::from_str(m, true) {
            Ok(m) => m,
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("method {m:?}: expected gradcam or gradcam++"),
                )
            }
        },
    };
    let mut images = match uploads(&s, req).await {
        Ok(files) if files.len() == 1 => match preprocess(&s, files).await {
            Ok(images) => images,
            Err(r) => return r,
        },
        Ok(files) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("explain takes one image, not {}", files.len()),
            )
        }
        Err(r) => return r,
    };
    let (_, pixels, crop) = images.remove(0);
    let work = Work::Explain {
        class,
        layer: layer.clone(),
        method,
    };
    let answer = match enqueue(&s, pixels, work) {
        Ok(rx) => match answer(rx).await {
            Ok(a) => a,
            Err(r) => return r,
        },
        Err(r) => return r,
    };
    let Some((class, map)) = answer.map else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "no map came back");
    };
    let name = s.model.classes[class].clone();
    let probability = answer.answer.probs[class];
    let title = explain::title(
        &name,
        probability,
        &explain::describe(method, &layer, s.model.members.len()),
    );
    let png = tokio::task::spawn_blocking(move || {
        crate::plot::png_bytes(&crate::plot::cam::render(&crop, &map, &title)?)
    })
    .await;
    match png {
        Ok(Ok(png)) => {
            let mut r = ([(header::CONTENT_TYPE, "image/png")], png).into_response();
            if let Ok(v) = HeaderValue::from_str(&name) {
                r.headers_mut().insert("x-class", v);
            }
            if let Ok(v) = HeaderValue::from_str(&format!("{probability}")) {
                r.headers_mut().insert("x-probability", v);
            }
            r
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "drawing failed"),
    }
}

/// Serves `router` on `listener` until `stop` resolves, then stops accepting and waits for the
/// connections' requests in flight. HTTP/1.1 with keep-alive; a connection whose request head
/// has not arrived within `header_timeout` is closed (hyper's header read timeout: a client
/// sending its headers slowly cannot hold a connection for ever).
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    router: Router,
    header_timeout: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // half_close: a client that shuts its side after sending still gets its answer.
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .half_close(true);
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: wait a little, as hyper's examples do.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that goes away mid-request is its own business.
            let _ = connection.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
