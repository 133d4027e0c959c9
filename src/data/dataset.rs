//! A dataset ready for a run: its images, the train/validation split, the decoded images, and
//! the scan report printed before work starts. Shared by `train` and `eval`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::duplicates::{duplicate_sets, Hash};
use super::folder::{describe_ignored, scan, Folder, Ignored, Layout, Sample};
use super::loader::{default_threads, prepare, BadFile, Prepared};
use super::split::{holdout, kfold, largest_groups, Split, MAX_GROUP_SHARE};
use crate::config::{Dedup, TrainConfig};

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
    /// More lines for the report: the grouping, its largest groups, warnings, duplicates.
    pub notes: Vec<String>,
    /// Files passed over: not images by content, hidden.
    pub ignored: Vec<Ignored>,
    /// Each split sample's group (patient) key, as (sample index, key); empty for a given split.
    pub groups: Vec<(usize, String)>,
    /// Sets of near-identical images found (sample indices); empty when not searched.
    pub duplicate_sets: Vec<Vec<usize>>,
}

impl Dataset {
    /// Scans `root`, decodes every image once ([`prepare`]; unreadable ones are an error, or
    /// left out with `skip_bad`), and splits it as `cfg` says (a given train/val split wins):
    /// grouped by `cfg.group_by`, with near-duplicates grouped or dropped (`cfg.dedup`).
    pub fn for_training(
        root: &Path,
        cfg: &TrainConfig,
        image_size: u32,
        cache_bytes: u64,
    ) -> Result<(Dataset, Prepared)> {
        let prep = |samples: &[Sample]| {
            prepare(
                samples,
                image_size,
                cache_bytes,
                cfg.skip_bad,
                default_threads(),
            )
        };
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
                let mut ignored = train.ignored;
                ignored.extend(val.ignored);
                let prepared = prep(&samples)?;
                let readable = |range: std::ops::Range<usize>| -> Vec<usize> {
                    range.filter(|&i| prepared.hashes[i].is_some()).collect()
                };
                let split = Split {
                    train: readable(0..n),
                    val: readable(n..samples.len()),
                };
                if split.val.is_empty() {
                    bail!("{}: no readable validation images", val.root.display());
                }
                if split.train.is_empty() {
                    bail!("{}: no readable training images", train.root.display());
                }
                let ds = Dataset {
                    root: root.to_path_buf(),
                    classes: train.classes,
                    split,
                    samples,
                    split_note: format!(
                        "given by {} (--val-fraction, --folds, --group-by and --dedup do not \
                         apply to a given split)",
                        val.root.display()
                    ),
                    notes: vec![],
                    ignored,
                    groups: vec![],
                    duplicate_sets: vec![],
                };
                Ok((ds, prepared))
            }
            Layout::Single(f) => {
                let prepared = prep(&f.samples)?;
                let s = split_single(&f, cfg, &prepared.hashes)?;
                let ds = Dataset {
                    root: root.to_path_buf(),
                    classes: f.classes,
                    samples: f.samples,
                    split: s.split,
                    split_note: s.note,
                    notes: s.notes,
                    ignored: f.ignored,
                    groups: s.groups,
                    duplicate_sets: s.duplicate_sets,
                };
                Ok((ds, prepared))
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
                let mut ignored = train.ignored;
                ignored.extend(val.ignored);
                (train.classes, s, ignored)
            }
            Layout::Single(f) => (f.classes, f.samples, f.ignored),
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
            notes: vec![],
            ignored,
            groups: vec![],
            duplicate_sets: vec![],
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
            notes: vec![],
            ignored: vec![],
            groups: vec![],
            duplicate_sets: vec![],
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
            self.ignored.len()
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
        for note in &self.notes {
            out += &format!("  {note}\n");
        }
        if !self.ignored.is_empty() {
            out += &format!(
                "  passed over: {}\n",
                describe_ignored(&self.ignored).join(", ")
            );
        }
        for BadFile { reason, .. } in &prepared.bad {
            out += &format!("  skipped: {reason}\n");
        }
        out
    }
}

/// The split of one folder of class folders: readable images only, grouped as `cfg` says,
/// duplicates grouped or dropped; with the split's note and the report's lines.
/// What [`split_single`] made of a folder.
struct SingleSplit {
    split: Split,
    note: String,
    notes: Vec<String>,
    groups: Vec<(usize, String)>,
    duplicate_sets: Vec<Vec<usize>>,
}

