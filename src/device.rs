//! `--device auto|cpu|cuda|cuda:N`: which device computes.

use anyhow::{bail, Result};
use tch::{Cuda, Device};

/// Resolves a `--device` value. `auto` takes the first CUDA device libtorch sees, else the CPU;
/// asking for a CUDA device that is not there is an error. Says nothing: [`announce`] tells the
/// user once the job's inputs are validated.
pub fn resolve(spec: &str) -> Result<Device> {
    let count = Cuda::device_count();
    let device = match spec.trim().to_ascii_lowercase().as_str() {
        "auto" => {
            return Ok(if count > 0 {
                Device::Cuda(0)
            } else {
                Device::Cpu
            })
        }
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Device::Cuda(i),
            _ => bail!("--device {spec:?}: expected auto, cpu, cuda or cuda:N"),
        },
    };
    if let Device::Cuda(i) = device {
        if i as i64 >= count {
            bail!(
                "--device {spec}: CUDA device {i} is not available (libtorch sees {count} CUDA \
                 device{})",
                if count == 1 { "" } else { "s" }
            );
        }
    }
    Ok(device)
}

/// `cpu` or `cuda:N`, the spelling `--device` takes.
pub fn describe(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Cpu => "cpu".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Prints on stderr where and how the job computes: `device: cpu (no CUDA device found)` (the
/// reason when `spec` was `auto`) and `compute: bf16, channels-last`. Called when the job
/// starts, after its inputs are checked, so that a usage error is the only thing printed.
pub fn announce(spec: &str, compute: &crate::precision::Compute) {
    let why = match (spec.trim().eq_ignore_ascii_case("auto"), compute.device) {
        (false, _) => String::new(),
        (true, Device::Cuda(_)) => " (first CUDA device)".into(),
        (true, _) => " (no CUDA device found)".into(),
    };
    eprintln!("device: {}{why}", describe(compute.device));
    eprintln!("compute: {compute} ({})", compute.why);
}
