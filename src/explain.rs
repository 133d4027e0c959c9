//! Where a network looked: class activation maps by Grad-CAM (Selvaraju et al. 2017,
//! arXiv:1610.02391) and Grad-CAM++ (Chattopadhay et al. 2018, arXiv:1710.11063).
//!
//! The activations `A` `[N, C, h, w]` of one layer are kept from the forward pass ([`Tap`]),
//! the gradient `G` of the explained class's logit with respect to them is taken, and each
//! channel is weighted: Grad-CAM by the spatial mean of `G`; Grad-CAM++ by
//! `Σ relu(G)·α` with `α = G² / (2G² + ΣA·G³)` (the form pytorch-grad-cam uses). The map is
//! `relu(Σ_c w_c A_c)`, upsampled bilinearly to the input size and scaled to [0, 1] per image.
//! Gradients are taken in fp32. scripts/gradcam.py is the PyTorch reference (tests/integration/explain.rs).

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use crate::ensemble::Ensemble;
use crate::model::{tap_layers, Arch, Model, Tap};
use crate::precision::{Compute, Precision};

/// How channels are weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// Grad-CAM: the spatial mean of the gradients.
    #[value(name = "gradcam")]
    GradCam,
    /// Grad-CAM++: positive gradients weighted by second and third powers.
    #[value(name = "gradcam++")]
    GradCamPlusPlus,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::GradCam => "Grad-CAM",
            Method::GradCamPlusPlus => "Grad-CAM++",
        }
    }
}

/// Refuses a layer name no [`Tap`] knows, listing the ones it does.
pub fn check_layer(arch: Arch, layer: &str) -> Result<()> {
    let names = tap_layers(arch);
    if !names.iter().any(|n| n == layer) {
        bail!(
            "--layer {layer:?} is not a layer of {arch}; valid: {}",
            names.join(", ")
        );
    }
    Ok(())
}

/// Maps `[N, S, S]` in [0, 1] for a batch `x` `[N, 3, S, S]` (on the model's device), one
/// class per image, and the logits `[N, classes]` of the same pass.
pub fn class_maps(
    model: &Model,
    x: &Tensor,
    classes: &[i64],
    layer: &str,
    method: Method,
) -> Result<(Tensor, Tensor)> {
    check_layer(model.config.arch, layer)?;
    let size = x.size();
    let (n, s_h, s_w) = match size.as_slice() {
        [n, 3, h, w] => (*n, *h, *w),
        _ => bail!("input: expected shape [N, 3, H, W], got {size:?}"),
    };
    if classes.len() as i64 != n {
        bail!("{} classes for {n} images", classes.len());
    }
    let mut kept: Option<Tensor> = None;
    let logits = {
        let mut keep = |a: Tensor| -> Result<Tensor, tch::TchError> {
            let a = a.f_detach()?.set_requires_grad(true);
            kept = Some(a.shallow_clone());
            Ok(a)
        };
        let mut tap = Tap::new(layer, &mut keep);
        let logits = tch::with_grad(|| model.forward_tapped(x, &mut tap))?;
        if !tap.hit {
            bail!("the forward pass never reached layer {layer}");
        }
        logits
    };
    let a = kept.context("the layer's activations were not kept")?;
    let index = Tensor::f_from_slice(classes)?
        .f_to_device(logits.device())?
        .f_view([-1, 1])?;
    let score = logits.f_gather(1, &index, false)?.f_sum(Kind::Float)?;
    let grads = Tensor::f_run_backward(&[&score], &[&a], false, false)?;
    let g = grads.into_iter().next().context("no gradient")?;
    let a = a.f_detach()?;
    let weights = match method {
        Method::GradCam => g.f_mean_dim([2, 3].as_slice(), true, Kind::Float)?,
        Method::GradCamPlusPlus => {
            let g2 = g.f_pow_tensor_scalar(2)?;
            let g3 = g.f_pow_tensor_scalar(3)?;
            let sum_a = a.f_sum_dim_intlist([2, 3].as_slice(), true, Kind::Float)?;
            let denom = g2
                .f_mul_scalar(2.0)?
                .f_add(&sum_a.f_mul(&g3)?)?
                .f_add_scalar(1e-7)?;
            let alpha = g2.f_div(&denom)?;
            let alpha = alpha.f_where_self(&g.f_ne(0.0)?, &alpha.f_zeros_like()?)?;
            g.f_relu()?
                .f_mul(&alpha)?
                .f_sum_dim_intlist([2, 3].as_slice(), true, Kind::Float)?
        }
    };
    let map = weights
        .f_mul(&a)?
        .f_sum_dim_intlist([1].as_slice(), true, Kind::Float)?
        .f_relu()?; // [N, 1, h, w]
    let map = map
        .f_upsample_bilinear2d([s_h, s_w], false, None, None)?
        .f_squeeze_dim(1)?; // [N, S, S]
    let lo = map.f_amin([1, 2].as_slice(), true)?;
    let hi = map.f_amax([1, 2].as_slice(), true)?;
    let map = map.f_sub(&lo)?.f_div(&hi.f_sub(&lo)?.f_add_scalar(1e-7)?)?;
    Ok((map.f_detach()?, logits.f_detach()?))
}

/// An ensemble's maps for a batch `batch` `[N, 3, S, S]` (on the CPU), one class per image:
/// the mean of its members' maps, as `N` rows of `S × S` values in [0, 1] (row-major). The
/// gradients are taken in fp32 whatever precision `compute` serves in.
pub fn ensemble_maps(
    ensemble: &Ensemble,
    compute: Compute,
    batch: &Tensor,
    classes: &[i64],
    layer: &str,
    method: Method,
) -> Result<Vec<f32>> {
    let compute = Compute {
        precision: Precision::Fp32,
        ..compute
    };
    let x = compute.input(batch)?;
    let mut sum: Option<Tensor> = None;
    for (_, m) in &ensemble.members {
        let (maps, _) = class_maps(&m.model, &x, classes, layer, method)?;
        sum = Some(match sum {
            None => maps,
            Some(s) => s.f_add(&maps)?,
        });
    }
    let maps = sum
        .context("an ensemble without members")?
        .f_div_scalar(ensemble.members.len() as f64)?
        .f_to_device(tch::Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_contiguous()?;
    let mut flat = vec![0f32; maps.numel()];
    maps.f_copy_data(&mut flat, maps.numel())?;
    Ok(flat)
}

/// How maps were made, for titles: "Grad-CAM at inception5b", with the number of members
/// of an ensemble.
pub fn describe(method: Method, layer: &str, members: usize) -> String {
    let mut how = format!("{} at {layer}", method.name());
    if members > 1 {
        how.push_str(&format!(", mean of {members} members"));
    }
    how
}

/// The title drawn over a map: the class explained, its probability and how.
pub fn title(class: &str, probability: f64, how: &str) -> String {
    format!("{class} {probability:.3}  ·  {how}")
}
