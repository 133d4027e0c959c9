//! Train/validation splits that never put one group (an MSLD patient) on both sides.
//!
//! Files are grouped by a key taken from their name ([`GroupBy`]; `auto` decides whether the
//! file-name prefix is such a key, [`Grouping`]). A hold-out split
//! ([`holdout`]) and a K-fold partition ([`kfold`]) both move whole groups, stratified by class
//! greedily in the manner of scikit-learn's `StratifiedGroupKFold`: groups in an order shuffled by
//! the seed (largest first), each placed where it brings the per-class counts closest to their
//! targets. Deterministic for a seed.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::folder::Sample;

/// How files are grouped. A config file and `--group-by` write it as `auto`, `prefix`, `none`
/// or the regular expression.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum GroupBy {
    /// The file-name prefix where it looks like a grouping key ([`prefix_is_a_key`]), else
    /// every file on its own.
    Auto,
    /// The file stem up to its first `_` (`P13_2.jpg` → `P13`, `23.jpg` → `23`): MSLD's
    /// patient prefix.
    Prefix,
    /// The first capture group of a regular expression matched against the file name.
    Regex(Regex),
    /// Every file is its own group.
    None,
}

impl PartialEq for GroupBy {
    fn eq(&self, other: &GroupBy) -> bool {
        self.spec() == other.spec()
    }
}

impl std::fmt::Display for GroupBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.spec())
    }
}

impl std::str::FromStr for GroupBy {
    type Err = String;

    fn from_str(spec: &str) -> std::result::Result<GroupBy, String> {
        GroupBy::parse(spec).map_err(|e| format!("{e:#}"))
    }
}

impl TryFrom<String> for GroupBy {
    type Error = String;

    fn try_from(spec: String) -> std::result::Result<GroupBy, String> {
        spec.parse()
    }
}

impl From<GroupBy> for String {
    fn from(g: GroupBy) -> String {
        g.spec().to_string()
    }
}

impl GroupBy {
    /// As a config file and `--group-by` write it.
    pub fn spec(&self) -> &str {
        match self {
            GroupBy::Auto => "auto",
            GroupBy::Prefix => "prefix",
            GroupBy::None => "none",
            GroupBy::Regex(re) => re.as_str(),
        }
    }

    /// `auto` (the default), `prefix`, `none`, or a regular expression with a capture group.
    pub fn parse(spec: &str) -> Result<GroupBy> {
        match spec {
            "auto" => Ok(GroupBy::Auto),
            "prefix" => Ok(GroupBy::Prefix),
            "none" => Ok(GroupBy::None),
            re => {
                let regex = Regex::new(re)
                    .map_err(|e| anyhow::anyhow!("group_by {re:?} is not a valid regex: {e}"))?;
                if regex.captures_len() < 2 {
                    bail!("group_by {re:?} has no capture group; the first one is the key");
                }
                Ok(GroupBy::Regex(regex))
            }
        }
    }

    /// The group key of one file (`auto` is decided over all files: [`GroupBy::grouping`]).
    pub fn key(&self, path: &Path) -> Result<String> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        Ok(match self {
            GroupBy::Prefix => {
                let stem = path
                    .file_stem()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default();
                stem.split('_').next().unwrap_or_default().to_string()
            }
            GroupBy::None | GroupBy::Auto => path.display().to_string(),
            GroupBy::Regex(re) => match re.captures(&name).and_then(|c| c.get(1)) {
                Some(m) => m.as_str().to_string(),
                None => bail!(
                    "group_by {:?} does not match {}",
                    re.as_str(),
                    path.display()
                ),
            },
        })
    }
}

/// The largest share of a class one group may hold for `auto` to take the file-name prefix as
/// a grouping key (and above which the scan report warns for any key).
pub const MAX_GROUP_SHARE: f64 = 0.2;

/// Every sample's group key, and how the keys were chosen.
#[derive(Debug, Clone)]
pub struct Grouping {
    pub keys: Vec<String>,
    /// "file-name prefix", "nothing (file by file)", "regex …".
    pub by: String,
    /// For `auto`: why it chose what it chose.
    pub why: Option<String>,
}

