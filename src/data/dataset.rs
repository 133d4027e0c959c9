//! A dataset ready for a run: its images, the train/validation split, the decoded images, and
//! the scan report printed before work starts. Shared by `train` and `eval`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::folder::{scan, Layout, Sample};
use super::loader::{default_threads, prepare, BadFile, Prepared};
use super::split::{holdout, kfold, GroupBy, Split};
use crate::config::TrainConfig;

/// One file of a split, relative to the dataset folder, with its class name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    pub class: String,
}

/// The files on each side of a split (`split.json`, and recorded in checkpoints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitFiles {
    pub train: Vec<FileEntry>,
    pub val: Vec<FileEntry>,
}

/// A scanned dataset and its split.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    pub classes: Vec<String>,
    pub samples: Vec<Sample>,
    pub split: Split,
    /// How the split was made, for the report.
    pub split_note: String,
    /// Files that are not images by name, or hidden: ignored.
    pub ignored: usize,
}

impl Dataset {
    /// Scans `root` and splits it as `cfg` says (a given train/val split wins).
    pub fn for_training(root: &Path, cfg: &TrainConfig) -> Result<Dataset> {
        match scan(root)? {
            Layout::Given { train, val } => {
                if !cfg.validates() {
                    bail!(
                        "{}: val_fraction 0 asks for no validation, but the dataset has its own \
                         validation folder {}; train on DIR/<class>/… to use every image",
                        root.display(),
                        val.root.display()
                    );
                }
                let n = train.samples.len();
                let mut samples = train.samples;
                samples.extend(val.samples);
                Ok(Dataset {
                    root: root.to_path_buf(),
                    classes: train.classes,
                    split: Split {
                        train: (0..n).collect(),
                        val: (n..samples.len()).collect(),
                    },
                    samples,
                    split_note: format!("given by {}", val.root.display()),
                    ignored: train.ignored.len() + val.ignored.len(),
                })
            }
            Layout::Single(f) => {
                let by = GroupBy::parse(&cfg.group_by)?;
                let k = f.classes.len();
                let (split, note) = match cfg.folds {
                    Some(folds) => (
                        kfold(&f.samples, k, &by, folds, cfg.fold, cfg.seed)?,
                        format!("fold {} of {folds}", cfg.fold),
                    ),
                    None if cfg.val_fraction == 0.0 => (
                        Split {
                            train: (0..f.samples.len()).collect(),
                            val: vec![],
                        },
                        "val fraction 0 (every image trains, none validates)".to_string(),
                    ),
                    None => (
                        holdout(&f.samples, k, &by, cfg.val_fraction, cfg.seed)?,
                        format!("val fraction {}", cfg.val_fraction),
                    ),
                };
                let note = format!(
                    "{note}, grouped by {}, seed {}",
                    group_note(&cfg.group_by),
                    cfg.seed
                );
                Ok(Dataset {
                    root: root.to_path_buf(),
                    classes: f.classes,
                    samples: f.samples,
                    split,
                    split_note: note,
                    ignored: f.ignored.len(),
                })
            }
        }
    }

    /// Every image under `root` (both sides of a given split), all on the validation side:
    /// what `eval --data` measures.
    pub fn all_for_eval(root: &Path) -> Result<Dataset> {
        let (classes, samples, ignored) = match scan(root)? {
            Layout::Given { train, val } => {
                let mut s = train.samples;
                s.extend(val.samples);
                (train.classes, s, train.ignored.len() + val.ignored.len())
            }
            Layout::Single(f) => (f.classes, f.samples, f.ignored.len()),
        };
        let n = samples.len();
        Ok(Dataset {
            root: root.to_path_buf(),
            classes,
            samples,
            split: Split {
                train: vec![],
                val: (0..n).collect(),
            },
            split_note: "every image".into(),
            ignored,
        })
    }

