//! Reading datasets: folders, every format and colour type, bad files, splits, transforms,
//! the loader.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use image::{ImageBuffer, ImageFormat, Luma, LumaA, Rgb, RgbImage, Rgba};
use inception::data::folder::{scan, scan_tree, Layout, Sample};
use inception::data::image::load_rgb;
use inception::data::loader::{parallel_map, prepare, Loader, Mode};
use inception::data::split::{holdout, kfold, GroupBy, Split};
use inception::data::transform::{Augment, EvalTransform, Normalization, TrainTransform};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use tch::Kind;

const RED: [u8; 3] = [220, 30, 30];
const BLUE: [u8; 3] = [20, 40, 210];

/// A w×h image, left half red, right half blue.
fn halves(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, _| Rgb(if x < w / 2 { RED } else { BLUE }))
}

fn close(a: [u8; 3], b: [u8; 3], tol: i32) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (*x as i32 - y as i32).abs() <= tol)
}

fn msld() -> PathBuf {
    common::repo().join("data/monkeypox")
}

// ---------- formats and colour types ----------

#[test]
fn every_format_decodes_to_the_same_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let img = halves(16, 8);
    for (ext, fmt) in [
        ("png", ImageFormat::Png),
        ("bmp", ImageFormat::Bmp),
        ("gif", ImageFormat::Gif),
        ("webp", ImageFormat::WebP),
        ("tiff", ImageFormat::Tiff),
        ("JPG", ImageFormat::Jpeg),
    ] {
        let path = dir.path().join(format!("x.{ext}"));
        img.save_with_format(&path, fmt).unwrap();
        let got = load_rgb(&path).unwrap();
        assert_eq!(got.dimensions(), (16, 8), "{ext}");
        let tol = if fmt == ImageFormat::Jpeg { 40 } else { 12 };
        assert!(
            close(got.get_pixel(1, 4).0, RED, tol),
            "{ext}: {:?}",
            got.get_pixel(1, 4)
        );
        assert!(
            close(got.get_pixel(14, 4).0, BLUE, tol),
            "{ext}: {:?}",
            got.get_pixel(14, 4)
        );
    }
}

#[test]
fn a_gif_gives_its_first_frame() {
    use image::codecs::gif::GifEncoder;
    use image::{Delay, Frame};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("anim.gif");
    let frame = |c: [u8; 3]| {
        let rgba = ImageBuffer::from_fn(8, 8, |_, _| Rgba([c[0], c[1], c[2], 255]));
        Frame::from_parts(rgba, 0, 0, Delay::from_numer_denom_ms(100, 1))
    };
    let mut enc = GifEncoder::new(fs::File::create(&path).unwrap());
    enc.encode_frames(vec![frame(RED), frame(BLUE)]).unwrap();
    drop(enc);
    let got = load_rgb(&path).unwrap();
    assert!(
        close(got.get_pixel(4, 4).0, RED, 12),
        "{:?}",
        got.get_pixel(4, 4)
    );
}

#[test]
fn gray_alpha_palette_and_16_bit_images_become_rgb() {
    let dir = tempfile::tempdir().unwrap();
    // Grayscale.
    let p = dir.path().join("gray.png");
    ImageBuffer::from_pixel(4, 4, Luma([100u8]))
        .save(&p)
        .unwrap();
    assert_eq!(load_rgb(&p).unwrap().get_pixel(0, 0).0, [100, 100, 100]);
    // Gray + alpha: fully transparent becomes the white background, opaque keeps its value.
    let p = dir.path().join("gray_alpha.png");
    ImageBuffer::from_fn(2, 1, |x, _| LumaA([50u8, if x == 0 { 0 } else { 255 }]))
        .save(&p)
        .unwrap();
    let got = load_rgb(&p).unwrap();
    assert_eq!(got.get_pixel(0, 0).0, [255, 255, 255]);
    assert_eq!(got.get_pixel(1, 0).0, [50, 50, 50]);
    // RGBA, half transparent red over white.
    let p = dir.path().join("rgba.png");
    ImageBuffer::from_pixel(2, 2, Rgba([255u8, 0, 0, 128]))
        .save(&p)
        .unwrap();
    assert_eq!(load_rgb(&p).unwrap().get_pixel(0, 0).0, [255, 127, 127]);
    // 16-bit RGB.
    let p = dir.path().join("deep.png");
    ImageBuffer::from_pixel(2, 2, Rgb([65535u16, 0, 32896]))
        .save(&p)
        .unwrap();
    assert_eq!(load_rgb(&p).unwrap().get_pixel(0, 0).0, [255, 0, 128]);
    // Palette.
    let p = dir.path().join("palette.png");
    {
        let f = fs::File::create(&p).unwrap();
        let mut enc = png::Encoder::new(std::io::BufWriter::new(f), 2, 1);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(vec![10u8, 20, 30, 200, 100, 50]);
        enc.write_header()
            .unwrap()
            .write_image_data(&[0, 1])
            .unwrap();
    }
    let got = load_rgb(&p).unwrap();
    assert_eq!(got.get_pixel(0, 0).0, [10, 20, 30]);
    assert_eq!(got.get_pixel(1, 0).0, [200, 100, 50]);
}

