//! Reading datasets: folders, every format and colour type, bad files, splits, transforms,
//! the loader.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use image::{ImageBuffer, ImageFormat, Luma, LumaA, Rgb, RgbImage, Rgba};
use inception::config::{Dedup, TrainConfig};
use inception::data::dataset::Dataset;
use inception::data::duplicates::duplicate_sets;
use inception::data::folder::{scan, scan_tree, Layout, PassedOver, Sample};
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
        (
            "huge.png",
            common::png_header_claiming(60_000, 60_000),
            "limit",
        ),
        // Within the side limit, but 2 GiB of 16-bit RGBA: refused before decoding, or the
        // missing pixel data would be the error.
        (
            "deep.png",
            common::png_header_of(16_384, 16_384, 16, 6),
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
    // Passed over inside the class folders: the text file and the hidden one (files beside the
    // class folders, like README.md, are not data and not counted).
    let kinds: Vec<_> = f.ignored.iter().map(|i| i.kind.clone()).collect();
    assert_eq!(
        kinds,
        vec![PassedOver::Hidden, PassedOver::NotImage("txt".into())],
        "{:?}",
        f.ignored
    );
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
    // Training on it says the split flags do not apply.
    let (_, report) = training_split(root, |c| c.val_fraction = 0.5);
    assert!(report.contains("do not apply to a given split"), "{report}");
    // Different classes on the two sides are an error.
    fill(&root.join("val").join("bird"), "b", 1);
    let err = scan(root).unwrap_err().to_string();
    assert!(err.contains("same class folders"), "{err}");
}

// ---------- other people's folders: names, formats, grouping, duplicates ----------

/// An MSLD photo encoded as `fmt`, at `scale` of its size.
fn msld_as(name: &str, fmt: ImageFormat, scale: f32) -> Vec<u8> {
    let img = load_rgb(&msld().join(name)).unwrap();
    let (w, h) = img.dimensions();
    let img = image::imageops::resize(
        &img,
        (w as f32 * scale) as u32,
        (h as f32 * scale) as u32,
        image::imageops::Triangle,
    );
    let mut out = std::io::Cursor::new(vec![]);
    match fmt {
        ImageFormat::Jpeg => {
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 60);
            image::DynamicImage::ImageRgb8(img)
                .write_with_encoder(enc)
                .unwrap();
        }
        f => img.write_to(&mut out, f).unwrap(),
    }
    out.into_inner()
}

/// The first bytes of a HEIC file (an ISO base media `ftyp` box with brand `heic`).
const HEIC: &[u8] = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic";

#[test]
fn images_are_found_by_content_whatever_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("a")).unwrap();
    fs::create_dir_all(root.join("b")).unwrap();
    let jpeg = msld_as("Others/1.jpg", ImageFormat::Jpeg, 0.5);
    let png = msld_as("Others/1.jpg", ImageFormat::Png, 0.5);
    for name in ["x.jfif", "w.jpe", "Z.JPG", "no-extension"] {
        fs::write(root.join("a").join(name), &jpeg).unwrap();
    }
    fs::write(root.join("a/png-named.gif"), &png).unwrap();
    fs::write(root.join("b/photo.png"), &png).unwrap();
    fs::write(root.join("b/IMG_1.HEIC"), HEIC).unwrap();
    fs::write(root.join("b/notes.txt"), "not a picture").unwrap();
    let Layout::Single(f) = scan(root).unwrap() else {
        panic!()
    };
    let names: Vec<String> = f
        .samples
        .iter()
        .map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "Z.JPG",
            "no-extension",
            "png-named.gif",
            "w.jpe",
            "x.jfif",
            "photo.png"
        ]
    );
    for s in &f.samples {
        assert_eq!(load_rgb(&s.path).unwrap().dimensions(), (112, 112));
    }
    let kinds: Vec<_> = f.ignored.iter().map(|i| i.kind.clone()).collect();
    assert_eq!(
        kinds,
        [
            PassedOver::Unsupported("HEIC/HEIF"),
            PassedOver::NotImage("txt".into())
        ]
    );
    // Decoding a HEIC file says what it is and what to do.
    let err = format!("{:#}", load_rgb(&root.join("b/IMG_1.HEIC")).unwrap_err());
    assert!(
        err.contains("IMG_1.HEIC: HEIC/HEIF is not supported: convert it to JPEG or PNG"),
        "{err}"
    );
}

