//! The checkpoint: one file with a network's weights and all that is needed to use them.
//!
//! Format: a safetensors file (https://huggingface.co/docs/safetensors). Its tensors are the
//! network's state_dict under PyTorch's names, so `safetensors.torch.load_file("best.pt")` is a
//! state_dict that `load_state_dict` takes as it is. Its header metadata holds one key,
//! `inception`, whose value is the JSON of [`Meta`]: format and tool version, arch, class names,
//! image size, normalisation, `transform_input`, and a CRC-32 of the tensors that catches a
//! corrupted file. Checkpoints written by training also record the training config, the
//! dataset and its split, the epoch and its metrics ([`TrainingRecord`]); `last.pt` adds the
//! optimiser's buffers (tensors named `optimizer.…`) and what resuming needs. Written
//! atomically: a temporary file in the same folder, flushed and synced, then renamed over the
//! target.

pub mod record;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::data::transform::Normalization;
use crate::model::{Arch, Model, NetConfig};
use record::TrainingRecord;

/// Prefix of the optimiser's tensors in a checkpoint (`last.pt`).
pub const OPTIMIZER_PREFIX: &str = "optimizer.";
/// Prefix of the weight average's tensors in a checkpoint.
pub const EMA_PREFIX: &str = "ema.";

/// The `format` field of every checkpoint.
pub const FORMAT: &str = "inception-checkpoint";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The safetensors metadata key that holds [`Meta`].
pub const META_KEY: &str = "inception";

/// Everything in a checkpoint besides the weights.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    pub format: String,
    pub format_version: u32,
    /// Version of the inception tool that wrote the file.
    pub tool_version: String,
    pub arch: Arch,
    /// Class names, index = position (the network's output order).
    pub classes: Vec<String>,
    /// Side of the square input the network is used at.
    pub image_size: i64,
    /// Per-channel mean and std applied to [0, 1] pixels.
    pub normalization: Normalization,
    /// GoogLeNet only: torchvision's `transform_input` (on for its ImageNet weights).
    pub transform_input: bool,
    /// GoogLeNet only: the file holds the auxiliary heads' weights.
    pub aux_logits: bool,
    /// The flips the network averages its features over in evaluation (none in files from
    /// before they existed).
    #[serde(default)]
    pub flips: crate::model::Flips,
    /// Where the weights came from (`import of FILE`, a training run).
    pub source: String,
    /// CRC-32 (hex) of the tensors, in name order: name, dtype, shape, bytes.
    #[serde(default)]
    pub checksum: String,
    /// For checkpoints written by `inception train`: how they were made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingRecord>,
    /// Calibration, screening threshold and conformal thresholds fitted on a cv's out-of-fold
    /// predictions (`train --calibration-from`); absent: uncalibrated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<crate::trust::TrustRecord>,
}

impl Meta {
    /// A new record for this tool version; the checksum is filled in by [`save`].
    pub fn new(
        config: NetConfig,
        classes: Vec<String>,
        image_size: i64,
        normalization: Normalization,
        source: String,
    ) -> Meta {
        Meta {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").into(),
            arch: config.arch,
            classes,
            image_size,
            normalization,
            transform_input: config.transform_input,
            aux_logits: config.aux_logits,
            flips: config.flips,
            source,
            checksum: String::new(),
            training: None,
            trust: None,
        }
    }

    /// The network this checkpoint's weights belong to.
    pub fn net_config(&self) -> NetConfig {
        NetConfig {
            arch: self.arch,
            num_classes: self.classes.len() as i64,
            aux_logits: self.aux_logits,
            transform_input: self.transform_input,
            flips: self.flips,
        }
    }
}

/// A loaded checkpoint: its record, the network with its weights, and (in `last.pt`) the
/// training state beside them.
#[derive(Debug)]
pub struct Checkpoint {
    pub meta: Meta,
    pub model: Model,
    /// Tensors under [`OPTIMIZER_PREFIX`] (the optimiser's buffers) and [`EMA_PREFIX`] (the
    /// averaged weights).
    pub extra: BTreeMap<String, Tensor>,
}

