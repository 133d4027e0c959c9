//! The flags `train` and `cv` share applied to a config: the recipe's (the one-field flags
//! [`crate::config`] declares with their fields, and the others) and the runtime's (how to
//! compute, which a resumed run or cv may change); and the device, precision and layout a
//! config asks for.

use anyhow::{Context, Result};

use crate::cli::{fixed, RecipeArgs, RuntimeArgs};
use crate::config::{ClassWeights, TrainConfig};
use crate::data::transform::Augment;
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
pub fn apply_flags(cfg: &mut TrainConfig, r: &RecipeArgs) -> Result<()> {
    r.flags.apply(cfg)?;
    apply_runtime_flags(cfg, &r.runtime)?;
    let a = &r.more;
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
    if a.no_probe {
        cfg.probe_c = None;
    }
    if let Some(w) = &a.class_weights {
        cfg.class_weights = ClassWeights::parse(w)?;
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
    let aux_given = r.flags.aux_logits.is_some();
    if !aux_given
        && (a.pretrained
            || r.flags
                .arch
                .is_some_and(|arch| !arch.has_googlenet_options()))
    {
        cfg.aux_logits = false;
    }
    Ok(())
}

/// Applies the flags that say how to compute, not what (device, precision, layout, loader,
/// cache, unreadable files, pictures, downloads): the ones a resumed run or cv may change.
pub fn apply_runtime_flags(cfg: &mut TrainConfig, r: &RuntimeArgs) -> Result<()> {
    r.flags.apply(cfg)?;
    if r.skip_bad {
        cfg.skip_bad = true;
    }
    if r.no_skip_bad {
        cfg.skip_bad = false;
    }
    if r.no_plots {
        cfg.plots = false;
    }
    if r.offline {
        crate::weights::hub::set_offline();
    }
    Ok(())
}

/// The device, precision and layout `cfg` asks for, said on stderr.
pub fn compute_for(cfg: &TrainConfig) -> Result<Compute> {
    Compute::new(cfg.device.resolve()?, cfg.precision, cfg.channels_last)
}

/// Overwrites `field` with a flag's value when the flag was given.
pub fn set_if<T: Copy>(field: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *field = v;
    }
}