#[test]
fn a_cmyk_jpeg_becomes_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cmyk.jpg");
    // Pure red in CMYK: C=0, M=255, Y=255, K=0.
    let data: Vec<u8> = (0..64).flat_map(|_| [0u8, 255, 255, 0]).collect();
    jpeg_encoder::Encoder::new_file(&p, 95)
        .unwrap()
        .encode(&data, 8, 8, jpeg_encoder::ColorType::Cmyk)
        .unwrap();
    let got = load_rgb(&p).unwrap();
    assert!(
        close(got.get_pixel(4, 4).0, [255, 0, 0], 30),
        "{:?}",
        got.get_pixel(4, 4)
    );
}

/// A minimal EXIF block with one tag: Orientation = `value`.
fn exif_orientation(value: u16) -> Vec<u8> {
    let mut e = b"Exif\0\0II*\0".to_vec();
    e.extend(8u32.to_le_bytes()); // offset of IFD0
    e.extend(1u16.to_le_bytes()); // one entry
    e.extend(0x0112u16.to_le_bytes()); // Orientation
    e.extend(3u16.to_le_bytes()); // SHORT
    e.extend(1u32.to_le_bytes()); // count
    e.extend(value.to_le_bytes());
    e.extend([0, 0]);
    e.extend(0u32.to_le_bytes()); // no next IFD
    e
}

#[test]
fn jpeg_exif_orientation_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("rotated.jpg");
    let img = halves(32, 16);
    let mut enc = jpeg_encoder::Encoder::new_file(&p, 95).unwrap();
    enc.add_app_segment(1, exif_orientation(6)).unwrap();
    enc.encode(img.as_raw(), 32, 16, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    let got = load_rgb(&p).unwrap();
    // Orientation 6: rotate 90° clockwise to display, so the left (red) half ends on top.
    assert_eq!(got.dimensions(), (16, 32));
    assert!(
        close(got.get_pixel(8, 4).0, RED, 40),
        "{:?}",
        got.get_pixel(8, 4)
    );
    assert!(
        close(got.get_pixel(8, 28).0, BLUE, 40),
        "{:?}",
        got.get_pixel(8, 28)
    );
}

// ---------- bad files ----------

/// A PNG of a header, an empty IDAT and IEND, claiming w×h pixels of 8-bit RGB.
fn png_header_claiming(w: u32, h: u32) -> Vec<u8> {
    png_header_of(w, h, 8, 2)
}

fn png_header_of(w: u32, h: u32, bit_depth: u8, colour_type: u8) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = b"IHDR".to_vec();
    chunk.extend(w.to_be_bytes());
    chunk.extend(h.to_be_bytes());
    chunk.extend([bit_depth, colour_type, 0, 0, 0]);
    out.extend(13u32.to_be_bytes());
    out.extend(&chunk);
    out.extend(crc32fast::hash(&chunk).to_be_bytes());
    for kind in [b"IDAT", b"IEND"] {
        out.extend(0u32.to_be_bytes());
        out.extend(kind);
        out.extend(crc32fast::hash(kind).to_be_bytes());
    }
    out
}