/// A tensor as bytes on the CPU, ready for safetensors.
struct HostTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl HostTensor {
    fn from_tensor(name: &str, t: &Tensor) -> Result<HostTensor> {
        let (t, dtype) = match t.kind() {
            Kind::Int64 => (t.f_to_device(Device::Cpu)?, Dtype::I64),
            _ => (
                t.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?,
                Dtype::F32,
            ),
        };
        let t = t.f_contiguous()?;
        let numel = t.numel();
        let mut bytes = vec![0u8; numel * dtype.size()];
        t.f_copy_data_u8(&mut bytes, numel)
            .with_context(|| format!("reading tensor {name}"))?;
        let shape = t.size().iter().map(|&d| d as usize).collect();
        Ok(HostTensor {
            dtype,
            shape,
            bytes,
        })
    }
}

/// CRC-32 over the tensors in name order (name, dtype, shape, data).
fn checksum<'a>(tensors: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>) -> String {
    let mut h = crc32fast::Hasher::new();
    for (name, dtype, shape, data) in tensors {
        h.update(name.as_bytes());
        h.update(format!("{dtype:?}{shape:?}").as_bytes());
        h.update(data);
    }
    format!("{:08x}", h.finalize())
}

/// Writes `model`'s weights and `meta` to `path`, atomically.
pub fn save(path: &Path, model: &Model, meta: &Meta) -> Result<()> {
    save_with(path, model, meta, &BTreeMap::new())
}

/// Like [`save`], with extra tensors (the optimiser's state, named under [`OPTIMIZER_PREFIX`], and
/// the weight average, under [`EMA_PREFIX`]).
pub fn save_with(
    path: &Path,
    model: &Model,
    meta: &Meta,
    extra: &BTreeMap<String, Tensor>,
) -> Result<()> {
    let host: BTreeMap<String, HostTensor> = model
        .state_dict()
        .iter()
        .chain(extra.iter())
        .map(|(k, t)| Ok((k.clone(), HostTensor::from_tensor(k, t)?)))
        .collect::<Result<_>>()?;
    let mut meta = meta.clone();
    meta.checksum = checksum(
        host.iter()
            .map(|(k, h)| (k.as_str(), h.dtype, h.shape.as_slice(), h.bytes.as_slice())),
    );
    let views = host
        .iter()
        .map(|(k, h)| {
            Ok((
                k.clone(),
                TensorView::new(h.dtype, h.shape.clone(), &h.bytes)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let info = HashMap::from([(META_KEY.to_string(), serde_json::to_string(&meta)?)]);
    let bytes = safetensors::serialize(views, &Some(info))?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames it over `path`: a
/// reader sees the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| {
        let mut f = fs::File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))
    })
}

/// Test-only: milliseconds [`write_atomic_with`] waits between writing a file and renaming it.
pub const SLOW_SAVE_ENV: &str = "INCEPTION_TEST_SLOW_SAVE_MS";

/// The temporary file [`write_atomic_with`] writes `name` through, for process `pid`.
fn temporary_name(name: &str, pid: u32) -> String {
    format!(".{name}.tmp-{pid}")
}