fn split_single(f: &Folder, cfg: &TrainConfig, hashes: &[Option<Hash>]) -> Result<SingleSplit> {
    let by = &cfg.group_by;
    let grouping = by.grouping(&f.samples, &f.classes)?;
    let mut keys = grouping.keys;
    let mut notes = vec![];
    let rel = |i: usize| {
        let p = &f.samples[i].path;
        p.strip_prefix(&f.root).unwrap_or(p).display().to_string()
    };
    let mut kept: Vec<usize> = (0..f.samples.len())
        .filter(|&i| hashes[i].is_some())
        .collect();
    let mut found = vec![];
    if cfg.dedup != Dedup::Off {
        let sets = duplicate_sets(hashes);
        let files: usize = sets.iter().map(Vec::len).sum();
        if sets.is_empty() {
            notes.push("duplicates: none found".to_string());
        } else {
            let shown: Vec<String> = sets
                .iter()
                .take(5)
                .map(|s| s.iter().map(|&i| rel(i)).collect::<Vec<_>>().join(" = "))
                .collect();
            let more = if sets.len() > 5 {
                format!("; and {} more sets", sets.len() - 5)
            } else {
                String::new()
            };
            let what = match cfg.dedup {
                Dedup::Drop => {
                    let dropped: std::collections::HashSet<usize> =
                        sets.iter().flat_map(|s| s[1..].iter().copied()).collect();
                    kept.retain(|i| !dropped.contains(i));
                    format!("the first of each kept, {} left out", dropped.len())
                }
                _ => {
                    merge_groups(&mut keys, &sets);
                    "each set kept on one side of the split".to_string()
                }
            };
            notes.push(format!(
                "duplicates: {} set{} of near-identical images ({files} files), {what}: {}{more}",
                sets.len(),
                if sets.len() == 1 { "" } else { "s" },
                shown.join("; ")
            ));
        }
        found = sets;
    }
    let samples: Vec<Sample> = kept.iter().map(|&i| f.samples[i].clone()).collect();
    let keys: Vec<String> = kept.iter().map(|&i| keys[i].clone()).collect();
    notes.splice(
        0..0,
        grouping_notes(&grouping.by, grouping.why, &samples, &f.classes, &keys),
    );

    let k = f.classes.len();
    let (split, note) = match cfg.folds {
        Some(folds) => (
            kfold(&samples, k, &keys, folds, cfg.fold, cfg.seed)?,
            format!("fold {} of {folds}", cfg.fold),
        ),
        None if cfg.val_fraction == 0.0 => (
            Split {
                train: (0..samples.len()).collect(),
                val: vec![],
            },
            "val fraction 0 (every image trains, none validates)".to_string(),
        ),
        None => (
            holdout(&samples, k, &keys, cfg.val_fraction, cfg.seed)?,
            format!("val fraction {}", cfg.val_fraction),
        ),
    };
    let back = |idx: Vec<usize>| idx.into_iter().map(|j| kept[j]).collect();
    let split = Split {
        train: back(split.train),
        val: back(split.val),
    };
    let note = format!("{note}, seed {}", cfg.seed);
    let groups = kept.iter().copied().zip(keys).collect();
    Ok(SingleSplit {
        split,
        note,
        notes,
        groups,
        duplicate_sets: found,
    })
}

/// The report's lines on the grouping: what was chosen and why, how many groups, the largest of
/// each class, and a warning where one group holds more than a fifth of a class.
fn grouping_notes(
    by: &str,
    why: Option<String>,
    samples: &[Sample],
    classes: &[String],
    keys: &[String],
) -> Vec<String> {
    let groups: std::collections::BTreeSet<&String> = keys.iter().collect();
    let largest = largest_groups(samples, classes, keys);
    let sizes: Vec<String> = largest
        .iter()
        .map(|(c, _, n, total)| format!("{} {n} of {total}", classes[*c]))
        .collect();
    let why = why.map(|w| format!(" (auto: {w})")).unwrap_or_default();
    let mut notes = vec![format!(
        "groups: {} by {by}{why}; largest per class: {}",
        groups.len(),
        sizes.join(", ")
    )];
    for (c, key, n, total) in largest {
        if n as f64 > MAX_GROUP_SHARE * total as f64 && n > 2 {
            notes.push(format!(
                "warning: group {key:?} holds {n} of the {total} images of class {} ({:.0} %): \
                 they all fall on one side of every split (--group-by none splits file by file)",
                classes[c],
                100.0 * n as f64 / total as f64
            ));
        }
    }
    notes
}

/// Joins the groups of every set of duplicates: all their files take the smallest of their keys.
fn merge_groups(keys: &mut [String], sets: &[Vec<usize>]) {
    let mut parent: std::collections::BTreeMap<String, String> = Default::default();
    fn root(parent: &std::collections::BTreeMap<String, String>, k: &str) -> String {
        let mut k = k.to_string();
        while let Some(p) = parent.get(&k) {
            if *p == k {
                break;
            }
            k = p.clone();
        }
        k
    }
    for set in sets {
        let roots: Vec<String> = set.iter().map(|&i| root(&parent, &keys[i])).collect();
        let Some(min) = roots.iter().min().cloned() else {
            continue;
        };
        for r in roots {
            parent.insert(r, min.clone());
        }
    }
    for k in keys.iter_mut() {
        *k = root(&parent, k);
    }
}
