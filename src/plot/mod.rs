//! Pictures a person looks at: the training curves (`results.png`), the confusion matrix and ROC
//! curve of an evaluation, a mosaic of the first augmented batch, cross-validation's per-fold
//! charts, reliability diagrams, and Grad-CAM
//! overlays. Drawn by plotters into RGB buffers with a font built into the
//! binary (DejaVu Sans, assets/), so no system font or library is needed, and written as PNG (or
//! JPEG) atomically.

pub mod cam;
pub mod confusion;
pub mod cv;
pub mod mosaic;
pub mod reliability;
pub mod results;
pub mod roc;

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};
use image::{ImageFormat, RgbImage};
use plotters::prelude::*;

use crate::checkpoint::write_atomic;

/// The font every picture uses, registered with plotters as "sans-serif".
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
pub const FAMILY: &str = "sans-serif";

/// Registers [`FONT`] once per process.
pub fn font() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
            .map_err(|_| "the built-in font cannot be read".to_string())
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// A plotters error as an anyhow error.
pub fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e:?}")
}

/// Runs `draw` on a white canvas of `w`×`h` and returns the picture.
pub fn draw(
    w: u32,
    h: u32,
    draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<RgbImage> {
    font()?;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw(&root)?;
        root.present().map_err(err)?;
    }
    RgbImage::from_raw(w, h, buf).ok_or_else(|| anyhow!("drawing: buffer of the wrong size"))
}

/// Draws on a copy of `img`.
pub fn draw_on(
    img: &RgbImage,
    draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<RgbImage> {
    font()?;
    let (w, h) = img.dimensions();
    let mut buf = img.as_raw().clone();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw(&root)?;
        root.present().map_err(err)?;
    }
    RgbImage::from_raw(w, h, buf).ok_or_else(|| anyhow!("drawing: buffer of the wrong size"))
}

/// Writes `img` to `path` (PNG, or JPEG for `.jpg`), atomically.
pub fn save(img: &RgbImage, path: &Path) -> Result<()> {
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("jpg") | Some("jpeg") => ImageFormat::Jpeg,
        _ => ImageFormat::Png,
    };
    let bytes = encode(img, format).with_context(|| format!("encoding {}", path.display()))?;
    write_atomic(path, &bytes)
}

/// `img` encoded as PNG.
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>> {
    encode(img, ImageFormat::Png).context("encoding a PNG")
}

fn encode(img: &RgbImage, format: ImageFormat) -> Result<Vec<u8>> {
    let mut bytes = std::io::Cursor::new(vec![]);
    img.write_to(&mut bytes, format)?;
    Ok(bytes.into_inner())
}

/// File names of an evaluation's pictures.
pub const CONFUSION_PNG: &str = "confusion_matrix.png";
pub const ROC_PNG: &str = "roc.png";

/// An evaluation's pictures into `dir`: `confusion_matrix.png`, and for two classes `roc.png`
/// (class 0 positive). `title` says what was measured. Returns the files written.
pub fn evaluation(
    dir: &Path,
    classes: &[String],
    probs: &[Vec<f64>],
    labels: &[usize],
    title: &str,
) -> Result<Vec<std::path::PathBuf>> {
    let e = crate::metrics::evaluate(classes, probs, labels);
    let mut written = vec![dir.join(CONFUSION_PNG)];
    save(
        &confusion::render(classes, &e.confusion, title)?,
        &written[0],
    )?;
    if let Some(b) = &e.binary {
        let scores: Vec<f64> = probs.iter().map(|p| p[0]).collect();
        let curve = roc::Curve {
            name: title.to_string(),
            points: crate::metrics::roc_curve(&scores, labels),
            auc: b.roc_auc,
            bold: false,
        };
        let path = dir.join(ROC_PNG);
        save(&roc::render(&[curve], &b.positive_class)?, &path)?;
        written.push(path);
    }
    Ok(written)
}

/// Viridis (van der Walt and Smith's perceptually uniform colour map, as in matplotlib) at
/// `t` in [0, 1], interpolated between eleven of its colours.
pub fn viridis(t: f64) -> [u8; 3] {
    const STOPS: [[u8; 3]; 11] = [
        [0x44, 0x01, 0x54],
        [0x48, 0x24, 0x75],
        [0x41, 0x44, 0x87],
        [0x35, 0x5f, 0x8d],
        [0x2a, 0x78, 0x8e],
        [0x21, 0x91, 0x8c],
        [0x22, 0xa8, 0x84],
        [0x44, 0xbf, 0x70],
        [0x7a, 0xd1, 0x51],
        [0xbd, 0xdf, 0x26],
        [0xfd, 0xe7, 0x25],
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * 10.0;
    let i = (x.floor() as usize).min(9);
    let f = x - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    [0, 1, 2].map(|c| (a[c] as f64 + (b[c] as f64 - a[c] as f64) * f).round() as u8)
}

/// Colours of the series in line charts (matplotlib's tab10).
pub const SERIES: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_runs_from_dark_purple_to_yellow() {
        assert_eq!(viridis(0.0), [0x44, 0x01, 0x54]);
        assert_eq!(viridis(1.0), [0xfd, 0xe7, 0x25]);
        assert_eq!(viridis(0.5), [0x21, 0x91, 0x8c]);
        let lum = |c: [u8; 3]| 0.3 * c[0] as f64 + 0.59 * c[1] as f64 + 0.11 * c[2] as f64;
        let mut last = -1.0;
        for i in 0..=100 {
            let l = lum(viridis(i as f64 / 100.0));
            assert!(l >= last - 0.6, "not increasing at {i}");
            last = l;
        }
    }
}
