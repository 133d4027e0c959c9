//! `inception serve`: the flags checked, the model loaded, then the HTTP server until Ctrl-C
//! or SIGTERM (which stop new connections and let requests in flight finish).

use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cli::ServeArgs;
use crate::device::{self, DeviceChoice};
use crate::ensemble::Ensemble;
use crate::precision::Compute;
use crate::runs::given_or_latest;
use crate::serve::{app, serve_until, Limits};

pub fn run(a: &ServeArgs) -> Result<()> {
    for (flag, v) in [
        ("--max-batch", a.max_batch),
        ("--max-queue", a.max_queue),
        ("--max-body-mib", a.max_body_mib),
        ("--read-timeout-s", a.read_timeout_s as usize),
    ] {
        if v == 0 {
            bail!("{flag} must be at least 1");
        }
    }
    for (flag, v, max) in [
        ("--max-wait-ms", a.max_wait_ms, 60_000),
        ("--max-body-mib", a.max_body_mib as u64, 4096),
        ("--read-timeout-s", a.read_timeout_s, 86_400),
    ] {
        if v > max {
            bail!("{flag} {v}: at most {max}");
        }
    }
    let checkpoints = given_or_latest(&a.checkpoint)?;
    let choice: DeviceChoice = a.device.parse()?;
    let compute = Compute::new(choice.resolve()?, a.precision, true)?;
    let mut ensemble = Ensemble::load(&checkpoints, compute)?.with_threshold(a.threshold)?;
    if a.no_calibration {
        ensemble = ensemble.without_calibration();
    }
    eprintln!("probabilities: {}", ensemble.calibration_note());
    let limits = Limits {
        max_batch: a.max_batch,
        max_wait: Duration::from_millis(a.max_wait_ms),
        max_queue: a.max_queue,
        max_body_bytes: a.max_body_mib << 20,
        read_timeout: Duration::from_secs(a.read_timeout_s),
    };
    device::announce(choice, &compute);
    let members = ensemble.files().join(", ");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the server's runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port))
            .await
            .with_context(|| format!("listening on {}:{}", a.host, a.port))?;
        let addr = listener.local_addr()?;
        eprintln!("serving {members} on http://{addr} (a page at /, POST images to /v1/predict)");
        let router = app(ensemble, compute, limits)?;
        serve_until(listener, router, limits.read_timeout, shutdown()).await?;
        eprintln!("stopped");
        Ok(())
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
