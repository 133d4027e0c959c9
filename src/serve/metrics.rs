//! What `GET /metrics` reports, as Prometheus text (exposition format 0.0.4): requests by
//! route and status, a latency histogram, a batch-size histogram and the queue depth.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// Upper bounds of the latency histogram's buckets, in seconds.
const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds of the batch-size histogram's buckets.
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// A Prometheus histogram: cumulative counts per bucket, the sum and the count.
pub struct Histogram {
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

    pub fn observe(&self, v: f64) {
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
pub struct Metrics {
    /// Requests by (route, status code).
    pub requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    pub latency: Histogram,
    pub batch_size: Histogram,
    /// Images waiting for the network.
    pub queued: AtomicU64,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            latency: Histogram::new(&LATENCY_BUCKETS),
            batch_size: Histogram::new(&BATCH_BUCKETS),
            queued: AtomicU64::new(0),
        }
    }

    pub fn render(&self) -> String {
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

/// The routes counted by name; any other path counts as `other`.
const ROUTES: [&str; 6] = [
    "/",
    "/healthz",
    "/metrics",
    "/v1/model",
    "/v1/predict",
    "/v1/explain",
];

/// Middleware: counts every request by route and status, and times it.
pub async fn track(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let route = ROUTES
        .iter()
        .find(|r| **r == path)
        .copied()
        .unwrap_or("other");
    let started = Instant::now();
    let response = next.run(req).await;
    if let Ok(mut r) = m.requests.lock() {
        *r.entry((route, response.status().as_u16())).or_default() += 1;
    }
    m.latency.observe(started.elapsed().as_secs_f64());
    response
}