#[test]
fn bad_files_are_errors_that_name_the_file_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.png");
    halves(64, 64).save(&good).unwrap();
    let bytes = fs::read(&good).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.jpg", vec![], "empty file"),
        (
            "text.jpg",
            b"hello, I am not a picture".to_vec(),
            "not an image",
        ),
        ("cut.png", bytes[..bytes.len() / 2].to_vec(), "truncated"),
        ("huge.png", png_header_claiming(60_000, 60_000), "limit"),
        // Within the side limit, but 2 GiB of 16-bit RGBA: refused before decoding, or the
        // missing pixel data would be the error.
        (
            "deep.png",
            png_header_of(16_384, 16_384, 16, 6),
            "too large to decode: 16384×16384",
        ),
    ];
    for (name, content, reason) in cases {
        let p = dir.path().join(name);
        fs::write(&p, &content).unwrap();
        let err = format!("{:#}", load_rgb(&p).unwrap_err());
        assert!(err.contains(name), "{name}: {err}");
        assert!(err.to_lowercase().contains(reason), "{name}: {err}");
        assert_eq!(fs::read(&p).unwrap(), content, "{name} was modified");
    }
}

/// An MSLD photo in each format the tool reads, as (extension, bytes): the JPEG as published
/// (baseline), the others encoded from it.
fn msld_in_every_format() -> Vec<(&'static str, Vec<u8>)> {
    let path = msld().join("Monkey Pox/P13_1.jpg");
    let img = image::open(&path).unwrap();
    let mut out = vec![("jpg", fs::read(&path).unwrap())];
    for (ext, fmt) in [
        ("png", ImageFormat::Png),
        ("bmp", ImageFormat::Bmp),
        ("gif", ImageFormat::Gif),
        ("webp", ImageFormat::WebP),
        ("tiff", ImageFormat::Tiff),
    ] {
        let mut bytes = std::io::Cursor::new(vec![]);
        img.write_to(&mut bytes, fmt).unwrap();
        out.push((ext, bytes.into_inner()));
    }
    out
}

#[test]
fn cut_files_in_every_format_are_refused_as_truncated_never_padded() {
    let dir = tempfile::tempdir().unwrap();
    for (ext, bytes) in msld_in_every_format() {
        let whole = dir.path().join(format!("whole.{ext}"));
        fs::write(&whole, &bytes).unwrap();
        assert_eq!(load_rgb(&whole).unwrap().dimensions(), (224, 224), "{ext}");
        let n = bytes.len();
        for (at, cut) in [
            ("header", 20),
            ("early", n / 5),
            ("middle", n / 2),
            ("late", n * 9 / 10),
            ("one-byte-short", n - 1),
        ] {
            let name = format!("{at}.{ext}");
            let p = dir.path().join(&name);
            fs::write(&p, &bytes[..cut]).unwrap();
            let err = format!("{:#}", load_rgb(&p).expect_err(&name));
            assert!(
                err.contains(&name) && err.contains("truncated"),
                "{name}: {err}"
            );
        }
    }
}

#[test]
fn bytes_after_the_end_marker_are_allowed() {
    let dir = tempfile::tempdir().unwrap();
    for (ext, mut bytes) in msld_in_every_format() {
        let whole = load_rgb(&{
            let p = dir.path().join(format!("whole.{ext}"));
            fs::write(&p, &bytes).unwrap();
            p
        })
        .unwrap();
        bytes.extend(b"trailing data a camera appended");
        let p = dir.path().join(format!("trailing.{ext}"));
        fs::write(&p, &bytes).unwrap();
        assert_eq!(load_rgb(&p).unwrap(), whole, "{ext}");
    }
}

// ---------- folders ----------

/// Writes `n` small PNGs named `{prefix}{i}.png` into `dir`.
fn fill(dir: &Path, prefix: &str, n: usize) {
    fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        halves(12 + i as u32, 10)
            .save(dir.join(format!("{prefix}{i}.png")))
            .unwrap();
    }
}

#[test]
fn classes_are_folder_names_in_byte_order_and_odd_names_work() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fill(&root.join("Öthers ñ"), "o", 2);
    fill(&root.join("Monkey Pox"), "P1_", 3);
    fill(&root.join("Monkey Pox/nested"), "P2_", 1);
    fill(&root.join("a lower"), "x", 1);
    fs::write(root.join("Monkey Pox/notes.txt"), "hi").unwrap();
    fs::write(root.join("Monkey Pox/.hidden.png"), "x").unwrap();
    fs::write(root.join("README.md"), "x").unwrap();
    fs::create_dir_all(root.join(".cache")).unwrap();
    let Layout::Single(f) = scan(root).unwrap() else {
        panic!("expected one tree")
    };
    assert_eq!(f.classes, vec!["Monkey Pox", "a lower", "Öthers ñ"]);
    let per_class: Vec<usize> = (0..3)
        .map(|c| f.samples.iter().filter(|s| s.label == c).count())
        .collect();
    assert_eq!(per_class, vec![4, 1, 2]);
    assert_eq!(f.ignored.len(), 4, "{:?}", f.ignored);
}

