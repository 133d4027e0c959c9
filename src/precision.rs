//! `--precision auto|fp32|bf16|fp16` and channels-last layout: how the network computes.
//!
//! Mixed precision uses libtorch's autocast (weights stay fp32; convolutions and matrix
//! products run in bf16 or fp16, reductions and the loss in fp32). tch switches autocast for
//! CUDA only, so a small C++ shim (src/shim/autocast.cpp) switches it for the CPU too.
//! Channels-last: a tensor with NHWC strides (permute to NHWC, make contiguous, permute back)
//! is channels-last to libtorch, whose oneDNN convolutions are faster on it; inputs and
//! convolution weights are given that layout, and the outputs keep it.

use std::fmt;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, TchError, Tensor};

use crate::model::layers::channels_last;
use crate::system::{cpu_has_bf16, cuda_capability};

extern "C" {
    fn inception_set_autocast(device: i32, enabled: bool, dtype: i32);
}

/// What `--precision` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// The fastest safe choice for the device ([`Why`]): bf16 on CUDA devices of compute
    /// capability 8.0 or more and on CPUs with native bf16 (AVX512-BF16 or AMX); fp16 with loss
    /// scaling on CUDA devices of capability 7.x; fp32 elsewhere.
    #[default]
    Auto,
    Fp32,
    /// bfloat16 autocast.
    Bf16,
    /// float16 autocast, with dynamic loss scaling when training.
    Fp16,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Auto => "auto",
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        })
    }
}

/// Why a precision was taken: asked for, or what `auto` saw of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// `--precision` named it.
    Asked,
    /// A CPU with (true) or without native bf16.
    Cpu { bf16: bool },
    /// A CUDA device of this compute capability (major, minor); `None` when the driver did not
    /// say.
    Cuda { capability: Option<(i32, i32)> },
}

impl Why {
    /// The reason in words, without the `auto: ` that [`Why`]'s `Display` puts before a choice
    /// `auto` made.
    pub fn reason(&self) -> String {
        match *self {
            Why::Asked => "as asked".into(),
            Why::Cpu { bf16: true } => "this CPU has native bf16".into(),
            Why::Cpu { bf16: false } => "this CPU has no native bf16 (AVX512-BF16 or AMX)".into(),
            Why::Cuda { capability: None } => {
                "the driver did not give the compute capability".into()
            }
            Why::Cuda {
                capability: Some((major, minor)),
            } => format!(
                "compute capability {major}.{minor}{}",
                match (major, minor) {
                    (8.., _) => " ≥ 8.0, native bf16",
                    (7, _) => " < 8.0, no fast bf16; fp16 tensor cores, with loss scaling",
                    _ => " < 7.0, no tensor cores: neither bf16 nor fp16 pays",
                }
            ),
        }
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Asked => f.write_str(&self.reason()),
            _ => write!(f, "auto: {}", self.reason()),
        }
    }
}

impl Precision {
    /// The concrete precision for `device`: never `Auto`.
    pub fn resolve(self, device: Device) -> Result<Precision> {
        Ok(self.choose(device)?.0)
    }

    /// The concrete precision for `device` and why; the capability of a CUDA device comes from
    /// the NVIDIA driver.
    pub fn choose(self, device: Device) -> Result<(Precision, Why)> {
        let why = match device {
            Device::Cuda(i) => Why::Cuda {
                capability: cuda_capability(i),
            },
            _ => Why::Cpu {
                bf16: cpu_has_bf16(),
            },
        };
        self.choose_for(why)
    }

    /// [`Precision::choose`] for a device described by `seen` (`Why::Cpu` or `Why::Cuda`).
    pub fn choose_for(self, seen: Why) -> Result<(Precision, Why)> {
        if self != Precision::Auto {
            return Ok((self, Why::Asked));
        }
        let p = match seen {
            Why::Asked => bail!("auto needs the device it is chosen for"),
            Why::Cpu { bf16: true } => Precision::Bf16,
            Why::Cpu { bf16: false } => Precision::Fp32,
            Why::Cuda { capability } => match capability {
                Some((8.., _)) => Precision::Bf16,
                Some((7, _)) => Precision::Fp16,
                _ => Precision::Fp32,
            },
        };
        Ok((p, seen))
    }
}

/// Autocast for the current thread while alive (for a resolved, non-fp32 precision).
pub struct Autocast {
    device: i32,
    dtype: i32,
}

