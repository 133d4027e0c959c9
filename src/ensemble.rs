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
use crate::model::Flips;
use crate::precision::Compute;
use crate::runs::cv::{self, CvReport};
use crate::runs::oof;
use crate::trust::conformal::CalibrationScore;
use crate::trust::TrustRecord;

/// The flips `meta`'s training recipe used, which test-time augmentation averages over (a
/// horizontal flip for a checkpoint without one, such as an import of ImageNet weights, which
/// are trained with it).
pub fn trained_flips(meta: &Meta) -> Flips {
    match &meta.training {
        Some(t) => Flips {
            horizontal: t.config.augment.hflip > 0.0,
            vertical: t.config.augment.vflip > 0.0,
        },
        None => Flips {
            horizontal: true,
            vertical: false,
        },
    }
}

/// One or more checkpoints used as one model.
#[derive(Debug)]
pub struct Ensemble {
    /// Each member's file and checkpoint, weights ready for inference.
    pub members: Vec<(PathBuf, Checkpoint)>,
    /// The flips test-time augmentation averages over ([`Flips::NONE`]: none).
    pub tta: Flips,
    /// The calibration, threshold and conformal thresholds it answers with: a checkpoint's
    /// own, or a cv folder's (cv.json); `None`: uncalibrated.
    pub trust: Option<TrustRecord>,
    /// A cv folder: every out-of-fold image's fold, class and score at the shipped
    /// temperature (oof.csv), for cross-conformal sets from the fold models.
    pub cross: Option<Vec<CalibrationScore>>,
    /// Whether probabilities use the temperature (off with `--no-calibration`).
    pub calibrated: bool,
    /// A screening threshold given instead of the recorded one (`--threshold`).
    pub threshold_given: Option<f64>,
}

/// One image's answer: its (calibrated) probabilities, the class decided, its prediction set.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The probabilities reported: calibrated, or raw with `--no-calibration` (or when the
    /// temperature is not shipped).
    pub probs: Vec<f64>,
    /// The uncalibrated probabilities.
    pub raw: Vec<f64>,
    /// At the temperature the record fitted, shipped or not (`raw` without one).
    pub fitted: Vec<f64>,
    /// Two classes: the first when its probability is ≥ the threshold; else the argmax —
    /// taken on the probabilities the threshold was fitted on, whatever is reported.
    pub decision: usize,
    /// `None` without conformal thresholds.
    pub set: Option<Vec<usize>>,
}

/// The trust record and cross-conformal scores of a cv folder, from cv.json and oof.csv
/// (`None` for a cv that fitted none, or one collected before they existed).
fn cv_trust(dir: &Path) -> Result<Option<(TrustRecord, Vec<CalibrationScore>)>> {
    if !dir.join(cv::CV_JSON).exists() {
        return Ok(None);
    }
    let Ok(file) = CvReport::read(dir) else {
        return Ok(None);
    };
    let Some(trust) = file.trust else {
        return Ok(None);
    };
    let t = trust.temperature();
    let score = trust
        .conformal
        .as_ref()
        .map_or(Default::default(), |c| c.score);
    let rows = oof::read(&dir.join(cv::OOF), &file.classes, file.folds)?;
    let mut cross = vec![];
    for r in rows {
        let logits = r.logits.with_context(|| {
            format!(
                "{}: no logits (written before calibration); `inception cv --collect {}` \
                 rewrites it",
                dir.join(cv::OOF).display(),
                dir.display()
            )
        })?;
        let p = crate::trust::calibration::softmax(&logits, t);
        cross.push(CalibrationScore {
            fold: r.fold,
            label: r.truth,
            score: score.score(&p, r.truth),
        });
    }
    Ok(Some((trust, cross)))
}

