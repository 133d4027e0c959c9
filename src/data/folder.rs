//! Reading an ImageFolder tree: `ROOT/<class>/<image>`, as torchvision's `ImageFolder` does.
//!
//! Class names are the folder names sorted by byte order, index = position. Images are found
//! recursively inside each class folder by extension (jpg/jpeg, png, bmp, gif, webp, tif/tiff, in
//! any case); hidden files and folders and other files are ignored and counted. If ROOT holds
//! `train/` and `val/` (or `test/`) folders with the same class folders, they are a given split.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// File extensions read as images (compared without case).
pub const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff"];

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
    /// Files that are not images by name, hidden files and folders: ignored.
    pub ignored: Vec<PathBuf>,
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
        if is_hidden(&path) || !path.is_dir() {
            ignored.push(path);
        } else {
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
        classes.push(name.to_string());
        let before = samples.len();
        let (images, other) = find_images(dir)?;
        ignored.extend(other);
        samples.extend(images.into_iter().map(|path| Sample { path, label }));
        if samples.len() == before {
            bail!("class folder {} has no images", dir.display());
        }
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

/// The images under `dir`, recursively, in path order, and the other entries (hidden files and
/// folders, files not named as images), which are ignored.
pub fn find_images(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let (mut images, mut ignored) = (vec![], vec![]);
    walk(dir, &mut images, &mut ignored, 0)?;
    Ok((images, ignored))
}

fn walk(
    dir: &Path,
    images: &mut Vec<PathBuf>,
    ignored: &mut Vec<PathBuf>,
    depth: usize,
) -> Result<()> {
    for path in entries(dir)? {
        if is_hidden(&path) {
            ignored.push(path);
        } else if path.is_dir() {
            if depth + 1 < MAX_DEPTH {
                walk(&path, images, ignored, depth + 1)?;
            } else {
                ignored.push(path);
            }
        } else if path.is_file() && is_image_name(&path) {
            images.push(path);
        } else {
            ignored.push(path);
        }
    }
    Ok(())
}