impl GroupBy {
    /// The group key of every sample. `auto` takes the file-name prefix when
    /// [`prefix_is_a_key`] says so, else groups file by file.
    pub fn grouping(&self, samples: &[Sample], classes: &[String]) -> Result<Grouping> {
        let keys = |by: &GroupBy| -> Result<Vec<String>> {
            samples.iter().map(|s| by.key(&s.path)).collect()
        };
        Ok(match self {
            GroupBy::Auto => {
                let prefix = keys(&GroupBy::Prefix)?;
                match prefix_is_a_key(samples, classes, &prefix) {
                    Ok(why) => Grouping {
                        keys: prefix,
                        by: "file-name prefix".into(),
                        why: Some(why),
                    },
                    Err(why) => Grouping {
                        keys: keys(&GroupBy::None)?,
                        by: "nothing, file by file".into(),
                        why: Some(why),
                    },
                }
            }
            GroupBy::Prefix => Grouping {
                keys: keys(self)?,
                by: "file-name prefix".into(),
                why: None,
            },
            GroupBy::None => Grouping {
                keys: keys(self)?,
                by: "nothing, file by file".into(),
                why: None,
            },
            GroupBy::Regex(re) => Grouping {
                keys: keys(self)?,
                by: format!("regex {:?}", re.as_str()),
                why: None,
            },
        })
    }
}

/// The largest group of each class under `keys`: (class, group key, files of the class in it,
/// files in the class).
pub fn largest_groups(
    samples: &[Sample],
    classes: &[String],
    keys: &[String],
) -> Vec<(usize, String, usize, usize)> {
    let mut per_class: Vec<BTreeMap<&str, usize>> = vec![BTreeMap::new(); classes.len()];
    for (s, k) in samples.iter().zip(keys) {
        *per_class[s.label].entry(k.as_str()).or_default() += 1;
    }
    per_class
        .iter()
        .enumerate()
        .filter_map(|(c, groups)| {
            let total: usize = groups.values().sum();
            let (key, n) = groups
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))?;
            Some((c, key.to_string(), *n, total))
        })
        .collect()
}

/// Whether the file-name prefix looks like a grouping key (a patient, a subject): some files
/// share a prefix, and no prefix holds more than [`MAX_GROUP_SHARE`] of a class's files (and
/// more than 2 of them: in a class of 4 a patient with 2 photos is fine). `IMG_0001.jpg`,
/// `DSC_2011.jpg`: one prefix holds a whole class, no key. The answer says why, either way.
pub fn prefix_is_a_key(
    samples: &[Sample],
    classes: &[String],
    keys: &[String],
) -> std::result::Result<String, String> {
    let distinct: std::collections::BTreeSet<&String> = keys.iter().collect();
    if distinct.len() == keys.len() {
        return Err("no two files share a file-name prefix".into());
    }
    let largest = largest_groups(samples, classes, keys);
    for (c, key, n, total) in &largest {
        let share = *n as f64 / *total as f64;
        if share > MAX_GROUP_SHARE && *n > 2 {
            return Err(format!(
                "the file-name prefix {key:?} holds {n} of the {total} images of class {} \
                 ({:.0} %, more than {:.0} %), so it is no patient or subject key",
                classes[*c],
                share * 100.0,
                MAX_GROUP_SHARE * 100.0
            ));
        }
    }
    Ok(format!(
        "no prefix holds more than {:.0} % of a class",
        MAX_GROUP_SHARE * 100.0
    ))
}

/// What to do when the groups are too few for a split.
const FEW_GROUPS_HINT: &str = "--group-by none splits file by file; --group-by auto decides from \
                               the file names";

/// Indices into the sample list on each side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
}

/// The samples' groups: group keys in sorted order, each with its sample indices and its
/// per-class counts.
struct Groups {
    members: Vec<Vec<usize>>,
    counts: Vec<Vec<usize>>,
    class_totals: Vec<usize>,
}

fn groups(samples: &[Sample], num_classes: usize, keys: &[String]) -> Result<Groups> {
    if keys.len() != samples.len() {
        bail!(
            "group keys: expected one per sample ({}), got {}",
            samples.len(),
            keys.len()
        );
    }
    let mut map: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        map.entry(k.as_str()).or_default().push(i);
    }
    let members: Vec<Vec<usize>> = map.into_values().collect();
    let counts = members
        .iter()
        .map(|m| {
            let mut c = vec![0; num_classes];
            for &i in m {
                c[samples[i].label] += 1;
            }
            c
        })
        .collect();
    let mut class_totals = vec![0; num_classes];
    for s in samples {
        class_totals[s.label] += 1;
    }
    Ok(Groups {
        members,
        counts,
        class_totals,
    })
}

/// The groups in the order they are placed: shuffled by the seed, then largest first.
fn order(g: &Groups, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..g.members.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    order.sort_by_key(|&i| std::cmp::Reverse(g.members[i].len()));
    order
}

fn collect(g: &Groups, chosen: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut out: Vec<usize> = (0..g.members.len())
        .filter(|&i| chosen(i))
        .flat_map(|i| g.members[i].iter().copied())
        .collect();
    out.sort_unstable();
    out
}

