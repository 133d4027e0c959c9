//! `inception explain`: where the network looked, image by image — a Grad-CAM (or Grad-CAM++)
//! map of the predicted class (or `--class`) at a layer, blended over the preprocessed image
//! (`<stem>.cam.png`), and with `--raw` the map itself as 16-bit grayscale (`<stem>.map.png`).
//! An ensemble's map is the mean of its members' maps. Gradients are taken in fp32.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::Kind;

use crate::cli::ExplainArgs;
use crate::cmd::predict::expand;
use crate::data::image::load_rgb;
use crate::data::transform::EvalTransform;
use crate::device::{self, DeviceChoice};
use crate::ensemble::Ensemble;
use crate::explain::{check_layer, describe, ensemble_maps, title};
use crate::metrics::argmax;
use crate::plot;
use crate::precision::{Compute, Precision};
use crate::runs::{given_or_latest, RunDir};

/// Images explained per forward and backward pass.
const BATCH: usize = 8;

pub fn run(args: &ExplainArgs) -> Result<()> {
    let checkpoints = given_or_latest(&args.checkpoint)?;
    let (images, missing) = expand(&args.paths);
    let out = match &args.out {
        Some(p) => RunDir::Exact(p.clone()),
        None => RunDir::Next("explain"),
    };
    out.check()?;
    let choice: DeviceChoice = args.device.parse()?;
    let compute = Compute::new(choice.resolve()?, Precision::Fp32, true)?;
    let mut ensemble = Ensemble::load(&checkpoints, compute)?;
    if args.no_calibration {
        ensemble = ensemble.without_calibration();
    }
    eprintln!("probabilities: {}", ensemble.calibration_note());
    let meta = ensemble.meta().clone();
    let layer = args
        .layer
        .clone()
        .unwrap_or_else(|| meta.arch.default_tap_layer().to_string());
    check_layer(meta.arch, &layer)?;
    let wanted = match &args.class {
        None => None,
        Some(name) => match meta.classes.iter().position(|c| c == name) {
            Some(i) => Some(i),
            None => bail!(
                "--class {name:?} is not a class of the checkpoint; its classes: {}",
                meta.classes.join(", ")
            ),
        },
    };
    if images.is_empty() {
        for m in &missing {
            eprintln!("error: {m}");
        }
        bail!("no image to explain");
    }
    device::announce(choice, &compute);
    let dir = out.create()?;
    for m in &missing {
        eprintln!("error: {m}");
    }
    let transform = EvalTransform {
        image_size: meta.image_size as u32,
        normalization: meta.normalization,
    };
    let how = describe(args.method, &layer, ensemble.members.len());
    eprintln!("explain: {how}");
    let mut names = BTreeSet::new();
    let mut failures = 0;
    for chunk in images.chunks(BATCH) {
        let mut crops = vec![];
        let mut paths = vec![];
        for path in chunk {
            match load_rgb(path) {
                Ok(img) => {
                    crops.push(transform.crop(&img));
                    paths.push(path);
                }
                Err(e) => {
                    failures += 1;
                    let word = if args.skip_bad { "skipped" } else { "error" };
                    eprintln!("{word}: {}", crate::text::error_line(&e));
                }
            }
        }
        if crops.is_empty() {
            continue;
        }
        let batch = transform.batch_of_crops(&crops)?;
        let probs = tch::no_grad(|| ensemble.probabilities(compute, &batch, Kind::Double))?;
        let probs = Vec::<Vec<f64>>::try_from(probs)?;
        let classes: Vec<i64> = probs
            .iter()
            .map(|p| wanted.unwrap_or_else(|| argmax(p)) as i64)
            .collect();
        let flat = ensemble_maps(&ensemble, compute, &batch, &classes, &layer, args.method)?;
        let s = meta.image_size as usize;
        for (i, path) in paths.iter().enumerate() {
            let map = &flat[i * s * s..(i + 1) * s * s];
            let c = classes[i] as usize;
            let title = title(&meta.classes[c], probs[i][c], &how);
            let stem = unique_stem(path, &mut names);
            let file = dir.join(format!("{stem}.cam.png"));
            plot::save(&plot::cam::render(&crops[i], map, &title)?, &file)?;
            let mut also = String::new();
            if args.raw {
                let raw = dir.join(format!("{stem}.map.png"));
                let img = plot::cam::raw(map, s as u32, s as u32);
                let mut bytes = std::io::Cursor::new(vec![]);
                img.write_to(&mut bytes, image::ImageFormat::Png)
                    .with_context(|| format!("encoding {}", raw.display()))?;
                crate::checkpoint::write_atomic(&raw, bytes.get_ref())?;
                also = format!(" and {}", raw.display());
            }
            println!(
                "{}: {} {:.4} → {}{also}",
                path.display(),
                meta.classes[c],
                probs[i][c],
                file.display()
            );
        }
    }
    let total = images.len() + missing.len();
    if args.skip_bad && failures > 0 {
        eprintln!("skipped {failures} unreadable image(s) of {total} (listed above)");
    }
    let failed = if args.skip_bad { 0 } else { failures } + missing.len();
    if failed > 0 {
        bail!("{failed} of {total} inputs could not be read (listed above)");
    }
    Ok(())
}

/// The file stem of `path`, with `-2`, `-3`… when another input had the same one.
fn unique_stem(path: &Path, used: &mut BTreeSet<String>) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let mut name = stem.clone();
    let mut n = 2;
    while !used.insert(name.clone()) {
        name = format!("{stem}-{n}");
        n += 1;
    }
    name
}