/// The checkpoint files `paths` name: files as they are, a cross-validation folder as its
/// folds' `model.pt` in fold order.
pub fn member_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = vec![];
    for p in paths {
        if p.is_dir() {
            files.extend(cv::members(p)?);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
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
        let (mut trust, mut cross) = (None, None);
        match paths {
            [dir] if dir.is_dir() => {
                if let Some((t, c)) = cv_trust(dir)? {
                    trust = Some(t);
                    cross = Some(c);
                }
            }
            [_] => trust = members[0].1.meta.trust.clone(),
            _ => {}
        }
        if let Some(t) = &trust {
            if t.classes != members[0].1.meta.classes {
                bail!(
                    "{}: its calibration is for the classes {:?}, not its own {:?}",
                    members[0].0.display(),
                    t.classes,
                    members[0].1.meta.classes
                );
            }
        }
        Ok(Ensemble {
            members,
            tta: Flips::NONE,
            calibrated: trust.is_some(),
            trust,
            cross,
            threshold_given: None,
        })
    }

    /// Answers with the raw probabilities (`--no-calibration`); threshold and sets stay.
    pub fn without_calibration(mut self) -> Ensemble {
        self.calibrated = false;
        self
    }

    /// How reports name the probabilities: "calibrated (T = …, fitted on …)" or why not.
    pub fn calibration_note(&self) -> String {
        match (&self.trust, self.calibrated) {
            (None, _) => "uncalibrated (the checkpoint carries no calibration)".into(),
            (Some(_), false) => "uncalibrated (--no-calibration)".into(),
            (Some(t), true) => match t.calibration {
                Some(c) if c.applied => format!(
                    "calibrated: temperature {:.3} fitted on {}",
                    c.temperature, t.fitted_on
                ),
                Some(c) => format!(
                    "raw: the temperature {:.3} fitted on {} did not help on held-out folds",
                    c.temperature, t.fitted_on
                ),
                None => "raw: no temperature was fitted".into(),
            },
        }
    }

    /// Whether the probabilities it gives are calibrated: a temperature applied.
    pub fn is_calibrated(&self) -> bool {
        self.calibrated
            && self
                .trust
                .as_ref()
                .and_then(|t| t.calibration)
                .is_some_and(|c| c.applied)
    }

    /// Decides at `t` instead of the recorded threshold (two classes only).
    pub fn with_threshold(mut self, t: Option<f64>) -> Result<Ensemble> {
        if let Some(t) = t {
            if !(0.0..=1.0).contains(&t) {
                bail!("--threshold {t} is outside [0, 1]");
            }
            if self.meta().classes.len() != 2 {
                bail!(
                    "--threshold is for two classes; this model has {}",
                    self.meta().classes.len()
                );
            }
        }
        self.threshold_given = t;
        Ok(self)
    }

    /// The screening threshold: the one given, else the recorded one, else 0.5 (two classes
    /// only).
    pub fn threshold(&self) -> Option<f64> {
        if self.meta().classes.len() != 2 {
            return None;
        }
        Some(self.threshold_given.unwrap_or_else(|| {
            self.trust
                .as_ref()
                .and_then(|t| t.threshold.as_ref())
                .map_or(0.5, |t| t.threshold)
        }))
    }

    /// The answers for a batch `[N, 3, S, S]`: probabilities as [`Ensemble::probabilities`],
    /// the decision at [`Ensemble::threshold`], and the conformal set — cross-conformal from
    /// the fold models for a cv folder, else split-conformal.
    pub fn answers(&self, compute: Compute, images: &Tensor) -> Result<Vec<Answer>> {
        let Forward { raw, at_t, plain } = self.forward(compute, images, Kind::Double)?;
        let raw: Vec<Vec<f64>> = Vec::<Vec<f64>>::try_from(raw)?;
        let at_t: Option<Vec<Vec<f64>>> = at_t.map(Vec::<Vec<f64>>::try_from).transpose()?;
        let conformal = self.trust.as_ref().and_then(|t| t.conformal.as_ref());
        let members: Option<Vec<Vec<Vec<f64>>>> = match (&self.cross, conformal) {
            (Some(_), Some(_)) => Some(
                plain
                    .into_iter()
                    .map(Vec::<Vec<f64>>::try_from)
                    .collect::<Result<_, _>>()?,
            ),
            _ => None,
        };
        let t = self.threshold();
        let mut out = vec![];
        for (i, r) in raw.into_iter().enumerate() {
            let fitted = at_t.as_ref().map_or_else(|| r.clone(), |a| a[i].clone());
            // Decisions and sets on the scale their thresholds were fitted on; the
            // probabilities shown are the calibrated ones unless --no-calibration.
            let basis = if self.ships_temperature() {
                &fitted
            } else {
                &r
            };
            let decision = match t {
                Some(t) => (basis[0] < t) as usize,
                None => crate::metrics::argmax(basis),
            };
            let set = match (conformal, &self.cross, &members) {
                (Some(c), Some(cross), Some(m)) => {
                    let fold_probs: Vec<Vec<f64>> = m.iter().map(|m| m[i].clone()).collect();
                    Some(crate::trust::conformal::cross_set(
                        cross,
                        &fold_probs,
                        basis.len(),
                        c.alpha,
                        c.score,
                        c.class_conditional,
                    )?)
                }
                (Some(c), _, _) => Some(c.set(basis)),
                _ => None,
            };
            let probs = if self.is_calibrated() {
                fitted.clone()
            } else {
                r.clone()
            };
            out.push(Answer {
                probs,
                raw: r,
                fitted,
                decision,
                set,
            });
        }
        Ok(out)
    }

    /// Switches test-time augmentation on, with the flips every member trained with.
    pub fn with_tta(mut self) -> Ensemble {
        let mut tta = Flips {
            horizontal: true,
            vertical: true,
        };
        for (_, m) in &self.members {
            let t = trained_flips(&m.meta);
            tta.horizontal &= t.horizontal;
            tta.vertical &= t.vertical;
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
    /// the mean over members and views of softmax(logits / T), T the calibration's
    /// temperature (1 when uncalibrated).
    pub fn probabilities(&self, compute: Compute, images: &Tensor, kind: Kind) -> Result<Tensor> {
        let f = self.forward(compute, images, kind)?;
        Ok(match (f.at_t, self.is_calibrated()) {
            (Some(t), true) => t,
            _ => f.raw,
        })
    }

    /// The mean raw probabilities, the mean at the recorded temperature (when there is one
    /// other than 1), and each member's on the image itself (no TTA view) at the shipped
    /// temperature, which cross-conformal sets compare.
    fn forward(&self, compute: Compute, images: &Tensor, kind: Kind) -> Result<Forward> {
        let views = self.tta.views();
        let fitted = self.fitted_temperature().filter(|&t| t != 1.0);
        let shipped = self.trust.as_ref().map_or(1.0, |t| t.temperature());
        let (mut raw, mut at_t): (Option<Tensor>, Option<Tensor>) = (None, None);
        let add = |acc: Option<Tensor>, p: &Tensor| -> Result<Option<Tensor>> {
            Ok(Some(match acc {
                None => p.shallow_clone(),
                Some(s) => s.f_add(p)?,
            }))
        };
        let mut plain = vec![];
        for (_, m) in &self.members {
            for dims in &views {
                let x = if dims.is_empty() {
                    images.shallow_clone()
                } else {
                    images.f_flip(dims.as_slice())?
                };
                let z = compute.logits(&m.model, &x)?;
                let p = z.f_softmax(-1, kind)?;
                raw = add(raw, &p)?;
                let pt = match fitted {
                    Some(t) => {
                        let pt = z.f_div_scalar(t)?.f_softmax(-1, kind)?;
                        at_t = add(at_t, &pt)?;
                        pt
                    }
                    None => p.shallow_clone(),
                };
                if dims.is_empty() {
                    plain.push(if shipped == 1.0 { p } else { pt });
                }
            }
        }
        let n = (self.members.len() * views.len()) as f64;
        let mean =
            |s: Tensor| -> Result<Tensor> { Ok(if n == 1.0 { s } else { s.f_div_scalar(n)? }) };
        Ok(Forward {
            raw: mean(raw.context("an ensemble without members")?)?,
            at_t: at_t.map(mean).transpose()?,
            plain,
        })
    }

    /// The temperature the record's calibration fitted, applied or not.
    pub fn fitted_temperature(&self) -> Option<f64> {
        self.trust
            .as_ref()
            .and_then(|t| t.calibration)
            .map(|c| c.temperature)
    }

    /// Whether decisions and sets are taken on probabilities at the fitted temperature (the
    /// scale the threshold and conformal thresholds were fitted on), whatever is shown.
    pub fn ships_temperature(&self) -> bool {
        self.trust.as_ref().is_some_and(|t| t.temperature() != 1.0)
    }
}

/// What one pass of every member and view gives.
struct Forward {
    raw: Tensor,
    at_t: Option<Tensor>,
    plain: Vec<Tensor>,
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
