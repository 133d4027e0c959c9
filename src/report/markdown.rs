//! The report as a Hugging Face Hub model card: README.md whose YAML front matter holds
//! `license`, `library_name`, `pipeline_tag`, `tags`, `datasets`, `metrics` and a `model-index`
//! whose results are the cv's figures (https://huggingface.co/docs/hub/model-cards), and the
//! body in the card's usual sections; the charts (SVG) and gallery photos (JPEG) go into a
//! folder beside it, linked relatively, so that the card can be published next to the weights.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::gallery::Kind3;
use super::html::{curve_charts, f3, reliability_chart, title, today, training_charts};
use super::{headline, Figures, Report, Source};

/// One file the card links to, relative to the card's folder.
pub type Asset = (String, Vec<u8>);

/// The measures of a model-index result: (cv.json's or eval's name, Hub metric type, shown name).
const MEASURES: [(&str, &str, &str); 5] = [
    ("accuracy", "accuracy", "Accuracy"),
    ("macro_f1", "f1", "Macro-F1"),
    ("roc_auc", "roc_auc", "ROC AUC"),
    ("sensitivity", "recall", "Sensitivity"),
    ("specificity", "specificity", "Specificity"),
];

/// A dataset's short name: the folder's.
fn dataset_name(r: &Report) -> String {
    std::path::Path::new(&r.dataset)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".into())
}

/// The front matter as JSON (then written as YAML).
pub fn front_matter(r: &Report) -> Value {
    let data = dataset_name(r);
    let mut results = vec![];
    let task = json!({"type": "image-classification", "name": "Image Classification"});
    if let Some(cv) = &r.cv {
        let metrics: Vec<Value> = MEASURES
            .iter()
            .filter_map(|(key, kind, name)| {
                let m = cv.model.measure(key)?;
                Some(json!({
                    "type": kind,
                    "value": m.mean,
                    "name": format!("{name} (mean over {} folds)", r.models.len()),
                }))
            })
            .collect();
        results.push(json!({
            "task": task,
            "dataset": {"name": data, "type": data,
                        "split": format!("{}-fold cross-validation by patient, out of fold", r.models.len())},
            "metrics": metrics,
        }));
    }
    let evals = r
        .validation
        .iter()
        .map(|m| (m, "validation split"))
        .chain(r.external.iter().map(|m| (m, "external test folder")));
    for (m, split) in evals {
        let name = match split {
            "validation split" => data.clone(),
            _ => std::path::Path::new(&m.folder)
                .file_name()
                .map_or("external".into(), |n| n.to_string_lossy().into_owned()),
        };
        let metrics: Vec<Value> = MEASURES
            .iter()
            .filter_map(|(key, kind, shown)| {
                let e = &m.eval.evaluation;
                let binary = e.binary.as_ref();
                let v = match *key {
                    "accuracy" => Some(e.accuracy),
                    "macro_f1" => Some(e.macro_avg.f1),
                    "roc_auc" => binary.map(|b| b.roc_auc),
                    "sensitivity" => binary.map(|b| b.sensitivity),
                    "specificity" => binary.map(|b| b.specificity),
                    _ => None,
                };
                v.filter(|x| x.is_finite())
                    .map(|x| json!({"type": kind, "value": x, "name": shown}))
            })
            .collect();
        results.push(json!({
            "task": task,
            "dataset": {"name": name, "type": name, "split": split},
            "metrics": metrics,
        }));
    }
    json!({
        "license": r.card.license.clone().unwrap_or_else(|| "other".into()),
        "library_name": "inception",
        "pipeline_tag": "image-classification",
        "tags": ["image-classification", "inception", r.meta.arch.to_string(), "model-card"],
        "datasets": [data],
        "metrics": ["accuracy", "f1", "roc_auc"],
        "model-index": [{
            "name": format!("{}-{}", r.meta.arch, dataset_name(r)),
            "results": results,
        }],
    })
}

