//! The report as one self-contained HTML page: inline CSS, inline SVG charts, photos as
//! `data:` URIs, no script, and a Content-Security-Policy that forbids every fetch, so that it
//! reads the same from a disk, a mail attachment or a phone, and prints. Every figure carries
//! its exact value in `data-` attributes (what the browser test reads back).

use std::fmt::Write as _;

use base64::Engine;
use serde_json::Value;

use super::gallery::{Kind3, Prediction};
use super::svg::{esc, line_chart, Chart, Series};
use super::{headline, Calibration, Figures, Operating, Report, Sets, Source};
use crate::metrics::{roc_auc, roc_curve, Evaluation};
use crate::runs::cv::{CvReport, MEASURES};
use crate::trust::calibration::{reliability, scored, Measures};

const STYLE: &str = r#"
:root{--fg:#1b1b1b;--mute:#5f6368;--line:#d9d9d9;--bad:#b3261e;--good:#1e6b34}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);margin:0 auto;max-width:1040px;padding:16px}
h1{font-size:1.6em;margin:.2em 0}h2{border-bottom:2px solid var(--fg);padding-bottom:.15em;margin-top:1.8em}h3{margin:1.2em 0 .4em}
.sub{color:var(--mute)}
.headline{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.headline div{border:1px solid var(--line);border-radius:6px;padding:8px 12px;min-width:150px}
.headline b{display:block;font-size:1.5em}
.scroll{overflow-x:auto}
table{border-collapse:collapse;margin:.4em 0 1em;font-variant-numeric:tabular-nums}
th,td{border:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}
td.n{text-align:right}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:12px}
svg.chart{width:100%;height:auto;font-size:11px;font-family:inherit}
svg .ct{font-size:13px;font-weight:600}svg .lg{font-size:11px}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px;margin:.6em 0}
.limits li{margin:.3em 0}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(165px,1fr));gap:10px}
figure.tile{margin:0;border:1px solid var(--line);border-radius:6px;padding:6px;break-inside:avoid}
figure.tile img{width:49%;height:auto;image-rendering:auto}
figure.tile figcaption{font-size:12px}figure.tile code{overflow-wrap:anywhere}
.wrong{color:var(--bad)}.right{color:var(--good)}
pre{white-space:pre-wrap;word-break:break-all;background:#f6f6f6;padding:8px;font-size:12px}
@media print{body{max-width:none;font-size:11px}h2{break-after:avoid}.charts{grid-template-columns:1fr 1fr}section{break-inside:auto}}
"#;

/// A set of predictions and the figures it is measured with.
struct Measured<'a> {
    /// `cv`, `validation` or `external`: the section's `data-set`.
    set: &'a str,
    figures: Figures<'a>,
    predictions: &'a [Prediction],
}

