//! `train_batch0.jpg`: the first training batch as the network sees it (augmented, mixed),
//! un-normalised, in a grid, each image with its class.

use anyhow::{bail, Result};
use image::{imageops, RgbImage};
use plotters::prelude::*;
use tch::{Kind, Tensor};

use super::{draw_on, err, FAMILY};
use crate::data::transform::Normalization;

/// Tiles are this wide at most and at least (small inputs are enlarged to be seen).
const TILE: u32 = 192;
const MIN_TILE: u32 = 128;

/// A grid of the batch `images` `[N, 3, S, S]` (normalised), each labelled.
pub fn render(images: &Tensor, labels: &[String], norm: &Normalization) -> Result<RgbImage> {
    let size = images.size();
    let [n, 3, s, _] = size.as_slice() else {
        bail!("batch: expected shape [N, 3, S, S], got {size:?}");
    };
    let (n, s) = (*n as usize, *s as u32);
    if labels.len() != n {
        bail!("{} labels for {n} images", labels.len());
    }
    let mean = Tensor::f_from_slice(&norm.mean)?.f_view([1, 3, 1, 1])?;
    let std = Tensor::f_from_slice(&norm.std)?.f_view([1, 3, 1, 1])?;
    let pixels = images
        .f_to_device(tch::Device::Cpu)?
        .f_to_kind(Kind::Double)?
        .f_mul(&std)?
        .f_add(&mean)?
        .f_clamp(0.0, 1.0)?
        .f_mul_scalar(255.0)?
        .f_round()?
        .f_to_kind(Kind::Uint8)?
        .f_permute([0, 2, 3, 1])?
        .f_contiguous()?;
    let mut bytes = vec![0u8; n * (s * s * 3) as usize];
    let len = bytes.len();
    pixels.f_copy_data_u8(&mut bytes, len)?;
    let cols = (n as f64).sqrt().ceil().max(1.0) as u32;
    let rows = (n as u32).div_ceil(cols);
    let tile = s.clamp(MIN_TILE, TILE);
    let mut grid = RgbImage::from_pixel(cols * tile, rows * tile, image::Rgb([255, 255, 255]));
    for i in 0..n {
        let chunk = &bytes[i * (s * s * 3) as usize..(i + 1) * (s * s * 3) as usize];
        let img = RgbImage::from_raw(s, s, chunk.to_vec())
            .ok_or_else(|| anyhow::anyhow!("batch image {i} of the wrong size"))?;
        let img = if tile == s {
            img
        } else {
            imageops::resize(&img, tile, tile, imageops::FilterType::Nearest)
        };
        let (x, y) = ((i as u32 % cols) * tile, (i as u32 / cols) * tile);
        imageops::overlay(&mut grid, &img, x as i64, y as i64);
    }
    draw_on(&grid, |root| {
        for (i, label) in labels.iter().enumerate() {
            let (x, y) = (
                ((i as u32 % cols) * tile) as i32,
                ((i as u32 / cols) * tile) as i32,
            );
            let fits = (tile as usize - 8) / 8;
            let label = if label.chars().count() > fits {
                format!(
                    "{}…",
                    label
                        .chars()
                        .take(fits.saturating_sub(1))
                        .collect::<String>()
                )
            } else {
                label.clone()
            };
            let w = 8 + 8 * label.chars().count() as i32;
            root.draw(&Rectangle::new(
                [(x, y), (x + w, y + 20)],
                BLACK.mix(0.6).filled(),
            ))
            .map_err(err)?;
            root.draw(&Text::new(
                label,
                (x + 4, y + 3),
                (FAMILY, 14).into_font().color(&WHITE),
            ))
            .map_err(err)?;
        }
        Ok(())
    })
}
