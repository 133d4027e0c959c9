//! The preprocessing, in one place for train, eval and predict so that they never disagree.
//!
//! Eval transform (torchvision's `Resize(image_size·256/224)`, `CenterCrop(image_size)`,
//! `ToTensor()`, `Normalize(mean, std)`): the shorter side is resized to image_size·256/224
//! (the longer side keeps the aspect ratio, truncated as torchvision does), the centre
//! image_size² is cropped (offsets rounded half to even, as Python's `round`), pixels are
//! scaled to [0, 1] and normalised per channel. Resampling is the triangle (bilinear) filter
//! with its support widened when shrinking, which is what PIL's `BILINEAR` (torchvision's
//! default for PIL images) does: an antialiased bilinear resize.

use anyhow::{bail, Result};
use image::imageops::{self, FilterType};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// Per-channel mean and std applied to pixels scaled to [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

impl Normalization {
    /// ImageNet's statistics, the default.
    pub const IMAGENET: Normalization = Normalization {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };

    pub fn validate(&self) -> Result<()> {
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || self.mean.iter().any(|m| !m.is_finite())
        {
            bail!("normalisation needs finite means and positive stds, got {self:?}");
        }
        Ok(())
    }
}

impl Default for Normalization {
    fn default() -> Self {
        Normalization::IMAGENET
    }
}

/// The side the shorter edge is resized to before the centre crop: image_size·256/224.
pub fn resize_size(image_size: u32) -> u32 {
    image_size * 256 / 224
}

/// The deterministic transform of eval and predict.
#[derive(Debug, Clone, Copy)]
pub struct EvalTransform {
    pub image_size: u32,
    pub normalization: Normalization,
}

impl EvalTransform {
    /// The resized and centre-cropped image, before scaling and normalisation.
    pub fn crop(&self, img: &RgbImage) -> RgbImage {
        let (w, h) = img.dimensions();
        let short = resize_size(self.image_size);
        let (nw, nh) = if w <= h {
            (short, (short as u64 * h as u64 / w as u64) as u32)
        } else {
            ((short as u64 * w as u64 / h as u64) as u32, short)
        };
        let resized = if (nw, nh) == (w, h) {
            img.clone()
        } else {
            imageops::resize(img, nw, nh, FilterType::Triangle)
        };
        let s = self.image_size;
        let left = round_half_even((nw as f64 - s as f64) / 2.0);
        let top = round_half_even((nh as f64 - s as f64) / 2.0);
        imageops::crop_imm(&resized, left, top, s, s).to_image()
    }

    /// Appends the image's normalised `[3, S, S]` values (channel-major) to `out`.
    pub fn apply_into(&self, img: &RgbImage, out: &mut Vec<f32>) {
        let crop = self.crop(img);
        to_chw(&crop, &self.normalization, out);
    }

    /// A batch `[N, 3, S, S]` from decoded images.
    pub fn batch(&self, images: &[RgbImage]) -> Result<Tensor> {
        let s = self.image_size as i64;
        let mut data = Vec::with_capacity(images.len() * 3 * (s * s) as usize);
        for img in images {
            self.apply_into(img, &mut data);
        }
        Ok(Tensor::f_from_slice(&data)?.f_view([images.len() as i64, 3, s, s])?)
    }
}

/// Scales an RGB image to [0, 1], normalises it and appends it channel-major to `out`.
pub fn to_chw(img: &RgbImage, norm: &Normalization, out: &mut Vec<f32>) {
    let raw = img.as_raw();
    for c in 0..3 {
        let scale = (1.0 / (255.0 * norm.std[c])) as f32;
        let shift = (norm.mean[c] / norm.std[c]) as f32;
        out.extend(raw.chunks_exact(3).map(|p| p[c] as f32 * scale - shift));
    }
}

/// Python's `round` for the crop offsets: halves go to the even neighbour.
fn round_half_even(x: f64) -> u32 {
    let r = x.round();
    let r = if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    };
    r.max(0.0) as u32
}
