//! Reading an ImageFolder tree: `ROOT/<class>/<image>`, as torchvision's `ImageFolder` does.
//!
//! Class names are the folder names sorted by byte order, index = position. Images are found
//! recursively inside each class folder by their content ([`super::sniff`]), whatever their
//! name; hidden files and folders and other files are passed over and counted by kind, and a
//! recognised format the tool cannot decode (HEIC, RAW, …) is named as such. If ROOT holds
//! `train/` and `val/` (or `test/`) folders with the same class folders, they are a given split.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::sniff::{advice, sniff_file, Content};

/// File extensions of the formats the tool decodes (compared without case): a file with one of
/// them whose first bytes cannot be read is still taken as an image, so that the loader names
/// it as unreadable.
pub const IMAGE_EXTENSIONS: [&str; 11] = [
    "jpg", "jpeg", "jpe", "jfif", "png", "bmp", "gif", "webp", "tif", "tiff", "dib",
];

/// A file or folder passed over, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub path: PathBuf,
    pub kind: PassedOver,
}

/// Why something was passed over.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PassedOver {
    /// A name starting with `.`.
    Hidden,
    /// A recognised format the tool does not decode.
    Unsupported(&'static str),
    /// Not an image by its content: the lower-case extension (empty for none).
    NotImage(String),
    /// A folder deeper than the walk goes, or not a file or folder (a socket, a broken link).
    Other,
}

impl PassedOver {
    fn label(&self, n: usize) -> String {
        let s = if n == 1 { "" } else { "s" };
        match self {
            PassedOver::Hidden => format!("{n} hidden file{s} or folder{s}"),
            PassedOver::Unsupported(k) => format!("{n} {k} file{s} ({})", advice(k)),
            PassedOver::NotImage(e) if e.is_empty() => {
                format!(
                    "{n} file{s} without extension that {} not an image",
                    verb(n)
                )
            }
            PassedOver::NotImage(e) => format!("{n} .{e} file{s} that {} not an image", verb(n)),
            PassedOver::Other => format!("{n} other entr{}", if n == 1 { "y" } else { "ies" }),
        }
    }
}

fn verb(n: usize) -> &'static str {
    if n == 1 {
        "is"
    } else {
        "are"
    }
}

/// What was passed over, counted by kind: "3 HEIC/HEIF files (…), 1 .txt file that is not an
/// image", in a fixed order.
pub fn describe_ignored(ignored: &[Ignored]) -> Vec<String> {
    let mut counts: std::collections::BTreeMap<&PassedOver, usize> = Default::default();
    for i in ignored {
        *counts.entry(&i.kind).or_default() += 1;
    }
    counts.into_iter().map(|(k, n)| k.label(n)).collect()
}

/// One image and its class index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub path: PathBuf,
    pub label: usize,
}

/// The images of one ImageFolder tree.
#[derive(Debug, Clone)]
pub struct Folder {
    pub root: PathBuf,
    pub classes: Vec<String>,
    /// In class order, then path order.
    pub samples: Vec<Sample>,
    /// Files that are not images by content, hidden files and folders: passed over.
    pub ignored: Vec<Ignored>,
}

/// What a dataset folder holds: one tree, or a given train/validation split.
#[derive(Debug, Clone)]
pub enum Layout {
    /// `ROOT/<class>/…`: the split is made by [`crate::data::split`].
    Single(Folder),
    /// `ROOT/train/<class>/…` and `ROOT/val/<class>/…` (or `test/`).
    Given { train: Folder, val: Folder },
}

impl Layout {
    pub fn classes(&self) -> &[String] {
        match self {
            Layout::Single(f) => &f.classes,
            Layout::Given { train, .. } => &train.classes,
        }
    }
}

/// Whether `path`'s extension names an image format we read.
pub fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
        .unwrap_or(false)
}

/// Whether the file at `path` is an image the tool decodes, by its content; otherwise what it is.
pub fn classify(path: &Path) -> Result<(), PassedOver> {
    match sniff_file(path) {
        Ok(Content::Image(_)) => Ok(()),
        Ok(Content::Unsupported(k)) => Err(PassedOver::Unsupported(k)),
        // Named as an image but not one (empty, damaged, mislabelled): the loader reports it
        // by name, as an unreadable image, rather than letting it vanish from the count.
        Ok(Content::Other) if is_image_name(path) => Ok(()),
        Ok(Content::Other) => Err(PassedOver::NotImage(
            path.extension()
                .map(|e| e.to_string_lossy().to_lowercase())
                .unwrap_or_default(),
        )),
        // Unreadable: named as an image, it is one the loader will report; else passed over.
        Err(_) if is_image_name(path) => Ok(()),
        Err(_) => Err(PassedOver::Other),
    }
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.starts_with('.'))
        .unwrap_or(false)
}