impl Autocast {
    /// Switches autocast on for `device` when `precision` asks for it; `None` for fp32.
    pub fn new(precision: Precision, device: Device) -> Option<Autocast> {
        let dtype = match precision {
            Precision::Bf16 => 0,
            Precision::Fp16 => 1,
            Precision::Fp32 | Precision::Auto => return None,
        };
        let device = if device.is_cuda() { 1 } else { 0 };
        // SAFETY: the shim only flips libtorch's thread-local autocast state.
        unsafe { inception_set_autocast(device, true, dtype) };
        Some(Autocast { device, dtype })
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // SAFETY: as in `new`; this also clears autocast's cast cache.
        unsafe { inception_set_autocast(self.device, false, self.dtype) };
    }
}

/// Where and how a network computes: device, resolved precision, layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compute {
    pub device: Device,
    /// Resolved: never `Auto`.
    pub precision: Precision,
    /// Why that precision.
    pub why: Why,
    pub channels_last: bool,
}

impl Compute {
    /// Resolves `precision` for `device`.
    /// On CUDA this also turns on cuDNN's benchmark mode (fixed input sizes here).
    pub fn new(device: Device, precision: Precision, channels_last: bool) -> Result<Compute> {
        if device.is_cuda() {
            tch::Cuda::cudnn_set_benchmark(true);
        }
        let (precision, why) = precision.choose(device)?;
        Ok(Compute {
            device,
            precision,
            why,
            channels_last,
        })
    }

    /// `x` on the device. To a CUDA device the copy goes from pinned (page-locked) memory
    /// without blocking, so the host goes on while it runs (libtorch's caching host allocator
    /// keeps the pinned buffers; the copy is ordered before later work on the stream).
    pub fn to_device(&self, x: &Tensor) -> Result<Tensor, TchError> {
        match self.device {
            Device::Cuda(_) if x.device() == Device::Cpu => x
                .f_pin_memory(self.device)?
                .f_to_device_(self.device, x.kind(), true, false),
            _ => x.f_to_device(self.device),
        }
    }

    /// A batch moved to the device ([`Compute::to_device`]), in the layout the network
    /// computes in.
    pub fn input(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let x = self.to_device(x)?;
        if self.channels_last {
            channels_last(&x)
        } else {
            Ok(x)
        }
    }

    /// Autocast for the current thread while the guard lives (none for fp32).
    pub fn autocast(&self) -> Option<Autocast> {
        Autocast::new(self.precision, self.device)
    }

    /// Puts the model's weights in the layout the network computes in.
    pub fn prepare(&self, model: &mut crate::model::Model) -> Result<()> {
        if self.channels_last {
            model.to_channels_last()?;
        }
        Ok(())
    }

    /// Class probabilities `[N, classes]` of a batch of images `[N, 3, S, S]` (on any device),
    /// in `kind`, on the CPU: the inference pass that eval, validation and predict share.
    pub fn probabilities(
        &self,
        model: &crate::model::Model,
        images: &Tensor,
        kind: Kind,
    ) -> Result<Tensor> {
        Ok(self.logits(model, images)?.f_softmax(-1, kind)?)
    }

    /// The logits `[N, classes]` of a batch of images `[N, 3, S, S]` (on any device), in
    /// f64 on the CPU.
    pub fn logits(&self, model: &crate::model::Model, images: &Tensor) -> Result<Tensor> {
        self.inference(images, |x| Ok(model.forward_t(x, false)?.logits))
    }

    /// The pooled features `[N, D]` of a batch of images (see
    /// [`crate::model::Model::features`]), in f64 on the CPU.
    pub fn features(&self, model: &crate::model::Model, images: &Tensor) -> Result<Tensor> {
        self.inference(images, |x| model.features(x))
    }

    /// `pass` on the batch as this compute runs it (device, layout, autocast, no gradients),
    /// its output in f64 on the CPU.
    fn inference(
        &self,
        images: &Tensor,
        pass: impl FnOnce(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let _no_grad = tch::no_grad_guard();
        let x = self.input(images)?;
        let out = {
            let _autocast = self.autocast();
            pass(&x)?
        };
        Ok(out.f_to_kind(Kind::Double)?.f_to_device(Device::Cpu)?)
    }
}

impl fmt::Display for Compute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.precision)?;
        if self.channels_last {
            f.write_str(", channels-last")?;
        }
        Ok(())
    }
}

/// What `--precision auto` takes on `device` and why, in words (the error, if it cannot).
pub fn auto_precision(device: Device) -> (String, String) {
    match Precision::Auto.choose(device) {
        Ok((p, why)) => (p.to_string(), why.reason()),
        Err(e) => (String::new(), format!("{e:#}")),
    }
}

/// [`auto_precision`] as one phrase: `bf16 (this CPU has native bf16)`.
pub fn auto_precision_line(device: Device) -> String {
    let (p, why) = auto_precision(device);
    format!("{p} ({why})")
}
