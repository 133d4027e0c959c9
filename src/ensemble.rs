//! Several checkpoints used as one model, and test-time augmentation (TTA): the class
//! probabilities are the mean over the members and, with TTA, over the image and its flips.
//!
//! Members must agree on what they are given and what they answer: the same classes in the same
//! order, image size and normalisation (one preprocessing feeds them all). A cross-validation
//! folder (`runs/cv`) stands for its folds' `model.pt`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use crate::checkpoint::{self, Checkpoint, Meta};
use crate::cv;
use crate::precision::Compute;
use crate::train::run_files::MODEL;

/// The views TTA averages over: the image, and its flips the recipe trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tta {
    pub hflip: bool,
    pub vflip: bool,
}

impl Tta {
    /// No test-time augmentation: the image only.
    pub const OFF: Tta = Tta {
        hflip: false,
        vflip: false,
    };

    /// The flips `meta`'s training recipe used (a horizontal flip for a checkpoint without
    /// one, such as an import of ImageNet weights, which are trained with it).
    pub fn trained_with(meta: &Meta) -> Tta {
        match &meta.training {
            Some(t) => Tta {
                hflip: t.config.augment.hflip > 0.0,
                vflip: t.config.augment.vflip > 0.0,
            },
            None => Tta {
                hflip: true,
                vflip: false,
            },
        }
    }

    /// The dimensions each view flips (`[]` is the image itself).
    pub fn views(&self) -> Vec<Vec<i64>> {
        let mut v = vec![vec![]];
        if self.hflip {
            v.push(vec![3]);
        }
        if self.vflip {
            v.push(vec![2]);
        }
        if self.hflip && self.vflip {
            v.push(vec![2, 3]);
        }
        v
    }

    /// How the views are named in reports.
    pub fn describe(&self) -> String {
        match (self.hflip, self.vflip) {
            (false, false) => "none".into(),
            (true, false) => "image + horizontal flip".into(),
            (false, true) => "image + vertical flip".into(),
            (true, true) => "image + horizontal, vertical and both flips".into(),
        }
    }
}

/// One or more checkpoints used as one model.
#[derive(Debug)]
pub struct Ensemble {
    /// Each member's file and checkpoint, weights ready for inference.
    pub members: Vec<(PathBuf, Checkpoint)>,
    /// Test-time augmentation ([`Tta::OFF`] for none).
    pub tta: Tta,
}

/// The checkpoint files `paths` name: files as they are, a cross-validation folder as its
/// folds' `model.pt` in fold order.
pub fn member_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = vec![];
    for p in paths {
        if p.is_dir() {
            files.extend(cv_members(p)?);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

/// The folds' `model.pt` of the cv folder `dir`, in fold order; an error when the folder is no
/// cv folder or a fold of its plan is not finished.
fn cv_members(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.join(cv::PLAN).exists() {
        bail!(
            "{}: a folder, but not a cross-validation folder (no {}); give a checkpoint file",
            dir.display(),
            cv::PLAN
        );
    }
    let plan = cv::Plan::read(dir)?;
    let unfinished = cv::unfinished(dir, &plan);
    if !unfinished.is_empty() {
        let names: Vec<String> = unfinished.iter().map(|f| format!("fold-{f}")).collect();
        bail!(
            "{}: {} of {} folds not finished (no {MODEL}): {}; `inception cv --resume {}` \
             finishes them",
            dir.display(),
            unfinished.len(),
            plan.folds(),
            names.join(", "),
            dir.display()
        );
    }
    Ok((0..plan.folds())
        .map(|f| cv::fold_dir(dir, f).join(MODEL))
        .collect())
}

impl Ensemble {
    /// Loads the checkpoints `paths` name (see [`member_files`]) onto `compute`'s device, ready
    /// for inference, and checks that they agree.
    pub fn load(paths: &[PathBuf], compute: Compute) -> Result<Ensemble> {
        let files = member_files(paths)?;
        let mut members: Vec<(PathBuf, Checkpoint)> = vec![];
        for file in files {
            let mut ckpt = checkpoint::load(&file, compute.device)?;
            if let Some((first, f)) = members.first() {
                check_compatible(first, &f.meta, &file, &ckpt.meta)?;
            }
            compute.prepare(&mut ckpt.model)?;
            ckpt.model.fold_batchnorm()?;
            members.push((file, ckpt));
        }
        if members.is_empty() {
            bail!("no checkpoint given");
        }
        Ok(Ensemble {
            members,
            tta: Tta::OFF,
        })
    }

    /// Switches test-time augmentation on, with the flips every member trained with.
    pub fn with_tta(mut self) -> Ensemble {
        let mut tta = Tta {
            hflip: true,
            vflip: true,
        };
        for (_, m) in &self.members {
            let t = Tta::trained_with(&m.meta);
            tta.hflip &= t.hflip;
            tta.vflip &= t.vflip;
        }
        self.tta = tta;
        self
    }

    /// The record that describes the inputs and outputs (the first member's).
    pub fn meta(&self) -> &Meta {
        &self.members[0].1.meta
    }

    /// The members' files, for reports.
    pub fn files(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect()
    }

    /// Class probabilities `[N, classes]` of a batch `[N, 3, S, S]` (in `kind`, on the CPU):
    /// the mean over members and views.
    pub fn probabilities(&self, compute: Compute, images: &Tensor, kind: Kind) -> Result<Tensor> {
        let views = self.tta.views();
        let mut sum: Option<Tensor> = None;
        for (_, m) in &self.members {
            for dims in &views {
                let x = if dims.is_empty() {
                    images.shallow_clone()
                } else {
                    images.f_flip(dims.as_slice())?
                };
                let p = compute.probabilities(&m.model, &x, kind)?;
                sum = Some(match sum {
                    None => p,
                    Some(s) => s.f_add(&p)?,
                });
            }
        }
        let n = (self.members.len() * views.len()) as f64;
        let sum = sum.context("an ensemble without members")?;
        if n == 1.0 {
            return Ok(sum);
        }
        Ok(sum.f_div_scalar(n)?)
    }
}

/// Refuses a member whose classes, image size or normalisation differ from the first one's.
fn check_compatible(first: &Path, a: &Meta, file: &Path, b: &Meta) -> Result<()> {
    let what = if a.classes != b.classes {
        format!("classes {:?}, not {:?}", b.classes, a.classes)
    } else if a.image_size != b.image_size {
        format!("image size {}, not {}", b.image_size, a.image_size)
    } else if a.normalization != b.normalization {
        format!(
            "normalisation {:?}, not {:?}",
            b.normalization, a.normalization
        )
    } else {
        return Ok(());
    };
    bail!(
        "{} cannot join an ensemble with {}: it has {what}",
        file.display(),
        first.display()
    )
}
