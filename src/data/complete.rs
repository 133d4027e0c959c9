//! Is all of an image file's data there? A structural walk of the container, before decoding.
//!
//! Decoders complete a cut file silently: zune-jpeg pads a JPEG whose entropy-coded data ends
//! early with grey, the PNG decoder returns a whole image when only the IEND chunk is missing,
//! and WebP and GIF decode a file that lacks its last bytes. A lesion half grey is not the
//! lesion, so a file whose structure ends before its end marker is refused here. The walks
//! follow the format specifications: JPEG (ITU-T T.81, annex B: markers, segment lengths, SOS
//! followed by entropy-coded data up to the next non-RST marker, EOI), PNG (chunks up to a whole
//! IEND), GIF89a (blocks and data sub-blocks up to the trailer), WebP (the RIFF size) and BMP
//! (the file size in its header). Bytes after the end marker are allowed (cameras append data
//! there). TIFF has no end marker; its decoder reports missing strips itself.

use anyhow::{bail, Result};
use image::ImageFormat;

/// Refuses `bytes` when its container says that more data should follow. The error starts
/// with "truncated:" and says where the data ends.
pub fn check(format: ImageFormat, bytes: &[u8]) -> Result<()> {
    match format {
        ImageFormat::Jpeg => jpeg(bytes),
        ImageFormat::Png => png(bytes),
        ImageFormat::Gif => gif(bytes),
        ImageFormat::WebP => riff(bytes),
        ImageFormat::Bmp => bmp(bytes),
        _ => Ok(()),
    }
}

/// "truncated: the file ends after N bytes, inside WHAT".
fn cut(what: &str, len: usize) -> anyhow::Error {
    anyhow::anyhow!("truncated: the file ends after {len} bytes, inside {what}")
}

fn u16_be(b: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]) as usize)
}

fn u32_le(b: &[u8], at: usize) -> Option<usize> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
}

fn is_rst(m: u8) -> bool {
    (0xD0..=0xD7).contains(&m)
}

fn jpeg(b: &[u8]) -> Result<()> {
    let n = b.len();
    let mut i = 2; // after SOI (FF D8), which format detection has seen
    loop {
        // Fill bytes and stray bytes before a marker are skipped, as libjpeg does.
        while i < n && b[i] != 0xFF {
            i += 1;
        }
        while i < n && b[i] == 0xFF {
            i += 1;
        }
        let Some(&m) = b.get(i) else {
            return Err(cut("the JPEG, before its end-of-image marker", n));
        };
        i += 1;
        match m {
            0xD9 => return Ok(()),
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(len) = u16_be(b, i) else {
            return Err(cut("a JPEG segment header", n));
        };
        if len < 2 {
            bail!(
                "damaged: JPEG segment FF{m:02X} at byte {} has length {len}",
                i - 2
            );
        }
        i += len;
        if i > n {
            return Err(cut(&format!("JPEG segment FF{m:02X}"), n));
        }
        if m == 0xDA {
            // Entropy-coded data: FF 00 is a data byte, FF D0–D7 a restart, anything else the
            // next marker.
            loop {
                while i < n && b[i] != 0xFF {
                    i += 1;
                }
                let next = b.get(i + 1).copied();
                match next {
                    None => {
                        return Err(cut(
                            "the JPEG's entropy-coded data, before its end-of-image marker",
                            n,
                        ))
                    }
                    Some(0x00) => i += 2,
                    Some(x) if is_rst(x) => i += 2,
                    Some(0xFF) => i += 1,
                    Some(_) => break,
                }
            }
        }
    }
}

fn png(b: &[u8]) -> Result<()> {
    let n = b.len();
    let mut i = 8;
    loop {
        let (Some(len), Some(kind)) = (
            b.get(i..i + 4)
                .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize),
            b.get(i + 4..i + 8),
        ) else {
            return Err(cut("the PNG, before its IEND chunk", n));
        };
        let kind = String::from_utf8_lossy(kind).into_owned();
        let end = i + 12 + len;
        if end > n {
            return Err(cut(&format!("the PNG's {kind} chunk"), n));
        }
        if kind == "IEND" {
            return Ok(());
        }
        i = end;
    }
}

fn gif(b: &[u8]) -> Result<()> {
    let n = b.len();
    let short = |what: &str| cut(&format!("the GIF's {what}"), n);
    let table = |packed: u8| {
        if packed & 0x80 != 0 {
            3usize << ((packed & 7) + 1)
        } else {
            0
        }
    };
    let Some(&screen) = b.get(10) else {
        return Err(short("screen descriptor"));
    };
    let mut i = 13 + table(screen);
    // Data sub-blocks: a size byte, that many bytes, until a size of zero.
    let sub_blocks = |mut i: usize| -> Option<usize> {
        loop {
            let size = *b.get(i)? as usize;
            i += 1 + size;
            if size == 0 {
                return Some(i);
            }
        }
    };
    loop {
        let Some(&block) = b.get(i) else {
            return Err(cut("the GIF, before its trailer", n));
        };
        i = match block {
            0x3B => return Ok(()),
            0x21 => sub_blocks(i + 2).ok_or_else(|| short("extension block"))?,
            0x2C => {
                let Some(&packed) = b.get(i + 9) else {
                    return Err(short("image descriptor"));
                };
                sub_blocks(i + 10 + table(packed) + 1).ok_or_else(|| short("image data"))?
            }
            x => bail!("damaged: GIF has byte {x:02X} at {i} where a block should start"),
        };
    }
}

fn riff(b: &[u8]) -> Result<()> {
    let Some(size) = u32_le(b, 4) else {
        return Err(cut("the WebP's RIFF header", b.len()));
    };
    let want = 8 + size;
    if b.len() < want {
        bail!(
            "truncated: {} of the {want} bytes its WebP (RIFF) header announces",
            b.len()
        );
    }
    Ok(())
}

fn bmp(b: &[u8]) -> Result<()> {
    match u32_le(b, 2) {
        None => Err(cut("the BMP's file header", b.len())),
        Some(want) if want > b.len() => bail!(
            "truncated: {} of the {want} bytes its BMP header announces",
            b.len()
        ),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_restart_markers_and_stuffed_bytes_stay_inside_the_scan() {
        // SOI, SOS (length 2), data with FF00 and FFD0, EOI.
        let ok = [
            0xFF, 0xD8, 0xFF, 0xDA, 0, 2, 1, 0xFF, 0, 2, 0xFF, 0xD0, 3, 0xFF, 0xD9,
        ];
        assert!(jpeg(&ok).is_ok());
        assert!(jpeg(&ok[..ok.len() - 1]).is_err());
        assert!(jpeg(&ok[..12]).is_err());
    }

    #[test]
    fn gif_blocks_are_walked_to_the_trailer() {
        // Header, screen descriptor without a table, an image of one sub-block, trailer.
        let mut g = b"GIF89a".to_vec();
        g.extend([1, 0, 1, 0, 0, 0, 0]);
        g.extend([0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 0x4C, 0x01, 0, 0x3B]);
        assert!(gif(&g).is_ok());
        for cut in 6..g.len() {
            assert!(gif(&g[..cut]).is_err(), "cut at {cut}");
        }
    }
}