/// A figure, unless it is not a number (NaN: not defined for these images).
fn known(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// A number with 3 decimals, or a dash (NaN: not defined for these images); the card's too.
pub(super) fn f3(x: f64) -> String {
    known(x).map_or("—".into(), |x| format!("{x:.3}"))
}

/// A proportion's interval end shown within 0–1 (a t-interval over few folds can pass them;
/// the attribute keeps the exact value).
fn clipped(x: f64) -> String {
    known(x).map_or("—".into(), |x| format!("{:.3}", x.clamp(0.0, 1.0)))
}

/// An attribute holding the exact value (JSON's shortest round-trip form).
fn attr(name: &str, x: f64) -> String {
    match known(x) {
        Some(x) => format!(r#" {name}="{}""#, Value::from(x)),
        None => String::new(),
    }
}

/// An optional figure: [`f3`], and a dash when there is none.
fn f3o(x: Option<f64>) -> String {
    x.map_or("—".into(), f3)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A value with its interval: `0.798 (0.734–0.850)`.
fn with_interval(value: f64, low: f64, high: f64) -> String {
    match (known(low), known(high)) {
        (Some(l), Some(h)) => format!("{} ({l:.3}–{h:.3})", f3(value)),
        _ => f3(value),
    }
}

/// Today's date (UTC) as YYYY-MM-DD.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    // Howard Hinnant's civil_from_days.
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The page's title line.
pub fn title(r: &Report) -> String {
    let data = std::path::Path::new(&r.dataset)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| r.dataset.clone());
    format!("{} on {data}", r.meta.arch)
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'"><title>Model report: {t}</title><style>{STYLE}</style></head><body>"#,
        t = esc(&title(r))
    );
    let what = match r.source {
        Source::Cv => format!("{}-fold cross-validation", r.models.len()),
        Source::Run => "training run".into(),
    };
    let _ = write!(
        h,
        r#"<header><h1>Model report: {t}</h1><p class="sub">{what} <code>{dir}</code> · written by inception {v} on {d} · <code>inception report {dir}</code></p>"#,
        t = esc(&title(r)),
        dir = esc(&r.dir.display().to_string()),
        v = env!("CARGO_PKG_VERSION"),
        d = today()
    );
    headline_boxes(&mut h, r);
    h.push_str(r##"<nav class="sub">Contents: <a href="#model">model</a> · <a href="#use">intended use and limits</a> · <a href="#data">data</a> · <a href="#evaluation">evaluation</a> · <a href="#failures">where it fails</a> · <a href="#training">training</a></nav></header>"##);
    model_section(&mut h, r);
    use_section(&mut h, r);
    data_section(&mut h, r);
    evaluation_section(&mut h, r);
    failures_section(&mut h, r);
    training_section(&mut h, r);
    h.push_str("</body></html>\n");
    h
}

fn headline_boxes(h: &mut String, r: &Report) {
    h.push_str(r#"<div class="headline">"#);
    if let Some((acc, images)) = headline(r) {
        let _ = write!(
            h,
            r#"<div id="headline-accuracy"{}{}{}>accuracy<b>{}</b>95 % CI {}–{} · {images} held-out images</div>"#,
            attr("data-value", acc.value),
            attr("data-low", acc.low),
            attr("data-high", acc.high),
            f3(acc.value),
            f3(acc.low),
            f3(acc.high)
        );
    } else {
        h.push_str("<div>accuracy<b>—</b>no held-out images measured</div>");
    }
    if let Some((class, share)) = super::majority(r) {
        let _ = write!(
            h,
            r#"<div id="headline-majority" data-value="{}">majority class<b>{share:.3}</b>always answering {}</div>"#,
            Value::from(share),
            esc(&class)
        );
    }
    let _ = write!(
        h,
        "<div>classes<b>{}</b>{}</div></div>",
        r.classes.len(),
        esc(&r.classes.join(", "))
    );
}

fn row(h: &mut String, key: &str, value: &str) {
    let _ = write!(h, "<tr><th>{}</th><td>{value}</td></tr>", esc(key));
}

fn model_section(h: &mut String, r: &Report) {
    h.push_str(r#"<section id="model"><h2>Model details</h2><div class="scroll"><table>"#);
    let m = &r.meta;
    row(h, "architecture", &esc(&m.arch.to_string()));
    if let Some(s) = &r.summary {
        row(
            h,
            "parameters",
            &format!(
                r#"<span data-params="{p}">{:.2} M</span>"#,
                s.total_params as f64 / 1e6,
                p = s.total_params
            ),
        );
        row(
            h,
            "multiply–adds per image",
            &format!(
                r#"<span data-macs="{m}">{:.2} G</span> at {}×{}"#,
                s.total_macs as f64 / 1e9,
                s.image_size,
                s.image_size,
                m = s.total_macs
            ),
        );
    }
    row(h, "classes (output order)", &esc(&m.classes.join(", ")));
    row(
        h,
        "input",
        &format!(
            "{}×{} RGB, resized and centre-cropped as evaluation does, mean {:?}, std {:?}{}",
            m.image_size,
            m.image_size,
            m.normalization.mean,
            m.normalization.std,
            if m.transform_input {
                "; torchvision's transform_input"
            } else {
                ""
            }
        ),
    );
    let flips = m.flips;
    if flips.horizontal || flips.vertical {
        row(
            h,
            "flip averaging",
            "features averaged over the image and its flips (average_flips)",
        );
    }
    let init = match &r.environment {
        Some(e) => {
            let w = &e.initial_weights;
            let mut s = esc(&w.from);
            if let Some(what) = &w.what {
                s += &format!(": {}", esc(what));
            }
            if let Some(f) = &w.file {
                s += &format!(", file <code>{}</code>", esc(f));
            }
            if let Some(sha) = &w.sha256 {
                s += &format!(", SHA-256 <code>{}</code>", esc(sha));
            }
            s
        }
        None => match (&r.config.init, r.config.pretrained) {
            (Some(p), _) => format!(
                "--init {} (hash not recorded)",
                esc(&p.display().to_string())
            ),
            (None, true) => "pretrained ImageNet weights (file and hash not recorded)".into(),
            (None, false) => "from scratch (seeded random)".into(),
        },
    };
    row(h, "initial weights", &init);
    let c = &r.config;
    let recipe = format!(
        "{} epochs, batch {}, {:?} lr {} ({:?}), weight decay {}, label smoothing {}{}{}",
        c.epochs,
        c.batch_size,
        c.optimizer,
        c.lr,
        c.schedule,
        c.weight_decay,
        c.label_smoothing,
        c.probe_c
            .map(|p| format!(", linear probe fitted first (C {p})"))
            .unwrap_or_default(),
        if c.average_flips {
            ", flip-averaged features"
        } else {
            ""
        }
    );
    row(h, "recipe", &esc(&recipe));
    row(h, "training time", &super::training_time(r));
    match &r.environment {
        Some(e) => {
            row(
                h,
                "device and precision",
                &esc(&format!(
                    "{}, {}{}",
                    e.device,
                    e.precision,
                    if e.processes > 1 {
                        format!(", {} processes", e.processes)
                    } else {
                        String::new()
                    }
                )),
            );
            row(
                h,
                "tool",
                &format!(
                    "inception {} (commit <code>{}</code>), libtorch {}",
                    esc(&e.tool_version),
                    esc(e.git_commit.as_deref().unwrap_or("unknown")),
                    esc(&e.libtorch)
                ),
            );
        }
        None => row(
            h,
            "tool",
            &format!(
                "inception {} (device, precision, commit and libtorch not recorded)",
                esc(&m.tool_version)
            ),
        ),
    }
    let trust = match &m.trust {
        Some(t) => format!(
            "temperature {} fitted on {}{}",
            t.calibration
                .as_ref()
                .map_or("none".into(), |c| format!("{:.3}", c.temperature)),
            esc(&t.fitted_on),
            t.threshold
                .as_ref()
                .map(|o| format!(
                    "; screening threshold {:.3} for {}",
                    o.threshold,
                    esc(&o.positive_class)
                ))
                .unwrap_or_default()
        ),
        None => match r.source {
            Source::Cv => "the cv's (below), applied when the folder is used as an ensemble".into(),
            Source::Run => "none (uncalibrated probabilities)".into(),
        },
    };
    row(h, "calibration shipped", &trust);
    let files: Vec<String> = r
        .models
        .iter()
        .map(|p| format!("<code>{}</code>", esc(&p.display().to_string())))
        .collect();
    row(h, "weights", &files.join(" "));
    h.push_str("</table></div>");
    let config = serde_json::to_string_pretty(&r.config).unwrap_or_default();
    let _ = write!(
        h,
        "<details><summary>The resolved config</summary><pre>{}</pre></details></section>",
        esc(&config)
    );
}

fn use_section(h: &mut String, r: &Report) {
    h.push_str(r#"<section id="use"><h2>Intended use and limits</h2>"#);
    let card = &r.card;
    let said = |h: &mut String, what: &str, v: &Option<String>, id: &str| match v {
        Some(t) => {
            let _ = write!(h, r#"<h3>{what}</h3><p id="{id}">{}</p>"#, esc(t));
        }
        None => {
            let _ = write!(
                h,
                r#"<h3>{what}</h3><p id="{id}" class="sub">Not stated: the config's <code>card</code> block holds it.</p>"#
            );
        }
    };
    said(h, "Intended use", &card.intended_use, "intended-use");
    said(h, "Out of scope", &card.out_of_scope, "out-of-scope");
    if card.caveats.is_some() {
        said(h, "Caveats", &card.caveats, "caveats");
    }
    h.push_str(r#"<h3>Limits the tool states from the data</h3><ul class="limits" id="limits">"#);
    for l in &r.limits {
        let _ = write!(h, "<li>{}</li>", esc(l));
    }
    h.push_str("</ul>");
    for m in &r.missing {
        let _ = write!(h, r#"<p class="note">Not shown: {}</p>"#, esc(m));
    }
    h.push_str("</section>");
}

fn data_section(h: &mut String, r: &Report) {
    h.push_str(r#"<section id="data"><h2>Data</h2>"#);
    let _ = write!(
        h,
        "<p>Dataset <code>{}</code>; data card: {}.</p>",
        esc(&r.dataset),
        esc(&r.data_card_note)
    );
    if let Some(d) = &r.data_card {
        h.push_str(r#"<div class="scroll"><table id="data-classes"><tr><th>class</th><th>images</th><th>patients (groups)*</th>"#);
        let folds = &r.fold_counts;
        for f in 0..folds.len() {
            let _ = write!(h, "<th>held out in fold {f}</th>");
        }
        h.push_str("</tr>");
        for (c, cc) in d.classes.iter().enumerate() {
            let _ = write!(
                h,
                r#"<tr data-class="{}" data-images="{}"><td>{}</td><td class="n">{}</td><td class="n">{}</td>"#,
                esc(&cc.class),
                cc.images,
                esc(&cc.class),
                cc.images,
                cc.groups.map_or("—".into(), |g| g.to_string())
            );
            for f in folds {
                let _ = write!(
                    h,
                    r#"<td class="n">{}</td>"#,
                    f.get(c).copied().unwrap_or(0)
                );
            }
            h.push_str("</tr>");
        }
        let _ = write!(
            h,
            r#"<tr><th>all</th><td class="n">{}</td><td class="n">{}</td>"#,
            d.images,
            d.groups.map_or("—".into(), |g| g.to_string())
        );
        for f in folds {
            let _ = write!(h, r#"<td class="n">{}</td>"#, f.iter().sum::<usize>());
        }
        h.push_str(
            "</tr></table></div><p class=\"sub\">* The split's groups: patients as the grouping \
             rule below found them, the patients of a near-duplicate set joined into one (the \
             bootstrap's intervals resample patients before that join).</p><div \
             class=\"scroll\"><table>",
        );
        let split = super::split_line(r).unwrap_or_default();
        row(h, "split", &esc(&split));
        for n in &d.notes {
            row(h, "scan", &esc(n));
        }
        row(
            h,
            "near-duplicate sets",
            &match d.duplicate_sets {
                Some(n) => {
                    let ex: Vec<String> = d
                        .duplicate_examples
                        .iter()
                        .take(10)
                        .map(|s| esc(&s.join(" = ")))
                        .collect();
                    format!(
                        r#"<span data-duplicate-sets="{n}">{n}</span>{}"#,
                        if ex.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", ex.join("; "))
                        }
                    )
                }
                None => "not searched".into(),
            },
        );
        let types: Vec<String> = d
            .file_types
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        row(h, "file types", &esc(&types.join(", ")));
        row(
            h,
            "image sizes",
            &format!(
                "smallest {}×{}, largest {}×{}",
                d.smallest[0], d.smallest[1], d.largest[0], d.largest[1]
            ),
        );
        row(
            h,
            "files passed over",
            &if d.passed_over.is_empty() {
                "none".into()
            } else {
                esc(&d.passed_over.join(", "))
            },
        );
        row(
            h,
            "unreadable images skipped",
            &if d.skipped.is_empty() {
                "none".into()
            } else {
                esc(&d.skipped.join("; "))
            },
        );
        h.push_str("</table></div>");
    }
    h.push_str("</section>");
}

fn evaluation_section(h: &mut String, r: &Report) {
    h.push_str(r#"<section id="evaluation"><h2>Evaluation</h2>"#);
    if let Some(cv) = &r.cv {
        let _ = write!(
            h,
            "<p>Out-of-fold: each image predicted by the fold model that did not train on it \
             ({} folds, {} images). Mean, standard deviation and 95 % t-interval over folds; \
             the pooled figure with its interval ({} for proportions, DeLong for AUC, \
             patients resampled for the bootstrap).</p>",
            r.models.len(),
            r.predictions.len(),
            cv.intervals.accuracy.method
        );
        cv_table(h, cv);
        measures(
            h,
            r,
            &Measured {
                set: "cv",
                figures: Figures::of_cv(cv),
                predictions: &r.predictions,
            },
        );
    } else if let Some(m) = &r.validation {
        let _ = write!(h, "<p>Measured on {}.</p>", esc(&m.what));
        measures(h, r, &eval_measures("validation", m));
    } else {
        h.push_str(
            r#"<p class="note">No held-out images: nothing to measure (see the limits above).</p>"#,
        );
    }
    if let Some(x) = &r.external {
        let _ = write!(
            h,
            r#"<h2 id="external">External test set</h2><p>{} measured by {}: every image of the folder, with the calibration the model ships.</p>"#,
            esc(&x.what),
            match r.source {
                Source::Cv =>
                    "the cv's fold models as one ensemble (the mean of their probabilities)",
                Source::Run => "the run's model.pt",
            }
        );
        if let Some(n) = &x.note {
            let _ = write!(h, r#"<p class="note">{}</p>"#, esc(n));
        }
        measures(h, r, &eval_measures("external", x));
    }
    h.push_str("</section>");
}

fn eval_measures<'a>(set: &'a str, m: &'a super::Measured) -> Measured<'a> {
    Measured {
        set,
        figures: Figures::of_eval(&m.eval),
        predictions: &m.predictions,
    }
}

fn cv_table(h: &mut String, cv: &CvReport) {
    h.push_str(r#"<h3>Across folds</h3><div class="scroll"><table id="cv-table"><tr><th>measure</th><th>mean ± std over folds</th><th>95 % CI of the mean (within 0–1)</th>"#);
    let folds = &cv.model.per_fold;
    for f in folds {
        let _ = write!(h, "<th>fold {}</th>", f.fold);
    }
    h.push_str("</tr>");
    for m in &cv.model.summary {
        let name = m.measure.as_str();
        let s = &m.summary;
        let get = MEASURES.iter().find(|(n, _)| *n == name).map(|(_, g)| *g);
        let _ = write!(
            h,
            r#"<tr data-cv-measure="{}"{}{}{}{}><td>{}</td><td class="n">{} ± {}</td><td class="n">{}–{}</td>"#,
            esc(name),
            attr("data-mean", s.mean),
            attr("data-std", s.std),
            attr("data-low", s.ci95[0]),
            attr("data-high", s.ci95[1]),
            esc(&name.replace('_', " ")),
            f3(s.mean),
            f3(s.std),
            clipped(s.ci95[0]),
            clipped(s.ci95[1])
        );
        for f in folds {
            let v = get.and_then(|g| g(f));
            let _ = write!(
                h,
                r#"<td class="n" data-fold="{}"{}>{}</td>"#,
                f.fold,
                v.map_or(String::new(), |v| attr("data-value", v)),
                f3o(v)
            );
        }
        h.push_str("</tr>");
    }
    h.push_str("</table></div>");
}

/// The pooled table, the confusion matrix, the curves, calibration, the operating point and
/// the conformal sets of one set of predictions.
fn measures(h: &mut String, r: &Report, m: &Measured) {
    let _ = write!(h, r#"<div data-set="{}">"#, m.set);
    h.push_str(r#"<h3>Pooled, with 95 % intervals</h3><div class="scroll"><table class="pooled"><tr><th>measure</th><th>value (95 % interval)</th><th>method</th></tr>"#);
    for (name, v) in m.figures.intervals() {
        let shown = match name {
            "balanced_accuracy" => "balanced accuracy",
            "macro_f1" => "macro-F1",
            "roc_auc" => "ROC AUC",
            other => other,
        };
        let _ = write!(
            h,
            r#"<tr data-interval="{name}"{}{}{}><td>{shown}</td><td class="n">{}</td><td>{}</td></tr>"#,
            attr("data-value", v.value),
            attr("data-low", v.low),
            attr("data-high", v.high),
            with_interval(v.value, v.low, v.high),
            esc(&v.method)
        );
    }
    h.push_str("</table></div>");
    per_class(h, m.figures.pooled);
    confusion(h, r, m.figures.pooled);
    h.push_str(r#"<div class="charts">"#);
    for (_, svg) in curve_charts(r, m.set, m.predictions) {
        h.push_str(&svg);
    }
    if let Some(svg) = reliability_chart(m.predictions, m.set) {
        h.push_str(&svg);
    }
    h.push_str("</div>");
    if let Some(c) = &m.figures.calibration {
        calibration(h, c);
    }
    if let Some(op) = &m.figures.operating_point {
        operating_point(h, op, m.set);
    }
    if let Some(c) = &m.figures.conformal {
        conformal(h, c);
    }
    h.push_str("</div>");
}

fn per_class(h: &mut String, pooled: &Evaluation) {
    h.push_str(r#"<div class="scroll"><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>images</th></tr>"#);
    for c in &pooled.per_class {
        let _ = write!(
            h,
            r#"<tr><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
            esc(&c.class),
            f3(c.precision),
            f3(c.recall),
            f3(c.f1),
            c.support
        );
    }
    h.push_str("</table></div>");
}

fn confusion(h: &mut String, r: &Report, pooled: &Evaluation) {
    let rows = &pooled.confusion;
    h.push_str(r#"<h3>Confusion matrix</h3><div class="scroll"><table class="confusion"><tr><th>true ↓ / predicted →</th>"#);
    for c in &r.classes {
        let _ = write!(h, "<th>{}</th>", esc(c));
    }
    h.push_str("</tr>");
    for (i, row) in rows.iter().enumerate() {
        let _ = write!(h, "<tr><th>{}</th>", esc(&r.classes[i]));
        for (j, v) in row.iter().enumerate() {
            let class = if i == j { "n right" } else { "n wrong" };
            let _ = write!(
                h,
                r#"<td class="{class}" data-true="{i}" data-predicted="{j}" data-count="{v}">{v}</td>"#
            );
        }
        h.push_str("</tr>");
    }
    h.push_str("</table></div>");
}

/// Precision–recall points of `scores` for the positive `labels` (true), highest score
/// first, and the average precision (the step-wise area).
pub fn pr_curve(scores: &[f64], positive: &[bool]) -> (Vec<(f64, f64)>, f64) {
    let p = positive.iter().filter(|&&b| b).count();
    if p == 0 {
        return (vec![], 0.0);
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp, mut ap, mut last_recall) = (0usize, 0usize, 0.0, 0.0);
    let mut points = vec![];
    for (k, &i) in order.iter().enumerate() {
        if positive[i] {
            tp += 1;
        } else {
            fp += 1;
        }
        let tie = order.get(k + 1).is_some_and(|&j| scores[j] == scores[i]);
        if tie {
            continue;
        }
        let recall = tp as f64 / p as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - last_recall) * precision;
        last_recall = recall;
        points.push((recall, precision));
    }
    (points, ap)
}

/// The classes curves are drawn for: the first (positive) of two, else each.
fn curve_classes(r: &Report) -> Vec<usize> {
    match r.classes.len() {
        2 => vec![0],
        k => (0..k.min(7)).collect(),
    }
}

/// The ROC and precision–recall charts of a set's predictions (none without predictions).
pub fn curve_charts(r: &Report, set: &str, preds: &[Prediction]) -> Vec<(&'static str, String)> {
    if preds.is_empty() {
        return vec![];
    }
    let mut roc = vec![];
    let mut pr = vec![];
    // Per fold (a cv's out-of-fold predictions come from one model per fold) and pooled.
    let mut parts: Vec<(String, Vec<&Prediction>)> = vec![];
    if set == "cv" && r.classes.len() == 2 {
        for (f, model) in r.models.iter().enumerate() {
            let of: Vec<&Prediction> = preds.iter().filter(|p| &p.model == model).collect();
            parts.push((format!("fold {f}"), of));
        }
    }
    for c in curve_classes(r) {
        let mut add = |name: String, of: &[&Prediction], bold: bool| {
            let scores: Vec<f64> = of.iter().map(|p| p.probs[c]).collect();
            let labels: Vec<usize> = of.iter().map(|p| usize::from(p.truth != c)).collect();
            let positive: Vec<bool> = of.iter().map(|p| p.truth == c).collect();
            if positive.iter().all(|&b| b) || positive.iter().all(|&b| !b) {
                return;
            }
            let auc = roc_auc(&scores, &labels);
            roc.push(Series {
                name: format!("{name} (AUC {auc:.3})"),
                points: roc_curve(&scores, &labels),
                bold,
                dots: false,
            });
            let (points, ap) = pr_curve(&scores, &positive);
            pr.push(Series {
                name: format!("{name} (AP {ap:.3})"),
                points,
                bold,
                dots: false,
            });
        };
        for (name, of) in &parts {
            add(name.clone(), of, false);
        }
        let all: Vec<&Prediction> = preds.iter().collect();
        let name = match (r.classes.len(), parts.is_empty()) {
            (2, false) => "pooled".to_string(),
            (2, true) => "all".to_string(),
            _ => r.classes[c].clone(),
        };
        add(name, &all, r.classes.len() == 2);
    }
    let positive = match r.classes.len() {
        2 => format!(", positive class {}", r.classes[0]),
        _ => ", each class against the rest".into(),
    };
    let unit = (0.0, 1.0);
    let roc_svg = line_chart(
        &Chart {
            title: format!("ROC{positive}"),
            x_label: "false-positive rate (1 − specificity)".into(),
            y_label: "sensitivity".into(),
            x: unit,
            y: unit,
            diagonal: true,
        },
        &roc,
    );
    let pr_svg = line_chart(
        &Chart {
            title: format!("Precision–recall{positive}"),
            x_label: "recall (sensitivity)".into(),
            y_label: "precision (PPV)".into(),
            x: unit,
            y: unit,
            diagonal: false,
        },
        &pr,
    );
    vec![("roc", roc_svg), ("precision-recall", pr_svg)]
}

/// The reliability diagram of a set's predictions.
pub fn reliability_chart(preds: &[Prediction], set: &str) -> Option<String> {
    if preds.is_empty() {
        return None;
    }
    let probs: Vec<Vec<f64>> = preds.iter().map(|p| p.probs.clone()).collect();
    let labels: Vec<usize> = preds.iter().map(|p| p.truth).collect();
    let (p, hit) = scored(&probs, &labels);
    let points: Vec<(f64, f64)> = reliability(&p, &hit)
        .iter()
        .filter(|b| b.count > 0)
        .map(|b| (b.confidence, b.frequency))
        .collect();
    let what = if probs.first().is_some_and(|p| p.len() == 2) {
        "P(first class)"
    } else {
        "confidence"
    };
    Some(line_chart(
        &Chart {
            title: format!(
                "Reliability, {} ({} images)",
                match set {
                    "cv" => "before the temperature",
                    _ => "as answered",
                },
                preds.len()
            ),
            x_label: format!("predicted {what}"),
            y_label: "observed frequency".into(),
            x: (0.0, 1.0),
            y: (0.0, 1.0),
            diagonal: true,
        },
        &[Series {
            name: "15 equal-width bins".into(),
            points,
            bold: false,
            dots: true,
        }],
    ))
}

fn calibration(h: &mut String, c: &Calibration) {
    h.push_str("<h3>Calibration</h3>");
    let _ = write!(
        h,
        r#"<p>Temperature scaling: <span data-calibration="temperature"{}>T = {}</span>{}.</p>"#,
        attr("data-value", c.temperature),
        f3(c.temperature),
        if c.applied {
            ", applied to the probabilities the model answers with"
        } else {
            ", measured but not applied (it did not lower the cross-fitted loss)"
        }
    );
    h.push_str(
        r#"<div class="scroll"><table><tr><th>measure</th><th>before</th><th>after</th></tr>"#,
    );
    let rows = |m: &Measures| {
        [
            Some(m.ece),
            Some(m.adaptive_ece),
            Some(m.brier),
            Some(m.nll),
            m.slope,
            m.intercept,
        ]
    };
    let (before, after) = (rows(c.before), rows(c.after));
    for (i, (k, name)) in [
        ("ece", "ECE (15 bins)"),
        ("adaptive_ece", "adaptive ECE"),
        ("brier", "Brier score"),
        ("nll", "negative log-likelihood"),
        ("slope", "calibration slope (1 is ideal)"),
        ("intercept", "calibration intercept (0 is ideal)"),
    ]
    .into_iter()
    .enumerate()
    {
        let (b, a) = (before[i].and_then(known), after[i].and_then(known));
        if b.is_none() && a.is_none() {
            continue;
        }
        let _ = write!(
            h,
            r#"<tr data-calibration-measure="{k}"{}{}><td>{name}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
            b.map_or(String::new(), |b| attr("data-before", b)),
            a.map_or(String::new(), |a| attr("data-after", a)),
            f3o(b),
            f3o(a)
        );
    }
    h.push_str("</table></div>");
    if let Some(floor) = known(c.before.ece_noise_floor) {
        let _ = write!(
            h,
            r#"<p class="sub">An ECE below its noise floor ({floor:.3}: what a perfectly calibrated model shows on this many images) cannot be told from perfect calibration.</p>"#
        );
    }
}

fn operating_point(h: &mut String, op: &Operating, set: &str) {
    let origin = match (op.target_sensitivity, set) {
        (None, _) => "the default 0.5: the model carries no screening threshold (a cv fits one; \
                      train --calibration-from ships it)"
            .to_string(),
        (Some(t), "cv") => format!("chosen for sensitivity {t} on these out-of-fold predictions"),
        (Some(t), _) => format!(
            "chosen for sensitivity {t} on the cv's out-of-fold predictions, measured here on \
             these images"
        ),
    };
    let _ = write!(
        h,
        r#"<h3>Screening operating point</h3><p>Positive class {}: threshold on its probability {origin}.</p><div class="scroll"><table><tr><th>threshold</th><td class="n" data-operating="threshold"{}>{}</td></tr>"#,
        esc(op.positive_class),
        attr("data-value", op.threshold),
        f3(op.threshold)
    );
    for (k, name, v) in [
        ("sensitivity", "sensitivity", op.sensitivity),
        ("specificity", "specificity", op.specificity),
        ("ppv", "PPV (at this data's prevalence)", op.ppv),
        ("npv", "NPV (at this data's prevalence)", op.npv),
    ] {
        let _ = write!(
            h,
            r#"<tr><th>{name}</th><td class="n" data-operating="{k}"{}{}{}>{}</td></tr>"#,
            attr("data-value", v.value),
            attr("data-low", v.low),
            attr("data-high", v.high),
            with_interval(v.value, v.low, v.high)
        );
    }
    h.push_str("</table></div>");
}

fn conformal(h: &mut String, c: &Sets) {
    let _ = write!(
        h,
        r#"<h3>Conformal prediction sets</h3><p>Sets that hold the true class with probability at least {} ({} score{}).</p><div class="scroll"><table><tr><th>coverage</th><td class="n" data-conformal="coverage"{}>{}</td></tr><tr><th>mean set size</th><td class="n" data-conformal="mean_set_size"{}>{}</td></tr>"#,
        known(c.alpha).map_or("—".into(), |a| format!("{:.2}", 1.0 - a)),
        esc(c.score.name()),
        if c.class_conditional {
            ", one threshold per class"
        } else {
            ""
        },
        attr("data-value", c.coverage),
        f3(c.coverage),
        attr("data-value", c.mean_set_size),
        f3(c.mean_set_size)
    );
    if let Some(x) = c.cross_fitted.and_then(|x| known(x.coverage)) {
        let _ = write!(
            h,
            r#"<tr><th>coverage, cross-fitted (thresholds from the other folds)</th><td class="n">{x:.3}</td></tr>"#
        );
    }
    let d = c.detail;
    for pc in &d.per_class {
        let _ = write!(
            h,
            r#"<tr><th>{}: coverage, mean set size</th><td class="n">{}, {}</td></tr>"#,
            esc(&pc.class),
            f3(pc.coverage),
            f3(pc.mean_set_size)
        );
    }
    let _ = write!(
        h,
        r#"<tr><th>sets of one class / more / none</th><td class="n">{} / {} / {}</td></tr>"#,
        d.singletons, d.ambiguous, d.empty
    );
    h.push_str("</table></div>");
}

fn failures_section(h: &mut String, r: &Report) {
    h.push_str(r#"<section id="failures"><h2>Where it fails</h2>"#);
    if r.gallery.is_empty() {
        let why = match r.predictions.is_empty() {
            true => "No held-out predictions to show.",
            false => "No photos asked for (--gallery 0).",
        };
        let _ = write!(h, "<p>{why}</p></section>");
        return;
    }
    let _ = write!(
        h,
        "<p>Held-out photos ({}), per true class: the ones the model gets most confidently wrong, \
         the ones it is least sure of, and the ones it gets most confidently right. Each: the \
         photo as the network sees it, and the Grad-CAM map of the class it chose (where it \
         looked), from the model that predicted it; the probability is {}.</p>",
        match r.source {
            Source::Cv => "out of fold",
            Source::Run => "the run's validation images",
        },
        match r.source {
            Source::Cv => "the fold model's, before the temperature (oof.csv's)",
            Source::Run => "the one eval reports (calibrated when the model carries a temperature)",
        }
    );
    for (c, class) in r.classes.iter().enumerate() {
        for kind in Kind3::ALL {
            let tiles: Vec<_> = r
                .gallery
                .iter()
                .filter(|t| t.prediction.truth == c && t.kind == kind)
                .collect();
            if tiles.is_empty() {
                if kind == Kind3::ConfidentlyWrong
                    && r.gallery.iter().any(|t| t.prediction.truth == c)
                {
                    let _ = write!(
                        h,
                        "<h3>{}: {}</h3><p>none wrong</p>",
                        esc(class),
                        kind.title()
                    );
                }
                continue;
            }
            let _ = write!(
                h,
                r#"<h3>{}: {}</h3><div class="tiles">"#,
                esc(class),
                kind.title()
            );
            for t in tiles {
                let p = &t.prediction;
                let right = t.predicted == p.truth;
                let _ = write!(
                    h,
                    r#"<figure class="tile" data-kind="{}" data-class="{}" data-path="{}" data-truth="{}" data-predicted="{}" data-probability="{}"><img alt="photo {}" src="data:image/jpeg;base64,{}"><img alt="Grad-CAM of {}" src="data:image/jpeg;base64,{}"><figcaption><code>{}</code><br>true {} · <span class="{}">predicted {} {:.3}</span>{}</figcaption></figure>"#,
                    kind.key(),
                    esc(class),
                    esc(&p.path),
                    esc(&r.classes[p.truth]),
                    esc(&r.classes[t.predicted]),
                    Value::from(t.probability),
                    esc(&p.path),
                    b64(&t.photo),
                    esc(&p.path),
                    b64(&t.cam),
                    esc(&p.path),
                    esc(&r.classes[p.truth]),
                    if right { "right" } else { "wrong" },
                    esc(&r.classes[t.predicted]),
                    t.probability,
                    if r.source == Source::Cv {
                        format!(
                            " · fold {}",
                            r.models.iter().position(|m| *m == p.model).unwrap_or(0)
                        )
                    } else {
                        String::new()
                    }
                );
            }
            h.push_str("</div>");
        }
    }
    h.push_str("</section>");
}

fn training_section(h: &mut String, r: &Report) {
    h.push_str(r#"<section id="training"><h2>Training curves</h2>"#);
    let probe_only = r.curves.iter().all(|c| c.rows.len() <= 1);
    if probe_only {
        h.push_str("<p>One epoch per run (a fitted probe, or a single epoch): no curve to draw; each run's row:</p>");
    } else {
        h.push_str(r#"<div class="charts">"#);
        for (_, svg) in training_charts(r) {
            h.push_str(&svg);
        }
        h.push_str("</div>");
        if r.curves.len() * 2 > 7 {
            h.push_str(r#"<p class="sub">The charts show the first folds; the table has every row's last epoch.</p>"#);
        }
    }
    h.push_str(r#"<div class="scroll"><table id="curves"><tr><th>run</th><th>epochs</th><th>last train loss</th><th>last val loss</th><th>last val accuracy</th><th>seconds</th></tr>"#);
    for c in &r.curves {
        let last = c.rows.last();
        let opt = |v: Option<f64>| v.map_or("—".into(), |x| format!("{x:.3}"));
        let _ = write!(
            h,
            r#"<tr><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{:.1}</td></tr>"#,
            esc(&c.name),
            last.map_or(0, |e| e.epoch),
            opt(last.map(|e| e.train_loss)),
            opt(last.and_then(|e| e.val_loss)),
            opt(last.and_then(|e| e.val_acc)),
            c.rows.iter().map(|e| e.seconds).sum::<f64>()
        );
    }
    h.push_str("</table></div></section>");
}

/// The loss and validation-accuracy charts of the runs' epochs (none when every run has one
/// epoch).
pub fn training_charts(r: &Report) -> Vec<(&'static str, String)> {
    if r.curves.iter().all(|c| c.rows.len() <= 1) {
        return vec![];
    }
    let loss: Vec<Series> = r
        .curves
        .iter()
        .flat_map(|c| {
            let mut v = vec![Series {
                name: format!("{} train", c.name),
                points: c
                    .rows
                    .iter()
                    .map(|e| (e.epoch as f64, e.train_loss))
                    .collect(),
                bold: false,
                dots: false,
            }];
            if c.rows.iter().any(|e| e.val_loss.is_some()) {
                v.push(Series {
                    name: format!("{} val", c.name),
                    points: c
                        .rows
                        .iter()
                        .filter_map(|e| Some((e.epoch as f64, e.val_loss?)))
                        .collect(),
                    bold: false,
                    dots: false,
                });
            }
            v
        })
        .take(7)
        .collect();
    let acc: Vec<Series> = r
        .curves
        .iter()
        .filter(|c| c.rows.iter().any(|e| e.val_acc.is_some()))
        .map(|c| Series {
            name: format!("{} val", c.name),
            points: c
                .rows
                .iter()
                .filter_map(|e| Some((e.epoch as f64, e.val_acc?)))
                .collect(),
            bold: false,
            dots: false,
        })
        .take(7)
        .collect();
    let epochs = r
        .curves
        .iter()
        .flat_map(|c| c.rows.iter().map(|e| e.epoch))
        .max()
        .unwrap_or(1) as f64;
    let ys: Vec<f64> = loss
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .collect();
    let top = ys.iter().copied().fold(0.0, f64::max).max(1e-3) * 1.05;
    let mut out = vec![(
        "loss",
        line_chart(
            &Chart {
                title: "Loss by epoch".into(),
                x_label: "epoch".into(),
                y_label: "loss".into(),
                x: (1.0, epochs.max(2.0)),
                y: (0.0, top),
                diagonal: false,
            },
            &loss,
        ),
    )];
    if !acc.is_empty() {
        out.push((
            "accuracy",
            line_chart(
                &Chart {
                    title: "Validation accuracy by epoch".into(),
                    x_label: "epoch".into(),
                    y_label: "accuracy".into(),
                    x: (1.0, epochs.max(2.0)),
                    y: (0.0, 1.0),
                    diagonal: false,
                },
                &acc,
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_precision_of_a_perfect_and_a_reversed_ranking() {
        let (_, ap) = pr_curve(&[0.9, 0.8, 0.2, 0.1], &[true, true, false, false]);
        assert!((ap - 1.0).abs() < 1e-12);
        // Positives ranked last: precision 1/3 at recall 0.5, 2/4 at recall 1.
        let (pts, ap) = pr_curve(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]);
        assert!((ap - (0.5 / 3.0 + 0.5 * 0.5)).abs() < 1e-12, "{ap}");
        assert_eq!(pts.last(), Some(&(1.0, 0.5)));
    }

    #[test]
    fn tied_scores_make_one_point() {
        let (pts, _) = pr_curve(&[0.5, 0.5, 0.5], &[true, false, true]);
        assert_eq!(pts, vec![(1.0, 2.0 / 3.0)]);
    }
}