/// Removes from `dir` the temporary files of saves whose process is gone (a kill during a
/// write leaves `.NAME.tmp-PID`); files of a live process and any other file are kept.
/// Returns what it removed.
pub fn remove_stale_temporaries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = vec![];
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix('.')
            .and_then(|rest| rest.rsplit_once(".tmp-"))
            .filter(|(base, _)| !base.is_empty())
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || process_alive(pid) {
            continue;
        }
        let path = entry.path();
        if path.is_file() {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            removed.push(path);
        }
    }
    removed.sort();
    Ok(removed)
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only asks whether the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Like [`write_atomic`], for writers that take a path: `write` fills a temporary file beside
/// `path`, which is synced and renamed over `path`; on failure it is removed.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file path", path.display()))?;
    let tmp = dir.join(temporary_name(&name.to_string_lossy(), std::process::id()));
    let result = (|| -> Result<()> {
        write(&tmp)?;
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", tmp.display()))?;
        // For tests only: widens the moment between writing and renaming, so that a test can
        // kill a run in the middle of a save.
        if let Some(ms) = std::env::var(SLOW_SAVE_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The contents of a safetensors file.
#[derive(Debug)]
pub struct SafetensorsFile {
    /// The tensors by name, on the CPU, in their stored dtype.
    pub tensors: BTreeMap<String, Tensor>,
    /// The header's metadata map.
    pub metadata: Option<HashMap<String, String>>,
    /// [`checksum`] of the stored tensors.
    checksum: String,
}

/// Reads a safetensors file (a PyTorch state_dict saved with `safetensors.torch.save_file`).
pub fn read_safetensors(path: &Path) -> Result<SafetensorsFile> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_safetensors(&bytes).with_context(|| format!("{}", path.display()))
}

fn parse_safetensors(bytes: &[u8]) -> Result<SafetensorsFile> {
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow!("not a safetensors file, or a truncated or corrupted one ({e:?})"))?;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow!("not a valid safetensors file ({e:?})"))?;
    let mut views = st.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    let sum = checksum(
        views
            .iter()
            .map(|(k, v)| (k.as_str(), v.dtype(), v.shape(), v.data())),
    );
    let mut tensors = BTreeMap::new();
    for (name, view) in views {
        let kind = match view.dtype() {
            Dtype::F32 => Kind::Float,
            Dtype::F64 => Kind::Double,
            Dtype::F16 => Kind::Half,
            Dtype::BF16 => Kind::BFloat16,
            Dtype::I64 => Kind::Int64,
            Dtype::I32 => Kind::Int,
            Dtype::I16 => Kind::Int16,
            Dtype::I8 => Kind::Int8,
            Dtype::U8 => Kind::Uint8,
            Dtype::BOOL => Kind::Bool,
            other => bail!("tensor {name}: unsupported dtype {other:?}"),
        };
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = Tensor::f_from_data_size(view.data(), &shape, kind)
            .with_context(|| format!("tensor {name}"))?;
        tensors.insert(name, t);
    }
    Ok(SafetensorsFile {
        tensors,
        metadata: header.metadata().clone(),
        checksum: sum,
    })
}

/// A checkpoint's metadata alone (its tensors are neither checked nor loaded).
pub fn read_meta(path: &Path) -> Result<Meta> {
    let ctx = || format!("checkpoint {}", path.display());
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow!("not a safetensors file, or a truncated or corrupted one ({e:?})"))
        .with_context(ctx)?;
    meta_of(header.metadata().as_ref()).with_context(ctx)
}

/// The inception metadata in a safetensors header's metadata map.
fn meta_of(metadata: Option<&HashMap<String, String>>) -> Result<Meta> {
    let raw = metadata.and_then(|m| m.get(META_KEY)).ok_or_else(|| {
        anyhow!(
            "a safetensors file without inception metadata (a bare state_dict? \
             `inception import` turns one into a checkpoint)"
        )
    })?;
    serde_json::from_str(raw).map_err(|e| anyhow!("unreadable inception metadata: {e}"))
}

/// Loads a checkpoint onto `device`, checking that it is one, that it is intact, and that its
/// weights fit the network it names.
pub fn load(path: &Path, device: Device) -> Result<Checkpoint> {
    let ctx = || format!("checkpoint {}", path.display());
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let file = parse_safetensors(&bytes).with_context(ctx)?;
    let meta = meta_of(file.metadata.as_ref()).with_context(ctx)?;
    check_meta(&meta).with_context(ctx)?;
    if file.checksum != meta.checksum {
        bail!(
            "{}: checksum mismatch (recorded {}, computed {}): the file is corrupted",
            ctx(),
            meta.checksum,
            file.checksum
        );
    }
    let (extra, weights): (BTreeMap<_, _>, BTreeMap<_, _>) = file
        .tensors
        .into_iter()
        .partition(|(k, _)| k.starts_with(OPTIMIZER_PREFIX) || k.starts_with(EMA_PREFIX));
    let mut model = Model::new(meta.net_config(), device).with_context(ctx)?;
    model.load_state_dict(&weights).with_context(ctx)?;
    Ok(Checkpoint { meta, model, extra })
}

fn check_meta(meta: &Meta) -> Result<()> {
    if meta.format != FORMAT {
        bail!("format {:?} is not {FORMAT:?}", meta.format);
    }
    if meta.format_version != FORMAT_VERSION {
        bail!(
            "format version {} (written by inception {}); this build reads version {FORMAT_VERSION}",
            meta.format_version,
            meta.tool_version
        );
    }
    if meta.classes.len() < 2 {
        bail!(
            "{} class names recorded; at least 2 are needed",
            meta.classes.len()
        );
    }
    for c in &meta.classes {
        crate::text::check_name("class name", c)?;
    }
    crate::model::check_image_size(meta.arch, meta.image_size)?;
    meta.normalization.validate()
}