#[test]
fn upper_case_extensions_are_images() {
    let dir = tempfile::tempdir().unwrap();
    for (class, name) in [("a", "X.PNG"), ("b", "y.JpEg")] {
        fs::create_dir_all(dir.path().join(class)).unwrap();
        halves(8, 8)
            .save_with_format(dir.path().join(class).join(name), image::ImageFormat::Png)
            .unwrap();
    }
    let Layout::Single(f) = scan(dir.path()).unwrap() else {
        panic!()
    };
    assert_eq!(f.samples.len(), 2);
}

#[test]
fn empty_missing_and_single_class_folders_are_errors_naming_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let err = scan(&root.join("nope")).unwrap_err().to_string();
    assert!(
        err.contains("nope") && err.contains("does not exist"),
        "{err}"
    );
    let err = scan(root).unwrap_err().to_string();
    assert!(err.contains("no class folders"), "{err}");
    fill(&root.join("only"), "a", 2);
    let err = scan(root).unwrap_err().to_string();
    assert!(
        err.contains("1 class folder") && err.contains("only"),
        "{err}"
    );
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::write(root.join("empty/readme.txt"), "no images here").unwrap();
    let err = scan(root).unwrap_err().to_string();
    assert!(
        err.contains("empty") && err.contains("has no images"),
        "{err}"
    );
}

#[test]
fn train_and_val_folders_are_a_given_split() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (side, n) in [("train", 3), ("val", 1)] {
        fill(&root.join(side).join("cat"), "c", n);
        fill(&root.join(side).join("dog"), "d", n);
    }
    let Layout::Given { train, val } = scan(root).unwrap() else {
        panic!("expected a given split")
    };
    assert_eq!(train.samples.len(), 6);
    assert_eq!(val.samples.len(), 2);
    assert_eq!(train.classes, vec!["cat", "dog"]);
    // Different classes on the two sides are an error.
    fill(&root.join("val").join("bird"), "b", 1);
    let err = scan(root).unwrap_err().to_string();
    assert!(err.contains("same class folders"), "{err}");
}

// ---------- splits ----------

fn msld_samples() -> (Vec<Sample>, Vec<String>) {
    let f = scan_tree(&msld()).unwrap();
    (f.samples, f.classes)
}

fn groups_of(
    samples: &[Sample],
    idx: &[usize],
    by: &GroupBy,
) -> std::collections::BTreeSet<String> {
    idx.iter()
        .map(|&i| by.key(&samples[i].path).unwrap())
        .collect()
}

#[test]
fn msld_scan_finds_183_images_in_two_classes() {
    let f = scan_tree(&msld()).unwrap();
    assert_eq!(f.classes, vec!["Monkey Pox", "Others"]);
    assert_eq!(f.samples.iter().filter(|s| s.label == 0).count(), 81);
    assert_eq!(f.samples.iter().filter(|s| s.label == 1).count(), 102);
    assert!(f
        .samples
        .iter()
        .any(|s| s.path.ends_with("Others/58_!.jpg")));
}

#[test]
fn msld_split_keeps_every_patient_on_one_side_and_stratifies() {
    let (samples, _) = msld_samples();
    let by = GroupBy::parse("prefix").unwrap();
    assert_eq!(by.key(Path::new("P13_2.jpg")).unwrap(), "P13");
    assert_eq!(by.key(Path::new("23_1.jpg")).unwrap(), "23");
    assert_eq!(by.key(Path::new("23.jpg")).unwrap(), "23");
    let split = holdout(&samples, 2, &by, 0.2, 7).unwrap();
    let (tg, vg) = (
        groups_of(&samples, &split.train, &by),
        groups_of(&samples, &split.val, &by),
    );
    assert!(
        tg.is_disjoint(&vg),
        "patients on both sides: {:?}",
        tg.intersection(&vg).collect::<Vec<_>>()
    );
    assert_eq!(split.train.len() + split.val.len(), 183);
    for (c, n) in [(0, 81.0), (1, 102.0)] {
        let v = split.val.iter().filter(|&&i| samples[i].label == c).count() as f64;
        assert!((v - 0.2 * n).abs() <= 3.0, "class {c}: {v} of {n} in val");
    }
    // Deterministic for a seed, different for another.
    assert_eq!(holdout(&samples, 2, &by, 0.2, 7).unwrap(), split);
    assert_ne!(holdout(&samples, 2, &by, 0.2, 8).unwrap(), split);
}