/// `v` as block-style YAML at `indent` (strings double-quoted in JSON's escapes, which YAML's
/// double-quoted scalars read the same; keys plain where they may be).
pub fn yaml(v: &Value, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let key = |k: &str| {
        if !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            && !k.starts_with('-')
        {
            k.to_string()
        } else {
            Value::from(k).to_string()
        }
    };
    let scalar = |v: &Value| match v {
        Value::String(s) => Value::from(s.as_str()).to_string(),
        other => other.to_string(),
    };
    let mut out = String::new();
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match v {
                    Value::Object(o) if !o.is_empty() => {
                        let _ = writeln!(out, "{pad}{}:", key(k));
                        out += &yaml(v, indent + 2);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        let _ = writeln!(out, "{pad}{}:", key(k));
                        out += &yaml(v, indent);
                    }
                    Value::Object(_) => {
                        let _ = writeln!(out, "{pad}{}: {{}}", key(k));
                    }
                    Value::Array(_) => {
                        let _ = writeln!(out, "{pad}{}: []", key(k));
                    }
                    s => {
                        let _ = writeln!(out, "{pad}{}: {}", key(k), scalar(s));
                    }
                }
            }
        }
        Value::Array(a) => {
            for item in a {
                match item {
                    Value::Object(o) if !o.is_empty() => {
                        // The first key on the dash's line, the rest under it.
                        let inner = yaml(item, indent + 2);
                        let _ = write!(out, "{pad}- {}", &inner[indent + 2..]);
                    }
                    Value::Array(x) if !x.is_empty() => {
                        let _ = writeln!(out, "{pad}-");
                        out += &yaml(item, indent + 2);
                    }
                    s => {
                        let _ = writeln!(out, "{pad}- {}", scalar(s));
                    }
                }
            }
        }
        s => {
            let _ = writeln!(out, "{pad}{}", scalar(s));
        }
    }
    out
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The card and its files; `assets` is the folder name the card links into.
pub fn render(r: &Report, assets: &str) -> (String, Vec<Asset>) {
    let mut files: Vec<Asset> = vec![];
    let mut md = format!("---\n{}---\n\n", yaml(&front_matter(r), 0));
    let _ = writeln!(md, "# {}\n", title(r));
    let what = match r.source {
        Source::Cv => format!("a {}-fold cross-validation", r.models.len()),
        Source::Run => "a training run".into(),
    };
    let _ = writeln!(
        md,
        "An image classifier trained with the inception tool from {what} \
         (`{}`); card written by inception {} on {} with `inception report {} --format md`.\n",
        r.dir.display(),
        env!("CARGO_PKG_VERSION"),
        today(),
        r.dir.display()
    );
    if let Some((acc, images)) = headline(r) {
        let _ = writeln!(
            md,
            "**Accuracy {} (95 % CI {}–{}) on {images} held-out images.**\n",
            f3(acc.value),
            f3(acc.low),
            f3(acc.high)
        );
    }
    md += "## Model details\n\n| | |\n|---|---|\n";
    let _ = writeln!(md, "| architecture | {} |", r.meta.arch);
    if let Some(s) = &r.summary {
        let _ = writeln!(
            md,
            "| parameters | {:.2} M |\n| multiply–adds | {:.2} G at {}×{} |",
            s.total_params as f64 / 1e6,
            s.total_macs as f64 / 1e9,
            s.image_size,
            s.image_size
        );
    }
    let _ = writeln!(md, "| classes | {} |", cell(&r.meta.classes.join(", ")));
    let _ = writeln!(
        md,
        "| input | {0}×{0} RGB, mean {1:?}, std {2:?} |",
        r.meta.image_size, r.meta.normalization.mean, r.meta.normalization.std
    );
    if let Some(e) = &r.environment {
        let w = &e.initial_weights;
        let _ = writeln!(
            md,
            "| initial weights | {}{}{} |",
            w.from,
            w.what
                .as_deref()
                .map(|s| format!(": {}", cell(s)))
                .unwrap_or_default(),
            w.sha256
                .as_deref()
                .map(|s| format!(", SHA-256 `{s}`"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            md,
            "| trained on | {}, {} |\n| tool | inception {} (commit `{}`), libtorch {} |",
            e.device,
            e.precision,
            e.tool_version,
            e.git_commit.as_deref().unwrap_or("unknown"),
            e.libtorch
        );
    }
    let _ = writeln!(md, "| training time | {} |\n", super::training_time(r));

    md += "## Intended use\n\n";
    let _ = writeln!(
        md,
        "{}\n",
        r.card
            .intended_use
            .as_deref()
            .unwrap_or("Not stated (the config's `card` block holds it).")
    );
    md += "## Out-of-scope use\n\n";
    let _ = writeln!(
        md,
        "{}\n",
        r.card
            .out_of_scope
            .as_deref()
            .unwrap_or("Not stated (the config's `card` block holds it).")
    );
    if let Some(c) = &r.card.caveats {
        let _ = writeln!(md, "## Caveats\n\n{c}\n");
    }
    md += "## Limits the tool states from the data\n\n";
    for l in &r.limits {
        let _ = writeln!(md, "- {l}");
    }
    for m in &r.missing {
        let _ = writeln!(md, "- Not shown: {m}");
    }
    md += "\n## Training data\n\n";
    let _ = writeln!(md, "`{}` — data card {}.\n", r.dataset, r.data_card_note);
    if let Some(d) = &r.data_card {
        md += "| class | images | patients (groups) |\n|---|---:|---:|\n";
        for c in &d.classes {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                cell(&c.class),
                c.images,
                c.groups.map_or("—".into(), |g| g.to_string())
            );
        }
        if let Some(split) = super::split_line(r) {
            let _ = writeln!(md, "\nSplit: {split}.");
        }
        for n in &d.notes {
            let _ = writeln!(md, "- {}", n);
        }
        md += "\n";
    }

    md += "## Evaluation\n\n";
    if let Some(cv) = &r.cv {
        md += "Out of fold, mean ± std over folds and the 95 % t-interval of the mean:\n\n\
               | measure | mean ± std | 95 % CI |\n|---|---:|---:|\n";
        for m in &cv.model.summary {
            let s = &m.summary;
            let _ = writeln!(
                md,
                "| {} | {} ± {} | {}–{} |",
                m.measure.replace('_', " "),
                f3(s.mean),
                f3(s.std),
                f3(s.ci95[0]),
                f3(s.ci95[1])
            );
        }
        md += "\n";
    }
    let sets: Vec<(&str, Figures, &[super::gallery::Prediction])> =
        r.cv.as_ref()
            .map(|cv| ("cv", Figures::of_cv(cv), r.predictions.as_slice()))
            .into_iter()
            .chain(r.validation.iter().map(|m| {
                (
                    "validation",
                    Figures::of_eval(&m.eval),
                    m.predictions.as_slice(),
                )
            }))
            .chain(r.external.iter().map(|m| {
                (
                    "external",
                    Figures::of_eval(&m.eval),
                    m.predictions.as_slice(),
                )
            }))
            .collect();
    for (set, v, preds) in sets {
        let _ = writeln!(
            md,
            "### {}\n\n| measure | value (95 % interval) |\n|---|---:|",
            match set {
                "cv" => "Pooled out-of-fold predictions".to_string(),
                "validation" => "Validation images".to_string(),
                _ => format!(
                    "External test set `{}`",
                    r.external.as_ref().map_or("", |m| m.folder.as_str())
                ),
            }
        );
        for (key, iv) in v.intervals() {
            let _ = writeln!(
                md,
                "| {} | {} ({}–{}) |",
                key.replace('_', " "),
                f3(iv.value),
                f3(iv.low),
                f3(iv.high)
            );
        }
        if let Some(op) = &v.operating_point {
            let _ = writeln!(
                md,
                "\n{} {} on P({}): sensitivity {} ({}–{}), specificity {} ({}–{}).",
                match op.target_sensitivity {
                    Some(t) => format!("Screening threshold (for sensitivity {t})"),
                    None => "No screening threshold fitted: decisions at the default".into(),
                },
                f3(op.threshold),
                op.positive_class,
                f3(op.sensitivity.value),
                f3(op.sensitivity.low),
                f3(op.sensitivity.high),
                f3(op.specificity.value),
                f3(op.specificity.low),
                f3(op.specificity.high)
            );
        }
        if let Some(cal) = &v.calibration {
            let _ = writeln!(
                md,
                "\nCalibration: temperature {} ({}); ECE {} → {}.",
                f3(cal.temperature),
                if cal.applied {
                    "applied"
                } else {
                    "not applied"
                },
                f3(cal.before.ece),
                f3(cal.after.ece)
            );
        }
        if let Some(conf) = &v.conformal {
            let _ = writeln!(
                md,
                "\nConformal sets (α {}): coverage {}, mean set size {}.",
                Value::from(conf.alpha),
                f3(conf.coverage),
                f3(conf.mean_set_size)
            );
        }
        md += "\n";
        let mut charts = curve_charts(r, set, preds);
        if let Some(svg) = reliability_chart(preds, set) {
            charts.push(("reliability", svg));
        }
        for (name, svg) in charts {
            let file = format!("{set}-{name}.svg");
            let _ = writeln!(md, "![{name}]({assets}/{file})");
            files.push((file, svg.into_bytes()));
        }
        md += "\n";
    }

    if !r.gallery.is_empty() {
        md += "## Where it fails\n\nHeld-out photos per true class, with the Grad-CAM map of the \
               class the model chose.\n\n| class | kind | photo | Grad-CAM | path | predicted |\n\
               |---|---|---|---|---|---|\n";
        for (i, t) in r.gallery.iter().enumerate() {
            let (photo, cam) = (format!("tile-{i}.jpg"), format!("tile-{i}.cam.jpg"));
            let _ = writeln!(
                md,
                "| {} | {} | ![photo]({assets}/{photo}) | ![cam]({assets}/{cam}) | `{}` | {} {:.3} |",
                cell(&r.classes[t.prediction.truth]),
                match t.kind {
                    Kind3::ConfidentlyWrong => "confidently wrong",
                    Kind3::Uncertain => "least certain",
                    Kind3::ConfidentlyRight => "confidently right",
                },
                cell(&t.prediction.path),
                cell(&r.classes[t.predicted]),
                t.probability
            );
            files.push((photo, t.photo.clone()));
            files.push((cam, t.cam.clone()));
        }
        md += "\n";
    }
    let charts = training_charts(r);
    if !charts.is_empty() {
        md += "## Training curves\n\n";
        for (name, svg) in charts {
            let file = format!("training-{name}.svg");
            let _ = writeln!(md, "![{name}]({assets}/{file})");
            files.push((file, svg.into_bytes()));
        }
        md += "\n";
    }
    md += "## How to use\n\n```console\n";
    let _ = writeln!(
        md,
        "$ inception predict --checkpoint {} photo.jpg\n```",
        match r.source {
            Source::Cv => r.dir.display().to_string(),
            Source::Run => r.models[0].display().to_string(),
        }
    );
    (md, files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_nests_maps_and_lists_and_quotes_strings() {
        let v = json!({"a": "x: y", "b": [1, {"c": "d", "e": [true]}], "model-index": []});
        let y = yaml(&v, 0);
        assert_eq!(
            y,
            "a: \"x: y\"\nb:\n- 1\n- c: \"d\"\n  e:\n  - true\nmodel-index: []\n"
        );
    }
}