    /// The dataset a checkpoint recorded: its folder and the files of its split.
    pub fn from_split_files(
        root: &Path,
        classes: &[String],
        files: &SplitFiles,
    ) -> Result<Dataset> {
        let mut samples = vec![];
        let mut side = |entries: &[FileEntry]| -> Result<Vec<usize>> {
            let mut idx = vec![];
            for e in entries {
                let Some(label) = classes.iter().position(|c| *c == e.class) else {
                    bail!(
                        "split file {}: class {:?} is not one of {classes:?}",
                        e.path,
                        e.class
                    );
                };
                idx.push(samples.len());
                samples.push(Sample {
                    path: root.join(&e.path),
                    label,
                });
            }
            Ok(idx)
        };
        let train = side(&files.train)?;
        let val = side(&files.val)?;
        Ok(Dataset {
            root: root.to_path_buf(),
            classes: classes.to_vec(),
            samples,
            split: Split { train, val },
            split_note: "as recorded in the checkpoint".into(),
            ignored: 0,
        })
    }

    /// The split as file lists relative to the dataset folder.
    pub fn split_files(&self) -> SplitFiles {
        let entries = |idx: &[usize]| {
            idx.iter()
                .map(|&i| {
                    let s = &self.samples[i];
                    let rel = s.path.strip_prefix(&self.root).unwrap_or(&s.path);
                    FileEntry {
                        path: rel.to_string_lossy().into_owned(),
                        class: self.classes[s.label].clone(),
                    }
                })
                .collect()
        };
        SplitFiles {
            train: entries(&self.split.train),
            val: entries(&self.split.val),
        }
    }

    /// Decodes every image of the split once (see [`prepare`]), leaving out unreadable ones
    /// with `skip_bad` (the split's index lists are filtered accordingly). A split that had
    /// validation images must keep some.
    pub fn prepare(
        &mut self,
        image_size: u32,
        cache_bytes: u64,
        skip_bad: bool,
    ) -> Result<Prepared> {
        let p = prepare(
            &self.samples,
            image_size,
            cache_bytes,
            skip_bad,
            default_threads(),
        )?;
        let had_val = !self.split.val.is_empty();
        if !p.bad.is_empty() {
            let bad: std::collections::HashSet<&PathBuf> = p.bad.iter().map(|b| &b.path).collect();
            let keep = |v: &mut Vec<usize>, s: &[Sample]| v.retain(|&i| !bad.contains(&s[i].path));
            keep(&mut self.split.train, &self.samples);
            keep(&mut self.split.val, &self.samples);
        }
        if had_val && self.split.val.is_empty() {
            bail!("{}: no readable validation images", self.root.display());
        }
        if self.split.train.is_empty() {
            bail!("{}: no readable training images", self.root.display());
        }
        Ok(p)
    }

    /// The scan report: images per class and side, files skipped or ignored, image sizes.
    pub fn report(&self, prepared: &Prepared) -> String {
        let count =
            |idx: &[usize], c: usize| idx.iter().filter(|&&i| self.samples[i].label == c).count();
        let (train, val) = (&self.split.train, &self.split.val);
        let mut out = format!(
            "data: {} — {} classes, {} images ({} unreadable skipped, {} other files ignored)\n",
            self.root.display(),
            self.classes.len(),
            train.len() + val.len(),
            prepared.bad.len(),
            self.ignored
        );
        let width = self
            .classes
            .iter()
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(0);
        for (c, name) in self.classes.iter().enumerate() {
            let (t, v) = (count(train, c), count(val, c));
            out += &format!("  {name:<width$}  {:>5}  (train {t}, val {v})\n", t + v);
        }
        out += &format!(
            "  image sizes: smallest {}×{}, largest {}×{}\n",
            prepared.smallest.0, prepared.smallest.1, prepared.largest.0, prepared.largest.1
        );
        out += &format!(
            "  split: {} → {} train, {} val\n",
            self.split_note,
            train.len(),
            val.len()
        );
        for BadFile { reason, .. } in &prepared.bad {
            out += &format!("  skipped: {reason}\n");
        }
        out
    }
}

fn group_note(spec: &str) -> String {
    match spec {
        "prefix" => "file-name prefix".into(),
        "none" => "nothing (file by file)".into(),
        re => format!("regex {re:?}"),
    }
}
