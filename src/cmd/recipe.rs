//! The flags `train` and `cv` share: the recipe's (every field of the training config) and
//! the runtime's (how to compute, which a resumed run or cv may change), applied to a config;
//! and the device, precision and layout a config asks for.

use anyhow::{Context, Result};

use crate::cli::{fixed, RecipeArgs};
use crate::config::{ClassWeights, TrainConfig};
use crate::data::transform::Augment;
use crate::device;
use crate::precision::Compute;

/// Gets the starting weights a config names into the cache now (`pretrained`, an `init`
/// URL), so that a missing file is said before the data are read.
pub fn fetch_weights(cfg: &TrainConfig) -> Result<()> {
    if cfg.pretrained {
        crate::weights::pretrained_path(cfg.arch)?;
    }
    if let Some(init) = &cfg.init {
        crate::weights::resolve(init).context("--init")?;
    }
    Ok(())
}

/// Applies every flag that was given to `cfg`.
pub fn apply_flags(cfg: &mut TrainConfig, a: &RecipeArgs) -> Result<()> {
    if a.offline {
        crate::weights::hub::set_offline();
    }
    macro_rules! set {
        ($($field:ident),*) => { $( if let Some(v) = &a.$field { cfg.$field = v.clone(); } )* };
    }
    set!(
        arch,
        aux_logits,
        image_size,
        epochs,
        batch_size,
        optimizer,
        lr,
        momentum,
        weight_decay,
        schedule,
        warmup_epochs,
        step_size,
        step_gamma,
        label_smoothing,
        seed,
        device,
        val_fraction,
        group_by,
        dedup,
        fold,
        patience,
        cache_gib,
        workers,
        precision,
        channels_last,
        ema_decay,
        mixup,
        cutmix,
        freeze_bn,
        probe_flips,
        average_flips
    );
    if a.dropout.is_some() {
        cfg.dropout = a.dropout;
    }
    if a.folds.is_some() {
        cfg.folds = a.folds;
    }
    if a.no_folds {
        cfg.folds = None;
        cfg.fold = 0;
    }
    if a.init.is_some() {
        cfg.init = a.init.clone();
        cfg.pretrained = false;
    }
    if a.pretrained {
        cfg.pretrained = true;
        cfg.init = None;
    }
    if a.no_init {
        cfg.init = None;
        cfg.pretrained = false;
    }
    set_if(&mut cfg.freeze_epochs, a.freeze_epochs);
    if a.probe_c.is_some() {
        cfg.probe_c = a.probe_c;
    }
    if a.no_probe {
        cfg.probe_c = None;
    }
    set_if(&mut cfg.backbone_lr_mult, a.backbone_lr_mult);
    if let Some(w) = &a.class_weights {
        cfg.class_weights = ClassWeights::parse(w)?;
    }
    apply_skip_bad(cfg, a);
    if a.no_plots {
        cfg.plots = false;
    }
    if a.no_augment {
        cfg.augment = Augment::none();
    }
    let (crop_scale, crop_ratio) = (
        fixed("crop-scale", &a.crop_scale)?,
        fixed("crop-ratio", &a.crop_ratio)?,
    );
    let (mean, std) = (fixed("mean", &a.mean)?, fixed("std", &a.std)?);
    let aug = &mut cfg.augment;
    if a.no_crop {
        aug.random_resized_crop = None;
    }
    if let Some(scale) = crop_scale {
        aug.random_resized_crop
            .get_or_insert_with(Default::default)
            .scale = scale;
    }
    if let Some(ratio) = crop_ratio {
        aug.random_resized_crop
            .get_or_insert_with(Default::default)
            .ratio = ratio;
    }
    for (field, flag) in [
        (&mut aug.hflip, a.hflip),
        (&mut aug.vflip, a.vflip),
        (&mut aug.rotation, a.rotation),
        (&mut aug.brightness, a.brightness),
        (&mut aug.contrast, a.contrast),
        (&mut aug.saturation, a.saturation),
    ] {
        set_if(field, flag);
    }
    set_if(&mut cfg.normalization.mean, mean);
    set_if(&mut cfg.normalization.std, std);
    // The published GoogLeNet's auxiliary heads are untrained: off unless asked for.
    let pretrained_flag = a.pretrained && a.aux_logits.is_none();
    if (pretrained_flag
        || a.arch
            .is_some_and(|arch| arch != crate::model::Arch::Googlenet))
        && a.aux_logits.is_none()
    {
        cfg.aux_logits = false;
    }
    Ok(())
}

/// The flags that only say how to compute, not what (clap argument ids): those
/// [`apply_runtime_flags`] applies, which a resumed run or cv folder accepts.
pub const RUNTIME_FLAGS: [&str; 9] = [
    "device",
    "precision",
    "channels_last",
    "workers",
    "cache_gib",
    "skip_bad",
    "no_skip_bad",
    "no_plots",
    "offline",
];

/// Applies the flags that say how to compute, not what (device, precision, layout, loader,
/// cache, unreadable files): the ones a resumed run or cv may change.
pub fn apply_runtime_flags(cfg: &mut TrainConfig, r: &RecipeArgs) {
    set_if(&mut cfg.workers, r.workers);
    set_if(&mut cfg.cache_gib, r.cache_gib);
    set_if(&mut cfg.precision, r.precision);
    set_if(&mut cfg.channels_last, r.channels_last);
    if let Some(d) = &r.device {
        cfg.device = d.clone();
    }
    apply_skip_bad(cfg, r);
    if r.no_plots {
        cfg.plots = false;
    }
    if r.offline {
        crate::weights::hub::set_offline();
    }
}

fn apply_skip_bad(cfg: &mut TrainConfig, r: &RecipeArgs) {
    if r.skip_bad {
        cfg.skip_bad = true;
    }
    if r.no_skip_bad {
        cfg.skip_bad = false;
    }
}

/// The device, precision and layout `cfg` asks for, said on stderr.
pub fn compute_for(cfg: &TrainConfig) -> Result<Compute> {
    Compute::new(
        device::resolve(&cfg.device)?,
        cfg.precision,
        cfg.channels_last,
    )
}

/// Overwrites `field` with a flag's value when the flag was given.
pub fn set_if<T: Copy>(field: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *field = v;
    }
}
