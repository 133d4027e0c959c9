//! The benchmark scripts run as a new user runs them (`make bench`), at tiny sizes, so that one
//! that breaks cannot go unseen until someone measures: here benches/side_by_side.py on a data
//! folder that, like the bundled MSLD, also holds a file beside its class folders.

use crate::common;

use std::fs;
use std::path::PathBuf;

use common::{python, repo, serial};

#[test]
fn side_by_side_measures_every_row_on_a_folder_that_also_holds_a_licence_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for class in ["Monkey Pox", "Others"] {
        fs::create_dir_all(data.join(class)).unwrap();
        let mut files: Vec<PathBuf> = fs::read_dir(repo().join("data/monkeypox").join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files.iter().take(12) {
            fs::copy(f, data.join(class).join(f.file_name().unwrap())).unwrap();
        }
    }
    // Sorted first, before the class folders: what made `make bench` die after measuring.
    fs::write(data.join("LICENSE"), "MIT").unwrap();
    let _turn = serial();
    let mut cmd = python();
    // As make bench runs it: ONNX Runtime's rows need .deps/onnx.
    let path = std::env::var("PYTHONPATH").unwrap_or_default();
    cmd.env(
        "PYTHONPATH",
        format!(
            "{}:{}:{path}",
            repo().join(".deps/onnx").display(),
            repo().join(".deps/py").display()
        ),
    );
    let o = cmd
        .arg(repo().join("benches/side_by_side.py"))
        // Relative, as make bench gives it (data/monkeypox).
        .current_dir(dir.path())
        .args(["--data", "data"])
        .args(["--bin", env!("CARGO_BIN_EXE_inception")])
        .args([
            "--steps",
            "2",
            "--size",
            "64",
            "--batch",
            "4",
            "--epochs",
            "2",
            "--repeats",
            "1",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "side_by_side.py failed:\n{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Every row of the table, with positive rates and ratios.
    let rows: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.contains("train img/s"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(rows.len(), 5, "{out}");
    for row in &rows {
        let numbers: Vec<f64> = row
            .split_whitespace()
            .rev()
            .take(4)
            .map(|v| v.parse().unwrap_or(-1.0))
            .collect();
        assert!(numbers.iter().all(|&v| v > 0.0), "{row}");
    }
    assert!(rows[0].trim_end().ends_with("1.00"), "{}", rows[0]);
    let predict = out
        .lines()
        .find(|l| l.starts_with("predict one image"))
        .unwrap_or_else(|| panic!("no predict line: {out}"));
    assert!(
        predict.contains("inception") && predict.contains("Python + PyTorch"),
        "{predict}"
    );
    assert!(predict.contains("Python + ONNX Runtime"), "{predict}");
    // The inference table: the tool's eval and ONNX Runtime at batch 4 and 1, ratios to ORT.
    let infer: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("inference, the same network"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(infer.len(), 8, "{out}");
    for row in &infer {
        let f: Vec<&str> = row.split_whitespace().rev().take(3).collect();
        let (ratio, rate): (f64, f64) = (f[0].parse().unwrap(), f[1].parse().unwrap());
        assert!(rate > 0.0 && ratio > 0.0, "{row}");
        if row.starts_with("ONNX Runtime fp32") {
            assert_eq!(f[0], "1.00", "{row}");
        }
    }
}
