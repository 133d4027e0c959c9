//! How well the difference hash tells duplicates (`src/data/duplicates.rs`) on MSLD: the closest
//! pairs of distinct photos, the distance histogram of all pairs, and how far re-encoded and
//! resized copies of every photo move (JPEG quality 90/60/30, scale 0.5/0.7/1.5, and a 5 % crop
//! for contrast). A measurement, not a test: `cargo bench --bench duplicates`.

use image::{imageops, DynamicImage, RgbImage};
use inception::data::duplicates::{dhash, distance, Hash, MAX_DISTANCE};
use inception::data::folder::scan_tree;
use inception::data::loader::prepare;
use inception::data::transform::to_working_size;

fn hash(img: &RgbImage) -> Hash {
    dhash(&to_working_size(img, 224))
}

fn jpeg(img: &RgbImage, quality: u8) -> anyhow::Result<RgbImage> {
    let mut buf = vec![];
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality);
    DynamicImage::ImageRgb8(img.clone()).write_with_encoder(enc)?;
    Ok(image::load_from_memory(&buf)?.to_rgb8())
}

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/monkeypox");
    let f = scan_tree(&root)?;
    let p = prepare(&f.samples, 224, 1 << 30, false, 2)?;
    let h: Vec<Hash> = p.hashes.iter().flatten().copied().collect();
    let mut pairs = vec![];
    for i in 0..h.len() {
        for j in i + 1..h.len() {
            pairs.push((distance(&h[i], &h[j]), i, j));
        }
    }
    pairs.sort();
    let name = |i: usize| {
        f.samples[i]
            .path
            .strip_prefix(&root)
            .unwrap_or(&f.samples[i].path)
            .display()
            .to_string()
    };
    println!(
        "MSLD, {} images, {} pairs; duplicates are within {MAX_DISTANCE} of 256 bits",
        h.len(),
        pairs.len()
    );
    println!("closest pairs:");
    for (d, i, j) in pairs.iter().take(5) {
        println!("  {d:>3}  {} / {}", name(*i), name(*j));
    }
    let mut hist = [0usize; 8];
    for (d, _, _) in &pairs {
        hist[(*d as usize / 32).min(7)] += 1;
    }
    println!("pairs by distance (0–31, 32–63, …): {hist:?}");
    let kinds = [
        "jpeg q90",
        "jpeg q60",
        "jpeg q30",
        "scale 0.5",
        "scale 0.7",
        "scale 1.5",
        "crop 5 %",
    ];
    let mut moved: Vec<Vec<u32>> = vec![vec![]; kinds.len()];
    for s in &f.samples {
        let img = image::open(&s.path)?.to_rgb8();
        let (w, hh) = img.dimensions();
        let base = hash(&img);
        let scaled = |k: f32| {
            imageops::resize(
                &img,
                (w as f32 * k) as u32,
                (hh as f32 * k) as u32,
                imageops::FilterType::Lanczos3,
            )
        };
        let copies = [
            jpeg(&img, 90)?,
            jpeg(&img, 60)?,
            jpeg(&img, 30)?,
            scaled(0.5),
            scaled(0.7),
            scaled(1.5),
            imageops::crop_imm(&img, w / 20, hh / 20, w - w / 10, hh - hh / 10).to_image(),
        ];
        for (k, c) in copies.iter().enumerate() {
            moved[k].push(distance(&base, &hash(c)));
        }
    }
    println!("copies of each photo, bits moved (median, p95, max; found = within {MAX_DISTANCE}):");
    for (k, v) in moved.iter_mut().enumerate() {
        v.sort();
        let found = v.iter().filter(|&&d| d <= MAX_DISTANCE).count();
        println!(
            "  {:<10} {:>3} {:>3} {:>3}   found {found} of {}",
            kinds[k],
            v[v.len() / 2],
            v[v.len() * 95 / 100],
            v[v.len() - 1],
            v.len()
        );
    }
    Ok(())
}
