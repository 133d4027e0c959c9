//! `inception import`: a PyTorch state_dict (a torch.save `.pth`, safetensors, a URL of one,
//! or the arch's published ImageNet weights) becomes a checkpoint.

use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use tch::Device;

use crate::checkpoint::{self, Meta};
use crate::cli::{fixed, ImportArgs};
use crate::data::transform::Normalization;
use crate::model::{check_image_size, googlenet, Arch, Model, NetConfig};
use crate::weights;

/// A validated import.
#[derive(Debug)]
pub struct ImportConfig {
    pub arch: Arch,
    /// The weights as given: a path or URL (`None`: the published ones).
    pub weights: Option<PathBuf>,
    pub classes: Vec<String>,
    pub image_size: i64,
    pub normalization: Normalization,
    pub transform_input: bool,
    pub out: PathBuf,
}

impl ImportConfig {
    /// Validates the flags: what to read, the classes and the normalisation to record.
    pub fn from_args(args: &ImportArgs) -> Result<ImportConfig> {
        let classes: Vec<String> = match &args.classes_file {
            Some(path) => fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect(),
            None => args.classes.iter().map(|c| c.trim().to_string()).collect(),
        };
        if classes.len() < 2 {
            bail!(
                "--classes: at least 2 class names are needed, got {}",
                classes.len()
            );
        }
        if let Some(i) = classes.iter().position(String::is_empty) {
            bail!("--classes: class {i} has an empty name");
        }
        for c in &classes {
            crate::text::check_name("--classes: class", c)?;
        }
        let mut sorted = classes.clone();
        sorted.sort();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            bail!("--classes: {:?} is named twice", w[0]);
        }
        check_image_size(args.arch, args.image_size)?;
        if args.transform_input && !args.arch.has_googlenet_options() {
            bail!(
                "--transform-input exists only for --arch {}",
                Arch::with_googlenet_options()
            );
        }
        let published = match args.pretrained {
            true => Some(crate::model::published(args.arch).with_context(|| {
                format!(
                    "--pretrained: no ImageNet weights are published for {}",
                    args.arch
                )
            })?),
            false => None,
        };
        let default = published.map_or(Normalization::IMAGENET, |p| p.normalization);
        let normalization = Normalization {
            mean: fixed("mean", &args.mean)?.unwrap_or(default.mean),
            std: fixed("std", &args.std)?.unwrap_or(default.std),
        };
        normalization.validate()?;
        if args.out.exists() && !args.force {
            bail!(
                "{} exists; choose another --out or add --force to replace it",
                args.out.display()
            );
        }
        Ok(ImportConfig {
            arch: args.arch,
            weights: args.weights.clone(),
            classes,
            image_size: args.image_size,
            normalization,
            transform_input: args.transform_input || published.is_some_and(|p| p.transform_input),
            out: args.out.clone(),
        })
    }
}

pub fn run(args: &ImportArgs) -> Result<()> {
    if args.offline {
        weights::hub::set_offline();
    }
    let cfg = ImportConfig::from_args(args)?;
    let meta = import(&cfg)?;
    println!(
        "wrote {}: {}, {} classes ({}), image size {}, transform_input {}, auxiliary heads {}",
        cfg.out.display(),
        meta.arch,
        meta.classes.len(),
        shown(&meta.classes),
        meta.image_size,
        if meta.transform_input { "on" } else { "off" },
        if meta.aux_logits { "kept" } else { "absent" },
    );
    Ok(())
}

/// The first class names, enough to recognise them.
fn shown(classes: &[String]) -> String {
    const SHOWN: usize = 10;
    match classes.len() > SHOWN {
        true => format!(
            "{}, … {}",
            classes[..SHOWN].join(", "),
            classes[classes.len() - 1]
        ),
        false => classes.join(", "),
    }
}

/// Where the weights came from, as the checkpoint records it: the URL beside its cached copy.
fn source_note(cfg: &ImportConfig, path: &std::path::Path) -> String {
    let given = cfg.weights.as_ref().map(|w| w.display().to_string());
    match (given, crate::model::published(cfg.arch)) {
        (Some(w), _) if weights::hub::is_url(&w) => {
            format!("imported from {w} (cached at {})", path.display())
        }
        (None, Some(p)) => format!(
            "imported from {} ({}, at {})",
            p.what,
            p.url.unwrap_or(p.file),
            path.display()
        ),
        _ => format!("imported from {}", path.display()),
    }
}

/// Loads the state_dict into the network it names and writes the checkpoint.
pub fn import(cfg: &ImportConfig) -> Result<Meta> {
    let path = match &cfg.weights {
        Some(spec) => weights::resolve(spec)?,
        None => weights::pretrained_path(cfg.arch)?,
    };
    let mut tensors = weights::read_state_dict(&path)?;
    let has_aux = tensors.keys().any(|k| googlenet::is_aux(k));
    // The published GoogLeNet's auxiliary heads are untrained (torchvision says so): left out.
    if cfg.weights.is_none() {
        tensors.retain(|k, _| !googlenet::is_aux(k));
    }
    let aux_logits = cfg.arch.has_googlenet_options() && has_aux && cfg.weights.is_some();
    let config = NetConfig {
        aux_logits,
        transform_input: cfg.transform_input,
        ..NetConfig::new(cfg.arch, cfg.classes.len() as i64)
    };
    let mut model = Model::new(config, Device::Cpu)?;
    model
        .load_state_dict(&tensors)
        .with_context(|| format!("{}", path.display()))?;
    let meta = Meta::new(
        config,
        cfg.classes.clone(),
        cfg.image_size,
        cfg.normalization,
        source_note(cfg, &path),
    );
    checkpoint::save(&cfg.out, &model, &meta)?;
    Ok(meta)
}