#[test]
fn a_class_folder_without_images_lists_what_it_holds_by_kind() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fill(&root.join("a"), "a", 2);
    fs::create_dir_all(root.join("b")).unwrap();
    fs::write(root.join("b/1.heic"), HEIC).unwrap();
    fs::write(root.join("b/2.HEIC"), HEIC).unwrap();
    fs::write(root.join("b/scan.pdf"), "%PDF-1.7\n").unwrap();
    fs::write(root.join("b/list.txt"), "x").unwrap();
    let err = scan(root).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "class folder {} has no images: it holds 2 HEIC/HEIF files (HEIC/HEIF is not \
             supported: convert it to JPEG or PNG), 1 PDF file (PDF is not supported: convert it \
             to JPEG or PNG), 1 .txt file that is not an image",
            root.join("b").display()
        )),
        "{err}"
    );
}

/// A dataset of MSLD photos under new names, as `names` (class, file, source, format, scale).
fn dataset_of(root: &Path, files: &[(&str, String, &str, ImageFormat, f32)]) {
    for (class, name, source, fmt, scale) in files {
        fs::create_dir_all(root.join(class)).unwrap();
        fs::write(root.join(class).join(name), msld_as(source, *fmt, *scale)).unwrap();
    }
}

fn training_split(root: &Path, edit: impl Fn(&mut TrainConfig)) -> (Dataset, String) {
    let mut cfg = TrainConfig::default();
    edit(&mut cfg);
    let (ds, prepared) = Dataset::for_training(root, &cfg, 64, 1 << 30).unwrap();
    let report = ds.report(&prepared);
    (ds, report)
}

/// Ten distinct MSLD photos of each class under camera-style names `IMG_0000.jpg`, ….
fn camera_folder(root: &Path) {
    let (samples, _) = msld_samples();
    let mut files = vec![];
    for (class, label, offset) in [("lesion", 0, 0), ("other", 1, 0)] {
        for (i, s) in samples
            .iter()
            .filter(|s| s.label == label)
            .skip(offset)
            .take(10)
            .enumerate()
        {
            let rel = s
                .path
                .strip_prefix(msld())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            files.push((
                class,
                format!("IMG_{:04}.jpg", 100 * label + i),
                rel,
                ImageFormat::Jpeg,
                1.0,
            ));
        }
    }
    let files: Vec<(&str, String, &str, ImageFormat, f32)> = files
        .iter()
        .map(|(c, n, r, f, s)| (*c, n.clone(), r.as_str(), *f, *s))
        .collect();
    dataset_of(root, &files);
}

#[test]
fn auto_grouping_splits_camera_photos_file_by_file_and_msld_by_patient() {
    let dir = tempfile::tempdir().unwrap();
    camera_folder(dir.path());
    let (ds, report) = training_split(dir.path(), |_| {});
    assert!(
        report.contains(
            "groups: 20 by nothing, file by file (auto: the file-name prefix \"IMG\" \
                         holds 10 of the 10 images of class lesion (100 %, more than 20 %), so it is no \
                         patient or subject key)"
        ),
        "{report}"
    );
    assert_eq!(ds.split.val.len(), 4, "{report}");
    // The prefix rule on the same folder: one group per class, no split possible, and the error
    // says which flag makes one.
    let cfg = TrainConfig {
        group_by: inception::data::split::GroupBy::Prefix,
        ..TrainConfig::default()
    };
    let err = format!(
        "{:#}",
        Dataset::for_training(dir.path(), &cfg, 64, 1 << 30).unwrap_err()
    );
    assert!(err.contains("--group-by none splits file by file"), "{err}");

    // MSLD: auto takes the prefix, the same keys as --group-by prefix.
    let (samples, classes) = msld_samples();
    let auto = GroupBy::Auto.grouping(&samples, &classes).unwrap();
    assert_eq!(auto.keys, keys(&samples, &GroupBy::Prefix));
    assert_eq!(auto.by, "file-name prefix");
}