#[test]
fn group_by_none_and_regex_change_the_grouping() {
    let (samples, _) = msld_samples();
    let none = GroupBy::parse("none").unwrap();
    let split = holdout(&samples, 2, &none, 0.25, 1).unwrap();
    assert_eq!(split.train.len() + split.val.len(), 183);
    let v = split.val.len() as f64;
    assert!((v - 0.25 * 183.0).abs() <= 2.0, "{v}");
    // A regex: everything before the extension's first digit run ends, i.e. the file number.
    let re = GroupBy::parse(r"^P?(\d+)").unwrap();
    assert_eq!(re.key(Path::new("P13_2.jpg")).unwrap(), "13");
    let err = re.key(Path::new("x.jpg")).unwrap_err().to_string();
    assert!(err.contains("does not match x.jpg"), "{err}");
    let err = GroupBy::parse("no-group").unwrap_err().to_string();
    assert!(err.contains("no capture group"), "{err}");
    let err = GroupBy::parse("(").unwrap_err().to_string();
    assert!(err.contains("not a valid regex"), "{err}");
}

#[test]
fn kfold_partitions_by_group_and_each_fold_is_a_split() {
    let (samples, _) = msld_samples();
    let by = GroupBy::Prefix;
    let k = 5;
    let folds: Vec<Split> = (0..k)
        .map(|f| kfold(&samples, 2, &by, k, f, 3).unwrap())
        .collect();
    let mut seen = vec![0; samples.len()];
    for s in &folds {
        for &i in &s.val {
            seen[i] += 1;
        }
        assert_eq!(s.train.len() + s.val.len(), samples.len());
        assert!(groups_of(&samples, &s.train, &by).is_disjoint(&groups_of(&samples, &s.val, &by)));
        for (c, n) in [(0, 81.0), (1, 102.0)] {
            let v = s.val.iter().filter(|&&i| samples[i].label == c).count() as f64;
            assert!((v - n / k as f64).abs() <= 4.0, "class {c}: {v}");
        }
    }
    assert!(
        seen.iter().all(|&n| n == 1),
        "every image is in exactly one validation fold"
    );
    assert!(kfold(&samples, 2, &by, 5, 5, 3).is_err());
    assert!(kfold(&samples, 2, &by, 1, 0, 3).is_err());
}

// ---------- transforms ----------

#[test]
fn eval_transform_matches_torchvision_on_msld_images() {
    let (samples, _) = msld_samples();
    let picks: Vec<&Path> = samples
        .iter()
        .step_by(30)
        .map(|s| s.path.as_path())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    // One non-square, larger image too, made from an MSLD photo.
    let wide = dir.path().join("wide.png");
    image::imageops::resize(
        &load_rgb(picks[0]).unwrap(),
        500,
        300,
        image::imageops::Triangle,
    )
    .save(&wide)
    .unwrap();
    let mut paths: Vec<&Path> = picks.clone();
    paths.push(&wide);
    for size in [224u32, 160] {
        let out = common::python()
            .arg(common::repo().join("scripts/parity.py"))
            .args([
                "--out",
                dir.path().to_str().unwrap(),
                "--transform",
                &size.to_string(),
            ])
            .args(&paths)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", common::stderr(&out));
        let file = String::from_utf8(out.stdout).unwrap();
        let tv = inception::checkpoint::read_safetensors(Path::new(file.trim())).unwrap();
        let t = EvalTransform {
            image_size: size,
            normalization: Normalization::IMAGENET,
        };
        let images: Vec<RgbImage> = paths.iter().map(|p| load_rgb(p).unwrap()).collect();
        let ours = t.batch(&images).unwrap();
        let diff = (&ours - &tv.tensors["input"]).abs();
        let max = diff.max().double_value(&[]);
        let mean = diff.mean(Kind::Float).double_value(&[]);
        // 0.017 is one 8-bit step after normalisation.
        assert!(
            max < 0.08 && mean < 0.004,
            "size {size}: max {max}, mean {mean}"
        );
    }
}

