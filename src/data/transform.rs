//! The preprocessing, in one place for train, eval and predict so that they never disagree.
//!
//! Eval transform (torchvision's `Resize(image_size·256/224)`, `CenterCrop(image_size)`,
//! `ToTensor()`, `Normalize(mean, std)`): the shorter side is resized to image_size·256/224
//! (the longer side keeps the aspect ratio, truncated as torchvision does), the centre
//! image_size² is cropped (offsets rounded half to even, as Python's `round`), pixels are
//! scaled to [0, 1] and normalised per channel. Resampling is the triangle (bilinear) filter
//! with its support widened when shrinking, which is what PIL's `BILINEAR` (torchvision's
//! default for PIL images) does: an antialiased bilinear resize.
//!
//! Training transform ([`TrainTransform`]): random resized crop, flips, rotation and colour jitter
//! ([`Augment`]), after torchvision's transforms of the same names, drawing from a generator the
//! caller seeds, so that a run is reproducible.

use anyhow::{bail, Result};
use image::imageops::{self, FilterType};
use image::RgbImage;
use rand::seq::SliceRandom;
use rand::Rng;
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

/// The image at working size: its shorter side resized to [`resize_size`] (the longer keeps the
/// aspect ratio, truncated as torchvision does). This is what the loader keeps in memory, and
/// the eval transform's centre crop of it is exactly torchvision's Resize + CenterCrop.
pub fn to_working_size(img: &RgbImage, image_size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let short = resize_size(image_size);
    let (nw, nh) = if w <= h {
        (short, (short as u64 * h as u64 / w as u64) as u32)
    } else {
        ((short as u64 * w as u64 / h as u64) as u32, short)
    };
    if (nw, nh) == (w, h) {
        img.clone()
    } else {
        imageops::resize(img, nw.max(1), nh.max(1), FilterType::Triangle)
    }
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
        self.crop_working(&to_working_size(img, self.image_size))
    }

    /// The centre crop of an image already at working size ([`to_working_size`]).
    pub fn crop_working(&self, img: &RgbImage) -> RgbImage {
        let (w, h) = img.dimensions();
        let s = self.image_size;
        let left = round_half_even((w as f64 - s as f64) / 2.0);
        let top = round_half_even((h as f64 - s as f64) / 2.0);
        imageops::crop_imm(img, left, top, s, s).to_image()
    }

    /// Appends the image's normalised `[3, S, S]` values (channel-major) to `out`.
    pub fn apply_into(&self, img: &RgbImage, out: &mut Vec<f32>) {
        self.values_of_crop(&self.crop(img), out);
    }

    /// Appends the normalised `[3, S, S]` values of a crop made by [`Self::crop`] to `out`.
    pub fn values_of_crop(&self, crop: &RgbImage, out: &mut Vec<f32>) {
        to_chw(crop, &self.normalization, out);
    }

    /// A batch `[N, 3, S, S]` from decoded images.
    pub fn batch(&self, images: &[RgbImage]) -> Result<Tensor> {
        let crops: Vec<RgbImage> = images.iter().map(|img| self.crop(img)).collect();
        self.batch_of_crops(&crops)
    }

    /// A batch `[N, 3, S, S]` from images already cropped by [`Self::crop`].
    pub fn batch_of_crops(&self, crops: &[RgbImage]) -> Result<Tensor> {
        let s = self.image_size as i64;
        let mut data = Vec::with_capacity(crops.len() * 3 * (s * s) as usize);
        for crop in crops {
            if crop.dimensions() != (s as u32, s as u32) {
                anyhow::bail!(
                    "crop: expected {s}×{s}, got {}×{}",
                    crop.width(),
                    crop.height()
                );
            }
            to_chw(crop, &self.normalization, &mut data);
        }
        Ok(Tensor::f_from_slice(&data)?.f_view([crops.len() as i64, 3, s, s])?)
    }
}

