//! `oof.csv`: the out-of-fold predictions of a cross-validation, one row per image, predicted
//! by the fold model that did not train on it.
//!
//! Columns: `path` (relative to the dataset), `truth`, `prob_<class>` for each class (9
//! decimals), `logit_<class>` for each class (the f32 logit as f64's shortest `{:e}` form,
//! which reads back bit for bit whether parsed as f64 or f32 — f32's shortest form would not
//! as f64: at 9 decimals probabilities saturate to 0 or 1, and then a clip, not the network,
//! would decide a temperature fitted on them), `fold`, and `group` (the patient key the split
//! grouped by). Files written before the logits and groups were added (`path`, `truth`, the
//! probabilities, `fold`) still read, without them.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::text::csv_field;

/// One image of `oof.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct OofRow {
    pub path: String,
    pub truth: usize,
    pub probs: Vec<f64>,
    /// Absent in files written before logits were recorded.
    pub logits: Option<Vec<f64>>,
    pub fold: usize,
    pub group: Option<String>,
}

/// The header of the current format.
pub fn header(classes: &[String]) -> String {
    let mut h = "path,truth".to_string();
    for c in classes {
        h += ",";
        h += &csv_field(&format!("prob_{c}"));
    }
    for c in classes {
        h += ",";
        h += &csv_field(&format!("logit_{c}"));
    }
    h + ",fold,group\n"
}

/// The header of files written before logits and groups.
fn old_header(classes: &[String]) -> String {
    let mut h = "path,truth".to_string();
    for c in classes {
        h += ",";
        h += &csv_field(&format!("prob_{c}"));
    }
    h + ",fold"
}

/// Appends one row (`logits` rounded to f32, written exactly).
pub fn write_row(out: &mut String, row: &OofRow, classes: &[String]) {
    *out += &csv_field(&row.path);
    let _ = write!(out, ",{}", csv_field(&classes[row.truth]));
    for v in &row.probs {
        let _ = write!(out, ",{v:.9}");
    }
    for v in row.logits.iter().flatten() {
        // The f32 logit widened to f64, written as f64's shortest round-trip form: exact for
        // a reader that parses it as f64 (numpy, pandas) or as f32.
        let _ = write!(out, ",{:e}", (*v as f32) as f64);
    }
    let _ = writeln!(
        out,
        ",{},{}",
        row.fold,
        csv_field(row.group.as_deref().unwrap_or(""))
    );
}

/// Splits one CSV line into fields (double quotes quote, `""` is a quote).
pub fn fields(line: &str) -> Vec<String> {
    let mut fields = vec![];
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// Reads `path` for a cv of `classes` (in cv.json's order) and `folds` folds.
pub fn read(path: &Path, classes: &[String], folds: usize) -> Result<Vec<OofRow>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    let head = lines.next().unwrap_or_default();
    let k = classes.len();
    let (new, old) = (header(classes), old_header(classes));
    let with_logits = if head == new.trim_end() {
        true
    } else if head == old {
        false
    } else {
        bail!(
            "{}: expected the header {:?} (path, truth, a probability and a logit per class of \
             cv.json in its order, fold, group), got {head:?}",
            path.display(),
            new.trim_end()
        );
    };
    let expected = if with_logits { 4 + 2 * k } else { 3 + k };
    let mut rows = vec![];
    let mut seen = std::collections::BTreeSet::new();
    for (i, line) in lines.enumerate() {
        let bad = |what: &str| format!("{} line {}: {what}", path.display(), i + 2);
        let f = fields(line);
        if f.len() != expected {
            bail!(bad(&format!("expected {expected} fields, got {}", f.len())));
        }
        let numbers = |range: std::ops::Range<usize>, what: &str| -> Result<Vec<f64>> {
            f[range]
                .iter()
                .map(|p| p.parse::<f64>())
                .collect::<Result<_, _>>()
                .with_context(|| bad(&format!("a {what} that is not a number")))
        };
        let probs = numbers(2..2 + k, "probability")?;
        let logits = with_logits
            .then(|| numbers(2 + k..2 + 2 * k, "logit"))
            .transpose()?;
        let fold_at = if with_logits { 2 + 2 * k } else { 2 + k };
        let fold: usize = f[fold_at]
            .parse()
            .with_context(|| bad("a fold that is not a number"))?;
        if fold >= folds {
            bail!(bad(&format!("fold {fold} of a cv of {folds} folds")));
        }
        let Some(truth) = classes.iter().position(|c| *c == f[1]) else {
            bail!(bad(&format!(
                "the class {:?} is not one of cv.json's",
                f[1]
            )));
        };
        if !seen.insert(f[0].clone()) {
            bail!(bad(&format!("{} appears twice", f[0])));
        }
        rows.push(OofRow {
            path: f[0].clone(),
            truth,
            probs,
            logits,
            fold,
            group: with_logits.then(|| f[fold_at + 1].clone()),
        });
    }
    Ok(rows)
}
