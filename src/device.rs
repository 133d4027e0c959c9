//! `--device auto|cpu|cuda|cuda:N`: which device computes.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Cuda, Device};

/// Which device a job asks for: `auto`, `cpu`, `cuda` (the first CUDA device) or `cuda:N`,
/// spelled so in flags and config files (any case; written back lower-case, `cuda` as
/// `cuda:0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    /// The first CUDA device libtorch sees, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = anyhow::Error;

    fn from_str(spec: &str) -> Result<DeviceChoice> {
        Ok(match spec.trim().to_ascii_lowercase().as_str() {
            "auto" => DeviceChoice::Auto,
            "cpu" => DeviceChoice::Cpu,
            "cuda" => DeviceChoice::Cuda(0),
            s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => DeviceChoice::Cuda(i),
                _ => bail!("--device {spec:?}: expected auto, cpu, cuda or cuda:N"),
            },
        })
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = anyhow::Error;

    fn try_from(s: String) -> Result<DeviceChoice> {
        s.parse()
    }
}

impl From<DeviceChoice> for String {
    fn from(d: DeviceChoice) -> String {
        d.to_string()
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl DeviceChoice {
    /// The device: `auto` takes the first CUDA device libtorch sees, else the CPU; asking for
    /// a CUDA device that is not there is an error. Says nothing: [`announce`] tells the user
    /// once the job's inputs are validated.
    pub fn resolve(self) -> Result<Device> {
        let count = Cuda::device_count();
        match self {
            DeviceChoice::Auto if count > 0 => Ok(Device::Cuda(0)),
            DeviceChoice::Auto | DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(i) if (i as i64) < count => Ok(Device::Cuda(i)),
            DeviceChoice::Cuda(i) => bail!(
                "--device {self}: CUDA device {i} is not available (libtorch sees {count} CUDA \
                 device{})",
                if count == 1 { "" } else { "s" }
            ),
        }
    }
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
/// reason when the choice was `auto`) and `compute: bf16, channels-last`. Called when the job
/// starts, after its inputs are checked, so that a usage error is the only thing printed.
pub fn announce(choice: DeviceChoice, compute: &crate::precision::Compute) {
    let why = match (choice == DeviceChoice::Auto, compute.device) {
        (false, _) => String::new(),
        (true, Device::Cuda(_)) => " (first CUDA device)".into(),
        (true, _) => " (no CUDA device found)".into(),
    };
    eprintln!("device: {}{why}", describe(compute.device));
    eprintln!("compute: {compute} ({})", compute.why);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_choice_reads_as_flags_and_files_spell_it_and_writes_back_one_spelling() {
        for (spec, choice, written) in [
            ("auto", DeviceChoice::Auto, "auto"),
            (" CPU ", DeviceChoice::Cpu, "cpu"),
            ("cuda", DeviceChoice::Cuda(0), "cuda:0"),
            ("Cuda:3", DeviceChoice::Cuda(3), "cuda:3"),
        ] {
            let got: DeviceChoice = spec.parse().unwrap();
            assert_eq!(got, choice, "{spec}");
            assert_eq!(got.to_string(), written);
            let json = serde_json::to_string(&got).unwrap();
            assert_eq!(json, format!("\"{written}\""));
            assert_eq!(serde_json::from_str::<DeviceChoice>(&json).unwrap(), choice);
        }
        for bad in ["gpu", "cuda:", "cuda:-1", "cuda:x", ""] {
            let e = bad.parse::<DeviceChoice>().unwrap_err().to_string();
            assert!(
                e.contains("expected auto, cpu, cuda or cuda:N"),
                "{bad}: {e}"
            );
            let e = serde_json::from_str::<DeviceChoice>(&format!("\"{bad}\"")).unwrap_err();
            assert!(e.to_string().contains("expected auto, cpu"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_cpu_choice_resolves_to_the_cpu_and_an_absent_cuda_device_is_refused() {
        assert_eq!(DeviceChoice::Cpu.resolve().unwrap(), Device::Cpu);
        let count = Cuda::device_count() as usize;
        let e = DeviceChoice::Cuda(count).resolve().unwrap_err().to_string();
        assert!(
            e.contains(&format!("CUDA device {count} is not available")),
            "{e}"
        );
        let auto = DeviceChoice::Auto.resolve().unwrap();
        assert_eq!(auto == Device::Cpu, count == 0);
    }
}
