//! Decoding an image file into 8-bit RGB, whatever its format and colour type.
//!
//! Formats: JPEG, PNG, BMP, GIF (first frame), WebP, TIFF, recognised by their first bytes, not by
//! their name ([`super::sniff`], which also names the formats that are not decoded).
//! JPEG EXIF orientation is applied. Alpha is composited onto [`BACKGROUND`]. A file whose data
//! is cut short is refused ([`complete`]), not padded. Headers that claim more than [`MAX_SIDE`]
//! pixels a side, or images whose pixels (decoded and as RGB) need more than [`MAX_ALLOC`] bytes,
//! are refused before their pixels are allocated, and decoding threads share one process-wide
//! [`Budget`] of that size.

use std::io::{BufRead, BufReader, Cursor, Read, Seek};
use std::path::Path;
use std::sync::{Condvar, Mutex, OnceLock};

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

/// Decodes an image held in memory (an upload, say) into RGB, with the same checks and
/// budget as [`load_rgb`]; `name` is what errors call it and what the format check reads
/// (its extension, for kinds known by name).
pub fn decode_bytes(bytes: &[u8], name: &Path) -> Result<RgbImage> {
    let len = check_length(bytes.len() as u64)?;
    let format = format_of(&bytes[..bytes.len().min(HEAD)], name)?;
    let need = match decoder(Cursor::new(bytes), format) {
        Ok(d) => decoded_need(&d, len)?,
        Err(e) => return Err(header_error(format, bytes, e)),
    };
    let _permit = Budget::global().take(need);
    decode_whole(bytes, format)
}

fn decode(path: &Path) -> Result<RgbImage> {
    let len = check_length(
        std::fs::metadata(path)
            .map_err(|e| anyhow!("cannot open: {e}"))?
            .len(),
    )?;
    let mut file = std::fs::File::open(path).map_err(|e| anyhow!("cannot open: {e}"))?;
    let mut head = Vec::with_capacity(HEAD);
    (&mut file)
        .take(HEAD as u64)
        .read_to_end(&mut head)
        .map_err(|e| anyhow!("cannot read: {e}"))?;
    let format = format_of(&head, path)?;
    // The header alone says what decoding will take (the file's bytes included): checked
    // before the file is read whole. The same open file is read from its start again.
    file.rewind().map_err(|e| anyhow!("cannot read: {e}"))?;
    let header = decoder(BufReader::new(&mut file), format).map(|d| decoded_need(&d, len));
    let need = match header {
        Ok(need) => need?,
        Err(e) => return Err(header_error(format, &read_all(&mut file)?, e)),
    };
    let _permit = Budget::global().take(need);
    let bytes = read_all(&mut file)?;
    decode_whole(&bytes, format)
}

/// The whole of an open file, from its start.
fn read_all(file: &mut std::fs::File) -> Result<Vec<u8>> {
    file.rewind().map_err(|e| anyhow!("cannot read: {e}"))?;
    let mut bytes = vec![];
    file.read_to_end(&mut bytes)
        .map_err(|e| anyhow!("cannot read: {e}"))?;
    Ok(bytes)
}

/// Why a header did not parse: an image cut short says so; otherwise the decoder's reason.
fn header_error(format: image::ImageFormat, bytes: &[u8], e: ImageError) -> anyhow::Error {
    match complete::check(format, bytes) {
        Err(cut) => cut,
        Ok(()) => decode_error(e),
    }
}

/// Refuses an empty input or one larger than [`MAX_ALLOC`]; passes its length on.
fn check_length(len: u64) -> Result<u64> {
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
    Ok(len)
}

/// The image format the first bytes show; the reason otherwise.
fn format_of(head: &[u8], name: &Path) -> Result<image::ImageFormat> {
    match sniff(head, name) {
        Content::Image(f) => Ok(f),
        Content::Unsupported(kind) => bail!("{}", advice(kind)),
        Content::Other => bail!("not an image: the content is in no known image format"),
    }
}

/// What decoding after this header takes: the `len` bytes of the encoded image, the decoded
/// pixels, the RGB copy and, with alpha, the 8-bit RGBA copy composited from; refused above
/// [`MAX_ALLOC`].
fn decoded_need(d: &impl ImageDecoder, len: u64) -> Result<u64> {
    let (w, h) = d.dimensions();
    let pixels = w as u64 * h as u64;
    let alpha = if d.color_type().has_alpha() {
        pixels * 4
    } else {
        0
    };
    let need = d
        .total_bytes()
        .saturating_add(pixels * 3)
        .saturating_add(alpha)
        .saturating_add(len);
    if need > MAX_ALLOC {
        bail!(
            "too large to decode: {w}×{h} {:?} needs {} MiB, more than {} MiB",
            d.color_type(),
            need >> 20,
            MAX_ALLOC >> 20
        );
    }
    Ok(need)
}

/// Decodes a whole image of `format` (checked complete first), EXIF orientation applied.
fn decode_whole(bytes: &[u8], format: image::ImageFormat) -> Result<RgbImage> {
    complete::check(format, bytes)?;
    let mut d = decoder(Cursor::new(bytes), format).map_err(decode_error)?;
    let orientation = d.orientation().map_err(decode_error)?;
    let mut img = DynamicImage::from_decoder(d).map_err(decode_error)?;
    img.apply_orientation(orientation);
    Ok(to_rgb(img))
}

/// A decoder of `format` on `source`, within the size limits (its header read).
fn decoder<'a, R: BufRead + Seek + 'a>(
    source: R,
    format: image::ImageFormat,
) -> Result<impl ImageDecoder + 'a, ImageError> {
    let mut reader = ImageReader::new(source);
    reader.set_format(format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    reader.into_decoder()
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

/// Bytes that decoding may hold at once across the whole process: threads decoding in
/// parallel (the loader, predict's reader) wait for each other rather than each taking up to
/// [`MAX_ALLOC`].
pub struct Budget {
    limit: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

/// Bytes of a [`Budget`] held until dropped.
pub struct Permit<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl Budget {
    pub fn new(limit: u64) -> Budget {
        Budget {
            limit,
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// The process-wide budget of decoding: [`MAX_ALLOC`].
    pub fn global() -> &'static Budget {
        static GLOBAL: OnceLock<Budget> = OnceLock::new();
        GLOBAL.get_or_init(|| Budget::new(MAX_ALLOC))
    }

    /// Waits until `bytes` fit beside what others hold (a request alone always fits), then
    /// holds them.
    pub fn take(&self, bytes: u64) -> Permit<'_> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used > 0 && *used + bytes > self.limit {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += bytes;
        Permit {
            budget: self,
            bytes,
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        *self.used.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut used = self.budget.used.lock().unwrap_or_else(|e| e.into_inner());
        *used -= self.bytes;
        self.budget.freed.notify_all();
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