fn train_transform(augment: Augment) -> TrainTransform {
    TrainTransform {
        image_size: 32,
        normalization: Normalization::IMAGENET,
        augment,
    }
}

fn sample_of(t: &TrainTransform, img: &RgbImage, seed: u64) -> Vec<f32> {
    let mut out = vec![];
    t.apply_working_into(img, &mut ChaCha8Rng::seed_from_u64(seed), &mut out);
    out
}

#[test]
fn augmentation_is_reproducible_for_a_seed_and_each_part_can_be_switched_off() {
    let img = inception::data::transform::to_working_size(&halves(50, 40), 32);
    let full = Augment {
        rotation: 15.0,
        brightness: 0.3,
        contrast: 0.3,
        saturation: 0.3,
        vflip: 0.5,
        ..Augment::default()
    };
    full.validate().unwrap();
    let t = train_transform(full);
    assert!(
        sample_of(&t, &img, 1) == sample_of(&t, &img, 1),
        "same seed, other sample"
    );
    assert!(
        sample_of(&t, &img, 1) != sample_of(&t, &img, 2),
        "other seed, same sample"
    );
    assert_eq!(sample_of(&t, &img, 1).len(), 3 * 32 * 32);

    // All off: exactly the eval transform.
    let eval = EvalTransform {
        image_size: 32,
        normalization: Normalization::IMAGENET,
    };
    let mut expected = vec![];
    inception::data::transform::to_chw(
        &eval.crop_working(&img),
        &eval.normalization,
        &mut expected,
    );
    let off = train_transform(Augment::none());
    for seed in 0..5 {
        let got = sample_of(&off, &img, seed);
        let max = got
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(max < 1e-5, "{max}");
    }
    // A certain horizontal flip mirrors the eval crop.
    let flip = train_transform(Augment {
        hflip: 1.0,
        ..Augment::none()
    });
    let got = sample_of(&flip, &img, 0);
    let mirrored = {
        let mut c = eval.crop_working(&img);
        image::imageops::flip_horizontal_in_place(&mut c);
        let mut v = vec![];
        inception::data::transform::to_chw(&c, &eval.normalization, &mut v);
        v
    };
    let max = got
        .iter()
        .zip(&mirrored)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(max < 1e-5, "flip differs by {max}");
    assert!(
        got.iter().zip(&expected).any(|(a, b)| (a - b).abs() > 0.5),
        "the flip did nothing"
    );
    // Bad settings are refused.
    assert!(Augment {
        hflip: 1.5,
        ..Augment::none()
    }
    .validate()
    .is_err());
    assert!(Augment {
        brightness: -1.0,
        ..Augment::none()
    }
    .validate()
    .is_err());
}

// ---------- the loader ----------

fn tiny_dataset(dir: &Path) -> Vec<Sample> {
    fill(&dir.join("a"), "a", 7);
    fill(&dir.join("b"), "b", 6);
    scan_tree(dir).unwrap().samples
}

fn loader(
    store: Arc<inception::data::loader::Store>,
    samples: &[Sample],
    mode: Mode,
    workers: usize,
) -> Loader {
    Loader {
        store,
        samples: Arc::new(samples.to_vec()),
        mode: Arc::new(mode),
        batch_size: 4,
        workers,
        prefetch: 2,
        seed: 42,
        drop_last: false,
    }
}

fn collect_epoch(l: &Loader, idx: &[usize], epoch: u64) -> (Vec<Vec<f32>>, Vec<usize>) {
    let mut data = vec![];
    let mut order = vec![];
    for b in l.batches(idx, epoch) {
        let b = b.unwrap();
        assert_eq!(b.images.size()[1..], [3, 32, 32]);
        let labels = Vec::<i64>::try_from(&b.labels).unwrap();
        for (k, &i) in b.indices.iter().enumerate() {
            assert_eq!(labels[k] as usize, l.samples[i].label);
        }
        data.push(Vec::<f32>::try_from(b.images.flatten(0, -1)).unwrap());
        order.extend(b.indices);
    }
    (data, order)
}