/// Sorted entries of a folder, with context naming it.
fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    for entry in fs::read_dir(dir).with_context(|| format!("reading folder {}", dir.display()))? {
        out.push(
            entry
                .with_context(|| format!("reading folder {}", dir.display()))?
                .path(),
        );
    }
    out.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    Ok(out)
}

/// Scans a dataset folder: a given split when it has `train/` and `val/` (or `test/`).
pub fn scan(root: &Path) -> Result<Layout> {
    if !root.is_dir() {
        bail!(
            "data folder {} does not exist or is not a folder (a clone of the repository has \
             MSLD in data/monkeypox; for other data make DIR/<class>/<image> folders and pass \
             --data DIR, see data/README.md)",
            root.display()
        );
    }
    let train = root.join("train");
    let val = ["val", "test"]
        .iter()
        .map(|v| root.join(v))
        .find(|p| p.is_dir());
    if let (true, Some(val)) = (train.is_dir(), val) {
        let train = scan_tree(&train)?;
        let val = scan_tree(&val)?;
        if train.classes != val.classes {
            bail!(
                "{} and {} must hold the same class folders: {:?} vs {:?}",
                train.root.display(),
                val.root.display(),
                train.classes,
                val.classes
            );
        }
        return Ok(Layout::Given { train, val });
    }
    Ok(Layout::Single(scan_tree(root)?))
}

/// Scans one `ROOT/<class>/<image>` tree.
pub fn scan_tree(root: &Path) -> Result<Folder> {
    let mut ignored = vec![];
    let mut class_dirs = vec![];
    for path in entries(root)? {
        // Files beside the class folders (a README, a licence) are not data.
        if !is_hidden(&path) && path.is_dir() {
            class_dirs.push(path);
        }
    }
    if class_dirs.is_empty() {
        bail!(
            "{} has no class folders (expected {}/<class>/<image>)",
            root.display(),
            root.display()
        );
    }
    if class_dirs.len() < 2 {
        bail!(
            "{} has 1 class folder ({}); a classifier needs at least 2",
            root.display(),
            class_dirs[0].display()
        );
    }
    let mut classes = vec![];
    let mut samples = vec![];
    for (label, dir) in class_dirs.iter().enumerate() {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("class folder {}: name is not valid UTF-8", dir.display()))?;
        crate::text::check_name("class folder", name)?;
        classes.push(name.to_string());
        let (images, other) = find_images(dir)?;
        if images.is_empty() {
            bail!(
                "class folder {} has no images: {}",
                dir.display(),
                holds(&other)
            );
        }
        ignored.extend(other);
        samples.extend(images.into_iter().map(|path| Sample { path, label }));
    }
    Ok(Folder {
        root: root.to_path_buf(),
        classes,
        samples,
        ignored,
    })
}

/// Deepest folder level walked inside a class folder (guards against link loops).
const MAX_DEPTH: usize = 16;

/// What a folder without images held, for its error.
pub fn holds(other: &[Ignored]) -> String {
    if other.is_empty() {
        "it is empty".into()
    } else {
        format!("it holds {}", describe_ignored(other).join(", "))
    }
}

/// The images under `dir`, recursively, in path order, and the other entries (hidden files and
/// folders, files whose content is not an image the tool decodes), which are passed over.
pub fn find_images(dir: &Path) -> Result<(Vec<PathBuf>, Vec<Ignored>)> {
    let (mut images, mut ignored) = (vec![], vec![]);
    walk(dir, &mut images, &mut ignored, 0)?;
    Ok((images, ignored))
}

fn walk(
    dir: &Path,
    images: &mut Vec<PathBuf>,
    ignored: &mut Vec<Ignored>,
    depth: usize,
) -> Result<()> {
    for path in entries(dir)? {
        if is_hidden(&path) {
            ignored.push(Ignored {
                path,
                kind: PassedOver::Hidden,
            });
        } else if path.is_dir() {
            if depth + 1 < MAX_DEPTH {
                walk(&path, images, ignored, depth + 1)?;
            } else {
                ignored.push(Ignored {
                    path,
                    kind: PassedOver::Other,
                });
            }
        } else if path.is_file() {
            match classify(&path) {
                Ok(()) => images.push(path),
                Err(kind) => ignored.push(Ignored { path, kind }),
            }
        } else {
            ignored.push(Ignored {
                path,
                kind: PassedOver::Other,
            });
        }
    }
    Ok(())
}
