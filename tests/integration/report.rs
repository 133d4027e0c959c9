//! `inception report`: the page opened from disk in Chromium with every fetch forbidden, its
//! figures read back from the DOM against cv.json, oof.csv and `eval --json`; the Hugging Face
//! card's YAML parsed and its model-index against cv.json; a run's report; bad input.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::browser::Browser;
use common::{assert_clean_failure, inception, repo, serial, stderr, stdout};
use serde_json::Value;

/// A cv of MSLD with the pretrained recipe (the fitted probe on EfficientNet-Lite0's ImageNet
/// features, which scripts/deps.sh installs) at 96 px, 3 folds, whose config states a model
/// card; made once. Its model learns enough for a temperature to be fitted (a smoke recipe's
/// does not, and its cv ships no calibration to show).
fn cv_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let _turn = serial();
        let dir = tempfile::tempdir().unwrap();
        let mut config: Value = serde_json::from_str(
            &fs::read_to_string(repo().join("configs/pretrained.json")).unwrap(),
        )
        .unwrap();
        config["card"] = serde_json::json!({
            "intended_use": "Research on <triage> of skin-lesion photos & nothing else.",
            "out_of_scope": "Diagnosis without a clinician.",
            "license": "mit"
        });
        let cfg = dir.path().join("card.json");
        fs::write(&cfg, config.to_string()).unwrap();
        let o = inception(
            dir.path(),
            &[
                "cv",
                "--data",
                repo().join("data/monkeypox").to_str().unwrap(),
                "--config",
                cfg.to_str().unwrap(),
                "--folds",
                "3",
                "--image-size",
                "96",
                "--offline",
                "--out",
                "cv",
                "--no-plots",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stdout(&o).contains("inception report cv"),
            "cv names the report command at its end: {}",
            stdout(&o)
        );
        dir
    })
    .path()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

/// oof.csv's rows: path → (truth, probabilities).
fn oof(cv: &Path) -> BTreeMap<String, (String, Vec<f64>)> {
    let text = fs::read_to_string(cv.join("oof.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let f = inception::runs::oof::fields(l);
            (
                f[0].clone(),
                (
                    f[1].clone(),
                    vec![f[2].parse().unwrap(), f[3].parse().unwrap()],
                ),
            )
        })
        .collect()
}