#[test]
fn a_group_over_a_fifth_of_a_class_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let (samples, _) = msld_samples();
    // Class a: 4 photos of "IMG" and 8 patients of one photo each; class b: 12 patients.
    let mut files = vec![];
    let mut pick = samples.iter().map(|s| {
        s.path
            .strip_prefix(msld())
            .unwrap()
            .to_string_lossy()
            .into_owned()
    });
    for i in 0..12 {
        let name = if i < 4 {
            format!("IMG_{i}.jpg")
        } else {
            format!("P{i}_1.jpg")
        };
        files.push(("a", name, pick.next().unwrap()));
    }
    for i in 0..12 {
        files.push(("b", format!("Q{i}_1.jpg"), pick.next().unwrap()));
    }
    let files: Vec<(&str, String, &str, ImageFormat, f32)> = files
        .iter()
        .map(|(c, n, r)| (*c, n.clone(), r.as_str(), ImageFormat::Jpeg, 1.0))
        .collect();
    dataset_of(dir.path(), &files);
    let (_, report) = training_split(dir.path(), |c| {
        c.group_by = inception::data::split::GroupBy::Prefix
    });
    assert!(
        report.contains("warning: group \"IMG\" holds 4 of the 12 images of class a (33 %)"),
        "{report}"
    );
    // auto does not take that prefix, and says why.
    let (_, report) = training_split(dir.path(), |_| {});
    assert!(
        report.contains("by nothing, file by file (auto: the file-name prefix \"IMG\""),
        "{report}"
    );
    assert!(!report.contains("warning"), "{report}");
}