/// Training augmentation, each part configurable and each possible to switch off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Augment {
    /// torchvision's RandomResizedCrop: a crop of `scale` × the area with aspect ratio in `ratio`
    /// (log-uniform), resized to image_size. `null`: the eval transform's resize and centre crop.
    pub random_resized_crop: Option<ResizedCrop>,
    /// Probability of a horizontal flip.
    pub hflip: f64,
    /// Probability of a vertical flip.
    pub vflip: f64,
    /// Rotation by an angle uniform in ±`rotation` degrees (bilinear, corners filled black).
    pub rotation: f64,
    /// Colour jitter as torchvision's ColorJitter: factors uniform in [max(0, 1−x), 1+x],
    /// applied in a random order.
    pub brightness: f64,
    pub contrast: f64,
    pub saturation: f64,
}

/// Scale and aspect-ratio ranges of the random resized crop.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizedCrop {
    pub scale: [f64; 2],
    pub ratio: [f64; 2],
}

impl Default for ResizedCrop {
    fn default() -> Self {
        ResizedCrop {
            scale: [0.08, 1.0],
            ratio: [3.0 / 4.0, 4.0 / 3.0],
        }
    }
}

impl Default for Augment {
    fn default() -> Self {
        Augment {
            random_resized_crop: Some(ResizedCrop::default()),
            hflip: 0.5,
            vflip: 0.0,
            rotation: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
        }
    }
}