/// A hold-out split with about `val_fraction` of each class on the validation side.
pub fn holdout(
    samples: &[Sample],
    num_classes: usize,
    keys: &[String],
    val_fraction: f64,
    seed: u64,
) -> Result<Split> {
    if !(val_fraction > 0.0 && val_fraction < 1.0) {
        bail!("--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}");
    }
    let g = groups(samples, num_classes, keys)?;
    let target: Vec<f64> = g
        .class_totals
        .iter()
        .map(|&n| n as f64 * val_fraction)
        .collect();
    let mut val_counts = vec![0usize; num_classes];
    let mut in_val = vec![false; g.members.len()];
    let distance = |counts: &[usize]| -> f64 {
        counts
            .iter()
            .zip(&target)
            .map(|(&c, &t)| (c as f64 - t).abs())
            .sum()
    };
    for i in order(&g, seed) {
        let with: Vec<usize> = val_counts
            .iter()
            .zip(&g.counts[i])
            .map(|(a, b)| a + b)
            .collect();
        if distance(&with) < distance(&val_counts) {
            val_counts = with;
            in_val[i] = true;
        }
    }
    let split = Split {
        train: collect(&g, |i| !in_val[i]),
        val: collect(&g, |i| in_val[i]),
    };
    if split.val.is_empty() || split.train.is_empty() {
        bail!(
            "--val-fraction {val_fraction} leaves one side empty with {} groups of {} images \
             ({})",
            g.members.len(),
            samples.len(),
            FEW_GROUPS_HINT
        );
    }
    Ok(split)
}

/// Fold `fold` (0-based) of a stratified, grouped `k`-fold partition: that fold is the
/// validation side, the other folds the training side.
pub fn kfold(
    samples: &[Sample],
    num_classes: usize,
    keys: &[String],
    k: usize,
    fold: usize,
    seed: u64,
) -> Result<Split> {
    if k < 2 {
        bail!("--folds must be at least 2, got {k}");
    }
    if fold >= k {
        bail!(
            "--fold must be between 0 and {} for --folds {k}, got {fold}",
            k - 1
        );
    }
    let g = groups(samples, num_classes, keys)?;
    if g.members.len() < k {
        bail!(
            "{k} folds need at least {k} groups; the data has {} ({FEW_GROUPS_HINT})",
            g.members.len()
        );
    }
    let target: Vec<f64> = g
        .class_totals
        .iter()
        .map(|&n| n as f64 / k as f64)
        .collect();
    let mut fold_counts = vec![vec![0usize; num_classes]; k];
    let mut fold_sizes = vec![0usize; k];
    let mut assigned = vec![0usize; g.members.len()];
    for i in order(&g, seed) {
        // The fold whose squared distance to its per-class targets grows least.
        let cost = |f: usize| -> f64 {
            (0..num_classes)
                .map(|c| {
                    let now = fold_counts[f][c] as f64 - target[c];
                    let next = now + g.counts[i][c] as f64;
                    next * next - now * now
                })
                .sum()
        };
        let best = (0..k)
            .min_by(|&a, &b| {
                cost(a)
                    .total_cmp(&cost(b))
                    .then(fold_sizes[a].cmp(&fold_sizes[b]))
            })
            .unwrap_or(0);
        for (count, add) in fold_counts[best].iter_mut().zip(&g.counts[i]) {
            *count += add;
        }
        fold_sizes[best] += g.members[i].len();
        assigned[i] = best;
    }
    if let Some(empty) = (0..k).find(|&f| fold_sizes[f] == 0) {
        bail!("fold {empty} of {k} is empty: too few groups for {k} folds ({FEW_GROUPS_HINT})");
    }
    Ok(Split {
        train: collect(&g, |i| assigned[i] != fold),
        val: collect(&g, |i| assigned[i] == fold),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `group_by` in a config file: each choice reads as itself and writes back as it was
    /// given; a regular expression that does not compile, or has no capture group, is refused
    /// when the file is read.
    #[test]
    fn group_by_reads_and_writes_as_its_spec_and_refuses_a_bad_regex() {
        for spec in ["auto", "prefix", "none", r"^(P\d+)_"] {
            let text = serde_json::to_string(spec).unwrap();
            let g: GroupBy = serde_json::from_str(&text).unwrap();
            assert_eq!(g.spec(), spec);
            assert_eq!(serde_json::to_string(&g).unwrap(), text);
        }
        let g: GroupBy = serde_json::from_str(r#""none""#).unwrap();
        assert!(matches!(g, GroupBy::None));
        let g: GroupBy = serde_json::from_str(r#""^(P\\d+)_""#).unwrap();
        assert_eq!(g.key(Path::new("P13_2.jpg")).unwrap(), "P13");
        for (spec, message) in [("(", "is not a valid regex"), ("P", "has no capture group")] {
            let err = serde_json::from_str::<GroupBy>(&serde_json::to_string(spec).unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains(message), "{spec}: {err}");
        }
    }
}
