//! The data card: what a run learnt from, as `data.json` in its folder — classes with their
//! images and groups (patients), near-duplicate sets, file types, image sizes, files passed
//! over or skipped and why, and how the split was made. Written when training scans its data,
//! read by `inception report` (after Gebru et al., "Datasheets for Datasets", 2018, and the
//! data items of TRIPOD+AI and CLAIM).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::dataset::Dataset;
use super::folder::describe_ignored;
use super::loader::Prepared;

/// The file name in a run folder.
pub const FILE: &str = "data.json";

/// Near-duplicate sets listed by name in the card (all are counted).
const SETS_LISTED: usize = 50;

/// One class of the data card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassCard {
    pub class: String,
    /// Readable images of the class in the split (both sides).
    pub images: usize,
    /// Groups (patients) among them; `None` for a given split.
    pub groups: Option<usize>,
}

/// What a run's data was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataCard {
    /// The dataset folder.
    pub root: String,
    pub classes: Vec<ClassCard>,
    /// Images in the split (both sides).
    pub images: usize,
    /// Groups (patients, or what `group_by` chose) in the split; `None` for a given split.
    pub groups: Option<usize>,
    /// How the split was made (`fold 0 of 5, seed 0`; `val fraction 0.2, seed 0`; `given by…`).
    pub split: String,
    /// The scan's notes: the grouping rule and why, the largest groups, duplicates.
    pub notes: Vec<String>,
    /// Number of near-duplicate sets found (`None`: not searched, `dedup` off or a given split).
    pub duplicate_sets: Option<usize>,
    /// The first sets, as paths relative to the root.
    pub duplicate_examples: Vec<Vec<String>>,
    /// Images by file extension (lower case, `none` without one).
    pub file_types: BTreeMap<String, usize>,
    /// Smallest and largest image by area, as [width, height].
    pub smallest: [u32; 2],
    pub largest: [u32; 2],
    /// Files passed over (not images by content, hidden), described.
    pub passed_over: Vec<String>,
    /// Images that could not be decoded and were skipped (`skip_bad`), with the reason.
    pub skipped: Vec<String>,
}

impl DataCard {
    /// The card of a scanned and decoded dataset.
    pub fn of(ds: &Dataset, prepared: &Prepared) -> DataCard {
        let used: Vec<usize> = ds
            .split
            .train
            .iter()
            .chain(&ds.split.val)
            .copied()
            .collect();
        let rel = |i: usize| {
            let p = &ds.samples[i].path;
            p.strip_prefix(&ds.root).unwrap_or(p).display().to_string()
        };
        let given = ds.groups.is_empty();
        let key: BTreeMap<usize, &String> = ds.groups.iter().map(|(i, k)| (*i, k)).collect();
        let classes = ds
            .classes
            .iter()
            .enumerate()
            .map(|(c, name)| {
                let of: Vec<usize> = used
                    .iter()
                    .copied()
                    .filter(|&i| ds.samples[i].label == c)
                    .collect();
                let groups: BTreeSet<&String> =
                    of.iter().filter_map(|i| key.get(i).copied()).collect();
                ClassCard {
                    class: name.clone(),
                    images: of.len(),
                    groups: (!given).then_some(groups.len()),
                }
            })
            .collect();
        let all_groups: BTreeSet<&String> =
            used.iter().filter_map(|i| key.get(i).copied()).collect();
        let mut file_types = BTreeMap::new();
        for &i in &used {
            let ext = ds.samples[i]
                .path
                .extension()
                .map(|e| e.to_string_lossy().to_lowercase())
                .unwrap_or_else(|| "none".into());
            *file_types.entry(ext).or_insert(0) += 1;
        }
        let searched = !given && ds.notes.iter().any(|n| n.starts_with("duplicates:"));
        DataCard {
            root: ds.root.display().to_string(),
            classes,
            images: used.len(),
            groups: (!given).then_some(all_groups.len()),
            split: ds.split_note.clone(),
            notes: ds.notes.clone(),
            duplicate_sets: searched.then_some(ds.duplicate_sets.len()),
            duplicate_examples: ds
                .duplicate_sets
                .iter()
                .take(SETS_LISTED)
                .map(|s| s.iter().map(|&i| rel(i)).collect())
                .collect(),
            file_types,
            smallest: [prepared.smallest.0, prepared.smallest.1],
            largest: [prepared.largest.0, prepared.largest.1],
            passed_over: describe_ignored(&ds.ignored),
            skipped: prepared.bad.iter().map(|b| b.reason.clone()).collect(),
        }
    }

    /// Reads `data.json` of the run folder `dir`; `None` when the run did not write one (runs
    /// from before it existed).
    pub fn read(dir: &Path) -> Result<Option<DataCard>> {
        let path = dir.join(FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{}: not a data card", path.display()))
    }
}
