//! Decoding an image file into 8-bit RGB, whatever its format and colour type.
//!
//! Formats: JPEG, PNG, BMP, GIF (first frame), WebP, TIFF, recognised by their first bytes, not by
//! their name ([`super::sniff`], which also names the formats that are not decoded).
//! JPEG EXIF orientation is applied. Alpha is composited onto [`BACKGROUND`]. A file whose data
//! is cut short is refused ([`complete`]), not padded. Headers that claim more than [`MAX_SIDE`]
//! pixels a side, or images whose pixels (decoded and as RGB) need more than [`MAX_ALLOC`] bytes,
//! are refused before their pixels are allocated.

use std::io::Cursor;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use image::{DynamicImage, ImageDecoder, ImageError, ImageReader, Limits, RgbImage};

use super::complete;
use super::sniff::{advice, sniff, Content, HEAD};

/// The colour transparent pixels are composited onto: white.
pub const BACKGROUND: [u8; 3] = [255, 255, 255];
/// Largest width or height accepted.
pub const MAX_SIDE: u32 = 16_384;
/// Largest decoding allocation accepted, in bytes.
pub const MAX_ALLOC: u64 = 1 << 30;

/// Decodes `path` into RGB. The error names the file and the reason.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    decode(path).with_context(|| format!("{}", path.display()))
}

fn decode(path: &Path) -> Result<RgbImage> {
    let len = std::fs::metadata(path)
        .map_err(|e| anyhow!("cannot open: {e}"))?
        .len();
    if len == 0 {
        return Err(anyhow!("empty file (0 bytes)"));
    }
    if len > MAX_ALLOC {
        bail!(
            "too large: {} MiB, more than the {} MiB an image may take",
            len >> 20,
            MAX_ALLOC >> 20
        );
    }
    let bytes = std::fs::read(path).map_err(|e| anyhow!("cannot read: {e}"))?;
    let format = match sniff(&bytes[..bytes.len().min(HEAD)], path) {
        Content::Image(f) => f,
        Content::Unsupported(kind) => bail!("{}", advice(kind)),
        Content::Other => bail!("not an image: the content is in no known image format"),
    };
    complete::check(format, &bytes)?;
    let mut reader = ImageReader::new(Cursor::new(&bytes));
    reader.set_format(format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    // The decoder's own limits cover its working memory, not the image it returns.
    let (w, h) = decoder.dimensions();
    let need = decoder
        .total_bytes()
        .saturating_add(w as u64 * h as u64 * 3);
    if need > MAX_ALLOC {
        bail!(
            "too large to decode: {w}×{h} {:?} needs {} MiB, more than {} MiB",
            decoder.color_type(),
            need >> 20,
            MAX_ALLOC >> 20
        );
    }
    let orientation = decoder.orientation().map_err(decode_error)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    img.apply_orientation(orientation);
    Ok(to_rgb(img))
}

/// A decoder's error in words; running out of bytes is called what it is.
fn decode_error(e: ImageError) -> anyhow::Error {
    match e {
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            anyhow!("truncated: the image data ends before the image does")
        }
        e => anyhow!("cannot decode: {e}"),
    }
}

/// Converts any colour type to 8-bit RGB, compositing alpha onto [`BACKGROUND`].
pub fn to_rgb(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.into_rgb8();
    }
    let rgba = img.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let a = p[3] as u32;
        for c in 0..3 {
            let v = p[c] as u32 * a + BACKGROUND[c] as u32 * (255 - a);
            o[c] = ((v + 127) / 255) as u8;
        }
    }
    out
}
