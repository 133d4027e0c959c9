//! `inception report`: gathers a run's or a cv's evidence ([`crate::report::gather`]) and
//! writes it as one HTML page or a Hugging Face model card with its pictures. Everything is
//! measured before anything is written; an existing output is replaced only with `--force`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::checkpoint::write_atomic;
use crate::cli::{ReportArgs, ReportFormat};
use crate::device::DeviceChoice;
use crate::precision::Compute;
use crate::report::{self, html, markdown, Options};

/// Where the page goes and, for a card, the folder of its pictures.
fn outputs(a: &ReportArgs) -> Result<(PathBuf, Option<PathBuf>)> {
    let out = match (&a.out, a.format) {
        (Some(p), _) => p.clone(),
        (None, ReportFormat::Html) => a.dir.join("report.html"),
        (None, ReportFormat::Md) => a.dir.join("README.md"),
    };
    if out.is_dir() {
        bail!("--out {}: a folder; give the file to write", out.display());
    }
    let assets = match a.format {
        ReportFormat::Html => None,
        ReportFormat::Md => {
            let stem = out
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "README".into());
            Some(out.with_file_name(format!("{stem}_files")))
        }
    };
    for p in std::iter::once(&out).chain(assets.as_ref()) {
        if p.exists() && !a.force {
            bail!(
                "{} exists: give --force to replace it, or --out another file",
                p.display()
            );
        }
    }
    Ok((out, assets))
}

pub fn run(a: &ReportArgs) -> Result<()> {
    if a.gallery > report::gallery::MAX_PER_KIND {
        bail!(
            "--gallery {}: at most {} photos per class and list",
            a.gallery,
            report::gallery::MAX_PER_KIND
        );
    }
    report::source_of(&a.dir)?;
    let (out, assets) = outputs(a)?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            bail!("--out {}: no folder {}", out.display(), parent.display());
        }
    }
    let card = match &a.card {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--card: reading {}", path.display()))?;
            Some(
                serde_json::from_str::<crate::config::Card>(&text)
                    .with_context(|| format!("--card {}: not a card block", path.display()))?,
            )
        }
        None => None,
    };
    let choice: DeviceChoice = a.device.parse()?;
    let device = choice.resolve()?;
    let compute = Compute::new(device, a.precision, true)?;
    let started = std::time::Instant::now();
    let r = report::gather(&Options {
        dir: a.dir.clone(),
        data: a.data.clone(),
        per_kind: a.gallery,
        card,
        compute,
        device: choice,
        precision: a.precision,
    })?;
    match (a.format, assets) {
        (ReportFormat::Md, Some(folder)) => {
            let name = folder
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .context("the pictures' folder")?;
            let (md, files) = markdown::render(&r, &name);
            write_folder(&folder, &files)?;
            write_atomic(&out, md.as_bytes())?;
            println!(
                "model card: {} ({} pictures in {})",
                out.display(),
                files.len(),
                folder.display()
            );
        }
        _ => {
            let page = html::render(&r);
            write_atomic(&out, page.as_bytes())?;
            println!(
                "report: {} ({:.0} kB; open it in a browser)",
                out.display(),
                page.len() as f64 / 1e3
            );
        }
    }
    eprintln!("written in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Writes `files` into `folder`, replacing what a previous card left there.
fn write_folder(folder: &Path, files: &[markdown::Asset]) -> Result<()> {
    if folder.exists() {
        std::fs::remove_dir_all(folder)
            .with_context(|| format!("replacing {}", folder.display()))?;
    }
    std::fs::create_dir_all(folder).with_context(|| format!("creating {}", folder.display()))?;
    for (name, bytes) in files {
        write_atomic(&folder.join(name), bytes)?;
    }
    Ok(())
}
