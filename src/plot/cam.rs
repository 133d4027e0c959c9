//! `<image>.cam.png`: the preprocessed image with a class activation map blended over it in
//! viridis, and a legend strip: the class, its probability, the method and layer, and the
//! colour scale.

use anyhow::{bail, Result};
use image::{imageops, Rgb, RgbImage};
use plotters::prelude::*;

use super::{draw_on, err, viridis, FAMILY};

/// Share of the heat-map in the blend.
const ALPHA: f64 = 0.45;
/// The picture is at least this wide (small inputs are enlarged for reading).
const MIN_WIDTH: u32 = 448;
const STRIP: u32 = 64;

/// `crop` (the network's input, S×S) with `map` (S·S values in [0, 1], row-major) over it.
pub fn render(crop: &RgbImage, map: &[f32], title: &str) -> Result<RgbImage> {
    let blended = blend(crop, map)?;
    let (w, h) = crop.dimensions();
    let scale = MIN_WIDTH.div_ceil(w).max(1);
    let (sw, sh) = (w * scale, h * scale);
    let big = imageops::resize(&blended, sw, sh, imageops::FilterType::Triangle);
    let mut canvas = RgbImage::from_pixel(sw, sh + STRIP, Rgb([255, 255, 255]));
    imageops::overlay(&mut canvas, &big, 0, 0);
    draw_on(&canvas, |root| {
        let y0 = sh as i32;
        root.draw(&Text::new(
            title.to_string(),
            (8, y0 + 6),
            (FAMILY, 16).into_font().color(&BLACK),
        ))
        .map_err(err)?;
        let (bx, bw) = (8 + 40, (sw as i32 - 96).max(40));
        let by = y0 + 34;
        for i in 0..bw {
            let c = viridis(i as f64 / (bw - 1).max(1) as f64);
            root.draw(&Rectangle::new(
                [(bx + i, by), (bx + i + 1, by + 14)],
                RGBColor(c[0], c[1], c[2]).filled(),
            ))
            .map_err(err)?;
        }
        root.draw(&Text::new("low", (8, by), (FAMILY, 13).into_font()))
            .map_err(err)?;
        root.draw(&Text::new(
            "high",
            (bx + bw + 6, by),
            (FAMILY, 13).into_font(),
        ))
        .map_err(err)?;
        Ok(())
    })
}

/// The map in viridis blended over the crop, at the crop's size.
pub fn blend(crop: &RgbImage, map: &[f32]) -> Result<RgbImage> {
    let (w, h) = crop.dimensions();
    if map.len() != (w * h) as usize {
        bail!("map of {} values for a {w}×{h} image", map.len());
    }
    Ok(RgbImage::from_fn(w, h, |x, y| {
        let m = viridis(map[(y * w + x) as usize] as f64);
        let p = crop.get_pixel(x, y).0;
        Rgb([0, 1, 2].map(|c| ((1.0 - ALPHA) * p[c] as f64 + ALPHA * m[c] as f64).round() as u8))
    }))
}

/// The map as a 16-bit grayscale image (0 to 65535).
pub fn raw(map: &[f32], w: u32, h: u32) -> image::ImageBuffer<image::Luma<u16>, Vec<u16>> {
    image::ImageBuffer::from_fn(w, h, |x, y| {
        let v = map[(y * w + x) as usize].clamp(0.0, 1.0);
        image::Luma([(v * 65535.0).round() as u16])
    })
}