/// A folder of MSLD's photos of some patients (an "external" set with the same classes).
fn some_photos(dir: &Path, per_class: usize) -> PathBuf {
    let out = dir.join("external");
    for class in ["Monkey Pox", "Others"] {
        fs::create_dir_all(out.join(class)).unwrap();
        let mut files: Vec<PathBuf> = fs::read_dir(repo().join("data/monkeypox").join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files.iter().take(per_class) {
            fs::copy(f, out.join(class).join(f.file_name().unwrap())).unwrap();
        }
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

#[test]
fn the_page_from_disk_shows_cv_json_s_figures_and_oof_s_photos_and_fetches_nothing() {
    let cv = cv_dir().join("cv");
    let work = tempfile::tempdir().unwrap();
    let external = some_photos(work.path(), 6);
    let page = work.path().join("report.html");
    let o = inception(
        work.path(),
        &[
            "report",
            cv.to_str().unwrap(),
            "--data",
            external.to_str().unwrap(),
            "--out",
            page.to_str().unwrap(),
            "--gallery",
            "3",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let html = fs::read_to_string(&page).unwrap();
    // Self-contained: no script, every picture inline, a policy that forbids any fetch.
    assert!(html.contains("default-src 'none'; img-src data:"), "no CSP");
    assert!(!html.contains("<script"), "a script in the page");
    let re = regex::Regex::new(r##"(?:src|href)="([^"#][^"]*)""##).unwrap();
    for c in re.captures_iter(&html) {
        assert!(
            c[1].starts_with("data:"),
            "a reference out of the page: {}",
            &c[1]
        );
    }

    let browser = Browser::start();
    browser.session_call(
        "POST",
        "/url",
        serde_json::json!({"url": format!("file://{}", page.display())}),
    );
    browser.wait_for("return document.readyState === 'complete' ? true : null;");
    browser.screenshot("report-desktop.png");
    let errors: Vec<(String, String)> = browser
        .console()
        .into_iter()
        .filter(|(level, _)| level == "SEVERE" || level == "WARNING")
        .collect();
    assert!(errors.is_empty(), "console: {errors:?}");
    let broken = browser.run(
        "return [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length;",
    );
    assert_eq!(broken, 0, "pictures that did not load");

    // The cv table: every measure's mean, std and interval as cv.json has them.
    let v = read_json(&cv.join("cv.json"));
    let rows = browser.run(
        "return [...document.querySelectorAll('[data-cv-measure]')].map(r => \
         [r.dataset.cvMeasure, Number(r.dataset.mean), Number(r.dataset.std), \
          Number(r.dataset.low), Number(r.dataset.high)]);",
    );
    let summary = v["model"]["summary"].as_array().unwrap();
    assert_eq!(rows.as_array().unwrap().len(), summary.len(), "{rows}");
    for (row, m) in rows.as_array().unwrap().iter().zip(summary) {
        assert_eq!(row[0], m["measure"]);
        for (i, want) in [&m["mean"], &m["std"], &m["ci95"][0], &m["ci95"][1]]
            .iter()
            .enumerate()
        {
            assert!(
                close(row[i + 1].as_f64().unwrap(), want.as_f64().unwrap()),
                "{row} {m}"
            );
        }
    }
    // The pooled intervals, calibration, operating point and conformal sets of the cv.
    let cv_set = |sel: &str| -> Value {
        browser.run(&format!(
            "const e = document.querySelector('[data-set=\"cv\"] {sel}'); \
             return e ? Object.assign({{}}, e.dataset) : null;"
        ))
    };
    let num = |v: &Value, k: &str| -> f64 {
        let text = v[k].as_str().unwrap_or_else(|| panic!("no {k} in {v}"));
        text.parse().unwrap()
    };
    for name in ["accuracy", "sensitivity", "specificity", "roc_auc"] {
        let shown = cv_set(&format!("[data-interval=\"{name}\"]"));
        let want = &v["intervals"][name];
        assert!(
            close(num(&shown, "value"), want["value"].as_f64().unwrap()),
            "{name}"
        );
        assert!(
            close(num(&shown, "low"), want["low"].as_f64().unwrap()),
            "{name}"
        );
        assert!(
            close(num(&shown, "high"), want["high"].as_f64().unwrap()),
            "{name}"
        );
    }
    let t = cv_set("[data-calibration=\"temperature\"]");
    assert!(close(
        num(&t, "value"),
        v["calibration"]["temperature"].as_f64().unwrap()
    ));
    let ece = cv_set("[data-calibration-measure=\"ece\"]");
    assert!(close(
        num(&ece, "before"),
        v["calibration"]["before"]["ece"].as_f64().unwrap()
    ));
    assert!(close(
        num(&ece, "after"),
        v["calibration"]["after"]["ece"].as_f64().unwrap()
    ));
    let op = &v["operating_point"];
    let th = cv_set("[data-operating=\"threshold\"]");
    assert!(close(num(&th, "value"), op["threshold"].as_f64().unwrap()));
    for k in ["sensitivity", "specificity", "ppv", "npv"] {
        let shown = cv_set(&format!("[data-operating=\"{k}\"]"));
        for part in ["value", "low", "high"] {
            assert!(
                close(num(&shown, part), op[k][part].as_f64().unwrap()),
                "{k} {part}"
            );
        }
    }
    for k in ["coverage", "mean_set_size"] {
        let shown = cv_set(&format!("[data-conformal=\"{k}\"]"));
        assert!(
            close(num(&shown, "value"), v["conformal"][k].as_f64().unwrap()),
            "{k}"
        );
    }

    // The gallery: oof.csv's photos with their probabilities; the lists are what they say.
    let rows = oof(&cv);
    let tiles = browser.run(
        "return [...document.querySelectorAll('figure.tile')].map(t => Object.assign({}, t.dataset));",
    );
    let tiles = tiles.as_array().unwrap();
    assert!(!tiles.is_empty());
    let classes = ["Monkey Pox", "Others"];
    let mut per_list: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for t in tiles {
        let path = t["path"].as_str().unwrap();
        let (truth, probs) = rows
            .get(path)
            .unwrap_or_else(|| panic!("{path} not in oof.csv"));
        let top = if probs[0] >= probs[1] { 0 } else { 1 };
        assert_eq!(t["truth"].as_str().unwrap(), truth);
        assert_eq!(t["predicted"].as_str().unwrap(), classes[top], "{t}");
        assert!(close(num(t, "probability"), probs[top]), "{t} {probs:?}");
        let kind = t["kind"].as_str().unwrap();
        match kind {
            "confidently_wrong" => assert_ne!(classes[top], truth, "{t}"),
            "confidently_right" => assert_eq!(classes[top], truth, "{t}"),
            _ => {}
        }
        per_list
            .entry((truth.clone(), kind.to_string()))
            .or_default()
            .push(probs[top]);
    }
    for ((class, kind), p) in &per_list {
        assert!(p.len() <= 3, "{class} {kind}: {} photos", p.len());
        let sorted = p.windows(2).all(|w| match kind.as_str() {
            "uncertain" => w[0] <= w[1],
            _ => w[0] >= w[1],
        });
        assert!(sorted, "{class} {kind}: {p:?}");
    }
    // Each list starts where oof.csv says: the most confidently wrong photo of the class, its
    // least certain one, its most confidently right one; and holds 3 where the class has them.
    for (c, class) in classes.iter().enumerate() {
        let of: Vec<&Vec<f64>> = rows
            .values()
            .filter(|(t, _)| t == class)
            .map(|(_, p)| p)
            .collect();
        let right = |p: &Vec<f64>| (p[0] >= p[1]) == (c == 0);
        let top = |p: &Vec<f64>| p[0].max(p[1]);
        let wrong: Vec<f64> = of.iter().filter(|p| !right(p)).map(|p| top(p)).collect();
        let good: Vec<f64> = of.iter().filter(|p| right(p)).map(|p| top(p)).collect();
        let all: Vec<f64> = of.iter().map(|p| top(p)).collect();
        for (kind, values, first) in [
            (
                "confidently_wrong",
                &wrong,
                wrong.iter().copied().fold(f64::NAN, f64::max),
            ),
            (
                "uncertain",
                &all,
                all.iter().copied().fold(f64::NAN, f64::min),
            ),
            (
                "confidently_right",
                &good,
                good.iter().copied().fold(f64::NAN, f64::max),
            ),
        ] {
            let shown = per_list
                .get(&(class.to_string(), kind.to_string()))
                .cloned()
                .unwrap_or_default();
            assert_eq!(
                shown.len(),
                values.len().min(3),
                "{class} {kind}: {shown:?}"
            );
            if let Some(p) = shown.first() {
                assert!(close(*p, first), "{class} {kind}: {shown:?} vs {first}");
            }
        }
    }

    // The external set: as `eval --json` measures it.
    let eval = inception(
        work.path(),
        &[
            "eval",
            "--checkpoint",
            cv.to_str().unwrap(),
            "--data",
            external.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(eval.status.success(), "{}", stderr(&eval));
    let eval: Value = serde_json::from_slice(&eval.stdout).unwrap();
    let acc = browser.run(
        "const e = document.querySelector('[data-set=\"external\"] [data-interval=\"accuracy\"]'); \
         return e ? Object.assign({}, e.dataset) : null;",
    );
    assert!(
        close(num(&acc, "value"), eval["accuracy"].as_f64().unwrap()),
        "{acc}"
    );
    assert!(close(
        num(&acc, "low"),
        eval["intervals"]["accuracy"]["low"].as_f64().unwrap()
    ));
    assert!(close(
        num(&acc, "high"),
        eval["intervals"]["accuracy"]["high"].as_f64().unwrap()
    ));

    // The card's words, escaped; the data card's counts are oof.csv's.
    let intended = browser.run("return document.getElementById('intended-use').textContent;");
    assert_eq!(
        intended,
        "Research on <triage> of skin-lesion photos & nothing else."
    );
    let counts = browser.run(
        "return [...document.querySelectorAll('#data-classes tr[data-class]')].map(r => \
         [r.dataset.class, Number(r.dataset.images)]);",
    );
    for pair in counts.as_array().unwrap() {
        let class = pair[0].as_str().unwrap();
        let n = rows.values().filter(|(t, _)| t == class).count();
        assert_eq!(pair[1].as_u64().unwrap() as usize, n, "{class}");
    }

    // The initial weights: the published file, with its SHA-256.
    let env = read_json(&cv.join("fold-0/environment.json"));
    let file = env["initial_weights"]["file"].as_str().unwrap();
    let sha = {
        use sha2::Digest;
        let bytes = fs::read(file).unwrap();
        sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(
        env["initial_weights"]["sha256"].as_str(),
        Some(sha.as_str())
    );
    assert!(
        html.contains(&sha),
        "the page names the initial weights' hash"
    );

    // On a phone's width nothing runs off the side: wide tables scroll in their own box.
    browser.resize(390, 844);
    let overflow = browser
        .run("return document.documentElement.scrollWidth - document.documentElement.clientWidth;");
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the page is {overflow} px too wide"
    );
    browser.screenshot("report-phone.png");
}

#[test]
fn the_model_card_s_yaml_parses_and_its_model_index_is_cv_json_s() {
    use yaml_rust2::{Yaml, YamlLoader};
    let cv = cv_dir().join("cv");
    let work = tempfile::tempdir().unwrap();
    let card = work.path().join("README.md");
    // The card's words given at report time win over the cv's config.
    let words = work.path().join("words.json");
    fs::write(
        &words,
        r#"{"intended_use": "Teaching only.", "license": "apache-2.0"}"#,
    )
    .unwrap();
    let o = inception(
        work.path(),
        &[
            "report",
            cv.to_str().unwrap(),
            "--format",
            "md",
            "--out",
            card.to_str().unwrap(),
            "--card",
            words.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = fs::read_to_string(&card).unwrap();
    let front = text
        .strip_prefix("---\n")
        .and_then(|t| t.split_once("\n---\n"))
        .map(|(f, _)| f)
        .expect("YAML front matter between --- lines");
    let docs = YamlLoader::load_from_str(front).expect("the front matter is YAML");
    let y = &docs[0];
    assert_eq!(y["license"].as_str(), Some("apache-2.0"));
    assert_eq!(y["pipeline_tag"].as_str(), Some("image-classification"));
    assert!(y["tags"]
        .as_vec()
        .unwrap()
        .contains(&Yaml::String("efficientnet_lite0".into())));
    assert_eq!(y["datasets"][0].as_str(), Some("monkeypox"));
    let v = read_json(&cv.join("cv.json"));
    let results = y["model-index"][0]["results"].as_vec().unwrap();
    assert_eq!(results.len(), 1);
    let r = &results[0];
    assert_eq!(r["task"]["type"].as_str(), Some("image-classification"));
    let metrics = r["metrics"].as_vec().unwrap();
    let summary = v["model"]["summary"].as_array().unwrap();
    assert_eq!(metrics.len(), summary.len());
    let kinds = BTreeMap::from([
        ("accuracy", "accuracy"),
        ("macro_f1", "f1"),
        ("roc_auc", "roc_auc"),
        ("sensitivity", "recall"),
        ("specificity", "specificity"),
    ]);
    for (m, s) in metrics.iter().zip(summary) {
        let measure = s["measure"].as_str().unwrap();
        assert_eq!(m["type"].as_str(), Some(kinds[measure]));
        // YAML reads the number back exactly as JSON wrote it.
        assert_eq!(m["value"].as_f64(), s["mean"].as_f64(), "{measure}");
    }
    // Every picture the card links to is in its folder, and nothing else.
    let re = regex::Regex::new(r"!\[[^\]]*\]\(([^)]+)\)").unwrap();
    let linked: std::collections::BTreeSet<String> =
        re.captures_iter(&text).map(|c| c[1].to_string()).collect();
    assert!(linked.len() >= 4, "{linked:?}");
    let mut present = std::collections::BTreeSet::new();
    for e in fs::read_dir(work.path().join("README_files")).unwrap() {
        present.insert(format!(
            "README_files/{}",
            e.unwrap().file_name().to_string_lossy()
        ));
    }
    assert_eq!(linked, present);
    assert!(text.contains("Teaching only."));
    assert!(
        !text.contains("Diagnosis without a clinician."),
        "the config's words were replaced"
    );
}

#[test]
fn a_run_s_report_measures_its_validation_images_and_one_without_says_what_it_cannot_show() {
    let work = tempfile::tempdir().unwrap();
    let train = |out: &str, extra: &[&str]| {
        let _turn = serial();
        let mut args = vec![
            "train",
            "--data",
            "data/monkeypox",
            "--config",
            "configs/smoke.json",
            "--out",
            out,
            "--no-plots",
        ];
        args.extend(extra);
        let root = repo();
        let o = inception(&root, &args);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stdout(&o).contains(&format!("inception report {out}")),
            "{}",
            stdout(&o)
        );
    };
    let run = work.path().join("run");
    train(run.to_str().unwrap(), &[]);
    let page = work.path().join("run.html");
    let o = inception(
        work.path(),
        &[
            "report",
            run.to_str().unwrap(),
            "--out",
            page.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let html = fs::read_to_string(&page).unwrap();
    let eval = inception(
        work.path(),
        &[
            "eval",
            "--checkpoint",
            run.join("model.pt").to_str().unwrap(),
            "--json",
        ],
    );
    let eval: Value = serde_json::from_slice(&eval.stdout).unwrap();
    let want = format!(
        r#"data-interval="accuracy" data-value="{}""#,
        Value::from(eval["accuracy"].as_f64().unwrap())
    );
    assert!(html.contains(r#"data-set="validation""#));
    assert!(
        html.contains(&want),
        "the validation accuracy {want} is not on the page"
    );
    assert!(html.contains("figure class=\"tile\""), "no gallery");
    assert!(
        html.contains("Not shown: cross-validation"),
        "a run says it is no cv"
    );
    assert!(
        html.contains("carries none"),
        "a run without calibration says so"
    );
    // The initial weights and the data card are the run's own records.
    assert!(
        html.contains("<td>scratch</td>"),
        "environment.json's initial weights"
    );
    assert!(html.contains("recorded by training (data.json)"));
    assert!(
        html.contains("data-duplicate-sets=\"1\""),
        "MSLD's one near-duplicate set"
    );

    // An external set measured by the run's model, as eval measures it.
    let external = some_photos(work.path(), 4);
    let page = work.path().join("run-external.html");
    let o = inception(
        work.path(),
        &[
            "report",
            run.to_str().unwrap(),
            "--data",
            external.to_str().unwrap(),
            "--out",
            page.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let html = fs::read_to_string(&page).unwrap();
    let eval = inception(
        work.path(),
        &[
            "eval",
            "--checkpoint",
            run.join("model.pt").to_str().unwrap(),
            "--data",
            external.to_str().unwrap(),
            "--json",
        ],
    );
    let eval: Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert!(
        html.contains(r#"<div data-set="external">"#),
        "no external set on the page"
    );
    let acc = format!(
        r#"data-interval="accuracy" data-value="{}""#,
        Value::from(eval["accuracy"].as_f64().unwrap())
    );
    let external_part = &html[html.find(r#"data-set="external""#).unwrap()..];
    assert!(
        external_part.contains(&acc),
        "the external accuracy {acc} is not on the page"
    );

    let all = work.path().join("all");
    train(all.to_str().unwrap(), &["--val-fraction", "0"]);
    let page = work.path().join("all.html");
    let o = inception(
        work.path(),
        &[
            "report",
            all.to_str().unwrap(),
            "--out",
            page.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let html = fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("validated on no images"),
        "says why nothing is measured"
    );
    assert!(!html.contains("data-set="), "measures of nothing");
}

#[test]
fn bad_input_gets_one_clear_error_and_nothing_is_written() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let out = w.join("r.html");
    let report = |args: &[&str]| {
        let mut all = vec!["report"];
        all.extend(args);
        inception(w, &all)
    };
    // Neither a run nor a cv.
    fs::create_dir_all(w.join("empty")).unwrap();
    fs::write(w.join("empty/notes.txt"), "x").unwrap();
    let err = assert_clean_failure(&report(&["empty", "--out", "r.html"]));
    assert!(
        err.contains("neither a training run") && err.contains("empty"),
        "{err}"
    );
    let err = assert_clean_failure(&report(&["nowhere", "--out", "r.html"]));
    assert!(err.contains("nowhere: no such folder"), "{err}");
    // An unfinished run: config and metrics, no model.pt.
    fs::create_dir_all(w.join("run")).unwrap();
    fs::write(w.join("run/config.json"), "{}").unwrap();
    fs::write(w.join("run/metrics.csv"), "epoch\n").unwrap();
    let err = assert_clean_failure(&report(&["run", "--out", "r.html"]));
    assert!(
        err.contains("unfinished training run") && err.contains("--resume"),
        "{err}"
    );
    // An unfinished cv: its plan, no fold finished.
    let cv = cv_dir().join("cv");
    fs::create_dir_all(w.join("cv")).unwrap();
    fs::copy(cv.join("plan.json"), w.join("cv/plan.json")).unwrap();
    let err = assert_clean_failure(&report(&["cv", "--out", "r.html"]));
    assert!(err.contains("unfinished cv (3 of 3 folds"), "{err}");
    // --data whose classes differ.
    for class in ["cats", "dogs"] {
        fs::create_dir_all(w.join("pets").join(class)).unwrap();
        fs::copy(
            repo().join("data/monkeypox/Others/1.jpg"),
            w.join("pets").join(class).join("1.jpg"),
        )
        .unwrap();
    }
    let err = assert_clean_failure(&report(&[
        cv.to_str().unwrap(),
        "--data",
        "pets",
        "--out",
        "r.html",
    ]));
    assert!(
        err.contains("pets") && err.contains("not the checkpoint's classes"),
        "{err}"
    );
    assert!(!out.exists(), "a report was written after an error");
    // An existing --out is kept without --force, replaced with it.
    fs::write(&out, "mine").unwrap();
    let err = assert_clean_failure(&report(&[cv.to_str().unwrap(), "--out", "r.html"]));
    assert!(
        err.contains("r.html exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&out).unwrap(), "mine");
    let o = report(&[
        cv.to_str().unwrap(),
        "--out",
        "r.html",
        "--force",
        "--gallery",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(fs::read_to_string(&out)
        .unwrap()
        .starts_with("<!DOCTYPE html>"));
    // A card's picture folder counts as output too.
    fs::create_dir_all(w.join("card_files")).unwrap();
    let err = assert_clean_failure(&report(&[
        cv.to_str().unwrap(),
        "--format",
        "md",
        "--out",
        "card.md",
    ]));
    assert!(err.contains("card_files exists"), "{err}");
    assert!(!w.join("card.md").exists());
    fs::write(w.join("card.json"), r#"{"intended": "typo"}"#).unwrap();
    let err = assert_clean_failure(&report(&[
        cv.to_str().unwrap(),
        "--card",
        "card.json",
        "--out",
        "x.html",
    ]));
    assert!(
        err.contains("--card card.json") && err.contains("unknown field"),
        "{err}"
    );
    assert!(!w.join("x.html").exists());
    let err = assert_clean_failure(&report(&[
        cv.to_str().unwrap(),
        "--gallery",
        "9",
        "--out",
        "x.html",
    ]));
    assert!(err.contains("--gallery 9"), "{err}");
}