#[test]
fn loader_batches_do_not_depend_on_workers_or_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let samples = tiny_dataset(dir.path());
    let idx: Vec<usize> = (0..samples.len()).collect();
    let cached = prepare(&samples, 32, 1 << 30, false, 2).unwrap();
    assert_eq!(cached.store.cached_count(), samples.len());
    let uncached = prepare(&samples, 32, 0, false, 2).unwrap();
    assert_eq!(uncached.store.cached_count(), 0);
    let mode = Mode::Train(train_transform(Augment {
        rotation: 10.0,
        ..Augment::default()
    }));
    let a = collect_epoch(
        &loader(cached.store.clone(), &samples, mode.clone(), 1),
        &idx,
        3,
    );
    let b = collect_epoch(
        &loader(cached.store.clone(), &samples, mode.clone(), 3),
        &idx,
        3,
    );
    let c = collect_epoch(
        &loader(uncached.store.clone(), &samples, mode.clone(), 2),
        &idx,
        3,
    );
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(a.0.len(), 4); // 13 samples in batches of 4
    let mut sorted = a.1.clone();
    sorted.sort();
    assert_eq!(sorted, idx, "each sample once per epoch");
    // Another epoch: another order and other augmentations.
    let d = collect_epoch(&loader(cached.store.clone(), &samples, mode, 2), &idx, 4);
    assert_ne!(a.1, d.1);
    // Eval keeps the given order.
    let eval = Mode::Eval(EvalTransform {
        image_size: 32,
        normalization: Normalization::IMAGENET,
    });
    let e = collect_epoch(&loader(cached.store, &samples, eval, 2), &idx, 0);
    assert_eq!(e.1, idx);
}

#[test]
fn bad_files_stop_prepare_unless_skipped_and_are_listed_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut samples = tiny_dataset(dir.path());
    let bad = dir.path().join("a/broken.jpg");
    fs::write(&bad, "garbage").unwrap();
    samples.push(Sample {
        path: bad.clone(),
        label: 0,
    });
    let err = prepare(&samples, 32, 1 << 30, false, 2)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("1 image cannot be read") && err.contains("broken.jpg"),
        "{err}"
    );
    assert!(err.contains("--skip-bad"), "{err}");
    let p = prepare(&samples, 32, 1 << 30, true, 2).unwrap();
    assert_eq!(p.bad.len(), 1);
    assert_eq!(p.bad[0].path, bad);
    assert_eq!(p.good.len(), samples.len() - 1);
    assert_eq!(p.smallest, (12, 10));
    assert_eq!(p.largest, (18, 10));
    assert_eq!(fs::read(&bad).unwrap(), b"garbage");
}

#[test]
fn an_eval_loader_reproduces_the_eval_transform() {
    let dir = tempfile::tempdir().unwrap();
    let samples = tiny_dataset(dir.path());
    let p = prepare(&samples, 32, 1 << 30, false, 1).unwrap();
    let t = EvalTransform {
        image_size: 32,
        normalization: Normalization::IMAGENET,
    };
    let l = loader(p.store, &samples, Mode::Eval(t), 2);
    let batch = l.batches(&[3, 9], 0).next().unwrap().unwrap();
    let direct = t
        .batch(&[
            load_rgb(&samples[3].path).unwrap(),
            load_rgb(&samples[9].path).unwrap(),
        ])
        .unwrap();
    assert!(batch.images.allclose(&direct, 0.0, 0.0, false));
}

#[test]
fn parallel_map_keeps_the_order_and_leaves_out_only_what_a_panicked_thread_took() {
    let items: Vec<u32> = (0..100).collect();
    let doubled = parallel_map(&items, 4, |&i| i * 2);
    assert_eq!(doubled, (0..100).map(|i| Some(i * 2)).collect::<Vec<_>>());
    assert_eq!(parallel_map(&items[..2], 8, |&i| i), [Some(0), Some(1)]);
    let out = parallel_map(&items, 3, |&i| {
        assert_ne!(i, 50, "a decoder that panics");
        i
    });
    assert_eq!(out[50], None);
    for (i, r) in out.iter().enumerate() {
        assert!(r.is_none() || *r == Some(i as u32), "{i}: {r:?}");
    }
    assert!(
        out[51..].iter().all(Option::is_some),
        "the other threads finish the work"
    );
}
