//! Where the model fails: per class, the held-out photos it gets most confidently wrong, the
//! ones it is least sure of, and the ones it gets most confidently right, each as a small photo
//! and its Grad-CAM map (Selvaraju et al. 2017) of the class it chose, from the model that
//! predicted it (a cv's fold model, or the run's model).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use image::{imageops, RgbImage};
use serde::Serialize;

use crate::data::image::load_rgb;
use crate::data::transform::EvalTransform;
use crate::ensemble::Ensemble;
use crate::explain::{ensemble_maps, Method};
use crate::metrics::argmax;
use crate::plot;
use crate::precision::Compute;

/// Side of a thumbnail in pixels.
pub const THUMB: u32 = 160;
/// Most photos shown per class and kind, whatever `--gallery` asks.
pub const MAX_PER_KIND: usize = 8;
/// Most classes shown (the first ones by the model's order).
pub const MAX_CLASSES: usize = 20;
/// JPEG quality of the thumbnails.
const QUALITY: u8 = 80;

/// One held-out prediction the gallery can pick.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// As the run or oof.csv names it (relative to the dataset).
    pub path: String,
    pub file: PathBuf,
    pub truth: usize,
    pub probs: Vec<f64>,
    /// The checkpoint that predicted it.
    pub model: PathBuf,
}

/// Which of the three lists a tile is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind3 {
    ConfidentlyWrong,
    Uncertain,
    ConfidentlyRight,
}

impl Kind3 {
    pub const ALL: [Kind3; 3] = [
        Kind3::ConfidentlyWrong,
        Kind3::Uncertain,
        Kind3::ConfidentlyRight,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Kind3::ConfidentlyWrong => "most confidently wrong",
            Kind3::Uncertain => "least certain",
            Kind3::ConfidentlyRight => "most confidently right",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Kind3::ConfidentlyWrong => "confidently_wrong",
            Kind3::Uncertain => "uncertain",
            Kind3::ConfidentlyRight => "confidently_right",
        }
    }
}

/// One photo of the gallery.
#[derive(Debug, Clone)]
pub struct Tile {
    pub kind: Kind3,
    pub prediction: Prediction,
    /// The class the model chose and its probability.
    pub predicted: usize,
    pub probability: f64,
    /// JPEG thumbnails: the photo as the network saw it, and the map over it.
    pub photo: Vec<u8>,
    pub cam: Vec<u8>,
}

/// The predictions shown, per true class and kind, in order: `per_kind` of each.
pub fn select(
    predictions: &[Prediction],
    classes: usize,
    per_kind: usize,
) -> Vec<(usize, Kind3, Vec<usize>)> {
    let per_kind = per_kind.min(MAX_PER_KIND);
    let mut out = vec![];
    for c in 0..classes.min(MAX_CLASSES) {
        let of: Vec<usize> = (0..predictions.len())
            .filter(|&i| predictions[i].truth == c)
            .collect();
        let top = |i: usize| {
            let p = &predictions[i].probs;
            p[argmax(p)]
        };
        let mut wrong: Vec<usize> = of
            .iter()
            .copied()
            .filter(|&i| argmax(&predictions[i].probs) != c)
            .collect();
        // Ties broken by path, so that the choice does not depend on the order of the rows.
        let by = |key: &dyn Fn(usize) -> f64, v: &mut Vec<usize>| {
            v.sort_by(|&a, &b| {
                key(b)
                    .total_cmp(&key(a))
                    .then_with(|| predictions[a].path.cmp(&predictions[b].path))
            })
        };
        by(&top, &mut wrong);
        let mut unsure = of.clone();
        by(&|i| -top(i), &mut unsure);
        let mut right: Vec<usize> = of
            .iter()
            .copied()
            .filter(|&i| argmax(&predictions[i].probs) == c)
            .collect();
        by(&|i| predictions[i].probs[c], &mut right);
        for (kind, list) in Kind3::ALL.into_iter().zip([wrong, unsure, right]) {
            out.push((c, kind, list.into_iter().take(per_kind).collect()));
        }
    }
    out
}

/// The tiles of `chosen`: each photo cropped as evaluation crops it, with the Grad-CAM map of
/// the class its model chose, from its model (one pass per model); and the photos that could
/// not be read (left out, each with its error: a dataset moved since training).
pub fn tiles(
    predictions: &[Prediction],
    chosen: &[(usize, Kind3, Vec<usize>)],
    compute: Compute,
) -> Result<(Vec<Tile>, Vec<String>)> {
    let mut unreadable = vec![];
    let mut by_model: BTreeMap<&PathBuf, Vec<usize>> = BTreeMap::new();
    for (_, _, list) in chosen {
        for &i in list {
            let v = by_model.entry(&predictions[i].model).or_default();
            if !v.contains(&i) {
                v.push(i);
            }
        }
    }
    let mut pictures: BTreeMap<usize, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
    for (model, items) in by_model {
        let ensemble = Ensemble::load(std::slice::from_ref(model), compute)
            .with_context(|| format!("the gallery's model {}", model.display()))?;
        let meta = ensemble.meta().clone();
        let transform = EvalTransform {
            image_size: meta.image_size as u32,
            normalization: meta.normalization,
        };
        let layer = meta.arch.default_tap_layer();
        for chunk in items.chunks(8) {
            let mut crops: Vec<RgbImage> = vec![];
            let mut kept = vec![];
            for &i in chunk {
                match load_rgb(&predictions[i].file) {
                    Ok(img) => {
                        crops.push(transform.crop(&img));
                        kept.push(i);
                    }
                    Err(e) => unreadable.push(crate::text::error_line(&e)),
                }
            }
            if kept.is_empty() {
                continue;
            }
            let chunk = &kept[..];
            let batch = transform.batch_of_crops(&crops)?;
            let classes: Vec<i64> = chunk
                .iter()
                .map(|&i| argmax(&predictions[i].probs) as i64)
                .collect();
            let maps = ensemble_maps(&ensemble, compute, &batch, &classes, layer, Method::GradCam)?;
            let s = meta.image_size as usize;
            for (j, &i) in chunk.iter().enumerate() {
                let cam = plot::cam::blend(&crops[j], &maps[j * s * s..(j + 1) * s * s])?;
                pictures.insert(i, (thumbnail(&crops[j])?, thumbnail(&cam)?));
            }
        }
    }
    let mut out = vec![];
    for (_, kind, list) in chosen {
        for &i in list {
            let p = &predictions[i];
            let predicted = argmax(&p.probs);
            let Some((photo, cam)) = pictures.get(&i).cloned() else {
                continue;
            };
            out.push(Tile {
                kind: *kind,
                prediction: p.clone(),
                predicted,
                probability: p.probs[predicted],
                photo,
                cam,
            });
        }
    }
    Ok((out, unreadable))
}

/// A JPEG of `img` at most [`THUMB`] pixels on its longer side.
pub fn thumbnail(img: &RgbImage) -> Result<Vec<u8>> {
    let (w, h) = img.dimensions();
    let scale = THUMB as f64 / w.max(h) as f64;
    let small = if scale < 1.0 {
        let (tw, th) = (
            ((w as f64 * scale).round() as u32).max(1),
            ((h as f64 * scale).round() as u32).max(1),
        );
        imageops::resize(img, tw, th, imageops::FilterType::Triangle)
    } else {
        img.clone()
    };
    let mut bytes = vec![];
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, QUALITY)
        .encode_image(&small)
        .context("encoding a thumbnail")?;
    Ok(bytes)
}