#[test]
fn re_encoded_and_resized_copies_stay_on_one_side_of_every_split_and_fold() {
    let dir = tempfile::tempdir().unwrap();
    let (samples, _) = msld_samples();
    let rel = |s: &Sample| {
        s.path
            .strip_prefix(msld())
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let mut files: Vec<(&str, String, String, ImageFormat, f32)> = vec![];
    for (i, s) in samples.iter().filter(|s| s.label == 0).take(12).enumerate() {
        files.push(("a", format!("a{i}.png"), rel(s), ImageFormat::Png, 1.0));
    }
    for (i, s) in samples.iter().filter(|s| s.label == 1).take(12).enumerate() {
        files.push(("b", format!("b{i}.png"), rel(s), ImageFormat::Png, 1.0));
    }
    // Two copies of a0 under unrelated names: re-encoded as JPEG, and resized to half.
    let source = files[0].2.clone();
    files.push((
        "a",
        "copy-jpeg.jpg".into(),
        source.clone(),
        ImageFormat::Jpeg,
        1.0,
    ));
    files.push(("a", "copy-small.png".into(), source, ImageFormat::Png, 0.5));
    let files: Vec<(&str, String, &str, ImageFormat, f32)> = files
        .iter()
        .map(|(c, n, r, f, s)| (*c, n.clone(), r.as_str(), *f, *s))
        .collect();
    dataset_of(dir.path(), &files);
    let copies = ["a/a0.png", "a/copy-jpeg.jpg", "a/copy-small.png"];
    let side_of = |ds: &Dataset| -> Vec<bool> {
        copies
            .iter()
            .map(|c| {
                let i = ds.samples.iter().position(|s| s.path.ends_with(c)).unwrap();
                assert!(ds.split.train.contains(&i) || ds.split.val.contains(&i));
                ds.split.val.contains(&i)
            })
            .collect()
    };
    let mut in_val = 0;
    for fold in 0..5 {
        let (ds, report) = training_split(dir.path(), |c| {
            c.group_by = inception::data::split::GroupBy::None;
            c.folds = Some(5);
            c.fold = fold;
        });
        assert!(
            report.contains("duplicates: 1 set of near-identical images (3 files)"),
            "{report}"
        );
        let sides = side_of(&ds);
        assert!(
            sides.iter().all(|&v| v == sides[0]),
            "fold {fold}: {sides:?}"
        );
        in_val += sides[0] as usize;
    }
    assert_eq!(in_val, 1, "the set is in exactly one validation fold");
    for seed in 0..4 {
        let (ds, _) = training_split(dir.path(), |c| {
            c.group_by = inception::data::split::GroupBy::None;
            c.seed = seed;
        });
        let sides = side_of(&ds);
        assert!(
            sides.iter().all(|&v| v == sides[0]),
            "seed {seed}: {sides:?}"
        );
    }
    // --dedup drop keeps the first copy only; --dedup off keeps all three, split as they fall.
    let (ds, report) = training_split(dir.path(), |c| c.dedup = Dedup::Drop);
    assert_eq!(ds.split.train.len() + ds.split.val.len(), 24, "{report}");
    assert!(
        report.contains("the first of each kept, 2 left out"),
        "{report}"
    );
    let (ds, report) = training_split(dir.path(), |c| c.dedup = Dedup::Off);
    assert_eq!(ds.split.train.len() + ds.split.val.len(), 26);
    assert!(!report.contains("duplicates"), "{report}");
}

#[test]
fn msld_holds_one_duplicate_pair_and_no_false_positive() {
    let (samples, _) = msld_samples();
    let p = prepare(&samples, 224, 1 << 30, false, 2).unwrap();
    let sets = duplicate_sets(&p.hashes);
    let names: Vec<Vec<String>> = sets
        .iter()
        .map(|s| {
            s.iter()
                .map(|&i| {
                    samples[i]
                        .path
                        .strip_prefix(msld())
                        .unwrap()
                        .display()
                        .to_string()
                })
                .collect()
        })
        .collect();
    // The one pair is byte for byte the same file under two patient numbers.
    assert_eq!(names, [["Others/34_1.jpg", "Others/82_1.jpg"]]);
    assert_eq!(
        fs::read(msld().join("Others/34_1.jpg")).unwrap(),
        fs::read(msld().join("Others/82_1.jpg")).unwrap()
    );
}

#[test]
fn near_duplicate_sets_and_folds_do_not_depend_on_the_image_size() {
    // Hashed at the training size, 32 px found two sets on MSLD and 224 one: other folds of
    // the same data and seed. The hash is now taken at one size for every training size.
    let (samples, _) = msld_samples();
    let sets =
        |size: u32| duplicate_sets(&prepare(&samples, size, 1 << 30, false, 2).unwrap().hashes);
    let at_224 = sets(224);
    assert_eq!(at_224.len(), 1, "{at_224:?}");
    for size in [32, 64, 299] {
        assert_eq!(sets(size), at_224, "at {size} px");
    }
    let folds = |size: i64| {
        let cfg = TrainConfig {
            image_size: size,
            folds: Some(5),
            ..Default::default()
        };
        let (ds, _) = Dataset::for_training(&msld(), &cfg, size as u32, 1 << 30).unwrap();
        let names = |idx: &[usize]| -> Vec<PathBuf> {
            idx.iter().map(|&i| ds.samples[i].path.clone()).collect()
        };
        (names(&ds.split.train), names(&ds.split.val))
    };
    assert_eq!(folds(32), folds(224));
}

// ---------- splits ----------

fn msld_samples() -> (Vec<Sample>, Vec<String>) {
    let f = scan_tree(&msld()).unwrap();
    (f.samples, f.classes)
}

/// Every sample's key under `by`.
fn keys(samples: &[Sample], by: &GroupBy) -> Vec<String> {
    samples.iter().map(|s| by.key(&s.path).unwrap()).collect()
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
    let split = holdout(&samples, 2, &keys(&samples, &by), 0.2, 7).unwrap();
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
    assert_eq!(
        holdout(&samples, 2, &keys(&samples, &by), 0.2, 7).unwrap(),
        split
    );
    assert_ne!(
        holdout(&samples, 2, &keys(&samples, &by), 0.2, 8).unwrap(),
        split
    );
}

#[test]
fn group_by_none_and_regex_change_the_grouping() {
    let (samples, _) = msld_samples();
    let none = GroupBy::parse("none").unwrap();
    let prefix = GroupBy::Prefix;
    let split = holdout(&samples, 2, &keys(&samples, &none), 0.25, 1).unwrap();
    assert_eq!(split.train.len() + split.val.len(), 183);
    let v = split.val.len() as f64;
    assert!((v - 0.25 * 183.0).abs() <= 2.0, "{v}");
    // File by file, some patient ends on both sides; by prefix, none does.
    let both = |split: &Split| {
        groups_of(&samples, &split.train, &prefix)
            .intersection(&groups_of(&samples, &split.val, &prefix))
            .count()
    };
    assert!(both(&split) > 0, "none grouped by patient anyway");
    let by_prefix = holdout(&samples, 2, &keys(&samples, &prefix), 0.25, 1).unwrap();
    assert_eq!(both(&by_prefix), 0);
    // A regex: everything before the extension's first digit run ends, i.e. the file number.
    let re = GroupBy::parse(r"^P?(\d+)").unwrap();
    assert_eq!(re.key(Path::new("P13_2.jpg")).unwrap(), "13");
    // A regex on the number alone joins Monkey Pox patient P13 with Others' 13 (and a13): they
    // share a side, and the split is not the prefix one.
    let re = GroupBy::parse(r"^\D*(\d+)").unwrap();
    let by_re = holdout(&samples, 2, &keys(&samples, &re), 0.25, 1).unwrap();
    assert_ne!(by_re, by_prefix);
    let numbers = |idx: &[usize]| groups_of(&samples, idx, &re);
    assert!(numbers(&by_re.train).is_disjoint(&numbers(&by_re.val)));
    assert!(
        !numbers(&by_prefix.train).is_disjoint(&numbers(&by_prefix.val)),
        "the prefix split happens to keep the numbers apart too"
    );
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
        .map(|f| kfold(&samples, 2, &keys(&samples, &by), k, f, 3).unwrap())
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
    assert!(kfold(&samples, 2, &keys(&samples, &by), 5, 5, 3).is_err());
    assert!(kfold(&samples, 2, &keys(&samples, &by), 1, 0, 3).is_err());
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
        shard: None,
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

#[test]
fn data_parallel_shards_are_the_slices_of_one_processs_larger_batches() {
    // 13 images, 2 processes of batch 2 against one process of batch 4: the processes' batches
    // are the halves of the single process's (same images, same augmentation), and the last,
    // smaller global batch is left out so that both take the same number of steps.
    let dir = tempfile::tempdir().unwrap();
    let samples = tiny_dataset(dir.path());
    let idx: Vec<usize> = (0..samples.len()).collect();
    let prepared = prepare(&samples, 32, 1 << 30, false, 2).unwrap();
    let mode = Mode::Train(train_transform(Augment {
        rotation: 10.0,
        ..Augment::default()
    }));
    let one = collect_epoch(
        &Loader {
            drop_last: true,
            ..loader(prepared.store.clone(), &samples, mode.clone(), 2)
        },
        &idx,
        1,
    );
    assert_eq!(one.0.len(), 3);
    let shard = |rank| {
        collect_epoch(
            &Loader {
                batch_size: 2,
                shard: Some((rank, 2)),
                ..loader(prepared.store.clone(), &samples, mode.clone(), 2)
            },
            &idx,
            1,
        )
    };
    let (r0, r1) = (shard(0), shard(1));
    assert_eq!((r0.0.len(), r1.0.len()), (3, 3));
    for b in 0..3 {
        let half = one.0[b].len() / 2;
        assert_eq!(r0.0[b], one.0[b][..half], "batch {b}, rank 0");
        assert_eq!(r1.0[b], one.0[b][half..], "batch {b}, rank 1");
        assert_eq!(r0.1[2 * b..2 * b + 2], one.1[4 * b..4 * b + 2]);
        assert_eq!(r1.1[2 * b..2 * b + 2], one.1[4 * b + 2..4 * b + 4]);
    }
}

#[test]
fn images_in_memory_decode_as_their_files_and_are_refused_alike() {
    use inception::data::image::decode_bytes;
    let dir = common::repo().join("data/monkeypox/Others");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files.iter().take(20) {
        let bytes = fs::read(f).unwrap();
        assert_eq!(
            decode_bytes(&bytes, f).unwrap(),
            load_rgb(f).unwrap(),
            "{f:?}"
        );
    }
    let name = std::path::Path::new("upload.jpg");
    let bytes = fs::read(&files[0]).unwrap();
    let err = format!(
        "{:#}",
        decode_bytes(&bytes[..bytes.len() / 2], name).unwrap_err()
    );
    assert!(err.starts_with("truncated"), "{err}");
    let err = format!(
        "{:#}",
        decode_bytes(b"{\"not\": \"an image\"}", name).unwrap_err()
    );
    assert_eq!(err, "not an image: the content is in no known image format");
    let err = format!("{:#}", decode_bytes(&[], name).unwrap_err());
    assert_eq!(err, "empty file (0 bytes)");
}
