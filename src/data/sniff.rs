//! What a file holds, from its first bytes rather than its name: a format the tool decodes
//! (JPEG, PNG, GIF, BMP, WebP, TIFF — whatever the extension: `.jfif`, `.jpe`, `.JPG`, none),
//! a format it recognises but cannot decode (HEIC/HEIF, AVIF, camera RAW, SVG, PDF, …), or
//! something else.
//!
//! Signatures: ISO base media `ftyp` brands (HEIF: ISO/IEC 23008-12; AVIF; Canon CR3), `%PDF-`,
//! SVG's `<svg` element, JPEG XL and JPEG 2000 boxes, Photoshop's `8BPS`, and the RAW formats
//! that are not TIFF inside (Fujifilm RAF, Olympus ORF, Panasonic RW2); TIFF-based RAW files
//! (CR2, NEF, ARW, DNG, …) are told from TIFF by their extension.

use std::io::Read;
use std::path::Path;

use image::ImageFormat;

/// Bytes read from the start of a file to tell what it is.
pub const HEAD: usize = 512;

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// An image in a format the tool decodes.
    Image(ImageFormat),
    /// An image (or a picture document) in a format the tool recognises but does not decode.
    Unsupported(&'static str),
    /// Anything else.
    Other,
}

/// Formats the tool decodes (the `image` crate's features in Cargo.toml).
pub const DECODED: [ImageFormat; 6] = [
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::Gif,
    ImageFormat::Bmp,
    ImageFormat::WebP,
    ImageFormat::Tiff,
];

const RAW_EXTENSIONS: [&str; 16] = [
    "cr2", "crw", "nef", "nrw", "arw", "srf", "sr2", "dng", "pef", "srw", "3fr", "erf", "kdc",
    "mos", "mrw", "x3f",
];

/// What `head` (the first up to [`HEAD`] bytes of `path`) holds.
pub fn sniff(head: &[u8], path: &Path) -> Content {
    if let Some(kind) = unsupported(head, path) {
        return Content::Unsupported(kind);
    }
    match image::guess_format(head) {
        Ok(f) if DECODED.contains(&f) => Content::Image(f),
        Ok(f) => Content::Unsupported(other_format_name(f)),
        Err(_) => Content::Other,
    }
}

/// Reads the head of `path` and sniffs it.
pub fn sniff_file(path: &Path) -> std::io::Result<Content> {
    let mut head = Vec::with_capacity(HEAD);
    std::fs::File::open(path)?
        .take(HEAD as u64)
        .read_to_end(&mut head)?;
    Ok(sniff(&head, path))
}

/// The advice for an unsupported kind.
pub fn advice(kind: &str) -> String {
    format!("{kind} is not supported: convert it to JPEG or PNG")
}

fn unsupported(h: &[u8], path: &Path) -> Option<&'static str> {
    if h.get(4..8) == Some(b"ftyp") {
        let brand = h.get(8..12)?;
        return Some(match brand {
            b"heic" | b"heix" | b"hevc" | b"hevx" | b"heim" | b"heis" | b"mif1" | b"msf1" => {
                "HEIC/HEIF"
            }
            b"avif" | b"avis" => "AVIF",
            b"crx " => "camera RAW (Canon CR3)",
            _ => "video (MP4/MOV)",
        });
    }
    if h.starts_with(b"%PDF-") {
        return Some("PDF");
    }
    if h.starts_with(&[0xFF, 0x0A]) || h.starts_with(b"\0\0\0\x0cJXL \r\n\x87\n") {
        return Some("JPEG XL");
    }
    if h.starts_with(b"\0\0\0\x0cjP  \r\n\x87\n") || h.starts_with(&[0xFF, 0x4F, 0xFF, 0x51]) {
        return Some("JPEG 2000");
    }
    if h.starts_with(b"8BPS") {
        return Some("Photoshop (PSD)");
    }
    if h.starts_with(b"FUJIFILMCCD-RAW") {
        return Some("camera RAW (Fujifilm RAF)");
    }
    if h.starts_with(b"IIRO") || h.starts_with(b"IIRS") || h.starts_with(b"MMOR") {
        return Some("camera RAW (Olympus ORF)");
    }
    if h.starts_with(b"IIU\0") {
        return Some("camera RAW (Panasonic RW2)");
    }
    let tiff = h.starts_with(b"II*\0") || h.starts_with(b"MM\0*");
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if tiff && ext.as_deref().is_some_and(|e| RAW_EXTENSIONS.contains(&e)) {
        return Some("camera RAW (TIFF-based: CR2, NEF, ARW, DNG, …)");
    }
    if is_svg(h) {
        return Some("SVG");
    }
    None
}

fn is_svg(h: &[u8]) -> bool {
    let text = String::from_utf8_lossy(h);
    let t = text.trim_start_matches('\u{feff}').trim_start();
    t.starts_with('<') && t.to_ascii_lowercase().contains("<svg")
}

fn other_format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Avif => "AVIF",
        ImageFormat::Ico => "ICO",
        ImageFormat::Hdr => "Radiance HDR",
        ImageFormat::OpenExr => "OpenEXR",
        ImageFormat::Pnm => "PNM",
        ImageFormat::Qoi => "QOI",
        ImageFormat::Dds => "DDS",
        ImageFormat::Farbfeld => "Farbfeld",
        ImageFormat::Tga => "TGA",
        _ => "an image format the tool does not decode",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_not_names_decide() {
        let p = Path::new("x.jpg");
        let ftyp = |brand: &[u8]| [b"\0\0\0\x18ftyp".as_slice(), brand, b"\0\0\0\0"].concat();
        assert_eq!(sniff(&ftyp(b"heic"), p), Content::Unsupported("HEIC/HEIF"));
        assert_eq!(sniff(&ftyp(b"mif1"), p), Content::Unsupported("HEIC/HEIF"));
        assert_eq!(sniff(&ftyp(b"avif"), p), Content::Unsupported("AVIF"));
        assert_eq!(sniff(b"%PDF-1.7\n", p), Content::Unsupported("PDF"));
        assert_eq!(
            sniff(
                b"<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\">",
                p
            ),
            Content::Unsupported("SVG")
        );
        assert_eq!(sniff(b"<html><body>", p), Content::Other);
        assert_eq!(sniff(b"hello", p), Content::Other);
        assert_eq!(
            sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 16], Path::new("a.jfif")),
            Content::Image(ImageFormat::Jpeg)
        );
        let tiff = b"II*\0\x08\0\0\0";
        assert_eq!(
            sniff(tiff, Path::new("a.tif")),
            Content::Image(ImageFormat::Tiff)
        );
        assert!(matches!(
            sniff(tiff, Path::new("IMG_1.CR2")),
            Content::Unsupported(k) if k.starts_with("camera RAW")
        ));
    }
}
