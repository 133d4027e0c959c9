//! `--device auto|cpu|cuda|cuda:N`: which device computes.

use anyhow::{bail, Result};
use tch::{Cuda, Device};

/// Resolves a `--device` value. `auto` takes the first CUDA device libtorch sees, else the CPU,
/// and says on stderr which it took; asking for a CUDA device that is not there is an error.
pub fn resolve(spec: &str) -> Result<Device> {
    let count = Cuda::device_count();
    let device = match spec.trim().to_ascii_lowercase().as_str() {
        "auto" => {
            let device = if count > 0 {
                Device::Cuda(0)
            } else {
                Device::Cpu
            };
            let why = if count > 0 {
                "first CUDA device"
            } else {
                "no CUDA device found"
            };
            eprintln!("device: {} ({why})", describe(device));
            return Ok(device);
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
