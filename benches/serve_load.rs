//! `inception serve` under load on loopback, against `eval` and `predict` over the same images
//! on the same machine: 1, 8 and 32 clients, each on one keep-alive connection, POST MSLD
//! photos one after another for a fixed time; requests/s, p50/p95/p99 latency and the mean
//! batch the server formed (from its /metrics). The goal (issue 12): at 32 clients, images/s at
//! least 0.8× eval's batched images/s.
//!
//! Run: `cargo bench --bench serve_load`. The network is GoogLeNet at 224 px with random
//! weights (speed does not depend on them), on the CPU in the default precision. Environment:
//! BENCH_SECONDS (20) per client count, BENCH_IMAGES (64) photos from data/monkeypox.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use inception::checkpoint::{self, Meta};
use inception::data::transform::Normalization;
use inception::model::{Arch, Model, NetConfig};

const BIN: &str = env!("CARGO_BIN_EXE_inception");

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One POST on a keep-alive connection; the status.
fn post(conn: &mut BufReader<TcpStream>, path: &str, body: &[u8]) -> Result<u16> {
    write!(
        conn.get_mut(),
        "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    conn.get_mut().write_all(body)?;
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {line:?}"))?;
    let mut length = 0;
    loop {
        line.clear();
        conn.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse()?;
        }
    }
    let mut answer = vec![0; length];
    conn.read_exact(&mut answer)?;
    Ok(status)
}

/// `inception_batch_size_sum` and `_count` from the server's /metrics.
fn batch_totals(addr: &str) -> Result<(f64, f64)> {
    let mut s = TcpStream::connect(addr)?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let value = |name: &str| -> Result<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().parse::<f64>()))
            .with_context(|| format!("{name} not in /metrics"))?
            .map_err(Into::into)
    };
    Ok((
        value("inception_batch_size_sum ")?,
        value("inception_batch_size_count ")?,
    ))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The first `n` photos of MSLD (both classes in turn), copied into `dir/CLASS/`.
fn photos(dir: &Path, n: usize) -> Result<Vec<PathBuf>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/monkeypox");
    let mut lists = vec![];
    for class in ["Monkey Pox", "Others"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(class))
            .with_context(|| format!("reading {}", root.join(class).display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        std::fs::create_dir_all(dir.join(class))?;
        lists.push((class, files));
    }
    let mut out = vec![];
    for i in 0..n {
        let (class, files) = &lists[i % 2];
        let src = &files[i / 2 % files.len()];
        let dst = dir.join(class).join(format!(
            "{i}-{}",
            src.file_name().unwrap_or_default().to_string_lossy()
        ));
        std::fs::copy(src, &dst).with_context(|| format!("copying {}", src.display()))?;
        out.push(dst);
    }
    Ok(out)
}

fn main() -> Result<()> {
    let seconds = env("BENCH_SECONDS", 20) as u64;
    let n_images = env("BENCH_IMAGES", 64);
    let tmp = tempfile::tempdir()?;
    let ckpt = tmp.path().join("googlenet.pt");
    let config = NetConfig::new(Arch::Googlenet, 2);
    let model = Model::new(config, tch::Device::Cpu)?;
    let meta = Meta::new(
        config,
        vec!["Monkey Pox".into(), "Others".into()],
        224,
        Normalization::IMAGENET,
        "random weights (benches/serve_load.rs)".into(),
    );
    checkpoint::save(&ckpt, &model, &meta)?;
    let data = tmp.path().join("data");
    let files = photos(&data, n_images)?;
    let bodies: Vec<Vec<u8>> = files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let ckpt_s = ckpt.to_string_lossy().into_owned();

    // eval: batched, with its reader threads; its own images/s.
    let o = Command::new(BIN)
        .args([
            "eval",
            "--device",
            "cpu",
            "--json",
            "--checkpoint",
            &ckpt_s,
            "--data",
        ])
        .arg(&data)
        .output()?;
    if !o.status.success() {
        bail!("eval failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    let report: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let eval_rate = report["images_per_s"]
        .as_f64()
        .context("no images_per_s in eval --json")?;
    // predict: the whole command over the same files (model loading included).
    let started = Instant::now();
    let o = Command::new(BIN)
        .args([
            "predict",
            "--device",
            "cpu",
            "--json",
            "--checkpoint",
            &ckpt_s,
        ])
        .args(&files)
        .output()?;
    if !o.status.success() {
        bail!("predict failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    let predict_rate = files.len() as f64 / started.elapsed().as_secs_f64();

    let mut server = Command::new(BIN)
        .args([
            "serve",
            "--port",
            "0",
            "--device",
            "cpu",
            "--checkpoint",
            &ckpt_s,
        ])
        .stderr(Stdio::piped())
        .spawn()?;
    let mut log = BufReader::new(server.stderr.take().context("no stderr")?);
    let addr = loop {
        let mut line = String::new();
        if log.read_line(&mut line)? == 0 {
            bail!("serve ended before listening");
        }
        if let Some(rest) = line.split("on http://").nth(1) {
            break rest.split_whitespace().next().unwrap_or("").to_string();
        }
    };
    // Warm-up: the first batches allocate.
    let mut conn = BufReader::new(TcpStream::connect(&addr)?);
    for body in bodies.iter().take(8) {
        post(&mut conn, "/v1/predict", body)?;
    }

    println!(
        "eval {eval_rate:.1} images/s, predict (whole command, {} images) {predict_rate:.1} images/s",
        files.len()
    );
    println!("| clients | images/s | × eval | p50 ms | p95 ms | p99 ms | mean batch | errors |");
    println!("|---|---|---|---|---|---|---|---|");
    for clients in [1usize, 8, 32] {
        let (sum0, count0) = batch_totals(&addr)?;
        let until = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let results: Vec<Result<(Vec<f64>, usize)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..clients)
                .map(|c| {
                    let (addr, bodies) = (&addr, &bodies);
                    s.spawn(move || -> Result<(Vec<f64>, usize)> {
                        let mut conn = BufReader::new(TcpStream::connect(addr)?);
                        let (mut latencies, mut errors) = (vec![], 0);
                        let mut i = c;
                        while Instant::now() < until {
                            let t = Instant::now();
                            let status = post(&mut conn, "/v1/predict", &bodies[i % bodies.len()])?;
                            if status == 200 {
                                latencies.push(t.elapsed().as_secs_f64() * 1e3);
                            } else {
                                errors += 1;
                            }
                            i += clients;
                        }
                        Ok((latencies, errors))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a client panicked")))
                })
                .collect()
        });
        let elapsed = started.elapsed().as_secs_f64();
        let (mut latencies, mut errors) = (vec![], 0);
        for r in results {
            let (l, e) = r?;
            latencies.extend(l);
            errors += e;
        }
        latencies.sort_by(f64::total_cmp);
        if latencies.is_empty() {
            bail!("no request succeeded with {clients} clients");
        }
        let (sum1, count1) = batch_totals(&addr)?;
        let rate = latencies.len() as f64 / elapsed;
        println!(
            "| {clients} | {rate:.1} | {:.2} | {:.0} | {:.0} | {:.0} | {:.1} | {errors} |",
            rate / eval_rate,
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.95),
            percentile(&latencies, 0.99),
            (sum1 - sum0) / (count1 - count0).max(1.0),
        );
    }
    let _ = server.kill();
    let _ = server.wait();
    Ok(())
}