impl Augment {
    /// No augmentation at all: training sees the eval transform.
    pub fn none() -> Augment {
        Augment {
            random_resized_crop: None,
            hflip: 0.0,
            vflip: 0.0,
            rotation: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if let Some(c) = &self.random_resized_crop {
            if !(0.0 < c.scale[0] && c.scale[0] <= c.scale[1] && c.scale[1] <= 1.0) {
                bail!(
                    "augment.random_resized_crop.scale must be 0 < min <= max <= 1, got {:?}",
                    c.scale
                );
            }
            if !(0.0 < c.ratio[0] && c.ratio[0] <= c.ratio[1]) {
                bail!(
                    "augment.random_resized_crop.ratio must be 0 < min <= max, got {:?}",
                    c.ratio
                );
            }
        }
        for (name, p) in [("hflip", self.hflip), ("vflip", self.vflip)] {
            if !(0.0..=1.0).contains(&p) {
                bail!("augment.{name} is a probability, got {p}");
            }
        }
        for (name, x) in [
            ("rotation", self.rotation),
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
        ] {
            if !(x.is_finite() && x >= 0.0) {
                bail!("augment.{name} must be a non-negative number, got {x}");
            }
        }
        Ok(())
    }
}

/// The random transform of training: augmentation, then scaling and normalisation.
#[derive(Debug, Clone)]
pub struct TrainTransform {
    pub image_size: u32,
    pub normalization: Normalization,
    pub augment: Augment,
}

impl TrainTransform {
    /// Appends one augmented, normalised `[3, S, S]` sample made from an image at working size.
    pub fn apply_working_into(&self, img: &RgbImage, rng: &mut impl Rng, out: &mut Vec<f32>) {
        let a = &self.augment;
        let s = self.image_size;
        let mut crop = match &a.random_resized_crop {
            Some(c) => {
                let (x, y, w, h) = resized_crop_box(img.width(), img.height(), c, rng);
                let region = imageops::crop_imm(img, x, y, w, h).to_image();
                imageops::resize(&region, s, s, FilterType::Triangle)
            }
            None => EvalTransform {
                image_size: s,
                normalization: self.normalization,
            }
            .crop_working(img),
        };
        if a.hflip > 0.0 && rng.random::<f64>() < a.hflip {
            imageops::flip_horizontal_in_place(&mut crop);
        }
        if a.vflip > 0.0 && rng.random::<f64>() < a.vflip {
            imageops::flip_vertical_in_place(&mut crop);
        }
        if a.rotation > 0.0 {
            let angle = rng.random_range(-a.rotation..=a.rotation);
            crop = rotate(&crop, angle);
        }
        let start = out.len();
        to_chw(
            &crop,
            &Normalization {
                mean: [0.0; 3],
                std: [1.0; 3],
            },
            out,
        );
        jitter(&mut out[start..], a, rng);
        let n = (s * s) as usize;
        let norm = &self.normalization;
        for c in 0..3 {
            let (m, sd) = (norm.mean[c] as f32, norm.std[c] as f32);
            for v in &mut out[start + c * n..start + (c + 1) * n] {
                *v = (*v - m) / sd;
            }
        }
    }
}

/// torchvision's `RandomResizedCrop.get_params`: (left, top, width, height).
fn resized_crop_box(w: u32, h: u32, c: &ResizedCrop, rng: &mut impl Rng) -> (u32, u32, u32, u32) {
    let area = (w * h) as f64;
    let (lr0, lr1) = (c.ratio[0].ln(), c.ratio[1].ln());
    for _ in 0..10 {
        let target = area * rng.random_range(c.scale[0]..=c.scale[1]);
        let ratio = rng.random_range(lr0..=lr1).exp();
        let cw = (target * ratio).sqrt().round() as u32;
        let ch = (target / ratio).sqrt().round() as u32;
        if 0 < cw && cw <= w && 0 < ch && ch <= h {
            let x = rng.random_range(0..=w - cw);
            let y = rng.random_range(0..=h - ch);
            return (x, y, cw, ch);
        }
    }
    // Fallback: the centre crop with the ratio clamped into range.
    let in_ratio = w as f64 / h as f64;
    let (cw, ch) = if in_ratio < c.ratio[0] {
        (w, ((w as f64 / c.ratio[0]).round() as u32).min(h))
    } else if in_ratio > c.ratio[1] {
        (((h as f64 * c.ratio[1]).round() as u32).min(w), h)
    } else {
        (w, h)
    };
    ((w - cw) / 2, (h - ch) / 2, cw.max(1), ch.max(1))
}

/// Rotates about the centre by `degrees` (counter-clockwise), bilinear, black outside.
fn rotate(img: &RgbImage, degrees: f64) -> RgbImage {
    let (w, h) = img.dimensions();
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    let mut out = RgbImage::new(w, h);
    for (x, y, px) in out.enumerate_pixels_mut() {
        let (dx, dy) = (x as f64 - cx, y as f64 - cy);
        let sx = cos * dx - sin * dy + cx;
        let sy = sin * dx + cos * dy + cy;
        if sx < 0.0 || sy < 0.0 || sx > (w - 1) as f64 || sy > (h - 1) as f64 {
            continue;
        }
        let (x0, y0) = (sx.floor() as u32, sy.floor() as u32);
        let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
        let (fx, fy) = (sx - x0 as f64, sy - y0 as f64);
        for c in 0..3 {
            let p = |x: u32, y: u32| img.get_pixel(x, y)[c] as f64;
            let top = p(x0, y0) * (1.0 - fx) + p(x1, y0) * fx;
            let bottom = p(x0, y1) * (1.0 - fx) + p(x1, y1) * fx;
            px[c] = (top * (1.0 - fy) + bottom * fy).round() as u8;
        }
    }
    out
}

/// Brightness, contrast and saturation jitter on `[3, S, S]` values in [0, 1], in a random order.
fn jitter(chw: &mut [f32], a: &Augment, rng: &mut impl Rng) {
    let mut ops = [0usize, 1, 2];
    if a.brightness == 0.0 && a.contrast == 0.0 && a.saturation == 0.0 {
        return;
    }
    ops.shuffle(rng);
    let n = chw.len() / 3;
    let factor = |x: f64, rng: &mut dyn rand::RngCore| -> f32 {
        rng.random_range((1.0 - x).max(0.0)..=1.0 + x) as f32
    };
    let gray = |chw: &[f32], i: usize| 0.299 * chw[i] + 0.587 * chw[n + i] + 0.114 * chw[2 * n + i];
    for op in ops {
        match op {
            0 if a.brightness > 0.0 => {
                let f = factor(a.brightness, rng);
                chw.iter_mut().for_each(|v| *v = (*v * f).clamp(0.0, 1.0));
            }
            1 if a.contrast > 0.0 => {
                let f = factor(a.contrast, rng);
                let mean = (0..n).map(|i| gray(chw, i)).sum::<f32>() / n as f32;
                chw.iter_mut()
                    .for_each(|v| *v = (*v * f + mean * (1.0 - f)).clamp(0.0, 1.0));
            }
            2 if a.saturation > 0.0 => {
                let f = factor(a.saturation, rng);
                for i in 0..n {
                    let g = gray(chw, i);
                    for c in 0..3 {
                        let v = &mut chw[c * n + i];
                        *v = (*v * f + g * (1.0 - f)).clamp(0.0, 1.0);
                    }
                }
            }
            _ => {}
        }
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
